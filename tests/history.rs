//! Protocol v1 over real sockets against the in-process server (`docs/protocol.md`):
//! envelopes and status frames, resume (covered, not covered), the ledger under cuts,
//! history bounds and expiry, and that seed clients stay byte-exact beside it.
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::v1::{V1Client, V1Event};
use common::*;
use tokio::time::{Instant, sleep};

fn config() -> pushwire::Config {
    pushwire::Config::default()
}

/// Waits until `/stats` shows `needle`.
async fn stats_until(server: &TestServer, needle: &str) {
    poll_until(STEP, needle, || async {
        let stats = PushClient::connect(server.push_addr)
            .await
            .request("/stats")
            .await;
        stats.contains(needle)
    })
    .await;
}

fn line(uid: &str, n: u64) -> String {
    format!(r#"{{"uid":"{uid}","n":{n}}}"#)
}

#[tokio::test]
async fn opted_in_tabs_get_envelopes_and_seed_tabs_the_bare_line() {
    let server = TestServer::start_with(config()).await;
    let mut seed = WsClient::connect(&server.ws_url()).await;
    seed.bind("u", server.push_addr).await;
    let mut v1 = V1Client::connect(server.ws_addr, "u", None).await;
    assert_eq!(v1.status.kind, "new");
    assert_eq!(v1.status.seq, 0);
    let mut push = PushClient::connect(server.push_addr).await;

    assert_eq!(push.request(&line("u", 1)).await, "ok\n");
    assert_eq!(seed.recv_text().await, line("u", 1));
    v1.expect_msg(1, &line("u", 1)).await;
    // /send and /group are numbered too; /broadcast is not.
    let v = push.request(r#"/send ["u"] {"s":1}"#).await;
    assert!(v.contains(r#""connections":2"#), "{v}");
    v1.expect_msg(2, r#"{"s":1}"#).await;
    assert_eq!(seed.recv_text().await, r#"{"s":1}"#);
    push.request("/join g u").await;
    push.request(r#"/group g {"g":1}"#).await;
    v1.expect_msg(3, r#"{"g":1}"#).await;
    assert_eq!(seed.recv_text().await, r#"{"g":1}"#);
    push.request(r#"/broadcast {"b":1}"#).await;
    assert_eq!(v1.next().await, V1Event::Broadcast(r#"{"b":1}"#.into()));
    assert_eq!(seed.recv_text().await, r#"{"b":1}"#);
    // Acks and unknown frames from a v1 tab are not an error; from a seed tab, ignored.
    v1.ack(3).await;
    v1.tab.send_text("hello").await;
    seed.send_text("a 1").await;
    assert_eq!(push.request(&line("u", 4)).await, "ok\n");
    v1.expect_msg(4, &line("u", 4)).await;
    assert_eq!(seed.recv_text().await, line("u", 4));
    seed.expect_silence(Duration::from_millis(100)).await;
    // A page's own query parameters (even `v=1`, `since=`) do not opt it in.
    let mut own = WsClient::connect(&server.ws_url_path("/app?v=1&since=yesterday")).await;
    own.bind("own", server.push_addr).await;
    assert_eq!(push.request(&line("own", 1)).await, "ok\n");
    assert_eq!(own.recv_text().await, line("own", 1));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_resume_replays_what_was_missed_then_goes_live() {
    let server = TestServer::start_with(config()).await;
    let mut push = PushClient::connect(server.push_addr).await;
    let mut tab = V1Client::connect(server.ws_addr, "r", None).await;
    for n in 1..=3 {
        assert_eq!(push.request(&line("r", n)).await, "ok\n");
        tab.expect_msg(n, &line("r", n)).await;
    }
    let epoch = tab.status.epoch.clone();
    tab.tab.close().await;
    poll_until(STEP, "r offline", || async {
        PushClient::connect(server.push_addr)
            .await
            .request("/online r")
            .await
            .contains("false")
    })
    .await;
    // Nobody is connected: the seed's `fail`, but kept for a resume.
    for n in 4..=5 {
        assert_eq!(push.request(&line("r", n)).await, "fail\n");
    }
    let since = format!("{epoch}:3");
    let mut tab = V1Client::connect(server.ws_addr, "r", Some(&since)).await;
    assert_eq!(tab.status.kind, "recovered");
    assert_eq!(tab.status.point(), since);
    tab.expect_msg(4, &line("r", 4)).await;
    tab.expect_msg(5, &line("r", 5)).await;
    assert_eq!(push.request(&line("r", 6)).await, "ok\n");
    tab.expect_msg(6, &line("r", 6)).await;
    // A second tab resuming from the same point gets the same replay, and only that.
    let mut other = V1Client::connect(server.ws_addr, "r", Some(&since)).await;
    for n in 4..=6 {
        other.expect_msg(n, &line("r", n)).await;
    }
    tab.tab.expect_silence(Duration::from_millis(100)).await;
    other.tab.expect_silence(Duration::from_millis(100)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_resume_history_does_not_cover_says_not_recovered() {
    let server = TestServer::start_with(pushwire::Config {
        history_messages: 5,
        ..config()
    })
    .await;
    let mut push = PushClient::connect(server.push_addr).await;
    let tab = V1Client::connect(server.ws_addr, "t", None).await;
    let epoch = tab.status.epoch.clone();
    for n in 1..=10 {
        push.request(&line("t", n)).await;
    }
    // Kept: 6..=10. From 5 is covered; from 4 is not (6 of the 10 would be missing).
    let mut ok = V1Client::connect(server.ws_addr, "t", Some(&format!("{epoch}:5"))).await;
    assert_eq!(ok.status.kind, "recovered");
    for n in 6..=10 {
        ok.expect_msg(n, &line("t", n)).await;
    }
    for (i, since) in [
        format!("{epoch}:4"),
        format!("{epoch}:1000"),
        "0123456789abcdef:3".to_owned(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut tab = V1Client::connect(server.ws_addr, "t", Some(&since)).await;
        assert_eq!(tab.status.kind, "not_recovered", "{since}");
        let head = 10 + i as u64;
        assert_eq!(tab.status.point(), format!("{epoch}:{head}"), "{since}");
        // Nothing replayed: the next frame is the next live message.
        push.request(&line("t", 99)).await;
        let V1Event::Msg(_, got) = tab.next().await else {
            panic!("expected a message")
        };
        assert_eq!(got, line("t", 99));
    }
    // Malformed parameters of an opted-in client get a close with the reason.
    for (query, reason) in [
        ("?pushwire=1&since=nope", "bad since (want EPOCH:SEQ)"),
        ("?pushwire=7", "unsupported protocol version"),
    ] {
        let mut tab = WsClient::connect(&server.ws_url_path(&format!("/{query}"))).await;
        tab.send_text("t").await;
        assert_eq!(
            tab.expect_close().await,
            (1008, reason.to_owned()),
            "{query}"
        );
    }
    // Without `pushwire` the parameters are the page's own: the seed protocol, byte for
    // byte.
    for query in ["?since=0123456789abcdef:1", "?v=7", "?v=1&since=x"] {
        let mut tab = WsClient::connect(&server.ws_url_path(&format!("/{query}"))).await;
        tab.bind("t", server.push_addr).await;
        assert_eq!(push.request(&line("t", 100)).await, "ok\n", "{query}");
        assert_eq!(tab.recv_text().await, line("t", 100), "{query}");
        tab.close().await;
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_expired_history_gets_a_new_epoch() {
    let server = TestServer::start_with(pushwire::Config {
        history_keep: Duration::from_millis(100),
        ..config()
    })
    .await;
    let mut push = PushClient::connect(server.push_addr).await;
    let mut tab = V1Client::connect(server.ws_addr, "e", None).await;
    push.request(&line("e", 1)).await;
    tab.expect_msg(1, &line("e", 1)).await;
    let point = format!("{}:1", tab.status.epoch);
    tab.tab.close().await;
    // Past the keep time the history goes (and a push to the uid keeps nothing).
    stats_until(&server, r#""history_uids":0"#).await;
    assert_eq!(push.request(&line("e", 2)).await, "fail\n");
    let tab = V1Client::connect(server.ws_addr, "e", Some(&point)).await;
    assert_eq!(tab.status.kind, "not_recovered");
    assert_ne!(tab.status.epoch, point[..16], "a new history, a new epoch");
    assert_eq!(tab.status.seq, 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn history_off_numbers_nothing() {
    let server = TestServer::start_with(pushwire::Config {
        history_messages: 0,
        ..config()
    })
    .await;
    let mut push = PushClient::connect(server.push_addr).await;
    let mut tab = V1Client::connect(server.ws_addr, "o", None).await;
    assert_eq!(tab.status.point(), "0000000000000000:0");
    assert_eq!(push.request(&line("o", 1)).await, "ok\n");
    assert_eq!(tab.next().await, V1Event::Broadcast(line("o", 1)));
    let again = V1Client::connect(server.ws_addr, "o", Some("0000000000000000:0")).await;
    assert_eq!(again.status.kind, "not_recovered");
    // Nothing can be queued without a history.
    let v = push.request(r#"/push q ttl=1000 {"uid":"away"}"#).await;
    assert!(v.contains(r#""result":"offline""#), "{v}");
    server.shutdown().await.unwrap();
}

/// How a ledger client is cut off.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// The socket is reset (SO_LINGER 0): no close frame, no FIN.
    Drop,
    /// A clean closing handshake from the client.
    Close,
    /// `/kick` from a backend: close 4001 from the server.
    Kick,
}

/// The issue's proof: a v1 client cut off 21 times (reset, clean close, kick, in turn)
/// during a stream of 10,000 pushes to its uid receives every one exactly once, in
/// order: each resume is `recovered` at exactly the last message it processed, and the
/// sequence numbers and the payloads' counters both advance by one, every time.
#[tokio::test]
async fn ledger_every_push_exactly_once_in_order_across_21_cuts() {
    const TOTAL: u64 = 10_000;
    const CUT_EVERY: u64 = 476; // 21 cuts
    let server = TestServer::start_with(pushwire::Config {
        history_messages: 1024,
        ..config()
    })
    .await;
    let mut tab = V1Client::connect(server.ws_addr, "L", None).await;
    assert_eq!(tab.status.kind, "new");
    let epoch = tab.status.epoch.clone();
    let received = Arc::new(AtomicU64::new(0));

    // The backend: pipelined batches of 50, never more than 600 ahead of the client
    // (history keeps 1024), so every resume is covered and the test is about exactness.
    let pusher = {
        let received = received.clone();
        let addr = server.push_addr;
        tokio::spawn(async move {
            let mut push = PushClient::connect(addr).await;
            let (mut ok, mut fail) = (0u64, 0u64);
            let mut n = 1;
            while n <= TOTAL {
                while n > received.load(Ordering::Relaxed) + 600 {
                    sleep(Duration::from_millis(1)).await;
                }
                let end = (n + 50).min(TOTAL + 1);
                let batch: String = (n..end).map(|i| line("L", i) + "\n").collect();
                push.send_raw(batch.as_bytes()).await;
                for _ in n..end {
                    match push.read_reply().await.as_str() {
                        "ok\n" => ok += 1,
                        "fail\n" => fail += 1,
                        other => panic!("reply {other:?}"),
                    }
                }
                n = end;
            }
            (ok, fail)
        })
    };

    let mut kicker = PushClient::connect(server.push_addr).await;
    let mut last = 0u64;
    let mut cuts = 0;
    let mut cut_at = CUT_EVERY;
    let deadline = Instant::now() + Duration::from_secs(60);
    while last < TOTAL {
        assert!(Instant::now() < deadline, "stuck at {last}");
        if last >= cut_at {
            cut_at += CUT_EVERY;
            let how = [Cut::Drop, Cut::Close, Cut::Kick][cuts % 3];
            cuts += 1;
            match how {
                Cut::Drop => {
                    if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = tab.tab.ws.get_ref() {
                        tcp.set_zero_linger().unwrap();
                    }
                    drop(tab);
                }
                Cut::Close => tab.tab.close().await,
                Cut::Kick => {
                    let v = kicker.request("/kick L").await;
                    assert!(v.contains(r#""ok":true"#), "{v}");
                    // Read up to the close: what came before it is processed.
                    loop {
                        match tab.next().await {
                            V1Event::Msg(seq, payload) => {
                                assert_eq!(seq, last + 1);
                                assert_eq!(payload, line("L", seq));
                                last = seq;
                                received.store(last, Ordering::Relaxed);
                            }
                            V1Event::Close(code, _) => {
                                assert_eq!(code, 4001);
                                break;
                            }
                            other => panic!("{other:?}"),
                        }
                    }
                    drop(tab);
                }
            }
            let since = format!("{epoch}:{last}");
            tab = V1Client::connect(server.ws_addr, "L", Some(&since)).await;
            assert_eq!(
                tab.status.kind, "recovered",
                "cut {cuts} ({how:?}) at {last}"
            );
            assert_eq!(tab.status.point(), since);
            continue;
        }
        match tab.next().await {
            V1Event::Msg(seq, payload) => {
                assert_eq!(seq, last + 1, "a gap or a duplicate");
                assert_eq!(payload, line("L", seq), "a different message");
                last = seq;
                received.store(last, Ordering::Relaxed);
            }
            other => panic!("unexpected {other:?} at {last}"),
        }
    }
    let (ok, fail) = pusher.await.unwrap();
    assert_eq!(ok + fail, TOTAL);
    assert!(cuts >= 20, "{cuts} cuts");
    assert!(
        ok > TOTAL / 2,
        "most pushes reached a live tab ({ok} ok, {fail} fail)"
    );
    tab.tab.expect_silence(Duration::from_millis(200)).await;
    server.shutdown().await.unwrap();
}

/// One reply line as JSON.
async fn cmd(push: &mut PushClient, line: &str) -> serde_json::Value {
    let reply = push.request(line).await;
    serde_json::from_str(reply.trim_end()).unwrap_or_else(|e| panic!("{reply:?}: {e}"))
}

#[tokio::test]
async fn offline_queue_delivers_on_the_next_bind_in_order_once() {
    let server = TestServer::start_with(config()).await;
    let mut push = PushClient::connect(server.push_addr).await;
    // Plain lines keep the seed's answer; /push with ttl= says queued.
    assert_eq!(push.request(&line("away", 0)).await, "fail\n");
    for n in 1..=3 {
        let v = cmd(
            &mut push,
            &format!("/push q{n} ttl=60000 {}", line("away", n)),
        )
        .await;
        assert_eq!(v["result"], "queued", "{v}");
        assert_eq!(v["ok"], true);
        assert_eq!(v["seq"], n);
        assert_eq!(v["connections"], 0);
    }
    // A seed tab takes the queue as the plain lines, in order, then live ones.
    let mut seed = WsClient::connect(&server.ws_url()).await;
    seed.send_text("away").await;
    for n in 1..=3 {
        assert_eq!(seed.recv_text().await, line("away", n));
    }
    // Delivered once: the next bind gets nothing queued.
    let mut v1 = V1Client::connect(server.ws_addr, "away", None).await;
    assert_eq!(v1.status.kind, "new");
    assert_eq!(v1.status.seq, 3);
    let v = cmd(
        &mut push,
        &format!("/push live ttl=60000 {}", line("away", 4)),
    )
    .await;
    assert_eq!(v["result"], "delivered", "{v}");
    v1.expect_msg(4, &line("away", 4)).await;
    assert_eq!(seed.recv_text().await, line("away", 4));
    seed.expect_silence(Duration::from_millis(100)).await;

    // A v1 tab takes the queue enveloped, its base just before the first queued one.
    for n in [1, 2] {
        cmd(&mut push, &format!("/push w{n} ttl=60000 {}", line("v", n))).await;
    }
    let mut tab = V1Client::connect(server.ws_addr, "v", None).await;
    assert_eq!((tab.status.kind.as_str(), tab.status.seq), ("new", 0));
    tab.expect_msg(1, &line("v", 1)).await;
    tab.expect_msg(2, &line("v", 2)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_offline_queue_entry_expires_at_its_ttl() {
    let server = TestServer::start_with(pushwire::Config {
        max_queue_ttl: Duration::from_millis(150),
        history_keep: Duration::from_millis(50),
        ..config()
    })
    .await;
    let mut push = PushClient::connect(server.push_addr).await;
    // Asked for a minute, cut to the 150 ms maximum.
    let v = cmd(&mut push, &format!("/push x ttl=60000 {}", line("gone", 1))).await;
    assert_eq!(v["result"], "queued");
    let v = cmd(
        &mut push,
        &format!("/push y ttl=100000 {}", line("kept", 1)),
    )
    .await;
    assert_eq!(v["result"], "queued");
    let mut early = WsClient::connect(&server.ws_url()).await;
    early.send_text("kept").await;
    assert_eq!(early.recv_text().await, line("kept", 1));
    sleep(Duration::from_millis(300)).await;
    let mut late = WsClient::connect(&server.ws_url()).await;
    late.bind("gone", server.push_addr).await;
    late.expect_silence(Duration::from_millis(150)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_retried_push_is_not_delivered_twice() {
    let server = TestServer::start_with(config()).await;
    let mut tab = V1Client::connect(server.ws_addr, "d", None).await;
    let mut a = PushClient::connect(server.push_addr).await;
    let mut b = PushClient::connect(server.push_addr).await;
    let first = cmd(&mut a, &format!("/push r1 {}", line("d", 1))).await;
    assert_eq!(
        first,
        serde_json::json!({"ok":true,"result":"delivered","connections":1,"refused":0,"id":"r1"})
    );
    tab.expect_msg(1, &line("d", 1)).await;
    // The retry, on another connection (the first timed out): duplicate, first outcome.
    // Without options it has no place in history either, as the first had none: one
    // reply shape (it used to add the first's seq and epoch).
    let again = cmd(&mut b, &format!("/push r1 {}", line("d", 1))).await;
    assert_eq!(
        again,
        serde_json::json!({"ok":true,"result":"duplicate","first":"delivered","id":"r1"})
    );
    // With options, the first reply had its place, and so has the retry's.
    let tracked = cmd(&mut a, &format!("/push r2 ttl=1000 {}", line("d", 3))).await;
    assert_eq!(
        (tracked["seq"].as_u64(), tracked["result"].as_str()),
        (Some(2), Some("delivered"))
    );
    let again = cmd(&mut b, &format!("/push r2 ttl=1000 {}", line("d", 3))).await;
    assert_eq!(
        again,
        serde_json::json!({"ok":true,"result":"duplicate","first":"delivered","seq":2,
            "epoch":tab.status.epoch,"id":"r2"})
    );
    tab.expect_msg(2, &line("d", 3)).await;
    // The same ID with another line is a new push (backends reuse IDs).
    let other = cmd(&mut b, &format!("/push r1 {}", line("d", 2))).await;
    assert_eq!(other["result"], "delivered");
    tab.expect_msg(3, &line("d", 2)).await;
    // A push that reached nobody is not remembered: its retry runs.
    for _ in 0..2 {
        let v = cmd(&mut a, &format!("/push n1 {}", line("nobody", 1))).await;
        assert_eq!(v["result"], "offline");
    }
    // A queued one is remembered as queued.
    cmd(&mut a, &format!("/push q1 ttl=1000 {}", line("later", 1))).await;
    let v = cmd(&mut a, &format!("/push q1 ttl=1000 {}", line("later", 1))).await;
    assert_eq!(
        (v["result"].as_str(), v["first"].as_str()),
        (Some("duplicate"), Some("queued"))
    );
    tab.tab.expect_silence(Duration::from_millis(100)).await;
    let stats = a.request("/stats").await;
    assert!(stats.contains(r#""duplicates":3"#), "{stats}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_dedupe_window_ends() {
    let server = TestServer::start_with(pushwire::Config {
        dedupe_window: Some(Duration::from_millis(100)),
        ..config()
    })
    .await;
    let mut tab = V1Client::connect(server.ws_addr, "w", None).await;
    let mut push = PushClient::connect(server.push_addr).await;
    let l = format!("/push 9 {}", line("w", 1));
    assert_eq!(cmd(&mut push, &l).await["result"], "delivered");
    assert_eq!(cmd(&mut push, &l).await["result"], "duplicate");
    sleep(Duration::from_millis(150)).await;
    assert_eq!(cmd(&mut push, &l).await["result"], "delivered");
    tab.expect_msg(1, &line("w", 1)).await;
    tab.expect_msg(2, &line("w", 1)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn acks_acked_not_acked_and_a_tab_that_never_acks() {
    let server = TestServer::start_with(config()).await;
    let mut push = PushClient::connect(server.push_addr).await;
    // The seed tab first: its bind probes come before the uid has a history.
    let mut seed = WsClient::connect(&server.ws_url()).await;
    seed.bind("k", server.push_addr).await;
    let mut acking = V1Client::connect(server.ws_addr, "k", None).await;
    let mut silent = V1Client::connect(server.ws_addr, "k", None).await;
    let epoch = acking.status.epoch.clone();

    // Acked: the reply waits for the ack frame, and only for that.
    push.send_raw(format!("/push a1 ack=5000 {}\n", line("k", 1)).as_bytes())
        .await;
    let (seq, payload) = match acking.next().await {
        V1Event::Msg(seq, p) => (seq, p),
        other => panic!("{other:?}"),
    };
    assert_eq!(payload, line("k", 1));
    silent.expect_msg(seq, &payload).await;
    let started = Instant::now();
    acking.ack(seq).await;
    let v: serde_json::Value = serde_json::from_str(push.read_reply().await.trim_end()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        v,
        serde_json::json!({"ok":true,"result":"acked","connections":3,"refused":0,
            "acks":1,"seq":seq,"epoch":epoch,"id":"a1"})
    );
    // Not acked: nobody acks within the wait; the lines behind it are not held up
    // (delivered at once), only their replies wait behind its reply.
    push.send_raw(format!("/push a2 ack=1500 {}\n{}\n", line("k", 2), line("k", 3)).as_bytes())
        .await;
    let sent = Instant::now();
    acking.expect_msg(seq + 1, &line("k", 2)).await;
    acking.expect_msg(seq + 2, &line("k", 3)).await;
    assert!(sent.elapsed() < Duration::from_millis(1000), "held up");
    let v: serde_json::Value = serde_json::from_str(push.read_reply().await.trim_end()).unwrap();
    assert!(sent.elapsed() >= Duration::from_millis(1500));
    assert_eq!(v["result"], "not_acked", "{v}");
    assert_eq!(
        (v["ok"].as_bool(), v["acks"].as_u64()),
        (Some(false), Some(0))
    );
    assert_eq!(push.read_reply().await, "ok\n");
    // A cumulative ack covers earlier messages, and a second tab's ack counts.
    acking.ack(seq + 2).await;
    silent.ack(seq + 2).await;
    stats_until(&server, r#""acks":3"#).await;
    // An ack a tab was never sent counts only up to what it was sent (by the time the
    // ack is read: the push below goes out once the ack is counted).
    acking.ack(1_000_000).await;
    stats_until(&server, r#""acks":4"#).await;
    let v = cmd(&mut push, &format!("/push a3 ack=300 {}", line("k", 4))).await;
    assert_eq!(v["result"], "not_acked", "a future ack must not count: {v}");
    // Offline (no history): nothing to wait for.
    let v = cmd(&mut push, &format!("/push a4 ack=5000 {}", line("none", 1))).await;
    assert_eq!(v["result"], "offline");
    // Only seed tabs (no history): they cannot ack; answered at once.
    let mut only_seed = WsClient::connect(&server.ws_url()).await;
    only_seed.bind("s", server.push_addr).await;
    let started = Instant::now();
    let v = cmd(&mut push, &format!("/push a5 ack=5000 {}", line("s", 1))).await;
    assert_eq!(
        (v["result"].as_str(), v["acks"].as_u64()),
        (Some("not_acked"), Some(0))
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    server.shutdown().await.unwrap();
}

/// `/push ack=` to a uid no tab holds, whose history is kept: the message is kept and the
/// reply waits; a tab that resumes within the wait gets it in its replay and may
/// acknowledge it (`acked`, no live connection took it). Cluster mode means the same
/// (`tests/cluster_tracked.rs`, the twin of this case).
#[tokio::test]
async fn an_ack_wait_for_a_uid_with_history_waits_for_a_resuming_tab() {
    let server = TestServer::start_with(config()).await;
    let first = V1Client::connect(server.ws_addr, "back", None).await;
    let since = first.status.point();
    drop(first);
    let mut push = PushClient::connect(server.push_addr).await;
    poll_until(STEP, "back offline", || async {
        let mut p = PushClient::connect(server.push_addr).await;
        p.request("/online back")
            .await
            .contains("\"connections\":0")
    })
    .await;
    let sent = Instant::now();
    push.send_raw(format!("/push w1 ack=8000 {}\n", line("back", 1)).as_bytes())
        .await;
    sleep(Duration::from_millis(300)).await;
    let mut tab = V1Client::connect(server.ws_addr, "back", Some(&since)).await;
    assert_eq!(tab.status.kind, "recovered");
    let seq = tab.status.seq + 1;
    tab.expect_msg(seq, &line("back", 1)).await;
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
    server.shutdown().await.unwrap();
}

/// Pipelined `ack=` waits run side by side, each bounded from when its line ran: five
/// waits of 1.5 s to a tab that never acks are all answered at about 1.5 s (they were
/// answered at 1.5, 3, 4.5, 6 and 7.5 s: each wait's clock started when the door came
/// to its reply).
#[tokio::test]
async fn pipelined_ack_waits_run_side_by_side() {
    let server = TestServer::start_with(config()).await;
    let mut tab = V1Client::connect(server.ws_addr, "pw", None).await;
    let mut push = PushClient::connect(server.push_addr).await;
    let lines: String = (1..=5)
        .map(|n| format!("/push p{n} ack=1500 {}\n", line("pw", n)))
        .collect();
    let sent = Instant::now();
    push.send_raw(lines.as_bytes()).await;
    for n in 1..=5 {
        tab.expect_msg(n, &line("pw", n)).await;
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
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_ack_wait_is_cut_to_the_maximum() {
    let server = TestServer::start_with(pushwire::Config {
        max_ack_wait: Duration::from_millis(200),
        ..config()
    })
    .await;
    let _tab = V1Client::connect(server.ws_addr, "m", None).await;
    let mut push = PushClient::connect(server.push_addr).await;
    let started = Instant::now();
    let v = cmd(&mut push, &format!("/push 1 ack=60000 {}", line("m", 1))).await;
    assert_eq!(v["result"], "not_acked");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_queued_push_can_be_acked_by_the_tab_that_binds_later() {
    let server = TestServer::start_with(config()).await;
    let mut push = PushClient::connect(server.push_addr).await;
    push.send_raw(format!("/push z ttl=60000 ack=5000 {}\n", line("late", 1)).as_bytes())
        .await;
    sleep(Duration::from_millis(50)).await;
    let mut tab = V1Client::connect(server.ws_addr, "late", None).await;
    tab.expect_msg(1, &line("late", 1)).await;
    tab.ack(1).await;
    let v: serde_json::Value = serde_json::from_str(push.read_reply().await.trim_end()).unwrap();
    assert_eq!(v["result"], "acked", "{v}");
    assert_eq!(v["connections"], 0, "queued, not delivered live: {v}");
    server.shutdown().await.unwrap();
}

/// `POST /push` takes the same lines: an ack wait answers over HTTP once a tab acked.
#[tokio::test]
async fn an_ack_over_the_http_door() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_http(config()).await;
    let mut tab = V1Client::connect(server.ws_addr, "h", None).await;
    let body = format!("/push h1 ack=5000 {}\n{}\n", line("h", 1), line("h", 2));
    let addr = server.http_addr.unwrap();
    let request = tokio::spawn(async move {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /push HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(body.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tcp.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    });
    tab.expect_msg(1, &line("h", 1)).await;
    tab.expect_msg(2, &line("h", 2)).await;
    tab.ack(2).await;
    let response = tokio::time::timeout(STEP, request).await.unwrap().unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    let mut lines = body.lines();
    let first: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(
        (first["result"].as_str(), first["acks"].as_u64()),
        (Some("acked"), Some(1))
    );
    assert_eq!(lines.next(), Some("ok"));
    server.shutdown().await.unwrap();
}

/// `GET /pushwire.js` on the browser port is the helper in the repository, byte for
/// byte; an upgrade on that path is still a WebSocket.
#[tokio::test]
async fn the_browser_port_serves_pushwire_js() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with(config()).await;
    let want = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clients/js/pushwire.js"
    ))
    .unwrap();
    for (method, body) in [("GET", &want[..]), ("HEAD", &[][..])] {
        let mut tcp = tokio::net::TcpStream::connect(server.ws_addr)
            .await
            .unwrap();
        let req = format!("{method} /pushwire.js?v=1 HTTP/1.1\r\nHost: x\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(STEP, tcp.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&out[..at]);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Type: text/javascript"), "{head}");
        assert!(
            head.contains(&format!("Content-Length: {}\r\n", want.len())),
            "{head}"
        );
        assert_eq!(&out[at..], body, "{method}");
    }
    let mut tab = WsClient::connect(&server.ws_url_path("/pushwire.js")).await;
    tab.bind("p", server.push_addr).await;
    server.shutdown().await.unwrap();
}

/// Each history bound over real sockets: bytes per uid, age, the total over all uids;
/// and the dedupe table's entry bound.
#[tokio::test]
async fn every_history_bound_holds() {
    let server = TestServer::start_with(pushwire::Config {
        history_bytes: 2 * line("b", 1).len(),
        history_age: Duration::from_millis(300),
        history_total_bytes: 4 * (line("b", 1).len() + pushwire::history::ENTRY_OVERHEAD),
        dedupe_max_entries: 1,
        ..config()
    })
    .await;
    let mut push = PushClient::connect(server.push_addr).await;
    // Bytes per uid: two lines fit, the third pushes the first out.
    let tab = V1Client::connect(server.ws_addr, "b", None).await;
    let epoch = tab.status.epoch.clone();
    for n in 1..=3 {
        push.request(&line("b", n)).await;
    }
    let from = |seq| format!("{epoch}:{seq}");
    let r = V1Client::connect(server.ws_addr, "b", Some(&from(0))).await;
    assert_eq!(r.status.kind, "not_recovered");
    let mut r = V1Client::connect(server.ws_addr, "b", Some(&from(1))).await;
    assert_eq!(r.status.kind, "recovered");
    r.expect_msg(2, &line("b", 2)).await;
    r.expect_msg(3, &line("b", 3)).await;
    // The total: "b" holds 2 of the 4 that fit; "c" keeps 2; "d" has nothing of its own
    // to make room with, so it keeps nothing (counted) and its resume is not covered.
    let c = V1Client::connect(server.ws_addr, "c", None).await;
    for n in 1..=2 {
        push.request(&line("c", n)).await;
    }
    let d = V1Client::connect(server.ws_addr, "d", None).await;
    push.request(&line("d", 1)).await;
    assert!(
        push.request("/stats")
            .await
            .contains(r#""history_refused":1,"#)
    );
    let again =
        V1Client::connect(server.ws_addr, "d", Some(&format!("{}:0", d.status.epoch))).await;
    assert_eq!(again.status.kind, "not_recovered");
    let c2 = V1Client::connect(server.ws_addr, "c", Some(&format!("{}:0", c.status.epoch))).await;
    assert_eq!(c2.status.kind, "recovered");
    // Age: past 300 ms nothing of "c" is kept any more.
    sleep(Duration::from_millis(400)).await;
    let old = V1Client::connect(server.ws_addr, "c", Some(&format!("{}:0", c.status.epoch))).await;
    assert_eq!(old.status.kind, "not_recovered");
    // The dedupe table holds one entry: a newer push makes it forget the older one.
    let (p1, p2) = (
        format!("/push 1 {}", line("b", 10)),
        format!("/push 2 {}", line("b", 11)),
    );
    assert_eq!(cmd(&mut push, &p1).await["result"], "delivered");
    assert_eq!(cmd(&mut push, &p2).await["result"], "delivered");
    assert_eq!(cmd(&mut push, &p2).await["result"], "duplicate");
    assert_eq!(
        cmd(&mut push, &p1).await["result"],
        "delivered",
        "forgotten"
    );
    server.shutdown().await.unwrap();
}

/// An ack that raises nothing is dropped, and `--max-stale-acks` of them in a row close
/// the tab (1008 `ack flood`); an ack that raises resets the count. (Every ack frame
/// took the uid's lock and, in cluster mode, ran a script in Redis, without a bound.)
#[tokio::test]
async fn a_run_of_acks_that_raise_nothing_closes_the_tab() {
    let server = TestServer::start_with(pushwire::Config {
        max_stale_acks: 50,
        ..config()
    })
    .await;
    let mut tab = V1Client::connect(server.ws_addr, "fl", None).await;
    let mut push = PushClient::connect(server.push_addr).await;
    for n in 1..=2 {
        assert_eq!(push.request(&line("fl", n)).await, "ok\n");
        tab.expect_msg(n, &line("fl", n)).await;
    }
    // 50 repeats after each raise: within the limit.
    for seq in 1..=2 {
        for _ in 0..=50 {
            tab.ack(seq).await;
        }
    }
    stats_until(&server, r#""acks":102"#).await;
    assert_eq!(push.request(&line("fl", 3)).await, "ok\n");
    tab.expect_msg(3, &line("fl", 3)).await;
    // One more that raises nothing: the 51st in a row.
    tab.ack(2).await;
    assert_eq!(
        tab.next().await,
        V1Event::Close(1008, "ack flood: acks that acknowledge nothing new".into())
    );
    stats_until(&server, r#""ack_floods":1"#).await;
    server.shutdown().await.unwrap();
}

/// Histories are bounded in number (`--history-max-uids`, set here through its
/// environment variable on the real binary): 200 strangers binding fresh uids and
/// leaving evict each other's empty histories, never one that keeps messages, an
/// offline queue, or an online uid's; with nothing left to evict a v1 bind is closed
/// 1013 and a `ttl=` push is not queued; `/stats` counts all of it. (Each fresh bind
/// left a history for `--history-keep-ms`, counted by nothing: 202 here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_are_bounded_in_number() {
    const MAX: u64 = 20;
    let daemon = Launch::new()
        .env("PUSHWIRE_HISTORY_MAX_UIDS", &MAX.to_string())
        .start()
        .await;
    let ws = daemon.ws_addr;
    let mut push = PushClient::connect(daemon.push_addr).await;
    let stats = async |push: &mut PushClient, key: &str| -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(push.request("/stats").await.trim_end()).unwrap();
        v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
    };
    let offline = async |uid: &str| {
        poll_until(STEP, &format!("{uid} offline"), || async {
            let mut p = PushClient::connect(daemon.push_addr).await;
            p.request(&format!("/online {uid}"))
                .await
                .contains("\"connections\":0")
        })
        .await
    };
    // A history that keeps messages, and an offline queue.
    let mut kept = V1Client::connect(ws, "kept", None).await;
    for n in 1..=2 {
        assert_eq!(push.request(&line("kept", n)).await, "ok\n");
        kept.expect_msg(n, &line("kept", n)).await;
    }
    let point = format!("{}:1", kept.status.epoch);
    drop(kept);
    offline("kept").await;
    let v = cmd(
        &mut push,
        &format!("/push q1 ttl=60000 {}", line("queued", 1)),
    )
    .await;
    assert_eq!(v["result"], "queued", "{v}");

    for i in 0..200 {
        let uid = format!("stranger{i}");
        let tab = V1Client::connect(ws, &uid, None).await;
        assert_eq!(tab.status.kind, "new");
        drop(tab);
        offline(&uid).await;
        assert!(stats(&mut push, "history_uids").await <= MAX);
    }
    assert_eq!(stats(&mut push, "history_uids").await, MAX);
    assert_eq!(stats(&mut push, "history_evicted").await, 202 - MAX);

    // What mattered survived: a covered resume, and the queue.
    let mut kept = V1Client::connect(ws, "kept", Some(&point)).await;
    assert_eq!(kept.status.kind, "recovered");
    kept.expect_msg(2, &line("kept", 2)).await;
    let mut queued = V1Client::connect(ws, "queued", None).await;
    queued.expect_msg(1, &line("queued", 1)).await;

    // Online tabs take the strangers' places, until none is left to evict.
    let mut tabs = Vec::new();
    let refused = loop {
        let uid = format!("online{}", tabs.len());
        match V1Client::try_connect(ws, &uid, None).await {
            Ok(tab) => tabs.push(tab),
            Err(close) => break close,
        }
        assert!(tabs.len() as u64 <= MAX, "no bind refused");
    };
    assert_eq!(
        tabs.len() as u64,
        MAX - 2,
        "kept and queued hold the other two"
    );
    assert_eq!(refused, (1013, "history full: try again later".to_owned()));
    let v = cmd(
        &mut push,
        &format!("/push q2 ttl=60000 {}", line("late", 1)),
    )
    .await;
    assert_eq!(v["result"], "offline", "not queued without a history: {v}");
    assert_eq!(stats(&mut push, "history_full").await, 2);
    assert_eq!(stats(&mut push, "history_uids").await, MAX);
    // One leaves: its place is free again.
    drop(tabs.pop());
    offline(&format!("online{}", tabs.len())).await;
    let again = V1Client::connect(ws, "again", None).await;
    assert_eq!(again.status.kind, "new");
    let metrics = get_metrics(&daemon).await;
    for family in [
        "pushwire_history_evicted_total",
        "pushwire_history_full_total",
    ] {
        assert!(metrics.contains(family), "{family} in /metrics");
    }
}

/// `GET /metrics` on the daemon's HTTP door: the body.
async fn get_metrics(daemon: &Daemon) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = daemon.http_addr.expect("http door");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out
}
