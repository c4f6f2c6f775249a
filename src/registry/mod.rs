//! The one shared map from uid to live connections, used by both listeners.
//!
//! # Locking
//! The map is split into shards, each behind a std `Mutex`. Every operation touches one
//! shard (broadcast walks them one at a time), holds it for a few pointer moves and a
//! non-blocking [`Outbox::offer`] per recipient, and never across an `.await`; so a std
//! mutex is cheaper than an async one and a push to one uid never waits on another
//! connection's socket. Lock order is always shard, then outbox.
//!
//! # Growth
//! Entries are per uid rather than per socket so that later per-uid state (groups, the
//! offline grace period, a Redis backplane's subscription) hangs off the same entry.
//!
//! # History (protocol v1)
//! A uid's [`UidLog`] lives in the uid's shard beside its entry, so numbering a push,
//! keeping it and offering it to every tab happen under one lock, and so do a v1 bind's
//! replay and its registration for live delivery (see `history.rs`).

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use std::time::{Duration, Instant};

use smallvec::SmallVec;
use tracing::{debug, warn};

use tokio::sync::oneshot;

use crate::events::{Hub, UidSink};
use crate::fanout::Helpers;
use crate::groups::{GroupError, GroupLimits, Groups};
use crate::history::{HistoryLimits, HistoryShared, Kept, Logs};
use crate::logsafe::escaped;
use crate::metrics::{Metric, Metrics};
use crate::outbox::{Offer, Outbox, QueueLimits};
use crate::wire::envelope::{Mode, Position, Seq, Status, status_frame};
use crate::wire::{CloseNotice, Payload, Uid};

mod broadcast;
mod delivery;
mod hooks;

pub use delivery::{Delivery, Fanout, Pushed};
pub use hooks::{HistoryRoom, Presence, RemoteHistory};

/// Enough shards that two cores rarely meet on one lock; each is a small `HashMap`.
const SHARDS: usize = 64;

/// Identifies one connection within this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(u64);

/// The bit a [`ConnId`] carries when the connection's queue was made by someone else
/// ([`Registry::bind_shared`], a greeted page): [`Registry::broadcast_own`] leaves it
/// out, since its owner reaches it already. A bit of the id, not a field of every member.
const SHARED_QUEUE: u64 = 1 << 63;

impl ConnId {
    fn shared_queue(self) -> bool {
        self.0 & SHARED_QUEUE != 0
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// How an offer reaches an idle connection (see `outbox.rs`, "Writing through").
#[derive(Debug, Clone, Copy)]
enum Via<'a> {
    /// Queued for the connection's task: a push to one uid, so a pipelined stream to it
    /// is written in batches.
    Queue,
    /// Written through by the fan-out itself; counts the frames written so, whose metrics
    /// are recorded once per fan-out part.
    Through(&'a Cell<usize>),
}

/// Fan-outs to at least this many connections are cut into as many parts as the runtime
/// has workers (one per core by default), run on `fanout.rs`'s helper threads: written
/// through, the sends are the fan-out's own work.
const PARALLEL_FANOUT: usize = 2048;

/// Where a connection's messages come from.
#[derive(Debug)]
enum Feed {
    /// This process numbers them (every seed connection; v1 ones on a single node).
    Local,
    /// Cluster mode, v1, its replay not read yet: live messages wait here (epoch and
    /// sequence, or `None` for an unnumbered one), bounded by the queue depth.
    Resuming(Vec<(Option<Position>, Payload)>),
    /// Cluster mode, v1: messages of `epoch` above `last` are written, in order.
    Live {
        /// The history the client was told about.
        epoch: u64,
        /// The last sequence written (or replayed, or the status frame's base).
        last: Seq,
    },
}

/// 1012: a v1 connection in cluster mode saw its uid's history change under it (another
/// epoch, or a sequence missing from the live stream): it reconnects with `since` and
/// resumes from the shared history.
const RESYNC: CloseNotice = CloseNotice {
    code: 1012,
    reason: std::borrow::Cow::Borrowed("history resync: reconnect with since"),
};

/// Cheap-clone handle to the shared registry.
#[derive(Debug, Clone)]
pub struct Registry {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    next_id: AtomicU64,
    limits: QueueLimits,
    metrics: Arc<Metrics>,
    /// One lock for all groups; always taken after a shard lock, never before.
    groups: Mutex<Groups>,
    /// Set once in cluster mode.
    presence: std::sync::OnceLock<Arc<dyn Presence>>,
    /// `None` with history off (`--history-messages 0`).
    history: Option<HistoryShared>,
    /// Acks in a row that acknowledge nothing new a v1 connection may send.
    max_stale_acks: usize,
    /// Set once in cluster mode with history on: histories live in Redis.
    remote: std::sync::OnceLock<Arc<dyn RemoteHistory>>,
    /// Cluster mode: Redis is up, so v1 connections get every message numbered through
    /// it (while it is down they get local pushes unnumbered, as `b` frames).
    remote_up: std::sync::atomic::AtomicBool,
    /// Parts a large fan-out is cut into: the runtime's workers (1 outside one).
    fanout_threads: usize,
    /// The threads that take all parts but the first.
    helpers: std::sync::OnceLock<Helpers>,
    /// Told a uid's first and last connection here: `online`/`offline` events.
    uid_sink: std::sync::OnceLock<Arc<dyn UidSink>>,
}

#[derive(Debug, Default)]
struct Shard {
    uids: HashMap<Uid, UidEntry>,
    connections: usize,
    /// Histories of this shard's uids (online ones and those within their keep time).
    logs: Logs,
}

impl Shard {
    /// Connection `conn` of `uid`, if it is still bound.
    fn member(&mut self, uid: &str, conn: ConnId) -> Option<&mut Member> {
        self.uids
            .get_mut(uid)
            .and_then(|e| e.conns.iter_mut().find(|m| m.id == conn))
    }
}

/// Everything known about one online uid.
#[derive(Debug, Default)]
struct UidEntry {
    /// Inline for the usual one tab: no heap block per uid, and a fan-out reads the
    /// member from the map's own bucket instead of following a pointer per recipient.
    conns: SmallVec<[Member; 1]>,
}

#[derive(Debug)]
struct Member {
    id: ConnId,
    outbox: Arc<Outbox>,
    feed: Feed,
}

/// A connection's place in the registry; dropping it unregisters the connection, on every
/// exit path of the WebSocket task (close, error, panic, shutdown).
#[must_use = "dropping the binding unregisters the connection"]
#[derive(Debug)]
pub struct Binding {
    registry: Registry,
    uid: Uid,
    id: ConnId,
    outbox: Arc<Outbox>,
    /// Protocol v1: frames carry their sequence; acks count.
    enveloped: bool,
    /// Protocol v1: the highest sequence this connection acknowledged. Only an ack above
    /// it is recorded (and, in cluster mode, sent to Redis).
    acked: AtomicU64,
    /// Acks in a row that acknowledged nothing new (see [`Binding::text`]).
    stale_acks: AtomicUsize,
}

impl Binding {
    /// True for a protocol v1 connection (its frames carry their sequence).
    pub fn enveloped(&self) -> bool {
        self.enveloped
    }

    /// Books a batch the writer has just sent, and empties it: the frame counters, and
    /// (protocol v1) how far acks are believed.
    pub fn written(&self, batch: &mut Vec<Payload>) {
        let frames = batch.iter().map(|m| (m.len(), m.received()));
        self.registry.shared.metrics.frames_written(frames);
        if self.enveloped {
            self.outbox.note_written(batch);
        }
        batch.clear();
    }

    /// A text frame from the browser after its bind: an ack (`a SEQ`) from a v1
    /// connection counts, up to what it was sent; anything else is ignored. Returns true
    /// for an ack.
    ///
    /// An ack is recorded only when it raises what the connection acknowledged: so what
    /// acks cost (a lock, a waiter woken; in cluster mode a script in Redis) is bounded by
    /// the messages the connection was sent, however many ack frames it writes. One that
    /// raises nothing costs a comparison, and `--max-stale-acks` of them in a row close
    /// the connection (1008 `ack flood`): a client acks what it processed, so a run of
    /// them is a bug or a flood, never a protocol need.
    pub fn text(&self, text: &str) -> bool {
        let Some(seq) = crate::wire::envelope::parse_ack(text).filter(|_| self.enveloped) else {
            return false;
        };
        let seq = seq.min(self.outbox.written());
        let metrics = &self.registry.shared.metrics;
        if seq > 0 {
            metrics.incr(Metric::Acks);
        }
        if seq <= self.acked.load(Relaxed) {
            let stale = self.stale_acks.fetch_add(1, Relaxed) + 1;
            if stale > self.registry.shared.max_stale_acks
                && self.outbox.close(CloseNotice::ACK_FLOOD)
            {
                metrics.incr(Metric::AckFloods);
                warn!(uid = %escaped(&self.uid), conn = self.id.0, stale, "closing a tab: ack flood");
            }
            return true;
        }
        self.acked.store(seq, Relaxed);
        self.stale_acks.store(0, Relaxed);
        self.registry.ack(&self.uid, self.id, seq);
        true
    }

    /// The queue this connection's writer drains.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The uid this connection bound.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The uid this connection bound, shared.
    pub fn uid_shared(&self) -> Uid {
        self.uid.clone()
    }

    /// The uid this connection bound, as the registry keeps it.
    pub fn uid_ref(&self) -> &Uid {
        &self.uid
    }
}

impl Drop for Binding {
    fn drop(&mut self) {
        // Whatever way the session ended, no offer writes to its socket from here on.
        self.outbox.detach();
        self.registry.unbind(&self.uid, self.id);
    }
}

impl Registry {
    /// An empty registry whose connections queue up to `limits`, keeping `history` for
    /// uids that opt in.
    pub fn new(
        limits: QueueLimits,
        group_limits: GroupLimits,
        history: HistoryLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::default()).collect();
        Registry {
            shared: Arc::new(Shared {
                shards,
                hasher: RandomState::new(),
                next_id: AtomicU64::new(1),
                helpers: std::sync::OnceLock::new(),
                fanout_threads: tokio::runtime::Handle::try_current()
                    .map_or(1, |rt| rt.metrics().num_workers())
                    .max(1),
                limits,
                metrics,
                groups: Mutex::new(Groups::new(group_limits)),
                presence: std::sync::OnceLock::new(),
                history: (history.messages > 0).then(|| HistoryShared::new(history)),
                max_stale_acks: history.stale_acks,
                remote: std::sync::OnceLock::new(),
                remote_up: std::sync::atomic::AtomicBool::new(false),
                uid_sink: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Installs the presence hook (once; later calls are ignored).
    pub fn set_presence(&self, hook: Arc<dyn Presence>) {
        let _ = self.shared.presence.set(hook);
    }

    /// Events: groups made and emptied go to `hub`, uids' first and last connections to
    /// `uids` (once; later calls are ignored).
    pub fn set_events(&self, hub: Arc<Hub>, uids: Arc<dyn UidSink>) {
        if self.shared.uid_sink.set(uids).is_ok() {
            self.groups().set_events(hub);
        }
    }

    /// The daemon's counters (cluster mode counts its Redis link's trouble there).
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Installs the remote history (cluster mode; once). From then on a v1 connection's
    /// status frame waits for it ([`RemoteHistory::resume`]: once the cluster can route
    /// to the tab, so a push sent the moment the browser is told it is bound reaches it
    /// through any node); with history on, v1 connections are fed through it and no
    /// local history is kept. With history off they are fed here once resumed.
    pub fn set_remote_history(&self, remote: Arc<dyn RemoteHistory>) {
        let _ = self.shared.remote.set(remote);
    }

    /// Cluster mode with history on: Redis numbers v1 messages (else this node feeds
    /// them, unnumbered, as a single node without history does).
    fn remote_numbers(&self) -> bool {
        self.shared.history.is_some() && self.shared.remote.get().is_some()
    }

    /// Cluster mode: whether Redis numbers v1 messages now.
    pub fn set_remote_up(&self, up: bool) {
        self.shared.remote_up.store(up, Relaxed);
    }

    fn presence_changed(&self, uid: &Uid) {
        if let Some(hook) = self.shared.presence.get() {
            hook.changed(uid);
        }
    }

    /// Registers a new connection for `uid` the seed's way; other connections of the
    /// same uid stay.
    pub fn bind(&self, uid: &str) -> Binding {
        self.bind_as(uid, Mode::Seed)
    }

    /// Registers a new connection for `uid` speaking `mode`. Under the shard lock, so no
    /// push falls between them: its first frames are queued (a v1 connection's status
    /// frame and replay; the offline queue for either kind), then it joins live delivery.
    pub fn bind_as(&self, uid: &str, mode: Mode) -> Binding {
        self.bind_outbox(uid, mode, Arc::new(Outbox::new(self.shared.limits)), 0)
    }

    /// Registers a connection whose queue already exists (a greeted connection a backend
    /// binds, `addressed.rs`) for `uid` speaking `mode`: it may be bound, unbound and bound
    /// again to another uid while its writer drains the same queue. A v1 connection gets
    /// its status frame and replay queued behind what the queue holds, as at any bind.
    pub fn bind_shared(&self, uid: &str, outbox: Arc<Outbox>, mode: Mode) -> Binding {
        self.bind_outbox(uid, mode, outbox, SHARED_QUEUE)
    }

    fn bind_outbox(&self, uid: &str, mode: Mode, outbox: Arc<Outbox>, bits: u64) -> Binding {
        let id = ConnId(self.shared.next_id.fetch_add(1, Relaxed) | bits);
        let remote = match mode {
            Mode::V1 { since } => self.shared.remote.get().map(|r| (r, since)),
            Mode::Seed => None,
        };
        let seed_remote = match mode {
            Mode::Seed if self.shared.history.is_some() => self.shared.remote.get(),
            _ => None,
        };
        let member = Member {
            id,
            outbox: outbox.clone(),
            feed: match remote {
                Some(_) => Feed::Resuming(Vec::new()),
                None => Feed::Local,
            },
        };
        let mut guard = self.shard(uid);
        let shard = &mut *guard;
        let uid = match shard.uids.get_key_value(uid) {
            Some((key, _)) => key.clone(),
            None => Uid::from(uid),
        };
        let binding = Binding {
            registry: self.clone(),
            uid: uid.clone(),
            id,
            outbox: outbox.clone(),
            enveloped: matches!(mode, Mode::V1 { .. }),
            acked: AtomicU64::new(0),
            stale_acks: AtomicUsize::new(0),
        };
        if remote.is_none() && seed_remote.is_none() {
            match self.first_frames(shard, &uid, mode) {
                Ok(frames) => outbox.preload(frames),
                Err(refused) => {
                    // Never registered: the connection closes with the reason at once.
                    drop(guard);
                    outbox.close(refused);
                    return binding;
                }
            }
        }
        if let Some((remote, _)) = remote
            && self.remote_numbers()
        {
            match remote.admit(&uid) {
                HistoryRoom::Counted => {}
                HistoryRoom::MadeRoom => self.shared.metrics.incr(Metric::HistoryEvicted),
                HistoryRoom::Full => {
                    drop(guard);
                    debug!(uid = %escaped(&uid), "v1 bind refused: every history in use");
                    self.shared.metrics.incr(Metric::HistoryFull);
                    outbox.close(CloseNotice::HISTORY_FULL);
                    return binding;
                }
            }
        }
        let mut shard = guard;
        let entry = shard.uids.entry(uid.clone()).or_default();
        entry.conns.push(member);
        if entry.conns.len() == 1 {
            // Under the shard lock, so online/offline transitions reach groups in order.
            self.groups().came_online(&uid);
            self.presence_changed(&uid);
            if let Some(sink) = self.shared.uid_sink.get() {
                sink.came(&uid);
            }
        }
        shard.connections += 1;
        drop(shard);
        if let Some((remote, since)) = remote {
            remote.resume(&uid, id, since);
        }
        if let Some(remote) = seed_remote {
            remote.seed_bound(&uid, id);
        }
        self.shared.metrics.incr(Metric::Binds);
        binding
    }

    /// What a binding connection gets before anything live: a v1 connection its status
    /// frame and replay (creating the uid's history), either kind the offline queue. A
    /// v1 connection whose history cannot be made (`--history-max-uids`) is refused.
    fn first_frames(
        &self,
        shard: &mut Shard,
        uid: &Uid,
        mode: Mode,
    ) -> Result<Vec<Payload>, CloseNotice> {
        let now = Instant::now();
        let (since, history) = match (mode, &self.shared.history) {
            (Mode::Seed, None) => return Ok(Vec::new()),
            (Mode::Seed, Some(_)) => {
                let Some(log) = shard.logs.get_mut(uid) else {
                    return Ok(Vec::new());
                };
                return Ok(log.take_queued(now));
            }
            (Mode::V1 { since }, None) => {
                // History off: no numbering; the status frame all the same.
                let status = if since.is_some() {
                    Status::NotRecovered
                } else {
                    Status::New
                };
                let none = Position { epoch: 0, seq: 0 };
                return Ok(vec![status_outgoing(status, none)]);
            }
            (Mode::V1 { since }, Some(history)) => (since, history),
        };
        if !self.history_room(shard, uid, history, now) {
            debug!(uid = %escaped(uid), "v1 bind refused: every history in use");
            return Err(CloseNotice::HISTORY_FULL);
        }
        let attached = shard.logs.open(uid, history).attach(since, now, history);
        let mut frames = Vec::with_capacity(1 + attached.replay.len());
        frames.push(status_outgoing(attached.status, attached.base));
        frames.extend(attached.replay);
        Ok(frames)
    }

    /// Whether `uid` (of the locked `shard`) has a history or may get one: below
    /// `--history-max-uids`, or once one is evicted to make room (`history.rs`, "Bounded
    /// in number"): a spare one (offline, nothing kept) from this shard or any other
    /// whose lock is free, else any offline one the same way. Other shards are only
    /// tried (`try_lock`): this one's lock is held, and waiting for another could
    /// deadlock against a thread doing the same the other way round.
    fn history_room(
        &self,
        shard: &mut Shard,
        uid: &str,
        history: &HistoryShared,
        now: Instant,
    ) -> bool {
        if shard.logs.contains(uid) || history.has_room() {
            return true;
        }
        for spare in [true, false] {
            let Shard { uids, logs, .. } = &mut *shard;
            if logs.evict(now, history, spare, |u| uids.contains_key(u)) {
                self.shared.metrics.incr(Metric::HistoryEvicted);
                return true;
            }
            for other in self.shared.shards.iter() {
                let mut guard = match other.try_lock() {
                    Ok(guard) => guard,
                    Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                    // This shard (held here) or one busy now.
                    Err(std::sync::TryLockError::WouldBlock) => continue,
                };
                let Shard { uids, logs, .. } = &mut *guard;
                if logs.evict(now, history, spare, |u| uids.contains_key(u)) {
                    self.shared.metrics.incr(Metric::HistoryEvicted);
                    return true;
                }
            }
        }
        self.shared.metrics.incr(Metric::HistoryFull);
        false
    }

    fn unbind(&self, uid: &str, id: ConnId) {
        let mut guard = self.shard(uid);
        let shard = &mut *guard;
        let Some(entry) = shard.uids.get_mut(uid) else {
            return;
        };
        let Some(pos) = entry.conns.iter().position(|m| m.id == id) else {
            return;
        };
        entry.conns.swap_remove(pos);
        let last = entry.conns.is_empty();
        if let Some(log) = shard.logs.get_mut(uid) {
            log.forget_conn(id.0);
        }
        if last && let Some((key, _)) = shard.uids.remove_entry(uid) {
            if let Some(remote) = self.shared.remote.get() {
                remote.left(&key);
            }
            shard.logs.went_offline(&key, Instant::now());
            self.groups().went_offline(&key, Instant::now());
            self.presence_changed(&key);
            if let Some(sink) = self.shared.uid_sink.get() {
                sink.left(&key);
            }
        }
        shard.connections -= 1;
    }

    /// Offers `msg` to every connection of `uid`. The payload is shared, not copied.
    pub fn push(&self, uid: &str, msg: &Payload) -> Delivery {
        self.push_kept(uid, msg, None).delivery
    }

    /// Offers `msg` to every connection of `uid`, numbered and kept in its history if it
    /// has one. With `queue_for`, a uid without connections gets a history if it has
    /// none, and the message waits in its offline queue for that long.
    pub fn push_kept(&self, uid: &str, msg: &Payload, queue_for: Option<Duration>) -> Pushed {
        self.push_into(uid, msg, queue_for, Via::Queue)
    }

    fn push_into(&self, uid: &str, msg: &Payload, queue_for: Option<Duration>, via: Via) -> Pushed {
        let mut out = Pushed::default();
        let mut guard = self.shard(uid);
        let kept;
        let mut msg = msg;
        // A shard whose uids never opted in has no logs: its pushes pay nothing more.
        if let Some(history) = &self.shared.history
            && (queue_for.is_some() || !guard.logs.is_empty())
        {
            let offline = guard.uids.get(uid).is_none_or(|e| e.conns.is_empty());
            let now = Instant::now();
            // A history for the offline queue, if there is room for one (else the push
            // is not queued: `offline`).
            let queue_here = queue_for.is_some()
                && offline
                && !guard.logs.contains(uid)
                && self.history_room(&mut guard, uid, history, now);
            let logs = &mut guard.logs;
            let log = match logs.get_mut(uid) {
                Some(log) => Some(log),
                None if queue_here => {
                    let uid = Uid::from(uid);
                    logs.open(&uid, history);
                    logs.went_offline(&uid, now);
                    logs.get_mut(&uid)
                }
                None => None,
            };
            if let Some(log) = log {
                // One numbered copy per push (not per tab), which history keeps.
                let until = queue_for.filter(|_| offline).map(|t| Instant::now() + t);
                let how;
                (kept, how) = log.append(msg, until, history);
                msg = &kept;
                out.at = Some(log.head());
                out.queued = until.is_some() && how == Kept::Yes;
                if how == Kept::No {
                    self.shared.metrics.incr(Metric::HistoryRefused);
                }
            }
        }
        if let Some(entry) = guard.uids.get_mut(uid) {
            let remote_up = self.shared.remote_up.load(Relaxed) && self.remote_numbers();
            for member in &mut entry.conns {
                match member.feed {
                    Feed::Local => self.offer(uid, member, msg, &mut out.delivery, via),
                    // Cluster mode: Redis numbers it and the holders' copy (ours
                    // included) reaches this tab; while Redis is down, it goes unnumbered.
                    _ if remote_up => {}
                    _ => self.feed_v1(uid, member, None, msg, &mut out.delivery, via),
                }
            }
        }
        out
    }

    /// Cluster mode: a message Redis published to `uid` (numbered at `at`, or unnumbered
    /// for a uid without history) reaches this node's tabs of it: every v1 tab, and the
    /// seed tabs too if `seed_too` (the origin node delivered to its own at once).
    pub fn deliver_numbered(
        &self,
        uid: &str,
        at: Option<Position>,
        msg: &Payload,
        seed_too: bool,
    ) -> Delivery {
        let mut delivery = Delivery::default();
        let mut shard = self.shard(uid);
        if let Some(entry) = shard.uids.get_mut(uid) {
            for member in &mut entry.conns {
                match member.feed {
                    // `msg` carries its number (the caller's `into_numbered`).
                    Feed::Local if seed_too => {
                        self.offer(uid, member, msg, &mut delivery, Via::Queue);
                    }
                    Feed::Local => {}
                    _ => self.feed_v1(uid, member, at, msg, &mut delivery, Via::Queue),
                }
            }
        }
        delivery
    }

    /// One message to a cluster-fed v1 tab: held while it resumes; written once, in
    /// order, when live. A message of another epoch, or one past a gap, closes the tab
    /// ([`RESYNC`]) so it resumes from the shared history: never a silent gap.
    fn feed_v1(
        &self,
        uid: &str,
        member: &mut Member,
        at: Option<Position>,
        msg: &Payload,
        delivery: &mut Delivery,
        via: Via,
    ) {
        match &mut member.feed {
            Feed::Resuming(held) if held.len() < self.shared.limits.depth => {
                held.push((at, msg.clone()));
                delivery.queued += 1;
            }
            Feed::Resuming(_) => {
                member.feed = Feed::Live { epoch: 0, last: 0 };
                member.outbox.close(CloseNotice::QUEUE_FULL);
                delivery.refused += 1;
            }
            Feed::Live { epoch, last } => match at {
                None => self.offer(uid, member, msg, delivery, via),
                Some(p) if p.epoch == *epoch && p.seq <= *last => {
                    // Already replayed (read from history after it was published).
                    delivery.queued += 1;
                }
                Some(p) if p.epoch == *epoch && p.seq == *last + 1 => {
                    *last = p.seq;
                    self.offer(uid, member, msg, delivery, via);
                }
                Some(_) => {
                    member.outbox.close(RESYNC);
                    delivery.refused += 1;
                }
            },
            Feed::Local => self.offer(uid, member, msg, delivery, via),
        }
    }

    /// Cluster mode: the history of `uid` was read for tab `conn` ([`RemoteHistory`]):
    /// its status frame and replay go first, then what arrived meanwhile (above what was
    /// replayed), then live messages.
    pub fn resumed(
        &self,
        uid: &str,
        conn: ConnId,
        status: Status,
        base: Position,
        replay: Vec<(Seq, Payload)>,
        head: Seq,
    ) {
        let mut shard = self.shard(uid);
        let Some(member) = shard.member(uid, conn) else {
            return; // Gone meanwhile.
        };
        let Feed::Resuming(held) = std::mem::replace(&mut member.feed, Feed::Local) else {
            return;
        };
        let last = replay
            .last()
            .map_or(base.seq, |(seq, _)| *seq)
            .max(base.seq)
            .max(head);
        let mut frames = Vec::with_capacity(1 + replay.len());
        frames.push(status_outgoing(status, base));
        // (Each replayed payload carries its number: see `cluster.rs`.)
        frames.extend(replay.into_iter().map(|(_, msg)| msg));
        member.outbox.preload(frames);
        member.feed = if self.remote_numbers() {
            Feed::Live {
                epoch: base.epoch,
                last,
            }
        } else {
            // History off: fed here, unnumbered, like a seed tab.
            Feed::Local
        };
        let mut ignored = Delivery::default();
        for (at, msg) in held {
            self.feed_v1(uid, member, at, &msg, &mut ignored, Via::Queue);
        }
    }

    /// Cluster mode: closes every v1 tab fed from Redis with [`RESYNC`], because Redis
    /// lost the histories they follow (restarted without persistence): each reconnects
    /// with `since` and is told `not_recovered` on a history made afresh, instead of
    /// getting unnumbered messages from then on. Returns how many were closed.
    pub fn resync_remote_fed(&self) -> usize {
        let mut closed = 0;
        for shard in self.shared.shards.iter() {
            let shard = lock(shard);
            for entry in shard.uids.values() {
                closed += entry
                    .conns
                    .iter()
                    .filter(|m| !matches!(m.feed, Feed::Local) && m.outbox.close(RESYNC))
                    .count();
            }
        }
        closed
    }

    /// Cluster mode: a seed tab's offline queue, taken from Redis after it bound.
    pub fn deliver_to(&self, uid: &str, conn: ConnId, msgs: Vec<Payload>) {
        let mut shard = self.shard(uid);
        let Some(member) = shard.member(uid, conn) else {
            return; // Gone meanwhile.
        };
        let mut ignored = Delivery::default();
        for msg in &msgs {
            self.offer(uid, member, msg, &mut ignored, Via::Queue);
        }
    }

    /// Tab `conn` of `uid` acknowledged every message up to `seq`.
    fn ack(&self, uid: &Uid, conn: ConnId, seq: Seq) {
        let mut shard = self.shard(uid);
        if let Some(log) = shard.logs.get_mut(uid) {
            log.ack(conn.0, seq);
        }
        // Cluster mode: the tab's history is in Redis, and the push it acks may have been
        // accepted by another node.
        let epoch = shard.member(uid, conn).and_then(|m| match m.feed {
            Feed::Live { epoch, .. } => Some(epoch),
            _ => None,
        });
        drop(shard);
        if let (Some(epoch), Some(remote)) = (epoch, self.shared.remote.get()) {
            remote.acked(uid, conn, Position { epoch, seq });
        }
    }

    /// Waits for an ack of `at` by a tab of `uid`: resolves to how many tabs had acked
    /// it by then. `None` if the uid's history is gone or is another one.
    pub fn wait_ack(&self, uid: &str, at: Position) -> Option<oneshot::Receiver<usize>> {
        let mut shard = self.shard(uid);
        let log = shard.logs.get_mut(uid)?;
        (log.head().epoch == at.epoch).then(|| log.wait(at.seq))
    }

    /// Trims histories by age and drops those past their keep time; returns how many
    /// uids lost theirs.
    pub fn expire_history(&self, now: Instant) -> usize {
        let Some(history) = &self.shared.history else {
            return 0;
        };
        let mut dropped = 0;
        for shard in self.shared.shards.iter() {
            let mut guard = lock(shard);
            let Shard { uids, logs, .. } = &mut *guard;
            dropped += logs.sweep(now, history, |uid| uids.contains_key(uid));
        }
        dropped
    }

    /// Uids with a history, and what all histories keep, in bytes.
    pub fn history_totals(&self) -> (usize, usize) {
        let Some(history) = &self.shared.history else {
            return (0, 0);
        };
        if let Some(remote) = self.shared.remote.get() {
            // Cluster mode: kept in Redis; this node counts those it answers for.
            return (remote.counted(), 0);
        }
        (history.uids(), history.total_bytes())
    }

    fn offer(&self, uid: &str, member: &Member, msg: &Payload, delivery: &mut Delivery, via: Via) {
        let offered = match via {
            Via::Queue => member.outbox.offer(msg),
            Via::Through(_) => member.outbox.offer_through(msg),
        };
        match offered {
            Offer::Queued => delivery.queued += 1,
            Offer::Written => {
                delivery.queued += 1;
                if let Via::Through(written) = via {
                    written.set(written.get() + 1);
                }
            }
            Offer::Closed => delivery.refused += 1,
            Offer::Full => {
                delivery.refused += 1;
                self.shared.metrics.incr(Metric::Evicted);
                warn!(
                    uid = %escaped(uid),
                    conn = member.id.0,
                    "evicting slow consumer: send queue full"
                );
            }
        }
    }

    /// Adds uids to `group`. Returns (newly added, members after).
    pub fn join(&self, group: &str, uids: &[Uid]) -> Result<(usize, usize), GroupError> {
        self.groups().join(group, uids, Instant::now())
    }

    /// Removes uids from `group`. Returns (removed, members after).
    pub fn leave(&self, group: &str, uids: &[Uid]) -> (usize, usize) {
        self.groups().leave(group, uids)
    }

    /// The members of `group` (online or within their grace period).
    pub fn members(&self, group: &str) -> Option<Vec<Uid>> {
        self.groups().members(group)
    }

    /// Groups that exist.
    pub fn group_count(&self) -> usize {
        self.groups().len()
    }

    /// Drops memberships of uids offline past the grace period; returns how many uids.
    pub fn expire_groups(&self, now: Instant) -> usize {
        let due = self.groups().due(now);
        let mut dropped = 0;
        for (since, uid) in due {
            let shard = self.shard(&uid);
            let online = shard.uids.contains_key(uid.as_ref());
            dropped += usize::from(self.groups().expire(&uid, since, online));
            drop(shard);
        }
        dropped
    }

    /// Closes every connection of `uid` with `notice` and drops its groups at once (no
    /// grace period: a kick is deliberate). Returns how many connections were closed.
    pub fn kick(&self, uid: &str, notice: &CloseNotice) -> usize {
        let shard = self.shard(uid);
        let closed = shard.uids.get(uid).map_or(0, |entry| {
            entry
                .conns
                .iter()
                .filter(|m| m.outbox.close(notice.clone()))
                .count()
        });
        self.groups().forget(uid);
        drop(shard);
        self.shared.metrics.add(Metric::Kicked, closed as u64);
        closed
    }

    /// One page of online uids: whole shards from `cursor` on until at least `limit` uids.
    /// Returns the uids and the cursor of the next page (`None` at the end). A uid online
    /// for the whole walk is listed exactly once, however others come and go.
    pub fn uids_page(&self, cursor: usize, limit: usize) -> (Vec<Uid>, Option<usize>) {
        let mut out = Vec::new();
        let mut next = cursor;
        while next < SHARDS && out.len() < limit.max(1) {
            let shard = lock(&self.shared.shards[next]);
            out.extend(shard.uids.keys().cloned());
            next += 1;
        }
        (out, (next < SHARDS).then_some(next))
    }

    /// Live connections of `uid`.
    pub fn connections_of(&self, uid: &str) -> usize {
        self.shard(uid).uids.get(uid).map_or(0, |e| e.conns.len())
    }

    /// Totals across all shards: (online uids, bound connections).
    pub fn totals(&self) -> (usize, usize) {
        self.shared.shards.iter().fold((0, 0), |(u, c), shard| {
            let shard = lock(shard);
            (u + shard.uids.len(), c + shard.connections)
        })
    }

    fn groups(&self) -> MutexGuard<'_, Groups> {
        self.shared.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shard(&self, uid: &str) -> MutexGuard<'_, Shard> {
        let idx = self.shared.hasher.hash_one(uid) as usize % SHARDS;
        lock(&self.shared.shards[idx])
    }
}

/// Every shard update is a single insert/remove, so a poisoned shard is still consistent.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

/// A status frame, queued as it is (no prefix).
fn status_outgoing(status: Status, at: Position) -> Payload {
    Payload::raw_frame(status_frame(status, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        Registry::new(
            QueueLimits {
                depth: 4,
                bytes: 1 << 20,
            },
            GroupLimits {
                max_groups: 10,
                max_members: 10,
                grace: std::time::Duration::from_secs(60),
            },
            crate::config::Config::default().history_limits(),
            Arc::default(),
        )
    }

    #[test]
    fn tabs_share_a_uid_and_leave_alone() {
        let reg = registry();
        let a = reg.bind("u");
        let b = reg.bind("u");
        let msg = Payload::from_static("hi");
        assert_eq!(reg.push("u", &msg).queued, 2);
        assert_eq!(reg.totals(), (1, 2));
        drop(a);
        assert_eq!(reg.push("u", &msg).queued, 1);
        drop(b);
        assert!(!reg.push("u", &msg).ok());
        assert_eq!(reg.totals(), (0, 0));
    }
}
