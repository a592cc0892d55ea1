//! `r1host bench …`: the figures r1 promises, measured on random Qwen2 models of a given
//! shape — training tokens/s (forward + backward + AdamW), decode tokens/s, and the GRPO
//! step time — optionally beside a reference script (PyTorch / TRL) run on the same
//! machine in the same invocation, so the ratio is honest.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use r1_core::backend::Backend;
use r1_core::model::ModelConfig;
use r1_core::sampling::{Rng, SamplingParams};

use super::bench_bound;
use super::bench_decode::{DecodeRun, bench_decode_model};
use crate::device::{BackendJob, Compute, DeviceArgs, with_backend};
use crate::engine::{Detokenizer, Engine, GenerationConfig};
use crate::train::lm_graph::{Feed, LmGraph, Objective};
use crate::train::optim::{AdamW, OptimConfig, OptimizerType};
use crate::weights::{ParamLayout, random_params};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

/// A random Qwen2 shape (defaults: the small shape).
#[derive(Debug, Clone, clap::Args)]
pub struct Shape {
    /// `small` = h256/L4/heads4/kv2/ffn688/vocab512, `medium` = h512/L8/heads8/kv2/ffn1376/vocab4096,
    /// `qwen2.5-0.5b`, `r1-distill-qwen-1.5b`, `default-job` = h128/L4/heads4/kv2/ffn344/vocab261
    /// (the default job's model), `deepseek-v3-100m` (a ~100M DeepSeek-V3: MLA + MoE,
    /// compressed cache) and `deepseek-v3-100m-full-kv` (the same, full per-head KV cache).
    #[arg(long, default_value = "small")]
    preset: String,
    #[command(flatten)]
    device: DeviceArgs,
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
        /// `adamw` or `adamw_8bit` (8-bit moments; the reference keeps torch's f32 AdamW).
        /// The line reports the moments' bytes and the optimizer's share of the step.
        #[arg(long, default_value = "adamw", value_parser = parse_optimizer)]
        optimizer: OptimizerType,
        /// Also run this reference script (bench/reference/torch_decode_train.py).
        #[arg(long)]
        reference: Option<PathBuf>,
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// Greedy decode tokens/s after a prompt (as `generate`) and the prompt's prefill
    /// tokens/s; `--batch G` decodes G completions of the prompt together, as a GRPO group
    /// does. With `--model FILE` (a GGUF, HF directory or r1 checkpoint) it also reports the
    /// load time, peak resident memory, the weight bytes one decoded token reads, the
    /// memory read bandwidth measured in the same run, and the decode bound they give.
    Decode {
        #[command(flatten)]
        shape: Shape,
        /// Decode this model instead of a random one of `--preset`'s shape.
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value_t = 64)]
        tokens: usize,
        /// Prompt tokens before decoding (default: 128 with `--model`, 16 for a preset).
        #[arg(long)]
        prompt: Option<usize>,
        /// Completions decoded together (the reference runs batch 1 only).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Timed runs with `--model` (after one untimed run); the median is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// The KV cache's types with `--model` (the reference gets the same ones).
        #[command(flatten)]
        cache: super::cache_types::CacheTypeArgs,
        /// Also run this reference script: bench/reference/torch_decode_train.py for a
        /// preset, bench/reference/llamacpp_decode.py (llama.cpp) with `--model`.
        #[arg(long)]
        reference: Option<PathBuf>,
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// Seconds per GRPO step as TRL's reference measures it: one prompt, G completions of
    /// up to L tokens, the format and accuracy rule rewards, β = 0.04 (so the frozen
    /// reference is scored too), AdamW — generation included.
    Grpo {
        #[command(flatten)]
        shape: Shape,
        /// Completions per prompt (`num_generations`).
        #[arg(long, default_value_t = 8)]
        generations: usize,
        /// Prompts per step (the step's batch is `prompts × generations` completions; the
        /// default job's GRPO stage takes 16 × 8); the reference script gets
        /// `PROMPTS_PER_STEP`.
        #[arg(long, default_value_t = 1)]
        prompts: usize,
        /// The rollouts' KV-cache budget (`generation_kv_cache_mib`): how many completions
        /// are decoded at once (0: one group at a time).
        #[arg(long, default_value_t = crate::engine::DEFAULT_GENERATION_KV_MIB)]
        generation_kv_cache_mib: usize,
        /// `max_completion_length` (default: 64 for `small`, 48 for `default-job` as its
        /// recipe has it, 128 otherwise).
        #[arg(long)]
        completion: Option<usize>,
        /// Timed steps after one warm-up step.
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// Train a LoRA adapter of this rank (alpha 2r, every linear layer) over the frozen
        /// model instead of every weight; the reference script gets `LORA_R` (TRL + PEFT).
        #[arg(long)]
        lora: Option<usize>,
        /// With `--lora`: keep the frozen model's matrices (projections, embedding) in this
        /// type — f32, bf16, q8_0, q4_0 or q4_k (QLoRA-style) — made from the random f32
        /// values one tensor at a time.
        #[arg(long, default_value = "f32", requires = "lora")]
        base_type: String,
        /// Recompute every decoder layer in the backward pass (`gradient_checkpointing`);
        /// the reference script gets `GRADIENT_CHECKPOINTING=1`.
        #[arg(long)]
        gradient_checkpointing: bool,
        /// Also run this reference script (bench/reference/trl_grpo_step.py).
        #[arg(long)]
        reference: Option<PathBuf>,
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// The engine service under concurrent streams: aggregate decode tokens/s, time to
    /// first token and inter-token latency (p50/p99) for each client count, each client
    /// streaming one completion of `--tokens` after its own `--prompt`-token prompt
    /// (greedy, or sampled at `--temperature`).
    /// Each client count runs in rounds (at least 3, and at least `--min-secs`); the
    /// median round's tokens/s is reported.
    Serve {
        #[command(flatten)]
        shape: Shape,
        /// Concurrent clients to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,32")]
        clients: Vec<usize>,
        #[arg(long, default_value_t = 128)]
        tokens: usize,
        #[arg(long, default_value_t = 16)]
        prompt: usize,
        /// Seconds of rounds to run per client count (at least 3 rounds).
        #[arg(long, default_value_t = 2.0)]
        min_secs: f64,
        /// The KV cache's types.
        #[command(flatten)]
        cache: super::cache_types::CacheTypeArgs,
        /// 0: greedy completions; else sampled at this temperature (no top-k/p), each
        /// client from its own seed.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
    },
    /// GRPO generation on 1, 2, 4… local `r1host serve` workers (`[stages.grpo.rollout]`)
    /// against in-process generation: completion tokens/s for `--groups` groups of
    /// `--generations` completions, and the seconds one weight push to the fleet takes
    /// (the whole model, and a LoRA adapter of rank `--lora`).
    Rollout {
        #[command(flatten)]
        shape: Shape,
        /// Worker counts to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        workers: Vec<usize>,
        #[arg(long, default_value_t = 16)]
        groups: usize,
        #[arg(long, default_value_t = 8)]
        generations: usize,
        #[arg(long, default_value_t = 64)]
        completion: usize,
        #[arg(long, default_value_t = 16)]
        prompt: usize,
        #[arg(long, default_value_t = 16)]
        lora: usize,
        /// Groups in flight per worker.
        #[arg(long, default_value_t = 4)]
        in_flight: usize,
    },
}

/// The ~100M-parameter DeepSeek-V3 shape of the `deepseek-v3-100m` presets: h512/L8/
/// heads8, q LoRA 192, kv LoRA 128, q/k dims 64 + 32 rotary, v 64, one dense layer
/// (ffn 1536), then 7 MoE layers of 20 routed experts (4 groups, 2 kept, 4 experts per
/// token) of width 384 plus one shared expert; vocab 16384, tied.
fn deepseek_v3_100m(full_kv_cache: bool) -> anyhow::Result<ModelConfig> {
    let mut cfg: ModelConfig = serde_json::from_value(serde_json::json!({
        "architectures": ["DeepseekV3ForCausalLM"],
        "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8,
        "num_attention_heads": 8, "vocab_size": 16384, "tie_word_embeddings": true,
        "max_position_embeddings": 4096, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
        "deepseek_v3": {
            "q_lora_rank": 192, "kv_lora_rank": 128, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32,
            "v_head_dim": 64, "n_routed_experts": 20, "n_shared_experts": 1, "moe_intermediate_size": 384,
            "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2, "first_k_dense_replace": 1,
            "norm_topk_prob": true, "routed_scaling_factor": 2.5, "rope_interleave": true,
        },
    }))?;
    if let Some(ds) = cfg.deepseek_v3.as_mut() {
        ds.full_kv_cache = full_kv_cache;
    }
    Ok(cfg)
}

/// The model config of a preset.
pub fn preset(name: &str) -> anyhow::Result<ModelConfig> {
    let (h, l, heads, kv, ffn, vocab) = match name {
        "deepseek-v3-100m" => return deepseek_v3_100m(false),
        // The same model decoding over expanded per-head keys and values (the baseline
        // the compressed MLA cache is measured against).
        "deepseek-v3-100m-full-kv" => return deepseek_v3_100m(true),
        "small" => (256, 4, 4, 2, 688, 512),
        "medium" => (512, 8, 8, 2, 1376, 4096),
        "qwen2.5-0.5b" => (896, 24, 14, 2, 4864, 151936),
        "r1-distill-qwen-1.5b" => (1536, 28, 12, 2, 8960, 151936),
        // The default job's model (its recipe's `[model.init]`: 0.76M parameters, byte-level
        // vocabulary); its GRPO stage draws 128 completions of ≤ 48 tokens per step.
        "default-job" => {
            let (m, _) = default_job()?;
            let kv = m.kv_heads();
            (
                m.hidden_size,
                m.num_hidden_layers,
                m.num_attention_heads,
                kv,
                m.intermediate_size,
                m.vocab_size,
            )
        }
        other => bail!(
            "unknown preset `{other}` (small, medium, qwen2.5-0.5b, r1-distill-qwen-1.5b, default-job, \
             deepseek-v3-100m, deepseek-v3-100m-full-kv)"
        ),
    };
    Ok(serde_json::from_value(serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"],
        "hidden_size": h, "intermediate_size": ffn, "num_hidden_layers": l,
        "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab,
        "tie_word_embeddings": true, "max_position_embeddings": 4096, "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
    }))?)
}

/// The default job (`r1host run` without a recipe, `pipeline::DEFAULT_RECIPE`): the model
/// of its `[model.init]` and the `max_completion_length` of its first GRPO stage.
fn default_job() -> anyhow::Result<(ModelConfig, usize)> {
    use crate::pipeline::recipe::{Recipe, StageSpec};

    let recipe =
        Recipe::from_toml(crate::pipeline::DEFAULT_RECIPE).map_err(|e| anyhow::anyhow!("the default recipe: {e}"))?;
    let completion = recipe
        .stages
        .iter()
        .find_map(|s| match s {
            StageSpec::Grpo { grpo, .. } => Some(grpo.grpo.max_completion_length),
            _ => None,
        })
        .context("the default recipe has no GRPO stage")?;
    let model = recipe.model.init.context("the default recipe has no [model.init]")?;
    Ok((model, completion))
}

pub(super) struct NoText;

impl Detokenizer for NoText {
    fn decode(&self, tokens: &[u32]) -> String {
        format!("{} tokens", tokens.len())
    }
    fn eos_id(&self) -> Option<u32> {
        None
    }
}

/// The model-shape arguments the reference scripts take (hidden layers heads kv ffn
/// vocab), then `extra`.
fn shape_args(c: &ModelConfig, extra: &[usize]) -> Vec<String> {
    [
        c.hidden_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.kv_heads(),
        c.intermediate_size,
        c.vocab_size,
    ]
    .iter()
    .chain(extra)
    .map(|v| v.to_string())
    .collect()
}

pub(super) fn run_reference(python: &str, script: &PathBuf, args: &[String]) -> anyhow::Result<serde_json::Value> {
    run_reference_with(python, script, args, &[])
}

/// [`run_reference`] for a preset: a DeepSeek-V3 preset's whole `config.json` goes to the
/// script in `R1_MODEL_CONFIG` (the shape arguments cannot describe MLA and the experts).
/// With `--compute bf16` the script gets `R1_COMPUTE=bf16` (torch's bf16 autocast), so
/// both sides compute their products in bf16.
fn run_reference_for(
    python: &str,
    script: &PathBuf,
    cfg: &ModelConfig,
    shape: &Shape,
    args: &[String],
) -> anyhow::Result<serde_json::Value> {
    let mut envs = compute_env(shape);
    if cfg.deepseek_v3.is_some() {
        envs.push(("R1_MODEL_CONFIG", crate::io::hf_config::hf_config_json(cfg)?));
    }
    run_reference_with(python, script, args, &envs)
}

/// `R1_COMPUTE=bf16` for a reference script when `--compute bf16` was given.
fn compute_env(shape: &Shape) -> Vec<(&'static str, String)> {
    match shape.device.compute {
        Compute::Bf16 => vec![("R1_COMPUTE", "bf16".to_string())],
        Compute::F32 => Vec::new(),
    }
}

/// Runs a reference script with `envs` set and returns the last JSON line it printed.
fn run_reference_with(
    python: &str,
    script: &PathBuf,
    args: &[String],
    envs: &[(&str, String)],
) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
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
    if let BenchWhat::Serve {
        shape,
        clients,
        tokens,
        prompt,
        min_secs,
        cache,
        temperature,
    } = &args.what
    {
        return super::bench_serve::bench_serve(
            &shape.preset,
            &shape.device,
            clients,
            super::bench_serve::Load {
                tokens: *tokens,
                prompt: *prompt,
                min_secs: *min_secs,
                cache: cache.types(),
                temperature: *temperature,
            },
        );
    }
    if let BenchWhat::Rollout {
        shape,
        workers,
        groups,
        generations,
        completion,
        prompt,
        lora,
        in_flight,
    } = &args.what
    {
        return super::bench_rollout::bench_rollout(
            &shape.preset,
            &shape.device,
            super::bench_rollout::RolloutLoad {
                workers: workers.clone(),
                groups: *groups,
                generations: *generations,
                completion: *completion,
                prompt: *prompt,
                lora: *lora,
                in_flight: *in_flight,
            },
        );
    }
    let device = args.what.shape().device.clone();
    with_backend(&device, args.what)
}

impl BenchWhat {
    fn shape(&self) -> &Shape {
        match self {
            BenchWhat::Train { shape, .. }
            | BenchWhat::Decode { shape, .. }
            | BenchWhat::Grpo { shape, .. }
            | BenchWhat::Serve { shape, .. }
            | BenchWhat::Rollout { shape, .. } => shape,
        }
    }
}

impl BackendJob for BenchWhat {
    type Output = ();

    fn run<B: Backend>(self, backend: &B) -> anyhow::Result<()>
    where
        B::Buffer: Send + Sync,
    {
        match self {
            BenchWhat::Train {
                shape,
                batch,
                seq,
                steps,
                optimizer,
                reference,
                python,
            } => bench_train(backend, &shape, [batch, seq, steps], optimizer, reference, &python),
            BenchWhat::Grpo {
                shape,
                generations,
                prompts,
                generation_kv_cache_mib,
                completion,
                steps,
                lora,
                base_type,
                gradient_checkpointing,
                reference,
                python,
            } => bench_grpo(
                backend,
                &shape,
                GrpoBench {
                    generations,
                    prompts,
                    generation_kv_cache_mib,
                    completion,
                    steps,
                    lora,
                    base_type: &base_type,
                    gradient_checkpointing,
                },
                reference,
                &python,
            ),
            BenchWhat::Decode {
                shape,
                model: Some(model),
                tokens,
                prompt,
                batch,
                rounds,
                cache,
                reference,
                python,
            } => bench_decode_model(
                backend,
                &model,
                &shape.device,
                DecodeRun {
                    tokens,
                    prompt: prompt.unwrap_or(128),
                    batch,
                    rounds,
                    cache: cache.types(),
                },
                reference,
                &python,
            ),
            BenchWhat::Decode {
                shape,
                model: None,
                tokens,
                prompt,
                batch,
                reference,
                python,
                ..
            } => bench_decode(backend, &shape, tokens, prompt.unwrap_or(16), batch, reference, &python),
            BenchWhat::Serve { .. } => bail!("bench serve runs its own engine thread"),
            BenchWhat::Rollout { .. } => bail!("bench rollout runs its own workers"),
        }
    }
}

/// `--optimizer`'s value, by the recipe's names.
fn parse_optimizer(name: &str) -> Result<OptimizerType, String> {
    serde_json::from_value(serde_json::Value::String(name.into())).map_err(|e| e.to_string())
}

/// `r1host bench train`: see [`BenchWhat::Train`].
fn bench_train<B: Backend>(
    be: &B,
    shape: &Shape,
    [batch, seq, steps]: [usize; 3],
    optimizer: OptimizerType,
    reference: Option<PathBuf>,
    python: &str,
) -> anyhow::Result<()> {
    let cfg = preset(&shape.preset)?;
    let layout = ParamLayout::for_config(&cfg);
    let params = random_params(be, &cfg, 0)?;
    let mut opt = AdamW::new(
        be,
        &layout,
        OptimConfig {
            optimizer,
            learning_rate: 1e-4,
            ..Default::default()
        },
    )?;
    let mut graph = LmGraph::new(be, &cfg, batch, seq, Objective::CrossEntropy)?;
    let mut rng = Rng::new(1);
    let ids: Vec<i32> = (0..batch * seq)
        .map(|_| rng.below(cfg.vocab_size as u64) as i32)
        .collect();
    let targets: Vec<i32> = ids.iter().skip(1).copied().chain([-1]).collect();
    let w = vec![1.0 / (batch * seq) as f32; batch * seq];
    let mut step = |graph: &mut LmGraph<B>| -> anyhow::Result<f64> {
        let (loss, _) = graph.forward(
            be,
            &params,
            &Feed {
                ids: &ids,
                targets: &targets,
                weights: Some(&w),
            },
        )?;
        graph.backward(be, &params, None)?;
        graph.for_each_grad(&params, |i, g| opt.accumulate(be, i, g, true))?;
        let t = Instant::now();
        opt.step(be, &params, 1e-4, 1.0, f64::from(loss[0]))?;
        // The optimizer's own time (the step's other part is forward and backward).
        Ok(t.elapsed().as_secs_f64())
    };
    let rate = bench_bound::gemm_rate(be, (batch * seq).min(4096), cfg.hidden_size, cfg.intermediate_size)?;
    step(&mut graph)?; // warm-up: arena, caches
    let t = Instant::now();
    let mut optimizer_secs = 0.0;
    for _ in 0..steps {
        optimizer_secs += step(&mut graph)?;
    }
    let secs = t.elapsed().as_secs_f64();
    let tps = (steps * batch * seq) as f64 / secs;
    let mut line = serde_json::json!({
        "bench": "train", "preset": shape.preset, "params": layout.num_params(), "backend": be.name(),
        "batch": [batch, seq], "r1_train_tok_s": (tps * 10.0).round() / 10.0,
        "activation_mb": graph.arena_bytes() as f64 / 1e6,
        "optimizer": optimizer, "optimizer_state_mb": (opt.moments.bytes() as f64 / 1e5).round() / 10.0,
        "optimizer_share": ((optimizer_secs / secs) * 1000.0).round() / 1000.0,
        "r1_peak_rss_mb": super::bench_decode::peak_rss_bytes().map(|b| (b as f64 / 1e5).round() / 10.0),
    });
    let tokens = (batch * seq) as f64;
    let flops = bench_bound::training_flops(&cfg, tokens, batch as f64 * bench_bound::causal_attended(0, seq), false);
    let mut reference_step_s = None;
    if let Some(script) = reference {
        let a = shape_args(&cfg, &[4, seq, batch]);
        let r = run_reference_for(python, &script, &cfg, shape, &a)?;
        let reference_tps = r.get("train_tok_s").and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
        reference_step_s = Some(tokens / reference_tps);
        line["reference"] = r;
        line["speedup"] = serde_json::json!((tps / reference_tps * 100.0).round() / 100.0);
    }
    line["bound"] = bench_bound::bound_fields(flops, rate, tokens / tps, reference_step_s);
    crate::outln!("{line}")?;
    Ok(())
}

/// `r1host bench decode`: see [`BenchWhat::Decode`].
fn bench_decode<B: Backend>(
    be: &B,
    shape: &Shape,
    tokens: usize,
    prompt_len: usize,
    batch: usize,
    reference: Option<PathBuf>,
    python: &str,
) -> anyhow::Result<()> {
    let cfg = preset(&shape.preset)?;
    let params = random_params(be, &cfg, 0)?;
    let mut engine = Engine::new(cfg.clone());
    let prompt: Vec<u32> = (0..prompt_len).map(|i| (i * 7 % cfg.vocab_size) as u32).collect();
    let g = GenerationConfig {
        max_new_tokens: tokens,
        sampling: SamplingParams::greedy(),
        stop: vec![],
    };
    let mut rng = Rng::new(0);
    let warm_up = GenerationConfig {
        max_new_tokens: 4,
        ..g.clone()
    };
    engine.generate(be, &params, &NoText, &prompt, 1, &warm_up, &mut rng, |_, _| {})?;
    let t = Instant::now();
    let out = engine.generate(be, &params, &NoText, &prompt, batch, &g, &mut rng, |_, _| {})?;
    let secs = t.elapsed().as_secs_f64();
    let n: usize = out.iter().map(|c| c.tokens.len()).sum();
    let tps = n as f64 / secs;
    let mut line = serde_json::json!({
        "bench": "decode", "preset": shape.preset, "backend": be.name(), "batch": batch, "tokens": n,
        "r1_decode_tok_s": (tps * 10.0).round() / 10.0, "params": cfg.num_params(),
        "kv_bytes_per_token": engine.kv_bytes_per_token(),
    });
    if let Some(script) = reference {
        // Decode only: the script's training part runs one tiny step.
        let a = shape_args(&cfg, &[tokens, 16, 1]);
        let r = run_reference_for(python, &script, &cfg, shape, &a)?;
        let reference_tps = r.get("decode_tok_s").and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
        line["reference"] = r;
        line["speedup"] = serde_json::json!((tps / reference_tps * 100.0).round() / 100.0);
    }
    crate::outln!("{line}")?;
    Ok(())
}

/// `r1host bench grpo`: see [`BenchWhat::Grpo`].
#[allow(clippy::too_many_arguments)]
/// What `bench grpo` trains.
struct GrpoBench<'a> {
    generations: usize,
    prompts: usize,
    generation_kv_cache_mib: usize,
    completion: Option<usize>,
    steps: usize,
    lora: Option<usize>,
    base_type: &'a str,
    gradient_checkpointing: bool,
}

/// Random weights of `cfg` (transformers' initialisation) with every 2-D matrix whose rows
/// are whole blocks stored as `ty` (f32: all in the flat buffer): each tensor drawn in f32
/// and uploaded or converted before the next is drawn, so the f32 model never exists whole
/// on the host (the peak memory measured is the run's, not the set-up's).
fn random_stored_params<B: Backend>(
    be: &B,
    cfg: &ModelConfig,
    ty: r1_core::quant::GgmlType,
) -> anyhow::Result<crate::weights::ParamBuffer<B>> {
    use crate::weights::{ParamBuffer, StoredBytes, StoredTensor};
    let stored_as_ty = |s: &r1_core::model::ParamSpec| {
        ty != r1_core::quant::GgmlType::F32 && s.dims.len() == 2 && s.dims[1].is_multiple_of(ty.block_size())
    };
    let specs = cfg.param_specs();
    let f32_specs: Vec<_> = specs.iter().filter(|s| !stored_as_ty(s)).cloned().collect();
    let mut params = ParamBuffer::zeros(be, ParamLayout::new(&f32_specs))?;
    let mut rng = Rng::new(0);
    for s in specs {
        let values = crate::weights::init_values(&s, &mut rng);
        if stored_as_ty(&s) {
            let bytes = r1_core::quant::quantize(ty, &values).map_err(|e| anyhow::anyhow!("{}: {e}", s.name))?;
            let t = StoredTensor {
                desc: r1_core::TensorDesc::new(ty.dtype(), &s.dims),
                name: s.name,
                bytes: StoredBytes::Owned(bytes),
            };
            params.add_stored(be, &t)?;
        } else {
            params.upload(be, &s.name, &values)?;
        }
    }
    Ok(params)
}

/// Tokens of each `bench grpo` prompt.
const PROMPT_TOKENS: usize = 20;

fn bench_grpo<B: Backend>(
    be: &B,
    shape: &Shape,
    bench: GrpoBench<'_>,
    reference: Option<PathBuf>,
    python: &str,
) -> anyhow::Result<()> {
    let GrpoBench {
        generations,
        prompts: prompts_per_step,
        generation_kv_cache_mib,
        completion,
        steps,
        lora,
        base_type,
        gradient_checkpointing,
    } = bench;
    let prompts_per_step = prompts_per_step.max(1);
    use std::sync::Arc;

    use r1_core::reward::{Accuracy, AccuracyConfig, Sample, ThinkFormat, ThinkFormatConfig};

    use crate::train::grpo::{GrpoPrompt, GrpoTrainConfig, GrpoTrainer, NamedReward};
    use crate::train::optim::LrSchedule;

    let cfg = preset(&shape.preset)?;
    let l = match (completion, shape.preset.as_str()) {
        (Some(l), _) => l,
        (None, "small") => 64,
        (None, "default-job") => default_job()?.1,
        (None, _) => 128,
    };
    let params = match lora {
        None => random_params(be, &cfg, 0)?,
        Some(rank) => {
            use r1_core::quant::GgmlType;
            let ty = match base_type {
                "f32" => GgmlType::F32,
                "bf16" => GgmlType::BF16,
                "q8_0" => GgmlType::Q8_0,
                "q4_0" => GgmlType::Q4_0,
                "q4_k" => GgmlType::Q4_K,
                other => bail!("--base-type {other}: use f32, bf16, q8_0, q4_0 or q4_k"),
            };
            let base = random_stored_params(be, &cfg, ty)?;
            let spec = r1_core::model::LoraSpec {
                rank,
                alpha: 2.0 * rank as f32,
                dropout: 0.0,
                rslora: false,
                targets: r1_core::model::LoraTargets::all_linear(),
            };
            crate::weights::ParamBuffer::new_adapter(be, Arc::new(base), &cfg, spec, 0)?
        }
    };
    // 64 prompts of PROMPT_TOKENS tokens (TRL's arithmetic prompts are about that long).
    let mut rng = Rng::new(1);
    let prompts: Vec<GrpoPrompt> = (0..64)
        .map(|i| GrpoPrompt {
            sample: Sample {
                prompt: format!("prompt {i}"),
                reference: Some(format!("{}", 10 + i)),
                ..Default::default()
            },
            tokens: (0..PROMPT_TOKENS)
                .map(|_| rng.below(cfg.vocab_size as u64) as u32)
                .collect(),
        })
        .collect();
    let mut config = GrpoTrainConfig {
        per_device_train_batch_size: generations * prompts_per_step,
        max_steps: steps + 1,
        gradient_checkpointing,
        generation_kv_cache_mib,
        optim: OptimConfig {
            learning_rate: 1e-5,
            lr_scheduler_type: LrSchedule::Constant,
            ..OptimConfig::default()
        },
        ..GrpoTrainConfig::default()
    };
    config.grpo.num_generations = generations;
    config.grpo.max_completion_length = l;
    config.grpo.beta = 0.04;
    let rewards = vec![
        NamedReward {
            name: "format".into(),
            reward: Arc::new(ThinkFormat::new(ThinkFormatConfig::default()).map_err(|e| anyhow::anyhow!("{e}"))?),
        },
        NamedReward {
            name: "accuracy".into(),
            reward: Arc::new(Accuracy::new(AccuracyConfig::default()).map_err(|e| anyhow::anyhow!("{e}"))?),
        },
    ];
    // The floor's GEMM, measured before the step's buffers exist: the scoring pass's
    // activations (prompts plus completions) by the MLP's up projection.
    let rate = bench_bound::gemm_rate(
        be,
        (generations * prompts_per_step * (PROMPT_TOKENS + l)).min(4096),
        cfg.hidden_size,
        cfg.intermediate_size,
    )?;
    let mut trainer = GrpoTrainer::new(be, cfg.clone(), &params, config, rewards, prompts)?;
    let mut times = Vec::new();
    let mut generation = Vec::new();
    let mut tokens = Vec::new();
    while trainer.state.step < steps + 1 {
        let t = Instant::now();
        let mut report = None;
        trainer.train_generation(be, &params, &NoText, |r| {
            report = Some(r.metrics.clone());
            Ok(())
        })?;
        if trainer.state.step > 1 {
            times.push(t.elapsed().as_secs_f64());
            if let Some(m) = report {
                generation.push(m.get("generation_time").and_then(|v| v.as_f64()).unwrap_or(f64::NAN));
                tokens.push(
                    m.get("completions/mean_length")
                        .and_then(|v| v.as_f64())
                        .unwrap_or(f64::NAN),
                );
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let step_s = median(&mut times.clone());
    let mut line = serde_json::json!({
        "bench": "grpo", "preset": shape.preset, "G": generations, "prompts_per_step": prompts_per_step, "generation_kv_cache_mib": generation_kv_cache_mib, "L": l, "beta": 0.04,
        "r1_step_s_median": (step_s * 1e4).round() / 1e4, "r1_steps_s": times,
        "r1_generation_s_median": (median(&mut generation) * 1e4).round() / 1e4,
        "completions_mean_length": tokens,
        "lora_r": lora, "base_type": lora.map(|_| base_type), "gradient_checkpointing": gradient_checkpointing,
        "trained_params": params.layout.num_params(),
        "weights_resident_mb": (params.resident_bytes() as f64 / 1e5).round() / 10.0,
        "r1_peak_rss_mb": super::bench_decode::peak_rss_bytes().map(|b| (b as f64 / 1e5).round() / 10.0),
    });
    // The floor: generation (each group's prompt once, then a one-token forward
    // per completion token after the first) and scoring (the policy's training pass and,
    // as β ≠ 0, the reference's forward over prompt + completion).
    let n = (generations * prompts_per_step) as f64;
    let len = median(&mut tokens.clone()).round().max(1.0) as usize;
    let decode_attended: f64 = (1..len).map(|i| (PROMPT_TOKENS + i) as f64).sum();
    let scored = PROMPT_TOKENS + len;
    let flops = (|| {
        let generation = prompts_per_step as f64
            * bench_bound::forward_flops(
                &cfg,
                PROMPT_TOKENS as f64,
                bench_bound::causal_attended(0, PROMPT_TOKENS),
            )?
            + bench_bound::forward_flops(&cfg, n * (len - 1) as f64, n * decode_attended)?;
        let attended = n * bench_bound::causal_attended(0, scored);
        let policy = bench_bound::training_flops(&cfg, n * scored as f64, attended, lora.is_some())?;
        let reference = bench_bound::forward_flops(&cfg, n * scored as f64, attended)?;
        Some(generation + policy + reference)
    })();
    let mut reference_step_s = None;
    if let Some(script) = reference {
        let args = shape_args(&cfg, &[]);
        let mut envs = compute_env(shape);
        envs.extend([
            ("G", generations.to_string()),
            ("PROMPTS_PER_STEP", prompts_per_step.to_string()),
            ("L", l.to_string()),
            ("STEPS", steps.to_string()),
        ]);
        if let Some(rank) = lora {
            envs.push(("LORA_R", rank.to_string()));
        }
        if gradient_checkpointing {
            envs.push(("GRADIENT_CHECKPOINTING", "1".into()));
        }
        let r = run_reference_with(python, &script, &args, &envs)?;
        let reference_s = r.get("step_s_median").and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
        reference_step_s = Some(reference_s);
        line["reference"] = r;
        line["speedup"] = serde_json::json!((reference_s / step_s * 100.0).round() / 100.0);
    }
    line["bound"] = bench_bound::bound_fields(flops, rate, step_s, reference_step_s);
    crate::outln!("{line}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_job_preset_is_the_default_recipes_model_and_completion_length() {
        let (model, completion) = default_job().expect("default job");
        let p = preset("default-job").expect("preset");
        assert_eq!(
            (p.hidden_size, p.num_hidden_layers, p.num_attention_heads, p.kv_heads()),
            (
                model.hidden_size,
                model.num_hidden_layers,
                model.num_attention_heads,
                model.kv_heads()
            )
        );
        assert_eq!(
            (p.intermediate_size, p.vocab_size),
            (model.intermediate_size, model.vocab_size)
        );
        assert_eq!(
            (p.hidden_size, p.intermediate_size, p.vocab_size, completion),
            (128, 344, 261, 48)
        );
    }
}
