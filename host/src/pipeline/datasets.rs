//! A recipe's data: the cold-start examples, the training prompts and the held-out
//! prompts — generated for the bundled arithmetic task or read from JSONL — and their
//! tokenized forms for the model a stage trains.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Context;
use r1_core::backend::Backend;
use r1_core::reward::Sample;

use crate::io::{DatasetFields, read_jsonl};
use crate::model::Model;
use crate::pipeline::recipe::{DataSpec, Recipe};
use crate::task::{ArithmeticTask, Problem};
use crate::train::grpo::GrpoPrompt;
use crate::train::sft::SftExample;

/// Prompts, references and worked examples for a recipe.
pub struct Datasets {
    /// `(prompt, completion)` pairs for the cold start.
    pub cold_start: Vec<(String, String)>,
    pub train: Vec<Sample>,
    pub eval: Vec<Sample>,
}

/// Builds the recipe's datasets.
pub fn load_datasets(recipe: &Recipe) -> anyhow::Result<Datasets> {
    match &recipe.data {
        DataSpec::Arithmetic {
            min_digits,
            max_digits,
            cold_start,
            train_prompts,
            eval_prompts,
        } => {
            if *min_digits == 0 || max_digits < min_digits || *max_digits > 9 {
                anyhow::bail!("[data]: digits must satisfy 1 <= min_digits <= max_digits <= 9");
            }
            let task = ArithmeticTask {
                min_digits: *min_digits,
                max_digits: *max_digits,
            };
            let distinct = task.distinct_problems();
            let wanted = [*eval_prompts, *cold_start, *train_prompts]
                .iter()
                .fold(0u64, |a, &n| a.saturating_add(n as u64));
            if wanted > distinct {
                anyhow::bail!(
                    "[data]: eval_prompts + cold_start + train_prompts = {wanted} exceeds the {distinct} distinct \
                     problems of {min_digits}..{max_digits}-digit additions"
                );
            }
            let seed = recipe.seed;
            // Held-out problems first, so no training set ever contains them.
            let eval = task.generate(seed.wrapping_add(1000), *eval_prompts, &HashSet::new());
            let mut used: HashSet<(u64, u64)> = eval.iter().map(|p| (p.a, p.b)).collect();
            let cold = task.generate(seed.wrapping_add(2000), *cold_start, &used);
            used.extend(cold.iter().map(|p| (p.a, p.b)));
            let train = task.generate(seed.wrapping_add(3000), *train_prompts, &used);
            Ok(Datasets {
                cold_start: cold.iter().map(|p| (p.prompt.clone(), p.solution.clone())).collect(),
                train: train.iter().map(problem_sample).collect(),
                eval: eval.iter().map(problem_sample).collect(),
            })
        }
        DataSpec::Jsonl { sft, prompts, eval } => {
            let cold_start = match sft {
                Some(p) => read_sft_pairs(p)?,
                None => Vec::new(),
            };
            Ok(Datasets {
                cold_start,
                train: read_prompt_samples(prompts)?,
                eval: match eval {
                    Some(p) => read_prompt_samples(p)?,
                    None => Vec::new(),
                },
            })
        }
    }
}

/// A generated problem as a prompt with its reference answer.
fn problem_sample(p: &Problem) -> Sample {
    Sample {
        prompt: p.prompt.clone(),
        completion: String::new(),
        reference: Some(p.answer.clone()),
        metadata: Vec::new(),
    }
}

/// `{"prompt","answer"}` rows as samples to complete.
fn read_prompt_samples(path: &Path) -> anyhow::Result<Vec<Sample>> {
    Ok(read_jsonl(path, &DatasetFields::grpo())?
        .into_iter()
        .map(|r| Sample {
            prompt: r.prompt,
            completion: String::new(),
            reference: Some(r.target),
            metadata: r.metadata,
        })
        .collect())
}

/// `{"prompt","completion"}` rows (a cold start, or a stage's accepted samples).
pub(super) fn read_sft_pairs(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    Ok(read_jsonl(path, &DatasetFields::sft())?
        .into_iter()
        .map(|r| (r.prompt, r.target))
        .collect())
}

/// The samples' prompts tokenized for `model`.
pub(super) fn encode_prompts<B: Backend>(model: &Model<B>, samples: &[Sample]) -> anyhow::Result<Vec<GrpoPrompt>> {
    samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let tokens = model.encode(&s.prompt).with_context(|| format!("prompt {i}"))?;
            Ok(GrpoPrompt {
                sample: s.clone(),
                tokens,
            })
        })
        .collect()
}

/// `(prompt, completion)` pairs tokenized for `model`, each completion ending with EOS.
pub(super) fn sft_examples<B: Backend>(
    model: &Model<B>,
    pairs: &[(String, String)],
) -> anyhow::Result<Vec<SftExample>> {
    let eos = model.tokenizer.eos_id();
    pairs
        .iter()
        .map(|(p, c)| {
            let mut completion = model.encode(c)?;
            completion.push(eos);
            Ok(SftExample {
                prompt: model.encode(p)?,
                completion,
            })
        })
        .collect()
}
