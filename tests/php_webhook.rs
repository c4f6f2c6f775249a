//! The PHP webhook receiver (`clients/php/Webhook.php`) and the GatewayWorker `Events.php`
//! rewritten for pushwire (`clients/php/examples/`), each under php-cli's built-in web
//! server (`php -S`), taking real signed deliveries from pushwire's sender and refusing
//! forged, tampered and stale ones (docs/events.md).
//!
//! These tests never skip: a missing `php` is a failure (`scripts/test.sh` installs it).
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pushwire::auth::Secret;
use pushwire::events::{EventsConfig, Hub, Listener, What, signature};
use pushwire::metrics::{Metric, Metrics};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

const SECRET: &str = "php-receiver-s3cret";

/// `php -S` on a free port running `router`, with `env`; killed when dropped.
struct PhpServer {
    addr: SocketAddr,
    _child: Child,
}

impl PhpServer {
    async fn start(router: &str, env: &[(&str, String)]) -> PhpServer {
        let addr = free_addr();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut cmd = Command::new("php");
        cmd.arg("-S")
            .arg(addr.to_string())
            .arg(root.join(router))
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start php: {e} (scripts/test.sh installs php-cli)"));
        poll_until(Duration::from_secs(10), "php -S to listen", || async {
            TcpStream::connect(addr).await.is_ok()
        })
        .await;
        PhpServer {
            addr,
            _child: child,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// POSTs `body` with the given signature headers; the status and the body.
    async fn post(&self, timestamp: &str, sig: &str, body: &[u8]) -> (u16, String) {
        let mut tcp = TcpStream::connect(self.addr).await.unwrap();
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             X-Pushwire-Timestamp: {timestamp}\r\nX-Pushwire-Signature: {sig}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(body).await.unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let text = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (status, text)
    }
}

fn hub_to(url: &str, secret: &str, tune: impl FnOnce(&mut EventsConfig)) -> (Hub, Arc<Metrics>) {
    let mut config = EventsConfig {
        listeners: Listener::parse_all(&[url]).unwrap(),
        ..EventsConfig::default()
    };
    tune(&mut config);
    let metrics = Arc::new(Metrics::default());
    let hub = Hub::with_tls(
        &config,
        Some(Secret::new(secret)),
        "node-php".into(),
        metrics.clone(),
        None,
    )
    .unwrap();
    (hub, metrics)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The recorded events, one JSON object per line of `file`.
fn recorded(file: &str) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn wait_recorded(file: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = recorded(file);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} recorded: {got:?}",
            got.len()
        );
        sleep(Duration::from_millis(20)).await;
    }
}

/// Real deliveries are taken in order, each event to its handler method; a delivery
/// signed with another secret, a tampered body, a stale or missing timestamp are refused
/// with 401 (the sender counts the refusal and does not retry it), a signed body that is
/// not a delivery with 400; a handler that throws gets its batch again.
#[tokio::test]
async fn the_php_receiver_takes_real_deliveries_and_refuses_forgeries() {
    let dir = Scratch::new("php-webhook");
    let record = dir.path("events.jsonl");
    let php = PhpServer::start(
        "tests/php/webhook_recorder.php",
        &[
            ("PUSHWIRE_EVENTS_SECRET", SECRET.to_owned()),
            ("RECORD", record.clone()),
        ],
    )
    .await;

    let (hub, metrics) = hub_to(&php.url(), SECRET, |_| {});
    let conn: Arc<str> = "node-php-7".into();
    hub.publish(
        What::Online {
            uid: "alice".into(),
        },
        hub.next_seq(),
    );
    hub.publish(
        What::Connect {
            conn: conn.clone(),
            client_id: None,
        },
        1,
    );
    hub.publish(
        What::Bind {
            conn: conn.clone(),
            uid: "alice".into(),
            client_id: None,
        },
        2,
    );
    hub.publish(
        What::GroupOccupied {
            group: "room 1".into(),
        },
        hub.next_seq(),
    );
    hub.publish(
        What::Close {
            conn,
            uid: Some("alice".into()),
            code: 1001,
            reason: Some("bye ✓".into()),
            client_id: None,
        },
        3,
    );
    hub.publish(
        What::Offline {
            uid: "alice".into(),
        },
        hub.next_seq(),
    );
    let got = wait_recorded(&record, 6).await;
    let types: Vec<&str> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "online",
            "connect",
            "bind",
            "group_occupied",
            "close",
            "offline"
        ]
    );
    assert_eq!(got[4]["reason"], "bye ✓");
    assert_eq!(got[3]["group"], "room 1");
    assert!(got.iter().all(|e| e["node"] == "node-php"));

    // Signed with another secret: refused, counted, not sent again.
    let (forger, forged) = hub_to(&php.url(), "not-the-secret", |_| {});
    forger.publish(
        What::Online {
            uid: "mallory".into(),
        },
        forger.next_seq(),
    );
    poll_until(STEP, "the forged delivery to be refused", || async {
        forged.value(Metric::EventsDroppedRefused) == 1
    })
    .await;
    assert_eq!(forged.value(Metric::EventsRetried), 0);
    assert_eq!(
        forger.receivers()[0].last_error.as_deref(),
        Some("answered 401: refused, not retried; 1 events dropped")
    );

    // Requests made by hand: the signature over the timestamp and the body.
    let secret = Secret::new(SECRET);
    let body = br#"{"events":[{"type":"online","seq":1,"node":"x","time_ms":1,"uid":"eve"}]}"#;
    let t = now();
    let good = signature::sign(&secret, t, body);
    let tampered = String::from_utf8_lossy(body).replace("eve", "evil");
    let (status, why) = php.post(&t.to_string(), &good, tampered.as_bytes()).await;
    assert_eq!(
        (status, why.trim()),
        (401, "bad signature"),
        "tampered body"
    );
    let stale = t - 301;
    let (status, why) = php
        .post(
            &stale.to_string(),
            &signature::sign(&secret, stale, body),
            body,
        )
        .await;
    assert_eq!(status, 401);
    assert!(why.contains("stale timestamp"), "{why}");
    let (status, _) = php.post(&(t + 1).to_string(), &good, body).await;
    assert_eq!(status, 401, "the timestamp is signed");
    let (status, why) = php.post("", "", body).await;
    assert_eq!(status, 401, "{why}");
    let not_a_delivery = br#"{"event":"online"}"#;
    let (status, why) = php
        .post(
            &t.to_string(),
            &signature::sign(&secret, t, not_a_delivery),
            not_a_delivery,
        )
        .await;
    assert_eq!(
        (status, why.trim()),
        (400, r#"the body is not {"events":[...]}"#)
    );
    // The genuine one, by hand too, is taken.
    let (status, _) = php.post(&t.to_string(), &good, body).await;
    assert_eq!(status, 204);
    assert_eq!(wait_recorded(&record, 7).await[6]["uid"], "eve");

    // A handler that throws: 500, and the same batch comes again.
    hub.publish(What::Online { uid: "boom".into() }, hub.next_seq());
    let got = wait_recorded(&record, 8).await;
    assert_eq!(got[7]["uid"], "boom");
    poll_until(STEP, "the retry to be counted", || async {
        metrics.value(Metric::EventsSent) == 7
    })
    .await;
    assert_eq!(metrics.value(Metric::EventsRetried), 1);
    let all = recorded(&record);
    let uids: Vec<&str> = all.iter().filter_map(|e| e["uid"].as_str()).collect();
    assert!(!uids.contains(&"mallory"), "{uids:?}");
}

/// The GatewayWorker chat room rewritten (clients/php/examples): a running pushwire sends
/// the browsers' `message` events to examples/webhook.php under `php -S`, whose Events
/// joins the sender to the room and says to the room over the push port; the browsers get
/// it. The browsers send their messages themselves, as frames after their uid.
#[tokio::test]
async fn the_gatewayworker_chat_room_rewritten_runs_on_pushwire() {
    let mut config = pushwire::Config::default();
    let php_addr = free_addr();
    config.events.listeners =
        Listener::parse_all(&[format!("http://{php_addr}/#types=*,message")]).unwrap();
    config.events_secret = Some(Secret::new(SECRET));
    let (server, state) = TestServer::start_with_state(config).await;
    let _php = {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut cmd = Command::new("php");
        cmd.arg("-S")
            .arg(php_addr.to_string())
            .arg(root.join("clients/php/examples/webhook.php"))
            .env(
                "PUSHWIRE_EVENTS_SECRET",
                format!("an-older-secret {SECRET}"),
            )
            .env("PUSHWIRE_PUSH", format!("tcp://{}", server.push_addr))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().expect("php");
        poll_until(Duration::from_secs(10), "php -S to listen", || async {
            TcpStream::connect(php_addr).await.is_ok()
        })
        .await;
        child
    };
    let mut alice = WsClient::connect(&server.ws_url()).await;
    alice.bind("alice", server.push_addr).await;
    let mut bob = WsClient::connect(&server.ws_url()).await;
    bob.bind("bob", server.push_addr).await;
    // A userId in the message is not believed: the sender is the bound uid.
    alice
        .send_text(
            &json!({"type":"join","roomId":"r1","userId":"mallory","userName":"Alice"}).to_string(),
        )
        .await;
    let joined: Value = serde_json::from_str(&alice.recv_text().await).unwrap();
    assert_eq!(
        (&joined["type"], &joined["roomId"], &joined["userName"]),
        (&json!("join"), &json!("r1"), &json!("Alice"))
    );
    bob.send_text(&json!({"type":"join","roomId":"r1","userName":"Bob"}).to_string())
        .await;
    for ws in [&mut alice, &mut bob] {
        let j: Value = serde_json::from_str(&ws.recv_text().await).unwrap();
        assert_eq!(
            (&j["type"], &j["userName"]),
            (&json!("join"), &json!("Bob"))
        );
    }
    alice
        .send_text(&json!({"type":"say","roomId":"r1","content":"hi ✓"}).to_string())
        .await;
    for ws in [&mut alice, &mut bob] {
        let j: Value = serde_json::from_str(&ws.recv_text().await).unwrap();
        assert_eq!((&j["type"], &j["content"]), (&json!("say"), &json!("hi ✓")));
    }
    let mut push = PushClient::connect(server.push_addr).await;
    let members: Value = serde_json::from_str(&push.request("/members r1").await).unwrap();
    let mut uids: Vec<&str> = members["uids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    uids.sort_unstable();
    assert_eq!(uids, ["alice", "bob"], "{members}");
    assert_eq!(state.metrics.value(Metric::EventsDroppedRefused), 0);
    assert_eq!(state.metrics.value(Metric::EventsMessages), 3);
}
