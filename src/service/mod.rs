//! The backend service: one request in, one typed [`Reply`] out, the same for every door
//! (the TCP/Unix push port, `POST /push`). The doors do I/O and access checks; this does
//! routing, groups, presence, kicks and stats against the shared [`State`].
//!
//! # Answering now or later
//! [`handle`] returns a [`Response`]: `Ready` when the reply is known at once (everything
//! on a single node, the fast path, synchronous) or `Later` when it must wait (cluster
//! mode will ask other nodes). A door keeps replies in request order whatever their kind:
//! see [`Replies`].

mod clustered;
pub mod reply;
mod tracked;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tracing::debug;

pub use reply::*;

use crate::logsafe::escaped;
use crate::metrics::Metric;
use crate::registry::Delivery;
use crate::state::State;
use crate::wire::command::{self, Command, CommandError, PushOptions};
use crate::wire::{BadLine, CloseNotice, Frame, Payload, Uid, push_target_str};

/// A reply that resolves later (cluster mode).
pub type LaterReply = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// What a request answers.
pub enum Response {
    /// Known now.
    Ready(Reply),
    /// Known once the future resolves.
    Later(LaterReply),
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Response::Ready(r) => f.debug_tuple("Ready").field(r).finish(),
            Response::Later(_) => f.write_str("Later(..)"),
        }
    }
}

/// One backend request, parsed from a line. It owns what it delivers (each payload is a
/// [`Payload`] sharing the line's buffer), so running it needs nothing from the door.
#[derive(Debug)]
pub enum Request<'a> {
    /// A plain push line (the seed's protocol): the line itself goes to the uid's
    /// connections.
    Line {
        /// Who it is for.
        uid: Cow<'a, str>,
        /// The whole line, shared by every recipient.
        line: Payload,
    },
    /// A plain push line that is not valid.
    BadLine(BadLine),
    /// `/ping`.
    Ping,
    /// `/send TARGETS PAYLOAD`.
    Send {
        /// The uids.
        uids: Vec<Uid>,
        /// What they get.
        msg: Payload,
    },
    /// `/push ID [ttl=MS] [ack=MS] LINE`.
    Push {
        /// The retry key (with the line).
        id: Cow<'a, str>,
        /// `ttl=`, `ack=`.
        options: PushOptions,
        /// LINE, shared by every recipient.
        msg: Payload,
        /// LINE's uid, or why LINE is not a valid push line.
        target: Result<Cow<'a, str>, BadLine>,
    },
    /// `/group GROUP PAYLOAD`, `/group-except GROUP TARGETS PAYLOAD`.
    Group {
        /// The group.
        group: Cow<'a, str>,
        /// Members left out.
        except: Vec<Uid>,
        /// What the members get.
        msg: Payload,
    },
    /// `/broadcast PAYLOAD`, `/broadcast-except TARGETS PAYLOAD`.
    Broadcast {
        /// Uids left out.
        except: Vec<Uid>,
        /// What every connection gets.
        msg: Payload,
    },
    /// `/join GROUP TARGETS`.
    Join {
        /// The group.
        group: Cow<'a, str>,
        /// Who joins.
        uids: Vec<Uid>,
    },
    /// `/leave GROUP TARGETS`.
    Leave {
        /// The group.
        group: Cow<'a, str>,
        /// Who leaves.
        uids: Vec<Uid>,
    },
    /// `/members GROUP`.
    Members {
        /// The group.
        group: Cow<'a, str>,
    },
    /// `/online UID`.
    Online {
        /// The uid.
        uid: Cow<'a, str>,
    },
    /// `/count`.
    Count,
    /// `/uids [CURSOR [LIMIT]]`.
    Uids {
        /// Where the page starts.
        cursor: usize,
        /// How many at least.
        limit: usize,
    },
    /// `/kick TARGETS [REASON]`.
    Kick {
        /// The uids.
        uids: Vec<Uid>,
        /// Sent in the close frame.
        reason: Option<&'a str>,
    },
    /// `/stats`.
    Stats,
    /// A `/` line that does not parse.
    BadCommand(CommandError),
}

impl<'a> Request<'a> {
    /// Parses one framed line. `too_long_first` is the first byte of a line the framer
    /// discarded as too long: an over-long command gets a JSON error (which
    /// `json_decode(fgets($c), true)` can read), an over-long push the seed's `fail`.
    pub fn parse(frame: &'a Frame, too_long_first: Option<u8>, state: &State) -> Request<'a> {
        let bytes = match frame {
            Frame::TooLong if too_long_first == Some(b'/') => {
                return Request::BadCommand(CommandError::LineTooLong(state.config.max_line_bytes));
            }
            Frame::TooLong => return Request::BadLine(BadLine::TooLong),
            Frame::Line(bytes) => bytes,
        };
        let command = command::is_command(bytes);
        let Ok(text) = std::str::from_utf8(bytes) else {
            return if command {
                Request::BadCommand(CommandError::NotUtf8)
            } else {
                Request::BadLine(BadLine::NotUtf8)
            };
        };
        // The line was checked just above, so this never fails.
        let Some(line) = Payload::from_checked(bytes.clone(), text) else {
            return Request::BadLine(BadLine::NotUtf8);
        };
        if command {
            return match command::parse_with(text, &state.config.command_limits()) {
                Ok(command) => Request::of(command, &line, text)
                    .unwrap_or(Request::BadCommand(CommandError::PayloadOffset)),
                Err(err) => Request::BadCommand(err),
            };
        }
        match push_target_str(text) {
            Ok(uid) => Request::Line { uid, line },
            Err(bad) => Request::BadLine(bad),
        }
    }

    /// A parsed command, its payload offsets into `line` (whose text is `text`) made
    /// payloads. `None` for an offset off a character boundary: the grammar cuts at
    /// boundaries, so that would be a grammar bug, answered rather than a panic.
    fn of(command: Command<'a>, line: &Payload, text: &'a str) -> Option<Request<'a>> {
        Some(match command {
            Command::Ping => Request::Ping,
            Command::Send { uids, payload } => Request::Send {
                uids,
                msg: line.tail(payload)?,
            },
            Command::Push {
                id,
                line: at,
                options,
            } => Request::Push {
                id,
                options,
                msg: line.tail(at)?,
                target: push_target_str(text.get(at..)?),
            },
            Command::Group {
                group,
                except,
                payload,
            } => Request::Group {
                group,
                except,
                msg: line.tail(payload)?,
            },
            Command::Broadcast { except, payload } => Request::Broadcast {
                except,
                msg: line.tail(payload)?,
            },
            Command::Join { group, uids } => Request::Join { group, uids },
            Command::Leave { group, uids } => Request::Leave { group, uids },
            Command::Members { group } => Request::Members { group },
            Command::Online { uid } => Request::Online { uid },
            Command::Count => Request::Count,
            Command::Uids { cursor, limit } => Request::Uids { cursor, limit },
            Command::Kick { uids, reason } => Request::Kick { uids, reason },
            Command::Stats => Request::Stats,
        })
    }

    /// True for a `/` command (good or bad): counted in `commands`.
    fn is_command(&self) -> bool {
        !matches!(self, Request::Line { .. } | Request::BadLine(_))
    }
}

/// Parses and runs one line.
pub fn handle(state: &State, frame: &Frame, too_long_first: Option<u8>) -> Response {
    execute(state, Request::parse(frame, too_long_first, state))
}

/// Runs one request.
pub fn execute(state: &State, request: Request<'_>) -> Response {
    if request.is_command() {
        state.metrics.incr(Metric::Commands);
    }
    run(state, request)
}

/// A push to one uid. A uid longer than `--max-uid-bytes` is offline by definition (no
/// browser can bind it), so it is not looked up.
fn push_to(state: &State, uid: &str, line: &Payload) -> Result<Delivery, BadLine> {
    if uid.len() > state.config.max_uid_bytes {
        return Ok(Delivery::default());
    }
    Ok(state.registry.push(uid, line))
}

/// Counts one push line's outcome (plain or `/push`) and logs a malformed one.
fn count(state: &State, outcome: &Result<Delivery, BadLine>) {
    count_into(&state.metrics, outcome);
}

fn count_into(m: &crate::metrics::Metrics, outcome: &Result<Delivery, BadLine>) {
    match outcome {
        Ok(d) if d.ok() => m.incr(Metric::PushesOk),
        Ok(_) => m.incr(Metric::PushesFail),
        Err(bad) => {
            debug!(bad = %escaped(&bad.to_string()), "bad push line");
            m.incr(Metric::BadLines);
            m.incr(Metric::PushesFail);
        }
    }
}

/// Runs one request (its command counted).
fn run(state: &State, request: Request<'_>) -> Response {
    let registry = &state.registry;
    let json = match request {
        Request::Ping => return Response::Ready(Reply::Pong),
        Request::Send { uids, msg } => {
            if let Some(cluster) = &state.cluster {
                let max = state.config.max_uid_bytes;
                let each: Vec<_> = uids
                    .iter()
                    .filter(|u| u.len() <= max)
                    .map(|u| (registry.push(u, &msg), cluster.push_member(u, &msg)))
                    .collect();
                let n = uids.len();
                return later(async move {
                    let (mut reached, mut total) = (0, Delivery::default());
                    for (local, remote) in each {
                        let d = local + remote.await.delivery;
                        reached += usize::from(d.ok());
                        total = total + d;
                    }
                    Json::Send(SendReply {
                        ok: reached > 0,
                        uids: n,
                        reached,
                        connections: total.queued,
                        refused: total.refused,
                    })
                });
            }
            let f = registry.push_many(&uids, &msg);
            Json::Send(SendReply {
                ok: f.reached > 0,
                uids: uids.len(),
                reached: f.reached,
                connections: f.delivery.queued,
                refused: f.delivery.refused,
            })
        }
        Request::Push {
            id,
            options,
            msg,
            target,
        } => match &state.cluster {
            None => return tracked::push(state, id, options, &msg, target),
            Some(cluster) => {
                return clustered::push(state, cluster, id, options, &msg, target);
            }
        },
        Request::Group { group, except, msg } => {
            if let Some(cluster) = &state.cluster {
                let sent = group_in_cluster(cluster, registry, group.into_owned(), except, msg);
                return later(async move { sent.await.await });
            }
            let (members, f) = registry
                .push_group(&group, &msg, &except)
                .unwrap_or_default();
            Json::Group(GroupReply {
                ok: f.reached > 0,
                group: group.into_owned(),
                members,
                reached: f.reached,
                connections: f.delivery.queued,
                refused: f.delivery.refused,
            })
        }
        Request::Broadcast { except, msg } => {
            // Published first, so the other nodes fan out while this one does.
            let remote = state.cluster.as_ref().map(|c| c.broadcast(&msg, &except));
            let d = registry.broadcast(&msg, &except);
            let reply = |d: Delivery| {
                Json::Broadcast(BroadcastReply {
                    ok: d.ok(),
                    connections: d.queued,
                    refused: d.refused,
                })
            };
            match remote {
                Some(remote) => return later(async move { reply(d + remote.await.delivery) }),
                None => reply(d),
            }
        }
        Request::Join { group, uids } if state.cluster.is_some() => {
            let cluster = state.cluster.clone();
            let group = group.into_owned();
            return Response::Later(Box::pin(async move {
                let Some(cluster) = cluster else {
                    return Reply::error("no cluster");
                };
                match cluster.join(&group, &uids).await {
                    Ok((added, members)) => Reply::Json(Json::Join(JoinReply {
                        ok: true,
                        group,
                        added,
                        members,
                    })),
                    Err(e) => Reply::error(e),
                }
            }));
        }
        Request::Leave { group, uids } if state.cluster.is_some() => {
            let cluster = state.cluster.clone();
            let group = group.into_owned();
            return Response::Later(Box::pin(async move {
                let Some(cluster) = cluster else {
                    return Reply::error("no cluster");
                };
                match cluster.leave(&group, &uids).await {
                    Ok((removed, members)) => Reply::Json(Json::Leave(LeaveReply {
                        ok: true,
                        group,
                        removed,
                        members,
                    })),
                    Err(e) => Reply::error(e),
                }
            }));
        }
        Request::Members { group } if state.cluster.is_some() => {
            let cluster = state.cluster.clone();
            let group = group.into_owned();
            return Response::Later(Box::pin(async move {
                let Some(cluster) = cluster else {
                    return Reply::error("no cluster");
                };
                match cluster.members(&group).await {
                    Ok(uids) => Reply::Json(Json::Members(MembersReply {
                        ok: true,
                        group,
                        count: uids.len(),
                        uids,
                    })),
                    Err(e) => Reply::error(e),
                }
            }));
        }
        Request::Join { group, uids } => match registry.join(&group, &uids) {
            Ok((added, members)) => Json::Join(JoinReply {
                ok: true,
                group: group.into_owned(),
                added,
                members,
            }),
            Err(e) => {
                debug!(%e, group = %escaped(&group), "join refused");
                return Response::Ready(Reply::error(e));
            }
        },
        Request::Leave { group, uids } => {
            let (removed, members) = registry.leave(&group, &uids);
            Json::Leave(LeaveReply {
                ok: true,
                group: group.into_owned(),
                removed,
                members,
            })
        }
        Request::Online { uid } => {
            let n = registry.connections_of(&uid);
            if let Some(cluster) = &state.cluster {
                let remote = cluster.online(&uid);
                let uid = uid.into_owned();
                return later(async move {
                    let n = n + remote.await.delivery.queued;
                    Json::Online(OnlineReply {
                        ok: true,
                        uid,
                        online: n > 0,
                        connections: n,
                    })
                });
            }
            Json::Online(OnlineReply {
                ok: true,
                uid: uid.into_owned(),
                online: n > 0,
                connections: n,
            })
        }
        Request::Count => {
            let (uids, connections) = registry.totals();
            if let Some(cluster) = &state.cluster {
                let (remote, cluster) = (cluster.count(), cluster.clone());
                return later(async move {
                    let r = remote.await.delivery;
                    let groups = cluster.group_count().await.unwrap_or(0);
                    // A uid with connections on two nodes counts on each.
                    Json::Count(CountReply {
                        ok: true,
                        uids: uids + r.queued,
                        connections: connections + r.refused,
                        groups,
                    })
                });
            }
            Json::Count(CountReply {
                ok: true,
                uids,
                connections,
                groups: registry.group_count(),
            })
        }
        Request::Members { group } => {
            let members = registry.members(&group).unwrap_or_default();
            Json::Members(MembersReply {
                ok: true,
                count: members.len(),
                uids: members.iter().map(|u| u.to_string()).collect(),
                group: group.into_owned(),
            })
        }
        Request::Uids { cursor, limit } if state.cluster.is_some() => {
            let Some(cluster) = &state.cluster else {
                return Response::Ready(Reply::error("no cluster"));
            };
            let page = cluster.uids_page(cursor, limit);
            return Response::Later(Box::pin(async move {
                match page.await {
                    Ok((uids, next)) => Reply::Json(Json::Uids(UidsReply {
                        ok: true,
                        count: uids.len(),
                        uids,
                        next,
                    })),
                    Err(e) => Reply::error(e),
                }
            }));
        }
        Request::Uids { cursor, limit } => {
            let (page, next) = registry.uids_page(cursor, limit);
            Json::Uids(UidsReply {
                ok: true,
                count: page.len(),
                uids: page.iter().map(|u| u.to_string()).collect(),
                next,
            })
        }
        Request::Kick { uids, reason } => {
            let notice = CloseNotice::kicked(reason);
            let closed: usize = uids.iter().map(|u| registry.kick(u, &notice)).sum();
            if let Some(cluster) = &state.cluster {
                let remote: Vec<_> = uids
                    .iter()
                    .map(|u| cluster.kick(u, &notice.reason))
                    .collect();
                let n = uids.len();
                let cluster = cluster.clone();
                return later(async move {
                    let mut closed = closed;
                    for r in remote {
                        closed += r.await.delivery.queued;
                    }
                    // A kick is deliberate: the uid's groups go at once, on every node.
                    for uid in &uids {
                        let _ = cluster.forget(uid).await;
                    }
                    Json::Kick(KickReply {
                        ok: true,
                        uids: n,
                        connections: closed,
                    })
                });
            }
            Json::Kick(KickReply {
                ok: true,
                uids: uids.len(),
                connections: closed,
            })
        }
        Request::Stats => {
            let stats = state.stats();
            if let Some(cluster) = &state.cluster {
                let remote = cluster.count();
                let (uids, connections) = registry.totals();
                return later(async move {
                    let r = remote.await;
                    let mut stats = stats;
                    // This node's figures above; the cluster's (every node that answered
                    // in time, this one included) after them.
                    stats.push(("cluster_nodes", 1 + r.answered as u64));
                    stats.push(("cluster_uids", (uids + r.delivery.queued) as u64));
                    stats.push((
                        "cluster_connections",
                        (connections + r.delivery.refused) as u64,
                    ));
                    Json::Stats(StatsReply(stats))
                });
            }
            Json::Stats(StatsReply(stats))
        }
        Request::Line { uid, line } => {
            let outcome = push_to(state, &uid, &line);
            if let (Some(cluster), Ok(local)) = (&state.cluster, &outcome)
                && uid.len() <= state.config.max_uid_bytes
            {
                // Other nodes may hold the uid: the reply waits for them.
                let (local, remote) = (*local, cluster.push(&uid, &line));
                let metrics = state.metrics.clone();
                return Response::Later(Box::pin(async move {
                    let total = local + remote.await.delivery;
                    count_into(&metrics, &Ok(total));
                    if total.ok() { Reply::Ok } else { Reply::Fail }
                }));
            }
            count(state, &outcome);
            return Response::Ready(if outcome.is_ok_and(Delivery::ok) {
                Reply::Ok
            } else {
                Reply::Fail
            });
        }
        Request::BadLine(bad) => {
            count(state, &Err(bad));
            return Response::Ready(Reply::Fail);
        }
        Request::BadCommand(err) => {
            debug!(error = %escaped(&err.to_string()), "bad command");
            return Response::Ready(Reply::error(err));
        }
    };
    Response::Ready(Reply::Json(json))
}

/// Cluster mode, `/group`: the member lookup (Redis), then a push to each member, local
/// and published, in that order. The outer future is done once every push is dispatched
/// (so a later request of the same connection may run); the inner one waits for the
/// holders' answers.
// The two phases are the point: the outer future yields the inner one on purpose.
#[allow(clippy::async_yields_async)]
fn group_in_cluster(
    cluster: &std::sync::Arc<crate::cluster::Cluster>,
    registry: &crate::registry::Registry,
    group: String,
    except: Vec<crate::wire::Uid>,
    msg: Payload,
) -> impl Future<Output = Pin<Box<dyn Future<Output = Json> + Send>>> + Send + use<> {
    let (cluster, registry) = (cluster.clone(), registry.clone());
    async move {
        let members = cluster.members(&group).await.unwrap_or_default();
        let targets: Vec<_> = members
            .iter()
            .filter(|m| !except.iter().any(|e| **e == ***m))
            .map(|m| (registry.push(m, &msg), cluster.push_member(m, &msg)))
            .collect();
        let n = members.len();
        let answers: Pin<Box<dyn Future<Output = Json> + Send>> = Box::pin(async move {
            let (mut reached, mut total) = (0, Delivery::default());
            for (local, remote) in targets {
                let d = local + remote.await.delivery;
                reached += usize::from(d.ok());
                total = total + d;
            }
            Json::Group(GroupReply {
                ok: reached > 0,
                group,
                members: n,
                reached,
                connections: total.queued,
                refused: total.refused,
            })
        });
        answers
    }
}

/// True for a request whose effect waits on Redis in cluster mode (`/group` looks its
/// members up first; `/join`, `/leave`, `/members` are Redis commands; `/push` claims its
/// retry key first): later requests of the same connection run only once it has taken
/// effect. A cheap look at the verb.
fn waits_on_redis(frame: &Frame) -> bool {
    let Frame::Line(line) = frame else {
        return false;
    };
    let verb = line.split(|&b| b == b' ').next().unwrap_or(&[]);
    matches!(
        verb,
        b"/group" | b"/group-except" | b"/join" | b"/leave" | b"/members" | b"/push"
    )
}

/// Runs one request in the connection's order (on its [`Sequencer`]): a request whose
/// effect waits on Redis is waited for up to that effect; any other runs at once and its
/// reply may still wait.
async fn execute_in_order(state: &State, frame: &Frame, too_long_first: Option<u8>) -> Response {
    let request = Request::parse(frame, too_long_first, state);
    let barrier = matches!(
        &request,
        Request::Group { .. }
            | Request::Join { .. }
            | Request::Leave { .. }
            | Request::Members { .. }
    );
    let Some(cluster) = &state.cluster else {
        return execute(state, request);
    };
    match request {
        Request::Group { group, except, msg } => {
            state.metrics.incr(Metric::Commands);
            let sent = group_in_cluster(cluster, &state.registry, group.into_owned(), except, msg);
            let answers = sent.await;
            later(answers)
        }
        Request::Push {
            id,
            options,
            msg,
            target,
        } => {
            state.metrics.incr(Metric::Commands);
            clustered::push_ordered(state, cluster, id, options, &msg, target).await
        }
        request => match execute(state, request) {
            Response::Later(reply) if barrier => Response::Ready(reply.await),
            response => response,
        },
    }
}

/// A JSON reply that resolves later.
fn later(json: impl Future<Output = Json> + Send + 'static) -> Response {
    Response::Later(Box::pin(async move { Reply::Json(json.await) }))
}

/// The replies of one backend connection, in request order, whatever resolves when.
///
/// While every reply is ready (always, on a single node) [`Replies::push`] encodes it at
/// once and nothing is queued. Once one waits, later ones queue behind it (ready or not),
/// so their order holds while the door goes on reading and running the lines behind it;
/// [`Replies::poll_flush`] encodes the ready prefix as waiting ones resolve.
#[derive(Default)]
pub struct Replies {
    waiting: VecDeque<Response>,
    /// Cluster mode: runs this connection's requests in order behind one whose effect
    /// waits on Redis (started at the first such request).
    sequencer: Option<Sequencer>,
}

/// One connection's requests that must wait for an earlier one's effect, run in order by
/// one task.
///
/// # Why
/// A `/group` must look its members up in Redis before it can push to them; a plain push
/// sent right after it on the same connection is delivered at once. Without this, the
/// push would overtake the group message on a member's tab. So once a request whose
/// effect waits on Redis is read, it and every later line of the connection go to this
/// task, which runs them one after the other, waiting only for each such effect (a
/// `/group`'s pushes dispatched, a `/join` applied), never for replies; once it has
/// caught up, lines run at once again.
struct Sequencer {
    queue: tokio::sync::mpsc::UnboundedSender<Deferred>,
    /// Requests handed to the task and not yet run.
    behind: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

struct Deferred {
    frame: Frame,
    too_long_first: Option<u8>,
    response: tokio::sync::oneshot::Sender<Response>,
}

impl Sequencer {
    fn start(state: &std::sync::Arc<State>) -> Sequencer {
        let (queue, mut rx) = tokio::sync::mpsc::unbounded_channel::<Deferred>();
        let behind = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (state, left) = (state.clone(), behind.clone());
        // Ends when the connection's `Replies` (the only sender) is dropped.
        tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                let response = execute_in_order(&state, &d.frame, d.too_long_first).await;
                left.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                let _ = d.response.send(response);
            }
        });
        Sequencer { queue, behind }
    }

    fn busy(&self) -> bool {
        self.behind.load(std::sync::atomic::Ordering::Acquire) > 0
    }
}

impl Replies {
    /// Runs one line (as [`handle`]) and adds its response, keeping the effects of one
    /// connection's requests in order in cluster mode (see [`Sequencer`]). Doors call
    /// this for every line they pass to the service.
    pub fn run(
        &mut self,
        state: &std::sync::Arc<State>,
        frame: &Frame,
        too_long_first: Option<u8>,
        out: &mut BytesMut,
    ) {
        let in_order = state.cluster.is_some()
            && (self.sequencer.as_ref().is_some_and(Sequencer::busy) || waits_on_redis(frame));
        if !in_order {
            return self.push(handle(state, frame, too_long_first), out);
        }
        let sequencer = self
            .sequencer
            .get_or_insert_with(|| Sequencer::start(state));
        let (tx, rx) = tokio::sync::oneshot::channel();
        sequencer
            .behind
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let owned = match frame {
            Frame::Line(line) => Frame::Line(line.clone()),
            Frame::TooLong => Frame::TooLong,
        };
        let sent = sequencer.queue.send(Deferred {
            frame: owned,
            too_long_first,
            response: tx,
        });
        if sent.is_err() {
            // The task is gone (only if the runtime is shutting down): run it here.
            sequencer
                .behind
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            return self.push(handle(state, frame, too_long_first), out);
        }
        self.push(
            Response::Later(Box::pin(async move {
                match rx.await {
                    Ok(Response::Ready(reply)) => reply,
                    Ok(Response::Later(reply)) => reply.await,
                    Err(_) => Reply::error("shutting down"),
                }
            })),
            out,
        );
    }

    /// Adds the next request's response; a ready one with nothing ahead of it is
    /// encoded into `out` at once.
    pub fn push(&mut self, response: Response, out: &mut BytesMut) {
        match response {
            Response::Ready(reply) if self.waiting.is_empty() => reply.encode(out),
            other => self.waiting.push_back(other),
        }
    }

    /// Replies still queued (some waiting, or behind one that is).
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Encodes every reply that is ready and has no waiting one ahead of it. Ready when
    /// something was encoded (or nothing waits); pending while the head still waits.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>, out: &mut BytesMut) -> Poll<()> {
        let mut progressed = false;
        while let Some(head) = self.waiting.front_mut() {
            let reply = match head {
                Response::Ready(reply) => std::mem::replace(reply, Reply::Fail),
                Response::Later(fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(reply) => reply,
                    Poll::Pending => break,
                },
            };
            reply.encode(out);
            self.waiting.pop_front();
            progressed = true;
        }
        if progressed || self.waiting.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Waits until at least one queued reply is encoded (or none is queued).
    pub async fn flush(&mut self, out: &mut BytesMut) {
        std::future::poll_fn(|cx| self.poll_flush(cx, out)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn replies_keep_request_order_when_some_wait() {
        let mut replies = Replies::default();
        let mut out = BytesMut::new();
        replies.push(Response::Ready(Reply::Ok), &mut out);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        replies.push(
            Response::Later(Box::pin(async move {
                let _ = rx.await;
                Reply::Pong
            })),
            &mut out,
        );
        replies.push(Response::Ready(Reply::Fail), &mut out);
        replies.push(
            Response::Later(Box::pin(async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Reply::Authorized
            })),
            &mut out,
        );
        assert_eq!(&out[..], b"ok\n", "only the reply before the waiting one");
        assert_eq!(replies.len(), 3);
        // The head still waits: nothing moves, however long the others are ready.
        let waited = tokio::time::timeout(Duration::from_millis(20), replies.flush(&mut out)).await;
        assert!(waited.is_err());
        assert_eq!(&out[..], b"ok\n");
        tx.send(()).unwrap();
        while !replies.is_empty() {
            replies.flush(&mut out).await;
        }
        assert_eq!(&out[..], b"ok\npong\nfail\n{\"ok\":true}\n");
    }
}
