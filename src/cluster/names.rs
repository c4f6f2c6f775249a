//! Every Redis key and channel name a node uses, under its `--redis-prefix`: the one place
//! that spells them, so two clusters with different prefixes share no name on one Redis
//! (Redis pub/sub ignores the database number, so a `/db` in the URL does not separate
//! them).
//!
//! # The names, with the default prefix `pw` (byte for byte what nodes always used, so a
//! rolling upgrade mixes old and new nodes)
//! - shard channels: `pw:u:<uid>` (a uid's holders), `pw:r:<node>` (a node's answers),
//!   `pw:all` (every node), `pw:probe:{T}` (a probe per primary);
//! - per-uid keys in the slot of the uid's channel (`{T}` is chosen to hash there, see
//!   `cluster/history/scripts.rs`): `pw:h:{T}:<uid>`, `pw:l:{T}:<uid>`, `pw:q:{T}:<uid>` (history,
//!   list, offline queue), `pw:a:{T}:<uid>` (acks);
//! - `pw:d:<hash>` (a `/push` retry key), `pw:epoch:{T}` (a primary's data epoch);
//! - in one hash slot, the `{pw}` hash tag, so a script may touch several of them in a
//!   Redis Cluster: `{pw}:g:<group>`, `{pw}:ug:<uid>`, `{pw}:groups`, `{pw}:grace`,
//!   `{pw}:online`, `{pw}:on:<node>`, `{pw}:nodes`.
//!
//! The prefix's rules (and why) are on [`RedisPrefix`].

use super::history::scripts as ch;
use crate::config::RedisPrefix;

/// The names of one node's keys and channels, built once from its prefix.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// `<p>:` for names that need no slot of their own choosing.
    plain: String,
    /// `{<p>}:` for the names that share one hash slot.
    tagged: String,
    /// `<p>:u:`, the start of every uid channel (a message's channel is matched on it).
    uid_prefix: String,
    /// `<p>:all`, every node's.
    all: String,
    /// `{<p>}:groups`, every group with members.
    groups: String,
    /// `{<p>}:grace`, uid → when its grace period ends (ms).
    grace: String,
    /// `{<p>}:online`, uid → how many nodes hold it.
    online: String,
    /// `{<p>}:nodes`, node → when it stops counting as alive.
    nodes: String,
    /// `{<p>}:g:`, the start of a group's members key (the forget script appends names).
    group_prefix: String,
    /// `<p>:epoch:` and `<p>:probe:`, followed by a slot's `{T}`.
    epoch_prefix: String,
    probe_prefix: String,
}

impl Names {
    pub fn new(prefix: &RedisPrefix) -> Names {
        let p = prefix.as_str();
        let plain = format!("{p}:");
        let tagged = format!("{{{p}}}:");
        Names {
            uid_prefix: format!("{plain}u:"),
            all: format!("{plain}all"),
            groups: format!("{tagged}groups"),
            grace: format!("{tagged}grace"),
            online: format!("{tagged}online"),
            nodes: format!("{tagged}nodes"),
            group_prefix: format!("{tagged}g:"),
            epoch_prefix: format!("{plain}epoch:"),
            probe_prefix: format!("{plain}probe:"),
            plain,
            tagged,
        }
    }

    /// `<p>:p`, the start of Pusher channels' hash tags and events channel (`pusher.rs`):
    /// `:` is not allowed in a prefix, so no other prefix spells these.
    pub fn pusher_base(&self) -> String {
        format!("{}p", self.plain)
    }

    /// `{<p>}:gw:`, the start of the gateway door's keys and channels across nodes
    /// (`addressed.rs`; one slot).
    pub fn gateway_base(&self) -> String {
        format!("{}gw:", self.tagged)
    }

    /// `{<p>}:ev:`, the start of events' presence keys (`cluster_presence.rs`; one slot).
    pub fn events_base(&self) -> String {
        format!("{}ev:", self.tagged)
    }

    /// `{<p>}:figs` (node → its figures, JSON) and `{<p>}:figs:at` (node → when it last
    /// wrote them, Redis's clock): each node's row on the live page (`node_figures.rs`).
    pub fn figures(&self) -> [String; 2] {
        [
            format!("{}figs", self.tagged),
            format!("{}figs:at", self.tagged),
        ]
    }

    /// `{<p>}:ev:relay`, events decided by nodes without receivers, for a node with
    /// receivers to take (`relay.rs`).
    pub fn relay(&self) -> String {
        format!("{}ev:relay", self.tagged)
    }

    /// `{<p>}:ev:gseq`, the last `seq` of a group event (`group_occupied`/`group_vacated`)
    /// anywhere in the cluster: one number for every group, so the group scripts number
    /// their events in the order Redis ran them (in the groups' slot).
    pub fn group_seq(&self) -> String {
        format!("{}ev:gseq", self.tagged)
    }

    /// A uid's shard channel: every node holding a connection of it listens there.
    pub fn uid_channel(&self, uid: &str) -> String {
        let mut s = String::with_capacity(self.uid_prefix.len() + uid.len());
        s.push_str(&self.uid_prefix);
        s.push_str(uid);
        s
    }

    /// The uid whose channel `channel` is, if it is one.
    pub fn uid_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(self.uid_prefix.as_str())
    }

    /// Node `node`'s reply channel.
    pub fn reply_channel(&self, node: &str) -> String {
        format!("{}r:{node}", self.plain)
    }

    /// The channel every node listens on, for requests to all of them.
    pub fn all(&self) -> &str {
        &self.all
    }

    pub fn groups(&self) -> &str {
        &self.groups
    }

    pub fn grace(&self) -> &str {
        &self.grace
    }

    pub fn online(&self) -> &str {
        &self.online
    }

    pub fn nodes(&self) -> &str {
        &self.nodes
    }

    /// A group's members.
    pub fn group(&self, group: &str) -> String {
        format!("{}{group}", self.group_prefix)
    }

    /// What [`Names::group`] puts before a group's name (for a script that builds them).
    pub fn group_prefix(&self) -> &str {
        &self.group_prefix
    }

    /// A uid's groups.
    pub fn uid_groups(&self, uid: &str) -> String {
        format!("{}ug:{uid}", self.tagged)
    }

    /// The uids node `name` (its subscriber client) is counted for in [`Names::online`].
    pub fn node_uids(&self, name: &str) -> String {
        format!("{}on:{name}", self.tagged)
    }

    /// A `/push` retry key: `<p>:d:` and the hex SHA-256 (first 128 bits) of the ID, a NUL
    /// and the line.
    pub fn retry_key(&self, id: &str, line: &[u8]) -> String {
        use sha2::Digest;
        use std::fmt::Write;
        let mut h = sha2::Sha256::new();
        h.update(id.as_bytes());
        h.update([0u8]);
        h.update(line);
        let digest = h.finalize();
        let mut key = String::with_capacity(self.plain.len() + 2 + 32);
        key.push_str(&self.plain);
        key.push_str("d:");
        for b in &digest[..16] {
            let _ = write!(key, "{b:02x}");
        }
        key
    }

    /// A uid's history keys (its hash, its list and its offline queue), in the slot of
    /// the uid's channel; and that slot.
    pub fn history(&self, uid: &str) -> (u16, [String; 3]) {
        let (slot, tag) = self.uid_slot(uid);
        let key = |kind: &str| format!("{}{kind}:{{{tag}}}:{uid}", self.plain);
        (slot, [key("h"), key("l"), key("q")])
    }

    /// A uid's acknowledgements (field: the acking connection, `NODE:CONN`; value: the
    /// `EPOCH:SEQ` it acked up to), in the slot of the uid's channel; and that slot.
    pub fn acks(&self, uid: &str) -> (u16, String) {
        let (slot, tag) = self.uid_slot(uid);
        (slot, format!("{}a:{{{tag}}}:{uid}", self.plain))
    }

    /// A primary's data epoch, in `slot` (one that primary serves).
    pub fn epoch(&self, slot: u16) -> String {
        ch::key_in_slot(&self.epoch_prefix, slot)
    }

    /// A probe's shard channel, in `slot` (nobody listens on it).
    pub fn probe(&self, slot: u16) -> String {
        ch::key_in_slot(&self.probe_prefix, slot)
    }

    /// The slot of a uid's channel, and the hash tag that puts a key there.
    fn uid_slot(&self, uid: &str) -> (u16, u32) {
        let slot = ch::slot_of(self.uid_channel(uid).as_bytes());
        (slot, ch::slot_tag(slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default prefix spells every name as nodes always did, so old and new nodes
    /// of one cluster find each other during a rolling upgrade.
    #[test]
    fn the_default_prefix_keeps_every_name() {
        let n = Names::new(&RedisPrefix::default());
        assert_eq!(n.uid_channel("u1"), "pw:u:u1");
        assert_eq!(n.uid_of("pw:u:u1"), Some("u1"));
        assert_eq!(n.uid_of("pw:r:u1"), None);
        assert_eq!(n.reply_channel("ab12"), "pw:r:ab12");
        assert_eq!(n.all(), "pw:all");
        assert_eq!(n.groups(), "{pw}:groups");
        assert_eq!(n.grace(), "{pw}:grace");
        assert_eq!(n.online(), "{pw}:online");
        assert_eq!(n.nodes(), "{pw}:nodes");
        assert_eq!(n.group("g"), "{pw}:g:g");
        assert_eq!(n.group_prefix(), "{pw}:g:");
        assert_eq!(n.uid_groups("u1"), "{pw}:ug:u1");
        assert_eq!(n.node_uids("ab12"), "{pw}:on:ab12");
        let key = n.retry_key("k1", b"{\"uid\":\"u1\"}");
        assert!(key.starts_with("pw:d:") && key.len() == 5 + 32, "{key}");
        let (slot, [h, l, q]) = n.history("u1");
        let tag = ch::slot_tag(slot);
        assert_eq!(slot, ch::slot_of(b"pw:u:u1"));
        assert_eq!(
            [h, l, q],
            [
                format!("pw:h:{{{tag}}}:u1"),
                format!("pw:l:{{{tag}}}:u1"),
                format!("pw:q:{{{tag}}}:u1")
            ]
        );
        assert_eq!(n.acks("u1"), (slot, format!("pw:a:{{{tag}}}:u1")));
        assert_eq!(n.epoch(0), ch::key_in_slot("pw:epoch:", 0));
        assert_eq!(n.probe(0), ch::key_in_slot("pw:probe:", 0));
    }

    /// Under another prefix every name changes, and keeps its slot rules: the `{p}` names
    /// share a slot, and a uid's keys sit in its channel's slot, whatever the uid.
    #[test]
    fn a_prefix_moves_every_name_and_keeps_the_slots() {
        let p = RedisPrefix::parse("staging-2.eu_w").unwrap();
        let n = Names::new(&p);
        let d = Names::new(&RedisPrefix::default());
        let tagged = [
            n.groups().to_owned(),
            n.grace().to_owned(),
            n.online().to_owned(),
            n.nodes().to_owned(),
            n.group("g"),
            n.uid_groups("u"),
            n.node_uids("x"),
        ];
        for name in &tagged {
            assert!(name.starts_with("{staging-2.eu_w}:"), "{name}");
            assert_eq!(ch::slot_of(name.as_bytes()), ch::slot_of(b"staging-2.eu_w"));
        }
        for uid in ["u1", "a{b}c", "x}y", "{}", "{", "é", ""] {
            let channel = n.uid_channel(uid);
            assert!(channel.starts_with("staging-2.eu_w:u:"));
            assert_ne!(channel, d.uid_channel(uid));
            let (slot, keys) = n.history(uid);
            assert_eq!(slot, ch::slot_of(channel.as_bytes()), "{uid:?}");
            for k in keys.iter().chain([&n.acks(uid).1]) {
                assert!(k.starts_with("staging-2.eu_w:"), "{k}");
                assert_eq!(ch::slot_of(k.as_bytes()), slot, "{k}");
            }
        }
        assert!(n.retry_key("k", b"x").starts_with("staging-2.eu_w:d:"));
        assert_ne!(n.reply_channel("a"), d.reply_channel("a"));
        assert_ne!(n.all(), d.all());
        assert_eq!(ch::slot_of(n.epoch(7).as_bytes()), 7);
        assert_eq!(ch::slot_of(n.probe(7).as_bytes()), 7);
    }
}
