//! Email ownership (`/v1/auth/verify-email`, `/v1/auth/verify-email/resend`) and password reset
//! (`/v1/auth/forgot-password`, `/v1/auth/reset-password`). Tokens go out by mail (through the
//! outbox, see [`crate::mail`]), are stored hashed, work once and expire. Only a verified email
//! can be paid by email or found in search.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use kizo_persistence::users::{EmailPurpose, Mail, Reset, User};
use serde::{Deserialize, Serialize};

use crate::auth::{hash_refresh, new_refresh_token, Authenticated};
use crate::error::ApiError;
use crate::json::Json;
use crate::server::{App, AppState};
use crate::wallet::store_error;

/// How long a verification link works.
pub const VERIFY_TTL_MS: i64 = 24 * 3_600_000;
/// How long a password-reset link works.
pub const RESET_TTL_MS: i64 = 30 * 60_000;
/// The longest token read (tokens are 64 hex characters).
const TOKEN_MAX: usize = 128;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/verify-email", post(verify_email))
        .route("/v1/auth/verify-email/resend", post(resend_verification))
        .route("/v1/auth/forgot-password", post(forgot_password))
        .route("/v1/auth/reset-password", post(reset_password))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The code from the mail.
    #[schema(max_length = 128)]
    pub token: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotPassword {
    #[schema(max_length = 254)]
    pub email: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPassword {
    #[schema(max_length = 128)]
    pub token: String,
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub detail: &'static str,
}

/// A mail's token is a credential: one unknown, used or expired is answered as an invalid
/// refresh token is (401).
fn invalid_token() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "the link is unknown, used or expired: ask for a new one",
    )
    .field("token")
}

/// The hash a token is stored under; a token longer than any issued is refused unread.
fn token_hash(token: &str) -> Result<Vec<u8>, ApiError> {
    let token = token.trim();
    if token.is_empty() || token.len() > TOKEN_MAX {
        return Err(invalid_token());
    }
    Ok(hash_refresh(token))
}

/// Writes a token for `purpose` and the mail that carries it (one transaction), and wakes
/// the sender.
async fn send_token(state: &App, user: &User, purpose: EmailPurpose) -> Result<(), ApiError> {
    let (token, hash) = new_refresh_token();
    let (ttl, subject, path, what) = match purpose {
        EmailPurpose::Verify => (
            VERIFY_TTL_MS,
            "Confirm your email for Kizo",
            "verify-email",
            "Confirm that this address is yours, so that other Kizo users can find you and\npay you by email",
        ),
        EmailPurpose::ResetPassword => (
            RESET_TTL_MS,
            "Reset your Kizo password",
            "reset-password",
            "Someone (we hope you) asked to reset the password of your Kizo account. To\nchoose a new one",
        ),
    };
    let body = format!(
        "Hello {name},\n\n{what}, open this link:\n\n{url}/{path}?token={token}\n\nor enter this code:\n\n{token}\n\nIt works once, for {minutes} minutes. If you did not ask for this, ignore\nthis mail: nothing changes.\n",
        name = user.first_name,
        url = state.public_url,
        minutes = ttl / 60_000,
    );
    let mail = Mail {
        recipient: user.email.clone(),
        subject: subject.into(),
        body,
    };
    state
        .users
        .issue_email_token(&user.id, purpose, &hash, state.users.now_ms() + ttl, &mail)
        .await
        .map_err(store_error)?;
    state.mail_written.notify_one();
    Ok(())
}

/// Sends the verification mail of a user who just signed up.
pub async fn send_verification(state: &App, user: &User) -> Result<(), ApiError> {
    send_token(state, user, EmailPurpose::Verify).await
}

#[utoipa::path(post, path = "/v1/auth/verify-email", tag = "wallet", request_body = TokenRequest,
    responses(
        (status = 204, description = "The email is verified"),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "invalid_token", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts: see Retry-After", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
/// `POST /v1/auth/verify-email`: spends the code of a verification mail.
pub async fn verify_email(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    Json(request): Json<TokenRequest>,
) -> Result<Response, ApiError> {
    state
        .limits
        .check(state.limits.client(peer.ip(), &headers), None)?;
    let hash = token_hash(&request.token)?;
    match state.users.verify_email(&hash).await.map_err(store_error)? {
        Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        None => Err(invalid_token()),
    }
}

#[utoipa::path(post, path = "/v1/auth/verify-email/resend", tag = "wallet", security(("access_token" = [])),
    responses(
        (status = 202, body = Accepted),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "already_verified", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts: see Retry-After", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
/// `POST /v1/auth/verify-email/resend`: a new verification mail (the earlier links stop
/// working).
pub async fn resend_verification(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    caller: Authenticated,
) -> Result<Response, ApiError> {
    let user = state
        .users
        .user_by_id(&caller.user_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::unauthorized("no such user"))?;
    state
        .limits
        .check(state.limits.client(peer.ip(), &headers), Some(&user.email))?;
    if user.email_verified_at.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_verified",
            "this email is verified",
        ));
    }
    send_verification(&state, &user).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            detail: "a new link is on its way",
        }),
    )
        .into_response())
}

/// Password-reset lookups running at once after their answers.
pub const RESET_LOOKUPS_MAX: usize = 256;

#[utoipa::path(post, path = "/v1/auth/forgot-password", tag = "wallet", request_body = ForgotPassword,
    responses(
        (status = 202, description = "The same answer whether or not an account has this email", body = Accepted),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts: see Retry-After", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
/// `POST /v1/auth/forgot-password`: mails a reset link if an account has this email. The
/// answer, and its time, are the same either way: the work happens after it.
pub async fn forgot_password(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    Json(request): Json<ForgotPassword>,
) -> Result<Response, ApiError> {
    state.limits.check(
        state.limits.client(peer.ip(), &headers),
        Some(&request.email),
    )?;
    let email = request.email.trim().to_lowercase();
    if email.chars().count() > crate::wallet::EMAIL_MAX {
        return Err(ApiError::invalid(
            "email",
            format!("at most {} characters", crate::wallet::EMAIL_MAX),
        ));
    }
    // At most RESET_LOOKUPS_MAX of these run at once: past it (a flood from many addresses)
    // the request is answered the same, and its mail is not written.
    static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(RESET_LOOKUPS_MAX);
    if let Ok(permit) = RUNNING.try_acquire() {
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match state.users.user_by_email(&email).await {
                Ok(Some(user)) => {
                    if let Err(error) = send_token(&state, &user, EmailPurpose::ResetPassword).await
                    {
                        tracing::warn!(?error, "a password-reset mail was not written");
                    }
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "a password reset could not look up its user"),
            }
        });
    } else {
        metrics::counter!("kizo_password_resets_dropped_total").increment(1);
        tracing::warn!("password resets arrive faster than they are handled; one was dropped");
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            detail: "if an account has this email, a link to reset its password is on its way",
        }),
    )
        .into_response())
}

#[utoipa::path(post, path = "/v1/auth/reset-password", tag = "wallet", request_body = ResetPassword,
    responses(
        (status = 204, description = "The password is changed and every session of the user has ended"),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "invalid_token", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts: see Retry-After", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
/// `POST /v1/auth/reset-password`: spends a reset code, sets the new password, and ends
/// every session of the user (their access tokens stop working at once).
pub async fn reset_password(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    Json(request): Json<ResetPassword>,
) -> Result<Response, ApiError> {
    state
        .limits
        .check(state.limits.client(peer.ip(), &headers), None)?;
    let hash = token_hash(&request.token)?;
    crate::wallet::check_password(&request.password)?;
    let password_hash = state.passwords.hash(request.password).await?;
    match state
        .users
        .reset_password(&hash, &password_hash)
        .await
        .map_err(store_error)?
    {
        Reset::Done { revoked_sessions } => {
            let now = state.users.now_ms();
            for session in revoked_sessions {
                state.revocations.insert(session, now);
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Reset::Invalid => Err(invalid_token()),
    }
}
