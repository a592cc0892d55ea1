//! Run directories: where a run keeps the config it ran with, `metrics.jsonl`,
//! `samples.jsonl`, plots and checkpoints.

use std::path::{Path, PathBuf};

use crate::io::atomic::write_bytes_atomically;

/// A run's directory and the well-known files in it.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    /// Creates `root` (and parents) if needed.
    pub fn create(root: &Path) -> std::io::Result<RunDir> {
        std::fs::create_dir_all(root)?;
        Ok(RunDir {
            root: root.to_path_buf(),
        })
    }

    /// `runs/<prefix>-<unix seconds>`.
    pub fn fresh(prefix: &str) -> std::io::Result<RunDir> {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        RunDir::create(&Path::new("runs").join(format!("{prefix}-{secs}")))
    }

    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    pub fn samples(&self) -> PathBuf {
        self.root.join("samples.jsonl")
    }

    pub fn checkpoint(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.r1ckpt"))
    }

    /// The Hugging Face directory a stage's final model is exported to
    /// (`models/<stage>/`: config, safetensors, tokenizer, chat template).
    pub fn hf_model(&self, stage: &str) -> PathBuf {
        self.root.join("models").join(stage)
    }

    /// The PEFT directory a LoRA stage's adapter is written to (`adapters/<stage>/`).
    pub fn adapter(&self, stage: &str) -> PathBuf {
        self.root.join("adapters").join(stage)
    }

    /// The directory a LoRA GRPO stage keeps its latest adapter, optimizer and trainer
    /// state in, for a resume.
    pub fn adapter_state(&self, stage: &str) -> PathBuf {
        self.root.join(format!("{stage}.latest.lora"))
    }

    /// Writes the config the run uses as pretty JSON (atomically).
    pub fn write_config<T: serde::Serialize>(&self, name: &str, config: &T) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(config)?;
        write_bytes_atomically(&self.root.join(name), &json)?;
        Ok(())
    }
}
