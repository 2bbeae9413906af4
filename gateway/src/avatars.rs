//! Avatars: `PUT` and `DELETE /v1/me/avatar` for the signed-in user, and
//! `GET /v1/avatars/{digest}` for anyone who has an avatar's URL (the web app shows them in
//! `<img>`, which carries no token). The handlers parse, authenticate and map the answer;
//! what an upload becomes, or why it is refused, is `kizo-avatar`'s rule.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use kizo_avatar::AvatarError;
use serde::Serialize;

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::server::AppState;
use crate::wallet::store_error;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/me/avatar", put(upload).delete(remove))
        // The upload's own bound: a larger body is refused while it is read.
        .layer(axum::extract::DefaultBodyLimit::max(
            kizo_avatar::UPLOAD_BYTES_MAX,
        ))
        .route("/v1/avatars/{digest}", get(image))
}

/// Pictures decoded at once, server-wide: each may take a core for most of a second.
const DECODES_AT_ONCE: usize = 2;
/// Uploads decoding or waiting to, server-wide (each holds up to 2 MiB); past it, `503`.
const UPLOADS_AT_ONCE: usize = 16;

static DECODES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(DECODES_AT_ONCE);
/// Uploads admitted: decoding, or waiting for [`DECODES`].
static ADMITTED: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(UPLOADS_AT_ONCE);

/// A place among the uploads admitted, held while the upload lives; `503` when none is free.
fn admit() -> Result<tokio::sync::SemaphorePermit<'static>, ApiError> {
    ADMITTED
        .try_acquire()
        .map_err(|_| ApiError::unavailable("too many pictures are being read; try again"))
}

/// Where an avatar is served: its URL names its content.
pub fn url(digest: &str) -> String {
    format!("/v1/avatars/{digest}")
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AvatarSet {
    /// The avatar's URL (relative to the server), served for a year: a new picture has a
    /// new URL.
    pub avatar_url: String,
}

/// An uploaded picture, as the OpenAPI document shows it.
pub struct Picture;

impl utoipa::PartialSchema for Picture {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::openapi::bytes_schema(
            "The picture's bytes: PNG, JPEG or WebP, at most 2 MiB and 4096x4096 pixels",
        )
    }
}

impl utoipa::ToSchema for Picture {}

/// `PUT /v1/me/avatar`: sets the caller's avatar from a PNG, JPEG or WebP picture.
#[utoipa::path(put, path = "/v1/me/avatar", tag = "wallet", security(("access_token" = [])),
    request_body(content((Picture = "image/png"), (Picture = "image/jpeg"), (Picture = "image/webp")),
        description = "Re-encoded as a 160x160 PNG: only its pixels are kept (no EXIF, no GPS)"),
    responses(
        (status = 200, body = AvatarSet),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "body_too_large: over 2 MiB", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "unsupported_media_type: not image/png, image/jpeg or image/webp", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "not_an_image: the bytes are not a picture of the declared type; image_too_large: over 4096 pixels a side", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: this user changes their avatar too often; see Retry-After", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn upload(
    State(state): State<AppState>,
    caller: Authenticated,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::UnknownBodyError(error)) => {
            crate::serve::body_read_error(&error, kizo_avatar::UPLOAD_BYTES_MAX)
        }
        other => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            other.body_text(),
        ),
    })?;
    state.limits.avatar_change(&caller.user_id)?;
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // Decoding a picture of up to 16 megapixels takes a core for a while: a few at a time,
    // off the runtime's threads, which serve everyone else's requests.
    let _admitted = admit()?;
    let _decoding = DECODES
        .acquire()
        .await
        .map_err(|_| ApiError::unavailable("the picture could not be read"))?;
    let avatar = tokio::task::spawn_blocking(move || kizo_avatar::normalize(&media_type, &body))
        .await
        .map_err(|_| ApiError::unavailable("the picture could not be read"))?
        .map_err(refused)?;
    state
        .users
        .set_avatar(&caller.user_id, &avatar.digest, &avatar.png)
        .await
        .map_err(store_error)?;
    Ok(Json(AvatarSet {
        avatar_url: url(&avatar.digest),
    })
    .into_response())
}

fn refused(error: AvatarError) -> ApiError {
    let (status, code) = match &error {
        AvatarError::TooManyBytes(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        AvatarError::UnsupportedType(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        }
        AvatarError::NotTheDeclaredType { .. } | AvatarError::Undecodable(_) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "not_an_image")
        }
        AvatarError::TooManyPixels { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "image_too_large"),
    };
    ApiError::new(status, code, error.to_string())
}

/// `DELETE /v1/me/avatar`: removes the caller's avatar (nothing to remove is no error).
#[utoipa::path(delete, path = "/v1/me/avatar", tag = "wallet", security(("access_token" = [])),
    responses(
        (status = 204, description = "The user has no avatar"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: this user changes their avatar too often; see Retry-After", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Response, ApiError> {
    state.limits.avatar_change(&caller.user_id)?;
    state
        .users
        .delete_avatar(&caller.user_id)
        .await
        .map_err(store_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/avatars/{digest}`: an avatar, by the digest its URL names. Served to anyone with
/// the URL (the digest of the picture: it cannot be guessed), cached for a year.
#[utoipa::path(get, path = "/v1/avatars/{digest}", tag = "wallet",
    params(("digest" = String, Path, pattern = "^[0-9a-f]{64}$", description = "The avatar's SHA-256, as its URL names it")),
    responses(
        (status = 200, description = "A 160x160 PNG", content_type = "image/png", body = Picture),
        (status = 404, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn image(
    State(state): State<AppState>,
    Path(digest): Path<String>,
) -> Result<Response, ApiError> {
    if !kizo_avatar::is_digest(&digest) {
        return Err(ApiError::not_found("no such avatar"));
    }
    let png = state
        .users
        .avatar(&digest)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("no such avatar"))?;
    let mut response = png.into_response();
    let set = response.headers_mut();
    set.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(kizo_avatar::STORED_MEDIA_TYPE),
    );
    set.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    set.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Opened on its own, it is a picture and nothing else; and only this site's pages show it.
    set.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    set.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_past_the_bound_are_refused_until_one_ends() {
        let held: Vec<_> = (0..UPLOADS_AT_ONCE).map(|_| admit().unwrap()).collect();
        let refused = admit().expect_err("one too many");
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        drop(held);
        assert!(admit().is_ok(), "each ended upload makes room");
        assert_eq!(
            ADMITTED.available_permits(),
            UPLOADS_AT_ONCE,
            "nothing left counted"
        );
    }
}
