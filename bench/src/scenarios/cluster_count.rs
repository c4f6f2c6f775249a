//! cluster-count: what one `/count` costs each node and Redis in cluster mode, with
//! `--clients` browsers held on each node (a child process per node, as in
//! cluster-fanout).
//!
//! In cluster mode `/count` asks every node for its connections (one publish on the
//! all-nodes channel, one answer from each node) and reads from Redis the distinct uids
//! online (`HLEN` of the online hash the nodes keep up to date as their uids come and go)
//! and the number of groups (`SCARD`): nothing in it grows with the uids online. This
//! scenario measures that. It waits until `/count` shows no uid online (an earlier run's
//! browsers gone), binds `--clients` uids on each node, one node at a time (Redis's CPU
//! per uid while they came online is reported: their subscriptions and the online set's
//! upkeep together), waits until `/count` shows every uid (exact once the
//! cluster is quiet), then sends `--counts` `/count`s one at a time to node `--ask-via`,
//! each checked (`uids` and `connections` = the clients bound). Reported: the round trip's
//! percentiles, and each node's and Redis's CPU per `/count`, less what they spent in an
//! idle interval of the same length measured right after (the nodes' beats). With
//! `--redis HOST:PORT`, also Redis's `used_memory` before and after the uids came online,
//! per uid.

use super::cluster_fanout::{Bound, Node, bind_all, exit_code, parse_node, quit, wall_ns};
use crate::Opts;
use crate::procstat::{Meter, Usage};
use crate::report::Report;
use crate::track;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What `cluster-count` was asked for.
pub struct Args<'a> {
    pub nodes: &'a [String],
    pub ask_via: usize,
    pub counts: Option<u64>,
    pub redis: &'a [String],
}

pub fn run(o: &Opts, args: &Args) -> i32 {
    track::now_ns();
    exit_code(o, parent(o, args).map(|r| vec![r]))
}

/// The `used_memory` of every Redis in `addrs` (each master of a Redis Cluster), summed;
/// `None` if `addrs` is empty.
pub(super) fn redis_used_memory_sum(addrs: &[String]) -> Result<Option<u64>, String> {
    if addrs.is_empty() {
        return Ok(None);
    }
    let mut sum = 0;
    for a in addrs {
        sum += redis_used_memory(a)?;
    }
    Ok(Some(sum))
}

/// Redis's `used_memory` (bytes), from `INFO memory` on a connection of its own.
fn redis_used_memory(addr: &str) -> Result<u64, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| format!("--redis {addr}: {e}"))?;
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let mut rd = BufReader::new(tcp);
    rd.get_mut()
        .write_all(b"INFO memory\r\n")
        .map_err(|e| format!("--redis {addr}: {e}"))?;
    let mut head = String::new();
    rd.read_line(&mut head)
        .map_err(|e| format!("--redis {addr}: {e}"))?;
    let len: usize = head
        .strip_prefix('$')
        .and_then(|l| l.trim_end().parse().ok())
        .ok_or_else(|| format!("--redis {addr}: INFO answered {head:?}"))?;
    let mut body = vec![0u8; len + 2];
    std::io::Read::read_exact(&mut rd, &mut body).map_err(|e| format!("--redis {addr}: {e}"))?;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("--redis {addr}: no used_memory in INFO"))
}

/// One `/count` on `conn`: (uids, connections).
fn count(conn: &mut BufReader<TcpStream>) -> Result<(u64, u64), String> {
    conn.get_mut()
        .write_all(b"/count\n")
        .map_err(|e| format!("/count: {e}"))?;
    let mut line = String::new();
    match conn.read_line(&mut line) {
        Ok(0) => return Err("/count: the node closed the connection".into()),
        Ok(_) => {}
        Err(e) => return Err(format!("/count: {e}")),
    }
    let v: serde_json::Value =
        serde_json::from_str(&line).map_err(|_| format!("/count: not JSON: {line:?}"))?;
    match (
        v["ok"].as_bool(),
        v["uids"].as_u64(),
        v["connections"].as_u64(),
    ) {
        (Some(true), Some(uids), Some(conns)) => Ok((uids, conns)),
        _ => Err(format!("/count: {}", line.trim_end())),
    }
}

/// CPU of a usage, ms (schedstat, else clock ticks).
fn cpu_ms(u: &Usage) -> f64 {
    u.server_ms_hires.or(u.server_ms).unwrap_or(0.0)
}

fn parent(o: &Opts, args: &Args) -> Result<Report, String> {
    let ask_via = args.ask_via;
    let nodes: Vec<Node> = args
        .nodes
        .iter()
        .map(|s| parse_node(s))
        .collect::<Result<_, _>>()?;
    let asked = nodes
        .get(ask_via)
        .ok_or_else(|| format!("--ask-via {ask_via}: there are {} nodes", nodes.len()))?;
    let calls = o.pick(args.counts, 2000, 100).max(1);
    let tcp = TcpStream::connect(asked.push).map_err(|e| format!("push connection: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut conn = BufReader::new(tcp);
    // Quiet first: an earlier run's uids going offline would be counted in this one's
    // Redis CPU and memory per uid.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut before = count(&mut conn)?;
    while before.0 > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        before = count(&mut conn)?;
    }
    let mem_before = redis_used_memory_sum(args.redis)?;
    let (n, k_nodes) = (o.clients, nodes.len());
    let tag = format!("k{:x}", wall_ns() % 0xffff_ffff);
    let Bound {
        holders,
        bound,
        usage: bind_usage,
        ..
    } = bind_all(o, &nodes, &tag, "cluster-count")?;

    // Exact once quiet: the last node's uids reach the online hash in batches.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = count(&mut conn)?;
    while seen != (bound, bound) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        seen = count(&mut conn)?;
    }
    if seen != (bound, bound) {
        track::error(format!(
            "/count says {} uids and {} connections, {bound} bound",
            seen.0, seen.1
        ));
    }

    let mem_after = redis_used_memory_sum(args.redis)?;

    let meters: Vec<Meter> = nodes.iter().map(|nd| Meter::start(Some(nd.pid))).collect();
    let t0 = Instant::now();
    let mut times = Vec::with_capacity(calls as usize);
    let mut wrong = 0u64;
    for _ in 0..calls {
        let t = Instant::now();
        let got = count(&mut conn)?;
        times.push(t.elapsed().as_nanos() as u64);
        if got != (bound, bound) {
            wrong += 1;
            if wrong == 1 {
                track::error(format!(
                    "/count says {} uids and {} connections, {bound} bound",
                    got.0, got.1
                ));
            }
        }
    }
    let busy: Vec<Usage> = meters.iter().map(Meter::stop).collect();
    let took = t0.elapsed();
    // The same length idle: what the nodes and Redis spend anyway (beats, timers).
    let meters: Vec<Meter> = nodes.iter().map(|nd| Meter::start(Some(nd.pid))).collect();
    std::thread::sleep(took);
    let idle: Vec<Usage> = meters.iter().map(Meter::stop).collect();
    quit(holders)?;

    let mut rep = Report::new("cluster-count");
    if before.0 > 0 {
        rep.note(format!(
            "{} uids were still online before the run: the per-uid figures include them leaving",
            before.0
        ));
    }
    rep.int("nodes", "nodes", k_nodes as u64);
    rep.int(
        "clients_per_node",
        "clients per node (one uid each)",
        n as u64,
    );
    rep.int("uids_online", "distinct uids online (all nodes)", bound);
    rep.int("asked_node", "node the /counts went to", ask_via as u64);
    rep.int("counts", "/count calls, one at a time", calls);
    if wrong > 0 {
        rep.int("counts_wrong", "/count answers that were not exact", wrong);
    }
    times.sort_unstable();
    rep.percentiles_ms("count_ms", "/count round trip", &times);
    let per_call = |busy: f64, idle: f64| (busy - idle) * 1000.0 / calls as f64;
    let mut all = 0.0;
    for k in 0..k_nodes {
        let v = per_call(cpu_ms(&busy[k]), cpu_ms(&idle[k]));
        all += v;
        rep.num(
            &format!("node{k}_cpu_us_per_count"),
            &format!(
                "node {k}{}: CPU per /count (less idle)",
                if k == ask_via { " (asked)" } else { "" }
            ),
            v,
            2,
            "µs",
        );
    }
    rep.num(
        "nodes_cpu_us_per_count",
        "all nodes: CPU per /count",
        all,
        2,
        "µs",
    );
    if let (Some(b), Some(i)) = (busy[0].redis_ms, idle[0].redis_ms) {
        rep.num(
            "redis_cpu_us_per_count",
            "REDIS CPU PER /count (less idle)",
            per_call(b, i),
            2,
            "µs",
        );
    }
    let redis_bind: Option<f64> = bind_usage.iter().map(|u| u.redis_ms).sum();
    if let Some(ms) = redis_bind.filter(|_| bound > 0) {
        rep.num(
            "redis_cpu_us_per_uid_online",
            "Redis CPU per uid coming online (subscribe + online set)",
            ms * 1000.0 / bound as f64,
            2,
            "µs",
        );
    }
    if let (Some(b), Some(a)) = (mem_before, mem_after)
        && bound > 0
    {
        rep.num(
            "redis_bytes_per_uid_online",
            "Redis used_memory per uid online (subscription + online set)",
            (a as f64 - b as f64) / bound as f64,
            0,
            "B",
        );
    }
    if bound > 0 {
        let nodes_bind: f64 = bind_usage.iter().map(cpu_ms).sum();
        rep.num(
            "node_cpu_us_per_client_bound",
            "node CPU per client connected and bound",
            nodes_bind * 1000.0 / bound as f64,
            1,
            "µs",
        );
    }
    Ok(rep.finish())
}
