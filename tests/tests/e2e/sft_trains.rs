//! SFT end to end on the library: a fresh tiny Qwen2 model with the byte-level tokenizer,
//! trained on the bundled addition set, must drive its loss well below where it started.

use std::path::Path;

use r1_backend_cpu::CpuBackend;
use r1_host::io::{DatasetFields, read_jsonl};
use r1_host::model::Model;
use r1_host::train::optim::OptimConfig;
use r1_host::train::sft::{SftConfig, SftExample, train_sft};

#[test]
fn sft_on_the_bundled_set_drives_the_loss_down() {
    let backend = CpuBackend::new();
    let config = serde_json::from_value(serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 261,
        "tie_word_embeddings": true, "max_position_embeddings": 128,
    }))
    .unwrap();
    let model = Model::init(&backend, config, 0).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/data/arithmetic_sft.jsonl");
    let rows = read_jsonl(&data, &DatasetFields::sft()).unwrap();
    assert!(rows.len() >= 100);
    let eos = model.tokenizer.eos_id();
    let examples: Vec<SftExample> = rows
        .iter()
        .map(|r| {
            let mut completion = model.encode(&r.target).unwrap();
            completion.push(eos);
            SftExample {
                prompt: model.encode(&r.prompt).unwrap(),
                completion,
            }
        })
        .collect();
    let cfg = SftConfig {
        optim: OptimConfig {
            learning_rate: 3e-3,
            warmup_steps: 5,
            ..Default::default()
        },
        per_device_train_batch_size: 16,
        max_steps: Some(60),
        ..Default::default()
    };
    let history = train_sft(&backend, &model.config, &model.params, &examples, &cfg, eos, |_| Ok(())).unwrap();
    assert_eq!(history.len(), 60);
    let first = history[0].loss;
    let last: f64 = history[55..].iter().map(|m| m.loss).sum::<f64>() / 5.0;
    // A uniform guess over 261 tokens costs ln 261 ≈ 5.56 nats.
    assert!(first > 4.5, "initial loss {first}");
    assert!(last < 0.4 * first, "loss only fell from {first} to {last}");
    assert!(history.iter().all(|m| m.loss.is_finite() && m.grad_norm.is_finite()));
}
