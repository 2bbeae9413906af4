//! Restart time as a function of the log's length, with and without a snapshot.
//!
//! `cargo bench -p kizo-snapshots --bench restart -- --transfers 1000000 --steps 4` writes
//! that many transfers (batches of 8189, between 100,000 wallets) through the engine onto the
//! embedded store in `steps` equal steps; after each step it takes a snapshot, then measures
//! how long an engine takes to start (until it answers a lookup) from the log alone and from
//! the snapshot plus the log after it, with the log after the snapshot as long as one step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kizo_engine::{
    Account, AccountFlags, Baseline, Engine, EngineConfig, SystemClock, Transfer, BATCH_EVENTS_MAX,
};
use kizo_persistence::{DurableWal, LogStore, StoreConfig, WalConfig};
use kizo_snapshots::{DirBaseline, Policy, Snapshots};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

const WALLETS: u64 = 100_000;

async fn open(store: &StoreConfig) -> Arc<DurableWal> {
    let log = LogStore::open(store).await.unwrap();
    DurableWal::open(log, WalConfig::default()).await.unwrap()
}

/// Starts an engine and waits until it answers; returns the time taken.
async fn start_time(store: &StoreConfig, baseline: Option<Arc<dyn Baseline>>) -> Duration {
    let started = Instant::now();
    let wal = open(store).await;
    let config = EngineConfig {
        shard_count: 2,
        ..EngineConfig::default()
    };
    let engine = Engine::start_from(config, wal, Arc::new(SystemClock), baseline)
        .await
        .unwrap();
    engine.lookup_accounts(vec![1]).await.unwrap();
    let elapsed = started.elapsed();
    engine.shutdown().await;
    elapsed
}

fn main() {
    let transfers = arg("--transfers", 1_000_000);
    let steps = arg("--steps", 4).max(1);
    let folder =
        tempfile::tempdir_in(std::env::var("KIZO_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .unwrap();
    let store = StoreConfig::Embedded {
        dir: folder.path().join("store"),
    };
    let dir = Arc::new(kizo_snapshots::dir::open(folder.path().join("snapshots")));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "| transfers in the log | start from the log alone | start from a snapshot + the last {} transfers |",
        transfers / steps
    );
    println!("|---:|---:|---:|");
    runtime.block_on(async {
        let wal = open(&store).await;
        let engine = Engine::start(EngineConfig::default(), wal.clone())
            .await
            .unwrap();
        let mut accounts = vec![Account::new(1, 840, 1)];
        accounts.extend((0..WALLETS).map(|i| Account {
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            ..Account::new(10 + u128::from(i), 840, 2)
        }));
        for chunk in accounts.chunks(BATCH_EVENTS_MAX) {
            engine.create_accounts(chunk.to_vec()).await.unwrap();
        }
        let snapshots = Snapshots::start(kizo_snapshots::actor::SnapshotArgs {
            clock: std::sync::Arc::new(kizo_engine::SystemClock),
            retention: kizo_snapshots::SnapshotRetention::Everything,
            dir: dir.clone(),
            wal: wal.clone(),
            engine: engine.clone(),
            policy: Policy {
                every_records: u64::MAX,
                every: Duration::from_secs(86_400),
                ..Policy::default()
            },
        })
        .await
        .unwrap();
        let per_step = transfers / steps;
        let mut next = 1u64;
        for step in 1..=steps {
            let end = next + per_step;
            let mut batches = Vec::new();
            while next < end {
                let batch: Vec<Transfer> = (next..(next + BATCH_EVENTS_MAX as u64).min(end))
                    .map(|id| {
                        Transfer::new(u128::from(id), 1, 10 + u128::from(id % WALLETS), 1, 840, 1)
                    })
                    .collect();
                next += batch.len() as u64;
                batches.push(engine.create_transfers(batch));
                if batches.len() == 4 {
                    for batch in batches.drain(..) {
                        batch.await.unwrap();
                    }
                }
            }
            for batch in batches {
                batch.await.unwrap();
            }
            let log_alone = start_time(&store, None).await;
            let from_snapshot = if step > 1 {
                let baseline: Arc<dyn Baseline> = Arc::new(DirBaseline(dir.clone()));
                format!(
                    "{:.2} s",
                    start_time(&store, Some(baseline)).await.as_secs_f64()
                )
            } else {
                "(no snapshot yet)".into()
            };
            println!(
                "| {} | {:.2} s | {from_snapshot} |",
                step * per_step,
                log_alone.as_secs_f64()
            );
            snapshots.take_now(Duration::from_secs(3600)).await.unwrap();
        }
        snapshots.stop();
        engine.shutdown().await;
    });
}
