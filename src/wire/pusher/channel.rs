//! Channel names and what their prefixes mean, user ids, and `socket_id`s.

use std::fmt;
use std::sync::Arc;

/// Longest channel name, in bytes: the limit every Pusher server SDK checks before it
/// sends (pusher-http-node, -php and -python refuse longer names), and Soketi's default.
pub const MAX_CHANNEL_NAME: usize = 200;
/// Longest user id (presence `user_id`, the signed-in user's `id`), in bytes (the limit
/// pusher-http-python's `validate_user_id` applies). A `#server-to-user-{id}` channel
/// may therefore be up to `16 + 200` bytes.
pub const MAX_USER_ID: usize = 200;
/// The prefix of the channel pusher-js subscribes after `pusher:signin`, and
/// `sendToUser` publishes on.
pub const SERVER_TO_USER: &str = "#server-to-user-";

/// Who may subscribe to a channel, from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// No prefix (or `cache-`): anyone.
    Public,
    /// `private-`: a channel auth signature over `socket_id:channel`.
    Private,
    /// `private-encrypted-`: signed like `private-`; the server SDK encrypts the payloads
    /// and the daemon relays them as they are.
    Encrypted,
    /// `presence-`: signed over `socket_id:channel:channel_data`; members are users.
    Presence,
    /// `#server-to-user-{id}`: only a connection signed in (`pusher:signin`) as `id`.
    User,
}

/// What a channel name's prefix says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kind {
    /// Who may subscribe.
    pub access: Access,
    /// A cache channel (`cache-`, `private-cache-`, `private-encrypted-cache-`,
    /// `presence-cache-`): the last event is replayed to each new subscriber, or
    /// `pusher:cache_miss` is sent.
    pub cache: bool,
}

impl Kind {
    /// Whether a subscription needs a channel auth signature (`auth`).
    pub fn signed(self) -> bool {
        matches!(
            self.access,
            Access::Private | Access::Encrypted | Access::Presence
        )
    }

    /// Whether members may send client events (`client-*`) on it: only on channels a
    /// signature admitted them to (Pusher's rule).
    pub fn allows_client_events(self) -> bool {
        self.signed()
    }
}

/// Why a channel name (or a user id) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Empty.
    Empty,
    /// Longer than [`MAX_CHANNEL_NAME`] (or a user id over [`MAX_USER_ID`]).
    TooLong,
    /// A byte outside `[-a-zA-Z0-9_=@,.;]` (a `#` is allowed only as the start of
    /// `#server-to-user-`).
    BadCharacter,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Empty => "empty channel name",
            NameError::TooLong => "channel name too long (max 200 bytes)",
            NameError::BadCharacter => "channel name may hold only [-a-zA-Z0-9_=@,.;]",
        })
    }
}

/// The bytes a channel name (after an optional `#server-to-user-`) may hold: the class
/// every Pusher server SDK validates with, `[-a-zA-Z0-9_=@,.;]`.
pub fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'@' | b',' | b'.' | b';')
}

/// A valid channel name and its kind. Cheap to clone (the index and each connection's
/// subscriptions share the name).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Channel {
    name: Arc<str>,
    kind: Kind,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Channel({:?})", self.name)
    }
}

impl Channel {
    /// Checks `name` and reads its kind.
    pub fn parse(name: &str) -> Result<Channel, NameError> {
        let kind = kind_of(name)?;
        Ok(Channel {
            name: Arc::from(name),
            kind,
        })
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shared name.
    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    /// What the prefix says.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The user a `#server-to-user-{id}` channel belongs to.
    pub fn user(&self) -> Option<&str> {
        self.name.strip_prefix(SERVER_TO_USER)
    }
}

/// The kind of a valid channel `name`, or why it is not one. No allocation, so the HTTP
/// API can check a 100-channel event before it copies anything.
pub fn kind_of(name: &str) -> Result<Kind, NameError> {
    if let Some(user) = name.strip_prefix(SERVER_TO_USER) {
        check_user_id(user)?;
        return Ok(Kind {
            access: Access::User,
            cache: false,
        });
    }
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_CHANNEL_NAME {
        return Err(NameError::TooLong);
    }
    if !name.bytes().all(is_name_byte) {
        return Err(NameError::BadCharacter);
    }
    // Longest prefix first: `private-encrypted-` before `private-`.
    const PREFIXES: [(&str, Access, bool); 7] = [
        ("private-encrypted-cache-", Access::Encrypted, true),
        ("private-encrypted-", Access::Encrypted, false),
        ("private-cache-", Access::Private, true),
        ("private-", Access::Private, false),
        ("presence-cache-", Access::Presence, true),
        ("presence-", Access::Presence, false),
        ("cache-", Access::Public, true),
    ];
    let (access, cache) = PREFIXES
        .iter()
        .find(|(p, _, _)| name.starts_with(p))
        .map_or((Access::Public, false), |&(_, a, c)| (a, c));
    Ok(Kind { access, cache })
}

/// Checks a user id that names a `#server-to-user-` channel: 1 to [`MAX_USER_ID`] bytes of
/// the channel name class (pusher-js subscribes `#server-to-user-{id}` after signin, so an
/// id outside it could never receive anything).
pub fn check_user_id(id: &str) -> Result<(), NameError> {
    if id.is_empty() {
        return Err(NameError::Empty);
    }
    if id.len() > MAX_USER_ID {
        return Err(NameError::TooLong);
    }
    if !id.bytes().all(is_name_byte) {
        return Err(NameError::BadCharacter);
    }
    Ok(())
}

/// A connection's `socket_id`: two decimal numbers joined by a dot, the shape every
/// Pusher server SDK validates (`\A\d+\.\d+\z`) before it signs or excludes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId {
    /// The part before the dot.
    pub high: u64,
    /// The part after the dot.
    pub low: u64,
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.high, self.low)
    }
}

impl SocketId {
    /// Parses `HIGH.LOW` (decimal digits only, each fitting 64 bits). Leading zeros are
    /// refused, so each id has exactly one spelling and an exclusion by `socket_id` can
    /// compare numbers.
    pub fn parse(s: &str) -> Option<SocketId> {
        let (high, low) = s.split_once('.')?;
        Some(SocketId {
            high: decimal(high)?,
            low: decimal(low)?,
        })
    }
}

fn decimal(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str) -> (Access, bool) {
        let k = kind_of(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        (k.access, k.cache)
    }

    #[test]
    fn prefixes_name_kinds() {
        assert_eq!(kind("orders"), (Access::Public, false));
        assert_eq!(kind("cache-orders"), (Access::Public, true));
        assert_eq!(kind("private-orders.5"), (Access::Private, false));
        assert_eq!(kind("private-cache-x"), (Access::Private, true));
        assert_eq!(kind("private-encrypted-x"), (Access::Encrypted, false));
        assert_eq!(kind("private-encrypted-cache-x"), (Access::Encrypted, true));
        assert_eq!(kind("presence-room.1"), (Access::Presence, false));
        assert_eq!(kind("presence-cache-room"), (Access::Presence, true));
        assert_eq!(kind("#server-to-user-42"), (Access::User, false));
        // A prefix is a prefix: these are public.
        assert_eq!(kind("privateorders"), (Access::Public, false));
        assert_eq!(kind("my-private-x"), (Access::Public, false));
        // Laravel's names: dots, and `App.Models.User.5`.
        assert_eq!(kind("private-App.Models.User.5"), (Access::Private, false));
        assert!(kind_of("private-x").is_ok_and(|k| k.signed() && k.allows_client_events()));
        assert!(kind_of("cache-x").is_ok_and(|k| !k.signed() && !k.allows_client_events()));
    }

    #[test]
    fn names_are_bounded_and_classed() {
        assert_eq!(kind_of(""), Err(NameError::Empty));
        assert_eq!(
            kind_of(&"a".repeat(200)).map(|k| k.access),
            Ok(Access::Public)
        );
        assert_eq!(kind_of(&"a".repeat(201)), Err(NameError::TooLong));
        for bad in [
            "a b",
            "a/b",
            "é",
            "a#b",
            "#x",
            "#server-to-user-",
            "a\0",
            "a:b",
        ] {
            assert!(kind_of(bad).is_err(), "{bad:?}");
        }
        assert_eq!(kind_of("#server-to-user-"), Err(NameError::Empty));
        let long_user = format!("{SERVER_TO_USER}{}", "u".repeat(200));
        assert_eq!(kind_of(&long_user).map(|k| k.access), Ok(Access::User));
        assert_eq!(kind_of(&format!("{long_user}u")), Err(NameError::TooLong));
        let c = Channel::parse("#server-to-user-ann").unwrap();
        assert_eq!((c.name(), c.user()), ("#server-to-user-ann", Some("ann")));
        assert_eq!(Channel::parse("orders").unwrap().user(), None);
    }

    #[test]
    fn socket_ids() {
        let id = SocketId::parse("123.456").unwrap();
        assert_eq!((id.high, id.low), (123, 456));
        assert_eq!(id.to_string(), "123.456");
        let max = format!("{}.0", u64::MAX);
        assert_eq!(SocketId::parse(&max).map(|s| s.to_string()), Some(max));
        for bad in [
            "",
            ".",
            "1.",
            ".1",
            "1.2.3",
            "a.1",
            "1.-2",
            "+1.2",
            "01.2",
            "1.02",
            "1 .2",
            "18446744073709551616.1",
        ] {
            assert_eq!(SocketId::parse(bad), None, "{bad:?}");
        }
        assert_eq!(SocketId::parse("0.0"), Some(SocketId { high: 0, low: 0 }));
    }
}
