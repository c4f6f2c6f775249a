//! pushwire: any backend pushes a line, the right browsers get it over WebSocket.
//!
//! # Layout (the data path, in order)
//! - `server`: accept loops, connection limits, shutdown order.
//! - `ws`: browser connection: uid bind, per-socket write/read/ping loop.
//! - `handshake`: the HTTP upgrade, read within a byte budget (allocating only as bytes
//!   arrive), then tungstenite's 101; plain-HTTP refusals.
//! - [`frames`]: WebSocket framing after the upgrade, on the bare socket.
//! - `push`: backend line reader, one reply per line.
//! - [`command`]: `/`-commands on the push port: routing, groups, presence, kick, stats.
//! - [`groups`]: group membership owned by uids, with an offline grace period.
//! - [`registry`]: the shared uid → connections map (fan-out happens here).
//! - [`outbox`]: each connection's bounded queue and its full-queue policy.
//! - [`protocol`]: line framing, push parsing, replies, close codes.
//! - [`auth`] (signed uids), [`access`] (allow-lists, per-address caps, the budget of
//!   connections not bound yet, secrets): who may connect and how much they may hold.
//! - [`config`], [`metrics`]: limits and counters; [`logsafe`]: stranger-supplied text
//!   in log lines.
//!
//! The library never binds a socket and never sees the command line: `main.rs` does both
//! and calls [`run`], so tests run the real server in-process on port 0.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod auth;
pub mod command;
pub mod config;
pub mod frames;
pub mod groups;
mod handshake;
pub mod logsafe;
pub mod metrics;
pub mod outbox;
pub mod protocol;
mod push;
pub mod registry;
mod server;
mod urlencoded;
mod ws;

pub use config::Config;
pub use server::{Listeners, run, serve};
