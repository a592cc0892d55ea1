//! The x axis of a run — where each record sits and which stage it belongs to, and the
//! compressed axis of the stages that log a curve — and how tick labels are written.

use super::read::MetricRecord;

/// A run of consecutive records with the same `stage`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Stage {
    /// Empty for records logged before any `stage` key appeared.
    pub name: String,
    pub first_x: f64,
    pub last_x: f64,
}

/// Where each record sits on the x axis and which stage it belongs to.
#[derive(Clone, Debug)]
pub(super) struct StepAxis {
    /// "global step" when the run logs `global_step`, else "step".
    pub label: &'static str,
    /// One per record.
    pub xs: Vec<f64>,
    /// One per record: its index in `stages`.
    pub stage_of: Vec<usize>,
    pub stages: Vec<Stage>,
}

impl StepAxis {
    /// x is `global_step` where a record has it. Otherwise it is `step`, shifted so that a
    /// stage whose `step` restarts continues after the previous stage instead of drawing
    /// over it; a record with neither comes one after the previous record.
    pub fn from_records(records: &[MetricRecord]) -> StepAxis {
        let label = if records.iter().any(|r| r.number("global_step").is_some()) {
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
            let stage_name = record.stage.as_deref();
            let new_stage = match (stages.last(), stage_name) {
                (None, _) => true,
                (Some(current), Some(name)) => current.name != name,
                (Some(_), None) => false,
            };
            let step = record.number("step");
            let x = match (record.number("global_step"), step) {
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
    pub fn range(&self) -> (f64, f64) {
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
    pub fn boundary(&self, i: usize) -> f64 {
        (self.stages[i - 1].last_x + self.stages[i].first_x) / 2.0
    }

    /// Whether stage markers are drawn: the run names its stages.
    pub fn has_named_stages(&self) -> bool {
        self.stages.iter().any(|s| !s.name.is_empty())
    }

    /// The x extent of each stage's region on the plot over the range (x0, x1): from the
    /// boundary before it to the boundary after it.
    pub fn stage_regions(&self, (x0, x1): (f64, f64)) -> Vec<(f64, f64)> {
        let n = self.stages.len();
        (0..n)
            .map(|i| {
                let lo = if i == 0 { x0 } else { self.boundary(i) };
                let hi = if i + 1 == n { x1 } else { self.boundary(i + 1) };
                (lo, hi)
            })
            .collect()
    }

    /// Which stages logged `key`, when that is some of the run's stages but not all.
    pub fn logged_stages(&self, records: &[MetricRecord], key: &str) -> Option<Vec<bool>> {
        let mut logs = vec![false; self.stages.len()];
        for (i, r) in records.iter().enumerate() {
            if r.number(key).is_some() {
                logs[self.stage_of[i]] = true;
            }
        }
        (logs.iter().any(|l| *l) && !logs.iter().all(|l| *l)).then_some(logs)
    }

    /// The records of the stages in `logs`, each kept stage moved left over the steps before
    /// the first kept stage (so the axis starts at 1) and over the stages left out.
    pub fn compress(&self, records: &[MetricRecord], logs: &[bool]) -> Vec<MetricRecord> {
        let mut shifts = vec![0.0; self.stages.len()];
        let (mut shift, mut last_end) = (0.0, 0.0);
        for (i, stage) in self.stages.iter().enumerate() {
            if logs[i] {
                shift += stage.first_x - last_end - 1.0;
                last_end = stage.last_x;
                shifts[i] = shift;
            }
        }
        records
            .iter()
            .enumerate()
            .filter(|(i, _)| logs[self.stage_of[*i]])
            .map(|(i, r)| r.at_global_step(self.xs[i] - shifts[self.stage_of[i]]))
            .collect()
    }
}

/// Tick labels with as many decimals as the tick spacing needs, in scientific notation for
/// very large or very small magnitudes (learning rates).
#[derive(Clone, Copy, Debug)]
pub(super) struct TickFormat {
    scientific: bool,
    decimals: usize,
}

impl TickFormat {
    /// For at most `ticks` ticks over [lo, hi]: plotters spaces them 1, 2 or 5 × 10^k apart,
    /// at least `(hi − lo) / ticks`, so that spacing's decimals are enough.
    pub fn for_range(lo: f64, hi: f64, ticks: usize) -> TickFormat {
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

    pub fn format(&self, v: f64) -> String {
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

/// A log-axis tick: `1e-5` on a decade, `3.2e-6` between.
pub(super) fn format_power_of_ten(exponent: f64) -> String {
    if (exponent - exponent.round()).abs() < 1e-9 {
        format!("1e{}", exponent.round() as i64)
    } else {
        format!("{:.1e}", 10f64.powf(exponent))
    }
}

#[cfg(test)]
mod tests {
    use super::super::read::records;
    use super::*;
    use serde_json::json;

    /// The records of the stages that logged `key`, with the x of every later kept stage moved
    /// back over the stages left out (written as `global_step`), and whether any stage was
    /// left out.
    fn stages_logging(records: &[MetricRecord], axis: &StepAxis, key: &str) -> (Vec<MetricRecord>, bool) {
        match axis.logged_stages(records, key) {
            Some(logs) => (axis.compress(records, &logs), true),
            None => (Vec::new(), false),
        }
    }

    #[test]
    fn a_curve_logged_in_some_stages_is_drawn_over_those_stages_end_to_end() {
        let mut lines = Vec::new();
        let mut g = 0;
        for (stage, n, key) in [
            ("sft", 100, "loss"),
            ("grpo1", 10, "reward"),
            ("sft2", 90, "loss"),
            ("grpo2", 10, "reward"),
        ] {
            for step in 1..=n {
                g += 1;
                lines.push(json!({"stage": stage, "step": step, "global_step": g, key: 1.0}));
            }
        }
        let records = records(&lines);
        let axis = StepAxis::from_records(&records);
        let (sub, compressed) = stages_logging(&records, &axis, "reward");
        assert!(compressed);
        let xs: Vec<f64> = sub.iter().map(|r| r.number("global_step").unwrap()).collect();
        let want: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(xs, want);
        assert!(
            sub.iter()
                .all(|r| matches!(r.stage.as_deref(), Some("grpo1" | "grpo2")))
        );
        let (_, compressed) = stages_logging(&records, &axis, "step");
        assert!(!compressed, "a key every stage logs keeps the run's axis");
    }

    #[test]
    fn x_is_global_step_when_the_run_logs_it() {
        let records = records(&[
            json!({"stage": "sft", "step": 1, "global_step": 1}),
            json!({"stage": "sft", "step": 2, "global_step": 2}),
            json!({"stage": "grpo", "step": 1, "global_step": 3}),
        ]);
        let axis = StepAxis::from_records(&records);
        assert_eq!(axis.label, "global step");
        assert_eq!(axis.xs, vec![1.0, 2.0, 3.0]);
        assert_eq!(axis.stage_of, vec![0, 0, 1]);
        assert_eq!(axis.boundary(1), 2.5);
        assert_eq!(axis.stage_regions((1.0, 3.0)), vec![(1.0, 2.5), (2.5, 3.0)]);
    }

    #[test]
    fn a_stage_whose_step_restarts_continues_after_the_previous_one() {
        let records = records(&[
            json!({"stage": "sft", "step": 1}),
            json!({"stage": "sft", "step": 2}),
            json!({"stage": "sft", "step": 3}),
            json!({"stage": "grpo", "step": 1}),
            json!({"stage": "grpo", "step": 2}),
            json!({"step": 3}),
        ]);
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
        let records = records(&[
            json!({"step": 1}),
            json!({"step": 2}),
            json!({"step": 2, "eval/accuracy": 0.5}),
        ]);
        assert_eq!(StepAxis::from_records(&records).xs, vec![1.0, 2.0, 2.0]);
    }

    #[test]
    fn tick_labels_carry_the_decimals_the_spacing_needs() {
        assert_eq!(TickFormat::for_range(0.0, 300.0, 10).format(150.0), "150");
        assert_eq!(TickFormat::for_range(0.0, 1.0, 8).format(0.2), "0.2");
        assert_eq!(TickFormat::for_range(-0.01, 0.01, 8).format(-0.0001), "0.000");
        assert_eq!(TickFormat::for_range(0.0, 3e-5, 8).format(1.5e-5), "1.5e-5");
        assert_eq!(format_power_of_ten(-5.0), "1e-5");
        assert_eq!(format_power_of_ten(-5.5), "3.2e-6");
    }
}
