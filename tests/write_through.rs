//! A push writes its frame straight to an idle plain socket (`outbox.rs`, "Writing
//! through"); whatever the socket does not take at once is finished by the connection's
//! task from the byte where the push stopped. These tests make the socket fill mid-frame
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
                push.send_raw(line(uid, n).as_bytes()).await;
                push.send_raw(b"\n").await;
                if n % 2 == 0 {
                    sleep(Duration::from_millis(1)).await;
                }
            }
            for n in 0..N {
                let reply = push.read_reply_within(Duration::from_secs(60)).await;
                assert_eq!(reply, "ok\n", "push {n}");
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
        let reply = push.request(&line("stuck", 4 + 7 * accepted)).await;
        match reply.as_str() {
            "ok\n" => accepted += 1,
            "fail\n" => break,
            other => panic!("{other:?}"),
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
