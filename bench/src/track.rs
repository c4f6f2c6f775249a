//! Correctness bookkeeping shared by every scenario.
//!
//! Every pushed line has the canonical form
//! `{"uid":"<uid>","seq":<seq>,"t":<t_ns>,"k":<check>[,"p":"xxx…"]}`
//! where `seq` is unique for the whole process, `t` is a timestamp (ns since the bench's
//! epoch; for the latency scenario the *scheduled* send time), `k` a check value mixed from
//! seq and t, and `p` optional padding. A client accepts a frame only if it parses back to
//! exactly this canonical form (so any byte changed, added or dropped is caught), names the
//! client's own uid, carries the right check value and belongs to a known run. Each run keeps
//! one reply slot and one delivery counter per push, so "every `ok` delivered exactly once,
//! nothing delivered for a `fail`" is checked per push at the end of each scenario; late
//! duplicates are still caught afterwards because runs are never forgotten.

use std::io::Write as _;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the bench's epoch (monotonic, shared by senders and receivers).
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub const R_NONE: u8 = 0;
pub const R_OK: u8 = 1;
pub const R_FAIL: u8 = 2;

/// One measured batch of pushes, with a contiguous range of sequence numbers; or, for a
/// *per-client* run (broadcast / group), one single payload (seq `base`) that every client
/// must receive once, with the slots indexed by client.
pub struct Run {
    pub name: &'static str,
    pub base: u64,
    pub n: usize,
    pub pad: usize,
    pub per_client: bool,
    /// R_NONE / R_OK / R_FAIL per push, written by the sender when the reply arrives.
    pub reply: Box<[AtomicU8]>,
    /// Number of frames received per push.
    pub delivered: Box<[AtomicU8]>,
    /// Receive time (bench clock, ns) of the first delivery of each push.
    pub recv_ns: Box<[AtomicU64]>,
    /// Receive time minus the `t` embedded in the frame.
    pub lat_ns: Box<[AtomicU64]>,
    pub delivered_total: AtomicU64,
    pub oks: AtomicU64,
    pub fails: AtomicU64,
}

static NEXT_SEQ: AtomicU64 = AtomicU64::new(1);
static ALL_RUNS: Mutex<Vec<&'static Run>> = Mutex::new(Vec::new());

/// The first runs by their index in `ALL_RUNS`, so a receiver finds the current run (every
/// frame it checks) with two atomic loads and no lock. A process starts a few runs per
/// scenario round; past this many, frames are looked up under the lock instead.
const INDEXED_RUNS: usize = 4096;
static INDEXED: [OnceLock<&'static Run>; INDEXED_RUNS] = [const { OnceLock::new() }; INDEXED_RUNS];
/// The current run's index in `INDEXED`, or `NO_RUN`.
static CURRENT: AtomicUsize = AtomicUsize::new(NO_RUN);
const NO_RUN: usize = usize::MAX;

fn atomics<T, F: Fn() -> T>(n: usize, f: F) -> Box<[T]> {
    (0..n).map(|_| f()).collect()
}

impl Run {
    /// Allocates a run of `n` pushes, makes it the current one and returns it. Runs are leaked
    /// on purpose: they live until the process exits so late frames can still be attributed.
    pub fn start(name: &'static str, n: usize, pad: usize) -> &'static Run {
        Run::alloc(name, n, pad, false)
    }

    /// A run for one payload that each of `clients` clients must receive exactly once. The
    /// caller marks the clients expected to get it with [`Run::expect_client`].
    pub fn start_per_client(name: &'static str, clients: usize, pad: usize) -> &'static Run {
        Run::alloc(name, clients, pad, true)
    }

    fn alloc(name: &'static str, n: usize, pad: usize, per_client: bool) -> &'static Run {
        let seqs = if per_client { 1 } else { n as u64 };
        let base = NEXT_SEQ.fetch_add(seqs, Ordering::Relaxed);
        Run::start_at(name, n, pad, per_client, base)
    }

    /// A run whose sequence numbers start at `base`, chosen by another process (the
    /// cluster-fanout parent pushes; its children check). Keep `base` clear of this
    /// process's own runs (they count up from 1).
    pub fn start_at(
        name: &'static str,
        n: usize,
        pad: usize,
        per_client: bool,
        base: u64,
    ) -> &'static Run {
        let run: &'static Run = Box::leak(Box::new(Run {
            name,
            base,
            n,
            pad,
            per_client,
            reply: atomics(n, || AtomicU8::new(R_NONE)),
            delivered: atomics(n, || AtomicU8::new(0)),
            recv_ns: atomics(n, || AtomicU64::new(0)),
            lat_ns: atomics(n, || AtomicU64::new(0)),
            delivered_total: AtomicU64::new(0),
            oks: AtomicU64::new(0),
            fails: AtomicU64::new(0),
        }));
        let mut runs = lock_runs();
        let index = runs.len();
        runs.push(run);
        let current = match INDEXED.get(index) {
            Some(slot) if slot.set(run).is_ok() => index,
            _ => NO_RUN,
        };
        CURRENT.store(current, Ordering::Release);
        run
    }

    pub fn seq(&self, i: usize) -> u64 {
        self.base + i as u64
    }

    /// Records the reply for push `seq`. Returns false if `seq` is not in this run.
    pub fn record_reply(&self, seq: u64, ok: bool) -> bool {
        let Some(i) = self.index(seq) else {
            return false;
        };
        self.reply[i].store(if ok { R_OK } else { R_FAIL }, Ordering::Release);
        if ok {
            self.oks.fetch_add(1, Ordering::AcqRel);
        } else {
            self.fails.fetch_add(1, Ordering::AcqRel);
        }
        true
    }

    /// Per-client run: client `i` must receive the payload (counted as an `ok`).
    pub fn expect_client(&self, i: usize) {
        if i < self.n {
            self.reply[i].store(R_OK, Ordering::Release);
            self.oks.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn covers(&self, seq: u64) -> bool {
        if self.per_client {
            seq == self.base
        } else {
            self.index(seq).is_some()
        }
    }

    fn index(&self, seq: u64) -> Option<usize> {
        if self.per_client {
            return None;
        }
        let i = seq.checked_sub(self.base)?;
        if i < self.n as u64 {
            Some(i as usize)
        } else {
            None
        }
    }

    /// Waits until every `ok` so far has been delivered, or until `timeout`.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.delivered_total.load(Ordering::Acquire) >= self.oks.load(Ordering::Acquire) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Checks every push of the run and logs one error line per kind of violation.
    /// `fail_expected`: a `fail` reply is not itself an error (storm probes are retried).
    pub fn check(&self, fail_expected: bool) -> Check {
        let mut c = Check::default();
        let mut first: [Option<u64>; 5] = [None; 5];
        for i in 0..self.n {
            let r = self.reply[i].load(Ordering::Acquire);
            let d = self.delivered[i].load(Ordering::Acquire);
            // Per-client runs report the client index instead of a seq.
            let seq = if self.per_client {
                i as u64
            } else {
                self.seq(i)
            };
            let mut mark = |k: usize, ctr: &mut u64| {
                *ctr += 1;
                first[k].get_or_insert(seq);
            };
            match r {
                R_OK if d == 0 => mark(0, &mut c.lost),
                R_OK if d > 1 => mark(1, &mut c.duplicated),
                R_FAIL if d > 0 => mark(2, &mut c.fail_but_delivered),
                R_FAIL if !fail_expected => mark(3, &mut c.unexpected_fail),
                R_NONE if self.per_client && d > 0 => mark(2, &mut c.fail_but_delivered),
                R_NONE if !self.per_client => mark(4, &mut c.unanswered),
                _ => {}
            }
        }
        let what = if self.per_client {
            [
                "never received the payload",
                "received it more than once",
                "received it although not expected (not bound when sent)",
                "",
                "",
            ]
        } else {
            [
                "answered ok but never delivered",
                "delivered more than once",
                "answered fail but delivered",
                "answered fail although the uid was bound",
                "never answered",
            ]
        };
        let counts = [
            c.lost,
            c.duplicated,
            c.fail_but_delivered,
            c.unexpected_fail,
            c.unanswered,
        ];
        for k in 0..5 {
            if counts[k] > 0 {
                error(format!(
                    "{}: {} {} {} (first {} {})",
                    self.name,
                    counts[k],
                    if self.per_client {
                        "client(s)"
                    } else {
                        "push(es)"
                    },
                    what[k],
                    if self.per_client { "client" } else { "seq" },
                    first[k].unwrap_or(0)
                ));
            }
        }
        c
    }

    /// Sorted non-zero latencies (receive time minus embedded `t`) of delivered pushes.
    pub fn latencies(&self) -> Vec<u64> {
        let mut v: Vec<u64> = (0..self.n)
            .filter(|&i| self.delivered[i].load(Ordering::Acquire) > 0)
            .map(|i| self.lat_ns[i].load(Ordering::Acquire))
            .collect();
        v.sort_unstable();
        v
    }

    /// Latest receive time over the run.
    pub fn last_recv_ns(&self) -> u64 {
        self.recv_ns
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .max()
            .unwrap_or(0)
    }
}

#[derive(Default, Debug, Clone, Copy)]
pub struct Check {
    pub lost: u64,
    pub duplicated: u64,
    pub fail_but_delivered: u64,
    pub unexpected_fail: u64,
    pub unanswered: u64,
}

fn lock_runs() -> std::sync::MutexGuard<'static, Vec<&'static Run>> {
    ALL_RUNS.lock().unwrap_or_else(|e| e.into_inner())
}

/// No run is current any more (frames are then looked up among the finished runs).
pub fn clear_current() {
    CURRENT.store(NO_RUN, Ordering::Release);
}

fn find_run(seq: u64) -> Option<&'static Run> {
    let current = INDEXED.get(CURRENT.load(Ordering::Acquire));
    if let Some(&run) = current.and_then(OnceLock::get)
        && run.covers(seq)
    {
        return Some(run);
    }
    lock_runs().iter().copied().find(|r| r.covers(seq))
}

// ---------------------------------------------------------------------------------------------
// Errors

static ERRORS: AtomicU64 = AtomicU64::new(0);
const PRINT_ERRORS: u64 = 25;

/// Logs a correctness or run error; the process will exit non-zero.
pub fn error(msg: String) {
    let n = ERRORS.fetch_add(1, Ordering::AcqRel);
    if n < PRINT_ERRORS {
        eprintln!("pushwire-bench: ERROR: {msg}");
    } else if n == PRINT_ERRORS {
        eprintln!("pushwire-bench: ERROR: (further errors are counted, not printed)");
    }
}

pub fn error_count() -> u64 {
    ERRORS.load(Ordering::Acquire)
}

// ---------------------------------------------------------------------------------------------
// Payload

pub fn check_value(seq: u64, t: u64) -> u64 {
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ t.rotate_left(17);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    x & 0xFFFF_FFFF
}

/// Appends one push line (with its `\n`).
pub fn write_line(buf: &mut Vec<u8>, uid: &str, seq: u64, t: u64, pad: usize) {
    buf.extend_from_slice(b"{\"uid\":\"");
    buf.extend_from_slice(uid.as_bytes());
    // Writing into a Vec cannot fail.
    let _ = write!(
        buf,
        "\",\"seq\":{seq},\"t\":{t},\"k\":{}",
        check_value(seq, t)
    );
    if pad > 0 {
        buf.extend_from_slice(b",\"p\":\"");
        buf.resize(buf.len() + pad, b'x');
        buf.push(b'"');
    }
    buf.extend_from_slice(b"}\n");
}

/// The payload of a broadcast / group push (no line terminator, no uid):
/// `{"bcast":<seq>,"t":<t_ns>,"k":<check>[,"p":"xxx…"]}`.
pub fn write_bcast(buf: &mut Vec<u8>, seq: u64, t: u64, pad: usize) {
    let _ = write!(
        buf,
        "{{\"bcast\":{seq},\"t\":{t},\"k\":{}",
        check_value(seq, t)
    );
    if pad > 0 {
        buf.extend_from_slice(b",\"p\":\"");
        buf.resize(buf.len() + pad, b'x');
        buf.push(b'"');
    }
    buf.push(b'}');
}

#[derive(Debug, PartialEq)]
pub struct Parsed<'a> {
    pub uid: &'a str,
    pub seq: u64,
    pub t: u64,
    pub k: u64,
    pub pad: usize,
}

fn num(b: &[u8]) -> Option<(u64, &[u8])> {
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 20 || (n > 1 && b[0] == b'0') {
        return None;
    }
    let mut v: u64 = 0;
    for &c in &b[..n] {
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some((v, &b[n..]))
}

/// Parses a frame that must be exactly in the canonical form written by [`write_line`]
/// (without the newline). Anything else is rejected.
pub fn parse(s: &str) -> Option<Parsed<'_>> {
    const HEAD: &[u8] = b"{\"uid\":\"";
    let b = s.as_bytes();
    let rest = b.strip_prefix(HEAD)?;
    let q = rest.iter().position(|&c| c == b'"' || c == b'\\')?;
    let uid = s.get(HEAD.len()..HEAD.len() + q)?;
    let rest = rest[q..].strip_prefix(b"\",\"seq\":")?;
    let (seq, rest) = num(rest)?;
    parse_tail(uid, seq, rest)
}

/// Parses a broadcast payload written by [`write_bcast`]; `uid` is returned empty.
pub fn parse_bcast(s: &str) -> Option<Parsed<'_>> {
    let rest = s.as_bytes().strip_prefix(b"{\"bcast\":")?;
    let (seq, rest) = num(rest)?;
    parse_tail("", seq, rest)
}

fn parse_tail<'a>(uid: &'a str, seq: u64, rest: &[u8]) -> Option<Parsed<'a>> {
    let (t, rest) = num(rest.strip_prefix(b",\"t\":")?)?;
    let (k, rest) = num(rest.strip_prefix(b",\"k\":")?)?;
    let (pad, rest) = match rest.strip_prefix(b",\"p\":\"") {
        Some(r) => {
            let n = r.iter().take_while(|&&c| c == b'x').count();
            (n, r[n..].strip_prefix(b"\"")?)
        }
        None => (0, rest),
    };
    if rest != b"}" {
        return None;
    }
    Some(Parsed {
        uid,
        seq,
        t,
        k,
        pad,
    })
}

fn excerpt(s: &str) -> String {
    s.chars().take(120).collect()
}

/// Called by client number `client` for every text frame it receives.
pub fn on_frame(own_uid: &str, client: usize, text: &str) {
    let now = now_ns();
    if text.starts_with("{\"bcast\":") {
        on_bcast(own_uid, client, text, now);
        return;
    }
    let Some(p) = parse(text) else {
        error(format!(
            "client {own_uid}: frame not byte-exact / malformed: {:?}",
            excerpt(text)
        ));
        return;
    };
    if p.uid != own_uid {
        error(format!(
            "client {own_uid}: got a frame for uid {:?} (seq {})",
            p.uid, p.seq
        ));
        return;
    }
    if p.k != check_value(p.seq, p.t) {
        error(format!(
            "client {own_uid}: frame seq {} fails its check value (altered)",
            p.seq
        ));
        return;
    }
    let Some(run) = find_run(p.seq) else {
        error(format!(
            "client {own_uid}: frame with unknown seq {}",
            p.seq
        ));
        return;
    };
    if p.pad != run.pad {
        error(format!(
            "client {own_uid}: frame seq {} has padding {} instead of {}",
            p.seq, p.pad, run.pad
        ));
        return;
    }
    let Some(i) = run.index(p.seq) else { return };
    if run.delivered[i].fetch_add(1, Ordering::AcqRel) != 0 {
        error(format!(
            "{}: client {own_uid}: duplicate delivery of seq {}",
            run.name, p.seq
        ));
        return;
    }
    run.recv_ns[i].store(now, Ordering::Release);
    run.lat_ns[i].store(now.saturating_sub(p.t), Ordering::Release);
    run.delivered_total.fetch_add(1, Ordering::AcqRel);
}

fn on_bcast(own_uid: &str, client: usize, text: &str, now: u64) {
    let Some(p) = parse_bcast(text) else {
        error(format!(
            "client {own_uid}: broadcast frame not byte-exact / malformed: {:?}",
            excerpt(text)
        ));
        return;
    };
    if p.k != check_value(p.seq, p.t) {
        error(format!(
            "client {own_uid}: broadcast seq {} fails its check value (altered)",
            p.seq
        ));
        return;
    }
    let Some(run) = find_run(p.seq).filter(|r| r.per_client && client < r.n) else {
        error(format!(
            "client {own_uid}: broadcast frame with unknown seq {}",
            p.seq
        ));
        return;
    };
    if p.pad != run.pad {
        error(format!(
            "client {own_uid}: broadcast seq {} has padding {} instead of {}",
            p.seq, p.pad, run.pad
        ));
        return;
    }
    if run.delivered[client].fetch_add(1, Ordering::AcqRel) != 0 {
        error(format!(
            "{}: client {own_uid}: duplicate delivery of broadcast seq {}",
            run.name, p.seq
        ));
        return;
    }
    run.recv_ns[client].store(now, Ordering::Release);
    run.lat_ns[client].store(now.saturating_sub(p.t), Ordering::Release);
    run.delivered_total.fetch_add(1, Ordering::AcqRel);
}

/// A tiny xorshift64* generator (uids to push to, run tags).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-enough value in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        for pad in [0, 1, 17] {
            let mut b = Vec::new();
            write_line(&mut b, "ab.12", 7, 123456789, pad);
            assert_eq!(b.last(), Some(&b'\n'));
            let s = std::str::from_utf8(&b[..b.len() - 1]).unwrap();
            let p = parse(s).unwrap();
            assert_eq!(
                p,
                Parsed {
                    uid: "ab.12",
                    seq: 7,
                    t: 123456789,
                    k: check_value(7, 123456789),
                    pad
                }
            );
        }
    }

    #[test]
    fn bcast_roundtrip() {
        for pad in [0, 5] {
            let mut b = Vec::new();
            write_bcast(&mut b, 9, 77, pad);
            let p = parse_bcast(std::str::from_utf8(&b).unwrap()).unwrap();
            assert_eq!((p.seq, p.t, p.k, p.pad), (9, 77, check_value(9, 77), pad));
            assert!(parse_bcast("{\"bcast\":9,\"t\":77,\"k\":1} ").is_none());
        }
    }

    #[test]
    fn rejects_non_canonical() {
        let mut b = Vec::new();
        write_line(&mut b, "u1", 5, 9, 0);
        let s = String::from_utf8(b).unwrap();
        let s = s.trim_end();
        assert!(parse(s).is_some());
        for bad in [
            s.replace(':', ": "),
            format!("{s} "),
            s.replace("\"seq\":5", "\"seq\":05"),
            s.replacen('{', "{ ", 1),
            s[..s.len() - 1].to_string(),
            String::new(),
            "{\"uid\":\"a\\\"b\",\"seq\":1,\"t\":1,\"k\":1}".to_string(),
        ] {
            assert!(parse(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn rng_below_in_range() {
        let mut r = Rng::new(3);
        for _ in 0..1000 {
            assert!(r.below(7) < 7);
        }
    }
}
