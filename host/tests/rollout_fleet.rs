//! GRPO with generation on a fleet of two `r1host serve` processes
//! (`[stages.grpo.rollout]`): the trainer pushes its weights before each generation,
//! each group goes to one server, and the run draws exactly what in-process generation
//! draws (same weights, same per-group seeds, the same engine code), so its samples and
//! rewards equal the local run's and its weights stay within float noise of them (the
//! importance-sampling weights are 1 only up to the decode/training rounding). A server
//! killed mid-run is dropped and the run finishes on the other.

#[path = "integration/recipe_support/mod.rs"]
mod recipe_support;
#[path = "integration/serve_support/mod.rs"]
mod serve_support;

use std::path::{Path, PathBuf};

use r1_backend_cpu::CpuBackend;
use r1_host::model::Model;
use r1_host::pipeline::{Recipe, run_pipeline};
use r1_host::progress::NoProgress;
use r1_host::stop::StopSignal;
use recipe_support::checkpoint_bits;
use serve_support::ServeProcess;

const KEY: &str = "fleet-test-key";
const KEY_ENV: &str = "R1_FLEET_TEST_KEY";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        // SAFETY: every test of this binary sets the same variable to the same value
        // before it starts any thread of its own.
        unsafe { std::env::set_var(KEY_ENV, KEY) };
        let dir = tempfile::tempdir().expect("tempdir");
        let config = serde_json::from_value(serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "vocab_size": 261, "tie_word_embeddings": true, "max_position_embeddings": 64,
            "eos_token_id": 256,
        }))
        .expect("a model config");
        let backend = CpuBackend::new();
        let model = Model::init(&backend, config, 0).expect("a model");
        model
            .save(&backend, &dir.path().join("model.r1ckpt"), None, Vec::new())
            .expect("save the model");
        let rows: String = (0..16)
            .map(|i| {
                format!(
                    "{}\n",
                    serde_json::json!({"prompt": format!("{i}+{i}=?"), "answer": format!("{}", 2 * i)})
                )
            })
            .collect();
        std::fs::write(dir.path().join("prompts.jsonl"), rows).expect("write prompts");
        Fixture { dir }
    }

    fn model(&self) -> PathBuf {
        self.dir.path().join("model.r1ckpt")
    }

    /// A GRPO recipe of `steps` steps; with `servers`, generation goes to them.
    fn recipe(&self, steps: usize, servers: Option<&[String]>) -> String {
        self.recipe_with(steps, servers, "")
    }

    /// [`Fixture::recipe`] with `extra` TOML at the end of the stage (`[stages.lora]`).
    fn recipe_with(&self, steps: usize, servers: Option<&[String]>, extra: &str) -> String {
        let root = self.dir.path().display();
        let rollout = match servers {
            Some(urls) => format!(
                "[stages.grpo.rollout]\nservers = {urls:?}\napi_key_env = \"{KEY_ENV}\"\nmax_in_flight = 2\nretries = 6\n"
            ),
            None => String::new(),
        };
        format!(
            r#"
name = "fleet"
seed = 3
[model]
path = "{root}/model.r1ckpt"
[data]
kind = "jsonl"
prompts = "{root}/prompts.jsonl"
[[rewards]]
name = "length"
builtin = {{ type = "soft_overlong_punishment", unit = "bytes", max_completion_len = 30, soft_punish_cache = 24 }}
[[stages]]
kind = "grpo"
name = "grpo"
[stages.grpo]
per_device_train_batch_size = 8
max_steps = {steps}
[stages.grpo.optim]
learning_rate = 0.001
[stages.grpo.grpo]
num_generations = 4
max_completion_length = 12
{rollout}{extra}"#
        )
    }

    fn run(&self, text: &str, name: &str) -> PathBuf {
        let recipe = Recipe::from_toml(text).expect("the recipe parses");
        let dir = self.dir.path().join(name);
        run_pipeline(
            &CpuBackend::new(),
            &recipe,
            text,
            &dir,
            false,
            &NoProgress,
            &StopSignal::new(),
        )
        .expect("the pipeline runs")
        .finished()
        .expect("nothing stops it");
        dir
    }

    fn server(&self) -> ServeProcess {
        let model = format!("{}=tiny", self.model().display());
        ServeProcess::start([
            "--model",
            &model,
            "--port",
            "0",
            "--api-key",
            KEY,
            "--weight-updates",
            "--threads",
            "1",
        ])
    }
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a metrics line"))
        .filter(|v: &serde_json::Value| v.get("loss").is_some())
        .collect()
}

fn samples(dir: &Path) -> Vec<(String, Option<f64>)> {
    std::fs::read_to_string(dir.join("samples.jsonl"))
        .expect("samples.jsonl")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a sample line");
            let completion = v["completion"].as_str().unwrap_or_default().to_string();
            (completion, v["reward"].as_f64())
        })
        .collect()
}

fn max_weight_diff(a: &Path, b: &Path) -> f32 {
    let (a, b) = (checkpoint_bits(a), checkpoint_bits(b));
    assert_eq!(a.len(), b.len());
    let mut max = 0.0f32;
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        for (x, y) in va.iter().zip(vb) {
            max = max.max((f32::from_bits(*x) - f32::from_bits(*y)).abs());
        }
    }
    max
}

#[test]
fn grpo_through_two_servers_draws_what_local_generation_draws() {
    let fx = Fixture::new();
    let local = fx.run(&fx.recipe(3, None), "local");
    let (a, b) = (fx.server(), fx.server());
    let urls = [a.url.clone(), b.url.clone()];
    let remote = fx.run(&fx.recipe(3, Some(&urls)), "remote");

    assert_eq!(
        samples(&local),
        samples(&remote),
        "the fleet must draw the local completions"
    );
    let (ml, mr) = (metrics(&local), metrics(&remote));
    assert_eq!(ml.len(), 3);
    assert_eq!(mr.len(), 3);
    for (l, r) in ml.iter().zip(&mr) {
        assert_eq!(l["reward"], r["reward"], "step {}", l["step"]);
        assert_eq!(r["rollout/servers"], 2);
        // The servers sampled with the trainer's weights: importance weights ≈ 1.
        for k in ["min", "max"] {
            let w = r[format!("sampling/importance_sampling_ratio/{k}")]
                .as_f64()
                .expect("IS metric");
            assert!((w - 1.0).abs() < 1e-3, "IS {k} = {w}");
        }
        assert!(r["sampling/logp_diff_max"].as_f64().expect("drift") < 1e-3);
        assert!(r["rollout/weight_sync_time"].as_f64().is_some());
    }
    let diff = max_weight_diff(&local.join("grpo.r1ckpt"), &remote.join("grpo.r1ckpt"));
    assert!(diff < 1e-4, "remote and local weights differ by {diff}");
    // The weights moved: the run trained.
    assert!(max_weight_diff(&fx.model(), &remote.join("grpo.r1ckpt")) > 1e-4);
}

#[test]
fn a_lora_policy_sends_its_base_once_then_adapters() {
    let fx = Fixture::new();
    let lora = "[stages.lora]\nr = 4\nlora_alpha = 8\ntarget_modules = [\"all-linear\"]\n";
    let local = fx.run(&fx.recipe_with(3, None, lora), "local-lora");
    let (a, b) = (fx.server(), fx.server());
    let urls = [a.url.clone(), b.url.clone()];
    let remote = fx.run(&fx.recipe_with(3, Some(&urls), lora), "remote-lora");
    assert_eq!(
        samples(&local),
        samples(&remote),
        "the fleet must draw the local completions"
    );
    let diff = max_weight_diff(&local.join("grpo.r1ckpt"), &remote.join("grpo.r1ckpt"));
    assert!(diff < 1e-4, "remote and local weights differ by {diff}");
    assert!(
        max_weight_diff(&fx.model(), &remote.join("grpo.r1ckpt")) > 1e-5,
        "the adapter trained"
    );
}

/// Kills its server at the first step it hears of (the run is then mid-stage).
struct KillAtFirstStep(std::sync::Mutex<Option<ServeProcess>>);

impl r1_host::progress::Progress for KillAtFirstStep {
    fn log(&self, _line: &str) {}
    fn begin(&self, _label: &str, _total: u64, _done: u64) {}
    fn step(&self, _message: &str) {
        if let Some(mut server) = self.0.lock().expect("the server slot").take() {
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
    }
    fn end(&self) {}
}

#[test]
fn a_server_killed_mid_run_is_dropped_and_the_run_goes_on() {
    let fx = Fixture::new();
    let (a, b) = (fx.server(), fx.server());
    let urls = [a.url.clone(), b.url.clone()];
    let text = fx.recipe(4, Some(&urls));
    let recipe = Recipe::from_toml(&text).expect("the recipe parses");
    let dir = fx.dir.path().join("killed");
    let killer = KillAtFirstStep(std::sync::Mutex::new(Some(b)));
    run_pipeline(
        &CpuBackend::new(),
        &recipe,
        &text,
        &dir,
        false,
        &killer,
        &StopSignal::new(),
    )
    .expect("the run goes on without the killed server")
    .finished()
    .expect("nothing stops it");
    assert!(killer.0.lock().expect("slot").is_none(), "no step was reported");
    let m = metrics(&dir);
    assert_eq!(m.len(), 4, "every step ran");
    assert_eq!(m[0]["rollout/servers"], 2);
    assert_eq!(m[3]["rollout/servers"], 1, "the killed server was dropped");
    drop(a);
}
