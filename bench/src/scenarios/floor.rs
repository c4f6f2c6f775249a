//! `floor`: what the kernel alone costs to deliver one small frame to each of N connected
//! loopback sockets, as the denominator of pushwire's fan-out CPU per frame.
//!
//! No server is involved. The bench listens on 127.0.0.1:0 and spawns itself as a child
//! (`floor-sender`, a hidden subcommand: the open-file limit is per process, so N sockets on
//! each side need two processes, exactly as with the server). The child connects N sockets
//! (TCP_NODELAY, spread over 127.0.0.x sources like the clients are), then per round, on one
//! byte from its stdin, writes one WebSocket text frame (2-byte header + the payload a
//! `fanout-broadcast` round pushes, same length) to every socket in a tight loop of blocking
//! `send()`s and prints a JSON line with the loop's CPU and wall time. The parent reads every
//! socket with tokio until each has the round's frame, byte-exact, then starts the next round.
//!
//! The figure, `floor_cpu_us_per_frame`, is the child's CPU over the round (schedstat sum of
//! its threads, read from outside via /proc/PID exactly as `fanout` reads the server) divided
//! by N: the cost of N `send()` syscalls, including the loopback receive path the kernel runs
//! in the sender's context. Divide pushwire's `fanout-broadcast` `server_cpu_us_per_frame`
//! by it for the framework's overhead ratio.

use crate::client::Net;
use crate::procstat::{self, Meter};
use crate::report::Report;
use crate::track;
use crate::{Opts, Scenario};
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// The frame a broadcast of `payload_bytes` writes to each socket: FIN + text opcode, an
/// unmasked length, the payload (its content does not matter to the kernel).
pub fn frame(payload_bytes: usize) -> Vec<u8> {
    let mut f = vec![0x81u8];
    if payload_bytes < 126 {
        f.push(payload_bytes as u8);
    } else if payload_bytes <= 0xFFFF {
        f.push(126);
        f.extend_from_slice(&(payload_bytes as u16).to_be_bytes());
    } else {
        f.push(127);
        f.extend_from_slice(&(payload_bytes as u64).to_be_bytes());
    }
    f.resize(f.len() + payload_bytes, b'x');
    f
}

/// Length of the payload one `fanout-broadcast` round pushes to `clients` clients
/// (`{"bcast":<seq>,"t":<ns>,"k":<check>}` plus any `--pad`): seq after the storm's probes,
/// t a few seconds into the run.
fn broadcast_payload_bytes(clients: usize, pad: usize) -> usize {
    let mut v = Vec::new();
    track::write_bcast(&mut v, clients as u64 + 1, 5_000_000_000, pad);
    v.len()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

fn list(v: &[f64], prec: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.prec$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `floor --floor-senders K`: K floors at once, each a copy of this process (its own
/// readers and its own sender child, so K x --clients sockets fit the per-process file
/// limit) with the same arguments, their rounds started together. The figure is the
/// median over senders and rounds of each sender's CPU per frame: the denominator for a
/// node's fan-out when K nodes fan out at once on the same cores.
async fn senders_at_once(o: &Opts) -> Result<Report, String> {
    let k = o.floor_senders;
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut args: Vec<String> = Vec::new();
    let mut given = std::env::args().skip(1);
    while let Some(a) = given.next() {
        if a == "--floor-senders" {
            given.next();
        } else if !a.starts_with("--floor-senders=") {
            args.push(a);
        }
    }
    let mut children = Vec::with_capacity(k);
    for _ in 0..k {
        let mut child = tokio::process::Command::new(&exe)
            .args(&args)
            .args(["--floor-follow", "--json-only"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawning a floor: {e}"))?;
        let go = child.stdin.take().ok_or("floor stdin")?;
        let out = tokio::io::BufReader::new(child.stdout.take().ok_or("floor stdout")?).lines();
        children.push((child, go, out));
    }
    // Each says when its sockets are connected.
    for (_, _, out) in &mut children {
        next_with(out, "follow_ready").await?;
    }
    let rounds = o.fanout_rounds();
    let (mut all, mut per_round) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        tokio::time::sleep(Duration::from_millis(if r > 0 { 200 } else { 50 })).await;
        for (_, go, _) in &mut children {
            go.write_all(b"g\n")
                .await
                .map_err(|e| format!("floor stdin: {e}"))?;
            go.flush().await.map_err(|e| format!("floor stdin: {e}"))?;
        }
        let mut this = Vec::with_capacity(k);
        for (_, _, out) in &mut children {
            let v = next_with(out, "follow_round").await?;
            this.push(
                v["cpu_us_per_frame"]
                    .as_f64()
                    .ok_or("a round without its figure")?,
            );
        }
        per_round.push(median(&this));
        all.extend(this);
    }
    for (mut child, go, _) in children {
        drop(go);
        match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
            Ok(Ok(st)) if st.success() => {}
            Ok(Ok(st)) => track::error(format!("floor: a sender pair exited with {st}")),
            Ok(Err(e)) => track::error(format!("floor: waiting for a sender pair: {e}")),
            Err(_) => track::error("floor: a sender pair did not exit".into()),
        }
    }
    let mut rep = Report::new("floor");
    rep.int(
        "clients",
        "connected loopback sockets per sender",
        o.clients as u64,
    );
    rep.int("senders", "senders at once", k as u64);
    rep.text(
        "floor_cpu_us_per_frame_rounds",
        "sender CPU per frame, median over senders, per round (µs)",
        &list(&per_round, 3),
    );
    rep.num(
        "floor_cpu_us_per_frame",
        "FLOOR: SENDER CPU PER FRAME, K AT ONCE (schedstat, median)",
        median(&all),
        3,
        "µs",
    );
    Ok(rep)
}

/// The next JSON line on `out` that has `key`.
async fn next_with(
    out: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    key: &str,
) -> Result<serde_json::Value, String> {
    loop {
        let line = out
            .next_line()
            .await
            .map_err(|e| format!("floor: {e}"))?
            .ok_or_else(|| format!("a floor exited before {key}"))?;
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v.get(key).is_some()
        {
            return Ok(v);
        }
    }
}

/// One round as the child reports it.
#[derive(Default, Clone, Copy)]
struct SenderRound {
    wall_ns: u64,
    cpu_ns: u64,
    errors: u64,
}

fn parse_round(line: &str) -> Option<SenderRound> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let f = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
    Some(SenderRound {
        wall_ns: f("wall_ns")?,
        cpu_ns: f("cpu_ns")?,
        errors: f("errors")?,
    })
}

/// `pushwire-bench floor`: exit code.
pub fn run(o: &Opts) -> i32 {
    track::now_ns();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.threads.unwrap_or(1).max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pushwire-bench: tokio runtime: {e}");
            return 2;
        }
    };
    let report = if o.floor_senders > 1 {
        rt.block_on(senders_at_once(o))
    } else {
        rt.block_on(parent(o))
    };
    match report {
        Ok(rep) => {
            let ok = rep.ok;
            rep.print(o.json_only);
            if ok && track::error_count() == 0 {
                eprintln!("pushwire-bench: all checks passed");
                0
            } else {
                eprintln!("pushwire-bench: FAILED (see above)");
                1
            }
        }
        Err(e) => {
            eprintln!("pushwire-bench: floor: {e}");
            2
        }
    }
}

async fn parent(o: &Opts) -> Result<Report, String> {
    let n = o.clients;
    if n == 0 {
        return Err("--clients must be at least 1".into());
    }
    let rounds = o.fanout_rounds();
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|e| format!("raising RLIMIT_NOFILE: {e}"))?;
    if n as u64 + 64 > limit {
        return Err(format!(
            "{n} sockets need about {} open files but the limit is {limit}",
            n + 64
        ));
    }
    let payload_bytes = broadcast_payload_bytes(n, o.pad);
    let frame = Arc::new(frame(payload_bytes));
    // A deep accept queue: the sender connects faster than one accept loop takes them, and
    // a SYN dropped on a full queue costs a 1 s retransmit.
    let listener = tokio::net::TcpSocket::new_v4()
        .and_then(|s| {
            s.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
            s.listen(8192)
        })
        .map_err(|e| format!("listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut child = tokio::process::Command::new(exe)
        .arg("--rounds")
        .arg(rounds.to_string())
        .arg("--source-addrs")
        .arg(o.source_addrs().to_string())
        .arg("floor-sender")
        .arg("--connect")
        .arg(addr.to_string())
        .arg("--count")
        .arg(n.to_string())
        .arg("--payload-bytes")
        .arg(payload_bytes.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("spawning the sender: {e}"))?;
    let child_pid = child.id().ok_or("sender has no pid")?;
    let mut go = child.stdin.take().ok_or("sender stdin")?;
    let mut out = tokio::io::BufReader::new(child.stdout.take().ok_or("sender stdout")?).lines();

    // Accept every socket; one reader task each.
    let delivered = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(Notify::new());
    let deadline = Instant::now() + Duration::from_millis(o.storm_timeout_ms);
    let t_conn = Instant::now();
    let mut readers = Vec::with_capacity(n);
    for _ in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        let (mut s, _) = match tokio::time::timeout(left, listener.accept()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("accept: {e}")),
            Err(_) => return Err(format!("only {} of {n} sockets connected", readers.len())),
        };
        let _ = s.set_nodelay(true);
        let (frame, delivered, notify) = (frame.clone(), delivered.clone(), notify.clone());
        let target = n as u64;
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; frame.len()];
            for r in 0..u64::from(rounds) {
                if let Err(e) = s.read_exact(&mut buf).await {
                    track::error(format!("floor: reading round {}: {e}", r + 1));
                    return;
                }
                if buf[..] != frame[..] {
                    track::error(format!("floor: round {}: frame differs", r + 1));
                }
                if delivered.fetch_add(1, Ordering::AcqRel) + 1 == target * (r + 1) {
                    notify.notify_one();
                }
            }
            // Nothing more may arrive before the sender closes.
            match s.read(&mut buf).await {
                Ok(0) => {}
                Ok(k) => track::error(format!("floor: {k} unexpected byte(s) after the rounds")),
                Err(e) => track::error(format!("floor: reading EOF: {e}")),
            }
        }));
    }
    let connected = out
        .next_line()
        .await
        .map_err(|e| format!("sender: {e}"))?
        .ok_or("sender exited before connecting")?;
    let connect_ms = t_conn.elapsed().as_secs_f64() * 1000.0;
    if !connected.contains("\"connected\"") {
        return Err(format!("sender said {connected:?}"));
    }

    let mut rep = Report::new("floor");
    rep.int("clients", "connected loopback sockets", n as u64);
    rep.int(
        "rounds",
        "rounds (one frame per socket each)",
        u64::from(rounds),
    );
    rep.int(
        "payload_bytes",
        "payload (as a broadcast pushes)",
        payload_bytes as u64,
    );
    rep.int(
        "frame_bytes",
        "frame written per socket",
        frame.len() as u64,
    );
    rep.num("connect_ms", "connect (not measured)", connect_ms, 0, "ms");

    let (mut cpu, mut cpu_ticks, mut loop_cpu, mut loop_wall, mut last) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut recv_ms, mut sirq_ms, mut other_ms) = (0.0, 0.0, 0.0);
    // --floor-follow: a line on stdin starts each round (see `senders_at_once`).
    let mut follow = o
        .floor_follow
        .then(|| tokio::io::BufReader::new(tokio::io::stdin()).lines());
    if follow.is_some() {
        println!("{{\"follow_ready\":true}}");
    }
    for r in 0..u64::from(rounds) {
        match &mut follow {
            Some(lines) => {
                lines
                    .next_line()
                    .await
                    .map_err(|e| format!("stdin: {e}"))?
                    .ok_or("stdin closed before the round")?;
            }
            None => tokio::time::sleep(Duration::from_millis(if r > 0 { 200 } else { 50 })).await,
        }
        let meter = Meter::start(Some(child_pid));
        let t0 = Instant::now();
        go.write_all(b"g")
            .await
            .map_err(|e| format!("sender: {e}"))?;
        go.flush().await.map_err(|e| format!("sender: {e}"))?;
        let want = n as u64 * (r + 1);
        loop {
            let wait = notify.notified();
            if delivered.load(Ordering::Acquire) >= want {
                break;
            }
            if tokio::time::timeout(o.drain_timeout(), wait).await.is_err() {
                return Err(format!(
                    "round {}: {} of {n} frames arrived within the drain timeout",
                    r + 1,
                    delivered.load(Ordering::Acquire) - n as u64 * r
                ));
            }
        }
        let t_last = t0.elapsed();
        let line = out
            .next_line()
            .await
            .map_err(|e| format!("sender: {e}"))?
            .ok_or("sender exited mid-run")?;
        let u = meter.stop();
        let sr = parse_round(&line).ok_or_else(|| format!("sender said {line:?}"))?;
        if sr.errors > 0 {
            track::error(format!(
                "floor round {}: {} send error(s)",
                r + 1,
                sr.errors
            ));
        }
        let per = |ms: f64| ms * 1000.0 / n as f64;
        cpu.push(per(u.server_ms_hires.unwrap_or(0.0)));
        cpu_ticks.push(per(u.server_ms.unwrap_or(0.0)));
        loop_cpu.push(sr.cpu_ns as f64 / 1000.0 / n as f64);
        loop_wall.push(sr.wall_ns as f64 / 1e6);
        last.push(t_last.as_secs_f64() * 1000.0);
        if follow.is_some() {
            println!(
                "{{\"follow_round\":{r},\"cpu_us_per_frame\":{}}}",
                per(u.server_ms_hires.unwrap_or(0.0))
            );
        }
        recv_ms += u.bench_ms_hires.unwrap_or(0.0);
        sirq_ms += u.softirqd_ms.unwrap_or(0.0);
        other_ms += u.other_ms.unwrap_or(0.0);
    }
    drop(go); // EOF: the sender closes its sockets and exits
    for h in readers {
        let _ = h.await;
    }
    match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(Ok(st)) if st.success() => {}
        Ok(Ok(st)) => track::error(format!("floor: sender exited with {st}")),
        Ok(Err(e)) => track::error(format!("floor: waiting for the sender: {e}")),
        Err(_) => track::error("floor: sender did not exit".into()),
    }

    rep.text(
        "floor_cpu_us_per_frame_rounds",
        "sender CPU per frame, per round (µs)",
        &list(&cpu, 3),
    );
    rep.num(
        "floor_cpu_us_per_frame",
        "FLOOR: SENDER CPU PER FRAME (schedstat, median)",
        median(&cpu),
        3,
        "µs",
    );
    rep.num(
        "floor_cpu_us_per_frame_ticks",
        "same, utime+stime (10 ms ticks)",
        median(&cpu_ticks),
        3,
        "µs",
    );
    rep.num(
        "send_loop_cpu_us_per_frame",
        "send() loop alone, per frame (self-read schedstat; lags for loops < ~10 ms)",
        median(&loop_cpu),
        3,
        "µs",
    );
    rep.text(
        "send_loop_ms_rounds",
        "send() loop wall per round (ms)",
        &list(&loop_wall, 1),
    );
    rep.num(
        "send_loop_ms",
        "send() loop wall (median)",
        median(&loop_wall),
        1,
        "ms",
    );
    rep.num(
        "last_delivery_ms",
        "go → last frame read (median)",
        median(&last),
        1,
        "ms",
    );
    let k = f64::from(rounds);
    rep.num(
        "receiver_cpu_ms",
        "receiver (this process) CPU per round",
        recv_ms / k,
        0,
        "ms",
    );
    rep.num(
        "softirqd_ms",
        "ksoftirqd CPU per round",
        sirq_ms / k,
        0,
        "ms",
    );
    rep.num(
        "other_ms",
        "everyone else's CPU per round",
        other_ms / k,
        0,
        "ms",
    );
    rep.note(
        "overhead ratio = pushwire's fanout-broadcast server_cpu_us_per_frame ÷ \
         floor_cpu_us_per_frame, both at the same --clients in the same session",
    );
    if other_ms / k > 50.0 {
        rep.note("other processes used the CPU during the rounds: the figure may be disturbed");
    }
    Ok(rep.finish())
}

/// The hidden `floor-sender` subcommand: exit code.
pub fn sender(o: &Opts) -> i32 {
    let Scenario::FloorSender {
        connect,
        count,
        payload_bytes,
    } = &o.scenario
    else {
        return 2;
    };
    match send_rounds(o, *connect, *count, *payload_bytes) {
        Ok(0) => 0,
        Ok(_) => 1,
        Err(e) => {
            eprintln!("pushwire-bench floor-sender: {e}");
            2
        }
    }
}

fn send_rounds(o: &Opts, to: SocketAddr, n: usize, payload_bytes: usize) -> Result<u64, String> {
    rlimit::increase_nofile_limit(u64::MAX).map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let rounds = o.fanout_rounds();
    let net = Net::new(String::new(), to, to, o.source_addrs(), 64);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let socks = rt.block_on(async {
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            let s = net
                .tcp(to)
                .await
                .map_err(|e| format!("connect {}: {e}", i + 1))?;
            let s = s.into_std().map_err(|e| e.to_string())?;
            s.set_nonblocking(false).map_err(|e| e.to_string())?;
            v.push(s);
        }
        Ok::<_, String>(v)
    })?;
    drop(rt);
    let frame = frame(payload_bytes);
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{{\"connected\":{n}}}");
    let _ = stdout.flush();
    let mut stdin = std::io::stdin().lock();
    let mut byte = [0u8; 1];
    let mut errors_total = 0;
    for r in 0..rounds {
        if stdin.read(&mut byte).map_err(|e| e.to_string())? == 0 {
            return Err(format!("stdin closed before round {}", r + 1));
        }
        let c0 = procstat::sched_ns("self").unwrap_or(0);
        let t0 = Instant::now();
        let mut errors = 0u64;
        for s in &socks {
            // One send() each: the socket buffers are empty, a small frame goes in whole.
            if (&*s).write_all(&frame).is_err() {
                errors += 1;
            }
        }
        let wall_ns = t0.elapsed().as_nanos() as u64;
        let cpu_ns = procstat::sched_ns("self").unwrap_or(0).saturating_sub(c0);
        errors_total += errors;
        let _ = writeln!(
            stdout,
            "{{\"round\":{},\"wall_ns\":{wall_ns},\"cpu_ns\":{cpu_ns},\"errors\":{errors}}}",
            r + 1
        );
        let _ = stdout.flush();
    }
    // Wait for the parent's EOF, then close every socket.
    let mut rest = Vec::new();
    let _ = stdin.read_to_end(&mut rest);
    drop(socks);
    Ok(errors_total)
}
