//! Why the server closes a WebSocket: the close codes and reasons browsers see.

use std::borrow::Cow;

/// Why the server closes a WebSocket, as a close code and a reason the browser can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseNotice {
    /// RFC 6455 close code.
    pub code: u16,
    /// Human-readable reason (at most 123 bytes on the wire).
    pub reason: Cow<'static, str>,
}

impl CloseNotice {
    /// 1001: the daemon is stopping.
    pub const SHUTDOWN: CloseNotice = CloseNotice::fixed(1001, "server shutting down");
    /// 1013: the connection's outgoing queue filled up (it stopped reading).
    pub const QUEUE_FULL: CloseNotice = CloseNotice::fixed(1013, "send queue full");
    /// 1008: the first frame was empty.
    pub const EMPTY_UID: CloseNotice = CloseNotice::fixed(1008, "empty uid");
    /// 1008: no uid arrived within the bind timeout.
    pub const BIND_TIMEOUT: CloseNotice = CloseNotice::fixed(1008, "no uid within bind timeout");
    /// 1009: the browser sent a message over `--max-message-bytes`.
    pub const MESSAGE_TOO_BIG: CloseNotice = CloseNotice::fixed(1009, "message too big");
    /// 1007: a text message that is not UTF-8.
    pub const BAD_UTF8: CloseNotice = CloseNotice::fixed(1007, "text message is not UTF-8");
    /// 1003: the first frame was binary.
    pub const BINARY_UID: CloseNotice = CloseNotice::fixed(1003, "uid must be a text frame");
    /// 1008: a protocol v1 tab sent `--max-stale-acks` acks in a row that acknowledged
    /// nothing new.
    pub const ACK_FLOOD: CloseNotice =
        CloseNotice::fixed(1008, "ack flood: acks that acknowledge nothing new");
    /// 1013: a protocol v1 bind found every history in use (`--history-max-uids`) and
    /// none it could evict.
    pub const HISTORY_FULL: CloseNotice = CloseNotice::fixed(1013, "history full: try again later");

    pub(crate) const fn fixed(code: u16, reason: &'static str) -> Self {
        CloseNotice {
            code,
            reason: Cow::Borrowed(reason),
        }
    }

    /// 4001: a backend kicked the uid (`/kick`), with its reason or "kicked".
    pub fn kicked(reason: Option<&str>) -> Self {
        let reason = reason.unwrap_or("kicked");
        // A close reason may be at most 123 bytes; cut on a char boundary.
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        CloseNotice {
            code: 4001,
            reason: Cow::Owned(reason[..end].to_owned()),
        }
    }

    /// 1008: the JWT did not prove a uid; the reason says why.
    pub fn token(err: crate::auth::TokenError) -> Self {
        CloseNotice {
            code: 1008,
            reason: Cow::Owned(err.to_string()),
        }
    }

    /// 1008: the uid is longer than the configured limit.
    pub fn uid_too_long(max: usize) -> Self {
        CloseNotice {
            code: 1008,
            reason: Cow::Owned(format!("uid too long (max {max} bytes)")),
        }
    }
}
