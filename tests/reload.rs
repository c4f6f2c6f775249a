//! SIGHUP reloads what can change without a restart (TLS certificate and key, JWT and
//! push secrets, the Origin and push allow-lists) while every connection stays up; a
//! reload with a bad file keeps the settings in use and says why. The real binary, real
//! signals, real sockets.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Daemon, Launch, PushClient, STEP, TestCert, WsClient, WsEvent, poll_until};
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

    // Lines gone: the lists stay (a missing line never opens a door).
    files.write("pushwire.env", "# nothing\n");
    let line = reload(&daemon, 2).await;
    assert!(line.contains("nothing changed"), "{line}");
    assert_eq!(origin_status(&daemon, "https://a.example").await, 403);
    let mut push = PushClient::connect(daemon.push_addr).await;
    let refused = push.read_reply_within(STEP).await;
    assert!(refused.contains("not allowed"), "{refused:?}");

    // `any`, written out: back to any Origin, any address (a WARN says so).
    files.write(
        "pushwire.env",
        "PUSHWIRE_ALLOWED_ORIGINS=any\nPUSHWIRE_PUSH_ALLOW=any\n",
    );
    let line = reload(&daemon, 3).await;
    assert!(
        line.contains("WARN")
            && line.contains("allowed origins removed")
            && line.contains("push allow-list removed"),
        "{line}"
    );
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

// --- A reload never opens a door the file does not open explicitly -------------------------

/// The push secret as the unit's `EnvironmentFile=` hands it over (an environment variable).
const ENV_PUSH_SECRET: &str = "push-secret-from-the-environment-0123";
/// The JWT secret, in a file the environment names (`PUSHWIRE_JWT_SECRET_FILE`).
const FILE_JWT_SECRET: &str = "jwt-secret-from-a-file-0123456789";

/// A daemon whose secrets come from the environment (the push secret itself, the JWT
/// secret from a file it names), with `env` as its --reload-env-file.
async fn env_secured(files: &Files, env: &str) -> Daemon {
    let jwt = files.write("jwt", &format!("{FILE_JWT_SECRET}\n"));
    Launch::new()
        .env("PUSHWIRE_JWT_SECRET_FILE", &jwt)
        .env("PUSHWIRE_PUSH_SECRET", ENV_PUSH_SECRET)
        .env("PUSHWIRE_RELOAD_ENV_FILE", env)
        .start()
        .await
}

/// What a backend that never sent `/auth` gets for `/ping` (`pong`: the port is open).
async fn ping_without_auth(daemon: &Daemon) -> String {
    PushClient::connect(daemon.push_addr)
        .await
        .request("/ping")
        .await
}

const AUTH_REQUIRED: &str =
    "{\"ok\":false,\"error\":\"authentication required: send /auth SECRET first\"}\n";

/// How a browser that sends a bare uid (no token) ends: refused with 1008 (`true`), or
/// bound (`false`: nothing came back within 2 s).
async fn bare_uid_refused(mut ws: WsClient) -> bool {
    ws.send_text("bare-uid").await;
    match tokio::time::timeout(Duration::from_secs(2), ws.next_event()).await {
        Ok(WsEvent::Close(1008, _)) => true,
        Ok(other) => panic!("a bare uid got {other:?}"),
        Err(_) => false,
    }
}

/// Both doors still locked with the secrets the daemon started with: a push without
/// `/auth` and a bare uid are refused, `/auth` with the secret and a token signed with it
/// are taken.
async fn assert_locked(daemon: &Daemon, what: &str) {
    assert_eq!(
        ping_without_auth(daemon).await,
        AUTH_REQUIRED,
        "{what}: a push without /auth"
    );
    let bare = WsClient::connect(&daemon.ws_url()).await;
    assert!(bare_uid_refused(bare).await, "{what}: a bare uid bound");
    let mut push = PushClient::connect(daemon.push_addr).await;
    assert_eq!(
        push.request(&format!("/auth {ENV_PUSH_SECRET}")).await,
        "{\"ok\":true}\n",
        "{what}"
    );
    assert_eq!(push.request("/ping").await, "pong\n", "{what}");
    let token = Secret::new(FILE_JWT_SECRET).mint("signed", now() + 600);
    let mut signed = connect_token(daemon, &token).await;
    assert_receives(&mut signed, "signed", daemon).await;
}

/// `ws`, bound as `uid`, receives a push made with `/auth` (the harness's bind probes
/// push without it).
async fn assert_receives(ws: &mut WsClient, uid: &str, daemon: &Daemon) {
    let mut push = PushClient::connect(daemon.push_addr).await;
    assert_eq!(
        push.request(&format!("/auth {ENV_PUSH_SECRET}")).await,
        "{\"ok\":true}\n"
    );
    let line = format!("{{\"uid\":\"{uid}\",\"n\":1}}");
    common::push_until(&mut push, &line, "ok\n", STEP).await;
    assert_eq!(ws.recv_text().await, line);
}

/// `pushwire --reload-env-file FILE check-config --no-bind` in an empty environment:
/// whether it said `config ok`, and its stderr.
fn check_config_of(env_file: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .env_clear()
        .args(["--reload-env-file", env_file, "check-config", "--no-bind"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run pushwire check-config");
    (
        out.status.success() && out.stdout == b"config ok\n",
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A file that is not an env file as systemd and the shell both read it (the wrong file
/// pasted, `export` lines, a misspelt key, shell syntax, a quote left open, a last line
/// cut short, an empty value) is refused whole: `reload failed` at WARN with the line and
/// the reason (never the value), both doors stay locked with the secrets from the
/// environment, and `check-config` refuses the same file with the same reason.
#[tokio::test]
async fn a_reload_file_that_is_not_an_env_file_is_refused_whole() {
    let files = Files::new("bad-kinds");
    let env = files.write("pushwire.env", "# as installed: every line commented\n");
    let daemon = env_secured(&files, &env).await;
    let cases = [
        (
            "prose",
            "This file sets up pushwire: see the README.\nPUSHWIRE_ALLOWED_ORIGINS=https://a.example\n",
            "line 1: not KEY=VALUE",
        ),
        (
            "export lines",
            "export PUSHWIRE_PUSH_SECRET=push-secret-from-the-environment-0123\n",
            "line 1: shell syntax (export)",
        ),
        (
            "a misspelt key",
            "PUSHWIRE_PUSH_SECERT=push-secret-from-the-environment-0123\n",
            "line 1: unknown setting PUSHWIRE_PUSH_SECERT",
        ),
        (
            "a command substitution",
            "# the secret from the vault\nPUSHWIRE_JWT_SECRET=$(cat /etc/pushwire/jwt)\n",
            "line 2 (PUSHWIRE_JWT_SECRET): shell syntax",
        ),
        (
            "backticks",
            "PUSHWIRE_JWT_SECRET=`cat /etc/pushwire/jwt`\n",
            "line 1 (PUSHWIRE_JWT_SECRET): shell syntax",
        ),
        (
            "a quote left open",
            "PUSHWIRE_ALLOWED_ORIGINS=\"https://a.example\n",
            "line 1 (PUSHWIRE_ALLOWED_ORIGINS): unbalanced quote",
        ),
        (
            "a last line cut short",
            "PUSHWIRE_ALLOWED_ORIGINS=https://a.example\nPUSHWIRE_PUSH_ALLOW=10.0.0.0/8,192.168.0.0/1",
            "line 2 (PUSHWIRE_PUSH_ALLOW): no newline at the end",
        ),
        (
            "an empty secret",
            "PUSHWIRE_PUSH_SECRET=\n",
            "line 1 (PUSHWIRE_PUSH_SECRET): empty",
        ),
    ];
    for (n, (what, text, reason)) in cases.iter().enumerate() {
        files.write("pushwire.env", text);
        let line = reload(&daemon, n + 1).await;
        assert!(
            line.contains("WARN") && line.contains("reload failed") && line.contains(reason),
            "{what}: {line}"
        );
        for secret in [ENV_PUSH_SECRET, "cat /etc/pushwire/jwt"] {
            assert!(!line.contains(secret), "{what}: a value in the log: {line}");
        }
        assert_locked(&daemon, what).await;
        let (ok, stderr) = check_config_of(&env);
        assert!(
            !ok && stderr.contains("--reload-env-file") && stderr.contains(reason),
            "check-config on {what}: {stderr}"
        );
    }
}

/// A truncated (empty) file or one of comments only names nothing, so nothing changes: the
/// secrets the environment gave stay.
#[tokio::test]
async fn an_empty_reload_file_keeps_the_secrets_from_the_environment() {
    let files = Files::new("empty");
    let env = files.write("pushwire.env", "");
    let daemon = env_secured(&files, &env).await;
    let line = reload(&daemon, 1).await;
    assert!(line.contains("reloaded: nothing changed"), "{line}");
    assert_locked(&daemon, "empty file").await;
    files.write(
        "pushwire.env",
        "# PUSHWIRE_PUSH_SECRET=commented out\n\n; and so on\n",
    );
    let line = reload(&daemon, 2).await;
    assert!(line.contains("reloaded: nothing changed"), "{line}");
    assert_locked(&daemon, "comments only").await;
    assert!(
        check_config_of(&env).0,
        "check-config refused a comment-only file"
    );
}

/// The setup `systemd/pushwire.env` recommends for secrets: `LoadCredential=` files named
/// by `Environment=PUSHWIRE_*_SECRET_FILE=%d/...` in a drop-in, so in the environment and
/// not in the env file, which is the shipped one with TLS set. A reload to rotate the
/// certificate keeps both secrets, and says so at INFO (nothing but the certificate
/// changed).
#[tokio::test]
async fn the_systemd_credential_setup_keeps_the_secrets_across_reloads() {
    let files = Files::new("credentials");
    let mut cert = TestCert::new("credentials");
    let tls = cert.files();
    let (tls_cert, tls_key) = (tls.cert.to_str().unwrap(), tls.key.to_str().unwrap());
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/pushwire.env"))
            .unwrap();
    let edited = shipped
        .replace(
            "#PUSHWIRE_TLS_CERT=/etc/ssl/certs/push.example.com.pem",
            &format!("PUSHWIRE_TLS_CERT={tls_cert}"),
        )
        .replace(
            "#PUSHWIRE_TLS_KEY=/etc/ssl/private/push.example.com.key",
            &format!("PUSHWIRE_TLS_KEY={tls_key}"),
        );
    assert_ne!(shipped, edited, "the shipped file has no TLS lines to set");
    let env = files.write("reload.env", &edited);
    std::fs::create_dir(files.0.join("credentials")).unwrap();
    let jwt = files.write("credentials/jwt-secret", &format!("{FILE_JWT_SECRET}\n"));
    let push = files.write("credentials/push-secret", &format!("{ENV_PUSH_SECRET}\n"));
    // What systemd hands the daemon: the env file's lines, the drop-in's, the unit's.
    let daemon = Launch::new()
        .env("PUSHWIRE_TLS_CERT", tls_cert)
        .env("PUSHWIRE_TLS_KEY", tls_key)
        .env("PUSHWIRE_JWT_SECRET_FILE", &jwt)
        .env("PUSHWIRE_PUSH_SECRET_FILE", &push)
        .env("PUSHWIRE_RELOAD_ENV_FILE", &env)
        .start()
        .await;

    cert.rotate();
    let line = reload(&daemon, 1).await;
    assert!(
        line.contains("INFO") && line.contains("reloaded changed=tls certificate"),
        "{line}"
    );
    assert!(!line.contains("secret"), "{line}");
    assert_eq!(ping_without_auth(&daemon).await, AUTH_REQUIRED);
    let bare = WsClient::connect_tls(&wss_url(&daemon), &cert).await;
    assert!(
        bare_uid_refused(bare).await,
        "a bare uid bound after the reload"
    );
    let token = Secret::new(FILE_JWT_SECRET).mint("signed", now() + 600);
    let url = format!("{}?token={token}", wss_url(&daemon));
    let mut signed = WsClient::connect_tls(&url, &cert).await;
    assert_receives(&mut signed, "signed", &daemon).await;
}

/// A secret file the environment names (not the reload file) is still re-read at each
/// reload: a rotation applies, is logged at WARN by name only, and old tokens are refused.
#[tokio::test]
async fn a_secret_file_named_by_the_environment_still_rotates() {
    let files = Files::new("rotating");
    let env = files.write("pushwire.env", "# no secrets here\n");
    let daemon = env_secured(&files, &env).await;
    let old = Secret::new(FILE_JWT_SECRET);
    let new = Secret::new("the-next-jwt-secret-0123456789");
    files.write("jwt", "the-next-jwt-secret-0123456789\n");
    let line = reload(&daemon, 1).await;
    assert!(
        line.contains("WARN") && line.contains("reloaded") && line.contains("jwt secret rotated"),
        "{line}"
    );
    assert!(!line.contains("push secret"), "{line}");
    let mut stale = connect_token(&daemon, &old.mint("bob", now() + 600)).await;
    assert_eq!(
        stale.expect_close().await.0,
        1008,
        "an old token after rotation"
    );
    let mut fresh = connect_token(&daemon, &new.mint("carol", now() + 600)).await;
    assert_receives(&mut fresh, "carol", &daemon).await;
    let bare = WsClient::connect(&daemon.ws_url()).await;
    assert!(
        bare_uid_refused(bare).await,
        "a bare uid bound after the rotation"
    );
    assert_eq!(ping_without_auth(&daemon).await, AUTH_REQUIRED);
    let log = daemon.log();
    assert!(!log.contains("the-next-jwt-secret") && !log.contains(FILE_JWT_SECRET));
}

/// Only the documented values remove a trust setting: `none` for a secret, `any` for an
/// allow-list. Each removal is a WARN naming the setting (never its value); the doors
/// then open as the file says, and a secret written out again closes them.
#[tokio::test]
async fn none_and_any_in_the_file_remove_a_setting_with_a_warning() {
    let files = Files::new("explicit");
    let env = files.write(
        "pushwire.env",
        "PUSHWIRE_ALLOWED_ORIGINS=https://a.example\n",
    );
    let jwt = files.write("jwt", &format!("{FILE_JWT_SECRET}\n"));
    let daemon = Launch::new()
        .env("PUSHWIRE_JWT_SECRET_FILE", &jwt)
        .env("PUSHWIRE_PUSH_SECRET", ENV_PUSH_SECRET)
        .env("PUSHWIRE_ALLOWED_ORIGINS", "https://a.example")
        .env("PUSHWIRE_RELOAD_ENV_FILE", &env)
        .start()
        .await;
    let line = reload(&daemon, 1).await;
    assert!(line.contains("reloaded: nothing changed"), "{line}");
    assert_eq!(origin_status(&daemon, "https://b.example").await, 403);

    files.write(
        "pushwire.env",
        "PUSHWIRE_PUSH_SECRET=none\nPUSHWIRE_JWT_SECRET_FILE=none\nPUSHWIRE_ALLOWED_ORIGINS=any\n",
    );
    let line = reload(&daemon, 2).await;
    for change in [
        "jwt secret removed",
        "push secret removed",
        "allowed origins removed",
    ] {
        assert!(
            line.contains("WARN") && line.contains(change),
            "{change}: {line}"
        );
    }
    for value in [ENV_PUSH_SECRET, FILE_JWT_SECRET, jwt.as_str(), "a.example"] {
        assert!(!line.contains(value), "{value} in {line}");
    }
    assert_eq!(ping_without_auth(&daemon).await, "pong\n");
    let bare = WsClient::connect(&daemon.ws_url()).await;
    assert!(!bare_uid_refused(bare).await);
    assert_eq!(origin_status(&daemon, "https://b.example").await, 101);
    assert!(check_config_of(&env).0, "check-config refused none/any");

    files.write(
        "pushwire.env",
        &format!("PUSHWIRE_PUSH_SECRET={ENV_PUSH_SECRET}\nPUSHWIRE_JWT_SECRET_FILE={jwt}\n"),
    );
    let line = reload(&daemon, 3).await;
    assert!(
        line.contains("WARN")
            && line.contains("jwt secret set")
            && line.contains("push secret set"),
        "{line}"
    );
    assert_locked(&daemon, "secrets written out again").await;
}

/// 100 SIGHUPs while another thread rewrites the reload file in place (truncate, then
/// 1 to 13 bytes per write: a reload may see it empty, cut anywhere in a line, or whole),
/// and a backend and a browser keep knocking without credentials: none is ever let in,
/// no backend is refused by a half-read allow-list, and the doors still open to the right
/// secrets at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighups_racing_an_in_place_rewrite_never_open_a_door() {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let files = Files::new("race");
    let env = files.write("pushwire.env", "# being rewritten\n");
    let daemon = env_secured(&files, &env).await;
    let versions = [
        "# pushwire.env, rewritten in place\nPUSHWIRE_TRUSTED_PROXIES=127.0.0.0/8\n".to_owned(),
        format!(
            "PUSHWIRE_PUSH_SECRET={ENV_PUSH_SECRET}\nPUSHWIRE_TRUSTED_PROXIES=none\nPUSHWIRE_PUSH_ALLOW=127.0.0.0/8,10.0.0.0/8\n"
        ),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), env.clone());
        std::thread::spawn(move || {
            let mut rewrites = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&path)
                    .unwrap();
                // 1 to 13 bytes per write, so that over the rewrites a read may stop
                // anywhere in a line.
                let size = 1 + rewrites / 2 % 13;
                for chunk in versions[rewrites % 2].as_bytes().chunks(size) {
                    f.write_all(chunk).unwrap();
                    std::thread::yield_now();
                }
                rewrites += 1;
            }
            rewrites
        })
    };
    let counter = || Arc::new(AtomicUsize::new(0));
    let (opened, odd, bound, push_knocks, ws_knocks) =
        (counter(), counter(), counter(), counter(), counter());
    // A backend without credentials, as fast as it can.
    let backend = {
        let (stop, opened, odd, knocks) = (
            stop.clone(),
            opened.clone(),
            odd.clone(),
            push_knocks.clone(),
        );
        let push_addr = daemon.push_addr;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut push = PushClient::connect(push_addr).await;
                match push.request("/ping").await.as_str() {
                    AUTH_REQUIRED => {}
                    "pong\n" => {
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                    // A refusal by a half-read allow-list: as wrong, counted apart.
                    _ => {
                        odd.fetch_add(1, Ordering::Relaxed);
                    }
                }
                knocks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // A browser with a bare uid: refused at once while JWT holds.
    let browser = {
        let (stop, bound, knocks) = (stop.clone(), bound.clone(), ws_knocks.clone());
        let ws_url = daemon.ws_url();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut ws = WsClient::connect(&ws_url).await;
                ws.send_text("bare-uid").await;
                match tokio::time::timeout(Duration::from_millis(500), ws.next_event()).await {
                    Ok(WsEvent::Close(1008, _)) => {}
                    _ => {
                        bound.fetch_add(1, Ordering::Relaxed);
                    }
                }
                knocks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for _ in 0..100 {
        daemon.signal("HUP").await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the last reloads run while the knocking goes on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    backend.await.unwrap();
    browser.await.unwrap();
    let rewrites = writer.join().unwrap();
    let log = daemon.log();
    let (applied, refused) = (
        log.lines().filter(|l| l.contains("reloaded")).count(),
        log.lines().filter(|l| l.contains("reload failed")).count(),
    );
    let (push_knocks, ws_knocks) = (
        push_knocks.load(Ordering::Relaxed),
        ws_knocks.load(Ordering::Relaxed),
    );
    eprintln!(
        "{rewrites} rewrites, {applied} reloads applied, {refused} refused; \
         {push_knocks} backends and {ws_knocks} browsers without credentials: \
         {} backends let in, {} browsers bound",
        opened.load(Ordering::Relaxed),
        bound.load(Ordering::Relaxed)
    );
    assert!(applied + refused > 0, "no reload ran:\n{log}");
    assert!(push_knocks > 0 && ws_knocks > 0);
    assert_eq!(
        opened.load(Ordering::Relaxed),
        0,
        "pushes taken without /auth"
    );
    assert_eq!(
        odd.load(Ordering::Relaxed),
        0,
        "backends refused by a half-read allow-list"
    );
    assert_eq!(bound.load(Ordering::Relaxed), 0, "bare uids bound");
    assert!(!log.contains(ENV_PUSH_SECRET), "a secret in the log");
    assert_locked(&daemon, "after the race").await;
}
