//! The HTTP door (`src/doors/http.rs`) over real sockets against the real server in-process,
//! with Debian's curl as the client (a raw TCP client where curl cannot misbehave the
//! way a test needs): `POST /push` against what the TCP push port answers for the same
//! bytes, web-msg-sender's `/?type=publish` against PHP's own `htmlspecialchars`, every
//! refusal with its status and body, the connection limit, the health endpoints, and
//! `/metrics` read by Prometheus's own parser (`promtool check metrics`).
//!
//! These tests never skip: a missing `curl`, `php` or `promtool` is a failure
//! (`scripts/test.sh` installs them).

mod common;
use common::*;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use pushwire::auth::Secret;
use pushwire::metrics::{Kind, Metric};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::time::{Instant, timeout};

const SECRET: &str = "s3cret door";

/// Long enough for an answer that is wrongly on its way to arrive.
const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// What curl got: the final status line's code, its head, and the body as sent.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or_else(|e| panic!("{self:?}: {e}"))
    }

    /// A response header (case-insensitive name).
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// Asserts the status and the whole body.
    fn expect(&self, status: u16, body: &str) {
        assert_eq!(
            (self.status, self.text()),
            (status, body),
            "head:\n{}",
            self.head
        );
    }
}

/// `curl -sS -i ARGS` with `stdin`; panics (with curl's stderr) unless curl exits 0.
async fn curl_stdin(args: &[&str], stdin: &[u8]) -> Reply {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time", "20"]).args(args);
    let out = run_program(&mut cmd, stdin, Duration::from_secs(30)).await;
    assert!(
        out.status.success(),
        "curl {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_curl(&out.stdout, args)
}

/// `curl -sS -i ARGS`.
async fn curl(args: &[&str]) -> Reply {
    curl_stdin(args, b"").await
}

/// Splits `curl -i` output into its last head (after any `100 Continue`) and the body.
fn parse_curl(out: &[u8], args: &[&str]) -> Reply {
    let mut rest = out;
    loop {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "curl {args:?}: no response head in {:?}",
                    String::from_utf8_lossy(out)
                )
            });
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("curl {args:?}: bad status line in {head:?}"));
        rest = &rest[end + 4..];
        if !(100..200).contains(&status) {
            return Reply {
                status,
                head,
                body: rest.to_vec(),
            };
        }
    }
}

/// An HTTP/1.1 client over a raw TCP socket, for what curl will not do: stall, hold a
/// keep-alive connection idle, send requests on a connection it keeps.
struct RawHttp {
    stream: BufReader<TcpStream>,
}

impl RawHttp {
    async fn connect(addr: SocketAddr) -> RawHttp {
        let tcp = timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("http connect timed out")
            .expect("http connect");
        tcp.set_nodelay(true).unwrap();
        RawHttp {
            stream: BufReader::new(tcp),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        timeout(STEP, self.stream.get_mut().write_all(bytes))
            .await
            .expect("http write timed out")
            .expect("http write");
    }

    /// Sends a request with `body` and reads its response.
    async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Reply {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: pushwire\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        self.send(&req).await;
        self.response(STEP)
            .await
            .unwrap_or_else(|| panic!("{method} {path}: connection closed without a response"))
    }

    async fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, b"").await
    }

    /// The next response (within `d`), or None if the connection closed first.
    async fn response(&mut self, d: Duration) -> Option<Reply> {
        let read = async {
            let mut head = String::new();
            loop {
                let mut line = String::new();
                match self.stream.read_line(&mut line).await {
                    Ok(0) | Err(_) if head.is_empty() => return None,
                    Ok(0) | Err(_) => panic!("connection closed inside a head: {head:?}"),
                    Ok(_) => {}
                }
                if line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            self.stream.read_exact(&mut body).await.ok()?;
            Some(Reply {
                status,
                head: head.trim_end().to_owned(),
                body,
            })
        };
        timeout(d, read)
            .await
            .unwrap_or_else(|_| panic!("no response (or close) within {d:?}"))
    }

    /// True if the server closes the connection within `d` (EOF or reset, nothing sent).
    async fn closed_within(&mut self, d: Duration) -> bool {
        let mut byte = [0u8; 1];
        match timeout(d, self.stream.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => true,
            Ok(Ok(_)) => panic!("expected a close, got data"),
            Err(_) => false,
        }
    }
}

/// What the TCP push port answers for `body` sent as it is, then a half-close.
async fn tcp_replies(push: SocketAddr, body: &[u8]) -> Vec<u8> {
    let mut c = PushClient::connect(push).await;
    c.send_raw(body).await;
    c.shutdown_write().await;
    c.read_to_eof().await
}

async fn browser(server: &TestServer, uid: &str) -> WsClient {
    let mut ws = WsClient::connect(&server.ws_url()).await;
    ws.bind(uid, server.push_addr).await;
    ws
}

fn config() -> pushwire::Config {
    pushwire::Config::default()
}

fn with_secret() -> pushwire::Config {
    pushwire::Config {
        push_secret: Some(Secret::new(SECRET)),
        ..config()
    }
}

// ---------------------------------------------------------------------------------------
// POST /push
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn post_push_one_line_prints_ok_and_the_browser_gets_it_byte_exact() {
    let server = TestServer::start_http(config()).await;
    let mut tab = browser(&server, "u1").await;
    let line = r#"{"uid":"u1","msg":"héllo \"wörld\" <b>&amp;</b> \\ 🎉"}"#;
    let r = curl(&["--data-binary", line, &server.http_url("/push")]).await;
    r.expect(200, "ok\n");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{}",
        r.head
    );
    assert_eq!(tab.recv_text().await, line);
    // Nobody there: fail, and nothing arrives.
    let r = curl(&[
        "--data-binary",
        r#"{"uid":"nobody"}"#,
        &server.http_url("/push"),
    ])
    .await;
    r.expect(200, "fail\n");
    tab.expect_silence(QUIET).await;
}

/// Many lines in one body: the reply lines, in order, are exactly what the TCP port gives
/// for the same bytes (and what docs/http.md says), the browser gets every delivered
/// payload byte-exact and in order, and an unterminated last line is answered too.
#[tokio::test]
async fn post_push_many_lines_answer_exactly_as_the_tcp_port() {
    // The same body goes through both doors, `/push 7` and its line included: with
    // retries remembered, the second would answer `duplicate` (tests/history.rs).
    let server = TestServer::start_http(pushwire::Config {
        dedupe_window: None,
        ..config()
    })
    .await;
    let mut tab = browser(&server, "u1").await;
    let body = concat!(
        "{\"uid\":\"u1\",\"n\":1,\"text\":\"h\u{e9}llo \\\"1\\\"\"}\n",
        "{\"uid\":\"nobody\"}\n",
        "not json\n",
        "\n",
        "{\"uid\":\"u1\",\"n\":2}\r\n",
        "/ping\n",
        "/online u1\n",
        "/push 7 {\"uid\":\"u1\",\"n\":3}\n",
        "/send [\"u1\",\"nobody\"] {\"n\":4}\n",
        "/count\n",
        "/bogus\n",
        "{\"uid\":\"u1\",\"n\":5}",
    );
    let expected_frames = [
        "{\"uid\":\"u1\",\"n\":1,\"text\":\"h\u{e9}llo \\\"1\\\"\"}",
        "{\"uid\":\"u1\",\"n\":2}",
        "{\"uid\":\"u1\",\"n\":3}",
        "{\"n\":4}",
        "{\"uid\":\"u1\",\"n\":5}",
    ];

    let tcp = tcp_replies(server.push_addr, body.as_bytes()).await;
    for frame in expected_frames {
        assert_eq!(tab.recv_text().await, frame, "over TCP");
    }
    let url = server.http_url("/push");
    let http = curl_stdin(&["--data-binary", "@-", &url], body.as_bytes()).await;
    assert_eq!(http.status, 200, "{}", http.head);
    for frame in expected_frames {
        assert_eq!(tab.recv_text().await, frame, "over HTTP");
    }
    tab.expect_silence(QUIET).await;

    assert_eq!(
        String::from_utf8_lossy(&http.body),
        String::from_utf8_lossy(&tcp),
        "HTTP and TCP replies differ"
    );
    let lines: Vec<&str> = http.text().split_inclusive('\n').collect();
    assert_eq!(lines.len(), 12, "{lines:?}");
    let bogus = lines[10];
    assert!(
        bogus.starts_with("{\"ok\":false,\"error\":") && bogus.ends_with("}\n"),
        "{bogus:?}"
    );
    let want = [
        "ok\n",
        "fail\n",
        "fail\n",
        "fail\n",
        "ok\n",
        "pong\n",
        "{\"ok\":true,\"uid\":\"u1\",\"online\":true,\"connections\":1}\n",
        "{\"ok\":true,\"result\":\"delivered\",\"connections\":1,\"refused\":0,\"id\":\"7\"}\n",
        "{\"ok\":true,\"uids\":2,\"reached\":1,\"connections\":1,\"refused\":0}\n",
        "{\"ok\":true,\"uids\":1,\"connections\":1,\"groups\":0}\n",
        bogus,
        "ok\n",
    ];
    assert_eq!(lines, want);
}

#[tokio::test]
async fn post_push_commands_and_an_unterminated_line() {
    let server = TestServer::start_http(config()).await;
    let url = server.http_url("/push");
    let r = curl(&["--data-binary", "/count", &url]).await;
    r.expect(
        200,
        "{\"ok\":true,\"uids\":0,\"connections\":0,\"groups\":0}\n",
    );
    let mut a = browser(&server, "a").await;
    let mut b = browser(&server, "b").await;
    let r = curl(&["--data-binary", "/send [\"a\",\"b\",\"c\"] hi there", &url]).await;
    r.expect(
        200,
        "{\"ok\":true,\"uids\":3,\"reached\":2,\"connections\":2,\"refused\":0}\n",
    );
    assert_eq!(a.recv_text().await, "hi there");
    assert_eq!(b.recv_text().await, "hi there");
    let r = curl(&["--data-binary", "/count\n/ping", &url]).await;
    r.expect(
        200,
        "{\"ok\":true,\"uids\":2,\"connections\":2,\"groups\":0}\npong\n",
    );
    // An empty body is no line at all.
    curl(&["--data-binary", "", &url]).await.expect(200, "");
}

/// `/auth` in a body is answered `{"ok":true}` whatever it says: the request was
/// authorized by its header (or needs nothing), and the lines after it run.
#[tokio::test]
async fn auth_lines_in_a_body_answer_ok() {
    for secret in [false, true] {
        let cfg = if secret { with_secret() } else { config() };
        let server = TestServer::start_http(cfg).await;
        let mut tab = browser_with(&server, "u1", secret).await;
        let bearer = format!("Authorization: Bearer {SECRET}");
        let body = "/auth whatever\n{\"uid\":\"u1\",\"n\":1}\n/auth hunter2\n/ping\n";
        let r = curl(&[
            "-H",
            &bearer,
            "--data-binary",
            body,
            &server.http_url("/push"),
        ])
        .await;
        r.expect(200, "{\"ok\":true}\nok\n{\"ok\":true}\npong\n");
        assert_eq!(tab.recv_text().await, "{\"uid\":\"u1\",\"n\":1}");
    }
}

/// A browser bound through a push port that may need `/auth`.
async fn browser_with(server: &TestServer, uid: &str, secret: bool) -> WsClient {
    if !secret {
        return browser(server, uid).await;
    }
    let mut ws = WsClient::connect(&server.ws_url()).await;
    ws.send_text(uid).await;
    // Bound once a push through the HTTP door reaches it.
    let probe = format!("{{\"uid\":{},\"probe\":\"http\"}}", json!(uid));
    let bearer = format!("Authorization: Bearer {SECRET}");
    let deadline = Instant::now() + STEP;
    loop {
        let r = curl(&[
            "-H",
            &bearer,
            "--data-binary",
            &probe,
            &server.http_url("/push"),
        ])
        .await;
        if r.text() == "ok\n" {
            break;
        }
        assert!(Instant::now() < deadline, "{uid} not bound: {r:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ws.recv_text().await, probe);
    ws
}

// ---------------------------------------------------------------------------------------
// web-msg-sender's API
// ---------------------------------------------------------------------------------------

/// What PHP's `htmlspecialchars` (web-msg-sender's escaping) makes of `s`, from php-cli.
async fn htmlspecialchars(s: &str) -> String {
    let out = php(&["-r", "echo htmlspecialchars($argv[1]);", "--", s]).await;
    String::from_utf8(out).expect("php output is UTF-8")
}

/// php-cli with `args`; its stdout, once it exited 0.
async fn php(args: &[&str]) -> Vec<u8> {
    let mut cmd = Command::new("php");
    cmd.args(args);
    let out = run_program(&mut cmd, b"", Duration::from_secs(20)).await;
    assert!(
        out.status.success(),
        "php: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Content with everything `htmlspecialchars` escapes, and what a form encodes.
const CONTENT: &str = "<script>alert(\"x\")</script> & 'q' &amp; é + 100% ☃";

#[tokio::test]
async fn web_msg_sender_publish_by_get_and_by_form() {
    let server = TestServer::start_http(config()).await;
    let mut u1 = browser(&server, "u1").await;
    let mut u2 = browser(&server, "123").await;
    let escaped = htmlspecialchars(CONTENT).await;
    assert!(escaped.contains("&lt;script&gt;") && escaped.contains("&#039;q&#039;"));
    let root = server.http_url("/");
    let content = format!("content={CONTENT}");

    // GET with a query string: exactly `ok`, as web-msg-sender answers.
    let r = curl(&[
        "-G",
        "-d",
        "type=publish",
        "-d",
        "to=u1",
        "--data-urlencode",
        &content,
        &root,
    ])
    .await;
    r.expect(200, "ok");
    assert_eq!(u1.recv_text().await, escaped);
    // A form POST (`curl -d`, application/x-www-form-urlencoded), to a numeric uid.
    let r = curl(&[
        "-d",
        "type=publish",
        "-d",
        "to=123",
        "--data-urlencode",
        &content,
        &root,
    ])
    .await;
    r.expect(200, "ok");
    assert_eq!(u2.recv_text().await, escaped);
    // Nobody under that uid: `offline`, nothing delivered.
    let r = curl(&[
        "-d",
        "type=publish",
        "-d",
        "to=nobody",
        "-d",
        "content=x",
        &root,
    ])
    .await;
    r.expect(200, "offline");
    // Not a publish request: `fail`.
    curl(&["-d", "type=subscribe", "-d", "to=u1", &root])
        .await
        .expect(200, "fail");
    curl(&[&root]).await.expect(200, "fail");
    u1.expect_silence(QUIET).await;
    u2.expect_silence(QUIET).await;

    // No `to`: every bound browser, escaped too.
    let r = curl(&["-d", "type=publish", "--data-urlencode", &content, &root]).await;
    r.expect(200, "ok");
    assert_eq!(u1.recv_text().await, escaped);
    assert_eq!(u2.recv_text().await, escaped);

    // The form wins over the query string, whole (`$_POST ? $_POST : $_GET`): a form
    // without `type` is not a publish request, even with `type=publish` in the URL.
    let url = format!("{root}?type=publish&to=u1&content=from+query");
    let r = curl(&[
        "-d",
        "type=publish",
        "-d",
        "to=123",
        "-d",
        "content=form",
        &url,
    ])
    .await;
    r.expect(200, "ok");
    assert_eq!(u2.recv_text().await, "form");
    let r = curl(&["-d", "to=123", "-d", "content=form", &url]).await;
    r.expect(200, "fail");
    u1.expect_silence(QUIET).await;
    u2.expect_silence(QUIET).await;
}

/// The seed's own PHP backend code for web-msg-sender (seed 002): PHP's curl with
/// `CURLOPT_POSTFIELDS` as an array, which posts `multipart/form-data`, and
/// `var_export` of the answer.
#[tokio::test]
async fn seed_002_php_curl_backend_publishes() {
    let server = TestServer::start_http(config()).await;
    let mut tab = browser(&server, "123").await;
    let code = format!(
        r#"$to_uid = "123";
$push_api_url = "{url}";
$post_data = array("type" => "publish", "content" => "data <b>\"x\"</b>", "to" => $to_uid);
$ch = curl_init();
curl_setopt($ch, CURLOPT_URL, $push_api_url);
curl_setopt($ch, CURLOPT_POST, 1);
curl_setopt($ch, CURLOPT_HEADER, 0);
curl_setopt($ch, CURLOPT_RETURNTRANSFER, 1);
curl_setopt($ch, CURLOPT_POSTFIELDS, $post_data);
curl_setopt($ch, CURLOPT_HTTPHEADER, array("Expect:"));
$return = curl_exec($ch);
curl_close($ch);
var_export($return);"#,
        url = server.http_url("/")
    );
    let out = php(&["-r", &code]).await;
    assert_eq!(String::from_utf8_lossy(&out), "'ok'");
    assert_eq!(
        tab.recv_text().await,
        "data &lt;b&gt;&quot;x&quot;&lt;/b&gt;"
    );
}

// ---------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------

/// `--push-allow`: a source outside the list gets 403 on every path, health checks
/// included; one inside is served. (Both from loopback: 127.0.0.2 is allowed, 127.0.0.1
/// is not.)
#[tokio::test]
async fn addresses_outside_push_allow_get_403() {
    let server = TestServer::start_http(pushwire::Config {
        push_allow: Some(pushwire::access::parse_cidrs("10.0.0.0/8,127.0.0.2/32").unwrap()),
        ..config()
    })
    .await;
    for path in ["/push", "/healthz", "/readyz", "/metrics", "/", "/nope"] {
        let r = curl(&["--interface", "127.0.0.1", &server.http_url(path)]).await;
        r.expect(403, "address not allowed\n");
    }
    let r = curl(&[
        "--interface",
        "127.0.0.2",
        "--data-binary",
        "/ping",
        &server.http_url("/push"),
    ])
    .await;
    r.expect(200, "pong\n");
    let text = scrape_from(&server, "127.0.0.2", &[]).await;
    assert_refused(&text, 403, 6.0);
}

/// With a push secret every request but the health checks needs the bearer token.
#[tokio::test]
async fn a_push_secret_needs_the_bearer_token_except_for_health_checks() {
    let server = TestServer::start_http(with_secret()).await;
    let push = server.http_url("/push");
    let need = "authentication required: send Authorization: Bearer SECRET\n";
    for path in ["/push", "/metrics", "/", "/nope"] {
        let r = curl(&["--data-binary", "/ping", &server.http_url(path)]).await;
        r.expect(401, need);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{}", r.head);
    }
    for wrong in [
        "Bearer nope",
        "Bearer s3cret",
        "Basic czNjcmV0IGRvb3I=",
        "Bearer",
    ] {
        let h = format!("Authorization: {wrong}");
        let r = curl(&["-H", &h, "--data-binary", "/ping", &push]).await;
        assert_eq!(r.status, 401, "{wrong}: {r:?}");
    }
    let r = curl(&[
        "-H",
        "Authorization: Bearer nope",
        "--data-binary",
        "/ping",
        &push,
    ])
    .await;
    r.expect(401, "bad secret\n");
    // The scheme is case-insensitive (RFC 9110 §11.1).
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let h = format!("Authorization: {scheme} {SECRET}");
        let r = curl(&["-H", &h, "--data-binary", "/ping", &push]).await;
        r.expect(200, "pong\n");
    }
    curl(&[&server.http_url("/healthz")])
        .await
        .expect(200, "ok\n");
    curl(&[&server.http_url("/readyz")])
        .await
        .expect(200, "ready\n");
    let text = scrape_from(
        &server,
        "127.0.0.1",
        &["-H", &format!("Authorization: Bearer {SECRET}")],
    )
    .await;
    assert_refused(&text, 401, 9.0);
}

#[tokio::test]
async fn unknown_paths_get_404_and_wrong_methods_405() {
    let server = TestServer::start_http(config()).await;
    for path in ["/nope", "/push/", "/metrics.txt", "//push"] {
        curl(&[&server.http_url(path)])
            .await
            .expect(404, "not found\n");
    }
    for (method, path, allow) in [
        ("GET", "/push", "POST"),
        ("PUT", "/push", "POST"),
        ("POST", "/metrics", "GET, HEAD"),
        ("DELETE", "/healthz", "GET, HEAD"),
        ("POST", "/readyz", "GET, HEAD"),
        ("PUT", "/", "GET, POST"),
    ] {
        let r = curl(&["-X", method, &server.http_url(path)]).await;
        r.expect(405, "method not allowed\n");
        assert_eq!(
            r.header("allow"),
            Some(allow),
            "{method} {path}: {}",
            r.head
        );
    }
}

/// A body over `http_max_body_bytes` gets 413 and runs none of its lines; one at the
/// limit is served.
#[tokio::test]
async fn a_body_over_the_limit_gets_413_and_runs_nothing() {
    let server = TestServer::start_http(pushwire::Config {
        http_max_body_bytes: 1000,
        ..config()
    })
    .await;
    let mut tab = browser(&server, "u1").await;
    let url = server.http_url("/push");
    let line = |len: usize| {
        let mut l = r#"{"uid":"u1","pad":""}"#.to_owned();
        l.insert_str(19, &"x".repeat(len - l.len() - 1));
        l.push('\n');
        assert_eq!(l.len(), len);
        l
    };
    let at_limit = line(1000);
    curl_stdin(&["--data-binary", "@-", &url], at_limit.as_bytes())
        .await
        .expect(200, "ok\n");
    assert_eq!(tab.recv_text().await, at_limit.trim_end());
    let over = line(1001);
    curl_stdin(&["--data-binary", "@-", &url], over.as_bytes())
        .await
        .expect(413, "body larger than 1000 bytes\n");
    // Much larger, and with the length unknown up front (chunked): the same.
    let big = line(1000).repeat(300);
    curl_stdin(&["--data-binary", "@-", &url], big.as_bytes())
        .await
        .expect(413, "body larger than 1000 bytes\n");
    curl_stdin(
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "@-",
            &url,
        ],
        big.as_bytes(),
    )
    .await
    .expect(413, "body larger than 1000 bytes\n");
    // web-msg-sender's form is a body too.
    let form = format!("type=publish&to=u1&content={}", "y".repeat(1000));
    curl(&["--data-binary", &form, &server.http_url("/")])
        .await
        .expect(413, "body larger than 1000 bytes\n");
    tab.expect_silence(QUIET).await;
}

/// A body that does not complete within `http_request_timeout` gets 408 and runs
/// nothing; a head that never completes gets the connection closed (nothing to answer
/// yet), as does a keep-alive connection left idle, so idle clients cannot hold the
/// connection slots.
#[tokio::test]
async fn a_stalled_request_gets_408_and_an_idle_connection_is_closed() {
    const TIMEOUT: Duration = Duration::from_millis(400);
    let server = TestServer::start_http(pushwire::Config {
        http_request_timeout: TIMEOUT,
        ..config()
    })
    .await;
    let mut tab = browser(&server, "u1").await;
    let addr = server.http_addr.unwrap();

    let mut c = RawHttp::connect(addr).await;
    let started = Instant::now();
    c.send(b"POST /push HTTP/1.1\r\nHost: pushwire\r\nContent-Length: 100\r\n\r\n{\"uid\":\"u1\",\"n\":1}\n{\"uid\"")
        .await;
    let r = c.response(STEP).await.expect("a 408 response");
    let took = started.elapsed();
    r.expect(408, "request timeout\n");
    assert!(
        took >= TIMEOUT && took < TIMEOUT + Duration::from_secs(2),
        "408 after {took:?}"
    );
    assert!(c.closed_within(STEP).await, "connection kept after a 408");
    // The complete line in the stalled body was not run.
    tab.expect_silence(QUIET).await;

    for partial in [&b""[..], b"GET /healthz HTTP/1.1\r\nHost: pushw"] {
        let mut c = RawHttp::connect(addr).await;
        c.send(partial).await;
        let started = Instant::now();
        assert!(
            c.closed_within(TIMEOUT + Duration::from_secs(2)).await,
            "{partial:?}: still open after {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() >= TIMEOUT - Duration::from_millis(50));
    }
    // A keep-alive connection after a request: the same.
    let mut c = RawHttp::connect(addr).await;
    c.get("/healthz").await.expect(200, "ok\n");
    assert!(c.closed_within(TIMEOUT + Duration::from_secs(2)).await);
}

/// hyper refuses a request head over `http_max_header_bytes` itself: 431, with an empty
/// body, and the connection closed. One under the limit is served.
#[tokio::test]
async fn a_head_over_the_limit_gets_431_from_hyper() {
    let server = TestServer::start_http(config()).await;
    let url = server.http_url("/healthz");
    let under = format!("X-Pad: {}", "a".repeat(15 * 1024));
    curl(&["-H", &under, &url]).await.expect(200, "ok\n");
    let over = format!("X-Pad: {}", "a".repeat(17 * 1024));
    let r = curl(&["-H", &over, &url]).await;
    r.expect(431, "");
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    // Not counted as an answered request: hyper answered before the door saw it.
    let text = scrape(&server).await;
    assert_eq!(
        sample(&text, "pushwire_http_requests_total{status=\"200\"}"),
        1.0
    );
    assert_eq!(sample(&text, "pushwire_http_requests_all_total"), 1.0);
}

/// Past `max_http_connections` new connections wait (in the backlog); the ones in
/// flight still get their answers, and a waiting one is served once a slot frees.
#[tokio::test]
async fn connections_past_the_limit_wait_and_those_in_flight_are_answered() {
    let server = TestServer::start_http(pushwire::Config {
        max_http_connections: 2,
        ..config()
    })
    .await;
    let addr = server.http_addr.unwrap();
    let mut a = RawHttp::connect(addr).await;
    a.get("/healthz").await.expect(200, "ok\n");
    let mut b = RawHttp::connect(addr).await;
    b.get("/healthz").await.expect(200, "ok\n");

    // A third client: TCP connects (backlog), but nothing answers while both are held.
    let url = server.http_url("/push");
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let r = curl(&["--data-binary", "/ping", &url]).await;
        (r, started.elapsed())
    });
    let mut third = RawHttp::connect(addr).await;
    third
        .send(b"GET /healthz HTTP/1.1\r\nHost: pushwire\r\n\r\n")
        .await;
    assert!(
        !third.closed_within(QUIET).await,
        "the connection past the limit was served or closed"
    );
    assert!(!waiting.is_finished(), "curl past the limit was served");
    // The two in flight are still served, over and over.
    for _ in 0..3 {
        a.get("/readyz").await.expect(200, "ready\n");
        b.request("POST", "/push", b"/ping\n")
            .await
            .expect(200, "pong\n");
    }
    let m = a.get("/metrics").await;
    assert!(
        sample(
            m.text(),
            "pushwire_connection_limit_hits_total{listener=\"http\"}"
        ) >= 1.0,
        "{}",
        m.text()
    );
    // A slot frees: one waiting client is served, then the other.
    drop(a);
    drop(b);
    let r = third
        .response(STEP)
        .await
        .expect("served once a slot freed");
    r.expect(200, "ok\n");
    let (r, _) = timeout(STEP, waiting).await.expect("curl served").unwrap();
    r.expect(200, "pong\n");
}

/// A `/stats` figure, asked on the push port.
async fn stat(server: &TestServer, key: &str) -> u64 {
    let mut c = PushClient::connect(server.push_addr).await;
    let reply = c.request("/stats").await;
    let v: Value = serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{reply:?}: {e}"));
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {reply}"))
}

/// A `POST /push` reply is made as the client reads it. A 4 MiB body of `/x` lines (each
/// answered with a 45-byte error: the reply is 15 times the body) from a client that reads
/// nothing runs only as far as the socket buffers take the replies, and after the request
/// timeout without progress the door drops it, so its slot serves the next client. (It
/// used to build the 61 MiB reply whole, then hold it and the slot for as long as the
/// client liked: with `--max-http-connections 1` a `GET /healthz` waited for ever.)
#[tokio::test]
async fn a_reply_runs_as_it_is_read_and_a_stalled_one_is_dropped() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    let server = TestServer::start_http(pushwire::Config {
        http_request_timeout: TIMEOUT,
        max_http_connections: 1,
        ..config()
    })
    .await;
    let addr = server.http_addr.unwrap();
    let one = tcp_replies(server.push_addr, b"/x\n").await;
    assert!(one.len() >= 45, "{:?}", String::from_utf8_lossy(&one));
    let lines = 4 * 1024 * 1024 / 3;
    let commands_before = stat(&server, "commands").await;

    // A client with a small receive buffer that sends its body and never reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stalled = timeout(STEP, sock.connect(addr)).await.unwrap().unwrap();
    let mut req = format!(
        "POST /push HTTP/1.1\r\nHost: pushwire\r\nContent-Length: {}\r\n\r\n",
        lines * 3
    )
    .into_bytes();
    req.extend_from_slice(&b"/x\n".repeat(lines));
    timeout(STEP, stalled.write_all(&req))
        .await
        .expect("the body is read whole")
        .unwrap();

    // The next client waits for the only slot: it gets it once the stalled one is dropped,
    // a request timeout after the last reply bytes the buffers took (a debug build on a
    // busy machine takes seconds to fill them).
    let started = Instant::now();
    let mut next = RawHttp::connect(addr).await;
    next.send(b"GET /healthz HTTP/1.1\r\nHost: pushwire\r\n\r\n")
        .await;
    let r = next.response(Duration::from_secs(30)).await;
    r.expect("served once the stalled client is dropped")
        .expect(200, "ok\n");
    let waited = started.elapsed();
    assert!(waited >= TIMEOUT, "served after {waited:?}");
    // Only the lines whose replies fitted in the buffers ran (the `/stats` asks count too).
    let ran = stat(&server, "commands").await - commands_before;
    assert!(
        ran < (lines / 4) as u64,
        "{ran} of {lines} lines ran for a client that read nothing"
    );
    // What the dropped client can still read is a part of its reply, then the close.
    let mut got = Vec::new();
    let _ = timeout(STEP, stalled.read_to_end(&mut got))
        .await
        .expect("the stalled connection is closed");
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(
        got.len() - head_end < lines * one.len() / 4,
        "{} bytes of a {}-byte reply arrived",
        got.len(),
        lines * one.len()
    );
}

/// A reply longer than one chunk (here 1.3 MB, streamed as it is made) is still exactly
/// what the TCP port answers for the same bytes, in order, to the last line.
#[tokio::test]
async fn a_long_reply_is_the_tcp_ports_whole() {
    let server = TestServer::start_http(pushwire::Config {
        dedupe_window: None,
        ..config()
    })
    .await;
    let mut body = String::new();
    for n in 0..20_000 {
        body.push_str(&format!("{{\"uid\":\"nobody\",\"n\":{n}}}\n/x\n/ping\n"));
    }
    body.push_str("/count");
    let tcp = tcp_replies(server.push_addr, body.as_bytes()).await;
    assert!(tcp.len() > 1_000_000, "{}", tcp.len());
    let url = server.http_url("/push");
    let http = curl_stdin(&["--data-binary", "@-", &url], body.as_bytes()).await;
    assert_eq!(http.status, 200, "{}", http.head);
    assert_eq!(http.body.len(), tcp.len());
    assert!(http.body == tcp, "HTTP and TCP replies differ");
}

/// web-msg-sender's TEXT is HTML-escaped, which can make it six times longer: the push
/// port's line limit (`--max-line-bytes`) applies to what browsers would be sent, and
/// TEXT over it is answered 413 and sent to nobody. (A 4 MiB form of `'` used to answer
/// `ok` and send every connection a 24 MiB frame.)
#[tokio::test]
async fn web_msg_sender_content_is_bounded_once_escaped() {
    let server = TestServer::start_http(pushwire::Config {
        max_line_bytes: 1000,
        ..config()
    })
    .await;
    let mut tab = browser(&server, "u1").await;
    let url = server.http_url("/");
    // 166 quotes and 4 letters: 1000 bytes once escaped.
    let at_limit = format!("{}abcd", "'".repeat(166));
    let publish = |content: &str, to: Option<&str>| {
        let mut args = vec![
            "-d".to_owned(),
            "type=publish".to_owned(),
            "--data-urlencode".to_owned(),
            format!("content={content}"),
        ];
        if let Some(to) = to {
            args.extend(["-d".to_owned(), format!("to={to}")]);
        }
        args.push(url.clone());
        args
    };
    let args = publish(&at_limit, Some("u1"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = curl(&args).await;
    assert_eq!((r.status, r.text()), (200, "ok"));
    assert_eq!(
        tab.recv_text().await,
        format!("{}abcd", "&#039;".repeat(166))
    );
    let over = format!("{at_limit}'");
    for to in [Some("u1"), None] {
        let args = publish(&over, to);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args)
            .await
            .expect(413, "content larger than 1000 bytes once HTML-escaped\n");
    }
    tab.expect_silence(QUIET).await;
}

/// A body declared longer than `--http-max-body-bytes` is refused before any of it is
/// read: `Expect: 100-continue` gets the 413 at once, never `100 Continue` (it used to
/// get `100 Continue`, then the 413 after the limit's worth of bytes). And a client that
/// is still sending a large body reads its 413 rather than a reset: the door lingers
/// before it closes (a 64 MiB POST used to end in curl's "broken pipe").
#[tokio::test]
async fn an_oversized_body_gets_its_413_at_once_and_intact() {
    let server = TestServer::start_http(pushwire::Config {
        http_max_body_bytes: 1000,
        ..config()
    })
    .await;
    let mut tab = browser(&server, "u1").await;
    let addr = server.http_addr.unwrap();
    let mut c = RawHttp::connect(addr).await;
    c.send(b"POST /push HTTP/1.1\r\nHost: pushwire\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let r = c.response(STEP).await.expect("an answer");
    r.expect(413, "body larger than 1000 bytes\n");
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    assert!(c.closed_within(STEP).await);

    // 64 MiB of pushes to u1, from a client that sends it all before it reads: the door
    // reads the limit's worth, answers, and discards the rest until the client is done.
    let body =
        r#"{"uid":"u1","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#.to_owned() + "\n";
    let body = body.repeat(64 * 1024 * 1024 / body.len());
    let mut c = RawHttp::connect(addr).await;
    let head = format!(
        "POST /push HTTP/1.1\r\nHost: pushwire\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.send(head.as_bytes()).await;
    let sent = timeout(STEP, c.stream.get_mut().write_all(body.as_bytes())).await;
    assert!(
        matches!(sent, Ok(Ok(()))),
        "the body could not be sent: {sent:?}"
    );
    let r = c.response(STEP).await.expect("an answer");
    r.expect(413, "body larger than 1000 bytes\n");
    // And curl, with its own `Expect` (it asks for bodies over 1 MiB) and without.
    let url = server.http_url("/push");
    for expect in [&[][..], &["-H", "Expect:"][..]] {
        let mut args = expect.to_vec();
        args.extend(["--data-binary", "@-", &url]);
        curl_stdin(&args, body.as_bytes())
            .await
            .expect(413, "body larger than 1000 bytes\n");
    }
    tab.expect_silence(QUIET).await;
}

/// One address holds at most `--max-http-connections-per-ip` connections: the next one
/// from it is answered 429 at accept and closed, without a request read, and counted;
/// another address is served; a place frees when its connection closes.
#[tokio::test]
async fn connections_past_the_per_address_cap_get_429() {
    let server = TestServer::start_http(pushwire::Config {
        max_http_connections_per_ip: 2,
        ..config()
    })
    .await;
    let addr = server.http_addr.unwrap();
    let mut a = RawHttp::connect(addr).await;
    a.get("/healthz").await.expect(200, "ok\n");
    let mut b = RawHttp::connect(addr).await;
    b.get("/healthz").await.expect(200, "ok\n");
    let mut c = RawHttp::connect(addr).await;
    let r = c
        .response(STEP)
        .await
        .expect("an answer before any request");
    r.expect(429, "too many connections from your address\n");
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    assert!(c.closed_within(STEP).await);
    // Another address has its own places.
    curl(&["--interface", "127.0.0.2", &server.http_url("/healthz")])
        .await
        .expect(200, "ok\n");
    // Once `a` closes (the door sees it a moment later), its place is free.
    drop(a);
    let refused = std::sync::atomic::AtomicU32::new(1);
    poll_until(STEP, "a freed place", || async {
        let mut c = RawHttp::connect(addr).await;
        c.send(b"GET /readyz HTTP/1.1\r\nHost: pushwire\r\n\r\n")
            .await;
        let r = c.response(STEP).await.expect("an answer");
        if r.status == 429 {
            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r.status == 200
    })
    .await;
    let text = b.get("/metrics").await;
    let refused = f64::from(refused.into_inner());
    assert_eq!(
        sample(
            text.text(),
            "pushwire_refused_total{reason=\"http_per_ip\"}"
        ),
        refused
    );
    assert_eq!(
        sample(text.text(), "pushwire_http_requests_total{status=\"429\"}"),
        refused
    );
}

// ---------------------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn healthz_and_readyz_while_serving() {
    let server = TestServer::start_http(config()).await;
    curl(&[&server.http_url("/healthz")])
        .await
        .expect(200, "ok\n");
    curl(&[&server.http_url("/readyz")])
        .await
        .expect(200, "ready\n");
    // HEAD is GET without the body.
    for (path, len) in [("/healthz", "3"), ("/readyz", "6")] {
        let r = curl(&["--head", &server.http_url(path)]).await;
        assert_eq!((r.status, r.text()), (200, ""), "{r:?}");
        assert_eq!(r.header("content-length"), Some(len), "{r:?}");
    }
}

/// Once shutdown began (the HTTP door drains with the push port) no probe is told
/// `ready`: new connections are refused, and a kept-alive one gets `503 draining` or is
/// closed.
#[tokio::test]
async fn readyz_is_not_ready_once_shutdown_began() {
    let server = TestServer::start_http(config()).await;
    let addr = server.http_addr.unwrap();
    let mut kept = RawHttp::connect(addr).await;
    kept.get("/readyz").await.expect(200, "ready\n");
    // The push port's idle connection sees EOF once the backend doors drain.
    let mut idle = PushClient::connect(server.push_addr).await;
    assert_eq!(idle.request("/ping").await, "pong\n");
    let token = server.token();
    token.cancel();
    assert_eq!(idle.read_to_eof().await, b"");
    // Request on the kept connection: 503, or the connection closed (it was idle).
    kept.send(b"GET /readyz HTTP/1.1\r\nHost: pushwire\r\n\r\n")
        .await;
    match kept.response(STEP).await {
        None => {}
        Some(r) => r.expect(503, "draining\n"),
    }
    poll_until(STEP, "new HTTP connections refused", || async move {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// /metrics
// ---------------------------------------------------------------------------------------

/// `GET /metrics` with curl, checked by `promtool check metrics` (Prometheus's own
/// parser and linter): it must pass with nothing to say. Returns the text.
async fn scrape_from(server: &TestServer, source: &str, extra: &[&str]) -> String {
    let url = server.http_url("/metrics");
    let mut args = vec!["--interface", source];
    args.extend_from_slice(extra);
    args.push(&url);
    let r = curl(&args).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text().to_owned();
    promtool_check(&text).await;
    text
}

async fn scrape(server: &TestServer) -> String {
    scrape_from(server, "127.0.0.1", &[]).await
}

async fn promtool_check(text: &str) {
    let mut cmd = Command::new("promtool");
    cmd.args(["check", "metrics"]);
    let out = run_program(&mut cmd, text.as_bytes(), Duration::from_secs(20)).await;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}\n--- the scrape:\n{text}",
        out.status
    );
}

/// Asserts `n` refusals for push access, each answered with `status`, in a scrape.
fn assert_refused(text: &str, status: u16, n: f64) {
    let refused = sample(text, "pushwire_refused_total{reason=\"push_access\"}");
    let answered = sample(
        text,
        &format!("pushwire_http_requests_total{{status=\"{status}\"}}"),
    );
    assert_eq!((refused, answered), (n, n), "{text}");
}

/// Every sample of a text exposition: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample {l:?}"));
            let v = v.parse().unwrap_or_else(|e| panic!("{l:?}: {e}"));
            (k.to_owned(), v)
        })
        .collect()
}

fn sample(text: &str, key: &str) -> f64 {
    *samples(text)
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key}:\n{text}"))
}

/// The counters move when things happen: pushes by outcome, frames out, the latency
/// histogram's count, HTTP requests by status, refusals, the connection gauges.
#[tokio::test]
async fn metrics_parse_cleanly_and_move_with_the_traffic() {
    const N: usize = 7;
    let server = TestServer::start_http(with_secret()).await;
    let bearer = format!("Authorization: Bearer {SECRET}");
    let auth = ["-H", bearer.as_str()];
    let scrape = || scrape_from(&server, "127.0.0.1", &auth);
    let before = samples(&scrape().await);
    let get = |s: &BTreeMap<String, f64>, k: &str| {
        *s.get(k).unwrap_or_else(|| panic!("no sample {k} in {s:?}"))
    };
    assert_eq!(get(&before, "pushwire_connections"), 0.0);

    let mut tab = browser_with(&server, "u1", true).await;
    let after_bind = samples(&scrape().await);
    assert_eq!(get(&after_bind, "pushwire_connections"), 1.0);
    assert_eq!(get(&after_bind, "pushwire_uids"), 1.0);
    assert_eq!(
        get(&after_bind, "pushwire_binds_total") - get(&before, "pushwire_binds_total"),
        1.0
    );

    let lines: String = (0..N)
        .map(|i| format!("{{\"uid\":\"u1\",\"i\":{i}}}\n"))
        .collect::<String>()
        + "{\"uid\":\"nobody\"}\nnot json\n";
    let r = curl(&[
        "-H",
        &bearer,
        "--data-binary",
        &lines,
        &server.http_url("/push"),
    ])
    .await;
    assert_eq!(r.text(), format!("{}fail\nfail\n", "ok\n".repeat(N)));
    for i in 0..N {
        assert_eq!(
            tab.recv_text().await,
            format!("{{\"uid\":\"u1\",\"i\":{i}}}")
        );
    }
    // A refusal: no token.
    curl(&["--data-binary", "/ping", &server.http_url("/push")])
        .await
        .expect(
            401,
            "authentication required: send Authorization: Bearer SECRET\n",
        );

    // Frames are counted once written, which may be just after the browser read them.
    let ok = "pushwire_pushes_total{outcome=\"ok\"}";
    let want_ok = get(&after_bind, ok) + N as f64;
    let deadline = Instant::now() + STEP;
    let last = loop {
        let text = scrape().await;
        let s = samples(&text);
        let moved = |k: &str| get(&s, k) - get(&after_bind, k);
        if moved("pushwire_frames_out_total") >= N as f64
            && moved("pushwire_push_latency_seconds_count") >= N as f64
        {
            break text;
        }
        assert!(Instant::now() < deadline, "frames not counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let now = samples(&last);
    let delta = |k: &str| get(&now, k) - get(&after_bind, k);
    assert_eq!(get(&now, ok), want_ok, "{last}");
    assert_eq!(delta("pushwire_pushes_total{outcome=\"fail\"}"), 2.0);
    assert_eq!(delta("pushwire_bad_lines_total"), 1.0);
    assert_eq!(delta("pushwire_frames_out_total"), N as f64);
    assert_eq!(delta("pushwire_push_latency_seconds_count"), N as f64);
    assert_eq!(
        delta("pushwire_push_latency_seconds_bucket{le=\"+Inf\"}"),
        N as f64
    );
    assert!(delta("pushwire_push_latency_seconds_sum") > 0.0);
    let bytes: usize = (0..N)
        .map(|i| format!("{{\"uid\":\"u1\",\"i\":{i}}}").len())
        .sum();
    assert_eq!(delta("pushwire_bytes_out_total"), bytes as f64);
    assert_eq!(delta("pushwire_refused_total{reason=\"push_access\"}"), 1.0);
    assert_eq!(delta("pushwire_http_requests_total{status=\"401\"}"), 1.0);
    // The push and every scrape since `after_bind` (each counts once it is answered).
    let scrapes = delta("pushwire_http_requests_total{status=\"200\"}") - 1.0;
    assert!(scrapes >= 1.0, "{last}");
    assert_eq!(
        delta("pushwire_http_requests_all_total"),
        delta("pushwire_http_requests_total{status=\"200\"}") + 1.0
    );

    // The connection gauges follow the browser out.
    tab.close().await;
    poll_until(STEP, "connection gauge back to 0", || {
        let s = scrape();
        async move { samples(&s.await)["pushwire_connections"] == 0.0 }
    })
    .await;
}

/// `/stats` and `/metrics` come from one table (`Metric::ALL`): every `/stats` key equals
/// its Prometheus sample (`pushwire_FAMILY`, `_total` for counters, the row's label),
/// read back to back on one quiet keep-alive connection, after traffic that moves most
/// of them.
#[tokio::test]
async fn every_stats_key_equals_its_prometheus_sample() {
    let server = TestServer::start_http(config()).await;
    let mut tab = browser(&server, "u1").await;
    let _other = browser(&server, "u2").await;
    let mut push = PushClient::connect(server.push_addr).await;
    for line in [
        "{\"uid\":\"u1\",\"n\":1}",
        "{\"uid\":\"nobody\"}",
        "oops",
        "/join room u1",
        "/kick u2",
    ] {
        push.request(line).await;
    }
    assert_eq!(tab.recv_text().await, "{\"uid\":\"u1\",\"n\":1}");
    drop(push);
    curl(&[&server.http_url("/nope")])
        .await
        .expect(404, "not found\n");
    // Quiet: no backend connection left open, the kicked tab gone.
    let mut c = RawHttp::connect(server.http_addr.unwrap()).await;
    let deadline = Instant::now() + STEP;
    let (stats, text) = loop {
        let stats = c.request("POST", "/push", b"/stats\n").await;
        let metrics = c.get("/metrics").await;
        let stats: Value = serde_json::from_slice(&stats.body).expect("/stats is JSON");
        if stats["push_connections"] == 0 && stats["connections"] == 1 {
            break (stats, metrics.text().to_owned());
        }
        assert!(Instant::now() < deadline, "not quiet: {stats}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    promtool_check(&text).await;
    let prom = samples(&text);
    let mut moved = 0;
    for &m in Metric::ALL {
        let def = m.def();
        let suffix = if def.kind == Kind::Counter {
            "_total"
        } else {
            ""
        };
        let label = def
            .label
            .map_or_else(String::new, |(k, v)| format!("{{{k}=\"{v}\"}}"));
        let key = format!("pushwire_{}{suffix}{label}", def.family);
        let value = prom
            .get(&key)
            .unwrap_or_else(|| panic!("{m:?}: no sample {key}:\n{text}"));
        let stat = stats[def.stats]
            .as_u64()
            .unwrap_or_else(|| panic!("{m:?}: no /stats key {}: {stats}", def.stats));
        // The /stats request itself was answered (and counted) before the scrape.
        let want = if m == Metric::HttpRequests {
            stat + 1
        } else {
            stat
        };
        assert_eq!(*value, want as f64, "{m:?}: /stats {} vs {key}", def.stats);
        moved += usize::from(stat > 0);
    }
    assert!(moved >= 14, "only {moved} metrics moved: {stats}");
    // And nothing in /stats that the table does not have.
    let keys: Vec<&str> = stats
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = vec!["ok", "uptime_secs"];
    want.extend(Metric::ALL.iter().map(|m| m.def().stats));
    assert_eq!(keys, want);
}

/// A body that arrives in pieces is gathered whole before its lines run, lines cut across
/// the pieces included: a chunked body whose chunks come apart, and a `Content-Length`
/// body whose end comes in a later packet, get exactly the TCP port's replies for the
/// same bytes, on one keep-alive connection.
#[tokio::test]
async fn a_body_in_pieces_answers_as_one() {
    let server = TestServer::start_http(config()).await;
    let mut tab = browser(&server, "u1").await;
    let body = b"{\"uid\":\"u1\",\"n\":1}\n{\"uid\":\"nobody\"}\n{\"uid\":\"u1\",\"n\":2}\n";
    let frames = ["{\"uid\":\"u1\",\"n\":1}", "{\"uid\":\"u1\",\"n\":2}"];
    let want = tcp_replies(server.push_addr, body).await;
    assert_eq!(want, b"ok\nfail\nok\n");
    for frame in frames {
        assert_eq!(tab.recv_text().await, frame, "over TCP");
    }

    let mut c = RawHttp::connect(server.http_addr.unwrap()).await;
    c.send(b"POST /push HTTP/1.1\r\nHost: pushwire\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    for piece in [&body[..10], &body[10..30], &body[30..]] {
        c.send(format!("{:x}\r\n", piece.len()).as_bytes()).await;
        c.send(piece).await;
        c.send(b"\r\n").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.send(b"0\r\n\r\n").await;
    let r = c
        .response(STEP)
        .await
        .expect("a response to the chunked body");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, want.as_slice()),
        "chunked"
    );
    for frame in frames {
        assert_eq!(tab.recv_text().await, frame, "chunked");
    }

    let head = format!(
        "POST /push HTTP/1.1\r\nHost: pushwire\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.send(head.as_bytes()).await;
    c.send(&body[..25]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(&body[25..]).await;
    let r = c
        .response(STEP)
        .await
        .expect("a response to the split body");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, want.as_slice()),
        "split"
    );
    for frame in frames {
        assert_eq!(tab.recv_text().await, frame, "split");
    }
    tab.expect_silence(QUIET).await;
}
