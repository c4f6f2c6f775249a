//! Webhooks: each `--events-url` has a bounded queue that the daemon offers events to
//! without ever waiting, and a task of its own that sends what is queued, batched, signed
//! and retried. A slow or dead receiver costs its own task, socket and queue, nothing else.
//!
//! # The queue's policy
//! The producer side is [`Webhook::offer`], a `try_send`: it runs where the event happens
//! (a bind, a close), which must never wait on a network. The queue is bounded twice: by
//! events (`--events-queue`, 100,000: a node's mass disconnect is one `close` per
//! connection at once) and by the bytes of their JSON (`--events-queue-bytes`, 32 MiB:
//! `message` events are up to `--events-message-bytes` each). When either is full the new
//! event is dropped, counted (`events_dropped{reason="queue_full"}`) and logged at most
//! once a minute per receiver. Dropping the newest rather than the oldest keeps what was
//! queued in order; the receiver sees a gap in a subject's `seq`.
//!
//! # Retries
//! A batch is sent again after a connection error, a timeout, a 5xx, a 408 or a 429
//! (after `Retry-After` when it says a number of seconds), with exponential backoff and
//! jitter, up to `--events-attempts` attempts; then it is dropped (counted, logged). Other
//! answers (4xx: the receiver refuses it, e.g. a bad signature) are not retried: the same
//! bytes would be refused again. One batch is out at a time, so a receiver gets its
//! batches in order, and each attempt is signed with its own timestamp.

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::HeaderValue;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::client::{Answer, Client};
use super::event::{Encoded, unix_millis};
use super::filter::{Kinds, Target};
use super::signature;
use crate::auth::Secret;
use crate::logsafe::escaped;
use crate::metrics::{Metric, Metrics};
use crate::wire::pusher::Keys;

/// First pause before a retry; it doubles per attempt up to [`MAX_BACKOFF`], and each pause
/// is drawn between half of it and all of it (so receivers that failed together are not hit
/// again together).
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Longest pause between two attempts (a `Retry-After` above it is cut to it).
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How often each receiver may log the same kind of trouble.
const WARN_EVERY_MS: u64 = 60_000;

/// How deliveries are made; the same for every receiver.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Most events in one POST.
    pub batch_events: usize,
    /// Most bytes of one POST's body (an event alone above it still goes, alone).
    pub batch_bytes: usize,
    /// How long one attempt may take: connect, TLS, request, answer.
    pub timeout: Duration,
    /// Attempts per batch, the first included.
    pub attempts: u32,
}

/// A receiver's state, for `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Nothing sent yet.
    Idle,
    /// The last batch was taken.
    Ok,
    /// The last attempt failed; retrying.
    Retrying,
    /// The last batch was given up (dropped).
    Failing,
}

impl Health {
    /// Its name in `/status.json`.
    pub fn name(self) -> &'static str {
        match self {
            Health::Idle => "idle",
            Health::Ok => "ok",
            Health::Retrying => "retrying",
            Health::Failing => "failing",
        }
    }

    fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Ok,
            2 => Health::Retrying,
            3 => Health::Failing,
            _ => Health::Idle,
        }
    }
}

/// One receiver's figures, for `/status` (the totals are in the metrics table).
#[derive(Debug, Default)]
pub struct Figures {
    /// Events it took.
    pub sent: AtomicU64,
    /// Events dropped for it (all reasons).
    pub dropped: AtomicU64,
    /// Events sent again.
    pub retried: AtomicU64,
    /// When it last took a batch (ms since the epoch; 0: never).
    pub last_ok_ms: AtomicU64,
    health: AtomicU8,
    last_error: Mutex<Option<String>>,
    /// Queue-full drops not logged yet, and when that was last logged.
    unlogged_full: AtomicU64,
    full_logged_ms: AtomicU64,
}

impl Figures {
    /// Its state now.
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Relaxed))
    }

    /// What went wrong last, if anything has.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, health: Health, error: Option<String>) {
        self.health.store(health as u8, Relaxed);
        if let Some(error) = error {
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
        }
    }
}

/// What every sender task shares with the hub.
#[derive(Debug)]
pub(crate) struct Shared {
    pub node: Arc<str>,
    pub delivery: Delivery,
    pub secret: RwLock<Option<Secret>>,
    pub metrics: Arc<Metrics>,
    /// Set once the daemon stops: send what is queued, then end.
    pub draining: CancellationToken,
    /// Set at the shutdown deadline: end now, counting what is left as dropped.
    pub stop: CancellationToken,
}

/// How a receiver's deliveries are framed and signed.
#[derive(Debug, Clone)]
pub(crate) enum Style {
    /// pushwire's own: `{"events":[…]}`, `X-Pushwire-*` headers signed with the events
    /// secret (docs/events.md).
    Pushwire,
    /// Pusher's: `{"time_ms":…,"events":[…]}` with `X-Pusher-Key` and
    /// `X-Pusher-Signature` (hex HMAC-SHA256 of the body with the app's secret), what the
    /// Pusher server SDKs' webhook validators check (docs/pusher.md). The keys are the
    /// app's as of the last reload.
    Pusher(Arc<RwLock<Keys>>),
}

/// The hub's side of one receiver.
#[derive(Debug)]
pub(crate) struct Webhook {
    pub target: Target,
    pub kinds: Kinds,
    pub figures: Arc<Figures>,
    pub capacity: usize,
    /// Most bytes of event JSON that may wait.
    pub capacity_bytes: usize,
    /// Bytes of event JSON waiting now (the task takes them off as it takes events).
    bytes: Arc<AtomicUsize>,
    tx: mpsc::Sender<Bytes>,
}

impl Webhook {
    /// Starts the receiver's task (on the current runtime) and returns its queue.
    pub(crate) fn start(
        target: Target,
        kinds: Kinds,
        (capacity, capacity_bytes): (usize, usize),
        tls: Option<Arc<rustls::ClientConfig>>,
        shared: Arc<Shared>,
        style: Style,
    ) -> Result<(Webhook, tokio::task::JoinHandle<()>), String> {
        let client = Client::new(target.clone(), tls)?;
        let capacity = capacity.max(1);
        // tokio's channel allocates its slots in blocks as they fill: a large bound costs
        // nothing until events wait.
        let (tx, rx) = mpsc::channel(capacity);
        let figures = Arc::new(Figures::default());
        let bytes = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(
            Sender {
                rx,
                bytes: bytes.clone(),
                client,
                shown: target.shown(),
                shared,
                style,
                figures: figures.clone(),
                held: None,
                batches: 0,
                rng: seed(),
                warned_ms: 0,
            }
            .run(),
        );
        Ok((
            Webhook {
                target,
                kinds,
                figures,
                capacity,
                capacity_bytes: capacity_bytes.max(1),
                bytes,
                tx,
            },
            task,
        ))
    }

    /// Queues `event` if this receiver wants it; never waits (see the module's policy).
    pub(crate) fn offer(&self, event: &Encoded, metrics: &Metrics) {
        if !self.kinds.contains(event.kind) {
            return;
        }
        self.queue(event.json.clone(), metrics);
    }

    /// Queues one event's JSON object (the caller filtered it); never waits.
    pub(crate) fn queue(&self, json: Bytes, metrics: &Metrics) {
        let len = json.len();
        let reason = if self.bytes.fetch_add(len, Relaxed) + len > self.capacity_bytes {
            self.bytes.fetch_sub(len, Relaxed);
            Metric::EventsDroppedFull
        } else {
            match self.tx.try_send(json) {
                Ok(()) => return,
                Err(e) => {
                    self.bytes.fetch_sub(len, Relaxed);
                    match e {
                        TrySendError::Full(_) => Metric::EventsDroppedFull,
                        TrySendError::Closed(_) => Metric::EventsDroppedShutdown,
                    }
                }
            }
        };
        metrics.incr(reason);
        let f = &self.figures;
        f.dropped.fetch_add(1, Relaxed);
        f.unlogged_full.fetch_add(1, Relaxed);
        let now = unix_millis();
        let last = f.full_logged_ms.load(Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_MS
            && f.full_logged_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            let dropped = f.unlogged_full.swap(0, Relaxed);
            warn!(
                url = %self.target.shown(),
                dropped,
                queue = self.capacity,
                "event queue full: events dropped (the receiver is slower than the events; \
                 raise --events-queue / --events-queue-bytes or speed it up)"
            );
        }
    }

    /// Events waiting in the queue.
    pub(crate) fn queued(&self) -> usize {
        self.capacity - self.tx.capacity()
    }

    /// Bytes of event JSON waiting in the queue.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.bytes.load(Relaxed)
    }

    /// Its state for `/status`, as getting `types`.
    pub(crate) fn status(&self, types: Vec<&'static str>) -> super::ReceiverStatus {
        let f = &self.figures;
        let last_ok = f.last_ok_ms.load(Relaxed);
        super::ReceiverStatus {
            url: self.target.shown(),
            types,
            queued: self.queued(),
            capacity: self.capacity,
            queued_bytes: self.queued_bytes(),
            capacity_bytes: self.capacity_bytes,
            sent: f.sent.load(Relaxed),
            dropped: f.dropped.load(Relaxed),
            retried: f.retried.load(Relaxed),
            state: f.health().name(),
            last_error: f.last_error(),
            last_ok_ms: (last_ok > 0).then_some(last_ok),
        }
    }
}

/// One receiver's task.
struct Sender {
    rx: mpsc::Receiver<Bytes>,
    /// The queue's bytes ([`Webhook::queued_bytes`]): each event taken off is taken off it.
    bytes: Arc<AtomicUsize>,
    client: Client,
    shown: String,
    shared: Arc<Shared>,
    style: Style,
    figures: Arc<Figures>,
    /// An event that did not fit in the last batch: the first of the next.
    held: Option<Bytes>,
    batches: u64,
    rng: u64,
    /// When delivery trouble was last logged (ms since the epoch).
    warned_ms: u64,
}

/// How one batch ended.
enum Outcome {
    Taken,
    Dropped(Metric),
    Stopped,
}

impl Sender {
    async fn run(mut self) {
        loop {
            let first = match self.held.take() {
                Some(event) => Some(event),
                None => tokio::select! {
                    biased;
                    event = self.rx.recv() => event,
                    () = self.shared.draining.cancelled() => self.rx.try_recv().ok(),
                }
                .inspect(|e| self.took(e)),
            };
            let Some(first) = first else {
                break;
            };
            let (body, n) = self.batch(first);
            match self.deliver(body, n).await {
                Outcome::Taken => {}
                Outcome::Dropped(reason) => self.count_dropped(reason, n),
                Outcome::Stopped => {
                    self.count_dropped(Metric::EventsDroppedShutdown, n);
                    break;
                }
            }
        }
        // What is left when the deadline stopped us.
        let mut left = usize::from(self.held.take().is_some());
        while let Ok(e) = self.rx.try_recv() {
            self.took(&e);
            left += 1;
        }
        if left > 0 {
            self.count_dropped(Metric::EventsDroppedShutdown, left);
            warn!(url = %self.shown, left, "events not delivered at shutdown");
        }
    }

    /// `event` left the queue.
    fn took(&self, event: &Bytes) {
        self.bytes.fetch_sub(event.len(), Relaxed);
    }

    /// The `[...]` array of `first` and what else is queued, within the batch bounds
    /// (the body around it is made per attempt: [`Sender::body`]).
    fn batch(&mut self, first: Bytes) -> (Bytes, usize) {
        let d = &self.shared.delivery;
        // What the body adds around the array, at most (`{"time_ms":…,"events":…}`).
        const FRAME: usize = 40;
        let mut list = Vec::with_capacity(first.len() + 2);
        list.push(b'[');
        list.extend_from_slice(&first);
        let mut n = 1;
        while n < d.batch_events {
            let Ok(event) = self.rx.try_recv() else {
                break;
            };
            self.took(&event);
            if FRAME + list.len() + 1 + event.len() + 1 > d.batch_bytes {
                self.held = Some(event);
                break;
            }
            list.push(b',');
            list.extend_from_slice(&event);
            n += 1;
        }
        list.push(b']');
        (Bytes::from(list), n)
    }

    /// One attempt's body around the batch's `list`: pushwire's `{"events":…}`, or
    /// Pusher's `{"time_ms":…,"events":…}` stamped now (pusher-http-python refuses a
    /// `time_ms` five minutes old, so a retry is stamped again).
    fn body(&self, list: &[u8]) -> Bytes {
        let head = match &self.style {
            Style::Pushwire => "{\"events\":".to_owned(),
            Style::Pusher(_) => format!("{{\"time_ms\":{},\"events\":", unix_millis()),
        };
        let mut body = Vec::with_capacity(head.len() + list.len() + 1);
        body.extend_from_slice(head.as_bytes());
        body.extend_from_slice(list);
        body.push(b'}');
        Bytes::from(body)
    }

    /// Sends one batch until it is taken, refused, out of attempts, or the deadline.
    async fn deliver(&mut self, list: Bytes, n: usize) -> Outcome {
        self.batches += 1;
        let id = format!("{}-{}", self.shared.node, self.batches);
        let attempts = self.shared.delivery.attempts.max(1);
        let mut why = String::new();
        for attempt in 1..=attempts {
            let body = self.body(&list);
            let Some(headers) = self.headers(&id, &body) else {
                self.trouble(Health::Failing, "no events secret: not sent".to_owned());
                return Outcome::Dropped(Metric::EventsDroppedRefused);
            };
            let post = self
                .client
                .post(&headers, body.clone(), self.shared.delivery.timeout);
            let result = tokio::select! {
                biased;
                () = self.shared.stop.cancelled() => return Outcome::Stopped,
                r = post => r,
            };
            let wait = match result {
                Ok(Answer { status, .. }) if (200..300).contains(&status) => {
                    self.taken(n, attempt);
                    return Outcome::Taken;
                }
                Ok(Answer {
                    status,
                    retry_after,
                }) if status == 408 || status == 429 || status >= 500 => {
                    why = format!("answered {status}");
                    self.failed(why.clone(), attempt, attempts);
                    retry_after.map(|d| d.min(MAX_BACKOFF))
                }
                Ok(Answer { status, .. }) => {
                    self.trouble(
                        Health::Failing,
                        format!("answered {status}: refused, not retried; {n} events dropped"),
                    );
                    return Outcome::Dropped(Metric::EventsDroppedRefused);
                }
                Err(failure) => {
                    why = failure.to_string();
                    self.failed(why.clone(), attempt, attempts);
                    None
                }
            };
            if attempt == attempts {
                break;
            }
            let pause = wait.unwrap_or_else(|| self.backoff(attempt));
            tokio::select! {
                biased;
                () = self.shared.stop.cancelled() => return Outcome::Stopped,
                () = tokio::time::sleep(pause) => {}
            }
            self.shared.metrics.add(Metric::EventsRetried, n as u64);
            self.figures.retried.fetch_add(n as u64, Relaxed);
        }
        self.trouble(
            Health::Failing,
            format!("gave up after {attempts} attempts (last: {why}); {n} events dropped"),
        );
        Outcome::Dropped(Metric::EventsDroppedAttempts)
    }

    /// The signature headers for this attempt; `None` without a secret (never sent
    /// unsigned).
    fn headers(&self, id: &str, body: &[u8]) -> Option<Vec<(&'static str, HeaderValue)>> {
        let value = |s: String| HeaderValue::from_str(&s).ok();
        if let Style::Pusher(keys) = &self.style {
            let keys = keys.read().unwrap_or_else(|e| e.into_inner()).clone();
            return Some(vec![
                ("x-pusher-key", value(keys.key().to_owned())?),
                ("x-pusher-signature", value(keys.webhook_signature(body))?),
            ]);
        }
        let secret = self
            .shared
            .secret
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let now = unix_millis() / 1000;
        Some(vec![
            (signature::TIMESTAMP, value(now.to_string())?),
            (
                signature::SIGNATURE,
                value(signature::sign(&secret, now, body))?,
            ),
            (signature::DELIVERY, value(id.to_owned())?),
        ])
    }

    fn taken(&mut self, n: usize, attempt: u32) {
        self.shared.metrics.add(Metric::EventsSent, n as u64);
        let f = &self.figures;
        f.sent.fetch_add(n as u64, Relaxed);
        f.last_ok_ms.store(unix_millis(), Relaxed);
        if matches!(f.health(), Health::Retrying | Health::Failing) {
            info!(url = %self.shown, attempt, "event receiver takes deliveries again");
        }
        f.set(Health::Ok, None);
    }

    fn failed(&mut self, why: String, attempt: u32, attempts: u32) {
        debug!(url = %self.shown, attempt, attempts, why = %escaped(&why), "event delivery failed");
        self.trouble(Health::Retrying, why);
    }

    /// Records trouble, and logs it at most once a minute.
    fn trouble(&mut self, health: Health, why: String) {
        let now = unix_millis();
        if now.saturating_sub(self.warned_ms) >= WARN_EVERY_MS {
            self.warned_ms = now;
            warn!(
                url = %self.shown,
                why = %escaped(&why),
                dropped_so_far = self.figures.dropped.load(Relaxed),
                "event receiver trouble (logged at most once a minute)"
            );
        }
        self.figures.set(health, Some(why));
    }

    fn count_dropped(&self, reason: Metric, n: usize) {
        self.shared.metrics.add(reason, n as u64);
        self.figures.dropped.fetch_add(n as u64, Relaxed);
    }

    /// The pause after failed attempt `attempt` (1-based), with jitter.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let full = FIRST_BACKOFF
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(MAX_BACKOFF);
        // xorshift64: enough to spread receivers' retries apart.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = full / 2;
        half + half.mul_f64((self.rng % 1024) as f64 / 1023.0)
    }
}

/// A seed that differs per task and per process.
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(unix_millis());
    h.finish() | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(batch_events: usize, batch_bytes: usize) -> (Sender, mpsc::Sender<Bytes>) {
        let (tx, rx) = mpsc::channel(16);
        let target = Target::parse("http://127.0.0.1:9/").unwrap();
        let s = Sender {
            rx,
            bytes: Arc::new(AtomicUsize::new(usize::MAX / 2)),
            client: Client::new(target, None).unwrap(),
            shown: String::new(),
            shared: Arc::new(Shared {
                node: "n".into(),
                delivery: Delivery {
                    batch_events,
                    batch_bytes,
                    timeout: Duration::from_secs(1),
                    attempts: 3,
                },
                secret: RwLock::new(None),
                metrics: Arc::new(Metrics::default()),
                draining: CancellationToken::new(),
                stop: CancellationToken::new(),
            }),
            style: Style::Pushwire,
            figures: Arc::default(),
            held: None,
            batches: 0,
            rng: seed(),
            warned_ms: 0,
        };
        (s, tx)
    }

    fn ev(json: &str) -> Bytes {
        Bytes::from(json.to_owned())
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let (mut s, _tx) = sender(2, 64);
        for attempt in 1..=40u32 {
            let full = FIRST_BACKOFF
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(MAX_BACKOFF);
            for _ in 0..50 {
                let d = s.backoff(attempt);
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}: {d:?} of {full:?}"
                );
            }
        }
    }

    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        let (mut s, tx) = sender(3, 80);
        for json in ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}", "{\"d\":4}"] {
            tx.try_send(ev(json)).unwrap();
        }
        let first = s.rx.try_recv().unwrap();
        let (list, n) = s.batch(first);
        // 3 events of 7 bytes: 40 (the most the body adds) + 1 + 7 + 1 + 7 + 1 + 7 + 1 =
        // 65 bytes, within 80.
        assert_eq!(
            (&s.body(&list)[..], n),
            (&b"{\"events\":[{\"a\":1},{\"b\":2},{\"c\":3}]}"[..], 3)
        );
        let first = s.rx.try_recv().unwrap();
        let (list, n) = s.batch(first);
        assert_eq!(
            (&s.body(&list)[..], n),
            (&b"{\"events\":[{\"d\":4}]}"[..], 1)
        );
        // By bytes: with the second event it would be 57 bytes, above 55, so it waits for
        // the next batch.
        let (mut s, tx) = sender(100, 55);
        tx.try_send(ev("{\"e\":5}")).unwrap();
        tx.try_send(ev("{\"f\":6}")).unwrap();
        let first = s.rx.try_recv().unwrap();
        assert_eq!(s.batch(first).1, 1);
        let held = s.held.take().expect("held for the next batch");
        assert_eq!(&held[..], b"{\"f\":6}");
        // An event larger than the bound still goes, alone.
        let (list, n) = s.batch(ev(&format!("{{\"x\":\"{}\"}}", "y".repeat(100))));
        assert_eq!(n, 1);
        assert!(list.len() > 100);
    }

    /// Pusher's body is stamped per attempt and signed with the app's keys, as the
    /// SDKs' validators check it.
    #[test]
    fn pusher_style_bodies_and_headers() {
        let (mut s, _tx) = sender(3, 1000);
        let keys = Keys::new("k", b"0123456789abcdef");
        s.style = Style::Pusher(Arc::new(RwLock::new(keys.clone())));
        let (list, _) = s.batch(ev("{\"name\":\"channel_occupied\",\"channel\":\"c\"}"));
        let body = s.body(&list);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let t = v["time_ms"].as_u64().unwrap();
        assert!(t.abs_diff(unix_millis()) < 5_000, "{v}");
        assert_eq!(v["events"][0]["name"], "channel_occupied");
        let headers = s.headers("id", &body).unwrap();
        assert_eq!(headers[0], ("x-pusher-key", HeaderValue::from_static("k")));
        assert_eq!(headers[1].0, "x-pusher-signature");
        assert_eq!(
            headers[1].1.to_str().unwrap(),
            keys.webhook_signature(&body)
        );
    }
}
