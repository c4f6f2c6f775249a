//! Listening where a uid lives: the registry's presence hook marks a uid, and one task
//! subscribes to (or leaves) its channel, in order, and keeps the online count with it.

use super::envelope::uid_hash;
use super::online;
use super::{Cluster, Hook, now_ms};
use crate::registry::Presence;
use crate::wire::Uid;
use fred::interfaces::PubsubInterface;
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

impl Cluster {
    fn mark(&self, uid: &Uid) {
        let first = {
            let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            let first = dirty.is_empty();
            dirty.insert(uid.clone());
            first
        };
        if first {
            self.wake.notify_one();
        }
    }

    /// Every uid held here, to be re-announced (after a reconnect).
    pub(super) fn mark_all(&self) {
        let (page, _) = self.registry.uids_page(0, usize::MAX);
        let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        dirty.extend(page);
        drop(dirty);
        self.wake.notify_one();
    }
}

impl Presence for Hook {
    fn changed(&self, uid: &Uid) {
        if let Some(cluster) = self.0.upgrade() {
            cluster.mark(uid);
        }
    }
}
impl Cluster {
    /// True while this node is (or may be about to be) subscribed to `uid`'s channel: in,
    /// or a change of it pending.
    pub(super) fn subscribed_or_pending(&self, uid: &Uid) -> bool {
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(uid)
            || self
                .subscribed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&(uid_hash(uid), uid.clone()))
    }

    /// True once this node's subscription to `uid`'s channel is in, with no change of
    /// it pending (a pending one could be an unsubscribe decided before the bind).
    pub(super) fn hears(&self, uid: &Uid) -> bool {
        if !self.is_up() {
            return false;
        }
        let pending = self
            .dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(uid);
        !pending
            && self
                .subscribed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&(uid_hash(uid), uid.clone()))
    }
}

/// Keeps this node's uid subscriptions in step with the registry, in order.
pub(super) async fn reconcile(cluster: Arc<Cluster>) {
    loop {
        if !cluster.is_up() {
            // Not before this node's own channels are in: a uid routable here implies a
            // node that also hears requests to all nodes. `watch` marks every uid again
            // once it is up.
            tokio::time::sleep(Duration::from_millis(25)).await;
            continue;
        }
        let dirty: Vec<Uid> = {
            let mut d = cluster.dirty.lock().unwrap_or_else(|e| e.into_inner());
            d.drain().collect()
        };
        if dirty.is_empty() {
            cluster.wake.notified().await;
            continue;
        }
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for uid in dirty {
            let here = cluster.registry.connections_of(&uid) > 0;
            let subscribed = cluster
                .subscribed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&(uid_hash(&uid), uid.clone()));
            match (here, subscribed) {
                (true, false) => on.push(uid),
                (false, true) => {
                    let deadline = now_ms() + cluster.groups.grace.as_millis() as u64;
                    if cluster.is_up()
                        && let Err(err) = cluster.grace(&uid, deadline).await
                    {
                        debug!(%err, "could not start a grace period");
                    }
                    off.push(uid)
                }
                _ => {}
            }
        }
        for (uids, subscribe) in [(on, true), (off, false)] {
            if uids.is_empty() {
                continue;
            }
            // One channel per command: in a Redis Cluster the channels of one
            // SSUBSCRIBE must share a hash slot, and uids' channels do not.
            let changes = uids.iter().map(|u| {
                let channel = cluster.names.uid_channel(u);
                let sub = &cluster.sub;
                async move {
                    if subscribe {
                        sub.ssubscribe(channel).await
                    } else {
                        sub.sunsubscribe(channel).await
                    }
                }
            });
            let mut result: Result<(), _> = futures_util::future::join_all(changes)
                .await
                .into_iter()
                .collect();
            // Counted (or uncounted) in the cluster-wide online set once the
            // subscription changed; a failure retries both (each is idempotent).
            for chunk in uids.chunks(online::ONLINE_BATCH) {
                if result.is_ok() {
                    let names = chunk.iter().map(|u| &**u);
                    result = cluster.count_online(names, subscribe).await;
                }
            }
            match result {
                Ok(()) => {
                    if !subscribe {
                        // The keep time counts from here, not from the last refresh.
                        super::history::keep_alive(&cluster, &uids).await;
                    }
                    let mut s = cluster.subscribed.lock().unwrap_or_else(|e| e.into_inner());
                    for uid in uids {
                        let entry = (uid_hash(&uid), uid);
                        if subscribe {
                            s.insert(entry);
                        } else {
                            s.remove(&entry);
                        }
                    }
                }
                Err(err) => {
                    debug!(%err, "subscription change failed; retried after reconnect");
                    cluster
                        .dirty
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend(uids);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}
