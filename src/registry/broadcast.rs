//! One message to many uids: broadcasts and multi-uid pushes, cut into parts for `fanout.rs`'s
//! helper threads when large.

use std::cell::Cell;
use std::ops::Range;
use std::sync::Arc;

use super::{Delivery, Fanout, Feed, PARALLEL_FANOUT, Registry, Via, lock};
use crate::fanout::{Helpers, Part};
use crate::wire::{Payload, Uid};

impl Registry {
    /// Offers `msg` to every bound connection, one shard at a time, except those of the
    /// uids in `except`.
    pub fn broadcast(&self, msg: &Payload, except: &[Uid]) -> Delivery {
        self.broadcast_to(msg, except, false)
    }

    /// Offers `msg` to every bound connection whose queue the registry made: not to those
    /// bound with [`Registry::bind_shared`] (greeted pages), which their owner reaches
    /// itself (GatewayClient's `sendToAll`, `addressed.rs`).
    pub fn broadcast_own(&self, msg: &Payload) -> Delivery {
        self.broadcast_to(msg, &[], true)
    }

    fn broadcast_to(&self, msg: &Payload, except: &[Uid], own_only: bool) -> Delivery {
        let n = self.shared.shards.len();
        let parts = self.fanout_parts(self.totals().1);
        if parts == 1 {
            return self.broadcast_shards(0..n, msg, except, own_only);
        }
        let except: Arc<[Uid]> = except.into();
        let parts = (0..parts)
            .map(|i| -> Part<Delivery> {
                let (this, msg, except) = (self.clone(), msg.clone(), except.clone());
                Box::new(move || {
                    let range = i * n / parts..(i + 1) * n / parts;
                    this.broadcast_shards(range, &msg, &except, own_only)
                })
            })
            .collect();
        let done = self.helpers().run(parts);
        done.into_iter()
            .flatten()
            .fold(Delivery::default(), |a, b| a + b)
    }

    /// [`Registry::broadcast_to`] over the shards in `range`.
    fn broadcast_shards(
        &self,
        range: Range<usize>,
        msg: &Payload,
        except: &[Uid],
        own_only: bool,
    ) -> Delivery {
        self.part(msg, |via| {
            let mut delivery = Delivery::default();
            for shard in &self.shared.shards[range] {
                let mut shard = lock(shard);
                for (uid, entry) in &mut shard.uids {
                    if !except.is_empty() && except.contains(uid) {
                        continue;
                    }
                    for member in &mut entry.conns {
                        if own_only && member.id.shared_queue() {
                            continue;
                        }
                        match member.feed {
                            Feed::Local => self.offer(uid, member, msg, &mut delivery, via),
                            // A tab still resuming gets it after its status frame.
                            _ => self.feed_v1(uid, member, None, msg, &mut delivery, via),
                        }
                    }
                }
            }
            delivery
        })
    }

    /// Offers `msg` to every connection of each of `uids`.
    pub fn push_many(&self, uids: &[Uid], msg: &Payload) -> Fanout {
        let parts = self.fanout_parts(uids.len());
        if parts == 1 {
            return self.push_each(uids, msg);
        }
        let n = uids.len();
        let parts = (0..parts)
            .map(|i| -> Part<Fanout> {
                let (this, msg) = (self.clone(), msg.clone());
                let uids = uids[i * n / parts..(i + 1) * n / parts].to_vec();
                Box::new(move || this.push_each(&uids, &msg))
            })
            .collect();
        let done = self.helpers().run(parts);
        done.into_iter()
            .flatten()
            .fold(Fanout::default(), |a, b| Fanout {
                reached: a.reached + b.reached,
                delivery: a.delivery + b.delivery,
            })
    }

    /// [`Registry::push_many`] on this thread.
    fn push_each(&self, uids: &[Uid], msg: &Payload) -> Fanout {
        self.part(msg, |via| {
            let mut out = Fanout::default();
            for uid in uids {
                let d = self.push_into(uid, msg, None, via).delivery;
                out.reached += usize::from(d.ok());
                out.delivery = out.delivery + d;
            }
            out
        })
    }

    /// How many parts a fan-out to about `recipients` connections is cut into.
    fn fanout_parts(&self, recipients: usize) -> usize {
        if recipients < PARALLEL_FANOUT {
            1
        } else {
            self.shared.fanout_threads
        }
    }

    /// The fan-out helper threads, started at the first large fan-out.
    fn helpers(&self) -> &Helpers {
        self.shared
            .helpers
            .get_or_init(|| Helpers::start(self.shared.fanout_threads.saturating_sub(1)))
    }

    /// Runs one part of a fan-out, writing through, and records the frames it wrote (one
    /// update of the shared counters per part, not per frame).
    fn part<R>(&self, msg: &Payload, f: impl FnOnce(Via) -> R) -> R {
        let written = Cell::new(0);
        let out = f(Via::Through(&written));
        self.shared.metrics.frames_written_alike(msg, written.get());
        out
    }

    /// Offers `msg` to every connection of every member of `group` (the member list is
    /// cloned out first, so no group lock is held while offering).
    /// `None` if the group does not exist; otherwise (members, fan-out).
    /// Members in `except` are skipped (still counted among the members).
    pub fn push_group(
        &self,
        group: &str,
        msg: &Payload,
        except: &[Uid],
    ) -> Option<(usize, Fanout)> {
        let mut members = self.groups().members(group)?;
        let count = members.len();
        if !except.is_empty() {
            members.retain(|m| !except.contains(m));
        }
        Some((count, self.push_many(&members, msg)))
    }
}
