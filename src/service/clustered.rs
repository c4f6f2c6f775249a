//! `/push ID [ttl=MS] [ack=MS] LINE` in cluster mode (`docs/protocol.md`, "Cluster
//! mode"): the retry check is cluster-wide (a claim in Redis before the push runs, this
//! node's memory while Redis cannot answer); the push itself reaches every holder
//! through Redis. Without options and with the retry window off, the reply is the one
//! cluster mode always gave.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tracked::{duplicate, reply};
use super::{PushReply, PushResult, Reply, Response, count_into};
use crate::cluster::{Cluster, Remote, RemoteClaim};
use crate::dedupe::{Claim, Dedupe, First};
use crate::metrics::{Metric, Metrics};
use crate::registry::{Pushed, Registry};
use crate::state::State;
use crate::wire::command::PushOptions;
use crate::wire::{BadLine, Payload};

/// Runs one `/push` whose LINE is `msg` and whose target parsed as `target`.
pub(super) fn push(
    state: &State,
    cluster: &Arc<Cluster>,
    id: Cow<'_, str>,
    options: PushOptions,
    msg: &Payload,
    target: Result<Cow<'_, str>, BadLine>,
) -> Response {
    match prepare(state, cluster, id, options, msg, target) {
        Prepared::Done(response) => response,
        Prepared::Claim(claimed) => Response::Later(Box::pin(async move {
            match claimed.run().await {
                Response::Ready(reply) => reply,
                Response::Later(reply) => reply.await,
            }
        })),
    }
}

/// [`push`] for a connection's sequencer: awaited up to the claim and the start, so the
/// publish is queued before the connection's next line runs (its order holds).
pub(super) async fn push_ordered(
    state: &State,
    cluster: &Arc<Cluster>,
    id: Cow<'_, str>,
    options: PushOptions,
    msg: &Payload,
    target: Result<Cow<'_, str>, BadLine>,
) -> Response {
    match prepare(state, cluster, id, options, msg, target) {
        Prepared::Done(response) => response,
        Prepared::Claim(claimed) => claimed.run().await,
    }
}

/// A `/push` answered or started at once, or one that claims its retry key first.
enum Prepared {
    Done(Response),
    Claim(Claimed),
}

fn prepare(
    state: &State,
    cluster: &Arc<Cluster>,
    id: Cow<'_, str>,
    options: PushOptions,
    msg: &Payload,
    target: Result<Cow<'_, str>, BadLine>,
) -> Prepared {
    let id = id.into_owned();
    let uid = match target {
        Ok(uid) => uid.into_owned(),
        Err(bad) => {
            count_into(&state.metrics, &Err(bad.clone()));
            return Prepared::Done(ready(PushReply {
                error: Some(bad.to_string()),
                ..reply(PushResult::Malformed, Pushed::default(), &options, id)
            }));
        }
    };
    if uid.len() > state.config.max_uid_bytes {
        // No browser can bind it: offline by definition, not asked about.
        count_into(&state.metrics, &Ok(Default::default()));
        return Prepared::Done(ready(reply(
            PushResult::Offline,
            Pushed::default(),
            &options,
            id,
        )));
    }
    let job = Job {
        registry: state.registry.clone(),
        cluster: cluster.clone(),
        metrics: state.metrics.clone(),
        uid,
        msg: msg.clone(),
        queue_for: options
            .ttl
            .filter(|&ms| ms > 0)
            .map(|ms| Duration::from_millis(ms).min(state.config.max_queue_ttl)),
    };
    let window = state
        .config
        .dedupe_window
        .filter(|_| state.config.dedupe_max_entries > 0);
    let ack = Ack::of(state, &job, &options);
    let Some(window) = window else {
        // Started now, so it is published in line order with the lines around it.
        let sent = job.start();
        return Prepared::Done(Response::Later(Box::pin(async move {
            let (result, pushed) = sent.await;
            Reply::Json(super::Json::Push(
                Ack::answer(ack, result, pushed, &options, id).await,
            ))
        })));
    };
    Prepared::Claim(Claimed {
        job,
        id,
        options,
        window,
        dedupe: state.dedupe.clone(),
        ack,
    })
}

/// A `/push` that claims its retry key before it runs.
struct Claimed {
    job: Job,
    id: String,
    options: PushOptions,
    window: Duration,
    dedupe: Arc<Dedupe>,
    ack: Option<Ack>,
}

impl Claimed {
    /// Claims the key (one Redis round trip, bounded); a duplicate is answered at once,
    /// otherwise the push is started (delivered here, its publish queued in order) and the
    /// reply waits for the holders.
    async fn run(self) -> Response {
        let Claimed {
            job,
            id,
            options,
            window,
            dedupe,
            ack,
        } = self;
        let line = job.msg.as_bytes();
        let (key, ticket) = match job.cluster.claim(&id, line, window).await {
            RemoteClaim::Fresh(key) => (Some(key), None),
            RemoteClaim::Duplicate(first) => {
                job.metrics.incr(Metric::Duplicates);
                return Response::Ready(Reply::Json(super::Json::Push(duplicate(first, id))));
            }
            // Redis cannot tell: this node's memory decides (retries through this node
            // are still caught; through another, not).
            RemoteClaim::Down => match dedupe.claim(&id, line, Instant::now()) {
                Claim::Duplicate(first) => {
                    job.metrics.incr(Metric::Duplicates);
                    return Response::Ready(Reply::Json(super::Json::Push(duplicate(first, id))));
                }
                Claim::Fresh(ticket) => (None, Some(ticket)),
                Claim::Off => (None, None),
            },
        };
        let cluster = job.cluster.clone();
        let sent = job.start();
        Response::Later(Box::pin(async move {
            let (result, pushed) = sent.await;
            let first =
                matches!(result, PushResult::Delivered | PushResult::Queued).then_some(First {
                    queued: pushed.queued,
                    at: pushed.at,
                });
            if let Some(key) = key {
                cluster.settle(key, first).await;
            }
            if let Some(ticket) = ticket {
                dedupe.settle(ticket, first);
            }
            Reply::Json(super::Json::Push(
                Ack::answer(ack, result, pushed, &options, id).await,
            ))
        }))
    }
}

/// `ack=MS` in cluster mode: the tabs that acknowledge may be on any node, so each
/// records its ack in Redis (`cluster_history::acks_key`) and the accepting node looks
/// there until one has, or the wait is over.
struct Ack {
    cluster: Arc<Cluster>,
    uid: String,
    /// When the wait ends: `ack=` from when the line ran (not from when the door first
    /// polls the reply, which it does only for the reply at the head of its queue).
    deadline: tokio::time::Instant,
}

/// How often the accepting node looks for an ack.
const ACK_POLL: Duration = Duration::from_millis(5);

impl Ack {
    fn of(state: &State, job: &Job, options: &PushOptions) -> Option<Ack> {
        let wait = options
            .ack
            .map(|ms| Duration::from_millis(ms).min(state.config.max_ack_wait))?;
        Some(Ack {
            cluster: job.cluster.clone(),
            uid: job.uid.clone(),
            deadline: tokio::time::Instant::now() + wait,
        })
    }

    /// The reply; with `ack=`, once a tab acknowledged (`acked`, how many) or the wait
    /// ended (`not_acked`). Only a message with a place in the uid's history can be
    /// acknowledged.
    async fn answer(
        ack: Option<Ack>,
        result: PushResult,
        pushed: Pushed,
        options: &PushOptions,
        id: String,
    ) -> PushReply {
        let Some(ack) = ack else {
            return reply(result, pushed, options, id);
        };
        let accepted = matches!(result, PushResult::Delivered | PushResult::Queued);
        let Some(at) = pushed.at.filter(|_| accepted) else {
            let result = if accepted {
                PushResult::NotAcked
            } else {
                result
            };
            return reply(result, pushed, options, id).with_acks(0);
        };
        let deadline = ack.deadline;
        loop {
            let tabs = ack.cluster.acks(&ack.uid, at).await;
            if tabs > 0 {
                return reply(PushResult::Acked, pushed, options, id).with_acks(tabs);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return reply(PushResult::NotAcked, pushed, options, id).with_acks(0);
            }
            tokio::time::sleep(ACK_POLL.min(deadline - now)).await;
        }
    }
}

/// One push, owned, to run now or after its claim.
struct Job {
    registry: Registry,
    cluster: Arc<Cluster>,
    metrics: Arc<Metrics>,
    uid: String,
    msg: Payload,
    /// `ttl=`, bounded by `--max-queue-ttl-ms`.
    queue_for: Option<Duration>,
}

impl Job {
    /// Delivers here at once and queues the publish (in order) before it returns; the
    /// future waits (bounded) for the other holders' answers.
    fn start(self) -> impl Future<Output = (PushResult, Pushed)> + Send + 'static {
        let local = self.registry.push(&self.uid, &self.msg);
        let remote = self.cluster.push_kept(&self.uid, &self.msg, self.queue_for);
        let metrics = self.metrics;
        async move {
            let remote: Remote = remote.await;
            let total = local + remote.delivery;
            count_into(&metrics, &Ok(total));
            if remote.queued {
                metrics.incr(Metric::Queued);
            }
            let result = if total.ok() {
                PushResult::Delivered
            } else if remote.queued {
                PushResult::Queued
            } else if remote.unavailable {
                PushResult::Unavailable
            } else if remote.in_doubt || remote.missing > 0 {
                // In doubt: the publish left this node unanswered, so a holder may have
                // it; the counts are what did answer (here, at least).
                PushResult::Partial
            } else if total.refused > 0 {
                PushResult::Refused
            } else {
                PushResult::Offline
            };
            let pushed = Pushed {
                delivery: total,
                at: remote.at,
                queued: remote.queued,
            };
            (result, pushed)
        }
    }
}

fn ready(reply: PushReply) -> Response {
    Response::Ready(Reply::Json(super::Json::Push(reply)))
}
