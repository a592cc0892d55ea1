//! `r1host task arithmetic …`: writes the bundled addition task as JSONL — SFT rows
//! (`prompt`, `completion` with the worked solution) or GRPO rows (`prompt`, `answer`).

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use anyhow::bail;

use crate::io::atomic::write_bytes_atomically;
use crate::task::ArithmeticTask;

#[derive(Debug, clap::Args)]
pub struct TaskArgs {
    /// Rows to write.
    #[arg(long, default_value_t = 200)]
    n: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// `sft` (prompt + completion) or `grpo` (prompt + answer).
    #[arg(long, default_value = "sft")]
    format: String,
    #[arg(long, default_value_t = 2)]
    min_digits: u32,
    #[arg(long, default_value_t = 3)]
    max_digits: u32,
    /// Output file (stdout when absent).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: TaskArgs) -> anyhow::Result<()> {
    if args.min_digits == 0 || args.max_digits < args.min_digits || args.max_digits > 18 {
        bail!("digits must satisfy 1 <= min_digits <= max_digits <= 18");
    }
    let task = ArithmeticTask {
        min_digits: args.min_digits,
        max_digits: args.max_digits,
    };
    if args.n as u64 > task.distinct_problems() {
        bail!(
            "--n {} exceeds the {} distinct problems of {}..{}-digit additions",
            args.n,
            task.distinct_problems(),
            args.min_digits,
            args.max_digits
        );
    }
    let mut out = Vec::new();
    for p in task.generate(args.seed, args.n, &HashSet::new()) {
        let row = match args.format.as_str() {
            "sft" => serde_json::json!({"prompt": p.prompt, "completion": p.solution}),
            "grpo" => serde_json::json!({"prompt": p.prompt, "answer": p.answer}),
            other => bail!("unknown format `{other}` (sft, grpo)"),
        };
        writeln!(out, "{row}")?;
    }
    match args.out {
        Some(path) => write_bytes_atomically(&path, &out)?,
        None => std::io::stdout().write_all(&out)?,
    }
    Ok(())
}
