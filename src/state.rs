//! The handle every connection task shares: the validated configuration, the registry,
//! the metrics, the two stop tokens of the shutdown order, and the engine (`nodes`: this
//! node alone, or the cluster). It sits below every door, so no listener imports from
//! `server.rs`.

use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

use crate::addressed::{Addressed, AddressedLimits};
use crate::channels::{Apps, Index};
use crate::cluster::{AddressedLink, Cluster, ClusterConfig, ClusterNodes};
use crate::cluster_presence::ClusterPresence;
use crate::config::Config;
use crate::dedupe::Dedupe;
use crate::events::{Debounce, Hub, PusherHooks};
use crate::metrics::{Gauges, Metric, Metrics};
use crate::node_figures::NodeFigures;
use crate::nodes::{Here, Nodes};
use crate::registry::Registry;
use crate::reloadable::{Change, Reloadable};
use crate::tls::{Acceptor, TlsFiles};

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
    /// Every node that may hold a connection: this one alone, or the cluster (`--redis`).
    /// Backend commands go through it; browser doors and gauges use `registry`.
    pub nodes: Box<dyn Nodes>,
    /// The greeted connections (`--gateway-ws-listen`) a backend addresses by number;
    /// `None` with the gateway door off. The greeted listener adds to it; backends reach
    /// it through `nodes`.
    pub addressed: Option<Addressed>,
    /// TLS settings of the browser port (`wss://`), swapped by a reload.
    pub tls: Option<Acceptor>,
    /// Secrets and allow-lists as of the last reload; read with [`State::settings`].
    reloadable: RwLock<Arc<Reloadable>>,
    /// Events for the backend: webhook receivers and `/events` readers.
    pub events: Arc<Hub>,
    /// A single node's `online`/`offline` (cluster mode settles them in Redis).
    pub presence_events: Option<Arc<Debounce>>,
    /// Cluster mode with receivers: `online`/`offline` settled across the nodes.
    pub cluster_events: Option<Arc<ClusterPresence>>,
    /// Cluster mode: every node's row on the live page (`node_figures.rs`).
    pub figures: Option<Arc<NodeFigures>>,
    /// The Pusher apps as of the last reload (`--pusher-apps`); read with
    /// [`State::pusher_apps`].
    pusher_apps: RwLock<Option<Arc<Apps>>>,
}

impl State {
    /// A fresh state for `config` (already validated); in cluster mode it starts the
    /// link to Redis (in the background: Redis may be down). Fails on a bad Redis URL or
    /// unreadable TLS files. Must be called inside the runtime.
    pub fn new(config: Config) -> std::io::Result<Arc<State>> {
        let tls = match &config.tls {
            Some(files) => Some(Acceptor::new(files).map_err(std::io::Error::other)?),
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        let registry = Registry::new(
            config.queue_limits(),
            config.group_limits(),
            config.history_limits(),
            metrics.clone(),
        );
        let dedupe = Dedupe::new(config.dedupe_window, config.dedupe_max_entries);
        let channels = Index::new(config.queue_limits(), Index::random_node());
        // The Pusher apps' webhooks (their own receivers, on the events' sender).
        let pusher_hooks = match &config.pusher_apps {
            Some(apps) => {
                let hooks = Arc::new(PusherHooks::new(&config.events, metrics.clone()));
                hooks
                    .set(&apps.hook_specs())
                    .map_err(std::io::Error::other)?;
                channels.set_hooks(hooks.clone());
                Some(hooks)
            }
            None => None,
        };
        let mut here = Here::new(registry.clone(), dedupe).with_channels(channels);
        let addressed = config.gateway.as_ref().map(|g| {
            Addressed::new(
                registry.clone(),
                metrics.clone(),
                config.queue_limits(),
                AddressedLimits {
                    max_groups: config.max_groups,
                    max_members: config.max_group_members,
                    session_bytes: g.max_session_bytes,
                    session: crate::wire::php::Limits::default(),
                },
            )
        });
        if let Some(a) = &addressed {
            here = here.with_addressed(a.clone());
        }
        // Events name the node as the cluster does, so a receiver can tell them apart.
        let (nodes, node, cluster): (Box<dyn Nodes>, String, Option<Arc<Cluster>>) =
            match &config.redis {
                Some(url) => {
                    let cluster = Cluster::start(
                        &ClusterConfig {
                            url: url.clone(),
                            prefix: config.redis_prefix.clone(),
                            timeout: config.cluster_timeout,
                            link_timeout: config.cluster_link_timeout,
                            publish_queue: config.cluster_publish_queue,
                            message_buffer: config.cluster_message_buffer,
                            groups: config.group_limits(),
                            history: Some(config.history_limits()).filter(|h| h.messages > 0),
                        },
                        &registry,
                    )
                    .map_err(std::io::Error::other)?;
                    let window = config
                        .dedupe_window
                        .filter(|_| config.dedupe_max_entries > 0);
                    let node = cluster.node().to_owned();
                    let link = cluster.clone();
                    let nodes = ClusterNodes::new(here, cluster.clone(), window);
                    let nodes = match &addressed {
                        Some(a) => nodes.with_addressed(AddressedLink::start(&cluster, a.clone())),
                        None => nodes,
                    };
                    let nodes: Box<dyn Nodes> = match config.pusher_apps {
                        Some(_) => Box::new(nodes.with_pusher()),
                        None => Box::new(nodes),
                    };
                    (nodes, node, Some(link))
                }
                None => (Box::new(here), crate::cluster::node_id(), None),
            };
        let events = Hub::new(
            &config.events,
            config.events_secret.clone(),
            node.into(),
            metrics.clone(),
        )
        .map_err(std::io::Error::other)?;
        let events = Arc::new(events);
        if let Some(hooks) = pusher_hooks {
            events.set_pusher(hooks);
        }
        let (presence_events, cluster_events, figures) = match &cluster {
            Some(cluster) => {
                cluster.set_events(events.clone());
                let presence =
                    ClusterPresence::start(&events, cluster, &registry, config.events.debounce);
                let figures = NodeFigures::start(
                    cluster,
                    &registry,
                    &metrics,
                    &events,
                    Some(presence.clone()),
                );
                (None, Some(presence), Some(figures))
            }
            None => {
                let debounce = Debounce::new(events.clone(), config.events.debounce);
                registry.set_events(events.clone(), debounce.clone());
                tokio::spawn(debounce.clone().run());
                (Some(debounce), None, None)
            }
        };
        Ok(Arc::new(State {
            addressed,
            nodes,
            registry,
            metrics,
            push_stop: CancellationToken::new(),
            ws_stop: CancellationToken::new(),
            tls,
            reloadable: RwLock::new(Arc::new(Reloadable::from_config(&config))),
            pusher_apps: RwLock::new(config.pusher_apps.clone()),
            config,
            events,
            presence_events,
            cluster_events,
            figures,
        }))
    }

    /// The secrets and allow-lists in force now (a reload may change them; see
    /// `reloadable.rs`).
    pub fn settings(&self) -> Arc<Reloadable> {
        self.reloadable
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies a reload: the TLS files are read first, and if they are bad nothing
    /// changes. `tls` must be `Some` exactly when the port already serves TLS (turning
    /// TLS on or off needs a restart: the port's scheme would change under the browsers).
    /// Returns what changed, for the log.
    pub fn reload(
        &self,
        mut next: Reloadable,
        tls: Option<&TlsFiles>,
    ) -> Result<Vec<Change>, String> {
        self.events.check_secret(next.events_secret.as_ref())?;
        if self.config.gateway.is_some() {
            crate::config::GatewayConfig::check_secret(next.gateway_secret.as_ref())?;
        } else {
            // No gateway door: no gateway secret is in force (as at start), so a reload
            // that resolves one (the push secret it would follow) changes nothing.
            next.gateway_secret = None;
        }
        let mut changed = match (&self.tls, tls) {
            (Some(acceptor), Some(files)) => {
                acceptor.reload(files)?;
                vec![Change::TLS]
            }
            (None, None) => Vec::new(),
            (None, Some(_)) => return Err("TLS cannot be turned on by a reload: restart".into()),
            (Some(_), None) => return Err("TLS cannot be turned off by a reload: restart".into()),
        };
        let mut current = self.reloadable.write().unwrap_or_else(|e| e.into_inner());
        changed.extend(current.changes(&next));
        // Checked above, so it takes it.
        let _ = self.events.set_secret(next.events_secret.clone());
        *current = Arc::new(next);
        Ok(changed)
    }

    /// The Pusher apps in force now (`None`: no Pusher door).
    pub fn pusher_apps(&self) -> Option<Arc<Apps>> {
        self.pusher_apps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the Pusher apps (a reload read and checked the file whole) and their
    /// webhook receivers; a daemon started without `--pusher-apps` keeps no door. Nothing
    /// changes if a receiver cannot be set up. Returns what changed, for the log. Runs
    /// inside the runtime (new receivers are tasks).
    pub fn reload_pusher_apps(&self, next: Apps) -> Result<Vec<String>, String> {
        let mut current = self.pusher_apps.write().unwrap_or_else(|e| e.into_inner());
        let Some(old) = current.as_ref() else {
            return Err("started without --pusher-apps: restart to serve Pusher apps".into());
        };
        if let Some(hooks) = self.nodes.channels().index().hooks() {
            hooks.set(&next.hook_specs())?;
        }
        let changes = old.changes(&next);
        *current = Some(Arc::new(next));
        Ok(changes)
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
            Metric::EventsQueued => self.events.queued() as u64,
            Metric::FdLimit => {
                rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft)
            }
            _ => self.metrics.value(metric),
        }
    }
}

/// Descriptors open in this process. Since Linux 6.2 the size `stat` gives for
/// `/proc/self/fd` is their number, read without listing them; older kernels give 0, and
/// then the directory is counted (one entry per descriptor, less the one reading it),
/// which costs time in proportion to the connections (5.3 ms of CPU at 10k).
fn open_fds() -> u64 {
    match std::fs::metadata("/proc/self/fd") {
        Ok(meta) if meta.len() > 0 => meta.len(),
        _ => listed_fds(),
    }
}

/// [`open_fds`] by listing `/proc/self/fd`.
fn listed_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ways count the same descriptors (tests run in parallel threads that open and
    /// close files: a count is compared only when the fast one held still around it).
    #[test]
    fn open_fds_counts_without_listing() {
        for _ in 0..100 {
            let (before, listed, after) = (open_fds(), listed_fds(), open_fds());
            if before == after {
                assert_eq!(listed, before);
                // The kernel here counts (6.2+): the listing is only a fallback.
                let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
                let mut v = kernel.trim().split(|c: char| !c.is_ascii_digit());
                let (major, minor): (u32, u32) = (
                    v.next().unwrap().parse().unwrap(),
                    v.next().unwrap().parse().unwrap(),
                );
                if (major, minor) >= (6, 2) {
                    assert!(std::fs::metadata("/proc/self/fd").unwrap().len() > 0);
                }
                return;
            }
        }
        panic!("descriptors never held still for a count");
    }
}
