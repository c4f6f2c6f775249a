//! pushwire: any backend pushes a line, the right browsers get it over WebSocket.
//!
//! # Layout (the data path, in order; imports only point down this list)
//! - `server`: accept loops, connection limits, the shutdown order.
//! - `handshake`: the HTTP upgrade, read within a byte budget (allocating only as bytes
//!   arrive), then tungstenite's 101; plain-HTTP refusals; `assets`: `GET /pushwire.js`.
//! - `proxied`: the upgrade; for a trusted proxy, the forwarded client's per-address
//!   places between the request head and the 101.
//! - `ws`: browser connection: uid bind, then one write/read/ping loop per socket (a
//!   Pusher connection at `/app/{key}`: `ws/pusher.rs`); `sse`: the same binding as
//!   Server-Sent Events, for networks that block WebSockets.
//! - [`frames`]: WebSocket framing after the upgrade, on a [`transport::Transport`]: the
//!   bare socket or a [`tls`] session (`wss://`), with the same non-blocking calls.
//! - `doors`: the backend doors, which reach connections only through the service:
//!   `push`, the TCP/Unix port (access, lines in, replies out in order); `http`, the HTTP
//!   door (`POST /push`, `/metrics`, health) and its accept-time gate, with `http_body`
//!   (its replies, `/push`'s streamed as they are read), `http_io` (its socket: a write
//!   that stalls fails, a close that lingers) and `web_msg_sender` (web-msg-sender's API);
//!   `pusher`: the Pusher HTTP API (`/apps/{id}/…`).
//!   `doors::gateway` speaks GatewayWorker's GatewayClient, `doors::redis_queue` takes the
//!   elements apps `LPUSH` onto Redis lists; `lease`: a Redis key one holder keeps.
//! - [`service`]: one request in, one typed reply out, for every door.
//! - [`reload`]: what a SIGHUP applies to the [`state`], decided from the reload env file
//!   ([`envfile`]: its grammar) laid over the settings in force.
//! - [`state`]: the shared handle (config, registry, metrics, stop tokens).
//! - [`channels`]: Pusher channels on this node (subscribers, presence members, cache,
//!   signed-in users) and the apps; kept apart from the registry's uids and groups.
//! - [`addressed`]: the greeted connections a backend addresses one by one (GatewayWorker's
//!   `client_id`): their numbers, the uid each is bound to, per-connection groups, sessions.
//! - [`registry`]: uid → connections (fan-out happens here); [`groups`]: membership
//!   owned by uids, with an offline grace period; [`history`]: per-uid sequence numbers,
//!   kept messages, the offline queue and acks (protocol v1); [`outbox`]: each
//!   connection's bounded queue, its full-queue policy, and fan-outs writing through to
//!   an idle socket; `fanout`: the threads that take parts of a large fan-out.
//! - [`wire`]: bytes ↔ types, no I/O: line framing, push lines, the command grammar,
//!   close notices, the shared [`wire::Payload`], the Pusher Channels protocol
//!   ([`wire::pusher`]).
//! - [`events`]: events for the backend (online/offline, connects, closes, browser
//!   messages) as signed webhooks and the `/events` stream; `status_page`: the operators'
//!   live page (`GET /status`).
//! - [`metrics`]: one table of counters → `/stats` and Prometheus; [`dedupe`]: accepted
//!   `/push`es remembered for idempotent retries.
//! - [`cluster`]: cluster mode on Redis (routed delivery, truthful cluster-wide replies);
//!   (`cluster/history/scripts.rs`: protocol v1 history in Redis, its keys and Lua scripts);
//!   `cluster_presence`: events' `online`/`offline` once across the nodes, and a dead
//!   node's closes; [`node_figures`]: each node's row on the live page, through Redis.
//! - [`auth`] (signed uids), [`access`] (allow-lists, per-address caps, the budget of
//!   connections not bound yet, secrets): who may connect and how much they may hold;
//!   [`forwarded`]: the client a trusted proxy names in its forwarding headers.
//! - [`reloadable`]: the secrets and allow-lists a reload (SIGHUP) may swap;
//!   [`config`]: limits and their validation; [`logsafe`]: stranger-supplied text in log
//!   lines; [`control`]: the client side of `pushwire status`.
//!
//! The library never binds a socket and never sees the command line: `main.rs` does both
//! and calls [`serve`], so tests run the real server in-process on port 0.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod addressed;
mod assets;
pub mod auth;
pub mod channels;
pub mod cluster;
pub mod cluster_presence;
pub mod config;
pub mod control;
pub mod dedupe;
mod doors;
pub mod envfile;
pub mod events;
mod fanout;
pub mod forwarded;
pub mod frames;
pub mod groups;
mod handshake;
pub mod history;
mod lease;
pub mod logsafe;
pub mod metrics;
pub mod node_figures;
pub mod nodes;
pub mod outbox;
mod proxied;
mod pusher;
pub mod registry;
pub mod reload;
pub mod reloadable;
mod server;
pub mod service;
mod sse;
pub mod state;
mod status_page;
pub mod tls;
mod tls_records;
pub mod transport;
mod urlencoded;
pub mod wire;
mod ws;

pub use config::Config;
pub use server::{GatewayListeners, Listeners, run, serve, serve_state};
