//! The Redis link: its two clients kept connected, whether Redis is up and answering
//! (probes), the TCP settings of a link, and why a connection fails, logged.

use super::Cluster;
use super::history::scripts as ch;
use crate::metrics::Metric;
use fred::interfaces::{
    ClientLike, ClusterInterface, EventInterface, LuaInterface, PubsubInterface,
};
use fred::types::Value;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tracing::debug;
use tracing::info;
use tracing::warn;

/// Runs `client`'s connection task, and starts it again whenever it ends. With an
/// unlimited reconnect policy it should run until `QUIT`, but fred 10 ends it for good on
/// some failures of its first cluster sync ("Invalid or missing cluster state", seen with
/// a node started while its Redis Cluster was still forming), leaving the node degraded
/// for ever. Ends when the node leaves (`stop`; its `QUIT` ends the task too).
pub(super) async fn keep_connected<C: ClientLike>(
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
pub(super) async fn watch(cluster: Arc<Cluster>) {
    let mut was_up = false;
    let reply = cluster.names.reply_channel(&cluster.node);
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
                && cluster.sub.ssubscribe(cluster.names.all()).await.is_ok()
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
            cluster.registry.metrics().incr(Metric::RedisUnreachable);
            warn!("redis unreachable: serving local connections only");
        }
        if up && !was_up && cluster.history.is_some() {
            // Only a hint: a shard that lacks it is sent the text (see `publisher`).
            let sha: Result<String, _> = cluster.cmd.script_load(ch::push_script()).await;
            *cluster.push_sha.lock().unwrap_or_else(|e| e.into_inner()) = sha.ok();
        }
        cluster.up.store(up, Relaxed);
        cluster.registry.set_remote_up(cluster.is_up());
        let ready = u64::from(cluster.is_up());
        cluster.registry.metrics().set(Metric::RedisReady, ready);
        was_up = up;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// How often a node asks Redis whether it answers.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// A hash slot of each Redis primary (the one server: slot 0), so that a key or shard
/// channel tagged for it ([`ch::key_in_slot`]) lands on that primary.
pub(super) fn primary_slots(cluster: &Cluster) -> Vec<u16> {
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
pub(super) async fn probe(cluster: Arc<Cluster>) {
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
            let (client, channel) = (&client, cluster.names.probe(slot));
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
                    cluster.timed_out("a probe");
                }
            }
            Err(_) => cluster.timed_out("a probe"),
        }
    }
}
impl Cluster {
    /// Redis left `what` (a probe, a publish batch) unanswered for `--cluster-timeout-ms`:
    /// counted (`redis_timeouts`), and Redis counts as not answering.
    pub(super) fn timed_out(&self, what: &str) {
        self.registry.metrics().incr(Metric::RedisTimeouts);
        self.not_answering(what);
    }

    /// Redis left `what` unanswered for `--cluster-timeout-ms`: it counts as down until it
    /// answers a probe (logged and counted once per episode).
    pub(super) fn not_answering(&self, what: &str) {
        if self.answering.swap(false, Relaxed) {
            self.registry.set_remote_up(false);
            let metrics = self.registry.metrics();
            metrics.incr(Metric::RedisNotAnswering);
            metrics.set(Metric::RedisReady, 0);
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
pub(super) fn link_tcp(timeout: Duration) -> fred::types::config::TcpConfig {
    let keepalive = socket2_fred::TcpKeepalive::new()
        .with_time(Duration::from_secs(1))
        .with_interval(Duration::from_secs(1));
    fred::types::config::TcpConfig {
        keepalive: Some(keepalive),
        user_timeout: Some(timeout),
        ..Default::default()
    }
}

/// Counts the connections to Redis opened again after the first to the same server, on
/// either link (`redis_links_replaced`): fred tells every connection it opens, the first
/// ones included. The receivers are taken before the clients connect.
pub(super) async fn count_replaced(
    cluster: Arc<Cluster>,
    (mut cmd, mut sub): (
        tokio::sync::broadcast::Receiver<fred::types::config::Server>,
        tokio::sync::broadcast::Receiver<fred::types::config::Server>,
    ),
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut seen = std::collections::HashSet::new();
    loop {
        let (got, link) = tokio::select! {
            got = cmd.recv() => (got, "commands"),
            got = sub.recv() => (got, "subscriptions"),
        };
        let server = match got {
            Ok(server) => server,
            Err(RecvError::Lagged(n)) => {
                // Missed ones were all openings after the first (the first come one by one).
                cluster
                    .registry
                    .metrics()
                    .add(Metric::RedisLinksReplaced, n);
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if !seen.insert((link, server.to_string())) {
            cluster.registry.metrics().incr(Metric::RedisLinksReplaced);
        }
    }
}

/// A Redis client's connection errors, as fred reports them.
type LinkErrors =
    tokio::sync::broadcast::Receiver<(fred::error::Error, Option<fred::types::config::Server>)>;

/// How often the same connection error is logged again while it lasts.
pub(super) const ERROR_REPEAT: Duration = Duration::from_secs(60);

/// Logs why Redis cannot be reached (refused, timed out, a certificate not trusted, a
/// wrong password): fred retries on its own and says why only on these streams. The same
/// error again (on either link) is logged once a minute at most, so an outage costs a
/// line a minute per distinct error, not one per retry, even when two errors alternate
/// (a cut link: one connection times out while the other finds no route); a new one is
/// logged at once.
pub(super) async fn report_errors((mut cmd, mut sub): (LinkErrors, LinkErrors)) {
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

/// A random node id, 16 hex digits.
pub(crate) fn node_id() -> String {
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
pub(super) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_logged_without_their_password_and_node_ids_are_16_hex() {
        assert_eq!(redacted("redis://:pw@h:1/0"), "redis://***@h:1/0");
        assert_eq!(node_id().len(), 16);
    }
}
