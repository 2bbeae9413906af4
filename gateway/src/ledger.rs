//! The batch ledger API, for services: the engine's operations over HTTP, up to 8189 events
//! per call, one result per event with the engine's result codes. Authenticated with an API
//! key (`Authorization: Bearer <key>`), not a user token.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use kizo_engine::{Account, AccountFilter, Transfer, BATCH_EVENTS_MAX};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::json::{Json, Query};
use crate::server::AppState;
use crate::wire::{AccountJson, TransferJson, U128};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/ledger/accounts", post(create_accounts))
        .route("/v1/ledger/transfers", post(create_transfers))
        .route("/v1/ledger/accounts/lookup", post(lookup_accounts))
        .route("/v1/ledger/transfers/lookup", post(lookup_transfers))
        .route("/v1/ledger/accounts/{id}/transfers", get(account_transfers))
}

/// One result per event, in order.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Results {
    pub results: Vec<EventResult>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventResult {
    /// The engine's result code: `created`, `exists`, `exceeds_credits`, ...
    #[schema(value_type = String, example = "created")]
    pub result: &'static str,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ids {
    #[schema(min_items = 1, max_items = 8189)]
    pub ids: Vec<U128>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Accounts {
    pub accounts: Vec<AccountJson>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Transfers {
    pub transfers: Vec<TransferJson>,
}

/// The documented form of a batch: 1 to 8189 events.
fn batch_schema<T: utoipa::ToSchema>() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(utoipa::openapi::Ref::from_schema_name(T::name()))
        .min_items(Some(1))
        .max_items(Some(BATCH_EVENTS_MAX))
        .into()
}

/// A batch of accounts, as the OpenAPI document shows it.
pub struct AccountBatch;

impl utoipa::PartialSchema for AccountBatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        batch_schema::<AccountJson>()
    }
}

impl utoipa::ToSchema for AccountBatch {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            AccountJson::name().into(),
            <AccountJson as utoipa::PartialSchema>::schema(),
        ));
        <AccountJson as utoipa::ToSchema>::schemas(schemas);
    }
}

/// A batch of transfers, as the OpenAPI document shows it.
pub struct TransferBatch;

impl utoipa::PartialSchema for TransferBatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        batch_schema::<TransferJson>()
    }
}

impl utoipa::ToSchema for TransferBatch {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            TransferJson::name().into(),
            <TransferJson as utoipa::PartialSchema>::schema(),
        ));
        <TransferJson as utoipa::ToSchema>::schemas(schemas);
    }
}

fn check_batch(len: usize, field: &str) -> Result<(), ApiError> {
    if len == 0 {
        return Err(ApiError::invalid(field, "a batch holds at least one event"));
    }
    if len > BATCH_EVENTS_MAX {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "batch_too_large",
            format!("{len} events; at most {BATCH_EVENTS_MAX} per call"),
        )
        .field(field));
    }
    Ok(())
}

/// Creates accounts: one result per event, in order.
#[utoipa::path(post, path = "/v1/ledger/accounts", tag = "ledger", security(("api_key" = [])),
    request_body = AccountBatch,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
        description = "Optional: retries with the same key and request get the first answer again (with `Idempotent-Replayed: true`), kept at least 24 hours")),
    responses(
        (status = 200, body = Results),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "A request with this Idempotency-Key is still running", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn create_accounts(
    State(state): State<AppState>,
    Json(events): Json<Vec<AccountJson>>,
) -> Result<Json<Results>, ApiError> {
    check_batch(events.len(), "")?;
    let accounts: Vec<Account> = events.into_iter().map(Account::from).collect();
    let results = state.books.create_accounts(accounts).await?;
    crate::metrics::results("kizo_accounts_total", results.iter().map(|r| r.code()));
    Ok(Json(Results {
        results: results
            .iter()
            .map(|r| EventResult { result: r.code() })
            .collect(),
    }))
}

/// Creates transfers: one result per event, in order (linked chains all or nothing).
#[utoipa::path(post, path = "/v1/ledger/transfers", tag = "ledger", security(("api_key" = [])),
    request_body = TransferBatch,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
        description = "Optional: retries with the same key and request get the first answer again (with `Idempotent-Replayed: true`), kept at least 24 hours")),
    responses(
        (status = 200, body = Results),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "A request with this Idempotency-Key is still running", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn create_transfers(
    State(state): State<AppState>,
    Json(events): Json<Vec<TransferJson>>,
) -> Result<Json<Results>, ApiError> {
    check_batch(events.len(), "")?;
    let transfers: Vec<Transfer> = events.into_iter().map(Transfer::from).collect();
    let results = state.books.create_transfers(transfers).await?;
    crate::metrics::results("kizo_transfers_total", results.iter().map(|r| r.code()));
    Ok(Json(Results {
        results: results
            .iter()
            .map(|r| EventResult { result: r.code() })
            .collect(),
    }))
}

/// The accounts with these ids (those that exist), with their balances.
#[utoipa::path(post, path = "/v1/ledger/accounts/lookup", tag = "ledger", security(("api_key" = [])),
    request_body = Ids,
    responses(
        (status = 200, body = Accounts),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn lookup_accounts(
    State(state): State<AppState>,
    Json(request): Json<Ids>,
) -> Result<Json<Accounts>, ApiError> {
    check_batch(request.ids.len(), "ids")?;
    let ids = request.ids.iter().map(|id| id.0).collect();
    let accounts = state.books.lookup_accounts(ids).await?;
    Ok(Json(Accounts {
        accounts: accounts.into_iter().map(AccountJson::from).collect(),
    }))
}

/// The transfers with these ids (those that exist).
#[utoipa::path(post, path = "/v1/ledger/transfers/lookup", tag = "ledger", security(("api_key" = [])),
    request_body = Ids,
    responses(
        (status = 200, body = Transfers),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn lookup_transfers(
    State(state): State<AppState>,
    Json(request): Json<Ids>,
) -> Result<Json<Transfers>, ApiError> {
    check_batch(request.ids.len(), "ids")?;
    let ids = request.ids.iter().map(|id| id.0).collect();
    let transfers = state.books.lookup_transfers(ids).await?;
    Ok(Json(Transfers {
        transfers: transfers.into_iter().map(TransferJson::from).collect(),
    }))
}

/// `GET /v1/ledger/accounts/{id}/transfers`: the account's transfers, oldest first unless
/// `reversed`, within `[timestamp_min, timestamp_max]` (0: unbounded), paged by timestamp.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// At most this many transfers (1 to 8189, default 100).
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 8189)]
    pub limit: u32,
    /// Transfers at or after this timestamp (ns; 0 or absent: unbounded).
    #[serde(default)]
    #[param(value_type = Option<String>, pattern = "^[0-9]{1,19}$")]
    pub timestamp_min: Option<U64Query>,
    /// Transfers at or before this timestamp (ns; 0 or absent: unbounded).
    #[serde(default)]
    #[param(value_type = Option<String>, pattern = "^[0-9]{1,19}$")]
    pub timestamp_max: Option<U64Query>,
    /// Include transfers that debit the account (default true).
    #[serde(default = "yes")]
    pub debits: bool,
    /// Include transfers that credit the account (default true).
    #[serde(default = "yes")]
    pub credits: bool,
    /// Newest first (default false).
    #[serde(default)]
    pub reversed: bool,
}

/// A u64 in a query string (plain digits).
#[derive(Deserialize)]
#[serde(transparent)]
pub struct U64Query(pub u64);

fn default_limit() -> u32 {
    100
}

fn yes() -> bool {
    true
}

/// An account's transfers, oldest first unless `reversed`, paged by timestamp.
#[utoipa::path(get, path = "/v1/ledger/accounts/{id}/transfers", tag = "ledger", security(("api_key" = [])),
    params(("id" = U128, Path, description = "The account id, a decimal u128"), HistoryQuery),
    responses(
        (status = 200, body = Transfers),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn account_transfers(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<Transfers>, ApiError> {
    let id: u128 = id
        .parse()
        .map_err(|_| ApiError::invalid("id", "an account id is a decimal u128"))?;
    if query.limit == 0 || query.limit as usize > BATCH_EVENTS_MAX {
        return Err(ApiError::invalid(
            "limit",
            format!("limit must be between 1 and {BATCH_EVENTS_MAX}"),
        ));
    }
    let filter = AccountFilter {
        account_id: id,
        timestamp_min: query.timestamp_min.map_or(0, |t| t.0),
        timestamp_max: query.timestamp_max.map_or(0, |t| t.0),
        limit: query.limit,
        debits: query.debits,
        credits: query.credits,
        reversed: query.reversed,
    };
    let transfers = state.books.get_account_transfers(filter).await?;
    Ok(Json(Transfers {
        transfers: transfers.into_iter().map(TransferJson::from).collect(),
    }))
}
