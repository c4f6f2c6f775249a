//! Commands on the push port: routing (several uids, groups, broadcast), presence, kick,
//! stats, ping.
//!
//! # Grammar
//! A line whose first byte is `/` is a command; anything else is a push, exactly as in the
//! seed. JSON text never starts with `/`, so no push can be taken for a command and no
//! command for a push, whatever fields the application's JSON carries.
//!
//! ```text
//! /verb ARG... [PAYLOAD]
//! ```
//! An ARG is a bare word (no spaces; cannot start with `"` or `[`) or one JSON value: a
//! string (`"a b"`) or, where a list of uids is allowed, an array (`["u1","u2",3]`).
//! PAYLOAD is the rest of the line, verbatim, after the spaces that follow the last ARG.
//! Replies are one line: `pong` for `/ping`, otherwise one JSON object with `"ok"`; a
//! malformed command gets `{"ok":false,"error":"..."}`.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::config::Config;
use crate::logsafe::escaped;
use crate::protocol::CloseNotice;
use crate::registry::{Registry, Uid};

/// Largest page `/uids` returns, whatever the caller asks for.
pub const MAX_UIDS_PAGE: usize = 10_000;
/// Page size of `/uids` without a LIMIT.
pub const DEFAULT_UIDS_PAGE: usize = 1000;
/// Longest `/push` ID, in bytes: it is echoed in the reply.
pub const MAX_ID_BYTES: usize = 256;

/// What one command's arguments may hold. Every name a reply echoes is bounded here, so
/// no reply is longer than the limits allow, whatever the line held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Distinct uids one TARGETS may name (`--max-list-uids`).
    pub max_list_uids: usize,
    /// Longest uid a backend may name, in bytes (`--max-uid-bytes`, the same limit
    /// browsers bind under, so a longer uid could never be online).
    pub max_uid_bytes: usize,
    /// Longest group name, in bytes (`--max-group-bytes`).
    pub max_group_bytes: usize,
}

impl From<&Config> for Limits {
    fn from(config: &Config) -> Self {
        Limits {
            max_list_uids: config.max_list_uids,
            max_uid_bytes: config.max_uid_bytes,
            max_group_bytes: config.max_group_bytes,
        }
    }
}

impl Default for Limits {
    /// The limits of [`Config::default`].
    fn default() -> Self {
        Limits::from(&Config::default())
    }
}

/// One parsed command. Payloads are byte offsets into the line, so nothing is copied.
/// (Fields are named after the grammar's placeholders in each variant's doc.)
#[allow(missing_docs)]
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `/ping` → `pong`.
    Ping,
    /// `/send TARGETS PAYLOAD`: PAYLOAD to every connection of every listed uid.
    Send { uids: Vec<Uid>, payload: usize },
    /// `/push ID LINE`: a plain push line, answered with its detailed outcome and ID.
    Push { id: Cow<'a, str>, line: usize },
    /// `/group GROUP PAYLOAD`: PAYLOAD to every connection of every member.
    Group { group: Cow<'a, str>, payload: usize },
    /// `/broadcast PAYLOAD`: PAYLOAD to every bound connection.
    Broadcast { payload: usize },
    /// `/join GROUP TARGETS`.
    Join { group: Cow<'a, str>, uids: Vec<Uid> },
    /// `/leave GROUP TARGETS`.
    Leave { group: Cow<'a, str>, uids: Vec<Uid> },
    /// `/online UID`: is it online, with how many connections.
    Online { uid: Cow<'a, str> },
    /// `/count`: online uids, connections, groups.
    Count,
    /// `/members GROUP`.
    Members { group: Cow<'a, str> },
    /// `/uids [CURSOR [LIMIT]]`: one page of online uids.
    Uids { cursor: usize, limit: usize },
    /// `/kick TARGETS [REASON]`: close every connection of the uids (4001).
    Kick {
        uids: Vec<Uid>,
        reason: Option<&'a str>,
    },
    /// `/stats`: counters.
    Stats,
}

/// Parses a command line (starting with `/`) under [`Limits::default`] with at most
/// `max_list` uids per TARGETS. `Err` is the message for the error reply.
/// Payload fields are byte offsets into `line`.
pub fn parse<'a>(line: &'a str, max_list: usize) -> Result<Command<'a>, String> {
    let limits = Limits {
        max_list_uids: max_list,
        ..Limits::default()
    };
    parse_with(line, &limits)
}

/// Parses a command line (starting with `/`) under `limits`. `Err` is the message for the
/// error reply; it never quotes more than a few bytes of the line.
pub fn parse_with<'a>(line: &'a str, limits: &Limits) -> Result<Command<'a>, String> {
    let mut args = Args { line, pos: 0 };
    let verb = args.word().unwrap_or("");
    let group = Name::Group(limits.max_group_bytes);
    let uid = Name::Uid(limits.max_uid_bytes);
    let targets = |args: &mut Args<'a>| args.uids("TARGETS", limits);
    let cmd = match verb {
        "/ping" => Command::Ping,
        "/send" => Command::Send {
            uids: targets(&mut args)?,
            payload: args.payload()?,
        },
        "/push" => Command::Push {
            id: args.string(Name::Id(MAX_ID_BYTES))?,
            line: args.payload()?,
        },
        "/group" => Command::Group {
            group: args.string(group)?,
            payload: args.payload()?,
        },
        "/broadcast" => Command::Broadcast {
            payload: args.payload()?,
        },
        "/join" => Command::Join {
            group: args.string(group)?,
            uids: targets(&mut args)?,
        },
        "/leave" => Command::Leave {
            group: args.string(group)?,
            uids: targets(&mut args)?,
        },
        "/online" => Command::Online {
            uid: args.string(uid)?,
        },
        "/count" => Command::Count,
        "/members" => Command::Members {
            group: args.string(group)?,
        },
        "/uids" => {
            let cursor = args.number("CURSOR")?.unwrap_or(0);
            let limit = args.number("LIMIT")?.unwrap_or(DEFAULT_UIDS_PAGE);
            Command::Uids {
                cursor,
                limit: limit.clamp(1, MAX_UIDS_PAGE),
            }
        }
        "/kick" => Command::Kick {
            uids: targets(&mut args)?,
            reason: args.rest(),
        },
        "/stats" => Command::Stats,
        _ => return Err(format!("unknown command {:?}", truncate(verb, 40))),
    };
    let fixed = !matches!(
        cmd,
        Command::Send { .. }
            | Command::Push { .. }
            | Command::Group { .. }
            | Command::Broadcast { .. }
            | Command::Kick { .. }
    );
    if fixed && args.rest().is_some() {
        return Err(format!("{verb}: unexpected argument"));
    }
    Ok(cmd)
}

/// A cursor over the arguments of one command line.
struct Args<'a> {
    line: &'a str,
    pos: usize,
}

impl<'a> Args<'a> {
    fn skip_spaces(&mut self) {
        let rest = &self.line[self.pos..];
        self.pos += rest.len() - rest.trim_start_matches(' ').len();
    }

    fn word(&mut self) -> Option<&'a str> {
        self.skip_spaces();
        let rest = &self.line[self.pos..];
        let len = rest.find(' ').unwrap_or(rest.len());
        self.pos += len;
        (len > 0).then(|| &rest[..len])
    }

    /// A JSON string (for args starting with `"`), a JSON array of uids (for args starting
    /// with `[`, only where `list` is given) or a bare word.
    fn token(&mut self, what: &str, list: Option<&Limits>) -> Result<Token<'a>, String> {
        self.skip_spaces();
        let rest = &self.line[self.pos..];
        let value = if rest.starts_with('"') {
            let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<String>();
            let value = match stream.next() {
                Some(Ok(v)) => Token::Json(v),
                Some(Err(e)) => return Err(format!("{what}: invalid JSON: {e}")),
                None => return Err(format!("missing {what}")),
            };
            self.pos += stream.byte_offset();
            value
        } else if rest.starts_with('[') {
            let Some(limits) = list else {
                // Refused unread: an array where a name belongs is never parsed.
                return Err(format!("{what} must be a word or a JSON string"));
            };
            let list = uid_list(rest, what, limits)?;
            // The list parsed, so it is valid JSON; find where it ends without allocating.
            let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<IgnoredAny>();
            if let Some(Err(e)) = stream.next() {
                return Err(format!("{what}: invalid JSON: {e}"));
            }
            self.pos += stream.byte_offset();
            Token::List(list)
        } else {
            return self
                .word()
                .map(Token::Word)
                .ok_or_else(|| format!("missing {what}"));
        };
        if !self.line[self.pos..].is_empty() && !self.line[self.pos..].starts_with(' ') {
            return Err(format!("{what}: expected a space after the JSON value"));
        }
        Ok(value)
    }

    /// A name (a word or a JSON string), not empty and at most the name's limit.
    fn string(&mut self, name: Name) -> Result<Cow<'a, str>, String> {
        let what = name.placeholder();
        let value = match self.token(what, None)? {
            Token::Word(w) => Cow::Borrowed(w),
            Token::Json(s) if s.is_empty() => return Err(format!("{what} is empty")),
            Token::Json(s) => Cow::Owned(s),
            Token::List(_) => return Err(format!("{what} must be a word or a JSON string")),
        };
        name.check(&value)?;
        Ok(value)
    }

    /// TARGETS: a uid (word or JSON string) or a JSON array of them, duplicates dropped.
    fn uids(&mut self, what: &str, limits: &Limits) -> Result<Vec<Uid>, String> {
        let list = match self.token(what, Some(limits))? {
            Token::Word(w) => vec![Name::Uid(limits.max_uid_bytes).uid(w)?],
            Token::Json(s) => vec![Name::Uid(limits.max_uid_bytes).uid(&s)?],
            Token::List(list) => list,
        };
        if list.is_empty() {
            return Err(format!("{what}: empty list"));
        }
        Ok(list)
    }

    fn number(&mut self, what: &str) -> Result<Option<usize>, String> {
        match self.word() {
            None => Ok(None),
            Some(w) => w
                .parse()
                .map(Some)
                .map_err(|_| format!("{what} must be a non-negative integer")),
        }
    }

    /// The offset of the payload: everything after the spaces that follow the last arg.
    fn payload(&mut self) -> Result<usize, String> {
        self.skip_spaces();
        if self.pos == self.line.len() {
            return Err("missing payload".into());
        }
        let start = self.pos;
        self.pos = self.line.len();
        Ok(start)
    }

    fn rest(&mut self) -> Option<&'a str> {
        self.skip_spaces();
        let rest = &self.line[self.pos..];
        self.pos = self.line.len();
        (!rest.is_empty()).then_some(rest)
    }
}

enum Token<'a> {
    Word(&'a str),
    Json(String),
    List(Vec<Uid>),
}

/// A name argument and its byte limit; the limit's error says which name it was.
#[derive(Debug, Clone, Copy)]
enum Name {
    Group(usize),
    Uid(usize),
    Id(usize),
}

impl Name {
    fn placeholder(self) -> &'static str {
        match self {
            Name::Group(_) => "GROUP",
            Name::Uid(_) => "UID",
            Name::Id(_) => "ID",
        }
    }

    fn check(self, value: &str) -> Result<(), String> {
        let (max, what) = match self {
            Name::Group(max) => (max, "group name"),
            Name::Uid(max) => (max, "uid"),
            Name::Id(max) => (max, "ID"),
        };
        if value.len() > max {
            return Err(format!("{what} too long (max {max} bytes)"));
        }
        Ok(())
    }

    fn uid(self, value: &str) -> Result<Uid, String> {
        self.check(value)?;
        Ok(Uid::from(value))
    }
}

/// Reads a JSON array of uids one element at a time: each is checked (string or integer,
/// at most `max_uid_bytes`) as it is read and duplicates are dropped, and reading stops at
/// the first bad element or the first distinct uid past `max_list_uids`, so a huge array
/// costs no more memory than the list it is allowed to be.
fn uid_list(json: &str, what: &str, limits: &Limits) -> Result<Vec<Uid>, String> {
    let mut refusal = None;
    let seed = UidList {
        what,
        limits,
        refusal: &mut refusal,
    };
    let parsed = seed.deserialize(&mut serde_json::Deserializer::from_str(json));
    match (parsed, refusal) {
        // The visitor stopped the parse on purpose; its reason wins over serde's.
        (_, Some(why)) => Err(why),
        (Ok(list), None) => Ok(list),
        (Err(e), None) => Err(format!("{what}: invalid JSON: {e}")),
    }
}

struct UidList<'r> {
    what: &'r str,
    limits: &'r Limits,
    /// Set when the visitor refuses the list; the parse is then aborted with a bare error.
    refusal: &'r mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for UidList<'_> {
    type Value = Vec<Uid>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Vec<Uid>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for UidList<'_> {
    type Value = Vec<Uid>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of uids")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Uid>, A::Error> {
        let Limits {
            max_list_uids,
            max_uid_bytes,
            ..
        } = *self.limits;
        let mut list: Vec<Uid> = Vec::new();
        let mut seen: HashSet<Uid> = HashSet::new();
        let mut refuse = |why: String| -> A::Error {
            *self.refusal = Some(why);
            de::Error::custom("uid list refused")
        };
        while let Some(item) = seq.next_element_seed(Item(max_uid_bytes))? {
            let uid = match item {
                ListItem::Uid(uid) => uid,
                ListItem::TooLong => {
                    return Err(refuse(format!("uid too long (max {max_uid_bytes} bytes)")));
                }
                ListItem::NotUid => {
                    let what = self.what;
                    return Err(refuse(format!(
                        "{what}: each uid must be a string or an integer"
                    )));
                }
            };
            if seen.contains(&uid) {
                continue;
            }
            if list.len() == max_list_uids {
                let (what, over) = (self.what, max_list_uids + 1);
                return Err(refuse(format!(
                    "{what}: too many uids (at least {over} distinct, max {max_list_uids})"
                )));
            }
            seen.insert(uid.clone());
            list.push(uid);
        }
        Ok(list)
    }
}

/// One element of a uid list.
enum ListItem {
    Uid(Uid),
    /// A string or integer longer than the limit (never allocated).
    TooLong,
    /// Any other JSON value.
    NotUid,
}

/// Reads one [`ListItem`]; the `usize` is the uid byte limit.
struct Item(usize);

impl<'de> DeserializeSeed<'de> for Item {
    type Value = ListItem;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<ListItem, D::Error> {
        d.deserialize_any(self)
    }
}

impl Item {
    fn uid(&self, s: &str) -> ListItem {
        if s.len() > self.0 {
            ListItem::TooLong
        } else {
            ListItem::Uid(Uid::from(s))
        }
    }
}

impl<'de> Visitor<'de> for Item {
    type Value = ListItem;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a uid (string or integer)")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<ListItem, E> {
        Ok(self.uid(s))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<ListItem, E> {
        Ok(self.uid(&n.to_string()))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<ListItem, E> {
        Ok(self.uid(&n.to_string()))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<ListItem, E> {
        Ok(ListItem::NotUid)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<ListItem, E> {
        Ok(ListItem::NotUid)
    }
    fn visit_unit<E: de::Error>(self) -> Result<ListItem, E> {
        Ok(ListItem::NotUid)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ListItem, A::Error> {
        // Skipped without allocating; the caller refuses the list.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(ListItem::NotUid)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ListItem, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(ListItem::NotUid)
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Runs a command line; `bytes` is the same line as `line`, for zero-copy payload slices.
/// Returns the reply line without its `\n`.
pub fn execute(line: &str, bytes: &Bytes, registry: &Registry, config: &Config) -> String {
    let cmd = match parse_with(line, &Limits::from(config)) {
        Ok(cmd) => cmd,
        Err(error) => {
            tracing::debug!(error = %escaped(&error), "bad command");
            return json!({"ok": false, "error": error}).to_string();
        }
    };
    let payload = |at: usize| -> Utf8Bytes {
        // `at` is a char boundary of a str, so the slice is UTF-8 too.
        Utf8Bytes::try_from(bytes.slice(at..)).unwrap_or_else(|_| Utf8Bytes::from(&line[at..]))
    };
    let reply = match cmd {
        Command::Ping => return "pong".into(),
        Command::Send { uids, payload: at } => {
            let f = registry.push_many(&uids, &payload(at));
            json!({"ok": f.reached > 0, "uids": uids.len(), "reached": f.reached,
                   "connections": f.delivery.queued, "refused": f.delivery.refused})
        }
        Command::Push { id, line: at } => {
            let outcome = crate::push::push_line(payload(at), registry, config.max_uid_bytes);
            crate::push::count(registry.metrics(), &outcome);
            let mut v = match &outcome {
                Ok(d) if d.ok() => json!({"ok": true, "result": "delivered"}),
                Ok(d) if d.refused > 0 => json!({"ok": false, "result": "refused"}),
                Ok(_) => json!({"ok": false, "result": "offline"}),
                Err(bad) => json!({"ok": false, "result": "malformed", "error": bad.to_string()}),
            };
            if let Ok(d) = &outcome {
                v["connections"] = json!(d.queued);
                v["refused"] = json!(d.refused);
            }
            v["id"] = json!(id);
            v
        }
        Command::Group { group, payload: at } => {
            let (members, f) = registry
                .push_group(&group, &payload(at))
                .unwrap_or_default();
            json!({"ok": f.reached > 0, "group": group, "members": members,
                   "reached": f.reached, "connections": f.delivery.queued,
                   "refused": f.delivery.refused})
        }
        Command::Broadcast { payload: at } => {
            let d = registry.broadcast(&payload(at));
            json!({"ok": d.ok(), "connections": d.queued, "refused": d.refused})
        }
        Command::Join { group, uids } => match registry.join(&group, &uids) {
            Ok((added, members)) => {
                json!({"ok": true, "group": group, "added": added, "members": members})
            }
            Err(e) => {
                tracing::debug!(%e, group = %escaped(&group), "join refused");
                json!({"ok": false, "error": e.to_string()})
            }
        },
        Command::Leave { group, uids } => {
            let (removed, members) = registry.leave(&group, &uids);
            json!({"ok": true, "group": group, "removed": removed, "members": members})
        }
        Command::Online { uid } => {
            let n = registry.connections_of(&uid);
            json!({"ok": true, "uid": uid, "online": n > 0, "connections": n})
        }
        Command::Count => {
            let (uids, connections) = registry.totals();
            json!({"ok": true, "uids": uids, "connections": connections, "groups": registry.group_count()})
        }
        Command::Members { group } => {
            let members = registry.members(&group).unwrap_or_default();
            let names: Vec<&str> = members.iter().map(|u| u.as_ref()).collect();
            json!({"ok": true, "group": group, "count": names.len(), "uids": names})
        }
        Command::Uids { cursor, limit } => {
            let (page, next) = registry.uids_page(cursor, limit);
            let names: Vec<&str> = page.iter().map(|u| u.as_ref()).collect();
            json!({"ok": true, "count": names.len(), "uids": names, "next": next})
        }
        Command::Kick { uids, reason } => {
            let notice = CloseNotice::kicked(reason);
            let closed: usize = uids.iter().map(|u| registry.kick(u, &notice)).sum();
            json!({"ok": true, "uids": uids.len(), "connections": closed})
        }
        Command::Stats => stats(registry),
    };
    reply.to_string()
}

fn stats(registry: &Registry) -> Value {
    let m = registry.metrics().snapshot();
    let (uids, connections) = registry.totals();
    json!({
        "ok": true,
        "uptime_secs": m.uptime_secs,
        "connections": connections,
        "uids": uids,
        "groups": registry.group_count(),
        "pushes_ok": m.pushes_ok,
        "pushes_fail": m.pushes_fail,
        "bad_lines": m.bad_lines,
        "commands": m.commands,
        "evicted": m.evicted,
        "kicked": m.kicked,
        "frames_out": m.frames_out,
        "bytes_out": m.bytes_out,
        "ws_accepted": m.ws_accepted,
        "binds": m.binds,
        "refused_per_ip": m.refused_per_ip,
        "refused_pending": m.refused_pending,
        "push_connections": m.push_connections,
    })
}

/// True for a command line: its first byte is `/`, which no JSON text starts with.
pub fn is_command(line: &[u8]) -> bool {
    line.first() == Some(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uids(list: &[&str]) -> Vec<Uid> {
        list.iter().map(|u| Uid::from(*u)).collect()
    }

    #[test]
    fn grammar() {
        assert_eq!(parse("/ping", 10), Ok(Command::Ping));
        let line = r#"/send ["a b",3,"a b"]   {"x":1} tail"#;
        let Ok(Command::Send { uids: got, payload }) = parse(line, 10) else {
            panic!("parse failed");
        };
        assert_eq!(got, uids(&["a b", "3"]));
        assert_eq!(&line[payload..], r#"{"x":1} tail"#);
        assert_eq!(
            parse("/join room u1", 10),
            Ok(Command::Join {
                group: "room".into(),
                uids: uids(&["u1"])
            })
        );
        assert_eq!(
            parse("/uids 3 99999", 10),
            Ok(Command::Uids {
                cursor: 3,
                limit: MAX_UIDS_PAGE
            })
        );
        assert_eq!(
            parse(r#"/kick u1 bye now"#, 10),
            Ok(Command::Kick {
                uids: uids(&["u1"]),
                reason: Some("bye now")
            })
        );
        assert!(parse("/nope", 10).unwrap_err().contains("unknown command"));
        assert!(
            parse("/send u1", 10)
                .unwrap_err()
                .contains("missing payload")
        );
        assert!(
            parse("/send [1,2,3] x", 2)
                .unwrap_err()
                .contains("too many uids")
        );
        assert!(
            parse("/send [1.5] x", 2)
                .unwrap_err()
                .contains("string or an integer")
        );
        assert!(parse("/send [] x", 2).unwrap_err().contains("empty list"));
        assert!(parse(r#"/send ["a"]x y"#, 2).unwrap_err().contains("space"));
        assert!(
            parse("/count extra", 2)
                .unwrap_err()
                .contains("unexpected argument")
        );
        assert!(parse("/uids x", 2).unwrap_err().contains("CURSOR"));
        assert!(is_command(b"/ping") && !is_command(br#"{"uid":"/ping"}"#));
    }
}
