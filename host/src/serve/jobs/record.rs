//! `job.json`: what the daemon knows of one training job — its status, times, error and
//! the model it produced — written atomically on every change, so a restarted daemon
//! (even after SIGKILL) finds each job as it last was and resumes the unfinished ones.

use std::path::{Path, PathBuf};

use crate::io::atomic::write_bytes_atomically;
use crate::serve::jobs::JobError;

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for a free slot (at most `max_running` jobs run at once).
    Queued,
    /// Training on its own thread.
    Running,
    /// Every stage ran; the model can be served.
    Succeeded,
    /// The pipeline returned an error (see `error`).
    Failed,
    /// Stopped by a cancel request after checkpointing; `resume` continues it.
    Cancelled,
    /// Stopped by the daemon shutting down after checkpointing; resumed when it restarts.
    Interrupted,
}

impl JobStatus {
    /// The job will not change again by itself (cancelled, failed and interrupted jobs can
    /// still be resumed).
    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }

    /// Left unfinished by a stop or a crash: the daemon resumes it when it opens.
    pub fn resumes_on_open(self) -> bool {
        matches!(self, JobStatus::Queued | JobStatus::Running | JobStatus::Interrupted)
    }

    /// May be put back in the queue by a resume request.
    pub fn can_resume(self) -> bool {
        matches!(self, JobStatus::Cancelled | JobStatus::Interrupted | JobStatus::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The contents of `job.json`. Times are Unix seconds.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobRecord {
    pub id: String,
    /// The name given at submission, else the recipe's `name`.
    pub name: String,
    pub created_at: u64,
    /// When the job first started running.
    #[serde(default)]
    pub started_at: Option<u64>,
    /// When the job last reached a final status.
    #[serde(default)]
    pub finished_at: Option<u64>,
    pub status: JobStatus,
    #[serde(default)]
    pub error: Option<String>,
    /// The last training stage's Hugging Face export, once the job succeeded.
    #[serde(default)]
    pub model_path: Option<PathBuf>,
}

impl JobRecord {
    /// The name a succeeded job's model is served under.
    pub fn model_name(&self) -> String {
        model_name(&self.id)
    }

    /// Reads `job.json` from `path`.
    pub fn read(path: &Path) -> Result<JobRecord, JobError> {
        let bytes = std::fs::read(path).map_err(|source| JobError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| JobError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    }

    /// Writes `job.json` to `path` (atomically: a crash leaves the previous record).
    pub fn write(&self, path: &Path) -> Result<(), JobError> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| JobError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        write_bytes_atomically(path, &json).map_err(|e| JobError::Write {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    }
}

/// `job-<id>`: the model name of job `id`.
pub fn model_name(id: &str) -> String {
    format!("job-{id}")
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_a_write_and_read_and_names_its_status_in_lowercase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.json");
        let record = JobRecord {
            id: "abc".into(),
            name: "tiny".into(),
            created_at: 7,
            started_at: Some(8),
            finished_at: None,
            status: JobStatus::Interrupted,
            error: None,
            model_path: None,
        };
        record.write(&path).unwrap();
        assert_eq!(JobRecord::read(&path).unwrap(), record);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"status\": \"interrupted\""), "{text}");
        assert_eq!(record.model_name(), "job-abc");
    }

    #[test]
    fn a_torn_record_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.json");
        std::fs::write(&path, b"{\"id\": \"abc\", \"na").unwrap();
        let err = JobRecord::read(&path).unwrap_err().to_string();
        assert!(err.contains("job.json"), "{err}");
    }

    #[test]
    fn only_unfinished_jobs_resume_on_open() {
        use JobStatus::*;
        let resumed: Vec<_> = [Queued, Running, Succeeded, Failed, Cancelled, Interrupted]
            .into_iter()
            .filter(|s| s.resumes_on_open())
            .collect();
        assert_eq!(resumed, [Queued, Running, Interrupted]);
    }
}
