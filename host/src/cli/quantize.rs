//! `r1host quantize --model HF_DIR|CKPT|F16.gguf --type q4_k_m --out FILE.gguf`: a model
//! as a GGUF file llama.cpp loads, each tensor in the type `llama-quantize` would give it
//! (`io::gguf::quant_mix`), with a per-type count at the end; or, with `--type bf16` and
//! an `--out` that is not a `.gguf`, a Hugging Face directory of bf16 safetensors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use r1_core::model::ModelConfig;

use crate::io::gguf::{FileType, GgmlType, GgufFile, WrittenTensor, is_gguf_file, model_to_gguf};
use crate::io::safetensors_f32::{StoredDtype, write_safetensors_as};
use crate::io::tensors::Weights;
use crate::io::tokenizer::Tokenizer;
use crate::io::{export_hf_dir, hf::WEIGHTS_FILE};
use crate::model::read_model;

#[derive(Debug, clap::Args)]
pub struct QuantizeArgs {
    /// A Hugging Face model directory, an r1 checkpoint, or an F32/F16/BF16 GGUF file.
    #[arg(long)]
    model: PathBuf,
    /// The file type, as llama-quantize names it: 1-D tensors (norms, biases) stay F32;
    /// q4_k_m mixes Q4_K and Q6_K as llama.cpp does.
    #[arg(long = "type", value_enum)]
    file_type: FileType,
    /// The file to write (replaced atomically), or with `--type bf16` and a path not
    /// ending in `.gguf`, a new Hugging Face directory.
    #[arg(long)]
    out: PathBuf,
    /// gguf, or safetensors (a Hugging Face directory; bf16 only). Default: safetensors
    /// for `--type bf16` with an `--out` not ending in `.gguf`, else gguf.
    #[arg(long, value_enum)]
    format: Option<OutputFormat>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Gguf,
    Safetensors,
}

pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    let format = args.format.unwrap_or(
        if args.file_type == FileType::Bf16 && args.out.extension().is_none_or(|e| e != "gguf") {
            OutputFormat::Safetensors
        } else {
            OutputFormat::Gguf
        },
    );
    if format == OutputFormat::Safetensors && args.file_type != FileType::Bf16 {
        bail!(
            "--format safetensors writes bf16 only (--type bf16); `r1host export` writes f32 directories, and quantized types go to GGUF"
        );
    }
    refuse_quantized_gguf(&args.model)?;
    let model = read_model(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let (config, tokenizer) = (model.config.clone(), model.tokenizer.clone());
    let weights = model
        .into_f32_weights()
        .with_context(|| format!("reading the weights of {}", args.model.display()))?;
    match format {
        OutputFormat::Gguf => write_gguf(&args, &config, &tokenizer, &weights),
        OutputFormat::Safetensors => write_bf16_dir(&args, &config, &tokenizer, &weights),
    }
}

/// Quantizing an already quantized file would quantize twice: only float GGUF inputs.
fn refuse_quantized_gguf(path: &Path) -> anyhow::Result<()> {
    if !path.is_file() || !is_gguf_file(path) {
        return Ok(());
    }
    let file = GgufFile::open(path)?;
    let floats = [GgmlType::F32, GgmlType::F16, GgmlType::BF16];
    if let Some(t) = file.header.tensors.iter().find(|t| !floats.contains(&t.ggml_type)) {
        bail!(
            "{}: tensor `{}` is {}; r1host quantize reads F32, F16 and BF16 GGUF files only (requantizing a quantized file compounds the error: start from the Hugging Face directory)",
            path.display(),
            t.name,
            t.ggml_type
        );
    }
    Ok(())
}

fn write_gguf(
    args: &QuantizeArgs,
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    weights: &Weights,
) -> anyhow::Result<()> {
    if tokenizer.require_text().is_err() {
        eprintln!(
            "note: {} has no tokenizer, so the GGUF file has no tokenizer.ggml.* metadata (llama.cpp needs one to load it)",
            args.model.display()
        );
    }
    let name = args
        .model
        .file_stem()
        .map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned());
    let (writer, written) = model_to_gguf(config, tokenizer, weights, args.file_type, &name)
        .with_context(|| format!("converting {} to {}", args.model.display(), args.file_type.name()))?;
    writer
        .write(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    print_summary(&args.out, args.file_type, &written)
}

/// The per-type tensor counts, and every tensor whose rows made it fall back.
fn print_summary(out: &Path, file_type: FileType, written: &[WrittenTensor]) -> anyhow::Result<()> {
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    crate::outln!(
        "{} ({}, {:.1} MiB, {} tensors)",
        out.display(),
        file_type.name(),
        bytes as f64 / (1024.0 * 1024.0),
        written.len()
    )?;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in written {
        *counts.entry(t.ty.name()).or_default() += 1;
    }
    for (ty, n) in counts {
        crate::outln!("  {ty:>5}: {n} tensors")?;
    }
    for t in written {
        if let Some(wanted) = t.fell_back_from {
            crate::outln!(
                "  fallback: {} {} → {} (rows are not whole {}-element blocks)",
                t.name,
                wanted.name(),
                t.ty.name(),
                wanted.block_size()
            )?;
        }
    }
    Ok(())
}

/// Files of a Hugging Face directory copied as they are (the tokenizer and its
/// configuration, the chat template, the generation defaults).
const COPIED_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
];

/// A Hugging Face directory with bf16 weights, written beside `--out` and renamed into
/// place, so a reader never sees half a directory.
fn write_bf16_dir(
    args: &QuantizeArgs,
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    weights: &Weights,
) -> anyhow::Result<()> {
    let out = &args.out;
    if out.exists() {
        let empty = std::fs::read_dir(out).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !empty {
            bail!(
                "{} exists and is not an empty directory; a bf16 directory is written whole (choose a new --out)",
                out.display()
            );
        }
    }
    let file_name = out
        .file_name()
        .with_context(|| format!("--out {} names no directory", out.display()))?;
    let tmp = out.with_file_name(format!(".{}.tmp-{}", file_name.to_string_lossy(), std::process::id()));
    let result = fill_bf16_dir(&tmp, &args.model, config, tokenizer, weights).and_then(|()| {
        if out.exists() {
            std::fs::remove_dir(out).with_context(|| format!("replacing the empty {}", out.display()))?;
        }
        std::fs::rename(&tmp, out).with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result?;
    crate::outln!("{} (bf16 safetensors, {} tensors)", out.display(), weights.len())?;
    Ok(())
}

fn fill_bf16_dir(
    dir: &Path,
    model: &Path,
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    weights: &Weights,
) -> anyhow::Result<()> {
    export_hf_dir(dir, config, tokenizer, weights).with_context(|| format!("writing {}", dir.display()))?;
    write_safetensors_as(&dir.join(WEIGHTS_FILE), &weights.tensors, StoredDtype::BF16)?;
    // transformers loads the weights in the dtype the config names.
    let config_path = dir.join(crate::io::hf::CONFIG_FILE);
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path)?)?;
    if let Some(fields) = json.as_object_mut() {
        fields.insert("torch_dtype".into(), "bfloat16".into());
    }
    crate::io::atomic::write_bytes_atomically(&config_path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    if model.is_dir() {
        for name in COPIED_FILES {
            let from = model.join(name);
            if from.is_file() {
                std::fs::copy(&from, dir.join(name)).with_context(|| format!("copying {}", from.display()))?;
            }
        }
    }
    Ok(())
}
