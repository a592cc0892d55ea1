//! `r1host`: train and serve reasoning models. See `r1host --help`.

use clap::{Parser, Subcommand};
use r1_host::cli;

#[derive(Parser)]
#[command(
    name = "r1host",
    version,
    about = "Train and serve reasoning language models the DeepSeek-R1 way"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reward-plugin tools: check a module, score samples with it.
    Plugin(cli::plugin::PluginArgs),
    /// Run an R1 pipeline (default: the embedded recipe on the bundled addition task).
    Run(cli::run::RunArgs),
    /// Log-prob of each next token under a model, as JSON.
    Logprobs(cli::logprobs::LogprobsArgs),
    /// Sample completions, printing the reasoning apart from the answer.
    Generate(cli::generate::GenerateArgs),
    /// Train: `train sft` (supervised fine-tuning).
    Train(cli::train::TrainArgs),
    /// Write the bundled addition task as a JSONL dataset.
    Task(cli::task::TaskArgs),
    /// Plot the curves of a run directory (PNG and SVG).
    Plot(cli::plot::PlotArgs),
    /// Write a checkpoint or model directory as a Hugging Face directory (transformers loads it).
    Export(cli::export::ExportArgs),
    /// Write a model as a GGUF file llama.cpp loads (f32, f16, bf16, q8_0, q4_0, q4_k_m with
    /// llama-quantize's mix), or as a bf16 Hugging Face directory.
    Quantize(cli::quantize::QuantizeArgs),
    /// Serve models over an OpenAI-compatible HTTP API (chat, completions, metrics).
    Serve(cli::serve::ServeArgs),
    /// Measure training tokens/s, decode tokens/s and GRPO step time on random models.
    Bench(cli::bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // `mpirun -n N r1host run …`: MPI starts here and lives until `main` returns.
    let launch = match r1_host::train::dist::Launch::start() {
        Ok(launch) => launch,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Plugin(args) => cli::plugin::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Run(args) => cli::run::run(args),
        Command::Logprobs(args) => cli::logprobs::run(args),
        Command::Generate(args) => cli::generate::run(args),
        Command::Train(args) => cli::train::run(args),
        Command::Task(args) => cli::task::run(args),
        Command::Plot(args) => cli::plot::run(args),
        Command::Export(args) => cli::export::run(args),
        Command::Quantize(args) => cli::quantize::run(args),
        Command::Serve(args) => cli::serve::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of stdout went away (`r1host … | head`): nothing is wrong, and
        // nobody is left to read a message.
        Err(e) if cli::is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        // A run stopped on request ended in every process at the same step: nobody waits,
        // and rank 0 says how to resume.
        Err(e) if e.is::<cli::run::RunStopped>() => {
            if r1_host::train::dist::world().is_writer() {
                eprintln!("error: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            launch.fail();
            std::process::ExitCode::FAILURE
        }
    }
}
