//! Accept loops, connection limits, and the shutdown order.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::Either;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::access::{Admission, Peer};
use crate::config::Config;
use crate::doors::{http, push};
use crate::metrics::Metric;
use crate::proxied::Proxied;
use crate::state::State;
use crate::ws;

/// The sockets pushwire serves, bound by the caller (tests use port 0).
#[derive(Debug)]
pub struct Listeners {
    /// Browsers.
    pub ws: TcpListener,
    /// Backends over TCP.
    pub push: TcpListener,
    /// Backends over a Unix socket (file permissions decide who may push).
    pub push_unix: Option<UnixListener>,
    /// Backends and operators over HTTP (`POST /push`, `/metrics`, health checks).
    pub http: Option<TcpListener>,
    /// The GatewayClient door and its greeted browsers (`Config::gateway` must be set).
    pub gateway: Option<GatewayListeners>,
}

/// The GatewayClient door's sockets (`docs/gateway.md`).
#[derive(Debug)]
pub struct GatewayListeners {
    /// GatewayClient's `$registerAddress`: discovery.
    pub register: TcpListener,
    /// The gateway endpoint the Register names: GatewayClient's commands.
    pub gateway: TcpListener,
    /// Browsers greeted with their `client_id` (GatewayWorker's pages).
    pub ws: Option<TcpListener>,
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
        http: None,
        gateway: None,
    };
    serve(config, listeners, shutdown).await
}

/// Like [`run`], with every listener kind. `config` is validated here (see
/// [`Config::validate`]); each value it had to change is logged.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (config, notes) = config.validate();
    for note in notes {
        warn!("{note}");
    }
    serve_state(State::new(config)?, listeners, shutdown).await
}

/// Serves with a state made by the caller (tests that look inside it).
pub async fn serve_state(
    ctx: Arc<State>,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let Listeners {
        ws,
        push,
        push_unix,
        http,
        gateway,
    } = listeners;
    let ws_tasks = TaskTracker::new();
    let push_tasks = TaskTracker::new();
    let mut accepts = Vec::new();

    let admission = Admission::new(
        ctx.config.max_connections_per_ip,
        ctx.config.max_pending_per_ip,
        ctx.config.max_pending_handshakes,
    );
    let listener = |kind, limit, tasks: &TaskTracker, on_full| Listener {
        kind,
        limit,
        stop: shutdown.clone(),
        tasks: tasks.clone(),
        on_full,
    };
    let ws_full = full_warning(&ctx, Metric::LimitWs, |_| {
        warn!(
            kind = "ws",
            "connection limit reached; new peers wait in the backlog"
        );
    });
    let ws_limit = Arc::new(Semaphore::new(ctx.config.max_ws_connections));
    let (gateway, greeted_ws) = match gateway {
        Some(g) => (Some((g.register, g.gateway)), g.ws),
        None => (None, None),
    };
    if let Some(greeted_ws) = greeted_ws {
        // Greeted browsers share the browser port's limits and budgets.
        let full = full_warning(&ctx, Metric::LimitWs, |_| {
            warn!(
                kind = "gateway-ws",
                "connection limit reached; new peers wait in the backlog"
            );
        });
        accepts.push(tokio::spawn(accept_loop(
            greeted_ws,
            listener("gateway-ws", ws_limit.clone(), &ws_tasks, full),
            {
                let h = WsHandler {
                    ctx: ctx.clone(),
                    admission: admission.clone(),
                    greeted: true,
                };
                move |stream, peer| h.handle(stream, peer)
            },
        )));
    }
    accepts.push(tokio::spawn(accept_loop(
        ws,
        listener("ws", ws_limit, &ws_tasks, ws_full),
        {
            let h = WsHandler {
                ctx: ctx.clone(),
                admission,
                greeted: false,
            };
            move |stream, peer| h.handle(stream, peer)
        },
    )));
    // One limit for backends on both sockets.
    let push_limit = Arc::new(Semaphore::new(ctx.config.max_push_connections));
    let push_full = || full_warning(&ctx, Metric::LimitPush, push::warn_limit_reached);
    accepts.push(tokio::spawn(accept_loop(
        push,
        listener("push", push_limit.clone(), &push_tasks, push_full()),
        push_handler(ctx.clone()),
    )));
    if let Some(unix) = push_unix {
        accepts.push(tokio::spawn(accept_loop(
            unix,
            listener("push-unix", push_limit, &push_tasks, push_full()),
            push_handler(ctx.clone()),
        )));
    }
    if let Some(http) = http {
        let limit = Arc::new(Semaphore::new(ctx.config.max_http_connections));
        let full = full_warning(&ctx, Metric::LimitHttp, |_| {
            warn!(
                kind = "http",
                "connection limit reached; new peers wait in the backlog"
            );
        });
        // HTTP requests are backend requests: they drain with the push port. Refusals
        // (allow-list, per-address cap) are decided here and take no slot.
        let door = http::Door::new(ctx.clone());
        accepts.push(tokio::spawn(accept_loop(
            http,
            listener("http", limit, &push_tasks, full),
            move |stream, peer| door.accept(stream, peer),
        )));
    }

    if let Some((register, gateway)) = gateway {
        // GatewayClient's connections are backend connections: they drain with the push
        // port. One limit for both endpoints.
        let limit = Arc::new(Semaphore::new(
            ctx.config.gateway.as_ref().map_or(1, |g| g.max_connections),
        ));
        let full = || {
            full_warning(&ctx, Metric::LimitPush, |_| {
                warn!(
                    kind = "gateway",
                    "gateway door connection limit (--gateway-max-connections) reached; new peers wait in the backlog"
                );
            })
        };
        let handler = |ctx: Arc<State>| {
            move |stream, peer| -> BoxedTask {
                Box::pin(crate::doors::gateway::serve(stream, peer, ctx.clone()))
            }
        };
        let register_handler = |ctx: Arc<State>| {
            move |stream, peer| -> BoxedTask {
                Box::pin(crate::doors::gateway::register::serve(
                    stream,
                    peer,
                    ctx.clone(),
                ))
            }
        };
        accepts.push(tokio::spawn(accept_loop(
            register,
            listener("gateway-register", limit.clone(), &push_tasks, full()),
            register_handler(ctx.clone()),
        )));
        accepts.push(tokio::spawn(accept_loop(
            gateway,
            listener("gateway", limit, &push_tasks, full()),
            handler(ctx.clone()),
        )));
    }

    // Elements apps LPUSH onto Redis lists: backend work, drained with the push port.
    crate::doors::redis_queue::start(&ctx, &push_tasks);

    let sweeper = tokio::spawn(sweep_groups(ctx.clone(), shutdown.clone()));
    if ctx.config.pusher_apps.is_some() {
        tokio::spawn(tell_counts(ctx.clone(), shutdown.clone()));
    }

    shutdown.cancelled().await;
    let _ = sweeper.await;
    info!("shutting down: draining backends, then closing browsers");
    let deadline = Instant::now() + ctx.config.shutdown_timeout;
    for accept in accepts {
        let _ = accept.await;
    }
    drain(
        &ctx.push_stop,
        &push_tasks,
        deadline,
        "backend connections still busy",
    )
    .await;
    drain(
        &ctx.ws_stop,
        &ws_tasks,
        deadline,
        "browser connections still open",
    )
    .await;
    // Last: what the steps above emitted (closes, and the offlines they make) still goes
    // out, within the deadline.
    if let Some(presence) = &ctx.presence_events {
        presence.flush();
    }
    if let Some(presence) = &ctx.cluster_events {
        presence.leave(deadline).await;
    }
    if let Some(figures) = &ctx.figures {
        figures.leave(deadline).await;
    }
    ctx.events.close(deadline).await;
    ctx.nodes.stop().resolve().await;
    info!("shutdown complete");
    Ok(())
}

/// One step of the shutdown order: tell `tasks` to stop, wait for them until `deadline`.
async fn drain(stop: &CancellationToken, tasks: &TaskTracker, deadline: Instant, late: &str) {
    stop.cancel();
    tasks.close();
    if timeout_at(deadline, tasks.wait()).await.is_err() {
        warn!(left = tasks.len(), "{late} at the drain deadline");
    }
}

/// Drops group memberships of uids offline past the grace period, and histories past
/// their age and keep times, a few times per period.
async fn sweep_groups(ctx: Arc<State>, stop: CancellationToken) {
    let shortest = ctx
        .config
        .group_grace
        .min(ctx.config.history_sweep_period());
    let every = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Pusher cache channels nobody holds, past their time: once a minute is enough.
    let mut channels_swept = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if ctx.config.pusher_apps.is_some() && channels_swept.elapsed() >= Duration::from_secs(60) {
                    channels_swept = tokio::time::Instant::now();
                    ctx.nodes.channels().index().sweep(channels_swept);
                }
                let dropped = ctx.registry.expire_groups(std::time::Instant::now());
                if dropped > 0 {
                    debug!(uids = dropped, "group memberships expired after the grace period");
                }
                ctx.registry.expire_history(std::time::Instant::now());
            }
            () = stop.cancelled() => return,
        }
    }
}

/// Tells the Pusher channels' subscription counts that changed, once a
/// [`crate::nodes::COUNT_EVERY`] (for apps with `subscription_count`).
async fn tell_counts(ctx: Arc<State>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(crate::nodes::COUNT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => ctx.nodes.channels().tell_counts().resolve().await,
            () = stop.cancelled() => return,
        }
    }
}

/// Starts browser connections: greeted with their `client_id` (the gateway door's
/// pages), or bound by their first frame.
struct WsHandler {
    ctx: Arc<State>,
    admission: Admission,
    greeted: bool,
}

impl WsHandler {
    fn handle(
        &self,
        stream: TcpStream,
        peer: Peer,
    ) -> Either<impl Future<Output = ()> + use<>, impl Future<Output = ()> + use<>> {
        let ctx = &self.ctx;
        ctx.metrics.incr(Metric::WsAccepted);
        let ctx = ctx.clone();
        // A trusted proxy's address is counted for none of its clients: each
        // client's places are taken once its request head names it.
        let trusted = &ctx.settings().trusted_proxies;
        let proxied = Proxied::new(peer.ip(), trusted, &self.admission);
        let admitted = self
            .admission
            .admit(peer.ip().filter(|_| proxied.is_none()));
        // The future itself, not an `async move` block around it: such a block
        // would also keep its captures (~200 bytes) for the connection's life.
        match admitted {
            Ok(places) => Either::Left(ws::serve(stream, ctx, places, proxied, self.greeted)),
            Err(why) => Either::Right(async move { ws::refuse(stream, why, &ctx).await }),
        }
    }
}

/// One backend connection, of either socket kind.
fn push_handler<S>(ctx: Arc<State>) -> impl Fn(S, Peer) -> BoxedTask
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    move |stream, peer| {
        let ctx = ctx.clone();
        let open = push::Open::new(&ctx);
        Box::pin(async move {
            let _open = open;
            if let Err(err) = push::serve(stream, peer, ctx).await {
                debug!(%err, "push connection ended with an error");
            }
        })
    }
}

type BoxedTask = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a listener does when its limit is reached: count it, and log (rate-limited).
fn full_warning(
    ctx: &Arc<State>,
    counter: Metric,
    log: fn(&State),
) -> Box<dyn Fn(bool) + Send + Sync> {
    let ctx = ctx.clone();
    Box::new(move |warn| {
        ctx.metrics.incr(counter);
        if warn {
            log(&ctx);
        }
    })
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

struct Listener {
    kind: &'static str,
    limit: Arc<Semaphore>,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Called each time `limit` is found exhausted; `true` at most once per
    /// [`FULL_WARN_EVERY`], when it should also log.
    on_full: Box<dyn Fn(bool) + Send + Sync>,
}

/// How often a listener at its connection limit may say so: once per saturation would be
/// once per freed slot when the limit is hit over and over.
const FULL_WARN_EVERY: Duration = Duration::from_secs(10);

/// Accepts until `stop`, one task per connection, at most `limit` at once.
///
/// The permit is taken before `accept()`, so past the limit new peers wait in the kernel
/// backlog instead of being accepted and dropped. Accept errors (EMFILE above all) back
/// off and retry: the loop never ends on its own.
async fn accept_loop<L, F, Fut>(listener: L, l: Listener, handler: F)
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
                let warn = warned_full.is_none_or(|at| at.elapsed() >= FULL_WARN_EVERY);
                if warn {
                    warned_full = Some(Instant::now());
                }
                (l.on_full)(warn);
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
            r = listener.accept() => match r {
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
        // `client`: the address a trusted proxy forwarded for (`proxied.rs`).
        let span = debug_span!("conn", kind = l.kind, %peer, client = tracing::field::Empty);
        // The permit is released when the handler's future ends. Not written as
        // `async move { task.await; drop(permit) }`: such a block keeps the captured
        // future and the one it awaits side by side (rustc overlaps neither with the
        // other), which doubled every browser connection's task (`docs/benchmarks.md`,
        // 2026-12-01). `map` holds the future once.
        let task = handler(stream, peer).map(move |()| drop(permit));
        l.tasks.spawn(task.instrument(span));
    }
}
