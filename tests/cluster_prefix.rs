//! `--redis-prefix` (`docs/cluster.md`): two clusters on one Redis, one with the default
//! prefix and one with another, the same uid online in both. Redis pub/sub ignores the
//! database number, so only the prefix keeps them apart: neither hears the other's
//! pushes, presence, groups, histories, acks or retry keys. On a standalone Redis and on
//! one three-master Redis Cluster; real nodes, real sockets.
#[macro_use]
mod common;

use std::time::Duration;

use common::redis::*;
use common::v1::{V1Client, V1Event};
use common::*;

/// An in-process node of the cluster named `prefix` on `url` (history on), once its
/// Redis link is up.
async fn node(url: &str, prefix: &str) -> TestServer {
    let server = TestServer::start_http(pushwire::Config {
        redis: Some(url.to_owned()),
        redis_prefix: pushwire::config::RedisPrefix::parse(prefix).expect("a good prefix"),
        cluster_timeout: Duration::from_millis(2000),
        history_messages: 100,
        ..pushwire::Config::default()
    })
    .await;
    let http = server.http_addr.expect("http door");
    poll_until(STEP, "the node ready (its Redis link up)", || async move {
        readyz(http).await.starts_with("HTTP/1.1 200")
    })
    .await;
    server
}

fn j(uid: &str, m: &str) -> String {
    format!(r#"{{"uid":"{uid}","m":"{m}"}}"#)
}

/// The next message a v1 tab gets, numbered or not (its payload).
async fn next_payload(tab: &mut V1Client) -> String {
    match tab.next().await {
        V1Event::Msg(_, p) | V1Event::Broadcast(p) => p,
        other => panic!("not a message: {other:?}"),
    }
}

/// Cluster X (default prefix `pw`, nodes x1, x2) and cluster Y (`stg`, nodes y1, y2) on
/// one Redis. `u` has a v1 tab in each (on x2 and y2); `xo` is online in X only.
async fn two_prefixes_on_one_redis_never_meet(url: &str) {
    let (x1, x2) = (node(url, "pw").await, node(url, "pw").await);
    let (y1, y2) = (node(url, "stg").await, node(url, "stg").await);
    let mut xu = V1Client::connect(x2.ws_addr, "u", None).await;
    let mut yu = V1Client::connect(y2.ws_addr, "u", None).await;
    let mut xo = WsClient::connect(&x1.ws_url()).await;
    xo.bind("xo", x1.push_addr).await;

    // Presence: each cluster counts and finds its own.
    let (x, y) = (x1.push_addr, y1.push_addr);
    until_reply(
        x,
        "/count",
        "\"uids\":2,\"connections\":2,",
        STEP,
        "X's count",
    )
    .await;
    until_reply(
        y,
        "/count",
        "\"uids\":1,\"connections\":1,",
        STEP,
        "Y's count",
    )
    .await;
    until_reply(y, "/online u", "\"connections\":1", STEP, "y1 sees u on y2").await;
    until_reply(x, "/online u", "\"connections\":1", STEP, "x1 sees u on x2").await;
    let mut px = PushClient::connect(x).await;
    let mut py = PushClient::connect(y).await;
    assert!(py.request("/online xo").await.contains("\"connections\":0"));
    let uids = py.request("/uids").await;
    assert!(
        uids.contains("\"count\":1,\"uids\":[\"u\"]"),
        "Y lists only its own: {uids}"
    );

    // Histories: each cluster numbers u's messages in its own.
    assert_ne!(xu.status.epoch, yu.status.epoch);
    for n in 1..=3 {
        let m = j("u", &format!("x{n}"));
        assert_eq!(px.request(&m).await, "ok\n");
        xu.expect_msg(xu.status.seq + n, &m).await;
    }
    let m = j("u", "y1");
    assert_eq!(py.request(&m).await, "ok\n");
    // The next message Y's tab gets is Y's, numbered right after its status (X's three
    // neither reached it nor took numbers in its history).
    yu.expect_msg(yu.status.seq + 1, &m).await;

    // Groups: a group of X is unknown to Y, and Y's /group reaches nobody.
    let joined = px.request(r#"/join g ["u","xo"]"#).await;
    assert!(joined.contains("\"members\":2"), "{joined}");
    assert_eq!(
        py.request("/members g").await,
        "{\"ok\":true,\"group\":\"g\",\"count\":0,\"uids\":[]}\n"
    );
    let sent = py.request(&format!("/group g {}", j("g", "y"))).await;
    assert!(sent.contains("\"members\":0,\"reached\":0"), "{sent}");
    let sent = px.request(&format!("/group g {}", j("g", "x"))).await;
    assert!(sent.contains("\"members\":2,\"reached\":2"), "{sent}");
    assert_eq!(next_payload(&mut xu).await, j("g", "x"));
    assert_eq!(xo.recv_text().await, j("g", "x"));

    // Broadcasts stay in their cluster.
    let b = py.request(&format!("/broadcast {}", j("all", "y"))).await;
    assert!(b.contains("\"connections\":1"), "{b}");
    assert_eq!(next_payload(&mut yu).await, j("all", "y"));

    // Retry keys: the same ID and line through both clusters is a first push in each.
    let line = format!("/push k1 {}", j("u", "same"));
    for (push, tab) in [(&mut px, &mut xu), (&mut py, &mut yu)] {
        let reply = push.request(&line).await;
        assert!(reply.contains("\"result\":\"delivered\""), "{reply}");
        assert_eq!(next_payload(tab).await, j("u", "same"));
    }

    // Acks: Y's tab acks what Y sent; X's wait, for a message only X's tab has, sees no
    // ack from Y's tab of the same uid.
    py.send_raw(format!("/push a1 ack=5000 {}\n", j("u", "ya")).as_bytes())
        .await;
    let V1Event::Msg(seq, _) = yu.next().await else {
        panic!("not numbered")
    };
    yu.ack(seq).await;
    let reply = py.read_reply().await;
    assert!(reply.contains("\"result\":\"acked\""), "{reply}");
    let reply = px
        .request(&format!("/push a2 ack=800 {}", j("u", "xa")))
        .await;
    assert!(reply.contains("\"result\":\"not_acked\""), "{reply}");
    assert_eq!(next_payload(&mut xu).await, j("u", "xa"));

    // Nothing of the other cluster arrived in between: the next message each tab gets is
    // its own cluster's.
    for (push, tab, m) in [(&mut px, &mut xu, "x-last"), (&mut py, &mut yu, "y-last")] {
        assert_eq!(push.request(&j("u", m)).await, "ok\n");
        assert_eq!(next_payload(tab).await, j("u", m));
    }
    // Y's broadcast never reached X's other uid either.
    let b = px.request(&format!("/broadcast {}", j("all", "x"))).await;
    assert!(b.contains("\"connections\":2"), "{b}");
    assert_eq!(xo.recv_text().await, j("all", "x"));
}

on_both!(two_prefixes_on_one_redis_never_meet);
