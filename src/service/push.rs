//! Pushes to one uid: a plain line (the seed's protocol), and `/push ID [ttl=MS] [ack=MS]
//! LINE` (`docs/protocol.md`): the idempotent retry check, the offline queue and the
//! end-to-end ack. One code path for both modes: on a single node every step answers at
//! once (but an ack wait), in cluster mode the retry claim is a barrier and the delivery
//! waits for the other holders. Without options, and when not a duplicate, a `/push`
//! reply is byte for byte the seed-era one.
//!
//! An ack wait is an [`Answer::Later`]: the backend door goes on reading and running the
//! lines behind it, and only their replies queue behind this one (replies stay in
//! request order; the door bounds how many may queue).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::{Json, PushReply, PushResult, Reply, Response, Tracking};
use crate::logsafe::escaped;
use crate::metrics::{Metric, Metrics};
use crate::nodes::{Answer, Claim, Delivery, First, How, Reached, Ticket, To};
use crate::state::State;
use crate::wire::command::PushOptions;
use crate::wire::envelope::Position;
use crate::wire::{BadLine, Payload};

/// A plain push line: `ok` when a live connection (on any node) took it.
pub(super) fn line(state: &State, uid: &str, line: &Payload) -> Response {
    if uid.len() > state.config.max_uid_bytes {
        // No browser can bind it: offline by definition, not looked up.
        count_into(&state.metrics, &Ok(Delivery::default()));
        return Answer::Now(Reply::Fail);
    }
    state
        .nodes
        .deliver(To::Uid(uid), line, How::default())
        .then(&state.metrics, |m, r| {
            count_into(m, &Ok(r.delivery));
            if r.delivery.ok() {
                Reply::Ok
            } else {
                Reply::Fail
            }
        })
}

/// A plain push line that is not valid: `fail`.
pub(super) fn bad_line(state: &State, bad: BadLine) -> Response {
    count_into(&state.metrics, &Err(bad));
    Answer::Now(Reply::Fail)
}

/// Counts one push line's outcome (plain or `/push`) and logs a malformed one.
fn count_into(m: &Metrics, outcome: &Result<Delivery, BadLine>) {
    match outcome {
        Ok(d) if d.ok() => m.incr(Metric::PushesOk),
        Ok(_) => m.incr(Metric::PushesFail),
        Err(bad) => {
            debug!(bad = %escaped(&bad.to_string()), "bad push line");
            m.incr(Metric::BadLines);
            m.incr(Metric::PushesFail);
        }
    }
}

/// `/push ID [ttl=MS] [ack=MS] LINE`, whose LINE is `msg` and parsed as `target`.
pub(super) fn tracked(
    state: &Arc<State>,
    id: Cow<'_, str>,
    options: PushOptions,
    msg: Payload,
    target: Result<Cow<'_, str>, BadLine>,
) -> Response {
    let id = id.into_owned();
    let uid = match target {
        Ok(uid) => uid.into_owned(),
        Err(bad) => {
            count_into(&state.metrics, &Err(bad.clone()));
            let reached = Reached::default();
            return now(reply(PushResult::Malformed, &reached, &options, id).with_error(bad));
        }
    };
    let cfg = &state.config;
    if uid.len() > cfg.max_uid_bytes {
        // No browser can bind it: offline by definition, not looked up (nor remembered).
        count_into(&state.metrics, &Ok(Delivery::default()));
        return now(reply(
            PushResult::Offline,
            &Reached::default(),
            &options,
            id,
        ));
    }
    let job = Job {
        how: How {
            queue_for: options
                .ttl
                .filter(|&ms| ms > 0)
                .map(|ms| Duration::from_millis(ms).min(cfg.max_queue_ttl)),
        },
        // Bounded from when the line runs, not from when the door polls its reply: the
        // replies of a connection are polled in order, head first.
        ack_until: options.ack.map(|ms| {
            tokio::time::Instant::now() + Duration::from_millis(ms).min(cfg.max_ack_wait)
        }),
        uid,
        msg,
        options,
        id,
    };
    state
        .nodes
        .claim(&job.id, &job.msg)
        .and_then(state, move |state, claim| match claim {
            Claim::Duplicate(first) => {
                state.metrics.incr(Metric::Duplicates);
                now(duplicate(first, &job.options, job.id))
            }
            Claim::Fresh(ticket) => job.run(state, Some(ticket)),
            Claim::Off => job.run(state, None),
        })
}

/// One `/push`, owned, to run now or once its retry key is claimed.
struct Job {
    uid: String,
    msg: Payload,
    /// `ttl=`, bounded by `--max-queue-ttl-ms`.
    how: How,
    /// `ack=`: the end of the wait, bounded by `--max-ack-wait-ms`.
    ack_until: Option<tokio::time::Instant>,
    options: PushOptions,
    id: String,
}

impl Job {
    /// Delivers (here at once, its publish queued in order), then settles the retry key
    /// with what it did and answers, after the ack wait with `ack=`.
    fn run(self, state: &Arc<State>, ticket: Option<Ticket>) -> Response {
        let delivered = state.nodes.deliver(To::Uid(&self.uid), &self.msg, self.how);
        delivered.and_then(state, move |state, reached| {
            if reached.queued {
                state.metrics.incr(Metric::Queued);
            }
            count_into(&state.metrics, &Ok(reached.delivery));
            let result = result_of(&reached);
            let accepted = matches!(result, PushResult::Delivered | PushResult::Queued);
            let settled = match ticket {
                Some(ticket) => {
                    let first = accepted.then_some(First {
                        queued: reached.queued,
                        at: reached.at,
                    });
                    state.nodes.settle(ticket, first)
                }
                None => Answer::Now(()),
            };
            settled.and_then(state, move |state, ()| self.answer(state, result, reached))
        })
    }

    /// The reply; with `ack=`, once a tab acknowledged (`acked`, how many) or the wait
    /// ended (`not_acked`). Only a message with a place in the uid's history can be
    /// acknowledged (a v1 tab acks by sequence): one that reached a tab or was queued, or
    /// one kept for an offline uid, which a tab that binds or resumes within the wait
    /// may still acknowledge; one that reached nobody and has no place has nothing to
    /// wait for.
    fn answer(self, state: &Arc<State>, result: PushResult, reached: Reached) -> Response {
        let Job {
            uid,
            options,
            id,
            ack_until,
            ..
        } = self;
        let Some(until) = ack_until else {
            return now(reply(result, &reached, &options, id));
        };
        let accepted = matches!(result, PushResult::Delivered | PushResult::Queued);
        let Some(at) = reached
            .at
            .filter(|_| accepted || result == PushResult::Offline)
        else {
            let result = if accepted {
                PushResult::NotAcked
            } else {
                result
            };
            return now(reply(result, &reached, &options, id).with_acks(0));
        };
        state.nodes.acked(&uid, at, until).map(move |tabs| {
            let result = if tabs > 0 {
                PushResult::Acked
            } else {
                PushResult::NotAcked
            };
            Reply::Json(Json::Push(
                reply(result, &reached, &options, id).with_acks(tabs),
            ))
        })
    }
}

/// What a delivery came to, as a `/push` result: on a single node `delivered`, `queued`,
/// `refused` or `offline`; a cluster adds `unavailable` and `partial`.
fn result_of(r: &Reached) -> PushResult {
    if r.delivery.ok() {
        PushResult::Delivered
    } else if r.queued {
        PushResult::Queued
    } else if r.unavailable {
        PushResult::Unavailable
    } else if r.in_doubt || r.missing > 0 {
        // In doubt: the publish left this node unanswered, so a holder may have it; the
        // counts are what did answer (here, at least).
        PushResult::Partial
    } else if r.delivery.refused > 0 {
        PushResult::Refused
    } else {
        PushResult::Offline
    }
}

fn now(reply: PushReply) -> Response {
    Answer::Now(Reply::Json(Json::Push(reply)))
}

/// The reply for `result`; with options, the message's place in history too.
fn reply(result: PushResult, reached: &Reached, options: &PushOptions, id: String) -> PushReply {
    let ok = matches!(
        result,
        PushResult::Delivered | PushResult::Queued | PushResult::Acked
    );
    let malformed = result == PushResult::Malformed;
    PushReply {
        ok,
        result,
        error: None,
        connections: (!malformed).then_some(reached.delivery.queued),
        refused: (!malformed).then_some(reached.delivery.refused),
        tracking: (!options.is_empty()).then(|| place(reached.at)),
        id,
    }
}

/// `duplicate`, with what the first did (`pending` while it still runs); with options,
/// the first's place in history too, as any `/push` reply has (and only then).
fn duplicate(first: Option<First>, options: &PushOptions, id: String) -> PushReply {
    let (result, at) = match first {
        Some(f) if f.queued => (PushResult::Queued, f.at),
        Some(f) => (PushResult::Delivered, f.at),
        None => (PushResult::Pending, None),
    };
    let at = at.filter(|_| !options.is_empty());
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

    fn with_acks(mut self, acks: usize) -> PushReply {
        if let Some(t) = &mut self.tracking {
            t.acks = Some(acks);
        }
        self
    }
}
