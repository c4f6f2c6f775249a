//! The seams the registry calls out through (cluster mode fills them): presence changes
//! and a uid's history kept elsewhere.

use super::ConnId;
use crate::wire::Uid;
use crate::wire::envelope::Position;

/// Told when a uid gets its first connection here or loses its last (cluster mode
/// subscribes to a uid's channel exactly while this node holds it). Called under the
/// uid's shard lock, so it must only take locks of its own and never wait.
pub trait Presence: Send + Sync + std::fmt::Debug {
    /// `uid` came online here or went offline here.
    fn changed(&self, uid: &Uid);
}

/// Cluster mode with history on: a uid's history lives in Redis, so a v1 connection's
/// status frame and replay come from there (`cluster.rs`), read after the connection is
/// registered; until then its live messages wait in the registry (see `Feed`).
pub trait RemoteHistory: Send + Sync + std::fmt::Debug {
    /// A v1 connection `conn` of `uid` bound here, resuming from `since`: read its
    /// history, then call [`Registry::resumed`](super::Registry::resumed). Called with no lock held; must not wait.
    fn resume(&self, uid: &Uid, conn: ConnId, since: Option<Position>);

    /// A seed connection `conn` of `uid` bound here: take the uid's offline queue, then
    /// call [`Registry::deliver_to`](super::Registry::deliver_to). Called with no lock held; must not wait.
    fn seed_bound(&self, _uid: &Uid, _conn: ConnId) {}

    /// Cluster mode with history on: a v1 tab of `uid` binds here, so its history (made in
    /// Redis if missing) is counted against `--history-max-uids`, room made if needed.
    /// Called under the uid's shard lock: must only take locks of its own, never wait.
    fn admit(&self, _uid: &Uid) -> HistoryRoom {
        HistoryRoom::Counted
    }

    /// Cluster mode with history on: the last connection of `uid` here left (its history
    /// is still counted for `--history-keep-ms`). Under the uid's shard lock, as `admit`.
    fn left(&self, _uid: &Uid) {}

    /// Histories counted now (`/stats` `history_uids`).
    fn counted(&self) -> usize {
        0
    }

    /// A cluster-fed v1 connection `conn` of `uid` acknowledged everything up to `at`
    /// (more than it had): record it where the node that accepted the push can see it.
    /// Called with no lock held; must not wait.
    fn acked(&self, _uid: &Uid, _conn: ConnId, _at: Position) {}
}

/// What [`RemoteHistory::admit`] decided about a v1 bind's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRoom {
    /// Counted already, or there was room.
    Counted,
    /// Counted, by forgetting an offline uid's history (`history_evicted`).
    MadeRoom,
    /// Every history counted is in use: the bind is refused (1013, `history_full`).
    Full,
}
