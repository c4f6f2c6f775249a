//! Who is online cluster-wide, counted once per uid: `/count`'s and `/stats`' uids.
//!
//! # Why a count kept in Redis
//! Asking every node for its uids counts a uid with tabs on two nodes twice, and sending
//! every uid to the asker to make a set costs the asker (and Redis) as much as the
//! cluster holds. Instead each node keeps two things up to date as its uids come and go
//! (the same transitions that subscribe it to a uid's channel, see `reconcile`):
//! `{pw}:on:<node>`, the set of uids it holds, and `{pw}:online`, uid → how many nodes
//! hold it. `/count` is then one `HLEN`. A node adds a uid to its set first and counts it
//! only if the set did not have it, so announcing every uid again after a reconnect
//! counts nothing twice. A node that leaves (cleanly, or reaped once it stops beating, or
//! reconnecting after an outage) has its whole set taken back, a batch per script call,
//! so the count is exact whenever the cluster is quiet. Cost, measured in
//! `docs/benchmarks.md`: one script per subscription change, batched like them.

use fred::interfaces::{ClientLike, HashesInterface, LuaInterface};

use super::Cluster;

/// Uids per script call at most, so no call holds Redis for long.
pub(super) const ONLINE_BATCH: usize = 512;

/// KEYS: the online hash, this node's set. ARGV: `+` (came) or `-` (went), then uids.
const ONLINE_SCRIPT: &str = r#"
local came = ARGV[1] == '+'
for i = 2, #ARGV do
  local uid = ARGV[i]
  if came then
    if redis.call('SADD', KEYS[2], uid) == 1 then
      redis.call('HINCRBY', KEYS[1], uid, 1)
    end
  elseif redis.call('SREM', KEYS[2], uid) == 1 then
    if redis.call('HINCRBY', KEYS[1], uid, -1) <= 0 then redis.call('HDEL', KEYS[1], uid) end
  end
end
return 0
"#;

/// Takes up to ARGV[1] uids out of a node's set (KEYS[2]) and uncounts them in the online
/// hash (KEYS[1]); returns how many it took (0: the set is gone).
const FORGET_NODE_SCRIPT: &str = r#"
local uids = redis.call('SPOP', KEYS[2], ARGV[1])
for _, uid in ipairs(uids) do
  if redis.call('HINCRBY', KEYS[1], uid, -1) <= 0 then redis.call('HDEL', KEYS[1], uid) end
end
return #uids
"#;

impl Cluster {
    /// Counts `uids` as held (`came`) or no longer held by this node.
    pub(super) async fn count_online<'a>(
        &self,
        uids: impl IntoIterator<Item = &'a str>,
        came: bool,
    ) -> Result<(), fred::error::Error> {
        let keys = vec![
            self.names.online().to_owned(),
            self.names.node_uids(self.sub.id()),
        ];
        let mut args = vec![if came { "+" } else { "-" }.to_owned()];
        args.extend(uids.into_iter().map(str::to_owned));
        if args.len() > 1 {
            let _: i64 = self.cmd.eval(ONLINE_SCRIPT, keys, args).await?;
        }
        Ok(())
    }

    /// Uncounts every uid that node `name` (a subscriber client's name) was counted for:
    /// it left, was reaped, or is this node reconnecting and about to announce its uids
    /// again.
    pub(super) async fn forget_node_online(&self, name: &str) -> Result<(), fred::error::Error> {
        let keys = vec![self.names.online().to_owned(), self.names.node_uids(name)];
        loop {
            let taken: i64 = self
                .cmd
                .eval(
                    FORGET_NODE_SCRIPT,
                    keys.clone(),
                    vec![ONLINE_BATCH.to_string()],
                )
                .await?;
            if taken == 0 {
                return Ok(());
            }
        }
    }

    /// Distinct uids online on any node (`None` if Redis cannot tell).
    pub async fn online_uids(&self) -> Option<usize> {
        let asked =
            tokio::time::timeout(self.timeout, self.cmd.hlen::<usize, _>(self.names.online()))
                .await;
        match asked {
            Ok(Ok(n)) => Some(n),
            _ => None,
        }
    }
}
