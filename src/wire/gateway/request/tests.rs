//! The parser's cases, byte for byte as GatewayClient builds its frames.

use bytes::BytesMut;

use super::super::{Header, encode_frame, take_frame};
use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn frame_of(bytes: &[u8]) -> Frame {
    let mut buf = BytesMut::from(bytes);
    let frame = take_frame(&mut buf, 1 << 20).unwrap().unwrap();
    assert!(buf.is_empty());
    frame
}

fn request(hex_frame: &str) -> Result<Request, BadRequest> {
    parse(&frame_of(&hex(hex_frame)), &Limits::default())
}

fn frame(cmd: Cmd, connection: u32, flag: u8, ext: &[u8], body: &[u8]) -> Frame {
    let header = Header {
        cmd: cmd as u8,
        connection_id: connection,
        flag,
        ..Header::default()
    };
    frame_of(&encode_frame(&header, ext, body).unwrap())
}

fn text(s: &str) -> Message {
    Message {
        text: Bytes::copy_from_slice(s.as_bytes()),
        raw: false,
    }
}

fn why(r: Result<Request, BadRequest>) -> Why {
    r.unwrap_err().why
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Frames GatewayClient (5dfa435, PHP 8.2) wrote for these calls, client ids naming
/// connection 5 at one gateway and 9 at another.
#[test]
fn reads_every_kind_of_frame_gatewayclient_writes() {
    let cases: &[(&str, &str, Request)] = &[
        (
            "sendToAll('hi')",
            "0000001e0600000000000000000000000000000000010000000000006869",
            Request::SendToAll {
                only: None,
                except: vec![],
                message: text("hi"),
            },
        ),
        (
            "sendToAll('hi', null, null, true)",
            "0000001e0600000000000000000000000000000000030000000000006869",
            Request::SendToAll {
                only: None,
                except: vec![],
                message: Message {
                    text: Bytes::from_static(b"hi"),
                    raw: true,
                },
            },
        ),
        (
            "sendToAll('hi', [$a, $b]) at $a's gateway",
            "000000350600000000000000000000000000000000010000000000177b22636f6e6e656374696f6e73223a7b2235223a357d7d6869",
            Request::SendToAll {
                only: Some(vec![5]),
                except: vec![],
                message: text("hi"),
            },
        ),
        (
            "sendToAll('hi', null, $a) at $a's gateway",
            "000000310600000000000000000000000000000000010000000000137b226578636c756465223a7b2235223a357d7d6869",
            Request::SendToAll {
                only: None,
                except: vec![5],
                message: text("hi"),
            },
        ),
        (
            "sendToClient($a, 'x')",
            "0000001d05000000000000000000000000000000050100000000000078",
            Request::SendToOne {
                connection: 5,
                message: text("x"),
            },
        ),
        (
            "sendToUid('u1', 123)",
            "000000250e00000000000000000000000000000000010000000000065b227531225d313233",
            Request::SendToUid {
                uids: strings(&["u1"]),
                message: text("123"),
            },
        ),
        (
            "sendToUid(['u1', 2], 'm')",
            "000000250e00000000000000000000000000000000010000000000085b227531222c325d6d",
            Request::SendToUid {
                uids: strings(&["u1", "2"]),
                message: text("m"),
            },
        ),
        (
            "sendToGroup(['g', 5], 'm', [$a, $b]) at $b's gateway",
            "000000401600000000000000000000000000000000010000000000237b2267726f7570223a5b2267222c355d2c226578636c756465223a7b2239223a397d7d6d",
            Request::SendToGroup {
                groups: strings(&["g", "5"]),
                except: vec![9],
                message: text("m"),
            },
        ),
        (
            "sendToGroup('g', 'm')",
            "0000003b16000000000000000000000000000000000100000000001e7b2267726f7570223a5b2267225d2c226578636c756465223a6e756c6c7d6d",
            Request::SendToGroup {
                groups: strings(&["g"]),
                except: vec![],
                message: text("m"),
            },
        ),
        (
            "bindUid($a, 'u1')",
            "0000001e0c00000000000000000000000000000005010000000000027531",
            Request::BindUid {
                connection: 5,
                uid: "u1".into(),
            },
        ),
        (
            "unbindUid($a, 'u1')",
            "0000001e0d00000000000000000000000000000005010000000000027531",
            Request::UnbindUid { connection: 5 },
        ),
        (
            "joinGroup($b, 'g')",
            "0000001d14000000000000000000000000000000090100000000000167",
            Request::JoinGroup {
                connection: 9,
                group: "g".into(),
            },
        ),
        (
            "leaveGroup($b, 'g')",
            "0000001d15000000000000000000000000000000090100000000000167",
            Request::LeaveGroup {
                connection: 9,
                group: "g".into(),
            },
        ),
        (
            "ungroup('g')",
            "0000001d1b000000000000000000000000000000000100000000000167",
            Request::Ungroup { group: "g".into() },
        ),
        (
            "isOnline($a)",
            "0000001c0b0000000000000000000000000000000501000000000000",
            Request::IsOnline { connection: 5 },
        ),
        (
            "getClientIdByUid('u1')",
            "0000001e0f00000000000000000000000000000000010000000000027531",
            Request::GetClientIdByUid { uid: "u1".into() },
        ),
        (
            "batchGetClientIdByUid(['u1', 3])",
            "000000241000000000000000000000000000000000010000000000085b227531222c335d",
            Request::BatchGetClientIdByUid {
                uids: strings(&["u1", "3"]),
            },
        ),
        (
            "getUidByClientId($a)",
            "000000501900000000000000000000000000000000010000000000347b226669656c6473223a5b22756964225d2c227768657265223a7b22636f6e6e656374696f6e5f6964223a7b2235223a357d7d7d",
            Request::Select(Select {
                fields: vec![Field::Uid],
                scope: Scope::Matching {
                    groups: vec![],
                    uids: vec![],
                    connections: vec![5],
                },
            }),
        ),
        (
            "getAllGroupUidList()",
            "000000421900000000000000000000000000000000010000000000267b226669656c6473223a5b22756964222c2267726f757073225d2c227768657265223a5b5d7d",
            Request::Select(Select {
                fields: vec![Field::Uid, Field::Groups],
                scope: Scope::All,
            }),
        ),
        (
            "getClientIdListByGroup('g')",
            "0000004719000000000000000000000000000000000100000000002b7b226669656c6473223a5b22756964225d2c227768657265223a7b2267726f757073223a5b2267225d7d7d",
            Request::Select(Select {
                fields: vec![Field::Uid],
                scope: Scope::Matching {
                    groups: strings(&["g"]),
                    uids: vec![],
                    connections: vec![],
                },
            }),
        ),
        (
            "getAllClientIdCount()",
            "0000001c180000000000000000000000000000000001000000000000",
            Request::GetClientCountByGroup { group: None },
        ),
        (
            "getClientIdCountByGroup('g')",
            "0000001d18000000000000000000000000000000000100000000000167",
            Request::GetClientCountByGroup {
                group: Some("g".into()),
            },
        ),
        (
            "batchGetClientIdCountByGroup(['g', 7])",
            "000000231c00000000000000000000000000000000010000000000075b2267222c375d",
            Request::BatchGetClientCountByGroup {
                groups: strings(&["g", "7"]),
            },
        ),
        (
            "getAllGroupIdList()",
            "0000001c1a0000000000000000000000000000000001000000000000",
            Request::GetGroupIdList,
        ),
        (
            "getAllClientSessions()",
            "0000001c0a0000000000000000000000000000000001000000000000",
            Request::GetAllClientSessions,
        ),
        (
            "getClientSessionsByGroup('g')",
            "0000001d17000000000000000000000000000000000100000000000167",
            Request::GetClientSessionsByGroup { group: "g".into() },
        ),
        (
            "closeClient($a)",
            "0000001e0700000000000000000000000000000005000000000000004e3b",
            Request::Kick {
                connection: 5,
                last: None,
            },
        ),
        (
            "closeClient($a, 'bye')",
            "0000001f070000000000000000000000000000000501000000000000627965",
            Request::Kick {
                connection: 5,
                last: Some(Bytes::from_static(b"bye")),
            },
        ),
        (
            "destoryClient($b)",
            "0000001c080000000000000000000000000000000901000000000000",
            Request::Destroy { connection: 9 },
        ),
        (
            "setSession($a, ['k' => 1])",
            "0000002ecc0000000000000000000000000000000501000000000012613a313a7b733a313a226b223b693a313b7d",
            Request::SetSession {
                connection: 5,
                session: Bytes::from_static(br#"a:1:{s:1:"k";i:1;}"#),
            },
        ),
        (
            "updateSession($a, ['k' => [2]])",
            "0000003809000000000000000000000000000000050100000000001c613a313a7b733a313a226b223b613a313a7b693a303b693a323b7d7d",
            Request::UpdateSession {
                connection: 5,
                session: Bytes::from_static(br#"a:1:{s:1:"k";a:1:{i:0;i:2;}}"#),
            },
        ),
        (
            "getSession($a)",
            "0000001ccb0000000000000000000000000000000501000000000000",
            Request::GetSessionByClientId { connection: 5 },
        ),
        (
            "the secret frame for $secretKey = 's3'",
            "0000002fca00000000000000000000000000000000010000000000007b227365637265745f6b6579223a227333227d",
            Request::Auth {
                secret_key: Some("s3".into()),
            },
        ),
    ];
    for (call, hex_frame, want) in cases {
        assert_eq!(request(hex_frame).as_ref(), Ok(want), "{call}");
    }
    // bindUid($a, 0): GatewayClient leaves ext_data empty, GatewayWorker ignores it.
    assert_eq!(
        request("0000001c0c0000000000000000000000000000000501000000000000"),
        Err(BadRequest {
            cmd: 12,
            why: Why::EmptyName
        })
    );
}

#[test]
fn names_are_read_as_php_reads_them() {
    let uids = |ext: &str| {
        parse(
            &frame(Cmd::SendToUid, 0, 1, ext.as_bytes(), b"m"),
            &Limits::default(),
        )
        .map(|r| match r {
            Request::SendToUid { uids, .. } => uids,
            other => panic!("{other:?}"),
        })
        .map_err(|e| e.why)
    };
    // Values of an object count as of a list (an associative $uid array).
    assert_eq!(uids(r#"{"a":"u1","b":7}"#), Ok(strings(&["u1", "7"])));
    assert_eq!(uids(r#"[-3, "é"]"#), Ok(strings(&["-3", "é"])));
    assert_eq!(uids("[]"), Ok(vec![]));
    assert_eq!(uids(r#"[1.5]"#), Err(Why::BadName));
    assert_eq!(uids(r#"[true]"#), Err(Why::BadName));
    assert_eq!(uids(r#"[["nested"]]"#), Err(Why::BadName));
    assert_eq!(uids(r#"[18446744073709551615]"#), Err(Why::BadName));
    assert!(matches!(uids(r#""u1""#), Err(Why::BadJson(_))));
    assert!(matches!(uids(r#"["u1"] x"#), Err(Why::BadJson(_))));
    assert!(matches!(uids(""), Err(Why::BadJson(_))));
    // "0" is a uid PHP's empty() refuses for bindUid, not for sends.
    assert_eq!(uids(r#"["0"]"#), Ok(strings(&["0"])));
    let bind = |ext: &[u8]| parse(&frame(Cmd::BindUid, 1, 1, ext, b""), &Limits::default());
    assert_eq!(why(bind(b"0")), Why::EmptyName);
    assert_eq!(why(bind(b"\xff")), Why::NameNotUtf8);
    assert_eq!(
        bind(b"00"),
        Ok(Request::BindUid {
            connection: 1,
            uid: "00".into()
        })
    );
}

#[test]
fn connection_lists_are_keys_or_values_as_gatewayworker_reads_them() {
    let all = |ext: &str| {
        parse(
            &frame(Cmd::SendToAll, 0, 1, ext.as_bytes(), b"m"),
            &Limits::default(),
        )
        .map(|r| match r {
            Request::SendToAll { only, except, .. } => (only, except),
            other => panic!("{other:?}"),
        })
    };
    // exclude: the keys (isset($exclude[$id])); a list's keys are its indexes.
    assert_eq!(
        all(r#"{"exclude":{"7":7,"9":"x"}}"#),
        Ok((None, vec![7, 9]))
    );
    assert_eq!(all(r#"{"exclude":[0,0]}"#), Ok((None, vec![0, 1])));
    // connections: the values; ones that name no connection are skipped.
    assert_eq!(
        all(r#"{"connections":{"a":"5","b":-1,"c":4294967296,"d":"05","e":8}}"#),
        Ok((Some(vec![5, 8]), vec![]))
    );
    // connections wins over exclude; neither means everyone.
    assert_eq!(
        all(r#"{"exclude":{"1":1},"connections":[2]}"#),
        Ok((Some(vec![2]), vec![1]))
    );
    assert_eq!(all(r#"{"other":1}"#), Ok((None, vec![])));
    assert_eq!(all(r#"{"exclude":null}"#), Ok((None, vec![])));
    // Not what GatewayClient sends: refused rather than sent to everyone.
    assert!(matches!(
        all("[5]").map_err(|e| e.why),
        Err(Why::BadJson(_))
    ));
    assert!(matches!(
        all("nope").map_err(|e| e.why),
        Err(Why::BadJson(_))
    ));
}

#[test]
fn select_scopes_follow_phps_truthiness() {
    let scope = |where_json: &str| {
        let ext = format!(r#"{{"fields":["uid"],"where":{where_json}}}"#);
        match parse(
            &frame(Cmd::Select, 0, 1, ext.as_bytes(), b""),
            &Limits::default(),
        ) {
            Ok(Request::Select(s)) => s.scope,
            other => panic!("{other:?}"),
        }
    };
    let nothing = Scope::Matching {
        groups: vec![],
        uids: vec![],
        connections: vec![],
    };
    for all in ["[]", "{}", "null", "false", "0", r#""""#, r#""0""#] {
        assert_eq!(scope(all), Scope::All, "{all}");
    }
    for none in ["[1]", r#"{"foo":[1]}"#, "true", "1", r#""x""#] {
        assert_eq!(scope(none), nothing, "{none}");
    }
    assert_eq!(
        scope(r#"{"uid":["u1",2],"groups":{"x":"g"},"connection_id":[3,"4"]}"#),
        Scope::Matching {
            groups: strings(&["g"]),
            uids: strings(&["u1", "2"]),
            connections: vec![3, 4],
        }
    );
    let fields = r#"{"fields":["session","id"],"where":[]}"#;
    assert_eq!(
        parse(
            &frame(Cmd::Select, 0, 1, fields.as_bytes(), b""),
            &Limits::default()
        ),
        Ok(Request::Select(Select {
            fields: vec![Field::Session, Field::Other("id".into())],
            scope: Scope::All,
        }))
    );
    let no_fields = parse(
        &frame(Cmd::Select, 0, 1, br#"{"where":[]}"#, b""),
        &Limits::default(),
    );
    assert!(matches!(no_fields.map_err(|e| e.why), Err(Why::BadJson(_))));
}

#[test]
fn limits_refuse_long_lists_and_names() {
    let limits = Limits {
        max_list: 2,
        max_uid_bytes: 3,
        max_group_bytes: 4,
        ..Limits::default()
    };
    let send = |ext: &str| parse(&frame(Cmd::SendToUid, 0, 1, ext.as_bytes(), b"m"), &limits);
    assert!(send(r#"["a","b"]"#).is_ok());
    assert_eq!(why(send(r#"["a","b","c"]"#)), Why::TooMany { max: 2 });
    assert_eq!(why(send(r#"["abcd"]"#)), Why::NameTooLong { max: 3 });
    // An integer counts as its decimal text.
    assert_eq!(why(send("[-100]")), Why::NameTooLong { max: 3 });
    let group = |ext: &str| {
        parse(
            &frame(Cmd::SendToGroup, 0, 1, ext.as_bytes(), b"m"),
            &limits,
        )
    };
    assert!(group(r#"{"group":["abcd"]}"#).is_ok());
    assert_eq!(
        why(group(r#"{"group":["abcde"]}"#)),
        Why::NameTooLong { max: 4 }
    );
    assert_eq!(
        why(group(r#"{"group":["a"],"exclude":{"1":1,"2":2,"3":3}}"#)),
        Why::TooMany { max: 2 }
    );
    assert!(matches!(why(group(r#"{"exclude":null}"#)), Why::BadJson(_)));
    let join = parse(&frame(Cmd::JoinGroup, 1, 1, b"abcde", b""), &limits);
    assert_eq!(why(join), Why::NameTooLong { max: 4 });
    // A refused query still has its answer: GatewayWorker's empty one.
    let batch = parse(
        &frame(Cmd::BatchGetClientIdByUid, 0, 1, b"[1,2,3]", b""),
        &limits,
    );
    assert_eq!(batch.unwrap_err().reply(), Some(php::Value::list([])));
}

#[test]
fn bodies_are_strings_or_nothing() {
    let send = |flag: u8, body: &[u8]| {
        parse(
            &frame(Cmd::SendToOne, 1, flag, b"", body),
            &Limits::default(),
        )
    };
    // A serialized string is a message as well as a raw one.
    assert_eq!(
        send(0, br#"s:2:"hi";"#),
        Ok(Request::SendToOne {
            connection: 1,
            message: text("hi")
        })
    );
    // An array or null would kill GatewayWorker's gateway: refused.
    assert_eq!(why(send(0, b"a:1:{i:0;i:1;}")), Why::NotText);
    assert_eq!(why(send(0, b"N;")), Why::NotText);
    assert_eq!(why(send(0, b"i:1;")), Why::NotText);
    assert_eq!(
        why(send(0, b"s:9:\"")),
        Why::BadBody(php::PhpError::Truncated)
    );
    assert_eq!(
        why(send(0, br#"O:8:"stdClass":0:{}"#)),
        Why::BadBody(php::PhpError::Unsupported(0))
    );
}

#[test]
fn credentials_that_cannot_match_are_none() {
    let auth = |flag: u8, body: &[u8]| {
        parse(
            &frame(Cmd::GatewayClientConnect, 0, flag, b"", body),
            &Limits::default(),
        )
    };
    let none = Ok(Request::Auth { secret_key: None });
    assert_eq!(auth(1, b"{}"), none);
    assert_eq!(auth(1, br#"{"secret_key":1}"#), none);
    assert_eq!(auth(1, b"not json"), none);
    assert_eq!(auth(0, b"a:0:{}"), none);
    assert_eq!(
        auth(0, br#"s:17:"{"secret_key":""}";"#),
        Ok(Request::Auth {
            secret_key: Some(String::new())
        })
    );
}

#[test]
fn worker_commands_and_unknown_numbers_are_refused() {
    for cmd in [1u8, 3, 4, 200, 201, 205] {
        let f = frame_of(
            &encode_frame(
                &Header {
                    cmd,
                    ..Header::default()
                },
                b"",
                b"",
            )
            .unwrap(),
        );
        assert_eq!(why(parse(&f, &Limits::default())), Why::WorkerOnly, "{cmd}");
    }
    let f = frame_of(
        &encode_frame(
            &Header {
                cmd: 99,
                ..Header::default()
            },
            b"",
            b"",
        )
        .unwrap(),
    );
    let bad = parse(&f, &Limits::default()).unwrap_err();
    assert_eq!(bad.why, Why::Unknown);
    assert_eq!(bad.reply(), None);
    assert_eq!(bad.to_string(), "command 99: no such command");
}
