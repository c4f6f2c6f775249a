//! Pusher channels on this node: which connections hold which channel of which app, the
//! presence members (users, not tabs), each cache channel's last event, and the users
//! signed in (`pusher:signin`). The Pusher door (`pusher/`) and the HTTP API reach it
//! through `nodes::Channels` (the seam above this module); a frame for a channel is formatted once and offered
//! to each subscriber's [`Outbox`], as the registry offers a push.
//!
//! Kept apart from the registry's uids and groups on purpose: a Pusher connection is not
//! bound to a uid, chooses its channels itself (with the app's signature), and a channel
//! event is a Pusher frame a pushwire-protocol page could not read (docs/pusher.md, "Why
//! Pusher channels are not pushwire groups").
//!
//! Lock order: a shard, then an outbox (offers never wait); the user index is never held
//! with a shard.

pub mod apps;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

pub use apps::{App, Apps};

use crate::events::PusherHooks;
use crate::outbox::{Offer, Outbox, QueueLimits};
use crate::wire::pusher::codes::Code;
use crate::wire::pusher::outbound;
use crate::wire::pusher::{Channel, Member, Refusal, SocketId};
use crate::wire::{CloseNotice, Payload};

/// Enough shards that two cores rarely meet on one lock.
const SHARDS: usize = 64;

/// How long a cache channel keeps its last event (Pusher's: 30 minutes), subscribers or
/// not.
pub const CACHE_TTL: Duration = Duration::from_secs(30 * 60);

/// One Pusher connection: its `socket_id`, its app, its outgoing queue, and the user it
/// signed in as.
#[derive(Debug)]
pub struct Conn {
    /// `node.n`: unique on this node for its life, and across the nodes of a cluster.
    pub socket_id: SocketId,
    /// The app it connected to.
    pub app: Arc<App>,
    outbox: Outbox,
    user: Mutex<Option<Arc<str>>>,
}

impl Conn {
    /// Its outgoing queue.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Queues one of the door's own frames (an answer to this connection).
    pub fn send(&self, frame: String) {
        let _ = self.outbox.offer(&Payload::from(frame));
    }

    /// The user it signed in as.
    pub fn user(&self) -> Option<Arc<str>> {
        self.user.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A subscription on one channel.
#[derive(Debug)]
struct Sub {
    conn: Arc<Conn>,
    /// Presence: the user this connection is a member as.
    user: Option<Arc<str>>,
    /// Cluster mode, presence: the channel's member version its member list was read
    /// at; a member event of that version or below is already in it.
    ver: u64,
}

/// A presence member: how many of its connections hold the channel, and its info.
#[derive(Debug)]
struct Present {
    conns: usize,
    info: Arc<str>,
}

#[derive(Debug, Default)]
struct Chan {
    subs: HashMap<u64, Sub>,
    members: HashMap<Arc<str>, Present>,
    /// A cache channel's last event (the frame as sent), and when it expires.
    cached: Option<(Payload, Instant)>,
}

impl Chan {
    fn removable(&self, now: Instant) -> bool {
        self.subs.is_empty() && self.cached.as_ref().is_none_or(|(_, until)| *until <= now)
    }
}

/// `(app id, channel name)`.
type Key = (Arc<str>, Arc<str>);

#[derive(Debug, Default)]
struct Shard {
    chans: HashMap<Key, Chan>,
}

/// What a subscription did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    /// The channel had no subscriber on this node before (for `channel_occupied`).
    pub occupied: bool,
    /// Presence: this user had no connection on the channel before (`member_added`
    /// went to the others).
    pub added: bool,
    /// A cache channel with nothing cached: `pusher:cache_miss` went to the connection.
    pub cache_miss: bool,
}

/// What an unsubscription did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Left {
    /// The connection held the channel (otherwise nothing changed).
    pub held: bool,
    /// Presence: the user the connection was a member as.
    pub user: Option<Arc<str>>,
    /// The channel has no subscriber left on this node.
    pub vacated: bool,
    /// Presence: the user's last connection left (`member_removed` went to the others).
    pub removed: Option<Arc<str>>,
}

/// Why a subscription was refused (the connection stays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeError {
    /// The presence channel has its most users already.
    MembersFull(usize),
    /// `user_info` over the app's limit.
    UserInfoTooLarge(usize),
    /// Cluster mode: Redis could not record it.
    Unavailable,
}

impl std::fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubscribeError::MembersFull(n) => {
                write!(f, "presence channel full (max {n} members)")
            }
            SubscribeError::UserInfoTooLarge(n) => write!(f, "user_info larger than {n} bytes"),
            SubscribeError::Unavailable => f.write_str("cluster unavailable (redis unreachable)"),
        }
    }
}

/// A channel's counts, for the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelInfo {
    /// Connections subscribed.
    pub subscriptions: usize,
    /// Presence: distinct users.
    pub users: usize,
}

/// The channels of every app on this node.
#[derive(Debug, Clone)]
pub struct Index {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shards: Box<[Mutex<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
    /// `(app, user)` → the connections signed in as that user.
    users: Mutex<HashMap<Key, Vec<Arc<Conn>>>>,
    /// Connections per app.
    per_app: Mutex<HashMap<Arc<str>, usize>>,
    /// This node's half of every `socket_id`.
    node: u64,
    next: AtomicU64,
    limits: QueueLimits,
    /// Cluster mode: presence members and cache entries are kept in Redis, so this index
    /// only delivers (member events arrive as events from the cluster).
    shared: AtomicBool,
    /// The apps' webhook receivers, told what the channels' owner decides (one node:
    /// `nodes::channels`; a cluster: its scripts).
    hooks: OnceLock<Arc<PusherHooks>>,
    /// Channels of apps with `subscription_count` whose count changed here since the
    /// last [`Index::take_counted`] (at most one entry per channel).
    counted: Mutex<HashSet<Key>>,
}

/// What a cluster knows of a channel when a connection subscribes to it (cluster mode).
#[derive(Debug, Clone, Default)]
pub struct Shared {
    /// Presence: every member on every node, `(user_id, user_info)`.
    pub roster: Vec<(String, String)>,
    /// A cache channel's last event, if still kept.
    pub cached: Option<Payload>,
    /// Presence: the member version the roster was read at (each member added or
    /// removed anywhere makes the next one), so a member event the roster already has
    /// is not sent again ([`Index::publish_member`]).
    pub version: u64,
}

impl Index {
    /// An empty index; each connection's queue has `limits`. `node` is the high half of
    /// every `socket_id` made here (the cluster gives each node its own).
    pub fn new(limits: QueueLimits, node: u64) -> Index {
        Index {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                hasher: Default::default(),
                users: Mutex::default(),
                per_app: Mutex::default(),
                node,
                next: AtomicU64::new(1),
                limits,
                shared: AtomicBool::new(false),
                hooks: OnceLock::new(),
                counted: Mutex::default(),
            }),
        }
    }

    /// Cluster mode: presence and cache are the cluster's ([`Shared`]); this index stops
    /// making member events and caching events itself.
    pub fn share(&self) {
        self.inner.shared.store(true, Relaxed);
    }

    /// Gives the apps' webhook receivers (once; later calls are ignored).
    pub fn set_hooks(&self, hooks: Arc<PusherHooks>) {
        let _ = self.inner.hooks.set(hooks);
    }

    /// The apps' webhook receivers, if the daemon serves Pusher apps.
    pub fn hooks(&self) -> Option<&Arc<PusherHooks>> {
        self.inner.hooks.get()
    }

    /// Notes that `channel`'s count changed, when its app wants counts told and the
    /// channel is not presence (whose members tell more).
    fn count_changed(&self, app: &App, channel: &Channel) {
        if app.subscription_count && channel.kind().access != crate::wire::pusher::Access::Presence
        {
            let mut counted = self.inner.counted.lock().unwrap_or_else(|e| e.into_inner());
            counted.insert((app.id.clone(), channel.shared_name().clone()));
        }
    }

    /// The channels whose count changed since the last call (see
    /// `nodes::Channels::tell_counts`).
    pub fn take_counted(&self) -> Vec<(Arc<str>, Arc<str>)> {
        let mut counted = self.inner.counted.lock().unwrap_or_else(|e| e.into_inner());
        counted.drain().collect()
    }

    /// Offers `frame` to every subscriber of `channel` on this node, without keeping it
    /// as a cache channel's last event (a count is no event of the app's).
    pub fn offer(&self, app: &Arc<str>, channel: &str, frame: &Payload) -> usize {
        let shard = self.shard(app, channel);
        shard
            .chans
            .get(&(app.clone(), Arc::from(channel)))
            .map_or(0, |chan| offer_all(chan, frame, None))
    }

    /// Whether [`Index::share`] was called.
    pub fn is_shared(&self) -> bool {
        self.inner.shared.load(Relaxed)
    }

    /// This index's node number (the high half of its `socket_id`s).
    pub fn node(&self) -> u64 {
        self.inner.node
    }

    /// A random node number (two nodes of a cluster sharing one are as likely as two
    /// random 50-bit numbers meeting); below 2^53, so a page's JavaScript could even read
    /// it as a number.
    pub fn random_node() -> u64 {
        let hasher = std::collections::hash_map::RandomState::new();
        hasher.hash_one(std::process::id()) % 1_000_000_000_000_000
    }

    fn shard(&self, app: &str, channel: &str) -> MutexGuard<'_, Shard> {
        let mut h = self.inner.hasher.build_hasher();
        app.hash(&mut h);
        channel.hash(&mut h);
        let i = (h.finish() as usize) % SHARDS;
        self.inner.shards[i]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection of `app`, or 4100 when the app holds its most connections.
    pub fn open(&self, app: &Arc<App>) -> Result<Arc<Conn>, Refusal> {
        {
            let mut per_app = self.inner.per_app.lock().unwrap_or_else(|e| e.into_inner());
            let n = per_app.entry(app.id.clone()).or_default();
            if *n >= app.max_connections {
                return Err(Refusal::with(
                    Code::OverCapacity,
                    format!("app over its {} connections", app.max_connections),
                ));
            }
            *n += 1;
        }
        Ok(Arc::new(Conn {
            socket_id: SocketId {
                high: self.inner.node,
                low: self.inner.next.fetch_add(1, Relaxed),
            },
            app: app.clone(),
            outbox: Outbox::new(self.inner.limits),
            user: Mutex::new(None),
        }))
    }

    /// The connection ended: its place in the app and its signin are given back (its
    /// channels are left by the door first).
    pub fn closed(&self, conn: &Arc<Conn>) {
        {
            let mut per_app = self.inner.per_app.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = per_app.get_mut(&conn.app.id) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_app.remove(&conn.app.id);
                }
            }
        }
        if let Some(user) = conn.user() {
            let key = (conn.app.id.clone(), user);
            let mut users = self.inner.users.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(list) = users.get_mut(&key) {
                list.retain(|c| !Arc::ptr_eq(c, conn));
                if list.is_empty() {
                    users.remove(&key);
                }
            }
        }
    }

    /// Connections of `app` on this node.
    pub fn connections(&self, app: &str) -> usize {
        let per_app = self.inner.per_app.lock().unwrap_or_else(|e| e.into_inner());
        per_app.get(app).copied().unwrap_or(0)
    }

    /// Records that `conn` signed in as `user` (once per connection: a second signin is
    /// the door's to refuse).
    pub fn signin(&self, conn: &Arc<Conn>, user: &str) {
        let user: Arc<str> = Arc::from(user);
        *conn.user.lock().unwrap_or_else(|e| e.into_inner()) = Some(user.clone());
        let mut users = self.inner.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .entry((conn.app.id.clone(), user))
            .or_default()
            .push(conn.clone());
    }

    /// Closes every connection signed in as `user` with `refusal`'s code and reason;
    /// answers how many.
    pub fn terminate(&self, app: &str, user: &str, refusal: &Refusal) -> usize {
        let conns = {
            let users = self.inner.users.lock().unwrap_or_else(|e| e.into_inner());
            users
                .get(&(Arc::from(app), Arc::from(user)))
                .cloned()
                .unwrap_or_default()
        };
        // The close frame carries the code and reason (a queued `pusher:error` would be
        // dropped with the queue: a terminated connection gets nothing more).
        let notice: CloseNotice = refusal.close_notice();
        conns
            .iter()
            .filter(|c| c.outbox.close(notice.clone()))
            .count()
    }

    /// Subscribes `conn` to `channel` (its signature already checked), as `member` on a
    /// presence channel. Under the channel's lock, so nothing published meanwhile comes
    /// before it: queues `pusher_internal:subscription_succeeded` (with the members), the
    /// cached event or `pusher:cache_miss` on a cache channel, and `member_added` to the
    /// others when the user is new to it. Subscribing again is answered again, and
    /// changes nothing.
    pub fn subscribe(
        &self,
        conn: &Arc<Conn>,
        channel: &Channel,
        member: Option<&Member>,
    ) -> Result<Subscribed, SubscribeError> {
        self.subscribe_with(conn, channel, member, None)
    }

    /// [`Index::subscribe`]; with `shared` (cluster mode), the members listed and the
    /// cached event are the cluster's, and no member event is made here.
    pub fn subscribe_with(
        &self,
        conn: &Arc<Conn>,
        channel: &Channel,
        member: Option<&Member>,
        shared: Option<Shared>,
    ) -> Result<Subscribed, SubscribeError> {
        let app = &conn.app;
        if let Some(m) = member
            && m.user_info.len() > app.max_user_info_bytes
        {
            return Err(SubscribeError::UserInfoTooLarge(app.max_user_info_bytes));
        }
        let now = Instant::now();
        let mut shard = self.shard(&app.id, channel.name());
        let chan = shard
            .chans
            .entry((app.id.clone(), channel.shared_name().clone()))
            .or_default();
        let id = conn.socket_id.low;
        let occupied = chan.subs.is_empty();
        let mut added = false;
        if !chan.subs.contains_key(&id) {
            let user: Option<Arc<str>> = member.map(|m| Arc::from(m.user_id.as_str()));
            if let (Some(m), Some(u)) = (member, &user) {
                match chan.members.get_mut(u) {
                    Some(p) => p.conns += 1,
                    None if shared.is_some() => {
                        chan.members.insert(
                            u.clone(),
                            Present {
                                conns: 1,
                                info: Arc::from(m.user_info.as_str()),
                            },
                        );
                    }
                    None => {
                        if chan.members.len() >= app.max_presence_members {
                            if chan.removable(now) {
                                shard
                                    .chans
                                    .remove(&(app.id.clone(), channel.shared_name().clone()));
                            }
                            return Err(SubscribeError::MembersFull(app.max_presence_members));
                        }
                        let frame = Payload::from(outbound::member_added(
                            channel.name(),
                            &m.user_id,
                            &m.user_info,
                        ));
                        for s in chan.subs.values() {
                            let _ = s.conn.outbox.offer_through(&frame);
                        }
                        chan.members.insert(
                            u.clone(),
                            Present {
                                conns: 1,
                                info: Arc::from(m.user_info.as_str()),
                            },
                        );
                        added = true;
                    }
                }
            }
            chan.subs.insert(
                id,
                Sub {
                    conn: conn.clone(),
                    user,
                    ver: shared.as_ref().map_or(0, |sh| sh.version),
                },
            );
            self.count_changed(app, channel);
        }
        let succeeded = if let (Some(_), Some(sh)) = (member, &shared) {
            outbound::presence_succeeded(
                channel.name(),
                sh.roster.iter().map(|(u, i)| (u.as_str(), i.as_str())),
            )
        } else if member.is_some() {
            outbound::presence_succeeded(
                channel.name(),
                chan.members.iter().map(|(u, p)| (&**u, &*p.info)),
            )
        } else {
            outbound::subscription_succeeded(channel.name())
        };
        conn.send(succeeded);
        let mut cache_miss = false;
        if channel.kind().cache {
            let cached = match &shared {
                Some(sh) => sh.cached.clone(),
                None => chan
                    .cached
                    .as_ref()
                    .filter(|(_, until)| *until > now)
                    .map(|(frame, _)| frame.clone()),
            };
            match cached {
                Some(frame) => {
                    let _ = conn.outbox.offer(&frame);
                }
                None => {
                    conn.send(outbound::cache_miss(channel.name()));
                    cache_miss = true;
                }
            }
        }
        Ok(Subscribed {
            occupied,
            added,
            cache_miss,
        })
    }

    /// Takes `conn` off `channel`; `member_removed` goes to the others when it was the
    /// user's last connection there.
    pub fn unsubscribe(&self, conn: &Arc<Conn>, channel: &Channel) -> Left {
        let app = &conn.app;
        let key = (app.id.clone(), channel.shared_name().clone());
        let mut shard = self.shard(&app.id, channel.name());
        let Some(chan) = shard.chans.get_mut(&key) else {
            return Left::default();
        };
        let Some(sub) = chan.subs.remove(&conn.socket_id.low) else {
            return Left::default();
        };
        self.count_changed(app, channel);
        let mut left = Left {
            held: true,
            user: sub.user.clone(),
            vacated: chan.subs.is_empty(),
            removed: None,
        };
        if let Some(user) = sub.user
            && let Some(p) = chan.members.get_mut(&user)
        {
            p.conns -= 1;
            if p.conns == 0 {
                chan.members.remove(&user);
                if !self.is_shared() {
                    let frame = Payload::from(outbound::member_removed(channel.name(), &user));
                    for s in chan.subs.values() {
                        let _ = s.conn.outbox.offer_through(&frame);
                    }
                }
                left.removed = Some(user);
            }
        }
        if chan.removable(Instant::now()) {
            shard.chans.remove(&key);
        }
        left
    }

    /// Offers `frame` (an event on `channel`, formatted once) to every subscriber of
    /// `channel` but `except`; a cache channel keeps it as its last event. Answers how
    /// many connections took it.
    pub fn publish(
        &self,
        app: &Arc<str>,
        channel: &Channel,
        frame: &Payload,
        except: Option<SocketId>,
    ) -> usize {
        let now = Instant::now();
        let mut shard = self.shard(app, channel.name());
        let key = (app.clone(), channel.shared_name().clone());
        if channel.kind().cache && !self.is_shared() {
            let chan = shard.chans.entry(key).or_default();
            chan.cached = Some((frame.clone(), now + CACHE_TTL));
            return offer_all(chan, frame, except);
        }
        match shard.chans.get(&key) {
            Some(chan) => offer_all(chan, frame, except),
            None => 0,
        }
    }

    /// Offers a member event of version `ver` (cluster mode) to the subscribers of
    /// `channel` but `except` whose member list was read before it: one read at `ver` or
    /// later already has the change. (Without it, a connection subscribing on another
    /// node between the script that adds a member and the arrival of its `member_added`
    /// would list the member and then be told it joined.)
    pub fn publish_member(
        &self,
        app: &Arc<str>,
        channel: &Channel,
        frame: &Payload,
        except: Option<SocketId>,
        ver: u64,
    ) -> usize {
        let shard = self.shard(app, channel.name());
        let Some(chan) = shard
            .chans
            .get(&(app.clone(), channel.shared_name().clone()))
        else {
            return 0;
        };
        chan.subs
            .values()
            .filter(|s| s.ver < ver && Some(s.conn.socket_id) != except)
            .filter(|s| {
                matches!(
                    s.conn.outbox.offer_through(frame),
                    Offer::Queued | Offer::Written
                )
            })
            .count()
    }

    /// Whether `conn` holds `channel` (a client event is relayed only from a member).
    pub fn holds(&self, conn: &Conn, channel: &str) -> bool {
        let shard = self.shard(&conn.app.id, channel);
        shard
            .chans
            .get(&(conn.app.id.clone(), Arc::from(channel)))
            .is_some_and(|c| c.subs.contains_key(&conn.socket_id.low))
    }

    /// One channel's counts (zero when nobody holds it).
    pub fn info(&self, app: &str, channel: &str) -> ChannelInfo {
        let shard = self.shard(app, channel);
        shard
            .chans
            .get(&(Arc::from(app), Arc::from(channel)))
            .map(counts)
            .unwrap_or_default()
    }

    /// Every occupied channel of `app` whose name starts with `prefix`, with its counts.
    pub fn list(&self, app: &str, prefix: &str) -> Vec<(String, ChannelInfo)> {
        let mut out = Vec::new();
        for shard in self.inner.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for ((a, name), chan) in &shard.chans {
                if &**a == app && name.starts_with(prefix) && !chan.subs.is_empty() {
                    out.push((name.to_string(), counts(chan)));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// A presence channel's user ids.
    pub fn users(&self, app: &str, channel: &str) -> Vec<String> {
        let shard = self.shard(app, channel);
        let mut users: Vec<String> = shard
            .chans
            .get(&(Arc::from(app), Arc::from(channel)))
            .map(|c| c.members.keys().map(|u| u.to_string()).collect())
            .unwrap_or_default();
        users.sort();
        users
    }

    /// Closes every connection holding a channel with `notice`; answers how many (cluster
    /// mode: this node's presence was taken away while it was cut off, so its pages
    /// reconnect and announce themselves again).
    pub fn close_all(&self, notice: &CloseNotice) -> usize {
        let mut conns: HashMap<u64, Arc<Conn>> = HashMap::new();
        for shard in self.inner.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for chan in shard.chans.values() {
                for (id, s) in &chan.subs {
                    conns.entry(*id).or_insert_with(|| s.conn.clone());
                }
            }
        }
        conns
            .values()
            .filter(|c| c.outbox.close(notice.clone()))
            .count()
    }

    /// Drops cache entries past their time on channels nobody holds; answers how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut dropped = 0;
        for shard in self.inner.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let before = shard.chans.len();
            shard.chans.retain(|_, c| !c.removable(now));
            dropped += before - shard.chans.len();
        }
        dropped
    }
}

fn counts(chan: &Chan) -> ChannelInfo {
    ChannelInfo {
        subscriptions: chan.subs.len(),
        users: chan.members.len(),
    }
}

fn offer_all(chan: &Chan, frame: &Payload, except: Option<SocketId>) -> usize {
    chan.subs
        .values()
        .filter(|s| Some(s.conn.socket_id) != except)
        .filter(|s| {
            matches!(
                s.conn.outbox.offer_through(frame),
                Offer::Queued | Offer::Written
            )
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> Arc<App> {
        let apps = Apps::parse(
            r#"{"apps":[{"id":"1","key":"k","secret":"0123456789abcdef","max_presence_members":2}]}"#,
        )
        .unwrap();
        apps.by_id("1").unwrap().clone()
    }

    fn drain(c: &Conn) -> Vec<String> {
        let mut batch = Vec::new();
        let _ = c.outbox.try_recv(&mut batch);
        batch
            .iter()
            .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned())
            .collect()
    }

    fn member(id: &str) -> Member {
        Member {
            user_id: id.into(),
            user_info: format!("{{\"name\":\"{id}\"}}"),
        }
    }

    #[tokio::test]
    async fn presence_counts_users_not_tabs() {
        let index = Index::new(
            QueueLimits {
                depth: 100,
                bytes: 1 << 20,
            },
            7,
        );
        let app = app();
        let ch = Channel::parse("presence-room").unwrap();
        let a1 = index.open(&app).unwrap();
        let a2 = index.open(&app).unwrap();
        let b = index.open(&app).unwrap();
        assert_eq!(a1.socket_id.high, 7);
        assert_ne!(a1.socket_id, a2.socket_id);
        let s = index.subscribe(&a1, &ch, Some(&member("a"))).unwrap();
        assert!(s.occupied && s.added);
        drain(&a1);
        let s = index.subscribe(&b, &ch, Some(&member("b"))).unwrap();
        assert!(!s.occupied && s.added);
        assert!(drain(&a1)[0].contains("member_added"));
        assert!(drain(&b)[0].contains("\"count\\\":2"));
        // A second tab of a: no member_added.
        let s = index.subscribe(&a2, &ch, Some(&member("a"))).unwrap();
        assert!(!s.added);
        assert!(drain(&b).is_empty());
        assert_eq!(
            index.info("1", "presence-room"),
            ChannelInfo {
                subscriptions: 3,
                users: 2
            }
        );
        // A third user: full.
        let c = index.open(&app).unwrap();
        assert_eq!(
            index.subscribe(&c, &ch, Some(&member("c"))),
            Err(SubscribeError::MembersFull(2))
        );
        // One tab of a leaves: no member_removed; the last one does.
        assert_eq!(index.unsubscribe(&a1, &ch).removed, None);
        assert!(drain(&b).is_empty());
        assert_eq!(index.unsubscribe(&a2, &ch).removed.as_deref(), Some("a"));
        assert!(drain(&b)[0].contains("member_removed"));
        assert_eq!(index.users("1", "presence-room"), vec!["b".to_string()]);
        assert!(index.unsubscribe(&b, &ch).vacated);
        assert_eq!(index.list("1", ""), vec![]);
        assert_eq!(index.connections("1"), 4);
        for c in [&a1, &a2, &b, &c] {
            index.closed(c);
        }
        assert_eq!(index.connections("1"), 0);
    }

    #[tokio::test]
    async fn cache_channels_replay_their_last_event() {
        let index = Index::new(
            QueueLimits {
                depth: 100,
                bytes: 1 << 20,
            },
            1,
        );
        let app = app();
        let ch = Channel::parse("cache-news").unwrap();
        let a = index.open(&app).unwrap();
        index.subscribe(&a, &ch, None).unwrap();
        let got = drain(&a);
        assert!(got[1].contains("pusher:cache_miss"), "{got:?}");
        let frame = Payload::from(outbound::event("e", "cache-news", "1"));
        assert_eq!(index.publish(&app.id, &ch, &frame, None), 1);
        index.unsubscribe(&a, &ch);
        let b = index.open(&app).unwrap();
        index.subscribe(&b, &ch, None).unwrap();
        let got = drain(&b);
        assert_eq!(got[1], outbound::event("e", "cache-news", "1"));
        assert_eq!(
            index.publish(&app.id, &ch, &frame, Some(b.socket_id)),
            0,
            "excluded"
        );
        index.unsubscribe(&b, &ch);
        assert_eq!(index.sweep(Instant::now()), 0);
        assert_eq!(index.sweep(Instant::now() + CACHE_TTL), 1);
    }
}
