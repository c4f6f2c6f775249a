//! Webhooks in Pusher's format for the apps of `--pusher-apps` (docs/pusher.md,
//! "Webhooks"): each app names its receivers (`webhooks` in the apps file), each with the
//! kinds it wants. They go over the same sender as `--events-url` ([`super::webhook`]):
//! a bounded queue per receiver offered to without waiting, batches, retries with
//! backoff, `--events-queue`/`-batch`/`-timeout-ms`/`-attempts`; only the body
//! (`{"time_ms":…,"events":[…]}`) and the signature (`X-Pusher-Key`,
//! `X-Pusher-Signature` with the app's secret) differ.
//!
//! Who decides an event is not this module: the channels (one node) or the cluster's
//! scripts (Redis) do, once, and call [`PusherHooks::emit`] where they do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::filter::{Kinds, Target};
use super::webhook::{Shared, Style, Webhook};
use super::{EventsConfig, ReceiverStatus, client};
use crate::metrics::{Metric, Metrics};
use crate::wire::pusher::Keys;
use crate::wire::pusher::outbound::WebhookEvent;

/// The kinds of Pusher webhook event, by name; a kind's bit in [`PusherKinds`] is its
/// place here.
pub const PUSHER_KINDS: [&str; 7] = [
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "cache_miss",
    "client_event",
    "subscription_count",
];

/// Most receivers one app may name.
pub const MAX_APP_WEBHOOKS: usize = 4;

/// Most receivers all the apps of one file may name (each is a task, a socket and a
/// queue of `--events-queue` events).
pub const MAX_PUSHER_WEBHOOKS: usize = 64;

/// A set of Pusher webhook kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PusherKinds(u8);

impl PusherKinds {
    /// What a receiver without `event_types` gets: every kind but `client_event` and
    /// `subscription_count`, which come at the rate browsers act (as `message` is never
    /// in pushwire's default).
    pub const DEFAULT: PusherKinds = PusherKinds(0b1_1111);

    /// The kinds named (each must be one of [`PUSHER_KINDS`]; at least one).
    pub fn parse(names: &[String]) -> Result<PusherKinds, String> {
        if names.is_empty() {
            return Err("event_types is empty (leave it out for the default kinds)".into());
        }
        let mut bits = 0u8;
        for name in names {
            let Some(i) = PUSHER_KINDS.iter().position(|k| k == name) else {
                return Err(format!(
                    "unknown webhook event type {name:?} (known: {})",
                    PUSHER_KINDS.join(", ")
                ));
            };
            bits |= 1 << i;
        }
        Ok(PusherKinds(bits))
    }

    /// Whether the kind named `name` is in the set.
    pub fn contains(self, name: &str) -> bool {
        PUSHER_KINDS
            .iter()
            .position(|k| *k == name)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }

    /// The names in the set.
    pub fn names(self) -> Vec<&'static str> {
        PUSHER_KINDS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, k)| *k)
            .collect()
    }

    fn union(self, other: PusherKinds) -> PusherKinds {
        PusherKinds(self.0 | other.0)
    }
}

/// One receiver of an app, as the apps file names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PusherHook {
    /// Where deliveries go.
    pub target: Target,
    /// What it gets.
    pub kinds: PusherKinds,
}

impl PusherHook {
    /// `url` (`http://` or `https://`, no user info) and its `event_types`, if given.
    pub fn parse(url: &str, event_types: Option<&[String]>) -> Result<PusherHook, String> {
        Ok(PusherHook {
            target: Target::parse(url)?,
            kinds: match event_types {
                Some(names) => PusherKinds::parse(names)?,
                None => PusherKinds::DEFAULT,
            },
        })
    }
}

/// An app as its receivers need it: id, keys, receivers.
#[derive(Debug, Clone)]
pub struct AppHooksSpec {
    /// The app id.
    pub id: Arc<str>,
    /// Its key and secret (what deliveries are signed with).
    pub keys: Keys,
    /// Its receivers.
    pub hooks: Vec<PusherHook>,
}

/// One app's running receivers.
#[derive(Debug)]
struct AppHooks {
    keys: Arc<RwLock<Keys>>,
    specs: Vec<PusherHook>,
    hooks: Vec<Webhook>,
    /// Every kind some receiver of the app wants.
    wanted: PusherKinds,
}

/// The Pusher webhook receivers of every app.
#[derive(Debug)]
pub struct PusherHooks {
    shared: Arc<Shared>,
    /// Each receiver's bounds: events, bytes of their JSON (`--events-queue`, `-queue-bytes`).
    queue: (usize, usize),
    apps: RwLock<HashMap<Arc<str>, Arc<AppHooks>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl PusherHooks {
    /// No receivers yet ([`PusherHooks::set`] starts them), delivering with `config`'s
    /// bounds and counting in `metrics`.
    pub fn new(config: &EventsConfig, metrics: Arc<Metrics>) -> PusherHooks {
        PusherHooks {
            shared: Arc::new(Shared {
                node: "pusher".into(),
                delivery: config.delivery.clone(),
                secret: RwLock::new(None),
                metrics,
                draining: CancellationToken::new(),
                stop: CancellationToken::new(),
            }),
            queue: (config.queue, config.queue_bytes),
            apps: RwLock::default(),
            tasks: Mutex::default(),
        }
    }

    /// The apps' receivers from now on (at start, and at each reload of the apps file):
    /// an app whose receivers are unchanged keeps them (and their queues), signing with
    /// its keys as given now; a changed one gets new receivers, and the old ones send what
    /// they hold and stop. Must run inside the runtime (it starts tasks). Nothing changes
    /// when an `https://` receiver cannot be set up (no trusted roots).
    pub fn set(&self, apps: &[AppHooksSpec]) -> Result<(), String> {
        let tls = if apps.iter().flat_map(|a| &a.hooks).any(|h| h.target.tls) {
            Some(client::system_roots()?)
        } else {
            None
        };
        let current = self.apps.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut next = HashMap::new();
        let mut started = Vec::new();
        for app in apps.iter().filter(|a| !a.hooks.is_empty()) {
            if let Some(old) = current.get(&app.id)
                && old.specs == app.hooks
            {
                *old.keys.write().unwrap_or_else(|e| e.into_inner()) = app.keys.clone();
                next.insert(app.id.clone(), old.clone());
                continue;
            }
            let keys = Arc::new(RwLock::new(app.keys.clone()));
            let mut hooks = Vec::new();
            let mut wanted = PusherKinds(0);
            for spec in &app.hooks {
                let (hook, task) = Webhook::start(
                    spec.target.clone(),
                    Kinds::NONE,
                    self.queue,
                    tls.clone(),
                    self.shared.clone(),
                    Style::Pusher(keys.clone()),
                )?;
                hooks.push(hook);
                started.push(task);
                wanted = wanted.union(spec.kinds);
            }
            let app_hooks = AppHooks {
                keys,
                specs: app.hooks.clone(),
                hooks,
                wanted,
            };
            next.insert(app.id.clone(), Arc::new(app_hooks));
        }
        *self.apps.write().unwrap_or_else(|e| e.into_inner()) = next;
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.extend(started);
        Ok(())
    }

    fn app(&self, app: &str) -> Option<Arc<AppHooks>> {
        self.apps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
            .cloned()
    }

    /// Whether some receiver of `app` wants the kind named `kind` (so a caller may skip
    /// building an event nobody gets).
    pub fn wants(&self, app: &str, kind: &str) -> bool {
        self.app(app).is_some_and(|a| a.wanted.contains(kind))
    }

    /// Encodes `event` once and queues it for every receiver of `app` that wants its
    /// kind; never waits (a full queue drops it, counted, as for `--events-url`).
    pub fn emit(&self, app: &str, event: &WebhookEvent<'_>) {
        let Some(app) = self.app(app) else {
            return;
        };
        let kind = event.name();
        if !app.wanted.contains(kind) {
            return;
        }
        let metrics = &self.shared.metrics;
        metrics.incr(Metric::Events);
        let json = Bytes::from(event.to_json());
        for (hook, spec) in app.hooks.iter().zip(&app.specs) {
            if spec.kinds.contains(kind) {
                hook.queue(json.clone(), metrics);
            }
        }
    }

    /// Events waiting in every receiver's queue.
    pub fn queued(&self) -> usize {
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        apps.values()
            .flat_map(|a| &a.hooks)
            .map(Webhook::queued)
            .sum()
    }

    /// Each receiver's state, for `/status` (its URL and kinds, by app).
    pub fn receivers(&self) -> Vec<ReceiverStatus> {
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(Arc<str>, ReceiverStatus)> = Vec::new();
        for (id, app) in apps.iter() {
            for (hook, spec) in app.hooks.iter().zip(&app.specs) {
                let mut status = hook.status(spec.kinds.names());
                status.url = format!("app {id}: {}", status.url);
                out.push((id.clone(), status));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter().map(|(_, s)| s).collect()
    }

    /// At shutdown: the receivers get what is queued until `deadline`; what is left then
    /// is dropped, counted and logged.
    pub async fn close(&self, deadline: Instant) {
        self.shared.draining.cancel();
        // Dropping the queues' senders lets each task end once its queue is sent.
        self.apps.write().unwrap_or_else(|e| e.into_inner()).clear();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        if tasks.is_empty() {
            return;
        }
        let all = futures_util::future::join_all(tasks);
        tokio::pin!(all);
        if tokio::time::timeout_at(deadline, &mut all).await.is_err() {
            warn!("Pusher webhook receivers still busy at the shutdown deadline");
            self.shared.stop.cancel();
            let _ = all.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_name() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let k = PusherKinds::parse(&names(&["channel_occupied", "client_event"])).unwrap();
        assert_eq!(k.names(), vec!["channel_occupied", "client_event"]);
        assert!(k.contains("client_event") && !k.contains("member_added"));
        assert!(!PusherKinds::DEFAULT.contains("client_event"));
        assert!(!PusherKinds::DEFAULT.contains("subscription_count"));
        assert!(PusherKinds::DEFAULT.contains("cache_miss"));
        assert!(PusherKinds::parse(&names(&["channel_ocupied"])).is_err());
        assert!(PusherKinds::parse(&[]).is_err());
        assert!(PusherHook::parse("ftp://x/", None).is_err());
        assert_eq!(
            PusherHook::parse("http://h/w", None).unwrap().kinds,
            PusherKinds::DEFAULT
        );
    }
}
