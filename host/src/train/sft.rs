//! Supervised fine-tuning: next-token cross-entropy on prompt/completion pairs with the
//! loss on completion tokens only — the R1 cold start, the SFT after rejection sampling,
//! and distillation of a teacher's traces.
//!
//! The loss of an optimizer step is the mean over every completion token of its
//! micro-batches (`transformers`' `num_items_in_batch` normalisation), so gradient
//! accumulation gives the same update as one big batch.

use std::collections::HashMap;
use std::time::Instant;

use r1_core::backend::Backend;
use r1_core::model::ModelConfig;
use r1_core::sampling::Rng;

use crate::train::expert_balance::ExpertBalance;
use crate::train::lm_graph::{Checkpointing, Feed, LmGraph, LmGraphError, Objective, dropout_seed};
use crate::train::optim::{AdamW, NonFiniteStep, OptimConfig, OptimError};
use crate::weights::ParamBuffer;

/// SFT settings, under TRL `SFTConfig` / `TrainingArguments` names where they exist.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftConfig {
    pub optim: OptimConfig,
    pub per_device_train_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub num_train_epochs: f32,
    /// Overrides `num_train_epochs` when set.
    pub max_steps: Option<usize>,
    /// Longer examples are cut (completion tokens dropped from the end).
    pub max_seq_length: usize,
    /// Sequences are padded to a multiple of this (fewer distinct graph shapes).
    pub pad_to_multiple_of: usize,
    pub seed: u64,
    /// Recompute decoder layers in the backward pass instead of keeping their activations
    /// from the forward pass (TrainingArguments' name): less memory, the same gradients,
    /// one more forward pass through the recomputed layers.
    pub gradient_checkpointing: bool,
    /// How many decoder layers, from the first, `gradient_checkpointing` recomputes (all
    /// when unset).
    pub gradient_checkpointing_layers: Option<usize>,
}

impl Default for SftConfig {
    fn default() -> Self {
        SftConfig {
            optim: OptimConfig::default(),
            per_device_train_batch_size: 8,
            gradient_accumulation_steps: 1,
            num_train_epochs: 1.0,
            max_steps: None,
            max_seq_length: 512,
            pad_to_multiple_of: 16,
            seed: 42,
            gradient_checkpointing: false,
            gradient_checkpointing_layers: None,
        }
    }
}

/// One tokenized training example. `completion` ends with the EOS token when the model
/// should learn to stop.
#[derive(Clone, Debug, PartialEq)]
pub struct SftExample {
    pub prompt: Vec<u32>,
    pub completion: Vec<u32>,
}

/// Metrics of one optimizer step (written to `metrics.jsonl`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SftStepMetrics {
    pub step: usize,
    pub epoch: f64,
    pub loss: f64,
    pub learning_rate: f32,
    pub grad_norm: f64,
    /// Completion tokens the loss was averaged over.
    pub num_tokens: usize,
    pub tokens_per_second: f64,
    pub step_time: f64,
}

/// Errors of SFT.
#[derive(Debug, thiserror::Error)]
pub enum SftError {
    #[error("invalid SFT config: {0}")]
    Config(String),
    #[error("example {index}: {detail}")]
    Example { index: usize, detail: String },
    #[error("the training set is empty")]
    Empty,
    #[error(transparent)]
    Weights(#[from] crate::weights::WeightsError),
    #[error(transparent)]
    Graph(#[from] LmGraphError),
    #[error(transparent)]
    Backend(#[from] r1_core::BackendError),
    #[error(transparent)]
    NonFinite(#[from] NonFiniteStep),
    #[error("stopped: {0}")]
    Stopped(String),
}

impl From<OptimError> for SftError {
    fn from(e: OptimError) -> Self {
        match e {
            OptimError::Backend(e) => SftError::Backend(e),
            OptimError::NonFinite(e) => SftError::NonFinite(e),
        }
    }
}

impl SftConfig {
    pub fn validate(&self) -> Result<(), SftError> {
        self.optim.validate().map_err(SftError::Config)?;
        if self.per_device_train_batch_size == 0 || self.gradient_accumulation_steps == 0 {
            return Err(SftError::Config(
                "batch size and gradient_accumulation_steps must be positive".into(),
            ));
        }
        if self.max_seq_length < 2 || self.pad_to_multiple_of == 0 {
            return Err(SftError::Config(
                "max_seq_length must be >= 2 and pad_to_multiple_of positive".into(),
            ));
        }
        if !(self.num_train_epochs.is_finite() && self.num_train_epochs > 0.0) && self.max_steps.is_none() {
            return Err(SftError::Config("num_train_epochs must be positive".into()));
        }
        Ok(())
    }

    /// Optimizer steps for a dataset of `n` examples.
    pub fn total_steps(&self, n: usize) -> usize {
        if let Some(s) = self.max_steps {
            return s;
        }
        let per_step = self.per_device_train_batch_size * self.gradient_accumulation_steps;
        ((n as f64 * self.num_train_epochs as f64) / per_step as f64)
            .ceil()
            .max(1.0) as usize
    }
}

/// Packs examples into one padded `[B, T]` micro-batch: ids, next-token targets (−1
/// where no loss: prompt, padding) and the number of target tokens.
pub fn pack_batch(examples: &[&SftExample], seq: usize, pad_id: u32) -> (Vec<i32>, Vec<i32>, usize) {
    let b = examples.len();
    let mut ids = vec![pad_id as i32; b * seq];
    let mut targets = vec![-1i32; b * seq];
    let mut count = 0;
    for (r, ex) in examples.iter().enumerate() {
        let toks: Vec<u32> = ex
            .prompt
            .iter()
            .chain(ex.completion.iter())
            .copied()
            .take(seq + 1)
            .collect();
        for (t, &tok) in toks.iter().take(seq).enumerate() {
            ids[r * seq + t] = tok as i32;
        }
        // Position t predicts token t+1; completion tokens start at prompt.len().
        for t in 0..toks.len().saturating_sub(1).min(seq) {
            if t + 1 >= ex.prompt.len() {
                targets[r * seq + t] = toks[t + 1] as i32;
                count += 1;
            }
        }
    }
    (ids, targets, count)
}

/// Runs SFT on `params` in place. `on_step` sees each step's metrics and may stop the run
/// by returning an error message.
pub fn train_sft<B: Backend>(
    backend: &B,
    cfg: &ModelConfig,
    params: &ParamBuffer<B>,
    examples: &[SftExample],
    sft: &SftConfig,
    pad_id: u32,
    mut on_step: impl FnMut(&SftStepMetrics) -> Result<(), String>,
) -> Result<Vec<SftStepMetrics>, SftError> {
    sft.validate()?;
    params.check_trainable("SFT training")?;
    if examples.is_empty() {
        return Err(SftError::Empty);
    }
    for (i, ex) in examples.iter().enumerate() {
        if ex.prompt.len() >= sft.max_seq_length {
            return Err(SftError::Example {
                index: i,
                detail: format!(
                    "prompt of {} tokens leaves no room in max_seq_length {}",
                    ex.prompt.len(),
                    sft.max_seq_length
                ),
            });
        }
        if ex.completion.is_empty() {
            return Err(SftError::Example {
                index: i,
                detail: "empty completion".into(),
            });
        }
        if let Some(&t) = ex
            .prompt
            .iter()
            .chain(&ex.completion)
            .find(|&&t| t as usize >= cfg.vocab_size)
        {
            return Err(SftError::Example {
                index: i,
                detail: format!("token id {t} >= vocab_size {}", cfg.vocab_size),
            });
        }
    }
    let total = sft.total_steps(examples.len());
    let mut opt = AdamW::new(backend, &params.layout, sft.optim.clone())?;
    let mut balance = ExpertBalance::new(sft.optim.bias_update_speed);
    let mut graphs: HashMap<(usize, usize), LmGraph<B>> = HashMap::new();
    let types = params.weight_types();
    let mut rng = Rng::new(sft.seed);
    let mut order: Vec<usize> = Vec::new();
    let mut cursor = 0usize;
    let mut seen = 0usize;
    // `total` comes from the user's epochs or max_steps: a loop bound, never a reservation.
    let mut history = Vec::new();
    let bs = sft.per_device_train_batch_size;

    for step in 0..total {
        let started = Instant::now();
        // Gather this step's micro-batches (reshuffling at each epoch boundary).
        let mut micro: Vec<Vec<usize>> = Vec::with_capacity(sft.gradient_accumulation_steps);
        for _ in 0..sft.gradient_accumulation_steps {
            let mut mb = Vec::with_capacity(bs);
            while mb.len() < bs {
                if cursor == order.len() {
                    order = (0..examples.len()).collect();
                    for i in (1..order.len()).rev() {
                        order.swap(i, rng.below(i as u64 + 1) as usize);
                    }
                    cursor = 0;
                }
                mb.push(order[cursor]);
                cursor += 1;
            }
            micro.push(mb);
        }
        let packed: Vec<(Vec<i32>, Vec<i32>, usize, usize)> = micro
            .iter()
            .map(|mb| {
                let exs: Vec<&SftExample> = mb.iter().map(|&i| &examples[i]).collect();
                let longest = exs
                    .iter()
                    .map(|e| e.prompt.len() + e.completion.len())
                    .max()
                    .unwrap_or(1);
                let seq = (longest.min(sft.max_seq_length + 1) - 1)
                    .max(1)
                    .div_ceil(sft.pad_to_multiple_of)
                    * sft.pad_to_multiple_of;
                let seq = seq.min(sft.max_seq_length);
                let (ids, targets, count) = pack_batch(&exs, seq, pad_id);
                (ids, targets, count, seq)
            })
            .collect();
        let tokens: usize = packed.iter().map(|p| p.2).sum();
        let inv = 1.0 / tokens.max(1) as f32;
        let mut loss = 0.0f64;
        for (k, (ids, targets, _, seq)) in packed.iter().enumerate() {
            let key = (bs, *seq);
            if let std::collections::hash_map::Entry::Vacant(e) = graphs.entry(key) {
                e.insert(LmGraph::for_training(
                    backend,
                    cfg,
                    &types,
                    bs,
                    *seq,
                    Objective::CrossEntropy,
                    Checkpointing::from_settings(sft.gradient_checkpointing, sft.gradient_checkpointing_layers),
                )?);
            }
            let graph = graphs
                .get_mut(&key)
                .ok_or_else(|| SftError::Stopped("graph cache".into()))?;
            let weights: Vec<f32> = targets.iter().map(|&t| if t >= 0 { inv } else { 0.0 }).collect();
            graph.set_dropout_seed(backend, dropout_seed(&[sft.seed, step as u64, k as u64]))?;
            let (out, _) = graph.forward(
                backend,
                params,
                &Feed {
                    ids,
                    targets,
                    weights: Some(&weights),
                },
            )?;
            loss += out.first().copied().unwrap_or(f32::NAN) as f64;
            if let Some(b) = balance.as_mut() {
                b.observe(graph, backend, params, targets)?;
            }
            graph.backward(backend, params, None)?;
            graph.for_each_grad(params, |i, g| opt.accumulate(backend, i, g, k == 0))?;
        }
        let lr = sft.optim.lr_at(step, total);
        let stats = opt.step(backend, params, lr, 1.0, loss)?;
        if let Some(b) = balance.as_mut() {
            b.update(backend, params)?;
        }
        seen += micro.iter().map(Vec::len).sum::<usize>();
        let secs = started.elapsed().as_secs_f64();
        let m = SftStepMetrics {
            step: step + 1,
            epoch: seen as f64 / examples.len() as f64,
            loss,
            learning_rate: lr,
            grad_norm: stats.grad_norm,
            num_tokens: tokens,
            tokens_per_second: packed.iter().map(|p| p.0.len()).sum::<usize>() as f64 / secs.max(1e-9),
            step_time: secs,
        };
        on_step(&m).map_err(SftError::Stopped)?;
        history.push(m);
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_targets_cover_exactly_the_completion() {
        let ex = SftExample {
            prompt: vec![1, 2, 3],
            completion: vec![4, 5],
        };
        let (ids, targets, n) = pack_batch(&[&ex], 6, 0);
        assert_eq!(ids, vec![1, 2, 3, 4, 5, 0]);
        // Position 2 (token 3) predicts 4, position 3 predicts 5; nothing else.
        assert_eq!(targets, vec![-1, -1, 4, 5, -1, -1]);
        assert_eq!(n, 2);
    }

    #[test]
    fn truncation_keeps_the_prompt_and_cuts_the_completion() {
        let ex = SftExample {
            prompt: vec![1, 2],
            completion: vec![3, 4, 5, 6],
        };
        let (ids, targets, n) = pack_batch(&[&ex], 4, 0);
        assert_eq!(ids, vec![1, 2, 3, 4]);
        assert_eq!(targets, vec![-1, 3, 4, 5]);
        assert_eq!(n, 3);
    }

    #[test]
    fn steps_follow_epochs_and_accumulation() {
        let c = SftConfig {
            per_device_train_batch_size: 4,
            gradient_accumulation_steps: 2,
            num_train_epochs: 2.0,
            ..Default::default()
        };
        assert_eq!(c.total_steps(20), 5);
    }
}
