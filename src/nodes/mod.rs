//! The engine's side of the service: how an answer comes back ([`Answer`]).

mod answer;

pub use answer::{Answer, Pending};
