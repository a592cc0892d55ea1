//! A job's live position: the pipeline reports through [`Progress`] and the API reads the
//! latest stage, step and log line back (`GET /v1/jobs/{id}`).

use std::sync::Mutex;

use crate::progress::Progress;

/// Where a running job is, as its pipeline last reported.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct JobPosition {
    /// The stage running (the label of the last task that began).
    pub stage: Option<String>,
    /// Steps of that stage done.
    pub step: u64,
    /// Steps the stage will take.
    pub total_steps: u64,
    /// The pipeline's last log line ("stage `grpo1`: resumed at step 10").
    pub last_log: Option<String>,
    /// When this daemon began the stage, and at which step (for the ETA).
    #[serde(skip)]
    pub began: Option<(std::time::Instant, u64)>,
}

impl JobPosition {
    /// Seconds the stage still needs at the pace of its steps since this daemon began it
    /// (`None` before its first step here, or once it is done).
    pub fn eta_seconds(&self) -> Option<u64> {
        let (at, from) = self.began?;
        let done = self.step.checked_sub(from).filter(|&d| d > 0)?;
        let left = self.total_steps.checked_sub(self.step).filter(|&l| l > 0)?;
        Some((at.elapsed().as_secs_f64() / done as f64 * left as f64).round() as u64)
    }
}

/// A [`Progress`] that keeps the latest [`JobPosition`].
#[derive(Debug, Default)]
pub struct JobProgress(Mutex<JobPosition>);

impl JobProgress {
    pub fn position(&self) -> JobPosition {
        self.0.lock().map(|p| p.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut JobPosition)) {
        // A poisoned lock only means a reader panicked: the position is still usable.
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
    }
}

impl Progress for JobProgress {
    fn log(&self, line: &str) {
        self.update(|p| p.last_log = Some(line.to_string()));
    }

    fn begin(&self, label: &str, total: u64, done: u64) {
        self.update(|p| {
            p.stage = Some(label.to_string());
            p.total_steps = total;
            p.step = done;
            p.began = Some((std::time::Instant::now(), done));
        });
    }

    fn step(&self, _message: &str) {
        self.update(|p| p.step += 1);
    }

    fn end(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_follows_begin_and_steps_from_a_resumed_step() {
        let progress = JobProgress::default();
        progress.begin("grpo1", 24, 10);
        progress.step("reward 0.5");
        progress.log("hello");
        let position = progress.position();
        assert_eq!(position.began.map(|b| b.1), Some(10));
        assert!(position.eta_seconds().is_some(), "one step done, 13 to go");
        assert_eq!(
            position,
            JobPosition {
                stage: Some("grpo1".into()),
                step: 11,
                total_steps: 24,
                last_log: Some("hello".into()),
                began: position.began,
            }
        );
    }
}
