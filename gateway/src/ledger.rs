//! The batch ledger API, for services: the engine's operations over HTTP, up to 8189 events
//! per call, one result per event with the engine's result codes. Authenticated with an API
//! key (`Authorization: Bearer <key>`), not a user token.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::Router;
use kizo_engine::{Account, AccountFilter, Transfer, BATCH_EVENTS_MAX};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::json::Json;
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
#[derive(Serialize)]
pub struct Results {
    pub results: Vec<EventResult>,
}

#[derive(Serialize)]
pub struct EventResult {
    pub result: &'static str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ids {
    pub ids: Vec<U128>,
}

#[derive(Serialize)]
pub struct Accounts {
    pub accounts: Vec<AccountJson>,
}

#[derive(Serialize)]
pub struct Transfers {
    pub transfers: Vec<TransferJson>,
}

fn check_batch(len: usize, field: &str) -> Result<(), ApiError> {
    if len == 0 {
        return Err(ApiError::invalid(field, "a batch holds at least one event"));
    }
    if len > BATCH_EVENTS_MAX {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("{len} events; at most {BATCH_EVENTS_MAX} per call"),
        )
        .field(field));
    }
    Ok(())
}

async fn create_accounts(
    State(state): State<AppState>,
    Json(events): Json<Vec<AccountJson>>,
) -> Result<Json<Results>, ApiError> {
    check_batch(events.len(), "")?;
    let accounts: Vec<Account> = events.into_iter().map(Account::from).collect();
    let results = state.engine.create_accounts(accounts).await?;
    crate::metrics::results("kizo_accounts_total", results.iter().map(|r| r.code()));
    Ok(Json(Results {
        results: results
            .iter()
            .map(|r| EventResult { result: r.code() })
            .collect(),
    }))
}

async fn create_transfers(
    State(state): State<AppState>,
    Json(events): Json<Vec<TransferJson>>,
) -> Result<Json<Results>, ApiError> {
    check_batch(events.len(), "")?;
    let transfers: Vec<Transfer> = events.into_iter().map(Transfer::from).collect();
    let results = state.engine.create_transfers(transfers).await?;
    crate::metrics::results("kizo_transfers_total", results.iter().map(|r| r.code()));
    Ok(Json(Results {
        results: results
            .iter()
            .map(|r| EventResult { result: r.code() })
            .collect(),
    }))
}

async fn lookup_accounts(
    State(state): State<AppState>,
    Json(request): Json<Ids>,
) -> Result<Json<Accounts>, ApiError> {
    check_batch(request.ids.len(), "ids")?;
    let ids = request.ids.iter().map(|id| id.0).collect();
    let accounts = state.engine.lookup_accounts(ids).await?;
    Ok(Json(Accounts {
        accounts: accounts.into_iter().map(AccountJson::from).collect(),
    }))
}

async fn lookup_transfers(
    State(state): State<AppState>,
    Json(request): Json<Ids>,
) -> Result<Json<Transfers>, ApiError> {
    check_batch(request.ids.len(), "ids")?;
    let ids = request.ids.iter().map(|id| id.0).collect();
    let transfers = state.engine.lookup_transfers(ids).await?;
    Ok(Json(Transfers {
        transfers: transfers.into_iter().map(TransferJson::from).collect(),
    }))
}

/// `GET /v1/ledger/accounts/{id}/transfers`: the account's transfers, oldest first unless
/// `reversed`, within `[timestamp_min, timestamp_max]` (0: unbounded), paged by timestamp.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    #[serde(default = "default_limit")]
    pub limit: u32,
    #[serde(default)]
    pub timestamp_min: Option<U64Query>,
    #[serde(default)]
    pub timestamp_max: Option<U64Query>,
    #[serde(default = "yes")]
    pub debits: bool,
    #[serde(default = "yes")]
    pub credits: bool,
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

async fn account_transfers(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Transfers>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_query",
            rejection.body_text(),
        )
    })?;
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
    let transfers = state.engine.get_account_transfers(filter).await?;
    Ok(Json(Transfers {
        transfers: transfers.into_iter().map(TransferJson::from).collect(),
    }))
}
