//! The default job, shortened: the embedded default recipe with a smaller model, fewer
//! problems and fewer steps, run through the real `r1host` binary. It must go through
//! every stage (cold-start SFT → GRPO with the bundled WASM plugin → rejection sampling →
//! SFT → GRPO with more rewards), raise the GRPO reward, and write plots and checkpoints.
//! The same recipe is then killed (SIGKILL) in the middle of its first GRPO stage and
//! resumed: the resumed run must end with exactly the weights, metrics and samples of the
//! uninterrupted one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::cli_support::{command, r1host};
use r1_host::io::checkpoint::load_checkpoint;
use r1_host::pipeline::DEFAULT_RECIPE;
use toml::Value;

/// Steps of the short recipe's first GRPO stage.
const GRPO1_STEPS: i64 = 32;

/// The default recipe with the sizes of a test.
fn short_recipe() -> String {
    let mut r: Value = toml::from_str(DEFAULT_RECIPE).expect("the default recipe parses");
    let set = |v: &mut Value, path: &[&str], new: Value| {
        let mut cur = v;
        for p in &path[..path.len() - 1] {
            cur = match p.parse::<usize>() {
                Ok(i) => &mut cur[i],
                Err(_) => &mut cur[*p],
            };
        }
        let last = path[path.len() - 1];
        let table = cur.as_table_mut().expect("a table");
        assert!(
            table.contains_key(last),
            "the default recipe has no `{}`",
            path.join(".")
        );
        table.insert(last.to_string(), new);
    };
    set(&mut r, &["seed"], Value::Integer(3));
    // The format reward at full weight: it is what a few seconds of GRPO can lift.
    set(&mut r, &["rewards", "0", "weight"], Value::Float(1.0));
    set(&mut r, &["eval_max_new_tokens"], Value::Integer(32));
    for (k, v) in [
        ("hidden_size", 64),
        ("intermediate_size", 172),
        ("num_hidden_layers", 2),
        ("max_position_embeddings", 96),
    ] {
        set(&mut r, &["model", "init", k], Value::Integer(v));
    }
    for (k, v) in [
        ("min_digits", 1),
        ("max_digits", 2),
        ("cold_start", 200),
        ("train_prompts", 500),
        ("eval_prompts", 24),
    ] {
        set(&mut r, &["data", k], Value::Integer(v));
    }
    let stages = r["stages"].as_array().expect("stages").len();
    assert_eq!(stages, 5, "cold start, GRPO, rejection sampling, SFT, GRPO");
    // Cold start: enough for the format to be half learned, so GRPO has room to lift it.
    set(&mut r, &["stages", "0", "sft", "num_train_epochs"], Value::Float(6.0));
    set(&mut r, &["stages", "0", "sft", "max_seq_length"], Value::Integer(80));
    // 32 steps of the first GRPO stage: over seeds 1–10 its reward rose by 0.26–0.50
    // between the first and the last 8 steps (builds before and after a change of the
    // products' rounding alike), where 24 steps rose by 0.07–0.34 and seed 3 sat at the
    // bottom, so a change of rounding alone could cross the assertion's 0.1.
    for (i, steps) in [(1, GRPO1_STEPS), (4, 6)] {
        set(
            &mut r,
            &["stages", &i.to_string(), "grpo", "max_steps"],
            Value::Integer(steps),
        );
        set(
            &mut r,
            &["stages", &i.to_string(), "grpo", "per_device_train_batch_size"],
            Value::Integer(32),
        );
        set(
            &mut r,
            &["stages", &i.to_string(), "grpo", "grpo", "max_completion_length"],
            Value::Integer(32),
        );
        set(
            &mut r,
            &["stages", &i.to_string(), "grpo", "optim", "learning_rate"],
            Value::Float(1e-3),
        );
        set(&mut r, &["stages", &i.to_string(), "save_steps"], Value::Integer(2));
        set(&mut r, &["stages", &i.to_string(), "eval_steps"], Value::Integer(8));
    }
    set(
        &mut r,
        &["stages", "2", "rejection_sampling", "prompts"],
        Value::Integer(64),
    );
    set(
        &mut r,
        &["stages", "2", "rejection_sampling", "max_new_tokens"],
        Value::Integer(32),
    );
    set(&mut r, &["stages", "3", "sft", "num_train_epochs"], Value::Float(1.0));
    set(&mut r, &["stages", "3", "sft", "max_seq_length"], Value::Integer(80));
    toml::to_string(&r).expect("recipe serializes")
}

fn metrics(path: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Metric lines without wall-clock timings and throughputs (the only fields allowed to differ).
fn without_timings(
    lines: Vec<serde_json::Map<String, serde_json::Value>>,
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    lines
        .into_iter()
        .map(|mut m| {
            m.retain(|k, _| !k.ends_with("_time") && !k.ends_with("per_second"));
            m
        })
        .collect()
}

fn assert_same_weights(a: &Path, b: &Path) {
    let (ca, cb) = (
        load_checkpoint(a).expect("checkpoint a"),
        load_checkpoint(b).expect("checkpoint b"),
    );
    let (wa, wb): (Vec<_>, Vec<_>) = (ca.weights.iter().collect(), cb.weights.iter().collect());
    assert_eq!(wa.len(), wb.len());
    for (x, y) in wa.iter().zip(&wb) {
        assert_eq!(x.name, y.name);
        let same = x.data.iter().zip(&y.data).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(
            same,
            "{}: tensor `{}` differs from the uninterrupted run",
            b.display(),
            x.name
        );
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn short_default_recipe_runs_every_stage_raises_reward_and_resumes_exactly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let recipe_text = short_recipe();
    let recipe = tmp.path().join("recipe.toml");
    std::fs::write(&recipe, &recipe_text).expect("write recipe");
    let recipe = recipe.to_str().expect("utf-8 path");

    // The uninterrupted run.
    let a: PathBuf = tmp.path().join("a");
    let out = r1host(&["run", recipe, "--run-dir", a.to_str().expect("path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "r1host run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["cold_start", "grpo1", "sft2", "grpo2"] {
        assert!(
            stdout.contains(&format!("held-out accuracy after {name}:")),
            "no accuracy for {name}:\n{stdout}"
        );
        assert!(a.join(format!("{name}.r1ckpt")).is_file(), "no checkpoint for {name}");
        // Each training stage's model also leaves as a Hugging Face directory that
        // loads back with the same weights as its checkpoint.
        let hf = a.join("models").join(name);
        for file in [
            "config.json",
            "model.safetensors",
            "generation_config.json",
            "tokenizer.json",
        ] {
            assert!(hf.join(file).is_file(), "no {file} for {name}");
        }
        let exported = r1_host::io::load_hf_model(&hf).expect("exported model loads");
        let ckpt = load_checkpoint(&a.join(format!("{name}.r1ckpt"))).expect("checkpoint");
        assert_eq!(exported.weights, ckpt.weights, "exported weights of {name}");
    }
    assert!(stdout.contains("sample: What is"), "no sample answer:\n{stdout}");
    assert!(a.join("rejection.jsonl").is_file() && a.join("rejection.stats.json").is_file());
    for plot in ["reward.png", "reward.svg", "eval_accuracy.png"] {
        assert!(a.join("plots").join(plot).is_file(), "no plot {plot}");
    }

    // GRPO earns its place: the first stage's reward rises.
    let lines = metrics(&a.join("metrics.jsonl"));
    let reward: Vec<f64> = lines
        .iter()
        .filter(|m| m["stage"] == "grpo1")
        .filter_map(|m| m.get("reward").and_then(|r| r.as_f64()))
        .collect();
    assert_eq!(reward.len(), GRPO1_STEPS as usize, "one metrics line per GRPO step");
    let (start, end) = (mean(&reward[..8]), mean(&reward[reward.len() - 8..]));
    eprintln!("grpo1 reward: first 8 steps {start:.3}, last 8 steps {end:.3}");
    assert!(
        end > start + 0.1,
        "GRPO reward went from {start:.3} to {end:.3}: {reward:?}"
    );
    // `reward` is the recipe-weighted sum of the per-reward means (TRL's `reward`).
    let recipe_value: Value = toml::from_str(&recipe_text).expect("recipe");
    let weights: Vec<(String, f64)> = recipe_value["rewards"]
        .as_array()
        .expect("rewards")
        .iter()
        .map(|r| {
            let w = r.get("weight").map_or(1.0, |w| w.as_float().expect("a float weight"));
            (r["name"].as_str().expect("name").to_string(), w)
        })
        .collect();
    assert!(
        weights.iter().any(|(_, w)| *w != 1.0),
        "the test needs a weight other than 1"
    );
    for m in lines.iter().filter(|m| m.contains_key("reward")) {
        let weighted: f64 = weights
            .iter()
            .filter_map(|(name, w)| {
                m.get(&format!("rewards/{name}/mean"))
                    .map(|v| w * v.as_f64().expect("mean"))
            })
            .sum();
        let reward = m["reward"].as_f64().expect("reward");
        assert!(
            (reward - weighted).abs() < 1e-4,
            "reward {reward} is not the weighted sum {weighted}: {m:?}"
        );
    }
    // Every plugin call succeeded, and the plugin's accuracy is logged under its name.
    assert!(lines.iter().any(|m| m.contains_key("rewards/accuracy/mean")));
    assert!(
        lines
            .iter()
            .filter_map(|m| m.get("rewards/accuracy/failures"))
            .all(|f| f.as_f64() == Some(0.0))
    );

    // The same run, killed once its first GRPO stage has a checkpoint, then resumed.
    let b = tmp.path().join("b");
    let mut child = command()
        .args(["run", recipe, "--run-dir", b.to_str().expect("path")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn r1host");
    let latest = b.join("grpo1.latest.r1ckpt");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !latest.is_file() {
        assert!(
            child.try_wait().expect("poll").is_none(),
            "the run ended before its first GRPO checkpoint"
        );
        assert!(Instant::now() < deadline, "no GRPO checkpoint after 10 minutes");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let state = std::fs::read_to_string(b.join("pipeline.json")).expect("pipeline.json");
    assert!(
        !state.contains("\"grpo1\""),
        "grpo1 finished before the kill; the test must interrupt it"
    );
    let out = r1host(&["run", "--resume", b.to_str().expect("path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "resume failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["cold_start", "grpo1", "sft2", "grpo2"] {
        assert_same_weights(&a.join(format!("{name}.r1ckpt")), &b.join(format!("{name}.r1ckpt")));
    }
    let (ma, mb) = (
        without_timings(metrics(&a.join("metrics.jsonl"))),
        without_timings(metrics(&b.join("metrics.jsonl"))),
    );
    for (i, (x, y)) in ma.iter().zip(&mb).enumerate() {
        assert_eq!(x, y, "metrics line {} of the resumed run differs", i + 1);
    }
    assert_eq!(
        ma.len(),
        mb.len(),
        "the resumed run has a different number of metrics lines"
    );
    assert_eq!(
        std::fs::read_to_string(a.join("samples.jsonl")).expect("samples a"),
        std::fs::read_to_string(b.join("samples.jsonl")).expect("samples b"),
        "samples of the resumed run differ"
    );
    assert_eq!(
        std::fs::read(a.join("rejection.jsonl")).expect("rejection a"),
        std::fs::read(b.join("rejection.jsonl")).expect("rejection b"),
    );
}

#[test]
fn recipe_with_an_unknown_key_is_refused_with_the_key_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = DEFAULT_RECIPE.replace("max_steps = 60", "max_steps = 60\nmax_stepz = 3");
    assert_ne!(bad, DEFAULT_RECIPE);
    let path = tmp.path().join("bad.toml");
    std::fs::write(&path, bad).expect("write");
    let out = r1host(&[
        "run",
        path.to_str().expect("path"),
        "--run-dir",
        tmp.path().join("r").to_str().expect("path"),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_stepz"), "the error does not name the key:\n{err}");
    assert!(!tmp.path().join("r").join("metrics.jsonl").exists(), "nothing ran");
}

#[test]
fn distill_trains_a_smaller_student_on_the_teachers_filtered_traces() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let recipe = r#"
name = "distill-test"
seed = 5
eval_reward = "accuracy"
eval_max_new_tokens = 32

[model.init]
architectures = ["Qwen2ForCausalLM"]
hidden_size = 64
intermediate_size = 172
num_hidden_layers = 2
num_attention_heads = 4
num_key_value_heads = 2
vocab_size = 261
tie_word_embeddings = true
max_position_embeddings = 96

[data]
kind = "arithmetic"
min_digits = 1
max_digits = 2
cold_start = 200
train_prompts = 300
eval_prompts = 16

[[rewards]]
name = "format"
builtin = { type = "think_format", answer_tags = true }

[[rewards]]
name = "accuracy"
plugin = { path = "bundled:arithmetic" }

[[stages]]
kind = "sft"
name = "teacher"
[stages.sft]
per_device_train_batch_size = 16
num_train_epochs = 8.0
max_seq_length = 80
[stages.sft.optim]
learning_rate = 3e-3
warmup_steps = 5

[[stages]]
kind = "distill"
name = "student"
[stages.distill.student_init]
architectures = ["Qwen2ForCausalLM"]
hidden_size = 32
intermediate_size = 86
num_hidden_layers = 1
num_attention_heads = 2
num_key_value_heads = 1
vocab_size = 261
tie_word_embeddings = true
max_position_embeddings = 96
[stages.distill.traces]
prompts = 48
samples_per_prompt = 2
max_new_tokens = 32
min_reward = { format = 1.0 }
[stages.distill.sft]
per_device_train_batch_size = 8
num_train_epochs = 3.0
max_seq_length = 80
[stages.distill.sft.optim]
learning_rate = 3e-3
warmup_steps = 2
"#;
    let path = tmp.path().join("distill.toml");
    std::fs::write(&path, recipe).expect("write");
    let dir = tmp.path().join("run");
    let out = r1host(&[
        "run",
        path.to_str().expect("path"),
        "--run-dir",
        dir.to_str().expect("path"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "distill run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The traces are the teacher's completions that passed the format filter.
    let traces = std::fs::read_to_string(dir.join("student.traces.jsonl")).expect("traces");
    let rows: Vec<serde_json::Value> = traces
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect();
    assert!(!rows.is_empty(), "the teacher wrote no accepted trace");
    for r in &rows {
        let c = r["completion"].as_str().expect("completion");
        assert!(
            c.starts_with("<think>") && c.contains("</think><answer>"),
            "unfiltered trace {c}"
        );
    }
    // The student is the smaller model, trained (its loss falls) on those traces.
    let student = load_checkpoint(&dir.join("student.r1ckpt")).expect("student checkpoint");
    assert_eq!(student.config.hidden_size, 32);
    let teacher = load_checkpoint(&dir.join("teacher.r1ckpt")).expect("teacher checkpoint");
    assert_eq!(teacher.config.hidden_size, 64);
    let loss: Vec<f64> = metrics(&dir.join("metrics.jsonl"))
        .iter()
        .filter(|m| m["stage"] == "student")
        .filter_map(|m| m.get("loss").and_then(|l| l.as_f64()))
        .collect();
    assert!(loss.len() >= 4, "{loss:?}");
    assert!(loss[loss.len() - 1] < loss[0] * 0.8, "student loss {loss:?}");
    assert!(stdout.contains("held-out accuracy after student:"), "{stdout}");
}

#[test]
fn a_one_stage_run_reports_its_gain_over_the_model_before_training() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let recipe = r#"
name = "one-stage"
seed = 2
eval_reward = "format"
eval_max_new_tokens = 8

[model.init]
architectures = ["Qwen2ForCausalLM"]
hidden_size = 32
intermediate_size = 64
num_hidden_layers = 1
num_attention_heads = 2
num_key_value_heads = 1
vocab_size = 261
tie_word_embeddings = true
max_position_embeddings = 96

[data]
kind = "arithmetic"
min_digits = 1
max_digits = 1
cold_start = 8
train_prompts = 4
eval_prompts = 4

[[rewards]]
name = "format"
builtin = { type = "think_format", answer_tags = true }

[[stages]]
kind = "sft"
name = "sft"
[stages.sft]
per_device_train_batch_size = 4
max_steps = 2
max_seq_length = 80
"#;
    let path = tmp.path().join("one.toml");
    std::fs::write(&path, recipe).expect("write");
    let out = r1host(&[
        "run",
        path.to_str().expect("path"),
        "--run-dir",
        tmp.path().join("run").to_str().expect("path"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("held-out accuracy before training:"), "{stdout}");
    assert!(
        stdout.contains("gain over the model before training:"),
        "the gain is not measured against the untrained model:\n{stdout}"
    );
    assert!(
        !stdout.contains("gain over the `sft` model"),
        "the stage is compared with itself:\n{stdout}"
    );
}

#[test]
fn run_takes_a_device_and_refuses_an_unknown_one_before_running_anything() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("r");
    let out = r1host(&["run", "--device", "tpu", "--run-dir", dir.to_str().expect("path")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`tpu` is not a device"), "{err}");
    assert!(!dir.join("metrics.jsonl").exists(), "nothing ran");
}
