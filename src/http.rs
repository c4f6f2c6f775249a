//! The HTTP door for backends and operators (hyper): `POST /push` takes push-port lines and
//! answers with exactly the reply lines the TCP port would give; `/?type=publish` speaks
//! web-msg-sender's API; `/metrics` is Prometheus text; `/healthz` and `/readyz` are for
//! load balancers and systemd.
//!
//! Access is the push port's: `--push-allow` decides by source address (at accept, and
//! again per request, as a reload may narrow it), and with a push secret every request
//! but the health checks needs `Authorization: Bearer SECRET`. Everything a client
//! controls is bounded (connections in all and per address, header bytes, body bytes,
//! request time, reply time); each refusal is a status code with a one-line reason.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::Either;
use http_body_util::{BodyExt, Limited};
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

use crate::access::{IpSlot, Peer, PerIp};
use crate::http_body::{Body, PushReplies};
use crate::http_io::DoorSocket;
use crate::metrics::Metric;
use crate::state::State;
use crate::wire::Payload;

type HttpReply = hyper::Response<Body>;

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
    /// once, each for at most [`crate::http_io::LINGER`]; past that a refused connection
    /// is just closed, so a flood of them costs neither slots nor descriptors.
    fn refuse(&self, stream: TcpStream, why: Refusal) {
        let (status, answer) = why.answer();
        if stream.try_write(answer).is_ok_and(|n| n == answer.len()) {
            self.ctx.metrics.http_status(status);
        }
        let Ok(place) = self.refusals.clone().try_acquire_owned() else {
            return;
        };
        let mut socket = DoorSocket::new(stream, crate::http_io::LINGER);
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
            .and_then(|v| bearer(v.as_bytes()));
        let refusal = match given {
            Some(token) if secret.matches(token) => None,
            Some(_) => Some("bad secret"),
            None => Some("authentication required: send Authorization: Bearer SECRET"),
        };
        if let Some(why) = refusal {
            ctx.metrics.incr(Metric::RefusedPush);
            let mut resp = text(StatusCode::UNAUTHORIZED, why);
            resp.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    }
    match (req.method().clone(), req.uri().path()) {
        (Method::POST, "/push") => match body(req, ctx).await {
            Ok(body) => plain(StatusCode::OK, PushReplies::start(body, ctx).await),
            Err(refusal) => refusal,
        },
        (Method::GET | Method::HEAD, "/metrics") => metrics(ctx),
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
        "/metrics" | "/healthz" | "/readyz" => Some("GET, HEAD"),
        "/" => Some("GET, POST"),
        _ => None,
    }
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
    let collect = Limited::new(req.into_body(), max).collect();
    match tokio::time::timeout(ctx.config.http_request_timeout, collect).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(text(StatusCode::BAD_REQUEST, "could not read the body")),
        Err(_) => Err(text(StatusCode::REQUEST_TIMEOUT, "request timeout")),
    }
}

/// web-msg-sender's push API: `type=publish&to=UID&content=TEXT` in the query or a form
/// (`application/x-www-form-urlencoded`, or `multipart/form-data` as PHP's curl posts an
/// array). TEXT goes to every connection of UID (every bound connection without `to`)
/// with the HTML escaping web-msg-sender applies (`& < > " '`), since pages written for
/// it insert it as HTML. Answers exactly `ok`, `offline` (no connection of UID took it)
/// or `fail` (not a publish request), without a newline, as web-msg-sender does: PHP
/// callers compare the body with `'ok'`. The service says what it means, so a publish
/// reaches the tabs on every node in cluster mode.
async fn web_msg_sender(query: Option<&str>, form: Option<Form>, ctx: &State) -> HttpReply {
    // A form with any field wins whole, as `$_POST = $_POST ? $_POST : $_GET` does.
    let params = match form {
        Some(Form { fields, params }) if fields > 0 => params,
        _ => {
            let mut params = Params::default();
            if let Some(q) = query {
                params.read(q.as_bytes());
            }
            params
        }
    };
    if params.kind.as_deref() != Some("publish") {
        return bare(StatusCode::OK, "fail");
    }
    // The push port's line limit bounds what browsers are sent: the escaped text, up to
    // six times the form's.
    let content = params.content.as_deref().unwrap_or("");
    let max = ctx.config.max_line_bytes;
    if escaped_len(content) > max {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("content larger than {max} bytes once HTML-escaped"),
        );
    }
    let payload = Payload::from(html_escape(content));
    let to = params.to.as_deref().filter(|to| !to.is_empty());
    let reached = crate::service::publish(ctx, to, &payload).resolve().await;
    bare(StatusCode::OK, if reached { "ok" } else { "offline" })
}

#[derive(Default)]
struct Params {
    kind: Option<String>,
    to: Option<String>,
    content: Option<String>,
}

impl Params {
    /// Reads `application/x-www-form-urlencoded` pairs; later ones win. Invalid UTF-8
    /// becomes U+FFFD. Returns how many fields (named pairs) there were.
    fn read(&mut self, raw: &[u8]) -> usize {
        let mut fields = 0;
        for (k, v) in crate::urlencoded::pairs(raw) {
            if k.is_empty() {
                continue;
            }
            fields += 1;
            // Names are form-encoded too (`t%79pe`), as PHP decodes them.
            self.set(&crate::urlencoded::decode(k), &crate::urlencoded::decode(v));
        }
        fields
    }

    fn set(&mut self, name: &[u8], value: &[u8]) {
        let slot = match name {
            b"type" => &mut self.kind,
            b"to" => &mut self.to,
            b"content" => &mut self.content,
            _ => return,
        };
        *slot = Some(String::from_utf8_lossy(value).into_owned());
    }
}

/// A posted form: its fields, and how many there were (PHP's `$_POST` is "set" when
/// there is at least one).
struct Form {
    fields: usize,
    params: Params,
}

impl Form {
    fn read(body: &[u8], multipart: Option<&[u8]>) -> Form {
        let mut params = Params::default();
        let fields = match multipart {
            Some(boundary) => read_multipart(body, boundary, &mut params),
            None => params.read(body),
        };
        Form { fields, params }
    }
}

/// The boundary of a `multipart/form-data` request, if it is one.
fn multipart_boundary(req: &Request<Incoming>) -> Option<Vec<u8>> {
    let ct = req.headers().get(CONTENT_TYPE)?.as_bytes();
    let (mime, params) = match ct.iter().position(|&b| b == b';') {
        Some(i) => (&ct[..i], &ct[i + 1..]),
        None => (ct, &[][..]),
    };
    if !mime
        .trim_ascii()
        .eq_ignore_ascii_case(b"multipart/form-data")
    {
        return None;
    }
    params.split(|&b| b == b';').find_map(|p| {
        let p = p.trim_ascii();
        let (k, v) = p.split_at_checked(9)?;
        if !k.eq_ignore_ascii_case(b"boundary=") {
            return None;
        }
        let v = v
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(v);
        (!v.is_empty()).then(|| v.to_vec())
    })
}

/// Reads the fields of a `multipart/form-data` body (RFC 7578) into `params`; parts that
/// are files (a `filename`) are skipped, as PHP keeps them out of `$_POST`. Returns how
/// many fields there were.
fn read_multipart(body: &[u8], boundary: &[u8], params: &mut Params) -> usize {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    let mut fields = 0;
    for part in split(body, &delimiter).skip(1) {
        // After a delimiter: `--` ends the body, else CRLF, headers, CRLF CRLF, value
        // up to the CRLF before the next delimiter.
        if part.starts_with(b"--") {
            break;
        }
        let Some(part) = part.strip_prefix(b"\r\n") else {
            break;
        };
        let Some(end) = find(part, b"\r\n\r\n") else {
            continue;
        };
        let (head, value) = (&part[..end], &part[end + 4..]);
        let value = value.strip_suffix(b"\r\n").unwrap_or(value);
        let disposition = head
            .split(|&b| b == b'\n')
            .map(<[u8]>::trim_ascii)
            .find(|l| l.len() > 20 && l[..20].eq_ignore_ascii_case(b"content-disposition:"));
        let Some(disposition) = disposition else {
            continue;
        };
        if find(disposition, b"filename=").is_some() {
            continue;
        }
        let Some(name) = disposition_name(disposition) else {
            continue;
        };
        fields += 1;
        params.set(name, value);
    }
    fields
}

/// The `name="..."` of a `Content-Disposition: form-data` line.
fn disposition_name(line: &[u8]) -> Option<&[u8]> {
    let at = line
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .find(|p| p.starts_with(b"name="))?;
    let v = &at[5..];
    Some(
        v.strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(v),
    )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// `hay` cut at each `sep`.
fn split<'a>(hay: &'a [u8], sep: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    let mut rest = Some(hay);
    std::iter::from_fn(move || {
        let r = rest?;
        match find(r, sep) {
            Some(i) => {
                rest = Some(&r[i + sep.len()..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// The length of `s` after [`html_escape`].
fn escaped_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'&' => 5,
            b'<' | b'>' => 4,
            b'"' | b'\'' => 6,
            _ => 1,
        })
        .sum()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(escaped_len(s));
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#039;"),
            c => out.push(c),
        }
    }
    out
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
fn text(status: StatusCode, line: &str) -> HttpReply {
    bare(status, &format!("{line}\n"))
}

/// A plain-text answer of exactly `body`.
fn bare(status: StatusCode, body: &str) -> HttpReply {
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
    fn forms() {
        let mut p = Params::default();
        p.read(b"type=publish&to=u%201&content=a+b%26c%zz&x=1");
        assert_eq!(p.kind.as_deref(), Some("publish"));
        assert_eq!(p.to.as_deref(), Some("u 1"));
        assert_eq!(p.content.as_deref(), Some("a b&c%zz"));
        assert_eq!(
            html_escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#039;&amp;&#039;&lt;/a&gt;"
        );
        let mut q = Params::default();
        q.read(b"t%79pe=publish&%74o=u2");
        assert_eq!(
            (q.kind.as_deref(), q.to.as_deref()),
            (Some("publish"), Some("u2"))
        );
        assert_eq!(Params::default().read(b""), 0);
        assert_eq!(Params::default().read(b"&=x&"), 0);
        assert_eq!(Params::default().read(b"to=u1&x"), 2);
    }

    #[test]
    fn multipart_forms() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\npublish\r\n\
            --XyZ\r\ncontent-disposition: form-data; name=\"content\"\r\n\r\na\r\n--Xy b\r\n\
            --XyZ\r\nContent-Disposition: form-data; name=\"to\"; filename=\"f\"\r\n\r\nfile\r\n\
            --XyZ\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\nu1\r\n--XyZ--\r\n";
        let form = Form::read(body, Some(b"XyZ"));
        assert_eq!(form.fields, 3);
        assert_eq!(form.params.kind.as_deref(), Some("publish"));
        assert_eq!(form.params.content.as_deref(), Some("a\r\n--Xy b"));
        assert_eq!(form.params.to.as_deref(), Some("u1"));
        assert_eq!(Form::read(b"--XyZ--\r\n", Some(b"XyZ")).fields, 0);
        assert_eq!(Form::read(b"garbage", Some(b"XyZ")).fields, 0);
    }

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
    fn escaped_lengths() {
        for s in ["", "plain", r#"<a href="x">'&'</a>"#, "é'<"] {
            assert_eq!(escaped_len(s), html_escape(s).len(), "{s}");
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
    }
}
