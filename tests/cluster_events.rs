//! Events in cluster mode (docs/events.md, "In a cluster"): three real daemons on one
//! `redis-server`, standalone and Redis Cluster (every script's keys in one slot, the
//! reaper's too), sending to one webhook receiver. A uid's tabs moving
//! between the nodes give one `online` and, when the last is gone, one `offline`, in
//! order, whichever node tells them; a node killed with -9 still yields the `close` of
//! its connections and the `offline` of its uids, within the documented bound.

#[macro_use]
mod common;
use common::redis::*;
use common::webhook::*;
use common::*;

use std::time::Duration;

use serde_json::Value;
use tokio::time::{Instant, sleep};

const DEBOUNCE_MS: u64 = 800;

/// A node on `redis` sending online, offline and close to `rx`.
async fn node(redis: &str, rx: &Receiver) -> Daemon {
    let url = rx.url("/hook#types=online,offline,close");
    let debounce = DEBOUNCE_MS.to_string();
    Launch::new()
        .args(&[
            "--redis",
            redis,
            "--events-url",
            &url,
            "--events-secret",
            SECRET,
            "--events-debounce-ms",
            &debounce,
        ])
        .start()
        .await
}

/// The uid events of `uid` the receiver took, as `(type, seq, node)`.
fn presence_of(rx: &Receiver, uid: &str) -> Vec<(String, u64, String)> {
    rx.taken()
        .iter()
        .filter(|e| e["uid"] == uid && (e["type"] == "online" || e["type"] == "offline"))
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["seq"].as_u64().unwrap(),
                e["node"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Waits until `uid` has `n` presence events; then a while longer, to see no more come.
async fn presence_settles(
    rx: &Receiver,
    uid: &str,
    n: usize,
    within: Duration,
) -> Vec<(String, u64, String)> {
    let deadline = Instant::now() + within;
    while presence_of(rx, uid).len() < n {
        assert!(
            Instant::now() < deadline,
            "{uid}: {:?} within {within:?}",
            presence_of(rx, uid)
        );
        sleep(Duration::from_millis(50)).await;
    }
    sleep(Duration::from_millis(DEBOUNCE_MS * 2)).await;
    presence_of(rx, uid)
}

/// Binds a tab of `uid` on `d`.
async fn tab(d: &Daemon, uid: &str) -> WsClient {
    let mut t = WsClient::connect(&d.ws_url()).await;
    t.bind(uid, d.push_addr).await;
    t
}

/// Tabs of one user hop over three nodes: opened on A, then B (A's closed), then C (B's
/// closed), then the last closes and, after a gap shorter than the debounce, one opens on
/// A again and closes. One `online`, one `offline`, in seq order, once each, from
/// whichever nodes.
async fn a_uids_tabs_moving_between_three_nodes_are_one_online_and_one_offline(redis: &str) {
    let rx = Receiver::start(|_| Answer::Status(204)).await;
    let (a, b, c) = (
        node(redis, &rx).await,
        node(redis, &rx).await,
        node(redis, &rx).await,
    );

    let t1 = tab(&a, "mover").await;
    let online = presence_settles(&rx, "mover", 1, STEP).await;
    assert_eq!(online[0].0, "online");
    let t2 = tab(&b, "mover").await;
    t1.close().await;
    let t3 = tab(&c, "mover").await;
    t2.close().await;
    // Every tab gone for less than the debounce, then back on another node.
    t3.close().await;
    sleep(Duration::from_millis(DEBOUNCE_MS / 4)).await;
    let t4 = tab(&a, "mover").await;
    sleep(Duration::from_millis(DEBOUNCE_MS * 2)).await;
    assert_eq!(
        presence_of(&rx, "mover").len(),
        1,
        "{:?}",
        presence_of(&rx, "mover")
    );
    t4.close().await;
    let events = presence_settles(&rx, "mover", 2, STEP).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(kinds, ["online", "offline"], "{events:?}");
    assert!(events[0].1 < events[1].1, "in seq order: {events:?}");
    // Four closes, told by the nodes that held the tabs.
    let closes = rx
        .taken()
        .iter()
        .filter(|e| e["type"] == "close" && e["uid"] == "mover")
        .count();
    assert_eq!(closes, 4);
}

/// A node killed with -9 says nothing; the survivors reap it: the `close` of its tab
/// (1006, `node lost`, the seq above any it had) and the `offline` of the uid it alone
/// held, within 5 s (dead) + 1 s (a beat) + the debounce; a uid also held elsewhere stays
/// online. Once each, though two nodes survive.
async fn a_node_killed_with_sigkill_still_yields_its_closes_and_offlines(redis: &str) {
    let rx = Receiver::start(|_| Answer::Status(204)).await;
    let (a, _b, mut c) = (
        node(redis, &rx).await,
        node(redis, &rx).await,
        node(redis, &rx).await,
    );
    let _on_a = tab(&a, "both").await;
    let _on_c = tab(&c, "both").await;
    let _alone = tab(&c, "k9").await;
    presence_settles(&rx, "k9", 1, STEP).await;
    presence_settles(&rx, "both", 1, STEP).await;
    // C's connections are in Redis once it has synced them: a moment.
    sleep(Duration::from_millis(500)).await;

    c.kill9();
    let killed = Instant::now();
    let bound =
        Duration::from_secs(6) + Duration::from_millis(DEBOUNCE_MS) + Duration::from_secs(1);
    let k9 = presence_settles(&rx, "k9", 2, bound + STEP).await;
    let took = killed.elapsed() - Duration::from_millis(DEBOUNCE_MS * 2);
    assert_eq!(k9.len(), 2, "{k9:?}");
    assert_eq!(k9[1].0, "offline");
    assert!(k9[0].1 < k9[1].1);
    assert_ne!(k9[1].2, c_node(&rx), "told by a survivor");
    assert!(
        took < bound + Duration::from_secs(2),
        "offline after {took:?}"
    );
    let reaped: Vec<Value> = rx
        .taken()
        .into_iter()
        .filter(|e| e["type"] == "close" && e["reason"] == "node lost")
        .collect();
    assert_eq!(reaped.len(), 2, "C's two tabs, once each: {reaped:#?}");
    for e in &reaped {
        assert_eq!(e["code"], 1006);
        assert_eq!(e["seq"], 1u64 << 32);
        assert!(
            e["conn"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{}-", c_node(&rx)))
        );
    }
    let mut uids: Vec<&str> = reaped.iter().map(|e| e["uid"].as_str().unwrap()).collect();
    uids.sort_unstable();
    assert_eq!(uids, ["both", "k9"]);
    assert_eq!(presence_of(&rx, "both").len(), 1, "still online on A");
}

/// C's node id: k9's `online` could only be told by C, its one node.
fn c_node(rx: &Receiver) -> String {
    presence_of(rx, "k9")[0].2.clone()
}

/// Redis that lost its data (here `FLUSHALL`) under two nodes with users online: each
/// node tells Redis again what it holds, silently. Nobody went offline, so no second
/// `online`; the node does not call itself reaped; and a user who then leaves gets
/// exactly one `offline`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_that_lost_its_data_gives_no_second_online() {
    let redis = Redis::start().await;
    let rx = Receiver::start(|_| Answer::Status(204)).await;
    let (a, b) = (node(&redis.url(), &rx).await, node(&redis.url(), &rx).await);
    let on_a = tab(&a, "stay").await;
    let on_b = tab(&b, "stay").await;
    let lone = tab(&b, "lone").await;
    presence_settles(&rx, "stay", 1, STEP).await;
    presence_settles(&rx, "lone", 1, STEP).await;
    let flushed = redis.cli(&["FLUSHALL"]).await;
    assert_eq!(flushed.trim(), "OK");
    for d in [&a, &b] {
        d.wait_log("redis lost its data", 3 * STEP).await;
    }
    // A few beats, for any node that would tell its uids again.
    sleep(Duration::from_secs(3)).await;
    for uid in ["stay", "lone"] {
        let events = presence_of(&rx, uid);
        assert_eq!(events.len(), 1, "{uid}: {events:?}");
    }
    for d in [&a, &b] {
        assert!(!d.log().contains("reaped as dead"), "{}", d.log());
    }
    lone.close().await;
    let events = presence_settles(&rx, "lone", 2, STEP).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(kinds, ["online", "offline"], "{events:?}");
    // One tab of `stay` left: still online, nothing told.
    on_a.close().await;
    sleep(Duration::from_millis(DEBOUNCE_MS * 2)).await;
    assert_eq!(presence_of(&rx, "stay").len(), 1);
    drop(on_b);
}

/// A node on `redis` sending group events to `rx`, with a short group grace period.
async fn group_node(redis: &str, rx: &Receiver) -> Daemon {
    let url = rx.url("/hook#types=group_occupied,group_vacated");
    Launch::new()
        .args(&[
            "--redis",
            redis,
            "--events-url",
            &url,
            "--events-secret",
            SECRET,
            "--group-grace-ms",
            "600",
            // What is checked is once-only, not speed: a loaded machine (the whole suite on
            // 2 cores) once made a `/join` wait past the default 1 s and answer fail.
            "--cluster-timeout-ms",
            "5000",
        ])
        .start()
        .await
}

/// The group events of `group` the receiver took, as `(type, seq, node)`, in seq order.
fn group_events(rx: &Receiver, group: &str) -> Vec<(String, u64, String)> {
    let mut events: Vec<_> = rx
        .taken()
        .iter()
        .filter(|e| e["group"] == group)
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["seq"].as_u64().unwrap(),
                e["node"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    events.sort_by_key(|e| e.1);
    events
}

/// Waits until `group` has `n` events, then a while longer to see no more come.
async fn groups_settle(rx: &Receiver, group: &str, n: usize) -> Vec<(String, u64, String)> {
    let deadline = Instant::now() + STEP;
    while group_events(rx, group).len() < n {
        assert!(
            Instant::now() < deadline,
            "{group}: {:?}",
            group_events(rx, group)
        );
        sleep(Duration::from_millis(50)).await;
    }
    sleep(Duration::from_millis(1000)).await;
    group_events(rx, group)
}

/// Groups live in Redis in cluster mode: the node whose script made a group tells its
/// `group_occupied`, the one whose script emptied it its `group_vacated`, once each
/// however many nodes join and leave it, even three joining at the same instant; and a
/// grace period ending (swept by every node) or a kick empties it once too. Each event's
/// seq is above the one before, whichever node told it.
async fn groups_are_occupied_and_vacated_once_across_three_nodes(redis: &str) {
    let rx = Receiver::start(|_| Answer::Status(204)).await;
    let nodes = [
        group_node(redis, &rx).await,
        group_node(redis, &rx).await,
        group_node(redis, &rx).await,
    ];
    let mut push = Vec::new();
    for d in &nodes {
        push.push(PushClient::connect(d.push_addr).await);
    }
    let _tabs = [tab(&nodes[0], "u1").await, tab(&nodes[1], "u2").await];

    // Made on A, joined on B, left on C (still occupied), emptied on A.
    assert!(
        push[0]
            .request("/join room u1")
            .await
            .contains("\"ok\":true")
    );
    assert!(
        push[1]
            .request("/join room u2")
            .await
            .contains("\"ok\":true")
    );
    assert!(
        push[2]
            .request("/leave room u1")
            .await
            .contains("\"ok\":true")
    );
    assert!(
        push[0]
            .request("/leave room u2")
            .await
            .contains("\"ok\":true")
    );
    let room = groups_settle(&rx, "room", 2).await;
    let kinds: Vec<&str> = room.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(kinds, ["group_occupied", "group_vacated"], "{room:?}");
    assert_ne!(room[0].2, "", "told by a node");

    // Three nodes make the same group at once: one occupied; three leave at once: one
    // vacated.
    let [a, b, c] = push.as_mut_slice() else {
        unreachable!()
    };
    let (ra, rb, rc) = tokio::join!(
        a.request("/join race u1"),
        b.request("/join race u2"),
        c.request("/join race u3"),
    );
    for r in [ra, rb, rc] {
        assert!(r.contains("\"ok\":true"), "{r}");
    }
    let (ra, rb, rc) = tokio::join!(
        a.request("/leave race u1"),
        b.request("/leave race u2"),
        c.request("/leave race u3"),
    );
    for r in [ra, rb, rc] {
        assert!(r.contains("\"ok\":true"), "{r}");
    }
    let race = groups_settle(&rx, "race", 2).await;
    let kinds: Vec<&str> = race.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(kinds, ["group_occupied", "group_vacated"], "{race:?}");

    // A uid with no connection anywhere: its grace period ends and every node's sweeper
    // may find it due; the group it alone was in is vacated once.
    assert!(
        push[1]
            .request("/join lonely ghost")
            .await
            .contains("\"ok\":true")
    );
    let lonely = groups_settle(&rx, "lonely", 2).await;
    let kinds: Vec<&str> = lonely.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(kinds, ["group_occupied", "group_vacated"], "{lonely:?}");

    // A kick drops a uid's groups at once: the one it alone held is vacated.
    assert!(
        push[2]
            .request("/join kicked u2")
            .await
            .contains("\"ok\":true")
    );
    assert!(push[0].request("/kick u2").await.contains("\"ok\":true"));
    let kicked = groups_settle(&rx, "kicked", 2).await;
    let kinds: Vec<&str> = kicked.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(kinds, ["group_occupied", "group_vacated"], "{kicked:?}");

    // Every group event, whichever node told it, in one increasing order of seq that is
    // the order they happened.
    let all: Vec<u64> = ["room", "race", "lonely", "kicked"]
        .iter()
        .flat_map(|g| group_events(&rx, g))
        .map(|e| e.1)
        .collect();
    assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
}

/// A node on `redis` without receivers of its own (`--events-url` given to another).
async fn bare_node(redis: &str) -> Daemon {
    let debounce = DEBOUNCE_MS.to_string();
    Launch::new()
        .args(&["--redis", redis, "--events-debounce-ms", &debounce])
        .rust_log("info")
        .start()
        .await
}

/// Only node A was given `--events-url`; B and C were not (a rolling change, or a
/// mistake). A says so (WARN, and on its live page); B and C still take part once they
/// see A's receivers: a uid held only on B and C is one `online` (decided on B, relayed
/// through Redis to A) and one `offline`; a group made through C's push port is told; and
/// C killed with -9 still yields its tab's `close` and its uid's `offline`, told by A.
async fn nodes_without_receivers_still_count_and_relay_to_one_with_them(redis: &str) {
    let rx = Receiver::start(|_| Answer::Status(204)).await;
    let url = rx.url("/hook#types=online,offline,close,group_occupied");
    let debounce = DEBOUNCE_MS.to_string();
    let a = Launch::new()
        .args(&[
            "--redis",
            redis,
            "--events-url",
            &url,
            "--events-secret",
            SECRET,
            "--events-debounce-ms",
            &debounce,
        ])
        .start()
        .await;
    let b = bare_node(redis).await;
    let mut c = bare_node(redis).await;
    for d in [&b, &c] {
        d.wait_line("takes part in cluster presence", STEP).await;
    }
    a.wait_line("other --events-url receivers than this one", STEP)
        .await;
    let differ = common::redis::http_get(a.http_addr.unwrap(), "/status.json").await;
    let differ: Value = serde_json::from_str(differ.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(
        differ["cluster"]["receivers_differ"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{differ:#}"
    );

    // A uid on B, then C (B's tab closed), then gone.
    let t1 = tab(&b, "relayed").await;
    let online = presence_settles(&rx, "relayed", 1, STEP).await;
    assert_eq!(online[0].0, "online");
    let t2 = tab(&c, "relayed").await;
    t1.close().await;
    sleep(Duration::from_millis(DEBOUNCE_MS * 2)).await;
    assert_eq!(presence_of(&rx, "relayed").len(), 1, "a move is no offline");
    t2.close().await;
    let events = presence_settles(&rx, "relayed", 2, STEP).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(kinds, ["online", "offline"], "{events:?}");
    assert!(events[0].1 < events[1].1);
    assert_ne!(
        events[0].2, events[1].2,
        "online decided on B, offline told by A"
    );

    // A group made through C's push port.
    let mut push = PushClient::connect(c.push_addr).await;
    assert!(
        push.request("/join relayed-room x")
            .await
            .contains("\"ok\":true")
    );
    rx.wait_taken(1, STEP).await;
    let deadline = Instant::now() + STEP;
    while !rx.taken().iter().any(|e| e["group"] == "relayed-room") {
        assert!(Instant::now() < deadline, "{:#?}", rx.taken());
        sleep(Duration::from_millis(50)).await;
    }

    // C dies holding a tab: A reaps it.
    let _k = tab(&c, "k9-bare").await;
    presence_settles(&rx, "k9-bare", 1, STEP).await;
    sleep(Duration::from_millis(500)).await;
    c.kill9();
    let bound =
        Duration::from_secs(6) + Duration::from_millis(DEBOUNCE_MS) + Duration::from_secs(1);
    let k9 = presence_settles(&rx, "k9-bare", 2, bound + STEP).await;
    assert_eq!(k9[1].0, "offline", "{k9:?}");
    let reaped = rx
        .taken()
        .into_iter()
        .filter(|e| e["type"] == "close" && e["reason"] == "node lost" && e["uid"] == "k9-bare")
        .count();
    assert_eq!(reaped, 1);
}

on_both!(
    a_uids_tabs_moving_between_three_nodes_are_one_online_and_one_offline,
    a_node_killed_with_sigkill_still_yields_its_closes_and_offlines,
    groups_are_occupied_and_vacated_once_across_three_nodes,
    nodes_without_receivers_still_count_and_relay_to_one_with_them,
);
