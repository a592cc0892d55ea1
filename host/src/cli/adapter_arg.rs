//! `--adapter DIR`: a PEFT LoRA adapter put on the model a command loads (`generate`,
//! `logprobs`) or merged into it (`export`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use r1_core::backend::Backend;

use crate::io::read_peft_adapter;
use crate::model::Model;

/// The `--adapter` option.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AdapterArgs {
    /// A LoRA adapter directory as PEFT saves it (`adapter_config.json` +
    /// `adapter_model.safetensors`), applied over the model.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
}

impl AdapterArgs {
    /// Loads `model` and puts the adapter on it when one is given.
    pub fn load<B: Backend>(&self, backend: &B, model: &Path) -> anyhow::Result<Model<B>> {
        let mut loaded = Model::load(backend, model).with_context(|| format!("loading {}", model.display()))?;
        if let Some(dir) = &self.adapter {
            let adapter = read_peft_adapter(dir)?;
            loaded
                .attach_adapter(backend, &adapter)
                .with_context(|| format!("putting the adapter {} on {}", dir.display(), model.display()))?;
            eprintln!(
                "adapter: {} (LoRA r={}, alpha={}, {} weights over {})",
                dir.display(),
                adapter.spec.rank,
                adapter.spec.alpha,
                adapter.weights.len(),
                adapter.spec.targets.names().join(", ")
            );
        }
        Ok(loaded)
    }
}
