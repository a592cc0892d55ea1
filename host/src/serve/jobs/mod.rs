//! R1 training jobs over HTTP: `POST /v1/jobs` submits a recipe, `GET /v1/jobs/{id}`
//! and its `events` stream watch it, `cancel` stops it at a checkpoint and `resume`
//! continues it. [`JobManager`] keeps every job under a state directory
//! (`jobs/<id>/{job.json, recipe.toml, run/}`), so a restarted daemon resumes the
//! unfinished ones; [`router`] is the HTTP face the daemon mounts.
//!
//! Thread policy (see [`JobPolicy`]): each job trains on its own CPU backend with half
//! the cores (at least one) and one job trains at a time; the rest wait queued, so
//! training never starves inference.

mod events;
mod manager;
mod progress;
mod record;
mod routes;

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub use manager::{JobManager, JobPolicy, JobView};
pub use progress::{JobPosition, JobProgress};
pub use record::{JobRecord, JobStatus};
pub use routes::router;

pub(crate) use events::follow_lines;

/// Why a job operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("invalid recipe: {0}")]
    InvalidRecipe(String),
    #[error("no job with id `{0}`")]
    NotFound(String),
    #[error("job `{id}` is {status} and cannot be {action}")]
    Conflict {
        id: String,
        status: JobStatus,
        action: &'static str,
    },
    #[error("the daemon is shutting down; no job starts")]
    ShuttingDown,
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("writing {}: {detail}", path.display())]
    Write { path: PathBuf, detail: String },
    #[error("{} is not a job record: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot start the job's thread: {0}")]
    Thread(String),
    #[error(
        "another r1host daemon uses this state directory ({} is locked{}); stop it or pass another --state-dir",
        path.display(),
        if holder.is_empty() { String::new() } else { format!(" by {holder}") }
    )]
    Locked { path: PathBuf, holder: String },
}

/// Bytes read from the end of a file to find its last line.
const TAIL_BYTES: u64 = 64 * 1024;

/// The last complete (newline-terminated) line of `path`, if any.
pub(crate) fn last_line(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let complete = &tail[..tail.iter().rposition(|&b| b == b'\n')?];
    let line = match complete.iter().rposition(|&b| b == b'\n') {
        Some(i) => &complete[i + 1..],
        None if start == 0 => complete,
        None => return None, // a line longer than the tail we read
    };
    String::from_utf8(line.to_vec()).ok()
}

/// A finished job's model is served by name (`job-<id>`).
impl crate::serve::ModelSource for JobManager {
    fn model_names(&self) -> Vec<String> {
        JobManager::model_names(self)
    }

    fn model_path(&self, name: &str) -> Option<std::path::PathBuf> {
        JobManager::model_path(self, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_skips_a_partly_written_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        assert_eq!(last_line(&path), None);
        std::fs::write(&path, "{\"step\":1}\n{\"step\":2}\n{\"ste").unwrap();
        assert_eq!(last_line(&path).as_deref(), Some("{\"step\":2}"));
        std::fs::write(&path, "{\"step\":1}\n").unwrap();
        assert_eq!(last_line(&path).as_deref(), Some("{\"step\":1}"));
        std::fs::write(&path, "{\"ste").unwrap();
        assert_eq!(last_line(&path), None);
    }
}
