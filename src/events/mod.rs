//! Events for the backend: what happens to uids, connections and groups, told to
//! webhook receivers (`--events-url`, signed, batched, retried) and to backends reading
//! `/events` on the push port. docs/events.md is the reference.
//!
//! The [`Hub`] is the one door in: [`Hub::publish`] encodes an event once and offers it to
//! every listener that wants its kind, without waiting for any of them. Where events come
//! from (the registry's binds and closes, the cluster's presence for `online`/`offline`)
//! is decided outside this module, which imports only the metrics, the secret type and
//! the uid type, so anything above it may publish.
//!
//! - [`event`]: the event types, their JSON, the sequence [`Clock`];
//! - [`filter`]: which kinds a listener wants, `--events-url URL#types=...`;
//! - [`webhook`]: the queue and task per receiver; [`client`] its HTTP connection;
//!   [`signature`]: the signature headers;
//! - [`stream`]: `/events` on the push port;
//! - [`pusher`]: the Pusher apps' webhooks, in Pusher's format, over the same sender.

pub mod client;
pub mod event;
pub mod filter;
pub mod pusher;
pub mod signature;
pub mod sources;
pub mod stream;
pub mod webhook;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub use event::{Clock, Encoded, Event, Kind, What};
pub use filter::{Kinds, Listener, Target};
pub use pusher::{AppHooksSpec, PusherHook, PusherHooks, PusherKinds};
pub use sources::{ConnEvents, ConnSink, Debounce, MessageLimits, UidSink};
pub use stream::Subscription;
pub use webhook::{Delivery, Health};

use crate::auth::Secret;
use crate::metrics::{Metric, Metrics};
use webhook::{Shared, Webhook};

/// Where events go and how; every bound has a default (docs/configuration.md).
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// `--events-url`: the webhook receivers.
    pub listeners: Vec<Listener>,
    /// `--events-queue`: events that may wait for one receiver; more are dropped.
    pub queue: usize,
    /// `--events-queue-bytes`: bytes of event JSON that may wait for one receiver; more
    /// are dropped.
    pub queue_bytes: usize,
    /// `--events-batch`, `--events-batch-bytes`, `--events-timeout-ms`,
    /// `--events-attempts`.
    pub delivery: Delivery,
    /// `--events-stream-buffer`: how far (in events) an `/events` reader may fall behind
    /// before it is cut.
    pub stream_buffer: usize,
    /// `--events-debounce-ms`: how long a uid's last connection must stay gone before it
    /// is `offline` (a tab reload within it is neither offline nor online).
    pub debounce: Duration,
    /// `--events-message-bytes`, `--events-message-rate`: what a browser may send as
    /// `message` events.
    pub message: MessageLimits,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            listeners: Vec::new(),
            // A node's mass disconnect (a restart) is one `close` per connection at once,
            // then an `offline` per uid a debounce later: room for both on a node of
            // 50,000 connections, at about 250 bytes each (docs/events.md).
            queue: 100_000,
            queue_bytes: 32 * 1024 * 1024,
            delivery: Delivery {
                batch_events: 100,
                batch_bytes: 256 * 1024,
                timeout: Duration::from_secs(5),
                attempts: 12,
            },
            stream_buffer: 4096,
            debounce: Duration::from_secs(5),
            message: MessageLimits {
                max_bytes: 4096,
                per_second: 10,
            },
        }
    }
}

impl EventsConfig {
    /// What stops the daemon from starting: a URL named twice, too many, receivers
    /// without a secret to sign with.
    pub fn check(&self, secret: Option<&Secret>) -> Result<(), String> {
        filter::check(&self.listeners)?;
        if !self.listeners.is_empty() && secret.is_none() {
            return Err(
                "--events-url needs --events-secret or --events-secret-file: receivers must \
                 be able to tell our deliveries from anyone's"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// The events of one node: the receivers' queues and tasks, the `/events` ring, the
/// sequence clock.
#[derive(Debug)]
pub struct Hub {
    node: Arc<str>,
    clock: Clock,
    webhooks: Vec<Webhook>,
    /// The kinds some receiver wants.
    wanted: Kinds,
    /// The `/events` ring, made when the first reader comes (it is a few hundred KiB).
    ring: OnceLock<broadcast::Sender<Encoded>>,
    ring_size: usize,
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Numbers this node's connections for their `conn` (`NODE-N`).
    next_conn: AtomicU64,
    /// What a browser may send as `message` events.
    pub message_limits: MessageLimits,
    /// Cluster mode: told each connection's life (see [`ConnSink`]).
    conn_sink: OnceLock<Arc<dyn ConnSink>>,
    /// The Pusher apps' receivers (`--pusher-apps`), drained and shown with these.
    pusher: OnceLock<Arc<PusherHooks>>,
}

impl Hub {
    /// The events of `node`: starts a task per receiver (on the current runtime), trusting
    /// the system's certificate authorities for `https://` ones.
    pub fn new(
        config: &EventsConfig,
        secret: Option<Secret>,
        node: Arc<str>,
        metrics: Arc<Metrics>,
    ) -> Result<Hub, String> {
        let tls = if config.listeners.iter().any(|l| l.target.tls) {
            Some(client::system_roots()?)
        } else {
            None
        };
        Hub::with_tls(config, secret, node, metrics, tls)
    }

    /// [`Hub::new`] with the TLS settings given (tests trust their own authority).
    pub fn with_tls(
        config: &EventsConfig,
        secret: Option<Secret>,
        node: Arc<str>,
        metrics: Arc<Metrics>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Hub, String> {
        config.check(secret.as_ref())?;
        let shared = Arc::new(Shared {
            node: node.clone(),
            delivery: config.delivery.clone(),
            secret: RwLock::new(secret),
            metrics,
            draining: CancellationToken::new(),
            stop: CancellationToken::new(),
        });
        let mut webhooks = Vec::new();
        let mut tasks = Vec::new();
        let mut wanted = Kinds::NONE;
        for l in &config.listeners {
            let (hook, task) = Webhook::start(
                l.target.clone(),
                l.kinds,
                (config.queue, config.queue_bytes),
                tls.clone(),
                shared.clone(),
                webhook::Style::Pushwire,
            )?;
            wanted = wanted.union(l.kinds);
            webhooks.push(hook);
            tasks.push(task);
        }
        Ok(Hub {
            node,
            clock: Clock::default(),
            webhooks,
            wanted,
            ring: OnceLock::new(),
            ring_size: config.stream_buffer.max(1),
            shared,
            tasks: Mutex::new(tasks),
            next_conn: AtomicU64::new(1),
            message_limits: config.message,
            conn_sink: OnceLock::new(),
            pusher: OnceLock::new(),
        })
    }

    /// This node's id, as events carry it.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A sequence number from this node's [`Clock`] (for uid and group events).
    pub fn next_seq(&self) -> u64 {
        self.clock.next()
    }

    /// Installs the connection hook (once; later calls are ignored).
    pub fn set_conn_sink(&self, sink: Arc<dyn ConnSink>) {
        let _ = self.conn_sink.set(sink);
    }

    /// Adds the Pusher apps' receivers to what this hub shows and drains (once).
    pub fn set_pusher(&self, hooks: Arc<PusherHooks>) {
        let _ = self.pusher.set(hooks);
    }

    /// The connection hook, in cluster mode with receivers.
    pub fn conn_sink(&self) -> Option<&Arc<dyn ConnSink>> {
        self.conn_sink.get()
    }

    /// A number for a new connection of this node.
    pub fn next_conn(&self) -> u64 {
        self.next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The counters events are counted in.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Whether anyone listens for `kind` now (a receiver, or an `/events` reader): an
    /// emitter may skip building an event nobody gets (a browser's message above all).
    /// Two atomic loads: the receivers' kinds are fixed, and `/events` readers are
    /// counted in `event_streams`.
    pub fn wants(&self, kind: Kind) -> bool {
        self.wanted.contains(kind) || self.shared.metrics.value(Metric::EventStreams) > 0
    }

    /// Whether some webhook receiver of this node wants `kind` (fixed at start).
    pub fn receivers_want(&self, kind: Kind) -> bool {
        self.wanted.contains(kind)
    }

    /// Stamps `what` with this node and the time, encodes it once, and offers it to every
    /// listener that wants it. Never waits: a full queue drops (see [`webhook`]).
    pub fn publish(&self, what: What, seq: u64) {
        self.publish_from(what, seq, self.node.clone());
    }

    /// [`Hub::publish`] of an event another node decided and relayed here (it names
    /// `node`).
    pub fn publish_from(&self, what: What, seq: u64, node: Arc<str>) {
        let kind = what.kind();
        if !self.wants(kind) {
            return;
        }
        let event = Event {
            what,
            node,
            time_ms: event::unix_millis(),
            seq,
        };
        self.shared.metrics.incr(Metric::Events);
        let encoded = Encoded::new(&event);
        for hook in &self.webhooks {
            hook.offer(&encoded, &self.shared.metrics);
        }
        if let Some(ring) = self.ring.get()
            && ring.receiver_count() > 0
        {
            // Only fails with no reader left, which is no loss.
            let _ = ring.send(encoded);
        }
    }

    /// A new `/events` reader of `kinds`, from the next event on.
    pub fn subscribe(&self, kinds: Kinds) -> Subscription {
        let ring = self
            .ring
            .get_or_init(|| broadcast::channel(self.ring_size).0);
        Subscription::new(ring.subscribe(), kinds, self.shared.metrics.clone())
    }

    /// A reload's events secret. Removing it while there are receivers is refused: no
    /// delivery ever goes out unsigned.
    pub fn set_secret(&self, secret: Option<Secret>) -> Result<(), String> {
        self.check_secret(secret.as_ref())?;
        *self
            .shared
            .secret
            .write()
            .unwrap_or_else(|e| e.into_inner()) = secret;
        Ok(())
    }

    /// Whether [`Hub::set_secret`] would take `secret`.
    pub fn check_secret(&self, secret: Option<&Secret>) -> Result<(), String> {
        if !self.webhooks.is_empty() && secret.is_none() {
            return Err(
                "the events secret cannot be removed while --events-url sends webhooks".to_owned(),
            );
        }
        Ok(())
    }

    /// Whether this node has webhook receivers (`--events-url`).
    pub fn has_receivers(&self) -> bool {
        !self.webhooks.is_empty()
    }

    /// A short digest of this node's receivers and their kinds ("" with none), so nodes
    /// can tell whether they were all given the same `--events-url`s without showing
    /// each other the URLs (a query may hold a token).
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        use std::fmt::Write;
        if self.webhooks.is_empty() {
            return String::new();
        }
        let mut lines: Vec<String> = self
            .webhooks
            .iter()
            .map(|h| {
                let t = &h.target;
                let scheme = if t.tls { "https" } else { "http" };
                format!("{scheme}://{}{}#{}", t.authority, t.path, h.kinds.names())
            })
            .collect();
        lines.sort_unstable();
        let digest = Sha256::digest(lines.join("\n").as_bytes());
        digest[..8].iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// Events waiting in every receiver's queue.
    pub fn queued(&self) -> usize {
        let pusher = self.pusher.get().map_or(0, |p| p.queued());
        self.webhooks.iter().map(Webhook::queued).sum::<usize>() + pusher
    }

    /// Each receiver's state, for `/status` (the Pusher apps' after `--events-url`'s).
    pub fn receivers(&self) -> Vec<ReceiverStatus> {
        let mut out: Vec<ReceiverStatus> = self
            .webhooks
            .iter()
            .map(|h| h.status(h.kinds.iter().map(Kind::name).collect()))
            .collect();
        if let Some(p) = self.pusher.get() {
            out.extend(p.receivers());
        }
        out
    }

    /// At shutdown: the receivers get what is queued until `deadline`; what is left then
    /// is dropped, counted and logged.
    pub async fn close(&self, deadline: Instant) {
        self.shared.draining.cancel();
        let pusher = self.pusher.get().cloned();
        let pusher = async move {
            if let Some(p) = pusher {
                p.close(deadline).await;
            }
        };
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let ((), ()) = tokio::join!(pusher, self.close_own(deadline, tasks));
    }

    async fn close_own(&self, deadline: Instant, tasks: Vec<JoinHandle<()>>) {
        if tasks.is_empty() {
            return;
        }
        let all = futures_util::future::join_all(tasks);
        tokio::pin!(all);
        if tokio::time::timeout_at(deadline, &mut all).await.is_err() {
            warn!(
                queued = self.queued(),
                "event receivers still busy at the shutdown deadline"
            );
            self.shared.stop.cancel();
            let _ = all.await;
        }
    }
}

/// One receiver in `/status.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiverStatus {
    /// Where (a query shows as `?...`).
    pub url: String,
    /// What it gets.
    pub types: Vec<&'static str>,
    /// Events waiting.
    pub queued: usize,
    /// Most that may wait.
    pub capacity: usize,
    /// Bytes of event JSON waiting.
    pub queued_bytes: usize,
    /// Most bytes that may wait.
    pub capacity_bytes: usize,
    /// Events it took.
    pub sent: u64,
    /// Events lost for it.
    pub dropped: u64,
    /// Events sent again.
    pub retried: u64,
    /// `idle`, `ok`, `retrying`, `failing`.
    pub state: &'static str,
    /// What went wrong last.
    pub last_error: Option<String>,
    /// When it last took a batch (ms since the epoch).
    pub last_ok_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(listeners: &str, secret: Option<&str>) -> Result<Hub, String> {
        let config = EventsConfig {
            listeners: Listener::parse_all(&[listeners])?,
            ..EventsConfig::default()
        };
        Hub::with_tls(
            &config,
            secret.map(Secret::new),
            "n1".into(),
            Arc::new(Metrics::default()),
            None,
        )
    }

    #[tokio::test]
    async fn receivers_need_a_secret_and_keep_it() {
        let err = hub("http://127.0.0.1:9/", None).unwrap_err();
        assert!(err.contains("--events-secret"), "{err}");
        let h = hub("http://127.0.0.1:9/", Some("s")).unwrap();
        assert!(
            h.set_secret(None)
                .unwrap_err()
                .contains("cannot be removed")
        );
        h.set_secret(Some(Secret::new("t"))).unwrap();
        // Without receivers there is nothing to sign.
        let h = hub("", None).unwrap();
        h.set_secret(None).unwrap();
    }

    #[tokio::test]
    async fn nothing_is_built_for_nobody() {
        let h = hub("http://127.0.0.1:9/#types=online", Some("s")).unwrap();
        assert!(h.wants(Kind::Online));
        assert!(!h.wants(Kind::Message));
        h.publish(
            What::Message {
                conn: "c".into(),
                uid: "u".into(),
                data: "x".into(),
            },
            1,
        );
        assert_eq!(h.shared.metrics.value(Metric::Events), 0);
        let mut sub = h.subscribe(Kinds::parse("message").unwrap());
        assert!(
            h.wants(Kind::Message),
            "a reader wants everything it may filter"
        );
        h.publish(
            What::Message {
                conn: "c".into(),
                uid: "u".into(),
                data: "x".into(),
            },
            2,
        );
        assert_eq!(h.shared.metrics.value(Metric::Events), 1);
        match sub.try_next() {
            Some(stream::Next::Event(e)) => {
                assert!(
                    e.json
                        .starts_with(br#"{"type":"message","seq":2,"node":"n1""#)
                );
            }
            other => panic!("{other:?}"),
        }
        drop(sub);
        assert!(!h.wants(Kind::Message));
    }

    /// The producer side never waits: a dead receiver's queue fills, and the rest is
    /// dropped and counted, at the speed of a `try_send`.
    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let config = EventsConfig {
            // Nothing listens on port 9 of 192.0.2.1 (TEST-NET): the task is stuck
            // connecting, so the queue only fills.
            listeners: Listener::parse_all(&["http://192.0.2.1:9/"]).unwrap(),
            queue: 10,
            ..EventsConfig::default()
        };
        let metrics = Arc::new(Metrics::default());
        let h = Hub::with_tls(
            &config,
            Some(Secret::new("s")),
            "n1".into(),
            metrics.clone(),
            None,
        )
        .unwrap();
        let started = std::time::Instant::now();
        for n in 0..1000 {
            h.publish(What::Online { uid: "u".into() }, n);
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        // The task may have taken one batch out before it got stuck connecting.
        let dropped = metrics.value(Metric::EventsDroppedFull);
        assert!((989..=990).contains(&dropped), "{dropped}");
        assert_eq!(h.queued(), 10);
        assert_eq!(h.receivers()[0].dropped, dropped);
        h.close(Instant::now()).await;
        assert_eq!(
            metrics.value(Metric::EventsDroppedShutdown) + dropped,
            1000,
            "what was queued is dropped at the deadline, and counted"
        );
    }
}
