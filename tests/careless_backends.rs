//! Careless backends (issue 10): stranger-supplied text written raw into the log.
//!
//! Over real sockets against the real server on port 0 (the log tests run the real
//! binary); timeouts are configured short rather than faked, since paused time does not
//! mix with real sockets. Every wait is bounded.

mod common;
use common::*;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command as Process};
use tokio::time::Instant;

/// A reply parsed as JSON; panics (with the reply) if it is not.
fn parse(reply: &str) -> Value {
    serde_json::from_str(reply).unwrap_or_else(|e| panic!("reply {reply:?} is not JSON: {e}"))
}

// ---------------------------------------------------------------------------------------
// Logs: stranger-supplied text never reaches the log raw
// ---------------------------------------------------------------------------------------

/// The real binary on port 0 with `RUST_LOG` and `args`, stderr kept as raw bytes.
struct Binary {
    push_addr: SocketAddr,
    log: Arc<Mutex<Vec<u8>>>,
    _child: Child,
}

impl Binary {
    async fn start(rust_log: &str, args: &[&str]) -> Binary {
        let mut cmd = Process::new(env!("CARGO_BIN_EXE_pushwire"));
        cmd.env_clear()
            .env("RUST_LOG", rust_log)
            .args(["--ws-listen", "127.0.0.1:0", "--push-listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn pushwire");
        let mut stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let push_addr = loop {
            let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
            if let Some(line) = text.lines().find(|l| l.contains("listening")) {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("push="))
                    .or_else(|| {
                        // JSON format: "push":"127.0.0.1:P"
                        let at = line.find("\"push\":\"")? + 8;
                        line[at..].split('"').next()
                    })
                    .unwrap_or_else(|| panic!("no push address in {line:?}"));
                break addr.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}"));
            }
            assert!(Instant::now() < deadline, "pushwire did not start: {text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Binary {
            push_addr,
            log,
            _child: child,
        }
    }

    /// Waits until the log holds `needle` (it is written asynchronously), then returns it.
    async fn log_with(&self, needle: &str) -> Vec<u8> {
        let deadline = Instant::now() + STEP;
        loop {
            let log = self.log.lock().unwrap().clone();
            if String::from_utf8_lossy(&log).contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "log never had {needle:?}:\n{}",
                String::from_utf8_lossy(&log)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Forges a log line of its own and recolours, rewrites or cuts the real one.
const EVIL: &str = "x\n2026-01-01T00:00:00.000000Z  WARN pushwire: FORGED admin logged in\r\u{1b}[31m\u{1b}[2K\u{0}\u{7}end";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stranger_supplied_text_never_reaches_the_log_raw() {
    for format in ["human", "json"] {
        let daemon = Binary::start("debug", &["--max-groups", "1", "--log-format", format]).await;
        let mut push = PushClient::connect(daemon.push_addr).await;
        let evil = json!(EVIL).to_string();
        assert_eq!(parse(&push.request("/join g0 u1").await)["ok"], json!(true));
        // Refused for the group limit, logged with its group name.
        let v = parse(&push.request(&format!("/join {evil} u1")).await);
        assert_eq!(v["ok"], json!(false), "{v}");
        // Uids, ids and names in every position a command takes them.
        for line in [
            format!("/join g0 [{evil}]"),
            format!("/online {evil}"),
            format!("/kick {evil} bye\u{1b}[31m\u{0}\u{7}"),
            format!("/send [{evil},1.5] hi"),
            format!("/push {evil} {{\"uid\":{evil}}}"),
            format!("/push 1 {{\"uid\":{evil}"),
            format!("{{\"uid\":{evil}"),
            format!("{{\"uid\":{evil},\"uid\":{evil}}}"),
            "/bogus\r\u{1b}[31m\u{0}\u{7}x".to_owned(),
            "/ping\u{1b}[2J".to_owned(),
        ] {
            push.request(&line).await;
        }
        // Logged before its reply was written, like every line above.
        push.request("/last-line").await;
        let log = daemon.log_with("last-line").await;
        let text = String::from_utf8_lossy(&log);
        for (i, b) in log.iter().enumerate() {
            assert!(
                *b == b'\n' || (*b >= 0x20 && *b != 0x7f),
                "{format} log has raw byte {b:#04x} at {i}:\n{text}"
            );
        }
        for line in text.lines() {
            assert!(
                !line.starts_with("2026-01-01T00:00:00"),
                "{format} log has a forged line: {line:?}\n{text}"
            );
            if format == "json" {
                serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|e| panic!("{format} log line {line:?} is not JSON: {e}"));
            }
        }
        // The refusal was logged, with the name escaped rather than dropped.
        let refused = text
            .lines()
            .find(|l| l.contains("join refused"))
            .expect("join refused logged");
        assert!(refused.contains("FORGED admin logged in"), "{refused}");
        assert!(refused.contains(r"\u{1b}[31m"), "{refused}");
    }
}
