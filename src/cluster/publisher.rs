//! The one ordered writer to Redis: every publish of this node, batched in one pipeline
//! per wake-up, a numbered push as its script, and what a batch that could not be sent
//! tells the replies waiting on it.

use super::asks::{Published, Unanswered, Waiting};
use super::envelope::ANSWER_SEP;
use super::history::scripts as ch;
use super::link::ERROR_REPEAT;
use super::{Cluster, now_ms};
use crate::history::HistoryLimits;
use crate::wire::envelope::Position;
use bytes::BufMut;
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
    /// A batch of answers without bodies (`listener::Answers`): joined in one publish
    /// with the others to the same origin found in the same pipeline.
    pub(super) joins: bool,
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
        let commands = commands(&batch, cluster.cmd.is_clustered());
        let mut queued = true;
        for command in &commands {
            let r: Result<(), _> = match command {
                Command::Script { slot, pushes } => {
                    pipeline
                        .custom(
                            script_command(name, *slot),
                            script_args(&cluster, &batch, pushes, script.clone()),
                        )
                        .await
                }
                Command::Plain(parts) => {
                    let out = &batch[parts[0]];
                    pipeline
                        .spublish(out.channel.as_str(), joined(&batch, parts))
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
        for (i, command) in commands.iter().enumerate() {
            let (Command::Script { slot, pushes }, Some(Err(err))) = (command, results.get(i))
            else {
                continue;
            };
            if !err.details().contains("NOSCRIPT") {
                continue;
            }
            let text = Value::from_static_str(ch::push_script());
            let args = script_args(&cluster, &batch, pushes, text);
            results[i] = cluster
                .cmd
                .with_options(&once)
                .custom(script_command("EVAL", *slot), args)
                .await;
        }
        if results.iter().any(|r| {
            r.as_ref()
                .is_err_and(|e| *e.kind() == fred::error::ErrorKind::Timeout)
        }) {
            cluster.timed_out("a publish");
        }
        // Fewer answers than commands: fred failed the whole pipeline with one error.
        let whole = (results.len() != commands.len()).then(|| match results.as_slice() {
            _ if !queued => Unanswered::NotSent,
            [Err(err)] => not_sent(err),
            _ => Unanswered::InDoubt,
        });
        let mut answers: Vec<Option<Result<Published, Unanswered>>> =
            (0..batch.len()).map(|_| None).collect();
        for (c, command) in commands.iter().enumerate() {
            let result = match whole {
                Some(why) => Err(why),
                None => results.get(c).ok_or(Unanswered::InDoubt),
            };
            match command {
                Command::Plain(parts) => {
                    for &i in parts {
                        answers[i] = Some(published(result, None));
                    }
                }
                Command::Script { pushes, .. } => {
                    for (k, &i) in pushes.iter().enumerate() {
                        answers[i] = Some(published(result, Some(k)));
                    }
                }
            }
        }
        for (out, answer) in batch.drain(..).zip(answers) {
            if let Some(done) = out.done {
                let _ = done.send(answer.unwrap_or(Err(Unanswered::InDoubt)));
            }
        }
    }
}

/// What one publish's command answered: a plain publish's receiver count (`push`:
/// `None`), or the `push`-th push's part of a script call's answer.
fn published(
    result: Result<&Result<Value, fred::error::Error>, Unanswered>,
    push: Option<usize>,
) -> Result<Published, Unanswered> {
    match (result?, push) {
        (Ok(Value::Array(items)), Some(k)) => items
            .get(k.saturating_mul(ch::PUSH_ANSWER)..)
            .and_then(parse_pushed)
            .ok_or(Unanswered::InDoubt),
        (Ok(v), None) => v
            .as_i64()
            .map(|receivers| Published {
                receivers,
                ..Published::default()
            })
            .ok_or(Unanswered::InDoubt),
        (Err(err), push) => {
            if push.is_some() {
                debug!(%err, "numbering script failed");
            }
            Err(not_sent(err))
        }
        _ => Err(Unanswered::InDoubt),
    }
}

/// Numbered pushes run in one script call at most (its keys and arguments grow with it).
pub(super) const SCRIPT_MAX: usize = 64;

/// One command of a publish pipeline.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    /// A plain publish of the batch's publish at this index, or of the answer batches
    /// at these indices joined (see [`joined`]).
    Plain(Vec<usize>),
    /// The numbering script for these pushes of the batch, in order, all of one hash
    /// slot.
    Script { slot: u16, pushes: Vec<usize> },
}

/// Bytes of answers joined in one publish at most (a holder's batches to one origin).
pub(super) const JOIN_MAX: usize = 32 * 1024;

/// The commands that send `batch`: each plain publish alone, but the answer batches to
/// one origin joined in one publish (up to [`JOIN_MAX`] bytes), and the numbered pushes
/// between two plain publishes in one script call per hash slot (one for them all on a
/// single Redis, whose scripts may touch any key), [`SCRIPT_MAX`] at most per call.
/// A uid's pushes keep their order: they share a slot, so they go in one call in batch
/// order, or in calls sent one after another on the same connection; and a plain
/// publish (a kick, a history-less push) is never moved across a numbered one. Answers
/// are not ordered with anything (the origin matches each to its request), so they are
/// joined wherever they fall.
fn commands(batch: &[Outgoing], clustered: bool) -> Vec<Command> {
    let mut commands = Vec::new();
    // The script calls of the numbered pushes since the last plain publish, by slot.
    let mut run: Vec<Command> = Vec::new();
    // Where in `commands` the joined answers are, and their bytes so far.
    let mut joins: Vec<(usize, usize)> = Vec::new();
    for (i, out) in batch.iter().enumerate() {
        let Some(n) = &out.numbered else {
            if out.joins {
                let open = joins.iter_mut().find(|(at, bytes)| {
                    matches!(&commands[*at], Command::Plain(parts)
                        if batch[parts[0]].channel == out.channel
                            && *bytes + 1 + out.message.len() <= JOIN_MAX)
                });
                if let Some((at, bytes)) = open {
                    *bytes += 1 + out.message.len();
                    if let Command::Plain(parts) = &mut commands[*at] {
                        parts.push(i);
                    }
                    continue;
                }
                joins.retain(|(at, _)| {
                    !matches!(&commands[*at], Command::Plain(parts) if batch[parts[0]].channel == out.channel)
                });
                joins.push((commands.len(), out.message.len()));
                commands.push(Command::Plain(vec![i]));
                continue;
            }
            commands.append(&mut run);
            commands.push(Command::Plain(vec![i]));
            continue;
        };
        let slot = if clustered { n.slot } else { 0 };
        let open = run.iter_mut().rev().find_map(|c| match c {
            Command::Script { slot: s, pushes } if *s == slot => Some(pushes),
            _ => None,
        });
        match open {
            Some(pushes) if pushes.len() < SCRIPT_MAX => pushes.push(i),
            _ => run.push(Command::Script {
                slot,
                pushes: vec![i],
            }),
        }
    }
    commands.append(&mut run);
    commands
}

/// The message of a plain publish: one publish's, or answer batches joined by
/// [`ANSWER_SEP`] (the origin reads a batch of batches as one batch).
fn joined(batch: &[Outgoing], parts: &[usize]) -> Bytes {
    if let [one] = parts {
        return batch[*one].message.clone();
    }
    let len = parts.iter().map(|&i| batch[i].message.len() + 1).sum();
    let mut message = bytes::BytesMut::with_capacity(len);
    for (k, &i) in parts.iter().enumerate() {
        if k > 0 {
            message.put_u8(ANSWER_SEP);
        }
        message.put_slice(&batch[i].message);
    }
    message.freeze()
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

/// The numbering script's arguments for `pushes` of `batch` (see
/// `cluster/history/scripts.rs`, `PUSH`). Numbers go as integers, and `script` and the
/// node are shared values, so only the keys, the channel and the epoch are allocated per
/// push, and the limits go once per call.
fn script_args(
    cluster: &Cluster,
    batch: &[Outgoing],
    pushes: &[usize],
    script: Value,
) -> Vec<Value> {
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
    let mut args = Vec::with_capacity(7 + pushes.len() * (3 + ch::PUSH_ARGS));
    args.push(script);
    args.push(Value::Integer(
        i64::try_from(pushes.len() * 3).unwrap_or(i64::MAX),
    ));
    let numbered = || {
        pushes.iter().filter_map(|&i| {
            batch
                .get(i)
                .and_then(|out| Some((out, out.numbered.as_ref()?)))
        })
    };
    for (_, n) in numbered() {
        args.extend(n.keys.iter().map(|k| Value::from(k.as_str())));
    }
    args.extend([
        cluster.node_arg.clone(),
        int(now_ms()),
        int(limits.messages as u64),
        int(limits.bytes as u64),
        int(limits.age.as_millis() as u64),
    ]);
    for (out, n) in numbered() {
        args.extend([
            out.channel.as_str().into(),
            int(n.req),
            Value::Bytes(out.message.clone()),
            int(n.queue_ttl),
            ch::epoch_text(ch::new_epoch()).into(),
        ]);
    }
    args
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
                joins: false,
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
            joins: true,
        };
        let mut batch = vec![refused, member, answer];
        refuse_pushes(&mut batch);
        let kept: Vec<_> = batch.iter().map(|o| o.channel.as_str()).collect();
        assert_eq!(kept, ["answer"]);
        assert!(matches!(refused_answer.await, Ok(Err(Unanswered::NotSent))));
        assert!(matches!(member_answer.await, Ok(Err(Unanswered::NotSent))));
    }
    /// How a batch becomes commands: numbered pushes share one script call per slot
    /// (one in all on a single Redis), in batch order, never moved across a plain
    /// publish; answer batches to one origin are joined wherever they fall, within
    /// their byte bound; a full call starts another.
    #[test]
    fn numbered_pushes_share_a_call_per_slot_and_answers_join() {
        let numbered = |slot| Outgoing {
            channel: format!("u{slot}"),
            message: Bytes::from_static(b"x"),
            numbered: Some(Numbered {
                payload: Bytes::from_static(b"x"),
                slot,
                keys: Default::default(),
                req: 0,
                queue_ttl: 0,
            }),
            done: None,
            waits: None,
            joins: false,
        };
        let plain = |channel: &str, message: &'static [u8], joins| Outgoing {
            channel: channel.to_owned(),
            message: Bytes::from_static(message),
            numbered: None,
            done: None,
            waits: None,
            joins,
        };
        let batch = vec![
            numbered(1),                  // 0
            plain("r:a", b"1 1 0", true), // 1
            numbered(2),                  // 2
            numbered(1),                  // 3
            plain("u1", b"kick", false),  // 4
            numbered(1),                  // 5
            plain("r:b", b"2 0 0", true), // 6
            plain("r:a", b"3 1 0", true), // 7
        ];
        let script = |slot, pushes: &[usize]| Command::Script {
            slot,
            pushes: pushes.to_vec(),
        };
        assert_eq!(
            commands(&batch, true),
            vec![
                Command::Plain(vec![1, 7]),
                script(1, &[0, 3]),
                script(2, &[2]),
                Command::Plain(vec![4]),
                Command::Plain(vec![6]),
                script(1, &[5]),
            ]
        );
        assert_eq!(
            commands(&batch, false),
            vec![
                Command::Plain(vec![1, 7]),
                script(0, &[0, 2, 3]),
                Command::Plain(vec![4]),
                Command::Plain(vec![6]),
                script(0, &[5]),
            ]
        );
        assert_eq!(joined(&batch, &[1, 7]), Bytes::from_static(b"1 1 0;3 1 0"));
        assert_eq!(
            super::super::envelope::parse_answers(&joined(&batch, &[1, 7])).len(),
            2
        );
        // Bounds: SCRIPT_MAX pushes per call, JOIN_MAX bytes per joined publish.
        let many: Vec<_> = (0..SCRIPT_MAX + 1).map(|_| numbered(3)).collect();
        let calls = commands(&many, true);
        assert_eq!(calls.len(), 2);
        assert!(matches!(&calls[1], Command::Script { pushes, .. } if pushes == &[SCRIPT_MAX]));
        static BIG: [u8; JOIN_MAX / 2 - 1] = [b'1'; JOIN_MAX / 2 - 1];
        let big: Vec<_> = (0..3).map(|_| plain("r:a", &BIG, true)).collect();
        assert_eq!(
            commands(&big, false),
            vec![Command::Plain(vec![0, 1]), Command::Plain(vec![2])]
        );
    }
}
