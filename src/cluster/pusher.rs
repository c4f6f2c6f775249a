//! Pusher channels in cluster mode ([`ClusterChannels`]): this node's [`Index`] delivers
//! to its own connections, Redis keeps what must be the same on every node.
//!
//! # In Redis (every key from [`key`])
//! Per channel, in one hash slot `{<prefix>:p:APP:CHANNEL}` (`pw:p` by default), so one script changes them together:
//! `subs` (node → its subscriptions), `conns` (`user\0node` → that user's connections on
//! that node), `ucount` (user → connections on every node), `members` (user → user_info),
//! `cache` (a cache channel's last event, 30 minutes). Per app, `{…:APP}:chans`
//! (channel → nodes holding it) for the channel list; per node, `{…:node:N}:chans` (the
//! channels it touched) and `{…}:alive` (node → its deadline, Redis's clock), beaten every
//! second with a 3 s deadline by the one node heartbeat ([`beat_once`]).
//!
//! # Delivery
//! An event (from the HTTP API, a client event, a member event) is delivered here at once
//! and published once on `<prefix>:p:events`, which every node hears and delivers to its own
//! subscribers: every event reaches every node, as Reverb's Redis scaling does, so no
//! routing state can be stale. Events from one origin keep their order.
//!
//! # Presence exact across nodes
//! A member is a user with a connection on any node: the subscribe and unsubscribe
//! scripts count per user, so `member_added` goes out for the user's first connection
//! anywhere and `member_removed` for its last, and the member list is read in the same
//! script. A node killed with -9 stops beating: within
//! [`DEAD_AFTER`] + [`BEAT`] another node takes its counts back (one script per channel,
//! idempotent, under a lock) and publishes the `member_removed` events. A node whose key
//! expired while it was cut off closes its Pusher connections with 4200: pusher-js
//! reconnects at once and the members are announced again.

use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::interfaces::{
    ClientLike, EventInterface, HashesInterface, KeysInterface, LuaInterface, PubsubInterface,
    SetsInterface,
};
use fred::types::{Expiration, SetOptions, Value};
use tracing::{debug, warn};

use super::{Beat, Cluster, beat_once};
use crate::channels::{
    CACHE_TTL, ChannelInfo, Conn, Index, Left, Shared, SubscribeError, Subscribed,
};
use crate::nodes::{Answer, Channels, NodesError, count_hook, left_hooks, subscribed_hooks};
use crate::wire::Payload;
use crate::wire::pusher::codes::Code;
use crate::wire::pusher::outbound;
use crate::wire::pusher::{Channel, Member, Refusal, SocketId};

/// How often a node says it is alive.
pub const BEAT: Duration = Duration::from_secs(1);
/// How long a node is taken as alive after its last beat.
pub const DEAD_AFTER: Duration = Duration::from_secs(3);

/// In an event's channel place: not an event but "close this user's connections" (no
/// channel name can be it).
const TERMINATE: &str = "#terminate";

/// The pub/sub channel every node hears Pusher events on (`base`: `<prefix>:p`, from the
/// cluster's names, so `--redis-prefix` keeps clusters apart here too).
fn events_channel(base: &str) -> String {
    format!("{base}:events")
}

/// Every Redis key of Pusher channels, built here and only here: `part` under the hash
/// tag of `scope` (`["APP", "CHANNEL"]`, `["APP"]`, `["node", N]` or `[]`).
pub fn key(base: &str, scope: &[&str], part: &str) -> String {
    let mut tag = String::from(base);
    for s in scope {
        tag.push(':');
        tag.push_str(s);
    }
    format!("{{{tag}}}:{part}")
}

/// The six keys of a channel, in the scripts' order (`ver`: the member version).
fn channel_keys(base: &str, app: &str, channel: &str) -> Vec<String> {
    ["subs", "conns", "ucount", "members", "cache", "ver"]
        .iter()
        .map(|p| key(base, &[app, channel], p))
        .collect()
}

/// A subscription the connection already holds, answered again: the same answer as
/// [`SUB_SCRIPT`] without counting anything (counting it twice would leave a member
/// behind when the connection leaves once).
const AGAIN_SCRIPT: &str = r#"
local members = {}
if ARGV[2] ~= '' then members = redis.call('HGETALL', KEYS[4]) end
return {0, members, redis.call('GET', KEYS[5]), 0, tonumber(redis.call('GET', KEYS[6]) or '0')}
"#;

/// KEYS: subs, conns, ucount, members, cache, ver. ARGV: node, user ('' if not
/// presence), user_info, max members. Returns {added (1/0, -1: full), members flat...,
/// cache or false, occupied (1: the channel had no subscription on any node), the member
/// version the members were read at (a member added makes a new one: its event's)}.
const SUB_SCRIPT: &str = r#"
local node, user = ARGV[1], ARGV[2]
local added = 0
if user ~= '' then
  if redis.call('HEXISTS', KEYS[3], user) == 0 and redis.call('HLEN', KEYS[4]) >= tonumber(ARGV[4]) then
    return {-1, {}, false}
  end
  redis.call('HINCRBY', KEYS[2], user .. '\0' .. node, 1)
  if redis.call('HINCRBY', KEYS[3], user, 1) == 1 then
    redis.call('HSET', KEYS[4], user, ARGV[3])
    redis.call('INCR', KEYS[6])
    added = 1
  end
  redis.call('PEXPIRE', KEYS[6], 86400000)
end
local occupied = 0
if redis.call('HLEN', KEYS[1]) == 0 then occupied = 1 end
redis.call('HINCRBY', KEYS[1], node, 1)
local members = {}
if user ~= '' then members = redis.call('HGETALL', KEYS[4]) end
return {added, members, redis.call('GET', KEYS[5]), occupied, tonumber(redis.call('GET', KEYS[6]) or '0')}
"#;

/// KEYS: subs, conns, ucount, members, cache, ver. ARGV: node, user (''). Returns
/// {removed (1 if the user's last connection anywhere left), vacated (1 if the channel's
/// last subscription anywhere left), the removal's member version}. What a reaper already took back (this node was taken
/// for dead while cut off) is not taken twice: nothing is counted, nothing told.
const UNSUB_SCRIPT: &str = r#"
local node, user = ARGV[1], ARGV[2]
if redis.call('HEXISTS', KEYS[1], node) == 0 then return {0, 0, 0} end
if redis.call('HINCRBY', KEYS[1], node, -1) <= 0 then redis.call('HDEL', KEYS[1], node) end
local vacated = 0
if redis.call('HLEN', KEYS[1]) == 0 then vacated = 1 end
if user == '' then return {0, vacated, 0} end
local field = user .. '\0' .. node
if redis.call('HEXISTS', KEYS[2], field) == 0 then return {0, vacated, 0} end
if redis.call('HINCRBY', KEYS[2], field, -1) <= 0 then redis.call('HDEL', KEYS[2], field) end
if redis.call('HINCRBY', KEYS[3], user, -1) <= 0 then
  redis.call('HDEL', KEYS[3], user)
  redis.call('HDEL', KEYS[4], user)
  local ver = redis.call('INCR', KEYS[6])
  redis.call('PEXPIRE', KEYS[6], 86400000)
  return {1, vacated, ver}
end
return {0, vacated, 0}
"#;

/// KEYS: subs, conns, ucount, members, cache, ver. ARGV: a dead node. Takes back its
/// counts; returns {the users that left with it, vacated (1 if it held the channel's last
/// subscriptions), each removal's member version}. Running it twice takes nothing the
/// second time.
const DROP_NODE_SCRIPT: &str = r#"
local node = ARGV[1]
local vacated = 0
if redis.call('HDEL', KEYS[1], node) == 1 and redis.call('HLEN', KEYS[1]) == 0 then vacated = 1 end
local suffix = '\0' .. node
local gone, vers = {}, {}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local field, n = all[i], tonumber(all[i + 1])
  if string.sub(field, -#suffix) == suffix then
    redis.call('HDEL', KEYS[2], field)
    local user = string.sub(field, 1, #field - #suffix)
    if redis.call('HINCRBY', KEYS[3], user, -n) <= 0 then
      redis.call('HDEL', KEYS[3], user)
      redis.call('HDEL', KEYS[4], user)
      table.insert(gone, user)
      table.insert(vers, redis.call('INCR', KEYS[6]))
      redis.call('PEXPIRE', KEYS[6], 86400000)
    end
  end
end
return {gone, vacated, vers}
"#;

/// KEYS: subs, members. Returns {subscriptions, users}.
const INFO_SCRIPT: &str = r#"
local n = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do n = n + tonumber(v) end
return {n, redis.call('HLEN', KEYS[2])}
"#;

/// Pusher channels over every node.
#[derive(Debug)]
pub struct ClusterChannels {
    index: Index,
    cluster: Arc<Cluster>,
    /// This node's name in Redis (its index's node number).
    node: String,
    /// `<prefix>:p`: what every Pusher key's hash tag and the events channel start with.
    base: String,
    /// It is in `{…}:nodes` with an alive key: only then may it count anything in
    /// Redis, or a death before its first beat would leave its counts forever.
    registered: std::sync::atomic::AtomicBool,
    /// Its subscriber is subscribed to the events channel: until then events from the
    /// other nodes would be lost, so the node is not ready (`/readyz`).
    hearing: std::sync::atomic::AtomicBool,
}

impl ClusterChannels {
    /// Shares `index` with the cluster and starts hearing the other nodes' events and
    /// keeping this node alive (background tasks, ended with the cluster).
    pub fn start(cluster: Arc<Cluster>, index: Index) -> Arc<ClusterChannels> {
        index.share();
        let node = index.node().to_string();
        let me = Arc::new(ClusterChannels {
            index,
            base: cluster.pusher_base(),
            cluster,
            node,
            registered: std::sync::atomic::AtomicBool::new(false),
            hearing: std::sync::atomic::AtomicBool::new(false),
        });
        let sub = me.cluster.sub.clone_new();
        tokio::spawn(hear(me.clone(), sub));
        tokio::spawn(live(me.clone()));
        me
    }

    /// Why this node cannot take part in Pusher channels yet (`/readyz`).
    pub fn trouble(&self) -> Option<&'static str> {
        let hearing = self.hearing.load(std::sync::atomic::Ordering::Relaxed);
        (!hearing).then_some("not yet subscribed to the other nodes' Pusher events")
    }

    /// Runs `f` against Redis within the cluster timeout.
    async fn bounded<T>(
        &self,
        f: impl Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, NodesError> {
        match tokio::time::timeout(self.cluster.timeout, f).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => {
                debug!(%e, "pusher redis call failed");
                Err(NodesError::Unavailable)
            }
            Err(_) => Err(NodesError::Unavailable),
        }
    }

    /// Says this node is alive (and known to the others) until [`DEAD_AFTER`] from now;
    /// returns whether it was still known (not reaped, Redis did not lose it) and the
    /// other nodes past their deadline.
    async fn beat(&self) -> Result<(bool, Vec<String>), NodesError> {
        let alive = key(&self.base, &[], "alive");
        let beat = beat_once(
            &self.cluster.cmd,
            alive,
            None,
            &self.node,
            DEAD_AFTER,
            2 * BEAT,
        );
        let Beat { known, dead, .. } = self.bounded(beat).await?;
        self.registered
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok((known, dead))
    }

    /// Delivers `frame` here and publishes it to the other nodes.
    async fn fan_out(
        &self,
        app: &str,
        channel: &Channel,
        frame: &Payload,
        except: Option<SocketId>,
    ) -> Result<usize, NodesError> {
        self.fan_out_versioned(app, channel, frame, except, None)
            .await
    }

    /// [`Self::fan_out`] of a member event of version `ver`: each node gives it only to
    /// the connections whose member list was read before it ([`Index::publish_member`]).
    async fn fan_out_versioned(
        &self,
        app: &str,
        channel: &Channel,
        frame: &Payload,
        except: Option<SocketId>,
        ver: Option<u64>,
    ) -> Result<usize, NodesError> {
        let app_id: Arc<str> = Arc::from(app);
        let here = match ver {
            Some(v) => self
                .index
                .publish_member(&app_id, channel, frame, except, v),
            None => self.index.publish(&app_id, channel, frame, except),
        };
        let except = except.map_or(String::from("-"), |s| s.to_string());
        let ver = ver.map_or(String::from("-"), |v| v.to_string());
        let mut msg = Vec::with_capacity(frame.len() + 64);
        for part in [&self.node, app, channel.name(), &except, &ver] {
            msg.extend_from_slice(part.as_bytes());
            msg.push(0x1f);
        }
        msg.extend_from_slice(frame.as_bytes());
        let cmd = &self.cluster.cmd;
        self.bounded(cmd.publish::<i64, _, _>(events_channel(&self.base), msg))
            .await?;
        Ok(here)
    }

    /// The channel's occupancy changed on this node: the app's list and this node's
    /// record follow.
    async fn occupancy(&self, app: &str, channel: &str, occupied: bool) -> Result<(), NodesError> {
        let cmd = &self.cluster.cmd;
        let chans = key(&self.base, &[app], "chans");
        if occupied {
            let mine = key(&self.base, &["node", &self.node], "chans");
            self.bounded(cmd.sadd::<i64, _, _>(mine, format!("{app}\x1f{channel}")))
                .await?;
            self.bounded(cmd.hincrby::<i64, _, _>(chans, channel, 1))
                .await?;
        } else {
            let n = self
                .bounded(cmd.hincrby::<i64, _, _>(chans.clone(), channel, -1))
                .await?;
            if n <= 0 {
                self.bounded(cmd.hdel::<i64, _, _>(chans, channel)).await?;
            }
        }
        Ok(())
    }

    async fn subscribe_async(
        self: Arc<Self>,
        conn: Arc<Conn>,
        channel: Channel,
        member: Option<Member>,
    ) -> Result<Subscribed, SubscribeError> {
        let app = conn.app.clone();
        let keys = channel_keys(&self.base, &app.id, channel.name());
        let (user, info) = member
            .as_ref()
            .map_or(("", "null"), |m| (m.user_id.as_str(), m.user_info.as_str()));
        if info.len() > app.max_user_info_bytes {
            return Err(SubscribeError::UserInfoTooLarge(app.max_user_info_bytes));
        }
        let args = vec![
            self.node.clone(),
            user.to_owned(),
            info.to_owned(),
            app.max_presence_members.to_string(),
        ];
        if !self.registered.load(std::sync::atomic::Ordering::Relaxed) {
            self.beat().await.map_err(|_| SubscribeError::Unavailable)?;
        }
        let cmd = &self.cluster.cmd;
        let again = self.index.holds(&conn, channel.name());
        let script = if again { AGAIN_SCRIPT } else { SUB_SCRIPT };
        let answer: Value = self
            .bounded(cmd.eval(script, keys, args))
            .await
            .map_err(|_| SubscribeError::Unavailable)?;
        let mut parts = answer.into_array().into_iter();
        let added = parts.next().and_then(|v| v.as_i64()).unwrap_or(0);
        if added < 0 {
            return Err(SubscribeError::MembersFull(app.max_presence_members));
        }
        let flat: Vec<String> = parts
            .next()
            .map(|v| {
                v.into_array()
                    .into_iter()
                    .filter_map(|s| s.into_string())
                    .collect()
            })
            .unwrap_or_default();
        let roster = flat
            .chunks(2)
            .filter(|p| p.len() == 2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect();
        let cached = parts
            .next()
            .and_then(|v| v.into_string())
            .map(Payload::from);
        let occupied = parts.next().and_then(|v| v.as_i64()) == Some(1);
        let version = parts.next().and_then(|v| v.as_u64()).unwrap_or(0);
        let shared = Shared {
            roster,
            cached,
            version,
        };
        let done = self
            .index
            .subscribe_with(&conn, &channel, member.as_ref(), Some(shared));
        if let Ok(s) = &done {
            if s.occupied {
                let _ = self.occupancy(&app.id, channel.name(), true).await;
            }
            if let (true, Some(m)) = (added == 1, &member) {
                let frame = Payload::from(outbound::member_added(
                    channel.name(),
                    &m.user_id,
                    &m.user_info,
                ));
                // The script's version is this addition's (read after its INCR).
                let _ = self
                    .fan_out_versioned(
                        &app.id,
                        &channel,
                        &frame,
                        Some(conn.socket_id),
                        Some(version),
                    )
                    .await;
            }
        }
        // What the script decided, once for the cluster, is what the hooks are told.
        let done = done.map(|s| Subscribed {
            added: added == 1,
            occupied,
            ..s
        });
        if let Ok(s) = &done {
            let user = member.as_ref().map(|m| m.user_id.as_str());
            subscribed_hooks(&self.index, &app.id, channel.name(), s, user);
        }
        done
    }

    async fn unsubscribe_async(self: Arc<Self>, conn: Arc<Conn>, channel: Channel) -> Left {
        let left = self.index.unsubscribe(&conn, &channel);
        let app = conn.app.clone();
        let user = left.user.clone();
        let keys = channel_keys(&self.base, &app.id, channel.name());
        let args = vec![self.node.clone(), user.as_deref().unwrap_or("").to_owned()];
        let cmd = &self.cluster.cmd;
        if !left.held {
            return left;
        }
        let (removed, vacated, ver) = match self
            .bounded(cmd.eval::<Vec<i64>, _, _, _>(UNSUB_SCRIPT, keys, args))
            .await
        {
            Ok(v) => (
                v.first() == Some(&1),
                v.get(1) == Some(&1),
                v.get(2).copied().unwrap_or(0).max(0) as u64,
            ),
            Err(_) => {
                debug!("pusher unsubscribe not recorded in redis");
                (false, false, 0)
            }
        };
        let removed = user.filter(|_| removed);
        if let Some(u) = &removed {
            let frame = Payload::from(outbound::member_removed(channel.name(), u));
            let _ = self
                .fan_out_versioned(&app.id, &channel, &frame, None, Some(ver))
                .await;
        }
        if left.vacated {
            let _ = self.occupancy(&app.id, channel.name(), false).await;
        }
        left_hooks(
            &self.index,
            &app.id,
            channel.name(),
            removed.as_deref(),
            vacated,
        );
        Left {
            removed,
            vacated,
            ..left
        }
    }

    /// Takes back what node `dead` held, once: its members leave (announced) and its
    /// channels are no longer listed for it.
    async fn reap(&self, dead: &str) -> Result<(), NodesError> {
        let cmd = &self.cluster.cmd;
        let lock = key(&self.base, &[], &format!("reaping:{dead}"));
        let won: Option<String> = self
            .bounded(cmd.set(
                lock,
                &self.node,
                Some(Expiration::PX(10_000)),
                Some(SetOptions::NX),
                false,
            ))
            .await?;
        if won.is_none() {
            return Ok(());
        }
        let theirs = key(&self.base, &["node", dead], "chans");
        let chans: Vec<String> = self.bounded(cmd.smembers(theirs.clone())).await?;
        for entry in &chans {
            let Some((app, name)) = entry.split_once('\x1f') else {
                continue;
            };
            let keys = channel_keys(&self.base, app, name);
            let answer: Value = self
                .bounded(cmd.eval(DROP_NODE_SCRIPT, keys, vec![dead.to_owned()]))
                .await?;
            let mut parts = answer.into_array().into_iter();
            let gone: Vec<String> = parts
                .next()
                .map(|v| {
                    v.into_array()
                        .into_iter()
                        .filter_map(|s| s.into_string())
                        .collect()
                })
                .unwrap_or_default();
            let vacated = parts.next().and_then(|v| v.as_i64()) == Some(1);
            let vers: Vec<u64> = parts
                .next()
                .map(|v| {
                    v.into_array()
                        .into_iter()
                        .filter_map(|n| n.as_u64())
                        .collect()
                })
                .unwrap_or_default();
            let counts = key(&self.base, &[app], "chans");
            let n = self
                .bounded(cmd.hincrby::<i64, _, _>(counts.clone(), name, -1))
                .await?;
            if n <= 0 {
                self.bounded(cmd.hdel::<i64, _, _>(counts, name)).await?;
            }
            // The dead node cannot tell its departures: the one reaper does, once, as
            // soon as the script decided them (before anything below may fail).
            for user in &gone {
                left_hooks(&self.index, app, name, Some(user), false);
            }
            left_hooks(&self.index, app, name, None, vacated);
            if let Ok(channel) = Channel::parse(name) {
                for (i, user) in gone.iter().enumerate() {
                    let frame = Payload::from(outbound::member_removed(name, user));
                    let ver = vers.get(i).copied();
                    self.fan_out_versioned(app, &channel, &frame, None, ver)
                        .await?;
                }
            }
        }
        self.bounded(cmd.del::<i64, _>(theirs)).await?;
        self.bounded(cmd.hdel::<i64, _, _>(key(&self.base, &[], "alive"), dead))
            .await?;
        if !chans.is_empty() {
            warn!(
                node = dead,
                channels = chans.len(),
                "a node stopped beating: its Pusher members are removed"
            );
        }
        Ok(())
    }
}

/// Hears the other nodes' events and delivers them here.
async fn hear(me: Arc<ClusterChannels>, sub: SubscriberClient) {
    let stop = me.cluster.stop.clone();
    let mut rx = sub.message_rx();
    tokio::spawn(super::keep_connected(
        sub.clone(),
        "pusher events",
        stop.clone(),
    ));
    loop {
        if sub.is_connected() && sub.subscribe(events_channel(&me.base)).await.is_ok() {
            // From now on fred subscribes again after each reconnect.
            drop(sub.manage_subscriptions());
            me.hearing.store(true, std::sync::atomic::Ordering::Relaxed);
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = stop.cancelled() => return,
        }
    }
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            () = stop.cancelled() => { let _ = sub.quit().await; return; }
        };
        let msg = match msg {
            Ok(msg) => msg,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                warn!(
                    lost = n,
                    "Pusher events from other nodes lost (--cluster-message-buffer)"
                );
                continue;
            }
            Err(_) => return,
        };
        let Some(bytes) = msg.value.as_bytes() else {
            continue;
        };
        let mut parts = bytes.splitn(5, |b| *b == 0x1f);
        let (Some(origin), Some(app), Some(name), Some(except), Some(frame)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            continue;
        };
        if origin == me.node.as_bytes() {
            continue;
        }
        let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
        let (Some(app), Some(name), Some(except)) = (text(app), text(name), text(except)) else {
            continue;
        };
        if name == TERMINATE {
            // `except` is the user, `frame` the reason.
            let why = String::from_utf8_lossy(frame).into_owned();
            me.index
                .terminate(&app, &except, &Refusal::with(Code::Unauthorized, why));
            continue;
        }
        // An event's rest is `VER\x1fFRAME` (VER `-`, or a member event's version).
        let Some(at) = frame.iter().position(|b| *b == 0x1f) else {
            continue;
        };
        let (ver, frame) = (&frame[..at], &frame[at + 1..]);
        let ver: Option<u64> = std::str::from_utf8(ver).ok().and_then(|v| v.parse().ok());
        let Ok(channel) = Channel::parse(&name) else {
            continue;
        };
        let Ok(frame) = Payload::new(bytes::Bytes::copy_from_slice(frame)) else {
            continue;
        };
        let except = SocketId::parse(&except);
        let app: Arc<str> = Arc::from(app.as_str());
        match ver {
            Some(v) => me.index.publish_member(&app, &channel, &frame, except, v),
            None => me.index.publish(&app, &channel, &frame, except),
        };
    }
}

/// Says this node is alive every [`BEAT`]; reaps the nodes that stopped; closes this
/// node's Pusher connections if its own key had expired (it was cut off and reaped).
async fn live(me: Arc<ClusterChannels>) {
    let stop = me.cluster.stop.clone();
    let alive = key(&me.base, &[], "alive");
    // The first beat as soon as the link is up, then one per [`BEAT`].
    let mut wait = Duration::from_millis(50);
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => {
                // A deadline in the past, not no entry: the next node to beat reaps this
                // one's members at once (an entry removed would never be reaped).
                let cmd = &me.cluster.cmd;
                let _ = tokio::time::timeout(me.cluster.timeout, async {
                    let _: Result<i64, _> = cmd.hset(alive.clone(), (me.node.as_str(), 0)).await;
                })
                .await;
                return;
            }
        }
        if !me.cluster.is_up() {
            wait = Duration::from_millis(50);
            continue;
        }
        wait = BEAT;
        let was_registered = me.registered.load(std::sync::atomic::Ordering::Relaxed);
        let Ok((was_alive, dead)) = me.beat().await else {
            continue;
        };
        if was_registered && !was_alive {
            let notice =
                Refusal::with(Code::Reconnect, "cluster link lost: reconnect").close_notice();
            let closed = me.index.close_all(&notice);
            warn!(
                closed,
                "this node was cut off from Redis long enough to be taken for dead: its Pusher connections reconnect"
            );
        }
        for node in &dead {
            if let Err(e) = me.reap(node).await {
                debug!(%e, node, "reaping a dead node's Pusher members failed; retried");
            }
        }
    }
}

impl Channels for Arc<ClusterChannels> {
    fn index(&self) -> &Index {
        &self.index
    }

    fn subscribe(
        &self,
        conn: &Arc<Conn>,
        channel: &Channel,
        member: Option<&Member>,
    ) -> Answer<Result<Subscribed, SubscribeError>> {
        let fut = self
            .clone()
            .subscribe_async(conn.clone(), channel.clone(), member.cloned());
        Answer::barrier(async move { Answer::Now(fut.await) })
    }

    fn unsubscribe(&self, conn: &Arc<Conn>, channel: &Channel) -> Answer<Left> {
        let fut = self
            .clone()
            .unsubscribe_async(conn.clone(), channel.clone());
        Answer::barrier(async move { Answer::Now(fut.await) })
    }

    fn publish(
        &self,
        app: &Arc<str>,
        channel: &Channel,
        frame: &Payload,
        except: Option<SocketId>,
    ) -> Answer<Result<usize, NodesError>> {
        let (me, app, channel, frame) = (self.clone(), app.clone(), channel.clone(), frame.clone());
        Answer::barrier(async move {
            if channel.kind().cache {
                let cache = key(&me.base, &[&app, channel.name()], "cache");
                let _ = me
                    .bounded(me.cluster.cmd.set::<(), _, _>(
                        cache,
                        frame.as_bytes(),
                        Some(Expiration::PX(CACHE_TTL.as_millis() as i64)),
                        None,
                        false,
                    ))
                    .await;
            }
            Answer::Now(me.fan_out(&app, &channel, &frame, except).await)
        })
    }

    fn info(&self, app: &str, channel: &str) -> Answer<Result<ChannelInfo, NodesError>> {
        let me = self.clone();
        let keys = vec![
            key(&me.base, &[app, channel], "subs"),
            key(&me.base, &[app, channel], "members"),
        ];
        Answer::barrier(async move {
            let r: Result<Vec<i64>, _> = me
                .bounded(me.cluster.cmd.eval(INFO_SCRIPT, keys, Vec::<String>::new()))
                .await;
            Answer::Now(r.map(|v| ChannelInfo {
                subscriptions: v.first().copied().unwrap_or(0).max(0) as usize,
                users: v.get(1).copied().unwrap_or(0).max(0) as usize,
            }))
        })
    }

    fn list(
        &self,
        app: &str,
        prefix: &str,
    ) -> Answer<Result<Vec<(String, ChannelInfo)>, NodesError>> {
        let (me, app, prefix) = (self.clone(), app.to_owned(), prefix.to_owned());
        Answer::barrier(async move {
            let r = async {
                let all: std::collections::HashMap<String, i64> = me
                    .bounded(me.cluster.cmd.hgetall(key(&me.base, &[&app], "chans")))
                    .await?;
                let mut names: Vec<String> = all
                    .into_iter()
                    .filter(|(n, c)| *c > 0 && n.starts_with(&prefix))
                    .map(|(n, _)| n)
                    .collect();
                names.sort();
                let mut out = Vec::with_capacity(names.len());
                for name in names {
                    let info = me.info(&app, &name).resolve().await?;
                    if info.subscriptions > 0 {
                        out.push((name, info));
                    }
                }
                Ok(out)
            };
            Answer::Now(r.await)
        })
    }

    fn users(&self, app: &str, channel: &str) -> Answer<Result<Vec<String>, NodesError>> {
        let me = self.clone();
        let members = key(&me.base, &[app, channel], "members");
        Answer::barrier(async move {
            let r: Result<Vec<String>, _> = me.bounded(me.cluster.cmd.hkeys(members)).await;
            Answer::Now(r.map(|mut u| {
                u.sort();
                u
            }))
        })
    }

    fn tell_counts(&self) -> Answer<()> {
        let counted = self.index.take_counted();
        if counted.is_empty() {
            return Answer::Now(());
        }
        let me = self.clone();
        Answer::barrier(async move {
            for (app, name) in counted {
                // The count every node's subscribers make, read after this node's change.
                let Ok(info) = me.info(&app, &name).resolve().await else {
                    continue;
                };
                let Ok(channel) = Channel::parse(&name) else {
                    continue;
                };
                let count = info.subscriptions;
                let frame = Payload::from(outbound::subscription_count(&name, count as u64));
                let _ = me.fan_out(&app, &channel, &frame, None).await;
                count_hook(&me.index, &app, &name, count);
            }
            Answer::Now(())
        })
    }

    fn terminate(&self, app: &str, user: &str, refusal: &Refusal) -> Answer<usize> {
        let here = self.index.terminate(app, user, refusal);
        let me = self.clone();
        // Every node closes its own connections of the user: a terminate message.
        let msg = format!(
            "{}\x1f{app}\x1f{TERMINATE}\x1f{user}\x1f{}",
            me.node, refusal.message
        );
        Answer::barrier(async move {
            let _ = me
                .bounded(
                    me.cluster
                        .cmd
                        .publish::<i64, _, _>(events_channel(&me.base), msg),
                )
                .await;
            Answer::Now(here)
        })
    }
}
