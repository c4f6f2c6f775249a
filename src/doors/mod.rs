//! The backend doors: where a backend's requests come in and their replies go out. Each
//! hands requests to the [`service`](crate::service) or the engine ([`crate::nodes`]) and
//! never names the registry or the cluster (`tests/layout.rs`), so a request means the same
//! whatever the door and the mode. `gateway` and `redis_queue` speak another system's wire
//! (GatewayWorker's GatewayClient; elements apps `LPUSH` onto Redis lists).

pub(crate) mod gateway;
pub(crate) mod http;
mod http_body;
mod http_io;
pub(crate) mod push;
pub(crate) mod redis_queue;
mod web_msg_sender;
