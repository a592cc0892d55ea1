//! Data-parallel GRPO over MPI: `mpirun -n 2 r1host run recipe.toml` trains the same
//! weights as one process with the whole batch. Built only with `--features mpi` (the
//! default build has no MPI); needs Open MPI's `mpirun` on the PATH.
//!
//! Not bit for bit: with two processes each micro-batch's gradient is summed as two
//! partial sums (each process's rows, then the all-reduce) instead of one, a micro-batch
//! split between processes is scored as two smaller graphs, and the reward statistics are
//! summed in another order, so weights differ by float rounding. The sampled completions
//! are the same (each group samples from its own seed), so the rewards of every step
//! match to the last bit, and the weights within [`WEIGHT_TOLERANCE`].
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Largest difference allowed between a weight trained by two processes and by one, after
/// three AdamW steps of learning rate 1e-3 (each step moves a weight by up to ~1e-3; the
/// rounding of the reordered sums moves the result by ~1e-7).
const WEIGHT_TOLERANCE: f32 = 1e-5;

/// A tiny Qwen2 made from scratch, the one-digit addition task and two GRPO stages:
/// `split` scores one micro-batch of 16 rows per step (grpo loss), which two processes
/// split between them, 8 rows each; `whole` (bnpo loss) has two optimizer steps per
/// generation and two iterations over it, in micro-batches of 4 that each lie on one
/// process.
fn recipe() -> String {
    r#"
name = "mpi-parity"
seed = 5

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
cold_start = 4
train_prompts = 64
eval_prompts = 4

[[rewards]]
name = "format"
builtin = { type = "think_format" }

# A random model never writes the format; the share of its characters in the prompt's
# script spreads, so groups have advantages and the weights move.
[[rewards]]
name = "language"
builtin = { type = "language_consistency", scope = "completion" }

[[stages]]
kind = "grpo"
name = "split"
save_steps = 2
[stages.grpo]
per_device_train_batch_size = 16
max_steps = 3
[stages.grpo.grpo]
num_generations = 4
max_completion_length = 8
loss_type = "grpo"
beta = 0.04
[stages.grpo.optim]
learning_rate = 1e-3

[[stages]]
kind = "grpo"
name = "whole"
save_steps = 2
[stages.grpo]
per_device_train_batch_size = 4
gradient_accumulation_steps = 2
steps_per_generation = 4
num_iterations = 2
max_steps = 4
[stages.grpo.grpo]
num_generations = 4
max_completion_length = 8
loss_type = "bnpo"
[stages.grpo.optim]
learning_rate = 1e-3
"#
    .to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `r1host run RECIPE --run-dir DIR`, under `mpirun -n PROCESSES` when `processes` is
/// given; panics with the output when it fails.
fn run(recipe: &Path, dir: &Path, processes: Option<usize>) -> Output {
    let out = try_run(recipe, dir, processes);
    assert!(
        out.status.success(),
        "r1host run ({processes:?} processes) failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// [`run`] without the check that it succeeded.
fn try_run(recipe: &Path, dir: &Path, processes: Option<usize>) -> Output {
    let r1host = env!("CARGO_BIN_EXE_r1host");
    let args = [
        "run",
        recipe.to_str().expect("UTF-8 path"),
        "--run-dir",
        dir.to_str().expect("UTF-8 path"),
    ];
    let mut cmd = match processes {
        None => {
            let mut c = Command::new(r1host);
            c.args(args);
            c
        }
        Some(n) => {
            let mut c = Command::new("mpirun");
            c.args(["-n", &n.to_string(), "--oversubscribe", "--bind-to", "none", r1host])
                .args(args);
            c
        }
    };
    // Open MPI refuses root (CI runs as root) unless told twice.
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    cmd.output().unwrap_or_else(|e| {
        panic!(
            "could not start {}: {e} (the MPI test needs Open MPI's mpirun: apt-get install openmpi-bin)",
            match processes {
                None => r1host,
                Some(_) => "mpirun",
            }
        )
    })
}

/// Every weight of a checkpoint, by name.
fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let ckpt = r1_host::io::checkpoint::load_checkpoint(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ckpt.weights.iter().map(|t| (t.name.clone(), t.data.clone())).collect()
}

/// The largest element-wise difference between two checkpoints' weights.
fn max_difference(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut max = 0.0f32;
    for ((na, va), (nb, vb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert_eq!(va.len(), vb.len(), "{na}");
        for (x, y) in va.iter().zip(vb) {
            max = max.max((x - y).abs());
        }
    }
    max
}

/// The metric lines of a run, as JSON.
fn metric_lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn number(line: &serde_json::Value, key: &str) -> f64 {
    line[key].as_f64().unwrap_or_else(|| panic!("`{key}` in {line}"))
}

struct Runs {
    _tmp: tempfile::TempDir,
    one: PathBuf,
    two: PathBuf,
}

fn runs() -> Runs {
    let tmp = tempfile::tempdir().expect("tempdir");
    let recipe_path = tmp.path().join("recipe.toml");
    std::fs::write(&recipe_path, recipe()).expect("write the recipe");
    let one = tmp.path().join("one");
    let two = tmp.path().join("two");
    run(&recipe_path, &one, None);
    let out = run(&recipe_path, &two, Some(2));
    assert!(
        text(&out.stderr).contains("as 2 data-parallel processes"),
        "rank 0 says it runs with 2 processes:\n{}",
        text(&out.stderr)
    );
    Runs { _tmp: tmp, one, two }
}

#[test]
fn two_processes_train_the_weights_one_process_trains_with_the_whole_batch() {
    let runs = runs();
    // The starting point (the model `init` makes from the recipe seed) is the same for both;
    // training must have moved it far more than the tolerance, or the comparison is empty.
    for stage in ["split", "whole"] {
        let one = weights(&runs.one.join(format!("{stage}.r1ckpt")));
        let two = weights(&runs.two.join(format!("{stage}.r1ckpt")));
        let diff = max_difference(&one, &two);
        eprintln!("stage `{stage}`: largest weight difference, 2 processes vs 1: {diff:e}");
        assert!(
            diff <= WEIGHT_TOLERANCE,
            "stage `{stage}`: weights differ by up to {diff:e} (tolerance {WEIGHT_TOLERANCE:e})"
        );
    }
    let start = weights(&runs.one.join("split.reference.r1ckpt"));
    let moved = max_difference(&start, &weights(&runs.one.join("split.r1ckpt")));
    assert!(
        moved > 100.0 * WEIGHT_TOLERANCE,
        "training moved the weights by only {moved:e}"
    );

    // Rank 0 alone writes the metrics: one line per step, each with the whole batch's
    // figures — the same rewards (the same completions were sampled) and loss.
    let (one, two) = (metric_lines(&runs.one), metric_lines(&runs.two));
    assert_eq!(one.len(), 7, "3 + 4 steps");
    assert_eq!(two.len(), one.len(), "rank 1 wrote no lines of its own");
    for (a, b) in one.iter().zip(&two) {
        let keys = [
            "reward",
            "reward_std",
            "rewards/language/mean",
            "rewards/language/std",
            "completions/mean_length",
            "completions/min_length",
            "completions/max_length",
            "completions/clipped_ratio",
            "num_tokens",
            "frac_reward_zero_std",
        ];
        for key in keys {
            let (x, y) = (number(a, key), number(b, key));
            assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{key}: {x} vs {y}");
        }
        let (x, y) = (number(a, "loss"), number(b, "loss"));
        assert!((x - y).abs() <= 1e-4 * x.abs().max(1e-2), "loss: {x} vs {y}");
        let (x, y) = (number(a, "grad_norm"), number(b, "grad_norm"));
        assert!((x - y).abs() <= 1e-4 * x.abs(), "grad_norm: {x} vs {y}");
    }
}

#[test]
fn what_two_processes_cannot_reproduce_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "an SFT stage",
            recipe().replace(
                "[[stages]]\nkind = \"grpo\"\nname = \"split\"",
                "[[stages]]\nkind = \"sft\"\nname = \"cold_start\"\n[stages.sft]\nper_device_train_batch_size = 4\n\
                 max_steps = 2\nmax_seq_length = 80\n\n[[stages]]\nkind = \"grpo\"\nname = \"split\"",
            ),
            "only GRPO stages run data-parallel",
        ),
        (
            "dynamic sampling in the second stage",
            recipe().replace("num_iterations = 2", "num_iterations = 2\ndynamic_sampling = true"),
            "dynamic_sampling is not supported",
        ),
    ];
    for (i, (what, text_of_recipe, message)) in cases.into_iter().enumerate() {
        let path = tmp.path().join(format!("recipe{i}.toml"));
        std::fs::write(&path, &text_of_recipe).expect("write the recipe");
        assert!(text_of_recipe != recipe(), "{what}: the recipe was changed");
        let dir = tmp.path().join(format!("run{i}"));
        let out = try_run(&path, &dir, Some(2));
        assert!(!out.status.success(), "{what}: accepted");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(message), "{what}: {stderr}");
        assert!(!dir.join("metrics.jsonl").exists(), "{what}: the run started");
        // One process runs the same recipe.
        let one = tmp.path().join(format!("one{i}"));
        let out = try_run(&path, &one, None);
        assert!(out.status.success(), "{what}, one process: {}", text(&out.stderr));
    }
}
