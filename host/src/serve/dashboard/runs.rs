//! The runs the dashboard shows: the daemon's jobs (`job-<id>`) and every run directory
//! (a folder with a `metrics.jsonl`) directly under each `--runs` folder
//! (`dir<k>-<folder name>`, `k` counting the `--runs` folders from 0).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::serve::jobs::{JobManager, JobView, last_line};

/// Lines of a JSONL file the API returns at most (the last ones).
pub const MAX_LINES: usize = 5000;
/// Bytes read from the end of a JSONL file at most.
const MAX_READ_BYTES: u64 = 32 << 20;
/// A run directory whose metrics changed this recently counts as `active`.
const ACTIVE_WITHIN: Duration = Duration::from_secs(60);

/// Where the dashboard finds runs.
pub struct RunSources {
    pub jobs: Option<Arc<JobManager>>,
    pub dirs: Vec<PathBuf>,
}

/// One run as `GET /v1/runs` lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunView {
    pub id: String,
    pub name: String,
    /// `job` (the daemon's) or `dir` (found under `--runs`).
    pub source: &'static str,
    /// A job's status; a run directory is `active` while its metrics grow, else `idle`.
    pub status: String,
    pub stage: Option<String>,
    pub step: Option<u64>,
    pub total_steps: Option<u64>,
    pub global_step: Option<u64>,
    pub elapsed_seconds: Option<u64>,
    pub eta_seconds: Option<u64>,
    /// Unix seconds of the last metrics line.
    pub updated_at: Option<u64>,
    /// The job's id (for cancel and resume).
    pub job: Option<String>,
    /// The served name of a finished job's model.
    pub model: Option<String>,
    pub error: Option<String>,
    pub cancel_requested: bool,
    /// JSONL sets the run wrote besides its metrics and samples (rejection sampling,
    /// distillation traces), by stem.
    pub sets: Vec<String>,
    #[serde(skip)]
    pub dir: PathBuf,
}

impl RunSources {
    /// Every run: jobs oldest first, then run directories by name.
    pub fn list(&self) -> Vec<RunView> {
        let mut out = Vec::new();
        if let Some(jobs) = &self.jobs {
            for job in jobs.list() {
                if let Some(dir) = jobs.run_dir(&job.id) {
                    out.push(job_run(job, dir));
                }
            }
        }
        for (k, root) in self.dirs.iter().enumerate() {
            let Ok(entries) = std::fs::read_dir(root) else { continue };
            let mut dirs: Vec<(String, PathBuf)> = entries
                .filter_map(Result::ok)
                .filter(|e| e.path().join("metrics.jsonl").is_file())
                .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
                .collect();
            dirs.sort();
            out.extend(dirs.into_iter().map(|(name, dir)| dir_run(k, name, dir)));
        }
        out
    }

    /// The run `id`, if listed.
    pub fn find(&self, id: &str) -> Option<RunView> {
        if let (Some(jobs), Some(job)) = (&self.jobs, id.strip_prefix("job-")) {
            let view = jobs.get(job)?;
            return Some(job_run(view, jobs.run_dir(job)?));
        }
        self.list().into_iter().find(|r| r.id == id)
    }

    /// Whether `run` is a job that reached a final status (its metrics grow no more).
    pub fn job_finished(&self, run: &RunView) -> bool {
        match (&self.jobs, &run.job) {
            (Some(jobs), Some(id)) => jobs.status(id).is_none_or(|s| s.is_final()),
            _ => false,
        }
    }
}

fn job_run(job: JobView, dir: PathBuf) -> RunView {
    let metrics = dir.join("metrics.jsonl");
    let global_step = job.metrics.as_ref().and_then(|m| m.get("global_step")?.as_u64());
    RunView {
        id: format!("job-{}", job.id),
        name: job.name,
        source: "job",
        status: job.status.as_str().to_string(),
        stage: job.stage,
        step: job.step,
        total_steps: job.total_steps,
        global_step,
        elapsed_seconds: job.elapsed_seconds,
        eta_seconds: job.eta_seconds,
        updated_at: modified_secs(&metrics),
        job: Some(job.id),
        model: job.model,
        error: job.error,
        cancel_requested: job.cancel_requested,
        sets: sets(&dir),
        dir,
    }
}

fn dir_run(k: usize, name: String, dir: PathBuf) -> RunView {
    let metrics = dir.join("metrics.jsonl");
    let last: Option<serde_json::Value> = last_line(&metrics).and_then(|l| serde_json::from_str(&l).ok());
    let field = |key: &str| last.as_ref().and_then(|m| m.get(key).cloned());
    let active = std::fs::metadata(&metrics)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < ACTIVE_WITHIN);
    RunView {
        id: format!("dir{k}-{name}"),
        source: "dir",
        status: if active { "active" } else { "idle" }.to_string(),
        stage: field("stage").and_then(|v| v.as_str().map(str::to_string)),
        step: field("step").and_then(|v| v.as_u64()),
        total_steps: None,
        global_step: field("global_step").and_then(|v| v.as_u64()),
        elapsed_seconds: None,
        eta_seconds: None,
        updated_at: modified_secs(&metrics),
        job: None,
        model: None,
        error: None,
        cancel_requested: false,
        sets: sets(&dir),
        name,
        dir,
    }
}

fn modified_secs(path: &Path) -> Option<u64> {
    let t = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
}

/// The stems of the run's other JSONL files, sorted.
fn sets(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".jsonl").map(str::to_string))
        .filter(|stem| stem != "metrics" && stem != "samples" && !stem.is_empty())
        .collect();
    out.sort();
    out
}

/// The last [`MAX_LINES`] complete lines of a JSONL file, parsed; no file is no lines.
/// A line that is not JSON (a run killed mid-write) is left out.
pub fn read_json_lines(path: &Path) -> Result<Vec<serde_json::Value>, String> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let len = file.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
    let start = len.saturating_sub(MAX_READ_BYTES);
    file.seek(SeekFrom::Start(start))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // From the middle of a file, the first line is partial; without a final newline,
    // so is the last.
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    lines.pop();
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(MAX_LINES);
    Ok(lines
        .into_iter()
        .skip(skip)
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_skip_a_partial_last_line_and_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.jsonl");
        assert!(read_json_lines(&path).unwrap().is_empty());
        std::fs::write(&path, "{\"a\":1}\nnot json\n{\"a\":2}\n{\"a\":").unwrap();
        let lines = read_json_lines(&path).unwrap();
        assert_eq!(lines, vec![serde_json::json!({"a": 1}), serde_json::json!({"a": 2})]);
    }

    #[test]
    fn run_directories_are_found_with_their_sets() {
        let root = tempfile::tempdir().unwrap();
        let run = root.path().join("r1");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(
            run.join("metrics.jsonl"),
            "{\"stage\":\"grpo\",\"step\":3,\"global_step\":7}\n",
        )
        .unwrap();
        std::fs::write(run.join("samples.jsonl"), "").unwrap();
        std::fs::write(run.join("rs1.jsonl"), "").unwrap();
        // Not a run: no metrics.
        std::fs::create_dir_all(root.path().join("other")).unwrap();
        let sources = RunSources {
            jobs: None,
            dirs: vec![root.path().to_path_buf()],
        };
        let runs = sources.list();
        assert_eq!(runs.len(), 1);
        let r = &runs[0];
        assert_eq!(r.id, "dir0-r1");
        assert_eq!(
            (r.stage.as_deref(), r.step, r.global_step),
            (Some("grpo"), Some(3), Some(7))
        );
        assert_eq!(r.status, "active");
        assert_eq!(r.sets, ["rs1"]);
        assert!(sources.find("dir0-r1").is_some());
        assert!(sources.find("dir0-../r1").is_none());
        assert!(sources.find("job-x").is_none());
    }
}
