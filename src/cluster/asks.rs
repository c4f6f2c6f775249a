//! Asking the nodes: a publish whose reply waits for exactly the answers Redis said
//! would come (pushes, kicks, presence, broadcasts), and the answers counted as they
//! arrive, this node's own included.

use super::Cluster;
use super::envelope::{Ask, envelope};
use super::publisher::{Numbered, Outgoing};
use crate::registry::Delivery;
use crate::wire::Payload;
use crate::wire::Uid;
use crate::wire::envelope::Position;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::MutexGuard;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::oneshot;

/// What other holders answered about one push.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Remote {
    /// Connections on other nodes that queued it, and that refused it.
    pub delivery: Delivery,
    /// Holders that got it but did not answer in time.
    pub missing: usize,
    /// Other nodes that answered.
    pub answered: usize,
    /// Redis could not be asked (down, the publish queue is full, or the Redis client
    /// refused it before sending): it never left this node and reached nobody elsewhere.
    pub unavailable: bool,
    /// Handed to the Redis client, then no answer in time (the link died, or Redis
    /// stalled): a holder may have it, or get it once Redis is back. Never with
    /// `unavailable`.
    pub in_doubt: bool,
    /// Its place in the uid's history (numbered pushes with history on).
    pub at: Option<Position>,
    /// `ttl=`: no node held the uid, so it was kept in the uid's offline queue.
    pub queued: bool,
}

/// What the publisher does with a publish still queued when its reply stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Late {
    /// Drop it unsent (answered in doubt already).
    Drop,
    /// Send it anyway (one uid of a fan-out; see [`Cluster::push_member`]).
    Send,
}

/// Why a publish got no answer from Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unanswered {
    /// Not written: the Redis client refused it before it reached the connection.
    NotSent,
    /// Handed to the Redis client, then an error or nothing: Redis may have run it.
    InDoubt,
}

/// What Redis said about one publish or numbering script.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Published {
    /// Subscribers that got it.
    pub(super) receivers: i64,
    pub(super) at: Option<Position>,
    pub(super) queued: bool,
}

/// A push waiting for the holders' answers.
#[derive(Debug, Default)]
pub(super) struct Waiting {
    /// Answers still expected (`None` until Redis said how many got it).
    expected: Option<usize>,
    pub(super) got: usize,
    /// Answers from other nodes (`got` also counts our own copy).
    pub(super) answered: usize,
    pub(super) delivery: Delivery,
    /// What answers carried beyond their counts (`/uids` pages).
    bodies: Vec<Bytes>,
    pub(super) done: Option<oneshot::Sender<()>>,
    /// Its publish was handed to the Redis client (set by the publisher under the same
    /// lock the reply takes when it stops waiting, so exactly one of them decides).
    pub(super) sent: bool,
}

impl Waiting {
    fn complete(&self) -> bool {
        self.expected.is_some_and(|n| self.got >= n)
    }
}
impl Cluster {
    /// Publishes `payload` to the other holders of `uid` and waits (bounded) for their
    /// answers. Call it right after delivering locally: the publish is queued in order
    /// before this returns, so later pushes are published after it.
    pub fn push(
        self: &Arc<Self>,
        uid: &str,
        payload: &Payload,
    ) -> impl Future<Output = Remote> + use<> {
        self.push_kept(uid, payload, None)
    }

    /// [`Cluster::push`] for one uid of a fan-out (`/send`, `/group`): its publish is sent
    /// even once its reply has stopped waiting. A large fan-out can outlast the wait on a
    /// busy node (57,000 members, 2 cores), and its members should still get it; the
    /// reply counts only the takes confirmed in time, as documented, so a late delivery
    /// contradicts nothing. (A single push's late publish is dropped instead: its reply,
    /// `fail` or `partial`, may already have made the backend retry.)
    pub fn push_member(
        self: &Arc<Self>,
        uid: &str,
        payload: &Payload,
    ) -> impl Future<Output = Remote> + use<> {
        let channel = self.names.uid_channel(uid);
        let numbered = self.numbered(uid, payload, None);
        let gathered = self.gather_as(channel, numbered, Ask::Push, payload.as_bytes(), Late::Send);
        async move { gathered.await.0 }
    }

    /// [`Cluster::push`]; with `queue_for` (history on), a uid no node holds gets it in
    /// its offline queue in Redis (`Remote::queued`), its history created if missing.
    pub fn push_kept(
        self: &Arc<Self>,
        uid: &str,
        payload: &Payload,
        queue_for: Option<Duration>,
    ) -> impl Future<Output = Remote> + use<> {
        let channel = self.names.uid_channel(uid);
        let numbered = self.numbered(uid, payload, queue_for);
        let gathered = self.gather_as(channel, numbered, Ask::Push, payload.as_bytes(), Late::Drop);
        async move { gathered.await.0 }
    }

    /// With history on, how a push to `uid` runs the numbering script.
    pub(super) fn numbered(
        &self,
        uid: &str,
        payload: &Payload,
        queue_for: Option<Duration>,
    ) -> Option<Numbered> {
        self.history.map(|_| {
            let (slot, keys) = self.names.history(uid);
            Numbered {
                payload: payload.bytes(),
                slot,
                keys,
                req: 0,
                queue_ttl: queue_for.map_or(0, |t| (t.as_millis() as u64).max(1)),
            }
        })
    }

    /// Closes every connection of `uid` on the other nodes; `queued` is how many.
    pub fn kick(self: &Arc<Self>, uid: &str, reason: &str) -> impl Future<Output = Remote> + use<> {
        self.ask(self.names.uid_channel(uid), Ask::Kick, reason.as_bytes())
    }

    /// Connections of `uid` on the other nodes (in `queued`).
    pub fn online(self: &Arc<Self>, uid: &str) -> impl Future<Output = Remote> + use<> {
        self.ask(self.names.uid_channel(uid), Ask::Online, b"")
    }

    /// `payload` to every connection on the other nodes but those of `except`: one
    /// publish, whatever the number of nodes.
    pub fn broadcast(
        self: &Arc<Self>,
        payload: &Payload,
        except: &[Uid],
    ) -> impl Future<Output = Remote> + use<> {
        let mut body = serde_json::to_vec(&except.iter().map(|u| &**u).collect::<Vec<&str>>())
            .unwrap_or_else(|_| b"[]".to_vec());
        body.push(b'\n');
        body.extend_from_slice(payload.as_bytes());
        self.ask(self.names.all().to_owned(), Ask::Broadcast, &body)
    }

    /// The other nodes' (uids, connections), in (`queued`, `refused`).
    pub fn count(self: &Arc<Self>) -> impl Future<Output = Remote> + use<> {
        self.ask(self.names.all().to_owned(), Ask::Count, b"")
    }

    /// Publishes one request on `channel` and gathers the answers of everyone who got it.
    pub(super) fn ask(
        self: &Arc<Self>,
        channel: String,
        kind: Ask,
        body: &[u8],
    ) -> impl Future<Output = Remote> + use<> {
        let gathered = self.gather(channel, kind, body);
        async move { gathered.await.0 }
    }

    /// [`Cluster::ask`], with the bodies the answers carried.
    pub(super) fn gather(
        self: &Arc<Self>,
        channel: String,
        kind: Ask,
        body: &[u8],
    ) -> impl Future<Output = (Remote, Vec<Bytes>)> + use<> {
        self.gather_as(channel, None, kind, body, Late::Drop)
    }

    /// [`Cluster::gather`]; `numbered` runs the push through the numbering script.
    fn gather_as(
        self: &Arc<Self>,
        channel: String,
        numbered: Option<Numbered>,
        kind: Ask,
        body: &[u8],
        late: Late,
    ) -> impl Future<Output = (Remote, Vec<Bytes>)> + use<> {
        let req = self.next_req.fetch_add(1, Relaxed);
        let (done_tx, done_rx) = oneshot::channel();
        let (count_tx, count_rx) = oneshot::channel();
        self.lock_waiting().insert(
            req,
            Waiting {
                done: Some(done_tx),
                ..Waiting::default()
            },
        );
        // The wait is bounded from now, when the request is made, not from the future's
        // first poll: a connection's replies are polled in order, head first, so a
        // deadline taken at first poll would start only once the replies ahead had
        // resolved, and N pipelined requests to a stalled Redis would wait N timeouts.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let queued = if !self.is_up() {
            Err(())
        } else {
            let (message, numbered) = match numbered {
                Some(n) => (n.payload.clone(), Some(Numbered { req, ..n })),
                None => (envelope(&self.node, req, kind, body), None),
            };
            self.enqueue(Outgoing {
                channel,
                message,
                numbered,
                done: Some(count_tx),
                waits: (late == Late::Drop).then_some(req),
                joins: false,
            })
        };
        let this = self.clone();
        async move {
            // `None`: the publisher said nothing in time. Then the publish is in doubt
            // if it was handed to the Redis client (or will be: a fan-out member's is sent
            // late), and never sent otherwise: the publisher drops one whose reply is gone.
            let unanswered = |this: &Cluster, why: Option<Unanswered>| {
                let entry = this.lock_waiting().remove(&req);
                let why = why.unwrap_or(if late == Late::Send || entry.is_some_and(|w| w.sent) {
                    Unanswered::InDoubt
                } else {
                    Unanswered::NotSent
                });
                let remote = Remote {
                    unavailable: why == Unanswered::NotSent,
                    in_doubt: why == Unanswered::InDoubt,
                    ..Remote::default()
                };
                (remote, Vec::new())
            };
            if queued.is_err() {
                return unanswered(&this, Some(Unanswered::NotSent));
            }
            let published = match tokio::time::timeout_at(deadline, count_rx).await {
                Ok(Ok(Ok(p))) => p,
                Ok(Ok(Err(why))) => return unanswered(&this, Some(why)),
                Ok(Err(_)) | Err(_) => return unanswered(&this, None),
            };
            let receivers = usize::try_from(published.receivers).unwrap_or(0);
            let (at, queued) = (published.at, published.queued);
            {
                let mut waiting = this.lock_waiting();
                let Some(w) = waiting.get_mut(&req) else {
                    return (Remote::default(), Vec::new());
                };
                w.expected = Some(receivers);
                if w.complete() {
                    let w = waiting.remove(&req).unwrap_or_default();
                    let remote = Remote {
                        delivery: w.delivery,
                        answered: w.answered,
                        at,
                        queued,
                        ..Remote::default()
                    };
                    return (remote, w.bodies);
                }
            }
            let _ = tokio::time::timeout_at(deadline, done_rx).await;
            let w = this.lock_waiting().remove(&req).unwrap_or_default();
            let remote = Remote {
                delivery: w.delivery,
                missing: receivers.saturating_sub(w.got),
                answered: w.answered,
                unavailable: false,
                in_doubt: false,
                at,
                queued,
            };
            (remote, w.bodies)
        }
    }

    /// One holder's answer (`delivery`), or our own copy (`None`: local delivery was
    /// counted by the caller).
    pub(super) fn answered(&self, req: u64, delivery: Option<(Delivery, Option<Bytes>)>) {
        let mut waiting = self.lock_waiting();
        let Some(w) = waiting.get_mut(&req) else {
            return; // Timed out already.
        };
        w.got += 1;
        if let Some((delivery, body)) = delivery {
            w.answered += 1;
            w.delivery = w.delivery + delivery;
            w.bodies.extend(body);
        }
        if w.complete()
            && let Some(done) = w.done.take()
        {
            let _ = done.send(());
        }
    }

    /// Our own copy of a numbered push, delivered here to `delivery` v1 tabs.
    pub(super) fn answered_here(&self, req: u64, delivery: Delivery) {
        let mut waiting = self.lock_waiting();
        let Some(w) = waiting.get_mut(&req) else {
            return;
        };
        w.got += 1;
        w.delivery = w.delivery + delivery;
        if w.complete()
            && let Some(done) = w.done.take()
        {
            let _ = done.send(());
        }
    }

    pub(super) fn lock_waiting(&self) -> MutexGuard<'_, HashMap<u64, Waiting>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}
