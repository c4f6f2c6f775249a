//! The Pusher HTTP API (what Laravel's `pusher`/`reverb` broadcaster and the Pusher server
//! SDKs call), on the HTTP door: `POST /apps/{id}/events` and `batch_events`,
//! `GET /apps/{id}/channels`, `…/channels/{name}`, `…/channels/{name}/users`, and
//! `POST /apps/{id}/users/{user}/terminate_connections` (also without `/apps/{id}`, as
//! pusher-http-python 3.3.4 sends it: the app is then the one `auth_key` names).
//!
//! Every request is checked whole before anything is done: the app's signature over
//! method, path, query and body (`wire::pusher::api`, refusing an `auth_timestamp` more
//! than 600 s away), then the body and the limits, so a refused request delivers
//! nothing. Errors are plain text with the status the SDKs raise on: 400 malformed, 401
//! authentication, 404 unknown app or path, 405 method, 413 over a limit.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::channels::{App, ChannelInfo};
use crate::nodes::NodesError;
use crate::state::State;
use crate::wire::Payload;
use crate::wire::pusher::api::{DEFAULT_WINDOW, Request};
use crate::wire::pusher::channel::check_user_id;
use crate::wire::pusher::codes::Code;
use crate::wire::pusher::outbound::{self, json_str};
use crate::wire::pusher::{Access, Channel, Refusal, SocketId};

/// An answer: status, body, and whether the body is JSON (else plain text).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: String,
    pub(crate) json: bool,
}

fn ok(body: String) -> Reply {
    Reply {
        status: 200,
        body,
        json: true,
    }
}

fn fail(status: u16, why: impl Into<String>) -> Reply {
    let mut body = why.into();
    body.push('\n');
    Reply {
        status,
        body,
        json: false,
    }
}

/// Whether `path` is the Pusher HTTP API's.
pub(crate) fn wants(path: &str) -> bool {
    path.starts_with("/apps/")
        || (path.starts_with("/users/") && path.ends_with("/terminate_connections"))
}

/// What a path asks for.
enum Route {
    Events,
    Batch,
    Channels,
    Channel(String),
    Users(String),
    Terminate(String),
}

/// Splits `path` into the app id (`None` for the short terminate path) and the route.
fn route(path: &str) -> Option<(Option<&str>, Route)> {
    let decode = |s: &str| String::from_utf8(crate::urlencoded::decode(s.as_bytes())).ok();
    if let Some(rest) = path.strip_prefix("/users/") {
        let user = rest.strip_suffix("/terminate_connections")?;
        return Some((None, Route::Terminate(decode(user)?)));
    }
    let rest = path.strip_prefix("/apps/")?;
    let (id, rest) = rest.split_once('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    let r = match parts.as_slice() {
        ["events"] => Route::Events,
        ["batch_events"] => Route::Batch,
        ["channels"] => Route::Channels,
        ["channels", name] => Route::Channel(decode(name)?),
        ["channels", name, "users"] => Route::Users(decode(name)?),
        ["users", user, "terminate_connections"] => Route::Terminate(decode(user)?),
        _ => return None,
    };
    Some((Some(id), r))
}

/// Answers one API request (`path` and `query` as on the request line).
pub(crate) async fn answer(
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    ctx: &State,
) -> Reply {
    let Some(apps) = ctx.pusher_apps() else {
        return fail(404, "not found");
    };
    let Some((id, route)) = route(path) else {
        return fail(404, "not found");
    };
    let app = match id {
        Some(id) => apps.by_id(id),
        None => crate::urlencoded::param(query.as_bytes(), "auth_key")
            .and_then(|k| String::from_utf8(k).ok())
            .and_then(|k| apps.by_key(&k)),
    };
    let Some(app) = app.cloned() else {
        return fail(404, "unknown app");
    };
    let wanted = match route {
        Route::Events | Route::Batch | Route::Terminate(_) => "POST",
        Route::Channels | Route::Channel(_) | Route::Users(_) => "GET",
    };
    if method != wanted && !(wanted == "GET" && method == "HEAD") {
        return fail(405, format!("method not allowed (use {wanted})"));
    }
    let req = Request {
        method: wanted,
        path,
        query,
        body,
    };
    let verified = match app.keys.verify_api(&req, SystemTime::now(), DEFAULT_WINDOW) {
        Ok(v) => v,
        Err(e) => return fail(e.status(), e.to_string()),
    };
    let info = verified.param("info").unwrap_or("");
    match route {
        Route::Events => match serde_json::from_slice::<Event>(body) {
            Ok(ev) => events(&app, vec![ev], false, ctx).await,
            Err(e) => fail(400, format!("bad event: {e}")),
        },
        Route::Batch => match serde_json::from_slice::<Batch>(body) {
            Ok(b) if b.batch.len() > app.max_batch_events => fail(
                413,
                format!("batch of more than {} events", app.max_batch_events),
            ),
            Ok(b) => events(&app, b.batch, true, ctx).await,
            Err(e) => fail(400, format!("bad batch: {e}")),
        },
        Route::Channels => {
            let prefix = verified.param("filter_by_prefix").unwrap_or("");
            channels(&app, prefix, info, ctx).await
        }
        Route::Channel(name) => channel(&app, &name, info, ctx).await,
        Route::Users(name) => users(&app, &name, ctx).await,
        Route::Terminate(user) => {
            if check_user_id(&user).is_err() {
                return fail(400, "bad user id");
            }
            let refusal = Refusal::with(Code::Unauthorized, "connections terminated by the app");
            let answer = ctx.nodes.channels().terminate(&app.id, &user, &refusal);
            answer.resolve().await;
            ok("{}".into())
        }
    }
}

/// One event, as `events` takes it and as `batch_events` lists them.
#[derive(Deserialize)]
struct Event<'a> {
    name: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
}

#[derive(Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    batch: Vec<Event<'a>>,
}

/// An event checked: its data as the string to deliver, its channels, who is left out.
struct Checked {
    name: String,
    data: String,
    channels: Vec<Channel>,
    except: Option<SocketId>,
    info: Info,
}

/// Which counts an answer carries (`info=`).
#[derive(Default, Clone, Copy)]
struct Info {
    users: bool,
    subscriptions: bool,
}

impl Info {
    fn parse(text: &str) -> Result<Info, String> {
        let mut info = Info::default();
        for attr in text.split(',').filter(|a| !a.is_empty()) {
            match attr {
                "user_count" => info.users = true,
                "subscription_count" => info.subscriptions = true,
                // The cache attribute of Pusher's channel query: answered by `occupied`.
                "cache" => {}
                other => return Err(format!("unknown info attribute {other:?}")),
            }
        }
        Ok(info)
    }

    fn any(self) -> bool {
        self.users || self.subscriptions
    }

    /// `{"user_count":…,"subscription_count":…}`, user_count on presence channels only.
    fn object(self, presence: bool, c: ChannelInfo) -> String {
        let mut parts = Vec::new();
        if self.users && presence {
            parts.push(format!("\"user_count\":{}", c.users));
        }
        if self.subscriptions {
            parts.push(format!("\"subscription_count\":{}", c.subscriptions));
        }
        format!("{{{}}}", parts.join(","))
    }
}

fn check(app: &App, ev: Event<'_>, batch: bool) -> Result<Checked, Reply> {
    if ev.name.is_empty() || ev.name.len() > crate::wire::pusher::inbound::MAX_EVENT_NAME {
        return Err(fail(400, "event name must be 1 to 200 bytes"));
    }
    let names = match (ev.channels, ev.channel) {
        (Some(list), None) if !batch => list,
        (None, Some(one)) => vec![one],
        _ if batch => return Err(fail(400, "each batch event names one channel")),
        _ => return Err(fail(400, "give channels (a list) or channel")),
    };
    if names.is_empty() {
        return Err(fail(400, "no channels"));
    }
    if names.len() > app.max_event_channels {
        return Err(fail(
            413,
            format!("more than {} channels in one event", app.max_event_channels),
        ));
    }
    let channels = names
        .iter()
        .map(|n| Channel::parse(n).map_err(|e| fail(400, format!("channel {n:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let data = if ev.data.get().starts_with('"') {
        serde_json::from_str::<String>(ev.data.get()).map_err(|_| fail(400, "bad data"))?
    } else {
        ev.data.get().to_owned()
    };
    if data.len() > app.max_event_bytes {
        return Err(fail(
            413,
            format!("event data larger than {} bytes", app.max_event_bytes),
        ));
    }
    let except = match ev.socket_id.as_deref() {
        None | Some("") => None,
        Some(s) => Some(SocketId::parse(s).ok_or_else(|| fail(400, "bad socket_id"))?),
    };
    let info = Info::parse(ev.info.as_deref().unwrap_or("")).map_err(|e| fail(400, e))?;
    if info.users && channels.iter().any(|c| c.kind().access != Access::Presence) {
        return Err(fail(400, "user_count is only for presence channels"));
    }
    Ok(Checked {
        name: ev.name,
        data,
        channels,
        except,
        info,
    })
}

/// Publishes `events` (all checked first: one bad event refuses the whole call).
async fn events(app: &Arc<App>, events: Vec<Event<'_>>, batch: bool, ctx: &State) -> Reply {
    let mut checked = Vec::with_capacity(events.len());
    for ev in events {
        match check(app, ev, batch) {
            Ok(c) => checked.push(c),
            Err(reply) => return reply,
        }
    }
    let channels = ctx.nodes.channels();
    for ev in &checked {
        for ch in &ev.channels {
            let frame = Payload::from(outbound::event(&ev.name, ch.name(), &ev.data));
            let published = channels.publish(&app.id, ch, &frame, ev.except);
            if let Err(e) = published.resolve().await {
                return fail(503, format!("{e}: delivered on this node only"));
            }
        }
    }
    if !checked.iter().any(|c| c.info.any()) {
        return ok("{}".into());
    }
    // Per event, per channel: the channel's name as a JSON key, and its counts.
    let mut answers: Vec<Vec<(String, String)>> = Vec::new();
    for ev in &checked {
        let mut parts = Vec::new();
        for ch in ev.channels.iter().filter(|_| ev.info.any()) {
            let c = match channels.info(&app.id, ch.name()).resolve().await {
                Ok(c) => c,
                Err(e) => return unavailable(e),
            };
            let mut key = String::new();
            json_str(&mut key, ch.name());
            let presence = ch.kind().access == Access::Presence;
            parts.push((key, ev.info.object(presence, c)));
        }
        answers.push(parts);
    }
    if batch {
        let items: Vec<&str> = answers
            .iter()
            .map(|p| p.first().map_or("{}", |(_, counts)| counts.as_str()))
            .collect();
        ok(format!("{{\"batch\":[{}]}}", items.join(",")))
    } else {
        let parts: Vec<String> = answers
            .concat()
            .iter()
            .map(|(key, counts)| format!("{key}:{counts}"))
            .collect();
        ok(format!("{{\"channels\":{{{}}}}}", parts.join(",")))
    }
}

fn unavailable(e: NodesError) -> Reply {
    fail(503, e.to_string())
}

async fn channels(app: &App, prefix: &str, info: &str, ctx: &State) -> Reply {
    let info = match Info::parse(info) {
        Ok(i) => i,
        Err(e) => return fail(400, e),
    };
    if info.users && !prefix.starts_with("presence-") {
        return fail(400, "user_count needs filter_by_prefix=presence-");
    }
    let list = match ctx.nodes.channels().list(&app.id, prefix).resolve().await {
        Ok(list) => list,
        Err(e) => return unavailable(e),
    };
    let parts: Vec<String> = list
        .iter()
        .map(|(name, c)| {
            let mut key = String::new();
            json_str(&mut key, name);
            let presence = name.starts_with("presence-");
            format!("{key}:{}", info.object(presence, *c))
        })
        .collect();
    ok(format!("{{\"channels\":{{{}}}}}", parts.join(",")))
}

async fn channel(app: &App, name: &str, info: &str, ctx: &State) -> Reply {
    let ch = match Channel::parse(name) {
        Ok(ch) => ch,
        Err(e) => return fail(400, format!("channel: {e}")),
    };
    let info = match Info::parse(info) {
        Ok(i) => i,
        Err(e) => return fail(400, e),
    };
    let presence = ch.kind().access == Access::Presence;
    if info.users && !presence {
        return fail(400, "user_count is only for presence channels");
    }
    let c = match ctx.nodes.channels().info(&app.id, name).resolve().await {
        Ok(c) => c,
        Err(e) => return unavailable(e),
    };
    let counts = info.object(presence, c);
    let rest = &counts[1..counts.len() - 1];
    let sep = if rest.is_empty() { "" } else { "," };
    ok(format!(
        "{{\"occupied\":{}{sep}{rest}}}",
        c.subscriptions > 0
    ))
}

async fn users(app: &App, name: &str, ctx: &State) -> Reply {
    match Channel::parse(name) {
        Ok(ch) if ch.kind().access == Access::Presence => {}
        Ok(_) => return fail(400, "users are listed for presence channels only"),
        Err(e) => return fail(400, format!("channel: {e}")),
    }
    let users = match ctx.nodes.channels().users(&app.id, name).resolve().await {
        Ok(u) => u,
        Err(e) => return unavailable(e),
    };
    let items: Vec<String> = users
        .iter()
        .map(|u| {
            let mut s = String::from("{\"id\":");
            json_str(&mut s, u);
            s.push('}');
            s
        })
        .collect();
    ok(format!("{{\"users\":[{}]}}", items.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(
            route("/apps/1/events"),
            Some((Some("1"), Route::Events))
        ));
        assert!(matches!(
            route("/apps/1/channels/presence-a/users"),
            Some((Some("1"), Route::Users(n))) if n == "presence-a"
        ));
        assert!(matches!(
            route("/apps/1/channels/%23server-to-user-5"),
            Some((Some("1"), Route::Channel(n))) if n == "#server-to-user-5"
        ));
        assert!(matches!(
            route("/users/7/terminate_connections"),
            Some((None, Route::Terminate(u))) if u == "7"
        ));
        assert!(route("/apps/1/nope").is_none());
        assert!(route("/apps/1").is_none());
    }
}
