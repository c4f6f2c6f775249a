//! CI smoke run of the load tool: every scenario once, at 500 clients, against the real
//! daemon binary. No timing assertions: the tool itself checks correctness (every `ok`
//! delivered exactly once, byte-exact) and exits non-zero otherwise.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().expect("local addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_its_own_checks_at_500_clients() {
    let (ws, push) = (free_port(), free_port());
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .args(["--ws-listen", &format!("127.0.0.1:{ws}")])
        .args(["--push-listen", &format!("127.0.0.1:{push}")])
        .args(["--http-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start pushwire");
    let pid = daemon.id().expect("daemon pid");
    let mut log = BufReader::new(daemon.stderr.take().expect("stderr")).lines();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = log.next_line().await.expect("read log") {
            if line.contains("listening") {
                return;
            }
        }
        panic!("daemon exited before listening");
    })
    .await
    .expect("daemon did not start listening within 10 s");
    // Keep draining the log so the daemon never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });

    let out = tokio::time::timeout(
        Duration::from_secs(240),
        Command::new(env!("CARGO_BIN_EXE_pushwire-bench"))
            .args(["--ws", &format!("ws://127.0.0.1:{ws}/")])
            .args(["--push", &format!("127.0.0.1:{push}")])
            .args(["--server-pid", &pid.to_string()])
            .args(["all", "--clients", "500", "--smoke"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("bench did not finish within 240 s")
    .expect("run pushwire-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}\n{stderr}",
        out.status
    );

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
    // enveloped frames pass the same byte-exact checks).
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(env!("CARGO_BIN_EXE_pushwire-bench"))
            .args(["--ws", &format!("ws://127.0.0.1:{ws}/")])
            .args(["--push", &format!("127.0.0.1:{push}")])
            .args(["--server-pid", &pid.to_string(), "--json-only"])
            .args(["ack", "--v1", "--clients", "200", "--smoke"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("bench ack did not finish within 120 s")
    .expect("run pushwire-bench ack");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench ack failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let ack = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["scenario"] == "ack")
        .unwrap_or_else(|| panic!("no ack report in {stdout}"));
    assert_eq!(
        (ack["ok"].as_bool(), ack["errors"].as_u64()),
        (Some(true), Some(0)),
        "{ack}"
    );
}

/// `scripts/bench-compare.sh` end to end on the debug binaries: two sides (the same build
/// under two labels), alternating fresh daemons, and the median/ratio table at the end.
#[test]
fn bench_compare_alternates_two_servers_and_prints_ratios() {
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_pushwire"))
        .parent()
        .expect("binary directory")
        .display()
        .to_string();
    let out_dir = std::env::temp_dir().join(format!("bench-compare-{}", std::process::id()));
    let out = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/bench-compare.sh"
    ))
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
    .env("PUSHWIRE_BENCH", env!("CARGO_BIN_EXE_pushwire-bench"))
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
