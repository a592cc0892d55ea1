//! The recipe: one TOML document describing an R1 pipeline — the model to start from,
//! the data, the rewards, and the stages (sft, grpo, rejection_sampling, distill) run in
//! order, each starting from the previous stage's checkpoint. Unknown keys anywhere are
//! rejected with their name. The recipe's `seed` seeds every stage that does not set its
//! own, and its `on_reward_error` is the policy of every GRPO stage that sets none, of
//! rejection sampling (`rejection_sampling` and `distill` stages) and of the held-out
//! evaluation outside GRPO stages.

use std::collections::HashSet;
use std::path::PathBuf;

use r1_core::model::{LoraError, LoraSpec, LoraTargets, ModelConfig};
use r1_core::reward::BuiltinRewardConfig;

use crate::plugin::{OnRewardError, PluginConfig};
use crate::train::grpo::GrpoTrainConfig;
use crate::train::sft::SftConfig;

/// A whole pipeline.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    /// Seeds the data, a fresh model, and every stage whose config sets no `seed`.
    #[serde(default)]
    pub seed: u64,
    pub model: ModelSpec,
    pub data: DataSpec,
    #[serde(default)]
    pub rewards: Vec<RewardSpec>,
    /// The reward whose score (≥ 0.5 = right) defines held-out accuracy.
    pub eval_reward: Option<String>,
    /// Held-out prompts are answered greedily with at most this many tokens.
    #[serde(default = "default_eval_tokens")]
    pub eval_max_new_tokens: usize,
    /// What a reward failure does (`fail`, `zero`, `skip`) where no GRPO stage says: in
    /// the held-out evaluation before training and after SFT and distillation stages, in
    /// rejection sampling (a failed group's samples are not kept), and in every GRPO
    /// stage whose config sets none (a GRPO stage's policy also covers the
    /// evaluations it runs).
    #[serde(default)]
    pub on_reward_error: OnRewardError,
    pub stages: Vec<StageSpec>,
}

fn default_eval_tokens() -> usize {
    64
}

/// Where the pipeline's model starts.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A fresh model with this config.json content (byte-level tokenizer)…
    pub init: Option<ModelConfig>,
    /// …or a Hugging Face directory / r1 checkpoint.
    pub path: Option<PathBuf>,
}

/// The prompts and examples.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum DataSpec {
    /// The bundled, generated addition task.
    Arithmetic {
        #[serde(default = "default_min_digits")]
        min_digits: u32,
        #[serde(default = "default_max_digits")]
        max_digits: u32,
        /// Worked examples for the cold-start SFT.
        cold_start: usize,
        /// Prompts for GRPO and rejection sampling.
        train_prompts: usize,
        /// Held-out prompts for accuracy.
        eval_prompts: usize,
    },
    /// Your own JSONL files.
    Jsonl {
        /// `{"prompt","completion"}` rows for the cold start.
        sft: Option<PathBuf>,
        /// `{"prompt","answer"}` rows for GRPO and rejection sampling.
        prompts: PathBuf,
        /// `{"prompt","answer"}` held-out rows.
        eval: Option<PathBuf>,
    },
}

fn default_min_digits() -> u32 {
    2
}

fn default_max_digits() -> u32 {
    3
}

/// One reward: a built-in rule reward or a WASM plugin, with its weight.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardSpec {
    pub name: String,
    #[serde(default = "default_weight")]
    pub weight: f64,
    pub builtin: Option<BuiltinRewardConfig>,
    /// A plugin path, or `bundled:arithmetic` for the plugin built into r1host.
    pub plugin: Option<PluginSpec>,
    /// A reward of the bundled task: `arithmetic_working` (partial credit per column).
    pub task: Option<TaskReward>,
}

/// Rewards that belong to the bundled task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskReward {
    ArithmeticWorking,
}

fn default_weight() -> f64 {
    1.0
}

/// A plugin reference: the host's plugin settings, where `path` may be `bundled:<name>`.
pub type PluginSpec = PluginConfig;

/// One stage of the pipeline, tagged by `kind`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StageSpec {
    Sft {
        name: String,
        #[serde(default)]
        sft: SftConfig,
        /// Train on the output of these earlier stages (rejection sampling / distill
        /// traces) and/or `cold_start`; default: the cold-start examples.
        #[serde(default)]
        data: Vec<String>,
        /// Train a LoRA adapter instead of every weight.
        #[serde(default)]
        lora: Option<LoraSettings>,
    },
    Grpo {
        name: String,
        #[serde(default)]
        grpo: GrpoTrainConfig,
        /// Reward names to use (default: all of the recipe's rewards).
        #[serde(default)]
        rewards: Vec<String>,
        /// Held-out accuracy every this many steps (0: only at the start and the end).
        #[serde(default)]
        eval_steps: usize,
        /// Checkpoint every this many steps (0: only at the end).
        #[serde(default)]
        save_steps: usize,
        /// Train a LoRA adapter instead of every weight (the reference model is then the
        /// base under it, never a copy).
        #[serde(default)]
        lora: Option<LoraSettings>,
    },
    RejectionSampling {
        name: String,
        #[serde(default)]
        rejection_sampling: RejectionConfig,
    },
    Distill {
        name: String,
        distill: DistillConfig,
    },
}

impl StageSpec {
    /// The stage's LoRA adapter, when it trains one.
    pub fn lora(&self) -> Result<Option<LoraSpec>, String> {
        match self {
            StageSpec::Sft { lora: Some(l), .. } | StageSpec::Grpo { lora: Some(l), .. } => {
                l.spec().map(Some).map_err(|e| format!("lora: {e}"))
            }
            _ => Ok(None),
        }
    }

    /// Checks the stage's own settings (what its trainer would refuse when it starts).
    pub fn validate_config(&self) -> Result<(), String> {
        self.lora()?;
        match self {
            StageSpec::Sft { sft, .. } => sft.validate().map_err(|e| e.to_string()),
            StageSpec::Grpo { grpo, .. } => grpo.validate().map_err(|e| e.to_string()),
            StageSpec::RejectionSampling { rejection_sampling, .. } => rejection_sampling.validate(),
            StageSpec::Distill { distill, .. } => {
                if let Some(init) = &distill.student_init {
                    init.validate().map_err(|e| format!("student_init: {e}"))?;
                }
                distill.traces.validate().map_err(|e| format!("traces: {e}"))?;
                distill.sft.validate().map_err(|e| format!("sft: {e}"))
            }
        }
    }

    pub fn name(&self) -> &str {
        match self {
            StageSpec::Sft { name, .. }
            | StageSpec::Grpo { name, .. }
            | StageSpec::RejectionSampling { name, .. }
            | StageSpec::Distill { name, .. } => name,
        }
    }
}

/// A stage's LoRA adapter, under PEFT's `LoraConfig` names (`[stages.lora]`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSettings {
    /// The adapter's rank.
    pub r: usize,
    pub lora_alpha: f32,
    /// Probability of dropping an element of the adapter's input while training.
    pub lora_dropout: f32,
    /// Module names (`q_proj`, …, `down_proj`) or `all-linear`.
    pub target_modules: Vec<String>,
    /// Scale by `alpha / √r` instead of `alpha / r`.
    pub use_rslora: bool,
}

impl Default for LoraSettings {
    /// PEFT's defaults (r 8, alpha 8, q_proj and v_proj for Llama and Qwen2), dropout 0.
    fn default() -> Self {
        LoraSettings {
            r: 8,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
            use_rslora: false,
        }
    }
}

impl LoraSettings {
    /// The adapter these settings describe, checked.
    pub fn spec(&self) -> Result<LoraSpec, LoraError> {
        let spec = LoraSpec {
            rank: self.r,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            rslora: self.use_rslora,
            targets: LoraTargets::from_names(self.target_modules.iter().map(String::as_str))?,
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// Rejection-sampling settings.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RejectionConfig {
    /// Prompts to sample (from the training prompts).
    pub prompts: usize,
    /// Completions sampled per prompt (K).
    pub samples_per_prompt: usize,
    /// Keep at most this many accepted completions per prompt.
    pub max_per_prompt: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub max_new_tokens: usize,
    /// Minimum score per reward name for a completion to be kept.
    pub min_reward: std::collections::BTreeMap<String, f64>,
    pub seed: u64,
}

impl RejectionConfig {
    /// Positive sample counts and sampling settings the sampler accepts.
    pub fn validate(&self) -> Result<(), String> {
        if self.samples_per_prompt == 0 {
            return Err("samples_per_prompt must be positive".into());
        }
        self.sampling().validate().map_err(|e| e.to_string())
    }

    /// The sampling settings of its generations.
    pub fn sampling(&self) -> r1_core::sampling::SamplingParams {
        r1_core::sampling::SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            ..Default::default()
        }
    }
}

impl Default for RejectionConfig {
    fn default() -> Self {
        RejectionConfig {
            prompts: 256,
            samples_per_prompt: 4,
            max_per_prompt: 1,
            temperature: 0.8,
            top_p: 1.0,
            max_new_tokens: 128,
            min_reward: Default::default(),
            seed: 7,
        }
    }
}

/// Distillation: the current model (teacher) writes traces filtered by rewards, and a
/// student is trained on them; the student then becomes the pipeline's model.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// The student: a fresh model with this config (byte-level tokenizer)…
    pub student_init: Option<ModelConfig>,
    /// …or an existing directory / checkpoint.
    pub student: Option<PathBuf>,
    #[serde(default)]
    pub traces: RejectionConfig,
    #[serde(default)]
    pub sft: SftConfig,
}

/// Which stage configs set their own `seed` (and GRPO stages their `on_reward_error`) in
/// a recipe's TOML (only those keys are read; everything else is checked by [`Recipe`]'s
/// own parse).
#[derive(Default, serde::Deserialize)]
struct SeedsGiven {
    #[serde(default)]
    stages: Vec<StageSeedsGiven>,
}

#[derive(Default, serde::Deserialize)]
struct StageSeedsGiven {
    sft: Option<SeedGiven>,
    grpo: Option<SeedGiven>,
    rejection_sampling: Option<SeedGiven>,
    distill: Option<DistillSeedsGiven>,
}

#[derive(Default, serde::Deserialize)]
struct DistillSeedsGiven {
    traces: Option<SeedGiven>,
    sft: Option<SeedGiven>,
}

#[derive(Default, serde::Deserialize)]
struct SeedGiven {
    seed: Option<u64>,
    /// Only GRPO configs have one.
    on_reward_error: Option<OnRewardError>,
}

/// Whether a config table was given with a `seed`.
fn has_seed(config: &Option<SeedGiven>) -> bool {
    config.as_ref().is_some_and(|c| c.seed.is_some())
}

/// Whether a config table was given with an `on_reward_error`.
fn has_policy(config: &Option<SeedGiven>) -> bool {
    config.as_ref().is_some_and(|c| c.on_reward_error.is_some())
}

impl Recipe {
    /// Parses a recipe, naming unknown keys and the TOML location of errors. Stage configs
    /// that set no `seed` take the recipe's, GRPO configs that set no `on_reward_error`
    /// too.
    pub fn from_toml(text: &str) -> Result<Recipe, String> {
        let mut recipe: Recipe = toml::from_str(text).map_err(|e| e.to_string())?;
        let given: SeedsGiven = toml::from_str(text).map_err(|e| e.to_string())?;
        recipe.seed_stages(&given);
        recipe.give_stages_the_reward_policy(&given);
        recipe.validate()?;
        Ok(recipe)
    }

    /// Gives the recipe's seed to every stage config whose TOML set none (the configs'
    /// own defaults would make every seed of the recipe run the stages identically).
    fn seed_stages(&mut self, given: &SeedsGiven) {
        let seed = self.seed;
        let none = StageSeedsGiven::default();
        for (i, stage) in self.stages.iter_mut().enumerate() {
            let given = given.stages.get(i).unwrap_or(&none);
            match stage {
                StageSpec::Sft { sft, .. } if !has_seed(&given.sft) => sft.seed = seed,
                StageSpec::Grpo { grpo, .. } if !has_seed(&given.grpo) => grpo.seed = seed,
                StageSpec::RejectionSampling { rejection_sampling, .. } if !has_seed(&given.rejection_sampling) => {
                    rejection_sampling.seed = seed
                }
                StageSpec::Distill { distill, .. } => {
                    let (traces, sft) = given
                        .distill
                        .as_ref()
                        .map_or((false, false), |d| (has_seed(&d.traces), has_seed(&d.sft)));
                    if !traces {
                        distill.traces.seed = seed;
                    }
                    if !sft {
                        distill.sft.seed = seed;
                    }
                }
                _ => {}
            }
        }
    }

    /// Gives the recipe's `on_reward_error` to every GRPO stage whose TOML set none.
    fn give_stages_the_reward_policy(&mut self, given: &SeedsGiven) {
        let policy = self.on_reward_error;
        for (i, stage) in self.stages.iter_mut().enumerate() {
            if let StageSpec::Grpo { grpo, .. } = stage
                && !given.stages.get(i).is_some_and(|g| has_policy(&g.grpo))
            {
                grpo.on_reward_error = policy;
            }
        }
    }

    /// Cross-field checks serde cannot do, and every stage's settings, so that a bad
    /// last stage is refused before the first one trains.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.model.init, &self.model.path) {
            (Some(_), Some(_)) => return Err("[model]: give `init` or `path`, not both".into()),
            (None, None) => return Err("[model]: give `init` (a config) or `path` (a model)".into()),
            (Some(init), None) => {
                init.validate().map_err(|e| format!("[model.init]: {e}"))?;
            }
            _ => {}
        }
        let mut names = HashSet::new();
        for r in &self.rewards {
            if !names.insert(r.name.as_str()) {
                return Err(format!("[[rewards]]: the name `{}` is used twice", r.name));
            }
            let kinds = [r.builtin.is_some(), r.plugin.is_some(), r.task.is_some()]
                .iter()
                .filter(|k| **k)
                .count();
            if kinds != 1 {
                return Err(format!(
                    "[[rewards]] `{}`: give exactly one of `builtin`, `plugin` or `task`",
                    r.name
                ));
            }
        }
        if let Some(e) = &self.eval_reward
            && !names.contains(e.as_str())
        {
            return Err(format!("eval_reward `{e}` is not one of the recipe's rewards"));
        }
        let mut stages = HashSet::new();
        for s in &self.stages {
            let stage = s.name();
            match s {
                StageSpec::Grpo { rewards, .. } => {
                    for r in rewards {
                        if !names.contains(r.as_str()) {
                            return Err(format!("stage `{stage}`: unknown reward `{r}`"));
                        }
                    }
                }
                StageSpec::Sft { data, .. } => {
                    for d in data {
                        if d != "cold_start" && !stages.contains(d.as_str()) {
                            return Err(format!(
                                "stage `{stage}`: data `{d}` is neither `cold_start` nor an earlier stage"
                            ));
                        }
                    }
                }
                StageSpec::RejectionSampling { rejection_sampling, .. } => {
                    for r in rejection_sampling.min_reward.keys() {
                        if !names.contains(r.as_str()) {
                            return Err(format!("stage `{stage}`: min_reward names unknown reward `{r}`"));
                        }
                    }
                }
                StageSpec::Distill { distill, .. } => {
                    if distill.student_init.is_some() == distill.student.is_some() {
                        return Err(format!(
                            "stage `{stage}`: give exactly one of `student_init` or `student`"
                        ));
                    }
                }
            }
            s.validate_config().map_err(|e| format!("stage `{stage}`: {e}"))?;
            if !stages.insert(stage) {
                return Err(format!("[[stages]]: the name `{stage}` is used twice"));
            }
        }
        if self.stages.is_empty() {
            return Err("the recipe has no [[stages]]".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAGES: &str = r#"
name = "seeds"
seed = 11
[model]
path = "model"
[data]
kind = "jsonl"
prompts = "prompts.jsonl"
[[stages]]
kind = "sft"
name = "sft"
[[stages]]
kind = "grpo"
name = "grpo"
[stages.grpo]
max_steps = 2
[[stages]]
kind = "rejection_sampling"
name = "rejection"
[[stages]]
kind = "distill"
name = "distill"
[stages.distill]
student = "student"
"#;

    fn seeds(recipe: &Recipe) -> Vec<u64> {
        recipe
            .stages
            .iter()
            .flat_map(|s| match s {
                StageSpec::Sft { sft, .. } => vec![sft.seed],
                StageSpec::Grpo { grpo, .. } => vec![grpo.seed],
                StageSpec::RejectionSampling { rejection_sampling, .. } => vec![rejection_sampling.seed],
                StageSpec::Distill { distill, .. } => vec![distill.traces.seed, distill.sft.seed],
            })
            .collect()
    }

    #[test]
    fn every_stage_without_a_seed_takes_the_recipes() {
        let recipe = Recipe::from_toml(STAGES).unwrap();
        assert_eq!(seeds(&recipe), vec![11; 5]);
    }

    #[test]
    fn grpo_stages_without_a_reward_policy_take_the_recipes() {
        let text = format!("on_reward_error = \"skip\"\n{STAGES}").replace(
            "max_steps = 2",
            "max_steps = 2\n[[stages]]\nkind = \"grpo\"\nname = \"strict\"\n[stages.grpo]\non_reward_error = \"fail\"",
        );
        let recipe = Recipe::from_toml(&text).unwrap();
        assert_eq!(recipe.on_reward_error, OnRewardError::Skip);
        let policies: Vec<(&str, OnRewardError)> = recipe
            .stages
            .iter()
            .filter_map(|s| match s {
                StageSpec::Grpo { name, grpo, .. } => Some((name.as_str(), grpo.on_reward_error)),
                _ => None,
            })
            .collect();
        assert_eq!(
            policies,
            vec![("grpo", OnRewardError::Skip), ("strict", OnRewardError::Fail)]
        );
        let recipe = Recipe::from_toml(STAGES).unwrap();
        assert_eq!(recipe.on_reward_error, OnRewardError::Fail);
    }

    #[test]
    fn a_stage_seed_overrides_the_recipes() {
        let text = STAGES
            .replace("max_steps = 2", "max_steps = 2\nseed = 5")
            .replace(
                "student = \"student\"",
                "student = \"student\"\n[stages.distill.traces]\nseed = 6",
            )
            .replace(
                "name = \"rejection\"",
                "name = \"rejection\"\n[stages.rejection_sampling]\nseed = 7",
            );
        let recipe = Recipe::from_toml(&text).unwrap();
        assert_eq!(seeds(&recipe), vec![11, 5, 7, 6, 11]);
    }
}
