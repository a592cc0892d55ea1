//! `r1host serve` as users run it: the real binary on a tiny checkpoint, on port 0,
//! answering HTTP and exiting 0 on SIGTERM; refusing an open address without a key; and
//! the official `openai` Python client against it (`tests/e2e/openai_client.py`, run
//! with the interpreter in `$R1_PY`, skipped with a message when it is unset).

mod serve_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

/// A running `r1host serve` and the URL it printed.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(model: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_r1host"))
            .arg("serve")
            .arg("--model")
            .arg(format!("{}=tiny", model.display()))
            .args([
                "--port",
                "0",
                "--threads",
                "1",
                "--kv-cache-mib",
                "16",
                "--drain-timeout-s",
                "10",
            ])
            .args(extra)
            .env_remove("R1_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start r1host serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Server { child, url }
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(Instant::now() < deadline, "r1host serve did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_binary_serves_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let model = serve_support::tiny_checkpoint(dir.path());
    let server = Server::start(&model, &[]);
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
    let server = Server::start(&model, &["--api-key", "e2e-key"]);
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
