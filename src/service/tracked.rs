//! `/push ID [ttl=MS] [ack=MS] LINE` on a single node (`docs/protocol.md`): the idempotent
//! retry check, the offline queue and the end-to-end ack. Without options, and when not
//! a duplicate, the reply is byte for byte the seed-era `/push` reply.
//!
//! An ack wait is a [`Response::Later`]: the backend door goes on reading and running the
//! lines behind it, and only their replies queue behind this one (replies stay in
//! request order; the door bounds how many may queue).

use std::borrow::Cow;
use std::time::{Duration, Instant};

use super::{PushReply, PushResult, Reply, Response, Tracking, count_into};
use crate::dedupe::{Claim, First};
use crate::metrics::Metric;
use crate::registry::Pushed;
use crate::state::State;
use crate::wire::command::PushOptions;
use crate::wire::envelope::Position;
use crate::wire::{BadLine, Payload};

/// Runs one `/push` whose LINE is `msg` and whose target parsed as `target`.
pub(super) fn push(
    state: &State,
    id: Cow<'_, str>,
    options: PushOptions,
    msg: &Payload,
    target: Result<Cow<'_, str>, BadLine>,
) -> Response {
    let id = id.into_owned();
    let uid = match target {
        Ok(uid) => uid,
        Err(bad) => {
            count_into(&state.metrics, &Err(bad.clone()));
            return ready(
                reply(PushResult::Malformed, Pushed::default(), &options, id).with_error(bad),
            );
        }
    };
    let ticket = match state.dedupe.claim(&id, msg.as_bytes(), Instant::now()) {
        Claim::Duplicate(first) => {
            state.metrics.incr(Metric::Duplicates);
            return ready(duplicate(first, id));
        }
        Claim::Fresh(ticket) => Some(ticket),
        Claim::Off => None,
    };
    let cfg = &state.config;
    let ttl = options
        .ttl
        .filter(|&ms| ms > 0)
        .map(|ms| Duration::from_millis(ms).min(cfg.max_queue_ttl));
    let pushed = if uid.len() > cfg.max_uid_bytes {
        Pushed::default()
    } else {
        state.registry.push_kept(&uid, msg, ttl)
    };
    let accepted = pushed.delivery.ok() || pushed.queued;
    if pushed.queued {
        state.metrics.incr(Metric::Queued);
    }
    count_into(&state.metrics, &Ok(pushed.delivery));
    if let Some(ticket) = ticket {
        let first = accepted.then_some(First {
            queued: pushed.queued,
            at: pushed.at,
        });
        state.dedupe.settle(ticket, first);
    }
    let result = if pushed.delivery.ok() {
        PushResult::Delivered
    } else if pushed.queued {
        PushResult::Queued
    } else if pushed.delivery.refused > 0 {
        PushResult::Refused
    } else {
        PushResult::Offline
    };
    let Some(wait) = options
        .ack
        .map(|ms| Duration::from_millis(ms).min(cfg.max_ack_wait))
    else {
        return ready(reply(result, pushed, &options, id));
    };
    // Only a message with a place in a history can be acknowledged (a v1 tab, or one
    // resuming, acks by sequence); one that reached nobody has nothing to wait for.
    let acked = pushed
        .at
        .filter(|_| accepted || result == PushResult::Offline)
        .and_then(|at| state.registry.wait_ack(&uid, at));
    let Some(acked) = acked else {
        let result = if accepted {
            PushResult::NotAcked
        } else {
            result
        };
        return ready(reply(result, pushed, &options, id).with_acks(0));
    };
    // The wait runs from now, when the line runs, not from when the door first polls
    // the reply: it polls only the reply at the head of the connection's queue, so
    // pipelined waits would otherwise run one after another.
    let deadline = tokio::time::Instant::now() + wait;
    Response::Later(Box::pin(async move {
        let (result, acks) = match tokio::time::timeout_at(deadline, acked).await {
            Ok(Ok(tabs)) => (PushResult::Acked, tabs),
            _ => (PushResult::NotAcked, 0),
        };
        Reply::Json(super::Json::Push(
            reply(result, pushed, &options, id).with_acks(acks),
        ))
    }))
}

fn ready(reply: PushReply) -> Response {
    Response::Ready(Reply::Json(super::Json::Push(reply)))
}

/// The reply for `result`; with options, the message's place in history too.
pub(super) fn reply(
    result: PushResult,
    pushed: Pushed,
    options: &PushOptions,
    id: String,
) -> PushReply {
    let ok = matches!(
        result,
        PushResult::Delivered | PushResult::Queued | PushResult::Acked
    );
    let malformed = result == PushResult::Malformed;
    PushReply {
        ok,
        result,
        error: None,
        connections: (!malformed).then_some(pushed.delivery.queued),
        refused: (!malformed).then_some(pushed.delivery.refused),
        tracking: (!options.is_empty()).then(|| place(pushed.at)),
        id,
    }
}

/// `duplicate`, with what the first did (`pending` while it still runs).
pub(super) fn duplicate(first: Option<First>, id: String) -> PushReply {
    let (result, at) = match first {
        Some(f) if f.queued => (PushResult::Queued, f.at),
        Some(f) => (PushResult::Delivered, f.at),
        None => (PushResult::Pending, None),
    };
    PushReply {
        ok: first.is_some(),
        result: PushResult::Duplicate,
        error: None,
        connections: None,
        refused: None,
        tracking: Some(Tracking {
            first: Some(result),
            ..place(at)
        }),
        id,
    }
}

fn place(at: Option<Position>) -> Tracking {
    Tracking {
        seq: at.map(|p| p.seq),
        epoch: at.map(|p| format!("{:016x}", p.epoch)),
        ..Tracking::default()
    }
}

impl PushReply {
    fn with_error(mut self, why: impl std::fmt::Display) -> PushReply {
        self.error = Some(why.to_string());
        self
    }

    pub(super) fn with_acks(mut self, acks: usize) -> PushReply {
        if let Some(t) = &mut self.tracking {
            t.acks = Some(acks);
        }
        self
    }
}
