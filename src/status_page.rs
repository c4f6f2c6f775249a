//! The operators' live page on the HTTP door: `GET /status` is one static HTML file
//! (`src/status_page.html`, compiled in: no framework, no CDN, works offline) whose few
//! lines of JS fetch `GET /status.json` every second and draw it: what `pushwire status`
//! prints, rates, refusals by reason, the Redis link, the event receivers, and in cluster
//! mode a row per node (`node_figures.rs`).
//!
//! Both answer under the `/metrics` rules (the push allow-list, the push secret); the
//! HTTP door routes them here.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use serde::ser::SerializeMap;
use sha2::{Digest, Sha256};

use crate::events::ReceiverStatus;
use crate::metrics::Metric;
use crate::node_figures::NodeRow;
use crate::state::State;

/// The page, as in the repository.
const PAGE: &str = include_str!("status_page.html");

/// `pushwire --version`'s text.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("PUSHWIRE_GIT"),
    ")"
);

/// A whole answer; the HTTP door sends it as its body type.
type Reply = hyper::Response<Bytes>;

/// `GET /status`. Its Content-Security-Policy lets the page run its own script (by
/// hash) and fetch from this origin, nothing else: a uid or a URL the page shows can
/// never run as script.
pub(crate) fn page() -> Reply {
    static CSP: OnceLock<HeaderValue> = OnceLock::new();
    let csp = CSP.get_or_init(|| {
        let script = PAGE
            .split_once("<script>")
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map_or("", |(script, _)| script);
        let hash = STANDARD.encode(Sha256::digest(script.as_bytes()));
        let policy = format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        );
        HeaderValue::from_str(&policy)
            .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
    });
    let mut resp = reply(
        Bytes::from_static(PAGE.as_bytes()),
        "text/html; charset=utf-8",
    );
    resp.headers_mut()
        .insert("content-security-policy", csp.clone());
    resp.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `GET /status.json`: `/stats`, and what the page needs besides.
pub(crate) fn json(state: &State) -> Reply {
    let status = Status {
        version: VERSION,
        node: state.events.node(),
        time_ms: crate::events::event::unix_millis(),
        stats: Stats(state.stats()),
        cluster: state.config.redis.as_ref().map(|_| Cluster {
            // The cluster's id for this node (events use the same).
            node: state.events.node(),
            // `up`, or what `/readyz` says is wrong.
            redis: state.nodes.trouble().unwrap_or("up"),
            // Every node's row as this node last read them from Redis (once a second):
            // `node_figures.rs`. Its own first.
            nodes: state.figures.as_ref().map(|f| f.rows()),
            // Nodes given other `--events-url`s than this one (docs/events.md).
            receivers_differ: state
                .figures
                .as_ref()
                .map(|f| f.differing())
                .unwrap_or_default(),
        }),
        events: Events {
            receivers: state.events.receivers(),
            streams: state.metrics.value(Metric::EventStreams),
        },
    };
    // Serializing these types into memory cannot fail.
    let body = serde_json::to_vec(&status).unwrap_or_default();
    reply(Bytes::from(body), "application/json")
}

fn reply(body: Bytes, content_type: &'static str) -> Reply {
    let mut resp = hyper::Response::new(body);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[derive(Serialize)]
struct Status<'a> {
    version: &'static str,
    node: &'a str,
    time_ms: u64,
    stats: Stats,
    cluster: Option<Cluster<'a>>,
    events: Events,
}

/// `/stats`, in the table's order.
struct Stats(Vec<(&'static str, u64)>);

impl Serialize for Stats {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct Cluster<'a> {
    node: &'a str,
    redis: &'static str,
    nodes: Option<Vec<NodeRow>>,
    receivers_differ: Vec<String>,
}

#[derive(Serialize)]
struct Events {
    receivers: Vec<ReceiverStatus>,
    streams: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_pages_script() {
        let resp = page();
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        let script = PAGE
            .split("<script>")
            .nth(1)
            .unwrap()
            .split("</script>")
            .next()
            .unwrap();
        let hash = STANDARD.encode(Sha256::digest(script.as_bytes()));
        assert!(
            csp.contains(&format!("script-src 'sha256-{hash}'")),
            "{csp}"
        );
        // One script: a second would not run under the policy.
        assert_eq!(PAGE.matches("<script").count(), 1);
        // Nothing fetched from elsewhere.
        for outside in ["http://", "https://", "//cdn"] {
            let found = PAGE
                .match_indices(outside)
                .map(|(i, _)| &PAGE[i..(i + 40).min(PAGE.len())])
                .find(|s| !s.starts_with("http://www.w3.org/2000/svg"));
            assert!(found.is_none(), "{found:?}");
        }
    }
}
