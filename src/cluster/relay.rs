//! The events relay: a node without `--events-url` receivers that decides a cluster-wide
//! event (a uid's `online`, a group's `group_occupied`/`group_vacated`) puts it on a list
//! in Redis, and one node with receivers takes it off and tells them (docs/events.md, "In
//! a cluster"). Bounded: past [`RELAY_MAX`] waiting, a new one is dropped and counted.

use std::sync::Arc;

use fred::interfaces::{ClientLike, LuaInterface};

use super::Cluster;
use crate::events::What;
use crate::metrics::Metric;

/// Events that may wait on the relay list for a node with receivers.
pub const RELAY_MAX: usize = 100_000;

/// Appends ARGV[1] to KEYS[1] unless it holds ARGV[2] already: 1 taken, 0 full.
const PUT: &str = r#"
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
return 1
"#;

/// One relayed event as a line: `KIND TAB SEQ TAB NODE TAB SUBJECT` (the subject, a uid
/// or a group, last: it may hold any character). `None` for a kind never relayed.
fn line(what: &What, seq: u64, node: &str) -> Option<String> {
    let (kind, subject) = match what {
        What::Online { uid } => ("online", &**uid),
        What::GroupOccupied { group } => ("group_occupied", &**group),
        What::GroupVacated { group } => ("group_vacated", &**group),
        _ => return None,
    };
    Some(format!("{kind}\t{seq}\t{node}\t{subject}"))
}

/// The event a [`line`] was made of.
fn parse(line: &str) -> Option<(What, u64, Arc<str>)> {
    let mut parts = line.splitn(4, '\t');
    let (kind, seq, node, subject) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let seq = seq.parse().ok()?;
    let what = match kind {
        "online" => What::Online {
            uid: subject.into(),
        },
        "group_occupied" => What::GroupOccupied {
            group: subject.into(),
        },
        "group_vacated" => What::GroupVacated {
            group: subject.into(),
        },
        _ => return None,
    };
    Some((what, seq, node.into()))
}

impl Cluster {
    /// Puts an event this node decided on the relay, for a node with receivers.
    pub(crate) async fn relay(&self, what: &What, seq: u64) -> Result<(), fred::error::Error> {
        let Some(line) = line(what, seq, &self.node) else {
            return Ok(());
        };
        let taken: i64 = self
            .cmd
            .eval(
                PUT,
                vec![self.names.relay()],
                vec![line, RELAY_MAX.to_string()],
            )
            .await?;
        if taken == 0
            && let Some(hub) = self.events.get()
        {
            hub.metrics().incr(Metric::EventsDroppedFull);
        }
        Ok(())
    }

    /// Takes up to `max` relayed events, oldest first; each is taken by one node only.
    pub(crate) async fn take_relayed(
        &self,
        max: usize,
    ) -> Result<Vec<(What, u64, Arc<str>)>, fred::error::Error> {
        let lines: Option<Vec<String>> = self
            .cmd
            .custom(
                fred::cmd!("LPOP"),
                vec![self.names.relay(), max.to_string()],
            )
            .await?;
        Ok(lines
            .unwrap_or_default()
            .iter()
            .filter_map(|l| parse(l))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_gives_back_its_event() {
        for what in [
            What::Online { uid: "a\tb".into() },
            What::GroupVacated {
                group: "room 1".into(),
            },
        ] {
            let l = line(&what, 17, "n1").unwrap();
            let (back, seq, node) = parse(&l).unwrap();
            assert_eq!((seq, &*node), (17, "n1"));
            assert_eq!(line(&back, seq, &node).unwrap(), l, "the same event");
        }
        assert!(line(&What::Offline { uid: "u".into() }, 1, "n").is_none());
        assert!(parse("nonsense").is_none());
    }
}
