//! The HTTP door for backends and operators (hyper): `POST /push` takes push-port lines and
//! answers with exactly the reply lines the TCP port would give; `/?type=publish` speaks
//! web-msg-sender's API; `/metrics` is Prometheus text; `/healthz` and `/readyz` are for
//! load balancers and systemd.
//!
//! Access is the push port's: `--push-allow` decides by source address, and with a push
//! secret every request but the health checks needs `Authorization: Bearer SECRET`.
//! Everything a client controls is bounded (header bytes, body bytes, request time,
//! connections); each refusal is a status code with a one-line reason.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tracing::debug;

use crate::access::Peer;
use crate::metrics::Metric;
use crate::service::{self, Replies, Reply, Response};
use crate::state::State;
use crate::wire::command::auth_secret;
use crate::wire::{Frame, LineFramer, Payload};

type HttpReply = hyper::Response<Full<Bytes>>;

/// Serves one HTTP connection (keep-alive: several requests) until it closes or the
/// daemon drains.
pub(crate) async fn serve(stream: TcpStream, peer: Peer, ctx: Arc<State>) {
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
    let conn = builder.serve_connection(TokioIo::new(stream), service);
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

async fn respond(req: Request<Incoming>, peer: Peer, ctx: &State) -> HttpReply {
    let reply = route(req, peer, ctx).await;
    ctx.metrics.http_status(reply.status().as_u16());
    reply
}

async fn route(req: Request<Incoming>, peer: Peer, ctx: &State) -> HttpReply {
    let path = req.uri().path();
    // Health checks are exempt from the secret (load balancers and systemd call them),
    // not from the address allow-list.
    if !crate::access::allowed(ctx.config.push_allow.as_deref(), peer.ip()) {
        ctx.metrics.incr(Metric::RefusedPush);
        return text(StatusCode::FORBIDDEN, "address not allowed");
    }
    match (req.method(), path) {
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") => {
            return if ctx.push_stop.is_cancelled() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining")
            } else {
                text(StatusCode::OK, "ready")
            };
        }
        _ => {}
    }
    if let Some(secret) = &ctx.config.push_secret {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        match given {
            Some(token) if secret.matches(token) => {}
            Some(_) => {
                ctx.metrics.incr(Metric::RefusedPush);
                return text(StatusCode::UNAUTHORIZED, "bad secret");
            }
            None => {
                ctx.metrics.incr(Metric::RefusedPush);
                return text(
                    StatusCode::UNAUTHORIZED,
                    "authentication required: send Authorization: Bearer SECRET",
                );
            }
        }
    }
    match (req.method().clone(), req.uri().path()) {
        (Method::POST, "/push") => match body(req, ctx).await {
            Ok(body) => push_lines(body, ctx).await,
            Err(refusal) => refusal,
        },
        (Method::GET, "/metrics") => metrics(ctx),
        (method, "/") if method == Method::GET || method == Method::POST => {
            let query = req.uri().query().map(str::to_owned);
            let form = if method == Method::POST {
                match body(req, ctx).await {
                    Ok(body) => Some(body),
                    Err(refusal) => return refusal,
                }
            } else {
                None
            };
            web_msg_sender(query.as_deref(), form.as_deref(), ctx)
        }
        (_, "/push" | "/metrics" | "/healthz" | "/readyz" | "/") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The whole body, within `--http-max-body-bytes` and the request timeout.
async fn body(req: Request<Incoming>, ctx: &State) -> Result<Bytes, HttpReply> {
    let max = ctx.config.http_max_body_bytes;
    let collect = Limited::new(req.into_body(), max).collect();
    match tokio::time::timeout(ctx.config.http_request_timeout, collect).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body larger than {max} bytes"),
        )),
        Ok(Err(_)) => Err(text(StatusCode::BAD_REQUEST, "could not read the body")),
        Err(_) => Err(text(StatusCode::REQUEST_TIMEOUT, "request timeout")),
    }
}

/// `POST /push`: every line of the body as if written to the push port, the replies in
/// order. `/auth` lines answer `{"ok":true}`: the request is already authorized.
async fn push_lines(body: Bytes, ctx: &State) -> HttpReply {
    let mut framer = LineFramer::new(ctx.config.max_line_bytes);
    let mut buf = BytesMut::from(body);
    let mut replies = Replies::default();
    let mut out = BytesMut::new();
    let mut answer = |frame: Frame, first: Option<u8>, out: &mut BytesMut| {
        let response = match &frame {
            Frame::Line(line) if auth_secret(line).is_some() => Response::Ready(Reply::Authorized),
            frame => service::handle(ctx, frame, first),
        };
        replies.push(response, out);
    };
    while let Some(frame) = framer.next_frame(&mut buf) {
        answer(frame, framer.too_long_first_byte(), &mut out);
    }
    if let Some(frame) = framer.finish(&mut buf) {
        answer(frame, framer.too_long_first_byte(), &mut out);
    }
    while !replies.is_empty() {
        replies.flush(&mut out).await;
    }
    let mut resp = hyper::Response::new(Full::new(out.freeze()));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// web-msg-sender's push API: `type=publish&to=UID&content=TEXT` in the query or a form.
/// TEXT goes to every connection of UID (every bound connection without `to`) with the
/// HTML escaping web-msg-sender applies (`& < > " '`), since pages written for it insert
/// it as HTML. Answers `ok`, `offline` (no connection of UID took it) or `fail` (not a
/// publish request).
fn web_msg_sender(query: Option<&str>, form: Option<&[u8]>, ctx: &State) -> HttpReply {
    let mut params = Params::default();
    if let Some(q) = query {
        params.read(q.as_bytes());
    }
    if let Some(f) = form {
        // The form wins, as `$_POST ? $_POST : $_GET` does.
        let mut posted = Params::default();
        posted.read(f);
        if posted.kind.is_some() {
            params = posted;
        }
    }
    if params.kind.as_deref() != Some("publish") {
        return text(StatusCode::OK, "fail");
    }
    let payload = Payload::from(html_escape(params.content.as_deref().unwrap_or("")));
    let registry = &ctx.registry;
    match params.to.as_deref().filter(|to| !to.is_empty()) {
        Some(to) => {
            let delivery = registry.push(to, &payload);
            text(StatusCode::OK, if delivery.ok() { "ok" } else { "offline" })
        }
        None => {
            registry.broadcast(&payload, &[]);
            text(StatusCode::OK, "ok")
        }
    }
}

#[derive(Default)]
struct Params {
    kind: Option<String>,
    to: Option<String>,
    content: Option<String>,
}

impl Params {
    /// Reads `application/x-www-form-urlencoded` pairs; later ones win. Invalid UTF-8
    /// becomes U+FFFD.
    fn read(&mut self, raw: &[u8]) {
        for (k, v) in crate::urlencoded::pairs(raw) {
            let slot = match k {
                b"type" => &mut self.kind,
                b"to" => &mut self.to,
                b"content" => &mut self.content,
                _ => continue,
            };
            *slot = Some(String::from_utf8_lossy(&crate::urlencoded::decode(v)).into_owned());
        }
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
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
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// A one-line plain-text answer.
fn text(status: StatusCode, line: &str) -> HttpReply {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(format!("{line}\n"))));
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
    }
}
