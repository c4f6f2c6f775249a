//! Headless Chromium showing a page that runs the seed's browser script, and reports what
//! the script saw (its `alert`s, a close, an error) to the test over HTTP.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use super::PushClient;

/// What the page reports to the test's HTTP listener.
#[derive(Debug)]
pub enum PageEvent {
    /// `alert(m)` was called (the seed's onmessage handler).
    Alert(String),
    /// The WebSocket closed (code and reason), or a script error happened.
    Trouble(String),
}

/// The page Chromium loads: reporting hooks first, then `script` (the seed's, as it is, but
/// for its URL).
///
/// `alert` is replaced by a POST of its argument to this same origin (no CORS involved), so
/// the bytes the test sees are exactly the string the page got. `var ws` of the seed is a
/// global, which lets a later script report a close for diagnostics.
pub fn page_html(script: &str) -> String {
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
        seed = script
    )
}

/// The test's answer to a `POST` the page makes (Laravel's `/broadcasting/auth`): it gets
/// the request target (path and query) and the body, and returns a status and a JSON body.
pub type Handler = Arc<
    dyn Fn(String, String) -> Pin<Box<dyn Future<Output = (u16, String)> + Send>> + Send + Sync,
>;

/// What the page's origin serves besides the page and its reports.
#[derive(Clone, Default)]
pub struct Site {
    /// `GET` paths served from files (scripts the page loads from its own origin).
    pub files: Vec<(String, PathBuf)>,
    /// Every other `POST` (with any query) goes here; without a handler it is a 404.
    pub handler: Option<Handler>,
}

/// A tiny HTTP/1.1 server: `GET /` serves `html`, `POST /alert` and `POST /trouble` forward
/// their body to `events`, `site`'s files and handler the rest; anything else is 404. One
/// request per connection.
async fn serve_page(
    listener: TcpListener,
    html: String,
    site: Site,
    events: mpsc::UnboundedSender<PageEvent>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let html = html.clone();
        let site = site.clone();
        let events = events.clone();
        tokio::spawn(async move {
            let _ = timeout(
                Duration::from_secs(10),
                handle_http(tcp, &html, &site, &events),
            )
            .await;
        });
    }
}

fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// One HTTP/1.1 request as a test's small server reads it.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    /// The request target: the path and, if any, `?` and the query.
    pub target: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Reads one request (the head, then `Content-Length` bytes of body); `None` if the peer
/// closed first.
pub async fn read_request(tcp: &mut TcpStream) -> std::io::Result<Option<HttpRequest>> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("").to_owned();
    let target = request_line.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let content_length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
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
    Ok(Some(HttpRequest {
        method,
        target,
        headers,
        body,
    }))
}

async fn handle_http(
    mut tcp: TcpStream,
    html: &str,
    site: &Site,
    events: &mpsc::UnboundedSender<PageEvent>,
) -> std::io::Result<()> {
    let Some(request) = read_request(&mut tcp).await? else {
        return Ok(());
    };
    let (method, path) = (request.method.as_str(), request.target.as_str());
    let body = String::from_utf8_lossy(&request.body).into_owned();

    let file = site.files.iter().find(|(p, _)| p == path).map(|(_, f)| f);
    let response = match (method, path) {
        ("GET", "/") => response(200, "text/html; charset=utf-8", html.as_bytes()),
        ("POST", "/alert" | "/trouble") => {
            let event = if path == "/alert" {
                PageEvent::Alert(body)
            } else {
                PageEvent::Trouble(body)
            };
            let _ = events.send(event);
            b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_vec()
        }
        ("GET", _) if file.is_some() => {
            let file = file.expect("checked");
            let bytes =
                std::fs::read(file).unwrap_or_else(|e| panic!("page file {}: {e}", file.display()));
            response(200, "text/javascript; charset=utf-8", &bytes)
        }
        ("POST", _) if site.handler.is_some() => {
            let handler = site.handler.as_ref().expect("checked");
            let (status, json) = handler(path.to_owned(), body).await;
            response(status, "application/json", json.as_bytes())
        }
        _ => response(404, "text/plain", b""),
    };
    tcp.write_all(&response).await?;
    tcp.shutdown().await
}

/// Headless Chromium in its own process group with a fresh profile; dropping it kills the
/// whole group (browser, zygotes, renderers) and removes the profile.
pub struct Browser {
    child: Child,
    dir: PathBuf,
}

impl Browser {
    /// Opens `url`, with `args` after the usual headless flags.
    pub fn launch(url: &str, args: &[String]) -> Browser {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pushwire-chromium-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("profile")).expect("create chromium profile dir");
        // Chromium's own scratch directories (org.chromium.Chromium.*) go in `dir` too, or
        // every browser killed at the end of a test leaves one behind in /tmp.
        std::fs::create_dir_all(dir.join("tmp")).expect("create chromium tmp dir");
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
            .args(args)
            .arg(url)
            .env("TMPDIR", dir.join("tmp"))
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
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("chromium.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Panics if the browser has already exited.
    pub fn assert_running(&mut self) {
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

impl Browser {
    /// Like [`Browser::launch`], with the DevTools protocol on a port Chromium picks
    /// ([`Browser::devtools`] connects to it).
    pub fn launch_debuggable(url: &str, args: &[String]) -> Browser {
        let mut all = vec!["--remote-debugging-port=0".to_owned()];
        all.extend(args.iter().cloned());
        Browser::launch(url, &all)
    }

    /// The DevTools protocol of the first page (15 s to come up).
    pub async fn devtools(&mut self) -> Devtools {
        let deadline = Instant::now() + Duration::from_secs(15);
        let port_file = self.dir.join("profile/DevToolsActivePort");
        loop {
            self.assert_running();
            let port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|p| p.trim().parse::<u16>().ok()));
            if let Some(port) = port
                && let Some(url) = page_target(port).await
            {
                let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
                    .await
                    .unwrap_or_else(|e| panic!("devtools {url}: {e}"));
                return Devtools { ws, next: 0 };
            }
            assert!(
                Instant::now() < deadline,
                "no DevTools page within 15 s; chromium log ends:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The `webSocketDebuggerUrl` of the first `page` target DevTools lists.
async fn page_target(port: u16) -> Option<String> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    // The URLs it lists name the host this request names.
    let request = format!("GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.ok()?;
    // DevTools keeps the connection open: read the head, then Content-Length bytes.
    let mut answer = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            answer.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())?;
                if body.len() >= length {
                    return Some(body.to_owned());
                }
            }
        }
    };
    let body = timeout(Duration::from_secs(5), read).await.ok()??;
    let targets: serde_json::Value = serde_json::from_str(&body).ok()?;
    targets.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
        .as_str()
        .map(str::to_owned)
}

/// One page's DevTools protocol session: evaluate script, take screenshots.
pub struct Devtools {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    next: u64,
}

impl Devtools {
    /// Calls `method` and returns its `result` (events that arrive meanwhile are skipped).
    pub async fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use futures_util::{SinkExt, StreamExt};
        self.next += 1;
        let id = self.next;
        let request = serde_json::json!({"id": id, "method": method, "params": params});
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(
                request.to_string(),
            ))
            .await
            .unwrap_or_else(|e| panic!("devtools send {method}: {e}"));
        loop {
            let msg = timeout(Duration::from_secs(10), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("devtools {method}: no answer in 10 s"))
                .unwrap_or_else(|| panic!("devtools {method}: closed"))
                .unwrap_or_else(|e| panic!("devtools {method}: {e}"));
            let Ok(text) = msg.to_text() else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "devtools {method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    pub async fn eval(&mut self, expression: &str) -> serde_json::Value {
        let r = self
            .call(
                "Runtime.evaluate",
                serde_json::json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Polls `expression` until it is `true` (within `within`).
    pub async fn wait_true(&mut self, expression: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.eval(expression).await == serde_json::Value::Bool(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{expression} not true within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the page as shown, `width` CSS pixels wide (`mobile`: a phone's viewport
    /// and scale), the whole page's height.
    pub async fn screenshot(&mut self, width: u32, mobile: bool) -> Vec<u8> {
        let scale = if mobile { 2 } else { 1 };
        let metrics = serde_json::json!({
            "width": width, "height": 800, "deviceScaleFactor": scale, "mobile": mobile
        });
        self.call("Emulation.setDeviceMetricsOverride", metrics)
            .await;
        let height = self
            .eval("Math.ceil(document.documentElement.scrollHeight)")
            .await
            .as_u64()
            .unwrap_or(800);
        let metrics = serde_json::json!({
            "width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile
        });
        self.call("Emulation.setDeviceMetricsOverride", metrics)
            .await;
        // Two frames, so the page is painted at its new size before the capture.
        self.call(
            "Runtime.evaluate",
            serde_json::json!({
                "expression": "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))",
                "awaitPromise": true
            }),
        )
        .await;
        let shot = self
            .call(
                "Page.captureScreenshot",
                serde_json::json!({"format": "png"}),
            )
            .await;
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64")
    }
}

/// Chromium showing the seed page, plus what the test needs to watch it.
pub struct SeedPage {
    pub browser: Browser,
    events: mpsc::UnboundedReceiver<PageEvent>,
    http: tokio::task::JoinHandle<()>,
}

impl SeedPage {
    /// Serves a page running `script` (the seed's JS) on `http` and starts Chromium on it,
    /// with `args`. The page is served from `http://<http's address>/`, which is its Origin.
    pub fn launch(http: TcpListener, script: &str, args: &[String]) -> SeedPage {
        SeedPage::launch_html(http, page_html(script), args)
    }

    /// Like [`SeedPage::launch`], with a whole page of the caller's (it reports by POSTing
    /// to `/alert` and `/trouble` itself).
    pub fn launch_html(http: TcpListener, html: String, args: &[String]) -> SeedPage {
        SeedPage::launch_site(http, html, Site::default(), args)
    }

    /// Like [`SeedPage::launch_html`], with the page's origin also serving `site`.
    pub fn launch_site(http: TcpListener, html: String, site: Site, args: &[String]) -> SeedPage {
        let page_url = format!("http://{}/", http.local_addr().unwrap());
        let (events_tx, events) = mpsc::unbounded_channel();
        let http = tokio::spawn(serve_page(http, html, site, events_tx));
        SeedPage {
            browser: Browser::launch(&page_url, args),
            events,
            http,
        }
    }

    /// Pushes `first` on `push` until a browser took it (the page binds asynchronously:
    /// browser start, page load, handshake, `ws.send(uid)`; before that every push answers
    /// `fail`), then checks the page alerted exactly `first`, once.
    pub async fn wait_bound(&mut self, push: &mut PushClient, first: &str) {
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

    /// The page's next report (5 s deadline).
    pub async fn next_event(&mut self) -> PageEvent {
        self.next_event_within(Duration::from_secs(5)).await
    }

    /// The page's next report, within `within`.
    pub async fn next_event_within(&mut self, within: Duration) -> PageEvent {
        self.browser.assert_running();
        timeout(within, self.events.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "page reported nothing within {within:?}; chromium log ends:\n{}",
                    self.browser.log_tail()
                )
            })
            .expect("page server ended")
    }

    /// Whether the page reports anything more within `within`.
    pub async fn reports_within(&mut self, within: Duration) -> bool {
        timeout(within, self.events.recv()).await.is_ok()
    }

    pub async fn expect_alert(&mut self, want: &str) {
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

/// The seed's browser code, verbatim but for its URL, run by Chromium against
/// `wss://localhost:PORT/` and trusting the certificate whose public key hashes to `spki`
/// (base64 SHA-256). Returns once the page has bound uid1 and has alerted a first push and
/// a ~150 KB one (many TLS records), each byte for byte.
pub async fn seed_page_over_wss(port: u16, spki: &str, push: &mut PushClient) -> SeedPage {
    let js = format!(
        "var ws = new WebSocket('wss://localhost:{port}/'); ws.onopen = function(){{ var uid = 'uid1'; ws.send(uid); }}; ws.onmessage = function(e){{ alert(e.data); }};"
    );
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trust = format!("--ignore-certificate-errors-spki-list={spki}");
    let mut page = SeedPage::launch(http, &js, &[trust]);
    page.wait_bound(push, r#"{"uid":"uid1","percent":"88%"}"#)
        .await;
    let big = format!(r#"{{"uid":"uid1","blob":"{}"}}"#, "é✓".repeat(30_000));
    assert_eq!(push.request(&big).await, "ok\n");
    page.expect_alert(&big).await;
    page
}

/// A page that loads `pushwire.js` from the daemon (`GET /pushwire.js` on the browser
/// port `port`, or a balancer in front of it), connects as `uid`, and reports, in order
/// (each report waits for the previous one), every message as `/alert` "SEQ DATA" and
/// every status but `reconnecting` (whose count depends on timing) as `/trouble`
/// "STATUS KIND".
pub fn pushwire_page(port: u16, uid: &str) -> String {
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
var pw = new Pushwire('ws://127.0.0.1:{port}/', {{ uid: '{uid}', minDelay: 50, maxDelay: 400 }});
pw.onmessage = function (data, meta) {{ report('/alert', meta.seq + ' ' + data); }};
pw.onstatus = function (status, d) {{
  if (status !== 'reconnecting') report('/trouble', status + ' ' + d.status);
}};
</script>
</head><body>pushwire.js</body></html>
"#
    )
}
