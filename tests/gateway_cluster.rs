//! The GatewayClient door in cluster mode (issue 22), two real daemons on Redis (standalone
//! and Redis Cluster): the Register of node A names A alone, and A answers for every node,
//! so a `client_id` of a page on node B, as A's queries list it (with A's address), works
//! through A; queries count both nodes' pages; sendToUid reaches tabs on both nodes.
//!
//! These tests never skip: php-cli and redis-server are required (`scripts/test.sh`).
#[macro_use]
mod common;

use std::time::Duration;

use common::WsClient;
use common::gateway_php::{Door, eventually};
use common::redis::*;
use serde_json::json;

/// Long enough for a message that is wrongly on its way to arrive.
const QUIET: Duration = Duration::from_millis(300);

/// `id` with its address replaced by `door`'s: the id as `door`'s queries list it.
fn as_listed_by(door: &Door, id: &str) -> String {
    let Door { gateway, .. } = door;
    let std::net::SocketAddr::V4(addr) = gateway else {
        panic!("an IPv4 gateway")
    };
    let ip = u32::from(*addr.ip());
    format!("{ip:08x}{:04x}{}", addr.port(), &id[12..])
}

async fn a_client_id_on_b_works_through_as_register(url: &str) {
    let a = Door::start(&["--redis", url]).await;
    let b = Door::start(&["--redis", url]).await;
    let (mut pa, id_a) = a.page().await;
    let (mut pb, id_b) = b.page().await;
    assert_ne!(
        &id_a[12..],
        &id_b[12..],
        "connection numbers are unique cluster-wide"
    );
    // A seed page on node B, bound by its first frame.
    let mut seed = WsClient::connect(&b.daemon.ws_url()).await;
    seed.bind("u", b.daemon.push_addr).await;

    let mut php = a.php().await;
    // A lists both pages, with its own address.
    let (la, lb) = (as_listed_by(&a, &id_a), as_listed_by(&a, &id_b));
    assert_eq!(la, id_a);
    let all = php.call("getAllClientIdList", json!([])).await.value;
    assert_eq!(all, json!({la.clone(): la.clone(), lb.clone(): lb.clone()}));
    // B's page, bound and grouped through A.
    php.call("bindUid", json!([la, "u"])).await;
    php.call("bindUid", json!([lb, "u"])).await;
    php.call("joinGroup", json!([la, "g"])).await;
    php.call("joinGroup", json!([lb, "g"])).await;
    assert_eq!(php.call("isOnline", json!([lb])).await.value, 1);
    // (A bind is void: its effect is waited for, as any GatewayClient caller would.)
    eventually(&mut php, "getUidByClientId", json!([lb]), json!("u")).await;
    eventually(&mut php, "getClientIdCountByGroup", json!(["g"]), json!(2)).await;
    assert_eq!(
        php.call("getClientIdByUid", json!(["u"])).await.value,
        json!([la, lb])
    );
    assert_eq!(php.call("isUidOnline", json!(["u"])).await.value, 1);
    assert_eq!(php.call("getAllClientIdCount", json!([])).await.value, 2);
    assert_eq!(
        php.call("getClientIdCountByGroup", json!(["g"]))
            .await
            .value,
        2
    );
    assert_eq!(
        php.call("getAllUidList", json!([])).await.value,
        json!({"u": "u"})
    );
    assert_eq!(
        php.call("getAllGroupIdList", json!([])).await.value,
        json!({"g": "g"})
    );
    // Through B's Register the same answers (any node answers for all).
    let mut via_b = b.php().await;
    assert_eq!(
        via_b
            .call("getClientIdCountByGroup", json!(["g"]))
            .await
            .value,
        2
    );

    // Sends through A reach both nodes.
    php.call("sendToUid", json!(["u", "to u"])).await;
    for page in [&mut pa, &mut pb, &mut seed] {
        assert_eq!(page.recv_text().await, "to u");
    }
    php.call("sendToGroup", json!(["g", "to g", [la]])).await;
    assert_eq!(pb.recv_text().await, "to g");
    php.call("sendToAll", json!(["to all"])).await;
    assert_eq!(pa.recv_text().await, "to all");
    assert_eq!(pb.recv_text().await, "to all");
    // Every page of every node, the browser port's too (docs/gateway.md).
    assert_eq!(seed.recv_text().await, "to all");
    php.call("sendToClient", json!([lb, "to b"])).await;
    assert_eq!(pb.recv_text().await, "to b");
    pa.expect_silence(QUIET).await;
    seed.expect_silence(QUIET).await;

    // Sessions and closing, through A.
    php.call("setSession", json!([lb, {"k": "v"}])).await;
    eventually(&mut php, "getSession", json!([lb]), json!({"k": "v"})).await;
    php.call("closeClient", json!([lb, "bye"])).await;
    assert_eq!(pb.recv_text().await, "bye");
    assert_eq!(pb.expect_close().await.0, 4001);
    drop(pa);
}

/// Protocol v1 on a greeted page in cluster mode (histories in Redis): a page on B bound
/// through A's Register gets its uid's status frame, then what A sends its uid numbered,
/// and resumes on A after a reload with nothing missed.
async fn a_v1_greeted_page_on_b_gets_numbered_messages_through_a(url: &str) {
    let a = Door::start(&["--redis", url]).await;
    let b = Door::start(&["--redis", url]).await;
    let v1_page = |door: &Door, query: String| {
        let url = format!("ws://{}/?pushwire=1{query}", door.greeted);
        async move {
            let deadline = tokio::time::Instant::now() + common::STEP * 2;
            loop {
                let mut ws = WsClient::connect(&url).await;
                match ws.next_event().await {
                    common::WsEvent::Text(t) => {
                        let greeting: serde_json::Value =
                            serde_json::from_str(t.strip_prefix("b ").unwrap()).unwrap();
                        let id = greeting["client_id"].as_str().unwrap().to_owned();
                        break (ws, id);
                    }
                    // No connection number before the node holds its tag.
                    common::WsEvent::Close(1013, _) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => panic!("greeted page got {other:?}"),
                }
            }
        }
    };
    let (mut page, id) = v1_page(&b, String::new()).await;
    let mut php = a.php().await;
    php.set("persistentConnection", true).await;
    php.call("bindUid", json!([as_listed_by(&a, &id), "v"]))
        .await;
    let status = page.recv_text().await;
    let epoch = status
        .strip_prefix("s new ")
        .and_then(|at| at.strip_suffix(":0"))
        .unwrap_or_else(|| panic!("a status frame at the bind: {status}"))
        .to_owned();
    php.call("sendToUid", json!(["v", "one"])).await;
    assert_eq!(page.recv_text().await, "m 1 one");
    page.close().await;
    php.call("sendToUid", json!(["v", "two"])).await;
    let (mut page, id) = v1_page(&a, format!("&since={epoch}:1")).await;
    php.call("bindUid", json!([id, "v"])).await;
    assert_eq!(page.recv_text().await, format!("s recovered {epoch}:1"));
    assert_eq!(page.recv_text().await, "m 2 two");
    page.expect_silence(QUIET).await;
}

/// A greeted page on a node killed with -9: the survivor that reaps the node tells the
/// page's `close` (1006, `node lost`) with its uid and the `client_id` it was greeted with
/// (docs/events.md, "In a cluster").
async fn a_killed_nodes_greeted_page_is_closed_with_its_client_id(url: &str) {
    use common::webhook::{Answer, Receiver, SECRET};
    let rx = Receiver::start(|_| Answer::Status(204)).await;
    let hook = rx.url("/hook#types=bind,close");
    let args = [
        "--redis",
        url,
        "--events-url",
        &hook,
        "--events-secret",
        SECRET,
    ];
    let _a = Door::start(&args).await;
    let mut b = Door::start(&args).await;
    let (_page, id) = b.page().await;
    let mut php = b.php().await;
    php.call("bindUid", json!([id, "gk9"])).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !rx.taken().iter().any(|e| e["type"] == "bind") {
        assert!(tokio::time::Instant::now() < deadline, "{:#?}", rx.taken());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // B's connections are in Redis once it has beaten and synced them: a moment.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    b.daemon.kill9();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    let reaped = loop {
        let taken = rx.taken();
        if let Some(e) = taken.iter().find(|e| e["reason"] == "node lost") {
            break e.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{taken:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(reaped["type"], "close");
    assert_eq!(reaped["code"], 1006);
    assert_eq!(reaped["uid"], "gk9");
    assert_eq!(reaped["client_id"], id.as_str(), "{reaped}");
}

on_both!(
    a_client_id_on_b_works_through_as_register,
    a_v1_greeted_page_on_b_gets_numbered_messages_through_a,
    a_killed_nodes_greeted_page_is_closed_with_its_client_id,
);
