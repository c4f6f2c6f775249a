//! The HTTP door for backends and operators (hyper): `POST /push` takes push-port lines and
//! answers with exactly the reply lines the TCP port would give; `/?type=publish` speaks
//! web-msg-sender's API; `/metrics` is Prometheus text; `/status` is the operators' live
//! page (`status_page.rs`); `/healthz` and `/readyz` are for load balancers and systemd.
//!
//! Access is the push port's: `--push-allow` decides by source address (at accept, and
//! again per request, as a reload may narrow it), and with a push secret every request
//! but the health checks needs `Authorization: Bearer SECRET` (or the secret as HTTP
//! Basic's password, any user name: what a browser asks for on `/status`). Everything a client
//! controls is bounded (connections in all and per address, header bytes, body bytes,
//! request time, reply time); each refusal is a status code with a one-line reason.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures_util::future::Either;
use hyper::body::{Body as _, Incoming};
use hyper::header::{
    ALLOW, AUTHORIZATION, CONNECTION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::http_body::{Body, PushReplies};
use super::http_io::DoorSocket;
use super::web_msg_sender::{Form, multipart_boundary, web_msg_sender};
use crate::access::{IpSlot, Peer, PerIp};
use crate::metrics::Metric;
use crate::state::State;

pub(super) type HttpReply = hyper::Response<Body>;

/// The door's accept-time checks: the allow-list and the per-address cap are decided
/// before a request is read, so a refused or greedy address cannot hold the door's slots
/// by sending its heads slowly (a slowloris).
pub(crate) struct Door {
    ctx: Arc<State>,
    per_ip: PerIp,
    /// Refusals still lingering (see [`Door::refuse`]).
    refusals: Arc<Semaphore>,
}

/// Refusals that may linger at once; past it a refused connection is closed unanswered.
const LINGERING_REFUSALS: usize = 64;

/// Why [`Door`] refused a connection.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// Outside `--push-allow`.
    NotAllowed,
    /// The address holds `--max-http-connections-per-ip` connections.
    PerAddress,
}

impl Refusal {
    /// The whole HTTP answer, written before anything is read.
    fn answer(self) -> (u16, &'static [u8]) {
        match self {
            Refusal::NotAllowed => (
                403,
                b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\n\
                  content-length: 20\r\nconnection: close\r\n\r\naddress not allowed\n",
            ),
            Refusal::PerAddress => (
                429,
                b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain; charset=utf-8\r\n\
                  content-length: 39\r\nconnection: close\r\n\r\n\
                  too many connections from your address\n",
            ),
        }
    }
}

impl Door {
    /// The door's gate, with its own per-address count.
    pub(crate) fn new(ctx: Arc<State>) -> Door {
        Door {
            per_ip: PerIp::new(ctx.config.max_http_connections_per_ip),
            refusals: Arc::new(Semaphore::new(LINGERING_REFUSALS)),
            ctx,
        }
    }

    /// What to do with a new connection: serve it (holding its address's place), or
    /// refuse it at once (answered in a task of its own, outside the door's slots).
    pub(crate) fn accept(
        &self,
        stream: TcpStream,
        peer: Peer,
    ) -> Either<impl Future<Output = ()> + Send + use<>, std::future::Ready<()>> {
        match self.admit(peer) {
            Ok(slot) => Either::Left(serve(stream, peer, self.ctx.clone(), slot)),
            Err(why) => {
                self.refuse(stream, why);
                Either::Right(std::future::ready(()))
            }
        }
    }

    fn admit(&self, peer: Peer) -> Result<Option<IpSlot>, Refusal> {
        let Some(ip) = peer.ip() else {
            return Ok(None);
        };
        let metrics = &self.ctx.metrics;
        if !crate::access::allowed(self.ctx.settings().push_allow.as_deref(), Some(ip)) {
            metrics.incr(Metric::RefusedPush);
            debug!(%peer, "http connection refused: address not allowed");
            return Err(Refusal::NotAllowed);
        }
        match self.per_ip.try_acquire(ip) {
            Some(slot) => Ok(Some(slot)),
            None => {
                metrics.incr(Metric::RefusedHttpPerIp);
                if metrics.should_warn_refusal() {
                    warn!(
                        kind = "http",
                        limit = self.ctx.config.max_http_connections_per_ip,
                        "refusing connections: too many from one address (--max-http-connections-per-ip)"
                    );
                }
                Err(Refusal::PerAddress)
            }
        }
    }

    /// Writes the refusal (a fresh socket has room for it), then closes with a linger so
    /// the client reads it rather than a reset. At most [`LINGERING_REFUSALS`] linger at
    /// once, each for at most [`super::http_io::LINGER`]; past that a refused connection
    /// is just closed, so a flood of them costs neither slots nor descriptors.
    fn refuse(&self, stream: TcpStream, why: Refusal) {
        let (status, answer) = why.answer();
        if stream.try_write(answer).is_ok_and(|n| n == answer.len()) {
            self.ctx.metrics.http_status(status);
        }
        let Ok(place) = self.refusals.clone().try_acquire_owned() else {
            return;
        };
        let mut socket = DoorSocket::new(stream, super::http_io::LINGER);
        tokio::spawn(async move {
            let _ = socket.shutdown().await;
            drop(place);
        });
    }
}

/// Serves one HTTP connection (keep-alive: several requests) until it closes or the
/// daemon drains. `_slot` is its address's place, held until then.
async fn serve(stream: TcpStream, peer: Peer, ctx: Arc<State>, _slot: Option<IpSlot>) {
    let service = {
        let ctx = ctx.clone();
        hyper::service::service_fn(move |req| {
            let ctx = ctx.clone();
            async move { Ok::<_, Infallible>(respond(req, peer, &ctx).await) }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.config.http_request_timeout)
        .max_buf_size(ctx.config.http_max_header_bytes.max(8192));
    let socket = DoorSocket::new(stream, ctx.config.http_request_timeout);
    let conn = builder.serve_connection(TokioIo::new(socket), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(err) = r {
                debug!(%err, "http connection ended with an error");
            }
        }
        () = ctx.push_stop.cancelled() => {
            // Answer the request in progress, then close.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(ctx.config.shutdown_timeout, conn).await;
        }
    }
}

async fn respond(req: Request<Incoming>, peer: Peer, ctx: &Arc<State>) -> HttpReply {
    let reply = route(req, peer, ctx).await;
    ctx.metrics.http_status(reply.status().as_u16());
    reply
}

async fn route(req: Request<Incoming>, peer: Peer, ctx: &Arc<State>) -> HttpReply {
    let path = req.uri().path();
    // Health checks are exempt from the secret (load balancers and systemd call them),
    // not from the address allow-list.
    let settings = ctx.settings();
    if !crate::access::allowed(settings.push_allow.as_deref(), peer.ip()) {
        ctx.metrics.incr(Metric::RefusedPush);
        return text(StatusCode::FORBIDDEN, "address not allowed");
    }
    match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/healthz") => return text(StatusCode::OK, "ok"),
        (&Method::GET | &Method::HEAD, "/readyz") => {
            return if ctx.push_stop.is_cancelled() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining")
            } else if let Some(why) = ctx.nodes.trouble() {
                // It still serves its own browsers, but backends elsewhere cannot reach
                // them and it cannot reach theirs: a balancer should send new ones away.
                text(StatusCode::SERVICE_UNAVAILABLE, &format!("degraded: {why}"))
            } else {
                text(StatusCode::OK, "ready")
            };
        }
        _ => {}
    }
    if ctx.config.pusher_apps.is_some() && crate::pusher::api::wants(path) {
        // Signed with the app's secret instead of the push secret (docs/pusher.md).
        return pusher_api(req, ctx).await;
    }
    if let Some(secret) = &settings.push_secret {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| credential(v.as_bytes()));
        let refusal = match given {
            Some(token) if secret.matches(&token) => None,
            Some(_) => Some("bad secret"),
            None => Some("authentication required: send Authorization: Bearer SECRET"),
        };
        if let Some(why) = refusal {
            ctx.metrics.incr(Metric::RefusedPush);
            let mut resp = text(StatusCode::UNAUTHORIZED, why);
            // A browser opening the live page asks its user for Basic credentials.
            let scheme = if path.starts_with("/status") {
                "Basic realm=\"pushwire\", charset=\"UTF-8\""
            } else {
                "Bearer"
            };
            resp.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(scheme));
            return resp;
        }
    }
    match (req.method().clone(), req.uri().path()) {
        (Method::POST, "/push") => match body(req, ctx).await {
            Ok(body) => plain(StatusCode::OK, PushReplies::start(body, ctx).await),
            Err(refusal) => refusal,
        },
        (Method::GET | Method::HEAD, "/metrics") => metrics(ctx),
        (Method::GET | Method::HEAD, "/status") => whole(crate::status_page::page()),
        (Method::GET | Method::HEAD, "/status.json") => whole(crate::status_page::json(ctx)),
        (method, "/") if method == Method::GET || method == Method::POST => {
            let query = req.uri().query().map(str::to_owned);
            let form = if method == Method::POST {
                let multipart = multipart_boundary(&req);
                match body(req, ctx).await {
                    Ok(body) => Some(Form::read(&body, multipart.as_deref())),
                    Err(refusal) => return refusal,
                }
            } else {
                None
            };
            web_msg_sender(query.as_deref(), form, ctx).await
        }
        (_, path) => match allowed_methods(path) {
            Some(allow) => {
                let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
                resp.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
                resp
            }
            None => text(StatusCode::NOT_FOUND, "not found"),
        },
    }
}

/// The Pusher HTTP API (`pusher/api.rs`): the body read within the door's limits, then
/// answered there.
async fn pusher_api(req: Request<Incoming>, ctx: &State) -> HttpReply {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let body = match body(req, ctx).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let reply = crate::pusher::api::answer(&method, &path, &query, &body, ctx).await;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = bare(status, &reply.body);
    if reply.json {
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    resp
}

/// The methods a known path takes (for 405's `Allow`), `None` for an unknown path.
/// HEAD is GET without the body, for the read-only paths; `/` publishes, so it has none.
fn allowed_methods(path: &str) -> Option<&'static str> {
    match path {
        "/push" => Some("POST"),
        "/metrics" | "/healthz" | "/readyz" | "/status" | "/status.json" => Some("GET, HEAD"),
        "/" => Some("GET, POST"),
        _ => None,
    }
}

/// A reply made whole elsewhere (`status_page.rs`), as the door's body.
fn whole(reply: hyper::Response<Bytes>) -> HttpReply {
    reply.map(Body::whole)
}

/// The secret an `Authorization` header gives: Bearer's token, or Basic's password (any
/// user name: RFC 7617, `user:password` in base64).
fn credential(value: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    if let Some(token) = bearer(value) {
        return Some(token.into());
    }
    let (scheme, rest) = value.split_at_checked(5)?;
    if !scheme.eq_ignore_ascii_case(b"basic") || rest.first() != Some(&b' ') {
        return None;
    }
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some(decoded[colon + 1..].to_vec().into())
}

/// The token of `Authorization: Bearer TOKEN`; the scheme is case-insensitive (RFC 9110
/// §11.1), one or more spaces follow it.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii_start();
    (!token.is_empty()).then_some(token)
}

/// The whole body, within `--http-max-body-bytes` and the request timeout.
///
/// A body declared longer than the limit (`Content-Length`) is refused before a byte of
/// it is read, so a client that sent `Expect: 100-continue` is told 413, never
/// `100 Continue`. Every 413 closes the connection (the rest of the body is not read);
/// the close lingers so a client still sending reads the 413 (`http_io.rs`).
///
/// The usual body (one push line, in the same packet as its head) is all here at once:
/// it is taken as it is, with no copy, and the request timer is armed only if the body
/// has to be waited for (a timer per request was ~10% of a one-line push's CPU).
async fn body(req: Request<Incoming>, ctx: &State) -> Result<Bytes, HttpReply> {
    let max = ctx.config.http_max_body_bytes;
    let too_large = || {
        let mut resp = text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body larger than {max} bytes"),
        );
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        resp
    };
    if req.body().size_hint().lower() > max as u64 {
        return Err(too_large());
    }
    let mut incoming = req.into_body();
    let mut got = Gathered::default();
    let mut gather = |cx: &mut Context<'_>| gather_ready(&mut incoming, cx, &mut got, max);
    let first = std::future::poll_fn(|cx| Poll::Ready(gather(cx))).await;
    let done = match first {
        Poll::Ready(done) => done,
        Poll::Pending => {
            let rest = std::future::poll_fn(&mut gather);
            match tokio::time::timeout(ctx.config.http_request_timeout, rest).await {
                Ok(done) => done,
                Err(_) => return Err(text(StatusCode::REQUEST_TIMEOUT, "request timeout")),
            }
        }
    };
    match done {
        Ok(()) => Ok(got.finish()),
        Err(BodyError::TooLarge) => Err(too_large()),
        Err(BodyError::Broken) => Err(text(StatusCode::BAD_REQUEST, "could not read the body")),
    }
}

/// Why a body could not be read whole.
enum BodyError {
    /// Over `--http-max-body-bytes`.
    TooLarge,
    /// The connection failed, or the body's framing (chunked) was bad.
    Broken,
}

/// A body's data frames so far: the first as hyper gave it, copied together only if
/// more come.
#[derive(Default)]
struct Gathered {
    first: Option<Bytes>,
    more: BytesMut,
    len: usize,
}

impl Gathered {
    fn push(&mut self, data: Bytes, max: usize) -> Result<(), BodyError> {
        self.len += data.len();
        if self.len > max {
            return Err(BodyError::TooLarge);
        }
        if data.is_empty() {
            return Ok(());
        }
        match self.first.take() {
            None if self.more.is_empty() => self.first = Some(data),
            first => {
                if let Some(first) = first {
                    self.more.extend_from_slice(&first);
                }
                self.more.extend_from_slice(&data);
            }
        }
        Ok(())
    }

    fn finish(self) -> Bytes {
        self.first.unwrap_or_else(|| self.more.freeze())
    }
}

/// Takes the body's frames that are here: `Ready` at its end or on an error, `Pending`
/// while more is to come.
fn gather_ready(
    body: &mut Incoming,
    cx: &mut Context<'_>,
    got: &mut Gathered,
    max: usize,
) -> Poll<Result<(), BodyError>> {
    loop {
        match ready!(Pin::new(&mut *body).poll_frame(cx)) {
            None => return Poll::Ready(Ok(())),
            Some(Err(_)) => return Poll::Ready(Err(BodyError::Broken)),
            Some(Ok(frame)) => {
                // Trailers carry nothing a push needs.
                if let Ok(data) = frame.into_data()
                    && let Err(err) = got.push(data, max)
                {
                    return Poll::Ready(Err(err));
                }
            }
        }
    }
}

fn metrics(ctx: &State) -> HttpReply {
    let body = ctx.prometheus();
    let mut resp = hyper::Response::new(Body::whole(Bytes::from(body)));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// A one-line plain-text answer.
pub(super) fn text(status: StatusCode, line: &str) -> HttpReply {
    bare(status, &format!("{line}\n"))
}

/// A plain-text answer of exactly `body`.
pub(super) fn bare(status: StatusCode, body: &str) -> HttpReply {
    plain(status, Body::whole(Bytes::from(body.to_owned())))
}

/// A plain-text answer.
fn plain(status: StatusCode, body: Body) -> HttpReply {
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_whole_http_answers() {
        for why in [Refusal::NotAllowed, Refusal::PerAddress] {
            let (status, bytes) = why.answer();
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut resp = httparse::Response::new(&mut headers);
            let Ok(httparse::Status::Complete(head)) = resp.parse(bytes) else {
                panic!("{why:?}: not a complete head");
            };
            assert_eq!(resp.code, Some(status));
            let len = resp
                .headers
                .iter()
                .find(|h| h.name == "content-length")
                .map(|h| {
                    std::str::from_utf8(h.value)
                        .unwrap()
                        .parse::<usize>()
                        .unwrap()
                });
            assert_eq!(len, Some(bytes.len() - head), "{why:?}");
            assert!(bytes.ends_with(b"\n"));
        }
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bEaReR   abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearerabc"), None);
        assert_eq!(bearer(b"Basic abc"), None);
        // "ops:s3cret", "x:a:b" (the password holds a colon), ":p" (no user name).
        assert_eq!(
            credential(b"Basic b3BzOnMzY3JldA==").as_deref(),
            Some(&b"s3cret"[..])
        );
        assert_eq!(credential(b"basic eDphOmI=").as_deref(), Some(&b"a:b"[..]));
        assert_eq!(credential(b"Basic OnA=").as_deref(), Some(&b"p"[..]));
        assert_eq!(credential(b"Bearer t").as_deref(), Some(&b"t"[..]));
        assert_eq!(credential(b"Basic !!!"), None);
        assert_eq!(
            credential(b"Basic bm9jb2xvbg=="),
            None,
            "no colon: not Basic"
        );
        assert_eq!(credential(b"Digest x"), None);
    }
}
