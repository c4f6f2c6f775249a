//! The real Pusher clients, as `scripts/pusher-clients.sh` installs them under
//! `tests/pusher/`: pusher-js and Laravel Echo served to headless Chromium from
//! `node_modules` (the page's own origin, no CDN), and the Node and Python server SDKs run
//! as programs that take one JSON request and print one JSON answer (`sdk.js`, `sdk.py`).
//! Plus [`ApiRecorder`], a listener that records the HTTP requests an SDK makes.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::run_program;

/// How long one SDK call may take (Node or Python start, one request).
const SDK_DEADLINE: Duration = Duration::from_secs(30);

/// `tests/pusher/`.
pub fn rig_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pusher")
}

fn installed(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run scripts/pusher-clients.sh (scripts/test.sh does) to install \
         the Pusher clients",
        path.display()
    );
    path
}

/// An app as the clients are configured with it.
#[derive(Debug, Clone)]
pub struct App {
    pub id: &'static str,
    pub key: &'static str,
    pub secret: &'static str,
}

impl App {
    /// The JSON the SDK scripts take.
    pub fn json(&self) -> Value {
        json!({"id": self.id, "key": self.key, "secret": self.secret})
    }

    /// The same app as `wire::pusher` holds it.
    pub fn keys(&self) -> pushwire::wire::pusher::Keys {
        pushwire::wire::pusher::Keys::new(self.key, self.secret.as_bytes())
    }
}

/// A test app (Laravel's `PUSHER_APP_ID`, `_KEY`, `_SECRET`).
pub const APP: App = App {
    id: "1201",
    key: "pushwire-test-key",
    secret: "pushwire-test-secret",
};

/// Runs one SDK request through `program script`, returning the answer's `result`;
/// panics with the SDK's error (or its output) otherwise.
async fn sdk(program: PathBuf, script: &str, request: &Value) -> Value {
    let script = installed(rig_dir().join(script));
    let out = run_program(
        Command::new(&program).arg(&script).current_dir(rig_dir()),
        request.to_string().as_bytes(),
        SDK_DEADLINE,
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answer: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{} {}: not one JSON answer ({e}): status {}, stdout {stdout:?}, stderr {:?}",
            program.display(),
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    answer
}

/// The Node SDK (`pusher` on npm) runs `request` (see `tests/pusher/sdk.js`); the
/// answer is `{"ok":true,"result":…}` or `{"ok":false,"error":…}`.
pub async fn node_sdk(request: &Value) -> Value {
    installed(rig_dir().join("node_modules/pusher"));
    sdk(PathBuf::from("node"), "sdk.js", request).await
}

/// The Python SDK (`pusher` on PyPI) runs `request` (see `tests/pusher/sdk.py`).
pub async fn python_sdk(request: &Value) -> Value {
    let python = installed(rig_dir().join(".venv/bin/python"));
    sdk(python, "sdk.py", request).await
}

/// The `result` of an answer that must be `ok`.
pub fn ok(answer: Value) -> Value {
    assert_eq!(answer["ok"], true, "SDK call failed: {answer}");
    answer["result"].clone()
}

/// The page's scripts from `node_modules`, as `Site::files`: `/vendor/pusher.js`
/// (pusher-js's browser build) and `/vendor/echo.js` (Echo's IIFE build, `window.Echo`).
pub fn vendor_files() -> Vec<(String, PathBuf)> {
    let nm = rig_dir().join("node_modules");
    vec![
        (
            "/vendor/pusher.js".to_owned(),
            installed(nm.join("pusher-js/dist/web/pusher.js")),
        ),
        (
            "/vendor/echo.js".to_owned(),
            installed(nm.join("laravel-echo/dist/echo.iife.js")),
        ),
    ]
}

/// A page that loads pusher-js and Echo from the page's origin ([`vendor_files`]) and then
/// runs `script`, with `report(path, text)` in scope: reports go out in order, each after
/// the previous one landed, as `/alert` (what the test waits for) or `/trouble`.
pub fn echo_page(script: &str) -> String {
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>pusher-js + Laravel Echo</title>
<script>
var chain = Promise.resolve();
function report(path, text) {{
  chain = chain.then(function () {{ return fetch(path, {{ method: 'POST', body: String(text) }}); }})
               .catch(function () {{}});
}}
window.addEventListener('error', function (e) {{ report('/trouble', 'script error: ' + e.message); }});
</script>
<script src="/vendor/pusher.js"></script>
<script src="/vendor/echo.js"></script>
<script>
{script}
</script>
</head><body>pusher-js</body></html>
"#
    )
}

/// One HTTP request an SDK made.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path, as on the request line.
    pub path: String,
    /// The query string, as sent (empty if none).
    pub query: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A listener on 127.0.0.1 that records each HTTP request and answers `200 {}`: what an SDK
/// sends, for checks that need no server behind it.
pub struct ApiRecorder {
    pub port: u16,
    requests: mpsc::UnboundedReceiver<Recorded>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiRecorder {
    pub async fn start() -> ApiRecorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, requests) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(Some(r)) =
                        timeout(Duration::from_secs(10), read_request(&mut tcp)).await
                    {
                        let _ = tx.send(r);
                        let _ = tcp
                            .write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                                  Content-Length: 2\r\nConnection: close\r\n\r\n{}",
                            )
                            .await;
                        let _ = tcp.shutdown().await;
                    }
                });
            }
        });
        ApiRecorder {
            port,
            requests,
            task,
        }
    }

    /// The next request (5 s deadline).
    pub async fn next(&mut self) -> Recorded {
        timeout(Duration::from_secs(5), self.requests.recv())
            .await
            .expect("no request reached the recorder within 5 s")
            .expect("recorder ended")
    }
}

impl Drop for ApiRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_request(tcp: &mut tokio::net::TcpStream) -> Option<Recorded> {
    let r = super::chromium::read_request(tcp).await.ok()??;
    let (path, query) = r.target.split_once('?').unwrap_or((&r.target, ""));
    Some(Recorded {
        method: r.method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers: r.headers,
        body: r.body,
    })
}

// ---------------------------------------------------------------------------------------
// The daemon's Pusher door, for tests that drive it
// ---------------------------------------------------------------------------------------

/// A second app: client events off, a small batch limit.
pub const QUIET: App = App {
    id: "1202",
    key: "pushwire-quiet-key",
    secret: "pushwire-quiet-secret",
};

/// `--pusher-apps` for [`APP`] (client events on) and [`QUIET`] (off, batches of 2, three
/// connections).
pub fn apps_json() -> String {
    json!({"apps": [
        {"id": APP.id, "key": APP.key, "secret": APP.secret, "client_events": true,
         "client_event_rate": 5},
        {"id": QUIET.id, "key": QUIET.key, "secret": QUIET.secret, "max_batch_events": 2,
         "max_presence_members": 2, "max_connections": 3},
    ]})
    .to_string()
}

/// A config serving [`apps_json`].
pub fn pusher_config() -> pushwire::Config {
    pushwire::Config {
        pusher_apps: Some(std::sync::Arc::new(
            pushwire::channels::Apps::parse(&apps_json()).unwrap(),
        )),
        ..pushwire::Config::default()
    }
}

/// A Pusher connection as a raw WebSocket client (no pusher-js): frames as JSON values,
/// `data` decoded when it is a JSON string.
pub struct PusherWs {
    pub ws: super::WsClient,
    pub socket_id: String,
}

impl PusherWs {
    /// Connects to `ws://addr/app/{key}?protocol=7` and reads the handshake.
    pub async fn connect(addr: std::net::SocketAddr, key: &str) -> PusherWs {
        let url = format!("ws://{addr}/app/{key}?protocol=7&client=js&version=8.6.0");
        let mut ws = super::WsClient::connect(&url).await;
        let first = decode(&ws.recv_text().await);
        assert_eq!(first["event"], "pusher:connection_established", "{first}");
        let socket_id = first["data"]["socket_id"].as_str().unwrap().to_owned();
        PusherWs { ws, socket_id }
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws.send_text(&frame.to_string()).await;
    }

    /// The next frame.
    pub async fn next(&mut self) -> Value {
        decode(&self.ws.recv_text().await)
    }

    /// The next frame, which must be `event` (on `channel`, if given).
    pub async fn expect(&mut self, event: &str, channel: Option<&str>) -> Value {
        let f = self.next().await;
        assert_eq!(f["event"], event, "{f}");
        if let Some(c) = channel {
            assert_eq!(f["channel"], c, "{f}");
        }
        f
    }

    /// Subscribes to `channel` with the app's signature (`keys`), as `channel_data` on a
    /// presence channel, and returns the answer frame.
    pub async fn subscribe(
        &mut self,
        channel: &str,
        keys: Option<&pushwire::wire::pusher::Keys>,
        channel_data: Option<&str>,
    ) -> Value {
        let mut data = json!({"channel": channel});
        if let Some(k) = keys {
            data["auth"] = json!(k.channel_auth(&self.socket_id, channel, channel_data));
        }
        if let Some(d) = channel_data {
            data["channel_data"] = json!(d);
        }
        self.send(json!({"event": "pusher:subscribe", "data": data}))
            .await;
        self.next().await
    }
}

/// A server frame with its `data` decoded (the protocol sends it as a JSON string).
pub fn decode(text: &str) -> Value {
    let mut v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    if let Some(s) = v["data"].as_str()
        && let Ok(inner) = serde_json::from_str::<Value>(s)
    {
        v["data"] = inner;
    }
    v
}

/// One HTTP request over a raw socket (`Connection: close`): the status and the body.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    body: &[u8],
) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("write head");
    tcp.write_all(body).await.expect("write body");
    let mut out = Vec::new();
    timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
        .await
        .expect("answer within 10 s")
        .expect("read answer");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// A request signed for `app` at `timestamp` (seconds), as the SDKs sign: `target` for
/// [`http`].
pub fn signed(
    app: &App,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    timestamp: u64,
) -> String {
    let query = app.keys().sign_api(method, path, extra, body, timestamp);
    format!("{path}?{query}")
}

/// Seconds since the epoch now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
