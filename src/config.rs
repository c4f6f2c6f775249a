//! Runtime limits and timings, the library's view of the command line.
//!
//! The binary (`cli/settings.rs`) turns clap arguments into a [`Config`]; tests build one
//! directly, so the library never sees clap and every knob has one default, here.

use std::time::Duration;

use crate::access::Cidr;
use crate::auth::Secret;
use crate::events::EventsConfig;
use crate::groups::GroupLimits;
use crate::history::HistoryLimits;
use crate::outbox::QueueLimits;
use crate::tls::TlsFiles;
use crate::wire::command::Limits;

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
    /// Peers whose browser connections carry the client's address in a forwarding header
    /// (a reverse proxy such as nginx): the per-address caps and the logs use that address
    /// (`forwarded.rs`). Loopback by default, so a proxy on the same host works as it is;
    /// empty: nobody, every header ignored.
    pub trusted_proxies: Vec<Cidr>,
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
    /// HTTP door: how long a request head may take, and then how long its body may
    /// take (each; 408 for a body not complete in time).
    pub http_request_timeout: Duration,
    /// HTTP door: most bytes of a request head (at least 8 KiB, hyper's floor).
    pub http_max_header_bytes: usize,
    /// HTTP door: most bytes of a request body; more get 413.
    pub http_max_body_bytes: usize,
    /// HTTP door: connections held at once; more wait in the backlog.
    pub max_http_connections: usize,
    /// HTTP door: connections one source address (an IPv6 /64) may hold; more are answered
    /// 429 at accept, so one address cannot hold every slot (a slowloris). Kept below
    /// `max_http_connections`.
    pub max_http_connections_per_ip: usize,
    /// Cluster mode: the Redis URL (`redis://host:port[/db]`, `rediss://`); `None` is
    /// a single node that never touches Redis.
    pub redis: Option<String>,
    /// Cluster mode: what every Redis key and channel name starts with, so clusters with
    /// different prefixes share a Redis without hearing each other.
    pub redis_prefix: RedisPrefix,
    /// Cluster mode: the longest a reply waits for Redis and the other nodes; Redis not
    /// answering for this long is taken as down until it answers again.
    pub cluster_timeout: Duration,
    /// Cluster mode: how long opening a connection to Redis may take, and how long one may
    /// go with its data unacknowledged (a cut link) before it is closed and opened again.
    pub cluster_link_timeout: Duration,
    /// Cluster mode: publishes waiting to be sent to Redis; past it a push is answered from
    /// local delivery alone (`/push`: `unavailable` for the rest of the cluster).
    pub cluster_publish_queue: usize,
    /// Cluster mode: messages from Redis waiting for this node to handle them; past it
    /// the oldest are lost (logged; their pushes were answered `partial` / `fail`).
    pub cluster_message_buffer: usize,
    /// `wss://` on the browser port: the certificate and key files; `None` is `ws://`.
    pub tls: Option<TlsFiles>,
    /// Protocol v1 (`docs/protocol.md`): messages kept per uid; 0 turns history off.
    pub history_messages: usize,
    /// Payload bytes kept per uid.
    pub history_bytes: usize,
    /// How old a kept message may get.
    pub history_age: Duration,
    /// Bytes kept over all uids (payload plus bookkeeping).
    pub history_total_bytes: usize,
    /// How long a uid's history outlives its last connection.
    pub history_keep: Duration,
    /// Uids with a history at most (single node); at the bound, offline uids' histories
    /// are evicted to make room (`history.rs`). `0` (the command line's default) means
    /// `max_ws_connections` + 65,536.
    pub history_max_uids: usize,
    /// Acks in a row that acknowledge nothing new a protocol v1 tab may send before it
    /// is closed (1008 `ack flood`).
    pub max_stale_acks: usize,
    /// The longest `/push ... ttl=` honoured (longer ones are cut to it).
    pub max_queue_ttl: Duration,
    /// The longest `/push ... ack=` honoured (longer ones are cut to it).
    pub max_ack_wait: Duration,
    /// How long an accepted `/push` is remembered for retries; `None`: not at all.
    pub dedupe_window: Option<Duration>,
    /// How many accepted `/push`es are remembered at most.
    pub dedupe_max_entries: usize,
    /// Events for the backend: webhook receivers, their bounds, the `/events` ring.
    pub events: EventsConfig,
    /// The secret webhook deliveries are signed with (required with receivers).
    pub events_secret: Option<Secret>,
    /// The Pusher apps served at `/app/{key}` and `/apps/{id}/…` (`--pusher-apps`);
    /// `None`: no Pusher door.
    pub pusher_apps: Option<std::sync::Arc<crate::channels::Apps>>,
    /// Pusher: the `activity_timeout` told to clients, and the silence after which the
    /// daemon pings a client itself.
    pub pusher_activity_timeout: Duration,
    /// Pusher: how long a pinged client has to answer before it is closed with 4201.
    pub pusher_pong_timeout: Duration,
    /// The GatewayClient door and its greeted browser listener (`docs/gateway.md`);
    /// `None`: off.
    pub gateway: Option<GatewayConfig>,
    /// The Redis-queue door (`--redis-queue`); `None`: off.
    pub redis_queue: Option<QueueConfig>,
}

/// The Redis-queue door (seed 000's push centre): elements an app `LPUSH`es onto Redis
/// lists, taken in order, each run once (`docs/redis-queue.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// The Redis holding the lists (`--redis-queue-url`, default `--redis`).
    pub url: String,
    /// Each list, and the list its replies go to (if asked for).
    pub queues: Vec<Queue>,
    /// Longest element taken; a longer one is refused (logged, answered `error`).
    pub max_bytes: usize,
    /// Elements taken per second at most, over all lists.
    pub rate: u32,
    /// Replies kept on a reply list at most (older ones are trimmed).
    pub max_replies: usize,
}

/// One `--redis-queue KEY[=REPLIES]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// The list the app pushes onto.
    pub key: String,
    /// The list each element's reply line is pushed onto, in order.
    pub replies: Option<String>,
}

/// The GatewayClient door (issue 22): GatewayWorker's Register and gateway endpoints, and
/// the browser listener that greets each connection with its `client_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// The address the Register hands out and every `client_id` carries: GatewayClient
    /// connects to it (`--gateway-advertise`).
    pub advertise: std::net::SocketAddrV4,
    /// GatewayClient's `$secretKey` (`--gateway-secret`, else `--push-secret`); `None`:
    /// no secret.
    pub secret: Option<String>,
    /// The first frame of a greeted connection; `{client_id}` is replaced by its id.
    pub greeting: String,
    /// How long a greeted connection may stay unclaimed (no `bindUid`, `joinGroup` or
    /// session) before it is closed.
    pub claim_timeout: Duration,
    /// Longest frame a GatewayClient may send, header included.
    pub max_frame_bytes: usize,
    /// GatewayClient connections (gateway and Register endpoints together) held at once.
    pub max_connections: usize,
    /// A connection's session, serialized.
    pub max_session_bytes: usize,
}

impl GatewayConfig {
    /// The default greeting: the GatewayWorker demo's `onConnect` message.
    pub const GREETING: &'static str = r#"{"type":"init","client_id":"{client_id}"}"#;

    /// A `$secretKey` GatewayClient can send: UTF-8 without `"` or `\`, which it pastes
    /// into its Register line unescaped. Checked at start and at every reload.
    pub fn check_secret(secret: Option<&Secret>) -> Result<(), String> {
        let Some(secret) = secret else {
            return Ok(());
        };
        match std::str::from_utf8(secret.reveal()) {
            Ok(s) if !s.contains(['"', '\\']) => Ok(()),
            _ => Err(
                "the gateway secret is not UTF-8 or holds a \" or \\, which GatewayClient \
                      cannot send: set the gateway secret"
                    .into(),
            ),
        }
    }

    /// A door advertising `advertise`, with every other setting at its default.
    pub fn new(advertise: std::net::SocketAddrV4) -> GatewayConfig {
        GatewayConfig {
            advertise,
            secret: None,
            greeting: GatewayConfig::GREETING.to_owned(),
            claim_timeout: Duration::from_secs(60),
            max_frame_bytes: 1024 * 1024 + 64 * 1024,
            max_connections: 256,
            max_session_bytes: 64 * 1024,
        }
    }
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
            trusted_proxies: crate::access::loopback(),
            push_allow: None,
            push_secret: None,
            push_idle_timeout: Some(Duration::from_secs(120)),
            max_group_bytes: 256,
            http_request_timeout: Duration::from_secs(10),
            http_max_header_bytes: 16 * 1024,
            http_max_body_bytes: 4 * 1024 * 1024,
            max_http_connections: 256,
            max_http_connections_per_ip: 64,
            redis: None,
            redis_prefix: RedisPrefix::default(),
            cluster_timeout: Duration::from_millis(1000),
            cluster_link_timeout: Duration::from_millis(3000),
            cluster_publish_queue: 262_144,
            cluster_message_buffer: 16_384,
            tls: None,
            history_messages: 100,
            history_bytes: 256 * 1024,
            history_age: Duration::from_secs(300),
            history_total_bytes: 256 * 1024 * 1024,
            history_keep: Duration::from_secs(300),
            history_max_uids: 16_384 + HISTORY_UIDS_SLACK,
            max_stale_acks: 1024,
            max_queue_ttl: Duration::from_secs(3600),
            max_ack_wait: Duration::from_secs(30),
            dedupe_window: Some(Duration::from_secs(60)),
            dedupe_max_entries: 100_000,
            events: EventsConfig::default(),
            events_secret: None,
            pusher_apps: None,
            pusher_activity_timeout: Duration::from_secs(120),
            pusher_pong_timeout: Duration::from_secs(30),
            gateway: None,
            redis_queue: None,
        }
    }
}

/// File descriptors kept back for listeners, logs and the runtime itself.
pub const FD_RESERVE: usize = 64;

/// Histories allowed by default beyond one per browser connection: room for the uids
/// that left within `--history-keep-ms` and those a `ttl=` push queues for.
pub const HISTORY_UIDS_SLACK: usize = 65_536;

/// Smallest request-head limit hyper accepts.
const MIN_HTTP_HEADER_BYTES: usize = 8192;

/// Shortest `--cluster-link-timeout-ms` (keepalive probes go at most once a second).
const MIN_CLUSTER_LINK_TIMEOUT: Duration = Duration::from_secs(1);

impl Config {
    /// Browser connections an open-files limit of `nofile` leaves room for, after the
    /// backend connections, the HTTP door's (if `http` is on) and a reserve.
    pub fn ws_capacity(&self, nofile: u64, http: bool) -> usize {
        let http = if http { self.max_http_connections } else { 0 };
        usize::try_from(nofile)
            .unwrap_or(usize::MAX)
            .saturating_sub(self.max_push_connections + http + FD_RESERVE)
            .max(1)
    }

    /// Applies every clamp and derived default, so the running daemon never sees a limit
    /// of 0 or an inconsistent pair. Returns the config and a note for each value it had
    /// to change (the caller logs them).
    ///
    /// `max_pending_handshakes == 0` means "a quarter of `max_ws_connections`".
    pub fn validate(mut self) -> (Config, Vec<String>) {
        let mut notes = Vec::new();
        for (v, name) in [
            (
                &mut self.pusher_activity_timeout,
                "--pusher-activity-timeout-ms",
            ),
            (&mut self.pusher_pong_timeout, "--pusher-pong-timeout-ms"),
        ] {
            if *v < Duration::from_secs(1) {
                notes.push(format!("{name} below 1000 is raised to 1000"));
                *v = Duration::from_secs(1);
            }
        }
        let at_least_one = |v: &mut usize, name: &str, notes: &mut Vec<String>| {
            if *v == 0 {
                notes.push(format!("{name} 0 is raised to 1"));
                *v = 1;
            }
        };
        at_least_one(
            &mut self.max_handshake_bytes,
            "--max-handshake-bytes",
            &mut notes,
        );
        at_least_one(&mut self.queue_depth, "--queue-depth", &mut notes);
        at_least_one(
            &mut self.max_connections_per_ip,
            "--max-connections-per-ip",
            &mut notes,
        );
        at_least_one(
            &mut self.max_pending_per_ip,
            "--max-pending-per-ip",
            &mut notes,
        );
        at_least_one(
            &mut self.max_ws_connections,
            "--max-ws-connections",
            &mut notes,
        );
        at_least_one(
            &mut self.max_http_connections,
            "--max-http-connections",
            &mut notes,
        );
        at_least_one(
            &mut self.max_http_connections_per_ip,
            "--max-http-connections-per-ip",
            &mut notes,
        );
        at_least_one(
            &mut self.cluster_publish_queue,
            "--cluster-publish-queue",
            &mut notes,
        );
        // A /group queues a publish per member: a full group past the queue would reach
        // the members past it on this node only (the reply says so, `reached` < members).
        if self.redis.is_some() && self.cluster_publish_queue < self.max_group_members {
            notes.push(format!(
                "--cluster-publish-queue ({}) is below --max-group-members ({}): a /group to a larger group reaches the members past the queue on this node only",
                self.cluster_publish_queue, self.max_group_members
            ));
        }
        at_least_one(
            &mut self.cluster_message_buffer,
            "--cluster-message-buffer",
            &mut notes,
        );
        // The kernel counts keepalive in whole seconds, and a link timeout shorter than a
        // round trip would close every connection it opens.
        if self.cluster_link_timeout < MIN_CLUSTER_LINK_TIMEOUT {
            notes.push(format!(
                "--cluster-link-timeout-ms {} is raised to {}",
                self.cluster_link_timeout.as_millis(),
                MIN_CLUSTER_LINK_TIMEOUT.as_millis()
            ));
            self.cluster_link_timeout = MIN_CLUSTER_LINK_TIMEOUT;
        }
        at_least_one(&mut self.max_stale_acks, "--max-stale-acks", &mut notes);
        if self.history_max_uids == 0 {
            self.history_max_uids = self.max_ws_connections.saturating_add(HISTORY_UIDS_SLACK);
        }
        at_least_one(&mut self.events.queue, "--events-queue", &mut notes);
        at_least_one(
            &mut self.events.delivery.batch_events,
            "--events-batch",
            &mut notes,
        );
        at_least_one(
            &mut self.events.stream_buffer,
            "--events-stream-buffer",
            &mut notes,
        );
        if self.events.delivery.timeout.is_zero() {
            notes.push("--events-timeout-ms 0 is raised to 1".to_owned());
            self.events.delivery.timeout = Duration::from_millis(1);
        }
        if self.events.delivery.attempts == 0 {
            notes.push("--events-attempts 0 is raised to 1".to_owned());
            self.events.delivery.attempts = 1;
        }
        at_least_one(
            &mut self.events.message.max_bytes,
            "--events-message-bytes",
            &mut notes,
        );
        if self.events.message.per_second == 0 {
            notes.push("--events-message-rate 0 is raised to 1".to_owned());
            self.events.message.per_second = 1;
        }
        // Unbound connections get a quarter of the slots by default, and always leave an
        // eighth to bound ones.
        let ws = self.max_ws_connections;
        let cap = (ws - ws / 8).max(1);
        if self.max_pending_handshakes == 0 {
            self.max_pending_handshakes = (ws / 4).max(1);
        } else if self.max_pending_handshakes > cap {
            notes.push(format!(
                "--max-pending-handshakes {} must stay below --max-ws-connections {ws}: capped at {cap}",
                self.max_pending_handshakes
            ));
            self.max_pending_handshakes = cap;
        }
        // One address never holds more than three quarters of the HTTP door.
        let http = self.max_http_connections;
        let cap = (http - http / 4).max(1);
        if self.max_http_connections_per_ip > cap {
            notes.push(format!(
                "--max-http-connections-per-ip {} must stay below --max-http-connections {http}: capped at {cap}",
                self.max_http_connections_per_ip
            ));
            self.max_http_connections_per_ip = cap;
        }
        if self.http_max_header_bytes < MIN_HTTP_HEADER_BYTES {
            notes.push(format!(
                "--http-max-header-bytes {} is raised to {MIN_HTTP_HEADER_BYTES}",
                self.http_max_header_bytes
            ));
            self.http_max_header_bytes = MIN_HTTP_HEADER_BYTES;
        }
        if self.max_message_bytes < self.max_uid_bytes {
            notes.push(format!(
                "--max-message-bytes {} is below --max-uid-bytes {}: browsers may send {} bytes",
                self.max_message_bytes, self.max_uid_bytes, self.max_uid_bytes
            ));
            self.max_message_bytes = self.max_uid_bytes;
        }
        // A replay must fit the queue it is preloaded into.
        if self.history_messages > self.queue_depth {
            notes.push(format!(
                "--history-messages {} is above --queue-depth {}: capped at {}",
                self.history_messages, self.queue_depth, self.queue_depth
            ));
            self.history_messages = self.queue_depth;
        }
        if self.history_bytes > self.queue_bytes {
            notes.push(format!(
                "--history-bytes {} is above --queue-bytes {}: capped at {}",
                self.history_bytes, self.queue_bytes, self.queue_bytes
            ));
            self.history_bytes = self.queue_bytes;
        }
        (self, notes)
    }

    /// The shortest history timing the sweep must keep up with.
    pub fn history_sweep_period(&self) -> Duration {
        self.history_keep.min(self.history_age)
    }

    /// What history keeps.
    pub fn history_limits(&self) -> HistoryLimits {
        HistoryLimits {
            messages: self.history_messages,
            bytes: self.history_bytes,
            age: self.history_age,
            total_bytes: self.history_total_bytes,
            keep: self.history_keep,
            max_uids: self.history_max_uids,
            stale_acks: self.max_stale_acks,
        }
    }

    /// Largest message a browser may send (its uid or token included).
    pub fn max_in(&self) -> usize {
        self.max_message_bytes.max(self.max_uid_bytes)
    }

    /// Each browser connection's queue bounds.
    pub fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            depth: self.queue_depth.max(1),
            bytes: self.queue_bytes,
        }
    }

    /// What backends may create in groups.
    pub fn group_limits(&self) -> GroupLimits {
        GroupLimits {
            max_groups: self.max_groups,
            max_members: self.max_group_members,
            grace: self.group_grace,
        }
    }

    /// What one command's arguments may hold.
    pub fn command_limits(&self) -> Limits {
        Limits {
            max_list_uids: self.max_list_uids,
            max_uid_bytes: self.max_uid_bytes,
            max_group_bytes: self.max_group_bytes,
        }
    }
}

/// `--redis-prefix`: what every Redis key and channel name of a node starts with
/// (`cluster/names.rs` spells them). Default `pw`, the names nodes always used.
///
/// # Why it is `[A-Za-z0-9_.-]{1,32}`
/// No `{` or `}`: a brace would make (or break) a hash tag, moving the uid channels into
/// one slot or the `{pw}` keys out of theirs. No `:`: every name is `<prefix>:` or
/// `{<prefix>}:` and then the rest, so the prefix ends at the first `:` or `}`, and two
/// different prefixes can never spell the same name. No spaces or control bytes: it is
/// part of every name in `redis-cli`, logs and `MONITOR`. 32 bytes keeps names short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisPrefix(String);

/// The longest `--redis-prefix`, in bytes.
pub const REDIS_PREFIX_MAX: usize = 32;

impl RedisPrefix {
    /// The prefix, or why not (the text names the rule).
    pub fn parse(text: &str) -> Result<RedisPrefix, String> {
        if text.is_empty() || text.len() > REDIS_PREFIX_MAX {
            return Err(format!(
                "a Redis prefix is 1 to {REDIS_PREFIX_MAX} characters (got {})",
                text.len()
            ));
        }
        match text
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            Some(c) => Err(format!(
                "a Redis prefix is letters, digits, '_', '-' and '.' only (no {c:?}: braces \
                 would change Redis Cluster hash tags, ':' would let two prefixes spell one name)"
            )),
            None => Ok(RedisPrefix(text.to_owned())),
        }
    }

    /// The prefix as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RedisPrefix {
    /// `pw`: the names every node used before the prefix existed.
    fn default() -> RedisPrefix {
        RedisPrefix("pw".to_owned())
    }
}

impl std::fmt::Display for RedisPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for RedisPrefix {
    type Err = String;

    fn from_str(s: &str) -> Result<RedisPrefix, String> {
        RedisPrefix::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_clamps_and_derives() {
        let (c, notes) = Config {
            queue_depth: 0,
            history_messages: 1,
            max_ws_connections: 800,
            max_pending_handshakes: 0,
            http_max_header_bytes: 10,
            max_message_bytes: 10,
            ..Config::default()
        }
        .validate();
        assert_eq!(c.queue_depth, 1);
        assert_eq!(c.max_pending_handshakes, 200);
        assert_eq!(c.http_max_header_bytes, 8192);
        assert_eq!(c.max_message_bytes, c.max_uid_bytes);
        assert_eq!(notes.len(), 3, "{notes:?}");
        let (c, notes) = Config {
            max_ws_connections: 800,
            max_pending_handshakes: 5000,
            ..Config::default()
        }
        .validate();
        assert_eq!(c.max_pending_handshakes, 700);
        assert_eq!(notes.len(), 1);
        // One address keeps at most three quarters of the HTTP door.
        let (c, notes) = Config {
            max_http_connections: 8,
            ..Config::default()
        }
        .validate();
        assert_eq!(c.max_http_connections_per_ip, 6);
        assert_eq!(notes.len(), 1, "{notes:?}");
        let (c, _) = Config {
            max_http_connections: 1,
            max_http_connections_per_ip: 0,
            ..Config::default()
        }
        .validate();
        assert_eq!(c.max_http_connections_per_ip, 1);
        // The cluster's queues are never 0 (a channel of 0 cannot be made).
        let (c, notes) = Config {
            cluster_publish_queue: 0,
            cluster_message_buffer: 0,
            ..Config::default()
        }
        .validate();
        assert_eq!((c.cluster_publish_queue, c.cluster_message_buffer), (1, 1));
        assert_eq!(notes.len(), 2, "{notes:?}");
        // In cluster mode a queue smaller than the largest group is said (the defaults
        // fit one full group).
        let clustered = Config {
            redis: Some("redis://127.0.0.1:6379".into()),
            ..Config::default()
        };
        assert!(clustered.clone().validate().1.is_empty());
        let (_, notes) = Config {
            cluster_publish_queue: 1000,
            max_group_members: 1001,
            ..clustered
        }
        .validate();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("--cluster-publish-queue (1000)"),
            "{notes:?}"
        );
        let (c, notes) = Config {
            cluster_link_timeout: Duration::from_millis(10),
            ..Config::default()
        }
        .validate();
        assert_eq!(c.cluster_link_timeout, Duration::from_secs(1));
        assert_eq!(notes, ["--cluster-link-timeout-ms 10 is raised to 1000"]);
        // Histories: one per connection and the slack by default; stale acks at least 1.
        let (c, _) = Config {
            max_ws_connections: 800,
            history_max_uids: 0,
            max_stale_acks: 0,
            ..Config::default()
        }
        .validate();
        assert_eq!(c.history_max_uids, 800 + HISTORY_UIDS_SLACK);
        assert_eq!(c.max_stale_acks, 1);
        assert_eq!(
            Config::default().history_max_uids,
            Config::default().max_ws_connections + HISTORY_UIDS_SLACK
        );
        // A replay must fit the connection's queue.
        let (c, notes) = Config {
            queue_depth: 10,
            queue_bytes: 1000,
            ..Config::default()
        }
        .validate();
        assert_eq!((c.history_messages, c.history_bytes), (10, 1000));
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert_eq!(
            Config::default().ws_capacity(20_000, true),
            20_000 - 1024 - 256 - 64
        );
        assert_eq!(
            Config::default().ws_capacity(20_000, false),
            20_000 - 1024 - 64
        );
    }

    #[test]
    fn a_prefix_is_refused_unless_it_follows_the_rules() {
        for good in [
            "pw",
            "a",
            "prod",
            "app-1",
            "x.y_z",
            &"p".repeat(REDIS_PREFIX_MAX),
        ] {
            assert_eq!(RedisPrefix::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "{pw}",
            "a}b",
            "a{b",
            "pw:u",
            "a b",
            "a\nb",
            "é",
            "a*",
            &"p".repeat(REDIS_PREFIX_MAX + 1),
        ] {
            assert!(RedisPrefix::parse(bad).is_err(), "{bad:?}");
        }
    }
}
