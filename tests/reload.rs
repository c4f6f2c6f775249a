//! SIGHUP reloads what can change without a restart (TLS certificate and key, JWT and
//! push secrets, the Origin and push allow-lists) while every connection stays up; a
//! reload with a bad file keeps the settings in use and says why. The real binary, real
//! signals, real sockets.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Daemon, Launch, PushClient, STEP, TestCert, WsClient, poll_until};
use pushwire::auth::Secret;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A directory of files a test rewrites between reloads; removed on drop.
struct Files(std::path::PathBuf);

impl Files {
    fn new(name: &str) -> Files {
        let dir = std::env::temp_dir().join(format!(
            "pushwire-reload-{name}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Files(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends SIGHUP and waits for the reload's outcome line (the `n`th since start): returns
/// it.
async fn reload(daemon: &Daemon, n: usize) -> String {
    daemon.signal("HUP").await;
    let outcome = |l: &&str| l.contains("reloaded") || l.contains("reload failed");
    let waited = tokio::time::timeout(STEP, async {
        while daemon.log().lines().filter(outcome).count() < n {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "no reload outcome #{n}; log:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    log.lines()
        .filter(outcome)
        .nth(n - 1)
        .unwrap_or_default()
        .to_owned()
}

fn wss_url(daemon: &Daemon) -> String {
    format!("wss://localhost:{}/", daemon.ws_addr.port())
}

/// The `connections` count of `/stats`.
async fn connections(push: &mut PushClient) -> u64 {
    let stats: serde_json::Value = serde_json::from_str(&push.request("/stats").await).unwrap();
    stats["connections"]
        .as_u64()
        .expect("connections in /stats")
}

/// 1,000 `wss://` browsers stay connected through a certificate rotation: after SIGHUP a
/// new connection sees the new certificate (a client trusting only the old one is
/// refused), and every old one still receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_certificate_while_1000_browsers_stay_connected() {
    let mut cert = TestCert::new("rotate");
    let files = cert.files();
    let daemon = Launch::new()
        .args(&[
            "--tls-cert",
            files.cert.to_str().unwrap(),
            "--tls-key",
            files.key.to_str().unwrap(),
        ])
        .start()
        .await;
    let url = wss_url(&daemon);
    let mut browsers = Vec::new();
    for i in 0..1000 {
        let mut b = WsClient::connect_tls(&url, &cert).await;
        b.send_text(&format!("u{i}")).await;
        browsers.push(b);
    }
    let mut push = PushClient::connect(daemon.push_addr).await;
    poll_until(STEP, "1000 bound", || async {
        connections(&mut PushClient::connect(daemon.push_addr).await).await == 1000
    })
    .await;

    let old_trust = cert.client_config();
    cert.rotate();
    let line = reload(&daemon, 1).await;
    assert!(
        line.contains("reloaded") && line.contains("tls certificate"),
        "{line}"
    );
    let refused = WsClient::try_connect_tls(&url, old_trust).await;
    assert!(
        refused.is_err(),
        "a client trusting only the old certificate connected: the new one is not served"
    );
    let mut fresh = WsClient::connect_tls(&url, &cert).await;
    fresh.bind("fresh", daemon.push_addr).await;

    assert_eq!(
        connections(&mut push).await,
        1001,
        "a connection was dropped"
    );
    let reply = push.request(r#"/broadcast {"after":"rotation"}"#).await;
    assert!(reply.contains("1001"), "broadcast reached: {reply}");
    for (i, b) in browsers.iter_mut().enumerate() {
        assert_eq!(
            b.recv_text().await,
            r#"{"after":"rotation"}"#,
            "browser {i}"
        );
    }
    assert_eq!(fresh.recv_text().await, r#"{"after":"rotation"}"#);
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Opens a WebSocket with `?token=`; the close code if the server refused it, else the
/// client (the caller waits for the bind).
async fn connect_token(daemon: &Daemon, token: &str) -> WsClient {
    WsClient::connect(&format!("{}?token={token}", daemon.ws_url())).await
}

/// Rotating the JWT secret: old tokens are refused from the reload on, new ones bind,
/// and a user bound with an old token stays bound and keeps receiving.
#[tokio::test]
async fn sighup_rotates_the_jwt_secret_and_bound_users_stay() {
    let files = Files::new("jwt");
    let path = files.write("jwt", "old-secret-0123456789abcdef\n");
    let daemon = Launch::new()
        .args(&["--jwt-secret-file", &path])
        .start()
        .await;
    let old = Secret::new("old-secret-0123456789abcdef");
    let new = Secret::new("new-secret-fedcba9876543210");
    let mut bound = connect_token(&daemon, &old.mint("alice", now() + 600)).await;
    bound.wait_bound("alice", daemon.push_addr).await;

    files.write("jwt", "new-secret-fedcba9876543210\n");
    let line = reload(&daemon, 1).await;
    assert!(line.contains("jwt secret"), "{line}");

    let mut stale = connect_token(&daemon, &old.mint("bob", now() + 600)).await;
    let (code, reason) = stale.expect_close().await;
    assert_eq!(code, 1008, "old token after the rotation: {reason}");
    let mut fresh = connect_token(&daemon, &new.mint("carol", now() + 600)).await;
    fresh.wait_bound("carol", daemon.push_addr).await;

    let mut push = PushClient::connect(daemon.push_addr).await;
    assert_eq!(push.request(r#"{"uid":"alice","n":1}"#).await, "ok\n");
    assert_eq!(bound.recv_text().await, r#"{"uid":"alice","n":1}"#);
}

/// A reload with a broken certificate, an empty secret file or a missing file changes
/// nothing (the log says why, naming the file); fixing the file and reloading again
/// applies it.
#[tokio::test]
async fn a_broken_reload_keeps_the_settings_in_use() {
    let cert = TestCert::new("broken");
    let tls = cert.files();
    let files = Files::new("broken");
    let jwt = files.write("jwt", "the-secret-in-use-0123456789\n");
    let daemon = Launch::new()
        .args(&[
            "--tls-cert",
            tls.cert.to_str().unwrap(),
            "--tls-key",
            tls.key.to_str().unwrap(),
            "--jwt-secret-file",
            &jwt,
        ])
        .start()
        .await;
    let in_use = Secret::new("the-secret-in-use-0123456789");
    let url = wss_url(&daemon);
    let bind_with =
        |secret: &Secret, uid: &str| format!("{url}?token={}", secret.mint(uid, now() + 600));

    let good_cert = std::fs::read_to_string(&tls.cert).unwrap();
    std::fs::write(
        &tls.cert,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let line = reload(&daemon, 1).await;
    assert!(
        line.contains("reload failed") && line.contains("cert.pem"),
        "{line}"
    );
    let mut b = WsClient::connect_tls(&bind_with(&in_use, "u1"), &cert).await;
    b.wait_bound("u1", daemon.push_addr).await;
    std::fs::write(&tls.cert, good_cert).unwrap();

    files.write("jwt", "\n");
    let line = reload(&daemon, 2).await;
    assert!(
        line.contains("reload failed") && line.contains("empty"),
        "{line}"
    );
    let mut b = WsClient::connect_tls(&bind_with(&in_use, "u2"), &cert).await;
    b.wait_bound("u2", daemon.push_addr).await;

    std::fs::remove_file(&jwt).unwrap();
    let line = reload(&daemon, 3).await;
    assert!(
        line.contains("reload failed") && line.contains("jwt"),
        "{line}"
    );
    let mut b = WsClient::connect_tls(&bind_with(&in_use, "u3"), &cert).await;
    b.wait_bound("u3", daemon.push_addr).await;

    files.write("jwt", "the-next-secret-0123456789\n");
    let line = reload(&daemon, 4).await;
    assert!(
        line.contains("reloaded") && line.contains("jwt secret"),
        "{line}"
    );
    let next = Secret::new("the-next-secret-0123456789");
    let mut b = WsClient::connect_tls(&bind_with(&next, "u4"), &cert).await;
    b.wait_bound("u4", daemon.push_addr).await;
    // The first ones never noticed.
    let mut push = PushClient::connect(daemon.push_addr).await;
    assert_eq!(connections(&mut push).await, 4);
}

/// The Origin's answer to a handshake: the HTTP status (101 when it upgraded).
async fn origin_status(daemon: &Daemon, origin: &str) -> u16 {
    let mut req = daemon.ws_url().into_client_request().unwrap();
    req.headers_mut().insert("Origin", origin.parse().unwrap());
    match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake timed out")
    {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("handshake: {e}"),
    }
}

/// With --reload-env-file, SIGHUP takes the allow-lists from the env file (as an admin
/// edits /etc/pushwire/pushwire.env and runs `systemctl reload`), except settings given
/// as flags; a line removed from the file goes back to the default.
#[tokio::test]
async fn the_reload_env_file_swaps_the_allow_lists() {
    let files = Files::new("envfile");
    let env = files.write(
        "pushwire.env",
        "# as shipped, edited\nPUSHWIRE_ALLOWED_ORIGINS=https://a.example\n",
    );
    // systemd loads the file into the environment at start; the daemon re-reads it.
    let daemon = Launch::new()
        .env("PUSHWIRE_ALLOWED_ORIGINS", "https://a.example")
        .env("PUSHWIRE_RELOAD_ENV_FILE", &env)
        .start()
        .await;
    assert_eq!(origin_status(&daemon, "https://a.example").await, 101);
    assert_eq!(origin_status(&daemon, "https://b.example").await, 403);

    files.write(
        "pushwire.env",
        "PUSHWIRE_ALLOWED_ORIGINS = \"https://b.example,https://c.example\"\n\
         PUSHWIRE_PUSH_ALLOW=10.0.0.0/8\n",
    );
    let line = reload(&daemon, 1).await;
    assert!(
        line.contains("allowed origins") && line.contains("push allow-list"),
        "{line}"
    );
    assert_eq!(origin_status(&daemon, "https://a.example").await, 403);
    assert_eq!(origin_status(&daemon, "https://c.example").await, 101);
    let mut push = PushClient::connect(daemon.push_addr).await;
    let refused = push.read_reply_within(STEP).await;
    assert!(
        refused.contains("not allowed"),
        "push from 127.0.0.1: {refused:?}"
    );

    // Lines gone: back to the defaults (any Origin, any address).
    files.write("pushwire.env", "# nothing\n");
    let line = reload(&daemon, 2).await;
    assert!(line.contains("allowed origins"), "{line}");
    assert_eq!(origin_status(&daemon, "https://a.example").await, 101);
    let mut push = PushClient::connect(daemon.push_addr).await;
    assert_eq!(push.request("/ping").await.trim(), "pong");
}

/// A setting given as a flag is the operator's choice for this process: the env file
/// does not override it on reload.
#[tokio::test]
async fn flags_are_not_overridden_by_the_reload_env_file() {
    let files = Files::new("pinned");
    let env = files.write(
        "pushwire.env",
        "PUSHWIRE_ALLOWED_ORIGINS=https://b.example\n",
    );
    let daemon = Launch::new()
        .args(&[
            "--allowed-origins",
            "https://a.example",
            "--reload-env-file",
            &env,
        ])
        .start()
        .await;
    reload(&daemon, 1).await;
    assert_eq!(origin_status(&daemon, "https://a.example").await, 101);
    assert_eq!(origin_status(&daemon, "https://b.example").await, 403);
}

/// A WebSocket handshake carrying `X-Forwarded-For: xff`: the connection, or the HTTP
/// status that refused it.
async fn connect_forwarded(daemon: &Daemon, xff: &str) -> Result<WsClient, u16> {
    let mut req = daemon.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("X-Forwarded-For", xff.parse().unwrap());
    match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake timed out")
    {
        Ok((ws, _)) => Ok(WsClient { ws }),
        Err(e) => Err(common::http_status(&e).unwrap_or_else(|| panic!("handshake: {e}"))),
    }
}

/// The trusted proxies reload too: loopback trusted (the default) counts each forwarded
/// client on its own; after `PUSHWIRE_TRUSTED_PROXIES=none` and SIGHUP the headers are
/// ignored, so the cap counts 127.0.0.1 itself. Connections admitted before stay.
#[tokio::test]
async fn the_reload_env_file_swaps_the_trusted_proxies() {
    let files = Files::new("trusted");
    let env = files.write("pushwire.env", "# loopback trusted: the default\n");
    let daemon = Launch::new()
        .args(&["--max-connections-per-ip", "2", "--reload-env-file", &env])
        .start()
        .await;
    let mut held = Vec::new();
    for client in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        let ws = connect_forwarded(&daemon, client).await;
        held.push(ws.unwrap_or_else(|s| panic!("{client} refused with {s} while trusted")));
    }
    files.write("pushwire.env", "PUSHWIRE_TRUSTED_PROXIES=none\n");
    let line = reload(&daemon, 1).await;
    assert!(line.contains("trusted proxies"), "{line}");
    for client in ["203.0.113.4", "203.0.113.5"] {
        let ws = connect_forwarded(&daemon, client).await;
        held.push(ws.unwrap_or_else(|s| panic!("{client}: {s}, but 127.0.0.1 is under its cap")));
    }
    let status = connect_forwarded(&daemon, "203.0.113.6").await.err();
    assert_eq!(
        status,
        Some(429),
        "headers from loopback must be ignored now"
    );
    let mut push = PushClient::connect(daemon.push_addr).await;
    assert_eq!(
        connections(&mut push).await,
        0,
        "none of the held ones bound a uid"
    );
    for (i, ws) in held.iter_mut().enumerate() {
        ws.bind(&format!("held{i}"), daemon.push_addr).await;
    }
}
