//! The test GatewayClient (`tests/php/Gateway.php`, driven by php-cli) against pushwire's
//! GatewayWorker codecs (`src/wire/gateway/`, `src/wire/php.rs`) over real sockets: a
//! Register and two gateways made of the codecs alone record what each call sends where
//! and answer queries with what each test sets, so both sides of the wire are checked
//! against each other before the door that uses them exists (issue 22).
//!
//! What this proves: every call's frames parse into the request it means, at the
//! gateway GatewayClient picks (the Register's list, or the address inside a client_id);
//! exclusions reach only the gateway whose address matches; each connection starts with
//! the secret; answers written by `php::Value` read back in PHP as the values meant, and
//! PHP's own `serialize()` reads back in `php::unserialize`, byte for byte.
//!
//! These tests never skip: a missing `php` is a failure (`scripts/test.sh` installs it).
mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use common::STEP;
use common::gateway_php::GatewayPhp;
use pushwire::wire::gateway::register::{self, Event};
use pushwire::wire::gateway::request::{
    self, BadRequest, Field, Limits, Request, Scope, Select, Why,
};
use pushwire::wire::gateway::{ClientId, Cmd, Message, reply, reply_serialized, take_frame};
use pushwire::wire::php::{self, Key, Value};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Long enough for a frame that is wrongly on its way to arrive.
const QUIET: Duration = Duration::from_millis(300);

/// One frame as a gateway saw it.
#[derive(Debug)]
struct Seen {
    /// Which of the two gateways.
    gateway: usize,
    /// Which TCP connection to it (in accept order).
    connection: u64,
    /// Its place on that connection (0: the first frame).
    index: usize,
    request: Result<Request, BadRequest>,
}

/// The reply bytes each (gateway, command) answers with, set by the test.
type Answers = Arc<Mutex<HashMap<(usize, Cmd), Vec<u8>>>>;

/// A Register and two gateways built from the codecs: they record, and answer queries
/// with what the test set per (gateway, command), else with GatewayWorker's empty answer.
struct Counterpart {
    register: SocketAddr,
    gateways: [SocketAddrV4; 2],
    seen: mpsc::UnboundedReceiver<Seen>,
    lines: mpsc::UnboundedReceiver<Result<Event, register::BadLine>>,
    answers: Answers,
}

impl Counterpart {
    async fn start() -> Counterpart {
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let (lines_tx, lines) = mpsc::unbounded_channel();
        let answers = Arc::new(Mutex::new(HashMap::new()));
        let mut gateways = Vec::new();
        for gateway in 0..2 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
                unreachable!()
            };
            gateways.push(addr);
            let (seen_tx, answers) = (seen_tx.clone(), answers.clone());
            tokio::spawn(async move {
                for connection in 0.. {
                    let (stream, _) = listener.accept().await.unwrap();
                    tokio::spawn(serve_gateway(
                        stream,
                        gateway,
                        connection,
                        seen_tx.clone(),
                        answers.clone(),
                    ));
                }
            });
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let register = listener.local_addr().unwrap();
        let list = [gateways[0], gateways[1]];
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let mut stream = BufReader::new(stream);
                let mut line = String::new();
                if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                    continue;
                }
                let event = register::parse_line(line.trim_end().as_bytes());
                if matches!(event, Ok(Event::WorkerConnect { .. })) {
                    let _ = stream.write_all(&register::addresses_line(&list)).await;
                }
                lines_tx.send(event).unwrap();
            }
        });
        Counterpart {
            register,
            gateways: [gateways[0], gateways[1]],
            seen,
            lines,
            answers,
        }
    }

    fn client_id(&self, gateway: usize, connection: u32) -> String {
        ClientId {
            gateway: self.gateways[gateway],
            connection,
        }
        .to_string()
    }

    /// `gateway` answers `cmd` with `value` from now on.
    fn answer(&self, gateway: usize, cmd: Cmd, value: &Value) {
        self.answer_bytes(gateway, cmd, reply(value).unwrap());
    }

    fn answer_bytes(&self, gateway: usize, cmd: Cmd, bytes: Vec<u8>) {
        self.answers.lock().unwrap().insert((gateway, cmd), bytes);
    }

    /// Exactly `n` frames (then nothing more for a while), sorted by gateway.
    async fn frames(&mut self, n: usize) -> Vec<Seen> {
        let mut got = Vec::new();
        while got.len() < n {
            match timeout(STEP, self.seen.recv()).await {
                Ok(Some(s)) => got.push(s),
                _ => panic!("{} frames of {n} arrived: {got:?}", got.len()),
            }
        }
        if let Ok(Some(extra)) = timeout(QUIET, self.seen.recv()).await {
            panic!("a frame more than the {n} expected: {extra:?} after {got:?}");
        }
        got.sort_by_key(|s| (s.gateway, s.connection, s.index));
        got
    }

    /// The requests of exactly `n` frames, with their gateway.
    async fn requests(&mut self, n: usize) -> Vec<(usize, Request)> {
        self.frames(n)
            .await
            .into_iter()
            .map(|s| match s.request {
                Ok(r) => (s.gateway, r),
                Err(e) => panic!("gateway {} refused a frame: {e}", s.gateway),
            })
            .collect()
    }

    async fn register_line(&mut self) -> Result<Event, register::BadLine> {
        timeout(STEP, self.lines.recv())
            .await
            .expect("no Register line")
            .unwrap()
    }
}

async fn serve_gateway(
    mut stream: TcpStream,
    gateway: usize,
    connection: u64,
    seen: mpsc::UnboundedSender<Seen>,
    answers: Answers,
) {
    let mut buf = BytesMut::new();
    let mut index = 0;
    loop {
        match take_frame(&mut buf, 1 << 20) {
            Ok(Some(frame)) => {
                let parsed = request::parse(&frame, &Limits::default());
                let cmd = Cmd::from_u8(frame.header.cmd);
                let _ = seen.send(Seen {
                    gateway,
                    connection,
                    index,
                    request: parsed,
                });
                index += 1;
                if let Some(cmd) = cmd.filter(|c| c.expects_reply()) {
                    let canned = answers.lock().unwrap().get(&(gateway, cmd)).cloned();
                    let bytes =
                        canned.unwrap_or_else(|| reply(&cmd.empty_reply().unwrap()).unwrap());
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
            }
            Ok(None) => match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            Err(e) => panic!("gateway {gateway}: {e}"),
        }
    }
}

fn text(s: &str) -> Message {
    Message {
        text: bytes::Bytes::copy_from_slice(s.as_bytes()),
        raw: false,
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn assoc(entries: Vec<(Key, Value)>) -> Value {
    Value::Array(entries.into_iter().collect())
}

fn k(s: &str) -> Key {
    Key::from(s)
}

/// What PHP returned, read back exactly (int vs string keys included).
fn php_value(serialized: &[u8]) -> Value {
    php::unserialize(serialized, php::Limits::default())
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(serialized)))
}

#[tokio::test]
async fn sends_go_where_gatewayclient_sends_them() {
    let mut cp = Counterpart::start().await;
    let mut php = GatewayPhp::start(cp.register.to_string()).await;
    let (a, b) = (cp.client_id(0, 5), cp.client_id(1, 9));

    // A client_id's commands go to the gateway inside it, and only there.
    php.call("bindUid", json!([a, "u1"])).await;
    assert_eq!(
        cp.requests(1).await,
        [(
            0,
            Request::BindUid {
                connection: 5,
                uid: "u1".into()
            }
        )]
    );
    php.call("bindUid", json!([a, 7])).await;
    assert_eq!(
        cp.requests(1).await,
        [(
            0,
            Request::BindUid {
                connection: 5,
                uid: "7".into()
            }
        )]
    );
    php.call("joinGroup", json!([b, "g"])).await;
    assert_eq!(
        cp.requests(1).await,
        [(
            1,
            Request::JoinGroup {
                connection: 9,
                group: "g".into()
            }
        )]
    );
    php.call("sendToClient", json!([b, "x"])).await;
    assert_eq!(
        cp.requests(1).await,
        [(
            1,
            Request::SendToOne {
                connection: 9,
                message: text("x")
            }
        )]
    );
    // Fan-outs go to every gateway the Register names.
    php.call("sendToUid", json!([["u1", 2], "m"])).await;
    assert_eq!(
        cp.register_line().await,
        Ok(Event::WorkerConnect {
            secret_key: Some(String::new())
        })
    );
    let to_uids = Request::SendToUid {
        uids: names(&["u1", "2"]),
        message: text("m"),
    };
    assert_eq!(cp.requests(2).await, [(0, to_uids.clone()), (1, to_uids)]);
    php.call("sendToAll", json!(["hi", null, null, true])).await;
    let raw = Request::SendToAll {
        only: None,
        except: vec![],
        message: Message {
            raw: true,
            ..text("hi")
        },
    };
    assert_eq!(cp.requests(2).await, [(0, raw.clone()), (1, raw)]);

    // An exclusion reaches only the gateway whose address is inside the client_id.
    php.call("sendToGroup", json!(["g", "m", [a]])).await;
    assert_eq!(
        cp.requests(2).await,
        [
            (
                0,
                Request::SendToGroup {
                    groups: names(&["g"]),
                    except: vec![5],
                    message: text("m")
                }
            ),
            (
                1,
                Request::SendToGroup {
                    groups: names(&["g"]),
                    except: vec![],
                    message: text("m")
                }
            ),
        ]
    );
    php.call("sendToAll", json!(["hi", null, b])).await;
    assert_eq!(
        cp.requests(2).await,
        [
            (
                0,
                Request::SendToAll {
                    only: None,
                    except: vec![],
                    message: text("hi")
                }
            ),
            (
                1,
                Request::SendToAll {
                    only: None,
                    except: vec![9],
                    message: text("hi")
                }
            ),
        ]
    );
    // A list of client ids goes to their gateways only, less the excluded ones.
    php.call("sendToAll", json!(["hi", [a, b], [b]])).await;
    assert_eq!(
        cp.requests(1).await,
        [(
            0,
            Request::SendToAll {
                only: Some(vec![5]),
                except: vec![],
                message: text("hi")
            }
        )]
    );

    php.call("closeClient", json!([a])).await;
    php.call("closeClient", json!([a, "bye"])).await;
    let kicks = cp.requests(2).await;
    assert!(kicks.contains(&(
        0,
        Request::Kick {
            connection: 5,
            last: None
        }
    )));
    assert!(kicks.contains(&(
        0,
        Request::Kick {
            connection: 5,
            last: Some("bye".into())
        }
    )));
    php.call("destoryClient", json!([b])).await;
    assert_eq!(
        cp.requests(1).await,
        [(1, Request::Destroy { connection: 9 })]
    );
    php.call("ungroup", json!([5])).await;
    let ungroup = Request::Ungroup { group: "5".into() };
    assert_eq!(cp.requests(2).await, [(0, ungroup.clone()), (1, ungroup)]);

    // bindUid($a, 0) sends an empty uid, which GatewayWorker ignores: so does the codec.
    php.call("bindUid", json!([a, 0])).await;
    let refused = cp.frames(1).await;
    assert_eq!(refused[0].request.as_ref().unwrap_err().why, Why::EmptyName);

    // What GatewayClient refuses itself never reaches a gateway.
    let empty = php.call("sendToGroup", json!(["", "m"])).await;
    assert_eq!(empty.value, false);
    assert!(empty.output.contains("group('') empty"), "{}", empty.output);
    php.call("sendToAll", json!(["hi", []])).await;
    assert!(timeout(QUIET, cp.seen.recv()).await.is_err());
}

#[tokio::test]
async fn sessions_travel_as_phps_serialize_bytes() {
    let mut cp = Counterpart::start().await;
    let mut php = GatewayPhp::start(cp.register.to_string()).await;
    let a = cp.client_id(0, 5);

    // PHP's serialize() of a session reads back in php::unserialize, and writes again to
    // the same bytes; "5" became the integer key 5, as PHP keys it.
    php.call(
        "setSession",
        json!([a, {"k": 1, "5": "five", "list": [1, "x", 1.5, true, null], "é\"": {"n": -3}}]),
    )
    .await;
    let got = cp.requests(1).await;
    let [
        (
            0,
            Request::SetSession {
                connection: 5,
                session,
            },
        ),
    ] = &got[..]
    else {
        panic!("not one setSession at gateway 0")
    };
    let value = php_value(session);
    assert_eq!(value.serialize(), &session[..]);
    let Value::Array(fields) = &value else {
        panic!()
    };
    assert_eq!(fields.get(&Key::Int(5)), Some(&Value::str("five")));
    assert_eq!(fields.get(&k("k")), Some(&Value::Int(1)));

    php.call("updateSession", json!([a, {"k": [2]}])).await;
    let got = cp.requests(1).await;
    let [
        (
            0,
            Request::UpdateSession {
                connection: 5,
                session,
            },
        ),
    ] = &got[..]
    else {
        panic!("not one updateSession at gateway 0")
    };
    assert_eq!(&session[..], br#"a:1:{s:1:"k";a:1:{i:0;i:2;}}"#);

    // getSession: the gateway answers with the session's bytes as stored.
    cp.answer_bytes(
        0,
        Cmd::GetSessionByClientId,
        reply_serialized(session).unwrap(),
    );
    let got = php.call("getSession", json!([a])).await;
    assert_eq!(got.value, json!({"k": [2]}));
    assert_eq!(
        cp.requests(1).await,
        [(0, Request::GetSessionByClientId { connection: 5 })]
    );
    // No such connection: GatewayWorker's null.
    cp.answers.lock().unwrap().clear();
    assert_eq!(php.call("getSession", json!([a])).await.value, json!(null));
    cp.requests(1).await;
}

#[tokio::test]
async fn queries_merge_what_each_gateway_answers() {
    let mut cp = Counterpart::start().await;
    let mut php = GatewayPhp::start(cp.register.to_string()).await;
    let (a, b) = (cp.client_id(0, 5), cp.client_id(1, 9));
    let list = |ids: &[i64]| Value::list(ids.iter().map(|&n| Value::Int(n)));

    cp.answer(0, Cmd::IsOnline, &Value::Int(1));
    assert_eq!(php.call("isOnline", json!([a])).await.value, 1);
    assert_eq!(
        cp.requests(1).await,
        [(0, Request::IsOnline { connection: 5 })]
    );

    cp.answer(0, Cmd::GetClientIdByUid, &list(&[5, 6]));
    cp.answer(1, Cmd::GetClientIdByUid, &list(&[9]));
    let ids = php.call("getClientIdByUid", json!(["u1"])).await;
    assert_eq!(ids.value, json!([a, cp.client_id(0, 6), b]));
    let by_uid = Request::GetClientIdByUid { uid: "u1".into() };
    assert_eq!(cp.requests(2).await, [(0, by_uid.clone()), (1, by_uid)]);
    assert_eq!(php.call("isUidOnline", json!(["u1"])).await.value, 1);
    cp.requests(2).await;

    cp.answer(
        0,
        Cmd::BatchGetClientIdByUid,
        &assoc(vec![(k("u1"), list(&[5]))]),
    );
    cp.answer(
        1,
        Cmd::BatchGetClientIdByUid,
        &assoc(vec![(k("u1"), list(&[9])), (k("u2"), list(&[]))]),
    );
    let batch = php
        .call("batchGetClientIdByUid", json!([["u1", "u2"]]))
        .await;
    assert_eq!(batch.value, json!({"u1": [a, b], "u2": []}));
    cp.requests(2).await;
    let online = php.call("isUidsOnline", json!([["u1", "u2"]])).await;
    assert_eq!(online.value, json!({"u1": 1, "u2": 0}));
    cp.requests(2).await;

    cp.answer(0, Cmd::GetClientCountByGroup, &Value::Int(3));
    cp.answer(1, Cmd::GetClientCountByGroup, &Value::Int(4));
    assert_eq!(
        php.call("getClientIdCountByGroup", json!(["g"]))
            .await
            .value,
        7
    );
    let count = Request::GetClientCountByGroup {
        group: Some("g".into()),
    };
    assert_eq!(cp.requests(2).await, [(0, count.clone()), (1, count)]);
    assert_eq!(php.call("getAllClientCount", json!([])).await.value, 7);
    let all = Request::GetClientCountByGroup { group: None };
    assert_eq!(cp.requests(2).await, [(0, all.clone()), (1, all)]);

    cp.answer(
        0,
        Cmd::BatchGetClientCountByGroup,
        &assoc(vec![(k("g"), Value::Int(1)), (Key::Int(7), Value::Int(2))]),
    );
    cp.answer(
        1,
        Cmd::BatchGetClientCountByGroup,
        &assoc(vec![(k("g"), Value::Int(3))]),
    );
    let counts = php
        .call("batchGetClientIdCountByGroup", json!([["g", 7]]))
        .await;
    assert_eq!(counts.value, json!({"g": 4, "7": 2}));
    assert_eq!(
        cp.requests(2).await[0].1,
        Request::BatchGetClientCountByGroup {
            groups: names(&["g", "7"])
        }
    );

    // select: [connection => [field => value]], merged into uids keyed as PHP keys them.
    let row = |uid: Value, groups: Value| assoc(vec![(k("uid"), uid), (k("groups"), groups)]);
    cp.answer(
        0,
        Cmd::Select,
        &assoc(vec![
            (Key::Int(5), row(Value::str("u1"), Value::Null)),
            (Key::Int(6), row(Value::Null, Value::Null)),
        ]),
    );
    cp.answer(
        1,
        Cmd::Select,
        &assoc(vec![(Key::Int(9), row(Value::str("7"), Value::Null))]),
    );
    let uids = php.call("getAllUidList", json!([])).await;
    assert_eq!(
        php_value(&uids.serialized),
        assoc(vec![
            (k("u1"), Value::str("u1")),
            (Key::Int(7), Value::str("7"))
        ])
    );
    let select_all = Request::Select(Select {
        fields: vec![Field::Uid],
        scope: Scope::All,
    });
    assert_eq!(
        cp.requests(2).await,
        [(0, select_all.clone()), (1, select_all)]
    );
    let ids = php.call("getAllClientIdList", json!([])).await;
    let every: serde_json::Map<String, serde_json::Value> =
        [a.clone(), cp.client_id(0, 6), b.clone()]
            .into_iter()
            .map(|id| (id.clone(), json!(id)))
            .collect();
    assert_eq!(ids.value, serde_json::Value::Object(every));
    cp.requests(2).await;

    // getUidByClientId asks only the client_id's gateway, about that connection.
    assert_eq!(php.call("getUidByClientId", json!([b])).await.value, "7");
    assert_eq!(
        cp.requests(1).await,
        [(
            1,
            Request::Select(Select {
                fields: vec![Field::Uid],
                scope: Scope::Matching {
                    groups: vec![],
                    uids: vec![],
                    connections: vec![9]
                }
            })
        )]
    );

    // The library stops reading a gateway's select answer at the first connection
    // without both a uid and a group: u2 is lost behind 6. (The door must list such
    // connections last.)
    let g = || assoc(vec![(k("g"), Value::str("g"))]);
    cp.answer(
        0,
        Cmd::Select,
        &assoc(vec![
            (Key::Int(5), row(Value::str("u1"), g())),
            (Key::Int(6), row(Value::Null, Value::Null)),
            (Key::Int(7), row(Value::str("u2"), g())),
        ]),
    );
    cp.answer(1, Cmd::Select, &Value::list([]));
    let by_group = php.call("getAllGroupUidList", json!([])).await;
    assert_eq!(by_group.value, json!({"g": {"u1": "u1"}}));
    cp.requests(2).await;

    cp.answer(
        0,
        Cmd::GetGroupIdList,
        &Value::list([Value::str("g"), Value::Int(5)]),
    );
    cp.answer(1, Cmd::GetGroupIdList, &Value::list([Value::str("g")]));
    let groups = php.call("getAllGroupIdList", json!([])).await;
    assert_eq!(
        php_value(&groups.serialized),
        assoc(vec![
            (k("g"), Value::str("g")),
            (Key::Int(5), Value::Int(5))
        ])
    );
    cp.requests(2).await;
}

#[tokio::test]
async fn every_connection_starts_with_the_secret() {
    let mut cp = Counterpart::start().await;
    // The first Register address refuses connections; the library goes on to the next.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = closed.local_addr().unwrap().to_string();
    drop(closed);
    let mut php = GatewayPhp::start(json!([refused, cp.register.to_string()])).await;
    php.set("secretKey", "s3").await;
    let a = cp.client_id(0, 5);

    php.call("sendToUid", json!(["u1", "m"])).await;
    assert_eq!(
        cp.register_line().await,
        Ok(Event::WorkerConnect {
            secret_key: Some("s3".into())
        })
    );
    php.call("isOnline", json!([a])).await;
    let frames = cp.frames(6).await;
    // Three connections (two sends, one query), each: the secret, then the command.
    for pair in frames.chunks(2) {
        assert_eq!(pair[0].connection, pair[1].connection);
        assert_eq!(
            (pair[0].index, pair[0].request.as_ref()),
            (
                0,
                Ok(&Request::Auth {
                    secret_key: Some("s3".into())
                })
            )
        );
        assert_eq!(pair[1].index, 1);
    }

    // A secret with a quote: GatewayClient writes it into the Register line unescaped, so
    // the line is not JSON, and the call fails.
    php.set("addressesCacheDisable", true).await;
    php.set("secretKey", "a\"b").await;
    let (_, message) = php.throws("sendToUid", json!(["u1", "m"])).await;
    assert!(
        message.contains("getAllGatewayAddressesFromRegister fail"),
        "{message}"
    );
    assert_eq!(cp.register_line().await, Err(register::BadLine));
}

#[tokio::test]
async fn php_reads_our_serialize_and_we_read_phps() {
    let mut cp = Counterpart::start().await;
    let mut php = GatewayPhp::start(cp.register.to_string()).await;
    let a = cp.client_id(0, 1);
    let float = |text: &str| {
        php::unserialize(format!("d:{text};").as_bytes(), php::Limits::default()).unwrap()
    };
    let values = [
        Value::Null,
        Value::Bool(true),
        Value::Int(i64::MIN),
        Value::Int(i64::MAX),
        Value::str("quote \" semicolon ; brace } é 😀 \n NUL \0 end"),
        Value::Str(vec![0xff, 0x00, b'"']),
        float("0.1"),
        float("-2.0E-7"),
        float("1.0E+25"),
        float("-INF"),
        Value::list([]),
        assoc(vec![
            (Key::Int(-5), Value::str("negative key")),
            (k("05"), Value::str("string key 05")),
            (k("5"), Value::list([Value::list([Value::Bool(false)])])),
            (Key::Str(vec![0xfe]), Value::Null),
        ]),
    ];
    for value in values {
        cp.answer(0, Cmd::GetSessionByClientId, &value);
        let got = php.call("getSession", json!([a])).await;
        cp.requests(1).await;
        // PHP read our bytes as the value meant: its serialize() of it is our bytes.
        assert_eq!(
            String::from_utf8_lossy(&got.serialized),
            String::from_utf8_lossy(&value.serialize())
        );
        assert_eq!(php_value(&got.serialized), value);
    }
}
