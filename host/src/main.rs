//! `r1host`: train and serve reasoning models. See `r1host --help`.

use clap::{Parser, Subcommand};
use r1_host::cli;

#[derive(Parser)]
#[command(name = "r1host", version, about = "Train and serve reasoning language models the DeepSeek-R1 way")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reward-plugin tools: check a module, score samples with it.
    Plugin(cli::plugin::PluginArgs),
    /// Measure training tokens/s, decode tokens/s and GRPO step time on random models.
    Bench(cli::bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plugin(args) => cli::plugin::run(args),
        Command::Bench(args) => cli::bench::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
