//! The push port: framing, replies, bad input, limits, half-close.
mod common;

use std::time::Duration;

use common::*;

fn small_lines() -> pushwire::Config {
    pushwire::Config {
        max_line_bytes: 1024,
        ..pushwire::Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_is_stripped() {
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("crlf", server.push_addr).await;

    let mut push = PushClient::connect(server.push_addr).await;
    push.send_raw(b"{\"uid\":\"crlf\",\"n\":1}\r\n").await;
    assert_eq!(push.read_reply().await, "ok\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":"crlf","n":1}"#);

    // Mixed terminators on one connection, in one write.
    push.send_raw(
        b"{\"uid\":\"crlf\",\"n\":2}\n{\"uid\":\"crlf\",\"n\":3}\r\n{\"uid\":\"none\"}\r\n",
    )
    .await;
    assert_eq!(push.read_reply().await, "ok\n");
    assert_eq!(push.read_reply().await, "ok\n");
    assert_eq!(push.read_reply().await, "fail\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":"crlf","n":2}"#);
    assert_eq!(tab.recv_text().await, r#"{"uid":"crlf","n":3}"#);

    // Lines split across writes, even between \r and \n.
    push.send_raw(b"{\"uid\":\"cr").await;
    push.send_raw(b"lf\",\"n\":4}\r").await;
    push.send_raw(b"\n").await;
    assert_eq!(push.read_reply().await, "ok\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":"crlf","n":4}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_thousand_lines_answered_in_order() {
    let server = TestServer::start_with(pushwire::Config {
        queue_depth: 4096,
        ..pushwire::Config::default()
    })
    .await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("pipe", server.push_addr).await;

    let mut input = Vec::new();
    let mut expected_replies = String::new();
    let mut expected_frames = Vec::new();
    for i in 0..1000 {
        match i % 5 {
            0 | 3 => {
                let line = format!(r#"{{"uid":"pipe","i":{i}}}"#);
                input.extend_from_slice(line.as_bytes());
                input.extend_from_slice(if i % 5 == 3 { b"\r\n" } else { b"\n" });
                expected_frames.push(line);
                expected_replies.push_str("ok\n");
            }
            1 => {
                input.extend_from_slice(format!(r#"{{"uid":"nobody","i":{i}}}"#).as_bytes());
                input.push(b'\n');
                expected_replies.push_str("fail\n");
            }
            2 => {
                input.extend_from_slice(format!("not json {i}\n").as_bytes());
                expected_replies.push_str("fail\n");
            }
            _ => {
                input.push(b'\n');
                expected_replies.push_str("fail\n");
            }
        }
    }
    let mut push = PushClient::connect(server.push_addr).await;
    push.send_raw(&input).await;
    let mut replies = String::new();
    for _ in 0..1000 {
        replies.push_str(&push.read_reply().await);
    }
    assert!(replies == expected_replies, "replies out of order or wrong");
    for want in &expected_frames {
        assert_eq!(&tab.recv_text().await, want);
    }
    tab.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_push_connections_at_once() {
    const CONNS: usize = 50;
    const PER_CONN: usize = 20;
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("many", server.push_addr).await;

    // Open every connection first, so all are held by the server at the same time.
    let mut clients = Vec::new();
    for _ in 0..CONNS {
        clients.push(PushClient::connect(server.push_addr).await);
    }
    let mut tasks = Vec::new();
    for (c, mut push) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_CONN {
                let line = format!(r#"{{"uid":"many","c":{c},"i":{i}}}"#);
                assert_eq!(push.request(&line).await, "ok\n", "{line}");
                let miss = format!(r#"{{"uid":"none","c":{c},"i":{i}}}"#);
                assert_eq!(push.request(&miss).await, "fail\n", "{miss}");
            }
        }));
    }

    // Every message arrives once; per connection in the order it was pushed.
    let mut next = [0usize; CONNS];
    for _ in 0..CONNS * PER_CONN {
        let text = tab.recv_text().await;
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let c = v["c"].as_u64().unwrap() as usize;
        let i = v["i"].as_u64().unwrap() as usize;
        assert_eq!(text, format!(r#"{{"uid":"many","c":{c},"i":{i}}}"#));
        assert_eq!(i, next[c], "connection {c} out of order");
        next[c] += 1;
    }
    for t in tasks {
        t.await.unwrap();
    }
    tab.expect_silence(Duration::from_millis(100)).await;
}

/// Every refused line, each followed on the same connection by a good push that must still
/// work, while a browser bound before keeps receiving exactly the good ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_fail_and_the_connection_stays_usable() {
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("good", server.push_addr).await;

    let bad: &[&[u8]] = &[
        b"{\"uid\":\"good\"",           // truncated JSON
        b"{uid:\"good\"}",              // unquoted key
        b"{\"uid\":\"good\"} trailing", // garbage after the object
        b"{\"uid\":\"good\"}{\"uid\":\"good\"}",
        b"\"good\"",
        b"\"uid1\"",
        b"[1]",
        b"[\"good\"]",
        b"[{\"uid\":\"good\"}]",
        b"123",
        b"null",
        b"true",
        b"{\"uid\":{\"id\":1}}",
        b"{\"uid\":{\"id\":\"good\"}}",
        b"{\"uid\":[\"good\"]}",
        b"{\"uid\":null}",
        b"{\"uid\":true}",
        b"{\"uid\":false}",
        b"{\"uid\":1.5}",
        b"{}",
        b"{\"id\":\"good\"}",
        b"{\"UID\":\"good\"}",
        b"",
        b"   ",
        b"\xff\xfe\xfd",
        b"{\"uid\":\"good\",\"x\":\"\xff\"}",
        b"{\"uid\":\"go\xc3od\"}",
        b"{\"uid\":\"good\",\"uid\":\"good\"}",
        b"{\"uid\":\"good\",\"uid\":\"other\"}",
        b"{\"uid\":\"other\",\"x\":1,\"uid\":\"good\"}",
        b"{\"uid\":\"good\",\"m\":\"raw\ttab\"}", // control character inside a string
        b"\x00",
    ];
    let mut push = PushClient::connect(server.push_addr).await;
    for (n, line) in bad.iter().enumerate() {
        let mut raw = line.to_vec();
        raw.push(b'\n');
        push.send_raw(&raw).await;
        assert_eq!(
            push.read_reply().await,
            "fail\n",
            "bad line {:?}",
            String::from_utf8_lossy(line)
        );
        let good = format!(r#"{{"uid":"good","after":{n}}}"#);
        assert_eq!(
            push.request(&good).await,
            "ok\n",
            "good push after {:?}",
            String::from_utf8_lossy(line)
        );
        // Had the bad line been delivered it would arrive first.
        assert_eq!(tab.recv_text().await, good);
    }

    // The same lines pipelined in one write: one fail each, in order, then an ok.
    let mut raw = Vec::new();
    for line in bad {
        raw.extend_from_slice(line);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"{\"uid\":\"good\",\"after\":\"all\"}\n");
    push.send_raw(&raw).await;
    for line in bad {
        assert_eq!(
            push.read_reply().await,
            "fail\n",
            "pipelined bad line {:?}",
            String::from_utf8_lossy(line)
        );
    }
    assert_eq!(push.read_reply().await, "ok\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":"good","after":"all"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_length_limit_is_exact() {
    let server = TestServer::start_with(small_lines()).await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("lim", server.push_addr).await;

    let sized = |len: usize| {
        let head = r#"{"uid":"lim","pad":""#;
        let pad = "x".repeat(len - head.len() - 2);
        let line = format!("{head}{pad}\"}}");
        assert_eq!(line.len(), len);
        line
    };
    let mut push = PushClient::connect(server.push_addr).await;

    // Exactly at the limit: delivered, with \n or \r\n.
    let at = sized(1024);
    assert_eq!(push.request(&at).await, "ok\n");
    assert_eq!(tab.recv_text().await, at);
    push.send_raw(format!("{at}\r\n").as_bytes()).await;
    assert_eq!(push.read_reply().await, "ok\n");
    assert_eq!(tab.recv_text().await, at);

    // One byte over: refused, and the next line is handled normally.
    let over = sized(1025);
    assert_eq!(push.request(&over).await, "fail\n");
    assert_eq!(push.request(r#"{"uid":"lim","n":1}"#).await, "ok\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":"lim","n":1}"#);

    // Far over, pipelined with a good line in the same write.
    let far = sized(5000);
    push.send_raw(format!("{far}\n{{\"uid\":\"lim\",\"n\":2}}\n").as_bytes())
        .await;
    assert_eq!(push.read_reply().await, "fail\n");
    assert_eq!(push.read_reply().await, "ok\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":"lim","n":2}"#);
    tab.expect_silence(Duration::from_millis(100)).await;
}

/// 10 MiB without a newline at a 1 KiB limit: the server discards as it reads (so this write
/// completes at all), answers one `fail` for it, then handles the next line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_line_is_discarded_while_streaming() {
    let server = TestServer::start_with(small_lines()).await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("mem", server.push_addr).await;

    let mut push = PushClient::connect(server.push_addr).await;
    let chunk = vec![b'x'; 64 * 1024];
    tokio::time::timeout(Duration::from_secs(20), async {
        for _ in 0..160 {
            push.send_raw(&chunk).await;
        }
    })
    .await
    .expect("server stopped reading an over-long line");
    // No reply before the line ends.
    let early = tokio::time::timeout(Duration::from_millis(100), push.read_reply()).await;
    assert!(early.is_err(), "reply before the line ended: {early:?}");
    push.send_raw(b"\n{\"uid\":\"mem\",\"n\":1}\n").await;
    assert_eq!(push.read_reply().await, "fail\n");
    assert_eq!(push.read_reply().await, "ok\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":"mem","n":1}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_gets_every_reply_then_eof() {
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("half", server.push_addr).await;

    let mut push = PushClient::connect(server.push_addr).await;
    let mut raw = Vec::new();
    let mut expected = String::new();
    for i in 0..50 {
        if i % 2 == 0 {
            raw.extend_from_slice(format!("{{\"uid\":\"half\",\"i\":{i}}}\n").as_bytes());
            expected.push_str("ok\n");
        } else {
            raw.extend_from_slice(format!("{{\"uid\":\"nobody\",\"i\":{i}}}\n").as_bytes());
            expected.push_str("fail\n");
        }
    }
    raw.extend_from_slice(b"junk\n");
    expected.push_str("fail\n");
    push.send_raw(&raw).await;
    push.shutdown_write().await;
    let all = push.read_to_eof().await;
    assert_eq!(String::from_utf8(all).unwrap(), expected);
    for i in (0..50).step_by(2) {
        assert_eq!(
            tab.recv_text().await,
            format!(r#"{{"uid":"half","i":{i}}}"#)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unterminated_last_line_is_answered_at_eof() {
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("eof", server.push_addr).await;

    let mut push = PushClient::connect(server.push_addr).await;
    push.send_raw(b"{\"uid\":\"eof\",\"n\":1}\n{\"uid\":\"eof\",\"n\":2}")
        .await;
    push.shutdown_write().await;
    assert_eq!(push.read_to_eof().await, b"ok\nok\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":"eof","n":1}"#);
    assert_eq!(tab.recv_text().await, r#"{"uid":"eof","n":2}"#);

    let mut push = PushClient::connect(server.push_addr).await;
    push.send_raw(b"{\"uid\":\"nobody\"}").await;
    push.shutdown_write().await;
    assert_eq!(push.read_to_eof().await, b"fail\n");

    // Nothing sent at all: no reply, just EOF.
    let mut push = PushClient::connect(server.push_addr).await;
    push.shutdown_write().await;
    assert_eq!(push.read_to_eof().await, b"");

    // An over-long unterminated last line is one fail.
    drop(server);
    let server = TestServer::start_with(small_lines()).await;
    let mut push = PushClient::connect(server.push_addr).await;
    push.send_raw(&vec![b'y'; 4000]).await;
    push.shutdown_write().await;
    assert_eq!(push.read_to_eof().await, b"fail\n");
}
