//! The real Pusher clients agree with `wire::pusher` (issue 24, phase A: before the doors).
//!
//! - The Node (npm `pusher`) and Python (PyPI `pusher`) server SDKs call every HTTP API
//!   endpoint against a recorder; each request verifies with `Keys::verify_api`, and is
//!   refused with another secret, a changed body, or a clock 601 s away.
//! - Their channel auth (`authorizeChannel`/`authenticate`) and user auth
//!   (`authenticateUser`/`authenticate_user`) verify with `Keys::check_channel_auth` and
//!   `check_signin`; our webhook bodies and signatures pass their webhook validators.
//! - pusher-js and Laravel Echo in headless Chromium, loaded from `node_modules`, talk to
//!   a scripted peer that speaks only through `wire::pusher` (its parser, its frames, its
//!   signature checks and close codes): public, private and presence channels with the
//!   app's auth endpoint served by the test (signing with the Node SDK), client events,
//!   member events, ping/pong, a subscription error, and pusher-js's reactions to close
//!   codes 4200 (reconnect at once) and 4001 (never). Phase B replaces the peer with the
//!   daemon's door and keeps the page.
//!
//! `scripts/pusher-clients.sh` (run by `scripts/test.sh`) installs the clients; without
//! them these tests fail and say so.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::chromium::{PageEvent, SeedPage, Site};
use common::pusher::{
    APP, ApiRecorder, PusherWs, QUIET, Recorded, decode, echo_page, http, node_sdk, now_secs, ok,
    pusher_config, python_sdk, signed, vendor_files,
};
use common::{STEP, TestServer, WsClient, poll_until};
use futures_util::{SinkExt, StreamExt};
use pushwire::wire::pusher::api::{self, ApiAuthError, Request};
use pushwire::wire::pusher::outbound::{self, SubscriptionErrorType, WebhookEvent};
use pushwire::wire::pusher::{
    Access, AuthError, Code, Inbound, Keys, Reconnect, Refusal, SocketId, codes, inbound, sign,
};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request as WsRequest, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

// ---------------------------------------------------------------------------------------
// The server SDKs' HTTP API requests
// ---------------------------------------------------------------------------------------

/// Checks `r` the way the HTTP API door will: it verifies now, and is refused with another
/// secret, a clock 601 s ahead, and (with a body) a body one byte longer.
fn assert_signed(r: &Recorded) -> api::Verified {
    let keys = APP.keys();
    let req = Request {
        method: &r.method,
        path: &r.path,
        query: &r.query,
        body: &r.body,
    };
    let now = SystemTime::now();
    let verified = keys
        .verify_api(&req, now, api::DEFAULT_WINDOW)
        .unwrap_or_else(|e| panic!("{} {}?{}: {e}", r.method, r.path, r.query));
    let other = Keys::new(APP.key, b"another secret");
    assert_eq!(
        other.verify_api(&req, now, api::DEFAULT_WINDOW),
        Err(ApiAuthError::Signature)
    );
    // 601 s either side of the time it was signed at (Python rounds to the nearest
    // second, so "now" may be a second behind its stamp).
    let ts: u64 = verified.param("auth_timestamp").unwrap().parse().unwrap();
    for off in [ts + 601, ts - 601] {
        assert_eq!(
            keys.verify_api(
                &req,
                UNIX_EPOCH + Duration::from_secs(off),
                api::DEFAULT_WINDOW
            ),
            Err(ApiAuthError::Stale {
                skew: 601,
                window: 600
            }),
            "a request signed 601 s away from the clock is refused"
        );
    }
    if !r.body.is_empty() {
        let mut longer = r.body.clone();
        longer.push(b' ');
        let tampered = Request {
            body: &longer,
            ..req
        };
        assert_eq!(
            keys.verify_api(&tampered, now, api::DEFAULT_WINDOW),
            Err(ApiAuthError::BodyMd5)
        );
    }
    verified
}

fn body_json(r: &Recorded) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{} body: {e}", r.path))
}

#[tokio::test]
async fn node_sdk_requests_verify() {
    let mut rec = ApiRecorder::start().await;
    let port = rec.port;
    let call = |op: Value| {
        let mut req = op;
        req["app"] = APP.json();
        req["port"] = port.into();
        req
    };

    // trigger: several channels, the sender excluded, info asked for.
    let answer = node_sdk(&call(json!({
        "op": "trigger", "channels": ["orders", "private-orders.5"],
        "event": "App\\Events\\OrderShipped", "data": {"order": {"id": 5}},
        "params": {"socket_id": "1201.7", "info": "subscription_count"}
    })))
    .await;
    assert_eq!(ok(answer)["status"], 200);
    let r = rec.next().await;
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/apps/1201/events")
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_signed(&r);
    assert_eq!(
        body_json(&r),
        json!({"name": "App\\Events\\OrderShipped", "data": "{\"order\":{\"id\":5}}",
               "channels": ["orders", "private-orders.5"], "socket_id": "1201.7",
               "info": "subscription_count"})
    );

    // batch_events
    ok(node_sdk(&call(json!({"op": "trigger_batch", "batch": [
        {"channel": "orders", "name": "a", "data": "x"},
        {"channel": "presence-room.1", "name": "b", "data": {"k": 1}, "info": "user_count"}
    ]})))
    .await);
    let r = rec.next().await;
    assert_eq!(r.path, "/apps/1201/batch_events");
    assert_signed(&r);
    assert_eq!(
        body_json(&r),
        json!({"batch": [{"channel": "orders", "name": "a", "data": "x"},
                         {"channel": "presence-room.1", "name": "b", "data": "{\"k\":1}", "info": "user_count"}]})
    );

    // The GETs: channels (prefix, info), one channel, its users.
    for (path, params, info) in [
        (
            "/channels",
            json!({"filter_by_prefix": "presence-", "info": "user_count"}),
            Some("user_count"),
        ),
        (
            "/channels/presence-room.1",
            json!({"info": "user_count,subscription_count"}),
            Some("user_count,subscription_count"),
        ),
        ("/channels/presence-room.1/users", json!({}), None),
    ] {
        ok(node_sdk(&call(json!({"op": "get", "path": path, "params": params}))).await);
        let r = rec.next().await;
        assert_eq!(
            (r.method.as_str(), r.path.clone()),
            ("GET", format!("/apps/1201{path}"))
        );
        assert!(r.body.is_empty());
        let v = assert_signed(&r);
        assert_eq!(v.param("info"), info, "{path}");
        assert_eq!(
            v.param("body_md5"),
            None,
            "node signs no body_md5 without a body"
        );
    }
    let r = {
        ok(node_sdk(&call(
            json!({"op": "get", "path": "/channels", "params": {"filter_by_prefix": "presence-"}}),
        ))
        .await);
        rec.next().await
    };
    assert_eq!(
        assert_signed(&r).param("filter_by_prefix"),
        Some("presence-")
    );

    // terminate_connections and sendToUser.
    ok(node_sdk(&call(json!({"op": "terminate", "user_id": "42"}))).await);
    let r = rec.next().await;
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/apps/1201/users/42/terminate_connections")
    );
    assert_signed(&r);
    assert_eq!(body_json(&r), json!({}));
    ok(node_sdk(&call(
        json!({"op": "send_to_user", "user_id": "42", "event": "note", "data": {"n": 1}}),
    ))
    .await);
    let r = rec.next().await;
    assert_eq!(r.path, "/apps/1201/events");
    assert_signed(&r);
    assert_eq!(
        body_json(&r),
        json!({"name": "note", "data": "{\"n\":1}", "channels": ["#server-to-user-42"]})
    );
}

#[tokio::test]
async fn python_sdk_requests_verify() {
    let mut rec = ApiRecorder::start().await;
    let port = rec.port;
    let call = |op: Value| {
        let mut req = op;
        req["app"] = APP.json();
        req["port"] = port.into();
        req
    };

    ok(python_sdk(&call(json!({
        "op": "trigger", "channels": ["orders", "private-orders.5"], "event": "e",
        "data": {"order": {"id": 5}}, "socket_id": "1201.7"
    })))
    .await);
    let r = rec.next().await;
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/apps/1201/events")
    );
    assert_signed(&r);
    let body = body_json(&r);
    assert_eq!(body["channels"], json!(["orders", "private-orders.5"]));
    assert_eq!(body["socket_id"], "1201.7");
    // Python's json.dumps: a space after each separator, inside data too.
    assert_eq!(body["data"], "{\"order\": {\"id\": 5}}");

    ok(python_sdk(&call(json!({"op": "trigger_batch", "batch": [
        {"channel": "orders", "name": "a", "data": "x"},
        {"channel": "cache-prices", "name": "b", "data": {"k": 1}}
    ]})))
    .await);
    let r = rec.next().await;
    assert_eq!(r.path, "/apps/1201/batch_events");
    assert_signed(&r);
    assert_eq!(body_json(&r)["batch"][1]["data"], "{\"k\": 1}");

    for (op, path, info) in [
        (
            json!({"op": "channels_info", "prefix_filter": "presence-", "attributes": ["user_count"]}),
            "/apps/1201/channels",
            Some("user_count"),
        ),
        (
            json!({"op": "channel_info", "channel": "presence-room.1", "attributes": ["user_count", "subscription_count"]}),
            "/apps/1201/channels/presence-room.1",
            Some("user_count,subscription_count"),
        ),
        (
            json!({"op": "users_info", "channel": "presence-room.1"}),
            "/apps/1201/channels/presence-room.1/users",
            None,
        ),
    ] {
        ok(python_sdk(&call(op)).await);
        let r = rec.next().await;
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", path));
        let v = assert_signed(&r);
        assert_eq!(v.param("info"), info, "{path}");
        // Python signs the MD5 of the empty body on GETs too (Node does not).
        assert_eq!(
            v.param("body_md5"),
            Some("d41d8cd98f00b204e9800998ecf8427e")
        );
    }

    // pusher 3.3.4's terminate_user_connections leaves /apps/{id} out of the path (Node
    // and PHP put it in): the door must answer this path too (docs/pusher.md).
    ok(python_sdk(&call(json!({"op": "terminate", "user_id": "42"}))).await);
    let r = rec.next().await;
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/users/42/terminate_connections")
    );
    assert_signed(&r);

    ok(python_sdk(&call(
        json!({"op": "send_to_user", "user_id": "42", "event": "note", "data": {"n": 1}}),
    ))
    .await);
    let r = rec.next().await;
    assert_signed(&r);
    assert_eq!(body_json(&r)["channels"], json!(["#server-to-user-42"]));
}

// ---------------------------------------------------------------------------------------
// Channel auth, user auth, webhooks
// ---------------------------------------------------------------------------------------

/// 32 bytes, base64: the master key of encrypted channels (the SDKs refuse to sign one
/// without it).
const MASTER_KEY: &str = "cHVzaHdpcmUtdGVzdC1lbmNyeXB0aW9uLW1hc3RlciE=";

#[tokio::test]
async fn sdk_channel_and_user_auth_verify() {
    let keys = APP.keys();
    let mut app = APP.json();
    app["master_key_base64"] = MASTER_KEY.into();
    for (sdk, name) in [(0, "node"), (1, "python")] {
        let run = |req: Value| async move {
            if sdk == 0 {
                node_sdk(&req).await
            } else {
                python_sdk(&req).await
            }
        };
        for channel in [
            "private-orders.5",
            "presence-room.1",
            "private-encrypted-secrets",
        ] {
            let presence = channel.starts_with("presence-");
            let mut req = json!({"app": app, "op": "authorize_channel", "socket_id": "1201.7", "channel": channel});
            if presence {
                req["data"] = json!({"user_id": 7, "user_info": {"name": "Ann"}});
            }
            let auth = ok(run(req).await);
            let sig = auth["auth"].as_str().expect("auth");
            let data = auth["channel_data"].as_str();
            assert_eq!(data.is_some(), presence, "{name} {channel}: {auth}");
            assert_eq!(
                keys.check_channel_auth("1201.7", channel, data, Some(sig)),
                Ok(()),
                "{name} {channel}"
            );
            assert_eq!(
                keys.channel_auth("1201.7", channel, data),
                sig,
                "{name} {channel}"
            );
            assert_eq!(
                keys.check_channel_auth("1201.8", channel, data, Some(sig)),
                Err(AuthError::Signature)
            );
            if let Some(data) = data {
                let member = sign::presence_member(data).unwrap();
                assert_eq!(member.user_id, "7");
                assert_eq!(
                    serde_json::from_str::<Value>(&member.user_info).unwrap(),
                    json!({"name": "Ann"})
                );
            }
            if channel.starts_with("private-encrypted-") {
                assert!(auth["shared_secret"].is_string(), "{name}: {auth}");
            }
        }
        let auth = ok(run(json!({
            "app": app, "op": "authenticate_user", "socket_id": "1201.7",
            "user_data": {"id": "ann", "name": "Ann"}
        }))
        .await);
        let user_data = auth["user_data"].as_str().expect("user_data");
        let sig = auth["auth"].as_str().expect("auth");
        assert_eq!(
            keys.check_signin("1201.7", user_data, sig),
            Ok("ann".to_owned()),
            "{name}"
        );
        assert_eq!(
            keys.check_signin("1201.9", user_data, sig),
            Err(AuthError::Signature)
        );
    }
}

#[tokio::test]
async fn our_webhooks_pass_the_sdk_validators() {
    let keys = APP.keys();
    let now_ms = |ago: u64| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            - ago
    };
    let events = [
        WebhookEvent::ChannelOccupied {
            channel: "presence-room.1",
        },
        WebhookEvent::MemberAdded {
            channel: "presence-room.1",
            user_id: "7",
        },
        WebhookEvent::ClientEvent {
            channel: "presence-room.1",
            event: "client-typing",
            data: r#"{"name":"Ann"}"#,
            socket_id: SocketId { high: 1201, low: 7 },
            user_id: Some("7"),
        },
        WebhookEvent::MemberRemoved {
            channel: "presence-room.1",
            user_id: "7",
        },
        WebhookEvent::ChannelVacated {
            channel: "presence-room.1",
        },
        WebhookEvent::CacheMiss {
            channel: "cache-prices",
        },
    ];
    let body = outbound::webhook_body(now_ms(0), &events);
    let sig = keys.webhook_signature(body.as_bytes());
    let tampered = body.replace("\"7\"", "\"8\"");
    assert_ne!(tampered, body);
    let stale = outbound::webhook_body(now_ms(10 * 60 * 1000), &events);
    let stale_sig = keys.webhook_signature(stale.as_bytes());

    let node = |body: &str, sig: &str, key: &str| {
        let req = json!({"app": APP.json(), "op": "webhook_valid", "body": body, "headers": {
            "x-pusher-key": key, "x-pusher-signature": sig, "content-type": "application/json"}});
        async move { ok(node_sdk(&req).await) }
    };
    assert_eq!(node(&body, &sig, APP.key).await, true);
    assert_eq!(node(&tampered, &sig, APP.key).await, false);
    assert_eq!(node(&body, &sig, "another-key").await, false);

    let python = |body: &str, sig: &str| {
        let req = json!({"app": APP.json(), "op": "webhook_valid", "key": APP.key, "signature": sig, "body": body});
        async move { ok(python_sdk(&req).await) }
    };
    assert_eq!(python(&body, &sig).await, true);
    assert_eq!(python(&tampered, &sig).await, false);
    // pusher-http-python refuses a time_ms more than 5 minutes from its clock.
    assert_eq!(python(&stale, &stale_sig).await, false);
}

// ---------------------------------------------------------------------------------------
// pusher-js and Laravel Echo in Chromium, against a peer that speaks wire::pusher
// ---------------------------------------------------------------------------------------

/// One side of a WebSocket the page opened, and the URL it asked for.
struct Peer {
    ws: WebSocketStream<TcpStream>,
    path: String,
    query: String,
}

impl Peer {
    async fn accept(listener: &TcpListener, within: Duration) -> Option<Peer> {
        let (tcp, _) = timeout(within, listener.accept()).await.ok()?.ok()?;
        let mut target = String::new();
        // tungstenite's callback type returns its (large) error response by value.
        #[allow(clippy::result_large_err)]
        let record = |req: &WsRequest, res: Response| {
            target = req.uri().to_string();
            Ok(res)
        };
        let ws = tokio_tungstenite::accept_hdr_async(tcp, record)
            .await
            .expect("websocket handshake");
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        Some(Peer {
            path: path.to_owned(),
            query: query.to_owned(),
            ws,
        })
    }

    async fn send(&mut self, frame: String) {
        self.ws
            .send(Message::text(frame))
            .await
            .expect("send to the page");
    }

    /// The next text frame (parse it with `inbound::parse`).
    async fn next(&mut self) -> String {
        loop {
            let msg = timeout(Duration::from_secs(15), self.ws.next())
                .await
                .expect("the page sent nothing within 15 s")
                .expect("the page closed")
                .expect("websocket read");
            if let Message::Text(t) = msg {
                return t.as_str().to_owned();
            }
        }
    }

    async fn close(&mut self, refusal: Refusal) {
        let n = refusal.close_notice();
        let frame = CloseFrame {
            code: n.code.into(),
            reason: n.reason.into_owned().into(),
        };
        let _ = self.ws.close(Some(frame)).await;
    }
}

/// The app's `/broadcasting/auth`: pusher-js posts `socket_id` and `channel_name`; the
/// answer is the Node SDK's `authorizeChannel` (with user 7's `channel_data` on presence
/// channels), as a Laravel app's would be.
fn auth_endpoint() -> common::chromium::Handler {
    Arc::new(|_target: String, body: String| {
        Box::pin(async move {
            let field = |name: &str| {
                body.split('&')
                    .filter_map(|p| p.split_once('='))
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.replace("%2C", ",").replace("%23", "#"))
                    .unwrap_or_default()
            };
            let (socket_id, channel) = (field("socket_id"), field("channel_name"));
            let mut req = json!({"app": APP.json(), "op": "authorize_channel",
                                 "socket_id": socket_id, "channel": channel});
            if channel.starts_with("presence-") {
                req["data"] = json!({"user_id": 7, "user_info": {"name": "Ann"}});
            }
            (200, ok(node_sdk(&req).await).to_string())
        })
    })
}

fn page_script(ws_port: u16) -> String {
    format!(
        r#"
var echo = new Echo.default({{
  broadcaster: 'reverb', key: '{key}', wsHost: '127.0.0.1', wsPort: {ws_port}, wssPort: {ws_port},
  forceTLS: false, enabledTransports: ['ws'], authEndpoint: '/broadcasting/auth',
}});
var pusher = echo.connector.pusher;
pusher.connection.bind('connected', function () {{ report('/alert', 'connected ' + pusher.connection.socket_id); }});
echo.channel('orders').listen('OrderShipped', function (e) {{ report('/alert', 'public ' + JSON.stringify(e)); }});
echo.private('orders.5').listen('OrderShipped', function (e) {{ report('/alert', 'private ' + JSON.stringify(e)); }});
echo.private('denied').error(function (e) {{ report('/alert', 'denied ' + JSON.stringify(e)); }});
echo.join('room.1')
  .here(function (users) {{
    report('/alert', 'here ' + JSON.stringify(users));
    echo.join('room.1').whisper('typing', {{ name: 'Ann' }});
  }})
  .joining(function (u) {{ report('/alert', 'joining ' + JSON.stringify(u)); }})
  .leaving(function (u) {{ report('/alert', 'leaving ' + JSON.stringify(u)); }})
  .listenForWhisper('typing', function (e) {{ report('/alert', 'whisper ' + JSON.stringify(e)); }});
"#,
        key = APP.key
    )
}

/// The page's next alerts, in any order, until exactly `want` arrived.
async fn expect_alerts(page: &mut SeedPage, want: &[&str]) {
    let mut missing: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    while !missing.is_empty() {
        match page.next_event_within(Duration::from_secs(15)).await {
            PageEvent::Alert(a) => assert!(
                missing.remove(&a),
                "unexpected alert {a:?}; still waiting for {missing:?}"
            ),
            PageEvent::Trouble(t) => panic!("page trouble: {t}; waiting for {missing:?}"),
        }
    }
}

/// Reads the page's four subscriptions (any order; private and presence ones after their
/// auth round trip) and answers each as the door will, checking signatures with
/// `wire::pusher`; then the whisper Echo's `here()` sends once the presence list is in
/// (which may come before the last subscription).
async fn serve_subscriptions(peer: &mut Peer, socket_id: SocketId) {
    let keys = APP.keys();
    let sid = socket_id.to_string();
    let mut seen = BTreeSet::new();
    let mut whispered = false;
    while seen.len() < 4 {
        let text = peer.next().await;
        let s = match inbound::parse(&text) {
            Ok(Inbound::Subscribe(s)) => s,
            Ok(Inbound::Client(c)) if !whispered => {
                check_whisper(&c);
                whispered = true;
                continue;
            }
            other => panic!("expected a subscribe, got {text}: {other:?}"),
        };
        let name = s.channel.name().to_owned();
        let kind = s.channel.kind();
        match name.as_str() {
            "orders" => assert_eq!((kind.access, s.auth.as_deref()), (Access::Public, Some(""))),
            _ => assert_eq!(
                keys.check_channel_auth(&sid, &name, s.channel_data.as_deref(), s.auth.as_deref()),
                Ok(()),
                "{text}"
            ),
        }
        let reply = match kind.access {
            Access::Presence => {
                let me = sign::presence_member(s.channel_data.as_deref().unwrap()).unwrap();
                assert_eq!(me.user_id, "7");
                outbound::presence_succeeded(
                    &name,
                    [
                        (me.user_id.as_str(), me.user_info.as_str()),
                        ("8", r#"{"name":"Bob"}"#),
                    ],
                )
            }
            _ if name == "private-denied" => outbound::subscription_error(
                &name,
                SubscriptionErrorType::AuthError,
                "invalid signature",
            ),
            _ => outbound::subscription_succeeded(&name),
        };
        peer.send(reply).await;
        assert!(seen.insert(name.clone()), "{name} subscribed twice");
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            "orders",
            "presence-room.1",
            "private-denied",
            "private-orders.5"
        ]
    );
    if !whispered {
        let text = peer.next().await;
        let Ok(Inbound::Client(c)) = inbound::parse(&text) else {
            panic!("expected the whisper, got {text}")
        };
        check_whisper(&c);
    }
}

/// Echo's `whisper('typing', {name: 'Ann'})` on the presence channel.
fn check_whisper(c: &pushwire::wire::pusher::inbound::ClientEvent<'_>) {
    assert_eq!(
        (&*c.event, &*c.channel),
        ("client-typing", "presence-room.1")
    );
    assert!(c.kind.allows_client_events());
    assert_eq!(c.data.map(|d| d.get()), Some(r#"{"name":"Ann"}"#));
}

#[tokio::test]
async fn pusher_js_and_echo_speak_our_frames() {
    let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_port = ws.local_addr().unwrap().port();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site = Site {
        files: vendor_files(),
        handler: Some(auth_endpoint()),
    };
    let mut page = SeedPage::launch_site(http, echo_page(&page_script(ws_port)), site, &[]);

    let mut peer = Peer::accept(&ws, Duration::from_secs(20))
        .await
        .unwrap_or_else(|| {
            panic!(
                "pusher-js never connected; chromium log:\n{}",
                page.browser.log_tail()
            )
        });
    assert_eq!(codes::app_key(&peer.path), Some(APP.key), "{}", peer.path);
    assert_eq!(
        codes::check_protocol(Some(&peer.query)),
        Ok(()),
        "{}",
        peer.query
    );
    assert!(
        peer.query.contains("client=js&version=8.6.0"),
        "{}",
        peer.query
    );

    let first = SocketId { high: 1201, low: 1 };
    peer.send(outbound::connection_established(first, 120))
        .await;
    expect_alerts(&mut page, &["connected 1201.1"]).await;
    serve_subscriptions(&mut peer, first).await;

    let order = r#"{"order":{"id":5}}"#;
    peer.send(outbound::event(r"App\Events\OrderShipped", "orders", order))
        .await;
    peer.send(outbound::event(
        r"App\Events\OrderShipped",
        "private-orders.5",
        order,
    ))
    .await;
    let bob: Value = json!({"name": "Bob"});
    let bob_raw = serde_json::value::to_raw_value(&bob).unwrap();
    peer.send(outbound::client_event(
        "client-typing",
        "presence-room.1",
        Some(&bob_raw),
        Some("8"),
    ))
    .await;
    peer.send(outbound::member_added(
        "presence-room.1",
        "9",
        r#"{"name":"Cy"}"#,
    ))
    .await;
    peer.send(outbound::member_removed("presence-room.1", "9"))
        .await;
    expect_alerts(
        &mut page,
        &[
            r#"here [{"name":"Ann"},{"name":"Bob"}]"#,
            r#"denied {"type":"AuthError","error":"invalid signature","status":401}"#,
            r#"public {"order":{"id":5}}"#,
            r#"private {"order":{"id":5}}"#,
            r#"whisper {"name":"Bob"}"#,
            r#"joining {"name":"Cy"}"#,
            r#"leaving {"name":"Cy"}"#,
        ],
    )
    .await;

    // pusher-js answers the server's ping.
    peer.send(outbound::ping()).await;
    let text = peer.next().await;
    assert_eq!(inbound::parse(&text), Ok(Inbound::Pong), "{text}");

    // 4200: pusher-js reconnects at once, gets a new socket_id and subscribes again.
    assert_eq!(Code::Reconnect.reconnect(), Reconnect::Now);
    peer.close(Refusal::of(Code::Reconnect)).await;
    let started = Instant::now();
    let mut peer = Peer::accept(&ws, Duration::from_secs(10))
        .await
        .expect("pusher-js reconnects after close code 4200");
    let second = SocketId { high: 1201, low: 2 };
    peer.send(outbound::connection_established(second, 120))
        .await;
    expect_alerts(&mut page, &["connected 1201.2"]).await;
    serve_subscriptions(&mut peer, second).await;
    expect_alerts(
        &mut page,
        &[
            r#"here [{"name":"Ann"},{"name":"Bob"}]"#,
            r#"denied {"type":"AuthError","error":"invalid signature","status":401}"#,
        ],
    )
    .await;
    eprintln!("reconnected after 4200 in {:?}", started.elapsed());

    // 4001 (no such app): pusher-js does not come back.
    assert_eq!(Code::AppNotFound.reconnect(), Reconnect::Never);
    peer.send(outbound::error(&Refusal::of(Code::AppNotFound)))
        .await;
    peer.close(Refusal::of(Code::AppNotFound)).await;
    assert!(
        Peer::accept(&ws, Duration::from_secs(5)).await.is_none(),
        "pusher-js reconnected after close code 4001"
    );
    assert!(
        !page.reports_within(Duration::from_millis(200)).await,
        "no more reports"
    );
}

// ---------------------------------------------------------------------------------------
// Phase B: the daemon's door (`/app/{key}`) and HTTP API, with raw clients first
// ---------------------------------------------------------------------------------------

fn presence_data(user: &str, name: &str) -> String {
    json!({"user_id": user, "user_info": {"name": name}}).to_string()
}

/// The door's protocol over a raw WebSocket: subscriptions of every kind with their
/// signatures, presence per user (a second tab adds no member), client events only from
/// members and only where enabled, ping/pong, signin and `#server-to-user-`, and every
/// refusal with its code.
#[tokio::test]
async fn the_door_speaks_pusher_to_a_raw_client() {
    let server = TestServer::start_with(pusher_config()).await;
    let addr = server.ws_addr;
    let keys = APP.keys();

    // Refusals before anything: unknown key 4001, protocol missing 4008, wrong 4007.
    for (path, code) in [
        ("/app/nope?protocol=7".to_owned(), 4001),
        (format!("/app/{}", APP.key), 4008),
        (format!("/app/{}?protocol=6", APP.key), 4007),
        (format!("/app/{}?protocol=x", APP.key), 4006),
    ] {
        let mut ws = WsClient::connect(&server.ws_url_path(&path)).await;
        let err = decode(&ws.recv_text().await);
        assert_eq!(
            (err["event"].as_str(), err["data"]["code"].as_u64()),
            (Some("pusher:error"), Some(code)),
            "{path}: {err}"
        );
        assert_eq!(u64::from(ws.expect_close().await.0), code, "{path}");
    }

    let mut a = PusherWs::connect(addr, APP.key).await;
    assert!(SocketId::parse(&a.socket_id).is_some(), "{}", a.socket_id);
    // Public, private (bad then good signature), encrypted, cache (miss).
    let ok = a.subscribe("orders", None, None).await;
    assert_eq!(
        ok["event"], "pusher_internal:subscription_succeeded",
        "{ok}"
    );
    let other = Keys::new(APP.key, b"another secret");
    let bad = a.subscribe("private-orders.5", Some(&other), None).await;
    assert_eq!(bad["event"], "pusher:subscription_error", "{bad}");
    assert_eq!(bad["data"]["status"], 401, "{bad}");
    let none = a.subscribe("private-orders.5", None, None).await;
    assert_eq!(none["data"]["type"], "AuthError", "{none}");
    let ok = a.subscribe("private-orders.5", Some(&keys), None).await;
    assert_eq!(
        ok["event"], "pusher_internal:subscription_succeeded",
        "{ok}"
    );
    let ok = a.subscribe("private-encrypted-x", Some(&keys), None).await;
    assert_eq!(
        ok["event"], "pusher_internal:subscription_succeeded",
        "{ok}"
    );
    a.subscribe("cache-news", None, None).await;
    a.expect("pusher:cache_miss", Some("cache-news")).await;

    // Presence: ann twice (two tabs), bob once.
    let ann = presence_data("7", "Ann");
    let bob = presence_data("8", "Bob");
    let here = a.subscribe("presence-room", Some(&keys), Some(&ann)).await;
    assert_eq!(here["data"]["presence"]["ids"], json!(["7"]), "{here}");
    let mut b = PusherWs::connect(addr, APP.key).await;
    let here = b.subscribe("presence-room", Some(&keys), Some(&bob)).await;
    assert_eq!(here["data"]["presence"]["count"], 2, "{here}");
    let added = a
        .expect("pusher_internal:member_added", Some("presence-room"))
        .await;
    assert_eq!(
        added["data"],
        json!({"user_id": "8", "user_info": {"name": "Bob"}})
    );
    let mut a2 = PusherWs::connect(addr, APP.key).await;
    let here = a2.subscribe("presence-room", Some(&keys), Some(&ann)).await;
    assert_eq!(here["data"]["presence"]["count"], 2, "{here}");
    // A signature for another socket is refused.
    let mut c = PusherWs::connect(addr, APP.key).await;
    let stolen = json!({"event": "pusher:subscribe", "data": {"channel": "presence-room",
        "auth": keys.channel_auth(&a.socket_id, "presence-room", Some(&ann)), "channel_data": ann}});
    c.send(stolen).await;
    c.expect("pusher:subscription_error", Some("presence-room"))
        .await;

    // Client events: relayed to the others with the sender's user_id, never back.
    a.send(json!({"event": "client-typing", "channel": "presence-room", "data": {"x": 1}}))
        .await;
    for peer in [&mut b, &mut a2] {
        let got = peer.expect("client-typing", Some("presence-room")).await;
        assert_eq!(
            (&got["data"], &got["user_id"]),
            (&json!({"x": 1}), &json!("7"))
        );
    }
    // Not on a public channel, not from a non-member.
    a.send(json!({"event": "client-x", "channel": "orders", "data": {}}))
        .await;
    let err = a.expect("pusher:error", None).await;
    assert_eq!(err["data"]["code"], 4301, "{err}");
    c.send(json!({"event": "client-x", "channel": "presence-room", "data": {}}))
        .await;
    let err = c.expect("pusher:error", None).await;
    assert_eq!(err["data"]["code"], 4301, "{err}");
    // At most 5 a second (this app's rate): the sixth is refused, the connection stays.
    for i in 0..6 {
        b.send(json!({"event": "client-n", "channel": "presence-room", "data": i}))
            .await;
    }
    let refused = b.expect("pusher:error", None).await;
    assert_eq!(refused["data"]["code"], 4301, "{refused}");
    for i in 0..5 {
        let got = a.expect("client-n", None).await;
        assert_eq!(got["data"], i);
    }

    // A tab of ann leaves: no member_removed; her last one does.
    a2.ws.close().await;
    b.ws.expect_silence(Duration::from_millis(300)).await;
    a.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "presence-room"}}))
        .await;
    let removed = b
        .expect("pusher_internal:member_removed", Some("presence-room"))
        .await;
    assert_eq!(removed["data"], json!({"user_id": "7"}));

    // ping/pong.
    a.send(json!({"event": "pusher:ping", "data": {}})).await;
    a.expect("pusher:pong", None).await;
    // A frame that is not an event: pusher:error, the connection stays.
    a.ws.send_text("not json").await;
    a.expect("pusher:error", None).await;

    // Signin, then #server-to-user-{id}; someone else's is refused.
    let user_data = json!({"id": "42", "name": "Ann"}).to_string();
    let auth = keys.signin_auth(&a.socket_id, &user_data);
    a.send(json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}))
        .await;
    a.expect("pusher:signin_success", None).await;
    let ok = a.subscribe("#server-to-user-42", None, None).await;
    assert_eq!(
        ok["event"], "pusher_internal:subscription_succeeded",
        "{ok}"
    );
    let no = b.subscribe("#server-to-user-42", None, None).await;
    assert_eq!(no["event"], "pusher:subscription_error", "{no}");
    // A bad signin closes with 4009.
    let forged = keys.signin_auth("1.1", &user_data);
    b.send(json!({"event": "pusher:signin", "data": {"auth": forged, "user_data": user_data}}))
        .await;
    b.expect("pusher:error", None).await;
    assert_eq!(b.ws.expect_close().await.0, 4009);

    // The quiet app: client events off.
    let mut q = PusherWs::connect(addr, QUIET.key).await;
    q.subscribe("private-q", Some(&QUIET.keys()), None).await;
    q.send(json!({"event": "client-x", "channel": "private-q", "data": {}}))
        .await;
    let err = q.expect("pusher:error", None).await;
    assert_eq!(err["data"]["code"], 4301, "{err}");
    assert!(
        err["data"]["message"]
            .as_str()
            .unwrap()
            .contains("not enabled"),
        "{err}"
    );
    // Its connection limit (3): the fourth is refused with 4100 (pusher-js backs off and
    // comes back), and a place freed is taken again.
    let _q2 = PusherWs::connect(addr, QUIET.key).await;
    let _q3 = PusherWs::connect(addr, QUIET.key).await;
    let url = format!("ws://{addr}/app/{}?protocol=7", QUIET.key);
    let mut fourth = WsClient::connect(&url).await;
    let err = decode(&fourth.recv_text().await);
    assert_eq!(err["data"]["code"], 4100, "{err}");
    assert_eq!(fourth.expect_close().await.0, 4100);
    q.ws.close().await;
    poll_until(STEP, "a freed place taken", || {
        let url = url.clone();
        async move {
            let mut ws = WsClient::connect(&url).await;
            let first = decode(&ws.recv_text().await);
            first["event"] == "pusher:connection_established"
        }
    })
    .await;
}

/// A client silent for the activity timeout is pinged, and closed with 4201 if it does
/// not answer; one that answers stays.
#[tokio::test]
async fn a_silent_client_is_pinged_then_closed_with_4201() {
    let config = pushwire::Config {
        pusher_activity_timeout: Duration::from_secs(1),
        pusher_pong_timeout: Duration::from_secs(1),
        ..pusher_config()
    };
    let server = TestServer::start_with(config).await;
    let mut answers = PusherWs::connect(server.ws_addr, APP.key).await;
    let mut silent = PusherWs::connect(server.ws_addr, APP.key).await;
    answers.expect("pusher:ping", None).await;
    answers
        .send(json!({"event": "pusher:pong", "data": {}}))
        .await;
    silent.expect("pusher:ping", None).await;
    let (code, _) = silent.ws.expect_close().await;
    assert_eq!(code, 4201);
    // The one that answered is pinged again, not closed.
    answers.expect("pusher:ping", None).await;
}

/// Two raw Pusher connections on `server`: ann (user 7 on presence-room, private-orders,
/// signed in as 42 and on `#server-to-user-42`) and bob (user 8 on presence-room).
async fn ann_and_bob(server: &TestServer) -> (PusherWs, PusherWs) {
    let keys = APP.keys();
    let mut ann = PusherWs::connect(server.ws_addr, APP.key).await;
    let mut bob = PusherWs::connect(server.ws_addr, APP.key).await;
    ann.subscribe("private-orders", Some(&keys), None).await;
    ann.subscribe(
        "presence-room",
        Some(&keys),
        Some(&presence_data("7", "Ann")),
    )
    .await;
    bob.subscribe(
        "presence-room",
        Some(&keys),
        Some(&presence_data("8", "Bob")),
    )
    .await;
    ann.expect("pusher_internal:member_added", Some("presence-room"))
        .await;
    let user_data = json!({"id": "42"}).to_string();
    let auth = keys.signin_auth(&ann.socket_id, &user_data);
    ann.send(json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}))
        .await;
    ann.expect("pusher:signin_success", None).await;
    ann.subscribe("#server-to-user-42", None, None).await;
    (ann, bob)
}

/// The Node SDK (`pusher` on npm) calls every endpoint of the daemon's HTTP API.
#[tokio::test]
async fn node_sdk_calls_every_endpoint() {
    let server = TestServer::start_http(pusher_config()).await;
    let (mut ann, mut bob) = ann_and_bob(&server).await;
    let port = server.http_addr.unwrap().port();
    let call = |op: Value| {
        let mut req = op;
        req["app"] = APP.json();
        req["port"] = json!(port);
        async move { ok(node_sdk(&req).await) }
    };

    // trigger to two channels with info; ann's socket left out.
    let r = call(
        json!({"op": "trigger", "channels": ["private-orders", "presence-room"],
        "event": "OrderShipped", "data": {"id": 5},
        "params": {"socket_id": ann.socket_id, "info": "subscription_count"}}),
    )
    .await;
    assert_eq!(r["status"], 200, "{r}");
    let info: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        info,
        json!({"channels": {"private-orders": {"subscription_count": 1},
                            "presence-room": {"subscription_count": 2}}})
    );
    let got = bob.expect("OrderShipped", Some("presence-room")).await;
    assert_eq!(got["data"], json!({"id": 5}));
    ann.ws.expect_silence(Duration::from_millis(200)).await;

    // trigger_batch: both reach ann, in order.
    let r = call(json!({"op": "trigger_batch", "batch": [
        {"channel": "private-orders", "name": "a", "data": "1"},
        {"channel": "presence-room", "name": "b", "data": "2"}]}))
    .await;
    assert_eq!(r["status"], 200, "{r}");
    ann.expect("a", Some("private-orders")).await;
    ann.expect("b", Some("presence-room")).await;
    bob.expect("b", Some("presence-room")).await;

    // The channel queries.
    let get = |path: &str, params: Value| json!({"op": "get", "path": path, "params": params});
    let r = call(get(
        "/channels",
        json!({"filter_by_prefix": "presence-", "info": "user_count"}),
    ))
    .await;
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(
        serde_json::from_str::<Value>(r["body"].as_str().unwrap()).unwrap(),
        json!({"channels": {"presence-room": {"user_count": 2}}})
    );
    let r = call(get("/channels", json!({}))).await;
    let all: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    let names: BTreeSet<&str> = all["channels"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["#server-to-user-42", "presence-room", "private-orders"])
    );
    let r = call(get(
        "/channels/presence-room",
        json!({"info": "user_count,subscription_count"}),
    ))
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(r["body"].as_str().unwrap()).unwrap(),
        json!({"occupied": true, "user_count": 2, "subscription_count": 2})
    );
    let r = call(get("/channels/nobody-here", json!({}))).await;
    assert_eq!(r["body"], r#"{"occupied":false}"#);
    let r = call(get("/channels/presence-room/users", json!({}))).await;
    assert_eq!(
        serde_json::from_str::<Value>(r["body"].as_str().unwrap()).unwrap(),
        json!({"users": [{"id": "7"}, {"id": "8"}]})
    );
    // user_count on a channel that is not presence: 400, which the SDK raises.
    let r = node_sdk(
        &json!({"op": "get", "app": APP.json(), "port": port, "path": "/channels/private-orders",
        "params": {"info": "user_count"}}),
    )
    .await;
    assert!(r["ok"] == false || r["result"]["status"] == 400, "{r}");

    // sendToUser reaches #server-to-user-42; terminate closes ann with 4009 and her
    // member leaves.
    let r =
        call(json!({"op": "send_to_user", "user_id": "42", "event": "hi", "data": {"x": 1}})).await;
    assert_eq!(r["status"], 200, "{r}");
    ann.expect("hi", Some("#server-to-user-42")).await;
    let r = call(json!({"op": "terminate", "user_id": "42"})).await;
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(ann.ws.expect_close().await.0, 4009);
    let removed = bob
        .expect("pusher_internal:member_removed", Some("presence-room"))
        .await;
    assert_eq!(removed["data"]["user_id"], "7");
}

/// The Python SDK (`pusher` on PyPI) calls every endpoint, its terminate path without
/// `/apps/{id}` included.
#[tokio::test]
async fn python_sdk_calls_every_endpoint() {
    let server = TestServer::start_http(pusher_config()).await;
    let (mut ann, mut bob) = ann_and_bob(&server).await;
    let port = server.http_addr.unwrap().port();
    let call = |op: Value| {
        let mut req = op;
        req["app"] = APP.json();
        req["port"] = json!(port);
        async move { ok(python_sdk(&req).await) }
    };
    let r = call(
        json!({"op": "trigger", "channels": ["presence-room"], "event": "e",
        "data": {"n": 1}, "socket_id": bob.socket_id}),
    )
    .await;
    assert_eq!(r, json!({}));
    ann.expect("e", Some("presence-room")).await;
    bob.ws.expect_silence(Duration::from_millis(200)).await;
    let r = call(json!({"op": "trigger_batch", "batch": [
        {"channel": "private-orders", "name": "a", "data": "1"}]}))
    .await;
    assert_eq!(r, json!({}));
    ann.expect("a", Some("private-orders")).await;
    let r = call(
        json!({"op": "channels_info", "prefix_filter": "presence-", "attributes": ["user_count"]}),
    )
    .await;
    assert_eq!(r, json!({"channels": {"presence-room": {"user_count": 2}}}));
    let r = call(json!({"op": "channel_info", "channel": "presence-room",
        "attributes": ["user_count", "subscription_count"]}))
    .await;
    assert_eq!(
        r,
        json!({"occupied": true, "user_count": 2, "subscription_count": 2})
    );
    let r = call(json!({"op": "users_info", "channel": "presence-room"})).await;
    assert_eq!(r, json!({"users": [{"id": "7"}, {"id": "8"}]}));
    let r = call(json!({"op": "send_to_user", "user_id": "42", "event": "hi", "data": "x"})).await;
    assert_eq!(r, json!({}));
    ann.expect("hi", Some("#server-to-user-42")).await;
    let r = call(json!({"op": "terminate", "user_id": "42"})).await;
    assert_eq!(r, json!({}));
    assert_eq!(ann.ws.expect_close().await.0, 4009);
    bob.expect("pusher_internal:member_removed", Some("presence-room"))
        .await;
}

/// Every check of the API: the signature, a stale or future `auth_timestamp`, the body's
/// MD5, and the limits, each refused with its status and nothing delivered.
#[tokio::test]
async fn the_api_refuses_what_it_must() {
    let server = TestServer::start_http(pusher_config()).await;
    let http_addr = server.http_addr.unwrap();
    let mut ann = PusherWs::connect(server.ws_addr, APP.key).await;
    ann.subscribe("orders", None, None).await;
    let path = format!("/apps/{}/events", APP.id);
    let body = json!({"name": "e", "channels": ["orders"], "data": "x"}).to_string();
    let post = |target: String, body: String| async move {
        http(http_addr, "POST", &target, body.as_bytes()).await
    };
    let now = now_secs();
    // 601 s either way: refused, saying why; 590 s: accepted (it is the clock alone).
    for ts in [now - 601, now + 601] {
        let (status, text) = post(
            signed(&APP, "POST", &path, &[], body.as_bytes(), ts),
            body.clone(),
        )
        .await;
        assert_eq!(status, 401, "{text}");
        assert!(text.contains("auth_timestamp"), "{text}");
    }
    ann.ws.expect_silence(Duration::from_millis(100)).await;
    let (status, text) = post(
        signed(&APP, "POST", &path, &[], body.as_bytes(), now - 590),
        body.clone(),
    )
    .await;
    assert_eq!((status, text.as_str()), (200, "{}"));
    ann.expect("e", Some("orders")).await;
    // Another app's secret, another body, no body_md5, unknown app, wrong method.
    let target = signed(&QUIET, "POST", &path, &[], body.as_bytes(), now);
    assert_eq!(post(target, body.clone()).await.0, 401);
    let target = signed(&APP, "POST", &path, &[], body.as_bytes(), now);
    assert_eq!(post(target.clone(), body.replace('x', "y")).await.0, 401);
    let target = signed(&APP, "POST", &path, &[], b"", now);
    assert_eq!(post(target, body.clone()).await.0, 401);
    let target = signed(&APP, "POST", "/apps/999/events", &[], body.as_bytes(), now);
    assert_eq!(post(target, body.clone()).await.0, 404);
    let get = signed(&APP, "GET", &path, &[], b"", now);
    assert_eq!(http(http_addr, "GET", &get, b"").await.0, 405);
    // The limits: 101 channels, 10 KiB + 1 of data, a batch over the app's size (2).
    let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let big = json!({"name": "e", "channels": many, "data": "x"}).to_string();
    let (status, text) = post(signed(&APP, "POST", &path, &[], big.as_bytes(), now), big).await;
    assert_eq!(status, 413, "{text}");
    let big = json!({"name": "e", "channels": ["orders"], "data": "x".repeat(10_241)}).to_string();
    let (status, text) = post(signed(&APP, "POST", &path, &[], big.as_bytes(), now), big).await;
    assert_eq!(status, 413, "{text}");
    let batch_path = format!("/apps/{}/batch_events", QUIET.id);
    let batch = json!({"batch": [{"channel": "a", "name": "e", "data": "1"},
        {"channel": "a", "name": "e", "data": "2"}, {"channel": "a", "name": "e", "data": "3"}]})
    .to_string();
    let (status, text) = post(
        signed(&QUIET, "POST", &batch_path, &[], batch.as_bytes(), now),
        batch,
    )
    .await;
    assert_eq!(status, 413, "{text}");
    // A bad channel name and a bad socket_id: 400.
    for bad in [
        json!({"name": "e", "channels": ["no spaces"], "data": "x"}),
        json!({"name": "e", "channels": ["orders"], "data": "x", "socket_id": "1.2.3"}),
        json!({"name": "", "channels": ["orders"], "data": "x"}),
    ] {
        let b = bad.to_string();
        let (status, text) = post(signed(&APP, "POST", &path, &[], b.as_bytes(), now), b).await;
        assert_eq!(status, 400, "{bad}: {text}");
    }
    ann.ws.expect_silence(Duration::from_millis(200)).await;
}

// ---------------------------------------------------------------------------------------
// Phase B: pusher-js and Laravel Echo in Chromium against the daemon
// ---------------------------------------------------------------------------------------

/// The app's `/broadcasting/auth?user=N` as a Laravel app's would answer it, signing with
/// the Node SDK: presence channels as user N (7 is Ann, 8 is Bob); `private-denied` is
/// signed with another secret, so the daemon refuses it.
fn auth_endpoint_for_users() -> common::chromium::Handler {
    Arc::new(|target: String, body: String| {
        Box::pin(async move {
            let field = |text: &str, name: &str| {
                text.split(['&', '?'])
                    .filter_map(|p| p.split_once('='))
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.replace("%2C", ",").replace("%23", "#"))
                    .unwrap_or_default()
            };
            let user = field(&target, "user");
            let (socket_id, channel) = (field(&body, "socket_id"), field(&body, "channel_name"));
            let mut app = APP.json();
            if channel == "private-denied" {
                app["secret"] = json!("not the app's secret");
            }
            let mut req = json!({"app": app, "op": "authorize_channel",
                                 "socket_id": socket_id, "channel": channel});
            if channel.starts_with("presence-") {
                let name = if user == "7" { "Ann" } else { "Bob" };
                req["data"] = json!({"user_id": user.parse::<u64>().unwrap_or(0), "user_info": {"name": name}});
            }
            (200, ok(node_sdk(&req).await).to_string())
        })
    })
}

/// Three Pusher connections in one page (each a "tab" to the protocol): Ann twice, Bob
/// once. Ann's first tab listens on a public and a private channel, is refused a badly
/// signed one, and joins `presence-room.1`; Bob joins; Ann's second tab joins (no
/// `joining` anywhere); Bob whispers to both of Ann's tabs; Ann's second tab disconnects
/// (no `leaving`), then her first leaves (`leaving` Ann, once).
fn daemon_page_script(ws_port: u16) -> String {
    format!(
        r#"
function echoFor(user) {{
  return new Echo.default({{
    broadcaster: 'reverb', key: '{key}', wsHost: '127.0.0.1', wsPort: {ws_port}, wssPort: {ws_port},
    forceTLS: false, enabledTransports: ['ws'], authEndpoint: '/broadcasting/auth?user=' + user,
  }});
}}
function names(users) {{ return users.map(function (u) {{ return u.name; }}).sort().join(','); }}
function say(text) {{ report('/alert', text); }}
var ann1 = echoFor(7), ann2, bob;
ann1.channel('orders').subscribed(function () {{ say('ann1 on orders'); }})
  .listen('OrderShipped', function (e) {{ say('ann1 public ' + e.id); }});
ann1.private('orders.5').subscribed(function () {{ say('ann1 on orders.5'); }})
  .listen('OrderShipped', function (e) {{ say('ann1 private ' + e.id); }});
ann1.private('denied').error(function (e) {{ say('ann1 denied ' + e.type + ' ' + e.status); }});
ann1.join('room.1')
  .here(function (us) {{ say('ann1 here ' + names(us)); startBob(); }})
  .joining(function (u) {{ say('ann1 joining ' + u.name); }})
  .leaving(function (u) {{ say('ann1 leaving ' + u.name); }})
  .listenForWhisper('typing', function (e) {{ say('ann1 whisper ' + e.from); }});
function startBob() {{
  bob = echoFor(8);
  bob.join('room.1')
    .here(function (us) {{ say('bob here ' + names(us)); startAnn2(); }})
    .joining(function (u) {{ say('bob joining ' + u.name); }})
    .leaving(function (u) {{ say('bob leaving ' + u.name); }});
}}
function startAnn2() {{
  ann2 = echoFor(7);
  ann2.join('room.1')
    .here(function (us) {{ say('ann2 here ' + names(us)); bob.join('room.1').whisper('typing', {{ from: 'Bob' }}); }})
    .joining(function (u) {{ say('ann2 joining ' + u.name); }})
    .listenForWhisper('typing', function (e) {{
      say('ann2 whisper ' + e.from);
      ann2.disconnect();
      setTimeout(function () {{ ann1.leave('room.1'); }}, 500);
    }});
}}
"#,
        key = APP.key
    )
}

/// pusher-js 8.6.0 and Laravel Echo 2.5.0 in headless Chromium against the daemon: public,
/// private (with an auth endpoint the test serves) and presence channels with two users
/// and two tabs of one user, client events, a refused subscription, and events the Node
/// SDK publishes through the HTTP API.
#[tokio::test]
async fn echo_in_chromium_against_the_daemon() {
    let server = TestServer::start_http(pusher_config()).await;
    let http_port = server.http_addr.unwrap().port();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site = Site {
        files: vendor_files(),
        handler: Some(auth_endpoint_for_users()),
    };
    let script = daemon_page_script(server.ws_addr.port());
    let mut page = SeedPage::launch_site(listener, echo_page(&script), site, &[]);
    expect_alerts(
        &mut page,
        &[
            "ann1 on orders",
            "ann1 on orders.5",
            "ann1 denied AuthError 401",
            "ann1 here Ann",
            "bob here Ann,Bob",
            "ann1 joining Bob",
            "ann2 here Ann,Bob",
            "ann1 whisper Bob",
            "ann2 whisper Bob",
            "bob leaving Ann",
        ],
    )
    .await;
    // Events from the backend, through the HTTP API.
    let trigger = |channel: &str| {
        json!({"op": "trigger", "app": APP.json(), "port": http_port, "channels": [channel],
               "event": r"App\Events\OrderShipped", "data": {"id": 5}})
    };
    for channel in ["orders", "private-orders.5"] {
        let r = ok(node_sdk(&trigger(channel)).await);
        assert_eq!(r["status"], 200, "{r}");
    }
    expect_alerts(&mut page, &["ann1 public 5", "ann1 private 5"]).await;
    assert!(
        !page.reports_within(Duration::from_millis(500)).await,
        "no more reports (a second joining or leaving for Ann's second tab)"
    );
}

/// SIGHUP reads `--pusher-apps` again, whole: an app added serves new connections, a
/// rotated secret signs from then on, and a broken file changes nothing. The daemon is
/// the real binary; a file with no apps, or one refused at start, stops it with the reason.
#[tokio::test]
async fn a_reload_swaps_the_apps_and_a_bad_file_changes_nothing() {
    let dir = common::Scratch::new("pusher-reload");
    let one = json!({"apps": [{"id": APP.id, "key": APP.key, "secret": APP.secret}]}).to_string();
    let path = dir.file("apps.json", &one);
    let (status, log) = common::Launch::new()
        .args(&["--pusher-apps", &dir.file("bad.json", r#"{"apps":[]}"#)])
        .run_to_exit(Duration::from_secs(10))
        .await;
    assert!(!status.success() && log.contains("no apps"), "{log}");
    let daemon = common::Launch::new()
        .args(&["--pusher-apps", &path])
        .start()
        .await;
    let outcomes = |log: &str| {
        log.lines()
            .filter(|l| l.contains("Pusher apps reload"))
            .count()
    };

    let quiet_url = format!("ws://{}/app/{}?protocol=7", daemon.ws_addr, QUIET.key);
    let mut refused = WsClient::connect(&quiet_url).await;
    refused.recv_text().await;
    assert_eq!(refused.expect_close().await.0, 4001);
    let mut before = PusherWs::connect(daemon.ws_addr, APP.key).await;

    // Add QUIET, rotate APP's secret.
    let rotated = "pushwire-rotated-secret";
    std::fs::write(
        &path,
        json!({"apps": [
        {"id": APP.id, "key": APP.key, "secret": rotated},
        {"id": QUIET.id, "key": QUIET.key, "secret": QUIET.secret}]})
        .to_string(),
    )
    .unwrap();
    daemon.signal("HUP").await;
    let line = daemon.wait_line("Pusher apps reload", STEP).await;
    assert!(
        line.contains("app 1201 secret rotated") && line.contains("app 1202 added"),
        "{line}"
    );
    assert!(!line.contains(rotated), "a secret in the log: {line}");
    PusherWs::connect(daemon.ws_addr, QUIET.key).await;
    let mut after = PusherWs::connect(daemon.ws_addr, APP.key).await;
    let new_keys = Keys::new(APP.key, rotated.as_bytes());
    let old = after.subscribe("private-x", Some(&APP.keys()), None).await;
    assert_eq!(old["event"], "pusher:subscription_error", "{old}");
    let new = after.subscribe("private-x", Some(&new_keys), None).await;
    assert_eq!(
        new["event"], "pusher_internal:subscription_succeeded",
        "{new}"
    );
    // A connection from before stays.
    before
        .send(json!({"event": "pusher:ping", "data": {}}))
        .await;
    before.expect("pusher:pong", None).await;

    // A broken file: refused, the apps in use stay.
    std::fs::write(
        &path,
        r#"{"apps": [{"id": "1201", "key": "k", "secret": "short"}]}"#,
    )
    .unwrap();
    daemon.signal("HUP").await;
    poll_until(STEP, "the second reload outcome", || {
        let n = outcomes(&daemon.log());
        async move { n >= 2 }
    })
    .await;
    assert!(
        daemon.log().contains("Pusher apps reload failed"),
        "{}",
        daemon.log()
    );
    PusherWs::connect(daemon.ws_addr, QUIET.key).await;
}

// ---------------------------------------------------------------------------------------
// Phase B: cluster mode on Redis
// ---------------------------------------------------------------------------------------

/// An in-process node on `redis_url` serving the test apps, once its Redis link is up.
async fn pusher_node(redis_url: &str) -> TestServer {
    pusher_node_with(redis_url, pusher_config()).await
}

/// [`pusher_node`] with `config`'s apps.
async fn pusher_node_with(redis_url: &str, config: pushwire::Config) -> TestServer {
    let server = TestServer::start_http(pushwire::Config {
        redis: Some(redis_url.to_owned()),
        cluster_timeout: Duration::from_millis(2000),
        ..config
    })
    .await;
    let http_addr = server.http_addr.unwrap();
    poll_until(STEP, "the node ready (its Redis link up)", || async move {
        common::redis::readyz(http_addr)
            .await
            .starts_with("HTTP/1.1 200")
    })
    .await;
    server
}

/// A signed GET of the API on `node`: the JSON answer.
async fn api_get(node: &TestServer, path: &str, extra: &[(&str, &str)]) -> Value {
    let path = format!("/apps/{}{path}", APP.id);
    let target = signed(&APP, "GET", &path, extra, b"", now_secs());
    let (status, body) = http(node.http_addr.unwrap(), "GET", &target, b"").await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// A signed POST of an event to the API on `node`.
async fn api_event(node: &TestServer, event: Value) {
    let path = format!("/apps/{}/events", APP.id);
    let body = event.to_string();
    let target = signed(&APP, "POST", &path, &[], body.as_bytes(), now_secs());
    let (status, text) = http(node.http_addr.unwrap(), "POST", &target, body.as_bytes()).await;
    assert_eq!(status, 200, "{text}");
}

/// Three nodes on one Redis: events published on any node reach every subscriber;
/// presence is per user across the nodes (Ann's tabs on two nodes are one member, Bob on
/// a third sees her join once and leave once, when her last tab goes); every node's API
/// answers the same counts; client events and cache channels cross nodes; terminating a
/// user closes its connection wherever it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_channels_and_exact_presence() {
    let redis = common::redis::Redis::start().await;
    three_nodes(&redis.url()).await;
}

/// The same on a three-master Redis Cluster: each channel's keys in one slot, events
/// heard by every node whichever master its subscriber is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_channels_and_exact_presence_on_a_redis_cluster() {
    let cluster = common::redis::RedisCluster::start().await;
    three_nodes(&cluster.url()).await;
}

async fn three_nodes(url: &str) {
    let url = url.to_owned();
    let (a, b, c) = (
        pusher_node(&url).await,
        pusher_node(&url).await,
        pusher_node(&url).await,
    );
    let keys = APP.keys();
    let ann_data = presence_data("7", "Ann");
    let mut ann = PusherWs::connect(a.ws_addr, APP.key).await;
    let here = ann
        .subscribe("presence-room", Some(&keys), Some(&ann_data))
        .await;
    assert_eq!(here["data"]["presence"]["ids"], json!(["7"]), "{here}");
    let mut bob = PusherWs::connect(c.ws_addr, APP.key).await;
    let here = bob
        .subscribe(
            "presence-room",
            Some(&keys),
            Some(&presence_data("8", "Bob")),
        )
        .await;
    assert_eq!(here["data"]["presence"]["count"], 2, "{here}");
    let added = ann
        .expect("pusher_internal:member_added", Some("presence-room"))
        .await;
    assert_eq!(added["data"]["user_id"], "8");
    let mut ann2 = PusherWs::connect(b.ws_addr, APP.key).await;
    let here = ann2
        .subscribe("presence-room", Some(&keys), Some(&ann_data))
        .await;
    let mut ids: Vec<String> =
        serde_json::from_value(here["data"]["presence"]["ids"].clone()).unwrap();
    ids.sort();
    assert_eq!(ids, ["7", "8"], "{here}");
    bob.ws.expect_silence(Duration::from_millis(300)).await;
    ann.ws.expect_silence(Duration::from_millis(100)).await;

    // The same counts from every node's API.
    for node in [&a, &b, &c] {
        let info = api_get(
            node,
            "/channels/presence-room",
            &[("info", "user_count,subscription_count")],
        )
        .await;
        assert_eq!(
            info,
            json!({"occupied": true, "user_count": 2, "subscription_count": 3})
        );
        let users = api_get(node, "/channels/presence-room/users", &[]).await;
        assert_eq!(users, json!({"users": [{"id": "7"}, {"id": "8"}]}));
        let list = api_get(
            node,
            "/channels",
            &[("filter_by_prefix", "presence-"), ("info", "user_count")],
        )
        .await;
        assert_eq!(
            list,
            json!({"channels": {"presence-room": {"user_count": 2}}})
        );
    }

    // An event on node b reaches all three nodes' subscribers, but the one left out.
    api_event(&b, json!({"name": "e", "channels": ["presence-room"], "data": "1", "socket_id": ann.socket_id})).await;
    // ann2 may have joined while Bob's member_added was on its way to node b (it is
    // published after the script that adds him, which ann2's list already saw): the
    // member version keeps it from being told again.
    let got = ann2.next().await;
    assert_eq!(got["event"], "e", "{got}");
    assert_eq!(got["channel"], "presence-room", "{got}");
    bob.expect("e", Some("presence-room")).await;
    ann.ws.expect_silence(Duration::from_millis(300)).await;
    // A client event from c reaches a and b with Bob's user_id.
    bob.send(json!({"event": "client-hi", "channel": "presence-room", "data": {"v": 1}}))
        .await;
    for tab in [&mut ann, &mut ann2] {
        let got = tab.expect("client-hi", Some("presence-room")).await;
        assert_eq!(got["user_id"], "8", "{got}");
    }

    // A cache channel's last event, published on a with nobody there, is replayed on c.
    api_event(
        &a,
        json!({"name": "last", "channel": "cache-news", "data": "v1"}),
    )
    .await;
    let mut late = PusherWs::connect(c.ws_addr, APP.key).await;
    late.subscribe("cache-news", None, None).await;
    let got = late.expect("last", Some("cache-news")).await;
    assert_eq!(got["data"], "v1");

    // Ann's tab on a goes: she is still a member (her tab on b). Then the one on b goes.
    ann.ws.close().await;
    bob.ws.expect_silence(Duration::from_millis(500)).await;
    let users = api_get(&c, "/channels/presence-room/users", &[]).await;
    assert_eq!(users, json!({"users": [{"id": "7"}, {"id": "8"}]}));
    ann2.ws.close().await;
    let removed = bob
        .expect("pusher_internal:member_removed", Some("presence-room"))
        .await;
    assert_eq!(removed["data"]["user_id"], "7");
    let users = api_get(&a, "/channels/presence-room/users", &[]).await;
    assert_eq!(users, json!({"users": [{"id": "8"}]}));

    // Terminate on a closes a user signed in on b.
    let mut signed_in = PusherWs::connect(b.ws_addr, APP.key).await;
    let user_data = json!({"id": "99"}).to_string();
    let auth = keys.signin_auth(&signed_in.socket_id, &user_data);
    signed_in
        .send(json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}))
        .await;
    signed_in.expect("pusher:signin_success", None).await;
    let path = format!("/apps/{}/users/99/terminate_connections", APP.id);
    let target = signed(&APP, "POST", &path, &[], b"", now_secs());
    assert_eq!(
        http(a.http_addr.unwrap(), "POST", &target, b"").await.0,
        200
    );
    assert_eq!(signed_in.ws.expect_close().await.0, 4009);
}

/// Two real daemons on one Redis; the one holding Ann is killed with SIGKILL. Bob, on
/// the other, gets `member_removed` for her within the documented bound (the alive key's
/// 3 s, plus a beat, plus a sweep: under 6 s), and the API no longer lists her. The app's
/// webhook receiver is told by the survivor, once: Ann's `member_removed`, and
/// `channel_vacated` for the channel only she held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_loses_its_members_within_the_bound() {
    let redis = common::redis::Redis::start().await;
    let url = redis.url();
    let dir = common::Scratch::new("pusher-kill9");
    let receiver = common::webhook::Receiver::start(|_| common::webhook::Answer::Status(200)).await;
    let hooks = [(receiver.url("/pusher"), &ALL_HOOK_KINDS[..])];
    let apps = dir.file("apps.json", &apps_with_hooks(&hooks));
    let args = ["--redis", url.as_str(), "--pusher-apps", apps.as_str()];
    let a = common::Launch::new()
        .args(&args)
        .http_listen("127.0.0.1:0")
        .start()
        .await;
    let mut b = common::Launch::new()
        .args(&args)
        .http_listen("127.0.0.1:0")
        .start()
        .await;
    let keys = APP.keys();
    for node in [&a, &b] {
        let http_addr = node.http_addr.unwrap();
        poll_until(Duration::from_secs(10), "the node linked", || async move {
            common::redis::readyz(http_addr)
                .await
                .starts_with("HTTP/1.1 200")
        })
        .await;
    }
    let mut bob = PusherWs::connect(a.ws_addr, APP.key).await;
    let mut ann = PusherWs::connect(b.ws_addr, APP.key).await;
    bob.subscribe(
        "presence-room",
        Some(&keys),
        Some(&presence_data("8", "Bob")),
    )
    .await;
    let here = ann
        .subscribe(
            "presence-room",
            Some(&keys),
            Some(&presence_data("7", "Ann")),
        )
        .await;
    assert_eq!(here["data"]["presence"]["count"], 2, "{here}");
    bob.expect("pusher_internal:member_added", Some("presence-room"))
        .await;
    ann.subscribe("news", None, None).await;
    // Everything up to now was told (by both nodes) before the kill.
    let before = pusher_wait(&receiver, 4).await;
    assert_eq!(
        hook_lines(&before),
        [
            "channel_occupied news",
            "channel_occupied presence-room",
            "member_added presence-room 7",
            "member_added presence-room 8"
        ]
    );

    b.kill9();
    let killed = Instant::now();
    let removed = timeout(Duration::from_secs(10), async {
        loop {
            match timeout(Duration::from_millis(200), bob.ws.next_event()).await {
                Ok(common::WsEvent::Text(t)) => return decode(&t),
                Ok(other) => panic!("{other:?}"),
                Err(_) => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no member_removed within 10 s; log of a:\n{}", a.log()));
    let took = killed.elapsed();
    assert_eq!(
        removed["event"], "pusher_internal:member_removed",
        "{removed}"
    );
    assert_eq!(removed["data"]["user_id"], "7");
    eprintln!("member_removed {took:?} after SIGKILL");
    assert!(took < Duration::from_secs(6), "took {took:?}");
    let path = format!("/apps/{}/channels/presence-room/users", APP.id);
    let target = signed(&APP, "GET", &path, &[], b"", now_secs());
    let (status, body) = http(a.http_addr.unwrap(), "GET", &target, b"").await;
    assert_eq!((status, body.as_str()), (200, r#"{"users":[{"id":"8"}]}"#));
    let after = pusher_wait(&receiver, 6).await;
    assert_eq!(
        hook_lines(&after[4..]),
        ["channel_vacated news", "member_removed presence-room 7"],
        "{after:#?}"
    );
}

/// A node that stops (SIGTERM's path) takes its members with it: Bob, on the other node,
/// gets `member_removed` for Ann within a few seconds, whether her connection's own
/// unsubscribe reached Redis or the node's alive key went with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_takes_its_members_with_it() {
    let redis = common::redis::Redis::start().await;
    let (a, b) = (
        pusher_node(&redis.url()).await,
        pusher_node(&redis.url()).await,
    );
    let keys = APP.keys();
    let mut bob = PusherWs::connect(a.ws_addr, APP.key).await;
    bob.subscribe(
        "presence-room",
        Some(&keys),
        Some(&presence_data("8", "Bob")),
    )
    .await;
    let mut ann = PusherWs::connect(b.ws_addr, APP.key).await;
    ann.subscribe(
        "presence-room",
        Some(&keys),
        Some(&presence_data("7", "Ann")),
    )
    .await;
    bob.expect("pusher_internal:member_added", Some("presence-room"))
        .await;
    let stopping = tokio::spawn(b.shutdown());
    // Ann's page is told to reconnect at once (4200).
    assert_eq!(ann.ws.expect_close().await.0, 4200);
    let removed = bob
        .expect("pusher_internal:member_removed", Some("presence-room"))
        .await;
    assert_eq!(removed["data"]["user_id"], "7");
    stopping.await.unwrap().unwrap();
    let users = api_get(&a, "/channels/presence-room/users", &[]).await;
    assert_eq!(users, json!({"users": [{"id": "8"}]}));
}

// ---------------------------------------------------------------------------------------
// Webhooks, in Pusher's format, from the daemon
// ---------------------------------------------------------------------------------------

/// Every kind a receiver may name.
const ALL_HOOK_KINDS: [&str; 6] = [
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "cache_miss",
    "client_event",
];

/// The test apps, with [`APP`]'s webhooks going to `hooks` (`(url, event_types)`).
fn apps_with_hooks(hooks: &[(String, &[&str])]) -> String {
    let mut apps: Value = serde_json::from_str(&common::pusher::apps_json()).unwrap();
    apps["apps"][0]["webhooks"] = hooks
        .iter()
        .map(|(url, kinds)| json!({"url": url, "event_types": kinds}))
        .collect();
    apps.to_string()
}

fn config_with_hooks(hooks: &[(String, &[&str])]) -> pushwire::Config {
    pushwire::Config {
        pusher_apps: Some(Arc::new(
            pushwire::channels::Apps::parse(&apps_with_hooks(hooks)).unwrap(),
        )),
        ..pusher_config()
    }
}

/// The events of every delivery `receiver` took, in order, each delivery checked as
/// signed for [`APP`] (`X-Pusher-Key`, `X-Pusher-Signature` over the body) and shaped
/// `{"time_ms":…,"events":[…]}` with a `time_ms` within a minute of now.
fn pusher_taken(receiver: &common::webhook::Receiver) -> Vec<Value> {
    let keys = APP.keys();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut out = Vec::new();
    for g in receiver.got() {
        assert_eq!(g.pusher_key, APP.key);
        assert_eq!(g.pusher_signature, keys.webhook_signature(&g.body));
        assert_eq!(g.content_type, "application/json");
        let body: Value = serde_json::from_slice(&g.body).unwrap();
        let time_ms = body["time_ms"].as_u64().unwrap();
        assert!(time_ms.abs_diff(now_ms) < 60_000, "{body}");
        if (200..300).contains(&g.answered) {
            out.extend(body["events"].as_array().unwrap().iter().cloned());
        }
    }
    out
}

/// Waits until `receiver` took `n` events, then a moment more to see none comes after.
async fn pusher_wait(receiver: &common::webhook::Receiver, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let taken = pusher_taken(receiver);
        if taken.len() >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} webhook events within 15 s: {taken:#?}",
            taken.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pusher_taken(receiver)
}

/// `name channel [user_id]` of each event, sorted: what happened, whatever the order.
fn hook_lines(events: &[Value]) -> Vec<String> {
    let mut lines: Vec<String> = events.iter().map(hook_line).collect();
    lines.sort();
    lines
}

fn hook_line(e: &Value) -> String {
    let mut line = format!(
        "{} {}",
        e["name"].as_str().unwrap(),
        e["channel"].as_str().unwrap()
    );
    if let Some(u) = e["user_id"].as_str() {
        line.push(' ');
        line.push_str(u);
    }
    line
}

/// The names of `channel`'s events, in the order they came.
fn hook_names(events: &[Value], channel: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["channel"] == channel)
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

/// One node: what its Pusher connections do reaches the app's receivers as Pusher's
/// webhooks, once each and in order per channel (a second tab of a user is no member
/// event), filtered per receiver by `event_types`; every delivery is really signed as
/// the Node SDK's `webhook().isValid()` and the Python SDK's `validate_webhook` check.
#[tokio::test]
async fn webhooks_reach_the_app_in_pushers_format_and_signature() {
    use common::webhook::{Answer, Receiver};
    let all = Receiver::start(|_| Answer::Status(200)).await;
    let vacated = Receiver::start(|_| Answer::Status(200)).await;
    let server = TestServer::start_with(config_with_hooks(&[
        (all.url("/pusher/webhook"), &ALL_HOOK_KINDS),
        (vacated.url("/vacated"), &["channel_vacated"]),
    ]))
    .await;
    let keys = APP.keys();
    let mut ann = PusherWs::connect(server.ws_addr, APP.key).await;
    let mut ann_tab = PusherWs::connect(server.ws_addr, APP.key).await;
    let mut bob = PusherWs::connect(server.ws_addr, APP.key).await;
    ann.subscribe(
        "presence-room",
        Some(&keys),
        Some(&presence_data("7", "Ann")),
    )
    .await;
    ann_tab
        .subscribe(
            "presence-room",
            Some(&keys),
            Some(&presence_data("7", "Ann")),
        )
        .await;
    bob.subscribe(
        "presence-room",
        Some(&keys),
        Some(&presence_data("8", "Bob")),
    )
    .await;
    ann.expect("pusher_internal:member_added", Some("presence-room"))
        .await;
    ann.send(
        json!({"event": "client-typing", "channel": "presence-room", "data": {"name": "Ann"}}),
    )
    .await;
    bob.expect("client-typing", Some("presence-room")).await;
    bob.subscribe("cache-prices", None, None).await;
    bob.expect("pusher:cache_miss", Some("cache-prices")).await;
    let (ann_id, bob_id) = (ann.socket_id.clone(), bob.socket_id.clone());
    ann.ws.close().await;
    ann_tab.ws.close().await;
    bob.ws.close().await;

    let events = pusher_wait(&all, 10).await;
    assert_eq!(
        hook_lines(&events),
        [
            "cache_miss cache-prices",
            "channel_occupied cache-prices",
            "channel_occupied presence-room",
            "channel_vacated cache-prices",
            "channel_vacated presence-room",
            "client_event presence-room 7",
            "member_added presence-room 7",
            "member_added presence-room 8",
            "member_removed presence-room 7",
            "member_removed presence-room 8",
        ],
        "once each (Ann's second tab is no member event): {events:#?}"
    );
    assert_eq!(
        hook_names(&events, "presence-room"),
        [
            "channel_occupied",
            "member_added",
            "member_added",
            "client_event",
            "member_removed",
            "member_removed",
            "channel_vacated"
        ]
    );
    assert_eq!(
        hook_names(&events, "cache-prices"),
        ["channel_occupied", "cache_miss", "channel_vacated"]
    );
    let typing = events.iter().find(|e| e["name"] == "client_event").unwrap();
    assert_eq!(
        typing,
        &json!({"name": "client_event", "channel": "presence-room", "event": "client-typing",
                "data": r#"{"name":"Ann"}"#, "socket_id": ann_id, "user_id": "7"})
    );
    let added: Vec<&Value> = events
        .iter()
        .filter(|e| e["name"] == "member_added")
        .collect();
    assert_eq!(
        added[0],
        &json!({"name": "member_added", "channel": "presence-room", "user_id": "7"})
    );
    let _ = bob_id;
    // The filtered receiver got its kind only.
    let only = pusher_wait(&vacated, 2).await;
    assert_eq!(
        hook_lines(&only),
        [
            "channel_vacated cache-prices",
            "channel_vacated presence-room"
        ]
    );
    // Each delivery, as sent, passes both SDKs' validators.
    for g in all.got().iter().chain(vacated.got().iter()) {
        let body = String::from_utf8(g.body.to_vec()).unwrap();
        let req = json!({"app": APP.json(), "op": "webhook_valid", "body": body, "headers": {
            "x-pusher-key": g.pusher_key, "x-pusher-signature": g.pusher_signature,
            "content-type": g.content_type}});
        assert_eq!(ok(node_sdk(&req).await), true, "node: {body}");
        let req = json!({"app": APP.json(), "op": "webhook_valid", "key": g.pusher_key,
            "signature": g.pusher_signature, "body": body});
        assert_eq!(ok(python_sdk(&req).await), true, "python: {body}");
    }
}

/// Two nodes on one Redis, both sending to the same receiver: what the cluster decides
/// once is told once, whichever node decides it. Ann's tabs on both nodes are one member
/// (added once, removed once, by the node her last tab left); a channel held on both
/// nodes is occupied once and vacated once; and ten connections subscribing at once,
/// five per node, then leaving at once, still make one `channel_occupied` and one
/// `channel_vacated`. The deliveries pass the Python SDK's `validate_webhook`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_tell_each_webhook_once() {
    use common::webhook::{Answer, Receiver};
    let receiver = Receiver::start(|_| Answer::Status(200)).await;
    let redis = common::redis::Redis::start().await;
    let hooks = [(receiver.url("/pusher"), &ALL_HOOK_KINDS[..])];
    let (a, b) = (
        pusher_node_with(&redis.url(), config_with_hooks(&hooks)).await,
        pusher_node_with(&redis.url(), config_with_hooks(&hooks)).await,
    );
    let keys = APP.keys();
    let mut ann_a = PusherWs::connect(a.ws_addr, APP.key).await;
    let mut ann_b = PusherWs::connect(b.ws_addr, APP.key).await;
    let mut bob_b = PusherWs::connect(b.ws_addr, APP.key).await;
    ann_a
        .subscribe(
            "presence-room",
            Some(&keys),
            Some(&presence_data("7", "Ann")),
        )
        .await;
    ann_b
        .subscribe(
            "presence-room",
            Some(&keys),
            Some(&presence_data("7", "Ann")),
        )
        .await;
    bob_b
        .subscribe(
            "presence-room",
            Some(&keys),
            Some(&presence_data("8", "Bob")),
        )
        .await;
    ann_a
        .expect("pusher_internal:member_added", Some("presence-room"))
        .await;
    let mut crowd = Vec::new();
    for i in 0..10 {
        let node = if i % 2 == 0 { &a } else { &b };
        crowd.push(PusherWs::connect(node.ws_addr, APP.key).await);
    }
    let joined =
        futures_util::future::join_all(crowd.iter_mut().map(|c| c.subscribe("race", None, None)))
            .await;
    for j in &joined {
        assert_eq!(j["event"], "pusher_internal:subscription_succeeded", "{j}");
    }
    futures_util::future::join_all(crowd.into_iter().map(|c| c.ws.close())).await;
    ann_a.ws.close().await;
    // Ann is still a member (her tab on b): only b's leaving removes her.
    ann_b.ws.close().await;
    bob_b.ws.close().await;

    let events = pusher_wait(&receiver, 8).await;
    assert_eq!(
        hook_lines(&events),
        [
            "channel_occupied presence-room",
            "channel_occupied race",
            "channel_vacated presence-room",
            "channel_vacated race",
            "member_added presence-room 7",
            "member_added presence-room 8",
            "member_removed presence-room 7",
            "member_removed presence-room 8",
        ],
        "{events:#?}"
    );
    assert_eq!(
        hook_names(&events, "race"),
        ["channel_occupied", "channel_vacated"]
    );
    for g in receiver.got() {
        let body = String::from_utf8(g.body.to_vec()).unwrap();
        let req = json!({"app": APP.json(), "op": "webhook_valid", "key": g.pusher_key,
            "signature": g.pusher_signature, "body": body});
        assert_eq!(ok(python_sdk(&req).await), true, "python: {body}");
    }
}

/// The test apps with [`APP`]'s `subscription_count` on and its webhooks to `hooks`.
fn counting_config(hooks: &[(String, &[&str])]) -> pushwire::Config {
    let mut apps: Value = serde_json::from_str(&apps_with_hooks(hooks)).unwrap();
    apps["apps"][0]["subscription_count"] = json!(true);
    pushwire::Config {
        pusher_apps: Some(Arc::new(
            pushwire::channels::Apps::parse(&apps.to_string()).unwrap(),
        )),
        ..pusher_config()
    }
}

/// The next `pusher_internal:subscription_count` on `channel` (other frames skipped):
/// its count.
async fn next_count(ws: &mut PusherWs, channel: &str) -> u64 {
    timeout(Duration::from_secs(5), async {
        loop {
            let f = ws.next().await;
            if f["event"] == "pusher_internal:subscription_count" && f["channel"] == channel {
                return f["data"]["subscription_count"].as_u64().unwrap();
            }
        }
    })
    .await
    .expect("a subscription count within 5 s")
}

/// An app with `subscription_count` on: its channels' subscribers are told the count when
/// it changes (within a second, coalesced), presence channels are not, and receivers
/// naming `subscription_count` get it as Pusher's webhook; on two nodes the count is the
/// cluster's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_counts_are_told_when_the_app_wants_them() {
    use common::webhook::{Answer, Receiver};
    let receiver = Receiver::start(|_| Answer::Status(200)).await;
    let hooks = [(receiver.url("/counts"), &["subscription_count"][..])];
    let keys = APP.keys();
    // One node.
    let server = TestServer::start_with(counting_config(&hooks)).await;
    let mut a = PusherWs::connect(server.ws_addr, APP.key).await;
    let mut b = PusherWs::connect(server.ws_addr, APP.key).await;
    a.subscribe("counted", None, None).await;
    assert_eq!(next_count(&mut a, "counted").await, 1);
    b.subscribe("counted", None, None).await;
    assert_eq!(next_count(&mut a, "counted").await, 2);
    assert_eq!(next_count(&mut b, "counted").await, 2);
    b.subscribe(
        "presence-room",
        Some(&keys),
        Some(&presence_data("8", "Bob")),
    )
    .await;
    b.ws.close().await;
    assert_eq!(next_count(&mut a, "counted").await, 1);
    let told = pusher_wait(&receiver, 3).await;
    assert_eq!(
        told,
        [1, 2, 1]
            .iter()
            .map(|n| json!({"name": "subscription_count", "channel": "counted", "subscription_count": n}))
            .collect::<Vec<_>>(),
        "presence channels are not counted"
    );
    // Two nodes: the count is every node's subscriptions.
    let redis = common::redis::Redis::start().await;
    let (n1, n2) = (
        pusher_node_with(&redis.url(), counting_config(&[])).await,
        pusher_node_with(&redis.url(), counting_config(&[])).await,
    );
    let mut c = PusherWs::connect(n1.ws_addr, APP.key).await;
    let mut d = PusherWs::connect(n2.ws_addr, APP.key).await;
    c.subscribe("counted", None, None).await;
    assert_eq!(next_count(&mut c, "counted").await, 1);
    d.subscribe("counted", None, None).await;
    assert_eq!(next_count(&mut c, "counted").await, 2);
    // n1's count of 1 is delivered on n1 at once and reaches n2 through Redis: d may
    // subscribe before it arrives there, and then hears it before n2's own count of 2.
    let mut first = next_count(&mut d, "counted").await;
    if first == 1 {
        first = next_count(&mut d, "counted").await;
    }
    assert_eq!(first, 2);
    d.ws.close().await;
    assert_eq!(next_count(&mut c, "counted").await, 1);
}

/// A Pusher connection to `addr` whose handshake says `Origin: origin`: the first frame.
async fn connect_from(addr: std::net::SocketAddr, origin: &str) -> (WsClient, Value) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!(
        "ws://{addr}/app/{}?protocol=7&client=js&version=8.6.0",
        APP.key
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("origin", origin.parse().unwrap());
    let (ws, _) = timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .unwrap()
    .unwrap();
    let mut ws = WsClient { ws };
    let first = decode(&ws.recv_text().await);
    (ws, first)
}

/// Per-app settings: a page whose `Origin` is not in the app's `allowed_origins` is
/// refused with 4009 (`pusher:error`, then the close; pusher-js does not come back),
/// a listed one (in any case) and a client without `Origin` are served; the app's
/// `max_connections` holds on the node (4100); a client event over the app's
/// `max_event_bytes` is refused with 4301 and the connection stays.
#[tokio::test]
async fn per_app_origins_connections_and_event_sizes() {
    let mut apps: Value = serde_json::from_str(&common::pusher::apps_json()).unwrap();
    apps["apps"][0]["allowed_origins"] = json!(["https://app.example.com"]);
    apps["apps"][0]["max_connections"] = json!(2);
    apps["apps"][0]["max_event_bytes"] = json!(64);
    let server = TestServer::start_with(pushwire::Config {
        pusher_apps: Some(Arc::new(
            pushwire::channels::Apps::parse(&apps.to_string()).unwrap(),
        )),
        ..pusher_config()
    })
    .await;
    let (mut evil, first) = connect_from(server.ws_addr, "https://evil.example").await;
    assert_eq!(first["event"], "pusher:error", "{first}");
    assert_eq!(first["data"]["code"], 4009, "{first}");
    assert_eq!(evil.expect_close().await.0, 4009);
    let (mut listed, first) = connect_from(server.ws_addr, "HTTPS://App.Example.com").await;
    assert_eq!(first["event"], "pusher:connection_established", "{first}");
    let socket_id = first["data"]["socket_id"].as_str().unwrap().to_owned();
    let mut plain = PusherWs::connect(server.ws_addr, APP.key).await;
    // Two connections of the app on this node: the third is over.
    let (mut third, first) = connect_from(server.ws_addr, "https://app.example.com").await;
    assert_eq!(first["data"]["code"], 4100, "{first}");
    assert_eq!(third.expect_close().await.0, 4100);

    let keys = APP.keys();
    let auth = keys.channel_auth(&socket_id, "private-chat", None);
    listed
        .send_text(&json!({"event": "pusher:subscribe", "data": {"channel": "private-chat", "auth": auth}}).to_string())
        .await;
    assert_eq!(
        decode(&listed.recv_text().await)["event"],
        "pusher_internal:subscription_succeeded"
    );
    plain.subscribe("private-chat", Some(&keys), None).await;
    let big = "x".repeat(70);
    listed
        .send_text(
            &json!({"event": "client-big", "channel": "private-chat", "data": big}).to_string(),
        )
        .await;
    let err = decode(&listed.recv_text().await);
    assert_eq!(err["event"], "pusher:error", "{err}");
    assert_eq!(err["data"]["code"], 4301, "{err}");
    assert!(
        err["data"]["message"]
            .as_str()
            .unwrap()
            .contains("64 bytes"),
        "{err}"
    );
    listed
        .send_text(
            &json!({"event": "client-small", "channel": "private-chat", "data": "hi"}).to_string(),
        )
        .await;
    let got = plain.expect("client-small", Some("private-chat")).await;
    assert_eq!(got["data"], "hi");
}

/// A member event that reaches a node after a connection there read a member list that
/// already has it (the window between the script that adds a member and its event's
/// arrival: seen on a Redis Cluster) is not given to that connection; one newer than its
/// list is. Replayed deterministically by publishing the late event on the nodes'
/// channel, as the node that added Bob published it. And a presence subscription sent
/// again by a connection that holds it counts nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_event_a_member_list_already_has_is_not_told_again() {
    let redis = common::redis::Redis::start().await;
    let (a, b) = (
        pusher_node(&redis.url()).await,
        pusher_node(&redis.url()).await,
    );
    let keys = APP.keys();
    let mut bob = PusherWs::connect(a.ws_addr, APP.key).await;
    bob.subscribe(
        "presence-room",
        Some(&keys),
        Some(&presence_data("8", "Bob")),
    )
    .await;
    let mut ann = PusherWs::connect(b.ws_addr, APP.key).await;
    let here = ann
        .subscribe(
            "presence-room",
            Some(&keys),
            Some(&presence_data("7", "Ann")),
        )
        .await;
    assert_eq!(here["data"]["presence"]["count"], 2, "{here}");
    bob.expect("pusher_internal:member_added", Some("presence-room"))
        .await;
    // Bob's addition was version 1, Ann's 2: Ann's list was read at 2.
    let late = |ver: &str, user: &str| {
        let frame = outbound::member_added("presence-room", user, "{}");
        format!(
            "late-node\x1f{}\x1fpresence-room\x1f-\x1f{ver}\x1f{frame}",
            APP.id
        )
    };
    let events = "pw:p:events";
    redis.cli(&["PUBLISH", events, &late("1", "8")]).await;
    ann.ws.expect_silence(Duration::from_millis(500)).await;
    redis.cli(&["PUBLISH", events, &late("3", "9")]).await;
    let got = ann
        .expect("pusher_internal:member_added", Some("presence-room"))
        .await;
    assert_eq!(got["data"]["user_id"], "9", "{got}");
    let got = bob
        .expect("pusher_internal:member_added", Some("presence-room"))
        .await;
    assert_eq!(
        got["data"]["user_id"], "9",
        "Bob's list is older too: {got}"
    );
    // Subscribing again to what it holds is answered again and counts nothing: when Ann
    // leaves once, she is gone.
    let again = ann
        .subscribe(
            "presence-room",
            Some(&keys),
            Some(&presence_data("7", "Ann")),
        )
        .await;
    assert_eq!(
        again["event"], "pusher_internal:subscription_succeeded",
        "{again}"
    );
    bob.ws.expect_silence(Duration::from_millis(300)).await;
    ann.ws.close().await;
    let removed = bob
        .expect("pusher_internal:member_removed", Some("presence-room"))
        .await;
    assert_eq!(removed["data"]["user_id"], "7");
}

/// A reload of the apps file moves an app's webhooks: the new receiver gets what happens
/// from then on, the old one nothing more.
#[tokio::test]
async fn a_reload_moves_the_webhooks() {
    use common::webhook::{Answer, Receiver};
    let old = Receiver::start(|_| Answer::Status(200)).await;
    let new = Receiver::start(|_| Answer::Status(200)).await;
    let kinds = &["channel_occupied"][..];
    let (server, state) =
        TestServer::start_with_state(config_with_hooks(&[(old.url("/old"), kinds)])).await;
    let mut a = PusherWs::connect(server.ws_addr, APP.key).await;
    a.subscribe("before", None, None).await;
    assert_eq!(
        hook_lines(&pusher_wait(&old, 1).await),
        ["channel_occupied before"]
    );
    let next =
        pushwire::channels::Apps::parse(&apps_with_hooks(&[(new.url("/new"), kinds)])).unwrap();
    let changed = state.reload_pusher_apps(next).unwrap();
    assert!(
        changed.contains(&"app 1201 webhooks changed".to_owned()),
        "{changed:?}"
    );
    a.subscribe("after", None, None).await;
    assert_eq!(
        hook_lines(&pusher_wait(&new, 1).await),
        ["channel_occupied after"]
    );
    assert_eq!(
        pusher_taken(&old).len(),
        1,
        "the old receiver gets nothing more"
    );
}
