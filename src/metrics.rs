//! Every number the daemon reports, defined once in [`metrics!`]'s table: its `/stats`
//! key, its Prometheus family (and label), its help text. `/stats`, `/metrics` and the
//! tests all read the table, so a new counter cannot be missing from one of them.
//!
//! Counters and stored gauges are relaxed atomics, updated off the lock paths. Gauges that
//! are facts about other parts (online uids, open files) are read when asked for, through
//! [`Gauges`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// How a metric's value is had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A counter kept here.
    Counter,
    /// A gauge kept here (moved up and down by [`Metrics::add`] / [`Metrics::sub`]).
    Gauge,
    /// A gauge read from elsewhere when asked for ([`Gauges`]).
    Read,
}

/// One row of the table.
#[derive(Debug)]
pub struct Def {
    /// Key in `/stats`.
    pub stats: &'static str,
    /// Prometheus family, without the `pushwire_` prefix (counters get `_total`).
    pub family: &'static str,
    /// The label that tells this row from others of its family, if any.
    pub label: Option<(&'static str, &'static str)>,
    /// Help text.
    pub help: &'static str,
    /// Where the value comes from.
    pub kind: Kind,
}

macro_rules! metrics {
    ($($kind:ident $name:ident = $stats:literal, $family:literal $([$lk:literal = $lv:literal])?, $help:literal;)*) => {
        /// Every metric, in `/stats` order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Metric {
            $(#[doc = $help] $name,)*
        }

        impl Metric {
            /// Every metric, in `/stats` order.
            pub const ALL: &'static [Metric] = &[$(Metric::$name,)*];

            /// Its row of the table.
            pub fn def(self) -> &'static Def {
                match self {
                    $(Metric::$name => &Def {
                        stats: $stats,
                        family: $family,
                        label: metrics!(@label $($lk = $lv)?),
                        help: $help,
                        kind: Kind::$kind,
                    },)*
                }
            }
        }
    };
    (@label) => { None };
    (@label $k:literal = $v:literal) => { Some(($k, $v)) };
}

metrics! {
    Read Connections = "connections", "connections", "Bound browser connections";
    Read Uids = "uids", "uids", "Uids with at least one bound connection";
    Read Groups = "groups", "groups", "Groups that exist";
    Counter PushesOk = "pushes_ok", "pushes" ["outcome" = "ok"], "Push lines and /push commands by outcome";
    Counter PushesFail = "pushes_fail", "pushes" ["outcome" = "fail"], "Push lines and /push commands by outcome";
    Counter BadLines = "bad_lines", "bad_lines", "Push lines that were malformed (a subset of failed pushes)";
    Counter Commands = "commands", "commands", "Command lines (/...) handled";
    Counter Evicted = "evicted", "evicted", "Browser connections closed because their send queue filled";
    Counter Kicked = "kicked", "kicked", "Browser connections closed by /kick";
    Counter FramesOut = "frames_out", "frames_out", "Text frames written to browsers";
    Counter BytesOut = "bytes_out", "bytes_out", "Payload bytes written to browsers";
    Counter WsAccepted = "ws_accepted", "ws_accepted", "Browser-port TCP connections accepted";
    Counter Binds = "binds", "binds", "Uid binds";
    Counter RefusedPerIp = "refused_per_ip", "refused" ["reason" = "per_ip"], "Connections refused, by reason";
    Counter RefusedPending = "refused_pending", "refused" ["reason" = "pending"], "Connections refused, by reason";
    Gauge PushConnections = "push_connections", "push_connections", "Backend connections open (TCP and Unix socket)";
    Counter RefusedOrigin = "refused_origin", "refused" ["reason" = "origin"], "Connections refused, by reason";
    Counter RefusedToken = "refused_token", "refused" ["reason" = "token"], "Connections refused, by reason";
    Counter RefusedPush = "refused_push", "refused" ["reason" = "push_access"], "Connections refused, by reason";
    Counter RefusedHttpPerIp = "refused_http_per_ip", "refused" ["reason" = "http_per_ip"], "Connections refused, by reason";
    Counter LimitWs = "limit_hits_ws", "connection_limit_hits" ["listener" = "ws"], "Times a listener found its connection limit reached";
    Counter LimitPush = "limit_hits_push", "connection_limit_hits" ["listener" = "push"], "Times a listener found its connection limit reached";
    Counter LimitHttp = "limit_hits_http", "connection_limit_hits" ["listener" = "http"], "Times a listener found its connection limit reached";
    Counter HttpRequests = "http_requests", "http_requests_all", "HTTP requests answered (by status: pushwire_http_requests_total)";
    Read OpenFds = "open_fds", "open_fds", "File descriptors open";
    Read FdLimit = "fd_limit", "fd_limit", "Open-files limit (soft)";
    Read HistoryUids = "history_uids", "history_uids", "Uids with a history (protocol v1, offline queue)";
    Read HistoryBytes = "history_bytes", "history_bytes", "Bytes kept in history over all uids (payload plus bookkeeping)";
    Counter HistoryRefused = "history_refused", "history_refused", "Messages numbered but not kept (larger than the per-uid bound, or the total bound reached)";
    Counter Queued = "queued", "queued", "Pushes kept in an offline queue (/push ttl=)";
    Counter Acks = "acks", "acks", "Ack frames from protocol v1 tabs";
    Counter AckFloods = "ack_floods", "ack_floods", "Protocol v1 tabs closed for sending --max-stale-acks acks in a row that acknowledged nothing new";
    Counter HistoryEvicted = "history_evicted", "history_evicted", "Histories of offline uids dropped to make room for another (--history-max-uids)";
    Counter HistoryFull = "history_full", "history_full", "Histories not made because every one was in use (--history-max-uids): v1 binds refused, ttl= pushes not queued";
    Counter Duplicates = "duplicates", "duplicates", "/push retries answered duplicate";
    Counter Events = "events", "events", "Events that happened while someone listened (webhooks, /events)";
    Counter EventsSent = "events_sent", "events_sent", "Events a webhook receiver took (2xx), summed over receivers";
    Counter EventsRetried = "events_retried", "events_retried", "Events sent again to a webhook receiver after a failed attempt";
    Counter EventsDroppedFull = "events_dropped_queue_full", "events_dropped" ["reason" = "queue_full"], "Events lost for a webhook receiver, by reason";
    Counter EventsDroppedRefused = "events_dropped_refused", "events_dropped" ["reason" = "refused"], "Events lost for a webhook receiver, by reason";
    Counter EventsDroppedAttempts = "events_dropped_attempts", "events_dropped" ["reason" = "attempts"], "Events lost for a webhook receiver, by reason";
    Counter EventsDroppedShutdown = "events_dropped_shutdown", "events_dropped" ["reason" = "shutdown"], "Events lost for a webhook receiver, by reason";
    Read EventsQueued = "events_queued", "events_queued", "Events waiting for webhook receivers (all queues)";
    Gauge EventStreams = "event_streams", "event_streams", "Backend connections reading /events";
    Counter EventStreamsCut = "event_streams_cut", "event_streams_cut", "/events readers cut: a whole ring behind, or their socket stuck";
    Counter EventsMessages = "events_messages", "events_messages", "Browser frames taken as message events";
    Counter EventsMessagesRefused = "events_messages_refused", "events_messages_refused", "Browsers closed for sending message events over --events-message-bytes or --events-message-rate";
    Gauge RedisReady = "redis_ready", "redis_ready", "1 while this node's Redis link is up and Redis answers within --cluster-timeout-ms (cluster mode; always 0 on a single node)";
    Counter RedisTimeouts = "redis_timeouts", "redis_timeouts", "Probes, publish batches and /push retry claims Redis left unanswered for --cluster-timeout-ms";
    Counter RedisUnreachable = "redis_unreachable", "redis_episodes" ["reason" = "unreachable"], "Times this node began serving its own connections only, by why: Redis unreachable (a link lost) or not answering";
    Counter RedisNotAnswering = "redis_not_answering", "redis_episodes" ["reason" = "not_answering"], "Times this node began serving its own connections only, by why: Redis unreachable (a link lost) or not answering";
    Counter RedisLinksReplaced = "redis_links_replaced", "redis_links_replaced", "Connections to a Redis server opened again after the first (a lost link replaced)";
}

/// What the read gauges are, asked for when `/stats` or `/metrics` is read.
pub trait Gauges {
    /// The current value of a [`Kind::Read`] metric.
    fn read(&self, metric: Metric) -> u64;
}

/// Upper bounds of the push→write latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// HTTP statuses the HTTP door answers with; others count as `other`.
const HTTP_STATUSES: [u16; 11] = [200, 400, 401, 403, 404, 405, 408, 413, 429, 500, 503];

/// The daemon's counters, histograms and stored gauges.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    values: [AtomicU64; Metric::ALL.len()],
    /// Push received → frame written, one count per frame: buckets, then +Inf.
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_ns: AtomicU64,
    http: [AtomicU64; HTTP_STATUSES.len() + 1],
    /// Milliseconds since `started` of the last refusal warning, to rate-limit it.
    last_refusal_warn: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            values: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_ns: AtomicU64::new(0),
            http: std::array::from_fn(|_| AtomicU64::new(0)),
            last_refusal_warn: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Adds one to a counter (or a stored gauge).
    pub fn incr(&self, m: Metric) {
        self.add(m, 1);
    }

    /// Adds `n`.
    pub fn add(&self, m: Metric, n: u64) {
        self.values[m as usize].fetch_add(n, Relaxed);
    }

    /// Sets a stored gauge.
    pub fn set(&self, m: Metric, n: u64) {
        self.values[m as usize].store(n, Relaxed);
    }

    /// Takes `n` off a stored gauge.
    pub fn sub(&self, m: Metric, n: u64) {
        self.values[m as usize].fetch_sub(n, Relaxed);
    }

    /// A stored value (0 for a read gauge: ask [`Metrics::get`] with a [`Gauges`]).
    pub fn value(&self, m: Metric) -> u64 {
        self.values[m as usize].load(Relaxed)
    }

    /// The value of any metric.
    pub fn get(&self, m: Metric, gauges: &dyn Gauges) -> u64 {
        match m.def().kind {
            Kind::Read => gauges.read(m),
            Kind::Counter | Kind::Gauge => self.value(m),
        }
    }

    /// Seconds since the daemon started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Counts frames written to browsers, `received` being when each was received: one
    /// clock read per batch, three relaxed adds per frame.
    pub fn frames_written(&self, sizes_and_times: impl Iterator<Item = (usize, Instant)>) {
        let now = Instant::now();
        let (mut frames, mut bytes, mut ns) = (0u64, 0u64, 0u64);
        for (len, received) in sizes_and_times {
            frames += 1;
            bytes += len as u64;
            let took = now.saturating_duration_since(received);
            ns += took.as_nanos() as u64;
            self.latency[latency_bucket(took)].fetch_add(1, Relaxed);
        }
        if frames > 0 {
            self.add(Metric::FramesOut, frames);
            self.add(Metric::BytesOut, bytes);
            self.latency_sum_ns.fetch_add(ns, Relaxed);
        }
    }

    /// [`Metrics::frames_written`] for `n` frames of `msg` written at once (a fan-out's
    /// writes through: one update of the shared counters, not one per recipient).
    pub fn frames_written_alike(&self, msg: &crate::wire::Payload, n: usize) {
        if n == 0 {
            return;
        }
        let took = Instant::now().saturating_duration_since(msg.received());
        let n64 = n as u64;
        self.latency[latency_bucket(took)].fetch_add(n64, Relaxed);
        self.add(Metric::FramesOut, n64);
        self.add(Metric::BytesOut, n64 * msg.len() as u64);
        self.latency_sum_ns
            .fetch_add(n64 * took.as_nanos() as u64, Relaxed);
    }

    /// Counts one HTTP response.
    pub fn http_status(&self, status: u16) {
        let i = HTTP_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(HTTP_STATUSES.len());
        self.http[i].fetch_add(1, Relaxed);
        self.incr(Metric::HttpRequests);
    }

    /// True at most once per 10 s: refusals during a flood log one warning, not thousands.
    pub fn should_warn_refusal(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64 + 10_000;
        let last = self.last_refusal_warn.load(Relaxed);
        now.saturating_sub(last) >= 10_000
            && self
                .last_refusal_warn
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }

    /// `/stats`: `uptime_secs`, then every metric of the table in order.
    pub fn stats(&self, gauges: &dyn Gauges) -> Vec<(&'static str, u64)> {
        let mut out = Vec::with_capacity(Metric::ALL.len() + 1);
        out.push(("uptime_secs", self.uptime().as_secs()));
        out.extend(
            Metric::ALL
                .iter()
                .map(|&m| (m.def().stats, self.get(m, gauges))),
        );
        out
    }

    /// The Prometheus text exposition (format 0.0.4) of everything.
    pub fn prometheus(&self, gauges: &dyn Gauges) -> String {
        let snapshot = Snapshot {
            values: Metric::ALL
                .iter()
                .map(|&m| (m, self.get(m, gauges)))
                .collect(),
            uptime: self.uptime().as_secs_f64(),
            latency: self.latency.iter().map(|c| c.load(Relaxed)).collect(),
            latency_sum: self.latency_sum_ns.load(Relaxed) as f64 / 1e9,
            http: self.http.iter().map(|c| c.load(Relaxed)).collect(),
        };
        let mut registry = prometheus_client::registry::Registry::with_prefix("pushwire");
        registry.register_collector(Box::new(snapshot));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// The values of one scrape, handed to prometheus-client's encoder.
#[derive(Debug)]
struct Snapshot {
    values: Vec<(Metric, u64)>,
    uptime: f64,
    latency: Vec<u64>,
    latency_sum: f64,
    http: Vec<u64>,
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let uptime = ConstGauge::new(self.uptime);
        uptime.encode(encoder.encode_descriptor(
            "uptime_seconds",
            "Seconds since the daemon started",
            None,
            MetricType::Gauge,
        )?)?;
        // One descriptor per family, in the order families first appear in the table.
        let mut done: Vec<&str> = Vec::new();
        for (m, _) in &self.values {
            let def = m.def();
            if done.contains(&def.family) {
                continue;
            }
            done.push(def.family);
            let counter = def.kind == Kind::Counter;
            let kind = if counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut metric = encoder.encode_descriptor(def.family, def.help, None, kind)?;
            let encode = |enc: prometheus_client::encoding::MetricEncoder, v: u64| {
                if counter {
                    ConstCounter::new(v).encode(enc)
                } else {
                    ConstGauge::new(v as i64).encode(enc)
                }
            };
            let Some(_) = def.label else {
                // A family of one unlabelled row.
                encode(
                    metric,
                    self.values
                        .iter()
                        .find(|(r, _)| r == m)
                        .map_or(0, |(_, v)| *v),
                )?;
                continue;
            };
            for (m, v) in self
                .values
                .iter()
                .filter(|(m, _)| m.def().family == def.family)
            {
                if let Some(label) = m.def().label {
                    encode(metric.encode_family(&[label])?, *v)?;
                }
            }
        }
        // Per-bucket counts: the encoder writes them cumulatively itself.
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.latency.iter().copied())
            .collect();
        let count = self.latency.iter().sum();
        encoder
            .encode_descriptor(
                "push_latency_seconds",
                "Push received to frame written, per delivered frame",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                self.latency_sum,
                count,
                &buckets,
                None,
            )?;
        let mut http = encoder.encode_descriptor(
            "http_requests",
            "HTTP requests answered, by status",
            None,
            MetricType::Counter,
        )?;
        for (i, n) in self.http.iter().enumerate() {
            let status = HTTP_STATUSES
                .get(i)
                .map_or_else(|| "other".to_owned(), u16::to_string);
            ConstCounter::new(*n).encode(http.encode_family(&[("status", status)])?)?;
        }
        Ok(())
    }
}

/// The push-to-write latency histogram's bucket for `took`.
fn latency_bucket(took: std::time::Duration) -> usize {
    let secs = took.as_secs_f64();
    LATENCY_BUCKETS
        .iter()
        .position(|&b| secs <= b)
        .unwrap_or(LATENCY_BUCKETS.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Gauges for Fixed {
        fn read(&self, m: Metric) -> u64 {
            m as u64 + 100
        }
    }

    #[test]
    fn one_table_feeds_stats_and_prometheus() {
        let m = Metrics::default();
        m.incr(Metric::PushesOk);
        m.add(Metric::PushesFail, 2);
        m.frames_written([(10, Instant::now())].into_iter());
        m.http_status(200);
        m.http_status(418);
        let stats = m.stats(&Fixed);
        assert_eq!(stats[0].0, "uptime_secs");
        assert_eq!(stats.len(), Metric::ALL.len() + 1);
        let get = |k: &str| stats.iter().find(|(s, _)| *s == k).map(|(_, v)| *v);
        assert_eq!(get("pushes_ok"), Some(1));
        assert_eq!(get("pushes_fail"), Some(2));
        assert_eq!(get("connections"), Some(100));
        assert_eq!(get("frames_out"), Some(1));
        assert_eq!(get("bytes_out"), Some(10));
        let text = m.prometheus(&Fixed);
        assert!(
            text.contains("pushwire_pushes_total{outcome=\"ok\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pushwire_pushes_total{outcome=\"fail\"} 2\n"),
            "{text}"
        );
        m.frames_written([(5, Instant::now() - Duration::from_secs(2))].into_iter());
        let text = m.prometheus(&Fixed);
        assert!(
            text.contains("pushwire_push_latency_seconds_count 2\n"),
            "{text}"
        );
        // Buckets are cumulative once: the fast frame from `le="0.5"` on (at least),
        // the 2 s one from `le="2.5"` on, both in `+Inf`.
        for (le, n) in [("0.5", 1), ("1", 1), ("2.5", 2), ("5", 2), ("+Inf", 2)] {
            assert!(
                text.contains(&format!(
                    "pushwire_push_latency_seconds_bucket{{le=\"{le}\"}} {n}\n"
                )),
                "le={le}: {text}"
            );
        }
        assert!(
            text.contains("pushwire_http_requests_total{status=\"other\"} 1\n"),
            "{text}"
        );
        // Every row of the table is exported.
        for m in Metric::ALL {
            assert!(
                text.contains(&format!("pushwire_{}", m.def().family)),
                "{m:?}"
            );
        }
    }
}
