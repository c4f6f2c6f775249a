//! The protocol's error codes, what pusher-js does with each, and the checks of the
//! connection URL (`/app/{key}?protocol=7`) that produce some of them.

use std::borrow::Cow;

use crate::wire::CloseNotice;

/// The only protocol version spoken: the one pusher-js 8 (and so Laravel Echo) sends, and
/// the first that carries `activity_timeout` in `pusher:connection_established`.
pub const PROTOCOL: u32 = 7;

/// An error code of the Pusher protocol, sent in `pusher:error` (`data.code`) and, when
/// the connection ends, as the WebSocket close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// 4000: the app accepts only `wss://`.
    TlsOnly,
    /// 4001: no app has this key.
    AppNotFound,
    /// 4003: the app is disabled.
    AppDisabled,
    /// 4004: the app is over its connection quota (Pusher's code; pusher-js does not
    /// reconnect on it, so pushwire closes an over-quota connection with
    /// [`Code::OverCapacity`] instead, as Soketi does, and a page comes back when there is
    /// room again).
    OverQuota,
    /// 4005: the path is not `/app/{key}`.
    PathNotFound,
    /// 4006: `protocol` is not a number.
    InvalidVersion,
    /// 4007: a `protocol` other than 7.
    UnsupportedProtocol,
    /// 4008: no `protocol` parameter.
    NoProtocol,
    /// 4009: unauthorized: a bad channel signature, a bad or missing signin, an origin not
    /// allowed, a user's connections terminated by the HTTP API.
    Unauthorized,
    /// 4100: over capacity (the daemon's or the app's connection limit): reconnect after
    /// backing off.
    OverCapacity,
    /// 4200: reconnect now (the daemon is stopping or reloading), or, in `pusher:error`
    /// without a close, a frame that is not a Pusher event.
    Reconnect,
    /// 4201: a ping went unanswered.
    PongTimeout,
    /// 4202: closed after inactivity.
    Inactive,
    /// 4301: a client event was refused (rate limit, size, not enabled, not a member).
    /// Only ever in `pusher:error`: as a close code pusher-js would stop reconnecting.
    ClientEventRejected,
}

/// What pusher-js 8 does when the connection closes with a code (its
/// `Protocol.getCloseAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// 4000: reconnect over TLS.
    TlsOnly,
    /// 4001–4099 and 4300 and up: no reconnect; the page stays disconnected.
    Never,
    /// 4100–4199: reconnect after a back-off.
    Backoff,
    /// 4200–4299: reconnect at once.
    Now,
}

impl Code {
    /// Every code, for documentation and tests.
    pub const ALL: [Code; 14] = [
        Code::TlsOnly,
        Code::AppNotFound,
        Code::AppDisabled,
        Code::OverQuota,
        Code::PathNotFound,
        Code::InvalidVersion,
        Code::UnsupportedProtocol,
        Code::NoProtocol,
        Code::Unauthorized,
        Code::OverCapacity,
        Code::Reconnect,
        Code::PongTimeout,
        Code::Inactive,
        Code::ClientEventRejected,
    ];

    /// The number on the wire.
    pub fn number(self) -> u16 {
        match self {
            Code::TlsOnly => 4000,
            Code::AppNotFound => 4001,
            Code::AppDisabled => 4003,
            Code::OverQuota => 4004,
            Code::PathNotFound => 4005,
            Code::InvalidVersion => 4006,
            Code::UnsupportedProtocol => 4007,
            Code::NoProtocol => 4008,
            Code::Unauthorized => 4009,
            Code::OverCapacity => 4100,
            Code::Reconnect => 4200,
            Code::PongTimeout => 4201,
            Code::Inactive => 4202,
            Code::ClientEventRejected => 4301,
        }
    }

    /// The protocol's words for it (a refusal may say more; see [`Refusal`]).
    pub fn message(self) -> &'static str {
        match self {
            Code::TlsOnly => "Application only accepts SSL connections, reconnect using wss://",
            Code::AppNotFound => "Application does not exist",
            Code::AppDisabled => "Application disabled",
            Code::OverQuota => "Application is over connection quota",
            Code::PathNotFound => "Path not found",
            Code::InvalidVersion => "Invalid version string format",
            Code::UnsupportedProtocol => "Unsupported protocol version",
            Code::NoProtocol => "No protocol version supplied",
            Code::Unauthorized => "Connection is unauthorized",
            Code::OverCapacity => "Over capacity",
            Code::Reconnect => "Generic reconnect immediately",
            Code::PongTimeout => "Pong reply not received",
            Code::Inactive => "Closed after inactivity",
            Code::ClientEventRejected => "Client event rejected",
        }
    }

    /// What pusher-js does after a close with this code.
    pub fn reconnect(self) -> Reconnect {
        match self.number() {
            4000 => Reconnect::TlsOnly,
            4100..=4199 => Reconnect::Backoff,
            4200..=4299 => Reconnect::Now,
            _ => Reconnect::Never,
        }
    }
}

/// A refusal the browser sees: a code and a reason (the code's message unless the
/// refusal says more). The door sends it as `pusher:error` and, if it closes the
/// connection, as the close frame ([`Refusal::close_notice`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The code.
    pub code: Code,
    /// The reason; at most 123 bytes reach a close frame.
    pub message: Cow<'static, str>,
}

impl Refusal {
    /// The code with its protocol message.
    pub fn of(code: Code) -> Refusal {
        Refusal {
            code,
            message: Cow::Borrowed(code.message()),
        }
    }

    /// The code with a message of the caller's.
    pub fn with(code: Code, message: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }

    /// The close frame for it (the reason cut to 123 bytes on a char boundary).
    pub fn close_notice(&self) -> CloseNotice {
        let mut end = self.message.len().min(123);
        while !self.message.is_char_boundary(end) {
            end -= 1;
        }
        CloseNotice {
            code: self.code.number(),
            reason: Cow::Owned(self.message[..end].to_owned()),
        }
    }
}

/// The app key in a connection path `/app/{key}` (the path without its query), or
/// `None` (→ [`Code::PathNotFound`]). A key is 1 to 64 bytes of `[A-Za-z0-9_-]`, so it
/// can be logged and looked up as it is.
pub fn app_key(path: &str) -> Option<&str> {
    let key = path.strip_prefix("/app/")?;
    let ok = !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(key)
}

/// Checks the connection query's `protocol` (pusher-js sends
/// `?protocol=7&client=js&version=8.6.0&flash=false`); the other parameters are free.
pub fn check_protocol(query: Option<&str>) -> Result<(), Code> {
    let raw = query
        .and_then(|q| crate::urlencoded::param(q.as_bytes(), "protocol"))
        .ok_or(Code::NoProtocol)?;
    let text = std::str::from_utf8(&raw).map_err(|_| Code::InvalidVersion)?;
    if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Code::InvalidVersion);
    }
    match text.parse::<u32>() {
        Ok(PROTOCOL) => Ok(()),
        _ => Err(Code::UnsupportedProtocol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_matches_pusher_js_close_actions() {
        let mut numbers: Vec<u16> = Code::ALL.iter().map(|c| c.number()).collect();
        numbers.dedup();
        assert_eq!(numbers.len(), Code::ALL.len(), "numbers are distinct");
        assert_eq!(Code::TlsOnly.reconnect(), Reconnect::TlsOnly);
        assert_eq!(Code::AppNotFound.reconnect(), Reconnect::Never);
        assert_eq!(Code::Unauthorized.reconnect(), Reconnect::Never);
        assert_eq!(Code::OverQuota.reconnect(), Reconnect::Never);
        assert_eq!(Code::OverCapacity.reconnect(), Reconnect::Backoff);
        assert_eq!(Code::Reconnect.reconnect(), Reconnect::Now);
        assert_eq!(Code::PongTimeout.reconnect(), Reconnect::Now);
        // Why 4301 is never a close code.
        assert_eq!(Code::ClientEventRejected.reconnect(), Reconnect::Never);
    }

    #[test]
    fn refusals_become_close_frames() {
        let r = Refusal::of(Code::Unauthorized);
        assert_eq!(r.close_notice().code, 4009);
        assert_eq!(r.close_notice().reason, "Connection is unauthorized");
        let long = Refusal::with(Code::Reconnect, "é".repeat(100));
        let notice = long.close_notice();
        assert!(notice.reason.len() <= 123 && notice.reason.chars().all(|c| c == 'é'));
    }

    #[test]
    fn connection_urls() {
        assert_eq!(app_key("/app/app-key_1"), Some("app-key_1"));
        for bad in [
            "/app/",
            "/app",
            "/apps/k",
            "/app/k/x",
            "/app/k%20",
            "app/k",
            "/",
        ] {
            assert_eq!(app_key(bad), None, "{bad:?}");
        }
        assert_eq!(app_key(&format!("/app/{}", "k".repeat(65))), None);
        let pusher_js = "protocol=7&client=js&version=8.6.0&flash=false";
        assert_eq!(check_protocol(Some(pusher_js)), Ok(()));
        assert_eq!(check_protocol(None), Err(Code::NoProtocol));
        assert_eq!(check_protocol(Some("client=js")), Err(Code::NoProtocol));
        assert_eq!(
            check_protocol(Some("protocol=6")),
            Err(Code::UnsupportedProtocol)
        );
        assert_eq!(
            check_protocol(Some("protocol=8")),
            Err(Code::UnsupportedProtocol)
        );
        assert_eq!(
            check_protocol(Some("protocol=7.0")),
            Err(Code::InvalidVersion)
        );
        assert_eq!(check_protocol(Some("protocol=")), Err(Code::InvalidVersion));
        assert_eq!(
            check_protocol(Some("protocol=99999999999")),
            Err(Code::InvalidVersion)
        );
    }
}
