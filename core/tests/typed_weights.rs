//! Weights stored in another type than f32 (`WeightTypes`): frozen typed params feeding
//! the projections' matmuls; refused where a weight does not feed a matmul as its `b`.
//! And how the projections sit in the graph: those of one input side by side.

use r1_core::model::{BuildOptions, ModelConfig, WeightTypes, build_causal_lm, build_causal_lm_typed};
use r1_core::quant::GgmlType;
use r1_core::{DType, Graph, Op};

fn config(tied: bool) -> ModelConfig {
    ModelConfig {
        architectures: vec!["Qwen2ForCausalLM".into()],
        model_type: None,
        hidden_size: 64,
        intermediate_size: 96,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: Some(1),
        head_dim: None,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        vocab_size: 40,
        tie_word_embeddings: tied,
        max_position_embeddings: 64,
        attention_bias: false,
        bos_token_id: None,
        eos_token_id: None,
        pad_token_id: None,
        deepseek_v3: None,
    }
}

#[test]
fn listed_weights_become_frozen_typed_params_and_the_rest_stay_f32() {
    let cfg = config(false);
    let mut types = WeightTypes::all_f32();
    let q8 = GgmlType::Q8_0.dtype();
    for name in [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
        "lm_head.weight",
    ] {
        types.set(name, q8);
    }
    types.set("model.layers.0.mlp.up_proj.weight", DType::F16);
    let mut g = Graph::new();
    let lm = build_causal_lm_typed(&mut g, &cfg, &BuildOptions::full(1, 4), &types).expect("typed graph");
    for (name, id) in &lm.params {
        let node = g.node(*id).expect("node");
        let want = types.get(name);
        assert_eq!(node.desc.dtype, want, "{name}");
        assert_eq!(
            node.op,
            Op::Param {
                trainable: want == DType::F32
            },
            "{name}"
        );
    }
    // The all-f32 graph is the one `build_causal_lm` builds.
    let (mut a, mut b) = (Graph::new(), Graph::new());
    build_causal_lm(&mut a, &cfg, &BuildOptions::full(1, 4)).expect("f32");
    build_causal_lm_typed(&mut b, &cfg, &BuildOptions::full(1, 4), &WeightTypes::all_f32()).expect("f32 typed");
    assert_eq!(a, b);
}

#[test]
fn a_typed_norm_is_refused_and_a_typed_embedding_table_is_taken() {
    // Norms (and biases) stay f32: they are not inputs of a matmul or a lookup.
    let mut types = WeightTypes::all_f32();
    types.set("model.layers.0.input_layernorm.weight", DType::F16);
    let mut g = Graph::new();
    assert!(build_causal_lm_typed(&mut g, &config(true), &BuildOptions::full(1, 4), &types).is_err());
    // The token embedding may keep its stored type (looked up row by row, and the tied
    // head's table), as GGUF files store it.
    let mut types = WeightTypes::all_f32();
    types.set("model.embed_tokens.weight", DType::F16);
    let mut g = Graph::new();
    build_causal_lm_typed(&mut g, &config(true), &BuildOptions::full(1, 4), &types).expect("typed embedding");
}

#[test]
fn the_projections_of_one_input_are_products_side_by_side() {
    // q/k/v and gate/up: each layer's products of one input are consecutive nodes (what
    // the CPU backend runs as one group), with and without q/k/v biases.
    for bias in [false, true] {
        let mut cfg = config(false);
        cfg.num_hidden_layers = 2;
        cfg.attention_bias = bias;
        for opts in [BuildOptions::full(1, 4), BuildOptions::training(2, 4)] {
            let mut g = Graph::new();
            build_causal_lm(&mut g, &cfg, &opts).expect("graph");
            let nodes = g.nodes();
            let mut runs = Vec::new();
            let mut i = 0;
            while i < nodes.len() {
                let mut j = i;
                while j < nodes.len()
                    && matches!(
                        nodes[j].op,
                        Op::MatMul {
                            trans_a: false,
                            trans_b: true
                        }
                    )
                    && nodes[j].inputs[0] == nodes[i].inputs[0]
                {
                    j += 1;
                }
                if j - i >= 2 {
                    runs.push(j - i);
                }
                i = j.max(i + 1);
            }
            assert_eq!(runs, [3, 2, 3, 2], "bias {bias}, train {}", opts.train);
        }
    }
}
