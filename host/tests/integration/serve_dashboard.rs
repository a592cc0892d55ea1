//! The dashboard of `r1host serve`: its API in-process (runs, metrics as events,
//! samples, sets, recipe validation, the key), and the page itself in headless Chromium
//! against the real binary while a job trains (`tests/e2e/dashboard_browser.py`, run
//! with the Python in `$R1_PY`; skipped with a message without it or without
//! Chromium — `.ci/run` installs both). Screenshots land in
//! `$CARGO_TARGET_TMPDIR/dashboard-screenshots/`.

use crate::recipe_support;
use crate::serve_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use r1_host::serve::dashboard::{RunSources, router};
use r1_host::serve::{AppState, ModelRegistry, RewardPlugins, ServeConfig};
use recipe_support::{GrpoStage, TinyRecipe};
use serde_json::{Value, json};
use serve_support::{TestServer, client};

/// Writes a run directory as a pipeline would: two stages of metrics, GRPO samples (one
/// with its reasoning and markup in its answer, a zero-spread group), and a rejection set.
fn crafted_run(runs: &Path, name: &str) -> PathBuf {
    let dir = runs.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut metrics = String::new();
    for s in 1..=3 {
        metrics +=
            &json!({"stage": "cold_start", "step": s, "global_step": s, "loss": 3.0 - s as f64 * 0.5}).to_string();
        metrics.push('\n');
    }
    for s in 1..=4 {
        let line = json!({"stage": "grpo", "step": s, "global_step": 3 + s, "loss": 0.1, "reward": 0.2 * s as f64,
            "rewards/format/mean": 0.2 * s as f64, "kl": 0.01 * s as f64});
        metrics += &line.to_string();
        metrics.push('\n');
    }
    std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
    let completion = "<think>secret chain of thought</think>The answer: <script>window.pwned = 1</script> \
                      <img src=\"x\" onerror=\"window.pwned = 2\"> 42";
    let samples = [
        json!({"stage": "grpo", "global_step": 7, "group": 0, "prompt": "What is 6*7?", "completion": completion,
            "reward": 1.0, "advantage": 0.7, "rewards": {"format": 1.0}}),
        json!({"stage": "grpo", "global_step": 7, "group": 0, "prompt": "What is 6*7?", "completion": "no idea",
            "reward": 0.0, "advantage": -0.7, "rewards": {"format": 0.0}}),
        json!({"stage": "grpo", "global_step": 7, "group": 1, "prompt": "What is 1+1?", "completion": "<think>hm</think>2",
            "reward": 1.0, "advantage": 0.0, "rewards": {"format": 1.0}}),
        json!({"stage": "grpo", "global_step": 7, "group": 1, "prompt": "What is 1+1?", "completion": "<think>so</think>2",
            "reward": 1.0, "advantage": 0.0, "rewards": {"format": 1.0}}),
    ];
    let text: String = samples.iter().map(|s| format!("{s}\n")).collect();
    std::fs::write(dir.join("samples.jsonl"), text).unwrap();
    std::fs::write(
        dir.join("rejection.jsonl"),
        format!(
            "{}\n",
            json!({"prompt": "What is 2+2?", "completion": "<think>two and two</think>4"})
        ),
    )
    .unwrap();
    dir
}

async fn dashboard_server(runs: &Path, api_key: Option<&str>) -> TestServer {
    let config = ServeConfig {
        api_key: api_key.map(str::to_string),
        ..ServeConfig::default()
    };
    let state = AppState::new(config, ModelRegistry::new(None), RewardPlugins::default()).unwrap();
    let sources = RunSources {
        jobs: None,
        dirs: vec![runs.to_path_buf()],
    };
    state.add_routes(router(state.clone(), Arc::new(sources)));
    TestServer::start_state(state).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_open_and_the_data_needs_the_key() {
    let runs = tempfile::tempdir().unwrap();
    crafted_run(runs.path(), "r");
    let server = dashboard_server(runs.path(), Some("k")).await;
    let c = client();
    for path in ["/", "/ui/app.js", "/ui/app.css"] {
        let r = c.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(csp.contains("script-src 'self'"), "{csp}");
    }
    let page = c.get(server.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains("/ui/app.js") && !page.contains("<script>"),
        "no inline script"
    );
    // Only GET is open: the page's path takes no other method without the key.
    assert_eq!(c.post(server.url("/")).send().await.unwrap().status(), 401);
    for path in [
        "/v1/runs",
        "/v1/runs/dir0-r/samples",
        "/v1/runs/dir0-r/metrics",
        "/v1/rewards",
    ] {
        assert_eq!(c.get(server.url(path)).send().await.unwrap().status(), 401, "{path}");
        let r = c.get(server.url(path)).bearer_auth("k").send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_metrics_samples_and_sets_come_from_the_run_directory() {
    let runs = tempfile::tempdir().unwrap();
    let dir = crafted_run(runs.path(), "r");
    let server = dashboard_server(runs.path(), None).await;
    let c = client();
    let list: Value = c
        .get(server.url("/v1/runs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = &list["data"][0];
    assert_eq!(run["id"], "dir0-r");
    assert_eq!(run["source"], "dir");
    assert_eq!(
        (run["stage"].as_str(), run["global_step"].as_u64()),
        (Some("grpo"), Some(7))
    );
    assert_eq!(run["sets"], json!(["rejection"]));

    let samples: Value = c
        .get(server.url("/v1/runs/dir0-r/samples"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(samples["data"].as_array().unwrap().len(), 4);
    assert_eq!(samples["data"][0]["rewards"]["format"], 1.0);
    let set: Value = c
        .get(server.url("/v1/runs/dir0-r/sets/rejection"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(set["data"][0]["prompt"], "What is 2+2?");
    // Only listed sets: never a path of the client's making.
    for bad in [
        "/v1/runs/dir0-r/sets/metrics",
        "/v1/runs/dir0-r/sets/..%2Fr%2Fsamples",
        "/v1/runs/nope/samples",
    ] {
        let r = c.get(server.url(bad)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"]["message"].is_string(), "{body}");
    }

    // The metrics stream: the lines written, then one appended while it is open.
    let r = c.get(server.url("/v1/runs/dir0-r/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut text = String::new();
    let count = |t: &str| t.lines().filter(|l| l.starts_with("data:")).count();
    while count(&text) < 7 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("metric events")
            .unwrap()
            .unwrap();
        text += &String::from_utf8_lossy(&chunk);
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("metrics.jsonl"))
        .unwrap();
    std::io::Write::write_all(
        &mut f,
        b"{\"stage\":\"grpo\",\"step\":5,\"global_step\":8,\"reward\":0.9}\n",
    )
    .unwrap();
    while count(&text) < 8 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the appended line")
            .unwrap()
            .unwrap();
        text += &String::from_utf8_lossy(&chunk);
    }
    assert!(text.contains("\"global_step\":8"), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipes_are_validated_without_starting() {
    let runs = tempfile::tempdir().unwrap();
    let server = dashboard_server(runs.path(), None).await;
    let c = client();
    let recipe = TinyRecipe::one_layer("checked", 1).toml();
    let ok: Value = c
        .post(server.url("/v1/recipes/validate"))
        .body(recipe)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ok, json!({"valid": true, "name": "checked", "stages": ["cold_start"]}));
    let bad = c
        .post(server.url("/v1/recipes/validate"))
        .body("name = \n[broken")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["param"], "recipe");
    assert!(
        body["error"]["message"].as_str().unwrap().starts_with("invalid recipe"),
        "{body}"
    );
    server.stop().await;
}

/// A running `r1host serve` and the URL it printed.
/// Where Debian puts Chromium and its driver (override with `R1_CHROMIUM` / `R1_CHROMEDRIVER`).
fn browser() -> Option<(PathBuf, PathBuf)> {
    let pick = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(default))
    };
    let chromium = pick("R1_CHROMIUM", "/usr/bin/chromium");
    let driver = pick("R1_CHROMEDRIVER", "/usr/bin/chromedriver");
    (chromium.is_file() && driver.is_file()).then_some((chromium, driver))
}

#[test]
fn the_dashboard_in_a_browser_while_a_job_trains() {
    let Some(python) = std::env::var_os("R1_PY").filter(|p| !p.is_empty()) else {
        eprintln!(
            "skipped: set R1_PY to a Python with `selenium` (.ci/run does) to run tests/e2e/dashboard_browser.py"
        );
        return;
    };
    let Some((chromium, chromedriver)) = browser() else {
        eprintln!("skipped: no Chromium and chromedriver (apt-get install chromium chromium-driver; .ci/run does)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let model = serve_support::tiny_checkpoint(tmp.path());
    let runs = tmp.path().join("runs");
    crafted_run(&runs, "crafted");
    let state = tmp.path().join("state");
    // Long enough to be watched and then cancelled from the page (it never finishes here).
    let recipe = format!(
        "{}{}",
        TinyRecipe {
            hidden_size: 64,
            intermediate_size: 128,
            ..TinyRecipe::one_layer("browser-job", 5)
        }
        .toml(),
        GrpoStage {
            name: "grpo",
            eval_steps: 0,
            per_device_train_batch_size: 16,
            max_steps: 2000,
            num_generations: 4,
            max_completion_length: 16,
        }
        .toml()
    );
    let recipe_path = tmp.path().join("recipe.toml");
    std::fs::write(&recipe_path, recipe).unwrap();
    let model_arg = format!("{}=tiny", model.display());
    let args: Vec<&std::ffi::OsStr> = [
        "--model".as_ref(),
        model_arg.as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--runs".as_ref(),
        runs.as_os_str(),
        "--api-key".as_ref(),
        "browser-key".as_ref(),
        "--port".as_ref(),
        "0".as_ref(),
        "--threads".as_ref(),
        "1".as_ref(),
        "--job-threads".as_ref(),
        "1".as_ref(),
        "--kv-cache-mib".as_ref(),
        "16".as_ref(),
        "--drain-timeout-s".as_ref(),
        "5".as_ref(),
    ]
    .to_vec();
    let daemon = serve_support::ServeProcess::start(&args);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    // Screenshots of this run only (a failed check leaves `failed-<check>.png`).
    let _ = std::fs::remove_dir_all(&shots);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/dashboard_browser.py");
    let output = Command::new(python)
        .arg(&script)
        .arg("--url")
        .arg(&daemon.url)
        .args(["--api-key", "browser-key", "--fixture-run", "dir0-crafted"])
        .arg("--recipe")
        .arg(&recipe_path)
        .arg("--shots")
        .arg(&shots)
        .arg("--chromium")
        .arg(&chromium)
        .arg("--chromedriver")
        .arg(&chromedriver)
        .output()
        .expect("run the browser script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}\n{stderr}");
    for view in ["runs", "run-curves", "samples", "chat", "health", "runs-phone"] {
        assert!(shots.join(format!("{view}.png")).is_file(), "no screenshot of {view}");
    }
    drop(daemon);
}
