//! One event: what happened, on which node, when, and its place in its subject's order;
//! and its JSON, the same line on the `/events` stream and in a webhook's `events` array
//! (docs/events.md, "The events").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

use crate::wire::Uid;

/// The kinds of event, in the order of [`Kind::ALL`] (their bits in a
/// [`Kinds`](super::Kinds) filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A uid got its first connection anywhere (after the debounce, in cluster mode).
    Online,
    /// A uid's last connection anywhere is gone and none came back within the debounce.
    Offline,
    /// A browser connection was accepted (before its uid is known).
    Connect,
    /// A connection bound its uid.
    Bind,
    /// A connection ended: its close code, and its uid if it had bound one.
    Close,
    /// A group got its first member.
    GroupOccupied,
    /// A group lost its last member.
    GroupVacated,
    /// A frame a bound browser sent (opted in per listener: never by default).
    Message,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 8] = [
        Kind::Online,
        Kind::Offline,
        Kind::Connect,
        Kind::Bind,
        Kind::Close,
        Kind::GroupOccupied,
        Kind::GroupVacated,
        Kind::Message,
    ];

    /// Its `type` in the JSON, and its name in a filter.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Online => "online",
            Kind::Offline => "offline",
            Kind::Connect => "connect",
            Kind::Bind => "bind",
            Kind::Close => "close",
            Kind::GroupOccupied => "group_occupied",
            Kind::GroupVacated => "group_vacated",
            Kind::Message => "message",
        }
    }

    /// The kind a filter names, if any.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// What happened, with the subject it happened to.
///
/// Connections are named by `conn`, unique in the cluster (the node's id and its own
/// number for the connection), so a receiver can join a `connect` to its `close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// See [`Kind::Online`].
    Online {
        /// Who.
        uid: Uid,
    },
    /// See [`Kind::Offline`].
    Offline {
        /// Who.
        uid: Uid,
    },
    /// See [`Kind::Connect`].
    Connect {
        /// The connection.
        conn: Arc<str>,
        /// Its `client_id`, where the GatewayClient door gave it one (a greeted page).
        client_id: Option<Arc<str>>,
    },
    /// See [`Kind::Bind`].
    Bind {
        /// The connection.
        conn: Arc<str>,
        /// The uid it bound.
        uid: Uid,
        /// Its `client_id`, where the GatewayClient door gave it one (a greeted page).
        client_id: Option<Arc<str>>,
    },
    /// See [`Kind::Close`].
    Close {
        /// The connection.
        conn: Arc<str>,
        /// Its uid, if it had bound one.
        uid: Option<Uid>,
        /// The WebSocket close code (docs/browsers.md, "Close codes"); 1006 when the
        /// connection dropped without a close frame.
        code: u16,
        /// The close reason, if there was one.
        reason: Option<Arc<str>>,
        /// The connection's `client_id`, where the GatewayClient door gave it one.
        client_id: Option<Arc<str>>,
    },
    /// See [`Kind::GroupOccupied`].
    GroupOccupied {
        /// Which group.
        group: Arc<str>,
    },
    /// See [`Kind::GroupVacated`].
    GroupVacated {
        /// Which group.
        group: Arc<str>,
    },
    /// See [`Kind::Message`].
    Message {
        /// The connection that sent it.
        conn: Arc<str>,
        /// Its uid.
        uid: Uid,
        /// The frame's text, as sent.
        data: Arc<str>,
    },
}

impl What {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            What::Online { .. } => Kind::Online,
            What::Offline { .. } => Kind::Offline,
            What::Connect { .. } => Kind::Connect,
            What::Bind { .. } => Kind::Bind,
            What::Close { .. } => Kind::Close,
            What::GroupOccupied { .. } => Kind::GroupOccupied,
            What::GroupVacated { .. } => Kind::GroupVacated,
            What::Message { .. } => Kind::Message,
        }
    }
}

/// An event as published: what, where, when, and its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub what: What,
    /// The node it happened on (the one that emitted it).
    pub node: Arc<str>,
    /// When, in milliseconds since the Unix epoch (the emitting node's clock).
    pub time_ms: u64,
    /// Its place in its subject's order: per connection for `connect`, `bind`, `message`
    /// and `close` (1, 2, 3... from `connect`); per uid for `online`/`offline` and per
    /// group for the group events (a [`Clock`] value: increasing for the subject across
    /// nodes and restarts). A receiver keeps the last one per subject and ignores any
    /// event that is not above it (a duplicate, or one overtaken by a later one).
    pub seq: u64,
}

/// The JSON of an event: one flat object, `type` first, absent fields left out.
#[derive(Serialize)]
struct Wire<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: u64,
    node: &'a str,
    time_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    conn: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a str>,
}

impl Event {
    /// Its JSON object, without a newline (a stream line adds one, a webhook batch puts
    /// it in an array).
    pub fn to_json(&self) -> Vec<u8> {
        let mut w = Wire {
            kind: self.what.kind().name(),
            seq: self.seq,
            node: &self.node,
            time_ms: self.time_ms,
            conn: None,
            uid: None,
            group: None,
            code: None,
            reason: None,
            client_id: None,
            data: None,
        };
        match &self.what {
            What::Online { uid } | What::Offline { uid } => w.uid = Some(uid),
            What::Connect { conn, client_id } => {
                w.conn = Some(conn);
                w.client_id = client_id.as_deref();
            }
            What::Bind {
                conn,
                uid,
                client_id,
            } => {
                (w.conn, w.uid) = (Some(&**conn), Some(&**uid));
                w.client_id = client_id.as_deref();
            }
            What::Close {
                conn,
                uid,
                code,
                reason,
                client_id,
            } => {
                w.conn = Some(conn);
                w.uid = uid.as_deref();
                w.code = Some(*code);
                w.reason = reason.as_deref();
                w.client_id = client_id.as_deref();
            }
            What::GroupOccupied { group } | What::GroupVacated { group } => w.group = Some(group),
            What::Message { conn, uid, data } => {
                (w.conn, w.uid, w.data) = (Some(&**conn), Some(&**uid), Some(&**data));
            }
        }
        // Serializing strings and numbers into memory cannot fail.
        serde_json::to_vec(&w).unwrap_or_default()
    }
}

/// An event encoded once, shared by every listener it goes to (a refcount bump each).
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Its kind, for the listeners' filters.
    pub kind: Kind,
    /// Its JSON object ([`Event::to_json`]).
    pub json: Bytes,
}

impl Encoded {
    /// Encodes `event`.
    pub fn new(event: &Event) -> Encoded {
        Encoded {
            kind: event.what.kind(),
            json: Bytes::from(event.to_json()),
        }
    }
}

/// A node's source of sequence numbers for subjects that outlive a connection (uids,
/// groups): microseconds since the Unix epoch, but always above the last one given out.
///
/// Why time rather than a counter: a counter starts again at 1 when the node restarts, and
/// a receiver that kept the last number per uid would then ignore every later event of
/// that uid. A value taken from the clock keeps increasing across restarts (unless the
/// clock steps back further than the restart took), and it is unique on the node even when
/// two events fall in one microsecond. Cluster mode computes the same rule in Redis, with
/// Redis's clock, per uid (phase B).
#[derive(Debug, Default)]
pub struct Clock {
    last: AtomicU64,
}

impl Clock {
    /// The next number: `max(last + 1, now in µs)`.
    pub fn next(&self) -> u64 {
        self.next_at(unix_micros())
    }

    /// The next number, with the time given (for tests).
    pub fn next_at(&self, now_us: u64) -> u64 {
        let step = |last: u64| last.saturating_add(1).max(now_us);
        // `fetch_update` retries on contention; the closure always returns `Some`.
        let last = self
            .last
            .fetch_update(Relaxed, Relaxed, |last| Some(step(last)))
            .unwrap_or_else(|last| last);
        step(last)
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(what: What, seq: u64) -> String {
        let e = Event {
            what,
            node: "n1".into(),
            time_ms: 1_700_000_000_123,
            seq,
        };
        String::from_utf8(e.to_json()).unwrap()
    }

    #[test]
    fn one_flat_object_per_event() {
        assert_eq!(
            event(
                What::Online {
                    uid: "alice".into()
                },
                7
            ),
            r#"{"type":"online","seq":7,"node":"n1","time_ms":1700000000123,"uid":"alice"}"#
        );
        assert_eq!(
            event(
                What::Connect {
                    conn: "n1-4".into(),
                    client_id: None,
                },
                1
            ),
            r#"{"type":"connect","seq":1,"node":"n1","time_ms":1700000000123,"conn":"n1-4"}"#
        );
        assert_eq!(
            event(
                What::Close {
                    conn: "n1-4".into(),
                    uid: Some("a\"b\n".into()),
                    code: 1001,
                    reason: Some("going away".into()),
                    client_id: Some("7f0000010af000000001".into()),
                },
                4
            ),
            r#"{"type":"close","seq":4,"node":"n1","time_ms":1700000000123,"conn":"n1-4","uid":"a\"b\n","code":1001,"reason":"going away","client_id":"7f0000010af000000001"}"#
        );
        // A close before any bind has no uid; no reason, no client_id: left out.
        assert_eq!(
            event(
                What::Close {
                    conn: "n1-5".into(),
                    uid: None,
                    code: 1006,
                    reason: None,
                    client_id: None,
                },
                2
            ),
            r#"{"type":"close","seq":2,"node":"n1","time_ms":1700000000123,"conn":"n1-5","code":1006}"#
        );
        assert_eq!(
            event(
                What::Message {
                    conn: "n1-4".into(),
                    uid: "alice".into(),
                    data: r#"{"type":"say","text":"hé"}"#.into(),
                },
                3
            ),
            r#"{"type":"message","seq":3,"node":"n1","time_ms":1700000000123,"conn":"n1-4","uid":"alice","data":"{\"type\":\"say\",\"text\":\"hé\"}"}"#
        );
        assert_eq!(
            event(
                What::GroupVacated {
                    group: "room1".into()
                },
                9
            ),
            r#"{"type":"group_vacated","seq":9,"node":"n1","time_ms":1700000000123,"group":"room1"}"#
        );
    }

    #[test]
    fn kinds_by_name() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
        assert_eq!(Kind::from_name("Online"), None);
        assert_eq!(Kind::from_name(""), None);
    }

    #[test]
    fn the_clock_never_repeats_nor_goes_back() {
        let c = Clock::default();
        assert_eq!(c.next_at(1000), 1000);
        // Two events in one microsecond, then the clock stepping back: still increasing.
        assert_eq!(c.next_at(1000), 1001);
        assert_eq!(c.next_at(500), 1002);
        // Time moving on is taken as it is.
        assert_eq!(c.next_at(5000), 5000);
        // A real clock is far above a counter's values.
        assert!(Clock::default().next() > 1_600_000_000_000_000);
    }

    #[test]
    fn the_clock_is_unique_across_threads() {
        let c = Arc::new(Clock::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..10_000).map(|_| c.next()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = Vec::new();
        for t in threads {
            let mine = t.join().unwrap();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "increasing per thread"
            );
            all.extend(mine);
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "no number given out twice");
    }
}
