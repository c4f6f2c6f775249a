//! Where events come from on one node: a connection's life ([`ConnEvents`]: `connect`,
//! `bind`, `message`, `close`, numbered per connection), and a uid's presence with its
//! debounce ([`Debounce`]: `online`/`offline`, told by the registry through [`UidSink`]).
//!
//! Everything here costs an atomic load and a branch when nobody listens
//! ([`Hub::wants`]): an event nobody gets is not built.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Hub, Kind, What};
use crate::metrics::Metric;
use crate::wire::{CloseNotice, Uid};

/// Told when a uid gets its first connection on this node or loses its last one. The
/// registry calls it under the uid's shard lock, so it must take only locks of its own
/// and never wait. A single node debounces here ([`Debounce`]); cluster mode settles
/// presence across the nodes in Redis (`cluster_presence.rs`).
pub trait UidSink: Send + Sync + std::fmt::Debug {
    /// `uid` got its first connection here.
    fn came(&self, uid: &Uid);
    /// `uid` lost its last connection here.
    fn left(&self, uid: &Uid);
}

/// Told a connection's number when it opens, binds and closes: cluster mode keeps the
/// node's connections in Redis so that, should the node die, another tells their
/// `close` (`cluster_presence.rs`). Called from the connection's task; must not wait.
pub trait ConnSink: Send + Sync + std::fmt::Debug {
    /// Connection `n` of this node was accepted (named `client_id` by the GatewayClient
    /// door, for a greeted page).
    fn opened(&self, n: u64, client_id: Option<&Arc<str>>);
    /// It bound `uid`.
    fn bound(&self, n: u64, uid: &Uid);
    /// It ended.
    fn closed(&self, n: u64);
}

/// Bounds on what a browser may send as `message` events (docs/events.md, "Messages from
/// browsers"): applied while someone listens for `message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// `--events-message-bytes`: the largest frame taken as an event.
    pub max_bytes: usize,
    /// `--events-message-rate`: frames per second per connection, with a burst of as many.
    pub per_second: u32,
}

/// 1009: a frame above `--events-message-bytes` while messages are events.
pub fn message_too_big(max: usize) -> CloseNotice {
    CloseNotice {
        code: 1009,
        reason: Cow::Owned(format!("message too big for an event (max {max} bytes)")),
    }
}

/// 1008: frames faster than `--events-message-rate` while messages are events.
pub fn message_rate(per_second: u32) -> CloseNotice {
    CloseNotice {
        code: 1008,
        reason: Cow::Owned(format!("messages too fast (max {per_second}/s)")),
    }
}

/// One connection's events, numbered 1, 2, 3... from `connect`. The number counts every
/// event of the connection whether or not someone listened to it, so the same event has
/// the same `seq` for every listener. Every browser connection's task holds one (32
/// bytes: the uid is the binding's, passed in).
#[derive(Debug)]
pub struct ConnEvents {
    /// The connection's number on this node (`conn` is `NODE-N`).
    n: u64,
    seq: u32,
    /// Message tokens left, and when they were last topped up (a token bucket).
    tokens: f32,
    topped: Option<Instant>,
}

impl ConnEvents {
    /// A connection was accepted (upgraded): `connect`.
    pub fn open(hub: &Hub) -> ConnEvents {
        ConnEvents::open_as(hub, None)
    }

    /// [`ConnEvents::open`] for a connection the GatewayClient door named `client_id` (a
    /// greeted page); its events carry it. The connection's task keeps the id and passes
    /// it to [`ConnEvents::bound_as`] and [`ConnEvents::closed_as`] (most connections have
    /// none, so it is not kept here).
    pub fn open_as(hub: &Hub, client_id: Option<&Arc<str>>) -> ConnEvents {
        let mut c = ConnEvents {
            n: hub.next_conn(),
            seq: 0,
            tokens: 0.0,
            topped: None,
        };
        if let Some(sink) = hub.conn_sink() {
            sink.opened(c.n, client_id);
        }
        c.emit(hub, Kind::Connect, |conn| What::Connect {
            conn,
            client_id: client_id.cloned(),
        });
        c
    }

    /// It bound `uid`: `bind`.
    pub fn bound(&mut self, hub: &Hub, uid: &Uid) {
        self.bound_as(hub, uid, None);
    }

    /// [`ConnEvents::bound`] of a connection named `client_id`.
    pub fn bound_as(&mut self, hub: &Hub, uid: &Uid, client_id: Option<&Arc<str>>) {
        if let Some(sink) = hub.conn_sink() {
            sink.bound(self.n, uid);
        }
        self.emit(hub, Kind::Bind, |conn| What::Bind {
            conn,
            uid: uid.clone(),
            client_id: client_id.cloned(),
        });
    }

    /// A text frame from the browser bound to `uid`: a `message` event if someone wants
    /// them, within the size and rate bounds; over them the connection is refused with
    /// the returned notice. Nobody listening: ignored, as it always was.
    pub fn message(&mut self, hub: &Hub, uid: &Uid, text: &str) -> Result<(), CloseNotice> {
        if !hub.wants(Kind::Message) {
            return Ok(());
        }
        let limits = hub.message_limits;
        if text.len() > limits.max_bytes {
            hub.metrics().incr(Metric::EventsMessagesRefused);
            return Err(message_too_big(limits.max_bytes));
        }
        if !self.take_token(limits.per_second, Instant::now()) {
            hub.metrics().incr(Metric::EventsMessagesRefused);
            return Err(message_rate(limits.per_second));
        }
        hub.metrics().incr(Metric::EventsMessages);
        let data: Arc<str> = text.into();
        self.emit(hub, Kind::Message, |conn| What::Message {
            conn,
            uid: uid.clone(),
            data,
        });
        Ok(())
    }

    /// A token bucket of `rate` per second holding `rate`: a burst of `rate` frames, then
    /// `rate` a second.
    fn take_token(&mut self, rate: u32, now: Instant) -> bool {
        let rate = rate.max(1) as f32;
        let elapsed = self.topped.map_or(rate, |t| {
            now.saturating_duration_since(t).as_secs_f32() * rate
        });
        self.tokens = (self.tokens + elapsed).min(rate);
        self.topped = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// It ended with `code` (and `reason`), bound to `uid` or not: `close`.
    pub fn closed(self, hub: &Hub, uid: Option<Uid>, code: u16, reason: Option<&str>) {
        self.closed_as(hub, uid, code, reason, None);
    }

    /// [`ConnEvents::closed`] of a connection named `client_id`.
    pub fn closed_as(
        mut self,
        hub: &Hub,
        uid: Option<Uid>,
        code: u16,
        reason: Option<&str>,
        client_id: Option<&Arc<str>>,
    ) {
        if let Some(sink) = hub.conn_sink() {
            sink.closed(self.n);
        }
        self.emit(hub, Kind::Close, |conn| What::Close {
            conn,
            uid,
            code,
            reason: reason.filter(|r| !r.is_empty()).map(Arc::from),
            client_id: client_id.cloned(),
        });
    }

    fn emit(&mut self, hub: &Hub, kind: Kind, what: impl FnOnce(Arc<str>) -> What) {
        self.seq += 1;
        if hub.wants(kind) {
            let conn: Arc<str> = format!("{}-{}", hub.node(), self.n).into();
            hub.publish(what(conn), u64::from(self.seq));
        }
    }
}

/// A single node's `online`/`offline`: a uid that loses its last connection is told
/// offline only once `--events-debounce-ms` passed without one coming back; one that comes
/// back within it was never offline (a tab reload emits neither).
#[derive(Debug)]
pub struct Debounce {
    hub: Arc<Hub>,
    delay: Duration,
    leaving: Mutex<Leaving>,
    wake: Notify,
    /// Cancelled by [`Debounce::flush`]: the node is going.
    done: tokio_util::sync::CancellationToken,
}

#[derive(Debug, Default)]
struct Leaving {
    /// Uids whose last connection went, with when they are offline.
    due: HashMap<Uid, Instant>,
    /// The same in time order; entries whose uid came back (or left again) are stale.
    order: VecDeque<(Instant, Uid)>,
}

impl Debounce {
    /// Presence events of `hub`'s node, debounced by `delay`; [`Debounce::run`] tells the
    /// offlines as they fall due.
    pub fn new(hub: Arc<Hub>, delay: Duration) -> Arc<Debounce> {
        Arc::new(Debounce {
            hub,
            delay,
            leaving: Mutex::default(),
            wake: Notify::new(),
            done: tokio_util::sync::CancellationToken::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Leaving> {
        self.leaving.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn listened(&self) -> bool {
        self.hub.wants(Kind::Online) || self.hub.wants(Kind::Offline)
    }

    /// Tells the offlines as they fall due, until [`Debounce::flush`].
    pub async fn run(self: Arc<Self>) {
        loop {
            let next = self.settle(Instant::now());
            let wait = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = wait => {}
                () = self.wake.notified() => {}
                () = self.done.cancelled() => break,
            }
        }
    }

    /// At shutdown, once every browser is closed: the offlines still waiting are told at
    /// once (nobody can come back to this node), before the receivers drain.
    pub fn flush(&self) {
        self.done.cancel();
        self.settle(Instant::now() + self.delay + Duration::from_secs(1));
    }

    /// Tells every offline due by `now`; returns when the next one is. Published under
    /// the lock [`UidSink::came`] takes, so a uid's `offline` and an `online` racing it
    /// are numbered (and queued) in the order they were decided.
    fn settle(&self, now: Instant) -> Option<Instant> {
        let mut l = self.lock();
        while let Some((at, _)) = l.order.front() {
            if *at > now {
                break;
            }
            let Some((at, uid)) = l.order.pop_front() else {
                break;
            };
            if l.due.get(&uid) == Some(&at) {
                l.due.remove(&uid);
                let seq = self.hub.next_seq();
                self.hub.publish(What::Offline { uid }, seq);
            }
        }
        l.order.front().map(|(at, _)| *at)
    }
}

impl UidSink for Debounce {
    fn came(&self, uid: &Uid) {
        if !self.listened() {
            return;
        }
        let mut l = self.lock();
        // Back within the debounce: it never went.
        if l.due.remove(uid).is_some() {
            return;
        }
        let seq = self.hub.next_seq();
        self.hub.publish(What::Online { uid: uid.clone() }, seq);
        drop(l);
    }

    fn left(&self, uid: &Uid) {
        if !self.listened() {
            return;
        }
        let at = Instant::now() + self.delay;
        let first = {
            let mut l = self.lock();
            l.due.insert(uid.clone(), at);
            l.order.push_back((at, uid.clone()));
            l.order.len() == 1
        };
        if first {
            self.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let mut c = ConnEvents {
            n: 1,
            seq: 0,
            tokens: 0.0,
            topped: None,
        };
        let t0 = Instant::now();
        assert!((0..5).all(|_| c.take_token(5, t0)), "a burst of 5");
        assert!(!c.take_token(5, t0), "then none");
        assert!(
            c.take_token(5, t0 + Duration::from_millis(200)),
            "one per 200 ms"
        );
        assert!(!c.take_token(5, t0 + Duration::from_millis(210)));
        // Idle long: the bucket holds no more than the burst.
        let later = t0 + Duration::from_secs(60);
        assert!((0..5).all(|_| c.take_token(5, later)));
        assert!(!c.take_token(5, later));
    }
}
