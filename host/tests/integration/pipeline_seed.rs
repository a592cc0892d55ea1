//! The recipe's `seed` reaches every stage. The data is JSONL and the model is loaded
//! from disk, so the seed touches neither the data nor the starting weights: only the
//! stages' own randomness (SFT's data order, GRPO's and rejection sampling's sampling)
//! can make two recipe seeds differ — and it must, unless the stage sets its own `seed`.

use crate::recipe_support;

use std::path::{Path, PathBuf};

use r1_backend_cpu::CpuBackend;
use r1_host::model::Model;
use r1_host::pipeline::{Recipe, run_pipeline};
use r1_host::progress::NoProgress;
use r1_host::stop::StopSignal;
use recipe_support::checkpoint_bits;

/// A tiny random model saved as a checkpoint, and the JSONL files of a recipe.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = serde_json::from_value(serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "vocab_size": 261, "tie_word_embeddings": true, "max_position_embeddings": 64,
        }))
        .expect("a model config");
        let backend = CpuBackend::new();
        let model = Model::init(&backend, config, 0).expect("a model");
        model
            .save(&backend, &dir.path().join("model.r1ckpt"), None, Vec::new())
            .expect("save the model");
        let rows = |key: &str| -> String {
            (0..16)
                .map(|i| {
                    let row = serde_json::json!({"prompt": format!("What is {i} + {i}?"), key: format!("{}", 2 * i)});
                    format!("{row}\n")
                })
                .collect()
        };
        std::fs::write(dir.path().join("prompts.jsonl"), rows("answer")).expect("write prompts");
        std::fs::write(dir.path().join("sft.jsonl"), rows("completion")).expect("write sft rows");
        Fixture { dir }
    }

    /// A one-stage recipe: `stage` is its `[[stages]]` table.
    fn recipe(&self, seed: u64, stage: &str) -> String {
        let root = self.dir.path().display();
        format!(
            r#"
name = "seeded"
seed = {seed}
[model]
path = "{root}/model.r1ckpt"
[data]
kind = "jsonl"
sft = "{root}/sft.jsonl"
prompts = "{root}/prompts.jsonl"
[[rewards]]
name = "format"
builtin = {{ type = "think_format" }}
{stage}
"#
        )
    }

    /// Runs `text` in a new run directory and returns it.
    fn run(&self, text: &str, name: &str) -> PathBuf {
        let recipe = Recipe::from_toml(text).expect("the recipe parses");
        let dir = self.dir.path().join(name);
        run_pipeline(
            &CpuBackend::new(),
            &recipe,
            text,
            &dir,
            false,
            &NoProgress,
            &StopSignal::new(),
        )
        .expect("the pipeline runs")
        .finished()
        .expect("nothing stops it");
        dir
    }
}

const SFT: &str = r#"
[[stages]]
kind = "sft"
name = "sft"
[stages.sft]
per_device_train_batch_size = 2
max_steps = 3
max_seq_length = 48
"#;

const GRPO: &str = r#"
[[stages]]
kind = "grpo"
name = "grpo"
[stages.grpo]
per_device_train_batch_size = 4
max_steps = 1
[stages.grpo.grpo]
num_generations = 2
max_completion_length = 8
"#;

const REJECTION: &str = r#"
[[stages]]
kind = "rejection_sampling"
name = "rejection"
[stages.rejection_sampling]
prompts = 4
samples_per_prompt = 2
max_new_tokens = 8
"#;

/// The stage with `seed = 9` in its config table `[stages.<table>]`.
fn with_stage_seed(stage: &str, table: &str) -> String {
    let header = format!("[stages.{table}]\n");
    assert!(stage.contains(&header), "no {header}");
    stage.replace(&header, &format!("{header}seed = 9\n"))
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `stage` under recipe seeds 1, 1 again and 2, then with the stage's own seed under
/// recipe seeds 1 and 2, and checks what `outcome` reads from each run directory.
fn check_seeding<T: PartialEq + std::fmt::Debug>(stage: &str, table: &str, outcome: impl Fn(&Path) -> T) {
    let fx = Fixture::new();
    let run = |seed: u64, stage: &str, name: &str| outcome(&fx.run(&fx.recipe(seed, stage), name));
    let one = run(1, stage, "seed1");
    assert_eq!(one, run(1, stage, "seed1-again"), "a seed must give the same run twice");
    assert_ne!(
        one,
        run(2, stage, "seed2"),
        "recipe seeds 1 and 2 ran `{table}` identically"
    );
    let own = with_stage_seed(stage, table);
    assert_eq!(
        run(1, &own, "own-seed-under-1"),
        run(2, &own, "own-seed-under-2"),
        "the stage's own seed must override the recipe's"
    );
}

#[test]
fn the_recipe_seed_orders_sft_data_unless_the_stage_sets_its_own() {
    check_seeding(SFT, "sft", |dir| checkpoint_bits(&dir.join("sft.r1ckpt")));
}

#[test]
fn the_recipe_seed_drives_grpo_sampling_unless_the_stage_sets_its_own() {
    check_seeding(GRPO, "grpo", |dir| {
        (
            read(dir.join("samples.jsonl")),
            checkpoint_bits(&dir.join("grpo.r1ckpt")),
        )
    });
}

#[test]
fn the_recipe_seed_drives_rejection_sampling_unless_the_stage_sets_its_own() {
    check_seeding(REJECTION, "rejection_sampling", |dir| read(dir.join("rejection.jsonl")));
}
