//! Runtime limits and timings, the library's view of the command line.
//!
//! `main.rs` turns clap arguments into a [`Config`]; tests build one directly, so the
//! library never sees clap and every knob has one default, here.

use std::time::Duration;

use crate::access::Cidr;
use crate::auth::Secret;

/// Every limit the daemon enforces. All are bounded by default.
#[derive(Debug, Clone)]
pub struct Config {
    /// Longest push line accepted on the internal port, in bytes (terminator excluded).
    pub max_line_bytes: usize,
    /// Longest uid a browser may bind, in bytes.
    pub max_uid_bytes: usize,
    /// Largest WebSocket message or frame a browser may send (uid, token), in bytes.
    pub max_message_bytes: usize,
    /// Most bytes a browser may send before its WebSocket handshake completes.
    pub max_handshake_bytes: usize,
    /// How long a fresh WebSocket may take to complete its handshake and send its uid.
    pub bind_timeout: Duration,
    /// How often the server pings a bound browser.
    pub ping_interval: Duration,
    /// How long a pinged browser has to answer (with any frame) before it is dropped.
    pub pong_timeout: Duration,
    /// Messages a connection may have waiting to be written before it counts as stuck.
    pub queue_depth: usize,
    /// Bytes a connection may have waiting to be written before it counts as stuck.
    pub queue_bytes: usize,
    /// WebSocket connections held at once (handshaking or bound); more wait in the backlog.
    pub max_ws_connections: usize,
    /// Backend connections on the internal port held at once.
    pub max_push_connections: usize,
    /// How long a shutdown may take to drain before connections are dropped.
    pub shutdown_timeout: Duration,
    /// How long a uid that lost its last connection keeps its group memberships.
    pub group_grace: Duration,
    /// Groups that may exist at once.
    pub max_groups: usize,
    /// Members one group may have.
    pub max_group_members: usize,
    /// Uids one command may name (`/send`, `/join`, `/leave`, `/kick`).
    pub max_list_uids: usize,
    /// When set, a browser binds only with an HS256 JWT whose `sub` is its uid.
    pub jwt_secret: Option<Secret>,
    /// When set, a WebSocket handshake carrying an `Origin` header outside this list is
    /// refused with 403 (cross-site WebSocket hijacking). Clients without `Origin`
    /// (non-browsers) are not affected.
    pub allowed_origins: Option<Vec<String>>,
    /// WebSocket connections one source address (an IPv6 /64) may hold.
    pub max_connections_per_ip: usize,
    /// WebSocket connections not bound yet (handshake or uid outstanding) held at once;
    /// more are answered 503. Kept below `max_ws_connections`, so strangers that connect
    /// and send nothing cannot take every slot.
    pub max_pending_handshakes: usize,
    /// WebSocket connections not bound yet that one source address (an IPv6 /64) may
    /// hold; more are answered 429.
    pub max_pending_per_ip: usize,
    /// When set, TCP backends must connect from one of these networks.
    pub push_allow: Option<Vec<Cidr>>,
    /// When set, a TCP backend's first line must be `/auth SECRET`.
    pub push_secret: Option<Secret>,
    /// A backend connection that neither sends a byte nor reads its replies for this long
    /// is closed (after its complete lines were answered), so idle or leaked connections
    /// cannot hold every slot of `max_push_connections`. `None`: never.
    pub push_idle_timeout: Option<Duration>,
    /// Longest group name a backend may use, in bytes.
    pub max_group_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_line_bytes: 1024 * 1024,
            max_uid_bytes: 256,
            max_message_bytes: 4096,
            max_handshake_bytes: 16 * 1024,
            bind_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(10),
            queue_depth: 1024,
            queue_bytes: 8 * 1024 * 1024,
            max_ws_connections: 16_384,
            max_push_connections: 1024,
            shutdown_timeout: Duration::from_secs(5),
            group_grace: Duration::from_secs(60),
            max_groups: 100_000,
            max_group_members: 100_000,
            max_list_uids: 1000,
            jwt_secret: None,
            allowed_origins: None,
            max_connections_per_ip: 1024,
            max_pending_handshakes: 4096,
            max_pending_per_ip: 64,
            push_allow: None,
            push_secret: None,
            push_idle_timeout: Some(Duration::from_secs(120)),
            max_group_bytes: 256,
        }
    }
}
