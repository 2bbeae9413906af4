//! Settlements (deposits and withdrawals through the bank) and reconciliation reports. Each
//! state a settlement moves to is written, with a row in its transition history, in one
//! transaction that is durable before the settlement acts on it. In PostgreSQL beside the log;
//! in the embedded store in `settlements.db`.

use kizo_engine::settlement::{Kind, Phase, Settlement, Status};
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

use crate::store::read_error;
use crate::store::{dialect, on_pool, open_pools, Pools, StoreConfig, StoreError};

#[derive(Clone, Debug)]
pub enum SettlementStore {
    Postgres(PgPool),
    Embedded(SqlitePool),
}

/// A settlement and the user who asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owned {
    pub user_id: String,
    pub settlement: Settlement,
}

/// What [`SettlementStore::create`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    Created,
    /// A settlement with this id exists: this one (the caller compares).
    Exists(Box<Owned>),
    /// Not written: the user has as many settlements under way as they may.
    OverQuota,
}

/// Reports kept; older ones are pruned as new ones come.
pub const REPORTS_KEPT: i64 = 1_000;

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    user_id: String,
    kind: String,
    account_id: String,
    bank_account_id: String,
    ledger: i64,
    amount: i64,
    phase: String,
    attempts: i32,
    attempts_total: i32,
    due_ms: i64,
    reason: Option<String>,
    created_ms: i64,
    updated_ms: i64,
}

impl Row {
    fn decode(self) -> Result<Owned, StoreError> {
        let bad = |what: &str| StoreError::Corrupt(format!("settlement {}: bad {what}", self.id));
        let settlement = Settlement {
            id: u128::from_str_radix(&self.id, 16).map_err(|_| bad("id"))?,
            kind: Kind::parse(&self.kind).ok_or_else(|| bad("kind"))?,
            account_id: self.account_id.parse().map_err(|_| bad("account_id"))?,
            bank_account_id: self
                .bank_account_id
                .parse()
                .map_err(|_| bad("bank_account_id"))?,
            ledger: u32::try_from(self.ledger).map_err(|_| bad("ledger"))?,
            amount: u64::try_from(self.amount).map_err(|_| bad("amount"))?,
            phase: Phase::parse(&self.phase).ok_or_else(|| bad("phase"))?,
            attempts: u32::try_from(self.attempts).map_err(|_| bad("attempts"))?,
            attempts_total: u32::try_from(self.attempts_total)
                .map_err(|_| bad("attempts_total"))?,
            due_ms: u64::try_from(self.due_ms).map_err(|_| bad("due_ms"))?,
            reason: self.reason.clone(),
            created_ms: u64::try_from(self.created_ms).map_err(|_| bad("created_ms"))?,
            updated_ms: u64::try_from(self.updated_ms).map_err(|_| bad("updated_ms"))?,
        };
        Ok(Owned {
            user_id: self.user_id,
            settlement,
        })
    }
}

fn id_text(id: u128) -> String {
    format!("{id:032x}")
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Appends `$s`'s transition to its history, in the transaction `$tx`.
macro_rules! record_transition {
    ($tx:expr, $sql:expr, $s:expr) => {
        sqlx::query($sql)
            .bind(id_text($s.id))
            .bind(ms($s.updated_ms))
            .bind($s.phase.code())
            .bind($s.attempts_total as i32)
            .bind($s.reason.as_deref())
            .execute(&mut *$tx)
            .await
    };
}
impl SettlementStore {
    pub async fn open(config: &StoreConfig) -> Result<SettlementStore, StoreError> {
        let migrations = sqlx::migrate!("./migrations/sqlite_settlements");
        Ok(
            match open_pools(config, 16, "settlements.db", &migrations).await? {
                Pools::Postgres(pool) => SettlementStore::Postgres(pool),
                Pools::Embedded(pool) => SettlementStore::Embedded(pool),
            },
        )
    }

    fn sql(&self, sql: &'static str) -> std::borrow::Cow<'static, str> {
        dialect(sql, matches!(self, SettlementStore::Postgres(_)))
    }

    /// Writes a new settlement (with its first transition), unless one with its id exists or
    /// its user already has `unfinished_max` settlements under way (their quota, so that one
    /// user cannot fill the supervisor's backlog for everyone).
    pub async fn create(
        &self,
        user_id: &str,
        s: &Settlement,
        unfinished_max: u32,
    ) -> Result<Created, StoreError> {
        // One statement: the count and the insert see the same snapshot. Two requests of one
        // user at the same instant may both pass at `unfinished_max - 1`, so the quota can be
        // passed by the requests in flight at once, never more.
        let insert = self.sql(
            "INSERT INTO settlements (id, user_id, kind, account_id, bank_account_id, ledger, amount, phase, attempts, attempts_total, due_ms, reason, created_ms, updated_ms)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14
             WHERE (SELECT count(*) FROM settlements WHERE user_id = $2 AND phase NOT IN ('succeeded', 'failed', 'needs_review')) < $15
             ON CONFLICT (id) DO NOTHING",
        );
        let transition = self.sql(TRANSITION);
        let inserted = on_pool!(SettlementStore, self, pool => async {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(&insert)
                .bind(id_text(s.id))
                .bind(user_id)
                .bind(s.kind.code())
                .bind(s.account_id.to_string())
                .bind(s.bank_account_id.to_string())
                .bind(i64::from(s.ledger))
                .bind(ms(s.amount))
                .bind(s.phase.code())
                .bind(s.attempts as i32)
                .bind(s.attempts_total as i32)
                .bind(ms(s.due_ms))
                .bind(s.reason.as_deref())
                .bind(ms(s.created_ms))
                .bind(ms(s.updated_ms))
                .bind(i64::from(unfinished_max))
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 1 {
                record_transition!(tx, &transition, s)?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(done.rows_affected() == 1)
        }.await)
        .map_err(read_error)?;
        if inserted {
            return Ok(Created::Created);
        }
        match self.load(s.id).await? {
            Some(existing) => Ok(Created::Exists(Box::new(existing))),
            None => Ok(Created::OverQuota),
        }
    }

    /// Writes the settlement's new state and its transition, durably, if the stored row is
    /// still `from` (compare-and-set): a worker and a person resolving by hand, or a worker and
    /// the reconciler, can never overwrite each other's step. Refused with
    /// [`StoreError::Superseded`] when another writer moved it first.
    pub async fn save(&self, from: &Settlement, to: &Settlement) -> Result<(), StoreError> {
        assert_eq!(from.id, to.id, "a settlement saved over another");
        // Every step moves the phase, counts an attempt or moves the update time, so these
        // three name one stored state. (Not `due_ms`: the supervisor moves it forward in
        // memory when a callback wakes a settlement.)
        let update = self.sql(
            "UPDATE settlements SET phase = $2, attempts = $3, attempts_total = $4, due_ms = $5, reason = $6, updated_ms = $7
             WHERE id = $1 AND phase = $8 AND attempts_total = $9 AND updated_ms = $10",
        );
        let transition = self.sql(TRANSITION);
        let updated = on_pool!(SettlementStore, self, pool => async {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(&update)
                .bind(id_text(to.id))
                .bind(to.phase.code())
                .bind(to.attempts as i32)
                .bind(to.attempts_total as i32)
                .bind(ms(to.due_ms))
                .bind(to.reason.as_deref())
                .bind(ms(to.updated_ms))
                .bind(from.phase.code())
                .bind(from.attempts_total as i32)
                .bind(ms(from.updated_ms))
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 1 {
                record_transition!(tx, &transition, to)?;
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(done.rows_affected())
        }.await)
        .map_err(read_error)?;
        match updated {
            1 => Ok(()),
            _ => match self.load(to.id).await? {
                Some(_) => Err(StoreError::Superseded(format!(
                    "settlement {} moved since it was read",
                    id_text(to.id)
                ))),
                None => Err(StoreError::Unavailable(format!(
                    "settlement {} is not stored",
                    id_text(to.id)
                ))),
            },
        }
    }

    pub async fn load(&self, id: u128) -> Result<Option<Owned>, StoreError> {
        let sql = self.sql("SELECT * FROM settlements WHERE id = $1");
        let row = on_pool!(SettlementStore, self, pool => sqlx::query_as::<_, Row>(&sql)
            .bind(id_text(id))
            .fetch_optional(pool)
            .await)
        .map_err(read_error)?;
        row.map(Row::decode).transpose()
    }

    /// Every settlement not final (`needs_review` is final until re-driven).
    pub async fn unfinished(&self) -> Result<Vec<Owned>, StoreError> {
        let sql = "SELECT * FROM settlements WHERE phase NOT IN ('succeeded', 'failed', 'needs_review') ORDER BY due_ms";
        let rows = on_pool!(SettlementStore, self, pool => sqlx::query_as::<_, Row>(sql).fetch_all(pool).await)
            .map_err(read_error)?;
        rows.into_iter().map(Row::decode).collect()
    }

    /// Settlements waiting for a person (`needs_review`), oldest first, at most `limit`. Reads
    /// the partial index of open settlements, so it costs what waits, not the history.
    pub async fn needing_review(&self, limit: usize) -> Result<Vec<Owned>, StoreError> {
        self.at_most(
            "SELECT * FROM settlements WHERE phase = 'needs_review' ORDER BY updated_ms, id LIMIT $1",
            limit,
        )
        .await
    }

    /// Every settlement, oldest first, at most `limit`.
    pub async fn all(&self, limit: usize) -> Result<Vec<Owned>, StoreError> {
        self.at_most(
            "SELECT * FROM settlements ORDER BY created_ms, id LIMIT $1",
            limit,
        )
        .await
    }

    /// The settlements `sql` selects, its `$1` bound to `limit`.
    async fn at_most(&self, sql: &'static str, limit: usize) -> Result<Vec<Owned>, StoreError> {
        let sql = self.sql(sql);
        let rows = on_pool!(SettlementStore, self, pool => sqlx::query_as::<_, Row>(&sql)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(pool)
            .await)
        .map_err(read_error)?;
        rows.into_iter().map(Row::decode).collect()
    }

    /// How many settlements are under way (pending, processing) and waiting for a person
    /// (needs_review). Reads partial indexes, so it costs what is open, not the history;
    /// finished ones are counted as they finish (`kizo_settlements_finished_total`).
    pub async fn count_open(&self) -> Result<Vec<(Status, u64)>, StoreError> {
        let open = "SELECT phase, count(*) FROM settlements WHERE phase NOT IN ('succeeded', 'failed', 'needs_review') GROUP BY phase";
        let review =
            "SELECT phase, count(*) FROM settlements WHERE phase = 'needs_review' GROUP BY phase";
        type Counts = Vec<(String, i64)>;
        let (mut rows, review): (Counts, Counts) = on_pool!(SettlementStore, self, pool => async {
                Ok::<_, sqlx::Error>((
                    sqlx::query_as(open).fetch_all(pool).await?,
                    sqlx::query_as(review).fetch_all(pool).await?,
                ))
            }.await)
        .map_err(read_error)?;
        rows.extend(review);
        let mut counts: Vec<(Status, u64)> =
            [Status::Pending, Status::Processing, Status::NeedsReview]
                .iter()
                .map(|s| (*s, 0))
                .collect();
        for (phase, count) in rows {
            // Phases map to statuses (`send` is pending before the first attempt, processing
            // after; counted as processing here).
            let status = match Phase::parse(&phase) {
                Some(Phase::Done(status)) => status,
                Some(Phase::Hold) => Status::Pending,
                Some(_) => Status::Processing,
                None => continue,
            };
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
                slot.1 += count as u64;
            }
        }
        Ok(counts)
    }

    /// The transitions of one settlement, oldest first: (at_ms, phase, attempts_total, reason).
    pub async fn transitions(
        &self,
        id: u128,
    ) -> Result<Vec<(i64, String, i32, Option<String>)>, StoreError> {
        let sql = self.sql(
            "SELECT at_ms, phase, attempts_total, reason FROM settlement_transitions WHERE settlement_id = $1 ORDER BY at_ms",
        );
        on_pool!(SettlementStore, self, pool => sqlx::query_as(&sql).bind(id_text(id)).fetch_all(pool).await)
            .map_err(read_error)
    }

    /// Keeps a reconciliation report (its JSON), pruning beyond [`REPORTS_KEPT`].
    pub async fn keep_report(
        &self,
        at_ms: u64,
        unexplained: u64,
        report: &str,
    ) -> Result<(), StoreError> {
        let insert = self.sql(
            "INSERT INTO reconciliation_reports (at_ms, unexplained, report) VALUES ($1, $2, $3)",
        );
        let prune = self.sql(
            "DELETE FROM reconciliation_reports WHERE at_ms < (SELECT at_ms FROM reconciliation_reports ORDER BY at_ms DESC LIMIT 1 OFFSET $1)",
        );
        on_pool!(SettlementStore, self, pool => async {
            sqlx::query(&insert)
                .bind(ms(at_ms))
                .bind(ms(unexplained))
                .bind(report)
                .execute(pool)
                .await?;
            sqlx::query(&prune).bind(REPORTS_KEPT).execute(pool).await?;
            Ok::<_, sqlx::Error>(())
        }.await)
        .map_err(read_error)
    }

    /// The latest report's JSON, if any.
    pub async fn latest_report(&self) -> Result<Option<String>, StoreError> {
        let sql = "SELECT report FROM reconciliation_reports ORDER BY at_ms DESC LIMIT 1";
        on_pool!(SettlementStore, self, pool => sqlx::query_scalar::<_, String>(sql).fetch_optional(pool).await)
            .map_err(read_error)
    }
}

const TRANSITION: &str = "INSERT INTO settlement_transitions (settlement_id, at_ms, phase, attempts_total, reason) VALUES ($1, $2, $3, $4, $5)";
