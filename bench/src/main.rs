//! pushwire-bench: load generator and correctness checker for a *running* pushwire.
//!
//! ```text
//! pushwire-bench --ws ws://127.0.0.1:1234 --push 127.0.0.1:5678 [--server-pid PID] \
//!     <storm|throughput|churn|latency|fanout|idle-mem|pending-mem|all|floor|events-webhook> [options]
//! pushwire-bench --door pusher|nchan|own --ws ws://HOST:PORT [--http HOST:PORT] channel-fanout
//! ```
//!
//! Every scenario checks what it measures: each push answered `ok` must reach its client
//! exactly once and byte-exact, no unexpected `fail`, no unexpected close. Any violation is
//! printed to stderr and the process exits 1. Results go to stdout as a table per scenario
//! plus one JSON line per scenario (`--json-only` keeps just the JSON). Progress goes to
//! stderr. See `--help`, and the docs at the top of `scenarios/mod.rs` for what each
//! scenario times.
//!
//! # Layout
//! `main.rs` parses the options and runs one scenario; `scenarios/` has one file per
//! scenario (`mod.rs`: the shared context and the dispatch). Below them: `client.rs` (the
//! WebSocket clients and their source addresses), `doors.rs` (Pusher and nchan
//! subscribers), `http.rs` (publishers over HTTP keep-alive), `push.rs` (pipelined backend
//! connections), `wsread.rs` (the lean frame reader), `track.rs` (the delivery ledger every
//! check uses), `procstat.rs` (CPU and memory from /proc), `report.rs` (tables and JSON
//! lines) and `compare.rs` (medians and ratios of earlier runs).

#![forbid(unsafe_code)]

mod client;
mod compare;
mod doors;
mod http;
mod procstat;
mod push;
mod report;
mod scenarios;
mod track;
mod wsread;

use scenarios::{cluster_count, cluster_fanout, events_webhook, floor};

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "pushwire-bench",
    version,
    about = "Load generator and correctness checker for a running pushwire",
    long_about = "Drives a running pushwire over real sockets: WebSocket clients bind uids, backend \
connections push JSON lines, and every delivery is checked (each `ok` delivered exactly once, \
byte-exact; no unexpected `fail`). Reports a table and one JSON line per scenario on stdout and \
exits non-zero on any correctness error. Give --server-pid to get the server's CPU time per push \
(utime+stime from /proc) and its RSS.\n\nThe clients are created once (a connect storm) and reused by \
every later scenario; `all` runs storm, idle-mem, fanout, latency, throughput and churn in that order."
)]
pub struct Opts {
    #[command(subcommand)]
    pub scenario: Scenario,

    /// WebSocket URL of the server (any path).
    #[arg(
        long,
        global = true,
        env = "PUSHWIRE_BENCH_WS",
        default_value = "ws://127.0.0.1:1234"
    )]
    pub ws: String,
    /// Push (backend) address of the server, host:port.
    #[arg(
        long,
        global = true,
        env = "PUSHWIRE_BENCH_PUSH",
        default_value = "127.0.0.1:5678"
    )]
    pub push: String,
    /// For a `wss://` --ws URL: the PEM certificate to trust (the server's own, if
    /// self-signed). The name checked is the URL's host.
    #[arg(long, global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// PID of the server process: enables server CPU per push and RSS figures.
    #[arg(long, global = true, env = "PUSHWIRE_BENCH_SERVER_PID")]
    pub server_pid: Option<u32>,
    /// The server's CPU and memory include its child processes (nginx's workers under the
    /// master `--server-pid` names: nchan). On by default with `--door nchan`.
    #[arg(long, global = true)]
    pub server_children: bool,
    /// Which door of the server the clients and publishers use: `own` (pushwire's protocol:
    /// uid frames, push lines to --push), `pusher` (the Pusher Channels door: `/app/{key}`
    /// on --ws, signed `POST /apps/{id}/events` to --http) or `nchan` (an nginx with nchan:
    /// subscribers at `/sub/{channel}` on --ws, `POST /pub/{channel}` to --http). The
    /// doors work with `channel-fanout` (docs/benchmarks.md).
    #[arg(long, global = true, value_enum, default_value_t = Door::Own)]
    pub door: Door,
    /// `--door pusher|nchan`: the HTTP address publishes go to, host:port (pushwire's HTTP
    /// door; nchan's publisher location) [default: nchan: --ws's host:port; pusher:
    /// 127.0.0.1:2121].
    #[arg(long, global = true)]
    pub http: Option<String>,
    /// `--door pusher`: the app's key (`/app/{key}`, `auth_key`).
    #[arg(long, global = true, default_value = "bench-key")]
    pub pusher_key: String,
    /// `--door pusher`: the app's id (`/apps/{id}/events`).
    #[arg(long, global = true, default_value = "bench")]
    pub pusher_id: String,
    /// `--door pusher`: the app's secret (signs every API call).
    #[arg(
        long,
        global = true,
        env = "PUSHWIRE_BENCH_PUSHER_SECRET",
        default_value = "bench-secret-0123456789"
    )]
    pub pusher_secret: String,
    /// channel-fanout: every client subscribes to one shared channel (one publish reaches
    /// all), or each to a channel of its own (one publish per client).
    #[arg(long, global = true, value_enum, default_value_t = ChannelMode::Shared)]
    pub channel_mode: ChannelMode,

    /// PID of the redis-server linking the nodes (cluster mode): adds Redis's CPU per push
    /// (schedstat of /proc/PID) to every scenario's figures. A Redis Cluster: every master's
    /// PID (repeat, or comma-separated), their CPU summed.
    #[arg(
        long,
        global = true,
        env = "PUSHWIRE_BENCH_REDIS_PID",
        value_delimiter = ','
    )]
    pub redis_pid: Vec<u32>,

    /// Number of WebSocket clients (one uid each).
    #[arg(long, global = true, default_value_t = 1000)]
    pub clients: usize,
    /// Connect storm: clients connecting (TCP + handshake + uid) at the same time.
    #[arg(long, global = true, default_value_t = 1000)]
    pub connect_concurrency: usize,
    /// Loopback source addresses 127.0.0.2.. to spread client sockets over (0 = don't bind)
    /// [default: enough for at most 500 clients per address, at least 32; max 250].
    #[arg(long, global = true)]
    pub source_addrs: Option<u32>,
    /// Source addresses come from 127.B.0.0/16 (cluster-fanout gives holder K the block
    /// K+1, so N nodes' browsers come from N blocks of 127.0.0.0/8).
    #[arg(long, global = true, default_value_t = 0)]
    pub source_block: u8,
    /// How the storm knows every client is bound: a probe push to each uid answered `ok`
    /// (each client then has received one message), or the server's `/count` command
    /// (no message at all: the idle-mem figure is then for never-used sockets).
    #[arg(long, global = true, value_enum, default_value_t = BindCheck::Probe)]
    pub bind_check: BindCheck,
    /// tungstenite read buffer per client during the handshake, bytes (frames are read by
    /// the bench's own lean reader afterwards).
    #[arg(long, global = true, default_value_t = 4096)]
    pub ws_read_buffer: usize,
    /// Extra padding bytes in every pushed JSON line (`"p":"xxx…"`).
    #[arg(long, global = true, default_value_t = 0)]
    pub pad: usize,
    /// resume-storm: messages each client misses while it is away.
    #[arg(long, global = true, default_value_t = 10)]
    pub missed: usize,

    /// Clients opt in to protocol v1 (`?pushwire=1`, docs/protocol.md): each message comes as
    /// `m SEQ PAYLOAD` after a status frame; the bench checks PAYLOAD as usual. Against a
    /// server that ignores the parameter the frames arrive bare and are checked as they are.
    #[arg(long, global = true)]
    pub v1: bool,

    /// Small sizes for CI (fewer pushes, shorter phases); explicit options still win.
    #[arg(long, global = true)]
    pub smoke: bool,

    /// throughput: backend connections.
    #[arg(long, global = true, default_value_t = 4)]
    pub conns: usize,
    /// throughput: maximum unanswered pushes per backend connection.
    #[arg(long, global = true, default_value_t = 256)]
    pub window: usize,
    /// throughput: total pushes [default: 100 per client, 100k..2M; smoke 20k].
    #[arg(long, global = true)]
    pub pushes: Option<u64>,
    /// throughput/latency/churn: push to random uids among the first N clients [default: all].
    #[arg(long, global = true)]
    pub targets: Option<usize>,

    /// churn: pushes, each on a new TCP connection [default: 5000; smoke 500].
    #[arg(long, global = true)]
    pub churn_pushes: Option<u64>,
    /// churn: concurrent workers.
    #[arg(long, global = true, default_value_t = 4)]
    pub churn_workers: usize,

    /// latency: paced pushes per second [default: 2000; smoke 500].
    #[arg(long, global = true)]
    pub rate: Option<u64>,
    /// latency: duration of the paced phase, ms [default: 5000; smoke 1000].
    #[arg(long, global = true)]
    pub duration_ms: Option<u64>,

    /// fanout: rounds (one push per uid each) [default: 3; smoke 1].
    #[arg(long, global = true)]
    pub rounds: Option<u32>,
    /// fanout: one line per uid, one `/broadcast`, one `/group` to a group of every client, or
    /// all three (one report each).
    #[arg(long, global = true, value_enum, default_value_t = FanoutMode::All)]
    pub fanout_mode: FanoutMode,

    /// idle-mem: wait after the storm before reading RSS, ms [default: 2000; smoke 300].
    #[arg(long, global = true)]
    pub settle_ms: Option<u64>,
    /// How long to wait for frames after the last reply, ms.
    #[arg(long, global = true, default_value_t = 10_000)]
    pub drain_timeout_ms: u64,
    /// Give up the connect storm after this long, ms.
    #[arg(long, global = true, default_value_t = 60_000)]
    pub storm_timeout_ms: u64,

    /// floor: this many senders at once, each with its own --clients sockets (one process
    /// pair each), rounds started together: the like-for-like floor for K nodes on one box.
    #[arg(long, global = true, default_value_t = 1)]
    pub floor_senders: usize,
    /// floor (internal): rounds start on a line from stdin; each round's figure is printed.
    #[arg(long, global = true, hide = true)]
    pub floor_follow: bool,

    /// Tokio worker threads of the bench [default: number of CPUs].
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Progress line interval on stderr, ms (0 = none).
    #[arg(long, global = true, default_value_t = 1000)]
    pub progress_ms: u64,
    /// Print only the JSON lines on stdout.
    #[arg(long, global = true)]
    pub json_only: bool,
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// N clients connect and bind concurrently; time until all are bound.
    Storm,
    /// K backend connections pipelining pushes to random bound uids.
    Throughput,
    /// A new TCP connection per push (connect, write, read reply, close).
    Churn,
    /// Protocol v1 (needs --v1): `/push ID ack=MS` one at a time, clients ack at once;
    /// the push → acked-reply round trip.
    Ack,
    /// Protocol v1: --clients bind with ?pushwire=1, are cut, miss --missed messages each,
    /// and all reconnect at once with since=; time until every one has caught up, and the
    /// server's CPU for it (plain ws:// only).
    ResumeStorm,
    /// Paced pushes at a fixed rate; push→frame latency percentiles.
    Latency,
    /// Fan-out to all N clients (a line per uid, one /broadcast, one /group); time to the last delivery.
    Fanout,
    /// Server RSS per connection that never finishes its handshake (needs --server-pid).
    PendingMem {
        /// Bytes of an upgrade request each connection sends before going silent (0: it
        /// sends nothing at all).
        #[arg(long, default_value_t = 0)]
        request_bytes: usize,
        /// On a `wss://` port instead: what of a TLS handshake each connection sends before
        /// going silent (ignores --request-bytes).
        #[arg(long, value_enum)]
        tls_first: Option<TlsFirst>,
    },
    /// Server RSS per bound idle client (needs --server-pid).
    IdleMem,
    /// With any `--door`: every client subscribes (to one shared channel, or with
    /// `--channel-mode per-uid` to its own), the server's RSS per idle subscribed
    /// connection, then `--rounds` rounds of publishing (one publish to the shared channel,
    /// or one per client's channel): time to the last delivery and server CPU per delivery.
    ChannelFanout,
    /// Every scenario in sequence with one set of clients.
    All,
    /// No server: a child process writes one broadcast-sized frame to each of --clients
    /// connected loopback sockets in a tight send() loop per round; its CPU per frame is the
    /// kernel's floor for fanout-broadcast's server_cpu_us_per_frame (ignores --ws/--push).
    Floor,
    /// Cluster mode: fan-out and broadcast across several nodes, each holding --clients
    /// browsers in a child process of its own (one process's open files are not enough for
    /// 3 x 19k), pushed through the first node. Reports the time to the last delivery on
    /// any node and each node's server CPU per delivered frame (ignores --ws/--push).
    ClusterFanout {
        /// One node: `WS_URL,PUSH_ADDR,PID` (repeat per node).
        #[arg(long = "node", required = true, num_args = 1)]
        nodes: Vec<String>,
        /// Which node (0-based, in `--node` order) gets the pushes: the origin. Moving it
        /// tells what the origin pays apart from what the first-bound node pays.
        #[arg(long, default_value_t = 0)]
        push_via: usize,
        /// The Redis linking the nodes, HOST:PORT (a Redis Cluster: each master, repeat):
        /// adds its `used_memory` (summed) per uid online, before and after every node's
        /// browsers came online.
        #[arg(long, num_args = 1)]
        redis: Vec<String>,
    },
    /// Cluster mode: what one `/count` costs each node and Redis (its distinct uids are
    /// counted in Redis), with --clients browsers held on each node in a child process of
    /// its own; `/count`s one at a time through one node (ignores --ws/--push).
    ClusterCount {
        /// One node: `WS_URL,PUSH_ADDR,PID` (repeat per node).
        #[arg(long = "node", required = true, num_args = 1)]
        nodes: Vec<String>,
        /// Which node (0-based, in `--node` order) is asked.
        #[arg(long, default_value_t = 0)]
        ask_via: usize,
        /// `/count` calls [default: 2000; smoke 100].
        #[arg(long)]
        counts: Option<u64>,
        /// The Redis linking the nodes, HOST:PORT: adds its memory per uid online
        /// (`INFO memory` before and after the uids came online). A Redis Cluster: each
        /// master (repeat), their `used_memory` summed.
        #[arg(long, num_args = 1)]
        redis: Vec<String>,
    },
    /// A cluster-fanout child: binds --clients browsers to --ws, then checks the deliveries
    /// the parent announces on stdin (internal).
    #[command(hide = true)]
    Holder {
        /// Uid prefix of this child's clients.
        #[arg(long)]
        tag: String,
    },
    /// The floor scenario's sending child (internal).
    #[command(hide = true)]
    FloorSender {
        /// Address to connect every socket to.
        #[arg(long)]
        connect: SocketAddr,
        /// Sockets to connect.
        #[arg(long)]
        count: usize,
        /// Payload bytes of each frame.
        #[arg(long)]
        payload_bytes: usize,
    },
    /// No server: what one event costs when a webhook receiver is attached (encoding,
    /// queue, batch, signature, POST), measured in this process on pushwire's events hub
    /// with the receiver in a child process (ignores --ws/--push).
    EventsWebhook {
        /// Events per pass [default: 100000; smoke 10000].
        #[arg(long)]
        events: Option<u64>,
        /// Events per second [default: 20000].
        #[arg(long)]
        rate: Option<u64>,
    },
    /// The events-webhook scenario's receiver (internal).
    #[command(hide = true)]
    EventsReceiver,
    /// No run: reads earlier runs' JSON lines, one file per side (e.g. before.jsonl
    /// after.jsonl), and prints each figure's median per side and its ratio to the first
    /// side. Exits 1 if any run in them failed its checks. See scripts/bench-compare.sh.
    Compare {
        /// JSON-lines files (a run's stdout); the file name is the side's label.
        #[arg(required = true, num_args = 1..)]
        files: Vec<std::path::PathBuf>,
    },
}

/// What a pending TLS connection of `pending-mem` sends.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFirst {
    /// The first byte of a handshake record.
    Byte,
    /// A whole ClientHello (a real one, from rustls); the server's answer is never read,
    /// so its handshake waits for the client's Finished.
    Hello,
}

/// Which of the server's doors the bench uses (`--door`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// pushwire's own protocol: a uid frame, push lines on the TCP push port.
    Own,
    /// The Pusher Channels door: `pusher:subscribe`, signed HTTP API events.
    Pusher,
    /// nchan (nginx): subscribers addressed by URL, publishers POST the body.
    Nchan,
}

impl Door {
    pub fn name(self) -> &'static str {
        match self {
            Door::Own => "own",
            Door::Pusher => "pusher",
            Door::Nchan => "nchan",
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelMode {
    /// One channel every client subscribes to (own door: a group every uid joined).
    Shared,
    /// One channel per client (own door: its uid).
    PerUid,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindCheck {
    /// Pipelined probe push per uid, retried on `fail`, until every one is `ok`.
    Probe,
    /// Poll `/count` until it shows every client's connection.
    Count,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanoutMode {
    /// One line per uid, pipelined on one connection.
    PerUid,
    /// One `/broadcast PAYLOAD` command reaching every connection.
    Broadcast,
    /// One `/group G PAYLOAD` to a group every client's uid joined beforehand.
    Group,
    /// per-uid, then broadcast, then group.
    All,
}

impl Opts {
    pub fn pick<T>(&self, explicit: Option<T>, normal: T, smoke: T) -> T {
        explicit.unwrap_or(if self.smoke { smoke } else { normal })
    }
    pub fn throughput_pushes(&self) -> u64 {
        let normal = (self.clients as u64 * 100).clamp(100_000, 2_000_000);
        self.pick(self.pushes, normal, 20_000).max(1)
    }
    pub fn churn_pushes(&self) -> u64 {
        self.pick(self.churn_pushes, 5000, 500).max(1)
    }
    pub fn latency_rate(&self) -> u64 {
        self.pick(self.rate, 2000, 500).max(1)
    }
    pub fn latency_duration(&self) -> Duration {
        Duration::from_millis(self.pick(self.duration_ms, 5000, 1000).max(1))
    }
    pub fn fanout_rounds(&self) -> u32 {
        self.pick(self.rounds, 3, 1).max(1)
    }
    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.pick(self.settle_ms, 2000, 300))
    }
    /// Source addresses: the per-address connection cap of the server (1024 by default) and
    /// the ~28k ephemeral ports of each address must not be reached.
    pub fn source_addrs(&self) -> u32 {
        let need = self.clients.div_ceil(500).clamp(32, 250) as u32;
        self.source_addrs.unwrap_or(need)
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
    pub fn progress(&self) -> Option<Duration> {
        (self.progress_ms > 0).then(|| Duration::from_millis(self.progress_ms))
    }
}

/// `ws://host:port/path` → (host:port) resolved.
pub(crate) fn ws_target(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .ok_or_else(|| format!("--ws must be a ws:// or wss:// URL, got {url:?}"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    resolve(hostport)
}

fn resolve(hostport: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {hostport:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport:?} resolves to nothing"))
}

fn main() {
    let o = Opts::parse();
    if let Scenario::Compare { files } = &o.scenario {
        let code = compare::run(files).unwrap_or_else(|e| {
            eprintln!("pushwire-bench: {e}");
            2
        });
        std::process::exit(code);
    }
    procstat::set_redis_pids(&o.redis_pid);
    match &o.scenario {
        Scenario::ClusterFanout {
            nodes,
            push_via,
            redis,
        } => std::process::exit(cluster_fanout::run(&o, nodes, *push_via, redis)),
        Scenario::ClusterCount {
            nodes,
            ask_via,
            counts,
            redis,
        } => {
            let args = cluster_count::Args {
                nodes,
                ask_via: *ask_via,
                counts: *counts,
                redis,
            };
            std::process::exit(cluster_count::run(&o, &args))
        }
        Scenario::Floor => std::process::exit(floor::run(&o)),
        Scenario::EventsWebhook { events, rate } => {
            std::process::exit(events_webhook::run(&o, *events, *rate))
        }
        Scenario::EventsReceiver => std::process::exit(events_webhook::receiver()),
        Scenario::FloorSender { .. } => std::process::exit(floor::sender(&o)),
        _ => {}
    }
    track::now_ns(); // start the clock
    let code = match setup_and_run(o) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pushwire-bench: {e}");
            2
        }
    };
    std::process::exit(code);
}

fn setup_and_run(o: Opts) -> Result<i32, String> {
    let ws_addr = ws_target(&o.ws)?;
    // The other doors publish over HTTP: their "push" address is the HTTP one.
    let push_addr = match o.door {
        Door::Own => resolve(&o.push)?,
        Door::Pusher => resolve(o.http.as_deref().unwrap_or("127.0.0.1:2121"))?,
        Door::Nchan => match o.http.as_deref() {
            Some(h) => resolve(h)?,
            None => ws_addr,
        },
    };
    if o.door != Door::Own && o.scenario != Scenario::ChannelFanout {
        return Err(format!(
            "--door {} works with channel-fanout only",
            o.door.name()
        ));
    }
    if o.server_children || o.door == Door::Nchan {
        procstat::set_children(true);
    }
    if o.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    if o.clients > u32::MAX as usize {
        return Err("--clients is too large".into());
    }
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|e| format!("raising RLIMIT_NOFILE: {e}"))?;
    let need = o.clients as u64 + o.conns as u64 + o.churn_workers as u64 + 64;
    if need > limit {
        return Err(format!(
            "{} clients need about {need} open files but the limit is {limit} (hard limit reached); \
             use fewer --clients or raise the hard limit",
            o.clients
        ));
    }
    if let Some(pid) = o.server_pid
        && !procstat::alive(pid)
    {
        return Err(format!("--server-pid {pid}: no such process"));
    }
    let threads = o
        .threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        })
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let ws_url = if o.v1 {
        let sep = if o.ws.contains('?') { '&' } else { '?' };
        format!("{}{sep}pushwire=1", o.ws)
    } else {
        o.ws.clone()
    };
    let mut net = client::Net::new(
        ws_url,
        ws_addr,
        push_addr,
        o.source_addrs(),
        o.ws_read_buffer.max(64),
    );
    net.tls = tls_client(&o)?;
    net.block = o.source_block;
    let net: &'static client::Net = Box::leak(Box::new(net));
    let ok = rt.block_on(scenarios::main(o, net))?;
    let errors = track::error_count();
    if ok && errors == 0 {
        eprintln!("pushwire-bench: all checks passed");
        Ok(0)
    } else {
        eprintln!("pushwire-bench: FAILED ({errors} error(s); see above)");
        Ok(1)
    }
}

/// The TLS client for a `wss://` --ws URL, trusting --tls-ca.
fn tls_client(
    o: &Opts,
) -> Result<
    Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    String,
> {
    use rustls::pki_types::pem::PemObject;
    if !o.ws.starts_with("wss://") {
        return Ok(None);
    }
    let ca = o.tls_ca.as_ref().ok_or("a wss:// URL needs --tls-ca")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?
    {
        let cert = cert.map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host =
        o.ws.trim_start_matches("wss://")
            .split(['/', ':'])
            .next()
            .unwrap_or_default()
            .to_owned();
    let name =
        rustls::pki_types::ServerName::try_from(host).map_err(|e| format!("--ws host: {e}"))?;
    Ok(Some((
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
        name,
    )))
}
