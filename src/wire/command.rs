//! The `/`-command grammar of the push port: a line in, a typed [`Command`] or a
//! [`CommandError`] out. No I/O and no state: the service runs what this parses.
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

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::Uid;

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

impl Default for Limits {
    /// The daemon's defaults (`--max-list-uids`, `--max-uid-bytes`, `--max-group-bytes`).
    fn default() -> Self {
        Limits {
            max_list_uids: 1000,
            max_uid_bytes: 256,
            max_group_bytes: 256,
        }
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
    /// `/push ID [ttl=MS] [ack=MS] LINE`: a plain push line, answered with its detailed
    /// outcome and ID; the options ask for the offline queue and an end-to-end ack.
    Push {
        id: Cow<'a, str>,
        line: usize,
        options: PushOptions,
    },
    /// `/group GROUP PAYLOAD`: PAYLOAD to every connection of every member;
    /// `/group-except GROUP TARGETS PAYLOAD`: of every member but those listed.
    Group {
        group: Cow<'a, str>,
        except: Vec<Uid>,
        payload: usize,
    },
    /// `/broadcast PAYLOAD`: PAYLOAD to every bound connection;
    /// `/broadcast-except TARGETS PAYLOAD`: of every uid but those listed.
    Broadcast { except: Vec<Uid>, payload: usize },
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

impl Command<'_> {
    /// The verb, as written (`/send`, ...).
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Ping => "/ping",
            Command::Send { .. } => "/send",
            Command::Push { .. } => "/push",
            Command::Group { except, .. } if !except.is_empty() => "/group-except",
            Command::Group { .. } => "/group",
            Command::Broadcast { except, .. } if !except.is_empty() => "/broadcast-except",
            Command::Broadcast { .. } => "/broadcast",
            Command::Join { .. } => "/join",
            Command::Leave { .. } => "/leave",
            Command::Online { .. } => "/online",
            Command::Count => "/count",
            Command::Members { .. } => "/members",
            Command::Uids { .. } => "/uids",
            Command::Kick { .. } => "/kick",
            Command::Stats => "/stats",
        }
    }
}

/// The options of `/push` (protocol v1, `docs/protocol.md`), in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushOptions {
    /// `ttl=MS`: keep it for an offline uid this long.
    pub ttl: Option<u64>,
    /// `ack=MS`: wait this long for a tab's ack.
    pub ack: Option<u64>,
}

impl PushOptions {
    /// True when no option was given (the reply is then exactly the seed-era one).
    pub fn is_empty(&self) -> bool {
        self.ttl.is_none() && self.ack.is_none()
    }
}

/// Why a command line was refused; its `Display` is the `"error"` of the reply. No
/// variant holds more than a few bytes of the line, so no reply echoes unbounded input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// Not a known verb (the verb, cut to 40 bytes).
    Unknown(String),
    /// A verb without arguments was given some.
    Unexpected(&'static str),
    /// A required argument is missing.
    Missing(&'static str),
    /// The payload is missing.
    MissingPayload,
    /// A JSON argument does not parse.
    InvalidJson(&'static str, String),
    /// A name was given as something other than a word or a JSON string.
    NotName(&'static str),
    /// A JSON value is directly followed by something other than a space.
    SpaceAfterJson(&'static str),
    /// A name is the empty string.
    EmptyName(&'static str),
    /// TARGETS is an empty array.
    EmptyList(&'static str),
    /// CURSOR or LIMIT is not a non-negative integer.
    NotNumber(&'static str),
    /// A name is longer than its limit.
    TooLong {
        /// `group name`, `uid` or `ID`.
        what: &'static str,
        /// The limit, in bytes.
        max: usize,
    },
    /// A TARGETS element is neither a string nor an integer.
    NotUid(&'static str),
    /// TARGETS names more distinct uids than allowed.
    TooMany {
        /// Which argument.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// The line is not UTF-8.
    NotUtf8,
    /// The line is longer than `--max-line-bytes`.
    LineTooLong(usize),
    /// A payload offset that is not on a character boundary of the line (a grammar bug,
    /// answered rather than panicking).
    PayloadOffset,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown(verb) => write!(f, "unknown command {verb:?}"),
            CommandError::Unexpected(verb) => write!(f, "{verb}: unexpected argument"),
            CommandError::Missing(what) => write!(f, "missing {what}"),
            CommandError::MissingPayload => f.write_str("missing payload"),
            CommandError::InvalidJson(what, e) => write!(f, "{what}: invalid JSON: {e}"),
            CommandError::NotName(what) => write!(f, "{what} must be a word or a JSON string"),
            CommandError::SpaceAfterJson(what) => {
                write!(f, "{what}: expected a space after the JSON value")
            }
            CommandError::EmptyName(what) => write!(f, "{what} is empty"),
            CommandError::EmptyList(what) => write!(f, "{what}: empty list"),
            CommandError::NotNumber(what) => write!(f, "{what} must be a non-negative integer"),
            CommandError::TooLong { what, max } => write!(f, "{what} too long (max {max} bytes)"),
            CommandError::NotUid(what) => {
                write!(f, "{what}: each uid must be a string or an integer")
            }
            CommandError::TooMany { what, max } => write!(
                f,
                "{what}: too many uids (at least {} distinct, max {max})",
                max + 1
            ),
            CommandError::NotUtf8 => f.write_str("command is not UTF-8"),
            CommandError::LineTooLong(max) => write!(f, "line too long (max {max} bytes)"),
            CommandError::PayloadOffset => f.write_str("bad payload offset"),
        }
    }
}

impl std::error::Error for CommandError {}

/// Parses a command line (starting with `/`) under [`Limits::default`] with at most
/// `max_list` uids per TARGETS. `Err` is the message for the error reply.
/// Payload fields are byte offsets into `line`.
pub fn parse<'a>(line: &'a str, max_list: usize) -> Result<Command<'a>, CommandError> {
    let limits = Limits {
        max_list_uids: max_list,
        ..Limits::default()
    };
    parse_with(line, &limits)
}

/// Parses a command line (starting with `/`) under `limits`. `Err` is the message for the
/// error reply; it never quotes more than a few bytes of the line.
pub fn parse_with<'a>(line: &'a str, limits: &Limits) -> Result<Command<'a>, CommandError> {
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
            options: args.push_options(),
            line: args.payload()?,
        },
        "/group" => Command::Group {
            group: args.string(group)?,
            except: Vec::new(),
            payload: args.payload()?,
        },
        "/group-except" => Command::Group {
            group: args.string(group)?,
            except: targets(&mut args)?,
            payload: args.payload()?,
        },
        "/broadcast" => Command::Broadcast {
            except: Vec::new(),
            payload: args.payload()?,
        },
        "/broadcast-except" => Command::Broadcast {
            except: targets(&mut args)?,
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
        _ => return Err(CommandError::Unknown(truncate(verb, 40).to_owned())),
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
        return Err(CommandError::Unexpected(cmd.verb()));
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
    fn token(
        &mut self,
        what: &'static str,
        list: Option<&Limits>,
    ) -> Result<Token<'a>, CommandError> {
        self.skip_spaces();
        let rest = &self.line[self.pos..];
        let value = if rest.starts_with('"') {
            let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<String>();
            let value = match stream.next() {
                Some(Ok(v)) => Token::Json(v),
                Some(Err(e)) => return Err(CommandError::InvalidJson(what, e.to_string())),
                None => return Err(CommandError::Missing(what)),
            };
            self.pos += stream.byte_offset();
            value
        } else if rest.starts_with('[') {
            let Some(limits) = list else {
                // Refused unread: an array where a name belongs is never parsed.
                return Err(CommandError::NotName(what));
            };
            let list = uid_list(rest, what, limits)?;
            // The list parsed, so it is valid JSON; find where it ends without allocating.
            let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<IgnoredAny>();
            if let Some(Err(e)) = stream.next() {
                return Err(CommandError::InvalidJson(what, e.to_string()));
            }
            self.pos += stream.byte_offset();
            Token::List(list)
        } else {
            return self
                .word()
                .map(Token::Word)
                .ok_or(CommandError::Missing(what));
        };
        if !self.line[self.pos..].is_empty() && !self.line[self.pos..].starts_with(' ') {
            return Err(CommandError::SpaceAfterJson(what));
        }
        Ok(value)
    }

    /// A name (a word or a JSON string), not empty and at most the name's limit.
    fn string(&mut self, name: Name) -> Result<Cow<'a, str>, CommandError> {
        let what = name.placeholder();
        let value = match self.token(what, None)? {
            Token::Word(w) => Cow::Borrowed(w),
            Token::Json(s) if s.is_empty() => return Err(CommandError::EmptyName(what)),
            Token::Json(s) => Cow::Owned(s),
            Token::List(_) => return Err(CommandError::NotName(what)),
        };
        name.check(&value)?;
        Ok(value)
    }

    /// TARGETS: a uid (word or JSON string) or a JSON array of them, duplicates dropped.
    fn uids(&mut self, what: &'static str, limits: &Limits) -> Result<Vec<Uid>, CommandError> {
        let list = match self.token(what, Some(limits))? {
            Token::Word(w) => vec![Name::Uid(limits.max_uid_bytes).uid(w)?],
            Token::Json(s) => vec![Name::Uid(limits.max_uid_bytes).uid(&s)?],
            Token::List(list) => list,
        };
        if list.is_empty() {
            return Err(CommandError::EmptyList(what));
        }
        Ok(list)
    }

    fn number(&mut self, what: &'static str) -> Result<Option<usize>, CommandError> {
        match self.word() {
            None => Ok(None),
            Some(w) => w
                .parse()
                .map(Some)
                .map_err(|_| CommandError::NotNumber(what)),
        }
    }

    /// The offset of the payload: everything after the spaces that follow the last arg.
    fn payload(&mut self) -> Result<usize, CommandError> {
        self.skip_spaces();
        if self.pos == self.line.len() {
            return Err(CommandError::MissingPayload);
        }
        let start = self.pos;
        self.pos = self.line.len();
        Ok(start)
    }

    /// `/push`'s options: each a whole word `ttl=DIGITS` or `ack=DIGITS` with more of the
    /// line after it. Anything else starts LINE, so a line that parsed before still
    /// parses the same (a LINE starting `ttl=5 ` was never a valid push).
    fn push_options(&mut self) -> PushOptions {
        let mut options = PushOptions::default();
        loop {
            let save = self.pos;
            let Some(word) = self.word() else {
                self.pos = save;
                return options;
            };
            let more = !self.line[self.pos..].trim_start_matches(' ').is_empty();
            let value = |name: &str| {
                let digits = word.strip_prefix(name)?;
                let ok = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
                // Too many digits for a u64: cut to the largest (every wait is capped).
                ok.then(|| digits.parse().unwrap_or(u64::MAX))
            };
            match (more, value("ttl="), value("ack=")) {
                (true, Some(ms), _) if options.ttl.is_none() => options.ttl = Some(ms),
                (true, _, Some(ms)) if options.ack.is_none() => options.ack = Some(ms),
                _ => {
                    self.pos = save;
                    return options;
                }
            }
        }
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

    fn check(self, value: &str) -> Result<(), CommandError> {
        let (max, what) = match self {
            Name::Group(max) => (max, "group name"),
            Name::Uid(max) => (max, "uid"),
            Name::Id(max) => (max, "ID"),
        };
        if value.len() > max {
            return Err(CommandError::TooLong { what, max });
        }
        Ok(())
    }

    fn uid(self, value: &str) -> Result<Uid, CommandError> {
        self.check(value)?;
        Ok(Uid::from(value))
    }
}

/// Reads a JSON array of uids one element at a time: each is checked (string or integer,
/// at most `max_uid_bytes`) as it is read and duplicates are dropped, and reading stops at
/// the first bad element or the first distinct uid past `max_list_uids`, so a huge array
/// costs no more memory than the list it is allowed to be.
fn uid_list(json: &str, what: &'static str, limits: &Limits) -> Result<Vec<Uid>, CommandError> {
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
        (Err(e), None) => Err(CommandError::InvalidJson(what, e.to_string())),
    }
}

struct UidList<'r> {
    what: &'static str,
    limits: &'r Limits,
    /// Set when the visitor refuses the list; the parse is then aborted with a bare error.
    refusal: &'r mut Option<CommandError>,
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
        let mut refuse = |why: CommandError| -> A::Error {
            *self.refusal = Some(why);
            de::Error::custom("uid list refused")
        };
        while let Some(item) = seq.next_element_seed(Item(max_uid_bytes))? {
            let uid = match item {
                ListItem::Uid(uid) => uid,
                ListItem::TooLong => {
                    return Err(refuse(CommandError::TooLong {
                        what: "uid",
                        max: max_uid_bytes,
                    }));
                }
                ListItem::NotUid => {
                    return Err(refuse(CommandError::NotUid(self.what)));
                }
            };
            if seen.contains(&uid) {
                continue;
            }
            if list.len() == max_list_uids {
                return Err(refuse(CommandError::TooMany {
                    what: self.what,
                    max: max_list_uids,
                }));
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

/// The secret of an `/auth SECRET` line (handled by the doors, not the service: it
/// changes what a connection may do).
pub fn auth_secret(line: &[u8]) -> Option<&[u8]> {
    line.strip_prefix(b"/auth ".as_slice())
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
        assert!(
            parse("/nope", 10)
                .unwrap_err()
                .to_string()
                .contains("unknown command")
        );
        assert!(
            parse("/send u1", 10)
                .unwrap_err()
                .to_string()
                .contains("missing payload")
        );
        assert!(
            parse("/send [1,2,3] x", 2)
                .unwrap_err()
                .to_string()
                .contains("too many uids")
        );
        assert!(
            parse("/send [1.5] x", 2)
                .unwrap_err()
                .to_string()
                .contains("string or an integer")
        );
        assert!(
            parse("/send [] x", 2)
                .unwrap_err()
                .to_string()
                .contains("empty list")
        );
        assert!(
            parse(r#"/send ["a"]x y"#, 2)
                .unwrap_err()
                .to_string()
                .contains("space")
        );
        assert!(
            parse("/count extra", 2)
                .unwrap_err()
                .to_string()
                .contains("unexpected argument")
        );
        assert!(
            parse("/uids x", 2)
                .unwrap_err()
                .to_string()
                .contains("CURSOR")
        );
        assert!(is_command(b"/ping") && !is_command(br#"{"uid":"/ping"}"#));
        let line = r#"/push 7 ack=500 ttl=60000 {"uid":"u"}"#;
        let Ok(Command::Push {
            id,
            line: at,
            options,
        }) = parse(line, 2)
        else {
            panic!("parse failed");
        };
        assert_eq!((&*id, &line[at..]), ("7", r#"{"uid":"u"}"#));
        assert_eq!((options.ttl, options.ack), (Some(60000), Some(500)));
        // Not options: LINE as before.
        for (line, rest) in [
            ("/push 7 ttl=x {}", "ttl=x {}"),
            ("/push 7 ttl=5", "ttl=5"),
            ("/push 7 ttl=1 ttl=2 {}", "ttl=2 {}"),
            ("/push 7 TTL=1 {}", "TTL=1 {}"),
        ] {
            let Ok(Command::Push { line: at, .. }) = parse(line, 2) else {
                panic!("{line}");
            };
            assert_eq!(&line[at..], rest);
        }
    }
}
