//! One Pusher connection at `/app/{key}` (protocol 7; `--pusher-apps`), from the 101 to
//! its close, on the browser port's socket handling (`ws.rs`, whose writer it shares):
//! `pusher:connection_established`, then one loop that writes its outbox, reads its
//! frames (subscribe, unsubscribe, ping, signin, client events) and pings it after a
//! silence. Every refusal is the protocol's: `pusher:subscription_error` or
//! `pusher:error` that keep the connection, or a close code (docs/pusher.md).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::{Instant, sleep, timeout};
use tracing::debug;

use super::{CLOSE_GRACE, End, Ws};
use crate::access::Admitted;
use crate::channels::{App, Conn, SubscribeError};
use crate::frames::{FrameError, Incoming, PONG, Progress, control_frame, write_raw};
use crate::state::State;
use crate::wire::pusher::codes::{self, Code};
use crate::wire::pusher::inbound::{self, ClientEvent, Inbound, Signin, Subscribe};
use crate::wire::pusher::outbound::{self, SubscriptionErrorType, WebhookEvent};
use crate::wire::pusher::{Access, Channel, Refusal, sign};

/// A subscription as the connection keeps it: the channel, and on a presence channel the
/// user it is a member as (a client event there carries it).
struct Held {
    channel: Channel,
    user: Option<Arc<str>>,
}

/// The connection's state besides its socket.
struct Session<'a> {
    ctx: &'a State,
    conn: Arc<Conn>,
    held: HashMap<Arc<str>, Held>,
    /// Client events left in this second, and when it ends.
    tokens: u32,
    refill: Instant,
}

/// Serves a connection whose upgrade named `/app/...`.
pub(crate) async fn serve(
    mut ws: Ws,
    path: String,
    query: Option<String>,
    origin: Option<String>,
    ctx: Arc<State>,
    places: Admitted,
) {
    let app = match admit(&path, query.as_deref(), origin.as_deref(), &ctx) {
        Ok(app) => app,
        Err(refusal) => return refuse(&mut ws, &refusal).await,
    };
    let conn = match ctx.nodes.channels().index().open(&app) {
        Ok(conn) => conn,
        Err(refusal) => return refuse(&mut ws, &refusal).await,
    };
    let activity = ctx.config.pusher_activity_timeout.as_secs();
    conn.send(outbound::connection_established(
        conn.socket_id,
        u32::try_from(activity).unwrap_or(u32::MAX),
    ));
    if let Some(socket) = ws.tcp.through() {
        conn.outbox().attach(socket, false);
    }
    drop(places.pending);
    debug!(socket_id = %conn.socket_id, app = %app.id, "pusher connection");
    let mut session = Session {
        ctx: &ctx,
        conn: conn.clone(),
        held: HashMap::new(),
        tokens: app.client_event_rate,
        refill: Instant::now(),
    };
    let end = session.run(&mut ws).await;
    let half_written = conn.outbox().detach();
    session.leave_all().await;
    ctx.nodes.channels().index().closed(&conn);
    drop(session);
    debug!(socket_id = %conn.socket_id, ?end, "pusher connection closed");
    if let Some((msg, sent)) = half_written
        && matches!(end, End::Closed(_) | End::Shutdown)
    {
        let mut at = Progress {
            frame: 0,
            offset: sent,
        };
        let rest = super::write_all(&mut ws, std::slice::from_ref(&msg), &mut at);
        if !matches!(Box::pin(timeout(CLOSE_GRACE, rest)).await, Ok(Ok(()))) {
            return;
        }
    }
    match end {
        End::Closed(notice) => Box::pin(super::close(&mut ws, &notice)).await,
        End::Shutdown => {
            let notice = Refusal::with(Code::Reconnect, "server restarting").close_notice();
            Box::pin(super::close(&mut ws, &notice)).await;
        }
        End::PeerClosed(code) => {
            let payload = code.map(u16::to_be_bytes);
            let reply = control_frame(
                crate::frames::CLOSE,
                payload.as_ref().map_or(&[][..], |p| &p[..]),
            );
            let _ = Box::pin(write_raw(&mut ws.tcp, &reply, CLOSE_GRACE)).await;
        }
        End::PeerError(_) | End::PongTimeout | End::WriteStalled => {}
    }
}

/// The app the connection URL names, if the page's `Origin` may use it; or the
/// protocol's refusal (4009 for an origin outside the app's `allowed_origins`).
fn admit(
    path: &str,
    query: Option<&str>,
    origin: Option<&str>,
    ctx: &State,
) -> Result<Arc<App>, Refusal> {
    let key = codes::app_key(path).ok_or(Refusal::of(Code::PathNotFound))?;
    codes::check_protocol(query).map_err(Refusal::of)?;
    let apps = ctx.pusher_apps().ok_or(Refusal::of(Code::AppNotFound))?;
    let app = apps
        .by_key(key)
        .cloned()
        .ok_or(Refusal::of(Code::AppNotFound))?;
    if !app.origin_allowed(origin) {
        ctx.metrics.incr(crate::metrics::Metric::RefusedOrigin);
        return Err(Refusal::with(
            Code::Unauthorized,
            "origin not allowed for this app",
        ));
    }
    Ok(app)
}

/// `pusher:error` and the close frame with the same code, before any subscription.
async fn refuse(ws: &mut Ws, refusal: &Refusal) {
    debug!(code = refusal.code.number(), reason = %refusal.message, "pusher connection refused");
    let frame = outbound::error(refusal);
    let mut at = Progress::default();
    let payload = crate::wire::Payload::from(frame);
    let write = super::write_all(ws, std::slice::from_ref(&payload), &mut at);
    if matches!(Box::pin(timeout(CLOSE_GRACE, write)).await, Ok(Ok(()))) {
        Box::pin(super::close(ws, &refusal.close_notice())).await;
    }
}

impl Session<'_> {
    async fn run(&mut self, ws: &mut Ws) -> End {
        let ctx = self.ctx;
        let cfg = &ctx.config;
        let conn = self.conn.clone();
        let outbox = conn.outbox();
        let mut batch = Vec::new();
        let timer = sleep(cfg.pusher_activity_timeout);
        tokio::pin!(timer);
        let stop = ctx.ws_stop.cancelled();
        tokio::pin!(stop);
        let mut pinged = false;
        loop {
            tokio::select! {
                biased;
                () = &mut stop => {
                    let sent = match outbox.try_recv(&mut batch) {
                        Ok(sent) => sent.unwrap_or(0),
                        Err(notice) => return End::Closed(notice),
                    };
                    let mut at = Progress { frame: 0, offset: sent };
                    let write = super::write_all(ws, &batch, &mut at);
                    return match Box::pin(timeout(cfg.shutdown_timeout, write)).await {
                        Ok(Ok(())) => End::Shutdown,
                        Ok(Err(err)) => End::PeerError(FrameError::Io(err)),
                        Err(_) => End::WriteStalled,
                    };
                }
                r = outbox.recv(&mut batch) => {
                    let sent = match r {
                        Ok(sent) => sent,
                        Err(notice) => return End::Closed(notice),
                    };
                    if let Err(end) = super::deliver(ws, &batch, sent, outbox, ctx).await {
                        return end;
                    }
                    batch.clear();
                }
                frame = ws.reader.next(&mut ws.tcp, ws.max_in) => {
                    pinged = false;
                    timer.as_mut().reset(Instant::now() + cfg.pusher_activity_timeout);
                    match frame {
                        Ok(Incoming::Close(code)) => return End::PeerClosed(code),
                        Ok(Incoming::Text(text)) => {
                            if let Err(refusal) = Box::pin(self.frame(&text)).await {
                                // Its `pusher:error` (queued) goes out before the close.
                                if let Ok(sent) = outbox.claim(&mut batch)
                                    && let Err(end) = super::deliver(ws, &batch, sent, outbox, ctx).await
                                {
                                    return end;
                                }
                                return End::Closed(refusal.close_notice());
                            }
                        }
                        Ok(Incoming::Binary(_)) => self.conn.send(outbound::error(&Refusal::with(
                            Code::Reconnect,
                            "binary frames are not Pusher events",
                        ))),
                        Ok(Incoming::Pong) => {}
                        Ok(Incoming::Ping(payload)) => {
                            // Through the outbox's writer: claim it so no push frame is
                            // cut by the pong.
                            let sent = match outbox.claim(&mut batch) {
                                Ok(sent) => sent,
                                Err(notice) => return End::Closed(notice),
                            };
                            if !batch.is_empty() {
                                if let Err(end) = super::deliver(ws, &batch, sent, outbox, ctx).await {
                                    return end;
                                }
                                batch.clear();
                            }
                            let pong = control_frame(PONG, &payload);
                            if let Err(err) = write_raw(&mut ws.tcp, &pong, cfg.pusher_pong_timeout).await {
                                return End::PeerError(FrameError::Io(err));
                            }
                        }
                        Err(err) => match super::refusal(&err) {
                            Some(notice) => return End::Closed(notice),
                            None => return End::PeerError(err),
                        },
                    }
                }
                () = &mut timer => {
                    if pinged {
                        return End::Closed(Refusal::of(Code::PongTimeout).close_notice());
                    }
                    self.conn.send(outbound::ping());
                    pinged = true;
                    timer.as_mut().reset(Instant::now() + cfg.pusher_pong_timeout);
                }
            }
        }
    }

    /// Handles one client frame; `Err` closes the connection with that refusal.
    async fn frame(&mut self, text: &str) -> Result<(), Refusal> {
        let parsed = match inbound::parse(text) {
            Ok(parsed) => parsed,
            Err(bad) => {
                self.error(Refusal::with(Code::Reconnect, bad.to_string()));
                return Ok(());
            }
        };
        match parsed {
            Inbound::Ping => self.conn.send(outbound::pong()),
            Inbound::Pong => {}
            Inbound::Subscribe(s) => self.subscribe(s).await,
            Inbound::Unsubscribe(channel) => {
                if let Some(held) = self.held.remove(channel.name()) {
                    let channels = self.ctx.nodes.channels();
                    channels
                        .unsubscribe(&self.conn, &held.channel)
                        .resolve()
                        .await;
                }
            }
            Inbound::Signin(s) => self.signin(s)?,
            Inbound::Client(ev) => self.client_event(ev).await,
        }
        Ok(())
    }

    fn error(&self, refusal: Refusal) {
        self.conn.send(outbound::error(&refusal));
    }

    fn subscription_error(&self, channel: &str, kind: SubscriptionErrorType, why: &str) {
        self.conn
            .send(outbound::subscription_error(channel, kind, why));
    }

    async fn subscribe(&mut self, s: Subscribe) {
        let name = s.channel.name();
        let app = &self.conn.app;
        if self.held.get(name).is_some_and(|h| h.user.is_none()) {
            // Already held: answered again, with nothing changed.
            return self.conn.send(outbound::subscription_succeeded(name));
        }
        if self.held.len() >= app.max_channels_per_connection && !self.held.contains_key(name) {
            let why = format!(
                "at most {} channels per connection",
                app.max_channels_per_connection
            );
            return self.subscription_error(name, SubscriptionErrorType::LimitReached, &why);
        }
        let socket_id = self.conn.socket_id.to_string();
        let keys = &app.keys;
        let mut member = None;
        let checked = match s.channel.kind().access {
            Access::Public => Ok(()),
            Access::Private | Access::Encrypted => {
                keys.check_channel_auth(&socket_id, name, None, s.auth.as_deref())
            }
            Access::Presence => {
                let data = s.channel_data.as_deref().unwrap_or("");
                keys.check_channel_auth(&socket_id, name, Some(data), s.auth.as_deref())
                    .and_then(|()| sign::presence_member(data))
                    .map(|m| member = Some(m))
            }
            Access::User => {
                let mine = self.conn.user();
                if mine.is_some() && mine.as_deref() == s.channel.user() {
                    Ok(())
                } else {
                    let why = "#server-to-user- channels are the signed-in user's only";
                    return self.subscription_error(name, SubscriptionErrorType::AuthError, why);
                }
            }
        };
        if let Err(e) = checked {
            return self.subscription_error(name, SubscriptionErrorType::AuthError, &e.to_string());
        }
        if let Some(held) = self.held.get(name)
            && held.user.as_deref() != member.as_ref().map(|m| m.user_id.as_str())
        {
            // A presence subscription again, as another user: leave as the first.
            let channels = self.ctx.nodes.channels();
            channels
                .unsubscribe(&self.conn, &held.channel)
                .resolve()
                .await;
            self.held.remove(name);
        }
        let channels = self.ctx.nodes.channels();
        let answer = channels.subscribe(&self.conn, &s.channel, member.as_ref());
        match answer.resolve().await {
            Ok(_) => {
                let user = member.map(|m| Arc::from(m.user_id.as_str()));
                self.held.insert(
                    s.channel.shared_name().clone(),
                    Held {
                        channel: s.channel,
                        user,
                    },
                );
            }
            Err(
                e @ (SubscribeError::MembersFull(_)
                | SubscribeError::UserInfoTooLarge(_)
                | SubscribeError::Unavailable),
            ) => {
                self.subscription_error(name, SubscriptionErrorType::LimitReached, &e.to_string());
            }
        }
    }

    /// `pusher:signin`: a bad one closes the connection with 4009 (the protocol's rule).
    fn signin(&mut self, s: Signin) -> Result<(), Refusal> {
        if self.conn.user().is_some() {
            self.error(Refusal::with(Code::Unauthorized, "already signed in"));
            return Ok(());
        }
        let socket_id = self.conn.socket_id.to_string();
        let user = self
            .conn
            .app
            .keys
            .check_signin(&socket_id, &s.user_data, &s.auth)
            .map_err(|e| {
                let refusal = Refusal::with(Code::Unauthorized, format!("signin refused: {e}"));
                self.error(refusal.clone());
                refusal
            })?;
        self.ctx.nodes.channels().index().signin(&self.conn, &user);
        self.conn.send(outbound::signin_success(&s.user_data));
        Ok(())
    }

    /// A `client-*` event, relayed to the channel's other subscribers if the app allows
    /// them, the sender holds the (private or presence) channel, the data fits and the
    /// rate allows; otherwise `pusher:error` 4301 and nothing is sent.
    async fn client_event(&mut self, ev: ClientEvent<'_>) {
        let app = self.conn.app.clone();
        let refuse = |why: String| Refusal::with(Code::ClientEventRejected, why);
        let held = self.held.get(&*ev.channel);
        let size = ev.data.map_or(0, |d| d.get().len());
        let refusal = if !app.client_events {
            Some(refuse("client events are not enabled for this app".into()))
        } else if !ev.kind.allows_client_events() {
            Some(refuse(
                "client events only on private and presence channels".into(),
            ))
        } else if held.is_none() {
            Some(refuse(format!("not subscribed to {}", ev.channel)))
        } else if size > app.max_event_bytes {
            Some(refuse(format!(
                "event data larger than {} bytes",
                app.max_event_bytes
            )))
        } else if !self.take_token() {
            Some(refuse(format!(
                "more than {} client events per second",
                app.client_event_rate
            )))
        } else {
            None
        };
        if let Some(r) = refusal {
            return self.error(r);
        }
        let Some(held) = self.held.get(&*ev.channel) else {
            return;
        };
        let frame = outbound::client_event(&ev.event, &ev.channel, ev.data, held.user.as_deref());
        let channels = self.ctx.nodes.channels();
        if let Some(hooks) = channels.index().hooks()
            && hooks.wants(&app.id, "client_event")
        {
            // Pusher's `data` is a string: the client's string as it is, other JSON as
            // its text.
            let raw = ev.data.map_or("null", |d| d.get());
            let text = serde_json::from_str::<String>(raw).ok();
            hooks.emit(
                &app.id,
                &WebhookEvent::ClientEvent {
                    channel: &ev.channel,
                    event: &ev.event,
                    data: text.as_deref().unwrap_or(raw),
                    socket_id: self.conn.socket_id,
                    user_id: held.user.as_deref(),
                },
            );
        }
        let frame = crate::wire::Payload::from(frame);
        let published = channels.publish(&app.id, &held.channel, &frame, Some(self.conn.socket_id));
        if let Err(e) = published.resolve().await {
            let why = format!("{e}: the event reached this node's subscribers only");
            self.error(Refusal::with(Code::ClientEventRejected, why));
        }
    }

    fn take_token(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.refill {
            self.tokens = self.conn.app.client_event_rate;
            self.refill = now + std::time::Duration::from_secs(1);
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// Leaves every channel (member_removed where it was the user's last connection).
    async fn leave_all(&mut self) {
        let channels = self.ctx.nodes.channels();
        for (_, held) in self.held.drain() {
            channels
                .unsubscribe(&self.conn, &held.channel)
                .resolve()
                .await;
        }
    }
}
