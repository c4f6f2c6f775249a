//! Human tables, JSON lines, percentiles and progress lines.

use crate::procstat::{self, Usage};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// One scenario's results: ordered rows printed as a table and as one JSON object.
pub struct Report {
    pub scenario: String,
    rows: Vec<(String, String, Value, String)>,
    notes: Vec<String>,
    errors_at_start: u64,
    pub ok: bool,
}

impl Report {
    pub fn new(scenario: &str) -> Report {
        Report {
            scenario: scenario.to_string(),
            rows: Vec::new(),
            notes: Vec::new(),
            errors_at_start: crate::track::error_count(),
            ok: true,
        }
    }

    fn push(&mut self, key: &str, label: &str, v: Value, shown: String) {
        self.rows
            .push((key.to_string(), label.to_string(), v, shown));
    }

    pub fn int(&mut self, key: &str, label: &str, v: u64) {
        self.push(key, label, json!(v), v.to_string());
    }

    /// A float shown with `prec` decimals and a unit.
    pub fn num(&mut self, key: &str, label: &str, v: f64, prec: usize, unit: &str) {
        let rounded = (v * 1000.0).round() / 1000.0;
        let shown = if unit.is_empty() {
            format!("{v:.prec$}")
        } else {
            format!("{v:.prec$} {unit}")
        };
        self.push(key, label, json!(rounded), shown);
    }

    pub fn opt_num(&mut self, key: &str, label: &str, v: Option<f64>, prec: usize, unit: &str) {
        match v {
            Some(v) => self.num(key, label, v, prec, unit),
            None => self.push(key, label, Value::Null, "n/a".into()),
        }
    }

    pub fn text(&mut self, key: &str, label: &str, v: &str) {
        self.push(key, label, json!(v), v.to_string());
    }

    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }

    /// p50/p99/p99.9/max of sorted nanosecond values, shown in ms.
    pub fn percentiles_ms(&mut self, key: &str, label: &str, sorted_ns: &[u64]) {
        if sorted_ns.is_empty() {
            self.push(key, label, Value::Null, "n/a".into());
            return;
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        let (p50, p99, p999, max) = (
            ms(pct(sorted_ns, 50.0)),
            ms(pct(sorted_ns, 99.0)),
            ms(pct(sorted_ns, 99.9)),
            ms(*sorted_ns.last().unwrap_or(&0)),
        );
        let r = |v: f64| (v * 1000.0).round() / 1000.0;
        self.push(
            key,
            label,
            json!({"p50_ms": r(p50), "p99_ms": r(p99), "p99_9_ms": r(p999), "max_ms": r(max)}),
            format!("p50 {p50:.3} / p99 {p99:.3} / p99.9 {p999:.3} / max {max:.3} ms"),
        );
    }

    /// CPU figures of a measured phase; `pushes` > 0 adds the per-push figures.
    pub fn usage(&mut self, u: &Usage, pushes: u64, server_pid: Option<u32>) {
        self.num("wall_s", "measured wall time", u.wall_s, 3, "s");
        if pushes > 0 && u.wall_s > 0.0 {
            self.num(
                "pushes_per_s",
                "pushes/s (over measured phase)",
                pushes as f64 / u.wall_s,
                0,
                "",
            );
        }
        let per = |ms: Option<f64>| {
            ms.filter(|_| pushes > 0)
                .map(|m| m * 1000.0 / pushes as f64)
        };
        if server_pid.is_some() {
            self.opt_num(
                "server_cpu_ms",
                "server CPU (utime+stime)",
                u.server_ms,
                0,
                "ms",
            );
            if pushes > 0 {
                self.opt_num(
                    "server_cpu_us_per_push",
                    "server CPU per push (utime+stime)",
                    per(u.server_ms),
                    2,
                    "µs",
                );
                self.opt_num(
                    "server_cpu_us_per_push_hires",
                    "server CPU per push (schedstat, hi-res)",
                    per(u.server_ms_hires),
                    2,
                    "µs",
                );
            }
        }
        if let Some(redis) = u.redis_ms {
            self.num(
                "redis_cpu_ms",
                "redis-server CPU (schedstat)",
                redis,
                1,
                "ms",
            );
            if pushes > 0 {
                self.num(
                    "redis_cpu_us_per_push",
                    "redis-server CPU per push",
                    redis * 1000.0 / pushes as f64,
                    2,
                    "µs",
                );
            }
        }
        self.opt_num("bench_cpu_ms", "bench's own CPU", u.bench_ms, 0, "ms");
        self.opt_num(
            "ksoftirqd_cpu_ms",
            "ksoftirqd CPU (deferred network work)",
            u.softirqd_ms,
            0,
            "ms",
        );
        self.opt_num(
            "other_cpu_ms",
            "other CPU on the machine (noise)",
            u.other_ms,
            0,
            "ms",
        );
        if let Some(o) = u.other_ms
            && u.wall_s > 0.0
            && o > 50.0 + 0.1 * u.wall_s * 1000.0
        {
            self.note(format!(
                "other processes used {o:.0} ms of CPU during the {:.2} s phase: figures are disturbed",
                u.wall_s
            ));
        }
        if pushes > 0 {
            self.opt_num(
                "bench_cpu_us_per_push",
                "bench CPU per push",
                per(u.bench_ms_hires.or(u.bench_ms)),
                2,
                "µs",
            );
        }
    }

    /// Current server RSS, if the pid is known.
    pub fn server_rss(&mut self, server_pid: Option<u32>) {
        if let Some(m) = server_pid.and_then(procstat::server_mem) {
            self.int("server_rss_kib", "server RSS (VmRSS)", m.rss_kib);
        }
    }

    /// Marks the report failed if errors were logged since it started.
    pub fn finish(mut self) -> Report {
        let errors = crate::track::error_count() - self.errors_at_start;
        if errors > 0 {
            self.ok = false;
        }
        self.int("errors", "correctness/run errors", errors);
        self
    }

    pub fn print(&self, json_only: bool) {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if !json_only {
            let verdict = if self.ok { "OK" } else { "FAILED" };
            let _ = writeln!(out, "\n== {} == {}", self.scenario, verdict);
            let w = self
                .rows
                .iter()
                .map(|r| r.1.chars().count())
                .max()
                .unwrap_or(0);
            for (_, label, _, shown) in &self.rows {
                let _ = writeln!(out, "  {label:<w$}  {shown}");
            }
            for n in &self.notes {
                let _ = writeln!(out, "  note: {n}");
            }
        }
        let mut m = Map::new();
        m.insert("scenario".into(), json!(self.scenario));
        m.insert("ok".into(), json!(self.ok));
        for (key, _, v, _) in &self.rows {
            m.insert(key.clone(), v.clone());
        }
        if !self.notes.is_empty() {
            m.insert("notes".into(), json!(self.notes));
        }
        let _ = writeln!(out, "{}", Value::Object(m));
        let _ = out.flush();
    }
}

/// Nearest-rank percentile of sorted values.
pub fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // The epsilon keeps 99.9% of 1000 at rank 999 despite floating-point rounding.
    let rank = (p * sorted.len() as f64 / 100.0 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Prints `label: <f()>` to stderr every `every` until dropped.
pub struct Progress(Option<tokio::task::JoinHandle<()>>);

impl Progress {
    pub fn start<F>(enabled: bool, every: Duration, label: &'static str, f: F) -> Progress
    where
        F: Fn() -> String + Send + Sync + 'static,
    {
        if !enabled {
            return Progress(None);
        }
        let f = Arc::new(f);
        let started = std::time::Instant::now();
        Progress(Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                eprintln!(
                    "[{:>6.1}s] {label}: {}",
                    started.elapsed().as_secs_f64(),
                    f()
                );
            }
        })))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pct;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(pct(&v, 50.0), 500);
        assert_eq!(pct(&v, 99.0), 990);
        assert_eq!(pct(&v, 99.9), 999);
        assert_eq!(pct(&v, 100.0), 1000);
        assert_eq!(pct(&[5], 99.9), 5);
    }
}
