//! Every node's figures on every node's live page (`GET /status`, docs/http.md, "The live
//! page"). In cluster mode each node writes its own row to Redis once a second
//! (connections, uids, push counters, its event queue, its view of Redis, a digest of its
//! webhook receivers) and reads every node's back in the same round trip; `/status.json`
//! shows the last read, so a page open on a phone costs Redis nothing.
//!
//! The receivers' digests also tell whether every node was given the same `--events-url`s
//! (docs/events.md, "In a cluster"): a difference is logged at WARN and shown on the page,
//! and a node with no receivers of its own that sees some elsewhere takes part in
//! cluster presence, so its uids count and its events reach them ([`ClusterPresence`]).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fred::interfaces::{ClientLike, HashesInterface, SortedSetsInterface};
use fred::types::Value;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::cluster::Cluster;
use crate::cluster_presence::ClusterPresence;
use crate::events::Hub;
use crate::metrics::{Metric, Metrics};
use crate::registry::Registry;

/// This build, as `/status.json` names it.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("PUSHWIRE_GIT"),
    ")"
);

/// How often a node writes its row and reads the others'.
const EVERY: Duration = Duration::from_secs(1);
/// A row not written again for this long is shown as silent (its node stopped, or lost
/// Redis), and no longer counts as a node's receivers.
pub const SILENT_AFTER: Duration = Duration::from_secs(5);
/// A row not written again for this long is removed (a node that left without saying so).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// One node's row.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeRow {
    /// The node's id (events and `/status.json` use the same).
    pub node: String,
    /// Its clock when it wrote the row (ms since the epoch): a page computes rates from
    /// two rows of one node.
    #[serde(default)]
    pub time_ms: u64,
    /// Its browser connections.
    #[serde(default)]
    pub connections: u64,
    /// The uids it holds a connection of.
    #[serde(default)]
    pub uids: u64,
    /// Its `pushes_ok` and `pushes_fail` counters.
    #[serde(default)]
    pub pushes_ok: u64,
    /// See `pushes_ok`.
    #[serde(default)]
    pub pushes_fail: u64,
    /// Events waiting in its receivers' queues, and those it dropped.
    #[serde(default)]
    pub events_queued: u64,
    /// See `events_queued`.
    #[serde(default)]
    pub events_dropped: u64,
    /// Its link to Redis as it sees it: `up`, or what `/readyz` says is wrong.
    #[serde(default)]
    pub redis: String,
    /// A digest of its `--events-url`s ("" with none): equal on nodes given the same.
    #[serde(default)]
    pub receivers: String,
    /// Its version.
    #[serde(default)]
    pub version: String,
    /// How long ago it wrote the row (ms, Redis's clock); the reader fills it in.
    #[serde(default)]
    pub age_ms: u64,
}

/// This node's part: its row written, everyone's read.
#[derive(Debug)]
pub struct NodeFigures {
    cluster: Arc<Cluster>,
    registry: Registry,
    metrics: Arc<Metrics>,
    hub: Arc<Hub>,
    presence: Option<Arc<ClusterPresence>>,
    /// Every node's row as last read (this one's included), by node id.
    rows: Mutex<Vec<NodeRow>>,
    /// Nodes last seen with receivers other than ours (logged when it changes).
    differing: Mutex<BTreeSet<String>>,
    stop: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl NodeFigures {
    /// Starts writing and reading the rows (a task, until [`NodeFigures::leave`]).
    /// `presence` is told when another node has receivers (see the module's doc).
    pub fn start(
        cluster: &Arc<Cluster>,
        registry: &Registry,
        metrics: &Arc<Metrics>,
        hub: &Arc<Hub>,
        presence: Option<Arc<ClusterPresence>>,
    ) -> Arc<NodeFigures> {
        let f = Arc::new(NodeFigures {
            cluster: cluster.clone(),
            registry: registry.clone(),
            metrics: metrics.clone(),
            hub: hub.clone(),
            presence,
            rows: Mutex::default(),
            differing: Mutex::default(),
            stop: CancellationToken::new(),
        });
        let task = tokio::spawn(f.clone().run());
        let stop = f.stop.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            task.abort();
        });
        f
    }

    /// Every node's row as last read, this one's first, then by node id.
    pub fn rows(&self) -> Vec<NodeRow> {
        lock(&self.rows).clone()
    }

    /// Nodes seen (within [`SILENT_AFTER`]) with receivers other than this node's.
    pub fn differing(&self) -> Vec<String> {
        lock(&self.differing).iter().cloned().collect()
    }

    fn mine(&self) -> NodeRow {
        use Metric::*;
        let (uids, connections) = self.registry.totals();
        let m = &self.metrics;
        NodeRow {
            node: self.cluster.node().to_owned(),
            time_ms: crate::events::event::unix_millis(),
            connections: connections as u64,
            uids: uids as u64,
            pushes_ok: m.value(PushesOk),
            pushes_fail: m.value(PushesFail),
            events_queued: self.hub.queued() as u64,
            events_dropped: [
                EventsDroppedFull,
                EventsDroppedRefused,
                EventsDroppedAttempts,
                EventsDroppedShutdown,
            ]
            .iter()
            .map(|k| m.value(*k))
            .sum(),
            redis: self.cluster.trouble().unwrap_or("up").to_owned(),
            receivers: self.hub.fingerprint(),
            version: VERSION.to_owned(),
            age_ms: 0,
        }
    }

    async fn run(self: Arc<Self>) {
        loop {
            let mine = self.mine();
            // This node's own row is always its latest, whatever Redis says.
            if self.cluster.is_up() {
                match self.exchange(&mine).await {
                    Ok(rows) => self.take(mine, rows),
                    Err(err) => {
                        debug!(%err, "node figures: Redis failed; retried");
                        self.take(mine, Vec::new());
                    }
                }
            } else {
                self.take(mine, Vec::new());
            }
            tokio::time::sleep(EVERY).await;
        }
    }

    /// Writes this node's row and reads every node's, with how long ago each was written
    /// by Redis's clock (so the nodes' clocks do not matter): Redis's time, then one
    /// pipeline. Plain commands, no script: a node's other scripts are counted by tests
    /// that hold Redis's work to what pushes need.
    async fn exchange(&self, mine: &NodeRow) -> Result<Vec<NodeRow>, fred::error::Error> {
        let redis = self.cluster.redis();
        let [rows, at] = self.cluster.figures_keys();
        let time: Vec<String> = redis
            .custom(fred::cmd!("TIME"), Vec::<String>::new())
            .await?;
        let now = match time.as_slice() {
            [secs, micros] => {
                secs.parse::<u64>().unwrap_or(0) * 1000 + micros.parse::<u64>().unwrap_or(0) / 1000
            }
            _ => 0,
        };
        let forget = now.saturating_sub(FORGET_AFTER.as_millis() as u64);
        let json = serde_json::to_string(mine).unwrap_or_default();
        let pipeline = redis.pipeline();
        let _: Result<(), _> = pipeline.hset(&rows, (mine.node.as_str(), json)).await;
        let _: Result<(), _> = pipeline
            .custom(
                fred::cmd!("ZADD"),
                vec![at.clone(), now.to_string(), mine.node.clone()],
            )
            .await;
        let _: Result<(), _> = pipeline
            .custom(
                fred::cmd!("ZRANGEBYSCORE"),
                vec![at.clone(), "-inf".to_owned(), forget.to_string()],
            )
            .await;
        let _: Result<(), _> = pipeline
            .custom(
                fred::cmd!("ZRANGE"),
                vec![
                    at.clone(),
                    "0".to_owned(),
                    "-1".to_owned(),
                    "WITHSCORES".to_owned(),
                ],
            )
            .await;
        let _: Result<(), _> = pipeline.hgetall(&rows).await;
        let (_, _, gone, when, all): (
            Value,
            Value,
            Vec<String>,
            Vec<String>,
            HashMap<String, String>,
        ) = pipeline.all().await?;
        if !gone.is_empty() {
            // Rows of nodes gone without saying so (a minute silent).
            let _: i64 = redis.hdel(&rows, gone.clone()).await?;
            let _: i64 = redis.zrem(&at, gone.clone()).await?;
        }
        Ok(when
            .chunks_exact(2)
            .filter(|w| w[0] != mine.node && !gone.contains(&w[0]))
            .filter_map(|w| {
                // A row this version cannot read is left out, never a failure.
                let mut row: NodeRow = serde_json::from_str(all.get(&w[0])?).ok()?;
                row.node.clone_from(&w[0]);
                let written = w[1].parse::<f64>().unwrap_or(0.0) as u64;
                row.age_ms = now.saturating_sub(written);
                Some(row)
            })
            .collect())
    }

    /// Keeps the rows, and acts on the other nodes' receivers.
    fn take(&self, mine: NodeRow, mut others: Vec<NodeRow>) {
        others.sort_by(|a, b| a.node.cmp(&b.node));
        let live = |r: &&NodeRow| r.age_ms < SILENT_AFTER.as_millis() as u64;
        let differing: BTreeSet<String> = others
            .iter()
            .filter(live)
            .filter(|r| r.receivers != mine.receivers)
            .map(|r| r.node.clone())
            .collect();
        let receivers_elsewhere = others.iter().filter(live).any(|r| !r.receivers.is_empty());
        {
            let mut before = lock(&self.differing);
            if *before != differing && !differing.is_empty() {
                warn!(
                    nodes = ?differing,
                    "these nodes were given other --events-url receivers than this one: give \
                     every node the same (docs/events.md, \"In a cluster\"); meanwhile each \
                     node tells its own receivers what it decides"
                );
            }
            *before = differing;
        }
        if receivers_elsewhere && let Some(p) = &self.presence {
            p.activate();
        }
        let mut rows = vec![mine];
        rows.extend(others);
        *lock(&self.rows) = rows;
    }

    /// At a clean shutdown: this node's row goes at once (bounded by `deadline`).
    pub async fn leave(&self, deadline: tokio::time::Instant) {
        self.stop.cancel();
        let [rows, at] = self.cluster.figures_keys();
        let node = self.cluster.node().to_owned();
        let redis = self.cluster.redis();
        let gone = async {
            let _: Result<i64, _> = redis
                .custom(fred::cmd!("HDEL"), vec![rows, node.clone()])
                .await;
            let _: Result<i64, _> = redis.custom(fred::cmd!("ZREM"), vec![at, node]).await;
        };
        if tokio::time::timeout_at(deadline, gone).await.is_err() {
            debug!("removing this node's figures timed out");
        }
    }
}
