//! One backend connection's replies, in request order, for every door; and the
//! [`Sequencer`] that runs a connection's requests in order behind one whose effect waits.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};

use super::{Reply, Response, handle};
use crate::nodes::{Answer, Pending};
use crate::state::State;
use crate::wire::Frame;

/// The replies of one backend connection, in request order, whatever resolves when.
///
/// While every reply is ready (always, on a single node) [`Replies::push`] encodes it at
/// once and nothing is queued. Once one waits, later ones queue behind it (ready or not),
/// so their order holds while the door goes on reading and running the lines behind it;
/// [`Replies::poll_flush`] encodes the ready prefix as waiting ones resolve.
#[derive(Default)]
pub struct Replies {
    waiting: VecDeque<Queued>,
    /// Runs this connection's requests in order behind one whose effect waits (started
    /// at the first [`Answer::Barrier`]; never on a single node).
    sequencer: Option<Sequencer>,
}

/// A reply in the queue.
enum Queued {
    Ready(Reply),
    Waiting(Pending<Reply>),
}

/// One connection's requests that must wait for an earlier one's effect, run in order by
/// one task.
///
/// # Why
/// A `/group` in cluster mode must look its members up in Redis before it can push to
/// them; a plain push sent right after it on the same connection is delivered at once.
/// Without this, the push would overtake the group message on a member's tab. So once a
/// request answers [`Answer::Barrier`], that barrier and every later line of the
/// connection go to this task, which runs them one after the other, waiting only for
/// each barrier's effect (a `/group`'s pushes dispatched, a `/join` applied), never for
/// replies; once it has caught up, lines run at once again.
struct Sequencer {
    queue: mpsc::UnboundedSender<Deferred>,
    /// Work handed to the task and not yet done.
    behind: Arc<AtomicUsize>,
}

struct Deferred {
    work: Work,
    response: oneshot::Sender<Response>,
}

enum Work {
    /// A line not run yet.
    Line {
        frame: Frame,
        too_long_first: Option<u8>,
    },
    /// A barrier a line already answered: its effect is waited for first.
    Barrier(Pending<Response>),
}

impl Sequencer {
    fn start(state: &Arc<State>) -> Sequencer {
        let (queue, mut rx) = mpsc::unbounded_channel::<Deferred>();
        let behind = Arc::new(AtomicUsize::new(0));
        let (state, left) = (state.clone(), behind.clone());
        // Ends when the connection's `Replies` (the only sender) is dropped.
        tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                let answer = match d.work {
                    Work::Line {
                        frame,
                        too_long_first,
                    } => handle(&state, &frame, too_long_first),
                    Work::Barrier(fut) => Answer::Barrier(fut),
                };
                let answer = answer.took_effect().await;
                left.fetch_sub(1, Ordering::AcqRel);
                let _ = d.response.send(answer);
            }
        });
        Sequencer { queue, behind }
    }

    fn busy(&self) -> bool {
        self.behind.load(Ordering::Acquire) > 0
    }

    /// Hands `work` to the task; its answer, or `work` back if the task is gone (only
    /// while the runtime shuts down).
    fn defer(&self, work: Work) -> Result<Response, Work> {
        let (tx, rx) = oneshot::channel();
        self.behind.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::error::SendError(d)) = self.queue.send(Deferred { work, response: tx }) {
            self.behind.fetch_sub(1, Ordering::AcqRel);
            return Err(d.work);
        }
        Ok(Answer::later(async move {
            match rx.await {
                Ok(answer) => answer.resolve().await,
                Err(_) => Reply::error("shutting down"),
            }
        }))
    }
}

impl Replies {
    /// Runs one line (as [`handle`]) and adds its response, keeping the effects of one
    /// connection's requests in order (see [`Sequencer`]). Doors call this for every
    /// line they pass to the service.
    pub fn run(
        &mut self,
        state: &Arc<State>,
        frame: &Frame,
        too_long_first: Option<u8>,
        out: &mut BytesMut,
    ) {
        if let Some(sequencer) = self.sequencer.as_ref().filter(|s| s.busy()) {
            let owned = match frame {
                Frame::Line(line) => Frame::Line(line.clone()),
                Frame::TooLong => Frame::TooLong,
            };
            let work = Work::Line {
                frame: owned,
                too_long_first,
            };
            let response = match sequencer.defer(work) {
                Ok(response) => response,
                Err(_) => handle(state, frame, too_long_first),
            };
            return self.push(response, out);
        }
        let response = match handle(state, frame, too_long_first) {
            Answer::Barrier(fut) => {
                let sequencer = self
                    .sequencer
                    .get_or_insert_with(|| Sequencer::start(state));
                match sequencer.defer(Work::Barrier(fut)) {
                    Ok(response) => response,
                    Err(Work::Barrier(fut)) => Answer::Barrier(fut),
                    Err(Work::Line { .. }) => Answer::Now(Reply::error("shutting down")),
                }
            }
            response => response,
        };
        self.push(response, out);
    }

    /// Adds the next request's response; a ready one with nothing ahead of it is
    /// encoded into `out` at once.
    pub fn push(&mut self, response: Response, out: &mut BytesMut) {
        match response {
            Answer::Now(reply) if self.waiting.is_empty() => reply.encode(out),
            Answer::Now(reply) => self.waiting.push_back(Queued::Ready(reply)),
            Answer::Later(fut) => self.waiting.push_back(Queued::Waiting(fut)),
            barrier @ Answer::Barrier(_) => self
                .waiting
                .push_back(Queued::Waiting(Box::pin(barrier.resolve()))),
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
                Queued::Ready(reply) => std::mem::replace(reply, Reply::Fail),
                Queued::Waiting(fut) => match fut.as_mut().poll(cx) {
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
        replies.push(Answer::Now(Reply::Ok), &mut out);
        let (tx, rx) = oneshot::channel::<()>();
        replies.push(
            Answer::later(async move {
                let _ = rx.await;
                Reply::Pong
            }),
            &mut out,
        );
        replies.push(Answer::Now(Reply::Fail), &mut out);
        replies.push(
            Answer::later(async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Reply::Authorized
            }),
            &mut out,
        );
        // A barrier pushed as it is (not through `run`) waits like a later reply.
        replies.push(
            Answer::barrier(async { Answer::later(async { Reply::Ok }) }),
            &mut out,
        );
        assert_eq!(&out[..], b"ok\n", "only the reply before the waiting one");
        assert_eq!(replies.len(), 4);
        // The head still waits: nothing moves, however long the others are ready.
        let waited = tokio::time::timeout(Duration::from_millis(20), replies.flush(&mut out)).await;
        assert!(waited.is_err());
        assert_eq!(&out[..], b"ok\n");
        tx.send(()).unwrap();
        while !replies.is_empty() {
            replies.flush(&mut out).await;
        }
        assert_eq!(&out[..], b"ok\npong\nfail\n{\"ok\":true}\nok\n");
    }
}
