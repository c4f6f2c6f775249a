//! What the browser port serves over plain HTTP besides the upgrade: `GET /pushwire.js`,
//! the protocol v1 helper (`clients/js/pushwire.js`, compiled in), so a page can load the
//! client that matches the daemon it talks to.

use std::time::Duration;

use crate::transport::Transport;

/// The helper, as in the repository.
pub(crate) const PUSHWIRE_JS: &str = include_str!("../clients/js/pushwire.js");

/// How long the answer may take to leave (the peer may be slow on purpose).
const WRITE_LIMIT: Duration = Duration::from_secs(5);

/// Whether a request head asks for the helper (`GET` or `HEAD`, any query string, not
/// an upgrade: a WebSocket may still connect on any path, this one included). `Some(true)`
/// for `HEAD`.
pub(crate) fn wants_helper(head: &[u8]) -> Option<bool> {
    let upgrade = head
        .split(|&b| b == b'\n')
        .any(|l| l.len() >= 8 && l[..8].eq_ignore_ascii_case(b"upgrade:"));
    if upgrade {
        return None;
    }
    let line = head.split(|&b| b == b'\n').next()?;
    let mut parts = line.split(|&b| b == b' ');
    let head_only = match parts.next()? {
        b"GET" => false,
        b"HEAD" => true,
        _ => return None,
    };
    let target = parts.next()?;
    let path = target.split(|&b| b == b'?').next()?;
    (path == b"/pushwire.js").then_some(head_only)
}

/// Answers with the helper (cacheable for an hour, loadable from any origin) and closes.
pub(crate) async fn serve_helper(tcp: &mut Transport, head_only: bool) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/javascript; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: public, max-age=3600\r\n\
         Access-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n",
        PUSHWIRE_JS.len()
    );
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(PUSHWIRE_JS.as_bytes());
    }
    let _ = crate::frames::write_raw(tcp, &out, WRITE_LIMIT).await;
}

#[cfg(test)]
mod tests {
    use super::wants_helper;

    #[test]
    fn requests_for_the_helper() {
        assert_eq!(wants_helper(b"GET /pushwire.js HTTP/1.1\r\n"), Some(false));
        assert_eq!(
            wants_helper(b"HEAD /pushwire.js?v=3 HTTP/1.1\r\n"),
            Some(true)
        );
        assert_eq!(wants_helper(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(wants_helper(b"POST /pushwire.js HTTP/1.1\r\n"), None);
        assert_eq!(wants_helper(b"GET /pushwire.jsx HTTP/1.1\r\n"), None);
        let upgrade = b"GET /pushwire.js HTTP/1.1\r\nHost: x\r\nUPGRADE: websocket\r\n\r\n";
        assert_eq!(wants_helper(upgrade), None);
    }
}
