//! Protocol v1 history in cluster mode (`docs/protocol.md`, "Cluster mode"): real
//! `redis-server`s (standalone and a three-master Redis Cluster), real nodes, real
//! sockets. Numbering shared by every node, resume on another node, the ledger under
//! cuts alternating between nodes, a node killed with SIGKILL while it held the user,
//! a resume beyond the trimmed history, and Redis down.
#[macro_use]
mod common;

use std::time::Duration;

use common::redis::*;
use common::v1::{V1Client, V1Event};
use common::*;
use tokio::time::{Instant, sleep};

async fn node(url: &str, history_messages: usize) -> TestServer {
    cluster_node(url, history_messages).await
}

fn line(uid: &str, via: &str, n: u64) -> String {
    format!(r#"{{"uid":"{uid}","via":"{via}","n":{n}}}"#)
}

/// Pushes through two nodes, alternately, are numbered consecutively by the one history
/// in Redis; a tab on either node gets each once, as `m SEQ`; a tab that resumes on the
/// other node gets what it missed from Redis, then the live stream.
async fn one_sequence_across_nodes_and_resume_on_another(url: &str) {
    let (a, b) = (node(url, 100).await, node(url, 100).await);
    // The status frame comes once b hears the uid's channel and read its history.
    let mut on_b = V1Client::connect(b.ws_addr, "n1", None).await;
    assert_eq!(on_b.status.kind, "new");
    assert_eq!(on_b.status.seq, 0);
    let epoch = on_b.status.epoch.clone();
    let mut via_a = PushClient::connect(a.push_addr).await;
    let mut via_b = PushClient::connect(b.push_addr).await;
    for n in 1..=10u64 {
        let (push, via) = if n % 2 == 1 {
            (&mut via_a, "a")
        } else {
            (&mut via_b, "b")
        };
        assert_eq!(push.request(&line("n1", via, n)).await, "ok\n", "push {n}");
        on_b.expect_msg(n, &line("n1", via, n)).await;
    }
    // /send through a is numbered in the same sequence.
    let sent = via_a.request(r#"/send ["n1"] {"s":11}"#).await;
    assert!(sent.contains(r#""connections":1"#), "{sent}");
    on_b.expect_msg(11, r#"{"s":11}"#).await;

    // A second tab resumes on a from 4: 5..=11 from Redis, then live, on both tabs.
    let point = format!("{epoch}:4");
    let mut on_a = V1Client::connect(a.ws_addr, "n1", Some(&point)).await;
    assert_eq!(on_a.status.kind, "recovered", "{:?}", on_a.status);
    assert_eq!(on_a.status.point(), point);
    for n in 5..=10 {
        let via = if n % 2 == 1 { "a" } else { "b" };
        on_a.expect_msg(n, &line("n1", via, n)).await;
    }
    on_a.expect_msg(11, r#"{"s":11}"#).await;
    assert_eq!(via_b.request(&line("n1", "b", 12)).await, "ok\n");
    on_a.expect_msg(12, &line("n1", "b", 12)).await;
    on_b.expect_msg(12, &line("n1", "b", 12)).await;
    // Broadcasts stay unnumbered.
    via_a.request(r#"/broadcast {"all":1}"#).await;
    assert_eq!(on_a.next().await, V1Event::Broadcast(r#"{"all":1}"#.into()));
    assert_eq!(on_b.next().await, V1Event::Broadcast(r#"{"all":1}"#.into()));
    // A seed tab of the same uid still gets the bare line, whichever node pushes.
    // Bound without probes (they would be numbered too): until the cluster sees 3 tabs.
    let mut seed = WsClient::connect(&a.ws_url()).await;
    seed.send_text("n1").await;
    let three = "\"connections\":3";
    until_reply(a.push_addr, "/online n1", three, STEP, "the seed tab bound").await;
    assert_eq!(via_b.request(&line("n1", "b", 13)).await, "ok\n");
    assert_eq!(seed.recv_text().await, line("n1", "b", 13));
    assert_eq!(via_a.request(&line("n1", "a", 14)).await, "ok\n");
    assert_eq!(seed.recv_text().await, line("n1", "a", 14));
    for n in [13, 14] {
        let via = if n == 13 { "b" } else { "a" };
        on_a.expect_msg(n, &line("n1", via, n)).await;
        on_b.expect_msg(n, &line("n1", via, n)).await;
    }
    on_b.tab.expect_silence(Duration::from_millis(200)).await;
}

/// The ledger: 10,000 pushes, half through each node, while one v1 client is cut off
/// again and again (a clean close, a kick through the other node, a dropped socket) and
/// comes back alternately on node A and node B with `since`: every push arrives exactly
/// once, in one consecutive sequence, each node's pushes in the order they were sent.
async fn ledger_across_nodes_under_cuts(url: &str) {
    const PER_NODE: u64 = 5000;
    let (a, b) = (node(url, 2000).await, node(url, 2000).await);
    let nodes = [&a, &b];
    let mut tab = V1Client::connect(a.ws_addr, "led", None).await;
    let epoch = tab.status.epoch.clone();
    let mut last = tab.status.seq;
    let pushers: Vec<_> = [("a", a.push_addr), ("b", b.push_addr)]
        .into_iter()
        .map(|(via, addr)| {
            tokio::spawn(async move {
                let mut push = PushClient::connect(addr).await;
                for n in 0..PER_NODE {
                    // A reply is ok or fail (the tab may be between connections);
                    // either way the push is numbered and kept.
                    let reply = push.request(&line("led", via, n)).await;
                    assert!(reply == "ok\n" || reply == "fail\n", "{reply}");
                    if n % 8 == 0 {
                        sleep(Duration::from_millis(1)).await;
                    }
                }
            })
        })
        .collect();
    let mut next = [0u64; 2];
    let (mut cuts, mut on) = (0usize, 0usize);
    let total = 2 * PER_NODE;
    let mut got = 0;
    while got < total {
        match tab.next_within(Duration::from_secs(10)).await {
            V1Event::Msg(seq, payload) => {
                assert_eq!(seq, last + 1, "consecutive, exactly once");
                last = seq;
                let v: serde_json::Value = serde_json::from_str(&payload).expect("json");
                let i = usize::from(v["via"] == "b");
                assert_eq!(v["n"].as_u64(), Some(next[i]), "order of node {i}'s pushes");
                next[i] += 1;
                got += 1;
            }
            // Nothing but our own cuts may end a session (no resync, no full queue).
            other => panic!("after {got} messages: {other:?}"),
        }
        if got % 476 != 0 || got >= total {
            continue;
        }
        cuts += 1;
        match cuts % 3 {
            0 => tab.tab.close().await,
            1 => {
                let other = nodes[1 - on];
                let mut p = PushClient::connect(other.push_addr).await;
                let kicked = p.request("/kick led").await;
                assert!(kicked.contains("\"connections\":1"), "{kicked}");
                drop(tab.tab);
            }
            _ => drop(tab.tab),
        }
        on = 1 - on;
        let point = format!("{epoch}:{last}");
        tab = V1Client::connect(nodes[on].ws_addr, "led", Some(&point)).await;
        assert_eq!(tab.status.kind, "recovered", "cut {cuts}: {:?}", tab.status);
    }
    for p in pushers {
        p.await.expect("pusher");
    }
    assert!(cuts >= 20, "only {cuts} cuts");
    assert_eq!(next, [PER_NODE, PER_NODE]);
    tab.tab.expect_silence(Duration::from_millis(300)).await;
}

/// A history trimmed past the resume point: `not_recovered`, nothing replayed, then the
/// live stream above the status frame's base; a foreign epoch is not recovered either;
/// a point still covered is.
async fn resume_beyond_the_trimmed_history_is_not_recovered(url: &str) {
    let (a, b) = (node(url, 5).await, node(url, 5).await);
    let first = V1Client::connect(a.ws_addr, "tr", None).await;
    let epoch = first.status.epoch.clone();
    first.tab.close().await;
    let mut push = PushClient::connect(b.push_addr).await;
    for n in 1..=20 {
        // Nobody holds it: `fail`, but numbered and kept (the last 5).
        assert_eq!(push.request(&line("tr", "b", n)).await, "fail\n");
    }
    let mut lost = V1Client::connect(b.ws_addr, "tr", Some(&format!("{epoch}:3"))).await;
    assert_eq!(lost.status.kind, "not_recovered");
    assert_eq!(lost.status.point(), format!("{epoch}:20"));
    assert_eq!(push.request(&line("tr", "b", 21)).await, "ok\n");
    lost.expect_msg(21, &line("tr", "b", 21)).await;

    let foreign = V1Client::connect(a.ws_addr, "tr", Some("00000000000000aa:20")).await;
    assert_eq!(foreign.status.kind, "not_recovered");
    assert_eq!(foreign.status.point(), format!("{epoch}:21"));

    let mut kept = V1Client::connect(a.ws_addr, "tr", Some(&format!("{epoch}:17"))).await;
    assert_eq!(kept.status.kind, "recovered");
    for n in 18..=21 {
        kept.expect_msg(n, &line("tr", "b", n)).await;
    }
    // A message over --history-bytes is numbered, not kept, and ends coverage before it.
    let big = format!(r#"{{"uid":"tr","pad":"{}"}}"#, "x".repeat(300_000));
    assert_eq!(push.request(&big).await, "ok\n");
    kept.expect_msg(22, &big).await;
    let after = V1Client::connect(b.ws_addr, "tr", Some(&format!("{epoch}:21"))).await;
    assert_eq!(after.status.kind, "not_recovered");
    assert_eq!(after.status.point(), format!("{epoch}:22"));
}

on_both!(
    one_sequence_across_nodes_and_resume_on_another,
    ledger_across_nodes_under_cuts,
    resume_beyond_the_trimmed_history_is_not_recovered,
);

/// Three real daemons on one Redis; the one holding the user is killed with SIGKILL in
/// the middle of a stream pushed through another. The client reconnects to the third
/// with `since` and resumes: every push exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_it_held_the_user_loses_nothing() {
    const N: u64 = 600;
    let redis = Redis::start().await;
    let url = redis.url();
    let args = [
        "--redis",
        &url,
        "--history-messages",
        "1000",
        "--queue-depth",
        "1024",
    ];
    let a = Launch::new().args(&args).start().await;
    let mut b = Launch::new().args(&args).start().await;
    let c = Launch::new().args(&args).start().await;
    let mut tab = V1Client::connect(b.ws_addr, "k9", None).await;
    let epoch = tab.status.epoch.clone();
    let addr = a.push_addr;
    let pusher = tokio::spawn(async move {
        let mut push = PushClient::connect(addr).await;
        for n in 1..=N {
            let reply = push.request(&line("k9", "a", n)).await;
            assert!(reply == "ok\n" || reply == "fail\n", "{reply}");
            sleep(Duration::from_millis(1)).await;
        }
    });
    let (mut last, mut killed, mut resumed) = (0, false, false);
    while last < N {
        match tab.next_or_reset(Duration::from_secs(10)).await {
            V1Event::Msg(seq, payload) => {
                assert_eq!(seq, last + 1, "consecutive, exactly once");
                assert_eq!(payload, line("k9", "a", seq));
                last = seq;
            }
            other => {
                assert!(killed && !resumed, "unexpected {other:?}");
                // The node died under the tab: resume on another one.
                resumed = true;
                let point = format!("{epoch}:{last}");
                tab = V1Client::connect(c.ws_addr, "k9", Some(&point)).await;
                assert_eq!(tab.status.kind, "recovered", "{:?}", tab.status);
                continue;
            }
        }
        if last == N / 3 && !killed {
            killed = true;
            b.kill9();
        }
    }
    assert!(resumed, "the node was never seen to die");
    pusher.await.expect("pusher");
    tab.tab.expect_silence(Duration::from_millis(300)).await;
}

/// Redis unreachable: a v1 bind still completes in bounded time (`new` at the empty
/// position; a resume `not_recovered`), and local pushes reach the tab unnumbered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_v1_binds_complete_unnumbered() {
    let n = node_without_redis(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut tab = V1Client::connect(n.ws_addr, "down", None).await;
    assert_eq!(tab.status.point(), "0000000000000000:0");
    assert_eq!(tab.status.kind, "new");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let resumed = V1Client::connect(n.ws_addr, "down", Some("00000000000000ab:5")).await;
    assert_eq!(resumed.status.kind, "not_recovered");
    let mut push = PushClient::connect(n.push_addr).await;
    assert_eq!(push.request(&line("down", "n", 1)).await, "ok\n");
    assert_eq!(tab.next().await, V1Event::Broadcast(line("down", "n", 1)));
}

/// A backend that pushes the moment its browser is told it is bound (the v1 status
/// frame) gets `ok`, whichever node it pushes through: the holder's own, or another.
/// 150 binds in a row, history on and off, of 30 uids that move between the nodes (so a
/// bind lands while its node's routing is being set up, or torn down after the last
/// tab). With history off the status frame was sent at bind, before the node heard the
/// uid's channel: a push through the other node answered `fail` (7 to 22 of 150).
async fn a_push_right_after_a_v1_bind_is_ok(url: &str) {
    for history in [100, 0] {
        first_pushes(url, history).await;
    }
}

async fn first_pushes(url: &str, history: usize) {
    let (a, b) = (node(url, history).await, node(url, history).await);
    let mut via_a = PushClient::connect(a.push_addr).await;
    let mut via_b = PushClient::connect(b.push_addr).await;
    let mut failed = Vec::new();
    for i in 0..150u64 {
        let uid = format!("first{}", i % 30);
        let holder = if i % 2 == 0 { &a } else { &b };
        let mut tab = V1Client::connect(holder.ws_addr, &uid, None).await;
        let (push, via) = if i % 4 < 2 {
            (&mut via_a, "a")
        } else {
            (&mut via_b, "b")
        };
        let reply = push.request(&line(&uid, via, 1)).await;
        if reply != "ok\n" {
            failed.push((history, i, via, reply));
            continue;
        }
        if history > 0 {
            let base = tab.status.seq;
            tab.expect_msg(base + 1, &line(&uid, via, 1)).await;
        } else {
            assert_eq!(tab.next().await, V1Event::Broadcast(line(&uid, via, 1)));
        }
        tab.tab.close().await;
    }
    assert!(failed.is_empty(), "first pushes not ok: {failed:?}");
}

on_both!(a_push_right_after_a_v1_bind_is_ok);

/// A node of `url` keeping at most `max` histories (`--history-max-uids`).
async fn bounded_node(url: &str, max: usize) -> TestServer {
    let server = TestServer::start_http(pushwire::Config {
        redis: Some(url.to_owned()),
        cluster_timeout: Duration::from_millis(2000),
        history_messages: 100,
        history_max_uids: max,
        ..pushwire::Config::default()
    })
    .await;
    let http = server.http_addr.expect("http door");
    poll_until(STEP, "the node ready", || async move {
        readyz(http).await.starts_with("HTTP/1.1 200")
    })
    .await;
    server
}

async fn stat(push: &mut PushClient, name: &str) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(push.request("/stats").await.trim_end()).expect("stats json");
    v[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

/// `--history-max-uids` holds in cluster mode: strangers binding fresh uids with protocol
/// v1 (each made a history in Redis, kept `--history-keep-ms`) leave at most the bound
/// in Redis, a history that kept a message outlives the flood (spare ones go first), and
/// with every counted history in use the next bind is refused with 1013, as on a single
/// node. Before, 400 binds left 400 histories in Redis, none counted.
async fn histories_made_by_binds_are_bounded(url: &str, histories: impl AsyncFn() -> usize) {
    const MAX: usize = 40;
    let a = bounded_node(url, MAX).await;
    let mut push = PushClient::connect(a.push_addr).await;
    let mut keeper = V1Client::connect(a.ws_addr, "keeper", None).await;
    assert_eq!(push.request(&line("keeper", "a", 1)).await, "ok\n");
    let seq = keeper.status.seq + 1;
    keeper.expect_msg(seq, &line("keeper", "a", 1)).await;
    let point = format!("{}:{seq}", keeper.status.epoch);
    keeper.tab.close().await;

    for i in 0..400 {
        let stranger = V1Client::connect(a.ws_addr, &format!("s{i}"), None).await;
        stranger.tab.close().await;
    }
    poll_until(STEP, "at most the bound of histories in Redis", || async {
        histories().await <= MAX
    })
    .await;
    assert!(stat(&mut push, "history_uids").await <= MAX as u64);
    let evicted = stat(&mut push, "history_evicted").await;
    assert!(evicted >= (400 - MAX) as u64, "evicted {evicted}");
    let back = V1Client::connect(a.ws_addr, "keeper", Some(&point)).await;
    assert_eq!(back.status.kind, "recovered", "{:?}", back.status);

    // Every counted history in use (the keeper and MAX - 1 held tabs): refused.
    let mut held = Vec::new();
    for i in 0..MAX - 1 {
        held.push(V1Client::connect(a.ws_addr, &format!("h{i}"), None).await);
    }
    let refused = V1Client::try_connect(a.ws_addr, "one-more", None).await;
    assert_eq!(
        refused.err(),
        Some((1013, "history full: try again later".to_owned()))
    );
    assert!(stat(&mut push, "history_full").await >= 1);
    // A uid already counted still binds (a second tab), and one that leaves makes room.
    let second = V1Client::connect(a.ws_addr, "h0", None).await;
    assert_eq!(second.status.epoch, held[0].status.epoch);
    drop(back);
    poll_until(STEP, "room once the keeper left", || async {
        match V1Client::try_connect(a.ws_addr, "one-more", None).await {
            Ok(_) => true,
            Err((1013, _)) => false,
            Err(other) => panic!("{other:?}"),
        }
    })
    .await;
    // At the bound with every other uid online, a stranger binding a fresh uid and
    // closing, again and again, evicts the uid it just left each time: gone from Redis
    // too (this node's own subscription to it ends a moment after the close).
    for i in 0..50 {
        let churn = V1Client::connect(a.ws_addr, &format!("c{i}"), None).await;
        churn.tab.close().await;
    }
    poll_until(STEP, "still at most the bound in Redis", || async {
        histories().await <= MAX
    })
    .await;
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_made_by_binds_are_bounded_standalone() {
    let redis = Redis::start().await;
    histories_made_by_binds_are_bounded(&redis.url(), async || redis.count_keys("pw:h:*").await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_made_by_binds_are_bounded_redis_cluster() {
    let cluster = RedisCluster::start().await;
    histories_made_by_binds_are_bounded(&cluster.url(), async || {
        cluster.count_keys("pw:h:*").await
    })
    .await;
}

/// The histories of uids a node holds outlive `--history-keep-ms`: the node refreshes
/// their TTL (on a single Redis in one script call per batch of keys).
async fn held_histories_outlive_the_keep_time(url: &str, keys: impl AsyncFn(&str) -> usize) {
    let node = TestServer::start_http(pushwire::Config {
        redis: Some(url.to_owned()),
        cluster_timeout: Duration::from_millis(2000),
        history_messages: 100,
        history_keep: Duration::from_millis(600),
        ..pushwire::Config::default()
    })
    .await;
    let http = node.http_addr.expect("http door");
    poll_until(STEP, "the node ready", || async move {
        readyz(http).await.starts_with("HTTP/1.1 200")
    })
    .await;
    let mut push = PushClient::connect(node.push_addr).await;
    let mut tabs = Vec::new();
    for i in 0..3u64 {
        let uid = format!("keep{i}");
        let mut tab = V1Client::connect(node.ws_addr, &uid, None).await;
        assert_eq!(push.request(&line(&uid, "a", i)).await, "ok\n");
        tab.expect_msg(1, &line(&uid, "a", i)).await;
        tabs.push(tab);
    }
    // Four times the keep time: without the refresh every key would be gone.
    sleep(Duration::from_millis(2400)).await;
    assert_eq!(keys("pw:h:*").await, 3, "history hashes still there");
    assert_eq!(keys("pw:l:*").await, 3, "history lists still there");
    drop(tabs);
}

/// A history's keep time counts from when its last node lets the uid go, not from the
/// node's last refresh (every keep / 3): right after the tab leaves, both keys live the
/// whole `--history-keep-ms` again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_history_lives_the_whole_keep_time() {
    let redis = Redis::start().await;
    let keep = Duration::from_secs(60);
    let node = TestServer::start_http(pushwire::Config {
        redis: Some(redis.url()),
        history_messages: 100,
        history_keep: keep,
        ..pushwire::Config::default()
    })
    .await;
    let http = node.http_addr.expect("http door");
    poll_until(STEP, "the node ready", || async move {
        readyz(http).await.starts_with("HTTP/1.1 200")
    })
    .await;
    let mut push = PushClient::connect(node.push_addr).await;
    let mut tab = V1Client::connect(node.ws_addr, "rel", None).await;
    assert_eq!(push.request(&line("rel", "a", 0)).await, "ok\n");
    tab.expect_msg(1, &line("rel", "a", 0)).await;
    let pttl = async |pattern: &str| -> i64 {
        let key = redis.cli(&["--scan", "--pattern", pattern]).await;
        let key = key.trim();
        assert!(!key.is_empty(), "no key {pattern}");
        redis
            .cli(&["PTTL", key])
            .await
            .trim()
            .parse()
            .expect("PTTL")
    };
    // Held, and not refreshed since the push (a refresh comes every 20 s).
    sleep(Duration::from_secs(4)).await;
    let held = pttl("pw:h:*").await;
    assert!(held < 57_000, "PTTL {held} while held");
    drop(tab);
    let whole = keep.as_millis() as i64 - 1_500;
    poll_until(
        Duration::from_secs(3),
        "the keep time reset at release",
        || async { pttl("pw:h:*").await > whole && pttl("pw:l:*").await > whole },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_histories_outlive_the_keep_time_standalone() {
    let redis = Redis::start().await;
    held_histories_outlive_the_keep_time(&redis.url(), async |p: &str| redis.count_keys(p).await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_histories_outlive_the_keep_time_redis_cluster() {
    let cluster = RedisCluster::start().await;
    held_histories_outlive_the_keep_time(&cluster.url(), async |p: &str| {
        cluster.count_keys(p).await
    })
    .await;
}
