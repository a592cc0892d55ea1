//! `r1host export CKPT|DIR --out DIR [--adapter PEFT_DIR]`: write a model (with a LoRA
//! adapter merged in) as a Hugging Face directory
//! (f32 safetensors, config, generation config, tokenizer and chat template) that
//! `transformers` loads as it is.

use std::path::PathBuf;

use anyhow::Context;

use crate::adapter::merge_adapter;
use crate::io::{export_hf_dir, read_peft_adapter};
use crate::model::read_model;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// An r1 checkpoint or a Hugging Face model directory.
    model: PathBuf,
    /// The directory to write (created if needed; files of the same names are replaced).
    #[arg(long)]
    out: PathBuf,
    /// A PEFT LoRA adapter directory to merge into the weights (`W + s·B·A`, as PEFT's
    /// `merge_and_unload`).
    #[arg(long, value_name = "DIR")]
    adapter: Option<PathBuf>,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let model = read_model(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let (config, tokenizer) = (model.config.clone(), model.tokenizer.clone());
    if !model.stored.is_empty() {
        eprintln!(
            "note: {} keeps {} weights quantized; the export holds them dequantized to f32",
            args.model.display(),
            model.stored.len()
        );
    }
    // A Hugging Face directory holds f32 here: quantized weights are dequantized.
    let mut weights = model
        .into_f32_weights()
        .with_context(|| format!("dequantizing {}", args.model.display()))?;
    if let Some(dir) = &args.adapter {
        let adapter = read_peft_adapter(dir)?;
        adapter.check_for(&config, &dir.display().to_string())?;
        let merged = merge_adapter(&mut weights, &adapter)?;
        eprintln!("merged the adapter {} into {merged} weights", dir.display());
    }
    let written = export_hf_dir(&args.out, &config, &tokenizer, &weights)
        .with_context(|| format!("exporting {} to {}", args.model.display(), args.out.display()))?;
    for path in &written {
        crate::outln!("{}", path.display())?;
    }
    if tokenizer.require_text().is_err() {
        eprintln!(
            "note: {} has no tokenizer, so {} has none either (it runs on token ids only)",
            args.model.display(),
            args.out.display()
        );
    }
    Ok(())
}
