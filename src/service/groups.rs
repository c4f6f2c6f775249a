//! Group membership: `/join`, `/leave`, `/members`, wherever membership is kept (this
//! node's memory, or Redis for the whole cluster).

use std::borrow::Cow;

use tracing::debug;

use super::{JoinReply, Json, LeaveReply, MembersReply, Reply, Response};
use crate::logsafe::escaped;
use crate::nodes::NodesError;
use crate::state::State;
use crate::wire::Uid;

/// `/join GROUP TARGETS`.
pub(super) fn join(state: &State, group: Cow<'_, str>, uids: &[Uid]) -> Response {
    let group = group.into_owned();
    state
        .nodes
        .join(&group, uids)
        .map(move |joined| match joined {
            Ok(c) => Reply::Json(Json::Join(JoinReply {
                ok: true,
                group,
                added: c.changed,
                members: c.members,
            })),
            Err(e) => {
                if let NodesError::Limit(e) = &e {
                    debug!(%e, group = %escaped(&group), "join refused");
                }
                Reply::error(e)
            }
        })
}

/// `/leave GROUP TARGETS`.
pub(super) fn leave(state: &State, group: Cow<'_, str>, uids: &[Uid]) -> Response {
    let group = group.into_owned();
    state.nodes.leave(&group, uids).map(move |left| match left {
        Ok(c) => Reply::Json(Json::Leave(LeaveReply {
            ok: true,
            group,
            removed: c.changed,
            members: c.members,
        })),
        Err(e) => Reply::error(e),
    })
}

/// `/members GROUP`.
pub(super) fn members(state: &State, group: Cow<'_, str>) -> Response {
    let group = group.into_owned();
    state
        .nodes
        .members(&group)
        .map(move |members| match members {
            Ok(uids) => Reply::Json(Json::Members(MembersReply {
                ok: true,
                group,
                count: uids.len(),
                uids,
            })),
            Err(e) => Reply::error(e),
        })
}
