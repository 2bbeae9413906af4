//! `Idempotency-Key` (IETF draft): the first response to a key is kept durably and replayed,
//! with `Idempotent-Replayed: true`, to every retry of the same request; the same key with
//! another request is `422 idempotency_key_reused`; while the first request runs, `409
//! idempotency_key_in_use`. A request that fails for a passing reason (5xx, `unavailable`) frees
//! its key, so that a retry runs it again: exactly-once still holds, because the key's request
//! names the ledger's own ids (transfer ids), which the engine never applies twice.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kizo_persistence::keys::Claim;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::server::{AppState, BODY_LIMIT_BYTES};

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED: &str = "idempotent-replayed";
/// Keys are kept at least this long.
pub const KEPT_MS: i64 = 24 * 3600 * 1000;
/// The longest key accepted.
pub const KEY_LEN_MAX: usize = 255;

/// For the ledger API, whose one credential is one scope. The header is optional there: its
/// events carry their own ids.
pub async fn ledger(State(state): State<AppState>, request: Request, next: Next) -> Response {
    scoped(state, "ledger".to_string(), request, next).await
}

/// The kept answer `status` and `body`, replayed (`Idempotent-Replayed: true`); a success in
/// the form `wire` (which the key's request fixed: it is part of its fingerprint).
pub fn replay(status: u16, body: impl Into<Body>, wire: crate::ledger::Wire) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let content_type = match (status.is_success(), wire) {
        (true, crate::ledger::Wire::Json) => "application/json",
        (true, crate::ledger::Wire::Binary) => kizo_binary::MEDIA_TYPE,
        (false, _) => "application/problem+json",
    };
    let mut response = (status, body.into()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    replayed(response)
}

/// Marks `response` as a replay of the first answer to its key.
pub fn replayed(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// The same key with another request.
pub fn reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "this Idempotency-Key was used with another request",
    )
    .field("Idempotency-Key")
}

/// The first request with this key is still running.
pub fn in_use() -> Response {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_key_in_use",
        "a request with this Idempotency-Key is still running; retry shortly",
    )
    .retry_after(1)
    .into_response()
}

/// The request's `Idempotency-Key` header as sent, taken alone (extracting the whole
/// `HeaderMap` copies every header). Never refuses: the handler checks it in its turn, so a
/// missing key is reported after the token and the body, as before.
pub struct KeyHeader(pub Option<HeaderValue>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for KeyHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(KeyHeader(parts.headers.get(HEADER).cloned()))
    }
}

/// A key is 1 to [`KEY_LEN_MAX`] visible ASCII characters.
pub fn key_is_valid(key: &str) -> bool {
    !key.is_empty() && key.len() <= KEY_LEN_MAX && key.bytes().all(|b| b.is_ascii_graphic())
}

pub fn invalid_key() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_idempotency_key",
        format!("Idempotency-Key: 1 to {KEY_LEN_MAX} visible ASCII characters"),
    )
    .field("Idempotency-Key")
}

async fn scoped(state: AppState, scope: String, request: Request, next: Next) -> Response {
    let scope = scope.as_str();
    let Some(key) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let key = match key.to_str() {
        Ok(key) if key_is_valid(key) => key.to_string(),
        _ => return invalid_key().into_response(),
    };
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, BODY_LIMIT_BYTES).await {
        Ok(bytes) => bytes,
        Err(error) => {
            return crate::serve::body_read_error(&error, BODY_LIMIT_BYTES).into_response()
        }
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update([0]);
    hasher.update(parts.uri.path());
    hasher.update([0]);
    hasher.update(parts.uri.query().unwrap_or_default());
    hasher.update([0]);
    // The answer's form: the same key asking for the other form is another request.
    let wire = crate::ledger::Wire::of_answer(&parts.headers);
    if wire == crate::ledger::Wire::Binary {
        hasher.update(kizo_binary::MEDIA_TYPE);
        hasher.update([0]);
    }
    hasher.update(&bytes);
    let fingerprint = hasher.finalize();
    let claim = match state.keys.claim(scope, &key, &fingerprint).await {
        Ok(claim) => claim,
        Err(error) => {
            tracing::warn!(%error, "idempotency key store unavailable");
            return ApiError::unavailable(error.to_string()).into_response();
        }
    };
    match claim {
        Claim::Replay { status, body } => replay(status, body, wire),
        Claim::Mismatch => reused().into_response(),
        Claim::InProgress => in_use(),
        Claim::Run => {
            let response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            let status = response.status();
            if status.is_server_error() {
                if let Err(error) = state.keys.release(scope, &key).await {
                    tracing::warn!(%error, "could not free an idempotency key; it lapses in a minute");
                }
                return response;
            }
            let (parts, body) = response.into_parts();
            let Ok(body) = to_bytes(body, usize::MAX).await else {
                let _ = state.keys.release(scope, &key).await;
                return ApiError::unavailable("the answer was lost").into_response();
            };
            if let Err(error) = state.keys.finish(scope, &key, status.as_u16(), &body).await {
                // The effect stands (the engine deduplicates a retry by its ids); only the
                // replay of this exact answer is lost.
                tracing::warn!(%error, "could not keep the answer of an idempotency key");
            }
            Response::from_parts(parts, Body::from(body))
        }
    }
}
