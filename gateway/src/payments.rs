//! Money between users (`POST /v1/transfers`), and what a user may see of accounts and
//! transfers: only their own (anything else is a 404, never a 403 that would confirm it exists).
//! A transfer is final when it is answered 201 (created) or refused with a reason. On a
//! cluster, a payment between two partitions not final within the bound is answered 202 and
//! goes on; `GET /v1/transfers/{id}` says where it stands. Its legs (the sender's hold and its
//! post, the receiver's credit) are shown as the payment they belong to.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use kizo_engine::{CreateTransferResult as R, Transfer};
use serde::{Deserialize, Serialize};

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::idempotency;
use crate::json::{Json, Query};
use crate::server::AppState;
use kizo_wallet::codes::{HAS_NOTE, PAYMENT_CODE};
use kizo_wallet::ids::{self, Payee};
use kizo_wallet::view::{TransferKind, TransferState};

use crate::wallet::{balance_of, store_error, AccountBalance};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/transfers", post(create))
        .route("/v1/transfers/{id}", get(transfer))
        .route("/v1/accounts/{id}", get(account))
        .route("/v1/accounts/{id}/transfers", get(history))
        .route("/v1/users", get(find_users))
        .route("/v1/dashboard", get(dashboard))
        .route("/v1/accounts/{id}/transfers.csv", get(history_csv))
        .route("/v1/accounts/{id}/balances", get(balances))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CsvQuery {
    /// sent, received or all (default).
    #[param(pattern = "^(sent|received|all)$")]
    pub direction: Option<String>,
    /// Transfers on or after this UTC day (`YYYY-MM-DD`).
    #[param(format = Date, pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub from: Option<String>,
    /// Transfers on or before this UTC day (`YYYY-MM-DD`); before `from`, nothing is found.
    #[param(format = Date, pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub to: Option<String>,
}

/// The ledger timestamps (inclusive) of the days `from` to `to` (`YYYY-MM-DD`, UTC, both
/// inclusive, either open). `from` after `to` is a range that holds nothing (min > max).
fn day_range(from: Option<&str>, to: Option<&str>) -> Result<(u64, u64), ApiError> {
    const DAY_NS: u64 = 86_400 * 1_000_000_000;
    let day = |field: &str, text: &str| {
        crate::js_safe::day_start_ns(text)
            .ok_or_else(|| ApiError::invalid(field, "a calendar date: YYYY-MM-DD"))
    };
    let min = match from {
        Some(text) => day("from", text)?.max(1),
        None => 1,
    };
    let max = match to {
        Some(text) => day("to", text)?.saturating_add(DAY_NS - 1),
        None => u64::MAX,
    };
    // The read models take timestamps as i64, and 0 means "no bound": keep to what is real.
    Ok((min, max.min(i64::MAX as u64)))
}

/// Transfers per page read while a CSV streams.
const CSV_PAGE: u32 = 1_000;

/// `GET /v1/accounts/{id}/transfers.csv`: the whole history, newest first, streamed as CSV a
/// page at a time (memory stays flat however long the history).
#[utoipa::path(get, path = "/v1/accounts/{id}/transfers.csv", tag = "wallet", security(("access_token" = [])),
    params(("id" = uuid::Uuid, Path), CsvQuery),
    responses(
        (status = 200, content_type = "text/csv", body = String,
            description = "id,created_at,direction,counterparty_account_id,amount,currency,status,note (created_at: RFC 3339, UTC)"),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: this user reads faster than --reads-per-user; see Retry-After", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn history_csv(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    Query(query): Query<CsvQuery>,
) -> Result<Response, ApiError> {
    let id = own_account(&caller, &id)?;
    state
        .limits
        .read(&caller.user_id, crate::limits::CSV_READ_COST)?;
    let (debits, credits) = sides(query.direction.as_deref())?;
    let (timestamp_min, timestamp_max) = day_range(query.from.as_deref(), query.to.as_deref())?;
    let header = "id,created_at,direction,counterparty_account_id,amount,currency,status,note\n";
    // (the engine, the next page's upper bound, done)
    let start = (state.clone(), timestamp_max, timestamp_min > timestamp_max);
    let pages = futures_util::stream::unfold(start, move |(state, before, done)| async move {
        if done {
            return None;
        }
        let filter = kizo_engine::AccountFilter {
            account_id: id,
            timestamp_min,
            timestamp_max: before,
            limit: CSV_PAGE,
            debits,
            credits,
            reversed: true,
        };
        let page = match state.books.get_account_transfers(filter).await {
            Ok(page) => page,
            Err(error) => {
                // Headers are sent: the best left is to end the body early, visibly.
                tracing::warn!(%error, "a CSV history stopped early");
                return Some((
                    Err(std::io::Error::other(error.to_string())),
                    (state, 0, true),
                ));
            }
        };
        let shown = match views(&state, &page).await {
            Ok(shown) => shown,
            Err(error) => {
                tracing::warn!(detail = error.detail, "a CSV history stopped early");
                return Some((Err(std::io::Error::other(error.detail)), (state, 0, true)));
            }
        };
        let mut text = String::with_capacity(page.len() * 128);
        for (t, shown) in page.iter().zip(shown) {
            let sent = t.debit_account_id == id;
            let counterparty = if sent {
                t.credit_account_id
            } else {
                t.debit_account_id
            };
            let status = TransferState::of(t).as_str();
            text.push_str(&format!(
                "{},{},{},{},{},{},{},{}\n",
                uuid::Uuid::from_u128(t.id),
                crate::js_safe::rfc3339_ns(t.timestamp),
                if sent { "sent" } else { "received" },
                uuid::Uuid::from_u128(counterparty),
                t.amount,
                state.currency.code,
                status,
                csv_field(shown.note.as_deref().unwrap_or_default()),
            ));
        }
        let next = page.last().map_or(0, |t| t.timestamp.saturating_sub(1));
        let done = page.len() < CSV_PAGE as usize || next < timestamp_min;
        Some((Ok::<_, std::io::Error>(text), (state, next, done)))
    });
    let body =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(header.to_string()) })
            .chain(pages);
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"transfers.csv\"",
            ),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break. A field
/// starting with `=`, `+`, `-` or `@` gets a leading `'`, so that a spreadsheet does not run
/// a note as a formula.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Dashboard {
    pub account: AccountBalance,
    /// Sums of this calendar month (UTC), in minor units, of money that moved (a withdrawal's
    /// hold counts once it is paid out).
    #[serde(serialize_with = "crate::js_safe::decimal")]
    #[schema(value_type = String, example = "2500")]
    pub sent_this_month: u128,
    #[serde(serialize_with = "crate::js_safe::decimal")]
    #[schema(value_type = String, example = "10000")]
    pub received_this_month: u128,
    /// Transfers this month that moved money, sent and received.
    pub transfers_this_month: u64,
    /// The 5 latest, newest first.
    pub latest: Vec<TransferView>,
}

/// `GET /v1/dashboard`: the caller's balance, this month's sums, and the latest transfers.
#[utoipa::path(get, path = "/v1/dashboard", tag = "wallet", security(("access_token" = [])),
    responses(
        (status = 200, body = Dashboard),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "history_too_long: this month holds more transfers than the sums read", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: this user reads faster than --reads-per-user; see Retry-After", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn dashboard(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Response, ApiError> {
    state.limits.read(&caller.user_id, 1)?;
    let id = caller.wallet;
    let found = state.books.lookup_accounts(vec![id]).await?;
    let account = found
        .first()
        .ok_or_else(|| ApiError::not_found("no such account"))?;
    let totals = state
        .month_totals
        .totals(&state.books, id, state.clock.now_ns())
        .await?;
    let latest = state
        .books
        .get_account_transfers(kizo_engine::AccountFilter {
            reversed: true,
            ..kizo_engine::AccountFilter::all(id, 5)
        })
        .await?;
    Ok(Json(Dashboard {
        account: balance_of(&state, account),
        sent_this_month: totals.sent,
        received_this_month: totals.received,
        transfers_this_month: totals.count,
        latest: named(&state, views(&state, &latest).await?).await?,
    })
    .into_response())
}

/// The most days one balance series covers through the API.
pub const BALANCE_DAYS_MAX: u32 = 90;
/// What one balance series costs against `--reads-per-user` (it may read many pages).
const BALANCES_READ_COST: u32 = 5;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BalancesQuery {
    /// 1 to 90 (default 30): the days up to today (UTC).
    #[param(minimum = 1, maximum = 90)]
    pub days: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DailyBalance {
    /// The UTC day, `YYYY-MM-DD`.
    #[schema(example = "2026-12-05")]
    pub date: String,
    /// The posted balance at the day's end (today: now), minor units as a decimal string;
    /// null when the history is too long to read that far back.
    #[schema(value_type = Option<String>, example = "12500")]
    pub closing: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BalanceSeries {
    pub currency: String,
    /// Oldest day first.
    pub days: Vec<DailyBalance>,
}

/// `GET /v1/accounts/{id}/balances`: the caller's account's balance at the end of each of its
/// last days, for a chart.
#[utoipa::path(get, path = "/v1/accounts/{id}/balances", tag = "wallet", security(("access_token" = [])),
    params(("id" = uuid::Uuid, Path), BalancesQuery),
    responses(
        (status = 200, body = BalanceSeries),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: this user reads faster than --reads-per-user; see Retry-After", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn balances(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    Query(query): Query<BalancesQuery>,
) -> Result<Response, ApiError> {
    let id = own_account(&caller, &id)?;
    let days = query.days.unwrap_or(30);
    if !(1..=BALANCE_DAYS_MAX).contains(&days) {
        return Err(ApiError::invalid(
            "days",
            format!("1 to {BALANCE_DAYS_MAX}"),
        ));
    }
    state.limits.read(&caller.user_id, BALANCES_READ_COST)?;
    let found = state.books.lookup_accounts(vec![id]).await?;
    let account = found
        .first()
        .ok_or_else(|| ApiError::not_found("no such account"))?;
    let posted_now = i128::try_from(account.credits_posted)
        .unwrap_or(i128::MAX)
        .saturating_sub(i128::try_from(account.debits_posted).unwrap_or(i128::MAX));
    let mut series =
        kizo_wallet::daily::DailyBalances::new(id, state.clock.now_ns(), days, posted_now);
    while let Some(filter) = series.next_filter() {
        let page = state.books.get_account_transfers(filter).await?;
        series.take_page(&page);
    }
    const DAY_NS: u64 = 86_400 * 1_000_000_000;
    let first = series.first_day_ns();
    let days = series
        .closing()
        .expect("every page is read")
        .iter()
        .enumerate()
        .map(|(i, closing)| DailyBalance {
            date: crate::js_safe::date_of(first + i as u64 * DAY_NS),
            closing: closing.map(|c| c.to_string()),
        })
        .collect();
    Ok(Json(BalanceSeries {
        currency: state.currency.code.clone(),
        days,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(super::csv_field("rent"), "rent");
        assert_eq!(super::csv_field("a, b"), "\"a, b\"");
        assert_eq!(super::csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(super::csv_field("=SUM(A1)"), "'=SUM(A1)");
    }
}

/// The most transfers one history page holds.
pub const PAGE_MAX: u32 = 200;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// sent, received or all (default).
    #[param(pattern = "^(sent|received|all)$")]
    pub direction: Option<String>,
    /// posted, pending or all (default).
    #[param(pattern = "^(posted|pending|all)$")]
    pub status: Option<String>,
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// From a page's `next_cursor`: the transfers before it.
    #[param(pattern = "^[0-9]{1,19}$")]
    pub cursor: Option<String>,
    /// Transfers on or after this UTC day (`YYYY-MM-DD`).
    #[param(format = Date, pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub from: Option<String>,
    /// Transfers on or before this UTC day (`YYYY-MM-DD`); before `from`, nothing is found.
    #[param(format = Date, pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub to: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct HistoryPage {
    /// Newest first.
    pub transfers: Vec<TransferView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// `GET /v1/accounts/{id}/transfers`: the caller's account's transfers, newest first, by pages.
#[utoipa::path(get, path = "/v1/accounts/{id}/transfers", tag = "wallet", security(("access_token" = [])),
    params(("id" = uuid::Uuid, Path), HistoryQuery),
    responses(
        (status = 200, body = HistoryPage),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: this user reads faster than --reads-per-user; see Retry-After", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn history(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    let id = own_account(&caller, &id)?;
    state.limits.read(&caller.user_id, 1)?;
    let (debits, credits) = sides(query.direction.as_deref())?;
    let pending = match query.status.as_deref().unwrap_or("all") {
        "posted" => Some(false),
        "pending" => Some(true),
        "all" => None,
        _ => return Err(ApiError::invalid("status", "posted, pending or all")),
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("1 to {PAGE_MAX}")));
    }
    let before = match &query.cursor {
        Some(cursor) => cursor
            .parse::<u64>()
            .ok()
            .filter(|&c| c > 1)
            .ok_or_else(|| ApiError::invalid("cursor", "a cursor from a previous page"))?,
        None => 0,
    };
    let (timestamp_min, mut timestamp_max) = day_range(query.from.as_deref(), query.to.as_deref())?;
    if before > 0 {
        timestamp_max = timestamp_max.min(before - 1);
    }
    if timestamp_min > timestamp_max {
        return Ok(Json(HistoryPage {
            transfers: Vec::new(),
            next_cursor: None,
        })
        .into_response());
    }
    let filter = kizo_engine::AccountFilter {
        account_id: id,
        timestamp_min,
        timestamp_max,
        limit,
        debits,
        credits,
        reversed: true,
    };
    let found = state.books.get_account_transfers(filter).await?;
    let next_cursor = (found.len() == limit as usize)
        .then(|| found.last().map(|t| t.timestamp.to_string()))
        .flatten();
    let shown: Vec<Transfer> = found
        .into_iter()
        .filter(|t| {
            pending.is_none_or(|p| t.flags.contains(kizo_engine::TransferFlags::PENDING) == p)
        })
        .collect();
    let transfers = named(&state, views(&state, &shown).await?).await?;
    Ok(Json(HistoryPage {
        transfers,
        next_cursor,
    })
    .into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    /// The start of a name or an email: 3 to 100 characters.
    #[param(min_length = 3, max_length = 100)]
    pub q: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct FoundUser {
    pub id: String,
    /// The user's wallet: pay them with `to.account_id`.
    pub account_id: uuid::Uuid,
    pub first_name: String,
    pub last_name: String,
    /// Only when the query is this user's exact email (no harvesting of addresses).
    pub email: Option<String>,
    /// The avatar's URL, when the user has one.
    pub avatar_url: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct FoundUsers {
    pub users: Vec<FoundUser>,
}

/// `GET /v1/users?q=`: find a recipient; at most 20, names only.
#[utoipa::path(get, path = "/v1/users", tag = "wallet", security(("access_token" = [])),
    params(UserQuery),
    responses(
        (status = 200, body = FoundUsers),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: this user reads faster than --reads-per-user; see Retry-After", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn find_users(
    State(state): State<AppState>,
    caller: Authenticated,
    Query(query): Query<UserQuery>,
) -> Result<Response, ApiError> {
    state.limits.read(&caller.user_id, 1)?;
    let q = query.q.trim().to_lowercase();
    let length = q.chars().count();
    if !(3..=100).contains(&length) {
        return Err(ApiError::invalid("q", "3 to 100 characters"));
    }
    let found = state.users.search(&q, 20).await.map_err(store_error)?;
    let mut users = Vec::with_capacity(found.len());
    for u in found {
        let wallet: u128 = u
            .wallet_id
            .parse()
            .map_err(|_| store_error("a stored wallet id is not a number"))?;
        users.push(FoundUser {
            email: (u.email == q).then(|| u.email.clone()),
            avatar_url: u.avatar.as_deref().map(crate::avatars::url),
            account_id: uuid::Uuid::from_u128(wallet),
            id: u.id,
            first_name: u.first_name,
            last_name: u.last_name,
        });
    }
    Ok(Json(FoundUsers { users }).into_response())
}

/// The recipient: an account, or the wallet of the user with this email.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    pub account_id: Option<uuid::Uuid>,
    pub email: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTransfer {
    pub from_account_id: uuid::Uuid,
    pub to: Recipient,
    /// In minor units (cents), 1 to 1,000,000,000,000.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    pub amount: u64,
    /// Shown to both parties: up to 280 characters, none of them control, format (bidi,
    /// zero-width) or line separator characters.
    #[schema(
        max_length = 280,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F\\xAD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890\\u0891\\u08E2\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB]*$"
    )]
    pub note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TransferView {
    pub id: uuid::Uuid,
    pub from_account_id: uuid::Uuid,
    pub to_account_id: uuid::Uuid,
    pub amount: u64,
    pub currency: String,
    /// payment (between users), deposit or withdrawal (through the bank).
    pub kind: &'static str,
    /// posted; pending (a withdrawal's hold, until it is paid out: then a posted withdrawal
    /// follows); voided (a hold released).
    pub status: &'static str,
    /// When the ledger took it: RFC 3339, UTC, to the nanosecond (unique per transfer).
    #[schema(example = "2026-12-05T13:11:05.337000001Z")]
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The sender's name, when the account is a user's wallet (in reads: the history, the
    /// dashboard, `GET /v1/transfers/{id}`; not in the answer to `POST /v1/transfers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_name: Option<String>,
    /// The recipient's name, likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_name: Option<String>,
}

fn view(state: &AppState, t: &Transfer, note: Option<String>) -> TransferView {
    TransferView {
        id: uuid::Uuid::from_u128(t.id),
        from_account_id: uuid::Uuid::from_u128(t.debit_account_id),
        to_account_id: uuid::Uuid::from_u128(t.credit_account_id),
        amount: u64::try_from(t.amount).unwrap_or(u64::MAX),
        currency: state.currency.code.clone(),
        kind: TransferKind::of(t).as_str(),
        status: TransferState::of(t).as_str(),
        created_at: crate::js_safe::rfc3339_ns(t.timestamp),
        note,
        from_name: None,
        to_name: None,
    }
}

/// `views` with the names of the users whose wallets pay and are paid (one query).
async fn named(
    state: &AppState,
    mut views: Vec<TransferView>,
) -> Result<Vec<TransferView>, ApiError> {
    let mut wallets: Vec<u128> = views
        .iter()
        .filter(|v| v.kind == TransferKind::Payment.as_str())
        .flat_map(|v| [v.from_account_id.as_u128(), v.to_account_id.as_u128()])
        .collect();
    wallets.sort_unstable();
    wallets.dedup();
    let names = state
        .users
        .names_of_wallets(&wallets)
        .await
        .map_err(store_error)?;
    for view in views
        .iter_mut()
        .filter(|v| v.kind == TransferKind::Payment.as_str())
    {
        view.from_name = names.get(&view.from_account_id.as_u128()).cloned();
        view.to_name = names.get(&view.to_account_id.as_u128()).cloned();
    }
    Ok(views)
}

/// The views of `transfers`, with their notes (one query, only when one has a note).
async fn views(state: &AppState, transfers: &[Transfer]) -> Result<Vec<TransferView>, ApiError> {
    let transfers = &as_payments(state, transfers).await?;
    let noted: Vec<(u128, u128)> = transfers
        .iter()
        .filter(|t| t.user_data_32 == HAS_NOTE && t.code == PAYMENT_CODE)
        .map(|t| (t.id, t.user_data_128))
        .collect();
    let mut notes = state.users.notes(&noted).await.map_err(store_error)?;
    Ok(transfers
        .iter()
        .map(|t| view(state, t, notes.remove(&(t.id, t.user_data_128))))
        .collect())
}

/// On a cluster, each leg of a payment between partitions (it touches a clearing account,
/// and names its payment in `user_data_128`) as the payment between the two users, with the
/// leg's own state and time: the sender sees the hold (pending) and its post, the receiver
/// the credit.
async fn as_payments(state: &AppState, transfers: &[Transfer]) -> Result<Vec<Transfer>, ApiError> {
    let crate::books::Books::Cluster(cluster) = &state.books else {
        return Ok(transfers.to_vec());
    };
    let is_leg = |t: &Transfer| {
        kizo_cluster::legs::clearing_account_of(t.debit_account_id).is_some()
            || kizo_cluster::legs::clearing_account_of(t.credit_account_id).is_some()
    };
    let mut payments: Vec<u128> = transfers
        .iter()
        .filter(|t| is_leg(t))
        .map(|t| t.user_data_128)
        .collect();
    if payments.is_empty() {
        return Ok(transfers.to_vec());
    }
    payments.sort_unstable();
    payments.dedup();
    let stored: std::collections::BTreeMap<u128, Transfer> = cluster
        .cross
        .store()
        .load_many(&payments)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|(cross, _)| (cross.transfer.id, cross.transfer))
        .collect();
    Ok(transfers
        .iter()
        .map(|leg| match stored.get(&leg.user_data_128) {
            Some(payment) if is_leg(leg) => Transfer {
                id: payment.id,
                debit_account_id: payment.debit_account_id,
                credit_account_id: payment.credit_account_id,
                user_data_128: payment.user_data_128,
                ..*leg
            },
            _ => *leg,
        })
        .collect())
}

/// A payment between partitions that `own` sent or received, as stored by the cluster: where
/// it stands (pending until its legs are done), when it was asked for. `None` on one node.
async fn crossing(state: &AppState, id: u128, own: u128) -> Result<Option<TransferView>, ApiError> {
    let crate::books::Books::Cluster(cluster) = &state.books else {
        return Ok(None);
    };
    let found = cluster
        .cross
        .store()
        .load_many(&[id])
        .await
        .map_err(store_error)?;
    let Some((cross, created_ms)) = found.into_iter().next() else {
        return Ok(None);
    };
    let mut payment = cross.transfer;
    if payment.debit_account_id != own && payment.credit_account_id != own {
        return Ok(None);
    }
    payment.timestamp = created_ms.saturating_mul(1_000_000);
    let mut shown = views(
        state,
        &[Transfer {
            // As the ledger would show it meanwhile: held.
            flags: kizo_engine::TransferFlags::PENDING,
            ..payment
        }],
    )
    .await?
    .remove(0);
    use kizo_cluster::legs::{CrossOutcome, Phase};
    shown.status = match cross.phase {
        Phase::Done(CrossOutcome::Posted) => TransferState::Posted.as_str(),
        Phase::Done(_) => TransferState::Voided.as_str(),
        _ => TransferState::Pending.as_str(),
    };
    Ok(Some(shown))
}

fn refused(code: &'static str, detail: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
}

/// The Idempotency-Key of a wallet transfer: required; 1 to 255 visible ASCII characters.
pub(crate) fn required_key(header: &idempotency::KeyHeader) -> Result<&str, ApiError> {
    let Some(key) = &header.0 else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
            "send an Idempotency-Key header",
        )
        .field("Idempotency-Key"));
    };
    match key.to_str() {
        Ok(key) if idempotency::key_is_valid(key) => Ok(key),
        _ => Err(idempotency::invalid_key()),
    }
}

/// The refusal a ledger result stands for; `None` for a transfer that exists.
fn refusal_of(result: R) -> Option<ApiError> {
    Some(match result {
        R::Created | R::Exists => return None,
        R::ExceedsCredits => refused("insufficient_funds", "the account does not hold enough"),
        R::CreditAccountNotFound => {
            refused("unknown_recipient", "no such recipient account").field("to.account_id")
        }
        R::AccountsMustHaveTheSameLedger | R::TransferMustHaveTheSameLedgerAsAccounts => refused(
            "currency_mismatch",
            "the accounts hold different currencies",
        ),
        R::DebitAccountAlreadyClosed | R::CreditAccountAlreadyClosed => {
            refused("account_closed", "an account of this transfer is closed")
        }
        R::ExistsWithDifferentFlags
        | R::ExistsWithDifferentPendingId
        | R::ExistsWithDifferentTimeout
        | R::ExistsWithDifferentDebitAccountId
        | R::ExistsWithDifferentCreditAccountId
        | R::ExistsWithDifferentAmount
        | R::ExistsWithDifferentUserData128
        | R::ExistsWithDifferentUserData64
        | R::ExistsWithDifferentUserData32
        | R::ExistsWithDifferentLedger
        | R::ExistsWithDifferentCode => idempotency::reused(),
        // Refused earlier, and the refusal's answer was not kept (a crash between the two).
        R::IdAlreadyFailed => refused(
            "transfer_failed",
            "the transfer this Idempotency-Key names was refused before; use a new key",
        ),
        other => refused("transfer_refused", other.code()),
    })
}

/// `POST /v1/transfers`: moves money from the caller's account; needs an `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/transfers", tag = "wallet", security(("access_token" = [])),
    request_body = NewTransfer,
    params(("Idempotency-Key" = String, Header, pattern = "^[!-~]{1,255}$",
        description = "Required: names the transfer; retries with the same key get the first answer")),
    responses(
        (status = 201, body = TransferView),
        (status = 202, description = "On a cluster, a payment between partitions still under way after the bound (`--pay-bound`): the amount is held from the sender; `Location` names the transfer, final within seconds", body = TransferView),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Refused: insufficient_funds, same_account, unknown_recipient, currency_mismatch, account_closed, idempotency_key_reused, transfer_failed, invalid_field", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "too_many_refusals: this user had 1000 payments refused in the last day", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Authenticated,
    key_header: idempotency::KeyHeader,
    Json(request): Json<NewTransfer>,
) -> Result<Response, ApiError> {
    let key = required_key(&key_header)?;
    let amount = kizo_wallet::checked_amount(request.amount)?;
    let note = kizo_wallet::checked_note(request.note.as_deref())?;
    let from = request.from_account_id.as_u128();
    if from != caller.wallet {
        return Err(ApiError::not_found("no such account"));
    }
    let to = match (request.to.account_id, request.to.email) {
        (Some(id), None) => Payee::Account(id.as_u128()),
        (None, Some(email)) => Payee::Email(email.trim().to_lowercase()),
        _ => {
            return Err(ApiError::invalid(
                "to",
                "give exactly one of account_id and email",
            ))
        }
    };
    let fingerprint = ids::fingerprint(from, &to, amount, note.as_deref());
    let id = ids::transfer_id(&caller.user_id, key);
    let Some(_running) = state.transfer_keys.begin(id) else {
        return Ok(idempotency::in_use());
    };
    if let Some(kept) = state.transfer_keys.refusal(id).await.map_err(store_error)? {
        if kept.fingerprint != fingerprint {
            return Err(idempotency::reused());
        }
        return Ok(idempotency::replay(
            kept.status,
            kept.body,
            crate::ledger::Wire::Json,
        ));
    }
    if state.transfer_keys.refusals_of(&caller.user_id) >= crate::transfer_keys::REFUSALS_PER_USER {
        // Each refusal is remembered for a day (for retries): one user may not fill that
        // memory for everyone.
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_refusals",
            format!(
                "{} of your payments were refused in the last day; retry later",
                crate::transfer_keys::REFUSALS_PER_USER
            ),
        ));
    }
    let to = match to {
        Payee::Account(account_id) => {
            // Only a user's wallet receives payments: never a system account such as the
            // bank's, whose id is fixed and guessable (an account's code never changes).
            let found = state.books.lookup_accounts(vec![account_id]).await?;
            if !found.first().is_some_and(kizo_wallet::codes::is_wallet) {
                let error = refused("unknown_recipient", "no such recipient account")
                    .field("to.account_id");
                return refuse(&state, &caller.user_id, id, fingerprint, error).await;
            }
            account_id
        }
        Payee::Email(email) => match state
            .users
            .user_by_email(&email)
            .await
            .map_err(store_error)?
        {
            // Only a verified email names its owner: an unverified one may be anybody's.
            Some(user) if user.email_verified_at.is_some() => user.wallet_id.parse().unwrap_or(0),
            _ => {
                let error =
                    refused("unknown_recipient", "no user has this email").field("to.email");
                return refuse(&state, &caller.user_id, id, fingerprint, error).await;
            }
        },
    };
    if to == from {
        let error = refused(
            "same_account",
            "the sender and the recipient are the same account",
        );
        return refuse(&state, &caller.user_id, id, fingerprint, error).await;
    }
    if let Some(note) = &note {
        state
            .users
            .put_note(id, fingerprint, note)
            .await
            .map_err(store_error)?;
    }
    let mut transfer = Transfer::new(
        id,
        from,
        to,
        u128::from(amount),
        state.currency.ledger,
        PAYMENT_CODE,
    );
    transfer.user_data_128 = fingerprint;
    transfer.user_data_32 = if note.is_some() { HAS_NOTE } else { 0 };
    let (result, timestamp) = match state.books.pay(transfer).await? {
        crate::books::Paid::Decided { result, timestamp } => (result, timestamp),
        crate::books::Paid::Underway => {
            crate::metrics::results("kizo_transfers_total", ["underway"]);
            transfer.timestamp = state.clock.now_ns();
            let mut underway = view(&state, &transfer, note);
            underway.status = TransferState::Pending.as_str();
            let location = format!("/v1/transfers/{}", underway.id);
            return Ok((
                StatusCode::ACCEPTED,
                [(axum::http::header::LOCATION, location)],
                Json(underway),
            )
                .into_response());
        }
    };
    crate::metrics::results("kizo_transfers_total", [result.code()]);
    match refusal_of(result) {
        None if result == R::Created => {
            // A payment between partitions is stamped by its legs: now is within a few ms.
            transfer.timestamp = match timestamp {
                0 => state.clock.now_ns(),
                stamped => stamped,
            };
            Ok((StatusCode::CREATED, Json(view(&state, &transfer, note))).into_response())
        }
        None => {
            // A retry: the same request (the fingerprint matched), answered as the first was.
            let stored = state.books.lookup_transfers_of(from, vec![id]).await?;
            let shown = match stored.first() {
                Some(stored) => view(&state, stored, note),
                None => crossing(&state, id, from)
                    .await?
                    .ok_or_else(|| ApiError::unavailable("the transfer is not readable yet"))?,
            };
            let response = (StatusCode::CREATED, Json(shown)).into_response();
            Ok(idempotency::replayed(response))
        }
        Some(error) if result == R::IdAlreadyFailed => {
            Ok(idempotency::replayed(error.into_response()))
        }
        Some(error) if error.code == "idempotency_key_reused" => Err(error),
        Some(error) => {
            if note.is_some() {
                if let Err(failure) = state.users.delete_note(id, fingerprint).await {
                    // Never shown (no transfer has this id and fingerprint); only kept.
                    tracing::warn!(error = %failure, "a refused transfer's note was not forgotten");
                }
            }
            refuse(&state, &caller.user_id, id, fingerprint, error).await
        }
    }
}

/// Answers a refusal, kept first so that a retry gets it again.
async fn refuse(
    state: &AppState,
    user_id: &str,
    id: u128,
    fingerprint: u128,
    error: ApiError,
) -> Result<Response, ApiError> {
    let (status, body) = error.to_bytes();
    let refusal = crate::transfer_keys::Refusal {
        fingerprint,
        status: status.as_u16(),
        body: body.into(),
    };
    if let Err(failure) = state.transfer_keys.refuse(id, user_id, refusal).await {
        // The refusal stands (nothing moved); only its replay is lost: a retry runs again.
        tracing::warn!(error = %failure, "a transfer refusal was not kept");
    }
    Ok(error.into_response())
}

/// `GET /v1/transfers/{id}`: a transfer the caller sent or received.
#[utoipa::path(get, path = "/v1/transfers/{id}", tag = "wallet", security(("access_token" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = TransferView),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn transfer(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<TransferView>, ApiError> {
    let id = parse_uuid(&id)?;
    let own = caller.wallet;
    let found = state.books.lookup_transfers_of(own, vec![id]).await?;
    match found.first() {
        Some(t) if t.debit_account_id == own || t.credit_account_id == own => Ok(Json(
            named(&state, views(&state, std::slice::from_ref(t)).await?)
                .await?
                .remove(0),
        )),
        _ => match crossing(&state, id, own).await? {
            Some(view) => Ok(Json(named(&state, vec![view]).await?.remove(0))),
            None => Err(ApiError::not_found("no such transfer")),
        },
    }
}

/// `GET /v1/accounts/{id}`: the caller's own account, with its balances.
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "wallet", security(("access_token" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = AccountBalance),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn account(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<AccountBalance>, ApiError> {
    let id = own_account(&caller, &id)?;
    let found = state.books.lookup_accounts(vec![id]).await?;
    let account = found
        .first()
        .ok_or_else(|| ApiError::not_found("no such account"))?;
    Ok(Json(balance_of(&state, account)))
}

/// The account `id` names, if it is the caller's; anybody else's is as if it did not exist.
fn own_account(caller: &Authenticated, id: &str) -> Result<u128, ApiError> {
    let id = parse_uuid(id)?;
    if id != caller.wallet {
        return Err(ApiError::not_found("no such account"));
    }
    Ok(id)
}

/// (debits, credits) of a `direction`: sent, received or all (the default).
fn sides(direction: Option<&str>) -> Result<(bool, bool), ApiError> {
    match direction.unwrap_or("all") {
        "sent" => Ok((true, false)),
        "received" => Ok((false, true)),
        "all" => Ok((true, true)),
        _ => Err(ApiError::invalid("direction", "sent, received or all")),
    }
}

fn parse_uuid(text: &str) -> Result<u128, ApiError> {
    uuid::Uuid::parse_str(text)
        .map(|id| id.as_u128())
        .map_err(|_| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", "ids are UUIDs").field("id")
        })
}
