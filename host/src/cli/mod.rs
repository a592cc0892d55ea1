//! `r1host` subcommands: each file holds one subcommand's arguments and its `run`.

pub mod adapter_arg;
pub mod bench;
mod bench_bound;
mod bench_decode;
mod bench_rollout;
mod bench_serve;
pub mod cache_types;
pub mod export;
pub mod generate;
pub mod logprobs;
pub mod plot;
pub mod plugin;
pub mod progress;
pub mod quantize;
pub mod run;
pub mod serve;
pub mod task;
pub mod train;

/// `println!` that returns the write's error instead of panicking: a closed stdout
/// (`r1host … | head`) becomes an `io::Error` of kind `BrokenPipe`, which `main` turns into
/// a quiet exit. Every command writes its results through this or `out!`.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `print!` that returns the write's error (see [`outln!`]) and flushes, for text streamed
/// as it is produced.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        write!(stdout, $($arg)*).and_then(|()| stdout.flush())
    }};
}

/// Whether `error` comes from writing to a closed pipe (the reader of stdout went away):
/// the command's output is simply no longer wanted, so it ends quietly.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
