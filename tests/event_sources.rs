//! Events from a running node (docs/events.md): a tab's life (`connect`, `online`, `bind`,
//! `message`s, `close`, `offline`) as a webhook receiver and an `/events` reader get it,
//! over real sockets; a reload within the debounce; messages off by default and refused
//! over their bounds; groups made and emptied.
mod common;

use std::time::Duration;

use common::webhook::*;
use common::*;
use pushwire::events::Listener;
use pushwire::metrics::Metric;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A node sending its events to `url`, with the debounce given.
fn config(url: &str, debounce: Duration) -> pushwire::Config {
    let mut c = pushwire::Config::default();
    c.events.listeners = Listener::parse_all(&[url]).unwrap();
    c.events.debounce = debounce;
    c.events_secret = Some(pushwire::auth::Secret::new(SECRET));
    c
}

/// Closes `tab` with 1000 and waits for the server's answer.
async fn close_normally(mut tab: WsClient) {
    tab.ws
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    tab.close().await;
}

/// `(type, seq)` of each event, for assertions that read like the sequence.
fn kinds(events: &[Value]) -> Vec<(String, u64)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Checks a tab's events as a receiver got them: `connect`, `online`, `bind`, two
/// `message`s, `close` with 1000, `offline`; one `conn` numbered 1 to 5, the uid's two
/// numbered by the clock, in order.
fn check_a_tabs_life(events: &[Value], node: &str) {
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "connect", "online", "bind", "message", "message", "close", "offline"
        ],
        "{events:#?}"
    );
    let conn = events[0]["conn"].as_str().unwrap();
    assert!(conn.starts_with(&format!("{node}-")), "{conn}");
    for e in events {
        assert_eq!(e["node"], node);
        assert!(e["time_ms"].as_u64().unwrap() > 1_600_000_000_000);
    }
    let of_conn: Vec<&Value> = events.iter().filter(|e| e.get("conn").is_some()).collect();
    assert!(of_conn.iter().all(|e| e["conn"] == conn));
    assert_eq!(
        of_conn
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(events[2]["uid"], "alice");
    assert_eq!(events[3]["data"], r#"{"type":"say","text":"hello"}"#);
    assert_eq!(events[4]["data"], "second");
    assert_eq!(events[5]["uid"], "alice");
    assert_eq!(events[5]["code"], 1000);
    assert!(events[5].get("reason").is_none());
    assert_eq!(
        (&events[1]["uid"], &events[6]["uid"]),
        (&"alice".into(), &"alice".into())
    );
    assert!(events[1]["seq"].as_u64() < events[6]["seq"].as_u64());
}

/// A tab opens, binds, sends two messages and closes: the receiver gets its whole life,
/// signed, in order, and the `offline` only once the debounce passed.
#[tokio::test]
async fn a_tabs_life_reaches_a_webhook() {
    let rx = Receiver::start(|_| Answer::Status(204)).await;
    let debounce = Duration::from_millis(600);
    let (server, state) =
        TestServer::start_with_state(config(&rx.url("/hook#types=*,message"), debounce)).await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("alice", server.push_addr).await;
    tab.send_text(r#"{"type":"say","text":"hello"}"#).await;
    tab.send_text("second").await;
    close_normally(tab).await;
    let events = rx.wait_taken(7, STEP).await;
    check_a_tabs_life(&events, state.events.node());
    let (closed, offline) = (&events[5]["time_ms"], &events[6]["time_ms"]);
    assert!(
        offline.as_u64().unwrap() - closed.as_u64().unwrap() >= debounce.as_millis() as u64,
        "offline before the debounce: {events:#?}"
    );
    assert_eq!(state.metrics.value(Metric::EventsMessages), 2);
}

/// The same life read from `/events` on the push port with a raw TCP reader (as `nc`
/// would), one JSON line per event.
#[tokio::test]
async fn a_tabs_life_reaches_an_events_reader() {
    let mut c = pushwire::Config::default();
    c.events.debounce = Duration::from_millis(300);
    let (server, state) = TestServer::start_with_state(c).await;
    let mut reader = BufReader::new(TcpStream::connect(server.push_addr).await.unwrap());
    reader
        .get_mut()
        .write_all(b"/events *,message\n")
        .await
        .unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    assert!(line.starts_with(r#"{"ok":true,"types":["#), "{line}");

    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("alice", server.push_addr).await;
    tab.send_text(r#"{"type":"say","text":"hello"}"#).await;
    tab.send_text("second").await;
    close_normally(tab).await;
    let mut events = Vec::new();
    while events.len() < 7 {
        let mut line = String::new();
        timeout(STEP, reader.read_line(&mut line))
            .await
            .expect("an event in time")
            .unwrap();
        if line.trim().is_empty() {
            continue; // keep-alive
        }
        events.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    check_a_tabs_life(&events, state.events.node());
}

/// A reload (the tab closes and the page opens a new one within the debounce) is neither
/// offline nor online; the last tab's close is, once.
#[tokio::test]
async fn a_reload_within_the_debounce_is_neither_offline_nor_online() {
    let rx = Receiver::start(|_| Answer::Status(204)).await;
    let debounce = Duration::from_millis(1500);
    let (server, _state) =
        TestServer::start_with_state(config(&rx.url("/hook#types=online,offline"), debounce)).await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("bob", server.push_addr).await;
    close_normally(tab).await;
    let mut again = WsClient::connect(&server.ws_url()).await;
    again.bind("bob", server.push_addr).await;
    // Well past the debounce: the reload said nothing.
    sleep(debounce * 2).await;
    assert_eq!(kinds(&rx.taken()).len(), 1, "{:#?}", rx.taken());
    assert_eq!(rx.taken()[0]["type"], "online");
    close_normally(again).await;
    let events = rx.wait_taken(2, debounce + STEP).await;
    sleep(Duration::from_millis(300)).await;
    let events2 = rx.taken();
    assert_eq!(
        events.len(),
        events2.len(),
        "one offline only: {events2:#?}"
    );
    assert_eq!(events[1]["type"], "offline");
    assert_eq!(events[1]["uid"], "bob");
    assert!(events[0]["seq"].as_u64() < events[1]["seq"].as_u64());
}

/// Messages are off by default: with receivers that do not name `message`, a frame far
/// over `--events-message-bytes` is ignored as it always was. Named, one over it closes
/// the tab with 1009 and one too many in a second with 1008, both counted; the tab's
/// `close` event carries the code and the reason.
#[tokio::test]
async fn messages_are_opt_in_and_bounded() {
    let rx = Receiver::start(|_| Answer::Status(204)).await;
    let mut c = config(&rx.url("/hook"), Duration::from_millis(100));
    c.events.message.max_bytes = 32;
    c.events.message.per_second = 3;
    let (server, state) = TestServer::start_with_state(c).await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("carol", server.push_addr).await;
    tab.send_text(&"x".repeat(1000)).await;
    for _ in 0..10 {
        tab.send_text("hi").await;
    }
    tab.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(state.metrics.value(Metric::EventsMessages), 0);
    close_normally(tab).await;

    let rx = Receiver::start(|_| Answer::Status(204)).await;
    let mut c = config(
        &rx.url("/hook#types=message,close"),
        Duration::from_millis(100),
    );
    c.events.message.max_bytes = 32;
    c.events.message.per_second = 3;
    let (server, state) = TestServer::start_with_state(c).await;
    let mut big = WsClient::connect(&server.ws_url()).await;
    big.bind("carol", server.push_addr).await;
    big.send_text(&"x".repeat(32)).await;
    big.send_text(&"x".repeat(33)).await;
    let (code, reason) = big.expect_close().await;
    assert_eq!(
        (code, reason.as_str()),
        (1009, "message too big for an event (max 32 bytes)")
    );
    let mut fast = WsClient::connect(&server.ws_url()).await;
    fast.bind("dave", server.push_addr).await;
    for n in 0..4 {
        fast.send_text(&format!("m{n}")).await;
    }
    let (code, reason) = fast.expect_close().await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "messages too fast (max 3/s)")
    );
    assert_eq!(state.metrics.value(Metric::EventsMessagesRefused), 2);
    assert_eq!(state.metrics.value(Metric::EventsMessages), 4);
    let events = rx.wait_taken(6, STEP).await;
    let closes: Vec<&Value> = events.iter().filter(|e| e["type"] == "close").collect();
    assert_eq!(closes.len(), 2, "{events:#?}");
    let by_uid = |uid: &str| *closes.iter().find(|e| e["uid"] == uid).unwrap();
    assert_eq!(by_uid("carol")["code"], 1009);
    assert_eq!(by_uid("dave")["code"], 1008);
    assert_eq!(by_uid("dave")["reason"], "messages too fast (max 3/s)");
    // dave's three messages were numbered 3, 4, 5 (after connect and bind), its close 6.
    let dave: Vec<u64> = events
        .iter()
        .filter(|e| e["uid"] == "dave")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(dave, [3, 4, 5, 6]);
}

/// A group's first member makes it (`group_occupied`), its last leaving empties it
/// (`group_vacated`); joining an existing group or leaving one still occupied is neither.
#[tokio::test]
async fn groups_made_and_emptied() {
    let rx = Receiver::start(|_| Answer::Status(204)).await;
    let (server, _state) = TestServer::start_with_state(config(
        &rx.url("/hook#types=group_occupied,group_vacated"),
        Duration::from_millis(100),
    ))
    .await;
    let mut push = PushClient::connect(server.push_addr).await;
    for line in [
        r#"/join room1 ["u1","u2"]"#,
        "/join room1 u3",
        "/leave room1 u1",
        r#"/leave room1 ["u2","u3"]"#,
        "/join room2 u1",
    ] {
        assert!(push.request(line).await.contains(r#""ok":true"#), "{line}");
    }
    let events = rx.wait_taken(3, STEP).await;
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["group"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("group_occupied", "room1"),
            ("group_vacated", "room1"),
            ("group_occupied", "room2")
        ]
    );
    assert!(events[0]["seq"].as_u64() < events[1]["seq"].as_u64());
}

/// An event stream (SSE) is a connection like a tab: `connect` and `bind` when it opens,
/// `close` (1001, `client closed`: it has no close frame) when the browser goes.
#[tokio::test]
async fn an_event_stream_has_the_same_life() {
    let rx = Receiver::start(|_| Answer::Status(204)).await;
    let (server, state) =
        TestServer::start_with_state(config(&rx.url("/hook"), Duration::from_millis(200))).await;
    let mut sse = BufReader::new(TcpStream::connect(server.ws_addr).await.unwrap());
    sse.get_mut()
        .write_all(
            b"GET /events?uid=sam HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = String::new();
    while !head.contains("retry:") {
        let mut line = String::new();
        let n = timeout(STEP, sse.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "{head}");
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(sse);
    let events = rx.wait_taken(5, STEP).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["connect", "online", "bind", "close", "offline"],
        "{events:#?}"
    );
    assert_eq!(events[3]["code"], 1001);
    assert_eq!(events[3]["reason"], "client closed");
    assert_eq!(events[3]["uid"], "sam");
    assert_eq!(events[3]["seq"], 3);
    assert!(
        events[0]["conn"]
            .as_str()
            .unwrap()
            .starts_with(state.events.node())
    );
}
