//! The bridge itself: a browser binds a uid, a backend pushes to it, over real sockets.
mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_then_push_is_delivered_byte_exact_and_ok() {
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("alice", server.push_addr).await;

    let mut push = PushClient::connect(server.push_addr).await;
    let line = r#"{"uid":"alice","percent":"88%","nested":{"uid":"bob"}}"#;
    assert_eq!(push.request(line).await, "ok\n");
    assert_eq!(tab.recv_text().await, line);

    // Whitespace around the object is valid JSON and is forwarded as received.
    let spaced = "  {\"uid\" : \"alice\" , \"n\" : 2 }\t";
    assert_eq!(push.request(spaced).await, "ok\n");
    assert_eq!(tab.recv_text().await, spaced);

    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_unknown_uid_fails() {
    let server = TestServer::start().await;
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"nobody"}"#).await, "fail\n");

    // A bound uid does not make near-misses deliverable.
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("alice", server.push_addr).await;
    for near in ["alic", "alice ", " alice", "Alice", "alice\u{0}"] {
        let line = format!("{{\"uid\":{}}}", serde_json::to_string(near).unwrap());
        assert_eq!(push.request(&line).await, "fail\n", "uid {near:?}");
    }
    tab.expect_silence(Duration::from_millis(100)).await;
    assert_eq!(push.request(r#"{"uid":"alice"}"#).await, "ok\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":"alice"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_top_level_uid_routes() {
    let server = TestServer::start().await;
    let mut decoy = WsClient::connect(&server.ws_url()).await;
    decoy.bind("decoy", server.push_addr).await;
    let mut real = WsClient::connect(&server.ws_url()).await;
    real.bind("real", server.push_addr).await;

    let mut push = PushClient::connect(server.push_addr).await;
    let line = r#"{"a":{"uid":"decoy"},"b":["decoy"],"uid":"real"}"#;
    assert_eq!(push.request(line).await, "ok\n");
    assert_eq!(real.recv_text().await, line);
    decoy.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tab_of_a_uid_receives_and_closing_one_keeps_the_other() {
    let server = TestServer::start().await;
    let mut tab1 = WsClient::connect(&server.ws_url()).await;
    tab1.bind("multi", server.push_addr).await;
    let mut tab2 = WsClient::connect(&server.ws_url()).await;
    tab2.bind("multi", server.push_addr).await;
    let mut tab3 = WsClient::connect(&server.ws_url()).await;
    tab3.bind("multi", server.push_addr).await;

    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"multi","n":1}"#).await, "ok\n");
    for tab in [&mut tab1, &mut tab2, &mut tab3] {
        assert_eq!(tab.recv_text().await, r#"{"uid":"multi","n":1}"#);
    }

    // A clean close of one tab: the others still get every push.
    tab1.close().await;
    for n in 2..5 {
        let line = format!(r#"{{"uid":"multi","n":{n}}}"#);
        assert_eq!(push.request(&line).await, "ok\n");
        assert_eq!(tab2.recv_text().await, line);
        assert_eq!(tab3.recv_text().await, line);
    }

    // An abrupt drop (no Close frame) of another: the last one still gets them.
    drop(tab2);
    for n in 5..8 {
        let line = format!(r#"{{"uid":"multi","n":{n}}}"#);
        assert_eq!(push.request(&line).await, "ok\n");
        assert_eq!(tab3.recv_text().await, line);
    }

    // The last tab gone: the uid is offline.
    tab3.close().await;
    push_until(
        &mut push,
        r#"{"uid":"multi"}"#,
        "fail\n",
        Duration::from_secs(5),
    )
    .await;
    // ...and stays offline.
    assert_eq!(push.request(r#"{"uid":"multi"}"#).await, "fail\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_is_unbound() {
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("gone", server.push_addr).await;
    drop(tab);
    let mut push = PushClient::connect(server.push_addr).await;
    push_until(
        &mut push,
        r#"{"uid":"gone"}"#,
        "fail\n",
        Duration::from_secs(5),
    )
    .await;

    // The uid can be bound again afterwards.
    let mut again = WsClient::connect(&server.ws_url()).await;
    again.bind("gone", server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"gone","n":2}"#).await, "ok\n");
    assert_eq!(again.recv_text().await, r#"{"uid":"gone","n":2}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_uid_reaches_its_decimal_string() {
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("123", server.push_addr).await;
    let mut zero = WsClient::connect(&server.ws_url()).await;
    zero.bind("0123", server.push_addr).await;
    let mut neg = WsClient::connect(&server.ws_url()).await;
    neg.bind("-7", server.push_addr).await;
    let mut big = WsClient::connect(&server.ws_url()).await;
    big.bind("18446744073709551615", server.push_addr).await;

    let mut push = PushClient::connect(server.push_addr).await;
    for line in [
        r#"{"uid":123}"#,
        r#"{"uid":123,"m":"x"}"#,
        r#"{"uid":"123"}"#,
    ] {
        assert_eq!(push.request(line).await, "ok\n", "{line}");
        assert_eq!(tab.recv_text().await, line);
    }
    assert_eq!(push.request(r#"{"uid":-7}"#).await, "ok\n");
    assert_eq!(neg.recv_text().await, r#"{"uid":-7}"#);
    assert_eq!(
        push.request(r#"{"uid":18446744073709551615}"#).await,
        "ok\n"
    );
    assert_eq!(big.recv_text().await, r#"{"uid":18446744073709551615}"#);

    // Only integers: a leading zero is not JSON, floats and exponents are not integers.
    for line in [
        r#"{"uid":0123}"#,
        r#"{"uid":123.0}"#,
        r#"{"uid":1.23e2}"#,
        r#"{"uid":1e2}"#,
    ] {
        assert_eq!(push.request(line).await, "fail\n", "{line}");
    }
    // The string "0123" is its own uid, distinct from 123.
    assert_eq!(push.request(r#"{"uid":"0123"}"#).await, "ok\n");
    assert_eq!(zero.recv_text().await, r#"{"uid":"0123"}"#);
    tab.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_and_escaped_uids_are_matched_after_json_decoding() {
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("üser✓", server.push_addr).await;
    let mut quoted = WsClient::connect(&server.ws_url()).await;
    quoted.bind("a\"b\\c/d", server.push_addr).await;

    let mut push = PushClient::connect(server.push_addr).await;
    let line = "{\"uid\":\"üser✓\",\"m\":\"héllo 世界 🎉 \\u00e9\"}";
    assert_eq!(push.request(line).await, "ok\n");
    assert_eq!(tab.recv_text().await, line);

    // The same uid written with JSON escapes; the frame keeps the escapes as sent.
    let escaped = r#"{"uid":"\u00fcser\u2713"}"#;
    assert_eq!(push.request(escaped).await, "ok\n");
    assert_eq!(tab.recv_text().await, escaped);

    let line = r#"{"uid":"a\"b\\c\/d"}"#;
    assert_eq!(push.request(line).await, "ok\n");
    assert_eq!(quoted.recv_text().await, line);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payload_is_byte_exact() {
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("big", server.push_addr).await;

    // 512 KiB of mixed 1-4 byte characters.
    let unit = "aé世🎉";
    let mut body = String::new();
    while body.len() < 512 * 1024 {
        body.push_str(unit);
    }
    let line = format!(r#"{{"uid":"big","data":"{body}"}}"#);
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request(&line).await, "ok\n");
    let got = tab.recv_text().await;
    assert_eq!(got.len(), line.len());
    assert!(got == line, "512 KiB payload differs");

    // The connection and the tab still work for small messages afterwards.
    assert_eq!(push.request(r#"{"uid":"big","n":2}"#).await, "ok\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":"big","n":2}"#);
}

/// A reader that falls behind makes the server's writes partial (the socket takes part of
/// a frame); every message must still arrive whole, in order, byte-exact, whichever write
/// path carried it: small batches copied into one buffer, large ones written vectored, by
/// a per-uid push or a `/broadcast`. Frame sizes straddle the 126 and 65536 header edges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_gets_every_message_whole_across_partial_writes() {
    let server = TestServer::start_with(pushwire::Config {
        queue_depth: 100_000,
        queue_bytes: 64 << 20,
        ..pushwire::Config::default()
    })
    .await;
    let mut push = PushClient::connect(server.push_addr).await;
    let mut slow = RawWsClient::connect(server.ws_addr, "/").await;
    slow.send_text("slow").await;
    let probe = r#"{"uid":"slow"}"#;
    push_until(&mut push, probe, "ok\n", Duration::from_secs(5)).await;

    // ~10 MiB, unread until the end: far more than the socket buffers of a reader that
    // has not read yet hold, so the server's writes end mid-frame again and again.
    let sizes = [20, 125, 126, 127, 700, 2000, 2100, 9000];
    let mut sent = Vec::new();
    for i in 0..160 {
        let size = match i {
            50 => 65535,
            100 => 65536,
            _ if i % 5 == 2 => 300_000,
            _ => sizes[i % sizes.len()],
        };
        let head = format!(r#"{{"uid":"slow","i":{i},"p":""#);
        let body = format!(
            "{head}{}\"}}",
            "x".repeat(size.max(head.len() + 2) - head.len() - 2)
        );
        let reply = if i % 3 == 0 {
            push.request(&format!("/broadcast {body}")).await
        } else {
            push.request(&body).await
        };
        assert!(
            reply.starts_with("ok") || reply.contains("\"connections\":1"),
            "{reply}"
        );
        sent.push(body);
    }

    let started = std::time::Instant::now();
    let mut got = Vec::new();
    while got.len() < sent.len() {
        match slow.read_frame(Duration::from_secs(10)).await {
            Some((0x1, p)) => {
                let text = String::from_utf8(p).expect("frame is UTF-8");
                if text != probe {
                    got.push(text);
                }
            }
            Some((op, _)) => panic!("unexpected opcode {op:#x}"),
            None => panic!("connection ended after {} messages", got.len()),
        }
    }
    eprintln!("read back in {:?}", started.elapsed());
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert!(
            g == s,
            "message {i} altered ({} bytes, sent {})",
            g.len(),
            s.len()
        );
    }
    server.shutdown().await.unwrap();
}
