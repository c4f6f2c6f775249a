//! Cluster mode on Redis (`--redis URL`): several nodes, one truthful answer.
//!
//! # Message flow
//! - A node **subscribes** (sharded pub/sub, `SSUBSCRIBE pw:u:<uid>`) to a uid's channel
//!   exactly while it holds a connection of that uid, and always to its own reply channel
//!   `pw:r:<node>`. The registry tells it when a uid comes or goes ([`Presence`](crate::registry::Presence)); one
//!   task reconciles subscriptions in order.
//! - A **push** to a uid is delivered to this node's connections of it at once, then
//!   published (`SPUBLISH pw:u:<uid>`) with this node's id and a request number. Redis
//!   answers with how many subscribers got it: every other holder replies on the
//!   origin's reply channel with how many of its connections queued it and how many
//!   refused; the origin's own copy is counted in-process. The backend's reply waits
//!   (at most `--cluster-timeout-ms`) for exactly that many answers, so `ok` means a
//!   holder's queue took the message, not that Redis did.
//! - **Order**: every publish of a node goes through one task that sends them in order,
//!   batched in one pipeline per wake-up, so pushes from one backend connection to one
//!   uid reach every holder in the order they were sent.
//! - **Redis unreachable**: local delivery goes on; a publish that fails or times out
//!   leaves the reply to local delivery (a plain line answers `fail` if nothing here took
//!   it). `/push` says `unavailable` only for a publish that never left this node (Redis
//!   known down or not answering, the queue full, its wait over before it was taken, or
//!   the client refused it unwritten), and `partial` for one handed to the Redis client
//!   and unanswered (in doubt: Redis may have run it, or the client may write it after
//!   reconnecting). The client reconnects with exponential backoff and jitter and
//!   re-subscribes everything (fred's `manage_subscriptions`).
//! - **Redis not answering** (stopped, paused, a cut link): an open connection is not a
//!   Redis that answers. A probe or a publish left unanswered for the timeout makes the
//!   node count Redis as down until a probe is answered ([`link::probe`]): no more pushes are
//!   written (so the doubt is one batch, not the whole stall), replies come at once,
//!   `/readyz` says degraded. A cut link's connections are closed by the kernel within
//!   the link timeout and opened again ([`link::link_tcp`]).
//! - **Redis that lost its data** (restarted without persistence): each node raises a
//!   counter on every primary with each beat; one that went back is logged, and v1 tabs
//!   resync ([`liveness::check_epochs`]).
//!
//! # Files, one concern each
//! - `mod.rs`: the [`Cluster`] handle (this node's link to the cluster), its
//!   configuration, start and stop.
//! - `nodes.rs`: [`ClusterNodes`], cluster mode as the service's `Nodes`.
//! - `names.rs`: every Redis key and channel name, under `--redis-prefix`.
//! - `envelope.rs`: the node protocol on the wire (requests, answers, `/uids` pages), no I/O.
//! - `asks.rs`: asking the nodes and counting their answers (pushes, kicks, presence,
//!   broadcasts).
//! - `publisher.rs`: the one ordered writer of this node's publishes and scripts.
//! - `listener.rs`: what arrives on the subscribed channels, answered by this node's registry.
//! - `subscriptions.rs`: listening on a uid's channel exactly while a connection of it is here.
//! - `online.rs`: the distinct uids online cluster-wide (`/count`).
//! - `uids.rs`: the cluster-wide `/uids` walk.
//! - `groups.rs`: groups in Redis, and the grace sweeper.
//! - `relay.rs`: events decided by a node without receivers, for one that has some.
//! - `claims.rs`: the cluster-wide `/push` retry key.
//! - `history/`: protocol v1 history in Redis (`scripts.rs`: its keys' slots, Lua and
//!   parsing, no I/O; `ledger.rs`: the histories this node counts, `--history-max-uids`).
//! - `acks.rs`: end-to-end acks recorded in Redis, and counted.
//! - `link.rs`: the two Redis clients kept connected, and whether Redis answers.
//! - `liveness.rs`: node beats, reaping a node cut off, noticing Redis lost its data.

mod acks;
mod addressed;
mod asks;
mod claims;
mod envelope;
mod groups;
mod history;
mod link;
mod listener;
mod liveness;
mod names;
mod nodes;
mod online;
mod publisher;
mod pusher;
mod relay;
mod subscriptions;
mod uids;

pub use addressed::AddressedLink;
pub use asks::Remote;
pub use claims::RemoteClaim;
pub use groups::ClusterGroupError;
use names::Names;
pub use nodes::ClusterNodes;
pub use uids::UidsError;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, HashesInterface};
use fred::types::config::{Config as RedisConfig, ReconnectPolicy};
use fred::types::{Builder, Value};
use tokio::sync::{Notify, mpsc};
use tracing::info;

use crate::config::RedisPrefix;
use crate::events::Hub;
use crate::groups::GroupLimits;
use crate::history::HistoryLimits;
use crate::registry::{ConnId, Registry};
use crate::wire::Uid;
use crate::wire::envelope::Position;
use asks::Waiting;
use groups::sweep;
use history::keep_histories;
pub(crate) use link::node_id;
use link::{count_replaced, keep_connected, link_tcp, probe, redacted, report_errors, watch};
use listener::listen;
use liveness::beat;
pub use liveness::{Beat, beat_once};
use publisher::{Outgoing, publisher};
use subscriptions::reconcile;

/// How the cluster is reached and how long a reply may wait for it.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://host:port[/db]` or `rediss://` (TLS).
    pub url: String,
    /// What every key and channel name starts with (`--redis-prefix`).
    pub prefix: RedisPrefix,
    /// Longest a reply waits for Redis and the holders' answers; Redis not answering for
    /// this long is taken as down until it answers again ([`link::probe`]).
    pub timeout: Duration,
    /// Longest a connection to Redis may take to open, or go with its data
    /// unacknowledged before the kernel closes it ([`link::link_tcp`]).
    pub link_timeout: Duration,
    /// Publishes that may wait for the publisher task; past it a push is answered from
    /// local delivery alone (as if Redis were down), so memory stays bounded.
    pub publish_queue: usize,
    /// Messages from Redis buffered for the handling task (fred's broadcast channel);
    /// past it the oldest are lost, and logged.
    pub message_buffer: usize,
    /// Group bounds and the offline grace period, the same as a single node's.
    pub groups: GroupLimits,
    /// Protocol v1 history bounds; `None` with history off. On, every push to a uid goes
    /// through Redis's numbering script (`cluster/history/scripts.rs`).
    pub history: Option<HistoryLimits>,
}

/// This node's link to the cluster.
#[derive(Debug)]
pub struct Cluster {
    node: String,
    /// Every key and channel name, under `--redis-prefix`.
    names: Names,
    /// `node` as a script argument, shared by every push's.
    node_arg: Value,
    timeout: Duration,
    groups: GroupLimits,
    history: Option<HistoryLimits>,
    /// The push script's SHA-1, once Redis told it (`SCRIPT LOAD`).
    push_sha: Mutex<Option<String>>,
    registry: Registry,
    cmd: Client,
    sub: SubscriberClient,
    publish: mpsc::Sender<Outgoing>,
    /// When a full publish queue was last logged (once a minute at most).
    queue_full_logged: Mutex<Option<tokio::time::Instant>>,
    waiting: Mutex<HashMap<u64, Waiting>>,
    next_req: AtomicU64,
    /// Uids whose subscription may be out of date; the reconciling task drains it.
    dirty: Mutex<HashSet<Uid>>,
    wake: Notify,
    /// Uid channels this node is subscribed to (as far as Redis has confirmed), in
    /// cluster-wide `/uids` order: by [`envelope::uid_hash`], then uid.
    subscribed: Mutex<BTreeSet<(u32, Uid)>>,
    /// Connected, and subscribed to this node's reply channel: only then may a push be
    /// published (a holder's answer sent before that would be lost, and a push that was
    /// delivered would be answered `fail`).
    up: AtomicBool,
    /// Redis answered within `timeout` when last asked ([`link::probe`], the publisher): a
    /// connection that stays open to a Redis that does not answer (stopped, paused, or a
    /// cut link TCP has not given up on yet) counts as down, so no more pushes are written
    /// to it and replies are given at once.
    answering: AtomicBool,
    /// Each primary's data epoch as this node last raised it, by a slot the primary
    /// serves ([`liveness::check_epochs`]): one not above it means that primary lost its data.
    epochs: Mutex<HashMap<u16, u64>>,
    /// Ends the background tasks ([`Cluster::stop`]).
    stop: tokio_util::sync::CancellationToken,
    /// `--history-max-uids` here: the histories this node made or keeps alive
    /// (`history/ledger.rs`).
    ledger: Mutex<history::Ledger>,
    /// Connections with an ack record in flight, and the latest ack each sent since
    /// (sent when the record in flight is done): see `acks.rs`.
    acking: Mutex<HashMap<ConnId, Option<(Uid, Position)>>>,
    /// Where group events go (`group_occupied`/`group_vacated`): the node's events, set
    /// once at start ([`Cluster::set_events`]).
    events: std::sync::OnceLock<Arc<Hub>>,
}

/// Why cluster mode could not start.
#[derive(Debug)]
pub struct ClusterError(String);

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redis: {}", self.0)
    }
}

impl std::error::Error for ClusterError {}

impl Cluster {
    /// Connects (in the background: a node starts and serves its own sockets even while
    /// Redis is down) and starts the subscription, publishing and message tasks.
    pub fn start(
        config: &ClusterConfig,
        registry: &Registry,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let redis = RedisConfig::from_url(&config.url).map_err(|e| ClusterError(e.to_string()))?;
        let mut builder = Builder::from_config(redis);
        builder
            .with_performance_config(|p| {
                // A command serves a reply: it waits no longer than the reply does.
                p.default_command_timeout = config.timeout;
                // Messages from Redis wait here for the one task that handles them; a
                // burst beyond it is lost (and logged), so it holds a pipelined burst.
                p.broadcast_channel_capacity = config.message_buffer.max(1);
            })
            .with_connection_config(|c| {
                // Opening a link (TCP, TLS, AUTH, HELLO) has its own bound: a small
                // `--cluster-timeout-ms` must not keep a distant Redis from ever linking.
                c.connection_timeout = config.link_timeout;
                c.internal_command_timeout = config.link_timeout;
                c.tcp = link_tcp(config.link_timeout);
                // Each connection is named after its client (`CLIENT SETNAME`), so a cut-off
                // node's subscriber connections can be found and closed (`reap`).
                c.auto_client_setname = true;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
        let cmd = builder.build().map_err(|e| ClusterError(e.to_string()))?;
        let sub = builder
            .build_subscriber_client()
            .map_err(|e| ClusterError(e.to_string()))?;
        let node = node_id();
        let (publish, queue) = mpsc::channel(config.publish_queue.max(1));
        let cluster = Arc::new(Cluster {
            node_arg: Value::from(node.clone()),
            node,
            names: Names::new(&config.prefix),
            timeout: config.timeout,
            groups: config.groups,
            history: config.history,
            push_sha: Mutex::new(None),
            registry: registry.clone(),
            cmd,
            sub,
            publish,
            queue_full_logged: Mutex::new(None),
            waiting: Mutex::default(),
            next_req: AtomicU64::new(1),
            dirty: Mutex::default(),
            wake: Notify::new(),
            subscribed: Mutex::default(),
            up: AtomicBool::new(false),
            answering: AtomicBool::new(true),
            epochs: Mutex::default(),
            stop: tokio_util::sync::CancellationToken::new(),
            acking: Mutex::default(),
            ledger: Mutex::new(history::Ledger::new(
                config.history.map_or(1, |h| h.max_uids),
                config.history.map_or(Duration::ZERO, |h| h.keep),
            )),
            events: std::sync::OnceLock::new(),
        });
        registry.set_presence(Arc::new(Hook(Arc::downgrade(&cluster))));
        // History on or off: a v1 tab's status frame waits until the cluster can route
        // to it (`history::attach`).
        registry.set_remote_history(Arc::new(Hook(Arc::downgrade(&cluster))));
        // Before connecting, so the first failure is heard too.
        let errors = (cluster.cmd.error_rx(), cluster.sub.error_rx());
        let opened = (cluster.cmd.reconnect_rx(), cluster.sub.reconnect_rx());
        drop(cluster.sub.manage_subscriptions());
        for task in [
            tokio::spawn(keep_connected(
                cluster.cmd.clone(),
                "commands",
                cluster.stop.clone(),
            )),
            tokio::spawn(keep_connected(
                cluster.sub.clone(),
                "subscriptions",
                cluster.stop.clone(),
            )),
            tokio::spawn(publisher(cluster.clone(), queue)),
            tokio::spawn(listen(cluster.clone())),
            tokio::spawn(reconcile(cluster.clone())),
            tokio::spawn(watch(cluster.clone())),
            tokio::spawn(sweep(cluster.clone())),
            tokio::spawn(keep_histories(cluster.clone())),
            tokio::spawn(report_errors(errors)),
            tokio::spawn(count_replaced(cluster.clone(), opened)),
            tokio::spawn(beat(cluster.clone())),
            tokio::spawn(probe(cluster.clone())),
        ] {
            let stop = cluster.stop.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                task.abort();
            });
        }
        info!(node = %cluster.node, url = %redacted(&config.url), prefix = %config.prefix, "cluster mode");
        Ok(cluster)
    }

    /// Leaves the cluster: background tasks end and both Redis connections close, so
    /// every subscription of this node is gone at once.
    pub async fn stop(&self) {
        self.stop.cancel();
        // No longer a node the others should look for, nor one whose uids count
        // (bounded: Redis may be down).
        let _ = tokio::time::timeout(self.timeout, async {
            let _ = self.forget_node_online(self.sub.id()).await;
            self.cmd
                .hdel::<(), _, _>(self.names.nodes(), self.sub.id())
                .await
        })
        .await;
        let _ = self.sub.quit().await;
        let _ = self.cmd.quit().await;
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// From now on a group made or emptied by this node's scripts is an event of `hub`'s
    /// (once; later calls are ignored).
    pub fn set_events(&self, hub: Arc<Hub>) {
        let _ = self.events.set(hub);
    }

    /// The command connection, for `cluster_presence.rs` (events' presence in Redis).
    pub(crate) fn redis(&self) -> &Client {
        &self.cmd
    }

    /// The keys of the nodes' figures for the live page (`node_figures.rs`).
    pub(crate) fn figures_keys(&self) -> [String; 2] {
        self.names.figures()
    }

    /// `<prefix>:p`: what Pusher channels' keys and channel start with (`pusher.rs`).
    pub(crate) fn pusher_base(&self) -> String {
        self.names.pusher_base()
    }

    /// `{<prefix>}:ev:`: where `cluster_presence.rs` keeps events' presence.
    pub(crate) fn events_base(&self) -> String {
        self.names.events_base()
    }

    /// True while both Redis connections are up and Redis answers.
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed) && self.answering.load(Relaxed)
    }

    /// Why this node cannot reach the rest of the cluster now (`None`: it can), for
    /// `/readyz`.
    pub fn trouble(&self) -> Option<&'static str> {
        if !self.up.load(Relaxed) {
            Some("redis unreachable")
        } else if !self.answering.load(Relaxed) {
            Some("redis not answering")
        } else {
            None
        }
    }

    // ---- Groups: membership in Redis, so it belongs to the uid wherever it connects ----
    //
    // `{pw}:g:<group>` the members, `{pw}:ug:<uid>` a uid's groups, `{pw}:groups` the
    // groups, `{pw}:grace` uid → when its grace period ends (ms). A uid is put in the grace
    // set when it joins and when its last connection on a node closes; the sweeper of any
    // node drops the memberships of a due uid only if no node holds it then.
    //
    // Every change is one Lua script, so it is atomic: two nodes joining at the same
    // instant cannot pass `--max-groups` or `--max-group-members` between them, and a
    // group never outlives or predates its entry in `{pw}:groups`. A script may only touch
    // keys of one hash slot in a Redis Cluster, hence the one hash tag `{pw}` on every
    // group key: all group state lives on one shard (uid channels, the bulk of the
    // traffic, still spread over every shard).
}

/// The registry's hook: a uid came or went here.
#[derive(Debug)]
struct Hook(Weak<Cluster>);

// The live nodes' subscriber clients (`Names::nodes`): name -> the Redis time (ms) past
// which it is dead.

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
