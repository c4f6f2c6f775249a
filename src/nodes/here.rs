//! [`Here`]: this node's registry and retry memory as [`Nodes`]. It is the single node,
//! and the local half a cluster runs for its own connections.

use std::sync::Arc;
use std::time::Instant;

use super::Channels;
use super::{
    Answer, Census, Changed, Claim, ConnAnswer, ConnOp, First, How, Nodes, NodesError, Page,
    Reached, Ticket, To,
};
use crate::addressed::Addressed;
use crate::channels::Index;
use crate::dedupe::{self, Dedupe};
use crate::registry::{Pushed, Registry};
use crate::wire::envelope::Position;
use crate::wire::{CloseNotice, Payload, Uid};

/// This node alone: every answer is [`Answer::Now`] but an ack wait.
#[derive(Debug, Clone)]
pub struct Here {
    registry: Registry,
    /// Accepted `/push`es remembered for idempotent retries.
    dedupe: Arc<Dedupe>,
    /// Pusher channels on this node.
    channels: Index,
    /// The greeted connections a backend addresses by number (the gateway door); `None`
    /// without one.
    addressed: Option<Addressed>,
}

impl Here {
    /// This node's `registry`, and `dedupe` as its retry memory.
    pub fn new(registry: Registry, dedupe: Dedupe) -> Here {
        Here {
            registry,
            dedupe: Arc::new(dedupe),
            channels: Index::new(
                crate::outbox::QueueLimits {
                    depth: 1024,
                    bytes: 1 << 20,
                },
                Index::random_node(),
            ),
            addressed: None,
        }
    }

    /// With `addressed` as this node's greeted connections (the gateway door is on).
    pub fn with_addressed(mut self, addressed: Addressed) -> Here {
        self.addressed = Some(addressed);
        self
    }

    /// This node's greeted connections, if the gateway door is on.
    pub fn addressed(&self) -> Option<&Addressed> {
        self.addressed.as_ref()
    }

    /// `op` on this node's greeted connections.
    pub fn conns_here(&self, op: &ConnOp) -> ConnAnswer {
        match &self.addressed {
            Some(a) => a.run(op),
            None => ConnAnswer::nothing(op),
        }
    }

    /// The same, with `channels` as its Pusher channels (their queue limits, its node
    /// number in `socket_id`s).
    pub fn with_channels(self, channels: Index) -> Here {
        Here { channels, ..self }
    }

    /// The registry this node's connections are in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Claims a retry key in this node's memory.
    pub fn claim_here(&self, id: &str, msg: &Payload) -> Claim {
        match self.dedupe.claim(id, msg.as_bytes(), Instant::now()) {
            dedupe::Claim::Off => Claim::Off,
            dedupe::Claim::Fresh(ticket) => Claim::Fresh(Ticket::Here(ticket)),
            dedupe::Claim::Duplicate(first) => Claim::Duplicate(first),
        }
    }
}

impl From<Pushed> for Reached {
    fn from(p: Pushed) -> Reached {
        Reached {
            delivery: p.delivery,
            reached: usize::from(p.delivery.ok()),
            at: p.at,
            queued: p.queued,
            ..Reached::default()
        }
    }
}

impl Nodes for Here {
    fn deliver(&self, to: To<'_>, msg: &Payload, how: How) -> Answer<Reached> {
        let r = &self.registry;
        Answer::Now(match to {
            To::Uid(uid) => r.push_kept(uid, msg, how.queue_for).into(),
            To::Uids(uids) => {
                let f = r.push_many(uids, msg);
                Reached {
                    delivery: f.delivery,
                    reached: f.reached,
                    ..Reached::default()
                }
            }
            To::Group { name, except } => {
                let (members, f) = r.push_group(name, msg, except).unwrap_or_default();
                Reached {
                    delivery: f.delivery,
                    reached: f.reached,
                    members,
                    ..Reached::default()
                }
            }
            To::All { except } => {
                let delivery = r.broadcast(msg, except);
                Reached {
                    delivery,
                    reached: usize::from(delivery.ok()),
                    ..Reached::default()
                }
            }
        })
    }

    fn kick(&self, uids: &[Uid], notice: &CloseNotice) -> Answer<usize> {
        Answer::Now(uids.iter().map(|u| self.registry.kick(u, notice)).sum())
    }

    fn online(&self, uid: &str) -> Answer<usize> {
        Answer::Now(self.registry.connections_of(uid))
    }

    fn census(&self) -> Answer<Census> {
        let (uids, connections) = self.registry.totals();
        Answer::Now(Census {
            uids,
            connections,
            groups: self.registry.group_count(),
            nodes: None,
        })
    }

    fn uids(&self, cursor: usize, limit: usize) -> Answer<Result<Page, NodesError>> {
        let (page, next) = self.registry.uids_page(cursor, limit);
        Answer::Now(Ok(Page {
            uids: page.iter().map(|u| u.to_string()).collect(),
            next,
        }))
    }

    fn join(&self, group: &str, uids: &[Uid]) -> Answer<Result<Changed, NodesError>> {
        Answer::Now(
            self.registry
                .join(group, uids)
                .map(|(changed, members)| Changed { changed, members })
                .map_err(NodesError::Limit),
        )
    }

    fn leave(&self, group: &str, uids: &[Uid]) -> Answer<Result<Changed, NodesError>> {
        let (changed, members) = self.registry.leave(group, uids);
        Answer::Now(Ok(Changed { changed, members }))
    }

    fn members(&self, group: &str) -> Answer<Result<Vec<String>, NodesError>> {
        let members = self.registry.members(group).unwrap_or_default();
        Answer::Now(Ok(members.iter().map(|u| u.to_string()).collect()))
    }

    fn claim(&self, id: &str, msg: &Payload) -> Answer<Claim> {
        Answer::Now(self.claim_here(id, msg))
    }

    fn settle(&self, ticket: Ticket, first: Option<First>) -> Answer<()> {
        if let Ticket::Here(ticket) = ticket {
            self.dedupe.settle(ticket, first);
        }
        Answer::Now(())
    }

    fn acked(&self, uid: &str, at: Position, until: tokio::time::Instant) -> Answer<usize> {
        let Some(acked) = self.registry.wait_ack(uid, at) else {
            return Answer::Now(0);
        };
        Answer::later(async move {
            match tokio::time::timeout_at(until, acked).await {
                Ok(Ok(tabs)) => tabs,
                _ => 0,
            }
        })
    }

    fn trouble(&self) -> Option<&'static str> {
        None
    }

    fn stop(&self) -> Answer<()> {
        Answer::Now(())
    }

    fn channels(&self) -> &dyn Channels {
        &self.channels
    }

    fn conns(&self, op: ConnOp) -> Answer<ConnAnswer> {
        Answer::Now(self.conns_here(&op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::time::Duration;

    fn here() -> Here {
        let config = Config::default();
        let registry = Registry::new(
            config.queue_limits(),
            config.group_limits(),
            config.history_limits(),
            Arc::default(),
        );
        Here::new(registry, Dedupe::new(Some(Duration::from_secs(60)), 100))
    }

    fn now<T>(answer: Answer<T>) -> T {
        match answer {
            Answer::Now(t) => t,
            _ => panic!("a single node answers at once"),
        }
    }

    #[test]
    fn every_delivery_is_answered_at_once_with_what_it_did() {
        let here = here();
        let (_a, _b, _c) = (
            here.registry().bind("a"),
            here.registry().bind("a"),
            here.registry().bind("b"),
        );
        let msg = Payload::from_static("hi");
        let one = now(here.deliver(To::Uid("a"), &msg, How::default()));
        assert_eq!((one.delivery.queued, one.reached), (2, 1));
        assert_eq!(one.at, None, "no history opened: none asked for");
        let nobody = now(here.deliver(To::Uid("z"), &msg, How::default()));
        assert_eq!(nobody, Reached::default());
        let uids = [Uid::from("a"), Uid::from("b"), Uid::from("z")];
        let some = now(here.deliver(To::Uids(&uids), &msg, How::default()));
        assert_eq!((some.delivery.queued, some.reached), (3, 2));
        now(here.join("g", &uids)).unwrap();
        let group = now(here.deliver(
            To::Group {
                name: "g",
                except: &uids[1..2],
            },
            &msg,
            How::default(),
        ));
        assert_eq!(
            (group.members, group.reached, group.delivery.queued),
            (3, 1, 2)
        );
        let all = now(here.deliver(To::All { except: &uids[..1] }, &msg, How::default()));
        assert_eq!(all.delivery.queued, 1);
        let c = now(here.census());
        assert_eq!((c.uids, c.connections, c.groups, c.nodes), (2, 3, 1, None));
        assert_eq!(now(here.online("a")), 2);
    }

    #[test]
    fn a_queued_push_has_a_place_and_a_retry_is_a_duplicate() {
        let here = here();
        let msg = Payload::from_static(r#"{"uid":"q"}"#);
        let Claim::Fresh(ticket) = now(here.claim("1", &msg)) else {
            panic!("first claim is fresh");
        };
        let how = How {
            queue_for: Some(Duration::from_secs(5)),
        };
        let r = now(here.deliver(To::Uid("q"), &msg, how));
        assert!(r.queued);
        let at = r.at.expect("numbered");
        now(here.settle(
            ticket,
            Some(First {
                queued: true,
                at: Some(at),
            }),
        ));
        assert!(matches!(
            now(here.claim("1", &msg)),
            Claim::Duplicate(Some(First { queued: true, .. }))
        ));
    }

    #[tokio::test]
    async fn an_ack_wait_ends_at_its_deadline() {
        let here = here();
        let msg = Payload::from_static("x");
        let how = How {
            queue_for: Some(Duration::from_secs(5)),
        };
        let at = now(here.deliver(To::Uid("w"), &msg, how)).at.unwrap();
        let until = tokio::time::Instant::now() + Duration::from_millis(30);
        let wait = here.acked("w", at, until);
        assert!(matches!(wait, Answer::Later(_)));
        assert_eq!(wait.resolve().await, 0);
        assert!(tokio::time::Instant::now() >= until);
    }
}
