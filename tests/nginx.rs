//! Debian's nginx in front of the server, with the shipped `deploy/nginx/pushwire.conf`
//! (only its ports and certificate paths substituted) and a throw-away self-signed
//! certificate: headless Chromium opens `wss://` through it and receives pushes, and the
//! per-address cap counts the address nginx forwards.
//!
//! nginx runs as the current user in a scratch directory on a free port (its own pid file,
//! logs and temp paths), is stopped when the test ends, and never touches a system nginx.
//! These tests never skip: `scripts/test.sh` installs nginx and openssl.
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use common::chromium::seed_page_over_wss;
use common::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::{Instant, timeout};

/// What one helper program (openssl, `nginx -t`) may take.
const PROGRAM_DEADLINE: Duration = Duration::from_secs(20);

/// Runs a helper program; panics with its output unless it succeeds.
async fn run_ok(cmd: &mut Command, stdin: &[u8]) -> Vec<u8> {
    let out = run_program(cmd, stdin, PROGRAM_DEADLINE).await;
    assert!(
        out.status.success(),
        "{:?}: {}\n{}",
        cmd.as_std(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A self-signed P-256 certificate for `localhost` and 127.0.0.1, valid for a day.
struct Cert {
    cert: String,
    key: String,
    /// base64 of the SHA-256 of its SubjectPublicKeyInfo (Chromium's
    /// `--ignore-certificate-errors-spki-list`).
    spki: String,
}

async fn self_signed(dir: &Scratch) -> Cert {
    let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        b"",
    )
    .await;
    let public = run_ok(
        Command::new("openssl")
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(&cert),
        b"",
    )
    .await;
    let der = run_ok(
        Command::new("openssl").args(["pkey", "-pubin", "-outform", "der"]),
        &public,
    )
    .await;
    let spki = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&der));
    Cert { cert, key, spki }
}

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `text` with its one `from` replaced (panics if `from` is not there exactly once: the
/// shipped file changed, and this test must follow it).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} in deploy/nginx/pushwire.conf"
    );
    text.replacen(from, to, 1)
}

/// The nginx binary: /usr/sbin is not on every user's PATH.
fn nginx_binary() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

/// nginx running the shipped config in front of `upstream`, on 127.0.0.1:`port`; stopped
/// (its whole process group) on drop.
struct Nginx {
    child: Child,
    port: u16,
    dir: Scratch,
    cert: Cert,
}

impl Nginx {
    async fn start(upstream: SocketAddr) -> Nginx {
        let dir = Scratch::new("nginx");
        let cert = self_signed(&dir).await;
        let port = free_addr().port();
        let shipped = repo_file("deploy/nginx/pushwire.conf");
        let site = replace_once(
            &shipped,
            "listen 443 ssl;",
            &format!("listen 127.0.0.1:{port} ssl;"),
        );
        let site = replace_once(
            &site,
            "server 127.0.0.1:1234;",
            &format!("server {upstream};"),
        );
        let site = replace_once(
            &site,
            "/etc/letsencrypt/live/push.example.com/fullchain.pem",
            &cert.cert,
        );
        let site = replace_once(
            &site,
            "/etc/letsencrypt/live/push.example.com/privkey.pem",
            &cert.key,
        );
        std::fs::write(dir.path("pushwire.conf"), site).unwrap();
        let id = |flag: &str| {
            let out = std::process::Command::new("id")
                .arg(flag)
                .output()
                .expect("run id");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let d = dir.0.display();
        // The whole nginx around the shipped file: this user, this directory.
        let main = format!(
            "user {user} {group};\nworker_processes 1;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n    access_log {d}/access.log;\n\
                 client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n\
                 scgi_temp_path {d}/scgi;\n    include {d}/pushwire.conf;\n}}\n",
            user = id("-un"),
            group = id("-gn"),
        );
        std::fs::write(dir.path("nginx.conf"), main).unwrap();
        let globals = format!("daemon off; pid {d}/nginx.pid;");
        let args = |cmd: &mut Command| {
            cmd.arg("-p")
                .arg(&dir.0)
                .arg("-e")
                .arg(dir.path("error.log"))
                .arg("-c")
                .arg(dir.path("nginx.conf"))
                .arg("-g")
                .arg(&globals);
        };
        let mut test = Command::new(nginx_binary());
        args(&mut test);
        run_ok(test.arg("-t"), b"").await;
        let mut cmd = Command::new(nginx_binary());
        args(&mut cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nginx: {e} (scripts/test.sh installs it)"));
        let mut nginx = Nginx {
            child,
            port,
            dir,
            cert,
        };
        let deadline = Instant::now() + STEP;
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", nginx.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx not listening:\n{}",
                nginx.error_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        nginx
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path("error.log")).unwrap_or_default()
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // The master and its worker: a fast shutdown, then nothing left standing.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.start_kill();
    }
}

/// A WebSocket client through nginx over TLS: `openssl s_client` carrying a hand-written
/// upgrade request, masked frames in, server frames out.
struct TlsClient {
    _child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl TlsClient {
    /// Connects, sends the upgrade with `extra` header lines, and returns the client and
    /// the response head.
    async fn open(port: u16, extra: &str) -> (TlsClient, String) {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-nocommands",
                "-servername",
                "localhost",
                "-connect",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start openssl s_client");
        let mut client = TlsClient {
            stdin: child.stdin.take().unwrap(),
            stdout: child.stdout.take().unwrap(),
            _child: child,
        };
        let req = format!(
            "GET / HTTP/1.1\r\nHost: localhost\r\n{extra}Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        client.stdin.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let until = Instant::now() + STEP;
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            match tokio::time::timeout_at(until, client.stdout.read(&mut b)).await {
                Err(_) => panic!("no response head through nginx: {head:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => panic!("closed before a response head: {head:?}"),
                Ok(Ok(_)) => head.push(b[0]),
            }
        }
        (client, String::from_utf8_lossy(&head).into_owned())
    }

    async fn send_text(&mut self, text: &str) {
        self.stdin
            .write_all(&masked_frame(0x1, text.as_bytes()))
            .await
            .unwrap();
    }

    /// The next bytes must be exactly one unmasked text frame holding `text` (< 126 bytes).
    async fn expect_text(&mut self, text: &str) {
        let mut want = vec![0x81, u8::try_from(text.len()).unwrap()];
        want.extend_from_slice(text.as_bytes());
        let mut got = vec![0u8; want.len()];
        timeout(STEP, self.stdout.read_exact(&mut got))
            .await
            .expect("no frame through nginx")
            .expect("read through nginx");
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&got));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_opens_wss_through_nginx_and_gets_pushes() {
    let server = TestServer::start().await;
    let nginx = Nginx::start(server.ws_addr).await;
    let mut push = PushClient::connect(server.push_addr).await;
    let page = seed_page_over_wss(nginx.port, &nginx.cert.spki, &mut push).await;
    drop(page);
    push_until(&mut push, r#"{"uid":"uid1","n":2}"#, "fail\n", STEP).await;
    // It went through nginx: an upgrade answered 101 there, logged once it closed.
    poll_until(STEP, "nginx logging the 101", || async {
        nginx.access_log().contains("\"GET / HTTP/1.1\" 101 ")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_cap_counts_the_address_nginx_forwards() {
    let server = TestServer::start_with(pushwire::Config {
        max_connections_per_ip: 2,
        ..pushwire::Config::default()
    })
    .await;
    let nginx = Nginx::start(server.ws_addr).await;
    let mut push = PushClient::connect(server.push_addr).await;
    // Every connection reaches pushwire from nginx's 127.0.0.1. nginx appends its peer
    // (here 127.0.0.1 too, trusted) to what the client sent, so claimed addresses count.
    let mut tabs = Vec::new();
    for i in 1..=4 {
        let (mut tab, head) =
            TlsClient::open(nginx.port, &format!("X-Forwarded-For: 203.0.113.{i}\r\n")).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "#{i}: {head:?}");
        let uid = format!("n{i}");
        tab.send_text(&uid).await;
        tabs.push((uid, tab));
    }
    for _ in 0..2 {
        let (tab, head) = TlsClient::open(nginx.port, "X-Forwarded-For: 198.51.100.7\r\n").await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head:?}");
        tabs.push(("unbound".to_owned(), tab));
    }
    let (_refused, head) = TlsClient::open(nginx.port, "X-Forwarded-For: 198.51.100.7\r\n").await;
    assert!(
        head.starts_with("HTTP/1.1 429 "),
        "the third from 198.51.100.7: {head:?}"
    );
    // Without a claim the client is nginx's peer, 127.0.0.1, with its own two places.
    for _ in 0..2 {
        let (tab, head) = TlsClient::open(nginx.port, "").await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head:?}");
        tabs.push(("unbound".to_owned(), tab));
    }
    let (_refused, head) = TlsClient::open(nginx.port, "").await;
    assert!(
        head.starts_with("HTTP/1.1 429 "),
        "a third from 127.0.0.1: {head:?}"
    );
    // The four bound ones get their pushes, through nginx.
    for (uid, tab) in tabs.iter_mut().filter(|(uid, _)| uid != "unbound") {
        let line = format!(r#"{{"uid":"{uid}"}}"#);
        push_until(&mut push, &line, "ok\n", STEP).await;
        tab.expect_text(&line).await;
    }
}
