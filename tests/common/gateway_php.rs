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

use super::STEP;

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
        Called {
            value: a["value"].clone(),
            serialized: STANDARD
                .decode(a["serialized"].as_str().unwrap_or_default())
                .unwrap(),
            output: a["output"].as_str().unwrap_or_default().to_owned(),
        }
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
