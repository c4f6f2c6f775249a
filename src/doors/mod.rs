//! Backend doors that speak another system's wire and reach browsers through the engine
//! ([`crate::nodes`]) only: never the registry or the cluster (`tests/layout.rs`).

pub(crate) mod gateway;
pub(crate) mod redis_queue;
