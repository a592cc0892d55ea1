//! `optimizer = "adamw_8bit"` changes memory and not the result: its moments take about a
//! quarter of f32 AdamW's bytes, SFT with it follows f32 AdamW's loss curve, and its state
//! goes through a checkpoint (as f32 moments) and comes back to the same bytes, so a
//! resumed run continues bit for bit — into either optimizer.

use r1_backend_cpu::CpuBackend;
use r1_core::backend::Backend;
use r1_core::model::ModelConfig;
use r1_core::optim8;
use r1_host::io::checkpoint::load_checkpoint;
use r1_host::model::{Model, restore_optimizer};
use r1_host::train::optim::{AdamW, OptimConfig, OptimizerType};
use r1_host::train::sft::{SftConfig, SftExample, train_sft};

fn config() -> ModelConfig {
    serde_json::from_value(serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
        "tie_word_embeddings": false, "max_position_embeddings": 128,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
    }))
    .expect("config")
}

fn optim(optimizer: OptimizerType) -> OptimConfig {
    OptimConfig {
        optimizer,
        learning_rate: 3e-3,
        weight_decay: 0.01,
        ..OptimConfig::default()
    }
}

#[test]
fn eight_bit_moments_take_a_quarter_of_the_memory() {
    let backend = CpuBackend::new();
    let model = Model::init(&backend, config(), 1).expect("model");
    let layout = &model.params.layout;
    let f32s = AdamW::new(&backend, layout, optim(OptimizerType::Adamw)).expect("adamw");
    let q8 = AdamW::new(&backend, layout, optim(OptimizerType::Adamw8bit)).expect("adamw_8bit");
    assert_eq!(f32s.moments.bytes(), 8 * layout.total_floats());
    // Tensors of 4096 values or more (embedding, head, q/o, MLP) take 2 bytes and an absmax
    // per 256 values for both moments; k/v projections (2048) and norms stay f32.
    let want: usize = layout
        .entries()
        .iter()
        .map(|e| {
            if e.len >= optim8::MIN_ELEMENTS {
                2 * optim8::state_bytes(e.len)
            } else {
                8 * e.len
            }
        })
        .sum();
    assert_eq!(q8.moments.bytes(), want);
    let ratio = q8.moments.bytes() as f64 / f32s.moments.bytes() as f64;
    assert!(ratio < 0.4, "8-bit moments are {ratio:.3} of f32's");
}

fn examples() -> Vec<SftExample> {
    (0..16u32)
        .map(|i| SftExample {
            prompt: vec![1 + i % 5, 7, 9, 40 + i],
            completion: vec![20 + i % 3, 30, 100 + i % 7, 2],
        })
        .collect()
}

fn sft_losses(optimizer: OptimizerType) -> Vec<f64> {
    let backend = CpuBackend::new();
    let model = Model::init(&backend, config(), 5).expect("model");
    let sft = SftConfig {
        optim: optim(optimizer),
        max_steps: Some(40),
        per_device_train_batch_size: 8,
        max_seq_length: 16,
        ..SftConfig::default()
    };
    let metrics = train_sft(&backend, &model.config, &model.params, &examples(), &sft, 0, |_| Ok(())).expect("SFT");
    metrics.iter().map(|m| m.loss).collect()
}

#[test]
fn sft_with_eight_bit_moments_follows_the_f32_loss_curve() {
    let f32s = sft_losses(OptimizerType::Adamw);
    let q8 = sft_losses(OptimizerType::Adamw8bit);
    assert!(f32s[39] < 0.5 * f32s[0], "f32 AdamW trains: {f32s:?}");
    // Step 1 computes its loss before any update; the first update is exact too (it reads
    // f32 moments computed from zero), so step 2 agrees to rounding.
    assert_eq!(f32s[0], q8[0]);
    assert!((f32s[1] - q8[1]).abs() < 1e-5 * f32s[1], "{} vs {}", f32s[1], q8[1]);
    for (step, (a, b)) in f32s.iter().zip(&q8).enumerate() {
        // Measured: at most 0.4% apart over the 40 steps (loss 5.68 → 1.10).
        assert!((a - b).abs() <= 0.02 * a, "step {}: f32 {a} vs 8-bit {b}", step + 1);
    }
}

/// Gradients for `steps` optimizer steps, fed straight into the accumulator.
fn grads(n: usize, steps: usize) -> Vec<Vec<f32>> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    (0..steps)
        .map(|_| {
            (0..n)
                .map(|i| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.4) * (1 + i % 5) as f32
                })
                .collect()
        })
        .collect()
}

fn step_all(backend: &CpuBackend, model: &Model<CpuBackend>, opt: &mut AdamW<CpuBackend>, grads: &[Vec<f32>]) {
    for g in grads {
        backend
            .upload(&opt.grads.buffer, 0, &r1_core::backend::f32_bytes(g))
            .expect("grads");
        opt.step(backend, &model.params, 1e-2, 1.0, 1.0).expect("step");
    }
}

#[test]
fn eight_bit_state_resumes_from_a_checkpoint_bit_for_bit() {
    let backend = CpuBackend::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("mid.r1ckpt");
    let n = Model::init(&backend, config(), 2)
        .expect("model")
        .params
        .layout
        .total_floats();
    let grads = grads(n, 6);

    // Uninterrupted: six 8-bit steps.
    let whole = Model::init(&backend, config(), 2).expect("model");
    let mut opt = AdamW::new(&backend, &whole.params.layout, optim(OptimizerType::Adamw8bit)).expect("opt");
    step_all(&backend, &whole, &mut opt, &grads);
    let want = whole.params.download_all(&backend).expect("weights");

    // Three steps, a checkpoint, then three more from the checkpoint.
    let first = Model::init(&backend, config(), 2).expect("model");
    let mut opt = AdamW::new(&backend, &first.params.layout, optim(OptimizerType::Adamw8bit)).expect("opt");
    step_all(&backend, &first, &mut opt, &grads[..3]);
    first.save(&backend, &path, Some(&opt), Vec::new()).expect("save");
    let saved = opt.moments.download_all(&backend).expect("moments");

    let ckpt = load_checkpoint(&path).expect("load");
    let resumed = Model::load(&backend, &path).expect("model from checkpoint");
    let mut opt = AdamW::new(&backend, &resumed.params.layout, optim(OptimizerType::Adamw8bit)).expect("opt");
    restore_optimizer(&backend, &mut opt, ckpt.optimizer.as_ref().expect("optimizer state")).expect("restore");
    assert_eq!(opt.step, 3);
    assert!(
        opt.moments.download_all(&backend).expect("moments") == saved,
        "restored moments differ"
    );
    step_all(&backend, &resumed, &mut opt, &grads[3..]);
    assert!(
        resumed.params.download_all(&backend).expect("weights") == want,
        "resumed weights differ"
    );

    // The same checkpoint resumes f32 AdamW with the 8-bit run's moments as they were.
    let mut f32s = AdamW::new(&backend, &resumed.params.layout, optim(OptimizerType::Adamw)).expect("opt");
    restore_optimizer(&backend, &mut f32s, ckpt.optimizer.as_ref().expect("optimizer state")).expect("restore");
    assert!(f32s.moments.download_all(&backend).expect("moments") == saved);
}

#[test]
fn the_optimizer_is_chosen_by_transformers_name() {
    let sft: SftConfig = toml::from_str("[optim]\noptimizer = \"adamw_8bit\"\n").expect("SFT settings");
    assert_eq!(sft.optim.optimizer, OptimizerType::Adamw8bit);
    let grpo: r1_host::train::grpo::GrpoTrainConfig =
        toml::from_str("[optim]\noptimizer = \"adamw_torch\"\n").expect("GRPO settings");
    assert_eq!(grpo.optim.optimizer, OptimizerType::Adamw);
    let err = toml::from_str::<SftConfig>("[optim]\noptimizer = \"adamw_4bit\"\n").unwrap_err();
    assert!(err.to_string().contains("adamw_8bit"), "{err}");
}
