//! One message to many uids: `/send`, `/group`, `/group-except`, `/broadcast`,
//! `/broadcast-except`. The reply counts what every node that answered did.

use std::borrow::Cow;

use super::{BroadcastReply, GroupReply, Json, Reply, Response, SendReply};
use crate::nodes::{How, To};
use crate::state::State;
use crate::wire::{Payload, Uid};

/// `/send TARGETS PAYLOAD`.
pub(super) fn send(state: &State, uids: &[Uid], msg: &Payload) -> Response {
    let n = uids.len();
    state
        .nodes
        .deliver(To::Uids(uids), msg, How::default())
        .map(move |r| {
            Reply::Json(Json::Send(SendReply {
                ok: r.reached > 0,
                uids: n,
                reached: r.reached,
                connections: r.delivery.queued,
                refused: r.delivery.refused,
            }))
        })
}

/// `/group GROUP PAYLOAD`, `/group-except GROUP TARGETS PAYLOAD`.
pub(super) fn group(state: &State, group: Cow<'_, str>, except: &[Uid], msg: &Payload) -> Response {
    let group = group.into_owned();
    let to = To::Group {
        name: &group,
        except,
    };
    let answer = state.nodes.deliver(to, msg, How::default());
    answer.map(move |r| {
        Reply::Json(Json::Group(GroupReply {
            ok: r.reached > 0,
            group,
            members: r.members,
            reached: r.reached,
            connections: r.delivery.queued,
            refused: r.delivery.refused,
        }))
    })
}

/// `/broadcast PAYLOAD`, `/broadcast-except TARGETS PAYLOAD`.
pub(super) fn broadcast(state: &State, except: &[Uid], msg: &Payload) -> Response {
    state
        .nodes
        .deliver(To::All { except }, msg, How::default())
        .map(|r| {
            Reply::Json(Json::Broadcast(BroadcastReply {
                ok: r.delivery.ok(),
                connections: r.delivery.queued,
                refused: r.delivery.refused,
            }))
        })
}
