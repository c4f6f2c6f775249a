//! The backend doors: where a backend's requests come in and their replies go out. Each
//! hands requests to the [`service`](crate::service) and never names the registry or the
//! cluster (`tests/layout.rs`), so a request means the same whatever the door and the mode.

pub(crate) mod http;
mod http_body;
mod http_io;
pub(crate) mod push;
mod web_msg_sender;
