//! php-cli running `tests/php/gateway_driver.php`: the test GatewayClient
//! (`tests/php/Gateway.php`), one static call per request, in one PHP process.
//!
//! php is required: a missing one is a failure (`scripts/test.sh` installs php-cli).

use std::path::Path;
use std::process::Stdio;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;

use std::net::SocketAddr;

use super::{Daemon, Launch, STEP, WsClient, WsEvent};

/// What one call returned.
#[derive(Debug)]
pub struct Called {
    /// The return value, as PHP's `json_encode` writes it.
    pub value: Value,
    /// `serialize()` of the return value: the exact PHP value (int vs string keys).
    pub serialized: Vec<u8>,
    /// What the call echoed (GatewayClient echoes some refusals instead of throwing).
    pub output: String,
}

/// One PHP process driving the test GatewayClient.
pub struct GatewayPhp {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl GatewayPhp {
    /// Starts php with `$registerAddress` set.
    pub async fn start(register: impl Into<Value>) -> GatewayPhp {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/php/gateway_driver.php");
        let mut child = Command::new("php")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start php: {e} (scripts/test.sh installs php-cli)"));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut php = GatewayPhp {
            child,
            stdin,
            stdout,
        };
        php.set("registerAddress", register).await;
        php
    }

    async fn op(&mut self, req: Value) -> Value {
        let mut line = req.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        let mut answer = String::new();
        // A query may wait 5 s for a gateway that does not answer, as the library does.
        let n = timeout(STEP * 3, self.stdout.read_line(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("php driver: no answer to {req}"))
            .unwrap();
        if n == 0 {
            let status = self.child.wait().await;
            panic!("php driver ended ({status:?}) on {req}");
        }
        serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("php driver answered {answer:?} to {req}: {e}"))
    }

    /// `Gateway::$name = value`.
    pub async fn set(&mut self, name: &str, value: impl Into<Value>) {
        let a = self
            .op(json!({"op": "set", "name": name, "value": value.into()}))
            .await;
        assert_eq!(a["value"], true, "set {name}: {a}");
    }

    /// `Gateway::method(...args)`; panics if it threw.
    pub async fn call(&mut self, method: &str, args: Value) -> Called {
        let a = self
            .op(json!({"op": "call", "method": method, "args": args}))
            .await;
        if a.get("exception").is_some() {
            panic!("Gateway::{method}({args}) threw: {a}");
        }
        self_called(&a)
    }

    /// `Gateway::method(...args)`: `None` if it threw.
    #[allow(dead_code)]
    pub async fn call_or_throw(&mut self, method: &str, args: Value) -> Option<Called> {
        let a = self
            .op(json!({"op": "call", "method": method, "args": args.clone()}))
            .await;
        if a.get("exception").is_some() {
            return None;
        }
        Some(self_called(&a))
    }

    /// `Gateway::method(...args)` must throw: `(class, message)`.
    pub async fn throws(&mut self, method: &str, args: Value) -> (String, String) {
        let a = self
            .op(json!({"op": "call", "method": method, "args": args}))
            .await;
        match (a["exception"].as_str(), a["message"].as_str()) {
            (Some(class), Some(message)) => (class.to_owned(), message.to_owned()),
            _ => panic!("Gateway::{method}({args}) returned {a} instead of throwing"),
        }
    }
}

/// A call's answer as the PHP side reported it.
fn self_called(a: &Value) -> Called {
    Called {
        value: a["value"].clone(),
        serialized: STANDARD
            .decode(a["serialized"].as_str().unwrap_or_default())
            .unwrap(),
        output: a["output"].as_str().unwrap_or_default().to_owned(),
    }
}

/// The daemon with its GatewayClient door, and the door's addresses.
pub struct Door {
    pub daemon: Daemon,
    pub register: SocketAddr,
    pub gateway: SocketAddr,
    pub greeted: SocketAddr,
}

impl Door {
    pub async fn start(extra: &[&str]) -> Door {
        let mut args = vec![
            "--gateway-listen",
            "127.0.0.1:0",
            "--gateway-register-listen",
            "127.0.0.1:0",
            "--gateway-ws-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let daemon = Launch::new().args(&args).rust_log("info").start().await;
        let line = daemon.wait_line("GatewayClient door open", STEP).await;
        let field = |name: &str| -> SocketAddr {
            let key = format!("{name}=");
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key.as_str()))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .parse()
                .unwrap()
        };
        Door {
            register: field("register"),
            gateway: field("gateway"),
            greeted: field("greeted_ws"),
            daemon,
        }
    }

    /// A page on the greeted listener, and the client_id it was greeted with.
    pub async fn page(&self) -> (WsClient, String) {
        let deadline = tokio::time::Instant::now() + STEP * 2;
        let (ws, text) = loop {
            let mut ws = WsClient::connect(&format!("ws://{}/", self.greeted)).await;
            match ws.next_event().await {
                WsEvent::Text(t) => break (ws, t),
                // Cluster mode: no connection number before the node holds its tag.
                WsEvent::Close(1013, _) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                other => panic!("greeted page got {other:?}"),
            }
        };
        let greeting: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(greeting["type"], "init", "{greeting}");
        let id = greeting["client_id"].as_str().unwrap().to_owned();
        assert_eq!(
            greeting,
            json!({"type": "init", "client_id": id}),
            "exactly the demo's"
        );
        (ws, id)
    }

    pub async fn php(&self) -> GatewayPhp {
        GatewayPhp::start(self.register.to_string()).await
    }
}

/// Polls a query until it answers `want`: a void call (a send, a bind) on the persistent
/// connection runs independently of a query on its own connection, as on GatewayWorker.
pub async fn eventually(php: &mut GatewayPhp, method: &str, args: Value, want: Value) {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let got = php.call(method, args.clone()).await.value;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{method}({args}) answered {got}, not {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
