//! The node protocol on the wire, no I/O: requests (`NODE REQ KIND\nBODY`), answers and
//! their batches, and the `/uids` hash order and page bodies.

use crate::registry::Delivery;
use crate::wire::Uid;
use bytes::BufMut;
use bytes::Bytes;
use bytes::BytesMut;

/// Separates the answers batched in one message on an origin's reply channel.
pub(super) const ANSWER_SEP: u8 = b';';

/// What a request asks of the nodes that get it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ask {
    /// Deliver the body to the uid's connections.
    Push,
    /// Close the uid's connections (the body is the reason).
    Kick,
    /// How many connections of the uid are here.
    Online,
    /// Deliver to every connection here but the listed uids' (`["u",...]\npayload`).
    Broadcast,
    /// (uids, connections) here.
    Count,
    /// This node's part of a `/uids` page (`CURSOR LIMIT`).
    Uids,
    /// A push numbered by Redis's script (`EPOCH SEQ\nPAYLOAD`, see `cluster/history/scripts.rs`).
    Numbered,
}

impl Ask {
    fn letter(self) -> u8 {
        match self {
            Ask::Push => b'p',
            Ask::Kick => b'k',
            Ask::Online => b'q',
            Ask::Broadcast => b'b',
            Ask::Count => b'c',
            Ask::Uids => b'u',
            Ask::Numbered => b'h',
        }
    }

    fn from_letter(b: u8) -> Option<Ask> {
        Some(match b {
            b'p' => Ask::Push,
            b'k' => Ask::Kick,
            b'q' => Ask::Online,
            b'b' => Ask::Broadcast,
            b'c' => Ask::Count,
            b'u' => Ask::Uids,
            b'h' => Ask::Numbered,
            _ => return None,
        })
    }
}

/// `<node> <req> <kind>\n<body>`.
pub(super) fn envelope(node: &str, req: u64, kind: Ask, body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(node.len() + 24 + body.len());
    b.put_slice(node.as_bytes());
    b.put_slice(format!(" {req} ").as_bytes());
    b.put_u8(kind.letter());
    b.put_u8(b'\n');
    b.put_slice(body);
    b.freeze()
}

pub(super) fn parse_envelope(b: &[u8]) -> Option<(&[u8], u64, Ask, &[u8])> {
    let nl = memchr::memchr(b'\n', b)?;
    let (head, body) = (&b[..nl], &b[nl + 1..]);
    let mut parts = head.split(|&c| c == b' ');
    let node = parts.next()?;
    let req = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let kind = match parts.next()? {
        [letter] => Ask::from_letter(*letter)?,
        _ => return None,
    };
    Some((node, req, kind, body))
}

/// `<req> <queued> <refused>`.
pub(super) fn answer(req: u64, d: Delivery) -> Bytes {
    let mut b = BytesMut::new();
    put_answer(&mut b, req, d);
    b.freeze()
}

/// Appends `<req> <queued> <refused>` to `buf` (no allocation of its own).
pub(super) fn put_answer(buf: &mut BytesMut, req: u64, d: Delivery) {
    use std::fmt::Write;
    // Writing to a BytesMut cannot fail.
    let _ = write!(buf, "{req} {} {}", d.queued, d.refused);
}

/// What one message on a reply channel says: one answer with a body, or any number
/// without, joined by [`ANSWER_SEP`] (a holder's batch). Malformed ones are skipped.
pub(super) fn parse_answers(b: &[u8]) -> Vec<(u64, Delivery, Option<&[u8]>)> {
    if memchr::memchr(b'\n', b).is_some() {
        return parse_answer(b).into_iter().collect();
    }
    b.split(|&c| c == ANSWER_SEP)
        .filter_map(parse_answer)
        .collect()
}

/// `<req> <queued> <refused>[\n<body>]`.
fn parse_answer(b: &[u8]) -> Option<(u64, Delivery, Option<&[u8]>)> {
    let (head, body) = match memchr::memchr(b'\n', b) {
        Some(nl) => (&b[..nl], Some(&b[nl + 1..])),
        None => (b, None),
    };
    let text = std::str::from_utf8(head).ok()?;
    let mut it = text.split(' ').map(str::parse::<u64>);
    let req = it.next()?.ok()?;
    let queued = usize::try_from(it.next()?.ok()?).ok()?;
    let refused = usize::try_from(it.next()?.ok()?).ok()?;
    Some((req, Delivery { queued, refused }, body))
}

/// One past the largest [`uid_hash`]: where a `/uids` walk ends.
pub(super) const HASH_END: u64 = 1 << 32;

/// The order of a cluster-wide `/uids` walk: FNV-1a (32 bits) of the uid's bytes, the
/// same on every node and every build.
pub(super) fn uid_hash(uid: &str) -> u32 {
    uid.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A node's `/uids` answer body: `<end>\n<JSON array of uids>`.
pub(super) fn uids_page_body(end: u64, uids: &[(u32, Uid)]) -> Bytes {
    let names: Vec<&str> = uids.iter().map(|(_, u)| &**u).collect();
    let mut b = format!("{end}\n").into_bytes();
    // Serialising a list of strings cannot fail.
    let _ = serde_json::to_writer(&mut b, &names);
    Bytes::from(b)
}

pub(super) fn parse_uids_page(b: &[u8]) -> Option<(u64, Vec<String>)> {
    let nl = memchr::memchr(b'\n', b)?;
    let end = std::str::from_utf8(&b[..nl]).ok()?.parse().ok()?;
    let uids = serde_json::from_slice(&b[nl + 1..]).ok()?;
    Some((end, uids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_and_answers_round_trip() {
        let e = envelope("abc", 42, Ask::Broadcast, b"[\"u\"]\n x");
        assert_eq!(
            parse_envelope(&e),
            Some((&b"abc"[..], 42, Ask::Broadcast, &b"[\"u\"]\n x"[..]))
        );
        assert_eq!(parse_envelope(b"abc 1 z\n"), None);
        let a = answer(
            7,
            Delivery {
                queued: 2,
                refused: 1,
            },
        );
        assert_eq!(
            parse_answer(&a),
            Some((
                7,
                Delivery {
                    queued: 2,
                    refused: 1
                },
                None
            ))
        );
        assert_eq!(parse_answer(b"x 1 2"), None);
        assert_eq!(
            parse_answer(b"7 0 0\n12\n[]"),
            Some((7, Delivery::default(), Some(&b"12\n[]"[..])))
        );
        let page = [
            (uid_hash("a"), Uid::from("a")),
            (uid_hash("b\n"), Uid::from("b\n")),
        ];
        assert_eq!(
            parse_uids_page(&uids_page_body(99, &page)),
            Some((99, vec!["a".to_owned(), "b\n".to_owned()]))
        );
        // FNV-1a's published test vectors: stable across nodes and builds.
        assert_eq!(uid_hash(""), 0x811c_9dc5);
        assert_eq!(uid_hash("a"), 0xe40c_292c);
    }
}
