//! A fan-out (`/send`, `/group`, `/broadcast`) writes its frame straight to an idle plain
//! socket (`outbox.rs`, "Writing through"); whatever the socket does not take at once is
//! finished by the connection's task from the byte where the fan-out stopped, and plain
//! pushes to the uid queue behind it. These tests make the socket fill mid-frame
//! (a 4 KiB receive buffer and a slow reader) while pings interleave and the connection is
//! evicted, and check the byte stream is still exactly the frames, whole and in order.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::{Instant, sleep};

/// Sizes that end a socket's room mid-header, mid-payload and between frames.
const SIZES: [usize; 7] = [1, 100, 3000, 20_000, 70_000, 125, 65_536];

fn roomy(ping: Duration) -> pushwire::Config {
    pushwire::Config {
        ping_interval: ping,
        pong_timeout: Duration::from_secs(5),
        queue_depth: 100_000,
        queue_bytes: 256 << 20,
        max_line_bytes: 1 << 20,
        max_message_bytes: 1 << 20,
        ..pushwire::Config::default()
    }
}

/// Push `n` to `uid`: a plain line when n is even, a `/send` (written through) when odd;
/// either way the browser's frame is [`line`].
fn push_line(uid: &str, n: usize) -> String {
    if n.is_multiple_of(2) {
        line(uid, n)
    } else {
        format!(r#"/send ["{uid}"] {}"#, line(uid, n))
    }
}

fn taken(reply: &str) -> bool {
    reply == "ok\n" || reply.starts_with(r#"{"ok":true"#) && reply.contains(r#""refused":0"#)
}

fn line(uid: &str, n: usize) -> String {
    let size = SIZES[n % SIZES.len()];
    let c = char::from(b'a' + (n % 26) as u8);
    format!(
        r#"{{"uid":"{uid}","n":{n},"pad":"{}"}}"#,
        c.to_string().repeat(size)
    )
}

/// Reads text frames until `want` of them (numbered 0..want, skipping the bind probes
/// with n -1) have arrived, answering every ping; slowly at first, so the server's
/// writes keep finding the socket full. Returns the pings seen.
async fn read_all(tab: &mut RawWsClient, uid: &str, want: usize, v1: bool) -> usize {
    let mut next = 0;
    let mut pings = 0;
    let mut last_seq = 0u64;
    let until = Instant::now() + Duration::from_secs(60);
    while next < want {
        let left = until.saturating_duration_since(Instant::now());
        let (op, payload) = tab
            .read_frame(left)
            .await
            .unwrap_or_else(|| panic!("connection ended after {next} of {want} frames"));
        match op {
            0x9 => {
                pings += 1;
                use tokio::io::AsyncWriteExt;
                tab.tcp
                    .write_all(&masked_frame(0xA, &payload))
                    .await
                    .unwrap();
                continue;
            }
            0x1 => {}
            other => panic!("opcode {other} after {next} frames"),
        }
        let text = String::from_utf8(payload).expect("text frames are UTF-8");
        let body = if v1 {
            if text.starts_with("s ") {
                continue;
            }
            let rest = text
                .strip_prefix("m ")
                .unwrap_or_else(|| panic!("v1 frame {text:.60}"));
            let (seq, body) = rest.split_once(' ').expect("m SEQ PAYLOAD");
            let seq: u64 = seq.parse().expect("a sequence number");
            assert!(seq > last_seq, "sequence {seq} after {last_seq}");
            last_seq = seq;
            body.to_owned()
        } else {
            text
        };
        if body.contains(r#""n":-1"#) {
            continue;
        }
        assert_eq!(
            body,
            line(uid, next),
            "frame {next} is not push {next}, byte for byte"
        );
        next += 1;
        if next < 150 {
            sleep(Duration::from_millis(1)).await;
        }
    }
    pings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_every_frame_whole_and_in_order_with_pings_between() {
    let server = TestServer::start_with(roomy(Duration::from_millis(15))).await;
    for (uid, path, v1) in [("slow", "/", false), ("slow-v1", "/?pushwire=1", true)] {
        let mut tab = RawWsClient::connect_small_rcvbuf(server.ws_addr, path).await;
        tab.send_text(uid).await;
        let mut push = PushClient::connect(server.push_addr).await;
        push_until(
            &mut push,
            &format!(r#"{{"uid":"{uid}","n":-1}}"#),
            "ok\n",
            STEP,
        )
        .await;

        const N: usize = 400;
        let backend = tokio::spawn(async move {
            // Paced, so the socket keeps going from full to idle and back, with pings
            // falling between (and racing) the writes.
            for n in 0..N {
                push.send_raw(push_line(uid, n).as_bytes()).await;
                push.send_raw(b"\n").await;
                if n.is_multiple_of(2) {
                    sleep(Duration::from_millis(1)).await;
                }
            }
            for n in 0..N {
                let reply = push.read_reply_within(Duration::from_secs(60)).await;
                assert!(taken(&reply), "push {n}: {reply}");
            }
        });
        let pings = read_all(&mut tab, uid, N, v1).await;
        backend.await.unwrap();
        assert!(
            pings > 0,
            "{uid}: no ping came between the frames (15 ms interval)"
        );
        // Still bound and writing through once the socket has room again.
        let mut push = PushClient::connect(server.push_addr).await;
        assert_eq!(push.request(&line(uid, 0)).await, "ok\n");
        let mut one = 0;
        while one == 0 {
            match tab.read_frame(STEP).await {
                Some((0x9, p)) => {
                    use tokio::io::AsyncWriteExt;
                    tab.tcp.write_all(&masked_frame(0xA, &p)).await.unwrap();
                }
                Some((0x1, p)) => {
                    let text = String::from_utf8(p).unwrap();
                    assert!(text.ends_with(&line(uid, 0)), "{text:.80}");
                    one += 1;
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

/// A browser that stops reading mid-frame is evicted; its close frame (1013) comes after
/// the rest of the frame a push had half written, so the stream stays parseable to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_after_a_half_written_frame_closes_on_a_frame_boundary() {
    let server = TestServer::start_with(pushwire::Config {
        queue_depth: 4,
        ..roomy(Duration::from_secs(30))
    })
    .await;
    let mut tab = RawWsClient::connect_small_rcvbuf(server.ws_addr, "/").await;
    tab.send_text("stuck").await;
    let mut push = PushClient::connect(server.push_addr).await;
    push_until(&mut push, r#"{"uid":"stuck","n":-1}"#, "ok\n", STEP).await;
    let mut accepted = 0;
    loop {
        // 70,000 bytes each: the first already overflows the socket mid-frame.
        let n = 4 + 7 * accepted;
        let reply = push
            .request(&format!(r#"/send ["stuck"] {}"#, line("stuck", n)))
            .await;
        if taken(&reply) {
            accepted += 1;
        } else if reply.contains(r#""refused":1"#) || reply.contains(r#""ok":false"#) {
            break;
        } else {
            panic!("{reply:?}");
        }
        assert!(accepted < 1000, "never evicted");
    }
    // Every frame before the close is a whole push, in order; then 1013.
    let mut got = 0;
    loop {
        match tab.read_frame(STEP).await {
            Some((0x1, p)) => {
                let text = String::from_utf8(p).expect("whole UTF-8 frames");
                if text.contains(r#""n":-1"#) {
                    continue;
                }
                assert_eq!(text, line("stuck", 4 + 7 * got), "frame {got}");
                got += 1;
            }
            Some((0x8, p)) => {
                assert_eq!(u16::from_be_bytes([p[0], p[1]]), 1013);
                assert_eq!(&p[2..], b"send queue full");
                break;
            }
            other => panic!("after {got} frames: {other:?}"),
        }
    }
    assert!(
        got >= 1,
        "the half-written frame was not finished before the close"
    );
    assert!(
        got <= accepted,
        "{got} frames for {accepted} accepted pushes"
    );
}

/// Above 2,048 recipients a fan-out is split over the runtime's workers (two here), each
/// writing through its part: every tab gets the frame exactly once, and the replies and
/// the frame counters add up exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_fan_out_is_split_over_threads_and_counted_exactly() {
    const TABS: usize = 2_600;
    let server = TestServer::start_with(pushwire::Config {
        max_connections_per_ip: TABS + 10,
        max_pending_per_ip: TABS + 10,
        max_list_uids: TABS,
        ..pushwire::Config::default()
    })
    .await;
    let mut tabs = Vec::with_capacity(TABS);
    for i in 0..TABS {
        let mut tab = RawWsClient::connect(server.ws_addr, "/").await;
        tab.send_text(&format!("u{i}")).await;
        tabs.push(tab);
    }
    let mut push = PushClient::connect(server.push_addr).await;
    let all = format!(r#"{{"ok":true,"uids":{TABS},"connections":{TABS},"groups":0}}"#);
    poll_until(STEP, "every tab bound", || {
        let (addr, all) = (server.push_addr, all.clone());
        async move {
            PushClient::connect(addr)
                .await
                .request("/count")
                .await
                .trim()
                == all
        }
    })
    .await;
    let frames_before = frames_out(&mut push).await;

    let reply = push.request(r#"/broadcast {"b":1}"#).await;
    assert_eq!(
        reply.trim(),
        format!(r#"{{"ok":true,"connections":{TABS},"refused":0}}"#)
    );
    let targets: Vec<String> = (0..TABS).map(|i| format!("\"u{i}\"")).collect();
    let reply = push
        .request(&format!(r#"/send [{}] {{"s":2}}"#, targets.join(",")))
        .await;
    assert_eq!(
        reply.trim(),
        format!(r#"{{"ok":true,"uids":{TABS},"reached":{TABS},"connections":{TABS},"refused":0}}"#)
    );
    for (i, tab) in tabs.iter_mut().enumerate() {
        for want in [r#"{"b":1}"#, r#"{"s":2}"#] {
            let (op, payload) = tab.read_frame(STEP).await.expect("a frame");
            assert_eq!((op, payload.as_slice()), (0x1, want.as_bytes()), "tab {i}");
        }
    }
    for tab in tabs.iter_mut().step_by(97) {
        use tokio::io::AsyncReadExt;
        let mut more = [0u8; 64];
        let extra = tokio::time::timeout(Duration::from_millis(20), tab.tcp.read(&mut more)).await;
        assert!(
            extra.is_err(),
            "a tab got more than one frame of each: {extra:?}"
        );
    }
    // (A frame its task wrote is counted just after the write: hence the poll.)
    let want = frames_before + 2 * TABS as u64;
    poll_until(STEP, "frames_out counts every frame", || {
        let addr = server.push_addr;
        async move { frames_out(&mut PushClient::connect(addr).await).await >= want }
    })
    .await;
    assert_eq!(
        frames_out(&mut push).await,
        want,
        "frames_out counted a frame twice"
    );
}

/// The `frames_out` counter from `/stats`.
async fn frames_out(push: &mut PushClient) -> u64 {
    let stats: serde_json::Value = serde_json::from_str(&push.request("/stats").await).unwrap();
    stats["frames_out"].as_u64().expect("frames_out in /stats")
}
