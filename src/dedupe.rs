//! Idempotent `/push` retries: accepted pushes remembered by ID and line for a window,
//! so a backend that resends after a timeout (its reply was lost, not its push) gets
//! `duplicate` and the first outcome instead of a second delivery.
//!
//! Keyed on the ID *and* a hash of the line, because backends reuse IDs (`/push 1 …` on
//! every call): a different line under a known ID is a new push. Only accepted outcomes
//! are kept (delivered, queued): a retry of a push that reached nobody runs again, which
//! delivers nothing twice. A claim is taken before the push runs, so two copies racing
//! on two connections cannot both run.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::wire::envelope::Position;

/// What the first of a set of retries did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct First {
    /// Kept in the offline queue rather than delivered live.
    pub queued: bool,
    /// Its place in the uid's history, if it got one.
    pub at: Option<Position>,
}

/// The answer to a claim.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Not seen within the window: run it, then [`Dedupe::settle`] the ticket.
    Fresh(Ticket),
    /// Seen: what the first did (`None` while it is still running).
    Duplicate(Option<First>),
    /// Remembering is off.
    Off,
}

/// A claimed key, to settle once the push ran.
#[derive(Debug, PartialEq, Eq)]
pub struct Ticket(Key);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    id: Box<str>,
    line: u64,
}

#[derive(Debug)]
struct Inner {
    map: HashMap<Key, (Instant, Option<First>)>,
    /// Claims in time order, to forget the oldest first; stale ones are skipped.
    order: VecDeque<(Instant, Key)>,
}

/// The remembered pushes.
#[derive(Debug)]
pub struct Dedupe {
    window: Option<Duration>,
    max: usize,
    hasher: RandomState,
    /// A std mutex: each call is a hash lookup or two, never held across an await and
    /// never while a registry lock is taken.
    inner: Mutex<Inner>,
}

impl Dedupe {
    /// Remembers for `window` (`None`: off), at most `max` entries.
    pub fn new(window: Option<Duration>, max: usize) -> Self {
        Dedupe {
            window: window.filter(|_| max > 0),
            max,
            hasher: RandomState::new(),
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// Claims `id` + `line` at `now`.
    pub fn claim(&self, id: &str, line: &[u8], now: Instant) -> Claim {
        let Some(window) = self.window else {
            return Claim::Off;
        };
        let key = Key {
            id: id.into(),
            line: self.hasher.hash_one(line),
        };
        let mut inner = self.lock();
        inner.forget_before(now.checked_sub(window));
        if let Some((_, first)) = inner.map.get(&key) {
            return Claim::Duplicate(*first);
        }
        while inner.map.len() >= self.max {
            inner.forget_oldest();
        }
        inner.map.insert(key.clone(), (now, None));
        inner.order.push_back((now, key.clone()));
        Claim::Fresh(Ticket(key))
    }

    /// Records what the claimed push did: `Some` if accepted (remembered), `None` if not
    /// (forgotten, so a retry runs).
    pub fn settle(&self, ticket: Ticket, outcome: Option<First>) {
        let mut inner = self.lock();
        match outcome {
            Some(first) => {
                if let Some(slot) = inner.map.get_mut(&ticket.0) {
                    slot.1 = Some(first);
                }
            }
            None => {
                inner.map.remove(&ticket.0);
            }
        }
    }

    /// Entries remembered now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update is a single insert or remove: a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Forgets claims made before `cutoff`.
    fn forget_before(&mut self, cutoff: Option<Instant>) {
        let Some(cutoff) = cutoff else {
            return;
        };
        while self.order.front().is_some_and(|(t, _)| *t < cutoff) {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        let Some((at, key)) = self.order.pop_front() else {
            return;
        };
        // A key forgotten and claimed again since has a later time: leave that one.
        if self.map.get(&key).is_some_and(|(t, _)| *t == at) {
            self.map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_duplicates_window_and_bound() {
        let d = Dedupe::new(Some(Duration::from_secs(10)), 2);
        let t0 = Instant::now();
        let Claim::Fresh(ticket) = d.claim("1", b"a", t0) else {
            panic!()
        };
        assert_eq!(d.claim("1", b"a", t0), Claim::Duplicate(None), "running");
        let first = First {
            queued: true,
            at: None,
        };
        d.settle(ticket, Some(first));
        assert_eq!(d.claim("1", b"a", t0), Claim::Duplicate(Some(first)));
        // Same ID, another line: a new push. Not accepted: forgotten.
        let Claim::Fresh(other) = d.claim("1", b"b", t0) else {
            panic!()
        };
        d.settle(other, None);
        assert!(matches!(d.claim("1", b"b", t0), Claim::Fresh(_)));
        // The bound: a third key forgets the oldest.
        assert!(matches!(d.claim("2", b"a", t0), Claim::Fresh(_)));
        assert_eq!(d.len(), 2);
        assert!(matches!(d.claim("1", b"a", t0), Claim::Fresh(_)));
        // The window.
        let later = t0 + Duration::from_secs(11);
        assert!(matches!(d.claim("2", b"a", later), Claim::Fresh(_)));
        assert_eq!(Dedupe::new(None, 10).claim("1", b"a", t0), Claim::Off);
    }
}
