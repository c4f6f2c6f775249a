//! The handle every connection task shares: the validated configuration, the registry,
//! the metrics, and the two stop tokens of the shutdown order. (Cluster mode will hang
//! its link here.) It sits below every door, so no listener imports from `server.rs`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, ClusterConfig};
use crate::config::Config;
use crate::dedupe::Dedupe;
use crate::metrics::{Gauges, Metric, Metrics};
use crate::registry::Registry;

/// What every connection task shares.
#[derive(Debug)]
pub struct State {
    /// Limits and timings, validated.
    pub config: Config,
    /// Uid → connections, groups.
    pub registry: Registry,
    /// Counters and gauges (the registry counts into the same ones).
    pub metrics: Arc<Metrics>,
    /// Cancelled first: backends stop reading and answer what they already read.
    pub push_stop: CancellationToken,
    /// Cancelled once backends are drained, so every accepted push reaches its socket
    /// before browsers get their 1001.
    pub ws_stop: CancellationToken,
    /// The link to the other nodes, in cluster mode (`--redis`).
    pub cluster: Option<Arc<Cluster>>,
    /// Accepted `/push`es remembered for idempotent retries.
    pub dedupe: Dedupe,
}

impl State {
    /// A fresh state for `config` (already validated); in cluster mode it starts the
    /// link to Redis (in the background: Redis may be down) and fails only on a bad URL.
    /// Must be called inside the runtime.
    pub fn new(config: Config) -> std::io::Result<Arc<State>> {
        let metrics = Arc::new(Metrics::default());
        let registry = Registry::new(
            config.queue_limits(),
            config.group_limits(),
            config.history_limits(),
            metrics.clone(),
        );
        let cluster = match &config.redis {
            Some(url) => Some(
                Cluster::start(
                    &ClusterConfig {
                        url: url.clone(),
                        timeout: config.cluster_timeout,
                        groups: config.group_limits(),
                    },
                    &registry,
                )
                .map_err(std::io::Error::other)?,
            ),
            None => None,
        };
        let dedupe = Dedupe::new(config.dedupe_window, config.dedupe_max_entries);
        Ok(Arc::new(State {
            config,
            registry,
            metrics,
            push_stop: CancellationToken::new(),
            ws_stop: CancellationToken::new(),
            cluster,
            dedupe,
        }))
    }

    /// `/stats`, in the table's order.
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        self.metrics.stats(self)
    }

    /// `/metrics`.
    pub fn prometheus(&self) -> String {
        self.metrics.prometheus(self)
    }
}

impl Gauges for State {
    fn read(&self, metric: Metric) -> u64 {
        match metric {
            Metric::Connections => self.registry.totals().1 as u64,
            Metric::Uids => self.registry.totals().0 as u64,
            Metric::Groups => self.registry.group_count() as u64,
            Metric::OpenFds => open_fds(),
            Metric::HistoryUids => self.registry.history_totals().0 as u64,
            Metric::HistoryBytes => self.registry.history_totals().1 as u64,
            Metric::FdLimit => {
                rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft)
            }
            _ => self.metrics.value(metric),
        }
    }
}

/// Descriptors open in this process (entries of `/proc/self/fd`, less the one reading it).
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1) as u64)
}
