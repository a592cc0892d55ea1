//! r1-host: everything `r1host` does, as a library: model and data I/O, training,
//! generation, the plugin host and the CLI's subcommands.

pub mod adapter;
pub mod chat;
pub mod cli;
pub mod device;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod io;
pub mod model;
pub mod pipeline;
pub mod plot;
pub mod plugin;
pub mod progress;
pub mod run_dir;
pub mod serve;
pub mod stop;
pub mod task;
pub mod train;
pub mod weights;
