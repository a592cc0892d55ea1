//! `r1host serve` as users run it: the real binary on a tiny checkpoint, on port 0,
//! answering HTTP and exiting 0 on SIGTERM; refusing an open address without a key; and
//! the official `openai` Python client against it (`tests/e2e/openai_client.py`, run
//! with the interpreter in `$R1_PY`, skipped with a message when it is unset).

use crate::serve_support;

use std::path::Path;
use std::process::Command;

use serde_json::json;
use serve_support::ServeProcess;

/// `r1host serve` of `model` (as `tiny`) on a free port with one thread, a 16 MiB KV
/// cache and a 10 s drain, plus `extra` arguments.
fn start_server(model: &Path, extra: &[&str]) -> ServeProcess {
    let model = format!("{}=tiny", model.display());
    let mut args = vec![
        "--model",
        &model,
        "--port",
        "0",
        "--threads",
        "1",
        "--kv-cache-mib",
        "16",
        "--drain-timeout-s",
        "10",
    ];
    args.extend_from_slice(extra);
    ServeProcess::start(args)
}

#[test]
fn the_binary_serves_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let model = serve_support::tiny_checkpoint(dir.path());
    let server = start_server(&model, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let health = serve_support::client()
            .get(format!("{}/health", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        let (status, body) = serve_support::post(
            &format!("{}/v1/chat/completions", server.url),
            json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model"], "tiny");
    });
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn an_open_address_without_a_key_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_r1host"))
        .args(["serve", "--model", "nowhere.r1ckpt", "--host", "0.0.0.0", "--port", "0"])
        .env_remove("R1_API_KEY")
        .output()
        .expect("run r1host serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0 without an API key"),
        "{stderr}"
    );
}

#[test]
fn the_openai_python_client_works_unchanged() {
    let Some(python) = std::env::var_os("R1_PY").filter(|p| !p.is_empty()) else {
        eprintln!(
            "skipped: set R1_PY to a Python with the `openai` package (.ci/run does) to run tests/e2e/openai_client.py"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = serve_support::tiny_checkpoint(dir.path());
    let server = start_server(&model, &["--api-key", "e2e-key"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/openai_client.py");
    let output = Command::new(python)
        .arg(&script)
        .args([
            "--base-url",
            &format!("{}/v1", server.url),
            "--api-key",
            "e2e-key",
            "--model",
            "tiny",
        ])
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert!(server.terminate().success());
}
