//! Groups in Redis: membership owned by the uid cluster-wide, changed by one script each
//! (the limits hold under concurrent joins), and the sweeper that ends grace periods.

use super::{Cluster, now_ms};
use crate::events::What;
use crate::groups::GroupError;
use crate::wire::Uid;
use fred::interfaces::{ClientLike, LuaInterface, SetsInterface};
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

/// Why a group operation could not be done cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterGroupError {
    /// A limit refused it.
    Limit(GroupError),
    /// Redis could not be reached.
    Unavailable,
}

impl std::fmt::Display for ClusterGroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterGroupError::Limit(e) => e.fmt(f),
            ClusterGroupError::Unavailable => {
                f.write_str("cluster unavailable (redis unreachable)")
            }
        }
    }
}
impl Cluster {
    /// Adds `uids` to `group`, all or nothing against the limits, atomically.
    pub async fn join(
        &self,
        group: &str,
        uids: &[Uid],
    ) -> Result<(usize, usize), ClusterGroupError> {
        if !self.is_up() {
            return Err(ClusterGroupError::Unavailable);
        }
        let n = &self.names;
        let mut keys = vec![n.groups().to_owned(), n.grace().to_owned(), n.group(group)];
        keys.extend(uids.iter().map(|u| n.uid_groups(u)));
        keys.push(n.group_seq());
        let mut args = vec![
            group.to_owned(),
            self.groups.max_groups.to_string(),
            self.groups.max_members.to_string(),
            (now_ms() + self.groups.grace.as_millis() as u64).to_string(),
        ];
        args.extend(uids.iter().map(|u| u.to_string()));
        let (added, members, seq): (i64, i64, String) = self
            .cmd
            .eval(JOIN_SCRIPT, keys, args)
            .await
            .map_err(|err| {
                debug!(%err, "join script failed");
                ClusterGroupError::Unavailable
            })?;
        if let Ok(seq) = seq.parse() {
            self.tell_group(
                What::GroupOccupied {
                    group: group.into(),
                },
                seq,
            )
            .await;
        }
        match added {
            -1 => Err(ClusterGroupError::Limit(GroupError::TooManyGroups(
                self.groups.max_groups,
            ))),
            -2 => Err(ClusterGroupError::Limit(GroupError::GroupFull(
                self.groups.max_members,
            ))),
            _ => Ok((added.max(0) as usize, members.max(0) as usize)),
        }
    }

    /// Removes `uids` from `group`: (removed, members after), atomically.
    pub async fn leave(
        &self,
        group: &str,
        uids: &[Uid],
    ) -> Result<(usize, usize), ClusterGroupError> {
        let n = &self.names;
        let mut keys = vec![n.groups().to_owned(), n.group(group)];
        keys.extend(uids.iter().map(|u| n.uid_groups(u)));
        keys.push(n.group_seq());
        let mut args = vec![group.to_owned()];
        args.extend(uids.iter().map(|u| u.to_string()));
        let (removed, left, seq): (i64, i64, String) = self
            .cmd
            .eval(LEAVE_SCRIPT, keys, args)
            .await
            .map_err(|_| ClusterGroupError::Unavailable)?;
        if let Ok(seq) = seq.parse() {
            self.tell_group(
                What::GroupVacated {
                    group: group.into(),
                },
                seq,
            )
            .await;
        }
        Ok((removed.max(0) as usize, left.max(0) as usize))
    }

    /// The members of `group` (online or within their grace period).
    pub async fn members(&self, group: &str) -> Result<Vec<String>, ClusterGroupError> {
        self.cmd
            .smembers(self.names.group(group))
            .await
            .map_err(|_| ClusterGroupError::Unavailable)
    }

    /// Groups that exist.
    pub async fn group_count(&self) -> Result<usize, ClusterGroupError> {
        self.cmd
            .scard(self.names.groups())
            .await
            .map_err(|_| ClusterGroupError::Unavailable)
    }

    /// Drops every membership of `uid` (kick, or its grace period ended offline),
    /// atomically.
    pub async fn forget(&self, uid: &str) -> Result<(), fred::error::Error> {
        let n = &self.names;
        let keys = vec![
            n.groups().to_owned(),
            n.grace().to_owned(),
            n.uid_groups(uid),
            n.group_seq(),
        ];
        let args = vec![uid.to_owned(), n.group_prefix().to_owned()];
        // The groups it emptied, each with its event's seq.
        let vacated: Vec<String> = self.cmd.eval(FORGET_SCRIPT, keys, args).await?;
        for pair in vacated.chunks_exact(2) {
            if let Ok(seq) = pair[1].parse() {
                self.tell_group(
                    What::GroupVacated {
                        group: pair[0].as_str().into(),
                    },
                    seq,
                )
                .await;
            }
        }
        Ok(())
    }

    /// Tells a group's `group_occupied`/`group_vacated`, decided by the script that made
    /// or emptied it: exactly one node runs that script, so exactly one node tells it,
    /// numbered by Redis (`group_seq_lua`) in the order the scripts ran.
    /// A node without receivers relays it to one with receivers (`relay.rs`).
    async fn tell_group(&self, what: What, seq: u64) {
        let Some(hub) = self.events.get() else {
            return;
        };
        if !hub.has_receivers()
            && let Err(err) = self.relay(&what, seq).await
        {
            debug!(%err, "relaying a group event failed: lost");
        }
        hub.publish(what, seq);
    }

    /// Starts (or restarts) `uid`'s grace period, ending at `deadline_ms`.
    pub(super) async fn grace(
        &self,
        uid: &str,
        deadline_ms: u64,
    ) -> Result<(), fred::error::Error> {
        let _: usize = self
            .cmd
            .custom(
                fred::cmd!("ZADD"),
                vec![
                    self.names.grace().to_owned(),
                    deadline_ms.to_string(),
                    uid.to_owned(),
                ],
            )
            .await?;
        Ok(())
    }
}

/// Drops the memberships of uids whose grace period ended while no node holds them.
pub(super) async fn sweep(cluster: Arc<Cluster>) {
    let every = (cluster.groups.grace / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        if !cluster.is_up() {
            continue;
        }
        let due: Vec<String> = match cluster
            .cmd
            .custom(
                fred::cmd!("ZRANGEBYSCORE"),
                vec![
                    cluster.names.grace().to_owned(),
                    "-inf".to_owned(),
                    now_ms().to_string(),
                    "LIMIT".to_owned(),
                    "0".to_owned(),
                    "256".to_owned(),
                ],
            )
            .await
        {
            Ok(due) => due,
            Err(_) => continue,
        };
        for uid in due {
            let here = cluster.registry.connections_of(&uid);
            let remote = cluster.online(&uid).await;
            if remote.unavailable || remote.in_doubt || remote.missing > 0 {
                continue; // Not sure: try again next time.
            }
            let result = if here + remote.delivery.queued > 0 {
                cluster
                    .cmd
                    .custom::<usize, _>(
                        fred::cmd!("ZREM"),
                        vec![cluster.names.grace().to_owned(), uid.clone()],
                    )
                    .await
                    .map(|_| ())
            } else {
                cluster.forget(&uid).await
            };
            if let Err(err) = result {
                debug!(%err, "grace sweep failed; retried");
            }
        }
    }
}

/// Lua: the next group event's seq, in the last key (`Names::group_seq`): Redis's clock
/// in microseconds, above the last one given (so in the order the scripts ran, never
/// repeated, even if Redis's clock steps back).
macro_rules! group_seq_lua {
    () => {
        r#"
local function group_seq()
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local seq = math.max(tonumber(redis.call('GET', KEYS[#KEYS]) or 0) + 1, now)
  local s = string.format('%.0f', seq)
  redis.call('SET', KEYS[#KEYS], s)
  return s
end
"#
    };
}

/// `/join`: KEYS groups, grace, the group's members, then each uid's groups, then the
/// group seq; ARGV group, max groups, max members, grace deadline (ms), then the uids
/// (distinct). Returns {added, members, seq}, seq the `group_occupied` event's when this
/// made the group (else ""); or {-1, 0, ""} (too many groups), {-2, 0, ""} (group full),
/// changing nothing.
const JOIN_SCRIPT: &str = concat!(
    group_seq_lua!(),
    r#"
local current = redis.call('SCARD', KEYS[3])
if current == 0 and redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0
    and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return {-1, 0, ''}
end
local new = 0
for i = 5, #ARGV do
  if redis.call('SISMEMBER', KEYS[3], ARGV[i]) == 0 then new = new + 1 end
end
if current + new > tonumber(ARGV[3]) then return {-2, 0, ''} end
for i = 5, #ARGV do
  redis.call('SADD', KEYS[3], ARGV[i])
  redis.call('SADD', KEYS[i - 1], ARGV[1])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[i])
end
if #ARGV >= 5 then redis.call('SADD', KEYS[1], ARGV[1]) end
local seq = ''
if current == 0 and new > 0 then seq = group_seq() end
return {new, current + new, seq}
"#
);

/// `/leave`: KEYS groups, the group's members, then each uid's groups, then the group
/// seq; ARGV group, then the uids. Returns {removed, members left, seq}, seq the
/// `group_vacated` event's when this emptied the group (else ""); an emptied group is gone.
const LEAVE_SCRIPT: &str = concat!(
    group_seq_lua!(),
    r#"
local removed = 0
for i = 2, #ARGV do
  removed = removed + redis.call('SREM', KEYS[2], ARGV[i])
  redis.call('SREM', KEYS[i + 1], ARGV[1])
end
local left = redis.call('SCARD', KEYS[2])
if left == 0 then redis.call('SREM', KEYS[1], ARGV[1]) end
local seq = ''
if left == 0 and removed > 0 then seq = group_seq() end
return {removed, left, seq}
"#
);

/// Drops a uid from every group: KEYS groups, grace, the uid's groups, the group seq;
/// ARGV uid, the prefix of a group's members key. The members keys are named by the uid's
/// groups, so they are not in KEYS; they share the `{pw}` hash slot, which a Redis Cluster
/// allows. Returns the groups this emptied, each followed by its `group_vacated` seq.
const FORGET_SCRIPT: &str = concat!(
    group_seq_lua!(),
    r#"
local vacated = {}
for _, g in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local key = ARGV[2] .. g
  local removed = redis.call('SREM', key, ARGV[1])
  if redis.call('SCARD', key) == 0 then
    redis.call('SREM', KEYS[1], g)
    if removed == 1 then
      table.insert(vacated, g)
      table.insert(vacated, group_seq())
    end
  end
end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[2], ARGV[1])
return vacated
"#
);
