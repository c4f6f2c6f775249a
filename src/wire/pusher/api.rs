//! The HTTP API's request signature (what pusher-http-php, -node and -python put on every
//! call): `auth_key`, `auth_timestamp`, `auth_version=1.0`, `body_md5` and
//! `auth_signature = hex(HMAC-SHA256(secret, METHOD\nPATH\nSORTED_QUERY))`, where
//! SORTED_QUERY is every query parameter but `auth_signature`, keys lower-cased, sorted,
//! joined as `k=v&…` with the values **not** URL-escaped (Pusher's HTTP API reference).
//!
//! Stricter than Reverb and Soketi on two points, both documented in `docs/pusher.md`:
//! a request whose `auth_timestamp` is further than the window from the daemon's clock is
//! refused (a captured request cannot be replayed later), and `body_md5` is always checked
//! against the body when present and required when there is a body, so the signature
//! covers the body.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};

use super::sign::{Keys, hex};

/// How far `auth_timestamp` may be from the daemon's clock, either way, by default (as
/// Sockudo; the SDKs stamp the time they sign, so only a skewed clock or a replay is
/// refused).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);
/// Most query parameters a request may carry (the SDKs send at most 7).
pub const MAX_PARAMS: usize = 32;

/// A request as the door read it: the path as sent (not decoded) and the raw query.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET` or `POST` (upper case, as on the request line).
    pub method: &'a str,
    /// The path, e.g. `/apps/1/events`, exactly as on the request line.
    pub path: &'a str,
    /// The query string after `?` (empty if none).
    pub query: &'a str,
    /// The body (empty for a GET).
    pub body: &'a [u8],
}

/// A request whose signature checked out: its query parameters, decoded, keys lower-case,
/// sorted by key (the door reads `info`, `filter_by_prefix` from here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    params: Vec<(String, String)>,
}

impl Verified {
    /// The value of parameter `key` (lower case).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.params[i].1.as_str())
    }
}

/// Why a request was refused, with the HTTP status and the text the body carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAuthError {
    /// The query is not `k=v&…` of UTF-8 after decoding.
    BadQuery,
    /// A parameter appears twice (two spellings could sign one thing and mean another).
    Duplicate(String),
    /// More than [`MAX_PARAMS`] parameters.
    TooManyParams,
    /// A required parameter is absent.
    Missing(&'static str),
    /// `auth_key` is not this app's key.
    UnknownKey,
    /// `auth_version` is not `1.0`.
    Version,
    /// `auth_timestamp` is not a whole number of seconds.
    Timestamp,
    /// `auth_timestamp` is further than the window from the daemon's clock.
    Stale {
        /// How far, in seconds.
        skew: u64,
        /// The window, in seconds.
        window: u64,
    },
    /// A body without `body_md5`.
    NoBodyMd5,
    /// `body_md5` is not the MD5 of the body.
    BodyMd5,
    /// `auth_signature` does not match.
    Signature,
}

impl ApiAuthError {
    /// The HTTP status: 400 for a malformed query, 401 for every authentication failure
    /// (Pusher's HTTP API reference; the SDKs raise on both).
    pub fn status(&self) -> u16 {
        match self {
            ApiAuthError::BadQuery | ApiAuthError::Duplicate(_) | ApiAuthError::TooManyParams => {
                400
            }
            _ => 401,
        }
    }
}

impl std::fmt::Display for ApiAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiAuthError::BadQuery => f.write_str("malformed query string"),
            ApiAuthError::Duplicate(k) => write!(f, "query parameter {k} given twice"),
            ApiAuthError::TooManyParams => {
                write!(f, "too many query parameters (max {MAX_PARAMS})")
            }
            ApiAuthError::Missing(k) => write!(f, "missing {k}"),
            ApiAuthError::UnknownKey => f.write_str("auth_key is not this app's key"),
            ApiAuthError::Version => f.write_str("auth_version must be 1.0"),
            ApiAuthError::Timestamp => {
                f.write_str("auth_timestamp must be seconds since the epoch")
            }
            ApiAuthError::Stale { skew, window } => write!(
                f,
                "auth_timestamp is {skew} s from the server's clock (max {window} s): check the clocks"
            ),
            ApiAuthError::NoBodyMd5 => f.write_str("missing body_md5 (the body must be signed)"),
            ApiAuthError::BodyMd5 => f.write_str("body_md5 does not match the body"),
            ApiAuthError::Signature => f.write_str("invalid auth_signature"),
        }
    }
}

/// The query's parameters, decoded (`+` and `%XX`), keys lower-cased, sorted by key;
/// empty segments (`a=1&&b=2`) are skipped.
fn params(query: &str) -> Result<Vec<(String, String)>, ApiAuthError> {
    let mut out = Vec::new();
    for (k, v) in crate::urlencoded::pairs(query.as_bytes()) {
        if k.is_empty() && v.is_empty() {
            continue;
        }
        if out.len() == MAX_PARAMS {
            return Err(ApiAuthError::TooManyParams);
        }
        let text = |raw: &[u8]| String::from_utf8(crate::urlencoded::decode(raw));
        let key = text(k)
            .map_err(|_| ApiAuthError::BadQuery)?
            .to_ascii_lowercase();
        let value = text(v).map_err(|_| ApiAuthError::BadQuery)?;
        out.push((key, value));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(ApiAuthError::Duplicate(w[0].0.clone()));
    }
    Ok(out)
}

/// `METHOD\nPATH\nk=v&…` over every parameter but `auth_signature`.
fn string_to_sign(method: &str, path: &str, params: &[(String, String)]) -> String {
    let mut s = format!("{method}\n{path}\n");
    let mut first = true;
    for (k, v) in params.iter().filter(|(k, _)| k != "auth_signature") {
        if !first {
            s.push('&');
        }
        first = false;
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    s
}

/// Lowercase hex MD5 of `body`.
pub fn body_md5(body: &[u8]) -> String {
    hex(&Md5::digest(body))
}

impl Keys {
    /// Checks a request's signature, key, version, freshness (within `window` of `now`)
    /// and body.
    pub fn verify_api(
        &self,
        req: &Request<'_>,
        now: SystemTime,
        window: Duration,
    ) -> Result<Verified, ApiAuthError> {
        let params = params(req.query)?;
        let get = |k: &str| {
            params
                .binary_search_by(|(key, _)| key.as_str().cmp(k))
                .ok()
                .map(|i| params[i].1.as_str())
        };
        let key = get("auth_key").ok_or(ApiAuthError::Missing("auth_key"))?;
        let ts = get("auth_timestamp").ok_or(ApiAuthError::Missing("auth_timestamp"))?;
        let version = get("auth_version").ok_or(ApiAuthError::Missing("auth_version"))?;
        let sig = get("auth_signature").ok_or(ApiAuthError::Missing("auth_signature"))?;
        if key != self.key() {
            return Err(ApiAuthError::UnknownKey);
        }
        if version != "1.0" {
            return Err(ApiAuthError::Version);
        }
        let signed = string_to_sign(req.method, req.path, &params);
        if !self.verify_hex(&[signed.as_bytes()], sig) {
            return Err(ApiAuthError::Signature);
        }
        // Signed, so the rest is what the holder of the secret sent.
        if ts.is_empty() || ts.len() > 12 || !ts.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiAuthError::Timestamp);
        }
        let ts: u64 = ts.parse().map_err(|_| ApiAuthError::Timestamp)?;
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let skew = now.abs_diff(ts);
        if skew > window.as_secs() {
            return Err(ApiAuthError::Stale {
                skew,
                window: window.as_secs(),
            });
        }
        match get("body_md5") {
            // pusher-http-python signs `body_md5` of an empty body on GETs too.
            Some(md5) if !md5.eq_ignore_ascii_case(&body_md5(req.body)) => {
                return Err(ApiAuthError::BodyMd5);
            }
            None if !req.body.is_empty() => return Err(ApiAuthError::NoBodyMd5),
            _ => {}
        }
        Ok(Verified { params })
    }

    /// Signs a request as the SDKs do, at `timestamp`, with `extra` parameters (e.g.
    /// `info`): the query string to send (values URL-escaped, which the signature does
    /// not see). For tests and tools; backends use their SDK.
    pub fn sign_api(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: &[u8],
        timestamp: u64,
    ) -> String {
        let mut params: Vec<(String, String)> = vec![
            ("auth_key".into(), self.key().into()),
            ("auth_timestamp".into(), timestamp.to_string()),
            ("auth_version".into(), "1.0".into()),
        ];
        if !body.is_empty() {
            params.push(("body_md5".into(), body_md5(body)));
        }
        params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let sig = self.sign_hex(&[string_to_sign(method, path, &params).as_bytes()]);
        params.push(("auth_signature".into(), sig));
        params
            .iter()
            .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// `application/x-www-form-urlencoded` escaping of everything but unreserved bytes.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs_app() -> Keys {
        Keys::new("278d425bdf160c739803", b"7ad3773142a6692b25b8")
    }

    const BODY: &[u8] = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// The worked example of Pusher's HTTP API reference, as published.
    #[test]
    fn pusher_docs_vector() {
        assert_eq!(body_md5(BODY), "ec365a775a4cd0599faeb73354201b6f");
        let query = "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0\
                     &body_md5=ec365a775a4cd0599faeb73354201b6f\
                     &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";
        let req = Request {
            method: "POST",
            path: "/apps/3/events",
            query,
            body: BODY,
        };
        let app = docs_app();
        let v = app
            .verify_api(&req, at(1353088179 + 600), DEFAULT_WINDOW)
            .unwrap();
        assert_eq!(v.param("auth_version"), Some("1.0"));
        assert_eq!(
            app.verify_api(&req, at(1353088179 + 601), DEFAULT_WINDOW),
            Err(ApiAuthError::Stale {
                skew: 601,
                window: 600
            })
        );
        assert_eq!(
            app.verify_api(&req, at(1353088179 - 601), DEFAULT_WINDOW)
                .map_err(|e| e.status()),
            Err(401)
        );
        let other_body = String::from_utf8_lossy(BODY).replace("foo", "fop");
        let tampered = Request {
            body: other_body.as_bytes(),
            ..req
        };
        assert_eq!(
            app.verify_api(&tampered, at(1353088179), DEFAULT_WINDOW),
            Err(ApiAuthError::BodyMd5)
        );
        let other_path = Request {
            path: "/apps/4/events",
            ..req
        };
        assert_eq!(
            app.verify_api(&other_path, at(1353088179), DEFAULT_WINDOW),
            Err(ApiAuthError::Signature)
        );
        let wrong_secret = Keys::new("278d425bdf160c739803", b"7ad3773142a6692b25b9");
        assert_eq!(
            wrong_secret.verify_api(&req, at(1353088179), DEFAULT_WINDOW),
            Err(ApiAuthError::Signature)
        );
    }

    #[test]
    fn signed_requests_round_trip_and_escaping_is_invisible() {
        let app = docs_app();
        let info = [
            ("info", "user_count,subscription_count"),
            ("filter_by_prefix", "presence-"),
        ];
        let q = app.sign_api("GET", "/apps/3/channels", &info, b"", 1000);
        assert!(q.contains("info=user_count%2Csubscription_count"), "{q}");
        let req = Request {
            method: "GET",
            path: "/apps/3/channels",
            query: &q,
            body: b"",
        };
        let v = app.verify_api(&req, at(1000), DEFAULT_WINDOW).unwrap();
        assert_eq!(v.param("info"), Some("user_count,subscription_count"));
        assert_eq!(v.param("filter_by_prefix"), Some("presence-"));
        assert_eq!(v.param("nope"), None);
        // The same request with the values unescaped (as pusher-http-node sends them).
        let raw = q.replace("%2C", ",");
        let req_raw = Request { query: &raw, ..req };
        assert!(app.verify_api(&req_raw, at(1000), DEFAULT_WINDOW).is_ok());
        // A GET with pusher-http-python's body_md5 of the empty body.
        let md5_empty = [("body_md5", "d41d8cd98f00b204e9800998ecf8427e")];
        let q = app.sign_api("GET", "/apps/3/channels", &md5_empty, b"", 1000);
        let req = Request { query: &q, ..req };
        assert!(app.verify_api(&req, at(1000), DEFAULT_WINDOW).is_ok());
    }

    #[test]
    fn refusals() {
        let app = docs_app();
        let check = |query: &str, body: &[u8]| {
            let req = Request {
                method: "POST",
                path: "/apps/3/events",
                query,
                body,
            };
            app.verify_api(&req, at(1000), DEFAULT_WINDOW)
        };
        let good = app.sign_api("POST", "/apps/3/events", &[], BODY, 1000);
        assert!(check(&good, BODY).is_ok());
        assert_eq!(
            check(&format!("{good}&auth_key=x"), BODY),
            Err(ApiAuthError::Duplicate("auth_key".into()))
        );
        assert_eq!(
            check(&format!("{good}&AUTH_KEY=x"), BODY),
            Err(ApiAuthError::Duplicate("auth_key".into()))
        );
        assert_eq!(
            check(&format!("{good}&x=%FF"), BODY),
            Err(ApiAuthError::BadQuery)
        );
        let many: String = (0..MAX_PARAMS).map(|i| format!("&p{i}=1")).collect();
        assert_eq!(
            check(&format!("{good}{many}"), BODY),
            Err(ApiAuthError::TooManyParams)
        );
        // An unsigned extra parameter breaks the signature.
        assert_eq!(
            check(&format!("{good}&socket_id=1.2"), BODY),
            Err(ApiAuthError::Signature)
        );
        for k in [
            "auth_key",
            "auth_timestamp",
            "auth_version",
            "auth_signature",
        ] {
            let without: Vec<&str> = good.split('&').filter(|p| !p.starts_with(k)).collect();
            assert_eq!(
                check(&without.join("&"), BODY),
                Err(ApiAuthError::Missing(k)),
                "{k}"
            );
        }
        let other = Keys::new("other", b"7ad3773142a6692b25b8");
        let q = other.sign_api("POST", "/apps/3/events", &[], BODY, 1000);
        assert_eq!(check(&q, BODY), Err(ApiAuthError::UnknownKey));
        // Signed by the secret's holder, and still wrong.
        let signed = |version: &str, ts: &str| {
            let mut p: Vec<(String, String)> = [
                ("auth_key", app.key()),
                ("auth_timestamp", ts),
                ("auth_version", version),
                ("body_md5", &body_md5(BODY)),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let sig = app.sign_hex(&[string_to_sign("POST", "/apps/3/events", &p).as_bytes()]);
            p.push(("auth_signature".into(), sig));
            p.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        };
        assert!(check(&signed("1.0", "1000"), BODY).is_ok());
        assert_eq!(
            check(&signed("2.0", "1000"), BODY),
            Err(ApiAuthError::Version)
        );
        assert_eq!(
            check(&signed("1.0", "1e3"), BODY),
            Err(ApiAuthError::Timestamp)
        );
        assert_eq!(
            check(&signed("1.0", "-1000"), BODY),
            Err(ApiAuthError::Timestamp)
        );
        assert_eq!(
            check(
                &signed("1.0", "1000").replace("auth_timestamp=1000", "auth_timestamp=1001"),
                BODY
            ),
            Err(ApiAuthError::Signature)
        );
        // A body the signature does not cover.
        let q = app.sign_api("POST", "/apps/3/events", &[], b"", 1000);
        assert_eq!(check(&q, BODY), Err(ApiAuthError::NoBodyMd5));
        assert!(
            ApiAuthError::Stale {
                skew: 700,
                window: 600
            }
            .to_string()
            .contains("700 s")
        );
    }
}
