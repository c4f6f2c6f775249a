//! The settings a reload (SIGHUP) may change while every connection stays up: the JWT
//! and push secrets, the Origin and push allow-lists, the trusted proxies. (The TLS
//! certificate is reloaded by `tls::Acceptor`.)
//!
//! Each is read where it decides something (a handshake, a bind, a backend's `/auth`,
//! an HTTP request), so what a reload changes applies from the next such decision on;
//! a connection already admitted or bound keeps what it was admitted with.

use crate::access::Cidr;
use crate::auth::Secret;
use crate::config::Config;

/// The reloadable settings; see [`Config`] for what each means.
#[derive(Debug, Clone)]
pub struct Reloadable {
    /// [`Config::jwt_secret`].
    pub jwt_secret: Option<Secret>,
    /// [`Config::push_secret`].
    pub push_secret: Option<Secret>,
    /// [`Config::allowed_origins`].
    pub allowed_origins: Option<Vec<String>>,
    /// [`Config::push_allow`].
    pub push_allow: Option<Vec<Cidr>>,
    /// [`Config::trusted_proxies`].
    pub trusted_proxies: Vec<Cidr>,
}

impl Reloadable {
    /// The values `config` starts with.
    pub fn from_config(config: &Config) -> Reloadable {
        Reloadable {
            jwt_secret: config.jwt_secret.clone(),
            push_secret: config.push_secret.clone(),
            allowed_origins: config.allowed_origins.clone(),
            push_allow: config.push_allow.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
        }
    }

    /// The names of the settings that differ in `next` (for the reload's log line; secrets
    /// by name only).
    pub fn changes(&self, next: &Reloadable) -> Vec<&'static str> {
        let secret = |s: &Option<Secret>| s.as_ref().map(|s| s.reveal().to_vec());
        let mut changed = Vec::new();
        if secret(&self.jwt_secret) != secret(&next.jwt_secret) {
            changed.push("jwt secret");
        }
        if secret(&self.push_secret) != secret(&next.push_secret) {
            changed.push("push secret");
        }
        if self.allowed_origins != next.allowed_origins {
            changed.push("allowed origins");
        }
        if self.push_allow != next.push_allow {
            changed.push("push allow-list");
        }
        if self.trusted_proxies != next.trusted_proxies {
            changed.push("trusted proxies");
        }
        changed
    }
}
