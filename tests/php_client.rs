//! The PHP client (`clients/php/Pushwire.php`) against the real server, driven by php-cli
//! through `tests/php/driver.php` (one PHP process per test; its Client objects share
//! persistent sockets as the requests of one PHP-FPM worker do).
//!
//! Every call of the client is made here; browsers are `WsClient`s that check what
//! arrived, byte for byte and exactly once. Stale persistent sockets are produced by
//! restarting the daemon on the same port (in-process, and the real binary after
//! `kill -9`), by the daemon's idle timeout, and by a relay between PHP and the daemon
//! that swallows a line or holds replies back.
//!
//! These tests never skip: a missing `php` is a failure (`scripts/test.sh` installs it).
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::watch;
use tokio::time::timeout;

/// How long one driver step may take (a call with its timeouts, a PHP start).
const PHP_STEP: Duration = Duration::from_secs(10);

/// Long enough for a frame that is wrongly on its way to arrive.
const QUIET: Duration = Duration::from_millis(300);

fn tcp(addr: SocketAddr) -> String {
    format!("tcp://{addr}")
}

// ---------------------------------------------------------------------------------------
// The PHP side

/// php-cli running `tests/php/driver.php`: one JSON request per line, one answer per line.
struct Php {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Php {
    async fn start() -> Php {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/php/driver.php");
        let mut child = Command::new("php")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start php: {e} (scripts/test.sh installs php-cli)"));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Php {
            child,
            stdin,
            stdout,
        }
    }

    /// A PHP process with one Client for `address`.
    async fn with_client(address: &str, options: Value) -> Php {
        let mut php = Php::start().await;
        php.new_client(address, options).await;
        php
    }

    async fn op(&mut self, req: Value) -> Value {
        let mut line = req.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        let mut answer = String::new();
        let n = timeout(PHP_STEP, self.stdout.read_line(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("php driver: no answer to {req} within {PHP_STEP:?}"))
            .unwrap();
        if n == 0 {
            let status = self.child.wait().await;
            panic!("php driver ended ({status:?}) on {req}");
        }
        serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("php driver answered {answer:?} to {req}: {e}"))
    }

    /// Replaces the current Client (the old one is dropped, like at the end of a request).
    async fn new_client(&mut self, address: &str, options: Value) {
        let a = self
            .op(json!({"op": "new", "address": address, "options": options}))
            .await;
        assert_eq!(
            a,
            json!({"value": true}),
            "new Client({address:?}, {options})"
        );
    }

    /// `$client->method(...args)`: its return value; panics if it threw.
    async fn call(&mut self, method: &str, args: Value) -> Value {
        let a = self
            .op(json!({"op": "call", "method": method, "args": args}))
            .await;
        match a.get("value") {
            Some(v) => v.clone(),
            None => panic!("{method}({args}) threw: {a}"),
        }
    }

    /// `$client->method(...args)` must throw: the driver's answer (`exception`, `message`,
    /// `sent`, `reply`).
    async fn throws(&mut self, method: &str, args: Value) -> Value {
        let a = self
            .op(json!({"op": "call", "method": method, "args": args}))
            .await;
        assert!(
            a.get("exception").is_some(),
            "{method}({args}) returned {a} instead of throwing"
        );
        a
    }

    /// The local address of the client's socket (null when it has none open).
    async fn socket(&mut self) -> Value {
        self.op(json!({"op": "socket"})).await["value"].clone()
    }
}

/// Asserts the driver's answer is an exception of `class` whose message contains `text`.
fn assert_exception(a: &Value, class: &str, text: &str) {
    assert_eq!(a["exception"], class, "exception class: {a}");
    let msg = a["message"].as_str().unwrap_or_default();
    assert!(msg.contains(text), "message {msg:?} lacks {text:?}: {a}");
}

/// A browser bound as `uid`.
async fn tab(server: &TestServer, uid: &str) -> WsClient {
    let mut t = WsClient::connect(&server.ws_url()).await;
    t.bind(uid, server.push_addr).await;
    t
}

// ---------------------------------------------------------------------------------------
// Calls

#[tokio::test]
async fn push_is_ok_or_fail_and_arrives_byte_exact() {
    let server = TestServer::start().await;
    let mut t1 = tab(&server, "uid1").await;
    let mut t123 = tab(&server, "123").await;
    let mut php = Php::with_client(&tcp(server.push_addr), json!({})).await;

    // An array is json_encode()d as PHP does by default ('/' and non-ASCII escaped).
    let msg = json!({"uid": "uid1", "percent": "88%", "text": "héllo/✓"});
    assert_eq!(php.call("push", json!([msg])).await, true);
    assert_eq!(
        t1.recv_text().await,
        r#"{"uid":"uid1","percent":"88%","text":"h\u00e9llo\/\u2713"}"#
    );
    // A string is sent as it is.
    let line = r#"{"uid":"uid1","raw":"héllo / ✓ \"q\""}"#;
    assert_eq!(php.call("push", json!([line])).await, true);
    assert_eq!(t1.recv_text().await, line);
    // An integer uid, as PHP writes user ids.
    assert_eq!(php.call("push", json!([{"uid": 123, "n": 1}])).await, true);
    assert_eq!(t123.recv_text().await, r#"{"uid":123,"n":1}"#);

    // fail: nobody bound, malformed lines. The connection stays usable.
    for bad in [
        json!({"uid": "nobody"}),
        json!("not json"),
        json!({"no_uid": 1}),
    ] {
        assert_eq!(php.call("push", json!([bad])).await, false, "{bad}");
    }
    assert_eq!(
        php.call("push", json!([{"uid": "uid1", "n": 2}])).await,
        true
    );
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":2}"#);
    t1.expect_silence(QUIET).await;
    t123.expect_silence(Duration::ZERO).await;

    t1.close().await;
    t123.close().await;
    server.shutdown().await.unwrap();
}

/// `pushTracked` (protocol v1): the offline queue, an ack from an opted-in tab while PHP
/// waits, a tab that never acks, and a retry that is not delivered twice.
#[tokio::test]
async fn push_tracked_queues_waits_for_acks_and_dedupes() {
    use common::v1::{V1Client, V1Event};
    let server = TestServer::start().await;
    let mut php = Php::with_client(&tcp(server.push_addr), json!({"read_timeout": 1.0})).await;

    let r = php
        .call(
            "pushTracked",
            json!([1, {"uid": "away", "n": 1}, 60000, null]),
        )
        .await;
    assert_eq!(r["result"], "queued", "{r}");
    assert_eq!(
        (r["ok"].as_bool(), r["seq"].as_u64()),
        (Some(true), Some(1))
    );
    let mut tab = V1Client::connect(server.ws_addr, "away", None).await;
    assert_eq!(r["epoch"], tab.status.epoch.as_str());
    tab.expect_msg(1, r#"{"uid":"away","n":1}"#).await;

    // Acked: the tab acks what it got while PHP waits (longer than read_timeout alone).
    let acker = tokio::spawn(async move {
        let V1Event::Msg(seq, payload) = tab.next().await else {
            panic!("expected a message");
        };
        assert_eq!(payload, r#"{"uid":"away","n":2}"#);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        tab.ack(seq).await;
        tab
    });
    let r = php
        .call(
            "pushTracked",
            json!(["a", {"uid": "away", "n": 2}, null, 5000]),
        )
        .await;
    assert_eq!(r["result"], "acked", "{r}");
    assert_eq!((r["acks"].as_u64(), r["seq"].as_u64()), (Some(1), Some(2)));
    let mut tab = acker.await.unwrap();

    // Not acked: the tab gets it and never acks.
    let r = php
        .call(
            "pushTracked",
            json!(["b", {"uid": "away", "n": 3}, null, 300]),
        )
        .await;
    assert_eq!(
        (r["result"].as_str(), r["ok"].as_bool()),
        (Some("not_acked"), Some(false))
    );
    tab.expect_msg(3, r#"{"uid":"away","n":3}"#).await;

    // The retry of an accepted push: duplicate, delivered once.
    let r = php
        .call(
            "pushTracked",
            json!(["a", {"uid": "away", "n": 2}, null, 5000]),
        )
        .await;
    assert_eq!(
        (r["result"].as_str(), r["first"].as_str()),
        (Some("duplicate"), Some("delivered"))
    );
    tab.tab.expect_silence(QUIET).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn push_detailed_returns_the_reply_with_its_id() {
    let server = TestServer::start().await;
    let mut t1 = tab(&server, "uid1").await;
    let mut php = Php::with_client(&tcp(server.push_addr), json!({})).await;

    let r = php
        .call("pushDetailed", json!([42, {"uid": "uid1", "n": 1}]))
        .await;
    assert_eq!(
        r,
        json!({"ok": true, "result": "delivered", "connections": 1, "refused": 0, "id": "42"})
    );
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":1}"#);

    let r = php
        .call("pushDetailed", json!(["a b", {"uid": "nobody"}]))
        .await;
    assert_eq!(
        r,
        json!({"ok": false, "result": "offline", "connections": 0, "refused": 0, "id": "a b"})
    );

    // A malformed line is the caller's bug: ServerException, with the reply attached.
    let a = php
        .throws("pushDetailed", json!(["7", {"no_uid": 1}]))
        .await;
    assert_exception(&a, "Pushwire\\ServerException", "uid");
    assert_eq!(a["reply"]["result"], "malformed");
    assert_eq!(a["reply"]["id"], "7");
    t1.expect_silence(QUIET).await;

    t1.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn send_reaches_every_listed_uid() {
    let server = TestServer::start().await;
    let mut u1 = tab(&server, "u1").await;
    let mut u2 = tab(&server, "u 2").await;
    let mut u3 = tab(&server, "3").await;
    let mut php = Php::with_client(&tcp(server.push_addr), json!({})).await;

    let n = php
        .call("send", json!([["u1", "u 2", "nobody"], {"msg": "hi"}]))
        .await;
    assert_eq!(n, 2);
    assert_eq!(u1.recv_text().await, r#"{"msg":"hi"}"#);
    assert_eq!(u2.recv_text().await, r#"{"msg":"hi"}"#);
    let last = php.call("lastReply", json!([])).await;
    assert_eq!(last["uids"], 3);
    assert_eq!(last["connections"], 2);

    // A string payload is sent verbatim; one uid may be given alone, as an integer.
    assert_eq!(php.call("send", json!([3, "plain text, ✓"])).await, 1);
    assert_eq!(u3.recv_text().await, "plain text, ✓");
    assert_eq!(php.call("send", json!(["nobody", "x"])).await, 0);

    u1.expect_silence(QUIET).await;
    u2.expect_silence(Duration::ZERO).await;
    u3.expect_silence(Duration::ZERO).await;
    for t in [u1, u2, u3] {
        t.close().await;
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn join_group_and_leave() {
    let server = TestServer::start().await;
    let mut u1 = tab(&server, "u1").await;
    let mut u2 = tab(&server, "u2").await;
    let mut php = Php::with_client(&tcp(server.push_addr), json!({})).await;

    assert_eq!(php.call("join", json!(["room 1", ["u1", "u2"]])).await, 2);
    assert_eq!(php.call("join", json!(["room 1", "u1"])).await, 0);
    assert_eq!(
        php.call("group", json!(["room 1", {"msg": "to the room"}]))
            .await,
        2
    );
    assert_eq!(u1.recv_text().await, r#"{"msg":"to the room"}"#);
    assert_eq!(u2.recv_text().await, r#"{"msg":"to the room"}"#);
    assert_eq!(php.call("lastReply", json!([])).await["members"], 2);

    assert_eq!(php.call("leave", json!(["room 1", ["u2"]])).await, 1);
    assert_eq!(php.call("group", json!(["room 1", "only u1"])).await, 1);
    assert_eq!(u1.recv_text().await, "only u1");
    assert_eq!(php.call("group", json!(["no such room", "x"])).await, 0);

    u1.expect_silence(QUIET).await;
    u2.expect_silence(Duration::ZERO).await;
    u1.close().await;
    u2.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn broadcast_online_and_count() {
    let server = TestServer::start().await;
    let mut a1 = tab(&server, "a").await;
    let mut a2 = tab(&server, "a").await;
    let mut b = tab(&server, "b").await;
    let mut php = Php::with_client(&tcp(server.push_addr), json!({})).await;

    assert_eq!(php.call("broadcast", json!([{"all": true}])).await, 3);
    for t in [&mut a1, &mut a2, &mut b] {
        assert_eq!(t.recv_text().await, r#"{"all":true}"#);
    }
    assert_eq!(php.call("online", json!(["a"])).await, 2);
    assert_eq!(php.call("online", json!(["b"])).await, 1);
    assert_eq!(php.call("online", json!(["nobody"])).await, 0);
    php.call("join", json!(["g", "b"])).await;
    assert_eq!(
        php.call("count", json!([])).await,
        json!({"uids": 2, "connections": 3, "groups": 1})
    );
    assert_eq!(php.call("ping", json!([])).await, true);
    assert_eq!(php.call("command", json!(["/stats"])).await["uids"], 2);

    a1.expect_silence(QUIET).await;
    for t in [a1, a2, b] {
        t.close().await;
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn kick_closes_the_tabs_with_4001() {
    let server = TestServer::start().await;
    let mut u1 = tab(&server, "u1").await;
    let mut u2 = tab(&server, "u2").await;
    let mut php = Php::with_client(&tcp(server.push_addr), json!({})).await;

    assert_eq!(php.call("kick", json!(["u1", "logged out"])).await, 1);
    assert_eq!(u1.expect_close().await, (4001, "logged out".to_owned()));
    assert_eq!(php.call("kick", json!([["u2", "nobody"]])).await, 1);
    assert_eq!(u2.expect_close().await, (4001, "kicked".to_owned()));
    assert_eq!(php.call("kick", json!(["nobody"])).await, 0);

    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn minted_token_binds_on_a_server_with_a_jwt_secret() {
    let server = TestServer::start_with(pushwire::Config {
        jwt_secret: Some(pushwire::auth::Secret::new("jwt-secret")),
        ..pushwire::Config::default()
    })
    .await;
    let mut php = Php::with_client(&tcp(server.push_addr), json!({})).await;

    for (uid, arg) in [("uid1", json!("uid1")), ("123", json!(123))] {
        let token = php
            .op(json!({"op": "token", "secret": "jwt-secret", "uid": arg}))
            .await["value"]
            .as_str()
            .expect("token")
            .to_owned();
        assert_eq!(token.split('.').count(), 3, "{token}");
        let mut t = WsClient::connect(&server.ws_url()).await;
        t.send_text(&token).await;
        t.wait_bound(uid, server.push_addr).await;
        let line = format!(r#"{{"uid":{arg},"via":"token"}}"#);
        assert_eq!(php.call("push", json!([line])).await, true);
        assert_eq!(t.recv_text().await, line);
        t.close().await;
    }

    // Signed with another secret, or expired: refused with 1008.
    for (secret, ttl) in [("other", 3600), ("jwt-secret", -120)] {
        let token = php
            .op(json!({"op": "token", "secret": secret, "uid": "uid1", "ttl": ttl}))
            .await["value"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut t = WsClient::connect(&server.ws_url()).await;
        t.send_text(&token).await;
        assert_eq!(t.expect_close().await.0, 1008, "secret {secret}, ttl {ttl}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn errors_are_exceptions_with_the_servers_reason() {
    let server = TestServer::start_with(pushwire::Config {
        max_list_uids: 2,
        max_line_bytes: 1024,
        ..pushwire::Config::default()
    })
    .await;
    let mut php = Php::with_client(&tcp(server.push_addr), json!({})).await;

    let a = php.throws("send", json!([["a", "b", "c"], "x"])).await;
    assert_exception(&a, "Pushwire\\ServerException", "too many uids");
    assert_eq!(a["reply"]["ok"], false);
    let a = php.throws("command", json!(["/nope"])).await;
    assert_exception(&a, "Pushwire\\ServerException", "unknown command");
    let a = php.throws("command", json!(["/count extra"])).await;
    assert_exception(&a, "Pushwire\\ServerException", "unexpected argument");
    let a = php.throws("group", json!(["", "x"])).await;
    assert_exception(&a, "Pushwire\\ServerException", "GROUP is empty");
    // An over-long group name (--max-group-bytes, 256), and a command over the line limit.
    let a = php.throws("join", json!(["g".repeat(300), "u1"])).await;
    assert_exception(
        &a,
        "Pushwire\\ServerException",
        "group name too long (max 256 bytes)",
    );
    let a = php.throws("group", json!(["g".repeat(2000), "x"])).await;
    assert_exception(
        &a,
        "Pushwire\\ServerException",
        "line too long (max 1024 bytes)",
    );
    // The connection survived all of that.
    assert_eq!(php.call("ping", json!([])).await, true);

    // Caught before anything is sent.
    let a = php.throws("broadcast", json!(["two\nlines"])).await;
    assert_exception(&a, "InvalidArgumentException", "must not contain");
    let a = php.throws("command", json!(["count"])).await;
    assert_exception(&a, "InvalidArgumentException", "starts with /");

    // Nobody listening: a connection exception, and the line was not sent.
    let refused = tcp(free_addr());
    php.new_client(&refused, json!({"connect_timeout": 0.5}))
        .await;
    let a = php.throws("push", json!([{"uid": "u1"}])).await;
    assert_exception(&a, "Pushwire\\ConnectionException", "cannot connect");
    assert_eq!(a["sent"], false);

    // A listener that never answers: a timeout (a connection exception too), sent.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    php.new_client(&tcp(silent_addr), json!({"read_timeout": 0.3}))
        .await;
    let started = tokio::time::Instant::now();
    let a = php.throws("push", json!([{"uid": "u1"}])).await;
    assert_exception(&a, "Pushwire\\TimeoutException", "within 0.3 s");
    assert_eq!(a["sent"], true);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timeout took {:?}",
        started.elapsed()
    );
    holder.abort();

    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_partly_written_line_is_reset_so_it_never_runs() {
    // A daemon that stopped reading: a line larger than the socket buffers cannot be
    // written whole. The client resets the connection (not a FIN: the daemon answers an
    // unterminated last line at EOF, so a FIN would run the truncated line).
    let stuck = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = stuck.local_addr().unwrap();
    let accept = tokio::spawn(async move { stuck.accept().await.unwrap().0 });
    let mut php = Php::with_client(&tcp(addr), json!({"read_timeout": 0.5})).await;
    let big = json!({"repeat": "x", "times": 16 << 20});
    let a = php.throws("broadcast", json!([big])).await;
    assert_exception(&a, "Pushwire\\ConnectionException", "failed after");
    assert_eq!(a["sent"], false);

    let mut conn = accept.await.unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0usize;
    let end = timeout(STEP, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => got += n,
                Err(e) => return Err(e.kind()),
            }
        }
    })
    .await
    .expect("connection neither closed nor reset");
    assert!(got > 0 && got < (16 << 20), "read {got} bytes");
    assert_eq!(
        end,
        Err(std::io::ErrorKind::ConnectionReset),
        "after {got} bytes"
    );
}

#[tokio::test]
async fn auth_with_a_push_secret() {
    let server = TestServer::start_with(pushwire::Config {
        push_secret: Some(pushwire::auth::Secret::new("s3cret")),
        ..pushwire::Config::default()
    })
    .await;
    let addr = tcp(server.push_addr);
    let mut php = Php::start().await;
    // The harness's bind probes cannot authenticate: the client itself waits for the bind.
    php.new_client(&addr, json!({"secret": "s3cret"})).await;
    let mut t1 = WsClient::connect(&server.ws_url()).await;
    t1.send_text("uid1").await;
    let deadline = tokio::time::Instant::now() + STEP;
    while php.call("online", json!(["uid1"])).await != 1 {
        assert!(tokio::time::Instant::now() < deadline, "uid1 never bound");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    php.call("close", json!([])).await;

    php.new_client(&addr, json!({"persistent": false})).await;
    let a = php.throws("push", json!([{"uid": "uid1"}])).await;
    assert_exception(&a, "Pushwire\\ServerException", "authentication required");
    php.new_client(&addr, json!({"persistent": false, "secret": "nope"}))
        .await;
    let a = php.throws("ping", json!([])).await;
    assert_exception(&a, "Pushwire\\ServerException", "bad secret");
    t1.expect_silence(Duration::ZERO).await;

    // Right secret (from a file, trailing newline ignored as the daemon does).
    let dir = std::env::temp_dir().join(format!("pushwire-php-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("push-secret");
    std::fs::write(&file, "s3cret\n").unwrap();
    php.new_client(&addr, json!({"secret_file": file})).await;
    assert_eq!(
        php.call("push", json!([{"uid": "uid1", "n": 1}])).await,
        true
    );
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":1}"#);
    let first = php.socket().await;
    // The next "request" reuses the authenticated socket.
    php.new_client(&addr, json!({"secret": "s3cret"})).await;
    assert_eq!(php.call("online", json!(["uid1"])).await, 1);
    assert_eq!(
        php.call("push", json!([{"uid": "uid1", "n": 2}])).await,
        true
    );
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":2}"#);
    assert_eq!(
        php.socket().await,
        first,
        "the persistent socket was not reused"
    );
    t1.expect_silence(QUIET).await;

    let _ = std::fs::remove_dir_all(&dir);
    t1.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn unix_socket_with_a_persistent_connection() {
    let dir = std::env::temp_dir().join(format!("pushwire-php-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("push.sock");
    let _ = std::fs::remove_file(&sock);
    let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let push = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (ws_addr, push_addr) = (ws.local_addr().unwrap(), push.local_addr().unwrap());
    let listeners = pushwire::Listeners {
        ws,
        push,
        push_unix: Some(tokio::net::UnixListener::bind(&sock).unwrap()),
        http: None,
        gateway: None,
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(pushwire::serve(
        pushwire::Config::default(),
        listeners,
        shutdown.clone(),
    ));

    let mut t1 = WsClient::connect(&format!("ws://{ws_addr}/")).await;
    t1.bind("uid1", push_addr).await;
    let addr = format!("unix://{}", sock.display());
    let mut php = Php::with_client(&addr, json!({})).await;
    assert_eq!(
        php.call("push", json!([{"uid": "uid1", "n": 1}])).await,
        true
    );
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":1}"#);
    php.new_client(&addr, json!({})).await;
    assert_eq!(php.call("send", json!([["uid1"], "over unix"])).await, 1);
    assert_eq!(t1.recv_text().await, "over unix");
    t1.expect_silence(QUIET).await;
    t1.close().await;

    shutdown.cancel();
    timeout(Duration::from_secs(10), server)
        .await
        .expect("server did not stop")
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// Persistence and stale sockets

/// A TCP relay between PHP and the daemon that counts connections and can misbehave the
/// way a daemon's side of a persistent connection does: swallow a line and close (a line
/// that arrives as the daemon closes an idle connection), or hold replies back.
struct Relay {
    addr: SocketAddr,
    state: Arc<RelayState>,
    task: tokio::task::JoinHandle<()>,
}

struct RelayState {
    accepted: AtomicUsize,
    /// The next bytes from PHP, on any connection, are dropped and that connection closed.
    swallow_next: AtomicBool,
    /// Replies on connections accepted from now on are held back this long.
    delay_ms: AtomicU64,
    /// Bumped to close every open connection.
    close_all: watch::Sender<u64>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(RelayState {
            accepted: AtomicUsize::new(0),
            swallow_next: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            close_all: watch::channel(0).0,
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                st.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(relay_one(client, upstream, st.clone()));
            }
        });
        Relay { addr, state, task }
    }

    fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    fn close_all(&self) {
        self.state.close_all.send_modify(|g| *g += 1);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.close_all();
    }
}

async fn relay_one(client: TcpStream, upstream: SocketAddr, st: Arc<RelayState>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let delay = Duration::from_millis(st.delay_ms.load(Ordering::SeqCst));
    let mut close = st.close_all.subscribe();
    close.borrow_and_update();
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let (mut cbuf, mut sbuf) = (vec![0u8; 65536], vec![0u8; 65536]);
    let mut client_open = true;
    loop {
        tokio::select! {
            _ = close.changed() => return,
            n = cr.read(&mut cbuf), if client_open => match n {
                Ok(0) | Err(_) => {
                    client_open = false;
                    let _ = sw.shutdown().await;
                }
                Ok(n) => {
                    if st.swallow_next.swap(false, Ordering::SeqCst) {
                        return; // read, never forwarded, then FIN
                    }
                    if sw.write_all(&cbuf[..n]).await.is_err() {
                        return;
                    }
                }
            },
            n = sr.read(&mut sbuf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    tokio::time::sleep(delay).await;
                    if cw.write_all(&sbuf[..n]).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}

#[tokio::test]
async fn one_persistent_socket_serves_every_client_object() {
    let server = TestServer::start().await;
    let mut t1 = tab(&server, "uid1").await;
    let relay = Relay::start(server.push_addr).await;
    let mut php = Php::start().await;

    // Three "requests" of one worker, two calls each: one connection.
    for n in 0..3 {
        php.new_client(&tcp(relay.addr), json!({})).await;
        assert_eq!(
            php.call("push", json!([{"uid": "uid1", "n": n}])).await,
            true
        );
        assert_eq!(php.call("online", json!(["uid1"])).await, 1);
        assert_eq!(t1.recv_text().await, format!(r#"{{"uid":"uid1","n":{n}}}"#));
    }
    assert_eq!(relay.accepted(), 1);

    // Without persistence, a connection per Client object.
    for n in 3..5 {
        php.new_client(&tcp(relay.addr), json!({"persistent": false}))
            .await;
        assert_eq!(
            php.call("push", json!([{"uid": "uid1", "n": n}])).await,
            true
        );
        assert_eq!(php.call("online", json!(["uid1"])).await, 1);
        assert_eq!(t1.recv_text().await, format!(r#"{{"uid":"uid1","n":{n}}}"#));
    }
    assert_eq!(relay.accepted(), 3);
    t1.expect_silence(QUIET).await;

    t1.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn daemon_restarted_on_the_same_port_between_two_calls() {
    let server = TestServer::start().await;
    let (ws_addr, push_addr) = (server.ws_addr, server.push_addr);
    let mut t1 = tab(&server, "uid1").await;
    let mut php = Php::with_client(&tcp(push_addr), json!({})).await;
    assert_eq!(
        php.call("push", json!([{"uid": "uid1", "n": 1}])).await,
        true
    );
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":1}"#);
    let before = php.socket().await;

    // Graceful restart on the same ports: the persistent socket is now closed.
    server.shutdown().await.unwrap();
    assert_eq!(t1.expect_close().await.0, 1001);
    let server = TestServer::start_on(pushwire::Config::default(), ws_addr, push_addr).await;
    let mut t1 = tab(&server, "uid1").await;

    // Same PHP process, next "request": the call succeeds, once, on a new socket. No
    // resending allowed, so this is the check before writing that saw the closed socket.
    php.new_client(&tcp(push_addr), json!({"retry_unanswered": false}))
        .await;
    assert_eq!(
        php.call("push", json!([{"uid": "uid1", "n": 2}])).await,
        true
    );
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":2}"#);
    let after = php.socket().await;
    assert_ne!(before, after, "expected a new connection");

    // And again with the same Client object across a restart (no new Client).
    server.shutdown().await.unwrap();
    assert_eq!(t1.expect_close().await.0, 1001);
    let server = TestServer::start_on(pushwire::Config::default(), ws_addr, push_addr).await;
    let mut t1 = tab(&server, "uid1").await;
    assert_eq!(
        php.call("push", json!([{"uid": "uid1", "n": 3}])).await,
        true
    );
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":3}"#);
    t1.expect_silence(QUIET).await;

    t1.close().await;
    server.shutdown().await.unwrap();
}

/// The real binary on `ws`/`push` (the harness's launcher); killed when dropped.
async fn daemon_on(ws: SocketAddr, push: SocketAddr) -> Daemon {
    Launch::new().on(ws, push).start().await
}

/// kill -9, and wait until it is gone.
async fn kill9(mut daemon: Daemon) {
    daemon.kill9();
    daemon.wait(STEP).await;
}

#[tokio::test]
async fn killed_daemon_restarted_on_the_same_port_between_two_calls() {
    let (ws, push) = (free_addr(), free_addr());
    let daemon = daemon_on(ws, push).await;
    let mut t1 = WsClient::connect(&format!("ws://{ws}/")).await;
    t1.bind("uid1", push).await;
    let mut php = Php::with_client(&tcp(push), json!({})).await;
    assert_eq!(
        php.call("push", json!([{"uid": "uid1", "n": 1}])).await,
        true
    );
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":1}"#);

    kill9(daemon).await;
    drop(t1);
    let daemon = daemon_on(ws, push).await;
    let mut t1 = WsClient::connect(&format!("ws://{ws}/")).await;
    t1.bind("uid1", push).await;

    assert_eq!(
        php.call("push", json!([{"uid": "uid1", "n": 2}])).await,
        true
    );
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":2}"#);
    assert_eq!(php.call("online", json!(["uid1"])).await, 1);
    t1.expect_silence(QUIET).await;

    t1.close().await;
    kill9(daemon).await;
}

#[tokio::test]
async fn connection_closed_by_the_idle_timeout_between_calls_is_replaced() {
    let server = TestServer::start_with(pushwire::Config {
        push_idle_timeout: Some(Duration::from_millis(300)),
        ..pushwire::Config::default()
    })
    .await;
    let mut t1 = tab(&server, "uid1").await;
    // No resending: the closed socket must be seen before the line is written.
    let mut php =
        Php::with_client(&tcp(server.push_addr), json!({"retry_unanswered": false})).await;
    assert_eq!(
        php.call("push", json!([{"uid": "uid1", "n": 1}])).await,
        true
    );
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":1}"#);
    let before = php.socket().await;

    // Wait until the server has closed PHP's idle connection: only the poller is left.
    let mut poller = PushClient::connect(server.push_addr).await;
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let stats: Value = serde_json::from_str(&poller.request("/stats").await).unwrap();
        if stats["push_connections"] == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "idle connection not closed: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(poller);

    assert_eq!(
        php.call("push", json!([{"uid": "uid1", "n": 2}])).await,
        true
    );
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":2}"#);
    assert_ne!(php.socket().await, before, "expected a new connection");
    t1.expect_silence(QUIET).await;

    t1.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_line_the_server_closed_on_unanswered_is_resent_once() {
    let server = TestServer::start().await;
    let mut t1 = tab(&server, "uid1").await;
    let relay = Relay::start(server.push_addr).await;
    let mut php = Php::with_client(&tcp(relay.addr), json!({})).await;
    assert_eq!(php.call("ping", json!([])).await, true);

    // The line reaches a connection that closes without running it (the race of a line
    // with an idle close): it is sent again on a new connection and delivered once.
    relay.state.swallow_next.store(true, Ordering::SeqCst);
    assert_eq!(
        php.call("push", json!([{"uid": "uid1", "n": 1}])).await,
        true
    );
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":1}"#);
    assert_eq!(relay.accepted(), 2);
    t1.expect_silence(QUIET).await;

    // With retry_unanswered off, the caller hears about it instead, and nothing arrives.
    php.new_client(&tcp(relay.addr), json!({"retry_unanswered": false}))
        .await;
    relay.state.swallow_next.store(true, Ordering::SeqCst);
    let a = php.throws("push", json!([{"uid": "uid1", "n": 2}])).await;
    assert_exception(&a, "Pushwire\\ConnectionException", "without answering");
    assert_eq!(a["sent"], true);
    t1.expect_silence(QUIET).await;
    // The next call opens a new connection and works.
    assert_eq!(
        php.call("push", json!([{"uid": "uid1", "n": 3}])).await,
        true
    );
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":3}"#);
    assert_eq!(relay.accepted(), 3);

    t1.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_late_reply_never_answers_the_next_call() {
    let server = TestServer::start().await;
    let mut t1 = tab(&server, "uid1").await;
    let relay = Relay::start(server.push_addr).await;
    let mut php = Php::start().await;

    // A reply that comes after the read timeout: TimeoutException; the line was run
    // (that is what a timeout cannot rule out), and its late reply is thrown away with
    // the socket.
    relay.state.delay_ms.store(600, Ordering::SeqCst);
    php.new_client(&tcp(relay.addr), json!({"read_timeout": 0.2}))
        .await;
    let a = php
        .throws("pushDetailed", json!([1, {"uid": "uid1", "n": 1}]))
        .await;
    assert_exception(&a, "Pushwire\\TimeoutException", "no reply");
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":1}"#);
    relay.state.delay_ms.store(0, Ordering::SeqCst);
    php.new_client(&tcp(relay.addr), json!({})).await;
    let r = php
        .call("pushDetailed", json!([2, {"uid": "uid1", "n": 2}]))
        .await;
    assert_eq!(r["id"], "2");
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":2}"#);
    assert_eq!(relay.accepted(), 2);

    // A request that died after writing its line, its reply still on the way (held back
    // by the relay, so it arrives after the next call has checked the socket): the next
    // call does not take that reply for its own.
    relay.state.delay_ms.store(300, Ordering::SeqCst);
    php.new_client(&tcp(relay.addr), json!({})).await;
    assert_eq!(php.call("ping", json!([])).await, true); // the pooled socket
    php.call("close", json!([])).await; // out of the pool: the next one is slow
    assert_eq!(php.call("ping", json!([])).await, true);
    relay.state.delay_ms.store(0, Ordering::SeqCst);
    let before = php
        .op(json!({"op": "abandon", "line": r#"/push 3 {"uid":"uid1","n":3}"#}))
        .await["value"]
        .clone();
    php.new_client(&tcp(relay.addr), json!({})).await;
    let r = php
        .call("pushDetailed", json!([4, {"uid": "uid1", "n": 4}]))
        .await;
    assert_eq!(r["id"], "4");
    assert_ne!(php.socket().await, before);
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":3}"#);
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":4}"#);
    assert_eq!(relay.accepted(), 4);

    // Someone else's unread reply on the pooled socket: the socket is not reused either.
    let pooled = php.socket().await;
    let foreign = php
        .op(json!({"op": "foreign_write", "address": tcp(relay.addr), "line": "/count"}))
        .await["value"]
        .clone();
    assert_eq!(foreign, pooled, "expected the pooled socket");
    php.new_client(&tcp(relay.addr), json!({})).await;
    let r = php
        .call("pushDetailed", json!([5, {"uid": "uid1", "n": 5}]))
        .await;
    assert_eq!(r["id"], "5");
    assert_eq!(t1.recv_text().await, r#"{"uid":"uid1","n":5}"#);
    assert_eq!(relay.accepted(), 5);
    t1.expect_silence(QUIET).await;

    t1.close().await;
    server.shutdown().await.unwrap();
}
