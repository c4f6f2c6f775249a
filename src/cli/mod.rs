//! The binary's own modules (not part of the library): its flags, the settings they give,
//! its listeners and signals, and the subcommands.

pub mod args;
pub mod check_config;
pub mod control;
pub mod listen;
pub mod settings;
pub mod signals;
