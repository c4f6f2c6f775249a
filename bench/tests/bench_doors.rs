//! The load tool's other doors at a small size: `channel-fanout` through pushwire's own
//! protocol and its Pusher Channels door (a real daemon on port 0, its ports read from its
//! log), and through nchan (nginx with libnginx-mod-nchan, started by
//! scripts/peers/nchan.sh; scripts/test.sh installs both). The tool checks every delivery
//! itself (exactly once, byte-exact) and exits non-zero otherwise; here each report must
//! say ok.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{BENCH, daemon_bin, free_port, script};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// A directory of its own for this test process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pushwire-bench-doors-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `name=127.0.0.1:PORT` in the daemon's `listening` line.
fn port_of(line: &str, name: &str) -> u16 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=127.0.0.1:")))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no {name} port in {line:?}"))
}

/// The daemon with a Pusher app and its HTTP door, every port 0: (process, ws, push,
/// http, pid).
async fn pushwire() -> (tokio::process::Child, u16, u16, u16, u32) {
    let apps = scratch("pusher").join("apps.json");
    std::fs::write(
        &apps,
        r#"{"apps":[{"id":"bench","key":"bench-key","secret":"bench-secret-0123456789"}]}"#,
    )
    .expect("write apps");
    let mut daemon = Command::new(daemon_bin())
        .args(["--ws-listen", "127.0.0.1:0", "--push-listen", "127.0.0.1:0"])
        .args(["--http-listen", "127.0.0.1:0"])
        .arg("--pusher-apps")
        .arg(&apps)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start pushwire");
    let pid = daemon.id().expect("daemon pid");
    let mut log = BufReader::new(daemon.stderr.take().expect("stderr")).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = log.next_line().await.expect("read log") {
            if line.contains("listening") {
                return line;
            }
        }
        panic!("the daemon exited before listening");
    })
    .await
    .expect("the daemon did not listen within 10 s");
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    let (ws, push, http) = (
        port_of(&line, "ws"),
        port_of(&line, "push"),
        port_of(&line, "http"),
    );
    (daemon, ws, push, http, pid)
}

/// Runs the bench with `args` and `channel-fanout` in each channel mode; every report
/// of the three (subscribe, idle-mem, the publishes) must be ok.
async fn channel_fanout(door: &str, args: &[String]) {
    for (mode, publishes) in [("shared", "channel-fanout"), ("per-uid", "channel-per-uid")] {
        let out = tokio::time::timeout(
            Duration::from_secs(120),
            Command::new(BENCH)
                .args(args)
                .args(["--json-only", "--progress-ms", "0", "channel-fanout"])
                .args(["--channel-mode", mode, "--clients", "200", "--smoke"])
                .args(["--rounds", "2"])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{door} {mode}: the bench did not finish within 120 s"))
        .expect("run the bench");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{door} {mode}: {}\n{stdout}\n{stderr}",
            out.status
        );
        let reports: Vec<serde_json::Value> = stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        for want in ["channel-subscribe", "channel-idle-mem", publishes] {
            let r = reports
                .iter()
                .find(|r| r["scenario"] == want)
                .unwrap_or_else(|| panic!("{door} {mode}: no {want} report in {stdout}"));
            assert_eq!(
                (r["ok"].as_bool(), r["errors"].as_u64(), r["door"].as_str()),
                (Some(true), Some(0), Some(door)),
                "{r}"
            );
        }
        let fan = reports
            .iter()
            .find(|r| r["scenario"] == publishes)
            .expect("publishes report");
        assert!(fan["last_delivery_ms"].as_f64().is_some(), "{fan}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pusher_and_own_doors_pass_channel_fanout() {
    let (_daemon, ws, push, http, pid) = pushwire().await;
    let pid = pid.to_string();
    channel_fanout(
        "pusher",
        &[
            "--door",
            "pusher",
            "--ws",
            &format!("ws://127.0.0.1:{ws}"),
            "--http",
            &format!("127.0.0.1:{http}"),
            "--pusher-key",
            "bench-key",
            "--pusher-id",
            "bench",
            "--pusher-secret",
            "bench-secret-0123456789",
            "--server-pid",
            &pid,
        ]
        .map(String::from),
    )
    .await;
    channel_fanout(
        "own",
        &[
            "--ws",
            &format!("ws://127.0.0.1:{ws}/"),
            "--push",
            &format!("127.0.0.1:{push}"),
            "--server-pid",
            &pid,
        ]
        .map(String::from),
    )
    .await;
}

/// nginx with nchan, stopped when dropped.
struct Nchan(PathBuf);

impl Drop for Nchan {
    fn drop(&mut self) {
        let _ = std::process::Command::new(script("peers/nchan.sh"))
            .arg("stop")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nchan_door_passes_channel_fanout() {
    let module = std::path::Path::new("/usr/lib/nginx/modules/ngx_nchan_module.so");
    let nginx = std::path::Path::new("/usr/sbin/nginx");
    if !module.is_file() || !nginx.is_file() {
        eprintln!(
            "skipped: nginx with nchan is not installed (apt-get install nginx \
             libnginx-mod-nchan; scripts/test.sh does)"
        );
        return;
    }
    let dir = scratch("nchan");
    let port = free_port();
    let out = std::process::Command::new(script("peers/nchan.sh"))
        .arg("start")
        .arg(&dir)
        .arg(port.to_string())
        .output()
        .expect("run nchan.sh");
    assert!(
        out.status.success(),
        "nchan.sh start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _nchan = Nchan(dir);
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(pid.parse::<u32>().is_ok(), "nchan.sh printed {pid:?}");
    channel_fanout(
        "nchan",
        &[
            "--door",
            "nchan",
            "--ws",
            &format!("ws://127.0.0.1:{port}"),
            "--server-pid",
            &pid,
        ]
        .map(String::from),
    )
    .await;
}
