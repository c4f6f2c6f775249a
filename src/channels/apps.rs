//! The Pusher apps this daemon serves (`--pusher-apps FILE`): each app's id, key and
//! secret, whether its members may send client events, and its limits. Read from a JSON
//! file, checked whole: a file with one bad app is refused, never half applied.
//!
//! ```json
//! {"apps": [{"id": "1201", "key": "app-key", "secret": "app-secret",
//!            "client_events": true, "max_connections": 10000}]}
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::events::pusher::{MAX_APP_WEBHOOKS, MAX_PUSHER_WEBHOOKS};
use crate::events::{AppHooksSpec, PusherHook};
use crate::wire::pusher::Keys;

/// Most origins one app may list.
pub const MAX_APP_ORIGINS: usize = 64;

/// One app: its keys and limits. The defaults are Pusher's and Laravel's
/// (docs/pusher.md, "Limits").
#[derive(Debug, Clone)]
pub struct App {
    /// The app id (`/apps/{id}/…` of the HTTP API; Laravel's `PUSHER_APP_ID`).
    pub id: Arc<str>,
    /// Key and secret.
    pub keys: Keys,
    /// Members of private and presence channels may send `client-*` events (off unless
    /// the file says so, as on Pusher).
    pub client_events: bool,
    /// Client events one connection may send per second (a token bucket of this size).
    pub client_event_rate: u32,
    /// Subscribers of its channels (presence ones aside) are told the channel's
    /// subscription count when it changes (`pusher_internal:subscription_count`), as
    /// the Pusher dashboard's setting of that name does; off unless the file says so.
    pub subscription_count: bool,
    /// Connections the app may hold on this node; more are closed with 4100.
    pub max_connections: usize,
    /// Channels one connection may subscribe to at once.
    pub max_channels_per_connection: usize,
    /// Users one presence channel may hold (Pusher's limit: 100).
    pub max_presence_members: usize,
    /// Bytes of a presence member's `user_info` (Pusher's limit: 1 KB).
    pub max_user_info_bytes: usize,
    /// Bytes of an event's `data` (HTTP API and client events; Pusher's limit: 10 KB).
    pub max_event_bytes: usize,
    /// Channels one HTTP API event may name (Pusher's limit: 100).
    pub max_event_channels: usize,
    /// Events one `batch_events` call may carry (Pusher's limit: 10).
    pub max_batch_events: usize,
    /// The `Origin`s whose pages may connect (compared without case); `None`: any. A
    /// connection whose handshake names another is closed with 4009.
    pub allowed_origins: Option<Vec<String>>,
    /// Where its webhooks go, in Pusher's format (`webhooks`).
    pub webhooks: Vec<PusherHook>,
}

impl App {
    /// Whether a page from `origin` may connect (a handshake without `Origin` is no
    /// browser's, and origins are a browser's defence: it may).
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match (&self.allowed_origins, origin) {
            (None, _) | (_, None) => true,
            (Some(list), Some(o)) => list.iter().any(|a| a.eq_ignore_ascii_case(o)),
        }
    }
}

/// The file's form of a webhook receiver (Soketi's shape).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookFile {
    url: String,
    event_types: Option<Vec<String>>,
}

/// The file's form of an app.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppFile {
    id: String,
    key: String,
    secret: String,
    #[serde(default)]
    client_events: bool,
    client_event_rate: Option<u32>,
    #[serde(default)]
    subscription_count: bool,
    max_connections: Option<usize>,
    max_channels_per_connection: Option<usize>,
    max_presence_members: Option<usize>,
    max_user_info_bytes: Option<usize>,
    max_event_bytes: Option<usize>,
    max_event_channels: Option<usize>,
    max_batch_events: Option<usize>,
    allowed_origins: Option<Vec<String>>,
    #[serde(default)]
    webhooks: Vec<WebhookFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppsFile {
    apps: Vec<AppFile>,
}

/// Every app, by key (the WebSocket door) and by id (the HTTP API).
#[derive(Debug, Clone, Default)]
pub struct Apps {
    by_key: HashMap<Box<str>, Arc<App>>,
    by_id: HashMap<Box<str>, Arc<App>>,
}

/// Shortest secret accepted: a short one could be guessed from a signature.
pub const MIN_SECRET_BYTES: usize = 16;

impl Apps {
    /// Reads the apps file's text; says what is wrong with it otherwise.
    pub fn parse(text: &str) -> Result<Apps, String> {
        let file: AppsFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut apps = Apps::default();
        let mut hooks = 0;
        for a in file.apps {
            let id_ok = !a.id.is_empty()
                && a.id.len() <= 64
                && a.id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !id_ok {
                return Err(format!("app id {:?}: 1 to 64 of [A-Za-z0-9_-]", a.id));
            }
            let path = format!("/app/{}", a.key);
            if crate::wire::pusher::codes::app_key(&path).is_none() {
                return Err(format!(
                    "app {}: key must be 1 to 64 of [A-Za-z0-9_-]",
                    a.id
                ));
            }
            if a.secret.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "app {}: secret shorter than {MIN_SECRET_BYTES} bytes",
                    a.id
                ));
            }
            let positive = |v: Option<usize>, default: usize, what: &str| match v {
                Some(0) => Err(format!("app {}: {what} must be at least 1", a.id)),
                Some(n) => Ok(n),
                None => Ok(default),
            };
            let allowed_origins = match &a.allowed_origins {
                None => None,
                Some(list) => Some(origins(&a.id, list)?),
            };
            if a.webhooks.len() > MAX_APP_WEBHOOKS {
                return Err(format!(
                    "app {}: {} webhooks, at most {MAX_APP_WEBHOOKS}",
                    a.id,
                    a.webhooks.len()
                ));
            }
            let mut webhooks = Vec::new();
            for w in &a.webhooks {
                let hook = PusherHook::parse(&w.url, w.event_types.as_deref())
                    .map_err(|e| format!("app {} webhook: {e}", a.id))?;
                if webhooks
                    .iter()
                    .any(|h: &PusherHook| h.target == hook.target)
                {
                    return Err(format!(
                        "app {}: webhook {} named twice",
                        a.id,
                        hook.target.shown()
                    ));
                }
                webhooks.push(hook);
            }
            hooks += webhooks.len();
            if hooks > MAX_PUSHER_WEBHOOKS {
                return Err(format!(
                    "more than {MAX_PUSHER_WEBHOOKS} webhooks in the apps file"
                ));
            }
            let app = Arc::new(App {
                id: Arc::from(a.id.as_str()),
                keys: Keys::new(&a.key, a.secret.as_bytes()),
                client_events: a.client_events,
                subscription_count: a.subscription_count,
                client_event_rate: positive(
                    a.client_event_rate.map(|r| r as usize),
                    10,
                    "client_event_rate",
                )? as u32,
                max_connections: positive(a.max_connections, 100_000, "max_connections")?,
                max_channels_per_connection: positive(
                    a.max_channels_per_connection,
                    100,
                    "max_channels_per_connection",
                )?,
                max_presence_members: positive(
                    a.max_presence_members,
                    100,
                    "max_presence_members",
                )?,
                max_user_info_bytes: positive(a.max_user_info_bytes, 1024, "max_user_info_bytes")?,
                max_event_bytes: positive(a.max_event_bytes, 10_240, "max_event_bytes")?,
                max_event_channels: positive(a.max_event_channels, 100, "max_event_channels")?,
                max_batch_events: positive(a.max_batch_events, 10, "max_batch_events")?,
                allowed_origins,
                webhooks,
            });
            if apps
                .by_id
                .insert(a.id.clone().into(), app.clone())
                .is_some()
            {
                return Err(format!("app id {} given twice", a.id));
            }
            if apps.by_key.insert(a.key.clone().into(), app).is_some() {
                return Err(format!("app key {} given twice", a.key));
            }
        }
        if apps.by_id.is_empty() {
            return Err("no apps".into());
        }
        Ok(apps)
    }

    /// The app with this key (`/app/{key}`, `auth_key`).
    pub fn by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.by_key.get(key)
    }

    /// The app with this id (`/apps/{id}/…`).
    pub fn by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.by_id.get(id)
    }

    /// What differs in `next`, app by app, for the reload's log line (ids and the kind
    /// of change, never a secret).
    pub fn changes(&self, next: &Apps) -> Vec<String> {
        let mut out = Vec::new();
        let mut ids: Vec<&str> = self
            .by_id
            .keys()
            .chain(next.by_id.keys())
            .map(|k| &**k)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            match (self.by_id(id), next.by_id(id)) {
                (Some(_), None) => out.push(format!("app {id} removed")),
                (None, Some(_)) => out.push(format!("app {id} added")),
                (Some(a), Some(b)) => {
                    if a.keys.key() != b.keys.key() {
                        out.push(format!("app {id} key changed"));
                    }
                    // Compared by what they sign: the secrets are never held side by side.
                    if a.keys.sign_hex(&[b"compare"]) != b.keys.sign_hex(&[b"compare"]) {
                        out.push(format!("app {id} secret rotated"));
                    }
                    if a.subscription_count != b.subscription_count {
                        let on = if b.subscription_count { "on" } else { "off" };
                        out.push(format!("app {id} subscription counts {on}"));
                    }
                    if a.webhooks != b.webhooks {
                        out.push(format!("app {id} webhooks changed"));
                    }
                    if a.allowed_origins != b.allowed_origins {
                        out.push(format!("app {id} allowed origins changed"));
                    }
                    if a.client_events != b.client_events {
                        let on = if b.client_events { "on" } else { "off" };
                        out.push(format!("app {id} client events {on}"));
                    }
                }
                (None, None) => {}
            }
        }
        out
    }

    /// Every app's id, keys and webhook receivers, for [`crate::events::PusherHooks`].
    pub fn hook_specs(&self) -> Vec<AppHooksSpec> {
        let mut out: Vec<AppHooksSpec> = self
            .by_id
            .values()
            .map(|a| AppHooksSpec {
                id: a.id.clone(),
                keys: a.keys.clone(),
                hooks: a.webhooks.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// How many apps.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// No apps.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// An app's `allowed_origins`: 1 to [`MAX_APP_ORIGINS`] origins such as
/// `https://app.example.com` (scheme, host, port if any; no path, no spaces).
fn origins(app: &str, list: &[String]) -> Result<Vec<String>, String> {
    if list.is_empty() || list.len() > MAX_APP_ORIGINS {
        return Err(format!(
            "app {app}: allowed_origins must list 1 to {MAX_APP_ORIGINS} origins (leave it out to allow any)"
        ));
    }
    for o in list {
        let ok = o.len() <= 256
            && (o.starts_with("http://") || o.starts_with("https://"))
            && !o
                .split_once("://")
                .is_some_and(|(_, rest)| rest.is_empty() || rest.contains('/'))
            && o.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(format!(
                "app {app}: origin {o:?} is not scheme://host[:port] (e.g. https://app.example.com)"
            ));
        }
    }
    Ok(list.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_checked_whole() {
        let good = r#"{"apps":[{"id":"1","key":"k1","secret":"0123456789abcdef","client_events":true},
                               {"id":"2","key":"k2","secret":"0123456789abcdef","max_batch_events":3}]}"#;
        let apps = Apps::parse(good).unwrap();
        assert_eq!(apps.len(), 2);
        assert!(apps.by_key("k1").unwrap().client_events);
        assert!(!apps.by_id("2").unwrap().client_events);
        assert_eq!(apps.by_id("2").unwrap().max_batch_events, 3);
        assert_eq!(apps.by_id("1").unwrap().max_event_channels, 100);
        let one = apps.by_id("1").unwrap();
        assert!(one.origin_allowed(Some("https://anywhere")) && one.webhooks.is_empty());
        let with = Apps::parse(
            r#"{"apps":[{"id":"1","key":"k1","secret":"0123456789abcdef",
                "allowed_origins":["https://app.example.com"],
                "webhooks":[{"url":"http://127.0.0.1:9/hook","event_types":["channel_occupied"]}]}]}"#,
        )
        .unwrap();
        let one = with.by_id("1").unwrap();
        assert!(one.origin_allowed(Some("HTTPS://app.example.com")));
        assert!(!one.origin_allowed(Some("https://evil.example")));
        assert!(one.origin_allowed(None));
        assert_eq!(one.webhooks[0].kinds.names(), vec!["channel_occupied"]);
        assert_eq!(
            apps.changes(&with),
            vec![
                "app 1 webhooks changed",
                "app 1 allowed origins changed",
                "app 1 client events off",
                "app 2 removed"
            ]
        );
        for bad in [
            r#"{"apps":[]}"#,
            r#"{"apps":[{"id":"1","key":"k1","secret":"short"}]}"#,
            r#"{"apps":[{"id":"1","key":"k 1","secret":"0123456789abcdef"}]}"#,
            r#"{"apps":[{"id":"","key":"k1","secret":"0123456789abcdef"}]}"#,
            r#"{"apps":[{"id":"1","key":"k1","secret":"0123456789abcdef","max_connections":0}]}"#,
            r#"{"apps":[{"id":"1","key":"k1","secret":"0123456789abcdef","clientevents":true}]}"#,
            r#"{"apps":[{"id":"1","key":"k1","secret":"0123456789abcdef"},{"id":"1","key":"k2","secret":"0123456789abcdef"}]}"#,
            r#"{"apps":[{"id":"1","key":"k1","secret":"0123456789abcdef"},{"id":"2","key":"k1","secret":"0123456789abcdef"}]}"#,
            r#"{"apps":[{"id":"1","key":"k1","secret":"0123456789abcdef","allowed_origins":[]}]}"#,
            r#"{"apps":[{"id":"1","key":"k1","secret":"0123456789abcdef","allowed_origins":["app.example.com"]}]}"#,
            r#"{"apps":[{"id":"1","key":"k1","secret":"0123456789abcdef","allowed_origins":["https://a/b"]}]}"#,
            r#"{"apps":[{"id":"1","key":"k1","secret":"0123456789abcdef","webhooks":[{"url":"ftp://h/"}]}]}"#,
            r#"{"apps":[{"id":"1","key":"k1","secret":"0123456789abcdef","webhooks":[{"url":"http://h/","event_types":["nope"]}]}]}"#,
            r#"{"apps":[{"id":"1","key":"k1","secret":"0123456789abcdef","webhooks":[{"url":"http://h/"},{"url":"http://h/"}]}]}"#,
            r#"{"apps":[{"id":"1","key":"k1","secret":"0123456789abcdef","webhooks":[{"url":"http://h/","events":[]}]}]}"#,
            r#"{"apps":[{"id":"1","key":"k1","secret":"0123456789abcdef","webhooks":[{"url":"http://h/1"},{"url":"http://h/2"},{"url":"http://h/3"},{"url":"http://h/4"},{"url":"http://h/5"}]}]}"#,
        ] {
            assert!(Apps::parse(bad).is_err(), "{bad}");
        }
    }
}
