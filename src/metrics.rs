//! Process-wide counters, updated with relaxed atomics off the lock paths.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Counters an operator wants; read with [`Metrics::snapshot`].
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    pub(crate) pushes_ok: AtomicU64,
    pub(crate) pushes_fail: AtomicU64,
    pub(crate) bad_lines: AtomicU64,
    pub(crate) evicted: AtomicU64,
    pub(crate) commands: AtomicU64,
    pub(crate) kicked: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) ws_accepted: AtomicU64,
    pub(crate) binds: AtomicU64,
    pub(crate) refused_per_ip: AtomicU64,
    pub(crate) refused_pending: AtomicU64,
    /// Gauge: backend connections open now (TCP and Unix socket).
    pub(crate) push_connections: AtomicU64,
    /// Milliseconds since `started` of the last refusal warning, to rate-limit it.
    last_refusal_warn: AtomicU64,
}

/// A point-in-time copy of [`Metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Seconds since the registry was created.
    pub uptime_secs: u64,
    /// Push lines answered `ok`.
    pub pushes_ok: u64,
    /// Push lines answered `fail` (offline, refused or malformed).
    pub pushes_fail: u64,
    /// Push lines that were malformed (a subset of `pushes_fail`).
    pub bad_lines: u64,
    /// Connections closed because their queue filled up.
    pub evicted: u64,
    /// Command lines (`/...`) handled.
    pub commands: u64,
    /// Connections closed by `/kick`.
    pub kicked: u64,
    /// Text frames written to browsers.
    pub frames_out: u64,
    /// Payload bytes written to browsers.
    pub bytes_out: u64,
    /// WebSocket TCP connections accepted.
    pub ws_accepted: u64,
    /// Successful uid binds.
    pub binds: u64,
    /// WebSocket connections refused by the per-address cap.
    pub refused_per_ip: u64,
    /// WebSocket connections refused by the budget of connections not bound yet.
    pub refused_pending: u64,
    /// Backend connections open now, TCP and Unix socket together (a gauge, counted
    /// against `--max-push-connections`).
    pub push_connections: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            pushes_ok: AtomicU64::new(0),
            pushes_fail: AtomicU64::new(0),
            bad_lines: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            kicked: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            ws_accepted: AtomicU64::new(0),
            binds: AtomicU64::new(0),
            refused_per_ip: AtomicU64::new(0),
            refused_pending: AtomicU64::new(0),
            push_connections: AtomicU64::new(0),
            last_refusal_warn: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Adds one to a counter.
    pub(crate) fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            uptime_secs: self.started.elapsed().as_secs(),
            pushes_ok: self.pushes_ok.load(Relaxed),
            pushes_fail: self.pushes_fail.load(Relaxed),
            bad_lines: self.bad_lines.load(Relaxed),
            evicted: self.evicted.load(Relaxed),
            commands: self.commands.load(Relaxed),
            kicked: self.kicked.load(Relaxed),
            frames_out: self.frames_out.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            ws_accepted: self.ws_accepted.load(Relaxed),
            binds: self.binds.load(Relaxed),
            refused_per_ip: self.refused_per_ip.load(Relaxed),
            refused_pending: self.refused_pending.load(Relaxed),
            push_connections: self.push_connections.load(Relaxed),
        }
    }
}

impl Metrics {
    /// True at most once per 10 s: refusals during a flood log one warning, not thousands.
    pub(crate) fn should_warn_refusal(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64 + 10_000;
        let last = self.last_refusal_warn.load(Relaxed);
        now.saturating_sub(last) >= 10_000
            && self
                .last_refusal_warn
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }

    /// Counts frames written to browsers.
    pub(crate) fn add_out(&self, frames: &[tokio_tungstenite::tungstenite::Utf8Bytes]) {
        let bytes: usize = frames.iter().map(|m| m.len()).sum();
        self.frames_out.fetch_add(frames.len() as u64, Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Relaxed);
    }
}
