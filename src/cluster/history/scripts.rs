//! Protocol v1 history in cluster mode (`docs/protocol.md`, "Cluster mode"): the Redis
//! keys of a uid's history, the two Lua scripts that number, keep and read it, and the
//! parsing of what they return. No I/O here; `cluster.rs` sends the scripts.
//!
//! # Keys, and why they carry a strange hash tag
//! A uid's history is two keys: a hash `pw:h:{T}:<uid>` (`e` epoch, `s` the last
//! sequence given out, `f` the floor: every message above it up to `s` is kept, `b` the
//! payload bytes kept) and a list `pw:l:{T}:<uid>` of the kept messages, oldest first,
//! each `SEQ RECEIVED_MS\nPAYLOAD`. The push script numbers, keeps **and publishes**
//! (`SPUBLISH pw:u:<uid>`) in one atomic step, so every holder hears a uid's messages
//! in sequence order whichever node numbered them. On a Redis Cluster a script may only
//! touch keys and shard channels of one hash slot, so the keys must land in the slot
//! of the uid's channel: `T` is a short decimal chosen (from a table built once) to
//! hash to exactly that slot, whatever bytes the uid holds (braces included). (`pw` is
//! the default `--redis-prefix`; `cluster/names.rs` spells every name.)

use std::sync::OnceLock;

use crate::wire::envelope::{Position, Seq};

/// Cluster hash slots.
const SLOTS: usize = 16_384;

/// For every hash slot, the smallest decimal number whose text hashes to it.
fn slot_tags() -> &'static [u32] {
    static TAGS: OnceLock<Vec<u32>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags = vec![u32::MAX; SLOTS];
        let mut left = SLOTS;
        let mut n: u32 = 0;
        while left > 0 {
            let slot = usize::from(slot_of(n.to_string().as_bytes()));
            if tags[slot] == u32::MAX {
                tags[slot] = n;
                left -= 1;
            }
            n += 1;
        }
        tags
    })
}

/// The hash slot of a key or shard channel (CRC16 of its hash tag, as Redis computes it).
pub fn slot_of(name: &[u8]) -> u16 {
    fred::util::redis_keyslot(name)
}

/// The hash tag (a short decimal) that puts a key in `slot`.
pub fn slot_tag(slot: u16) -> u32 {
    slot_tags()[usize::from(slot) % SLOTS]
}

/// `prefix{T}`: a key in `slot` (e.g. one on each primary of a Redis Cluster).
pub fn key_in_slot(prefix: &str, slot: u16) -> String {
    format!("{prefix}{{{}}}", slot_tag(slot))
}

/// Records one connection's ack: KEYS[1] the acks hash; ARGV: field, `EPOCH:SEQ`, TTL ms.
pub const ACK_SCRIPT: &str = r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// Sets every key's TTL to ARGV[1] ms: the histories a node holds, kept alive in one
/// call per batch of uids where `PEXPIRE` would be one command per key.
pub const KEEP_SCRIPT: &str = r#"
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ARGV[1]) end
return #KEYS
"#;

/// How many connections acked at least ARGV[2] of epoch ARGV[1] (hex): KEYS[1] the acks
/// hash.
pub const ACKS_SCRIPT: &str = r#"
local n = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  local e, s = string.match(v, '^(%x+):(%d+)$')
  if e == ARGV[1] and tonumber(s) >= tonumber(ARGV[2]) then n = n + 1 end
end
return n
"#;

/// Deletes a uid's history (KEYS: hash, list, queue, acks) unless a node hears its
/// channel (ARGV[1]): one that holds the uid counts it. Returns the keys deleted, or -1.
pub const EVICT_SCRIPT: &str = r#"
if redis.call('PUBSUB', 'SHARDNUMSUB', ARGV[1])[2] ~= 0 then return -1 end
return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
"#;

/// Drops messages from the front of the list while over the count or bytes bound, or
/// older than the age bound; records the new floor and bytes.
const TRIM: &str = r#"
local function trim(meta, list, max, maxbytes, oldest, bytes)
  local n = redis.call('LLEN', list)
  local floor = nil
  while n > 0 do
    local front = redis.call('LINDEX', list, 0)
    local s, t = string.match(front, '^(%d+) (%d+)\n')
    if not s then break end
    if not (n > max or bytes > maxbytes or tonumber(t) < oldest) then break end
    redis.call('LPOP', list)
    n = n - 1
    bytes = bytes - (#front - #s - #t - 2)
    floor = s
  end
  if floor then redis.call('HSET', meta, 'f', floor, 'b', bytes) end
end
"#;

/// The push script, after [`TRIM`]: any number of pushes in one call (a publish
/// batch's numbered pushes of one hash slot), each as one call of `push`, in order.
/// KEYS: per push its hash, list, queue. ARGV: node, now (ms), max messages, max bytes,
/// max age (ms), then per push [`PUSH_ARGS`]: channel, request number, payload, queue
/// TTL (ms, 0: none), an epoch for a history created now. Returns per push, flat:
/// subscribers that got it, its sequence or 0, the epoch or '', queued 0/1.
///
/// One push: a queued push (`ttl=`) to a uid no node holds (nobody hears its channel)
/// creates its history if missing, as a single node does for a uid without connections
/// (one held only by seed tabs gets the message unnumbered); if no node hears the uid's
/// channel it also goes to the queue list (`SEQ UNTIL_MS\nPAYLOAD`, as long as the
/// history at most) and every key lives at least the TTL. A uid without a history gets
/// the message unnumbered (`0 0`); one with a history numbers it, keeps it (unless it
/// alone is over the bytes bound: then nothing older is kept either) and trims. Either
/// way it is published as `NODE REQ h\nEPOCH SEQ\nPAYLOAD`.
const PUSH: &str = r#"
local node, now_text, max, maxbytes = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now, maxage = tonumber(ARGV[2]), tonumber(ARGV[5])
local function push(hash, list, queue, channel, req, payload, qttl, new_epoch)
  local head = node .. ' ' .. req .. ' h\n'
  local epoch = redis.call('HGET', hash, 'e')
  if not epoch and qttl > 0 and redis.call('PUBSUB', 'SHARDNUMSUB', channel)[2] == 0 then
    redis.call('HSET', hash, 'e', new_epoch)
    redis.call('PEXPIRE', hash, qttl)
    epoch = new_epoch
  end
  if not epoch then
    return redis.call('SPUBLISH', channel, head .. '0 0\n' .. payload), 0, '', 0
  end
  local seq = redis.call('HINCRBY', hash, 's', 1)
  local len = #payload
  if len > maxbytes then
    redis.call('DEL', list)
    redis.call('HSET', hash, 'f', seq, 'b', 0)
  else
    redis.call('RPUSH', list, seq .. ' ' .. now_text .. '\n' .. payload)
    local bytes = redis.call('HINCRBY', hash, 'b', len)
    trim(hash, list, max, maxbytes, now - maxage, bytes)
    local ttl = redis.call('PTTL', hash)
    if ttl > 0 then redis.call('PEXPIRE', list, ttl) end
  end
  local n = redis.call('SPUBLISH', channel, head .. epoch .. ' ' .. seq .. '\n' .. payload)
  if n > 0 or qttl <= 0 then return n, seq, epoch, 0 end
  redis.call('RPUSH', queue, seq .. ' ' .. (now + qttl) .. '\n' .. payload)
  redis.call('LTRIM', queue, -max, -1)
  for _, key in ipairs({hash, list, queue}) do
    local t = redis.call('PTTL', key)
    if t == -1 or (t >= 0 and t < qttl) then redis.call('PEXPIRE', key, qttl) end
  end
  return n, seq, epoch, 1
end
local out = {}
for i = 0, #KEYS / 3 - 1 do
  local k, a = i * 3, 5 + i * 5
  local n, seq, epoch, queued = push(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], ARGV[a + 1],
    ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4]), ARGV[a + 5])
  out[#out + 1] = n
  out[#out + 1] = seq
  out[#out + 1] = epoch
  out[#out + 1] = queued
end
return out
"#;

/// The push script's arguments per push, after its five shared ones (see [`PUSH`]).
pub const PUSH_ARGS: usize = 5;

/// The push script's answer values per push.
pub const PUSH_ANSWER: usize = 4;

/// The attach script, after [`TRIM`] and [`TAKE`]. KEYS: hash, list, queue. ARGV: an epoch for a history
/// created now, keep (ms), now (ms), max age (ms), max messages, max bytes, the resume
/// epoch (empty for none), the resume sequence. Creates the history if missing, makes
/// both keys live `keep` from now, trims by age; returns {epoch, last seq, floor, then
/// `r` and the kept messages after the resume point if it is covered (the queue is
/// dropped: the replay has it), else `q` and the offline queue, taken}.
const ATTACH: &str = r#"
redis.call('HSETNX', KEYS[1], 'e', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local bytes = tonumber(redis.call('HGET', KEYS[1], 'b') or '0')
trim(KEYS[1], KEYS[2], tonumber(ARGV[5]), tonumber(ARGV[6]),
     tonumber(ARGV[3]) - tonumber(ARGV[4]), bytes)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local e = redis.call('HGET', KEYS[1], 'e')
local s = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
local f = tonumber(redis.call('HGET', KEYS[1], 'f') or '0')
local since = tonumber(ARGV[8])
if ARGV[7] == e and since and since >= f and since <= s then
  local out = {e, tostring(s), tostring(f), 'r'}
  for _, entry in ipairs(redis.call('LRANGE', KEYS[2], since - f, -1)) do
    out[#out + 1] = entry
  end
  redis.call('DEL', KEYS[3])
  return out
end
local out = {e, tostring(s), tostring(f), 'q'}
for _, entry in ipairs(take(KEYS[3], tonumber(ARGV[3]))) do out[#out + 1] = entry end
return out
"#;

/// Takes a uid's offline queue (once: the list is deleted), its entries not past their
/// TTL, oldest first.
const TAKE: &str = r#"
local function take(queue, now)
  local kept = {}
  for _, entry in ipairs(redis.call('LRANGE', queue, 0, -1)) do
    local until_ms = string.match(entry, '^%d+ (%d+)\n')
    if until_ms and tonumber(until_ms) > now then kept[#kept + 1] = entry end
  end
  redis.call('DEL', queue)
  return kept
end
"#;

/// The seed bind's script, after [`TAKE`]. KEYS: queue. ARGV: now (ms).
const TAKE_ONLY: &str = "return take(KEYS[1], tonumber(ARGV[1]))";

/// The take script's text (a seed tab's bind takes the offline queue).
pub fn take_script() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| format!("{TAKE}{TAKE_ONLY}"))
}

/// The push script's text.
pub fn push_script() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| format!("{TRIM}{PUSH}"))
}

/// The attach script's text.
pub fn attach_script() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| format!("{TRIM}{TAKE}{ATTACH}"))
}

/// An epoch as the scripts store it: 16 lowercase hex digits.
pub fn epoch_text(epoch: u64) -> String {
    format!("{epoch:016x}")
}

/// A fresh random epoch (never 0: 0 means "no history").
pub fn new_epoch() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    RandomState::new().hash_one(nanos).max(1)
}

/// The body of a published `h` message: `EPOCH SEQ\nPAYLOAD`. `None` for a malformed
/// one; a position of `None` for an unnumbered message (the uid has no history).
pub fn parse_numbered(body: &[u8]) -> Option<(Option<Position>, &[u8])> {
    let nl = memchr::memchr(b'\n', body)?;
    let (head, payload) = (std::str::from_utf8(&body[..nl]).ok()?, &body[nl + 1..]);
    let (epoch, seq) = head.split_once(' ')?;
    let seq: Seq = seq.parse().ok()?;
    if seq == 0 {
        return Some((None, payload));
    }
    let epoch = u64::from_str_radix(epoch, 16).ok()?;
    Some((Some(Position { epoch, seq }), payload))
}

/// What the attach script found.
#[derive(Debug, PartialEq, Eq)]
pub struct Found {
    /// The history's epoch and its last sequence.
    pub head: Position,
    /// Every message above it is kept (up to `head`).
    pub floor: Seq,
    /// The kept messages after the resume point, if it is covered: (seq, payload).
    pub after: Vec<(Seq, Vec<u8>)>,
    /// Not covered: the uid's offline queue, taken (seq, payload), oldest first.
    pub queued: Vec<(Seq, Vec<u8>)>,
}

/// Parses the attach script's answer (each item as bytes). `None` if malformed.
pub fn parse_found(items: Vec<Vec<u8>>) -> Option<Found> {
    let mut it = items.into_iter();
    let text = |b: Vec<u8>| String::from_utf8(b).ok();
    let epoch = u64::from_str_radix(&text(it.next()?)?, 16).ok()?;
    let seq = text(it.next()?)?.parse().ok()?;
    let floor = text(it.next()?)?.parse().ok()?;
    let replay = match it.next().as_deref() {
        Some(b"r") | None => true,
        Some(b"q") => false,
        Some(_) => return None,
    };
    let entries = parse_entries(it)?;
    let (after, queued) = if replay {
        (entries, Vec::new())
    } else {
        (Vec::new(), entries)
    };
    Some(Found {
        head: Position { epoch, seq },
        floor,
        after,
        queued,
    })
}

/// List entries (`SEQ NUMBER\nPAYLOAD`) as (seq, payload). `None` if one is malformed.
pub fn parse_entries(items: impl IntoIterator<Item = Vec<u8>>) -> Option<Vec<(Seq, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in items {
        let nl = memchr::memchr(b'\n', &entry)?;
        let head = std::str::from_utf8(&entry[..nl]).ok()?;
        let seq: Seq = head.split(' ').next()?.parse().ok()?;
        out.push((seq, entry[nl + 1..].to_vec()));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every slot has a tag, and a key built with it lands in that slot (the uid keys of
    /// `cluster/names.rs` rely on it; its tests check them whatever the uid).
    #[test]
    fn every_slot_has_a_tag_that_hashes_to_it() {
        assert!(slot_tags().iter().all(|&t| t != u32::MAX));
        for slot in [0, 1, 5461, 16_383] {
            assert_eq!(slot_of(key_in_slot("x:epoch:", slot).as_bytes()), slot);
            assert_eq!(slot_of(format!("{{{}}}", slot_tag(slot)).as_bytes()), slot);
        }
    }

    #[test]
    fn bodies_and_answers_parse() {
        assert_eq!(
            parse_numbered(b"00000000000000ab 7\nhi"),
            Some((
                Some(Position {
                    epoch: 0xab,
                    seq: 7
                }),
                &b"hi"[..]
            ))
        );
        assert_eq!(parse_numbered(b"0 0\nx"), Some((None, &b"x"[..])));
        assert_eq!(parse_numbered(b"zz 1\nx"), None);
        assert_eq!(parse_numbered(b"nolines"), None);
        let found = parse_found(vec![
            b"00000000000000ab".to_vec(),
            b"9".to_vec(),
            b"4".to_vec(),
            b"r".to_vec(),
            b"8 1700000000000\n{\"a\":1}".to_vec(),
            b"9 1700000000001\nb c".to_vec(),
        ]);
        assert_eq!(
            found,
            Some(Found {
                head: Position {
                    epoch: 0xab,
                    seq: 9
                },
                floor: 4,
                after: vec![(8, b"{\"a\":1}".to_vec()), (9, b"b c".to_vec())],
                queued: Vec::new(),
            })
        );
        assert_eq!(parse_found(vec![b"x".to_vec()]), None);
        assert_ne!(new_epoch(), 0);
        assert_eq!(epoch_text(0xab), "00000000000000ab");
    }
}
