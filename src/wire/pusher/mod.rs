//! The Pusher Channels protocol (version 7), bytes ↔ types, no I/O: what pusher-js and
//! Laravel Echo send and expect over `/app/{key}`, what the server SDKs (Laravel's
//! `pusher`/`reverb` broadcaster, pusher-http-node, -python) sign, and the webhooks the
//! app receives. The doors that speak it (issue 24) sit on the engine; this is only the
//! protocol, checked against the real clients by `tests/pusher_clients.rs`.
//!
//! - [`channel`]: channel names and their kinds, user ids, `socket_id`s.
//! - [`inbound`]: client frames (`pusher:subscribe`, `…:signin`, `client-*`, …).
//! - [`outbound`]: server frames (double-encoded `data`) and webhook bodies.
//! - [`sign`]: an app's [`Keys`]; channel auth, signin and webhook signatures.
//! - [`api`]: the HTTP API request signature, with a freshness window.
//! - [`codes`]: the error and close codes, what pusher-js does with each; the
//!   connection URL's checks.

pub mod api;
pub mod channel;
pub mod codes;
pub mod inbound;
pub mod outbound;
pub mod sign;

pub use channel::{Access, Channel, Kind, NameError, SocketId};
pub use codes::{Code, Reconnect, Refusal};
pub use inbound::{BadFrame, Inbound};
pub use sign::{AuthError, Keys, Member};
