//! Cluster mode for the gateway door's addressed connections (`addressed.rs`): any node
//! answers for every node, so GatewayClient talks to the one node its Register names.
//!
//! # Numbers
//! A `client_id` names the address GatewayClient connected to and a connection number; a
//! node that lists another node's connection names it with its own address. So numbers
//! are unique cluster-wide: each node claims a tag in Redis (`{<prefix>}:gw:tag:<t>`, 1 to 4095,
//! `SET NX` with a TTL it renews) and numbers its connections `t << 20 | n`. Until it holds
//! a tag (Redis not reached yet) its greeted listener closes new pages with 1013.
//!
//! # Asks
//! An op about a connection of this node runs here alone. Any other op (a send to groups
//! or to all, a query, an op about another node's connection) runs here and is published
//! on `{<prefix>}:gw:all` (sharded pub/sub, one slot): every other node with the door runs it on
//! its own connections and answers on the origin's `{<prefix>}:gw:r:<node>`; the origin waits
//! for as many answers as Redis counted subscribers (less itself), at most
//! `--cluster-timeout-ms`, and merges them ([`ConnAnswer::merge`]). Nodes that did not
//! answer in time are left out of the answer and logged; with Redis down the answer is
//! this node's own.
//!
//! It has its own subscriber connection, so nothing here touches the push path's tasks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::Value;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::Cluster;
use crate::addressed::{Addressed, ConnAnswer, ConnOp};
use crate::lease::hold;
use crate::nodes::Answer;

/// Bits of a connection number below the node's tag.
const TAG_SHIFT: u32 = 20;
/// Tags a node may claim: 1 ..= 4095.
const TAGS: u32 = 1 << (32 - TAG_SHIFT);
/// How long a claimed tag lives without renewal, and how often it is renewed.
const TAG_TTL: Duration = Duration::from_secs(30);
const TAG_RENEW: Duration = Duration::from_secs(10);

/// `<base>tag:<t>` holds the node that numbers with tag `t` (`base`: `{<prefix>}:gw:`,
/// from the cluster's names, one slot).
fn tag_key(base: &str, tag: u32) -> String {
    format!("{base}tag:{tag}")
}

/// Every node with the door listens here.
fn all_channel(base: &str) -> String {
    format!("{base}all")
}

/// Where `node`'s asks are answered.
fn answer_channel(base: &str, node: &str) -> String {
    format!("{base}r:{node}")
}

/// An ask on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct Ask {
    /// The origin node.
    o: String,
    /// Its request number.
    q: u64,
    op: ConnOp,
}

/// An answer on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    q: u64,
    a: ConnAnswer,
}

/// One ask's answers so far.
struct Gathering {
    /// Answers Redis said will come (`None` until the publish returned).
    want: Option<usize>,
    got: usize,
    answer: ConnAnswer,
    done: Option<oneshot::Sender<(ConnAnswer, usize)>>,
}

impl Gathering {
    /// Sends the answer once every expected one is in.
    fn finish_if_complete(&mut self) {
        if self.want.is_some_and(|w| self.got >= w)
            && let Some(done) = self.done.take()
        {
            let answer = std::mem::replace(&mut self.answer, ConnAnswer::Done(0));
            let _ = done.send((answer, 0));
        }
    }
}

/// This node's side of the cluster for addressed connections.
#[derive(Debug, Clone)]
pub struct AddressedLink(Arc<Inner>);

struct Inner {
    node: String,
    /// `{<prefix>}:gw:`: what this module's keys and channels start with.
    gw: String,
    here: Addressed,
    cmd: Client,
    sub: SubscriberClient,
    timeout: Duration,
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, Gathering>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressedLink")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl AddressedLink {
    /// Starts the link for `here` (this node's table) beside `cluster`: claims a tag, then
    /// keeps it, and serves the other nodes' asks. Stops with the cluster.
    pub fn start(cluster: &Arc<Cluster>, here: Addressed) -> AddressedLink {
        // No number before a tag: a page greeted now could clash with another node's.
        here.number_from(0, 0);
        let cmd = cluster.cmd.clone();
        let sub = SubscriberClient::new(
            cmd.client_config(),
            Some(cmd.perf_config()),
            Some(cmd.connection_config().clone()),
            cmd.client_reconnect_policy(),
        );
        let link = AddressedLink(Arc::new(Inner {
            node: cluster.node.clone(),
            gw: cluster.names.gateway_base(),
            here,
            cmd,
            sub,
            timeout: cluster.timeout,
            next: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
        }));
        let stop = cluster.stop.clone();
        // Made now, so no message is missed between subscribing and listening.
        let rx = link.0.sub.message_rx();
        for task in [
            tokio::spawn(link.clone().keep_tag()),
            tokio::spawn(link.clone().listen(rx)),
        ] {
            let stop = stop.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                task.abort();
            });
        }
        let sub = link.0.sub.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            let _ = sub.quit().await;
        });
        link
    }

    /// Runs `op` wherever its connections are (see the module's "Asks").
    pub fn run(&self, op: ConnOp) -> Answer<ConnAnswer> {
        let here = &self.0.here;
        if op.conn().is_some_and(|c| here.owns(c)) {
            return Answer::Now(here.run(&op));
        }
        let local = here.run(&op);
        let link = self.clone();
        Answer::later(async move { link.ask(op, local).await })
    }

    async fn ask(self, op: ConnOp, local: ConnAnswer) -> ConnAnswer {
        let inner = &*self.0;
        let q = inner.next.fetch_add(1, Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(
            q,
            Gathering {
                want: None,
                got: 0,
                answer: local.clone(),
                done: Some(tx),
            },
        );
        let ask = Ask {
            o: inner.node.clone(),
            q,
            op,
        };
        let Ok(body) = serde_json::to_string(&ask) else {
            self.lock().remove(&q);
            return local;
        };
        let published = tokio::time::timeout(
            inner.timeout,
            inner
                .cmd
                .spublish::<i64, _, _>(all_channel(&inner.gw), body),
        )
        .await;
        let receivers = match published {
            Ok(Ok(n)) => usize::try_from(n).unwrap_or(0),
            _ => {
                self.lock().remove(&q);
                debug!("gateway ask not published (redis unreachable): this node's answer only");
                return local;
            }
        };
        {
            let mut waiting = self.lock();
            if let Some(g) = waiting.get_mut(&q) {
                // This node hears its own ask too, and does not answer it.
                g.want = Some(receivers.saturating_sub(1));
                g.finish_if_complete();
            }
        }
        match tokio::time::timeout(inner.timeout, rx).await {
            Ok(Ok((answer, _))) => {
                self.lock().remove(&q);
                answer
            }
            _ => {
                let g = self.lock().remove(&q);
                let (answer, got, want) =
                    g.map_or((local, 0, 0), |g| (g.answer, g.got, g.want.unwrap_or(0)));
                warn!(
                    missing = want.saturating_sub(got),
                    "gateway ask: nodes did not answer in time; answered without them"
                );
                answer
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Gathering>> {
        self.0.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims a tag once Redis answers, then renews it; a tag lost (Redis lost its data,
    /// or a long cut) is claimed again, logged.
    async fn keep_tag(self) {
        let inner = &*self.0;
        drop(inner.sub.manage_subscriptions());
        let _ = inner.sub.init().await;
        // Subscribed before numbering: a page greeted here must be one every other
        // node's ask reaches (an ask published before would not count this node).
        let (all, mine) = (
            all_channel(&inner.gw),
            answer_channel(&inner.gw, &inner.node),
        );
        loop {
            if inner.sub.ssubscribe(mine.as_str()).await.is_ok()
                && inner.sub.ssubscribe(all.as_str()).await.is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut held: Option<u32> = None;
        loop {
            match held {
                Some(tag) => {
                    let kept =
                        hold(&inner.cmd, tag_key(&inner.gw, tag), &inner.node, TAG_TTL).await;
                    if matches!(kept, Ok(false)) {
                        warn!(
                            tag,
                            "gateway: this node's number tag was taken; claiming another"
                        );
                        held = None;
                        continue;
                    }
                }
                None => {
                    for tag in 1..TAGS {
                        match hold(&inner.cmd, tag_key(&inner.gw, tag), &inner.node, TAG_TTL).await
                        {
                            Ok(true) => {
                                inner.here.number_from(tag << TAG_SHIFT, 1 << TAG_SHIFT);
                                info!(tag, "gateway: greeted connections numbered from tag");
                                held = Some(tag);
                                break;
                            }
                            Ok(false) => continue,
                            Err(e) => {
                                debug!(error = %e, "gateway: cannot claim a number tag yet");
                                break;
                            }
                        }
                    }
                    if held.is_none() {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
            tokio::time::sleep(TAG_RENEW).await;
        }
    }

    /// Serves the other nodes' asks and gathers the answers to this node's.
    async fn listen(self, mut rx: tokio::sync::broadcast::Receiver<fred::types::Message>) {
        let inner = &*self.0;
        let mine = answer_channel(&inner.gw, &inner.node);
        loop {
            let msg = match rx.recv().await {
                Ok(msg) => msg,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!(lost = n, "gateway asks lost: the message buffer overflowed");
                    continue;
                }
                Err(_) => return,
            };
            let Some(bytes) = msg.value.as_bytes() else {
                continue;
            };
            if *msg.channel == *mine {
                let Ok(reply) = serde_json::from_slice::<Reply>(bytes) else {
                    continue;
                };
                let mut waiting = self.lock();
                if let Some(g) = waiting.get_mut(&reply.q) {
                    let answer = std::mem::replace(&mut g.answer, ConnAnswer::Done(0));
                    g.answer = answer.merge(reply.a);
                    g.got += 1;
                    g.finish_if_complete();
                }
                continue;
            }
            let Ok(ask) = serde_json::from_slice::<Ask>(bytes) else {
                debug!("malformed gateway ask");
                continue;
            };
            if ask.o == inner.node {
                continue;
            }
            let reply = Reply {
                q: ask.q,
                a: inner.here.run(&ask.op),
            };
            let Ok(body) = serde_json::to_string(&reply) else {
                continue;
            };
            let cmd = inner.cmd.clone();
            let channel = answer_channel(&inner.gw, &ask.o);
            tokio::spawn(async move {
                let _ = cmd.spublish::<Value, _, _>(channel, body).await;
            });
        }
    }
}
