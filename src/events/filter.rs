//! Who wants which events: the [`Kinds`] filter, its list syntax (`online,offline`, `*`,
//! `*,message`), and `--events-url URL[#types=LIST]` ([`Listener`]).
//!
//! `message` (what browsers send) is never in a filter that does not name it: a receiver
//! written for presence must not start getting every chat line because the daemon grew a
//! new kind. `*` is therefore every kind but `message`.

use super::event::Kind;

/// A set of kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds(u16);

/// Most webhook URLs (`--events-url`) one daemon sends to: each has its own queue and task.
pub const MAX_LISTENERS: usize = 16;

impl Kinds {
    /// Nothing.
    pub const NONE: Kinds = Kinds(0);

    /// `*`: every kind but `message`; what a listener without a filter gets.
    pub const DEFAULT: Kinds = Kinds(((1 << Kind::ALL.len()) - 1) & !(1 << Kind::Message as u16));

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: Kind) -> bool {
        self.0 & (1 << kind as u16) != 0
    }

    /// The set with `kind` added.
    pub fn with(self, kind: Kind) -> Kinds {
        Kinds(self.0 | (1 << kind as u16))
    }

    /// Both sets.
    pub fn union(self, other: Kinds) -> Kinds {
        Kinds(self.0 | other.0)
    }

    /// The kinds in the set, in [`Kind::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |&k| self.contains(k))
    }

    /// Parses a comma-separated list of kind names and `*` (spaces around names are
    /// ignored; an empty list, an empty name or an unknown one is an error that names
    /// the known ones).
    pub fn parse(list: &str) -> Result<Kinds, String> {
        let mut kinds = Kinds::NONE;
        for name in list.split(',').map(str::trim) {
            kinds = match (name, Kind::from_name(name)) {
                ("*", _) => kinds.union(Kinds::DEFAULT),
                (_, Some(kind)) => kinds.with(kind),
                ("", None) => return Err(format!("empty event type in {list:?}")),
                (_, None) => {
                    let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                    return Err(format!(
                        "unknown event type {name:?} (known: {}; `*` is all but message)",
                        known.join(", ")
                    ));
                }
            };
        }
        Ok(kinds)
    }

    /// The names, comma-separated.
    pub fn names(self) -> String {
        self.iter().map(Kind::name).collect::<Vec<_>>().join(",")
    }
}

/// Where a webhook goes: `http://` or `https://`, host, port, path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https://`.
    pub tls: bool,
    /// The host as written (a name or an IP address, IPv6 without brackets).
    pub host: String,
    /// The port (the scheme's default when none is written).
    pub port: u16,
    /// What the `Host` header says: the URL's authority.
    pub authority: String,
    /// Path and query, from `/`.
    pub path: String,
}

impl Target {
    /// Parses an absolute `http://` or `https://` URL. User info (`user:pass@`) is
    /// refused: credentials do not belong in a flag that shows in logs and `/status`, and
    /// the signature is what proves a delivery.
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => return Err(format!("{url:?}: scheme {other}:// (http or https)")),
            None => return Err(format!("{url:?}: not an absolute http:// or https:// URL")),
        };
        let authority = uri.authority().ok_or_else(|| format!("{url:?}: no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{}: user info in the URL is not supported (deliveries are signed instead)",
                Target::shown_of(tls, authority.host(), "")
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            path
        };
        Ok(Target {
            tls,
            host,
            port,
            authority: authority.as_str().to_owned(),
            path,
        })
    }

    /// The URL for logs and `/status`: scheme, authority and path; a query (which may
    /// hold a token) shows as `?...`.
    pub fn shown(&self) -> String {
        let path = match self.path.split_once('?') {
            Some((path, _)) => format!("{path}?..."),
            None => self.path.clone(),
        };
        Target::shown_of(self.tls, &self.authority, &path)
    }

    fn shown_of(tls: bool, authority: &str, path: &str) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{authority}{path}")
    }
}

/// One `--events-url`: where, and which kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Where deliveries go.
    pub target: Target,
    /// What it gets.
    pub kinds: Kinds,
}

impl Listener {
    /// Parses `URL` or `URL#types=LIST` (the fragment never leaves the daemon: HTTP sends
    /// no fragment).
    pub fn parse(spec: &str) -> Result<Listener, String> {
        let (url, filter) = match spec.split_once('#') {
            Some((url, filter)) => (url, Some(filter)),
            None => (spec, None),
        };
        let target = Target::parse(url)?;
        let kinds = match filter {
            None => Kinds::DEFAULT,
            Some(f) => match f.strip_prefix("types=") {
                Some(list) => Kinds::parse(list).map_err(|e| format!("{}: {e}", target.shown()))?,
                None => {
                    return Err(format!(
                        "{}: after `#` only `types=LIST` is understood, not {f:?}",
                        target.shown()
                    ));
                }
            },
        };
        Ok(Listener { target, kinds })
    }

    /// Every listener of the `--events-url` values: each value holds one or more
    /// specs separated by whitespace (so `PUSHWIRE_EVENTS_URL` can name several).
    /// [`check`] says whether the whole list is acceptable.
    pub fn parse_all<S: AsRef<str>>(values: &[S]) -> Result<Vec<Listener>, String> {
        values
            .iter()
            .flat_map(|v| v.as_ref().split_ascii_whitespace())
            .map(Listener::parse)
            .collect()
    }
}

/// Refuses a URL named twice and more than [`MAX_LISTENERS`].
pub fn check(listeners: &[Listener]) -> Result<(), String> {
    for (i, l) in listeners.iter().enumerate() {
        if listeners[..i].iter().any(|o| o.target == l.target) {
            return Err(format!("{} is named twice", l.target.shown()));
        }
    }
    if listeners.len() > MAX_LISTENERS {
        return Err(format!(
            "{} event URLs: at most {MAX_LISTENERS}",
            listeners.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_lists() {
        let k = Kinds::parse("online, offline").unwrap();
        assert_eq!(k.names(), "online,offline");
        assert!(!k.contains(Kind::Close));
        let all = Kinds::parse("*").unwrap();
        assert_eq!(all, Kinds::DEFAULT);
        assert!(!all.contains(Kind::Message), "* never means message");
        assert_eq!(
            all.names(),
            "online,offline,connect,bind,close,group_occupied,group_vacated"
        );
        let with = Kinds::parse("*,message").unwrap();
        assert!(with.contains(Kind::Message) && with.contains(Kind::Online));
        assert_eq!(Kinds::parse("message").unwrap().names(), "message");
        for bad in ["", "online,", "onlne", "ONLINE", "*;message"] {
            let err = Kinds::parse(bad).unwrap_err();
            assert!(err.contains("event type"), "{bad:?}: {err}");
        }
        assert!(
            Kinds::parse("x")
                .unwrap_err()
                .contains("known: online, offline")
        );
    }

    #[test]
    fn urls() {
        let t = Target::parse("https://hooks.example.com/pw?token=abc").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (true, "hooks.example.com", 443, "/pw?token=abc")
        );
        assert_eq!(t.shown(), "https://hooks.example.com/pw?...");
        let t = Target::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((t.tls, t.port, t.path.as_str()), (false, 8080, "/"));
        assert_eq!(t.authority, "127.0.0.1:8080");
        let t = Target::parse("http://[::1]:9/x").unwrap();
        assert_eq!((t.host.as_str(), t.authority.as_str()), ("::1", "[::1]:9"));
        for (bad, why) in [
            ("ftp://x/", "scheme"),
            ("/relative", "absolute"),
            ("https://user:pw@x/", "user info"),
            ("not a url", "not a URL"),
        ] {
            let err = Target::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(!err.contains("pw@"), "no credentials in errors: {err}");
        }
    }

    #[test]
    fn listener_specs() {
        let l = Listener::parse("http://h/e#types=online,offline").unwrap();
        assert_eq!(l.kinds.names(), "online,offline");
        assert_eq!(l.target.path, "/e");
        assert_eq!(Listener::parse("http://h/e").unwrap().kinds, Kinds::DEFAULT);
        assert!(
            Listener::parse("http://h/e#online")
                .unwrap_err()
                .contains("types=LIST")
        );
        assert!(Listener::parse("http://h/e#types=nope").is_err());
        let all =
            Listener::parse_all(&["http://a/ https://b/#types=message", " http://c/ "]).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].kinds.names(), "message");
        check(&all).unwrap();
        let twice = Listener::parse_all(&["http://a/", "http://a/#types=close"]).unwrap();
        assert!(check(&twice).unwrap_err().contains("twice"));
        let many: Vec<String> = (0..=MAX_LISTENERS)
            .map(|i| format!("http://h/{i}"))
            .collect();
        let many = Listener::parse_all(&many).unwrap();
        assert!(check(&many).unwrap_err().contains("at most"));
        check(&many[1..]).unwrap();
        assert!(Listener::parse_all::<&str>(&[]).unwrap().is_empty());
    }
}
