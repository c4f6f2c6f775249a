//! Slow consumers, connection limits and graceful shutdown.
mod common;

use std::time::Duration;

use common::*;
use tokio::time::Instant;

const REPLY_DEADLINE: Duration = Duration::from_secs(1);

fn padded(uid: &str, i: usize, size: usize) -> String {
    let head = format!(r#"{{"uid":"{uid}","i":{i},"pad":""#);
    let pad = "p".repeat(size - head.len() - 2);
    format!("{head}{pad}\"}}")
}

/// A browser that never reads fills its TCP buffers and then its queue; it is evicted
/// (push to it alone turns `fail`) while a healthy browser of another uid, and a healthy tab
/// of the stuck tab's own uid, get every push promptly and no push reply ever stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_browser_is_evicted_without_stalling_anyone() {
    let server = TestServer::start_with(pushwire::Config {
        queue_depth: 8,
        ..pushwire::Config::default()
    })
    .await;
    let mut push = PushClient::connect(server.push_addr).await;

    // "stuck": one raw client that never reads.
    let mut stuck = RawWsClient::connect_small_rcvbuf(server.ws_addr, "/").await;
    stuck.send_text("stuck").await;
    push_until(
        &mut push,
        r#"{"uid":"stuck"}"#,
        "ok\n",
        Duration::from_secs(5),
    )
    .await;
    let mut stuck = Some(stuck);
    let mut stuck_drain = None;

    // "shared": a raw client that never reads plus a healthy tab.
    let mut stuck_shared = RawWsClient::connect_small_rcvbuf(server.ws_addr, "/").await;
    stuck_shared.send_text("shared").await;
    push_until(
        &mut push,
        r#"{"uid":"shared"}"#,
        "ok\n",
        Duration::from_secs(5),
    )
    .await;
    let mut shared = WsClient::connect(&server.ws_url()).await;
    shared.bind("shared", server.push_addr).await;

    // "other": an unrelated healthy tab.
    let mut other = WsClient::connect(&server.ws_url()).await;
    other.bind("other", server.push_addr).await;

    let size = 64 * 1024;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut evicted_at = None;
    let mut i = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "stuck browser never evicted after {i} pushes of {size} bytes"
        );
        if evicted_at.is_none() {
            let line = padded("stuck", i, size);
            push.send_raw(format!("{line}\n").as_bytes()).await;
            match push.read_reply_within(REPLY_DEADLINE).await.as_str() {
                "ok\n" => {}
                "fail\n" => {
                    evicted_at = Some(i);
                    // It reads again from now on, so its close frame can get through.
                    let mut stuck = stuck.take().unwrap();
                    stuck_drain = Some(tokio::spawn(async move {
                        stuck.drain_until_close(Duration::from_secs(5)).await
                    }));
                }
                other => panic!("reply {other:?}"),
            }
        }

        let line = padded("shared", i, size);
        push.send_raw(format!("{line}\n").as_bytes()).await;
        assert_eq!(push.read_reply_within(REPLY_DEADLINE).await, "ok\n");
        let got = tokio::time::timeout(REPLY_DEADLINE, shared.recv_text())
            .await
            .unwrap_or_else(|_| panic!("healthy tab of the stuck uid stalled at push {i}"));
        assert!(got == line, "shared tab got the wrong message at {i}");

        let line = format!(r#"{{"uid":"other","i":{i}}}"#);
        assert_eq!(push.request_within(&line, REPLY_DEADLINE).await, "ok\n");
        let got = tokio::time::timeout(REPLY_DEADLINE, other.recv_text())
            .await
            .unwrap_or_else(|_| panic!("unrelated tab stalled at push {i}"));
        assert_eq!(got, line);

        i += 1;
        // Keep going a little, so the stuck tab of "shared" (same traffic) fills too.
        if let Some(at) = evicted_at
            && i > at + 16
        {
            break;
        }
    }

    // The evicted uid is offline now.
    assert_eq!(
        push.request_within(r#"{"uid":"stuck"}"#, REPLY_DEADLINE)
            .await,
        "fail\n"
    );
    // Both stuck clients, once they read again, find a 1013 close after what was queued.
    assert_eq!(
        stuck_drain.unwrap().await.unwrap(),
        Some((1013, "send queue full".to_owned()))
    );
    assert_eq!(
        stuck_shared.drain_until_close(Duration::from_secs(5)).await,
        Some((1013, "send queue full".to_owned()))
    );
    // The healthy ones are still bound.
    assert_eq!(push.request(r#"{"uid":"shared","end":1}"#).await, "ok\n");
    assert_eq!(shared.recv_text().await, r#"{"uid":"shared","end":1}"#);
    assert_eq!(push.request(r#"{"uid":"other","end":1}"#).await, "ok\n");
    assert_eq!(other.recv_text().await, r#"{"uid":"other","end":1}"#);
}

/// The byte limit alone also evicts a stuck browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_bytes_limit_evicts() {
    let server = TestServer::start_with(pushwire::Config {
        queue_depth: 1_000_000,
        queue_bytes: 256 * 1024,
        ..pushwire::Config::default()
    })
    .await;
    let mut push = PushClient::connect(server.push_addr).await;
    let mut stuck = RawWsClient::connect_small_rcvbuf(server.ws_addr, "/").await;
    stuck.send_text("bytes").await;
    push_until(
        &mut push,
        r#"{"uid":"bytes"}"#,
        "ok\n",
        Duration::from_secs(5),
    )
    .await;

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 0;
    loop {
        assert!(Instant::now() < deadline, "never evicted after {i} pushes");
        let line = padded("bytes", i, 32 * 1024);
        match push.request_within(&line, REPLY_DEADLINE).await.as_str() {
            "ok\n" => i += 1,
            "fail\n" => break,
            other => panic!("reply {other:?}"),
        }
    }
    assert_eq!(push.request(r#"{"uid":"bytes"}"#).await, "fail\n");
    assert_eq!(
        stuck.drain_until_close(Duration::from_secs(5)).await,
        Some((1013, "send queue full".to_owned()))
    );
}

/// Bound browsers get queued messages then Close 1001; pipelined push lines are all answered
/// before their socket closes; `run` returns Ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_and_closes() {
    let server = TestServer::start_with(pushwire::Config {
        shutdown_timeout: Duration::from_secs(2),
        ..pushwire::Config::default()
    })
    .await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("bye", server.push_addr).await;
    let mut idle_push = PushClient::connect(server.push_addr).await;
    // An idle push connection that has been served once.
    assert_eq!(idle_push.request(r#"{"uid":"nobody"}"#).await, "fail\n");
    let mut unbound = WsClient::connect(&server.ws_url()).await;

    // 100 lines in one small write; once the first is answered the server has read them.
    let lines: Vec<String> = (0..100)
        .map(|i| format!(r#"{{"uid":"bye","i":{i}}}"#))
        .collect();
    let mut push = PushClient::connect(server.push_addr).await;
    push.send_raw((lines.join("\n") + "\n").as_bytes()).await;
    let first = push.read_reply().await;
    server.token().cancel();

    let mut replies = vec![first];
    let rest = push.read_to_eof().await;
    let rest = String::from_utf8(rest).unwrap();
    replies.extend(rest.split_inclusive('\n').map(str::to_owned));
    assert_eq!(replies.len(), 100, "every read line answered: {rest:?}");
    assert!(
        replies.iter().all(|r| r == "ok\n" || r == "fail\n"),
        "{replies:?}"
    );

    // The tab gets exactly the lines answered ok, in order, then Close 1001.
    let mut delivered = Vec::new();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), tab.next_event()).await {
            Err(_) => panic!("no Close 1001 within 5 s"),
            Ok(WsEvent::Text(t)) if is_probe(&t) => {}
            Ok(WsEvent::Text(t)) => delivered.push(t),
            Ok(WsEvent::Close(code, reason)) => break (code, reason),
            Ok(WsEvent::End) => panic!("websocket ended without Close"),
        }
    };
    assert_eq!(close, (1001, "server shutting down".to_owned()));
    let acked: Vec<&String> = lines
        .iter()
        .zip(&replies)
        .filter(|(_, r)| *r == "ok\n")
        .map(|(l, _)| l)
        .collect();
    assert_eq!(delivered.iter().collect::<Vec<_>>(), acked);

    // A connection that never sent its uid is closed with 1001 too.
    let (code, _) = unbound.expect_close().await;
    assert_eq!(code, 1001);
    // The idle push connection is closed without a reply.
    assert_eq!(idle_push.read_to_eof().await, b"");

    let started = Instant::now();
    server.shutdown().await.expect("run returns Ok");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A browser that never answers the close handshake (nor reads) does not hold shutdown past
/// its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_its_timeout() {
    let server = TestServer::start_with(pushwire::Config {
        shutdown_timeout: Duration::from_millis(500),
        ..pushwire::Config::default()
    })
    .await;
    let mut push = PushClient::connect(server.push_addr).await;
    let mut stuck = RawWsClient::connect_small_rcvbuf(server.ws_addr, "/").await;
    stuck.send_text("stuck").await;
    push_until(
        &mut push,
        r#"{"uid":"stuck"}"#,
        "ok\n",
        Duration::from_secs(5),
    )
    .await;
    // Fill what can be filled without eviction (1024 messages / 8 MiB by default).
    for i in 0..64 {
        let line = padded("stuck", i, 16 * 1024);
        let _ = push.request(&line).await;
    }
    let started = Instant::now();
    server.shutdown().await.expect("run returns Ok");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    stuck.expect_eof(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_connections_over_the_limit_wait() {
    let server = TestServer::start_with(pushwire::Config {
        max_push_connections: 1,
        ..pushwire::Config::default()
    })
    .await;
    let mut first = PushClient::connect(server.push_addr).await;
    assert_eq!(first.request(r#"{"uid":"x"}"#).await, "fail\n");
    let mut second = PushClient::connect(server.push_addr).await;
    second.send_raw(b"{\"uid\":\"x\"}\n").await;
    let early = tokio::time::timeout(Duration::from_millis(300), second.read_reply()).await;
    assert!(early.is_err(), "second connection served over the limit");
    drop(first);
    assert_eq!(second.read_reply().await, "fail\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_connections_over_the_limit_wait() {
    let server = TestServer::start_with(pushwire::Config {
        max_ws_connections: 1,
        ..pushwire::Config::default()
    })
    .await;
    let mut first = WsClient::connect(&server.ws_url()).await;
    first.bind("one", server.push_addr).await;
    let url = server.ws_url();
    let second = tokio::spawn(async move {
        let mut c = WsClient::connect(&url).await;
        c.send_text("two").await;
        c
    });
    tokio::time::sleep(Duration::from_millis(300)).await; // a window in which nothing may happen
    assert!(
        !second.is_finished(),
        "second handshake served over the limit"
    );
    first.close().await;
    let mut second = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("second handshake not served after the first left")
        .unwrap();
    second.wait_bound("two", server.push_addr).await;
}

/// Messages still queued for a slow reader when shutdown starts are all sent before its
/// Close 1001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_flushes_queued_messages_to_a_slow_reader() {
    let server = TestServer::start_with(pushwire::Config {
        shutdown_timeout: Duration::from_secs(5),
        ..pushwire::Config::default() // queue: 1024 messages, 8 MiB
    })
    .await;
    let mut push = PushClient::connect(server.push_addr).await;
    let mut slow = RawWsClient::connect_small_rcvbuf(server.ws_addr, "/").await;
    slow.send_text("slow").await;
    push_until(
        &mut push,
        r#"{"uid":"slow"}"#,
        "ok\n",
        Duration::from_secs(5),
    )
    .await;
    // The probe answered ok above is the first frame the slow reader will find.
    let first = r#"{"uid":"slow"}"#.to_owned();

    // 6 MiB in 96 messages: more than the socket buffers hold, less than the queue limits,
    // so part of it is still queued in the server when shutdown starts.
    let lines: Vec<String> = (0..96).map(|i| padded("slow", i, 64 * 1024)).collect();
    for line in &lines {
        assert_eq!(push.request(line).await, "ok\n");
    }
    server.token().cancel();

    let mut got = Vec::new();
    let close = loop {
        match slow.read_frame(Duration::from_secs(5)).await {
            None => panic!(
                "connection ended after {} messages, without Close",
                got.len()
            ),
            Some((0x1, p)) => got.push(String::from_utf8(p).unwrap()),
            Some((0x8, p)) => {
                assert!(p.len() >= 2, "close without code");
                let code = u16::from_be_bytes([p[0], p[1]]);
                break (code, String::from_utf8_lossy(&p[2..]).into_owned());
            }
            Some(_) => {}
        }
    };
    // Drop stale probe frames ahead of the first message.
    got.retain(|m| *m != first);
    assert_eq!(got.len(), lines.len(), "queued messages lost at shutdown");
    assert!(got == lines, "queued messages altered or reordered");
    assert_eq!(close, (1001, "server shutting down".to_owned()));
    server.shutdown().await.expect("run returns Ok");
}

/// KNOWN ISSUE, ignored (fails ~1 run in 3 against the server as of this writing): a
/// backend that is still writing when shutdown starts and reads its replies late. The
/// server answers every line it read, then closes the socket while input it did not read is
/// still arriving; the kernel then sends a reset instead of a FIN, discarding replies still in
/// the server's send buffer, so the backend sees ECONNRESET and loses answers to lines that
/// were read. Draining (reading and discarding) input after `shutdown(Write)`, bounded by
/// `shutdown_timeout`, would turn this into a clean EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_with_a_backend_still_writing_ends_in_eof_not_reset() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = TestServer::start_with(pushwire::Config {
        shutdown_timeout: Duration::from_secs(5),
        ..pushwire::Config::default()
    })
    .await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.set_send_buffer_size(4096).unwrap();
    let tcp = sock.connect(server.push_addr).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();

    // Empty lines (1 byte in, "fail\n" out) written until the server stops reading because
    // its replies back up.
    let written = Arc::new(AtomicUsize::new(0));
    let progress = written.clone();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'\n'; 16 * 1024];
        for _ in 0..4096 {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
            progress.fetch_add(1, Ordering::Relaxed);
        }
        wr
    });
    let mut seen = (usize::MAX, 0);
    poll_until(Duration::from_secs(10), "replies to back up", || {
        let now = written.load(Ordering::Relaxed);
        if now == seen.0 {
            seen.1 += 1;
        } else {
            seen = (now, 0);
        }
        let stuck = seen.1 >= 20 && !writer.is_finished(); // no progress for 200 ms
        async move { stuck }
    })
    .await;
    // Stop writing (dropping the write half sends FIN after what our kernel holds); shut down.
    writer.abort();
    let _ = writer.await;
    server.token().cancel();

    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    let read_all = async {
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            for (k, b) in buf[..n].iter().enumerate() {
                assert_eq!(
                    *b,
                    b"fail\n"[(total + k) % 5],
                    "reply bytes wrong at {}",
                    total + k
                );
            }
            total += n;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read_all)
        .await
        .expect("push connection not closed after shutdown")
        .unwrap_or_else(|e| panic!("reset instead of EOF after {} replies: {e}", total / 5));
    assert!(total > 0, "no replies at all");
    assert_eq!(total % 5, 0, "last reply cut");
    server.shutdown().await.expect("run returns Ok");
}
