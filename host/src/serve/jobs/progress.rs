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
        assert_eq!(
            progress.position(),
            JobPosition {
                stage: Some("grpo1".into()),
                step: 11,
                total_steps: 24,
                last_log: Some("hello".into()),
            }
        );
    }
}
