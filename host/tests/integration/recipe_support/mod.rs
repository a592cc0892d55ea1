//! The small pipeline recipes the pipeline, job and hostile-input tests run, written in
//! one place: a tiny byte-level Qwen2 made from scratch, the bundled one-digit addition
//! task, the `think_format` reward (also the held-out judge), a 4-step cold-start SFT
//! stage, and GRPO stages built to order.
#![allow(dead_code)]

/// A checkpoint's weights, bit for bit: (tensor name, f32 bits) in file order.
pub type WeightBits = Vec<(String, Vec<u32>)>;

/// The weights of the checkpoint at `path`, bit for bit (panics naming the file).
pub fn checkpoint_bits(path: &std::path::Path) -> WeightBits {
    let ckpt = r1_host::io::checkpoint::load_checkpoint(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ckpt.weights
        .iter()
        .map(|t| (t.name.clone(), t.data.iter().map(|v| v.to_bits()).collect()))
        .collect()
}

/// The recipe up to (and with) its cold-start SFT stage.
pub struct TinyRecipe {
    pub name: &'static str,
    pub seed: u64,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub max_position_embeddings: usize,
}

impl TinyRecipe {
    /// One layer of width 32: a whole run in a second or two.
    pub const fn one_layer(name: &'static str, seed: u64) -> Self {
        TinyRecipe {
            name,
            seed,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 1,
            max_position_embeddings: 96,
        }
    }

    /// The TOML of the recipe's header, model, data, reward and cold-start stage.
    pub fn toml(&self) -> String {
        let TinyRecipe {
            name,
            seed,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            max_position_embeddings,
        } = self;
        format!(
            r#"
name = "{name}"
seed = {seed}
eval_reward = "format"
eval_max_new_tokens = 8

[model.init]
architectures = ["Qwen2ForCausalLM"]
hidden_size = {hidden_size}
intermediate_size = {intermediate_size}
num_hidden_layers = {num_hidden_layers}
num_attention_heads = 2
num_key_value_heads = 1
vocab_size = 261
tie_word_embeddings = true
max_position_embeddings = {max_position_embeddings}

[data]
kind = "arithmetic"
min_digits = 1
max_digits = 1
cold_start = 16
train_prompts = 64
eval_prompts = 4

[[rewards]]
name = "format"
builtin = {{ type = "think_format" }}

[[stages]]
kind = "sft"
name = "cold_start"
[stages.sft]
per_device_train_batch_size = 4
max_steps = 4
max_seq_length = 80
"#
        )
    }
}

/// A GRPO stage that checkpoints every 3 steps.
pub struct GrpoStage {
    pub name: &'static str,
    /// Held-out accuracy every this many steps (0: the key is left out).
    pub eval_steps: usize,
    pub per_device_train_batch_size: usize,
    pub max_steps: usize,
    pub num_generations: usize,
    pub max_completion_length: usize,
}

impl GrpoStage {
    /// Batches of 4 completions of at most 8 tokens, no evaluation during the stage.
    pub const fn small(name: &'static str, max_steps: usize, num_generations: usize) -> Self {
        GrpoStage {
            name,
            eval_steps: 0,
            per_device_train_batch_size: 4,
            max_steps,
            num_generations,
            max_completion_length: 8,
        }
    }

    pub fn toml(&self) -> String {
        let GrpoStage {
            name,
            eval_steps,
            per_device_train_batch_size,
            max_steps,
            num_generations,
            max_completion_length,
        } = self;
        let eval = if *eval_steps > 0 {
            format!("eval_steps = {eval_steps}\n")
        } else {
            String::new()
        };
        format!(
            r#"
[[stages]]
kind = "grpo"
name = "{name}"
save_steps = 3
{eval}[stages.grpo]
per_device_train_batch_size = {per_device_train_batch_size}
max_steps = {max_steps}
[stages.grpo.grpo]
num_generations = {num_generations}
max_completion_length = {max_completion_length}
"#
        )
    }
}
