//! Connections a backend addresses one by one, as GatewayWorker's `client_id` names them:
//! the greeted browser connections (`--gateway-ws-listen`, `greeted.rs`). Each has a
//! number (the one inside its `client_id`), at most one uid a backend bound it to (a
//! registry [`Binding`] sharing the connection's outbox, so every push to the uid reaches
//! it), its own groups (GatewayWorker's groups are per connection; pushwire's `/join`
//! groups are per uid and live in the registry), and its session (PHP-serialized bytes).
//!
//! # Locking
//! One std mutex over the table, held for map updates and non-blocking offers, never
//! across an await. Order: this lock, then a registry shard (a bind or unbind), then an
//! outbox; nothing that holds a shard lock takes this one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::warn;

use crate::metrics::{Metric, Metrics};
use crate::outbox::{Offer, Outbox, QueueLimits};
use crate::registry::{Binding, Registry};
use crate::wire::envelope::Mode;
use crate::wire::php;
use crate::wire::{CloseNotice, Payload, Uid};

/// What the table may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressedLimits {
    /// Per-connection groups that may exist at once (`--max-groups`).
    pub max_groups: usize,
    /// Connections one group may hold (`--max-group-members`).
    pub max_members: usize,
    /// A session's serialized bytes, and what its arrays may hold once read.
    pub session_bytes: usize,
    /// Arrays in a session (`updateSession` reads both sides to merge them).
    pub session: php::Limits,
}

/// One operation on addressed connections: what a GatewayClient call means once the
/// gateway door has read it. Serializable, so a cluster can run it on the node that holds
/// the connection (`cluster/addressed.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnOp {
    /// `sendToClient`, `sendToAll($msg, $client_ids)`: to these connections.
    SendTo {
        /// Connection numbers.
        conns: Vec<u32>,
        /// The message, exactly as sent.
        msg: String,
    },
    /// `sendToAll`: to every addressed connection but `except`.
    SendAll {
        /// Left out.
        except: Vec<u32>,
        /// The message.
        msg: String,
    },
    /// `sendToGroup`: to every connection in any of `groups` (once each) but `except`.
    SendGroups {
        /// Per-connection groups.
        groups: Vec<String>,
        /// Left out.
        except: Vec<u32>,
        /// The message.
        msg: String,
    },
    /// `closeClient` (with its last message) and `destoryClient` (without).
    Close {
        /// The connection.
        conn: u32,
        /// Written before the close frame.
        last: Option<String>,
    },
    /// `bindUid`: binds the connection to `uid` (one uid per connection, last wins).
    Bind {
        /// The connection.
        conn: u32,
        /// The uid.
        uid: String,
    },
    /// `unbindUid`: the bound uid goes, whichever it is.
    Unbind {
        /// The connection.
        conn: u32,
    },
    /// `joinGroup`.
    Join {
        /// The connection.
        conn: u32,
        /// The group.
        group: String,
    },
    /// `leaveGroup`.
    Leave {
        /// The connection.
        conn: u32,
        /// The group.
        group: String,
    },
    /// `ungroup`: the group is gone, its connections stay.
    Ungroup {
        /// The group.
        group: String,
    },
    /// `setSession`: the serialized bytes, kept as they are.
    SetSession {
        /// The connection.
        conn: u32,
        /// `serialize($session)`.
        session: Vec<u8>,
    },
    /// `updateSession`: merged in with PHP's `array_replace_recursive`.
    UpdateSession {
        /// The connection.
        conn: u32,
        /// `serialize($part)`.
        session: Vec<u8>,
    },
    /// `isOnline`.
    IsOnline {
        /// The connection.
        conn: u32,
    },
    /// `getClientIdByUid`, `batchGetClientIdByUid`: each uid's connections.
    ConnsOfUids {
        /// The uids.
        uids: Vec<String>,
    },
    /// `getClientIdCountByGroup` (`None`: every connection).
    Count {
        /// The group.
        group: Option<String>,
    },
    /// `batchGetClientIdCountByGroup`.
    CountGroups {
        /// The groups.
        groups: Vec<String>,
    },
    /// `getAllGroupIdList`.
    GroupIds,
    /// `getAllClientSessions`, `getClientSessionsByGroup`.
    Sessions {
        /// `None`: every connection.
        group: Option<String>,
    },
    /// `getSession`.
    Session {
        /// The connection.
        conn: u32,
    },
    /// The `select` queries: one row per matching connection.
    Select {
        /// What each row holds.
        fields: Fields,
        /// Which connections (`None`: all); else the union of these matches.
        scope: Option<Scope>,
    },
}

impl ConnOp {
    /// The one connection this op is about, if it is about one.
    pub fn conn(&self) -> Option<u32> {
        use ConnOp::*;
        match self {
            Close { conn, .. }
            | Bind { conn, .. }
            | Unbind { conn }
            | Join { conn, .. }
            | Leave { conn, .. }
            | SetSession { conn, .. }
            | UpdateSession { conn, .. }
            | IsOnline { conn }
            | Session { conn } => Some(*conn),
            _ => None,
        }
    }
}

/// The fields a select answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fields {
    /// The bound uid.
    pub uid: bool,
    /// The connection's groups.
    pub groups: bool,
    /// The session's bytes.
    pub session: bool,
}

/// Which connections a select is about: the union of each list's matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Members of these groups.
    pub groups: Vec<String>,
    /// Connections bound to these uids.
    pub uids: Vec<String>,
    /// These connections.
    pub conns: Vec<u32>,
}

/// One connection in a select's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Its number.
    pub conn: u32,
    /// Its uid (if asked for and bound).
    pub uid: Option<String>,
    /// Its groups (if asked for; `None` for none, as GatewayWorker answers null).
    pub groups: Option<Vec<String>>,
    /// Its session bytes (if asked for; `None` for none).
    pub session: Option<Vec<u8>>,
}

/// What an operation came to. Every kind merges across nodes (see [`ConnAnswer::merge`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnAnswer {
    /// Connections it reached or changed (a send, a bind, a close).
    Done(usize),
    /// Refused, with the reason for the log (a group limit, a session that does not read).
    Refused(String),
    /// `isOnline`.
    Online(bool),
    /// Each uid's connections, in the order asked.
    ConnsOfUids(Vec<(String, Vec<u32>)>),
    /// A count.
    Count(usize),
    /// Each group's count, in the order asked.
    Counts(Vec<(String, usize)>),
    /// Group names.
    Groups(Vec<String>),
    /// `[connection => session bytes or none]`.
    Sessions(Vec<(u32, Option<Vec<u8>>)>),
    /// `getSession`: `None` if there is no such connection; `Some(None)` for no session.
    Session(Option<Option<Vec<u8>>>),
    /// A select's rows.
    Rows(Vec<Row>),
}

impl ConnAnswer {
    /// The answer of two nodes as one: counts add up, lists concatenate (each node holds
    /// other connections), a connection's answer is the one node's that has it.
    pub fn merge(self, other: ConnAnswer) -> ConnAnswer {
        use ConnAnswer::*;
        match (self, other) {
            (Done(a), Done(b)) => Done(a + b),
            (Refused(why), _) | (_, Refused(why)) => Refused(why),
            (Online(a), Online(b)) => Online(a || b),
            (ConnsOfUids(mut a), ConnsOfUids(b)) => {
                for ((_, mine), (_, theirs)) in a.iter_mut().zip(b) {
                    mine.extend(theirs);
                }
                ConnsOfUids(a)
            }
            (Count(a), Count(b)) => Count(a + b),
            (Counts(mut a), Counts(b)) => {
                for ((_, mine), (_, theirs)) in a.iter_mut().zip(b) {
                    *mine += theirs;
                }
                Counts(a)
            }
            (Groups(a), Groups(b)) => {
                let all: BTreeSet<String> = a.into_iter().chain(b).collect();
                Groups(all.into_iter().collect())
            }
            (Sessions(mut a), Sessions(b)) => {
                a.extend(b);
                Sessions(a)
            }
            (Session(a), Session(b)) => Session(a.or(b)),
            (Rows(mut a), Rows(b)) => {
                a.extend(b);
                Rows(a)
            }
            // Two kinds for one op cannot happen; keep the first.
            (a, _) => a,
        }
    }

    /// What this op answers on a node that holds none of its connections.
    pub fn nothing(op: &ConnOp) -> ConnAnswer {
        use ConnOp::*;
        match op {
            SendTo { .. }
            | SendAll { .. }
            | SendGroups { .. }
            | Close { .. }
            | Bind { .. }
            | Unbind { .. }
            | Join { .. }
            | Leave { .. }
            | Ungroup { .. }
            | SetSession { .. }
            | UpdateSession { .. } => ConnAnswer::Done(0),
            IsOnline { .. } => ConnAnswer::Online(false),
            ConnsOfUids { uids } => {
                ConnAnswer::ConnsOfUids(uids.iter().map(|u| (u.clone(), Vec::new())).collect())
            }
            Count { .. } => ConnAnswer::Count(0),
            CountGroups { groups } => {
                ConnAnswer::Counts(groups.iter().map(|g| (g.clone(), 0)).collect())
            }
            GroupIds => ConnAnswer::Groups(Vec::new()),
            Sessions { .. } => ConnAnswer::Sessions(Vec::new()),
            Session { .. } => ConnAnswer::Session(None),
            Select { .. } => ConnAnswer::Rows(Vec::new()),
        }
    }
}

/// What the greeted connection's task is told, besides its outbox.
#[derive(Debug, Default)]
pub struct Signal {
    notify: Notify,
    state: Mutex<SignalState>,
}

/// See [`Signal`].
#[derive(Debug, Default, Clone)]
pub struct SignalState {
    /// A backend bound it, grouped it or gave it a session: it is no stranger now, and
    /// its unbound deadline no longer applies.
    pub claimed: bool,
    /// `closeClient`: write what is queued, then this message (if any), then close.
    pub closing: Option<(Option<Payload>, CloseNotice)>,
    /// The uid it is bound to now (`bindUid`, `unbindUid`): its `bind` and `close`
    /// events name it.
    pub uid: Option<Uid>,
}

impl Signal {
    /// Waits for the next change.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    /// The state now.
    pub fn now(&self) -> SignalState {
        lock(&self.state).clone()
    }

    fn update(&self, f: impl FnOnce(&mut SignalState)) {
        f(&mut lock(&self.state));
        self.notify.notify_one();
    }
}

/// The table (a cheap-clone handle).
#[derive(Debug, Clone)]
pub struct Addressed(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    registry: Registry,
    metrics: Arc<Metrics>,
    queue: QueueLimits,
    limits: AddressedLimits,
    table: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    /// Numbers are `base + n` for `n` in `1..span`: a cluster gives each node its own range.
    base: u32,
    span: u32,
    next: u32,
    conns: HashMap<u32, Conn>,
    /// Group → its connections (sorted: answers list them in order).
    groups: HashMap<Box<str>, BTreeSet<u32>>,
}

#[derive(Debug)]
struct Conn {
    outbox: Arc<Outbox>,
    signal: Arc<Signal>,
    /// How the page speaks (`?pushwire=1` on its URL): a bind gives a v1 page its status
    /// frame, replay and numbered messages.
    mode: Mode,
    binding: Option<Binding>,
    groups: BTreeSet<Box<str>>,
    session: Option<Vec<u8>>,
}

/// A greeted connection's place in the table; dropping it takes the connection out (its
/// uid binding and its groups with it).
#[must_use = "dropping it removes the connection"]
#[derive(Debug)]
pub struct Held {
    table: Addressed,
    /// Its number.
    pub number: u32,
    /// The queue its writer drains.
    pub outbox: Arc<Outbox>,
    /// What its task is told.
    pub signal: Arc<Signal>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.outbox.detach();
        let gone = {
            let mut t = self.table.lock();
            let gone = t.conns.remove(&self.number);
            if let Some(conn) = &gone {
                for g in &conn.groups {
                    t.leave(g, self.number);
                }
            }
            gone
        };
        // The binding (a registry shard lock) is dropped outside the table's lock.
        drop(gone);
    }
}

impl Held {
    /// A text frame from the page: a v1 page's ack (`a SEQ`) counts for the uid it is
    /// bound to now, as on the browser listener; anything else is ignored. Returns true
    /// for an ack.
    pub fn text(&self, text: &str) -> bool {
        let t = self.table.lock();
        t.conns
            .get(&self.number)
            .and_then(|c| c.binding.as_ref())
            .is_some_and(|b| b.text(text))
    }
}

impl Addressed {
    /// An empty table whose connections bind uids in `registry`.
    pub fn new(
        registry: Registry,
        metrics: Arc<Metrics>,
        queue: QueueLimits,
        limits: AddressedLimits,
    ) -> Addressed {
        Addressed(Arc::new(Inner {
            registry,
            metrics,
            queue,
            limits,
            table: Mutex::new(Table {
                base: 0,
                span: u32::MAX,
                next: 1,
                conns: HashMap::new(),
                groups: HashMap::new(),
            }),
        }))
    }

    /// Numbers this node's connections `base + 1 ..= base + span - 1` (cluster mode gives
    /// each node its own range; a span under 2 numbers none, so [`Addressed::open`]
    /// refuses until a range is given).
    pub fn number_from(&self, base: u32, span: u32) {
        let mut t = self.lock();
        t.base = base;
        t.span = span;
        t.next = 1;
    }

    /// Whether `conn` is in this node's range of numbers.
    pub fn owns(&self, conn: u32) -> bool {
        let t = self.lock();
        conn > t.base && u64::from(conn) < u64::from(t.base) + u64::from(t.span)
    }

    /// A new connection speaking `mode`, with `first` queued (its greeting). `None` when
    /// every number of the range is taken.
    pub fn open(&self, mode: Mode, first: impl FnOnce(u32) -> Payload) -> Option<Held> {
        let outbox = Arc::new(Outbox::new(self.0.queue));
        let signal = Arc::new(Signal::default());
        let mut t = self.lock();
        let number = t.free_number()?;
        outbox.preload([first(number)]);
        t.conns.insert(
            number,
            Conn {
                outbox: outbox.clone(),
                signal: signal.clone(),
                mode,
                binding: None,
                groups: BTreeSet::new(),
                session: None,
            },
        );
        drop(t);
        Some(Held {
            table: self.clone(),
            number,
            outbox,
            signal,
        })
    }

    /// Connections in the table.
    pub fn len(&self) -> usize {
        self.lock().conns.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `op` on this node's connections.
    pub fn run(&self, op: &ConnOp) -> ConnAnswer {
        use ConnOp::*;
        match op {
            SendTo { conns, msg } => {
                let msg = Payload::from(msg.clone());
                let t = self.lock();
                let targets = dedup(conns.iter().filter_map(|c| t.conns.get(c).map(|x| (*c, x))));
                ConnAnswer::Done(self.offer_all(targets, &msg))
            }
            SendAll { except, msg } => {
                // Every page of the node, as on GatewayWorker every client of the
                // gateway: the greeted ones but `except`, then those bound on the
                // browser port (no client_id, so none is excluded).
                let msg = Payload::from(msg.clone());
                let t = self.lock();
                let except: BTreeSet<u32> = except.iter().copied().collect();
                let targets = t.conns.iter().filter(|(n, _)| !except.contains(n));
                let greeted = self.offer_all(targets.map(|(n, c)| (*n, c)), &msg);
                drop(t);
                let others = self.0.registry.broadcast_own(&msg);
                ConnAnswer::Done(greeted + others.queued)
            }
            SendGroups {
                groups,
                except,
                msg,
            } => {
                let msg = Payload::from(msg.clone());
                let t = self.lock();
                let members: BTreeSet<u32> = groups
                    .iter()
                    .filter_map(|g| t.groups.get(g.as_str()))
                    .flatten()
                    .copied()
                    .collect();
                let members: BTreeSet<u32> = members
                    .difference(&except.iter().copied().collect())
                    .copied()
                    .collect();
                let targets = members
                    .into_iter()
                    .filter_map(|n| t.conns.get(&n).map(|c| (n, c)));
                ConnAnswer::Done(self.offer_all(targets, &msg))
            }
            Close { conn, last } => {
                let t = self.lock();
                let Some(c) = t.conns.get(conn) else {
                    return ConnAnswer::Done(0);
                };
                let last = last.clone().map(Payload::from);
                c.signal.update(|s| {
                    s.closing
                        .get_or_insert((last, CloseNotice::kicked(Some("closed by the backend"))));
                });
                self.0.metrics.incr(Metric::Kicked);
                ConnAnswer::Done(1)
            }
            Bind { conn, uid } => {
                let mut t = self.lock();
                let Some(c) = t.conns.get_mut(conn) else {
                    return ConnAnswer::Done(0);
                };
                if c.binding.as_ref().is_some_and(|b| b.uid() == uid) {
                    return ConnAnswer::Done(1);
                }
                // Acks count up to what was written of this uid's messages only (a page
                // bound before, to another uid, was written that one's numbers).
                c.outbox.reset_written();
                let new = self.0.registry.bind_shared(uid, c.outbox.clone(), c.mode);
                let bound = new.uid_shared();
                let old = c.binding.replace(new);
                c.signal.update(|s| {
                    s.claimed = true;
                    s.uid = Some(bound);
                });
                drop(t);
                drop(old);
                ConnAnswer::Done(1)
            }
            Unbind { conn } => {
                let mut t = self.lock();
                let old = t.conns.get_mut(conn).and_then(|c| {
                    c.signal.update(|s| s.uid = None);
                    c.binding.take()
                });
                drop(t);
                ConnAnswer::Done(usize::from(old.is_some()))
            }
            Join { conn, group } => self.join(*conn, group),
            Leave { conn, group } => {
                let mut t = self.lock();
                let Some(c) = t.conns.get_mut(conn) else {
                    return ConnAnswer::Done(0);
                };
                let was = c.groups.remove(group.as_str());
                if was {
                    t.leave(group, *conn);
                }
                ConnAnswer::Done(usize::from(was))
            }
            Ungroup { group } => {
                let mut t = self.lock();
                let Some(members) = t.groups.remove(group.as_str()) else {
                    return ConnAnswer::Done(0);
                };
                for n in &members {
                    if let Some(c) = t.conns.get_mut(n) {
                        c.groups.remove(group.as_str());
                    }
                }
                ConnAnswer::Done(members.len())
            }
            SetSession { conn, session } => self.set_session(*conn, session, false),
            UpdateSession { conn, session } => self.set_session(*conn, session, true),
            IsOnline { conn } => ConnAnswer::Online(self.lock().conns.contains_key(conn)),
            ConnsOfUids { uids } => {
                let t = self.lock();
                let mut of: HashMap<&str, Vec<u32>> = HashMap::new();
                for (n, c) in &t.conns {
                    if let Some(b) = &c.binding {
                        of.entry(b.uid()).or_default().push(*n);
                    }
                }
                ConnAnswer::ConnsOfUids(
                    uids.iter()
                        .map(|u| {
                            let mut conns = of.get(u.as_str()).cloned().unwrap_or_default();
                            conns.sort_unstable();
                            (u.clone(), conns)
                        })
                        .collect(),
                )
            }
            Count { group } => {
                let t = self.lock();
                ConnAnswer::Count(match group {
                    None => t.conns.len(),
                    Some(g) => t.groups.get(g.as_str()).map_or(0, BTreeSet::len),
                })
            }
            CountGroups { groups } => {
                let t = self.lock();
                ConnAnswer::Counts(
                    groups
                        .iter()
                        .map(|g| (g.clone(), t.groups.get(g.as_str()).map_or(0, BTreeSet::len)))
                        .collect(),
                )
            }
            GroupIds => {
                let t = self.lock();
                let mut all: Vec<String> = t.groups.keys().map(|g| g.to_string()).collect();
                all.sort_unstable();
                ConnAnswer::Groups(all)
            }
            Sessions { group } => {
                let t = self.lock();
                let numbers: Vec<u32> = match group {
                    None => t.sorted_numbers(),
                    Some(g) => t
                        .groups
                        .get(g.as_str())
                        .map(|m| m.iter().copied().collect())
                        .unwrap_or_default(),
                };
                ConnAnswer::Sessions(
                    numbers
                        .into_iter()
                        .filter_map(|n| t.conns.get(&n).map(|c| (n, c.session.clone())))
                        .collect(),
                )
            }
            Session { conn } => {
                ConnAnswer::Session(self.lock().conns.get(conn).map(|c| c.session.clone()))
            }
            Select { fields, scope } => {
                let t = self.lock();
                let numbers: Vec<u32> = match scope {
                    None => t.sorted_numbers(),
                    Some(scope) => {
                        let mut set: BTreeSet<u32> = scope
                            .conns
                            .iter()
                            .copied()
                            .filter(|n| t.conns.contains_key(n))
                            .collect();
                        for g in &scope.groups {
                            if let Some(m) = t.groups.get(g.as_str()) {
                                set.extend(m);
                            }
                        }
                        if !scope.uids.is_empty() {
                            let uids: std::collections::HashSet<&str> =
                                scope.uids.iter().map(String::as_str).collect();
                            for (n, c) in &t.conns {
                                if c.binding.as_ref().is_some_and(|b| uids.contains(b.uid())) {
                                    set.insert(*n);
                                }
                            }
                        }
                        set.into_iter().collect()
                    }
                };
                let rows = numbers
                    .into_iter()
                    .filter_map(|n| t.conns.get(&n).map(|c| (n, c)))
                    .map(|(n, c)| Row {
                        conn: n,
                        uid: c
                            .binding
                            .as_ref()
                            .filter(|_| fields.uid)
                            .map(|b| b.uid().to_owned()),
                        groups: Some(c.groups.iter().map(|g| g.to_string()).collect::<Vec<_>>())
                            .filter(|g| fields.groups && !g.is_empty()),
                        session: c.session.clone().filter(|_| fields.session),
                    })
                    .collect();
                ConnAnswer::Rows(rows)
            }
        }
    }

    fn join(&self, conn: u32, group: &str) -> ConnAnswer {
        let limits = self.0.limits;
        let mut t = self.lock();
        let exists = t.groups.get(group).map(BTreeSet::len);
        let Some(c) = t.conns.get_mut(&conn) else {
            return ConnAnswer::Done(0);
        };
        if c.groups.contains(group) {
            return ConnAnswer::Done(0);
        }
        match exists {
            None if t.groups.len() >= limits.max_groups => {
                return ConnAnswer::Refused(format!(
                    "group limit reached ({} groups)",
                    limits.max_groups
                ));
            }
            Some(n) if n >= limits.max_members => {
                return ConnAnswer::Refused(format!(
                    "group member limit reached ({} connections)",
                    limits.max_members
                ));
            }
            _ => {}
        }
        let Some(c) = t.conns.get_mut(&conn) else {
            return ConnAnswer::Done(0);
        };
        c.groups.insert(group.into());
        c.signal.update(|s| s.claimed = true);
        t.groups.entry(group.into()).or_default().insert(conn);
        ConnAnswer::Done(1)
    }

    fn set_session(&self, conn: u32, session: &[u8], merge: bool) -> ConnAnswer {
        let limits = self.0.limits;
        if session.len() > limits.session_bytes {
            return ConnAnswer::Refused(format!(
                "session longer than {} bytes",
                limits.session_bytes
            ));
        }
        let theirs = match php::unserialize(session, limits.session) {
            Ok(v) => v,
            Err(e) => return ConnAnswer::Refused(format!("session does not read: {e}")),
        };
        let mut t = self.lock();
        let Some(c) = t.conns.get_mut(&conn) else {
            return ConnAnswer::Done(0);
        };
        let next = match (merge, &c.session, theirs) {
            (true, Some(mine), php::Value::Array(theirs)) => {
                match php::unserialize(mine, limits.session) {
                    Ok(php::Value::Array(mut mine)) => {
                        mine.replace_recursive(theirs);
                        php::Value::Array(mine).serialize()
                    }
                    _ => php::Value::Array(theirs).serialize(),
                }
            }
            _ => session.to_vec(),
        };
        if next.len() > limits.session_bytes {
            return ConnAnswer::Refused(format!(
                "merged session longer than {} bytes",
                limits.session_bytes
            ));
        }
        c.session = Some(next);
        c.signal.update(|s| s.claimed = true);
        ConnAnswer::Done(1)
    }

    /// Offers `msg` to each target; returns how many queued it.
    fn offer_all<'a>(
        &self,
        targets: impl Iterator<Item = (u32, &'a Conn)>,
        msg: &Payload,
    ) -> usize {
        let mut queued = 0;
        for (n, c) in targets {
            match c.outbox.offer(msg) {
                Offer::Queued | Offer::Written => queued += 1,
                Offer::Closed => {}
                Offer::Full => {
                    self.0.metrics.incr(Metric::Evicted);
                    warn!(conn = n, "evicting slow consumer: send queue full");
                }
            }
        }
        queued
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.0.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Table {
    fn free_number(&mut self) -> Option<u32> {
        let span = self.span;
        for _ in 1..span {
            let n = self.next;
            self.next = if n + 1 >= span { 1 } else { n + 1 };
            let number = self.base.checked_add(n)?;
            if !self.conns.contains_key(&number) {
                return Some(number);
            }
        }
        None
    }

    fn leave(&mut self, group: &str, conn: u32) {
        if let Some(m) = self.groups.get_mut(group) {
            m.remove(&conn);
            if m.is_empty() {
                self.groups.remove(group);
            }
        }
    }

    fn sorted_numbers(&self) -> Vec<u32> {
        let sorted: BTreeMap<u32, ()> = self.conns.keys().map(|n| (*n, ())).collect();
        sorted.into_keys().collect()
    }
}

/// The same connection named twice is sent to once.
fn dedup<'a>(it: impl Iterator<Item = (u32, &'a Conn)>) -> impl Iterator<Item = (u32, &'a Conn)> {
    let mut seen = BTreeSet::new();
    it.filter(move |(n, _)| seen.insert(*n))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn table() -> (Registry, Addressed) {
        let config = Config::default();
        let registry = Registry::new(
            config.queue_limits(),
            config.group_limits(),
            config.history_limits(),
            Arc::default(),
        );
        let limits = AddressedLimits {
            max_groups: 2,
            max_members: 2,
            session_bytes: 1024,
            session: php::Limits::default(),
        };
        let a = Addressed::new(
            registry.clone(),
            Arc::default(),
            config.queue_limits(),
            limits,
        );
        (registry, a)
    }

    fn greet(n: u32) -> Payload {
        Payload::from(format!("hello {n}"))
    }

    #[test]
    fn binding_shares_the_outbox_and_the_last_bind_wins() {
        let (registry, a) = table();
        let one = a.open(Mode::Seed, greet).unwrap();
        assert_eq!(one.number, 1);
        assert_eq!(
            a.run(&ConnOp::Bind {
                conn: 1,
                uid: "u".into()
            }),
            ConnAnswer::Done(1)
        );
        assert_eq!(registry.push("u", &Payload::from_static("x")).queued, 1);
        a.run(&ConnOp::Bind {
            conn: 1,
            uid: "v".into(),
        });
        assert_eq!(registry.connections_of("u"), 0);
        assert_eq!(registry.connections_of("v"), 1);
        assert!(one.signal.now().claimed);
        let mut batch = Vec::new();
        one.outbox.try_recv(&mut batch).unwrap();
        assert_eq!(batch.len(), 2, "greeting and the push");
        drop(one);
        assert_eq!(registry.connections_of("v"), 0);
        assert!(a.is_empty());
    }

    #[test]
    fn groups_are_per_connection_and_bounded() {
        let (_, a) = table();
        let (x, y, z) = (
            a.open(Mode::Seed, greet).unwrap(),
            a.open(Mode::Seed, greet).unwrap(),
            a.open(Mode::Seed, greet).unwrap(),
        );
        let join = |c: &Held, g: &str| {
            a.run(&ConnOp::Join {
                conn: c.number,
                group: g.into(),
            })
        };
        assert_eq!(join(&x, "g"), ConnAnswer::Done(1));
        assert_eq!(join(&y, "g"), ConnAnswer::Done(1));
        assert!(
            matches!(join(&z, "g"), ConnAnswer::Refused(_)),
            "two members at most"
        );
        assert_eq!(join(&z, "h"), ConnAnswer::Done(1));
        assert!(
            matches!(join(&z, "i"), ConnAnswer::Refused(_)),
            "two groups at most"
        );
        let sent = a.run(&ConnOp::SendGroups {
            groups: vec!["g".into(), "h".into(), "g".into()],
            except: vec![y.number],
            msg: "m".into(),
        });
        assert_eq!(sent, ConnAnswer::Done(2));
        assert_eq!(
            a.run(&ConnOp::GroupIds),
            ConnAnswer::Groups(vec!["g".into(), "h".into()])
        );
        drop(x);
        assert_eq!(
            a.run(&ConnOp::Count {
                group: Some("g".into())
            }),
            ConnAnswer::Count(1)
        );
        assert_eq!(
            a.run(&ConnOp::Ungroup { group: "g".into() }),
            ConnAnswer::Done(1)
        );
        assert_eq!(
            a.run(&ConnOp::Count {
                group: Some("g".into())
            }),
            ConnAnswer::Count(0)
        );
    }

    #[test]
    fn sessions_merge_as_php_does() {
        let (_, a) = table();
        let c = a.open(Mode::Seed, greet).unwrap();
        let n = c.number;
        a.run(&ConnOp::SetSession {
            conn: n,
            session: b"a:1:{s:1:\"a\";i:1;}".to_vec(),
        });
        a.run(&ConnOp::UpdateSession {
            conn: n,
            session: b"a:1:{s:1:\"b\";i:2;}".to_vec(),
        });
        assert_eq!(
            a.run(&ConnOp::Session { conn: n }),
            ConnAnswer::Session(Some(Some(b"a:2:{s:1:\"a\";i:1;s:1:\"b\";i:2;}".to_vec())))
        );
        assert!(matches!(
            a.run(&ConnOp::SetSession {
                conn: n,
                session: b"O:1:\"X\":0:{}".to_vec()
            }),
            ConnAnswer::Refused(_)
        ));
        assert_eq!(
            a.run(&ConnOp::Session { conn: 99 }),
            ConnAnswer::Session(None)
        );
    }
}
