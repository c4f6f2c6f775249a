//! Pusher channels across nodes ([`Channels`], reached with [`super::Nodes::channels`]):
//! a subscription, a publish, and the HTTP API's questions. A single node answers from
//! its [`Index`] at once; a cluster also has to ask Redis (presence is per user across
//! every node), so every operation answers an [`Answer`].
//!
//! Added beside the uid operations rather than as a `To::Channel`: a Pusher channel has
//! its own subscribers (connections, not uids), its own members and its own cache, so
//! none of the uid operations' answers (`Reached`, `Census`) would mean anything for it.

use std::sync::Arc;

use super::{Answer, NodesError};
use crate::channels::{ChannelInfo, Conn, Index, Left, SubscribeError, Subscribed};
use crate::wire::Payload;
use crate::wire::pusher::outbound::{self, WebhookEvent};
use crate::wire::pusher::{Channel, Member, Refusal, SocketId};

/// The webhook events of a subscription, in Pusher's order: the channel occupied, then
/// the member added, then a cache miss. `occupied` and `added` must be what the owner of
/// the channels' state decided (this node alone, or the cluster's script), so each is
/// told once.
pub fn subscribed_hooks(
    index: &Index,
    app: &str,
    channel: &str,
    s: &Subscribed,
    user: Option<&str>,
) {
    let Some(hooks) = index.hooks() else {
        return;
    };
    if s.occupied {
        hooks.emit(app, &WebhookEvent::ChannelOccupied { channel });
    }
    if let (true, Some(user_id)) = (s.added, user) {
        hooks.emit(app, &WebhookEvent::MemberAdded { channel, user_id });
    }
    if s.cache_miss {
        hooks.emit(app, &WebhookEvent::CacheMiss { channel });
    }
}

/// The webhook events of a departure: the member removed (`removed`), then the channel
/// vacated (`vacated`); decided as for [`subscribed_hooks`].
pub fn left_hooks(index: &Index, app: &str, channel: &str, removed: Option<&str>, vacated: bool) {
    let Some(hooks) = index.hooks() else {
        return;
    };
    if let Some(user_id) = removed {
        hooks.emit(app, &WebhookEvent::MemberRemoved { channel, user_id });
    }
    if vacated {
        hooks.emit(app, &WebhookEvent::ChannelVacated { channel });
    }
}

/// Pusher channels on every node that may hold a subscriber.
pub trait Channels: Send + Sync + std::fmt::Debug {
    /// The connections of this node (a Pusher connection is always this node's).
    fn index(&self) -> &Index;
    /// Subscribes `conn` (signature checked) to `channel`, as `member` on a presence
    /// channel; see [`Index::subscribe`] for what it queues.
    fn subscribe(
        &self,
        conn: &Arc<Conn>,
        channel: &Channel,
        member: Option<&Member>,
    ) -> Answer<Result<Subscribed, SubscribeError>>;
    /// Takes `conn` off `channel`.
    fn unsubscribe(&self, conn: &Arc<Conn>, channel: &Channel) -> Answer<Left>;
    /// Offers `frame` to every subscriber of `app`'s `channel` but `except`; answers
    /// how many of this node's connections took it, or that the other nodes could not be
    /// told (this node's got it).
    fn publish(
        &self,
        app: &Arc<str>,
        channel: &Channel,
        frame: &Payload,
        except: Option<SocketId>,
    ) -> Answer<Result<usize, NodesError>>;
    /// A channel's counts.
    fn info(&self, app: &str, channel: &str) -> Answer<Result<ChannelInfo, NodesError>>;
    /// Occupied channels of `app` starting with `prefix`, sorted by name.
    fn list(
        &self,
        app: &str,
        prefix: &str,
    ) -> Answer<Result<Vec<(String, ChannelInfo)>, NodesError>>;
    /// A presence channel's user ids, sorted.
    fn users(&self, app: &str, channel: &str) -> Answer<Result<Vec<String>, NodesError>>;
    /// Closes the connections signed in as `user` with `refusal`; answers how many.
    fn terminate(&self, app: &str, user: &str, refusal: &Refusal) -> Answer<usize>;
    /// Tells the subscribers of each channel whose count changed on this node since the
    /// last call its count now (`pusher_internal:subscription_count`, every node's
    /// subscribers in a cluster), and the app's `subscription_count` receivers. Called
    /// once a [`COUNT_EVERY`]: what changes in between is told once, coalesced.
    fn tell_counts(&self) -> Answer<()>;
}

/// How often subscription counts are told at most, per channel and node: a channel of
/// N subscribers costs N frames per tell, so a crowd joining costs N frames a second,
/// not N per join.
pub const COUNT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Tells `count` for `channel`'s count to the app's `subscription_count` receivers.
pub fn count_hook(index: &Index, app: &str, channel: &str, count: usize) {
    if let Some(hooks) = index.hooks() {
        let count = count as u64;
        hooks.emit(app, &WebhookEvent::SubscriptionCount { channel, count });
    }
}

impl Channels for Index {
    fn index(&self) -> &Index {
        self
    }

    fn subscribe(
        &self,
        conn: &Arc<Conn>,
        channel: &Channel,
        member: Option<&Member>,
    ) -> Answer<Result<Subscribed, SubscribeError>> {
        let done = Index::subscribe(self, conn, channel, member);
        if let Ok(s) = &done {
            let user = member.map(|m| m.user_id.as_str());
            subscribed_hooks(self, &conn.app.id, channel.name(), s, user);
        }
        Answer::Now(done)
    }

    fn unsubscribe(&self, conn: &Arc<Conn>, channel: &Channel) -> Answer<Left> {
        let left = Index::unsubscribe(self, conn, channel);
        let removed = left.removed.as_deref();
        left_hooks(self, &conn.app.id, channel.name(), removed, left.vacated);
        Answer::Now(left)
    }

    fn publish(
        &self,
        app: &Arc<str>,
        channel: &Channel,
        frame: &Payload,
        except: Option<SocketId>,
    ) -> Answer<Result<usize, NodesError>> {
        Answer::Now(Ok(Index::publish(self, app, channel, frame, except)))
    }

    fn info(&self, app: &str, channel: &str) -> Answer<Result<ChannelInfo, NodesError>> {
        Answer::Now(Ok(Index::info(self, app, channel)))
    }

    fn list(
        &self,
        app: &str,
        prefix: &str,
    ) -> Answer<Result<Vec<(String, ChannelInfo)>, NodesError>> {
        Answer::Now(Ok(Index::list(self, app, prefix)))
    }

    fn users(&self, app: &str, channel: &str) -> Answer<Result<Vec<String>, NodesError>> {
        Answer::Now(Ok(Index::users(self, app, channel)))
    }

    fn terminate(&self, app: &str, user: &str, refusal: &Refusal) -> Answer<usize> {
        Answer::Now(Index::terminate(self, app, user, refusal))
    }

    fn tell_counts(&self) -> Answer<()> {
        for (app, channel) in self.take_counted() {
            let count = Index::info(self, &app, &channel).subscriptions;
            let frame = Payload::from(outbound::subscription_count(&channel, count as u64));
            self.offer(&app, &channel, &frame);
            count_hook(self, &app, &channel, count);
        }
        Answer::Now(())
    }
}
