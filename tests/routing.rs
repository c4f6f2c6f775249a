//! Routing and presence on the push port (issue 3), over real sockets: `/ping`, `/send`,
//! `/push`, groups (`/join`, `/leave`, `/group`, `/members`) and their grace period,
//! `/broadcast`, `/online`, `/count`, `/uids` paging under churn, `/kick`, `/stats`, bad
//! commands, and pushes whose JSON merely looks like a command.
//!
//! Replies are compared byte-exact where they are plain lines (`pong`, `ok`, `fail`) and as
//! parsed JSON otherwise; browsers' frames are compared byte-exact. "Exactly once" and "not
//! reached" are shown with a marker: after the pushes under test, a fresh plain push goes to
//! the uid and must be the very next frame on each of its tabs (one connection's frames keep
//! their order, so a duplicate or a misrouted frame would have come first).
mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use pushwire::Config;
use serde_json::{Value, json};
use tokio::time::Instant;

/// Group grace period of the servers that test it.
const GRACE: Duration = Duration::from_millis(300);

fn grace_config() -> Config {
    Config {
        group_grace: GRACE,
        ..Default::default()
    }
}

/// `s` as one JSON-string ARG (`"a b"`), so any uid or group name fits in a command.
fn arg(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Sends one command line and returns its reply, which must be one line of one JSON object.
async fn cmd(push: &mut PushClient, line: &str) -> Value {
    let reply = push.request(line).await;
    json_reply(&reply, line)
}

fn json_reply(reply: &str, what: &str) -> Value {
    let body = reply
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("reply to {what:?} has no newline: {reply:?}"));
    assert!(
        !body.contains('\n'),
        "reply to {what:?} spans lines: {reply:?}"
    );
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("reply to {what:?} is not JSON ({e}): {reply:?}"));
    assert!(
        v.is_object(),
        "reply to {what:?} is not an object: {reply:?}"
    );
    v
}

/// `v` must be exactly `{"ok":false,"error":"..."}` with every word of `words` in the error.
fn assert_error(v: &Value, what: &str, words: &[&str]) {
    let obj = v.as_object().unwrap();
    assert_eq!(
        obj.len(),
        2,
        "error reply to {what:?} has extra fields: {v}"
    );
    assert_eq!(v["ok"], json!(false), "reply to {what:?}: {v}");
    let error = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("reply to {what:?} has no error text: {v}"));
    for w in words {
        assert!(
            error.contains(w),
            "error for {what:?} does not mention {w:?}: {error:?}"
        );
    }
}

/// The `"uids"` array of a reply as a set (`/members` and `/uids` promise no order).
fn uid_set(v: &Value) -> BTreeSet<String> {
    let list = v["uids"]
        .as_array()
        .unwrap_or_else(|| panic!("no uids array in {v}"));
    let set: BTreeSet<String> = list
        .iter()
        .map(|u| u.as_str().expect("uid is a string").to_owned())
        .collect();
    assert_eq!(set.len(), list.len(), "a uid is listed twice in {v}");
    set
}

fn set_of(uids: &[&str]) -> BTreeSet<String> {
    uids.iter().map(|u| (*u).to_owned()).collect()
}

/// `/members GROUP` must list exactly `uids`, with a matching count.
async fn assert_members(push: &mut PushClient, group: &str, uids: &[&str]) {
    let v = cmd(push, &format!("/members {}", arg(group))).await;
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["group"], json!(group), "{v}");
    assert_eq!(v["count"], json!(uids.len()), "{v}");
    assert_eq!(uid_set(&v), set_of(uids), "members of {group:?}");
}

/// A tab bound to `uid` (through the harness's probing bind).
async fn tab(server: &TestServer, uid: &str) -> WsClient {
    let mut t = WsClient::connect(&server.ws_url()).await;
    t.bind(uid, server.push_addr).await;
    t
}

/// `n` tabs bound to `uid`.
async fn tabs(server: &TestServer, uid: &str, n: usize) -> Vec<WsClient> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(tab(server, uid).await);
    }
    v
}

/// A tab bound to `uid` without any probe frame: sends the uid, then polls `/online` until
/// the uid has `conns` connections (this one included).
async fn quiet_tab(server: &TestServer, push: &mut PushClient, uid: &str, conns: u64) -> WsClient {
    let mut t = WsClient::connect(&server.ws_url()).await;
    t.send_text(uid).await;
    wait_online(push, uid, conns).await;
    t
}

/// Polls `/online UID` until it reports `conns` connections (and `online` to match).
async fn wait_online(push: &mut PushClient, uid: &str, conns: u64) {
    let deadline = Instant::now() + STEP;
    loop {
        let v = cmd(push, &format!("/online {}", arg(uid))).await;
        if v["connections"] == json!(conns) {
            assert_eq!(
                v,
                json!({"ok": true, "uid": uid, "online": conns > 0, "connections": conns})
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "uid {uid:?} did not reach {conns} connections within {STEP:?}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls `/count` until it reports `uids` uids and `conns` connections.
async fn wait_count(push: &mut PushClient, uids: u64, conns: u64) -> Value {
    let deadline = Instant::now() + STEP;
    loop {
        let v = cmd(push, "/count").await;
        if v["uids"] == json!(uids) && v["connections"] == json!(conns) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "/count never reached {uids} uids / {conns} connections: {v}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

static MARK: AtomicU64 = AtomicU64::new(1);

/// Pushes a fresh marker line to `uid` and asserts it is the next frame on every one of
/// `tabs`: nothing else (a duplicate, a misrouted group push) is waiting before it.
async fn assert_next_is_marker<'a>(
    push: &mut PushClient,
    uid: &str,
    tabs: impl IntoIterator<Item = &'a mut WsClient>,
) {
    let n = MARK.fetch_add(1, Ordering::Relaxed);
    let line = format!("{{\"uid\":{},\"marker\":{n}}}", arg(uid));
    assert_eq!(push.request(&line).await, "ok\n", "marker to {uid:?}");
    for (i, t) in tabs.into_iter().enumerate() {
        assert_eq!(
            t.recv_text().await,
            line,
            "tab {i} of {uid:?} got something else before the marker"
        );
    }
}

/// Walks `/uids` with page size `limit` from cursor 0 until `next` is null; returns every
/// uid listed. Panics if a walk lists a uid twice or a non-final page is short.
async fn walk_uids(push: &mut PushClient, limit: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut cursor = 0u64;
    for _ in 0..1000 {
        let v = cmd(push, &format!("/uids {cursor} {limit}")).await;
        assert_eq!(v["ok"], json!(true), "{v}");
        let page = v["uids"].as_array().expect("uids array");
        assert_eq!(v["count"], json!(page.len()), "{v}");
        for u in page {
            let u = u.as_str().expect("uid string").to_owned();
            assert!(seen.insert(u.clone()), "uid {u:?} listed twice in one walk");
        }
        match &v["next"] {
            Value::Null => return seen,
            next => {
                assert!(
                    page.len() >= limit,
                    "a page before the last holds {} < {limit} uids",
                    page.len()
                );
                let next = next.as_u64().unwrap_or_else(|| panic!("bad next in {v}"));
                assert!(next > cursor, "cursor does not advance: {cursor} -> {next}");
                cursor = next;
            }
        }
    }
    panic!("/uids walk did not end within 1000 pages");
}

// ---------------------------------------------------------------------------------------
// ping

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_answers_pong_in_order_with_pushes() {
    let server = TestServer::start().await;
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request("/ping").await, "pong\n");
    // CRLF like any line; pipelined with pushes and other commands, replies keep their order.
    push.send_raw(b"/ping\r\n{\"uid\":\"nobody\"}\n/ping\n/count\n/ping\n")
        .await;
    assert_eq!(push.read_reply().await, "pong\n");
    assert_eq!(push.read_reply().await, "fail\n");
    assert_eq!(push.read_reply().await, "pong\n");
    let count = push.read_reply().await;
    assert_eq!(
        json_reply(&count, "/count"),
        json!({"ok": true, "uids": 0, "connections": 0, "groups": 0})
    );
    assert_eq!(push.read_reply().await, "pong\n");
    let v = cmd(&mut push, "/ping now").await;
    assert_error(&v, "/ping now", &["unexpected argument"]);
    assert_eq!(push.request("/ping").await, "pong\n");
}

// ---------------------------------------------------------------------------------------
// /send

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reaches_every_listed_uid_once_and_counts_them() {
    let server = TestServer::start().await;
    let mut a = tabs(&server, "a", 2).await;
    let mut b = tab(&server, "b").await;
    let mut seven = tab(&server, "7").await;
    let mut spaced = tab(&server, "x y").await;
    let mut push = PushClient::connect(server.push_addr).await;

    // Two tabs, one tab, an integer uid, a duplicate and an offline uid; the payload is the
    // rest of the line, verbatim: inner double spaces, JSON, a command-looking string,
    // non-ASCII, a trailing space.
    let payload = r#"{"msg":"hi  there","n":[1, 2],"cmd":"/kick a"} ✓ tail "#;
    let line = format!(r#"/send ["a","b",7,"a","off"]   {payload}"#);
    assert_eq!(
        cmd(&mut push, &line).await,
        json!({"ok": true, "uids": 4, "reached": 3, "connections": 4, "refused": 0})
    );
    for t in a.iter_mut().chain([&mut b, &mut seven]) {
        assert_eq!(t.recv_text().await, payload);
    }
    assert_next_is_marker(&mut push, "a", a.iter_mut()).await;
    assert_next_is_marker(&mut push, "b", [&mut b]).await;
    assert_next_is_marker(&mut push, "7", [&mut seven]).await;
    assert_next_is_marker(&mut push, "x y", [&mut spaced]).await;

    // One uid as a bare word; the payload keeps its inner and trailing spaces.
    assert_eq!(
        cmd(&mut push, "/send b hello  world ").await,
        json!({"ok": true, "uids": 1, "reached": 1, "connections": 1, "refused": 0})
    );
    assert_eq!(b.recv_text().await, "hello  world ");
    // A bare word that looks like an integer is that uid.
    assert_eq!(
        cmd(&mut push, "/send 7 seven").await,
        json!({"ok": true, "uids": 1, "reached": 1, "connections": 1, "refused": 0})
    );
    assert_eq!(seven.recv_text().await, "seven");
    // One uid as a JSON string (it may contain spaces).
    assert_eq!(
        cmd(&mut push, r#"/send "x y" {"to":"x y"}"#).await,
        json!({"ok": true, "uids": 1, "reached": 1, "connections": 1, "refused": 0})
    );
    assert_eq!(spaced.recv_text().await, r#"{"to":"x y"}"#);
    // A CRLF line: the \r is not part of the payload.
    push.send_raw(b"/send a crlf\r\n").await;
    assert_eq!(
        json_reply(&push.read_reply().await, "/send a crlf"),
        json!({"ok": true, "uids": 1, "reached": 1, "connections": 2, "refused": 0})
    );
    for t in a.iter_mut() {
        assert_eq!(t.recv_text().await, "crlf");
    }

    // Nobody reached: ok is false, counts say why.
    assert_eq!(
        cmd(&mut push, r#"/send ["off",8,"off"] lost"#).await,
        json!({"ok": false, "uids": 2, "reached": 0, "connections": 0, "refused": 0})
    );
    assert_eq!(
        cmd(&mut push, "/send off lost").await,
        json!({"ok": false, "uids": 1, "reached": 0, "connections": 0, "refused": 0})
    );
    assert_next_is_marker(&mut push, "a", a.iter_mut()).await;
    assert_next_is_marker(&mut push, "b", [&mut b]).await;
    assert_next_is_marker(&mut push, "7", [&mut seven]).await;
    assert_next_is_marker(&mut push, "x y", [&mut spaced]).await;
}

// ---------------------------------------------------------------------------------------
// /push and plain pushes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_command_reports_delivered_offline_malformed_with_its_id() {
    let server = TestServer::start().await;
    let mut p = tabs(&server, "p", 2).await;
    let mut push = PushClient::connect(server.push_addr).await;

    let line = r#"{"uid":"p","msg":"hi  there"}"#;
    assert_eq!(
        cmd(&mut push, &format!("/push 42 {line}")).await,
        json!({"ok": true, "result": "delivered", "connections": 2, "refused": 0, "id": "42"})
    );
    for t in p.iter_mut() {
        assert_eq!(t.recv_text().await, line);
    }
    assert_eq!(
        cmd(&mut push, r#"/push "req 7" {"uid":"nobody","x":1}"#).await,
        json!({"ok": false, "result": "offline", "connections": 0, "refused": 0, "id": "req 7"})
    );

    // Malformed lines: result "malformed", an error text, the id; nothing delivered.
    for (id, bad, word) in [
        ("m1", r#"{"uid":"#, "JSON"),
        ("m2", r#"{"x":"p"}"#, "uid"),
        ("m3", r#"{"uid":1.5}"#, "uid"),
        ("m4", r#"["p"]"#, "object"),
        // A command inside /push is a (bad) push line, never run.
        ("m5", "/kick p", "JSON"),
    ] {
        let v = cmd(&mut push, &format!("/push {id} {bad}")).await;
        let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["ok", "result", "error", "id"]),
            "{bad}: {v}"
        );
        assert_eq!(v["ok"], json!(false), "{bad}: {v}");
        assert_eq!(v["result"], json!("malformed"), "{bad}: {v}");
        assert_eq!(v["id"], json!(id), "{bad}: {v}");
        let error = v["error"].as_str().unwrap();
        assert!(
            error.contains(word),
            "{bad}: error {error:?} lacks {word:?}"
        );
    }
    assert_next_is_marker(&mut push, "p", p.iter_mut()).await;

    // Pipelined: one write, replies in order, each carrying its own id.
    push.send_raw(
        concat!(
            "/push a1 {\"uid\":\"p\",\"n\":1}\n",
            "/push a2 {\"uid\":\"nobody\"}\n",
            "/push a3 {\"uid\":\n",
            "{\"uid\":\"p\",\"n\":\"plain\"}\n",
            "/push \"a 5\" {\"uid\":\"p\",\"n\":2}\n",
        )
        .as_bytes(),
    )
    .await;
    let r1 = json_reply(&push.read_reply().await, "a1");
    let r2 = json_reply(&push.read_reply().await, "a2");
    let r3 = json_reply(&push.read_reply().await, "a3");
    assert_eq!(push.read_reply().await, "ok\n");
    let r5 = json_reply(&push.read_reply().await, "a 5");
    assert_eq!(
        r1,
        json!({"ok": true, "result": "delivered", "connections": 2, "refused": 0, "id": "a1"})
    );
    assert_eq!(
        r2,
        json!({"ok": false, "result": "offline", "connections": 0, "refused": 0, "id": "a2"})
    );
    assert_eq!(
        (&r3["result"], &r3["id"]),
        (&json!("malformed"), &json!("a3"))
    );
    assert_eq!(
        r5,
        json!({"ok": true, "result": "delivered", "connections": 2, "refused": 0, "id": "a 5"})
    );
    for t in p.iter_mut() {
        assert_eq!(t.recv_text().await, r#"{"uid":"p","n":1}"#);
        assert_eq!(t.recv_text().await, r#"{"uid":"p","n":"plain"}"#);
        assert_eq!(t.recv_text().await, r#"{"uid":"p","n":2}"#);
    }

    // An ID must be a word or a JSON string.
    let v = cmd(&mut push, r#"/push ["x"] {"uid":"p"}"#).await;
    assert_error(&v, "/push [..]", &["ID"]);

    // Plain lines keep their byte-exact ok/fail.
    assert_eq!(push.request(r#"{"uid":"p","plain":1}"#).await, "ok\n");
    assert_eq!(push.request(r#"{"uid":"nobody"}"#).await, "fail\n");
    assert_eq!(push.request(r#"{"uid":"#).await, "fail\n");
    for t in p.iter_mut() {
        assert_eq!(t.recv_text().await, r#"{"uid":"p","plain":1}"#);
    }
    assert_next_is_marker(&mut push, "p", p.iter_mut()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_command_reports_refused_by_a_full_queue() {
    let server = TestServer::start_with(Config {
        queue_depth: 4,
        ..Default::default()
    })
    .await;
    let mut push = PushClient::connect(server.push_addr).await;
    // A browser that never reads: its socket buffers fill, then its queue.
    let mut stuck = RawWsClient::connect_small_rcvbuf(server.ws_addr, "/").await;
    stuck.send_text("stuck").await;
    wait_online(&mut push, "stuck", 1).await;

    let line = format!(r#"{{"uid":"stuck","pad":"{}"}}"#, "x".repeat(64 * 1024));
    let mut delivered = 0;
    let refused = loop {
        let v = cmd(&mut push, &format!("/push n{delivered} {line}")).await;
        if v["result"] != json!("delivered") {
            break v;
        }
        delivered += 1;
        assert!(delivered < 2000, "the stuck queue never filled");
    };
    assert_eq!(
        refused,
        json!({"ok": false, "result": "refused", "connections": 0, "refused": 1,
               "id": format!("n{delivered}")})
    );
    let stats = cmd(&mut push, "/stats").await;
    assert_eq!(stats["evicted"], json!(1), "{stats}");
    // The evicted connection leaves the registry: the same push is now "offline".
    wait_online(&mut push, "stuck", 0).await;
    assert_eq!(
        cmd(&mut push, r#"/push last {"uid":"stuck"}"#).await,
        json!({"ok": false, "result": "offline", "connections": 0, "refused": 0, "id": "last"})
    );
}

// ---------------------------------------------------------------------------------------
// groups

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_push_reaches_every_tab_of_members_and_no_one_else() {
    let server = TestServer::start().await;
    let mut m1 = tabs(&server, "m1", 2).await;
    let mut m2 = tab(&server, "m2").await;
    let mut outsider = tab(&server, "outsider").await;
    let mut push = PushClient::connect(server.push_addr).await;

    assert_eq!(
        cmd(&mut push, r#"/join room ["m1","m2","m1"]"#).await,
        json!({"ok": true, "group": "room", "added": 2, "members": 2})
    );
    assert_eq!(
        cmd(&mut push, "/join room m1").await,
        json!({"ok": true, "group": "room", "added": 0, "members": 2})
    );
    assert_members(&mut push, "room", &["m1", "m2"]).await;

    let payload = r#"{"room":"room","msg":"hi  all"} ✓"#;
    assert_eq!(
        cmd(&mut push, &format!("/group room {payload}")).await,
        json!({"ok": true, "group": "room", "members": 2, "reached": 2, "connections": 3,
               "refused": 0})
    );
    for t in m1.iter_mut().chain([&mut m2]) {
        assert_eq!(t.recv_text().await, payload);
    }
    assert_next_is_marker(&mut push, "m1", m1.iter_mut()).await;
    assert_next_is_marker(&mut push, "m2", [&mut m2]).await;
    assert_next_is_marker(&mut push, "outsider", [&mut outsider]).await;

    // Membership belongs to the uid: a tab that binds m1 later is in the room too.
    m1.push(tab(&server, "m1").await);
    assert_eq!(
        cmd(&mut push, "/group room second").await,
        json!({"ok": true, "group": "room", "members": 2, "reached": 2, "connections": 4,
               "refused": 0})
    );
    for t in m1.iter_mut().chain([&mut m2]) {
        assert_eq!(t.recv_text().await, "second");
    }

    // /leave: m2 no longer gets the room's pushes; leaving twice removes nothing.
    assert_eq!(
        cmd(&mut push, "/leave room m2").await,
        json!({"ok": true, "group": "room", "removed": 1, "members": 1})
    );
    assert_eq!(
        cmd(&mut push, r#"/leave room ["m2","outsider"]"#).await,
        json!({"ok": true, "group": "room", "removed": 0, "members": 1})
    );
    assert_members(&mut push, "room", &["m1"]).await;
    assert_eq!(
        cmd(&mut push, "/group room third").await,
        json!({"ok": true, "group": "room", "members": 1, "reached": 1, "connections": 3,
               "refused": 0})
    );
    for t in m1.iter_mut() {
        assert_eq!(t.recv_text().await, "third");
    }
    assert_next_is_marker(&mut push, "m1", m1.iter_mut()).await;
    assert_next_is_marker(&mut push, "m2", [&mut m2]).await;
    assert_next_is_marker(&mut push, "outsider", [&mut outsider]).await;

    // Group names may be JSON strings; groups are independent.
    assert_eq!(
        cmd(&mut push, r#"/join "my room" ["m2",7]"#).await,
        json!({"ok": true, "group": "my room", "added": 2, "members": 2})
    );
    assert_members(&mut push, "my room", &["m2", "7"]).await;
    assert_eq!(
        cmd(&mut push, "/count").await,
        json!({"ok": true, "uids": 3, "connections": 5, "groups": 2})
    );
    assert_eq!(
        cmd(&mut push, r#"/group "my room" to my room"#).await,
        json!({"ok": true, "group": "my room", "members": 2, "reached": 1, "connections": 1,
               "refused": 0})
    );
    assert_eq!(m2.recv_text().await, "to my room");
    assert_next_is_marker(&mut push, "m1", m1.iter_mut()).await;

    // The last member leaving removes the group.
    assert_eq!(
        cmd(&mut push, "/leave room m1").await,
        json!({"ok": true, "group": "room", "removed": 1, "members": 0})
    );
    assert_members(&mut push, "room", &[]).await;
    assert_eq!(
        cmd(&mut push, "/group room nobody").await,
        json!({"ok": false, "group": "room", "members": 0, "reached": 0, "connections": 0,
               "refused": 0})
    );
    assert_eq!(cmd(&mut push, "/count").await["groups"], json!(1));
    assert_next_is_marker(&mut push, "m1", m1.iter_mut()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_within_grace_keeps_groups() {
    let server = TestServer::start_with(grace_config()).await;
    let mut push = PushClient::connect(server.push_addr).await;
    let u1 = tabs(&server, "u1", 2).await;
    assert_eq!(
        cmd(&mut push, "/join room u1").await,
        json!({"ok": true, "group": "room", "added": 1, "members": 1})
    );

    // Close every tab and wait until the server has seen it: u1 is really offline.
    let closed_at = Instant::now();
    for t in u1 {
        t.close().await;
    }
    wait_online(&mut push, "u1", 0).await;
    assert_members(&mut push, "room", &["u1"]).await;

    // Reconnect inside the grace period.
    let mut back = tab(&server, "u1").await;
    let offline_for = closed_at.elapsed();
    assert!(
        offline_for < GRACE,
        "test too slow: the reconnect took {offline_for:?}, not inside the {GRACE:?} grace"
    );
    // Let the old grace period run out: the reconnect must have cancelled the expiry.
    tokio::time::sleep(GRACE * 2).await;
    assert_members(&mut push, "room", &["u1"]).await;
    assert_eq!(
        cmd(&mut push, "/group room still here").await,
        json!({"ok": true, "group": "room", "members": 1, "reached": 1, "connections": 1,
               "refused": 0})
    );
    assert_eq!(back.recv_text().await, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_is_gone_after_the_grace_period() {
    let server = TestServer::start_with(grace_config()).await;
    let mut push = PushClient::connect(server.push_addr).await;
    let u1 = tabs(&server, "u1", 2).await;
    let mut u2 = tab(&server, "u2").await;
    assert_eq!(
        cmd(&mut push, r#"/join room ["u1","u2"]"#).await,
        json!({"ok": true, "group": "room", "added": 2, "members": 2})
    );
    assert_eq!(
        cmd(&mut push, "/join solo u1").await,
        json!({"ok": true, "group": "solo", "added": 1, "members": 1})
    );

    let closed_at = Instant::now();
    for t in u1 {
        t.close().await;
    }
    wait_online(&mut push, "u1", 0).await;
    // Poll until u1's memberships are dropped; not before the grace period.
    let deadline = closed_at + GRACE + STEP;
    loop {
        let v = cmd(&mut push, "/members room").await;
        if !uid_set(&v).contains("u1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "u1 still a member long after the grace: {v}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dropped_after = closed_at.elapsed();
    assert!(
        dropped_after >= GRACE,
        "memberships dropped after {dropped_after:?}, inside the {GRACE:?} grace"
    );
    assert_members(&mut push, "room", &["u2"]).await;
    assert_members(&mut push, "solo", &[]).await;
    assert_eq!(
        cmd(&mut push, "/count").await,
        json!({"ok": true, "uids": 1, "connections": 1, "groups": 1})
    );

    // u1 comes back: a new bind does not bring its old groups back.
    let mut back = tab(&server, "u1").await;
    assert_eq!(
        cmd(&mut push, "/group room after").await,
        json!({"ok": true, "group": "room", "members": 1, "reached": 1, "connections": 1,
               "refused": 0})
    );
    assert_eq!(u2.recv_text().await, "after");
    assert_eq!(
        cmd(&mut push, "/group solo after").await,
        json!({"ok": false, "group": "solo", "members": 0, "reached": 0, "connections": 0,
               "refused": 0})
    );
    assert_next_is_marker(&mut push, "u1", [&mut back]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_an_offline_uid_starts_its_grace_period() {
    let server = TestServer::start_with(grace_config()).await;
    let mut push = PushClient::connect(server.push_addr).await;

    // Never connected: a member now, gone after the grace period.
    let joined_at = Instant::now();
    assert_eq!(
        cmd(&mut push, "/join lobby ghost").await,
        json!({"ok": true, "group": "lobby", "added": 1, "members": 1})
    );
    assert_members(&mut push, "lobby", &["ghost"]).await;
    // It binds inside the grace period: then it stays.
    assert_eq!(
        cmd(&mut push, "/join hall early").await,
        json!({"ok": true, "group": "hall", "added": 1, "members": 1})
    );
    let mut early = tab(&server, "early").await;

    let deadline = joined_at + GRACE + STEP;
    loop {
        let v = cmd(&mut push, "/members lobby").await;
        if v["count"] == json!(0) {
            break;
        }
        assert!(Instant::now() < deadline, "ghost never expired: {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        joined_at.elapsed() >= GRACE,
        "ghost expired inside the grace"
    );
    // Past the grace period for sure (the lobby expired), "early" is still in the hall.
    tokio::time::sleep(GRACE).await;
    assert_members(&mut push, "hall", &["early"]).await;
    assert_eq!(cmd(&mut push, "/count").await["groups"], json!(1));
    assert_eq!(
        cmd(&mut push, "/group hall welcome").await,
        json!({"ok": true, "group": "hall", "members": 1, "reached": 1, "connections": 1,
               "refused": 0})
    );
    assert_eq!(early.recv_text().await, "welcome");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_limits_refuse_the_whole_join() {
    let server = TestServer::start_with(Config {
        max_groups: 2,
        max_group_members: 3,
        max_list_uids: 5,
        ..Default::default()
    })
    .await;
    let mut push = PushClient::connect(server.push_addr).await;

    assert_eq!(
        cmd(&mut push, r#"/join g1 ["a","b"]"#).await,
        json!({"ok": true, "group": "g1", "added": 2, "members": 2})
    );
    // Two new members would make 4 > 3: nothing is added.
    let v = cmd(&mut push, r#"/join g1 ["c","d"]"#).await;
    assert_error(&v, "join g1 c d", &["group full", "3"]);
    assert_members(&mut push, "g1", &["a", "b"]).await;
    // Already-members do not count against the limit.
    assert_eq!(
        cmd(&mut push, r#"/join g1 ["a","b","c"]"#).await,
        json!({"ok": true, "group": "g1", "added": 1, "members": 3})
    );
    // A new group over the member limit is not created at all.
    let v = cmd(&mut push, r#"/join g2 ["w","x","y","z"]"#).await;
    assert_error(&v, "join g2 w..z", &["group full"]);
    assert_members(&mut push, "g2", &[]).await;
    assert_eq!(cmd(&mut push, "/count").await["groups"], json!(1));

    assert_eq!(
        cmd(&mut push, "/join g2 w").await,
        json!({"ok": true, "group": "g2", "added": 1, "members": 1})
    );
    let v = cmd(&mut push, "/join g3 w").await;
    assert_error(&v, "join g3", &["too many groups", "2"]);
    assert_members(&mut push, "g3", &[]).await;
    assert_eq!(cmd(&mut push, "/count").await["groups"], json!(2));
    // Joining existing groups is still fine at the group limit.
    assert_eq!(
        cmd(&mut push, "/join g2 x").await,
        json!({"ok": true, "group": "g2", "added": 1, "members": 2})
    );

    // More uids than max_list_uids in one command: refused, nothing changes.
    for line in [
        r#"/join g2 ["1","2","3","4","5","6"]"#,
        r#"/leave g1 ["a","b","c","4","5","6"]"#,
    ] {
        let v = cmd(&mut push, line).await;
        assert_error(&v, line, &["too many uids"]);
    }
    assert_members(&mut push, "g1", &["a", "b", "c"]).await;
    assert_members(&mut push, "g2", &["w", "x"]).await;
}

// ---------------------------------------------------------------------------------------
// /broadcast

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_bound_connection_exactly_once() {
    let server = TestServer::start().await;
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(
        cmd(&mut push, "/broadcast to nobody").await,
        json!({"ok": false, "connections": 0, "refused": 0})
    );

    let mut b1 = tabs(&server, "b1", 2).await;
    let mut b2 = tabs(&server, "b2", 1).await;
    let mut b3 = tabs(&server, "b3", 3).await;
    // Connected but not bound yet: not a broadcast recipient.
    let mut unbound = WsClient::connect(&server.ws_url()).await;

    let payload = r#"{"msg":"maintenance at 5"}  now "#;
    assert_eq!(
        cmd(&mut push, &format!("/broadcast {payload}")).await,
        json!({"ok": true, "connections": 6, "refused": 0})
    );
    for t in b1.iter_mut().chain(b2.iter_mut()).chain(b3.iter_mut()) {
        assert_eq!(t.recv_text().await, payload);
    }
    // Exactly once: the next broadcast is the next frame everywhere.
    assert_eq!(
        cmd(&mut push, "/broadcast second").await,
        json!({"ok": true, "connections": 6, "refused": 0})
    );
    for t in b1.iter_mut().chain(b2.iter_mut()).chain(b3.iter_mut()) {
        assert_eq!(t.recv_text().await, "second");
    }
    assert_next_is_marker(&mut push, "b1", b1.iter_mut()).await;
    assert_next_is_marker(&mut push, "b2", b2.iter_mut()).await;
    assert_next_is_marker(&mut push, "b3", b3.iter_mut()).await;

    // The unbound one binds now (quietly): the broadcasts before its bind never reach it.
    unbound.send_text("late").await;
    wait_online(&mut push, "late", 1).await;
    assert_next_is_marker(&mut push, "late", [&mut unbound]).await;
    assert_eq!(
        cmd(&mut push, "/broadcast third").await,
        json!({"ok": true, "connections": 7, "refused": 0})
    );
    assert_eq!(unbound.recv_text().await, "third");
}

// ---------------------------------------------------------------------------------------
// presence

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_and_count_follow_tabs() {
    let server = TestServer::start().await;
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(
        cmd(&mut push, "/online u1").await,
        json!({"ok": true, "uid": "u1", "online": false, "connections": 0})
    );
    let mut u1 = tabs(&server, "u1", 2).await;
    let _spaced = tab(&server, "a b").await;
    assert_eq!(
        cmd(&mut push, "/online u1").await,
        json!({"ok": true, "uid": "u1", "online": true, "connections": 2})
    );
    assert_eq!(
        cmd(&mut push, r#"/online "a b""#).await,
        json!({"ok": true, "uid": "a b", "online": true, "connections": 1})
    );
    assert_eq!(
        cmd(&mut push, "/count").await,
        json!({"ok": true, "uids": 2, "connections": 3, "groups": 0})
    );
    u1.pop().unwrap().close().await;
    wait_online(&mut push, "u1", 1).await;
    assert_eq!(
        cmd(&mut push, "/count").await,
        json!({"ok": true, "uids": 2, "connections": 2, "groups": 0})
    );
    u1.pop().unwrap().close().await;
    wait_online(&mut push, "u1", 0).await;
    assert_eq!(
        cmd(&mut push, "/count").await,
        json!({"ok": true, "uids": 1, "connections": 1, "groups": 0})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uids_pages_list_every_online_uid_exactly_once() {
    let server = TestServer::start().await;
    let mut push = PushClient::connect(server.push_addr).await;
    let all: HashSet<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let mut held = Vec::new();
    for uid in &all {
        let mut t = WsClient::connect(&server.ws_url()).await;
        t.send_text(uid).await;
        held.push(t);
    }
    wait_count(&mut push, 300, 300).await;

    let listed = walk_uids(&mut push, 50).await;
    assert_eq!(listed, all);
    // Other page sizes give the same set; the default page (1000) holds all 300 at once.
    assert_eq!(walk_uids(&mut push, 1).await, all);
    let v = cmd(&mut push, "/uids").await;
    assert_eq!(v["next"], Value::Null, "{}", v["next"]);
    assert_eq!(v["count"], json!(300));
    assert_eq!(
        uid_set(&v),
        all.iter().cloned().collect::<BTreeSet<String>>()
    );
    drop(held);
    wait_count(&mut push, 0, 0).await;
    let v = cmd(&mut push, "/uids").await;
    assert_eq!(v, json!({"ok": true, "count": 0, "uids": [], "next": null}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_stay_correct_while_clients_come_and_go() {
    let server = TestServer::start().await;
    let mut push = PushClient::connect(server.push_addr).await;
    let stable: Vec<String> = (0..100).map(|i| format!("stable-{i}")).collect();
    let mut held = Vec::new();
    for uid in &stable {
        let mut t = WsClient::connect(&server.ws_url()).await;
        t.send_text(uid).await;
        held.push(t);
    }
    wait_count(&mut push, 100, 100).await;

    // Another task binds and unbinds 200 other uids in a loop, 20 sockets at a time, half
    // closing cleanly and half just dropping their TCP connection.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let churn = tokio::spawn({
        let (stop, done) = (stop.clone(), rounds.clone());
        let url = server.ws_url();
        async move {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut batch = Vec::new();
                for j in 0..20 {
                    let mut t = WsClient::connect(&url).await;
                    t.send_text(&format!("churn-{}", (rounds * 20 + j) % 200))
                        .await;
                    batch.push(t);
                }
                for (k, t) in batch.into_iter().enumerate() {
                    if k % 2 == 0 {
                        t.close().await;
                    }
                }
                rounds += 1;
                done.store(rounds, Ordering::Relaxed);
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(8);
    // Walk until the churn has gone round often enough (every churn uid bound and unbound
    // several times) and was seen at least once.
    let (mut walks, mut saw_churn) = (0, false);
    while walks < 20 || rounds.load(Ordering::Relaxed) < 30 || !saw_churn {
        assert!(
            Instant::now() < deadline,
            "after {walks} walks and {} churn rounds: saw churn online: {saw_churn}",
            rounds.load(Ordering::Relaxed)
        );
        let listed = walk_uids(&mut push, 50).await;
        for uid in &stable {
            assert!(listed.contains(uid), "walk {walks} missed {uid}");
        }
        assert!(
            listed
                .iter()
                .all(|u| u.starts_with("stable-") || u.starts_with("churn-")),
            "unknown uid listed"
        );
        saw_churn |= listed.iter().any(|u| u.starts_with("churn-"));
        let count = cmd(&mut push, "/count").await;
        let (uids, conns) = (
            count["uids"].as_u64().unwrap(),
            count["connections"].as_u64().unwrap(),
        );
        assert!(
            (100..=300).contains(&uids) && conns >= uids,
            "/count below the stable set: {count}"
        );
        saw_churn |= uids > 100;
        let probe = &stable[walks % stable.len()];
        assert_eq!(
            cmd(&mut push, &format!("/online {probe}")).await,
            json!({"ok": true, "uid": probe, "online": true, "connections": 1})
        );
        walks += 1;
    }
    stop.store(true, Ordering::Relaxed);
    churn.await.expect("churn task");

    // Once the churn stops, every churn socket is gone and the stable set is what is left.
    wait_count(&mut push, 100, 100).await;
    let listed = walk_uids(&mut push, 50).await;
    assert_eq!(listed, stable.iter().cloned().collect::<HashSet<String>>());
    drop(held);
}

// ---------------------------------------------------------------------------------------
// /kick

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_closes_every_tab_with_4001_and_drops_groups_at_once() {
    // A long grace period: only the kick can drop u1's groups within this test.
    let server = TestServer::start().await;
    let mut push = PushClient::connect(server.push_addr).await;
    let mut u1 = tabs(&server, "u1", 2).await;
    let mut u2 = tab(&server, "u2").await;
    assert_eq!(
        cmd(&mut push, r#"/join room ["u1","u2"]"#).await,
        json!({"ok": true, "group": "room", "added": 2, "members": 2})
    );

    assert_eq!(
        cmd(&mut push, "/kick u1 bye").await,
        json!({"ok": true, "uids": 1, "connections": 2})
    );
    // At once: pushes to u1 fail, its groups are gone.
    assert_eq!(push.request(r#"{"uid":"u1","late":1}"#).await, "fail\n");
    assert_members(&mut push, "room", &["u2"]).await;
    for t in u1.iter_mut() {
        assert_eq!(t.expect_close().await, (4001, "bye".to_owned()));
    }
    wait_online(&mut push, "u1", 0).await;
    assert_eq!(push.request(r#"{"uid":"u1","later":2}"#).await, "fail\n");
    assert_next_is_marker(&mut push, "u2", [&mut u2]).await;

    // A new tab of u1 (well inside the grace period) is not back in the room.
    let mut again = tab(&server, "u1").await;
    assert_eq!(
        cmd(&mut push, "/group room after kick").await,
        json!({"ok": true, "group": "room", "members": 1, "reached": 1, "connections": 1,
               "refused": 0})
    );
    assert_eq!(u2.recv_text().await, "after kick");
    assert_next_is_marker(&mut push, "u1", [&mut again]).await;

    // Default reason; a reason with spaces; a list of uids (offline ones close nothing).
    assert_eq!(
        cmd(&mut push, "/kick u1").await,
        json!({"ok": true, "uids": 1, "connections": 1})
    );
    assert_eq!(again.expect_close().await, (4001, "kicked".to_owned()));
    let mut k1 = tab(&server, "k1").await;
    let mut k2 = tabs(&server, "k2", 2).await;
    assert_eq!(
        cmd(&mut push, r#"/kick ["k1","k2","gone"]   logged  out"#).await,
        json!({"ok": true, "uids": 3, "connections": 3})
    );
    for t in [&mut k1].into_iter().chain(k2.iter_mut()) {
        assert_eq!(t.expect_close().await, (4001, "logged  out".to_owned()));
    }
    assert_eq!(push.request(r#"{"uid":"k2"}"#).await, "fail\n");
    // Nobody else was touched.
    assert_next_is_marker(&mut push, "u2", [&mut u2]).await;
    let v = cmd(&mut push, "/kick").await;
    assert_error(&v, "/kick", &["missing TARGETS"]);
}

// ---------------------------------------------------------------------------------------
// /stats

/// The `/stats` counters as numbers, checking the reply's shape on the way.
fn counters(v: &Value) -> std::collections::BTreeMap<String, u64> {
    assert_eq!(v["ok"], json!(true), "{v}");
    let obj = v.as_object().unwrap();
    let mut out = std::collections::BTreeMap::new();
    for key in [
        "uptime_secs",
        "connections",
        "uids",
        "groups",
        "pushes_ok",
        "pushes_fail",
        "bad_lines",
        "commands",
        "evicted",
        "kicked",
        "frames_out",
        "bytes_out",
        "ws_accepted",
        "binds",
    ] {
        let n = obj
            .get(key)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("/stats lacks a numeric {key:?}: {v}"));
        out.insert(key.to_owned(), n);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_counters_match_what_happened() {
    let started = Instant::now();
    let server = TestServer::start().await;
    let mut push = PushClient::connect(server.push_addr).await;
    // Quiet binds (no probe frames), so every frame sent is one this test pushed.
    let mut s1 = [
        quiet_tab(&server, &mut push, "s1", 1).await,
        quiet_tab(&server, &mut push, "s1", 2).await,
    ];
    let mut s2 = quiet_tab(&server, &mut push, "s2", 1).await;

    let s0 = counters(&cmd(&mut push, "/stats").await);
    for (key, want) in [
        ("connections", 3),
        ("uids", 2),
        ("groups", 0),
        ("pushes_ok", 0),
        ("pushes_fail", 0),
        ("bad_lines", 0),
        ("evicted", 0),
        ("kicked", 0),
        ("frames_out", 0),
        ("bytes_out", 0),
        ("ws_accepted", 3),
        ("binds", 3),
    ] {
        assert_eq!(s0[key], want, "{key} at start");
    }
    assert!(s0["commands"] >= 1, "the /stats line itself is a command");
    assert!(s0["uptime_secs"] <= started.elapsed().as_secs() + 1);

    // Plain pushes: 3 ok (5 frames), 3 fail of which 2 malformed.
    let mut frames = 0u64;
    let mut bytes = 0u64;
    for (line, tabs) in [
        (r#"{"uid":"s1","n":1}"#, 2u64),
        (r#"{"uid":"s2","n":2}"#, 1),
        (r#"{"uid":"s1","n":3}"#, 2),
    ] {
        assert_eq!(push.request(line).await, "ok\n");
        frames += tabs;
        bytes += tabs * line.len() as u64;
    }
    assert_eq!(push.request(r#"{"uid":"nobody"}"#).await, "fail\n");
    assert_eq!(push.request(r#"{"uid":"#).await, "fail\n");
    assert_eq!(push.request("[1]").await, "fail\n");
    // Commands that deliver: 4 commands, 3 + 2 + 3 frames.
    for (line, payload, tabs) in [
        (r#"/send ["s1","s2"] P1"#, "P1", 3u64),
        ("/join g s1", "", 0),
        ("/group g Q22", "Q22", 2),
        ("/broadcast R333", "R333", 3),
    ] {
        assert_eq!(cmd(&mut push, line).await["ok"], json!(true), "{line}");
        frames += tabs;
        bytes += tabs * payload.len() as u64;
    }
    for t in s1.iter_mut() {
        assert_eq!(t.recv_text().await, r#"{"uid":"s1","n":1}"#);
        assert_eq!(t.recv_text().await, r#"{"uid":"s1","n":3}"#);
        assert_eq!(t.recv_text().await, "P1");
        assert_eq!(t.recv_text().await, "Q22");
        assert_eq!(t.recv_text().await, "R333");
    }
    assert_eq!(s2.recv_text().await, r#"{"uid":"s2","n":2}"#);
    assert_eq!(s2.recv_text().await, "P1");
    assert_eq!(s2.recv_text().await, "R333");

    let s1_stats = counters(&cmd(&mut push, "/stats").await);
    assert_eq!(s1_stats["pushes_ok"], 3);
    assert_eq!(s1_stats["pushes_fail"], 3);
    assert_eq!(s1_stats["bad_lines"], 2);
    assert_eq!(
        s1_stats["commands"],
        s0["commands"] + 5,
        "4 commands + /stats"
    );
    assert_eq!(s1_stats["groups"], 1);
    assert_eq!((s1_stats["uids"], s1_stats["connections"]), (2, 3));
    // frames_out/bytes_out are added after the write completes: poll for them, then they
    // must be exact.
    let deadline = Instant::now() + STEP;
    let mut out = s1_stats;
    while out["frames_out"] < frames && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        out = counters(&cmd(&mut push, "/stats").await);
    }
    assert_eq!((out["frames_out"], out["bytes_out"]), (frames, bytes));

    // A kick counts its connections; the uid's group goes with it.
    assert_eq!(
        cmd(&mut push, "/kick s1").await,
        json!({"ok": true, "uids": 1, "connections": 2})
    );
    wait_online(&mut push, "s1", 0).await;
    let end = counters(&cmd(&mut push, "/stats").await);
    assert_eq!(end["kicked"], 2);
    assert_eq!((end["uids"], end["connections"], end["groups"]), (1, 1, 0));
    assert_eq!(
        (end["ws_accepted"], end["binds"], end["evicted"]),
        (3, 3, 0)
    );
    assert_eq!((end["pushes_ok"], end["pushes_fail"]), (3, 3));
}

// ---------------------------------------------------------------------------------------
// bad commands

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_get_one_error_line_and_the_connection_stays_usable() {
    let server = TestServer::start_with(Config {
        max_list_uids: 5,
        ..Default::default()
    })
    .await;
    let mut u1 = tab(&server, "u1").await;
    let mut push = PushClient::connect(server.push_addr).await;

    let cases: &[(&[u8], &[&str])] = &[
        (b"/frobnicate u1 x", &["unknown command", "/frobnicate"]),
        (b"/", &["unknown command"]),
        (b"/SEND u1 x", &["unknown command", "/SEND"]),
        (b"/send", &["missing TARGETS"]),
        (b"/send u1", &["missing payload"]),
        (b"/send u1   ", &["missing payload"]),
        (b"/push", &["missing ID"]),
        (b"/push 1", &["missing payload"]),
        (b"/group", &["missing GROUP"]),
        (b"/group room", &["missing payload"]),
        (b"/broadcast", &["missing payload"]),
        (b"/join room", &["missing TARGETS"]),
        (b"/leave", &["missing GROUP"]),
        (b"/online", &["missing UID"]),
        (b"/members", &["missing GROUP"]),
        (b"/kick", &["missing TARGETS"]),
        (
            b"/send [\"a\",\"b\",\"c\",\"d\",\"e\",\"u1\"] x",
            &["too many uids", "6", "5"],
        ),
        (b"/kick [1,2,3,4,5,\"u1\"] bye", &["too many uids"]),
        (b"/send [\"u1\", x", &["invalid JSON"]),
        (b"/send [\"u1\"]x", &["space"]),
        (b"/send [1.5] x", &["string or an integer"]),
        (b"/send [] x", &["empty list"]),
        (b"/join [\"room\"] u1", &["GROUP"]),
        (b"/count extra", &["unexpected argument"]),
        (b"/stats now", &["unexpected argument"]),
        (b"/uids x", &["CURSOR"]),
        (b"/uids 0 -1", &["LIMIT"]),
        (b"/send u1 \xff\xfe", &["UTF-8"]),
        (b"/\xc3(", &["UTF-8"]),
    ];
    for (i, (line, words)) in cases.iter().enumerate() {
        let shown = String::from_utf8_lossy(line).into_owned();
        let mut raw = line.to_vec();
        raw.push(b'\n');
        push.send_raw(&raw).await;
        let v = json_reply(&push.read_reply().await, &shown);
        assert_error(&v, &shown, words);
        // Still usable: the next push works, and the bad command delivered nothing.
        let ok = format!(r#"{{"uid":"u1","after":{i}}}"#);
        assert_eq!(push.request(&ok).await, "ok\n", "after {shown:?}");
        assert_eq!(u1.recv_text().await, ok, "after {shown:?}");
    }
    // The same lines pipelined in one write: one reply each, in order.
    let mut all = Vec::new();
    for (line, _) in cases {
        all.extend_from_slice(line);
        all.push(b'\n');
    }
    all.extend_from_slice(b"/ping\n");
    push.send_raw(&all).await;
    for (line, words) in cases {
        let shown = String::from_utf8_lossy(line).into_owned();
        assert_error(&json_reply(&push.read_reply().await, &shown), &shown, words);
    }
    assert_eq!(push.read_reply().await, "pong\n");
    assert_eq!(
        cmd(&mut push, "/online u1").await,
        json!({"ok": true, "uid": "u1", "online": true, "connections": 1})
    );
}

// ---------------------------------------------------------------------------------------
// pushes that look like commands

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_looking_payloads_are_still_pushes() {
    let server = TestServer::start().await;
    let mut one = tab(&server, "1").await;
    let mut u = tab(&server, "u").await;
    let mut push = PushClient::connect(server.push_addr).await;

    for (line, to_one) in [
        (r#"{"uid":1,"type":"say","cmd":"refresh"}"#, true),
        (r#"{"uid":"u","cmd":"/kick u"}"#, false),
        (
            r#"{"cmd":"/broadcast hi","uid":"u","group":"room","type":"join"}"#,
            false,
        ),
        (r#"{"uid":"u","text":"line one\n/kick u"}"#, false),
    ] {
        assert_eq!(push.request(line).await, "ok\n", "{line}");
        let tab = if to_one { &mut one } else { &mut u };
        assert_eq!(tab.recv_text().await, line);
    }
    // A payload that is a command line is delivered, never run.
    assert_eq!(
        cmd(&mut push, "/send u /kick u").await,
        json!({"ok": true, "uids": 1, "reached": 1, "connections": 1, "refused": 0})
    );
    assert_eq!(u.recv_text().await, "/kick u");
    // Only the first byte decides: a leading space makes it a (bad) push line.
    assert_eq!(push.request(" /kick u").await, "fail\n");
    assert_eq!(push.request(" /broadcast hi").await, "fail\n");

    // Nobody was kicked, no group was made, nothing was broadcast.
    assert_eq!(
        cmd(&mut push, "/count").await,
        json!({"ok": true, "uids": 2, "connections": 2, "groups": 0})
    );
    assert_next_is_marker(&mut push, "u", [&mut u]).await;
    assert_next_is_marker(&mut push, "1", [&mut one]).await;
    let stats = cmd(&mut push, "/stats").await;
    assert_eq!(stats["kicked"], json!(0), "{stats}");
}

/// A uid already within its grace period that joins another group gets a new grace
/// period: what it just joined does not vanish on the old deadline (it did, 0.25 s after
/// an `ok` join).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_within_the_grace_period_restarts_it() {
    let server = TestServer::start_with(grace_config()).await;
    let mut push = PushClient::connect(server.push_addr).await;
    cmd(&mut push, "/join first late").await;
    // Most of the grace period passes, offline; then it joins a second group.
    tokio::time::sleep(GRACE * 2 / 3).await;
    let joined = Instant::now();
    assert_eq!(
        cmd(&mut push, "/join second late").await,
        json!({"ok": true, "group": "second", "added": 1, "members": 1})
    );
    // Past the first deadline, inside the new one: still a member of both.
    tokio::time::sleep(GRACE / 2).await;
    assert!(joined.elapsed() < GRACE, "the test itself ran late");
    assert_members(&mut push, "second", &["late"]).await;
    assert_members(&mut push, "first", &["late"]).await;
    // And it binds in time: it stays.
    let mut t = tab(&server, "late").await;
    tokio::time::sleep(GRACE).await;
    assert_members(&mut push, "second", &["late"]).await;
    assert_eq!(
        cmd(&mut push, "/group second hi").await["reached"],
        json!(1)
    );
    assert_eq!(t.recv_text().await, "hi");
}

/// GatewayWorker's exclude lists: `/group-except` and `/broadcast-except` skip the listed
/// uids (every tab of them), and reach everyone else once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclude_lists_skip_the_listed_uids() {
    let server = TestServer::start().await;
    let mut push = PushClient::connect(server.push_addr).await;
    let mut a = tabs(&server, "ea", 2).await;
    let mut b = tab(&server, "eb").await;
    let mut c = tab(&server, "ec").await;
    cmd(&mut push, "/join room [\"ea\",\"eb\",\"ec\"]").await;

    assert_eq!(
        cmd(&mut push, "/group-except room [\"ea\"] one").await,
        json!({"ok": true, "group": "room", "members": 3, "reached": 2, "connections": 2,
               "refused": 0})
    );
    assert_eq!(b.recv_text().await, "one");
    assert_eq!(c.recv_text().await, "one");
    assert_eq!(
        cmd(&mut push, "/broadcast-except [\"eb\",\"ec\"] two").await,
        json!({"ok": true, "connections": 2, "refused": 0})
    );
    for t in a.iter_mut() {
        assert_eq!(
            t.recv_text().await,
            "two",
            "ea's tabs skip \"one\", get \"two\""
        );
    }
    b.expect_silence(Duration::from_millis(200)).await;
    c.expect_silence(Duration::from_millis(50)).await;
    // Malformed exclude lists are errors, nothing is sent.
    let v = cmd(&mut push, "/broadcast-except [] x").await;
    assert_eq!(v["ok"], json!(false), "{v}");
    let v = cmd(&mut push, "/group-except room").await;
    assert_eq!(v["ok"], json!(false), "{v}");
}
