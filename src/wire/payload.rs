//! [`Payload`]: what browsers receive, checked as UTF-8 once and shared by every
//! recipient; [`Uid`]: a user id as the registry and every command hold it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

/// A user id, shared between the registry's key, each connection's binding and the lists
/// commands carry (a refcount bump per copy).
pub type Uid = Arc<str>;

/// A message for browsers: bytes known to be UTF-8 (a text frame must be), shared by
/// every recipient, since cloning is a refcount bump on the buffer the line was read into,
/// and stamped with when the daemon received it (the push→write latency histogram).
///
/// Why our own type rather than tungstenite's `Utf8Bytes`: tungstenite only parses the
/// upgrade now, and the core should not depend on it for its central type; and the
/// receive time belongs with the message.
///
/// One pointer wide: every connection's queue and write batch hold `Payload`s and keep
/// their capacity while idle, so its size is paid per idle browser that ever received
/// a message. Measured at 10k idle browsers against the build before `Payload`
/// (tungstenite's 32-byte `Utf8Bytes`): 4.22 vs 3.79 KiB per connection with the
/// bytes and the time inline (48 bytes), 3.86 vs 3.88 KiB with this (8 bytes; the
/// price is one allocation per pushed line, shared by all its recipients).
#[derive(Clone, Debug)]
pub struct Payload(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    bytes: Bytes,
    received: Instant,
    /// Its number in a uid's history (protocol v1), written before it on an opted-in
    /// connection; [`crate::wire::envelope::UNNUMBERED`] or `RAW` otherwise. Here rather
    /// than beside each queue entry: a numbered message is a copy of its own per uid
    /// anyway, and every idle connection's queue stays one pointer per slot.
    seq: u64,
}

/// The bytes are not UTF-8 (a text frame cannot carry them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotUtf8;

impl Payload {
    /// Checks `bytes` once; received now.
    pub fn new(bytes: Bytes) -> Result<Payload, NotUtf8> {
        std::str::from_utf8(&bytes).map_err(|_| NotUtf8)?;
        Ok(Payload::unchecked_ok(bytes))
    }

    /// `bytes` whose UTF-8 check the caller already did: `text` must be the very same
    /// memory (`std::str::from_utf8(&bytes)`), which is verified by address and length,
    /// so no check runs twice and no wrong claim gets through.
    pub fn from_checked(bytes: Bytes, text: &str) -> Option<Payload> {
        let same = bytes.as_ptr() == text.as_ptr() && bytes.len() == text.len();
        same.then(|| Payload::unchecked_ok(bytes))
    }

    fn unchecked_ok(bytes: Bytes) -> Payload {
        Payload(Arc::new(Shared {
            bytes,
            received: Instant::now(),
            seq: crate::wire::envelope::UNNUMBERED,
        }))
    }

    /// A frame for an opted-in connection that is already in its final form (a status
    /// frame): never prefixed.
    pub fn raw_frame(text: String) -> Payload {
        Payload(Arc::new(Shared {
            bytes: Bytes::from(text),
            received: Instant::now(),
            seq: crate::wire::envelope::RAW,
        }))
    }

    /// A static message (tests, fixed texts).
    pub fn from_static(text: &'static str) -> Payload {
        Payload::unchecked_ok(Bytes::from_static(text.as_bytes()))
    }

    /// The tail from byte `at`, sharing the buffer; `None` unless `at` is on a character
    /// boundary (a continuation byte would start a broken character).
    pub fn tail(&self, at: usize) -> Option<Payload> {
        let bytes = &self.0.bytes;
        let boundary = match bytes.get(at) {
            Some(&b) => (b as i8) >= -0x40, // not 0b10xx_xxxx
            None => at == bytes.len(),
        };
        boundary.then(|| {
            Payload(Arc::new(Shared {
                bytes: bytes.slice(at..),
                received: self.0.received,
                seq: self.0.seq,
            }))
        })
    }

    /// The same message numbered `seq`, in an allocation of its own, for keeping: a line
    /// read off the push port shares its read buffer with the lines around it, and a
    /// kept message must not pin that buffer (history's byte bounds count what it keeps).
    pub fn numbered(&self, seq: u64) -> Payload {
        Payload(Arc::new(Shared {
            bytes: Bytes::copy_from_slice(&self.0.bytes),
            received: self.0.received,
            seq,
        }))
    }

    /// This message numbered `seq`: in place when nothing else shares it (a message just
    /// read off Redis), else a copy ([`Payload::numbered`]).
    pub fn into_numbered(mut self, seq: u64) -> Payload {
        match Arc::get_mut(&mut self.0) {
            Some(shared) => {
                shared.seq = seq;
                self
            }
            None => self.numbered(seq),
        }
    }

    /// Its number in a uid's history (see [`Payload::numbered`]).
    pub fn seq(&self) -> u64 {
        self.0.seq
    }

    /// The message's bytes (UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0.bytes
    }

    /// The message's bytes, shared (a reference count, not a copy).
    pub fn bytes(&self) -> Bytes {
        self.0.bytes.clone()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.bytes.len()
    }

    /// True for an empty message.
    pub fn is_empty(&self) -> bool {
        self.0.bytes.is_empty()
    }

    /// When the daemon received it.
    pub fn received(&self) -> Instant {
        self.0.received
    }
}

impl From<String> for Payload {
    fn from(text: String) -> Payload {
        Payload::unchecked_ok(Bytes::from(text))
    }
}

impl PartialEq for Payload {
    /// Messages are equal by content; when they arrived does not matter.
    fn eq(&self, other: &Payload) -> bool {
        self.0.bytes == other.0.bytes
    }
}

impl Eq for Payload {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_once_and_sliced_on_boundaries() {
        let line = Bytes::from_static("é{\"a\":1}".as_bytes());
        let text = std::str::from_utf8(&line).unwrap();
        let p = Payload::from_checked(line.clone(), text).unwrap();
        assert!(Payload::from_checked(line.slice(1..), text).is_none());
        assert!(p.tail(1).is_none(), "inside é");
        assert_eq!(p.tail(2).unwrap().as_bytes(), b"{\"a\":1}");
        assert_eq!(p.tail(p.len()).unwrap().len(), 0);
        assert!(p.tail(p.len() + 1).is_none());
        assert_eq!(Payload::new(Bytes::from_static(b"\xff")), Err(NotUtf8));
    }
}
