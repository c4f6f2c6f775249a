//! Memory stays bounded while an over-long push line streams in.
//!
//! Alone in its own test binary so that the process's peak RSS reflects this test only.
mod common;

use std::time::Duration;

use common::*;

/// Peak resident set size of this process (Linux `VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_line_does_not_grow_memory() {
    let server = TestServer::start_with(pushwire::Config {
        max_line_bytes: 1024,
        ..pushwire::Config::default()
    })
    .await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("mem", server.push_addr).await;
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"mem","n":0}"#).await, "ok\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":"mem","n":0}"#);

    let before = peak_rss_kib();
    let chunk = vec![b'x'; 64 * 1024];
    tokio::time::timeout(Duration::from_secs(20), async {
        for _ in 0..160 {
            push.send_raw(&chunk).await;
        }
    })
    .await
    .expect("server stopped reading an over-long line");
    push.send_raw(b"\n{\"uid\":\"mem\",\"n\":1}\n").await;
    assert_eq!(push.read_reply().await, "fail\n");
    assert_eq!(push.read_reply().await, "ok\n");
    assert_eq!(tab.recv_text().await, r#"{"uid":"mem","n":1}"#);
    let after = peak_rss_kib();

    if let (Some(before), Some(after)) = (before, after) {
        let grew = after.saturating_sub(before);
        eprintln!("peak RSS {before} KiB -> {after} KiB");
        // Buffering the line would cost at least its 10 MiB.
        assert!(
            grew < 4 * 1024,
            "peak RSS grew by {grew} KiB while a 10 MiB line streamed at a 1 KiB limit"
        );
    }
}
