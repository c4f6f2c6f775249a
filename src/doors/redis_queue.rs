//! The Redis-queue door (`--redis-queue KEY[=REPLIES]`, seed 000's push centre): apps
//! `LPUSH` elements onto a Redis list; pushwire takes them in the order they were pushed
//! and runs each once. An element that is a push line (a JSON object with a `uid`, or a
//! `/` command, on one line) runs as the push port runs it; any other element goes to
//! every page, byte for byte. With `=REPLIES`, each element's reply line (the push port's
//! reply, or `ok`/`fail` for a broadcast: whether any page took it) is `LPUSH`ed onto
//! REPLIES, in order, the list trimmed to `--redis-queue-max-replies`.
//!
//! # No loss, once
//! An element is moved (`BLMOVE`, one step in Redis) from the list onto its processing
//! list (`{KEY}:pushwire:processing`, in the list's hash slot) and removed from there
//! only once it ran. A pushwire killed between the two leaves it there, and the next
//! consumer runs it before taking anything new: no element is lost, and the order holds.
//! One that dies after running an element and before removing it runs that one element
//! again (at least once, in that one window). Only one node consumes a list at a time (a
//! lease, `{KEY}:pushwire:consumer`, renewed every second, lost 5 s after its holder
//! died), so in cluster mode each element runs once cluster-wide.
//!
//! # Bounds
//! `--redis-queue-max-bytes` per element (longer ones, and ones that are not UTF-8, are
//! refused: logged, answered with an error line, removed), `--redis-queue-rate` takes per
//! second over all lists.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fred::clients::Client;
use fred::interfaces::{ClientLike, ListInterface};
use fred::types::Builder;
use fred::types::config::{Config as RedisConfig, ReconnectPolicy};
use fred::types::lists::LMoveDirection;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::{Queue, QueueConfig};
use crate::lease::hold;
use crate::logsafe::escaped;
use crate::metrics::Metric;
use crate::nodes::{How, To};
use crate::service::{self, Reply};
use crate::state::State;
use crate::wire::{Frame, Payload, push_target};

/// How long a consumer's lease lives without renewal, and how often it is renewed (a take
/// waits at most this long, so the loop comes back to renew it).
const LEASE_TTL: Duration = Duration::from_secs(5);
const LEASE_RENEW: Duration = Duration::from_secs(1);

/// How long to wait before trying Redis again after an error.
const RETRY: Duration = Duration::from_millis(500);

/// The processing list of `key`, in its hash slot (a `{tag}` of the key's own, or the
/// whole key as the tag): `BLMOVE` needs both in one slot on a Redis Cluster.
fn processing_key(key: &str) -> String {
    format!("{}:pushwire:processing", slot_tagged(key))
}

/// The consumer lease of `key`.
fn lease_key(key: &str) -> String {
    format!("{}:pushwire:consumer", slot_tagged(key))
}

/// `key` as a prefix hashing to `key`'s slot: `key` if it has a hash tag, else `{key}`.
fn slot_tagged(key: &str) -> String {
    let tagged = key
        .find('{')
        .and_then(|open| key[open + 1..].find('}').map(|len| len > 0))
        .unwrap_or(false);
    if tagged {
        key.to_owned()
    } else {
        format!("{{{key}}}")
    }
}

/// Starts one consumer per list; each stops taking when backends stop (shutdown) and
/// finishes the element it holds.
pub(crate) fn start(ctx: &Arc<State>, tasks: &tokio_util::task::TaskTracker) {
    let Some(cfg) = ctx.config.redis_queue.clone() else {
        return;
    };
    let client = match client(&cfg) {
        Ok(c) => c,
        Err(e) => return warn!(error = %e, "Redis-queue door: bad Redis URL; not started"),
    };
    drop(client.connect());
    // One pacer for all lists: `--redis-queue-rate` takes per second in all.
    let pacer = Arc::new(Pacer::new(cfg.rate));
    for queue in cfg.queues.clone() {
        // Each list its own connection: a blocking take holds it.
        let conn = client.clone_new();
        drop(conn.connect());
        tasks.spawn(consume(
            ctx.clone(),
            cfg.clone(),
            queue,
            conn,
            pacer.clone(),
        ));
    }
    info!(lists = cfg.queues.len(), "Redis-queue door started");
}

fn client(cfg: &QueueConfig) -> Result<Client, fred::error::Error> {
    let config = RedisConfig::from_url(&cfg.url)?;
    let mut builder = Builder::from_config(config);
    builder.set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
    builder.build()
}

/// Spaces takes so there are at most `rate` a second: each take reserves the next slot
/// (under a lock held for no await), then sleeps until it.
struct Pacer {
    every: Duration,
    next: std::sync::Mutex<Instant>,
}

impl Pacer {
    fn new(rate: u32) -> Pacer {
        Pacer {
            every: Duration::from_secs(1) / rate.max(1),
            next: std::sync::Mutex::new(Instant::now()),
        }
    }

    async fn wait(&self) {
        let now = Instant::now();
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            // A burst after a quiet spell is held to one second's worth.
            let floor = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
            let at = (*next).max(floor);
            *next = at + self.every;
            at
        };
        if at > now {
            tokio::time::sleep_until(at).await;
        }
    }
}

/// One list's consumer: hold the lease, run what a dead consumer left in processing, then
/// take, run and remove, one element at a time.
async fn consume(ctx: Arc<State>, cfg: QueueConfig, queue: Queue, conn: Client, pacer: Arc<Pacer>) {
    let holder = format!("{:016x}", rand_id());
    let (processing, lease) = (processing_key(&queue.key), lease_key(&queue.key));
    let key = escaped(&queue.key).to_string();
    let mut renewed: Option<Instant> = None;
    let mut held = false;
    let mut said: Option<bool> = None;
    loop {
        if ctx.push_stop.is_cancelled() {
            return;
        }
        if renewed.is_none_or(|at| at.elapsed() >= LEASE_RENEW) {
            match hold(&conn, lease.clone(), &holder, LEASE_TTL).await {
                Ok(now) => {
                    if said != Some(now) {
                        info!(list = %key, consuming = now, "Redis-queue door: consumer lease");
                        said = Some(now);
                    }
                    held = now;
                    renewed = Some(Instant::now());
                }
                Err(e) => {
                    debug!(list = %key, error = %e, "Redis-queue door: Redis not answering");
                    held = false;
                    renewed = None;
                    if stopped_within(&ctx, RETRY).await {
                        return;
                    }
                    continue;
                }
            }
        }
        if !held {
            if stopped_within(&ctx, LEASE_RENEW).await {
                return;
            }
            continue;
        }
        // First what a consumer that died left half done (oldest at the right).
        let left: Result<Option<Bytes>, _> = conn.lindex(&processing, -1).await;
        let element = match left {
            Ok(Some(e)) => {
                info!(list = %key, "Redis-queue door: running an element a stopped consumer had taken");
                Some(e)
            }
            Ok(None) => {
                pacer.wait().await;
                let taken = tokio::select! {
                    r = conn.blmove::<Option<Bytes>, _, _>(
                        &queue.key,
                        &processing,
                        LMoveDirection::Right,
                        LMoveDirection::Left,
                        LEASE_RENEW.as_secs_f64(),
                    ) => r,
                    // A take in flight may still move an element: it is run by the next
                    // consumer, from the processing list.
                    () = ctx.push_stop.cancelled() => return,
                };
                match taken {
                    Ok(e) => e,
                    Err(e) => {
                        debug!(list = %key, error = %e, "Redis-queue door: take failed");
                        if stopped_within(&ctx, RETRY).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            Err(e) => {
                debug!(list = %key, error = %e, "Redis-queue door: Redis not answering");
                if stopped_within(&ctx, RETRY).await {
                    return;
                }
                continue;
            }
        };
        let Some(element) = element else { continue };
        let reply = run(&ctx, &cfg, &key, element.clone()).await;
        if let Some(replies) = &queue.replies {
            let mut line = BytesMut::new();
            reply.encode(&mut line);
            let line = line.strip_suffix(b"\n").unwrap_or(&line).to_vec();
            let pushed: Result<(), _> = async {
                conn.lpush::<(), _, _>(replies, line).await?;
                conn.ltrim::<(), _>(replies, 0, cfg.max_replies as i64 - 1)
                    .await
            }
            .await;
            if let Err(e) = pushed {
                warn!(list = %key, error = %e, "Redis-queue door: reply not pushed");
            }
        }
        // Done: off the processing list (the oldest copy of it: the one just run).
        loop {
            match conn
                .lrem::<i64, _, _>(&processing, -1, element.clone())
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    warn!(list = %key, error = %e, "Redis-queue door: cannot mark an element done; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

/// Runs one element; its reply.
async fn run(ctx: &Arc<State>, cfg: &QueueConfig, key: &str, element: Bytes) -> Reply {
    if element.len() > cfg.max_bytes {
        ctx.metrics.incr(Metric::BadLines);
        warn!(list = %key, bytes = element.len(), max = cfg.max_bytes, "Redis-queue door: element refused: too long");
        return Reply::error(format!("element longer than {} bytes", cfg.max_bytes));
    }
    let one_line = !element.contains(&b'\n');
    if one_line && (element.first() == Some(&b'/') || push_target(&element).is_ok()) {
        let frame = Frame::Line(element);
        return service::handle(ctx, &frame, None).resolve().await;
    }
    let Ok(msg) = Payload::new(element) else {
        ctx.metrics.incr(Metric::BadLines);
        warn!(list = %key, "Redis-queue door: element refused: not UTF-8 (pages get text frames)");
        return Reply::error("element is not UTF-8");
    };
    let reached = ctx
        .nodes
        .deliver(To::All { except: &[] }, &msg, How::default())
        .resolve()
        .await;
    if reached.delivery.ok() {
        Reply::Ok
    } else {
        Reply::Fail
    }
}

/// Waits `d`, or less if backends stop; true if they did.
async fn stopped_within(ctx: &State, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = ctx.push_stop.cancelled() => true,
    }
}

/// A consumer's name for its lease (a restarted process is another holder).
fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_keys_share_the_lists_slot() {
        assert_eq!(processing_key("mc"), "{mc}:pushwire:processing");
        assert_eq!(lease_key("{app}:mc"), "{app}:mc:pushwire:consumer");
    }
}
