//! One keep-alive HTTP/1.1 connection to a webhook receiver, opened again when it closes:
//! hyper's client connection API over a TCP socket or a rustls session (`https://`,
//! trusting the system's roots: [`system_roots`]).
//!
//! One connection per receiver, one request at a time: deliveries to a receiver stay in
//! order, and a receiver behind a slow link costs one socket. Batching makes up for the
//! lost parallelism (everything queued while a POST is out goes in the next one).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, HeaderValue, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;

use super::filter::Target;

/// Most bytes of a receiver's answer read (and thrown away) so the connection can be
/// used again; a longer answer closes it.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A connection unused this long is closed rather than reused, so a quiet receiver does not
/// hold a socket of ours forever. (One the receiver closed first is seen closed and
/// replaced; one it closes just as a request goes out is replaced once at no cost.)
const IDLE_REUSE: Duration = Duration::from_secs(30);

/// `User-Agent` of every delivery.
const AGENT: &str = concat!("pushwire/", env!("CARGO_PKG_VERSION"));

/// What a receiver answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The status code.
    pub status: u16,
    /// `Retry-After` in seconds, if given so.
    pub retry_after: Option<Duration>,
}

/// Why a delivery got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection (DNS, refused, unreachable).
    Connect(String),
    /// The TLS handshake failed (certificate not trusted, wrong name...).
    Tls(String),
    /// The connection broke during the request.
    Request(String),
    /// No answer within the request timeout.
    Timeout,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "cannot connect: {e}"),
            Failure::Tls(e) => write!(f, "TLS: {e}"),
            Failure::Request(e) => write!(f, "request failed: {e}"),
            Failure::Timeout => f.write_str("no answer within the timeout"),
        }
    }
}

/// The client side of one receiver.
pub(crate) struct Client {
    target: Target,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    open: Option<Open>,
}

struct Open {
    send: SendRequest<Full<Bytes>>,
    used: Instant,
    /// The task driving the connection: ended with it, whatever state it is in (a request
    /// that timed out may leave it waiting for an answer that never comes).
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// A client for `target`; `tls` is needed for `https://`.
    pub(crate) fn new(
        target: Target,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Client, String> {
        let tls = match (target.tls, tls) {
            (false, _) => None,
            (true, None) => return Err(format!("{}: no TLS settings", target.shown())),
            (true, Some(config)) => {
                let name = ServerName::try_from(target.host.clone())
                    .map_err(|e| format!("{}: {e}", target.shown()))?;
                Some((TlsConnector::from(config), name))
            }
        };
        Ok(Client {
            target,
            tls,
            open: None,
        })
    }

    /// POSTs `body` with `headers` (besides Host, User-Agent and Content-Type) and reads
    /// the answer, all within `limit`. A connection the receiver closed while idle is
    /// replaced once at no cost; any other failure closes the connection.
    pub(crate) async fn post(
        &mut self,
        headers: &[(&'static str, HeaderValue)],
        body: Bytes,
        limit: Duration,
    ) -> Result<Answer, Failure> {
        let deadline = Instant::now() + limit;
        match timeout_at(deadline, self.post_once_or_twice(headers, body)).await {
            Ok(answer) => answer,
            Err(_) => {
                // Whatever state it is in, it cannot be trusted with the next request.
                self.open = None;
                Err(Failure::Timeout)
            }
        }
    }

    async fn post_once_or_twice(
        &mut self,
        headers: &[(&'static str, HeaderValue)],
        body: Bytes,
    ) -> Result<Answer, Failure> {
        loop {
            let reused = match &self.open {
                Some(open) if open.used.elapsed() < IDLE_REUSE && !open.send.is_closed() => true,
                _ => {
                    self.open = Some(self.connect().await?);
                    false
                }
            };
            let request = self.request(headers, body.clone());
            let Some(open) = self.open.as_mut() else {
                continue;
            };
            let sent = match open.send.ready().await {
                Ok(()) => open.send.send_request(request).await,
                Err(e) => Err(e),
            };
            let response = match sent {
                Ok(response) => response,
                Err(e) => {
                    self.open = None;
                    if reused && (e.is_canceled() || e.is_incomplete_message() || e.is_closed()) {
                        // The receiver closed it while it was idle: nothing was taken.
                        continue;
                    }
                    return Err(Failure::Request(e.to_string()));
                }
            };
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let closes = response
                .headers()
                .get(CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            let read = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await;
            match (read, self.open.as_mut()) {
                (Ok(_), Some(open)) if !closes => open.used = Instant::now(),
                _ => self.open = None,
            }
            return Ok(Answer {
                status,
                retry_after,
            });
        }
    }

    fn request(
        &self,
        headers: &[(&'static str, HeaderValue)],
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        // Origin form: the connection already names the host.
        *request.uri_mut() = self.target.path.parse().unwrap_or_default();
        let h = request.headers_mut();
        if let Ok(host) = HeaderValue::from_str(&self.target.authority) {
            h.insert(HOST, host);
        }
        h.insert(USER_AGENT, HeaderValue::from_static(AGENT));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in headers {
            h.insert(*name, value.clone());
        }
        request
    }

    async fn connect(&self) -> Result<Open, Failure> {
        let t = &self.target;
        let addrs = tokio::net::lookup_host((t.host.as_str(), t.port))
            .await
            .map_err(|e| Failure::Connect(format!("{}: {e}", t.host)))?;
        let mut last = Failure::Connect(format!("{}: no address", t.host));
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    // Deliveries are small requests waiting for an answer: no Nagle.
                    let _ = tcp.set_nodelay(true);
                    return match &self.tls {
                        None => open(tcp).await,
                        Some((connector, name)) => {
                            let tls = connector
                                .connect(name.clone(), tcp)
                                .await
                                .map_err(|e| Failure::Tls(e.to_string()))?;
                            open(tls).await
                        }
                    };
                }
                Err(e) => last = Failure::Connect(format!("{addr}: {e}")),
            }
        }
        Err(last)
    }
}

/// The HTTP/1.1 handshake on `io`; the connection is driven by a task of its own, which
/// ends when the client drops its side.
async fn open<T>(io: T) -> Result<Open, Failure>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failure::Request(e.to_string()))?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Open {
        send,
        used: Instant::now(),
        task,
    })
}

/// TLS settings trusting the system's certificate authorities (what
/// `rustls-native-certs` finds: `/etc/ssl/certs` on Debian, or `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`). None found is an error: every `https://` delivery would fail.
pub fn system_roots() -> Result<Arc<rustls::ClientConfig>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(String::new, |e| format!(" ({e})"));
        return Err(format!(
            "no trusted certificate authorities found for https:// event URLs{why}: install \
             ca-certificates or set SSL_CERT_FILE"
        ));
    }
    client_config(roots)
}

/// TLS settings trusting `roots` only (HTTP/1.1, TLS 1.2 and 1.3, ring).
pub fn client_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
