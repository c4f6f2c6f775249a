//! The peers people actually use, against the in-process server: the PHP backend snippet
//! and browser JS from the workerman tutorial pushwire replaces (unchanged but for the port),
//! OpenBSD `nc`, `scripts/push`, `scripts/push-example.php`, and headless Chromium.
//!
//! These tests never skip: a missing `php`, `nc` or `chromium` is a failure.
//! `scripts/test.sh` installs them first.
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::chromium::{PageEvent, SeedPage, pushwire_page};
use common::*;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::time::{Instant, timeout};

/// How long one external program may run.
const PROGRAM_DEADLINE: Duration = Duration::from_secs(10);

/// The tutorial's browser code, verbatim; tests substitute only the port.
const SEED_JS: &str = "var ws = new WebSocket('ws://127.0.0.1:1234'); ws.onopen = function(){ var uid = 'uid1'; ws.send(uid); }; ws.onmessage = function(e){ alert(e.data); };";

/// What the seed PHP pushes, as `json_encode` writes it.
const SEED_PAYLOAD: &str = r#"{"uid":"uid1","percent":"88%"}"#;

fn seed_php(push_addr: SocketAddr) -> String {
    let code = SEED_PHP.replace("tcp://127.0.0.1:5678", &format!("tcp://{push_addr}"));
    assert_ne!(code, SEED_PHP, "seed PHP address not substituted");
    code
}

fn seed_js(ws_addr: SocketAddr) -> String {
    let js = SEED_JS.replace(
        "ws://127.0.0.1:1234",
        &format!("ws://127.0.0.1:{}", ws_addr.port()),
    );
    assert_ne!(js, SEED_JS, "seed JS port not substituted");
    js
}

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs `cmd` to completion with `stdin` as its input (10 s deadline), capturing its output
/// (the harness's `run_program`).
async fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    run_program(cmd, stdin, PROGRAM_DEADLINE).await
}

fn stdout_of(out: &Output) -> &str {
    std::str::from_utf8(&out.stdout).expect("stdout is UTF-8")
}

fn describe(out: &Output) -> String {
    format!(
        "status {}, stdout {:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn php(code: &str) -> Output {
    run(Command::new("php").arg("-r").arg(code), b"").await
}

// ---------------------------------------------------------------------------------------
// PHP

#[tokio::test]
async fn seed_php_backend_reaches_bound_browser() {
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("uid1", server.push_addr).await;

    let out = php(&seed_php(server.push_addr)).await;
    assert!(out.status.success(), "php: {}", describe(&out));
    assert_eq!(stdout_of(&out), "ok\n", "php: {}", describe(&out));
    assert_eq!(tab.recv_text().await, SEED_PAYLOAD);
    tab.expect_silence(Duration::from_millis(200)).await;

    tab.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn seed_php_backend_gets_fail_when_nobody_is_bound() {
    let server = TestServer::start().await;
    // A browser bound to someone else must not take uid1's message.
    let mut other = WsClient::connect(&server.ws_url()).await;
    other.bind("uid2", server.push_addr).await;

    let out = php(&seed_php(server.push_addr)).await;
    assert!(out.status.success(), "php: {}", describe(&out));
    assert_eq!(stdout_of(&out), "fail\n", "php: {}", describe(&out));
    other.expect_silence(Duration::from_millis(200)).await;

    other.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn php_integer_uid_reaches_browser_bound_as_its_digits() {
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("123", server.push_addr).await;

    let code = seed_php(server.push_addr).replace("array('uid'=>'uid1',", "array('uid'=>123,");
    assert!(code.contains("'uid'=>123,"), "integer uid not substituted");
    let out = php(&code).await;
    assert_eq!(stdout_of(&out), "ok\n", "php: {}", describe(&out));
    assert_eq!(tab.recv_text().await, r#"{"uid":123,"percent":"88%"}"#);

    tab.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn php_escaped_uid_reaches_browser_bound_as_its_text() {
    // json_encode escapes '/' and non-ASCII by default: the uid is matched after JSON
    // decoding, while the frame keeps PHP's bytes.
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("Zoë/ü", server.push_addr).await;

    let code = seed_php(server.push_addr).replace("array('uid'=>'uid1',", "array('uid'=>'Zoë/ü',");
    assert!(code.contains("'uid'=>'Zoë/ü',"), "uid not substituted");
    let out = php(&code).await;
    assert_eq!(stdout_of(&out), "ok\n", "php: {}", describe(&out));
    assert_eq!(
        tab.recv_text().await,
        r#"{"uid":"Zo\u00eb\/\u00fc","percent":"88%"}"#
    );

    tab.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn push_example_php_script() {
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("uid1", server.push_addr).await;
    let script = repo_path("scripts/push-example.php");
    let addr = format!("tcp://{}", server.push_addr);

    let out = run(Command::new("php").arg(&script).args(["uid1", &addr]), b"").await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout_of(&out), "ok\n", "{}", describe(&out));
    assert_eq!(tab.recv_text().await, SEED_PAYLOAD);

    let out = run(
        Command::new("php").arg(&script).args(["nobody", &addr]),
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(stdout_of(&out), "fail\n", "{}", describe(&out));
    tab.expect_silence(Duration::from_millis(200)).await;

    tab.close().await;
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// nc and scripts/push

async fn nc(push_addr: SocketAddr, stdin: &[u8]) -> Output {
    let port = push_addr.port().to_string();
    run(Command::new("nc").args(["-N", "127.0.0.1", &port]), stdin).await
}

#[tokio::test]
async fn nc_pipes_lines_and_gets_one_reply_each() {
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("uid1", server.push_addr).await;

    let input = concat!(
        "{\"uid\":\"uid1\",\"n\":1}\n",
        "{\"uid\":\"uid1\",\n", // not JSON
        "{\"uid\":\"uid1\",\"n\":\"二 ✓\"}\n",
        "{\"uid\":\"nobody\",\"n\":3}\n",
        "{\"uid\":\"uid1\",\"n\":4}\r\n", // CRLF, as from a Windows backend or telnet
    );
    let out = nc(server.push_addr, input.as_bytes()).await;
    assert!(out.status.success(), "nc: {}", describe(&out));
    assert_eq!(
        stdout_of(&out),
        "ok\nfail\nok\nfail\nok\n",
        "nc: {}",
        describe(&out)
    );
    assert_eq!(tab.recv_text().await, r#"{"uid":"uid1","n":1}"#);
    assert_eq!(tab.recv_text().await, r#"{"uid":"uid1","n":"二 ✓"}"#);
    assert_eq!(tab.recv_text().await, r#"{"uid":"uid1","n":4}"#);

    // `printf ... | nc -N`: the last line has no newline; EOF ends it.
    let out = nc(server.push_addr, br#"{"uid":"uid1","n":5}"#).await;
    assert_eq!(stdout_of(&out), "ok\n", "nc: {}", describe(&out));
    assert_eq!(tab.recv_text().await, r#"{"uid":"uid1","n":5}"#);
    tab.expect_silence(Duration::from_millis(200)).await;

    tab.close().await;
    server.shutdown().await.unwrap();
}

/// Runs `scripts/push ARGS` with only the given `PUSHWIRE_*` variables set.
async fn push_script_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(repo_path("scripts/push"));
    cmd.args(args)
        .env_remove("PUSHWIRE_PUSH_ADDR")
        .env_remove("PUSHWIRE_PUSH_SECRET")
        .envs(env.iter().copied());
    run(&mut cmd, b"").await
}

async fn push_script(args: &[&str], env_addr: Option<SocketAddr>) -> Output {
    match env_addr {
        Some(addr) => push_script_env(args, &[("PUSHWIRE_PUSH_ADDR", &addr.to_string())]).await,
        None => push_script_env(args, &[]).await,
    }
}

#[tokio::test]
async fn push_script_reports_ok_and_fail() {
    let server = TestServer::start().await;
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.bind("uid1", server.push_addr).await;
    let addr = server.push_addr.to_string();

    let out = push_script(&["-a", &addr, r#"{"uid":"uid1","via":"push"}"#], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout_of(&out), "ok\n", "{}", describe(&out));
    assert_eq!(tab.recv_text().await, r#"{"uid":"uid1","via":"push"}"#);

    // The address can come from the environment instead.
    let line = r#"{"uid":"uid1","via":"env"}"#;
    let out = push_script(&[line], Some(server.push_addr)).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout_of(&out), "ok\n", "{}", describe(&out));
    assert_eq!(tab.recv_text().await, line);

    for bad in [r#"{"uid":"nobody"}"#, "not json", r#"{"uid":["uid1"]}"#] {
        let out = push_script(&["-a", &addr, bad], None).await;
        assert_eq!(out.status.code(), Some(1), "{bad}: {}", describe(&out));
        assert_eq!(stdout_of(&out), "fail\n", "{bad}: {}", describe(&out));
    }
    tab.expect_silence(Duration::from_millis(200)).await;

    tab.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn push_script_authenticates_and_runs_commands() {
    let server = TestServer::start_with(pushwire::Config {
        push_secret: Some(pushwire::auth::Secret::new("s3cret")),
        ..pushwire::Config::default()
    })
    .await;
    let addr = server.push_addr.to_string();
    let dir = std::env::temp_dir().join(format!("pushwire-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("push-secret");
    std::fs::write(&secret_file, "s3cret\n").unwrap();
    let secret_file = secret_file.to_str().unwrap();

    // Without the secret the server refuses, and says why.
    let out = push_script(&["-a", &addr, "/ping"], None).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stdout_of(&out).contains("/auth"), "{}", describe(&out));

    // A wrong secret is an error of its own.
    std::fs::write(dir.join("wrong"), "nope").unwrap();
    let wrong = dir.join("wrong");
    let out = push_script(&["-a", &addr, "-S", wrong.to_str().unwrap(), "/ping"], None).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));

    let out = push_script(&["-a", &addr, "-S", secret_file, "/ping"], None).await;
    assert_eq!(stdout_of(&out), "pong\n", "{}", describe(&out));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // The daemon's own variable works too, so sourcing pushwire.env is enough.
    let env = [("PUSHWIRE_PUSH_SECRET", "s3cret")];
    let out = push_script_env(&["-a", &addr, "/ping"], &env).await;
    assert_eq!(stdout_of(&out), "pong\n", "{}", describe(&out));
    let out = push_script_env(&["-a", &addr, r#"{"uid":"nobody"}"#], &env).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(stdout_of(&out), "fail\n", "{}", describe(&out));

    // A browser binds; the authenticated push reaches it.
    let mut tab = WsClient::connect(&server.ws_url()).await;
    tab.send_text("uid1").await;
    let line = r#"{"uid":"uid1","via":"push -S"}"#;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = push_script(&["-a", &addr, "-S", secret_file, line], None).await;
        match (out.status.code(), stdout_of(&out)) {
            (Some(0), "ok\n") => break,
            (Some(1), "fail\n") => {}
            _ => panic!("push -S: {}", describe(&out)),
        }
        assert!(Instant::now() < deadline, "uid1 never bound");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tab.recv_text().await, line);
    tab.close().await;

    let _ = std::fs::remove_dir_all(&dir);
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Headless Chromium

impl SeedPage {
    /// [`SeedPage::launch`] of the seed's JS against `server` on a fresh port, then
    /// [`SeedPage::wait_bound`].
    async fn open_and_bind(server: &TestServer, push: &mut PushClient, first: &str) -> SeedPage {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut page = SeedPage::launch(http, &seed_js(server.ws_addr), &[]);
        page.wait_bound(push, first).await;
        page
    }
}

#[tokio::test]
async fn headless_chromium_runs_the_seed_js() {
    // Short ping timings, so the browser has to answer several pings during the test.
    let server = TestServer::start_with(pushwire::Config {
        ping_interval: Duration::from_millis(200),
        pong_timeout: Duration::from_millis(1500),
        ..pushwire::Config::default()
    })
    .await;
    let mut push = PushClient::connect(server.push_addr).await;
    let first = r#"{"uid":"uid1","percent":"88%","msg":"héllo ✓ 世界 🚀 \"q\" \\ \u2028"}"#;
    let mut page = SeedPage::open_and_bind(&server, &mut push, first).await;

    // Let ping rounds pass for longer than ping interval + pong timeout: Chromium answers
    // pings by itself, so it must still be bound (a silent peer would be dropped by now).
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // The whole tutorial: its PHP backend code pushes to its browser code.
    let out = php(&seed_php(server.push_addr)).await;
    assert_eq!(stdout_of(&out), "ok\n", "php: {}", describe(&out));
    page.expect_alert(SEED_PAYLOAD).await;

    // A large message (several TCP segments, a 64-bit frame length) arrives whole.
    let big = format!(
        r#"{{"uid":"uid1","blob":"{}"}}"#,
        "0123456789abcdé✓".repeat(20_000)
    );
    assert_eq!(push.request(&big).await, "ok\n");
    page.expect_alert(&big).await;

    // Graceful shutdown: the page sees Close 1001 with the reason, and nothing else came.
    server.shutdown().await.unwrap();
    match page.next_event().await {
        PageEvent::Trouble(t) => assert_eq!(t, "websocket closed: 1001 server shutting down"),
        PageEvent::Alert(m) => panic!("unexpected alert: {m:?}"),
    }
}

#[tokio::test]
async fn closing_chromium_unbinds_its_uid() {
    let server = TestServer::start().await;
    let mut push = PushClient::connect(server.push_addr).await;
    let page = SeedPage::open_and_bind(&server, &mut push, r#"{"uid":"uid1","n":1}"#).await;

    // The browser goes away without a closing handshake (killed, like a crashed tab or a
    // laptop lid): the next pushes must say `fail` soon, not `ok` into a dead socket.
    drop(page);
    push_until(
        &mut push,
        r#"{"uid":"uid1","n":2}"#,
        "fail\n",
        Duration::from_secs(5),
    )
    .await;

    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn chromium_origin_is_checked_against_the_allowlist() {
    // Allowed: the page's own origin, as Chromium sends it.
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", http.local_addr().unwrap());
    let server = TestServer::start_with(pushwire::Config {
        allowed_origins: Some(vec!["https://app.example.com".to_owned(), origin]),
        ..pushwire::Config::default()
    })
    .await;
    let mut push = PushClient::connect(server.push_addr).await;
    let mut page = SeedPage::launch(http, &seed_js(server.ws_addr), &[]);
    page.wait_bound(&mut push, r#"{"uid":"uid1","n":1}"#).await;
    drop(page);
    server.shutdown().await.unwrap();

    // Refused: a page from any other origin never opens its WebSocket.
    let server = TestServer::start_with(pushwire::Config {
        allowed_origins: Some(vec!["https://app.example.com".to_owned()]),
        ..pushwire::Config::default()
    })
    .await;
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut page = SeedPage::launch(http, &seed_js(server.ws_addr), &[]);
    match page.next_event().await {
        // A refused handshake is an abnormal closure to the page (the 403 is not exposed).
        PageEvent::Trouble(t) => assert_eq!(t, "websocket closed: 1006 "),
        PageEvent::Alert(m) => panic!("unexpected alert: {m:?}"),
    }
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"uid1","n":2}"#).await, "fail\n");
    drop(page);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn seed_php_backend_over_the_unix_socket() {
    // Started by hand: TestServer has no Unix listener. Only the address in the seed changes.
    let dir = std::env::temp_dir().join(format!("pushwire-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("push.sock");
    let _ = std::fs::remove_file(&sock);
    let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let push = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (ws_addr, push_addr) = (ws.local_addr().unwrap(), push.local_addr().unwrap());
    let listeners = pushwire::Listeners {
        ws,
        push,
        push_unix: Some(tokio::net::UnixListener::bind(&sock).unwrap()),
        http: None,
        gateway: None,
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(pushwire::serve(
        pushwire::Config::default(),
        listeners,
        shutdown.clone(),
    ));

    let mut tab = WsClient::connect(&format!("ws://{ws_addr}/")).await;
    tab.bind("uid1", push_addr).await;
    let code = SEED_PHP.replace(
        "tcp://127.0.0.1:5678",
        &format!("unix://{}", sock.display()),
    );
    let out = php(&code).await;
    assert_eq!(stdout_of(&out), "ok\n", "php: {}", describe(&out));
    assert_eq!(tab.recv_text().await, SEED_PAYLOAD);
    tab.close().await;

    shutdown.cancel();
    timeout(Duration::from_secs(10), server)
        .await
        .expect("server did not stop")
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// pushwire.js (protocol v1) in Chromium

/// pushwire.js against the real daemon: it connects, its acks reach a backend waiting
/// with `ack=`, a kicked connection resumes with nothing lost or doubled, and a daemon
/// restart (a new epoch) is reported as `not_recovered` before it goes on.
#[tokio::test]
async fn chromium_runs_pushwire_js_resumes_after_cuts_and_acks() {
    let (ws_addr, push_addr) = (free_addr(), free_addr());
    let config = pushwire::Config::default;
    let server = TestServer::start_on(config(), ws_addr, push_addr).await;
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut page = SeedPage::launch_html(http, pushwire_page(ws_addr.port(), "js1"), &[]);
    /// The page's next report, as "msg SEQ DATA" or the status line.
    async fn event(page: &mut SeedPage, within: Duration) -> String {
        match page.next_event_within(within).await {
            PageEvent::Alert(m) => format!("msg {m}"),
            PageEvent::Trouble(t) => t,
        }
    }
    let line = |n: u64| format!(r#"{{"uid":"js1","n":{n}}}"#);
    assert_eq!(
        event(&mut page, Duration::from_secs(15)).await,
        "connected new"
    );
    let mut push = PushClient::connect(push_addr).await;
    // Acks seen by the backend: each reply waits until the page's onmessage ran.
    for n in 1..=3 {
        let reply = push
            .request_within(&format!("/push j{n} ack=5000 {}", line(n)), STEP)
            .await;
        assert!(reply.contains(r#""result":"acked","#), "{reply}");
        assert!(reply.contains(r#""acks":1,"#), "{reply}");
        assert_eq!(event(&mut page, STEP).await, format!("msg {n} {}", line(n)));
    }
    // A cut (kick): what is pushed meanwhile is replayed, once, in order.
    assert!(
        push.request("/kick js1")
            .await
            .contains(r#""connections":1"#)
    );
    for n in 4..=6 {
        let reply = push.request(&line(n)).await;
        assert!(reply == "ok\n" || reply == "fail\n", "{reply}");
    }
    assert_eq!(event(&mut page, STEP).await, "connected recovered");
    for n in 4..=6 {
        assert_eq!(event(&mut page, STEP).await, format!("msg {n} {}", line(n)));
    }
    let reply = push
        .request(&format!("/push j7 ack=5000 {}", line(7)))
        .await;
    assert!(reply.contains(r#""result":"acked","#), "{reply}");
    assert_eq!(event(&mut page, STEP).await, format!("msg 7 {}", line(7)));
    // The daemon restarts: a new history, so the page is told it was not recovered.
    drop(push);
    server.shutdown().await.unwrap();
    let server = TestServer::start_on(config(), ws_addr, push_addr).await;
    assert_eq!(event(&mut page, STEP).await, "not_recovered not_recovered");
    assert_eq!(event(&mut page, STEP).await, "connected not_recovered");
    let mut push = PushClient::connect(push_addr).await;
    let reply = push
        .request(&format!("/push j8 ack=5000 {}", line(8)))
        .await;
    assert!(reply.contains(r#""result":"acked","#), "{reply}");
    assert_eq!(event(&mut page, STEP).await, format!("msg 1 {}", line(8)));
    // Nothing else: no duplicate, no stray status.
    assert!(
        !page.reports_within(Duration::from_millis(300)).await,
        "an unexpected report"
    );
    drop(page);
    server.shutdown().await.unwrap();
}
