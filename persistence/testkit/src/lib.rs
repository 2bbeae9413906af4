//! Test helpers shared by Kizo's test suites, and only by them (every crate names this one
//! under `[dev-dependencies]`): a store per test ([`TestStore`]), on PostgreSQL (a schema of
//! its own in `DATABASE_URL`, default the local server) or embedded (a temporary folder), and
//! a clock the test moves by hand ([`ManualClock`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kizo_engine::{Engine, EngineConfig};
use kizo_persistence::{DurableWal, LogStore, StoreConfig, WalConfig};

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A store for one test; the PostgreSQL schema is dropped (or the folder removed) when the
/// test ends.
pub struct TestStore {
    pub config: StoreConfig,
    _dir: Option<tempfile::TempDir>,
}

impl TestStore {
    pub fn postgres(test: &str) -> TestStore {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let schema = format!(
            "t_{}_{}_{}_{}",
            test.chars().take(30).collect::<String>(),
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        TestStore {
            config: StoreConfig::Postgres {
                url: database_url(),
                schema: Some(schema),
            },
            _dir: None,
        }
    }

    pub fn embedded() -> TestStore {
        let dir = tempfile::tempdir().expect("a temporary folder");
        TestStore {
            config: StoreConfig::Embedded {
                dir: dir.path().to_path_buf(),
            },
            _dir: Some(dir),
        }
    }

    /// Drops the store's schema now (it is dropped at the end of the test anyway).
    pub async fn clean(self) {
        drop(self);
    }

    pub fn with_url(&self, url: String) -> StoreConfig {
        match &self.config {
            StoreConfig::Postgres { schema, .. } => StoreConfig::Postgres {
                url,
                schema: schema.clone(),
            },
            other => other.clone(),
        }
    }

    pub async fn open_wal(&self) -> Arc<DurableWal> {
        self.open_wal_with(WalConfig::default()).await
    }

    pub async fn open_wal_with(&self, config: WalConfig) -> Arc<DurableWal> {
        let store = LogStore::open(&self.config).await.expect("the store opens");
        DurableWal::open(store, config)
            .await
            .expect("the log opens")
    }

    pub async fn start_engine(&self) -> (Engine, Arc<DurableWal>) {
        let wal = self.open_wal().await;
        let engine = Engine::start(engine_config(), wal.clone())
            .await
            .expect("the engine starts");
        (engine, wal)
    }

    /// Runs SQL against the store's log tables (PostgreSQL or the embedded log file).
    pub async fn execute(&self, sql: &str, frame: Option<Vec<u8>>) {
        match LogStore::open(&self.config).await.expect("the store opens") {
            LogStore::Postgres(pool) => {
                let mut query = sqlx::query(sql);
                if let Some(frame) = frame {
                    query = query.bind(frame);
                }
                query.execute(&pool).await.expect("SQL runs");
                pool.close().await;
            }
            LogStore::Embedded(pool) => {
                let sql = sql.replace("$1", "?1");
                let mut query = sqlx::query(&sql);
                if let Some(frame) = frame {
                    query = query.bind(frame);
                }
                query.execute(&pool).await.expect("SQL runs");
                pool.close().await;
            }
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let StoreConfig::Postgres {
            url,
            schema: Some(schema),
        } = &self.config
        {
            let (url, schema) = (url.clone(), schema.clone());
            // Best effort, on a thread of its own: Drop may run inside a runtime.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                runtime.block_on(async {
                    if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                        let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                        let _ = sqlx::query(&sql).execute(&pool).await;
                        pool.close().await;
                    }
                });
            })
            .join();
        }
    }
}

pub fn engine_config() -> EngineConfig {
    EngineConfig {
        shard_count: 3,
        ..EngineConfig::default()
    }
}

/// A clock the test sets by hand.
#[derive(Default)]
pub struct ManualClock(pub AtomicU64);

impl ManualClock {
    pub fn set(&self, now_ns: u64) {
        self.0.store(now_ns, Ordering::SeqCst);
    }

    pub fn advance(&self, ns: u64) {
        self.0.fetch_add(ns, Ordering::SeqCst);
    }
}

impl kizo_engine::Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}
