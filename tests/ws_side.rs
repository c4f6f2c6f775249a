//! The WebSocket port: binding by first frame, refusals, keepalive.
mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uid_is_taken_exactly_as_sent() {
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    // bind() itself proves the exact string " uid " is bound (its probes target it).
    tab.bind(" uid ", server.push_addr).await;

    let mut push = PushClient::connect(server.push_addr).await;
    for other in [r#"{"uid":"uid"}"#, r#"{"uid":" uid"}"#, r#"{"uid":"uid "}"#] {
        assert_eq!(push.request(other).await, "fail\n", "{other}");
    }
    assert_eq!(push.request(r#"{"uid":" uid ","n":1}"#).await, "ok\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":" uid ","n":1}"#);

    // Control characters and newlines are part of a uid too.
    let mut odd = WsClient::connect(&server.ws_url()).await;
    odd.bind("a\nb\tc\r", server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"a\nb\tc\r"}"#).await, "ok\n");
    assert_eq!(odd.recv_text().await, r#"{"uid":"a\nb\tc\r"}"#);
    assert_eq!(push.request(r#"{"uid":"a\nb\tc"}"#).await, "fail\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_uid_is_closed_1008() {
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.send_text("").await;
    assert_eq!(tab.expect_close().await, (1008, "empty uid".to_owned()));
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":""}"#).await, "fail\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uid_length_limit_counts_bytes() {
    let server = TestServer::start().await; // max_uid_bytes = 256
    let mut push = PushClient::connect(server.push_addr).await;

    // 256 bytes (128 two-byte characters): accepted.
    let at = "é".repeat(128);
    let mut ok = WsClient::connect(&server.ws_url()).await;
    ok.bind(&at, server.push_addr).await;

    // 257 ASCII bytes: refused.
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.send_text(&"u".repeat(257)).await;
    let (code, reason) = tab.expect_close().await;
    assert_eq!(code, 1008);
    assert!(reason.starts_with("uid too long"), "reason {reason:?}");

    // 86 characters but 258 bytes: refused (the limit is in bytes).
    let over = "€".repeat(86);
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.send_text(&over).await;
    let (code, reason) = tab.expect_close().await;
    assert_eq!(code, 1008);
    assert!(reason.starts_with("uid too long"), "reason {reason:?}");
    let line = format!(r#"{{"uid":"{over}"}}"#);
    assert_eq!(push.request(&line).await, "fail\n");

    // A smaller configured limit is honoured.
    let small = TestServer::start_with(pushwire::Config {
        max_uid_bytes: 4,
        ..pushwire::Config::default()
    })
    .await;
    let mut tab = WsClient::connect(&small.ws_url()).await;
    tab.bind("abcd", small.push_addr).await;
    let mut tab = WsClient::connect(&small.ws_url()).await;
    tab.send_text("abcde").await;
    let (code, reason) = tab.expect_close().await;
    assert_eq!(code, 1008);
    assert!(reason.starts_with("uid too long"), "reason {reason:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_first_frame_is_closed_1003() {
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.send_binary(b"alice").await;
    assert_eq!(
        tab.expect_close().await,
        (1003, "uid must be a text frame".to_owned())
    );
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"alice"}"#).await, "fail\n");
}

fn quick_bind() -> pushwire::Config {
    pushwire::Config {
        bind_timeout: Duration::from_millis(300),
        ..pushwire::Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_socket_is_closed_at_bind_timeout() {
    let server = TestServer::start_with(quick_bind()).await;
    let started = Instant::now();
    let mut tab = WsClient::connect(&server.ws_url()).await;
    assert_eq!(
        tab.expect_close().await,
        (1008, "no uid within bind timeout".to_owned())
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "closed early: {took:?}");
    assert!(took < Duration::from_secs(2), "closed late: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_handshake_is_dropped_at_bind_timeout() {
    let server = TestServer::start_with(quick_bind()).await;

    // Nothing at all after TCP connect.
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(server.ws_addr)
        .await
        .unwrap();
    // Half an HTTP request (slowloris).
    let mut partial = tokio::net::TcpStream::connect(server.ws_addr)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut partial, b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();

    for (name, tcp) in [("silent", &mut silent), ("partial", &mut partial)] {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{name} connection still open after 2 s"));
        assert!(
            matches!(n, Ok(0) | Err(_)),
            "{name}: expected EOF, got {:?}",
            n.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_in_time_is_not_cut_by_the_bind_timeout() {
    let server = TestServer::start_with(quick_bind()).await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("ontime", server.push_addr).await;
    // Well past the bind timeout: still bound, nothing closed.
    tab.expect_silence(Duration::from_millis(600)).await;
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"ontime"}"#).await, "ok\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":"ontime"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_path_is_accepted() {
    let server = TestServer::start().await;
    let mut push = PushClient::connect(server.push_addr).await;
    for (i, path) in ["/ws", "/anything?x=1", "/a/b/c?uid=zzz#frag", "/"]
        .iter()
        .enumerate()
    {
        let uid = format!("path{i}");
        let mut tab = WsClient::connect(&server.ws_url_path(path)).await;
        tab.bind(&uid, server.push_addr).await;
        let line = format!(
            r#"{{"uid":"{uid}","path":{}}}"#,
            serde_json::to_string(path).unwrap()
        );
        assert_eq!(push.request(&line).await, "ok\n", "{path}");
        assert_eq!(tab.recv_text().await, line);
    }
    // The query string does not bind anything.
    assert_eq!(push.request(r#"{"uid":"zzz"}"#).await, "fail\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_frames_are_ignored() {
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("first", server.push_addr).await;

    tab.send_text("hello").await;
    tab.send_text("second").await;
    tab.send_text("").await;
    tab.send_binary(b"\x00\x01").await;
    tab.expect_silence(Duration::from_millis(200)).await;

    let mut push = PushClient::connect(server.push_addr).await;
    // Still bound to the first uid; later frames did not rebind.
    assert_eq!(push.request(r#"{"uid":"first","n":1}"#).await, "ok\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":"first","n":1}"#);
    assert_eq!(push.request(r#"{"uid":"hello"}"#).await, "fail\n");
    assert_eq!(push.request(r#"{"uid":"second"}"#).await, "fail\n");
}

fn fast_keepalive() -> pushwire::Config {
    pushwire::Config {
        ping_interval: Duration::from_millis(200),
        pong_timeout: Duration::from_millis(200),
        ..pushwire::Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responsive_client_is_pinged_and_stays_bound() {
    let server = TestServer::start_with(fast_keepalive()).await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("alive", server.push_addr).await;

    // Keep polling for 2 s (tungstenite answers each ping with a pong as we read).
    let until = Instant::now() + Duration::from_secs(2);
    let mut pings = 0;
    loop {
        match tokio::time::timeout_at(until, tab.ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Text(t)))) if is_probe(t.as_str()) => {}
            other => panic!("unexpected while idle: {other:?}"),
        }
    }
    assert!(pings >= 4, "only {pings} pings in 2 s at a 200 ms interval");

    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"alive"}"#).await, "ok\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":"alive"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peer_is_unbound_after_pong_timeout() {
    let server = TestServer::start_with(fast_keepalive()).await;
    let mut dead = RawWsClient::connect(server.ws_addr, "/").await;
    dead.send_text("dead").await;
    let mut push = PushClient::connect(server.push_addr).await;
    push_until(
        &mut push,
        r#"{"uid":"dead"}"#,
        "ok\n",
        Duration::from_secs(5),
    )
    .await;

    // From here on the peer neither reads nor answers pings.
    let started = Instant::now();
    push_until(
        &mut push,
        r#"{"uid":"dead"}"#,
        "fail\n",
        Duration::from_secs(5),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(150),
        "unbound before any pong could be missed: {took:?}"
    );
    // The TCP connection is gone too.
    dead.expect_eof(Duration::from_secs(5)).await;
}
