//! The webhooks API: endpoints registered, listed and removed, their deliveries listed and
//! parked ones replayed. The ledger API's key holder manages `/v1/ledger/webhooks` (every
//! ledger's events); a signed-in user manages `/v1/me/webhooks` (their wallet's events). The
//! same handlers serve both, for an owner: `ledger` or `user:<id>`. An endpoint of another
//! owner is a 404, never a 403 that would confirm it exists.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use kizo_persistence::webhooks::{Endpoint, StateFilter, StoredDelivery};
use kizo_webhooks::{DeliveryState, EndpointError, EndpointSpec, Secret, ENDPOINTS_PER_OWNER_MAX};
use serde::{Deserialize, Serialize};

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::events::EventKind;
use crate::json::{Json, Query};
use crate::server::AppState;
use crate::webhooks::Webhooks;

/// Deliveries listed per page, at most.
pub const PAGE_MAX: u32 = 100;
/// Event ids one replay may name.
pub const REPLAY_IDS_MAX: usize = 1_000;
/// Parked deliveries one replay makes due, at most.
pub const REPLAY_MAX: usize = 10_000;

/// The ledger API key holder's routes (behind the key).
pub fn ledger_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/ledger/webhooks",
            post(ledger_register).get(ledger_list),
        )
        .route("/v1/ledger/webhooks/{id}", delete(ledger_remove))
        .route(
            "/v1/ledger/webhooks/{id}/deliveries",
            get(ledger_deliveries),
        )
        .route("/v1/ledger/webhooks/{id}/replay", post(ledger_replay))
}

/// A signed-in user's routes.
pub fn user_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/me/webhooks", post(user_register).get(user_list))
        .route("/v1/me/webhooks/{id}", delete(user_remove))
        .route("/v1/me/webhooks/{id}/deliveries", get(user_deliveries))
        .route("/v1/me/webhooks/{id}/replay", post(user_replay))
}

const LEDGER: &str = "ledger";

/// Who registers: the ledger API's key holder, or a user and their wallet.
struct Owner {
    name: String,
    wallet: Option<u128>,
}

impl Owner {
    fn ledger() -> Owner {
        Owner {
            name: LEDGER.into(),
            wallet: None,
        }
    }

    fn user(caller: &Authenticated) -> Owner {
        Owner {
            name: format!("user:{}", caller.user_id),
            wallet: Some(caller.wallet),
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointRequest {
    /// Where deliveries are POSTed: `http://` or `https://`, at most 2048 bytes, without
    /// credentials or fragment; not a loopback or private address unless the server allows it.
    #[schema(
        example = "https://hooks.example.com/kizo",
        max_length = 2048,
        pattern = "^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?([/?][!-\"$-~]*)?$"
    )]
    pub url: String,
    /// The event kinds sent (docs/events.md), or `["*"]` for every kind.
    #[schema(schema_with = kinds_schema)]
    pub kinds: Vec<String>,
}

/// 1 to 32 of the event kinds, or `*`.
fn kinds_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let kinds = EventKind::ALL
        .iter()
        .map(|kind| kind.code())
        .chain(std::iter::once("*"));
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(kinds)),
        )
        .min_items(Some(1))
        .max_items(Some(kizo_webhooks::endpoint::KINDS_MAX))
        .description(Some(
            "The event kinds sent (docs/events.md), or `[\"*\"]` for every kind.",
        ))
        .examples([serde_json::json!(["transfer.posted", "transfer.voided"])])
        .build()
}

/// An event's id, `<partition>.<lsn>.<index>` (each part a number that fits its type; the
/// cursor's pattern says the same).
const EVENT_ID_PATTERN: &str = "^[0-9]{1,9}\\.[0-9]{1,19}\\.[0-9]{1,9}$";

/// At most [`REPLAY_IDS_MAX`] event ids, or null.
fn event_ids_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(EVENT_ID_PATTERN)),
        )
        .max_items(Some(REPLAY_IDS_MAX))
        .description(Some(
            "The parked deliveries to attempt again, by event id; every parked one (at most 10,000) when absent.",
        ))
        .build()
}

/// An endpoint. Its `secret` (`whsec_...`, which signs every delivery) is shown once, when it
/// is registered.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointJson {
    pub id: String,
    pub url: String,
    pub kinds: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl EndpointJson {
    fn of(endpoint: &Endpoint, with_secret: bool) -> EndpointJson {
        EndpointJson {
            id: endpoint.id.clone(),
            url: endpoint.url.clone(),
            kinds: endpoint.kinds.clone(),
            created_at: crate::js_safe::rfc3339_ns(endpoint.created_ms.saturating_mul(1_000_000)),
            secret: with_secret.then(|| endpoint.secret.clone()),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointList {
    pub endpoints: Vec<EndpointJson>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// pending, delivered or parked; every state when absent.
    #[param(pattern = "^(pending|delivered|parked)$")]
    pub state: Option<String>,
    /// 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// From a page's `next_cursor`: the deliveries of events before it in the log.
    #[param(pattern = "^[0-9]{1,9}\\.[0-9]{1,19}\\.[0-9]{1,9}$")]
    pub cursor: Option<String>,
}

/// One event for one endpoint.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryJson {
    /// The event's id, sent as `webhook-id`.
    pub event_id: String,
    pub kind: String,
    /// pending, delivered or parked.
    pub state: String,
    /// Attempts since it was written or last replayed.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due (pending only), RFC 3339.
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl DeliveryJson {
    fn of(stored: &StoredDelivery) -> DeliveryJson {
        let at = |ms: u64| crate::js_safe::rfc3339_ns(ms.saturating_mul(1_000_000));
        let (state, next) = match stored.delivery.state {
            DeliveryState::Pending { due_ms } => ("pending", Some(at(due_ms))),
            DeliveryState::Delivered { .. } => ("delivered", None),
            DeliveryState::Parked { .. } => ("parked", None),
        };
        DeliveryJson {
            event_id: stored.event_id.clone(),
            kind: stored.kind.clone(),
            state: state.into(),
            attempts: stored.delivery.attempts,
            last_error: stored.delivery.last_error.clone(),
            next_attempt_at: next,
            created_at: at(stored.created_ms),
            updated_at: at(stored.updated_ms),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    /// Newest first (by the event's place in the log).
    pub deliveries: Vec<DeliveryJson>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// The parked deliveries to attempt again, by event id; every parked one (at most 10,000)
    /// when absent.
    #[schema(schema_with = event_ids_schema)]
    pub event_ids: Option<Vec<String>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ReplayAnswer {
    /// Parked deliveries made due again, their attempts counted afresh.
    pub replayed: u64,
}

fn store_error(error: kizo_persistence::StoreError) -> ApiError {
    tracing::warn!(%error, "webhook store unavailable");
    ApiError::unavailable(error.to_string())
}

async fn register(
    state: &AppState,
    owner: Owner,
    request: EndpointRequest,
) -> Result<Response, ApiError> {
    let webhooks = &*state.webhooks;
    let known: Vec<&str> = EventKind::ALL.iter().map(|kind| kind.code()).collect();
    let spec = EndpointSpec::new(
        &request.url,
        &request.kinds,
        &known,
        webhooks.settings.allow_private,
    )
    .map_err(|error| {
        let (code, field) = match error {
            EndpointError::Url => ("bad_webhook_url", "url"),
            EndpointError::PrivateAddress => ("webhook_address_refused", "url"),
            EndpointError::Kinds => ("bad_webhook_kinds", "kinds"),
        };
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, error.to_string()).field(field)
    })?;
    let mut secret = [0u8; 32];
    secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    let endpoint = Endpoint {
        id: format!("wh_{}", uuid::Uuid::new_v4().simple()),
        owner: owner.name,
        url: spec.url,
        kinds: spec.kinds,
        secret: Secret::from_bytes(&secret)
            .expect("32 bytes make a secret")
            .to_text(),
        wallet: owner.wallet,
        created_ms: state.clock.now_ms(),
    };
    let stored = webhooks
        .store
        .register(&endpoint, ENDPOINTS_PER_OWNER_MAX)
        .await
        .map_err(store_error)?;
    if !stored {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_webhooks",
            format!("at most {ENDPOINTS_PER_OWNER_MAX} endpoints each: remove one first"),
        ));
    }
    Ok((StatusCode::CREATED, Json(EndpointJson::of(&endpoint, true))).into_response())
}

async fn list(state: &AppState, owner: Owner) -> Result<Json<EndpointList>, ApiError> {
    let endpoints = &*state
        .webhooks
        .store
        .endpoints_of(&owner.name)
        .await
        .map_err(store_error)?;
    Ok(Json(EndpointList {
        endpoints: endpoints
            .iter()
            .map(|e| EndpointJson::of(e, false))
            .collect(),
    }))
}

fn no_such_endpoint() -> ApiError {
    ApiError::not_found("no such webhook endpoint").with_code("webhook_not_found")
}

/// `id`, if it is one of `owner`'s endpoints.
async fn owned(webhooks: &Webhooks, owner: &Owner, id: &str) -> Result<Endpoint, ApiError> {
    webhooks
        .store
        .endpoints_of(&owner.name)
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|endpoint| endpoint.id == id)
        .ok_or_else(no_such_endpoint)
}

async fn remove(state: &AppState, owner: Owner, id: &str) -> Result<StatusCode, ApiError> {
    let webhooks = &*state.webhooks;
    if !webhooks
        .store
        .remove(&owner.name, id)
        .await
        .map_err(store_error)?
    {
        return Err(no_such_endpoint());
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn deliveries(
    state: &AppState,
    owner: Owner,
    id: &str,
    query: DeliveriesQuery,
) -> Result<Json<DeliveryPage>, ApiError> {
    let webhooks = &*state.webhooks;
    let filter = match query.state.as_deref() {
        None => None,
        Some("pending") => Some(StateFilter::Pending),
        Some("delivered") => Some(StateFilter::Delivered),
        Some("parked") => Some(StateFilter::Parked),
        Some(_) => return Err(ApiError::invalid("state", "pending, delivered or parked")),
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("1 to {PAGE_MAX}")));
    }
    let before = match query.cursor.as_deref() {
        None => None,
        Some(cursor) => Some(
            crate::events::parse_id(cursor)
                .ok_or_else(|| ApiError::invalid("cursor", "a page's next_cursor"))?,
        ),
    };
    let endpoint = owned(webhooks, &owner, id).await?;
    let page = webhooks
        .store
        .deliveries(&endpoint.id, filter, before, limit as usize + 1)
        .await
        .map_err(store_error)?;
    let more = page.len() > limit as usize;
    let page = &page[..page.len().min(limit as usize)];
    Ok(Json(DeliveryPage {
        deliveries: page.iter().map(DeliveryJson::of).collect(),
        next_cursor: more
            .then(|| page.last().map(|d| d.event_id.clone()))
            .flatten(),
    }))
}

async fn replay(
    state: &AppState,
    owner: Owner,
    id: &str,
    request: ReplayRequest,
) -> Result<Json<ReplayAnswer>, ApiError> {
    let webhooks = &*state.webhooks;
    if let Some(ids) = &request.event_ids {
        if ids.len() > REPLAY_IDS_MAX {
            return Err(ApiError::invalid(
                "event_ids",
                format!("at most {REPLAY_IDS_MAX} event ids"),
            ));
        }
        if ids.iter().any(|id| crate::events::parse_id(id).is_none()) {
            return Err(ApiError::invalid(
                "event_ids",
                "event ids, <partition>.<lsn>.<index>",
            ));
        }
    }
    let endpoint = owned(webhooks, &owner, id).await?;
    let replayed = webhooks
        .store
        .replay(
            &endpoint.id,
            request.event_ids.as_deref(),
            state.clock.now_ms(),
            REPLAY_MAX,
        )
        .await
        .map_err(store_error)?;
    if replayed > 0 {
        webhooks.wake();
    }
    Ok(Json(ReplayAnswer { replayed }))
}

const PROBLEM: &str = "application/problem+json";

#[utoipa::path(post, path = "/v1/ledger/webhooks", tag = "webhooks", security(("api_key" = [])),
    request_body = EndpointRequest,
    responses(
        (status = 201, description = "Registered; `secret` is shown this once", body = EndpointJson),
        (status = 400, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 401, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 413, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 415, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 409, description = "too_many_webhooks: the owner has as many endpoints as it may", body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "bad_webhook_url, webhook_address_refused, bad_webhook_kinds", body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 503, body = crate::error::ProblemDoc, content_type = PROBLEM),
    ))]
pub async fn ledger_register(
    State(state): State<AppState>,
    Json(request): Json<EndpointRequest>,
) -> Result<Response, ApiError> {
    register(&state, Owner::ledger(), request).await
}

#[utoipa::path(get, path = "/v1/ledger/webhooks", tag = "webhooks", security(("api_key" = [])),
    responses(
        (status = 200, body = EndpointList),
        (status = 401, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 503, body = crate::error::ProblemDoc, content_type = PROBLEM),
    ))]
pub async fn ledger_list(State(state): State<AppState>) -> Result<Json<EndpointList>, ApiError> {
    list(&state, Owner::ledger()).await
}

#[utoipa::path(delete, path = "/v1/ledger/webhooks/{id}", tag = "webhooks", security(("api_key" = [])),
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 204, description = "Removed, with its deliveries"),
        (status = 401, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 404, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 503, body = crate::error::ProblemDoc, content_type = PROBLEM),
    ))]
pub async fn ledger_remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove(&state, Owner::ledger(), &id).await
}

#[utoipa::path(get, path = "/v1/ledger/webhooks/{id}/deliveries", tag = "webhooks", security(("api_key" = [])),
    params(("id" = String, Path, description = "The endpoint's id"), DeliveriesQuery),
    responses(
        (status = 200, body = DeliveryPage),
        (status = 400, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 401, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 404, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 422, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 503, body = crate::error::ProblemDoc, content_type = PROBLEM),
    ))]
pub async fn ledger_deliveries(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<DeliveriesQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    deliveries(&state, Owner::ledger(), &id, query).await
}

#[utoipa::path(post, path = "/v1/ledger/webhooks/{id}/replay", tag = "webhooks", security(("api_key" = [])),
    params(("id" = String, Path, description = "The endpoint's id")),
    request_body = ReplayRequest,
    responses(
        (status = 200, body = ReplayAnswer),
        (status = 400, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 401, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 404, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 413, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 415, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 422, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 503, body = crate::error::ProblemDoc, content_type = PROBLEM),
    ))]
pub async fn ledger_replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(request): Json<ReplayRequest>,
) -> Result<Json<ReplayAnswer>, ApiError> {
    replay(&state, Owner::ledger(), &id, request).await
}

#[utoipa::path(post, path = "/v1/me/webhooks", tag = "webhooks", security(("access_token" = [])),
    request_body = EndpointRequest,
    responses(
        (status = 201, description = "Registered; `secret` is shown this once", body = EndpointJson),
        (status = 400, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 401, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 413, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 415, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 409, description = "too_many_webhooks: the owner has as many endpoints as it may", body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 422, description = "bad_webhook_url, webhook_address_refused, bad_webhook_kinds", body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 503, body = crate::error::ProblemDoc, content_type = PROBLEM),
    ))]
pub async fn user_register(
    State(state): State<AppState>,
    caller: Authenticated,
    Json(request): Json<EndpointRequest>,
) -> Result<Response, ApiError> {
    register(&state, Owner::user(&caller), request).await
}

#[utoipa::path(get, path = "/v1/me/webhooks", tag = "webhooks", security(("access_token" = [])),
    responses(
        (status = 200, body = EndpointList),
        (status = 401, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 503, body = crate::error::ProblemDoc, content_type = PROBLEM),
    ))]
pub async fn user_list(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<EndpointList>, ApiError> {
    list(&state, Owner::user(&caller)).await
}

#[utoipa::path(delete, path = "/v1/me/webhooks/{id}", tag = "webhooks", security(("access_token" = [])),
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 204, description = "Removed, with its deliveries"),
        (status = 401, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 404, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 503, body = crate::error::ProblemDoc, content_type = PROBLEM),
    ))]
pub async fn user_remove(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove(&state, Owner::user(&caller), &id).await
}

#[utoipa::path(get, path = "/v1/me/webhooks/{id}/deliveries", tag = "webhooks", security(("access_token" = [])),
    params(("id" = String, Path, description = "The endpoint's id"), DeliveriesQuery),
    responses(
        (status = 200, body = DeliveryPage),
        (status = 400, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 401, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 404, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 422, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 503, body = crate::error::ProblemDoc, content_type = PROBLEM),
    ))]
pub async fn user_deliveries(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    Query(query): Query<DeliveriesQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    deliveries(&state, Owner::user(&caller), &id, query).await
}

#[utoipa::path(post, path = "/v1/me/webhooks/{id}/replay", tag = "webhooks", security(("access_token" = [])),
    params(("id" = String, Path, description = "The endpoint's id")),
    request_body = ReplayRequest,
    responses(
        (status = 200, body = ReplayAnswer),
        (status = 400, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 401, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 404, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 413, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 415, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 422, body = crate::error::ProblemDoc, content_type = PROBLEM),
        (status = 503, body = crate::error::ProblemDoc, content_type = PROBLEM),
    ))]
pub async fn user_replay(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    Json(request): Json<ReplayRequest>,
) -> Result<Json<ReplayAnswer>, ApiError> {
    replay(&state, Owner::user(&caller), &id, request).await
}
