//! PHP's `serialize()` format, the subset GatewayClient speaks: a writer for the replies a
//! gateway sends (ints, strings, null, bools, arrays keyed by int or string, nested) and a
//! bounded reader for what a GatewayClient may send (message bodies that are not scalar,
//! sessions). No I/O.
//!
//! # The format
//! ```text
//! N;   b:1;   i:-42;   d:1.5;   s:5:"héj";   a:2:{i:0;s:1:"x";s:1:"k";a:0:{}}
//! ```
//! A string's length counts bytes; an array's entries are key/value pairs in order, a key
//! being an `i:` or an `s:`. Objects (`O:`, `C:`, `E:`) and references (`r:`, `R:`) are
//! refused: a gateway has no classes to make, and GatewayWorker itself unserializes bodies
//! with `allowed_classes => false`.
//!
//! # Hostile input
//! [`unserialize`] is bounded by its input and by [`Limits`] (nesting depth, entries in
//! all arrays together). A declared length or count is never trusted for an allocation;
//! every error is a value ([`PhpError`]), never a panic.

use std::collections::HashMap;
use std::fmt;

/// A PHP value as `serialize()` writes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `N;`
    Null,
    /// `b:0;` / `b:1;`
    Bool(bool),
    /// `i:N;`
    Int(i64),
    /// `d:X;`, kept as PHP wrote it (`1.5`, `1.0E+25`, `-INF`, `NAN`), so a value read
    /// and written again is the same bytes; no float is ever made here.
    Float(Float),
    /// `s:LEN:"…";`: PHP strings are bytes, not necessarily UTF-8.
    Str(Vec<u8>),
    /// `a:N:{…}`
    Array(Array),
}

/// The text of a PHP float, checked against PHP's grammar for `d:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Float(Box<str>);

impl Float {
    /// The literal as PHP wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An array key: PHP's arrays have integer keys and string keys, and a decimal string that
/// fits an integer *is* that integer (`"5"` and `5` are one key; `"05"` is not).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// `i:N;`
    Int(i64),
    /// `s:LEN:"…";`
    Str(Vec<u8>),
}

impl Key {
    /// The key PHP makes of `bytes` used as an array key: an integer for a canonical
    /// decimal (`0`, `-7`, `42`; not `05`, `-0`, `+1` or one past `i64`), else the string.
    pub fn from_bytes(bytes: &[u8]) -> Key {
        match canonical_int(bytes) {
            Some(n) => Key::Int(n),
            None => Key::Str(bytes.to_vec()),
        }
    }

    /// The key as PHP prints it (`5`, `u1`).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Key::Int(n) => n.to_string().into_bytes(),
            Key::Str(s) => s.clone(),
        }
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key::from_bytes(s.as_bytes())
    }
}

impl From<i64> for Key {
    fn from(n: i64) -> Key {
        Key::Int(n)
    }
}

/// `bytes` as PHP's array-key rule reads an integer: `0`, or an optional `-` and a
/// decimal without leading zeros, inside `i64`.
fn canonical_int(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let canonical = match digits {
        [b'0'] => bytes.len() == 1, // "-0" stays a string
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !canonical || digits.len() > 19 {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// A PHP array: entries in insertion order, each key once (setting a key that is there
/// replaces its value in place, as PHP does).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Array(Vec<(Key, Value)>);

impl Array {
    /// An empty array.
    pub fn new() -> Array {
        Array(Vec::new())
    }

    /// `$a[$key] = $value`: a key that is there keeps its place and takes the value.
    /// Linear in the length; [`Array::from_iter`] sets many keys in linear time.
    pub fn set(&mut self, key: Key, value: Value) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key, value)),
        }
    }

    /// `$a[$key]`.
    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = &(Key, Value)> {
        self.0.iter()
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// PHP's `array_replace_recursive($self, $with)`: each key of `with` replaces the
    /// same key here, except that where both values are arrays the two are merged the
    /// same way; new keys are appended in `with`'s order. (GatewayWorker merges a
    /// session with `updateSession` so.)
    pub fn replace_recursive(&mut self, with: Array) {
        let mut place: HashMap<Key, usize> = self.index();
        for (key, value) in with.0 {
            match (place.get(&key), value) {
                (Some(&i), Value::Array(theirs)) => match &mut self.0[i].1 {
                    Value::Array(mine) => mine.replace_recursive(theirs),
                    mine => *mine = Value::Array(theirs),
                },
                (Some(&i), value) => self.0[i].1 = value,
                (None, value) => {
                    place.insert(key.clone(), self.0.len());
                    self.0.push((key, value));
                }
            }
        }
    }

    /// Where each key is.
    fn index(&self) -> HashMap<Key, usize> {
        self.0
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect()
    }
}

impl FromIterator<(Key, Value)> for Array {
    /// Entries set in order, in linear time (a repeated key keeps its first place and
    /// its last value).
    fn from_iter<I: IntoIterator<Item = (Key, Value)>>(iter: I) -> Array {
        let mut entries: Vec<(Key, Value)> = Vec::new();
        let mut place: HashMap<Key, usize> = HashMap::new();
        for (key, value) in iter {
            match place.get(&key) {
                Some(&i) => entries[i].1 = value,
                None => {
                    place.insert(key.clone(), entries.len());
                    entries.push((key, value));
                }
            }
        }
        Array(entries)
    }
}

impl Value {
    /// A string value.
    pub fn str(s: impl AsRef<[u8]>) -> Value {
        Value::Str(s.as_ref().to_vec())
    }

    /// A list: keys 0, 1, 2, … as PHP gives `[a, b, c]`.
    pub fn list<I: IntoIterator<Item = Value>>(items: I) -> Value {
        Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (Key::Int(i as i64), v))
                .collect(),
        )
    }

    /// `serialize($value)`.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }

    /// Appends `serialize($value)` to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"N;"),
            Value::Bool(b) => out.extend_from_slice(if *b { b"b:1;" } else { b"b:0;" }),
            Value::Int(n) => write_int(*n, out),
            Value::Float(f) => {
                out.extend_from_slice(b"d:");
                out.extend_from_slice(f.0.as_bytes());
                out.push(b';');
            }
            Value::Str(s) => write_str(s, out),
            Value::Array(a) => {
                out.extend_from_slice(format!("a:{}:{{", a.len()).as_bytes());
                for (k, v) in a.iter() {
                    match k {
                        Key::Int(n) => write_int(*n, out),
                        Key::Str(s) => write_str(s, out),
                    }
                    v.write_to(out);
                }
                out.push(b'}');
            }
        }
    }
}

fn write_int(n: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("i:{n};").as_bytes());
}

fn write_str(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("s:{}:\"", s.len()).as_bytes());
    out.extend_from_slice(s);
    out.extend_from_slice(b"\";");
}

/// How much a serialized value may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Arrays inside arrays: `a:0:{}` alone is depth 1.
    pub max_depth: usize,
    /// Entries in all arrays together.
    pub max_entries: usize,
}

impl Default for Limits {
    /// Generous for a session (PHP's own `$_SESSION`-sized arrays), small enough that a
    /// hostile value costs little.
    fn default() -> Self {
        Limits {
            max_depth: 32,
            max_entries: 10_000,
        }
    }
}

/// Nesting never goes past this, whatever [`Limits::max_depth`] says: the reader recurses.
const DEPTH_CEILING: usize = 256;

/// Why a serialized value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhpError {
    /// The input ended inside a value.
    Truncated,
    /// A byte that the grammar does not allow, at this offset.
    Syntax(usize),
    /// An `i:` outside `i64`.
    IntOutOfRange(usize),
    /// An object, a reference or an escaped string (`O:`, `C:`, `E:`, `r:`, `R:`, `S:`),
    /// at this offset.
    Unsupported(usize),
    /// An array key that is neither `i:` nor `s:`, at this offset.
    BadKey(usize),
    /// Arrays nested deeper than [`Limits::max_depth`].
    TooDeep,
    /// More entries than [`Limits::max_entries`].
    TooManyEntries,
    /// Bytes after the value, from this offset.
    Trailing(usize),
}

impl fmt::Display for PhpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhpError::Truncated => write!(f, "serialized value ends early"),
            PhpError::Syntax(at) => write!(f, "serialized value: bad syntax at byte {at}"),
            PhpError::IntOutOfRange(at) => {
                write!(f, "serialized value: integer out of range at byte {at}")
            }
            PhpError::Unsupported(at) => write!(
                f,
                "serialized value: objects and references are not accepted (byte {at})"
            ),
            PhpError::BadKey(at) => write!(f, "serialized value: bad array key at byte {at}"),
            PhpError::TooDeep => write!(f, "serialized value nested too deep"),
            PhpError::TooManyEntries => write!(f, "serialized value has too many entries"),
            PhpError::Trailing(at) => write!(f, "serialized value: extra bytes from byte {at}"),
        }
    }
}

impl std::error::Error for PhpError {}

/// `unserialize($bytes)` for the values above: the whole input must be one value.
pub fn unserialize(bytes: &[u8], limits: Limits) -> Result<Value, PhpError> {
    let mut r = Reader {
        bytes,
        at: 0,
        entries_left: limits.max_entries,
        max_depth: limits.max_depth.min(DEPTH_CEILING),
    };
    let value = r.value(0)?;
    if r.at != bytes.len() {
        return Err(PhpError::Trailing(r.at));
    }
    Ok(value)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    entries_left: usize,
    max_depth: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Result<u8, PhpError> {
        self.bytes.get(self.at).copied().ok_or(PhpError::Truncated)
    }

    fn expect(&mut self, byte: u8) -> Result<(), PhpError> {
        if self.peek()? != byte {
            return Err(PhpError::Syntax(self.at));
        }
        self.at += 1;
        Ok(())
    }

    /// The bytes up to (not including) the next `end`, which is consumed.
    fn until(&mut self, end: u8) -> Result<&[u8], PhpError> {
        let rest = &self.bytes[self.at..];
        let n = memchr::memchr(end, rest).ok_or(PhpError::Truncated)?;
        self.at += n + 1;
        Ok(&rest[..n])
    }

    fn value(&mut self, depth: usize) -> Result<Value, PhpError> {
        let start = self.at;
        let tag = self.peek()?;
        if tag == b'N' {
            self.at += 1;
            self.expect(b';')?;
            return Ok(Value::Null);
        }
        self.at += 1;
        self.expect(b':')?;
        match tag {
            b'b' => {
                let v = match self.peek()? {
                    b'0' => false,
                    b'1' => true,
                    _ => return Err(PhpError::Syntax(self.at)),
                };
                self.at += 1;
                self.expect(b';')?;
                Ok(Value::Bool(v))
            }
            b'i' => self.int(b';').map(Value::Int),
            b'd' => {
                let text = self.until(b';')?;
                float_literal(text)
                    .map(Value::Float)
                    .ok_or(PhpError::Syntax(start + 2))
            }
            b's' => self.string().map(Value::Str),
            b'a' => self.array(depth + 1).map(Value::Array),
            b'O' | b'C' | b'E' | b'r' | b'R' | b'S' => Err(PhpError::Unsupported(start)),
            _ => Err(PhpError::Syntax(start)),
        }
    }

    /// `[+-]?[0-9]+` then `end`, as PHP's reader takes an integer.
    fn int(&mut self, end: u8) -> Result<i64, PhpError> {
        let start = self.at;
        let text = self.until(end)?;
        let digits = text
            .strip_prefix(b"-")
            .or_else(|| text.strip_prefix(b"+"))
            .unwrap_or(text);
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(PhpError::Syntax(start));
        }
        // Only ASCII digits and a sign remain, so the text is UTF-8.
        let text = std::str::from_utf8(text).map_err(|_| PhpError::Syntax(start))?;
        text.parse().map_err(|_| PhpError::IntOutOfRange(start))
    }

    /// A length (an `int` that is not negative) and `:`.
    fn length(&mut self) -> Result<usize, PhpError> {
        let start = self.at;
        let n = self.int(b':')?;
        usize::try_from(n).map_err(|_| PhpError::Syntax(start))
    }

    /// After `s:`: `LEN:"…";`.
    fn string(&mut self) -> Result<Vec<u8>, PhpError> {
        let len = self.length()?;
        self.expect(b'"')?;
        let end = self.at.checked_add(len).ok_or(PhpError::Truncated)?;
        let s = self.bytes.get(self.at..end).ok_or(PhpError::Truncated)?;
        self.at = end;
        self.expect(b'"')?;
        self.expect(b';')?;
        Ok(s.to_vec())
    }

    /// After `a:`: `N:{` key value … `}`. As PHP does, a repeated key keeps its first
    /// place and takes the later value.
    fn array(&mut self, depth: usize) -> Result<Array, PhpError> {
        if depth > self.max_depth {
            return Err(PhpError::TooDeep);
        }
        let count = self.length()?;
        self.expect(b'{')?;
        if count > self.entries_left {
            return Err(PhpError::TooManyEntries);
        }
        self.entries_left -= count;
        // Each entry takes at least 6 bytes (`i:0;N;`): the input bounds the reservation.
        let room = (self.bytes.len() - self.at) / 6;
        let mut pairs = Vec::with_capacity(count.min(room));
        for _ in 0..count {
            let at = self.at;
            let key = match self.peek()? {
                b'i' => {
                    self.at += 1;
                    self.expect(b':')?;
                    Key::Int(self.int(b';')?)
                }
                b's' => {
                    self.at += 1;
                    self.expect(b':')?;
                    Key::from_bytes(&self.string()?)
                }
                _ => return Err(PhpError::BadKey(at)),
            };
            pairs.push((key, self.value(depth)?));
        }
        let array = Array::from_iter(pairs);
        self.expect(b'}')?;
        Ok(array)
    }
}

/// PHP's grammar for the text after `d:`: `NAN`, `INF`, `-INF`, or a sign, digits with an
/// optional point (`1`, `1.5`, `.5`, `5.`) and an optional exponent (`1.0E+25`).
fn float_literal(text: &[u8]) -> Option<Float> {
    let ok = match text {
        b"NAN" | b"INF" | b"-INF" => true,
        _ => {
            let body = text
                .strip_prefix(b"-")
                .or_else(|| text.strip_prefix(b"+"))
                .unwrap_or(text);
            let (mantissa, exponent) = match body.iter().position(|&b| b == b'e' || b == b'E') {
                Some(i) => (&body[..i], Some(&body[i + 1..])),
                None => (body, None),
            };
            let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
            let mantissa_ok = match mantissa.iter().position(|&b| b == b'.') {
                Some(i) => {
                    let (int, frac) = (&mantissa[..i], &mantissa[i + 1..]);
                    (!int.is_empty() || !frac.is_empty()) && digits(int) && digits(frac)
                }
                None => !mantissa.is_empty() && digits(mantissa),
            };
            let exponent_ok = exponent.is_none_or(|e| {
                let e = e
                    .strip_prefix(b"-")
                    .or_else(|| e.strip_prefix(b"+"))
                    .unwrap_or(e);
                !e.is_empty() && digits(e)
            });
            mantissa_ok && exponent_ok
        }
    };
    // Only ASCII passed the checks above.
    let text = std::str::from_utf8(text).ok().filter(|_| ok)?;
    Some(Float(text.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Value, PhpError> {
        unserialize(s.as_bytes(), Limits::default())
    }

    fn assoc(entries: &[(&str, Value)]) -> Value {
        Value::Array(
            entries
                .iter()
                .map(|(k, v)| (Key::from(*k), v.clone()))
                .collect(),
        )
    }

    /// The bytes GatewayWorker sent for these replies (captured from GatewayWorker 4 with
    /// PHP 8.2): the writer must produce exactly them.
    #[test]
    fn writes_what_php_writes() {
        assert_eq!(Value::Int(1).serialize(), b"i:1;");
        assert_eq!(Value::Null.serialize(), b"N;");
        assert_eq!(Value::list([]).serialize(), b"a:0:{}");
        let by_uid = assoc(&[
            (
                "u1",
                Value::list([
                    Value::str("7f000001597400000001"),
                    Value::str("7f000001597500000001"),
                ]),
            ),
            ("7", Value::list([Value::str("7f000001597400000002")])),
            ("nobody", Value::list([])),
        ]);
        assert_eq!(
            String::from_utf8(by_uid.serialize()).unwrap(),
            r#"a:3:{s:2:"u1";a:2:{i:0;s:20:"7f000001597400000001";i:1;s:20:"7f000001597500000001";}i:7;a:1:{i:0;s:20:"7f000001597400000002";}s:6:"nobody";a:0:{}}"#
        );
        let select = Value::Array(Array::from_iter([(
            Key::Int(5),
            assoc(&[
                ("uid", Value::Null),
                ("groups", Value::Null),
                ("session", Value::str("")),
            ]),
        )]));
        assert_eq!(
            select.serialize(),
            br#"a:1:{i:5;a:3:{s:3:"uid";N;s:6:"groups";N;s:7:"session";s:0:"";}}"#
        );
        assert_eq!(Value::Bool(false).serialize(), b"b:0;");
        assert_eq!(Value::str("é").serialize(), "s:2:\"é\";".as_bytes());
    }

    #[test]
    fn reads_a_session_php_wrote_and_writes_it_back_byte_for_byte() {
        let php = r#"a:3:{s:1:"x";i:1;s:1:"n";a:2:{s:1:"p";d:1.5;s:1:"q";a:2:{i:0;i:9;i:1;i:2;}}s:1:"y";s:1:"z";}"#;
        let v = parse(php).unwrap();
        assert_eq!(v.serialize(), php.as_bytes());
        let Value::Array(a) = &v else { panic!() };
        assert_eq!(a.get(&Key::from("x")), Some(&Value::Int(1)));
    }

    #[test]
    fn keys_follow_php_rules() {
        // "5" is the integer key 5; "05", "-0" and one past i64 stay strings.
        let v =
            parse(r#"a:4:{s:1:"5";i:1;s:2:"05";i:2;s:2:"-0";i:3;s:19:"9223372036854775808";i:4;}"#)
                .unwrap();
        let Value::Array(a) = v else { panic!() };
        let keys: Vec<_> = a.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(
            keys,
            vec![
                Key::Int(5),
                Key::Str(b"05".to_vec()),
                Key::Str(b"-0".to_vec()),
                Key::Str(b"9223372036854775808".to_vec())
            ]
        );
        assert_eq!(Key::from("-9223372036854775808"), Key::Int(i64::MIN));
        // A repeated key keeps its place and takes the last value; the count is of pairs.
        assert_eq!(
            parse("a:3:{i:1;i:1;i:2;i:2;i:1;i:3;}").unwrap().serialize(),
            b"a:2:{i:1;i:3;i:2;i:2;}"
        );
    }

    #[test]
    fn accepts_what_php_accepts_for_scalars() {
        assert_eq!(parse("i:+5;"), Ok(Value::Int(5)));
        assert_eq!(parse("i:007;"), Ok(Value::Int(7)));
        assert_eq!(parse("i:-9223372036854775808;"), Ok(Value::Int(i64::MIN)));
        for f in [
            "1", ".5", "5.", "1e5", "1.5E+25", "-0.0", "INF", "-INF", "NAN", "+1",
        ] {
            let s = format!("d:{f};");
            assert_eq!(parse(&s).unwrap().serialize(), s.as_bytes(), "{f}");
        }
        assert_eq!(parse("b:1;"), Ok(Value::Bool(true)));
    }

    #[test]
    fn refuses_what_php_refuses_and_what_a_gateway_must_not_make() {
        for bad in [
            "b:2;",
            "i: 1;",
            "i:;",
            "d:.;",
            "d:1e;",
            "d:inf;",
            "s:3:\"abcd\";",
            "s:-1:\"\";",
            "a:2:{i:0;i:1;}",
            "a:1:{b:1;i:1;}",
            "a:1:{d:1.5;i:1;}",
            "a:1:{N;i:1;}",
            "a:-1:{}",
            "x:1;",
            "",
            "N",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            parse("i:99999999999999999999;"),
            Err(PhpError::IntOutOfRange(2))
        );
        assert_eq!(
            parse(r#"O:8:"stdClass":0:{}"#),
            Err(PhpError::Unsupported(0))
        );
        assert_eq!(parse("a:1:{i:0;r:1;}"), Err(PhpError::Unsupported(9)));
        assert_eq!(parse("i:1;junk"), Err(PhpError::Trailing(4)));
    }

    #[test]
    fn hostile_counts_and_depths_are_errors_not_allocations() {
        assert_eq!(parse("a:999999999999:{}"), Err(PhpError::TooManyEntries));
        let limits = Limits {
            max_depth: 3,
            max_entries: 10,
        };
        assert!(unserialize(b"a:1:{i:0;a:1:{i:0;a:0:{}}}", limits).is_ok());
        assert_eq!(
            unserialize(b"a:1:{i:0;a:1:{i:0;a:1:{i:0;a:0:{}}}}", limits),
            Err(PhpError::TooDeep)
        );
        // Entries count across all arrays.
        let eleven = format!(
            "a:11:{{{}}}",
            (0..11).map(|i| format!("i:{i};N;")).collect::<String>()
        );
        assert_eq!(
            unserialize(eleven.as_bytes(), limits),
            Err(PhpError::TooManyEntries)
        );
        // A deep nest beyond the ceiling is refused even with a silly limit.
        let deep = "a:1:{i:0;".repeat(10_000);
        let silly = Limits {
            max_depth: usize::MAX,
            max_entries: usize::MAX,
        };
        assert_eq!(unserialize(deep.as_bytes(), silly), Err(PhpError::TooDeep));
        assert_eq!(
            unserialize(b"s:9223372036854775807:\"", silly),
            Err(PhpError::Truncated)
        );
    }

    #[test]
    fn replace_recursive_is_phps() {
        // GatewayWorker's updateSession: {"x":1,"n":{"p":1.5,"q":[1,2]}} updated with
        // {"y":"z","n":{"q":[9]}} is {"x":1,"n":{"p":1.5,"q":[9,2]},"y":"z"}.
        let Value::Array(mut base) = parse(
            r#"a:2:{s:1:"x";i:1;s:1:"n";a:2:{s:1:"p";d:1.5;s:1:"q";a:2:{i:0;i:1;i:1;i:2;}}}"#,
        )
        .unwrap() else {
            panic!()
        };
        let Value::Array(with) =
            parse(r#"a:2:{s:1:"y";s:1:"z";s:1:"n";a:1:{s:1:"q";a:1:{i:0;i:9;}}}"#).unwrap()
        else {
            panic!()
        };
        base.replace_recursive(with);
        assert_eq!(
            Value::Array(base).serialize(),
            br#"a:3:{s:1:"x";i:1;s:1:"n";a:2:{s:1:"p";d:1.5;s:1:"q";a:2:{i:0;i:9;i:1;i:2;}}s:1:"y";s:1:"z";}"#
        );
    }
}
