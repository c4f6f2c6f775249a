//! One gateway frame → one typed [`Request`], or a [`BadRequest`] that says why not.
//!
//! Each command's parts are read as GatewayWorker's gateway reads them (`json_decode` into
//! PHP arrays, `empty()` on names, keys vs values), with two differences, both refusals
//! where GatewayWorker would do something worse: every list and name is bounded by
//! [`Limits`], and a part that GatewayClient never sends in that shape (a `sendToAll`
//! argument that is not JSON, a message that is an array) is an error instead of a
//! broadcast to everyone or a crashed gateway.

use std::cell::Cell;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Cmd, FLAG_BODY_IS_SCALAR, FLAG_NOT_CALL_ENCODE, Frame, php};
use crate::wire::command;

/// What one request's arguments may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries in one list: uids, groups, connection ids, select fields
    /// (`--max-list-uids` on the push port).
    pub max_list: usize,
    /// Longest uid, in bytes.
    pub max_uid_bytes: usize,
    /// Longest group, in bytes.
    pub max_group_bytes: usize,
    /// A message body sent PHP-serialized.
    pub serialized: php::Limits,
}

impl Default for Limits {
    /// The push port's defaults.
    fn default() -> Self {
        Limits::from(command::Limits::default())
    }
}

impl From<command::Limits> for Limits {
    /// The push port's limits, so a name valid there is valid here.
    fn from(l: command::Limits) -> Limits {
        Limits {
            max_list: l.max_list_uids,
            max_uid_bytes: l.max_uid_bytes,
            max_group_bytes: l.max_group_bytes,
            serialized: php::Limits::default(),
        }
    }
}

/// A message for browsers, as a send carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The bytes (not yet checked as UTF-8).
    pub text: Bytes,
    /// `$raw = true` ([`FLAG_NOT_CALL_ENCODE`]): the sender encoded it for the client
    /// protocol itself.
    pub raw: bool,
}

/// Longest select field name: GatewayClient asks for `uid`, `groups` and `session`.
pub const MAX_FIELD_BYTES: usize = 64;

/// A field a select asks for, per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `uid`: the bound uid (a string), or null.
    Uid,
    /// `groups`: `[group => group]`, or null for none.
    Groups,
    /// `session`: the session's serialized bytes, `""` for none.
    Session,
    /// Any other name: GatewayWorker answers with its connection object's property of
    /// that name, which pushwire has none of (null).
    Other(String),
}

impl Field {
    /// The name, as the reply keys it.
    pub fn name(&self) -> &str {
        match self {
            Field::Uid => "uid",
            Field::Groups => "groups",
            Field::Session => "session",
            Field::Other(s) => s,
        }
    }
}

/// Which connections a select is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every connection (no `where`, or an empty one).
    All,
    /// The union of: members of these groups, connections bound to these uids, these
    /// connections (GatewayWorker adds each key's matches in turn; it is not an AND).
    /// Keys it does not know match nothing.
    Matching {
        /// `where.groups`
        groups: Vec<String>,
        /// `where.uid`
        uids: Vec<String>,
        /// `where.connection_id`
        connections: Vec<u32>,
    },
}

/// `CMD_SELECT`'s argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Select {
    /// What to answer per connection, in this order.
    pub fields: Vec<Field>,
    /// About which connections.
    pub scope: Scope,
}

/// One command from a GatewayClient. `connection` is the frame header's `connection_id`,
/// the number a [`super::ClientId`] carries.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// 202: the connection's credentials. `None`: none that can match (missing, not a
    /// string, a body that is not JSON).
    Auth { secret_key: Option<String> },
    /// 5 `sendToClient`.
    SendToOne { connection: u32, message: Message },
    /// 6 `sendToAll`: to `only` if given, else to everyone but `except`.
    SendToAll {
        only: Option<Vec<u32>>,
        except: Vec<u32>,
        message: Message,
    },
    /// 7 `closeClient`: `last` is sent before closing (`None`: nothing).
    Kick {
        connection: u32,
        last: Option<Bytes>,
    },
    /// 8 `destoryClient`.
    Destroy { connection: u32 },
    /// 9 `updateSession`: `session` (serialized) merged into the connection's.
    UpdateSession { connection: u32, session: Bytes },
    /// 10 `getAllClientSessions()`.
    GetAllClientSessions,
    /// 11 `isOnline`.
    IsOnline { connection: u32 },
    /// 12 `bindUid`.
    BindUid { connection: u32, uid: String },
    /// 13 `unbindUid` (whatever uid it names, as GatewayWorker: the one bound goes).
    UnbindUid { connection: u32 },
    /// 14 `sendToUid`.
    SendToUid { uids: Vec<String>, message: Message },
    /// 15 `getClientIdByUid`, `isUidOnline`.
    GetClientIdByUid { uid: String },
    /// 16 `batchGetClientIdByUid`, `isUidsOnline`.
    BatchGetClientIdByUid { uids: Vec<String> },
    /// 20 `joinGroup`.
    JoinGroup { connection: u32, group: String },
    /// 21 `leaveGroup`.
    LeaveGroup { connection: u32, group: String },
    /// 22 `sendToGroup`.
    SendToGroup {
        groups: Vec<String>,
        except: Vec<u32>,
        message: Message,
    },
    /// 23 `getClientSessionsByGroup`.
    GetClientSessionsByGroup { group: String },
    /// 24 `getClientIdCountByGroup`: `None` counts every connection.
    GetClientCountByGroup { group: Option<String> },
    /// 25 the `select`-based queries.
    Select(Select),
    /// 26 `getAllGroupIdList`.
    GetGroupIdList,
    /// 27 `ungroup`.
    Ungroup { group: String },
    /// 28 `batchGetClientIdCountByGroup`.
    BatchGetClientCountByGroup { groups: Vec<String> },
    /// 203 `getSession`.
    GetSessionByClientId { connection: u32 },
    /// 204 `setSession`: the session's serialized bytes, stored as they are.
    SetSession { connection: u32, session: Bytes },
}

/// Why a frame is not a request pushwire runs. The connection may go on: the frame was
/// whole, only its meaning is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    /// The frame's command byte.
    pub cmd: u8,
    /// What was wrong.
    pub why: Why,
}

impl BadRequest {
    /// The reply GatewayWorker gives such a query when nothing matches, if the command is
    /// a query (so its caller is answered, not left waiting).
    pub fn reply(&self) -> Option<php::Value> {
        Cmd::from_u8(self.cmd).and_then(Cmd::empty_reply)
    }
}

/// The reasons, each a line in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// No GatewayWorker command has this number.
    Unknown,
    /// A command between gateways and BusinessWorkers, which pushwire does not have.
    WorkerOnly,
    /// A uid or group that PHP's `empty()` calls empty (`""`, `"0"`): GatewayWorker
    /// ignores such a `bindUid`/`joinGroup`/`leaveGroup`/`ungroup` too.
    EmptyName,
    /// A uid or group longer than the limit.
    NameTooLong {
        /// The limit, in bytes.
        max: usize,
    },
    /// A uid or group that is not UTF-8.
    NameNotUtf8,
    /// A list entry that is neither a string nor an integer.
    BadName,
    /// A list longer than the limit.
    TooMany {
        /// The limit.
        max: usize,
    },
    /// `ext_data` is not the JSON this command takes.
    BadJson(String),
    /// A message that is not a string. (GatewayWorker's gateway process dies on these,
    /// taking its browsers with it.)
    NotText,
    /// A serialized message that does not parse.
    BadBody(php::PhpError),
}

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Cmd::from_u8(self.cmd) {
            Some(cmd) => write!(f, "{cmd}: ")?,
            None => write!(f, "command {}: ", self.cmd)?,
        }
        match &self.why {
            Why::Unknown => write!(f, "no such command"),
            Why::WorkerOnly => write!(
                f,
                "a BusinessWorker command; pushwire serves GatewayClient only"
            ),
            Why::EmptyName => write!(f, "empty uid or group (\"\" or \"0\"), ignored"),
            Why::NameTooLong { max } => write!(f, "uid or group longer than {max} bytes"),
            Why::NameNotUtf8 => write!(f, "uid or group is not UTF-8"),
            Why::BadName => write!(f, "a uid or group that is not a string or an integer"),
            Why::TooMany { max } => write!(f, "more than {max} entries in a list"),
            Why::BadJson(e) => write!(f, "ext_data is not the expected JSON: {e}"),
            Why::NotText => write!(f, "the message is not a string"),
            Why::BadBody(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BadRequest {}

/// The frame's request.
pub fn parse(frame: &Frame, limits: &Limits) -> Result<Request, BadRequest> {
    let n = frame.header.cmd;
    let Some(cmd) = Cmd::from_u8(n) else {
        return Err(BadRequest {
            cmd: n,
            why: Why::Unknown,
        });
    };
    parse_cmd(cmd, frame, limits).map_err(|why| BadRequest { cmd: n, why })
}

fn parse_cmd(cmd: Cmd, frame: &Frame, limits: &Limits) -> Result<Request, Why> {
    let connection = frame.header.connection_id;
    let ext = &frame.ext[..];
    let uid = |bytes: &[u8]| name(bytes, limits.max_uid_bytes);
    let group = |bytes: &[u8]| name(bytes, limits.max_group_bytes);
    let filled = |s: String| {
        if php_empty(&s) {
            Err(Why::EmptyName)
        } else {
            Ok(s)
        }
    };
    Ok(match cmd {
        Cmd::GatewayClientConnect => Request::Auth {
            secret_key: secret_key(frame, limits),
        },
        Cmd::SendToOne => Request::SendToOne {
            connection,
            message: message(frame, limits)?,
        },
        Cmd::SendToAll => {
            let message = message(frame, limits)?;
            let (only, except) = if ext.is_empty() {
                (None, Vec::new())
            } else {
                let all = json(ext, &Fault::default(), |f| AllSeed(limits.max_list, f))?;
                (all.connections, all.exclude)
            };
            Request::SendToAll {
                only,
                except,
                message,
            }
        }
        Cmd::Kick => Request::Kick {
            connection,
            last: last_words(frame, limits)?,
        },
        Cmd::Destroy => Request::Destroy { connection },
        Cmd::UpdateSession => Request::UpdateSession {
            connection,
            session: frame.ext.clone(),
        },
        Cmd::GetAllClientSessions => Request::GetAllClientSessions,
        Cmd::IsOnline => Request::IsOnline { connection },
        Cmd::BindUid => Request::BindUid {
            connection,
            uid: filled(uid(ext)?)?,
        },
        Cmd::UnbindUid => Request::UnbindUid { connection },
        Cmd::SendToUid => Request::SendToUid {
            uids: json(ext, &Fault::default(), |f| {
                NamesSeed::new(limits.max_list, limits.max_uid_bytes, f)
            })?,
            message: message(frame, limits)?,
        },
        Cmd::GetClientIdByUid => Request::GetClientIdByUid { uid: uid(ext)? },
        Cmd::BatchGetClientIdByUid => Request::BatchGetClientIdByUid {
            uids: json(ext, &Fault::default(), |f| {
                NamesSeed::new(limits.max_list, limits.max_uid_bytes, f)
            })?,
        },
        Cmd::JoinGroup => Request::JoinGroup {
            connection,
            group: filled(group(ext)?)?,
        },
        Cmd::LeaveGroup => Request::LeaveGroup {
            connection,
            group: filled(group(ext)?)?,
        },
        Cmd::SendToGroup => {
            let message = message(frame, limits)?;
            let to = json(ext, &Fault::default(), |f| GroupSeed(*limits, f))?;
            Request::SendToGroup {
                groups: to.groups,
                except: to.exclude,
                message,
            }
        }
        Cmd::GetClientSessionsByGroup => Request::GetClientSessionsByGroup { group: group(ext)? },
        Cmd::GetClientCountByGroup => Request::GetClientCountByGroup {
            group: if ext.is_empty() {
                None
            } else {
                Some(group(ext)?)
            },
        },
        Cmd::Select => Request::Select(json(ext, &Fault::default(), |f| SelectSeed(*limits, f))?),
        Cmd::GetGroupIdList => Request::GetGroupIdList,
        Cmd::Ungroup => Request::Ungroup {
            group: filled(group(ext)?)?,
        },
        Cmd::BatchGetClientCountByGroup => Request::BatchGetClientCountByGroup {
            groups: json(ext, &Fault::default(), |f| {
                NamesSeed::new(limits.max_list, limits.max_group_bytes, f)
            })?,
        },
        Cmd::GetSessionByClientId => Request::GetSessionByClientId { connection },
        Cmd::SetSession => Request::SetSession {
            connection,
            session: frame.ext.clone(),
        },
        Cmd::OnConnect
        | Cmd::OnMessage
        | Cmd::OnClose
        | Cmd::WorkerConnect
        | Cmd::Ping
        | Cmd::OnWebsocketConnect => return Err(Why::WorkerOnly),
    })
}

/// PHP's `empty()` of a string.
fn php_empty(s: &str) -> bool {
    s.is_empty() || s == "0"
}

fn name(bytes: &[u8], max: usize) -> Result<String, Why> {
    if bytes.len() > max {
        return Err(Why::NameTooLong { max });
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| Why::NameNotUtf8)
}

/// The body as the gateway decodes it: the bytes when flagged scalar, else unserialized.
/// `Ok(None)`: a serialized `null`.
fn body(frame: &Frame, limits: &Limits) -> Result<Option<Bytes>, Why> {
    if frame.header.flag & FLAG_BODY_IS_SCALAR != 0 {
        return Ok(Some(frame.body.clone()));
    }
    match php::unserialize(&frame.body, limits.serialized).map_err(Why::BadBody)? {
        php::Value::Str(s) => Ok(Some(Bytes::from(s))),
        php::Value::Null => Ok(None),
        _ => Err(Why::NotText),
    }
}

fn message(frame: &Frame, limits: &Limits) -> Result<Message, Why> {
    Ok(Message {
        text: body(frame, limits)?.ok_or(Why::NotText)?,
        raw: frame.header.flag & FLAG_NOT_CALL_ENCODE != 0,
    })
}

/// `closeClient($client_id, $message = null)`: null is no last message.
fn last_words(frame: &Frame, limits: &Limits) -> Result<Option<Bytes>, Why> {
    body(frame, limits)
}

fn secret_key(frame: &Frame, limits: &Limits) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Credentials {
        secret_key: Option<serde_json::Value>,
    }
    let text = body(frame, limits).ok()??;
    match serde_json::from_slice::<Credentials>(&text)
        .ok()?
        .secret_key
    {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    }
}

/// `ext` read with the seed `make` builds. A seed that refuses an entry says why in the
/// cell it is given, since serde_json turns its error into text with a position.
fn json<'de, 'f, S: DeserializeSeed<'de>>(
    ext: &'de [u8],
    fault: &'f Fault,
    make: impl FnOnce(&'f Fault) -> S,
) -> Result<S::Value, Why> {
    let mut de = serde_json::Deserializer::from_slice(ext);
    let read = make(fault).deserialize(&mut de).and_then(|v| {
        de.end()?;
        Ok(v)
    });
    read.map_err(|e| fault.take().unwrap_or_else(|| Why::BadJson(e.to_string())))
}

/// Where a seed leaves the reason it refused an entry.
type Fault = Cell<Option<Why>>;

/// Records `why` and returns the error that stops the read.
fn refuse<E: de::Error>(fault: &Fault, why: Why) -> E {
    let e = E::custom(BadRequest {
        cmd: 0,
        why: why.clone(),
    });
    fault.set(Some(why));
    e
}

// ---------------------------------------------------------------------------------------
// JSON arguments, read as PHP's json_decode($ext, true) makes arrays of them, without
// building a tree: every list stops at its limit.

/// One JSON value where GatewayWorker expects a name or a number.
enum Scalar {
    Str(String),
    Int(i64),
    /// An integer past `i64` (PHP makes it a float).
    Big,
    /// Anything else (float, bool, null, array, object), skipped whole.
    Other,
}

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(s.to_owned()))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(s))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(n))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar, E> {
        Ok(i64::try_from(n).map_or(Scalar::Big, Scalar::Int))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

impl Scalar {
    /// A connection id as PHP would find it as an array key: an integer, or a string
    /// that is one, inside `u32`. Anything else matches no connection.
    fn connection(&self) -> Option<u32> {
        match self {
            Scalar::Int(n) => u32::try_from(*n).ok(),
            Scalar::Str(s) => key_connection(s),
            _ => None,
        }
    }
}

/// An object key as a connection id (`"5"` is the key 5; `"05"` is no integer).
fn key_connection(key: &str) -> Option<u32> {
    match php::Key::from_bytes(key.as_bytes()) {
        php::Key::Int(n) => u32::try_from(n).ok(),
        php::Key::Str(_) => None,
    }
}

/// The values of a JSON array or object, each a uid or group (a string, or an integer
/// written in decimal, as PHP's array keys take both).
struct NamesSeed<'f> {
    max: usize,
    max_bytes: usize,
    fault: &'f Fault,
}

impl<'f> NamesSeed<'f> {
    fn new(max: usize, max_bytes: usize, fault: &'f Fault) -> NamesSeed<'f> {
        NamesSeed {
            max,
            max_bytes,
            fault,
        }
    }

    fn take<E: de::Error>(&self, names: &mut Vec<String>, value: Scalar) -> Result<(), E> {
        if names.len() == self.max {
            return Err(refuse(self.fault, Why::TooMany { max: self.max }));
        }
        let name = match value {
            Scalar::Str(s) => s,
            Scalar::Int(n) => n.to_string(),
            Scalar::Big | Scalar::Other => return Err(refuse(self.fault, Why::BadName)),
        };
        if name.len() > self.max_bytes {
            let max = self.max_bytes;
            return Err(refuse(self.fault, Why::NameTooLong { max }));
        }
        names.push(name);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for NamesSeed<'_> {
    type Value = Vec<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NamesSeed<'_> {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array or object of names")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut names = Vec::new();
        while let Some(v) = seq.next_element::<Scalar>()? {
            self.take(&mut names, v)?;
        }
        Ok(names)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
        let mut names = Vec::new();
        while let Some((_, v)) = map.next_entry::<IgnoredAny, Scalar>()? {
            self.take(&mut names, v)?;
        }
        Ok(names)
    }
}

/// Connection ids from a JSON array or object: its values (`connections`,
/// `where.connection_id`) or its keys (`exclude`, which GatewayWorker tests with
/// `isset($exclude[$id])`). Entries that can name no connection are skipped, as they
/// match none in GatewayWorker. `null`, `false` and the like are no list: none.
struct ConnectionsSeed<'f> {
    max: usize,
    keys: bool,
    fault: &'f Fault,
}

impl ConnectionsSeed<'_> {
    fn push<E: de::Error>(&self, ids: &mut Vec<u32>, id: Option<u32>) -> Result<(), E> {
        if ids.len() == self.max {
            return Err(refuse(self.fault, Why::TooMany { max: self.max }));
        }
        ids.extend(id);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for ConnectionsSeed<'_> {
    type Value = Vec<u32>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<u32>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ConnectionsSeed<'_> {
    type Value = Vec<u32>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("connection ids")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u32>, A::Error> {
        let mut ids = Vec::new();
        let mut index = 0u64;
        while let Some(v) = seq.next_element::<Scalar>()? {
            // A JSON array's keys are its indexes.
            let id = if self.keys {
                u32::try_from(index).ok()
            } else {
                v.connection()
            };
            self.push(&mut ids, id)?;
            index += 1;
        }
        Ok(ids)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<u32>, A::Error> {
        let mut ids = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Scalar>()? {
            let id = if self.keys {
                key_connection(&k)
            } else {
                v.connection()
            };
            self.push(&mut ids, id)?;
        }
        Ok(ids)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Vec<u32>, E> {
        Ok(Vec::new())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Vec<u32>, E> {
        Ok(Vec::new())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Vec<u32>, E> {
        Ok(Vec::new())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Vec<u32>, E> {
        Ok(Vec::new())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Vec<u32>, E> {
        Ok(Vec::new())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Vec<u32>, E> {
        Ok(Vec::new())
    }
}

/// `sendToAll`'s `{"connections":{…}}` / `{"exclude":{…}}`. GatewayWorker checks
/// `connections` first; an object with neither means everyone.
struct AllExt {
    connections: Option<Vec<u32>>,
    exclude: Vec<u32>,
}

struct AllSeed<'f>(usize, &'f Fault);

impl<'de> DeserializeSeed<'de> for AllSeed<'_> {
    type Value = AllExt;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<AllExt, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AllSeed<'_> {
    type Value = AllExt;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"an object {"connections":…} or {"exclude":…}"#)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AllExt, A::Error> {
        let mut all = AllExt {
            connections: None,
            exclude: Vec::new(),
        };
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "connections" => {
                    all.connections = Some(map.next_value_seed(ConnectionsSeed {
                        max: self.0,
                        keys: false,
                        fault: self.1,
                    })?);
                }
                "exclude" => {
                    all.exclude = map.next_value_seed(ConnectionsSeed {
                        max: self.0,
                        keys: true,
                        fault: self.1,
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(all)
    }
}

/// `sendToGroup`'s `{"group":[…],"exclude":null|{…}}`.
struct GroupExt {
    groups: Vec<String>,
    exclude: Vec<u32>,
}

struct GroupSeed<'f>(Limits, &'f Fault);

impl<'de> DeserializeSeed<'de> for GroupSeed<'_> {
    type Value = GroupExt;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<GroupExt, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for GroupSeed<'_> {
    type Value = GroupExt;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"an object {"group":[…],"exclude":…}"#)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GroupExt, A::Error> {
        let limits = self.0;
        let mut groups = None;
        let mut exclude = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "group" => {
                    groups = Some(map.next_value_seed(NamesSeed::new(
                        limits.max_list,
                        limits.max_group_bytes,
                        self.1,
                    ))?);
                }
                "exclude" => {
                    exclude = map.next_value_seed(ConnectionsSeed {
                        max: limits.max_list,
                        keys: true,
                        fault: self.1,
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(GroupExt {
            groups: groups.ok_or_else(|| de::Error::missing_field("group"))?,
            exclude,
        })
    }
}

/// `select`'s `{"fields":[…],"where":{…}}`.
struct SelectSeed<'f>(Limits, &'f Fault);

impl<'de> DeserializeSeed<'de> for SelectSeed<'_> {
    type Value = Select;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Select, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SelectSeed<'_> {
    type Value = Select;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"an object {"fields":[…],"where":…}"#)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Select, A::Error> {
        let limits = self.0;
        let mut fields = None;
        let mut scope = Scope::All;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "fields" => {
                    let names: Vec<String> = map.next_value_seed(NamesSeed::new(
                        limits.max_list,
                        MAX_FIELD_BYTES,
                        self.1,
                    ))?;
                    fields = Some(
                        names
                            .into_iter()
                            .map(|f| match f.as_str() {
                                "uid" => Field::Uid,
                                "groups" => Field::Groups,
                                "session" => Field::Session,
                                _ => Field::Other(f),
                            })
                            .collect(),
                    );
                }
                "where" => scope = map.next_value_seed(WhereSeed(limits, self.1))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Select {
            fields: fields.ok_or_else(|| de::Error::missing_field("fields"))?,
            scope,
        })
    }
}

/// `where`: PHP's `if ($where)` takes an empty array or object, `null`, `false`, `0`,
/// `""` and `"0"` for "no condition"; any other non-object value matches nothing.
struct WhereSeed<'f>(Limits, &'f Fault);

impl WhereSeed<'_> {
    fn nothing() -> Scope {
        Scope::Matching {
            groups: Vec::new(),
            uids: Vec::new(),
            connections: Vec::new(),
        }
    }
}

impl<'de> DeserializeSeed<'de> for WhereSeed<'_> {
    type Value = Scope;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Scope, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for WhereSeed<'_> {
    type Value = Scope;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a where clause")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scope, A::Error> {
        let limits = self.0;
        let (mut groups, mut uids, mut connections) = (Vec::new(), Vec::new(), Vec::new());
        let mut any = false;
        while let Some(key) = map.next_key::<String>()? {
            any = true;
            match key.as_str() {
                "groups" => {
                    groups = map.next_value_seed(NamesSeed::new(
                        limits.max_list,
                        limits.max_group_bytes,
                        self.1,
                    ))?;
                }
                "uid" => {
                    uids = map.next_value_seed(NamesSeed::new(
                        limits.max_list,
                        limits.max_uid_bytes,
                        self.1,
                    ))?;
                }
                "connection_id" => {
                    connections = map.next_value_seed(ConnectionsSeed {
                        max: limits.max_list,
                        keys: false,
                        fault: self.1,
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(if any {
            Scope::Matching {
                groups,
                uids,
                connections,
            }
        } else {
            Scope::All
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scope, A::Error> {
        let mut any = false;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            any = true;
        }
        Ok(if any {
            WhereSeed::nothing()
        } else {
            Scope::All
        })
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Scope, E> {
        Ok(if php_empty(s) {
            Scope::All
        } else {
            WhereSeed::nothing()
        })
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scope, E> {
        Ok(if n == 0 {
            Scope::All
        } else {
            WhereSeed::nothing()
        })
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scope, E> {
        Ok(if n == 0 {
            Scope::All
        } else {
            WhereSeed::nothing()
        })
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Scope, E> {
        Ok(if n == 0.0 {
            Scope::All
        } else {
            WhereSeed::nothing()
        })
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Scope, E> {
        Ok(if b { WhereSeed::nothing() } else { Scope::All })
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scope, E> {
        Ok(Scope::All)
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::super::{Header, encode_frame, take_frame};
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn frame_of(bytes: &[u8]) -> Frame {
        let mut buf = BytesMut::from(bytes);
        let frame = take_frame(&mut buf, 1 << 20).unwrap().unwrap();
        assert!(buf.is_empty());
        frame
    }

    fn request(hex_frame: &str) -> Result<Request, BadRequest> {
        parse(&frame_of(&hex(hex_frame)), &Limits::default())
    }

    fn frame(cmd: Cmd, connection: u32, flag: u8, ext: &[u8], body: &[u8]) -> Frame {
        let header = Header {
            cmd: cmd as u8,
            connection_id: connection,
            flag,
            ..Header::default()
        };
        frame_of(&encode_frame(&header, ext, body).unwrap())
    }

    fn text(s: &str) -> Message {
        Message {
            text: Bytes::copy_from_slice(s.as_bytes()),
            raw: false,
        }
    }

    fn why(r: Result<Request, BadRequest>) -> Why {
        r.unwrap_err().why
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Frames GatewayClient (5dfa435, PHP 8.2) wrote for these calls, client ids naming
    /// connection 5 at one gateway and 9 at another.
    #[test]
    fn reads_every_kind_of_frame_gatewayclient_writes() {
        let cases: &[(&str, &str, Request)] = &[
            (
                "sendToAll('hi')",
                "0000001e0600000000000000000000000000000000010000000000006869",
                Request::SendToAll {
                    only: None,
                    except: vec![],
                    message: text("hi"),
                },
            ),
            (
                "sendToAll('hi', null, null, true)",
                "0000001e0600000000000000000000000000000000030000000000006869",
                Request::SendToAll {
                    only: None,
                    except: vec![],
                    message: Message {
                        text: Bytes::from_static(b"hi"),
                        raw: true,
                    },
                },
            ),
            (
                "sendToAll('hi', [$a, $b]) at $a's gateway",
                "000000350600000000000000000000000000000000010000000000177b22636f6e6e656374696f6e73223a7b2235223a357d7d6869",
                Request::SendToAll {
                    only: Some(vec![5]),
                    except: vec![],
                    message: text("hi"),
                },
            ),
            (
                "sendToAll('hi', null, $a) at $a's gateway",
                "000000310600000000000000000000000000000000010000000000137b226578636c756465223a7b2235223a357d7d6869",
                Request::SendToAll {
                    only: None,
                    except: vec![5],
                    message: text("hi"),
                },
            ),
            (
                "sendToClient($a, 'x')",
                "0000001d05000000000000000000000000000000050100000000000078",
                Request::SendToOne {
                    connection: 5,
                    message: text("x"),
                },
            ),
            (
                "sendToUid('u1', 123)",
                "000000250e00000000000000000000000000000000010000000000065b227531225d313233",
                Request::SendToUid {
                    uids: strings(&["u1"]),
                    message: text("123"),
                },
            ),
            (
                "sendToUid(['u1', 2], 'm')",
                "000000250e00000000000000000000000000000000010000000000085b227531222c325d6d",
                Request::SendToUid {
                    uids: strings(&["u1", "2"]),
                    message: text("m"),
                },
            ),
            (
                "sendToGroup(['g', 5], 'm', [$a, $b]) at $b's gateway",
                "000000401600000000000000000000000000000000010000000000237b2267726f7570223a5b2267222c355d2c226578636c756465223a7b2239223a397d7d6d",
                Request::SendToGroup {
                    groups: strings(&["g", "5"]),
                    except: vec![9],
                    message: text("m"),
                },
            ),
            (
                "sendToGroup('g', 'm')",
                "0000003b16000000000000000000000000000000000100000000001e7b2267726f7570223a5b2267225d2c226578636c756465223a6e756c6c7d6d",
                Request::SendToGroup {
                    groups: strings(&["g"]),
                    except: vec![],
                    message: text("m"),
                },
            ),
            (
                "bindUid($a, 'u1')",
                "0000001e0c00000000000000000000000000000005010000000000027531",
                Request::BindUid {
                    connection: 5,
                    uid: "u1".into(),
                },
            ),
            (
                "unbindUid($a, 'u1')",
                "0000001e0d00000000000000000000000000000005010000000000027531",
                Request::UnbindUid { connection: 5 },
            ),
            (
                "joinGroup($b, 'g')",
                "0000001d14000000000000000000000000000000090100000000000167",
                Request::JoinGroup {
                    connection: 9,
                    group: "g".into(),
                },
            ),
            (
                "leaveGroup($b, 'g')",
                "0000001d15000000000000000000000000000000090100000000000167",
                Request::LeaveGroup {
                    connection: 9,
                    group: "g".into(),
                },
            ),
            (
                "ungroup('g')",
                "0000001d1b000000000000000000000000000000000100000000000167",
                Request::Ungroup { group: "g".into() },
            ),
            (
                "isOnline($a)",
                "0000001c0b0000000000000000000000000000000501000000000000",
                Request::IsOnline { connection: 5 },
            ),
            (
                "getClientIdByUid('u1')",
                "0000001e0f00000000000000000000000000000000010000000000027531",
                Request::GetClientIdByUid { uid: "u1".into() },
            ),
            (
                "batchGetClientIdByUid(['u1', 3])",
                "000000241000000000000000000000000000000000010000000000085b227531222c335d",
                Request::BatchGetClientIdByUid {
                    uids: strings(&["u1", "3"]),
                },
            ),
            (
                "getUidByClientId($a)",
                "000000501900000000000000000000000000000000010000000000347b226669656c6473223a5b22756964225d2c227768657265223a7b22636f6e6e656374696f6e5f6964223a7b2235223a357d7d7d",
                Request::Select(Select {
                    fields: vec![Field::Uid],
                    scope: Scope::Matching {
                        groups: vec![],
                        uids: vec![],
                        connections: vec![5],
                    },
                }),
            ),
            (
                "getAllGroupUidList()",
                "000000421900000000000000000000000000000000010000000000267b226669656c6473223a5b22756964222c2267726f757073225d2c227768657265223a5b5d7d",
                Request::Select(Select {
                    fields: vec![Field::Uid, Field::Groups],
                    scope: Scope::All,
                }),
            ),
            (
                "getClientIdListByGroup('g')",
                "0000004719000000000000000000000000000000000100000000002b7b226669656c6473223a5b22756964225d2c227768657265223a7b2267726f757073223a5b2267225d7d7d",
                Request::Select(Select {
                    fields: vec![Field::Uid],
                    scope: Scope::Matching {
                        groups: strings(&["g"]),
                        uids: vec![],
                        connections: vec![],
                    },
                }),
            ),
            (
                "getAllClientIdCount()",
                "0000001c180000000000000000000000000000000001000000000000",
                Request::GetClientCountByGroup { group: None },
            ),
            (
                "getClientIdCountByGroup('g')",
                "0000001d18000000000000000000000000000000000100000000000167",
                Request::GetClientCountByGroup {
                    group: Some("g".into()),
                },
            ),
            (
                "batchGetClientIdCountByGroup(['g', 7])",
                "000000231c00000000000000000000000000000000010000000000075b2267222c375d",
                Request::BatchGetClientCountByGroup {
                    groups: strings(&["g", "7"]),
                },
            ),
            (
                "getAllGroupIdList()",
                "0000001c1a0000000000000000000000000000000001000000000000",
                Request::GetGroupIdList,
            ),
            (
                "getAllClientSessions()",
                "0000001c0a0000000000000000000000000000000001000000000000",
                Request::GetAllClientSessions,
            ),
            (
                "getClientSessionsByGroup('g')",
                "0000001d17000000000000000000000000000000000100000000000167",
                Request::GetClientSessionsByGroup { group: "g".into() },
            ),
            (
                "closeClient($a)",
                "0000001e0700000000000000000000000000000005000000000000004e3b",
                Request::Kick {
                    connection: 5,
                    last: None,
                },
            ),
            (
                "closeClient($a, 'bye')",
                "0000001f070000000000000000000000000000000501000000000000627965",
                Request::Kick {
                    connection: 5,
                    last: Some(Bytes::from_static(b"bye")),
                },
            ),
            (
                "destoryClient($b)",
                "0000001c080000000000000000000000000000000901000000000000",
                Request::Destroy { connection: 9 },
            ),
            (
                "setSession($a, ['k' => 1])",
                "0000002ecc0000000000000000000000000000000501000000000012613a313a7b733a313a226b223b693a313b7d",
                Request::SetSession {
                    connection: 5,
                    session: Bytes::from_static(br#"a:1:{s:1:"k";i:1;}"#),
                },
            ),
            (
                "updateSession($a, ['k' => [2]])",
                "0000003809000000000000000000000000000000050100000000001c613a313a7b733a313a226b223b613a313a7b693a303b693a323b7d7d",
                Request::UpdateSession {
                    connection: 5,
                    session: Bytes::from_static(br#"a:1:{s:1:"k";a:1:{i:0;i:2;}}"#),
                },
            ),
            (
                "getSession($a)",
                "0000001ccb0000000000000000000000000000000501000000000000",
                Request::GetSessionByClientId { connection: 5 },
            ),
            (
                "the secret frame for $secretKey = 's3'",
                "0000002fca00000000000000000000000000000000010000000000007b227365637265745f6b6579223a227333227d",
                Request::Auth {
                    secret_key: Some("s3".into()),
                },
            ),
        ];
        for (call, hex_frame, want) in cases {
            assert_eq!(request(hex_frame).as_ref(), Ok(want), "{call}");
        }
        // bindUid($a, 0): GatewayClient leaves ext_data empty, GatewayWorker ignores it.
        assert_eq!(
            request("0000001c0c0000000000000000000000000000000501000000000000"),
            Err(BadRequest {
                cmd: 12,
                why: Why::EmptyName
            })
        );
    }

    #[test]
    fn names_are_read_as_php_reads_them() {
        let uids = |ext: &str| {
            parse(
                &frame(Cmd::SendToUid, 0, 1, ext.as_bytes(), b"m"),
                &Limits::default(),
            )
            .map(|r| match r {
                Request::SendToUid { uids, .. } => uids,
                other => panic!("{other:?}"),
            })
            .map_err(|e| e.why)
        };
        // Values of an object count as of a list (an associative $uid array).
        assert_eq!(uids(r#"{"a":"u1","b":7}"#), Ok(strings(&["u1", "7"])));
        assert_eq!(uids(r#"[-3, "é"]"#), Ok(strings(&["-3", "é"])));
        assert_eq!(uids("[]"), Ok(vec![]));
        assert_eq!(uids(r#"[1.5]"#), Err(Why::BadName));
        assert_eq!(uids(r#"[true]"#), Err(Why::BadName));
        assert_eq!(uids(r#"[["nested"]]"#), Err(Why::BadName));
        assert_eq!(uids(r#"[18446744073709551615]"#), Err(Why::BadName));
        assert!(matches!(uids(r#""u1""#), Err(Why::BadJson(_))));
        assert!(matches!(uids(r#"["u1"] x"#), Err(Why::BadJson(_))));
        assert!(matches!(uids(""), Err(Why::BadJson(_))));
        // "0" is a uid PHP's empty() refuses for bindUid, not for sends.
        assert_eq!(uids(r#"["0"]"#), Ok(strings(&["0"])));
        let bind = |ext: &[u8]| parse(&frame(Cmd::BindUid, 1, 1, ext, b""), &Limits::default());
        assert_eq!(why(bind(b"0")), Why::EmptyName);
        assert_eq!(why(bind(b"\xff")), Why::NameNotUtf8);
        assert_eq!(
            bind(b"00"),
            Ok(Request::BindUid {
                connection: 1,
                uid: "00".into()
            })
        );
    }

    #[test]
    fn connection_lists_are_keys_or_values_as_gatewayworker_reads_them() {
        let all = |ext: &str| {
            parse(
                &frame(Cmd::SendToAll, 0, 1, ext.as_bytes(), b"m"),
                &Limits::default(),
            )
            .map(|r| match r {
                Request::SendToAll { only, except, .. } => (only, except),
                other => panic!("{other:?}"),
            })
        };
        // exclude: the keys (isset($exclude[$id])); a list's keys are its indexes.
        assert_eq!(
            all(r#"{"exclude":{"7":7,"9":"x"}}"#),
            Ok((None, vec![7, 9]))
        );
        assert_eq!(all(r#"{"exclude":[0,0]}"#), Ok((None, vec![0, 1])));
        // connections: the values; ones that name no connection are skipped.
        assert_eq!(
            all(r#"{"connections":{"a":"5","b":-1,"c":4294967296,"d":"05","e":8}}"#),
            Ok((Some(vec![5, 8]), vec![]))
        );
        // connections wins over exclude; neither means everyone.
        assert_eq!(
            all(r#"{"exclude":{"1":1},"connections":[2]}"#),
            Ok((Some(vec![2]), vec![1]))
        );
        assert_eq!(all(r#"{"other":1}"#), Ok((None, vec![])));
        assert_eq!(all(r#"{"exclude":null}"#), Ok((None, vec![])));
        // Not what GatewayClient sends: refused rather than sent to everyone.
        assert!(matches!(
            all("[5]").map_err(|e| e.why),
            Err(Why::BadJson(_))
        ));
        assert!(matches!(
            all("nope").map_err(|e| e.why),
            Err(Why::BadJson(_))
        ));
    }

    #[test]
    fn select_scopes_follow_phps_truthiness() {
        let scope = |where_json: &str| {
            let ext = format!(r#"{{"fields":["uid"],"where":{where_json}}}"#);
            match parse(
                &frame(Cmd::Select, 0, 1, ext.as_bytes(), b""),
                &Limits::default(),
            ) {
                Ok(Request::Select(s)) => s.scope,
                other => panic!("{other:?}"),
            }
        };
        let nothing = Scope::Matching {
            groups: vec![],
            uids: vec![],
            connections: vec![],
        };
        for all in ["[]", "{}", "null", "false", "0", r#""""#, r#""0""#] {
            assert_eq!(scope(all), Scope::All, "{all}");
        }
        for none in ["[1]", r#"{"foo":[1]}"#, "true", "1", r#""x""#] {
            assert_eq!(scope(none), nothing, "{none}");
        }
        assert_eq!(
            scope(r#"{"uid":["u1",2],"groups":{"x":"g"},"connection_id":[3,"4"]}"#),
            Scope::Matching {
                groups: strings(&["g"]),
                uids: strings(&["u1", "2"]),
                connections: vec![3, 4],
            }
        );
        let fields = r#"{"fields":["session","id"],"where":[]}"#;
        assert_eq!(
            parse(
                &frame(Cmd::Select, 0, 1, fields.as_bytes(), b""),
                &Limits::default()
            ),
            Ok(Request::Select(Select {
                fields: vec![Field::Session, Field::Other("id".into())],
                scope: Scope::All,
            }))
        );
        let no_fields = parse(
            &frame(Cmd::Select, 0, 1, br#"{"where":[]}"#, b""),
            &Limits::default(),
        );
        assert!(matches!(no_fields.map_err(|e| e.why), Err(Why::BadJson(_))));
    }

    #[test]
    fn limits_refuse_long_lists_and_names() {
        let limits = Limits {
            max_list: 2,
            max_uid_bytes: 3,
            max_group_bytes: 4,
            ..Limits::default()
        };
        let send = |ext: &str| parse(&frame(Cmd::SendToUid, 0, 1, ext.as_bytes(), b"m"), &limits);
        assert!(send(r#"["a","b"]"#).is_ok());
        assert_eq!(why(send(r#"["a","b","c"]"#)), Why::TooMany { max: 2 });
        assert_eq!(why(send(r#"["abcd"]"#)), Why::NameTooLong { max: 3 });
        // An integer counts as its decimal text.
        assert_eq!(why(send("[-100]")), Why::NameTooLong { max: 3 });
        let group = |ext: &str| {
            parse(
                &frame(Cmd::SendToGroup, 0, 1, ext.as_bytes(), b"m"),
                &limits,
            )
        };
        assert!(group(r#"{"group":["abcd"]}"#).is_ok());
        assert_eq!(
            why(group(r#"{"group":["abcde"]}"#)),
            Why::NameTooLong { max: 4 }
        );
        assert_eq!(
            why(group(r#"{"group":["a"],"exclude":{"1":1,"2":2,"3":3}}"#)),
            Why::TooMany { max: 2 }
        );
        assert!(matches!(why(group(r#"{"exclude":null}"#)), Why::BadJson(_)));
        let join = parse(&frame(Cmd::JoinGroup, 1, 1, b"abcde", b""), &limits);
        assert_eq!(why(join), Why::NameTooLong { max: 4 });
        // A refused query still has its answer: GatewayWorker's empty one.
        let batch = parse(
            &frame(Cmd::BatchGetClientIdByUid, 0, 1, b"[1,2,3]", b""),
            &limits,
        );
        assert_eq!(batch.unwrap_err().reply(), Some(php::Value::list([])));
    }

    #[test]
    fn bodies_are_strings_or_nothing() {
        let send = |flag: u8, body: &[u8]| {
            parse(
                &frame(Cmd::SendToOne, 1, flag, b"", body),
                &Limits::default(),
            )
        };
        // A serialized string is a message as well as a raw one.
        assert_eq!(
            send(0, br#"s:2:"hi";"#),
            Ok(Request::SendToOne {
                connection: 1,
                message: text("hi")
            })
        );
        // An array or null would kill GatewayWorker's gateway: refused.
        assert_eq!(why(send(0, b"a:1:{i:0;i:1;}")), Why::NotText);
        assert_eq!(why(send(0, b"N;")), Why::NotText);
        assert_eq!(why(send(0, b"i:1;")), Why::NotText);
        assert_eq!(
            why(send(0, b"s:9:\"")),
            Why::BadBody(php::PhpError::Truncated)
        );
        assert_eq!(
            why(send(0, br#"O:8:"stdClass":0:{}"#)),
            Why::BadBody(php::PhpError::Unsupported(0))
        );
    }

    #[test]
    fn credentials_that_cannot_match_are_none() {
        let auth = |flag: u8, body: &[u8]| {
            parse(
                &frame(Cmd::GatewayClientConnect, 0, flag, b"", body),
                &Limits::default(),
            )
        };
        let none = Ok(Request::Auth { secret_key: None });
        assert_eq!(auth(1, b"{}"), none);
        assert_eq!(auth(1, br#"{"secret_key":1}"#), none);
        assert_eq!(auth(1, b"not json"), none);
        assert_eq!(auth(0, b"a:0:{}"), none);
        assert_eq!(
            auth(0, br#"s:17:"{"secret_key":""}";"#),
            Ok(Request::Auth {
                secret_key: Some(String::new())
            })
        );
    }

    #[test]
    fn worker_commands_and_unknown_numbers_are_refused() {
        for cmd in [1u8, 3, 4, 200, 201, 205] {
            let f = frame_of(
                &encode_frame(
                    &Header {
                        cmd,
                        ..Header::default()
                    },
                    b"",
                    b"",
                )
                .unwrap(),
            );
            assert_eq!(why(parse(&f, &Limits::default())), Why::WorkerOnly, "{cmd}");
        }
        let f = frame_of(
            &encode_frame(
                &Header {
                    cmd: 99,
                    ..Header::default()
                },
                b"",
                b"",
            )
            .unwrap(),
        );
        let bad = parse(&f, &Limits::default()).unwrap_err();
        assert_eq!(bad.why, Why::Unknown);
        assert_eq!(bad.reply(), None);
        assert_eq!(bad.to_string(), "command 99: no such command");
    }
}
