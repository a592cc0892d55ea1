//! API-key authentication: with a key configured, every request but `GET /health` and
//! the dashboard's page and assets (no data in them) must carry `Authorization: Bearer
//! <key>`. Keys are compared as SHA-256 digests in constant
//! time, so neither the key's bytes nor its length leak through timing.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::state::AppState;

/// Paths served without a key: load balancers' health checks and the dashboard's page
/// and assets (the page asks for the key and sends it with every API call it makes).
pub const OPEN_PATHS: [&str; 4] = [
    "/health",
    super::dashboard::ASSET_PATHS[0],
    super::dashboard::ASSET_PATHS[1],
    super::dashboard::ASSET_PATHS[2],
];

/// The middleware.
pub async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(key) = state.config().api_key.as_deref() else {
        return next.run(request).await;
    };
    if request.method() == axum::http::Method::GET && OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match presented {
        Some(token) if keys_match(token, key) => next.run(request).await,
        _ => ApiError::unauthorized().into_response(),
    }
}

/// The token of `Bearer <token>` (the scheme is case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn keys_match(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_parse_and_compare() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("abc"), None);
        assert!(keys_match("k1", "k1"));
        assert!(!keys_match("k1", "k2"));
        assert!(!keys_match("", "k2"));
    }
}
