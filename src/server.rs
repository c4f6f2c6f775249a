//! Accept loops, connection limits, and the shutdown order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep, timeout_at};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::config::Config;
use crate::groups::GroupLimits;
use crate::outbox::QueueLimits;
use crate::registry::Registry;
use crate::{push, ws};

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

/// Serves browsers on `ws` and backends on `push` until `shutdown` is cancelled, then
/// drains within `config.shutdown_timeout` and returns.
///
/// Takes bound listeners so callers choose addresses (tests use port 0) and backlog.
pub async fn run(
    config: Config,
    ws: TcpListener,
    push: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
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
        ws_config: ws::ws_config(config.max_uid_bytes),
        registry,
        push_stop: CancellationToken::new(),
        ws_stop: CancellationToken::new(),
        config,
    });
    let ws_tasks = TaskTracker::new();
    let push_tasks = TaskTracker::new();

    let ws_accept = tokio::spawn(accept_loop(
        Listener {
            kind: "ws",
            listener: ws,
            limit: Arc::new(Semaphore::new(ctx.config.max_ws_connections)),
            stop: shutdown.clone(),
            tasks: ws_tasks.clone(),
        },
        {
            let ctx = ctx.clone();
            move |stream| {
                Metrics::incr(&ctx.registry.metrics().ws_accepted);
                ws::serve(stream, ctx.clone())
            }
        },
    ));
    let push_accept = tokio::spawn(accept_loop(
        Listener {
            kind: "push",
            listener: push,
            limit: Arc::new(Semaphore::new(ctx.config.max_push_connections)),
            stop: shutdown.clone(),
            tasks: push_tasks.clone(),
        },
        {
            let ctx = ctx.clone();
            move |stream| {
                let ctx = ctx.clone();
                async move {
                    if let Err(err) = push::serve(stream, ctx).await {
                        debug!(%err, "push connection ended with an error");
                    }
                }
            }
        },
    ));

    let sweeper = tokio::spawn(sweep_groups(ctx.clone(), shutdown.clone()));

    shutdown.cancelled().await;
    let _ = sweeper.await;
    info!("shutting down: draining backends, then closing browsers");
    let deadline = Instant::now() + ctx.config.shutdown_timeout;
    let _ = tokio::join!(ws_accept, push_accept);
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

use crate::metrics::Metrics;

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

struct Listener {
    kind: &'static str,
    listener: TcpListener,
    limit: Arc<Semaphore>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// Accepts until `stop`, one task per connection, at most `limit` at once.
///
/// The permit is taken before `accept()`, so past the limit new peers wait in the kernel
/// backlog instead of being accepted and dropped. Accept errors (EMFILE above all) back
/// off and retry: the loop never ends on its own.
async fn accept_loop<F, Fut>(l: Listener, handler: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut warned_full = false;
    loop {
        let permit = match l.limit.clone().try_acquire_owned() {
            Ok(permit) => {
                warned_full = false;
                permit
            }
            Err(_) => {
                if !warned_full {
                    warn!(
                        kind = l.kind,
                        "connection limit reached; new peers wait in the backlog"
                    );
                    warned_full = true;
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
        // Replies and pushes are tiny; Nagle would hold them back for an ACK.
        let _ = stream.set_nodelay(true);
        let task = handler(stream);
        let span = debug_span!("conn", kind = l.kind, peer = %Peer(peer));
        l.tasks.spawn(
            async move {
                task.await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

struct Peer(SocketAddr);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
