//! The generation engine against the plain full-sequence forward pass: greedy decoding
//! with the KV cache must pick, at every step, the argmax of the logits a full forward
//! over the whole sequence gives; sampled log-probs must be the model's; and a cache
//! reused across prompts of different lengths must not leak earlier contents.

use r1_backend_cpu::{CpuBackend, SimdLevel};
use r1_core::model::ModelConfig;
use r1_core::sampling::{Rng, SamplingParams};
use r1_host::engine::{Completion, Detokenizer, Engine, EngineError, FinishReason, GenerationConfig};
use r1_host::train::lm_graph::{Feed, LmGraph, Objective};
use r1_host::weights::{ParamBuffer, ParamLayout, init_weights, upload_weights};

struct Ids;

impl Detokenizer for Ids {
    fn decode(&self, tokens: &[u32]) -> String {
        tokens.iter().map(|t| format!("<{t}>")).collect()
    }
    fn eos_id(&self) -> Option<u32> {
        None
    }
}

fn model(backend: &CpuBackend) -> (ModelConfig, ParamBuffer<CpuBackend>) {
    let cfg: ModelConfig = serde_json::from_value(serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 50,
        "tie_word_embeddings": false, "max_position_embeddings": 64,
    }))
    .unwrap();
    // Larger than the default init so the argmax is not a near-tie.
    let weights = init_weights(&cfg, 5).into_iter().map(|(n, _, v)| {
        let v = if n.contains("norm") {
            v
        } else {
            v.into_iter().map(|x| x * 8.0).collect()
        };
        (n, v)
    });
    let params = upload_weights(backend, ParamLayout::for_config(&cfg), weights).unwrap();
    (cfg, params)
}

/// Log-probs of `seq[1..]` given the prefixes, by one full forward pass.
/// `engine.generate` on the test model with the id detokenizer, without streaming.
fn run(
    engine: &mut Engine<CpuBackend>,
    backend: &CpuBackend,
    params: &ParamBuffer<CpuBackend>,
    prompt: &[u32],
    n: usize,
    generation: &GenerationConfig,
    seed: u64,
) -> Result<Vec<Completion>, EngineError> {
    engine.generate(
        backend,
        params,
        &Ids,
        prompt,
        n,
        generation,
        &mut Rng::new(seed),
        |_, _| {},
    )
}

fn full_logprobs(backend: &CpuBackend, cfg: &ModelConfig, params: &ParamBuffer<CpuBackend>, seq: &[u32]) -> Vec<f32> {
    let ids: Vec<i32> = seq.iter().map(|&t| t as i32).collect();
    let n = ids.len() - 1;
    let mut g = LmGraph::new(backend, cfg, 1, n, Objective::TokenLogProbs { temperature: 1.0 }).unwrap();
    g.forward(
        backend,
        params,
        &Feed {
            ids: &ids[..n],
            targets: &ids[1..],
            weights: None,
        },
    )
    .unwrap()
    .0
}

#[test]
fn greedy_decoding_with_the_cache_matches_full_forward_argmax() {
    let backend = CpuBackend::new();
    let (cfg, params) = model(&backend);
    let mut engine = Engine::new(cfg.clone());
    let prompt = [3u32, 17, 9, 41, 2];
    let generation = GenerationConfig {
        max_new_tokens: 12,
        sampling: SamplingParams::greedy(),
        stop: vec![],
    };
    let out = run(&mut engine, &backend, &params, &prompt, 2, &generation, 0).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].tokens, out[1].tokens, "greedy rows sharing a prefill must agree");
    assert_eq!(out[0].tokens.len(), 12);
    assert_eq!(out[0].finish_reason, FinishReason::Length);
    // Each generated token must be the most likely continuation under a full forward.
    let mut seq = prompt.to_vec();
    for &t in &out[0].tokens {
        let mut best = (f32::NEG_INFINITY, 0);
        for cand in 0..cfg.vocab_size as u32 {
            let mut s = seq.clone();
            s.push(cand);
            let lp = *full_logprobs(&backend, &cfg, &params, &s).last().unwrap();
            if lp > best.0 {
                best = (lp, cand);
            }
        }
        assert_eq!(t, best.1, "after {seq:?}");
        seq.push(t);
    }
}

#[test]
fn sampled_logprobs_are_the_models_at_temperature_one() {
    let backend = CpuBackend::new();
    let (cfg, params) = model(&backend);
    let mut engine = Engine::new(cfg.clone());
    let prompt = [1u32, 2, 3];
    let generation = GenerationConfig {
        max_new_tokens: 10,
        sampling: SamplingParams::default(),
        stop: vec![],
    };
    let out = run(&mut engine, &backend, &params, &prompt, 3, &generation, 42).unwrap();
    for c in &out {
        let seq: Vec<u32> = prompt.iter().chain(&c.tokens).copied().collect();
        let full = full_logprobs(&backend, &cfg, &params, &seq);
        let tail = &full[prompt.len() - 1..];
        for (j, (a, b)) in c.logprobs.iter().zip(tail).enumerate() {
            assert!((a - b).abs() < 1e-4, "token {j}: sampler {a} vs model {b}");
        }
    }
    assert_ne!(out[0].tokens, out[1].tokens, "sampled rows should differ");
}

#[test]
fn a_reused_cache_gives_the_same_answers_as_a_fresh_one() {
    let backend = CpuBackend::new();
    let (cfg, params) = model(&backend);
    let generation = GenerationConfig {
        max_new_tokens: 8,
        sampling: SamplingParams::greedy(),
        stop: vec![],
    };
    let short = [7u32, 8];
    let long = [1u32, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    let mut fresh = Engine::new(cfg.clone());
    let want = run(&mut fresh, &backend, &params, &short, 1, &generation, 0).unwrap();
    let mut used = Engine::new(cfg.clone());
    run(&mut used, &backend, &params, &long, 1, &generation, 0).unwrap();
    let got = run(&mut used, &backend, &params, &short, 1, &generation, 0).unwrap();
    assert_eq!(got[0].tokens, want[0].tokens);
}

#[test]
fn prompts_longer_than_the_context_are_refused() {
    let backend = CpuBackend::new();
    let (cfg, params) = model(&backend);
    let mut engine = Engine::new(cfg.clone());
    let prompt = vec![1u32; 64];
    let generation = GenerationConfig {
        max_new_tokens: 4,
        sampling: SamplingParams::greedy(),
        stop: vec![],
    };
    let err = run(&mut engine, &backend, &params, &prompt, 1, &generation, 0).unwrap_err();
    assert!(err.to_string().contains("64"), "{err}");
    let bad = [1u32, 99];
    let err = run(&mut engine, &backend, &params, &bad, 1, &generation, 0).unwrap_err();
    assert!(err.to_string().contains("99"), "{err}");
}

#[test]
fn decoding_reuses_one_planned_graph_per_shape_bucket() {
    let backend = CpuBackend::new();
    let (cfg, params) = model(&backend);
    let mut engine = Engine::new(cfg.clone());
    let generation = GenerationConfig {
        max_new_tokens: 12,
        sampling: SamplingParams::greedy(),
        stop: vec![],
    };
    let prompt = [3u32, 17, 9, 41, 2];
    let first = run(&mut engine, &backend, &params, &prompt, 2, &generation, 0).unwrap();
    assert_eq!(first[0].tokens.len(), 12);
    // One prefill graph and one decode graph for 12 tokens, not one per token.
    assert_eq!(engine.plans_built(), 2);
    let again = run(&mut engine, &backend, &params, &prompt, 2, &generation, 0).unwrap();
    assert_eq!(again[0].tokens, first[0].tokens);
    assert_eq!(engine.plans_built(), 2, "the same shapes plan nothing new");
    // Another prompt length in the same capacity bucket needs only its prefill graph.
    run(
        &mut engine,
        &backend,
        &params,
        &[1, 2, 3, 4, 5, 6, 7],
        2,
        &generation,
        0,
    )
    .unwrap();
    assert_eq!(engine.plans_built(), 3);
    // Keys and values of every layer, f32: 2 × layers × kv_heads × head_dim × 4 bytes.
    assert_eq!(engine.kv_bytes_per_token(), Some(2 * 2 * 2 * 8 * 4));
}

/// Each `(owner, index)`'s first `steps + 1` tokens with their log-probs.
type Drawn = Vec<((u64, usize), Vec<r1_host::engine::TokenLogprob>)>;

/// Starts `requests` (prompt, completions) on a fresh batch, together or one batch each,
/// and decodes `steps` more tokens.
fn drawn(
    backend: &CpuBackend,
    cfg: &ModelConfig,
    params: &ParamBuffer<CpuBackend>,
    requests: &[(Vec<u32>, usize)],
    together: bool,
    steps: usize,
) -> Drawn {
    use r1_host::engine::batch::{Admission, Batch, SeqConfig};
    use std::collections::BTreeMap;
    let config = std::sync::Arc::new(SeqConfig {
        sampling: SamplingParams::greedy(),
        max_new_tokens: 1000,
        stop: vec![],
        top_logprobs: Some(4),
        ignore_eos: true,
        sampler_logprobs: false,
    });
    let admission = |owner: usize, (prompt, n): &(Vec<u32>, usize)| Admission {
        prompt: prompt.clone(),
        owner: owner as u64,
        config: config.clone(),
        rngs: (0..*n).map(|i| Rng::new(i as u64)).collect(),
    };
    let types = r1_core::model::KvCacheTypes::default();
    let mut out: BTreeMap<(u64, usize), Vec<_>> = BTreeMap::new();
    let mut run = |admissions: Vec<Admission>| {
        let rows = admissions.iter().map(|a| a.rngs.len()).sum();
        let mut batch = Batch::new(backend, cfg, rows, 128, types).unwrap();
        let mut step = batch.admit_many(backend, params, &Ids, admissions).unwrap();
        for s in 0..=steps {
            for t in std::mem::take(&mut step) {
                out.entry((t.owner, t.index)).or_default().push(t.token);
            }
            if s < steps {
                step = batch.decode(backend, params, &Ids).unwrap();
            }
        }
    };
    if together {
        run(requests.iter().enumerate().map(|(o, r)| admission(o, r)).collect());
    } else {
        for (o, r) in requests.iter().enumerate() {
            run(vec![admission(o, r)]);
        }
    }
    out.into_iter().collect()
}

/// A model whose MLP products are split over threads in decode (a weight of 150 KiB).
fn wide_model(backend: &CpuBackend) -> (ModelConfig, ParamBuffer<CpuBackend>) {
    let cfg: ModelConfig = serde_json::from_value(serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 600,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 50,
        "tie_word_embeddings": false, "max_position_embeddings": 128,
    }))
    .unwrap();
    let weights = init_weights(&cfg, 9).into_iter().map(|(n, _, v)| (n, v));
    let params = upload_weights(backend, ParamLayout::for_config(&cfg), weights).unwrap();
    (cfg, params)
}

#[test]
fn prompts_prefilled_together_get_the_logits_each_gets_alone() {
    let backend = CpuBackend::with_threads(2).unwrap();
    let (cfg, params) = wide_model(&backend);
    let prompt = |len: usize, salt: u32| (0..len as u32).map(|i| (i * 7 + salt) % 50).collect::<Vec<_>>();
    // Three prompts of 5 tokens (as the scheduler groups them: one product of 15 rows, the
    // prompt of two completions prefilled once) and of 21 (63 rows, the most one group runs).
    for (len, counts) in [(5, [1, 2, 1]), (21, [2, 1, 1])] {
        let requests: Vec<_> = counts
            .iter()
            .enumerate()
            .map(|(i, &n)| (prompt(len, i as u32), n))
            .collect();
        let together = drawn(&backend, &cfg, &params, &requests, true, 3);
        let alone = drawn(&backend, &cfg, &params, &requests, false, 3);
        assert_eq!(together.len(), 4);
        assert_eq!(together, alone, "prompts of {len} tokens");
    }
}

/// Ends a sequence at token 3 (so rows leave the batch at different steps).
struct EndsAt3;

impl Detokenizer for EndsAt3 {
    fn decode(&self, tokens: &[u32]) -> String {
        Ids.decode(tokens)
    }
    fn eos_id(&self) -> Option<u32> {
        Some(3)
    }
}

#[test]
fn groups_generated_on_one_batch_get_what_each_gets_alone() {
    // The best instruction set here, and the scalar one: AVX2 runs a step as one plan over
    // both threads, the others cut 8 rows or more into lanes (`Backend::lanes`), so both
    // ways are checked on any x86 machine.
    for level in [SimdLevel::detect(), SimdLevel::Scalar] {
        groups_on_one_batch_get_what_each_gets_alone(&CpuBackend::with_config(2, level).unwrap());
    }
}

fn groups_on_one_batch_get_what_each_gets_alone(backend: &CpuBackend) {
    use r1_host::engine::PromptGroup;
    let (cfg, params) = wide_model(backend);
    let generation = GenerationConfig {
        max_new_tokens: 24,
        sampling: SamplingParams {
            temperature: 1.3,
            top_p: 0.95,
            repetition_penalty: 1.1,
            ..SamplingParams::default()
        },
        stop: vec![],
    };
    // Prompts of two lengths (those of one length admitted together share a prefill), one
    // of 50 (prefilled alone; the shared cache then has 128 positions where a group
    // alone has 64) and groups of 1 to 5 completions: 24 rows through a batch of at most 8.
    let groups: Vec<(Vec<u32>, usize, u64)> = [(5, 3), (5, 1), (9, 4), (50, 2), (5, 2), (9, 5), (9, 1), (5, 3), (9, 3)]
        .iter()
        .enumerate()
        .map(|(i, &(len, n))| {
            (
                (0..len as u32).map(|t| (t * 7 + i as u32) % 50).collect(),
                n,
                100 + i as u64,
            )
        })
        .collect();
    let mut alone = Vec::new();
    let mut engine = Engine::new(cfg.clone());
    for (prompt, n, seed) in &groups {
        let c = engine
            .generate(
                backend,
                &params,
                &EndsAt3,
                prompt,
                *n,
                &generation,
                &mut Rng::new(*seed),
                |_, _| {},
            )
            .unwrap();
        alone.push(c);
    }
    for max_rows in [8, 64, 1] {
        let requests = groups
            .iter()
            .map(|(prompt, n, seed)| {
                let mut rng = Rng::new(*seed);
                PromptGroup {
                    prompt,
                    rngs: (0..*n).map(|_| rng.fork()).collect(),
                }
            })
            .collect();
        let mut engine = Engine::new(cfg.clone());
        let together = engine
            .generate_many(backend, &params, &EndsAt3, requests, &generation, max_rows)
            .unwrap();
        assert_eq!(together.len(), groups.len());
        for (g, (t, a)) in together.iter().zip(&alone).enumerate() {
            assert_eq!(t.len(), a.len(), "group {g}");
            for (tc, ac) in t.iter().zip(a) {
                assert_eq!(tc.tokens, ac.tokens, "group {g} at max_rows {max_rows}");
                assert_eq!(tc.finish_reason, ac.finish_reason);
                let bits = |c: &Completion| c.logprobs.iter().map(|l| l.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(tc), bits(ac), "group {g} at max_rows {max_rows}");
            }
        }
    }
    // Some rows ended at EOS and some ran out of tokens, so rows left at different steps.
    let finishes: Vec<FinishReason> = alone.iter().flatten().map(|c| c.finish_reason).collect();
    assert!(finishes.contains(&FinishReason::Eos) && finishes.contains(&FinishReason::Length));
}

#[test]
fn rows_sampled_on_several_threads_draw_what_one_row_at_a_time_draws() {
    use r1_host::engine::PromptGroup;
    // A vocabulary of 2,000: a decode step of many rows samples them on the backend's
    // threads, one row at a time on the calling thread.
    let backend = CpuBackend::with_threads(2).unwrap();
    let cfg: ModelConfig = serde_json::from_value(serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 2000,
        "tie_word_embeddings": true, "max_position_embeddings": 64,
    }))
    .unwrap();
    let weights = init_weights(&cfg, 4).into_iter().map(|(n, _, v)| (n, v));
    let params = upload_weights(&backend, ParamLayout::for_config(&cfg), weights).unwrap();
    let generation = GenerationConfig {
        max_new_tokens: 12,
        sampling: SamplingParams {
            temperature: 1.0,
            repetition_penalty: 1.2,
            ..SamplingParams::default()
        },
        stop: vec![],
    };
    let run = |max_rows: usize| {
        let requests = (0..4u64)
            .map(|g| {
                let mut rng = Rng::new(300 + g);
                PromptGroup {
                    prompt: &[5, 9, 14][..1 + g as usize % 3],
                    rngs: (0..8).map(|_| rng.fork()).collect(),
                }
            })
            .collect();
        Engine::new(cfg.clone())
            .generate_many(&backend, &params, &EndsAt3, requests, &generation, max_rows)
            .unwrap()
    };
    let (together, one_by_one) = (run(32), run(1));
    for (g, (t, o)) in together.iter().zip(&one_by_one).enumerate() {
        for (tc, oc) in t.iter().zip(o) {
            assert_eq!(tc.tokens, oc.tokens, "group {g}");
            let bits = |c: &Completion| c.logprobs.iter().map(|l| l.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(tc), bits(oc), "group {g}");
        }
    }
}
