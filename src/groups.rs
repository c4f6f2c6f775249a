//! Group membership: rooms and topics that belong to uids, not to sockets.
//!
//! A uid keeps its groups while it has at least one connection and for a grace period
//! after its last one closes, so a reconnect (page reload, network blip) does not cut a user
//! out of a room. Past the grace period its memberships are dropped, so memory follows who
//! is online. Offline transitions are queued in time order; [`Groups::expire`] pops only
//! what is due, so a sweep costs nothing when nobody left.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::events::{Hub, What};
use crate::wire::Uid;

/// A group name, shared between the name index and each member's list.
pub type GroupName = Arc<str>;

/// Bounds on what backends may create.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    /// Groups that may exist at once.
    pub max_groups: usize,
    /// Members one group may have.
    pub max_members: usize,
    /// How long an offline uid keeps its memberships.
    pub grace: Duration,
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupError {
    /// `max_groups` groups already exist.
    TooManyGroups(usize),
    /// The group would exceed `max_members`.
    GroupFull(usize),
}

impl std::fmt::Display for GroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupError::TooManyGroups(n) => write!(f, "too many groups (max {n})"),
            GroupError::GroupFull(n) => write!(f, "group full (max {n} members)"),
        }
    }
}

/// All groups. Lives behind one mutex in the registry, always locked after a shard.
#[derive(Debug)]
pub struct Groups {
    limits: GroupLimits,
    by_name: HashMap<GroupName, HashSet<Uid>>,
    by_uid: HashMap<Uid, Membership>,
    /// Offline transitions in time order: (when, uid). Stale entries are skipped.
    expiring: VecDeque<(Instant, Uid)>,
    /// Told when a group is made or emptied (`group_occupied`/`group_vacated`).
    events: Option<Arc<Hub>>,
}

#[derive(Debug, Default)]
struct Membership {
    groups: Vec<GroupName>,
    /// Set while the uid has no connection.
    offline_since: Option<Instant>,
}

impl Groups {
    /// No groups yet.
    pub fn new(limits: GroupLimits) -> Self {
        Groups {
            limits,
            by_name: HashMap::new(),
            by_uid: HashMap::new(),
            expiring: VecDeque::new(),
            events: None,
        }
    }

    /// From now on a group made or emptied is an event of `hub`'s.
    pub fn set_events(&mut self, hub: Arc<Hub>) {
        self.events = Some(hub);
    }

    /// `group_occupied` or `group_vacated`, under this lock: a group's events are numbered
    /// in the order it filled and emptied.
    fn tell(&self, what: impl FnOnce() -> What) {
        if let Some(hub) = &self.events {
            let what = what();
            if hub.wants(what.kind()) {
                let seq = hub.next_seq();
                hub.publish(what, seq);
            }
        }
    }

    /// Adds each uid to `group`. All or nothing: limits are checked first.
    /// Returns (newly added, members after).
    ///
    /// A uid's first membership starts out marked offline, whether or not it has a
    /// connection: presence cannot be read here without breaking the lock order, and
    /// expiry checks the registry before dropping anything, so an online uid only loses
    /// the stale mark. An offline uid thereby starts its grace period.
    pub fn join(
        &mut self,
        group: &str,
        uids: &[Uid],
        now: Instant,
    ) -> Result<(usize, usize), GroupError> {
        let existing = self.by_name.get(group);
        if existing.is_none() && self.by_name.len() >= self.limits.max_groups {
            return Err(GroupError::TooManyGroups(self.limits.max_groups));
        }
        let current = existing.map_or(0, HashSet::len);
        let new: HashSet<&Uid> = uids
            .iter()
            .filter(|u| existing.is_none_or(|m| !m.contains(u.as_ref())))
            .collect();
        if current + new.len() > self.limits.max_members {
            return Err(GroupError::GroupFull(self.limits.max_members));
        }
        let name = match self.by_name.get_key_value(group) {
            Some((name, _)) => name.clone(),
            None => GroupName::from(group),
        };
        if existing.is_none() && !new.is_empty() {
            self.tell(|| What::GroupOccupied {
                group: name.clone(),
            });
        }
        let set = self.by_name.entry(name.clone()).or_default();
        for uid in &new {
            set.insert((*uid).clone());
        }
        let total = set.len();
        let named: HashSet<&Uid> = uids.iter().collect();
        for uid in named {
            let membership = self.by_uid.entry(uid.clone()).or_default();
            if new.contains(&uid) {
                membership.groups.push(name.clone());
            }
            // A first membership starts marked offline (see above); one joined while the
            // uid is within its grace period restarts it, so what was just joined does not
            // expire with the old deadline.
            if membership.groups.len() == 1 || membership.offline_since.is_some() {
                membership.offline_since = Some(now);
                self.expiring.push_back((now, uid.clone()));
            }
        }
        Ok((total - current, total))
    }

    /// Removes each uid from `group`. Returns (removed, members after).
    pub fn leave(&mut self, group: &str, uids: &[Uid]) -> (usize, usize) {
        let mut removed = 0;
        for uid in uids {
            if self.remove_member(group, uid) {
                removed += 1;
            }
        }
        (removed, self.by_name.get(group).map_or(0, HashSet::len))
    }

    fn remove_member(&mut self, group: &str, uid: &str) -> bool {
        let Some(set) = self.by_name.get_mut(group) else {
            return false;
        };
        if !set.remove(uid) {
            return false;
        }
        if set.is_empty() {
            self.by_name.remove(group);
            self.tell(|| What::GroupVacated {
                group: group.into(),
            });
        }
        if let Some(m) = self.by_uid.get_mut(uid) {
            m.groups.retain(|g| g.as_ref() != group);
            if m.groups.is_empty() {
                self.by_uid.remove(uid);
            }
        }
        true
    }

    /// Drops every membership of `uid` at once (kick, expiry). Returns how many.
    pub fn forget(&mut self, uid: &str) -> usize {
        let Some(m) = self.by_uid.remove(uid) else {
            return 0;
        };
        for group in &m.groups {
            if let Some(set) = self.by_name.get_mut(group) {
                set.remove(uid);
                if set.is_empty() {
                    self.by_name.remove(group);
                    self.tell(|| What::GroupVacated {
                        group: group.clone(),
                    });
                }
            }
        }
        m.groups.len()
    }

    /// `uid` got its first connection: its memberships stop expiring.
    pub fn came_online(&mut self, uid: &str) {
        if let Some(m) = self.by_uid.get_mut(uid) {
            m.offline_since = None;
        }
    }

    /// `uid` lost its last connection: its grace period starts.
    pub fn went_offline(&mut self, uid: &Uid, now: Instant) {
        if let Some(m) = self.by_uid.get_mut(uid.as_ref()) {
            m.offline_since = Some(now);
            self.expiring.push_back((now, uid.clone()));
        }
    }

    /// Takes the offline transitions older than the grace period, oldest first.
    pub fn due(&mut self, now: Instant) -> Vec<(Instant, Uid)> {
        let mut due = Vec::new();
        while let Some((since, _)) = self.expiring.front() {
            if now.duration_since(*since) < self.limits.grace {
                break;
            }
            due.extend(self.expiring.pop_front());
        }
        due
    }

    /// Settles one due transition: drops `uid`'s groups if it is still offline since
    /// `since`. `online` is the registry's word, read under the uid's shard lock, and wins
    /// over a stale mark. Returns true if the memberships were dropped.
    pub fn expire(&mut self, uid: &str, since: Instant, online: bool) -> bool {
        let Some(m) = self.by_uid.get_mut(uid) else {
            return false;
        };
        if online {
            m.offline_since = None;
            return false;
        }
        if m.offline_since != Some(since) {
            return false;
        }
        self.forget(uid);
        true
    }

    /// The members of `group`, cloned out so the caller pushes without this lock.
    pub fn members(&self, group: &str) -> Option<Vec<Uid>> {
        self.by_name.get(group).map(|s| s.iter().cloned().collect())
    }

    /// Groups that exist.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when no group exists.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Memberships held by uids (online or in their grace period).
    pub fn memberships(&self) -> usize {
        self.by_uid.values().map(|m| m.groups.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(max_groups: usize, max_members: usize) -> Groups {
        Groups::new(GroupLimits {
            max_groups,
            max_members,
            grace: Duration::from_secs(60),
        })
    }

    fn uids(list: &[&str]) -> Vec<Uid> {
        list.iter().map(|u| Uid::from(*u)).collect()
    }

    #[test]
    fn limits_are_all_or_nothing() {
        let mut g = groups(1, 2);
        let now = Instant::now();
        assert_eq!(
            g.join("a", &uids(&["x", "y", "z"]), now),
            Err(GroupError::GroupFull(2))
        );
        assert!(g.is_empty());
        assert_eq!(g.join("a", &uids(&["x", "x"]), now), Ok((1, 1)));
        assert_eq!(
            g.join("b", &uids(&["x"]), now),
            Err(GroupError::TooManyGroups(1))
        );
        assert_eq!(g.leave("a", &uids(&["x"])), (1, 0));
        assert!(g.is_empty());
        assert_eq!(g.memberships(), 0);
    }

    #[test]
    fn joining_within_the_grace_period_restarts_it() {
        let mut g = groups(10, 10);
        let t0 = Instant::now();
        let u = Uid::from("u");
        g.join("a", std::slice::from_ref(&u), t0).unwrap();
        g.went_offline(&u, t0);
        // 50 s into its 60 s grace period, it joins another group: 60 s from now.
        let t1 = t0 + Duration::from_secs(50);
        g.join("b", std::slice::from_ref(&u), t1).unwrap();
        for (since, uid) in g.due(t0 + Duration::from_secs(61)) {
            assert!(!g.expire(&uid, since, false), "expired on the old deadline");
        }
        assert_eq!(g.members("b").map(|m| m.len()), Some(1));
        let due = g.due(t1 + Duration::from_secs(61));
        assert!(due.iter().any(|(since, uid)| g.expire(uid, *since, false)));
        assert!(g.members("a").is_none() && g.members("b").is_none());
    }

    #[test]
    fn grace_period_keeps_then_drops() {
        let mut g = groups(10, 10);
        let t0 = Instant::now();
        let u = Uid::from("u");
        g.join("room", std::slice::from_ref(&u), t0).unwrap();
        // Marked offline at join; the registry says it is online, so it stays.
        let due = g.due(t0 + Duration::from_secs(61));
        assert_eq!(due.len(), 1);
        assert!(!g.expire(&u, due[0].0, true));
        let t1 = t0 + Duration::from_secs(100);
        g.went_offline(&u, t1);
        assert!(g.due(t1 + Duration::from_secs(59)).is_empty());
        g.came_online("u");
        let due = g.due(t1 + Duration::from_secs(61));
        assert!(!g.expire(&u, due[0].0, false), "came back in time");
        let t2 = t0 + Duration::from_secs(200);
        g.went_offline(&u, t2);
        let due = g.due(t2 + Duration::from_secs(61));
        assert!(g.expire(&u, due[0].0, false));
        assert!(g.members("room").is_none());
    }
}
