//! The one place where errors become HTTP: every failure is an `application/problem+json`
//! body (RFC 9457) with a stable, greppable `code`; never a 500 for bad input.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kizo_engine::EngineError;
use kizo_wallet::WalletError;
use serde::Serialize;

/// A failed request, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable and greppable: clients branch on it.
    pub code: &'static str,
    pub detail: String,
    /// The request field at fault, when there is one (a JSON pointer-like path).
    pub field: Option<String>,
    /// Seconds to send as `Retry-After` (a 503 says 1 without it).
    pub retry_after_seconds: Option<u64>,
}

/// The body of every error (RFC 9457), as the OpenAPI document describes it.
#[derive(utoipa::ToSchema)]
#[schema(as = Problem)]
#[allow(dead_code)]
pub struct ProblemDoc {
    /// A URL naming the problem type (ends with the code).
    #[schema(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    /// Stable and greppable: branch on it.
    #[schema(example = "invalid_field")]
    code: String,
    detail: String,
    /// The request field at fault, when there is one.
    field: Option<String>,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            field: None,
            retry_after_seconds: None,
        }
    }

    /// The same error, telling the client when to try again (`Retry-After`).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", detail).field(field)
    }

    /// The same error with a more precise code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    /// A passing failure (a store or the engine out of reach): retry later.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }
}

/// What no name or note may hold (`kizo_wallet::is_hidden_or_control`), in words.
const HIDDEN: &str = "none of them control, format (bidi, zero-width) or line separator characters";

impl From<WalletError> for ApiError {
    fn from(error: WalletError) -> Self {
        match error {
            WalletError::AmountOutOfRange => Self::invalid(
                "amount",
                format!("1 to {} minor units", kizo_wallet::AMOUNT_MAX),
            ),
            WalletError::NoteInvalid => Self::invalid(
                "note",
                format!(
                    "at most {} characters, {HIDDEN}",
                    kizo_wallet::codes::NOTE_MAX_CHARS
                ),
            ),
            WalletError::NameInvalid => Self::invalid(
                "name",
                format!(
                    "1 to {} characters, {HIDDEN}",
                    kizo_wallet::codes::NAME_MAX_CHARS
                ),
            ),
            WalletError::MonthTooLong | WalletError::Overflow => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "history_too_long",
                error.to_string(),
            ),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::BatchTooLarge { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "batch_too_large",
                error.to_string(),
            ),
            EngineError::InvalidLimit { .. } => Self::invalid("limit", error.to_string()),
            EngineError::Unavailable(_)
            | EngineError::ShutDown
            | EngineError::Start(_)
            | EngineError::Store(_) => {
                // Logged where it is handled: here, the edge.
                tracing::warn!(%error, "request failed: engine unavailable");
                Self::unavailable(error.to_string())
            }
        }
    }
}

impl From<crate::books::BooksError> for ApiError {
    fn from(error: crate::books::BooksError) -> Self {
        use crate::books::BooksError;
        match error {
            BooksError::Engine(error) => error.into(),
            BooksError::Unavailable { .. } => {
                tracing::warn!(%error, "request failed: partition not served");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "partition_unavailable",
                    error.to_string(),
                )
                .retry_after(1)
            }
            BooksError::LinkedAcrossPartitions(..) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "linked_across_partitions",
                error.to_string(),
            ),
            BooksError::ClearingAccountReserved(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "clearing_account_reserved",
                error.to_string(),
            ),
            BooksError::Store(_) => {
                tracing::warn!(%error, "request failed: the cluster's store");
                Self::unavailable(error.to_string()).retry_after(1)
            }
            BooksError::PeerRefused { .. } => {
                tracing::error!(%error, "request failed: nodes disagree");
                Self::unavailable(error.to_string())
            }
        }
    }
}

impl ApiError {
    /// The status and the body this error is answered with.
    pub fn to_bytes(&self) -> (StatusCode, Vec<u8>) {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = Problem {
            kind: format!("https://kizo.dev/problems/{}", self.code),
            title,
            status: self.status.as_u16(),
            code: self.code,
            detail: &self.detail,
            field: self.field.as_deref(),
        };
        (
            self.status,
            serde_json::to_vec(&body).expect("a problem serializes"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, json) = self.to_bytes();
        let mut response = (status, json).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        let retry_after = match self.retry_after_seconds {
            Some(seconds) => Some(seconds),
            None if self.status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            None => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
