//! Accept loops, connection limits, and the shutdown order.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep, timeout_at};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::access::Admission;
use crate::config::Config;
use crate::groups::GroupLimits;
use crate::metrics::Metrics;
use crate::outbox::QueueLimits;
use crate::registry::Registry;
use crate::{handshake, push, ws};

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) config: Config,
    pub(crate) registry: Registry,
    pub(crate) ws_config: WebSocketConfig,
    /// Cancelled first: backends stop reading and answer what they already read.
    pub(crate) push_stop: CancellationToken,
    /// Cancelled once backends are drained, so every accepted push reaches its socket
    /// before browsers get their 1001.
    pub(crate) ws_stop: CancellationToken,
}

/// The sockets pushwire serves, bound by the caller (tests use port 0).
#[derive(Debug)]
pub struct Listeners {
    /// Browsers.
    pub ws: TcpListener,
    /// Backends over TCP.
    pub push: TcpListener,
    /// Backends over a Unix socket (file permissions decide who may push).
    pub push_unix: Option<UnixListener>,
}

/// Serves browsers on `ws` and backends on `push` until `shutdown` is cancelled, then
/// drains within `config.shutdown_timeout` and returns.
pub async fn run(
    config: Config,
    ws: TcpListener,
    push: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listeners = Listeners {
        ws,
        push,
        push_unix: None,
    };
    serve(config, listeners, shutdown).await
}

/// Like [`run`], with every listener kind.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let Listeners {
        ws,
        push,
        push_unix,
    } = listeners;
    let registry = Registry::new(
        QueueLimits {
            depth: config.queue_depth,
            bytes: config.queue_bytes,
        },
        GroupLimits {
            max_groups: config.max_groups,
            max_members: config.max_group_members,
            grace: config.group_grace,
        },
    );
    let ctx = Arc::new(Context {
        ws_config: handshake::ws_config(config.max_message_bytes, config.max_uid_bytes),
        registry,
        push_stop: CancellationToken::new(),
        ws_stop: CancellationToken::new(),
        config,
    });
    let ws_tasks = TaskTracker::new();
    let push_tasks = TaskTracker::new();

    let admission = Admission::new(
        ctx.config.max_connections_per_ip,
        ctx.config.max_pending_per_ip,
        ctx.config.max_pending_handshakes,
    );
    let ws_accept = tokio::spawn(accept_loop(
        Listener {
            kind: "ws",
            listener: ws,
            limit: Arc::new(Semaphore::new(ctx.config.max_ws_connections)),
            stop: shutdown.clone(),
            tasks: ws_tasks.clone(),
            on_full: Box::new(|| {
                warn!(
                    kind = "ws",
                    "connection limit reached; new peers wait in the backlog"
                );
            }),
        },
        {
            let ctx = ctx.clone();
            move |stream, peer| {
                Metrics::incr(&ctx.registry.metrics().ws_accepted);
                let ctx = ctx.clone();
                let admitted = admission.admit(peer.ip());
                async move {
                    match admitted {
                        Ok(places) => {
                            let _connection = places.connection;
                            ws::serve(stream, ctx, places.pending).await;
                        }
                        Err(why) => ws::refuse(stream, why, &ctx).await,
                    }
                }
            }
        },
    ));
    // One limit for backends on both sockets.
    let push_limit = Arc::new(Semaphore::new(ctx.config.max_push_connections));
    let push_accept = tokio::spawn(accept_loop(
        Listener {
            kind: "push",
            listener: push,
            limit: push_limit.clone(),
            stop: shutdown.clone(),
            tasks: push_tasks.clone(),
            on_full: push_full_warning(&ctx),
        },
        push_handler(ctx.clone()),
    ));
    let unix_accept = push_unix.map(|listener| {
        tokio::spawn(accept_loop(
            Listener {
                kind: "push-unix",
                listener,
                limit: push_limit,
                stop: shutdown.clone(),
                tasks: push_tasks.clone(),
                on_full: push_full_warning(&ctx),
            },
            push_handler(ctx.clone()),
        ))
    });

    let sweeper = tokio::spawn(sweep_groups(ctx.clone(), shutdown.clone()));

    shutdown.cancelled().await;
    let _ = sweeper.await;
    info!("shutting down: draining backends, then closing browsers");
    let deadline = Instant::now() + ctx.config.shutdown_timeout;
    let _ = tokio::join!(ws_accept, push_accept);
    if let Some(unix) = unix_accept {
        let _ = unix.await;
    }
    ctx.push_stop.cancel();
    push_tasks.close();
    if timeout_at(deadline, push_tasks.wait()).await.is_err() {
        warn!(
            left = push_tasks.len(),
            "backend connections still busy at the drain deadline"
        );
    }
    ctx.ws_stop.cancel();
    ws_tasks.close();
    if timeout_at(deadline, ws_tasks.wait()).await.is_err() {
        warn!(
            left = ws_tasks.len(),
            "browser connections still open at the drain deadline"
        );
    }
    info!("shutdown complete");
    Ok(())
}

/// Drops group memberships of uids offline past the grace period, a few times per period.
async fn sweep_groups(ctx: Arc<Context>, stop: CancellationToken) {
    let every =
        (ctx.config.group_grace / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let dropped = ctx.registry.expire_groups(std::time::Instant::now());
                if dropped > 0 {
                    debug!(uids = dropped, "group memberships expired after the grace period");
                }
            }
            () = stop.cancelled() => return,
        }
    }
}

/// One backend connection, of either socket kind.
fn push_handler<S>(ctx: Arc<Context>) -> impl Fn(S, Peer) -> BoxedTask
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    move |stream, peer| {
        let ctx = ctx.clone();
        let open = push::Open::new(&ctx.registry);
        Box::pin(async move {
            let _open = open;
            if let Err(err) = push::serve(stream, peer, ctx).await {
                debug!(%err, "push connection ended with an error");
            }
        })
    }
}

type BoxedTask = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Logs that every backend slot is taken, and why that may be.
fn push_full_warning(ctx: &Arc<Context>) -> Box<dyn Fn() + Send + Sync> {
    let ctx = ctx.clone();
    Box::new(move || push::warn_limit_reached(&ctx))
}

/// A listening socket of either kind.
trait Accept: Send + 'static {
    type Stream: Send + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Stream, Peer)>> + Send;
}

impl Accept for TcpListener {
    type Stream = TcpStream;
    async fn accept(&self) -> std::io::Result<(TcpStream, Peer)> {
        let (stream, addr) = TcpListener::accept(self).await?;
        // Replies and pushes are tiny; Nagle would hold them back for an ACK.
        let _ = stream.set_nodelay(true);
        Ok((stream, Peer::Tcp(addr)))
    }
}

impl Accept for UnixListener {
    type Stream = UnixStream;
    async fn accept(&self) -> std::io::Result<(UnixStream, Peer)> {
        let (stream, _) = UnixListener::accept(self).await?;
        Ok((stream, Peer::Unix))
    }
}

struct Listener<L> {
    kind: &'static str,
    listener: L,
    limit: Arc<Semaphore>,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Logs that `limit` is exhausted; called at most once per [`FULL_WARN_EVERY`].
    on_full: Box<dyn Fn() + Send + Sync>,
}

/// How often a listener at its connection limit may say so: once per saturation would be
/// once per freed slot when the limit is hit over and over.
const FULL_WARN_EVERY: Duration = Duration::from_secs(10);

/// Accepts until `stop`, one task per connection, at most `limit` at once.
///
/// The permit is taken before `accept()`, so past the limit new peers wait in the kernel
/// backlog instead of being accepted and dropped. Accept errors (EMFILE above all) back
/// off and retry: the loop never ends on its own.
async fn accept_loop<L, F, Fut>(l: Listener<L>, handler: F)
where
    L: Accept,
    F: Fn(L::Stream, Peer) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut warned_full: Option<Instant> = None;
    loop {
        let permit = match l.limit.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if warned_full.is_none_or(|at| at.elapsed() >= FULL_WARN_EVERY) {
                    (l.on_full)();
                    warned_full = Some(Instant::now());
                }
                tokio::select! {
                    p = l.limit.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                    () = l.stop.cancelled() => return,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            r = l.listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!(kind = l.kind, %err, "accept failed; retrying");
                    tokio::select! {
                        () = sleep(Duration::from_millis(50)) => continue,
                        () = l.stop.cancelled() => return,
                    }
                }
            },
            () = l.stop.cancelled() => return,
        };
        let span = debug_span!("conn", kind = l.kind, %peer);
        let task = handler(stream, peer);
        l.tasks.spawn(
            async move {
                task.await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Where a connection came from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Peer {
    Tcp(SocketAddr),
    Unix,
}

impl Peer {
    pub(crate) fn ip(self) -> Option<IpAddr> {
        match self {
            Peer::Tcp(addr) => Some(addr.ip()),
            Peer::Unix => None,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(addr) => addr.fmt(f),
            Peer::Unix => f.write_str("unix"),
        }
    }
}
