//! Cluster mode on Redis (`--redis URL`): several nodes, one truthful answer.
//!
//! # Message flow
//! - A node **subscribes** (sharded pub/sub, `SSUBSCRIBE pw:u:<uid>`) to a uid's channel
//!   exactly while it holds a connection of that uid, and always to its own reply channel
//!   `pw:r:<node>`. The registry tells it when a uid comes or goes ([`Presence`]); one
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
//!   node count Redis as down until a probe is answered ([`probe`]): no more pushes are
//!   written (so the doubt is one batch, not the whole stall), replies come at once,
//!   `/readyz` says degraded. A cut link's connections are closed by the kernel within
//!   the link timeout and opened again ([`link_tcp`]).
//! - **Redis that lost its data** (restarted without persistence): each node raises a
//!   counter on every primary with each beat; one that went back is logged, and v1 tabs
//!   resync ([`check_epochs`]).

mod addressed;
mod nodes;
mod online;

pub use addressed::AddressedLink;
pub use nodes::ClusterNodes;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{
    ClientLike, ClusterInterface, EventInterface, HashesInterface, KeysInterface, LuaInterface,
    PubsubInterface, SetsInterface,
};
use fred::types::config::{Config as RedisConfig, ReconnectPolicy};
use fred::types::{Builder, Value};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::cluster_history as ch;
use crate::groups::{GroupError, GroupLimits};
use crate::history::HistoryLimits;
use crate::registry::{ConnId, Delivery, Presence, Registry, RemoteHistory};
use crate::wire::envelope::{Position, Seq, Status};
use crate::wire::{CloseNotice, Payload, Uid};

/// Publishes sent in one pipeline at most.
const PIPELINE_MAX: usize = 1024;

/// How the cluster is reached and how long a reply may wait for it.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://host:port[/db]` or `rediss://` (TLS).
    pub url: String,
    /// Longest a reply waits for Redis and the holders' answers; Redis not answering for
    /// this long is taken as down until it answers again ([`probe`]).
    pub timeout: Duration,
    /// Longest a connection to Redis may take to open, or go with its data
    /// unacknowledged before the kernel closes it ([`link_tcp`]).
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
    /// through Redis's numbering script (`cluster_history.rs`).
    pub history: Option<HistoryLimits>,
}

/// Why a cluster-wide `/uids` page could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UidsError {
    /// Redis could not be reached.
    Unavailable,
    /// This many nodes did not answer in time (the page would be incomplete).
    Partial(usize),
}

impl std::fmt::Display for UidsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UidsError::Unavailable => f.write_str("cluster unavailable (redis unreachable)"),
            UidsError::Partial(n) => write!(
                f,
                "cluster: {n} node(s) did not answer in time; ask again with the same cursor"
            ),
        }
    }
}

/// Why a group operation could not be done cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterGroupError {
    /// A limit refused it.
    Limit(GroupError),
    /// Redis could not be reached.
    Unavailable,
}

impl std::fmt::Display for ClusterGroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterGroupError::Limit(e) => e.fmt(f),
            ClusterGroupError::Unavailable => {
                f.write_str("cluster unavailable (redis unreachable)")
            }
        }
    }
}

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
enum Unanswered {
    /// Not written: the Redis client refused it before it reached the connection.
    NotSent,
    /// Handed to the Redis client, then an error or nothing: Redis may have run it.
    InDoubt,
}

/// What Redis said about one publish or numbering script.
#[derive(Debug, Clone, Copy, Default)]
struct Published {
    /// Subscribers that got it.
    receivers: i64,
    at: Option<Position>,
    queued: bool,
}

/// The answer to a cluster-wide retry claim ([`Cluster::claim`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteClaim {
    /// Not seen within the window on any node: run it, then [`Cluster::settle`] the key.
    Fresh(String),
    /// Seen: what the first did (`None` while it still runs).
    Duplicate(Option<crate::dedupe::First>),
    /// Redis could not tell in time: the caller falls back to this node's memory.
    Down,
}

/// This node's link to the cluster.
#[derive(Debug)]
pub struct Cluster {
    node: String,
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
    /// cluster-wide `/uids` order: by [`uid_hash`], then uid.
    subscribed: Mutex<BTreeSet<(u32, Uid)>>,
    /// Connected, and subscribed to this node's reply channel: only then may a push be
    /// published (a holder's answer sent before that would be lost, and a push that was
    /// delivered would be answered `fail`).
    up: AtomicBool,
    /// Redis answered within `timeout` when last asked ([`probe`], the publisher): a
    /// connection that stays open to a Redis that does not answer (stopped, paused, or a
    /// cut link TCP has not given up on yet) counts as down, so no more pushes are written
    /// to it and replies are given at once.
    answering: AtomicBool,
    /// Each primary's data epoch as this node last raised it, by a slot the primary
    /// serves ([`check_epochs`]): one not above it means that primary lost its data.
    epochs: Mutex<HashMap<u16, u64>>,
    /// Ends the background tasks ([`Cluster::stop`]).
    stop: tokio_util::sync::CancellationToken,
}

struct Outgoing {
    channel: String,
    message: Bytes,
    /// Set for a push numbered in Redis: the script runs instead of a plain publish
    /// (`message` is then the payload).
    numbered: Option<Numbered>,
    done: Option<oneshot::Sender<Result<Published, Unanswered>>>,
    /// The request whose reply must still wait for it to be sent (see [`take_waited`]);
    /// `None`: nobody waits (a holder's answers), or a fan-out member, sent whenever it
    /// can be.
    waits: Option<u64>,
}

/// A push to run through the numbering script.
struct Numbered {
    /// The payload, shared with the local delivery's (one copy for a whole `/group`).
    payload: Bytes,
    slot: u16,
    keys: [String; 3],
    req: u64,
    /// `ttl=` in ms (0: none).
    queue_ttl: u64,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("channel", &self.channel)
            .finish()
    }
}

/// A push waiting for the holders' answers.
#[derive(Debug, Default)]
struct Waiting {
    /// Answers still expected (`None` until Redis said how many got it).
    expected: Option<usize>,
    got: usize,
    /// Answers from other nodes (`got` also counts our own copy).
    answered: usize,
    delivery: Delivery,
    /// What answers carried beyond their counts (`/uids` pages).
    bodies: Vec<Bytes>,
    done: Option<oneshot::Sender<()>>,
    /// Its publish was handed to the Redis client (set by the publisher under the same
    /// lock the reply takes when it stops waiting, so exactly one of them decides).
    sent: bool,
}

impl Waiting {
    fn complete(&self) -> bool {
        self.expected.is_some_and(|n| self.got >= n)
    }
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
        });
        registry.set_presence(Arc::new(Hook(Arc::downgrade(&cluster))));
        if cluster.history.is_some() {
            registry.set_remote_history(Arc::new(Hook(Arc::downgrade(&cluster))));
        }
        // Before connecting, so the first failure is heard too.
        let errors = (cluster.cmd.error_rx(), cluster.sub.error_rx());
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
            tokio::spawn(beat(cluster.clone())),
            tokio::spawn(probe(cluster.clone())),
        ] {
            let stop = cluster.stop.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                task.abort();
            });
        }
        info!(node = %cluster.node, url = %redacted(&config.url), "cluster mode");
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
            self.cmd.hdel::<(), _, _>(NODES, self.sub.id()).await
        })
        .await;
        let _ = self.sub.quit().await;
        let _ = self.cmd.quit().await;
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
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
        let channel = uid_channel(uid);
        let numbered = self.numbered(uid, payload, &channel, None);
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
        let channel = uid_channel(uid);
        let numbered = self.numbered(uid, payload, &channel, queue_for);
        let gathered = self.gather_as(channel, numbered, Ask::Push, payload.as_bytes(), Late::Drop);
        async move { gathered.await.0 }
    }

    /// With history on, how a push to `uid` runs the numbering script.
    fn numbered(
        &self,
        uid: &str,
        payload: &Payload,
        channel: &str,
        queue_for: Option<Duration>,
    ) -> Option<Numbered> {
        self.history.map(|_| {
            let (slot, keys) = ch::keys(uid, channel);
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
        self.ask(uid_channel(uid), Ask::Kick, reason.as_bytes())
    }

    /// Connections of `uid` on the other nodes (in `queued`).
    pub fn online(self: &Arc<Self>, uid: &str) -> impl Future<Output = Remote> + use<> {
        self.ask(uid_channel(uid), Ask::Online, b"")
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
        self.ask(ALL.to_owned(), Ask::Broadcast, &body)
    }

    /// The other nodes' (uids, connections), in (`queued`, `refused`).
    pub fn count(self: &Arc<Self>) -> impl Future<Output = Remote> + use<> {
        self.ask(ALL.to_owned(), Ask::Count, b"")
    }

    /// Publishes one request on `channel` and gathers the answers of everyone who got it.
    fn ask(
        self: &Arc<Self>,
        channel: String,
        kind: Ask,
        body: &[u8],
    ) -> impl Future<Output = Remote> + use<> {
        let gathered = self.gather(channel, kind, body);
        async move { gathered.await.0 }
    }

    /// [`Cluster::ask`], with the bodies the answers carried.
    fn gather(
        self: &Arc<Self>,
        channel: String,
        kind: Ask,
        body: &[u8],
    ) -> impl Future<Output = (Remote, Vec<Bytes>)> + use<> {
        self.gather_as(channel, None, kind, body, Late::Drop)
    }

    /// Hands `out` to the publisher task, or refuses it when the queue is full (logged
    /// once a minute at most, with the setting that sizes it).
    fn enqueue(&self, out: Outgoing) -> Result<(), ()> {
        match self.publish.try_send(out) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                let now = tokio::time::Instant::now();
                let mut logged = self
                    .queue_full_logged
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if logged.is_none_or(|at| now.duration_since(at) >= ERROR_REPEAT) {
                    *logged = Some(now);
                    warn!(
                        "cluster publish queue full (--cluster-publish-queue): pushes answered from local delivery alone"
                    );
                }
                Err(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
        }
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

    /// One page of `/uids` across the cluster: every uid with a routable connection on
    /// some node, in [`uid_hash`] order from `cursor`, at least `limit` of them (whole hash
    /// values) unless the walk ends; and the cursor of the next page.
    ///
    /// # Why every uid online throughout a walk is listed exactly once
    /// The cursor is a position in the hash space (`0 ..= 2^32`), the same on every node.
    /// Each node (this one from its own index, the others answering on `pw:all`) returns
    /// its uids from `cursor` on, whole hash values, up to at least `limit`; the page ends
    /// where the shortest answer ended, so it covers `cursor .. next` completely on every
    /// node, and the next page starts there. A uid has one hash, so it falls in exactly
    /// one page; a uid held by two nodes is listed once (the page is a set). A node that
    /// does not answer in time fails the page (ask again with the same cursor): a page
    /// missing a node could skip a stable uid.
    pub fn uids_page(
        self: &Arc<Self>,
        cursor: usize,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<String>, Option<usize>), UidsError>> + use<> {
        let limit = limit.max(1);
        let local = self.local_uids(cursor as u64, limit);
        let remote = self.gather(
            ALL.to_owned(),
            Ask::Uids,
            format!("{cursor} {limit}").as_bytes(),
        );
        async move {
            let (remote, bodies) = remote.await;
            if remote.unavailable || remote.in_doubt {
                return Err(UidsError::Unavailable);
            }
            if remote.missing > 0 {
                return Err(UidsError::Partial(remote.missing));
            }
            let mut end = local.1;
            let mut page: BTreeSet<(u32, String)> =
                local.0.iter().map(|(h, u)| (*h, u.to_string())).collect();
            for body in &bodies {
                let Some((their_end, uids)) = parse_uids_page(body) else {
                    return Err(UidsError::Partial(1));
                };
                end = end.min(their_end);
                page.extend(uids.into_iter().map(|u| (uid_hash(&u), u)));
            }
            // Every answer covers `cursor .. end`; keep that much, then cut at `limit`
            // (after a whole hash value), which still covers what it keeps.
            page.retain(|(h, _)| u64::from(*h) < end);
            let mut kept = Vec::with_capacity(page.len().min(limit + 8));
            for (h, uid) in page {
                if kept.len() >= limit && kept.last().is_some_and(|(last, _)| *last != h) {
                    end = u64::from(h);
                    break;
                }
                kept.push((h, uid));
            }
            let next = (end < HASH_END).then_some(end as usize);
            Ok((kept.into_iter().map(|(_, u)| u).collect(), next))
        }
    }

    /// This node's part of a `/uids` page: uids from hash `cursor` on, whole hash values,
    /// until at least `limit`; and where it stopped (`HASH_END` if it reached the end).
    fn local_uids(&self, cursor: u64, limit: usize) -> (Vec<(u32, Uid)>, u64) {
        let Ok(start) = u32::try_from(cursor) else {
            return (Vec::new(), HASH_END);
        };
        let subscribed = self.subscribed.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(u32, Uid)> = Vec::new();
        for (h, uid) in subscribed.range((start, Uid::from(""))..) {
            if out.len() >= limit && out.last().is_some_and(|(last, _)| last != h) {
                return (out, u64::from(*h));
            }
            out.push((*h, uid.clone()));
        }
        (out, HASH_END)
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

    /// Adds `uids` to `group`, all or nothing against the limits, atomically.
    pub async fn join(
        &self,
        group: &str,
        uids: &[Uid],
    ) -> Result<(usize, usize), ClusterGroupError> {
        if !self.is_up() {
            return Err(ClusterGroupError::Unavailable);
        }
        let mut keys = vec![GROUPS.to_owned(), GRACE.to_owned(), group_key(group)];
        keys.extend(uids.iter().map(|u| uid_groups_key(u)));
        let mut args = vec![
            group.to_owned(),
            self.groups.max_groups.to_string(),
            self.groups.max_members.to_string(),
            (now_ms() + self.groups.grace.as_millis() as u64).to_string(),
        ];
        args.extend(uids.iter().map(|u| u.to_string()));
        let (added, members): (i64, i64) =
            self.cmd
                .eval(JOIN_SCRIPT, keys, args)
                .await
                .map_err(|err| {
                    debug!(%err, "join script failed");
                    ClusterGroupError::Unavailable
                })?;
        match added {
            -1 => Err(ClusterGroupError::Limit(GroupError::TooManyGroups(
                self.groups.max_groups,
            ))),
            -2 => Err(ClusterGroupError::Limit(GroupError::GroupFull(
                self.groups.max_members,
            ))),
            _ => Ok((added.max(0) as usize, members.max(0) as usize)),
        }
    }

    /// Removes `uids` from `group`: (removed, members after), atomically.
    pub async fn leave(
        &self,
        group: &str,
        uids: &[Uid],
    ) -> Result<(usize, usize), ClusterGroupError> {
        let mut keys = vec![GROUPS.to_owned(), group_key(group)];
        keys.extend(uids.iter().map(|u| uid_groups_key(u)));
        let mut args = vec![group.to_owned()];
        args.extend(uids.iter().map(|u| u.to_string()));
        let (removed, left): (i64, i64) = self
            .cmd
            .eval(LEAVE_SCRIPT, keys, args)
            .await
            .map_err(|_| ClusterGroupError::Unavailable)?;
        Ok((removed.max(0) as usize, left.max(0) as usize))
    }

    /// The members of `group` (online or within their grace period).
    pub async fn members(&self, group: &str) -> Result<Vec<String>, ClusterGroupError> {
        self.cmd
            .smembers(group_key(group))
            .await
            .map_err(|_| ClusterGroupError::Unavailable)
    }

    /// Groups that exist.
    pub async fn group_count(&self) -> Result<usize, ClusterGroupError> {
        self.cmd
            .scard(GROUPS)
            .await
            .map_err(|_| ClusterGroupError::Unavailable)
    }

    /// Drops every membership of `uid` (kick, or its grace period ended offline),
    /// atomically.
    pub async fn forget(&self, uid: &str) -> Result<(), fred::error::Error> {
        let keys = vec![GROUPS.to_owned(), GRACE.to_owned(), uid_groups_key(uid)];
        let args = vec![uid.to_owned(), group_key("")];
        let _: i64 = self.cmd.eval(FORGET_SCRIPT, keys, args).await?;
        Ok(())
    }

    /// Claims `id` + `line` cluster-wide for `window`: one script (`GET`, else `SET
    /// pw:d:<hash> p PX window`), bounded by `--cluster-timeout-ms`. The key is a SHA-256
    /// of the ID and the line, the same on every node.
    pub async fn claim(&self, id: &str, line: &[u8], window: Duration) -> RemoteClaim {
        if !self.is_up() {
            return RemoteClaim::Down;
        }
        let key = dedupe_key(id, line);
        let ms = window.as_millis().max(1).to_string();
        let asked = tokio::time::timeout(
            self.timeout,
            self.cmd
                .eval::<Option<String>, _, _, _>(CLAIM_SCRIPT, vec![key.clone()], vec![ms]),
        )
        .await;
        match asked {
            Ok(Ok(None)) => RemoteClaim::Fresh(key),
            Ok(Ok(Some(first))) => RemoteClaim::Duplicate(parse_first(&first)),
            Ok(Err(err)) => {
                if *err.kind() == fred::error::ErrorKind::Timeout {
                    self.not_answering("a retry claim");
                }
                debug!(%err, "retry claim failed: this node's memory decides");
                RemoteClaim::Down
            }
            // Not answered in time: the push itself must not wait a second timeout.
            Err(_) => {
                self.not_answering("a retry claim");
                RemoteClaim::Down
            }
        }
    }

    /// Records what a claimed push did (`Some`: accepted, kept for the rest of the
    /// window; `None`: forgotten, so a retry runs). Bounded by `--cluster-timeout-ms`;
    /// a failure leaves the claim `pending` until its window ends.
    pub async fn settle(&self, key: String, first: Option<crate::dedupe::First>) {
        if !self.is_up() {
            return;
        }
        let cmd = match first {
            Some(f) => self.cmd.custom::<Value, _>(
                fred::cmd!("SET"),
                vec![key, first_text(&f), "XX".to_owned(), "KEEPTTL".to_owned()],
            ),
            None => self.cmd.custom::<Value, _>(fred::cmd!("DEL"), vec![key]),
        };
        if let Ok(Err(err)) = tokio::time::timeout(self.timeout, cmd).await {
            debug!(%err, "retry settle failed");
        }
    }

    /// Starts (or restarts) `uid`'s grace period, ending at `deadline_ms`.
    async fn grace(&self, uid: &str, deadline_ms: u64) -> Result<(), fred::error::Error> {
        let _: usize = self
            .cmd
            .custom(
                fred::cmd!("ZADD"),
                vec![GRACE.to_owned(), deadline_ms.to_string(), uid.to_owned()],
            )
            .await?;
        Ok(())
    }

    /// One holder's answer (`delivery`), or our own copy (`None`: local delivery was
    /// counted by the caller).
    fn answered(&self, req: u64, delivery: Option<(Delivery, Option<Bytes>)>) {
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
    fn answered_here(&self, req: u64, delivery: Delivery) {
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

    fn lock_waiting(&self) -> MutexGuard<'_, HashMap<u64, Waiting>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark(&self, uid: &Uid) {
        let first = {
            let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            let first = dirty.is_empty();
            dirty.insert(uid.clone());
            first
        };
        if first {
            self.wake.notify_one();
        }
    }

    /// Every uid held here, to be re-announced (after a reconnect).
    fn mark_all(&self) {
        let (page, _) = self.registry.uids_page(0, usize::MAX);
        let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        dirty.extend(page);
        drop(dirty);
        self.wake.notify_one();
    }
}

/// The registry's hook: a uid came or went here.
#[derive(Debug)]
struct Hook(Weak<Cluster>);

impl Presence for Hook {
    fn changed(&self, uid: &Uid) {
        if let Some(cluster) = self.0.upgrade() {
            cluster.mark(uid);
        }
    }
}

impl RemoteHistory for Hook {
    fn resume(&self, uid: &Uid, conn: ConnId, since: Option<Position>) {
        if let Some(cluster) = self.0.upgrade() {
            let uid = uid.clone();
            tokio::spawn(async move {
                let (status, base, replay, head) = cluster.attach(&uid, since).await;
                cluster
                    .registry
                    .resumed(&uid, conn, status, base, replay, head);
            });
        }
    }

    fn seed_bound(&self, uid: &Uid, conn: ConnId) {
        if let Some(cluster) = self.0.upgrade() {
            let uid = uid.clone();
            tokio::spawn(async move {
                let queued = cluster.take_queued(&uid).await;
                if !queued.is_empty() {
                    cluster.registry.deliver_to(&uid, conn, queued);
                }
            });
        }
    }

    fn acked(&self, uid: &str, conn: ConnId, at: Position) {
        if let Some(cluster) = self.0.upgrade() {
            let uid = uid.to_owned();
            tokio::spawn(async move { cluster.record_ack(&uid, conn, at).await });
        }
    }
}

impl Cluster {
    /// Records that tab `conn` (of this node) acked `uid`'s messages up to `at`, for as
    /// long as the uid's history is kept. Best effort: a lost record is a `not_acked`.
    async fn record_ack(&self, uid: &str, conn: ConnId, at: Position) {
        let (slot, key) = ch::acks_key(uid, &uid_channel(uid));
        let keep = self
            .history
            .map_or(60_000, |h| h.keep.as_millis().max(1) as u64);
        let args: Vec<Value> = vec![
            ch::ACK_SCRIPT.into(),
            "1".into(),
            key.into(),
            format!("{}:{conn}", self.node).into(),
            format!("{}:{}", ch::epoch_text(at.epoch), at.seq).into(),
            keep.to_string().into(),
        ];
        let sent = self
            .cmd
            .custom::<Value, _>(script_command("EVAL", slot), args);
        if let Ok(Err(err)) = tokio::time::timeout(self.timeout, sent).await {
            debug!(%err, "recording an ack failed");
        }
    }

    /// How many tabs (connections, on any node) acknowledged `uid`'s message `at`; 0
    /// when Redis cannot tell.
    pub async fn acks(&self, uid: &str, at: Position) -> usize {
        if !self.is_up() {
            return 0;
        }
        let (slot, key) = ch::acks_key(uid, &uid_channel(uid));
        let args: Vec<Value> = vec![
            ch::ACKS_SCRIPT.into(),
            "1".into(),
            key.into(),
            ch::epoch_text(at.epoch).into(),
            at.seq.to_string().into(),
        ];
        let read = self
            .cmd
            .custom::<i64, _>(script_command("EVAL", slot), args);
        match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(n)) => usize::try_from(n).unwrap_or(0),
            _ => 0,
        }
    }
}

impl Cluster {
    /// A v1 tab of `uid` bound here: once this node hears the uid's channel, reads the
    /// uid's history from Redis (creating it if missing). Subscribed first, read second:
    /// a message numbered meanwhile is in the history or arrives live after it (or both:
    /// the registry drops a live one already replayed), never neither. If Redis cannot
    /// tell in time, the tab is not recovered (and a history of epoch 0 that any
    /// numbered message will resync).
    async fn attach(
        &self,
        uid: &Uid,
        since: Option<Position>,
    ) -> (Status, Position, Vec<(Seq, Payload)>, Seq) {
        let unknown = (
            if since.is_some() {
                Status::NotRecovered
            } else {
                Status::New
            },
            Position { epoch: 0, seq: 0 },
            Vec::new(),
            0,
        );
        let Some(limits) = self.history else {
            return unknown;
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        while !self.hears(uid) {
            if tokio::time::Instant::now() >= deadline {
                return unknown;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let channel = uid_channel(uid);
        let (slot, keys) = ch::keys(uid, &channel);
        let mut args: Vec<Value> = vec![ch::attach_script().into(), "3".into()];
        args.extend(keys.iter().map(|k| Value::from(k.as_str())));
        for a in [
            ch::epoch_text(ch::new_epoch()),
            limits.keep.as_millis().to_string(),
            now_ms().to_string(),
            limits.age.as_millis().to_string(),
            limits.messages.to_string(),
            limits.bytes.to_string(),
            since.map_or(String::new(), |p| ch::epoch_text(p.epoch)),
            since.map_or(0, |p| p.seq).to_string(),
        ] {
            args.push(a.into());
        }
        let read = tokio::time::timeout_at(
            deadline,
            self.cmd
                .custom::<Vec<Bytes>, _>(script_command("EVAL", slot), args),
        )
        .await;
        let found = match read {
            Ok(Ok(items)) => ch::parse_found(items.into_iter().map(|b| b.to_vec()).collect()),
            Ok(Err(err)) => {
                debug!(%err, "history read failed");
                None
            }
            Err(_) => None,
        };
        let Some(found) = found else {
            return unknown;
        };
        let head = found.head;
        let covered =
            since.filter(|p| p.epoch == head.epoch && p.seq >= found.floor && p.seq <= head.seq);
        let Some(from) = covered else {
            let status = if since.is_some() {
                Status::NotRecovered
            } else {
                Status::New
            };
            // The offline queue, as on a single node: the base is just before it.
            let queued = numbered_payloads(found.queued);
            let base = queued.first().map_or(head, |(seq, _)| Position {
                epoch: head.epoch,
                seq: seq - 1,
            });
            return (status, base, queued, head.seq);
        };
        let after = found.after.into_iter().filter(|(seq, _)| *seq > from.seq);
        (Status::Recovered, from, numbered_payloads(after), head.seq)
    }

    /// A seed tab of `uid` bound here: once this node hears the uid's channel (so later
    /// pushes reach it live), takes the uid's offline queue from Redis, in order, once.
    /// Nothing if Redis cannot tell in time (the queue stays for the next bind).
    async fn take_queued(&self, uid: &Uid) -> Vec<Payload> {
        if self.history.is_none() {
            return Vec::new();
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        while !self.hears(uid) {
            if tokio::time::Instant::now() >= deadline {
                return Vec::new();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (slot, [_, _, queue]) = ch::keys(uid, &uid_channel(uid));
        let args: Vec<Value> = vec![
            ch::take_script().into(),
            "1".into(),
            queue.into(),
            now_ms().to_string().into(),
        ];
        let taken = tokio::time::timeout_at(
            deadline,
            self.cmd
                .custom::<Vec<Bytes>, _>(script_command("EVAL", slot), args),
        )
        .await;
        let entries = match taken {
            Ok(Ok(items)) => ch::parse_entries(items.into_iter().map(|b| b.to_vec())),
            Ok(Err(err)) => {
                debug!(%err, "offline queue read failed");
                None
            }
            Err(_) => None,
        };
        numbered_payloads(entries.unwrap_or_default())
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    /// True once this node's subscription to `uid`'s channel is in, with no change of
    /// it pending (a pending one could be an unsubscribe decided before the bind).
    fn hears(&self, uid: &Uid) -> bool {
        if !self.is_up() {
            return false;
        }
        let pending = self
            .dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(uid);
        !pending
            && self
                .subscribed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&(uid_hash(uid), uid.clone()))
    }
}

/// Cluster mode with history on: the histories of uids held here live while they are
/// held, and `--history-keep-ms` after (each refresh sets both keys' TTL to keep).
async fn keep_histories(cluster: Arc<Cluster>) {
    let Some(limits) = cluster.history else {
        return;
    };
    let every = (limits.keep / 3).clamp(Duration::from_millis(50), Duration::from_secs(10));
    let keep = limits.keep.as_millis() as i64;
    loop {
        tokio::time::sleep(every).await;
        if !cluster.is_up() {
            continue;
        }
        let held: Vec<Uid> = cluster
            .subscribed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, u)| u.clone())
            .collect();
        for chunk in held.chunks(PIPELINE_MAX / 2) {
            let pipeline = cluster.cmd.pipeline();
            for uid in chunk {
                let (_, [meta, list, _queue]) = ch::keys(uid, &uid_channel(uid));
                for key in [meta, list] {
                    let _: Result<(), _> = pipeline.pexpire(key, keep, None).await;
                }
            }
            let _: Vec<Result<Value, _>> = pipeline.try_all().await;
        }
    }
}

/// Keeps this node's uid subscriptions in step with the registry, in order.
async fn reconcile(cluster: Arc<Cluster>) {
    loop {
        if !cluster.is_up() {
            // Not before this node's own channels are in: a uid routable here implies a
            // node that also hears requests to all nodes. `watch` marks every uid again
            // once it is up.
            tokio::time::sleep(Duration::from_millis(25)).await;
            continue;
        }
        let dirty: Vec<Uid> = {
            let mut d = cluster.dirty.lock().unwrap_or_else(|e| e.into_inner());
            d.drain().collect()
        };
        if dirty.is_empty() {
            cluster.wake.notified().await;
            continue;
        }
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for uid in dirty {
            let here = cluster.registry.connections_of(&uid) > 0;
            let subscribed = cluster
                .subscribed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&(uid_hash(&uid), uid.clone()));
            match (here, subscribed) {
                (true, false) => on.push(uid),
                (false, true) => {
                    let deadline = now_ms() + cluster.groups.grace.as_millis() as u64;
                    if cluster.is_up()
                        && let Err(err) = cluster.grace(&uid, deadline).await
                    {
                        debug!(%err, "could not start a grace period");
                    }
                    off.push(uid)
                }
                _ => {}
            }
        }
        for (uids, subscribe) in [(on, true), (off, false)] {
            if uids.is_empty() {
                continue;
            }
            // One channel per command: in a Redis Cluster the channels of one
            // SSUBSCRIBE must share a hash slot, and uids' channels do not.
            let changes = uids.iter().map(|u| {
                let channel = uid_channel(u);
                let sub = &cluster.sub;
                async move {
                    if subscribe {
                        sub.ssubscribe(channel).await
                    } else {
                        sub.sunsubscribe(channel).await
                    }
                }
            });
            let mut result: Result<(), _> = futures_util::future::join_all(changes)
                .await
                .into_iter()
                .collect();
            // Counted (or uncounted) in the cluster-wide online set once the
            // subscription changed; a failure retries both (each is idempotent).
            for chunk in uids.chunks(online::ONLINE_BATCH) {
                if result.is_ok() {
                    let names = chunk.iter().map(|u| &**u);
                    result = cluster.count_online(names, subscribe).await;
                }
            }
            match result {
                Ok(()) => {
                    let mut s = cluster.subscribed.lock().unwrap_or_else(|e| e.into_inner());
                    for uid in uids {
                        let entry = (uid_hash(&uid), uid);
                        if subscribe {
                            s.insert(entry);
                        } else {
                            s.remove(&entry);
                        }
                    }
                }
                Err(err) => {
                    debug!(%err, "subscription change failed; retried after reconnect");
                    cluster
                        .dirty
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend(uids);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Sends every publish in order, as many as are queued per pipeline. A numbered push
/// runs the numbering script (`EVALSHA`; the script's whole text once a Redis shard
/// answers that it does not have it, which loads it there), routed to the uid's slot.
///
/// Each publish's answer says whether it left: a receiver count, [`Unanswered::NotSent`]
/// when the Redis client refused it before writing it (see [`not_sent`]), otherwise
/// [`Unanswered::InDoubt`]. A publish whose reply stopped waiting before it was taken
/// here is dropped unsent (its push was answered as never sent: [`take_waited`]).
///
/// # Bounding the doubt
/// No push is written while Redis is down or not answering: every one taken then is
/// refused unsent ([`Unanswered::NotSent`]; see [`refuse_pushes`] for answers). A stalled Redis (stopped, paused, busy)
/// keeps its connections open and runs all it was sent once it resumes, so a publisher
/// that went on writing would have every push of the stall answered `fail` and then
/// delivered. Here only the batch in flight when it stalled is in doubt: the next waits
/// behind it, and once that batch goes unanswered for `--cluster-timeout-ms` the node
/// stops writing ([`Cluster::not_answering`]) until Redis answers a probe again.
async fn publisher(cluster: Arc<Cluster>, mut queue: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(PIPELINE_MAX);
    // A publish is sent once or not at all: never held while Redis is down (fail fast)
    // nor written again after a reconnect (one attempt). fred 10 does not drop a
    // pipeline whose wait timed out, so one queued in the client as the link died may
    // still be written after the reconnect: its push was answered in doubt (`partial`).
    let once = fred::types::config::Options {
        max_attempts: Some(1),
        fail_fast: true,
        ..Default::default()
    };
    while queue.recv_many(&mut batch, PIPELINE_MAX).await > 0 {
        if !cluster.is_up() {
            refuse_pushes(&mut batch);
        }
        take_waited(&mut batch, &mut cluster.lock_waiting());
        if batch.is_empty() {
            continue;
        }
        let sha = cluster
            .push_sha
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // One value for the batch: each command's copy is a reference count.
        let (name, script) = match sha {
            Some(sha) => ("EVALSHA", Value::from(sha)),
            None => ("EVAL", Value::from_static_str(ch::push_script())),
        };
        let pipeline = fred::clients::Pipeline::from(cluster.cmd.with_options(&once));
        let mut queued = true;
        for out in &batch {
            let r: Result<(), _> = match &out.numbered {
                Some(n) => {
                    pipeline
                        .custom(
                            script_command(name, n.slot),
                            script_args(&cluster, out, n, script.clone()),
                        )
                        .await
                }
                None => {
                    pipeline
                        .spublish(out.channel.as_str(), out.message.clone())
                        .await
                }
            };
            queued &= r.is_ok();
        }
        // Nothing is written until `try_all`: a batch that could not be buffered never left.
        let mut results: Vec<Result<Value, fred::error::Error>> = if queued {
            pipeline.try_all().await
        } else {
            Vec::new()
        };
        // A shard without the script ran none of them: run those again, in order, with
        // the script's text (which loads it there).
        for (i, out) in batch.iter().enumerate() {
            let (Some(n), Some(Err(err))) = (&out.numbered, results.get(i)) else {
                continue;
            };
            if !err.details().contains("NOSCRIPT") {
                continue;
            }
            let args = script_args(&cluster, out, n, Value::from_static_str(ch::push_script()));
            results[i] = cluster
                .cmd
                .with_options(&once)
                .custom(script_command("EVAL", n.slot), args)
                .await;
        }
        if results.iter().any(|r| {
            r.as_ref()
                .is_err_and(|e| *e.kind() == fred::error::ErrorKind::Timeout)
        }) {
            cluster.not_answering("a publish");
        }
        // Fewer answers than publishes: fred failed the whole pipeline with one error.
        let whole = (results.len() != batch.len()).then(|| match results.as_slice() {
            _ if !queued => Unanswered::NotSent,
            [Err(err)] => not_sent(err),
            _ => Unanswered::InDoubt,
        });
        for (i, out) in batch.drain(..).enumerate() {
            let n = match (whole, results.get(i)) {
                (Some(why), _) => Err(why),
                (None, Some(Ok(Value::Array(items)))) if out.numbered.is_some() => {
                    parse_pushed(items).ok_or(Unanswered::InDoubt)
                }
                (None, Some(Ok(v))) if out.numbered.is_none() => v
                    .as_i64()
                    .map(|receivers| Published {
                        receivers,
                        ..Published::default()
                    })
                    .ok_or(Unanswered::InDoubt),
                (None, Some(Err(err))) => {
                    if out.numbered.is_some() {
                        debug!(%err, "numbering script failed");
                    }
                    Err(not_sent(err))
                }
                _ => Err(Unanswered::InDoubt),
            };
            if let Some(done) = out.done {
                let _ = done.send(n);
            }
        }
    }
}

/// Keeps in `batch` the publishes still to be sent, each marked as handed to the Redis
/// client ([`Waiting::sent`]) under the lock its reply takes when it stops waiting: one
/// whose reply has stopped waiting is dropped here, unsent, and that reply said so
/// (`unavailable`, never `partial`). Fan-out members and answers (`waits: None`) stay.
fn take_waited(batch: &mut Vec<Outgoing>, waiting: &mut HashMap<u64, Waiting>) {
    batch.retain_mut(|out| {
        let Some(req) = out.waits else {
            return true;
        };
        match waiting.get_mut(&req) {
            Some(w) => {
                w.sent = true;
                true
            }
            None => {
                if let Some(done) = out.done.take() {
                    let _ = done.send(Err(Unanswered::NotSent));
                }
                false
            }
        }
    });
}

/// Takes out of `batch` every push, fan-out member and request (each answered
/// [`Unanswered::NotSent`], unwritten), and keeps this node's answers to other origins:
/// nobody waits for those, one that comes late is ignored, and one held back would have
/// its origin answer `fail` for a push this node did deliver (a holder that still counts
/// Redis as not answering while the origin already sees it back).
fn refuse_pushes(batch: &mut Vec<Outgoing>) {
    batch.retain_mut(|out| match out.done.take() {
        Some(done) => {
            let _ = done.send(Err(Unanswered::NotSent));
            false
        }
        None => true,
    });
}

/// Whether fred's error says the command was never written (fred 10.1): its fail-fast
/// check refused it before it reached the client's router (not connected), or the router
/// had no connection to write it to, and with one attempt it is not kept for a retry.
/// Any other error (the link died after the write, a timeout, a reply from Redis) leaves
/// the publish in doubt.
fn not_sent(err: &fred::error::Error) -> Unanswered {
    use fred::error::ErrorKind;
    let refused = matches!(
        (err.kind(), err.details()),
        (ErrorKind::Canceled, "Connection closed unexpectedly.")
            | (ErrorKind::Unknown, "Failed to route command.")
    );
    if refused {
        Unanswered::NotSent
    } else {
        Unanswered::InDoubt
    }
}

/// Kept entries as payloads carrying their number.
fn numbered_payloads(entries: impl IntoIterator<Item = (Seq, Vec<u8>)>) -> Vec<(Seq, Payload)> {
    entries
        .into_iter()
        .filter_map(|(seq, msg)| {
            Payload::new(Bytes::from(msg))
                .ok()
                .map(|p| (seq, p.into_numbered(seq)))
        })
        .collect()
}

/// The push script's answer: {receivers, seq (0: unnumbered), epoch, queued (0/1)}.
fn parse_pushed(items: &[Value]) -> Option<Published> {
    let receivers = items.first()?.as_i64()?;
    let seq = items.get(1).and_then(Value::as_u64).unwrap_or(0);
    let epoch = items
        .get(2)
        .and_then(|v| v.as_str().and_then(|e| u64::from_str_radix(&e, 16).ok()));
    let at = epoch
        .filter(|_| seq > 0)
        .map(|epoch| Position { epoch, seq });
    let queued = items.get(3).and_then(Value::as_i64) == Some(1);
    Some(Published {
        receivers,
        at,
        queued,
    })
}

/// `EVAL`/`EVALSHA`, routed to `slot` (its first argument is the script, not a key).
fn script_command(name: &'static str, slot: u16) -> fred::types::CustomCommand {
    fred::types::CustomCommand::new_static(name, fred::types::ClusterHash::Custom(slot), false)
}

/// The numbering script's arguments for one push (see `cluster_history.rs`). Numbers go
/// as integers and constants as static strings, and `script` and the node are shared
/// values, so only the keys, the channel and the epoch are allocated per push: at a
/// `/group` of 57k members this runs 57k times on the origin.
fn script_args(cluster: &Cluster, out: &Outgoing, n: &Numbered, script: Value) -> Vec<Value> {
    let limits = cluster.history.unwrap_or(HistoryLimits {
        messages: 0,
        bytes: 0,
        age: Duration::ZERO,
        total_bytes: 0,
        keep: Duration::ZERO,
    });
    let int = |v: u64| Value::Integer(i64::try_from(v).unwrap_or(i64::MAX));
    vec![
        script,
        Value::from_static_str("3"),
        n.keys[0].as_str().into(),
        n.keys[1].as_str().into(),
        n.keys[2].as_str().into(),
        out.channel.as_str().into(),
        cluster.node_arg.clone(),
        int(n.req),
        Value::Bytes(out.message.clone()),
        int(now_ms()),
        int(limits.messages as u64),
        int(limits.bytes as u64),
        int(limits.age.as_millis() as u64),
        int(n.queue_ttl),
        ch::epoch_text(ch::new_epoch()).into(),
    ]
}

/// Handles what arrives on the subscribed channels.
async fn listen(cluster: Arc<Cluster>) {
    let reply_channel = reply_channel(&cluster.node);
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
        let uid = msg.channel.strip_prefix(UID_PREFIX);
        let mine = origin == cluster.node.as_bytes();
        if let (Ask::Numbered, Some(uid)) = (kind, uid) {
            // Numbered in Redis: every holder's v1 tabs get it from here, ours too; the
            // origin gave its seed tabs theirs at once.
            let delivery = match ch::parse_numbered(body) {
                Some((at, payload)) => match Payload::new(Bytes::copy_from_slice(payload)) {
                    // The number travels in the payload (`m SEQ` when it is written).
                    Ok(p) => {
                        let p = match at {
                            Some(at) => p.into_numbered(at.seq),
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
                    channel: reply_channel_of(origin),
                    message: message.freeze(),
                    numbered: None,
                    done: None,
                    waits: None,
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

/// Separates the answers batched in one message on an origin's reply channel.
const ANSWER_SEP: u8 = b';';

/// Answers per batch at most, so a long burst still answers as it goes (the origin's
/// wait is bounded) and one message stays a few KiB.
const ANSWER_BATCH: usize = 256;

/// A holder's answers not yet published, by origin: `<req> <queued> <refused>` joined by
/// [`ANSWER_SEP`]. One publish per origin and burst instead of one per request: Redis,
/// this node and the origin each handle one message for up to [`ANSWER_BATCH`] answers.
#[derive(Default)]
struct Answers {
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
        channel: reply_channel_of(origin),
        message,
        numbered: None,
        done: None,
        waits: None,
    });
}

/// Drops the memberships of uids whose grace period ended while no node holds them.
async fn sweep(cluster: Arc<Cluster>) {
    let every = (cluster.groups.grace / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        if !cluster.is_up() {
            continue;
        }
        let due: Vec<String> = match cluster
            .cmd
            .custom(
                fred::cmd!("ZRANGEBYSCORE"),
                vec![
                    GRACE.to_owned(),
                    "-inf".to_owned(),
                    now_ms().to_string(),
                    "LIMIT".to_owned(),
                    "0".to_owned(),
                    "256".to_owned(),
                ],
            )
            .await
        {
            Ok(due) => due,
            Err(_) => continue,
        };
        for uid in due {
            let here = cluster.registry.connections_of(&uid);
            let remote = cluster.online(&uid).await;
            if remote.unavailable || remote.in_doubt || remote.missing > 0 {
                continue; // Not sure: try again next time.
            }
            let result = if here + remote.delivery.queued > 0 {
                cluster
                    .cmd
                    .custom::<usize, _>(fred::cmd!("ZREM"), vec![GRACE.to_owned(), uid.clone()])
                    .await
                    .map(|_| ())
            } else {
                cluster.forget(&uid).await
            };
            if let Err(err) = result {
                debug!(%err, "grace sweep failed; retried");
            }
        }
    }
}

/// Runs `client`'s connection task, and starts it again whenever it ends. With an
/// unlimited reconnect policy it should run until `QUIT`, but fred 10 ends it for good on
/// some failures of its first cluster sync ("Invalid or missing cluster state", seen with
/// a node started while its Redis Cluster was still forming), leaving the node degraded
/// for ever. Ends when the node leaves (`stop`; its `QUIT` ends the task too).
async fn keep_connected<C: ClientLike>(
    client: C,
    link: &'static str,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let ended = client.connect().await;
        if stop.is_cancelled() {
            return;
        }
        // Why is logged by `report_errors` (once a minute for the same error).
        debug!(link, ?ended, "redis client stopped; starting it again");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Tracks whether Redis is up; re-announces every uid after a reconnect.
async fn watch(cluster: Arc<Cluster>) {
    let mut was_up = false;
    let reply = reply_channel(&cluster.node);
    // A reconnect can be quicker than this loop's look (a connection Redis closed, e.g. by
    // `reap`, is back within ~100 ms while the client still reads as connected), and the
    // client's own re-subscription does not cover shard channels: each (re)connection of
    // the subscriber counts as having been down.
    let mut reconnects = cluster.sub.reconnect_rx();
    loop {
        use tokio::sync::broadcast::error::TryRecvError;
        while !matches!(
            reconnects.try_recv(),
            Err(TryRecvError::Empty | TryRecvError::Closed)
        ) {
            was_up = false;
        }
        let up = cluster.cmd.is_connected() && cluster.sub.is_connected();
        if up && !was_up {
            // (Re)connected: our reply channel and every uid we hold.
            if cluster.sub.ssubscribe(reply.as_str()).await.is_ok()
                && cluster.sub.ssubscribe(ALL).await.is_ok()
            {
                // A (re)started Redis knows none of our uid channels: forget what we
                // had and let `reconcile` subscribe every uid held here again. Our
                // uids are uncounted first (uids that left while Redis was away are
                // not announced again), then counted again as they are announced.
                if let Err(err) = cluster.forget_node_online(cluster.sub.id()).await {
                    debug!(%err, "could not take back this node's online uids; retried");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                cluster
                    .subscribed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
                cluster.mark_all();
                // Its handshake was just answered: whatever a probe of the old link said
                // no longer holds.
                cluster.answering.store(true, Relaxed);
                info!("redis connected");
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        } else if !up && was_up {
            warn!("redis unreachable: serving local connections only");
        }
        if up && !was_up && cluster.history.is_some() {
            // Only a hint: a shard that lacks it is sent the text (see `publisher`).
            let sha: Result<String, _> = cluster.cmd.script_load(ch::push_script()).await;
            *cluster.push_sha.lock().unwrap_or_else(|e| e.into_inner()) = sha.ok();
        }
        cluster.up.store(up, Relaxed);
        cluster.registry.set_remote_up(cluster.is_up());
        was_up = up;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// How often a node asks Redis whether it answers.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// The shard channels of the probes: `pw:probe:{T}`, one in a slot of each primary.
const PROBE_PREFIX: &str = "pw:probe:";

/// A hash slot of each Redis primary (the one server: slot 0), so that a key or shard
/// channel tagged for it ([`ch::key_in_slot`]) lands on that primary.
fn primary_slots(cluster: &Cluster) -> Vec<u16> {
    match cluster.cmd.cached_cluster_state() {
        Some(state) if cluster.cmd.is_clustered() => state.unique_hash_slots(),
        _ => vec![0],
    }
}

/// Tells whether Redis answers while the links are up: an empty publish to every
/// primary (`SPUBLISH pw:probe:{T}`, which nobody hears) every [`PROBE_EVERY`]. One not
/// answered within `--cluster-timeout-ms` means Redis is not answering
/// ([`Cluster::not_answering`]: no more pushes are written, replies are given at once,
/// `/readyz` is degraded) until a later one is answered. A connection that merely stays
/// open is not a Redis that answers: a stopped or paused Redis keeps it open, and so does
/// a cut link until the kernel gives up on it ([`link_tcp`]). A publish rather than a
/// `PING`: `CLIENT PAUSE … WRITE` holds publishes but answers pings, and what matters is
/// whether a push would get through.
async fn probe(cluster: Arc<Cluster>) {
    // One attempt, failed at once while disconnected: `watch` reports a lost link.
    let once = fred::types::config::Options {
        max_attempts: Some(1),
        fail_fast: true,
        ..Default::default()
    };
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        if !cluster.up.load(Relaxed) {
            continue;
        }
        let client = cluster.cmd.with_options(&once);
        let pings = primary_slots(&cluster).into_iter().map(|slot| {
            let (client, channel) = (&client, ch::key_in_slot(PROBE_PREFIX, slot));
            async move { client.spublish::<Value, _, _>(channel, "").await }
        });
        let asked = tokio::time::timeout(cluster.timeout, futures_util::future::join_all(pings));
        match asked.await {
            Ok(answers) if answers.iter().all(Result::is_ok) => cluster.answering_again(),
            Ok(answers) => {
                let timed_out = answers.iter().any(|a| {
                    a.as_ref()
                        .is_err_and(|e| *e.kind() == fred::error::ErrorKind::Timeout)
                });
                if timed_out {
                    cluster.not_answering("a probe");
                }
            }
            Err(_) => cluster.not_answering("a probe"),
        }
    }
}

impl Cluster {
    /// Redis left `what` unanswered for `--cluster-timeout-ms`: it counts as down until it
    /// answers a probe (logged once per episode).
    fn not_answering(&self, what: &str) {
        if self.answering.swap(false, Relaxed) {
            self.registry.set_remote_up(false);
            warn!(
                unanswered = what,
                "redis not answering within --cluster-timeout-ms: serving local connections only"
            );
        }
    }

    /// Redis answered a probe.
    fn answering_again(&self) {
        if !self.answering.swap(true, Relaxed) {
            info!("redis answering again");
        }
    }
}

/// TCP options of every connection to Redis. A connection whose data goes
/// unacknowledged for `timeout` is closed by the kernel (`TCP_USER_TIMEOUT`), and an idle
/// one is probed every second (keepalive) so that the same holds for it; the client then
/// reconnects (every 2 s at most while the link is down). Without them a cut link stays
/// "connected" for as long as TCP retransmits (~15 minutes), and once it is back the
/// connection resumes only at TCP's next back-off (5.8–14 s were measured).
fn link_tcp(timeout: Duration) -> fred::types::config::TcpConfig {
    let keepalive = socket2_fred::TcpKeepalive::new()
        .with_time(Duration::from_secs(1))
        .with_interval(Duration::from_secs(1));
    fred::types::config::TcpConfig {
        keepalive: Some(keepalive),
        user_timeout: Some(timeout),
        ..Default::default()
    }
}

/// How often a node says it is alive.
const NODE_BEAT: Duration = Duration::from_secs(1);
/// How long a node may go without saying so before its subscriptions are closed.
const NODE_DEAD: Duration = Duration::from_secs(5);
/// The live nodes' subscriber clients: name -> the Redis time (ms) past which it is dead.
const NODES: &str = "{pw}:nodes";

/// Records this node's subscriber as alive until now + ARGV[2] ms (Redis's clock, so the
/// nodes' clocks do not matter) and returns the names whose time is up. If nobody beat
/// for over ARGV[3] ms, Redis itself was away (paused, restarted from a snapshot): then
/// every node gets a fresh deadline and none is reported.
const BEAT_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('HGET', KEYS[1], '') or now)
local dead = {}
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local name, deadline = entries[i], tonumber(entries[i + 1])
  if name ~= '' and name ~= ARGV[1] then
    if now - last > tonumber(ARGV[3]) then
      redis.call('HSET', KEYS[1], name, now + tonumber(ARGV[2]))
    elseif deadline < now then
      table.insert(dead, name)
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]), '', now)
return dead
"#;

/// Says every second that this node is alive, and closes the subscriber connections of
/// nodes that stopped saying so. A node cut off without its TCP connections closing (a
/// network partition, a hung or stopped process) keeps its subscriptions in Redis until
/// Redis notices (its `tcp-keepalive`, 300 s by default); meanwhile every push to its
/// uids waits for an answer that cannot come (`partial`), and it counts in presence.
/// After [`NODE_DEAD`] without a beat, whichever node sees it first closes them
/// (`CLIENT KILL`), and its uids are offline at once; if it comes back, its client
/// reconnects and subscribes again.
async fn beat(cluster: Arc<Cluster>) {
    let me = cluster.sub.id().to_owned();
    let args = vec![
        me.clone(),
        NODE_DEAD.as_millis().to_string(),
        (2 * NODE_BEAT).as_millis().to_string(),
    ];
    // The first beat as soon as the link is up: a node is unknown to the others until
    // it has beaten once.
    let mut wait = Duration::ZERO;
    loop {
        tokio::time::sleep(wait).await;
        wait = Duration::from_millis(50);
        if !cluster.is_up() {
            continue;
        }
        let dead: Vec<String> = match cluster
            .cmd
            .eval(BEAT_SCRIPT, vec![NODES.to_owned()], args.clone())
            .await
        {
            Ok(dead) => dead,
            Err(err) => {
                debug!(%err, "node beat failed; retried");
                continue;
            }
        };
        wait = NODE_BEAT;
        match check_epochs(&cluster).await {
            Ok(false) => {}
            Ok(true) => cluster.lost_data(),
            Err(err) => debug!(%err, "data epoch check failed; retried"),
        }
        for name in dead {
            // Its uids are uncounted before its connections close: if it was only slow,
            // it reconnects and counts them again after this.
            if let Err(err) = cluster.forget_node_online(&name).await {
                debug!(%err, client = %name, "could not uncount a dead node's uids; retried");
                continue;
            }
            match reap(&cluster, &name).await {
                Ok(closed) => {
                    // None left (it left without saying so): nothing to tell.
                    if closed > 0 {
                        warn!(client = %name, closed, "a node stopped answering: its subscriptions are closed");
                    }
                    let _: Result<(), _> = cluster.cmd.hdel(NODES, name.as_str()).await;
                }
                Err(err) => {
                    debug!(%err, client = %name, "closing a dead node's subscriptions failed; retried")
                }
            }
        }
    }
}

/// Each primary's data epoch: `pw:epoch:{T}`, a counter in a slot that primary serves.
const EPOCH_PREFIX: &str = "pw:epoch:";

/// Raises every primary's data epoch (`INCR`, with each beat of every node) and tells
/// whether one came back not above what this node last got from it: then that primary
/// lost its data (restarted without persistence, flushed, or restored from an older
/// snapshot), since the counter only goes up while the data is kept. A primary seen for
/// the first time (a fresh node, a new shard) is only read.
async fn check_epochs(cluster: &Cluster) -> Result<bool, fred::error::Error> {
    let mut lost = false;
    for slot in primary_slots(cluster) {
        let now: u64 = cluster
            .cmd
            .incr(ch::key_in_slot(EPOCH_PREFIX, slot))
            .await?;
        let mut epochs = cluster.epochs.lock().unwrap_or_else(|e| e.into_inner());
        if epochs.insert(slot, now).is_some_and(|before| now <= before) {
            lost = true;
        }
    }
    Ok(lost)
}

impl Cluster {
    /// A primary lost its data. What this node holds is announced again: its uid
    /// subscriptions (the reconnect after a restart did it; `watch`), its liveness (the
    /// next beat), and for each of its v1 tabs a history, made afresh when the tab, closed
    /// here with 1012, reconnects with `since` (`not_recovered`); without that they would
    /// get unnumbered messages for as long as they stay. What only Redis held is gone, and
    /// no node can tell what it was: group memberships, kept histories, offline queues,
    /// acks, retry claims.
    fn lost_data(&self) {
        let tabs = self.registry.resync_remote_fed();
        warn!(
            v1_tabs_resynced = tabs,
            "redis lost its data (restarted without persistence, flushed, or an older snapshot): \
             group memberships, histories, offline queues, acks and retry claims kept there are gone \
             (appendonly yes keeps them); v1 tabs resync"
        );
    }
}

/// Closes every connection named `name` on every Redis primary; returns how many.
async fn reap(cluster: &Cluster, name: &str) -> Result<usize, fred::error::Error> {
    // One client per primary of a Redis Cluster; the one server otherwise.
    let mut clients: Vec<_> = cluster
        .cmd
        .cached_cluster_state()
        .filter(|_| cluster.cmd.is_clustered())
        .map(|state| state.unique_primary_nodes())
        .unwrap_or_default()
        .into_iter()
        .map(|server| cluster.cmd.with_cluster_node(server))
        .collect();
    if clients.is_empty() {
        clients.push(
            cluster
                .cmd
                .with_options(&fred::types::config::Options::default()),
        );
    }
    let mut closed = 0;
    for client in clients {
        let text: String = client.custom(fred::cmd!("CLIENT"), vec!["LIST"]).await?;
        for id in connection_ids_named(&text, name) {
            let killed: i64 = client
                .custom(fred::cmd!("CLIENT"), vec!["KILL", "ID", id])
                .await
                .unwrap_or(0);
            closed += usize::try_from(killed).unwrap_or(0);
        }
    }
    Ok(closed)
}

/// The ids in a `CLIENT LIST` reply of the connections named `name`.
fn connection_ids_named<'a>(list: &'a str, name: &str) -> Vec<&'a str> {
    list.lines()
        .filter(|line| {
            line.split(' ')
                .any(|f| f.strip_prefix("name=") == Some(name))
        })
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .collect()
}

/// A Redis client's connection errors, as fred reports them.
type LinkErrors =
    tokio::sync::broadcast::Receiver<(fred::error::Error, Option<fred::types::config::Server>)>;

/// How often the same connection error is logged again while it lasts.
const ERROR_REPEAT: Duration = Duration::from_secs(60);

/// Logs why Redis cannot be reached (refused, timed out, a certificate not trusted, a
/// wrong password): fred retries on its own and says why only on these streams. The same
/// error again (on either link) is logged once a minute at most, so an outage costs a
/// line a minute per distinct error, not one per retry, even when two errors alternate
/// (a cut link: one connection times out while the other finds no route); a new one is
/// logged at once.
async fn report_errors((mut cmd, mut sub): (LinkErrors, LinkErrors)) {
    use tokio::sync::broadcast::error::RecvError;
    /// Distinct errors remembered (the oldest is forgotten past it).
    const REMEMBERED: usize = 8;
    let mut logged: Vec<(String, tokio::time::Instant)> = Vec::with_capacity(REMEMBERED);
    loop {
        let (got, link) = tokio::select! {
            got = cmd.recv() => (got, "commands"),
            got = sub.recv() => (got, "subscriptions"),
        };
        let (err, server) = match got {
            Ok(event) => event,
            Err(RecvError::Lagged(_)) => continue,
            // The client is gone: the node is leaving the cluster.
            Err(RecvError::Closed) => return,
        };
        let text = err.to_string();
        let now = tokio::time::Instant::now();
        logged.retain(|(_, at)| now.duration_since(*at) < ERROR_REPEAT);
        if logged.iter().any(|(t, _)| *t == text) {
            continue;
        }
        let server = server.map_or_else(|| "-".to_owned(), |s| s.to_string());
        warn!(link, %server, error = %text, "redis connection failed; retrying");
        if logged.len() == REMEMBERED {
            logged.remove(0);
        }
        logged.push((text, now));
    }
}

/// A retry claim: the first outcome if the key exists, else `p` (pending) for the window.
const CLAIM_SCRIPT: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], 'p', 'PX', ARGV[1])
return false
"#;

/// `pw:d:` and the hex SHA-256 (first 128 bits) of the ID, a NUL and the line.
fn dedupe_key(id: &str, line: &[u8]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(id.as_bytes());
    h.update([0u8]);
    h.update(line);
    let digest = h.finalize();
    let mut key = String::with_capacity(5 + 32);
    key.push_str("pw:d:");
    for b in &digest[..16] {
        key.push_str(&format!("{b:02x}"));
    }
    key
}

/// A first outcome as kept in Redis: `d` (delivered) or `q` (queued), then ` EPOCH SEQ`
/// if it had a place in a history.
fn first_text(f: &crate::dedupe::First) -> String {
    let kind = if f.queued { "q" } else { "d" };
    match f.at {
        Some(at) => format!("{kind} {} {}", ch::epoch_text(at.epoch), at.seq),
        None => kind.to_owned(),
    }
}

/// [`first_text`] back; `None` for `p` (still running) or anything else.
fn parse_first(text: &str) -> Option<crate::dedupe::First> {
    let mut it = text.split(' ');
    let queued = match it.next()? {
        "d" => false,
        "q" => true,
        _ => return None,
    };
    let at = match (it.next(), it.next()) {
        (Some(e), Some(s)) => Some(Position {
            epoch: u64::from_str_radix(e, 16).ok()?,
            seq: s.parse().ok()?,
        }),
        _ => None,
    };
    Some(crate::dedupe::First { queued, at })
}

const UID_PREFIX: &str = "pw:u:";
const GROUPS: &str = "{pw}:groups";
const GRACE: &str = "{pw}:grace";
/// Uid -> how many nodes hold it (`online.rs`).
const ONLINE: &str = "{pw}:online";

/// The uids node `name` (its subscriber client) is counted for in [`ONLINE`].
fn node_uids_key(name: &str) -> String {
    format!("{{pw}}:on:{name}")
}

fn group_key(group: &str) -> String {
    format!("{{pw}}:g:{group}")
}

fn uid_groups_key(uid: &str) -> String {
    format!("{{pw}}:ug:{uid}")
}

/// `/join`: KEYS groups, grace, the group's members, then each uid's groups; ARGV group,
/// max groups, max members, grace deadline (ms), then the uids (distinct). Returns
/// {added, members}, or {-1, 0} (too many groups), {-2, 0} (group full), changing nothing.
const JOIN_SCRIPT: &str = r#"
local current = redis.call('SCARD', KEYS[3])
if current == 0 and redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0
    and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return {-1, 0}
end
local new = 0
for i = 5, #ARGV do
  if redis.call('SISMEMBER', KEYS[3], ARGV[i]) == 0 then new = new + 1 end
end
if current + new > tonumber(ARGV[3]) then return {-2, 0} end
for i = 5, #ARGV do
  redis.call('SADD', KEYS[3], ARGV[i])
  redis.call('SADD', KEYS[i - 1], ARGV[1])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[i])
end
if #ARGV >= 5 then redis.call('SADD', KEYS[1], ARGV[1]) end
return {new, current + new}
"#;

/// `/leave`: KEYS groups, the group's members, then each uid's groups; ARGV group, then
/// the uids. Returns {removed, members left}; an emptied group is gone.
const LEAVE_SCRIPT: &str = r#"
local removed = 0
for i = 2, #ARGV do
  removed = removed + redis.call('SREM', KEYS[2], ARGV[i])
  redis.call('SREM', KEYS[i + 1], ARGV[1])
end
local left = redis.call('SCARD', KEYS[2])
if left == 0 then redis.call('SREM', KEYS[1], ARGV[1]) end
return {removed, left}
"#;

/// Drops a uid from every group: KEYS groups, grace, the uid's groups; ARGV uid, the
/// prefix of a group's members key. The members keys are named by the uid's groups, so
/// they are not in KEYS; they share the `{pw}` hash slot, which a Redis Cluster allows.
const FORGET_SCRIPT: &str = r#"
for _, g in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local key = ARGV[2] .. g
  redis.call('SREM', key, ARGV[1])
  if redis.call('SCARD', key) == 0 then redis.call('SREM', KEYS[1], g) end
end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[2], ARGV[1])
return 0
"#;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn uid_channel(uid: &str) -> String {
    format!("{UID_PREFIX}{uid}")
}

fn reply_channel(node: &str) -> String {
    format!("pw:r:{node}")
}

fn reply_channel_of(node: &[u8]) -> String {
    reply_channel(&String::from_utf8_lossy(node))
}

/// What a request asks of the nodes that get it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
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
    /// A push numbered by Redis's script (`EPOCH SEQ\nPAYLOAD`, see `cluster_history.rs`).
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

/// The channel every node listens on, for requests to all of them.
const ALL: &str = "pw:all";

/// `<node> <req> <kind>\n<body>`.
fn envelope(node: &str, req: u64, kind: Ask, body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(node.len() + 24 + body.len());
    b.put_slice(node.as_bytes());
    b.put_slice(format!(" {req} ").as_bytes());
    b.put_u8(kind.letter());
    b.put_u8(b'\n');
    b.put_slice(body);
    b.freeze()
}

fn parse_envelope(b: &[u8]) -> Option<(&[u8], u64, Ask, &[u8])> {
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
fn answer(req: u64, d: Delivery) -> Bytes {
    let mut b = BytesMut::new();
    put_answer(&mut b, req, d);
    b.freeze()
}

/// Appends `<req> <queued> <refused>` to `buf` (no allocation of its own).
fn put_answer(buf: &mut BytesMut, req: u64, d: Delivery) {
    use std::fmt::Write;
    // Writing to a BytesMut cannot fail.
    let _ = write!(buf, "{req} {} {}", d.queued, d.refused);
}

/// What one message on a reply channel says: one answer with a body, or any number
/// without, joined by [`ANSWER_SEP`] (a holder's batch). Malformed ones are skipped.
fn parse_answers(b: &[u8]) -> Vec<(u64, Delivery, Option<&[u8]>)> {
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
const HASH_END: u64 = 1 << 32;

/// The order of a cluster-wide `/uids` walk: FNV-1a (32 bits) of the uid's bytes, the
/// same on every node and every build.
fn uid_hash(uid: &str) -> u32 {
    uid.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A node's `/uids` answer body: `<end>\n<JSON array of uids>`.
fn uids_page_body(end: u64, uids: &[(u32, Uid)]) -> Bytes {
    let names: Vec<&str> = uids.iter().map(|(_, u)| &**u).collect();
    let mut b = format!("{end}\n").into_bytes();
    // Serialising a list of strings cannot fail.
    let _ = serde_json::to_writer(&mut b, &names);
    Bytes::from(b)
}

fn parse_uids_page(b: &[u8]) -> Option<(u64, Vec<String>)> {
    let nl = memchr::memchr(b'\n', b)?;
    let end = std::str::from_utf8(&b[..nl]).ok()?.parse().ok()?;
    let uids = serde_json::from_slice(&b[nl + 1..]).ok()?;
    Some((end, uids))
}

/// A random node id, 16 hex digits.
fn node_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// The URL without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the publisher sends of a batch taken after some replies stopped waiting: a
    /// single push whose reply is gone is dropped (and told so), one still waited for is
    /// marked sent (its reply will say in doubt, not unavailable), a fan-out member is
    /// sent either way.
    #[tokio::test]
    async fn publishes_whose_reply_is_gone_are_dropped_and_the_rest_marked_sent() {
        let out = |name: &str, waits| {
            let (done, answer) = oneshot::channel();
            let out = Outgoing {
                channel: name.to_owned(),
                message: Bytes::new(),
                numbered: None,
                done: Some(done),
                waits,
            };
            (out, answer)
        };
        let mut waiting = HashMap::new();
        waiting.insert(2, Waiting::default());
        let (gone, gone_answer) = out("reply gone", Some(1));
        let (member, _) = out("fan-out member", None);
        let (in_time, _) = out("in time", Some(2));
        let mut batch = vec![gone, member, in_time];
        take_waited(&mut batch, &mut waiting);
        let kept: Vec<_> = batch.iter().map(|o| o.channel.as_str()).collect();
        assert_eq!(kept, ["fan-out member", "in time"]);
        assert!(matches!(gone_answer.await, Ok(Err(Unanswered::NotSent))));
        assert!(waiting[&2].sent);
        // Redis not answering: pushes and members are refused, answers still go.
        let (refused, refused_answer) = out("refused", Some(2));
        let (member, member_answer) = out("member", None);
        let answer = Outgoing {
            channel: "answer".to_owned(),
            message: Bytes::new(),
            numbered: None,
            done: None,
            waits: None,
        };
        let mut batch = vec![refused, member, answer];
        refuse_pushes(&mut batch);
        let kept: Vec<_> = batch.iter().map(|o| o.channel.as_str()).collect();
        assert_eq!(kept, ["answer"]);
        assert!(matches!(refused_answer.await, Ok(Err(Unanswered::NotSent))));
        assert!(matches!(member_answer.await, Ok(Err(Unanswered::NotSent))));
    }

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

    #[test]
    fn client_list_lines_are_matched_by_exact_name() {
        let list = "id=7 addr=127.0.0.1:5 laddr=127.0.0.1:6 fd=8 name=fred-ab age=1 ssub=2\n\
                    id=9 addr=127.0.0.1:7 laddr=127.0.0.1:6 fd=9 name=fred-abc age=1\n\
                    id=11 addr=127.0.0.1:8 laddr=127.0.0.1:6 fd=10 name=fred-ab age=3 ssub=0\n";
        assert_eq!(connection_ids_named(list, "fred-ab"), ["7", "11"]);
        assert_eq!(connection_ids_named(list, "fred-abc"), ["9"]);
        assert!(connection_ids_named(list, "fred").is_empty());
    }

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
        assert_eq!(redacted("redis://:pw@h:1/0"), "redis://***@h:1/0");
        assert_eq!(node_id().len(), 16);
    }
}
