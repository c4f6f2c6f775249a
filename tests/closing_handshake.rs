//! The closing handshake (RFC 6455 §5.5.1, §7.4) over raw sockets, before and after the
//! uid is bound: every close is answered with a close; close frames a peer must not send
//! are answered 1002 (1007 for a reason that is not UTF-8), never echoed; a 64-bit length
//! with its top bit set is a protocol error; and after the server's own close, input
//! still arriving is read and discarded, so the peer gets the close code, not a reset.

mod common;
use common::*;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where a connection is when its peer misbehaves.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Upgraded, no uid yet.
    Fresh,
    /// Bound to a uid.
    Bound,
}

async fn client(server: &TestServer, state: State, uid: &str) -> RawWsClient {
    let mut c = RawWsClient::connect(server.ws_addr, "/").await;
    if let State::Bound = state {
        c.send_text(uid).await;
        let mut push = PushClient::connect(server.push_addr).await;
        let line = format!(r#"{{"uid":"{uid}"}}"#);
        push_until(&mut push, &line, "ok\n", STEP).await;
        assert_eq!(c.read_frame(STEP).await, Some((0x1, line.into_bytes())));
    }
    c
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// Sends one close frame with `payload`; returns the close code the server answers with
/// (1005 for an empty close), or None if it just closed TCP.
async fn answer_to_close(server: &TestServer, state: State, payload: &[u8]) -> Option<u16> {
    let mut c = client(server, state, "closer").await;
    c.tcp.write_all(&masked_frame(0x8, payload)).await.unwrap();
    let answer = c.drain_until_close(STEP).await.map(|(code, _)| code);
    // Answer as a browser would (an echo of an echo may meet a closed socket: ignored).
    let _ = c.tcp.write_all(&masked_frame(0x8, b"")).await;
    c.expect_eof(STEP).await;
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_valid_close_is_echoed_before_and_after_binding() {
    let server = TestServer::start().await;
    for state in [State::Fresh, State::Bound] {
        for code in [1000u16, 1001, 1003, 1011, 3000, 4000, 4999] {
            assert_eq!(
                answer_to_close(&server, state, &close_payload(code, b"bye")).await,
                Some(code),
                "{state:?}, close {code}"
            );
        }
        assert_eq!(
            answer_to_close(&server, state, b"").await,
            Some(1005),
            "{state:?}, empty close: an empty close back"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_frames_a_peer_must_not_send_get_1002_or_1007() {
    let server = TestServer::start().await;
    for state in [State::Fresh, State::Bound] {
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            assert_eq!(
                answer_to_close(&server, state, &close_payload(code, b"")).await,
                Some(1002),
                "{state:?}, close {code}"
            );
        }
        assert_eq!(
            answer_to_close(&server, state, &[0x03]).await,
            Some(1002),
            "{state:?}, 1-byte close payload"
        );
        assert_eq!(
            answer_to_close(&server, state, &close_payload(1000, &[0xce, 0xba, 0xff])).await,
            Some(1007),
            "{state:?}, close reason not UTF-8"
        );
    }
    // The server is unharmed.
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("after", server.push_addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_bit_length_with_the_top_bit_set_gets_1002() {
    let server = TestServer::start().await;
    for state in [State::Fresh, State::Bound] {
        let mut c = client(&server, state, "huge").await;
        let mut frame = vec![0x81, 0x80 | 127];
        frame.extend_from_slice(&(0x8000_0000_0000_0005u64).to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4, b'x', b'x', b'x', b'x', b'x']);
        c.tcp.write_all(&frame).await.unwrap();
        let (code, reason) = c.drain_until_close(STEP).await.expect("no close frame");
        assert_eq!(code, 1002, "{state:?}: {reason}");
    }
}

/// The server closes (1009 bound, 1008 before binding) as soon as it sees the header of
/// an oversized message, while the client is still sending its payload. The client
/// finishes writing, then reads: it must find the close code, not a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_s_own_close_lingers_so_the_code_arrives() {
    let server = TestServer::start().await;
    for round in 0..10 {
        for (state, want) in [(State::Fresh, 1008), (State::Bound, 1009)] {
            let mut c = client(&server, state, &format!("big{round}")).await;
            let frame = masked_frame(0x1, &vec![b'x'; 512 * 1024]);
            let write = c.tcp.write_all(&frame).await;
            assert!(
                write.is_ok(),
                "{state:?} round {round}: write failed: {write:?}"
            );
            let got = c.drain_until_close(STEP).await;
            assert_eq!(
                got.as_ref().map(|(code, _)| *code),
                Some(want),
                "{state:?} round {round}: the close code was lost ({got:?})"
            );
            // Our close answer ends it cleanly: EOF, not a reset.
            c.tcp
                .write_all(&masked_frame(0x8, &close_payload(want, b"")))
                .await
                .unwrap();
            let mut rest = Vec::new();
            let end = tokio::time::timeout(STEP, c.tcp.read_to_end(&mut rest))
                .await
                .expect("no EOF after the closing handshake");
            assert!(end.is_ok(), "{state:?} round {round}: {end:?}");
        }
    }
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("after", server.push_addr).await;
    tab.close().await;
}
