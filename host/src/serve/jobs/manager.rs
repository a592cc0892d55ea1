//! [`JobManager`]: the daemon's training jobs over a state directory — submitted, queued
//! under the [`JobPolicy`], each run by [`run_pipeline`] on its own thread and backend,
//! cancelled and resumed through the pipeline's [`StopSignal`], and picked up again when
//! the daemon restarts.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use r1_backend_cpu::CpuBackend;

use crate::device::Compute;
use crate::io::atomic::write_bytes_atomically;
use crate::pipeline::{PipelineOutcome, PipelineReport, Recipe, run_pipeline};
use crate::serve::jobs::progress::{JobPosition, JobProgress};
use crate::serve::jobs::record::{JobRecord, JobStatus, model_name, unix_now};
use crate::serve::jobs::{JobError, last_line};
use crate::stop::StopSignal;

/// How training jobs share the machine with inference.
///
/// Each job trains on its own [`CpuBackend`] with `threads_per_job` threads (its reward
/// scoring runs inside a pool of the same size), and at most `max_running` jobs train at
/// once; later submissions wait, `queued`, in submission order. The default — half the
/// cores (at least 1) for one job at a time — leaves the other half to inference, so a
/// job never starves the requests the daemon serves. Reward *plugins* score on the
/// plugin host's own pool; they are brief next to generation and training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobPolicy {
    /// CPU threads of each job's backend.
    pub threads_per_job: usize,
    /// Jobs that train at once.
    pub max_running: usize,
    /// What the jobs' backends compute in (`serve --compute`).
    pub compute: Compute,
}

impl Default for JobPolicy {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        JobPolicy {
            threads_per_job: (cores / 2).max(1),
            max_running: 1,
            compute: Compute::F32,
        }
    }
}

/// A job as the API shows it: its record, where it is, and its latest metrics line.
#[derive(Clone, Debug, serde::Serialize)]
pub struct JobView {
    pub id: String,
    /// Always `"training.job"`.
    pub object: &'static str,
    pub name: String,
    pub status: JobStatus,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// Seconds from the first start to the end (or to now while unfinished).
    pub elapsed_seconds: Option<u64>,
    /// The stage running or last run, the steps it has done and will take.
    pub stage: Option<String>,
    pub step: Option<u64>,
    pub total_steps: Option<u64>,
    /// Seconds the running stage still needs at its pace so far.
    pub eta_seconds: Option<u64>,
    /// The last line of the run's `metrics.jsonl`, parsed.
    pub metrics: Option<serde_json::Value>,
    /// The name the trained model is served under, once the job succeeded.
    pub model: Option<String>,
    pub error: Option<String>,
    /// A cancel was asked for; the job stops at its next checkpoint.
    pub cancel_requested: bool,
}

/// The training jobs of one state directory: `jobs/<id>/{job.json, recipe.toml, run/}`.
pub struct JobManager {
    shared: Arc<Shared>,
}

struct Shared {
    jobs_dir: PathBuf,
    /// `STATE/lock`, held (an exclusive advisory lock) from `open` to `shutdown`: a second
    /// daemon on the same state would resume the same jobs into the same run directories.
    lock: Mutex<Option<std::fs::File>>,
    policy: JobPolicy,
    table: Mutex<Table>,
    /// Notified whenever a job's status changes.
    changed: Condvar,
}

#[derive(Default)]
struct Table {
    jobs: BTreeMap<String, Job>,
    running: usize,
    shutting_down: bool,
    threads: Vec<JoinHandle<()>>,
}

struct Job {
    record: JobRecord,
    stop: StopSignal,
    cancel_requested: bool,
    progress: Arc<JobProgress>,
}

impl Job {
    fn new(record: JobRecord) -> Job {
        Job {
            record,
            stop: StopSignal::new(),
            cancel_requested: false,
            progress: Arc::new(JobProgress::default()),
        }
    }
}

/// Takes `state_dir/lock` (created if missing) for this process, or says which process
/// holds it. The lock is the operating system's (`flock`): it goes with the process, so
/// a daemon that was killed leaves nothing to clean up.
fn lock_state(state_dir: &Path) -> Result<std::fs::File, JobError> {
    use std::io::Write;
    let path = state_dir.join("lock");
    let io = |source| JobError::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(JobError::Locked {
                path,
                holder: holder.trim().chars().take(64).collect(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    // Who holds it, for the message a second daemon prints (advice only: the lock is
    // what counts).
    file.set_len(0).map_err(io)?;
    writeln!(file, "pid {}", std::process::id()).map_err(io)?;
    Ok(file)
}

impl JobManager {
    /// Opens `state_dir` (creating it), takes its lock (a second daemon on the same state
    /// is refused until [`JobManager::shutdown`]) and resumes every job left queued,
    /// running or interrupted — from its last checkpoint when its run had started.
    pub fn open(state_dir: &Path, policy: JobPolicy) -> Result<JobManager, JobError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JobError::Io { path, source }
        };
        let jobs_dir = state_dir.join("jobs");
        std::fs::create_dir_all(&jobs_dir).map_err(io(&jobs_dir))?;
        let jobs_dir = std::fs::canonicalize(&jobs_dir).map_err(io(&jobs_dir))?;
        let lock = lock_state(state_dir)?;
        let mut table = Table::default();
        for entry in std::fs::read_dir(&jobs_dir).map_err(io(&jobs_dir))? {
            let dir = entry.map_err(io(&jobs_dir))?.path();
            if !dir.join("recipe.toml").is_file() {
                continue; // not a job, or a submission that died before it was recorded
            }
            let Some(id) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            let mut record = JobRecord::read(&dir.join("job.json")).unwrap_or_else(|e| unreadable(&id, e));
            if record.status.resumes_on_open() {
                record.status = JobStatus::Queued;
            }
            table.jobs.insert(id, Job::new(record));
        }
        let shared = Arc::new(Shared {
            jobs_dir,
            lock: Mutex::new(Some(lock)),
            policy: JobPolicy {
                threads_per_job: policy.threads_per_job.max(1),
                max_running: policy.max_running.max(1),
                compute: policy.compute,
            },
            table: Mutex::new(table),
            changed: Condvar::new(),
        });
        {
            let mut table = shared.lock();
            shared.start_queued(&mut table);
        }
        Ok(JobManager { shared })
    }

    pub fn policy(&self) -> JobPolicy {
        self.shared.policy
    }

    /// Queues a job running `recipe_text` (parsed and checked first: a bad recipe creates
    /// nothing) under `name` (default: the recipe's name).
    pub fn submit(&self, recipe_text: &str, name: Option<&str>) -> Result<JobView, JobError> {
        let recipe = Recipe::from_toml(recipe_text).map_err(JobError::InvalidRecipe)?;
        let shared = &self.shared;
        let mut table = shared.lock();
        if table.shutting_down {
            return Err(JobError::ShuttingDown);
        }
        let id = fresh_id(&table, &shared.jobs_dir);
        let dir = shared.job_dir(&id);
        std::fs::create_dir_all(&dir).map_err(|source| JobError::Io {
            path: dir.clone(),
            source,
        })?;
        let record = JobRecord {
            id: id.clone(),
            name: name.map_or(recipe.name, str::to_string),
            created_at: unix_now(),
            started_at: None,
            finished_at: None,
            status: JobStatus::Queued,
            error: None,
            model_path: None,
        };
        record.write(&dir.join("job.json"))?;
        // Written last: `open` takes a directory with a recipe to be a job.
        let recipe_path = dir.join("recipe.toml");
        write_bytes_atomically(&recipe_path, recipe_text.as_bytes()).map_err(|e| JobError::Write {
            path: recipe_path,
            detail: e.to_string(),
        })?;
        table.jobs.insert(id.clone(), Job::new(record));
        shared.start_queued(&mut table);
        shared.changed.notify_all();
        shared.view_of(table, &id)
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<JobView> {
        let snapshots: Vec<JobSnapshot> = {
            let table = self.shared.lock();
            table
                .jobs
                .keys()
                .filter_map(|id| self.shared.snapshot(&table, id))
                .collect()
        };
        let mut views: Vec<JobView> = snapshots.into_iter().map(JobSnapshot::into_view).collect();
        views.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        views
    }

    pub fn get(&self, id: &str) -> Option<JobView> {
        self.shared.view_of(self.shared.lock(), id).ok()
    }

    pub fn status(&self, id: &str) -> Option<JobStatus> {
        self.shared.lock().jobs.get(id).map(|j| j.record.status)
    }

    /// The run directory of job `id` (its `metrics.jsonl`, checkpoints, exports).
    pub fn run_dir(&self, id: &str) -> Option<PathBuf> {
        let table = self.shared.lock();
        table.jobs.contains_key(id).then(|| self.shared.run_dir(id))
    }

    /// Cancels job `id`: a queued job is cancelled at once; a running one is asked to
    /// checkpoint and stop, and ends `cancelled`. A finished job cannot be cancelled.
    pub fn cancel(&self, id: &str) -> Result<JobView, JobError> {
        let shared = &self.shared;
        let mut table = shared.lock();
        let job = table
            .jobs
            .get_mut(id)
            .ok_or_else(|| JobError::NotFound(id.to_string()))?;
        match job.record.status {
            JobStatus::Queued => {
                job.record.status = JobStatus::Cancelled;
                job.record.finished_at = Some(unix_now());
                job.record.write(&shared.job_dir(id).join("job.json"))?;
                shared.changed.notify_all();
            }
            JobStatus::Running => {
                job.cancel_requested = true;
                job.stop.request();
            }
            status => {
                return Err(JobError::Conflict {
                    id: id.to_string(),
                    status,
                    action: "cancelled",
                });
            }
        }
        shared.view_of(table, id)
    }

    /// Queues a cancelled, interrupted or failed job again; it continues from its last
    /// checkpoint.
    pub fn resume(&self, id: &str) -> Result<JobView, JobError> {
        let shared = &self.shared;
        let mut table = shared.lock();
        if table.shutting_down {
            return Err(JobError::ShuttingDown);
        }
        let job = table
            .jobs
            .get_mut(id)
            .ok_or_else(|| JobError::NotFound(id.to_string()))?;
        if !job.record.status.can_resume() {
            return Err(JobError::Conflict {
                id: id.to_string(),
                status: job.record.status,
                action: "resumed",
            });
        }
        let record = JobRecord {
            status: JobStatus::Queued,
            error: None,
            finished_at: None,
            ..job.record.clone()
        };
        record.write(&shared.job_dir(id).join("job.json"))?;
        *job = Job::new(record);
        shared.start_queued(&mut table);
        shared.changed.notify_all();
        shared.view_of(table, id)
    }

    /// Waits until job `id` reaches a final status or `timeout` passes; returns its status
    /// then (`None` for an unknown job).
    pub fn wait(&self, id: &str, timeout: Duration) -> Option<JobStatus> {
        let deadline = Instant::now() + timeout;
        let mut table = self.shared.lock();
        loop {
            let status = table.jobs.get(id)?.record.status;
            let left = deadline.saturating_duration_since(Instant::now());
            if status.is_final() || left.is_zero() {
                return Some(status);
            }
            table = match self.shared.changed.wait_timeout(table, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Stops every running job at its next checkpoint and waits for them: they end
    /// `interrupted` (and resume when a manager opens the state directory again). Queued
    /// jobs stay queued; nothing new starts. Used when the daemon gets SIGTERM.
    pub fn shutdown(&self) {
        let threads = {
            let mut table = self.shared.lock();
            table.shutting_down = true;
            for job in table.jobs.values() {
                if job.record.status == JobStatus::Running {
                    job.stop.request();
                }
            }
            std::mem::take(&mut table.threads)
        };
        for t in threads {
            // A job thread catches its pipeline's panics; a join error cannot carry news.
            let _ = t.join();
        }
        // Nothing runs any more: another daemon may take the state. Unlocked explicitly:
        // closing our descriptor alone would leave the lock held while a child process
        // forked meanwhile (a plugin, a test's `Command`) still has a copy before its exec.
        if let Ok(mut lock) = self.shared.lock.lock()
            && let Some(file) = lock.take()
        {
            // An unlock error leaves the lock to the close below.
            let _ = file.unlock();
        }
    }

    /// The names of the models that succeeded jobs trained (`job-<id>`).
    pub fn model_names(&self) -> Vec<String> {
        let table = self.shared.lock();
        table
            .jobs
            .values()
            .filter(|j| j.record.status == JobStatus::Succeeded && j.record.model_path.is_some())
            .map(|j| j.record.model_name())
            .collect()
    }

    /// The Hugging Face directory of model `name` (`job-<id>`): the last training stage's
    /// export of a succeeded job.
    pub fn model_path(&self, name: &str) -> Option<PathBuf> {
        let id = name.strip_prefix("job-")?;
        let table = self.shared.lock();
        let job = table.jobs.get(id)?;
        (job.record.status == JobStatus::Succeeded)
            .then(|| job.record.model_path.clone())
            .flatten()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Job threads never panic while holding the lock (the pipeline runs outside it).
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        self.jobs_dir.join(id)
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.job_dir(id).join("run")
    }

    /// Starts the oldest queued jobs while the policy has room.
    fn start_queued(self: &Arc<Self>, table: &mut Table) {
        table.threads.retain(|t| !t.is_finished());
        while !table.shutting_down && table.running < self.policy.max_running {
            let next = table
                .jobs
                .values()
                .filter(|j| j.record.status == JobStatus::Queued)
                .min_by(|a, b| (a.record.created_at, &a.record.id).cmp(&(b.record.created_at, &b.record.id)))
                .map(|j| j.record.id.clone());
            let Some(id) = next else { return };
            if let Err(e) = self.start(table, &id) {
                self.end(table, &id, JobStatus::Failed, Some(e.to_string()), None);
            }
        }
    }

    fn start(self: &Arc<Self>, table: &mut Table, id: &str) -> Result<(), JobError> {
        let job = table
            .jobs
            .get_mut(id)
            .ok_or_else(|| JobError::NotFound(id.to_string()))?;
        job.record.status = JobStatus::Running;
        job.record.started_at.get_or_insert_with(unix_now);
        job.record.write(&self.job_dir(id).join("job.json"))?;
        let run = JobRun {
            recipe_path: self.job_dir(id).join("recipe.toml"),
            run_dir: self.run_dir(id),
            threads: self.policy.threads_per_job,
            compute: self.policy.compute,
            stop: job.stop.clone(),
            progress: Arc::clone(&job.progress),
        };
        let shared = Arc::clone(self);
        let owned_id = id.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("r1-job-{id}"))
            .spawn(move || {
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| run.run()));
                shared.finish(&owned_id, result);
            })
            .map_err(|e| JobError::Thread(e.to_string()))?;
        table.running += 1;
        table.threads.push(thread);
        self.changed.notify_all();
        Ok(())
    }

    /// Records how a job's thread ended and starts the next queued job.
    fn finish(self: &Arc<Self>, id: &str, result: std::thread::Result<anyhow::Result<PipelineOutcome>>) {
        let mut table = self.lock();
        table.running = table.running.saturating_sub(1);
        let cancelled = table.jobs.get(id).is_some_and(|j| j.cancel_requested);
        let (status, error, model) = match result {
            Ok(Ok(PipelineOutcome::Finished(report))) => match final_export(&report) {
                Some(path) => (JobStatus::Succeeded, None, Some(path)),
                None => (
                    JobStatus::Failed,
                    Some("the recipe has no training stage: no model to serve".to_string()),
                    None,
                ),
            },
            Ok(Ok(PipelineOutcome::Stopped { .. })) if cancelled => (JobStatus::Cancelled, None, None),
            Ok(Ok(PipelineOutcome::Stopped { .. })) => (JobStatus::Interrupted, None, None),
            Ok(Err(e)) => (JobStatus::Failed, Some(format!("{e:#}")), None),
            Err(panic) => (
                JobStatus::Failed,
                Some(format!("the job panicked: {}", panic_message(&panic))),
                None,
            ),
        };
        self.end(&mut table, id, status, error, model);
        self.start_queued(&mut table);
    }

    fn end(&self, table: &mut Table, id: &str, status: JobStatus, error: Option<String>, model: Option<PathBuf>) {
        let Some(job) = table.jobs.get_mut(id) else { return };
        job.record.status = status;
        job.record.error = error;
        job.record.model_path = model;
        job.record.finished_at = Some(unix_now());
        if let Err(e) = job.record.write(&self.job_dir(id).join("job.json")) {
            // The job's outcome stays visible through the API; a restart redoes its end.
            job.record.error = Some(format!(
                "{} (and job.json could not be written: {e})",
                job.record.error.take().unwrap_or_default()
            ));
        }
        self.changed.notify_all();
    }

    /// What the API shows of job `id`, taken under the lock (the metrics file is read
    /// after it is released, by [`JobSnapshot::into_view`]).
    fn snapshot(&self, table: &Table, id: &str) -> Option<JobSnapshot> {
        let job = table.jobs.get(id)?;
        Some(JobSnapshot {
            record: job.record.clone(),
            position: job.progress.position(),
            cancel_requested: job.cancel_requested,
            metrics: self.run_dir(id).join("metrics.jsonl"),
        })
    }

    /// The view of job `id`, or `NotFound`.
    fn view_of(&self, table: MutexGuard<'_, Table>, id: &str) -> Result<JobView, JobError> {
        let snapshot = self.snapshot(&table, id);
        drop(table);
        snapshot
            .map(JobSnapshot::into_view)
            .ok_or_else(|| JobError::NotFound(id.to_string()))
    }
}

/// A job's state copied out of the table.
struct JobSnapshot {
    record: JobRecord,
    position: JobPosition,
    cancel_requested: bool,
    metrics: PathBuf,
}

impl JobSnapshot {
    fn into_view(self) -> JobView {
        let JobSnapshot {
            record: r,
            position,
            cancel_requested,
            metrics,
        } = self;
        let metrics: Option<serde_json::Value> = last_line(&metrics).and_then(|l| serde_json::from_str(&l).ok());
        let eta_seconds = (r.status == JobStatus::Running)
            .then(|| position.eta_seconds())
            .flatten();
        // A job this daemon has not run reports where its metrics left off.
        let (stage, step, total_steps) = match position.stage {
            Some(stage) => (Some(stage), Some(position.step), Some(position.total_steps)),
            None => {
                let field = |k: &str| metrics.as_ref().and_then(|m| m.get(k).cloned());
                let stage = field("stage").and_then(|v| v.as_str().map(str::to_string));
                (stage, field("step").and_then(|v| v.as_u64()), None)
            }
        };
        let finished_at = r.finished_at.filter(|_| r.status.is_final());
        let end = finished_at.unwrap_or_else(unix_now);
        JobView {
            object: "training.job",
            name: r.name,
            status: r.status,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at,
            elapsed_seconds: r.started_at.map(|s| end.saturating_sub(s)),
            stage,
            step,
            total_steps,
            eta_seconds,
            metrics,
            model: (r.status == JobStatus::Succeeded && r.model_path.is_some()).then(|| model_name(&r.id)),
            error: r.error,
            cancel_requested,
            id: r.id,
        }
    }
}

/// What one job's thread runs: the pipeline on its own backend, resumed when its run
/// directory already exists.
struct JobRun {
    recipe_path: PathBuf,
    run_dir: PathBuf,
    threads: usize,
    compute: Compute,
    stop: StopSignal,
    progress: Arc<JobProgress>,
}

impl JobRun {
    fn run(&self) -> anyhow::Result<PipelineOutcome> {
        let text = std::fs::read_to_string(&self.recipe_path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", self.recipe_path.display()))?;
        let recipe = Recipe::from_toml(&text).map_err(|e| anyhow::anyhow!("the job's recipe: {e}"))?;
        let backend = self.compute.apply(CpuBackend::with_threads(self.threads)?)?;
        // GRPO scores its rewards with rayon: inside this pool, not the global one.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads)
            .thread_name(|i| format!("r1-job-rayon-{i}"))
            .build()?;
        let resume = self.run_dir.exists();
        pool.install(|| {
            run_pipeline(
                &backend,
                &recipe,
                &text,
                &self.run_dir,
                resume,
                self.progress.as_ref(),
                &self.stop,
            )
        })
    }
}

/// The last training stage's Hugging Face export (rejection sampling exports nothing).
fn final_export(report: &PipelineReport) -> Option<PathBuf> {
    report
        .stages
        .iter()
        .rev()
        .map(|s| report.run_dir.join("models").join(&s.name))
        .find(|dir| dir.join("config.json").is_file())
}

/// A new job id: the submission time in microseconds, hex, bumped past any id in use.
fn fresh_id(table: &Table, jobs_dir: &Path) -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    (micros..)
        .map(|n| format!("{n:013x}"))
        .find(|id| !table.jobs.contains_key(id) && !jobs_dir.join(id).exists())
        .unwrap_or_default()
}

/// A job whose `job.json` cannot be read: listed as failed, with the reason.
fn unreadable(id: &str, error: JobError) -> JobRecord {
    JobRecord {
        id: id.to_string(),
        name: id.to_string(),
        created_at: 0,
        started_at: None,
        finished_at: None,
        status: JobStatus::Failed,
        error: Some(error.to_string()),
        model_path: None,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "(no message)".to_string(),
    }
}
