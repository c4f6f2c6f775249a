//! web-msg-sender's publish (`/?type=publish`, the HTTP door's seed API): the same meaning
//! on every node, since it goes through [`Nodes`](crate::nodes::Nodes) like any push.

use crate::nodes::{Answer, How, To};
use crate::state::State;
use crate::wire::Payload;

/// `type=publish&to=UID&content=TEXT`: `msg` to every connection of `to`, on any node
/// (true when one took it, for `ok`; false for `offline`), or to every connection of
/// every node without `to` (always true: web-msg-sender answers `ok` to that). Not a push
/// line, so not counted in `pushes_ok`/`pushes_fail` (`docs/http.md`).
pub fn publish(state: &State, to: Option<&str>, msg: &Payload) -> Answer<bool> {
    match to {
        // No browser can bind it: offline by definition, not looked up.
        Some(uid) if uid.len() > state.config.max_uid_bytes => Answer::Now(false),
        Some(uid) => state
            .nodes
            .deliver(To::Uid(uid), msg, How::default())
            .map(|r| r.delivery.ok()),
        None => state
            .nodes
            .deliver(To::All { except: &[] }, msg, How::default())
            .map(|_| true),
    }
}
