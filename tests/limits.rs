//! The two browser-side size limits with their own flags: bytes before the handshake
//! completes (`--max-handshake-bytes`) and message size after it (`--max-message-bytes`).

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn limits(handshake: usize, message: usize) -> pushwire::Config {
    pushwire::Config {
        max_handshake_bytes: handshake,
        max_message_bytes: message,
        ..Default::default()
    }
}

/// Sends an upgrade request padded with a header of `pad` bytes; returns what the server
/// answered before closing (empty if it just closed).
async fn upgrade_with_header(server: &TestServer, pad: usize) -> String {
    let mut tcp = TcpStream::connect(server.ws_addr).await.expect("connect");
    let req = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Cookie: {}\r\n\r\n",
        "c".repeat(pad)
    );
    // The server may close before reading it all; a failed write is part of the answer.
    let _ = tcp.write_all(req.as_bytes()).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_over_the_byte_limit_is_dropped_and_one_under_it_is_served() {
    let server = TestServer::start_with(limits(2048, 4096)).await;
    let big = upgrade_with_header(&server, 4096).await;
    assert!(
        !big.contains("101"),
        "oversized handshake was upgraded: {big:?}"
    );
    // A request just under the limit still upgrades.
    let mut raw = TcpStream::connect(server.ws_addr).await.expect("connect");
    let req = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Cookie: {}\r\n\r\n",
        "c".repeat(1500)
    );
    assert!(req.len() < 2048);
    raw.write_all(req.as_bytes()).await.expect("write");
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), raw.read_exact(&mut head))
        .await
        .expect("no answer")
        .expect("read");
    assert_eq!(&head, b"HTTP/1.1 101");
    // And ordinary clients bind and receive as usual.
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("fine", server.push_addr).await;
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"fine","n":1}"#).await, "ok\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":"fine","n":1}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_message_over_the_limit_drops_only_that_connection() {
    let server = TestServer::start_with(limits(16 * 1024, 1024)).await;
    let mut push = PushClient::connect(server.push_addr).await;
    let mut other = WsClient::connect(&server.ws_url()).await;
    other.bind("other", server.push_addr).await;

    // Under the limit: ignored, still bound.
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("chatty", server.push_addr).await;
    tab.send_text(&"x".repeat(1000)).await;
    assert_eq!(push.request(r#"{"uid":"chatty","n":1}"#).await, "ok\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":"chatty","n":1}"#);

    // Over it: that connection is dropped and unbound; the other one is untouched.
    tab.send_text(&"x".repeat(2000)).await;
    push_until(
        &mut push,
        r#"{"uid":"chatty","n":2}"#,
        "fail\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(push.request(r#"{"uid":"other","n":3}"#).await, "ok\n");
    assert_eq!(other.recv_text().await, r#"{"uid":"other","n":3}"#);
}
