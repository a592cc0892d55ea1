//! `r1host serve`: an OpenAI-compatible HTTP API over the engine service — chat and text
//! completions (streamed as server-sent events or not), model listing, health and
//! Prometheus metrics — so the official `openai` client, and llama-server or vLLM
//! clients, work against it unchanged. Best-of-N ranked by a sandboxed reward plugin is
//! the one extension.
//!
//! ```no_run
//! # async fn doc(state: r1_host::serve::AppState) -> Result<(), r1_host::serve::ServeError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! r1_host::serve::serve(listener, state, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

mod auth;
mod best_of;
mod choice;
pub mod dashboard;
mod error;
mod events;
mod generate;
pub mod jobs;
mod metrics;
pub(crate) mod plan;
pub(crate) mod prompt;
mod registry;
pub(crate) mod request;
mod response;
mod state;
pub mod weights;

use std::future::{Future, IntoFuture};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;

pub use best_of::{CandidateScore, RewardPlugins};
pub use error::{ApiError, ServeError};
pub use metrics::Metrics;
pub use plan::{COMPLETIONS_DEFAULT_MAX_TOKENS, Endpoint, MAX_STOP_STRINGS, MAX_TOP_LOGPROBS};
pub use registry::{Generator, LoadedModel, ModelLoader, ModelRegistry, ModelSource};
pub use state::{AppState, ServeConfig, ShutdownHook};

use request::{BodyLimit, GenerationBody, JsonBody};

/// The paths of the API, as `/metrics` labels them (anything else is `other`).
const ENDPOINTS: [&str; 6] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/health",
    "/metrics",
    "/v1/weights",
];

/// The API as a router: the OpenAI endpoints, `/health`, `/metrics`, and the routes
/// added with [`AppState::add_routes`], all behind the same layers (metrics, panic
/// guard, API key, body limit).
pub fn app(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}", get(get_model))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        // A model's worth of bytes: its own body limit, over the global one.
        .route(
            "/v1/weights",
            post(weights::update_weights).layer(DefaultBodyLimit::max(state.config().max_weights_bytes)),
        )
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state.clone());
    // Training jobs (`serve::jobs::router`) and other extensions plug in here.
    for extra in state.extra_routes() {
        router = router.merge(extra);
    }
    let limit = state.config().max_body_bytes;
    router
        .fallback(|method: Method, uri: Uri| async move { ApiError::no_route(method.as_str(), uri.path()) })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::Extension(BodyLimit(limit)))
        .layer(middleware::from_fn_with_state(state.clone(), auth::require_key))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::internal("internal error: the request handler panicked; the server goes on").into_response()
        }))
        .layer(middleware::from_fn_with_state(state, record_request))
}

/// Serves `state` on `listener` until `shutdown` completes; then stops accepting, lets
/// running requests (streams included) finish for up to `drain_timeout`, runs the
/// shutdown hooks and stops the engines.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let draining = state.clone();
    let graceful = async move {
        shutdown.await;
        draining.start_draining();
        let _ = signalled_tx.send(());
    };
    let server = axum::serve(listener, app(state.clone())).with_graceful_shutdown(graceful);
    let drain_timeout = state.config().drain_timeout;
    let drain_deadline = async move {
        match signalled_rx.await {
            Ok(()) => tokio::time::sleep(drain_timeout).await,
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let drained = tokio::select! {
        result = server.into_future() => {
            result?;
            true
        }
        () = drain_deadline => false,
    };
    state.shutdown(drained).await;
    Ok(())
}

async fn chat_completions(State(state): State<AppState>, JsonBody(body): JsonBody<GenerationBody>) -> Response {
    generation(state, Endpoint::Chat, body).await
}

async fn completions(State(state): State<AppState>, JsonBody(body): JsonBody<GenerationBody>) -> Response {
    generation(state, Endpoint::Completions, body).await
}

async fn generation(state: AppState, endpoint: Endpoint, body: GenerationBody) -> Response {
    let started = Instant::now();
    if state.draining() {
        return ApiError::shutting_down().into_response();
    }
    let result = async {
        let plan = plan::plan(&state, endpoint, body).await?;
        if plan.stream {
            generate::stream(state.clone(), plan, started)
        } else {
            generate::respond(state.clone(), plan, started).await
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

fn model_entry(state: &AppState, name: &str) -> serde_json::Value {
    let loaded = state.models().loaded();
    let context = loaded
        .iter()
        .find(|m| m.name() == name)
        .map(|m| m.generator.model().context);
    let mut entry = json!({"id": name, "object": "model", "created": state.started(), "owned_by": "r1"});
    if let (Some(obj), Some(context)) = (entry.as_object_mut(), context) {
        obj.insert("max_model_len".into(), json!(context));
    }
    entry
}

async fn list_models(State(state): State<AppState>) -> Response {
    let data: Vec<serde_json::Value> = state.models().names().iter().map(|n| model_entry(&state, n)).collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn get_model(State(state): State<AppState>, Path(model): Path<String>) -> Response {
    if state.models().names().contains(&model) {
        axum::Json(model_entry(&state, &model)).into_response()
    } else {
        ApiError::model_not_found(&model).into_response()
    }
}

async fn health(State(state): State<AppState>) -> Response {
    if state.draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "draining"})),
        )
            .into_response()
    } else {
        axum::Json(json!({"status": "ok", "models": state.models().names()})).into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics().render(&state.models().loaded());
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE))],
        text,
    )
        .into_response()
}

/// Counts every request by endpoint and final status.
async fn record_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let endpoint = if path.starts_with("/v1/models/") {
        "/v1/models/{model}"
    } else {
        ENDPOINTS.iter().copied().find(|e| *e == path).unwrap_or("other")
    };
    let response = next.run(request).await;
    state.metrics().record_http(endpoint, response.status().as_u16());
    response
}
