//! `pushwire status` and its siblings (`push`, `online`, `kick`): the real binary as a
//! client of the real binary, through the push port (TCP with `/auth`, the secret given
//! through `PUSHWIRE_PUSH_SECRET` as an installed env file does) or the Unix socket.
//! Exit codes: 0 done, 1 the daemon answered but the thing failed (offline), 2 the
//! daemon could not be talked to.

mod common;
use common::*;

use std::net::SocketAddr;
use std::time::Duration;

use pushwire::metrics::Metric;
use serde_json::{Value, json};
use tokio::time::Instant;

const SECRET: &str = "status secret";

/// What a subcommand run gave.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// `pushwire ARGS` as a client, with the push secret in the environment if given.
async fn pushwire(args: &[&str], secret: Option<&str>) -> Run {
    let mut cmd = pushwire_command();
    cmd.args(args);
    if let Some(secret) = secret {
        cmd.env("PUSHWIRE_PUSH_SECRET", secret);
    }
    let started = Instant::now();
    let out = run_program(&mut cmd, b"", Duration::from_secs(20)).await;
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// `pushwire --push-listen ADDR ARGS` with the secret.
async fn control(daemon: &Daemon, args: &[&str]) -> Run {
    let addr = daemon.push_addr.to_string();
    let mut all = vec!["--push-listen", addr.as_str()];
    all.extend_from_slice(args);
    pushwire(&all, Some(SECRET)).await
}

async fn daemon_with_secret(extra: &[&str]) -> Daemon {
    Launch::new()
        .env("PUSHWIRE_PUSH_SECRET", SECRET)
        .args(extra)
        .start()
        .await
}

/// A backend connection that sent `/auth SECRET`.
async fn backend(push: SocketAddr) -> PushClient {
    let mut c = PushClient::connect(push).await;
    assert_eq!(
        c.request(&format!("/auth {SECRET}")).await,
        "{\"ok\":true}\n"
    );
    c
}

/// A browser that sent `uid`, once `/online` says the daemon holds it (the harness's
/// bind probes cannot `/auth`).
async fn browser(daemon: &Daemon, uid: &str) -> WsClient {
    let mut ws = WsClient::connect(&daemon.ws_url()).await;
    ws.send_text(uid).await;
    let mut c = backend(daemon.push_addr).await;
    let ask = format!("/online {}", json!(uid));
    let deadline = Instant::now() + STEP;
    loop {
        let v: Value = serde_json::from_str(&c.request(&ask).await).unwrap();
        if v["online"] == true {
            return ws;
        }
        assert!(Instant::now() < deadline, "{uid} not bound: {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `/stats` `commands` (this `/stats` included).
async fn commands(c: &mut PushClient) -> u64 {
    let v: Value = serde_json::from_str(&c.request("/stats").await).unwrap();
    stat(&v, "commands")
}

/// A `/stats` field.
fn stat(c: &Value, key: &str) -> u64 {
    c[key].as_u64().unwrap_or_else(|| panic!("no {key} in {c}"))
}

/// The table row that starts with `label`.
fn row<'a>(table: &'a str, label: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no row {label:?} in:\n{table}"))[label.len()..]
        .trim()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_the_table_and_json_with_the_secret_from_the_environment() {
    let daemon = daemon_with_secret(&[]).await;
    let mut tab = browser(&daemon, "u1").await;
    let mut push = backend(daemon.push_addr).await;
    for i in 0..3 {
        let line = format!("{{\"uid\":\"u1\",\"i\":{i}}}");
        assert_eq!(push.request(&line).await, "ok\n");
        assert_eq!(tab.recv_text().await, line);
    }
    assert_eq!(push.request("{\"uid\":\"nobody\"}").await, "fail\n");

    let run = control(&daemon, &["status", "--sample-ms", "200"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let t = &run.stdout;
    assert!(row(t, "uptime").starts_with("0d 00:00:"), "{t}");
    assert_eq!(row(t, "browser connections"), "1", "{t}");
    assert_eq!(row(t, "online uids"), "1", "{t}");
    assert_eq!(row(t, "groups"), "0", "{t}");
    // This test's backend and the status command's own connection.
    assert_eq!(row(t, "backend connections"), "2", "{t}");
    assert_eq!(row(t, "pushes ok"), "3 (0.0/s)", "{t}");
    assert_eq!(row(t, "pushes fail"), "1 (0.0/s)", "{t}");
    assert_eq!(row(t, "frames out"), "3 (0.0/s)", "{t}");
    assert_eq!(row(t, "evicted (slow)"), "0", "{t}");
    assert_eq!(row(t, "kicked"), "0", "{t}");
    assert_eq!(row(t, "refused connections"), "0", "{t}");
    let files = row(t, "open files");
    let (open, limit) = files.split_once(" of ").expect("N of M");
    assert!(open.parse::<u64>().unwrap() > 0, "{t}");
    assert!(
        limit.parse::<u64>().unwrap() >= open.parse().unwrap(),
        "{t}"
    );
    assert_eq!(t.lines().count(), 12, "{t}");
    assert!(run.stderr.is_empty(), "{run:?}");

    let run = control(&daemon, &["status", "--json", "--sample-ms", "200"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let v: Value = serde_json::from_str(run.stdout.trim_end())
        .unwrap_or_else(|e| panic!("not one JSON line: {e}: {run:?}"));
    assert_eq!(run.stdout.lines().count(), 1, "{run:?}");
    let mut keys: Vec<&str> = vec!["ok", "uptime_secs"];
    keys.extend(Metric::ALL.iter().map(|m| m.def().stats));
    keys.extend(["per_sec", "sample_ms"]);
    let got: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(got, keys, "{v}");
    assert_eq!(stat(&v, "pushes_ok"), 3);
    assert_eq!(stat(&v, "pushes_fail"), 1);
    assert_eq!(stat(&v, "connections"), 1);
    assert_eq!(stat(&v, "push_connections"), 2);
    let sample = stat(&v, "sample_ms");
    assert!((200..2000).contains(&sample), "{v}");
    assert_eq!(
        v["per_sec"],
        json!({"pushes_ok": 0.0, "pushes_fail": 0.0, "frames_out": 0.0, "binds": 0.0})
    );
}

/// The per-second figures are what happened between the two `/stats` a sample apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_rates_count_what_happens_during_the_sample() {
    const N: u64 = 40;
    let daemon = daemon_with_secret(&[]).await;
    let mut tab = browser(&daemon, "u1").await;
    let mut push = backend(daemon.push_addr).await;
    let before = commands(&mut push).await;
    let addr = daemon.push_addr.to_string();
    let status = tokio::spawn(async move {
        pushwire(
            &[
                "--push-listen",
                &addr,
                "status",
                "--json",
                "--sample-ms",
                "1500",
            ],
            Some(SECRET),
        )
        .await
    });
    // The status command's first /stats is a command that is not ours: then push.
    let deadline = Instant::now() + STEP;
    let mut ours = 0;
    loop {
        ours += 1;
        if commands(&mut push).await > before + ours {
            break;
        }
        assert!(Instant::now() < deadline, "status sent no /stats");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    for i in 0..N {
        let line = format!("{{\"uid\":\"u1\",\"i\":{i}}}");
        assert_eq!(push.request(&line).await, "ok\n");
        assert_eq!(tab.recv_text().await, line);
    }
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "pushing took {:?}: too slow to land inside the sample",
        started.elapsed()
    );
    let run = status.await.unwrap();
    assert_eq!(run.code, Some(0), "{run:?}");
    let v: Value = serde_json::from_str(run.stdout.trim_end()).unwrap();
    let secs = stat(&v, "sample_ms") as f64 / 1000.0;
    assert!((1.5..3.0).contains(&secs), "{v}");
    for key in ["pushes_ok", "frames_out"] {
        let rate = v["per_sec"][key].as_f64().unwrap();
        let counted = rate * secs;
        assert!(
            (counted - N as f64).abs() <= 0.05 * N as f64,
            "{key}: {rate}/s over {secs} s is {counted}, not {N}: {v}"
        );
    }
    assert_eq!(v["per_sec"]["pushes_fail"], 0.0, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_online_and_kick_against_the_real_binary() {
    let daemon = daemon_with_secret(&[]).await;
    let mut tab = browser(&daemon, "u1").await;
    let message = r#"{"msg":"héllo \"there\"", "n": 1}  "#;

    let run = control(&daemon, &["push", "u1", message]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout,
        "{\"ok\":true,\"uids\":1,\"reached\":1,\"connections\":1,\"refused\":0}\n"
    );
    assert_eq!(tab.recv_text().await, message);
    let run = control(&daemon, &["push", "nobody", "hi"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        run.stdout,
        "{\"ok\":false,\"uids\":1,\"reached\":0,\"connections\":0,\"refused\":0}\n"
    );
    // A line break would make the rest a line of its own: refused before sending.
    let run = control(&daemon, &["push", "u1", "hi\n/kick u1"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("must be one line"), "{run:?}");
    tab.expect_silence(Duration::from_millis(300)).await;

    let run = control(&daemon, &["online", "u1"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    // The key order of this line depends on the build (see the report): compare values.
    let v: Value = serde_json::from_str(run.stdout.trim_end()).unwrap();
    assert_eq!(
        v,
        json!({"ok": true, "uid": "u1", "online": true, "connections": 1})
    );
    let run = control(&daemon, &["online", "nobody"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stdout.contains("\"online\":false"), "{run:?}");

    let run = control(&daemon, &["kick", "u1", "logged out"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("\"connections\":1"), "{run:?}");
    assert_eq!(tab.expect_close().await, (4001, "logged out".to_owned()));
    let run = control(&daemon, &["online", "u1"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
}

/// With `--push-unix` the subcommands use the socket file: no secret needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_needs_no_secret() {
    let path = format!(
        "{}/pw-status-{}-{}.sock",
        env!("CARGO_TARGET_TMPDIR"),
        std::process::id(),
        free_addr().port()
    );
    let daemon = daemon_with_secret(&["--push-unix", &path]).await;
    let _tab = browser(&daemon, "u1").await;
    let run = pushwire(
        &[
            "--push-unix",
            &path,
            "status",
            "--json",
            "--sample-ms",
            "200",
        ],
        None,
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let v: Value = serde_json::from_str(run.stdout.trim_end()).unwrap();
    assert_eq!(stat(&v, "connections"), 1, "{v}");
    let run = pushwire(&["--push-unix", &path, "online", "u1"], None).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    drop(daemon);
    let _ = std::fs::remove_file(&path);
}

/// A missing or wrong secret is the daemon's refusal, said on stderr, exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_secret_is_a_clear_refusal() {
    let daemon = daemon_with_secret(&[]).await;
    let addr = daemon.push_addr.to_string();
    for (secret, why) in [
        (None, "authentication required: send /auth SECRET first"),
        (Some("wrong"), "bad secret"),
    ] {
        let run = pushwire(&["--push-listen", &addr, "status"], secret).await;
        assert_eq!(run.code, Some(2), "{run:?}");
        assert_eq!(run.stdout, "", "{run:?}");
        assert!(
            run.stderr.contains(&format!("daemon refused: {why}")),
            "{run:?}"
        );
    }
}

/// Nothing listening: a clear error on stderr and exit code 2, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_an_error_and_exit_2_quickly() {
    let addr = free_addr().to_string();
    let missing = format!("{}/pw-no-such.sock", env!("CARGO_TARGET_TMPDIR"));
    let cases: [&[&str]; 4] = [
        &["--push-listen", &addr, "status"],
        &["--push-listen", &addr, "push", "u1", "hi"],
        &["--push-listen", &addr, "online", "u1"],
        &["--push-unix", &missing, "kick", "u1"],
    ];
    for args in cases {
        let run = pushwire(args, Some(SECRET)).await;
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{run:?}");
        let line = run.stderr.trim_end();
        assert!(
            line.starts_with("pushwire: daemon not reachable: ")
                && (line.contains(&addr) || line.contains(&missing))
                && line.contains(if args[0] == "--push-unix" {
                    "No such file"
                } else {
                    "refused"
                }),
            "{args:?}: {run:?}"
        );
        assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
        assert!(run.took < Duration::from_secs(2), "{args:?}: {run:?}");
    }
}
