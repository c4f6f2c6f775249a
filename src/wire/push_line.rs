//! Plain push lines (the seed's protocol): which uid a line is for, and why a line is
//! refused.
//!
//! The rules mirror Workerman's text protocol (one line in, one line out) so the seed's
//! PHP client works unchanged.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

/// Why a push line was refused. Each maps to a `fail` reply and a debug log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadLine {
    /// Longer than `--max-line-bytes`.
    TooLong,
    /// Nothing but the terminator.
    Empty,
    /// Not UTF-8.
    NotUtf8,
    /// Not valid JSON.
    Json(String),
    /// Valid JSON, but not an object.
    NotObject,
    /// An object without a `"uid"` field.
    MissingUid,
    /// `"uid"` is neither a string nor an integer.
    BadUid,
    /// `"uid"` appears twice, so which user is meant is ambiguous.
    DuplicateUid,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadLine::TooLong => f.write_str("line too long"),
            BadLine::Empty => f.write_str("empty line"),
            BadLine::NotUtf8 => f.write_str("not UTF-8"),
            BadLine::Json(e) => write!(f, "invalid JSON: {e}"),
            BadLine::NotObject => f.write_str("not a JSON object"),
            BadLine::MissingUid => f.write_str("no \"uid\" field"),
            BadLine::BadUid => f.write_str("\"uid\" must be a string or an integer"),
            BadLine::DuplicateUid => f.write_str("\"uid\" given twice"),
        }
    }
}

impl std::error::Error for BadLine {}

/// Reads the target uid out of a push line: `{"uid":"u1",...}` or `{"uid":123,...}`.
///
/// The whole line is validated as JSON (so a push is never half-understood), but only the
/// uid is materialised; other fields are skipped without allocating.
pub fn push_target(line: &[u8]) -> Result<Cow<'_, str>, BadLine> {
    // serde_json does not check UTF-8 inside the strings it skips; the line is what
    // browsers get as a text frame, so all of it must be UTF-8.
    let line = std::str::from_utf8(line).map_err(|_| BadLine::NotUtf8)?;
    push_target_str(line)
}

/// [`push_target`] for a line already known to be UTF-8 (the push path checks it once,
/// when it makes the shared payload).
pub fn push_target_str(line: &str) -> Result<Cow<'_, str>, BadLine> {
    if line.bytes().all(|b| b.is_ascii_whitespace()) {
        return Err(BadLine::Empty);
    }
    let mut de = serde_json::Deserializer::from_str(line);
    let found = de.deserialize_any(TargetVisitor).map_err(classify)?;
    de.end().map_err(classify)?;
    found
}

fn classify(err: serde_json::Error) -> BadLine {
    BadLine::Json(err.to_string())
}

/// Outcome of the visitor; the outer `Result` is reserved for JSON syntax errors so a
/// semantic refusal (no uid) still validates the rest of the line.
type Target<'de> = Result<Cow<'de, str>, BadLine>;

struct TargetVisitor;

impl<'de> Visitor<'de> for TargetVisitor {
    type Value = Target<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut uid: Option<Result<Cow<'de, str>, BadLine>> = None;
        let mut duplicate = false;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if key.0 == "uid" {
                let value = map.next_value::<UidValue<'de>>()?;
                if uid.is_some() {
                    duplicate = true;
                }
                uid = Some(value.0.ok_or(BadLine::BadUid));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(match uid {
            _ if duplicate => Err(BadLine::DuplicateUid),
            None => Err(BadLine::MissingUid),
            Some(found) => found,
        })
    }

    // Every non-object JSON value: valid syntax, wrong shape.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(BadLine::NotObject))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(BadLine::NotObject))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(BadLine::NotObject))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(BadLine::NotObject))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(BadLine::NotObject))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err(BadLine::NotObject))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(BadLine::NotObject))
    }
}

/// An object key, borrowed from the line when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The `"uid"` value: `Some` for a string or an integer, `None` for any other JSON value.
struct UidValue<'de>(Option<Cow<'de, str>>);

impl<'de> de::Deserialize<'de> for UidValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UidValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a uid")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(UidValue(Some(Cow::Borrowed(s))))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(UidValue(Some(Cow::Owned(s.to_owned()))))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                Ok(UidValue(Some(Cow::Owned(n.to_string()))))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                Ok(UidValue(Some(Cow::Owned(n.to_string()))))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(UidValue(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(UidValue(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(UidValue(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(UidValue(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(UidValue(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            push_target(br#"{"uid":"uid1","percent":"88%"}"#).unwrap(),
            "uid1"
        );
        assert_eq!(push_target(br#"{"uid":123}"#).unwrap(), "123");
        assert_eq!(push_target(br#"{"uid":-7}"#).unwrap(), "-7");
        assert_eq!(
            push_target(br#"{"a":{"uid":1},"uid":"x\"y"}"#).unwrap(),
            "x\"y"
        );
        assert_eq!(push_target(b""), Err(BadLine::Empty));
        assert_eq!(push_target(br#""uid1""#), Err(BadLine::NotObject));
        assert_eq!(push_target(br#"["uid1"]"#), Err(BadLine::NotObject));
        assert_eq!(push_target(br#"{"uid":{"id":1}}"#), Err(BadLine::BadUid));
        assert_eq!(push_target(br#"{"uid":1.5}"#), Err(BadLine::BadUid));
        assert_eq!(push_target(br#"{"uid":null}"#), Err(BadLine::BadUid));
        assert_eq!(push_target(br#"{"x":1}"#), Err(BadLine::MissingUid));
        assert_eq!(
            push_target(br#"{"uid":"a","uid":"b"}"#),
            Err(BadLine::DuplicateUid)
        );
        assert!(matches!(
            push_target(br#"{"uid":"a"} x"#),
            Err(BadLine::Json(_))
        ));
        assert_eq!(push_target(b"{\"uid\":\"\xff\"}"), Err(BadLine::NotUtf8));
        assert_eq!(
            push_target(b"{\"uid\":0,\"\":\"\x80\"}"),
            Err(BadLine::NotUtf8)
        );
        assert!(matches!(
            push_target(br#"{"uid":"a""#),
            Err(BadLine::Json(_))
        ));
    }
}
