//! Server-Sent Events on the browser port (`GET` with `Accept: text/event-stream`): the
//! same uid rules, presence, history resume through `Last-Event-ID`, limits and
//! slow-consumer policy as a WebSocket tab. Raw sockets, and Chromium's `EventSource`.

mod common;

use std::time::Duration;

use common::chromium::{PageEvent, SeedPage};
use common::{Daemon, PushClient, STEP, TestCert, TestServer, free_addr, poll_until};
use pushwire::auth::Secret;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// One event as `EventSource` would see it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Event {
    event: Option<String>,
    id: Option<String>,
    data: String,
}

/// A byte stream an event stream can run on: TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A raw HTTP client reading an event stream.
struct SseClient {
    reader: BufReader<Box<dyn Io>>,
    /// The response head, as sent.
    head: String,
}

impl SseClient {
    /// `GET /events?QUERY` with `Accept: text/event-stream` and `extra` header lines.
    async fn open(server: &TestServer, query: &str, extra: &str) -> SseClient {
        SseClient::open_at(server.ws_addr, query, extra).await
    }

    /// [`SseClient::open`] on the browser port `addr`.
    async fn open_at(addr: std::net::SocketAddr, query: &str, extra: &str) -> SseClient {
        let tcp = TcpStream::connect(addr).await.unwrap();
        SseClient::open_on(Box::new(tcp), query, extra).await
    }

    /// [`SseClient::open`] on a connected stream.
    async fn open_on(mut tcp: Box<dyn Io>, query: &str, extra: &str) -> SseClient {
        let req = format!(
            "GET /events?{query} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n{extra}\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(tcp);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = timeout(STEP, reader.read_line(&mut line))
                .await
                .expect("no response head")
                .unwrap();
            head.push_str(&line);
            if n == 0 || line == "\r\n" {
                break;
            }
        }
        SseClient { reader, head }
    }

    fn status(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }

    /// The next event (comments and `retry:` skipped), or `None` at the end of the stream.
    async fn next(&mut self) -> Option<Event> {
        let mut ev = Event::default();
        let mut any = false;
        loop {
            let mut line = String::new();
            let n = timeout(STEP, self.reader.read_line(&mut line))
                .await
                .expect("no event within 5 s")
                .ok()?;
            if n == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if any {
                    return Some(ev);
                }
                continue;
            }
            if line.starts_with(':') || line.starts_with("retry:") {
                continue;
            }
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            any = true;
            match field {
                "event" => ev.event = Some(value.to_owned()),
                "id" => ev.id = Some(value.to_owned()),
                "data" => {
                    if !ev.data.is_empty() {
                        ev.data.push('\n');
                    }
                    ev.data.push_str(value);
                }
                other => panic!("unexpected field {other:?}"),
            }
        }
    }

    /// The status event: (kind, EPOCH:SEQ).
    async fn status_event(&mut self) -> (String, String) {
        let ev = self.next().await.expect("stream ended before its status");
        assert_eq!(ev.event.as_deref(), Some("status"), "{ev:?}");
        let (kind, at) = ev.data.split_once(' ').expect("status data");
        (kind.to_owned(), at.to_owned())
    }

    /// The next message, which must be `data` numbered `id`.
    async fn expect(&mut self, id: &str, data: &str) {
        let ev = self.next().await.expect("stream ended");
        assert_eq!(
            ev,
            Event {
                event: None,
                id: Some(id.to_owned()),
                data: data.to_owned()
            }
        );
    }
}

fn line(uid: &str, n: u64) -> String {
    format!(r#"{{"uid":"{uid}","n":{n}}}"#)
}

/// `/online UID` → its connections.
async fn count(push: &mut PushClient, uid: &str) -> u64 {
    let reply = push.request(&format!("/online {uid}")).await;
    let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
    v["connections"]
        .as_u64()
        .unwrap_or_else(|| panic!("/online: {v}"))
}

/// An event stream binds its uid (a connection in presence), gets every push as an
/// event numbered in the uid's history, broadcasts unnumbered, and leaves presence when
/// the client goes.
#[tokio::test]
async fn an_event_stream_binds_receives_and_counts_as_a_connection() {
    let server = TestServer::start().await;
    let mut es = SseClient::open(&server, "uid=alice", "").await;
    assert_eq!(es.status(), "HTTP/1.1 200 OK", "{}", es.head);
    assert!(
        es.head.contains("Content-Type: text/event-stream\r\n"),
        "{}",
        es.head
    );
    let (kind, at) = es.status_event().await;
    assert_eq!(kind, "new");
    let epoch = at.split(':').next().unwrap().to_owned();
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(count(&mut push, "alice").await, 1);
    for n in 1..=3 {
        assert_eq!(push.request(&line("alice", n)).await, "ok\n");
        es.expect(&format!("{epoch}:{n}"), &line("alice", n)).await;
    }
    assert!(
        push.request(r#"/broadcast {"all":1}"#)
            .await
            .contains("\"connections\":1")
    );
    assert_eq!(
        es.next().await,
        Some(Event {
            event: None,
            id: None,
            data: r#"{"all":1}"#.into()
        })
    );
    drop(es);
    poll_until(STEP, "alice offline", || async {
        count(&mut PushClient::connect(server.push_addr).await, "alice").await == 0
    })
    .await;
}

/// `Last-Event-ID` resumes from history, exactly once and in order; another epoch (or a
/// point the history no longer covers) is `not_recovered`, never a partial replay.
#[tokio::test]
async fn last_event_id_resumes_from_history() {
    let server = TestServer::start().await;
    let mut push = PushClient::connect(server.push_addr).await;
    let mut es = SseClient::open(&server, "uid=bob", "").await;
    let (_, at) = es.status_event().await;
    let epoch = at.split(':').next().unwrap().to_owned();
    for n in 1..=3 {
        push.request(&line("bob", n)).await;
        es.expect(&format!("{epoch}:{n}"), &line("bob", n)).await;
    }
    drop(es);
    poll_until(STEP, "bob offline", || async {
        count(&mut PushClient::connect(server.push_addr).await, "bob").await == 0
    })
    .await;
    // Offline: not delivered (fail), but kept in history.
    for n in 4..=6 {
        assert_eq!(push.request(&line("bob", n)).await, "fail\n");
    }
    let mut es =
        SseClient::open(&server, "uid=bob", &format!("Last-Event-ID: {epoch}:3\r\n")).await;
    assert_eq!(
        es.status_event().await,
        ("recovered".into(), format!("{epoch}:3"))
    );
    for n in 4..=6 {
        es.expect(&format!("{epoch}:{n}"), &line("bob", n)).await;
    }
    push.request(&line("bob", 7)).await;
    es.expect(&format!("{epoch}:7"), &line("bob", 7)).await;
    // Another epoch: told, nothing replayed, live goes on.
    let mut other =
        SseClient::open(&server, "uid=bob", "Last-Event-ID: 0123456789abcdef:2\r\n").await;
    assert_eq!(other.status_event().await.0, "not_recovered");
    push.request(&line("bob", 8)).await;
    other.expect(&format!("{epoch}:8"), &line("bob", 8)).await;
    es.expect(&format!("{epoch}:8"), &line("bob", 8)).await;
}

/// The uid rules of the WebSocket port: a uid is required, as long as --max-uid-bytes;
/// with a JWT secret only `?token=` binds; a bad resume point and an Origin off the
/// allow-list are refused; each with a status and a reason.
#[tokio::test]
async fn refusals_have_a_status_and_a_reason() {
    let server = TestServer::start_with(pushwire::Config {
        max_uid_bytes: 8,
        allowed_origins: Some(vec!["https://app.example".into()]),
        ..pushwire::Config::default()
    })
    .await;
    for (query, extra, status, reason) in [
        ("x=1", "", "400", "a uid is required"),
        ("uid=", "", "400", "empty uid"),
        ("uid=ninebytes", "", "400", "uid longer than 8 bytes"),
        ("uid=a", "Last-Event-ID: nope\r\n", "400", "want EPOCH:SEQ"),
        (
            "uid=a",
            "Origin: https://evil.example\r\n",
            "403",
            "origin not allowed",
        ),
    ] {
        let mut es = SseClient::open(&server, query, extra).await;
        assert!(es.status().contains(status), "{query} {extra}: {}", es.head);
        let mut body = String::new();
        let _ = timeout(
            STEP,
            tokio::io::AsyncReadExt::read_to_string(&mut es.reader, &mut body),
        )
        .await;
        assert!(body.contains(reason), "{query} {extra}: {body:?}");
    }
    // An allowed Origin is answered with it (CORS), so its page may read the stream.
    let es = SseClient::open(&server, "uid=a", "Origin: https://app.example\r\n").await;
    assert!(
        es.head
            .contains("Access-Control-Allow-Origin: https://app.example\r\n"),
        "{}",
        es.head
    );

    let secret = Secret::new("sse-secret-0123456789abcdef");
    let server = TestServer::start_with(pushwire::Config {
        jwt_secret: Some(secret.clone()),
        ..pushwire::Config::default()
    })
    .await;
    let es = SseClient::open(&server, "uid=alice", "").await;
    assert!(es.status().contains("401"), "{}", es.head);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let mut es =
        SseClient::open(&server, &format!("token={}", secret.mint("alice", exp)), "").await;
    assert_eq!(es.status(), "HTTP/1.1 200 OK");
    es.status_event().await;
    let forged = Secret::new("another-secret-0123456789").mint("alice", exp);
    let es = SseClient::open(&server, &format!("token={forged}"), "").await;
    assert!(es.status().contains("403"), "{}", es.head);
}

/// The slow-consumer policy of a tab: a stream that stops reading is closed once its
/// queue is full, and a kick ends it with an `event: close` naming the code; others are
/// unaffected.
#[tokio::test]
async fn a_stuck_stream_is_evicted_and_a_kick_says_why() {
    let server = TestServer::start_with(pushwire::Config {
        queue_depth: 8,
        ..pushwire::Config::default()
    })
    .await;
    let mut push = PushClient::connect(server.push_addr).await;
    let stuck = SseClient::open(&server, "uid=stuck", "").await;
    let mut fine = SseClient::open(&server, "uid=fine", "").await;
    fine.status_event().await;
    let big = format!(r#"{{"uid":"stuck","pad":"{}"}}"#, "x".repeat(200_000));
    let mut evicted = false;
    for _ in 0..2000 {
        push.request(&big).await;
        if count(&mut push, "stuck").await == 0 {
            evicted = true;
            break;
        }
    }
    assert!(evicted, "a stream that never reads was never evicted");
    drop(stuck);
    assert_eq!(push.request(&line("fine", 1)).await, "ok\n");
    let ev = fine.next().await.unwrap();
    assert_eq!(ev.data, line("fine", 1));
    assert!(
        push.request("/kick fine")
            .await
            .contains("\"connections\":1")
    );
    let ev = fine.next().await.expect("an event before the end");
    assert_eq!(ev.event.as_deref(), Some("close"), "{ev:?}");
    assert!(ev.data.starts_with("4001 "), "{ev:?}");
    assert_eq!(
        fine.next().await,
        None,
        "the stream ends after the close event"
    );
}

/// Chromium's own `EventSource`, from a page on another origin (so CORS is exercised):
/// receives, reconnects by itself after a kick and resumes through `Last-Event-ID` with
/// nothing lost or doubled, and after a daemon restart is told `not_recovered`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_event_source_receives_and_resumes() {
    let (ws_addr, push_addr) = (free_addr(), free_addr());
    let server = TestServer::start_on(pushwire::Config::default(), ws_addr, push_addr).await;
    let html = format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>EventSource</title>
<script>
var chain = Promise.resolve();
function report(path, text) {{
  chain = chain.then(function () {{ return fetch(path, {{ method: 'POST', body: String(text) }}); }})
               .catch(function () {{}});
}}
var es = new EventSource('http://127.0.0.1:{port}/events?uid=es1');
es.onmessage = function (e) {{ report('/alert', e.lastEventId.split(':')[1] + ' ' + e.data); }};
es.addEventListener('status', function (e) {{ report('/trouble', 'status ' + e.data.split(' ')[0]); }});
</script>
</head><body>EventSource</body></html>
"#,
        port = ws_addr.port()
    );
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut page = SeedPage::launch_html(http, html, &[]);
    async fn event(page: &mut SeedPage) -> String {
        match page.next_event_within(Duration::from_secs(15)).await {
            PageEvent::Alert(m) => format!("msg {m}"),
            PageEvent::Trouble(t) => t,
        }
    }
    assert_eq!(event(&mut page).await, "status new");
    let mut push = PushClient::connect(push_addr).await;
    for n in 1..=3 {
        assert_eq!(push.request(&line("es1", n)).await, "ok\n");
        assert_eq!(
            event(&mut page).await,
            format!("msg {n} {}", line("es1", n))
        );
    }
    // A kick: EventSource reconnects with Last-Event-ID; what came meanwhile is replayed.
    assert!(
        push.request("/kick es1")
            .await
            .contains("\"connections\":1")
    );
    for n in 4..=6 {
        push.request(&line("es1", n)).await;
    }
    assert_eq!(event(&mut page).await, "status recovered");
    for n in 4..=6 {
        assert_eq!(
            event(&mut page).await,
            format!("msg {n} {}", line("es1", n))
        );
    }
    // The daemon restarts: a new history, so the page hears not_recovered.
    drop(push);
    server.shutdown().await.unwrap();
    let _server = TestServer::start_on(pushwire::Config::default(), ws_addr, push_addr).await;
    assert_eq!(event(&mut page).await, "status not_recovered");
    let mut push = PushClient::connect(push_addr).await;
    common::push_until(&mut push, &line("es1", 7), "ok\n", STEP).await;
    assert_eq!(event(&mut page).await, format!("msg 1 {}", line("es1", 7)));
    assert!(
        !page.reports_within(Duration::from_millis(300)).await,
        "an unexpected report"
    );
}

/// Event streams share a payload as WebSocket tabs do: 128 streams sent one 1 MB
/// `/broadcast` keep no copy of it once the next small message is out (each kept a
/// write buffer the size of the largest batch it was ever sent: +128 MiB). The real
/// binary's resident memory, before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_keep_no_copy_of_a_large_broadcast() {
    const STREAMS: usize = 128;
    let daemon = Daemon::start(&[]).await;
    let mut streams = Vec::new();
    for i in 0..STREAMS {
        let mut es = SseClient::open_at(daemon.ws_addr, &format!("uid=big{i}"), "").await;
        es.status_event().await;
        streams.push(es);
    }
    let mut push = PushClient::connect(daemon.push_addr).await;
    let small = |n: u64| format!(r#"{{"small":{n}}}"#);
    let broadcast = async |push: &mut PushClient, data: &str| {
        let reply = push.request(&format!("/broadcast {data}")).await;
        let want = format!("\"connections\":{STREAMS}");
        assert!(reply.contains(&want), "{reply}");
    };
    // Warm up: every stream has written an event, so what follows is the broadcast's.
    broadcast(&mut push, &small(0)).await;
    for es in &mut streams {
        assert_eq!(es.next().await.unwrap().data, small(0));
    }
    let before = daemon.rss_kib();
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1_000_000));
    broadcast(&mut push, &big).await;
    for es in &mut streams {
        assert!(es.next().await.unwrap().data == big, "the large event");
    }
    broadcast(&mut push, &small(1)).await;
    for es in &mut streams {
        assert_eq!(es.next().await.unwrap().data, small(1));
    }
    let after = daemon.rss_kib();
    let grew = after.saturating_sub(before);
    eprintln!("daemon RSS {before} KiB -> {after} KiB ({STREAMS} streams, one 1 MB broadcast)");
    assert!(
        grew < 40 * 1024,
        "the daemon kept {grew} KiB after a 1 MB broadcast to {STREAMS} streams"
    );
    assert_eq!(push.request("/ping").await, "pong\n");
}

/// An event stream over the port's TLS (`wss://`'s): events of every size, up to one
/// that takes many TLS records and many writes, arrive whole and in order.
#[tokio::test]
async fn an_event_stream_over_tls() {
    let cert = TestCert::new("sse-tls");
    let server = TestServer::start_with(pushwire::Config {
        tls: Some(cert.files()),
        ..pushwire::Config::default()
    })
    .await;
    let tcp = TcpStream::connect(server.ws_addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(cert.client_config())
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let mut es = SseClient::open_on(Box::new(tls), "uid=secure", "").await;
    assert_eq!(es.status(), "HTTP/1.1 200 OK", "{}", es.head);
    let (_, at) = es.status_event().await;
    let epoch = at.split(':').next().unwrap().to_owned();
    let mut push = PushClient::connect(server.push_addr).await;
    for (n, size) in [(1u64, 10usize), (2, 20_000), (3, 900_000), (4, 3)] {
        let line = format!(r#"{{"uid":"secure","n":{n},"pad":"{}"}}"#, "x".repeat(size));
        assert_eq!(push.request(&line).await, "ok\n");
        es.expect(&format!("{epoch}:{n}"), &line).await;
    }
}
