//! `r1host generate --model DIR|CHECKPOINT --prompt … [--chat]`: sample completions and
//! print the reasoning apart from the answer, streaming the first completion as it is
//! written. `--chat` sends the prompt as a user message through the chat template.

use std::path::PathBuf;

use r1_core::backend::Backend;
use r1_core::sampling::{Rng, SamplingParams};

use crate::chat::{RenderOptions, template_for_model};
use crate::cli::adapter_arg::AdapterArgs;
use crate::cli::cache_types::CacheTypeArgs;
use crate::device::{BackendJob, DeviceArgs, with_backend};
use crate::engine::kv_cache::KvCache;
use crate::engine::{Completion, Detokenizer, Engine, GenerationConfig};
use crate::model::Model;

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// A Hugging Face model directory, a GGUF file (F32/F16/BF16) or an r1 checkpoint.
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    prompt: String,
    /// Send the prompt as one user message through the model's chat template (r1's
    /// default template for a model without one).
    #[arg(long)]
    chat: bool,
    /// Completions to sample (they share the prompt's prefill); at least 1.
    #[arg(short, long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    n: usize,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Stop after this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    adapter: AdapterArgs,
    #[command(flatten)]
    cache: CacheTypeArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let device = args.device.clone();
    with_backend(&device, args)
}

impl BackendJob for GenerateArgs {
    type Output = ();

    fn run<B: Backend>(self, backend: &B) -> anyhow::Result<()>
    where
        B::Buffer: Send + Sync,
    {
        let model = self.adapter.load(backend, &self.model)?;
        if !model.params.stored.is_empty() {
            eprintln!(
                "weights: {} bytes resident ({} of them kept quantized, f32 would take {})",
                model.resident_weight_bytes(),
                model.params.stored.len(),
                model.config.num_params().saturating_mul(4)
            );
        }
        let types = self.cache.types();
        let per_token = KvCache::<B>::bytes_per_token_for(&model.config, types)?;
        eprintln!(
            "kv cache: {types}: {per_token} bytes per token ({} layers)",
            model.config.num_hidden_layers
        );
        let prompt = if self.chat {
            let template = template_for_model(&self.model, model.text_tokenizer()?, &model.config)?;
            let message = serde_json::json!({"role": "user", "content": self.prompt});
            let options = RenderOptions {
                add_generation_prompt: true,
                ..Default::default()
            };
            model.encode(&template.render(&[message], &options)?)?
        } else {
            model.encode(&self.prompt)?
        };
        let completions = sample(backend, &model, &prompt, &self)?;
        if self.json {
            crate::outln!("{}", serde_json::to_string_pretty(&completions)?)?;
        } else {
            print_completions(&completions)?;
        }
        Ok(())
    }
}

/// Samples the completions, streaming the first to stdout when it is the only one and
/// the output is text.
fn sample<B: Backend>(
    backend: &B,
    model: &Model<B>,
    prompt: &[u32],
    args: &GenerateArgs,
) -> anyhow::Result<Vec<Completion>> {
    let generation = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repetition_penalty: args.repetition_penalty,
            ..Default::default()
        },
        stop: args.stop.clone(),
    };
    let mut engine = Engine::with_cache_types(model.config.clone(), args.cache.types());
    let mut rng = Rng::new(args.seed);
    let stream = !args.json && args.n == 1;
    let mut shown = 0usize;
    let mut so_far: Vec<u32> = Vec::new();
    // The callback cannot return an error: the first failed write (a closed stdout) is
    // kept, streaming stops, and the error is returned once generation ends.
    let mut write_error: Option<std::io::Error> = None;
    let completions = engine.generate(
        backend,
        &model.params,
        &model.tokenizer,
        prompt,
        args.n,
        &generation,
        &mut rng,
        |row, tok| {
            if stream && row == 0 && write_error.is_none() {
                so_far.push(tok);
                let text = Detokenizer::decode(&model.tokenizer, &so_far);
                // Print only complete characters; the rest follows with the next token.
                if let Some(new) = text.get(shown..).filter(|s| !s.ends_with('\u{FFFD}')) {
                    write_error = crate::out!("{new}").err();
                    shown = text.len();
                }
            }
        },
    )?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    if stream {
        crate::outln!()?;
    }
    Ok(completions)
}

fn print_completions(completions: &[Completion]) -> std::io::Result<()> {
    for (i, c) in completions.iter().enumerate() {
        crate::outln!(
            "--- completion {} ({} tokens, {:?}) ---",
            i + 1,
            c.tokens.len(),
            c.finish_reason
        )?;
        match &c.reasoning {
            Some(r) => crate::outln!("reasoning: {r}")?,
            None => crate::outln!("reasoning: (none)")?,
        }
        crate::outln!("answer: {}", c.answer)?;
    }
    Ok(())
}
