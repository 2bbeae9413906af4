//! The read models: `accounts` and `transfers` tables that history queries and reports read
//! with SQL, fed from the log by the [projector](crate::projector). In PostgreSQL they sit
//! beside the log; the embedded default keeps them in their own SQLite file (`read.db`), so
//! that the projector never waits on the log's writer.

use std::collections::HashMap;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgPool, PgTypeInfo};
use sqlx::sqlite::SqlitePool;
use sqlx::Row;

use kizo_engine::store::Stored;
use kizo_engine::{
    Account, AccountFilter, AccountFlags, CreateTransferResult, Transfer, TransferFlags,
};

use crate::postings::{page_timestamps, postings_of, HistoryQuery};
use crate::projection::{BalanceChange, Projection, TransferRow, TransferStatus};
use crate::store::read_error;
use crate::store::{open_pools, Pools, StoreConfig, StoreError};

/// Which transfers of an account a history query returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The account is debited.
    Sent,
    /// The account is credited.
    Received,
    All,
}

/// One ledger's sums over every account, as [`ReadModels::ledger_totals`] reads them.
pub use kizo_engine::reconcile::LedgerTotals;

/// Rows per multi-row statement in SQLite: at most 15 columns each, well under the 32,766
/// parameters a statement may bind.
const SQLITE_ROWS_PER_STATEMENT: usize = 1000;

/// The most rows one history query returns.
pub const HISTORY_LIMIT_MAX: u32 = 1000;

/// The most ids one [`ReadModels::stored`] call looks up (a round's worth).
pub const STORED_IDS_MAX: usize = 1 << 17;

#[derive(Clone, Debug)]
pub enum ReadModels {
    Postgres(PgPool),
    Embedded(SqlitePool),
}

const TRANSFER_COLUMNS: &str = "id, debit_account_id, credit_account_id, amount, pending_id, \
     user_data_128, user_data_64, user_data_32, timeout, ledger, code, flags, timestamp, status, lsn";

/// The same columns, as text and 64-bit integers, whatever the backend stores.
const PG_TRANSFER_SELECT: &str = "replace(id::text, '-', ''), replace(debit_account_id::text, '-', ''), \
     replace(credit_account_id::text, '-', ''), amount::text, replace(pending_id::text, '-', ''), \
     user_data_128::text, user_data_64::text, user_data_32, timeout, ledger, code::int8, flags::int8, \
     timestamp, status, lsn";

const PG_ACCOUNT_SELECT: &str = "replace(id::text, '-', ''), ledger, code::int8, flags::int8, \
     debits_pending::text, debits_posted::text, credits_pending::text, credits_posted::text, \
     user_data_128::text, user_data_64::text, user_data_32, timestamp";

const SQLITE_ACCOUNT_SELECT: &str = "id, ledger, code, flags, debits_pending, debits_posted, \
     credits_pending, credits_posted, user_data_128, user_data_64, user_data_32, timestamp";

impl ReadModels {
    /// Connects and runs the migrations.
    pub async fn open(config: &StoreConfig) -> Result<ReadModels, StoreError> {
        let migrations = sqlx::migrate!("./migrations/sqlite_read");
        Ok(match open_pools(config, 4, "read.db", &migrations).await? {
            Pools::Postgres(pool) => ReadModels::Postgres(pool),
            Pools::Embedded(pool) => ReadModels::Embedded(pool),
        })
    }

    /// The last LSN projector `name` wrote (0 before its first).
    pub async fn progress(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self.progress_row(name).await?.unwrap_or(0))
    }

    /// Progress row `name`, if there is one.
    async fn progress_row(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let lsn: Option<i64> = match self {
            ReadModels::Postgres(pool) => {
                sqlx::query_scalar("SELECT lsn FROM projector_progress WHERE name = $1")
                    .bind(name)
                    .fetch_optional(pool)
                    .await
            }
            ReadModels::Embedded(pool) => {
                sqlx::query_scalar("SELECT lsn FROM projector_progress WHERE name = ?1")
                    .bind(name)
                    .fetch_optional(pool)
                    .await
            }
        }
        .map_err(read_error)?;
        Ok(lsn.map(|lsn| lsn as u64))
    }

    /// Whether a progress row `name` exists.
    pub async fn has_progress(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.progress_row(name).await?.is_some())
    }

    /// In one transaction: the failed ids of commits up to `lsn` become `failed` (those
    /// already there are replaced, so a backfill cut short runs again from the start), and the
    /// progress row `marker` is written at `lsn`.
    pub async fn replace_failed_up_to(
        &self,
        marker: &str,
        lsn: u64,
        failed: &[(u128, CreateTransferResult, u64)],
    ) -> Result<(), StoreError> {
        let lsn = i64::try_from(lsn).map_err(|_| StoreError::Unavailable("LSN past i64".into()))?;
        match self {
            ReadModels::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(read_error)?;
                sqlx::query("DELETE FROM failed_transfers WHERE lsn <= $1")
                    .bind(lsn)
                    .execute(&mut *tx)
                    .await
                    .map_err(read_error)?;
                insert_failed_postgres(&mut tx, failed).await?;
                sqlx::query("INSERT INTO projector_progress (name, lsn) VALUES ($1, $2)")
                    .bind(marker)
                    .bind(lsn)
                    .execute(&mut *tx)
                    .await
                    .map_err(read_error)?;
                tx.commit().await.map_err(read_error)
            }
            ReadModels::Embedded(pool) => {
                let mut tx = pool.begin().await.map_err(read_error)?;
                sqlx::query("DELETE FROM failed_transfers WHERE lsn <= ?1")
                    .bind(lsn)
                    .execute(&mut *tx)
                    .await
                    .map_err(read_error)?;
                insert_failed_sqlite(&mut tx, failed).await?;
                sqlx::query("INSERT INTO projector_progress (name, lsn) VALUES (?1, ?2)")
                    .bind(marker)
                    .bind(lsn)
                    .execute(&mut *tx)
                    .await
                    .map_err(read_error)?;
                tx.commit().await.map_err(read_error)
            }
        }
    }

    /// Moves progress row `name` from `from` to `to` (compare-and-set; the row starts at 0),
    /// for a follower of the log that writes nothing here but how far it got (the publisher
    /// of change events). [`StoreError::Conflict`] when the row is not at `from`.
    pub async fn advance_progress(&self, name: &str, from: u64, to: u64) -> Result<(), StoreError> {
        let (from, to) = match (i64::try_from(from), i64::try_from(to)) {
            (Ok(from), Ok(to)) => (from, to),
            _ => return Err(StoreError::Unavailable("LSN past i64".into())),
        };
        let moved = match self {
            ReadModels::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO projector_progress (name, lsn) VALUES ($1, 0) ON CONFLICT DO NOTHING",
                )
                .bind(name)
                .execute(pool)
                .await
                .map_err(read_error)?;
                sqlx::query("UPDATE projector_progress SET lsn = $2 WHERE name = $1 AND lsn = $3")
                    .bind(name)
                    .bind(to)
                    .bind(from)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
            }
            ReadModels::Embedded(pool) => {
                sqlx::query(
                    "INSERT INTO projector_progress (name, lsn) VALUES (?1, 0) ON CONFLICT DO NOTHING",
                )
                .bind(name)
                .execute(pool)
                .await
                .map_err(read_error)?;
                sqlx::query("UPDATE projector_progress SET lsn = ?2 WHERE name = ?1 AND lsn = ?3")
                    .bind(name)
                    .bind(to)
                    .bind(from)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
            }
        }
        .map_err(read_error)?;
        if moved != 1 {
            return Err(StoreError::Conflict(from as u64 + 1));
        }
        Ok(())
    }

    /// Writes a projection and moves projector `name` to its last LSN, in one transaction,
    /// only if the projector stood just before it (so nothing is projected twice).
    pub async fn apply(&self, name: &str, projection: &Projection) -> Result<(), StoreError> {
        match self {
            ReadModels::Postgres(pool) => apply_postgres(pool, name, projection).await,
            ReadModels::Embedded(pool) => apply_sqlite(pool, name, projection).await,
        }
    }

    pub async fn account(&self, id: u128) -> Result<Option<Account>, StoreError> {
        let account = match self {
            ReadModels::Postgres(pool) => {
                let sql = format!("SELECT {PG_ACCOUNT_SELECT} FROM accounts WHERE id = $1");
                let row = sqlx::query(&sql)
                    .bind(uuid::Uuid::from_u128(id))
                    .fetch_optional(pool)
                    .await;
                row.and_then(|row| row.as_ref().map(account_of).transpose())
            }
            ReadModels::Embedded(pool) => {
                let sql = format!("SELECT {SQLITE_ACCOUNT_SELECT} FROM accounts WHERE id = ?1");
                let row = sqlx::query(&sql).bind(hex(id)).fetch_optional(pool).await;
                row.and_then(|row| row.as_ref().map(account_of).transpose())
            }
        };
        account.map_err(read_error)
    }

    /// Per ledger, the sums of every account's balances and the accounts that break their
    /// limit, read in one statement (one snapshot: the projector writes a commit's accounts in
    /// one transaction, so the sums balance whenever the ledger did).
    pub async fn ledger_totals(&self) -> Result<Vec<LedgerTotals>, StoreError> {
        use futures_util::TryStreamExt;
        let mut totals: std::collections::BTreeMap<u32, LedgerTotals> = Default::default();
        let mut add = |account: Account| -> Result<(), StoreError> {
            let t = totals
                .entry(account.ledger)
                .or_insert_with(|| LedgerTotals {
                    ledger: account.ledger,
                    ..LedgerTotals::default()
                });
            let sum = |a: u128, b: u128| {
                a.checked_add(b)
                    .ok_or_else(|| StoreError::Unavailable("ledger totals overflow u128".into()))
            };
            t.accounts += 1;
            t.debits_posted = sum(t.debits_posted, account.debits_posted)?;
            t.credits_posted = sum(t.credits_posted, account.credits_posted)?;
            t.debits_pending = sum(t.debits_pending, account.debits_pending)?;
            t.credits_pending = sum(t.credits_pending, account.credits_pending)?;
            if !account.within_limits() {
                t.over_limit += 1;
            }
            Ok(())
        };
        match self {
            ReadModels::Postgres(pool) => {
                let sql = format!("SELECT {PG_ACCOUNT_SELECT} FROM accounts");
                let mut rows = sqlx::query(&sql).fetch(pool);
                while let Some(row) = rows.try_next().await.map_err(read_error)? {
                    add(account_of(&row).map_err(read_error)?)?;
                }
            }
            ReadModels::Embedded(pool) => {
                let sql = format!("SELECT {SQLITE_ACCOUNT_SELECT} FROM accounts");
                let mut rows = sqlx::query(&sql).fetch(pool);
                while let Some(row) = rows.try_next().await.map_err(read_error)? {
                    add(account_of(&row).map_err(read_error)?)?;
                }
            }
        }
        Ok(totals.into_values().collect())
    }

    /// A transfer by id, with its status and LSN.
    pub async fn transfer(&self, id: u128) -> Result<Option<TransferRow>, StoreError> {
        let transfer = match self {
            ReadModels::Postgres(pool) => {
                let sql = format!("SELECT {PG_TRANSFER_SELECT} FROM transfers WHERE id = $1");
                let row = sqlx::query(&sql)
                    .bind(uuid::Uuid::from_u128(id))
                    .fetch_optional(pool)
                    .await;
                row.and_then(|row| row.as_ref().map(transfer_of).transpose())
            }
            ReadModels::Embedded(pool) => {
                let sql = format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = ?1");
                let row = sqlx::query(&sql).bind(hex(id)).fetch_optional(pool).await;
                row.and_then(|row| row.as_ref().map(transfer_of).transpose())
            }
        };
        transfer.map_err(read_error)
    }

    /// An account's transfers, newest first, strictly older than `before` (a timestamp) when
    /// given: pass the last row's timestamp to get the next page.
    pub async fn account_transfers(
        &self,
        account_id: u128,
        direction: Direction,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<TransferRow>, StoreError> {
        if limit == 0 || limit > HISTORY_LIMIT_MAX {
            return Err(StoreError::Unavailable(format!(
                "limit must be in 1..={HISTORY_LIMIT_MAX}"
            )));
        }
        let before = before.map_or(i64::MAX, |t| i64::try_from(t).unwrap_or(i64::MAX));
        let rows = match self {
            ReadModels::Postgres(pool) => {
                let query = HistoryQuery {
                    account_id,
                    debits: direction != Direction::Received,
                    credits: direction != Direction::Sent,
                    timestamp_min: 0,
                    // `before` is exclusive, and at most i64::MAX.
                    timestamp_max: (before as u64).saturating_sub(1),
                    reversed: true,
                    limit: limit as usize,
                };
                return history_postgres(pool, &query).await;
            }
            ReadModels::Embedded(pool) => {
                let filter = match direction {
                    Direction::Sent => "debit_account_id = ?1",
                    Direction::Received => "credit_account_id = ?1",
                    Direction::All => "(debit_account_id = ?1 OR credit_account_id = ?1)",
                };
                let sql = format!(
                    "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE {filter} AND timestamp < ?2
                     ORDER BY timestamp DESC LIMIT ?3"
                );
                sqlx::query(&sql)
                    .bind(hex(account_id))
                    .bind(before)
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await
                    .and_then(|rows| rows.iter().map(transfer_of).collect())
            }
        };
        rows.map_err(read_error)
    }

    /// What the read models hold for `ids`: transfers, with where pending ones stand, and ids
    /// that failed. Ids they do not hold are left out; the order is not `ids`'.
    pub async fn stored(&self, ids: &[u128]) -> Result<Vec<Stored>, StoreError> {
        if ids.len() > STORED_IDS_MAX {
            return Err(StoreError::Unavailable(format!(
                "at most {STORED_IDS_MAX} ids at once, asked for {}",
                ids.len()
            )));
        }
        let mut stored = Vec::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(stored);
        }
        let (transfers, failed): (Vec<TransferRow>, Vec<(u128, i64)>) = match self {
            ReadModels::Postgres(pool) => {
                let uuids: Vec<uuid::Uuid> =
                    ids.iter().map(|&id| uuid::Uuid::from_u128(id)).collect();
                let sql = format!("SELECT {PG_TRANSFER_SELECT} FROM transfers WHERE id = ANY($1)");
                let transfers = sqlx::query(&sql)
                    .bind(&uuids)
                    .fetch_all(pool)
                    .await
                    .and_then(|rows| rows.iter().map(transfer_of).collect())
                    .map_err(read_error)?;
                let failed = sqlx::query(
                    "SELECT replace(id::text, '-', ''), result::int8 FROM failed_transfers
                     WHERE id = ANY($1)",
                )
                .bind(&uuids)
                .fetch_all(pool)
                .await
                .and_then(|rows| rows.iter().map(failed_of).collect())
                .map_err(read_error)?;
                (transfers, failed)
            }
            ReadModels::Embedded(pool) => {
                let (mut transfers, mut failed) = (Vec::new(), Vec::new());
                // SQLite binds at most a few thousand parameters: a JSON array is one.
                // Hex digits need no escaping in JSON.
                let quoted: Vec<String> =
                    ids.iter().map(|&id| format!("\"{}\"", hex(id))).collect();
                let ids_json = format!("[{}]", quoted.join(","));
                let sql = format!(
                    "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id IN (SELECT value FROM json_each(?1))"
                );
                transfers.extend(
                    sqlx::query(&sql)
                        .bind(&ids_json)
                        .fetch_all(pool)
                        .await
                        .and_then(|rows| {
                            rows.iter().map(transfer_of).collect::<Result<Vec<_>, _>>()
                        })
                        .map_err(read_error)?,
                );
                failed.extend(
                    sqlx::query(
                        "SELECT id, result FROM failed_transfers
                         WHERE id IN (SELECT value FROM json_each(?1))",
                    )
                    .bind(&ids_json)
                    .fetch_all(pool)
                    .await
                    .and_then(|rows| rows.iter().map(failed_of).collect::<Result<Vec<_>, _>>())
                    .map_err(read_error)?,
                );
                (transfers, failed)
            }
        };
        for row in transfers {
            stored.push(Stored::Transfer(row.transfer, row.pending_status()));
        }
        for (id, code) in failed {
            let result = u32::try_from(code)
                .ok()
                .and_then(CreateTransferResult::from_u32)
                .filter(|r| r.is_transient())
                .ok_or_else(|| StoreError::Corrupt(format!("failed id {id} has result {code}")))?;
            stored.push(Stored::Failed(id, result));
        }
        Ok(stored)
    }

    /// The transfers of an account that an [`AccountFilter`] selects, in its order: the same
    /// selection as `kizo_ledger::store`'s, in SQL.
    pub async fn filtered_transfers(
        &self,
        filter: &AccountFilter,
    ) -> Result<Vec<Transfer>, StoreError> {
        if filter.limit == 0 || filter.limit as usize > kizo_engine::BATCH_EVENTS_MAX {
            return Err(StoreError::Unavailable(format!(
                "limit must be in 1..={}",
                kizo_engine::BATCH_EVENTS_MAX
            )));
        }
        if !filter.debits && !filter.credits {
            return Ok(Vec::new());
        }
        let as_i64 = |t: u64| i64::try_from(t).unwrap_or(i64::MAX);
        let min = as_i64(filter.timestamp_min);
        let max = if filter.timestamp_max == 0 {
            i64::MAX
        } else {
            as_i64(filter.timestamp_max)
        };
        let order = if filter.reversed { "DESC" } else { "ASC" };
        let rows = match self {
            ReadModels::Postgres(pool) => {
                let query = HistoryQuery {
                    account_id: filter.account_id,
                    debits: filter.debits,
                    credits: filter.credits,
                    timestamp_min: min as u64,
                    timestamp_max: max as u64,
                    reversed: filter.reversed,
                    limit: filter.limit as usize,
                };
                history_postgres(pool, &query).await?
            }
            ReadModels::Embedded(pool) => {
                let side = match (filter.debits, filter.credits) {
                    (true, false) => "debit_account_id = ?1",
                    (false, true) => "credit_account_id = ?1",
                    _ => "(debit_account_id = ?1 OR credit_account_id = ?1)",
                };
                let sql = format!(
                    "SELECT {TRANSFER_COLUMNS} FROM transfers
                     WHERE {side} AND timestamp >= ?2 AND timestamp <= ?3
                     ORDER BY timestamp {order} LIMIT ?4"
                );
                sqlx::query(&sql)
                    .bind(hex(filter.account_id))
                    .bind(min)
                    .bind(max)
                    .bind(i64::from(filter.limit))
                    .fetch_all(pool)
                    .await
                    .and_then(|rows| rows.iter().map(transfer_of).collect::<Result<Vec<_>, _>>())
                    .map_err(read_error)?
            }
        };
        Ok(rows.into_iter().map(|row| row.transfer).collect())
    }

    pub async fn close(&self) {
        match self {
            ReadModels::Postgres(pool) => pool.close().await,
            ReadModels::Embedded(pool) => pool.close().await,
        }
    }
}

/// A history page from `account_postings`, then its transfers by their primary key.
async fn history_postgres(
    pool: &PgPool,
    query: &HistoryQuery,
) -> Result<Vec<TransferRow>, StoreError> {
    let timestamps = page_timestamps(pool, query).await?;
    if timestamps.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<i64> = timestamps.iter().map(|&t| t as i64).collect();
    let sql = format!("SELECT {PG_TRANSFER_SELECT} FROM transfers WHERE timestamp = ANY($1)");
    let mut rows: Vec<TransferRow> = sqlx::query(&sql)
        .bind(&keys)
        .fetch_all(pool)
        .await
        .and_then(|rows| rows.iter().map(transfer_of).collect::<Result<Vec<_>, _>>())
        .map_err(read_error)?;
    if rows.len() != timestamps.len() {
        return Err(StoreError::Corrupt(format!(
            "account {}'s postings list {} transfers that `transfers` lacks",
            query.account_id,
            timestamps.len() - rows.len().min(timestamps.len())
        )));
    }
    rows.sort_unstable_by_key(|row| row.transfer.timestamp);
    if query.reversed {
        rows.reverse();
    }
    Ok(rows)
}

async fn apply_postgres(pool: &PgPool, name: &str, p: &Projection) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(read_error)?;
    move_progress_postgres(&mut tx, name, p).await?;
    if !p.accounts.is_empty() {
        let mut rows = CopyRows::with_capacity(p.accounts.len() * 200);
        for (a, lsn) in &p.accounts {
            rows.row(13);
            rows.uuid(a.id);
            rows.bigint(a.ledger.into())?;
            rows.integer(a.code.into());
            rows.integer(a.flags.0.into());
            rows.numeric(a.debits_pending);
            rows.numeric(a.debits_posted);
            rows.numeric(a.credits_pending);
            rows.numeric(a.credits_posted);
            rows.numeric(a.user_data_128);
            rows.numeric(a.user_data_64.into());
            rows.bigint(a.user_data_32.into())?;
            rows.bigint(a.timestamp)?;
            rows.bigint(*lsn)?;
        }
        rows.copy_into(
            &mut tx,
            "COPY accounts (id, ledger, code, flags, debits_pending, debits_posted,
                 credits_pending, credits_posted, user_data_128, user_data_64, user_data_32,
                 timestamp, lsn) FROM STDIN (FORMAT binary)",
        )
        .await?;
    }
    if !p.transfers.is_empty() {
        let mut rows = CopyRows::with_capacity(p.transfers.len() * 240);
        for row in &p.transfers {
            let t = &row.transfer;
            // In TRANSFER_COLUMNS' order.
            rows.row(15);
            rows.uuid(t.id);
            rows.uuid(t.debit_account_id);
            rows.uuid(t.credit_account_id);
            rows.numeric(t.amount);
            if t.pending_id == 0 {
                rows.null();
            } else {
                rows.uuid(t.pending_id);
            }
            rows.numeric(t.user_data_128);
            rows.numeric(t.user_data_64.into());
            rows.bigint(t.user_data_32.into())?;
            rows.bigint(t.timeout.into())?;
            rows.bigint(t.ledger.into())?;
            rows.integer(t.code.into());
            rows.integer(t.flags.0.into());
            rows.bigint(t.timestamp)?;
            rows.text(row.status.as_str());
            rows.bigint(row.lsn)?;
        }
        rows.copy_into(
            &mut tx,
            &format!("COPY transfers ({TRANSFER_COLUMNS}) FROM STDIN (FORMAT binary)"),
        )
        .await?;
    }
    let postings = postings_of(p.transfers.iter().map(|row| &row.transfer));
    if !postings.is_empty() {
        let mut rows = CopyRows::with_capacity(postings.len() * 64 + p.transfers.len() * 24);
        for posting in &postings {
            rows.row(5);
            rows.uuid(posting.account_id);
            rows.bigint(posting.last_timestamp)?;
            rows.bigint(posting.first_timestamp)?;
            rows.bigint_array(&posting.debits)?;
            rows.bigint_array(&posting.credits)?;
        }
        rows.copy_into(
            &mut tx,
            "COPY account_postings (account_id, last_timestamp, first_timestamp, debits, credits)
             FROM STDIN (FORMAT binary)",
        )
        .await?;
    }
    insert_failed_postgres(&mut tx, &p.failed).await?;
    if !p.resolved.is_empty() || !p.balances.is_empty() {
        // One index lookup per row changed. Left to itself, the planner joins a batch of a few
        // thousand changes by hashing the whole table (with its dead row versions), which
        // costs in proportion to every row there is, on every batch.
        sqlx::query(
            "SELECT set_config('enable_hashjoin', 'off', true),
                    set_config('enable_mergejoin', 'off', true)",
        )
        .execute(&mut *tx)
        .await
        .map_err(read_error)?;
    }
    if !p.resolved.is_empty() {
        // Only a pending transfer is ever resolved.
        let ids: Vec<uuid::Uuid> = p
            .resolved
            .iter()
            .map(|(id, _)| uuid::Uuid::from_u128(*id))
            .collect();
        let statuses: Vec<&str> = p.resolved.iter().map(|(_, s)| s.as_str()).collect();
        let resolved = sqlx::query(
            "UPDATE transfers t SET status = u.status
             FROM UNNEST($1::uuid[], $2::text[]) AS u(id, status)
             WHERE t.id = u.id AND t.status = 'pending'",
        )
        .bind(ids)
        .bind(statuses)
        .execute(&mut *tx)
        .await
        .map_err(read_error)?;
        if resolved.rows_affected() != p.resolved.len() as u64 {
            // As for accounts below: the transaction rolls back.
            return Err(StoreError::Unavailable(format!(
                "the read models miss pending transfers that commits {}..={} resolve; rebuild them from the log",
                p.first_lsn, p.last_lsn
            )));
        }
    }
    if !p.balances.is_empty() {
        // Binary parameters: PostgreSQL neither parses text nor casts it, and each account's
        // four balances change by one signed amount each.
        let mut ids = Vec::with_capacity(p.balances.len());
        let mut deltas: [Vec<Delta>; 4] =
            std::array::from_fn(|_| Vec::with_capacity(p.balances.len()));
        for (id, c) in &p.balances {
            ids.push(uuid::Uuid::from_u128(*id));
            let changes = [
                c.debits_pending,
                c.debits_posted,
                c.credits_pending,
                c.credits_posted,
            ];
            for (column, change) in deltas.iter_mut().zip(changes) {
                column.push(Delta::of(change));
            }
        }
        let [debits_pending, debits_posted, credits_pending, credits_posted] = deltas;
        let updated = sqlx::query(
            "UPDATE accounts a SET
                 debits_pending = a.debits_pending + u.dp,
                 debits_posted = a.debits_posted + u.dq,
                 credits_pending = a.credits_pending + u.cp,
                 credits_posted = a.credits_posted + u.cq
             FROM UNNEST($1::uuid[], $2::numeric[], $3::numeric[], $4::numeric[], $5::numeric[])
                 AS u(id, dp, dq, cp, cq)
             WHERE a.id = u.id",
        )
        .bind(ids)
        .bind(debits_pending)
        .bind(debits_posted)
        .bind(credits_pending)
        .bind(credits_posted)
        .execute(&mut *tx)
        .await
        .map_err(read_error)?;
        if updated.rows_affected() != p.balances.len() as u64 {
            // The transaction rolls back: the read models lack an account the log created.
            return Err(StoreError::Unavailable(format!(
                "the read models miss accounts that commits {}..={} touch; rebuild them from the log",
                p.first_lsn, p.last_lsn
            )));
        }
    }
    tx.commit().await.map_err(read_error)
}

/// Failed ids (id, result, LSN) into `failed_transfers`, by binary `COPY`.
async fn insert_failed_postgres(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    failed: &[(u128, CreateTransferResult, u64)],
) -> Result<(), StoreError> {
    if failed.is_empty() {
        return Ok(());
    }
    let mut rows = CopyRows::with_capacity(failed.len() * 40);
    for &(id, result, lsn) in failed {
        rows.row(3);
        rows.uuid(id);
        rows.integer(result as u32 as i32);
        rows.bigint(lsn)?;
    }
    rows.copy_into(
        tx,
        "COPY failed_transfers (id, result, lsn) FROM STDIN (FORMAT binary)",
    )
    .await
}

/// Failed ids (id, result, LSN) into `failed_transfers`.
async fn insert_failed_sqlite(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    failed: &[(u128, CreateTransferResult, u64)],
) -> Result<(), StoreError> {
    for &(id, result, lsn) in failed {
        sqlx::query("INSERT INTO failed_transfers (id, result, lsn) VALUES (?1, ?2, ?3)")
            .bind(hex(id))
            .bind(i64::from(result as u32))
            .bind(lsn as i64)
            .execute(&mut **tx)
            .await
            .map_err(read_error)?;
    }
    Ok(())
}

async fn move_progress_postgres(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    name: &str,
    p: &Projection,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO projector_progress (name, lsn) VALUES ($1, 0) ON CONFLICT DO NOTHING")
        .bind(name)
        .execute(&mut **tx)
        .await
        .map_err(read_error)?;
    let moved = sqlx::query("UPDATE projector_progress SET lsn = $2 WHERE name = $1 AND lsn = $3")
        .bind(name)
        .bind(p.last_lsn as i64)
        .bind(p.first_lsn as i64 - 1)
        .execute(&mut **tx)
        .await
        .map_err(read_error)?;
    if moved.rows_affected() != 1 {
        return Err(StoreError::Conflict(p.first_lsn));
    }
    Ok(())
}

async fn apply_sqlite(pool: &SqlitePool, name: &str, p: &Projection) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(read_error)?;
    sqlx::query("INSERT INTO projector_progress (name, lsn) VALUES (?1, 0) ON CONFLICT DO NOTHING")
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(read_error)?;
    let moved = sqlx::query("UPDATE projector_progress SET lsn = ?2 WHERE name = ?1 AND lsn = ?3")
        .bind(name)
        .bind(p.last_lsn as i64)
        .bind(p.first_lsn as i64 - 1)
        .execute(&mut *tx)
        .await
        .map_err(read_error)?;
    if moved.rows_affected() != 1 {
        return Err(StoreError::Conflict(p.first_lsn));
    }
    // Many rows per statement: each statement is a round trip to SQLite's worker thread.
    for chunk in p.accounts.chunks(SQLITE_ROWS_PER_STATEMENT) {
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO accounts (id, ledger, code, flags, debits_pending, debits_posted,
                 credits_pending, credits_posted, user_data_128, user_data_64, user_data_32,
                 timestamp, lsn) ",
        );
        insert.push_values(chunk, |mut row, (a, lsn)| {
            row.push_bind(hex(a.id))
                .push_bind(i64::from(a.ledger))
                .push_bind(i64::from(a.code))
                .push_bind(i64::from(a.flags.0))
                .push_bind(a.debits_pending.to_string())
                .push_bind(a.debits_posted.to_string())
                .push_bind(a.credits_pending.to_string())
                .push_bind(a.credits_posted.to_string())
                .push_bind(a.user_data_128.to_string())
                .push_bind(a.user_data_64.to_string())
                .push_bind(i64::from(a.user_data_32))
                .push_bind(a.timestamp as i64)
                .push_bind(*lsn as i64);
        });
        insert.build().execute(&mut *tx).await.map_err(read_error)?;
    }
    for chunk in p.transfers.chunks(SQLITE_ROWS_PER_STATEMENT) {
        let mut insert =
            sqlx::QueryBuilder::new(format!("INSERT INTO transfers ({TRANSFER_COLUMNS}) "));
        insert.push_values(chunk, |mut row, transfer_row| {
            let t = &transfer_row.transfer;
            row.push_bind(hex(t.id))
                .push_bind(hex(t.debit_account_id))
                .push_bind(hex(t.credit_account_id))
                .push_bind(t.amount.to_string())
                .push_bind((t.pending_id != 0).then(|| hex(t.pending_id)))
                .push_bind(t.user_data_128.to_string())
                .push_bind(t.user_data_64.to_string())
                .push_bind(i64::from(t.user_data_32))
                .push_bind(i64::from(t.timeout))
                .push_bind(i64::from(t.ledger))
                .push_bind(i64::from(t.code))
                .push_bind(i64::from(t.flags.0))
                .push_bind(t.timestamp as i64)
                .push_bind(transfer_row.status.as_str())
                .push_bind(transfer_row.lsn as i64);
        });
        insert.build().execute(&mut *tx).await.map_err(read_error)?;
    }
    insert_failed_sqlite(&mut tx, &p.failed).await?;
    for (id, status) in &p.resolved {
        sqlx::query("UPDATE transfers SET status = ?2 WHERE id = ?1")
            .bind(hex(*id))
            .bind(status.as_str())
            .execute(&mut *tx)
            .await
            .map_err(read_error)?;
    }
    // No 128-bit arithmetic in SQLite: read the balances, change them in Rust, write them back.
    let changes: Vec<(&u128, &BalanceChange)> = p.balances.iter().collect();
    for chunk in changes.chunks(SQLITE_ROWS_PER_STATEMENT) {
        let ids: Vec<String> = chunk
            .iter()
            .map(|(id, _)| format!("\"{}\"", hex(**id)))
            .collect();
        let sql = format!(
            "SELECT {SQLITE_ACCOUNT_SELECT} FROM accounts
             WHERE id IN (SELECT value FROM json_each(?1))"
        );
        let accounts: HashMap<u128, Account> = sqlx::query(&sql)
            .bind(format!("[{}]", ids.join(",")))
            .fetch_all(&mut *tx)
            .await
            .and_then(|rows| {
                rows.iter()
                    .map(|row| account_of(row).map(|a| (a.id, a)))
                    .collect()
            })
            .map_err(read_error)?;
        if accounts.len() != chunk.len() {
            // The transaction rolls back: the read models lack an account the log created.
            return Err(StoreError::Unavailable(format!(
                "the read models miss accounts that commits {}..={} touch; rebuild them from the log",
                p.first_lsn, p.last_lsn
            )));
        }
        let mut update = sqlx::QueryBuilder::new(
            "UPDATE accounts SET debits_pending = u.column2, debits_posted = u.column3,
                 credits_pending = u.column4, credits_posted = u.column5
             FROM (",
        );
        update.push_values(chunk, |mut row, (id, change)| {
            let account = &accounts[*id];
            row.push_bind(hex(**id))
                .push_bind(
                    change
                        .debits_pending
                        .apply(account.debits_pending)
                        .to_string(),
                )
                .push_bind(
                    change
                        .debits_posted
                        .apply(account.debits_posted)
                        .to_string(),
                )
                .push_bind(
                    change
                        .credits_pending
                        .apply(account.credits_pending)
                        .to_string(),
                )
                .push_bind(
                    change
                        .credits_posted
                        .apply(account.credits_posted)
                        .to_string(),
                );
        });
        update.push(") AS u WHERE accounts.id = u.column1");
        update.build().execute(&mut *tx).await.map_err(read_error)?;
    }
    tx.commit().await.map_err(read_error)
}

/// Rows in `COPY ... FROM STDIN`'s binary format, written straight into one buffer: a bulk
/// insert that PostgreSQL neither parses (as it would text) nor builds arrays for (as
/// `UNNEST` needs). Each value is in its type's wire form (`uuid_recv`, `numeric_recv`, ...),
/// so the column types must match exactly: see the migrations.
struct CopyRows {
    bytes: Vec<u8>,
}

impl CopyRows {
    fn with_capacity(bytes: usize) -> Self {
        let mut rows = Self {
            bytes: Vec::with_capacity(bytes + 32),
        };
        // The signature, then flags and header extension length (both zero).
        rows.bytes.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        rows.bytes.extend_from_slice(&0i32.to_be_bytes());
        rows.bytes.extend_from_slice(&0i32.to_be_bytes());
        rows
    }

    fn row(&mut self, fields: i16) {
        self.bytes.extend_from_slice(&fields.to_be_bytes());
    }

    fn value(&mut self, bytes: &[u8]) {
        let length = i32::try_from(bytes.len()).expect("a value far below 2 GiB");
        self.bytes.extend_from_slice(&length.to_be_bytes());
        self.bytes.extend_from_slice(bytes);
    }

    fn null(&mut self) {
        self.bytes.extend_from_slice(&(-1i32).to_be_bytes());
    }

    fn uuid(&mut self, id: u128) {
        self.value(&id.to_be_bytes());
    }

    fn integer(&mut self, value: i32) {
        self.value(&value.to_be_bytes());
    }

    /// A BIGINT column holds what the ledger keeps as u64 (timestamps, LSNs): anything past
    /// i64 is refused, never wrapped.
    fn bigint(&mut self, value: u64) -> Result<(), StoreError> {
        let value = i64::try_from(value).map_err(|_| {
            StoreError::Unavailable(format!("{value} does not fit a BIGINT column"))
        })?;
        self.value(&value.to_be_bytes());
        Ok(())
    }

    /// A `BIGINT[]` (one dimension, no nulls): its header, then each element as a value.
    fn bigint_array(&mut self, values: &[u64]) -> Result<(), StoreError> {
        const INT8_OID: u32 = 20;
        let length = 12 + if values.is_empty() { 0 } else { 8 } + 12 * values.len();
        let length = i32::try_from(length).map_err(|_| {
            StoreError::Unavailable(format!("{} elements in one array", values.len()))
        })?;
        self.bytes.extend_from_slice(&length.to_be_bytes());
        let dimensions: i32 = if values.is_empty() { 0 } else { 1 };
        self.bytes.extend_from_slice(&dimensions.to_be_bytes());
        self.bytes.extend_from_slice(&0i32.to_be_bytes()); // no nulls
        self.bytes.extend_from_slice(&INT8_OID.to_be_bytes());
        if !values.is_empty() {
            self.bytes
                .extend_from_slice(&(values.len() as i32).to_be_bytes());
            self.bytes.extend_from_slice(&1i32.to_be_bytes()); // the lower bound
        }
        for &value in values {
            self.bigint(value)?;
        }
        Ok(())
    }

    fn numeric(&mut self, value: u128) {
        let (bytes, length) = numeric_wire(value, false);
        self.value(&bytes[..length]);
    }

    fn text(&mut self, value: &str) {
        self.value(value.as_bytes());
    }

    async fn copy_into(
        mut self,
        connection: &mut sqlx::PgConnection,
        statement: &str,
    ) -> Result<(), StoreError> {
        self.bytes.extend_from_slice(&(-1i16).to_be_bytes());
        let mut copy = connection
            .copy_in_raw(statement)
            .await
            .map_err(read_error)?;
        if let Err(error) = copy.send(self.bytes).await {
            // Leaves the connection usable; the caller's transaction then rolls back.
            let _ = copy.abort(error.to_string()).await;
            return Err(read_error(error));
        }
        copy.finish().await.map_err(read_error)?;
        Ok(())
    }
}

/// NUMERIC's wire form (`numeric_recv`), and its length: digit count, weight, sign and
/// display scale, then base-10000 digits, most significant first (trailing zero digits left
/// out, as PostgreSQL stores it).
fn numeric_wire(magnitude: u128, negative: bool) -> ([u8; NUMERIC_WIRE_MAX], usize) {
    const NEGATIVE: i16 = 0x4000;
    let mut digits = [0i16; 10]; // u128::MAX has 39 decimal digits: 10 base-10000 digits
    let mut count = 0;
    let mut rest = magnitude;
    while rest > 0 {
        digits[count] = (rest % 10_000) as i16;
        rest /= 10_000;
        count += 1;
    }
    // digits[0] is the least significant; the weight is that of the most significant.
    let weight = count.saturating_sub(1) as i16;
    let trailing_zeros = digits[..count].iter().take_while(|d| **d == 0).count();
    let kept = count - trailing_zeros;
    let sign = if negative && magnitude != 0 {
        NEGATIVE
    } else {
        0
    };
    let mut bytes = [0u8; NUMERIC_WIRE_MAX];
    let mut length = 0;
    let values = [kept as i16, weight, sign, 0]
        .into_iter()
        .chain(digits[trailing_zeros..count].iter().rev().copied());
    for value in values {
        bytes[length..length + 2].copy_from_slice(&value.to_be_bytes());
        length += 2;
    }
    (bytes, length)
}

/// The header's 4 fields and 10 digits, 2 bytes each.
const NUMERIC_WIRE_MAX: usize = 28;

/// A balance's change (`plus - minus`), bound as a binary NUMERIC.
struct Delta {
    magnitude: u128,
    negative: bool,
}

impl Delta {
    fn of(change: crate::projection::Change) -> Self {
        match change.plus.checked_sub(change.minus) {
            Some(magnitude) => Delta {
                magnitude,
                negative: false,
            },
            None => Delta {
                magnitude: change.minus - change.plus,
                negative: true,
            },
        }
    }
}

impl sqlx::Type<sqlx::Postgres> for Delta {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1700)) // numeric
    }
}

impl PgHasArrayType for Delta {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1231)) // numeric[]
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for Delta {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        let (bytes, length) = numeric_wire(self.magnitude, self.negative);
        buf.extend_from_slice(&bytes[..length]);
        Ok(IsNull::No)
    }
}

/// The form ids take in the read models' SQL: 32 lowercase hex digits (PostgreSQL reads
/// it as a UUID).
pub fn hex(id: u128) -> String {
    format!("{id:032x}")
}

fn parse_hex(text: &str) -> Result<u128, sqlx::Error> {
    u128::from_str_radix(text, 16).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn parse_decimal<T: std::str::FromStr>(text: &str) -> Result<T, sqlx::Error>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    text.parse()
        .map_err(|e: T::Err| sqlx::Error::Decode(Box::new(e)))
}

fn small<T: TryFrom<i64>>(value: i64) -> Result<T, sqlx::Error> {
    T::try_from(value).map_err(|_| sqlx::Error::Decode(format!("{value} out of range").into()))
}

fn account_of<R: Row>(row: &R) -> Result<Account, sqlx::Error>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let text = |i: usize| row.try_get::<String, _>(i);
    Ok(Account {
        id: parse_hex(&text(0)?)?,
        ledger: small(row.try_get(1)?)?,
        code: small(row.try_get(2)?)?,
        flags: AccountFlags(small(row.try_get(3)?)?),
        debits_pending: parse_decimal(&text(4)?)?,
        debits_posted: parse_decimal(&text(5)?)?,
        credits_pending: parse_decimal(&text(6)?)?,
        credits_posted: parse_decimal(&text(7)?)?,
        user_data_128: parse_decimal(&text(8)?)?,
        user_data_64: parse_decimal(&text(9)?)?,
        user_data_32: small(row.try_get(10)?)?,
        timestamp: small(row.try_get(11)?)?,
    })
}

fn failed_of<R: Row>(row: &R) -> Result<(u128, i64), sqlx::Error>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    Ok((parse_hex(&row.try_get::<String, _>(0)?)?, row.try_get(1)?))
}

fn transfer_of<R: Row>(row: &R) -> Result<TransferRow, sqlx::Error>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let text = |i: usize| row.try_get::<String, _>(i);
    let pending_id = match row.try_get::<Option<String>, _>(4)? {
        Some(text) => parse_hex(&text)?,
        None => 0,
    };
    let status_text = text(13)?;
    Ok(TransferRow {
        transfer: Transfer {
            id: parse_hex(&text(0)?)?,
            debit_account_id: parse_hex(&text(1)?)?,
            credit_account_id: parse_hex(&text(2)?)?,
            amount: parse_decimal(&text(3)?)?,
            pending_id,
            user_data_128: parse_decimal(&text(5)?)?,
            user_data_64: parse_decimal(&text(6)?)?,
            user_data_32: small(row.try_get(7)?)?,
            timeout: small(row.try_get(8)?)?,
            ledger: small(row.try_get(9)?)?,
            code: small(row.try_get(10)?)?,
            flags: TransferFlags(small(row.try_get(11)?)?),
            timestamp: small(row.try_get(12)?)?,
        },
        status: TransferStatus::parse(&status_text)
            .ok_or_else(|| sqlx::Error::Decode(format!("status {status_text:?}").into()))?,
        lsn: small(row.try_get(14)?)?,
    })
}
