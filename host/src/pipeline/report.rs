//! What a pipeline run reports: the finished stages, held-out accuracy before training,
//! the gain the run made, the plots, and one answer of the final model.

use std::path::PathBuf;

use crate::engine::Completion;
use crate::pipeline::state::FinishedStage;

/// The outcome of a pipeline run.
#[derive(Clone, Debug)]
pub struct PipelineReport {
    pub run_dir: PathBuf,
    pub stages: Vec<FinishedStage>,
    /// Held-out accuracy before any training (kept in `pipeline.json` across resumes).
    pub initial_accuracy: Option<f64>,
    /// One held-out answer of the final model: `(prompt, completion)`.
    pub sample: Option<(String, Completion)>,
    pub plots: Vec<PathBuf>,
}

/// What the final accuracy is compared with.
#[derive(Clone, Debug, PartialEq)]
pub enum Baseline {
    /// The model before any training.
    Initial,
    /// The model after this stage (when the accuracy before training is unknown).
    Stage(String),
}

/// The run's gain in held-out accuracy.
#[derive(Clone, Debug, PartialEq)]
pub struct AccuracyGain {
    pub baseline: Baseline,
    /// Final minus baseline accuracy, in percentage points.
    pub points: f64,
}

impl PipelineReport {
    /// The last measured accuracy against the model before training — or, when that was
    /// not measured, against the first stage that measured one. None when there is
    /// nothing to compare (no accuracy, or only one measurement).
    pub fn gain(&self) -> Option<AccuracyGain> {
        let mut measured = self
            .stages
            .iter()
            .filter_map(|s| s.eval_accuracy.map(|a| (s.name.as_str(), a)));
        let first = measured.next()?;
        let last = measured.next_back().unwrap_or(first).1;
        let (baseline, before) = match self.initial_accuracy {
            Some(a) => (Baseline::Initial, a),
            None if measured_twice(&self.stages) => (Baseline::Stage(first.0.to_string()), first.1),
            None => return None,
        };
        Some(AccuracyGain {
            baseline,
            points: (last - before) * 100.0,
        })
    }
}

fn measured_twice(stages: &[FinishedStage]) -> bool {
    stages.iter().filter(|s| s.eval_accuracy.is_some()).count() >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(name: &str, eval_accuracy: Option<f64>) -> FinishedStage {
        FinishedStage {
            name: name.into(),
            checkpoint: PathBuf::from(format!("{name}.r1ckpt")),
            output: None,
            eval_accuracy,
            steps: 1,
        }
    }

    fn report(initial_accuracy: Option<f64>, stages: Vec<FinishedStage>) -> PipelineReport {
        PipelineReport {
            run_dir: PathBuf::from("run"),
            stages,
            initial_accuracy,
            sample: None,
            plots: Vec::new(),
        }
    }

    #[test]
    fn a_one_stage_run_gains_over_the_model_before_training() {
        let gain = report(Some(0.25), vec![stage("grpo", Some(0.5))]).gain();
        assert_eq!(
            gain,
            Some(AccuracyGain {
                baseline: Baseline::Initial,
                points: 25.0
            })
        );
    }

    #[test]
    fn the_gain_is_measured_at_the_last_stage_with_an_accuracy() {
        let stages = vec![
            stage("sft", Some(0.5)),
            stage("rejection", None),
            stage("grpo", Some(0.75)),
        ];
        let gain = report(Some(0.0), stages).gain().expect("a gain");
        assert_eq!(gain.baseline, Baseline::Initial);
        assert!((gain.points - 75.0).abs() < 1e-9, "{gain:?}");
    }

    #[test]
    fn without_the_initial_accuracy_the_first_measured_stage_is_the_baseline() {
        let stages = vec![stage("sft", Some(0.5)), stage("grpo", Some(0.625))];
        let gain = report(None, stages).gain().expect("a gain");
        assert_eq!(gain.baseline, Baseline::Stage("sft".into()));
        assert!((gain.points - 12.5).abs() < 1e-9, "{gain:?}");
    }

    #[test]
    fn a_stage_is_never_compared_with_itself() {
        assert_eq!(report(None, vec![stage("grpo", Some(0.5))]).gain(), None);
        assert_eq!(report(Some(0.5), vec![stage("rejection", None)]).gain(), None);
    }
}
