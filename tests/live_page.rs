//! The operators' live page, `GET /status` on the HTTP door, and `GET /status.json`
//! behind it (docs/http.md, "The live page"): headless Chromium loads the page, its
//! numbers follow the server as a browser connects and pushes go out; screenshots (a
//! wide window and a phone) are written next to the test binaries for the record. The
//! page and its data answer under the `/metrics` rules.
//!
//! These tests never skip: a missing `chromium` is a failure (`scripts/test.sh` installs
//! it).
mod common;

use std::time::Duration;

use common::chromium::Browser;
use common::*;
use pushwire::auth::Secret;
use pushwire::events::Listener;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw `GET path` with extra header lines; the status, the head and the body.
async fn get(addr: std::net::SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// The page's numbers move when a tab connects and pushes go out; it draws its charts and
/// shows a webhook receiver's trouble. Screenshots: `target/tmp/status-page-*.png`.
#[tokio::test]
async fn the_live_page_follows_the_server() {
    let mut config = pushwire::Config::default();
    // A receiver nobody listens on: the page shows it retrying.
    let dead = free_addr();
    config.events.listeners =
        Listener::parse_all(&[format!("http://{dead}/hooks/pushwire#types=online,offline")])
            .unwrap();
    config.events_secret = Some(Secret::new("s"));
    let (server, state) = TestServer::start_with_state(config).await;
    state.events.publish(
        pushwire::events::What::Online { uid: "x".into() },
        state.events.next_seq(),
    );
    let mut browser = Browser::launch_debuggable(&server.http_url("/status"), &[]);
    let mut page = browser.devtools().await;
    let text = |k: &str| format!("document.querySelector('[data-k=\"{k}\"]').textContent");
    page.wait_true(
        &format!(
            "document.getElementById('live').textContent === 'live' && {} === '0'",
            text("connections")
        ),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(page.eval(&text("uids")).await, "0");
    assert_eq!(page.eval(&text("node")).await, state.events.node());

    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("alice", server.push_addr).await;
    page.wait_true(
        &format!(
            "{} === '1' && {} === '1'",
            text("connections"),
            text("uids")
        ),
        Duration::from_secs(5),
    )
    .await;
    // Pushes per second: some go out, the rate shows them.
    let mut push = PushClient::connect(server.push_addr).await;
    for i in 0..20 {
        assert_eq!(
            push.request(&format!(r#"{{"uid":"alice","n":{i}}}"#)).await,
            "ok\n"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    page.wait_true(
        &format!("parseFloat({}) > 0", text("pushes_ok_rate")),
        Duration::from_secs(5),
    )
    .await;
    page.wait_true(
        "document.querySelectorAll('#presence polyline').length === 2",
        Duration::from_secs(5),
    )
    .await;
    page.wait_true(
        "document.getElementById('receivers').textContent.indexOf('retrying') >= 0 || \
         document.getElementById('receivers').textContent.indexOf('failing') >= 0",
        Duration::from_secs(10),
    )
    .await;
    let receivers = page
        .eval("document.getElementById('receivers').textContent")
        .await;
    let receivers = receivers.as_str().unwrap();
    assert!(
        receivers.contains(&format!("http://{dead}/hooks/pushwire")),
        "{receivers}"
    );
    assert!(receivers.contains("cannot connect"), "{receivers}");
    // A second tab of another uid, then the first one leaves.
    let mut bob = WsClient::connect(&server.ws_url()).await;
    bob.bind("bob", server.push_addr).await;
    page.wait_true(&format!("{} === '2'", text("uids")), Duration::from_secs(5))
        .await;
    tab.close().await;
    page.wait_true(
        &format!(
            "{} === '1' && {} === '1'",
            text("uids"),
            text("connections")
        ),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(page.eval("document.title").await, "pushwire status");

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    for (name, width, mobile) in [("wide", 1100, false), ("phone", 390, true)] {
        let png = page.screenshot(width, mobile).await;
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let path = dir.join(format!("status-page-{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
    // On a phone nothing needs sideways scrolling but the tables.
    assert_eq!(
        page.eval("document.documentElement.scrollWidth <= window.innerWidth")
            .await,
        true
    );
    drop(bob);
}

/// `/status` and `/status.json` answer under the `/metrics` rules: with a push secret a
/// request without it gets 401 with a Basic challenge (a browser asks its user), the
/// secret as Basic's password or as a Bearer token gets the page; the page is locked down
/// by its Content-Security-Policy; the JSON is `/stats` and more.
#[tokio::test]
async fn the_live_page_answers_under_the_metrics_rules() {
    let config = pushwire::Config {
        push_secret: Some(Secret::new("ops-s3cret")),
        ..pushwire::Config::default()
    };
    let server = TestServer::start_http(config).await;
    let addr = server.http_addr.unwrap();
    for path in ["/status", "/status.json"] {
        let (status, head, _) = get(addr, path, "").await;
        assert_eq!(status, 401, "{path}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: basic realm=\"pushwire\""),
            "{head}"
        );
        // "ops:wrong"
        let (status, _, _) = get(addr, path, "Authorization: Basic b3BzOndyb25n\r\n").await;
        assert_eq!(status, 401, "{path}");
    }
    // /metrics keeps its Bearer challenge.
    let (_, head, _) = get(addr, "/metrics", "").await;
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    // "ops:ops-s3cret"
    let basic = "Authorization: Basic b3BzOm9wcy1zM2NyZXQ=\r\n";
    let (status, head, body) = get(addr, "/status", basic).await;
    assert_eq!(status, 200);
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        lower.contains("content-security-policy: default-src 'none'; script-src 'sha256-"),
        "{head}"
    );
    assert!(lower.contains("cache-control: no-store"), "{head}");
    assert!(body.contains("<title>pushwire status</title>"));
    let (status, head, body) =
        get(addr, "/status.json", "Authorization: Bearer ops-s3cret\r\n").await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    for key in [
        "connections",
        "uids",
        "pushes_ok",
        "refused_push",
        "events_queued",
        "uptime_secs",
    ] {
        assert!(v["stats"][key].is_u64(), "{key}: {v}");
    }
    assert!(v["version"].as_str().unwrap().contains("(git "));
    assert!(v["node"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(v["cluster"].is_null(), "single node");
    assert_eq!(v["events"]["receivers"], serde_json::json!([]));
    // The refusals above were counted as push-access refusals.
    assert!(v["stats"]["refused_push"].as_u64().unwrap() >= 4, "{v}");
    let (status, head, _) = get(addr, "/status", basic).await;
    assert_eq!(status, 200, "{head}");
    // Other methods: 405 with Allow.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"POST /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ops-s3cret\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("allow: get, head"),
        "{answer}"
    );
}

/// `/status.json` of node A on a cluster: the body's JSON.
async fn status_of(d: &Daemon) -> Value {
    let answer = common::redis::http_get(d.http_addr.unwrap(), "/status.json").await;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

/// The row of `node` in `status`, if any.
fn row_of<'a>(status: &'a Value, node: &str) -> Option<&'a Value> {
    status["cluster"]["nodes"]
        .as_array()?
        .iter()
        .find(|r| r["node"] == node)
}

/// Polls A's `/status.json` until `ok` holds for it (5 s).
async fn status_until(a: &Daemon, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = status_of(a).await;
        if ok(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:#}",
            s["cluster"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// In cluster mode each node's page shows a row per node (what each writes to Redis once
/// a second): a second node's row appears on the first's page, its numbers move when a
/// tab connects to it and pushes go out through it, its Redis link is shown, and it is
/// gone once it shuts down. The page draws the rows (headless Chromium).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_nodes_row_shows_and_moves_in_cluster_mode() {
    let redis = common::redis::Redis::start().await;
    let a = Launch::new().args(&["--redis", &redis.url()]).start().await;
    let b = Launch::new().args(&["--redis", &redis.url()]).start().await;
    let a_node = status_of(&a).await["node"].as_str().unwrap().to_owned();
    let b_node = status_of(&b).await["node"].as_str().unwrap().to_owned();
    let s = status_until(&a, "both rows", |s| {
        row_of(s, &b_node).is_some() && row_of(s, &a_node).is_some()
    })
    .await;
    assert_eq!(
        s["cluster"]["nodes"][0]["node"],
        a_node.as_str(),
        "its own first"
    );
    let b_row = row_of(&s, &b_node).unwrap();
    assert_eq!(b_row["connections"], 0);
    assert_eq!(b_row["redis"], "up");
    assert!(b_row["age_ms"].as_u64().unwrap() < 5000, "{b_row}");

    let mut browser = Browser::launch_debuggable(&a.http_url("/status"), &[]);
    let mut page = browser.devtools().await;
    page.wait_true(
        "document.querySelectorAll('#nodes tbody tr').length === 2 && !document.getElementById('nodes').hidden",
        Duration::from_secs(10),
    )
    .await;

    let mut tab = WsClient::connect(&b.ws_url()).await;
    tab.bind("on-b", b.push_addr).await;
    let mut push = PushClient::connect(b.push_addr).await;
    for i in 0..10 {
        assert_eq!(
            push.request(&format!(r#"{{"uid":"on-b","n":{i}}}"#)).await,
            "ok\n"
        );
    }
    let s = status_until(&a, "B's tab and pushes", |s| {
        row_of(s, &b_node).is_some_and(|r| {
            r["connections"] == 1 && r["uids"] == 1 && r["pushes_ok"].as_u64() >= Some(10)
        })
    })
    .await;
    assert_eq!(row_of(&s, &a_node).unwrap()["connections"], 0);
    // B's row on A's page: not this node, one connection, one uid, Redis up, live.
    page.wait_true(
        &format!(
            "(function () {{ var t = document.querySelectorAll('#nodes tr[data-node=\"{b_node}\"] td'); \
             return t.length === 7 && t[0].textContent.indexOf('(this one)') < 0 && \
             t[1].textContent === '1' && t[2].textContent === '1' && t[5].textContent === 'up' && \
             t[6].textContent === 'live'; }})()"
        ),
        Duration::from_secs(5),
    )
    .await;

    // B leaves: its row goes at once.
    b.sigterm().await;
    status_until(&a, "B's row gone", |s| row_of(s, &b_node).is_none()).await;
    drop(tab);
}
