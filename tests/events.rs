//! Events for the backend (docs/events.md), their delivery: the webhook sender against
//! real receivers over real sockets (HTTP and HTTPS, answering, failing, hanging), driven
//! through the library's `events::Hub` as the daemon's sources drive it; the `/events`
//! stream on a running server's push port; the flags and the reload rules of the events
//! secret with the real binary. The sources (a tab's life, groups, a cluster's presence)
//! are in `event_sources.rs` and `cluster_events.rs`.
mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::webhook::*;
use common::*;
use pushwire::auth::Secret;
use pushwire::events::{EventsConfig, Hub, Listener, What, signature};
use pushwire::metrics::{Metric, Metrics};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

/// A hub sending to `urls`, tuned by `tune`.
fn start_hub(
    urls: &[String],
    tune: impl FnOnce(&mut EventsConfig),
    tls: Option<Arc<rustls::ClientConfig>>,
) -> (Hub, Arc<Metrics>) {
    let mut config = EventsConfig {
        listeners: Listener::parse_all(urls).unwrap(),
        ..EventsConfig::default()
    };
    tune(&mut config);
    let metrics = Arc::new(Metrics::default());
    let hub = Hub::with_tls(
        &config,
        Some(Secret::new(SECRET)),
        "node-a".into(),
        metrics.clone(),
        tls,
    )
    .unwrap();
    (hub, metrics)
}

/// Waits until `metric` reaches `n` (a receiver records a request before its answer
/// reaches the sender, which counts it then).
async fn wait_metric(metrics: &Metrics, metric: Metric, n: u64) {
    let deadline = Instant::now() + STEP;
    while metrics.value(metric) < n {
        assert!(
            Instant::now() < deadline,
            "{metric:?} at {} of {n}",
            metrics.value(metric)
        );
        sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.value(metric), n, "{metric:?}");
}

fn online(hub: &Hub, uid: &str) {
    hub.publish(What::Online { uid: uid.into() }, hub.next_seq());
}

// ---------------------------------------------------------------------------------------
// Webhooks

/// 250 events of every kind but `message` arrive once each, in order, in batches of at
/// most `--events-batch`, every delivery signed, all over one keep-alive connection.
#[tokio::test]
async fn webhooks_arrive_signed_batched_in_order_over_one_connection() {
    let rx = Receiver::start(|_| Answer::Status(204)).await;
    let (hub, metrics) = start_hub(&[rx.url("/hook")], |c| c.delivery.batch_events = 40, None);
    let conn: Arc<str> = "node-a-1".into();
    for i in 0..50u64 {
        let uid: Arc<str> = format!("u{i}").into();
        let seq = hub.next_seq();
        hub.publish(What::Online { uid: uid.clone() }, seq);
        hub.publish(
            What::Connect {
                conn: conn.clone(),
                client_id: None,
            },
            1,
        );
        hub.publish(
            What::Bind {
                conn: conn.clone(),
                uid: uid.clone(),
                client_id: None,
            },
            2,
        );
        hub.publish(
            What::Message {
                conn: conn.clone(),
                uid: uid.clone(),
                data: "not wanted".into(),
            },
            3,
        );
        hub.publish(
            What::Close {
                conn: conn.clone(),
                uid: Some(uid.clone()),
                code: 1001,
                reason: None,
                client_id: None,
            },
            4,
        );
        hub.publish(What::Offline { uid }, hub.next_seq());
        // Trickle a little, so some batches are small and some full.
        if i % 10 == 0 {
            sleep(Duration::from_millis(5)).await;
        }
    }
    let taken = rx.wait_taken(250, STEP).await;
    assert_eq!(taken.len(), 250, "each once");
    let kinds: Vec<&str> = taken.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        &kinds[..5],
        ["online", "connect", "bind", "close", "offline"],
        "in order, no message (not asked for)"
    );
    let uids: Vec<&str> = taken
        .iter()
        .filter(|e| e["type"] == "online")
        .map(|e| e["uid"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (0..50).map(|i| format!("u{i}")).collect();
    assert_eq!(uids, want);
    // Per uid, the clock's seq increases from online to offline.
    assert!(taken[0]["seq"].as_u64() < taken[4]["seq"].as_u64());
    assert!(
        taken
            .iter()
            .all(|e| e["node"] == "node-a" && e["time_ms"].as_u64().is_some())
    );
    let got = rx.got();
    assert!(got.len() >= 250 / 40, "{} deliveries", got.len());
    for g in &got {
        let n = serde_json::from_slice::<Value>(&g.body).unwrap()["events"]
            .as_array()
            .unwrap()
            .len();
        assert!((1..=40).contains(&n), "batch of {n}");
    }
    let ids: std::collections::HashSet<&str> = got.iter().map(|g| g.delivery.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "a delivery id per batch");
    assert_eq!(
        rx.conns.load(Ordering::SeqCst),
        1,
        "one keep-alive connection"
    );
    assert_eq!(metrics.value(Metric::Events), 250);
    wait_metric(&metrics, Metric::EventsSent, 250).await;
    assert_eq!(hub.receivers()[0].state, "ok");
    assert_eq!(hub.queued(), 0);
}

/// A receiver that answers 500 and 503, then 429 with Retry-After, then recovers, loses
/// nothing that fit the queue, gets it in order, and the retries are counted.
#[tokio::test]
async fn a_failing_receiver_that_recovers_loses_nothing() {
    let rx = Receiver::start(|n| match n {
        0 => Answer::Status(500),
        1 => Answer::Status(503),
        2 => Answer::SlowDown(1),
        _ => Answer::Status(200),
    })
    .await;
    let (hub, metrics) = start_hub(&[rx.url("/")], |_| {}, None);
    online(&hub, "first");
    // Queued behind the failing batch: they go out together once it recovers.
    sleep(Duration::from_millis(100)).await;
    for i in 0..30 {
        online(&hub, &format!("u{i}"));
    }
    let taken = rx.wait_taken(31, Duration::from_secs(15)).await;
    let uids: Vec<&str> = taken.iter().map(|e| e["uid"].as_str().unwrap()).collect();
    assert_eq!(uids[0], "first");
    assert_eq!(uids.len(), 31, "each once: {uids:?}");
    let got = rx.got();
    assert_eq!(
        got.iter().map(|g| g.answered).collect::<Vec<_>>()[..4],
        [500, 503, 429, 200]
    );
    // The batch sent again is the same batch: same id, same body, each attempt signed
    // again; Retry-After was honoured.
    assert!(
        got[..4]
            .iter()
            .all(|g| g.delivery == got[0].delivery && g.body == got[0].body)
    );
    assert!(
        got[3].at - got[2].at >= Duration::from_millis(950),
        "waited {:?} after Retry-After: 1",
        got[3].at - got[2].at
    );
    wait_metric(&metrics, Metric::EventsSent, 31).await;
    assert_eq!(
        metrics.value(Metric::EventsRetried),
        3,
        "one event, sent again 3 times"
    );
    let dropped: u64 = [
        Metric::EventsDroppedFull,
        Metric::EventsDroppedRefused,
        Metric::EventsDroppedAttempts,
        Metric::EventsDroppedShutdown,
    ]
    .iter()
    .map(|&m| metrics.value(m))
    .sum();
    assert_eq!(dropped, 0);
    assert_eq!(hub.receivers()[0].state, "ok");
    assert_eq!(
        hub.receivers()[0].last_error.as_deref(),
        Some("answered 429")
    );
}

/// A 4xx other than 408/429 is the receiver refusing: not retried, dropped and counted;
/// the next batch goes on. After the attempts run out a batch is dropped too.
#[tokio::test]
async fn refusals_are_not_retried_and_attempts_are_bounded() {
    let rx = Receiver::start(|n| {
        if n == 0 {
            Answer::Status(401)
        } else {
            Answer::Status(204)
        }
    })
    .await;
    let (hub, metrics) = start_hub(&[rx.url("/")], |_| {}, None);
    online(&hub, "refused");
    sleep(Duration::from_millis(300)).await;
    online(&hub, "taken");
    let taken = rx.wait_taken(1, STEP).await;
    assert_eq!(taken[0]["uid"], "taken");
    assert_eq!(rx.got().len(), 2, "the refused batch was sent once");
    assert_eq!(metrics.value(Metric::EventsDroppedRefused), 1);
    assert!(
        hub.receivers()[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("401")
    );

    let rx = Receiver::start(|_| Answer::Status(502)).await;
    let (hub, metrics) = start_hub(&[rx.url("/")], |c| c.delivery.attempts = 3, None);
    online(&hub, "lost");
    wait_metric(&metrics, Metric::EventsDroppedAttempts, 1).await;
    assert_eq!(rx.got().len(), 3, "three attempts");
    assert_eq!(metrics.value(Metric::EventsRetried), 2);
    assert_eq!(hub.receivers()[0].state, "failing");
}

/// A receiver that takes the connection and never answers: each attempt ends at the
/// timeout, the queue fills, and what does not fit is dropped at once, counted, while the
/// publisher never waits.
#[tokio::test]
async fn a_hanging_receiver_fills_its_queue_and_costs_the_publisher_nothing() {
    let rx = Receiver::start(|_| Answer::Hang).await;
    let (hub, metrics) = start_hub(
        &[rx.url("/")],
        |c| {
            c.queue = 100;
            c.delivery.timeout = Duration::from_millis(200);
            c.delivery.attempts = 2;
        },
        None,
    );
    online(&hub, "first");
    // The first batch is out and hanging.
    let deadline = Instant::now() + STEP;
    while rx.got().is_empty() {
        assert!(Instant::now() < deadline, "no request");
        sleep(Duration::from_millis(10)).await;
    }
    for i in 0..10_000 {
        online(&hub, &format!("u{i}"));
    }
    assert_eq!(hub.queued(), 100);
    assert_eq!(metrics.value(Metric::EventsDroppedFull), 10_000 - 100);
    // Two attempts of 200 ms each, then the first batch is given up.
    let deadline = Instant::now() + STEP;
    while metrics.value(Metric::EventsDroppedAttempts) == 0 {
        assert!(Instant::now() < deadline, "attempts never ran out");
        sleep(Duration::from_millis(20)).await;
    }
    let r = &hub.receivers()[0];
    assert!(
        r.last_error
            .as_deref()
            .unwrap()
            .contains("gave up after 2 attempts (last: no answer within the timeout)"),
        "{r:?}"
    );
    // Each timed-out attempt left its connection: a new one per attempt.
    assert!(rx.conns.load(Ordering::SeqCst) >= 2);
}

/// A node of 20,000 tabs restarting: a `close` per tab at once, then an `offline` per uid
/// a debounce later, while the receiver is slow (here: it hangs). The default queue
/// (100,000 events, 32 MiB) takes all 40,000: none is dropped. What they hold is printed
/// (`-- --nocapture`): the bytes of their JSON, as `/status.json` shows them, and the
/// process's resident memory before and after (this test binary, other tests running).
#[tokio::test]
async fn a_mass_disconnect_fits_the_default_queue() {
    let rx = Receiver::start(|_| Answer::Hang).await;
    let (hub, metrics) = start_hub(&[rx.url("/")], |_| {}, None);
    assert_eq!(hub.receivers()[0].capacity, 100_000, "the default");
    online(&hub, "first");
    let deadline = Instant::now() + STEP;
    while rx.got().is_empty() {
        assert!(Instant::now() < deadline, "no request");
        sleep(Duration::from_millis(10)).await;
    }
    let rss = || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_owned()))
            .unwrap()
    };
    let before = rss();
    const TABS: u64 = 20_000;
    for n in 0..TABS {
        hub.publish(
            What::Close {
                conn: format!("c676de012cf256d3-{n}").into(),
                uid: Some(format!("user-{n}").into()),
                code: 1001,
                reason: Some("going away".into()),
                client_id: None,
            },
            3,
        );
    }
    for n in 0..TABS {
        offline(&hub, &format!("user-{n}"));
    }
    let r = &hub.receivers()[0];
    assert_eq!(metrics.value(Metric::EventsDroppedFull), 0, "{r:?}");
    assert_eq!(r.queued, 2 * TABS as usize);
    assert!(r.queued_bytes < r.capacity_bytes, "{r:?}");
    println!(
        "{} events queued: {} bytes of JSON ({} a event); VmRSS {before} before, {} after",
        r.queued,
        r.queued_bytes,
        r.queued_bytes / r.queued,
        rss()
    );
}

fn offline(hub: &Hub, uid: &str) {
    hub.publish(What::Offline { uid: uid.into() }, hub.next_seq());
}

/// The queue is bounded in bytes too: browsers' `message` events are up to 4 KiB each, so
/// 1,000 of them do not fit in 1 MiB; what does not is dropped at once and counted, and
/// what waits stays within the bound.
#[tokio::test]
async fn the_queue_is_bounded_in_bytes() {
    let rx = Receiver::start(|_| Answer::Hang).await;
    let (hub, metrics) = start_hub(
        &[rx.url("/#types=*,message")],
        |c| c.queue_bytes = 1024 * 1024,
        None,
    );
    online(&hub, "first");
    let deadline = Instant::now() + STEP;
    while rx.got().is_empty() {
        assert!(Instant::now() < deadline, "no request");
        sleep(Duration::from_millis(10)).await;
    }
    let data: Arc<str> = "x".repeat(4000).into();
    for n in 0..1000 {
        hub.publish(
            What::Message {
                conn: "c-1".into(),
                uid: "u".into(),
                data: data.clone(),
            },
            n,
        );
    }
    let r = &hub.receivers()[0];
    let dropped = metrics.value(Metric::EventsDroppedFull) as usize;
    assert!(r.queued_bytes <= 1024 * 1024, "{r:?}");
    assert!((250..=262).contains(&r.queued), "{r:?}");
    assert_eq!(r.queued + dropped, 1000, "{r:?}");
}

/// `https://` receivers: a certificate the sender trusts is used as such, one it does not
/// trust is refused (nothing delivered, the reason shown).
#[tokio::test]
async fn https_receivers_are_verified() {
    let cert = TestCert::new("events");
    let server = pushwire::tls::load(&cert.files()).unwrap();
    let rx = Receiver::start_tls(Some(server), |_| Answer::Status(200)).await;
    let url = format!("https://localhost:{}/hook", rx.addr.port());
    let (hub, metrics) = start_hub(
        std::slice::from_ref(&url),
        |_| {},
        Some(cert.client_config()),
    );
    online(&hub, "secure");
    let taken = rx.wait_taken(1, STEP).await;
    assert_eq!(taken[0]["uid"], "secure");
    wait_metric(&metrics, Metric::EventsSent, 1).await;

    // The system's authorities do not know the test certificate.
    let config = EventsConfig {
        listeners: Listener::parse_all(&[url]).unwrap(),
        delivery: pushwire::events::Delivery {
            attempts: 1,
            ..EventsConfig::default().delivery
        },
        ..EventsConfig::default()
    };
    let metrics = Arc::new(Metrics::default());
    let hub = Hub::new(
        &config,
        Some(Secret::new(SECRET)),
        "n".into(),
        metrics.clone(),
    )
    .unwrap();
    online(&hub, "not-trusted");
    wait_metric(&metrics, Metric::EventsDroppedAttempts, 1).await;
    let why = hub.receivers()[0].last_error.clone().unwrap();
    assert!(why.contains("TLS") && why.contains("certificate"), "{why}");
    assert_eq!(rx.taken().len(), 1, "only the trusted delivery");
}

/// At shutdown what is queued still goes out (within the deadline), and `serve` returns
/// after it.
#[tokio::test]
async fn queued_events_go_out_at_shutdown() {
    let rx = Receiver::start(|_| Answer::Status(204)).await;
    let mut config = pushwire::Config::default();
    config.events.listeners = Listener::parse_all(&[rx.url("/")]).unwrap();
    config.events_secret = Some(Secret::new(SECRET));
    let (server, state) = TestServer::start_with_state(config).await;
    for i in 0..500 {
        online(&state.events, &format!("u{i}"));
    }
    server.shutdown().await.unwrap();
    assert_eq!(rx.taken().len(), 500);
}

// ---------------------------------------------------------------------------------------
// The /events stream on the push port

async fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    timeout(STEP, r.read_line(&mut l))
        .await
        .expect("a line in time")
        .unwrap();
    l
}

/// `/events online,close` after other lines: their replies first, then the ok line, then
/// only the kinds asked for, one JSON object per line, in order.
#[tokio::test]
async fn the_events_stream_follows_a_filter() {
    let (server, state) = TestServer::start_with_state(pushwire::Config::default()).await;
    let tcp = TcpStream::connect(server.push_addr).await.unwrap();
    let mut r = BufReader::new(tcp);
    r.get_mut()
        .write_all(b"/ping\n/events online,nope\n/events online,close\n")
        .await
        .unwrap();
    assert_eq!(line(&mut r).await, "pong\n");
    assert!(
        line(&mut r)
            .await
            .contains(r#""error":"unknown event type \"nope\""#)
    );
    assert_eq!(
        line(&mut r).await,
        "{\"ok\":true,\"types\":[\"online\",\"close\"]}\n"
    );
    assert_eq!(state.metrics.value(Metric::EventStreams), 1);
    online(&state.events, "alice");
    state.events.publish(
        What::Connect {
            conn: "c1".into(),
            client_id: None,
        },
        1,
    );
    state.events.publish(
        What::Close {
            conn: "c1".into(),
            uid: None,
            code: 1006,
            reason: None,
            client_id: Some("7f00".into()),
        },
        2,
    );
    let first: Value = serde_json::from_str(&line(&mut r).await).unwrap();
    assert_eq!(
        (first["type"].as_str(), first["uid"].as_str()),
        (Some("online"), Some("alice"))
    );
    assert_eq!(first["node"].as_str(), Some(state.events.node()));
    let second: Value = serde_json::from_str(&line(&mut r).await).unwrap();
    assert_eq!(second["type"], "close");
    assert_eq!(second["code"], 1006);
    assert_eq!(second["client_id"], "7f00");
    // The reader leaves: the gauge follows.
    drop(r);
    poll_until(STEP, "the stream to end", || async {
        state.metrics.value(Metric::EventStreams) == 0
    })
    .await;
}

/// The push port's access rules hold: with a push secret `/events` before `/auth` is
/// refused and closed; after it, it streams. A half-closed reader (`nc -N`) still reads.
#[tokio::test]
async fn the_events_stream_needs_the_push_ports_access() {
    let config = pushwire::Config {
        push_secret: Some(Secret::new("door")),
        ..pushwire::Config::default()
    };
    let (server, state) = TestServer::start_with_state(config).await;
    let mut c = PushClient::connect(server.push_addr).await;
    c.send_raw(b"/events\n").await;
    assert!(c.read_reply().await.contains("authentication required"));
    assert_eq!(state.metrics.value(Metric::EventStreams), 0);

    let mut c = PushClient::connect(server.push_addr).await;
    c.send_raw(b"/auth door\n/events").await;
    c.shutdown_write().await;
    assert_eq!(c.read_reply().await, "{\"ok\":true}\n");
    assert!(c.read_reply().await.starts_with("{\"ok\":true,\"types\":["));
    poll_until(STEP, "the subscription", || async {
        state.metrics.value(Metric::EventStreams) == 1
    })
    .await;
    online(&state.events, "bob");
    assert!(c.read_reply().await.contains(r#""uid":"bob""#));
}

/// A reader that falls a whole ring behind is cut with a reason line and counted; a
/// shutdown ends the stream with its own line.
#[tokio::test]
async fn a_slow_events_reader_is_cut_with_a_reason() {
    let mut config = pushwire::Config::default();
    config.events.stream_buffer = 16;
    let (server, state) = TestServer::start_with_state(config).await;
    let tcp = TcpStream::connect(server.push_addr).await.unwrap();
    let mut r = BufReader::new(tcp);
    r.get_mut().write_all(b"/events\n").await.unwrap();
    line(&mut r).await;
    // On this test's single thread, the stream's task cannot run between these.
    for i in 0..100 {
        online(&state.events, &format!("u{i}"));
    }
    let mut last = String::new();
    loop {
        let l = line(&mut r).await;
        if l.is_empty() {
            break;
        }
        last = l;
    }
    assert_eq!(
        last,
        "{\"ok\":false,\"error\":\"too slow: 84 events lost; connect again\"}\n"
    );
    assert_eq!(state.metrics.value(Metric::EventStreamsCut), 1);

    let tcp = TcpStream::connect(server.push_addr).await.unwrap();
    let mut r = BufReader::new(tcp);
    r.get_mut().write_all(b"/events offline\n").await.unwrap();
    line(&mut r).await;
    let stopping = tokio::spawn(server.shutdown());
    assert_eq!(
        line(&mut r).await,
        "{\"ok\":false,\"error\":\"shutting down\"}\n"
    );
    stopping.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------
// The flags, with the real binary

/// `--events-url` without a secret stops the start and fails check-config; a bad URL or
/// filter is refused by name; a good one with a secret passes.
#[tokio::test]
async fn the_flags_are_checked() {
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pushwire"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap());
        cmd.output().unwrap()
    };
    let out = run(&[
        "--events-url",
        "http://127.0.0.1:9/h",
        "check-config",
        "--no-bind",
    ]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("--events-secret"), "{text}");
    for (bad, why) in [
        ("ftp://x/", "scheme"),
        ("http://x/#types=onlin", "unknown event type"),
        ("http://u:p@x/", "user info"),
    ] {
        let out = run(&[
            "--events-url",
            bad,
            "--events-secret",
            "s",
            "check-config",
            "--no-bind",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}");
        assert!(
            text.contains(why) && text.contains("--events-url"),
            "{bad}: {text}"
        );
    }
    let out = run(&[
        "--events-url",
        "http://127.0.0.1:9/a#types=online,offline",
        "--events-url",
        "http://127.0.0.1:9/b",
        "--events-secret",
        "s",
        "check-config",
        "--no-bind",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The variable takes several, separated by spaces; one twice is refused.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pushwire"));
    let out = cmd
        .args(["check-config", "--no-bind"])
        .env(
            "PUSHWIRE_EVENTS_URL",
            "http://127.0.0.1:9/a  http://127.0.0.1:9/a",
        )
        .env("PUSHWIRE_EVENTS_SECRET", "s")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("named twice"),
        "{text}"
    );
    // The daemon itself does not start without the secret.
    let (status, log) = Launch::new()
        .args(&["--events-url", "http://127.0.0.1:9/"])
        .run_to_exit(STEP)
        .await;
    assert!(
        !status.success() && log.contains("--events-secret"),
        "{log}"
    );
}

/// The events secret is reloadable like the others (a rotated file is re-read), and a
/// reload that would remove it while webhooks are configured is refused whole.
#[tokio::test]
async fn the_events_secret_reloads_but_never_goes_away() {
    let rx = Receiver::start(|_| Answer::Status(204)).await;
    let dir = Scratch::new("events-reload");
    let secret_file = dir.file("events.secret", "first\n");
    let env_file = dir.file("reload.env", "");
    let daemon = Launch::new()
        .env("PUSHWIRE_EVENTS_URL", &rx.url("/"))
        .env("PUSHWIRE_EVENTS_SECRET_FILE", &secret_file)
        .env("PUSHWIRE_RELOAD_ENV_FILE", &env_file)
        .start()
        .await;
    std::fs::write(&secret_file, "second\n").unwrap();
    daemon.signal("HUP").await;
    daemon.wait_log("events secret rotated", STEP).await;
    std::fs::write(&env_file, "PUSHWIRE_EVENTS_SECRET=none\n").unwrap();
    daemon.signal("HUP").await;
    let log = daemon
        .wait_log("cannot be removed while --events-url", STEP)
        .await;
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains("reload failed"), "{log}");
    assert!(!log.contains("second"), "no secret in the log: {log}");
}

/// What a reload applies is what the next delivery is signed with.
#[tokio::test]
async fn deliveries_are_signed_with_the_secret_in_force() {
    let rx = Receiver::start(|_| Answer::Status(204)).await;
    let mut config = pushwire::Config::default();
    config.events.listeners = Listener::parse_all(&[rx.url("/")]).unwrap();
    config.events_secret = Some(Secret::new(SECRET));
    let (_server, state) = TestServer::start_with_state(config).await;
    online(&state.events, "before");
    rx.wait_taken(1, STEP).await;
    let mut next = (*state.settings()).clone();
    next.events_secret = Some(Secret::new("rotated"));
    let changed = state.reload(next.clone(), None).unwrap();
    assert_eq!(
        changed.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["events secret rotated"]
    );
    online(&state.events, "after");
    let deadline = Instant::now() + STEP;
    while rx.got().len() < 2 {
        assert!(Instant::now() < deadline);
        sleep(Duration::from_millis(10)).await;
    }
    let g = &rx.got()[1];
    let now = g.timestamp.parse().unwrap();
    let check =
        |s: &str| signature::verify(&Secret::new(s), &g.timestamp, &g.signature, &g.body, now, 0);
    assert_eq!(check("rotated"), Ok(()));
    assert_eq!(check(SECRET), Err(signature::Refusal::BadSignature));
    next.events_secret = None;
    let refused = state.reload(next, None).unwrap_err();
    assert!(refused.contains("cannot be removed"), "{refused}");
    assert_eq!(
        state
            .settings()
            .events_secret
            .as_ref()
            .map(|s| s.reveal().to_vec()),
        Some(b"rotated".to_vec()),
        "nothing changed"
    );
}
