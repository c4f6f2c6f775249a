//! The peers people actually use, against the in-process server: the PHP backend snippet
//! and browser JS from the workerman tutorial pushwire replaces (unchanged but for the port),
//! OpenBSD `nc`, `scripts/push`, `scripts/push-example.php`, and headless Chromium.
//!
//! These tests never skip: a missing `php`, `nc` or `chromium` is a failure.
//! `scripts/test.sh` installs them first.
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
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

/// What the page reports to the test's HTTP listener.
#[derive(Debug)]
enum PageEvent {
    /// `alert(m)` was called (the seed's onmessage handler).
    Alert(String),
    /// The WebSocket closed (code and reason), or a script error happened.
    Trouble(String),
}

/// The page Chromium loads: reporting hooks first, then the seed's script as it is.
///
/// `alert` is replaced by a POST of its argument to this same origin (no CORS involved), so
/// the bytes the test sees are exactly the string the page got. `var ws` of the seed is a
/// global, which lets a later script report a close for diagnostics.
fn page_html(ws_addr: SocketAddr) -> String {
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>pushwire seed page</title>
<script>
function report(path, text) {{ fetch(path, {{ method: 'POST', body: String(text) }}); }}
window.alert = function (m) {{ report('/alert', m); }};
window.addEventListener('error', function (e) {{ report('/trouble', 'script error: ' + e.message); }});
</script>
<script>{seed}</script>
<script>
ws.addEventListener('close', function (e) {{ report('/trouble', 'websocket closed: ' + e.code + ' ' + e.reason); }});
</script>
</head><body>pushwire</body></html>
"#,
        seed = seed_js(ws_addr)
    )
}

/// A tiny HTTP/1.1 server: `GET /` serves `html`, `POST /alert` and `POST /trouble` forward
/// their body to `events`, anything else is 404. One request per connection.
async fn serve_page(listener: TcpListener, html: String, events: mpsc::UnboundedSender<PageEvent>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let html = html.clone();
        let events = events.clone();
        tokio::spawn(async move {
            let _ = timeout(Duration::from_secs(5), handle_http(tcp, &html, &events)).await;
        });
    }
}

async fn handle_http(
    mut tcp: TcpStream,
    html: &str,
    events: &mpsc::UnboundedSender<PageEvent>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut request_line = head.lines().next().unwrap_or("").split(' ');
    let (method, path) = (
        request_line.next().unwrap_or(""),
        request_line.next().unwrap_or(""),
    );
    let content_length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < content_length {
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&body).into_owned();

    let response = match (method, path) {
        ("GET", "/") => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n{html}",
            html.len()
        ),
        ("POST", "/alert" | "/trouble") => {
            let event = if path == "/alert" {
                PageEvent::Alert(body)
            } else {
                PageEvent::Trouble(body)
            };
            let _ = events.send(event);
            "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_owned()
        }
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
    };
    tcp.write_all(response.as_bytes()).await?;
    tcp.shutdown().await
}

/// Headless Chromium in its own process group with a fresh profile; dropping it kills the
/// whole group (browser, zygotes, renderers) and removes the profile.
struct Browser {
    child: Child,
    dir: PathBuf,
}

impl Browser {
    fn launch(url: &str) -> Browser {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pushwire-chromium-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("profile")).expect("create chromium profile dir");
        let log = std::fs::File::create(dir.join("chromium.log")).expect("create chromium log");
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("cannot start chromium: {e} (scripts/test.sh installs it)")
            });
        Browser { child, dir }
    }

    /// The end of Chromium's stderr, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("chromium.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Panics if the browser has already exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "chromium exited early ({status}); its log ends:\n{}",
                self.log_tail()
            );
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // The browser leads its own group: take its helpers down with it.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Chromium showing the seed page, plus what the test needs to watch it.
struct SeedPage {
    browser: Browser,
    events: mpsc::UnboundedReceiver<PageEvent>,
    http: tokio::task::JoinHandle<()>,
}

impl SeedPage {
    /// Serves the seed page (connecting to `ws_addr`) on `http` and starts Chromium on it.
    /// The page is served from `http://<http's address>/`, which is its Origin.
    fn launch(http: TcpListener, ws_addr: SocketAddr) -> SeedPage {
        let page_url = format!("http://{}/", http.local_addr().unwrap());
        let (events_tx, events) = mpsc::unbounded_channel();
        let http = tokio::spawn(serve_page(http, page_html(ws_addr), events_tx));
        SeedPage {
            browser: Browser::launch(&page_url),
            events,
            http,
        }
    }

    /// Pushes `first` on `push` until a browser took it (the page binds asynchronously:
    /// browser start, page load, handshake, `ws.send(uid)`; before that every push answers
    /// `fail`), then checks the page alerted exactly `first`, once.
    async fn wait_bound(&mut self, push: &mut PushClient, first: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            self.browser.assert_running();
            if let Ok(PageEvent::Trouble(t)) = self.events.try_recv() {
                panic!("page trouble before binding: {t}");
            }
            match push.request(first).await.as_str() {
                "ok\n" => break,
                "fail\n" => {}
                other => panic!("push reply {other:?}"),
            }
            assert!(
                Instant::now() < deadline,
                "the page never bound uid1 within 15 s; chromium log ends:\n{}",
                self.browser.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Exactly one push was taken, so exactly one alert, with the payload byte for byte.
        self.expect_alert(first).await;
    }

    /// [`SeedPage::launch`] on a fresh port, then [`SeedPage::wait_bound`].
    async fn open_and_bind(server: &TestServer, push: &mut PushClient, first: &str) -> SeedPage {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut page = SeedPage::launch(http, server.ws_addr);
        page.wait_bound(push, first).await;
        page
    }

    /// The page's next report (5 s deadline).
    async fn next_event(&mut self) -> PageEvent {
        timeout(Duration::from_secs(5), self.events.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "page reported nothing within 5 s; chromium log ends:\n{}",
                    self.browser.log_tail()
                )
            })
            .expect("page server ended")
    }

    async fn expect_alert(&mut self, want: &str) {
        match self.next_event().await {
            PageEvent::Alert(m) => assert_eq!(m, want, "alert text"),
            PageEvent::Trouble(t) => panic!("page trouble instead of an alert: {t}"),
        }
    }
}

impl Drop for SeedPage {
    fn drop(&mut self) {
        self.http.abort();
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
    let mut page = SeedPage::launch(http, server.ws_addr);
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
    let mut page = SeedPage::launch(http, server.ws_addr);
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

/// A page that loads `pushwire.js` from the daemon itself (`GET /pushwire.js` on the
/// browser port) and reports, in order (each report waits for the previous one), every
/// message as `/alert` "SEQ DATA" and every status but `reconnecting` (whose count
/// depends on timing) as `/trouble` "STATUS KIND".
fn pushwire_page(ws_addr: SocketAddr) -> String {
    let port = ws_addr.port();
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>pushwire.js</title>
<script>
var chain = Promise.resolve();
function report(path, text) {{
  chain = chain.then(function () {{ return fetch(path, {{ method: 'POST', body: String(text) }}); }})
               .catch(function () {{}});
}}
window.addEventListener('error', function (e) {{ report('/trouble', 'script error: ' + e.message); }});
</script>
<script src="http://127.0.0.1:{port}/pushwire.js"></script>
<script>
var pw = new Pushwire('ws://127.0.0.1:{port}/', {{ uid: 'js1', minDelay: 50, maxDelay: 400 }});
pw.onmessage = function (data, meta) {{ report('/alert', meta.seq + ' ' + data); }};
pw.onstatus = function (status, d) {{
  if (status !== 'reconnecting') report('/trouble', status + ' ' + d.status);
}};
</script>
</head><body>pushwire.js</body></html>
"#
    )
}

/// pushwire.js against the real daemon: it connects, its acks reach a backend waiting
/// with `ack=`, a kicked connection resumes with nothing lost or doubled, and a daemon
/// restart (a new epoch) is reported as `not_recovered` before it goes on.
#[tokio::test]
async fn chromium_runs_pushwire_js_resumes_after_cuts_and_acks() {
    let (ws_addr, push_addr) = (free_addr(), free_addr());
    let config = pushwire::Config::default;
    let server = TestServer::start_on(config(), ws_addr, push_addr).await;
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_url = format!("http://{}/", http.local_addr().unwrap());
    let (tx, mut events) = mpsc::unbounded_channel();
    let page_server = tokio::spawn(serve_page(http, pushwire_page(ws_addr), tx));
    let mut browser = Browser::launch(&page_url);
    /// The page's next report, as "msg SEQ DATA" or the status line.
    async fn event(
        events: &mut mpsc::UnboundedReceiver<PageEvent>,
        browser: &mut Browser,
        within: Duration,
    ) -> String {
        browser.assert_running();
        match timeout(within, events.recv()).await {
            Ok(Some(PageEvent::Alert(m))) => format!("msg {m}"),
            Ok(Some(PageEvent::Trouble(t))) => t,
            Ok(None) => panic!("page server ended"),
            Err(_) => panic!(
                "page reported nothing within {within:?}; chromium log ends:\n{}",
                browser.log_tail()
            ),
        }
    }
    let line = |n: u64| format!(r#"{{"uid":"js1","n":{n}}}"#);
    assert_eq!(
        event(&mut events, &mut browser, Duration::from_secs(15)).await,
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
        assert_eq!(
            event(&mut events, &mut browser, STEP).await,
            format!("msg {n} {}", line(n))
        );
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
    assert_eq!(
        event(&mut events, &mut browser, STEP).await,
        "connected recovered"
    );
    for n in 4..=6 {
        assert_eq!(
            event(&mut events, &mut browser, STEP).await,
            format!("msg {n} {}", line(n))
        );
    }
    let reply = push
        .request(&format!("/push j7 ack=5000 {}", line(7)))
        .await;
    assert!(reply.contains(r#""result":"acked","#), "{reply}");
    assert_eq!(
        event(&mut events, &mut browser, STEP).await,
        format!("msg 7 {}", line(7))
    );
    // The daemon restarts: a new history, so the page is told it was not recovered.
    drop(push);
    server.shutdown().await.unwrap();
    let server = TestServer::start_on(config(), ws_addr, push_addr).await;
    assert_eq!(
        event(&mut events, &mut browser, STEP).await,
        "not_recovered not_recovered"
    );
    assert_eq!(
        event(&mut events, &mut browser, STEP).await,
        "connected not_recovered"
    );
    let mut push = PushClient::connect(push_addr).await;
    let reply = push
        .request(&format!("/push j8 ack=5000 {}", line(8)))
        .await;
    assert!(reply.contains(r#""result":"acked","#), "{reply}");
    assert_eq!(
        event(&mut events, &mut browser, STEP).await,
        format!("msg 1 {}", line(8))
    );
    // Nothing else: no duplicate, no stray status.
    assert!(
        timeout(Duration::from_millis(300), events.recv())
            .await
            .is_err(),
        "an unexpected report"
    );
    page_server.abort();
    drop(browser);
    server.shutdown().await.unwrap();
}
