//! The daemon's flags: `Args` (every `--flag` and its `PUSHWIRE_*` variable), the queue and
//! GatewayClient flag groups, the subcommands, and the parsers of their values.

use std::ffi::OsString;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use pushwire::access::Cidr;
use pushwire::config::{GatewayConfig, Queue, QueueConfig};
use pushwire::reload::SecretSource;

/// `pushwire --version`: the crate's version and the git revision it was built from
/// (`build.rs`: `a1b2c3d`, `a1b2c3d, dirty` or `unknown`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("PUSHWIRE_GIT"),
    ")"
);

/// Push messages from any backend to browsers in real time.
///
/// Browsers connect over WebSocket and send their uid as the first frame; backends write
/// one JSON object per line (`{"uid":"uid1","percent":"88%"}`) to the push port and read
/// `ok` or `fail`. Every flag can also be set from the environment variable shown.
#[derive(Debug, Clone, Parser)]
#[command(version = VERSION, about, args_conflicts_with_subcommands = false)]
pub struct Args {
    /// Talk to a running daemon instead of being one.
    #[command(subcommand)]
    pub command: Option<Control>,

    /// Address browsers connect to (WebSocket, any path).
    #[arg(long, env = "PUSHWIRE_WS_LISTEN", default_value = "0.0.0.0:1234")]
    pub ws_listen: SocketAddr,

    /// Address backends push to. Loopback by default: whoever can reach this port can push
    /// to any user, so binding a public address is an explicit choice.
    #[arg(long, env = "PUSHWIRE_PUSH_LISTEN", default_value = "127.0.0.1:5678")]
    pub push_listen: SocketAddr,

    /// Address of the HTTP door (POST /push, web-msg-sender's /?type=publish, /metrics,
    /// /healthz, /readyz), or `off`. Loopback by default, with the push port's access
    /// rules.
    #[arg(long, env = "PUSHWIRE_HTTP_LISTEN", default_value = "127.0.0.1:2121", value_parser = parse_listen)]
    pub http_listen: Listen,

    /// HTTP door: most time a request may take (headers and body), in ms; then 408.
    #[arg(
        long,
        env = "PUSHWIRE_HTTP_REQUEST_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub http_request_timeout_ms: u64,

    /// HTTP door: most bytes of a request head (at least 8192).
    #[arg(long, env = "PUSHWIRE_HTTP_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub http_max_header_bytes: usize,

    /// HTTP door: most bytes of a request body; more get 413.
    #[arg(long, env = "PUSHWIRE_HTTP_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub http_max_body_bytes: usize,

    /// HTTP door: connections at once; more wait in the backlog.
    #[arg(long, env = "PUSHWIRE_MAX_HTTP_CONNECTIONS", default_value_t = 256)]
    pub max_http_connections: usize,

    /// HTTP door: connections one address (IPv6: one /64) may hold; more get 429 at once
    /// (at most three quarters of --max-http-connections).
    #[arg(
        long,
        env = "PUSHWIRE_MAX_HTTP_CONNECTIONS_PER_IP",
        default_value_t = 64
    )]
    pub max_http_connections_per_ip: usize,

    /// On SIGHUP, take the reloadable settings (secrets, allow-lists, TLS files) this env
    /// file names (systemd's `EnvironmentFile=` syntax); a setting it does not name, or
    /// one given as a flag, stays. The shipped unit points it at a copy of
    /// /etc/pushwire/pushwire.env.
    #[arg(long, env = "PUSHWIRE_RELOAD_ENV_FILE")]
    pub reload_env_file: Option<PathBuf>,

    /// Serve `wss://` on the browser port: the certificate chain (PEM, leaf first). Needs
    /// --tls-key. Re-read on SIGHUP.
    #[arg(long, env = "PUSHWIRE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "PUSHWIRE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Cluster mode: the Redis that links the nodes (`redis://host:port[/db]`, or
    /// `rediss://` for TLS). Without it the node is alone and never touches Redis.
    #[arg(long, env = "PUSHWIRE_REDIS")]
    pub redis: Option<String>,

    /// Cluster mode: what every Redis key and channel name starts with (1 to 32 letters,
    /// digits, '_', '-', '.'), so clusters with different prefixes share one Redis (or
    /// Redis Cluster) without hearing each other. Every node of a cluster uses the same;
    /// a reload does not change it.
    #[arg(
        long,
        env = "PUSHWIRE_REDIS_PREFIX",
        default_value = "pw",
        value_name = "NAME"
    )]
    pub redis_prefix: pushwire::config::RedisPrefix,

    /// The Pusher apps (JSON: `{"apps":[{"id","key","secret",...}]}`, docs/pusher.md):
    /// serves pusher-js and Laravel Echo at `/app/{key}` on the browser port and the
    /// Pusher HTTP API at `/apps/{id}/...` on the HTTP door.
    #[arg(long, env = "PUSHWIRE_PUSHER_APPS")]
    pub pusher_apps: Option<PathBuf>,

    /// Pusher: the activity timeout told to clients (they ping after this much silence
    /// from the server) and the client silence after which the daemon pings, in ms.
    #[arg(
        long,
        env = "PUSHWIRE_PUSHER_ACTIVITY_TIMEOUT_MS",
        default_value_t = 120_000
    )]
    pub pusher_activity_timeout_ms: u64,

    /// Pusher: how long a client pinged by the daemon has to answer before it is closed
    /// with 4201, in ms.
    #[arg(
        long,
        env = "PUSHWIRE_PUSHER_PONG_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub pusher_pong_timeout_ms: u64,

    /// Cluster mode: the longest a reply waits for Redis and the other nodes, in ms; Redis
    /// not answering for this long is taken as down until it answers again.
    #[arg(long, env = "PUSHWIRE_CLUSTER_TIMEOUT_MS", default_value_t = 1000)]
    pub cluster_timeout_ms: u64,

    /// Cluster mode: how long opening a connection to Redis may take, and how long one may
    /// go with its data unacknowledged (a cut link) before it is closed and opened again,
    /// in ms (at least 1000).
    #[arg(long, env = "PUSHWIRE_CLUSTER_LINK_TIMEOUT_MS", default_value_t = 3000)]
    pub cluster_link_timeout_ms: u64,

    /// Cluster mode: publishes that may wait to be sent to Redis; past it a push is
    /// answered from local delivery alone (`/push`: `unavailable`). A `/group` queues one
    /// publish per member, so this is above --max-group-members by default.
    #[arg(
        long,
        env = "PUSHWIRE_CLUSTER_PUBLISH_QUEUE",
        default_value_t = 262_144
    )]
    pub cluster_publish_queue: usize,

    /// Cluster mode: messages from Redis that may wait for this node to handle them; past
    /// it the oldest are lost and logged (their pushes answered `partial` or `fail`).
    #[arg(
        long,
        env = "PUSHWIRE_CLUSTER_MESSAGE_BUFFER",
        default_value_t = 16_384
    )]
    pub cluster_message_buffer: usize,

    /// Protocol v1 (docs/protocol.md): messages kept per uid for resumes; 0 turns history
    /// off. Capped at --queue-depth.
    #[arg(long, env = "PUSHWIRE_HISTORY_MESSAGES", default_value_t = 100)]
    pub history_messages: usize,

    /// Payload bytes of history kept per uid. Capped at --queue-bytes.
    #[arg(long, env = "PUSHWIRE_HISTORY_BYTES", default_value_t = 256 * 1024)]
    pub history_bytes: usize,

    /// How old a kept message may get, in ms (a queued one lives until its TTL).
    #[arg(long, env = "PUSHWIRE_HISTORY_AGE_MS", default_value_t = 300_000)]
    pub history_age_ms: u64,

    /// Bytes of history kept over all uids (payload plus ~128 bytes per message).
    #[arg(long, env = "PUSHWIRE_HISTORY_TOTAL_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub history_total_bytes: usize,

    /// How long a uid's history outlives its last connection, in ms.
    #[arg(long, env = "PUSHWIRE_HISTORY_KEEP_MS", default_value_t = 300_000)]
    pub history_keep_ms: u64,

    /// Uids with a history at most (single node). At the bound an offline uid's history
    /// is evicted to make room (one that kept no message first); with none, a v1 bind is
    /// closed 1013 and a ttl= push is not queued. 0 = --max-ws-connections + 65536.
    #[arg(long, env = "PUSHWIRE_HISTORY_MAX_UIDS", default_value_t = 0)]
    pub history_max_uids: usize,

    /// Acks in a row that acknowledge nothing new a protocol v1 tab may send; one more
    /// closes it (1008 "ack flood").
    #[arg(long, env = "PUSHWIRE_MAX_STALE_ACKS", default_value_t = 1024)]
    pub max_stale_acks: usize,

    /// The longest offline-queue TTL a push may ask for (`/push ID ttl=MS LINE`), in ms.
    #[arg(long, env = "PUSHWIRE_MAX_QUEUE_TTL_MS", default_value_t = 3_600_000)]
    pub max_queue_ttl_ms: u64,

    /// The longest a push may wait for a tab's ack (`/push ID ack=MS LINE`), in ms.
    #[arg(long, env = "PUSHWIRE_MAX_ACK_WAIT_MS", default_value_t = 30_000)]
    pub max_ack_wait_ms: u64,

    /// How long an accepted /push is remembered, so a retry with the same ID and line is
    /// answered `duplicate` instead of delivered again, in ms; 0 = off.
    #[arg(long, env = "PUSHWIRE_DEDUPE_WINDOW_MS", default_value_t = 60_000)]
    pub dedupe_window_ms: u64,

    /// How many accepted /push are remembered at most (the oldest is forgotten first).
    #[arg(long, env = "PUSHWIRE_DEDUPE_MAX_ENTRIES", default_value_t = 100_000)]
    pub dedupe_max_entries: usize,

    /// Longest push line accepted, in bytes; longer lines get `fail`.
    #[arg(long, env = "PUSHWIRE_MAX_LINE_BYTES", default_value_t = 1024 * 1024)]
    pub max_line_bytes: usize,

    /// Longest uid a browser may bind, in bytes; longer ones are closed with 1008.
    #[arg(long, env = "PUSHWIRE_MAX_UID_BYTES", default_value_t = 256)]
    pub max_uid_bytes: usize,

    /// Largest WebSocket message or frame a browser may send (its uid or token), in
    /// bytes; larger ones close the connection. Never below --max-uid-bytes.
    #[arg(long, env = "PUSHWIRE_MAX_MESSAGE_BYTES", default_value_t = 4096)]
    pub max_message_bytes: usize,

    /// Most bytes a browser may send before its WebSocket handshake completes (the HTTP
    /// upgrade request, cookies included); more and the connection is dropped.
    #[arg(long, env = "PUSHWIRE_MAX_HANDSHAKE_BYTES", default_value_t = 16 * 1024)]
    pub max_handshake_bytes: usize,

    /// Time a new WebSocket has to finish its handshake and send its uid, in ms.
    #[arg(long, env = "PUSHWIRE_BIND_TIMEOUT_MS", default_value_t = 10_000)]
    pub bind_timeout_ms: u64,

    /// How often bound browsers are pinged, in ms.
    #[arg(long, env = "PUSHWIRE_PING_INTERVAL_MS", default_value_t = 30_000)]
    pub ping_interval_ms: u64,

    /// How long a pinged browser has to answer before it is dropped, in ms.
    #[arg(long, env = "PUSHWIRE_PONG_TIMEOUT_MS", default_value_t = 10_000)]
    pub pong_timeout_ms: u64,

    /// Messages one connection may have queued; past it the connection is closed (1013).
    #[arg(long, env = "PUSHWIRE_QUEUE_DEPTH", default_value_t = 1024)]
    pub queue_depth: usize,

    /// Bytes one connection may have queued; past it the connection is closed (1013).
    #[arg(long, env = "PUSHWIRE_QUEUE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub queue_bytes: usize,

    /// Most WebSocket connections at once [default: what the open-files limit allows].
    #[arg(long, env = "PUSHWIRE_MAX_WS_CONNECTIONS")]
    pub max_ws_connections: Option<usize>,

    /// Most backend connections at once on the push port.
    #[arg(long, env = "PUSHWIRE_MAX_PUSH_CONNECTIONS", default_value_t = 1024)]
    pub max_push_connections: usize,

    /// How long SIGTERM/SIGINT may take to drain before connections are dropped, in ms.
    #[arg(long, env = "PUSHWIRE_SHUTDOWN_TIMEOUT_MS", default_value_t = 5_000)]
    pub shutdown_timeout_ms: u64,

    /// How long a uid that lost its last connection keeps its groups, in ms.
    #[arg(long, env = "PUSHWIRE_GROUP_GRACE_MS", default_value_t = 60_000)]
    pub group_grace_ms: u64,

    /// Groups that may exist at once.
    #[arg(long, env = "PUSHWIRE_MAX_GROUPS", default_value_t = 100_000)]
    pub max_groups: usize,

    /// Members one group may have.
    #[arg(long, env = "PUSHWIRE_MAX_GROUP_MEMBERS", default_value_t = 100_000)]
    pub max_group_members: usize,

    /// Uids one command may name (/send, /join, /leave, /kick).
    #[arg(long, env = "PUSHWIRE_MAX_LIST_UIDS", default_value_t = 1000)]
    pub max_list_uids: usize,

    /// File holding the HS256 secret that signs uid tokens (JWT, `sub` = uid). With a
    /// secret, browsers bind only with a valid token (first frame or `?token=`). `none`:
    /// no secret.
    #[arg(long, env = "PUSHWIRE_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// The JWT secret itself (`none`: no secret). Prefer the env var or
    /// --jwt-secret-file: a command-line literal shows in `ps`.
    #[arg(
        long,
        env = "PUSHWIRE_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_secret_file"
    )]
    pub jwt_secret: Option<String>,

    /// Comma-separated Origins allowed to open a WebSocket (e.g. https://app.example.com);
    /// a browser handshake from any other Origin gets 403. Default (or `any`): any.
    #[arg(long, env = "PUSHWIRE_ALLOWED_ORIGINS", value_parser = parse_origins)]
    pub allowed_origins: Option<Origins>,

    /// WebSocket connections one source address may hold (IPv6: per /64); more get HTTP
    /// 429.
    #[arg(long, env = "PUSHWIRE_MAX_CONNECTIONS_PER_IP", default_value_t = 1024)]
    pub max_connections_per_ip: usize,

    /// WebSocket connections not bound yet (handshake or uid still to come) held at once;
    /// more get HTTP 503 [default: a quarter of --max-ws-connections]. Always below
    /// --max-ws-connections, so silent strangers cannot hold every slot.
    #[arg(long, env = "PUSHWIRE_MAX_PENDING_HANDSHAKES")]
    pub max_pending_handshakes: Option<usize>,

    /// WebSocket connections not bound yet that one source address (IPv6: per /64) may
    /// hold; more get HTTP 429.
    #[arg(long, env = "PUSHWIRE_MAX_PENDING_PER_IP", default_value_t = 64)]
    pub max_pending_per_ip: usize,

    /// Comma-separated networks (CIDR) of reverse proxies (nginx) whose browser connections
    /// carry the client's address: X-Forwarded-For (walked from the right past trusted
    /// entries), else Forwarded, else X-Real-IP. The per-address caps and the logs use it;
    /// from any other peer those headers are ignored. `none` trusts nobody.
    #[arg(
        long,
        env = "PUSHWIRE_TRUSTED_PROXIES",
        default_value = DEFAULT_TRUSTED_PROXIES,
        value_parser = parse_trusted
    )]
    pub trusted_proxies: Nets,

    /// Comma-separated networks (CIDR) TCP backends may push from; others get a refusal
    /// line and are closed. Default (or `any`): anyone who can reach --push-listen.
    #[arg(long, env = "PUSHWIRE_PUSH_ALLOW", value_parser = parse_push_allow)]
    pub push_allow: Option<PushAllow>,

    /// File holding a shared secret TCP backends must send first as `/auth SECRET`
    /// (`none`: no secret).
    #[arg(long, env = "PUSHWIRE_PUSH_SECRET_FILE")]
    pub push_secret_file: Option<PathBuf>,

    /// The push secret itself (prefer the env var or --push-secret-file; `none`: no
    /// secret).
    #[arg(
        long,
        env = "PUSHWIRE_PUSH_SECRET",
        hide_env_values = true,
        conflicts_with = "push_secret_file"
    )]
    pub push_secret: Option<String>,

    /// Also accept backends on this Unix socket (e.g. /run/pushwire/push.sock); its file
    /// permissions decide who may push, and no /auth line is needed on it.
    #[arg(long, env = "PUSHWIRE_PUSH_UNIX")]
    pub push_unix: Option<PathBuf>,

    /// Permissions of the --push-unix socket file, in octal.
    #[arg(long, env = "PUSHWIRE_PUSH_UNIX_MODE", default_value = "660", value_parser = parse_mode)]
    pub push_unix_mode: u32,

    /// Listen backlog of both ports (the kernel caps it at net.core.somaxconn).
    #[arg(long, env = "PUSHWIRE_LISTEN_BACKLOG", default_value_t = 4096)]
    pub listen_backlog: u32,

    /// Threads that run connections (tokio workers) [default: one per CPU the process may
    /// use]. Fewer leaves cores to other services and saves the cost of handing work
    /// between threads (one thread: ~30% less CPU per push), at the price of fan-out speed.
    #[arg(long, env = "PUSHWIRE_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,

    /// Close a backend connection after this long without a byte from it (or without it
    /// reading its replies), in ms; 0 = never. Lines it sent were answered first; pooled
    /// clients (PHP persistent sockets) notice the close and reconnect.
    #[arg(long, env = "PUSHWIRE_PUSH_IDLE_TIMEOUT_MS", default_value_t = 120_000)]
    pub push_idle_timeout_ms: u64,

    /// Longest group name a backend may use, in bytes; longer ones are refused.
    #[arg(long, env = "PUSHWIRE_MAX_GROUP_BYTES", default_value_t = 256)]
    pub max_group_bytes: usize,

    /// Send events (online/offline, connect/bind/close, groups; docs/events.md) to this
    /// webhook URL (http:// or https://), batched and signed with --events-secret.
    /// `URL#types=online,offline` picks the kinds: `*` (the default) is all but
    /// `message`, which comes only when named. Repeat the flag; the variable takes several
    /// URLs separated by spaces.
    #[arg(long, env = "PUSHWIRE_EVENTS_URL", value_parser = parse_event_urls)]
    pub events_url: Vec<EventUrls>,

    /// File holding the secret that signs webhook deliveries (HMAC-SHA256; needed with
    /// --events-url). Re-read on SIGHUP.
    #[arg(long, env = "PUSHWIRE_EVENTS_SECRET_FILE")]
    pub events_secret_file: Option<PathBuf>,

    /// The events secret itself (prefer the env var or --events-secret-file).
    #[arg(
        long,
        env = "PUSHWIRE_EVENTS_SECRET",
        hide_env_values = true,
        conflicts_with = "events_secret_file"
    )]
    pub events_secret: Option<String>,

    /// Events that may wait for one webhook receiver; more are dropped (counted, logged).
    /// Room for a mass disconnect: a close per connection at once, an offline per uid.
    #[arg(long, env = "PUSHWIRE_EVENTS_QUEUE", default_value_t = 100_000)]
    pub events_queue: usize,

    /// Bytes of event JSON that may wait for one webhook receiver (events of browsers'
    /// messages are large); more are dropped (counted, logged).
    #[arg(long, env = "PUSHWIRE_EVENTS_QUEUE_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub events_queue_bytes: usize,

    /// Most events in one webhook POST.
    #[arg(long, env = "PUSHWIRE_EVENTS_BATCH", default_value_t = 100)]
    pub events_batch: usize,

    /// Most bytes of one webhook POST's body (a larger event goes alone).
    #[arg(long, env = "PUSHWIRE_EVENTS_BATCH_BYTES", default_value_t = 256 * 1024)]
    pub events_batch_bytes: usize,

    /// How long one webhook attempt may take (connect, TLS, request, answer), in ms.
    #[arg(long, env = "PUSHWIRE_EVENTS_TIMEOUT_MS", default_value_t = 5_000)]
    pub events_timeout_ms: u64,

    /// Attempts per webhook batch (retried after errors, timeouts, 5xx, 408, 429), the
    /// first included; then it is dropped.
    #[arg(long, env = "PUSHWIRE_EVENTS_ATTEMPTS", default_value_t = 12)]
    pub events_attempts: u32,

    /// How far (in events) a backend reading /events may fall behind before it is cut
    /// (rounded up to a power of two).
    #[arg(long, env = "PUSHWIRE_EVENTS_STREAM_BUFFER", default_value_t = 4096)]
    pub events_stream_buffer: usize,

    /// How long a uid's last connection must stay gone before it is `offline`, in ms: a
    /// tab reload (or a hop to another node) within it is neither offline nor online.
    #[arg(long, env = "PUSHWIRE_EVENTS_DEBOUNCE_MS", default_value_t = 5_000)]
    pub events_debounce_ms: u64,

    /// Largest browser frame taken as a `message` event, in bytes; a larger one closes
    /// the connection (1009) while someone listens for messages.
    #[arg(long, env = "PUSHWIRE_EVENTS_MESSAGE_BYTES", default_value_t = 4096)]
    pub events_message_bytes: usize,

    /// Browser frames per second per connection taken as `message` events (a burst of as
    /// many); faster closes the connection (1008) while someone listens for messages.
    #[arg(long, env = "PUSHWIRE_EVENTS_MESSAGE_RATE", default_value_t = 10)]
    pub events_message_rate: u32,

    /// Log format; the filter comes from RUST_LOG (default `info`).
    #[arg(long, env = "PUSHWIRE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub gateway: GatewayArgs,

    #[command(flatten)]
    pub queue: QueueArgs,
}

/// The Redis-queue door (docs/redis-queue.md): off unless --redis-queue is given.
#[derive(Debug, Clone, clap::Args)]
pub struct QueueArgs {
    /// Redis-queue door: a Redis list apps LPUSH onto (seed 000's push centre), taken in
    /// order, each element run once: a push line runs as one, anything else goes to every
    /// page as it is. `KEY=REPLIES` also pushes each element's reply line onto REPLIES.
    /// Repeatable (comma-separated in the env var).
    #[arg(long, env = "PUSHWIRE_REDIS_QUEUE", value_delimiter = ',')]
    pub redis_queue: Vec<String>,

    /// Redis-queue door: the Redis holding the lists [default: --redis].
    #[arg(long, env = "PUSHWIRE_REDIS_QUEUE_URL", hide_env_values = true)]
    pub redis_queue_url: Option<String>,

    /// Redis-queue door: longest element taken; longer ones are refused (logged).
    #[arg(long, env = "PUSHWIRE_REDIS_QUEUE_MAX_BYTES", default_value_t = 1024 * 1024)]
    pub redis_queue_max_bytes: usize,

    /// Redis-queue door: elements taken per second at most, over all lists.
    #[arg(long, env = "PUSHWIRE_REDIS_QUEUE_RATE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub redis_queue_rate: u32,

    /// Redis-queue door: replies kept on a reply list at most (older ones are trimmed).
    #[arg(
        long,
        env = "PUSHWIRE_REDIS_QUEUE_MAX_REPLIES",
        default_value_t = 10_000
    )]
    pub redis_queue_max_replies: usize,
}

impl QueueArgs {
    /// The door's settings, if it is on; `redis` is the cluster's URL.
    pub fn config(&self, redis: Option<&str>) -> Result<Option<QueueConfig>, String> {
        if self.redis_queue.is_empty() {
            return Ok(None);
        }
        let Some(url) = self.redis_queue_url.as_deref().or(redis) else {
            return Err("--redis-queue needs a Redis: set --redis-queue-url (or --redis)".into());
        };
        let queues = self
            .redis_queue
            .iter()
            .map(|q| {
                let (key, replies) = match q.split_once('=') {
                    Some((k, r)) => (k, Some(r.to_owned())),
                    None => (q.as_str(), None),
                };
                if key.is_empty() || replies.as_deref() == Some("") {
                    return Err(format!("--redis-queue {q:?}: KEY or KEY=REPLIES"));
                }
                Ok(Queue {
                    key: key.to_owned(),
                    replies,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(QueueConfig {
            url: url.to_owned(),
            queues,
            max_bytes: self.redis_queue_max_bytes.max(1),
            rate: self.redis_queue_rate,
            max_replies: self.redis_queue_max_replies.max(1),
        }))
    }
}

/// The GatewayClient door (docs/gateway.md): off unless --gateway-listen is given.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// GatewayClient door: address of the gateway endpoint GatewayClient sends its
    /// commands to, or `off`. Turns the door on; loopback by default, with the push port's
    /// allow-list.
    #[arg(long, env = "PUSHWIRE_GATEWAY_LISTEN", default_value = "off", value_parser = parse_listen)]
    pub gateway_listen: Listen,

    /// GatewayClient door: the Register address (the app's `Gateway::$registerAddress`).
    #[arg(
        long,
        env = "PUSHWIRE_GATEWAY_REGISTER_LISTEN",
        default_value = "127.0.0.1:1238"
    )]
    pub gateway_register_listen: SocketAddr,

    /// GatewayClient door: address of a browser listener whose connections are greeted
    /// with their client_id and wait for a backend's bindUid (GatewayWorker's pages), or
    /// `off`.
    #[arg(long, env = "PUSHWIRE_GATEWAY_WS_LISTEN", default_value = "off", value_parser = parse_listen)]
    pub gateway_ws_listen: Listen,

    /// GatewayClient door: the IPv4 ip:port the Register hands out and every client_id
    /// carries, which GatewayClient connects to [default: --gateway-listen, if it names
    /// an IPv4 address other than 0.0.0.0].
    #[arg(long, env = "PUSHWIRE_GATEWAY_ADVERTISE")]
    pub gateway_advertise: Option<SocketAddrV4>,

    /// GatewayClient door: the apps' `Gateway::$secretKey` (no `"` or `\`, which
    /// GatewayClient cannot send) [default: --push-secret; `none`: no secret].
    #[arg(long, env = "PUSHWIRE_GATEWAY_SECRET", hide_env_values = true)]
    pub gateway_secret: Option<String>,

    /// GatewayClient door: a file holding the apps' `$secretKey` (a trailing newline
    /// ignored), read at start and at every reload; `none`: no secret.
    #[arg(
        long,
        env = "PUSHWIRE_GATEWAY_SECRET_FILE",
        conflicts_with = "gateway_secret"
    )]
    pub gateway_secret_file: Option<PathBuf>,

    /// GatewayClient door: the first frame of a greeted connection; `{client_id}` is
    /// replaced by its client_id.
    #[arg(long, env = "PUSHWIRE_GATEWAY_GREETING", default_value = pushwire::config::GatewayConfig::GREETING)]
    pub gateway_greeting: String,

    /// GatewayClient door: how long a greeted connection may wait for a backend's
    /// bindUid, joinGroup or setSession before it is closed (1008), in ms.
    #[arg(
        long,
        env = "PUSHWIRE_GATEWAY_CLAIM_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub gateway_claim_timeout_ms: u64,

    /// GatewayClient door: longest frame a GatewayClient may send, header included;
    /// longer ones close that connection.
    #[arg(long, env = "PUSHWIRE_GATEWAY_MAX_FRAME_BYTES", default_value_t = 1024 * 1024 + 64 * 1024)]
    pub gateway_max_frame_bytes: usize,

    /// GatewayClient door: GatewayClient connections (Register and gateway endpoints)
    /// held at once; more wait in the backlog.
    #[arg(long, env = "PUSHWIRE_GATEWAY_MAX_CONNECTIONS", default_value_t = 256)]
    pub gateway_max_connections: usize,

    /// GatewayClient door: longest session (setSession, updateSession) one greeted
    /// connection may keep, serialized.
    #[arg(long, env = "PUSHWIRE_GATEWAY_MAX_SESSION_BYTES", default_value_t = 64 * 1024)]
    pub gateway_max_session_bytes: usize,
}

impl GatewayArgs {
    /// Where the gateway secret comes from; `None`: not given, so the push secret's.
    pub fn source(&self) -> Option<SecretSource> {
        if self.gateway_secret.is_none() && self.gateway_secret_file.is_none() {
            return None;
        }
        Some(SecretSource::given(
            self.gateway_secret_file.as_deref(),
            self.gateway_secret.as_deref(),
        ))
    }

    /// The door's settings, if it is on; `push_secret` is the fallback secret.
    pub fn config(&self, push_secret: Option<&str>) -> Result<Option<GatewayConfig>, String> {
        let Listen::On(listen) = self.gateway_listen else {
            return Ok(None);
        };
        let advertise = match (self.gateway_advertise, listen) {
            (Some(a), _) => a,
            (None, SocketAddr::V4(v4)) if !v4.ip().is_unspecified() => v4,
            (None, _) => {
                return Err(format!(
                    "--gateway-listen {listen} names no address GatewayClient can connect to: set --gateway-advertise IP:PORT"
                ));
            }
        };
        let secret = match self.source() {
            Some(source) => source.read().map_err(|e| format!("gateway secret: {e}"))?,
            None => push_secret.map(|s| pushwire::auth::Secret::new(s.as_bytes())),
        };
        pushwire::config::GatewayConfig::check_secret(secret.as_ref())?;
        let secret = secret.map(|s| String::from_utf8_lossy(s.reveal()).into_owned());
        Ok(Some(GatewayConfig {
            advertise,
            secret,
            greeting: self.gateway_greeting.clone(),
            claim_timeout: Duration::from_millis(self.gateway_claim_timeout_ms),
            max_frame_bytes: self.gateway_max_frame_bytes,
            max_connections: self.gateway_max_connections.max(1),
            max_session_bytes: self.gateway_max_session_bytes,
        }))
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Subcommands: a client of a running daemon, found by the daemon's own flags (before or
/// after the subcommand) and environment (so `sudo pushwire status` works with the
/// installed env file).
#[derive(Debug, Clone, Subcommand)]
pub enum Control {
    /// Uptime, connections, uids, groups, pushes (totals and per second), evictions,
    /// refusals, open files.
    Status {
        /// Print JSON (`/stats` plus per-second rates) instead of a table.
        #[arg(long)]
        json: bool,
        /// How long to sample the per-second rates, in ms.
        #[arg(long, default_value_t = 1000)]
        sample_ms: u64,
    },
    /// Push a message to a uid with `/send` (prints its JSON reply; exit 1 if no
    /// connection took it).
    Push {
        /// Who.
        uid: String,
        /// What the browser receives, exactly (sent with `/send`).
        message: String,
    },
    /// Is a uid online, with how many connections.
    Online {
        /// Who.
        uid: String,
    },
    /// Close every connection of a uid (close 4001).
    Kick {
        /// Who.
        uid: String,
        /// The close reason.
        reason: Option<String>,
    },
    /// Check the settings as the daemon would at start, without starting (`config ok`,
    /// exit 0; or one line per problem, exit 1).
    ///
    /// The settings are the daemon's flags (before or after `check-config`) and PUSHWIRE_*
    /// environment: every value parses, secret files are readable and not empty, the
    /// --push-unix directory takes a socket, every listen address can be bound right now
    /// (then released), --redis is a redis://, rediss:// or redis-cluster:// URL (Redis is
    /// not contacted). Values the daemon would change or warn about are printed as
    /// warnings. The systemd unit runs it as ExecStartPre.
    CheckConfig {
        /// Do not try the listen addresses: to check an edited env file while the daemon
        /// runs and holds them.
        #[arg(long)]
        no_bind: bool,
    },
}

/// A listener address or `off`.
#[derive(Debug, Clone, Copy)]
pub enum Listen {
    Off,
    On(SocketAddr),
}

pub fn parse_listen(s: &str) -> Result<Listen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Listen::Off);
    }
    s.parse()
        .map(Listen::On)
        .map_err(|e| format!("{s:?} is neither an address nor `off`: {e}"))
}

/// The command line with the daemon's flags that follow a subcommand moved before it, so
/// that `pushwire check-config --ws-listen ADDR` means `pushwire --ws-listen ADDR
/// check-config` (and `status`, `push`... find the daemon the same way). Clap's `global`
/// flags would not do: each level reads the environment again, and a bad variable would
/// be refused on one side although the flag on the other overrides it. Nothing after a
/// `--` moves.
pub fn daemon_flags_first(argv: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let cmd = Args::command();
    // Some(whether its value is the next word) for a daemon flag.
    let daemon_flag = |word: &OsString| {
        let name = word.to_str()?.strip_prefix("--")?;
        let (name, inline) = name
            .split_once('=')
            .map_or((name, false), |(n, _)| (n, true));
        let arg = cmd.get_arguments().find(|a| a.get_long() == Some(name))?;
        Some(!inline && arg.get_action().takes_values())
    };
    let mut words = argv.into_iter();
    let mut front: Vec<OsString> = words.next().into_iter().collect();
    let mut back = Vec::new();
    while let Some(word) = words.next() {
        if let Some(value_follows) = daemon_flag(&word) {
            front.push(word);
            if value_follows {
                front.extend(words.next());
            }
            continue;
        }
        let in_subcommand = !back.is_empty() || !word.as_encoded_bytes().starts_with(b"-");
        if word == "--" {
            back.push(word);
            back.extend(words.by_ref());
        } else if in_subcommand {
            back.push(word);
        } else {
            front.push(word);
        }
    }
    front.extend(back);
    front
}

/// One `--events-url` value: one or more listeners.
#[derive(Debug, Clone)]
pub struct EventUrls(pub Vec<pushwire::events::Listener>);

pub fn parse_event_urls(s: &str) -> Result<EventUrls, String> {
    pushwire::events::Listener::parse_all(&[s]).map(EventUrls)
}

/// `--allowed-origins` (`None`: any).
#[derive(Debug, Clone)]
pub struct Origins(pub Option<Vec<String>>);

pub fn parse_origins(s: &str) -> Result<Origins, String> {
    Ok(Origins(pushwire::reload::parse_origins(s)))
}

/// `--push-allow` (`None`: anyone).
#[derive(Debug, Clone)]
pub struct PushAllow(pub Option<Vec<Cidr>>);

pub fn parse_push_allow(s: &str) -> Result<PushAllow, String> {
    pushwire::reload::parse_push_allow(s).map(PushAllow)
}

/// A comma-separated network list, parsed by the same (fuzzed) parser the library tests.
#[derive(Debug, Clone)]
pub struct Nets(pub Vec<Cidr>);

/// `--trusted-proxies`: networks, or `none` (an empty list too) for nobody.
/// Loopback: nginx on the same host.
pub const DEFAULT_TRUSTED_PROXIES: &str = "127.0.0.0/8,::1/128";

pub fn parse_trusted(s: &str) -> Result<Nets, String> {
    pushwire::reload::parse_trusted_proxies(s).map(Nets)
}

pub fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8).map_err(|e| format!("{s:?} is not an octal mode: {e}"))
}
