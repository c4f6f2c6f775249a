//! Cluster mode on a real `redis-server` (Debian's package, started here on a free port):
//! two in-process nodes, browsers on one, backends on the other, over real sockets.
//!
//! What is covered so far: routed delivery of plain pushes and `/push`, truthful replies
//! (counts gathered from the holding nodes), tabs on two nodes, pipelined order across
//! nodes, Redis going away (local delivery goes on, remote pushes fail fast, `/push` says
//! `unavailable`) and coming back (subscriptions heal with no restart), a publish left
//! unanswered (Redis stopped: `/push` says `partial`, in doubt), `rediss://` to a TLS-only
//! Redis (and a node that does not trust its certificate: alone, and saying why).

#[macro_use]
mod common;
use common::redis::*;
use common::*;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

async fn node(url: &str) -> TestServer {
    node_with(url, pushwire::Config::default()).await
}

async fn node_with(url: &str, config: pushwire::Config) -> TestServer {
    TestServer::start_with(pushwire::Config {
        redis: Some(url.to_owned()),
        // Bounded, and roomy enough for a loaded CI machine.
        cluster_timeout: Duration::from_millis(2000),
        ..config
    })
    .await
}

/// Binds `uid` on `tab`'s node, then pushes `line` through `via` until the cluster routes
/// it (`ok`); the tab receives exactly that one line.
async fn bound_across(tab: &mut WsClient, home: &TestServer, via: &TestServer, uid: &str) {
    bound_via(tab, home.push_addr, via.push_addr, uid).await;
}

/// [`bound_across`] by push addresses; returns the push connection to `via`.
async fn bound_via(tab: &mut WsClient, home: SocketAddr, via: SocketAddr, uid: &str) -> PushClient {
    tab.bind(uid, home).await;
    let mut push = PushClient::connect(via).await;
    let line = format!(r#"{{"uid":"{uid}","routed":true}}"#);
    push_until_received(&mut push, tab, &line, Duration::from_secs(10)).await;
    push
}

/// `/push ID` to `uid`, whose one connection is `tab`: counted exactly and delivered.
async fn push_id_delivered_to_one(push: &mut PushClient, tab: &mut WsClient, id: &str, uid: &str) {
    let line = format!(r#"{{"uid":"{uid}","n":2}}"#);
    assert_eq!(
        push.request(&format!("/push {id} {line}")).await,
        format!(
            "{{\"ok\":true,\"result\":\"delivered\",\"connections\":1,\"refused\":0,\"id\":\"{id}\"}}\n"
        )
    );
    assert_eq!(tab.recv_text().await, line);
}

async fn a_push_via_one_node_reaches_a_browser_on_another_exactly_once(url: &str) {
    let (a, b) = (node(url).await, node(url).await);
    let mut tab = WsClient::connect(&b.ws_url()).await;
    bound_across(&mut tab, &b, &a, "u1").await;

    let mut push = PushClient::connect(a.push_addr).await;
    let line = r#"{"uid":"u1","percent":"88%","é":"ü"}"#;
    assert_eq!(push.request(line).await, "ok\n");
    assert_eq!(tab.recv_text().await, line, "byte-exact, once");
    push_id_delivered_to_one(&mut push, &mut tab, "7", "u1").await;
    tab.expect_silence(Duration::from_millis(300)).await;

    // Nobody holds it anywhere: fail on both nodes, quickly.
    for n in [&a, &b] {
        let mut p = PushClient::connect(n.push_addr).await;
        let started = Instant::now();
        assert_eq!(p.request(r#"{"uid":"nobody"}"#).await, "fail\n");
        assert!(
            // Well inside the 2 s cluster timeout: nothing waited for it.
            started.elapsed() < Duration::from_millis(1000),
            "{:?}",
            started.elapsed()
        );
        assert!(
            p.request("/push 1 {\"uid\":\"nobody\"}")
                .await
                .contains("\"offline\"")
        );
    }
}

async fn tabs_on_two_nodes_each_get_every_push_once(url: &str) {
    let (a, b) = (node(url).await, node(url).await);
    let mut on_a = WsClient::connect(&a.ws_url()).await;
    let mut on_b = WsClient::connect(&b.ws_url()).await;
    // b's tab first, routed from a; then a's own (its bind probes reach b's tab too,
    // and are skipped as probes).
    bound_across(&mut on_b, &b, &a, "t").await;
    on_a.bind("t", a.push_addr).await;
    // Bound on a at once; routable from b once a's subscription is in (milliseconds).
    let held = "\"connections\":2";
    until_reply(b.push_addr, "/online t", held, STEP, "t held on both nodes").await;

    // Distinct IDs: the same ID and line through the other node would be a retry.
    for (id, via) in [("x", &a), ("y", &b)] {
        let mut push = PushClient::connect(via.push_addr).await;
        let reply = push
            .request(&format!(r#"/push {id} {{"uid":"t","k":1}}"#))
            .await;
        assert!(reply.contains("\"connections\":2"), "{reply}");
        for tab in [&mut on_a, &mut on_b] {
            assert_eq!(tab.recv_text().await, r#"{"uid":"t","k":1}"#);
        }
    }
    on_a.expect_silence(Duration::from_millis(200)).await;
    on_b.expect_silence(Duration::from_millis(200)).await;
}

async fn pipelined_cross_node_pushes_arrive_in_order(url: &str) {
    let (a, b) = (node(url).await, node(url).await);
    let mut tab = WsClient::connect(&b.ws_url()).await;
    bound_across(&mut tab, &b, &a, "order").await;

    const N: usize = 1000;
    let mut push = PushClient::connect(a.push_addr).await;
    let mut all = String::new();
    for i in 0..N {
        all.push_str(&format!("{{\"uid\":\"order\",\"seq\":{i}}}\n"));
    }
    push.send_raw(all.as_bytes()).await;
    for i in 0..N {
        assert_eq!(push.read_reply().await, "ok\n", "reply {i}");
    }
    for i in 0..N {
        assert_eq!(
            tab.recv_text().await,
            format!("{{\"uid\":\"order\",\"seq\":{i}}}"),
            "out of order at {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_local_pushes_go_on_and_remote_ones_fail_fast_then_heal() {
    let mut redis = Redis::start().await;
    let port = redis.port;
    let a = node(&redis.url()).await;
    let b = TestServer::start_http(pushwire::Config {
        redis: Some(redis.url()),
        cluster_timeout: Duration::from_millis(2000),
        ..pushwire::Config::default()
    })
    .await;
    let http = b.http_addr.expect("http listener");
    poll_until(STEP, "readyz ready", || async move {
        readyz(http).await.starts_with("HTTP/1.1 200")
    })
    .await;
    let mut tab = WsClient::connect(&b.ws_url()).await;
    bound_across(&mut tab, &b, &a, "r").await;

    redis.kill().await;
    // Local: still ok and delivered.
    let mut local = PushClient::connect(b.push_addr).await;
    assert_eq!(local.request(r#"{"uid":"r","local":1}"#).await, "ok\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":"r","local":1}"#);
    // Remote: fail within a bounded time, never hang; /push says why. The bound is the
    // cluster timeout (2 s here): at once if the node already saw Redis go, at the
    // timeout if its publish was in flight; plus a margin for a loaded machine.
    let mut remote = PushClient::connect(a.push_addr).await;
    let started = Instant::now();
    assert_eq!(remote.request(r#"{"uid":"r","remote":1}"#).await, "fail\n");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let reply = remote.request(r#"/push 9 {"uid":"r"}"#).await;
    assert!(reply.contains("\"result\":\"unavailable\""), "{reply}");
    let ready = readyz(http).await;
    assert!(
        ready.starts_with("HTTP/1.1 503") && ready.ends_with("degraded: redis unreachable\n"),
        "{ready}"
    );

    // Redis comes back on the same port: routing heals by itself.
    let _redis = Redis::start_on(port).await;
    let healed = r#"{"uid":"r","healed":1}"#;
    push_until_received(&mut remote, &mut tab, healed, Duration::from_secs(15)).await;
}

async fn broadcast_kick_and_presence_span_the_nodes(url: &str) {
    let (a, b) = (node(url).await, node(url).await);
    let mut b1 = WsClient::connect(&b.ws_url()).await;
    let mut b2 = WsClient::connect(&b.ws_url()).await;
    let mut a1 = WsClient::connect(&a.ws_url()).await;
    bound_across(&mut b1, &b, &a, "p1").await;
    bound_across(&mut b2, &b, &a, "p2").await;
    a1.bind("p3", a.push_addr).await;
    let mut push = PushClient::connect(a.push_addr).await;

    // Presence: exact connection counts from every node.
    assert_eq!(
        push.request("/online p1").await,
        "{\"ok\":true,\"uid\":\"p1\",\"online\":true,\"connections\":1}\n"
    );
    assert!(
        push.request("/online nobody")
            .await
            .contains("\"online\":false")
    );
    let count = push.request("/count").await;
    assert!(count.contains("\"uids\":3,\"connections\":3"), "{count}");
    let stats = push.request("/stats").await;
    assert!(
        stats.contains("\"cluster_nodes\":2,\"cluster_uids\":3,\"cluster_connections\":3}"),
        "{stats}"
    );

    // One broadcast reaches every tab on both nodes once; an excluded uid gets nothing.
    let reply = push.request("/broadcast-except [\"p2\"] hello").await;
    assert_eq!(reply, "{\"ok\":true,\"connections\":2,\"refused\":0}\n");
    assert_eq!(b1.recv_text().await, "hello");
    assert_eq!(a1.recv_text().await, "hello");
    b2.expect_silence(Duration::from_millis(300)).await;
    b1.expect_silence(Duration::from_millis(100)).await;

    // /send to uids on both nodes.
    let reply = push.request("/send [\"p1\",\"p3\",\"gone\"] both").await;
    assert_eq!(
        reply,
        "{\"ok\":true,\"uids\":3,\"reached\":2,\"connections\":2,\"refused\":0}\n"
    );
    assert_eq!(b1.recv_text().await, "both");
    assert_eq!(a1.recv_text().await, "both");

    // A kick through a closes the tab on b with 4001 and its reason.
    assert_eq!(
        push.request("/kick p2 bye").await,
        "{\"ok\":true,\"uids\":1,\"connections\":1}\n"
    );
    assert_eq!(b2.expect_close().await, (4001, "bye".to_owned()));

    // Node b leaves: its uids are gone from the cluster at once, no ghosts.
    b.shutdown().await.expect("b shuts down");
    let gone = "\"online\":false";
    let d = Duration::from_secs(5);
    until_reply(
        a.push_addr,
        "/online p1",
        gone,
        d,
        "p1 offline after b left",
    )
    .await;
    assert_eq!(push.request(r#"{"uid":"p1"}"#).await, "fail\n");
    assert!(
        push.request("/count")
            .await
            .contains("\"uids\":1,\"connections\":1")
    );
}

/// web-msg-sender's publish means what it means on a single node, on every node: `to=UID`
/// reaches the uid's tab wherever it is, once (`ok`), `offline` only when no node holds
/// the uid, and a publish without `to` reaches the tabs of every node. It used to reach
/// this node's tabs only (`offline` for a uid held elsewhere).
async fn web_msg_sender_publishes_reach_every_node(url: &str) {
    let (a, b) = (cluster_node(url, 0).await, cluster_node(url, 0).await);
    let mut on_b = WsClient::connect(&b.ws_url()).await;
    let mut on_a = WsClient::connect(&a.ws_url()).await;
    bound_across(&mut on_b, &b, &a, "wb").await;
    bound_across(&mut on_a, &a, &b, "wa").await;
    let http = a.http_addr.expect("http door");
    let body = |response: String| {
        let (head, body) = response.split_once("\r\n\r\n").expect("a response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_owned()
    };
    let to_b = http_get(http, "/?type=publish&to=wb&content=%3Cb%3E").await;
    assert_eq!(body(to_b), "ok");
    assert_eq!(on_b.recv_text().await, "&lt;b&gt;");
    let nobody = http_get(http, "/?type=publish&to=nobody&content=x").await;
    assert_eq!(body(nobody), "offline");
    let everyone = http_get(http, "/?type=publish&content=all").await;
    assert_eq!(body(everyone), "ok");
    assert_eq!(on_a.recv_text().await, "all");
    assert_eq!(on_b.recv_text().await, "all");
    on_b.expect_silence(Duration::from_millis(300)).await;
    on_a.expect_silence(Duration::from_millis(100)).await;
}

/// `/count`'s `uids` are the distinct uids online on any node: a uid with tabs on two
/// nodes counts once, whichever node is asked (`/stats`' `cluster_uids` too), and the
/// count is exact again once a tab closes or a node leaves. (Each node's uids were
/// summed: 3 here.)
async fn count_counts_each_uid_once_across_the_nodes(url: &str) {
    let (a, b) = (node(url).await, node(url).await);
    let mut two_a = WsClient::connect(&a.ws_url()).await;
    let mut two_b = WsClient::connect(&b.ws_url()).await;
    let mut one_b = WsClient::connect(&b.ws_url()).await;
    two_a.bind("two", a.push_addr).await;
    two_b.bind("two", b.push_addr).await;
    one_b.bind("one", b.push_addr).await;
    let counted =
        |uids: usize, connections: usize| format!("\"uids\":{uids},\"connections\":{connections},");
    for n in [&a, &b] {
        until_reply(
            n.push_addr,
            "/count",
            &counted(2, 3),
            STEP,
            "2 uids, 3 tabs",
        )
        .await;
    }
    let stats = PushClient::connect(b.push_addr)
        .await
        .request("/stats")
        .await;
    assert!(
        stats.contains("\"cluster_nodes\":2,\"cluster_uids\":2,\"cluster_connections\":3}"),
        "{stats}"
    );
    // The uid's tab on b closes: still online (on a), once.
    drop(two_b);
    for n in [&a, &b] {
        until_reply(
            n.push_addr,
            "/count",
            &counted(2, 2),
            STEP,
            "2 uids, 2 tabs",
        )
        .await;
    }
    // Node b leaves with its last uid: only a's.
    b.shutdown().await.expect("b shuts down");
    drop(one_b);
    until_reply(a.push_addr, "/count", &counted(1, 1), STEP, "1 uid, 1 tab").await;
    drop(two_a);
    until_reply(a.push_addr, "/count", &counted(0, 0), STEP, "nobody").await;
}

/// Membership belongs to the uid, cluster-wide: joined through one node, used through
/// the other, kept across a reconnect to another node inside the grace period, dropped
/// once the grace period passes with the uid offline everywhere.
async fn groups_span_the_nodes_and_keep_their_grace_period(url: &str) {
    let grace = pushwire::Config {
        group_grace: Duration::from_millis(1000),
        ..pushwire::Config::default()
    };
    let (a, b) = (
        node_with(url, grace.clone()).await,
        node_with(url, grace).await,
    );
    let mut tab = WsClient::connect(&b.ws_url()).await;
    bound_across(&mut tab, &b, &a, "g1").await;
    let mut pa = PushClient::connect(a.push_addr).await;
    let mut pb = PushClient::connect(b.push_addr).await;
    assert_eq!(
        pa.request("/join room g1").await,
        "{\"ok\":true,\"group\":\"room\",\"added\":1,\"members\":1}\n"
    );
    assert_eq!(
        pb.request("/members room").await,
        "{\"ok\":true,\"group\":\"room\",\"count\":1,\"uids\":[\"g1\"]}\n"
    );
    let reply = pb.request("/group room hi").await;
    assert!(reply.contains("\"reached\":1"), "{reply}");
    assert_eq!(tab.recv_text().await, "hi");

    // The tab closes on b and comes back on a within the grace period.
    tab.close().await;
    let mut back = WsClient::connect(&a.ws_url()).await;
    back.bind("g1", a.push_addr).await;
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(pb.request("/members room").await.contains("[\"g1\"]"));
    assert!(
        pb.request("/group room again")
            .await
            .contains("\"reached\":1")
    );
    assert_eq!(back.recv_text().await, "again");

    // Gone for good: the membership goes after the grace period.
    back.close().await;
    until_reply(
        b.push_addr,
        "/members room",
        "\"count\":0",
        Duration::from_secs(6),
        "room empty after the grace period",
    )
    .await;
    assert!(pa.request("/count").await.contains("\"groups\":0"));
}

/// Cluster-wide `/uids`: one walk through node a, in small pages, while uids come and go
/// on both nodes. Every uid online throughout the walk (on a, on b, or on both) is listed
/// exactly once; no uid, stable or not, is listed twice; pages follow the single-node
/// grammar (`count`, `uids`, `next` a number, `null` at the end).
async fn uids_walk_lists_each_stable_uid_once_while_others_come_and_go(url: &str) {
    let (a, b) = (node(url).await, node(url).await);
    const STABLE: usize = 40;
    let mut tabs = Vec::new();
    let mut stable = std::collections::BTreeSet::new();
    for i in 0..STABLE {
        let (home, uid) = if i % 2 == 0 {
            (&a, format!("sa{i}"))
        } else {
            (&b, format!("sb{i}"))
        };
        let mut tab = WsClient::connect(&home.ws_url()).await;
        tab.bind(&uid, home.push_addr).await;
        tabs.push(tab);
        stable.insert(uid);
    }
    for home in [&a, &b] {
        let mut tab = WsClient::connect(&home.ws_url()).await;
        tab.bind("on-both", home.push_addr).await;
        tabs.push(tab);
    }
    stable.insert("on-both".to_owned());
    // Routable everywhere: a's /uids sees every stable uid (subscriptions are in). A
    // uid counts once however many nodes hold it: 41 uids, 42 connections.
    let (uids, connections) = (STABLE + 1, STABLE + 2);
    let want = format!("\"uids\":{uids},\"connections\":{connections}");
    until_reply(
        a.push_addr,
        "/count",
        &want,
        STEP,
        "every stable uid routable",
    )
    .await;

    // Churn: uids join and leave on both nodes for the whole walk.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut churners = Vec::new();
    for (k, home) in [a.ws_url(), b.ws_url()].into_iter().enumerate() {
        let stop = stop.clone();
        churners.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                let mut tab = WsClient::connect(&home).await;
                tab.send_text(&format!("churn{k}-{n}")).await;
                tokio::time::sleep(Duration::from_millis(3 + n % 7)).await;
                tab.close().await;
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut push = PushClient::connect(a.push_addr).await;
    let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
    let (mut cursor, mut pages) = (0u64, 0);
    loop {
        let line = format!("/uids {cursor} 3");
        let reply: serde_json::Value =
            serde_json::from_str(&push.request(&line).await).expect("/uids reply is JSON");
        assert_eq!(reply["ok"], true, "{reply}");
        let uids = reply["uids"].as_array().expect("uids array");
        assert_eq!(reply["count"].as_u64(), Some(uids.len() as u64), "{reply}");
        for u in uids {
            *seen
                .entry(u.as_str().expect("uid string").to_owned())
                .or_default() += 1;
        }
        pages += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        match reply["next"].as_u64() {
            Some(next) => {
                assert!(
                    uids.len() >= 3,
                    "a page short of LIMIT before the end: {reply}"
                );
                assert!(next > cursor, "the cursor moves on: {reply}");
                cursor = next;
            }
            None => {
                assert!(reply["next"].is_null(), "{reply}");
                break;
            }
        }
    }
    stop.cancel();
    let mut churned = 0;
    for c in churners {
        churned += c.await.expect("churner");
    }
    assert!(pages >= 5, "a walk of several pages: {pages}");
    assert!(
        churned >= 10,
        "uids came and went during the walk: {churned}"
    );
    for uid in &stable {
        assert_eq!(
            seen.get(uid),
            Some(&1),
            "stable uid {uid} listed once: {seen:?}"
        );
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "listed twice: {twice:?}");
    drop(tabs);
}

/// `/join` limits hold cluster-wide under concurrent joins from two nodes: exactly
/// `--max-group-members` of many racing joins succeed, and exactly as many new groups
/// as `--max-groups` leaves room for.
async fn concurrent_joins_from_two_nodes_never_pass_the_limits(url: &str) {
    let limits = pushwire::Config {
        max_group_members: 10,
        max_groups: 5,
        ..pushwire::Config::default()
    };
    let (a, b) = (
        node_with(url, limits.clone()).await,
        node_with(url, limits).await,
    );
    async fn race(addrs: Vec<std::net::SocketAddr>, lines: Vec<String>) -> Vec<String> {
        let mut clients = Vec::new();
        for (i, _) in lines.iter().enumerate() {
            clients.push(PushClient::connect(addrs[i % addrs.len()]).await);
        }
        let go = std::sync::Arc::new(tokio::sync::Barrier::new(lines.len()));
        let tasks: Vec<_> = clients
            .into_iter()
            .zip(lines)
            .map(|(mut c, line)| {
                let go = go.clone();
                tokio::spawn(async move {
                    go.wait().await;
                    c.request(&line).await
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("join task"));
        }
        out
    }
    for n in [&a, &b] {
        let both = "\"cluster_nodes\":2";
        until_reply(n.push_addr, "/stats", both, STEP, "both nodes up").await;
    }
    let addrs = vec![a.push_addr, b.push_addr];
    let replies = race(
        addrs.clone(),
        (0..40).map(|i| format!("/join room m{i}")).collect(),
    )
    .await;
    let ok = replies.iter().filter(|r| r.contains("\"ok\":true")).count();
    let full = "{\"ok\":false,\"error\":\"group full (max 10 members)\"}\n";
    assert!(
        replies
            .iter()
            .all(|r| r.contains("\"ok\":true") || r == full),
        "{replies:?}"
    );
    assert_eq!(ok, 10, "{replies:?}");
    let members = PushClient::connect(b.push_addr)
        .await
        .request("/members room")
        .await;
    assert!(members.contains("\"count\":10,"), "{members}");

    // Four more groups fit beside `room`; twenty racing to be created.
    let replies = race(addrs, (0..20).map(|i| format!("/join g{i} x")).collect()).await;
    let ok = replies.iter().filter(|r| r.contains("\"ok\":true")).count();
    assert_eq!(ok, 4, "{replies:?}");
    let count = PushClient::connect(a.push_addr)
        .await
        .request("/count")
        .await;
    assert!(count.contains("\"groups\":5}"), "{count}");
    // A refused join changed nothing: leaving what was joined empties the group.
    let mut p = PushClient::connect(a.push_addr).await;
    let left = p
        .request(&format!(
            "/leave room [{}]",
            (0..40)
                .map(|i| format!("\"m{i}\""))
                .collect::<Vec<_>>()
                .join(",")
        ))
        .await;
    assert_eq!(
        left,
        "{\"ok\":true,\"group\":\"room\",\"removed\":10,\"members\":0}\n"
    );
    assert!(p.request("/count").await.contains("\"groups\":4}"));
}

/// Pipelined `/group` lines and plain pushes on one backend connection reach each tab
/// in the order they were sent, though each `/group` first looks its members up in
/// Redis: members on the backend's own node and on the other node alike.
async fn group_pushes_stay_in_order_with_the_lines_around_them(url: &str) {
    let (a, b) = (node(url).await, node(url).await);
    let mut far = WsClient::connect(&b.ws_url()).await;
    bound_across(&mut far, &b, &a, "far").await;
    let mut near = WsClient::connect(&a.ws_url()).await;
    near.bind("near", a.push_addr).await;
    let mut push = PushClient::connect(a.push_addr).await;
    assert!(
        push.request("/join room [\"far\",\"near\"]")
            .await
            .contains("\"members\":2")
    );

    const N: usize = 300;
    let mut lines = String::new();
    for i in 0..N {
        match i % 3 {
            0 => lines.push_str(&format!("/group room {{\"seq\":{i}}}\n")),
            1 => lines.push_str(&format!("{{\"uid\":\"far\",\"seq\":{i}}}\n")),
            _ => lines.push_str(&format!("{{\"uid\":\"near\",\"seq\":{i}}}\n")),
        }
    }
    push.send_raw(lines.as_bytes()).await;
    for i in 0..N {
        let reply = push.read_reply().await;
        if i % 3 == 0 {
            assert!(reply.contains("\"reached\":2"), "reply {i}: {reply}");
        } else {
            assert_eq!(reply, "ok\n", "reply {i}");
        }
    }
    for (tab, skip) in [(&mut far, 2), (&mut near, 1)] {
        for i in (0..N).filter(|i| i % 3 != skip) {
            let text = tab.recv_text().await;
            let seq = format!("\"seq\":{i}}}");
            assert!(text.ends_with(&seq), "expected seq {i}, got {text}");
        }
    }
}

/// Sends `sig` (`STOP`, `CONT`) to a redis-server ([`send_signal`]).
async fn signal_redis(redis: &Redis, sig: &str) {
    send_signal(redis.child.id().expect("redis-server running"), sig).await;
}

/// A publish that left the node and got no answer is in doubt, not `unavailable`: Redis
/// is stopped (SIGSTOP: its connections stay open, so the node still sees it connected and
/// writes the publish), the wait ends with no receiver count, and `/push` answers
/// `partial` with what it knows (nobody here). From then on the node knows Redis is not
/// answering and writes nothing more: a plain line answers `fail` at once and is never
/// sent. Continued, Redis runs the one publish it was sent and the holder delivers it,
/// once; the refused line never arrives; once Redis answers again, pushes route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_left_unanswered_is_partial_not_unavailable() {
    let redis = Redis::start().await;
    let timeout = Duration::from_millis(500);
    let config = || pushwire::Config {
        redis: Some(redis.url()),
        cluster_timeout: timeout,
        // No retry claim: it would meet the stopped Redis first, and the push would
        // never be written (`unavailable`).
        dedupe_window: None,
        ..pushwire::Config::default()
    };
    let (a, b) = (
        TestServer::start_with(config()).await,
        TestServer::start_with(config()).await,
    );
    let mut tab = WsClient::connect(&b.ws_url()).await;
    bound_across(&mut tab, &b, &a, "doubt").await;

    signal_redis(&redis, "STOP").await;
    let mut push = PushClient::connect(a.push_addr).await;
    let started = Instant::now();
    let reply = push.request(r#"/push 5 {"uid":"doubt","n":5}"#).await;
    let took = started.elapsed();
    assert_eq!(
        reply,
        "{\"ok\":false,\"result\":\"partial\",\"connections\":0,\"refused\":0,\"id\":\"5\"}\n"
    );
    assert!(took >= timeout, "answered before the wait ended: {took:?}");
    let started = Instant::now();
    assert_eq!(
        push.request(r#"{"uid":"doubt","n":6}"#).await,
        "fail\n",
        "a plain line while Redis does not answer"
    );
    assert!(
        started.elapsed() < timeout,
        "waited for a Redis known not to answer: {:?}",
        started.elapsed()
    );
    let reply = push.request(r#"/push 6 {"uid":"doubt","n":6}"#).await;
    assert!(reply.contains("\"result\":\"unavailable\""), "{reply}");
    signal_redis(&redis, "CONT").await;
    // Redis runs what it was sent: the holder delivers it, once; nothing else.
    assert_eq!(tab.recv_text().await, r#"{"uid":"doubt","n":5}"#);
    tab.expect_silence(Duration::from_millis(500)).await;
    push_until_received(&mut push, &mut tab, r#"{"uid":"doubt","n":7}"#, STEP).await;
}

/// `--cluster-publish-queue`: with Redis stalled (SIGSTOP), the publisher holds one batch
/// in flight and the queue four more; past that a push is refused at once, never sent:
/// `/push` answers `unavailable` without waiting, a plain line `fail`, while a push to a
/// uid with a tab on this node is still `ok` and delivered. The queued ones are never
/// written either (their wait ends first, and then Redis is known not to answer):
/// `unavailable` too. Only the batch in flight is in doubt (`partial`) and may arrive once
/// Redis continues; then pushes route again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_publish_queue_refuses_at_once_and_keeps_local_delivery() {
    let redis = Redis::start().await;
    let timeout = Duration::from_millis(1000);
    let url = redis.url();
    let node = || {
        Launch::new().args(&[
            "--redis",
            &url,
            "--cluster-timeout-ms",
            "1000",
            "--cluster-publish-queue",
            "4",
            // No retry claims: they wait for Redis before the push is tried at all.
            "--dedupe-window-ms",
            "0",
        ])
    };
    let (a, b) = (node().start().await, node().start().await);
    let mut far = WsClient::connect(&b.ws_url()).await;
    let mut push = bound_via(&mut far, b.push_addr, a.push_addr, "far").await;
    let mut near = WsClient::connect(&a.ws_url()).await;
    near.bind("near", a.push_addr).await;

    signal_redis(&redis, "STOP").await;
    let line = |n: u32| format!(r#"/push {n} {{"uid":"far","n":{n}}}"#);
    // The first is taken by the publisher and written to the stalled Redis...
    push.send_raw(format!("{}\n", line(1)).as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...the next four wait in the queue, the rest find it full. (On a loaded machine the
    // publisher may take a few more, or none, first: at most 4 in flight and 4 queued.)
    let started = Instant::now();
    let burst: String = (2..=20).map(|n| line(n) + "\n").collect();
    push.send_raw(burst.as_bytes()).await;
    push.send_raw(b"{\"uid\":\"far\",\"plain\":1}\n{\"uid\":\"near\",\"local\":1}\n")
        .await;
    assert_eq!(near.recv_text().await, r#"{"uid":"near","local":1}"#);
    assert!(
        started.elapsed() < timeout,
        "local delivery waited for Redis: {:?}",
        started.elapsed()
    );
    // The one in flight is in doubt (on a loaded machine the publisher may have taken a
    // few of the burst with it); queued or refused, every other one never left.
    let mut in_doubt = 0;
    for n in 1..=20 {
        let reply = push.read_reply().await;
        assert!(reply.contains(&format!("\"id\":\"{n}\"")), "{reply}");
        if in_doubt + 1 == n && reply.contains("\"result\":\"partial\"") {
            in_doubt = n;
        } else {
            assert!(
                reply.contains("\"result\":\"unavailable\""),
                "push {n}: {reply}"
            );
        }
    }
    assert!((1..=5).contains(&in_doubt), "{in_doubt} in doubt");
    assert_eq!(push.read_reply().await, "fail\n", "a plain line refused");
    assert_eq!(push.read_reply().await, "ok\n", "a local push");
    assert!(
        a.log()
            .contains("cluster publish queue full (--cluster-publish-queue)"),
        "{}",
        a.log()
    );

    signal_redis(&redis, "CONT").await;
    // Refused and queued ones never left; the in-doubt ones may arrive, in order.
    let got = far.texts_until_silence(Duration::from_millis(500)).await;
    let sent: Vec<String> = (1..=in_doubt)
        .map(|n| format!(r#"{{"uid":"far","n":{n}}}"#))
        .collect();
    let mut rest = sent.iter();
    for text in &got {
        assert!(
            rest.any(|s| s == text),
            "{text} out of order, or refused yet delivered: {got:?}"
        );
    }
    assert!(
        got.first() == Some(&sent[0]),
        "the one written first arrives: {got:?}"
    );
    let routed = r#"{"uid":"far","n":10}"#;
    push_until_received(&mut push, &mut far, routed, Duration::from_secs(10)).await;
}

/// `--cluster-message-buffer`: a holder whose buffer of messages from Redis overflows
/// (one message here; its handling paused with SIGSTOP while a burst arrives) loses the
/// oldest, says so in its log, and stays up. The replies stay truthful: a push is
/// `delivered` only if its frame arrived, and a lost one is `partial` (nobody answered);
/// frames arrive in order, each once. The next push goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_message_buffer_loses_pushes_truthfully_and_says_so() {
    let redis = Redis::start().await;
    let url = redis.url();
    let a = Launch::new()
        .args(&["--redis", &url, "--dedupe-window-ms", "0"])
        .start()
        .await;
    let b = Launch::new()
        .args(&["--redis", &url, "--cluster-message-buffer", "1"])
        .start()
        .await;
    let mut tab = WsClient::connect(&b.ws_url()).await;
    let mut push = bound_via(&mut tab, b.push_addr, a.push_addr, "burst").await;

    let lost = "cluster messages lost: the message buffer overflowed (--cluster-message-buffer)";
    let mut next = 1;
    for _attempt in 0..5 {
        b.signal("STOP").await;
        let first = next;
        let burst: String = (first..first + 200)
            .map(|n| format!("/push {n} {{\"uid\":\"burst\",\"n\":{n}}}\n"))
            .collect();
        next += 200;
        push.send_raw(burst.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.signal("CONT").await;
        let mut delivered = Vec::new();
        for n in first..next {
            let reply = push.read_reply().await;
            assert!(reply.contains(&format!("\"id\":\"{n}\"")), "{reply}");
            if reply.contains("\"result\":\"delivered\"") {
                delivered.push(format!(r#"{{"uid":"burst","n":{n}}}"#));
            } else {
                assert!(reply.contains("\"result\":\"partial\""), "{reply}");
            }
        }
        let got = tab.texts_until_silence(Duration::from_millis(300)).await;
        let numbers: Vec<u64> = got
            .iter()
            .map(|t| {
                let v: serde_json::Value = serde_json::from_str(t).expect("a pushed line");
                v["n"].as_u64().expect("n")
            })
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "in order, each once: {numbers:?}"
        );
        for d in &delivered {
            assert!(
                got.contains(d),
                "{d} was answered delivered but never arrived"
            );
        }
        if b.log().contains(lost) {
            assert!(
                delivered.len() < 200,
                "a message was lost, yet every push was delivered"
            );
            push_until_received(&mut push, &mut tab, r#"{"uid":"burst","n":"after"}"#, STEP).await;
            return;
        }
    }
    panic!("the buffer never overflowed:\n{}", b.log());
}

on_both!(
    a_push_via_one_node_reaches_a_browser_on_another_exactly_once,
    tabs_on_two_nodes_each_get_every_push_once,
    pipelined_cross_node_pushes_arrive_in_order,
    broadcast_kick_and_presence_span_the_nodes,
    groups_span_the_nodes_and_keep_their_grace_period,
    uids_walk_lists_each_stable_uid_once_while_others_come_and_go,
    concurrent_joins_from_two_nodes_never_pass_the_limits,
    group_pushes_stay_in_order_with_the_lines_around_them,
    web_msg_sender_publishes_reach_every_node,
    count_counts_each_uid_once_across_the_nodes,
);

/// A `POST /push` body whose reply is streamed (it is longer than a chunk) while each of
/// its replies waits for the cluster, more of them than may wait at once: the reply is
/// every line's, in order, and the tab on the other node gets every push in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_http_push_reply_streams_while_its_replies_wait_for_the_cluster() {
    let redis = Redis::start().await;
    let url = redis.url();
    let a = TestServer::start_http(pushwire::Config {
        redis: Some(url.clone()),
        cluster_timeout: Duration::from_millis(2000),
        ..pushwire::Config::default()
    })
    .await;
    let b = node(&url).await;
    let mut tab = WsClient::connect(&b.ws_url()).await;
    bound_across(&mut tab, &b, &a, "long").await;
    let mut bad = PushClient::connect(a.push_addr).await;
    let error = bad.request("/x").await;

    const N: usize = 3000;
    let mut body = String::new();
    let mut want = String::new();
    for i in 0..N {
        body.push_str(&format!("{{\"uid\":\"long\",\"seq\":{i}}}\n/x\n"));
        want.push_str("ok\n");
        want.push_str(&error);
    }
    let url = format!("http://{}/push", a.http_addr.unwrap());
    let request = tokio::spawn(async move {
        let mut curl = tokio::process::Command::new("curl");
        curl.args(["-sS", "--max-time", "60", "--data-binary", "@-", &url]);
        run_program(&mut curl, body.as_bytes(), Duration::from_secs(90)).await
    });
    for i in 0..N {
        assert_eq!(
            tab.recv_text().await,
            format!("{{\"uid\":\"long\",\"seq\":{i}}}"),
            "out of order at {i}"
        );
    }
    let out = request.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout) == want,
        "the reply differs"
    );
}

/// Two real daemons on one Redis; one is killed with SIGKILL while it holds a browser.
/// Its Redis connections die with it, so the other node sees the uid offline at once:
/// no ghost user, and pushes to it `fail` instead of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_leaves_no_ghost() {
    let redis = Redis::start().await;
    let url = redis.url();
    let a = Launch::new().args(&["--redis", &url]).start().await;
    let mut b = Launch::new().args(&["--redis", &url]).start().await;
    let mut tab = WsClient::connect(&b.ws_url()).await;
    tab.bind("k9", b.push_addr).await;
    let mut push = PushClient::connect(a.push_addr).await;
    push_until(
        &mut push,
        r#"{"uid":"k9","routed":1}"#,
        "ok\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(push.request("/online k9").await.contains("\"online\":true"));

    b.kill9();
    let killed = Instant::now();
    until_reply(
        a.push_addr,
        "/online k9",
        "\"online\":false",
        Duration::from_secs(5),
        "k9 offline after its node died",
    )
    .await;
    let converged = killed.elapsed();
    assert_eq!(push.request(r#"{"uid":"k9"}"#).await, "fail\n");
    assert!(converged < Duration::from_secs(3), "took {converged:?}");
    // /count drops the killed node's uids once the others reap it (5 s without a beat):
    // checked by tests/cluster_soak.rs on every kill of its cycles (within 8 s). Here,
    // with the node killed right after its bind, that wait ran past 15 s in two of three
    // runs of this whole file on a loaded machine (never alone): under investigation.
}

/// `rediss://` with a password: a `redis-server` that speaks only TLS, its certificate
/// from a CA the nodes are told to trust with `SSL_CERT_FILE` (as for any private CA; the
/// system's roots otherwise). Pushes route across nodes over it, with their exact counts,
/// and no log holds the password. A node with the wrong password, or that does not trust
/// the certificate, never links: remote pushes `fail` (`/readyz` degraded, `/push`
/// `unavailable`), so both really are checked; its log says why, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_links_the_nodes_over_tls_and_checks_the_certificate() {
    let cert = TestCert::new("redis");
    let files = cert.files();
    let cert_pem = files.cert.to_str().expect("utf-8 path");
    let redis = Redis::start_tls(&cert, &["--requirepass", "s3cret"]).await;
    let port = redis.port;
    let url = format!("rediss://:s3cret@127.0.0.1:{port}/");
    let trusting = || {
        Launch::new()
            .args(&["--redis", &url])
            .env("SSL_CERT_FILE", cert_pem)
    };
    let (a, b) = (trusting().start().await, trusting().start().await);
    let mut tab = WsClient::connect(&b.ws_url()).await;
    tab.bind("tls", b.push_addr).await;
    let mut push = PushClient::connect(a.push_addr).await;
    let line = r#"{"uid":"tls","n":1}"#;
    push_until_received(&mut push, &mut tab, line, Duration::from_secs(10)).await;
    push_id_delivered_to_one(&mut push, &mut tab, "3", "tls").await;
    let ready = readyz(a.http_addr.expect("http listener")).await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(
        !a.log().contains("s3cret"),
        "the password is logged: {}",
        a.log()
    );

    // The right certificate and the wrong password: alone, and the log says so.
    let d = Launch::new()
        .args(&["--redis", &url.replace("s3cret", "wrong")])
        .env("SSL_CERT_FILE", cert_pem)
        .start()
        .await;
    let log = d.wait_log("redis connection failed; retrying", STEP).await;
    assert!(
        String::from_utf8_lossy(&log).contains("WRONGPASS"),
        "{}",
        d.log()
    );
    assert!(
        !d.log().contains("wrong@"),
        "the password is logged: {}",
        d.log()
    );
    let mut wrong = PushClient::connect(d.push_addr).await;
    assert_eq!(wrong.request(line).await, "fail\n");

    // Trusting another certificate only: the TLS handshake fails, the node stays alone.
    let (_other, c, mut untrusting) = untrusting_node(&url).await;
    assert_eq!(untrusting.request(line).await, "fail\n");
    let reply = untrusting.request(r#"/push 4 {"uid":"tls"}"#).await;
    assert!(reply.contains("\"result\":\"unavailable\""), "{reply}");
    tab.expect_silence(Duration::from_millis(300)).await;
    tab.expect_silence(Duration::from_millis(300)).await;
    // The log says why, once: fred retries every 50 ms to 2 s, the same error is logged
    // once a minute at most.
    let log = String::from_utf8_lossy(&c.wait_log("redis connection failed; retrying", STEP).await)
        .into_owned();
    assert!(log.contains("Certificate"), "{log}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        c.log().matches("redis connection failed").count(),
        1,
        "{}",
        c.log()
    );
}

/// A node on `url` that trusts another certificate only: its TLS handshakes fail, so it
/// stays alone and its `/readyz` says degraded (awaited here).
async fn untrusting_node(url: &str) -> (TestCert, Daemon, PushClient) {
    let other = TestCert::new("not-redis");
    let c = Launch::new()
        .args(&["--redis", url])
        .env("SSL_CERT_FILE", &other.files().cert.display().to_string())
        .start()
        .await;
    let http = c.http_addr.expect("http listener");
    poll_until(STEP, "readyz degraded", || async move {
        readyz(http).await.starts_with("HTTP/1.1 503")
    })
    .await;
    let push = PushClient::connect(c.push_addr).await;
    (other, c, push)
}

/// `rediss-cluster://`: a three-master Redis Cluster that speaks TLS only (clients and
/// its bus). Uids whose channels hash onto every primary are each pushed via the other
/// node, once and byte-exact, and a node that trusts another certificate stays alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_cluster_routes_through_every_primary_over_tls() {
    let cert = TestCert::new("redis-cluster");
    let cluster = RedisCluster::start_tls(&cert).await;
    let trust = cert.files().cert.display().to_string();
    let node = |ca: &str| {
        Launch::new()
            .args(&["--redis", &cluster.url()])
            .env("SSL_CERT_FILE", ca)
    };
    let (a, b) = (node(&trust).start().await, node(&trust).start().await);
    let uids: Vec<String> = (0..12).map(|i| format!("tls{i}")).collect();
    let mut tabs = Vec::new();
    for uid in &uids {
        let mut tab = WsClient::connect(&b.ws_url()).await;
        tab.bind(uid, b.push_addr).await;
        tabs.push(tab);
    }
    let mut push = PushClient::connect(a.push_addr).await;
    for (uid, tab) in uids.iter().zip(&mut tabs) {
        let line = format!(r#"{{"uid":"{uid}","n":1}}"#);
        push_until_received(&mut push, tab, &line, Duration::from_secs(10)).await;
    }
    let held = cluster.shard_channels().await;
    assert!(
        held.iter()
            .all(|channels| channels.iter().any(|c| c.starts_with("pw:u:tls"))),
        "every primary holds some of B's channels: {held:?}"
    );
    push_id_delivered_to_one(&mut push, &mut tabs[0], "7", "tls0").await;
    for tab in &mut tabs {
        tab.expect_silence(Duration::from_millis(50)).await;
    }
    let ready = readyz(a.http_addr.expect("http listener")).await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");

    let (_other, c, mut untrusting) = untrusting_node(&cluster.url()).await;
    assert_eq!(untrusting.request(r#"{"uid":"tls1"}"#).await, "fail\n");
    tabs[1].expect_silence(Duration::from_millis(300)).await;
    let log = c.wait_log("redis connection failed; retrying", STEP).await;
    assert!(
        String::from_utf8_lossy(&log).contains("Certificate"),
        "{}",
        c.log()
    );
}

/// A node started before its Redis Cluster serves (refused at first) joins it by itself
/// once the masters are up. fred 10 ends a cluster client's connection task for good when
/// its first cluster sync fails (refused, or "Invalid or missing cluster state" while the
/// cluster forms), whatever the reconnect policy: the node stayed degraded for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_its_redis_cluster_joins_it_when_it_comes() {
    let ports = [free_port(), free_port(), free_port()];
    let url = RedisCluster::url_of(ports, false);
    let early = Launch::new().args(&["--redis", &url]).start().await;
    early
        .wait_log("redis connection failed; retrying", STEP)
        .await;
    let http = early.http_addr.expect("http listener");
    assert!(readyz(http).await.starts_with("HTTP/1.1 503"));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let _cluster = RedisCluster::start_on(ports).await;
    poll_until(
        Duration::from_secs(15),
        "the early node ready",
        || async move { readyz(http).await.starts_with("HTTP/1.1 200") },
    )
    .await;
    let late = Launch::new().args(&["--redis", &url]).start().await;
    let mut tab = WsClient::connect(&early.ws_url()).await;
    let mut push = bound_via(&mut tab, early.push_addr, late.push_addr, "early").await;
    push_id_delivered_to_one(&mut push, &mut tab, "1", "early").await;
}

/// A node that stops answering with its connections still open (SIGSTOP: a hung process,
/// or a network partition as far as Redis can tell, which keeps a dead subscriber until
/// its `tcp-keepalive`, 300 s by default). Before: every push to its uids waited for the
/// cluster timeout and said `partial`. Its beats stop, so within 5 s plus a beat another
/// node closes its subscriber connections: its uids are `offline` and pushes to them
/// `fail` at once. Running again, it subscribes again by itself and its browser, kept
/// open meanwhile, gets pushes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_its_connections_open_is_dropped_then_heals() {
    let redis = Redis::start().await;
    stopped_node_is_dropped_then_heals(&redis.url(), &redis.cli_args()).await;
}

/// The same on a three-master Redis Cluster: the stopped node's subscriber connections
/// are found and closed on every primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_its_connections_open_is_dropped_then_heals_on_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    stopped_node_is_dropped_then_heals(&cluster.url(), &cluster.cli_args()).await;
}

/// And on a TLS-only one: the list of clients and the kill go over TLS to every primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_its_connections_open_is_dropped_then_heals_on_a_tls_redis_cluster() {
    let cert = TestCert::new("redis-cluster");
    let cluster = RedisCluster::start_tls(&cert).await;
    let trust = cert.files().cert.display().to_string();
    let env = [("SSL_CERT_FILE", trust.as_str())];
    stopped_node_is_dropped_then_heals_with(&cluster.url(), &cluster.cli_args(), &env).await;
}

/// `cli`: `redis-cli` arguments that reach the Redis (or a Redis Cluster node).
async fn stopped_node_is_dropped_then_heals(url: &str, cli: &[String]) {
    stopped_node_is_dropped_then_heals_with(url, cli, &[]).await;
}

/// The same, the nodes started with `env`.
async fn stopped_node_is_dropped_then_heals_with(url: &str, cli: &[String], env: &[(&str, &str)]) {
    let node = || {
        env.iter()
            .fold(Launch::new().args(&["--redis", url]), |l, (k, v)| {
                l.env(k, v)
            })
    };
    let (a, b) = (node().start().await, node().start().await);
    let mut tab = WsClient::connect(&b.ws_url()).await;
    tab.bind("hung", b.push_addr).await;
    let mut push = PushClient::connect(a.push_addr).await;
    let first = r#"{"uid":"hung","n":1}"#;
    push_until_received(&mut push, &mut tab, first, Duration::from_secs(10)).await;

    // Both nodes have beaten (two names and the last beat's time): each is known.
    poll_until(STEP, "both nodes beat", || {
        let cli = cli.to_vec();
        async move {
            let out = tokio::process::Command::new("redis-cli")
                .arg("-c")
                .args(&cli)
                .args(["HLEN", "{pw}:nodes"])
                .output()
                .await
                .expect("redis-cli");
            String::from_utf8_lossy(&out.stdout).trim() == "3"
        }
    })
    .await;
    b.signal("STOP").await;
    let stopped = Instant::now();
    // While B is counted but silent, a push waits the cluster timeout (1 s) and fails;
    // once B's subscriptions are closed, it fails at once.
    let probe = r#"{"uid":"hung"}"#;
    loop {
        let sent = Instant::now();
        let got = push.request(probe).await;
        assert_eq!(
            got,
            "fail\n",
            "after {:?}; A:\n{}\nB:\n{}",
            stopped.elapsed(),
            a.log(),
            b.log()
        );
        if sent.elapsed() < Duration::from_millis(300) {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "B never dropped:\n{}",
            a.log()
        );
    }
    let dropped = stopped.elapsed();
    assert!(
        dropped < Duration::from_secs(10),
        "dropped after {dropped:?}"
    );
    let reply = push.request(r#"/push q1 {"uid":"hung","n":2}"#).await;
    assert!(reply.contains("\"result\":\"offline\""), "{reply}");
    assert!(a.log().contains("a node stopped answering"), "{}", a.log());

    b.signal("CONT").await;
    let healed = r#"{"uid":"hung","n":3}"#;
    push_until(&mut push, healed, "ok\n", Duration::from_secs(15)).await;
    // Probes that waited out the timeout were in doubt and may still arrive: B had them
    // before the cut.
    loop {
        let got = tab.recv_text().await;
        if got == healed {
            break;
        }
        assert_eq!(
            got, probe,
            "only in-doubt probes come before the healed push"
        );
    }
}
