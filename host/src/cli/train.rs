//! `r1host train sft …`: supervised fine-tuning on a JSONL file of
//! `{"prompt", "completion"}` rows, from a model directory/checkpoint or a fresh model
//! (`--init CONFIG.json`, byte-level tokenizer), with a progress bar, `metrics.jsonl` and
//! a final checkpoint in the run directory.

use std::path::PathBuf;

use anyhow::{Context, bail};
use r1_core::backend::Backend;

use crate::device::{BackendJob, DeviceArgs, with_backend};
use crate::io::{DatasetFields, read_hf_config, read_jsonl};
use crate::model::Model;
use crate::run_dir::RunDir;
use crate::train::metrics::MetricsWriter;
use crate::train::sft::{SftConfig, SftExample, train_sft};

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    #[command(subcommand)]
    stage: TrainStage,
}

#[derive(Debug, clap::Subcommand)]
enum TrainStage {
    /// Supervised fine-tuning (loss on the completion tokens only).
    Sft(SftArgs),
}

#[derive(Debug, clap::Args)]
pub struct SftArgs {
    /// JSONL with one `{"prompt": …, "completion": …}` object per line.
    #[arg(long)]
    data: PathBuf,
    /// Start from this Hugging Face directory, GGUF file or r1 checkpoint…
    #[arg(long, conflicts_with = "init")]
    model: Option<PathBuf>,
    /// …or create a fresh model from this config.json (byte-level tokenizer).
    #[arg(long)]
    init: Option<PathBuf>,
    /// SFT settings as TOML (SftConfig fields; unknown keys are rejected).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where metrics and checkpoints go (default: runs/sft-<time>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    #[arg(long)]
    epochs: Option<f32>,
    #[arg(long)]
    max_steps: Option<usize>,
    #[arg(long)]
    lr: Option<f32>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    match args.stage {
        TrainStage::Sft(a) => {
            let device = a.device.clone();
            with_backend(&device, a)
        }
    }
}

/// Loads a TOML config file into `T`, naming the file in errors (unknown keys included).
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}", path.display()))
}

impl BackendJob for SftArgs {
    type Output = ();

    fn run<B: Backend>(self, backend: &B) -> anyhow::Result<()>
    where
        B::Buffer: Send + Sync,
    {
        let cfg = self.sft_config()?;
        let model = match (&self.model, &self.init) {
            (Some(p), _) => Model::load_trainable(backend, p).with_context(|| format!("loading {}", p.display()))?,
            (None, Some(c)) => Model::init(backend, read_hf_config(c)?, cfg.seed)?,
            (None, None) => bail!("give --model DIR|CHECKPOINT or --init CONFIG.json"),
        };
        let examples = sft_examples(&model, &self.data)?;
        let run = match &self.run_dir {
            Some(d) => RunDir::create(d)?,
            None => RunDir::fresh("sft")?,
        };
        train(backend, &model, &examples, &cfg, &run)
    }
}

impl SftArgs {
    /// The `--config` file (or the defaults) with the command-line overrides applied.
    fn sft_config(&self) -> anyhow::Result<SftConfig> {
        let mut cfg: SftConfig = match &self.config {
            Some(p) => read_toml(p)?,
            None => SftConfig::default(),
        };
        if let Some(e) = self.epochs {
            cfg.num_train_epochs = e;
        }
        if self.max_steps.is_some() {
            cfg.max_steps = self.max_steps;
        }
        if let Some(lr) = self.lr {
            cfg.optim.learning_rate = lr;
        }
        if let Some(b) = self.batch_size {
            cfg.per_device_train_batch_size = b;
        }
        if let Some(s) = self.seed {
            cfg.seed = s;
        }
        Ok(cfg)
    }
}

/// The dataset's rows tokenized, each completion ending with EOS.
fn sft_examples<B: Backend>(model: &Model<B>, data: &std::path::Path) -> anyhow::Result<Vec<SftExample>> {
    let tokenizer = model.text_tokenizer()?;
    let rows = read_jsonl(data, &DatasetFields::sft())?;
    let eos = tokenizer.eos_id();
    rows.iter()
        .map(|r| {
            let prompt = tokenizer.encode(&r.prompt)?;
            let mut completion = tokenizer.encode(&r.target)?;
            completion.push(eos);
            Ok(SftExample { prompt, completion })
        })
        .collect()
}

/// Trains with a progress bar and `metrics.jsonl`, then writes the final checkpoint.
fn train<B: Backend>(
    backend: &B,
    model: &Model<B>,
    examples: &[SftExample],
    cfg: &SftConfig,
    run: &RunDir,
) -> anyhow::Result<()> {
    let eos = model.tokenizer.eos_id();
    run.write_config("sft_config.json", cfg)?;
    let mut metrics = MetricsWriter::append(&run.metrics())?;
    let total = cfg.total_steps(examples.len());
    let bar = crate::cli::progress::bar(total as u64, "sft");
    eprintln!(
        "SFT: {} examples, {} steps, {} parameters, run directory {}",
        examples.len(),
        total,
        model.params.layout.num_params(),
        run.root.display()
    );
    let history = train_sft(backend, &model.config, &model.params, examples, cfg, eos, |m| {
        metrics.write(m).map_err(|e| e.to_string())?;
        bar.set_message(format!("loss {:.4}", m.loss));
        bar.inc(1);
        Ok(())
    })?;
    bar.finish();
    let path = run.checkpoint("final");
    model.save(backend, &path, None, Vec::new())?;
    if let (Some(first), Some(last)) = (history.first(), history.last()) {
        eprintln!(
            "loss {:.4} → {:.4}; checkpoint {}",
            first.loss,
            last.loss,
            path.display()
        );
    }
    Ok(())
}
