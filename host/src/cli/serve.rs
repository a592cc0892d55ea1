//! `r1host serve`: loads the models and reward plugins, binds the address (refusing a
//! non-loopback one without an API key), prints `listening on http://ADDR` and serves
//! the OpenAI-compatible API until SIGINT or SIGTERM, then drains and exits 0.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::cli::cache_types::CacheTypeArgs;
use crate::device::DeviceArgs;
use crate::engine::service::{EngineService, ServiceOptions};
use crate::plugin::{HostConfig, PluginConfig};
use crate::serve::jobs::{JobManager, JobPolicy};
use crate::serve::{AppState, Generator, ModelLoader, ModelRegistry, RewardPlugins, ServeConfig, ServeError};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A model directory, GGUF file or checkpoint to serve, optionally named (`PATH=NAME`; default
    /// name: the directory or file stem). Repeatable; optional with `--state-dir` (a
    /// daemon for training jobs, which serves their models once they finish).
    #[arg(long = "model", value_name = "PATH[=NAME]", required_unless_present_any = ["state_dir", "runs"])]
    pub models: Vec<String>,
    /// Address to listen on. Anything but a loopback address needs an API key.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Required as `Authorization: Bearer <key>` on every endpoint but /health.
    #[arg(long, env = "R1_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// KV-cache memory per model, MiB (counted in bytes of the cache types below).
    #[arg(long, default_value_t = 512)]
    pub kv_cache_mib: usize,
    #[command(flatten)]
    pub cache: CacheTypeArgs,
    /// Context (prompt + completion) per sequence; default and cap: the model's.
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Sequences decoded together at most, per model.
    #[arg(long, default_value_t = 32)]
    pub max_batch: usize,
    /// Requests waiting beyond those running, per model; past it requests get 429.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Largest request body, bytes (413 above).
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Most choices (`n`) and best-of-N candidates per prompt.
    #[arg(long, default_value_t = 16)]
    pub max_n: usize,
    /// Most tokens one completion may ask for (`max_tokens`); default: the context.
    #[arg(long)]
    pub max_tokens_limit: Option<usize>,
    /// A reward plugin for best-of-N requests (`"reward": "NAME"`). Repeatable.
    #[arg(long = "reward-plugin", value_name = "NAME=PATH")]
    pub reward_plugins: Vec<String>,
    /// Where the server keeps state: training jobs (`jobs/`, needed for `/v1/jobs`) and
    /// the compiled-plugin cache (`plugins/`). Unfinished jobs resume when the server starts.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// A folder of run directories (`r1host run --out …`, `runs/`) the dashboard at `/`
    /// shows beside the jobs. Repeatable.
    #[arg(long = "runs", value_name = "DIR")]
    pub runs: Vec<PathBuf>,
    /// CPU threads of each training job (default: half the cores, at least 1; inference
    /// keeps the rest).
    #[arg(long)]
    pub job_threads: Option<usize>,
    /// Training jobs that run at once; later ones wait, queued.
    #[arg(long, default_value_t = 1)]
    pub max_jobs: usize,
    /// Accept new weights on `POST /v1/weights` (a GRPO trainer generating here pushes
    /// its policy after each step). Needs --api-key.
    #[arg(long)]
    pub weight_updates: bool,
    /// Largest body of `POST /v1/weights`, bytes.
    #[arg(long, default_value_t = 16 << 30)]
    pub max_weights_bytes: usize,
    /// Seconds running requests may take to finish after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout_s: u64,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    http_runtime()?.block_on(serve_main(args))
}

/// The async runtime the server's connections and streams run on (one worker per core);
/// `bench serve` runs its clients on the same kind.
pub(crate) fn http_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("r1-http")
        .build()
        .context("starting the async runtime")
}

async fn serve_main(args: ServeArgs) -> anyhow::Result<()> {
    let api_key = args.api_key.clone().filter(|k| !k.is_empty());
    let addr = resolve_addr(&args.host, args.port, api_key.is_some()).await?;
    if args.weight_updates && api_key.is_none() {
        anyhow::bail!("--weight-updates lets a client replace the served weights: it needs --api-key (or R1_API_KEY)");
    }
    let models = args
        .models
        .iter()
        .map(|m| parse_model_arg(m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let plugins = args
        .reward_plugins
        .iter()
        .map(|p| parse_plugin_arg(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut host = HostConfig::default();
    if let Some(dir) = &args.state_dir {
        host.cache_dir = Some(dir.join("plugins"));
    }
    let rewards = RewardPlugins::load(host, &plugins)?;
    let options = ServiceOptions {
        kv_cache_mib: args.kv_cache_mib,
        context: args.ctx,
        max_batch: args.max_batch,
        max_queue: args.max_queue,
        cache_types: args.cache.types(),
    };
    let device = args.device.clone();
    let loader: ModelLoader = Arc::new(move |path: &Path, name: &str| {
        let service = EngineService::start(&device, path, name, options.clone())?;
        Ok(Arc::new(service) as Arc<dyn Generator>)
    });
    let registry = ModelRegistry::new(Some(loader.clone()));
    for (path, name) in &models {
        eprintln!(
            "loading {name} from {} (kv cache: {})",
            path.display(),
            args.cache.types()
        );
        let loader = loader.clone();
        let (path, owned) = (path.clone(), name.clone());
        let generator = tokio::task::spawn_blocking(move || loader(&path, &owned)).await??;
        registry.insert(generator)?;
    }
    let config = ServeConfig {
        api_key,
        max_body_bytes: args.max_body_bytes,
        max_n: args.max_n.max(1),
        max_tokens_limit: args.max_tokens_limit,
        drain_timeout: Duration::from_secs(args.drain_timeout_s),
        weight_updates: args.weight_updates,
        max_weights_bytes: args.max_weights_bytes,
    };
    let state = AppState::new(config, registry, rewards)?;
    let mut job_manager = None;
    if let Some(dir) = &args.state_dir {
        let mut policy = JobPolicy::default();
        if let Some(t) = args.job_threads {
            policy.threads_per_job = t.max(1);
        }
        policy.max_running = args.max_jobs.max(1);
        policy.compute = args.device.compute;
        let dir = dir.clone();
        let jobs = tokio::task::spawn_blocking(move || JobManager::open(&dir, policy))
            .await?
            .context("opening the training jobs")?;
        let jobs = Arc::new(jobs);
        state.add_routes(crate::serve::jobs::router(jobs.clone()));
        state.models().add_source(jobs.clone());
        job_manager = Some(jobs.clone());
        // Running jobs checkpoint and stop (`interrupted`); they resume on the next start.
        state.on_shutdown(move || jobs.shutdown());
    }
    let runs = crate::serve::dashboard::RunSources {
        jobs: job_manager,
        dirs: args.runs.clone(),
    };
    state.add_routes(crate::serve::dashboard::router(state.clone(), Arc::new(runs)));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{local}")?;
        out.flush()?;
    }
    eprintln!("dashboard: http://{local}/");
    crate::serve::serve(listener, state, shutdown_signal()).await?;
    eprintln!("stopped");
    Ok(())
}

/// The socket address to bind; a non-loopback one is refused without an API key.
async fn resolve_addr(host: &str, port: u16, has_key: bool) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("cannot resolve --host {host}"))?
            .collect(),
    };
    let first = *addrs
        .first()
        .with_context(|| format!("--host {host} resolves to no address"))?;
    if !has_key && addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(ServeError::OpenWithoutKey { host: host.to_string() }.into());
    }
    Ok(first)
}

/// `PATH` or `PATH=NAME`; the name defaults to the directory or file stem.
fn parse_model_arg(arg: &str) -> anyhow::Result<(PathBuf, String)> {
    let (path, name) = match arg.rsplit_once('=') {
        Some((path, name)) if !path.is_empty() && !name.is_empty() && !name.contains('/') => {
            (PathBuf::from(path), name.to_string())
        }
        _ => {
            let path = PathBuf::from(arg);
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .filter(|s| !s.is_empty())
                .with_context(|| format!("--model {arg}: cannot name the model after its path; use PATH=NAME"))?;
            (path, stem)
        }
    };
    Ok((path, name))
}

/// `NAME=PATH`.
fn parse_plugin_arg(arg: &str) -> anyhow::Result<(String, PluginConfig)> {
    match arg.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok((name.to_string(), PluginConfig::new(path))),
        _ => anyhow::bail!("--reward-plugin `{arg}` is not NAME=PATH"),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => eprintln!("SIGINT: draining"),
        () = terminate => eprintln!("SIGTERM: draining"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_args_take_an_optional_name() {
        assert_eq!(
            parse_model_arg("models/tiny").unwrap(),
            (PathBuf::from("models/tiny"), "tiny".to_string())
        );
        assert_eq!(
            parse_model_arg("runs/a.r1ckpt=policy").unwrap(),
            (PathBuf::from("runs/a.r1ckpt"), "policy".to_string())
        );
        assert_eq!(
            parse_model_arg("odd=dir/m.r1ckpt").unwrap(),
            (PathBuf::from("odd=dir/m.r1ckpt"), "m".to_string())
        );
        assert!(parse_plugin_arg("math").is_err());
    }

    #[tokio::test]
    async fn open_addresses_need_a_key() {
        let err = resolve_addr("0.0.0.0", 0, false).await.unwrap_err().to_string();
        assert!(err.contains("without an API key"), "{err}");
        assert!(resolve_addr("0.0.0.0", 0, true).await.is_ok());
        assert!(resolve_addr("127.0.0.1", 0, false).await.is_ok());
        assert!(resolve_addr("::1", 0, false).await.is_ok());
    }
}
