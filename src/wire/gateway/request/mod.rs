//! One gateway frame → one typed [`Request`], or a [`BadRequest`] that says why not.
//!
//! Each command's parts are read as GatewayWorker's gateway reads them (`json_decode` into
//! PHP arrays, `empty()` on names, keys vs values), with two differences, both refusals
//! where GatewayWorker would do something worse: every list and name is bounded by
//! [`Limits`], and a part that GatewayClient never sends in that shape (a `sendToAll`
//! argument that is not JSON, a message that is an array) is an error instead of a
//! broadcast to everyone or a crashed gateway.

use std::fmt;

use bytes::Bytes;

mod args;
#[cfg(test)]
mod tests;

use args::{AllSeed, Fault, GroupSeed, NamesSeed, SelectSeed, json};

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
