//! Cluster faults between a node and Redis, with real daemons: a node's link to Redis
//! cut (a veth link set down between network namespaces, `common::netns`) while the
//! node, its browsers and backends stay connected; Redis stalled (SIGSTOP); Redis
//! restarted empty under connected nodes.

#[macro_use]
mod common;
use common::netns::NetRedis;
use common::redis::*;
use common::*;

use std::time::Duration;

use tokio::time::Instant;

/// A reply's wait is bounded by `--cluster-timeout-ms` (1 s); this much more is allowed
/// for a loaded machine.
const MARGIN: Duration = Duration::from_millis(1000);

/// The `n` of a pushed line `{"uid":..,"n":N}`.
fn n_of(text: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(text).expect("a pushed line");
    v["n"].as_u64().unwrap_or_else(|| panic!("no n in {text}"))
}

/// B's link to Redis is cut for 12 s while B, its tab and its backend stay connected
/// (A keeps its own link). B notices: `/readyz` says degraded within a few seconds and the
/// log says so; its dead connections are closed within the link timeout (2 s here);
/// every `/push` through B, five pipelined at a time, is answered within the cluster
/// timeout of when it was sent (a local push goes on, `ok` and delivered); nothing
/// answered `unavailable` is ever delivered. Restored, B is ready and routes again
/// within a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_notices_answers_in_time_and_comes_back() {
    const CUT: Duration = Duration::from_secs(12);
    let net = NetRedis::start(2).await;
    let (cut, kept) = (0, 1);
    let a = Launch::new()
        .args(&["--redis", &net.url(kept)])
        .start()
        .await;
    let b = Launch::new()
        .args(&["--redis", &net.url(cut)])
        .env("PUSHWIRE_CLUSTER_LINK_TIMEOUT_MS", "2000")
        .start()
        .await;
    let b_http = b.http_addr.expect("http door");
    let mut far = WsClient::connect(&a.ws_url()).await;
    far.bind("far", a.push_addr).await;
    let mut near = WsClient::connect(&b.ws_url()).await;
    near.bind("near", b.push_addr).await;
    let mut push = PushClient::connect(b.push_addr).await;
    push_until_received(&mut push, &mut far, r#"{"uid":"far","n":0}"#, STEP).await;
    assert!(readyz(b_http).await.starts_with("HTTP/1.1 200"));

    net.cut(cut);
    let cut_at = Instant::now();
    let (mut degraded, mut unlinked) = (None, None);
    let mut worst = Duration::ZERO;
    let mut answers = Vec::new();
    while cut_at.elapsed() < CUT {
        let first = answers.len() + 1;
        let burst: String = (first..first + 5)
            .map(|n| format!("/push c{n} {{\"uid\":\"far\",\"n\":{n}}}\n"))
            .collect();
        let sent = Instant::now();
        push.send_raw(burst.as_bytes()).await;
        for n in first..first + 5 {
            let reply = push.read_reply().await;
            assert!(reply.contains(&format!("\"id\":\"c{n}\"")), "{reply}");
            worst = worst.max(sent.elapsed());
            answers.push((n, reply));
        }
        let local = format!(r#"{{"uid":"near","n":{first}}}"#);
        assert_eq!(push.request(&local).await, "ok\n", "a local push");
        assert_eq!(near.recv_text().await, local);
        if degraded.is_none() && readyz(b_http).await.starts_with("HTTP/1.1 503") {
            degraded = Some(cut_at.elapsed());
        }
        if unlinked.is_none() && b.log().contains("redis unreachable") {
            unlinked = Some(cut_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "cut: degraded after {degraded:?}, connections closed after {unlinked:?}, \
         slowest /push reply {worst:?}"
    );
    net.restore(cut);
    let restored = Instant::now();
    poll_until(3 * STEP, "B ready again", || async move {
        readyz(b_http).await.starts_with("HTTP/1.1 200")
    })
    .await;
    let ready = restored.elapsed();
    let healed = r#"{"uid":"far","n":999999}"#;
    push_until(&mut push, healed, "ok\n", 3 * STEP).await;
    let routed = restored.elapsed();
    eprintln!("restored: ready after {ready:?}, routing after {routed:?}");
    // What reached A's tab after the cut: never a push answered `unavailable` (it never
    // left B); one in doubt (`partial`) may.
    let mut late = Vec::new();
    loop {
        let text = far.recv_text().await;
        if text == healed {
            break;
        }
        late.push(n_of(&text));
    }
    for n in &late {
        let (_, reply) = &answers[*n as usize - 1];
        assert!(
            reply.contains("\"partial\""),
            "push {n} answered {reply} yet delivered"
        );
    }
    eprintln!(
        "{} of {} pushes in the cut delivered later",
        late.len(),
        answers.len()
    );
    for (n, reply) in &answers {
        assert!(
            !reply.contains("\"delivered\""),
            "push {n} during the cut: {reply}"
        );
    }
    let degraded = degraded.unwrap_or_else(|| panic!("never degraded:\n{}", b.log()));
    assert!(
        degraded < Duration::from_secs(4),
        "degraded after {degraded:?}"
    );
    assert!(
        worst < Duration::from_secs(1) + MARGIN,
        "a reply took {worst:?}:\n{}",
        b.log()
    );
    assert!(
        b.log().contains("redis not answering"),
        "nothing logged:\n{}",
        b.log()
    );
    let unlinked = unlinked.unwrap_or_else(|| panic!("never unlinked:\n{}", b.log()));
    assert!(
        unlinked < Duration::from_secs(5),
        "unlinked after {unlinked:?}"
    );
    assert!(late.len() <= 2, "{late:?} delivered after the cut");
    assert!(
        ready < Duration::from_secs(5),
        "ready again after {ready:?}"
    );
    assert!(routed < Duration::from_secs(6), "routing after {routed:?}");
}

/// How a test stalls Redis.
#[derive(Debug, Clone, Copy)]
enum Stall {
    /// SIGSTOP, then SIGCONT.
    Stopped,
    /// `CLIENT PAUSE 5000 WRITE`: Redis answers `PING` and reads, but holds every write
    /// and publish.
    WritesPaused,
}

/// Redis stalls for 5 s while a backend on B sends a plain line to A's tab every 10 ms.
/// A line answered `fail` must not be delivered later, but for the few handed to Redis in
/// the instant it stalled (in doubt): B stops writing once Redis has not answered for the
/// cluster timeout, and refuses what was queued behind, unwritten. Every `ok` line
/// arrives; every reply comes within the cluster timeout (pipelined `/push`es in the
/// stall are `unavailable` at once); B's `/readyz` is degraded during the stall; once
/// Redis is back, lines route again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_leaves_few_fail_answered_lines_to_deliver_later() {
    stalled_redis_leaves_few_fail_answered_lines_to_deliver_later(Stall::Stopped).await;
}

/// The same with `CLIENT PAUSE … WRITE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_paused_redis_leaves_few_fail_answered_lines_to_deliver_later() {
    stalled_redis_leaves_few_fail_answered_lines_to_deliver_later(Stall::WritesPaused).await;
}

async fn stalled_redis_leaves_few_fail_answered_lines_to_deliver_later(how: Stall) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    const STALL: Duration = Duration::from_secs(5);
    let redis = Redis::start().await;
    let url = redis.url();
    let a = Launch::new().args(&["--redis", &url]).start().await;
    let b = Launch::new().args(&["--redis", &url]).start().await;
    let b_http = b.http_addr.expect("http door");
    let mut far = WsClient::connect(&a.ws_url()).await;
    let mut push = PushClient::connect(b.push_addr).await;
    far.bind("far", a.push_addr).await;
    push_until_received(&mut push, &mut far, r#"{"uid":"far","n":0}"#, STEP).await;

    let (rd, mut wr) = tokio::net::TcpStream::connect(b.push_addr)
        .await
        .expect("connect")
        .into_split();
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel();
    let writer = tokio::spawn(async move {
        let mut n = 0u64;
        let until = Instant::now() + STALL + Duration::from_secs(2);
        while Instant::now() < until {
            n += 1;
            let line = format!("{{\"uid\":\"far\",\"n\":{n}}}\n");
            wr.write_all(line.as_bytes()).await.expect("write a line");
            let _ = sent_tx.send(Instant::now());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        wr
    });
    let reader = tokio::spawn(async move {
        let mut rd = BufReader::new(rd);
        let mut replies = Vec::new();
        while let Some(sent) = sent_rx.recv().await {
            let mut reply = String::new();
            rd.read_line(&mut reply).await.expect("read a reply");
            replies.push((reply, sent, sent.elapsed()));
        }
        replies
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    match how {
        Stall::Stopped => send_signal(redis.child.id().expect("redis running"), "STOP").await,
        Stall::WritesPaused => {
            let paused = tokio::process::Command::new("redis-cli")
                .args(redis.cli_args())
                .args(["CLIENT", "PAUSE", &STALL.as_millis().to_string(), "WRITE"])
                .output()
                .await
                .expect("redis-cli");
            assert_eq!(String::from_utf8_lossy(&paused.stdout).trim(), "OK");
        }
    }
    let stalled = Instant::now();
    let mut degraded = None;
    let mut pushes = PushClient::connect(b.push_addr).await;
    let mut in_stall = None;
    while stalled.elapsed() < STALL {
        if degraded.is_none() && readyz(b_http).await.starts_with("HTTP/1.1 503") {
            degraded = Some(stalled.elapsed());
        }
        if in_stall.is_none() && stalled.elapsed() > Duration::from_secs(2) {
            let sent = Instant::now();
            pushes
                .send_raw(
                    b"/push s1 {\"uid\":\"far\",\"n\":900001}\n/push s2 {\"uid\":\"far\",\"n\":900002}\n",
                )
                .await;
            let replies = [pushes.read_reply().await, pushes.read_reply().await];
            in_stall = Some((replies, sent.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Stall::Stopped = how {
        send_signal(redis.child.id().expect("redis running"), "CONT").await;
    }
    let _wr = writer.await.expect("writer");
    let replies = reader.await.expect("reader");
    let delivered: std::collections::HashSet<u64> = far
        .texts_until_silence(Duration::from_secs(2))
        .await
        .iter()
        .map(|t| n_of(t))
        .collect();
    let mut fail_delivered = Vec::new();
    let mut failed = 0;
    let mut worst = Duration::ZERO;
    for (i, (reply, sent, took)) in replies.iter().enumerate() {
        let n = i as u64 + 1;
        worst = worst.max(*took);
        match reply.as_str() {
            "ok\n" => assert!(
                delivered.contains(&n),
                "line {n} answered ok, never delivered"
            ),
            "fail\n" => {
                failed += 1;
                if delivered.contains(&n) {
                    fail_delivered.push((n, sent.saturating_duration_since(stalled)));
                }
            }
            other => panic!("line {n}: {other:?}"),
        }
    }
    eprintln!(
        "{how:?}: {} lines, {failed} fail, {} of them delivered later; slowest reply {worst:?}; \
         degraded after {degraded:?}",
        replies.len(),
        fail_delivered.len()
    );
    assert!(failed > 100, "the stall was not felt: {failed} fail");
    // Delivered though answered `fail`: only lines of the instant Redis stalled, handed
    // to it just before (the batch in flight), or run by it just before while the
    // holder's answer was then held by it. None sent later: those were never written.
    assert!(
        fail_delivered.len() <= 20
            && fail_delivered
                .iter()
                .all(|(_, after)| *after < Duration::from_millis(250)),
        "lines answered fail were delivered later (number, sent this long after the stall \
         began): {fail_delivered:?}"
    );
    assert!(
        worst < Duration::from_secs(1) + MARGIN,
        "a reply took {worst:?}"
    );
    // Redis known not to answer: `/push` is refused at once, never sent.
    let (replies, took) = in_stall.expect("pushes in the stall");
    for (id, reply) in ["s1", "s2"].iter().zip(&replies) {
        assert!(
            reply.contains(&format!("\"id\":\"{id}\"")) && reply.contains("\"unavailable\""),
            "{reply}"
        );
    }
    assert!(took < MARGIN, "/push in the stall took {took:?}");
    let degraded = degraded.unwrap_or_else(|| panic!("never degraded:\n{}", b.log()));
    assert!(
        degraded < Duration::from_secs(3),
        "degraded after {degraded:?}"
    );
    let healed = r#"{"uid":"far","n":999999}"#;
    push_until_received(&mut push, &mut far, healed, 3 * STEP).await;
}

/// Redis is killed and started again empty (no persistence) under two connected nodes, a
/// v1 tab on B and a group of four. Both nodes say so at WARN, naming what is lost (the
/// group is empty: memberships lived only in Redis); the v1 tab is closed with 1012 and,
/// resuming with `since`, is told `not_recovered` on a history made afresh; from then on
/// its messages are numbered again (`m`, not unnumbered `b` for the rest of its life), so
/// `/push ID ack=` to it is acknowledged again. Seed tabs route as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_is_detected_and_v1_tabs_resync() {
    use common::v1::{V1Client, V1Event};
    let mut redis = Redis::start().await;
    let port = redis.port;
    let url = redis.url();
    let a = Launch::new().args(&["--redis", &url]).start().await;
    let b = Launch::new().args(&["--redis", &url]).start().await;
    let mut push = PushClient::connect(a.push_addr).await;
    let mut v1 = V1Client::connect(b.ws_addr, "h", None).await;
    let first = r#"{"uid":"h","n":1}"#;
    push_until(&mut push, first, "ok\n", STEP).await;
    v1.expect_msg(1, first).await;
    let joined = push.request(r#"/join g ["m1","m2","m3","m4"]"#).await;
    assert!(joined.contains("\"members\":4"), "{joined}");
    let mut seed = WsClient::connect(&b.ws_url()).await;
    seed.bind("s", b.push_addr).await;

    redis.kill().await;
    let _redis = Redis::start_on(port).await;
    let restarted = Instant::now();
    let lost = "redis lost its data";
    for node in [&a, &b] {
        node.wait_log(lost, 3 * STEP).await;
    }
    eprintln!("data loss logged after {:?}", restarted.elapsed());
    let line = b.wait_line(lost, STEP).await;
    assert!(
        line.contains("WARN") && line.contains("group memberships"),
        "{line}"
    );
    assert!(line.contains("v1_tabs_resynced=1"), "{line}");
    // The tab is told to resync: it may first get pushes made while Redis was away or
    // before the loss was seen (unnumbered), never a numbered one of another history.
    let point = loop {
        match v1.next_within(3 * STEP).await {
            V1Event::Close(code, reason) => {
                assert_eq!(
                    (code, reason.as_str()),
                    (1012, "history resync: reconnect with since")
                );
                break v1.status.point();
            }
            V1Event::Broadcast(_) => {}
            other => panic!("before the resync: {other:?}"),
        }
    };
    let mut v1 = V1Client::connect(b.ws_addr, "h", Some(&format!("{}:1", &point[..16]))).await;
    assert_eq!(v1.status.kind, "not_recovered", "{:?}", v1.status);
    let after = r#"{"uid":"h","n":2}"#;
    push_until(&mut push, after, "ok\n", STEP).await;
    let V1Event::Msg(seq, payload) = v1.next().await else {
        panic!("not numbered after the resync");
    };
    assert_eq!((seq, payload.as_str()), (v1.status.seq + 1, after));
    // Numbered, so an ack can be waited for and given.
    let mut acker = PushClient::connect(a.push_addr).await;
    acker
        .send_raw(b"/push k1 ack=5000 {\"uid\":\"h\",\"n\":3}\n")
        .await;
    let V1Event::Msg(seq, _) = v1.next().await else {
        panic!("not numbered after the resync");
    };
    v1.ack(seq).await;
    let reply = acker.read_reply().await;
    assert!(reply.contains("\"result\":\"acked\""), "{reply}");
    // What only Redis held is gone, as the log said.
    assert_eq!(
        push.request("/members g").await,
        "{\"ok\":true,\"group\":\"g\",\"count\":0,\"uids\":[]}\n"
    );
    let seeded = r#"{"uid":"s","n":1}"#;
    push_until_received(&mut push, &mut seed, seeded, STEP).await;
    // The cluster-wide online count went with the data too, and is made again: h and s.
    until_reply(
        a.push_addr,
        "/count",
        "\"uids\":2,\"connections\":2,",
        STEP,
        "the online count made again",
    )
    .await;
}

/// Redis flushed under connected nodes (`FLUSHALL`: no connection drops, so no reconnect
/// announces anything again): the nodes see the loss by their data epochs, and the
/// cluster-wide online count, which went with the data, is made again from what each node
/// holds (a uid with tabs on both nodes still counted once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushed_is_detected_and_the_online_count_made_again() {
    let redis = Redis::start().await;
    let url = redis.url();
    let a = Launch::new().args(&["--redis", &url]).start().await;
    let b = Launch::new().args(&["--redis", &url]).start().await;
    let mut tabs = Vec::new();
    for (node, uid) in [(&a, "u1"), (&b, "u1"), (&b, "u2")] {
        let mut tab = WsClient::connect(&node.ws_url()).await;
        tab.bind(uid, node.push_addr).await;
        tabs.push(tab);
    }
    let counted = "\"uids\":2,\"connections\":3,";
    until_reply(a.push_addr, "/count", counted, STEP, "counted before").await;
    let flushed = tokio::process::Command::new("redis-cli")
        .args(redis.cli_args())
        .arg("FLUSHALL")
        .output()
        .await
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&flushed.stdout).trim(), "OK");
    for node in [&a, &b] {
        node.wait_log("redis lost its data", 3 * STEP).await;
    }
    for node in [&a, &b] {
        until_reply(
            node.push_addr,
            "/count",
            counted,
            STEP,
            "the count made again",
        )
        .await;
    }
}

/// `--cluster-timeout-ms` bounds replies, not opening a link: a node whose Redis takes
/// 700 ms to finish a TLS handshake (a proxy that holds each new connection, as a
/// distant Redis would) links with `--cluster-timeout-ms 300`, is ready, and routes;
/// its links open within `--cluster-link-timeout-ms` (3 s). When the reply timeout was
/// also the connect timeout (TLS handshake included), it never linked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_timeout_shorter_than_opening_a_link_still_links() {
    let cert = TestCert::new("slow-redis");
    let redis = Redis::start_tls(&cert, &[]).await;
    let slow = SlowToOpen::start(redis.port, Duration::from_millis(700)).await;
    let trust = cert.files().cert.display().to_string();
    let a = Launch::new()
        .args(&["--redis", &redis.tls_url()])
        .env("SSL_CERT_FILE", &trust)
        .start()
        .await;
    let far_url = format!("rediss://127.0.0.1:{}/", slow.port);
    let b = Launch::new()
        .args(&["--redis", &far_url, "--cluster-timeout-ms", "300"])
        .env("SSL_CERT_FILE", &trust)
        .start()
        .await;
    let b_http = b.http_addr.expect("http door");
    poll_until(3 * STEP, "the far node ready", || async move {
        readyz(b_http).await.starts_with("HTTP/1.1 200")
    })
    .await;
    let mut tab = WsClient::connect(&a.ws_url()).await;
    tab.bind("t", a.push_addr).await;
    let mut push = PushClient::connect(b.push_addr).await;
    push_until_received(&mut push, &mut tab, r#"{"uid":"t","n":1}"#, STEP).await;
}

/// `GET /metrics` of `http`, checked by `promtool check metrics` (it must say nothing):
/// the body.
async fn scrape(http: std::net::SocketAddr) -> String {
    let response = http_get(http, "/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .expect("a body");
    let mut cmd = tokio::process::Command::new("promtool");
    cmd.args(["check", "metrics"]);
    let out = run_program(&mut cmd, body.as_bytes(), Duration::from_secs(20)).await;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{body}"
    );
    body
}

/// The value of the sample `name` (with its labels) in a scrape.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

/// An operator sees Redis trouble in `/metrics`: `pushwire_redis_ready` is 1 while the
/// link is up and Redis answers, and 0 during a `CLIENT PAUSE` (one `not_answering`
/// episode, its unanswered probes counted in `pushwire_redis_timeouts_total`), 1 again
/// after it; connections Redis closed (`CLIENT KILL`) and fred opened again count in
/// `pushwire_redis_links_replaced_total`. Nothing counted while all is well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_trouble_is_counted_in_metrics() {
    const SLEEP: Duration = Duration::from_secs(3);
    let redis = Redis::start().await;
    let a = Launch::new().args(&["--redis", &redis.url()]).start().await;
    let http = a.http_addr.expect("http door");
    poll_until(STEP, "the node ready", || async move {
        readyz(http).await.starts_with("HTTP/1.1 200")
    })
    .await;
    let ready = "pushwire_redis_ready";
    let timeouts = "pushwire_redis_timeouts_total";
    let not_answering = "pushwire_redis_episodes_total{reason=\"not_answering\"}";
    let unreachable = "pushwire_redis_episodes_total{reason=\"unreachable\"}";
    let replaced = "pushwire_redis_links_replaced_total";
    let before = scrape(http).await;
    for (name, value) in [
        (ready, 1.0),
        (timeouts, 0.0),
        (not_answering, 0.0),
        (unreachable, 0.0),
        (replaced, 0.0),
    ] {
        assert_eq!(sample(&before, name), value, "{name} before");
    }

    let paused = redis
        .cli(&["CLIENT", "PAUSE", &SLEEP.as_millis().to_string()])
        .await;
    assert_eq!(paused.trim(), "OK");
    let asleep = Instant::now();
    poll_until(
        SLEEP,
        "redis_ready 0 while Redis is paused",
        || async move { sample(&scrape(http).await, ready) == 0.0 },
    )
    .await;
    let seen = asleep.elapsed();
    let during = scrape(http).await;
    assert!(sample(&during, timeouts) >= 1.0, "{during}");
    assert_eq!(sample(&during, not_answering), 1.0, "{during}");
    poll_until(STEP, "redis_ready 1 once Redis answers", || async move {
        sample(&scrape(http).await, ready) == 1.0
    })
    .await;
    // One episode, however many probes went unanswered in it.
    assert_eq!(sample(&scrape(http).await, not_answering), 1.0);
    eprintln!("redis_ready 0 after {seen:?} of CLIENT PAUSE");

    for kind in ["normal", "pubsub"] {
        let killed = redis.cli(&["CLIENT", "KILL", "TYPE", kind]).await;
        assert!(killed.trim().parse::<u64>().is_ok(), "{killed}");
    }
    poll_until(
        STEP,
        "the killed links replaced and counted",
        || async move {
            let text = scrape(http).await;
            sample(&text, replaced) >= 1.0 && sample(&text, ready) == 1.0
        },
    )
    .await;
}
