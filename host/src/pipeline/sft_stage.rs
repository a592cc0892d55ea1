//! An SFT stage: supervised fine-tuning of the pipeline's model on the cold-start
//! examples and/or the samples earlier stages accepted (R1's SFT after rejection
//! sampling), one metrics line per optimizer step.

use anyhow::Context;
use r1_core::backend::Backend;

use crate::model::Model;
use crate::pipeline::StopRequested;
use crate::pipeline::context::StageContext;
use crate::pipeline::datasets::{read_sft_pairs, sft_examples};
use crate::pipeline::state::{FinishedStage, PipelineState};
use crate::train::sft::{SftConfig, SftExample, train_sft};

/// Trains `model` in place on the stage's `data` sources (default: the cold start).
pub(super) fn run_sft_stage<B: Backend>(
    run: &mut StageContext<'_, B>,
    model: &Model<B>,
    state: &PipelineState,
    name: &str,
    sft: &SftConfig,
    data: &[String],
) -> anyhow::Result<FinishedStage> {
    let pairs = stage_pairs(run, state, data)?;
    let examples = sft_examples(model, &pairs)?;
    run.progress
        .log(&format!("stage `{name}`: SFT on {} examples", examples.len()));
    let steps = train_and_log(run, model, name, &examples, sft)?;
    run.finish_training_stage(model, name, steps, None, run.recipe.on_reward_error)
}

/// Runs SFT on `model` with a progress bar and writes each step's metrics under `stage`;
/// returns the optimizer steps taken.
pub(super) fn train_and_log<B: Backend>(
    run: &mut StageContext<'_, B>,
    model: &Model<B>,
    stage: &str,
    examples: &[SftExample],
    sft: &SftConfig,
) -> anyhow::Result<usize> {
    let progress = run.progress;
    progress.begin(stage, sft.total_steps(examples.len()) as u64, 0);
    let eos = model.tokenizer.eos_id();
    let stop = run.stop;
    let trained = train_sft(run.backend, &model.config, &model.params, examples, sft, eos, |m| {
        progress.step(&format!("loss {:.4}", m.loss));
        if stop.is_requested() {
            return Err("a stop was requested".into());
        }
        Ok(())
    });
    progress.end();
    if trained.is_err() && run.stop.is_requested() {
        // SFT keeps no mid-stage checkpoint: a resume redoes the stage, identically.
        return Err(StopRequested { step: 0 }.into());
    }
    let steps = trained.with_context(|| format!("stage `{stage}`"))?;
    for m in &steps {
        run.write_metrics(stage, m)?;
    }
    Ok(steps.len())
}

/// SFT pairs for a stage: the cold start and/or earlier stages' outputs.
fn stage_pairs<B: Backend>(
    run: &StageContext<'_, B>,
    state: &PipelineState,
    data: &[String],
) -> anyhow::Result<Vec<(String, String)>> {
    let sources: Vec<&str> = if data.is_empty() {
        vec!["cold_start"]
    } else {
        data.iter().map(String::as_str).collect()
    };
    let mut pairs = Vec::new();
    for s in &sources {
        if *s == "cold_start" {
            pairs.extend(run.data.cold_start.iter().cloned());
            continue;
        }
        let out = state
            .finished
            .iter()
            .find(|f| f.name == *s)
            .and_then(|f| f.output.clone())
            .with_context(|| format!("stage `{s}` wrote no dataset"))?;
        // A rejection stage that accepted nothing leaves an empty file: the other sources
        // still train (the error below fires only when every source is empty).
        if std::fs::metadata(&out).map(|m| m.len() == 0).unwrap_or(false) {
            run.progress.log(&format!(
                "stage `{s}` accepted no samples; training on the other sources"
            ));
            continue;
        }
        pairs.extend(read_sft_pairs(&out)?);
    }
    if pairs.is_empty() {
        anyhow::bail!("no SFT examples (sources: {})", sources.join(", "));
    }
    Ok(pairs)
}
