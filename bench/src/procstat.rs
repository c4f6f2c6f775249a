//! Reading the server's (and the bench's own) CPU time and memory from /proc.
//!
//! CPU: `utime + stime` of /proc/PID/stat (all threads, including exited ones; clock ticks of
//! 1/100 s) is the reference figure. Because ticks are coarse for short phases, the sum of
//! `sum_exec_runtime` over /proc/PID/task/*/schedstat (ns, live threads only) is reported next
//! to it as a high-resolution cross-check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// `--server-children` (or `--door nchan`): the server is a process and its children
/// (nginx's master and workers), whose CPU and memory are summed.
static CHILDREN: AtomicBool = AtomicBool::new(false);

pub fn set_children(on: bool) {
    CHILDREN.store(on, Ordering::Relaxed);
}

/// The server's processes: `pid`, and with `set_children(true)` its children (read from
/// /proc/PID/task/*/children, else by scanning /proc for the parent pid).
pub fn tree(pid: &str) -> Vec<String> {
    let mut out = vec![pid.to_string()];
    if !CHILDREN.load(Ordering::Relaxed) || pid == "self" {
        return out;
    }
    let mut found = false;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
                found = true;
                out.extend(c.split_whitespace().map(str::to_string));
            }
        }
    }
    if !found && let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let ppid = read(&format!("/proc/{name}/stat")).and_then(|s| {
                let rest = s.get(s.rfind(')')? + 1..)?.to_string();
                rest.split_whitespace().nth(1).map(str::to_string)
            });
            if ppid.as_deref() == Some(pid) {
                out.push(name);
            }
        }
    }
    out
}

/// utime + stime of the server's processes ([`tree`]), in clock ticks.
pub fn tree_cpu_ticks(pid: &str) -> Option<u64> {
    let v: Vec<u64> = tree(pid).iter().filter_map(|p| cpu_ticks(p)).collect();
    (!v.is_empty()).then(|| v.iter().sum())
}

/// On-CPU nanoseconds of the server's processes' live threads.
pub fn tree_sched_ns(pid: &str) -> Option<u64> {
    let v: Vec<u64> = tree(pid).iter().filter_map(|p| sched_ns(p)).collect();
    (!v.is_empty()).then(|| v.iter().sum())
}

/// Memory of the server's processes, summed (RSS counts pages shared between them, such
/// as nginx's shared memory, once per process; PSS splits them).
pub fn server_mem(pid: u32) -> Option<Mem> {
    let mut total = Mem::default();
    let mut any = false;
    for p in tree(&pid.to_string()) {
        if let Some(m) = mem(&p) {
            any = true;
            total.rss_kib += m.rss_kib;
            total.rss_anon_kib += m.rss_anon_kib;
            total.pss_kib = match (total.pss_kib, m.pss_kib) {
                (Some(a), Some(b)) => Some(a + b),
                (None, b) if total.rss_kib == m.rss_kib => b,
                _ => None,
            };
        }
    }
    any.then_some(total)
}

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
    /// Proportional set size (/proc/PID/smaps_rollup), when readable.
    pub pss_kib: Option<u64>,
}

pub fn mem(pid: &str) -> Option<Mem> {
    let s = read(&format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let pss_kib = read(&format!("/proc/{pid}/smaps_rollup")).and_then(|r| {
        r.lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    });
    Some(Mem {
        rss_kib: field("VmRSS:")?,
        rss_anon_kib: field("RssAnon:").unwrap_or(0),
        pss_kib,
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

/// Kernel slab memory (/proc/meminfo `Slab:`), KiB: socket, inode, file and epoll objects.
pub fn slab_kib() -> Option<u64> {
    let s = read("/proc/meminfo")?;
    s.lines()
        .find_map(|l| l.strip_prefix("Slab:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Busy CPU time of the whole machine (all CPUs, every state but idle and iowait), in ticks.
pub fn system_busy_ticks() -> Option<u64> {
    let s = read("/proc/stat")?;
    let line = s.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7).unwrap_or(&0);
    Some(busy)
}

/// CPU ticks of the kernel's softirq threads (ksoftirqd/N): network receive work that the
/// kernel deferred out of the processes' own context, mostly the bench's and the server's
/// own loopback traffic under load.
pub fn ksoftirqd_ticks() -> Option<u64> {
    static PIDS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let pids = PIDS.get_or_init(|| {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            .filter(|p| {
                read(&format!("/proc/{p}/comm")).is_some_and(|c| c.starts_with("ksoftirqd/"))
            })
            .collect()
    });
    if pids.is_empty() {
        return None;
    }
    Some(pids.iter().filter_map(|p| cpu_ticks(p)).sum())
}

static REDIS_PIDS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Every measured phase also reads these redis-servers' CPU (`--redis-pid`, one per
/// master of a Redis Cluster: their sum).
pub fn set_redis_pids(pids: &[u32]) {
    let _ = REDIS_PIDS.set(pids.iter().map(u32::to_string).collect());
}

/// The redis-servers' CPU, summed (ns); `None` without `--redis-pid` or if one is gone.
fn redis_sched_ns() -> Option<u64> {
    let pids = REDIS_PIDS.get().filter(|p| !p.is_empty())?;
    pids.iter().map(|p| sched_ns(p)).sum()
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
    sys_ticks: Option<u64>,
    softirqd_ticks: Option<u64>,
    redis_ns: Option<u64>,
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
    /// CPU used by ksoftirqd (deferred network processing, largely this run's traffic), ms.
    pub softirqd_ms: Option<f64>,
    /// CPU used by everything else on the machine (other processes and kernel threads), ms:
    /// a large value means the measurement was disturbed.
    pub other_ms: Option<f64>,
    /// The redis-server's CPU (schedstat), ms, with `--redis-pid`.
    pub redis_ms: Option<f64>,
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
            softirqd_ms: ticks(s.softirqd_ticks, end.softirqd_ticks),
            redis_ms: ns(s.redis_ns, end.redis_ns),
            other_ms: ticks(s.sys_ticks, end.sys_ticks).map(|all| {
                let srv = ticks(s.srv_ticks, end.srv_ticks).unwrap_or(0.0);
                let me = ticks(s.self_ticks, end.self_ticks).unwrap_or(0.0);
                let sirq = ticks(s.softirqd_ticks, end.softirqd_ticks).unwrap_or(0.0);
                (all - srv - me - sirq).max(0.0)
            }),
        }
    }
}

fn snap(pid: Option<&str>) -> Snap {
    Snap {
        at: Instant::now(),
        srv_ticks: pid.and_then(tree_cpu_ticks),
        srv_ns: pid.and_then(tree_sched_ns),
        self_ticks: cpu_ticks("self"),
        self_ns: sched_ns("self"),
        sys_ticks: system_busy_ticks(),
        softirqd_ticks: ksoftirqd_ticks(),
        redis_ns: redis_sched_ns(),
    }
}
