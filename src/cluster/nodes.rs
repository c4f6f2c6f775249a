//! [`ClusterNodes`]: cluster mode as [`Nodes`]. This node's part is [`Here`]'s (local
//! delivery, local counts), the rest goes through the Redis link ([`Cluster`]); Redis
//! replaces the stores a single node keeps in memory (groups, retry keys, acks, history).

use std::sync::Arc;
use std::time::Duration;

use super::pusher::ClusterChannels;
use super::{AddressedLink, Cluster, ClusterGroupError, RemoteClaim, UidsError};
use crate::nodes::{
    Answer, Census, Changed, Claim, ConnAnswer, ConnOp, First, Here, How, Nodes, NodesError, Page,
    Reached, Ticket, To,
};
use crate::registry::Registry;
use crate::wire::envelope::Position;
use crate::wire::{CloseNotice, Payload, Uid};

/// Every node of the cluster: this one ([`Here`]) and the others, through Redis.
#[derive(Debug)]
pub struct ClusterNodes {
    here: Here,
    cluster: Arc<Cluster>,
    /// `--dedupe-window-ms`; `None` with retries not remembered.
    window: Option<Duration>,
    /// Pusher channels over every node, once [`ClusterNodes::with_pusher`] started them.
    pusher: Option<Arc<ClusterChannels>>,
    /// The gateway door's addressed connections across nodes (`addressed.rs`); `None`
    /// without the door.
    addressed: Option<AddressedLink>,
}

/// How often the accepting node looks for an ack in Redis.
const ACK_POLL: Duration = Duration::from_millis(5);

impl ClusterNodes {
    /// `here` (this node's registry, and its retry memory while Redis cannot answer) and
    /// the link; `window` is how long an accepted `/push` is remembered for retries.
    pub fn new(here: Here, cluster: Arc<Cluster>, window: Option<Duration>) -> ClusterNodes {
        ClusterNodes {
            here,
            cluster,
            window,
            pusher: None,
            addressed: None,
        }
    }

    /// The same, with Pusher channels shared through Redis (`--pusher-apps`): a
    /// subscriber of its own and a beat every second, which a cluster without Pusher apps
    /// does without.
    pub fn with_pusher(self) -> ClusterNodes {
        let index = self.here.channels().index().clone();
        let pusher = Some(ClusterChannels::start(self.cluster.clone(), index));
        ClusterNodes { pusher, ..self }
    }

    /// With the gateway door's addressed connections reached through `link`.
    pub fn with_addressed(mut self, link: AddressedLink) -> ClusterNodes {
        self.addressed = Some(link);
        self
    }
}

/// Each of `uids` delivered here and published (in order) as a fan-out member, whose
/// publish is sent even past its reply's wait (`Cluster::push_member`); the answer sums
/// what every holder said.
fn fan_out<S: AsRef<str>>(
    registry: &Registry,
    cluster: &Arc<Cluster>,
    uids: impl Iterator<Item = S>,
    msg: &Payload,
) -> Answer<Reached> {
    let targets: Vec<_> = uids
        .map(|u| {
            let u = u.as_ref();
            (registry.push(u, msg), cluster.push_member(u, msg))
        })
        .collect();
    Answer::later(async move {
        let mut out = Reached::default();
        for (local, remote) in targets {
            let r = remote.await;
            let d = local + r.delivery;
            out.reached += usize::from(d.ok());
            out.delivery = out.delivery + d;
            out.missing += r.missing;
            out.in_doubt |= r.in_doubt;
            out.unavailable |= r.unavailable;
        }
        out
    })
}

fn group_error(e: ClusterGroupError) -> NodesError {
    match e {
        ClusterGroupError::Limit(e) => NodesError::Limit(e),
        ClusterGroupError::Unavailable => NodesError::Unavailable,
    }
}

impl Nodes for ClusterNodes {
    fn deliver(&self, to: To<'_>, msg: &Payload, how: How) -> Answer<Reached> {
        let registry = self.here.registry();
        match to {
            To::Uid(uid) => {
                // Here first (history is numbered in Redis, so not kept here), then the
                // publish, queued in order before this returns.
                let local = registry.push(uid, msg);
                let remote = self.cluster.push_kept(uid, msg, how.queue_for);
                Answer::later(async move {
                    let r = remote.await;
                    let delivery = local + r.delivery;
                    Reached {
                        delivery,
                        reached: usize::from(delivery.ok()),
                        members: 0,
                        at: r.at,
                        queued: r.queued,
                        missing: r.missing,
                        in_doubt: r.in_doubt,
                        unavailable: r.unavailable,
                    }
                })
            }
            To::Uids(uids) => fan_out(registry, &self.cluster, uids.iter(), msg),
            To::Group { name, except } => {
                // The member lookup waits on Redis: a barrier, so the lines behind it run
                // once its pushes are dispatched (in order), not once they are answered.
                let (cluster, registry) = (self.cluster.clone(), registry.clone());
                let (name, except, msg) = (name.to_owned(), except.to_vec(), msg.clone());
                Answer::barrier(async move {
                    let members = cluster.members(&name).await.unwrap_or_default();
                    let n = members.len();
                    let kept = members
                        .iter()
                        .filter(|m| !except.iter().any(|e| **e == ***m));
                    fan_out(&registry, &cluster, kept, &msg)
                        .map(move |r| Reached { members: n, ..r })
                })
            }
            To::All { except } => {
                // Published first, so the other nodes fan out while this one does.
                let remote = self.cluster.broadcast(msg, except);
                let local = registry.broadcast(msg, except);
                Answer::later(async move {
                    let r = remote.await;
                    let delivery = local + r.delivery;
                    Reached {
                        delivery,
                        reached: usize::from(delivery.ok()),
                        missing: r.missing,
                        in_doubt: r.in_doubt,
                        unavailable: r.unavailable,
                        ..Reached::default()
                    }
                })
            }
        }
    }

    fn kick(&self, uids: &[Uid], notice: &CloseNotice) -> Answer<usize> {
        let closed: usize = uids
            .iter()
            .map(|u| self.here.registry().kick(u, notice))
            .sum();
        let remote: Vec<_> = uids
            .iter()
            .map(|u| self.cluster.kick(u, &notice.reason))
            .collect();
        let (cluster, uids) = (self.cluster.clone(), uids.to_vec());
        Answer::later(async move {
            let mut closed = closed;
            for r in remote {
                closed += r.await.delivery.queued;
            }
            // A kick is deliberate: the uid's groups go at once, on every node.
            for uid in &uids {
                let _ = cluster.forget(uid).await;
            }
            closed
        })
    }

    fn online(&self, uid: &str) -> Answer<usize> {
        let here = self.here.registry().connections_of(uid);
        let remote = self.cluster.online(uid);
        Answer::later(async move { here + remote.await.delivery.queued })
    }

    /// Connections are the sum of every node's answer; uids are counted once each, from
    /// the online set the nodes keep in Redis (`online.rs`). While Redis cannot tell,
    /// the uids of the nodes that answered (this one, at least).
    fn census(&self) -> Answer<Census> {
        let (uids, connections) = self.here.registry().totals();
        let (remote, cluster) = (self.cluster.count(), self.cluster.clone());
        Answer::later(async move {
            let r = remote.await;
            let distinct = cluster.online_uids().await;
            let groups = cluster.group_count().await.unwrap_or(0);
            Census {
                uids: distinct.unwrap_or(uids + r.delivery.queued),
                connections: connections + r.delivery.refused,
                groups,
                nodes: Some(1 + r.answered),
            }
        })
    }

    fn uids(&self, cursor: usize, limit: usize) -> Answer<Result<Page, NodesError>> {
        let page = self.cluster.uids_page(cursor, limit);
        Answer::later(async move {
            match page.await {
                Ok((uids, next)) => Ok(Page { uids, next }),
                Err(UidsError::Unavailable) => Err(NodesError::Unavailable),
                Err(UidsError::Partial(n)) => Err(NodesError::Partial(n)),
            }
        })
    }

    fn join(&self, group: &str, uids: &[Uid]) -> Answer<Result<Changed, NodesError>> {
        let (cluster, group, uids) = (self.cluster.clone(), group.to_owned(), uids.to_vec());
        Answer::barrier(async move {
            Answer::Now(
                cluster
                    .join(&group, &uids)
                    .await
                    .map(|(changed, members)| Changed { changed, members })
                    .map_err(group_error),
            )
        })
    }

    fn leave(&self, group: &str, uids: &[Uid]) -> Answer<Result<Changed, NodesError>> {
        let (cluster, group, uids) = (self.cluster.clone(), group.to_owned(), uids.to_vec());
        Answer::barrier(async move {
            Answer::Now(
                cluster
                    .leave(&group, &uids)
                    .await
                    .map(|(changed, members)| Changed { changed, members })
                    .map_err(group_error),
            )
        })
    }

    fn members(&self, group: &str) -> Answer<Result<Vec<String>, NodesError>> {
        let (cluster, group) = (self.cluster.clone(), group.to_owned());
        Answer::barrier(
            async move { Answer::Now(cluster.members(&group).await.map_err(group_error)) },
        )
    }

    fn claim(&self, id: &str, msg: &Payload) -> Answer<Claim> {
        let Some(window) = self.window else {
            return Answer::Now(Claim::Off);
        };
        let (cluster, here) = (self.cluster.clone(), self.here.clone());
        let (id, msg) = (id.to_owned(), msg.clone());
        // One Redis round trip (bounded) before the push runs: a barrier.
        Answer::barrier(async move {
            Answer::Now(match cluster.claim(&id, msg.as_bytes(), window).await {
                RemoteClaim::Fresh(key) => Claim::Fresh(Ticket::Shared(key)),
                RemoteClaim::Duplicate(first) => Claim::Duplicate(first),
                // Redis cannot tell: this node's memory decides (retries through this
                // node are still caught; through another, not).
                RemoteClaim::Down => here.claim_here(&id, &msg),
            })
        })
    }

    fn settle(&self, ticket: Ticket, first: Option<First>) -> Answer<()> {
        match ticket {
            Ticket::Shared(key) => {
                let cluster = self.cluster.clone();
                Answer::later(async move { cluster.settle(key, first).await })
            }
            here => self.here.settle(here, first),
        }
    }

    /// The tabs that acknowledge may be on any node, so each records its ack in Redis
    /// (`Names::acks`) and this node looks there until one has, or `until`.
    fn acked(&self, uid: &str, at: Position, until: tokio::time::Instant) -> Answer<usize> {
        let (cluster, uid) = (self.cluster.clone(), uid.to_owned());
        Answer::later(async move {
            loop {
                let tabs = cluster.acks(&uid, at).await;
                let now = tokio::time::Instant::now();
                if tabs > 0 || now >= until {
                    return tabs;
                }
                tokio::time::sleep(ACK_POLL.min(until - now)).await;
            }
        })
    }

    fn trouble(&self) -> Option<&'static str> {
        let pusher = self.pusher.as_ref().and_then(|p| p.trouble());
        self.cluster.trouble().or(pusher)
    }

    fn stop(&self) -> Answer<()> {
        let cluster = self.cluster.clone();
        Answer::later(async move { cluster.stop().await })
    }

    fn channels(&self) -> &dyn crate::nodes::Channels {
        match &self.pusher {
            Some(pusher) => pusher,
            // No Pusher apps: no door calls this.
            None => self.here.channels(),
        }
    }

    fn conns(&self, op: ConnOp) -> Answer<ConnAnswer> {
        match &self.addressed {
            Some(link) => link.run(op),
            None => Answer::Now(self.here.conns_here(&op)),
        }
    }
}
