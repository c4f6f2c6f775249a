//! An app's key and secret, and the three HMAC-SHA256 signatures the protocol checks or
//! makes with them besides the HTTP API's ([`super::api`]): channel auth (`private-`,
//! `presence-`), user signin, and webhooks.
//!
//! Every check decodes the hex the peer sent and compares MACs with `verify_slice`, in
//! constant time; nothing compares hex strings.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::channel::{MAX_USER_ID, check_user_id};

/// An app's public key and its secret. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Keys {
    key: Box<str>,
    secret: Box<[u8]>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keys({:?}, secret ..)", self.key)
    }
}

/// Why a channel auth or a signin was refused: the door answers
/// `pusher:subscription_error` (status 401) or closes with 4009, with this text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `auth` where the channel (or signin) needs one.
    Missing,
    /// `auth` is not `KEY:64 hex digits`.
    Malformed,
    /// The key before the `:` is not this app's.
    WrongKey,
    /// The signature does not match.
    Signature,
    /// A presence subscription without `channel_data`, or `channel_data` that is not a
    /// JSON object with a `user_id` (a non-empty string or an integer, at most 200 bytes).
    ChannelData,
    /// Signin `user_data` that is not a JSON object whose `id` is a valid user id (a
    /// non-empty string or integer, at most 200 bytes of `[-a-zA-Z0-9_=@,.;]`).
    UserData,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthError::Missing => "auth is required",
            AuthError::Malformed => "auth must be KEY:SIGNATURE (64 hex digits)",
            AuthError::WrongKey => "auth names another app key",
            AuthError::Signature => "invalid signature",
            AuthError::ChannelData => {
                "channel_data must be a JSON object with a user_id (string or integer, max 200 bytes)"
            }
            AuthError::UserData => {
                "user_data must be a JSON object with an id (max 200 bytes of [-a-zA-Z0-9_=@,.;])"
            }
        })
    }
}

/// A presence member as `channel_data` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `user_id`, as a string (Laravel sends integers; pusher-js keys members by string).
    pub user_id: String,
    /// `user_info` as the app wrote it (raw JSON), `null` if absent.
    pub user_info: String,
}

impl Keys {
    /// An app's key and secret.
    pub fn new(key: &str, secret: &[u8]) -> Keys {
        Keys {
            key: key.into(),
            secret: secret.into(),
        }
    }

    /// The public key (`/app/{key}`, `auth_key`, the part before `:` in `auth`).
    pub fn key(&self) -> &str {
        &self.key
    }

    fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        for p in parts {
            mac.update(p);
        }
        mac
    }

    /// Lowercase hex HMAC-SHA256 of the concatenated `parts`: what the SDKs send.
    pub fn sign_hex(&self, parts: &[&[u8]]) -> String {
        hex(&self.mac(parts).finalize().into_bytes())
    }

    /// Whether `signature` (hex, either case) is the HMAC of the concatenated `parts`.
    pub fn verify_hex(&self, parts: &[&[u8]], signature: &str) -> bool {
        let Some(sig) = unhex32(signature) else {
            return false;
        };
        self.mac(parts).verify_slice(&sig).is_ok()
    }

    /// `KEY:SIG` for `socket_id:channel[:channel_data]`: what the app's auth endpoint
    /// returns (`authorizeChannel`); for tests and tools.
    pub fn channel_auth(
        &self,
        socket_id: &str,
        channel: &str,
        channel_data: Option<&str>,
    ) -> String {
        let sig = match channel_data {
            None => self.sign_hex(&[socket_id.as_bytes(), b":", channel.as_bytes()]),
            Some(d) => self.sign_hex(&[
                socket_id.as_bytes(),
                b":",
                channel.as_bytes(),
                b":",
                d.as_bytes(),
            ]),
        };
        format!("{}:{sig}", self.key)
    }

    /// Checks a subscription's `auth` for `socket_id` on `channel` (with the presence
    /// `channel_data` string exactly as the client sent it).
    pub fn check_channel_auth(
        &self,
        socket_id: &str,
        channel: &str,
        channel_data: Option<&str>,
        auth: Option<&str>,
    ) -> Result<(), AuthError> {
        let sig = self.split_auth(auth)?;
        let ok = match channel_data {
            None => self.verify_hex(&[socket_id.as_bytes(), b":", channel.as_bytes()], sig),
            Some(d) => self.verify_hex(
                &[
                    socket_id.as_bytes(),
                    b":",
                    channel.as_bytes(),
                    b":",
                    d.as_bytes(),
                ],
                sig,
            ),
        };
        ok.then_some(()).ok_or(AuthError::Signature)
    }

    /// `KEY:SIG` for `socket_id::user::user_data` (`authenticateUser`); for tests and tools.
    pub fn signin_auth(&self, socket_id: &str, user_data: &str) -> String {
        let sig = self.sign_hex(&[socket_id.as_bytes(), b"::user::", user_data.as_bytes()]);
        format!("{}:{sig}", self.key)
    }

    /// Checks a `pusher:signin` and returns the signed-in user's id.
    pub fn check_signin(
        &self,
        socket_id: &str,
        user_data: &str,
        auth: &str,
    ) -> Result<String, AuthError> {
        let sig = self.split_auth(Some(auth))?;
        let signed = [socket_id.as_bytes(), b"::user::", user_data.as_bytes()];
        if !self.verify_hex(&signed, sig) {
            return Err(AuthError::Signature);
        }
        let id = id_field(user_data, "id").ok_or(AuthError::UserData)?;
        check_user_id(&id).map_err(|_| AuthError::UserData)?;
        Ok(id)
    }

    /// `X-Pusher-Signature` for a webhook body.
    pub fn webhook_signature(&self, body: &[u8]) -> String {
        self.sign_hex(&[body])
    }

    fn split_auth<'a>(&self, auth: Option<&'a str>) -> Result<&'a str, AuthError> {
        let auth = auth.filter(|a| !a.is_empty()).ok_or(AuthError::Missing)?;
        let (key, sig) = auth.split_once(':').ok_or(AuthError::Malformed)?;
        if sig.len() != 64 {
            return Err(AuthError::Malformed);
        }
        if key != &*self.key {
            return Err(AuthError::WrongKey);
        }
        Ok(sig)
    }
}

/// The member a presence subscription's `channel_data` names (checked after its
/// signature, so only the app's own JSON gets here).
pub fn presence_member(channel_data: &str) -> Result<Member, AuthError> {
    #[derive(serde::Deserialize)]
    struct Data<'a> {
        #[serde(borrow)]
        user_id: &'a serde_json::value::RawValue,
        #[serde(borrow, default)]
        user_info: Option<&'a serde_json::value::RawValue>,
    }
    let data: Data = serde_json::from_str(channel_data).map_err(|_| AuthError::ChannelData)?;
    let user_id = id_text(data.user_id.get()).ok_or(AuthError::ChannelData)?;
    Ok(Member {
        user_id,
        user_info: data.user_info.map_or("null", |r| r.get()).to_owned(),
    })
}

/// `field` of the JSON object `text` as an id: a non-empty string or an integer, at most
/// [`MAX_USER_ID`] bytes.
fn id_field(text: &str, field: &str) -> Option<String> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    id_text(&map.get(field)?.to_string())
}

/// A raw JSON value as an id string.
fn id_text(raw: &str) -> Option<String> {
    let id = match serde_json::from_str::<serde_json::Value>(raw).ok()? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        _ => return None,
    };
    (!id.is_empty() && id.len() <= MAX_USER_ID).then_some(id)
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// 64 hex digits (either case) as 32 bytes.
pub(crate) fn unhex32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example app of Pusher's signature docs.
    fn docs_app() -> Keys {
        Keys::new("278d425bdf160c739803", b"7ad3773142a6692b25b8")
    }

    #[test]
    fn pusher_docs_private_channel_vector() {
        let want =
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4";
        let app = docs_app();
        assert_eq!(app.channel_auth("1234.1234", "private-foobar", None), want);
        assert_eq!(
            app.check_channel_auth("1234.1234", "private-foobar", None, Some(want)),
            Ok(())
        );
        // Upper-case hex is the same signature.
        let upper = format!("278d425bdf160c739803:{}", want[21..].to_uppercase());
        assert_eq!(
            app.check_channel_auth("1234.1234", "private-foobar", None, Some(&upper)),
            Ok(())
        );
        let check = |sid, ch, auth| app.check_channel_auth(sid, ch, None, auth);
        assert_eq!(
            check("1234.1235", "private-foobar", Some(want)),
            Err(AuthError::Signature)
        );
        assert_eq!(
            check("1234.1234", "private-foobaz", Some(want)),
            Err(AuthError::Signature)
        );
        assert_eq!(
            check("1234.1234", "private-foobar", None),
            Err(AuthError::Missing)
        );
        assert_eq!(
            check("1234.1234", "private-foobar", Some("")),
            Err(AuthError::Missing)
        );
        assert_eq!(
            check("1234.1234", "private-foobar", Some(&want[21..])),
            Err(AuthError::Malformed)
        );
        let other_key = format!("other:{}", &want[21..]);
        assert_eq!(
            check("1234.1234", "private-foobar", Some(&other_key)),
            Err(AuthError::WrongKey)
        );
        let not_hex = format!("278d425bdf160c739803:{}", "g".repeat(64));
        assert_eq!(
            check("1234.1234", "private-foobar", Some(&not_hex)),
            Err(AuthError::Signature)
        );
        let short = &want[..want.len() - 1];
        assert_eq!(
            check("1234.1234", "private-foobar", Some(short)),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn presence_auth_covers_channel_data() {
        let app = docs_app();
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let auth = app.channel_auth("1234.1234", "presence-foobar", Some(data));
        let ok = app.check_channel_auth("1234.1234", "presence-foobar", Some(data), Some(&auth));
        assert_eq!(ok, Ok(()));
        let other = r#"{"user_id":11,"user_info":{"name":"Mr. Channels"}}"#;
        let forged =
            app.check_channel_auth("1234.1234", "presence-foobar", Some(other), Some(&auth));
        assert_eq!(forged, Err(AuthError::Signature));
        // The private signature (no channel_data) does not admit to presence with data.
        let private = app.channel_auth("1234.1234", "presence-foobar", None);
        let mixed =
            app.check_channel_auth("1234.1234", "presence-foobar", Some(data), Some(&private));
        assert_eq!(mixed, Err(AuthError::Signature));

        let m = presence_member(data).unwrap();
        assert_eq!(m.user_id, "10");
        assert_eq!(m.user_info, r#"{"name":"Mr. Channels"}"#);
        let m = presence_member(r#"{"user_id":"ann"}"#).unwrap();
        assert_eq!((m.user_id.as_str(), m.user_info.as_str()), ("ann", "null"));
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"user_id":""}"#,
            r#"{"user_id":1.5}"#,
            r#"{"user_id":null}"#,
            r#"{"user_id":{"a":1}}"#,
            "{\"user_id\":1",
            r#"{"user_id":1,"user_id":2}"#,
        ] {
            assert_eq!(presence_member(bad), Err(AuthError::ChannelData), "{bad}");
        }
        let long = format!(r#"{{"user_id":"{}"}}"#, "u".repeat(201));
        assert_eq!(presence_member(&long), Err(AuthError::ChannelData));
    }

    #[test]
    fn signin() {
        let app = docs_app();
        let user = r#"{"id":"ann","name":"Ann"}"#;
        let auth = app.signin_auth("1.2", user);
        assert_eq!(app.check_signin("1.2", user, &auth), Ok("ann".to_owned()));
        assert_eq!(
            app.check_signin("1.3", user, &auth),
            Err(AuthError::Signature)
        );
        let numeric = r#"{"id":42}"#;
        assert_eq!(
            app.check_signin("1.2", numeric, &app.signin_auth("1.2", numeric)),
            Ok("42".to_owned())
        );
        for bad in [
            r#"{"name":"x"}"#,
            r#"{"id":"a b"}"#,
            r#"{"id":""}"#,
            "[1]",
            "x",
        ] {
            let auth = app.signin_auth("1.2", bad);
            assert_eq!(
                app.check_signin("1.2", bad, &auth),
                Err(AuthError::UserData),
                "{bad}"
            );
        }
    }

    #[test]
    fn hex_round_trip() {
        let bytes: Vec<u8> = (0..32).map(|i| i * 8 + 1).collect();
        let h = hex(&bytes);
        assert_eq!(unhex32(&h).map(|a| a.to_vec()), Some(bytes));
        assert_eq!(unhex32(&h[1..]), None);
        assert_eq!(unhex32(&format!("{}é", &h[..62])), None);
        assert!(format!("{:?}", docs_app()).contains("secret .."));
        assert!(!format!("{:?}", docs_app()).contains("7ad37"));
    }
}
