//! The bounded outgoing queue of one WebSocket connection.
//!
//! The push path only ever calls [`Outbox::offer`], which never waits: a browser that stops
//! reading cannot slow a push reply, another browser, or the daemon. When the queue is full
//! the connection is marked for closing (1013 "send queue full"), its queue is freed, and the
//! message counts as refused. This is sshx's policy (disconnect a laggard, with a reason)
//! rather than mini-redis's (skip it silently), because a silent gap in a user's pushes is
//! worse than a reconnect.
//!
//! Why not a tokio `mpsc` channel: an idle connection should hold almost nothing, and a
//! channel allocates a block of slots up front, while an empty `VecDeque` allocates nothing.
//! The same state also carries the close notice (eviction now, kick later), so one wake-up
//! source serves both.
//!
//! # Writing through
//! A fan-out (broadcast, a group, a list of uids) does not wake each recipient's task:
//! [`Outbox::offer_through`] writes the frame to an idle socket itself, without waiting,
//! under this queue's lock: a plain one, or a TLS 1.3 session's sending half, which seals
//! the frame into records with the key and sequence the task also uses (`tls.rs`,
//! "Writing through"). A wake-up costs more than the `send()` it leads to
//! (tokio's scheduling, the task's `select!`, two more lock round trips), and a fan-out
//! pays it once per recipient; writing through makes the fan-out loop the kernel's send
//! loop (`docs/benchmarks.md`, "Writing through"). A push to one uid still queues
//! ([`Outbox::offer`]): a backend pipelining to that uid then fills the queue while the
//! task wakes, and the task writes the lot in one `writev`, which writing each line
//! through would lose (measured: 1.29x the CPU per pipelined push).
//!
//! The rule that keeps frames whole and in order: an offer writes only while the queue is
//! empty and the writer task holds nothing (it is not `busy`); whatever the socket does not
//! take at once (all of it, or the rest of a frame) is queued, and the task finishes it,
//! from the byte where the offer stopped. Over TLS, "the byte where it stopped" is in the
//! plaintext: a frame sealed whole counts as written in full even while part of its last
//! record waits in the session's own queue, which the task sends before anything else.
//! TLS 1.2 sessions (rustls seals their records) and event streams attach no socket and
//! always go through the task.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::wire::envelope::{RAW, UNNUMBERED};
use crate::wire::{CloseNotice, Payload};

/// A connection's socket as an offer may write to it: the browser side provides it
/// (`frames.rs`), so this queue knows nothing of framing.
pub trait Socket: Send + Sync + Debug {
    /// Writes `msg`'s frame, from byte `sent` of it on, as far as the socket takes it
    /// without waiting. `None` once the whole frame is written; otherwise how many of its
    /// bytes are (0 if the socket took nothing).
    fn try_send(&self, msg: &Payload, enveloped: bool, sent: usize) -> io::Result<Option<usize>>;
}

/// How much one connection may have waiting before it counts as stuck.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Messages waiting.
    pub depth: usize,
    /// Bytes waiting. A single message larger than this is still accepted into an empty
    /// queue, so the line limit, not this one, decides what can be pushed at all.
    pub bytes: usize,
}

/// What happened to an offered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued for writing.
    Queued,
    /// Written to the socket in full by the offer itself (see "Writing through").
    Written,
    /// The queue was full: the connection is now closing and did not take the message.
    Full,
    /// The connection was already closing.
    Closed,
}

/// One connection's queue plus the wake-up its writer task waits on.
#[derive(Debug)]
pub struct Outbox {
    /// A std mutex: every critical section is a few pointer moves, or one non-blocking
    /// `send()`, and none awaits.
    state: Mutex<State>,
    wake: Notify,
    limits: QueueLimits,
    /// Protocol v1: the highest sequence written to this connection; acks count up to here.
    written: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Payload>,
    bytes: usize,
    closing: Option<CloseNotice>,
    /// The socket offers may write through to, from [`Outbox::attach`] to
    /// [`Outbox::detach`].
    socket: Option<Arc<dyn Socket>>,
    /// Protocol v1 framing for writes through.
    enveloped: bool,
    /// The writer task holds frames it has not finished writing (or is about to write a
    /// control frame): offers queue, whatever the queue holds.
    busy: bool,
    /// Bytes of the queue's first message an offer already wrote.
    head_sent: usize,
}

impl Outbox {
    /// An empty queue with the given limits.
    pub fn new(limits: QueueLimits) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            limits,
            written: AtomicU64::new(0),
        }
    }

    /// Lets offers write through to `socket` (a plain TCP connection, or a TLS 1.3
    /// session's sending half, once bound).
    pub fn attach(&self, socket: Arc<dyn Socket>, enveloped: bool) {
        let mut st = self.lock();
        st.socket = Some(socket);
        st.enveloped = enveloped;
    }

    /// Ends writing through; the writer task owns the socket from here on, for its
    /// closing handshake. Returns the message an offer left half-written, and how many
    /// of its frame's bytes are out: the close frame must come after the rest of it.
    pub fn detach(&self) -> Option<(Payload, usize)> {
        let mut st = self.lock();
        st.socket = None;
        st.busy = true;
        let sent = std::mem::take(&mut st.head_sent);
        if sent == 0 {
            return None;
        }
        st.queue.front().map(|m| (m.clone(), sent))
    }

    /// Queues `msg` (a refcount bump, not a copy) unless the connection is closing or full.
    pub fn offer(&self, msg: &Payload) -> Offer {
        self.offer_as(msg, false)
    }

    /// Like [`Outbox::offer`], but writes `msg` to the socket itself if the connection is
    /// idle (see "Writing through"): for a fan-out's one frame per recipient.
    pub fn offer_through(&self, msg: &Payload) -> Offer {
        self.offer_as(msg, true)
    }

    fn offer_as(&self, msg: &Payload, through: bool) -> Offer {
        let mut st = self.lock();
        if st.closing.is_some() {
            return Offer::Closed;
        }
        let len = msg.len();
        let full = st.queue.len() >= self.limits.depth
            || (!st.queue.is_empty() && st.bytes + len > self.limits.bytes);
        if full {
            self.close_locked(st, CloseNotice::QUEUE_FULL);
            return Offer::Full;
        }
        if through
            && st.queue.is_empty()
            && !st.busy
            && let Some(socket) = &st.socket
        {
            match socket.try_send(msg, st.enveloped, 0) {
                Ok(None) => {
                    let enveloped = st.enveloped;
                    drop(st);
                    if enveloped {
                        self.note_written(std::slice::from_ref(msg));
                    }
                    return Offer::Written;
                }
                Ok(Some(sent)) => st.head_sent = sent,
                // The writer meets the same error on its next write and ends.
                Err(_) => {}
            }
        }
        st.queue.push_back(msg.clone());
        st.bytes += len;
        let first = st.queue.len() == 1;
        drop(st);
        // The writer drains everything per wake-up, so only the first message needs one.
        if first {
            self.wake.notify_one();
        }
        Offer::Queued
    }

    /// Queues what a fresh connection must get before anything live (its status frame,
    /// its replay, the offline queue), whatever the limits: they are bounded by the
    /// history's, which the configuration keeps within the queue's.
    pub fn preload(&self, items: impl IntoIterator<Item = Payload>) {
        let mut st = self.lock();
        for item in items {
            st.bytes += item.len();
            st.queue.push_back(item);
        }
        let any = !st.queue.is_empty();
        drop(st);
        if any {
            self.wake.notify_one();
        }
    }

    /// Marks the connection for closing with `notice`; queued messages are dropped.
    /// Returns false if it was already closing.
    pub fn close(&self, notice: CloseNotice) -> bool {
        let st = self.lock();
        if st.closing.is_some() {
            return false;
        }
        self.close_locked(st, notice);
        true
    }

    /// Marks the connection closing with `notice`, frees its queue (but for a message an
    /// offer left half-written: see [`Outbox::detach`]), wakes the writer.
    fn close_locked(&self, mut st: MutexGuard<'_, State>, notice: CloseNotice) {
        if st.head_sent > 0 {
            st.queue.truncate(1);
            st.bytes = st.queue.front().map_or(0, Payload::len);
        } else {
            st.queue = VecDeque::new();
            st.bytes = 0;
        }
        st.closing = Some(notice);
        drop(st);
        self.wake.notify_one();
    }

    /// Waits until there is something to do: moves every queued message into `batch` and
    /// returns how many bytes of the first one's frame an offer already wrote; or returns
    /// the close notice. The writer holds the socket until it comes back for more and
    /// finds the queue empty. Cancel-safe: nothing is taken before the final poll.
    pub async fn recv(&self, batch: &mut Vec<Payload>) -> Result<usize, CloseNotice> {
        loop {
            if let Some(sent) = self.try_recv(batch)? {
                return Ok(sent);
            }
            self.wake.notified().await;
        }
    }

    /// Like [`Outbox::recv`] without waiting; `Ok(None)` when the queue is empty, which
    /// also gives the socket back to offers.
    pub fn try_recv(&self, batch: &mut Vec<Payload>) -> Result<Option<usize>, CloseNotice> {
        let mut st = self.lock();
        if let Some(notice) = &st.closing {
            return Err(notice.clone());
        }
        if st.queue.is_empty() {
            st.busy = false;
            return Ok(None);
        }
        Ok(Some(Self::take(&mut st, batch)))
    }

    /// Takes the socket for a frame of the writer's own (a ping, a pong): offers queue
    /// until its next [`Outbox::recv`]. Moves what is queued into `batch` first, as
    /// [`Outbox::recv`] does, so that goes out before it.
    pub fn claim(&self, batch: &mut Vec<Payload>) -> Result<usize, CloseNotice> {
        let mut st = self.lock();
        if let Some(notice) = &st.closing {
            return Err(notice.clone());
        }
        st.busy = true;
        Ok(Self::take(&mut st, batch))
    }

    fn take(st: &mut State, batch: &mut Vec<Payload>) -> usize {
        st.busy = true;
        batch.extend(st.queue.drain(..));
        st.bytes = 0;
        if st.queue.capacity() > 64 {
            // Give back a burst's memory; idle connections should hold nothing.
            st.queue = VecDeque::new();
        }
        std::mem::take(&mut st.head_sent)
    }

    /// Notes what was just written, so acks are believed only that far (protocol v1).
    pub fn note_written(&self, batch: &[Payload]) {
        if let Some(max) = batch
            .iter()
            .map(Payload::seq)
            .filter(|&s| s != RAW && s != UNNUMBERED)
            .max()
        {
            self.written.fetch_max(max, Relaxed);
        }
    }

    /// The highest sequence written so far (0 for none).
    pub fn written(&self) -> u64 {
        self.written.load(Relaxed)
    }

    /// Forgets what was written: a greeted page rebound to another uid (protocol v1) is
    /// believed only as far as that uid's messages go.
    pub fn reset_written(&self) {
        self.written.store(0, Relaxed);
    }

    /// Resolves once the connection is marked for closing.
    pub async fn closed(&self) -> CloseNotice {
        loop {
            if let Some(notice) = &self.lock().closing {
                return notice.clone();
            }
            self.wake.notified().await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent (every
        // update is a single push/drain), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_closes_and_refuses() {
        let outbox = Outbox::new(QueueLimits {
            depth: 2,
            bytes: 1 << 20,
        });
        let m = Payload::from_static("x");
        assert_eq!(outbox.offer(&m), Offer::Queued);
        assert_eq!(outbox.offer(&m), Offer::Queued);
        assert_eq!(outbox.offer(&m), Offer::Full);
        assert_eq!(outbox.offer(&m), Offer::Closed);
        let mut batch = Vec::new();
        assert_eq!(outbox.try_recv(&mut batch), Err(CloseNotice::QUEUE_FULL));
        assert!(batch.is_empty());
    }

    #[test]
    fn byte_limit_allows_one_big_message() {
        let outbox = Outbox::new(QueueLimits {
            depth: 10,
            bytes: 4,
        });
        let big = Payload::from_static("0123456789");
        assert_eq!(outbox.offer(&big), Offer::Queued);
        let mut batch = Vec::new();
        assert_eq!(outbox.try_recv(&mut batch), Ok(Some(0)));
        assert_eq!(batch, vec![big.clone()]);
        assert_eq!(outbox.offer(&Payload::from_static("ab")), Offer::Queued);
        assert_eq!(outbox.offer(&Payload::from_static("abc")), Offer::Full);
    }
    /// A connected loopback pair, the server end with a small send buffer and the peer
    /// with a small receive buffer, so a 100 KiB frame fills them mid-frame.
    async fn pair() -> (Arc<tokio::net::TcpStream>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = tokio::net::TcpSocket::new_v4().unwrap();
        peer.set_recv_buffer_size(4096).unwrap();
        let peer = peer.connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .unwrap();
        (Arc::new(server), peer)
    }

    fn roomy() -> Outbox {
        Outbox::new(QueueLimits {
            depth: 100,
            bytes: 1 << 24,
        })
    }

    #[tokio::test]
    async fn an_idle_socket_is_written_through_and_a_full_one_queues_the_rest() {
        let (server, _peer) = pair().await;
        let outbox = roomy();
        outbox.attach(server, false);
        let small = Payload::from_static("hello");
        assert_eq!(
            outbox.offer(&small),
            Offer::Queued,
            "a push to one uid queues"
        );
        let mut batch = Vec::new();
        assert_eq!(outbox.try_recv(&mut batch), Ok(Some(0)));
        assert_eq!(
            outbox.try_recv(&mut batch),
            Ok(None),
            "the writer is idle again"
        );
        batch.clear();
        assert_eq!(outbox.offer_through(&small), Offer::Written);
        let big = Payload::from("x".repeat(100 * 1024));
        assert_eq!(
            outbox.offer_through(&big),
            Offer::Queued,
            "the socket took only part of it"
        );
        assert_eq!(
            outbox.offer_through(&small),
            Offer::Queued,
            "behind the half-written one"
        );
        let sent = outbox.try_recv(&mut batch).unwrap().unwrap();
        assert!(
            sent > 0 && sent < big.len(),
            "{sent} bytes of the frame went out"
        );
        assert_eq!(batch, vec![big, small.clone()]);
        assert_eq!(
            outbox.offer_through(&small),
            Offer::Queued,
            "the writer holds the socket"
        );
    }

    #[tokio::test]
    async fn a_claimed_socket_takes_no_writes_until_the_writer_is_back() {
        let (server, _peer) = pair().await;
        let outbox = roomy();
        outbox.attach(server, false);
        let mut batch = Vec::new();
        assert_eq!(outbox.claim(&mut batch), Ok(0));
        let m = Payload::from_static("m");
        assert_eq!(
            outbox.offer_through(&m),
            Offer::Queued,
            "a ping is being written"
        );
        assert_eq!(outbox.try_recv(&mut batch), Ok(Some(0)));
        assert_eq!(outbox.try_recv(&mut batch), Ok(None));
        assert_eq!(outbox.offer_through(&m), Offer::Written, "idle again");
    }

    #[tokio::test]
    async fn a_close_keeps_the_half_written_frame_for_the_writer_to_finish() {
        let (server, _peer) = pair().await;
        let outbox = roomy();
        outbox.attach(server, false);
        let big = Payload::from("y".repeat(100 * 1024));
        assert_eq!(outbox.offer_through(&big), Offer::Queued);
        assert_eq!(outbox.offer_through(&big), Offer::Queued);
        assert!(outbox.close(CloseNotice::QUEUE_FULL));
        let mut batch = Vec::new();
        assert_eq!(outbox.try_recv(&mut batch), Err(CloseNotice::QUEUE_FULL));
        let (msg, sent) = outbox.detach().expect("a frame was half written");
        assert_eq!(msg, big);
        assert!(sent > 0 && sent < big.len());
        assert_eq!(outbox.detach(), None, "handed over once");
        // Detached: nothing is written through any more.
        let fresh = roomy();
        let (server, _peer) = pair().await;
        fresh.attach(server, false);
        fresh.detach();
        assert_eq!(
            fresh.offer_through(&Payload::from_static("z")),
            Offer::Queued
        );
    }
}
