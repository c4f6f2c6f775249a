//! Which nodes are alive: a beat per second, the subscriptions of a node that stopped
//! beating closed, and a Redis that lost its data noticed by each primary's epoch.

use super::Cluster;
use super::link::primary_slots;
use fred::interfaces::{
    ClientLike, ClusterInterface, HashesInterface, KeysInterface, LuaInterface,
};
use fred::types::Value;
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;
use tracing::warn;

/// How often a node says it is alive.
const NODE_BEAT: Duration = Duration::from_secs(1);

/// How long a node may go without saying so before its subscriptions are closed.
const NODE_DEAD: Duration = Duration::from_secs(5);

/// Records node ARGV[1] as alive until now + ARGV[2] ms (Redis's clock, so the nodes'
/// clocks do not matter) in the deadlines hash KEYS[1]; with KEYS[2], takes (deletes) that
/// node's "reaped" mark. Returns whether the node was in the hash before, whether the mark
/// was there, then the names whose time is up. If nobody beat for over ARGV[3] ms, Redis
/// itself was away (paused, restarted from a snapshot): then every node gets a fresh
/// deadline and none is reported.
const BEAT_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('HGET', KEYS[1], '') or now)
local out = {redis.call('HEXISTS', KEYS[1], ARGV[1]), 0}
if KEYS[2] then out[2] = redis.call('DEL', KEYS[2]) end
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local name, deadline = entries[i], tonumber(entries[i + 1])
  if name ~= '' and name ~= ARGV[1] then
    if now - last > tonumber(ARGV[3]) then
      redis.call('HSET', KEYS[1], name, now + tonumber(ARGV[2]))
    elseif deadline < now then
      table.insert(out, name)
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]), '', now)
return out
"#;

/// What one beat found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Beat {
    /// This node was in the deadlines hash before the beat: false at its first beat, after
    /// it was reaped, or after Redis lost its data.
    pub known: bool,
    /// This node's reaped mark was there (and is now taken).
    pub reaped: bool,
    /// The other nodes past their deadline.
    pub dead: Vec<String>,
}

/// One heartbeat, shared by every user of node liveness (the subscriber links here, the
/// events' presence in `cluster_presence`), so a change to how a node is judged dead is
/// made once. `alive` is the deadlines hash, `mark` the node's reaped mark if its user
/// keeps one (same hash slot as `alive`); `dead_after` the deadline given, `away` how
/// long without any beat means Redis itself was away.
pub async fn beat_once(
    redis: &impl LuaInterface,
    alive: String,
    mark: Option<String>,
    node: &str,
    dead_after: Duration,
    away: Duration,
) -> Result<Beat, fred::error::Error> {
    let mut keys = vec![alive];
    keys.extend(mark);
    let args = vec![
        node.to_owned(),
        dead_after.as_millis().to_string(),
        away.as_millis().to_string(),
    ];
    let out: Vec<Value> = redis.eval(BEAT_SCRIPT, keys, args).await?;
    Ok(Beat {
        known: out.first().and_then(Value::as_i64) == Some(1),
        reaped: out.get(1).and_then(Value::as_i64) == Some(1),
        dead: out.iter().skip(2).filter_map(Value::as_string).collect(),
    })
}

/// Says every second that this node is alive, and closes the subscriber connections of
/// nodes that stopped saying so. A node cut off without its TCP connections closing (a
/// network partition, a hung or stopped process) keeps its subscriptions in Redis until
/// Redis notices (its `tcp-keepalive`, 300 s by default); meanwhile every push to its
/// uids waits for an answer that cannot come (`partial`), and it counts in presence.
/// After [`NODE_DEAD`] without a beat, whichever node sees it first closes them
/// (`CLIENT KILL`), and its uids are offline at once; if it comes back, its client
/// reconnects and subscribes again.
pub(super) async fn beat(cluster: Arc<Cluster>) {
    let me = cluster.sub.id().to_owned();
    // The first beat as soon as the link is up: a node is unknown to the others until
    // it has beaten once.
    let mut wait = Duration::ZERO;
    loop {
        tokio::time::sleep(wait).await;
        wait = Duration::from_millis(50);
        if !cluster.is_up() {
            continue;
        }
        let nodes = cluster.names.nodes().to_owned();
        let dead = match beat_once(&cluster.cmd, nodes, None, &me, NODE_DEAD, 2 * NODE_BEAT).await {
            Ok(beat) => beat.dead,
            Err(err) => {
                debug!(%err, "node beat failed; retried");
                continue;
            }
        };
        wait = NODE_BEAT;
        match check_epochs(&cluster).await {
            Ok(false) => {}
            Ok(true) => {
                // An older snapshot may still count uids that left since: this node's
                // are taken back before they are announced again.
                if let Err(err) = cluster.forget_node_online(&me).await {
                    debug!(%err, "could not take back this node's online uids after a data loss");
                }
                cluster.lost_data()
            }
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
                    let _: Result<(), _> =
                        cluster.cmd.hdel(cluster.names.nodes(), name.as_str()).await;
                }
                Err(err) => {
                    debug!(%err, client = %name, "closing a dead node's subscriptions failed; retried")
                }
            }
        }
    }
}

/// Raises every primary's data epoch (`INCR`, with each beat of every node) and tells
/// whether one came back not above what this node last got from it: then that primary
/// lost its data (restarted without persistence, flushed, or restored from an older
/// snapshot), since the counter only goes up while the data is kept. A primary seen for
/// the first time (a fresh node, a new shard) is only read.
pub(super) async fn check_epochs(cluster: &Cluster) -> Result<bool, fred::error::Error> {
    let mut lost = false;
    for slot in primary_slots(cluster) {
        let now: u64 = cluster.cmd.incr(cluster.names.epoch(slot)).await?;
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
        // The cluster-wide online count went with the data: this node's uids are announced
        // again (subscribing again changes nothing; counting them again restores them).
        self.subscribed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.mark_all();
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
pub(super) async fn reap(cluster: &Cluster, name: &str) -> Result<usize, fred::error::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_list_lines_are_matched_by_exact_name() {
        let list = "id=7 addr=127.0.0.1:5 laddr=127.0.0.1:6 fd=8 name=fred-ab age=1 ssub=2\n\
                    id=9 addr=127.0.0.1:7 laddr=127.0.0.1:6 fd=9 name=fred-abc age=1\n\
                    id=11 addr=127.0.0.1:8 laddr=127.0.0.1:6 fd=10 name=fred-ab age=3 ssub=0\n";
        assert_eq!(connection_ids_named(list, "fred-ab"), ["7", "11"]);
        assert_eq!(connection_ids_named(list, "fred-abc"), ["9"]);
        assert!(connection_ids_named(list, "fred").is_empty());
    }
}
