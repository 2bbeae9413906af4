//! The batch ledger API, for services: the engine's operations over HTTP, up to 8189 events
//! per call, one result per event with the engine's result codes. Authenticated with an API
//! key (`Authorization: Bearer <key>`), not a user token.
//!
//! Creates and lookups take JSON, or the binary format (`kizo-binary`: 128-byte records) when
//! `Content-Type` is its media type, and answer in the form `Accept` asks for, or else in the
//! body's ([`Wire`]). Problems are JSON whatever the form.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use kizo_engine::{Account, AccountFilter, Transfer, BATCH_EVENTS_MAX};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::json::{binary_rejected, Json, JsonOrBinary, Query};
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

/// The form of a ledger call's answer: the binary format or JSON as `Accept` names one, or else
/// the form of the request's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Json,
    Binary,
}

impl Wire {
    pub fn of_answer(headers: &HeaderMap) -> Wire {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let mut json = false;
        for entry in accept.split(',') {
            let media = entry.split(';').next().unwrap_or_default().trim();
            if media.eq_ignore_ascii_case(kizo_binary::MEDIA_TYPE) {
                return Wire::Binary;
            }
            json |= media.eq_ignore_ascii_case("application/json");
        }
        if !json && crate::json::is_binary(headers.get(header::CONTENT_TYPE)) {
            Wire::Binary
        } else {
            Wire::Json
        }
    }

    /// A create's answer: every result (JSON), or those of the events not created (binary).
    fn results<R: kizo_binary::ResultCode>(self, results: &[R]) -> Response {
        match self {
            Wire::Json => Json(Results {
                results: results
                    .iter()
                    .map(|r| EventResult { result: r.name() })
                    .collect(),
            })
            .into_response(),
            Wire::Binary => binary(kizo_binary::encode_results(results)),
        }
    }
}

fn binary(bytes: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(kizo_binary::MEDIA_TYPE),
        )],
        bytes,
    )
        .into_response()
}

impl<S: Send + Sync> FromRequestParts<S> for Wire {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Wire::of_answer(&parts.headers))
    }
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

/// A body in the binary format, as the OpenAPI document shows it (docs/binary.md has the
/// byte layouts).
pub struct BinaryBatch;

impl utoipa::PartialSchema for BinaryBatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::openapi::bytes_schema(
            "Little-endian records (docs/binary.md): 128-byte accounts or transfers in TigerBeetle's layouts, 16-byte ids, or 8-byte (index, code) results of the events not created.",
        )
    }
}

impl utoipa::ToSchema for BinaryBatch {}

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
    request_body(content((AccountBatch = "application/json"), (BinaryBatch = "application/vnd.kizo.batch.v1"))),
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
        description = "Optional: retries with the same key and request get the first answer again (with `Idempotent-Replayed: true`), kept at least 24 hours")),
    responses(
        (status = 200, content((Results = "application/json"), (BinaryBatch = "application/vnd.kizo.batch.v1"))),
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
    answer: Wire,
    body: JsonOrBinary<Vec<AccountJson>>,
) -> Result<Response, ApiError> {
    let accounts: Vec<Account> = match body {
        JsonOrBinary::Json(events) => {
            check_batch(events.len(), "")?;
            events.into_iter().map(Account::from).collect()
        }
        JsonOrBinary::Binary(bytes) => {
            kizo_binary::decode_accounts(&bytes).map_err(|e| binary_rejected(e, ""))?
        }
    };
    let results = state.books.create_accounts(accounts).await?;
    crate::metrics::results("kizo_accounts_total", results.iter().map(|r| r.code()));
    Ok(answer.results(&results))
}

/// Creates transfers: one result per event, in order (linked chains all or nothing).
#[utoipa::path(post, path = "/v1/ledger/transfers", tag = "ledger", security(("api_key" = [])),
    request_body(content((TransferBatch = "application/json"), (BinaryBatch = "application/vnd.kizo.batch.v1"))),
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
        description = "Optional: retries with the same key and request get the first answer again (with `Idempotent-Replayed: true`), kept at least 24 hours")),
    responses(
        (status = 200, content((Results = "application/json"), (BinaryBatch = "application/vnd.kizo.batch.v1"))),
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
    answer: Wire,
    body: JsonOrBinary<Vec<TransferJson>>,
) -> Result<Response, ApiError> {
    let transfers: Vec<Transfer> = match body {
        JsonOrBinary::Json(events) => {
            check_batch(events.len(), "")?;
            events.into_iter().map(Transfer::from).collect()
        }
        JsonOrBinary::Binary(bytes) => {
            kizo_binary::decode_transfers(&bytes).map_err(|e| binary_rejected(e, ""))?
        }
    };
    let results = state.books.create_transfers(transfers).await?;
    crate::metrics::results("kizo_transfers_total", results.iter().map(|r| r.code()));
    Ok(answer.results(&results))
}

/// The accounts with these ids (those that exist), with their balances.
#[utoipa::path(post, path = "/v1/ledger/accounts/lookup", tag = "ledger", security(("api_key" = [])),
    request_body(content((Ids = "application/json"), (BinaryBatch = "application/vnd.kizo.batch.v1"))),
    responses(
        (status = 200, content((Accounts = "application/json"), (BinaryBatch = "application/vnd.kizo.batch.v1"))),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn lookup_accounts(
    State(state): State<AppState>,
    answer: Wire,
    body: JsonOrBinary<Ids>,
) -> Result<Response, ApiError> {
    let accounts = state.books.lookup_accounts(ids_of(body)?).await?;
    Ok(match answer {
        Wire::Json => Json(Accounts {
            accounts: accounts.into_iter().map(AccountJson::from).collect(),
        })
        .into_response(),
        Wire::Binary => binary(kizo_binary::encode_accounts(&accounts)),
    })
}

/// A lookup's ids, from either form.
fn ids_of(body: JsonOrBinary<Ids>) -> Result<Vec<u128>, ApiError> {
    match body {
        JsonOrBinary::Json(request) => {
            check_batch(request.ids.len(), "ids")?;
            Ok(request.ids.iter().map(|id| id.0).collect())
        }
        JsonOrBinary::Binary(bytes) => {
            kizo_binary::decode_ids(&bytes).map_err(|e| binary_rejected(e, "ids"))
        }
    }
}

/// The transfers with these ids (those that exist).
#[utoipa::path(post, path = "/v1/ledger/transfers/lookup", tag = "ledger", security(("api_key" = [])),
    request_body(content((Ids = "application/json"), (BinaryBatch = "application/vnd.kizo.batch.v1"))),
    responses(
        (status = 200, content((Transfers = "application/json"), (BinaryBatch = "application/vnd.kizo.batch.v1"))),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn lookup_transfers(
    State(state): State<AppState>,
    answer: Wire,
    body: JsonOrBinary<Ids>,
) -> Result<Response, ApiError> {
    let transfers = state.books.lookup_transfers(ids_of(body)?).await?;
    Ok(match answer {
        Wire::Json => Json(Transfers {
            transfers: transfers.into_iter().map(TransferJson::from).collect(),
        })
        .into_response(),
        Wire::Binary => binary(kizo_binary::encode_transfers(&transfers)),
    })
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
