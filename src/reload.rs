//! What a reload (SIGHUP) applies: the reload env file ([`crate::envfile`]) laid over the
//! settings in force, decided before anything is swapped.
//!
//! The rules (docs/deployment.md, "Reload"), so that no reload opens a door by accident:
//! - a setting the file does not name keeps the value in force (at the first reload, what
//!   the process started with: flags, environment, credentials), so an empty or truncated
//!   file changes nothing;
//! - only a documented value removes a setting: `none` for a secret, `any` for an
//!   allow-list; an empty value (`NAME=`) is refused, not read as "unset";
//! - a `PUSHWIRE_` name the daemon does not know (misspelt) refuses the whole file, as does
//!   any line [`crate::envfile`] refuses; other names (`RUST_LOG`, `SSL_CERT_FILE`: the
//!   file is also systemd's) are left alone;
//! - a setting given as a flag keeps it for the life of the process.
//!
//! Secret files are read again at every reload, so rotating one needs no edit here.

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::access::{Cidr, parse_cidrs};
use crate::auth::Secret;
use crate::envfile::{Entry, EnvFile};
use crate::reloadable::{Change, Reloadable};
use crate::state::State;
use crate::tls::TlsFiles;

/// A setting a reload may change; one or two variables name it ([`VARIABLES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `PUSHWIRE_JWT_SECRET` or `PUSHWIRE_JWT_SECRET_FILE`.
    JwtSecret,
    /// `PUSHWIRE_PUSH_SECRET` or `PUSHWIRE_PUSH_SECRET_FILE`.
    PushSecret,
    /// `PUSHWIRE_EVENTS_SECRET` or `PUSHWIRE_EVENTS_SECRET_FILE`.
    EventsSecret,
    /// `PUSHWIRE_GATEWAY_SECRET` or `PUSHWIRE_GATEWAY_SECRET_FILE`.
    GatewaySecret,
    /// `PUSHWIRE_ALLOWED_ORIGINS`.
    AllowedOrigins,
    /// `PUSHWIRE_PUSH_ALLOW`.
    PushAllow,
    /// `PUSHWIRE_TRUSTED_PROXIES`.
    TrustedProxies,
    /// `PUSHWIRE_TLS_CERT`.
    TlsCert,
    /// `PUSHWIRE_TLS_KEY`.
    TlsKey,
}

impl Setting {
    /// What the file writes to remove it, if anything may.
    fn removal(self) -> Option<&'static str> {
        match self {
            Setting::JwtSecret
            | Setting::PushSecret
            | Setting::EventsSecret
            | Setting::GatewaySecret => Some("`none` to remove the secret"),
            Setting::AllowedOrigins | Setting::PushAllow => Some("`any` to let everyone in"),
            Setting::TrustedProxies => Some("`none` to trust no proxy"),
            Setting::TlsCert | Setting::TlsKey => None,
        }
    }
}

/// The variables a reload reads, and the setting each names.
pub const VARIABLES: [(&str, Setting); 13] = [
    ("PUSHWIRE_JWT_SECRET", Setting::JwtSecret),
    ("PUSHWIRE_JWT_SECRET_FILE", Setting::JwtSecret),
    ("PUSHWIRE_PUSH_SECRET", Setting::PushSecret),
    ("PUSHWIRE_PUSH_SECRET_FILE", Setting::PushSecret),
    ("PUSHWIRE_EVENTS_SECRET", Setting::EventsSecret),
    ("PUSHWIRE_EVENTS_SECRET_FILE", Setting::EventsSecret),
    ("PUSHWIRE_GATEWAY_SECRET", Setting::GatewaySecret),
    ("PUSHWIRE_GATEWAY_SECRET_FILE", Setting::GatewaySecret),
    ("PUSHWIRE_ALLOWED_ORIGINS", Setting::AllowedOrigins),
    ("PUSHWIRE_PUSH_ALLOW", Setting::PushAllow),
    ("PUSHWIRE_TRUSTED_PROXIES", Setting::TrustedProxies),
    ("PUSHWIRE_TLS_CERT", Setting::TlsCert),
    ("PUSHWIRE_TLS_KEY", Setting::TlsKey),
];

/// `none`: no secret; no trusted proxy.
pub const NONE: &str = "none";
/// `any`: an allow-list that lets everyone in (as if unset).
pub const ANY: &str = "any";

/// Where a secret comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// No secret: that door is open.
    Off,
    /// The secret itself.
    Literal(Secret),
    /// A file holding it, read at start and at every reload.
    File(PathBuf),
}

impl SecretSource {
    /// From `--x-secret-file` / `--x-secret` (or their variables): `none` (any case) or an
    /// empty literal is no secret.
    pub fn given(file: Option<&Path>, literal: Option<&str>) -> SecretSource {
        match (file, literal) {
            (Some(path), _) if path.as_os_str().eq_ignore_ascii_case(NONE) => SecretSource::Off,
            (Some(path), _) => SecretSource::File(path.to_owned()),
            (None, Some(s)) if s.is_empty() || s.eq_ignore_ascii_case(NONE) => SecretSource::Off,
            (None, Some(s)) => SecretSource::Literal(Secret::new(s.as_bytes())),
            (None, None) => SecretSource::Off,
        }
    }

    /// The secret: a file is read now (a trailing newline ignored; empty is an error).
    pub fn read(&self) -> Result<Option<Secret>, String> {
        match self {
            SecretSource::Off => Ok(None),
            SecretSource::Literal(s) => Ok(Some(s.clone())),
            SecretSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let trimmed = bytes.trim_ascii_end();
                if trimmed.is_empty() {
                    return Err(format!("{}: empty secret", path.display()));
                }
                Ok(Some(Secret::new(trimmed)))
            }
        }
    }
}

/// `--allowed-origins`: comma-separated Origins (spaces around each ignored), or `any`.
pub fn parse_origins(s: &str) -> Option<Vec<String>> {
    if s.trim().eq_ignore_ascii_case(ANY) {
        return None;
    }
    Some(
        s.split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

/// `--push-allow`: comma-separated networks, or `any`.
pub fn parse_push_allow(s: &str) -> Result<Option<Vec<Cidr>>, String> {
    if s.trim().eq_ignore_ascii_case(ANY) {
        return Ok(None);
    }
    parse_cidrs(s).map(Some)
}

/// `--trusted-proxies`: comma-separated networks, or `none` (an empty list too).
pub fn parse_trusted_proxies(s: &str) -> Result<Vec<Cidr>, String> {
    if s.trim().eq_ignore_ascii_case(NONE) {
        return Ok(Vec::new());
    }
    parse_cidrs(s)
}

/// The reloadable settings as given: secrets by source (files not read yet).
#[derive(Debug, Clone)]
pub struct Sources {
    /// `--jwt-secret(-file)`.
    pub jwt_secret: SecretSource,
    /// `--push-secret(-file)`.
    pub push_secret: SecretSource,
    /// `--events-secret(-file)`.
    pub events_secret: SecretSource,
    /// `--gateway-secret(-file)`; `None`: neither was given, so GatewayClient's
    /// `$secretKey` is the push secret in force (it follows the push secret's reloads).
    pub gateway_secret: Option<SecretSource>,
    /// `--allowed-origins` (`None`: any).
    pub allowed_origins: Option<Vec<String>>,
    /// `--push-allow` (`None`: anyone).
    pub push_allow: Option<Vec<Cidr>>,
    /// `--trusted-proxies`.
    pub trusted_proxies: Vec<Cidr>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
}

/// The settings the next reload would apply.
#[derive(Debug, Clone)]
pub struct Next {
    /// The sources after the file.
    pub sources: Sources,
    /// The file's variables left aside because their setting was given as a flag.
    pub pinned: Vec<String>,
}

impl Sources {
    /// `self` with what `file` names laid over it, except the `pinned` settings (given as
    /// flags). `known` is every variable the daemon reads (`PUSHWIRE_*`). Errors name the
    /// line and the variable, never the value.
    pub fn overlay(
        &self,
        file: &EnvFile,
        known: &[&str],
        pinned: &[Setting],
    ) -> Result<Next, String> {
        let mut named: Vec<(&Entry, Setting)> = Vec::new();
        let mut left_aside = Vec::new();
        for entry in &file.entries {
            let key = entry.key.as_str();
            if ours(key) && !known.contains(&key) {
                return Err(format!(
                    "line {}: unknown setting {key} (misspelt? `pushwire --help` lists each \
                     variable)",
                    entry.line
                ));
            }
            let Some(&(_, setting)) = VARIABLES.iter().find(|(v, _)| *v == key) else {
                continue;
            };
            if pinned.contains(&setting) {
                if !left_aside.iter().any(|k| k == key) {
                    left_aside.push(key.to_owned());
                }
                continue;
            }
            if entry.value.trim().is_empty() {
                let write = setting
                    .removal()
                    .map_or_else(String::new, |r| format!("write {r}, or "));
                return Err(format!(
                    "line {} ({key}): empty: {write}comment the line out to keep what is in force",
                    entry.line,
                ));
            }
            named.retain(|(e, _)| e.key != key);
            named.push((entry, setting));
        }
        let get = |var: &str| named.iter().find(|(e, _)| e.key == var).map(|(e, _)| *e);
        let at = |e: &Entry, err: String| format!("line {} ({}): {err}", e.line, e.key);

        let mut next = self.clone();
        for (literal, file, slot) in [
            (
                "PUSHWIRE_JWT_SECRET",
                "PUSHWIRE_JWT_SECRET_FILE",
                &mut next.jwt_secret,
            ),
            (
                "PUSHWIRE_PUSH_SECRET",
                "PUSHWIRE_PUSH_SECRET_FILE",
                &mut next.push_secret,
            ),
            (
                "PUSHWIRE_EVENTS_SECRET",
                "PUSHWIRE_EVENTS_SECRET_FILE",
                &mut next.events_secret,
            ),
        ] {
            *slot = match (get(literal), get(file)) {
                (Some(a), Some(b)) => {
                    return Err(format!(
                        "lines {} and {}: {literal} and {file} both set: name one",
                        a.line, b.line
                    ));
                }
                (Some(e), None) => SecretSource::given(None, Some(&e.value)),
                (None, Some(e)) => SecretSource::given(Some(Path::new(&e.value)), None),
                (None, None) => continue,
            };
        }
        match (
            get("PUSHWIRE_GATEWAY_SECRET"),
            get("PUSHWIRE_GATEWAY_SECRET_FILE"),
        ) {
            (Some(a), Some(b)) => {
                return Err(format!(
                    "lines {} and {}: PUSHWIRE_GATEWAY_SECRET and PUSHWIRE_GATEWAY_SECRET_FILE \
                     both set: name one",
                    a.line, b.line
                ));
            }
            (Some(e), None) => {
                next.gateway_secret = Some(SecretSource::given(None, Some(&e.value)));
            }
            (None, Some(e)) => {
                next.gateway_secret = Some(SecretSource::given(Some(Path::new(&e.value)), None));
            }
            (None, None) => {}
        }
        if let Some(e) = get("PUSHWIRE_ALLOWED_ORIGINS") {
            next.allowed_origins = parse_origins(&e.value);
        }
        if let Some(e) = get("PUSHWIRE_PUSH_ALLOW") {
            next.push_allow = parse_push_allow(&e.value).map_err(|err| at(e, err))?;
        }
        if let Some(e) = get("PUSHWIRE_TRUSTED_PROXIES") {
            next.trusted_proxies = parse_trusted_proxies(&e.value).map_err(|err| at(e, err))?;
        }
        if let Some(e) = get("PUSHWIRE_TLS_CERT") {
            next.tls_cert = Some(PathBuf::from(&e.value));
        }
        if let Some(e) = get("PUSHWIRE_TLS_KEY") {
            next.tls_key = Some(PathBuf::from(&e.value));
        }
        Ok(Next {
            sources: next,
            pinned: left_aside,
        })
    }

    /// The values in force with these sources: the secret files are read now.
    pub fn resolve(&self) -> Result<Reloadable, String> {
        let push_secret = self
            .push_secret
            .read()
            .map_err(|e| format!("push secret: {e}"))?;
        Ok(Reloadable {
            jwt_secret: self
                .jwt_secret
                .read()
                .map_err(|e| format!("JWT secret: {e}"))?,
            gateway_secret: match &self.gateway_secret {
                Some(source) => source.read().map_err(|e| format!("gateway secret: {e}"))?,
                None => push_secret.clone(),
            },
            push_secret,
            allowed_origins: self.allowed_origins.clone(),
            push_allow: self.push_allow.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
            events_secret: self
                .events_secret
                .read()
                .map_err(|e| format!("events secret: {e}"))?,
        })
    }

    /// The certificate and key files, both or neither.
    pub fn tls(&self) -> Result<Option<(PathBuf, PathBuf)>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some((cert.clone(), key.clone()))),
            (None, None) => Ok(None),
            _ => Err("--tls-cert and --tls-key go together".into()),
        }
    }
}

/// SIGHUP's memory: the settings in force as given (so a secret file is read again), the
/// reload env file, and what it may not change.
#[derive(Debug)]
pub struct Reloader {
    file: Option<PathBuf>,
    sources: Sources,
    pinned: Vec<Setting>,
    /// Every `PUSHWIRE_*` variable the daemon reads: any other in the file is a typo.
    known: Vec<String>,
}

impl Reloader {
    /// Starts from the settings the process started with (`sources`), with the reload env
    /// file (`--reload-env-file`), the settings given as flags and every variable the
    /// daemon knows.
    pub fn new(
        file: Option<PathBuf>,
        sources: Sources,
        pinned: Vec<Setting>,
        known: Vec<String>,
    ) -> Reloader {
        Reloader {
            file,
            sources,
            pinned,
            known,
        }
    }

    /// What the next reload would apply: the env file (read once, whole) over the
    /// settings in force; without one, the same settings (their files read again). The
    /// error names the file.
    pub fn next(&self) -> Result<Next, String> {
        let Some(path) = &self.file else {
            return Ok(Next {
                sources: self.sources.clone(),
                pinned: Vec::new(),
            });
        };
        let at = |e: String| format!("{}: {e}", path.display());
        let file = crate::envfile::read(path).map_err(|e| at(e.to_string()))?;
        let known: Vec<&str> = self.known.iter().map(String::as_str).collect();
        self.sources
            .overlay(&file, &known, &self.pinned)
            .map_err(at)
    }

    /// SIGHUP: reads everything the next settings need (the env file, the secret files,
    /// the TLS files) and swaps them into `state`; established connections stay. Any
    /// error changes nothing and is logged at WARN with the reason. A change to a secret,
    /// an allow-list or the trusted proxies is logged at WARN (names, never values),
    /// others at INFO.
    pub fn reload(&mut self, state: &State) {
        let applied = self.next().and_then(|next| {
            let values = next.sources.resolve()?;
            let tls = next
                .sources
                .tls()?
                .map(|(cert, key)| TlsFiles { cert, key });
            let changes = state.reload(values, tls.as_ref())?;
            Ok((next, changes))
        });
        let (next, changes) = match applied {
            Ok(applied) => applied,
            Err(err) => return warn!(error = %err, "reload failed; the settings in use stay"),
        };
        if !next.pinned.is_empty() {
            info!(
                variables = %next.pinned.join(", "),
                "the reload env file names settings given as flags: left as the flags say"
            );
        }
        self.sources = next.sources;
        let list = changes
            .iter()
            .map(Change::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if changes.is_empty() {
            info!("reloaded: nothing changed");
        } else if changes.iter().any(|c| c.trust) {
            warn!(changed = %list, "reloaded: trust settings changed");
        } else {
            info!(changed = %list, "reloaded");
        }
    }
}

/// A name meant for pushwire: `PUSHWIRE_...` in any case, `_` or not (`pushwire_x`,
/// `PUSH_WIRE_X`).
fn ours(key: &str) -> bool {
    let squeezed: String = key
        .chars()
        .filter(|&c| c != '_')
        .take(8)
        .collect::<String>()
        .to_ascii_uppercase();
    squeezed == "PUSHWIRE"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envfile::parse;

    const KNOWN: [&str; 15] = [
        "PUSHWIRE_GATEWAY_SECRET",
        "PUSHWIRE_GATEWAY_SECRET_FILE",
        "PUSHWIRE_JWT_SECRET",
        "PUSHWIRE_JWT_SECRET_FILE",
        "PUSHWIRE_PUSH_SECRET",
        "PUSHWIRE_PUSH_SECRET_FILE",
        "PUSHWIRE_EVENTS_SECRET",
        "PUSHWIRE_EVENTS_SECRET_FILE",
        "PUSHWIRE_ALLOWED_ORIGINS",
        "PUSHWIRE_PUSH_ALLOW",
        "PUSHWIRE_TRUSTED_PROXIES",
        "PUSHWIRE_TLS_CERT",
        "PUSHWIRE_TLS_KEY",
        "PUSHWIRE_WS_LISTEN",
        "PUSHWIRE_REDIS",
    ];

    /// What a process started with: both secrets, both lists, loopback proxies.
    fn started() -> Sources {
        Sources {
            jwt_secret: SecretSource::File("/run/credentials/pushwire.service/jwt".into()),
            push_secret: SecretSource::Literal(Secret::new("push")),
            events_secret: SecretSource::Off,
            gateway_secret: None,
            allowed_origins: Some(vec!["https://a.example".into()]),
            push_allow: Some(parse_cidrs("10.0.0.0/8").unwrap()),
            trusted_proxies: parse_cidrs("127.0.0.0/8").unwrap(),
            tls_cert: None,
            tls_key: None,
        }
    }

    fn over(text: &str, pinned: &[Setting]) -> Result<Next, String> {
        let file = parse(text.as_bytes()).map_err(|e| e.to_string())?;
        started().overlay(&file, &KNOWN, pinned)
    }

    fn next(text: &str) -> Sources {
        over(text, &[])
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .sources
    }

    /// A comparable picture of the sources (secrets by source, not value).
    fn shape(s: &Sources) -> String {
        let secret = |s: &SecretSource| match s {
            SecretSource::Off => "off".to_owned(),
            SecretSource::Literal(x) => {
                format!("literal {:?}", String::from_utf8_lossy(x.reveal()))
            }
            SecretSource::File(p) => format!("file {}", p.display()),
        };
        let nets = |n: &[Cidr]| {
            n.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "jwt={} push={} origins={:?} allow={:?} trusted={} tls={:?}/{:?}",
            secret(&s.jwt_secret),
            secret(&s.push_secret),
            s.allowed_origins,
            s.push_allow.as_deref().map(nets),
            nets(&s.trusted_proxies),
            s.tls_cert,
            s.tls_key
        )
    }

    #[test]
    fn a_file_that_names_nothing_keeps_everything() {
        for text in [
            "",
            "\n",
            "# comments only\n; and more\n",
            "RUST_LOG=debug\nSSL_CERT_FILE=/x\n",
        ] {
            assert_eq!(shape(&next(text)), shape(&started()), "{text:?}");
        }
        // Restart-only settings are known and left for the next start.
        assert_eq!(
            shape(&next("PUSHWIRE_WS_LISTEN=0.0.0.0:1\n")),
            shape(&started())
        );
    }

    #[test]
    fn only_none_and_any_remove_a_setting() {
        let removed = next(
            "PUSHWIRE_JWT_SECRET_FILE=none\nPUSHWIRE_PUSH_SECRET=NONE\n\
             PUSHWIRE_ALLOWED_ORIGINS=any\nPUSHWIRE_PUSH_ALLOW=Any\nPUSHWIRE_TRUSTED_PROXIES=none\n",
        );
        assert_eq!(
            shape(&removed),
            "jwt=off push=off origins=None allow=None trusted= tls=None/None"
        );
        let resolved = removed.resolve().unwrap();
        assert!(resolved.jwt_secret.is_none() && resolved.push_secret.is_none());
        // `PUSHWIRE_JWT_SECRET=none` also removes a secret that came from a file.
        assert!(matches!(
            next("PUSHWIRE_JWT_SECRET=none\n").jwt_secret,
            SecretSource::Off
        ));
    }

    #[test]
    fn a_named_setting_replaces_the_one_in_force() {
        let s = next(
            "PUSHWIRE_JWT_SECRET=literal\nPUSHWIRE_PUSH_SECRET_FILE=/etc/p\n\
             PUSHWIRE_ALLOWED_ORIGINS=https://b.example, https://c.example\n\
             PUSHWIRE_PUSH_ALLOW=192.168.0.0/16\nPUSHWIRE_TRUSTED_PROXIES=10.0.0.1\n\
             PUSHWIRE_TLS_CERT=/c\nPUSHWIRE_TLS_KEY=/k\n",
        );
        assert_eq!(
            shape(&s),
            "jwt=literal \"literal\" push=file /etc/p \
             origins=Some([\"https://b.example\", \"https://c.example\"]) \
             allow=Some(\"192.168.0.0/16\") trusted=10.0.0.1/32 tls=Some(\"/c\")/Some(\"/k\")"
        );
        // The last assignment of a variable wins, as for systemd.
        assert_eq!(
            next("PUSHWIRE_PUSH_ALLOW=1.0.0.0/8\nPUSHWIRE_PUSH_ALLOW=2.0.0.0/8\n")
                .push_allow
                .unwrap()[0]
                .to_string(),
            "2.0.0.0/8"
        );
    }

    #[test]
    fn refuses_unknown_names_empty_values_and_two_sources() {
        let err = |text: &str| over(text, &[]).map(|n| shape(&n.sources)).unwrap_err();
        assert_eq!(
            err("PUSHWIRE_PUSH_SECERT=x\n"),
            "line 1: unknown setting PUSHWIRE_PUSH_SECERT (misspelt? `pushwire --help` lists each variable)"
        );
        for name in ["pushwire_push_secret", "PUSH_WIRE_JWT_SECRET", "Pushwire_X"] {
            assert!(
                err(&format!("# x\n{name}=1\n"))
                    .starts_with(&format!("line 2: unknown setting {name}"))
            );
        }
        assert_eq!(
            err("PUSHWIRE_PUSH_SECRET=\n"),
            "line 1 (PUSHWIRE_PUSH_SECRET): empty: write `none` to remove the secret, or comment \
             the line out to keep what is in force"
        );
        assert!(err("PUSHWIRE_PUSH_ALLOW= \n").contains("write `any`"));
        assert!(
            err("PUSHWIRE_TLS_CERT=''\n").starts_with("line 1 (PUSHWIRE_TLS_CERT): empty: comment")
        );
        assert_eq!(
            err("PUSHWIRE_JWT_SECRET=a\nPUSHWIRE_JWT_SECRET_FILE=/b\n"),
            "lines 1 and 2: PUSHWIRE_JWT_SECRET and PUSHWIRE_JWT_SECRET_FILE both set: name one"
        );
        let bad = err("PUSHWIRE_TRUSTED_PROXIES=10.0.0.0/33\n");
        assert!(
            bad.starts_with("line 1 (PUSHWIRE_TRUSTED_PROXIES): "),
            "{bad}"
        );
    }

    #[test]
    fn a_setting_given_as_a_flag_ignores_the_file() {
        let n = over(
            "PUSHWIRE_JWT_SECRET=x\nPUSHWIRE_JWT_SECRET_FILE=none\nPUSHWIRE_PUSH_ALLOW=any\nPUSHWIRE_JWT_SECRET=y\n",
            &[Setting::JwtSecret],
        )
        .unwrap();
        assert!(matches!(n.sources.jwt_secret, SecretSource::File(_)));
        assert!(n.sources.push_allow.is_none());
        assert_eq!(
            n.pinned,
            ["PUSHWIRE_JWT_SECRET", "PUSHWIRE_JWT_SECRET_FILE"]
        );
    }

    #[test]
    fn secret_sources_read_files_each_time() {
        let dir = std::env::temp_dir().join(format!("pushwire-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        let source = SecretSource::given(Some(&path), None);
        std::fs::write(&path, "one\n").unwrap();
        assert_eq!(source.read().unwrap().unwrap().reveal(), b"one");
        std::fs::write(&path, "two").unwrap();
        assert_eq!(source.read().unwrap().unwrap().reveal(), b"two");
        std::fs::write(&path, "\n").unwrap();
        assert!(source.read().unwrap_err().ends_with("empty secret"));
        std::fs::remove_file(&path).unwrap();
        assert!(source.read().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            SecretSource::given(None, Some("")),
            SecretSource::Off
        ));
        assert!(matches!(
            SecretSource::given(Some(Path::new("None")), None),
            SecretSource::Off
        ));
    }

    #[test]
    fn value_keywords() {
        assert_eq!(parse_origins(" ANY "), None);
        assert_eq!(
            parse_origins("https://a, ,https://b "),
            Some(vec!["https://a".to_owned(), "https://b".to_owned()])
        );
        assert!(parse_push_allow("any").unwrap().is_none());
        assert!(parse_push_allow("none").is_err());
        assert!(parse_trusted_proxies("None").unwrap().is_empty());
        assert!(parse_trusted_proxies("any").is_err());
    }

    /// GatewayClient's `$secretKey` defaults to the push secret and follows its reloads;
    /// once the file names it, it is its own: a missing line keeps it, `none` removes it.
    #[test]
    fn the_gateway_secret_follows_the_push_secret_until_it_is_named() {
        let mut started = started();
        started.jwt_secret = SecretSource::Off;
        let over = |from: &Sources, text: &str| {
            let file = parse(text.as_bytes()).unwrap();
            from.overlay(&file, &KNOWN, &[]).unwrap().sources
        };
        let gateway = |s: &Sources| {
            let secret = s.resolve().unwrap().gateway_secret;
            secret.map(|x| String::from_utf8_lossy(x.reveal()).into_owned())
        };
        assert_eq!(gateway(&started).as_deref(), Some("push"));
        let rotated = over(&started, "PUSHWIRE_PUSH_SECRET=p2\n");
        assert_eq!(gateway(&rotated).as_deref(), Some("p2"));
        let named = over(&rotated, "PUSHWIRE_GATEWAY_SECRET=g1\n");
        assert_eq!(gateway(&named).as_deref(), Some("g1"));
        let kept = over(&named, "PUSHWIRE_PUSH_SECRET=p3\n");
        assert_eq!(gateway(&kept).as_deref(), Some("g1"));
        let removed = over(&kept, "PUSHWIRE_GATEWAY_SECRET=none\n");
        assert_eq!(gateway(&removed), None);
        let file = parse(b"PUSHWIRE_GATEWAY_SECRET=a\nPUSHWIRE_GATEWAY_SECRET_FILE=/x\n").unwrap();
        let both = started.overlay(&file, &KNOWN, &[]).unwrap_err();
        assert!(both.contains("both set"), "{both}");
        let file = parse(b"PUSHWIRE_GATEWAY_SECRET=\n").unwrap();
        let empty = started.overlay(&file, &KNOWN, &[]).unwrap_err();
        assert!(empty.contains("`none` to remove the secret"), "{empty}");
    }
}
