//! Cluster mode's `online`/`offline` (and the `close` of a dead node's connections): told
//! exactly once across the nodes, in order per uid, settled in Redis (docs/events.md,
//! "In a cluster").
//!
//! Each node keeps in Redis which uids it holds (`u:UID`, a hash of node ids) and, when
//! some receiver wants `close`, its connections (`c:NODE`). A uid's first node anywhere
//! runs [`CAME`], which alone says `online`; its last node's [`LEFT`] starts the debounce
//! (`leaving`, a sorted set by deadline); whichever node's sweep settles it first
//! ([`SETTLE`]) says `offline`, unless a tab came back meanwhile (then [`CAME`] said
//! nothing either). Each script numbers the uid's event from Redis's clock, above the
//! uid's last, so the order holds across nodes.
//!
//! A node killed with -9 says nothing: every node beats ([`beat_once`]) every
//! [`BEAT_EVERY`], and one that missed [`DEAD_AFTER`] is reaped by the first survivor
//! that sees it ([`REAP`]): the `close` of each of its connections (code 1006, reason
//! `node lost`) and its uids into the debounce as if their tabs had closed.
//!
//! A node with receivers takes part from the start. A node without takes part once it
//! sees another node with receivers (`node_figures.rs`): its uids count, the `online`s
//! it decides go through a relay in Redis to one node with receivers
//! ([`Cluster::relay`]), and offlines are settled and dead nodes reaped only by nodes with
//! receivers, which tell them. Give every node the same receivers all the same: a node
//! tells its own connections' `connect`/`bind`/`close`/`message` to its own receivers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{ClientLike, HashesInterface, LuaInterface};
use fred::types::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::cluster::Cluster;
use crate::cluster::{Beat, beat_once};
use crate::events::{ConnSink, Hub, Kind, UidSink, What};
use crate::registry::Registry;
use crate::wire::Uid;

/// How often a node says it is alive, settles due offlines at the latest, and looks for
/// dead nodes.
const BEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a node may go without beating before it is reaped.
pub const DEAD_AFTER: Duration = Duration::from_secs(5);
/// Scripts per pipeline.
const PIPELINE: usize = 256;
/// The `seq` of a `close` told for a dead node: above every number its connections had
/// (they count from 1 in 32 bits), since their last one died with the node.
pub const REAPED_SEQ: u64 = 1 << 32;

/// The Redis keys of events' presence. Every name is made here (the Lua of [`REAP`] makes
/// a uid's from [`Key::Base`] the same way as [`Key::Uid`]). All share the prefix's hash
/// tag: each script's keys are in one slot of a Redis Cluster.
#[derive(Debug, Clone, Copy)]
enum Key<'a> {
    /// What every name starts with.
    Base,
    /// A uid's nodes: a hash node → 1.
    Uid(&'a str),
    /// Uids in their debounce: a sorted set by deadline (ms, Redis's clock).
    Leaving,
    /// Each online or leaving uid's last `seq`.
    Seqs,
    /// Each node's deadline to beat again by.
    Alive,
    /// A node's connections: a hash number → uid ("" before its bind).
    Conns(&'a str),
    /// A node's uids: a set.
    Held(&'a str),
    /// Set (for a day) when a node is reaped, so that node, beating again, tells being
    /// reaped from Redis having lost its data (both leave it unknown).
    Reaped(&'a str),
}

/// `base`: `{<prefix>}:ev:` (`--redis-prefix`, from the cluster's names).
fn key(base: &str, k: Key<'_>) -> String {
    match k {
        Key::Base => base.to_owned(),
        Key::Uid(uid) => format!("{base}u:{uid}"),
        Key::Leaving => format!("{base}leaving"),
        Key::Seqs => format!("{base}seq"),
        Key::Alive => format!("{base}alive"),
        Key::Conns(node) => format!("{base}c:{node}"),
        Key::Held(node) => format!("{base}h:{node}"),
        Key::Reaped(node) => format!("{base}r:{node}"),
    }
}

/// A uid's first connection on this node. KEYS: uid, leaving, seqs, held; ARGV: node,
/// uid. Returns the `online` event's seq when it is the uid's first node anywhere and it
/// was not within its debounce; else nil.
const CAME: &str = r#"
redis.call('SADD', KEYS[4], ARGV[2])
local before = redis.call('HLEN', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], 1)
if before > 0 then return false end
if redis.call('ZREM', KEYS[2], ARGV[2]) == 1 then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local seq = math.max(tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or now) + 1, now)
local s = string.format('%.0f', seq)
redis.call('HSET', KEYS[3], ARGV[2], s)
return s
"#;

/// A uid's last connection on this node went. KEYS: uid, leaving, held; ARGV: node, uid,
/// debounce ms. Its last node anywhere starts its debounce.
const LEFT: &str = r#"
redis.call('SREM', KEYS[3], ARGV[2])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HLEN', KEYS[1]) > 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
return 1
"#;

/// A leaving uid whose debounce may be over. KEYS: uid, leaving, seqs; ARGV: uid.
/// Returns the `offline` event's seq to the one node that settles it; else nil.
const SETTLE: &str = r#"
local due = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not due then return false end
local t = redis.call('TIME')
if tonumber(due) > tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) then
  return false
end
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HLEN', KEYS[1]) > 0 then return false end
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local seq = math.max(tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or 0) + 1, now)
redis.call('HDEL', KEYS[3], ARGV[1])
return string.format('%.0f', seq)
"#;

/// Reaps node ARGV[1] (once: the caller whose HDEL took it). KEYS: alive, its conns, its
/// uids, leaving, its reaped mark; ARGV: node, key base, debounce ms. Its uids left by no other node start
/// their debounce; returns its connections (number, uid, ...), or nil if another reaped it.
const REAP: &str = r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return false end
redis.call('SET', KEYS[5], 1, 'PX', 86400000)
local conns = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[2])
local uids = redis.call('SMEMBERS', KEYS[3])
redis.call('DEL', KEYS[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, uid in ipairs(uids) do
  local k = ARGV[2] .. 'u:' .. uid
  if redis.call('HDEL', k, ARGV[1]) == 1 and redis.call('HLEN', k) == 0 then
    redis.call('ZADD', KEYS[4], now + tonumber(ARGV[3]), uid)
  end
end
return conns
"#;

/// One node's part in cluster-wide presence events.
#[derive(Debug)]
pub struct ClusterPresence {
    hub: Arc<Hub>,
    cluster: Arc<Cluster>,
    registry: Registry,
    node: String,
    /// `{<prefix>}:ev:`, what every key of this module starts with.
    base: String,
    debounce: Duration,
    /// Uids whose first or last connection here changed since the last sync.
    dirty: Mutex<HashSet<Uid>>,
    /// Uids this node has told Redis it holds.
    held: Mutex<HashSet<Uid>>,
    /// Uids to tell Redis again without an `online` (Redis lost what it was told, and
    /// nobody was told they went offline): see [`ClusterPresence::tell_all_again`].
    quiet: Mutex<HashSet<Uid>>,
    /// This node's connections (with `close` wanted), and those changed since the sync.
    conns: Mutex<Conns>,
    wake: Notify,
    /// Set once this node has beaten: until then nothing it holds is written (a node
    /// must be reapable before it holds anything).
    beaten: std::sync::atomic::AtomicBool,
    /// Cancelled when the node leaves: the tasks end.
    stop: tokio_util::sync::CancellationToken,
    /// Taking part: this node has receivers for presence, or another node has receivers
    /// ([`ClusterPresence::activate`]). Until then nothing is written to Redis.
    active: AtomicBool,
}

/// A connection's uid (once bound) and `client_id` (a greeted page's).
type LiveConn = (Option<Uid>, Option<Arc<str>>);

#[derive(Debug, Default)]
struct Conns {
    /// Each connection's uid once bound, and its `client_id` if it has one.
    live: HashMap<u64, LiveConn>,
    changed: HashSet<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ClusterPresence {
    fn key(&self, k: Key<'_>) -> String {
        key(&self.base, k)
    }

    /// Starts this node's part (its sync and sweep tasks). It is active at once when
    /// `hub` has a receiver that wants `online`, `offline` or `close`; otherwise it waits,
    /// costing a map entry per connection, until [`ClusterPresence::activate`] (another
    /// node has receivers: `node_figures.rs`).
    pub fn start(
        hub: &Arc<Hub>,
        cluster: &Arc<Cluster>,
        registry: &Registry,
        debounce: Duration,
    ) -> Arc<ClusterPresence> {
        let wanted = [Kind::Online, Kind::Offline, Kind::Close];
        let active = wanted.iter().any(|k| hub.receivers_want(*k));
        let p = Arc::new(ClusterPresence {
            active: AtomicBool::new(active),
            hub: hub.clone(),
            cluster: cluster.clone(),
            registry: registry.clone(),
            node: cluster.node().to_owned(),
            base: cluster.events_base(),
            debounce,
            dirty: Mutex::default(),
            held: Mutex::default(),
            quiet: Mutex::default(),
            conns: Mutex::default(),
            wake: Notify::new(),
            beaten: std::sync::atomic::AtomicBool::new(false),
            stop: tokio_util::sync::CancellationToken::new(),
        });
        registry.set_events(hub.clone(), p.clone());
        // A node without receivers does not know what the others' want: it keeps its
        // connections for a reaper's `close` in case.
        if hub.receivers_want(Kind::Close) || !hub.has_receivers() {
            hub.set_conn_sink(p.clone());
        }
        for task in [
            tokio::spawn(p.clone().sync()),
            tokio::spawn(p.clone().sweep()),
        ] {
            let stop = p.stop.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                task.abort();
            });
        }
        p
    }

    /// Another node has receivers: this one takes part from now on (once), telling Redis
    /// every uid and connection it holds; the `online`s it decides go to them through the
    /// relay (see [`ClusterPresence::tell`]).
    pub fn activate(&self) {
        if self.active.swap(true, Ordering::AcqRel) {
            return;
        }
        info!("another node has --events-url receivers: this node takes part in cluster presence");
        self.tell_all_again(false);
        self.wake.notify_one();
    }

    fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Tells an event this node decided: to its own listeners, and, on a node without
    /// receivers, to the relay that a node with receivers takes it from (exactly one).
    async fn tell(&self, what: What, seq: u64) {
        if !self.hub.has_receivers()
            && let Err(err) = self.cluster.relay(&what, seq).await
        {
            debug!(%err, "relaying an event failed: lost");
        }
        self.hub.publish(what, seq);
    }

    fn redis(&self) -> &Client {
        self.cluster.redis()
    }

    fn mark(&self, uid: &Uid) {
        if !self.is_active() {
            return;
        }
        lock(&self.dirty).insert(uid.clone());
        self.wake.notify_one();
    }

    /// Writes what changed here to Redis, in order, and tells the `online`s it decided.
    async fn sync(self: Arc<Self>) {
        loop {
            if !self.cluster.is_up() || !self.beaten.load(std::sync::atomic::Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(25)).await;
                continue;
            }
            let dirty: Vec<Uid> = lock(&self.dirty).drain().collect();
            let conns: Vec<(u64, Option<LiveConn>)> = {
                let mut c = lock(&self.conns);
                let changed: Vec<u64> = c.changed.drain().collect();
                changed
                    .into_iter()
                    .map(|n| (n, c.live.get(&n).cloned()))
                    .collect()
            };
            if dirty.is_empty() && conns.is_empty() {
                self.wake.notified().await;
                continue;
            }
            let ok = self.sync_uids(&dirty).await && self.sync_conns(&conns).await;
            if !ok {
                // Redis failed us: all of it again, shortly.
                lock(&self.dirty).extend(dirty);
                lock(&self.conns)
                    .changed
                    .extend(conns.into_iter().map(|(n, _)| n));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// [`CAME`] or [`LEFT`] for each uid whose presence here differs from what Redis was
    /// told. Returns false if Redis failed (nothing is marked done then).
    async fn sync_uids(&self, dirty: &[Uid]) -> bool {
        let mut changes = Vec::new();
        // Told again quietly although gone from here since: then left, at the next sync.
        let mut again = Vec::new();
        {
            let held = lock(&self.held);
            let quiet = lock(&self.quiet);
            for uid in dirty {
                let here = self.registry.connections_of(uid) > 0;
                if quiet.contains(uid) && !here {
                    changes.push((uid.clone(), true));
                    again.push(uid.clone());
                } else if here != held.contains(uid) {
                    changes.push((uid.clone(), here));
                }
            }
        }
        for chunk in changes.chunks(PIPELINE) {
            let pipeline = self.redis().pipeline();
            for (uid, came) in chunk {
                let ukey = self.key(Key::Uid(uid));
                let held = self.key(Key::Held(&self.node));
                let (script, keys, args): (&str, Vec<String>, Vec<String>) = if *came {
                    let keys = vec![ukey, self.key(Key::Leaving), self.key(Key::Seqs), held];
                    (CAME, keys, vec![self.node.clone(), uid.to_string()])
                } else {
                    let args = vec![
                        self.node.clone(),
                        uid.to_string(),
                        self.debounce.as_millis().to_string(),
                    ];
                    (LEFT, vec![ukey, self.key(Key::Leaving), held], args)
                };
                // (A pipeline has no `eval`: the command by hand.)
                let mut line = vec![script.to_owned(), keys.len().to_string()];
                line.extend(keys);
                line.extend(args);
                let _: Result<(), _> = pipeline.custom(fred::cmd!("EVAL"), line).await;
            }
            let results: Vec<Result<Value, fred::error::Error>> = pipeline.try_all().await;
            for ((uid, came), result) in chunk.iter().zip(results) {
                match result {
                    Ok(value) => {
                        let online = {
                            let mut held = lock(&self.held);
                            if *came {
                                held.insert(uid.clone());
                                let quiet = lock(&self.quiet).remove(uid);
                                seq_of(&value).filter(|_| !quiet)
                            } else {
                                held.remove(uid);
                                None
                            }
                        };
                        if let Some(seq) = online {
                            self.tell(What::Online { uid: uid.clone() }, seq).await;
                        }
                    }
                    Err(err) => {
                        debug!(%err, "presence sync failed; retried");
                        return false;
                    }
                }
            }
        }
        if !again.is_empty() {
            lock(&self.dirty).extend(again);
            self.wake.notify_one();
        }
        true
    }

    /// This node's connections as they are now, for [`REAP`].
    /// (Field `N` holds connection N's uid, "" before its bind; `N#` its `client_id`.)
    async fn sync_conns(&self, conns: &[(u64, Option<LiveConn>)]) -> bool {
        let ckey = self.key(Key::Conns(&self.node));
        for chunk in conns.chunks(PIPELINE) {
            let pipeline = self.redis().pipeline();
            for (n, state) in chunk {
                let _: Result<(), _> = match state {
                    Some((uid, id)) => {
                        let mut fields =
                            vec![(n.to_string(), uid.as_deref().unwrap_or("").to_owned())];
                        if let Some(id) = id {
                            fields.push((format!("{n}#"), id.to_string()));
                        }
                        pipeline.hset(&ckey, fields).await
                    }
                    None => {
                        pipeline
                            .hdel(&ckey, vec![n.to_string(), format!("{n}#")])
                            .await
                    }
                };
            }
            let results: Vec<Result<Value, fred::error::Error>> = pipeline.try_all().await;
            if let Some(Err(err)) = results.into_iter().find(Result::is_err) {
                debug!(%err, "connection sync failed; retried");
                return false;
            }
        }
        true
    }

    /// Beats, reaps dead nodes, and settles the debounces that are due, every
    /// [`BEAT_EVERY`] (the settling more often for a short debounce).
    async fn sweep(self: Arc<Self>) {
        let tick = (self.debounce / 4).clamp(Duration::from_millis(50), BEAT_EVERY);
        let mut next_beat = tokio::time::Instant::now();
        loop {
            if self.cluster.is_up() && self.is_active() {
                if tokio::time::Instant::now() >= next_beat {
                    match self.beat().await {
                        Ok(()) => next_beat += BEAT_EVERY,
                        Err(err) => debug!(%err, "presence beat failed; retried"),
                    }
                }
                // Offlines are settled, and relayed events taken, by nodes with receivers
                // to tell them to.
                if self.hub.has_receivers() {
                    if let Err(err) = self.settle_due().await {
                        debug!(%err, "offline settling failed; retried");
                    }
                    if let Err(err) = self.take_relayed().await {
                        debug!(%err, "taking relayed events failed; retried");
                    }
                }
            }
            tokio::time::sleep(tick).await;
        }
    }

    async fn beat(&self) -> Result<(), fred::error::Error> {
        let Beat {
            known,
            reaped,
            dead,
        } = beat_once(
            self.redis(),
            self.key(Key::Alive),
            Some(self.key(Key::Reaped(&self.node))),
            &self.node,
            DEAD_AFTER,
            2 * BEAT_EVERY,
        )
        .await?;
        let was_beaten = self.beaten.swap(true, std::sync::atomic::Ordering::AcqRel);
        if !known && was_beaten && reaped {
            warn!(
                "this node was reaped as dead (no beat for its deadline): telling Redis again what it holds"
            );
            self.tell_all_again(false);
        } else if !known && was_beaten {
            warn!(
                "events' presence gone from Redis (it lost its data): telling Redis again what this node holds, with no second online"
            );
            self.tell_all_again(true);
        }
        self.wake.notify_one();
        if !self.hub.has_receivers() {
            return Ok(()); // A node with receivers reaps, to tell them the closes.
        }
        for dead in dead {
            self.reap(&dead).await?;
        }
        Ok(())
    }

    /// After being reaped: every uid and connection here is written again (the uids'
    /// `online` again too: the reaper said they went offline). With `quiet` (Redis lost
    /// its data: nobody was told anything), without an `online`, and a uid told before
    /// but gone since is told again, then left, so its `offline` still comes (a uid in its
    /// debounce anywhere when the data went, or whose `LEFT` ran between the loss and this
    /// beat, gets none: documented).
    fn tell_all_again(&self, quiet: bool) {
        let told: Vec<Uid> = lock(&self.held).drain().collect();
        let (uids, _) = self.registry.uids_page(0, usize::MAX);
        if quiet {
            let mut q = lock(&self.quiet);
            q.extend(told.iter().cloned());
            q.extend(uids.iter().cloned());
        }
        let mut dirty = lock(&self.dirty);
        dirty.extend(uids);
        dirty.extend(told);
        drop(dirty);
        let mut c = lock(&self.conns);
        let live: Vec<u64> = c.live.keys().copied().collect();
        c.changed.extend(live);
    }

    /// Publishes what nodes without receivers relayed (`Cluster::relay`), a batch at a
    /// time; each is taken by one node.
    async fn take_relayed(&self) -> Result<(), fred::error::Error> {
        for (what, seq, node) in self.cluster.take_relayed(PIPELINE).await? {
            self.hub.publish_from(what, seq, node);
        }
        Ok(())
    }

    /// Reaps `dead`, telling its connections' `close` if this node took it.
    async fn reap(&self, dead: &str) -> Result<(), fred::error::Error> {
        let keys = vec![
            self.key(Key::Alive),
            self.key(Key::Conns(dead)),
            self.key(Key::Held(dead)),
            self.key(Key::Leaving),
            self.key(Key::Reaped(dead)),
        ];
        let args = vec![
            dead.to_owned(),
            self.key(Key::Base),
            self.debounce.as_millis().to_string(),
        ];
        let conns: Option<Vec<String>> = self.redis().eval(REAP, keys, args).await?;
        let Some(conns) = conns else {
            return Ok(()); // Another node reaped it.
        };
        // `N` → uid, `N#` → client_id (see [`ClusterPresence::sync_conns`]).
        let mut ids: HashMap<&str, &str> = HashMap::new();
        let mut uids = Vec::new();
        for pair in conns.chunks_exact(2) {
            match pair[0].strip_suffix('#') {
                Some(n) => {
                    ids.insert(n, &pair[1]);
                }
                None => uids.push((&pair[0], &pair[1])),
            }
        }
        warn!(node = %dead, connections = uids.len(), "a node stopped beating: its connections are told closed, its uids leaving");
        if dead == self.node {
            return Ok(()); // Our own leaving: their closes were told as they closed.
        }
        for (n, uid) in uids {
            let uid = Some(uid)
                .filter(|u| !u.is_empty())
                .map(|u| Uid::from(u.as_str()));
            let what = What::Close {
                conn: format!("{dead}-{n}").into(),
                uid,
                code: 1006,
                reason: Some("node lost".into()),
                client_id: ids.get(n.as_str()).map(|id| Arc::from(*id)),
            };
            self.tell(what, REAPED_SEQ).await;
        }
        Ok(())
    }

    async fn settle_due(&self) -> Result<(), fred::error::Error> {
        let now = crate::events::event::unix_millis();
        let due: Vec<String> = self
            .redis()
            .custom(
                fred::cmd!("ZRANGEBYSCORE"),
                vec![
                    self.key(Key::Leaving),
                    "-inf".to_owned(),
                    now.to_string(),
                    "LIMIT".to_owned(),
                    "0".to_owned(),
                    PIPELINE.to_string(),
                ],
            )
            .await?;
        for uid in due {
            let keys = vec![
                self.key(Key::Uid(&uid)),
                self.key(Key::Leaving),
                self.key(Key::Seqs),
            ];
            let seq: Option<String> = self.redis().eval(SETTLE, keys, vec![uid.clone()]).await?;
            if let Some(seq) = seq.and_then(|s| s.parse().ok()) {
                self.tell(What::Offline { uid: uid.into() }, seq).await;
            }
        }
        Ok(())
    }

    /// At a clean shutdown, once every browser is closed: this node leaves at once (its
    /// uids start their debounce now, settled by the other nodes), instead of being
    /// reaped [`DEAD_AFTER`] later. Bounded by `deadline`.
    pub async fn leave(&self, deadline: tokio::time::Instant) {
        self.stop.cancel();
        if !self.is_active() {
            return; // Nothing of this node's is in Redis.
        }
        // Reaping itself does what the closes' syncs would (and they may still run: each
        // finds its part done).
        match tokio::time::timeout_at(deadline, self.reap(&self.node)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => debug!(%err, "leaving the cluster's presence failed"),
            Err(_) => debug!("leaving the cluster's presence timed out"),
        }
    }
}

/// A script's seq answer (a decimal string), if it gave one.
fn seq_of(value: &Value) -> Option<u64> {
    value.as_string().and_then(|s| s.parse().ok())
}

impl UidSink for ClusterPresence {
    fn came(&self, uid: &Uid) {
        self.mark(uid);
    }

    fn left(&self, uid: &Uid) {
        self.mark(uid);
    }
}

impl ConnSink for ClusterPresence {
    fn opened(&self, n: u64, client_id: Option<&Arc<str>>) {
        let mut c = lock(&self.conns);
        c.live.insert(n, (None, client_id.cloned()));
        if !self.is_active() {
            return; // Kept for when it is: [`ClusterPresence::activate`].
        }
        c.changed.insert(n);
        drop(c);
        self.wake.notify_one();
    }

    fn bound(&self, n: u64, uid: &Uid) {
        let mut c = lock(&self.conns);
        let id = c.live.get(&n).and_then(|(_, id)| id.clone());
        c.live.insert(n, (Some(uid.clone()), id));
        if !self.is_active() {
            return;
        }
        c.changed.insert(n);
        drop(c);
        self.wake.notify_one();
    }

    fn closed(&self, n: u64) {
        let mut c = lock(&self.conns);
        c.live.remove(&n);
        if !self.is_active() {
            return;
        }
        c.changed.insert(n);
        drop(c);
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name has the hash tag, and the Lua's rule for a uid's is [`Key::Uid`]'s.
    #[test]
    fn keys_share_one_slot_and_one_rule() {
        for k in [
            Key::Uid("a"),
            Key::Leaving,
            Key::Seqs,
            Key::Alive,
            Key::Conns("n"),
            Key::Held("n"),
            Key::Reaped("n"),
        ] {
            assert!(
                key("{x}:ev:", k).starts_with("{x}:ev:"),
                "{}",
                key("{x}:ev:", k)
            );
        }
        assert_eq!(
            format!("{}u:{}", key("{x}:ev:", Key::Base), "alice"),
            key("{x}:ev:", Key::Uid("alice"))
        );
    }
}
