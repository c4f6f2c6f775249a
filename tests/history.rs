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
    // Malformed parameters get a close with the reason.
    for (query, reason) in [
        ("?v=1&since=nope", "bad since (want EPOCH:SEQ)"),
        ("?since=0123456789abcdef:1", "bad since (want EPOCH:SEQ)"),
        ("?v=7", "unsupported protocol version"),
    ] {
        let mut tab = WsClient::connect(&server.ws_url_path(&format!("/{query}"))).await;
        tab.send_text("t").await;
        assert_eq!(
            tab.expect_close().await,
            (1008, reason.to_owned()),
            "{query}"
        );
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
    poll_until(STEP, "history dropped", || async {
        let stats = PushClient::connect(server.push_addr)
            .await
            .request("/stats")
            .await;
        stats.contains(r#""history_uids":0"#)
    })
    .await;
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
