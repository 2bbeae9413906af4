//! Idempotency keys: the first response to a (scope, key) is kept durably and replayed to
//! every retry with the same request; the same key with another request, or while the first
//! still runs, is refused. In PostgreSQL beside the log; in the embedded store in `keys.db`.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

use crate::store::{open_pools, Pools, StoreConfig, StoreError};

#[derive(Clone, Debug)]
pub enum KeyStore {
    Postgres(PgPool),
    Embedded(SqlitePool),
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl KeyStore {
    pub async fn open(config: &StoreConfig) -> Result<KeyStore, StoreError> {
        let migrations = sqlx::migrate!("./migrations/sqlite_keys");
        Ok(match open_pools(config, 4, "keys.db", &migrations).await? {
            Pools::Postgres(pool) => KeyStore::Postgres(pool),
            Pools::Embedded(pool) => KeyStore::Embedded(pool),
        })
    }

    /// Claims `key` in `scope` for the request with `fingerprint`.
    pub async fn claim(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &[u8],
    ) -> Result<Claim, StoreError> {
        let now = now_ms();
        // Take the key if it is free, or if its holder's lease lapsed without an answer.
        let taken = match self {
            KeyStore::Postgres(pool) => sqlx::query(
                "INSERT INTO idempotency_keys (scope, key, fingerprint, started_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (scope, key) DO UPDATE SET started_at = EXCLUDED.started_at
                 WHERE idempotency_keys.status IS NULL
                   AND idempotency_keys.fingerprint = EXCLUDED.fingerprint
                   AND idempotency_keys.started_at < $4 - $5",
            )
            .bind(scope)
            .bind(key)
            .bind(fingerprint)
            .bind(now)
            .bind(LEASE_MS)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
            KeyStore::Embedded(pool) => sqlx::query(
                "INSERT INTO idempotency_keys (scope, key, fingerprint, started_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (scope, key) DO UPDATE SET started_at = excluded.started_at
                 WHERE idempotency_keys.status IS NULL
                   AND idempotency_keys.fingerprint = excluded.fingerprint
                   AND idempotency_keys.started_at < ?4 - ?5",
            )
            .bind(scope)
            .bind(key)
            .bind(fingerprint)
            .bind(now)
            .bind(LEASE_MS)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
        }
        .map_err(unavailable)?;
        if taken == 1 {
            return Ok(Claim::Run);
        }
        let row: Option<StoredKey> = match self {
            KeyStore::Postgres(pool) => sqlx::query_as(
                "SELECT fingerprint, status, body FROM idempotency_keys WHERE scope = $1 AND key = $2",
            )
            .bind(scope)
            .bind(key)
            .fetch_optional(pool)
            .await,
            KeyStore::Embedded(pool) => sqlx::query_as(
                "SELECT fingerprint, status, body FROM idempotency_keys WHERE scope = ?1 AND key = ?2",
            )
            .bind(scope)
            .bind(key)
            .fetch_optional(pool)
            .await,
        }
        .map_err(unavailable)?;
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
        match self {
            KeyStore::Postgres(pool) => sqlx::query(
                "UPDATE idempotency_keys SET status = $3, body = $4 WHERE scope = $1 AND key = $2",
            )
            .bind(scope)
            .bind(key)
            .bind(i32::from(status))
            .bind(body)
            .execute(pool)
            .await
            .map(|_| ()),
            KeyStore::Embedded(pool) => sqlx::query(
                "UPDATE idempotency_keys SET status = ?3, body = ?4 WHERE scope = ?1 AND key = ?2",
            )
            .bind(scope)
            .bind(key)
            .bind(i32::from(status))
            .bind(body)
            .execute(pool)
            .await
            .map(|_| ()),
        }
        .map_err(unavailable)
    }

    /// Frees `key` without an answer (the request failed for a passing reason: a retry runs it).
    pub async fn release(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        match self {
            KeyStore::Postgres(pool) => sqlx::query(
                "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status IS NULL",
            )
            .bind(scope)
            .bind(key)
            .execute(pool)
            .await
            .map(|_| ()),
            KeyStore::Embedded(pool) => sqlx::query(
                "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND status IS NULL",
            )
            .bind(scope)
            .bind(key)
            .execute(pool)
            .await
            .map(|_| ()),
        }
        .map_err(unavailable)
    }

    /// Forgets keys first used more than `age_ms` ago; returns how many.
    pub async fn prune(&self, age_ms: i64) -> Result<u64, StoreError> {
        let before = now_ms() - age_ms;
        match self {
            KeyStore::Postgres(pool) => {
                sqlx::query("DELETE FROM idempotency_keys WHERE started_at < $1")
                    .bind(before)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            }
            KeyStore::Embedded(pool) => {
                sqlx::query("DELETE FROM idempotency_keys WHERE started_at < ?1")
                    .bind(before)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            }
        }
        .map_err(unavailable)
    }
}

fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}
