//! `--history-max-uids` in cluster mode: the histories this node made or keeps alive,
//! counted and bounded here (per node), as a single node counts its own.
//!
//! # Why per node, and what is counted
//! A history lives in Redis and outlives its uid's last connection by `--history-keep-ms`
//! (refreshed while a node holds the uid). Redis cannot count keys that expire on their
//! own, so each node counts the histories it is answerable for: every uid a v1 tab bound
//! here (held), and every such uid for `--history-keep-ms` after its last connection here
//! left (its history still alive on this node's account). A uid held on two nodes is
//! counted by both, so the cluster keeps at most `nodes × --history-max-uids` histories
//! made by binds.
//!
//! # At the bound
//! A v1 bind of a uid not counted here makes room as a single node does: the offline
//! history that kept no message and left first, else the offline one that left first,
//! is forgotten here and deleted from Redis unless a node holds its uid (one script,
//! checked in Redis: `EVICT`). With every counted uid held here, the bind is refused
//! (close 1013 `history full: try again later`), counted in `history_full`.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::wire::Uid;

/// One counted uid.
#[derive(Debug, Clone, Copy)]
struct Counted {
    /// `None` while a connection of it is here; then until when it is counted.
    until: Option<Instant>,
    /// Its history numbered a message (so it is not a spare one).
    kept: bool,
}

/// What [`Ledger::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Counted already, or there was room.
    Yes,
    /// Room made by forgetting this uid: its history is to be deleted from Redis (if no
    /// node holds it).
    Evicted(Uid),
    /// Every counted uid is held here.
    Full,
}

/// The counted uids. Offline ones are also indexed by when they stop being counted,
/// spare (kept nothing) apart from the others, so making room costs O(log n).
#[derive(Debug)]
pub struct Ledger {
    max: usize,
    keep: Duration,
    uids: HashMap<Uid, Counted>,
    spare: BTreeSet<(Instant, Uid)>,
    kept: BTreeSet<(Instant, Uid)>,
}

impl Ledger {
    /// At most `max` uids, each counted `keep` after it left.
    pub fn new(max: usize, keep: Duration) -> Ledger {
        Ledger {
            max: max.max(1),
            keep,
            uids: HashMap::new(),
            spare: BTreeSet::new(),
            kept: BTreeSet::new(),
        }
    }

    /// Uids counted now.
    pub fn len(&self) -> usize {
        self.uids.len()
    }

    fn unindex(&mut self, uid: &Uid, c: Counted) {
        if let Some(t) = c.until {
            let index = if c.kept {
                &mut self.kept
            } else {
                &mut self.spare
            };
            index.remove(&(t, uid.clone()));
        }
    }

    /// A v1 tab of `uid` binds here: counted (as held) if it is, or if there is room.
    pub fn admit(&mut self, uid: &Uid, now: Instant) -> Admit {
        if let Some(c) = self.uids.get(uid).copied() {
            self.unindex(uid, c);
            self.uids.insert(uid.clone(), Counted { until: None, ..c });
            return Admit::Yes;
        }
        self.expire(now);
        let mut answer = Admit::Yes;
        if self.uids.len() >= self.max {
            let oldest = self.spare.pop_first().or_else(|| self.kept.pop_first());
            let Some((_, evicted)) = oldest else {
                return Admit::Full;
            };
            self.uids.remove(&evicted);
            answer = Admit::Evicted(evicted);
        }
        let held = Counted {
            until: None,
            kept: false,
        };
        self.uids.insert(uid.clone(), held);
        answer
    }

    /// The last connection of `uid` here left: counted `keep` more.
    pub fn left(&mut self, uid: &Uid, now: Instant) {
        let Some(c) = self.uids.get_mut(uid) else {
            return;
        };
        if c.until.is_some() {
            return;
        }
        let t = now + self.keep;
        c.until = Some(t);
        let index = if c.kept {
            &mut self.kept
        } else {
            &mut self.spare
        };
        index.insert((t, uid.clone()));
    }

    /// `uid`'s history numbered a message: no longer a spare one.
    pub fn kept(&mut self, uid: &str) {
        let Some((uid, c)) = self.uids.get_key_value(uid) else {
            return;
        };
        if c.kept {
            return;
        }
        let (uid, c) = (uid.clone(), *c);
        self.unindex(&uid, c);
        if let Some(t) = c.until {
            self.kept.insert((t, uid.clone()));
        }
        self.uids.insert(uid, Counted { kept: true, ..c });
    }

    /// Stops counting the uids whose history has expired in Redis by now.
    pub fn expire(&mut self, now: Instant) {
        for index in [&mut self.spare, &mut self.kept] {
            while let Some((t, _)) = index.first()
                && *t <= now
            {
                if let Some((_, uid)) = index.pop_first() {
                    self.uids.remove(&uid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_offline_histories_go_first_then_the_oldest_and_held_ones_never() {
        let keep = Duration::from_secs(10);
        let t0 = Instant::now();
        let u = |s: &str| Uid::from(s);
        let mut l = Ledger::new(3, keep);
        assert_eq!(l.admit(&u("a"), t0), Admit::Yes);
        assert_eq!(l.admit(&u("b"), t0), Admit::Yes);
        assert_eq!(l.admit(&u("c"), t0), Admit::Yes);
        // All held: full.
        assert_eq!(l.admit(&u("d"), t0), Admit::Full);
        // A held uid binding again is counted already.
        assert_eq!(l.admit(&u("a"), t0), Admit::Yes);
        l.kept("a");
        l.left(&u("a"), t0);
        l.left(&u("b"), t0 + Duration::from_secs(1));
        // b kept nothing: it goes first although a left earlier.
        assert_eq!(l.admit(&u("d"), t0), Admit::Evicted(u("b")));
        assert_eq!(l.admit(&u("e"), t0), Admit::Evicted(u("a")));
        assert_eq!(l.admit(&u("f"), t0), Admit::Full);
        assert_eq!(l.len(), 3);
        // Once past keep, an offline one is no longer counted: room without evicting.
        l.left(&u("c"), t0);
        assert_eq!(l.admit(&u("g"), t0 + keep), Admit::Yes);
        assert_eq!(l.len(), 3);
        // Back before it expired: held again, not evictable.
        l.left(&u("g"), t0);
        assert_eq!(l.admit(&u("g"), t0), Admit::Yes);
        assert_eq!(l.admit(&u("h"), t0), Admit::Full);
    }
}
