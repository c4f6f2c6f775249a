//! The settings a reload (SIGHUP) may change while every connection stays up: the JWT,
//! push, events and gateway secrets, the Origin and push allow-lists, the trusted proxies. (The TLS
//! certificate is reloaded by `tls::Acceptor`.)
//!
//! Each is read where it decides something (a handshake, a bind, a backend's `/auth`,
//! an HTTP request), so what a reload changes applies from the next such decision on;
//! a connection already admitted or bound keeps what it was admitted with.

use crate::access::Cidr;
use crate::auth::Secret;
use crate::config::Config;

/// The reloadable settings; see [`Config`] for what each means.
#[derive(Debug, Clone)]
pub struct Reloadable {
    /// [`Config::jwt_secret`].
    pub jwt_secret: Option<Secret>,
    /// [`Config::push_secret`].
    pub push_secret: Option<Secret>,
    /// [`Config::allowed_origins`].
    pub allowed_origins: Option<Vec<String>>,
    /// [`Config::push_allow`].
    pub push_allow: Option<Vec<Cidr>>,
    /// [`Config::trusted_proxies`].
    pub trusted_proxies: Vec<Cidr>,
    /// [`Config::events_secret`].
    pub events_secret: Option<Secret>,
    /// GatewayClient's `$secretKey` ([`crate::config::GatewayConfig::secret`]).
    pub gateway_secret: Option<Secret>,
}

impl Reloadable {
    /// The values `config` starts with.
    pub fn from_config(config: &Config) -> Reloadable {
        Reloadable {
            jwt_secret: config.jwt_secret.clone(),
            push_secret: config.push_secret.clone(),
            allowed_origins: config.allowed_origins.clone(),
            push_allow: config.push_allow.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            events_secret: config.events_secret.clone(),
            gateway_secret: config
                .gateway
                .as_ref()
                .and_then(|g| g.secret.as_ref())
                .map(|s| Secret::new(s.as_bytes())),
        }
    }

    /// What differs in `next`, setting by setting (for the reload's log line: names and
    /// the kind of change, never values).
    pub fn changes(&self, next: &Reloadable) -> Vec<Change> {
        let secret = |old: &Option<Secret>, new: &Option<Secret>| match (old, new) {
            (None, Some(_)) => Some(How::Set),
            (Some(_), None) => Some(How::Removed),
            (Some(a), Some(b)) if a.reveal() != b.reveal() => Some(How::Rotated),
            _ => None,
        };
        let origin = |a: &String, b: &String| a.eq_ignore_ascii_case(b);
        let net = |a: &Cidr, b: &Cidr| a.covers(b);
        [
            ("jwt secret", secret(&self.jwt_secret, &next.jwt_secret)),
            ("push secret", secret(&self.push_secret, &next.push_secret)),
            (
                "events secret",
                secret(&self.events_secret, &next.events_secret),
            ),
            (
                "gateway secret",
                secret(&self.gateway_secret, &next.gateway_secret),
            ),
            (
                "allowed origins",
                allow_list(&self.allowed_origins, &next.allowed_origins, origin),
            ),
            (
                "push allow-list",
                allow_list(&self.push_allow, &next.push_allow, net),
            ),
            (
                "trusted proxies",
                trusted(&self.trusted_proxies, &next.trusted_proxies),
            ),
        ]
        .into_iter()
        .filter_map(|(setting, how)| {
            how.map(|how| Change {
                setting,
                how,
                trust: true,
            })
        })
        .collect()
    }
}

/// One setting a reload changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Its name (`jwt secret`, `push allow-list`, `tls certificate`...).
    pub setting: &'static str,
    /// How it changed.
    pub how: How,
    /// A secret, an allow-list, the trusted proxies: who may do what (logged at WARN).
    pub trust: bool,
}

impl Change {
    /// The TLS certificate and key, re-read (they are not compared).
    pub const TLS: Change = Change {
        setting: "tls certificate",
        how: How::Reloaded,
        trust: false,
    };
}

/// How a setting changed. For an allow-list "widened" means it lets in someone it did
/// not; for the trusted proxies, that more peers are believed about a browser's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// There was none (a secret, a list), now there is.
    Set,
    /// There was one, now there is none: the door is open (or, for the trusted proxies,
    /// nobody is trusted).
    Removed,
    /// A secret replaced by another.
    Rotated,
    /// Lets in everyone it did, and more.
    Widened,
    /// Lets in only some of whom it did.
    Narrowed,
    /// Lets in others: some in, some out.
    Replaced,
    /// Read again (the TLS files).
    Reloaded,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match self.how {
            How::Set => " set",
            How::Removed => " removed",
            How::Rotated => " rotated",
            How::Widened => " widened",
            How::Narrowed => " narrowed",
            How::Replaced => " replaced",
            How::Reloaded => "",
        };
        write!(f, "{}{how}", self.setting)
    }
}

/// An allow-list (`None`: everyone) from `old` to `new`; `covers(a, b)`: `a` lets in
/// everyone `b` does.
fn allow_list<T>(
    old: &Option<Vec<T>>,
    new: &Option<Vec<T>>,
    covers: impl Fn(&T, &T) -> bool,
) -> Option<How> {
    match (old, new) {
        (None, None) => None,
        (Some(_), None) => Some(How::Removed),
        (None, Some(_)) => Some(How::Set),
        (Some(old), Some(new)) => compare(old, new, covers),
    }
}

/// The trusted proxies (empty: nobody) from `old` to `new`.
fn trusted(old: &[Cidr], new: &[Cidr]) -> Option<How> {
    match (old.is_empty(), new.is_empty()) {
        (true, true) => None,
        (false, true) => Some(How::Removed),
        (true, false) => Some(How::Set),
        (false, false) => compare(old, new, |a: &Cidr, b: &Cidr| a.covers(b)),
    }
}

fn compare<T>(old: &[T], new: &[T], covers: impl Fn(&T, &T) -> bool) -> Option<How> {
    let within =
        |outer: &[T], inner: &[T]| inner.iter().all(|i| outer.iter().any(|o| covers(o, i)));
    match (within(old, new), within(new, old)) {
        (true, true) => None,
        (true, false) => Some(How::Narrowed),
        (false, true) => Some(How::Widened),
        (false, false) => Some(How::Replaced),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::parse_cidrs;

    fn with(f: impl FnOnce(&mut Reloadable)) -> Reloadable {
        let mut r = Reloadable {
            jwt_secret: Some(Secret::new("j")),
            push_secret: None,
            allowed_origins: Some(vec!["https://a.example".into()]),
            push_allow: Some(parse_cidrs("10.0.0.0/8").unwrap()),
            trusted_proxies: parse_cidrs("127.0.0.0/8").unwrap(),
            events_secret: Some(Secret::new("e")),
            gateway_secret: None,
        };
        f(&mut r);
        r
    }

    fn changes(f: impl FnOnce(&mut Reloadable)) -> Vec<String> {
        with(|_| {})
            .changes(&with(f))
            .iter()
            .map(|c| {
                assert!(c.trust);
                c.to_string()
            })
            .collect()
    }

    #[test]
    fn names_how_each_setting_changed() {
        assert!(changes(|_| {}).is_empty());
        assert_eq!(changes(|r| r.jwt_secret = None), ["jwt secret removed"]);
        assert_eq!(
            changes(|r| r.jwt_secret = Some(Secret::new("k"))),
            ["jwt secret rotated"]
        );
        assert_eq!(
            changes(|r| r.push_secret = Some(Secret::new("p"))),
            ["push secret set"]
        );
        assert_eq!(
            changes(|r| r.events_secret = Some(Secret::new("f"))),
            ["events secret rotated"]
        );
        assert_eq!(
            changes(|r| r.allowed_origins = None),
            ["allowed origins removed"]
        );
        assert_eq!(
            changes(|r| r.allowed_origins = Some(vec!["HTTPS://A.example".into()])),
            Vec::<String>::new()
        );
        assert_eq!(
            changes(|r| r
                .allowed_origins
                .as_mut()
                .unwrap()
                .push("https://b.example".into())),
            ["allowed origins widened"]
        );
        assert_eq!(
            changes(|r| r.allowed_origins = Some(Vec::new())),
            ["allowed origins narrowed"]
        );
        assert_eq!(
            changes(|r| r.push_allow = Some(parse_cidrs("10.1.0.0/16").unwrap())),
            ["push allow-list narrowed"]
        );
        assert_eq!(
            changes(|r| r.push_allow = Some(parse_cidrs("10.0.0.0/7").unwrap())),
            ["push allow-list widened"]
        );
        assert_eq!(
            changes(|r| r.push_allow = Some(parse_cidrs("192.168.0.0/16").unwrap())),
            ["push allow-list replaced"]
        );
        assert_eq!(
            changes(|r| r.trusted_proxies = Vec::new()),
            ["trusted proxies removed"]
        );
        assert_eq!(
            changes(|r| r.trusted_proxies = parse_cidrs("127.0.0.0/8,10.0.0.0/8").unwrap()),
            ["trusted proxies widened"]
        );
        assert_eq!(
            changes(|r| {
                r.jwt_secret = None;
                r.push_allow = None;
            }),
            ["jwt secret removed", "push allow-list removed"]
        );
        assert_eq!(Change::TLS.to_string(), "tls certificate");
    }
}
