//! Pushes to one uid: a plain line (the seed's protocol), one code path for both modes.

use tracing::debug;

use super::{Reply, Response};
use crate::logsafe::escaped;
use crate::metrics::{Metric, Metrics};
use crate::nodes::{Answer, Delivery, How, To};
use crate::state::State;
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
pub(super) fn count_into(m: &Metrics, outcome: &Result<Delivery, BadLine>) {
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
