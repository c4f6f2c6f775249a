//! What a Pusher client sends: one JSON event per text frame, parsed into [`Inbound`] or
//! refused with a [`BadFrame`] the door answers as `pusher:error` (the connection stays).
//!
//! The frame is already bounded by `--max-message-bytes` when it gets here; serde_json
//! bounds nesting (128 levels), so a hostile frame costs at most one pass over its bytes.
//! Client events keep their `data` as the raw JSON slice of the frame, relayed as it is.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::channel::{Channel, Kind, NameError, kind_of};

/// Longest event name a client may send (the HTTP API's limit for names, too).
pub const MAX_EVENT_NAME: usize = 200;
/// Deepest nesting of a client event's `data`. serde_json checks the JSON but does not
/// bound the nesting of a value it only skips, and the other members' browsers parse it.
pub const MAX_DATA_DEPTH: usize = 64;

/// One parsed client frame.
#[derive(Debug, PartialEq)]
pub enum Inbound<'a> {
    /// `pusher:subscribe`.
    Subscribe(Subscribe),
    /// `pusher:unsubscribe`.
    Unsubscribe(Channel),
    /// `pusher:ping`: answer `pusher:pong`.
    Ping,
    /// `pusher:pong`: the client answered a ping.
    Pong,
    /// `pusher:signin`.
    Signin(Signin),
    /// A client event (`client-*`), to relay to the channel's other members.
    Client(ClientEvent<'a>),
}

/// A subscription request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The channel.
    pub channel: Channel,
    /// `KEY:SIG`, for signed channels (pusher-js sends `""` for public ones).
    pub auth: Option<String>,
    /// Presence: the app's `channel_data` JSON text, exactly as signed.
    pub channel_data: Option<String>,
}

/// A user signin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signin {
    /// `KEY:SIG` over `socket_id::user::user_data`.
    pub auth: String,
    /// The app's `user_data` JSON text, exactly as signed.
    pub user_data: String,
}

/// A client event.
#[derive(Debug)]
pub struct ClientEvent<'a> {
    /// The event name (`client-…`).
    pub event: Cow<'a, str>,
    /// The channel's name.
    pub channel: Cow<'a, str>,
    /// What the channel's prefix says.
    pub kind: Kind,
    /// `data` as the client wrote it (any JSON value), if any.
    pub data: Option<&'a RawValue>,
}

impl PartialEq for ClientEvent<'_> {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.event,
            &self.channel,
            self.kind,
            self.data.map(RawValue::get),
        ) == (
            &other.event,
            &other.channel,
            other.kind,
            other.data.map(RawValue::get),
        )
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadFrame {
    /// Not a JSON object with a string `event` (or a field twice).
    NotAnEvent,
    /// An event name the protocol does not define for clients (`pusher:foo`,
    /// `pusher_internal:*`, or a name without `client-`).
    UnknownEvent,
    /// `data` of a `pusher:` event is missing or not the object it must be.
    BadData(&'static str),
    /// The channel name is invalid.
    Channel(NameError),
    /// A client event name over [`MAX_EVENT_NAME`] bytes.
    EventNameTooLong,
    /// A client event's `data` nested deeper than [`MAX_DATA_DEPTH`].
    TooDeep,
}

impl std::fmt::Display for BadFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadFrame::NotAnEvent => f.write_str("Invalid message format"),
            BadFrame::UnknownEvent => f.write_str("Unknown event"),
            BadFrame::BadData(what) => write!(f, "Invalid data: {what}"),
            BadFrame::Channel(e) => e.fmt(f),
            BadFrame::EventNameTooLong => {
                write!(f, "Event name too long (max {MAX_EVENT_NAME} bytes)")
            }
            BadFrame::TooDeep => write!(f, "Event data nested too deep (max {MAX_DATA_DEPTH})"),
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct SubscribeData {
    channel: String,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    channel_data: Option<String>,
}

#[derive(Deserialize)]
struct UnsubscribeData {
    channel: String,
}

#[derive(Deserialize)]
struct SigninData {
    auth: String,
    user_data: String,
}

/// Parses one client frame.
pub fn parse(text: &str) -> Result<Inbound<'_>, BadFrame> {
    let env: Envelope = serde_json::from_str(text).map_err(|_| BadFrame::NotAnEvent)?;
    match &*env.event {
        "pusher:ping" => Ok(Inbound::Ping),
        "pusher:pong" => Ok(Inbound::Pong),
        "pusher:subscribe" => {
            let d: SubscribeData = data(env.data, "want {channel, auth?, channel_data?}")?;
            Ok(Inbound::Subscribe(Subscribe {
                channel: Channel::parse(&d.channel).map_err(BadFrame::Channel)?,
                auth: d.auth,
                channel_data: d.channel_data,
            }))
        }
        "pusher:unsubscribe" => {
            let d: UnsubscribeData = data(env.data, "want {channel}")?;
            Ok(Inbound::Unsubscribe(
                Channel::parse(&d.channel).map_err(BadFrame::Channel)?,
            ))
        }
        "pusher:signin" => {
            let d: SigninData = data(env.data, "want {auth, user_data}")?;
            Ok(Inbound::Signin(Signin {
                auth: d.auth,
                user_data: d.user_data,
            }))
        }
        name if name.starts_with("client-") => {
            if name.len() > MAX_EVENT_NAME {
                return Err(BadFrame::EventNameTooLong);
            }
            let channel = env.channel.ok_or(BadFrame::Channel(NameError::Empty))?;
            let kind = kind_of(&channel).map_err(BadFrame::Channel)?;
            if env.data.is_some_and(|d| depth(d.get()) > MAX_DATA_DEPTH) {
                return Err(BadFrame::TooDeep);
            }
            Ok(Inbound::Client(ClientEvent {
                event: env.event,
                channel,
                kind,
                data: env.data,
            }))
        }
        _ => Err(BadFrame::UnknownEvent),
    }
}

/// The deepest nesting of arrays and objects in `json` (valid JSON: brackets inside
/// strings are skipped).
fn depth(json: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0, false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// A `pusher:` event's `data`: the object pusher-js sends, or the same object
/// JSON-encoded in a string (the protocol document's own examples, which Reverb accepts).
fn data<T: serde::de::DeserializeOwned>(
    raw: Option<&RawValue>,
    want: &'static str,
) -> Result<T, BadFrame> {
    let raw = raw.ok_or(BadFrame::BadData(want))?.get();
    let parsed = if raw.starts_with('"') {
        serde_json::from_str::<String>(raw).and_then(|inner| serde_json::from_str(&inner))
    } else {
        serde_json::from_str(raw)
    };
    parsed.map_err(|_| BadFrame::BadData(want))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pusher::channel::Access;

    fn subscribe(text: &str) -> Subscribe {
        match parse(text) {
            Ok(Inbound::Subscribe(s)) => s,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn what_pusher_js_sends() {
        // Byte for byte what pusher-js 8.6.0 sends (Connection.send_event).
        let s = subscribe(r#"{"event":"pusher:subscribe","data":{"auth":"","channel":"orders"}}"#);
        assert_eq!((s.channel.name(), s.auth.as_deref()), ("orders", Some("")));
        let s = subscribe(
            r#"{"event":"pusher:subscribe","data":{"auth":"k:ab","channel_data":"{\"user_id\":1}","channel":"presence-room.1"}}"#,
        );
        assert_eq!(s.channel.kind().access, Access::Presence);
        assert_eq!(s.channel_data.as_deref(), Some(r#"{"user_id":1}"#));
        assert_eq!(
            parse(r#"{"event":"pusher:ping","data":{}}"#),
            Ok(Inbound::Ping)
        );
        assert_eq!(
            parse(r#"{"event":"pusher:pong","data":{}}"#),
            Ok(Inbound::Pong)
        );
        assert_eq!(parse(r#"{"event":"pusher:pong"}"#), Ok(Inbound::Pong));
        match parse(r#"{"event":"pusher:unsubscribe","data":{"channel":"private-x"}}"#) {
            Ok(Inbound::Unsubscribe(c)) => assert_eq!(c.name(), "private-x"),
            other => panic!("{other:?}"),
        }
        match parse(
            r#"{"event":"pusher:signin","data":{"auth":"k:s","user_data":"{\"id\":\"1\"}"}}"#,
        ) {
            Ok(Inbound::Signin(s)) => assert_eq!(
                (s.auth.as_str(), s.user_data.as_str()),
                ("k:s", r#"{"id":"1"}"#)
            ),
            other => panic!("{other:?}"),
        }
        let text = r#"{"event":"client-typing","data":{"name":"Ann"},"channel":"presence-room.1","user_id":"forged"}"#;
        match parse(text) {
            Ok(Inbound::Client(c)) => {
                assert_eq!(
                    (&*c.event, &*c.channel),
                    ("client-typing", "presence-room.1")
                );
                assert_eq!(c.kind.access, Access::Presence);
                assert_eq!(c.data.map(RawValue::get), Some(r#"{"name":"Ann"}"#));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn string_encoded_data_and_refusals() {
        let s = subscribe(
            r#"{"event":"pusher:subscribe","data":"{\"channel\":\"private-a\",\"auth\":\"k:s\"}"}"#,
        );
        assert_eq!(
            (s.channel.name(), s.auth.as_deref()),
            ("private-a", Some("k:s"))
        );
        let bad = |t: &str| parse(t).err();
        assert_eq!(bad(""), Some(BadFrame::NotAnEvent));
        assert_eq!(bad("[]"), Some(BadFrame::NotAnEvent));
        assert_eq!(bad(r#"{"event":1}"#), Some(BadFrame::NotAnEvent));
        assert_eq!(
            bad(r#"{"event":"pusher:ping","event":"pusher:ping"}"#),
            Some(BadFrame::NotAnEvent)
        );
        assert_eq!(
            bad(r#"{"event":"pusher:foo"}"#),
            Some(BadFrame::UnknownEvent)
        );
        assert_eq!(
            bad(r#"{"event":"pusher_internal:member_added"}"#),
            Some(BadFrame::UnknownEvent)
        );
        assert_eq!(
            bad(r#"{"event":"typing","channel":"private-a"}"#),
            Some(BadFrame::UnknownEvent)
        );
        assert!(matches!(
            bad(r#"{"event":"pusher:subscribe"}"#),
            Some(BadFrame::BadData(_))
        ));
        assert!(matches!(
            bad(r#"{"event":"pusher:subscribe","data":{"channel":1}}"#),
            Some(BadFrame::BadData(_))
        ));
        assert!(matches!(
            bad(r#"{"event":"pusher:subscribe","data":"{"}"#),
            Some(BadFrame::BadData(_))
        ));
        // channel_data must be the app's string, not an object (its signature is over bytes).
        let obj = r#"{"event":"pusher:subscribe","data":{"channel":"presence-a","channel_data":{"user_id":1}}}"#;
        assert!(matches!(bad(obj), Some(BadFrame::BadData(_))));
        assert_eq!(
            bad(r#"{"event":"pusher:subscribe","data":{"channel":"a b"}}"#),
            Some(BadFrame::Channel(NameError::BadCharacter))
        );
        assert_eq!(
            bad(r#"{"event":"client-x","data":{}}"#),
            Some(BadFrame::Channel(NameError::Empty))
        );
        let long = format!(
            r#"{{"event":"client-{}","channel":"private-a"}}"#,
            "x".repeat(194)
        );
        assert_eq!(bad(&long), Some(BadFrame::EventNameTooLong));
        let nested = |n: usize| {
            let data = format!("{}{}", "[".repeat(n), "]".repeat(n));
            format!(r#"{{"event":"client-x","channel":"private-a","data":{data}}}"#)
        };
        assert_eq!(bad(&nested(100_000)), Some(BadFrame::TooDeep));
        assert_eq!(bad(&nested(MAX_DATA_DEPTH + 1)), Some(BadFrame::TooDeep));
        assert_eq!(bad(&nested(MAX_DATA_DEPTH)), None);
        let brackets_in_strings = format!(
            r#"{{"event":"client-x","channel":"private-a","data":["{}\"{}"]}}"#,
            "[".repeat(99),
            "{".repeat(99)
        );
        assert_eq!(bad(&brackets_in_strings), None);
        assert_eq!(depth(r#"{"a":[1,{"b":"]]]"}],"c":{}}"#), 3);
        assert_eq!(BadFrame::NotAnEvent.to_string(), "Invalid message format");
    }
}
