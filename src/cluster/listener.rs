//! What arrives on the subscribed channels: each request answered by this node's own
//! registry (the same calls a single node makes), answers to this node's requests
//! counted, and the answers to one origin batched.

use super::Cluster;
use super::envelope::{
    ANSWER_SEP, Ask, HASH_END, answer, parse_answers, parse_envelope, put_answer, uids_page_body,
};
use super::history::scripts as ch;
use super::publisher::Outgoing;
use crate::registry::Delivery;
use crate::wire::CloseNotice;
use crate::wire::Payload;
use crate::wire::Uid;
use bytes::BufMut;
use bytes::Bytes;
use bytes::BytesMut;
use fred::interfaces::EventInterface;
use std::sync::Arc;
use tracing::debug;
use tracing::warn;

/// Handles what arrives on the subscribed channels.
pub(super) async fn listen(cluster: Arc<Cluster>) {
    let reply_channel = cluster.names.reply_channel(&cluster.node);
    let mut rx = cluster.sub.message_rx();
    let mut answers = Answers::default();
    loop {
        // Answers wait only while more messages are already here: a burst (a `/group`,
        // one line per uid) is answered in a few publishes, a lone push at once.
        if rx.is_empty() {
            for (origin, batch) in answers.take_all() {
                send_answers(&cluster, &origin, batch);
            }
        }
        let msg = match rx.recv().await {
            Ok(msg) => msg,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                warn!(
                    lost = n,
                    "cluster messages lost: the message buffer overflowed (--cluster-message-buffer)"
                );
                continue;
            }
            Err(_) => return,
        };
        let Some(bytes) = msg.value.as_bytes() else {
            continue;
        };
        if *msg.channel == *reply_channel {
            for (req, delivery, body) in parse_answers(bytes) {
                let body = body.map(Bytes::copy_from_slice);
                cluster.answered(req, Some((delivery, body)));
            }
            continue;
        }
        let Some((origin, req, kind, body)) = parse_envelope(bytes) else {
            debug!("malformed cluster message");
            continue;
        };
        let uid = cluster.names.uid_of(&msg.channel);
        let mine = origin == cluster.node.as_bytes();
        if let (Ask::Numbered, Some(uid)) = (kind, uid) {
            // Numbered in Redis: every holder's v1 tabs get it from here, ours too; the
            // origin gave its seed tabs theirs at once.
            let delivery = match ch::parse_numbered(body) {
                Some((at, payload)) => match Payload::new(Bytes::copy_from_slice(payload)) {
                    // The number travels in the payload (`m SEQ` when it is written).
                    Ok(p) => {
                        let p = match at {
                            Some(at) => {
                                // Its history keeps something: not a spare one.
                                cluster.lock_ledger().kept(uid);
                                p.into_numbered(at.seq)
                            }
                            None => p,
                        };
                        cluster.registry.deliver_numbered(uid, at, &p, !mine)
                    }
                    Err(_) => Delivery::default(),
                },
                None => Delivery::default(),
            };
            if mine {
                cluster.answered_here(req, delivery);
                continue;
            }
            if let Some(batch) = answers.add(origin, req, delivery) {
                send_answers(&cluster, origin, batch);
            }
            continue;
        }
        if mine {
            // Our own request: handled locally already; count the copy as answered.
            cluster.answered(req, None);
            continue;
        }
        let registry = &cluster.registry;
        let answer_with = match (kind, uid) {
            (Ask::Push, Some(uid)) => match Payload::new(Bytes::copy_from_slice(body)) {
                Ok(p) => registry.push(uid, &p),
                Err(_) => Delivery::default(),
            },
            (Ask::Kick, Some(uid)) => {
                let reason = String::from_utf8_lossy(body);
                Delivery {
                    queued: registry.kick(uid, &CloseNotice::kicked(Some(&reason))),
                    refused: 0,
                }
            }
            (Ask::Online, Some(uid)) => Delivery {
                queued: registry.connections_of(uid),
                refused: 0,
            },
            (Ask::Broadcast, None) => {
                let Some(nl) = memchr::memchr(b'\n', body) else {
                    continue;
                };
                let except: Vec<String> = serde_json::from_slice(&body[..nl]).unwrap_or_default();
                let except: Vec<Uid> = except.iter().map(|u| Uid::from(u.as_str())).collect();
                match Payload::new(Bytes::copy_from_slice(&body[nl + 1..])) {
                    Ok(p) => registry.broadcast(&p, &except),
                    Err(_) => Delivery::default(),
                }
            }
            (Ask::Count, None) => {
                let (uids, connections) = registry.totals();
                Delivery {
                    queued: uids,
                    refused: connections,
                }
            }
            (Ask::Uids, None) => {
                let mut args = std::str::from_utf8(body).unwrap_or("").split(' ');
                let mut number = || args.next().and_then(|a| a.parse::<u64>().ok());
                let (cursor, limit) = (number().unwrap_or(HASH_END), number().unwrap_or(1));
                let limit = usize::try_from(limit).unwrap_or(usize::MAX).max(1);
                let (uids, end) = cluster.local_uids(cursor, limit);
                let mut message = BytesMut::from(&answer(req, Delivery::default())[..]);
                message.put_u8(b'\n');
                message.put_slice(&uids_page_body(end, &uids));
                let _ = cluster.enqueue(Outgoing {
                    channel: cluster
                        .names
                        .reply_channel(&String::from_utf8_lossy(origin)),
                    message: message.freeze(),
                    numbered: None,
                    done: None,
                    waits: None,
                    joins: false,
                });
                continue;
            }
            _ => Delivery::default(),
        };
        if let Some(batch) = answers.add(origin, req, answer_with) {
            send_answers(&cluster, origin, batch);
        }
    }
}

/// Answers per batch at most, so a long burst still answers as it goes (the origin's
/// wait is bounded) and one message stays a few KiB.
const ANSWER_BATCH: usize = 256;

/// A holder's answers not yet published, by origin: `<req> <queued> <refused>` joined by
/// [`ANSWER_SEP`]. One publish per origin and burst instead of one per request: Redis,
/// this node and the origin each handle one message for up to [`ANSWER_BATCH`] answers.
#[derive(Default)]
pub(super) struct Answers {
    by_origin: Vec<(Vec<u8>, BytesMut, usize)>,
}

impl Answers {
    /// Adds one answer for `origin`; the batch, once it holds [`ANSWER_BATCH`].
    fn add(&mut self, origin: &[u8], req: u64, d: Delivery) -> Option<Bytes> {
        let at = match self.by_origin.iter().position(|(o, ..)| o == origin) {
            Some(at) => at,
            None => {
                self.by_origin.push((origin.to_vec(), BytesMut::new(), 0));
                self.by_origin.len() - 1
            }
        };
        let (_, buf, n) = &mut self.by_origin[at];
        if *n > 0 {
            buf.put_u8(ANSWER_SEP);
        }
        put_answer(buf, req, d);
        *n += 1;
        (*n >= ANSWER_BATCH).then(|| self.by_origin.swap_remove(at).1.freeze())
    }

    /// Every batch not yet sent, by origin.
    fn take_all(&mut self) -> impl Iterator<Item = (Vec<u8>, Bytes)> + '_ {
        self.by_origin
            .drain(..)
            .map(|(o, buf, _)| (o, buf.freeze()))
    }
}

fn send_answers(cluster: &Cluster, origin: &[u8], message: Bytes) {
    let _ = cluster.enqueue(Outgoing {
        channel: cluster
            .names
            .reply_channel(&String::from_utf8_lossy(origin)),
        message,
        numbered: None,
        done: None,
        waits: None,
        joins: true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_batched_per_origin_and_read_back_in_order() {
        let d = |queued| Delivery { queued, refused: 1 };
        let mut answers = Answers::default();
        for req in 0..ANSWER_BATCH as u64 - 1 {
            assert_eq!(answers.add(b"a", req, d(req as usize)), None);
        }
        assert_eq!(answers.add(b"b", 900, d(9)), None);
        // The 256th answer for `a` completes its batch: sent at once, `b`'s still kept.
        let full = answers.add(b"a", 255, d(255)).expect("a full batch");
        let read = parse_answers(&full);
        assert_eq!(read.len(), ANSWER_BATCH);
        for (i, (req, delivery, body)) in read.into_iter().enumerate() {
            assert_eq!((req, delivery, body), (i as u64, d(i), None));
        }
        let rest: Vec<_> = answers.take_all().collect();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].0, b"b");
        assert_eq!(parse_answers(&rest[0].1), vec![(900, d(9), None)]);
        assert_eq!(answers.take_all().count(), 0);
        // A malformed one in a batch is skipped, the others kept; one with a body alone.
        assert_eq!(
            parse_answers(b"1 0 0;x;2 3 0"),
            vec![
                (1, Delivery::default(), None),
                (
                    2,
                    Delivery {
                        queued: 3,
                        refused: 0
                    },
                    None
                )
            ]
        );
        assert_eq!(
            parse_answers(b"7 0 0\n12\n[]"),
            vec![(7, Delivery::default(), Some(&b"12\n[]"[..]))]
        );
    }
}
