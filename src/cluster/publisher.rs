//! The one ordered writer to Redis: every publish of this node, batched in one pipeline
//! per wake-up, a numbered push as its script, and what a batch that could not be sent
//! tells the replies waiting on it.

use super::asks::{Published, Unanswered, Waiting};
use super::history::scripts as ch;
use super::link::ERROR_REPEAT;
use super::{Cluster, now_ms};
use crate::history::HistoryLimits;
use crate::wire::envelope::Position;
use bytes::Bytes;
use fred::interfaces::{ClientLike, PubsubInterface};
use fred::types::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tracing::debug;
use tracing::warn;

/// Publishes sent in one pipeline at most.
pub(super) const PIPELINE_MAX: usize = 1024;

pub(super) struct Outgoing {
    pub(super) channel: String,
    pub(super) message: Bytes,
    /// Set for a push numbered in Redis: the script runs instead of a plain publish
    /// (`message` is then the payload).
    pub(super) numbered: Option<Numbered>,
    pub(super) done: Option<oneshot::Sender<Result<Published, Unanswered>>>,
    /// The request whose reply must still wait for it to be sent (see [`take_waited`]);
    /// `None`: nobody waits (a holder's answers), or a fan-out member, sent whenever it
    /// can be.
    pub(super) waits: Option<u64>,
}

/// A push to run through the numbering script.
pub(super) struct Numbered {
    /// The payload, shared with the local delivery's (one copy for a whole `/group`).
    pub(super) payload: Bytes,
    pub(super) slot: u16,
    pub(super) keys: [String; 3],
    pub(super) req: u64,
    /// `ttl=` in ms (0: none).
    pub(super) queue_ttl: u64,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("channel", &self.channel)
            .finish()
    }
}
impl Cluster {
    /// Hands `out` to the publisher task, or refuses it when the queue is full (logged
    /// once a minute at most, with the setting that sizes it).
    pub(super) fn enqueue(&self, out: Outgoing) -> Result<(), ()> {
        match self.publish.try_send(out) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                let now = tokio::time::Instant::now();
                let mut logged = self
                    .queue_full_logged
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if logged.is_none_or(|at| now.duration_since(at) >= ERROR_REPEAT) {
                    *logged = Some(now);
                    warn!(
                        "cluster publish queue full (--cluster-publish-queue): pushes answered from local delivery alone"
                    );
                }
                Err(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
        }
    }
}

/// Sends every publish in order, as many as are queued per pipeline. A numbered push
/// runs the numbering script (`EVALSHA`; the script's whole text once a Redis shard
/// answers that it does not have it, which loads it there), routed to the uid's slot.
///
/// Each publish's answer says whether it left: a receiver count, [`Unanswered::NotSent`]
/// when the Redis client refused it before writing it (see [`not_sent`]), otherwise
/// [`Unanswered::InDoubt`]. A publish whose reply stopped waiting before it was taken
/// here is dropped unsent (its push was answered as never sent: [`take_waited`]).
///
/// # Bounding the doubt
/// No push is written while Redis is down or not answering: every one taken then is
/// refused unsent ([`Unanswered::NotSent`]; see [`refuse_pushes`] for answers). A stalled Redis (stopped, paused, busy)
/// keeps its connections open and runs all it was sent once it resumes, so a publisher
/// that went on writing would have every push of the stall answered `fail` and then
/// delivered. Here only the batch in flight when it stalled is in doubt: the next waits
/// behind it, and once that batch goes unanswered for `--cluster-timeout-ms` the node
/// stops writing ([`Cluster::not_answering`]) until Redis answers a probe again.
pub(super) async fn publisher(cluster: Arc<Cluster>, mut queue: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(PIPELINE_MAX);
    // A publish is sent once or not at all: never held while Redis is down (fail fast)
    // nor written again after a reconnect (one attempt). fred 10 does not drop a
    // pipeline whose wait timed out, so one queued in the client as the link died may
    // still be written after the reconnect: its push was answered in doubt (`partial`).
    let once = fred::types::config::Options {
        max_attempts: Some(1),
        fail_fast: true,
        ..Default::default()
    };
    while queue.recv_many(&mut batch, PIPELINE_MAX).await > 0 {
        if !cluster.is_up() {
            refuse_pushes(&mut batch);
        }
        take_waited(&mut batch, &mut cluster.lock_waiting());
        if batch.is_empty() {
            continue;
        }
        let sha = cluster
            .push_sha
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // One value for the batch: each command's copy is a reference count.
        let (name, script) = match sha {
            Some(sha) => ("EVALSHA", Value::from(sha)),
            None => ("EVAL", Value::from_static_str(ch::push_script())),
        };
        let pipeline = fred::clients::Pipeline::from(cluster.cmd.with_options(&once));
        let mut queued = true;
        for out in &batch {
            let r: Result<(), _> = match &out.numbered {
                Some(n) => {
                    pipeline
                        .custom(
                            script_command(name, n.slot),
                            script_args(&cluster, out, n, script.clone()),
                        )
                        .await
                }
                None => {
                    pipeline
                        .spublish(out.channel.as_str(), out.message.clone())
                        .await
                }
            };
            queued &= r.is_ok();
        }
        // Nothing is written until `try_all`: a batch that could not be buffered never left.
        let mut results: Vec<Result<Value, fred::error::Error>> = if queued {
            pipeline.try_all().await
        } else {
            Vec::new()
        };
        // A shard without the script ran none of them: run those again, in order, with
        // the script's text (which loads it there).
        for (i, out) in batch.iter().enumerate() {
            let (Some(n), Some(Err(err))) = (&out.numbered, results.get(i)) else {
                continue;
            };
            if !err.details().contains("NOSCRIPT") {
                continue;
            }
            let args = script_args(&cluster, out, n, Value::from_static_str(ch::push_script()));
            results[i] = cluster
                .cmd
                .with_options(&once)
                .custom(script_command("EVAL", n.slot), args)
                .await;
        }
        if results.iter().any(|r| {
            r.as_ref()
                .is_err_and(|e| *e.kind() == fred::error::ErrorKind::Timeout)
        }) {
            cluster.timed_out("a publish");
        }
        // Fewer answers than publishes: fred failed the whole pipeline with one error.
        let whole = (results.len() != batch.len()).then(|| match results.as_slice() {
            _ if !queued => Unanswered::NotSent,
            [Err(err)] => not_sent(err),
            _ => Unanswered::InDoubt,
        });
        for (i, out) in batch.drain(..).enumerate() {
            let n = match (whole, results.get(i)) {
                (Some(why), _) => Err(why),
                (None, Some(Ok(Value::Array(items)))) if out.numbered.is_some() => {
                    parse_pushed(items).ok_or(Unanswered::InDoubt)
                }
                (None, Some(Ok(v))) if out.numbered.is_none() => v
                    .as_i64()
                    .map(|receivers| Published {
                        receivers,
                        ..Published::default()
                    })
                    .ok_or(Unanswered::InDoubt),
                (None, Some(Err(err))) => {
                    if out.numbered.is_some() {
                        debug!(%err, "numbering script failed");
                    }
                    Err(not_sent(err))
                }
                _ => Err(Unanswered::InDoubt),
            };
            if let Some(done) = out.done {
                let _ = done.send(n);
            }
        }
    }
}

/// Keeps in `batch` the publishes still to be sent, each marked as handed to the Redis
/// client ([`Waiting::sent`]) under the lock its reply takes when it stops waiting: one
/// whose reply has stopped waiting is dropped here, unsent, and that reply said so
/// (`unavailable`, never `partial`). Fan-out members and answers (`waits: None`) stay.
fn take_waited(batch: &mut Vec<Outgoing>, waiting: &mut HashMap<u64, Waiting>) {
    batch.retain_mut(|out| {
        let Some(req) = out.waits else {
            return true;
        };
        match waiting.get_mut(&req) {
            Some(w) => {
                w.sent = true;
                true
            }
            None => {
                if let Some(done) = out.done.take() {
                    let _ = done.send(Err(Unanswered::NotSent));
                }
                false
            }
        }
    });
}

/// Takes out of `batch` every push, fan-out member and request (each answered
/// [`Unanswered::NotSent`], unwritten), and keeps this node's answers to other origins:
/// nobody waits for those, one that comes late is ignored, and one held back would have
/// its origin answer `fail` for a push this node did deliver (a holder that still counts
/// Redis as not answering while the origin already sees it back).
fn refuse_pushes(batch: &mut Vec<Outgoing>) {
    batch.retain_mut(|out| match out.done.take() {
        Some(done) => {
            let _ = done.send(Err(Unanswered::NotSent));
            false
        }
        None => true,
    });
}

/// Whether fred's error says the command was never written (fred 10.1): its fail-fast
/// check refused it before it reached the client's router (not connected), or the router
/// had no connection to write it to, and with one attempt it is not kept for a retry.
/// Any other error (the link died after the write, a timeout, a reply from Redis) leaves
/// the publish in doubt.
fn not_sent(err: &fred::error::Error) -> Unanswered {
    use fred::error::ErrorKind;
    let refused = matches!(
        (err.kind(), err.details()),
        (ErrorKind::Canceled, "Connection closed unexpectedly.")
            | (ErrorKind::Unknown, "Failed to route command.")
    );
    if refused {
        Unanswered::NotSent
    } else {
        Unanswered::InDoubt
    }
}

/// The push script's answer: {receivers, seq (0: unnumbered), epoch, queued (0/1)}.
fn parse_pushed(items: &[Value]) -> Option<Published> {
    let receivers = items.first()?.as_i64()?;
    let seq = items.get(1).and_then(Value::as_u64).unwrap_or(0);
    let epoch = items
        .get(2)
        .and_then(|v| v.as_str().and_then(|e| u64::from_str_radix(&e, 16).ok()));
    let at = epoch
        .filter(|_| seq > 0)
        .map(|epoch| Position { epoch, seq });
    let queued = items.get(3).and_then(Value::as_i64) == Some(1);
    Some(Published {
        receivers,
        at,
        queued,
    })
}

/// `EVAL`/`EVALSHA`, routed to `slot` (its first argument is the script, not a key).
pub(super) fn script_command(name: &'static str, slot: u16) -> fred::types::CustomCommand {
    fred::types::CustomCommand::new_static(name, fred::types::ClusterHash::Custom(slot), false)
}

/// The numbering script's arguments for one push (see `cluster/history/scripts.rs`). Numbers go
/// as integers and constants as static strings, and `script` and the node are shared
/// values, so only the keys, the channel and the epoch are allocated per push: at a
/// `/group` of 57k members this runs 57k times on the origin.
fn script_args(cluster: &Cluster, out: &Outgoing, n: &Numbered, script: Value) -> Vec<Value> {
    let limits = cluster.history.unwrap_or(HistoryLimits {
        messages: 0,
        bytes: 0,
        age: Duration::ZERO,
        total_bytes: 0,
        keep: Duration::ZERO,
        max_uids: 0,
        stale_acks: 0,
    });
    let int = |v: u64| Value::Integer(i64::try_from(v).unwrap_or(i64::MAX));
    vec![
        script,
        Value::from_static_str("3"),
        n.keys[0].as_str().into(),
        n.keys[1].as_str().into(),
        n.keys[2].as_str().into(),
        out.channel.as_str().into(),
        cluster.node_arg.clone(),
        int(n.req),
        Value::Bytes(out.message.clone()),
        int(now_ms()),
        int(limits.messages as u64),
        int(limits.bytes as u64),
        int(limits.age.as_millis() as u64),
        int(n.queue_ttl),
        ch::epoch_text(ch::new_epoch()).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the publisher sends of a batch taken after some replies stopped waiting: a
    /// single push whose reply is gone is dropped (and told so), one still waited for is
    /// marked sent (its reply will say in doubt, not unavailable), a fan-out member is
    /// sent either way.
    #[tokio::test]
    async fn publishes_whose_reply_is_gone_are_dropped_and_the_rest_marked_sent() {
        let out = |name: &str, waits| {
            let (done, answer) = oneshot::channel();
            let out = Outgoing {
                channel: name.to_owned(),
                message: Bytes::new(),
                numbered: None,
                done: Some(done),
                waits,
            };
            (out, answer)
        };
        let mut waiting = HashMap::new();
        waiting.insert(2, Waiting::default());
        let (gone, gone_answer) = out("reply gone", Some(1));
        let (member, _) = out("fan-out member", None);
        let (in_time, _) = out("in time", Some(2));
        let mut batch = vec![gone, member, in_time];
        take_waited(&mut batch, &mut waiting);
        let kept: Vec<_> = batch.iter().map(|o| o.channel.as_str()).collect();
        assert_eq!(kept, ["fan-out member", "in time"]);
        assert!(matches!(gone_answer.await, Ok(Err(Unanswered::NotSent))));
        assert!(waiting[&2].sent);
        // Redis not answering: pushes and members are refused, answers still go.
        let (refused, refused_answer) = out("refused", Some(2));
        let (member, member_answer) = out("member", None);
        let answer = Outgoing {
            channel: "answer".to_owned(),
            message: Bytes::new(),
            numbered: None,
            done: None,
            waits: None,
        };
        let mut batch = vec![refused, member, answer];
        refuse_pushes(&mut batch);
        let kept: Vec<_> = batch.iter().map(|o| o.channel.as_str()).collect();
        assert_eq!(kept, ["answer"]);
        assert!(matches!(refused_answer.await, Ok(Err(Unanswered::NotSent))));
        assert!(matches!(member_answer.await, Ok(Err(Unanswered::NotSent))));
    }
}
