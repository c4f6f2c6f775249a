//! The Pusher HTTP API (issue 24) that Laravel's `pusher`/`reverb` broadcaster and the
//! Pusher server SDKs call at `/apps/{id}/…` on the HTTP door ([`api`]). Its browser side,
//! pusher-js and Laravel Echo at `/app/{key}`, is `ws/pusher.rs`. Both reach channels
//! through `nodes::Channels`, never the registry; the protocol itself is `wire::pusher`.
//! Served only with `--pusher-apps` (docs/pusher.md).

pub(crate) mod api;
