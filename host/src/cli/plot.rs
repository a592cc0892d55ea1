//! `r1host plot RUN_DIR`: (re)draws a run's curves from its `metrics.jsonl` into
//! `RUN_DIR/plots/`, e.g. while the run is still training or after it was killed.

use std::path::{Path, PathBuf};

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// The run directory (the one holding metrics.jsonl; the metrics file itself also works).
    pub run_dir: PathBuf,
}

pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    let run_dir = match args.run_dir.parent() {
        Some(parent) if args.run_dir.is_file() && args.run_dir.file_name() == Some("metrics.jsonl".as_ref()) => {
            if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            }
        }
        _ => args.run_dir.as_path(),
    };
    let written = crate::plot::plot_run(run_dir).with_context(|| format!("plotting run {}", run_dir.display()))?;
    for path in written {
        crate::outln!("{}", path.display())?;
    }
    Ok(())
}
