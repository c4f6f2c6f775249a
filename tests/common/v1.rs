//! A protocol v1 browser (`docs/protocol.md`): `?pushwire=1[&since=EPOCH:SEQ]`, the uid as the
//! first frame, then a status frame and enveloped messages. Parsing here is strict: a
//! frame that is not what the protocol says fails the test.

use std::net::SocketAddr;
use std::time::Duration;

use super::{STEP, WsClient, WsEvent};
use tokio::time::timeout;

/// The first frame of a v1 session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `new`, `recovered` or `not_recovered`.
    pub kind: String,
    /// The epoch (16 hex digits).
    pub epoch: String,
    /// The base: every message that follows has a sequence above it.
    pub seq: u64,
}

impl Status {
    /// `EPOCH:SEQ`, to resume from.
    pub fn point(&self) -> String {
        format!("{}:{}", self.epoch, self.seq)
    }
}

/// What a v1 client read next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V1Event {
    /// `m SEQ PAYLOAD`.
    Msg(u64, String),
    /// `b PAYLOAD`.
    Broadcast(String),
    /// A close frame.
    Close(u16, String),
    /// The stream ended.
    End,
}

/// A v1 tab.
pub struct V1Client {
    pub tab: WsClient,
    pub status: Status,
}

/// Parses `s KIND EPOCH:SEQ`.
pub fn parse_status(text: &str) -> Status {
    let parts: Vec<&str> = text.split(' ').collect();
    assert!(
        parts.len() == 3 && parts[0] == "s",
        "not a status frame: {text:?}"
    );
    let (epoch, seq) = parts[2].split_once(':').expect("EPOCH:SEQ");
    assert_eq!(epoch.len(), 16, "epoch {epoch:?}");
    Status {
        kind: parts[1].to_owned(),
        epoch: epoch.to_owned(),
        seq: seq.parse().expect("status seq"),
    }
}

/// Parses an enveloped frame.
pub fn parse_frame(text: &str) -> V1Event {
    if let Some(rest) = text.strip_prefix("m ") {
        let (seq, payload) = rest.split_once(' ').expect("m SEQ PAYLOAD");
        return V1Event::Msg(seq.parse().expect("seq"), payload.to_owned());
    }
    if let Some(payload) = text.strip_prefix("b ") {
        return V1Event::Broadcast(payload.to_owned());
    }
    panic!("not a v1 message frame: {text:?}");
}

impl V1Client {
    /// Connects with `?pushwire=1` (and `since`), sends `uid`, reads the status frame: once it
    /// is here the tab is bound.
    pub async fn connect(ws_addr: SocketAddr, uid: &str, since: Option<&str>) -> V1Client {
        V1Client::try_connect(ws_addr, uid, since)
            .await
            .unwrap_or_else(|close| panic!("expected a status frame, got a close {close:?}"))
    }

    /// Like [`V1Client::connect`], but a bind the server refuses is its close code and
    /// reason.
    pub async fn try_connect(
        ws_addr: SocketAddr,
        uid: &str,
        since: Option<&str>,
    ) -> Result<V1Client, (u16, String)> {
        let url = match since {
            Some(p) => format!("ws://{ws_addr}/?pushwire=1&since={p}"),
            None => format!("ws://{ws_addr}/?pushwire=1"),
        };
        let mut tab = WsClient::connect(&url).await;
        tab.send_text(uid).await;
        match timeout(STEP, tab.next_event()).await {
            Ok(WsEvent::Text(t)) => Ok(V1Client {
                tab,
                status: parse_status(&t),
            }),
            Ok(WsEvent::Close(code, reason)) => Err((code, reason)),
            other => panic!("expected a status frame or a close, got {other:?}"),
        }
    }

    /// The next frame (5 s deadline).
    pub async fn next(&mut self) -> V1Event {
        self.next_within(STEP).await
    }

    /// The next frame within `d`.
    pub async fn next_within(&mut self, d: Duration) -> V1Event {
        self.next_of(d, false).await
    }

    /// The next frame within `d`; a reset connection is [`V1Event::End`].
    pub async fn next_or_reset(&mut self, d: Duration) -> V1Event {
        self.next_of(d, true).await
    }

    async fn next_of(&mut self, d: Duration, reset_ends: bool) -> V1Event {
        let next = async {
            if reset_ends {
                self.tab.next_event_or_reset().await
            } else {
                self.tab.next_event().await
            }
        };
        match timeout(d, next).await {
            Err(_) => panic!("no v1 frame within {d:?}"),
            Ok(WsEvent::Text(t)) => parse_frame(&t),
            Ok(WsEvent::Close(code, reason)) => V1Event::Close(code, reason),
            Ok(WsEvent::End) => V1Event::End,
        }
    }

    /// The next frame must be message `seq` with `payload`.
    pub async fn expect_msg(&mut self, seq: u64, payload: &str) {
        assert_eq!(self.next().await, V1Event::Msg(seq, payload.to_owned()));
    }

    /// Sends `a SEQ`.
    pub async fn ack(&mut self, seq: u64) {
        self.tab.send_text(&format!("a {seq}")).await;
    }
}
