//! What the server sends: each event is `{"event":…,"channel":…,"data":…}` with `data` a
//! JSON-encoded string (the protocol's "double encoding", which pusher-js decodes), and
//! the webhook bodies of the events the daemon reports to the app.
//!
//! Frames are written into one `String` with [`json_str`], the JSON string escaper, so a
//! channel event is formatted once and shared by every subscriber.

use serde_json::value::RawValue;

use super::channel::SocketId;
use super::codes::Refusal;

/// Appends `s` as a JSON string literal, byte for byte what `serde_json` writes (`\"`,
/// `\\`, the short escapes, `\u00XX` for other control characters, the rest as it is),
/// without its `Result` and intermediate `String`.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// `{"event":EVENT[,"channel":CHANNEL],"data":"<data as a JSON string>"}`; `data` is
/// the inner JSON (or any text, for an app's event).
fn frame(event: &str, channel: Option<&str>, data: &str) -> String {
    let mut out = String::with_capacity(32 + event.len() + data.len() * 11 / 10);
    out.push_str("{\"event\":");
    json_str(&mut out, event);
    if let Some(c) = channel {
        out.push_str(",\"channel\":");
        json_str(&mut out, c);
    }
    out.push_str(",\"data\":");
    json_str(&mut out, data);
    out.push('}');
    out
}

/// The first frame: the connection's `socket_id` and the seconds of silence after which
/// the client should ping (pusher-js refuses a handshake without one).
pub fn connection_established(socket_id: SocketId, activity_timeout_secs: u32) -> String {
    let inner = format!(
        "{{\"socket_id\":\"{socket_id}\",\"activity_timeout\":{}}}",
        activity_timeout_secs.max(1)
    );
    frame("pusher:connection_established", None, &inner)
}

/// `pusher:error` with a code and a message (the connection may stay or be closed).
pub fn error(refusal: &Refusal) -> String {
    let mut inner = format!("{{\"code\":{},\"message\":", refusal.code.number());
    json_str(&mut inner, &refusal.message);
    inner.push('}');
    frame("pusher:error", None, &inner)
}

/// What kind of subscription failure (`data.type` of `pusher:subscription_error`, which
/// Echo's `.error()` callbacks get).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionErrorType {
    /// A bad or missing signature: status 401.
    AuthError,
    /// A limit (channels per connection, name length): status 4009 as Soketi sends.
    LimitReached,
}

/// `pusher:subscription_error` on `channel`.
pub fn subscription_error(channel: &str, kind: SubscriptionErrorType, message: &str) -> String {
    let (type_, status) = match kind {
        SubscriptionErrorType::AuthError => ("AuthError", 401),
        SubscriptionErrorType::LimitReached => ("LimitReached", 4009),
    };
    let mut inner = format!("{{\"type\":\"{type_}\",\"error\":");
    json_str(&mut inner, message);
    inner.push_str(&format!(",\"status\":{status}}}"));
    frame("pusher:subscription_error", Some(channel), &inner)
}

/// `pusher_internal:subscription_succeeded` for a channel other than presence.
pub fn subscription_succeeded(channel: &str) -> String {
    frame(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        "{}",
    )
}

/// `pusher_internal:subscription_succeeded` for a presence channel: every member, once
/// per user (`ids`, `hash` of `user_info`, `count`). `members` yields `(user_id,
/// user_info raw JSON)`; a user listed twice is the caller's bug, and counted once here.
pub fn presence_succeeded<'m>(
    channel: &str,
    members: impl IntoIterator<Item = (&'m str, &'m str)>,
) -> String {
    let mut ids = String::from("[");
    let mut hash = String::from("{");
    let mut seen = std::collections::HashSet::new();
    for (id, info) in members {
        if !seen.insert(id) {
            continue;
        }
        if seen.len() > 1 {
            ids.push(',');
            hash.push(',');
        }
        json_str(&mut ids, id);
        json_str(&mut hash, id);
        hash.push(':');
        hash.push_str(raw_or_null(info));
    }
    ids.push(']');
    hash.push('}');
    let inner = format!(
        "{{\"presence\":{{\"count\":{},\"ids\":{ids},\"hash\":{hash}}}}}",
        seen.len()
    );
    frame(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        &inner,
    )
}

/// `user_info` as given if it is one JSON value, else `null` (it came from the app's
/// signed `channel_data`, so this only guards against a caller's mistake).
fn raw_or_null(info: &str) -> &str {
    if serde_json::from_str::<&RawValue>(info).is_ok() {
        info
    } else {
        "null"
    }
}

/// `pusher_internal:member_added`: a user's first connection joined the channel.
pub fn member_added(channel: &str, user_id: &str, user_info: &str) -> String {
    let mut inner = String::from("{\"user_id\":");
    json_str(&mut inner, user_id);
    inner.push_str(",\"user_info\":");
    inner.push_str(raw_or_null(user_info));
    inner.push('}');
    frame("pusher_internal:member_added", Some(channel), &inner)
}

/// `pusher_internal:member_removed`: a user's last connection left the channel.
pub fn member_removed(channel: &str, user_id: &str) -> String {
    let mut inner = String::from("{\"user_id\":");
    json_str(&mut inner, user_id);
    inner.push('}');
    frame("pusher_internal:member_removed", Some(channel), &inner)
}

/// `pusher_internal:subscription_count`: how many connections hold the channel.
pub fn subscription_count(channel: &str, count: u64) -> String {
    let inner = format!("{{\"subscription_count\":{count}}}");
    frame("pusher_internal:subscription_count", Some(channel), &inner)
}

/// `pusher:signin_success`, carrying the signed `user_data` back (pusher-js reads the
/// user's `id` from it and subscribes `#server-to-user-{id}`).
pub fn signin_success(user_data: &str) -> String {
    let mut inner = String::from("{\"user_data\":");
    json_str(&mut inner, user_data);
    inner.push('}');
    frame("pusher:signin_success", None, &inner)
}

/// `pusher:cache_miss`: a cache channel with nothing cached yet.
pub fn cache_miss(channel: &str) -> String {
    frame("pusher:cache_miss", Some(channel), "{}")
}

/// `pusher:pong`, the answer to a client's `pusher:ping`.
pub fn pong() -> String {
    frame("pusher:pong", None, "{}")
}

/// `pusher:ping`, after the activity timeout passed in silence.
pub fn ping() -> String {
    frame("pusher:ping", None, "{}")
}

/// An app's event on a channel (from the HTTP API): `data` is the string the app sent,
/// delivered as a string.
pub fn event(name: &str, channel: &str, data: &str) -> String {
    frame(name, Some(channel), data)
}

/// A client event relayed to the channel's other members: `data` as the sender wrote it,
/// and, on a presence channel, the sender's `user_id` (never the one a client claims).
pub fn client_event(
    name: &str,
    channel: &str,
    data: Option<&RawValue>,
    user_id: Option<&str>,
) -> String {
    let data = data.map_or("null", RawValue::get);
    let mut out = String::with_capacity(48 + name.len() + channel.len() + data.len());
    out.push_str("{\"event\":");
    json_str(&mut out, name);
    out.push_str(",\"channel\":");
    json_str(&mut out, channel);
    out.push_str(",\"data\":");
    out.push_str(data);
    if let Some(u) = user_id {
        out.push_str(",\"user_id\":");
        json_str(&mut out, u);
    }
    out.push('}');
    out
}

/// One event of a webhook body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent<'a> {
    /// The channel got its first subscriber (cluster-wide).
    ChannelOccupied {
        /// The channel.
        channel: &'a str,
    },
    /// The channel lost its last subscriber (cluster-wide).
    ChannelVacated {
        /// The channel.
        channel: &'a str,
    },
    /// A user's first connection joined a presence channel.
    MemberAdded {
        /// The channel.
        channel: &'a str,
        /// The user.
        user_id: &'a str,
    },
    /// A user's last connection left a presence channel.
    MemberRemoved {
        /// The channel.
        channel: &'a str,
        /// The user.
        user_id: &'a str,
    },
    /// A client event was sent (`data` as text: the client's string, or its JSON).
    ClientEvent {
        /// The channel.
        channel: &'a str,
        /// The event name.
        event: &'a str,
        /// The data as a string.
        data: &'a str,
        /// The sender's socket.
        socket_id: SocketId,
        /// The sender's user, on a presence channel.
        user_id: Option<&'a str>,
    },
    /// A cache channel was subscribed with nothing cached.
    CacheMiss {
        /// The channel.
        channel: &'a str,
    },
    /// The channel's subscriptions changed (cluster-wide): how many there are now.
    SubscriptionCount {
        /// The channel.
        channel: &'a str,
        /// Connections subscribed now.
        count: u64,
    },
}

impl WebhookEvent<'_> {
    /// Its `name` (and the name a webhook's `event_types` filter uses).
    pub fn name(&self) -> &'static str {
        match self {
            WebhookEvent::ChannelOccupied { .. } => "channel_occupied",
            WebhookEvent::ChannelVacated { .. } => "channel_vacated",
            WebhookEvent::MemberAdded { .. } => "member_added",
            WebhookEvent::MemberRemoved { .. } => "member_removed",
            WebhookEvent::ClientEvent { .. } => "client_event",
            WebhookEvent::CacheMiss { .. } => "cache_miss",
            WebhookEvent::SubscriptionCount { .. } => "subscription_count",
        }
    }

    /// One event of a webhook body: `{"name":…,"channel":…,…}`.
    pub fn to_json(&self) -> String {
        let (name, channel) = match self {
            WebhookEvent::ChannelOccupied { channel }
            | WebhookEvent::ChannelVacated { channel }
            | WebhookEvent::MemberAdded { channel, .. }
            | WebhookEvent::MemberRemoved { channel, .. }
            | WebhookEvent::ClientEvent { channel, .. }
            | WebhookEvent::CacheMiss { channel }
            | WebhookEvent::SubscriptionCount { channel, .. } => (self.name(), channel),
        };
        let mut out = String::with_capacity(48 + channel.len());
        out.push_str("{\"name\":\"");
        out.push_str(name);
        out.push_str("\",\"channel\":");
        json_str(&mut out, channel);
        match self {
            WebhookEvent::MemberAdded { user_id, .. }
            | WebhookEvent::MemberRemoved { user_id, .. } => {
                out.push_str(",\"user_id\":");
                json_str(&mut out, user_id);
            }
            WebhookEvent::ClientEvent {
                event,
                data,
                socket_id,
                user_id,
                ..
            } => {
                out.push_str(",\"event\":");
                json_str(&mut out, event);
                out.push_str(",\"data\":");
                json_str(&mut out, data);
                out.push_str(&format!(",\"socket_id\":\"{socket_id}\""));
                if let Some(u) = user_id {
                    out.push_str(",\"user_id\":");
                    json_str(&mut out, u);
                }
            }
            WebhookEvent::SubscriptionCount { count, .. } => {
                out.push_str(&format!(",\"subscription_count\":{count}"));
            }
            _ => {}
        }
        out.push('}');
        out
    }
}

/// A webhook body: `{"time_ms":…,"events":[…]}`. Sign it with
/// [`super::Keys::webhook_signature`] and send both `X-Pusher-Key` and
/// `X-Pusher-Signature` (pusher-http-python refuses a `time_ms` more than 5 minutes old).
pub fn webhook_body(time_ms: u64, events: &[WebhookEvent<'_>]) -> String {
    let mut out = format!("{{\"time_ms\":{time_ms},\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&e.to_json());
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pusher::codes::Code;
    use serde_json::{Value, json};

    /// The frame as JSON, with `data` decoded once more when it is a string.
    fn decode(frame: &str) -> (Value, Value) {
        let v: Value = serde_json::from_str(frame).unwrap_or_else(|e| panic!("{frame}: {e}"));
        let data = match &v["data"] {
            Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
            other => other.clone(),
        };
        (v, data)
    }

    #[test]
    fn escaping_matches_serde_json() {
        for s in [
            "",
            "plain",
            "q\"b\\s/",
            "\n\r\t\u{0}\u{1f}\u{7f}",
            "é€😀\u{2028}",
            "App\\Events\\X",
        ] {
            let mut out = String::new();
            json_str(&mut out, s);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
            assert_eq!(
                out,
                serde_json::to_string(s).unwrap(),
                "same bytes as serde_json"
            );
        }
    }

    #[test]
    fn frames_pusher_js_reads() {
        let sid = SocketId {
            high: 123,
            low: 456,
        };
        assert_eq!(
            connection_established(sid, 30),
            r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"123.456\",\"activity_timeout\":30}"}"#
        );
        let (_, d) = decode(&connection_established(sid, 0));
        assert_eq!(d["activity_timeout"], 1, "pusher-js refuses a zero timeout");
        assert_eq!(
            subscription_succeeded("orders"),
            r#"{"event":"pusher_internal:subscription_succeeded","channel":"orders","data":"{}"}"#
        );
        let (v, d) = decode(&error(&Refusal::of(Code::Unauthorized)));
        assert_eq!(
            (v["event"].as_str(), d),
            (
                Some("pusher:error"),
                json!({"code":4009,"message":"Connection is unauthorized"})
            )
        );
        let (v, d) = decode(&subscription_error(
            "private-x",
            SubscriptionErrorType::AuthError,
            "invalid signature",
        ));
        assert_eq!(v["channel"], "private-x");
        assert_eq!(
            d,
            json!({"type":"AuthError","error":"invalid signature","status":401})
        );
        let (_, d) = decode(&presence_succeeded(
            "presence-r",
            [
                ("1", r#"{"name":"Ann"}"#),
                ("2", "null"),
                ("1", "{}"),
                ("3", "not json"),
            ],
        ));
        assert_eq!(
            d,
            json!({"presence":{"count":3,"ids":["1","2","3"],"hash":{"1":{"name":"Ann"},"2":null,"3":null}}})
        );
        let (_, d) = decode(&presence_succeeded("presence-r", []));
        assert_eq!(d, json!({"presence":{"count":0,"ids":[],"hash":{}}}));
        let (_, d) = decode(&member_added("presence-r", "7", r#"{"n":1}"#));
        assert_eq!(d, json!({"user_id":"7","user_info":{"n":1}}));
        let (_, d) = decode(&member_removed("presence-r", "7"));
        assert_eq!(d, json!({"user_id":"7"}));
        let (_, d) = decode(&subscription_count("c", 19_000));
        assert_eq!(d, json!({"subscription_count":19000}));
        let (_, d) = decode(&signin_success(r#"{"id":"ann"}"#));
        assert_eq!(d, json!({"user_data":"{\"id\":\"ann\"}"}));
        assert_eq!(decode(&cache_miss("cache-x")).0["channel"], "cache-x");
        assert_eq!(pong(), r#"{"event":"pusher:pong","data":"{}"}"#);
        assert_eq!(ping(), r#"{"event":"pusher:ping","data":"{}"}"#);
        // Laravel's event names carry backslashes; its data is a JSON string.
        let e = event(
            r"App\Events\OrderShipped",
            "private-orders.5",
            r#"{"order":{"id":5}}"#,
        );
        assert_eq!(
            e,
            r#"{"event":"App\\Events\\OrderShipped","channel":"private-orders.5","data":"{\"order\":{\"id\":5}}"}"#
        );
        let raw: &RawValue = serde_json::from_str(r#"{"typing":true}"#).unwrap();
        assert_eq!(
            client_event("client-t", "presence-r", Some(raw), Some("7")),
            r#"{"event":"client-t","channel":"presence-r","data":{"typing":true},"user_id":"7"}"#
        );
        assert_eq!(
            client_event("client-t", "private-r", None, None),
            r#"{"event":"client-t","channel":"private-r","data":null}"#
        );
    }

    #[test]
    fn webhook_bodies() {
        let body = webhook_body(
            1_700_000_000_123,
            &[
                WebhookEvent::ChannelOccupied { channel: "c" },
                WebhookEvent::ChannelVacated { channel: "c" },
                WebhookEvent::MemberAdded {
                    channel: "presence-r",
                    user_id: "1",
                },
                WebhookEvent::MemberRemoved {
                    channel: "presence-r",
                    user_id: "1",
                },
                WebhookEvent::ClientEvent {
                    channel: "private-r",
                    event: "client-t",
                    data: r#"{"a":"\""}"#,
                    socket_id: SocketId { high: 1, low: 2 },
                    user_id: None,
                },
                WebhookEvent::CacheMiss { channel: "cache-x" },
                WebhookEvent::SubscriptionCount {
                    channel: "c",
                    count: 3,
                },
            ],
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            json!({"time_ms":1_700_000_000_123u64,"events":[
                {"name":"channel_occupied","channel":"c"},
                {"name":"channel_vacated","channel":"c"},
                {"name":"member_added","channel":"presence-r","user_id":"1"},
                {"name":"member_removed","channel":"presence-r","user_id":"1"},
                {"name":"client_event","channel":"private-r","event":"client-t","data":"{\"a\":\"\\\"\"}","socket_id":"1.2"},
                {"name":"cache_miss","channel":"cache-x"},
                {"name":"subscription_count","channel":"c","subscription_count":3}
            ]})
        );
    }
}
