//! Training jobs over HTTP: `router(jobs)` served on 127.0.0.1 and driven by a real
//! client. A small two-stage recipe (SFT, then GRPO with a checkpoint every 3 steps) is
//! submitted, watched through its event stream, cancelled, stopped by a daemon shutdown,
//! and — through the real `r1host serve` — killed with SIGKILL; each time the job, resumed, must end with exactly the weights
//! and metrics of an uninterrupted run of the same recipe.

use crate::recipe_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use r1_backend_cpu::CpuBackend;
use r1_host::device::Compute;
use r1_host::pipeline::{Recipe, run_pipeline};
use r1_host::progress::NoProgress;
use r1_host::serve::jobs::{JobManager, JobPolicy, JobStatus, router};
use r1_host::stop::StopSignal;
use recipe_support::{GrpoStage, TinyRecipe, WeightBits, checkpoint_bits};
use serde_json::{Value, json};

/// About 6 s on one thread, nearly all of it GRPO (24 steps of ~0.25 s, a checkpoint
/// every 3): long enough to be interrupted mid-stage by a test that watches for it.
fn recipe() -> &'static str {
    static RECIPE: OnceLock<String> = OnceLock::new();
    RECIPE.get_or_init(|| {
        let head = TinyRecipe {
            hidden_size: 128,
            intermediate_size: 256,
            num_hidden_layers: 2,
            max_position_embeddings: 128,
            ..TinyRecipe::one_layer("tiny-job", 3)
        };
        let grpo = GrpoStage {
            name: "grpo",
            eval_steps: 6,
            per_device_train_batch_size: 32,
            max_steps: 24,
            num_generations: 4,
            max_completion_length: 48,
        };
        format!("{}{}", head.toml(), grpo.toml())
    })
}

/// Jobs train on one thread here, like the reference run (same thread count, same bits).
const POLICY: JobPolicy = JobPolicy {
    threads_per_job: 1,
    max_running: 1,
    compute: Compute::F32,
};

const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// Metric lines without wall-clock timings and throughputs.
fn metrics(run_dir: &Path) -> Vec<serde_json::Map<String, Value>> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines()
        .map(|l| {
            let mut m: serde_json::Map<String, Value> = serde_json::from_str(l).expect("a JSON line");
            m.retain(|k, _| !k.ends_with("_time") && !k.ends_with("per_second"));
            m
        })
        .collect()
}

/// The uninterrupted run of [`recipe`]: its final weights and metrics.
fn reference() -> &'static (WeightBits, Vec<serde_json::Map<String, Value>>) {
    static REFERENCE: OnceLock<(WeightBits, Vec<serde_json::Map<String, Value>>)> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let parsed = Recipe::from_toml(recipe()).expect("the recipe parses");
        let backend = CpuBackend::with_threads(POLICY.threads_per_job).expect("backend");
        let run = tmp.path().join("run");
        run_pipeline(
            &backend,
            &parsed,
            recipe(),
            &run,
            false,
            &NoProgress,
            &StopSignal::new(),
        )
        .expect("the reference run")
        .finished()
        .expect("nothing stops it");
        (checkpoint_bits(&run.join("grpo.r1ckpt")), metrics(&run))
    })
}

/// The job's run ends exactly as the uninterrupted one, and its model is served.
fn assert_matches_reference(jobs: &JobManager, id: &str) {
    let run = jobs.run_dir(id).expect("the job's run dir");
    let (want_weights, want_metrics) = reference();
    assert!(
        checkpoint_bits(&run.join("grpo.r1ckpt")) == *want_weights,
        "job {id}: the final weights differ from the uninterrupted run"
    );
    let got = metrics(&run);
    assert_eq!(got.len(), want_metrics.len(), "job {id}: metric lines");
    for (i, (g, w)) in got.iter().zip(want_metrics).enumerate() {
        assert_eq!(g, w, "job {id}: metrics line {}", i + 1);
    }
    let model = format!("job-{id}");
    assert!(jobs.model_names().contains(&model), "{model} is not served");
    let path = jobs.model_path(&model).expect("the model's path");
    assert_eq!(path, run.join("models").join("grpo"));
    assert!(path.join("model.safetensors").is_file());
}

/// Waits until `path` exists, failing if job `id` ends first.
fn wait_for_file(jobs: &JobManager, id: &str, path: &Path) {
    let deadline = Instant::now() + JOB_TIMEOUT;
    while !path.is_file() {
        let status = jobs.status(id).expect("the job");
        assert!(
            !status.is_final(),
            "job {id} ended ({status}) before {} appeared",
            path.display()
        );
        assert!(Instant::now() < deadline, "no {} in time", path.display());
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `router(jobs)` on a free loopback port, for the life of the test's runtime.
async fn serve(jobs: Arc<JobManager>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router(jobs)).await });
    format!("http://{addr}")
}

/// One server-sent event.
#[derive(Debug)]
struct SseEvent {
    event: Option<String>,
    data: String,
}

/// Reads the job's event stream until `end` (or `until` returns true on an event).
async fn watch(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    mut until: impl FnMut(&SseEvent) -> bool,
) -> Vec<SseEvent> {
    let response = client
        .get(format!("{base}/v1/jobs/{id}/events"))
        .send()
        .await
        .expect("events");
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let (mut buffer, mut events) = (String::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + JOB_TIMEOUT;
    loop {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("events in time");
        let Some(chunk) = chunk else { return events };
        buffer.push_str(&String::from_utf8_lossy(&chunk.expect("a chunk")));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = SseEvent {
                event: None,
                data: String::new(),
            };
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event.event = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if event.event.is_none() && event.data.is_empty() {
                continue; // a keep-alive comment
            }
            let stop = event.event.as_deref() == Some("end") || until(&event);
            events.push(event);
            if stop {
                return events;
            }
        }
    }
}

async fn submit(client: &reqwest::Client, base: &str) -> String {
    let response = client
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"recipe": recipe(), "name": "tiny"}))
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), 201);
    let job: Value = response.json().await.expect("the job");
    assert_eq!(job["name"], "tiny");
    assert_eq!(job["object"], "training.job");
    job["id"].as_str().expect("an id").to_string()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_recipe_trains_streams_its_metrics_and_serves_its_model() {
    let state = tempfile::tempdir().expect("tempdir");
    let jobs = Arc::new(JobManager::open(state.path(), POLICY).expect("open"));
    let base = serve(Arc::clone(&jobs)).await;
    let client = reqwest::Client::new();
    let id = submit(&client, &base).await;

    let events = watch(&client, &base, &id, |_| false).await;
    let end = events.last().expect("events");
    assert_eq!(end.event.as_deref(), Some("end"));
    let ended: Value = serde_json::from_str(&end.data).expect("the end event's job");
    assert_eq!(ended["status"], "succeeded", "{ended}");

    // Every metrics line came as one event, in order.
    let run = jobs.run_dir(&id).expect("run dir");
    let lines: Vec<Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let streamed: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e.data).expect("a metrics event"))
        .collect();
    assert_eq!(streamed, lines);
    assert!(lines.iter().filter(|m| m["stage"] == "grpo").count() >= 24);

    let job: Value = client
        .get(format!("{base}/v1/jobs/{id}"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["metrics"], *lines.last().expect("a line"));
    assert_eq!(job["model"], format!("job-{id}"));
    assert_eq!(job["stage"], "grpo");
    assert_eq!(job["step"], 24);
    assert!(job["elapsed_seconds"].is_u64() && job["error"].is_null());
    let list: Value = client
        .get(format!("{base}/v1/jobs"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list["data"][0]["id"], id);

    // A finished job cannot be cancelled.
    let response = client
        .post(format!("{base}/v1/jobs/{id}/cancel"))
        .send()
        .await
        .expect("cancel");
    assert_eq!(response.status(), 409);
    let err: Value = response.json().await.expect("json");
    assert_eq!(err["error"]["type"], "conflict_error");
    blocking(move || assert_matches_reference(&jobs, &id)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_recipe_is_refused_with_the_parsers_message_and_creates_no_job() {
    let state = tempfile::tempdir().expect("tempdir");
    let jobs = Arc::new(JobManager::open(state.path(), POLICY).expect("open"));
    let base = serve(Arc::clone(&jobs)).await;
    let client = reqwest::Client::new();
    let bad_toml = "name = \"x\"\n[model\n";
    let unknown_key = recipe().replace("seed = 3", "seed = 3\nsead = 4");
    for (body, content_type, needle) in [
        (
            json!({"recipe": bad_toml}).to_string(),
            "application/json",
            "TOML parse error",
        ),
        (bad_toml.to_string(), "application/toml", "TOML parse error"),
        (unknown_key, "text/plain", "unknown field `sead`"),
        (
            json!({"recipe": recipe(), "nam": "x"}).to_string(),
            "application/json",
            "unknown field `nam`",
        ),
    ] {
        let response = client
            .post(format!("{base}/v1/jobs"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("submit");
        assert_eq!(response.status(), 400);
        let err: Value = response.json().await.expect("json");
        assert_eq!(err["error"]["type"], "invalid_request_error");
        let message = err["error"]["message"].as_str().expect("a message");
        assert!(message.contains(needle), "{message}");
        assert!(err["error"]["code"].is_null() && err["error"].get("param").is_some());
    }
    assert!(jobs.list().is_empty());
    let job_dirs = std::fs::read_dir(state.path().join("jobs")).expect("jobs dir").count();
    assert_eq!(job_dirs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_job_is_not_found_on_every_route() {
    let state = tempfile::tempdir().expect("tempdir");
    let jobs = Arc::new(JobManager::open(state.path(), POLICY).expect("open"));
    let base = serve(jobs).await;
    let client = reqwest::Client::new();
    for (method, path) in [
        (reqwest::Method::GET, "/v1/jobs/nope"),
        (reqwest::Method::GET, "/v1/jobs/nope/events"),
        (reqwest::Method::POST, "/v1/jobs/nope/cancel"),
        (reqwest::Method::POST, "/v1/jobs/nope/resume"),
        (reqwest::Method::GET, "/v1/jobs/..%2F..%2Fetc/events"),
    ] {
        let response = client
            .request(method, format!("{base}{path}"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 404, "{path}");
        let err: Value = response.json().await.expect("json");
        assert_eq!(err["error"]["type"], "not_found_error", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_checkpoints_stays_cancelled_on_restart_and_resumes_exactly() {
    let state = tempfile::tempdir().expect("tempdir");
    let jobs = Arc::new(JobManager::open(state.path(), POLICY).expect("open"));
    let base = serve(Arc::clone(&jobs)).await;
    let client = reqwest::Client::new();
    let id = submit(&client, &base).await;

    let latest = jobs.run_dir(&id).expect("run dir").join("grpo.latest.r1ckpt");
    let (j, i) = (Arc::clone(&jobs), id.clone());
    blocking(move || wait_for_file(&j, &i, &latest)).await;
    let response = client
        .post(format!("{base}/v1/jobs/{id}/cancel"))
        .send()
        .await
        .expect("cancel");
    assert_eq!(response.status(), 200);
    let job: Value = response.json().await.expect("json");
    assert_eq!(job["cancel_requested"], true);
    let events = watch(&client, &base, &id, |_| false).await;
    let ended: Value = serde_json::from_str(&events.last().expect("end").data).expect("json");
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert!(ended["model"].is_null());
    let run = jobs.run_dir(&id).expect("run dir");
    assert!(!run.join("grpo.r1ckpt").exists(), "the job finished before the cancel");

    // A new manager on the same state leaves a cancelled job alone…
    let j = Arc::clone(&jobs);
    blocking(move || j.shutdown()).await;
    drop(jobs);
    let jobs = Arc::new(JobManager::open(state.path(), POLICY).expect("reopen"));
    assert_eq!(jobs.status(&id), Some(JobStatus::Cancelled));
    // …until it is resumed: it continues from the checkpoint and ends as if never stopped.
    let base = serve(Arc::clone(&jobs)).await;
    let response = client
        .post(format!("{base}/v1/jobs/{id}/resume"))
        .send()
        .await
        .expect("resume");
    assert_eq!(response.status(), 200);
    let events = watch(&client, &base, &id, |_| false).await;
    let ended: Value = serde_json::from_str(&events.last().expect("end").data).expect("json");
    assert_eq!(ended["status"], "succeeded", "{ended}");
    blocking(move || assert_matches_reference(&jobs, &id)).await;
}

#[test]
fn a_daemon_shut_down_mid_job_resumes_it_when_it_opens_again() {
    let state = tempfile::tempdir().expect("tempdir");
    let jobs = JobManager::open(state.path(), POLICY).expect("open");
    let id = jobs.submit(recipe(), None).expect("submit").id;
    let run = jobs.run_dir(&id).expect("run dir");
    wait_for_file(&jobs, &id, &run.join("grpo.latest.r1ckpt"));
    jobs.shutdown();
    assert_eq!(jobs.status(&id), Some(JobStatus::Interrupted));
    assert!(
        !run.join("grpo.r1ckpt").exists(),
        "the job finished before the shutdown"
    );
    assert!(
        jobs.submit(recipe(), None).is_err(),
        "a shut-down manager starts nothing"
    );
    drop(jobs);

    let jobs = JobManager::open(state.path(), POLICY).expect("reopen");
    assert_eq!(jobs.wait(&id, JOB_TIMEOUT), Some(JobStatus::Succeeded));
    assert_matches_reference(&jobs, &id);
}

/// Starts `r1host serve` for training jobs only on `state` (one thread per job, like the
/// reference run) and returns it with its base URL, read from the line it prints.
fn start_child_daemon(state: &Path) -> (Reaper, String) {
    let mut child = Reaper(
        Command::new(env!("CARGO_BIN_EXE_r1host"))
            .args(["serve", "--port", "0", "--job-threads", "1", "--state-dir"])
            .arg(state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn r1host serve"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("the address line");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("r1host serve printed {line:?}"))
        .to_string();
    (child, base)
}

/// Kills the child daemon when the test ends, however it ends.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_resumes_its_job_on_restart_with_the_same_weights() {
    let state = tempfile::tempdir().expect("tempdir");
    let state_dir = state.path().to_path_buf();
    let client = reqwest::Client::new();
    let (mut daemon, base) = blocking({
        let s = state_dir.clone();
        move || start_child_daemon(&s)
    })
    .await;
    let id = submit(&client, &base).await;
    let run = state_dir.join("jobs").join(&id).join("run");

    // Watch until GRPO has written a checkpoint, then SIGKILL the daemon mid-stage.
    let latest = run.join("grpo.latest.r1ckpt");
    let events = watch(&client, &base, &id, |e| {
        e.data.contains("\"stage\":\"grpo\"") && latest.is_file()
    })
    .await;
    assert!(
        events.last().is_some_and(|e| e.event.is_none()),
        "the job ended first: {events:?}"
    );
    daemon.0.kill().expect("SIGKILL");
    daemon.0.wait().expect("reap");
    let record: Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("jobs").join(&id).join("job.json")).expect("job.json"))
            .expect("json");
    assert_eq!(record["status"], "running", "the kill left the job running");
    assert!(!run.join("grpo.r1ckpt").exists(), "the job finished before the kill");

    // A new daemon on the same state finds the job and finishes it.
    let (daemon, base) = blocking({
        let s = state_dir.clone();
        move || start_child_daemon(&s)
    })
    .await;
    let events = watch(&client, &base, &id, |_| false).await;
    let ended: Value = serde_json::from_str(&events.last().expect("end").data).expect("json");
    assert_eq!(ended["status"], "succeeded", "{ended}");
    drop(daemon);
    // Read back through a manager of this process (nothing is left to run).
    let jobs = blocking(move || JobManager::open(&state_dir, POLICY))
        .await
        .expect("reopen");
    blocking(move || assert_matches_reference(&jobs, &id)).await;
}

#[test]
fn a_second_daemon_on_the_same_state_is_refused_until_the_first_shuts_down() {
    let state = tempfile::tempdir().expect("tempdir");
    let first = JobManager::open(state.path(), POLICY).expect("open");
    let err = match JobManager::open(state.path(), POLICY) {
        Ok(_) => panic!("a second manager opened a locked state directory"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("another r1host daemon"), "{err}");
    assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
    assert!(err.contains("--state-dir"), "{err}");
    first.shutdown();
    let second = JobManager::open(state.path(), POLICY).expect("open after the first shut down");
    second.shutdown();
    drop(first);
}
