//! A distillation stage: the current model (the teacher) writes reasoning traces of the
//! training prompts, filtered by the rewards as rejection sampling does, and a student
//! — a fresh smaller model or a loaded one — is fine-tuned on them and becomes the
//! pipeline's model.

use r1_core::backend::Backend;

use crate::model::Model;
use crate::pipeline::context::StageContext;
use crate::pipeline::datasets::{read_sft_pairs, sft_examples};
use crate::pipeline::recipe::DistillConfig;
use crate::pipeline::rejection::sample_training_prompts;
use crate::pipeline::sft_stage::train_and_log;
use crate::pipeline::state::FinishedStage;

/// Offset of the student's initialisation seed from the recipe's (it differs from the
/// teacher's when both are made from scratch).
const STUDENT_SEED_OFFSET: u64 = 17;

/// Distils `model` (the teacher) into the stage's student, which replaces it.
pub(super) fn run_distill_stage<B: Backend>(
    run: &mut StageContext<'_, B>,
    model: &mut Model<B>,
    name: &str,
    distill: &DistillConfig,
) -> anyhow::Result<FinishedStage> {
    let out = run.dir.root.join(format!("{name}.traces.jsonl"));
    let stats = sample_training_prompts(run, model, name, &distill.traces, &out)?;
    run.progress.log(&format!(
        "stage `{name}`: teacher wrote {} accepted traces of {}",
        stats.kept, stats.sampled
    ));
    let student = match (&distill.student_init, &distill.student) {
        (Some(cfg), _) => Model::init(
            run.backend,
            cfg.clone(),
            run.recipe.seed.wrapping_add(STUDENT_SEED_OFFSET),
        )?,
        (None, Some(p)) => Model::load_trainable(run.backend, p)?,
        (None, None) => anyhow::bail!("stage `{name}`: no student"),
    };
    let examples = sft_examples(&student, &read_sft_pairs(&out)?)?;
    if examples.is_empty() {
        anyhow::bail!("stage `{name}`: the teacher produced no accepted trace to distill");
    }
    let steps = train_and_log(run, &student, name, &examples, &distill.sft)?;
    *model = student;
    run.switch_model(model)?;
    let policy = run.recipe.on_reward_error;
    let mut finished = run.finish_training_stage(model, name, steps, None, policy)?;
    finished.output = Some(out);
    Ok(finished)
}
