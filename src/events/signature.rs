//! How a webhook delivery proves it comes from this daemon, now: two headers.
//!
//! ```text
//! X-Pushwire-Timestamp: 1767225600
//! X-Pushwire-Signature: sha256=<hex of HMAC-SHA256(secret, TIMESTAMP + "." + BODY)>
//! ```
//!
//! The signature covers the timestamp, so a receiver that refuses timestamps further than a
//! few minutes from its clock ([`TOLERANCE_SECS`]) refuses a captured delivery replayed
//! later; a receiver that also keeps the last `seq` per subject (docs/events.md) ignores one
//! replayed within the window. Each attempt is signed again with its own time, so a retry
//! after a long outage is not refused as stale. This module also checks signatures, the way
//! `clients/php/Webhook.php` does, for the tests and the benchmark's receiver.

use crate::auth::Secret;

/// The header with the time of signing, in seconds since the Unix epoch.
pub const TIMESTAMP: &str = "x-pushwire-timestamp";
/// The header with `sha256=HEX`.
pub const SIGNATURE: &str = "x-pushwire-signature";
/// The header naming the delivery (the same on every attempt of one batch).
pub const DELIVERY: &str = "x-pushwire-delivery";
/// How far a receiver should let a timestamp be from its clock, either way.
pub const TOLERANCE_SECS: u64 = 300;

/// The `X-Pushwire-Signature` value for `body` signed at `timestamp`.
pub fn sign(secret: &Secret, timestamp: u64, body: &[u8]) -> String {
    let mac = secret.hmac_sha256(&[timestamp.to_string().as_bytes(), b".", body]);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in mac {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Why a delivery is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The timestamp is not a number of seconds.
    BadTimestamp,
    /// The timestamp is further than the tolerance from now.
    Stale,
    /// The signature does not match.
    BadSignature,
}

/// Checks a delivery as a receiver should: the timestamp within `tolerance` of `now`
/// (seconds since the epoch), then the signature, compared in constant time.
pub fn verify(
    secret: &Secret,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Result<(), Refusal> {
    let at: u64 = timestamp.parse().map_err(|_| Refusal::BadTimestamp)?;
    if at.abs_diff(now) > tolerance {
        return Err(Refusal::Stale);
    }
    let want = sign(secret, at, body);
    if crate::access::constant_time_eq(want.as_bytes(), signature.trim().as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_timestamp_and_body() {
        let secret = Secret::new("s3cret");
        // The same value `hash_hmac('sha256', '1700000000.' . $body, 's3cret')` gives in PHP
        // and `printf '1700000000.{"events":[]}' | openssl dgst -sha256 -hmac s3cret`.
        let sig = sign(&secret, 1_700_000_000, br#"{"events":[]}"#);
        assert_eq!(
            sig,
            "sha256=41b4d3f6c59a79e37d083fb3cbe77f82807c4369fd469fb70cfa75e02d2e2775"
        );
        let body = br#"{"events":[]}"#;
        assert_eq!(
            verify(&secret, "1700000000", &sig, body, 1_700_000_100, 300),
            Ok(())
        );
        assert_eq!(
            verify(&secret, "1700000000", &sig, body, 1_700_000_301, 300),
            Err(Refusal::Stale)
        );
        assert_eq!(
            verify(&secret, "1700000001", &sig, body, 1_700_000_000, 300),
            Err(Refusal::BadSignature),
            "the timestamp is signed"
        );
        assert_eq!(
            verify(&secret, "1700000000", &sig, b"{}", 1_700_000_000, 300),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            verify(
                &Secret::new("other"),
                "1700000000",
                &sig,
                body,
                1_700_000_000,
                300
            ),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            verify(&secret, "soon", &sig, body, 1_700_000_000, 300),
            Err(Refusal::BadTimestamp)
        );
    }
}
