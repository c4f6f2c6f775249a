//! Per-uid history for protocol v1 (`docs/protocol.md`): each message to a uid gets the
//! next sequence number of the uid's [`UidLog`]; the log keeps the last messages (bounded
//! per uid by count, bytes and age, and over all uids by [`HistoryLimits::total_bytes`]),
//! holds the offline queue (entries marked with a TTL), the acks each tab sent and the
//! pushes waiting for one.
//!
//! # Where it lives, and why
//! A uid's log sits in the registry shard of that uid, under the same lock that fans a
//! push out to the uid's connections. So numbering a push, keeping it and offering it to
//! every tab is one step, and a bind that takes its replay from the log and registers the
//! tab for live delivery is another: a push is in the replay or delivered live after it,
//! never both, never neither, without any dedupe on the hot path.
//!
//! # In cluster mode
//! With `--redis`, a uid's history lives in Redis instead (`cluster/history/scripts.rs`: a hash
//! and a list per uid, numbered and published by one Lua script), and no [`UidLog`] is
//! kept: the registry feeds v1 connections from the uid's channel (see `registry/mod.rs`,
//! `Feed`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::wire::envelope::{Position, Seq, Status};
use crate::wire::{Payload, Uid};

/// How much history is kept. Every bound is on by default (see `Config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages kept per uid; 0 turns history off (no uid gets a log).
    pub messages: usize,
    /// Payload bytes kept per uid.
    pub bytes: usize,
    /// A message older than this leaves the history (a queued one at its TTL).
    pub age: Duration,
    /// Payload bytes plus [`ENTRY_OVERHEAD`] per message, over all uids.
    pub total_bytes: usize,
    /// How long a log outlives the uid's last connection.
    pub keep: Duration,
    /// Uids with a log, at most (see [`Logs`], "Bounded in number").
    pub max_uids: usize,
    /// Acks in a row that acknowledge nothing new a v1 connection may send; one more
    /// closes it (1008 `ack flood`).
    pub stale_acks: usize,
}

/// What one kept message costs besides its payload, for the total bound: the entry in the
/// log (40 bytes), the payload's shared header (64) and the two allocations' headers.
/// Measured figures are in docs/benchmarks.md.
pub const ENTRY_OVERHEAD: usize = 128;

/// What all logs share: the limits, the bytes kept over all uids, and the epoch source.
#[derive(Debug)]
pub struct HistoryShared {
    limits: HistoryLimits,
    /// Cost (payload + overhead) of every kept message. Checked, then added, without a
    /// global lock: concurrent appends on other shards can overshoot the bound by at most
    /// one message each.
    total: AtomicUsize,
    /// Logs over all shards. Checked, then added, like `total`: concurrent creations on
    /// other shards can overshoot [`HistoryLimits::max_uids`] by one each.
    uids: AtomicUsize,
    seed: u64,
    created: AtomicU64,
}

impl HistoryShared {
    /// Shared state for `limits`, with a random epoch seed (a restarted daemon never
    /// reuses an epoch).
    pub fn new(limits: HistoryLimits) -> Self {
        HistoryShared {
            limits,
            total: AtomicUsize::new(0),
            uids: AtomicUsize::new(0),
            seed: RandomState::new().hash_one(std::process::id()),
            created: AtomicU64::new(0),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &HistoryLimits {
        &self.limits
    }

    /// What every log keeps, in bytes (payload + overhead).
    pub fn total_bytes(&self) -> usize {
        self.total.load(Relaxed)
    }

    /// Uids with a log, over all shards.
    pub fn uids(&self) -> usize {
        self.uids.load(Relaxed)
    }

    /// True when another log may be created without evicting one.
    pub fn has_room(&self) -> bool {
        self.uids() < self.limits.max_uids
    }

    /// A fresh epoch: random-looking, and distinct for each log this process creates.
    fn new_epoch(&self) -> u64 {
        let n = self.created.fetch_add(1, Relaxed);
        // splitmix64 of seed + n: a bijection, so two logs never share an epoch.
        let mut z = self
            .seed
            .wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One kept message.
#[derive(Debug)]
struct Entry {
    seq: Seq,
    msg: Payload,
    /// Set while it waits in the offline queue: deliver to the next bind until then.
    queued_until: Option<Instant>,
}

/// Whether an appended message was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// In the history.
    Yes,
    /// Numbered but not kept: larger than the per-uid bound, or the total bound is
    /// reached and this uid had nothing of its own to make room with. A resume across it
    /// is `not_recovered`.
    No,
}

/// What a v1 bind gets: its status frame and the messages to replay before live ones.
#[derive(Debug)]
pub struct Attached {
    /// `new`, `recovered` or `not_recovered`.
    pub status: Status,
    /// Every message that follows has a sequence above this.
    pub base: Position,
    /// Messages to deliver before live ones, in order (each carries its sequence).
    pub replay: Vec<Payload>,
}

/// One uid's history.
#[derive(Debug)]
pub struct UidLog {
    epoch: u64,
    /// The last sequence number given out.
    head: Seq,
    /// Every message above `floor` up to `head` is in `entries`; a resume from a point
    /// below it is not covered.
    floor: Seq,
    entries: VecDeque<Entry>,
    /// Payload bytes of `entries`.
    bytes: usize,
    /// Set while the uid has no connection.
    offline_since: Option<Instant>,
    /// The latest TTL of a message in the offline queue: the log lives at least so long.
    hold_until: Option<Instant>,
    /// The highest sequence each opted-in tab acknowledged: (connection, seq).
    acks: Vec<(u64, Seq)>,
    /// Pushes waiting for an ack, by the sequence they wait for (and the order they
    /// came in); each is told how many tabs had acked it. Ordered, so an ack wakes its
    /// waiters without looking at the others: a wait costs O(log n), not a scan of
    /// every earlier one (`scripts/ack-waits.py`, debug build: 20,000 waits to one uid
    /// took 13.5 s of CPU and 40,000 took 94.5 s; now 0.53 s and 0.99 s).
    waiters: BTreeMap<(Seq, u64), oneshot::Sender<usize>>,
    /// Waits registered so far (the second half of a waiter's key).
    waits: u64,
    /// How many waiters may be registered before those whose push gave up waiting are
    /// purged: twice what was left at the last purge, so each purge is paid for by as
    /// many new waits (O(1) amortized) and abandoned ones never hold more than half.
    purge_at: usize,
}

/// The least [`UidLog::purge_at`]: below it, abandoned waiters are left to the sweep.
const PURGE_FLOOR: usize = 64;

impl UidLog {
    /// An empty log with a fresh epoch.
    pub fn new(shared: &HistoryShared) -> Self {
        UidLog {
            epoch: shared.new_epoch(),
            head: 0,
            floor: 0,
            entries: VecDeque::new(),
            bytes: 0,
            offline_since: None,
            hold_until: None,
            acks: Vec::new(),
            waiters: BTreeMap::new(),
            waits: 0,
            purge_at: PURGE_FLOOR,
        }
    }

    /// The last position given out.
    pub fn head(&self) -> Position {
        Position {
            epoch: self.epoch,
            seq: self.head,
        }
    }

    /// Numbers `msg` and keeps the numbered copy ([`Payload::numbered`], what the uid's
    /// tabs are sent) within the bounds, oldest messages leaving first. `queued_until`
    /// puts it in the offline queue.
    pub fn append(
        &mut self,
        msg: &Payload,
        queued_until: Option<Instant>,
        shared: &HistoryShared,
    ) -> (Payload, Kept) {
        self.head += 1;
        let seq = self.head;
        let msg = msg.numbered(seq);
        let l = &shared.limits;
        let cost = msg.len() + ENTRY_OVERHEAD;
        if msg.len() > l.bytes || cost > l.total_bytes {
            self.clear(shared);
            self.floor = seq;
            return (msg, Kept::No);
        }
        while self.entries.len() >= l.messages || self.bytes + msg.len() > l.bytes {
            self.pop_front(shared);
        }
        while shared.total.load(Relaxed) + cost > l.total_bytes {
            if !self.pop_front(shared) {
                self.floor = seq;
                return (msg, Kept::No);
            }
        }
        shared.total.fetch_add(cost, Relaxed);
        self.bytes += msg.len();
        if let Some(until) = queued_until {
            self.hold_until = Some(self.hold_until.map_or(until, |h| h.max(until)));
        }
        self.entries.push_back(Entry {
            seq,
            msg: msg.clone(),
            queued_until,
        });
        (msg, Kept::Yes)
    }

    fn pop_front(&mut self, shared: &HistoryShared) -> bool {
        let Some(e) = self.entries.pop_front() else {
            return false;
        };
        self.floor = e.seq;
        self.bytes -= e.msg.len();
        shared
            .total
            .fetch_sub(e.msg.len() + ENTRY_OVERHEAD, Relaxed);
        true
    }

    /// Drops every kept message (and gives their bytes back to the total).
    pub fn clear(&mut self, shared: &HistoryShared) {
        while self.pop_front(shared) {}
    }

    /// Drops messages older than the age bound (a queued one stays until its TTL, and
    /// keeps the ones behind it).
    fn trim_age(&mut self, now: Instant, shared: &HistoryShared) {
        let age = shared.limits.age;
        while let Some(front) = self.entries.front() {
            let old = now.saturating_duration_since(front.msg.received()) > age;
            let held = front.queued_until.is_some_and(|t| t > now);
            if !old || held {
                break;
            }
            self.pop_front(shared);
        }
    }

    /// An opted-in tab binds, resuming from `since` if given: what to send it first.
    /// The offline queue goes to it (a covered resume replays it anyway).
    pub fn attach(
        &mut self,
        since: Option<Position>,
        now: Instant,
        shared: &HistoryShared,
    ) -> Attached {
        self.trim_age(now, shared);
        self.offline_since = None;
        let covered =
            since.filter(|p| p.epoch == self.epoch && p.seq >= self.floor && p.seq <= self.head);
        if let Some(from) = covered {
            let replay = self
                .entries
                .iter_mut()
                .filter(|e| e.seq > from.seq)
                .map(|e| {
                    e.queued_until = None;
                    e.msg.clone()
                })
                .collect();
            return Attached {
                status: Status::Recovered,
                base: from,
                replay,
            };
        }
        let replay = self.take_queued(now);
        let base = replay.first().map_or(self.head, |m| m.seq() - 1);
        Attached {
            status: if since.is_some() {
                Status::NotRecovered
            } else {
                Status::New
            },
            base: Position {
                epoch: self.epoch,
                seq: base,
            },
            replay,
        }
    }

    /// The offline queue, in order, for the bind that takes it (expired entries leave
    /// the queue unsent). Each entry stays in history for resumes.
    pub fn take_queued(&mut self, now: Instant) -> Vec<Payload> {
        self.offline_since = None;
        if self.hold_until.is_none() {
            return Vec::new();
        }
        self.hold_until = None;
        self.entries
            .iter_mut()
            .filter_map(|e| {
                let until = e.queued_until.take()?;
                (until > now).then(|| e.msg.clone())
            })
            .collect()
    }

    /// The uid lost its last connection (see [`Logs::went_offline`]).
    fn went_offline(&mut self, now: Instant) {
        self.offline_since = Some(now);
    }

    /// Whether this log may be evicted to make room for another: offline since `since`
    /// (not since a later disconnect), nothing in the offline queue still to deliver,
    /// nobody waiting for an ack, and, for a `spare` one, no message kept.
    fn evictable(&mut self, since: Instant, now: Instant, spare: bool) -> bool {
        if self.offline_since != Some(since) || self.hold_until.is_some_and(|t| t > now) {
            return false;
        }
        self.purge_waiters();
        self.waiters.is_empty() && (!spare || self.entries.is_empty())
    }

    /// A tab is gone: its acks no longer count.
    pub fn forget_conn(&mut self, conn: u64) {
        self.acks.retain(|(c, _)| *c != conn);
    }

    /// Tab `conn` acknowledged every message up to `seq`; wakes the pushes waiting for
    /// one of them.
    pub fn ack(&mut self, conn: u64, seq: Seq) {
        match self.acks.iter_mut().find(|(c, _)| *c == conn) {
            Some((_, at)) if *at >= seq => return,
            Some((_, at)) => *at = seq,
            None => self.acks.push((conn, seq)),
        }
        // Every waiter for `seq` or below has an ack now; the others are not looked at.
        while let Some(first) = self.waiters.first_entry()
            && first.key().0 <= seq
        {
            let ((w, _), tx) = first.remove_entry();
            let tabs = self.acks.iter().filter(|(_, a)| *a >= w).count();
            // A push that gave up waiting dropped its receiver: nothing to tell.
            let _ = tx.send(tabs);
        }
    }

    /// A push waits for an ack of `seq` (resolved at once if a tab already sent one).
    pub fn wait(&mut self, seq: Seq) -> oneshot::Receiver<usize> {
        let (tx, rx) = oneshot::channel();
        let tabs = self.acks.iter().filter(|(_, a)| *a >= seq).count();
        if tabs > 0 {
            let _ = tx.send(tabs);
            return rx;
        }
        if self.waiters.len() >= self.purge_at {
            self.purge_waiters();
        }
        self.waits += 1;
        self.waiters.insert((seq, self.waits), tx);
        rx
    }

    /// Drops the waiters whose push gave up waiting.
    fn purge_waiters(&mut self) {
        self.waiters.retain(|_, tx| !tx.is_closed());
        self.purge_at = (2 * self.waiters.len()).max(PURGE_FLOOR);
    }

    /// Trims by age; true when the log should go: offline past the keep time, nothing
    /// queued still to deliver, nobody waiting for an ack.
    fn expired(&mut self, now: Instant, shared: &HistoryShared) -> bool {
        self.trim_age(now, shared);
        self.purge_waiters();
        let gone = self
            .offline_since
            .is_some_and(|t| now.saturating_duration_since(t) >= shared.limits.keep);
        gone && self.hold_until.is_none_or(|t| t <= now) && self.waiters.is_empty()
    }
}

/// The logs of one registry shard.
///
/// # Bounded in number
/// A stranger creates a log with every v1 bind of a fresh uid, and an empty one still
/// costs ~480 bytes for `--history-keep-ms` after it leaves (30,000 binds in 4 s from one
/// client: 30,000 logs; at that rate ~1 GiB over the keep time). So the logs over all
/// shards are bounded ([`HistoryLimits::max_uids`]); at the bound a new one is made only
/// by evicting one that nobody can miss much: first an offline uid's log that kept no
/// message (a resume from it is `not_recovered` instead of `recovered` with nothing to
/// replay), then an offline uid's log that keeps messages, the one offline longest
/// first (a resume is `not_recovered`: the app refetches, as after an expiry). Never an
/// online uid's log, one holding an offline queue still to deliver, or one a push waits
/// on for an ack. With none of those, no log is made: the bind is refused (1013, retry
/// later) and a `ttl=` push is not queued (`offline`). The candidates wait in two
/// queues, in the order their uids went offline, checked when taken (an entry whose uid
/// came back is skipped), so finding one is O(1) amortized.
#[derive(Debug, Default)]
pub struct Logs {
    map: HashMap<Uid, UidLog>,
    /// Offline uids, in the order they went offline (and when).
    offline: VecDeque<(Instant, Uid)>,
    /// Those among them whose log kept no message then: evicted first.
    spare: VecDeque<(Instant, Uid)>,
}

/// Candidate entries a shard may keep besides one per log before it drops the stale
/// ones (O(1) amortized, like the waiters' purge).
const CANDIDATE_SLACK: usize = 64;

impl Logs {
    /// The log of `uid`, if it has one.
    pub fn get_mut(&mut self, uid: &str) -> Option<&mut UidLog> {
        self.map.get_mut(uid)
    }

    /// True if `uid` has a log.
    pub fn contains(&self, uid: &str) -> bool {
        self.map.contains_key(uid)
    }

    /// The log of `uid`, created if missing, whether or not [`HistoryShared::has_room`]
    /// (the caller makes room first: see [`Logs::evict`]).
    pub fn open(&mut self, uid: &Uid, shared: &HistoryShared) -> &mut UidLog {
        self.map.entry(uid.clone()).or_insert_with(|| {
            shared.uids.fetch_add(1, Relaxed);
            UidLog::new(shared)
        })
    }

    /// `uid` lost its last connection: its log (if any) becomes a candidate for eviction.
    pub fn went_offline(&mut self, uid: &Uid, now: Instant) {
        let Some(log) = self.map.get_mut(uid) else {
            return;
        };
        log.went_offline(now);
        if log.entries.is_empty() {
            self.spare.push_back((now, uid.clone()));
        }
        self.offline.push_back((now, uid.clone()));
        if self.offline.len() > 2 * self.map.len() + CANDIDATE_SLACK {
            self.drop_stale_candidates();
        }
    }

    /// Forgets candidates whose uid has no log or came back since.
    fn drop_stale_candidates(&mut self) {
        let map = &self.map;
        let current = |(t, uid): &(Instant, Uid)| {
            map.get(uid)
                .is_some_and(|log| log.offline_since == Some(*t))
        };
        self.offline.retain(current);
        self.spare.retain(current);
    }

    /// Evicts one log to make room for another (see "Bounded in number"): a `spare`
    /// one (offline, nothing kept), or else any offline one, offline longest first.
    /// `online` says whether a uid has a connection (never evicted then). Returns true
    /// if one went.
    pub fn evict(
        &mut self,
        now: Instant,
        shared: &HistoryShared,
        spare: bool,
        online: impl Fn(&str) -> bool,
    ) -> bool {
        let queue = if spare {
            &mut self.spare
        } else {
            &mut self.offline
        };
        while let Some((since, uid)) = queue.pop_front() {
            let Some(log) = self.map.get_mut(&uid) else {
                continue;
            };
            log.trim_age(now, shared);
            if online(&uid) || !log.evictable(since, now, spare) {
                continue;
            }
            log.clear(shared);
            self.map.remove(&uid);
            shared.uids.fetch_sub(1, Relaxed);
            return true;
        }
        false
    }

    /// Uids with a log.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no uid has a log.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Trims every log by age and drops the expired ones; returns how many went.
    /// `online` says whether a uid still has a connection (never dropped then).
    pub fn sweep(
        &mut self,
        now: Instant,
        shared: &HistoryShared,
        online: impl Fn(&str) -> bool,
    ) -> usize {
        let before = self.map.len();
        self.map.retain(|uid, log| {
            if !log.expired(now, shared) || online(uid) {
                return true;
            }
            log.clear(shared);
            false
        });
        let gone = before - self.map.len();
        shared.uids.fetch_sub(gone, Relaxed);
        if gone > 0 {
            self.drop_stale_candidates();
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(messages: usize, bytes: usize, total: usize) -> HistoryShared {
        HistoryShared::new(HistoryLimits {
            messages,
            bytes,
            age: Duration::from_secs(60),
            total_bytes: total,
            keep: Duration::from_secs(60),
            max_uids: 1000,
            stale_acks: 16,
        })
    }

    fn msg(s: &str) -> Payload {
        Payload::from(s.to_owned())
    }

    #[test]
    fn resume_covered_trimmed_and_foreign() {
        let sh = shared(3, 1 << 20, 1 << 20);
        let mut log = UidLog::new(&sh);
        let now = Instant::now();
        for i in 1..=5 {
            let (numbered, kept) = log.append(&msg(&i.to_string()), None, &sh);
            assert_eq!((numbered.seq(), kept), (i, Kept::Yes));
        }
        // Kept: 3, 4, 5. A resume from 2 is covered, from 1 is not.
        let epoch = log.epoch;
        let at = |seq| Some(Position { epoch, seq });
        let a = log.attach(at(2), now, &sh);
        assert_eq!(a.status, Status::Recovered);
        let seqs: Vec<_> = a.replay.iter().map(Payload::seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(log.attach(at(1), now, &sh).status, Status::NotRecovered);
        assert_eq!(log.attach(at(6), now, &sh).status, Status::NotRecovered);
        let foreign = Some(Position {
            epoch: epoch ^ 1,
            seq: 4,
        });
        let a = log.attach(foreign, now, &sh);
        assert_eq!(
            (a.status, a.base.seq, a.replay.len()),
            (Status::NotRecovered, 5, 0)
        );
        assert_eq!(log.attach(at(5), now, &sh).replay.len(), 0);
        assert_eq!(sh.total_bytes(), 3 * (1 + ENTRY_OVERHEAD));
        log.clear(&sh);
        assert_eq!(sh.total_bytes(), 0);
        assert_ne!(UidLog::new(&sh).epoch, log.epoch);
    }

    #[test]
    fn total_bound_and_queue() {
        let sh = shared(100, 1 << 20, 3 * (10 + ENTRY_OVERHEAD));
        let (mut a, mut b) = (UidLog::new(&sh), UidLog::new(&sh));
        let ten = msg("0123456789");
        for _ in 0..3 {
            assert_eq!(a.append(&ten, None, &sh).1, Kept::Yes);
        }
        // Full: b has nothing to make room with; a makes room from its own.
        assert_eq!(b.append(&ten, None, &sh).1, Kept::No);
        assert_eq!(b.floor, 1);
        let (four, kept) = a.append(&ten, None, &sh);
        assert_eq!((four.seq(), kept), (4, Kept::Yes));
        assert_eq!(a.floor, 1);
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        a.append(&msg("q1"), Some(later), &sh);
        a.append(&msg("q2"), Some(now), &sh); // expires at once
        let q = a.take_queued(now);
        assert_eq!(q.iter().map(Payload::seq).collect::<Vec<_>>(), vec![5]);
        assert!(a.take_queued(now).is_empty(), "delivered once");
    }

    #[test]
    fn acks_wake_waiters() {
        let sh = shared(10, 1 << 20, 1 << 20);
        let mut log = UidLog::new(&sh);
        let s1 = log.append(&msg("a"), None, &sh).0.seq();
        let s2 = log.append(&msg("b"), None, &sh).0.seq();
        let mut w2 = log.wait(s2);
        let mut w1 = log.wait(s1);
        log.ack(7, s1);
        assert_eq!(w1.try_recv(), Ok(1));
        assert!(w2.try_recv().is_err());
        log.ack(8, s2);
        assert_eq!(w2.try_recv(), Ok(1));
        assert_eq!(log.wait(s1).try_recv(), Ok(2), "both tabs acked 1 already");
        log.forget_conn(8);
        assert_eq!(log.wait(s2).try_recv().ok(), None);
    }

    /// Eviction order: offline logs that kept nothing first, then offline ones by the
    /// time they went offline; never one holding an offline queue or an ack wait, one
    /// that came back online, or one `online` says has a connection.
    #[test]
    fn evicted_empty_first_then_offline_longest() {
        let sh = shared(10, 1 << 20, 1 << 20);
        let mut logs = Logs::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let uid = |s: &str| Uid::from(s);
        for (name, ms) in [("full1", 1), ("empty", 2), ("queued", 3), ("waited", 4)] {
            let log = logs.open(&uid(name), &sh);
            if name != "empty" {
                log.append(&msg("m"), (name == "queued").then(|| at(60_000)), &sh);
            }
            logs.went_offline(&uid(name), at(ms));
        }
        let _waiting = logs.get_mut("waited").unwrap().wait(5);
        logs.open(&uid("back"), &sh);
        logs.went_offline(&uid("back"), at(0));
        logs.get_mut("back").unwrap().take_queued(at(5)); // came back online
        assert_eq!(sh.uids(), 5);
        let none = |_: &str| false;
        assert!(logs.evict(at(10), &sh, true, none));
        assert!(!logs.contains("empty"), "the empty one goes first");
        assert!(!logs.evict(at(10), &sh, true, none), "no other empty one");
        assert!(!logs.evict(at(10), &sh, false, |u| u == "full1"));
        // (full1's candidate entry was used up while it was online; it offlines again.)
        logs.went_offline(&uid("full1"), at(20));
        assert!(logs.evict(at(30), &sh, false, none));
        assert!(!logs.contains("full1"));
        assert!(
            !logs.evict(at(30), &sh, false, none),
            "queued, waited, back stay"
        );
        assert_eq!(sh.uids(), 3);
        assert_eq!(
            sh.total_bytes(),
            2 * (1 + ENTRY_OVERHEAD),
            "full1's bytes given back"
        );
    }

    /// Waiters registered out of order are woken by the ack that covers them, and only
    /// by it; abandoned ones (their push gave up) never make up more than half of what
    /// is kept, without a scan per wait.
    #[test]
    fn waiters_wake_in_order_and_abandoned_ones_are_purged() {
        let sh = shared(10, 1 << 20, 1 << 20);
        let mut log = UidLog::new(&sh);
        for _ in 0..10 {
            log.append(&msg("m"), None, &sh);
        }
        let mut live: Vec<_> = [5, 2, 9, 2, 7].iter().map(|&s| (s, log.wait(s))).collect();
        log.ack(1, 4);
        for (seq, rx) in &mut live {
            let got = rx.try_recv().ok();
            assert_eq!(got, (*seq <= 4).then_some(1), "waiter for {seq}");
        }
        live.retain(|(seq, _)| *seq > 4);
        // 100,000 waits whose pushes gave up at once: what is kept stays bounded.
        let mut most = 0;
        for i in 0..100_000u64 {
            drop(log.wait(8 + i % 3));
            most = most.max(log.waiters.len());
        }
        assert!(most <= 2 * PURGE_FLOOR + 3, "{most} waiters kept");
        log.ack(2, 10);
        for (seq, rx) in &mut live {
            assert_eq!(rx.try_recv().ok(), Some(1), "waiter for {seq}");
        }
        assert!(log.waiters.is_empty());
    }
}
