//! The R1 pipeline: runs a [`Recipe`]'s stages in order — cold-start SFT, GRPO,
//! rejection sampling, SFT on the accepted samples, GRPO with more rewards, distillation
//! — each from the previous stage's checkpoint, with one `metrics.jsonl` (every line
//! tagged with its `stage` and a `global_step`), held-out accuracy after each training
//! stage, and a `pipeline.json` that records finished stages so a resumed run skips
//! them and continues an interrupted GRPO stage from its last checkpoint.

pub mod recipe;
pub mod rejection;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use r1_backend_cpu::CpuBackend;
use r1_core::reward::{Reward, Sample};

use crate::engine::{Completion, Engine};
use crate::io::atomic::write_bytes_atomically;
use crate::io::{DatasetFields, load_checkpoint, read_jsonl};
use crate::model::{Model, restore_optimizer};
use crate::plugin::{HostConfig, PluginHost};
use crate::run_dir::RunDir;
use crate::task::ArithmeticTask;
use crate::train::grpo::{GrpoPrompt, GrpoState, GrpoTrainer, NamedReward, evaluate};
use crate::train::metrics::MetricsWriter;
use crate::train::sft::{SftExample, train_sft};
pub use recipe::{DataSpec, Recipe, RewardSpec, StageSpec};

/// The recipe `r1host run` runs without arguments.
pub const DEFAULT_RECIPE: &str = include_str!("default_recipe.toml");

/// The arithmetic-checker plugin built into r1host (empty if it could not be built).
const BUNDLED_ARITHMETIC: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/arithmetic.wasm"));

/// One held-out prompt with the completion the model gave it.
type EvalSample = (String, Completion);

/// Prompts, references and worked examples for a recipe.
pub struct Datasets {
    /// `(prompt, completion)` pairs for the cold start.
    pub cold_start: Vec<(String, String)>,
    pub train: Vec<Sample>,
    pub eval: Vec<Sample>,
}

/// What a finished stage left behind.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FinishedStage {
    pub name: String,
    /// The model after the stage.
    pub checkpoint: PathBuf,
    /// A JSONL of SFT rows the stage wrote (rejection sampling, distillation traces).
    pub output: Option<PathBuf>,
    /// Held-out accuracy after the stage, when measured.
    pub eval_accuracy: Option<f64>,
    /// Optimizer steps the stage took.
    pub steps: usize,
}

/// `pipeline.json`: the finished stages of a run.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PipelineState {
    pub recipe: String,
    pub finished: Vec<FinishedStage>,
}

/// The outcome of a pipeline run.
#[derive(Clone, Debug)]
pub struct PipelineReport {
    pub run_dir: PathBuf,
    pub stages: Vec<FinishedStage>,
    /// Held-out accuracy before any training.
    pub initial_accuracy: Option<f64>,
    /// One held-out answer of the final model: `(prompt, completion)`.
    pub sample: Option<(String, Completion)>,
    pub plots: Vec<PathBuf>,
}

/// Everything a stage needs from the run.
struct Run<'a> {
    backend: &'a CpuBackend,
    recipe: &'a Recipe,
    dir: RunDir,
    data: Datasets,
    rewards: Vec<NamedReward>,
    metrics: MetricsWriter,
    samples: MetricsWriter,
    global_step: usize,
    eval_prompts: Vec<GrpoPrompt>,
    quiet: bool,
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
                bail!("[data]: digits must satisfy 1 <= min_digits <= max_digits <= 9");
            }
            let task = ArithmeticTask {
                min_digits: *min_digits,
                max_digits: *max_digits,
            };
            let seed = recipe.seed;
            // Held-out problems first, so no training set ever contains them.
            let eval = task.generate(seed.wrapping_add(1000), *eval_prompts, &HashSet::new());
            let mut used: HashSet<(u64, u64)> = eval.iter().map(|p| (p.a, p.b)).collect();
            let cold = task.generate(seed.wrapping_add(2000), *cold_start, &used);
            used.extend(cold.iter().map(|p| (p.a, p.b)));
            let train = task.generate(seed.wrapping_add(3000), *train_prompts, &used);
            let sample = |p: &crate::task::Problem| Sample {
                prompt: p.prompt.clone(),
                completion: String::new(),
                reference: Some(p.answer.clone()),
                metadata: Vec::new(),
            };
            Ok(Datasets {
                cold_start: cold.iter().map(|p| (p.prompt.clone(), p.solution.clone())).collect(),
                train: train.iter().map(sample).collect(),
                eval: eval.iter().map(sample).collect(),
            })
        }
        DataSpec::Jsonl { sft, prompts, eval } => {
            let rows = |path: &Path| -> anyhow::Result<Vec<Sample>> {
                Ok(read_jsonl(path, &DatasetFields::grpo())?
                    .into_iter()
                    .map(|r| Sample {
                        prompt: r.prompt,
                        completion: String::new(),
                        reference: Some(r.target),
                        metadata: r.metadata,
                    })
                    .collect())
            };
            let cold_start = match sft {
                Some(p) => read_jsonl(p, &DatasetFields::sft())?
                    .into_iter()
                    .map(|r| (r.prompt, r.target))
                    .collect(),
                None => Vec::new(),
            };
            Ok(Datasets {
                cold_start,
                train: rows(prompts)?,
                eval: match eval {
                    Some(p) => rows(p)?,
                    None => Vec::new(),
                },
            })
        }
    }
}

/// Builds every reward of the recipe (plugins through one shared host).
pub fn build_rewards(recipe: &Recipe, host: &PluginHost) -> anyhow::Result<Vec<NamedReward>> {
    recipe
        .rewards
        .iter()
        .map(|spec| {
            let reward: Arc<dyn Reward> = match (&spec.builtin, &spec.plugin) {
                _ if spec.task == Some(recipe::TaskReward::ArithmeticWorking) => {
                    Arc::new(crate::task::ArithmeticWorking)
                }
                (Some(b), _) => Arc::from(b.build(Some(&spec.name)).map_err(|e| anyhow::anyhow!("{e}"))?),
                (None, Some(p)) => {
                    let mut p = p.clone();
                    p.name = Some(spec.name.clone());
                    let loaded = match p.path.to_str() {
                        Some("bundled:arithmetic") => {
                            if BUNDLED_ARITHMETIC.is_empty() {
                                bail!(
                                    "reward `{}`: the bundled arithmetic plugin was not built into this r1host \
                                     (run `rustup target add wasm32-unknown-unknown` and rebuild)",
                                    spec.name
                                );
                            }
                            host.load_bytes(BUNDLED_ARITHMETIC, &p)
                        }
                        _ => host.load(&p),
                    };
                    Arc::new(loaded.with_context(|| format!("reward `{}`", spec.name))?)
                }
                (None, None) => bail!("reward `{}` has neither `builtin`, `plugin` nor `task`", spec.name),
            };
            Ok(NamedReward {
                name: spec.name.clone(),
                reward,
            })
        })
        .collect()
}

fn encode_prompts(model: &Model<CpuBackend>, samples: &[Sample]) -> anyhow::Result<Vec<GrpoPrompt>> {
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

fn sft_examples(model: &Model<CpuBackend>, pairs: &[(String, String)]) -> anyhow::Result<Vec<SftExample>> {
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

impl Run<'_> {
    fn log(&self, msg: &str) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }

    fn eval_reward(&self) -> Option<&NamedReward> {
        let name = self.recipe.eval_reward.as_ref()?;
        self.rewards.iter().find(|r| &r.name == name)
    }

    /// Held-out accuracy of `model` (None without an eval reward or eval prompts).
    fn accuracy(
        &self,
        engine: &mut Engine<CpuBackend>,
        model: &Model<CpuBackend>,
    ) -> anyhow::Result<Option<(f64, Vec<EvalSample>)>> {
        let Some(judge) = self.eval_reward() else {
            return Ok(None);
        };
        if self.eval_prompts.is_empty() {
            return Ok(None);
        }
        let r = evaluate(
            engine,
            self.backend,
            &model.params,
            &model.tokenizer,
            &self.eval_prompts,
            judge.reward.as_ref(),
            self.recipe.eval_max_new_tokens,
        )?;
        Ok(Some(r))
    }

    fn write_metrics(
        &mut self,
        stage: &str,
        mut line: serde_json::Map<String, serde_json::Value>,
    ) -> anyhow::Result<()> {
        self.global_step += 1;
        line.insert("stage".into(), stage.into());
        line.insert("global_step".into(), self.global_step.into());
        self.metrics.write(&line)?;
        Ok(())
    }
}

/// Runs `recipe` in `run_dir`. With `resume`, finished stages are skipped and an
/// interrupted GRPO stage continues from its last checkpoint.
pub fn run_pipeline(
    recipe: &Recipe,
    recipe_text: &str,
    run_dir: &Path,
    resume: bool,
    quiet: bool,
) -> anyhow::Result<PipelineReport> {
    let backend = CpuBackend::new();
    let dir = RunDir::create(run_dir)?;
    let state_path = dir.root.join("pipeline.json");
    let mut state: PipelineState = if resume && state_path.is_file() {
        serde_json::from_slice(&std::fs::read(&state_path)?).with_context(|| format!("{}", state_path.display()))?
    } else {
        if !resume && state_path.is_file() {
            bail!(
                "{} already holds a run; use --resume to continue it or pick another --run-dir",
                dir.root.display()
            );
        }
        PipelineState {
            recipe: recipe_text.to_string(),
            finished: Vec::new(),
        }
    };
    if resume && state.recipe != recipe_text {
        bail!(
            "the recipe differs from the one this run started with (kept in {})",
            state_path.display()
        );
    }
    write_bytes_atomically(&dir.root.join("recipe.toml"), recipe_text.as_bytes())?;

    let data = load_datasets(recipe)?;
    let host = PluginHost::new(HostConfig::default()).context("starting the plugin host")?;
    let rewards = build_rewards(recipe, &host)?;
    let done_steps: usize = state.finished.iter().map(|s| s.steps).sum();
    let global_step = if resume {
        done_steps + interrupted_grpo_steps(&dir, recipe, &state)
    } else {
        0
    };
    let metrics = if resume {
        MetricsWriter::resume(&dir.metrics(), "global_step", global_step)?
    } else {
        MetricsWriter::create(&dir.metrics())?
    };
    let samples = if resume {
        MetricsWriter::resume(&dir.samples(), "global_step", global_step)?
    } else {
        MetricsWriter::create(&dir.samples())?
    };

    // The model: the last finished stage's checkpoint, or the recipe's starting point.
    let mut model = match state.finished.last() {
        Some(last) => Model::load(&backend, &last.checkpoint)?,
        None => match (&recipe.model.init, &recipe.model.path) {
            (Some(cfg), _) => Model::init(&backend, cfg.clone(), recipe.seed)?,
            (None, Some(p)) => Model::load(&backend, p).with_context(|| format!("loading {}", p.display()))?,
            (None, None) => bail!("[model] needs `init` or `path`"),
        },
    };
    let mut run = Run {
        backend: &backend,
        recipe,
        dir,
        eval_prompts: encode_prompts(&model, &data.eval)?,
        data,
        rewards,
        metrics,
        samples,
        global_step,
        quiet,
    };
    let mut engine = Engine::new(model.config.clone());
    let initial_accuracy = if state.finished.is_empty() {
        let acc = run.accuracy(&mut engine, &model)?.map(|a| a.0);
        if let Some(a) = acc {
            run.log(&format!("held-out accuracy before training: {:.1}%", a * 100.0));
        }
        acc
    } else {
        None
    };

    for stage in &recipe.stages {
        let name = stage.name().to_string();
        if state.finished.iter().any(|s| s.name == name) {
            run.log(&format!("stage `{name}`: finished earlier, skipped"));
            continue;
        }
        let started = Instant::now();
        let finished = match stage {
            StageSpec::Sft { sft, data, .. } => {
                let pairs = stage_pairs(&run, &state, data)?;
                let examples = sft_examples(&model, &pairs)?;
                run.log(&format!("stage `{name}`: SFT on {} examples", examples.len()));
                let total = sft.total_steps(examples.len());
                let bar = crate::cli::progress::bar(total as u64, &name);
                let mut lines = Vec::new();
                let eos = model.tokenizer.eos_id();
                train_sft(&backend, &model.config, &model.params, &examples, sft, eos, |m| {
                    bar.set_message(format!("loss {:.4}", m.loss));
                    bar.inc(1);
                    lines.push(serde_json::to_value(m).map_err(|e| e.to_string())?);
                    Ok(())
                })?;
                bar.finish_and_clear();
                let steps = lines.len();
                for l in lines {
                    if let serde_json::Value::Object(m) = l {
                        run.write_metrics(&name, m)?;
                    }
                }
                finish_training_stage(&mut run, &mut engine, &model, &name, steps, None)?
            }
            StageSpec::Grpo {
                grpo,
                rewards,
                eval_steps,
                save_steps,
                ..
            } => run_grpo_stage(
                &mut run,
                &mut engine,
                &mut model,
                &name,
                grpo,
                rewards,
                *eval_steps,
                *save_steps,
                resume,
            )?,
            StageSpec::RejectionSampling { rejection_sampling, .. } => {
                let prompts = encode_prompts(&model, &run.data.train)?;
                let out = run.dir.root.join(format!("{name}.jsonl"));
                let stats =
                    rejection::rejection_sample(&backend, &model, &prompts, &run.rewards, rejection_sampling, &out)?;
                run.log(&format!(
                    "stage `{name}`: kept {} of {} completions ({} of {} prompts covered) → {}",
                    stats.kept,
                    stats.sampled,
                    stats.prompts_covered,
                    stats.prompts,
                    out.display()
                ));
                write_bytes_atomically(
                    &run.dir.root.join(format!("{name}.stats.json")),
                    &serde_json::to_vec_pretty(&stats)?,
                )?;
                let checkpoint = current_checkpoint(&run, &state, &model)?;
                FinishedStage {
                    name: name.clone(),
                    checkpoint,
                    output: Some(out),
                    eval_accuracy: None,
                    steps: 0,
                }
            }
            StageSpec::Distill { distill, .. } => {
                let prompts = encode_prompts(&model, &run.data.train)?;
                let out = run.dir.root.join(format!("{name}.traces.jsonl"));
                let stats =
                    rejection::rejection_sample(&backend, &model, &prompts, &run.rewards, &distill.traces, &out)?;
                run.log(&format!(
                    "stage `{name}`: teacher wrote {} accepted traces of {}",
                    stats.kept, stats.sampled
                ));
                write_bytes_atomically(
                    &run.dir.root.join(format!("{name}.stats.json")),
                    &serde_json::to_vec_pretty(&stats)?,
                )?;
                let student = match (&distill.student_init, &distill.student) {
                    (Some(cfg), _) => Model::init(&backend, cfg.clone(), recipe.seed.wrapping_add(17))?,
                    (None, Some(p)) => Model::load(&backend, p)?,
                    (None, None) => bail!("stage `{name}`: no student"),
                };
                let pairs = read_jsonl(&out, &DatasetFields::sft())?
                    .into_iter()
                    .map(|r| (r.prompt, r.target))
                    .collect::<Vec<_>>();
                let examples = sft_examples(&student, &pairs)?;
                if examples.is_empty() {
                    bail!("stage `{name}`: the teacher produced no accepted trace to distill");
                }
                let eos = student.tokenizer.eos_id();
                let mut lines = Vec::new();
                train_sft(
                    &backend,
                    &student.config,
                    &student.params,
                    &examples,
                    &distill.sft,
                    eos,
                    |m| {
                        lines.push(serde_json::to_value(m).map_err(|e| e.to_string())?);
                        Ok(())
                    },
                )?;
                let steps = lines.len();
                for l in lines {
                    if let serde_json::Value::Object(m) = l {
                        run.write_metrics(&name, m)?;
                    }
                }
                model = student;
                engine = Engine::new(model.config.clone());
                let mut f = finish_training_stage(&mut run, &mut engine, &model, &name, steps, None)?;
                f.output = Some(out);
                f
            }
        };
        run.log(&format!(
            "stage `{name}` done in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        state.finished.push(finished);
        write_bytes_atomically(&state_path, &serde_json::to_vec_pretty(&state)?)?;
    }

    let sample = run.accuracy(&mut engine, &model)?.and_then(|(_, mut outs)| {
        let i = outs.iter().position(|(_, c)| c.reasoning.is_some()).unwrap_or(0);
        (!outs.is_empty()).then(|| outs.swap_remove(i))
    });
    let plots = match crate::plot::plot_run(&run.dir.root) {
        Ok(p) => p,
        Err(e) => {
            run.log(&format!("plots not written: {e}"));
            Vec::new()
        }
    };
    Ok(PipelineReport {
        run_dir: run.dir.root.clone(),
        stages: state.finished,
        initial_accuracy,
        sample,
        plots,
    })
}

/// The checkpoint holding the current model (the previous stage's, or a new one).
fn current_checkpoint(run: &Run<'_>, state: &PipelineState, model: &Model<CpuBackend>) -> anyhow::Result<PathBuf> {
    if let Some(last) = state.finished.last() {
        return Ok(last.checkpoint.clone());
    }
    let path = run.dir.checkpoint("initial");
    model.save(run.backend, &path, None, Vec::new())?;
    Ok(path)
}

/// SFT pairs for a stage: the cold start and/or earlier stages' outputs.
fn stage_pairs(run: &Run<'_>, state: &PipelineState, data: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let sources: Vec<&str> = if data.is_empty() {
        vec!["cold_start"]
    } else {
        data.iter().map(String::as_str).collect()
    };
    let mut pairs = Vec::new();
    for s in sources {
        if s == "cold_start" {
            pairs.extend(run.data.cold_start.iter().cloned());
            continue;
        }
        let out = state
            .finished
            .iter()
            .find(|f| f.name == s)
            .and_then(|f| f.output.clone())
            .with_context(|| format!("stage `{s}` wrote no dataset"))?;
        // A rejection stage that accepted nothing leaves an empty file: the other sources
        // still train (the error below fires only when every source is empty).
        if std::fs::metadata(&out).map(|m| m.len() == 0).unwrap_or(false) {
            run.log(&format!(
                "stage `{s}` accepted no samples; training on the other sources"
            ));
            continue;
        }
        pairs.extend(
            read_jsonl(&out, &DatasetFields::sft())?
                .into_iter()
                .map(|r| (r.prompt, r.target)),
        );
    }
    if pairs.is_empty() {
        bail!(
            "no SFT examples (sources: {})",
            if data.is_empty() {
                "cold_start".to_string()
            } else {
                data.join(", ")
            }
        );
    }
    Ok(pairs)
}

/// Saves the stage's model, measures held-out accuracy, writes an eval metrics line.
fn finish_training_stage(
    run: &mut Run<'_>,
    engine: &mut Engine<CpuBackend>,
    model: &Model<CpuBackend>,
    name: &str,
    steps: usize,
    known_accuracy: Option<f64>,
) -> anyhow::Result<FinishedStage> {
    let checkpoint = run.dir.checkpoint(name);
    model.save(run.backend, &checkpoint, None, Vec::new())?;
    let acc = match known_accuracy {
        Some(a) => Some(a),
        None => run.accuracy(engine, model)?.map(|a| a.0),
    };
    if let Some(a) = acc {
        run.log(&format!("stage `{name}`: held-out accuracy {:.1}%", a * 100.0));
        if known_accuracy.is_none() {
            let mut m = serde_json::Map::new();
            m.insert("eval/accuracy".into(), a.into());
            run.global_step = run.global_step.saturating_sub(1); // an eval line shares the last step
            run.write_metrics(name, m)?;
        }
    }
    Ok(FinishedStage {
        name: name.to_string(),
        checkpoint,
        output: None,
        eval_accuracy: acc,
        steps,
    })
}

/// Steps an interrupted GRPO stage had checkpointed (counted into the global step).
fn interrupted_grpo_steps(dir: &RunDir, recipe: &Recipe, state: &PipelineState) -> usize {
    let next = recipe
        .stages
        .iter()
        .find(|s| !state.finished.iter().any(|f| f.name == s.name()));
    match next {
        Some(StageSpec::Grpo { name, .. }) => {
            let path = dir.checkpoint(&format!("{name}.latest"));
            load_checkpoint(&path)
                .ok()
                .and_then(|c| postcard::from_bytes::<GrpoState>(&c.trainer_state).ok())
                .map_or(0, |s| s.step)
        }
        _ => 0,
    }
}

#[allow(clippy::too_many_arguments)]
fn run_grpo_stage(
    run: &mut Run<'_>,
    engine: &mut Engine<CpuBackend>,
    model: &mut Model<CpuBackend>,
    name: &str,
    config: &crate::train::grpo::GrpoTrainConfig,
    reward_names: &[String],
    eval_steps: usize,
    save_steps: usize,
    resume: bool,
) -> anyhow::Result<FinishedStage> {
    let backend = run.backend;
    let rewards: Vec<NamedReward> = if reward_names.is_empty() {
        run.rewards.clone()
    } else {
        reward_names
            .iter()
            .filter_map(|n| run.rewards.iter().find(|r| &r.name == n).cloned())
            .collect()
    };
    // The recipe's `[[rewards]]` weights, unless the stage sets TRL's `reward_weights`.
    let mut config = config.clone();
    if config.grpo.reward_weights.is_none() {
        config.grpo.reward_weights = Some(
            rewards
                .iter()
                .map(|r| {
                    run.recipe
                        .rewards
                        .iter()
                        .find(|spec| spec.name == r.name)
                        .map_or(1.0, |spec| spec.weight)
                })
                .collect(),
        );
    }
    let prompts = encode_prompts(model, &run.data.train)?;
    let mut trainer = GrpoTrainer::new(
        backend,
        model.config.clone(),
        &model.params,
        config.clone(),
        rewards,
        prompts,
    )?;
    let latest = run.dir.checkpoint(&format!("{name}.latest"));
    if resume && latest.is_file() {
        let ckpt = load_checkpoint(&latest)?;
        for t in ckpt.weights.iter() {
            model.params.upload(backend, &t.name, &t.data)?;
        }
        if let Some(opt) = &ckpt.optimizer {
            restore_optimizer(backend, &mut trainer.optimizer, opt)?;
        }
        trainer.resume_from(postcard::from_bytes(&ckpt.trainer_state).context("GRPO trainer state in the checkpoint")?);
        if let Some(reference) = &trainer.reference {
            let ref_path = run.dir.checkpoint(&format!("{name}.reference"));
            let r = load_checkpoint(&ref_path)?;
            for t in r.weights.iter() {
                reference.upload(backend, &t.name, &t.data)?;
            }
        }
        run.log(&format!("stage `{name}`: resumed at step {}", trainer.state.step));
    } else if trainer.reference.is_some() {
        // The frozen reference is the model as this stage starts.
        model.save(
            backend,
            &run.dir.checkpoint(&format!("{name}.reference")),
            None,
            Vec::new(),
        )?;
    }
    let max = config.max_steps;
    let bar = crate::cli::progress::bar(max as u64, name);
    bar.set_position(trainer.state.step as u64);
    let mut last_acc = None;
    if trainer.state.step == 0 && eval_steps > 0 {
        last_acc = run.accuracy(engine, model)?.map(|a| a.0);
    }
    while trainer.state.step < max {
        let mut lines = Vec::new();
        trainer.train_generation(backend, &model.params, &model.tokenizer, |r| {
            lines.push((r.metrics.clone(), r.samples.clone()));
            Ok(())
        })?;
        let step = trainer.state.step;
        let eval_now = eval_steps > 0 && (step % eval_steps == 0 || step >= max);
        let acc = if eval_now {
            run.accuracy(engine, model)?.map(|a| a.0)
        } else {
            None
        };
        if acc.is_some() {
            last_acc = acc;
        }
        let n = lines.len();
        for (i, (mut m, samples)) in lines.into_iter().enumerate() {
            if i + 1 == n
                && let Some(a) = acc
            {
                m.insert("eval/accuracy".into(), a.into());
            }
            let reward = m.get("reward").and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
            run.write_metrics(name, m)?;
            for (prompt, completion, reward, advantage) in samples.iter().take(4) {
                run.samples.write(&serde_json::json!({
                    "stage": name, "global_step": run.global_step, "prompt": prompt,
                    "completion": completion, "reward": reward, "advantage": advantage,
                }))?;
            }
            bar.set_message(format!(
                "reward {reward:.3}{}",
                last_acc.map(|a| format!(" acc {:.1}%", a * 100.0)).unwrap_or_default()
            ));
            bar.inc(1);
        }
        if (save_steps > 0 && step % save_steps == 0) || step >= max {
            let state = postcard::to_allocvec(&trainer.state)?;
            model.save(backend, &latest, Some(&trainer.optimizer), state)?;
        }
    }
    bar.finish_and_clear();
    let failures: u64 = trainer.failures().iter().map(|f| f.samples).sum();
    if failures > 0 {
        run.log(&format!(
            "stage `{name}`: {failures} samples' rewards failed and were handled by on_reward_error"
        ));
    }
    let known = if eval_steps > 0 { last_acc } else { None };
    finish_training_stage(run, engine, model, name, max, known)
}
