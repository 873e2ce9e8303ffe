//! Who may use the HTTP API: with a token, every request but the dashboard's static page must carry
//! `Authorization: Bearer TOKEN`, compared in constant time.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use crate::service::constant_time_eq;

/// Whether `headers` carry the token (always, when there is none).
pub fn allowed(token: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(token) = token else {
        return true;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

/// 401 with the scheme the client should use.
pub fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(serde_json::json!({
            "error": "missing or wrong bearer token: send `Authorization: Bearer TOKEN` (the coordinator's --token)"
        })),
    )
        .into_response()
}

/// Middleware: refuses requests without the token before any handler runs (or any body is read).
pub async fn require(
    State(token): State<Arc<Option<String>>>,
    req: Request,
    next: Next,
) -> Response {
    if allowed(token.as_deref(), req.headers()) {
        next.run(req).await
    } else {
        unauthorized()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            auth.parse().unwrap_or_else(|e| panic!("{e}")),
        );
        h
    }

    #[test]
    fn the_bearer_token_must_match() {
        assert!(allowed(None, &HeaderMap::new()));
        assert!(allowed(Some("s3cret"), &with("Bearer s3cret")));
        assert!(!allowed(Some("s3cret"), &HeaderMap::new()));
        assert!(!allowed(Some("s3cret"), &with("Bearer s3cre")));
        assert!(!allowed(Some("s3cret"), &with("Bearer s3cretX")));
        assert!(!allowed(Some("s3cret"), &with("Basic s3cret")));
    }
}
