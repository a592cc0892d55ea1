//! `r1host` subcommands: each file holds one subcommand's arguments and its `run`.

pub mod bench;
pub mod plugin;
