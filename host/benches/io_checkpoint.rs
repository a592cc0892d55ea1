//! Checkpoint write/read speed for a ~100 MB model (the issue's Qwen2 h512/L8 shape,
//! 26M parameters): encode, decode, and save/load through the file system (save includes
//! the fsync). Run: `cargo bench -p r1-host --bench io_checkpoint -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use r1_host::io::{
    Checkpoint, NamedTensor, TokenizerSpec, Weights, decode_checkpoint, encode_checkpoint, load_checkpoint,
    parse_hf_config, save_checkpoint,
};

fn checkpoint() -> Checkpoint {
    let config = parse_hf_config(
        br#"{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 512, "intermediate_size": 1376,
            "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 4096}"#,
        "bench",
    )
    .expect("valid config");
    let tensors = config
        .param_specs()
        .into_iter()
        .map(|s| {
            let n = s.numel();
            NamedTensor {
                name: s.name,
                dims: s.dims,
                data: (0..n).map(|i| (i % 1000) as f32 * 1e-3).collect(),
            }
        })
        .collect();
    Checkpoint {
        config,
        tokenizer: TokenizerSpec::ByteLevel,
        weights: Weights { tensors },
        optimizer: None,
        trainer_state: vec![7; 1024],
    }
}

fn bench(c: &mut Criterion) {
    let ckpt = checkpoint();
    let bytes = encode_checkpoint(&ckpt).expect("encode");
    println!(
        "checkpoint: {} parameters, {:.1} MB",
        ckpt.weights.num_values(),
        bytes.len() as f64 / 1e6
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.r1ckpt");

    let mut g = c.benchmark_group("checkpoint_100mb");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode", |b| {
        b.iter(|| encode_checkpoint(black_box(&ckpt)).expect("encode"))
    });
    g.bench_function("decode", |b| {
        b.iter(|| decode_checkpoint(black_box(&bytes), "bench").expect("decode"))
    });
    g.bench_function("save_fsync", |b| {
        b.iter(|| save_checkpoint(&path, black_box(&ckpt)).expect("save"))
    });
    g.bench_function("load", |b| b.iter(|| load_checkpoint(black_box(&path)).expect("load")));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
