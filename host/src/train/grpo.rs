//! The GRPO trainer (Group Relative Policy Optimization, DeepSeekMath / DeepSeek-R1),
//! step for step as TRL's `GRPOTrainer` does it: sample G completions per prompt,
//! score them with every reward (rule rewards in-process and WASM plugins alike, in
//! parallel), turn the rewards into group-normalised advantages, score the completion
//! tokens under the policy (and the old policy and frozen reference when needed) with the
//! logits divided by the sampling temperature, take the clipped policy-gradient loss and
//! its gradient w.r.t. each log-prob from `r1_core::grpo`, back-propagate it through the
//! model graph and update with AdamW.
//!
//! Generation ("rollouts"), scoring and the update are separate functions passing plain
//! data, so each can later move to another process or machine.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Instant;

use r1_core::backend::Backend;
use r1_core::grpo::{Advantages, GrpoConfig, LossInputs, LossType, policy_loss};
use r1_core::model::{KvCacheType, KvCacheTypes, ModelConfig};
use r1_core::reward::{Reward, RewardError, Sample, Score};
use r1_core::sampling::{Rng, SamplingParams};
use rayon::prelude::*;

use crate::engine::{
    Completion, DEFAULT_GENERATION_KV_MIB, Detokenizer, Engine, EngineError, FinishReason, GenerationConfig,
    PromptGroup, completion_from_tokens,
};
use crate::plugin::{OnRewardError, RewardFailures};
use crate::train::dist::{self, Collective, CollectiveError, ReduceError};
use crate::train::expert_balance::ExpertBalance;
use crate::train::lm_graph::{Checkpointing, Feed, LmGraph, LmGraphError, Objective, dropout_seed, seed_of};
use crate::train::metrics::{GrpoStepMetrics, PerRewardMetrics, RewardStepMetrics};
use crate::train::optim::{AdamW, NonFiniteQuantity, NonFiniteStep, OptimConfig, OptimError};
use crate::train::remote::{GroupRequest, RemoteRollouts, RolloutConfig, RolloutError, WeightsPayload};
use crate::weights::ParamBuffer;

mod data_parallel;
use data_parallel::BatchFigures;
pub use data_parallel::check_supported as check_data_parallel;

/// GRPO stage settings. `grpo` holds TRL's `GRPOConfig` loss/advantage fields (beta,
/// epsilon, epsilon_high, delta, loss_type, scale_rewards, num_generations,
/// max_completion_length, reward_weights, …); the rest are TRL's trainer and generation
/// names where one exists.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoTrainConfig {
    pub grpo: GrpoConfig,
    pub optim: OptimConfig,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub min_p: f32,
    pub repetition_penalty: f32,
    /// Completions per micro-batch (a multiple of `num_generations` is not required).
    pub per_device_train_batch_size: usize,
    /// Micro-batches per optimizer step.
    pub gradient_accumulation_steps: usize,
    /// Micro-batches generated at once (defaults to `gradient_accumulation_steps`).
    pub steps_per_generation: Option<usize>,
    /// Optimizer passes over each generated batch (μ in the GRPO paper).
    pub num_iterations: usize,
    /// Truncated completions (no EOS within the budget) get no loss.
    pub mask_truncated_completions: bool,
    /// DAPO dynamic sampling: drop groups whose rewards have no spread and sample more.
    pub dynamic_sampling: bool,
    /// Extra generation rounds dynamic sampling may spend per step.
    pub max_resample_rounds: usize,
    pub on_reward_error: OnRewardError,
    /// What the rollouts' KV cache stores keys as (llama.cpp's `--cache-type-k` names:
    /// f32, f16, bf16, q8_0, q4_0). Only sampling reads the cache: the loss, old-policy
    /// and reference log-probs are computed in f32 by the training graph.
    pub cache_type_k: KvCacheType,
    /// What the rollouts' KV cache stores values as.
    pub cache_type_v: KvCacheType,
    /// Optimizer steps of this stage.
    pub max_steps: usize,
    pub seed: u64,
    /// Recompute decoder layers in the backward pass instead of keeping their activations
    /// from the forward pass (TrainingArguments' name): less memory, the same gradients,
    /// one more forward pass through the recomputed layers.
    pub gradient_checkpointing: bool,
    /// How many decoder layers, from the first, `gradient_checkpointing` recomputes (all
    /// when unset).
    pub gradient_checkpointing_layers: Option<usize>,
    /// Memory the rollouts' KV cache may take, in MiB: generation runs as many
    /// completions at once as it holds (at most 64; never fewer than one group).
    pub generation_kv_cache_mib: usize,
    /// Generate on remote OpenAI-compatible servers instead of in process
    /// (`[stages.grpo.rollout]`, see [`crate::train::remote`]).
    pub rollout: Option<RolloutConfig>,
}

impl Default for GrpoTrainConfig {
    fn default() -> Self {
        GrpoTrainConfig {
            grpo: GrpoConfig::default(),
            optim: OptimConfig {
                learning_rate: 1e-6,
                max_grad_norm: 1.0,
                ..OptimConfig::default()
            },
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            per_device_train_batch_size: 8,
            gradient_accumulation_steps: 1,
            steps_per_generation: None,
            num_iterations: 1,
            mask_truncated_completions: false,
            dynamic_sampling: false,
            max_resample_rounds: 3,
            on_reward_error: OnRewardError::Fail,
            cache_type_k: KvCacheType::F32,
            cache_type_v: KvCacheType::F32,
            max_steps: 100,
            seed: 42,
            gradient_checkpointing: false,
            gradient_checkpointing_layers: None,
            generation_kv_cache_mib: DEFAULT_GENERATION_KV_MIB,
            rollout: None,
        }
    }
}

impl GrpoTrainConfig {
    /// The rollouts' KV cache types.
    pub fn cache_types(&self) -> KvCacheTypes {
        KvCacheTypes {
            k: self.cache_type_k,
            v: self.cache_type_v,
        }
    }

    pub fn steps_per_generation(&self) -> usize {
        self.steps_per_generation.unwrap_or(self.gradient_accumulation_steps)
    }

    /// Completions generated per generation round.
    pub fn generation_batch(&self) -> usize {
        self.per_device_train_batch_size * self.steps_per_generation()
    }

    pub fn sampling(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            ..Default::default()
        }
    }

    pub fn validate(&self) -> Result<(), GrpoTrainError> {
        let bad = |m: String| Err(GrpoTrainError::Config(m));
        self.grpo
            .validate()
            .map_err(|e| GrpoTrainError::Config(e.to_string()))?;
        self.optim.validate().map_err(GrpoTrainError::Config)?;
        self.sampling()
            .validate()
            .map_err(|e| GrpoTrainError::Config(e.to_string()))?;
        if self.temperature.is_nan() || self.temperature <= 0.0 {
            return bad("temperature must be positive for GRPO (log-probs are taken at that temperature)".into());
        }
        if let Some(r) = &self.rollout {
            r.validate().map_err(GrpoTrainError::Config)?;
        }
        let g = self.grpo.num_generations;
        if self.per_device_train_batch_size == 0 || self.gradient_accumulation_steps == 0 || self.num_iterations == 0 {
            return bad(
                "per_device_train_batch_size, gradient_accumulation_steps and num_iterations must be positive".into(),
            );
        }
        if !self
            .steps_per_generation()
            .is_multiple_of(self.gradient_accumulation_steps)
        {
            return bad(format!(
                "steps_per_generation ({}) must be a multiple of gradient_accumulation_steps ({})",
                self.steps_per_generation(),
                self.gradient_accumulation_steps
            ));
        }
        if g < 2 || !self.generation_batch().is_multiple_of(g) {
            return bad(format!(
                "num_generations ({g}) must be at least 2 and divide the generation batch (per_device_train_batch_size × steps_per_generation = {})",
                self.generation_batch()
            ));
        }
        Ok(())
    }

    /// Whether the completions must be scored under the policy that sampled them (the
    /// policy moves between generation and some of its updates).
    fn needs_old_logp(&self) -> bool {
        self.num_iterations > 1 || self.steps_per_generation() > self.gradient_accumulation_steps
    }
}

/// A prompt of the training set: the text the rewards see and its tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct GrpoPrompt {
    pub sample: Sample,
    pub tokens: Vec<u32>,
}

/// A reward with the name it is logged under.
#[derive(Clone)]
pub struct NamedReward {
    pub name: String,
    pub reward: Arc<dyn Reward>,
}

/// Errors of GRPO training.
#[derive(Debug, thiserror::Error)]
pub enum GrpoTrainError {
    #[error("invalid GRPO config: {0}")]
    Config(String),
    #[error("{weights} reward_weights for {rewards} rewards")]
    RewardWeights { weights: usize, rewards: usize },
    #[error("the prompt set is empty")]
    NoPrompts,
    #[error("prompt {index}: {detail}")]
    Prompt { index: usize, detail: String },
    #[error(transparent)]
    Reward(#[from] RewardError),
    #[error("GRPO math: {0}")]
    Grpo(#[from] r1_core::grpo::GrpoError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Weights(#[from] crate::weights::WeightsError),
    #[error(transparent)]
    Graph(#[from] LmGraphError),
    #[error(transparent)]
    Backend(#[from] r1_core::BackendError),
    #[error(transparent)]
    NonFinite(#[from] NonFiniteStep),
    #[error("dynamic sampling found no group with reward spread in {rounds} generation rounds")]
    NoRewardSpread { rounds: usize },
    #[error("held-out prompt {index}: the engine returned no completion")]
    NoCompletion { index: usize },
    #[error("stopped: {0}")]
    Stopped(String),
    #[error("data-parallel GRPO over {size} processes: {detail}")]
    DataParallel { size: usize, detail: String },
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    #[error(transparent)]
    Reduce(#[from] ReduceError),
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    #[error("pushing the weights to the rollout servers: {0}")]
    WeightSync(String),
}

impl From<OptimError> for GrpoTrainError {
    fn from(e: OptimError) -> Self {
        match e {
            OptimError::Backend(e) => GrpoTrainError::Backend(e),
            OptimError::NonFinite(e) => GrpoTrainError::NonFinite(e),
        }
    }
}

/// One scored completion of a rollout.
#[derive(Clone, Debug)]
pub struct Rollout {
    pub prompt_index: usize,
    pub prompt_tokens: Vec<u32>,
    pub completion: Completion,
    /// Tokens the loss sees: the completion plus EOS when it ended with one.
    pub loss_tokens: Vec<u32>,
    /// One score per reward (NaN = not applicable).
    pub rewards: Vec<f32>,
    pub advantage: f32,
}

/// The trainer's resumable state besides weights and optimizer moments.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GrpoState {
    /// Optimizer steps done in this stage.
    pub step: usize,
    pub rng: Rng,
    pub order: Vec<usize>,
    pub cursor: usize,
    pub failures: Vec<(String, u64, u64)>,
}

/// The GRPO trainer of one stage.
pub struct GrpoTrainer<B: Backend> {
    pub config: GrpoTrainConfig,
    pub model: ModelConfig,
    pub optimizer: AdamW<B>,
    /// The frozen reference model (when β ≠ 0): a copy of the weights as the stage starts,
    /// or, when training a LoRA adapter, the base under it (shared, never copied).
    pub reference: Option<Arc<ParamBuffer<B>>>,
    pub rewards: Vec<NamedReward>,
    pub state: GrpoState,
    failures: Vec<RewardFailures>,
    engine: Engine<B>,
    /// Scoring graphs by `(rows, seq, the policy's or the reference's)`.
    graphs: HashMap<(usize, usize, Scored), LmGraph<B>>,
    prompts: Vec<GrpoPrompt>,
    /// DeepSeek-V3's router-bias balancing (`optim.bias_update_speed` > 0).
    balance: Option<ExpertBalance>,
    /// The processes training together ([`dist::world`]; one by default).
    world: &'static dyn Collective,
    /// The rollout servers (`config.rollout`), connected at the first generation.
    remote: Option<RemoteRollouts>,
    /// The weight version the servers hold (the stage's optimizer step when pushed).
    synced: Option<u64>,
    /// Seconds the last weight push took.
    sync_time: Option<f64>,
}

/// Rows of one micro-batch packed for the scoring graph.
struct Packed {
    ids: Vec<i32>,
    targets: Vec<i32>,
    /// Per row: the position of completion token 0 (prompt length − 1).
    starts: Vec<usize>,
    mask: Vec<f32>,
    seq: usize,
}

/// A generation batch ready for the updates (the output of [`GrpoTrainer::prepare`]).
struct PreparedBatch {
    /// The scored rollouts, each with its advantage.
    rollouts: Vec<Rollout>,
    advantages: Advantages,
    /// Rollout indices of each micro-batch this process scores: with one process the
    /// micro-batches themselves, with several its rows cut where the whole batch's
    /// micro-batches end ([`dist::micro_parts`]).
    micro: Vec<Vec<usize>>,
    /// Per entry of `micro`: the micro-batch of the whole batch it lies in.
    micro_of: Vec<usize>,
    /// Per entry of `micro`: the factor that makes its loss its share of its whole
    /// micro-batch's ([`data_parallel::part_scale`]; 1 for a whole micro-batch).
    part_scale: Vec<f32>,
    /// Micro-batches of the whole generation batch (over every process).
    micro_batches: usize,
    /// Active completion tokens of each micro-batch of the whole batch.
    active: Vec<f64>,
    /// The batch's reward and completion figures over every process.
    figures: BatchFigures,
    packed: Vec<Packed>,
    /// Per micro-batch: log-probs `[rows × L]` under the policy that sampled it (when the
    /// policy moves before its last update).
    old: Vec<Option<Vec<f32>>>,
    /// Per micro-batch: log-probs `[rows × L]` under the frozen reference (when β ≠ 0).
    reference: Vec<Option<Vec<f32>>>,
    /// Groups dynamic sampling dropped for want of reward spread.
    dropped_groups: usize,
    /// Seconds spent generating and scoring the batch.
    generation_time: f64,
}

impl<B: Backend> GrpoTrainer<B> {
    pub fn new(
        backend: &B,
        model: ModelConfig,
        params: &ParamBuffer<B>,
        config: GrpoTrainConfig,
        rewards: Vec<NamedReward>,
        prompts: Vec<GrpoPrompt>,
    ) -> Result<Self, GrpoTrainError> {
        config.validate()?;
        let world = dist::world();
        data_parallel::check_supported(&config, world.size())?;
        params.check_trainable("GRPO training")?;
        if prompts.is_empty() {
            return Err(GrpoTrainError::NoPrompts);
        }
        if let Some(w) = &config.grpo.reward_weights
            && w.len() != rewards.len()
        {
            return Err(GrpoTrainError::RewardWeights {
                weights: w.len(),
                rewards: rewards.len(),
            });
        }
        for (i, p) in prompts.iter().enumerate() {
            if p.tokens.is_empty() {
                return Err(GrpoTrainError::Prompt {
                    index: i,
                    detail: "empty prompt".into(),
                });
            }
            if p.tokens.len() + config.grpo.max_completion_length > model.max_position_embeddings {
                return Err(GrpoTrainError::Prompt {
                    index: i,
                    detail: format!(
                        "{} prompt tokens + max_completion_length {} exceed the model's {} positions",
                        p.tokens.len(),
                        config.grpo.max_completion_length,
                        model.max_position_embeddings
                    ),
                });
            }
        }
        let reference = match (&params.base, config.grpo.beta != 0.0) {
            (_, false) => None,
            (Some(base), true) => Some(base.params.clone()),
            (None, true) => Some(Arc::new(copy_params(backend, params)?)),
        };
        let optimizer = AdamW::new(backend, &params.layout, config.optim.clone())?;
        let config_bias_speed = config.optim.bias_update_speed;
        let state = GrpoState {
            step: 0,
            rng: Rng::new(config.seed),
            order: Vec::new(),
            cursor: 0,
            failures: Vec::new(),
        };
        Ok(GrpoTrainer {
            failures: rewards.iter().map(|_| RewardFailures::default()).collect(),
            engine: Engine::with_cache_types(model.clone(), config.cache_types()),
            graphs: HashMap::new(),
            config,
            model,
            optimizer,
            reference,
            rewards,
            state,
            prompts,
            balance: ExpertBalance::new(config_bias_speed),
            world,
            remote: None,
            synced: None,
            sync_time: None,
        })
    }

    /// Next prompt index (reshuffled every pass over the set).
    fn next_prompt(&mut self) -> usize {
        if self.state.cursor >= self.state.order.len() {
            let mut order: Vec<usize> = (0..self.prompts.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, self.state.rng.below(i as u64 + 1) as usize);
            }
            self.state.order = order;
            self.state.cursor = 0;
        }
        let i = self.state.order[self.state.cursor];
        self.state.cursor += 1;
        i
    }

    /// Samples G completions for each `(prompt index, sampling seed)` of `groups`. Each
    /// group samples from its own seed ([`Self::group_seed`]) — `Rng::new(seed)`, one fork
    /// per completion, as a rollout server does with a request's `seed` —, so a group's
    /// completions do not depend on where it is generated (this process, another one, a
    /// server) or on the groups generated before it.
    pub fn generate(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        tok: &dyn Detokenizer,
        groups: &[(usize, u64)],
    ) -> Result<Vec<Rollout>, GrpoTrainError> {
        let g = self.config.grpo.num_generations;
        let generation = GenerationConfig {
            max_new_tokens: self.config.grpo.max_completion_length,
            sampling: self.config.sampling(),
            stop: Vec::new(),
        };
        let eos = tok.eos_id();
        if self.config.rollout.is_some() {
            return self.generate_remote(tok, groups, &generation);
        }
        let max_rows = self.generation_rows()?;
        let prompts = &self.prompts;
        let requests = groups
            .iter()
            .map(|&(pi, seed)| {
                let mut rng = Rng::new(seed);
                PromptGroup {
                    prompt: &prompts[pi].tokens,
                    rngs: (0..g).map(|_| rng.fork()).collect(),
                }
            })
            .collect();
        let completions = self
            .engine
            .generate_many(backend, params, tok, requests, &generation, max_rows)?;
        let mut out = Vec::with_capacity(groups.len() * g);
        for (&(pi, _), group) in groups.iter().zip(completions) {
            for c in group {
                let mut loss_tokens = c.tokens.clone();
                if let (FinishReason::Eos, Some(e)) = (c.finish_reason, eos) {
                    loss_tokens.push(e);
                }
                out.push(Rollout {
                    prompt_index: pi,
                    prompt_tokens: self.prompts[pi].tokens.clone(),
                    completion: c,
                    loss_tokens,
                    rewards: Vec::new(),
                    advantage: 0.0,
                });
            }
        }
        Ok(out)
    }

    /// Rows generation runs at once: as many as `generation_kv_cache_mib` holds at the
    /// longest prompt plus the completion budget (the engine caps them at
    /// [`crate::engine::BATCH_ROWS`] and never goes below one group).
    fn generation_rows(&self) -> Result<usize, GrpoTrainError> {
        let longest = self.prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
        let positions = longest + self.config.grpo.max_completion_length;
        Ok(self
            .engine
            .rows_within(self.config.generation_kv_cache_mib, positions)?)
    }

    /// The sampling seed of group `group` of generation round `round` (dynamic sampling's
    /// extra rounds) of the generation that starts at this step.
    fn group_seed(&self, round: usize, group: usize) -> u64 {
        seed_of(&[self.config.seed, self.state.step as u64, round as u64, group as u64])
    }

    /// [`GrpoTrainer::generate`] on the rollout servers: one request per group, with the
    /// group's seed (the same run draws the same text from the same servers and weights,
    /// and the same text as in-process generation).
    fn generate_remote(
        &mut self,
        tok: &dyn Detokenizer,
        prompt_groups: &[(usize, u64)],
        generation: &GenerationConfig,
    ) -> Result<Vec<Rollout>, GrpoTrainError> {
        let g = self.config.grpo.num_generations;
        let eos = tok.eos_id();
        let groups: Vec<GroupRequest> = prompt_groups
            .iter()
            .map(|&(pi, seed)| GroupRequest {
                prompt: self.prompts[pi].tokens.clone(),
                n: g,
                max_tokens: generation.max_new_tokens,
                sampling: generation.sampling.clone(),
                seed,
            })
            .collect();
        let version = self.state.step as u64;
        let remote = self.remote_client(eos)?;
        let completions = remote.generate(&groups, version)?;
        let mut out = Vec::with_capacity(groups.len() * g);
        for (&(pi, _), group) in prompt_groups.iter().zip(completions) {
            for c in group {
                let completion = completion_from_tokens(tok, c.tokens, c.finish_reason, c.logprobs);
                let mut loss_tokens = completion.tokens.clone();
                if let (FinishReason::Eos, Some(e)) = (completion.finish_reason, eos) {
                    loss_tokens.push(e);
                }
                out.push(Rollout {
                    prompt_index: pi,
                    prompt_tokens: self.prompts[pi].tokens.clone(),
                    completion,
                    loss_tokens,
                    rewards: Vec::new(),
                    advantage: 0.0,
                });
            }
        }
        Ok(out)
    }

    /// The rollout servers, connected on first use.
    fn remote_client(&mut self, eos: Option<u32>) -> Result<&mut RemoteRollouts, GrpoTrainError> {
        if self.remote.is_none() {
            let config = self
                .config
                .rollout
                .clone()
                .ok_or_else(|| GrpoTrainError::Config("no rollout servers configured".into()))?;
            self.remote = Some(RemoteRollouts::connect(config, eos)?);
        }
        self.remote
            .as_mut()
            .ok_or_else(|| GrpoTrainError::Config("no rollout servers configured".into()))
    }

    /// Pushes the policy to the rollout servers when they are due one: at the stage's
    /// first generation (after a resume too) and every `sync_every` optimizer steps. A
    /// LoRA policy sends its base once, then adapters.
    fn sync_weights(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        tok: &dyn Detokenizer,
    ) -> Result<(), GrpoTrainError> {
        let Some(rollout) = &self.config.rollout else {
            return Ok(());
        };
        let every = rollout.sync_every as u64;
        let version = self.state.step as u64;
        let due = every > 0 && self.synced != Some(version) && (self.synced.is_none() || version.is_multiple_of(every));
        if !due {
            return Ok(());
        }
        let sync = |e: &dyn std::fmt::Display| GrpoTrainError::WeightSync(e.to_string());
        let lora = params.lora().copied();
        let needs_base = self.remote_client(tok.eos_id())?.needs_base();
        let mut seconds = 0.0;
        if lora.is_none() || needs_base {
            // The whole model: the policy, or the base under a LoRA adapter (widened to
            // f32 when it is quantized).
            let weights = match &params.base {
                Some(base) => base
                    .params
                    .download_widened(backend, &self.model)
                    .map_err(|e| sync(&e))?,
                None => params.download_all(backend).map_err(|e| sync(&e))?,
            };
            let weights = crate::io::Weights::from_triples(weights);
            let bytes = crate::io::encode_safetensors(&weights.tensors).map_err(|e| sync(&e))?;
            seconds += self
                .remote_client(tok.eos_id())?
                .push(&WeightsPayload::Full(bytes.into()), version)?;
        }
        if let Some(spec) = lora {
            let weights = crate::io::Weights::from_triples(params.download_all(backend).map_err(|e| sync(&e))?).tensors;
            let adapter = crate::io::PeftAdapter {
                spec,
                base_model: None,
                weights,
            };
            let (config, bytes) = crate::io::peft_adapter_parts(&adapter).map_err(|e| sync(&e))?;
            seconds += self.remote_client(tok.eos_id())?.push(
                &WeightsPayload::Adapter {
                    config,
                    bytes: bytes.into(),
                },
                version,
            )?;
        }
        self.synced = Some(version);
        self.sync_time = Some(seconds);
        Ok(())
    }

    /// Scores every group with every reward in parallel, applying `on_reward_error`.
    pub fn score(&mut self, rollouts: &mut [Rollout]) -> Result<(), GrpoTrainError> {
        let g = self.config.grpo.num_generations;
        let groups: Vec<Vec<Sample>> = rollouts
            .chunks(g)
            .map(|grp| {
                grp.iter()
                    .map(|r| {
                        let base = &self.prompts[r.prompt_index].sample;
                        Sample {
                            completion: r.completion.text.clone(),
                            ..base.clone()
                        }
                    })
                    .collect()
            })
            .collect();
        let jobs: Vec<(usize, usize)> = (0..self.rewards.len())
            .flat_map(|k| (0..groups.len()).map(move |gi| (k, gi)))
            .collect();
        let results: Vec<Result<Vec<Score>, RewardError>> = jobs
            .par_iter()
            .map(|&(k, gi)| self.rewards[k].reward.score(&groups[gi]))
            .collect();
        for r in rollouts.iter_mut() {
            r.rewards = vec![f32::NAN; self.rewards.len()];
        }
        for (&(k, gi), result) in jobs.iter().zip(results) {
            let result = match result {
                Ok(s) if s.len() != groups[gi].len() => Err(RewardError {
                    reward: self.rewards[k].name.clone(),
                    sample: None,
                    kind: r1_core::reward::RewardErrorKind::BadOutput(format!(
                        "{} scores for {} samples",
                        s.len(),
                        groups[gi].len()
                    )),
                }),
                other => other,
            };
            let scores = self
                .config
                .on_reward_error
                .apply(groups[gi].len(), result, &mut self.failures[k])?;
            for (j, s) in scores.into_iter().enumerate() {
                rollouts[gi * g + j].rewards[k] = s.as_f32();
            }
        }
        Ok(())
    }

    /// Scoring graph for a micro-batch shape (built on first use).
    fn graph(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        scored: Scored,
        rows: usize,
        seq: usize,
    ) -> Result<&mut LmGraph<B>, GrpoTrainError> {
        scoring_graph(
            &mut self.graphs,
            backend,
            &self.model,
            (params, scored),
            &self.config,
            rows,
            seq,
        )
    }

    /// The LoRA dropout seed of micro-batch `m`'s forward pass at this step: `phase` 0
    /// scores the policy that sampled it, 1 is the pass a gradient flows through.
    fn dropout_seed(&self, m: usize, phase: u64) -> u32 {
        dropout_seed(&[self.config.seed, self.state.step as u64, m as u64, phase])
    }

    /// Whether the reference model is a copy made when the stage started (it is then
    /// saved beside the stage's checkpoints), not the base under a LoRA adapter.
    pub fn reference_is_copy(&self, params: &ParamBuffer<B>) -> bool {
        self.reference.is_some() && params.base.is_none()
    }

    fn pack(&self, rows: &[&Rollout], pad: u32) -> Packed {
        let l = self.config.grpo.max_completion_length;
        let longest = rows
            .iter()
            .map(|r| r.prompt_tokens.len() + r.loss_tokens.len() - 1)
            .max()
            .unwrap_or(1)
            .max(1);
        let seq = longest.div_ceil(16) * 16;
        let n = rows.len();
        let mut ids = vec![pad as i32; n * seq];
        let mut targets = vec![-1i32; n * seq];
        let mut starts = Vec::with_capacity(n);
        let mut mask = vec![0.0f32; n * l];
        for (r, row) in rows.iter().enumerate() {
            let p = row.prompt_tokens.len();
            let full: Vec<u32> = row.prompt_tokens.iter().chain(&row.loss_tokens).copied().collect();
            for (t, &tok) in full.iter().take(seq).enumerate() {
                ids[r * seq + t] = tok as i32;
            }
            starts.push(p - 1);
            let keep =
                !(self.config.mask_truncated_completions && row.completion.finish_reason == FinishReason::Length);
            for (j, &tok) in row.loss_tokens.iter().enumerate().take(l) {
                targets[r * seq + p - 1 + j] = tok as i32;
                if keep {
                    mask[r * l + j] = 1.0;
                }
            }
        }
        Packed {
            ids,
            targets,
            starts,
            mask,
            seq,
        }
    }

    /// Per-completion-token log-probs `[rows × L]` of a packed micro-batch under `params`.
    fn completion_logp(
        &mut self,
        backend: &B,
        (params, scored): (&ParamBuffer<B>, Scored),
        packed: &Packed,
        rows: usize,
        dropout: u32,
    ) -> Result<(Vec<f32>, Vec<f32>), GrpoTrainError> {
        let l = self.config.grpo.max_completion_length;
        let graph = self.graph(backend, params, scored, rows, packed.seq)?;
        graph.set_dropout_seed(backend, dropout)?;
        let (logp, ent) = graph.forward(
            backend,
            params,
            &Feed {
                ids: &packed.ids,
                targets: &packed.targets,
                weights: None,
            },
        )?;
        let ent = ent.unwrap_or_default();
        let mut out = vec![0.0f32; rows * l];
        let mut ent_out = vec![0.0f32; rows * l];
        for r in 0..rows {
            for j in 0..l {
                let pos = packed.starts[r] + j;
                if pos < packed.seq && packed.targets[r * packed.seq + pos] >= 0 {
                    out[r * l + j] = logp[r * packed.seq + pos];
                    ent_out[r * l + j] = ent.get(r * packed.seq + pos).copied().unwrap_or(0.0);
                }
            }
        }
        Ok((out, ent_out))
    }

    /// One generation round and the optimizer steps it feeds — TRL's `GRPOTrainer` step
    /// in its phases: `rollouts` (generate and score), `prepare` (advantages, old and
    /// reference log-probs), then `update` (loss, backward, optimizer) once per optimizer
    /// step (`num_iterations` passes over `steps_per_generation / gradient_accumulation_steps`
    /// steps), stopping at `max_steps`. `on_step` sees each step's report and may stop the run.
    pub fn train_generation(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        tok: &dyn Detokenizer,
        mut on_step: impl FnMut(&GrpoStepReport) -> Result<(), String>,
    ) -> Result<(), GrpoTrainError> {
        let started = Instant::now();
        self.sync_weights(backend, params, tok)?;
        let (rollouts, dropped_groups) = self.rollouts(backend, params, tok)?;
        let batch = self.prepare(backend, params, tok, rollouts, dropped_groups, started)?;
        let steps: Vec<Vec<usize>> = (0..batch.micro_batches)
            .collect::<Vec<_>>()
            .chunks(self.config.gradient_accumulation_steps)
            .map(<[usize]>::to_vec)
            .collect();
        // The parameters the batch was sampled with, until the first optimizer step.
        let mut untouched = true;
        for _iteration in 0..self.config.num_iterations {
            for chunk in &steps {
                if self.state.step >= self.config.max_steps {
                    return Ok(());
                }
                let report = self.update(backend, params, &batch, chunk, untouched)?;
                untouched = false;
                on_step(&report).map_err(GrpoTrainError::Stopped)?;
            }
        }
        Ok(())
    }

    /// Generate and score: `generation_batch / G` prompts, G completions each, scored by
    /// every reward. With DAPO dynamic sampling, groups without reward spread are dropped
    /// and more prompts sampled (up to `max_resample_rounds` extra rounds). Returns the
    /// rollouts and the number of dropped groups.
    fn rollouts(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        tok: &dyn Detokenizer,
    ) -> Result<(Vec<Rollout>, usize), GrpoTrainError> {
        let g = self.config.grpo.num_generations;
        let wanted = self.config.generation_batch() / g;
        let mut rollouts: Vec<Rollout> = Vec::new();
        let mut dropped_groups = 0usize;
        let mut rounds = 0usize;
        loop {
            let need = wanted - rollouts.len() / g;
            // Every process draws the same prompts and generates its share of the groups.
            let idx: Vec<usize> = (0..need).map(|_| self.next_prompt()).collect();
            let share = dist::group_share(need, self.world.rank(), self.world.size());
            let groups: Vec<(usize, u64)> = share.map(|gi| (idx[gi], self.group_seed(rounds, gi))).collect();
            let before = data_parallel::failure_counts(&self.failures);
            let mut fresh = self.generate(backend, params, tok, &groups)?;
            self.score(&mut fresh)?;
            data_parallel::sum_failures(self.world, &mut self.failures, &before)?;
            self.state.failures = self
                .rewards
                .iter()
                .zip(&self.failures)
                .map(|(r, f)| (r.name.clone(), f.groups, f.samples))
                .collect();
            if self.config.dynamic_sampling && rounds < self.config.max_resample_rounds {
                for grp in fresh.chunks(g) {
                    if self.has_reward_spread(grp) {
                        rollouts.extend(grp.iter().cloned());
                    } else {
                        dropped_groups += 1;
                    }
                }
            } else {
                rollouts.extend(fresh);
            }
            rounds += 1;
            if rollouts.len() / g >= wanted || !self.config.dynamic_sampling || rounds > self.config.max_resample_rounds
            {
                break;
            }
        }
        if rollouts.is_empty() {
            return Err(GrpoTrainError::NoRewardSpread { rounds });
        }
        Ok((rollouts, dropped_groups))
    }

    /// Whether a group's combined rewards differ (a group whose completions all score the
    /// same has zero advantages and teaches nothing).
    fn has_reward_spread(&self, group: &[Rollout]) -> bool {
        let combined: Vec<f32> = group.iter().map(|r| self.combined_reward(&r.rewards)).collect();
        let finite: Vec<f32> = combined.iter().copied().filter(|v| v.is_finite()).collect();
        finite.iter().any(|&v| (v - finite[0]).abs() > 1e-6)
    }

    /// Prepare: group-normalised advantages over the whole generation batch, the
    /// micro-batches packed for the scoring graph, and the log-probs that stay fixed
    /// across the updates — under the policy that sampled the batch (when it moves before
    /// the last update) and under the frozen reference (when β ≠ 0).
    fn prepare(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        tok: &dyn Detokenizer,
        mut rollouts: Vec<Rollout>,
        dropped_groups: usize,
        started: Instant,
    ) -> Result<PreparedBatch, GrpoTrainError> {
        let per_reward: Vec<Vec<f32>> = (0..self.rewards.len())
            .map(|k| rollouts.iter().map(|r| r.rewards[k]).collect())
            .collect();
        let refs: Vec<&[f32]> = per_reward.iter().map(|v| v.as_slice()).collect();
        let advantages = self.config.grpo.advantages(&refs)?;
        for (r, &a) in rollouts.iter_mut().zip(&advantages.advantages) {
            r.advantage = a;
        }
        let generation_time = started.elapsed().as_secs_f64();

        let pad = tok.eos_id().unwrap_or(0);
        let (first_row, total_rows) = data_parallel::rows_of_batch(self, rollouts.len());
        let size = self.config.per_device_train_batch_size;
        let parts = dist::micro_parts(first_row, rollouts.len(), size);
        let micro: Vec<Vec<usize>> = parts.iter().map(|p| p.rows.clone().collect()).collect();
        let micro_of: Vec<usize> = parts.iter().map(|p| p.micro).collect();
        let packed: Vec<Packed> = micro
            .iter()
            .map(|mb| self.pack(&mb.iter().map(|&i| &rollouts[i]).collect::<Vec<_>>(), pad))
            .collect();
        let micro_batches = total_rows.div_ceil(size);
        let (active, part_scale) = data_parallel::normalisers(
            self.world,
            self.config.grpo.loss_type,
            (&micro, &packed, &micro_of),
            total_rows,
            size,
        )?;
        let figures = BatchFigures::of(self.world, &rollouts, &advantages)?;
        let mut old: Vec<Option<Vec<f32>>> = vec![None; micro.len()];
        let mut reference: Vec<Option<Vec<f32>>> = vec![None; micro.len()];
        for (m, p) in packed.iter().enumerate() {
            if self.config.needs_old_logp() {
                let dropout = self.dropout_seed(micro_of[m], 0);
                old[m] = Some(
                    self.completion_logp(backend, (params, Scored::Policy), p, micro[m].len(), dropout)?
                        .0,
                );
            }
            if let Some(refp) = self.reference.clone() {
                // The reference has no adapter, so no dropout.
                let scored = (&*refp, Scored::Reference);
                reference[m] = Some(self.completion_logp(backend, scored, p, micro[m].len(), 0)?.0);
            }
        }
        Ok(PreparedBatch {
            rollouts,
            advantages,
            micro,
            micro_of,
            part_scale,
            micro_batches,
            active,
            figures,
            packed,
            old,
            reference,
            dropped_groups,
            generation_time,
        })
    }

    /// Update: one optimizer step over the micro-batches `chunk` of `batch` — each one's
    /// clipped policy loss, its gradient back-propagated through the model and
    /// accumulated — then AdamW. `untouched`: the parameters are still those that sampled
    /// the batch (the trainer/sampler log-prob drift is measured then). With several
    /// processes each scores its parts of those micro-batches, and the summed gradient is
    /// what AdamW (and the gradient-norm clipping) sees (see `data_parallel`).
    fn update(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        batch: &PreparedBatch,
        chunk: &[usize],
        untouched: bool,
    ) -> Result<GrpoStepReport, GrpoTrainError> {
        let step_started = Instant::now();
        let l = self.config.grpo.max_completion_length;
        let token_sum_loss = matches!(self.config.grpo.loss_type, LossType::Dapo | LossType::Cispo);
        let active: f64 = chunk.iter().map(|&m| batch.active[m]).sum();
        let num_items_in_batch = token_sum_loss.then_some(active.max(1.0));
        let mut tally = StepTally::default();
        let mine: Vec<usize> = (0..batch.micro.len())
            .filter(|&p| chunk.contains(&batch.micro_of[p]))
            .collect();
        for (k, &m) in mine.iter().enumerate() {
            let rows = batch.micro[m].len();
            let packed = &batch.packed[m];
            let dropout = self.dropout_seed(batch.micro_of[m], 1);
            let (logp, ent) = self.completion_logp(backend, (params, Scored::Policy), packed, rows, dropout)?;
            if let Some(mut balance) = self.balance.take() {
                let observed = self
                    .graph(backend, params, Scored::Policy, rows, packed.seq)
                    .and_then(|graph| Ok(balance.observe(graph, backend, params, &packed.targets)?));
                self.balance = Some(balance);
                observed?;
            }
            if untouched {
                let rs: Vec<&Rollout> = batch.micro[m].iter().map(|&i| &batch.rollouts[i]).collect();
                tally.add_sampler_drift(&logp, &rs, l, &packed.mask);
            }
            let advantages: Vec<f32> = batch.micro[m].iter().map(|&i| batch.rollouts[i].advantage).collect();
            // Remote sampling: truncated importance weights π_train / π_sampler, the
            // trainer's side taken as the batch was generated (the stored old log-probs,
            // or this step's when the policy has not moved since).
            let is_ratio = match self
                .config
                .rollout
                .as_ref()
                .filter(|r| r.importance_sampling_correction)
            {
                Some(r) => {
                    let rows: Vec<&Rollout> = batch.micro[m].iter().map(|&i| &batch.rollouts[i]).collect();
                    let old = batch.old[m].as_deref().unwrap_or(&logp);
                    let w = importance_weights(old, &rows, l, &packed.mask, r.importance_sampling_cap);
                    tally.add_importance_weights(&w, &packed.mask);
                    Some(w)
                }
                None => None,
            };
            let inputs = LossInputs {
                logp: &logp,
                old_logp: batch.old[m].as_deref(),
                ref_logp: batch.reference[m].as_deref(),
                advantages: &advantages,
                mask: &packed.mask,
                completion_len: l,
                num_items_in_batch,
                is_ratio: is_ratio.as_deref(),
            };
            let mut out = policy_loss(&self.config.grpo, &inputs).map_err(|e| self.diverged(e))?;
            data_parallel::scale_part(&mut out, batch.part_scale[m]);
            self.backward(backend, params, packed, rows, &out.grad_logp, k == 0)?;
            tally.add_micro_batch(&out, &ent, &packed.mask);
        }
        if self.world.size() > 1 {
            dist::all_reduce_gradients(self.world, backend, &self.optimizer.grads, !mine.is_empty())?;
            tally.all_reduce(self.world)?;
        }
        let lr = self.config.optim.lr_at(self.state.step, self.config.max_steps);
        let scale = if token_sum_loss { 1.0 } else { 1.0 / chunk.len() as f32 };
        let stats = self.optimizer.step(backend, params, lr, scale, tally.loss_sum)?;
        if let Some(balance) = self.balance.as_mut() {
            balance.update(backend, params)?;
        }
        self.state.step += 1;
        Ok(tally.finish(self, batch, stats.grad_norm, lr, step_started))
    }

    /// A loss error: the model's log-probabilities (or the loss and its gradient made
    /// from them) turned NaN or infinite is the step diverging, reported as every trainer
    /// reports it ([`NonFiniteStep`]); other errors pass through.
    fn diverged(&self, error: r1_core::grpo::GrpoError) -> GrpoTrainError {
        use r1_core::grpo::GrpoError;
        match error {
            GrpoError::NonFinite { tensor, index, value }
                if matches!(tensor, "logp" | "old_logp" | "ref_logp" | "loss" | "grad_logp") =>
            {
                let quantity = match tensor {
                    "loss" => NonFiniteQuantity::Loss,
                    name => NonFiniteQuantity::Tensor { name, index },
                };
                GrpoTrainError::NonFinite(NonFiniteStep {
                    step: self.state.step as u64 + 1,
                    quantity,
                    value: f64::from(value),
                })
            }
            other => GrpoTrainError::Grpo(other),
        }
    }

    /// Back-propagates `d loss / d logp` (`[rows × L]`, per completion token) through the
    /// scoring graph of `packed` and accumulates the parameter gradients (`first`: the
    /// step's first micro-batch overwrites instead of adding).
    fn backward(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        packed: &Packed,
        rows: usize,
        grad_logp: &[f32],
        first: bool,
    ) -> Result<(), GrpoTrainError> {
        let l = self.config.grpo.max_completion_length;
        let seq = packed.seq;
        // Scatter d loss / d logp back to the graph's positions.
        let mut d = vec![0.0f32; rows * seq];
        for r in 0..rows {
            for j in 0..l {
                let pos = packed.starts[r] + j;
                if pos < seq {
                    d[r * seq + pos] = grad_logp[r * l + j];
                }
            }
        }
        let policy = (params, Scored::Policy);
        let graph = scoring_graph(&mut self.graphs, backend, &self.model, policy, &self.config, rows, seq)?;
        graph.backward(backend, params, Some(&d))?;
        let opt = &self.optimizer;
        graph.for_each_grad(params, |i, gt| opt.accumulate(backend, i, gt, first))?;
        Ok(())
    }

    /// The weighted sum of one completion's rewards (NaN-skipping, as TRL's `nansum`).
    fn combined_reward(&self, rewards: &[f32]) -> f32 {
        let mut sum = 0.0f64;
        let mut any = false;
        for (k, &r) in rewards.iter().enumerate() {
            if r.is_finite() {
                let w = self.config.grpo.reward_weights.as_ref().map_or(1.0, |w| w[k]);
                sum += w * r as f64;
                any = true;
            }
        }
        if any { sum as f32 } else { f32::NAN }
    }

    /// Accuracy of greedy answers on `prompts` judged by `judge` (score ≥ 0.5 is right),
    /// its failures handled by the stage's `on_reward_error`.
    pub fn evaluate(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        tok: &dyn Detokenizer,
        prompts: &[GrpoPrompt],
        judge: &dyn Reward,
    ) -> Result<HeldOutEval, GrpoTrainError> {
        evaluate(
            &mut self.engine,
            backend,
            params,
            tok,
            prompts,
            judge,
            self.config.grpo.max_completion_length,
            self.config.on_reward_error,
        )
    }

    /// Reward failures absorbed by `on_reward_error`, per reward.
    pub fn failures(&self) -> &[RewardFailures] {
        &self.failures
    }

    /// Continues from a saved [`GrpoState`] (a resumed run): step, data order, sampling RNG
    /// and the reward-failure counts, so the resumed metrics continue the same counts.
    pub fn resume_from(&mut self, state: GrpoState) {
        for (name, groups, samples) in &state.failures {
            if let Some(k) = self.rewards.iter().position(|r| &r.name == name) {
                self.failures[k].groups = *groups;
                self.failures[k].samples = *samples;
            }
        }
        self.state = state;
    }
}

/// A held-out evaluation: greedy answers judged by a reward.
#[derive(Clone, Debug)]
pub struct HeldOutEval {
    /// Right answers (score ≥ 0.5) over the answers judged; `None` when there was none to
    /// judge (every score failed and `on_reward_error = "skip"` left them all out).
    pub accuracy: Option<f64>,
    /// Every prompt with its answer, for inspection.
    pub answers: Vec<(String, Completion)>,
    /// Scores that failed and were handled by `on_reward_error` (`zero`: counted wrong;
    /// `skip`: left out of the accuracy).
    pub failures: RewardFailures,
}

/// Accuracy of greedy answers on `prompts` judged by `judge` (a score ≥ 0.5 is right),
/// with the completions for inspection. A failed score goes through `on_reward_error`,
/// the same policy as the training rewards': `fail` stops with the error, `zero` counts
/// the answer wrong, `skip` leaves it out of the accuracy.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<B: Backend>(
    engine: &mut Engine<B>,
    backend: &B,
    params: &ParamBuffer<B>,
    tok: &dyn Detokenizer,
    prompts: &[GrpoPrompt],
    judge: &dyn Reward,
    max_new_tokens: usize,
    on_reward_error: OnRewardError,
) -> Result<HeldOutEval, GrpoTrainError> {
    let generation = GenerationConfig {
        max_new_tokens,
        sampling: SamplingParams::greedy(),
        stop: Vec::new(),
    };
    let mut rng = Rng::new(0);
    let (mut right, mut judged) = (0usize, 0usize);
    let mut failures = RewardFailures::default();
    let mut answers = Vec::with_capacity(prompts.len());
    // Every prompt on one running batch, within the default KV budget.
    let longest = prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
    let rows = engine.rows_within(DEFAULT_GENERATION_KV_MIB, longest + max_new_tokens)?;
    let requests = prompts
        .iter()
        .map(|p| PromptGroup {
            prompt: &p.tokens,
            rngs: vec![rng.fork()],
        })
        .collect();
    let done = engine.generate_many(backend, params, tok, requests, &generation, rows)?;
    for (index, (p, c)) in prompts.iter().zip(done).enumerate() {
        let c = c.into_iter().next().ok_or(GrpoTrainError::NoCompletion { index })?;
        let sample = Sample {
            completion: c.text.clone(),
            ..p.sample.clone()
        };
        let result = judge.score(std::slice::from_ref(&sample));
        let failed = result.is_err();
        let score = on_reward_error.apply(1, result, &mut failures)?;
        if !(failed && on_reward_error == OnRewardError::Skip) {
            judged += 1;
        }
        if score.first().and_then(|s| s.value()).is_some_and(|v| v >= 0.5) {
            right += 1;
        }
        answers.push((p.sample.prompt.clone(), c));
    }
    Ok(HeldOutEval {
        accuracy: (judged > 0).then(|| right as f64 / judged as f64),
        answers,
        failures,
    })
}

/// The cached graph scoring `[rows × seq]` micro-batches with log-probs at the config's
/// temperature, its policy graph checkpointed as the config says (built on first use; a
/// field-level borrow so the optimizer stays usable beside it).
fn scoring_graph<'a, B: Backend>(
    graphs: &'a mut HashMap<(usize, usize, Scored), LmGraph<B>>,
    backend: &B,
    model: &ModelConfig,
    (params, scored): (&ParamBuffer<B>, Scored),
    config: &GrpoTrainConfig,
    rows: usize,
    seq: usize,
) -> Result<&'a mut LmGraph<B>, GrpoTrainError> {
    match graphs.entry((rows, seq, scored)) {
        Entry::Occupied(e) => Ok(e.into_mut()),
        Entry::Vacant(e) => {
            let objective = Objective::TokenLogProbs {
                temperature: config.temperature,
            };
            let checkpoint =
                Checkpointing::from_settings(config.gradient_checkpointing, config.gradient_checkpointing_layers);
            let types = params.weight_types();
            let graph = match scored {
                Scored::Policy => LmGraph::for_training(backend, model, &types, rows, seq, objective, checkpoint)?,
                // Forward only: no gradient buffers for a model that never trains.
                Scored::Reference => LmGraph::scoring(backend, model, &types, rows, seq, objective)?,
            };
            Ok(e.insert(graph))
        }
    }
}

/// Which model a scoring graph computes log-probs for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Scored {
    /// The trained policy (its graph also back-propagates).
    Policy,
    /// The frozen reference (a copy, or the base under a LoRA adapter).
    Reference,
}

/// A copy of a parameter buffer (the frozen reference model).
pub fn copy_params<B: Backend>(backend: &B, params: &ParamBuffer<B>) -> Result<ParamBuffer<B>, r1_core::BackendError> {
    let copy = ParamBuffer::zeros(backend, params.layout.clone())?;
    backend.axpby(copy.flat(), 1.0, params.flat(), 0.0)?;
    Ok(copy)
}

/// What one optimizer step reports: its metrics and the rollouts it trained on.
#[derive(Clone, Debug)]
pub struct GrpoStepReport {
    pub metrics: GrpoStepMetrics,
    /// This generation's rollouts, group after group.
    pub samples: Vec<RolloutSample>,
}

/// One rollout as `samples.jsonl` logs it: the prompt, the completion, each reward's
/// score (`None`: not applicable or failed), their weighted sum and the advantage.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RolloutSample {
    /// The rollout's group (its prompt) within the generation batch.
    pub group: usize,
    pub prompt: String,
    pub completion: String,
    /// The combined reward (`None` where no reward applied).
    pub reward: Option<f32>,
    pub advantage: f32,
    /// Each reward's score, by reward name.
    pub rewards: std::collections::BTreeMap<String, Option<f32>>,
}

/// Sums over one optimizer step's micro-batches, turned into [`GrpoStepMetrics`] at its end.
#[derive(Default)]
struct StepTally {
    loss_sum: f64,
    /// Per TRL loss-metric name: (sum, micro-batches).
    metric_sums: HashMap<&'static str, (f64, usize)>,
    /// Masked entropy: (sum, tokens).
    entropy: (f64, f64),
    /// `|log π_train − log π_sampler|` over completion tokens: (sum, max, count).
    drift: (f64, f64, f64),
    /// Importance-sampling weights over completion tokens: (sum, min, max, count).
    importance: (f64, f64, f64, f64),
}

impl StepTally {
    /// Compares the trainer's log-probs of freshly sampled tokens with the sampler's (the
    /// engine's KV-cache decode): they must agree up to float rounding, or the policy
    /// gradient is taken on a different distribution than the one that was sampled.
    fn add_sampler_drift(&mut self, logp: &[f32], rows: &[&Rollout], l: usize, mask: &[f32]) {
        for (r, row) in rows.iter().enumerate() {
            for (j, &s) in row.completion.logprobs.iter().enumerate().take(l) {
                if mask[r * l + j] > 0.0 && s.is_finite() {
                    let d = (logp[r * l + j] - s).abs() as f64;
                    self.drift.0 += d;
                    self.drift.1 = self.drift.1.max(d);
                    self.drift.2 += 1.0;
                }
            }
        }
    }

    fn add_importance_weights(&mut self, w: &[f32], mask: &[f32]) {
        for (&w, &m) in w.iter().zip(mask) {
            if m > 0.0 {
                let w = w as f64;
                let (sum, min, max, n) = self.importance;
                self.importance = if n == 0.0 {
                    (w, w, w, 1.0)
                } else {
                    (sum + w, min.min(w), max.max(w), n + 1.0)
                };
            }
        }
    }

    fn add_micro_batch(&mut self, out: &r1_core::grpo::LossOutput, entropy: &[f32], mask: &[f32]) {
        self.loss_sum += out.loss as f64;
        for (name, v) in out.metrics.entries() {
            let e = self.metric_sums.entry(name).or_insert((0.0, 0));
            e.0 += v as f64;
            e.1 += 1;
        }
        for (&h, &m) in entropy.iter().zip(mask) {
            self.entropy.0 += (h * m) as f64;
            self.entropy.1 += m as f64;
        }
    }

    /// The step's report: the tallies, the batch's reward and completion statistics and
    /// the optimizer's figures, under TRL's names.
    fn finish<B: Backend>(
        self,
        trainer: &GrpoTrainer<B>,
        batch: &PreparedBatch,
        grad_norm: f64,
        lr: f32,
        started: Instant,
    ) -> GrpoStepReport {
        let (rollouts, adv, fig) = (&batch.rollouts, &batch.advantages, &batch.figures);
        let step = trainer.state.step;
        let metrics = GrpoStepMetrics {
            step,
            loss: self.loss_sum,
            grad_norm,
            learning_rate: f64::from(lr),
            reward: fig.reward.mean.map(f64::from),
            reward_std: fig.reward.std.map(f64::from),
            rewards: PerRewardMetrics(
                trainer
                    .rewards
                    .iter()
                    .zip(&fig.per_reward)
                    .zip(&trainer.failures)
                    .map(|((r, stats), failures)| RewardStepMetrics {
                        name: r.name.clone(),
                        mean: stats.mean.map(f64::from),
                        std: stats.std.map(f64::from),
                        failures: failures.samples,
                    })
                    .collect(),
            ),
            policy: self
                .metric_sums
                .iter()
                .map(|(name, (sum, n))| ((*name).to_string(), sum / *n as f64))
                .collect(),
            entropy: (self.entropy.1 > 0.0).then(|| self.entropy.0 / self.entropy.1),
            sampler_logp_diff_mean: (self.drift.2 > 0.0).then(|| self.drift.0 / self.drift.2),
            sampler_logp_diff_max: (self.drift.2 > 0.0).then_some(self.drift.1),
            importance_sampling_ratio_min: (self.importance.3 > 0.0).then_some(self.importance.1),
            importance_sampling_ratio_mean: (self.importance.3 > 0.0).then(|| self.importance.0 / self.importance.3),
            importance_sampling_ratio_max: (self.importance.3 > 0.0).then_some(self.importance.2),
            rollout_servers: trainer.remote.as_ref().map(RemoteRollouts::alive),
            weight_sync_time: trainer.sync_time,
            completion_mean_length: fig.completion_mean_length,
            completion_min_length: fig.completion_min_length,
            completion_max_length: fig.completion_max_length,
            completion_clipped_ratio: fig.completion_clipped_ratio,
            frac_reward_zero_std: fig.frac_reward_zero_std,
            dropped_groups: batch.dropped_groups,
            num_tokens: fig.num_tokens,
            generation_time: batch.generation_time,
            step_time: started.elapsed().as_secs_f64() + batch.generation_time,
            eval_accuracy: None,
        };
        let g = trainer.config.grpo.num_generations.max(1);
        let samples = rollouts
            .iter()
            .enumerate()
            .map(|(i, r)| RolloutSample {
                group: i / g,
                prompt: trainer.prompts[r.prompt_index].sample.prompt.clone(),
                completion: r.completion.text.clone(),
                reward: adv.rewards.get(i).copied().filter(|x| x.is_finite()),
                advantage: r.advantage,
                rewards: trainer
                    .rewards
                    .iter()
                    .zip(&r.rewards)
                    .map(|(reward, &x)| (reward.name.clone(), x.is_finite().then_some(x)))
                    .collect(),
            })
            .collect();
        GrpoStepReport { metrics, samples }
    }
}

/// Truncated importance-sampling weights `[rows × L]` of remote completions:
/// `min(exp(old − sampler), cap)` per active token (TRL's `importance_sampling_ratio`), 1
/// where the sampler gave no usable log-prob (NaN), 0 at padding.
fn importance_weights(old: &[f32], rows: &[&Rollout], l: usize, mask: &[f32], cap: f32) -> Vec<f32> {
    let mut w = vec![0.0f32; rows.len() * l];
    for (r, row) in rows.iter().enumerate() {
        for j in 0..l {
            let i = r * l + j;
            if mask[i] == 0.0 {
                continue;
            }
            w[i] = match row.completion.logprobs.get(j) {
                Some(&s) if !s.is_nan() => ((old[i] - s).exp()).min(cap),
                _ => 1.0,
            };
        }
    }
    w
}
