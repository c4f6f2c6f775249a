//! Bytes ↔ types for every door, no I/O: push-line framing, the plain push line's uid,
//! the `/`-command grammar, close notices, the [`Payload`] every recipient shares,
//! protocol v1's browser frames ([`envelope`]), the Pusher Channels protocol ([`pusher`]),
//! GatewayWorker's wire ([`gateway`]) and PHP's `serialize()` format ([`php`]).

pub mod close;
pub mod command;
pub mod envelope;
pub mod gateway;
pub mod lines;
pub mod payload;
pub mod php;
pub mod push_line;
pub mod pusher;

pub use close::CloseNotice;
pub use lines::{Frame, LineFramer};
pub use payload::{NotUtf8, Payload, Uid};
pub use push_line::{BadLine, push_target, push_target_str};
