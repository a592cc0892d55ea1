//! Bad inputs as a hostile user would give them, one test per class of issue 14: each ends
//! in a clear error (or a quiet exit), never a panic, an abort, a hang or a wrong result
//! with exit 0, and a refused run leaves nothing written.

use crate::{cli_support, io_support, recipe_support};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cli_support::{path, r1host, text};
use io_support::fixtures;
use r1_host::io::{load_hf_model, save_hf_model};
use recipe_support::{GrpoStage, TinyRecipe};

fn spawn(args: &[&str], stdout: Stdio) -> Child {
    cli_support::command()
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn r1host")
}

/// Fails with every needle in stderr, no panic, and not killed by a signal.
fn assert_refused(out: &Output, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status {:?}; stderr: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "missing `{needle}` in: {stderr}");
    }
}

/// A parity fixture: Qwen2, vocab 128, no tokenizer.
fn fixture() -> PathBuf {
    fixtures().join("hf/qwen2_gqa_tied")
}

/// A copy of the fixture whose `config.json` has `key` set to `value`.
fn fixture_with_config(dir: &Path, key: &str, value: serde_json::Value) -> PathBuf {
    let out = dir.join(format!("model-{key}"));
    std::fs::create_dir_all(&out).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture().join(f), out.join(f)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    config[key] = value;
    std::fs::write(out.join("config.json"), config.to_string()).unwrap();
    out
}

/// A copy of the fixture with `edit` applied to its weights.
fn fixture_with_weights(dir: &Path, name: &str, edit: impl FnOnce(&mut r1_host::io::Weights)) -> PathBuf {
    let mut model = load_hf_model(&fixture()).unwrap();
    edit(&mut model.weights);
    let out = dir.join(name);
    save_hf_model(&out, &model.config, &model.weights).unwrap();
    out
}

const TOKENS: &str = "1,5,9,3";

/// A fresh 1-layer model's config.json (byte-level tokenizer).
fn tiny_init_config(dir: &Path) -> PathBuf {
    let p = dir.join("init.json");
    std::fs::write(
        &p,
        r#"{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "vocab_size": 261, "tie_word_embeddings": true, "max_position_embeddings": 64}"#,
    )
    .unwrap();
    p
}

// ---- 1. sizes from outside -------------------------------------------------------

#[test]
fn config_with_a_billion_layers_is_refused_at_once_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_with_config(tmp.path(), "num_hidden_layers", 1_000_000_000.into());
    let started = Instant::now();
    let out = r1host(&["logprobs", "--model", path(&model), "--tokens", TOKENS]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_refused(&out, &["num_hidden_layers", "1000000000"]);
}

#[test]
fn config_larger_than_its_weight_file_says_how_much_memory_the_model_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_with_config(tmp.path(), "num_hidden_layers", 4000.into());
    let started = Instant::now();
    let out = r1host(&["logprobs", "--model", path(&model), "--tokens", TOKENS]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_refused(&out, &["this model needs", "GiB", "bytes"]);
}

#[test]
fn more_prompts_than_the_task_has_are_refused_before_anything_is_allocated() {
    let out = r1host(&["task", "--min-digits", "1", "--max-digits", "1", "--n", "1000000000000"]);
    assert_refused(&out, &["--n 1000000000000", "100 distinct problems"]);
}

#[test]
fn a_huge_max_steps_trains_instead_of_aborting_on_a_reservation() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("sft.jsonl");
    std::fs::write(&data, "{\"prompt\": \"1+1=\", \"completion\": \"2\"}\n").unwrap();
    let run_dir = tmp.path().join("run");
    let init = tiny_init_config(tmp.path());
    let mut child = spawn(
        &[
            "train",
            "sft",
            "--init",
            path(&init),
            "--data",
            path(&data),
            "--run-dir",
            path(&run_dir),
            "--max-steps",
            &usize::MAX.to_string(),
        ],
        Stdio::null(),
    );
    // Before the fix, `Vec::with_capacity(max_steps)` aborted the process at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = run_dir.join("metrics.jsonl");
    while Instant::now() < deadline && std::fs::metadata(&metrics).map_or(true, |m| m.len() == 0) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "r1host ended early: {:?}",
            child.wait_with_output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(child.try_wait().unwrap().is_none(), "r1host should still be training");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(std::fs::metadata(&metrics).unwrap().len() > 0, "no step was trained");
}

// ---- 2. the whole recipe is checked before the first step --------------------------

fn recipe_head() -> String {
    TinyRecipe::one_layer("hostile", 5).toml()
}

fn grpo_stage(name: &'static str, max_steps: usize, num_generations: usize) -> String {
    GrpoStage::small(name, max_steps, num_generations).toml()
}

#[test]
fn a_bad_third_stage_is_refused_before_the_first_stage_writes_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = format!(
        "{}{}{}",
        recipe_head(),
        grpo_stage("grpo", 2, 2),
        grpo_stage("bad", 2, 1)
    );
    run_is_refused_before_its_directory_exists(tmp.path(), &recipe, &["stage `bad`", "num_generations"]);
}

#[test]
fn too_many_prompts_for_the_task_are_refused_before_the_run_directory_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe_head().replace("train_prompts = 64", "train_prompts = 1000000000000000000");
    run_is_refused_before_its_directory_exists(tmp.path(), &recipe, &["[data]", "distinct"]);
}

/// `r1host run` of `recipe` (written under `dir`) fails with `needles` in its message
/// and never creates its run directory.
fn run_is_refused_before_its_directory_exists(dir: &Path, recipe: &str, needles: &[&str]) {
    let recipe_path = dir.join("recipe.toml");
    std::fs::write(&recipe_path, recipe).unwrap();
    let run_dir = dir.join("run");
    let out = r1host(&["run", path(&recipe_path), "--run-dir", path(&run_dir)]);
    assert_refused(&out, needles);
    assert!(!run_dir.exists(), "the run directory was created");
}

// ---- 3. non-finite numbers -----------------------------------------------------------

#[test]
fn a_nan_weight_is_refused_at_load_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_with_weights(tmp.path(), "nan", |w| {
        let t = w
            .tensors
            .iter_mut()
            .find(|t| t.name.ends_with("layers.0.mlp.up_proj.weight"))
            .unwrap();
        t.data[3] = f32::NAN;
    });
    let out = r1host(&["logprobs", "--model", path(&model), "--tokens", TOKENS]);
    assert_refused(&out, &["model.layers.0.mlp.up_proj.weight", "non-finite"]);
    assert!(out.stdout.is_empty(), "printed: {}", text(&out.stdout));
}

#[test]
fn logits_that_overflow_to_infinity_are_an_error_not_a_result() {
    let tmp = tempfile::tempdir().unwrap();
    // Finite weights whose product overflows f32: the final norm scales by 1e38.
    let model = fixture_with_weights(tmp.path(), "overflow", |w| {
        let t = w.tensors.iter_mut().find(|t| t.name == "model.norm.weight").unwrap();
        t.data.iter_mut().for_each(|v| *v = 1e38);
    });
    let out = r1host(&["logprobs", "--model", path(&model), "--tokens", TOKENS]);
    assert_refused(&out, &["non-finite"]);
    assert!(out.stdout.is_empty(), "printed: {}", text(&out.stdout));
    // Generation (the CLI, the server, GRPO rollouts) goes through the engine.
    let backend = r1_backend_cpu::CpuBackend::with_threads(1).unwrap();
    let loaded = r1_host::model::Model::load(&backend, &model).unwrap();
    let mut engine = r1_host::engine::Engine::new(loaded.config.clone());
    let result = engine.generate(
        &backend,
        &loaded.params,
        &loaded.tokenizer,
        &[1, 2],
        1,
        &r1_host::engine::GenerationConfig::default(),
        &mut r1_core::sampling::Rng::new(0),
        |_, _| {},
    );
    let Err(err) = result else {
        panic!("generation must fail");
    };
    let err = err.to_string();
    assert!(err.contains("non-finite"), "{err}");
}

// ---- 4. degenerate requests ------------------------------------------------------------

#[test]
fn sft_rows_with_an_empty_or_non_string_completion_are_refused_naming_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let init = tiny_init_config(tmp.path());
    for (rows, needle) in [
        (
            "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"c\", \"completion\": \"\"}\n",
            "is empty",
        ),
        ("{\"prompt\": \"a\", \"completion\": 12}\n", "must be a string"),
    ] {
        let data = tmp.path().join("rows.jsonl");
        std::fs::write(&data, rows).unwrap();
        let run_dir = tmp.path().join("run");
        let out = r1host(&[
            "train",
            "sft",
            "--init",
            path(&init),
            "--data",
            path(&data),
            "--run-dir",
            path(&run_dir),
        ]);
        assert_refused(&out, &["line", "completion", needle]);
        assert!(!run_dir.exists(), "the run directory was created");
    }
}

#[test]
fn generate_with_zero_completions_is_refused_naming_the_flag() {
    let out = r1host(&["generate", "--model", path(&fixture()), "--prompt", "x", "-n", "0"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("--n") && stderr.contains('0'), "{stderr}");
    assert!(out.stdout.is_empty());
}

// ---- 5. a closed stdout -------------------------------------------------------------------

/// Runs r1host with a pipe whose reading end is closed before anything is written.
fn with_closed_stdout(args: &[&str]) -> Output {
    let mut child = spawn(args, Stdio::piped());
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let commands: Vec<Vec<String>> = vec![
        vec![
            "logprobs".into(),
            "--model".into(),
            path(&fixture()).into(),
            "--tokens".into(),
            TOKENS.into(),
        ],
        vec!["run".into(), "--print-default".into()],
        vec![
            "export".into(),
            path(&fixture()).into(),
            "--out".into(),
            path(&tmp.path().join("export")).into(),
        ],
    ];
    for args in commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = with_closed_stdout(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "{args:?}: {stderr}"
        );
    }
}

// ---- 7. interrupts -----------------------------------------------------------------------

/// Enough GRPO steps that the interrupt lands inside the stage, few enough that the
/// resumed run ends quickly.
const GRPO_STEPS: usize = 300;

#[test]
fn sigint_during_grpo_checkpoints_and_resume_finishes_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = format!("{}{}", recipe_head(), grpo_stage("grpo", GRPO_STEPS, 2));
    let recipe_path = tmp.path().join("recipe.toml");
    std::fs::write(&recipe_path, recipe).unwrap();
    let run_dir = tmp.path().join("run");
    let child = spawn(&["run", path(&recipe_path), "--run-dir", path(&run_dir)], Stdio::null());
    // Wait for a GRPO step in the metrics, then interrupt as Ctrl-C would.
    let metrics = run_dir.join("metrics.jsonl");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&metrics)
        .unwrap_or_default()
        .contains("\"stage\":\"grpo\"")
    {
        assert!(Instant::now() < deadline, "no GRPO step within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_refused(&out, &["stopped in stage `grpo`", "--resume"]);
    assert!(run_dir.join("grpo.latest.r1ckpt").is_file(), "no checkpoint written");

    let out = r1host(&["run", "--resume", path(&run_dir)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("hostile finished"), "{}", text(&out.stdout));
}
