//! Who is online, and closing them: `/online`, `/count`, `/uids`, `/kick`, `/stats`. One
//! meaning in both modes: the figures are those of every node that answered.

use std::sync::Arc;

use super::{CountReply, Json, KickReply, OnlineReply, Reply, Response, StatsReply, UidsReply};
use crate::state::State;
use crate::wire::{CloseNotice, Uid};

/// `/online UID`.
pub(super) fn online(state: &State, uid: String) -> Response {
    state.nodes.online(&uid).map(move |n| {
        Reply::Json(Json::Online(OnlineReply {
            ok: true,
            uid,
            online: n > 0,
            connections: n,
        }))
    })
}

/// `/count`.
pub(super) fn count(state: &State) -> Response {
    state.nodes.census().map(|c| {
        Reply::Json(Json::Count(CountReply {
            ok: true,
            uids: c.uids,
            connections: c.connections,
            groups: c.groups,
        }))
    })
}

/// `/uids [CURSOR [LIMIT]]`.
pub(super) fn uids(state: &State, cursor: usize, limit: usize) -> Response {
    state.nodes.uids(cursor, limit).map(|page| match page {
        Ok(page) => Reply::Json(Json::Uids(UidsReply {
            ok: true,
            count: page.uids.len(),
            uids: page.uids,
            next: page.next,
        })),
        Err(e) => Reply::error(e),
    })
}

/// `/kick TARGETS [REASON]`: every connection of the uids closes with 4001 and their
/// groups go at once (a kick is deliberate: no grace period).
pub(super) fn kick(state: &State, uids: &[Uid], reason: Option<&str>) -> Response {
    let n = uids.len();
    state
        .nodes
        .kick(uids, &CloseNotice::kicked(reason))
        .map(move |closed| {
            Reply::Json(Json::Kick(KickReply {
                ok: true,
                uids: n,
                connections: closed,
            }))
        })
}

/// `/stats`: this node's counters; in cluster mode the cluster's figures after them
/// (every node that answered in time, this one included).
pub(super) fn stats(state: &Arc<State>) -> Response {
    let stats = state.stats();
    state.nodes.census().map(move |c| {
        let mut stats = stats;
        if let Some(nodes) = c.nodes {
            stats.push(("cluster_nodes", nodes as u64));
            stats.push(("cluster_uids", c.uids as u64));
            stats.push(("cluster_connections", c.connections as u64));
        }
        Reply::Json(Json::Stats(StatsReply(stats)))
    })
}
