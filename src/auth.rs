//! Signed uids: an HS256 JWT whose `sub` is the uid, minted by the backend.
//!
//! Why JWT/HS256: every backend language can mint one in a few lines with only its
//! standard library (docs/security.md has a dependency-free PHP version), and a shared secret
//! needs no key distribution. Only `alg: HS256` is accepted (never `none`), the signature
//! is checked in constant time, and `exp` is required so a leaked token dies on its own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// The shared secret that signs tokens.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Wraps the raw secret bytes (a trailing newline from a file is the caller's job).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    /// Mints a token for `uid` valid until `exp` (seconds since the epoch); for tests and
    /// tools. Backends mint their own.
    pub fn mint(&self, uid: &str, exp: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            sub: &'a str,
            exp: u64,
        }
        let claims = serde_json::to_string(&Claims { sub: uid, exp }).unwrap_or_default();
        let signing = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
        let sig = URL_SAFE_NO_PAD.encode(self.mac(signing.as_bytes()).finalize().into_bytes());
        format!("{signing}.{sig}")
    }

    /// The secret itself, for a client that must send it (`pushwire status` → `/auth`).
    pub fn reveal(&self) -> &[u8] {
        &self.0
    }

    /// True if `candidate` equals the secret (constant time); for the push port's `/auth`.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        crate::access::constant_time_eq(&self.0, candidate)
    }

    /// HMAC-SHA256 of `parts`, one after the other, under this secret (webhook
    /// signatures).
    pub fn hmac_sha256(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac(&[]);
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    fn mac(&self, data: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(data);
        mac
    }

    /// Checks `token` and returns the uid it proves.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<String, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Value = decode_json(h)?;
        if header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(TokenError::Algorithm);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::Malformed)?;
        let signed = &token[..h.len() + 1 + p.len()];
        self.mac(signed.as_bytes())
            .verify_slice(&sig)
            .map_err(|_| TokenError::Signature)?;
        let claims: Value = decode_json(p)?;
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let leeway = LEEWAY.as_secs();
        match claims.get("exp").and_then(Value::as_u64) {
            None => return Err(TokenError::NoExpiry),
            Some(exp) if exp.saturating_add(leeway) <= now => return Err(TokenError::Expired),
            Some(_) => {}
        }
        if let Some(nbf) = claims.get("nbf") {
            match nbf.as_u64() {
                Some(nbf) if nbf <= now.saturating_add(leeway) => {}
                _ => return Err(TokenError::NotYetValid),
            }
        }
        match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
            _ => Err(TokenError::Subject),
        }
    }
}

fn decode_json(part: &str) -> Result<Value, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// Why a token was refused; the text is the close reason the browser sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    Malformed,
    /// `alg` is not HS256.
    Algorithm,
    /// The signature does not match the secret.
    Signature,
    /// No `exp` claim.
    NoExpiry,
    /// `exp` is in the past.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `sub` is missing or not a non-empty string or integer.
    Subject,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenError::Malformed => "malformed token",
            TokenError::Algorithm => "token alg must be HS256",
            TokenError::Signature => "bad token signature",
            TokenError::NoExpiry => "token has no exp",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not yet valid",
            TokenError::Subject => "token sub must be the uid",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let secret = Secret::new("s3cret");
        let now = SystemTime::now();
        let t = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let token = secret.mint("uid1", t + 60);
        assert_eq!(secret.verify(&token, now), Ok("uid1".into()));
        assert_eq!(
            Secret::new("other").verify(&token, now),
            Err(TokenError::Signature)
        );
        let old = secret.mint("uid1", t - 3600);
        assert_eq!(secret.verify(&old, now), Err(TokenError::Expired));
        assert_eq!(secret.verify("a.b", now), Err(TokenError::Malformed));
        assert_eq!(secret.verify("", now), Err(TokenError::Malformed));
        // alg none with the signature stripped.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            token.split('.').nth(1).unwrap()
        );
        assert_eq!(secret.verify(&none, now), Err(TokenError::Algorithm));
        // A tampered payload fails the signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"admin","exp":{}}}"#, t + 60));
        parts[1] = &forged;
        assert_eq!(
            secret.verify(&parts.join("."), now),
            Err(TokenError::Signature)
        );
    }
}
