//! `r1host bench …`: the figures r1 promises, measured on random Qwen2 models of a given
//! shape — training tokens/s (forward + backward + AdamW), decode tokens/s, and the GRPO
//! step time — optionally beside a reference script (PyTorch / TRL) run on the same
//! machine in the same invocation, so the ratio is honest.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use r1_backend_cpu::CpuBackend;
use r1_core::model::ModelConfig;
use r1_core::sampling::{Rng, SamplingParams};

use crate::engine::{Detokenizer, Engine, GenerationConfig};
use crate::train::lm_graph::{Feed, LmGraph, Objective};
use crate::train::optim::{AdamW, OptimConfig};
use crate::weights::{ParamLayout, init_weights, upload_weights};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

/// A random Qwen2 shape (defaults: the small shape).
#[derive(Debug, Clone, clap::Args)]
pub struct Shape {
    /// `small` = h256/L4/heads4/kv2/ffn688/vocab512, `medium` = h512/L8/heads8/kv2/ffn1376/vocab4096.
    #[arg(long, default_value = "small")]
    preset: String,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Debug, clap::Subcommand)]
enum BenchWhat {
    /// Training tokens/s: forward + backward + AdamW on a batch.
    Train {
        #[command(flatten)]
        shape: Shape,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        seq: usize,
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// Also run this reference script (e.g. shared/reference/torch_decode_train.py).
        #[arg(long)]
        reference: Option<PathBuf>,
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// Greedy decode tokens/s at batch 1 after a 16-token prompt (as `generate`).
    Decode {
        #[command(flatten)]
        shape: Shape,
        #[arg(long, default_value_t = 64)]
        tokens: usize,
    },
}

/// The model config of a preset.
pub fn preset(name: &str) -> anyhow::Result<ModelConfig> {
    let (h, l, heads, kv, ffn, vocab) = match name {
        "small" => (256, 4, 4, 2, 688, 512),
        "medium" => (512, 8, 8, 2, 1376, 4096),
        "qwen2.5-0.5b" => (896, 24, 14, 2, 4864, 151936),
        other => bail!("unknown preset `{other}` (small, medium, qwen2.5-0.5b)"),
    };
    Ok(serde_json::from_value(serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"],
        "hidden_size": h, "intermediate_size": ffn, "num_hidden_layers": l,
        "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab,
        "tie_word_embeddings": true, "max_position_embeddings": 4096, "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
    }))?)
}

fn backend(threads: Option<usize>) -> anyhow::Result<CpuBackend> {
    Ok(match threads {
        Some(t) => CpuBackend::with_threads(t)?,
        None => CpuBackend::new(),
    })
}

struct NoText;

impl Detokenizer for NoText {
    fn decode(&self, tokens: &[u32]) -> String {
        format!("{} tokens", tokens.len())
    }
    fn eos_id(&self) -> Option<u32> {
        None
    }
}

fn run_reference(python: &str, script: &PathBuf, args: &[String]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("running {python} {}", script.display()))?;
    if !out.status.success() {
        bail!("reference script failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("reference printed no JSON")?;
    Ok(serde_json::from_str(line)?)
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        BenchWhat::Train {
            shape,
            batch,
            seq,
            steps,
            reference,
            python,
        } => {
            let cfg = preset(&shape.preset)?;
            let be = backend(shape.threads)?;
            let layout = ParamLayout::for_config(&cfg);
            let params = upload_weights(
                &be,
                layout.clone(),
                init_weights(&cfg, 0).into_iter().map(|(n, _, v)| (n, v)),
            )?;
            let mut opt = AdamW::new(
                &be,
                &layout,
                OptimConfig {
                    learning_rate: 1e-4,
                    ..Default::default()
                },
            )?;
            let mut graph = LmGraph::new(&be, &cfg, batch, seq, Objective::CrossEntropy)?;
            let mut rng = Rng::new(1);
            let ids: Vec<i32> = (0..batch * seq)
                .map(|_| rng.below(cfg.vocab_size as u64) as i32)
                .collect();
            let targets: Vec<i32> = ids.iter().skip(1).copied().chain([-1]).collect();
            let w = vec![1.0 / (batch * seq) as f32; batch * seq];
            let mut step = |graph: &mut LmGraph<CpuBackend>| -> anyhow::Result<f32> {
                let (loss, _) = graph.forward(
                    &be,
                    &params,
                    &Feed {
                        ids: &ids,
                        targets: &targets,
                        weights: Some(&w),
                    },
                )?;
                graph.backward(&be, &params, None)?;
                graph.for_each_grad(&params, |i, g| opt.accumulate(&be, i, g, true))?;
                opt.step(&be, &params, 1e-4, 1.0)?;
                Ok(loss[0])
            };
            step(&mut graph)?; // warm-up: arena, caches
            let t = Instant::now();
            for _ in 0..steps {
                step(&mut graph)?;
            }
            let secs = t.elapsed().as_secs_f64();
            let tps = (steps * batch * seq) as f64 / secs;
            let mut line = serde_json::json!({
                "bench": "train", "preset": shape.preset, "params": layout.num_params(), "backend": r1_core::Backend::name(&be),
                "batch": [batch, seq], "r1_train_tok_s": (tps * 10.0).round() / 10.0,
                "activation_mb": graph.arena_bytes() as f64 / 1e6,
            });
            if let Some(script) = reference {
                let c = &cfg;
                let a: Vec<String> = [
                    c.hidden_size,
                    c.num_hidden_layers,
                    c.num_attention_heads,
                    c.kv_heads(),
                    c.intermediate_size,
                    c.vocab_size,
                    4,
                    seq,
                    batch,
                ]
                .iter()
                .map(|v| v.to_string())
                .collect();
                let r = run_reference(&python, &script, &a)?;
                let reference_tps = r.get("train_tok_s").and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
                line["reference"] = r;
                line["speedup"] = serde_json::json!((tps / reference_tps * 100.0).round() / 100.0);
            }
            println!("{line}");
        }
        BenchWhat::Decode { shape, tokens } => {
            let cfg = preset(&shape.preset)?;
            let be = backend(shape.threads)?;
            let layout = ParamLayout::for_config(&cfg);
            let params = upload_weights(
                &be,
                layout.clone(),
                init_weights(&cfg, 0).into_iter().map(|(n, _, v)| (n, v)),
            )?;
            let mut engine = Engine::new(cfg.clone());
            let prompt: Vec<u32> = (0..16).map(|i| (i * 7 % cfg.vocab_size) as u32).collect();
            let g = GenerationConfig {
                max_new_tokens: tokens,
                sampling: SamplingParams::greedy(),
                stop: vec![],
            };
            let mut rng = Rng::new(0);
            engine.generate(
                &be,
                &params,
                &NoText,
                &prompt,
                1,
                &GenerationConfig {
                    max_new_tokens: 4,
                    ..g.clone()
                },
                &mut rng,
                |_, _| {},
            )?;
            let t = Instant::now();
            let out = engine.generate(&be, &params, &NoText, &prompt, 1, &g, &mut rng, |_, _| {})?;
            let secs = t.elapsed().as_secs_f64();
            let n = out.first().map_or(0, |c| c.tokens.len());
            println!(
                "{}",
                serde_json::json!({"bench": "decode", "preset": shape.preset, "tokens": n, "r1_decode_tok_s": (n as f64 / secs * 10.0).round() / 10.0})
            );
        }
    }
    Ok(())
}
