//! End-to-end acks across nodes: a tab's ack recorded in Redis (at most one record in
//! flight per tab, the latest winning), and the count of tabs that acked a position.

use super::Cluster;
use super::history::scripts as ch;
use super::publisher::script_command;
use crate::registry::ConnId;
use crate::wire::Uid;
use crate::wire::envelope::Position;
use fred::interfaces::ClientLike;
use fred::types::Value;
use std::sync::Arc;
use tracing::debug;

impl Cluster {
    /// Records tab `conn`'s ack of `at` in Redis, coalesced: at most one record per
    /// connection is in flight, and an ack that comes meanwhile replaces the one waiting
    /// behind it (acks are cumulative, so the latest says all). So however fast a tab
    /// acks, it costs Redis at most one script per round trip, and this node one map
    /// entry, never a task per ack (400,000 `a 1` frames from one tab ran 117,000+
    /// scripts and grew the node to 0.65–2.1 GiB).
    pub(super) fn ack_later(self: Arc<Self>, uid: &Uid, conn: ConnId, at: Position) {
        {
            let mut acking = self.acking.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(next) = acking.get_mut(&conn) {
                *next = Some((uid.clone(), at));
                return;
            }
            acking.insert(conn, None);
        }
        let uid = uid.clone();
        tokio::spawn(async move {
            let (mut uid, mut at) = (uid, at);
            loop {
                self.record_ack(&uid, conn, at).await;
                let mut acking = self.acking.lock().unwrap_or_else(|e| e.into_inner());
                match acking.get_mut(&conn).and_then(Option::take) {
                    Some(next) => (uid, at) = next,
                    None => {
                        acking.remove(&conn);
                        return;
                    }
                }
            }
        });
    }

    /// Records that tab `conn` (of this node) acked `uid`'s messages up to `at`, for as
    /// long as the uid's history is kept. Best effort: a lost record is a `not_acked`.
    async fn record_ack(&self, uid: &str, conn: ConnId, at: Position) {
        let (slot, key) = self.names.acks(uid);
        let keep = self
            .history
            .map_or(60_000, |h| h.keep.as_millis().max(1) as u64);
        let args: Vec<Value> = vec![
            ch::ACK_SCRIPT.into(),
            "1".into(),
            key.into(),
            format!("{}:{conn}", self.node).into(),
            format!("{}:{}", ch::epoch_text(at.epoch), at.seq).into(),
            keep.to_string().into(),
        ];
        let sent = self
            .cmd
            .custom::<Value, _>(script_command("EVAL", slot), args);
        if let Ok(Err(err)) = tokio::time::timeout(self.timeout, sent).await {
            debug!(%err, "recording an ack failed");
        }
    }

    /// How many tabs (connections, on any node) acknowledged `uid`'s message `at`; 0
    /// when Redis cannot tell.
    pub async fn acks(&self, uid: &str, at: Position) -> usize {
        if !self.is_up() {
            return 0;
        }
        let (slot, key) = self.names.acks(uid);
        let args: Vec<Value> = vec![
            ch::ACKS_SCRIPT.into(),
            "1".into(),
            key.into(),
            ch::epoch_text(at.epoch).into(),
            at.seq.to_string().into(),
        ];
        let read = self
            .cmd
            .custom::<i64, _>(script_command("EVAL", slot), args);
        match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(n)) => usize::try_from(n).unwrap_or(0),
            _ => 0,
        }
    }
}
