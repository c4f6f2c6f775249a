//! CI smoke run of the load tool: every scenario once, at 500 clients, against the real
//! daemon binary. No timing assertions: the tool itself checks correctness (every `ok`
//! delivered exactly once, byte-exact) and exits non-zero otherwise.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{BENCH, bin_dir, daemon_bin, free_port, script, wait_listening};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The real daemon on free ports with `args`, once its log has shown each of `wait_for`:
/// (the process, its WebSocket port, its push port, its pid). Its log keeps being drained.
async fn daemon(args: &[&str], wait_for: &[&str]) -> (tokio::process::Child, u16, u16, u32) {
    let (ws, push) = (free_port(), free_port());
    let mut daemon = Command::new(daemon_bin())
        .args(["--ws-listen", &format!("127.0.0.1:{ws}")])
        .args(["--push-listen", &format!("127.0.0.1:{push}")])
        .args(args)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start pushwire");
    let pid = daemon.id().expect("daemon pid");
    let mut log = BufReader::new(daemon.stderr.take().expect("stderr")).lines();
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = vec![false; wait_for.len()];
        while let Some(line) = log.next_line().await.expect("read log") {
            for (i, w) in wait_for.iter().enumerate() {
                seen[i] |= line.contains(w);
            }
            if seen.iter().all(|s| *s) {
                return;
            }
        }
        panic!("daemon exited before logging {wait_for:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("daemon did not log {wait_for:?} within 10 s"));
    // Keep draining the log so the daemon never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    (daemon, ws, push, pid)
}

/// Runs `cmd` to its end within `secs`, asserts it succeeded (its output in the message
/// otherwise), and returns its stdout.
async fn stdout_of(cmd: &mut Command, secs: u64, what: &str) -> String {
    let out = tokio::time::timeout(Duration::from_secs(secs), cmd.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {secs} s"))
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_its_own_checks_at_500_clients() {
    let (_daemon, ws, push, pid) = daemon(&["--http-listen", "127.0.0.1:0"], &["listening"]).await;

    let stdout = stdout_of(
        Command::new(BENCH)
            .args(["--ws", &format!("ws://127.0.0.1:{ws}/")])
            .args(["--push", &format!("127.0.0.1:{push}")])
            .args(["--server-pid", &pid.to_string()])
            .args(["all", "--clients", "500", "--smoke"]),
        240,
        "pushwire-bench all",
    )
    .await;

    // One JSON line per scenario, each reporting ok.
    let reports: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("JSON report line"))
        .collect();
    let scenarios: Vec<&str> = reports
        .iter()
        .map(|r| r["scenario"].as_str().unwrap_or("?"))
        .collect();
    for want in [
        "storm",
        "idle-mem",
        "fanout",
        "fanout-broadcast",
        "fanout-group",
        "latency",
        "throughput",
        "churn",
    ] {
        assert!(
            scenarios.contains(&want),
            "no {want} report in {scenarios:?}\n{stdout}"
        );
    }
    for r in &reports {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
    }

    // Protocol v1 clients against the same daemon: the ack round trip (and its clients'
    // enveloped frames pass the same byte-exact checks), and a resume storm (every client
    // cut, then all back at once with since=, each checked for exactly what it missed).
    for scenario in [
        &["ack", "--v1", "--clients", "200", "--smoke"][..],
        &["resume-storm", "--clients", "100", "--missed", "5"][..],
    ] {
        let name = scenario[0];
        let stdout = stdout_of(
            Command::new(BENCH)
                .args(["--ws", &format!("ws://127.0.0.1:{ws}/")])
                .args(["--push", &format!("127.0.0.1:{push}")])
                .args(["--server-pid", &pid.to_string(), "--json-only"])
                .args(scenario),
            120,
            &format!("pushwire-bench {name}"),
        )
        .await;
        let report = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|r| r["scenario"] == name)
            .unwrap_or_else(|| panic!("no {name} report in {stdout}"));
        assert_eq!(
            (report["ok"].as_bool(), report["errors"].as_u64()),
            (Some(true), Some(0)),
            "{report}"
        );
    }
}

/// `scripts/bench-compare.sh` end to end on the debug binaries: two sides (the same build
/// under two labels), alternating fresh daemons, and the median/ratio table at the end.
#[test]
fn bench_compare_alternates_two_servers_and_prints_ratios() {
    daemon_bin();
    let bin_dir = bin_dir().display().to_string();
    let out_dir = std::env::temp_dir().join(format!("bench-compare-{}", std::process::id()));
    let out = std::process::Command::new(script("bench-compare.sh"))
        .args(["-n", "2", "-o", &out_dir.display().to_string()])
        .args([format!("before={bin_dir}"), format!("after={bin_dir}")])
        .args([
            "--",
            "fanout",
            "--fanout-mode",
            "per-uid",
            "--clients",
            "50",
        ])
        .args(["--rounds", "2", "--settle-ms", "0"])
        .env("PUSHWIRE_BENCH", BENCH)
        .output()
        .expect("run scripts/bench-compare.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    // Each side ran twice, in turn, and every run's JSON line is kept.
    for side in ["before", "after"] {
        let lines = std::fs::read_to_string(out_dir.join(format!("{side}.jsonl")))
            .expect("JSON lines of a side");
        let fanouts = lines
            .lines()
            .filter(|l| l.contains(r#""scenario":"fanout""#));
        assert_eq!(fanouts.count(), 2, "{side}:\n{lines}");
    }
    let order: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("bench-compare: run "))
        .collect();
    assert_eq!(
        order,
        ["1/2, before", "1/2, after", "2/2, before", "2/2, after"],
        "{stderr}"
    );
    assert!(stdout.contains("== fanout (runs: 2 / 2)"), "{stdout}");
    let header = stdout
        .lines()
        .find(|l| l.starts_with("field"))
        .expect("a table header");
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["field", "before", "after", "/before"],
        "{stdout}"
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("last_delivery_ms "))
        .expect("the last-delivery row");
    let ratio: f64 = row
        .split_whitespace()
        .last()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no ratio in {row:?}"));
    assert!(ratio > 0.0, "{row}");
    let _ = std::fs::remove_dir_all(out_dir);
}

/// The cluster scenarios at a tiny scale: a real redis-server and three real nodes; the
/// `cluster-fanout` parent spreads its clients over one child process per node and checks
/// every delivery of a per-uid fan-out, a broadcast and a group push through the first
/// node; `cluster-count` checks every `/count` is exact and reports what one costs each
/// node and Redis; a cross-node `throughput` run reports Redis's CPU per push. No timing
/// assertions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_scenarios_pass_their_checks_across_three_nodes() {
    let rport = free_port();
    let mut redis = Command::new("redis-server")
        .args(["--port", &rport.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start redis-server (scripts/test.sh installs it)");
    let redis_pid = redis.id().expect("redis pid");
    // Listening before the nodes start: a node that finds it down backs off, and on a
    // loaded machine the backoff alone could outlast the wait for "redis connected".
    wait_listening(rport).await;
    let url = format!("redis://127.0.0.1:{rport}/");
    let mut nodes = Vec::new();
    let mut daemons = Vec::new();
    for _ in 0..3 {
        let args = ["--http-listen", "off", "--redis", &url];
        let node = daemon(&args, &["listening", "redis connected"]).await;
        nodes.push(format!(
            "ws://127.0.0.1:{}/,127.0.0.1:{},{}",
            node.1, node.2, node.3
        ));
        daemons.push(node);
    }
    let bench = |args: Vec<String>| async move {
        let stdout = stdout_of(Command::new(BENCH).args(&args), 120, "pushwire-bench").await;
        let reports: Vec<serde_json::Value> = stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).expect("JSON report line"))
            .collect();
        for r in &reports {
            assert_eq!(r["ok"], true, "{r}");
            assert_eq!(r["errors"], 0, "{r}");
        }
        reports
    };
    let mut args: Vec<String> = ["--redis-pid", &redis_pid.to_string(), "--json-only"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["cluster-fanout", "--clients", "100", "--rounds", "1"].map(String::from));
    args.extend(["--redis".to_owned(), format!("127.0.0.1:{rport}")]);
    for node in &nodes {
        args.extend(["--node".to_owned(), node.clone()]);
    }
    let mut reports = bench(args).await;
    // First what binding cost: each node's connect storm and idle RSS per connection,
    // Redis's CPU and memory per uid online.
    let bind = reports.remove(0);
    assert_eq!(bind["scenario"], "cluster-bind", "{bind}");
    assert_eq!(bind["clients"], 300, "{bind}");
    for k in 0..3 {
        for key in [
            "connect_ms",
            "cpu_us_per_client_bound",
            "rss_bytes_per_conn",
        ] {
            assert!(bind[format!("node{k}_{key}")].as_f64().is_some(), "{bind}");
        }
    }
    for key in ["redis_cpu_us_per_uid_online", "redis_bytes_per_uid_online"] {
        assert!(bind[key].as_f64().is_some_and(|v| v > 0.0), "{bind}");
    }
    let names: Vec<&str> = reports
        .iter()
        .filter_map(|r| r["scenario"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "cluster-fanout",
            "cluster-fanout-broadcast",
            "cluster-fanout-group"
        ]
    );
    for r in &reports {
        assert_eq!(r["clients"], 300, "{r}");
        for k in 0..3 {
            assert!(
                r[format!("node{k}_cpu_us_per_frame")].as_f64().is_some(),
                "{r}"
            );
        }
        assert!(r["redis_cpu_us_per_frame"].as_f64().is_some(), "{r}");
    }

    // `/count` through node 1, a call at a time: every answer exact (the tool checks), and
    // what a call costs each node and Redis reported, as is Redis's memory per uid online.
    let mut args: Vec<String> = ["--redis-pid", &redis_pid.to_string(), "--json-only"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(
        [
            "cluster-count",
            "--clients",
            "100",
            "--counts",
            "50",
            "--ask-via",
            "1",
            "--redis",
            &format!("127.0.0.1:{rport}"),
        ]
        .map(String::from),
    );
    for node in &nodes {
        args.extend(["--node".to_owned(), node.clone()]);
    }
    let reports = bench(args).await;
    let [count] = &reports[..] else {
        panic!("one cluster-count report: {reports:?}");
    };
    assert_eq!(count["scenario"], "cluster-count", "{count}");
    assert_eq!(
        (
            &count["uids_online"],
            &count["counts"],
            &count["asked_node"]
        ),
        (&300.into(), &50.into(), &1.into()),
        "{count}"
    );
    for key in [
        "node0_cpu_us_per_count",
        "node1_cpu_us_per_count",
        "node2_cpu_us_per_count",
        "redis_cpu_us_per_count",
        "redis_cpu_us_per_uid_online",
        "redis_bytes_per_uid_online",
    ] {
        assert!(count[key].as_f64().is_some(), "no {key}: {count}");
    }
    assert!(
        count["count_ms"]["p50_ms"].as_f64().unwrap_or(0.0) > 0.0,
        "{count}"
    );

    // Browsers on node 1, pushes through node 0: routed through Redis.
    let (_, ws1, _, pid1) = &daemons[1];
    let (_, _, push0, _) = &daemons[0];
    let reports = bench(
        [
            "--ws",
            &format!("ws://127.0.0.1:{ws1}/"),
            "--push",
            &format!("127.0.0.1:{push0}"),
            "--server-pid",
            &pid1.to_string(),
            "--redis-pid",
            &redis_pid.to_string(),
            "--json-only",
            "throughput",
            "--clients",
            "100",
            "--pushes",
            "2000",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let t = reports
        .iter()
        .find(|r| r["scenario"] == "throughput")
        .expect("a throughput report");
    assert!(t["redis_cpu_us_per_push"].as_f64().is_some(), "{t}");
    let _ = redis.kill().await;
}

/// The kernel floor, alone and as three senders at once (their rounds started together):
/// every frame byte-exact on every socket (the tool's own checks), and a figure reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floor_scenarios_pass_their_checks() {
    for senders in ["1", "3"] {
        let stdout = stdout_of(
            Command::new(BENCH)
                .args(["--json-only", "--threads", "1", "--floor-senders", senders])
                .args(["floor", "--clients", "200", "--rounds", "2"]),
            120,
            &format!("floor with {senders} sender(s)"),
        )
        .await;
        let report: serde_json::Value = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).expect("JSON report line"))
            .expect("a report line");
        assert_eq!(report["ok"], true, "{report}");
        assert!(
            report["floor_cpu_us_per_frame"].as_f64().unwrap_or(0.0) > 0.0,
            "{report}"
        );
        if senders == "3" {
            assert_eq!(report["senders"], 3, "{report}");
        }
    }
}

/// `scripts/bench-cluster.sh` end to end at a tiny size (its own redis-server and four
/// nodes): every run's checks pass (the script fails otherwise), `FANOUT_MODE` and
/// `PUSH_VIA` reach the load tool, and the summary pairs each run with its round's floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_cluster_script_runs_and_pairs_ratios_per_round() {
    daemon_bin();
    let bin = bin_dir();
    let out_dir = std::env::temp_dir().join(format!("bench-cluster-smoke-{}", std::process::id()));
    let stdout = stdout_of(
        Command::new("bash")
            .arg(script("bench-cluster.sh"))
            .arg("fanout")
            .env("BIN", bin)
            .env("OUT", &out_dir)
            .envs([
                ("CLIENTS", "100"),
                ("ROUNDS", "2"),
                ("FANOUT_ROUNDS", "1"),
                ("FANOUT_MODE", "broadcast"),
                ("PUSH_VIA", "2"),
            ]),
        180,
        "scripts/bench-cluster.sh",
    )
    .await;
    let runs = std::fs::read_to_string(out_dir.join("runs.jsonl")).expect("runs.jsonl");
    let runs: Vec<serde_json::Value> = runs
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON run"))
        .collect();
    let cluster: Vec<&serde_json::Value> = runs
        .iter()
        .filter(|r| r["what"] == "3-nodes" && r["scenario"] != "cluster-bind")
        .collect();
    assert_eq!(cluster.len(), 2, "one broadcast report per round: {runs:?}");
    for (r, round) in cluster.iter().zip([1, 2]) {
        assert_eq!(r["scenario"], "cluster-fanout-broadcast", "{r}");
        assert_eq!(r["origin_node"], 2, "{r}");
        assert_eq!(r["round"], round, "{r}");
        assert_eq!(r["clients"], 300, "{r}");
    }
    assert!(
        stdout.contains("== paired ratio to floor of the same round (2 rounds)"),
        "{stdout}"
    );
    let paired = stdout
        .lines()
        .find(|l| l.contains("3-nodes cluster-fanout-broadcast node2_cpu_us_per_frame: median"))
        .unwrap_or_else(|| panic!("no paired ratio for node 2 in {stdout}"));
    let ratio: f64 = paired
        .split("median ")
        .nth(1)
        .and_then(|r| r.split('x').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no ratio in {paired:?}"));
    assert!(ratio > 0.0, "{paired}");
    let _ = std::fs::remove_dir_all(out_dir);
}

/// The 10-node scenario at a small size (issue 25 runs it at 10 x 19,000): ten real nodes
/// on one redis-server, `cluster-fanout` with one holder child per node, each child's
/// browsers from a block of 127.0.0.0/8 of its own (127.K.0.x); every delivery of the
/// per-uid fan-out, the broadcast and the group push through node 0 checked, and each
/// node's CPU per frame reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_each_hold_their_browsers_in_a_child_of_their_own() {
    let rport = free_port();
    let mut redis = Command::new("redis-server")
        .args(["--port", &rport.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start redis-server (scripts/test.sh installs it)");
    let redis_pid = redis.id().expect("redis pid");
    wait_listening(rport).await;
    let url = format!("redis://127.0.0.1:{rport}/");
    let mut daemons = Vec::new();
    let mut args: Vec<String> = ["--redis-pid", &redis_pid.to_string(), "--json-only"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["cluster-fanout", "--clients", "50", "--rounds", "1"].map(String::from));
    for _ in 0..10 {
        let node = daemon(
            &["--http-listen", "off", "--redis", &url],
            &["listening", "redis connected"],
        )
        .await;
        let at = format!("ws://127.0.0.1:{}/,127.0.0.1:{},{}", node.1, node.2, node.3);
        args.extend(["--node".to_owned(), at]);
        daemons.push(node);
    }
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(BENCH).args(&args).kill_on_drop(true).output(),
    )
    .await
    .expect("cluster-fanout over 10 nodes within 120 s")
    .expect("run pushwire-bench");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    // A block that cannot be bound falls back to the kernel's choice, with a warning.
    assert!(!stderr.contains("cannot bind source address"), "{stderr}");
    let reports: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("JSON report line"))
        .collect();
    assert_eq!(reports.len(), 4, "{stdout}");
    assert_eq!(reports[0]["scenario"], "cluster-bind", "{stdout}");
    for k in 0..10 {
        assert!(
            reports[0][format!("node{k}_connect_ms")].as_f64().is_some(),
            "{}",
            reports[0]
        );
    }
    for r in &reports[1..] {
        assert_eq!(
            (r["ok"].as_bool(), r["errors"].as_u64()),
            (Some(true), Some(0)),
            "{r}"
        );
        assert_eq!(
            (r["nodes"].as_u64(), r["clients"].as_u64()),
            (Some(10), Some(500)),
            "{r}"
        );
        for k in 0..10 {
            assert!(
                r[format!("node{k}_cpu_us_per_frame")].as_f64().is_some(),
                "{r}"
            );
        }
        // Each holder saw its sockets come from its own block (the tool checks 127.K+1).
        assert_eq!(r["source_blocks"], 10, "{r}");
    }
    let _ = redis.kill().await;
}

/// `scripts/bench-190k.sh` end to end at a tiny size on a three-master Redis Cluster it
/// makes itself: the bind figures (connect time, idle RSS per connection per node, Redis's
/// CPU and memory per uid online summed over the masters) and every fan-out's per-node CPU
/// per frame against the floors of its round are printed, and every run's checks pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_190k_script_runs_on_a_redis_cluster() {
    daemon_bin();
    let out_dir = std::env::temp_dir().join(format!("bench-190k-smoke-{}", std::process::id()));
    let stdout = stdout_of(
        Command::new("bash")
            .arg(script("bench-190k.sh"))
            .env("BIN", bin_dir())
            .env("OUT", &out_dir)
            .envs([
                ("NODES", "3"),
                ("CLIENTS", "50"),
                ("REDIS", "cluster"),
                ("FANOUT_ROUNDS", "1"),
            ]),
        180,
        "scripts/bench-190k.sh",
    )
    .await;
    let runs = std::fs::read_to_string(out_dir.join("runs.jsonl")).expect("runs.jsonl");
    let runs: Vec<serde_json::Value> = runs
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON run"))
        .collect();
    let bind = runs
        .iter()
        .find(|r| r["scenario"] == "cluster-bind")
        .unwrap_or_else(|| panic!("no cluster-bind run in {runs:?}"));
    assert_eq!(bind["clients"], 150, "{bind}");
    for key in ["redis_cpu_us_per_uid_online", "redis_bytes_per_uid_online"] {
        assert!(bind[key].as_f64().is_some_and(|v| v > 0.0), "{bind}");
    }
    assert!(
        stdout.contains("cluster-bind: 150 browsers on 3 nodes"),
        "{stdout}"
    );
    for scenario in [
        "cluster-fanout",
        "cluster-fanout-broadcast",
        "cluster-fanout-group",
    ] {
        let r = runs
            .iter()
            .find(|r| r["scenario"] == scenario)
            .unwrap_or_else(|| panic!("no {scenario} run in {runs:?}"));
        assert!(r["redis_cpu_us_per_frame"].as_f64().is_some(), "{r}");
        assert!(
            stdout.contains(&format!("round 1 {scenario}: last delivery")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("/   floor-3"), "{stdout}");
    let _ = std::fs::remove_dir_all(out_dir);
}
