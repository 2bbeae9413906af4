//! Body and query extractors whose every rejection is a problem (with the field at fault when
//! serde names one), instead of axum's plain-text errors.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody, JsonRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let plain_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes() == b"application/json");
        if !plain_json {
            // axum decides what else counts as JSON, and names what does not.
            return match axum::Json::<T>::from_request(request, state).await {
                Ok(axum::Json(value)) => Ok(Json(value)),
                Err(rejection) => Err(rejected(rejection)),
            };
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| rejected(rejection.into()))?;
        // axum's parse tracks the path to every value, a `String` per key read, to name the field
        // at fault: paid only when there is a fault to name.
        if let Ok(value) = serde_json::from_slice(&bytes) {
            return Ok(Json(value));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(rejected(rejection)),
        }
    }
}

/// A ledger batch's body: JSON (the default), or the binary format when `Content-Type` says
/// so ([`kizo_binary::MEDIA_TYPE`]): its bytes, decoded by the handler that knows the records.
pub enum JsonOrBinary<T> {
    Json(T),
    Binary(Bytes),
}

impl<S, T> FromRequest<S> for JsonOrBinary<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_binary(request.headers().get(header::CONTENT_TYPE)) {
            return Json::<T>::from_request(request, state)
                .await
                .map(|Json(value)| JsonOrBinary::Json(value));
        }
        Bytes::from_request(request, state)
            .await
            .map(JsonOrBinary::Binary)
            .map_err(|rejection| rejected(rejection.into()))
    }
}

/// Whether a `Content-Type` (or one entry of `Accept`) names the binary format.
pub fn is_binary(value: Option<&header::HeaderValue>) -> bool {
    value
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(kizo_binary::MEDIA_TYPE))
}

/// A binary body that is not a batch: `400 malformed_binary` naming the byte where it breaks;
/// an empty or oversized batch is refused as in JSON.
pub fn binary_rejected(error: kizo_binary::DecodeError, field: &str) -> ApiError {
    match error {
        kizo_binary::DecodeError::Empty => ApiError::invalid(field, error.to_string()),
        kizo_binary::DecodeError::TooMany { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "batch_too_large",
            error.to_string(),
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_binary",
            error.to_string(),
        ),
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

fn rejected(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(error) => {
            // serde_path_to_error's message: "path.to.field: what is wrong".
            let text = std::error::Error::source(&error)
                .map(ToString::to_string)
                .unwrap_or_else(|| error.body_text());
            let (field, detail) = match text.split_once(": ") {
                Some((field, detail)) if !field.contains(' ') => {
                    (Some(field.to_string()), detail.to_string())
                }
                _ => (None, text),
            };
            let error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", detail);
            match field {
                Some(field) => error.field(field),
                None => error,
            }
        }
        JsonRejection::JsonSyntaxError(error) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", error.body_text())
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        JsonRejection::BytesRejection(BytesRejection::FailedToBufferBody(
            FailedToBufferBody::UnknownBodyError(error),
        )) => crate::serve::body_read_error(&error, crate::server::BODY_LIMIT_BYTES),
        JsonRejection::BytesRejection(error) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            error.body_text(),
        ),
        other => ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", other.body_text()),
    }
}

/// A query string, parsed; a bad one is `400 invalid_query`.
pub struct Query<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    rejection.body_text(),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        to: To,
        amount: u64,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct To {
        account_id: String,
    }

    async fn parse(content_type: Option<&str>, body: &str) -> Result<Body, ApiError> {
        let mut request = Request::builder().method("POST").uri("/");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        Json::<Body>::from_request(request, &())
            .await
            .map(|Json(body)| body)
    }

    #[tokio::test]
    async fn bodies_parse_alike_on_both_paths_and_refusals_name_the_field() {
        let good = r#"{"to":{"account_id":"a"},"amount":5}"#;
        let expected = Body {
            to: To {
                account_id: "a".into(),
            },
            amount: 5,
        };
        for content_type in ["application/json", "application/json; charset=utf-8"] {
            assert_eq!(parse(Some(content_type), good).await.unwrap(), expected);
            let refused = parse(Some(content_type), r#"{"to":{"account_id":7},"amount":5}"#)
                .await
                .unwrap_err();
            assert_eq!(
                (refused.code, refused.field.as_deref()),
                ("invalid_field", Some("to.account_id"))
            );
            let unknown = parse(
                Some(content_type),
                r#"{"to":{"account_id":"a"},"amount":5,"x":1}"#,
            )
            .await
            .unwrap_err();
            assert_eq!(unknown.code, "invalid_field");
            let syntax = parse(Some(content_type), r#"{"to":"#).await.unwrap_err();
            assert_eq!(syntax.code, "invalid_json");
            let trailing = parse(Some(content_type), &format!("{good} x"))
                .await
                .unwrap_err();
            assert_eq!(trailing.code, "invalid_json");
        }
        for content_type in [None, Some("text/plain")] {
            let refused = parse(content_type, good).await.unwrap_err();
            assert_eq!(refused.code, "unsupported_media_type");
        }
    }
}
