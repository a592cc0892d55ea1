//! `r1host plugin check` and `r1host plugin score`, run as a user would, on the real
//! example plugins and on a module that imports WASI.

use crate::{cli_support, plugin_support};

use std::path::Path;
use std::process::{Command, Output};

use cli_support::{path, text};
use plugin_support::examples;

fn r1host(args: &[&str]) -> Output {
    cli_support::command()
        .args(args)
        // Keep the module cache out of the user's home.
        .env("R1_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-cache"))
        .output()
        .expect("run r1host")
}

#[test]
fn check_prints_the_plugin_info() {
    let out = r1host(&["plugin", "check", path(&examples().arithmetic)]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(stdout.contains("is a valid r1 reward plugin (ABI v1)"), "{stdout}");
    assert!(stdout.contains("name         arithmetic\n"), "{stdout}");
    assert!(stdout.contains("version      0.1.0\n"), "{stdout}");
    assert!(stdout.contains("init         yes (takes a config)"), "{stdout}");
}

#[test]
fn check_refuses_a_wasi_module_naming_the_import() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("wasi.wat");
    std::fs::write(
        &file,
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                   (memory (export "memory") 1))"#,
    )
    .expect("write module");
    let out = r1host(&["plugin", "check", path(&file)]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("imports `wasi_snapshot_preview1::fd_write`"),
        "{stderr}"
    );
}

#[test]
fn score_one_sample_from_the_command_line() {
    let wasm = path(&examples().arithmetic);
    let out = r1host(&[
        "plugin",
        "score",
        wasm,
        "--prompt",
        "What is 37*12?",
        "--completion",
        "<answer>444</answer>",
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "score 1\n");

    let out = r1host(&[
        "plugin",
        "score",
        wasm,
        "--prompt",
        "What is 37*12?",
        "--completion",
        "<answer>440</answer>",
        "--reference",
        "444",
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "score 0\ndiagnostic (sample 0): expected 444, found 440\n"
    );
}

#[test]
fn score_a_jsonl_file_prints_one_line_per_sample() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("samples.jsonl");
    std::fs::write(
        &file,
        concat!(
            r#"{"prompt": "What is 2+2?", "completion": "<answer>4</answer>", "answer": "4", "id": 1}"#,
            "\n",
            r#"{"prompt": "What is 2+3?", "completion": "<answer>6</answer>"}"#,
            "\n\n",
            r#"{"prompt": "Hello", "completion": "hi"}"#,
            "\n"
        ),
    )
    .expect("write jsonl");
    let out = r1host(&[
        "plugin",
        "score",
        path(&examples().arithmetic),
        "--jsonl",
        path(&file),
        "--group-size",
        "2",
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0],
        serde_json::json!({"sample": 0, "score": 1.0, "diagnostics": []})
    );
    assert_eq!(
        lines[1],
        serde_json::json!({"sample": 1, "score": 0.0, "diagnostics": ["expected 5, found 6"]})
    );
    assert_eq!(lines[2]["score"], serde_json::Value::Null);
}

#[test]
fn score_reports_a_bad_jsonl_line_by_number() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.jsonl");
    std::fs::write(&file, "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": 3}\n").expect("write");
    let out = r1host(&["plugin", "score", path(&examples().arithmetic), "--jsonl", path(&file)]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("line 2 is not a sample"), "{stderr}");
}

/// An address-space limit (`ulimit -v`, KiB) well above what r1host needs to score with
/// a 64 MiB plugin on 4 threads (it works from about 500 MiB), and below the 4 GiB +
/// guards wasmtime reserves per linear memory by default: with that default every
/// instantiation failed under this limit ("mmap failed to reserve 0x104000000 bytes"),
/// and under 5-8 GiB 14 of 16 groups failed on 4 threads.
#[cfg(unix)]
const ADDRESS_SPACE_KIB: u64 = 1 << 20;

#[cfg(unix)]
#[test]
fn score_on_four_threads_under_an_address_space_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("samples.jsonl");
    let lines: Vec<String> = (0..64)
        .map(|i| {
            serde_json::json!({"prompt": format!("What is {i}+{i}?"), "completion": format!("<answer>{}</answer>", 2 * i)})
                .to_string()
        })
        .collect();
    std::fs::write(&file, lines.join("\n")).expect("write jsonl");
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-cache");
    // `exec` keeps the limit on r1host itself; "$0" and "$@" are the binary and its args.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_r1host"))
        .args(["plugin", "score", path(&examples().arithmetic), "--jsonl", path(&file)])
        .args(["--group-size", "4", "--threads", "4"])
        .env("R1_CACHE_DIR", cache)
        .output()
        .expect("run r1host under bash");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let scores: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line")["score"].clone())
        .collect();
    assert_eq!(scores, vec![serde_json::json!(1.0); 64]);
}
