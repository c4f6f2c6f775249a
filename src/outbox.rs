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

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::wire::{CloseNotice, Payload};

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
    /// The queue was full: the connection is now closing and did not take the message.
    Full,
    /// The connection was already closing.
    Closed,
}

/// One connection's queue plus the wake-up its writer task waits on.
#[derive(Debug)]
pub struct Outbox {
    /// A std mutex: every critical section is a few pointer moves and none awaits.
    state: Mutex<State>,
    wake: Notify,
    limits: QueueLimits,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Payload>,
    bytes: usize,
    closing: Option<CloseNotice>,
}

impl Outbox {
    /// An empty queue with the given limits.
    pub fn new(limits: QueueLimits) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            limits,
        }
    }

    /// Queues `msg` (a refcount bump, not a copy) unless the connection is closing or full.
    pub fn offer(&self, msg: &Payload) -> Offer {
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

    /// Marks the connection closing with `notice`, frees its queue, wakes the writer.
    fn close_locked(&self, mut st: MutexGuard<'_, State>, notice: CloseNotice) {
        st.queue = VecDeque::new();
        st.bytes = 0;
        st.closing = Some(notice);
        drop(st);
        self.wake.notify_one();
    }

    /// Waits until there is something to do: moves every queued message into `batch`, or
    /// returns the close notice. Cancel-safe: nothing is taken before the final poll.
    pub async fn recv(&self, batch: &mut Vec<Payload>) -> Result<(), CloseNotice> {
        loop {
            if self.try_recv(batch)? {
                return Ok(());
            }
            self.wake.notified().await;
        }
    }

    /// Like [`Outbox::recv`] without waiting; `Ok(false)` when the queue is empty.
    pub fn try_recv(&self, batch: &mut Vec<Payload>) -> Result<bool, CloseNotice> {
        let mut st = self.lock();
        if let Some(notice) = &st.closing {
            return Err(notice.clone());
        }
        if st.queue.is_empty() {
            return Ok(false);
        }
        batch.extend(st.queue.drain(..));
        st.bytes = 0;
        if st.queue.capacity() > 64 {
            // Give back a burst's memory; idle connections should hold nothing.
            st.queue = VecDeque::new();
        }
        Ok(true)
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
        assert_eq!(outbox.try_recv(&mut batch), Ok(true));
        assert_eq!(batch, vec![big.clone()]);
        assert_eq!(outbox.offer(&Payload::from_static("ab")), Offer::Queued);
        assert_eq!(outbox.offer(&Payload::from_static("abc")), Offer::Full);
    }
}
