//! The HTTP door's response bodies: a whole one (every answer but a long `POST /push`
//! reply), or the replies of a `POST /push` body produced as the client takes them.
//!
//! # Why replies stream
//! A reply line can be much longer than the line it answers (a three-byte bad line gets a
//! 45-byte error), so a 4 MiB body built its reply whole took 61 MiB, held for as long as
//! the client took to read it. Now the body's lines run a chunk at a time, when hyper asks
//! for more, which it does only when its write buffer has room: a client that reads
//! slowly slows the lines down, and what waits for it is one chunk, not the reply. A
//! client that stops reading for the request timeout loses the connection
//! (`http_io.rs`), and the lines after the replies it got are not run.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Frame as BodyFrame, SizeHint};

use crate::service::{Replies, Reply, Response};
use crate::state::State;
use crate::wire::command::auth_secret;
use crate::wire::{Frame, LineFramer};

/// Reply bytes encoded before they are handed to hyper as one chunk.
const CHUNK: usize = 16 * 1024;

/// Replies queued behind one still waiting (cluster mode), as on the push port: past it,
/// no more lines run until the head resolves.
const MAX_QUEUED_REPLIES: usize = 1024;

/// A response body.
pub(crate) enum Body {
    /// All of it (`None`: empty, or already sent).
    Whole(Option<Bytes>),
    /// `POST /push` replies, made as they are sent.
    Replies(Box<PushReplies>),
}

impl Body {
    /// Exactly `bytes`.
    pub(crate) fn whole(bytes: Bytes) -> Body {
        Body::Whole(Some(bytes).filter(|b| !b.is_empty()))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Infallible>>> {
        let next = match self.get_mut() {
            Body::Whole(bytes) => Poll::Ready(bytes.take()),
            Body::Replies(replies) => replies.poll_chunk(cx),
        };
        next.map(|chunk| chunk.map(|b| Ok(BodyFrame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Body::Replies(_) => SizeHint::default(),
        }
    }
}

/// The lines of one `POST /push` body not yet run, and their replies not yet sent.
pub(crate) struct PushReplies {
    ctx: Arc<State>,
    framer: LineFramer,
    /// The body from the first line not yet run.
    lines: BytesMut,
    /// Every line has run (the unterminated tail included).
    ran: bool,
    replies: Replies,
    out: BytesMut,
}

impl PushReplies {
    /// Runs the first lines of `body`: if every line ran and its reply is ready within a
    /// chunk, the whole reply (the usual case: one request, a few lines); else a body that
    /// runs the rest as the client reads.
    pub(crate) async fn start(body: Bytes, ctx: &Arc<State>) -> Body {
        let mut this = PushReplies {
            framer: LineFramer::new(ctx.config.max_line_bytes),
            lines: BytesMut::from(body),
            ran: false,
            replies: Replies::default(),
            out: BytesMut::new(),
            ctx: ctx.clone(),
        };
        this.run();
        if !this.ran {
            return Body::Replies(Box::new(this));
        }
        // Every line ran: what waits is bounded by the cluster timeout.
        while !this.replies.is_empty() {
            this.replies.flush(&mut this.out).await;
        }
        Body::whole(this.out.freeze())
    }

    /// Runs lines until a chunk of replies is encoded, too many wait, or none is left.
    fn run(&mut self) {
        while !self.ran && self.out.len() < CHUNK && self.replies.len() < MAX_QUEUED_REPLIES {
            let frame = match self.framer.next_frame(&mut self.lines) {
                Some(frame) => frame,
                None => {
                    self.ran = true;
                    match self.framer.finish(&mut self.lines) {
                        Some(frame) => frame,
                        None => return,
                    }
                }
            };
            let first = self.framer.too_long_first_byte();
            // `/auth` lines answer `{"ok":true}`: the request is already authorized.
            match &frame {
                Frame::Line(line) if auth_secret(line).is_some() => self
                    .replies
                    .push(Response::Now(Reply::Authorized), &mut self.out),
                frame => self.replies.run(&self.ctx, frame, first, &mut self.out),
            }
        }
    }

    /// The next chunk of replies, `None` once all are sent.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            self.run();
            if !self.replies.is_empty() {
                // Encodes the ready ones ahead of the first that waits.
                let _ = self.replies.poll_flush(cx, &mut self.out);
            }
            if !self.out.is_empty() {
                return Poll::Ready(Some(self.out.split().freeze()));
            }
            if self.replies.is_empty() {
                if self.ran {
                    return Poll::Ready(None);
                }
            } else if self.ran || self.replies.len() >= MAX_QUEUED_REPLIES {
                // The head waits (its waker is set); nothing else may run.
                return Poll::Pending;
            }
        }
    }
}
