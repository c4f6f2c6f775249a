//! The `pushwire` binary: parse flags, set up logging and limits, bind, run, exit.

use std::ffi::OsString;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use pushwire::access::Cidr;
use pushwire::auth::Secret;
use pushwire::config::{GatewayConfig, Queue, QueueConfig};
use pushwire::reload::{Reloader, SecretSource, Setting, Sources};
use tokio::net::{TcpListener, TcpSocket, UnixListener};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// `pushwire --version`: the crate's version and the git revision it was built from
/// (`build.rs`: `a1b2c3d`, `a1b2c3d, dirty` or `unknown`).
const VERSION: &str = concat!(
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
struct Args {
    /// Talk to a running daemon instead of being one.
    #[command(subcommand)]
    command: Option<Control>,

    /// Address browsers connect to (WebSocket, any path).
    #[arg(long, env = "PUSHWIRE_WS_LISTEN", default_value = "0.0.0.0:1234")]
    ws_listen: SocketAddr,

    /// Address backends push to. Loopback by default: whoever can reach this port can push
    /// to any user, so binding a public address is an explicit choice.
    #[arg(long, env = "PUSHWIRE_PUSH_LISTEN", default_value = "127.0.0.1:5678")]
    push_listen: SocketAddr,

    /// Address of the HTTP door (POST /push, web-msg-sender's /?type=publish, /metrics,
    /// /healthz, /readyz), or `off`. Loopback by default, with the push port's access
    /// rules.
    #[arg(long, env = "PUSHWIRE_HTTP_LISTEN", default_value = "127.0.0.1:2121", value_parser = parse_listen)]
    http_listen: Listen,

    /// HTTP door: most time a request may take (headers and body), in ms; then 408.
    #[arg(
        long,
        env = "PUSHWIRE_HTTP_REQUEST_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    http_request_timeout_ms: u64,

    /// HTTP door: most bytes of a request head (at least 8192).
    #[arg(long, env = "PUSHWIRE_HTTP_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    http_max_header_bytes: usize,

    /// HTTP door: most bytes of a request body; more get 413.
    #[arg(long, env = "PUSHWIRE_HTTP_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    http_max_body_bytes: usize,

    /// HTTP door: connections at once; more wait in the backlog.
    #[arg(long, env = "PUSHWIRE_MAX_HTTP_CONNECTIONS", default_value_t = 256)]
    max_http_connections: usize,

    /// HTTP door: connections one address (IPv6: one /64) may hold; more get 429 at once
    /// (at most three quarters of --max-http-connections).
    #[arg(
        long,
        env = "PUSHWIRE_MAX_HTTP_CONNECTIONS_PER_IP",
        default_value_t = 64
    )]
    max_http_connections_per_ip: usize,

    /// On SIGHUP, take the reloadable settings (secrets, allow-lists, TLS files) this env
    /// file names (systemd's `EnvironmentFile=` syntax); a setting it does not name, or
    /// one given as a flag, stays. The shipped unit points it at a copy of
    /// /etc/pushwire/pushwire.env.
    #[arg(long, env = "PUSHWIRE_RELOAD_ENV_FILE")]
    reload_env_file: Option<PathBuf>,

    /// Serve `wss://` on the browser port: the certificate chain (PEM, leaf first). Needs
    /// --tls-key. Re-read on SIGHUP.
    #[arg(long, env = "PUSHWIRE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "PUSHWIRE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Cluster mode: the Redis that links the nodes (`redis://host:port[/db]`, or
    /// `rediss://` for TLS). Without it the node is alone and never touches Redis.
    #[arg(long, env = "PUSHWIRE_REDIS")]
    redis: Option<String>,

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
    redis_prefix: pushwire::config::RedisPrefix,

    /// The Pusher apps (JSON: `{"apps":[{"id","key","secret",...}]}`, docs/pusher.md):
    /// serves pusher-js and Laravel Echo at `/app/{key}` on the browser port and the
    /// Pusher HTTP API at `/apps/{id}/...` on the HTTP door.
    #[arg(long, env = "PUSHWIRE_PUSHER_APPS")]
    pusher_apps: Option<PathBuf>,

    /// Pusher: the activity timeout told to clients (they ping after this much silence
    /// from the server) and the client silence after which the daemon pings, in ms.
    #[arg(
        long,
        env = "PUSHWIRE_PUSHER_ACTIVITY_TIMEOUT_MS",
        default_value_t = 120_000
    )]
    pusher_activity_timeout_ms: u64,

    /// Pusher: how long a client pinged by the daemon has to answer before it is closed
    /// with 4201, in ms.
    #[arg(
        long,
        env = "PUSHWIRE_PUSHER_PONG_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pusher_pong_timeout_ms: u64,

    /// Cluster mode: the longest a reply waits for Redis and the other nodes, in ms; Redis
    /// not answering for this long is taken as down until it answers again.
    #[arg(long, env = "PUSHWIRE_CLUSTER_TIMEOUT_MS", default_value_t = 1000)]
    cluster_timeout_ms: u64,

    /// Cluster mode: how long opening a connection to Redis may take, and how long one may
    /// go with its data unacknowledged (a cut link) before it is closed and opened again,
    /// in ms (at least 1000).
    #[arg(long, env = "PUSHWIRE_CLUSTER_LINK_TIMEOUT_MS", default_value_t = 3000)]
    cluster_link_timeout_ms: u64,

    /// Cluster mode: publishes that may wait to be sent to Redis; past it a push is
    /// answered from local delivery alone (`/push`: `unavailable`).
    #[arg(long, env = "PUSHWIRE_CLUSTER_PUBLISH_QUEUE", default_value_t = 65_536)]
    cluster_publish_queue: usize,

    /// Cluster mode: messages from Redis that may wait for this node to handle them; past
    /// it the oldest are lost and logged (their pushes answered `partial` or `fail`).
    #[arg(
        long,
        env = "PUSHWIRE_CLUSTER_MESSAGE_BUFFER",
        default_value_t = 16_384
    )]
    cluster_message_buffer: usize,

    /// Protocol v1 (docs/protocol.md): messages kept per uid for resumes; 0 turns history
    /// off. Capped at --queue-depth.
    #[arg(long, env = "PUSHWIRE_HISTORY_MESSAGES", default_value_t = 100)]
    history_messages: usize,

    /// Payload bytes of history kept per uid. Capped at --queue-bytes.
    #[arg(long, env = "PUSHWIRE_HISTORY_BYTES", default_value_t = 256 * 1024)]
    history_bytes: usize,

    /// How old a kept message may get, in ms (a queued one lives until its TTL).
    #[arg(long, env = "PUSHWIRE_HISTORY_AGE_MS", default_value_t = 300_000)]
    history_age_ms: u64,

    /// Bytes of history kept over all uids (payload plus ~128 bytes per message).
    #[arg(long, env = "PUSHWIRE_HISTORY_TOTAL_BYTES", default_value_t = 256 * 1024 * 1024)]
    history_total_bytes: usize,

    /// How long a uid's history outlives its last connection, in ms.
    #[arg(long, env = "PUSHWIRE_HISTORY_KEEP_MS", default_value_t = 300_000)]
    history_keep_ms: u64,

    /// Uids with a history at most (single node). At the bound an offline uid's history
    /// is evicted to make room (one that kept no message first); with none, a v1 bind is
    /// closed 1013 and a ttl= push is not queued. 0 = --max-ws-connections + 65536.
    #[arg(long, env = "PUSHWIRE_HISTORY_MAX_UIDS", default_value_t = 0)]
    history_max_uids: usize,

    /// Acks in a row that acknowledge nothing new a protocol v1 tab may send; one more
    /// closes it (1008 "ack flood").
    #[arg(long, env = "PUSHWIRE_MAX_STALE_ACKS", default_value_t = 1024)]
    max_stale_acks: usize,

    /// The longest offline-queue TTL a push may ask for (`/push ID ttl=MS LINE`), in ms.
    #[arg(long, env = "PUSHWIRE_MAX_QUEUE_TTL_MS", default_value_t = 3_600_000)]
    max_queue_ttl_ms: u64,

    /// The longest a push may wait for a tab's ack (`/push ID ack=MS LINE`), in ms.
    #[arg(long, env = "PUSHWIRE_MAX_ACK_WAIT_MS", default_value_t = 30_000)]
    max_ack_wait_ms: u64,

    /// How long an accepted /push is remembered, so a retry with the same ID and line is
    /// answered `duplicate` instead of delivered again, in ms; 0 = off.
    #[arg(long, env = "PUSHWIRE_DEDUPE_WINDOW_MS", default_value_t = 60_000)]
    dedupe_window_ms: u64,

    /// How many accepted /push are remembered at most (the oldest is forgotten first).
    #[arg(long, env = "PUSHWIRE_DEDUPE_MAX_ENTRIES", default_value_t = 100_000)]
    dedupe_max_entries: usize,

    /// Longest push line accepted, in bytes; longer lines get `fail`.
    #[arg(long, env = "PUSHWIRE_MAX_LINE_BYTES", default_value_t = 1024 * 1024)]
    max_line_bytes: usize,

    /// Longest uid a browser may bind, in bytes; longer ones are closed with 1008.
    #[arg(long, env = "PUSHWIRE_MAX_UID_BYTES", default_value_t = 256)]
    max_uid_bytes: usize,

    /// Largest WebSocket message or frame a browser may send (its uid or token), in
    /// bytes; larger ones close the connection. Never below --max-uid-bytes.
    #[arg(long, env = "PUSHWIRE_MAX_MESSAGE_BYTES", default_value_t = 4096)]
    max_message_bytes: usize,

    /// Most bytes a browser may send before its WebSocket handshake completes (the HTTP
    /// upgrade request, cookies included); more and the connection is dropped.
    #[arg(long, env = "PUSHWIRE_MAX_HANDSHAKE_BYTES", default_value_t = 16 * 1024)]
    max_handshake_bytes: usize,

    /// Time a new WebSocket has to finish its handshake and send its uid, in ms.
    #[arg(long, env = "PUSHWIRE_BIND_TIMEOUT_MS", default_value_t = 10_000)]
    bind_timeout_ms: u64,

    /// How often bound browsers are pinged, in ms.
    #[arg(long, env = "PUSHWIRE_PING_INTERVAL_MS", default_value_t = 30_000)]
    ping_interval_ms: u64,

    /// How long a pinged browser has to answer before it is dropped, in ms.
    #[arg(long, env = "PUSHWIRE_PONG_TIMEOUT_MS", default_value_t = 10_000)]
    pong_timeout_ms: u64,

    /// Messages one connection may have queued; past it the connection is closed (1013).
    #[arg(long, env = "PUSHWIRE_QUEUE_DEPTH", default_value_t = 1024)]
    queue_depth: usize,

    /// Bytes one connection may have queued; past it the connection is closed (1013).
    #[arg(long, env = "PUSHWIRE_QUEUE_BYTES", default_value_t = 8 * 1024 * 1024)]
    queue_bytes: usize,

    /// Most WebSocket connections at once [default: what the open-files limit allows].
    #[arg(long, env = "PUSHWIRE_MAX_WS_CONNECTIONS")]
    max_ws_connections: Option<usize>,

    /// Most backend connections at once on the push port.
    #[arg(long, env = "PUSHWIRE_MAX_PUSH_CONNECTIONS", default_value_t = 1024)]
    max_push_connections: usize,

    /// How long SIGTERM/SIGINT may take to drain before connections are dropped, in ms.
    #[arg(long, env = "PUSHWIRE_SHUTDOWN_TIMEOUT_MS", default_value_t = 5_000)]
    shutdown_timeout_ms: u64,

    /// How long a uid that lost its last connection keeps its groups, in ms.
    #[arg(long, env = "PUSHWIRE_GROUP_GRACE_MS", default_value_t = 60_000)]
    group_grace_ms: u64,

    /// Groups that may exist at once.
    #[arg(long, env = "PUSHWIRE_MAX_GROUPS", default_value_t = 100_000)]
    max_groups: usize,

    /// Members one group may have.
    #[arg(long, env = "PUSHWIRE_MAX_GROUP_MEMBERS", default_value_t = 100_000)]
    max_group_members: usize,

    /// Uids one command may name (/send, /join, /leave, /kick).
    #[arg(long, env = "PUSHWIRE_MAX_LIST_UIDS", default_value_t = 1000)]
    max_list_uids: usize,

    /// File holding the HS256 secret that signs uid tokens (JWT, `sub` = uid). With a
    /// secret, browsers bind only with a valid token (first frame or `?token=`). `none`:
    /// no secret.
    #[arg(long, env = "PUSHWIRE_JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,

    /// The JWT secret itself (`none`: no secret). Prefer the env var or
    /// --jwt-secret-file: a command-line literal shows in `ps`.
    #[arg(
        long,
        env = "PUSHWIRE_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_secret_file"
    )]
    jwt_secret: Option<String>,

    /// Comma-separated Origins allowed to open a WebSocket (e.g. https://app.example.com);
    /// a browser handshake from any other Origin gets 403. Default (or `any`): any.
    #[arg(long, env = "PUSHWIRE_ALLOWED_ORIGINS", value_parser = parse_origins)]
    allowed_origins: Option<Origins>,

    /// WebSocket connections one source address may hold (IPv6: per /64); more get HTTP
    /// 429.
    #[arg(long, env = "PUSHWIRE_MAX_CONNECTIONS_PER_IP", default_value_t = 1024)]
    max_connections_per_ip: usize,

    /// WebSocket connections not bound yet (handshake or uid still to come) held at once;
    /// more get HTTP 503 [default: a quarter of --max-ws-connections]. Always below
    /// --max-ws-connections, so silent strangers cannot hold every slot.
    #[arg(long, env = "PUSHWIRE_MAX_PENDING_HANDSHAKES")]
    max_pending_handshakes: Option<usize>,

    /// WebSocket connections not bound yet that one source address (IPv6: per /64) may
    /// hold; more get HTTP 429.
    #[arg(long, env = "PUSHWIRE_MAX_PENDING_PER_IP", default_value_t = 64)]
    max_pending_per_ip: usize,

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
    trusted_proxies: Nets,

    /// Comma-separated networks (CIDR) TCP backends may push from; others get a refusal
    /// line and are closed. Default (or `any`): anyone who can reach --push-listen.
    #[arg(long, env = "PUSHWIRE_PUSH_ALLOW", value_parser = parse_push_allow)]
    push_allow: Option<PushAllow>,

    /// File holding a shared secret TCP backends must send first as `/auth SECRET`
    /// (`none`: no secret).
    #[arg(long, env = "PUSHWIRE_PUSH_SECRET_FILE")]
    push_secret_file: Option<PathBuf>,

    /// The push secret itself (prefer the env var or --push-secret-file; `none`: no
    /// secret).
    #[arg(
        long,
        env = "PUSHWIRE_PUSH_SECRET",
        hide_env_values = true,
        conflicts_with = "push_secret_file"
    )]
    push_secret: Option<String>,

    /// Also accept backends on this Unix socket (e.g. /run/pushwire/push.sock); its file
    /// permissions decide who may push, and no /auth line is needed on it.
    #[arg(long, env = "PUSHWIRE_PUSH_UNIX")]
    push_unix: Option<PathBuf>,

    /// Permissions of the --push-unix socket file, in octal.
    #[arg(long, env = "PUSHWIRE_PUSH_UNIX_MODE", default_value = "660", value_parser = parse_mode)]
    push_unix_mode: u32,

    /// Listen backlog of both ports (the kernel caps it at net.core.somaxconn).
    #[arg(long, env = "PUSHWIRE_LISTEN_BACKLOG", default_value_t = 4096)]
    listen_backlog: u32,

    /// Threads that run connections (tokio workers) [default: one per CPU the process may
    /// use]. Fewer leaves cores to other services and saves the cost of handing work
    /// between threads (one thread: ~30% less CPU per push), at the price of fan-out speed.
    #[arg(long, env = "PUSHWIRE_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,

    /// Close a backend connection after this long without a byte from it (or without it
    /// reading its replies), in ms; 0 = never. Lines it sent were answered first; pooled
    /// clients (PHP persistent sockets) notice the close and reconnect.
    #[arg(long, env = "PUSHWIRE_PUSH_IDLE_TIMEOUT_MS", default_value_t = 120_000)]
    push_idle_timeout_ms: u64,

    /// Longest group name a backend may use, in bytes; longer ones are refused.
    #[arg(long, env = "PUSHWIRE_MAX_GROUP_BYTES", default_value_t = 256)]
    max_group_bytes: usize,

    /// Send events (online/offline, connect/bind/close, groups; docs/events.md) to this
    /// webhook URL (http:// or https://), batched and signed with --events-secret.
    /// `URL#types=online,offline` picks the kinds: `*` (the default) is all but
    /// `message`, which comes only when named. Repeat the flag; the variable takes several
    /// URLs separated by spaces.
    #[arg(long, env = "PUSHWIRE_EVENTS_URL", value_parser = parse_event_urls)]
    events_url: Vec<EventUrls>,

    /// File holding the secret that signs webhook deliveries (HMAC-SHA256; needed with
    /// --events-url). Re-read on SIGHUP.
    #[arg(long, env = "PUSHWIRE_EVENTS_SECRET_FILE")]
    events_secret_file: Option<PathBuf>,

    /// The events secret itself (prefer the env var or --events-secret-file).
    #[arg(
        long,
        env = "PUSHWIRE_EVENTS_SECRET",
        hide_env_values = true,
        conflicts_with = "events_secret_file"
    )]
    events_secret: Option<String>,

    /// Events that may wait for one webhook receiver; more are dropped (counted, logged).
    /// Room for a mass disconnect: a close per connection at once, an offline per uid.
    #[arg(long, env = "PUSHWIRE_EVENTS_QUEUE", default_value_t = 100_000)]
    events_queue: usize,

    /// Bytes of event JSON that may wait for one webhook receiver (events of browsers'
    /// messages are large); more are dropped (counted, logged).
    #[arg(long, env = "PUSHWIRE_EVENTS_QUEUE_BYTES", default_value_t = 32 * 1024 * 1024)]
    events_queue_bytes: usize,

    /// Most events in one webhook POST.
    #[arg(long, env = "PUSHWIRE_EVENTS_BATCH", default_value_t = 100)]
    events_batch: usize,

    /// Most bytes of one webhook POST's body (a larger event goes alone).
    #[arg(long, env = "PUSHWIRE_EVENTS_BATCH_BYTES", default_value_t = 256 * 1024)]
    events_batch_bytes: usize,

    /// How long one webhook attempt may take (connect, TLS, request, answer), in ms.
    #[arg(long, env = "PUSHWIRE_EVENTS_TIMEOUT_MS", default_value_t = 5_000)]
    events_timeout_ms: u64,

    /// Attempts per webhook batch (retried after errors, timeouts, 5xx, 408, 429), the
    /// first included; then it is dropped.
    #[arg(long, env = "PUSHWIRE_EVENTS_ATTEMPTS", default_value_t = 12)]
    events_attempts: u32,

    /// How far (in events) a backend reading /events may fall behind before it is cut
    /// (rounded up to a power of two).
    #[arg(long, env = "PUSHWIRE_EVENTS_STREAM_BUFFER", default_value_t = 4096)]
    events_stream_buffer: usize,

    /// How long a uid's last connection must stay gone before it is `offline`, in ms: a
    /// tab reload (or a hop to another node) within it is neither offline nor online.
    #[arg(long, env = "PUSHWIRE_EVENTS_DEBOUNCE_MS", default_value_t = 5_000)]
    events_debounce_ms: u64,

    /// Largest browser frame taken as a `message` event, in bytes; a larger one closes
    /// the connection (1009) while someone listens for messages.
    #[arg(long, env = "PUSHWIRE_EVENTS_MESSAGE_BYTES", default_value_t = 4096)]
    events_message_bytes: usize,

    /// Browser frames per second per connection taken as `message` events (a burst of as
    /// many); faster closes the connection (1008) while someone listens for messages.
    #[arg(long, env = "PUSHWIRE_EVENTS_MESSAGE_RATE", default_value_t = 10)]
    events_message_rate: u32,

    /// Log format; the filter comes from RUST_LOG (default `info`).
    #[arg(long, env = "PUSHWIRE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,

    #[command(flatten)]
    gateway: GatewayArgs,

    #[command(flatten)]
    queue: QueueArgs,
}

/// The Redis-queue door (docs/redis-queue.md): off unless --redis-queue is given.
#[derive(Debug, Clone, clap::Args)]
struct QueueArgs {
    /// Redis-queue door: a Redis list apps LPUSH onto (seed 000's push centre), taken in
    /// order, each element run once: a push line runs as one, anything else goes to every
    /// page as it is. `KEY=REPLIES` also pushes each element's reply line onto REPLIES.
    /// Repeatable (comma-separated in the env var).
    #[arg(long, env = "PUSHWIRE_REDIS_QUEUE", value_delimiter = ',')]
    redis_queue: Vec<String>,

    /// Redis-queue door: the Redis holding the lists [default: --redis].
    #[arg(long, env = "PUSHWIRE_REDIS_QUEUE_URL", hide_env_values = true)]
    redis_queue_url: Option<String>,

    /// Redis-queue door: longest element taken; longer ones are refused (logged).
    #[arg(long, env = "PUSHWIRE_REDIS_QUEUE_MAX_BYTES", default_value_t = 1024 * 1024)]
    redis_queue_max_bytes: usize,

    /// Redis-queue door: elements taken per second at most, over all lists.
    #[arg(long, env = "PUSHWIRE_REDIS_QUEUE_RATE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    redis_queue_rate: u32,

    /// Redis-queue door: replies kept on a reply list at most (older ones are trimmed).
    #[arg(
        long,
        env = "PUSHWIRE_REDIS_QUEUE_MAX_REPLIES",
        default_value_t = 10_000
    )]
    redis_queue_max_replies: usize,
}

impl QueueArgs {
    /// The door's settings, if it is on; `redis` is the cluster's URL.
    fn config(&self, redis: Option<&str>) -> Result<Option<QueueConfig>, String> {
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
struct GatewayArgs {
    /// GatewayClient door: address of the gateway endpoint GatewayClient sends its
    /// commands to, or `off`. Turns the door on; loopback by default, with the push port's
    /// allow-list.
    #[arg(long, env = "PUSHWIRE_GATEWAY_LISTEN", default_value = "off", value_parser = parse_listen)]
    gateway_listen: Listen,

    /// GatewayClient door: the Register address (the app's `Gateway::$registerAddress`).
    #[arg(
        long,
        env = "PUSHWIRE_GATEWAY_REGISTER_LISTEN",
        default_value = "127.0.0.1:1238"
    )]
    gateway_register_listen: SocketAddr,

    /// GatewayClient door: address of a browser listener whose connections are greeted
    /// with their client_id and wait for a backend's bindUid (GatewayWorker's pages), or
    /// `off`.
    #[arg(long, env = "PUSHWIRE_GATEWAY_WS_LISTEN", default_value = "off", value_parser = parse_listen)]
    gateway_ws_listen: Listen,

    /// GatewayClient door: the IPv4 ip:port the Register hands out and every client_id
    /// carries, which GatewayClient connects to [default: --gateway-listen, if it names
    /// an IPv4 address other than 0.0.0.0].
    #[arg(long, env = "PUSHWIRE_GATEWAY_ADVERTISE")]
    gateway_advertise: Option<SocketAddrV4>,

    /// GatewayClient door: the apps' `Gateway::$secretKey` (no `"` or `\`, which
    /// GatewayClient cannot send) [default: --push-secret; `none`: no secret].
    #[arg(long, env = "PUSHWIRE_GATEWAY_SECRET", hide_env_values = true)]
    gateway_secret: Option<String>,

    /// GatewayClient door: a file holding the apps' `$secretKey` (a trailing newline
    /// ignored), read at start and at every reload; `none`: no secret.
    #[arg(
        long,
        env = "PUSHWIRE_GATEWAY_SECRET_FILE",
        conflicts_with = "gateway_secret"
    )]
    gateway_secret_file: Option<PathBuf>,

    /// GatewayClient door: the first frame of a greeted connection; `{client_id}` is
    /// replaced by its client_id.
    #[arg(long, env = "PUSHWIRE_GATEWAY_GREETING", default_value = pushwire::config::GatewayConfig::GREETING)]
    gateway_greeting: String,

    /// GatewayClient door: how long a greeted connection may wait for a backend's
    /// bindUid, joinGroup or setSession before it is closed (1008), in ms.
    #[arg(
        long,
        env = "PUSHWIRE_GATEWAY_CLAIM_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    gateway_claim_timeout_ms: u64,

    /// GatewayClient door: longest frame a GatewayClient may send, header included;
    /// longer ones close that connection.
    #[arg(long, env = "PUSHWIRE_GATEWAY_MAX_FRAME_BYTES", default_value_t = 1024 * 1024 + 64 * 1024)]
    gateway_max_frame_bytes: usize,

    /// GatewayClient door: GatewayClient connections (Register and gateway endpoints)
    /// held at once; more wait in the backlog.
    #[arg(long, env = "PUSHWIRE_GATEWAY_MAX_CONNECTIONS", default_value_t = 256)]
    gateway_max_connections: usize,

    /// GatewayClient door: longest session (setSession, updateSession) one greeted
    /// connection may keep, serialized.
    #[arg(long, env = "PUSHWIRE_GATEWAY_MAX_SESSION_BYTES", default_value_t = 64 * 1024)]
    gateway_max_session_bytes: usize,
}

impl GatewayArgs {
    /// Where the gateway secret comes from; `None`: not given, so the push secret's.
    fn source(&self) -> Option<SecretSource> {
        if self.gateway_secret.is_none() && self.gateway_secret_file.is_none() {
            return None;
        }
        Some(SecretSource::given(
            self.gateway_secret_file.as_deref(),
            self.gateway_secret.as_deref(),
        ))
    }

    /// The door's settings, if it is on; `push_secret` is the fallback secret.
    fn config(&self, push_secret: Option<&str>) -> Result<Option<GatewayConfig>, String> {
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
enum LogFormat {
    Human,
    Json,
}

/// Subcommands: a client of a running daemon, found by the daemon's own flags (before or
/// after the subcommand) and environment (so `sudo pushwire status` works with the
/// installed env file).
#[derive(Debug, Clone, Subcommand)]
enum Control {
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
enum Listen {
    Off,
    On(SocketAddr),
}

fn parse_listen(s: &str) -> Result<Listen, String> {
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
fn daemon_flags_first(argv: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
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

fn main() -> ExitCode {
    let parsed = Args::command()
        .try_get_matches_from(daemon_flags_first(std::env::args_os()))
        .and_then(|m| Args::from_arg_matches(&m).map(|args| (args, m)));
    let (args, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(err) if check_config::requested() && err.use_stderr() => {
            return check_config::unparsable(&err);
        }
        Err(err) => err.exit(),
    };
    let pinned = pinned(&matches);
    init_logging(args.log_format);
    match &args.command {
        Some(Control::CheckConfig { no_bind }) => {
            return check_config::run(&args, &pinned, !no_bind);
        }
        Some(command) => return control(&args, command),
        None => {}
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = args.worker_threads {
        runtime.worker_threads(n.into());
    }
    let runtime = match runtime.build() {
        Ok(rt) => rt,
        Err(err) => {
            error!(%err, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args, pinned)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(%err, "fatal");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args, pinned: Vec<Setting>) -> std::io::Result<()> {
    // Installed first, before the `listening` line and READY=1: from then on no signal's
    // default action (terminate) can take the daemon down, and a SIGHUP sent as soon as it
    // says it listens is a reload.
    let mut signals = Signals::install()?;
    // Made first, so unreadable TLS files stop the start before anything listens.
    let mut config = config_from(&args)?;
    // Bound before the state is made: an advertised port 0 is the port it got.
    let gateway_listener = match (&mut config.gateway, args.gateway.gateway_listen) {
        (Some(gw), Listen::On(addr)) => {
            let l = listen(addr, args.listen_backlog)?;
            if gw.advertise.port() == 0 {
                gw.advertise.set_port(l.local_addr()?.port());
            }
            Some(l)
        }
        _ => None,
    };
    let ctx = pushwire::state::State::new(config)?;
    let config = &ctx.config;
    let ws = listen(args.ws_listen, args.listen_backlog)?;
    let push = listen(args.push_listen, args.listen_backlog)?;
    let push_unix = match &args.push_unix {
        Some(path) => Some(listen_unix(path, args.push_unix_mode)?),
        None => None,
    };
    let http = match args.http_listen {
        Listen::On(addr) => Some(listen(addr, args.listen_backlog)?),
        Listen::Off => None,
    };
    let gateway = match (&config.gateway, gateway_listener) {
        (Some(gw), Some(gateway)) => {
            let g = pushwire::GatewayListeners {
                register: listen(args.gateway.gateway_register_listen, args.listen_backlog)?,
                gateway,
                ws: match args.gateway.gateway_ws_listen {
                    Listen::On(addr) => Some(listen(addr, args.listen_backlog)?),
                    Listen::Off => None,
                },
            };
            info!(
                register = %g.register.local_addr()?,
                gateway = %g.gateway.local_addr()?,
                greeted_ws = %g.ws.as_ref().map(|l| l.local_addr()).transpose()?.map_or_else(|| "off".to_owned(), |a| a.to_string()),
                advertise = %gw.advertise,
                secret = gw.secret.is_some(),
                "GatewayClient door open"
            );
            Some(g)
        }
        _ => None,
    };
    for (door, addr) in exposed_doors(&args, config) {
        warn!(%addr, "{door} is not on loopback: anyone who can reach it can push to any user");
    }
    let http_local = match &http {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    info!(
        ws = %ws.local_addr()?,
        push = %push.local_addr()?,
        http = %http_local.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        push_unix = ?args.push_unix,
        max_ws_connections = config.max_ws_connections,
        "listening"
    );

    let shutdown = CancellationToken::new();
    let listeners = pushwire::Listeners {
        ws,
        push,
        push_unix,
        http,
        gateway,
    };
    let server = tokio::spawn(pushwire::serve_state(
        ctx.clone(),
        listeners,
        shutdown.clone(),
    ));
    sd_notify("READY=1");
    let mut reloader = reloader(&args, pinned);
    signals
        .until_stop(|| {
            reloader.reload(&ctx);
            reload_pusher_apps(&args, &ctx);
        })
        .await;
    sd_notify("STOPPING=1");
    shutdown.cancel();
    let result = server.await.map_err(std::io::Error::other)?;
    if let Some(path) = &args.push_unix {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn http_addr(listen: Listen) -> Option<SocketAddr> {
    match listen {
        Listen::On(addr) => Some(addr),
        Listen::Off => None,
    }
}

/// The doors that push to any user and listen beyond loopback with neither an allow-list
/// nor a secret (the daemon warns about each at start).
fn exposed_doors(args: &Args, config: &pushwire::Config) -> Vec<(&'static str, SocketAddr)> {
    let open_to_all = config.push_allow.is_none() && config.push_secret.is_none();
    [
        ("push port", Some(args.push_listen)),
        ("HTTP door", http_addr(args.http_listen)),
    ]
    .into_iter()
    .filter_map(|(door, addr)| Some((door, addr?)))
    .filter(|(_, addr)| open_to_all && !addr.ip().is_loopback())
    .collect()
}

/// Runs a subcommand against the daemon the flags describe.
fn control(args: &Args, command: &Control) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("pushwire: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let secret = match sources(args).push_secret.read() {
        Ok(s) => s.map(|s| s.reveal().to_vec()),
        Err(err) => {
            eprintln!("pushwire: {err}");
            return ExitCode::FAILURE;
        }
    };
    let target = pushwire::control::Target {
        push: args.push_listen,
        unix: args.push_unix.clone(),
        secret,
        timeout: Duration::from_secs(5),
    };
    match runtime.block_on(run_control(&target, command)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("pushwire: {err}");
            ExitCode::from(2)
        }
    }
}

/// Prints the answer; `Ok(false)` when the daemon answered but the operation failed.
async fn run_control(
    target: &pushwire::control::Target,
    command: &Control,
) -> Result<bool, pushwire::control::ControlError> {
    use pushwire::control::{Session, status};
    match command {
        Control::Status { json, sample_ms } => {
            let st = status(target, Duration::from_millis(*sample_ms)).await?;
            if *json {
                println!("{}", st.json());
            } else {
                print!("{}", st.table());
            }
            Ok(true)
        }
        Control::Push { uid, message } => {
            let mut s = Session::open(target).await?;
            let line = format!("/send {} {message}", serde_json::Value::from(uid.as_str()));
            let reply = s.request(&line).await?;
            println!("{reply}");
            Ok(reply.starts_with("{\"ok\":true"))
        }
        Control::Online { uid } => {
            let mut s = Session::open(target).await?;
            // The reply line as the daemon wrote it (its key order is the wire's).
            let reply = s
                .request(&format!(
                    "/online {}",
                    serde_json::Value::from(uid.as_str())
                ))
                .await?;
            println!("{reply}");
            Ok(reply.contains("\"online\":true"))
        }
        Control::CheckConfig { .. } => unreachable!("check-config does not talk to a daemon"),
        Control::Kick { uid, reason } => {
            let mut s = Session::open(target).await?;
            let mut line = format!("/kick {}", serde_json::Value::from(uid.as_str()));
            if let Some(reason) = reason {
                line.push(' ');
                line.push_str(reason);
            }
            // The reply line as the daemon wrote it (its key order is the wire's).
            let reply = s.request(&line).await?;
            println!("{reply}");
            Ok(reply.starts_with("{\"ok\":true"))
        }
    }
}

/// Every signal an operator or a tool may send us by habit.
///
/// Left at their default action, SIGHUP (a "reload" reflex, logrotate's `postrotate`),
/// SIGUSR1/2, SIGQUIT and SIGALRM would kill the process at once: browsers would see a
/// bare TCP close and messages already answered `ok` would be lost, and systemd counts
/// death by SIGHUP as a clean exit. So each gets a handler: SIGTERM and SIGINT stop
/// gracefully, SIGHUP reloads ([`reload`]); the rest are logged and otherwise ignored.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
    quit: Signal,
    alrm: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
            quit: signal(SignalKind::quit())?,
            alrm: signal(SignalKind::alarm())?,
        })
    }

    /// Returns when SIGTERM or SIGINT arrives; calls `reload` on each SIGHUP, logs and
    /// ignores the others meanwhile.
    async fn until_stop(&mut self, mut reload: impl FnMut()) {
        loop {
            let ignored = tokio::select! {
                _ = self.term.recv() => return info!("SIGTERM received"),
                _ = self.int.recv() => return info!("SIGINT received"),
                _ = self.hup.recv() => {
                    info!(signal = "SIGHUP", "reloading");
                    reload();
                    continue;
                }
                _ = self.usr1.recv() => "SIGUSR1",
                _ = self.usr2.recv() => "SIGUSR2",
                _ = self.quit.recv() => "SIGQUIT",
                _ = self.alrm.recv() => "SIGALRM",
            };
            warn!(
                signal = ignored,
                "signal received and ignored (SIGTERM or SIGINT stop the daemon \
                 gracefully, SIGHUP reloads)"
            );
        }
    }
}

/// The reloadable settings given on the command line: a reload keeps them, whatever the
/// env file says (a flag is the operator's explicit choice for this process).
fn pinned(m: &clap::ArgMatches) -> Vec<Setting> {
    let cmd = Args::command();
    pushwire::reload::VARIABLES
        .iter()
        .filter(|(var, _)| {
            cmd.get_arguments().any(|a| {
                a.get_env().is_some_and(|e| e == *var)
                    && m.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine)
            })
        })
        .map(|&(_, setting)| setting)
        .collect()
}

/// The reloadable settings as the flags and environment give them.
fn sources(args: &Args) -> Sources {
    Sources {
        jwt_secret: SecretSource::given(
            args.jwt_secret_file.as_deref(),
            args.jwt_secret.as_deref(),
        ),
        push_secret: SecretSource::given(
            args.push_secret_file.as_deref(),
            args.push_secret.as_deref(),
        ),
        events_secret: SecretSource::given(
            args.events_secret_file.as_deref(),
            args.events_secret.as_deref(),
        ),
        gateway_secret: args.gateway.source(),
        allowed_origins: args.allowed_origins.clone().and_then(|o| o.0),
        push_allow: args.push_allow.clone().and_then(|a| a.0),
        trusted_proxies: args.trusted_proxies.0.clone(),
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
    }
}

/// SIGHUP's memory: the settings in force, the reload env file, what it may not change.
fn reloader(args: &Args, pinned: Vec<Setting>) -> Reloader {
    let known = Args::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    Reloader::new(args.reload_env_file.clone(), sources(args), pinned, known)
}

/// The TLS files the flags name; both or neither.
fn tls_files(args: &Args) -> Result<Option<pushwire::tls::TlsFiles>, String> {
    Ok(sources(args)
        .tls()?
        .map(|(cert, key)| pushwire::tls::TlsFiles { cert, key }))
}

/// One `--events-url` value: one or more listeners.
#[derive(Debug, Clone)]
struct EventUrls(Vec<pushwire::events::Listener>);

fn parse_event_urls(s: &str) -> Result<EventUrls, String> {
    pushwire::events::Listener::parse_all(&[s]).map(EventUrls)
}

/// `--allowed-origins` (`None`: any).
#[derive(Debug, Clone)]
struct Origins(Option<Vec<String>>);

fn parse_origins(s: &str) -> Result<Origins, String> {
    Ok(Origins(pushwire::reload::parse_origins(s)))
}

/// `--push-allow` (`None`: anyone).
#[derive(Debug, Clone)]
struct PushAllow(Option<Vec<Cidr>>);

fn parse_push_allow(s: &str) -> Result<PushAllow, String> {
    pushwire::reload::parse_push_allow(s).map(PushAllow)
}

/// A comma-separated network list, parsed by the same (fuzzed) parser the library tests.
#[derive(Debug, Clone)]
struct Nets(Vec<Cidr>);

/// `--trusted-proxies`: networks, or `none` (an empty list too) for nobody.
/// Loopback: nginx on the same host.
const DEFAULT_TRUSTED_PROXIES: &str = "127.0.0.0/8,::1/128";

fn parse_trusted(s: &str) -> Result<Nets, String> {
    pushwire::reload::parse_trusted_proxies(s).map(Nets)
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8).map_err(|e| format!("{s:?} is not an octal mode: {e}"))
}

fn config_from(args: &Args) -> std::io::Result<pushwire::Config> {
    let (nofile, err) = raise_nofile();
    if let Some(err) = err {
        warn!(%err, "cannot raise the open-files limit");
    }
    let given = sources(args);
    let jwt_secret = given.jwt_secret.read().map_err(std::io::Error::other)?;
    let push_secret = given.push_secret.read().map_err(std::io::Error::other)?;
    let events_secret = given.events_secret.read().map_err(std::io::Error::other)?;
    if jwt_secret.is_none() {
        info!("no JWT secret: the first frame is trusted as the uid");
    }
    let push_plain = push_secret
        .as_ref()
        .map(|s| String::from_utf8_lossy(s.reveal()).into_owned());
    let mut config = unvalidated_config(args, jwt_secret, push_secret, nofile);
    config.events_secret = events_secret;
    config.pusher_apps = pusher_apps(args).map_err(std::io::Error::other)?;
    config.gateway = args
        .gateway
        .config(push_plain.as_deref())
        .map_err(std::io::Error::other)?;
    config.redis_queue = args
        .queue
        .config(config.redis.as_deref())
        .map_err(std::io::Error::other)?;
    if let Some((requested, capacity)) = ws_overcommit(args, &config, nofile) {
        warn!(
            requested,
            capacity, nofile, "--max-ws-connections exceeds what the open-files limit allows"
        );
    }
    let (config, notes) = config.validate();
    for note in notes {
        warn!("{note}");
    }
    let trusted: Vec<String> = config
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    info!(
        trusted_proxies = %if trusted.is_empty() { "none".to_owned() } else { trusted.join(",") },
        "browser addresses come from the forwarding headers of these peers' connections"
    );
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    info!(
        nofile,
        max_ws_connections = config.max_ws_connections,
        max_pending_handshakes = config.max_pending_handshakes,
        workers,
        "connection capacity"
    );
    Ok(config)
}

/// The apps of `--pusher-apps`, read and checked whole.
fn pusher_apps(args: &Args) -> Result<Option<std::sync::Arc<pushwire::channels::Apps>>, String> {
    let Some(path) = &args.pusher_apps else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--pusher-apps {}: {e}", path.display()))?;
    let apps = pushwire::channels::Apps::parse(&text)
        .map_err(|e| format!("--pusher-apps {}: {e}", path.display()))?;
    info!(
        apps = apps.len(),
        "Pusher apps served at /app/{{key}} and /apps/{{id}}/"
    );
    Ok(Some(std::sync::Arc::new(apps)))
}

/// SIGHUP: reads `--pusher-apps` again, whole; a file that cannot be read or is wrong
/// changes nothing. Connections keep the app they connected with; new ones, and every API
/// call, use the new apps.
fn reload_pusher_apps(args: &Args, ctx: &pushwire::state::State) {
    if args.pusher_apps.is_none() {
        return;
    }
    match pusher_apps(args).and_then(|apps| {
        let apps = apps.ok_or("no --pusher-apps")?;
        ctx.reload_pusher_apps(std::sync::Arc::unwrap_or_clone(apps))
    }) {
        Ok(changes) if changes.is_empty() => info!("Pusher apps reloaded: nothing changed"),
        Ok(changes) => warn!(changed = %changes.join(", "), "Pusher apps reloaded"),
        Err(err) => warn!(error = %err, "Pusher apps reload failed; the apps in use stay"),
    }
}

/// Raises the soft open-files limit to the hard one (each socket is one descriptor) and
/// returns the limit in force, with the error if it could not be raised.
fn raise_nofile() -> (u64, Option<std::io::Error>) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => (n, None),
        Err(err) => (
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft),
            Some(err),
        ),
    }
}

/// `--max-ws-connections` and what the open-files limit allows, when the first exceeds
/// the second.
fn ws_overcommit(args: &Args, config: &pushwire::Config, nofile: u64) -> Option<(usize, usize)> {
    let capacity = config.ws_capacity(nofile, matches!(args.http_listen, Listen::On(_)));
    args.max_ws_connections
        .filter(|&n| n > capacity)
        .map(|n| (n, capacity))
}

/// The daemon's configuration from its flags, before `Config::validate`.
fn unvalidated_config(
    args: &Args,
    jwt_secret: Option<Secret>,
    push_secret: Option<Secret>,
    nofile: u64,
) -> pushwire::Config {
    let mut config = pushwire::Config {
        max_line_bytes: args.max_line_bytes,
        max_uid_bytes: args.max_uid_bytes,
        max_message_bytes: args.max_message_bytes,
        max_handshake_bytes: args.max_handshake_bytes,
        bind_timeout: Duration::from_millis(args.bind_timeout_ms),
        ping_interval: Duration::from_millis(args.ping_interval_ms),
        pong_timeout: Duration::from_millis(args.pong_timeout_ms),
        queue_depth: args.queue_depth,
        queue_bytes: args.queue_bytes,
        max_ws_connections: 0,
        max_push_connections: args.max_push_connections,
        shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms),
        group_grace: Duration::from_millis(args.group_grace_ms),
        max_groups: args.max_groups,
        max_group_members: args.max_group_members,
        max_list_uids: args.max_list_uids,
        jwt_secret,
        allowed_origins: args.allowed_origins.clone().and_then(|o| o.0),
        max_connections_per_ip: args.max_connections_per_ip,
        max_pending_handshakes: args.max_pending_handshakes.unwrap_or(0),
        max_pending_per_ip: args.max_pending_per_ip,
        trusted_proxies: args.trusted_proxies.0.clone(),
        push_allow: args.push_allow.clone().and_then(|a| a.0),
        push_secret,
        push_idle_timeout: (args.push_idle_timeout_ms > 0)
            .then(|| Duration::from_millis(args.push_idle_timeout_ms)),
        max_group_bytes: args.max_group_bytes,
        http_request_timeout: Duration::from_millis(args.http_request_timeout_ms),
        http_max_header_bytes: args.http_max_header_bytes,
        http_max_body_bytes: args.http_max_body_bytes,
        max_http_connections: args.max_http_connections,
        max_http_connections_per_ip: args.max_http_connections_per_ip,
        redis: args.redis.clone().filter(|u| !u.is_empty()),
        redis_prefix: args.redis_prefix.clone(),
        cluster_timeout: Duration::from_millis(args.cluster_timeout_ms),
        cluster_link_timeout: Duration::from_millis(args.cluster_link_timeout_ms),
        cluster_publish_queue: args.cluster_publish_queue,
        cluster_message_buffer: args.cluster_message_buffer,
        // (clap's `requires` makes them come together.)
        tls: tls_files(args).unwrap_or_default(),
        history_messages: args.history_messages,
        history_bytes: args.history_bytes,
        history_age: Duration::from_millis(args.history_age_ms),
        history_total_bytes: args.history_total_bytes,
        history_keep: Duration::from_millis(args.history_keep_ms),
        history_max_uids: args.history_max_uids,
        max_stale_acks: args.max_stale_acks,
        max_queue_ttl: Duration::from_millis(args.max_queue_ttl_ms),
        max_ack_wait: Duration::from_millis(args.max_ack_wait_ms),
        dedupe_window: (args.dedupe_window_ms > 0)
            .then(|| Duration::from_millis(args.dedupe_window_ms)),
        dedupe_max_entries: args.dedupe_max_entries,
        events: pushwire::events::EventsConfig {
            listeners: args.events_url.iter().flat_map(|u| u.0.clone()).collect(),
            queue: args.events_queue,
            queue_bytes: args.events_queue_bytes,
            delivery: pushwire::events::Delivery {
                batch_events: args.events_batch,
                batch_bytes: args.events_batch_bytes,
                timeout: Duration::from_millis(args.events_timeout_ms),
                attempts: args.events_attempts,
            },
            stream_buffer: args.events_stream_buffer,
            debounce: Duration::from_millis(args.events_debounce_ms),
            message: pushwire::events::MessageLimits {
                max_bytes: args.events_message_bytes,
                per_second: args.events_message_rate,
            },
        },
        // Read by the caller with the other secrets.
        events_secret: None,
        pusher_apps: None,
        pusher_activity_timeout: Duration::from_millis(args.pusher_activity_timeout_ms),
        pusher_pong_timeout: Duration::from_millis(args.pusher_pong_timeout_ms),
        gateway: None,
        redis_queue: None,
    };
    let capacity = config.ws_capacity(nofile, matches!(args.http_listen, Listen::On(_)));
    config.max_ws_connections = args.max_ws_connections.unwrap_or(capacity);
    config
}

/// Binds the Unix push socket, replacing a stale file, with the given permissions.
fn listen_unix(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("bind {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Binds with an explicit backlog: tokio's `bind` uses 128, and a connect storm past that
/// loses SYNs that then wait a full second for retransmission.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
    socket.listen(backlog)
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Tells systemd (Type=notify) about readiness, via the `$NOTIFY_SOCKET` datagram protocol.
/// A no-op when not started by systemd.
fn sd_notify(state: &str) {
    use std::os::unix::net::UnixDatagram;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)
        } else {
            sock.send_to(state.as_bytes(), &path)
        }
    });
    if let Err(err) = result {
        warn!(%err, state, "sd_notify failed");
    }
}

/// `pushwire check-config`: what the daemon would refuse or warn about at start, found
/// without starting it (nothing is served, nothing is left bound, Redis is not contacted).
mod check_config {
    use std::ffi::{OsStr, OsString};
    use std::path::Path;
    use std::process::ExitCode;

    use clap::CommandFactory;

    use pushwire::reload::{SecretSource, Setting};

    use super::{
        Args, exposed_doors, http_addr, listen, raise_nofile, reloader, unvalidated_config,
        ws_overcommit,
    };

    /// The URL schemes `--redis` may use (fred's, and the ones tested).
    const REDIS_SCHEMES: [&str; 4] = ["redis", "rediss", "redis-cluster", "rediss-cluster"];

    /// A Unix socket's path must fit `sun_path` (108 bytes with its terminating NUL).
    const SUN_PATH_MAX: usize = 107;

    /// Whether the command line asks for `check-config`: looked at before clap parses it,
    /// so that a value clap refuses is still reported the check-config way.
    pub fn requested() -> bool {
        std::env::args_os().skip(1).any(|a| a == "check-config")
    }

    /// Clap refused the flags or the environment. It stops at its first refusal, so every
    /// `PUSHWIRE_*` variable is also parsed on its own (unless its flag is on the command
    /// line, which wins): one line for each value the daemon could not start with.
    pub fn unparsable(err: &clap::Error) -> ExitCode {
        let argv: Vec<String> = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let on_command_line = |long: &str| {
            let flag = format!("--{long}");
            argv.iter()
                .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
        };
        // The same flags with no environment behind them, to parse one value at a time.
        let bare = Args::command().mut_args(|a| a.env(None::<&'static str>));
        let mut problems = Vec::new();
        for arg in Args::command().get_arguments() {
            let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            let Some(value) = std::env::var_os(env) else {
                continue;
            };
            if on_command_line(long) {
                continue;
            }
            let mut flag = OsString::from(format!("--{long}="));
            flag.push(&value);
            let alone = [OsString::from("pushwire"), flag, "check-config".into()];
            if let Err(e) = bare.clone().try_get_matches_from(alone) {
                problems.push(format!("{}: {}", env.to_string_lossy(), one_line(&e)));
            }
        }
        let first = one_line(err);
        if !problems.iter().any(|p| p.ends_with(&first)) {
            problems.insert(0, first);
        }
        report(&problems, &[])
    }

    /// Everything the daemon checks at start, short of serving.
    pub fn run(args: &Args, pinned: &[Setting], bind: bool) -> ExitCode {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();

        // The same limit the daemon would run with (under systemd: the unit's LimitNOFILE).
        let (nofile, err) = raise_nofile();
        if let Some(err) = err {
            warnings.push(format!("cannot raise the open-files limit: {err}"));
        }

        let mut secret_of = |long: &str, file: Option<&Path>, literal: &Option<String>| {
            if literal.as_deref() == Some("") {
                let literal = long.strip_suffix("-file").unwrap_or(long);
                warnings.push(format!("{} is empty: no secret is set", label(literal)));
            }
            match SecretSource::given(file, literal.as_deref()).read() {
                Ok(s) => Ok(s),
                Err(e) => {
                    problems.push(format!("{}: {e}", label(long)));
                    Err(())
                }
            }
        };
        let jwt = secret_of(
            "jwt-secret-file",
            args.jwt_secret_file.as_deref(),
            &args.jwt_secret,
        );
        let push = secret_of(
            "push-secret-file",
            args.push_secret_file.as_deref(),
            &args.push_secret,
        );
        let events = secret_of(
            "events-secret-file",
            args.events_secret_file.as_deref(),
            &args.events_secret,
        );
        let secrets_known = jwt.is_ok() && push.is_ok();
        if let Err(e) = super::pusher_apps(args) {
            problems.push(e);
        }
        let mut config = unvalidated_config(
            args,
            jwt.unwrap_or_default(),
            push.unwrap_or_default(),
            nofile,
        );
        if let Ok(secret) = events {
            config.events_secret = secret;
            if let Err(e) = config.events.check(config.events_secret.as_ref()) {
                problems.push(format!("{}: {e}", label("events-url")));
            }
        }
        if let Some((requested, capacity)) = ws_overcommit(args, &config, nofile) {
            warnings.push(format!(
                "{} {requested} exceeds what the open-files limit ({nofile}) allows: {capacity}",
                label("max-ws-connections")
            ));
        }
        let (config, notes) = config.validate();
        warnings.extend(notes);
        // Without the secret a failed file would have given, "open to all" is not known.
        if secrets_known {
            for (door, addr) in exposed_doors(args, &config) {
                warnings.push(format!(
                    "{door} {addr} is not on loopback: anyone who can reach it can push to any user"
                ));
            }
        }

        let push_plain = config
            .push_secret
            .as_ref()
            .map(|s| String::from_utf8_lossy(s.reveal()).into_owned());
        if let Err(e) = args.gateway.config(push_plain.as_deref()) {
            problems.push(e);
        }
        match args.queue.config(config.redis.as_deref()) {
            Err(e) => problems.push(e),
            Ok(Some(q)) => {
                if let Err(e) = redis_url(&q.url) {
                    problems.push(format!(
                        "{} {}: {e}",
                        label("redis-queue-url"),
                        redacted(&q.url)
                    ));
                }
            }
            Ok(None) => {}
        }
        if let Some(url) = &config.redis
            && let Err(e) = redis_url(url)
        {
            problems.push(format!("{} {}: {e}", label("redis"), redacted(url)));
        }

        if let Some(files) = &config.tls
            && let Err(e) = pushwire::tls::load(files)
        {
            problems.push(format!("{}: {e}", label("tls-cert")));
        }

        // What the next reload would apply must be good now: the same reading of the
        // file, refused for the same reasons. (Its secret files are read only when the
        // ones in use were: a bad one is reported once, above.)
        if args.reload_env_file.is_some() {
            let next = reloader(args, pinned.to_vec()).next();
            let applied = next.and_then(|next| {
                if secrets_known {
                    next.sources.resolve()?;
                }
                next.sources.tls().map(drop)
            });
            if let Err(e) = applied {
                problems.push(format!("{}: {e}", label("reload-env-file")));
            }
        }

        if let Some(path) = &args.push_unix
            && let Err(e) = unix_socket_path(path)
        {
            problems.push(format!("{} {}: {e}", label("push-unix"), path.display()));
        }

        if bind {
            bind_all(args, &mut problems);
        }

        report(&problems, &warnings)
    }

    /// Binds every listener as the daemon would (same options, same backlog), all at once
    /// so that two flags naming one address collide here too, then releases them.
    fn bind_all(args: &Args, problems: &mut Vec<String>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return problems.push(format!("cannot start a runtime to bind with: {e}")),
        };
        let _entered = rt.enter();
        let mut held = Vec::new();
        for (long, addr) in [
            ("ws-listen", Some(args.ws_listen)),
            ("push-listen", Some(args.push_listen)),
            ("http-listen", http_addr(args.http_listen)),
            ("gateway-listen", http_addr(args.gateway.gateway_listen)),
            (
                "gateway-register-listen",
                http_addr(args.gateway.gateway_listen)
                    .map(|_| args.gateway.gateway_register_listen),
            ),
            (
                "gateway-ws-listen",
                http_addr(args.gateway.gateway_ws_listen),
            ),
        ] {
            let Some(addr) = addr else { continue };
            match listen(addr, args.listen_backlog) {
                Ok(l) => held.push(l),
                Err(e) => problems.push(format!("{}: {e}", label(long))),
            }
        }
    }

    /// Warnings, then `config ok` on stdout (exit 0) or each problem on stderr (exit 1).
    fn report(problems: &[String], warnings: &[String]) -> ExitCode {
        for w in warnings {
            eprintln!("warning: {w}");
        }
        if problems.is_empty() {
            println!("config ok");
            return ExitCode::SUCCESS;
        }
        for p in problems {
            eprintln!("error: {p}");
        }
        ExitCode::FAILURE
    }

    /// `--flag (PUSHWIRE_FLAG)`: both names, since the value may come from either.
    fn label(long: &str) -> String {
        let cmd = Args::command();
        let env = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long))
            .and_then(|a| a.get_env())
            .map(OsStr::to_string_lossy);
        match env {
            Some(env) => format!("--{long} ({env})"),
            None => format!("--{long}"),
        }
    }

    /// A clap error's first line, without its `error: ` prefix.
    fn one_line(err: &clap::Error) -> String {
        let text = err.to_string();
        let line = text.lines().next().unwrap_or_default();
        line.strip_prefix("error: ").unwrap_or(line).to_owned()
    }

    /// The daemon hands `--redis` to fred as is; fred also takes schemes nobody means here
    /// (`http://` parses as a standalone Redis), so the scheme is checked first.
    fn redis_url(url: &str) -> Result<(), String> {
        let scheme = url.split_once("://").map(|(s, _)| s);
        if !scheme.is_some_and(|s| REDIS_SCHEMES.contains(&s)) {
            return Err(format!(
                "not a Redis URL (want {})",
                REDIS_SCHEMES.map(|s| format!("{s}://")).join(", ")
            ));
        }
        fred::types::config::Config::from_url(url)
            .map(drop)
            .map_err(|e| e.details().to_string())
    }

    /// The URL without its user and password (a `user:password@` part), for printing.
    fn redacted(url: &str) -> String {
        match (url.split_once("://"), url.rfind('@')) {
            (Some((scheme, _)), Some(at)) if at > scheme.len() + 3 => {
                format!("{scheme}://***@{}", &url[at + 1..])
            }
            _ => url.to_owned(),
        }
    }

    /// The daemon binds `path` (replacing a stale socket file): its directory must exist
    /// and take a new socket, and the path must not be another kind of file.
    fn unix_socket_path(path: &Path) -> Result<(), String> {
        use std::os::unix::fs::FileTypeExt;
        if path.as_os_str().len() > SUN_PATH_MAX {
            return Err(format!(
                "longer than the {SUN_PATH_MAX} bytes a socket path may have"
            ));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("{} is not a directory", dir.display())),
            Err(e) => return Err(format!("directory {}: {e}", dir.display())),
        }
        if let Ok(m) = std::fs::symlink_metadata(path)
            && !m.file_type().is_socket()
        {
            return Err("exists and is not a socket".to_owned());
        }
        // A socket of our own next to it shows the directory takes one (permissions,
        // a read-only mount); it is removed at once.
        let probe = dir.join(format!(".pushwire-check-{}", std::process::id()));
        if probe.as_os_str().len() <= SUN_PATH_MAX {
            std::os::unix::net::UnixListener::bind(&probe)
                .map_err(|e| format!("cannot create a socket in {}: {e}", dir.display()))?;
            let _ = std::fs::remove_file(&probe);
        }
        Ok(())
    }
}
