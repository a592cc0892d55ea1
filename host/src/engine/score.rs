//! Log-probs of a given token sequence read through the KV cache: the sequence is
//! prefilled in one step of the decode graph (keys and values appended to a cache of the
//! chosen types, attention over what the cache holds), with logits at every position.
//! `r1host logprobs` uses it when a cache type other than f32 is asked for, so a
//! quantized cache's effect on a model's log-probs can be measured; with an all-f32
//! cache the full-sequence training graph computes the same thing.

use r1_core::backend::{Backend, i32_bytes};
use r1_core::exec::{Bindings, Executor};
use r1_core::model::{BuildOptions, KvCacheSpec, KvCacheTypes, LogitsFor, ModelConfig, build_causal_lm_typed};
use r1_core::{Graph, Plan, TensorDesc};

use super::kv_cache::KvCache;
use super::{CAPACITY_STEP, EngineError};
use crate::weights::ParamBuffer;

/// `log p(targets[i] | ids[..=i])` for each position of one sequence, `ids` and
/// `targets` of equal length, through a KV cache of `types`.
pub fn cached_token_logprobs<B: Backend>(
    backend: &B,
    cfg: &ModelConfig,
    params: &ParamBuffer<B>,
    types: KvCacheTypes,
    ids: &[u32],
    targets: &[u32],
) -> Result<Vec<f32>, EngineError> {
    let n = ids.len();
    if n == 0 {
        return Err(EngineError::EmptyPrompt);
    }
    if targets.len() != n {
        return Err(EngineError::Internal(format!("{n} ids with {} targets", targets.len())));
    }
    let vocab = cfg.vocab_size;
    if let Some(&id) = ids.iter().chain(targets).find(|&&t| t as usize >= vocab) {
        return Err(EngineError::BadToken { id, vocab });
    }
    let max_pos = cfg.max_position_embeddings;
    if n > max_pos {
        return Err(EngineError::TooLong {
            prompt: n,
            new: 0,
            max: max_pos,
        });
    }
    let capacity = n.next_multiple_of(CAPACITY_STEP).min(max_pos);
    let mut graph = Graph::new();
    let opts = BuildOptions {
        batch: 1,
        seq: n,
        kv_cache: Some(KvCacheSpec { capacity, types }),
        logits: LogitsFor::All,
        train: false,
    };
    let lm = build_causal_lm_typed(&mut graph, cfg, &opts, &params.weight_types())?;
    let target_ids = graph.input("targets", TensorDesc::i32(&[1, n]))?;
    let logp = graph.token_log_probs(lm.logits, target_ids)?;
    let plan = Plan::for_backend(&graph, &[logp], backend)?;
    let cache = KvCache::new(backend, cfg, 1, capacity, types)?;

    // The feed: `[ids (n) | past (1) | targets (n)]`, i32.
    let to_i32 = |v: &u32| i32::try_from(*v).map_err(|_| EngineError::BadToken { id: *v, vocab });
    let mut feed: Vec<i32> = ids.iter().map(to_i32).collect::<Result<_, _>>()?;
    feed.push(0);
    for t in targets {
        feed.push(to_i32(t)?);
    }
    let buffer = backend.alloc(TensorDesc::i32(&[feed.len()]).bytes())?;
    backend.upload(&buffer, 0, &i32_bytes(&feed))?;
    let at = |i: usize| TensorDesc::i32(&[i]).bytes();

    let mut b = Bindings::new(&graph);
    params.bind(&lm, &mut b)?;
    b.bind(lm.input_ids, &buffer, 0)?;
    if let Some(p) = lm.past {
        b.bind(p, &buffer, at(n))?;
    }
    b.bind(target_ids, &buffer, at(n + 1))?;
    for (l, &(kc, vc)) in lm.caches.iter().enumerate() {
        let (kbuf, vbuf) = cache
            .layers
            .get(l)
            .ok_or_else(|| EngineError::Internal(format!("no cache for layer {l}")))?;
        b.bind(kc, kbuf, 0)?;
        if let (Some(vc), Some(vbuf)) = (vc, vbuf) {
            b.bind(vc, vbuf, 0)?;
        }
    }
    let mut executor = Executor::new();
    executor.run(backend, &graph, &plan, &b)?;
    Ok(executor.read_f32(backend, &graph, &plan, &b, logp)?)
}
