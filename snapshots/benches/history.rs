//! Memory, speed and restart time as history grows, with the server's setup: the log and the
//! read models on PostgreSQL, the projector, the read models as the transfer store, shards with
//! the default window, snapshots that keep what the shards keep.
//!
//! `cargo bench -p kizo-snapshots --bench history -- --transfers 50000000 --accounts 10000
//! --every 5000000 [--database-url URL]` loads batches of 8189 transfers between random
//! accounts (random 128-bit ids) from 4 clients into a fresh schema, and prints, every
//! `--every` transfers: the rate over that stretch, the resident memory, the shards' window
//! and filter, and how far the projector trails. Then: an old transfer sent again (with and
//! without a changed field) inside a batch, against a batch of new ones; the bytes PostgreSQL
//! holds per transfer; a snapshot; and the time to restart from it plus the log after it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kizo_engine::{
    Account, CreateTransferResult, Engine, EngineConfig, SystemClock, Transfer, TransferStore, Wal,
    BATCH_EVENTS_MAX,
};
use kizo_persistence::projector::{Projector, ProjectorConfig};
use kizo_persistence::read_models::ReadModels;
use kizo_persistence::transfer_store::ServedEngine;
use kizo_persistence::{DurableWal, LogStore, StoreConfig, WalConfig};
use kizo_snapshots::{DirBaseline, Policy, SnapshotRetention, Snapshots};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SCHEMA: &str = "kizo_history_bench";
const CLIENTS: u64 = 4;
const SHARDS: usize = 2;

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().ok().expect("a valid value"))
}

/// Resident memory of this process, in bytes.
fn resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The `n`th transfer of client `client`: a random id, two random accounts.
fn transfer(client: u64, n: u64, accounts: u128) -> Transfer {
    let mix = |x: u64| kizo_engine::routing::mix64(x);
    let a = mix(client << 48 ^ n);
    let b = mix(a ^ 0x5eed);
    let id = (u128::from(a) << 64) | u128::from(b);
    let debit = 1 + u128::from(b >> 20) % accounts;
    let credit = 1 + (debit + u128::from(a >> 40) % (accounts - 1)) % accounts;
    Transfer::new(id, debit, credit, 1 + u128::from(a % 100), 1, 1)
}

struct Running {
    engine: Engine,
    projector: Projector,
    store: Arc<dyn TransferStore>,
    wal: Arc<DurableWal>,
}

async fn start(config: &StoreConfig, baseline: Option<Arc<dyn kizo_engine::Baseline>>) -> Running {
    let log = LogStore::open(config).await.expect("the log opens");
    let wal = DurableWal::open(log, WalConfig::default())
        .await
        .expect("the log recovers");
    let ServedEngine {
        engine,
        projector,
        store,
    } = ServedEngine::start(
        wal.clone(),
        ReadModels::open(config)
            .await
            .expect("the read models open"),
        ProjectorConfig::default(),
        EngineConfig {
            shard_count: SHARDS,
            transfer_window: Some(EngineConfig::TRANSFER_WINDOW_DEFAULT),
            ..EngineConfig::default()
        },
        Arc::new(SystemClock),
        baseline,
    )
    .await
    .expect("the engine starts");
    Running {
        engine,
        projector,
        store,
        wal,
    }
}

async fn sql(pool: &sqlx::PgPool, statement: &str) {
    sqlx::query(statement)
        .execute(pool)
        .await
        .expect("the statement runs");
}

fn main() {
    let transfers: u64 = arg("--transfers", 50_000_000);
    let accounts: u128 = arg("--accounts", 10_000);
    let every: u64 = arg("--every", 5_000_000);
    let url: String = arg(
        "--database-url",
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
    );
    let config = StoreConfig::Postgres {
        url: url.clone(),
        schema: Some(SCHEMA.into()),
    };
    let folder =
        tempfile::tempdir_in(std::env::var("KIZO_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .unwrap();
    let snapshot_dir = Arc::new(kizo_snapshots::dir::open(folder.path().join("snapshots")));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let admin = sqlx::PgPool::connect(&url).await.expect("PostgreSQL answers");
        sql(&admin, &format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")).await;
        let running = start(&config, None).await;
        let engine = running.engine.clone();
        let mut created = Vec::new();
        for chunk in (1..=accounts).collect::<Vec<_>>().chunks(BATCH_EVENTS_MAX) {
            let batch: Vec<Account> = chunk.iter().map(|&id| Account::new(id, 1, 1)).collect();
            created.extend(engine.create_accounts(batch).await.unwrap());
        }
        assert!(created.iter().all(|r| *r == kizo_engine::CreateAccountResult::Created));
        println!(
            "| transfers | rate over the stretch | resident | window | filter | projector behind |"
        );
        println!("|---:|---:|---:|---:|---:|---:|");
        let done = Arc::new(AtomicU64::new(0));
        let per_client = transfers / CLIENTS;
        let batches_per_client = per_client.div_ceil(BATCH_EVENTS_MAX as u64);
        let mut clients = Vec::new();
        for client in 0..CLIENTS {
            let (engine, done) = (engine.clone(), done.clone());
            clients.push(tokio::spawn(async move {
                for batch in 0..batches_per_client {
                    let first = batch * BATCH_EVENTS_MAX as u64;
                    let last = per_client.min(first + BATCH_EVENTS_MAX as u64);
                    let events: Vec<Transfer> =
                        (first..last).map(|n| transfer(client, n, accounts)).collect();
                    let results = engine.create_transfers(events).await.unwrap();
                    assert!(results.iter().all(|r| *r == CreateTransferResult::Created));
                    done.fetch_add(last - first, Ordering::Relaxed);
                }
            }));
        }
        let started = Instant::now();
        let mut mark = (0u64, started);
        let total = per_client * CLIENTS;
        let mut rates = Vec::new();
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = done.load(Ordering::Relaxed);
            if now >= mark.0 + every || now == total {
                let elapsed = mark.1.elapsed().as_secs_f64();
                let rate = (now - mark.0) as f64 / elapsed;
                rates.push((now, rate));
                let stats = engine.stats();
                println!(
                    "| {now} | {rate:.0}/s | {:.2} GiB | {} | {:.1} MiB | {} commits |",
                    resident() as f64 / f64::from(1u32 << 30),
                    stats.window_transfers,
                    stats.filter_bytes as f64 / f64::from(1u32 << 20),
                    running
                        .wal
                        .last_lsn()
                        .saturating_sub(running.store.stored_lsn()),
                );
                mark = (now, Instant::now());
            }
            if now == total {
                break;
            }
        }
        for client in clients {
            client.await.unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "\n{total} transfers in {elapsed:.1} s: {:.0}/s overall; fetches {} ({} ids, {} found)",
            total as f64 / elapsed,
            engine.stats().store_fetches,
            engine.stats().store_fetched_ids,
            engine.stats().store_fetch_found,
        );

        // Old duplicates: the first transfer of client 0, sent again inside a batch of new
        // ones, as it was and with another amount, against a batch of new ones alone; timed
        // once the projector has caught up (while it writes the run's last commits, the log's
        // commits queue behind it in PostgreSQL).
        while running.store.stored_lsn() < running.wal.last_lsn() {
            running.store.nudge();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let old = transfer(0, 0, accounts);
        let fresh = |from: u64| -> Vec<Transfer> {
            (from..from + BATCH_EVENTS_MAX as u64 - 1)
                .map(|n| transfer(CLIENTS + 1, n, accounts))
                .collect()
        };
        let timed = |batch: Vec<Transfer>| {
            let engine = engine.clone();
            async move {
                let started = Instant::now();
                let results = engine.create_transfers(batch).await.unwrap();
                (started.elapsed(), results)
            }
        };
        let (new_only, _) = timed(fresh(0)).await;
        let mut with_old = fresh(10_000);
        with_old.push(old);
        let (with_old_time, results) = timed(with_old).await;
        let mut changed = fresh(20_000);
        changed.push(Transfer {
            amount: old.amount + 1,
            ..old
        });
        let (changed_time, changed_results) = timed(changed).await;
        println!(
            "a batch of {} new: {:.1} ms; with the first transfer again: {:.1} ms ({:?}); with its amount changed: {:.1} ms ({:?})",
            BATCH_EVENTS_MAX,
            new_only.as_secs_f64() * 1e3,
            with_old_time.as_secs_f64() * 1e3,
            results.last().unwrap(),
            changed_time.as_secs_f64() * 1e3,
            changed_results.last().unwrap(),
        );
        assert_eq!(*results.last().unwrap(), CreateTransferResult::Exists);
        assert_eq!(
            *changed_results.last().unwrap(),
            CreateTransferResult::ExistsWithDifferentAmount
        );

        // What PostgreSQL holds, per transfer.
        let size = |table: &'static str| {
            let admin = admin.clone();
            async move {
                let bytes: i64 = sqlx::query_scalar(&format!(
                    "SELECT pg_total_relation_size('{SCHEMA}.{table}')"
                ))
                .fetch_one(&admin)
                .await
                .unwrap();
                bytes as f64
            }
        };
        let stored = total as f64;
        let (log, transfers_table, postings, accounts_table, failed) = (
            size("wal_frames").await,
            size("transfers").await,
            size("account_postings").await,
            size("accounts").await,
            size("failed_transfers").await,
        );
        println!(
            "PostgreSQL: log {:.0} B/transfer, transfers read model {:.0} B/transfer (with indexes) and histories {:.0} B/transfer, accounts {:.1} MiB, failed ids {:.1} MiB",
            log / stored,
            transfers_table / stored,
            postings / stored,
            accounts_table / f64::from(1u32 << 20),
            failed / f64::from(1u32 << 20),
        );

        // A snapshot, then a restart from it plus the log after it.
        running.projector.progress_handle().nudge();
        let snapshots = Snapshots::start(kizo_snapshots::actor::SnapshotArgs {
            clock: Arc::new(SystemClock),
            retention: SnapshotRetention::Window {
                shard_count: SHARDS,
                window: EngineConfig::TRANSFER_WINDOW_DEFAULT,
                store: running.store.clone(),
            },
            dir: snapshot_dir.clone(),
            wal: running.wal.clone(),
            engine: engine.clone(),
            policy: Policy {
                every_records: u64::MAX,
                every: Duration::from_secs(86_400),
                ..Policy::default()
            },
        })
        .await
        .unwrap();
        let snapshot_started = Instant::now();
        let taken = snapshots.take_now(Duration::from_secs(3_600)).await.unwrap();
        println!(
            "snapshot at LSN {}: {:.1} MiB, {} transfers, {} filters, written in {:.1} s",
            taken.manifest.lsn,
            taken.manifest.bytes as f64 / f64::from(1u32 << 20),
            taken.manifest.transfers,
            taken.manifest.filters,
            snapshot_started.elapsed().as_secs_f64()
        );
        engine
            .create_transfers((0..1_000).map(|n| transfer(CLIENTS + 2, n, accounts)).collect())
            .await
            .unwrap();
        engine.shutdown().await;
        running.projector.stop().await;
        drop(running);
        let restart_started = Instant::now();
        let baseline: Arc<dyn kizo_engine::Baseline> = Arc::new(DirBaseline(snapshot_dir));
        let restarted = start(&config, Some(baseline)).await;
        restarted.engine.lookup_accounts(vec![1]).await.unwrap();
        println!(
            "restart from the snapshot and the log after it: {:.2} s; resident after {:.2} GiB",
            restart_started.elapsed().as_secs_f64(),
            resident() as f64 / f64::from(1u32 << 30)
        );
        let again = restarted.engine.create_transfers(vec![old]).await.unwrap();
        assert_eq!(again, vec![CreateTransferResult::Exists]);
        restarted.engine.shutdown().await;
        restarted.projector.stop().await;
        let first = rates.first().map_or(0.0, |r| r.1);
        let last = rates.last().map_or(0.0, |r| r.1);
        println!("rate of the last stretch against the first: {:.0}%", 100.0 * last / first);
        if std::env::var("KIZO_BENCH_KEEP").is_err() {
            sql(&admin, &format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")).await;
        }
    });
}
