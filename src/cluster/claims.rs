//! The cluster-wide `/push` retry key: a claim in Redis keyed on the ID and line, and
//! the first outcome kept for the retry window.

use super::Cluster;
use super::history::scripts as ch;
use crate::wire::envelope::Position;
use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::Value;
use std::time::Duration;
use tracing::debug;

/// The answer to a cluster-wide retry claim ([`Cluster::claim`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteClaim {
    /// Not seen within the window on any node: run it, then [`Cluster::settle`] the key.
    Fresh(String),
    /// Seen: what the first did (`None` while it still runs).
    Duplicate(Option<crate::dedupe::First>),
    /// Redis could not tell in time: the caller falls back to this node's memory.
    Down,
}
impl Cluster {
    /// Claims `id` + `line` cluster-wide for `window`: one script (`GET`, else `SET
    /// pw:d:<hash> p PX window`), bounded by `--cluster-timeout-ms`. The key is a SHA-256
    /// of the ID and the line, the same on every node.
    pub async fn claim(&self, id: &str, line: &[u8], window: Duration) -> RemoteClaim {
        if !self.is_up() {
            return RemoteClaim::Down;
        }
        let key = self.names.retry_key(id, line);
        let ms = window.as_millis().max(1).to_string();
        let asked = tokio::time::timeout(
            self.timeout,
            self.cmd
                .eval::<Option<String>, _, _, _>(CLAIM_SCRIPT, vec![key.clone()], vec![ms]),
        )
        .await;
        match asked {
            Ok(Ok(None)) => RemoteClaim::Fresh(key),
            Ok(Ok(Some(first))) => RemoteClaim::Duplicate(parse_first(&first)),
            Ok(Err(err)) => {
                if *err.kind() == fred::error::ErrorKind::Timeout {
                    self.timed_out("a retry claim");
                }
                debug!(%err, "retry claim failed: this node's memory decides");
                RemoteClaim::Down
            }
            // Not answered in time: the push itself must not wait a second timeout.
            Err(_) => {
                self.timed_out("a retry claim");
                RemoteClaim::Down
            }
        }
    }

    /// Records what a claimed push did (`Some`: accepted, kept for the rest of the
    /// window; `None`: forgotten, so a retry runs). Bounded by `--cluster-timeout-ms`;
    /// a failure leaves the claim `pending` until its window ends.
    pub async fn settle(&self, key: String, first: Option<crate::dedupe::First>) {
        if !self.is_up() {
            return;
        }
        let cmd = match first {
            Some(f) => self.cmd.custom::<Value, _>(
                fred::cmd!("SET"),
                vec![key, first_text(&f), "XX".to_owned(), "KEEPTTL".to_owned()],
            ),
            None => self.cmd.custom::<Value, _>(fred::cmd!("DEL"), vec![key]),
        };
        if let Ok(Err(err)) = tokio::time::timeout(self.timeout, cmd).await {
            debug!(%err, "retry settle failed");
        }
    }
}

/// A retry claim: the first outcome if the key exists, else `p` (pending) for the window.
const CLAIM_SCRIPT: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], 'p', 'PX', ARGV[1])
return false
"#;

/// A first outcome as kept in Redis: `d` (delivered) or `q` (queued), then ` EPOCH SEQ`
/// if it had a place in a history.
fn first_text(f: &crate::dedupe::First) -> String {
    let kind = if f.queued { "q" } else { "d" };
    match f.at {
        Some(at) => format!("{kind} {} {}", ch::epoch_text(at.epoch), at.seq),
        None => kind.to_owned(),
    }
}

/// [`first_text`] back; `None` for `p` (still running) or anything else.
fn parse_first(text: &str) -> Option<crate::dedupe::First> {
    let mut it = text.split(' ');
    let queued = match it.next()? {
        "d" => false,
        "q" => true,
        _ => return None,
    };
    let at = match (it.next(), it.next()) {
        (Some(e), Some(s)) => Some(Position {
            epoch: u64::from_str_radix(e, 16).ok()?,
            seq: s.parse().ok()?,
        }),
        _ => None,
    };
    Some(crate::dedupe::First { queued, at })
}
