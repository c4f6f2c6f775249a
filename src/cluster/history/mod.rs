//! Protocol v1 history over Redis: a tab's history read (or made) when it binds, the
//! offline queue taken, histories kept alive while a node holds their uid. The keys,
//! scripts and parsing are in `scripts`.

mod ledger;
pub mod scripts;

pub(super) use ledger::Ledger;

use super::publisher::{PIPELINE_MAX, script_command};
use super::{Cluster, Hook, now_ms};
use crate::registry::ConnId;
use crate::registry::{HistoryRoom, RemoteHistory};
use crate::wire::Payload;
use crate::wire::Uid;
use crate::wire::envelope::Position;
use crate::wire::envelope::Seq;
use crate::wire::envelope::Status;
use bytes::Bytes;
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::Value;
use ledger::Admit;
use scripts as ch;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tracing::debug;

impl RemoteHistory for Hook {
    fn resume(&self, uid: &Uid, conn: ConnId, since: Option<Position>) {
        if let Some(cluster) = self.0.upgrade() {
            let uid = uid.clone();
            tokio::spawn(async move {
                let (status, base, replay, head) = cluster.attach(&uid, since).await;
                cluster
                    .registry
                    .resumed(&uid, conn, status, base, replay, head);
            });
        }
    }

    fn seed_bound(&self, uid: &Uid, conn: ConnId) {
        if let Some(cluster) = self.0.upgrade() {
            let uid = uid.clone();
            tokio::spawn(async move {
                let queued = cluster.take_queued(&uid).await;
                if !queued.is_empty() {
                    cluster.registry.deliver_to(&uid, conn, queued);
                }
            });
        }
    }

    fn admit(&self, uid: &Uid) -> HistoryRoom {
        let Some(cluster) = self.0.upgrade() else {
            return HistoryRoom::Counted;
        };
        let admitted = cluster.lock_ledger().admit(uid, Instant::now());
        match admitted {
            Admit::Yes => HistoryRoom::Counted,
            Admit::Full => HistoryRoom::Full,
            Admit::Evicted(evicted) => {
                tokio::spawn(async move { cluster.evict(&evicted).await });
                HistoryRoom::MadeRoom
            }
        }
    }

    fn left(&self, uid: &Uid) {
        if let Some(cluster) = self.0.upgrade() {
            cluster.lock_ledger().left(uid, Instant::now());
        }
    }

    fn counted(&self) -> usize {
        self.0.upgrade().map_or(0, |c| c.lock_ledger().len())
    }

    fn acked(&self, uid: &Uid, conn: ConnId, at: Position) {
        if let Some(cluster) = self.0.upgrade() {
            cluster.ack_later(uid, conn, at);
        }
    }
}
impl Cluster {
    /// A v1 tab of `uid` bound here: once this node hears the uid's channel, reads the
    /// uid's history from Redis (creating it if missing). Subscribed first, read second:
    /// a message numbered meanwhile is in the history or arrives live after it (or both:
    /// the registry drops a live one already replayed), never neither. If Redis cannot
    /// tell in time, the tab is not recovered (and a history of epoch 0 that any
    /// numbered message will resync).
    pub(super) async fn attach(
        &self,
        uid: &Uid,
        since: Option<Position>,
    ) -> (Status, Position, Vec<(Seq, Payload)>, Seq) {
        let unknown = (
            if since.is_some() {
                Status::NotRecovered
            } else {
                Status::New
            },
            Position { epoch: 0, seq: 0 },
            Vec::new(),
            0,
        );
        // The status frame tells the browser it is bound, and its backend may push at
        // once through any node: so it waits (bounded) until this node hears the uid's
        // channel, history on or off (off, a frame sent at bind lost the pushes made
        // through other nodes in the few ms before the `SSUBSCRIBE` was in).
        let deadline = tokio::time::Instant::now() + self.timeout;
        while !self.hears(uid) {
            if tokio::time::Instant::now() >= deadline {
                return unknown;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let Some(limits) = self.history else {
            return unknown;
        };
        let (slot, keys) = self.names.history(uid);
        let mut args: Vec<Value> = vec![ch::attach_script().into(), "3".into()];
        args.extend(keys.iter().map(|k| Value::from(k.as_str())));
        for a in [
            ch::epoch_text(ch::new_epoch()),
            limits.keep.as_millis().to_string(),
            now_ms().to_string(),
            limits.age.as_millis().to_string(),
            limits.messages.to_string(),
            limits.bytes.to_string(),
            since.map_or(String::new(), |p| ch::epoch_text(p.epoch)),
            since.map_or(0, |p| p.seq).to_string(),
        ] {
            args.push(a.into());
        }
        let read = tokio::time::timeout_at(
            deadline,
            self.cmd
                .custom::<Vec<Bytes>, _>(script_command("EVAL", slot), args),
        )
        .await;
        let found = match read {
            Ok(Ok(items)) => ch::parse_found(items.into_iter().map(|b| b.to_vec()).collect()),
            Ok(Err(err)) => {
                debug!(%err, "history read failed");
                None
            }
            Err(_) => None,
        };
        let Some(found) = found else {
            return unknown;
        };
        if found.head.seq > 0 {
            self.lock_ledger().kept(uid);
        }
        let head = found.head;
        let covered =
            since.filter(|p| p.epoch == head.epoch && p.seq >= found.floor && p.seq <= head.seq);
        let Some(from) = covered else {
            let status = if since.is_some() {
                Status::NotRecovered
            } else {
                Status::New
            };
            // The offline queue, as on a single node: the base is just before it.
            let queued = numbered_payloads(found.queued);
            let base = queued.first().map_or(head, |(seq, _)| Position {
                epoch: head.epoch,
                seq: seq - 1,
            });
            return (status, base, queued, head.seq);
        };
        let after = found.after.into_iter().filter(|(seq, _)| *seq > from.seq);
        (Status::Recovered, from, numbered_payloads(after), head.seq)
    }

    pub(super) fn lock_ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Deletes the history of `uid`, which this node forgot to make room for another
    /// (`ledger.rs`), unless a node holds the uid now (then it is that node's to count).
    /// Best effort, bounded: one Redis does not run is left to expire by itself.
    async fn evict(&self, uid: &Uid) {
        // The script spares a uid whose channel has a subscriber, and this node may still
        // be one: its last tab left a moment ago (a stranger binding and closing in a
        // loop at the bound evicts the uid it just left) and the `SUNSUBSCRIBE` is not in
        // yet. Wait for it (bounded), unless the uid is back here (counted again).
        let deadline = tokio::time::Instant::now() + self.timeout;
        while self.subscribed_or_pending(uid) && tokio::time::Instant::now() < deadline {
            if self.registry.connections_of(uid) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (slot, [h, l, q]) = self.names.history(uid);
        let (_, acks) = self.names.acks(uid);
        let args: Vec<Value> = vec![
            ch::EVICT_SCRIPT.into(),
            "4".into(),
            h.into(),
            l.into(),
            q.into(),
            acks.into(),
            self.names.uid_channel(uid).into(),
        ];
        let deleted = tokio::time::timeout(
            self.timeout,
            self.cmd
                .custom::<Value, _>(script_command("EVAL", slot), args),
        )
        .await;
        if !matches!(deleted, Ok(Ok(_))) {
            debug!(
                ?deleted,
                "history eviction not confirmed; it expires by itself"
            );
        }
    }

    /// A seed tab of `uid` bound here: once this node hears the uid's channel (so later
    /// pushes reach it live), takes the uid's offline queue from Redis, in order, once.
    /// Nothing if Redis cannot tell in time (the queue stays for the next bind).
    async fn take_queued(&self, uid: &Uid) -> Vec<Payload> {
        if self.history.is_none() {
            return Vec::new();
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        while !self.hears(uid) {
            if tokio::time::Instant::now() >= deadline {
                return Vec::new();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (slot, [_, _, queue]) = self.names.history(uid);
        let args: Vec<Value> = vec![
            ch::take_script().into(),
            "1".into(),
            queue.into(),
            now_ms().to_string().into(),
        ];
        let taken = tokio::time::timeout_at(
            deadline,
            self.cmd
                .custom::<Vec<Bytes>, _>(script_command("EVAL", slot), args),
        )
        .await;
        let entries = match taken {
            Ok(Ok(items)) => ch::parse_entries(items.into_iter().map(|b| b.to_vec())),
            Ok(Err(err)) => {
                debug!(%err, "offline queue read failed");
                None
            }
            Err(_) => None,
        };
        numbered_payloads(entries.unwrap_or_default())
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }
}

/// Cluster mode with history on: the histories of uids held here live while they are
/// held, and `--history-keep-ms` after: refreshed every third of the keep time, and set to
/// the whole keep time when this node lets a uid go ([`keep_alive`] from `reconcile`).
/// Refreshing every 10 s whatever the keep time cost Redis one `PEXPIRE` per key of every
/// uid online every 10 s on a Redis Cluster (at 10M uids, 8–10 cores of Redis).
pub(super) async fn keep_histories(cluster: Arc<Cluster>) {
    let Some(limits) = cluster.history else {
        return;
    };
    let every = (limits.keep / 3).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        if !cluster.is_up() {
            continue;
        }
        let held: Vec<Uid> = cluster
            .subscribed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, u)| u.clone())
            .collect();
        keep_alive(&cluster, &held).await;
    }
}

/// Sets the TTL of `uids`' histories (both keys) to `--history-keep-ms` from now; nothing
/// with history off.
pub(super) async fn keep_alive(cluster: &Cluster, uids: &[Uid]) {
    let Some(limits) = cluster.history else {
        return;
    };
    let keep = limits.keep.as_millis() as i64;
    // On a single Redis one script call per chunk sets every key's TTL (a command per key
    // cost this node and Redis one command per held uid and key every round: 38,000 per
    // 10 s at 19,000 uids); on a Redis Cluster, whose scripts touch one slot each, a
    // command per key.
    let batched = !cluster.cmd.is_clustered();
    for chunk in uids.chunks(PIPELINE_MAX / 2) {
        let pipeline = cluster.cmd.pipeline();
        let mut keys: Vec<Value> = Vec::new();
        for uid in chunk {
            let (_, [meta, list, _queue]) = cluster.names.history(uid);
            for key in [meta, list] {
                if batched {
                    keys.push(key.into());
                } else {
                    let _: Result<(), _> = pipeline.pexpire(key, keep, None).await;
                }
            }
        }
        if batched {
            let n = i64::try_from(keys.len()).unwrap_or(i64::MAX);
            let mut args = Vec::with_capacity(keys.len() + 3);
            args.push(Value::from_static_str(ch::KEEP_SCRIPT));
            args.push(Value::Integer(n));
            args.append(&mut keys);
            args.push(Value::Integer(keep));
            let _: Result<Value, _> = pipeline.custom(script_command("EVAL", 0), args).await;
        }
        let _: Vec<Result<Value, _>> = pipeline.try_all().await;
    }
}

/// Kept entries as payloads carrying their number.
fn numbered_payloads(entries: impl IntoIterator<Item = (Seq, Vec<u8>)>) -> Vec<(Seq, Payload)> {
    entries
        .into_iter()
        .filter_map(|(seq, msg)| {
            Payload::new(Bytes::from(msg))
                .ok()
                .map(|p| (seq, p.into_numbered(seq)))
        })
        .collect()
}
