//! Property tests for every parser that sees untrusted bytes: push-line framing and
//! parsing, `/`-commands, signed-uid tokens, CIDR allow-lists, browsers' WebSocket frames,
//! the Pusher Channels protocol, and GatewayWorker's wire with PHP's serialize() format.
//!
//! They run in the normal `cargo test` with proptest's default case count (256 per
//! property); `PROPTEST_CASES=20000 cargo test --test fuzz_parsers` runs them longer.
//! Coverage-guided fuzzing of the same parsers lives in `fuzz/` (see `fuzz/README.md`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::{Bytes, BytesMut};
use hmac::{Hmac, KeyInit, Mac};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use pushwire::access::{Cidr, parse_cidrs};
use pushwire::auth::{Secret, TokenError};
use pushwire::wire::command::{self, Command, MAX_UIDS_PAGE, is_command};
use pushwire::wire::{BadLine, Frame, LineFramer, push_target};
use serde::de::IgnoredAny;
use serde_json::{Map, Value};
use sha2::Sha256;

// ---------------------------------------------------------------------------------------
// Shared strategies
// ---------------------------------------------------------------------------------------

/// Strings that stress JSON escaping and UTF-8: quotes, backslashes, spaces, controls,
/// multi-byte characters, and sometimes anything at all.
fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9 ]{0,8}",
        2 => "[\"\\\\ \t\n/é€😀\u{0}\u{7f}\u{2028}a-c]{0,8}",
        1 => any::<String>(),
    ]
}

/// Any JSON value, nested a few levels, whose objects sometimes carry a `"uid"` key.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        tricky_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            vec((json_key(), inner), 0..5).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just("uid".to_owned()),
        1 => prop::sample::select(vec!["UID", "uid ", " uid", "uid\u{0}", "ui", "uidd", ""])
            .prop_map(str::to_owned),
        4 => tricky_string(),
    ]
}

/// Flip, insert or delete one char at `at` (modulo the length). `None` changes nothing.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(Index, char),
    Insert(Index, char),
    Delete(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let ch = prop_oneof![
        4 => prop::sample::select(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "
                .chars()
                .collect::<Vec<_>>()
        ),
        1 => any::<char>(),
    ];
    prop_oneof![
        (any::<Index>(), ch.clone()).prop_map(|(i, c)| Mutation::Replace(i, c)),
        (any::<Index>(), ch).prop_map(|(i, c)| Mutation::Insert(i, c)),
        any::<Index>().prop_map(Mutation::Delete),
    ]
}

fn mutate(s: &str, m: &Mutation) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    match *m {
        Mutation::Replace(i, c) if !chars.is_empty() => {
            let i = i.index(chars.len());
            chars[i] = c;
        }
        Mutation::Insert(i, c) => {
            let i = i.index(chars.len() + 1);
            chars.insert(i, c);
        }
        Mutation::Delete(i) if !chars.is_empty() => {
            let i = i.index(chars.len());
            chars.remove(i);
        }
        _ => {}
    }
    chars.into_iter().collect()
}

// ---------------------------------------------------------------------------------------
// LineFramer
// ---------------------------------------------------------------------------------------

/// The reference framing: split on `\n`, strip one trailing `\r`, longer than `max` is
/// `TooLong`; a non-empty unterminated tail is one more line.
fn model_frames(input: &[u8], max: usize) -> Vec<Frame> {
    let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let tail = parts.pop().unwrap_or_default();
    if !tail.is_empty() {
        parts.push(tail);
    }
    parts
        .into_iter()
        .map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > max {
                Frame::TooLong
            } else {
                Frame::Line(Bytes::copy_from_slice(line))
            }
        })
        .collect()
}

/// Feeds `chunks` to a framer the way the push port does, checking the memory bound after
/// every step.
fn run_framer(chunks: &[Vec<u8>], max: usize) -> Result<Vec<Frame>, TestCaseError> {
    let mut framer = LineFramer::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        prop_assert!(
            buf.len() <= max + 2 + chunk.len(),
            "buffer {} after read",
            buf.len()
        );
        while let Some(frame) = framer.next_frame(&mut buf) {
            out.push(frame);
            prop_assert!(buf.len() <= max + 2 + chunk.len());
        }
        // Between reads at most one partial line (`max` bytes and a `\r`) is held.
        prop_assert!(
            buf.len() <= max + 1,
            "held {} bytes, max {}",
            buf.len(),
            max
        );
    }
    out.extend(framer.finish(&mut buf));
    prop_assert!(buf.is_empty());
    prop_assert_eq!(framer.finish(&mut buf), None);
    Ok(out)
}

fn framer_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => Just(b'\n'),
        2 => Just(b'\r'),
        6 => b'a'..=b'c',
        2 => any::<u8>(),
    ]
}

/// Lines whose lengths sit around `max`, with assorted terminators, cut at random points.
fn framed_input() -> impl Strategy<Value = (usize, Vec<Vec<u8>>)> {
    (0usize..64).prop_flat_map(|max| {
        let body = prop_oneof![b'a'..=b'z', Just(b'\r'), any::<u8>()];
        let len = prop_oneof![
            3 => max.saturating_sub(2)..=max + 3,
            1 => 0..=2 * max + 5,
        ];
        let line = (
            len.prop_flat_map(move |n| vec(body.clone(), n)),
            prop::sample::select(vec![&b"\n"[..], b"\r\n", b"\r\r\n", b"\n\n", b""]),
        )
            .prop_map(|(mut l, end)| {
                l.extend_from_slice(end);
                l
            });
        (
            Just(max),
            vec(line, 0..6).prop_map(|ls| ls.concat()),
            vec(any::<Index>(), 0..8),
        )
            .prop_map(|(max, data, cuts)| {
                let mut at: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
                at.sort_unstable();
                let mut chunks = Vec::new();
                let mut from = 0;
                for to in at.into_iter().chain([data.len()]) {
                    chunks.push(data[from..to].to_vec());
                    from = to;
                }
                (max, chunks)
            })
    })
}

proptest! {
    #[test]
    fn framer_matches_model_on_random_chunks(
        max in 0usize..64,
        chunks in vec(vec(framer_byte(), 0..80), 0..12),
    ) {
        let got = run_framer(&chunks, max)?;
        prop_assert_eq!(got, model_frames(&chunks.concat(), max));
    }

    #[test]
    fn framer_matches_model_near_the_limit((max, chunks) in framed_input()) {
        let got = run_framer(&chunks, max)?;
        prop_assert_eq!(got, model_frames(&chunks.concat(), max));
    }

    #[test]
    fn framer_is_chunking_independent(
        max in 0usize..64,
        data in vec(framer_byte(), 0..300),
        chunk in 1usize..20,
    ) {
        // Byte-at-a-time, fixed-size chunks and one big read all give the same frames.
        let whole = run_framer(std::slice::from_ref(&data), max)?;
        let bytes: Vec<Vec<u8>> = data.iter().map(|&b| vec![b]).collect();
        prop_assert_eq!(&run_framer(&bytes, max)?, &whole);
        let fixed: Vec<Vec<u8>> = data.chunks(chunk).map(<[u8]>::to_vec).collect();
        prop_assert_eq!(&run_framer(&fixed, max)?, &whole);
    }
}

// ---------------------------------------------------------------------------------------
// push_target
// ---------------------------------------------------------------------------------------

/// What `push_target` must answer for a line that serializes `v` (keys are unique).
fn model_target(v: &Value) -> Result<String, BadLine> {
    let Value::Object(map) = v else {
        return Err(BadLine::NotObject);
    };
    match map.get("uid") {
        None => Err(BadLine::MissingUid),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Some(_) => Err(BadLine::BadUid),
    }
}

/// A push line for `v`: compact, pretty, padded, or with `"uid"` spelled as an escape.
fn encode_line(v: &Value, style: u8) -> String {
    let compact = serde_json::to_string(v).expect("Value serializes");
    match style % 4 {
        0 => compact,
        1 => serde_json::to_string_pretty(v).expect("Value serializes"),
        2 => format!(" \t{compact}\r "),
        // `"uid"` with unescaped quotes is only ever a whole string token (key or value),
        // so this rewrite keeps the meaning.
        _ => compact.replace("\"uid\"", "\"\\u0075id\""),
    }
}

/// Checks what holds for every line `push_target` accepts (UTF-8 aside: see
/// `push_target_accepts_only_utf8`).
fn check_accepted(line: &[u8], uid: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        !is_command(line),
        "a push line must never look like a command"
    );
    // Syntax: the whole line is one JSON value. Numbers out of f64 range and lone
    // surrogate escapes are grammatical JSON, so IgnoredAny, not Value, is the judge.
    prop_assert!(
        serde_json::from_slice::<IgnoredAny>(line).is_ok(),
        "accepted a line that is not JSON: {:?}",
        String::from_utf8_lossy(line)
    );
    if let Ok(text) = std::str::from_utf8(line) {
        prop_assert!(serde_json::from_str::<IgnoredAny>(text).is_ok());
        // Where serde_json can build the value too, it is an object with that uid.
        if let Ok(v) = serde_json::from_str::<Value>(text) {
            prop_assert_eq!(model_target(&v), Ok(uid.to_owned()), "line {:?}", text);
        }
    }
    Ok(())
}

fn push_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Raw bytes.
        vec(any::<u8>(), 0..64),
        // JSON-ish alphabet, so the parser gets past the first byte.
        vec(
            prop::sample::select(
                b"{}[]\":,uid0123456789-+.eE \t\r\ntruefalsn\\/\x80\xff\xc3\xa9".to_vec()
            ),
            0..64
        ),
        // A valid line with one byte changed, inserted or deleted.
        (
            prop_oneof![push_object(), json_value()],
            any::<u8>(),
            any::<Index>(),
            prop_oneof![
                any::<u8>(),
                0x80u8..=0xff,
                prop::sample::select(b"\"\\{}[],:".to_vec())
            ],
            0u8..3,
        )
            .prop_map(|(v, style, at, byte, op)| {
                let mut line = encode_line(&v, style).into_bytes();
                let i = at.index(line.len() + 1);
                match op {
                    0 if i < line.len() => line[i] = byte,
                    1 => line.insert(i, byte),
                    _ if i < line.len() => {
                        line.remove(i);
                    }
                    _ => {}
                }
                line
            }),
    ]
}

/// Objects that usually have a `"uid"`, of any type, among random other fields.
fn push_object() -> impl Strategy<Value = Value> {
    (
        vec((json_key(), json_value()), 0..5),
        prop::option::weighted(0.8, json_value()),
    )
        .prop_map(|(fields, uid)| {
            let mut map: Map<String, Value> = fields.into_iter().collect();
            if let Some(uid) = uid {
                map.insert("uid".to_owned(), uid);
            }
            Value::Object(map)
        })
}

proptest! {
    #[test]
    fn push_target_never_panics_and_accepts_only_json(line in push_bytes()) {
        match push_target(&line) {
            Ok(uid) => check_accepted(&line, &uid)?,
            Err(BadLine::Empty) => prop_assert!(line.iter().all(u8::is_ascii_whitespace)),
            Err(BadLine::TooLong) => {
                prop_assert!(false, "push_target never returns TooLong itself")
            }
            Err(BadLine::NotUtf8) => prop_assert!(std::str::from_utf8(&line).is_err()),
            Err(_) => prop_assert!(!line.iter().all(u8::is_ascii_whitespace)),
        }
    }

    // Was a bug: serde_json skips ignored strings without checking UTF-8, so push_target
    // accepted `{"uid":0,"":"\x80"}`; it now checks the whole line first.
    #[test]
    fn push_target_accepts_only_utf8(line in push_bytes()) {
        if push_target(&line).is_ok() {
            prop_assert!(
                std::str::from_utf8(&line).is_ok(),
                "accepted a line that is not UTF-8: {:?}",
                String::from_utf8_lossy(&line)
            );
        }
    }

    #[test]
    fn push_target_agrees_with_serde_json_value(
        v in prop_oneof![3 => push_object(), 1 => json_value()],
        style in any::<u8>(),
    ) {
        let line = encode_line(&v, style);
        let got = push_target(line.as_bytes()).map(|uid| uid.into_owned());
        prop_assert_eq!(&got, &model_target(&v), "line {:?}", line);
        if let Ok(uid) = &got {
            check_accepted(line.as_bytes(), uid)?;
        }
    }

    #[test]
    fn push_target_refuses_trailing_garbage_and_truncation(
        v in push_object(),
        cut in any::<Index>(),
    ) {
        let line = serde_json::to_string(&v).expect("Value serializes");
        // Any strict prefix of an object is incomplete JSON (or, cut inside a multi-byte
        // character, not UTF-8).
        let prefix = &line.as_bytes()[..cut.index(line.len())];
        let got = push_target(prefix);
        prop_assert!(
            matches!(got, Err(BadLine::Json(_) | BadLine::Empty | BadLine::NotUtf8)),
            "prefix {:?} gave {:?}", String::from_utf8_lossy(prefix), got
        );
        let doubled = format!("{line}{line}");
        prop_assert!(matches!(push_target(doubled.as_bytes()), Err(BadLine::Json(_))));
    }
}

/// The smallest input of `push_target_accepts_only_utf8` (a fixed bug, kept as a regression).
#[test]
fn push_target_refuses_non_utf8_minimal() {
    assert!(push_target(b"{\"uid\":0,\"\":\"\x80\"}").is_err());
}

// ---------------------------------------------------------------------------------------
// command::parse
// ---------------------------------------------------------------------------------------

const VERBS: &[&str] = &[
    "/ping",
    "/send",
    "/push",
    "/group",
    "/broadcast",
    "/join",
    "/leave",
    "/online",
    "/count",
    "/members",
    "/uids",
    "/kick",
    "/stats",
    "/",
    "/sendx",
];

/// Lines built from the grammar's own pieces, so most reach the argument parsers.
fn command_line() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        " ",
        "  ",
        "\"",
        "[",
        "]",
        ",",
        "\\",
        "\\u",
        "\\ud800",
        "1",
        "-1",
        "1.5",
        "1e3",
        "99999999999999999999",
        "a",
        "é",
        "😀",
        "\t",
        "\"a b\"",
        "[1,\"x\",2]",
        "[]",
        "null",
        "{}",
        "\"\"",
    ]);
    (
        prop::sample::select(VERBS),
        vec(
            prop_oneof![4 => piece.prop_map(str::to_owned), 1 => any::<String>()],
            0..10,
        ),
    )
        .prop_map(|(verb, pieces)| format!("{verb}{}", pieces.concat()))
}

/// Checks the offsets and shapes `parse` promises for a command it accepted.
fn check_command(line: &str, max_list: usize, cmd: &Command<'_>) -> Result<(), TestCaseError> {
    let check_payload = |at: usize| -> Result<(), TestCaseError> {
        prop_assert!(at < line.len(), "payload at {} of {:?}", at, line);
        prop_assert!(line.is_char_boundary(at), "payload at {} of {:?}", at, line);
        prop_assert!(!line[at..].starts_with(' '));
        Ok(())
    };
    let check_uids = |uids: &[pushwire::wire::Uid]| -> Result<(), TestCaseError> {
        prop_assert!(!uids.is_empty());
        prop_assert!(
            uids.len() <= max_list.max(1),
            "{} uids, max {}",
            uids.len(),
            max_list
        );
        let distinct: std::collections::HashSet<_> = uids.iter().collect();
        prop_assert_eq!(distinct.len(), uids.len(), "duplicate uid in {:?}", uids);
        Ok(())
    };
    match cmd {
        Command::Send { uids, payload } => {
            check_uids(uids)?;
            check_payload(*payload)?;
        }
        Command::Push { line: at, .. }
        | Command::Group { payload: at, .. }
        | Command::Broadcast { payload: at, .. } => check_payload(*at)?,
        Command::Join { uids, .. } | Command::Leave { uids, .. } => check_uids(uids)?,
        Command::Kick { uids, reason } => {
            check_uids(uids)?;
            if let Some(r) = reason {
                prop_assert!(!r.is_empty() && !r.starts_with(' '));
                prop_assert!(line.ends_with(r));
            }
        }
        Command::Uids { limit, .. } => prop_assert!((1..=MAX_UIDS_PAGE).contains(limit)),
        _ => {}
    }
    // Names taken by `string` (a word or a JSON string) are never empty.
    match cmd {
        Command::Push { id: name, .. }
        | Command::Group { group: name, .. }
        | Command::Join { group: name, .. }
        | Command::Leave { group: name, .. }
        | Command::Members { group: name }
        | Command::Online { uid: name } => {
            prop_assert!(!name.is_empty(), "empty name in {:?}", line)
        }
        _ => {}
    }
    Ok(())
}

/// A uid as the grammar's JSON list holds it: a string or an integer.
fn uid_item() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => tricky_string().prop_map(Value::from),
        1 => prop::sample::select(vec!["a", "b", "3", "-1"]).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => (-3i64..4).prop_map(Value::from),
    ]
}

fn uid_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A payload as a backend sends it: anything, but not starting with a space.
fn payload() -> impl Strategy<Value = String> {
    (
        any::<char>().prop_filter("payload starts after the spaces", |c| *c != ' '),
        prop_oneof!["[ -~]{0,20}", any::<String>()],
    )
        .prop_map(|(c, rest)| format!("{c}{rest}"))
}

proptest! {
    #[test]
    fn command_parse_never_panics_on_arbitrary_text(
        line in prop_oneof![
            any::<String>().prop_map(|s| format!("/{s}")),
            command_line(),
        ],
        max_list in 0usize..12,
    ) {
        prop_assert!(is_command(line.as_bytes()));
        if let Ok(cmd) = command::parse(&line, max_list) {
            check_command(&line, max_list, &cmd)?;
        }
    }

    #[test]
    fn send_round_trips_uid_lists(
        items in vec(uid_item(), 1..8),
        payload in payload(),
        spaces in 1usize..4,
        slack in 0usize..3,
    ) {
        let list = serde_json::to_string(&items).expect("list serializes");
        let line = format!("/send {list}{}{payload}", " ".repeat(spaces));
        let mut want: Vec<String> = Vec::new();
        for item in &items {
            let uid = uid_text(item);
            if !want.contains(&uid) {
                want.push(uid);
            }
        }
        match command::parse(&line, items.len() + slack) {
            Ok(Command::Send { uids, payload: at }) => {
                let got: Vec<&str> = uids.iter().map(|u| &**u).collect();
                prop_assert_eq!(got, want.iter().map(String::as_str).collect::<Vec<_>>());
                prop_assert_eq!(&line[at..], payload.as_str());
            }
            other => prop_assert!(false, "{:?} parsed as {:?}", line, other),
        }
        // One distinct uid over the limit is refused, whatever the list holds (duplicates
        // are ignored, so they do not count against it).
        let over = command::parse(&line, want.len() - 1);
        prop_assert!(
            matches!(&over, Err(e) if e.to_string().contains("too many uids")),
            "{:?} with max {} gave {:?}", line, want.len() - 1, over
        );
    }

    #[test]
    fn kick_and_join_round_trip_uid_lists(
        items in vec(uid_item(), 1..6),
        group in tricky_string(),
        reason in payload(),
    ) {
        let list = serde_json::to_string(&items).expect("list serializes");
        let mut want: Vec<String> = Vec::new();
        for item in &items {
            let uid = uid_text(item);
            if !want.contains(&uid) {
                want.push(uid);
            }
        }
        let kick = format!("/kick {list} {reason}");
        match command::parse(&kick, items.len()) {
            Ok(Command::Kick { uids, reason: got }) => {
                prop_assert_eq!(uids.iter().map(|u| u.to_string()).collect::<Vec<_>>(), want.clone());
                prop_assert_eq!(got, Some(reason.as_str()));
            }
            other => prop_assert!(false, "{:?} parsed as {:?}", kick, other),
        }
        let group_json = serde_json::to_string(&group).expect("string serializes");
        let join = format!("/join {group_json} {list}");
        match command::parse(&join, items.len()) {
            // A name (group, id, uid) given as a JSON string must not be empty.
            Err(e) if group.is_empty() => prop_assert_eq!(e.to_string(), "GROUP is empty"),
            Ok(Command::Join { group: g, uids }) => {
                prop_assert_eq!(&*g, group.as_str());
                prop_assert_eq!(uids.iter().map(|u| u.to_string()).collect::<Vec<_>>(), want);
            }
            other => prop_assert!(false, "{:?} parsed as {:?}", join, other),
        }
    }

    #[test]
    fn push_and_online_round_trip_strings(
        id in tricky_string(),
        word in "[^ \"\\[][^ ]{0,12}",
        line in payload(),
    ) {
        let id_json = serde_json::to_string(&id).expect("string serializes");
        let text = format!("/push {id_json} {line}");
        match command::parse(&text, 1) {
            Err(e) if id.is_empty() => prop_assert_eq!(e.to_string(), "ID is empty"),
            Ok(Command::Push { id: got, line: at, .. }) => {
                prop_assert_eq!(&*got, id.as_str());
                prop_assert_eq!(&text[at..], line.as_str());
            }
            other => prop_assert!(false, "{:?} parsed as {:?}", text, other),
        }
        // A bare word is taken verbatim, JSON-looking or not.
        let text = format!("/online {word}");
        match command::parse(&text, 1) {
            Ok(Command::Online { uid }) => prop_assert_eq!(&*uid, word.as_str()),
            other => prop_assert!(false, "{:?} parsed as {:?}", text, other),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Secret::verify
// ---------------------------------------------------------------------------------------

/// Leeway on `exp`/`nbf`, as documented on `pushwire::auth::LEEWAY`.
const LEEWAY: u64 = 30;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn sign(secret: &[u8], header: &[u8], claims: &[u8]) -> String {
    let signing = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("any key length");
    mac.update(signing.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing}.{sig}")
}

/// What `verify` must answer for a correctly signed token with these parts.
fn model_verify(header: &[u8], claims: &[u8], now: u64) -> Result<String, TokenError> {
    let header: Value = serde_json::from_slice(header).map_err(|_| TokenError::Malformed)?;
    if header.get("alg") != Some(&Value::from("HS256")) {
        return Err(TokenError::Algorithm);
    }
    let claims: Value = serde_json::from_slice(claims).map_err(|_| TokenError::Malformed)?;
    match claims.get("exp").and_then(Value::as_u64) {
        None => return Err(TokenError::NoExpiry),
        Some(exp) if u128::from(exp) + u128::from(LEEWAY) <= u128::from(now) => {
            return Err(TokenError::Expired);
        }
        Some(_) => {}
    }
    if let Some(nbf) = claims.get("nbf") {
        match nbf.as_u64() {
            Some(nbf) if u128::from(nbf) <= u128::from(now) + u128::from(LEEWAY) => {}
            _ => return Err(TokenError::NotYetValid),
        }
    }
    match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        _ => Err(TokenError::Subject),
    }
}

fn now_secs() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..100, 1_700_000_000u64..1_900_000_000, 0u64..(1 << 40)]
}

/// A time near `now`, so `exp`/`nbf` land on both sides of the leeway.
fn near(now: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => (-70i64..70).prop_map(move |d| now.saturating_add_signed(d)),
        // Right at the leeway's edges.
        2 => prop_oneof![-32i64..-27, 27i64..32].prop_map(move |d| now.saturating_add_signed(d)),
        1 => any::<u64>(),
    ]
}

fn claim_value(now: u64) -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => near(now).prop_map(Value::from),
        1 => json_value(),
        1 => near(now).prop_map(|t| Value::from(t as f64)),
        1 => near(now).prop_map(|t| Value::from(t.to_string())),
    ]
}

fn token_parts() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, u64)> {
    now_secs().prop_flat_map(|now| {
        let alg = prop_oneof![
            6 => Just(Value::from("HS256")),
            1 => prop::sample::select(vec!["none", "HS512", "hs256", "HS256 ", ""]).prop_map(Value::from),
            1 => json_value(),
        ];
        let header = (prop::option::weighted(0.9, alg), vec((json_key(), json_value()), 0..3))
            .prop_map(|(alg, extra)| {
                let mut m: Map<String, Value> = extra.into_iter().filter(|(k, _)| k != "alg").collect();
                if let Some(alg) = alg {
                    m.insert("alg".into(), alg);
                }
                Value::Object(m)
            });
        let sub = prop_oneof![
            3 => tricky_string().prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            1 => json_value(),
        ];
        let claims = (
            prop::option::weighted(0.9, sub),
            prop::option::weighted(0.9, claim_value(now)),
            prop::option::weighted(0.4, claim_value(now)),
            vec((json_key(), json_value()), 0..3),
        )
            .prop_map(|(sub, exp, nbf, extra)| {
                let mut m: Map<String, Value> = extra.into_iter().collect();
                for (k, v) in [("sub", sub), ("exp", exp), ("nbf", nbf)] {
                    match v {
                        Some(v) => m.insert(k.into(), v),
                        None => m.remove(k),
                    };
                }
                Value::Object(m)
            });
        let encoded = |v: BoxedStrategy<Value>| {
            prop_oneof![
                8 => v.prop_map(|v| serde_json::to_vec(&v).expect("Value serializes")),
                1 => json_value().prop_map(|v| serde_json::to_vec(&v).expect("Value serializes")),
                1 => vec(any::<u8>(), 0..12),
            ]
        };
        (encoded(header.boxed()), encoded(claims.boxed()), Just(now))
    })
}

proptest! {
    #[test]
    fn verify_never_panics_on_arbitrary_text(
        token in prop_oneof![
            any::<String>(),
            "[A-Za-z0-9_=+/.-]{0,90}",
            (vec(any::<u8>(), 0..40), vec(any::<u8>(), 0..40), vec(any::<u8>(), 0..40))
                .prop_map(|(a, b, c)| format!(
                    "{}.{}.{}",
                    URL_SAFE_NO_PAD.encode(a),
                    URL_SAFE_NO_PAD.encode(b),
                    URL_SAFE_NO_PAD.encode(c)
                )),
        ],
        now in now_secs(),
    ) {
        let got = Secret::new("s3cret").verify(&token, at(now));
        // Forging a signature by chance is not on the table.
        prop_assert!(got.is_err(), "{:?} verified as {:?}", token, got);
    }

    #[test]
    fn minted_token_verifies_to_its_uid(
        secret in vec(any::<u8>(), 0..80),
        uid in tricky_string(),
        now in now_secs(),
        exp_delta in prop_oneof![-100i64..1000, -32i64..-27],
    ) {
        let exp = now.saturating_add_signed(exp_delta);
        let secret = Secret::new(secret);
        let token = secret.mint(&uid, exp);
        let want = if exp + LEEWAY <= now {
            Err(TokenError::Expired)
        } else if uid.is_empty() {
            Err(TokenError::Subject)
        } else {
            Ok(uid.clone())
        };
        prop_assert_eq!(secret.verify(&token, at(now)), want);
    }

    #[test]
    fn mutated_token_is_refused(
        secret in vec(any::<u8>(), 0..40),
        uid in "[a-z0-9]{1,12}",
        m in mutation(),
    ) {
        let now = 1_800_000_000;
        let secret = Secret::new(secret);
        let token = secret.mint(&uid, now + 3600);
        prop_assert_eq!(secret.verify(&token, at(now)), Ok(uid.clone()));
        let forged = mutate(&token, &m);
        let got = secret.verify(&forged, at(now));
        if forged == token {
            prop_assert_eq!(got, Ok(uid));
        } else {
            prop_assert!(got.is_err(), "{:?} (from {:?}) verified as {:?}", forged, m, got);
        }
    }

    #[test]
    fn exp_and_nbf_edges_follow_the_rules(
        now in now_secs(),
        exp in prop_oneof![-32i64..-27, 27i64..32, -100i64..100],
        nbf in prop::option::of(prop_oneof![-32i64..-27, 27i64..32, -100i64..100]),
    ) {
        let mut claims = serde_json::json!({"sub": "u", "exp": now.saturating_add_signed(exp)});
        if let Some(nbf) = nbf {
            claims["nbf"] = Value::from(now.saturating_add_signed(nbf));
        }
        let header = br#"{"alg":"HS256","typ":"JWT"}"#;
        let claims = serde_json::to_vec(&claims).expect("Value serializes");
        let token = sign(b"k", header, &claims);
        prop_assert_eq!(
            Secret::new("k").verify(&token, at(now)),
            model_verify(header, &claims, now)
        );
    }

    #[test]
    fn signed_claims_follow_the_rules((header, claims, now) in token_parts()) {
        let secret = b"fuzz";
        let token = sign(secret, &header, &claims);
        prop_assert_eq!(
            Secret::new(&secret[..]).verify(&token, at(now)),
            model_verify(&header, &claims, now),
            "header {:?} claims {:?}",
            String::from_utf8_lossy(&header),
            String::from_utf8_lossy(&claims)
        );
    }
}

// ---------------------------------------------------------------------------------------
// parse_cidrs
// ---------------------------------------------------------------------------------------

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<Ipv4Addr>().prop_map(IpAddr::V4),
        any::<Ipv6Addr>().prop_map(IpAddr::V6),
        any::<Ipv4Addr>().prop_map(|a| IpAddr::V6(a.to_ipv6_mapped())),
    ]
}

/// `ip` with some of its low `bits` bits flipped, so it lands on both sides of a prefix.
fn nearby(ip: IpAddr, bits: i32, flip: u128) -> IpAddr {
    let bits = bits.clamp(0, 128) as u32;
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shr(32 - bits.min(32)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) ^ (flip as u32 & mask)))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shr(128 - bits.min(128)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) ^ (flip & mask)))
        }
    }
}

/// The documented meaning of `contains`: equal prefixes, IPv4-mapped peers as IPv4.
fn model_contains(net: IpAddr, len: u8, peer: IpAddr) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    match (net, peer) {
        (IpAddr::V4(n), IpAddr::V4(p)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            (u32::from(n) ^ u32::from(p)) & mask == 0
        }
        (IpAddr::V6(n), IpAddr::V6(p)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            (u128::from(n) ^ u128::from(p)) & mask == 0
        }
        _ => false,
    }
}

proptest! {
    #[test]
    fn parse_cidrs_never_panics(
        text in prop_oneof![
            any::<String>(),
            "[0-9a-fA-F:./, ]{0,40}",
            vec(
                prop::sample::select(vec![
                    "10.0.0.0", "::1", "::ffff:1.2.3.4", "fe80::1%eth0", "/", "//", "8",
                    "33", "128", "129", "256", "-1", "+8", ",", " ", "1.2.3", "::", "0",
                ]),
                0..8,
            )
            .prop_map(|p| p.concat()),
        ],
        peers in vec(ip(), 1..4),
    ) {
        if let Ok(nets) = parse_cidrs(&text) {
            for net in &nets {
                for peer in &peers {
                    let _ = net.contains(*peer);
                }
            }
        }
    }

    #[test]
    fn cidr_parses_and_matches_like_the_model(
        net in ip(),
        len in 0u8..=140,
        pad in prop::sample::select(vec!["", " ", "  "]),
        edge in -3i32..=3,
        flip in any::<u128>(),
        other in ip(),
    ) {
        let max = if net.is_ipv4() { 32 } else { 128 };
        let text = format!("{pad}{net}{pad}/{pad}{len}{pad}");
        let parsed = text.parse::<Cidr>();
        prop_assert_eq!(parsed.is_ok(), len <= max, "{:?} gave {:?}", text, parsed);
        let listed = parse_cidrs(&format!(",{text},,"));
        prop_assert_eq!(listed.is_ok(), len <= max);
        if let Ok(cidr) = parsed {
            prop_assert_eq!(listed.ok(), Some(vec![cidr]));
            // Peers that differ only below, at, or just above the prefix boundary.
            let host_bits = i32::from(max) - i32::from(len) + edge;
            // Exactly one bit flipped, the lowest network bit or a host bit near it.
            let one = 1u128 << (host_bits - 1).clamp(0, i32::from(max) - 1);
            let peers = [net, nearby(net, host_bits, flip), nearby(net, 128, one), other];
            for peer in peers {
                prop_assert_eq!(
                    cidr.contains(peer),
                    model_contains(net, len, peer),
                    "{} contains {}", text, peer
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// WebSocket frames from browsers (src/frames.rs): the first frame (uid or token) and
// everything after it go through this parser.

mod frames {
    use proptest::prelude::*;
    use pushwire::frames::{FrameReader, Incoming};

    fn masked(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// A message as a browser may send it: text or binary, split into fragments, with a
    /// ping between fragments.
    fn message() -> impl Strategy<Value = (bool, Vec<u8>, Vec<usize>, [u8; 4])> {
        (
            any::<bool>(),
            prop_oneof![
                "\\PC{0,40}".prop_map(String::into_bytes),
                proptest::collection::vec(any::<u8>(), 0..300),
            ],
            proptest::collection::vec(1usize..50, 0..4),
            any::<[u8; 4]>(),
        )
    }

    proptest! {
        #[test]
        fn never_panics_and_never_holds_more_than_it_was_given(
            input in proptest::collection::vec(any::<u8>(), 0..600),
            max in 0usize..300,
        ) {
            let mut r = FrameReader::default();
            r.feed(&input);
            for _ in 0..input.len() + 1 {
                match r.parse(max) {
                    Ok(Some(_)) => prop_assert!(r.buffered() <= input.len()),
                    Ok(None) | Err(_) => break,
                }
            }
        }

        #[test]
        fn fragmented_masked_messages_round_trip_in_any_chunking(
            msgs in proptest::collection::vec(message(), 1..5),
            chunk in 1usize..64,
        ) {
            let mut wire = Vec::new();
            let mut want = Vec::new();
            for (text, payload, cuts, mask) in &msgs {
                let text = *text && std::str::from_utf8(payload).is_ok();
                // Split the payload at the cut points (clamped), fragment by fragment.
                let mut pieces = Vec::new();
                let mut at = 0;
                for c in cuts {
                    let end = (at + c).min(payload.len());
                    pieces.push(&payload[at..end]);
                    at = end;
                }
                pieces.push(&payload[at..]);
                for (i, piece) in pieces.iter().enumerate() {
                    let opcode = if i > 0 { 0x0 } else if text { 0x1 } else { 0x2 };
                    let fin = if i + 1 == pieces.len() { 0x80 } else { 0 };
                    wire.extend(masked(fin | opcode, piece, *mask));
                    if i == 0 && pieces.len() > 1 {
                        wire.extend(masked(0x89, b"hi", *mask));
                        want.push(Incoming::Ping(b"hi".to_vec()));
                    }
                }
                want.push(if text {
                    Incoming::Text(String::from_utf8(payload.clone()).expect("checked"))
                } else {
                    Incoming::Binary(payload.len())
                });
            }
            let mut r = FrameReader::default();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                r.feed(piece);
                while let Some(m) = r.parse(4096).map_err(|e| TestCaseError::fail(e.to_string()))? {
                    got.push(m);
                }
            }
            prop_assert_eq!(got, want);
            prop_assert_eq!(r.buffered(), 0);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Protocol v1's browser side (docs/protocol.md)
// ---------------------------------------------------------------------------------------

proptest! {
    /// The opt-in query, resume points, acks and `/push` options never panic on any
    /// text; positions and acks round-trip; a query without `pushwire` is always the
    /// seed's protocol, whatever else it holds.
    #[test]
    fn v1_parsers_never_panic_and_round_trip(
        text in any::<String>(),
        query in "[a-z=&%0-9:]{0,40}",
        epoch in any::<u64>(),
        seq in 0u64..u64::MAX,
    ) {
        use pushwire::wire::envelope::{Mode, Position, parse_ack};
        let _ = Mode::from_query(Some(&text));
        let _ = Position::parse(&text);
        let _ = parse_ack(&text);
        let _ = command::parse(&format!("/push 1 {text}"), 10);
        if !query.contains("pushwire") {
            prop_assert_eq!(Mode::from_query(Some(&query)), Ok(Mode::Seed));
        }
        let p = Position { epoch, seq };
        prop_assert_eq!(Position::parse(&p.to_string()), Some(p));
        prop_assert_eq!(parse_ack(&format!("a {seq}")), Some(seq));
        let since = format!("pushwire=1&since={p}");
        prop_assert_eq!(Mode::from_query(Some(&since)), Ok(Mode::V1 { since: Some(p) }));
    }
}

// ---------------------------------------------------------------------------------------
// The Pusher Channels protocol (wire/pusher, docs/pusher.md)
// ---------------------------------------------------------------------------------------

mod pusher {
    use super::*;
    use pushwire::wire::pusher::api::{self, ApiAuthError, Request};
    use pushwire::wire::pusher::{
        Access, AuthError, Channel, Inbound, Keys, SocketId, channel, codes, inbound, outbound,
    };

    /// The regex every server SDK validates with: `\A#?[-a-zA-Z0-9_=@,.;]+\z` (the `#`
    /// only for `#server-to-user-`), at most 200 bytes (216 for a user channel).
    fn model_valid(name: &str) -> bool {
        let class = |s: &str| !s.is_empty() && s.bytes().all(channel::is_name_byte);
        match name.strip_prefix("#server-to-user-") {
            Some(user) => class(user) && user.len() <= 200,
            None => class(name) && name.len() <= 200,
        }
    }

    fn channel_name() -> impl Strategy<Value = String> {
        let prefix = prop::sample::select(vec![
            "",
            "private-",
            "presence-",
            "private-encrypted-",
            "cache-",
            "private-cache-",
            "presence-cache-",
            "private-encrypted-cache-",
            "#server-to-user-",
            "#",
            "private",
        ]);
        let body = prop_oneof![
            6 => "[-a-zA-Z0-9_=@,.;]{0,24}",
            1 => "[-a-z]{195,210}",
            2 => "[-a-z .#:/é\u{0}]{0,12}",
        ];
        (prefix, body).prop_map(|(p, b)| format!("{p}{b}"))
    }

    /// A string as pusher-js's JSON.stringify would write it.
    fn js(s: &str) -> String {
        serde_json::to_string(s).unwrap()
    }

    proptest! {
        /// Channel names are valid exactly when the SDKs' regex says so, and the kind is
        /// the longest matching prefix.
        #[test]
        fn channel_names_follow_the_sdk_regex(name in channel_name()) {
            let parsed = Channel::parse(&name);
            prop_assert_eq!(parsed.is_ok(), model_valid(&name), "{:?}", name);
            if let Ok(c) = parsed {
                let access = c.kind().access;
                let want = if name.starts_with("#server-to-user-") {
                    Access::User
                } else if name.starts_with("private-encrypted-") {
                    Access::Encrypted
                } else if name.starts_with("private-") {
                    Access::Private
                } else if name.starts_with("presence-") {
                    Access::Presence
                } else {
                    Access::Public
                };
                prop_assert_eq!(access, want);
                let cache = ["cache-", "private-cache-", "presence-cache-", "private-encrypted-cache-"]
                    .iter()
                    .any(|p| name.starts_with(p));
                prop_assert_eq!(c.kind().cache, cache);
            }
        }

        /// No frame, however broken, panics the parser; what pusher-js sends parses back
        /// to what it meant, with `data` as an object or (the protocol document's form) as
        /// a JSON-encoded string.
        #[test]
        fn client_frames_parse_or_refuse(
            text in any::<String>(),
            name in channel_name(),
            auth in tricky_string(),
            data in tricky_string(),
            as_string in any::<bool>(),
            m in mutation(),
        ) {
            let _ = inbound::parse(&text);
            let inner = format!(
                r#"{{"auth":{},"channel_data":{},"channel":{}}}"#,
                js(&auth), js(&data), js(&name)
            );
            let data_field = if as_string { js(&inner) } else { inner };
            let frame = format!(r#"{{"event":"pusher:subscribe","data":{data_field}}}"#);
            let _ = inbound::parse(&mutate(&frame, &m));
            match inbound::parse(&frame) {
                Ok(Inbound::Subscribe(s)) => {
                    prop_assert!(model_valid(&name));
                    prop_assert_eq!(s.channel.name(), name.as_str());
                    prop_assert_eq!(s.auth.as_deref(), Some(auth.as_str()));
                    prop_assert_eq!(s.channel_data.as_deref(), Some(data.as_str()));
                }
                Err(pushwire::wire::pusher::BadFrame::Channel(_)) => prop_assert!(!model_valid(&name)),
                other => prop_assert!(false, "{:?}", other),
            }
            let whisper = format!(r#"{{"event":"client-x","channel":{},"data":{}}}"#, js(&name), js(&data));
            let _ = inbound::parse(&mutate(&whisper, &m));
            if let Ok(Inbound::Client(c)) = inbound::parse(&whisper) {
                prop_assert_eq!(&*c.channel, name.as_str());
                let relayed = outbound::client_event(&c.event, &c.channel, c.data, Some("7"));
                let v: Value = serde_json::from_str(&relayed).unwrap();
                prop_assert_eq!(v["data"].as_str(), Some(data.as_str()));
                prop_assert_eq!(v["user_id"].as_str(), Some("7"));
            }
        }

        /// Every server frame is JSON whose `data` string decodes to what was put in,
        /// whatever the names and texts hold.
        #[test]
        fn server_frames_round_trip(
            name in tricky_string(),
            channel in tricky_string(),
            data in tricky_string(),
            user in tricky_string(),
            info in json_value(),
        ) {
            let decode = |frame: &str| -> (Value, Value) {
                let v: Value = serde_json::from_str(frame).unwrap();
                let d = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
                (v, d)
            };
            let e: Value = serde_json::from_str(&outbound::event(&name, &channel, &data)).unwrap();
            prop_assert_eq!(e["event"].as_str(), Some(name.as_str()));
            prop_assert_eq!(e["channel"].as_str(), Some(channel.as_str()));
            prop_assert_eq!(e["data"].as_str(), Some(data.as_str()));
            let info_text = info.to_string();
            // Compared as parsed from the same text (floats need not round-trip exactly).
            let info: Value = serde_json::from_str(&info_text).unwrap();
            let (v, d) = decode(&outbound::member_added(&channel, &user, &info_text));
            prop_assert_eq!(v["channel"].as_str(), Some(channel.as_str()));
            prop_assert_eq!(&d["user_id"], &Value::from(user.as_str()));
            prop_assert_eq!(&d["user_info"], &info);
            let (_, d) = decode(&outbound::presence_succeeded(&channel, [(user.as_str(), info_text.as_str())]));
            prop_assert_eq!(&d["presence"]["hash"][user.as_str()], &info);
            prop_assert_eq!(&d["presence"]["count"], &Value::from(1));
            let refusal = codes::Refusal::with(codes::Code::ClientEventRejected, data.clone());
            let (_, d) = decode(&outbound::error(&refusal));
            prop_assert_eq!(&d["message"], &Value::from(data.as_str()));
            let (_, d) = decode(&outbound::signin_success(&data));
            prop_assert_eq!(&d["user_data"], &Value::from(data.as_str()));
        }

        /// A socket_id prints and parses back; parsing any text never panics and accepts
        /// only `\d+\.\d+` without leading zeros.
        #[test]
        fn socket_ids_round_trip(high in any::<u64>(), low in any::<u64>(), text in "[0-9.a]{0,44}") {
            let id = SocketId { high, low };
            prop_assert_eq!(SocketId::parse(&id.to_string()), Some(id));
            if let Some(p) = SocketId::parse(&text) {
                prop_assert_eq!(p.to_string(), text);
            }
        }

        /// Channel auth and signin: the app's signature verifies; changing the socket,
        /// the channel, the data or one digit of the signature refuses it.
        #[test]
        fn channel_auth_and_signin_verify_only_what_was_signed(
            secret in vec(any::<u8>(), 0..40),
            high in any::<u64>(),
            low in any::<u64>(),
            name in "presence-[a-z0-9.]{1,20}",
            user in "[a-z0-9]{1,20}",
            flip in 0usize..64,
        ) {
            let app = Keys::new("key", &secret);
            let sid = SocketId { high, low }.to_string();
            let other = SocketId { high, low: low.wrapping_add(1) }.to_string();
            let data = format!(r#"{{"user_id":"{user}","user_info":{{}}}}"#);
            let auth = app.channel_auth(&sid, &name, Some(&data));
            prop_assert_eq!(app.check_channel_auth(&sid, &name, Some(&data), Some(&auth)), Ok(()));
            prop_assert_eq!(app.check_channel_auth(&other, &name, Some(&data), Some(&auth)), Err(AuthError::Signature));
            prop_assert_eq!(app.check_channel_auth(&sid, &format!("{name}x"), Some(&data), Some(&auth)), Err(AuthError::Signature));
            prop_assert_eq!(app.check_channel_auth(&sid, &name, None, Some(&auth)), Err(AuthError::Signature));
            let mut bad = auth.clone().into_bytes();
            let at = 4 + flip;
            bad[at] = if bad[at] == b'0' { b'1' } else { b'0' };
            let bad = String::from_utf8(bad).unwrap();
            prop_assert_eq!(app.check_channel_auth(&sid, &name, Some(&data), Some(&bad)), Err(AuthError::Signature));
            let user_data = format!(r#"{{"id":"{user}"}}"#);
            let signin = app.signin_auth(&sid, &user_data);
            prop_assert_eq!(app.check_signin(&sid, &user_data, &signin), Ok(user.clone()));
            prop_assert_eq!(app.check_signin(&other, &user_data, &signin), Err(AuthError::Signature));
        }

        /// HTTP API requests: what `sign_api` signs verifies at any moment within the
        /// window and is refused one second outside it; changing the method, the path,
        /// a parameter, the body or a digit of the signature refuses it; and escaping the
        /// query's values differently changes nothing.
        #[test]
        fn api_signatures_verify_only_what_was_signed(
            secret in vec(any::<u8>(), 1..40),
            path in "/apps/[0-9]{1,4}/(events|batch_events|channels|channels/[a-z-]{1,10})",
            prefix in "[a-z-]{0,10}",
            body in vec(any::<u8>(), 0..64),
            ts in 1_000_000u64..4_000_000_000,
            skew in 0u64..=600,
            early in any::<bool>(),
            flip in 0usize..64,
        ) {
            let app = Keys::new("key", &secret);
            let method = if body.is_empty() { "GET" } else { "POST" };
            let extra = [("info", "user_count,subscription_count"), ("filter_by_prefix", prefix.as_str())];
            let q = app.sign_api(method, &path, &extra, &body, ts);
            let at = |t: u64| UNIX_EPOCH + Duration::from_secs(t);
            let now = if early { ts - skew } else { ts + skew };
            let req = Request { method, path: &path, query: &q, body: &body };
            let v = app.verify_api(&req, at(now), api::DEFAULT_WINDOW);
            prop_assert!(v.is_ok(), "{:?}", v);
            let v = v.unwrap();
            prop_assert_eq!(v.param("filter_by_prefix"), Some(prefix.as_str()));
            let late = if early { ts - 601 } else { ts + 601 };
            prop_assert_eq!(
                app.verify_api(&req, at(late), api::DEFAULT_WINDOW),
                Err(ApiAuthError::Stale { skew: 601, window: 600 })
            );
            // The same values, escaped or not.
            let raw = q.replace("%2C", ",").replace("%2D", "-");
            let plus = q.replace("%2C", "%2c");
            for query in [&raw, &plus] {
                let r = Request { query, ..req };
                prop_assert!(app.verify_api(&r, at(ts), api::DEFAULT_WINDOW).is_ok());
            }
            let other_method = if method == "GET" { "POST" } else { "GET" };
            let refused = |r: Request<'_>| app.verify_api(&r, at(ts), api::DEFAULT_WINDOW).is_err();
            let other_path = format!("{path}x");
            let changed_info = q.replace("subscription_count", "user_count");
            let mut other_body = body.clone();
            other_body.push(b'x');
            let changed = [
                Request { method: other_method, ..req },
                Request { path: &other_path, ..req },
                Request { query: &changed_info, ..req },
                Request { body: &other_body, ..req },
            ];
            for r in changed {
                prop_assert!(refused(r), "{:?}", r);
            }
            let sig_at = q.find("auth_signature=").unwrap() + "auth_signature=".len() + flip;
            let mut bad = q.clone().into_bytes();
            bad[sig_at] = if bad[sig_at] == b'0' { b'1' } else { b'0' };
            let bad = String::from_utf8(bad).unwrap();
            prop_assert_eq!(
                app.verify_api(&Request { query: &bad, ..req }, at(ts), api::DEFAULT_WINDOW),
                Err(ApiAuthError::Signature)
            );
        }

        /// Any query string and body: no panic, and nothing unsigned is accepted.
        #[test]
        fn api_verify_never_panics_nor_accepts_unsigned(
            query in "[a-z_0-9=&%+.,-]{0,120}",
            body in vec(any::<u8>(), 0..32),
        ) {
            let app = Keys::new("key", b"secret");
            let req = Request { method: "POST", path: "/apps/1/events", query: &query, body: &body };
            prop_assert!(app.verify_api(&req, SystemTime::now(), api::DEFAULT_WINDOW).is_err());
        }

        /// The webhook signature is the HMAC-SHA256 of the body, for any body.
        #[test]
        fn webhook_signature_is_the_body_hmac(secret in vec(any::<u8>(), 0..40), body in vec(any::<u8>(), 0..200)) {
            let app = Keys::new("key", &secret);
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret).unwrap();
            mac.update(&body);
            let want: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
            prop_assert_eq!(app.webhook_signature(&body), want);
        }
    }
}

// ---------------------------------------------------------------------------------------
// GatewayWorker's wire (src/wire/gateway/) and PHP's serialize() (src/wire/php.rs): what
// a GatewayClient, or anyone who reaches its ports, sends.

mod gateway {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use bytes::BytesMut;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use pushwire::wire::gateway::request::{self, Limits, Request, Scope};
    use pushwire::wire::gateway::{
        ClientId, Cmd, Frame, FrameError, HEAD_LEN, Header, encode_frame, register, take_frame,
    };
    use pushwire::wire::php::{self, Key, Value};
    use serde_json::json;

    use super::{json_value, mutate, mutation, tricky_string};

    /// Bytes that stress the format: its own punctuation, quotes, digits, high bytes.
    fn php_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => vec(prop::sample::select(b"\";:{}aisNbd01-9 \\\x00\xff".to_vec()), 0..8),
            1 => vec(any::<u8>(), 0..8),
        ]
    }

    fn php_key() -> impl Strategy<Value = Key> {
        prop_oneof![
            any::<i64>().prop_map(Key::Int),
            (0i64..4).prop_map(Key::Int),
            // A decimal string is the integer key, as PHP keys it.
            php_bytes().prop_map(|b| Key::from_bytes(&b)),
        ]
    }

    /// Any value our writer may be asked to write (floats as PHP writes them).
    fn php_value() -> impl Strategy<Value = Value> {
        let float = prop::sample::select(vec![
            "1.5", "0.1", "-2.0E-7", "1.0E+25", "INF", "-INF", "NAN", "0",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            float.prop_map(|f| php::unserialize(
                format!("d:{f};").as_bytes(),
                php::Limits::default()
            )
            .unwrap()),
            php_bytes().prop_map(Value::Str),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            vec((php_key(), inner), 0..6).prop_map(|kv| Value::Array(kv.into_iter().collect()))
        })
    }

    /// Nesting depth (an array alone is 1) and entries in all arrays.
    fn shape(v: &Value) -> (usize, usize) {
        match v {
            Value::Array(a) => a.iter().fold((1, a.len()), |(d, n), (_, v)| {
                let (vd, vn) = shape(v);
                (d.max(vd + 1), n + vn)
            }),
            _ => (0, 0),
        }
    }

    fn header() -> impl Strategy<Value = Header> {
        (
            any::<u8>(),
            any::<u32>(),
            any::<u16>(),
            any::<u32>(),
            any::<u16>(),
            any::<u32>(),
            any::<u8>(),
            any::<u16>(),
        )
            .prop_map(
                |(
                    cmd,
                    local_ip,
                    local_port,
                    client_ip,
                    client_port,
                    connection_id,
                    flag,
                    gateway_port,
                )| Header {
                    cmd,
                    local_ip,
                    local_port,
                    client_ip,
                    client_port,
                    connection_id,
                    flag,
                    gateway_port,
                },
            )
    }

    /// Cut `bytes` at the given points (modulo its length).
    fn chunks(bytes: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
    }

    /// What a GatewayClient-shaped ext_data may hold, and what the codec must make of it.
    fn names() -> impl Strategy<Value = Vec<serde_json::Value>> {
        vec(
            prop_oneof![
                tricky_string().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from)
            ],
            0..6,
        )
    }

    fn name_text(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    fn ext_data() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            vec(any::<u8>(), 0..40),
            json_value().prop_map(|v| v.to_string().into_bytes()),
            names().prop_map(|n| json!(n).to_string().into_bytes()),
            (names(), vec(any::<u32>(), 0..4)).prop_map(|(g, ex)| {
                let exclude: serde_json::Map<String, serde_json::Value> =
                    ex.iter().map(|c| (c.to_string(), json!(c))).collect();
                json!({"group": g, "exclude": exclude})
                    .to_string()
                    .into_bytes()
            }),
            (vec(any::<u32>(), 0..4), any::<bool>()).prop_map(|(c, only)| {
                let map: serde_json::Map<String, serde_json::Value> =
                    c.iter().map(|c| (c.to_string(), json!(c))).collect();
                json!({ (if only { "connections" } else { "exclude" }): map })
                    .to_string()
                    .into_bytes()
            }),
            (names(), json_value())
                .prop_map(|(f, w)| json!({"fields": f, "where": w}).to_string().into_bytes()),
        ]
    }

    fn check_request(r: &Request, limits: &Limits) -> Result<(), TestCaseError> {
        let names = |list: &[String], max_bytes: usize| -> Result<(), TestCaseError> {
            prop_assert!(list.len() <= limits.max_list);
            prop_assert!(list.iter().all(|n| n.len() <= max_bytes));
            Ok(())
        };
        let one = |n: &str, max_bytes: usize| -> Result<(), TestCaseError> {
            prop_assert!(n.len() <= max_bytes);
            Ok(())
        };
        match r {
            Request::SendToUid { uids, .. } | Request::BatchGetClientIdByUid { uids } => {
                names(uids, limits.max_uid_bytes)?
            }
            Request::SendToGroup { groups, except, .. } => {
                names(groups, limits.max_group_bytes)?;
                prop_assert!(except.len() <= limits.max_list);
            }
            Request::BatchGetClientCountByGroup { groups } => {
                names(groups, limits.max_group_bytes)?
            }
            Request::SendToAll { only, except, .. } => {
                prop_assert!(only.as_ref().is_none_or(|o| o.len() <= limits.max_list));
                prop_assert!(except.len() <= limits.max_list);
            }
            Request::BindUid { uid, .. } => {
                one(uid, limits.max_uid_bytes)?;
                prop_assert!(!uid.is_empty() && uid != "0");
            }
            Request::JoinGroup { group, .. }
            | Request::LeaveGroup { group, .. }
            | Request::Ungroup { group } => {
                one(group, limits.max_group_bytes)?;
                prop_assert!(!group.is_empty() && group != "0");
            }
            Request::Select(s) => {
                prop_assert!(s.fields.len() <= limits.max_list);
                if let Scope::Matching {
                    groups,
                    uids,
                    connections,
                } = &s.scope
                {
                    names(groups, limits.max_group_bytes)?;
                    names(uids, limits.max_uid_bytes)?;
                    prop_assert!(connections.len() <= limits.max_list);
                }
            }
            _ => {}
        }
        Ok(())
    }

    proptest! {
        /// What the writer writes, the reader reads back to the same value, and writes
        /// again to the same bytes.
        #[test]
        fn php_values_round_trip(v in php_value()) {
            let bytes = v.serialize();
            let limits = php::Limits { max_depth: 8, max_entries: 1000 };
            let back = php::unserialize(&bytes, limits).map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&bytes))))?;
            prop_assert_eq!(&back, &v);
            prop_assert_eq!(back.serialize(), bytes);
        }

        /// Any bytes, and any serialization with a byte changed, inserted or deleted:
        /// never a panic; what is accepted is within the limits and a fixed point.
        #[test]
        fn php_unserialize_never_panics_and_keeps_its_limits(
            v in php_value(),
            m in mutation(),
            noise in vec(any::<u8>(), 0..64),
            max_depth in 0usize..5,
            max_entries in 0usize..20,
        ) {
            let limits = php::Limits { max_depth, max_entries };
            let serialized = String::from_utf8_lossy(&v.serialize()).into_owned();
            for input in [mutate(&serialized, &m).into_bytes(), noise] {
                if let Ok(got) = php::unserialize(&input, limits) {
                    let (depth, entries) = shape(&got);
                    prop_assert!(depth <= max_depth && entries <= max_entries, "{depth} {entries}");
                    prop_assert_eq!(php::unserialize(&got.serialize(), limits), Ok(got));
                }
            }
        }

        /// Keys: PHP's rule for a string key is a fixed point of printing it.
        #[test]
        fn php_keys_follow_the_decimal_rule(bytes in php_bytes(), n in any::<i64>()) {
            prop_assert_eq!(Key::from_bytes(n.to_string().as_bytes()), Key::Int(n));
            let key = Key::from_bytes(&bytes);
            prop_assert_eq!(Key::from_bytes(&key.to_bytes()), key.clone());
            if let Key::Int(k) = key {
                prop_assert_eq!(k.to_string().into_bytes(), bytes);
            }
        }

        /// array_replace_recursive keeps every key of both sides, the replacement's
        /// scalars winning.
        #[test]
        fn replace_recursive_keeps_both_sides(a in php_value(), b in php_value()) {
            if let (Value::Array(mut base), Value::Array(with)) = (a.clone(), b) {
                let before: Vec<Key> = base.iter().map(|(k, _)| k.clone()).collect();
                base.replace_recursive(with.clone());
                for k in before.iter().chain(with.iter().map(|(k, _)| k)) {
                    prop_assert!(base.get(k).is_some());
                }
                for (k, v) in with.iter() {
                    if !matches!(v, Value::Array(_)) {
                        prop_assert_eq!(base.get(k), Some(v));
                    }
                }
                prop_assert_eq!(&base.iter().take(before.len()).map(|(k, _)| k.clone()).collect::<Vec<_>>(), &before);
            }
        }

        /// Frames written back to back and read in any chunks come out as written; a
        /// frame over the limit is an error as soon as its length is in, and the buffer
        /// never holds more than the limit plus the last read.
        #[test]
        fn frames_round_trip_in_any_chunks(
            frames in vec((header(), vec(any::<u8>(), 0..40), vec(any::<u8>(), 0..40)), 0..5),
            cuts in vec(any::<prop::sample::Index>(), 0..12),
            max in HEAD_LEN..HEAD_LEN + 90,
        ) {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for (h, ext, body) in &frames {
                stream.extend(encode_frame(h, ext, body).unwrap());
                expected.push(Frame { header: *h, ext: ext.clone().into(), body: body.clone().into() });
            }
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut error = None;
            'read: for chunk in chunks(&stream, &cuts) {
                buf.extend_from_slice(&chunk);
                prop_assert!(buf.len() <= max + chunk.len());
                loop {
                    match take_frame(&mut buf, max) {
                        Ok(Some(f)) => got.push(f),
                        Ok(None) => break,
                        Err(e) => { error = Some(e); break 'read; }
                    }
                }
            }
            let fitting = expected.iter().take_while(|f| HEAD_LEN + f.ext.len() + f.body.len() <= max).count();
            prop_assert_eq!(&got[..], &expected[..fitting]);
            match expected.get(fitting) {
                Some(f) => prop_assert_eq!(error, Some(FrameError::TooLong { pack_len: (HEAD_LEN + f.ext.len() + f.body.len()) as u32, max })),
                None => prop_assert!(error.is_none() && buf.is_empty()),
            }
        }

        /// Arbitrary bytes never make the reader panic or hand out a frame over the limit.
        #[test]
        fn take_frame_never_panics(bytes in vec(any::<u8>(), 0..200), cuts in vec(any::<prop::sample::Index>(), 0..6), max in 0usize..120) {
            let mut buf = BytesMut::new();
            'read: for chunk in chunks(&bytes, &cuts) {
                buf.extend_from_slice(&chunk);
                loop {
                    match take_frame(&mut buf, max) {
                        Ok(Some(f)) => prop_assert!(HEAD_LEN + f.ext.len() + f.body.len() <= max.max(HEAD_LEN)),
                        Ok(None) => break,
                        Err(_) => break 'read,
                    }
                }
            }
        }

        /// Any command, flag, ext_data and body: a request within the limits or a
        /// refusal, never a panic; a refused query always has an answer.
        #[test]
        fn requests_never_panic_and_keep_the_limits(
            cmd in prop_oneof![prop::sample::select(vec![5u8, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 20, 21, 22, 23, 24, 25, 26, 27, 28, 202, 203, 204]), any::<u8>()],
            flag in 0u8..4,
            connection_id in any::<u32>(),
            ext in ext_data(),
            body in prop_oneof![php_value().prop_map(|v| v.serialize()), vec(any::<u8>(), 0..20)],
            max_list in 0usize..5,
            max_bytes in 0usize..12,
        ) {
            let limits = Limits { max_list, max_uid_bytes: max_bytes, max_group_bytes: max_bytes + 1, ..Limits::default() };
            let header = Header { cmd, connection_id, flag, ..Header::default() };
            let bytes = encode_frame(&header, &ext, &body).unwrap();
            let frame = take_frame(&mut BytesMut::from(&bytes[..]), 1 << 16).unwrap().unwrap();
            match request::parse(&frame, &limits) {
                Ok(r) => check_request(&r, &limits)?,
                Err(e) => {
                    let _ = e.to_string();
                    let query = Cmd::from_u8(cmd).is_some_and(Cmd::expects_reply);
                    prop_assert_eq!(e.reply().is_some(), query);
                }
            }
        }

        /// Lists of uids GatewayClient may send (json_encode of strings and ints) are read
        /// back as the names PHP keys them by; exclusions are read by key.
        #[test]
        fn name_and_exclusion_lists_round_trip(uids in names(), groups in names(), exclude in vec(any::<u32>(), 0..5)) {
            let limits = Limits { max_list: 10, max_uid_bytes: 1000, max_group_bytes: 1000, ..Limits::default() };
            let frame = |cmd: Cmd, ext: String| {
                let header = Header { cmd: cmd as u8, flag: 1, ..Header::default() };
                take_frame(&mut BytesMut::from(&encode_frame(&header, ext.as_bytes(), b"m").unwrap()[..]), 1 << 16).unwrap().unwrap()
            };
            let want: Vec<String> = uids.iter().map(name_text).collect();
            match request::parse(&frame(Cmd::SendToUid, json!(uids).to_string()), &limits) {
                Ok(Request::SendToUid { uids: got, .. }) => prop_assert_eq!(got, want),
                other => prop_assert!(false, "{other:?}"),
            }
            let map: serde_json::Map<String, serde_json::Value> = exclude.iter().map(|c| (c.to_string(), json!(c))).collect();
            let mut keys: Vec<u32> = exclude.clone();
            keys.sort_unstable();
            keys.dedup();
            match request::parse(&frame(Cmd::SendToGroup, json!({"group": groups, "exclude": map}).to_string()), &limits) {
                Ok(Request::SendToGroup { groups: got, mut except, .. }) => {
                    prop_assert_eq!(got, groups.iter().map(name_text).collect::<Vec<_>>());
                    except.sort_unstable();
                    prop_assert_eq!(except, keys);
                }
                other => prop_assert!(false, "{other:?}"),
            }
        }

        /// Client ids: every address and number round-trips; any other text is refused
        /// without a panic.
        #[test]
        fn client_ids_round_trip(ip in any::<u32>(), port in any::<u16>(), connection in any::<u32>(), text in any::<String>(), hex in "[0-9a-fA-F]{18,22}") {
            let id = ClientId { gateway: SocketAddrV4::new(Ipv4Addr::from(ip), port), connection };
            let s = id.to_string();
            prop_assert_eq!(s.len(), 20);
            prop_assert_eq!(s.parse::<ClientId>(), Ok(id));
            let _ = text.parse::<ClientId>();
            prop_assert_eq!(hex.parse::<ClientId>().is_ok(), hex.len() == 20);
        }

        /// Register lines: never a panic; any secret GatewayClient can send is read back.
        #[test]
        fn register_lines_never_panic(line in vec(any::<u8>(), 0..60), value in json_value(), secret in tricky_string()) {
            let _ = register::parse_line(&line);
            let _ = register::parse_line(json!({"event": value, "secret_key": value}).to_string().as_bytes());
            let line = json!({"event": "worker_connect", "secret_key": secret}).to_string();
            prop_assert_eq!(register::parse_line(line.as_bytes()), Ok(register::Event::WorkerConnect { secret_key: Some(secret) }));
        }
    }

    /// A value nested past any limit is refused, not a stack overflow.
    #[test]
    fn php_deep_nesting_is_refused() {
        let deep = "a:1:{i:0;".repeat(100_000);
        let limits = php::Limits {
            max_depth: usize::MAX,
            max_entries: usize::MAX,
        };
        assert_eq!(
            php::unserialize(deep.as_bytes(), limits),
            Err(php::PhpError::TooDeep)
        );
    }
}
