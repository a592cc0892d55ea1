//! `r1host export CKPT|DIR --out DIR`: write a model as a Hugging Face directory
//! (f32 safetensors, config, generation config, tokenizer and chat template) that
//! `transformers` loads as it is.

use std::path::PathBuf;

use anyhow::Context;

use crate::io::export_hf_dir;
use crate::model::read_model;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// An r1 checkpoint or a Hugging Face model directory.
    model: PathBuf,
    /// The directory to write (created if needed; files of the same names are replaced).
    #[arg(long)]
    out: PathBuf,
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
    let weights = model
        .into_f32_weights()
        .with_context(|| format!("dequantizing {}", args.model.display()))?;
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
