//! cluster-fanout: fan-out across several cluster nodes, each holding `--clients` browsers
//! in a child process of its own, so the clients of three 19k-socket nodes (57k sockets)
//! are spread over processes each under the 20,000 open-files limit.
//!
//! The parent (no browser of its own) starts one `holder` child per node and waits until
//! each has bound its clients (uids `<tag>n<k>.<i>`). Per round it tells every child which
//! sequence number(s) to expect (`bcast NAME SEQ` for a broadcast or group payload, `lines
//! BASE` for one line per uid), waits for `@armed` from all, then writes the push(es) on
//! one connection to the first node (`--push-via K`: node K) and waits for every child's
//! `@done`: how many of its clients got it, and when the last did (wall clock, the same
//! in every process on one box). Children check every frame as in `fanout` (each
//! expected client exactly once, byte-exact). Measured around each round: every node's
//! CPU (schedstat of /proc/PID) and the redis-server's (`--redis-pid`). Reported per mode: time to the last delivery on any
//! node, CPU per delivered frame for each node and for all of them, Redis CPU per frame.

use crate::procstat::Meter;
use crate::report::Report;
use crate::scenarios::Ctx;
use crate::track::{self, Run};
use crate::{FanoutMode, Opts};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

/// Sequence numbers of the parent's runs start here (children's own runs count from 1).
const SEQ0: u64 = 1 << 40;

pub(super) fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// ---- child ----------------------------------------------------------------------------------

/// The child's side: answers the parent's lines until EOF or `quit`.
pub async fn holder(ctx: &mut Ctx) {
    use tokio::io::AsyncBufReadExt;
    let Some(fleet) = ctx.fleet else {
        println!("@ready 0");
        return;
    };
    let n = fleet.len();
    // How many are bound, and from which blocks of 127.0.0.0/8 their sockets came.
    let blocks: Vec<String> = ctx.net.blocks().iter().map(u8::to_string).collect();
    println!(
        "@ready {} {}",
        fleet.alive.load(Ordering::Acquire),
        blocks.join(",")
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.split_whitespace();
        let (kind, arg) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let errors_before = track::error_count();
        let run = match (kind, arg.parse::<u64>()) {
            ("bcast", Ok(seq)) => {
                let run = Run::start_at("cluster-fanout", n, ctx.o.pad, true, seq);
                for i in 0..n {
                    if fleet.up[i].load(Ordering::Acquire) {
                        run.expect_client(i);
                    }
                }
                run
            }
            ("lines", Ok(base)) => {
                let run = Run::start_at("cluster-fanout-per-uid", n, ctx.o.pad, false, base);
                for i in 0..n {
                    if fleet.up[i].load(Ordering::Acquire) {
                        run.record_reply(run.seq(i), true);
                    }
                }
                run
            }
            _ => return,
        };
        println!("@armed");
        let drained = run.drain(ctx.o.drain_timeout()).await;
        track::clear_current();
        if !drained {
            track::error(format!(
                "holder {}: frames missing after the drain timeout",
                ctx.tag
            ));
        }
        run.check(false);
        let last = run.last_recv_ns();
        let last_wall = wall_ns().saturating_sub(track::now_ns().saturating_sub(last));
        println!(
            "@done {} {} {last_wall} {}",
            run.delivered_total.load(Ordering::Acquire),
            run.oks.load(Ordering::Acquire),
            track::error_count() - errors_before
        );
    }
}

// ---- parent ---------------------------------------------------------------------------------

pub(super) struct Node {
    pub ws: String,
    pub push: SocketAddr,
    pub pid: u32,
}

pub(super) fn parse_node(s: &str) -> Result<Node, String> {
    let mut parts = s.split(',');
    let (Some(ws), Some(push), Some(pid), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("--node {s:?}: want WS_URL,PUSH_ADDR,PID"));
    };
    let push = push
        .parse()
        .map_err(|e| format!("--node {s:?}: push address: {e}"))?;
    let pid = pid.parse().map_err(|e| format!("--node {s:?}: pid: {e}"))?;
    Ok(Node {
        ws: ws.to_owned(),
        push,
        pid,
    })
}

pub(super) struct Holder {
    child: Child,
    stdin: ChildStdin,
}

/// What a child said (`@...` lines only), by child index.
pub(super) type Said = mpsc::Receiver<(usize, String)>;

fn spawn_holder(
    o: &Opts,
    k: usize,
    node: &Node,
    tag: &str,
    said: mpsc::Sender<(usize, String)>,
) -> Result<Holder, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["--ws", &node.ws])
        .args(["--push", &node.push.to_string()])
        .args(["--server-pid", &node.pid.to_string()])
        .args(["--clients", &o.clients.to_string()])
        .args(["--connect-concurrency", &o.connect_concurrency.to_string()])
        .args(["--pad", &o.pad.to_string()])
        .args(["--drain-timeout-ms", &o.drain_timeout_ms.to_string()])
        .args(["--storm-timeout-ms", &o.storm_timeout_ms.to_string()])
        .args(["--progress-ms", "0", "--json-only"]);
    if let Some(t) = o.threads {
        cmd.args(["--threads", &t.to_string()]);
    }
    if let Some(s) = o.source_addrs {
        cmd.args(["--source-addrs", &s.to_string()]);
    }
    // Each node's browsers from a block of 127.0.0.0/8 of their own (127.K+1.0.2..).
    let block = u8::try_from(k + 1).map_err(|_| format!("{k} nodes: at most 254"))?;
    cmd.args(["--source-block", &block.to_string()]);
    cmd.args(["holder", "--tag", tag])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().map_err(|e| format!("start holder {k}: {e}"))?;
    let stdin = child.stdin.take().ok_or("holder stdin")?;
    let stdout = child.stdout.take().ok_or("holder stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with('@') {
                let _ = said.send((k, line));
            } else if line.starts_with('{') && line.contains("\"ok\":false") {
                track::error(format!("holder {k}: {line}"));
            }
        }
        let _ = said.send((k, "@exit".to_owned()));
    });
    Ok(Holder { child, stdin })
}

/// Waits for one `@word ...` line from each child in `from`; returns their rest, in
/// that order.
pub(super) fn await_all(
    said: &Said,
    from: std::ops::Range<usize>,
    word: &str,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let mut got: Vec<Option<String>> = vec![None; from.len()];
    let deadline = std::time::Instant::now() + timeout;
    while got.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let (k, line) = said
            .recv_timeout(left)
            .map_err(|_| format!("no {word} from every holder within {timeout:?}"))?;
        if line == "@exit" {
            return Err(format!("holder {k} exited while waiting for {word}"));
        }
        if let (true, Some(rest)) = (from.contains(&k), line.strip_prefix(word)) {
            got[k - from.start] = Some(rest.trim().to_owned());
        }
    }
    Ok(got.into_iter().flatten().collect())
}

/// The holders of every node, once each has bound its clients.
pub(super) struct Bound {
    pub holders: Vec<Holder>,
    pub said: Said,
    /// Clients bound on all nodes.
    pub bound: u64,
    /// Each node's CPU and Redis's while that node's clients connected and bound.
    pub usage: Vec<crate::procstat::Usage>,
    /// Distinct blocks of 127.0.0.0/8 the holders' sockets came from (one per node).
    pub source_blocks: usize,
    /// Each node's connect storm: from starting its holder to every client bound, ms.
    pub connect_ms: Vec<f64>,
    /// Each node's RSS (KiB) just before its holder started.
    pub rss_before_kib: Vec<Option<u64>>,
}

/// Starts one holder per node, one node at a time (a connect storm per node, not three
/// at once on a shared box), each binding `--clients` uids `<tag>n<k>.<i>`.
pub(super) fn bind_all(
    o: &Opts,
    nodes: &[Node],
    tag: &str,
    scenario: &str,
) -> Result<Bound, String> {
    let n = o.clients;
    let (tx, said) = mpsc::channel();
    let mut holders = Vec::new();
    let mut usage = Vec::new();
    let mut bound = 0u64;
    let mut blocks = std::collections::BTreeSet::new();
    let (mut connect_ms, mut rss_before_kib) = (Vec::new(), Vec::new());
    let storm_wait = Duration::from_millis(o.storm_timeout_ms + 30_000);
    for (k, node) in nodes.iter().enumerate() {
        eprintln!("{scenario}: binding {n} clients to node {k} ({})", node.ws);
        rss_before_kib.push(crate::procstat::mem(&node.pid.to_string()).map(|m| m.rss_kib));
        let meter = Meter::start(Some(node.pid));
        holders.push(spawn_holder(o, k, node, &format!("{tag}n{k}"), tx.clone())?);
        let ready = await_all(&said, k..k + 1, "@ready", storm_wait)?;
        let u = meter.stop();
        connect_ms.push(u.wall_s * 1000.0);
        usage.push(u);
        let mut said_ready = ready[0].split(' ');
        let alive: u64 = said_ready.next().unwrap_or("").parse().unwrap_or(0);
        // Its browsers came from the block of 127.0.0.0/8 it was given (127.K+1.x.x).
        let from = said_ready.next().unwrap_or("");
        let spread = o.source_addrs() > 0
            && crate::ws_target(&node.ws).is_ok_and(|a| a.ip().is_loopback() && a.is_ipv4());
        if spread && from != (k + 1).to_string() {
            track::error(format!(
                "node {k}: its browsers came from 127.{from}.x.x, not 127.{}.x.x",
                k + 1
            ));
        }
        blocks.insert(from.to_owned());
        if alive != n as u64 {
            track::error(format!("node {k}: {alive} of {n} clients bound"));
        }
        bound += alive;
    }
    Ok(Bound {
        holders,
        said,
        bound,
        usage,
        source_blocks: blocks.len(),
        connect_ms,
        rss_before_kib,
    })
}

/// Tells every holder to quit, and waits for each to exit.
pub(super) fn quit(mut holders: Vec<Holder>) -> Result<(), String> {
    tell(&mut holders, "quit")?;
    for (k, mut h) in holders.into_iter().enumerate() {
        drop(h.stdin);
        match h.child.wait() {
            Ok(st) if st.success() => {}
            Ok(st) => track::error(format!("holder {k} exited with {st}")),
            Err(e) => track::error(format!("holder {k}: {e}")),
        }
    }
    Ok(())
}

pub(super) fn tell(holders: &mut [Holder], line: &str) -> Result<(), String> {
    for h in holders.iter_mut() {
        writeln!(h.stdin, "{line}").map_err(|e| format!("telling a holder: {e}"))?;
        h.stdin
            .flush()
            .map_err(|e| format!("telling a holder: {e}"))?;
    }
    Ok(())
}

/// Reads one reply line.
pub(super) fn reply_line(rd: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut line = String::new();
    match rd.read_line(&mut line) {
        Ok(0) => Err("push connection closed".into()),
        Ok(_) => Ok(line),
        Err(e) => Err(format!("reading a reply: {e}")),
    }
}

/// One round's figures.
struct Round {
    last_delivery_ms: f64,
    last_reply_ms: f64,
    node_cpu_ms: Vec<f64>,
    node_frames: Vec<u64>,
    redis_ms: Option<f64>,
}

pub(super) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub fn run(o: &Opts, nodes: &[String], push_via: usize, redis: &[String]) -> i32 {
    track::now_ns();
    exit_code(o, parent(o, nodes, push_via, redis))
}

/// Prints a parent's reports; the process's exit code (0: every check passed).
pub(super) fn exit_code(o: &Opts, reports: Result<Vec<Report>, String>) -> i32 {
    match reports {
        Ok(reports) => {
            let mut ok = true;
            for r in reports {
                ok &= r.ok;
                r.print(o.json_only);
            }
            if ok && track::error_count() == 0 {
                eprintln!("pushwire-bench: all checks passed");
                0
            } else {
                eprintln!("pushwire-bench: FAILED ({} error(s))", track::error_count());
                1
            }
        }
        Err(e) => {
            eprintln!("pushwire-bench: {e}");
            2
        }
    }
}

fn parent(
    o: &Opts,
    nodes: &[String],
    push_via: usize,
    redis: &[String],
) -> Result<Vec<Report>, String> {
    let nodes: Vec<Node> = nodes
        .iter()
        .map(|s| parse_node(s))
        .collect::<Result<_, _>>()?;
    let origin = nodes
        .get(push_via)
        .ok_or_else(|| format!("--push-via {push_via}: there are {} nodes", nodes.len()))?;
    let (n, k_nodes) = (o.clients, nodes.len());
    let tag = format!("c{:x}", wall_ns() % 0xffff_ffff);
    let mem_before = super::cluster_count::redis_used_memory_sum(redis)?;
    let redis_meter = Meter::start(None);
    let slab_before = crate::procstat::slab_kib();
    // Made first so that a client not bound fails this report too.
    let bind_rep = Report::new("cluster-bind");
    let b = bind_all(o, &nodes, &tag, "cluster-fanout")?;
    // Settle: the last node's uids reach the online set in batches, and its RSS is read
    // once its storm's buffers are gone.
    std::thread::sleep(Duration::from_secs(2));
    let redis_usage = redis_meter.stop();
    let mem_after = super::cluster_count::redis_used_memory_sum(redis)?;
    let slab = slab_before.zip(crate::procstat::slab_kib());
    let mem = mem_before.zip(mem_after);
    // What the nodes and Redis spend holding every browser with nothing pushed, in two
    // windows of 5 s: right after the storms (their aftermath: the last node's
    // subscriptions and online-set batches) and 10 s later (beats, ping sweeps).
    let window = || {
        let meters: Vec<Meter> = nodes.iter().map(|nd| Meter::start(Some(nd.pid))).collect();
        std::thread::sleep(Duration::from_secs(5));
        meters.iter().map(Meter::stop).collect::<Vec<_>>()
    };
    let early = window();
    std::thread::sleep(Duration::from_secs(10));
    let idle = [early, window()];
    let mut reports = vec![bind_report(
        bind_rep,
        &nodes,
        &b,
        &redis_usage,
        mem,
        slab,
        &idle,
    )];
    let Bound {
        mut holders,
        said,
        bound,
        source_blocks,
        ..
    } = b;
    let conn = TcpStream::connect(origin.push).map_err(|e| format!("push connection: {e}"))?;
    let _ = conn.set_nodelay(true);
    let mut wr = conn
        .try_clone()
        .map_err(|e| format!("push connection: {e}"))?;
    let mut rd = BufReader::new(conn);
    let group = format!("{tag}-all");
    let modes: &[FanoutMode] = match o.fanout_mode {
        FanoutMode::All => &[FanoutMode::PerUid, FanoutMode::Broadcast, FanoutMode::Group],
        FanoutMode::PerUid => &[FanoutMode::PerUid],
        FanoutMode::Broadcast => &[FanoutMode::Broadcast],
        FanoutMode::Group => &[FanoutMode::Group],
    };
    let uid = |k: usize, i: usize| format!("{tag}n{k}.{i}");
    let mut seq = SEQ0;
    for &mode in modes {
        let name = match mode {
            FanoutMode::PerUid => "cluster-fanout",
            FanoutMode::Broadcast => "cluster-fanout-broadcast",
            _ => "cluster-fanout-group",
        };
        let mut rep = Report::new(name);
        if mode == FanoutMode::Group {
            // Not measured: every uid of every node joins one group, 500 per /join.
            let all: Vec<String> = (0..k_nodes)
                .flat_map(|k| (0..n).map(move |i| (k, i)))
                .map(|(k, i)| uid(k, i))
                .collect();
            let mut buf = Vec::new();
            let chunks = all.chunks(500).count();
            for chunk in all.chunks(500) {
                buf.extend_from_slice(format!("/join {group} ").as_bytes());
                buf.extend_from_slice(serde_json::json!(chunk).to_string().as_bytes());
                buf.push(b'\n');
            }
            wr.write_all(&buf).map_err(|e| format!("/join: {e}"))?;
            let mut added = 0;
            for _ in 0..chunks {
                let v: serde_json::Value = serde_json::from_str(&reply_line(&mut rd)?)
                    .map_err(|e| format!("/join: {e}"))?;
                added += v["added"].as_u64().unwrap_or(0);
            }
            if added != all.len() as u64 {
                track::error(format!("{name}: /join added {added} of {}", all.len()));
            }
        }
        let mut rounds = Vec::new();
        for round in 0..o.fanout_rounds() {
            std::thread::sleep(Duration::from_millis(if round > 0 { 300 } else { 100 }));
            let per_uid = mode == FanoutMode::PerUid;
            if per_uid {
                for (k, h) in holders.iter_mut().enumerate() {
                    writeln!(h.stdin, "lines {}", seq + (k * n) as u64)
                        .and_then(|()| h.stdin.flush())
                        .map_err(|e| format!("telling holder {k}: {e}"))?;
                }
            } else {
                tell(&mut holders, &format!("bcast {seq}"))?;
            }
            await_all(&said, 0..k_nodes, "@armed", Duration::from_secs(10))?;
            // Build before measuring: one line per uid (node-interleaved), or one command.
            let mut buf = Vec::new();
            let t = track::now_ns();
            if per_uid {
                for i in 0..n {
                    for k in 0..k_nodes {
                        track::write_line(&mut buf, &uid(k, i), seq + (k * n + i) as u64, t, o.pad);
                    }
                }
            } else {
                let verb = if mode == FanoutMode::Group {
                    format!("/group {group} ")
                } else {
                    "/broadcast ".to_owned()
                };
                buf.extend_from_slice(verb.as_bytes());
                track::write_bcast(&mut buf, seq, t, o.pad);
                buf.push(b'\n');
            }
            let lines = if per_uid { n * k_nodes } else { 1 };
            let meters: Vec<Meter> = nodes.iter().map(|nd| Meter::start(Some(nd.pid))).collect();
            let t0 = wall_ns();
            // Replies are read on a thread of their own while the lines are written.
            let mut rd_conn = rd;
            let reader = std::thread::spawn(move || {
                let mut out = Vec::with_capacity(lines);
                for _ in 0..lines {
                    match reply_line(&mut rd_conn) {
                        Ok(l) => out.push(l),
                        Err(e) => {
                            track::error(format!("reply: {e}"));
                            break;
                        }
                    }
                }
                (out, wall_ns(), rd_conn)
            });
            wr.write_all(&buf)
                .map_err(|e| format!("writing pushes: {e}"))?;
            let (replies, t_reply, back) = reader.join().map_err(|_| "reply reader panicked")?;
            rd = back;
            let done = await_all(
                &said,
                0..k_nodes,
                "@done",
                o.drain_timeout() + Duration::from_secs(5),
            )?;
            let usage: Vec<_> = meters.iter().map(Meter::stop).collect();
            // Replies: every plain line `ok`; a command's JSON reaching every bound client.
            if per_uid {
                let fails = replies.iter().filter(|r| r.as_str() != "ok\n").count();
                if fails > 0 || replies.len() != lines {
                    track::error(format!("{name}: {fails} of {lines} lines not answered ok"));
                }
            } else {
                let v: serde_json::Value = replies
                    .first()
                    .and_then(|r| serde_json::from_str(r).ok())
                    .unwrap_or_default();
                let conns = v["connections"].as_u64().unwrap_or(0);
                if v["refused"].as_u64().unwrap_or(1) > 0 || conns < bound {
                    track::error(format!("{name}: reply {v} but {bound} clients are bound"));
                }
            }
            let mut last_wall = 0;
            let mut frames = Vec::new();
            for (k, d) in done.iter().enumerate() {
                let f: Vec<u64> = d.split(' ').filter_map(|w| w.parse().ok()).collect();
                let [delivered, expected, last, errors] = f[..] else {
                    return Err(format!("holder {k}: bad @done line {d:?}"));
                };
                if delivered != expected || errors > 0 {
                    track::error(format!(
                        "{name} round {round}: node {k}: {delivered} of {expected} delivered, {errors} error(s)"
                    ));
                }
                last_wall = last_wall.max(last);
                frames.push(delivered);
            }
            rounds.push(Round {
                last_delivery_ms: last_wall.saturating_sub(t0) as f64 / 1e6,
                last_reply_ms: t_reply.saturating_sub(t0) as f64 / 1e6,
                node_cpu_ms: usage
                    .iter()
                    .map(|u| u.server_ms_hires.or(u.server_ms).unwrap_or(0.0))
                    .collect(),
                node_frames: frames,
                redis_ms: usage[0].redis_ms,
            });
            seq += (k_nodes * n) as u64 + 1;
        }
        report(&mut rep, &rounds, k_nodes, n);
        rep.int("origin_node", "node the pushes went to", push_via as u64);
        rep.int(
            "source_blocks",
            "blocks of 127.0.0.0/8 the browsers came from",
            source_blocks as u64,
        );
        reports.push(rep.finish());
    }
    quit(holders)?;
    Ok(reports)
}

/// The `cluster-bind` report: each node's connect storm (time, its CPU per client) and idle
/// RSS per connection once every node's browsers are bound; Redis's CPU and `used_memory`
/// per uid that came online (all nodes' storms and a 2 s settle).
fn bind_report(
    mut rep: Report,
    nodes: &[Node],
    b: &Bound,
    redis: &crate::procstat::Usage,
    mem: Option<(u64, u64)>,
    slab_kib: Option<(u64, u64)>,
    idle: &[Vec<crate::procstat::Usage>; 2],
) -> Report {
    let per_node = b.bound / nodes.len().max(1) as u64;
    rep.int("nodes", "nodes", nodes.len() as u64);
    rep.int("clients", "clients bound (all nodes)", b.bound);
    let (mut connect, mut rss, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    for (k, node) in nodes.iter().enumerate() {
        let ms = b.connect_ms.get(k).copied().unwrap_or(0.0);
        connect.push(ms);
        rep.num(
            &format!("node{k}_connect_ms"),
            &format!("node {k}: connect storm, every client bound"),
            ms,
            0,
            "ms",
        );
        let cpu_ms = b
            .usage
            .get(k)
            .and_then(|u| u.server_ms_hires.or(u.server_ms));
        if let Some(c) = cpu_ms.filter(|_| per_node > 0) {
            let v = c * 1000.0 / per_node as f64;
            cpu.push(v);
            rep.num(
                &format!("node{k}_cpu_us_per_client_bound"),
                &format!("node {k}: CPU per client connected and bound"),
                v,
                1,
                "µs",
            );
        }
        for (key, when, w) in [
            ("idle_cpu_ms_per_s", "right after the storms", &idle[0]),
            ("steady_cpu_ms_per_s", "15 s later", &idle[1]),
        ] {
            if let Some(u) = w.get(k)
                && let Some(ms) = u.server_ms_hires.or(u.server_ms)
            {
                rep.num(
                    &format!("node{k}_{key}"),
                    &format!("node {k}: CPU holding its clients idle, {when}, per second"),
                    ms / u.wall_s.max(1e-3),
                    2,
                    "ms/s",
                );
            }
        }
        let after = crate::procstat::mem(&node.pid.to_string()).map(|m| m.rss_kib);
        if let (Some(Some(before)), Some(after)) = (b.rss_before_kib.get(k), after)
            && per_node > 0
        {
            let v = (after as f64 - *before as f64) * 1024.0 / per_node as f64;
            rss.push(v);
            rep.num(
                &format!("node{k}_rss_bytes_per_conn"),
                &format!("node {k}: idle RSS per connection (after - before its storm)"),
                v,
                0,
                "B",
            );
            rep.int(
                &format!("node{k}_rss_kib"),
                &format!("node {k}: RSS holding its clients"),
                after,
            );
        }
    }
    for (key, label, v, prec, unit) in [
        (
            "connect_ms",
            "connect storm per node",
            &mut connect,
            0,
            "ms",
        ),
        (
            "rss_bytes_per_conn",
            "idle RSS per connection",
            &mut rss,
            0,
            "B",
        ),
        (
            "cpu_us_per_client_bound",
            "node CPU per client bound",
            &mut cpu,
            1,
            "µs",
        ),
    ] {
        if v.is_empty() {
            continue;
        }
        let max = v.iter().copied().fold(f64::MIN, f64::max);
        rep.num(
            &format!("{key}_median"),
            &format!("{label} (median of nodes)"),
            median(v),
            prec,
            unit,
        );
        rep.num(
            &format!("{key}_max"),
            &format!("{label} (worst node)"),
            max,
            prec,
            unit,
        );
    }
    if let Some((before, after)) = slab_kib.filter(|_| b.bound > 0) {
        rep.num(
            "slab_bytes_per_conn",
            "kernel slab per connection, both ends (system-wide Slab: delta)",
            (after as f64 - before as f64) * 1024.0 / b.bound as f64,
            0,
            "B",
        );
    }
    for (key, when, w) in [
        (
            "redis_idle_cpu_ms_per_s",
            "right after the storms",
            &idle[0],
        ),
        ("redis_steady_cpu_ms_per_s", "15 s later", &idle[1]),
    ] {
        if let Some(u) = w.first()
            && let Some(ms) = u.redis_ms
        {
            rep.num(
                key,
                &format!("Redis CPU, every client bound and idle, {when}, per second"),
                ms / u.wall_s.max(1e-3),
                2,
                "ms/s",
            );
        }
    }
    if let Some(ms) = redis.redis_ms.filter(|_| b.bound > 0) {
        rep.num(
            "redis_cpu_us_per_uid_online",
            "Redis CPU per uid coming online (subscribe + online set)",
            ms * 1000.0 / b.bound as f64,
            2,
            "µs",
        );
    }
    if let Some((before, after)) = mem.filter(|_| b.bound > 0) {
        rep.int(
            "redis_used_memory_before",
            "Redis used_memory before (bytes)",
            before,
        );
        rep.int(
            "redis_used_memory_after",
            "Redis used_memory, all bound (bytes)",
            after,
        );
        rep.num(
            "redis_bytes_per_uid_online",
            "Redis used_memory per uid online (subscription + online set)",
            (after as f64 - before as f64) / b.bound as f64,
            0,
            "B",
        );
    }
    rep.finish()
}

fn report(rep: &mut Report, rounds: &[Round], k_nodes: usize, n: usize) {
    rep.int("nodes", "nodes", k_nodes as u64);
    rep.int("clients_per_node", "clients per node", n as u64);
    rep.int("clients", "clients (all nodes)", (k_nodes * n) as u64);
    rep.int("rounds", "rounds", rounds.len() as u64);
    let list = |f: &dyn Fn(&Round) -> f64| {
        rounds
            .iter()
            .map(|r| format!("{:.1}", f(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    rep.text(
        "last_delivery_ms_rounds",
        "last delivery on any node, per round (ms)",
        &list(&|r| r.last_delivery_ms),
    );
    let mut v: Vec<f64> = rounds.iter().map(|r| r.last_delivery_ms).collect();
    rep.num(
        "last_delivery_ms",
        "LAST DELIVERY (median of rounds)",
        median(&mut v),
        1,
        "ms",
    );
    let mut v: Vec<f64> = rounds.iter().map(|r| r.last_reply_ms).collect();
    rep.num(
        "last_reply_ms",
        "last reply (median of rounds)",
        median(&mut v),
        1,
        "ms",
    );
    let per_frame = |cpu: f64, frames: u64| {
        if frames > 0 {
            cpu * 1000.0 / frames as f64
        } else {
            0.0
        }
    };
    let mut worst = 0.0f64;
    for k in 0..k_nodes {
        let mut v: Vec<f64> = rounds
            .iter()
            .map(|r| per_frame(r.node_cpu_ms[k], r.node_frames[k]))
            .collect();
        let m = median(&mut v);
        worst = worst.max(m);
        rep.num(
            &format!("node{k}_cpu_us_per_frame"),
            &format!("node {k}: server CPU per frame it delivered (median)"),
            m,
            2,
            "µs",
        );
    }
    rep.num(
        "node_cpu_us_per_frame_max",
        "worst node, CPU per frame",
        worst,
        2,
        "µs",
    );
    let mut v: Vec<f64> = rounds
        .iter()
        .map(|r| per_frame(r.node_cpu_ms.iter().sum(), r.node_frames.iter().sum()))
        .collect();
    rep.num(
        "server_cpu_us_per_frame",
        "all nodes: server CPU per delivered frame (median)",
        median(&mut v),
        2,
        "µs",
    );
    if rounds.iter().all(|r| r.redis_ms.is_some()) {
        let mut v: Vec<f64> = rounds
            .iter()
            .map(|r| per_frame(r.redis_ms.unwrap_or(0.0), r.node_frames.iter().sum()))
            .collect();
        rep.num(
            "redis_cpu_us_per_frame",
            "redis-server CPU per delivered frame (median)",
            median(&mut v),
            2,
            "µs",
        );
    }
}
