//! The GatewayClient door (issue 22) on the real daemon, over real sockets: php-cli drives
//! the test GatewayClient (`tests/php/Gateway.php`, written from the protocol) against
//! `--gateway-register-listen` / `--gateway-listen`, and browsers connect to
//! `--gateway-ws-listen`, where each is greeted with its `client_id` and waits for a
//! backend's `bindUid`. Every GatewayClient call is made and its effect checked in what the
//! browsers receive and in what the queries answer.
//!
//! These tests never skip: a missing `php` is a failure (`scripts/test.sh` installs it).
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::gateway_php::{Door, eventually};
use common::{STEP, WsClient, WsEvent};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Long enough for a message that is wrongly on its way to arrive.
const QUIET: Duration = Duration::from_millis(300);

/// What `ws` receives until it is quiet for [`QUIET`].
async fn got(ws: &mut WsClient) -> Vec<String> {
    ws.texts_until_silence(QUIET).await
}

fn ids<const N: usize>(list: [&String; N]) -> Value {
    Value::Object(
        list.iter()
            .map(|id| (id.to_string(), Value::String(id.to_string())))
            .collect(),
    )
}

#[tokio::test]
async fn every_gatewayclient_call_works_against_the_daemon() {
    let door = Door::start(&["--gateway-secret", "s3"]).await;
    let (mut p1, c1) = door.page().await;
    let (mut p2, c2) = door.page().await;
    let (mut p3, c3) = door.page().await;
    assert_eq!(&c1[..12], &c2[..12], "one advertised address");
    assert_eq!(
        &c1[..12],
        &format!("7f000001{:04x}", door.gateway.port()),
        "the client_id names the gateway endpoint"
    );
    // A seed page bound by its first frame on the ordinary port: uid pushes reach it too.
    let mut seed = WsClient::connect(&door.daemon.ws_url()).await;
    seed.bind("u1", door.daemon.push_addr).await;

    let mut php = door.php().await;
    php.set("secretKey", "s3").await;
    // One connection for all sends, so they run in call order (fresh connections per call
    // are served concurrently: docs/gateway.md, "Order").
    php.set("persistentConnection", true).await;
    php.call("bindUid", json!([c1, "u1"])).await;
    php.call("bindUid", json!([c2, "u2"])).await;
    php.call("joinGroup", json!([c1, "g"])).await;
    php.call("joinGroup", json!([c2, "g"])).await;
    php.call("joinGroup", json!([c3, "h"])).await;

    // Sends.
    php.call("sendToUid", json!(["u1", "m1"])).await;
    assert_eq!(got(&mut p1).await, ["m1"]);
    assert_eq!(got(&mut seed).await, ["m1"]);
    php.call("sendToUid", json!([["u1", "u2"], "m2"])).await;
    assert_eq!(got(&mut p1).await, ["m2"]);
    assert_eq!(got(&mut p2).await, ["m2"]);
    assert_eq!(got(&mut seed).await, ["m2"]);
    php.call("sendToGroup", json!(["g", "m3"])).await;
    php.call("sendToGroup", json!(["g", "m4", [c1]])).await;
    php.call("sendToGroup", json!([["g", "h"], "m5"])).await;
    assert_eq!(got(&mut p1).await, ["m3", "m5"]);
    assert_eq!(got(&mut p2).await, ["m3", "m4", "m5"]);
    assert_eq!(got(&mut p3).await, ["m5"]);
    php.call("sendToAll", json!(["m6"])).await;
    php.call("sendToAll", json!(["m7", [c3]])).await;
    php.call("sendToAll", json!(["m8", null, [c1]])).await;
    php.call("sendToClient", json!([c3, "m9"])).await;
    assert_eq!(got(&mut p1).await, ["m6"]);
    assert_eq!(got(&mut p2).await, ["m6", "m8"]);
    assert_eq!(got(&mut p3).await, ["m6", "m7", "m8", "m9"]);
    // sendToAll reaches every page, as every client of a gateway: the seed page too, but
    // for a client_id list (it has none); an exclusion list names greeted pages only.
    assert_eq!(got(&mut seed).await, ["m6", "m8"]);

    // Queries.
    let v = |c: common::gateway_php::Called| c.value;
    assert_eq!(v(php.call("isOnline", json!([c1])).await), 1);
    let gone = format!("{}{:08x}", &c1[..12], 9999);
    assert_eq!(v(php.call("isOnline", json!([gone])).await), 0);
    assert_eq!(v(php.call("isUidOnline", json!(["u1"])).await), 1);
    assert_eq!(v(php.call("isUidOnline", json!(["nobody"])).await), 0);
    assert_eq!(
        v(php.call("getClientIdByUid", json!(["u1"])).await),
        json!([c1])
    );
    assert_eq!(
        v(php
            .call("batchGetClientIdByUid", json!([["u1", "u2", "nobody"]]))
            .await),
        json!({"u1": [c1], "u2": [c2]})
    );
    assert_eq!(
        v(php.call("isUidsOnline", json!([["u1", "u2"]])).await),
        json!({"u1": 1, "u2": 1})
    );
    assert_eq!(v(php.call("getUidByClientId", json!([c2])).await), "u2");
    assert_eq!(
        v(php.call("getUidByClientId", json!([c3])).await),
        Value::Null
    );
    assert_eq!(
        v(php.call("getAllClientIdList", json!([])).await),
        ids([&c1, &c2, &c3])
    );
    assert_eq!(v(php.call("getAllClientIdCount", json!([])).await), 3);
    assert_eq!(v(php.call("getAllClientCount", json!([])).await), 3);
    assert_eq!(
        v(php.call("getClientIdCountByGroup", json!(["g"])).await),
        2
    );
    assert_eq!(v(php.call("getClientCountByGroup", json!(["h"])).await), 1);
    assert_eq!(
        v(php
            .call("batchGetClientIdCountByGroup", json!([["g", "h", "none"]]))
            .await),
        json!({"g": 2, "h": 1, "none": 0})
    );
    assert_eq!(
        v(php.call("getClientIdListByGroup", json!(["g"])).await),
        ids([&c1, &c2])
    );
    assert_eq!(
        v(php.call("getUidListByGroup", json!(["g"])).await),
        json!({"u1": "u1", "u2": "u2"})
    );
    assert_eq!(v(php.call("getUidCountByGroup", json!(["g"])).await), 2);
    assert_eq!(
        v(php.call("getAllUidList", json!([])).await),
        json!({"u1": "u1", "u2": "u2"})
    );
    assert_eq!(v(php.call("getAllUidCount", json!([])).await), 2);
    assert_eq!(
        v(php.call("getAllGroupIdList", json!([])).await),
        json!({"g": "g", "h": "h"})
    );
    // c3 (no uid) comes last, so the library's early `break` skips nothing here.
    assert_eq!(
        v(php.call("getAllGroupUidList", json!([])).await),
        json!({"g": {"u1": "u1", "u2": "u2"}})
    );
    assert_eq!(
        v(php.call("getAllGroupUidCount", json!([])).await),
        json!({"g": 2})
    );
    assert_eq!(
        v(php.call("getAllGroupClientIdList", json!([])).await),
        json!({"g": ids([&c1, &c2]), "h": ids([&c3])})
    );
    assert_eq!(
        v(php.call("getAllGroupClientIdCount", json!([])).await),
        json!({"g": 2, "h": 1})
    );

    // Sessions: kept as PHP serialized them, merged as GatewayWorker merges.
    php.call("setSession", json!([c1, {"a": 1, "n": {"x": 1}}]))
        .await;
    php.call("updateSession", json!([c1, {"b": 2, "n": {"y": 2}}]))
        .await;
    let merged = json!({"a": 1, "n": {"x": 1, "y": 2}, "b": 2});
    eventually(&mut php, "getSession", json!([c1]), merged.clone()).await;
    assert_eq!(v(php.call("getSession", json!([c2])).await), json!([]));
    assert_eq!(v(php.call("getSession", json!([gone])).await), Value::Null);
    assert_eq!(
        v(php.call("getAllClientSessions", json!([])).await),
        json!({c1.clone(): merged, c2.clone(): [], c3.clone(): []})
    );
    assert_eq!(
        v(php.call("getClientSessionsByGroup", json!(["h"])).await),
        json!({c3.clone(): []})
    );
    php.call(
        "setSocketSession",
        json!([c3, "a:1:{s:1:\"k\";s:1:\"v\";}"]),
    )
    .await;
    eventually(&mut php, "getSession", json!([c3]), json!({"k": "v"})).await;

    // Binding changes.
    php.call("leaveGroup", json!([c2, "g"])).await;
    eventually(&mut php, "getClientIdCountByGroup", json!(["g"]), json!(1)).await;
    php.call("ungroup", json!(["h"])).await;
    eventually(&mut php, "getAllGroupIdList", json!([]), json!({"g": "g"})).await;
    php.call("sendToGroup", json!(["h", "nobody hears"])).await;
    php.call("unbindUid", json!([c2, "u2"])).await;
    eventually(&mut php, "isUidOnline", json!(["u2"]), json!(0)).await;
    php.call("bindUid", json!([c3, "u1"])).await;
    php.call("sendToUid", json!(["u1", "both"])).await;
    assert_eq!(got(&mut p1).await, ["both"]);
    assert_eq!(got(&mut p3).await, ["both"]);
    assert_eq!(got(&mut seed).await, ["both"]);
    p2.expect_silence(QUIET).await;

    // Closing: the last message, then a close frame; the connection is gone for queries.
    php.call("closeClient", json!([c3, "bye"])).await;
    assert_eq!(p3.recv_text().await, "bye");
    assert_eq!(p3.expect_close().await.0, 4001);
    php.call("destoryClient", json!([c2])).await;
    assert_eq!(p2.expect_close().await.0, 4001);
    eventually(&mut php, "getAllClientIdCount", json!([]), json!(1)).await;
    assert_eq!(
        v(php.call("getClientIdByUid", json!(["u1"])).await),
        json!([c1])
    );
    drop(p1);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_at_the_register_and_at_the_gateway() {
    let door = Door::start(&["--gateway-secret", "s3"]).await;
    let (_page, id) = door.page().await;
    let mut php = door.php().await;
    php.set("secretKey", "wrong").await;
    // The Register closes without a word (the app sees the library's exception)...
    php.throws("getAllClientIdCount", json!([])).await;
    door.daemon
        .wait_log("Register refused: wrong secret_key", STEP)
        .await;
    // ... and so does the gateway endpoint.
    php.throws("isOnline", json!([id])).await;
    door.daemon
        .wait_log("gateway connection refused: wrong secret_key", STEP)
        .await;
    // Straight to the gateway endpoint with no secret frame: closed, and logged.
    let mut tcp = TcpStream::connect(door.gateway).await.unwrap();
    tcp.write_all(&frame(11, 1, b"", b"")).await.unwrap();
    let mut buf = [0u8; 16];
    let n = timeout(STEP, tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a reply");
    door.daemon
        .wait_log(
            "gateway connection refused: no secret_key frame first",
            STEP,
        )
        .await;
    // With the right secret, it works.
    php.set("secretKey", "s3").await;
    assert_eq!(php.call("isOnline", json!([id])).await.value, 1);
}

/// A GatewayClient frame: the 28-byte header, `ext`, `body`.
fn frame(cmd: u8, connection: u32, ext: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((28 + ext.len() + body.len()) as u32).to_be_bytes());
    out.push(cmd);
    out.extend_from_slice(&[0; 12]);
    out.extend_from_slice(&connection.to_be_bytes());
    out.push(1);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(ext.len() as u32).to_be_bytes());
    out.extend_from_slice(ext);
    out.extend_from_slice(body);
    out
}

#[tokio::test]
async fn a_malformed_frame_closes_that_connection_only() {
    let door = Door::start(&["--gateway-max-frame-bytes", "4096"]).await;
    let (mut page, id) = door.page().await;
    let mut php = door.php().await;
    php.set("persistentConnection", true).await;
    php.call("bindUid", json!([id, "u"])).await;
    for (bad, why) in [
        (vec![0, 0, 0, 27], "shorter than its 28-byte header"),
        (vec![0, 0, 0x10, 1], "over the limit of 4096 bytes"),
        (
            {
                let mut f = frame(12, 1, b"u", b"");
                f[27] = 9; // ext_len past the end
                f
            },
            "runs past the frame",
        ),
    ] {
        let mut tcp = TcpStream::connect(door.gateway).await.unwrap();
        tcp.write_all(&bad).await.unwrap();
        let mut buf = [0u8; 16];
        let n = timeout(STEP, tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "{why}: closed");
        door.daemon.wait_log(why, STEP).await;
    }
    // The browser, the persistent backend connection and the daemon are untouched.
    php.call("sendToUid", json!(["u", "still here"])).await;
    assert_eq!(page.recv_text().await, "still here");
    assert_eq!(php.call("isOnline", json!([id])).await.value, 1);
    // A refused request on a good frame is logged, and a query still gets an answer.
    let mut tcp = TcpStream::connect(door.gateway).await.unwrap();
    tcp.write_all(&frame(3, 0, b"", b"")).await.unwrap();
    tcp.write_all(&frame(11, 1, b"", b"")).await.unwrap();
    let mut reply = [0u8; 8];
    timeout(STEP, tcp.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&reply, b"\0\0\0\x04i:1;");
    door.daemon.wait_log("a BusinessWorker command", STEP).await;
}

#[tokio::test]
async fn huge_lists_are_refused_and_queries_still_answer() {
    let door = Door::start(&["--max-list-uids", "10"]).await;
    let (mut page, id) = door.page().await;
    let mut php = door.php().await;
    php.call("bindUid", json!([id, "u0"])).await;
    let uids: Vec<String> = (0..11).map(|i| format!("u{i}")).collect();
    php.call("sendToUid", json!([uids, "too many"])).await;
    page.expect_silence(QUIET).await;
    door.daemon
        .wait_log("more than 10 entries in a list", STEP)
        .await;
    let answer = timeout(
        Duration::from_secs(2),
        php.call("batchGetClientIdByUid", json!([uids])),
    )
    .await
    .expect("answered at once, not after GatewayClient's 5 s wait");
    assert_eq!(answer.value, json!([]));
    php.call("sendToUid", json!([&uids[..10], "ten"])).await;
    assert_eq!(page.recv_text().await, "ten");
}

#[tokio::test]
async fn an_unclaimed_greeted_connection_closes_at_its_deadline() {
    let door = Door::start(&["--gateway-claim-timeout-ms", "500"]).await;
    let (mut idle, _) = door.page().await;
    let (mut bound, id) = door.page().await;
    let (mut grouped, gid) = door.page().await;
    let mut php = door.php().await;
    php.call("bindUid", json!([id, "u"])).await;
    php.call("joinGroup", json!([gid, "g"])).await;
    let (code, reason) = idle.expect_close().await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("claim timeout"), "{reason}");
    bound.expect_silence(Duration::from_millis(800)).await;
    php.call("sendToUid", json!(["u", "kept"])).await;
    assert_eq!(bound.recv_text().await, "kept");
    php.call("sendToGroup", json!(["g", "kept too"])).await;
    assert_eq!(grouped.recv_text().await, "kept too");
    assert!(matches!(
        idle.next_event().await,
        WsEvent::End | WsEvent::Close(..)
    ));
}

#[tokio::test]
async fn the_greeting_is_configurable() {
    let door = Door::start(&["--gateway-greeting", "hello {client_id}!"]).await;
    let mut ws = WsClient::connect(&format!("ws://{}/", door.greeted)).await;
    let text = ws.recv_text().await;
    let id = text
        .strip_prefix("hello ")
        .and_then(|t| t.strip_suffix('!'))
        .unwrap();
    assert_eq!(id.len(), 20, "{text}");
    let mut php = door.php().await;
    assert_eq!(php.call("isOnline", json!([id])).await.value, 1);
}

#[tokio::test]
async fn the_push_ports_allow_list_applies() {
    let door = Door::start(&["--push-allow", "10.0.0.0/8"]).await;
    let (_page, id) = door.page().await;
    let mut php = door.php().await;
    php.throws("getAllClientIdCount", json!([])).await;
    php.throws("isOnline", json!([id])).await;
    // The refusals are logged as they happen, maybe just after the client saw its close.
    for endpoint in ["endpoint=\"Register\"", "endpoint=\"gateway\""] {
        let logged = door
            .daemon
            .wait_for_log(Duration::from_secs(5), |log| {
                log.lines()
                    .any(|l| l.contains("address not allowed") && l.contains(endpoint))
            })
            .await;
        assert!(
            logged.is_ok(),
            "{endpoint} refusal logged:\n{}",
            door.daemon.log()
        );
    }
}

/// Seed 001's page (GatewayWorker's "ajax bind" demo) with only its address changed; the
/// demo posts the client_id with jQuery's `$.post`, here with `fetch` (no jQuery in the
/// test page).
fn seed001_script(greeted: SocketAddr) -> String {
    format!(
        r#"
ws = new WebSocket("ws://{greeted}");
ws.onmessage = function(e) {{
    var data = JSON.parse(e.data);
    var type = data.type || '';
    switch (type) {{
        case 'init':
            fetch('/bind', {{ method: 'POST', headers: {{ 'Content-Type': 'application/x-www-form-urlencoded' }}, body: 'client_id=' + data.client_id }});
            break;
        default:
            alert(e.data);
    }}
}};
"#
    )
}

/// Runs seed 001's ThinkPHP controller (`tests/php/seed001_controller.php`) with php-cli.
async fn controller(args: &[&str]) {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/php/seed001_controller.php");
    let out = timeout(
        STEP * 2,
        tokio::process::Command::new("php")
            .arg(script)
            .args(args)
            .output(),
    )
    .await
    .expect("controller within its time")
    .expect("php runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.ends_with("done\n"),
        "controller {args:?}: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_seed_001_page_is_greeted_bound_by_the_controller_and_pushed_to() {
    use common::chromium::{Handler, SeedPage, Site};
    let door = Door::start(&[]).await;
    let register = door.register.to_string();
    let (bound_tx, mut bound) = tokio::sync::mpsc::unbounded_channel::<String>();
    let handler: Handler = {
        let register = register.clone();
        std::sync::Arc::new(move |target: String, body: String| {
            let (register, bound_tx) = (register.clone(), bound_tx.clone());
            Box::pin(async move {
                assert_eq!(target, "/bind");
                let id = body
                    .strip_prefix("client_id=")
                    .unwrap_or_default()
                    .to_owned();
                // ChatRoom::bind with the logged-in user 42 of room 7.
                controller(&["bind", &register, &id, "42", "7"]).await;
                let _ = bound_tx.send(id);
                (200, r#"{"code":0}"#.to_owned())
            })
        })
    };
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site = Site {
        files: Vec::new(),
        handler: Some(handler),
    };
    let html = common::chromium::page_html(&seed001_script(door.greeted));
    let mut page = SeedPage::launch_site(http, html, site, &[]);
    let id = timeout(Duration::from_secs(20), bound.recv())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the page never posted its client_id:\n{}",
                page.browser.log_tail()
            )
        })
        .unwrap();
    assert_eq!(id.len(), 20, "{id}");
    controller(&["sendMessage", &register, "42"]).await;
    page.expect_alert(r#"{"type":"say","msg":"Hello ThinkPHP5"}"#)
        .await;
    controller(&["sendGroup", &register, "7"]).await;
    page.expect_alert(r#"{"type":"say","msg":"Hello group"}"#)
        .await;
    // Bound: the claim deadline does not apply, and the page heard nothing else.
    assert!(!page.reports_within(QUIET).await);
}

#[tokio::test]
async fn a_door_without_an_address_to_advertise_or_with_an_unsendable_secret_does_not_start() {
    use common::Launch;
    for (args, why) in [
        (
            &["--gateway-listen", "0.0.0.0:0"][..],
            "--gateway-advertise",
        ),
        (
            &[
                "--gateway-listen",
                "127.0.0.1:0",
                "--gateway-secret",
                "a\"b",
            ][..],
            "GatewayClient cannot send",
        ),
        (&["--redis-queue", "mc"][..], "--redis-queue needs a Redis"),
    ] {
        let (status, log) = Launch::new().args(args).run_to_exit(STEP).await;
        assert!(!status.success(), "{args:?} started");
        assert!(log.contains(why), "{args:?}: {log}");
        let mut check = common::pushwire_command();
        check.arg("check-config").arg("--no-bind").args(args);
        let out = check.output().await.unwrap();
        assert!(!out.status.success(), "check-config {args:?} passed");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(why),
            "check-config {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A greeted page on the `?pushwire=1` URL, and the client_id its `b` greeting carries.
async fn v1_page(door: &Door, query: &str) -> (WsClient, String) {
    let mut ws = WsClient::connect(&format!("ws://{}/?pushwire=1{query}", door.greeted)).await;
    let text = ws.recv_text().await;
    let greeting: Value = serde_json::from_str(
        text.strip_prefix("b ")
            .unwrap_or_else(|| panic!("an unnumbered frame: {text}")),
    )
    .unwrap();
    let id = greeting["client_id"].as_str().unwrap().to_owned();
    assert_eq!(greeting, json!({"type": "init", "client_id": id}));
    (ws, id)
}

/// Protocol v1 on greeted pages (docs/gateway.md, "Protocol v1 on greeted pages"): from
/// its bind the page gets its uid's status frame and numbered messages, resumes after a
/// reload, and its acks count; what goes to the connection itself stays unnumbered.
#[tokio::test]
async fn a_greeted_page_that_opts_into_v1_gets_numbered_frames_resume_and_acks() {
    let door = Door::start(&[]).await;
    let (mut page, id) = v1_page(&door, "").await;
    let mut php = door.php().await;
    php.set("persistentConnection", true).await;
    php.call("bindUid", json!([id, "v"])).await;
    let status = page.recv_text().await;
    let at = status
        .strip_prefix("s new ")
        .unwrap_or_else(|| panic!("a status frame at the bind: {status}"));
    let epoch = at.strip_suffix(":0").unwrap().to_owned();
    php.call("sendToUid", json!(["v", "one"])).await;
    php.call("sendToClient", json!([id, "to the connection"]))
        .await;
    php.call("sendToUid", json!(["v", "two"])).await;
    assert_eq!(
        got(&mut page).await,
        ["m 1 one", "b to the connection", "m 2 two"]
    );

    // A reload: the page comes back with where it was; what it missed is replayed.
    page.close().await;
    php.call("sendToUid", json!(["v", "three"])).await;
    let (mut page, id) = v1_page(&door, &format!("&since={epoch}:2")).await;
    page.expect_silence(QUIET).await;
    php.call("bindUid", json!([id, "v"])).await;
    assert_eq!(
        got(&mut page).await,
        [format!("s recovered {epoch}:2"), "m 3 three".to_owned()]
    );

    // Its ack answers a push that waits for one.
    let mut push = common::PushClient::connect(door.daemon.push_addr).await;
    push.send_raw(b"/push k1 ack=5000 {\"uid\":\"v\",\"n\":4}\n")
        .await;
    assert_eq!(page.recv_text().await, r#"m 4 {"uid":"v","n":4}"#);
    page.send_text("a 4").await;
    let reply: Value = serde_json::from_str(&push.read_reply().await).unwrap();
    assert_eq!(reply["result"], "acked", "{reply}");

    // A seed page on the same listener is untouched, and a bad version is refused.
    let (mut seed, sid) = door.page().await;
    php.call("bindUid", json!([sid, "v"])).await;
    php.call("sendToUid", json!(["v", "five"])).await;
    assert_eq!(got(&mut seed).await, ["five"]);
    assert_eq!(got(&mut page).await, ["m 5 five"]);
    let mut bad = WsClient::connect(&format!("ws://{}/?pushwire=2", door.greeted)).await;
    let (code, reason) = bad.expect_close().await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "unsupported protocol version")
    );
}

/// Writes `text` to the reload env file, sends SIGHUP, and returns the reload's outcome
/// line (the `n`th since start).
async fn reload_with(door: &Door, env: &str, text: &str, n: usize) -> String {
    std::fs::write(env, text).unwrap();
    door.daemon.signal("HUP").await;
    let outcome = |l: &&str| l.contains("reloaded") || l.contains("reload failed");
    let logged = door
        .daemon
        .wait_for_log(STEP, |log| log.lines().filter(outcome).count() >= n)
        .await;
    assert!(logged.is_ok(), "reload #{n}:\n{}", door.daemon.log());
    let log = door.daemon.log();
    log.lines().filter(outcome).nth(n - 1).unwrap().to_owned()
}

/// `isOnline(id)` with `secret` (none: no `$secretKey`): `Some(answer)`, or `None` when
/// the door refuses the call.
async fn online_with(door: &Door, secret: Option<&str>, id: &str) -> Option<Value> {
    let mut php = door.php().await;
    if let Some(secret) = secret {
        php.set("secretKey", secret).await;
    }
    let called = php.call_or_throw("isOnline", json!([id])).await;
    called.map(|c| c.value)
}

/// `--gateway-secret` reloads as the other secrets do (docs/deployment.md, "Reload"): it
/// follows the push secret until the file names it; a missing line keeps it, `none`
/// removes it, a secret GatewayClient cannot send refuses the reload; each change is a
/// WARN naming it.
#[tokio::test]
async fn the_gateway_secret_reloads_under_the_rules_of_the_other_secrets() {
    let dir = common::Scratch::new("gateway-reload");
    let env = dir.file("reload.env", "# nothing yet\n");
    let door = Door::start(&["--reload-env-file", &env]).await;
    let (_page, id) = door.page().await;
    let on = Some(json!(1));
    assert_eq!(
        online_with(&door, None, &id).await,
        on,
        "no secret at start"
    );

    // The push secret set: the gateway's default follows it (no door left open).
    let line = reload_with(&door, &env, "PUSHWIRE_PUSH_SECRET=p1\n", 1).await;
    assert!(
        line.contains("WARN") && line.contains("gateway secret set"),
        "{line}"
    );
    assert_eq!(online_with(&door, None, &id).await, None);
    assert_eq!(online_with(&door, Some("p1"), &id).await, on);

    // Named: its own from now on; a file without the line keeps it.
    let line = reload_with(&door, &env, "PUSHWIRE_GATEWAY_SECRET=g1\n", 2).await;
    assert!(line.contains("gateway secret rotated"), "{line}");
    assert_eq!(online_with(&door, Some("p1"), &id).await, None);
    assert_eq!(online_with(&door, Some("g1"), &id).await, on);
    let line = reload_with(&door, &env, "PUSHWIRE_PUSH_SECRET=p2\n", 3).await;
    assert!(!line.contains("gateway secret"), "{line}");
    assert_eq!(online_with(&door, Some("g1"), &id).await, on);

    // A secret GatewayClient cannot send (from a file: the env file refuses `"` itself).
    let bad = dir.file("bad-secret", "a\"b\n");
    let text = format!("PUSHWIRE_GATEWAY_SECRET_FILE={bad}\n");
    let line = reload_with(&door, &env, &text, 4).await;
    assert!(
        line.contains("reload failed") && line.contains("gateway secret"),
        "{line}"
    );
    assert_eq!(online_with(&door, Some("g1"), &id).await, on);
    let good = dir.file("secret", "g2\n");
    let text = format!("PUSHWIRE_GATEWAY_SECRET_FILE={good}\n");
    let line = reload_with(&door, &env, &text, 5).await;
    assert!(line.contains("gateway secret rotated"), "{line}");
    assert_eq!(online_with(&door, Some("g2"), &id).await, on);

    // Removed only by `none`, loudly.
    let line = reload_with(&door, &env, "PUSHWIRE_GATEWAY_SECRET=none\n", 6).await;
    assert!(
        line.contains("WARN") && line.contains("gateway secret removed"),
        "{line}"
    );
    assert_eq!(online_with(&door, None, &id).await, on);
}

/// A greeted page's `connect`, `bind` (when the backend's `bindUid` arrives) and `close`
/// events carry the `client_id` it was greeted with (docs/events.md), so a backend that
/// addresses pages by `client_id` (GatewayWorker's `onConnect($client_id)`) can match them;
/// a page on the ordinary listener has none.
#[tokio::test]
async fn a_greeted_pages_events_carry_its_client_id() {
    use common::webhook::{Answer, Receiver, SECRET};
    let rx = Receiver::start(|_| Answer::Status(204)).await;
    let url = rx.url("/hook#types=connect,bind,close");
    let door = Door::start(&["--events-url", &url, "--events-secret", SECRET]).await;
    let (mut page, id) = door.page().await;
    let mut php = door.php().await;
    php.call("bindUid", json!([id, "greeted-u"])).await;
    eventually(
        &mut php,
        "getUidByClientId",
        json!([id]),
        json!("greeted-u"),
    )
    .await;
    php.call("closeClient", json!([id])).await;
    let (code, _) = page.expect_close().await;
    assert_eq!(code, 4001);
    let events = rx.wait_taken(3, STEP).await;
    let shape: Vec<(&str, u64, Option<&str>, Option<&str>)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["seq"].as_u64().unwrap(),
                e["uid"].as_str(),
                e["client_id"].as_str(),
            )
        })
        .collect();
    let id = Some(id.as_str());
    assert_eq!(
        shape,
        [
            ("connect", 1, None, id),
            ("bind", 2, Some("greeted-u"), id),
            ("close", 3, Some("greeted-u"), id),
        ],
        "{events:#?}"
    );
    assert_eq!(events[2]["code"], 4001);
    let conn = &events[0]["conn"];
    assert!(events.iter().all(|e| &e["conn"] == conn), "{events:#?}");

    // A page bound on the ordinary listener: no client_id.
    let mut plain = WsClient::connect(&door.daemon.ws_url()).await;
    plain.bind("plain-u", door.daemon.push_addr).await;
    plain.close().await;
    let events = rx.wait_taken(6, STEP).await;
    assert!(
        events[3..].iter().all(|e| e.get("client_id").is_none()),
        "{events:#?}"
    );
}
