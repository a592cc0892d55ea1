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
    let written = export_hf_dir(&args.out, &model.config, &model.tokenizer, &model.weights)
        .with_context(|| format!("exporting {} to {}", args.model.display(), args.out.display()))?;
    for path in &written {
        crate::outln!("{}", path.display())?;
    }
    if model.tokenizer.require_text().is_err() {
        eprintln!(
            "note: {} has no tokenizer, so {} has none either (it runs on token ids only)",
            args.model.display(),
            args.out.display()
        );
    }
    Ok(())
}
