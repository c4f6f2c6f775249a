//! Each GatewayClient request as an engine call, and its answer as GatewayWorker's reply.
//! Sends and binds are void on the wire (GatewayClient reads nothing after them): what
//! they did goes to the debug log, a refusal to the info log.

use std::sync::Arc;

use tracing::{debug, info};

use crate::access::Peer;
use crate::addressed::{ConnAnswer, ConnOp, Fields, Row, Scope};
use crate::nodes::{How, To};
use crate::state::State;
use crate::wire::gateway::request::{self, Field, Message, Request};
use crate::wire::gateway::{reply, reply_serialized};
use crate::wire::php::{Array, Key, Value};
use crate::wire::{Payload, Uid};

/// A query's answer.
#[derive(Debug)]
pub(super) enum Reply {
    /// Serialized here.
    Value(Value),
    /// Bytes already serialized (a session, as it was stored).
    Serialized(Vec<u8>),
}

impl Reply {
    /// The bytes on the wire: a 4-byte length, then the serialized answer.
    pub(super) fn encode(&self) -> Option<Vec<u8>> {
        match self {
            Reply::Value(v) => reply(v).ok(),
            Reply::Serialized(b) => reply_serialized(b).ok(),
        }
    }
}

/// Runs `request`; `Some` for a query's reply.
pub(super) async fn run(request: Request, ctx: &Arc<State>, peer: Peer) -> Option<Reply> {
    // `getClientIdByUid` answers a list; `batchGetClientIdByUid` (even of one uid) a map.
    let one_uid = matches!(request, Request::GetClientIdByUid { .. });
    let op = match request {
        Request::SendToUid { uids, message } => {
            let msg = text(&message, peer)?;
            let uids: Vec<Uid> = uids.iter().map(|u| Uid::from(u.as_str())).collect();
            let reached = ctx
                .nodes
                .deliver(To::Uids(&uids), &Payload::from(msg), How::default())
                .resolve()
                .await;
            debug!(%peer, uids = uids.len(), connections = reached.delivery.queued, "sendToUid");
            return None;
        }
        Request::Auth { .. } => return None,
        Request::SendToOne {
            connection,
            message,
        } => ConnOp::SendTo {
            conns: vec![connection],
            msg: text(&message, peer)?,
        },
        Request::SendToAll {
            only,
            except,
            message,
        } => {
            let msg = text(&message, peer)?;
            match only {
                Some(conns) => ConnOp::SendTo { conns, msg },
                None => ConnOp::SendAll { except, msg },
            }
        }
        Request::Kick { connection, last } => ConnOp::Close {
            conn: connection,
            last: last.and_then(|b| match String::from_utf8(b.to_vec()) {
                Ok(s) => Some(s),
                Err(_) => {
                    info!(%peer, "closeClient: the last message is not UTF-8; closing without it");
                    None
                }
            }),
        },
        Request::Destroy { connection } => ConnOp::Close {
            conn: connection,
            last: None,
        },
        Request::UpdateSession {
            connection,
            session,
        } => ConnOp::UpdateSession {
            conn: connection,
            session: session.to_vec(),
        },
        Request::SetSession {
            connection,
            session,
        } => ConnOp::SetSession {
            conn: connection,
            session: session.to_vec(),
        },
        Request::GetAllClientSessions => ConnOp::Sessions { group: None },
        Request::IsOnline { connection } => ConnOp::IsOnline { conn: connection },
        Request::BindUid { connection, uid } => ConnOp::Bind {
            conn: connection,
            uid,
        },
        Request::UnbindUid { connection } => ConnOp::Unbind { conn: connection },
        Request::GetClientIdByUid { uid } => ConnOp::ConnsOfUids { uids: vec![uid] },
        Request::BatchGetClientIdByUid { uids } => ConnOp::ConnsOfUids { uids },
        Request::JoinGroup { connection, group } => ConnOp::Join {
            conn: connection,
            group,
        },
        Request::LeaveGroup { connection, group } => ConnOp::Leave {
            conn: connection,
            group,
        },
        Request::SendToGroup {
            groups,
            except,
            message,
        } => ConnOp::SendGroups {
            groups,
            except,
            msg: text(&message, peer)?,
        },
        Request::GetClientSessionsByGroup { group } => ConnOp::Sessions { group: Some(group) },
        Request::GetClientCountByGroup { group } => ConnOp::Count { group },
        Request::Select(select) => {
            let fields = Fields {
                uid: select.fields.contains(&Field::Uid),
                groups: select.fields.contains(&Field::Groups),
                session: select.fields.contains(&Field::Session),
            };
            let scope = match &select.scope {
                request::Scope::All => None,
                request::Scope::Matching {
                    groups,
                    uids,
                    connections,
                } => Some(Scope {
                    groups: groups.clone(),
                    uids: uids.clone(),
                    conns: connections.clone(),
                }),
            };
            let answer = ctx
                .nodes
                .conns(ConnOp::Select { fields, scope })
                .resolve()
                .await;
            let rows = match answer {
                ConnAnswer::Rows(rows) => rows,
                _ => Vec::new(),
            };
            return Some(Reply::Value(select_reply(&select.fields, rows)));
        }
        Request::GetGroupIdList => ConnOp::GroupIds,
        Request::Ungroup { group } => ConnOp::Ungroup { group },
        Request::BatchGetClientCountByGroup { groups } => ConnOp::CountGroups { groups },
        Request::GetSessionByClientId { connection } => ConnOp::Session { conn: connection },
    };
    let name = op_name(&op);
    let answer = ctx.nodes.conns(op).resolve().await;
    match answer {
        ConnAnswer::Done(n) => {
            debug!(%peer, call = name, connections = n, "gateway call done");
            None
        }
        ConnAnswer::Refused(why) => {
            info!(%peer, call = name, why, "gateway call refused");
            None
        }
        ConnAnswer::Online(on) => Some(Reply::Value(Value::Int(i64::from(on)))),
        ConnAnswer::ConnsOfUids(of) if one_uid => Some(Reply::Value(Value::list(
            of.into_iter().flat_map(|(_, c)| c).map(conn_value),
        ))),
        ConnAnswer::ConnsOfUids(of) => Some(Reply::Value(Value::Array(
            of.into_iter()
                .filter(|(_, c)| !c.is_empty())
                .map(|(uid, c)| {
                    (
                        Key::from_bytes(uid.as_bytes()),
                        Value::list(c.into_iter().map(conn_value)),
                    )
                })
                .collect(),
        ))),
        ConnAnswer::Count(n) => Some(Reply::Value(Value::Int(n as i64))),
        ConnAnswer::Counts(counts) => Some(Reply::Value(Value::Array(
            counts
                .into_iter()
                .map(|(g, n)| (Key::from_bytes(g.as_bytes()), Value::Int(n as i64)))
                .collect(),
        ))),
        ConnAnswer::Groups(groups) => Some(Reply::Value(Value::list(
            groups
                .iter()
                .map(|g| key_value(Key::from_bytes(g.as_bytes()))),
        ))),
        ConnAnswer::Sessions(sessions) => Some(Reply::Value(Value::Array(
            sessions
                .into_iter()
                .map(|(c, s)| (Key::Int(i64::from(c)), Value::Str(s.unwrap_or_default())))
                .collect(),
        ))),
        // GatewayWorker: the session's bytes, `a:0:{}` for none, `N;` for no such connection.
        ConnAnswer::Session(Some(Some(bytes))) => Some(Reply::Serialized(bytes)),
        ConnAnswer::Session(Some(None)) => Some(Reply::Serialized(b"a:0:{}".to_vec())),
        ConnAnswer::Session(None) => Some(Reply::Value(Value::Null)),
        ConnAnswer::Rows(_) => None,
    }
}

/// The message as browsers get it: the text as sent, or with `$raw`, the payload of the
/// one WebSocket text frame it holds. `None` (logged) for anything else.
fn text(message: &Message, peer: Peer) -> Option<String> {
    let bytes: &[u8] = if message.raw {
        match raw_text_frame(&message.text) {
            Some(payload) => payload,
            None => {
                info!(%peer, "a $raw message that is not one unmasked WebSocket text frame is refused");
                return None;
            }
        }
    } else {
        &message.text
    };
    match std::str::from_utf8(bytes) {
        Ok(s) => Some(s.to_owned()),
        Err(_) => {
            info!(%peer, "a message that is not UTF-8 is refused (browsers get text frames)");
            None
        }
    }
}

/// The payload of `frame` if it is exactly one final, unmasked text frame.
fn raw_text_frame(frame: &[u8]) -> Option<&[u8]> {
    let (&b0, rest) = frame.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    if b0 != 0x81 || b1 & 0x80 != 0 {
        return None;
    }
    let (len, rest) = match b1 & 0x7f {
        126 => {
            let (n, rest) = rest.split_first_chunk::<2>()?;
            (u16::from_be_bytes(*n) as usize, rest)
        }
        127 => {
            let (n, rest) = rest.split_first_chunk::<8>()?;
            (usize::try_from(u64::from_be_bytes(*n)).ok()?, rest)
        }
        n => (n as usize, rest),
    };
    (rest.len() == len).then_some(rest)
}

fn conn_value(c: u32) -> Value {
    Value::Int(i64::from(c))
}

/// A key as PHP's `array_keys` gives it back: an int for a decimal, else the string.
fn key_value(k: Key) -> Value {
    match k {
        Key::Int(n) => Value::Int(n),
        Key::Str(s) => Value::Str(s),
    }
}

/// `[connection_id => [field => value]]`, each row's fields in the order asked: `uid` a
/// string or null, `groups` `[group => group]` or null, `session` the bytes or `""`, any
/// other name null (GatewayWorker's connection has no such property pushwire keeps).
fn select_reply(fields: &[Field], rows: Vec<Row>) -> Value {
    Value::Array(
        rows.into_iter()
            .map(|row| {
                let values: Array = fields
                    .iter()
                    .map(|f| {
                        let v = match f {
                            Field::Uid => row
                                .uid
                                .clone()
                                .map_or(Value::Null, |u| Value::Str(u.into_bytes())),
                            Field::Groups => row.groups.clone().map_or(Value::Null, |gs| {
                                Value::Array(
                                    gs.into_iter()
                                        .map(|g| (Key::from_bytes(g.as_bytes()), Value::str(g)))
                                        .collect(),
                                )
                            }),
                            Field::Session => Value::Str(row.session.clone().unwrap_or_default()),
                            Field::Other(_) => Value::Null,
                        };
                        (Key::Str(f.name().as_bytes().to_vec()), v)
                    })
                    .collect();
                (Key::Int(i64::from(row.conn)), Value::Array(values))
            })
            .collect(),
    )
}

/// The call's name, for the log.
fn op_name(op: &ConnOp) -> &'static str {
    match op {
        ConnOp::SendTo { .. } => "sendToClient",
        ConnOp::SendAll { .. } => "sendToAll",
        ConnOp::SendGroups { .. } => "sendToGroup",
        ConnOp::Close { .. } => "closeClient",
        ConnOp::Bind { .. } => "bindUid",
        ConnOp::Unbind { .. } => "unbindUid",
        ConnOp::Join { .. } => "joinGroup",
        ConnOp::Leave { .. } => "leaveGroup",
        ConnOp::Ungroup { .. } => "ungroup",
        ConnOp::SetSession { .. } => "setSession",
        ConnOp::UpdateSession { .. } => "updateSession",
        ConnOp::IsOnline { .. } => "isOnline",
        ConnOp::ConnsOfUids { .. } => "getClientIdByUid",
        ConnOp::Count { .. } => "getClientIdCountByGroup",
        ConnOp::CountGroups { .. } => "batchGetClientIdCountByGroup",
        ConnOp::GroupIds => "getAllGroupIdList",
        ConnOp::Sessions { .. } => "getAllClientSessions",
        ConnOp::Session { .. } => "getSession",
        ConnOp::Select { .. } => "select",
    }
}
