//! The model commands run as a user would: `--device`, models without a tokenizer (ids
//! work, text is refused by name), and `r1host export` with its bad inputs.

use crate::{cli_support, io_support};

use cli_support::{path, r1host, text};
use io_support::fixtures;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A parity fixture: a transformers-saved directory with no `tokenizer.json`, vocab 128.
fn fixture() -> PathBuf {
    fixtures().join("hf/qwen2_gqa_tied")
}

/// The fixture's expected token ids, as `--tokens` takes them.
fn fixture_tokens() -> String {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture().join("expected.json")).expect("expected.json")).expect("json");
    let ids: Vec<String> = expected["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|v| v.to_string())
        .collect();
    ids.join(",")
}

fn assert_fails_with(out: &Output, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "should fail; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "missing `{needle}` in: {stderr}");
    }
}

fn logprobs(model: &Path) -> serde_json::Value {
    let out = r1host(&["logprobs", "--model", path(model), "--tokens", &fixture_tokens()]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("logprobs prints JSON")
}

#[test]
fn generate_on_cuda_says_the_device_cannot_be_used_yet() {
    let out = r1host(&[
        "generate",
        "--model",
        path(&fixture()),
        "--prompt",
        "hi",
        "--device",
        "cuda",
    ]);
    assert_fails_with(&out, &["cuda:0"]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("not built yet") || stderr.contains("no CUDA device"),
        "{stderr}"
    );
}

#[test]
fn every_model_command_takes_a_device() {
    for args in [
        &["logprobs", "--model", "m", "--tokens", "1,2", "--device", "cuda:1"][..],
        &["train", "sft", "--data", "d", "--init", "c", "--device", "cuda:1"],
        &["bench", "decode", "--device", "cuda:1"],
        &["bench", "train", "--device", "cuda:1"],
        &["bench", "grpo", "--device", "cuda:1"],
    ] {
        assert_fails_with(&r1host(args), &["cuda:1 cannot be used"]);
    }
    assert_fails_with(
        &r1host(&["generate", "--model", "m", "--prompt", "p", "--device", "tpu"]),
        &["not a device"],
    );
}

#[test]
fn logprobs_runs_on_a_model_without_a_tokenizer() {
    let out = logprobs(&fixture());
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture().join("expected.json")).expect("expected.json")).expect("json");
    let got = out["logprobs"].as_array().expect("logprobs");
    let want = expected["logprobs"].as_array().expect("expected logprobs");
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (g.as_f64().expect("number"), w.as_f64().expect("number"));
        assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "r1 {g} vs transformers {w}");
    }
}

#[test]
fn text_commands_on_a_model_without_a_tokenizer_say_they_need_text() {
    let model = fixture();
    let needles = ["has no tokenizer.json", "this command needs text", "qwen2_gqa_tied"];
    assert_fails_with(
        &r1host(&["generate", "--model", path(&model), "--prompt", "hi"]),
        &needles,
    );
    assert_fails_with(
        &r1host(&["logprobs", "--model", path(&model), "--text", "hi"]),
        &needles,
    );
    let dir = tempfile::tempdir().expect("temp dir");
    assert_fails_with(&sft_one_example(dir.path(), &model, &[]), &needles);
}

/// `r1host train sft` from `model` on a one-example dataset written under `dir`, run
/// directory `dir/run`, plus `extra` arguments.
fn sft_one_example(dir: &Path, model: &Path, extra: &[&str]) -> Output {
    let data = dir.join("data.jsonl");
    std::fs::write(&data, "{\"prompt\": \"1+1\", \"completion\": \"2\"}\n").expect("write data");
    let run_dir = dir.join("run");
    let mut args = vec![
        "train",
        "sft",
        "--data",
        path(&data),
        "--model",
        path(model),
        "--run-dir",
        path(&run_dir),
    ];
    args.extend_from_slice(extra);
    r1host(&args)
}

#[test]
fn exported_directory_gives_the_same_logprobs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("exported");
    let out = r1host(&["export", path(&fixture()), "--out", path(&out_dir)]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("model.safetensors"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("has no tokenizer"), "{}", text(&out.stderr));
    assert_eq!(logprobs(&out_dir), logprobs(&fixture()));
}

#[test]
fn export_of_a_missing_model_names_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.ckpt");
    let out = r1host(&["export", path(&missing), "--out", path(&dir.path().join("out"))]);
    assert_fails_with(
        &out,
        &["nope.ckpt", "no such model directory, GGUF file or checkpoint file"],
    );
}

#[test]
fn export_to_an_existing_file_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"keep me").expect("write");
    let out = r1host(&["export", path(&fixture()), "--out", path(&file)]);
    assert_fails_with(&out, &["a-file", "is not a directory"]);
    assert_eq!(std::fs::read(&file).expect("read"), b"keep me");
}

#[test]
fn help_texts_point_at_the_repository_reference_scripts() {
    for what in ["train", "decode", "grpo"] {
        let out = r1host(&["bench", what, "--help"]);
        let help = text(&out.stdout);
        assert!(out.status.success());
        assert!(help.contains("bench/reference/"), "{help}");
        assert!(!help.contains("shared/"), "{help}");
    }
}

#[test]
fn an_unknown_cache_type_is_refused_with_the_names_that_exist() {
    for args in [
        &["generate", "--model", "m", "--prompt", "p"][..],
        &["logprobs", "--model", "m", "--tokens", "1,2"],
        &["serve", "--model", "m"],
        &["bench", "decode", "--model", "m"],
        &["bench", "serve"],
    ] {
        let out = r1host(&[args, &["--cache-type-k", "q5_1"]].concat());
        assert_fails_with(&out, &["q5_1", "--cache-type-k", "f32, f16, bf16, q8_0, q4_0"]);
    }
    let out = r1host(&["logprobs", "--model", "m", "--tokens", "1,2", "--cache-type-v", "Q8_0"]);
    assert_fails_with(&out, &["Q8_0", "--cache-type-v"]);
}

#[test]
fn bench_decode_runs_with_the_cache_types_asked_for_and_reports_their_bytes() {
    // 4 kv heads of 8: cache rows of one 32-value block (f32: 128 bytes; q8_0: 34; q4_0: 18).
    let model = fixtures().join("hf/qwen2_mha_untied");
    let run = |k: &str, v: &str| {
        let out = r1host(&[
            "bench",
            "decode",
            "--model",
            path(&model),
            "--tokens",
            "3",
            "--prompt",
            "4",
            "--rounds",
            "1",
            "--cache-type-k",
            k,
            "--cache-type-v",
            v,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let line = stdout.lines().last().expect("a JSON line");
        serde_json::from_str::<serde_json::Value>(line).expect("json")
    };
    let full = run("f32", "f32");
    let small = run("q8_0", "q4_0");
    assert_eq!(full["cache_type_k"], "f32", "{full}");
    assert_eq!(
        (small["cache_type_k"].as_str(), small["cache_type_v"].as_str()),
        (Some("q8_0"), Some("q4_0"))
    );
    let bytes = |v: &serde_json::Value| v["kv_bytes_per_token"].as_u64().expect("kv bytes");
    assert!(bytes(&full) > 0, "{full}");
    assert_eq!(bytes(&small) * (128 + 128), bytes(&full) * (34 + 18), "{full} {small}");
}

#[test]
fn logprobs_reads_through_a_quantized_cache_when_asked() {
    // 4 kv heads of 8: cache rows of one 32-value block.
    let model = fixtures().join("hf/qwen2_mha_untied");
    let tokens = "1,5,9,14,20,3,7";
    let run = |k: &str, v: &str| {
        let out = r1host(&[
            "logprobs",
            "--model",
            path(&model),
            "--tokens",
            tokens,
            "--cache-type-k",
            k,
            "--cache-type-v",
            v,
        ]);
        assert!(out.status.success(), "stderr: {}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("logprobs prints JSON")
    };
    let f32s = run("f32", "f32");
    let q8 = run("q8_0", "q8_0");
    assert_eq!(
        (q8["cache_type_k"].as_str(), q8["cache_type_v"].as_str()),
        (Some("q8_0"), Some("q8_0"))
    );
    let a: Vec<f64> = f32s["logprobs"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    let b: Vec<f64> = q8["logprobs"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    assert_eq!(a.len(), 6);
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    // Measured 0.032 nats; the bound is host/tests/integration/kv_cache_types.rs' Q8_0 one.
    assert!(d > 0.0 && d < 0.15, "q8_0 cache moved log-probs by {d}");
}

#[test]
fn generate_reports_the_kv_cache_bytes_per_token() {
    // GGUF with a tokenizer; 2 layers, 2 kv heads of 4 (rows of 8: any float type).
    let model = fixtures().join("gguf/qwen2_tiny.f32.gguf");
    let out = r1host(&[
        "generate",
        "--model",
        path(&model),
        "--prompt",
        "hi",
        "--max-new-tokens",
        "2",
        "--cache-type-k",
        "bf16",
        "--cache-type-v",
        "f16",
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    // 2 layers × (keys + values) × 8 values × 2 bytes.
    assert!(
        stderr.contains("kv cache: keys bf16, values f16: 64 bytes per token"),
        "{stderr}"
    );
    let out = r1host(&[
        "generate",
        "--model",
        path(&model),
        "--prompt",
        "hi",
        "--cache-type-k",
        "q8_0",
    ]);
    assert_fails_with(&out, &["q8_0 key cache", "8 values"]);
}

#[test]
fn sft_trains_from_an_f32_gguf() {
    // An F32 GGUF's matrices are lent from the file for inference; training copies them
    // into the trainable layout, so SFT runs and its checkpoint holds every weight.
    let dir = tempfile::tempdir().expect("temp dir");
    let model = fixtures().join("gguf/qwen2_tiny.f32.gguf");
    let out = sft_one_example(dir.path(), &model, &["--max-steps", "2"]);
    let run_dir = dir.path().join("run");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let checkpoint = run_dir.join("final.r1ckpt");
    assert!(checkpoint.is_file(), "no checkpoint in {}", run_dir.display());
    assert!(text(&out.stderr).contains("loss "), "{}", text(&out.stderr));
    let lp = r1host(&["logprobs", "--model", path(&checkpoint), "--tokens", "1,2,3"]);
    assert!(lp.status.success(), "stderr: {}", text(&lp.stderr));
}
