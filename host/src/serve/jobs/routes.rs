//! The `/v1/jobs` routes over a [`JobManager`], with errors as OpenAI-style bodies
//! (`{"error": {"message", "type", "param", "code"}}`).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::serve::jobs::events::job_events;
use crate::serve::jobs::{JobError, JobManager, JobView};

/// The job routes, to be mounted (behind the daemon's API-key check) in its app:
///
/// - `POST /v1/jobs`: submit a recipe — JSON `{"recipe": "<TOML>", "name": "…"}`, or the
///   TOML itself as `application/toml` / `text/plain` (name in `?name=`); 201 + the job.
/// - `GET /v1/jobs`: every job, oldest first (`{"object": "list", "data": [...]}`).
/// - `GET /v1/jobs/{id}`: status, stage, step, elapsed seconds, latest metrics, model, error.
/// - `GET /v1/jobs/{id}/events`: server-sent events, one per `metrics.jsonl` line, then `end`.
/// - `POST /v1/jobs/{id}/cancel`: checkpoint and stop (409 once the job is final).
/// - `POST /v1/jobs/{id}/resume`: continue a cancelled, interrupted or failed job.
pub fn router(jobs: Arc<JobManager>) -> axum::Router {
    axum::Router::new()
        .route("/v1/jobs", post(create_job).get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/events", get(watch_job))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/jobs/{id}/resume", post(resume_job))
        .with_state(jobs)
}

type Jobs = State<Arc<JobManager>>;

async fn create_job(
    State(jobs): Jobs,
    query: Result<Query<NameQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(format!("the query string: {}", e.body_text())))?;
    let submission = Submission::parse(&headers, &body, query.name)?;
    let view = blocking(move || jobs.submit(&submission.recipe, submission.name.as_deref())).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn list_jobs(State(jobs): Jobs) -> Json<serde_json::Value> {
    Json(serde_json::json!({"object": "list", "data": jobs.list()}))
}

async fn get_job(State(jobs): Jobs, Path(id): Path<String>) -> Result<Json<JobView>, ApiError> {
    jobs.get(&id).map(Json).ok_or_else(|| JobError::NotFound(id).into())
}

async fn watch_job(State(jobs): Jobs, Path(id): Path<String>) -> Result<Response, ApiError> {
    let metrics = jobs
        .run_dir(&id)
        .ok_or_else(|| JobError::NotFound(id.clone()))?
        .join("metrics.jsonl");
    Ok(Sse::new(job_events(jobs, id, metrics))
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn cancel_job(State(jobs): Jobs, Path(id): Path<String>) -> Result<Json<JobView>, ApiError> {
    Ok(Json(blocking(move || jobs.cancel(&id)).await?))
}

async fn resume_job(State(jobs): Jobs, Path(id): Path<String>) -> Result<Json<JobView>, ApiError> {
    Ok(Json(blocking(move || jobs.resume(&id)).await?))
}

/// Runs a job operation that writes files off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, JobError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the job operation did not finish: {e}")))?
        .map_err(ApiError::from)
}

#[derive(serde::Deserialize)]
struct NameQuery {
    name: Option<String>,
}

/// The body of `POST /v1/jobs` in JSON.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSubmission {
    recipe: String,
    #[serde(default)]
    name: Option<String>,
}

/// A recipe to run and the job's name, from either body form.
#[derive(Debug, PartialEq)]
struct Submission {
    recipe: String,
    name: Option<String>,
}

impl Submission {
    /// Reads the body as its `Content-Type` says (JSON, or TOML as `application/toml` or
    /// `text/plain`); without one, a body starting with `{` is JSON (TOML cannot start so).
    fn parse(headers: &HeaderMap, body: &[u8], query_name: Option<String>) -> Result<Submission, ApiError> {
        let content_type = headers.get(header::CONTENT_TYPE).map(|v| {
            v.to_str()
                .unwrap_or("?")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
        let json = match content_type.as_deref() {
            Some("application/json") => true,
            Some("application/toml" | "application/x-toml" | "text/toml" | "text/x-toml" | "text/plain") => false,
            None | Some("") => body.trim_ascii_start().starts_with(b"{"),
            Some(other) => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "invalid_request_error",
                    format!(
                        "content type `{other}` is not accepted: send JSON {{\"recipe\": \"<TOML>\"}} or the TOML itself (application/toml, text/plain)"
                    ),
                ));
            }
        };
        let submission = if json {
            let s: JsonSubmission = serde_json::from_slice(body)
                .map_err(|e| ApiError::invalid(format!("the request body is not a job submission: {e}")))?;
            Submission {
                recipe: s.recipe,
                name: s.name.or(query_name),
            }
        } else {
            let recipe = String::from_utf8(body.to_vec())
                .map_err(|_| ApiError::invalid("the recipe is not UTF-8 text".to_string()))?;
            Submission {
                recipe,
                name: query_name,
            }
        };
        Ok(Submission {
            name: submission.name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty()),
            ..submission
        })
    }
}

/// An error as the OpenAI API writes it, with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    param: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: String) -> ApiError {
        ApiError {
            status,
            kind,
            message,
            param: None,
        }
    }

    fn invalid(message: String) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    fn internal(message: String) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "api_error", message)
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> ApiError {
        let message = e.to_string();
        match e {
            JobError::InvalidRecipe(_) => ApiError {
                param: Some("recipe"),
                ..ApiError::invalid(message)
            },
            JobError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found_error", message),
            JobError::Conflict { .. } => ApiError::new(StatusCode::CONFLICT, "conflict_error", message),
            JobError::ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", message),
            JobError::Io { .. }
            | JobError::Write { .. }
            | JobError::Corrupt { .. }
            | JobError::Thread(_)
            | JobError::Locked { .. } => ApiError::internal(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {
            "message": self.message, "type": self.kind, "param": self.param, "code": null,
        }});
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(content_type: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(c) = content_type {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(c));
        }
        h
    }

    #[test]
    fn a_json_body_carries_the_recipe_and_its_name() {
        let s = Submission::parse(
            &headers(Some("application/json; charset=utf-8")),
            br#"{"recipe": "name = \"x\"", "name": " mine "}"#,
            None,
        )
        .unwrap();
        assert_eq!(
            s,
            Submission {
                recipe: "name = \"x\"".into(),
                name: Some("mine".into())
            }
        );
    }

    #[test]
    fn a_toml_body_is_the_recipe_and_the_query_names_it() {
        for ct in [Some("application/toml"), Some("text/plain"), None] {
            let s = Submission::parse(&headers(ct), b"name = \"x\"\n", Some("q".into())).unwrap();
            assert_eq!(s.recipe, "name = \"x\"\n");
            assert_eq!(s.name.as_deref(), Some("q"));
        }
    }

    #[test]
    fn unknown_json_fields_and_other_content_types_are_refused() {
        let e = Submission::parse(&headers(Some("application/json")), br#"{"recipe": "", "x": 1}"#, None).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("unknown field `x`"), "{}", e.message);
        let e = Submission::parse(&headers(Some("image/png")), b"", None).unwrap_err();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let e = Submission::parse(&headers(Some("text/plain")), &[0xff, 0xfe], None).unwrap_err();
        assert!(e.message.contains("UTF-8"), "{}", e.message);
    }
}
