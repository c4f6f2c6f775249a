//! Behind a reverse proxy (`--trusted-proxies`): connections from a trusted peer are
//! counted by the client address their forwarding headers name, anyone else's headers are
//! ignored, and garbage counts as the proxy itself. Real sockets against the real server;
//! the proxy is played by the test's own connections from loopback (trusted by default),
//! `tests/nginx.rs` puts the real nginx in front.
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const TOO_MANY: &str = "too many connections from your address";

/// A WebSocket to `ws` from source address `src` with `headers` added to the upgrade
/// request: the client, or the HTTP status it was refused with.
async fn open(
    ws: SocketAddr,
    src: &str,
    headers: &[(&'static str, &str)],
) -> Result<WsClient, u16> {
    let tcp = tcp_from(src, ws).await;
    let mut req = format!("ws://{ws}/").into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut()
            .append(*name, HeaderValue::from_str(value).unwrap());
    }
    let r = timeout(
        STEP,
        tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp)),
    )
    .await
    .expect("handshake timed out");
    r.map(|(ws, _)| WsClient { ws })
        .map_err(|e| http_status(&e).unwrap_or_else(|| panic!("handshake failed: {e}")))
}

/// `open` from 127.0.0.1 with one `X-Forwarded-For`.
async fn via_proxy(ws: SocketAddr, xff: &str) -> Result<WsClient, u16> {
    open(ws, "127.0.0.1", &[("X-Forwarded-For", xff)]).await
}

/// `open`, then bind `uid`; panics if refused.
async fn bound(
    server: &TestServer,
    src: &str,
    headers: &[(&'static str, &str)],
    uid: &str,
) -> WsClient {
    let mut tab = open(server.ws_addr, src, headers)
        .await
        .unwrap_or_else(|status| panic!("{uid} from {src} {headers:?} refused: {status}"));
    tab.bind(uid, server.push_addr).await;
    tab
}

/// One bound connection from `src` per forwarded address `203.0.113.{i}`, `i` in `ids`,
/// bound as uid `{uid}{i}`.
async fn bind_each(
    server: &TestServer,
    src: &str,
    ids: std::ops::RangeInclusive<u8>,
    uid: &str,
) -> Vec<(String, WsClient)> {
    let mut tabs = Vec::new();
    for i in ids {
        let (xff, uid) = (format!("203.0.113.{i}"), format!("{uid}{i}"));
        let tab = bound(server, src, &[("X-Forwarded-For", &xff)], &uid).await;
        tabs.push((uid, tab));
    }
    tabs
}

/// Sends an upgrade request from 127.0.0.1 with `extra` (raw header lines, each ending
/// in CRLF) and returns the response head, and the socket (open after a 101).
async fn raw_upgrade(ws: SocketAddr, extra: &[u8]) -> (String, TcpStream) {
    let mut tcp = tcp_from("127.0.0.1", ws).await;
    let mut req = b"GET / HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    req.extend_from_slice(extra);
    req.extend_from_slice(
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    tcp.write_all(&req).await.unwrap();
    let mut got = Vec::new();
    let until = Instant::now() + STEP;
    while !got.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        match tokio::time::timeout_at(until, tcp.read(&mut b)).await {
            Err(_) => panic!("no response head within {STEP:?}: {got:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => panic!("closed before a response head: {got:?}"),
            Ok(Ok(_)) => got.push(b[0]),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), tcp)
}

/// The body of a refusal after its head (the server closes after it).
async fn rest(mut tcp: TcpStream) -> String {
    let mut body = Vec::new();
    let _ = timeout(STEP, tcp.read_to_end(&mut body)).await;
    String::from_utf8_lossy(&body).into_owned()
}

async fn stat(server: &TestServer, key: &str) -> u64 {
    let stats = PushClient::connect(server.push_addr)
        .await
        .request("/stats")
        .await;
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {stats}"))
}

/// Pushes to `uid` and checks `tab` got it.
async fn reaches(server: &TestServer, tab: &mut WsClient, uid: &str) {
    let line = format!(r#"{{"uid":"{uid}","n":1}}"#);
    let mut push = PushClient::connect(server.push_addr).await;
    assert_eq!(push.request(&line).await, "ok\n", "{uid}");
    assert_eq!(tab.recv_text().await, line);
}

fn capped(per_ip: usize) -> pushwire::Config {
    pushwire::Config {
        max_connections_per_ip: per_ip,
        ..pushwire::Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_clients_each_get_the_per_address_cap() {
    let server = TestServer::start_with(capped(3)).await;
    // Six browsers behind the local proxy, from six addresses: more than the cap all
    // arrive from 127.0.0.1, and all are let in.
    let mut tabs = bind_each(&server, "127.0.0.1", 1..=6, "u").await;
    // One forwarded address: three in, the fourth refused as a direct one would be; an
    // entry the browser put in front (a proxy appends on the right) changes nothing.
    let same = "198.51.100.7";
    for i in 0..3 {
        let uid = format!("same{i}");
        tabs.push((
            uid.clone(),
            bound(&server, "127.0.0.1", &[("X-Forwarded-For", same)], &uid).await,
        ));
    }
    assert_eq!(via_proxy(server.ws_addr, same).await.err(), Some(429));
    assert_eq!(
        via_proxy(server.ws_addr, "203.0.113.99, 198.51.100.7")
            .await
            .err(),
        Some(429)
    );
    let (head, tcp) = raw_upgrade(server.ws_addr, b"X-Forwarded-For: 198.51.100.7\r\n").await;
    assert!(head.starts_with("HTTP/1.1 429 "), "{head:?}");
    assert_eq!(rest(tcp).await, format!("{TOO_MANY}\n"));
    assert_eq!(stat(&server, "refused_per_ip").await, 3);

    // The proxy's own address kept its whole allowance: connections without headers are
    // counted as 127.0.0.1, three of them.
    for i in 0..3 {
        let uid = format!("direct{i}");
        tabs.push((uid.clone(), bound(&server, "127.0.0.1", &[], &uid).await));
    }
    assert_eq!(
        open(server.ws_addr, "127.0.0.1", &[]).await.err(),
        Some(429)
    );

    // Closing one of 198.51.100.7's frees its place (when its task ends: poll).
    let (_, closed) = tabs.remove(6);
    closed.close().await;
    let deadline = Instant::now() + STEP;
    let mut again = loop {
        match via_proxy(server.ws_addr, same).await {
            Ok(tab) => break tab,
            Err(429) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(status) => panic!("198.51.100.7's place never freed: {status}"),
        }
    };
    again.bind("same-again", server.push_addr).await;
    reaches(&server, &mut again, "same-again").await;
    for (uid, tab) in &mut tabs {
        reaches(&server, tab, uid).await;
    }
    assert_eq!(stat(&server, "connections").await, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_and_x_real_ip_name_the_client() {
    let server = TestServer::start_with(capped(1)).await;
    let mut tabs = Vec::new();
    // RFC 7239, a quoted IPv6 address with a port: counted per /64, like a direct one.
    let v6 = r#"for="[2001:db8:cafe::17]:4711";proto=https"#;
    tabs.push((
        "v6",
        bound(&server, "127.0.0.1", &[("Forwarded", v6)], "v6").await,
    ));
    let same_64 = r#"for="[2001:db8:cafe::99]""#;
    assert_eq!(
        open(server.ws_addr, "127.0.0.1", &[("Forwarded", same_64)])
            .await
            .err(),
        Some(429)
    );
    // Walked from the right: the trusted last hop is skipped.
    let two_hops = "for=192.0.2.60, for=127.0.0.1";
    tabs.push((
        "hops",
        bound(&server, "127.0.0.1", &[("Forwarded", two_hops)], "hops").await,
    ));
    assert_eq!(
        open(
            server.ws_addr,
            "127.0.0.1",
            &[("Forwarded", "for=192.0.2.60")]
        )
        .await
        .err(),
        Some(429)
    );
    // X-Real-IP alone.
    tabs.push((
        "real",
        bound(&server, "127.0.0.1", &[("X-Real-IP", "192.0.2.77")], "real").await,
    ));
    assert_eq!(
        open(server.ws_addr, "127.0.0.1", &[("X-Real-IP", "192.0.2.77")])
            .await
            .err(),
        Some(429)
    );
    // X-Forwarded-For comes first: 192.0.2.77 is full, 192.0.2.88 is not.
    let both = [
        ("X-Real-IP", "192.0.2.77"),
        ("Forwarded", "for=192.0.2.77"),
        ("X-Forwarded-For", "192.0.2.88"),
    ];
    tabs.push(("xff", bound(&server, "127.0.0.1", &both, "xff").await));
    // Forwarded before X-Real-IP.
    let both = [("X-Real-IP", "192.0.2.99"), ("Forwarded", "for=192.0.2.77")];
    assert_eq!(
        open(server.ws_addr, "127.0.0.1", &both).await.err(),
        Some(429)
    );
    for (uid, tab) in &mut tabs {
        reaches(&server, tab, uid).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_headers_count_as_the_proxy() {
    let server = TestServer::start_with(capped(1)).await;
    // 127.0.0.1's one place, taken by a connection without headers.
    let mut direct = bound(&server, "127.0.0.1", &[], "direct").await;
    let garbage: [&[u8]; 11] = [
        b"X-Forwarded-For: unknown\r\n",
        b"X-Forwarded-For: <script>alert(1)</script>\r\n",
        b"X-Forwarded-For: 300.1.1.1\r\n",
        b"X-Forwarded-For: 203.0.113.5, garbage\r\n",
        b"X-Forwarded-For: \xff\xfe\xfd\r\n",
        b"X-Forwarded-For:\r\n",
        b"Forwarded: for=\"[2001:db8::1\r\n",
        b"Forwarded: for=unknown;proto=https\r\n",
        b"Forwarded: for=2001:db8::1\r\n",
        b"X-Real-IP: 203.0.113.5\r\nX-Real-IP: 203.0.113.6\r\n",
        b"X-Real-IP: localhost\r\n",
    ];
    for extra in garbage {
        let (head, tcp) = raw_upgrade(server.ws_addr, extra).await;
        let what = String::from_utf8_lossy(extra);
        assert!(head.starts_with("HTTP/1.1 429 "), "{what:?}: {head:?}");
        assert_eq!(rest(tcp).await, format!("{TOO_MANY}\n"), "{what:?}");
    }
    // A long list, garbage on the left of the client, within the head's byte budget.
    let mut long = b"X-Forwarded-For: ".to_vec();
    long.extend_from_slice(&b"junk, ".repeat(2000));
    long.extend_from_slice(b"203.0.113.5\r\n");
    let (head, _long) = raw_upgrade(server.ws_addr, &long).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head:?}");
    // Unhurt: the bound connection is served, and once it is gone garbage gets its place.
    reaches(&server, &mut direct, "direct").await;
    direct.close().await;
    let deadline = Instant::now() + STEP;
    loop {
        let (head, _tcp) = raw_upgrade(server.ws_addr, garbage[0]).await;
        if head.starts_with("HTTP/1.1 101 ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "127.0.0.1's place never freed: {head:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_from_untrusted_peers_are_ignored() {
    // Only 127.0.0.2 is a proxy: 127.0.0.1's headers count for nothing.
    let server = TestServer::start_with(pushwire::Config {
        trusted_proxies: pushwire::access::parse_cidrs("127.0.0.2/32").unwrap(),
        ..capped(2)
    })
    .await;
    let mut tabs = Vec::new();
    tabs.extend(bind_each(&server, "127.0.0.1", 1..=2, "a").await);
    for headers in [
        [("X-Forwarded-For", "203.0.113.3")],
        [("Forwarded", "for=203.0.113.3")],
        [("X-Real-IP", "203.0.113.3")],
    ] {
        assert_eq!(
            open(server.ws_addr, "127.0.0.1", &headers).await.err(),
            Some(429),
            "{headers:?}"
        );
    }
    tabs.extend(bind_each(&server, "127.0.0.2", 1..=4, "b").await);
    drop(server);

    // Nobody trusted: loopback's headers are ignored too.
    let server = TestServer::start_with(pushwire::Config {
        trusted_proxies: Vec::new(),
        ..capped(2)
    })
    .await;
    tabs.extend(bind_each(&server, "127.0.0.1", 1..=2, "c").await);
    assert_eq!(
        via_proxy(server.ws_addr, "203.0.113.3").await.err(),
        Some(429)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_budget_applies_to_the_forwarded_address() {
    let server = TestServer::start_with(pushwire::Config {
        max_pending_per_ip: 2,
        ..pushwire::Config::default()
    })
    .await;
    // Two upgraded but not bound yet from 203.0.113.1: its pending allowance.
    let mut waiting = Vec::new();
    for _ in 0..2 {
        waiting.push(
            via_proxy(server.ws_addr, "203.0.113.1")
                .await
                .expect("pending one"),
        );
    }
    let (head, tcp) = raw_upgrade(server.ws_addr, b"X-Forwarded-For: 203.0.113.1\r\n").await;
    assert!(head.starts_with("HTTP/1.1 429 "), "{head:?}");
    assert_eq!(
        rest(tcp).await,
        "too many handshakes in progress from your address\n"
    );
    // Other forwarded addresses have their own, far past the proxy's own two.
    for i in 2..=6 {
        waiting.push(
            via_proxy(server.ws_addr, &format!("203.0.113.{i}"))
                .await
                .expect("pending"),
        );
    }
    // Bound connections are pending no more.
    for (i, tab) in waiting.iter_mut().enumerate() {
        tab.bind(&format!("w{i}"), server.push_addr).await;
    }
    let mut third = via_proxy(server.ws_addr, "203.0.113.1")
        .await
        .expect("after the binds");
    third.bind("third", server.push_addr).await;
    assert_eq!(stat(&server, "refused_pending").await, 1);
}

/// The real binary: loopback is trusted by default, the log names the forwarded client,
/// and `PUSHWIRE_TRUSTED_PROXIES=none` turns it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_trusts_loopback_by_default() {
    let daemon = Launch::new()
        .args(&["--max-connections-per-ip", "2"])
        .rust_log("info,pushwire=debug")
        .start()
        .await;
    daemon
        .wait_line("trusted_proxies=127.0.0.0/8,::1/128", STEP)
        .await;
    let mut tabs = Vec::new();
    for i in 1..=3 {
        let mut tab = via_proxy(daemon.ws_addr, &format!("203.0.113.{i}"))
            .await
            .expect("admitted");
        tab.bind(&format!("d{i}"), daemon.push_addr).await;
        tabs.push(tab);
    }
    let line = daemon.wait_line("client=203.0.113.3", STEP).await;
    assert!(
        line.contains("peer=127.0.0.1:") && line.contains("bound"),
        "{line}"
    );
    tabs.push(
        via_proxy(daemon.ws_addr, "203.0.113.3")
            .await
            .expect("its second"),
    );
    assert_eq!(
        via_proxy(daemon.ws_addr, "203.0.113.3").await.err(),
        Some(429)
    );
    drop(daemon);

    let daemon = Launch::new()
        .args(&["--max-connections-per-ip", "2"])
        .env("PUSHWIRE_TRUSTED_PROXIES", "none")
        .start()
        .await;
    daemon.wait_line("trusted_proxies=none", STEP).await;
    for i in 1..=2 {
        tabs.push(
            via_proxy(daemon.ws_addr, &format!("203.0.113.{i}"))
                .await
                .expect("admitted"),
        );
    }
    assert_eq!(
        via_proxy(daemon.ws_addr, "203.0.113.3").await.err(),
        Some(429)
    );
}

/// `check-config` names a bad `--trusted-proxies` by flag or variable, and takes `none`.
#[tokio::test]
async fn check_config_refuses_bad_trusted_proxies() {
    let check = |flags: &[&str], env: Option<&str>| {
        let mut cmd = pushwire_command();
        cmd.args([
            "--ws-listen",
            "127.0.0.1:0",
            "--push-listen",
            "127.0.0.1:0",
            "--http-listen",
            "off",
        ])
        .args(flags)
        .arg("check-config");
        if let Some(value) = env {
            cmd.env("PUSHWIRE_TRUSTED_PROXIES", value);
        }
        async move {
            let out = run_program(&mut cmd, b"", STEP).await;
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, _, stderr) = check(&["--trusted-proxies", "10.0.0.0/8,10.0.0.0/33"], None).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: ")
            && stderr.contains("--trusted-proxies")
            && stderr.contains("10.0.0.0/33")
            && stderr.contains("prefix longer than 32"),
        "{stderr}"
    );
    let (code, _, stderr) = check(&[], Some("192.168.1.1,nginx")).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("error: PUSHWIRE_TRUSTED_PROXIES") && stderr.contains("\"nginx\""),
        "{stderr}"
    );
    for good in ["none", "", "10.0.0.0/8, fd00::/8,192.0.2.1"] {
        let (code, stdout, stderr) = check(&[], Some(good)).await;
        assert_eq!(
            (code, stdout.as_str()),
            (Some(0), "config ok\n"),
            "{good:?}: {stderr}"
        );
    }
}
