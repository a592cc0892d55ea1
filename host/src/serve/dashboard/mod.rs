//! The web dashboard `r1host serve` serves at `/`: runs and jobs with live curves, the
//! rollouts each GRPO step drew, a chat playground and the server's health — one page,
//! its script and its style sheet compiled into the binary (`assets/`), no network
//! needed by the browser, nothing to install.
//!
//! The page itself holds no data, so `/` and its two assets are served without the API
//! key (see `auth::OPEN_PATHS`); every figure it shows comes from API routes that need
//! the key like the rest (the page asks for it and sends it as a bearer token). What the
//! dashboard adds to the API:
//!
//! - `GET /v1/runs`: every run — the daemon's jobs and each run directory under the
//!   `--runs` folders — with status, stage, step, elapsed time and ETA.
//! - `GET /v1/runs/{id}/metrics`: server-sent events, one per `metrics.jsonl` line —
//!   those written, then each new one as the run appends it (`end` once a job is final).
//! - `GET /v1/runs/{id}/samples`: the rollouts `samples.jsonl` logged (the last
//!   [`MAX_LINES`]), and `GET /v1/runs/{id}/sets/{name}`: a JSONL set the run wrote
//!   (rejection sampling, distillation traces).
//! - `POST /v1/recipes/validate`: a recipe checked as `POST /v1/jobs` would, not started.
//! - `GET /v1/rewards`: the reward plugins best-of-N can name.
//!
//! All text from runs, models and plugins reaches the page as JSON and is put in the
//! document as text nodes, never as markup.

mod runs;

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;

pub use runs::{MAX_LINES, RunSources, RunView};

use crate::serve::jobs::follow_lines;
use crate::serve::{ApiError, AppState};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The paths of the page and its assets (served without the API key: they hold no data).
pub const ASSET_PATHS: [&str; 3] = ["/", "/ui/app.js", "/ui/app.css"];

/// The dashboard's routes: the page, its assets and the run routes over `runs`.
pub fn router(state: AppState, runs: Arc<RunSources>) -> axum::Router {
    let rewards = state.rewards().names();
    axum::Router::new()
        .route("/", get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }))
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/v1/rewards",
            get(move || {
                let data: Vec<_> = rewards
                    .iter()
                    .map(|name| serde_json::json!({"id": name, "object": "reward"}))
                    .collect();
                async move { Json(serde_json::json!({"object": "list", "data": data})) }
            }),
        )
        .route("/v1/recipes/validate", post(validate_recipe))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}/metrics", get(run_metrics))
        .route("/v1/runs/{id}/samples", get(run_samples))
        .route("/v1/runs/{id}/sets/{name}", get(run_set))
        .with_state(runs)
}

/// A compiled-in asset, with a policy that lets it load only the page's own script and
/// style (no inline script runs, so injected markup could not run any).
fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

type Runs = State<Arc<RunSources>>;

async fn list_runs(State(runs): Runs) -> Json<serde_json::Value> {
    let list = tokio::task::spawn_blocking(move || runs.list())
        .await
        .unwrap_or_default();
    Json(serde_json::json!({"object": "list", "data": list}))
}

/// The run `id`, looked up off the async workers (it reads directories).
async fn find(runs: &Arc<RunSources>, id: String) -> Result<RunView, ApiError> {
    let runs = runs.clone();
    tokio::task::spawn_blocking(move || runs.find(&id).ok_or(id))
        .await
        .map_err(|e| ApiError::internal(format!("looking the run up failed: {e}")))?
        .map_err(|id| ApiError::not_found(format!("no run with id `{id}` (GET /v1/runs lists them)")))
}

async fn run_metrics(State(runs): Runs, Path(id): Path<String>) -> Result<Response, ApiError> {
    let run = find(&runs, id).await?;
    Ok(Sse::new(metric_events(runs, run))
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn run_samples(State(runs): Runs, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let run = find(&runs, id).await?;
    let path = run.dir.join("samples.jsonl");
    let lines = tokio::task::spawn_blocking(move || runs::read_json_lines(&path))
        .await
        .map_err(|e| ApiError::internal(format!("reading the samples failed: {e}")))?
        .map_err(ApiError::internal)?;
    Ok(Json(serde_json::json!({"object": "list", "data": lines})))
}

async fn run_set(
    State(runs): Runs,
    Path((id, name)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let run = find(&runs, id).await?;
    // Only the sets the listing found: a name never becomes a path of its own.
    if !run.sets.contains(&name) {
        return Err(ApiError::not_found(format!("run `{}` has no set `{name}`", run.id)));
    }
    let path = run.dir.join(format!("{name}.jsonl"));
    let lines = tokio::task::spawn_blocking(move || runs::read_json_lines(&path))
        .await
        .map_err(|e| ApiError::internal(format!("reading the set failed: {e}")))?
        .map_err(ApiError::internal)?;
    Ok(Json(serde_json::json!({"object": "list", "data": lines})))
}

/// Checks a recipe (TOML body, or JSON `{"recipe": "…"}`) as `POST /v1/jobs` would.
async fn validate_recipe(body: Bytes) -> Result<Json<serde_json::Value>, ApiError> {
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::invalid("recipe", "the recipe is not UTF-8"))?;
    let text = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(o)) => match o.get("recipe") {
            Some(serde_json::Value::String(r)) => r.clone(),
            _ => return Err(ApiError::invalid("recipe", "the JSON body needs a `recipe` string")),
        },
        _ => text.to_string(),
    };
    let recipe = crate::pipeline::Recipe::from_toml(&text)
        .map_err(|e| ApiError::invalid("recipe", format!("invalid recipe: {e}")))?;
    let stages: Vec<&str> = recipe.stages.iter().map(|s| s.name()).collect();
    Ok(Json(
        serde_json::json!({"valid": true, "name": recipe.name, "stages": stages}),
    ))
}

/// A run's metric lines as events: those written, then each new one; a job's stream
/// ends (`event: end` with the run's id) once the job is final, a run directory's is
/// followed until the client leaves.
fn metric_events(runs: Arc<RunSources>, run: RunView) -> impl Stream<Item = Result<Event, Infallible>> {
    let path = run.dir.join("metrics.jsonl");
    follow_lines(path, move || runs.job_finished(&run).then(|| run.id.clone()))
}
