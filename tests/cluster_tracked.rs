//! `/push ID [ttl=MS] [ack=MS]` in cluster mode (`docs/protocol.md`, "Cluster mode"):
//! real `redis-server`s, real nodes, real sockets. A retry through another node is a
//! duplicate.
#[macro_use]
mod common;

use std::time::Duration;

use common::redis::*;
use common::*;

async fn node(url: &str, history_messages: usize) -> TestServer {
    TestServer::start_with(pushwire::Config {
        redis: Some(url.to_owned()),
        cluster_timeout: Duration::from_millis(2000),
        history_messages,
        ..pushwire::Config::default()
    })
    .await
}

fn j(uid: &str, m: &str) -> String {
    format!(r#"{{"uid":"{uid}","m":"{m}"}}"#)
}

/// The same `/push` through node A, then node B (and A again): delivered once; the
/// retries answer `duplicate` with the first outcome. Another line under the same ID is
/// a new push; a push that reached nobody is forgotten, so its retry runs.
async fn a_retry_through_another_node_is_a_duplicate(url: &str) {
    let (a, b) = (node(url, 0).await, node(url, 0).await);
    let mut tab = WsClient::connect(&b.ws_url()).await;
    tab.bind("d1", b.push_addr).await;
    let mut via_a = PushClient::connect(a.push_addr).await;
    let mut via_b = PushClient::connect(b.push_addr).await;
    // Bound on b; a hears of it through Redis.
    until_reply(
        a.push_addr,
        "/online d1",
        "\"connections\":1",
        STEP,
        "b holds d1",
    )
    .await;
    let first = via_a
        .request(&format!("/push 7 {}", j("d1", "hello")))
        .await;
    assert_eq!(
        first,
        "{\"ok\":true,\"result\":\"delivered\",\"connections\":1,\"refused\":0,\"id\":\"7\"}\n"
    );
    assert_eq!(tab.recv_text().await, j("d1", "hello"));
    for retry in [&mut via_b, &mut via_a] {
        let again = retry
            .request(&format!("/push 7 {}", j("d1", "hello")))
            .await;
        assert_eq!(
            again,
            "{\"ok\":true,\"result\":\"duplicate\",\"first\":\"delivered\",\"id\":\"7\"}\n"
        );
    }
    // Same ID, another line: a new push.
    let other = via_b
        .request(&format!("/push 7 {}", j("d1", "again")))
        .await;
    assert!(other.contains("\"result\":\"delivered\""), "{other}");
    assert_eq!(tab.recv_text().await, j("d1", "again"));
    // Offline: not remembered; its retry runs (and is offline again).
    for via in [&mut via_a, &mut via_b] {
        let gone = via.request(&format!("/push 8 {}", j("nobody", "x"))).await;
        assert!(gone.contains("\"result\":\"offline\""), "{gone}");
    }
    tab.expect_silence(Duration::from_millis(200)).await;
}

on_both!(a_retry_through_another_node_is_a_duplicate);

/// Redis unreachable: retries through the same node are still caught (its memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_retries_fall_back_to_the_node() {
    let dead = format!("redis://127.0.0.1:{}/", free_port());
    let n = TestServer::start_with(pushwire::Config {
        redis: Some(dead),
        cluster_timeout: Duration::from_millis(300),
        ..pushwire::Config::default()
    })
    .await;
    let mut tab = WsClient::connect(&n.ws_url()).await;
    tab.send_text("dn").await;
    until_reply(
        n.push_addr,
        "/online dn",
        "\"connections\":1",
        STEP,
        "dn bound",
    )
    .await;
    let mut push = PushClient::connect(n.push_addr).await;
    let first = push.request(&format!("/push 9 {}", j("dn", "one"))).await;
    assert!(first.contains("\"result\":\"delivered\""), "{first}");
    let again = push.request(&format!("/push 9 {}", j("dn", "one"))).await;
    assert!(again.contains("\"result\":\"duplicate\""), "{again}");
    assert!(again.contains("\"first\":\"delivered\""), "{again}");
    assert_eq!(tab.recv_text().await, j("dn", "one"));
    tab.expect_silence(Duration::from_millis(200)).await;
}
