//! What every handler shares: the configuration, the models, the reward plugins, the
//! metrics, extra routes (training jobs) and what to do at shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;

use super::best_of::RewardPlugins;
use super::error::ServeError;
use super::metrics::Metrics;
use super::registry::ModelRegistry;

/// The server's settings (defaults in [`ServeConfig::default`]).
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Required as `Authorization: Bearer <key>` on every endpoint but `/health`.
    pub api_key: Option<String>,
    /// Largest request body (413 above).
    pub max_body_bytes: usize,
    /// Most choices (`n`) and candidates (`best_of`) per prompt.
    pub max_n: usize,
    /// Most tokens a request may ask for (`max_tokens`); `None`: the context is the limit.
    pub max_tokens_limit: Option<usize>,
    /// How long running requests may take to finish after a shutdown signal.
    pub drain_timeout: Duration,
    /// `POST /v1/weights` replaces served weights (needs `api_key`).
    pub weight_updates: bool,
    /// Largest body of `POST /v1/weights`.
    pub max_weights_bytes: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            api_key: None,
            max_body_bytes: 4 << 20,
            max_n: 16,
            max_tokens_limit: None,
            drain_timeout: Duration::from_secs(30),
            weight_updates: false,
            max_weights_bytes: 16 << 30,
        }
    }
}

/// Called once when the server stops (after requests drained, before engines stop).
pub type ShutdownHook = Box<dyn FnOnce() + Send>;

/// The shared state of the server. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: ServeConfig,
    models: ModelRegistry,
    rewards: RewardPlugins,
    metrics: Metrics,
    started: u64,
    draining: AtomicBool,
    next_id: AtomicU64,
    id_salt: u64,
    extra_routes: Mutex<Vec<Router>>,
    hooks: Mutex<Vec<ShutdownHook>>,
}

impl AppState {
    pub fn new(config: ServeConfig, models: ModelRegistry, rewards: RewardPlugins) -> Result<Self, ServeError> {
        let started = super::response::unix_now();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Ok(AppState {
            inner: Arc::new(Inner {
                config,
                models,
                rewards,
                metrics: Metrics::new()?,
                started,
                draining: AtomicBool::new(false),
                next_id: AtomicU64::new(0),
                id_salt: r1_core::sampling::Rng::new(nanos ^ u64::from(std::process::id())).next_u64(),
                extra_routes: Mutex::new(Vec::new()),
                hooks: Mutex::new(Vec::new()),
            }),
        })
    }

    pub fn config(&self) -> &ServeConfig {
        &self.inner.config
    }

    pub fn models(&self) -> &ModelRegistry {
        &self.inner.models
    }

    pub fn rewards(&self) -> &RewardPlugins {
        &self.inner.rewards
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Unix time the server started (`created` of `/v1/models` entries).
    pub fn started(&self) -> u64 {
        self.inner.started
    }

    /// Serves `router` (e.g. `serve::jobs::router(…)`) next to the API, behind the same
    /// authentication, body limit and metrics. Call before [`super::app`].
    pub fn add_routes(&self, router: Router) {
        if let Ok(mut routes) = self.inner.extra_routes.lock() {
            routes.push(router);
        }
    }

    pub(crate) fn extra_routes(&self) -> Vec<Router> {
        self.inner.extra_routes.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Runs `hook` when the server stops (training jobs stop their workers here).
    pub fn on_shutdown(&self, hook: impl FnOnce() + Send + 'static) {
        if let Ok(mut hooks) = self.inner.hooks.lock() {
            hooks.push(Box::new(hook));
        }
    }

    /// A fresh id suffix for `chatcmpl-…`.
    pub fn request_id(&self) -> String {
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{n:08x}", self.inner.id_salt)
    }

    /// A seed for a request that gave none: different for every request.
    pub fn fresh_seed(&self) -> u64 {
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        r1_core::sampling::Rng::new(self.inner.id_salt ^ n.rotate_left(32)).next_u64()
    }

    /// The server is stopping: new generation requests are refused (503).
    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    pub(crate) fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    /// Runs the shutdown hooks and stops the engines (finishing their running requests
    /// first when `drain`).
    pub async fn shutdown(&self, drain: bool) {
        self.start_draining();
        let hooks: Vec<ShutdownHook> = self
            .inner
            .hooks
            .lock()
            .map(|mut h| h.drain(..).collect())
            .unwrap_or_default();
        let state = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for hook in hooks {
                hook();
            }
            state.models().shutdown(drain);
        })
        .await;
    }
}
