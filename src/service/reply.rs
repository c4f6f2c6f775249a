//! Typed replies: what each request answers, and its one-line encoding. Byte for byte what
//! the push port has always sent: `ok` / `fail` for plain lines (the seed's protocol),
//! `pong`, and one JSON object per command with its keys in a fixed order.

use bytes::BytesMut;
use serde::Serialize;

/// One reply line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A plain push line reached at least one live connection.
    Ok,
    /// A plain push line reached nobody or was malformed.
    Fail,
    /// `/ping`.
    Pong,
    /// `/auth` accepted (or sent on an open connection).
    Authorized,
    /// Any JSON reply of a command.
    Json(Json),
}

/// The JSON replies, one struct each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Json {
    /// `{"ok":false,"error":...}`.
    Error(ErrorReply),
    /// `/send`.
    Send(SendReply),
    /// `/push ID LINE`.
    Push(PushReply),
    /// `/group`.
    Group(GroupReply),
    /// `/broadcast`.
    Broadcast(BroadcastReply),
    /// `/join`.
    Join(JoinReply),
    /// `/leave`.
    Leave(LeaveReply),
    /// `/online`.
    Online(OnlineReply),
    /// `/count`.
    Count(CountReply),
    /// `/members`.
    Members(MembersReply),
    /// `/uids`.
    Uids(UidsReply),
    /// `/kick`.
    Kick(KickReply),
    /// `/stats`.
    Stats(StatsReply),
}

#[allow(missing_docs)]
mod fields {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    pub struct ErrorReply {
        pub ok: bool,
        pub error: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    pub struct SendReply {
        pub ok: bool,
        pub uids: usize,
        pub reached: usize,
        pub connections: usize,
        pub refused: usize,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    pub struct PushReply {
        pub ok: bool,
        pub result: PushResult,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub error: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub connections: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub refused: Option<usize>,
        /// Protocol v1 (options given, or a duplicate): absent otherwise, so a plain
        /// `/push` answers as it always did.
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        pub tracking: Option<Tracking>,
        pub id: String,
    }

    /// What a `/push` with options (or a duplicate) adds to its reply.
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
    pub struct Tracking {
        /// For `duplicate`: the first's result.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub first: Option<PushResult>,
        /// For `ack=`: tabs that had acknowledged it when the reply was made.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub acks: Option<usize>,
        /// Its sequence number in the uid's history.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub seq: Option<u64>,
        /// That history's epoch (16 hex digits).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub epoch: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    pub struct GroupReply {
        pub ok: bool,
        pub group: String,
        pub members: usize,
        pub reached: usize,
        pub connections: usize,
        pub refused: usize,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    pub struct BroadcastReply {
        pub ok: bool,
        pub connections: usize,
        pub refused: usize,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    pub struct JoinReply {
        pub ok: bool,
        pub group: String,
        pub added: usize,
        pub members: usize,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    pub struct LeaveReply {
        pub ok: bool,
        pub group: String,
        pub removed: usize,
        pub members: usize,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    pub struct OnlineReply {
        pub ok: bool,
        pub uid: String,
        pub online: bool,
        pub connections: usize,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    pub struct CountReply {
        pub ok: bool,
        pub uids: usize,
        pub connections: usize,
        pub groups: usize,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    pub struct MembersReply {
        pub ok: bool,
        pub group: String,
        pub count: usize,
        pub uids: Vec<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    pub struct UidsReply {
        pub ok: bool,
        pub count: usize,
        pub uids: Vec<String>,
        pub next: Option<usize>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    pub struct KickReply {
        pub ok: bool,
        pub uids: usize,
        pub connections: usize,
    }
}

pub use fields::*;

/// What happened to a `/push`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PushResult {
    /// At least one connection of the uid queued it.
    Delivered,
    /// The uid has no connection.
    Offline,
    /// Every connection of the uid refused it (full queue).
    Refused,
    /// The line was not a valid push.
    Malformed,
    /// Cluster mode: some node that got it did not answer in time (the counts are
    /// those that did).
    Partial,
    /// Cluster mode: Redis could not be reached, and no connection here took it.
    Unavailable,
    /// `ttl=`: nobody took it; kept in the uid's offline queue.
    Queued,
    /// `ack=`: a tab acknowledged it within the wait.
    Acked,
    /// `ack=`: no tab acknowledged it within the wait.
    #[serde(rename = "not_acked")]
    NotAcked,
    /// A retry of an accepted `/push` (same ID and line) within the window: not run.
    Duplicate,
    /// In `first` of a duplicate: the first is still running.
    Pending,
}

/// `/stats`: `"ok":true`, then the metric table's keys in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsReply(pub Vec<(&'static str, u64)>);

impl Serialize for StatsReply {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len() + 1))?;
        map.serialize_entry("ok", &true)?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Reply {
    /// `{"ok":false,"error":why}`.
    pub fn error(why: impl std::fmt::Display) -> Reply {
        Reply::Json(Json::Error(ErrorReply {
            ok: false,
            error: why.to_string(),
        }))
    }

    /// Appends the reply line, `\n` included.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Reply::Ok => out.extend_from_slice(b"ok\n"),
            Reply::Fail => out.extend_from_slice(b"fail\n"),
            Reply::Pong => out.extend_from_slice(b"pong\n"),
            Reply::Authorized => out.extend_from_slice(b"{\"ok\":true}\n"),
            Reply::Json(json) => {
                let mut w = bytes::BufMut::writer(&mut *out);
                // Serializing these types into memory cannot fail.
                let _ = serde_json::to_writer(&mut w, json);
                out.extend_from_slice(b"\n");
            }
        }
    }

    /// The reply line without its `\n` (for tests and the HTTP door's single answers).
    pub fn line(&self) -> String {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.truncate(out.len() - 1);
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_byte_exact() {
        assert_eq!(Reply::Ok.line(), "ok");
        assert_eq!(Reply::Authorized.line(), r#"{"ok":true}"#);
        assert_eq!(
            Reply::error("bad \"x\"").line(),
            r#"{"ok":false,"error":"bad \"x\""}"#
        );
        let push = Reply::Json(Json::Push(PushReply {
            ok: false,
            result: PushResult::Malformed,
            error: Some("e".into()),
            connections: None,
            refused: None,
            tracking: None,
            id: "7".into(),
        }));
        assert_eq!(
            push.line(),
            r#"{"ok":false,"result":"malformed","error":"e","id":"7"}"#
        );
        let acked = Reply::Json(Json::Push(PushReply {
            ok: true,
            result: PushResult::NotAcked,
            error: None,
            connections: Some(1),
            refused: Some(0),
            tracking: Some(Tracking {
                acks: Some(0),
                seq: Some(4),
                epoch: Some("00000000000000ff".into()),
                ..Tracking::default()
            }),
            id: "8".into(),
        }));
        assert_eq!(
            acked.line(),
            r#"{"ok":true,"result":"not_acked","connections":1,"refused":0,"acks":0,"seq":4,"epoch":"00000000000000ff","id":"8"}"#
        );
        let stats = Reply::Json(Json::Stats(StatsReply(vec![("uptime_secs", 3), ("a", 1)])));
        assert_eq!(stats.line(), r#"{"ok":true,"uptime_secs":3,"a":1}"#);
    }
}
