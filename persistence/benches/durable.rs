//! Durable throughput and recovery speed: `cargo bench -p kizo-persistence --bench durable
//! [-- --backend postgres|embedded|both --transfers N --single-transfers N --tasks N]`.
//!
//! 10,000 funded wallets, transfers between two random wallets (about half of them across
//! shards), every commit durable in the store before it is answered. Three figures per
//! backend: batches of 8189 from 8 clients; one transfer per call from `--tasks` (256) tasks,
//! with latency percentiles; and recovery (a fresh engine replaying the whole log).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kizo_engine::{
    Account, AccountFlags, CreateTransferResult, Engine, EngineConfig, Transfer, BATCH_EVENTS_MAX,
};
use kizo_persistence::{DurableWal, LogStore, StoreConfig, WalConfig, WalStats};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WALLETS: u128 = 10_000;
const BANK: u128 = WALLETS + 1;

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().ok().expect("a valid value"))
}

/// Transfers between two random wallets; their ids are random 128-bit numbers (as the
/// gateway's UUIDs are), so the log holds realistic, incompressible ids.
fn transfers(count: usize, mut seed: u64) -> Vec<Transfer> {
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed
    };
    (0..count)
        .map(|_| {
            let id = (u128::from(next()) << 64) | u128::from(next());
            let r = next();
            let debit = 1 + u128::from(r >> 33) % WALLETS;
            let credit = 1 + (debit + u128::from(r >> 45) % (WALLETS - 1)) % WALLETS;
            Transfer::new(id, debit, credit, 1 + u128::from(r >> 58), 1, 1)
        })
        .collect()
}

async fn start(config: &StoreConfig) -> (Engine, Arc<DurableWal>, Duration) {
    let store = LogStore::open(config).await.expect("the store opens");
    let wal = DurableWal::open(store, WalConfig::default())
        .await
        .expect("the log opens");
    let started = Instant::now();
    let engine = Engine::start(EngineConfig::default(), wal.clone())
        .await
        .expect("the engine starts");
    (engine, wal, started.elapsed())
}

/// Frames written between two readings, their mean size and mean time to encode and write.
fn flushes(before: WalStats, after: WalStats) -> String {
    let flushes = (after.flushes - before.flushes).max(1);
    format!(
        "{} flushes of {:.0} KiB in {:.2} ms on average",
        after.flushes - before.flushes,
        (after.flushed_bytes - before.flushed_bytes) as f64 / flushes as f64 / 1024.0,
        (after.flush_ns - before.flush_ns) as f64 / flushes as f64 / 1e6,
    )
}

async fn setup(engine: &Engine) {
    let mut accounts: Vec<Account> = (1..=WALLETS)
        .map(|id| Account {
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            ..Account::new(id, 1, 1)
        })
        .collect();
    accounts.push(Account::new(BANK, 1, 1));
    for chunk in accounts.chunks(BATCH_EVENTS_MAX) {
        engine.create_accounts(chunk.to_vec()).await.unwrap();
    }
    let funding: Vec<Transfer> = (1..=WALLETS)
        .map(|id| Transfer::new(u128::MAX - id, BANK, id, 1 << 40, 1, 1))
        .collect();
    for chunk in funding.chunks(BATCH_EVENTS_MAX) {
        engine.create_transfers(chunk.to_vec()).await.unwrap();
    }
}

/// `clients` tasks take `batch` transfers at a time and submit them in a closed loop; returns
/// the seconds taken and each call's latency.
async fn drive(
    engine: &Engine,
    transfers: Vec<Transfer>,
    clients: usize,
    batch: usize,
) -> (f64, Vec<Duration>) {
    let transfers = Arc::new(transfers);
    let cursor = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (engine, transfers, cursor) = (engine.clone(), transfers.clone(), cursor.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let from = cursor.fetch_add(batch, Ordering::Relaxed);
                if from >= transfers.len() {
                    break latencies;
                }
                let to = (from + batch).min(transfers.len());
                let sent = Instant::now();
                let results = engine
                    .create_transfers(transfers[from..to].to_vec())
                    .await
                    .expect("submit");
                latencies.push(sent.elapsed());
                assert!(results.iter().all(|r| *r == CreateTransferResult::Created));
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    (started.elapsed().as_secs_f64(), latencies)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1e3
}

async fn run(name: &str, config: StoreConfig, batched: usize, single: usize, tasks: usize) {
    println!("{name}: {}", config.describe());
    let (engine, wal, _) = start(&config).await;
    setup(&engine).await;
    let before = engine.stats();
    let wal_before = wal.stats();
    let (seconds, _) = drive(&engine, transfers(batched, 42), 8, BATCH_EVENTS_MAX).await;
    let after = engine.stats();
    println!(
        "  batches of 8189, 8 clients      {batched:>9} transfers {seconds:>6.2} s {:>9.0} transfers/s ({:.0} transfers per commit; {})",
        batched as f64 / seconds,
        batched as f64 / (after.commits - before.commits) as f64,
        flushes(wal_before, wal.stats()),
    );
    let before = engine.stats();
    let wal_before = wal.stats();
    let (seconds, mut latencies) = drive(&engine, transfers(single, 7), tasks, 1).await;
    let after = engine.stats();
    latencies.sort();
    println!(
        "  one per call, {tasks} tasks       {single:>9} transfers {seconds:>6.2} s {:>9.0} transfers/s ({:.0} transfers per commit; {}), latency p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.2} ms",
        single as f64 / seconds,
        single as f64 / (after.commits - before.commits) as f64,
        flushes(wal_before, wal.stats()),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        percentile(&latencies, 1.0),
    );
    let records = engine.stats().records;
    engine.shutdown().await;
    drop(wal);
    let (engine, _, took) = start(&config).await;
    println!(
        "  recovery                        {records:>9} records   {:>6.2} s {:>9.0} records/s",
        took.as_secs_f64(),
        records as f64 / took.as_secs_f64()
    );
    engine.shutdown().await;
}

fn main() {
    let backend: String = arg("--backend", "both".to_string());
    let batched = arg("--transfers", 1_000_000);
    let single = arg("--single-transfers", 200_000);
    let tasks = arg("--tasks", 256);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        if backend == "postgres" || backend == "both" {
            let url = std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let schema = format!("bench_{}", std::process::id());
            let config = StoreConfig::Postgres {
                url: url.clone(),
                schema: Some(schema.clone()),
            };
            run("postgres", config, batched, single, tasks).await;
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&pool)
                .await
                .unwrap();
        }
        if backend == "embedded" || backend == "both" {
            let dir = tempfile::tempdir().expect("a folder for the embedded store");
            let config = StoreConfig::Embedded {
                dir: dir.path().to_path_buf(),
            };
            run("embedded", config, batched, single, tasks).await;
        }
    });
}
