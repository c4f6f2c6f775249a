//! `/`-commands off the push port: `command::parse` on any UTF-8 line.
//!
//! Input: byte 0 picks `max_list` (0..16), the rest is the line (a `/` is put in front
//! when missing). Checks that payload offsets are inside the line, on a char boundary and
//! past the spaces, that uid lists are non-empty, within the limit and deduplicated, and
//! that names are non-empty.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use pushwire::wire::command::{Command, MAX_UIDS_PAGE, parse};
use pushwire::wire::Uid;

fn check_payload(line: &str, at: usize) {
    assert!(at < line.len(), "payload at {at} of {line:?}");
    assert!(line.is_char_boundary(at), "payload at {at} of {line:?}");
    assert!(!line[at..].starts_with(' '));
}

fn check_uids(uids: &[Uid], max_list: usize) {
    assert!(!uids.is_empty());
    assert!(uids.len() <= max_list.max(1));
    assert_eq!(uids.iter().collect::<HashSet<_>>().len(), uids.len());
}

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let max_list = usize::from(head % 16);
    let line = if text.starts_with('/') {
        text.to_owned()
    } else {
        format!("/{text}")
    };
    let Ok(cmd) = parse(&line, max_list) else {
        return;
    };
    match &cmd {
        Command::Send { uids, payload } => {
            check_uids(uids, max_list);
            check_payload(&line, *payload);
        }
        Command::Push { line: at, .. }
        | Command::Group { payload: at, .. }
        | Command::Broadcast { payload: at, .. } => check_payload(&line, *at),
        Command::Join { uids, .. } | Command::Leave { uids, .. } => check_uids(uids, max_list),
        Command::Kick { uids, reason } => {
            check_uids(uids, max_list);
            if let Some(r) = reason {
                assert!(!r.is_empty() && !r.starts_with(' ') && line.ends_with(r));
            }
        }
        Command::Uids { limit, .. } => assert!((1..=MAX_UIDS_PAGE).contains(limit)),
        _ => {}
    }
    // Names taken as a word or a JSON string are never empty.
    match &cmd {
        Command::Push { id: name, .. }
        | Command::Group { group: name, .. }
        | Command::Join { group: name, .. }
        | Command::Leave { group: name, .. }
        | Command::Members { group: name }
        | Command::Online { uid: name } => assert!(!name.is_empty(), "empty name in {line:?}"),
        _ => {}
    }
});
