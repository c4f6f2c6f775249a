//! The cluster-wide `/uids` walk: pages in uid-hash order, each node answering for its
//! part, so a uid online throughout is listed exactly once.

use super::Cluster;
use super::envelope::{Ask, HASH_END, parse_uids_page, uid_hash};
use crate::wire::Uid;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Why a cluster-wide `/uids` page could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UidsError {
    /// Redis could not be reached.
    Unavailable,
    /// This many nodes did not answer in time (the page would be incomplete).
    Partial(usize),
}

impl std::fmt::Display for UidsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UidsError::Unavailable => f.write_str("cluster unavailable (redis unreachable)"),
            UidsError::Partial(n) => write!(
                f,
                "cluster: {n} node(s) did not answer in time; ask again with the same cursor"
            ),
        }
    }
}
impl Cluster {
    /// One page of `/uids` across the cluster: every uid with a routable connection on
    /// some node, in [`uid_hash`] order from `cursor`, at least `limit` of them (whole hash
    /// values) unless the walk ends; and the cursor of the next page.
    ///
    /// # Why every uid online throughout a walk is listed exactly once
    /// The cursor is a position in the hash space (`0 ..= 2^32`), the same on every node.
    /// Each node (this one from its own index, the others answering on `pw:all`) returns
    /// its uids from `cursor` on, whole hash values, up to at least `limit`; the page ends
    /// where the shortest answer ended, so it covers `cursor .. next` completely on every
    /// node, and the next page starts there. A uid has one hash, so it falls in exactly
    /// one page; a uid held by two nodes is listed once (the page is a set). A node that
    /// does not answer in time fails the page (ask again with the same cursor): a page
    /// missing a node could skip a stable uid.
    pub fn uids_page(
        self: &Arc<Self>,
        cursor: usize,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<String>, Option<usize>), UidsError>> + use<> {
        let limit = limit.max(1);
        let local = self.local_uids(cursor as u64, limit);
        let remote = self.gather(
            self.names.all().to_owned(),
            Ask::Uids,
            format!("{cursor} {limit}").as_bytes(),
        );
        async move {
            let (remote, bodies) = remote.await;
            if remote.unavailable || remote.in_doubt {
                return Err(UidsError::Unavailable);
            }
            if remote.missing > 0 {
                return Err(UidsError::Partial(remote.missing));
            }
            let mut end = local.1;
            let mut page: BTreeSet<(u32, String)> =
                local.0.iter().map(|(h, u)| (*h, u.to_string())).collect();
            for body in &bodies {
                let Some((their_end, uids)) = parse_uids_page(body) else {
                    return Err(UidsError::Partial(1));
                };
                end = end.min(their_end);
                page.extend(uids.into_iter().map(|u| (uid_hash(&u), u)));
            }
            // Every answer covers `cursor .. end`; keep that much, then cut at `limit`
            // (after a whole hash value), which still covers what it keeps.
            page.retain(|(h, _)| u64::from(*h) < end);
            let mut kept = Vec::with_capacity(page.len().min(limit + 8));
            for (h, uid) in page {
                if kept.len() >= limit && kept.last().is_some_and(|(last, _)| *last != h) {
                    end = u64::from(h);
                    break;
                }
                kept.push((h, uid));
            }
            let next = (end < HASH_END).then_some(end as usize);
            Ok((kept.into_iter().map(|(_, u)| u).collect(), next))
        }
    }

    /// This node's part of a `/uids` page: uids from hash `cursor` on, whole hash values,
    /// until at least `limit`; and where it stopped (`HASH_END` if it reached the end).
    pub(super) fn local_uids(&self, cursor: u64, limit: usize) -> (Vec<(u32, Uid)>, u64) {
        let Ok(start) = u32::try_from(cursor) else {
            return (Vec::new(), HASH_END);
        };
        let subscribed = self.subscribed.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(u32, Uid)> = Vec::new();
        for (h, uid) in subscribed.range((start, Uid::from(""))..) {
            if out.len() >= limit && out.last().is_some_and(|(last, _)| last != h) {
                return (out, u64::from(*h));
            }
            out.push((*h, uid.clone()));
        }
        (out, HASH_END)
    }
}
