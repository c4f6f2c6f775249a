//! What reaches a gateway port: byte 0 picks the frame limit (28 + 0..=255), byte 1 the
//! read size, byte 2 the list limit (0..8); the rest is the stream, fed in pieces. Each
//! frame is parsed as a request; never a panic, no frame over the limit, lists and names
//! within theirs. Every frame's body and ext_data also go through `php::unserialize`
//! (accepted values must round-trip), and every ext_data through the Register's
//! `parse_line`.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pushwire::wire::gateway::request::{self, Limits, Request};
use pushwire::wire::gateway::{HEAD_LEN, register, take_frame};
use pushwire::wire::php;

fn check(r: &Request, limits: &Limits) {
    let list = |names: &[String], max: usize| {
        assert!(names.len() <= limits.max_list);
        assert!(names.iter().all(|n| n.len() <= max));
    };
    match r {
        Request::SendToUid { uids, .. } | Request::BatchGetClientIdByUid { uids } => {
            list(uids, limits.max_uid_bytes)
        }
        Request::SendToGroup { groups, except, .. } => {
            list(groups, limits.max_group_bytes);
            assert!(except.len() <= limits.max_list);
        }
        Request::BatchGetClientCountByGroup { groups } => list(groups, limits.max_group_bytes),
        Request::BindUid { uid, .. } => {
            assert!(!uid.is_empty() && uid.len() <= limits.max_uid_bytes)
        }
        Request::JoinGroup { group, .. } | Request::LeaveGroup { group, .. } => {
            assert!(!group.is_empty() && group.len() <= limits.max_group_bytes)
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let [max, step, max_list, stream @ ..] = data else {
        return;
    };
    let max = HEAD_LEN + usize::from(*max);
    let step = usize::from(*step).max(1);
    let limits = Limits {
        max_list: usize::from(*max_list % 8),
        max_uid_bytes: 8,
        max_group_bytes: 8,
        serialized: php::Limits {
            max_depth: 4,
            max_entries: 64,
        },
    };
    let mut buf = BytesMut::new();
    for piece in stream.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match take_frame(&mut buf, max) {
                Ok(Some(frame)) => {
                    assert!(HEAD_LEN + frame.ext.len() + frame.body.len() <= max);
                    if let Ok(r) = request::parse(&frame, &limits) {
                        check(&r, &limits);
                    }
                    for part in [&frame.ext, &frame.body] {
                        if let Ok(v) = php::unserialize(part, limits.serialized) {
                            assert_eq!(php::unserialize(&v.serialize(), limits.serialized), Ok(v));
                        }
                    }
                    let _ = register::parse_line(&frame.ext);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
