//! The seam between what a backend command means (`service/`) and where its connections
//! live: this node alone ([`Here`]) or every node of a cluster (`cluster::ClusterNodes`).
//! The service asks [`Nodes`] and never which mode runs; a single node is the degenerate
//! case, answering [`Answer::Now`].
//!
//! # Contract
//! Each method does this node's part inside the call, synchronously, and anything that
//! fixes order (a publish queued, in line order) before it returns; the [`Answer`] only
//! waits for what other nodes or Redis still have to say. An operation that must take
//! effect before the connection's next line runs (a Redis lookup or write) answers
//! [`Answer::Barrier`]. No method holds a lock across an await or blocks.
//!
//! No method has a default body: each implementation decides what every operation means
//! across nodes (a default meaning "this node" would be silently wrong in a cluster).

mod answer;
mod channels;
mod here;

use std::time::Duration;

pub use answer::{Answer, Pending};
pub use channels::{COUNT_EVERY, Channels, count_hook, left_hooks, subscribed_hooks};
pub use here::Here;

pub use crate::addressed::{ConnAnswer, ConnOp};

pub use crate::dedupe::First;
use crate::groups::GroupError;
pub use crate::registry::Delivery;
use crate::wire::envelope::Position;
use crate::wire::{CloseNotice, Payload, Uid};

/// Every node that may hold a connection: this one alone, or all of them.
pub trait Nodes: Send + Sync + std::fmt::Debug {
    /// Offers `msg` to every connection of `to`.
    fn deliver(&self, to: To<'_>, msg: &Payload, how: How) -> Answer<Reached>;
    /// Closes every connection of `uids` with `notice` and drops their groups at once;
    /// answers how many connections were closed.
    fn kick(&self, uids: &[Uid], notice: &CloseNotice) -> Answer<usize>;
    /// Connections of `uid`.
    fn online(&self, uid: &str) -> Answer<usize>;
    /// Online uids, connections and groups.
    fn census(&self) -> Answer<Census>;
    /// One page of online uids from `cursor`, at least `limit` of them unless the walk
    /// ends (whole pieces of the walk: a page may hold a few more).
    fn uids(&self, cursor: usize, limit: usize) -> Answer<Result<Page, NodesError>>;
    /// Adds `uids` to `group`, all or nothing against the group limits.
    fn join(&self, group: &str, uids: &[Uid]) -> Answer<Result<Changed, NodesError>>;
    /// Removes `uids` from `group`.
    fn leave(&self, group: &str, uids: &[Uid]) -> Answer<Result<Changed, NodesError>>;
    /// The members of `group` (online or within their grace period).
    fn members(&self, group: &str) -> Answer<Result<Vec<String>, NodesError>>;
    /// Claims the retry key of a `/push` (`id` and its LINE `msg`) for the retry window.
    fn claim(&self, id: &str, msg: &Payload) -> Answer<Claim>;
    /// Records what a claimed push did: `Some` (accepted) is kept for the rest of the
    /// window, `None` forgotten so a retry runs.
    fn settle(&self, ticket: Ticket, first: Option<First>) -> Answer<()>;
    /// How many tabs of `uid` acknowledged its message `at`, at the first ack or at
    /// `until` (0 then).
    fn acked(&self, uid: &str, at: Position, until: tokio::time::Instant) -> Answer<usize>;
    /// Why this node cannot reach the others now (`None`: it can), for `/readyz`; it
    /// still serves its own connections meanwhile.
    fn trouble(&self) -> Option<&'static str>;
    /// Leaves the other nodes (at shutdown, after the doors drained).
    fn stop(&self) -> Answer<()>;

    // Pusher channels (issue 24).
    /// The Pusher channels of every node (`nodes/channels.rs`).
    fn channels(&self) -> &dyn Channels;

    /// GatewayWorker's per-connection addressing (the gateway door, `addressed.rs`): `op`
    /// on the greeted connection(s) it names, on whichever node holds them; a query
    /// answers for every node.
    fn conns(&self, op: ConnOp) -> Answer<ConnAnswer>;
}

/// Who a delivery is for: one value, so a new kind of target is a variant, not a method.
#[derive(Debug, Clone, Copy)]
pub enum To<'a> {
    /// One uid's connections (a plain line, `/push`).
    Uid(&'a str),
    /// Each listed uid's (`/send`).
    Uids(&'a [Uid]),
    /// Every member's but those in `except` (`/group`, `/group-except`).
    Group {
        /// The group.
        name: &'a str,
        /// Members left out (still counted among the members).
        except: &'a [Uid],
    },
    /// Every connection but those of `except` (`/broadcast`, `/broadcast-except`).
    All {
        /// Uids left out.
        except: &'a [Uid],
    },
}

/// How a delivery is made.
#[derive(Debug, Clone, Copy, Default)]
pub struct How {
    /// `ttl=`: with history on, a uid nobody holds keeps it in its offline queue this
    /// long (`To::Uid` only).
    pub queue_for: Option<Duration>,
}

/// What a delivery did on every node that answered. On a single node `missing` is 0 and
/// `in_doubt` and `unavailable` are false.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reached {
    /// Connections that queued it, and that refused it.
    pub delivery: Delivery,
    /// Uids with at least one connection that took it.
    pub reached: usize,
    /// `To::Group`: its members (those left out included).
    pub members: usize,
    /// `To::Uid`: its place in the uid's history, if the uid has one.
    pub at: Option<Position>,
    /// `To::Uid` with `queue_for`: nobody held the uid, so it was kept in its offline
    /// queue.
    pub queued: bool,
    /// Holders that got it but did not answer in time.
    pub missing: usize,
    /// Handed to Redis, then no answer in time: a holder may have it.
    pub in_doubt: bool,
    /// It never left this node (Redis unreachable): nobody elsewhere got it.
    pub unavailable: bool,
}

/// Who is online, over every node that answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Distinct uids with a connection.
    pub uids: usize,
    /// Connections.
    pub connections: usize,
    /// Groups that exist.
    pub groups: usize,
    /// Nodes that answered, this one included; `None` on a single node.
    pub nodes: Option<usize>,
}

/// One page of online uids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The uids.
    pub uids: Vec<String>,
    /// The cursor of the next page; `None` at the end.
    pub next: Option<usize>,
}

/// What a group change did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changed {
    /// Uids added (`join`) or removed (`leave`).
    pub changed: usize,
    /// Members after it.
    pub members: usize,
}

/// The answer to a retry claim.
#[derive(Debug)]
pub enum Claim {
    /// Retries are not remembered (`--dedupe-window-ms 0`).
    Off,
    /// Not seen within the window: run it, then [`Nodes::settle`] the ticket.
    Fresh(Ticket),
    /// Seen: what the first did (`None` while it still runs).
    Duplicate(Option<First>),
}

/// A claimed retry key, to settle once its push ran.
#[derive(Debug)]
pub enum Ticket {
    /// Kept in this node's memory.
    Here(crate::dedupe::Ticket),
    /// Kept in Redis, under this key (cluster mode).
    Shared(String),
}

/// Why an operation could not be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodesError {
    /// A group limit refused it.
    Limit(GroupError),
    /// The other nodes could not be reached (Redis unreachable).
    Unavailable,
    /// This many nodes did not answer in time, so the answer would be incomplete.
    Partial(usize),
}

impl std::fmt::Display for NodesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodesError::Limit(e) => e.fmt(f),
            NodesError::Unavailable => f.write_str("cluster unavailable (redis unreachable)"),
            NodesError::Partial(n) => write!(
                f,
                "cluster: {n} node(s) did not answer in time; ask again with the same cursor"
            ),
        }
    }
}

impl std::error::Error for NodesError {}
