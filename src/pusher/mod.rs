//! The Pusher Channels doors (issue 24): pusher-js and Laravel Echo at `/app/{key}` on the
//! browser port ([`door`]), and the HTTP API Laravel's `pusher`/`reverb` broadcaster and
//! the Pusher server SDKs call at `/apps/{id}/…` on the HTTP door ([`api`]). Both reach
//! channels through `nodes::Channels`, never the registry; the protocol itself is
//! `wire::pusher`. Served only with `--pusher-apps` (docs/pusher.md).

pub(crate) mod api;
mod door;

pub(crate) use door::serve;
