//! What a push did: how many connections took it, its place in history, the uids reached.

use crate::wire::envelope::Position;

/// How many of a uid's connections took a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Connections that queued it.
    pub queued: usize,
    /// Connections that refused it (queue full, or already closing).
    pub refused: usize,
}

impl std::ops::Add for Delivery {
    type Output = Delivery;

    fn add(self, other: Delivery) -> Delivery {
        Delivery {
            queued: self.queued + other.queued,
            refused: self.refused + other.refused,
        }
    }
}

impl Delivery {
    /// The seed's `ok`: at least one live connection took the message.
    pub fn ok(self) -> bool {
        self.queued > 0
    }
}

/// What one push to a uid did, history included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Live connections.
    pub delivery: Delivery,
    /// Its place in the uid's history, if the uid has one.
    pub at: Option<Position>,
    /// Kept in the offline queue (nobody was connected and a TTL was asked for).
    pub queued: bool,
}

/// What one message to several uids did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fanout {
    /// Uids with at least one connection that took it.
    pub reached: usize,
    /// Connections over all those uids.
    pub delivery: Delivery,
}
