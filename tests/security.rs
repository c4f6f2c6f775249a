//! Who may bind a uid and who may push, over real sockets: signed uids (HS256 JWT, as first
//! frame or `?token=`), the PHP token minter, the Origin allow-list, the per-address cap,
//! the push allow-list, the `/auth` shared secret, the Unix push socket, and the binary's
//! secret file and environment variable.
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use pushwire::auth::{Secret, TokenError};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::process::Command;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_util::sync::CancellationToken;

const JWT_SECRET: &str = "correct horse battery staple";
const PUSH_SECRET: &str = "hunter2";
const AUTH_OK: &str = "{\"ok\":true}\n";
// Why a backend is refused: the `error` of the refusal line `{"ok":false,"error":WHY}`.
const BAD_SECRET: &str = "bad secret";
const AUTH_REQUIRED: &str = "authentication required: send /auth SECRET first";
const NOT_ALLOWED: &str = "address not allowed";

/// What the seed's backend code (`SEED_PHP`) pushes.
const SEED_PAYLOAD: &str = r#"{"uid":"uid1","percent":"88%"}"#;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn secret() -> Secret {
    Secret::new(JWT_SECRET)
}

fn jwt_config() -> pushwire::Config {
    pushwire::Config {
        jwt_secret: Some(secret()),
        ..pushwire::Config::default()
    }
}

/// A token with arbitrary header and claims JSON, HS256-signed with `key`.
fn sign(key: &[u8], header: &str, claims: &str) -> String {
    let signing = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(signing.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing}.{sig}")
}

const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs a program to completion (10 s deadline) and returns its stdout; panics on failure.
async fn run_ok(cmd: &mut Command) -> String {
    let what = format!("{cmd:?}");
    let out = timeout(
        Duration::from_secs(10),
        cmd.stdin(Stdio::null()).kill_on_drop(true).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{what} did not finish within 10 s"))
    .unwrap_or_else(|e| panic!("cannot run {what}: {e} (is php-cli installed?)"));
    assert!(
        out.status.success(),
        "{what} failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `php scripts/mint-token.php SECRET UID [TTL]`, trimmed.
async fn php_mint(secret: &str, uid: &str, ttl: Option<i64>) -> String {
    let mut cmd = Command::new("php");
    cmd.arg(repo_path("scripts/mint-token.php"))
        .arg(secret)
        .arg(uid);
    if let Some(ttl) = ttl {
        cmd.arg(ttl.to_string());
    }
    let out = run_ok(&mut cmd).await;
    let token = out.trim_end_matches('\n');
    assert!(
        !token.contains(char::is_whitespace) && token.split('.').count() == 3,
        "mint-token.php printed {out:?}"
    );
    token.to_owned()
}

/// Something that answers push-port lines, so bind checks can go through an allowed or
/// authenticated backend when the harness's own probes (fresh TCP from 127.0.0.1) would be
/// refused.
trait Backend {
    async fn req(&mut self, line: &str) -> String;
}

impl Backend for PushClient {
    async fn req(&mut self, line: &str) -> String {
        self.request(line).await
    }
}

/// A backend on the Unix push socket.
struct UnixPush {
    stream: BufReader<UnixStream>,
}

impl UnixPush {
    async fn connect(path: &Path) -> UnixPush {
        let s = timeout(STEP, UnixStream::connect(path))
            .await
            .expect("unix connect timed out")
            .unwrap_or_else(|e| panic!("unix connect {}: {e}", path.display()));
        UnixPush {
            stream: BufReader::new(s),
        }
    }
}

impl Backend for UnixPush {
    async fn req(&mut self, line: &str) -> String {
        let msg = format!("{line}\n");
        self.stream
            .get_mut()
            .write_all(msg.as_bytes())
            .await
            .unwrap();
        let mut reply = String::new();
        timeout(STEP, self.stream.read_line(&mut reply))
            .await
            .expect("no unix push reply within 5 s")
            .unwrap();
        reply
    }
}

/// Pushes probe lines through `backend` until one lands (`ok`), i.e. `uid` is bound. For
/// single-tab uids only; later probes are skipped by `recv_text`.
async fn wait_bound_via(uid: &str, backend: &mut impl Backend) {
    let deadline = Instant::now() + STEP;
    let mut n = 1_000_000;
    loop {
        n += 1;
        match backend.req(&probe_line(uid, n)).await.as_str() {
            "ok\n" => return,
            "fail\n" => {}
            other => panic!("probe reply {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "{uid:?} not bound within {STEP:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A tungstenite client whose TCP connection comes from `src`.
async fn ws_from(src: &str, server: &TestServer) -> WsClient {
    let tcp = tcp_from(src, server.ws_addr).await;
    let (ws, _) = timeout(
        STEP,
        tokio_tungstenite::client_async(server.ws_url(), MaybeTlsStream::Plain(tcp)),
    )
    .await
    .expect("handshake timed out")
    .unwrap_or_else(|e| panic!("handshake from {src}: {e}"));
    WsClient { ws }
}

/// Opens a WebSocket with `Origin: origin`; the handshake's outcome.
async fn connect_with_origin(url: &str, origin: &str) -> Result<WsClient, WsError> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", HeaderValue::from_str(origin).unwrap());
    let r = timeout(STEP, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake timed out");
    r.map(|(ws, _)| WsClient { ws })
}

/// Sends a raw upgrade request on `tcp` and returns everything the server sends until it
/// closes (a reset after the response counts as the end).
async fn raw_upgrade_response(mut tcp: TcpStream) -> String {
    let req = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let until = Instant::now() + STEP;
    loop {
        match tokio::time::timeout_at(until, tcp.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {STEP:?}; got {got:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The refusal line as documented: `{"ok":false,"error":WHY}` and a newline, byte-exact.
fn refusal_line(why: &str) -> String {
    format!(
        "{{\"ok\":false,\"error\":{}}}\n",
        serde_json::to_string(why).unwrap()
    )
}

/// `got` is one refusal line saying `why`: a JSON object with exactly `ok: false` and
/// `error: why`, on one line. (Byte-exactness is checked once, in
/// `refusal_lines_are_byte_exact`, so a key-order bug fails one test, not all of these.)
fn assert_refusal(got: &str, why: &str) {
    let body = got
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("refusal {got:?} is not a line"));
    assert!(
        !body.contains('\n'),
        "refusal {got:?} is more than one line"
    );
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("refusal {got:?}: {e}"));
    assert_eq!(
        v,
        serde_json::json!({"ok": false, "error": why}),
        "refusal {got:?}"
    );
}

/// `line` on `push` is answered with a refusal saying `why`, and then the server closes.
async fn expect_refusal_then_eof(push: &mut PushClient, line: &str, why: &str) {
    assert_refusal(&push.request(line).await, why);
    assert_eq!(
        String::from_utf8_lossy(&push.read_to_eof().await),
        "",
        "bytes after the refusal of {line:?}"
    );
}

/// A push connection refused on connect: exactly one refusal line, then EOF.
async fn expect_refused_on_connect(push: &mut PushClient, why: &str) {
    let all = push.read_to_eof().await;
    assert_refusal(&String::from_utf8_lossy(&all), why);
}

// ---------------------------------------------------------------------------------------
// Signed uids
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_as_first_frame_binds_its_sub() {
    let server = TestServer::start_with(jwt_config()).await;
    let token = secret().mint("alice", now() + 60);
    let mut ws = WsClient::connect(&server.ws_url()).await;
    ws.send_text(&token).await;
    ws.wait_bound("alice", server.push_addr).await;

    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"alice","n":1}"#).await, "ok\n");
    assert_eq!(ws.recv_text().await, r#"{"uid":"alice","n":1}"#);
    // The token text itself is not a uid.
    let as_uid = format!(r#"{{"uid":{}}}"#, serde_json::to_string(&token).unwrap());
    assert_eq!(push.request(&as_uid).await, "fail\n");
    // Later frames are ignored, as with plain uids: a second token does not rebind.
    ws.send_text(&secret().mint("mallory", now() + 60)).await;
    assert_eq!(push.request(r#"{"uid":"alice","n":2}"#).await, "ok\n");
    assert_eq!(ws.recv_text().await, r#"{"uid":"alice","n":2}"#);
    assert_eq!(push.request(r#"{"uid":"mallory"}"#).await, "fail\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_query_string_binds_without_a_frame() {
    let server = TestServer::start_with(jwt_config()).await;
    let token = secret().mint("bob", now() + 60);
    let mut ws = WsClient::connect(&server.ws_url_path(&format!("/?token={token}"))).await;
    ws.wait_bound("bob", server.push_addr).await;

    // Any path, the token among other parameters.
    let token = secret().mint("carol", now() + 60);
    let url = server.ws_url_path(&format!("/live/feed?v=2&token={token}&x=y"));
    let mut ws2 = WsClient::connect(&url).await;
    ws2.wait_bound("carol", server.push_addr).await;

    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"bob"}"#).await, "ok\n");
    assert_eq!(ws.recv_text().await, r#"{"uid":"bob"}"#);
    assert_eq!(push.request(r#"{"uid":"carol"}"#).await, "ok\n");
    assert_eq!(ws2.recv_text().await, r#"{"uid":"carol"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_sub_binds_as_its_digits() {
    let server = TestServer::start_with(jwt_config()).await;
    let token = sign(
        JWT_SECRET.as_bytes(),
        HS256,
        &format!(r#"{{"sub":4242,"exp":{}}}"#, now() + 60),
    );
    let mut ws = WsClient::connect(&server.ws_url()).await;
    ws.send_text(&token).await;
    ws.wait_bound("4242", server.push_addr).await;
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":4242}"#).await, "ok\n");
    assert_eq!(ws.recv_text().await, r#"{"uid":4242}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exp_has_thirty_seconds_of_leeway() {
    let server = TestServer::start_with(jwt_config()).await;
    let mut ws = WsClient::connect(&server.ws_url()).await;
    ws.send_text(&secret().mint("late", now() - 10)).await;
    ws.wait_bound("late", server.push_addr).await;

    let mut ws = WsClient::connect(&server.ws_url()).await;
    ws.send_text(&secret().mint("later", now() - 60)).await;
    assert_eq!(
        ws.expect_close().await,
        (1008, TokenError::Expired.to_string())
    );
}

/// Every refused token: the reason the browser must see and the uid it claims.
fn bad_tokens() -> Vec<(&'static str, String, String, String)> {
    let t = now();
    let key = JWT_SECRET.as_bytes();
    let good = secret().mint("victim", t + 60);
    let good_parts: Vec<&str> = good.split('.').collect();
    let forged_claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"admin","exp":{}}}"#, t + 60));
    let long_uid = "v".repeat(300);
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let reason = |e: TokenError| e.to_string();
    vec![
        (
            "expired",
            secret().mint("victim", t - 3600),
            reason(TokenError::Expired),
            "victim".into(),
        ),
        (
            "wrong secret",
            Secret::new("not the secret").mint("victim", t + 60),
            reason(TokenError::Signature),
            "victim".into(),
        ),
        (
            "tampered payload",
            format!("{}.{forged_claims}.{}", good_parts[0], good_parts[2]),
            reason(TokenError::Signature),
            "admin".into(),
        ),
        (
            "plain uid",
            "victim".into(),
            reason(TokenError::Malformed),
            "victim".into(),
        ),
        (
            "three junk parts",
            "a.b.c".into(),
            reason(TokenError::Malformed),
            "victim".into(),
        ),
        (
            "four parts",
            format!("{good}.x"),
            reason(TokenError::Malformed),
            "victim".into(),
        ),
        (
            "alg none, no signature",
            format!("{none_header}.{}.", good_parts[1]),
            reason(TokenError::Algorithm),
            "victim".into(),
        ),
        (
            "alg none, old signature",
            format!("{none_header}.{}.{}", good_parts[1], good_parts[2]),
            reason(TokenError::Algorithm),
            "victim".into(),
        ),
        (
            "alg HS512",
            sign(
                key,
                r#"{"alg":"HS512","typ":"JWT"}"#,
                &format!(r#"{{"sub":"victim","exp":{}}}"#, t + 60),
            ),
            reason(TokenError::Algorithm),
            "victim".into(),
        ),
        (
            "no exp",
            sign(key, HS256, r#"{"sub":"victim"}"#),
            reason(TokenError::NoExpiry),
            "victim".into(),
        ),
        (
            "exp as a string",
            sign(
                key,
                HS256,
                &format!(r#"{{"sub":"victim","exp":"{}"}}"#, t + 60),
            ),
            reason(TokenError::NoExpiry),
            "victim".into(),
        ),
        (
            "nbf in the future",
            sign(
                key,
                HS256,
                &format!(
                    r#"{{"sub":"victim","exp":{},"nbf":{}}}"#,
                    t + 7200,
                    t + 3600
                ),
            ),
            reason(TokenError::NotYetValid),
            "victim".into(),
        ),
        (
            "empty sub",
            secret().mint("", t + 60),
            reason(TokenError::Subject),
            String::new(),
        ),
        (
            "sub an object",
            sign(
                key,
                HS256,
                &format!(r#"{{"sub":{{"uid":"victim"}},"exp":{}}}"#, t + 60),
            ),
            reason(TokenError::Subject),
            "victim".into(),
        ),
        (
            "sub too long",
            secret().mint(&long_uid, t + 60),
            "uid too long (max 256 bytes)".into(),
            long_uid.clone(),
        ),
    ]
}

/// Each bad token, as first frame and as `?token=`, is closed with 1008 and its reason,
/// and binds nothing: a push to the uid it claims answers `fail`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_close_1008_with_a_reason_and_bind_nothing() {
    let server = TestServer::start_with(jwt_config()).await;
    let mut push = PushClient::connect(server.push_addr).await;
    for (what, token, reason, claimed) in bad_tokens() {
        for via_query in [false, true] {
            let how = if via_query { "?token=" } else { "first frame" };
            let mut ws = if via_query {
                WsClient::connect(&server.ws_url_path(&format!("/?token={token}"))).await
            } else {
                let mut ws = WsClient::connect(&server.ws_url()).await;
                ws.send_text(&token).await;
                ws
            };
            let (code, got) = ws.expect_close().await;
            assert_eq!(
                (code, got.as_str()),
                (1008, reason.as_str()),
                "{what} via {how}"
            );
            assert_eq!(
                timeout(STEP, ws.next_event())
                    .await
                    .expect("no end after close"),
                WsEvent::End,
                "{what} via {how}: stream must end after the close"
            );
            if !claimed.is_empty() {
                let line = format!(r#"{{"uid":{}}}"#, serde_json::to_string(&claimed).unwrap());
                assert_eq!(push.request(&line).await, "fail\n", "{what} via {how}");
            }
        }
    }
    // A valid token still binds afterwards: the refusals left nothing behind.
    let mut ws = WsClient::connect(&server.ws_url()).await;
    ws.send_text(&secret().mint("victim", now() + 60)).await;
    ws.wait_bound("victim", server.push_addr).await;
}

/// A bad token in the URL is not rescued by a good first frame: the URL decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_token_is_refused_even_with_a_good_first_frame() {
    let server = TestServer::start_with(jwt_config()).await;
    let bad = Secret::new("other").mint("victim", now() + 60);
    let mut ws = WsClient::connect(&server.ws_url_path(&format!("/?token={bad}"))).await;
    ws.send_text(&secret().mint("victim", now() + 60)).await;
    assert_eq!(
        ws.expect_close().await,
        (1008, TokenError::Signature.to_string())
    );
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"victim"}"#).await, "fail\n");
}

/// Without a secret, the seed behaviour: the first frame is the uid, whatever it looks like,
/// and `?token=` means nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_a_token_is_just_a_uid() {
    let server = TestServer::start().await;
    let token = secret().mint("alice", now() + 60);
    let mut ws = WsClient::connect(&server.ws_url()).await;
    ws.bind(&token, server.push_addr).await;
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"alice"}"#).await, "fail\n");
    let line = format!(r#"{{"uid":{}}}"#, serde_json::to_string(&token).unwrap());
    assert_eq!(push.request(&line).await, "ok\n");
    assert_eq!(ws.recv_text().await, line);

    // An expired token is just as good a uid, and a query token is ignored.
    let mut ws = WsClient::connect(&server.ws_url_path(&format!("/?token={token}"))).await;
    ws.bind("plain", server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"plain"}"#).await, "ok\n");
    assert_eq!(ws.recv_text().await, r#"{"uid":"plain"}"#);
}

// ---------------------------------------------------------------------------------------
// The PHP minter
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_minted_tokens_are_accepted() {
    let server = TestServer::start_with(jwt_config()).await;
    let mut push = PushClient::connect(server.push_addr).await;

    // First frame.
    let token = php_mint(JWT_SECRET, "uid1", None).await;
    let mut ws = WsClient::connect(&server.ws_url()).await;
    ws.send_text(&token).await;
    ws.wait_bound("uid1", server.push_addr).await;

    // Query string, with a uid json_encode escapes (`\/`, `\u00e9`, `\"`).
    let odd = "a/é\"b";
    let token = php_mint(JWT_SECRET, odd, Some(60)).await;
    let mut ws2 = WsClient::connect(&server.ws_url_path(&format!("/?token={token}"))).await;
    ws2.wait_bound(odd, server.push_addr).await;

    assert_eq!(push.request(SEED_PAYLOAD).await, "ok\n");
    assert_eq!(ws.recv_text().await, SEED_PAYLOAD);
    let line = format!(r#"{{"uid":{}}}"#, serde_json::to_string(odd).unwrap());
    assert_eq!(push.request(&line).await, "ok\n");
    assert_eq!(ws2.recv_text().await, line);

    // The function is usable from other PHP code too (docs/security.md quotes it).
    let code = format!(
        "require '{}'; echo pushwire_token('{JWT_SECRET}', 'from-require', 120);",
        repo_path("scripts/mint-token.php").display()
    );
    let token = run_ok(Command::new("php").arg("-r").arg(&code)).await;
    assert_eq!(
        secret().verify(&token, SystemTime::now()),
        Ok("from-require".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_minted_tokens_with_the_wrong_secret_or_expired_are_refused() {
    let server = TestServer::start_with(jwt_config()).await;
    let token = php_mint("not the secret", "uid1", None).await;
    let mut ws = WsClient::connect(&server.ws_url()).await;
    ws.send_text(&token).await;
    assert_eq!(
        ws.expect_close().await,
        (1008, TokenError::Signature.to_string())
    );

    let token = php_mint(JWT_SECRET, "uid1", Some(-3600)).await;
    let mut ws = WsClient::connect(&server.ws_url_path(&format!("/?token={token}"))).await;
    assert_eq!(
        ws.expect_close().await,
        (1008, TokenError::Expired.to_string())
    );
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request(SEED_PAYLOAD).await, "fail\n");
}

// ---------------------------------------------------------------------------------------
// Origin allow-list
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_allow_list() {
    let server = TestServer::start_with(pushwire::Config {
        allowed_origins: Some(vec![
            "https://app.example".into(),
            "http://localhost:8080".into(),
        ]),
        ..pushwire::Config::default()
    })
    .await;
    let url = server.ws_url();
    for evil in [
        "https://evil.example",
        "https://app.example.evil.example",
        "http://app.example",
        "https://app.example:443",
        "null",
    ] {
        match connect_with_origin(&url, evil).await {
            Ok(_) => panic!("Origin {evil:?} was let in"),
            Err(e) => assert_eq!(http_status(&e), Some(403), "Origin {evil:?}: {e:?}"),
        }
    }
    // Allowed, compared case-insensitively.
    for (origin, uid) in [
        ("https://app.example", "o1"),
        ("HTTPS://App.Example", "o2"),
        ("http://localhost:8080", "o3"),
    ] {
        let mut ws = connect_with_origin(&url, origin)
            .await
            .unwrap_or_else(|e| panic!("Origin {origin:?} refused: {e}"));
        ws.bind(uid, server.push_addr).await;
    }
    // Non-browser clients send no Origin and are not affected.
    let mut ws = WsClient::connect(&url).await;
    ws.bind("no-origin", server.push_addr).await;
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"no-origin"}"#).await, "ok\n");
    assert_eq!(ws.recv_text().await, r#"{"uid":"no-origin"}"#);
}

// ---------------------------------------------------------------------------------------
// Per-address cap
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_cap_answers_429() {
    let server = TestServer::start_with(pushwire::Config {
        max_connections_per_ip: 3,
        ..pushwire::Config::default()
    })
    .await;
    let mut held = Vec::new();
    for i in 0..3 {
        let mut ws = WsClient::connect(&server.ws_url()).await;
        ws.bind(&format!("cap{i}"), server.push_addr).await;
        held.push(ws);
    }
    // The fourth from 127.0.0.1: a plain HTTP 429, byte-exact status line.
    let tcp = tcp_from("127.0.0.1", server.ws_addr).await;
    let resp = raw_upgrade_response(tcp).await;
    assert!(
        resp.starts_with("HTTP/1.1 429 "),
        "4th connection got {resp:?}"
    );
    // The same through a WebSocket client library.
    let err = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .map(|_| ())
        .expect_err("4th connection let in");
    assert_eq!(http_status(&err), Some(429), "{err:?}");

    // Another source address has its own allowance.
    let mut other = ws_from("127.0.0.2", &server).await;
    other.bind("from-two", server.push_addr).await;

    // Closing one frees its place (poll: the server frees it when the socket task ends).
    held.pop().unwrap().close().await;
    let deadline = Instant::now() + STEP;
    let mut ws = loop {
        match tokio_tungstenite::connect_async(server.ws_url()).await {
            Ok((ws, _)) => break WsClient { ws },
            Err(e) if http_status(&e) == Some(429) => {
                assert!(Instant::now() < deadline, "place never freed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("reconnect: {e}"),
        }
    };
    ws.bind("cap-again", server.push_addr).await;
    // Everyone bound is still served.
    let mut push = PushClient::connect(server.push_addr).await;
    for (uid, ws) in [
        ("cap0", &mut held[0]),
        ("from-two", &mut other),
        ("cap-again", &mut ws),
    ] {
        let line = format!(r#"{{"uid":"{uid}"}}"#);
        assert_eq!(push.request(&line).await, "ok\n");
        assert_eq!(ws.recv_text().await, line);
    }
}

/// 6,000 connections that connect and send nothing, from six addresses, against a server
/// that may hold 5,000: each address gets its pending allowance (the rest are answered
/// 429 at once), so a real browser from a seventh address gets its 101 at once rather
/// than waiting in the backlog for the silent ones' bind timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_hold_every_slot() {
    let server = TestServer::start_with(pushwire::Config {
        max_ws_connections: 5000,
        max_pending_handshakes: 1250,
        max_pending_per_ip: 64,
        // Far past the test's length: a silent one cut while the 6,000 are still opening
        // would free a place, and the refusals below would no longer be exact.
        bind_timeout: Duration::from_secs(120),
        // The six addresses stand for remote ones: loopback is no trusted proxy here.
        trusted_proxies: Vec::new(),
        ..pushwire::Config::default()
    })
    .await;
    let mut silent = Vec::new();
    for n in 0..6000 {
        silent.push(tcp_from(&format!("127.0.0.{}", 1 + n % 6), server.ws_addr).await);
    }
    // The newcomer: its handshake and bind are answered at once.
    let started = Instant::now();
    let mut browser = timeout(Duration::from_secs(2), ws_from("127.0.0.7", &server))
        .await
        .expect("a real browser waited behind 6,000 silent connections");
    browser.bind("real", server.push_addr).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bound after {:?}",
        started.elapsed()
    );
    // From a silent address: refused with 429 while its allowance is in use.
    let resp = raw_upgrade_response(tcp_from("127.0.0.1", server.ws_addr).await).await;
    assert!(
        resp.starts_with("HTTP/1.1 429 ") && resp.contains("handshakes in progress"),
        "{resp:?}"
    );
    let mut push = PushClient::connect(server.push_addr).await;
    let stats = push.request("/stats").await;
    let refused = json_u64(&stats, "refused_pending");
    assert!(refused >= 6 * (1000 - 64), "{stats}");
    drop(silent);
}

/// Past the server-wide pending budget, a new connection is answered 503; once the
/// pending ones bind, the budget is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_budget_answers_503_past_the_total() {
    let server = TestServer::start_with(pushwire::Config {
        max_pending_handshakes: 3,
        ..pushwire::Config::default()
    })
    .await;
    let mut tabs = Vec::new();
    for _ in 0..3 {
        tabs.push(WsClient::connect(&server.ws_url()).await);
    }
    let resp = raw_upgrade_response(tcp_from("127.0.0.2", server.ws_addr).await).await;
    assert!(
        resp.starts_with("HTTP/1.1 503 ") && resp.ends_with("too many handshakes in progress\n"),
        "{resp:?}"
    );
    for (i, tab) in tabs.iter_mut().enumerate() {
        tab.bind(&format!("pending{i}"), server.push_addr).await;
    }
    // Bound connections hold no pending place: three more may start.
    let mut more = Vec::new();
    for i in 0..3 {
        let mut tab = WsClient::connect(&server.ws_url()).await;
        tab.bind(&format!("later{i}"), server.push_addr).await;
        more.push(tab);
    }
}

/// The number under `key` in a one-line JSON reply.
fn json_u64(reply: &str, key: &str) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(reply).unwrap_or_else(|e| panic!("{reply:?}: {e}"));
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {reply}"))
}

// ---------------------------------------------------------------------------------------
// Push port: allow-list and shared secret
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_allow_list() {
    let server = TestServer::start_with(pushwire::Config {
        push_allow: Some(vec!["127.0.0.2/32".parse().unwrap()]),
        ..pushwire::Config::default()
    })
    .await;
    // From 127.0.0.1: exactly the refusal line, then EOF, without sending anything.
    let mut refused = PushClient::connect(server.push_addr).await;
    expect_refused_on_connect(&mut refused, NOT_ALLOWED).await;

    // From 127.0.0.2: pushes and commands work.
    let mut allowed = PushClient {
        stream: BufReader::new(tcp_from("127.0.0.2", server.push_addr).await),
    };
    let mut ws = WsClient::connect(&server.ws_url()).await;
    ws.send_text("allowed").await;
    wait_bound_via("allowed", &mut allowed).await;
    assert_eq!(allowed.request(r#"{"uid":"allowed","n":1}"#).await, "ok\n");
    assert_eq!(ws.recv_text().await, r#"{"uid":"allowed","n":1}"#);
    assert_eq!(allowed.request("/ping").await, "pong\n");
    // `/auth` on a connection that needs none is simply acknowledged.
    assert_eq!(allowed.request("/auth whatever").await, AUTH_OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_secret_handshake() {
    let server = TestServer::start_with(pushwire::Config {
        push_secret: Some(Secret::new(PUSH_SECRET)),
        ..pushwire::Config::default()
    })
    .await;

    // Right secret: acknowledged, then pushes and commands work.
    let mut good = PushClient::connect(server.push_addr).await;
    assert_eq!(good.request(&format!("/auth {PUSH_SECRET}")).await, AUTH_OK);
    let mut ws = WsClient::connect(&server.ws_url()).await;
    ws.send_text("sec").await;
    wait_bound_via("sec", &mut good).await;
    assert_eq!(good.request(r#"{"uid":"sec","n":1}"#).await, "ok\n");
    assert_eq!(ws.recv_text().await, r#"{"uid":"sec","n":1}"#);
    assert_eq!(good.request("/ping").await, "pong\n");
    assert_eq!(good.request(r#"{"uid":"nobody"}"#).await, "fail\n");
    // Sending /auth again is harmless.
    assert_eq!(good.request(&format!("/auth {PUSH_SECRET}")).await, AUTH_OK);

    // CRLF line endings (PHP backends often send them) are fine.
    let mut crlf = PushClient::connect(server.push_addr).await;
    crlf.send_raw(format!("/auth {PUSH_SECRET}\r\n").as_bytes())
        .await;
    assert_eq!(crlf.read_reply().await, AUTH_OK);
    assert_eq!(crlf.request(r#"{"uid":"sec","n":2}"#).await, "ok\n");
    assert_eq!(ws.recv_text().await, r#"{"uid":"sec","n":2}"#);

    // Wrong secrets: the refusal, then EOF.
    for wrong in [
        "/auth nope".to_owned(),
        format!("/auth {PUSH_SECRET}x"),
        format!("/auth {}", &PUSH_SECRET[..PUSH_SECRET.len() - 1]),
        format!("/auth  {PUSH_SECRET}"),
        "/auth ".to_owned(),
    ] {
        let mut bad = PushClient::connect(server.push_addr).await;
        expect_refusal_then_eof(&mut bad, &wrong, BAD_SECRET).await;
    }
    // Anything else first: the same, with the other reason.
    for first in [
        r#"{"uid":"sec","smuggled":1}"#.to_owned(),
        "/ping".to_owned(),
        "/auth".to_owned(),
        String::new(),
        format!("/AUTH {PUSH_SECRET}"),
    ] {
        let mut bad = PushClient::connect(server.push_addr).await;
        expect_refusal_then_eof(&mut bad, &first, AUTH_REQUIRED).await;
    }
    // Pipelined after a wrong secret: refused, and the pushed line is never handled (the
    // next frame the browser sees is the marker sent afterwards).
    let mut bad = PushClient::connect(server.push_addr).await;
    bad.send_raw(b"/auth nope\n{\"uid\":\"sec\",\"smuggled\":2}\n")
        .await;
    assert_refusal(&bad.read_reply().await, BAD_SECRET);
    drop(bad);
    assert_eq!(good.request(r#"{"uid":"sec","marker":1}"#).await, "ok\n");
    assert_eq!(ws.recv_text().await, r#"{"uid":"sec","marker":1}"#);
}

/// The three refusal lines, byte-exact as documented (docs/security.md, *Who may push*:
/// `{"ok":false,"error":"..."}`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_lines_are_byte_exact() {
    let server = TestServer::start_with(pushwire::Config {
        push_allow: Some(vec!["127.0.0.2/32".parse().unwrap()]),
        push_secret: Some(Secret::new(PUSH_SECRET)),
        ..pushwire::Config::default()
    })
    .await;
    let mut from_one = PushClient::connect(server.push_addr).await;
    assert_eq!(
        String::from_utf8_lossy(&from_one.read_to_eof().await),
        refusal_line(NOT_ALLOWED)
    );
    for (first, why) in [
        ("/auth nope", BAD_SECRET),
        (r#"{"uid":"x"}"#, AUTH_REQUIRED),
    ] {
        let mut from_two = PushClient {
            stream: BufReader::new(tcp_from("127.0.0.2", server.push_addr).await),
        };
        assert_eq!(from_two.request(first).await, refusal_line(why));
        assert_eq!(String::from_utf8_lossy(&from_two.read_to_eof().await), "");
    }
    let mut from_two = PushClient {
        stream: BufReader::new(tcp_from("127.0.0.2", server.push_addr).await),
    };
    assert_eq!(
        from_two.request(&format!("/auth {PUSH_SECRET}")).await,
        "{\"ok\":true}\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_without_a_configured_secret_is_acknowledged() {
    let server = TestServer::start().await;
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request("/auth anything at all").await, AUTH_OK);
    let mut ws = WsClient::connect(&server.ws_url()).await;
    ws.bind("open", server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"open"}"#).await, "ok\n");
    assert_eq!(ws.recv_text().await, r#"{"uid":"open"}"#);
}

// ---------------------------------------------------------------------------------------
// Unix push socket
// ---------------------------------------------------------------------------------------

static DIRS: AtomicU32 = AtomicU32::new(0);

/// A fresh private directory under the system temp dir, removed by [`TempDir`]'s drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let n = DIRS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pushwire-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An in-process server with a Unix push socket too, modelled on `TestServer`.
struct UnixServer {
    ws_addr: SocketAddr,
    push_addr: SocketAddr,
    sock: PathBuf,
    shutdown: CancellationToken,
    _dir: TempDir,
}

impl UnixServer {
    async fn start_with(config: pushwire::Config) -> UnixServer {
        let dir = TempDir::new("unix");
        let sock = dir.0.join("push.sock");
        let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let push = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let unix = UnixListener::bind(&sock).unwrap();
        let (ws_addr, push_addr) = (ws.local_addr().unwrap(), push.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let listeners = pushwire::Listeners {
            ws,
            push,
            push_unix: Some(unix),
            http: None,
            gateway: None,
        };
        tokio::spawn(pushwire::serve(config, listeners, shutdown.clone()));
        UnixServer {
            ws_addr,
            push_addr,
            sock,
            shutdown,
            _dir: dir,
        }
    }
}

impl Drop for UnixServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_needs_no_auth() {
    let server = UnixServer::start_with(pushwire::Config {
        push_secret: Some(Secret::new(PUSH_SECRET)),
        push_allow: Some(vec!["10.255.255.255/32".parse().unwrap()]),
        ..pushwire::Config::default()
    })
    .await;
    let mut unix = UnixPush::connect(&server.sock).await;
    let mut ws = WsClient::connect(&format!("ws://{}/", server.ws_addr)).await;
    ws.send_text("uid1").await;
    wait_bound_via("uid1", &mut unix).await;
    assert_eq!(unix.req(r#"{"uid":"uid1","n":1}"#).await, "ok\n");
    assert_eq!(ws.recv_text().await, r#"{"uid":"uid1","n":1}"#);
    assert_eq!(unix.req("/ping").await, "pong\n");
    assert_eq!(unix.req("/auth anything").await, AUTH_OK);

    // The TCP port of the same server still applies its own rules.
    let mut tcp = PushClient::connect(server.push_addr).await;
    expect_refused_on_connect(&mut tcp, NOT_ALLOWED).await;

    // The tutorial's PHP snippet, pointed at the socket.
    let code = SEED_PHP.replace(
        "tcp://127.0.0.1:5678",
        &format!("unix://{}", server.sock.display()),
    );
    assert_ne!(code, SEED_PHP);
    let out = run_ok(Command::new("php").arg("-r").arg(&code)).await;
    assert_eq!(out, "ok\n");
    assert_eq!(ws.recv_text().await, SEED_PAYLOAD);
    // And scripts/push-example.php with a unix:// address.
    let out = run_ok(
        Command::new("php")
            .arg(repo_path("scripts/push-example.php"))
            .arg("uid1")
            .arg(format!("unix://{}", server.sock.display())),
    )
    .await;
    assert_eq!(out, "ok\n");
    assert_eq!(ws.recv_text().await, SEED_PAYLOAD);
}

// ---------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_reads_the_jwt_secret_from_a_file() {
    let dir = TempDir::new("secret");
    let file = dir.0.join("jwt.secret");
    std::fs::write(&file, "file secret\n").unwrap();
    // The real binary on port 0 (the harness's launcher), killed on drop.
    let daemon = Daemon::start(&["--jwt-secret-file", file.to_str().unwrap()]).await;

    let mut ws = WsClient::connect(&daemon.ws_url()).await;
    ws.send_text(&Secret::new("file secret").mint("filed", now() + 60))
        .await;
    ws.wait_bound("filed", daemon.push_addr).await;
    let mut push = PushClient::connect(daemon.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"filed"}"#).await, "ok\n");
    assert_eq!(ws.recv_text().await, r#"{"uid":"filed"}"#);

    // The trailing newline is not part of the secret; plain uids are refused.
    let mut ws = WsClient::connect(&daemon.ws_url()).await;
    ws.send_text(&Secret::new("file secret\n").mint("nl", now() + 60))
        .await;
    assert_eq!(
        ws.expect_close().await,
        (1008, TokenError::Signature.to_string())
    );
    let mut ws = WsClient::connect(&daemon.ws_url()).await;
    ws.send_text("filed").await;
    assert_eq!(
        ws.expect_close().await,
        (1008, TokenError::Malformed.to_string())
    );
    // A PHP-minted token against the real binary, through the URL.
    let token = php_mint("file secret", "php-filed", None).await;
    let mut ws = WsClient::connect(&format!("ws://{}/?token={token}", daemon.ws_addr)).await;
    ws.wait_bound("php-filed", daemon.push_addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_reads_the_jwt_secret_from_the_environment() {
    let daemon = Launch::new()
        .env("PUSHWIRE_JWT_SECRET", "env secret")
        .start()
        .await;
    let mut ws = WsClient::connect(&daemon.ws_url()).await;
    ws.send_text(&Secret::new("env secret").mint("env", now() + 60))
        .await;
    ws.wait_bound("env", daemon.push_addr).await;

    let mut ws = WsClient::connect(&daemon.ws_url()).await;
    ws.send_text(&Secret::new("other").mint("env", now() + 60))
        .await;
    assert_eq!(
        ws.expect_close().await,
        (1008, TokenError::Signature.to_string())
    );
}

/// An unterminated last line at EOF is answered like any other, `/auth` and refusals
/// included (`printf '/auth SECRET' | nc -N` must print the answer, not nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unterminated_last_line_is_answered_even_when_it_is_auth() {
    let server = TestServer::start_with(pushwire::Config {
        push_secret: Some(Secret::new(PUSH_SECRET)),
        ..pushwire::Config::default()
    })
    .await;
    let secret = PUSH_SECRET;
    for (input, want) in [
        (format!("/auth {secret}"), "{\"ok\":true}\n".to_owned()),
        (
            format!("/auth {secret}\n{{\"uid\":\"nobody\"}}"),
            "{\"ok\":true}\nfail\n".to_owned(),
        ),
        (
            "{\"uid\":\"x\"}".to_owned(),
            "{\"ok\":false,\"error\":\"authentication required: send /auth SECRET first\"}\n"
                .to_owned(),
        ),
        (
            "/auth wrong".to_owned(),
            "{\"ok\":false,\"error\":\"bad secret\"}\n".to_owned(),
        ),
    ] {
        let mut push = PushClient::connect(server.push_addr).await;
        push.send_raw(input.as_bytes()).await;
        push.shutdown_write().await;
        assert_eq!(
            String::from_utf8_lossy(&push.read_to_eof().await),
            want,
            "{input:?}"
        );
    }
}
