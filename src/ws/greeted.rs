//! The greeted browser mode (`--gateway-ws-listen`, GatewayWorker's "ajax bind" pages): a
//! connection that sends nothing is greeted with its `client_id` (`--gateway-greeting`),
//! waits unbound until a backend claims it through the gateway door (`bindUid`,
//! `joinGroup`, a session), within `--gateway-claim-timeout-ms`, and from then on gets
//! what is sent to its uid, its groups, or itself. What it sends is ignored (there is no
//! BusinessWorker to hand it to), but for pings, its close, and a v1 page's acks.
//!
//! A page whose URL opts into protocol v1 (`?pushwire=1[&since=EPOCH:SEQ]`) gets every
//! frame tagged: the greeting and whatever is sent to the connection itself, its groups or
//! everyone as `b …` (live only), and from each bind on the uid's status frame, replay and
//! numbered `m SEQ …` messages, which it may acknowledge (`docs/gateway.md`).

use std::sync::Arc;

use tokio::time::{Instant, sleep, sleep_until};
use tracing::{debug, trace};

use super::{
    Drained, End, Ws, closed, closed_as, deliver, drain_for_shutdown, finish, refusal,
    write_control,
};
use crate::access::Admitted;
use crate::addressed::{Held, SignalState};
use crate::events::ConnEvents;
use crate::frames::{Incoming, PING, PONG, control_frame};
use crate::outbox::Outbox;
use crate::state::State;
use crate::wire::envelope::Mode;
use crate::wire::gateway::ClientId;
use crate::wire::{CloseNotice, Payload};

/// 1008: nobody claimed the connection in time.
const NOT_CLAIMED: CloseNotice =
    CloseNotice::fixed(1008, "not bound by a backend within the claim timeout");
/// 1013: every connection number of this node is taken.
const NO_NUMBER: CloseNotice = CloseNotice::fixed(1013, "no connection number free");

impl Drained for Held {
    fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    fn written(&self, batch: &mut Vec<Payload>) {
        batch.clear();
    }
}

/// Serves a greeted connection after its upgrade.
pub(super) async fn serve(mut ws: Ws, mode: Mode, ctx: Arc<State>, places: Admitted) {
    let (Some(table), Some(gw)) = (ctx.addressed.as_ref(), ctx.config.gateway.as_ref()) else {
        return finish(&mut ws, End::Shutdown).await;
    };
    let Admitted {
        connection: _slot,
        pending,
    } = places;
    ws.enveloped = matches!(mode, Mode::V1 { .. });
    let opened = table.open(mode, |n| {
        let id = ClientId {
            gateway: gw.advertise,
            connection: n,
        };
        Payload::from(gw.greeting.replace("{client_id}", &id.to_string()))
    });
    let Some(held) = opened else {
        let end = End::Closed(NO_NUMBER);
        closed(ConnEvents::open(&ctx.events), None, &end, &ctx);
        return finish(&mut ws, end).await;
    };
    // Its events carry its `client_id`, as the greeting gave it.
    let client_id: Arc<str> = ClientId {
        gateway: gw.advertise,
        connection: held.number,
    }
    .to_string()
    .into();
    let mut events = ConnEvents::open_as(&ctx.events, Some(&client_id));
    debug!(conn = held.number, "greeted");
    let mut bound = None;
    // A backend bound it (or bound it to another uid): `bind`.
    let mut told = |now: &SignalState| {
        if let Some(uid) = &now.uid
            && bound.as_ref() != Some(uid)
        {
            events.bound_as(&ctx.events, uid, Some(&client_id));
        }
        bound.clone_from(&now.uid);
    };
    let end = session(&mut ws, &held, Some(pending), &ctx, &mut told).await;
    // A bind the loop had no turn to see before it ended is told before the close.
    told(&held.signal.now());
    let number = held.number;
    let uid = bound;
    // Out of the table before the (possibly slow) closing handshake.
    drop(held);
    closed_as(events, uid, &end, &ctx, Some(&client_id));
    debug!(conn = number, ?end, "closed");
    finish(&mut ws, end).await;
}

/// The greeted connection's loop: `ws::session`'s, plus the claim deadline and the
/// backend's close (`closeClient`, which writes its last message first).
async fn session(
    ws: &mut Ws,
    held: &Held,
    mut pending: Option<crate::access::Pending>,
    ctx: &State,
    told: &mut (dyn FnMut(&SignalState) + Send),
) -> End {
    let outbox = &*held.outbox;
    let cfg = &ctx.config;
    let claim_timeout = cfg
        .gateway
        .as_ref()
        .map_or(cfg.bind_timeout, |g| g.claim_timeout);
    let claim_by = sleep_until(Instant::now() + claim_timeout);
    tokio::pin!(claim_by);
    let mut batch = Vec::new();
    let timer = sleep(cfg.ping_interval);
    tokio::pin!(timer);
    let stop = ctx.ws_stop.cancelled();
    tokio::pin!(stop);
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            biased;
            () = &mut stop => return Box::pin(drain_for_shutdown(ws, outbox, &mut batch, ctx)).await,
            r = outbox.recv(&mut batch) => {
                let sent = match r {
                    Ok(sent) => sent,
                    Err(notice) => return End::Closed(notice),
                };
                if let Err(end) = deliver(ws, &batch, sent, outbox, ctx).await {
                    return end;
                }
                book(&mut batch, ws.enveloped, outbox, ctx);
            }
            () = held.signal.changed() => {
                let now = held.signal.now();
                told(&now);
                if now.claimed {
                    // No stranger now: its place in the unbound budget goes back.
                    pending = None;
                }
                if let Some((last, notice)) = now.closing {
                    return Box::pin(close_after(ws, outbox, last, notice, &mut batch, ctx)).await;
                }
            }
            () = &mut claim_by, if pending.is_some() => {
                if !held.signal.now().claimed {
                    return End::Closed(NOT_CLAIMED);
                }
                pending = None;
            }
            frame = ws.reader.next(&mut ws.tcp, ws.max_in) => {
                if awaiting_pong {
                    awaiting_pong = false;
                    timer.as_mut().reset(Instant::now() + cfg.ping_interval);
                }
                match frame {
                    Ok(Incoming::Close(code)) => return End::PeerClosed(code),
                    Ok(Incoming::Text(t)) => {
                        if !(ws.enveloped && held.text(&t)) {
                            trace!(len = t.len(), "ignoring text message");
                        }
                    }
                    Ok(Incoming::Binary(len)) => trace!(len, "ignoring binary message"),
                    Ok(Incoming::Pong) => {}
                    Ok(Incoming::Ping(payload)) => {
                        let pong = control_frame(PONG, &payload);
                        if let Err(end) = Box::pin(write_control(ws, &pong, &mut batch, held, ctx)).await {
                            return end;
                        }
                    }
                    Err(err) => match refusal(&err) {
                        Some(notice) => return End::Closed(notice),
                        None => return End::PeerError(err),
                    },
                }
            }
            () = &mut timer => {
                if awaiting_pong {
                    return End::PongTimeout;
                }
                let ping = control_frame(PING, &[]);
                if let Err(end) = Box::pin(write_control(ws, &ping, &mut batch, held, ctx)).await {
                    return end;
                }
                awaiting_pong = true;
                timer.as_mut().reset(Instant::now() + cfg.pong_timeout);
            }
        }
    }
}

/// Counts a written batch in the frame metrics and (protocol v1) how far acks are
/// believed, and empties it.
fn book(batch: &mut Vec<Payload>, enveloped: bool, outbox: &Outbox, ctx: &State) {
    ctx.metrics
        .frames_written(batch.iter().map(|m| (m.len(), m.received())));
    if enveloped {
        outbox.note_written(batch);
    }
    batch.clear();
}

/// `closeClient`: what is queued, then its last message, then the close frame.
async fn close_after(
    ws: &mut Ws,
    outbox: &Outbox,
    last: Option<Payload>,
    notice: CloseNotice,
    batch: &mut Vec<Payload>,
    ctx: &State,
) -> End {
    let sent = match outbox.claim(batch) {
        Ok(sent) => sent,
        Err(notice) => return End::Closed(notice),
    };
    batch.extend(last);
    if !batch.is_empty() {
        if let Err(end) = deliver(ws, batch, sent, outbox, ctx).await {
            return end;
        }
        book(batch, ws.enveloped, outbox, ctx);
    }
    End::Closed(notice)
}
