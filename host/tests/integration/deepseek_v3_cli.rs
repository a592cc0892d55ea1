//! DeepSeek-V3 through the real binary: `r1host logprobs` on a transformers-made V3
//! directory gives transformers' log-probs, and `r1host run` takes a tiny random V3 model
//! (MLA with a q LoRA, a dense first layer, then DeepSeekMoE with group-limited routing)
//! through cold-start SFT (with auxiliary-loss-free load balancing) and a few GRPO steps,
//! exports it as a Hugging Face directory
//! whose config reads back as DeepSeek-V3, and `r1host generate` answers from it.

use crate::cli_support::{path, r1host, text};

use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf/deepseek_v3_qlora_yarn")
}

#[test]
fn logprobs_of_a_deepseek_v3_directory_match_transformers() {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture().join("expected.json")).expect("expected.json")).expect("json");
    let tokens: Vec<String> = expected["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|v| v.to_string())
        .collect();
    let out = r1host(&["logprobs", "--model", path(&fixture()), "--tokens", &tokens.join(",")]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("logprobs prints JSON");
    let got = got["logprobs"].as_array().expect("logprobs");
    let want = expected["logprobs"].as_array().expect("expected logprobs");
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (g.as_f64().expect("number"), w.as_f64().expect("number"));
        assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "r1 {g} vs transformers {w}");
    }
}

const RECIPE: &str = r#"
name = "v3-tiny"
seed = 3
eval_reward = "format"
eval_max_new_tokens = 8

[model.init]
architectures = ["DeepseekV3ForCausalLM"]
hidden_size = 32
intermediate_size = 64
num_hidden_layers = 2
num_attention_heads = 2
vocab_size = 261
tie_word_embeddings = false
max_position_embeddings = 96

[model.init.deepseek_v3]
q_lora_rank = 16
kv_lora_rank = 16
qk_nope_head_dim = 8
qk_rope_head_dim = 4
v_head_dim = 8
n_routed_experts = 4
n_shared_experts = 1
moe_intermediate_size = 16
num_experts_per_tok = 2
n_group = 2
topk_group = 1
first_k_dense_replace = 1

[data]
kind = "arithmetic"
min_digits = 1
max_digits = 1
cold_start = 16
train_prompts = 32
eval_prompts = 4

[[rewards]]
name = "format"
builtin = { type = "think_format" }

[[stages]]
kind = "sft"
name = "cold_start"
[stages.sft]
per_device_train_batch_size = 4
max_steps = 3
max_seq_length = 80
[stages.sft.optim]
bias_update_speed = 0.25

[[stages]]
kind = "grpo"
name = "grpo"
[stages.grpo]
per_device_train_batch_size = 4
max_steps = 3
[stages.grpo.grpo]
num_generations = 4
max_completion_length = 8
"#;

#[test]
fn a_tiny_deepseek_v3_model_runs_sft_and_grpo_through_the_binary() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let recipe = tmp.path().join("v3.toml");
    std::fs::write(&recipe, RECIPE).expect("write recipe");
    let run = tmp.path().join("run");
    let out = r1host(&["run", path(&recipe), "--run-dir", path(&run)]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "run failed:\n{stdout}\n{}", text(&out.stderr));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics.jsonl");
    let grpo_steps = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m.get("stage").and_then(|s| s.as_str()) == Some("grpo") && m.get("reward").is_some())
        .count();
    assert_eq!(grpo_steps, 3, "{metrics}");
    // The exported model is a DeepSeek-V3 directory (HF's top-level keys).
    let model = run.join("models").join("grpo");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("config.json")).expect("config.json")).expect("json");
    assert_eq!(config["architectures"][0], "DeepseekV3ForCausalLM");
    assert_eq!(config["kv_lora_rank"], 16);
    assert_eq!(config["n_routed_experts"], 4);
    // Load balancing moved the router biases (from 0) in whole steps of 0.25 during the
    // 3 SFT steps (an odd count: an expert off the mean every step cannot be back at 0),
    // and GRPO (no `bias_update_speed`) left them there.
    let bias_of = |stage: &str| {
        let tensors =
            r1_host::io::read_safetensors(&run.join("models").join(stage).join("model.safetensors")).expect("weights");
        tensors
            .into_iter()
            .find(|t| t.name == "model.layers.1.mlp.gate.e_score_correction_bias")
            .expect("router bias")
            .data
    };
    let (sft_bias, grpo_bias) = (bias_of("cold_start"), bias_of("grpo"));
    assert!(sft_bias.iter().any(|&b| b != 0.0), "{sft_bias:?}");
    for b in &sft_bias {
        let steps = b / 0.25;
        assert!(steps.fract() == 0.0 && steps.abs() <= 3.0, "{sft_bias:?}");
    }
    assert_eq!(sft_bias, grpo_bias);
    let out = r1host(&[
        "generate",
        "--model",
        path(&model),
        "--prompt",
        "3+4=",
        "--max-new-tokens",
        "6",
    ]);
    assert!(out.status.success(), "generate failed: {}", text(&out.stderr));
    assert!(!text(&out.stdout).trim().is_empty());
}
