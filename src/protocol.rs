//! Wire types of both ports: push-line framing and parsing, replies, close notices.
//!
//! Everything here is synchronous and allocation-light so it can be unit-tested and fuzzed
//! without sockets. The rules mirror Workerman's text protocol (one line in, one line out)
//! so the seed's PHP client works unchanged.

use std::borrow::Cow;
use std::fmt;

use bytes::{Buf, Bytes, BytesMut};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

/// One unit read off the push port.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, terminator (`\n` or `\r\n`) removed.
    Line(Bytes),
    /// A line longer than the limit; its bytes were discarded as they arrived.
    TooLong,
}

/// Splits a byte stream into lines without ever holding more than `max` bytes of one line.
///
/// Unlike `LinesCodec`, an over-long line is not an error that ends the stream: it becomes a
/// [`Frame::TooLong`] once its terminator arrives, so the backend gets one `fail` for it and
/// the next line is handled normally.
#[derive(Debug)]
pub struct LineFramer {
    max: usize,
    /// Bytes at the front of the buffer already searched for `\n`.
    scanned: usize,
    /// Inside an over-long line: drop bytes until the next `\n`.
    discarding: bool,
    /// The first byte of the over-long line being (or last) discarded.
    too_long_first: Option<u8>,
}

impl LineFramer {
    /// A framer for lines of at most `max` bytes (terminator excluded).
    pub fn new(max: usize) -> Self {
        LineFramer {
            max,
            scanned: 0,
            discarding: false,
            too_long_first: None,
        }
    }

    /// The first byte of the line last returned as [`Frame::TooLong`], the one byte of it
    /// that is kept: `Some(b'/')` tells an over-long command from an over-long push, so
    /// each gets the reply its sender can parse.
    pub fn too_long_first_byte(&self) -> Option<u8> {
        self.too_long_first
    }

    /// Takes the next complete frame out of `buf`, if there is one.
    pub fn next_frame(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        match memchr(b'\n', &buf[self.scanned..]) {
            Some(pos) => {
                let end = self.scanned + pos;
                self.scanned = 0;
                if self.discarding {
                    buf.advance(end + 1);
                    self.discarding = false;
                    return Some(Frame::TooLong);
                }
                let mut line = buf.split_to(end + 1);
                line.truncate(end);
                Some(self.finish_line(line))
            }
            None if self.discarding => {
                buf.clear();
                None
            }
            None => {
                // `max` content bytes plus a possible `\r` may legally wait for their `\n`.
                if buf.len() > self.max.saturating_add(1) {
                    self.too_long_first = buf.first().copied();
                    buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                } else {
                    self.scanned = buf.len();
                }
                None
            }
        }
    }

    /// At end of input: the unterminated last line, if any, counts as a line.
    pub fn finish(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        self.scanned = 0;
        if std::mem::take(&mut self.discarding) {
            buf.clear();
            return Some(Frame::TooLong);
        }
        if buf.is_empty() {
            return None;
        }
        let line = buf.split();
        Some(self.finish_line(line))
    }

    fn finish_line(&mut self, mut line: BytesMut) -> Frame {
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        if line.len() > self.max {
            self.too_long_first = line.first().copied();
            Frame::TooLong
        } else {
            Frame::Line(line.freeze())
        }
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// Why a push line was refused. Each maps to a `fail` reply and a debug log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadLine {
    /// Longer than `--max-line-bytes`.
    TooLong,
    /// Nothing but the terminator.
    Empty,
    /// Not UTF-8.
    NotUtf8,
    /// Not valid JSON.
    Json(String),
    /// Valid JSON, but not an object.
    NotObject,
    /// An object without a `"uid"` field.
    MissingUid,
    /// `"uid"` is neither a string nor an integer.
    BadUid,
    /// `"uid"` appears twice, so which user is meant is ambiguous.
    DuplicateUid,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadLine::TooLong => f.write_str("line too long"),
            BadLine::Empty => f.write_str("empty line"),
            BadLine::NotUtf8 => f.write_str("not UTF-8"),
            BadLine::Json(e) => write!(f, "invalid JSON: {e}"),
            BadLine::NotObject => f.write_str("not a JSON object"),
            BadLine::MissingUid => f.write_str("no \"uid\" field"),
            BadLine::BadUid => f.write_str("\"uid\" must be a string or an integer"),
            BadLine::DuplicateUid => f.write_str("\"uid\" given twice"),
        }
    }
}

impl std::error::Error for BadLine {}

/// Reads the target uid out of a push line: `{"uid":"u1",...}` or `{"uid":123,...}`.
///
/// The whole line is validated as JSON (so a push is never half-understood), but only the
/// uid is materialised; other fields are skipped without allocating.
pub fn push_target(line: &[u8]) -> Result<Cow<'_, str>, BadLine> {
    // serde_json does not check UTF-8 inside the strings it skips; the line is what
    // browsers get as a text frame, so all of it must be UTF-8.
    let line = std::str::from_utf8(line).map_err(|_| BadLine::NotUtf8)?;
    push_target_str(line)
}

/// [`push_target`] for a line already known to be UTF-8 (the push path checks it once,
/// when it makes the shared payload).
pub fn push_target_str(line: &str) -> Result<Cow<'_, str>, BadLine> {
    if line.bytes().all(|b| b.is_ascii_whitespace()) {
        return Err(BadLine::Empty);
    }
    let mut de = serde_json::Deserializer::from_str(line);
    let found = de.deserialize_any(TargetVisitor).map_err(classify)?;
    de.end().map_err(classify)?;
    found
}

fn classify(err: serde_json::Error) -> BadLine {
    BadLine::Json(err.to_string())
}

/// Outcome of the visitor; the outer `Result` is reserved for JSON syntax errors so a
/// semantic refusal (no uid) still validates the rest of the line.
type Target<'de> = Result<Cow<'de, str>, BadLine>;

struct TargetVisitor;

impl<'de> Visitor<'de> for TargetVisitor {
    type Value = Target<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut uid: Option<Result<Cow<'de, str>, BadLine>> = None;
        let mut duplicate = false;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if key.0 == "uid" {
                let value = map.next_value::<UidValue<'de>>()?;
                if uid.is_some() {
                    duplicate = true;
                }
                uid = Some(value.0.ok_or(BadLine::BadUid));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(match uid {
            _ if duplicate => Err(BadLine::DuplicateUid),
            None => Err(BadLine::MissingUid),
            Some(found) => found,
        })
    }

    // Every non-object JSON value: valid syntax, wrong shape.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(BadLine::NotObject))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(BadLine::NotObject))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(BadLine::NotObject))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(BadLine::NotObject))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(BadLine::NotObject))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err(BadLine::NotObject))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(BadLine::NotObject))
    }
}

/// An object key, borrowed from the line when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The `"uid"` value: `Some` for a string or an integer, `None` for any other JSON value.
struct UidValue<'de>(Option<Cow<'de, str>>);

impl<'de> de::Deserialize<'de> for UidValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UidValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a uid")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(UidValue(Some(Cow::Borrowed(s))))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(UidValue(Some(Cow::Owned(s.to_owned()))))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                Ok(UidValue(Some(Cow::Owned(n.to_string()))))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                Ok(UidValue(Some(Cow::Owned(n.to_string()))))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(UidValue(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(UidValue(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(UidValue(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(UidValue(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(UidValue(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// The one-line answer to a push line, byte-for-byte what Workerman's text protocol sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// At least one live connection took the message into its queue.
    Ok,
    /// Nobody took it: the uid is offline, every queue refused, or the line was bad.
    Fail,
}

impl Reply {
    /// Appends the encoded reply (with its `\n`) to `out`.
    pub fn encode(self, out: &mut BytesMut) {
        out.extend_from_slice(match self {
            Reply::Ok => b"ok\n",
            Reply::Fail => b"fail\n",
        });
    }
}

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

    const fn fixed(code: u16, reason: &'static str) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, input: &[&[u8]]) -> Vec<Frame> {
        let mut framer = LineFramer::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in input {
            buf.extend_from_slice(chunk);
            while let Some(f) = framer.next_frame(&mut buf) {
                out.push(f);
            }
            assert!(buf.len() <= max + 2 + chunk.len());
        }
        out.extend(framer.finish(&mut buf));
        out
    }

    fn line(s: &str) -> Frame {
        Frame::Line(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn an_over_long_line_keeps_its_first_byte() {
        let mut framer = LineFramer::new(4);
        let mut buf = BytesMut::from(&b"/join"[..]);
        assert_eq!(framer.next_frame(&mut buf), None);
        buf.extend_from_slice(b" room u1\n{\"uid\":1}\n");
        assert_eq!(framer.next_frame(&mut buf), Some(Frame::TooLong));
        assert_eq!(framer.too_long_first_byte(), Some(b'/'));
        assert_eq!(framer.next_frame(&mut buf), Some(Frame::TooLong));
        assert_eq!(framer.too_long_first_byte(), Some(b'{'));
        buf.extend_from_slice(b"/pingpong");
        assert_eq!(framer.next_frame(&mut buf), None);
        assert_eq!(framer.finish(&mut buf), Some(Frame::TooLong));
        assert_eq!(framer.too_long_first_byte(), Some(b'/'));
    }

    #[test]
    fn splits_lines_across_chunks_and_strips_cr() {
        let got = frames(16, &[b"ab", b"c\r\nde\n\n", b"f"]);
        assert_eq!(got, vec![line("abc"), line("de"), line(""), line("f")]);
    }

    #[test]
    fn over_long_line_is_one_frame_and_next_line_survives() {
        let big = vec![b'x'; 100];
        let got = frames(8, &[&big, &big, b"\nok\n"]);
        assert_eq!(got, vec![Frame::TooLong, line("ok")]);
        // Exactly at the limit is fine, with or without \r.
        assert_eq!(frames(3, &[b"abc\r\n"]), vec![line("abc")]);
        assert_eq!(frames(3, &[b"abcd\n"]), vec![Frame::TooLong]);
        assert_eq!(frames(3, &[b"abcd"]), vec![Frame::TooLong]);
    }

    #[test]
    fn targets() {
        assert_eq!(
            push_target(br#"{"uid":"uid1","percent":"88%"}"#).unwrap(),
            "uid1"
        );
        assert_eq!(push_target(br#"{"uid":123}"#).unwrap(), "123");
        assert_eq!(push_target(br#"{"uid":-7}"#).unwrap(), "-7");
        assert_eq!(
            push_target(br#"{"a":{"uid":1},"uid":"x\"y"}"#).unwrap(),
            "x\"y"
        );
        assert_eq!(push_target(b""), Err(BadLine::Empty));
        assert_eq!(push_target(br#""uid1""#), Err(BadLine::NotObject));
        assert_eq!(push_target(br#"["uid1"]"#), Err(BadLine::NotObject));
        assert_eq!(push_target(br#"{"uid":{"id":1}}"#), Err(BadLine::BadUid));
        assert_eq!(push_target(br#"{"uid":1.5}"#), Err(BadLine::BadUid));
        assert_eq!(push_target(br#"{"uid":null}"#), Err(BadLine::BadUid));
        assert_eq!(push_target(br#"{"x":1}"#), Err(BadLine::MissingUid));
        assert_eq!(
            push_target(br#"{"uid":"a","uid":"b"}"#),
            Err(BadLine::DuplicateUid)
        );
        assert!(matches!(
            push_target(br#"{"uid":"a"} x"#),
            Err(BadLine::Json(_))
        ));
        assert_eq!(push_target(b"{\"uid\":\"\xff\"}"), Err(BadLine::NotUtf8));
        assert_eq!(
            push_target(b"{\"uid\":0,\"\":\"\x80\"}"),
            Err(BadLine::NotUtf8)
        );
        assert!(matches!(
            push_target(br#"{"uid":"a""#),
            Err(BadLine::Json(_))
        ));
    }
}
