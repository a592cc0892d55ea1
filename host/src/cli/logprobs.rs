//! `r1host logprobs --model DIR --tokens 1,2,3`: the log-prob of each next token under a
//! model, as JSON — a perplexity tool, and a way to check parity from outside. Token ids
//! need no tokenizer, so this runs on any model directory; `--text` needs one.
//!
//! With the default f32 cache types the full-sequence graph scores the tokens (no cache
//! at all); with `--cache-type-k` / `--cache-type-v` other than f32 the tokens are read
//! through a KV cache of those types (`engine::score`), as a generation would read them,
//! so the log-probs show what the cache's rounding costs.

use std::path::PathBuf;

use anyhow::bail;
use r1_core::backend::Backend;
use r1_core::model::KvCacheTypes;

use crate::cli::adapter_arg::AdapterArgs;
use crate::cli::cache_types::CacheTypeArgs;
use crate::device::{BackendJob, DeviceArgs, with_backend};
use crate::engine::score::cached_token_logprobs;
use crate::model::Model;
use crate::train::lm_graph::{Feed, LmGraph, Objective};

#[derive(Debug, clap::Args)]
pub struct LogprobsArgs {
    /// A Hugging Face model directory, a GGUF file (F32/F16/BF16) or an r1 checkpoint.
    #[arg(long)]
    model: PathBuf,
    /// Comma-separated token ids.
    #[arg(long, conflicts_with = "text", value_delimiter = ',')]
    tokens: Option<Vec<u32>>,
    /// Text to tokenize with the model's tokenizer instead of ids.
    #[arg(long)]
    text: Option<String>,
    #[command(flatten)]
    adapter: AdapterArgs,
    #[command(flatten)]
    cache: CacheTypeArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: LogprobsArgs) -> anyhow::Result<()> {
    let device = args.device.clone();
    with_backend(&device, args)
}

impl BackendJob for LogprobsArgs {
    type Output = ();

    fn run<B: Backend>(self, backend: &B) -> anyhow::Result<()>
    where
        B::Buffer: Send + Sync,
    {
        let model = self.adapter.load(backend, &self.model)?;
        let tokens = match (self.tokens, self.text) {
            (Some(t), _) => t,
            (None, Some(text)) => model.encode(&text)?,
            (None, None) => bail!("give --tokens or --text"),
        };
        let out = token_logprobs(backend, &model, tokens, self.cache.types())?;
        crate::outln!("{}", serde_json::to_string_pretty(&out)?)?;
        Ok(())
    }
}

/// `log p(tokens[i+1] | tokens[..=i])` for each position, their sum and the perplexity.
fn token_logprobs<B: Backend>(
    backend: &B,
    model: &Model<B>,
    tokens: Vec<u32>,
    cache_types: KvCacheTypes,
) -> anyhow::Result<serde_json::Value> {
    if tokens.len() < 2 {
        bail!("need at least two tokens (the first is context only)");
    }
    let vocab = model.config.vocab_size;
    if let Some((i, t)) = tokens.iter().enumerate().find(|(_, t)| **t as usize >= vocab) {
        bail!("token {t} at position {i} is outside the vocabulary of {vocab}");
    }
    if tokens.len() > model.config.max_position_embeddings {
        bail!(
            "{} tokens exceed the model's {} positions",
            tokens.len(),
            model.config.max_position_embeddings
        );
    }
    let n = tokens.len() - 1;
    let logp = if cache_types == KvCacheTypes::F32 {
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let mut graph = LmGraph::scoring(
            backend,
            &model.config,
            &model.params.weight_types(),
            1,
            n,
            Objective::TokenLogProbs { temperature: 1.0 },
        )?;
        let feed = Feed {
            ids: &ids[..n],
            targets: &ids[1..],
            weights: None,
        };
        graph.forward(backend, &model.params, &feed)?.0
    } else {
        cached_token_logprobs(
            backend,
            &model.config,
            &model.params,
            cache_types,
            &tokens[..n],
            &tokens[1..],
        )?
    };
    if let Some(i) = logp.iter().position(|v| !v.is_finite()) {
        bail!("the model gave a non-finite log-prob (NaN or infinity) at position {i}");
    }
    let sum: f64 = logp.iter().map(|&v| v as f64).sum();
    Ok(serde_json::json!({
        "cache_type_k": cache_types.k,
        "cache_type_v": cache_types.v,
        "tokens": tokens,
        "logprobs": logp,
        "sum_logprob": sum,
        "perplexity": (-sum / n as f64).exp(),
    }))
}
