//! The curves of a run: which keys are plotted and how each is drawn (color, line or
//! points, ± band, log axis), their values on an axis, and the moving mean that smooths them.

use std::collections::HashMap;

use plotters::style::RGBColor;

use super::axes::StepAxis;
use super::read::MetricRecord;

/// How a curve is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Mark {
    /// A line per stage, with a moving mean over it when `smooth` and the curve is long.
    Line { smooth: bool },
    /// Sparse values (evaluations): markers joined by a thin line.
    Points,
}

/// One value of a curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Point {
    pub x: f64,
    pub y: f64,
    /// Index of the stage the record belongs to; lines break between stages.
    pub stage: usize,
    /// The matching standard deviation (for the ± band), when the curve has one.
    pub std: Option<f64>,
}

/// A curve read from the metrics, ready to draw.
#[derive(Clone, Debug)]
pub(super) struct Curve {
    pub key: String,
    /// The key of the ± band's standard deviation, if the run logged it.
    pub band: Option<String>,
    pub title: String,
    /// File stem in `plots/`.
    pub file: String,
    pub color: RGBColor,
    pub mark: Mark,
    pub points: Vec<Point>,
}

const BLUE: RGBColor = RGBColor(31, 119, 180);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const RED: RGBColor = RGBColor(214, 39, 40);
const PURPLE: RGBColor = RGBColor(148, 103, 189);
const BROWN: RGBColor = RGBColor(140, 86, 75);
const TEAL: RGBColor = RGBColor(23, 150, 165);
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

/// What the run's curves would be, in output order, before their values are read.
fn curve_specs(records: &[MetricRecord]) -> Vec<CurveSpec> {
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
    specs
}

/// The curves of the run in output order, those without any numeric value left out.
pub(super) fn collect_curves(records: &[MetricRecord], axis: &StepAxis) -> Vec<Curve> {
    let mut used_files: Vec<String> = Vec::new();
    let mut curves = Vec::new();
    for spec in curve_specs(records) {
        let CurveSpec {
            key,
            band,
            title,
            mut file,
            color,
            mark,
        } = spec;
        let points: Vec<Point> = records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let y = r.number(&key)?;
                let std = band.as_deref().and_then(|b| r.number(b)).map(f64::abs);
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

/// Each curve on the steps of the stages that logged it, so GRPO's reward is not squeezed
/// into the corner of an axis that is mostly SFT steps; a curve every stage logged keeps
/// the run's axis. Curves logged by the same stages share one compressed axis, built once.
pub(super) fn curves_on_own_axes(
    records: &[MetricRecord],
    axis: &StepAxis,
    curves: &[Curve],
) -> Vec<(Curve, StepAxis)> {
    let mut by_stages: HashMap<Vec<bool>, (Vec<Curve>, StepAxis)> = HashMap::new();
    curves
        .iter()
        .map(|curve| {
            let own = axis.logged_stages(records, &curve.key).and_then(|logs| {
                let (sub_curves, sub_axis) = by_stages.entry(logs).or_insert_with_key(|logs| {
                    let sub_records = axis.compress(records, logs);
                    let mut sub_axis = StepAxis::from_records(&sub_records);
                    sub_axis.label = "step (stages that log it, end to end)";
                    (collect_curves(&sub_records, &sub_axis), sub_axis)
                });
                let c = sub_curves.iter().find(|c| c.key == curve.key)?;
                Some((c.clone(), sub_axis.clone()))
            });
            own.unwrap_or_else(|| (curve.clone(), axis.clone()))
        })
        .collect()
}

/// The `<name>` of every `rewards/<name>/mean` key, sorted (a JSON object's keys have no
/// order once parsed, so first appearance would be arbitrary).
fn reward_names(records: &[MetricRecord]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for record in records {
        for key in record.keys() {
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

/// Whether a curve is drawn on a log axis: never negative, and its positive values span
/// three decades or more (a learning rate of 1e-3 for SFT and 1e-6 for GRPO would otherwise
/// read as zero). Zeros, such as the end of a decay to 0, have no place on it and are left out.
pub(super) fn wants_log_scale(curve: &Curve) -> bool {
    let positive = curve.points.iter().map(|p| p.y).filter(|&y| y > 0.0);
    let (lo, hi) = positive.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    curve.band.is_none() && curve.points.iter().all(|p| p.y >= 0.0) && lo.is_finite() && hi / lo >= 1e3
}

/// The points drawn for `curve`: as they are, or on a log axis their positive values as
/// log10 (without a band).
pub(super) fn plotted_points(curve: &Curve, log_y: bool) -> Vec<Point> {
    if !log_y {
        return curve.points.clone();
    }
    let positive = curve.points.iter().filter(|p| p.y > 0.0);
    positive
        .map(|p| Point {
            y: p.y.log10(),
            std: None,
            ..*p
        })
        .collect()
}

/// Curves shorter than this are drawn as they are, without a moving mean.
pub(super) const SMOOTH_FROM: usize = 30;

/// The moving-mean window for a curve of `n` points: about 1/25 of the run, at least 5.
pub(super) fn smoothing_window(n: usize) -> usize {
    (n / 25).clamp(5, 200) | 1
}

/// Centred moving mean within each stage:
/// m_i = mean{ y_j : |j − i| ≤ ⌊k/2⌋, j in the same stage as i }.
/// Centred rather than trailing (as TensorBoard's EMA is) so a rising curve is not drawn late.
pub(super) fn moving_mean(points: &[Point], k: usize) -> Vec<Point> {
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

/// The upper and lower edge of a ± std band, each smoothed by a centred moving mean of
/// `window` points when the curve itself is (a band around a noisy line is mostly noise).
pub(super) fn band_edges(points: &[Point], window: Option<usize>) -> (Vec<Point>, Vec<Point>) {
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

/// `points` split where the stage changes.
pub(super) fn stage_segments(points: &[Point]) -> impl Iterator<Item = &[Point]> {
    points.chunk_by(|a, b| a.stage == b.stage)
}

#[cfg(test)]
mod tests {
    use super::super::read::records;
    use super::*;
    use serde_json::json;

    #[test]
    fn every_curve_reads_a_key_the_trainers_write() {
        use crate::train::metrics::{EvalMetrics, example_grpo_step};
        use crate::train::sft::SftStepMetrics;
        let sft = SftStepMetrics {
            step: 1,
            epoch: 0.5,
            loss: 1.0,
            learning_rate: 1e-3,
            grad_norm: 2.0,
            num_tokens: 10,
            tokens_per_second: 100.0,
            step_time: 0.1,
        };
        let lines = [
            serde_json::to_value(example_grpo_step()).unwrap(),
            serde_json::to_value(&sft).unwrap(),
            serde_json::to_value(EvalMetrics { accuracy: 0.5 }).unwrap(),
        ];
        let written: std::collections::BTreeSet<String> = lines
            .iter()
            .flat_map(|l| l.as_object().unwrap().keys().cloned().collect::<Vec<_>>())
            .collect();
        let specs = curve_specs(&records(&lines));
        assert!(specs.iter().any(|s| s.key.starts_with("rewards/")), "per-reward curves");
        for spec in specs {
            assert!(
                written.contains(&spec.key),
                "the plots draw `{}`, which no trainer writes",
                spec.key
            );
            if let Some(band) = &spec.band {
                assert!(written.contains(band), "band `{band}` is never written");
            }
        }
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
        let records = records(&[
            json!({"step": 1, "reward": 0.5, "reward_std": 0.1, "loss": null}),
            json!({"step": 2, "reward": null, "loss": "nan"}),
            json!({"step": 3, "reward": 0.7, "rewards/fmt/mean": 1.0}),
        ]);
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
    fn reward_names_that_clash_as_file_names_get_distinct_files() {
        let records = records(&[json!({"step": 1, "rewards/a.b/mean": 1.0, "rewards/a?b/mean": 0.5})]);
        let curves = collect_curves(&records, &StepAxis::from_records(&records));
        let files: Vec<&str> = curves.iter().map(|c| c.file.as_str()).collect();
        assert_eq!(files, vec!["rewards_a_b", "rewards_a_b_"]);
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
        let decaying = curve(&[1e-3, 1e-3, 1e-6, 5e-7, 0.0]);
        assert!(wants_log_scale(&decaying));
        let logs: Vec<f64> = plotted_points(&decaying, true).iter().map(|p| p.y).collect();
        assert_eq!(logs.len(), 4, "the zero has no place on a log axis");
        assert_eq!(logs[0], (1e-3f64).log10());
        assert!(
            !wants_log_scale(&curve(&[1e-3, 5e-4, 2e-6])),
            "under three decades stays linear"
        );
        assert!(
            !wants_log_scale(&curve(&[1.0, 1e-4, -1e-4])),
            "negative values stay linear"
        );
        assert!(!wants_log_scale(&curve(&[0.0, 0.0])));
    }
}
