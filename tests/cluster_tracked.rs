//! `/push ID [ttl=MS] [ack=MS]` in cluster mode (`docs/protocol.md`, "Cluster mode"):
//! real `redis-server`s, real nodes, real sockets. A retry through another node is a
//! duplicate.
#[macro_use]
mod common;

use std::time::Duration;

use common::redis::*;
use common::v1::V1Client;
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::time::sleep;

async fn node(url: &str, history_messages: usize) -> TestServer {
    cluster_node(url, history_messages).await
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

/// `ttl=` to a uid no node holds: `queued`, numbered in the uid's history in Redis
/// (created for it); the next bind on any node gets the queue once, in order (a v1 tab
/// as `m SEQ` after a `new` status just below it, a seed tab the bare lines); past its
/// TTL an entry is gone. Plain lines to an offline uid still answer `fail`.
async fn the_offline_queue_is_shared_by_the_nodes(url: &str) {
    let (a, b) = (node(url, 100).await, node(url, 100).await);
    for n in [&a, &b] {
        // Up: a v1 bind read a history from Redis.
        let warm = V1Client::connect(n.ws_addr, "warm", None).await;
        assert_ne!(warm.status.epoch, "0000000000000000", "redis up");
    }
    let mut via_a = PushClient::connect(a.push_addr).await;
    let mut via_b = PushClient::connect(b.push_addr).await;
    let q1 = via_a
        .request(&format!("/push 1 ttl=5000 {}", j("q1", "one")))
        .await;
    assert!(q1.contains("\"result\":\"queued\""), "{q1}");
    assert!(q1.contains("\"seq\":1,"), "{q1}");
    let q2 = via_b
        .request(&format!("/push 2 ttl=5000 {}", j("q1", "two")))
        .await;
    assert!(q2.contains("\"result\":\"queued\""), "{q2}");
    assert!(q2.contains("\"seq\":2,"), "{q2}");
    assert_eq!(via_a.request(&j("q1", "plain")).await, "fail\n");
    // A v1 tab binds on b: the queue (not the plain line), in order, then live.
    let mut tab = V1Client::connect(b.ws_addr, "q1", None).await;
    assert_eq!(tab.status.kind, "new");
    assert_eq!(tab.status.seq, 0);
    tab.expect_msg(1, &j("q1", "one")).await;
    tab.expect_msg(2, &j("q1", "two")).await;
    assert_eq!(via_a.request(&j("q1", "live")).await, "ok\n");
    tab.expect_msg(4, &j("q1", "live")).await;
    // Once: a second tab, on a, gets only the status.
    let mut again = V1Client::connect(a.ws_addr, "q1", None).await;
    assert_eq!(again.status.seq, 4);
    again.tab.expect_silence(Duration::from_millis(200)).await;

    // A seed tab takes a queue too, whichever node queued it.
    let q3 = via_a
        .request(&format!("/push 3 ttl=5000 {}", j("q3", "seed")))
        .await;
    assert!(q3.contains("\"result\":\"queued\""), "{q3}");
    let mut seed = WsClient::connect(&b.ws_url()).await;
    seed.send_text("q3").await;
    assert_eq!(seed.recv_text().await, j("q3", "seed"));
    seed.expect_silence(Duration::from_millis(200)).await;

    // Past its TTL: gone.
    let q4 = via_b
        .request(&format!("/push 4 ttl=200 {}", j("q4", "late")))
        .await;
    assert!(q4.contains("\"result\":\"queued\""), "{q4}");
    sleep(Duration::from_millis(400)).await;
    let mut late = V1Client::connect(a.ws_addr, "q4", None).await;
    // The history made for it lived as long as its TTL: a new one.
    assert_eq!(late.status.kind, "new");
    late.tab.expect_silence(Duration::from_millis(300)).await;
}

on_both!(the_offline_queue_is_shared_by_the_nodes);

/// Redis unreachable: retries through the same node are still caught (its memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_retries_fall_back_to_the_node() {
    let n = node_without_redis(Duration::from_millis(300)).await;
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

/// With the retry window on, each cluster `/push` claims its key in Redis before it
/// runs; the connection's lines still run in order behind it, so pipelined `/push`es
/// mixed with plain lines reach a tab on the other node in the order they were sent.
async fn pipelined_pushes_with_retry_claims_keep_their_order(url: &str) {
    let (a, b) = (node(url, 0).await, node(url, 0).await);
    let mut tab = WsClient::connect(&b.ws_url()).await;
    tab.bind("ord", b.push_addr).await;
    until_reply(
        a.push_addr,
        "/online ord",
        "\"connections\":1",
        STEP,
        "b holds ord",
    )
    .await;
    let mut push = PushClient::connect(a.push_addr).await;
    const N: usize = 300;
    let lines: Vec<String> = (0..N).map(|i| j("ord", &i.to_string())).collect();
    let mut batch = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i % 3 == 0 {
            batch.push_str(line); // a plain line between the /push ones
        } else {
            batch.push_str(&format!("/push o{i} {line}"));
        }
        batch.push('\n');
    }
    push.send_raw(batch.as_bytes()).await;
    for i in 0..N {
        let reply = push.read_reply().await;
        assert!(
            reply == "ok\n" || reply.contains("\"result\":\"delivered\""),
            "reply {i}: {reply}"
        );
    }
    for (i, want) in lines.iter().enumerate() {
        assert_eq!(tab.recv_text().await, *want, "frame {i}");
    }
}

on_both!(pipelined_pushes_with_retry_claims_keep_their_order);

/// `ack=` across nodes: a v1 tab on node B acknowledges a push accepted by node A, whose
/// reply then says `acked` with the tab count; a push no tab acknowledges is `not_acked`
/// once its wait is over, and the lines behind it are not held up.
async fn acks_reach_the_node_that_accepted_the_push(url: &str) {
    let (a, b) = (node(url, 100).await, node(url, 100).await);
    let mut tab = V1Client::connect(b.ws_addr, "ak", None).await;
    let epoch = tab.status.epoch.clone();
    until_reply(
        a.push_addr,
        "/online ak",
        "\"connections\":1",
        STEP,
        "b holds ak",
    )
    .await;
    let mut push = PushClient::connect(a.push_addr).await;
    push.send_raw(format!("/push k1 ack=5000 {}\n", j("ak", "one")).as_bytes())
        .await;
    let seq = match tab.next().await {
        common::v1::V1Event::Msg(seq, payload) => {
            assert_eq!(payload, j("ak", "one"));
            seq
        }
        other => panic!("{other:?}"),
    };
    let started = std::time::Instant::now();
    tab.ack(seq).await;
    let v: serde_json::Value = serde_json::from_str(push.read_reply().await.trim_end()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "{v}");
    assert_eq!(
        v,
        serde_json::json!({"ok":true,"result":"acked","connections":1,"refused":0,
            "acks":1,"seq":seq,"epoch":epoch,"id":"k1"})
    );
    // Not acknowledged: not_acked after the wait; the line behind it arrives at once.
    push.send_raw(
        format!(
            "/push k2 ack=1500 {}\n{}\n",
            j("ak", "two"),
            j("ak", "three")
        )
        .as_bytes(),
    )
    .await;
    let sent = std::time::Instant::now();
    tab.expect_msg(seq + 1, &j("ak", "two")).await;
    tab.expect_msg(seq + 2, &j("ak", "three")).await;
    assert!(sent.elapsed() < Duration::from_millis(1000), "held up");
    let v: serde_json::Value = serde_json::from_str(push.read_reply().await.trim_end()).unwrap();
    assert!(sent.elapsed() >= Duration::from_millis(1500), "{v}");
    assert_eq!(
        (v["result"].as_str(), v["acks"].as_u64()),
        (Some("not_acked"), Some(0)),
        "{v}"
    );
    assert_eq!(push.read_reply().await, "ok\n");
}

on_both!(acks_reach_the_node_that_accepted_the_push);

/// `/push ack=` to a uid no tab holds, whose history is kept: the same meaning as on a
/// single node (`tests/history.rs`, the twin of this case). The message is kept, and the
/// reply waits: a tab that resumes within the wait, on any node, gets it in its replay
/// and may acknowledge it (`acked`, no live connection took it). Cluster mode used to
/// answer `offline` at once.
async fn an_ack_wait_for_a_uid_with_history_waits_for_a_resuming_tab(url: &str) {
    let (a, b) = (node(url, 100).await, node(url, 100).await);
    // The uid gets a history: a v1 tab binds on b, then leaves.
    let first = V1Client::connect(b.ws_addr, "back", None).await;
    let since = first.status.point();
    drop(first);
    for n in [&a, &b] {
        until_reply(
            n.push_addr,
            "/online back",
            "\"connections\":0",
            STEP,
            "back offline",
        )
        .await;
    }
    let mut push = PushClient::connect(a.push_addr).await;
    let sent = std::time::Instant::now();
    push.send_raw(format!("/push w1 ack=8000 {}\n", j("back", "kept")).as_bytes())
        .await;
    // Still waiting while nobody is there: the tab resumes a while later, on b.
    sleep(Duration::from_millis(300)).await;
    let mut tab = V1Client::connect(b.ws_addr, "back", Some(&since)).await;
    assert_eq!(tab.status.kind, "recovered");
    let seq = tab.status.seq + 1;
    tab.expect_msg(seq, &j("back", "kept")).await;
    tab.ack(seq).await;
    let v: serde_json::Value = serde_json::from_str(
        push.read_reply_within(Duration::from_secs(10))
            .await
            .trim_end(),
    )
    .unwrap();
    assert!(sent.elapsed() >= Duration::from_millis(300), "{v}");
    assert_eq!(
        (
            v["result"].as_str(),
            v["acks"].as_u64(),
            v["connections"].as_u64(),
            v["seq"].as_u64()
        ),
        (Some("acked"), Some(1), Some(0), Some(seq)),
        "{v}"
    );
    // No history at all: nothing can acknowledge it, offline at once.
    let v = push
        .request(&format!("/push w2 ack=8000 {}", j("never", "x")))
        .await;
    assert!(v.contains("\"result\":\"offline\""), "{v}");
}

on_both!(an_ack_wait_for_a_uid_with_history_waits_for_a_resuming_tab);

/// Pipelined `ack=` waits in cluster mode run side by side, each bounded from when its
/// line ran: five waits of 1.5 s to a tab that never acks are all answered at about
/// 1.5 s (they were answered one wait after another: 1.5, 3, ... 7.5 s).
async fn pipelined_ack_waits_run_side_by_side(url: &str) {
    let a = node(url, 100).await;
    let mut tab = V1Client::connect(a.ws_addr, "pa", None).await;
    assert_ne!(tab.status.epoch, "0000000000000000", "redis up");
    let mut push = PushClient::connect(a.push_addr).await;
    let lines: String = (1..=5)
        .map(|n| format!("/push p{n} ack=1500 {}\n", j("pa", &n.to_string())))
        .collect();
    let sent = std::time::Instant::now();
    push.send_raw(lines.as_bytes()).await;
    for n in 1..=5u64 {
        tab.expect_msg(tab.status.seq + n, &j("pa", &n.to_string()))
            .await;
    }
    for n in 1..=5 {
        let reply = push.read_reply_within(Duration::from_secs(15)).await;
        let at = sent.elapsed();
        let v: serde_json::Value = serde_json::from_str(reply.trim_end()).unwrap();
        assert_eq!(
            (v["result"].as_str(), v["id"].as_str()),
            (Some("not_acked"), Some(format!("p{n}").as_str())),
            "{v}"
        );
        assert!(at >= Duration::from_millis(1500), "reply {n} at {at:?}");
        assert!(
            at < Duration::from_millis(2900),
            "reply {n} at {at:?}: the waits ran one after another"
        );
    }
}

on_both!(pipelined_ack_waits_run_side_by_side);

/// In cluster mode an ack costs Redis a script only when it raises what the tab
/// acknowledged, and never more than one at a time per tab, the latest winning: 2,000
/// rising acks written at once run far fewer scripts than acks (they ran one each), the
/// last one recorded; then 100,000 frames acking the last again, which raise nothing,
/// run none (they ran one each, and the node grew by hundreds of MiB holding them). The
/// real binary, Redis's `INFO commandstats`, the node's RSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_cost_redis_only_when_they_raise_and_never_pile_up() {
    let redis = Redis::start().await;
    let daemon = Launch::new()
        .args(&[
            "--redis",
            &redis.url(),
            "--queue-depth",
            "4096",
            "--history-messages",
            "4096",
            // The flood is absorbed here (closing it is tests/history.rs's).
            "--max-stale-acks",
            "1000000",
        ])
        .start()
        .await;
    let http = daemon.http_addr.expect("http door");
    poll_until(STEP, "the node ready", || async move {
        readyz(http).await.starts_with("HTTP/1.1 200")
    })
    .await;
    let mut tab = RawWsClient::connect(daemon.ws_addr, "/?pushwire=1").await;
    tab.send_text("fl").await;
    let status = tab.read_frame(STEP).await.expect("a status frame");
    let status = common::v1::parse_status(&String::from_utf8(status.1).unwrap());
    assert_ne!(status.epoch, "0000000000000000", "redis up");
    // Until a push is answered ok, the node may not count its own tab yet (a `fail`
    // may still be delivered): push until ok, and start after the last one the tab got.
    let mut push = PushClient::connect(daemon.push_addr).await;
    let warm = j("fl", "warm");
    push_until(&mut push, &warm, "ok\n", STEP).await;
    let base = loop {
        let (_, frame) = tab.read_frame(STEP).await.expect("the warm-up message");
        let frame = String::from_utf8(frame).unwrap();
        let (seq, payload) = frame[2..].split_once(' ').expect("m SEQ PAYLOAD");
        if payload == warm {
            break seq.parse::<u64>().unwrap();
        }
    };
    const N: u64 = 2000;
    let lines: String = (1..=N)
        .map(|n| format!("{}\n", j("fl", &n.to_string())))
        .collect();
    push.send_raw(lines.as_bytes()).await;
    for n in 1..=N {
        assert_eq!(push.read_reply().await, "ok\n", "push {n}");
    }
    for n in 1..=N {
        let (_, frame) = tab.read_frame(STEP).await.expect("a message");
        let frame = String::from_utf8(frame).unwrap();
        assert!(frame.starts_with(&format!("m {} ", base + n)), "{frame}");
    }
    let acks = async |push: &mut PushClient| -> u64 {
        let stats: serde_json::Value =
            serde_json::from_str(push.request("/stats").await.trim_end()).unwrap();
        stats["acks"].as_u64().unwrap()
    };
    let recorded = async || -> String {
        let key = redis.cli(&["--scan", "--pattern", "pw:a:*"]).await;
        redis.cli(&["HGETALL", key.trim()]).await
    };

    // Rising acks, all in one write.
    let before = redis.script_calls().await;
    let rising: Vec<u8> = (base + 1..=base + N)
        .flat_map(|n| masked_frame(0x1, format!("a {n}").as_bytes()))
        .collect();
    tab.tcp.write_all(&rising).await.unwrap();
    let want = format!("{}:{}", status.epoch, base + N);
    let deadline = tokio::time::Instant::now() + 3 * STEP;
    while !recorded().await.contains(&want) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the last ack never recorded: {}",
            recorded().await
        );
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(acks(&mut push).await, N);
    let scripts = redis.script_calls().await - before;
    eprintln!("{N} rising acks: {scripts} scripts");
    assert!(scripts < N / 2, "{scripts} scripts for {N} rising acks");

    // A flood of acks that raise nothing.
    const FLOOD: u64 = 100_000;
    let rss = daemon.rss_kib();
    let before = redis.script_calls().await;
    let flood = masked_frame(0x1, format!("a {}", base + N).as_bytes()).repeat(FLOOD as usize);
    tab.tcp.write_all(&flood).await.unwrap();
    poll_until(3 * STEP, "every ack read", || async {
        acks(&mut PushClient::connect(daemon.push_addr).await).await >= N + FLOOD
    })
    .await;
    sleep(Duration::from_millis(300)).await;
    let scripts = redis.script_calls().await - before;
    let grew = daemon.rss_kib().saturating_sub(rss);
    eprintln!("{FLOOD} stale acks: {scripts} scripts, node RSS +{grew} KiB");
    assert!(
        scripts <= 3,
        "{scripts} scripts for {FLOOD} acks that raised nothing"
    );
    assert!(grew < 16 * 1024, "the node grew by {grew} KiB");
    assert!(recorded().await.contains(&want));
}
