//! Careless backends (issue 10): idle connections that hold every backend slot, names
//! without a length limit, an over-long command answered with a bare `fail`, uid arrays
//! parsed whole before their limit is checked, and stranger-supplied text written raw
//! into the log.
//!
//! Over real sockets against the real server on port 0 (the log tests run the real
//! binary); timeouts are configured short rather than faked, since paused time does not
//! mix with real sockets. Every wait is bounded.

mod common;
use common::*;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::process::Stdio;
use std::time::Duration;

use pushwire::wire::command::{self, Command, Limits};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::process::Command as Process;
use tokio::time::{Instant, timeout};

fn config() -> pushwire::Config {
    pushwire::Config::default()
}

/// A reply parsed as JSON; panics (with the reply) if it is not.
fn parse(reply: &str) -> Value {
    serde_json::from_str(reply).unwrap_or_else(|e| panic!("reply {reply:?} is not JSON: {e}"))
}

fn error(reply: &str) -> String {
    let v = parse(reply);
    assert_eq!(v["ok"], json!(false), "{reply}");
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {reply}"))
        .to_owned()
}

// ---------------------------------------------------------------------------------------
// Logs: stranger-supplied text never reaches the log raw
// ---------------------------------------------------------------------------------------

/// The real binary on port 0 with `RUST_LOG` and `args` (the harness's launcher, which
/// keeps stderr as raw bytes).
async fn binary(rust_log: &str, args: &[&str]) -> Daemon {
    Launch::new().rust_log(rust_log).args(args).start().await
}

/// Forges a log line of its own and recolours, rewrites or cuts the real one.
const EVIL: &str = "x\n2026-01-01T00:00:00.000000Z  WARN pushwire: FORGED admin logged in\r\u{1b}[31m\u{1b}[2K\u{0}\u{7}end";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stranger_supplied_text_never_reaches_the_log_raw() {
    for format in ["human", "json"] {
        let daemon = binary("debug", &["--max-groups", "1", "--log-format", format]).await;
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
        let log = daemon.wait_log("last-line", STEP).await;
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

// ---------------------------------------------------------------------------------------
// Idle backend connections: a timeout, a gauge, a warning
// ---------------------------------------------------------------------------------------

const IDLE: Duration = Duration::from_millis(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_backends_are_closed_so_a_new_backend_gets_in() {
    let server = TestServer::start_with(pushwire::Config {
        max_push_connections: 4,
        push_idle_timeout: Some(IDLE),
        ..config()
    })
    .await;
    // Four backends take every slot, each answered once, then go quiet.
    let mut idle = Vec::new();
    let mut first_quiet = None;
    for _ in 0..4 {
        let mut c = PushClient::connect(server.push_addr).await;
        assert_eq!(c.request("/ping").await, "pong\n");
        first_quiet.get_or_insert_with(Instant::now);
        idle.push(c);
    }
    let first_quiet = first_quiet.unwrap();

    // A fifth connects (the kernel backlog takes it) but is not served while they hold on...
    let mut fifth = PushClient::connect(server.push_addr).await;
    fifth.send_raw(b"/ping\n").await;
    let mut early = [0u8; 16];
    let early_read = timeout(IDLE / 2, fifth.stream.get_mut().read(&mut early)).await;
    assert!(
        early_read.is_err(),
        "the fifth backend was answered before any idle one closed: {early_read:?}"
    );

    // ...and is, once the idle timeout has passed.
    assert_eq!(fifth.read_reply().await, "pong\n");
    assert!(
        first_quiet.elapsed() >= IDLE,
        "answered after {:?}, before the idle timeout {IDLE:?}",
        first_quiet.elapsed()
    );
    // The idle ones were closed cleanly: no stray bytes, then EOF.
    for mut c in idle {
        assert_eq!(c.read_to_eof().await, b"");
    }
    // The gauge follows: only the fifth is open now.
    let mut stats = 0;
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        stats = parse(&fifth.request("/stats").await)["push_connections"]
            .as_u64()
            .expect("push_connections in /stats");
        if stats == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stats, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_backend_is_never_idle_and_a_partial_line_is_not_executed() {
    let server = TestServer::start_with(pushwire::Config {
        push_idle_timeout: Some(IDLE),
        ..config()
    })
    .await;
    let mut ws = WsClient::connect(&server.ws_url()).await;
    ws.bind("u1", server.push_addr).await;

    // Idle means idle, not old: a line every IDLE/3 keeps the connection for 3 x IDLE.
    let mut busy = PushClient::connect(server.push_addr).await;
    let until = Instant::now() + IDLE * 3;
    while Instant::now() < until {
        assert_eq!(busy.request("/ping").await, "pong\n");
        tokio::time::sleep(IDLE / 3).await;
    }

    // A line left unterminated is neither answered nor executed when the connection idles out.
    let mut partial = PushClient::connect(server.push_addr).await;
    partial.send_raw(br#"{"uid":"u1","msg":"half"}"#).await;
    let started = Instant::now();
    assert_eq!(
        partial.read_to_eof().await,
        b"",
        "the partial line was answered"
    );
    assert!(started.elapsed() >= IDLE - Duration::from_millis(50));
    ws.expect_silence(Duration::from_millis(100)).await;
    // Meanwhile the formerly busy one sat idle, and was closed too.
    assert_eq!(busy.read_to_eof().await, b"");
    let mut fresh = PushClient::connect(server.push_addr).await;
    assert_eq!(fresh.request(r#"{"uid":"u1","msg":"whole"}"#).await, "ok\n");
    assert_eq!(ws.recv_text().await, r#"{"uid":"u1","msg":"whole"}"#);
}

/// PHP-FPM keeps `STREAM_CLIENT_PERSISTENT` sockets across requests: when the server has
/// closed one for idleness, `stream_socket_client` notices and connects afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_php_persistent_socket_reconnects_after_the_idle_timeout() {
    let server = TestServer::start_with(pushwire::Config {
        push_idle_timeout: Some(Duration::from_millis(300)),
        ..config()
    })
    .await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("uid1", server.push_addr).await;
    let code = r#"
        function push($addr, $n) {
            $c = stream_socket_client("tcp://$addr", $errno, $errmsg, 1,
                STREAM_CLIENT_CONNECT | STREAM_CLIENT_PERSISTENT);
            fwrite($c, json_encode(array('uid' => 'uid1', 'n' => $n)) . "\n");
            return stream_socket_get_name($c, false) . ' ' . fgets($c);
        }
        echo push($argv[1], 1);
        usleep(1000000);
        echo push($argv[1], 2);
    "#;
    let out = timeout(
        Duration::from_secs(20),
        Process::new("php")
            .args(["-r", code, "--", &server.push_addr.to_string()])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("php timed out")
    .expect("run php (scripts/test.sh installs php-cli)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "php: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let (first, second) = (lines[0].split_once(' '), lines[1].split_once(' '));
    let ((port1, r1), (port2, r2)) = (first.unwrap(), second.unwrap());
    assert_eq!((r1, r2), ("ok", "ok"), "{stdout}");
    assert_ne!(
        port1, port2,
        "the second push reused the closed socket: {stdout}"
    );
    assert_eq!(tab.recv_text().await, r#"{"uid":"uid1","n":1}"#);
    assert_eq!(tab.recv_text().await, r#"{"uid":"uid1","n":2}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_connections_gauge_is_the_last_stats_key() {
    let server = TestServer::start().await;
    let mut a = PushClient::connect(server.push_addr).await;
    let mut b = PushClient::connect(server.push_addr).await;
    let mut c = PushClient::connect(server.push_addr).await;
    for p in [&mut b, &mut c] {
        assert_eq!(p.request("/ping").await, "pong\n");
    }
    let stats = parse(&a.request("/stats").await);
    let keys: Vec<&str> = stats
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // The keys /stats always had, in their order; later additions come after them.
    assert_eq!(
        keys[..18],
        [
            "ok",
            "uptime_secs",
            "connections",
            "uids",
            "groups",
            "pushes_ok",
            "pushes_fail",
            "bad_lines",
            "commands",
            "evicted",
            "kicked",
            "frames_out",
            "bytes_out",
            "ws_accepted",
            "binds",
            "refused_per_ip",
            "refused_pending",
            "push_connections",
        ]
    );
    assert_eq!(stats["push_connections"], json!(3));
    drop((b, c));
    let deadline = Instant::now() + STEP;
    loop {
        let n = parse(&a.request("/stats").await)["push_connections"].clone();
        if n == json!(1) {
            break;
        }
        assert!(Instant::now() < deadline, "push_connections stuck at {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_limit_warning_names_its_cause_once() {
    let daemon = binary(
        "info",
        &[
            "--max-push-connections",
            "2",
            "--push-idle-timeout-ms",
            "60000",
        ],
    )
    .await;
    let want = "push connection limit (2) reached: 2 connections open, idle timeout 60s";
    let mut a = PushClient::connect(daemon.push_addr).await;
    let mut b = PushClient::connect(daemon.push_addr).await;
    for p in [&mut a, &mut b] {
        assert_eq!(p.request("/ping").await, "pong\n");
    }
    let log = daemon.wait_log(want, STEP).await;
    assert!(String::from_utf8_lossy(&log).contains("--max-push-connections"));
    // The limit is left and hit again, over and over: still one warning.
    for _ in 0..3 {
        drop((a, b));
        // Not to synchronise the assertion: gives the loop the moment below its limit
        // that made the old code warn again.
        tokio::time::sleep(Duration::from_millis(100)).await;
        a = PushClient::connect(daemon.push_addr).await;
        b = PushClient::connect(daemon.push_addr).await;
        for p in [&mut a, &mut b] {
            assert_eq!(p.request("/ping").await, "pong\n");
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = daemon.log();
    assert_eq!(
        log.matches("limit (2) reached").count(),
        1,
        "rate-limited to one warning:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------
// Length limits on the names backends supply
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_names_uids_and_ids_are_bounded() {
    let server = TestServer::start().await;
    let mut push = PushClient::connect(server.push_addr).await;
    let long_group = "g".repeat(257);
    let long_uid = "u".repeat(257);
    let group_err = "group name too long (max 256 bytes)";
    let uid_err = "uid too long (max 256 bytes)";
    for (line, want) in [
        (format!("/join {long_group} u1"), group_err),
        (format!("/join {} u1", json!(long_group)), group_err),
        (format!("/group {long_group} hi"), group_err),
        (format!("/leave {long_group} u1"), group_err),
        (format!("/members {long_group}"), group_err),
        (format!("/join room {long_uid}"), uid_err),
        (format!("/join room [\"u1\",{}]", json!(long_uid)), uid_err),
        (format!("/send [\"u1\",{}] hi", json!(long_uid)), uid_err),
        (format!("/send {long_uid} hi"), uid_err),
        (format!("/leave room {long_uid}"), uid_err),
        (format!("/kick {long_uid}"), uid_err),
        (format!("/online {long_uid}"), uid_err),
        (
            format!("/push {} {{\"uid\":\"u1\"}}", "i".repeat(257)),
            "ID too long (max 256 bytes)",
        ),
    ] {
        let reply = push.request(&line).await;
        assert_eq!(
            reply,
            format!("{}\n", json!({"ok": false, "error": want})),
            "{}",
            &line[..40]
        );
    }
    // Nothing was created.
    assert_eq!(parse(&push.request("/count").await)["groups"], json!(0));
    // Exactly at the limits is fine.
    let group = "g".repeat(256);
    let uid = "u".repeat(256);
    assert_eq!(
        parse(
            &push
                .request(&format!("/join {group} [{}]", json!(uid)))
                .await
        ),
        json!({"ok": true, "group": group, "added": 1, "members": 1})
    );
    assert_eq!(
        parse(&push.request(&format!("/online {uid}")).await)["ok"],
        json!(true)
    );
    // A plain push to a uid no browser could bind is simply offline.
    let line = format!("{{\"uid\":{}}}", json!(long_uid));
    assert_eq!(push.request(&line).await, "fail\n");
    assert_eq!(
        parse(&push.request(&format!("/push 7 {line}")).await),
        json!({"ok": false, "result": "offline", "connections": 0, "refused": 0, "id": "7"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_name_limit_is_configurable() {
    let server = TestServer::start_with(pushwire::Config {
        max_group_bytes: 8,
        max_uid_bytes: 4,
        ..config()
    })
    .await;
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(
        error(&push.request("/join ninebytes u1").await),
        "group name too long (max 8 bytes)"
    );
    assert_eq!(
        error(&push.request("/join eightbyt [12345]").await),
        "uid too long (max 4 bytes)"
    );
    assert_eq!(
        parse(&push.request("/join eightbyt [1234,\"abcd\"]").await)["added"],
        json!(2)
    );
}

/// No reply quotes more than a bounded part of its line, whatever the line held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reply_echoes_unbounded_input() {
    let server = TestServer::start().await;
    let mut push = PushClient::connect(server.push_addr).await;
    let big = "x".repeat(200_000);
    let big_json = json!(big).to_string();
    let lines = [
        format!("/join {big} u1"),
        format!("/join {big_json} u1"),
        format!("/join [{big_json}] u1"),
        format!("/join room {big}"),
        format!("/join room [{big_json}]"),
        format!("/group {big} payload"),
        format!("/leave {big_json} u1"),
        format!("/members {big}"),
        format!("/online {big}"),
        format!("/online {big_json}"),
        format!("/kick {big} reason"),
        format!("/send [\"u1\",{big_json}] payload"),
        format!("/send [{big_json}"),
        format!("/push {big} {{\"uid\":\"u1\"}}"),
        format!("/push {big_json} {{\"uid\":\"u1\"}}"),
        format!("/push 1 {{\"uid\":{big_json}}}"),
        format!("/push 1 {{\"uid\":\"u1\",{big_json}}}"),
        format!("/{big}"),
        format!("/count {big}"),
        format!("/uids {big}"),
        format!("{{\"uid\":{big_json}}}"),
    ];
    for line in &lines {
        let reply = push.request(line).await;
        assert!(
            reply.len() <= 600,
            "{}... got a {}-byte reply: {}...",
            &line[..30],
            reply.len(),
            &reply[..200.min(reply.len())]
        );
    }
}

// ---------------------------------------------------------------------------------------
// An over-long command gets a JSON error, an over-long push keeps `fail`
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_command_gets_a_json_error() {
    let server = TestServer::start_with(pushwire::Config {
        max_line_bytes: 64,
        ..config()
    })
    .await;
    let want = "{\"ok\":false,\"error\":\"line too long (max 64 bytes)\"}\n";
    let mut push = PushClient::connect(server.push_addr).await;
    let command = format!("/join room [{}]", "\"u\",".repeat(40));
    assert_eq!(push.request(&command).await, want);
    // The seed's plain push keeps its byte-exact `fail`.
    let plain = format!("{{\"uid\":\"u1\",\"x\":\"{}\"}}", "y".repeat(100));
    assert_eq!(push.request(&plain).await, "fail\n");
    assert_eq!(push.request("/ping").await, "pong\n");

    // Arriving in pieces, discarded as it streams in: the first byte still decides.
    push.send_raw(b"/send [\"u1\"] ").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    push.send_raw(&[b'z'; 10_000]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    push.send_raw(b"\n{\"uid\":").await;
    push.send_raw(&[b'1'; 10_000]).await;
    push.send_raw(b"}\n").await;
    assert_eq!(push.read_reply().await, want);
    assert_eq!(push.read_reply().await, "fail\n");
    // Unterminated at EOF, too.
    push.send_raw(format!("/broadcast {}", "b".repeat(100)).as_bytes())
        .await;
    push.shutdown_write().await;
    assert_eq!(push.read_to_eof().await, want.as_bytes());

    // What PHP's json_decode(fgets($c), true) gets: an array, not null.
    let v = parse(want);
    assert_eq!(v["ok"], json!(false));
    let stats = {
        let mut p = PushClient::connect(server.push_addr).await;
        parse(&p.request("/stats").await)
    };
    assert_eq!(
        stats["bad_lines"],
        json!(2),
        "only the pushes count as bad lines: {stats}"
    );
}

// ---------------------------------------------------------------------------------------
// uid arrays: element by element, distinct uids counted
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_uids_count_once_against_the_list_limit() {
    let server = TestServer::start().await;
    let mut ws = WsClient::connect(&server.ws_url()).await;
    ws.bind("a", server.push_addr).await;
    let mut push = PushClient::connect(server.push_addr).await;
    let copies = vec!["a"; 2000];
    let list = serde_json::to_string(&copies).unwrap();
    assert_eq!(
        parse(&push.request(&format!("/send {list} hi")).await),
        json!({"ok": true, "uids": 1, "reached": 1, "connections": 1, "refused": 0})
    );
    assert_eq!(ws.recv_text().await, "hi");
    assert_eq!(
        parse(&push.request(&format!("/join room {list}")).await),
        json!({"ok": true, "group": "room", "added": 1, "members": 1})
    );
    // 1000 distinct among many copies is fine; the 1001st distinct one is not.
    let mut many: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    many.extend((0..1000).map(|i| i.to_string()));
    let ok = serde_json::to_string(&many).unwrap();
    assert_eq!(
        parse(&push.request(&format!("/kick {ok}")).await),
        json!({"ok": true, "uids": 1000, "connections": 0})
    );
    many.push("1000".into());
    let over = serde_json::to_string(&many).unwrap();
    assert_eq!(
        error(&push.request(&format!("/kick {over}")).await),
        "TARGETS: too many uids (at least 1001 distinct, max 1000)"
    );
}

/// Counts the bytes the current thread has allocated and not freed, and their peak, so
/// a test can see what one synchronous call costs (other threads do not disturb it).
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to `System` unchanged; the bookkeeping only touches
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most bytes live at once during `f`, above what was live before it.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get) - base;
    (out, peak.max(0) as usize)
}

#[test]
fn a_huge_uid_array_is_refused_without_being_parsed_whole() {
    let limits = Limits::default();
    let mb = 1 << 20;
    // ~1 MiB of distinct integers: refused at the 1001st, having held at most 1000.
    let mut distinct = String::from("/send [");
    let mut i = 0u64;
    while distinct.len() < mb - 16 {
        distinct.push_str(&format!("{i},"));
        i += 1;
    }
    distinct.push_str("0] x");
    let (result, peak) = peak_during(|| command::parse_with(&distinct, &limits));
    assert!(
        peak < 256 * 1024,
        "refusing a 1 MiB array held {peak} bytes at once"
    );
    assert_eq!(
        result.map_err(|e| e.to_string()),
        Err("TARGETS: too many uids (at least 1001 distinct, max 1000)".into())
    );

    // ~1 MiB of one uid repeated: accepted as one uid, with no more memory than that.
    let mut copies = String::from("/send [");
    while copies.len() < mb - 16 {
        copies.push_str("\"a\",");
    }
    copies.push_str("\"a\"] x");
    let (result, peak) = peak_during(|| command::parse_with(&copies, &limits));
    assert!(
        peak < 64 * 1024,
        "1 MiB of duplicates held {peak} bytes at once"
    );
    match result {
        Ok(Command::Send { uids, payload }) => {
            assert_eq!(uids.len(), 1);
            assert_eq!(&copies[payload..], "x");
        }
        other => panic!("{other:?}"),
    }

    // An over-long uid is refused as it is read, not after.
    let long = format!(
        "/send [\"ok\",\"{}\",{}0] x",
        "u".repeat(300),
        "1,".repeat(100_000)
    );
    let (result, peak) = peak_during(|| command::parse_with(&long, &limits));
    assert_eq!(
        result.map_err(|e| e.to_string()),
        Err("uid too long (max 256 bytes)".into())
    );
    assert!(peak < 64 * 1024, "held {peak} bytes");
}
