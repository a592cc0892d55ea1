//! KV caches stored as f16, bf16, Q8_0 or Q4_0 (`KvCacheSpec::types`): the cache inputs
//! take the chosen types, `kv_write` keeps its cache's type, and a quantized type on a
//! model whose cache rows are not whole blocks is a `BuildError` naming it.

use r1_core::model::{
    BuildError, BuildOptions, KvCacheSpec, KvCacheType, KvCacheTypes, LogitsFor, ModelConfig, build_causal_lm,
};
use r1_core::{DType, Graph, Op, TensorDesc};

/// One layer, 2 query heads of 32, one kv head: cache rows of `head_dim` values.
fn config(head_dim: usize) -> ModelConfig {
    ModelConfig {
        architectures: vec!["Qwen2ForCausalLM".into()],
        model_type: None,
        hidden_size: 64,
        intermediate_size: 96,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: Some(1),
        head_dim: Some(head_dim),
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        vocab_size: 40,
        tie_word_embeddings: true,
        max_position_embeddings: 64,
        attention_bias: false,
        bos_token_id: None,
        eos_token_id: None,
        pad_token_id: None,
        deepseek_v3: None,
    }
}

fn decode_opts(types: KvCacheTypes) -> BuildOptions {
    BuildOptions {
        batch: 2,
        seq: 1,
        kv_cache: Some(KvCacheSpec { capacity: 16, types }),
        logits: LogitsFor::Last,
        train: false,
    }
}

#[test]
fn cache_inputs_and_their_writes_take_the_chosen_types() {
    let types = KvCacheTypes {
        k: KvCacheType::Q8_0,
        v: KvCacheType::BF16,
    };
    let mut g = Graph::new();
    let lm = build_causal_lm(&mut g, &config(32), &decode_opts(types)).expect("graph");
    let (kc, vc) = lm.caches[0];
    let vc = vc.expect("a value cache");
    assert_eq!(
        g.desc(kc).expect("k"),
        TensorDesc::new(KvCacheType::Q8_0.dtype(), &[2, 16, 32])
    );
    assert_eq!(g.desc(vc).expect("v"), TensorDesc::new(DType::BF16, &[2, 16, 32]));
    let writes: Vec<DType> = g
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::KvWrite { .. }))
        .map(|n| n.desc.dtype)
        .collect();
    assert_eq!(writes, [KvCacheType::Q8_0.dtype(), DType::BF16]);
    let attention = g
        .nodes()
        .iter()
        .find(|n| matches!(n.op, Op::Attention(_)))
        .expect("attention");
    assert_eq!(attention.desc.dtype, DType::F32);
}

#[test]
fn a_quantized_cache_needs_rows_of_whole_blocks() {
    let types = KvCacheTypes {
        k: KvCacheType::F16,
        v: KvCacheType::Q4_0,
    };
    let mut g = Graph::new();
    let err = build_causal_lm(&mut g, &config(48), &decode_opts(types)).expect_err("48 values are not whole blocks");
    match &err {
        BuildError::KvCache(e) => assert_eq!((e.side, e.ty, e.width), ("value", KvCacheType::Q4_0, 48)),
        other => panic!("expected a KV cache error, got {other:?}"),
    }
    assert!(err.to_string().contains("q4_0 value cache"), "{err}");
    // The float types store any width.
    let floats = KvCacheTypes {
        k: KvCacheType::F16,
        v: KvCacheType::BF16,
    };
    assert!(build_causal_lm(&mut Graph::new(), &config(48), &decode_opts(floats)).is_ok());
}

#[test]
fn kv_write_refuses_a_cache_of_ids() {
    let mut g = Graph::new();
    let cache = g.input("c", TensorDesc::i32(&[1, 4, 32])).expect("input");
    let new = g.input("n", TensorDesc::f32(&[1, 1, 32])).expect("input");
    assert!(g.kv_write(cache, new, 0).is_err());
}
