//! Test helpers shared by Kizo's test suites, and only by them (every crate names this one
//! under `[dev-dependencies]`): a store per test ([`TestStore`]), on PostgreSQL (a schema of
//! its own in `DATABASE_URL`, default the local server) or embedded (a temporary folder), and
//! a clock the test moves by hand ([`ManualClock`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kizo_engine::{Account, AccountFlags, Engine, EngineConfig, Transfer};
use kizo_persistence::projector::{Projector, ProjectorConfig};
use kizo_persistence::read_models::ReadModels;
use kizo_persistence::transfer_store::ServedEngine;
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

    /// An engine as a server runs it: the log, the read models fed by a projector, and the
    /// read models as the transfer store, with a window of [`TEST_WINDOW`] transfers so that
    /// nearly every old transfer is looked up in the store.
    pub async fn start_engine(&self) -> (Engine, Arc<DurableWal>, Projector) {
        let wal = self.open_wal().await;
        let read_models = ReadModels::open(&self.config)
            .await
            .expect("the read models open");
        let served = ServedEngine::start(
            wal.clone(),
            read_models,
            ProjectorConfig {
                interval: Duration::from_millis(5),
                ..ProjectorConfig::default()
            },
            EngineConfig {
                transfer_window: Some(TEST_WINDOW),
                ..engine_config()
            },
            Arc::new(kizo_engine::SystemClock),
            None,
        )
        .await
        .expect("the engine starts");
        let (engine, projector) = (served.engine, served.projector);
        (engine, wal, projector)
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
            LogStore::Partition(_) => unreachable!("a store opens as one log, not a partition's"),
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

/// The transfer window of [`TestStore::start_engine`]'s engines: one transfer per shard.
pub const TEST_WINDOW: usize = 3;

pub fn engine_config() -> EngineConfig {
    EngineConfig {
        shard_count: 3,
        ..EngineConfig::default()
    }
}

/// The next transfer of a test client's load: a step of a linear congruential generator picks
/// two distinct wallets among `2..wallets + 2` (account 1 funds them) and an amount of 1 to
/// 5,000, on ledger 840, code 1.
pub fn next_load_transfer(seed: &mut u64, id: u128, wallets: u128) -> Transfer {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let debit = 2 + u128::from(*seed >> 33) % wallets;
    let credit = 2 + (debit - 2 + 1 + u128::from(*seed >> 40) % (wallets - 1)) % wallets;
    Transfer::new(
        id,
        debit,
        credit,
        1 + u128::from(*seed >> 50) % 5_000,
        840,
        1,
    )
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

/// Per ledger: posted debits equal posted credits, pending the same; no wallet overdrawn.
pub fn assert_balanced(accounts: &[Account]) {
    let sum = |f: fn(&Account) -> u128| accounts.iter().map(f).sum::<u128>();
    assert_eq!(sum(|a| a.debits_posted), sum(|a| a.credits_posted));
    assert_eq!(sum(|a| a.debits_pending), sum(|a| a.credits_pending));
    for a in accounts {
        if a.flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
        {
            assert!(
                a.debits_posted + a.debits_pending <= a.credits_posted,
                "{a:?}"
            );
        }
    }
}

/// What clients under faults were told.
#[derive(Default)]
pub struct Outcomes {
    /// Acknowledged as created.
    pub created: Vec<Transfer>,
    /// Acknowledged with a failure code.
    pub refused: Vec<Transfer>,
    /// No answer, or `unavailable`: may or may not be applied (never half).
    pub unavailable: Vec<Transfer>,
    /// The slowest `unavailable` answer.
    pub slowest_failure: Duration,
}

impl Outcomes {
    pub fn merge(&mut self, other: Outcomes) {
        self.created.extend(other.created);
        self.refused.extend(other.refused);
        self.unavailable.extend(other.unavailable);
        self.slowest_failure = self.slowest_failure.max(other.slowest_failure);
    }

    pub fn attempted_ids(&self) -> Vec<u128> {
        let all = self
            .created
            .iter()
            .chain(&self.refused)
            .chain(&self.unavailable);
        all.map(|t| t.id).collect()
    }

    /// `found`: the attempted transfers the ledger holds; `accounts`: the funding account 1
    /// and wallets that each got `funding` from it before the clients started. Checks that
    /// every acknowledged transfer is there with its fields, no refused one is, and each
    /// wallet's balances are exactly the sums of the transfers present: nothing lost, nothing
    /// doubled, nothing half-applied.
    pub fn check(&self, found: &[Transfer], accounts: &[Account], funding: u128) {
        let found: HashMap<u128, &Transfer> = found.iter().map(|t| (t.id, t)).collect();
        for sent in &self.created {
            let held = found
                .get(&sent.id)
                .unwrap_or_else(|| panic!("acknowledged transfer {} is missing", sent.id));
            assert_eq!(
                (held.debit_account_id, held.credit_account_id, held.amount),
                (sent.debit_account_id, sent.credit_account_id, sent.amount)
            );
        }
        for sent in &self.refused {
            assert!(
                !found.contains_key(&sent.id),
                "refused transfer {} applied",
                sent.id
            );
        }
        for sent in &self.unavailable {
            if let Some(held) = found.get(&sent.id) {
                assert_eq!(held.amount, sent.amount);
            }
        }
        let mut sums: HashMap<u128, (u128, u128)> = HashMap::new();
        for t in found.values() {
            sums.entry(t.debit_account_id).or_default().0 += t.amount;
            sums.entry(t.credit_account_id).or_default().1 += t.amount;
        }
        assert_balanced(accounts);
        for account in accounts.iter().filter(|a| a.id != 1) {
            let (debits, credits) = sums.get(&account.id).copied().unwrap_or_default();
            assert_eq!(account.debits_posted, debits, "account {}", account.id);
            assert_eq!(
                account.credits_posted,
                credits + funding,
                "account {}",
                account.id
            );
        }
    }
}
