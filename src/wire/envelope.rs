//! Protocol v1 on the browser side (`docs/protocol.md`): the opt-in URL parameters, the
//! per-message prefix (`m SEQ `, `b `), the status frames and the ack frame. No I/O.
//!
//! The prefix is written into a small stack buffer at write time and sent as its own
//! `IoSlice` before the payload every recipient shares, so an opted-in connection costs
//! no copy of the message; a seed connection has no prefix at all.

use super::CloseNotice;

/// A message's number in its uid's history (carried by the [`super::Payload`]).
pub type Seq = u64;

/// A live message without a sequence (`/broadcast`): `b PAYLOAD` when enveloped.
pub const UNNUMBERED: Seq = 0;
/// A frame already in its final form (a status frame): no prefix, ever.
pub const RAW: Seq = u64::MAX;

/// Longest prefix: `m ` + 20 digits + ` `.
const MAX_PREFIX: usize = 23;

/// The bytes an opted-in connection writes before a payload.
#[derive(Clone, Copy)]
pub struct Prefix {
    bytes: [u8; MAX_PREFIX],
    len: u8,
}

impl Prefix {
    /// No prefix (seed connections, status frames).
    pub const NONE: Prefix = Prefix {
        bytes: [0; MAX_PREFIX],
        len: 0,
    };

    /// The prefix for an entry numbered `seq` on a connection that is `enveloped`.
    pub fn of(seq: Seq, enveloped: bool) -> Prefix {
        if !enveloped || seq == RAW {
            return Prefix::NONE;
        }
        let mut p = Prefix::NONE;
        if seq == UNNUMBERED {
            p.bytes[..2].copy_from_slice(b"b ");
            p.len = 2;
            return p;
        }
        p.bytes[..2].copy_from_slice(b"m ");
        let mut digits = [0u8; 20];
        let mut n = seq;
        let mut i = digits.len();
        while n > 0 {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let d = &digits[i..];
        p.bytes[2..2 + d.len()].copy_from_slice(d);
        p.bytes[2 + d.len()] = b' ';
        p.len = (3 + d.len()) as u8;
        p
    }

    /// The prefix's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A position in a uid's history: its epoch and a sequence number in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Which history instance (random per instance).
    pub epoch: u64,
    /// The last sequence number before the point (0: before the first message).
    pub seq: Seq,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}:{}", self.epoch, self.seq)
    }
}

impl Position {
    /// Parses `EPOCH:SEQ` (16 hex digits, a decimal).
    pub fn parse(s: &str) -> Option<Position> {
        let (epoch, seq) = s.split_once(':')?;
        if epoch.len() != 16 || !epoch.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Position {
            epoch: u64::from_str_radix(epoch, 16).ok()?,
            seq: seq.parse().ok().filter(|&s| s != RAW)?,
        })
    }
}

/// How a browser connection speaks, from its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The seed's protocol: pushed lines as they are.
    Seed,
    /// `?pushwire=1`: enveloped messages, a status frame, acks; `since` to resume.
    V1 {
        /// Where to resume, if given.
        since: Option<Position>,
    },
}

/// Close notices for bad opt-in parameters.
pub mod refusals {
    use super::CloseNotice;

    /// 1008: `pushwire` is not a version this daemon speaks.
    pub const VERSION: CloseNotice = CloseNotice::fixed(1008, "unsupported protocol version");
    /// 1008: an opted-in connection's `since` is not `EPOCH:SEQ`.
    pub const SINCE: CloseNotice = CloseNotice::fixed(1008, "bad since (want EPOCH:SEQ)");
}

impl Mode {
    /// The mode a query string asks for; `Err` is the close the connection gets.
    ///
    /// The parameter is `pushwire`, not a short `v`: pages already put their own
    /// parameters on the WebSocket URL (`?v=2` for an app version, `?since=` of their
    /// own), and a seed page must never opt in, or be refused, by accident. Nothing else
    /// is read unless `pushwire` is there.
    pub fn from_query(query: Option<&str>) -> Result<Mode, CloseNotice> {
        let Some(query) = query else {
            return Ok(Mode::Seed);
        };
        let param = |name| crate::urlencoded::param(query.as_bytes(), name);
        match param("pushwire").as_deref() {
            None => Ok(Mode::Seed),
            Some(b"1") => {
                let since = match param("since") {
                    None => None,
                    Some(raw) => Some(
                        std::str::from_utf8(&raw)
                            .ok()
                            .and_then(Position::parse)
                            .ok_or(refusals::SINCE)?,
                    ),
                };
                Ok(Mode::V1 { since })
            }
            Some(_) => Err(refusals::VERSION),
        }
    }
}

/// The kind of a session's first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No `since` was given.
    New,
    /// The resume is covered: everything after `since` follows.
    Recovered,
    /// History does not cover the resume point.
    NotRecovered,
}

/// `s KIND EPOCH:SEQ`.
pub fn status_frame(status: Status, at: Position) -> String {
    let kind = match status {
        Status::New => "new",
        Status::Recovered => "recovered",
        Status::NotRecovered => "not_recovered",
    };
    format!("s {kind} {at}")
}

/// The sequence of an ack frame (`a SEQ`), if it is one.
pub fn parse_ack(text: &str) -> Option<Seq> {
    let n = text.strip_prefix("a ")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_positions_modes() {
        assert_eq!(Prefix::of(17, true).as_bytes(), b"m 17 ");
        assert_eq!(
            Prefix::of(u64::MAX - 1, true).as_bytes(),
            b"m 18446744073709551614 "
        );
        assert_eq!(Prefix::of(UNNUMBERED, true).as_bytes(), b"b ");
        assert!(Prefix::of(RAW, true).as_bytes().is_empty());
        assert!(Prefix::of(5, false).as_bytes().is_empty());
        let p = Position::parse("00000000000000ff:12").unwrap();
        assert_eq!((p.epoch, p.seq), (255, 12));
        assert_eq!(p.to_string(), "00000000000000ff:12");
        for bad in ["ff:1", "00000000000000ff:", "00000000000000fg:1", "x", ""] {
            assert_eq!(Position::parse(bad), None, "{bad}");
        }
        assert_eq!(Mode::from_query(None), Ok(Mode::Seed));
        assert_eq!(Mode::from_query(Some("token=x")), Ok(Mode::Seed));
        assert_eq!(
            Mode::from_query(Some("pushwire=1")),
            Ok(Mode::V1 { since: None })
        );
        assert_eq!(
            Mode::from_query(Some("pushwire=1&since=00000000000000ff%3A3")),
            Ok(Mode::V1 {
                since: Some(Position { epoch: 255, seq: 3 })
            })
        );
        assert_eq!(Mode::from_query(Some("pushwire=2")), Err(refusals::VERSION));
        assert_eq!(
            Mode::from_query(Some("pushwire=1&since=1")),
            Err(refusals::SINCE)
        );
        // A page's own parameters never opt in, nor get refused.
        for seed in ["v=1", "v=2&since=yesterday", "since=00000000000000ff:3"] {
            assert_eq!(Mode::from_query(Some(seed)), Ok(Mode::Seed), "{seed}");
        }
        assert_eq!(parse_ack("a 12"), Some(12));
        assert_eq!(parse_ack("a "), None);
        assert_eq!(parse_ack("a -1"), None);
        assert_eq!(parse_ack("hello"), None);
    }
}
