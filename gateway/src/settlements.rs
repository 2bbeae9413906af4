//! Money in and out through the bank: deposits and withdrawals (`/v1/deposits`,
//! `/v1/withdrawals`), the bank's callbacks, and the admin API of reconciliation. The decisions
//! are `kizo_engine::settlement`'s; the driving is the settlement supervisor's; starting one is
//! [`crate::money`]'s. This module parses and authenticates requests, calls those, and shows
//! settlements to their owner.
//!
//! A settlement's id is `hash(user, kind, Idempotency-Key)`, so the settlements table is the
//! key's durable memory: a retry finds the settlement and answers it again
//! (`Idempotent-Replayed: true`); another request with the key is 422 `idempotency_key_reused`.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use kizo_engine::reconcile::{Difference, Report};
use kizo_engine::settlement::{Kind, Phase, Settlement, Status};
use kizo_engine::settlement_actors::{self, PortError, PortFuture};
use kizo_persistence::settlements::{Owned, SettlementStore};
use kizo_persistence::store::StoreError;
use serde::{Deserialize, Serialize};

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::idempotency;
use crate::json::Json;
use crate::money::{SettlementRequestError, Started};
use crate::server::AppState;
use crate::wallet::store_error;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/deposits", post(create_deposit))
        .route("/v1/deposits/{id}", get(deposit))
        .route("/v1/withdrawals", post(create_withdrawal))
        .route("/v1/withdrawals/{id}", get(withdrawal))
        .route("/v1/bank/callbacks", post(callback))
}

pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/reconciliation", post(reconcile))
        .route("/v1/admin/reconciliation/latest", get(latest_report))
        .route("/v1/admin/settlements", get(settlements_needing_review))
        .route("/v1/admin/settlements/{id}", get(admin_settlement))
        .route("/v1/admin/settlements/{id}/resolve", post(resolve))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSettlement {
    /// The caller's wallet.
    pub account_id: uuid::Uuid,
    /// Minor units, 1 to 10^12.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub amount: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SettlementView {
    pub id: uuid::Uuid,
    /// deposit or withdrawal.
    pub kind: &'static str,
    pub account_id: uuid::Uuid,
    pub amount: u64,
    pub currency: String,
    /// pending, processing, succeeded, failed or needs_review.
    pub status: &'static str,
    /// Why it failed or needs review.
    pub reason: Option<String>,
    /// Calls made to the bank.
    pub attempts: u32,
    /// RFC 3339, UTC, to the millisecond.
    #[schema(example = "2026-12-05T13:11:05.337Z")]
    pub created_at: String,
    #[schema(example = "2026-12-05T13:11:05.380Z")]
    pub updated_at: String,
}

fn view_of(state: &AppState, s: &Settlement) -> SettlementView {
    SettlementView {
        id: uuid::Uuid::from_u128(s.id),
        kind: s.kind.code(),
        account_id: uuid::Uuid::from_u128(s.account_id),
        amount: s.amount,
        currency: state.currency.code.clone(),
        status: s.status().code(),
        reason: s.reason.clone(),
        attempts: s.attempts_total,
        created_at: crate::js_safe::rfc3339_ms(s.created_ms),
        updated_at: crate::js_safe::rfc3339_ms(s.updated_ms),
    }
}

/// The settlement's answer to its creator: 202 while under way or done, 422 when a withdrawal
/// was refused before the bank was asked.
fn answer(state: &AppState, s: &Settlement) -> Response {
    if s.phase == Phase::Done(Status::Failed) && s.attempts_total == 0 {
        if let Some(reason) = s.reason.as_deref() {
            let code = match reason {
                "insufficient_funds" => "insufficient_funds",
                "account_closed" => "account_closed",
                _ => "withdrawal_refused",
            };
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                code,
                format!("the withdrawal was refused: {reason}"),
            )
            .into_response();
        }
    }
    (
        StatusCode::ACCEPTED,
        [(
            header::LOCATION,
            format!("/v1/{}s/{}", s.kind.code(), uuid::Uuid::from_u128(s.id)),
        )],
        Json(view_of(state, s)),
    )
        .into_response()
}

/// `POST /v1/deposits`: money from the caller's bank into their wallet. Answered at once
/// (`pending`); the settlement supervisor collects from the bank and credits the wallet.
#[utoipa::path(post, path = "/v1/deposits", tag = "money", security(("access_token" = [])),
    request_body = NewSettlement,
    params(("Idempotency-Key" = String, Header, pattern = "^[!-~]{1,255}$",
        description = "Required: names the deposit; retries with the same key get it again")),
    responses(
        (status = 202, body = SettlementView),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "idempotency_key_reused, invalid_field", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "too_many_settlements: the user's settlements under way are at their quota", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 501, description = "settlements_need_a_bank: a cluster node started without --bank-url does not serve deposits and withdrawals (its nodes must settle with one bank)", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn create_deposit(
    State(state): State<AppState>,
    caller: Authenticated,
    key_header: crate::idempotency::KeyHeader,
    Json(request): Json<NewSettlement>,
) -> Result<Response, ApiError> {
    create(state, caller, key_header, request, Kind::Deposit).await
}

/// `POST /v1/withdrawals`: money from the caller's wallet to their bank. The amount is held at
/// once (the available balance drops); it is paid out by the settlement supervisor, and
/// released if the bank definitely does not pay.
#[utoipa::path(post, path = "/v1/withdrawals", tag = "money", security(("access_token" = [])),
    request_body = NewSettlement,
    params(("Idempotency-Key" = String, Header, pattern = "^[!-~]{1,255}$",
        description = "Required: names the withdrawal; retries with the same key get it again")),
    responses(
        (status = 202, body = SettlementView),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "insufficient_funds, account_closed, withdrawal_refused, idempotency_key_reused, invalid_field", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "too_many_settlements: the user's settlements under way are at their quota", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 501, description = "settlements_need_a_bank: a cluster node started without --bank-url does not serve deposits and withdrawals (its nodes must settle with one bank)", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn create_withdrawal(
    State(state): State<AppState>,
    caller: Authenticated,
    key_header: crate::idempotency::KeyHeader,
    Json(request): Json<NewSettlement>,
) -> Result<Response, ApiError> {
    create(state, caller, key_header, request, Kind::Withdrawal).await
}

async fn create(
    state: AppState,
    caller: Authenticated,
    key_header: crate::idempotency::KeyHeader,
    request: NewSettlement,
    kind: Kind,
) -> Result<Response, ApiError> {
    let key = crate::payments::required_key(&key_header)?.to_string();
    // On a task of its own: a client that goes away must not cut the work between writing the
    // settlement and handing it to the supervisor.
    tokio::spawn(create_settlement(state, caller, key, request, kind))
        .await
        .unwrap_or_else(|error| {
            tracing::error!(%error, "a settlement request failed");
            Err(ApiError::unavailable(
                "the request failed; retry it with the same key",
            ))
        })
}

async fn create_settlement(
    state: AppState,
    caller: Authenticated,
    key: String,
    request: NewSettlement,
    kind: Kind,
) -> Result<Response, ApiError> {
    let amount = kizo_wallet::checked_amount(request.amount)?;
    let account = request.account_id.as_u128();
    if account != caller.wallet {
        return Err(ApiError::not_found("no such account"));
    }
    let request = crate::money::SettlementRequest {
        user_id: &caller.user_id,
        account,
        kind,
        amount,
        key: &key,
    };
    match crate::money::start_settlement(&state, state.money()?, request).await {
        Ok(Started::New(settlement)) => Ok(answer(&state, &settlement)),
        Ok(Started::Replayed(settlement)) => Ok(idempotency::replayed(answer(&state, &settlement))),
        Ok(Started::InUse) => Ok(idempotency::in_use()),
        Err(SettlementRequestError::Busy) => Err(ApiError::unavailable(
            "too many settlements under way; retry later",
        )
        .with_code("settlements_busy")),
        Err(SettlementRequestError::KeyReused) => Err(idempotency::reused()),
        Err(error @ SettlementRequestError::UserQuota(_)) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_settlements",
            error.to_string(),
        )),
        Err(SettlementRequestError::Store(error)) => Err(store_error(error)),
    }
}

async fn own_settlement(
    state: &AppState,
    caller: &Authenticated,
    id: &str,
    kind: Kind,
) -> Result<Owned, ApiError> {
    let id = uuid::Uuid::parse_str(id)
        .map_err(|_| ApiError::invalid("id", "a UUID"))?
        .as_u128();
    match state.money()?.store.load(id).await.map_err(store_error)? {
        Some(owned) if owned.user_id == caller.user_id && owned.settlement.kind == kind => {
            Ok(owned)
        }
        _ => Err(ApiError::not_found(format!("no such {}", kind.code()))),
    }
}

/// `GET /v1/deposits/{id}`: one of the caller's deposits.
#[utoipa::path(get, path = "/v1/deposits/{id}", tag = "money", security(("access_token" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = SettlementView),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 501, description = "settlements_need_a_bank: a cluster node started without --bank-url does not serve deposits and withdrawals (its nodes must settle with one bank)", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn deposit(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<SettlementView>, ApiError> {
    let owned = own_settlement(&state, &caller, &id, Kind::Deposit).await?;
    Ok(Json(view_of(&state, &owned.settlement)))
}

/// `GET /v1/withdrawals/{id}`: one of the caller's withdrawals.
#[utoipa::path(get, path = "/v1/withdrawals/{id}", tag = "money", security(("access_token" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = SettlementView),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 501, description = "settlements_need_a_bank: a cluster node started without --bank-url does not serve deposits and withdrawals (its nodes must settle with one bank)", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn withdrawal(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<SettlementView>, ApiError> {
    let owned = own_settlement(&state, &caller, &id, Kind::Withdrawal).await?;
    Ok(Json(view_of(&state, &owned.settlement)))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct BankCallback {
    pub reference: uuid::Uuid,
    /// payout or collection.
    pub kind: String,
    pub status: String,
}

/// `POST /v1/bank/callbacks`: the bank says it did something. Nothing in it is trusted: the
/// settlement it names asks the bank for the status itself, now; a duplicate does nothing more.
#[utoipa::path(post, path = "/v1/bank/callbacks", tag = "money",
    request_body = BankCallback,
    responses(
        (status = 204, description = "Noted"),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 501, description = "settlements_need_a_bank: a cluster node started without --bank-url does not serve deposits and withdrawals (its nodes must settle with one bank)", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(callback): Json<BankCallback>,
) -> Result<StatusCode, ApiError> {
    // Without a bank token nobody can be told from the bank: no callback is taken (settlements
    // then learn the outcome by asking the bank, on their own schedule).
    let Some(token) = &state.money()?.bank_token else {
        return Err(ApiError::unauthorized(
            "this server takes bank callbacks only with --bank-token set",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|g| crate::server::constant_time_eq(g.as_bytes(), token.as_bytes())) {
        return Err(ApiError::unauthorized(
            "a callback carries the bank's token",
        ));
    }
    let money = state.money()?;
    let id = callback.reference.as_u128();
    match &state.books {
        crate::books::Books::One { .. } => money.settlements.wake(id),
        // The node the bank calls may not be the one driving it: it takes the settlement up
        // from the store (whoever moves it first acts; the other reloads).
        crate::books::Books::Cluster(_) => {
            if let Some(owned) = money.store.load(id).await.map_err(store_error)? {
                if !owned.settlement.is_final() {
                    let mut now = owned.settlement;
                    now.due_ms = now.due_ms.min(state.clock.now_ms());
                    money.settlements.submit(now);
                }
            }
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A difference, as the report shows it.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct DifferenceView {
    pub reference: uuid::Uuid,
    pub kind: String,
    /// What we recorded, in minor units (0: nothing).
    pub ours: u64,
    /// What the bank moved (0: nothing).
    pub bank: u64,
    pub detail: String,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct LedgerCheckView {
    pub ledger: u32,
    /// Deposits minus withdrawals that succeeded (decimal).
    pub expected_net: String,
    /// The bank account's debits minus credits posted (decimal).
    pub ledger_net: String,
    pub expected_held: String,
    pub ledger_held: String,
    pub holds: bool,
}

/// A reconciliation report.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportView {
    pub at_ms: u64,
    /// Differences nothing in progress explains: zero when the books agree.
    pub unexplained: u64,
    pub settlements: u64,
    pub movements: u64,
    pub matched: u64,
    pub unsettled_with_movement: u64,
    pub missing_in_ledger: Vec<DifferenceView>,
    pub missing_at_bank: Vec<DifferenceView>,
    pub amount_mismatches: Vec<DifferenceView>,
    pub duplicates: Vec<DifferenceView>,
    pub stuck: Vec<uuid::Uuid>,
    pub needs_review: Vec<uuid::Uuid>,
    pub redriven: u64,
    pub ledger_checked: bool,
    pub ledger: Vec<LedgerCheckView>,
    /// The ledger's invariants over every account (from the read models, which may trail the
    /// log by a moment but are always a consistent prefix of it).
    pub ledger_totals: Vec<LedgerTotalsView>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct LedgerTotalsView {
    pub ledger: u32,
    pub accounts: u64,
    /// Decimal sums over every account.
    pub debits_posted: String,
    pub credits_posted: String,
    pub debits_pending: String,
    pub credits_pending: String,
    /// Accounts that break their limit (must be 0).
    pub over_limit: u64,
    /// Debits equal credits, posted and pending, and no account breaks its limit.
    pub holds: bool,
}

/// Lines listed per kind of difference (the counts are whole).
const REPORT_LINES_MAX: usize = 1_000;

pub fn report_view(report: &Report) -> ReportView {
    let lines = |list: &[Difference]| {
        list.iter()
            .take(REPORT_LINES_MAX)
            .map(|d| DifferenceView {
                reference: uuid::Uuid::from_u128(d.reference),
                kind: d.kind.code().to_string(),
                ours: d.ours,
                bank: d.bank,
                detail: d.detail.to_string(),
            })
            .collect()
    };
    let ids = |list: &[u128]| {
        list.iter()
            .take(REPORT_LINES_MAX)
            .map(|id| uuid::Uuid::from_u128(*id))
            .collect()
    };
    ReportView {
        at_ms: report.at_ms,
        unexplained: report.unexplained(),
        settlements: report.settlements,
        movements: report.movements,
        matched: report.matched,
        unsettled_with_movement: report.unsettled_with_movement,
        missing_in_ledger: lines(&report.missing_in_ledger),
        missing_at_bank: lines(&report.missing_at_bank),
        amount_mismatches: lines(&report.amount_mismatches),
        duplicates: lines(&report.duplicates),
        stuck: ids(&report.stuck),
        needs_review: ids(&report.needs_review),
        redriven: report.redriven,
        ledger_checked: report.ledger_checked,
        ledger: report
            .ledger
            .iter()
            .map(|(ledger, c)| LedgerCheckView {
                ledger: *ledger,
                expected_net: c.expected_net.to_string(),
                ledger_net: c.ledger_net.to_string(),
                expected_held: c.expected_held.to_string(),
                ledger_held: c.ledger_held.to_string(),
                holds: c.holds(),
            })
            .collect(),
        ledger_totals: report
            .ledger_totals
            .iter()
            .map(|t| LedgerTotalsView {
                ledger: t.ledger,
                accounts: t.accounts,
                debits_posted: t.debits_posted.to_string(),
                credits_posted: t.credits_posted.to_string(),
                debits_pending: t.debits_pending.to_string(),
                credits_pending: t.credits_pending.to_string(),
                over_limit: t.over_limit,
                holds: t.holds(),
            })
            .collect(),
    }
}

/// How long an on-demand reconciliation may take.
const RECONCILE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// `POST /v1/admin/reconciliation`: reconcile now; answers the report.
#[utoipa::path(post, path = "/v1/admin/reconciliation", tag = "admin", security(("admin_api_key" = [])),
    responses(
        (status = 200, body = ReportView),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "reconciliation_failed: the bank or the store could not be read", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 501, description = "settlements_need_a_bank: a cluster node started without --bank-url does not serve deposits and withdrawals (its nodes must settle with one bank)", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn reconcile(State(state): State<AppState>) -> Result<Json<ReportView>, ApiError> {
    match settlement_actors::reconcile_now(&state.money()?.reconciler, RECONCILE_TIMEOUT).await {
        Ok(report) => Ok(Json(report_view(&report))),
        Err(error) => {
            Err(ApiError::unavailable(error.to_string()).with_code("reconciliation_failed"))
        }
    }
}

/// `GET /v1/admin/reconciliation/latest`: the latest report (scheduled or on demand).
#[utoipa::path(get, path = "/v1/admin/reconciliation/latest", tag = "admin", security(("admin_api_key" = [])),
    responses(
        (status = 200, body = ReportView),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 501, description = "settlements_need_a_bank: a cluster node started without --bank-url does not serve deposits and withdrawals (its nodes must settle with one bank)", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn latest_report(State(state): State<AppState>) -> Result<Response, ApiError> {
    match state
        .money()?
        .store
        .latest_report()
        .await
        .map_err(store_error)?
    {
        Some(json) => Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response()),
        None => Err(ApiError::not_found("no reconciliation has run yet")),
    }
}

/// The most settlements one review list shows.
pub const REVIEW_LIST_MAX: usize = 200;

#[derive(Serialize, utoipa::ToSchema)]
pub struct ReviewList {
    /// Oldest first: settlements whose outcome at the bank is unknown, waiting for a person to
    /// resolve them (`POST /v1/admin/settlements/{id}/resolve`).
    pub settlements: Vec<ReviewedSettlement>,
    /// Whether more wait than were listed (at most 200 are).
    pub truncated: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ReviewedSettlement {
    #[serde(flatten)]
    pub settlement: SettlementView,
    pub user_id: String,
}

/// `GET /v1/admin/settlements`: the settlements that need review, oldest first.
#[utoipa::path(get, path = "/v1/admin/settlements", tag = "admin", security(("admin_api_key" = [])),
    responses(
        (status = 200, body = ReviewList),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 501, description = "settlements_need_a_bank: a cluster node started without --bank-url does not serve deposits and withdrawals (its nodes must settle with one bank)", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn settlements_needing_review(
    State(state): State<AppState>,
) -> Result<Json<ReviewList>, ApiError> {
    let mut found = state
        .money()?
        .store
        .needing_review(REVIEW_LIST_MAX + 1)
        .await
        .map_err(store_error)?;
    let truncated = found.len() > REVIEW_LIST_MAX;
    found.truncate(REVIEW_LIST_MAX);
    Ok(Json(ReviewList {
        settlements: found
            .into_iter()
            .map(|owned| ReviewedSettlement {
                settlement: view_of(&state, &owned.settlement),
                user_id: owned.user_id,
            })
            .collect(),
        truncated,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TransitionView {
    pub at_ms: i64,
    pub phase: String,
    pub attempts: i32,
    pub reason: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AdminSettlementView {
    pub settlement: SettlementView,
    pub user_id: String,
    /// hold, send, check, settle, release, succeeded, failed or needs_review.
    pub phase: &'static str,
    pub transitions: Vec<TransitionView>,
}

/// `GET /v1/admin/settlements/{id}`: a settlement with every transition it went through.
#[utoipa::path(get, path = "/v1/admin/settlements/{id}", tag = "admin", security(("admin_api_key" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = AdminSettlementView),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 501, description = "settlements_need_a_bank: a cluster node started without --bank-url does not serve deposits and withdrawals (its nodes must settle with one bank)", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn admin_settlement(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AdminSettlementView>, ApiError> {
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| ApiError::invalid("id", "a UUID"))?
        .as_u128();
    let owned = state
        .money()?
        .store
        .load(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("no such settlement"))?;
    let transitions = state
        .money()?
        .store
        .transitions(id)
        .await
        .map_err(store_error)?;
    Ok(Json(AdminSettlementView {
        settlement: view_of(&state, &owned.settlement),
        phase: owned.settlement.phase.code(),
        user_id: owned.user_id,
        transitions: transitions
            .into_iter()
            .map(|(at_ms, phase, attempts, reason)| TransitionView {
                at_ms,
                phase,
                attempts,
                reason,
            })
            .collect(),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    /// What the bank's own records say: true if it moved the money for this reference.
    pub bank_moved: bool,
}

/// `POST /v1/admin/settlements/{id}/resolve`: a person settles a `needs_review` settlement after
/// looking at the bank. The supervisor then records it in the ledger (credit, post or release).
#[utoipa::path(post, path = "/v1/admin/settlements/{id}/resolve", tag = "admin", security(("admin_api_key" = [])),
    params(("id" = uuid::Uuid, Path)),
    request_body = Resolution,
    responses(
        (status = 202, body = SettlementView),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "not_under_review", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 501, description = "settlements_need_a_bank: a cluster node started without --bank-url does not serve deposits and withdrawals (its nodes must settle with one bank)", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn resolve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(resolution): Json<Resolution>,
) -> Result<Response, ApiError> {
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| ApiError::invalid("id", "a UUID"))?
        .as_u128();
    let owned = state
        .money()?
        .store
        .load(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("no such settlement"))?;
    let Some(resolved) = owned
        .settlement
        .resolve(resolution.bank_moved, state.clock.now_ms())
    else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_under_review",
            format!("the settlement is {}", owned.settlement.status().code()),
        ));
    };
    match state
        .money()?
        .store
        .save(&owned.settlement, &resolved)
        .await
    {
        Ok(()) => {}
        // Another resolution (or the reconciler) got there between the read and the write.
        Err(StoreError::Superseded(_)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_under_review",
                "the settlement changed while it was being resolved",
            ))
        }
        Err(error) => return Err(store_error(error)),
    }
    tracing::warn!(settlement = %uuid::Uuid::from_u128(id), bank_moved = resolution.bank_moved, "a settlement was resolved by hand");
    state.money()?.settlements.submit(resolved.clone());
    Ok((StatusCode::ACCEPTED, Json(view_of(&state, &resolved))).into_response())
}

/// The settlement store as the settlement actors use it. On a cluster node, the unfinished
/// settlements it reads are those of the partitions the node holds (their owner resumes them).
pub struct StoreAdapter {
    pub store: SettlementStore,
    pub held: Option<std::sync::Arc<crate::books::ClusterBooks>>,
}

impl settlement_actors::SettlementStorePort for StoreAdapter {
    fn save<'a>(
        &'a self,
        from: &'a Settlement,
        to: &'a Settlement,
    ) -> PortFuture<'a, Result<(), PortError>> {
        Box::pin(async move { Ok(self.store.save(from, to).await?) })
    }

    fn load(&self, id: u128) -> PortFuture<'_, Result<Option<Settlement>, PortError>> {
        Box::pin(async move {
            Ok(self
                .store
                .load(id)
                .await
                .map_err(PortError::from)?
                .map(|o| o.settlement))
        })
    }

    fn unfinished(&self) -> PortFuture<'_, Result<Vec<Settlement>, PortError>> {
        Box::pin(async move {
            let held = self.held.as_ref().map(|cluster| cluster.host.held());
            let partitions = self.held.as_ref().map(|cluster| cluster.host.partitions());
            Ok(self
                .store
                .unfinished()
                .await
                .map_err(PortError::from)?
                .into_iter()
                .map(|o| o.settlement)
                .filter(|s| match (&held, partitions) {
                    (Some(held), Some(partitions)) => {
                        held.contains_key(&crate::books::home_of(s.account_id, partitions))
                    }
                    _ => true,
                })
                .collect())
        })
    }

    fn all(&self, limit: usize) -> PortFuture<'_, Result<Vec<Settlement>, PortError>> {
        Box::pin(async move {
            Ok(self
                .store
                .all(limit)
                .await
                .map_err(PortError::from)?
                .into_iter()
                .map(|o| o.settlement)
                .collect())
        })
    }

    fn keep_report<'a>(&'a self, report: &'a Report) -> PortFuture<'a, Result<(), PortError>> {
        Box::pin(async move {
            let json = serde_json::to_string(&report_view(report))
                .map_err(|error| PortError::Corrupt(error.to_string()))?;
            Ok(self
                .store
                .keep_report(report.at_ms, report.unexplained(), &json)
                .await?)
        })
    }
}

/// The ledger's totals from the read models, for reconciliation: summed over each database
/// that keeps some (one, or on a cluster, those of `--partition-database` too).
pub struct Totals(pub Vec<kizo_persistence::read_models::ReadModels>);

impl settlement_actors::LedgerTotalsPort for Totals {
    fn totals(
        &self,
    ) -> PortFuture<'_, Result<Vec<kizo_engine::reconcile::LedgerTotals>, PortError>> {
        Box::pin(async move {
            let mut sums: std::collections::BTreeMap<u32, kizo_engine::reconcile::LedgerTotals> =
                std::collections::BTreeMap::new();
            for read_models in &self.0 {
                for totals in read_models.ledger_totals().await? {
                    let sum =
                        sums.entry(totals.ledger)
                            .or_insert(kizo_engine::reconcile::LedgerTotals {
                                ledger: totals.ledger,
                                accounts: 0,
                                debits_posted: 0,
                                credits_posted: 0,
                                debits_pending: 0,
                                credits_pending: 0,
                                over_limit: 0,
                            });
                    sum.accounts += totals.accounts;
                    sum.debits_posted += totals.debits_posted;
                    sum.credits_posted += totals.credits_posted;
                    sum.debits_pending += totals.debits_pending;
                    sum.credits_pending += totals.credits_pending;
                    sum.over_limit += totals.over_limit;
                }
            }
            Ok(sums.into_values().collect())
        })
    }
}

/// The supervisor's live counts, on each scrape (an actor's answer: no store read).
pub async fn record_metrics(state: &AppState) {
    let Some(money) = &state.money else { return };
    if let Some(counts) = money.settlements.counts().await {
        metrics::gauge!("kizo_settlements_waiting").set(counts.waiting as f64);
        metrics::gauge!("kizo_settlements_running").set(counts.running as f64);
    }
}

/// The store's counts of open settlements by status, refreshed off the scrape (see
/// `server::housekeeping`), so that a scrape never reads the store.
pub async fn count_open(state: &AppState) {
    let Some(money) = &state.money else { return };
    match money.store.count_open().await {
        Ok(counts) => {
            for (status, count) in counts {
                metrics::gauge!("kizo_settlements", "status" => status.code()).set(count as f64);
            }
        }
        Err(error) => tracing::warn!(%error, "settlements not counted"),
    }
}
