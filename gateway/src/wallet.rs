//! The wallet API for people (`/v1/auth/...`, `/v1/me`): signup with a wallet, login, token
//! refresh and logout. Ids are UUID strings; amounts are integers in minor units.

use kizo_wallet::view::Balance;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use kizo_engine::CreateAccountResult;
use kizo_persistence::users::{Refresh, User, UserError};
use serde::{Deserialize, Serialize};

use crate::auth::{
    cleared_refresh_cookie, cleared_signed_in_cookie, hash_refresh, new_refresh_token,
    refresh_cookie, refresh_from_cookie, signed_in_cookie, Authenticated, ACCESS_TTL_SECONDS,
    REFRESH_TTL_MS,
};
use crate::error::ApiError;
use crate::json::Json;
use crate::server::AppState;

const PASSWORD_MIN: usize = 8;
const PASSWORD_MAX: usize = 128;
pub(crate) const EMAIL_MAX: usize = 254;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/signup", post(signup))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/me", axum::routing::get(me).patch(update_me))
        .merge(crate::email::routes())
        // Anybody may call these, before any authentication: their bodies are a few hundred
        // bytes, and nothing larger is read.
        .layer(axum::extract::DefaultBodyLimit::max(AUTH_BODY_LIMIT_BYTES))
}

/// The largest body the wallet's auth and profile routes read.
pub const AUTH_BODY_LIMIT_BYTES: usize = 16 << 10;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Signup {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F\\xAD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890\\u0891\\u08E2\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB]*[^\\x00-\\x1F\\x7F-\\x9F\\xAD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890\\u0891\\u08E2\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB\\s][^\\x00-\\x1F\\x7F-\\x9F\\xAD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890\\u0891\\u08E2\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB]*$"
    )]
    pub first_name: String,
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F\\xAD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890\\u0891\\u08E2\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB]*[^\\x00-\\x1F\\x7F-\\x9F\\xAD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890\\u0891\\u08E2\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB\\s][^\\x00-\\x1F\\x7F-\\x9F\\xAD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890\\u0891\\u08E2\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB]*$"
    )]
    pub last_name: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub email: String,
    pub password: String,
    /// Set the refresh token as an `HttpOnly`, `SameSite=Strict` cookie (`kizo_refresh`, path
    /// `/v1/auth`) instead of in the answer: the web app's way, so that no script can read it.
    #[serde(default)]
    pub refresh_cookie: bool,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// Absent: the `kizo_refresh` cookie's token, and then the request must carry the
    /// `x-kizo-csrf` header, and the answer sets the next token as the cookie again.
    pub refresh_token: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMe {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F\\xAD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890\\u0891\\u08E2\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB]*[^\\x00-\\x1F\\x7F-\\x9F\\xAD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890\\u0891\\u08E2\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB\\s][^\\x00-\\x1F\\x7F-\\x9F\\xAD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890\\u0891\\u08E2\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB]*$"
    )]
    pub first_name: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F\\xAD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890\\u0891\\u08E2\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB]*[^\\x00-\\x1F\\x7F-\\x9F\\xAD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890\\u0891\\u08E2\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB\\s][^\\x00-\\x1F\\x7F-\\x9F\\xAD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890\\u0891\\u08E2\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB]*$"
    )]
    pub last_name: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    #[schema(value_type = String, example = "Bearer")]
    pub token_type: &'static str,
    pub expires_in: u64,
    /// Absent when it was set as the `kizo_refresh` cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl TokenPair {
    /// The answer that hands out a session's tokens: the refresh token in the JSON, or in the
    /// `kizo_refresh` cookie when `in_cookie`.
    fn answer(
        state: &AppState,
        user: &User,
        session_id: &str,
        refresh_token: String,
        in_cookie: bool,
    ) -> Response {
        let wallet = user.wallet_id.parse().unwrap_or_default();
        let pair = TokenPair {
            access_token: state.tokens.issue(&user.id, session_id, wallet),
            token_type: "Bearer",
            expires_in: ACCESS_TTL_SECONDS,
            refresh_token: (!in_cookie).then(|| refresh_token.clone()),
        };
        let mut response = Json(pair).into_response();
        if in_cookie {
            let secure = secure_cookies(state);
            let headers = response.headers_mut();
            headers.append(
                axum::http::header::SET_COOKIE,
                refresh_cookie(&refresh_token, secure),
            );
            headers.append(axum::http::header::SET_COOKIE, signed_in_cookie(secure));
        }
        response
    }
}

/// Whether cookies are marked `Secure`: when people reach the server over HTTPS.
fn secure_cookies(state: &AppState) -> bool {
    state.public_url.starts_with("https://")
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserJson {
    pub id: String,
    pub email: String,
    /// Whether the user proved the email is theirs (the mail's link): until then nobody can
    /// find them in search or pay them by email.
    pub email_verified: bool,
    pub first_name: String,
    pub last_name: String,
    /// The avatar's URL, when the user has one (`PUT /v1/me/avatar`).
    pub avatar_url: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AccountBalance {
    pub id: String,
    pub currency: String,
    /// What can be spent: posted credits less posted and held debits (minor units, a decimal
    /// string: it may pass 2^53).
    #[serde(serialize_with = "crate::js_safe::decimal")]
    #[schema(value_type = String, example = "12500")]
    pub available: u128,
    /// Pending debits (withdrawals under way).
    #[serde(serialize_with = "crate::js_safe::decimal")]
    #[schema(value_type = String, example = "0")]
    pub held: u128,
    /// Pending credits.
    #[serde(serialize_with = "crate::js_safe::decimal")]
    #[schema(value_type = String, example = "0")]
    pub incoming: u128,
    /// Posted credits less posted debits.
    #[serde(serialize_with = "crate::js_safe::decimal")]
    #[schema(value_type = String, example = "12500")]
    pub posted: u128,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    pub user: UserJson,
    pub accounts: Vec<AccountBalance>,
}

fn normalize_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= EMAIL_MAX
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(ApiError::invalid("email", "not an email address"))
    }
}

fn check_name(field: &str, name: &str) -> Result<String, ApiError> {
    kizo_wallet::checked_name(name).map_err(|error| ApiError::from(error).field(field))
}

pub(crate) fn check_password(password: &str) -> Result<(), ApiError> {
    let length = password.chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&length) {
        return Err(ApiError::invalid(
            "password",
            format!("{PASSWORD_MIN} to {PASSWORD_MAX} characters"),
        ));
    }
    Ok(())
}

pub(crate) fn store_error(error: impl std::fmt::Display) -> ApiError {
    tracing::warn!(%error, "user store unavailable");
    ApiError::unavailable(error.to_string())
}

#[utoipa::path(post, path = "/v1/auth/signup", tag = "wallet", request_body = Signup,
    responses(
        (status = 201, body = Me),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts: see Retry-After", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
/// `POST /v1/auth/signup`: a user and their wallet. The wallet is created first, so that a
/// user never exists without one; its id is a keyed hash of the email, so that two racing
/// signups with one email (or a retry after a crash between the two writes) make one wallet,
/// which the user who wins the email owns.
pub async fn signup(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    Json(request): Json<Signup>,
) -> Result<Response, ApiError> {
    state.limits.check(
        state.limits.client(peer.ip(), &headers),
        Some(&request.email),
    )?;
    let email = normalize_email(&request.email)?;
    check_password(&request.password)?;
    let first_name = check_name("first_name", &request.first_name)?;
    let last_name = check_name("last_name", &request.last_name)?;
    if state
        .users
        .user_by_email(&email)
        .await
        .map_err(store_error)?
        .is_some()
    {
        return Err(email_taken());
    }
    let password_hash = state.passwords.hash(request.password).await?;
    let wallet_id = state.wallet_id_of(&email);
    let wallet = kizo_wallet::wallet_account(wallet_id, state.currency.ledger);
    let created = state.books.create_accounts(vec![wallet]).await?;
    if !matches!(
        created[0],
        CreateAccountResult::Created | CreateAccountResult::Exists
    ) {
        return Err(ApiError::unavailable(format!(
            "the wallet could not be created: {}",
            created[0]
        )));
    }
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        email,
        password_hash,
        first_name,
        last_name,
        wallet_id: wallet_id.to_string(),
        created_at: state.users.now_ms(),
        email_verified_at: None,
        avatar: None,
    };
    match state.users.create_user(&user).await {
        Ok(()) => {}
        Err(UserError::EmailTaken) => return Err(email_taken()),
        Err(UserError::Store(error)) => return Err(store_error(error)),
    }
    // The user exists without it; `/v1/auth/verify-email/resend` sends another.
    if let Err(error) = crate::email::send_verification(&state, &user).await {
        tracing::warn!(?error, "a verification mail was not written");
    }
    let me = me_of(&state, user).await?;
    Ok((StatusCode::CREATED, Json(me)).into_response())
}

fn email_taken() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "email_taken",
        "an account with this email exists",
    )
    .field("email")
}

#[utoipa::path(post, path = "/v1/auth/login", tag = "wallet", request_body = Login,
    responses(
        (status = 200, body = TokenPair),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts: see Retry-After", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
/// `POST /v1/auth/login`: the same answer, in about the same time, for an unknown email and a
/// wrong password.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    Json(request): Json<Login>,
) -> Result<Response, ApiError> {
    state.limits.check(
        state.limits.client(peer.ip(), &headers),
        Some(&request.email),
    )?;
    let client = state.limits.client(peer.ip(), &headers);
    let email = request.email.trim().to_lowercase();
    state
        .limits
        .sign_in_allowed(client, &email, state.clock.now_ms())?;
    let user = state
        .users
        .user_by_email(&email)
        .await
        .map_err(store_error)?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let matches = state.passwords.verify(stored, request.password).await?;
    if matches {
        state.limits.sign_in_succeeded(client, &email);
    } else {
        state
            .limits
            .sign_in_failed(client, &email, state.clock.now_ms());
    }
    let Some(user) = user.filter(|_| matches) else {
        return Err(
            ApiError::unauthorized("wrong email or password").with_code("invalid_credentials")
        );
    };
    let session_id = uuid::Uuid::new_v4().to_string();
    let (refresh_token, refresh_hash) = new_refresh_token();
    state
        .users
        .create_session(
            &session_id,
            &user.id,
            &refresh_hash,
            state.users.now_ms() + REFRESH_TTL_MS,
        )
        .await
        .map_err(store_error)?;
    Ok(TokenPair::answer(
        &state,
        &user,
        &session_id,
        refresh_token,
        request.refresh_cookie,
    ))
}

#[utoipa::path(post, path = "/v1/auth/refresh", tag = "wallet", request_body = RefreshRequest,
    responses(
        (status = 200, body = TokenPair),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "csrf_header_missing: the refresh cookie came without x-kizo-csrf", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts: see Retry-After", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
/// `POST /v1/auth/refresh`: a new pair for a refresh token, which is spent. A spent token
/// presented again ends its whole session.
pub async fn refresh(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    Json(request): Json<RefreshRequest>,
) -> Result<Response, ApiError> {
    let from_cookie = request.refresh_token.is_none();
    match rotate(&state, peer, &headers, request).await {
        // A cookie's session that is over: the browser forgets it (and the landing page is
        // shown at `/` again).
        Err(refused) if from_cookie && refused.status == StatusCode::UNAUTHORIZED => {
            Ok(forget_session(&state, refused.into_response()))
        }
        other => other,
    }
}

/// Spends the presented refresh token for a new pair.
async fn rotate(
    state: &AppState,
    peer: SocketAddr,
    headers: &axum::http::HeaderMap,
    request: RefreshRequest,
) -> Result<Response, ApiError> {
    state
        .limits
        .check(state.limits.client(peer.ip(), headers), None)?;
    let (presented, in_cookie) = match request.refresh_token {
        Some(token) => (token, false),
        None => match refresh_from_cookie(headers)? {
            Some(token) => (token, true),
            None => {
                return Err(ApiError::unauthorized(
                    "send a refresh_token, or the kizo_refresh cookie",
                )
                .with_code("invalid_refresh_token"))
            }
        },
    };
    let (next_token, next_hash) = new_refresh_token();
    let outcome = state
        .users
        .rotate_refresh(
            &hash_refresh(&presented),
            &next_hash,
            state.users.now_ms() + REFRESH_TTL_MS,
        )
        .await
        .map_err(store_error)?;
    match outcome {
        Refresh::Rotated {
            session_id,
            user_id,
        } => {
            let user = state
                .users
                .user_by_id(&user_id)
                .await
                .map_err(store_error)?
                .ok_or_else(|| ApiError::unauthorized("the user no longer exists"))?;
            Ok(TokenPair::answer(
                state,
                &user,
                &session_id,
                next_token,
                in_cookie,
            ))
        }
        Refresh::Reused { session_id } => {
            state.revocations.insert(session_id, state.users.now_ms());
            tracing::warn!("a spent refresh token was presented; its session is revoked");
            Err(
                ApiError::unauthorized("this refresh token was used before; the session has ended")
                    .with_code("invalid_refresh_token"),
            )
        }
        Refresh::Invalid => Err(ApiError::unauthorized("unknown or expired refresh token")
            .with_code("invalid_refresh_token")),
    }
}

#[utoipa::path(post, path = "/v1/auth/logout", tag = "wallet", security(("access_token" = [])),
    responses(
        (status = 204, description = "The session has ended"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
/// `POST /v1/auth/logout`: ends the session; its access tokens stop working at once, and the
/// refresh cookie, if any, is deleted.
pub async fn logout(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Response, ApiError> {
    state
        .users
        .revoke_session(&caller.session_id)
        .await
        .map_err(store_error)?;
    state
        .revocations
        .insert(caller.session_id, state.users.now_ms());
    Ok(forget_session(
        &state,
        StatusCode::NO_CONTENT.into_response(),
    ))
}

/// `response`, deleting the browser's session cookies (the refresh token and the signed-in
/// hint): two `Set-Cookie` headers, appended (an array of headers would keep only the last).
fn forget_session(state: &AppState, mut response: Response) -> Response {
    let secure = secure_cookies(state);
    let headers = response.headers_mut();
    headers.append(
        axum::http::header::SET_COOKIE,
        cleared_refresh_cookie(secure),
    );
    headers.append(
        axum::http::header::SET_COOKIE,
        cleared_signed_in_cookie(secure),
    );
    response
}

/// The caller and their accounts, with balances.
#[utoipa::path(get, path = "/v1/me", tag = "wallet", security(("access_token" = [])),
    responses(
        (status = 200, body = Me),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn me(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<Me>, ApiError> {
    let user = state
        .users
        .user_by_id(&caller.user_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::unauthorized("the user no longer exists"))?;
    Ok(Json(me_of(&state, user).await?))
}

/// Changes the caller's names.
#[utoipa::path(patch, path = "/v1/me", tag = "wallet", security(("access_token" = [])), request_body = UpdateMe,
    responses(
        (status = 200, body = Me),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn update_me(
    State(state): State<AppState>,
    caller: Authenticated,
    Json(request): Json<UpdateMe>,
) -> Result<Json<Me>, ApiError> {
    let user = state
        .users
        .user_by_id(&caller.user_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::unauthorized("the user no longer exists"))?;
    let first_name = match &request.first_name {
        Some(name) => check_name("first_name", name)?,
        None => user.first_name.clone(),
    };
    let last_name = match &request.last_name {
        Some(name) => check_name("last_name", name)?,
        None => user.last_name.clone(),
    };
    state
        .users
        .update_names(&user.id, &first_name, &last_name)
        .await
        .map_err(store_error)?;
    Ok(Json(
        me_of(
            &state,
            User {
                first_name,
                last_name,
                ..user
            },
        )
        .await?,
    ))
}

async fn me_of(state: &AppState, user: User) -> Result<Me, ApiError> {
    let wallet_id: u128 = user
        .wallet_id
        .parse()
        .map_err(|_| store_error("a stored wallet id is not a number"))?;
    let accounts = state.books.lookup_accounts(vec![wallet_id]).await?;
    Ok(Me {
        user: UserJson {
            id: user.id,
            email: user.email,
            email_verified: user.email_verified_at.is_some(),
            first_name: user.first_name,
            last_name: user.last_name,
            avatar_url: user.avatar.as_deref().map(crate::avatars::url),
        },
        accounts: accounts.iter().map(|a| balance_of(state, a)).collect(),
    })
}

/// A wallet's balances as the API shows them.
pub fn balance_of(state: &AppState, a: &kizo_engine::Account) -> AccountBalance {
    let balance = Balance::of(a);
    AccountBalance {
        id: uuid::Uuid::from_u128(a.id).to_string(),
        currency: state.currency.code.clone(),
        available: balance.available,
        held: balance.held,
        incoming: balance.incoming,
        posted: balance.posted,
    }
}
