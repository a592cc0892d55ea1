//! `r1host` subcommands: each file holds one subcommand's arguments and its `run`.

pub mod bench;
mod bench_serve;
pub mod export;
pub mod generate;
pub mod logprobs;
pub mod plot;
pub mod plugin;
pub mod progress;
pub mod run;
pub mod serve;
pub mod task;
pub mod train;
