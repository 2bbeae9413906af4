//! Where the log's frames live: PostgreSQL (`DATABASE_URL=postgres://...`) or, by default, an
//! embedded SQLite database under `./data/` (WAL journal, `synchronous=FULL`). One row per
//! flushed frame; one transaction per flush. Both backends answer the same few questions, and
//! the same test suite runs against each.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Row};

/// Runs `$body` with `$pool` bound to the pool of `$store` (an enum `$ty` with `Postgres` and
/// `Embedded` arms), so that one SQL text serves both backends (see [`dialect`]).
macro_rules! on_pool {
    ($ty:ident, $store:expr, $pool:ident => $body:expr) => {
        match $store {
            $ty::Postgres($pool) => $body,
            $ty::Embedded($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// One SQL text for both backends: written with PostgreSQL's `$1` placeholders, which SQLite
/// reads as `?1`.
pub(crate) fn dialect(sql: &'static str, postgres: bool) -> std::borrow::Cow<'static, str> {
    if postgres {
        sql.into()
    } else {
        sql.replace('$', "?").into()
    }
}

/// Which store to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// A PostgreSQL database; `schema`, when set, holds every table (created if missing).
    Postgres { url: String, schema: Option<String> },
    /// The embedded store: SQLite files in this folder (created if missing).
    Embedded { dir: PathBuf },
}

impl StoreConfig {
    /// The folder the embedded store uses when none is configured.
    pub const DEFAULT_DATA_DIR: &'static str = "data";

    /// `DATABASE_URL` (postgres) if set, else the embedded store in `KIZO_DATA_DIR` or `./data`.
    pub fn from_env() -> Self {
        Self::from_settings(
            std::env::var("DATABASE_URL").ok(),
            std::env::var_os("KIZO_DATA_DIR").map(PathBuf::from),
        )
    }

    /// A non-empty database URL selects PostgreSQL; otherwise the embedded store, in
    /// `data_dir` or `./data`.
    pub fn from_settings(database_url: Option<String>, data_dir: Option<PathBuf>) -> Self {
        match database_url {
            Some(url) if !url.trim().is_empty() => StoreConfig::Postgres { url, schema: None },
            _ => StoreConfig::Embedded {
                dir: data_dir.unwrap_or_else(|| PathBuf::from(Self::DEFAULT_DATA_DIR)),
            },
        }
    }

    /// A short description for logs, without credentials.
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::Postgres { url, schema } => {
                let host = url.rsplit('@').next().unwrap_or(url);
                match schema {
                    Some(schema) => format!("postgres {host} (schema {schema})"),
                    None => format!("postgres {host}"),
                }
            }
            StoreConfig::Embedded { dir } => format!("embedded store in {}", dir.display()),
        }
    }
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// Nothing was written: the store could not be reached or refused the statement.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The write may or may not have committed: the connection broke while it was in flight.
    #[error("the store's answer was lost; the write may or may not have committed: {0}")]
    Unknown(String),
    /// A frame starting at this LSN is already stored.
    #[error("a frame at LSN {0} is already stored")]
    Conflict(u64),
    #[error("the store could not be opened: {0}")]
    Open(String),
    /// What the store holds could not be decoded: damaged or foreign data, not a passing
    /// failure, so retrying does not help.
    #[error("the store holds data that cannot be decoded: {0}")]
    Corrupt(String),
    /// A compare-and-set found the row changed since it was read: another writer got there
    /// first, and nothing was written.
    #[error("changed by another writer: {0}")]
    Superseded(String),
}

impl From<StoreError> for kizo_engine::settlement_actors::PortError {
    fn from(error: StoreError) -> Self {
        use kizo_engine::settlement_actors::PortError;
        match error {
            StoreError::Corrupt(_) => PortError::Corrupt(error.to_string()),
            StoreError::Superseded(_) => PortError::Superseded(error.to_string()),
            _ => PortError::Unavailable(error.to_string()),
        }
    }
}

/// A stored frame: its LSN range and its bytes (checked by the codec, not here).
#[derive(Clone, Debug)]
pub struct StoredFrame {
    pub first_lsn: u64,
    pub last_lsn: u64,
    pub bytes: Vec<u8>,
}

/// The connection pools of the log (and of the read models, see [`crate::projector`]).
#[derive(Clone, Debug)]
pub enum LogStore {
    Postgres(PgPool),
    Embedded(SqlitePool),
    /// One partition's log stream in a cluster (`partition_frames`): appends commit only
    /// under the partition's current lease epoch ([`crate::leases`]).
    Partition(PartitionStream),
}

/// A partition's log stream, written under the lease epoch its node acquired.
#[derive(Clone, Debug)]
pub struct PartitionStream {
    pub pool: PgPool,
    pub partition: u32,
    pub epoch: u64,
}

impl PartitionStream {
    fn partition(&self) -> i32 {
        i32::try_from(self.partition).expect("at most 4096 partitions")
    }
}

const PG_APPEND: &str = "INSERT INTO wal_frames (first_lsn, last_lsn, frame) VALUES ($1, $2, $3)";

/// How long a caller waits for a connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

impl LogStore {
    /// Connects and runs the migrations (idempotent: each runs once per database).
    pub async fn open(config: &StoreConfig) -> Result<LogStore, StoreError> {
        Ok(
            match open_pools(
                config,
                8,
                "log.db",
                &sqlx::migrate!("./migrations/sqlite_log"),
            )
            .await?
            {
                Pools::Postgres(pool) => LogStore::Postgres(pool),
                Pools::Embedded(pool) => LogStore::Embedded(pool),
            },
        )
    }

    /// The writer of the log's frames (one per log: frames are written one at a time).
    pub fn appender(&self) -> Appender {
        Appender {
            store: self.clone(),
            connection: None,
        }
    }

    /// Whether a frame starting at `first_lsn` is stored (to settle an unknown outcome).
    pub async fn has_frame(&self, first_lsn: u64) -> Result<bool, StoreError> {
        let count = match self {
            LogStore::Postgres(pool) => {
                sqlx::query("SELECT count(*) FROM wal_frames WHERE first_lsn = $1")
                    .bind(to_i64(first_lsn))
                    .fetch_one(pool)
                    .await
                    .and_then(|row| row.try_get::<i64, _>(0))
            }
            LogStore::Embedded(pool) => {
                sqlx::query("SELECT count(*) FROM wal_frames WHERE first_lsn = ?1")
                    .bind(to_i64(first_lsn))
                    .fetch_one(pool)
                    .await
                    .and_then(|row| row.try_get::<i64, _>(0))
            }
            LogStore::Partition(stream) => sqlx::query(
                "SELECT count(*) FROM partition_frames WHERE partition = $1 AND first_lsn = $2",
            )
            .bind(stream.partition())
            .bind(to_i64(first_lsn))
            .fetch_one(&stream.pool)
            .await
            .and_then(|row| row.try_get::<i64, _>(0)),
        }
        .map_err(read_error)?;
        Ok(count > 0)
    }

    /// The LSN of the last stored commit (0 when the log is empty).
    pub async fn last_lsn(&self) -> Result<u64, StoreError> {
        let sql = "SELECT COALESCE(MAX(last_lsn), 0) FROM wal_frames";
        let row =
            match self {
                LogStore::Postgres(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
                LogStore::Embedded(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
                LogStore::Partition(stream) => sqlx::query_scalar::<_, i64>(
                    "SELECT COALESCE(MAX(last_lsn), 0) FROM partition_frames WHERE partition = $1",
                )
                .bind(stream.partition())
                .fetch_one(&stream.pool)
                .await,
            }
            .map_err(read_error)?;
        Ok(from_i64(row))
    }

    /// Up to `limit` frames in LSN order, starting with the one that holds `from_lsn` and
    /// none starting after `to_lsn`.
    pub async fn read_frames(
        &self,
        from_lsn: u64,
        to_lsn: u64,
        limit: u32,
    ) -> Result<Vec<StoredFrame>, StoreError> {
        match self {
            LogStore::Postgres(pool) => sqlx::query(
                "SELECT first_lsn, last_lsn, frame FROM wal_frames
                     WHERE first_lsn >= COALESCE(
                             (SELECT MAX(first_lsn) FROM wal_frames WHERE first_lsn <= $1), 0)
                       AND first_lsn <= $2
                     ORDER BY first_lsn LIMIT $3",
            )
            .bind(to_i64(from_lsn))
            .bind(to_i64(to_lsn))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .and_then(|rows| rows.iter().map(frame_of).collect()),
            LogStore::Embedded(pool) => sqlx::query(
                "SELECT first_lsn, last_lsn, frame FROM wal_frames
                     WHERE first_lsn >= COALESCE(
                             (SELECT MAX(first_lsn) FROM wal_frames WHERE first_lsn <= ?1), 0)
                       AND first_lsn <= ?2
                     ORDER BY first_lsn LIMIT ?3",
            )
            .bind(to_i64(from_lsn))
            .bind(to_i64(to_lsn))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .and_then(|rows| rows.iter().map(frame_of).collect()),
            LogStore::Partition(stream) => sqlx::query(
                "SELECT first_lsn, last_lsn, frame FROM partition_frames
                     WHERE partition = $4
                       AND first_lsn >= COALESCE(
                             (SELECT MAX(first_lsn) FROM partition_frames
                              WHERE partition = $4 AND first_lsn <= $1), 0)
                       AND first_lsn <= $2
                     ORDER BY first_lsn LIMIT $3",
            )
            .bind(to_i64(from_lsn))
            .bind(to_i64(to_lsn))
            .bind(i64::from(limit))
            .bind(stream.partition())
            .fetch_all(&stream.pool)
            .await
            .and_then(|rows| rows.iter().map(frame_of).collect()),
        }
        .map_err(read_error)
    }

    /// Closes every connection (waiting for those in use).
    pub async fn close(&self) {
        match self {
            LogStore::Postgres(pool) => pool.close().await,
            LogStore::Embedded(pool) => pool.close().await,
            LogStore::Partition(stream) => stream.pool.close().await,
        }
    }
}

/// The connection pool of one part of the store, its migrations run.
#[derive(Clone, Debug)]
pub(crate) enum Pools {
    Postgres(PgPool),
    Embedded(SqlitePool),
}

/// Connects a part of the store: in PostgreSQL, a pool of `pg_connections` on the database
/// (every part shares one set of migrations); embedded, its own SQLite file in the data folder
/// with its own migrations. Migrations are idempotent: each runs once per database.
pub(crate) async fn open_pools(
    config: &StoreConfig,
    pg_connections: u32,
    sqlite_file: &str,
    sqlite_migrations: &sqlx::migrate::Migrator,
) -> Result<Pools, StoreError> {
    let failed = |e: sqlx::migrate::MigrateError| StoreError::Open(format!("migrations: {e}"));
    match config {
        StoreConfig::Postgres { url, schema } => {
            let pool = postgres_pool(url, schema.as_deref(), pg_connections).await?;
            sqlx::migrate!("./migrations/postgres")
                .run(&pool)
                .await
                .map_err(failed)?;
            Ok(Pools::Postgres(pool))
        }
        StoreConfig::Embedded { dir } => {
            let pool = sqlite_pool(&dir.join(sqlite_file)).await?;
            sqlite_migrations.run(&pool).await.map_err(failed)?;
            Ok(Pools::Embedded(pool))
        }
    }
}

/// A pool on `url`, in `schema` when given (created if missing).
pub(crate) async fn postgres_pool(
    url: &str,
    schema: Option<&str>,
    max_connections: u32,
) -> Result<PgPool, StoreError> {
    let mut options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Open(format!("DATABASE_URL: {e}")))?
        // Named after the schema, so that one store's connections can be told apart.
        .application_name(&format!(
            "kizo{}",
            schema.map(|s| format!("-{s}")).unwrap_or_default()
        ));
    // Durable means committed on disk: never trust a server default that says otherwise.
    let mut settings = vec![("synchronous_commit", "on".to_string())];
    if let Some(schema) = schema {
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(StoreError::Open(format!("invalid schema name {schema:?}")));
        }
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Open(e.to_string()))?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&admin)
            .await
            .map_err(|e| StoreError::Open(e.to_string()))?;
        admin.close().await;
        settings.push(("search_path", schema.to_string()));
    }
    options = options.options(settings);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // A broken connection shows as an error on use, which the caller settles; a ping
        // before every statement would cost a round trip on the hot path.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(|e| StoreError::Open(e.to_string()))
}

pub(crate) async fn sqlite_pool(path: &Path) -> Result<SqlitePool, StoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: every commit is fsynced before it returns.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(ACQUIRE_TIMEOUT);
    SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))
}

fn frame_of<R: Row>(row: &R) -> Result<StoredFrame, sqlx::Error>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    Ok(StoredFrame {
        first_lsn: from_i64(row.try_get(0)?),
        last_lsn: from_i64(row.try_get(1)?),
        bytes: row.try_get(2)?,
    })
}

/// Writes frames, each in one transaction. On PostgreSQL it keeps one connection for all its
/// writes (reopened after a failure), with the INSERT prepared once: a flush is then one
/// message and one answer, never a prepare or a connection handshake that could leave it unsent
/// while its outcome looks unknown.
pub struct Appender {
    store: LogStore,
    connection: Option<PoolConnection<Postgres>>,
}

impl Appender {
    /// Writes one frame in one transaction; durable when this returns `Ok`.
    pub async fn append(
        &mut self,
        first_lsn: u64,
        last_lsn: u64,
        frame: &[u8],
    ) -> Result<(), StoreError> {
        let result = match &self.store {
            LogStore::Postgres(pool) => {
                let connection = match &mut self.connection {
                    Some(connection) => connection,
                    empty => empty.insert(pool.acquire().await.map_err(classify_write)?),
                };
                let result = sqlx::query(PG_APPEND)
                    .bind(to_i64(first_lsn))
                    .bind(to_i64(last_lsn))
                    .bind(frame)
                    .execute(&mut **connection)
                    .await
                    .map(|_| ());
                if matches!(&result, Err(error) if !matches!(error, sqlx::Error::Database(_))) {
                    // The connection may be broken: close it rather than reuse it.
                    if let Some(broken) = self.connection.take() {
                        drop(broken.detach());
                    }
                }
                result
            }
            LogStore::Embedded(pool) => sqlx::query(
                "INSERT INTO wal_frames (first_lsn, last_lsn, frame) VALUES (?1, ?2, ?3)",
            )
            .bind(to_i64(first_lsn))
            .bind(to_i64(last_lsn))
            .bind(frame)
            .execute(pool)
            .await
            .map(|_| ()),
            LogStore::Partition(stream) => {
                return match crate::leases::append_fenced(stream, first_lsn, last_lsn, frame)
                    .await?
                {
                    crate::leases::Appended::Durable => Ok(()),
                    crate::leases::Appended::Fenced => Err(StoreError::Superseded(format!(
                        "partition {} is past epoch {}: another node owns it",
                        stream.partition, stream.epoch
                    ))),
                };
            }
        };
        result.map_err(|error| match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(first_lsn)
            }
            _ => classify_write(error),
        })
    }
}

/// A failed write: definite when nothing can have reached the store, unknown otherwise.
fn classify_write(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Configuration(_)
        | sqlx::Error::Database(_) => StoreError::Unavailable(error.to_string()),
        other => StoreError::Unknown(other.to_string()),
    }
}

/// A failed read or a definite failed write: data that does not decode is corrupt, anything
/// else is a passing failure. The one place sqlx's errors are classified for reads.
pub(crate) fn read_error(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(error.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// The time as rows hold it: milliseconds since 1970 as a `BIGINT`.
pub(crate) fn row_ms(clock: &dyn kizo_engine::Clock) -> i64 {
    i64::try_from(clock.now_ms()).unwrap_or(i64::MAX)
}

/// LSNs are stored as `BIGINT`; the log would need 2^63 commits to overflow.
fn to_i64(lsn: u64) -> i64 {
    i64::try_from(lsn).expect("LSN fits in i64")
}

fn from_i64(value: i64) -> u64 {
    u64::try_from(value).expect("stored LSNs are positive")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_database_url_the_store_is_embedded_under_data() {
        assert_eq!(
            StoreConfig::from_settings(None, None),
            StoreConfig::Embedded { dir: "data".into() }
        );
        assert_eq!(
            StoreConfig::from_settings(Some(" ".into()), Some("/srv/kizo".into())),
            StoreConfig::Embedded {
                dir: "/srv/kizo".into()
            }
        );
        let url = "postgres://kizo:secret@db:5432/kizo".to_string();
        let config = StoreConfig::from_settings(Some(url.clone()), None);
        assert_eq!(config, StoreConfig::Postgres { url, schema: None });
        assert!(
            !config.describe().contains("secret"),
            "credentials stay out of logs"
        );
    }
}
