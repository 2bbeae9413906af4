//! Idempotency keys: the first response to a (scope, key) is kept durably and replayed to
//! every retry with the same request; the same key with another request, or while the first
//! still runs, is refused. In PostgreSQL beside the log; in the embedded store in `keys.db`.

use std::sync::Arc;

use kizo_engine::{Clock, SystemClock};

use crate::store::read_error;
use crate::store::{dialect, on_pool, open_pools, Pools, StoreConfig, StoreError};

/// Its pools, and the clock it stamps rows with (the server's one clock).
#[derive(Clone)]
pub struct KeyStore {
    pools: Pools,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("pools", &self.pools)
            .finish()
    }
}

/// What to do with a request that carries a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is new (or its earlier holder died): run the request, then [`KeyStore::finish`].
    Run,
    /// The same request ran before: answer this.
    Replay { status: u16, body: Vec<u8> },
    /// The key was used with another request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

/// A key's row: the request's fingerprint, and the answer once there is one.
type StoredKey = (Vec<u8>, Option<i32>, Option<Vec<u8>>);

/// A running request's claim lapses after this long (its process died): a retry may run.
pub const LEASE_MS: i64 = 60_000;

/// An answer kept with [`KeyStore::keep`], as [`KeyStore::kept`] returns it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Kept {
    pub key: String,
    pub fingerprint: Vec<u8>,
    pub status: i32,
    pub body: Vec<u8>,
    pub started_at: i64,
}

impl KeyStore {
    pub async fn open(config: &StoreConfig) -> Result<KeyStore, StoreError> {
        let migrations = sqlx::migrate!("./migrations/sqlite_keys");
        Ok(KeyStore {
            pools: open_pools(config, 4, "keys.db", &migrations).await?,
            clock: Arc::new(SystemClock),
        })
    }

    /// The same store, stamping rows with `clock`.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    /// Milliseconds since 1970 on the store's clock, as its rows hold time.
    pub fn now_ms(&self) -> i64 {
        crate::store::row_ms(self.clock.as_ref())
    }

    fn sql(&self, sql: &'static str) -> std::borrow::Cow<'static, str> {
        dialect(sql, matches!(self.pools, Pools::Postgres(_)))
    }

    /// Claims `key` in `scope` for the request with `fingerprint`.
    pub async fn claim(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &[u8],
    ) -> Result<Claim, StoreError> {
        let now = self.now_ms();
        // Take the key if it is free, or if its holder's lease lapsed without an answer.
        let take = self.sql(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, started_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (scope, key) DO UPDATE SET started_at = excluded.started_at
             WHERE idempotency_keys.status IS NULL
               AND idempotency_keys.fingerprint = excluded.fingerprint
               AND idempotency_keys.started_at < $4 - $5",
        );
        let taken = on_pool!(Pools, &self.pools, pool => sqlx::query(&take)
            .bind(scope)
            .bind(key)
            .bind(fingerprint)
            .bind(now)
            .bind(LEASE_MS)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(read_error)?;
        if taken == 1 {
            return Ok(Claim::Run);
        }
        let find = self.sql(
            "SELECT fingerprint, status, body FROM idempotency_keys WHERE scope = $1 AND key = $2",
        );
        let row: Option<StoredKey> = on_pool!(Pools, &self.pools, pool => sqlx::query_as(&find)
            .bind(scope)
            .bind(key)
            .fetch_optional(pool)
            .await)
        .map_err(read_error)?;
        Ok(match row {
            // Released between our two statements: the caller may try again.
            None => Claim::InProgress,
            Some((stored, _, _)) if stored != fingerprint => Claim::Mismatch,
            Some((_, Some(status), body)) => Claim::Replay {
                status: status as u16,
                body: body.unwrap_or_default(),
            },
            Some((_, None, _)) => Claim::InProgress,
        })
    }

    /// Keeps the answer to the request that claimed `key`.
    pub async fn finish(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(), StoreError> {
        let sql = self.sql(
            "UPDATE idempotency_keys SET status = $3, body = $4 WHERE scope = $1 AND key = $2",
        );
        on_pool!(Pools, &self.pools, pool => sqlx::query(&sql)
            .bind(scope)
            .bind(key)
            .bind(i32::from(status))
            .bind(body)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(read_error)
    }

    /// Keeps an answer for `key` without a claim before it (for callers that keep their own
    /// record of running requests). The first answer kept for a key stays.
    pub async fn keep(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &[u8],
        status: u16,
        body: &[u8],
    ) -> Result<(), StoreError> {
        let sql = self.sql(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, status, body, started_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, key) DO NOTHING",
        );
        on_pool!(Pools, &self.pools, pool => sqlx::query(&sql)
            .bind(scope)
            .bind(key)
            .bind(fingerprint)
            .bind(i32::from(status))
            .bind(body)
            .bind(self.now_ms())
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(read_error)
    }

    /// The answers kept in `scope` in the last `age_ms`, oldest first, at most `limit`.
    pub async fn kept(
        &self,
        scope: &str,
        age_ms: i64,
        limit: u32,
    ) -> Result<Vec<Kept>, StoreError> {
        let sql = self.sql(
            "SELECT key, fingerprint, status, body, started_at FROM idempotency_keys
             WHERE scope = $1 AND started_at >= $2 AND status IS NOT NULL AND body IS NOT NULL
             ORDER BY started_at LIMIT $3",
        );
        on_pool!(Pools, &self.pools, pool => sqlx::query_as::<_, Kept>(&sql)
            .bind(scope)
            .bind(self.now_ms() - age_ms)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)
        .map_err(read_error)
    }

    /// The answer kept for `key` in `scope` in the last `age_ms`, if any.
    pub async fn kept_one(
        &self,
        scope: &str,
        key: &str,
        age_ms: i64,
    ) -> Result<Option<Kept>, StoreError> {
        let sql = self.sql(
            "SELECT key, fingerprint, status, body, started_at FROM idempotency_keys
             WHERE scope = $1 AND key = $2 AND started_at >= $3
               AND status IS NOT NULL AND body IS NOT NULL",
        );
        on_pool!(Pools, &self.pools, pool => sqlx::query_as::<_, Kept>(&sql)
            .bind(scope)
            .bind(key)
            .bind(self.now_ms() - age_ms)
            .fetch_optional(pool)
            .await)
        .map_err(read_error)
    }

    /// Frees `key` without an answer (the request failed for a passing reason: a retry runs it).
    pub async fn release(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        let sql = self
            .sql("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status IS NULL");
        on_pool!(Pools, &self.pools, pool => sqlx::query(&sql)
            .bind(scope)
            .bind(key)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(read_error)
    }

    /// Forgets keys first used more than `age_ms` ago; returns how many.
    pub async fn prune(&self, age_ms: i64) -> Result<u64, StoreError> {
        let sql = self.sql("DELETE FROM idempotency_keys WHERE started_at < $1");
        on_pool!(Pools, &self.pools, pool => sqlx::query(&sql)
            .bind(self.now_ms() - age_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(read_error)
    }
}
