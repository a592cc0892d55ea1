//! Plots of a run's curves: reads `metrics.jsonl` and writes one PNG and one SVG per main
//! curve (reward, per-reward means, eval accuracy, loss, KL, entropy, completion length,
//! gradient norm, learning rate) plus a four-panel summary into `RUN_DIR/plots/`. Text is
//! drawn with an embedded font, so plotting works on a machine without any fonts installed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use crate::io::IoError;
use crate::io::atomic::{write_atomically, write_bytes_atomically};

/// DejaVu Sans cut down to Latin-1 and a few symbols (see `assets/fonts/make_plot_font.py`).
const FONT: &[u8] = include_bytes!("../assets/fonts/R1PlotSans.ttf");
/// Registered under the generic name so an SVG viewer falls back to its own sans-serif font.
const FONT_FAMILY: &str = "sans-serif";

/// Size of a single-curve figure and of the summary, in pixels (SVG user units alike).
const CURVE_SIZE: (u32, u32) = (1000, 560);
const SUMMARY_SIZE: (u32, u32) = (1400, 860);

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
    let records = read_metric_records(&metrics)?;
    let axis = StepAxis::from_records(&records);
    let curves = collect_curves(&records, &axis);
    if curves.is_empty() {
        return Err(PlotError::NoCurves { path: metrics });
    }
    register_plot_font()?;
    let dir = run_dir.join("plots");
    std::fs::create_dir_all(&dir).map_err(|source| PlotError::Io {
        path: dir.clone(),
        source,
    })?;

    // Each curve on the steps of the stages that logged it (GRPO's reward is not squeezed
    // into the corner of an axis that is mostly SFT steps).
    // Curves logged by the same stages share one compressed axis, built once.
    let mut by_stages: HashMap<Vec<bool>, (Vec<Curve>, StepAxis)> = HashMap::new();
    let own: Vec<(Curve, StepAxis)> = curves
        .iter()
        .map(|curve| {
            let sub = logged_stages(&records, &axis, &curve.key).and_then(|logs| {
                let (sub_curves, sub_axis) = by_stages.entry(logs).or_insert_with_key(|logs| {
                    let sub_records = compress(&records, &axis, logs);
                    let mut sub_axis = StepAxis::from_records(&sub_records);
                    sub_axis.label = "step (stages that log it, end to end)";
                    (collect_curves(&sub_records, &sub_axis), sub_axis)
                });
                let c = sub_curves.iter().find(|c| c.key == curve.key)?;
                Some((c.clone(), sub_axis.clone()))
            });
            sub.unwrap_or_else(|| (curve.clone(), axis.clone()))
        })
        .collect();
    let mut written = Vec::new();
    for (curve, curve_axis) in &own {
        let figure = Figure::Curve(curve, curve_axis);
        written.push(write_png(
            &dir.join(format!("{}.png", curve.file)),
            CURVE_SIZE,
            &figure,
        )?);
        written.push(write_svg(
            &dir.join(format!("{}.svg", curve.file)),
            CURVE_SIZE,
            &figure,
        )?);
    }
    let summary: Vec<(&Curve, &StepAxis)> = SUMMARY_PRIORITY
        .iter()
        .filter_map(|key| own.iter().find(|(c, _)| c.key == *key))
        .chain(own.iter().filter(|(c, _)| !SUMMARY_PRIORITY.contains(&c.key.as_str())))
        .take(4)
        .map(|(c, a)| (c, a))
        .collect();
    let title = match run_dir.file_name() {
        Some(name) => format!("{}: summary", name.to_string_lossy()),
        None => "summary".to_string(),
    };
    let figure = Figure::Summary {
        title: &title,
        panels: &summary,
    };
    written.push(write_png(&dir.join("summary.png"), SUMMARY_SIZE, &figure)?);
    written.push(write_svg(&dir.join("summary.svg"), SUMMARY_SIZE, &figure)?);
    Ok(written)
}

/// Which stages logged `key`, when that is some of the run's stages but not all.
fn logged_stages(records: &[Value], axis: &StepAxis, key: &str) -> Option<Vec<bool>> {
    let mut logs = vec![false; axis.stages.len()];
    for (i, r) in records.iter().enumerate() {
        if number(r, key).is_some() {
            logs[axis.stage_of[i]] = true;
        }
    }
    (logs.iter().any(|l| *l) && !logs.iter().all(|l| *l)).then_some(logs)
}

/// The records of the stages in `logs`, each kept stage moved left over the steps before
/// the first kept stage (so the axis starts at 1) and over the stages left out.
fn compress(records: &[Value], axis: &StepAxis, logs: &[bool]) -> Vec<Value> {
    let mut shifts = vec![0.0; axis.stages.len()];
    let (mut shift, mut last_end) = (0.0, 0.0);
    for (i, stage) in axis.stages.iter().enumerate() {
        if logs[i] {
            shift += stage.first_x - last_end - 1.0;
            last_end = stage.last_x;
            shifts[i] = shift;
        }
    }
    records
        .iter()
        .enumerate()
        .filter(|(i, _)| logs[axis.stage_of[*i]])
        .map(|(i, r)| {
            let mut r = r.clone();
            if let Value::Object(m) = &mut r {
                m.insert("global_step".into(), Value::from(axis.xs[i] - shifts[axis.stage_of[i]]));
            }
            r
        })
        .collect()
}

/// The summary shows the first four of these that the run logged, then any other curve.
const SUMMARY_PRIORITY: [&str; 8] = [
    "reward",
    "eval/accuracy",
    "loss",
    "completions/mean_length",
    "kl",
    "entropy",
    "grad_norm",
    "learning_rate",
];

/// Reads `metrics.jsonl` as one JSON object per non-blank line. A last line that does not
/// parse and has no newline is skipped: it is a line a live run is still writing.
fn read_metric_records(path: &Path) -> Result<Vec<Value>, PlotError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PlotError::MissingMetrics {
                path: path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(PlotError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let complete = bytes.ends_with(b"\n");
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let mut records = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let bad = |detail: String| PlotError::BadLine {
            path: path.to_path_buf(),
            line: i + 1,
            detail,
        };
        match serde_json::from_slice::<Value>(line) {
            Ok(record @ Value::Object(_)) => records.push(record),
            Ok(other) => return Err(bad(format!("expected a JSON object, found `{other}`"))),
            Err(_) if i + 1 == lines.len() && !complete => {}
            Err(e) => return Err(bad(format!("not valid JSON: {e}"))),
        }
    }
    Ok(records)
}

/// A finite number stored under `key`, if any (null, strings and missing keys are gaps).
fn number(record: &Value, key: &str) -> Option<f64> {
    record.get(key)?.as_f64().filter(|v| v.is_finite())
}

/// A run of consecutive records with the same `stage`.
#[derive(Clone, Debug, PartialEq)]
struct Stage {
    /// Empty for records logged before any `stage` key appeared.
    name: String,
    first_x: f64,
    last_x: f64,
}

/// Where each record sits on the x axis and which stage it belongs to.
#[derive(Clone, Debug)]
struct StepAxis {
    /// "global step" when the run logs `global_step`, else "step".
    label: &'static str,
    /// One per record.
    xs: Vec<f64>,
    /// One per record: its index in `stages`.
    stage_of: Vec<usize>,
    stages: Vec<Stage>,
}

impl StepAxis {
    /// x is `global_step` where a record has it. Otherwise it is `step`, shifted so that a
    /// stage whose `step` restarts continues after the previous stage instead of drawing
    /// over it; a record with neither comes one after the previous record.
    fn from_records(records: &[Value]) -> StepAxis {
        let label = if records.iter().any(|r| number(r, "global_step").is_some()) {
            "global step"
        } else {
            "step"
        };
        let mut xs = Vec::with_capacity(records.len());
        let mut stage_of = Vec::with_capacity(records.len());
        let mut stages: Vec<Stage> = Vec::new();
        let mut offset = 0.0;
        let mut last_x: Option<f64> = None;
        let mut last_step: Option<f64> = None;
        for record in records {
            let stage_name = record.get("stage").and_then(Value::as_str);
            let new_stage = match (stages.last(), stage_name) {
                (None, _) => true,
                (Some(current), Some(name)) => current.name != name,
                (Some(_), None) => false,
            };
            let step = number(record, "step");
            let x = match (number(record, "global_step"), step) {
                (Some(global), _) => global,
                (None, Some(step)) => {
                    let restarted = last_step.is_some_and(|l| step < l || (new_stage && step <= l));
                    if restarted {
                        offset = last_x.unwrap_or(0.0);
                    }
                    offset + step
                }
                (None, None) => last_x.map_or(0.0, |l| l + 1.0),
            };
            if step.is_some() {
                last_step = step;
            }
            if new_stage {
                stages.push(Stage {
                    name: stage_name.unwrap_or("").to_string(),
                    first_x: x,
                    last_x: x,
                });
            }
            let index = stages.len() - 1;
            stages[index].last_x = x;
            xs.push(x);
            stage_of.push(index);
            last_x = Some(x);
        }
        StepAxis {
            label,
            xs,
            stage_of,
            stages,
        }
    }

    /// The x range every figure of the run shares, so curves line up across files.
    fn range(&self) -> (f64, f64) {
        let lo = self.xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = self.xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !lo.is_finite() || !hi.is_finite() {
            (0.0, 1.0)
        } else if hi - lo < 1.0 {
            (lo - 1.0, hi + 1.0)
        } else {
            (lo, hi)
        }
    }

    /// The x where stage `i` (≥ 1) begins on the plot: halfway between the last record of
    /// the stage before it and its own first record.
    fn boundary(&self, i: usize) -> f64 {
        (self.stages[i - 1].last_x + self.stages[i].first_x) / 2.0
    }

    /// Whether stage markers are drawn: the run names its stages.
    fn has_named_stages(&self) -> bool {
        self.stages.iter().any(|s| !s.name.is_empty())
    }
}

/// How a curve is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mark {
    /// A line per stage, with a moving mean over it when `smooth` and the curve is long.
    Line { smooth: bool },
    /// Sparse values (evaluations): markers joined by a thin line.
    Points,
}

/// One value of a curve.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Point {
    x: f64,
    y: f64,
    /// Index of the stage the record belongs to; lines break between stages.
    stage: usize,
    /// The matching standard deviation (for the ± band), when the curve has one.
    std: Option<f64>,
}

/// A curve read from the metrics, ready to draw.
#[derive(Clone, Debug)]
struct Curve {
    key: String,
    /// The key of the ± band's standard deviation, if the run logged it.
    band: Option<String>,
    title: String,
    /// File stem in `plots/`.
    file: String,
    color: RGBColor,
    mark: Mark,
    points: Vec<Point>,
}

const BLUE: RGBColor = RGBColor(31, 119, 180);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const RED: RGBColor = RGBColor(214, 39, 40);
const PURPLE: RGBColor = RGBColor(148, 103, 189);
const BROWN: RGBColor = RGBColor(140, 86, 75);
const TEAL: RGBColor = RGBColor(23, 150, 165);
/// Stage boundaries and names; no curve uses it, so a boundary is told apart in an SVG.
const GREY: RGBColor = RGBColor(90, 90, 90);
const SILVER: RGBColor = RGBColor(127, 127, 127);
const OLIVE: RGBColor = RGBColor(150, 150, 20);
/// Colors of the per-reward curves, in name order.
const REWARD_COLORS: [RGBColor; 6] = [
    RGBColor(255, 127, 14),
    PURPLE,
    RGBColor(227, 119, 194),
    BROWN,
    TEAL,
    OLIVE,
];

/// A curve before its values are read: what to plot and how to draw it.
struct CurveSpec {
    key: String,
    band: Option<String>,
    title: String,
    file: String,
    color: RGBColor,
    mark: Mark,
}

impl CurveSpec {
    fn new(key: &str, title: &str, file: &str, color: RGBColor, mark: Mark) -> CurveSpec {
        CurveSpec {
            key: key.into(),
            band: None,
            title: title.into(),
            file: file.into(),
            color,
            mark,
        }
    }
}

/// The curves of the run in output order, those without any numeric value left out.
fn collect_curves(records: &[Value], axis: &StepAxis) -> Vec<Curve> {
    let line = Mark::Line { smooth: true };
    let mut specs = vec![CurveSpec {
        band: Some("reward_std".into()),
        ..CurveSpec::new("reward", "Reward", "reward", BLUE, line)
    }];
    for (i, name) in reward_names(records).iter().enumerate() {
        specs.push(CurveSpec {
            key: format!("rewards/{name}/mean"),
            band: Some(format!("rewards/{name}/std")),
            title: format!("Reward `{name}`"),
            file: format!("rewards_{}", file_safe(name)),
            color: REWARD_COLORS[i % REWARD_COLORS.len()],
            mark: line,
        });
    }
    specs.extend([
        CurveSpec::new(
            "eval/accuracy",
            "Held-out accuracy",
            "eval_accuracy",
            GREEN,
            Mark::Points,
        ),
        CurveSpec::new("loss", "Loss", "loss", RED, line),
        CurveSpec::new("kl", "KL divergence to the reference", "kl", PURPLE, line),
        CurveSpec::new("entropy", "Token entropy", "entropy", BROWN, line),
        CurveSpec::new(
            "completions/mean_length",
            "Completion length",
            "completions_mean_length",
            TEAL,
            line,
        ),
        CurveSpec::new("grad_norm", "Gradient norm", "grad_norm", SILVER, line),
        // A schedule, not a noisy measurement: nothing to smooth.
        CurveSpec::new(
            "learning_rate",
            "Learning rate",
            "learning_rate",
            OLIVE,
            Mark::Line { smooth: false },
        ),
    ]);

    let mut used_files: Vec<String> = Vec::new();
    let mut curves = Vec::new();
    for CurveSpec {
        key,
        band,
        title,
        mut file,
        color,
        mark,
    } in specs
    {
        let points: Vec<Point> = records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let y = number(r, &key)?;
                let std = band.as_deref().and_then(|b| number(r, b)).map(f64::abs);
                Some(Point {
                    x: axis.xs[i],
                    y,
                    stage: axis.stage_of[i],
                    std,
                })
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        // Two reward names that differ only in characters a file name cannot hold.
        while used_files.contains(&file) {
            file.push('_');
        }
        used_files.push(file.clone());
        let band = band.filter(|_| points.iter().any(|p| p.std.is_some()));
        curves.push(Curve {
            key,
            band,
            title,
            file,
            color,
            mark,
            points,
        });
    }
    curves
}

/// The `<name>` of every `rewards/<name>/mean` key, sorted (a JSON object's keys have no
/// order once parsed, so first appearance would be arbitrary).
fn reward_names(records: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for record in records {
        let Some(object) = record.as_object() else { continue };
        for key in object.keys() {
            let name = key.strip_prefix("rewards/").and_then(|k| k.strip_suffix("/mean"));
            if let Some(name) = name.filter(|n| !n.is_empty())
                && !names.iter().any(|n| n == name)
            {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    names
}

/// `name` with every character other than ASCII letters, digits, `-` and `_` made `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Centred moving mean within each stage:
/// m_i = mean{ y_j : |j − i| ≤ ⌊k/2⌋, j in the same stage as i }.
/// Centred rather than trailing (as TensorBoard's EMA is) so a rising curve is not drawn late.
fn moving_mean(points: &[Point], k: usize) -> Vec<Point> {
    let half = k / 2;
    let mut out = Vec::with_capacity(points.len());
    for (i, p) in points.iter().enumerate() {
        let lo = i.saturating_sub(half);
        let hi = (i + half).min(points.len() - 1);
        let (sum, n) = points[lo..=hi]
            .iter()
            .filter(|q| q.stage == p.stage)
            .fold((0.0, 0usize), |(s, n), q| (s + q.y, n + 1));
        out.push(Point {
            y: sum / n as f64,
            ..*p
        });
    }
    out
}

/// The moving-mean window for a curve of `n` points: about 1/25 of the run, at least 5.
fn smoothing_window(n: usize) -> usize {
    (n / 25).clamp(5, 200) | 1
}

/// Curves shorter than this are drawn as they are, without a moving mean.
const SMOOTH_FROM: usize = 30;

/// Tick labels with as many decimals as the tick spacing needs, in scientific notation for
/// very large or very small magnitudes (learning rates).
#[derive(Clone, Copy, Debug)]
struct TickFormat {
    scientific: bool,
    decimals: usize,
}

impl TickFormat {
    /// For at most `ticks` ticks over [lo, hi]: plotters spaces them 1, 2 or 5 × 10^k apart,
    /// at least `(hi − lo) / ticks`, so that spacing's decimals are enough.
    fn for_range(lo: f64, hi: f64, ticks: usize) -> TickFormat {
        let magnitude = lo.abs().max(hi.abs());
        let step = ((hi - lo).abs() / ticks.max(1) as f64).max(f64::MIN_POSITIVE);
        let step_exp = step.log10().floor() as i32;
        if magnitude >= 1e6 || (magnitude > 0.0 && magnitude < 1e-3) {
            let mag_exp = magnitude.log10().floor() as i32;
            TickFormat {
                scientific: true,
                decimals: (mag_exp - step_exp).clamp(1, 4) as usize,
            }
        } else {
            TickFormat {
                scientific: false,
                decimals: (-step_exp).clamp(0, 6) as usize,
            }
        }
    }

    fn format(&self, v: f64) -> String {
        let text = if self.scientific {
            format!("{v:.*e}", self.decimals)
        } else {
            format!("{v:.*}", self.decimals)
        };
        // "-0.00" reads as a sign error on an axis.
        match text.strip_prefix('-') {
            Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
            _ => text,
        }
    }
}

/// Font sizes and spacing of a figure.
struct Look {
    caption: u32,
    label: u32,
    desc: u32,
    legend: u32,
    stage: u32,
    margin: u32,
    x_area: u32,
    y_area: u32,
    x_ticks: usize,
    y_ticks: usize,
}

/// A single-curve figure.
const FULL: Look = Look {
    caption: 24,
    label: 15,
    desc: 16,
    legend: 15,
    stage: 15,
    margin: 14,
    x_area: 50,
    y_area: 72,
    x_ticks: 10,
    y_ticks: 8,
};
/// One panel of the summary.
const PANEL: Look = Look {
    caption: 20,
    label: 13,
    desc: 14,
    legend: 13,
    stage: 13,
    margin: 12,
    x_area: 44,
    y_area: 64,
    x_ticks: 8,
    y_ticks: 6,
};

/// What one output file shows.
enum Figure<'a> {
    Curve(&'a Curve, &'a StepAxis),
    Summary {
        title: &'a str,
        panels: &'a [(&'a Curve, &'a StepAxis)],
    },
}

fn draw_figure<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    figure: &Figure,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    match figure {
        Figure::Curve(curve, axis) => draw_curve(root, axis, curve, &FULL),
        Figure::Summary { title, panels } => {
            let area = root.titled(title, (FONT_FAMILY, 26))?;
            let grid = match panels.len() {
                1 => (1, 1),
                2 => (1, 2),
                _ => (2, 2),
            };
            for (panel, (curve, axis)) in area.split_evenly(grid).iter().zip(panels.iter()) {
                draw_curve(panel, axis, curve, &PANEL)?;
            }
            Ok(())
        }
    }
}

/// Draws one curve with its axes, stage shading, boundaries and names, and legend.
fn draw_curve<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    axis: &StepAxis,
    curve: &Curve,
    look: &Look,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (x0, x1) = axis.range();
    let show_stages = axis.has_named_stages();
    let log_y = wants_log_scale(curve);
    let points: Vec<Point> = if log_y {
        let positive = curve.points.iter().filter(|p| p.y > 0.0);
        positive
            .map(|p| Point {
                y: p.y.log10(),
                std: None,
                ..*p
            })
            .collect()
    } else {
        curve.points.clone()
    };
    let (y0, y1) = y_range(&points, curve.mark, show_stages);
    let x_ticks = TickFormat::for_range(x0, x1, look.x_ticks);
    let y_ticks = TickFormat::for_range(y0, y1, look.y_ticks);
    // On a log axis a tick every decade: ask for no more labels than there are decades.
    let y_labels = if log_y {
        ((y1 - y0).floor() as usize + 1).clamp(2, look.y_ticks)
    } else {
        look.y_ticks
    };
    let y_format = |v: &f64| {
        if log_y {
            format_power_of_ten(*v)
        } else {
            y_ticks.format(*v)
        }
    };
    let y_desc = if log_y {
        format!("{} (log scale)", curve.key)
    } else {
        curve.key.clone()
    };

    let mut chart = ChartBuilder::on(area)
        .caption(&curve.title, (FONT_FAMILY, look.caption))
        .margin(look.margin)
        .x_label_area_size(look.x_area)
        .y_label_area_size(look.y_area)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(axis.label)
        .y_desc(y_desc)
        .x_labels(look.x_ticks)
        .y_labels(y_labels)
        .x_label_formatter(&|v| x_ticks.format(*v))
        .y_label_formatter(&y_format)
        .label_style((FONT_FAMILY, look.label))
        .axis_desc_style((FONT_FAMILY, look.desc))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(RGBColor(245, 245, 245))
        .draw()?;

    if show_stages {
        let edges: Vec<(f64, f64)> = (0..axis.stages.len())
            .map(|i| {
                let lo = if i == 0 { x0 } else { axis.boundary(i) };
                let hi = if i + 1 == axis.stages.len() {
                    x1
                } else {
                    axis.boundary(i + 1)
                };
                (lo, hi)
            })
            .collect();
        // Every other stage shaded so a stage reads as a region, not only as a line.
        chart.draw_series(
            edges
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 2 == 1)
                .map(|(_, &(lo, hi))| Rectangle::new([(lo, y0), (hi, y1)], BLACK.mix(0.045).filled())),
        )?;
        for &(lo, _) in edges.iter().skip(1) {
            chart.draw_series(DashedLineSeries::new([(lo, y0), (lo, y1)], 6, 4, GREY.stroke_width(1)))?;
        }
        let name_style = TextStyle::from((FONT_FAMILY, look.stage)).color(&GREY);
        for (stage, &(lo, hi)) in axis.stages.iter().zip(&edges) {
            let width = chart.backend_coord(&(hi, y1)).0 - chart.backend_coord(&(lo, y1)).0;
            let fits = |text: &str| {
                area.estimate_text_size(text, &name_style)
                    .is_ok_and(|(w, _)| w as i32 + 8 <= width)
            };
            if let Some(name) = shorten_to_fit(&stage.name, fits) {
                chart.draw_series(std::iter::once(
                    EmptyElement::at((lo, y1)) + Text::new(name, (5, 5), name_style.clone()),
                ))?;
            }
        }
    }

    let color = curve.color;
    let smoothed = matches!(curve.mark, Mark::Line { smooth: true }) && points.len() >= SMOOTH_FROM;
    let window = smoothing_window(points.len());
    let mut legend: Vec<String> = Vec::new();
    if let Some(band) = curve.band.as_ref().filter(|_| !log_y) {
        let fill = color.mix(0.16).filled();
        let mut labelled = false;
        for segment in stage_segments(&points) {
            let with_std: Vec<Point> = segment.iter().filter(|p| p.std.is_some()).copied().collect();
            if with_std.len() < 2 {
                continue;
            }
            let (upper, lower) = band_edges(&with_std, smoothed.then_some(window));
            let outline = upper
                .iter()
                .chain(lower.iter().rev())
                .map(|p| (p.x, p.y))
                .collect::<Vec<_>>();
            let series = chart.draw_series(std::iter::once(Polygon::new(outline, fill)))?;
            if !labelled {
                labelled = true;
                legend.push(format!("± {band}"));
                series
                    .label(format!("± {band}"))
                    .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 22, y + 6)], fill));
            }
        }
    }

    match curve.mark {
        Mark::Line { .. } => {
            let raw_style = if smoothed {
                color.mix(0.35).stroke_width(1)
            } else {
                color.stroke_width(2)
            };
            let raw_label = if smoothed {
                format!("{} (each step)", curve.key)
            } else {
                curve.key.clone()
            };
            draw_lines(&mut chart, &points, raw_style, raw_label, &mut legend)?;
            if smoothed {
                let mean = moving_mean(&points, window);
                draw_lines(
                    &mut chart,
                    &mean,
                    color.stroke_width(3),
                    format!("moving mean of {window} steps"),
                    &mut legend,
                )?;
            }
            if points.len() < SMOOTH_FROM {
                chart.draw_series(points.iter().map(|p| Circle::new((p.x, p.y), 3, color.filled())))?;
            }
        }
        Mark::Points => {
            legend.push(curve.key.clone());
            for segment in stage_segments(&points) {
                let xy = segment.iter().map(|p| (p.x, p.y));
                chart.draw_series(LineSeries::new(xy, color.mix(0.6).stroke_width(1)))?;
            }
            chart
                .draw_series(points.iter().map(|p| Circle::new((p.x, p.y), 4, color.filled())))?
                .label(curve.key.as_str())
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new([(0, 0), (22, 0)], color.stroke_width(1))
                        + Circle::new((11, 0), 4, color.filled())
                });
        }
    }

    let (right, upper) = legend_corner(&points, (x0, x1), (y0, y1));
    let label_style = TextStyle::from((FONT_FAMILY, look.legend));
    // plotters puts a legend 5 px from the plot's edge; at the top that would hide the stage
    // names, so the legend is placed by hand from its measured size (as plotters lays it out).
    let mut lines = MultiLineText::<_, &str>::new((0, 0), &label_style);
    for line in &legend {
        lines.push_line(line.as_str());
    }
    let (plot_w, plot_h) = chart.plotting_area().dim_in_pixel();
    let position = match lines.estimate_dimension() {
        Ok((text_w, text_h)) => {
            let (w, h) = (text_w + LEGEND_MARKER + 2 * LEGEND_PADDING, text_h + 2 * LEGEND_PADDING);
            let top = if show_stages {
                look.stage as i32 + 16
            } else {
                LEGEND_INSET
            };
            let x = if right {
                plot_w as i32 - w - LEGEND_INSET
            } else {
                LEGEND_INSET
            };
            let y = if upper { top } else { plot_h as i32 - h - LEGEND_INSET };
            SeriesLabelPosition::Coordinate(x, y)
        }
        Err(_) => match (right, upper) {
            (true, true) => SeriesLabelPosition::UpperRight,
            (true, false) => SeriesLabelPosition::LowerRight,
            (false, true) => SeriesLabelPosition::UpperLeft,
            (false, false) => SeriesLabelPosition::LowerLeft,
        },
    };
    chart
        .configure_series_labels()
        .position(position)
        .legend_area_size(LEGEND_MARKER)
        .margin(LEGEND_PADDING)
        .background_style(WHITE.mix(0.88))
        .border_style(BLACK.mix(0.35))
        .label_font((FONT_FAMILY, look.legend))
        .draw()?;
    Ok(())
}

/// Legend geometry in pixels: room for a series' marker, padding inside the box, distance
/// from the plot's edge.
const LEGEND_MARKER: i32 = 30;
const LEGEND_PADDING: i32 = 10;
const LEGEND_INSET: i32 = 6;

/// Whether a curve is drawn on a log axis: never negative, and its positive values span
/// three decades or more (a learning rate of 1e-3 for SFT and 1e-6 for GRPO would otherwise
/// read as zero). Zeros, such as the end of a decay to 0, have no place on it and are left out.
fn wants_log_scale(curve: &Curve) -> bool {
    let positive = curve.points.iter().map(|p| p.y).filter(|&y| y > 0.0);
    let (lo, hi) = positive.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    curve.band.is_none() && curve.points.iter().all(|p| p.y >= 0.0) && lo.is_finite() && hi / lo >= 1e3
}

/// A log-axis tick: `1e-5` on a decade, `3.2e-6` between.
fn format_power_of_ten(exponent: f64) -> String {
    if (exponent - exponent.round()).abs() < 1e-9 {
        format!("1e{}", exponent.round() as i64)
    } else {
        format!("{:.1e}", 10f64.powf(exponent))
    }
}

/// The upper and lower edge of a ± std band, each smoothed by a centred moving mean of
/// `window` points when the curve itself is (a band around a noisy line is mostly noise).
fn band_edges(points: &[Point], window: Option<usize>) -> (Vec<Point>, Vec<Point>) {
    let edge = |sign: f64| {
        let edge: Vec<Point> = points
            .iter()
            .map(|p| Point {
                y: p.y + sign * p.std.unwrap_or(0.0),
                ..*p
            })
            .collect();
        match window {
            Some(k) => moving_mean(&edge, k),
            None => edge,
        }
    };
    (edge(1.0), edge(-1.0))
}

/// `name` if it fits, else its longest prefix (of at least two characters) with an ellipsis
/// that fits, else nothing.
fn shorten_to_fit(name: &str, fits: impl Fn(&str) -> bool) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    if fits(name) {
        return Some(name.to_string());
    }
    let chars: Vec<char> = name.chars().collect();
    (2..chars.len())
        .rev()
        .map(|n| chars[..n].iter().collect::<String>() + "…")
        .find(|s| fits(s))
}

/// Draws `points` as one line per stage, with `label` in the legend once.
fn draw_lines<DB: DrawingBackend>(
    chart: &mut ChartContext<
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    points: &[Point],
    style: ShapeStyle,
    label: String,
    legend: &mut Vec<String>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let mut labelled = false;
    for segment in stage_segments(points) {
        let series = chart.draw_series(LineSeries::new(segment.iter().map(|p| (p.x, p.y)), style))?;
        if !labelled {
            labelled = true;
            legend.push(label.clone());
            series
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 22, y)], style));
        }
    }
    Ok(())
}

/// `points` split where the stage changes.
fn stage_segments(points: &[Point]) -> impl Iterator<Item = &[Point]> {
    points.chunk_by(|a, b| a.stage == b.stage)
}

/// The y range of a curve: its values and ± bands with 5 % room, accuracies on [0, 1],
/// and extra room at the top for the stage names.
fn y_range(points: &[Point], mark: Mark, show_stages: bool) -> (f64, f64) {
    let values = points.iter().flat_map(|p| {
        let s = p.std.unwrap_or(0.0);
        [p.y - s, p.y + s]
    });
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if mark == Mark::Points && lo >= 0.0 && hi <= 1.0 {
        (lo, hi) = (0.0, 1.0);
    }
    let span = if hi > lo { hi - lo } else { lo.abs().max(1e-3) };
    let pad = 0.05 * span;
    let top_room = if show_stages { 0.12 * span } else { 0.0 };
    (lo - pad, hi + pad + top_room)
}

/// The legend corner, as (right, upper), with the fewest values of the curve (its ± band
/// edges included) under it, preferring the right and then the top on a tie.
fn legend_corner(points: &[Point], (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> (bool, bool) {
    let samples: Vec<(f64, f64)> = points
        .iter()
        .flat_map(|p| {
            let s = p.std.unwrap_or(0.0);
            [p.y - s, p.y, p.y + s].map(|y| ((p.x - x0) / (x1 - x0), (y - y0) / (y1 - y0)))
        })
        .collect();
    let under = |right: bool, upper: bool| {
        samples
            .iter()
            .filter(|&&(u, _)| if right { u > 0.55 } else { u < 0.45 })
            .filter(|&&(_, v)| if upper { v > 0.65 } else { v < 0.35 })
            .count()
    };
    [(true, true), (true, false), (false, true), (false, false)]
        .into_iter()
        .min_by_key(|&(right, upper)| under(right, upper))
        .unwrap_or((true, true))
}

/// Registers the embedded font with plotters once per process.
fn register_plot_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FONT_FAMILY, plotters::style::FontStyle::Normal, FONT).is_ok());
    if ok { Ok(()) } else { Err(PlotError::Font) }
}

fn draw_error(path: &Path, e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// Renders `figure` to an RGB buffer and writes it as a PNG.
fn write_png(path: &Path, size: (u32, u32), figure: &Figure) -> Result<PathBuf, PlotError> {
    let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        draw_figure(&root, figure).map_err(|e| draw_error(path, e))?;
        root.present().map_err(|e| draw_error(path, e))?;
    }
    write_atomically(path, |w| {
        let mut encoder = png::Encoder::new(w, size.0, size.1);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
        writer.write_image_data(&pixels).map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)
    })?;
    Ok(path.to_path_buf())
}

/// Renders `figure` as SVG text and writes it.
fn write_svg(path: &Path, size: (u32, u32), figure: &Figure) -> Result<PathBuf, PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw_figure(&root, figure).map_err(|e| draw_error(path, e))?;
        root.present().map_err(|e| draw_error(path, e))?;
    }
    write_bytes_atomically(path, svg.as_bytes())?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The records of the stages that logged `key`, with the x of every later kept stage moved
    /// back over the stages left out (written as `global_step`), and whether any stage was
    /// left out.
    fn stages_logging(records: &[Value], axis: &StepAxis, key: &str) -> (Vec<Value>, bool) {
        match logged_stages(records, axis, key) {
            Some(logs) => (compress(records, axis, &logs), true),
            None => (Vec::new(), false),
        }
    }

    #[test]
    fn a_curve_logged_in_some_stages_is_drawn_over_those_stages_end_to_end() {
        let mut records = Vec::new();
        let mut g = 0;
        for (stage, n, key) in [
            ("sft", 100, "loss"),
            ("grpo1", 10, "reward"),
            ("sft2", 90, "loss"),
            ("grpo2", 10, "reward"),
        ] {
            for step in 1..=n {
                g += 1;
                records.push(json!({"stage": stage, "step": step, "global_step": g, key: 1.0}));
            }
        }
        let axis = StepAxis::from_records(&records);
        let (sub, compressed) = stages_logging(&records, &axis, "reward");
        assert!(compressed);
        let xs: Vec<f64> = sub.iter().map(|r| number(r, "global_step").unwrap()).collect();
        let want: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(xs, want);
        assert!(sub.iter().all(|r| r["stage"] == "grpo1" || r["stage"] == "grpo2"));
        let (_, compressed) = stages_logging(&records, &axis, "step");
        assert!(!compressed, "a key every stage logs keeps the run's axis");
    }

    #[test]
    fn x_is_global_step_when_the_run_logs_it() {
        let records = vec![
            json!({"stage": "sft", "step": 1, "global_step": 1}),
            json!({"stage": "sft", "step": 2, "global_step": 2}),
            json!({"stage": "grpo", "step": 1, "global_step": 3}),
        ];
        let axis = StepAxis::from_records(&records);
        assert_eq!(axis.label, "global step");
        assert_eq!(axis.xs, vec![1.0, 2.0, 3.0]);
        assert_eq!(axis.stage_of, vec![0, 0, 1]);
        assert_eq!(axis.boundary(1), 2.5);
    }

    #[test]
    fn a_stage_whose_step_restarts_continues_after_the_previous_one() {
        let records = vec![
            json!({"stage": "sft", "step": 1}),
            json!({"stage": "sft", "step": 2}),
            json!({"stage": "sft", "step": 3}),
            json!({"stage": "grpo", "step": 1}),
            json!({"stage": "grpo", "step": 2}),
            json!({"step": 3}),
        ];
        let axis = StepAxis::from_records(&records);
        assert_eq!(axis.label, "step");
        assert_eq!(axis.xs, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let names: Vec<&str> = axis.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["sft", "grpo"]);
        assert_eq!(
            axis.stages[1],
            Stage {
                name: "grpo".into(),
                first_x: 4.0,
                last_x: 6.0
            }
        );
    }

    #[test]
    fn a_second_line_for_the_same_step_does_not_shift_the_axis() {
        let records = vec![
            json!({"step": 1}),
            json!({"step": 2}),
            json!({"step": 2, "eval/accuracy": 0.5}),
        ];
        assert_eq!(StepAxis::from_records(&records).xs, vec![1.0, 2.0, 2.0]);
    }

    #[test]
    fn moving_mean_is_centred_and_stays_within_a_stage() {
        let p = |y: f64, stage| Point {
            x: y,
            y,
            stage,
            std: None,
        };
        let points = [p(1.0, 0), p(2.0, 0), p(3.0, 0), p(10.0, 1), p(20.0, 1)];
        let ys: Vec<f64> = moving_mean(&points, 3).iter().map(|q| q.y).collect();
        assert_eq!(ys, vec![1.5, 2.0, 2.5, 15.0, 15.0]);
    }

    #[test]
    fn nulls_and_strings_are_gaps_and_bands_need_their_std() {
        let records = vec![
            json!({"step": 1, "reward": 0.5, "reward_std": 0.1, "loss": null}),
            json!({"step": 2, "reward": null, "loss": "nan"}),
            json!({"step": 3, "reward": 0.7, "rewards/fmt/mean": 1.0}),
        ];
        let axis = StepAxis::from_records(&records);
        let curves = collect_curves(&records, &axis);
        let keys: Vec<&str> = curves.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, vec!["reward", "rewards/fmt/mean"]);
        let xs: Vec<f64> = curves[0].points.iter().map(|p| p.x).collect();
        assert_eq!(xs, vec![1.0, 3.0]);
        assert_eq!(curves[0].band.as_deref(), Some("reward_std"));
        assert_eq!(curves[1].band, None);
        assert_eq!(curves[1].file, "rewards_fmt");
    }

    #[test]
    fn a_rate_spanning_decades_gets_a_log_axis_even_when_it_decays_to_zero() {
        let curve = |ys: &[f64]| Curve {
            key: "learning_rate".into(),
            band: None,
            title: String::new(),
            file: String::new(),
            color: OLIVE,
            mark: Mark::Line { smooth: false },
            points: ys
                .iter()
                .enumerate()
                .map(|(i, &y)| Point {
                    x: i as f64,
                    y,
                    stage: 0,
                    std: None,
                })
                .collect(),
        };
        assert!(wants_log_scale(&curve(&[1e-3, 1e-3, 1e-6, 5e-7, 0.0])));
        assert!(
            !wants_log_scale(&curve(&[1e-3, 5e-4, 2e-6])),
            "under three decades stays linear"
        );
        assert!(
            !wants_log_scale(&curve(&[1.0, 1e-4, -1e-4])),
            "negative values stay linear"
        );
        assert!(!wants_log_scale(&curve(&[0.0, 0.0])));
        assert_eq!(format_power_of_ten(-5.0), "1e-5");
        assert_eq!(format_power_of_ten(-5.5), "3.2e-6");
    }

    #[test]
    fn a_stage_name_too_wide_for_its_region_is_shortened() {
        let fits = |s: &str| s.chars().count() <= 6;
        assert_eq!(shorten_to_fit("grpo1", fits).as_deref(), Some("grpo1"));
        assert_eq!(shorten_to_fit("cold_start", fits).as_deref(), Some("cold_…"));
        assert_eq!(shorten_to_fit("cold_start", |_| false), None);
        assert_eq!(shorten_to_fit("", |_| true), None);
    }

    #[test]
    fn the_legend_goes_to_the_emptiest_corner() {
        let p = |x: f64, y: f64| Point {
            x,
            y,
            stage: 0,
            std: None,
        };
        // A rising curve leaves the upper left and lower right empty; right wins ties.
        let rising: Vec<Point> = (0..=10).map(|i| p(i as f64, i as f64)).collect();
        assert_eq!(legend_corner(&rising, (0.0, 10.0), (0.0, 10.0)), (true, false));
        // A loss that falls to the floor fills both lower corners.
        let falling: Vec<Point> = (0..=10).map(|i| p(i as f64, if i < 2 { 10.0 } else { 0.0 })).collect();
        assert_eq!(legend_corner(&falling, (0.0, 10.0), (0.0, 10.0)), (true, true));
    }

    #[test]
    fn tick_labels_carry_the_decimals_the_spacing_needs() {
        assert_eq!(TickFormat::for_range(0.0, 300.0, 10).format(150.0), "150");
        assert_eq!(TickFormat::for_range(0.0, 1.0, 8).format(0.2), "0.2");
        assert_eq!(TickFormat::for_range(-0.01, 0.01, 8).format(-0.0001), "0.000");
        assert_eq!(TickFormat::for_range(0.0, 3e-5, 8).format(1.5e-5), "1.5e-5");
    }
}
