//! `r1host plugin …`: tools for reward-plugin authors. `check` loads a module, validates
//! its imports and exports against ABI v1 and prints what it says about itself; `score`
//! runs it on one sample from the command line or on a JSONL file of samples.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use r1_core::reward::{Sample, Score};

use crate::plugin::{CacheOutcome, HostConfig, PluginConfig, PluginHost, PluginReward, Scored};

#[derive(Debug, clap::Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Load a plugin, check it against ABI v1 and print its info.
    Check(CheckArgs),
    /// Score samples with a plugin: one from the command line, or a JSONL file.
    Score(ScoreArgs),
}

/// The plugin's limits and config, as a run's `[[rewards.plugin]]` table would set them.
#[derive(Debug, clap::Args)]
pub struct LimitArgs {
    /// Wall-time budget of one evaluation, milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Instruction budget of one evaluation (deterministic).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Linear memory the plugin may grow to, bytes.
    #[arg(long)]
    pub max_memory_bytes: Option<u64>,
    /// Largest module to compile, bytes.
    #[arg(long)]
    pub max_module_bytes: Option<u64>,
    /// The plugin's config, as JSON (handed to `r1_init`).
    #[arg(long, value_name = "JSON")]
    pub config: Option<String>,
    /// Compile in memory instead of using the on-disk module cache.
    #[arg(long)]
    pub no_cache: bool,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The plugin module (`.wasm`, or `.wat` text).
    pub file: PathBuf,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// The plugin module (`.wasm`, or `.wat` text).
    pub file: PathBuf,
    /// The prompt of the one sample to score.
    #[arg(long, required_unless_present = "jsonl", conflicts_with = "jsonl")]
    pub prompt: Option<String>,
    /// The completion of the one sample to score.
    #[arg(long, required_unless_present = "jsonl", conflicts_with = "jsonl")]
    pub completion: Option<String>,
    /// The reference answer of the one sample.
    #[arg(long, conflicts_with = "jsonl")]
    pub reference: Option<String>,
    /// Metadata of the one sample, `KEY=VALUE` (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE", conflicts_with = "jsonl")]
    pub metadata: Vec<String>,
    /// Score the samples of a JSONL file (`prompt`, `completion`, optional `reference` or
    /// `answer`; other fields become metadata). Prints one JSON line per sample.
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,
    /// Consecutive JSONL samples scored as one group (one plugin call).
    #[arg(long, default_value_t = 8)]
    pub group_size: usize,
    /// Scoring threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[command(flatten)]
    pub limits: LimitArgs,
}

pub fn run(args: PluginArgs) -> anyhow::Result<()> {
    match args.command {
        PluginCommand::Check(args) => check(args),
        PluginCommand::Score(args) => score(args),
    }
}

fn plugin_config(file: &Path, limits: &LimitArgs) -> anyhow::Result<PluginConfig> {
    let mut config = PluginConfig::new(file);
    if let Some(v) = limits.timeout_ms {
        config.timeout_ms = v;
    }
    config.fuel = limits.fuel;
    if let Some(v) = limits.max_memory_bytes {
        config.max_memory_bytes = v;
    }
    if let Some(v) = limits.max_module_bytes {
        config.max_module_bytes = v;
    }
    if let Some(json) = &limits.config {
        config.config = Some(serde_json::from_str(json).context("--config is not valid JSON")?);
    }
    Ok(config)
}

fn load(file: &Path, limits: &LimitArgs, threads: usize) -> anyhow::Result<(PluginHost, PluginReward)> {
    let mut host_config = HostConfig {
        threads,
        ..HostConfig::default()
    };
    if limits.no_cache {
        host_config.cache_dir = None;
    }
    let host = PluginHost::new(host_config)?;
    let plugin = host.load(&plugin_config(file, limits)?)?;
    Ok((host, plugin))
}

fn check(args: CheckArgs) -> anyhow::Result<()> {
    let (_host, plugin) = load(&args.file, &args.limits, 1)?;
    let config = plugin_config(&args.file, &args.limits)?;
    let info = plugin.info();
    let size = std::fs::metadata(&args.file).map(|m| m.len()).unwrap_or(0);
    let cache = match plugin.cache_outcome() {
        CacheOutcome::Disabled => "off (compiled in memory)".to_string(),
        CacheOutcome::Hit => "hit".to_string(),
        CacheOutcome::Stored => "compiled and stored".to_string(),
        CacheOutcome::NotStored(why) => format!("compiled, not stored: {why}"),
    };
    let fuel = config.fuel.map_or("none".to_string(), |f| f.to_string());
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "ok: {} is a valid r1 reward plugin (ABI v{})",
        args.file.display(),
        r1_core::plugin_abi::ABI_VERSION
    )?;
    writeln!(out, "name         {}", info.name)?;
    writeln!(out, "version      {}", info.version)?;
    writeln!(out, "description  {}", info.description)?;
    writeln!(out, "module       {size} bytes, sha256 {}", plugin.sha256())?;
    writeln!(
        out,
        "init         {}",
        if plugin.has_init() {
            "yes (takes a config)"
        } else {
            "no"
        }
    )?;
    writeln!(out, "cache        {cache}")?;
    writeln!(
        out,
        "limits       timeout {} ms, memory {} bytes, fuel {fuel}",
        config.timeout_ms, config.max_memory_bytes
    )?;
    Ok(())
}

/// One JSONL row: the sample's fields; any other field becomes metadata.
#[derive(serde::Deserialize)]
struct Row {
    prompt: String,
    completion: String,
    #[serde(default, alias = "answer")]
    reference: Option<String>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

fn sample_of(row: Row) -> Sample {
    let metadata = row
        .other
        .into_iter()
        .map(|(k, v)| {
            let value = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, value)
        })
        .collect();
    Sample {
        prompt: row.prompt,
        completion: row.completion,
        reference: row.reference,
        metadata,
    }
}

fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Sample>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut samples = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}: cannot read line {}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(&line)
            .with_context(|| format!("{}: line {} is not a sample", path.display(), i + 1))?;
        samples.push(sample_of(row));
    }
    Ok(samples)
}

fn score_json(score: Score) -> serde_json::Value {
    match score {
        Score::Value(v) => serde_json::json!(v),
        Score::NotApplicable => serde_json::Value::Null,
    }
}

fn score(args: ScoreArgs) -> anyhow::Result<()> {
    let (host, plugin) = load(&args.file, &args.limits, args.threads)?;
    let mut out = std::io::stdout().lock();
    let Some(jsonl) = &args.jsonl else {
        let mut metadata = Vec::new();
        for kv in &args.metadata {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--meta `{kv}` is not KEY=VALUE"))?;
            metadata.push((k.to_string(), v.to_string()));
        }
        let sample = Sample {
            prompt: args.prompt.unwrap_or_default(),
            completion: args.completion.unwrap_or_default(),
            reference: args.reference,
            metadata,
        };
        let scored = plugin.score_detailed(std::slice::from_ref(&sample))?;
        match scored.scores.first() {
            Some(Score::Value(v)) => writeln!(out, "score {v}")?,
            _ => writeln!(out, "score not applicable")?,
        }
        print_notes(&mut out, &scored)?;
        return Ok(());
    };
    anyhow::ensure!(args.group_size > 0, "--group-size must be at least 1");
    let samples = read_jsonl(jsonl)?;
    let groups: Vec<&[Sample]> = samples.chunks(args.group_size).collect();
    let results = host.install(|| {
        use rayon::prelude::*;
        groups.par_iter().map(|g| plugin.score_detailed(g)).collect::<Vec<_>>()
    });
    let mut failures = 0usize;
    for (g, result) in results.into_iter().enumerate() {
        let first = g * args.group_size;
        match result {
            Ok(scored) => {
                for (i, score) in scored.scores.iter().enumerate() {
                    let notes: Vec<&str> = scored
                        .diagnostics
                        .iter()
                        .filter(|d| d.sample == Some(i as u32))
                        .map(|d| d.message.as_str())
                        .collect();
                    let line =
                        serde_json::json!({"sample": first + i, "score": score_json(*score), "diagnostics": notes});
                    writeln!(out, "{line}")?;
                }
                for line in &scored.log {
                    eprintln!("plugin log (group {g}): {line}");
                }
            }
            Err(e) => {
                failures += 1;
                let len = groups[g].len();
                for i in 0..len {
                    let line = serde_json::json!({"sample": first + i, "error": e.to_string()});
                    writeln!(out, "{line}")?;
                }
            }
        }
    }
    anyhow::ensure!(failures == 0, "{failures} of {} groups failed", groups.len());
    Ok(())
}

fn print_notes(out: &mut impl Write, scored: &Scored) -> std::io::Result<()> {
    for d in &scored.diagnostics {
        match d.sample {
            Some(i) => writeln!(out, "diagnostic (sample {i}): {}", d.message)?,
            None => writeln!(out, "diagnostic: {}", d.message)?,
        }
    }
    for line in &scored.log {
        writeln!(out, "log: {line}")?;
    }
    Ok(())
}
