//! Errors of the HTTP API, shaped as OpenAI's (`{"error": {"message", "type", "param",
//! "code"}}`) so the official clients raise their usual exception types
//! (`BadRequestError` for 400, `AuthenticationError` for 401, …), and errors of starting
//! the server.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One failed request: the status, OpenAI's error body, and a `Retry-After` when busy.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, `server_error`, …
    pub kind: &'static str,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// A stable machine-readable code (`context_length_exceeded`, `model_not_found`, …).
    pub code: Option<&'static str>,
    /// Seconds for the `Retry-After` header (429).
    pub retry_after_s: Option<u64>,
}

/// The body of an error response.
#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorObject<'a>,
}

/// OpenAI's error object (also sent as an SSE event when a stream fails midway).
#[derive(Serialize)]
pub struct ErrorObject<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after_s: None,
        }
    }

    /// 400: the request is wrong in a way `param` names.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).with_param(param)
    }

    /// 400 without a single field to blame (unparsable JSON, say).
    /// An error with `status` (an `invalid_request_error`).
    pub fn new_status(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError::new(status, "invalid_request_error", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 401: no or the wrong API key.
    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing or incorrect API key: send `Authorization: Bearer <key>`",
        )
        .with_code("invalid_api_key")
    }

    /// 404: no model of that name is served.
    pub fn model_not_found(name: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("the model `{name}` does not exist (GET /v1/models lists the served models)"),
        )
        .with_param("model")
        .with_code("model_not_found")
    }

    /// 404: the thing asked for (a run, a set) does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", message).with_code("not_found")
    }

    /// 404 for a path the server does not have.
    pub fn no_route(method: &str, path: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("no such endpoint: {method} {path}"),
        )
        .with_code("unknown_url")
    }

    /// 405 for a known path asked with the wrong method.
    pub fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "this endpoint does not take that HTTP method",
        )
        .with_code("method_not_allowed")
    }

    /// 413: the body is over `--max-body-bytes`.
    pub fn body_too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body is larger than this server's limit of {limit} bytes"),
        )
        .with_code("request_too_large")
    }

    /// 429: the model's queue is full.
    pub fn busy(message: impl Into<String>, retry_after_s: u64) -> Self {
        let mut e =
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message).with_code("rate_limit_exceeded");
        e.retry_after_s = Some(retry_after_s);
        e
    }

    /// 503: the server is shutting down.
    pub fn shutting_down() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "the server is shutting down",
        )
        .with_code("shutting_down")
    }

    /// 500: something failed on the server's side.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// 422: the reward plugin that ranks best-of-N candidates failed on them. Not a 5xx,
    /// so clients do not retry a failure that would repeat.
    pub fn reward_failed(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "reward_plugin_error", message)
            .with_param("reward")
            .with_code("reward_plugin_failed")
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The error object, for a body or an SSE event.
    pub fn object(&self) -> ErrorObject<'_> {
        ErrorObject {
            message: &self.message,
            kind: self.kind,
            param: self.param.as_deref(),
            code: self.code,
        }
    }

    /// The JSON body text.
    pub fn body_json(&self) -> String {
        serde_json::to_string(&ErrorBody { error: self.object() }).unwrap_or_else(|_| {
            r#"{"error":{"message":"error","type":"server_error","param":null,"code":null}}"#.into()
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            self.body_json(),
        )
            .into_response();
        if let Some(s) = self.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to listen on {host} without an API key: anyone who can reach it could use the models; \
         set --api-key (or R1_API_KEY), or listen on a loopback address such as 127.0.0.1"
    )]
    OpenWithoutKey { host: String },
    #[error("model `{name}`: {message}")]
    Model { name: String, message: String },
    #[error("two models are named `{0}`; name one with --model PATH=NAME")]
    DuplicateModel(String),
    #[error("reward plugins: {0}")]
    PluginHost(String),
    #[error("reward plugin `{name}` ({path}): {message}")]
    Plugin {
        name: String,
        path: String,
        message: String,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_openai_fields() {
        let e = ApiError::invalid("n", "n must be at most 16");
        let v: serde_json::Value = serde_json::from_str(&e.body_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"message": "n must be at most 16", "type": "invalid_request_error",
                                         "param": "n", "code": null}})
        );
    }

    #[test]
    fn busy_sets_retry_after() {
        let r = ApiError::busy("busy", 3).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers().get(header::RETRY_AFTER).unwrap(), "3");
    }
}
