//! A LoRA GRPO stage's mid-stage checkpoint: a directory holding the adapter in PEFT's
//! format (usable as it is), the optimizer's moments of the adapter's weights and the
//! trainer's state — all a resume needs, since the base under the adapter is the stage's
//! input model and never changes. The directory is written beside the old one and swapped
//! in with renames, so a crash leaves the old state or the new one.

use std::path::{Path, PathBuf};

use anyhow::Context;
use r1_core::backend::Backend;

use crate::io::atomic::write_bytes_atomically;
use crate::io::{NamedTensor, OptimizerState, PeftAdapter, Weights, read_peft_adapter, read_safetensors};
use crate::io::{write_peft_adapter, write_safetensors};
use crate::model::Model;
use crate::train::optim::AdamW;

const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const TRAINER_FILE: &str = "trainer_state.bin";
const STEP_FILE: &str = "optimizer_step.json";

/// What a resume restores.
pub(super) struct AdapterState {
    pub adapter: PeftAdapter,
    pub optimizer: OptimizerState,
    pub trainer_state: Vec<u8>,
}

/// Writes the adapter, its optimizer state and `trainer_state` as `dir`.
pub(super) fn save_adapter_state<B: Backend>(
    backend: &B,
    dir: &Path,
    model: &Model<B>,
    optimizer: &AdamW<B>,
    trainer_state: &[u8],
) -> anyhow::Result<()> {
    let adapter = model
        .adapter(backend, None)?
        .context("the model has no LoRA adapter to save")?;
    let staging = sibling(dir, "new");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    write_peft_adapter(&staging, &adapter)?;
    let mut moments = Vec::new();
    let (m, v) = optimizer.moments.download_all(backend)?;
    for (prefix, moment) in [("m.", m), ("v.", v)] {
        for (name, dims, data) in moment {
            moments.push(NamedTensor {
                name: format!("{prefix}{name}"),
                dims,
                data,
            });
        }
    }
    write_safetensors(&staging.join(OPTIMIZER_FILE), &moments)?;
    write_bytes_atomically(&staging.join(TRAINER_FILE), trainer_state)?;
    write_bytes_atomically(&staging.join(STEP_FILE), optimizer.step.to_string().as_bytes())?;
    // Swap: the old state moves aside before the new one takes its name.
    let old = sibling(dir, "old");
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    if dir.exists() {
        std::fs::rename(dir, &old).with_context(|| format!("moving {} aside", dir.display()))?;
    }
    std::fs::rename(&staging, dir).with_context(|| format!("renaming {} to {}", staging.display(), dir.display()))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(())
}

/// Reads the state saved as `dir` (or the one a crash mid-swap left aside); `None` when
/// there is none.
pub(super) fn load_adapter_state(dir: &Path) -> anyhow::Result<Option<AdapterState>> {
    let dir = match (dir.is_dir(), sibling(dir, "old")) {
        (true, _) => dir.to_path_buf(),
        (false, old) if old.is_dir() => old,
        _ => return Ok(None),
    };
    let adapter = read_peft_adapter(&dir)?;
    let mut m = Vec::new();
    let mut v = Vec::new();
    for mut t in read_safetensors(&dir.join(OPTIMIZER_FILE))? {
        if let Some(name) = t.name.strip_prefix("m.") {
            t.name = name.to_string();
            m.push(t);
        } else if let Some(name) = t.name.strip_prefix("v.") {
            t.name = name.to_string();
            v.push(t);
        } else {
            anyhow::bail!("{}: unexpected tensor `{}`", dir.join(OPTIMIZER_FILE).display(), t.name);
        }
    }
    let step_path = dir.join(STEP_FILE);
    let step: u64 = std::fs::read_to_string(&step_path)
        .with_context(|| format!("reading {}", step_path.display()))?
        .trim()
        .parse()
        .with_context(|| format!("{}: not a step count", step_path.display()))?;
    let trainer_path = dir.join(TRAINER_FILE);
    let trainer_state = std::fs::read(&trainer_path).with_context(|| format!("reading {}", trainer_path.display()))?;
    Ok(Some(AdapterState {
        adapter,
        optimizer: OptimizerState {
            step,
            m: Weights { tensors: m },
            v: Weights { tensors: v },
        },
        trainer_state,
    }))
}

/// `dir` with `.{suffix}` appended to its name.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}
