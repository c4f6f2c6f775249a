//! Reading the server's (and the bench's own) CPU time and memory from /proc.
//!
//! CPU: `utime + stime` of /proc/PID/stat (all threads, including exited ones; clock ticks of
//! 1/100 s) is the reference figure. Because ticks are coarse for short phases, the sum of
//! `sum_exec_runtime` over /proc/PID/task/*/schedstat (ns, live threads only) is reported next
//! to it as a high-resolution cross-check.

use std::time::Instant;

/// USER_HZ: Linux reports /proc CPU times in 1/100 s on every mainstream architecture.
const TICKS_PER_SEC: u64 = 100;

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// utime + stime in clock ticks.
pub fn cpu_ticks(pid: &str) -> Option<u64> {
    let s = read(&format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces or parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Sum of on-CPU nanoseconds of the live threads.
pub fn sched_ns(pid: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut any = false;
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let p = e.path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(p)
            && let Some(v) = s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        {
            total += v;
            any = true;
        }
    }
    any.then_some(total)
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss_kib: u64,
    pub rss_anon_kib: u64,
}

pub fn mem(pid: &str) -> Option<Mem> {
    let s = read(&format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some(Mem {
        rss_kib: field("VmRSS:")?,
        rss_anon_kib: field("RssAnon:").unwrap_or(0),
    })
}

/// System-wide TCP socket memory ("TCP: ... mem N", in pages) from /proc/net/sockstat.
pub fn tcp_mem_pages() -> Option<u64> {
    let s = read("/proc/net/sockstat")?;
    let line = s.lines().find(|l| l.starts_with("TCP:"))?;
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == "mem" {
            return it.next()?.parse().ok();
        }
    }
    None
}

/// Whether /proc/PID exists.
pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[derive(Clone, Copy)]
pub struct Snap {
    at: Instant,
    srv_ticks: Option<u64>,
    srv_ns: Option<u64>,
    self_ticks: Option<u64>,
    self_ns: Option<u64>,
}

/// CPU used during a measured phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub wall_s: f64,
    /// Server CPU from utime+stime, milliseconds.
    pub server_ms: Option<f64>,
    /// Server CPU from schedstat, milliseconds.
    pub server_ms_hires: Option<f64>,
    /// The bench's own CPU (utime+stime), milliseconds.
    pub bench_ms: Option<f64>,
    pub bench_ms_hires: Option<f64>,
}

/// Start of a measured phase.
pub struct Meter {
    pid: Option<String>,
    start: Snap,
}

impl Meter {
    pub fn start(pid: Option<u32>) -> Meter {
        let pid = pid.map(|p| p.to_string());
        let start = snap(pid.as_deref());
        Meter { pid, start }
    }

    pub fn stop(&self) -> Usage {
        let end = snap(self.pid.as_deref());
        let s = &self.start;
        let ticks = |a: Option<u64>, b: Option<u64>| {
            Some(b?.saturating_sub(a?) as f64 * 1000.0 / TICKS_PER_SEC as f64)
        };
        let ns = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?) as f64 / 1e6);
        Usage {
            wall_s: end.at.duration_since(s.at).as_secs_f64(),
            server_ms: ticks(s.srv_ticks, end.srv_ticks),
            server_ms_hires: ns(s.srv_ns, end.srv_ns),
            bench_ms: ticks(s.self_ticks, end.self_ticks),
            bench_ms_hires: ns(s.self_ns, end.self_ns),
        }
    }
}

fn snap(pid: Option<&str>) -> Snap {
    Snap {
        at: Instant::now(),
        srv_ticks: pid.and_then(cpu_ticks),
        srv_ns: pid.and_then(sched_ns),
        self_ticks: cpu_ticks("self"),
        self_ns: sched_ns("self"),
    }
}
