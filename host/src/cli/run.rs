//! `r1host run [RECIPE.toml]`: runs an R1 pipeline — by default the embedded recipe on
//! the bundled addition task — and reports held-out accuracy after each stage, where the
//! plots and checkpoints are, and one sample answer with its reasoning.

use std::path::PathBuf;

use anyhow::Context;

use crate::pipeline::{DEFAULT_RECIPE, Recipe, run_pipeline};
use crate::run_dir::RunDir;

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
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.print_default {
        print!("{DEFAULT_RECIPE}");
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
    let (dir, resume) = match (&args.resume, &args.run_dir) {
        (Some(d), _) => (d.clone(), true),
        (None, Some(d)) => (d.clone(), false),
        (None, None) => (RunDir::fresh(&recipe.name)?.root, false),
    };
    eprintln!("r1: running `{}` in {}", recipe.name, dir.display());
    let started = std::time::Instant::now();
    let report = run_pipeline(&recipe, &text, &dir, resume, false)?;
    println!(
        "\n== {} finished in {:.0}s ==",
        recipe.name,
        started.elapsed().as_secs_f64()
    );
    if let Some(a) = report.initial_accuracy {
        println!("held-out accuracy before training: {:5.1}%", a * 100.0);
    }
    let mut first = None;
    for s in &report.stages {
        if let Some(a) = s.eval_accuracy {
            println!(
                "held-out accuracy after {:<12} {:5.1}%",
                format!("{}:", s.name),
                a * 100.0
            );
            if first.is_none() {
                first = Some((s.name.as_str(), a));
            }
        }
    }
    if let (Some((name, a)), Some(last)) = (first, report.stages.iter().rev().find_map(|s| s.eval_accuracy)) {
        println!("gain over the `{name}` model: {:+.1} points", (last - a) * 100.0);
    }
    println!("run directory: {}", report.run_dir.display());
    println!("metrics:       {}", report.run_dir.join("metrics.jsonl").display());
    let mut previous: Option<&std::path::Path> = None;
    for s in &report.stages {
        if previous != Some(s.checkpoint.as_path()) {
            println!("checkpoint:    {} ({})", s.checkpoint.display(), s.name);
        }
        previous = Some(s.checkpoint.as_path());
        if let Some(out) = &s.output {
            println!("dataset:       {} ({})", out.display(), s.name);
        }
    }
    for p in &report.plots {
        println!("plot:          {}", p.display());
    }
    if let Some((prompt, c)) = &report.sample {
        println!("\nsample: {prompt}");
        println!("  reasoning: {}", c.reasoning.as_deref().unwrap_or("(none)"));
        println!("  answer:    {}", c.answer);
    }
    Ok(())
}
