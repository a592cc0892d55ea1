//! Plots of a run's curves: reads `metrics.jsonl` and writes one PNG and one SVG per main
//! curve (reward, per-reward means, eval accuracy, loss, KL, entropy, completion length,
//! gradient norm, learning rate) plus a four-panel summary into `RUN_DIR/plots/`. Text is
//! drawn with an embedded font, so plotting works on a machine without any fonts installed.
//!
//! One concern per module: `read` parses the metrics into typed records, `axes` places
//! them on the step axis, `curves` turns them into the curves to draw, `figure` and
//! `legend` draw a figure, and `output` writes it as PNG and SVG.

mod axes;
mod curves;
mod figure;
mod font;
mod legend;
mod output;
mod read;

use std::path::{Path, PathBuf};

use crate::io::IoError;

/// The keys plotted besides `rewards/<name>/mean`, in output order.
const PLOTTED_KEYS: &str =
    "reward, rewards/<name>/mean, eval/accuracy, loss, kl, entropy, completions/mean_length, grad_norm, learning_rate";

/// Why a run could not be plotted.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The run directory has no `metrics.jsonl`.
    #[error("{}: not found (is this a run directory? a run writes metrics.jsonl as it trains)", .path.display())]
    MissingMetrics { path: PathBuf },

    /// The metrics file or the plots folder could not be read or created.
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// A metrics line that is not a JSON object.
    #[error("{}, line {line}: {detail}", .path.display())]
    BadLine { path: PathBuf, line: usize, detail: String },

    /// No line holds a number for any plotted key.
    #[error("{}: no numeric values to plot (looked for {PLOTTED_KEYS})", .path.display())]
    NoCurves { path: PathBuf },

    /// The embedded font did not load (a broken build, not bad input).
    #[error("the embedded plot font (assets/fonts/R1PlotSans.ttf) does not load")]
    Font,

    /// plotters failed while drawing a figure.
    #[error("{}: drawing failed: {detail}", .path.display())]
    Draw { path: PathBuf, detail: String },

    /// Writing a figure failed.
    #[error(transparent)]
    Write(#[from] IoError),
}

/// Writes every plot of `run_dir/metrics.jsonl` into `run_dir/plots/` (each file replaced
/// atomically) and returns the paths written: per curve `<name>.png` then `<name>.svg`, and
/// last `summary.png`, `summary.svg`.
pub fn plot_run(run_dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let metrics = run_dir.join("metrics.jsonl");
    let records = read::read_metric_records(&metrics)?;
    let axis = axes::StepAxis::from_records(&records);
    let curves = curves::collect_curves(&records, &axis);
    if curves.is_empty() {
        return Err(PlotError::NoCurves { path: metrics });
    }
    font::register_plot_font()?;
    let dir = run_dir.join("plots");
    std::fs::create_dir_all(&dir).map_err(|source| PlotError::Io {
        path: dir.clone(),
        source,
    })?;

    let own = curves::curves_on_own_axes(&records, &axis, &curves);
    let mut written = Vec::new();
    for (curve, curve_axis) in &own {
        let figure = figure::Figure::Curve(curve, curve_axis);
        written.extend(output::write_png_and_svg(
            &dir,
            &curve.file,
            figure::CURVE_SIZE,
            &figure,
        )?);
    }
    let title = match run_dir.file_name() {
        Some(name) => format!("{}: summary", name.to_string_lossy()),
        None => "summary".to_string(),
    };
    let panels = figure::summary_panels(&own);
    let summary = figure::Figure::Summary {
        title: &title,
        panels: &panels,
    };
    written.extend(output::write_png_and_svg(
        &dir,
        "summary",
        figure::SUMMARY_SIZE,
        &summary,
    )?);
    Ok(written)
}
