//! `r1host run [RECIPE.toml]`: runs an R1 pipeline — by default the embedded recipe on
//! the bundled addition task — and reports held-out accuracy after each stage, where the
//! plots and checkpoints are, and one sample answer with its reasoning. Ctrl-C (or
//! SIGTERM) asks the run to checkpoint and stop (the command then fails, saying how to
//! `--resume`); a second one ends the process at once.

use std::path::{Path, PathBuf};

use anyhow::Context;
use r1_core::backend::Backend;

use crate::cli::progress::TerminalProgress;
use crate::device::{BackendJob, DeviceArgs, with_backend};
use crate::pipeline::{Baseline, DEFAULT_RECIPE, PipelineOutcome, Recipe, run_pipeline};
use crate::progress::{NoProgress, Progress};
use crate::run_dir::RunDir;
use crate::stop::StopSignal;
use crate::train::dist;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A recipe (TOML). Without one, the embedded default recipe runs.
    recipe: Option<PathBuf>,
    /// Where the run keeps its files (default: runs/<recipe name>-<time>).
    #[arg(long, conflicts_with = "resume")]
    run_dir: Option<PathBuf>,
    /// Continue the run in this directory: finished stages are skipped, an interrupted
    /// GRPO stage continues from its last checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Print the default recipe and exit.
    #[arg(long)]
    print_default: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

/// The pipeline as a job for whichever backend `--device` opens.
struct PipelineJob<'a> {
    recipe: &'a Recipe,
    text: &'a str,
    dir: &'a Path,
    resume: bool,
    stop: &'a StopSignal,
}

impl BackendJob for PipelineJob<'_> {
    type Output = PipelineOutcome;

    fn run<B: Backend>(self, backend: &B) -> anyhow::Result<PipelineOutcome>
    where
        B::Buffer: Send + Sync,
    {
        // Under `mpirun`, rank 0 alone reports.
        let progress: Box<dyn Progress> = match dist::world().is_writer() {
            true => Box::new(TerminalProgress::default()),
            false => Box::new(NoProgress),
        };
        run_pipeline(
            backend,
            self.recipe,
            self.text,
            self.dir,
            self.resume,
            progress.as_ref(),
            self.stop,
        )
    }
}

/// A run that stopped on request, checkpointed: an orderly end (with several processes,
/// every one stopped at the same step), though the command did not finish its recipe.
#[derive(Debug, thiserror::Error)]
#[error("stopped in stage `{stage}` (checkpointed at its step {step}); continue with: r1host run --resume {dir}")]
pub struct RunStopped {
    pub stage: String,
    pub step: usize,
    pub dir: String,
}

/// Exit status when a second Ctrl-C ends the process (128 + SIGINT, as shells report it).
const SECOND_SIGNAL_EXIT: i32 = 130;

/// A stop signal raised by the first SIGINT or SIGTERM; the second ends the process.
fn stop_on_termination_signals() -> anyhow::Result<StopSignal> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = StopSignal::new();
    for signal in [SIGINT, SIGTERM] {
        // The shutdown must be registered first: it fires only once the flag is set.
        signal_hook::flag::register_conditional_shutdown(signal, SECOND_SIGNAL_EXIT, stop.flag())
            .context("installing the Ctrl-C handler")?;
        signal_hook::flag::register(signal, stop.flag()).context("installing the Ctrl-C handler")?;
    }
    Ok(stop)
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.print_default {
        crate::out!("{DEFAULT_RECIPE}")?;
        return Ok(());
    }
    let text = match (&args.recipe, &args.resume) {
        (Some(p), _) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        (None, Some(dir)) => std::fs::read_to_string(dir.join("recipe.toml"))
            .with_context(|| format!("reading the recipe of the run in {}", dir.display()))?,
        (None, None) => DEFAULT_RECIPE.to_string(),
    };
    let recipe = Recipe::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| match &args.recipe {
            Some(p) => format!("recipe {}", p.display()),
            None => "the recipe".to_string(),
        })?;
    let world = dist::world();
    let (dir, resume) = match (&args.resume, &args.run_dir) {
        (Some(d), _) => (d.clone(), true),
        (None, Some(d)) => (d.clone(), false),
        (None, None) if world.size() > 1 => anyhow::bail!(
            "running as {} processes: name the run directory with --run-dir (each process would pick its own)",
            world.size()
        ),
        (None, None) => (RunDir::fresh(&recipe.name)?.root, false),
    };
    if world.is_writer() {
        eprintln!(
            "r1: running `{}` in {}{}",
            recipe.name,
            dir.display(),
            match world.size() {
                1 => String::new(),
                n => format!(" as {n} data-parallel processes"),
            }
        );
    }
    let started = std::time::Instant::now();
    let stop = stop_on_termination_signals()?;
    let job = PipelineJob {
        recipe: &recipe,
        text: &text,
        dir: &dir,
        resume,
        stop: &stop,
    };
    let report = match with_backend(&args.device, job)? {
        PipelineOutcome::Finished(report) => *report,
        PipelineOutcome::Stopped { stage, step } => {
            return Err(RunStopped {
                stage,
                step,
                dir: dir.display().to_string(),
            }
            .into());
        }
    };
    if !world.is_writer() {
        return Ok(());
    }
    crate::outln!(
        "\n== {} finished in {:.0}s ==",
        recipe.name,
        started.elapsed().as_secs_f64()
    )?;
    if let Some(a) = report.initial_accuracy {
        crate::outln!("held-out accuracy before training: {:5.1}%", a * 100.0)?;
    }
    for s in &report.stages {
        if let Some(a) = s.eval_accuracy {
            crate::outln!(
                "held-out accuracy after {:<12} {:5.1}%",
                format!("{}:", s.name),
                a * 100.0
            )?;
        }
    }
    if let Some(gain) = report.gain() {
        let baseline = match &gain.baseline {
            Baseline::Initial => "the model before training".to_string(),
            Baseline::Stage(name) => format!("the `{name}` model"),
        };
        crate::outln!("gain over {baseline}: {:+.1} points", gain.points)?;
    }
    crate::outln!("run directory: {}", report.run_dir.display())?;
    crate::outln!("metrics:       {}", report.run_dir.join("metrics.jsonl").display())?;
    let mut previous: Option<&std::path::Path> = None;
    for s in &report.stages {
        if previous != Some(s.checkpoint.as_path()) {
            crate::outln!("checkpoint:    {} ({})", s.checkpoint.display(), s.name)?;
        }
        previous = Some(s.checkpoint.as_path());
        if let Some(out) = &s.output {
            crate::outln!("dataset:       {} ({})", out.display(), s.name)?;
        }
    }
    for p in &report.plots {
        crate::outln!("plot:          {}", p.display())?;
    }
    if let Some((prompt, c)) = &report.sample {
        crate::outln!("\nsample: {prompt}")?;
        crate::outln!("  reasoning: {}", c.reasoning.as_deref().unwrap_or("(none)"))?;
        crate::outln!("  answer:    {}", c.answer)?;
    }
    Ok(())
}
