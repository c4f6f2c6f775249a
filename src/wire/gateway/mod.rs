//! GatewayWorker's wire, as the GatewayClient PHP library speaks it to a gateway and to a
//! Register, so that unmodified GatewayClient code can push through pushwire. No I/O.
//!
//! - [`take_frame`]: the binary frames a GatewayClient sends a gateway (a 28-byte
//!   big-endian header, then `ext_data`, then the body), bounded, every fault an error
//!   value; [`Cmd`]: the command catalog.
//! - [`request`]: each frame as a typed [`Request`], its JSON and PHP-serialized parts
//!   parsed under [`Limits`].
//! - [`reply`]: what a gateway answers a query with (a 4-byte length, then PHP's
//!   `serialize()` of the answer); GatewayClient reads nothing after a send.
//! - [`register`]: the Register's text lines (discovery of the gateways' addresses).
//! - [`ClientId`]: the 20 hex digits that name a browser connection *and* the gateway
//!   address GatewayClient sends its commands for it to.
//!
//! docs/gateway.md has the whole exchange as a user sees it.

pub mod client_id;
pub mod register;
pub mod request;

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use super::php;

pub use client_id::{BadClientId, ClientId};
pub use request::{BadRequest, Field, Limits, Message, Request, Scope, Select, Why};

/// Bytes in a frame's header.
pub const HEAD_LEN: usize = 28;

/// Flag bit: the body is the message itself, not PHP-`serialize()`d (GatewayClient sets
/// it whenever the body is a scalar, which its calls always pass).
pub const FLAG_BODY_IS_SCALAR: u8 = 0x01;
/// Flag bit (`$raw = true`): the gateway must not apply its client protocol's encoding,
/// the body being already one encoded frame of that protocol.
pub const FLAG_NOT_CALL_ENCODE: u8 = 0x02;

/// A frame's command byte. The numbers are GatewayWorker's; each variant says which
/// GatewayClient call sends it and what its parts hold ([`request`] parses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cmd {
    /// Gateway → BusinessWorker: a browser connected.
    OnConnect = 1,
    /// Gateway → BusinessWorker: a browser sent a message.
    OnMessage = 3,
    /// Gateway → BusinessWorker: a browser went away.
    OnClose = 4,
    /// `sendToClient`: header `connection_id`, body the message.
    SendToOne = 5,
    /// `sendToAll`: ext empty (everyone), JSON `{"connections":{…}}` (only those) or
    /// `{"exclude":{…}}` (all but those, keys being connection ids); body the message.
    SendToAll = 6,
    /// `closeClient`: header `connection_id`; body the last message, or `serialize(null)`.
    Kick = 7,
    /// `destoryClient`: header `connection_id`.
    Destroy = 8,
    /// `updateSession`: header `connection_id`; ext the serialized array to merge in.
    UpdateSession = 9,
    /// `getAllClientSessions()`: reply `[connection_id => session bytes]`.
    GetAllClientSessions = 10,
    /// `isOnline`: header `connection_id`; reply `0` or `1`.
    IsOnline = 11,
    /// `bindUid`: header `connection_id`; ext the uid.
    BindUid = 12,
    /// `unbindUid`: header `connection_id` (ext the uid, which the gateway ignores).
    UnbindUid = 13,
    /// `sendToUid`: ext a JSON array of uids; body the message.
    SendToUid = 14,
    /// `getClientIdByUid` (and `isUidOnline`): ext the uid; reply `[connection_id, …]`.
    GetClientIdByUid = 15,
    /// `batchGetClientIdByUid` (and `isUidsOnline`): ext a JSON array of uids; reply
    /// `[uid => [connection_id, …]]`.
    BatchGetClientIdByUid = 16,
    /// `joinGroup`: header `connection_id`; ext the group.
    JoinGroup = 20,
    /// `leaveGroup`: header `connection_id`; ext the group.
    LeaveGroup = 21,
    /// `sendToGroup`: ext JSON `{"group":[…],"exclude":null|{…}}`; body the message.
    SendToGroup = 22,
    /// `getClientSessionsByGroup` (and `getAllClientSessions($group)`): ext the group;
    /// reply `[connection_id => session bytes]`.
    GetClientSessionsByGroup = 23,
    /// `getClientIdCountByGroup` and its aliases: ext the group, empty for all
    /// connections; reply a count.
    GetClientCountByGroup = 24,
    /// The queries built on `select` (`getAllClientIdList`, `getUidByClientId`,
    /// `getUidListByGroup`, …): ext JSON `{"fields":[…],"where":{…}}`; reply
    /// `[connection_id => [field => value]]`.
    Select = 25,
    /// `getAllGroupIdList`: reply `[group, …]`.
    GetGroupIdList = 26,
    /// `ungroup`: ext the group.
    Ungroup = 27,
    /// `batchGetClientIdCountByGroup`: ext a JSON array of groups; reply
    /// `[group => count]`.
    BatchGetClientCountByGroup = 28,
    /// A BusinessWorker introducing itself to a gateway (body JSON with its secret).
    WorkerConnect = 200,
    /// Gateway → BusinessWorker keep-alive.
    Ping = 201,
    /// The first frame of each GatewayClient connection when `$secretKey` is set: body
    /// JSON `{"secret_key":"…"}`.
    GatewayClientConnect = 202,
    /// `getSession`: header `connection_id`; reply the session's serialized bytes.
    GetSessionByClientId = 203,
    /// `setSession`: header `connection_id`; ext the serialized session.
    SetSession = 204,
    /// Gateway → BusinessWorker: a WebSocket handshake's request.
    OnWebsocketConnect = 205,
}

impl Cmd {
    /// The command with this number, if GatewayWorker has one.
    pub fn from_u8(n: u8) -> Option<Cmd> {
        use Cmd::*;
        Some(match n {
            1 => OnConnect,
            3 => OnMessage,
            4 => OnClose,
            5 => SendToOne,
            6 => SendToAll,
            7 => Kick,
            8 => Destroy,
            9 => UpdateSession,
            10 => GetAllClientSessions,
            11 => IsOnline,
            12 => BindUid,
            13 => UnbindUid,
            14 => SendToUid,
            15 => GetClientIdByUid,
            16 => BatchGetClientIdByUid,
            20 => JoinGroup,
            21 => LeaveGroup,
            22 => SendToGroup,
            23 => GetClientSessionsByGroup,
            24 => GetClientCountByGroup,
            25 => Select,
            26 => GetGroupIdList,
            27 => Ungroup,
            28 => BatchGetClientCountByGroup,
            200 => WorkerConnect,
            201 => Ping,
            202 => GatewayClientConnect,
            203 => GetSessionByClientId,
            204 => SetSession,
            205 => OnWebsocketConnect,
            _ => return None,
        })
    }

    /// Whether GatewayClient waits for a reply (a query). It reads none after any other
    /// command, so a gateway must send none.
    pub fn expects_reply(self) -> bool {
        self.empty_reply().is_some()
    }

    /// What GatewayWorker answers this query with when nothing matches (no such
    /// connection, uid or group): also pushwire's answer to a query it refuses, so a
    /// caller never waits for a reply that will not come. `None` for commands that get
    /// no reply.
    pub fn empty_reply(self) -> Option<php::Value> {
        use Cmd::*;
        match self {
            IsOnline | GetClientCountByGroup => Some(php::Value::Int(0)),
            // getSession of a connection that is not there.
            GetSessionByClientId => Some(php::Value::Null),
            GetAllClientSessions
            | GetClientIdByUid
            | BatchGetClientIdByUid
            | GetClientSessionsByGroup
            | Select
            | GetGroupIdList
            | BatchGetClientCountByGroup => Some(php::Value::list([])),
            _ => None,
        }
    }

    /// Sent by a gateway to a BusinessWorker, or by a BusinessWorker to a gateway: never
    /// by GatewayClient (pushwire has no BusinessWorkers).
    pub fn is_worker_only(self) -> bool {
        use Cmd::*;
        matches!(
            self,
            OnConnect | OnMessage | OnClose | WorkerConnect | Ping | OnWebsocketConnect
        )
    }

    /// GatewayWorker's constant for it, without `CMD_` (for log lines).
    pub fn name(self) -> &'static str {
        use Cmd::*;
        match self {
            OnConnect => "ON_CONNECT",
            OnMessage => "ON_MESSAGE",
            OnClose => "ON_CLOSE",
            SendToOne => "SEND_TO_ONE",
            SendToAll => "SEND_TO_ALL",
            Kick => "KICK",
            Destroy => "DESTROY",
            UpdateSession => "UPDATE_SESSION",
            GetAllClientSessions => "GET_ALL_CLIENT_SESSIONS",
            IsOnline => "IS_ONLINE",
            BindUid => "BIND_UID",
            UnbindUid => "UNBIND_UID",
            SendToUid => "SEND_TO_UID",
            GetClientIdByUid => "GET_CLIENT_ID_BY_UID",
            BatchGetClientIdByUid => "BATCH_GET_CLIENT_ID_BY_UID",
            JoinGroup => "JOIN_GROUP",
            LeaveGroup => "LEAVE_GROUP",
            SendToGroup => "SEND_TO_GROUP",
            GetClientSessionsByGroup => "GET_CLIENT_SESSIONS_BY_GROUP",
            GetClientCountByGroup => "GET_CLIENT_COUNT_BY_GROUP",
            Select => "SELECT",
            GetGroupIdList => "GET_GROUP_ID_LIST",
            Ungroup => "UNGROUP",
            BatchGetClientCountByGroup => "BATCH_GET_CLIENT_COUNT_BY_GROUP",
            WorkerConnect => "WORKER_CONNECT",
            Ping => "PING",
            GatewayClientConnect => "GATEWAY_CLIENT_CONNECT",
            GetSessionByClientId => "GET_SESSION_BY_CLIENT_ID",
            SetSession => "SET_SESSION",
            OnWebsocketConnect => "ON_WEBSOCKET_CONNECT",
        }
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), *self as u8)
    }
}

/// A frame's header after its length: PHP's `pack("NCNnNnNCnN", …)` less `pack_len`
/// and `ext_len`, which [`take_frame`] turns into the frame's parts.
///
/// GatewayClient fills only `cmd`, `connection_id` and `flag`; the addresses are a
/// gateway's own bookkeeping towards BusinessWorkers, and stay 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// The command byte ([`Cmd::from_u8`]).
    pub cmd: u8,
    /// The gateway's inner IPv4 address, as a number.
    pub local_ip: u32,
    /// The gateway's inner port.
    pub local_port: u16,
    /// The browser's IPv4 address.
    pub client_ip: u32,
    /// The browser's port.
    pub client_port: u16,
    /// Which browser connection of the gateway the command is for.
    pub connection_id: u32,
    /// [`FLAG_BODY_IS_SCALAR`], [`FLAG_NOT_CALL_ENCODE`].
    pub flag: u8,
    /// The gateway's public port.
    pub gateway_port: u16,
}

/// One frame: its header, `ext_data` and body, sharing the bytes they were read into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The header.
    pub header: Header,
    /// `ext_data`: a uid, a group, a JSON argument or a serialized session, by command.
    pub ext: Bytes,
    /// The body: the message, raw or serialized as [`FLAG_BODY_IS_SCALAR`] says.
    pub body: Bytes,
}

/// Why the bytes on a gateway connection are not a frame. Nothing after such a fault can
/// be trusted to start a frame, so the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// `pack_len` is smaller than the header itself.
    TooShort {
        /// The length the frame gave.
        pack_len: u32,
    },
    /// `pack_len` is over the limit.
    TooLong {
        /// The length the frame gave.
        pack_len: u32,
        /// The limit.
        max: usize,
    },
    /// `ext_len` says `ext_data` runs past the frame's end.
    ExtTooLong {
        /// The length `ext_data` was given.
        ext_len: u32,
        /// What was left of the frame after the header.
        room: u32,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooShort { pack_len } => write!(
                f,
                "frame length {pack_len} is shorter than its {HEAD_LEN}-byte header"
            ),
            FrameError::TooLong { pack_len, max } => {
                write!(
                    f,
                    "frame length {pack_len} is over the limit of {max} bytes"
                )
            }
            FrameError::ExtTooLong { ext_len, room } => write!(
                f,
                "ext_data length {ext_len} runs past the frame ({room} bytes after the header)"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// Takes the next complete frame off the front of `buf`: `Ok(None)` until it has all
/// arrived. A frame is at most `max` bytes, header included (`max` below [`HEAD_LEN`]
/// counts as [`HEAD_LEN`]), and its length is checked as soon as its first 4 bytes are
/// in, so a reader never holds more than `max` bytes waiting for one.
pub fn take_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
    let Some(len) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let pack_len = u32::from_be_bytes(*len);
    let max = max.max(HEAD_LEN);
    let len = pack_len as usize;
    if len < HEAD_LEN {
        return Err(FrameError::TooShort { pack_len });
    }
    if len > max {
        return Err(FrameError::TooLong { pack_len, max });
    }
    if buf.len() < len {
        return Ok(None);
    }
    let mut frame = buf.split_to(len).freeze();
    frame.advance(4);
    let header = Header {
        cmd: frame.get_u8(),
        local_ip: frame.get_u32(),
        local_port: frame.get_u16(),
        client_ip: frame.get_u32(),
        client_port: frame.get_u16(),
        connection_id: frame.get_u32(),
        flag: frame.get_u8(),
        gateway_port: frame.get_u16(),
    };
    let ext_len = frame.get_u32();
    let room = (len - HEAD_LEN) as u32;
    if ext_len > room {
        return Err(FrameError::ExtTooLong { ext_len, room });
    }
    let ext = frame.split_to(ext_len as usize);
    Ok(Some(Frame {
        header,
        ext,
        body: frame,
    }))
}

/// A frame or a reply longer than its 32-bit length field can say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooBig;

impl fmt::Display for TooBig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "longer than a 32-bit length can say")
    }
}

impl std::error::Error for TooBig {}

/// The bytes of one frame, as GatewayClient's encoder writes them (for tests and tools;
/// a gateway sends replies, not frames, to GatewayClient).
pub fn encode_frame(header: &Header, ext: &[u8], body: &[u8]) -> Result<Vec<u8>, TooBig> {
    let total = HEAD_LEN
        .checked_add(ext.len())
        .and_then(|n| n.checked_add(body.len()))
        .ok_or(TooBig)?;
    let pack_len = u32::try_from(total).map_err(|_| TooBig)?;
    let ext_len = u32::try_from(ext.len()).map_err(|_| TooBig)?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&pack_len.to_be_bytes());
    out.push(header.cmd);
    out.extend_from_slice(&header.local_ip.to_be_bytes());
    out.extend_from_slice(&header.local_port.to_be_bytes());
    out.extend_from_slice(&header.client_ip.to_be_bytes());
    out.extend_from_slice(&header.client_port.to_be_bytes());
    out.extend_from_slice(&header.connection_id.to_be_bytes());
    out.push(header.flag);
    out.extend_from_slice(&header.gateway_port.to_be_bytes());
    out.extend_from_slice(&ext_len.to_be_bytes());
    out.extend_from_slice(ext);
    out.extend_from_slice(body);
    Ok(out)
}

/// A gateway's answer to a query: a 4-byte big-endian length, then `serialize($value)`.
pub fn reply(value: &php::Value) -> Result<Vec<u8>, TooBig> {
    let mut out = vec![0; 4];
    value.write_to(&mut out);
    set_length(out)
}

/// The same around bytes that are already serialized (a session, stored as it came).
pub fn reply_serialized(serialized: &[u8]) -> Result<Vec<u8>, TooBig> {
    let mut out = Vec::with_capacity(4 + serialized.len());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(serialized);
    set_length(out)
}

fn set_length(mut out: Vec<u8>) -> Result<Vec<u8>, TooBig> {
    let len = u32::try_from(out.len() - 4).map_err(|_| TooBig)?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GatewayClient\Gateway::bindUid('7f000001597400000003', 'u1')` without a secret:
    /// the bytes the library wrote (GatewayClient 5dfa435, PHP 8.2).
    const BIND_U1: &[u8] = b"\x00\x00\x00\x1e\x0c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x01\x00\x00\x00\x00\x00\x02u1";

    #[test]
    fn reads_a_captured_frame() {
        let mut buf = BytesMut::from(BIND_U1);
        let frame = take_frame(&mut buf, 1024).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(Cmd::from_u8(frame.header.cmd), Some(Cmd::BindUid));
        assert_eq!(frame.header.connection_id, 3);
        assert_eq!(frame.header.flag, FLAG_BODY_IS_SCALAR);
        assert_eq!(&frame.ext[..], b"u1");
        assert!(frame.body.is_empty());
        assert_eq!(
            encode_frame(&frame.header, &frame.ext, &frame.body).unwrap(),
            BIND_U1
        );
    }

    #[test]
    fn waits_for_the_whole_frame_and_leaves_the_next() {
        let mut stream = BIND_U1.to_vec();
        stream.extend_from_slice(&BIND_U1[..10]);
        let mut buf = BytesMut::new();
        for (i, b) in stream.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = take_frame(&mut buf, 1024).unwrap();
            assert_eq!(got.is_some(), i == BIND_U1.len() - 1, "after byte {i}");
        }
        assert_eq!(&buf[..], &BIND_U1[..10]);
    }

    #[test]
    fn bad_lengths_are_errors_as_soon_as_they_are_known() {
        let mut short = BytesMut::from(&[0u8, 0, 0, 27][..]);
        assert_eq!(
            take_frame(&mut short, 1024),
            Err(FrameError::TooShort { pack_len: 27 })
        );
        let mut long = BytesMut::from(&[0u8, 0, 4, 1][..]);
        assert_eq!(
            take_frame(&mut long, 1024),
            Err(FrameError::TooLong {
                pack_len: 1025,
                max: 1024
            })
        );
        let mut ext = BytesMut::from(BIND_U1);
        ext[27] = 4; // ext_len 4 with 2 bytes after the header
        assert_eq!(
            take_frame(&mut ext, 1024),
            Err(FrameError::ExtTooLong {
                ext_len: 4,
                room: 2
            })
        );
        // A limit under the header's size still takes a bare header.
        let bare = encode_frame(&Header::default(), b"", b"").unwrap();
        assert!(
            take_frame(&mut BytesMut::from(&bare[..]), 0)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn replies_are_length_then_serialize() {
        assert_eq!(reply(&php::Value::Int(1)).unwrap(), b"\x00\x00\x00\x04i:1;");
        assert_eq!(
            reply(&php::Value::list([])).unwrap(),
            b"\x00\x00\x00\x06a:0:{}"
        );
        assert_eq!(reply_serialized(b"N;").unwrap(), b"\x00\x00\x00\x02N;");
    }

    #[test]
    fn the_catalog_is_gatewayworkers() {
        for n in 0..=255u8 {
            if let Some(cmd) = Cmd::from_u8(n) {
                assert_eq!(cmd as u8, n);
            }
        }
        let queries: Vec<u8> = (0..=255u8)
            .filter(|&n| Cmd::from_u8(n).is_some_and(Cmd::expects_reply))
            .collect();
        assert_eq!(queries, [10, 11, 15, 16, 23, 24, 25, 26, 28, 203]);
        assert_eq!(Cmd::from_u8(2), None);
        assert_eq!(Cmd::from_u8(29), None);
        assert_eq!(
            Cmd::GetSessionByClientId.empty_reply(),
            Some(php::Value::Null)
        );
    }
}
