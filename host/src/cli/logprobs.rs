//! `r1host logprobs --model DIR --tokens 1,2,3`: the log-prob of each next token under a
//! model, as JSON — a perplexity tool, and a way to check parity from outside.

use std::path::PathBuf;

use anyhow::{Context, bail};
use r1_backend_cpu::CpuBackend;

use crate::model::Model;
use crate::train::lm_graph::{Feed, LmGraph, Objective};

#[derive(Debug, clap::Args)]
pub struct LogprobsArgs {
    /// A Hugging Face model directory or an r1 checkpoint.
    #[arg(long)]
    model: PathBuf,
    /// Comma-separated token ids.
    #[arg(long, conflicts_with = "text", value_delimiter = ',')]
    tokens: Option<Vec<u32>>,
    /// Text to tokenize with the model's tokenizer instead of ids.
    #[arg(long)]
    text: Option<String>,
}

pub fn run(args: LogprobsArgs) -> anyhow::Result<()> {
    let backend = CpuBackend::new();
    let model = Model::load(&backend, &args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let tokens = match (args.tokens, args.text) {
        (Some(t), _) => t,
        (None, Some(text)) => model.encode(&text)?,
        (None, None) => bail!("give --tokens or --text"),
    };
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
    let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let n = ids.len() - 1;
    let mut graph = LmGraph::new(
        &backend,
        &model.config,
        1,
        n,
        Objective::TokenLogProbs { temperature: 1.0 },
    )?;
    let (logp, _) = graph.forward(
        &backend,
        &model.params,
        &Feed {
            ids: &ids[..n],
            targets: &ids[1..],
            weights: None,
        },
    )?;
    let sum: f64 = logp.iter().map(|&v| v as f64).sum();
    let out = serde_json::json!({
        "tokens": tokens,
        "logprobs": logp,
        "sum_logprob": sum,
        "perplexity": (-sum / n as f64).exp(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
