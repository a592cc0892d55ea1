//! `POST /v1/weights`: new weights for a served model, for GRPO trainers that generate on
//! this server (r1's extension). Off unless the server was started with
//! `--weight-updates`, which needs an API key: the request carries `Authorization:
//! Bearer <key>` like every other.
//!
//! Query: `model` (the served name), `version` (an integer of the caller's numbering;
//! completions report the version that drew them as `r1.weight_version`), `format`:
//! - `safetensors` (default): the body is a safetensors file of the whole model under
//!   Hugging Face names (as `r1host export` writes it), any float type;
//! - `peft`: the body is a PEFT `adapter_model.safetensors` and the header
//!   `X-R1-Adapter-Config` holds its `adapter_config.json` (one line of JSON); the adapter
//!   goes on the served base, in place of the one there was.
//!
//! The engine lets running requests finish, holds queued ones back, swaps the weights and
//! answers `{"model", "weight_version", "format", "tensors", "seconds"}`.

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::state::AppState;
use crate::engine::service::{SubmitError, WeightUpdate};
use crate::io::{peft_adapter_from_parts, weights_from_safetensors_bytes};

/// The header carrying a PEFT adapter's `adapter_config.json`.
pub const ADAPTER_CONFIG_HEADER: &str = "x-r1-adapter-config";

pub async fn update_weights(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match update(state, query, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn update(
    state: AppState,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !state.config().weight_updates {
        return Err(ApiError::new_status(
            StatusCode::FORBIDDEN,
            "weight updates are off on this server (start it with --weight-updates and an --api-key)",
        ));
    }
    let name = query
        .get("model")
        .ok_or_else(|| ApiError::invalid("model", "the query needs `model`: the served model to update"))?;
    let version: u64 = query
        .get("version")
        .ok_or_else(|| ApiError::invalid("version", "the query needs `version`: an integer"))?
        .parse()
        .map_err(|_| ApiError::invalid("version", "`version` must be a non-negative integer"))?;
    let format = query
        .get("format")
        .map(String::as_str)
        .unwrap_or("safetensors")
        .to_string();
    let model = state.models().resolve(name).await?;
    let config = model.generator.model().config.clone();
    let adapter_config = match format.as_str() {
        "safetensors" => None,
        "peft" => {
            let raw = headers
                .get(ADAPTER_CONFIG_HEADER)
                .ok_or_else(|| {
                    ApiError::invalid(
                        ADAPTER_CONFIG_HEADER,
                        "format=peft needs the adapter's adapter_config.json in the X-R1-Adapter-Config header",
                    )
                })?
                .as_bytes();
            let value: serde_json::Value = serde_json::from_slice(raw).map_err(|e| {
                ApiError::invalid(ADAPTER_CONFIG_HEADER, format!("X-R1-Adapter-Config is not JSON: {e}"))
            })?;
            Some(value)
        }
        other => {
            return Err(ApiError::invalid(
                "format",
                format!("`format` must be \"safetensors\" or \"peft\", not {other:?}"),
            ));
        }
    };
    let started = Instant::now();
    // Decoding a model's worth of bytes is CPU work: off the async workers.
    let parsed = tokio::task::spawn_blocking(move || match adapter_config {
        None => weights_from_safetensors_bytes(&config, &body).map(|w| (w.tensors.len(), WeightUpdate::Full(w))),
        Some(value) => peft_adapter_from_parts(&value, ADAPTER_CONFIG_HEADER, &body, "<request body>")
            .and_then(|a| a.check_for(&config, "<request body>").map(|()| a))
            .map(|a| (a.weights.len(), WeightUpdate::Adapter(a))),
    })
    .await
    .map_err(|e| ApiError::internal(format!("decoding the weights stopped: {e}")))?;
    let (tensors, update) = parsed.map_err(|e| ApiError::bad_request(format!("the weights were refused: {e}")))?;
    let reply = model.generator.update_weights(update, version).map_err(|e| match e {
        SubmitError::Invalid(m) => ApiError::bad_request(m),
        SubmitError::ShuttingDown => ApiError::shutting_down(),
        other => ApiError::internal(other.to_string()),
    })?;
    match reply.await {
        Ok(Ok(())) => Ok(axum::Json(json!({
            "model": name,
            "weight_version": version,
            "format": format,
            "tensors": tensors,
            "seconds": started.elapsed().as_secs_f64(),
        }))
        .into_response()),
        Ok(Err(message)) => Err(ApiError::bad_request(message)),
        Err(_) => Err(ApiError::shutting_down()),
    }
}
