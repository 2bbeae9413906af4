//! The restart test, with the server's setup (the durable log, the read models fed by the
//! projector as the transfer store, shards with a window, snapshots that keep what the shards
//! keep): a million transfers, a snapshot by the snapshot actor, more transfers, a kill (the
//! runtime dropped mid-flight, nothing shut down), and a restart from the snapshot and the log
//! after it. The restarted engine holds exactly what the uninterrupted run acknowledged, and
//! what the whole log alone rebuilds; old ids are still known, through the store.

use std::sync::{Arc, Mutex};

use kizo_engine::{
    Account, AccountFlags, Baseline, CreateTransferResult, Engine, EngineConfig, LedgerImage,
    SystemClock, Transfer, TransferFlags, Wal, BATCH_EVENTS_MAX,
};
use kizo_persistence::projector::ProjectorConfig;
use kizo_persistence::read_models::ReadModels;
use kizo_persistence::transfer_store::ServedEngine;
use kizo_persistence::{DurableWal, LogStore, StoreConfig, WalConfig};
use kizo_snapshots::{
    rebuild, Base, DirBaseline, Policy, Retention, SnapshotDir, Snapshots, Target,
};

const WALLETS: u64 = 10_000;
const BANK: u128 = 1;
/// The shards' window: a hundredth of the transfers before the snapshot.
const WINDOW: usize = 10_000;

/// `KIZO_RESTART_TRANSFERS` overrides the million (for a quick local run).
fn transfers_before_snapshot() -> u64 {
    std::env::var("KIZO_RESTART_TRANSFERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn wallet(i: u64) -> u128 {
    1_000 + u128::from(i % WALLETS)
}

/// Transfer `id`: the first `WALLETS` fund each wallet from the bank; then payments between
/// wallets, every tenth a pending transfer that the next one posts (or, every hundredth, voids).
fn transfer(id: u64) -> Transfer {
    let base = |from: u128, to: u128, amount: u128| {
        Transfer::new(u128::from(id), from, to, amount, 840, 1)
    };
    if id <= WALLETS {
        return base(BANK, wallet(id), 1_000_000_000);
    }
    let (from, to) = (wallet(id * 7), wallet(id * 13 + 1));
    let to = if from == to { wallet(id * 13 + 2) } else { to };
    match id % 10 {
        1 if id - 1 <= WALLETS => base(from, to, 1),
        0 => Transfer {
            flags: TransferFlags::PENDING,
            ..base(from, to, 5)
        },
        1 => Transfer {
            id: u128::from(id),
            pending_id: u128::from(id - 1),
            flags: if id % 100 == 1 {
                TransferFlags::VOID_PENDING_TRANSFER
            } else {
                TransferFlags::POST_PENDING_TRANSFER
            },
            amount: if id % 100 == 1 {
                0
            } else {
                kizo_engine::POST_WHOLE_PENDING_AMOUNT
            },
            ..Transfer::default()
        },
        _ => base(from, to, u128::from(id % 50 + 1)),
    }
}

async fn run_transfers(engine: &Engine, ids: std::ops::RangeInclusive<u64>) {
    let ids: Vec<u64> = ids.collect();
    // Batches one after the other: a post must come after its pending transfer.
    for chunk in ids.chunks(BATCH_EVENTS_MAX) {
        let batch: Vec<Transfer> = chunk.iter().map(|&id| transfer(id)).collect();
        let results = engine
            .create_transfers(batch)
            .await
            .expect("the engine answers");
        assert!(
            results.iter().all(|r| *r == CreateTransferResult::Created),
            "{:?}",
            results
                .iter()
                .find(|r| **r != CreateTransferResult::Created)
        );
    }
}

async fn open_log(store: &StoreConfig) -> Arc<DurableWal> {
    let log = LogStore::open(store).await.expect("the store opens");
    DurableWal::open(log, WalConfig::default())
        .await
        .expect("the log opens")
}

/// The engine as a server starts it: the read models, fed by their projector, are its store.
async fn start(
    store: &StoreConfig,
    config: &EngineConfig,
    baseline: Option<Arc<dyn Baseline>>,
) -> (Engine, Arc<DurableWal>, Arc<dyn kizo_engine::TransferStore>) {
    let wal = open_log(store).await;
    let served = ServedEngine::start(
        wal.clone(),
        ReadModels::open(store).await.unwrap(),
        ProjectorConfig::default(),
        config.clone(),
        Arc::new(SystemClock),
        baseline,
    )
    .await
    .unwrap();
    let (engine, transfer_store) = (served.engine, served.store);
    (engine, wal, transfer_store)
}

async fn all_accounts(engine: &Engine) -> Vec<Account> {
    let ids: Vec<u128> = std::iter::once(BANK)
        .chain((0..WALLETS).map(wallet))
        .collect();
    let mut accounts = Vec::new();
    for chunk in ids.chunks(BATCH_EVENTS_MAX) {
        accounts.extend(engine.lookup_accounts(chunk.to_vec()).await.unwrap());
    }
    accounts
}

/// The real baseline, remembering the LSN of the image it gave.
struct Watched(DirBaseline, Arc<Mutex<Vec<u64>>>);

impl Baseline for Watched {
    fn load(
        &self,
        log_last_lsn: u64,
    ) -> Result<Option<LedgerImage>, kizo_engine::engine::BaselineError> {
        let image = self.0.load(log_last_lsn)?;
        self.1
            .lock()
            .unwrap()
            .push(image.as_ref().map_or(0, |i| i.lsn));
        Ok(image)
    }
}

#[test]
fn a_restart_from_a_snapshot_equals_the_run_that_never_stopped() {
    let folder = tempfile::tempdir().unwrap();
    // PostgreSQL: its projector keeps up with the engine in a debug build (the embedded
    // store's, writing a row at a time, would hold the window's rounds back for minutes).
    let test_store = kizo_testkit::TestStore::postgres("snapshot_restart");
    let store = test_store.config.clone();
    let snapshot_dir = Arc::new(kizo_snapshots::dir::open(folder.path().join("snapshots")));
    let before = transfers_before_snapshot();
    let after = before / 10;
    let config = EngineConfig {
        shard_count: 2,
        transfer_window: Some(WINDOW),
        ..EngineConfig::default()
    };

    // The first run, killed at the end.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (acknowledged, snapshot_lsn) = runtime.block_on(async {
        let (engine, wal, transfer_store) = start(&store, &config, None).await;
        let mut accounts = vec![Account::new(BANK, 840, 1)];
        accounts.extend((0..WALLETS).map(|i| Account {
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            ..Account::new(wallet(i), 840, 2)
        }));
        for chunk in accounts.chunks(BATCH_EVENTS_MAX) {
            engine.create_accounts(chunk.to_vec()).await.unwrap();
        }
        run_transfers(&engine, 1..=before).await;
        // The snapshot leaves out what the store holds: let the projector catch up first.
        while transfer_store.stored_lsn() < wal.last_lsn() {
            transfer_store.nudge();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let snapshots = Snapshots::start(kizo_snapshots::actor::SnapshotArgs {
            clock: std::sync::Arc::new(kizo_engine::SystemClock),
            retention: kizo_snapshots::SnapshotRetention::Window {
                shard_count: 2,
                window: WINDOW,
                store: transfer_store.clone(),
            },
            dir: snapshot_dir.clone(),
            wal: wal.clone(),
            engine: engine.clone(),
            policy: Policy {
                every_records: u64::MAX,
                every: std::time::Duration::from_secs(3600),
                ..Policy::default()
            },
        })
        .await
        .unwrap();
        let taken = snapshots
            .take_now(std::time::Duration::from_secs(600))
            .await
            .unwrap();
        assert!(taken.written);
        // What the shards keep, not the history: the window (and a chunk more per shard) and
        // the pending transfers; and the filters.
        assert!(
            taken.manifest.transfers < 2 * WINDOW as u64,
            "{} transfers in the snapshot",
            taken.manifest.transfers
        );
        assert_eq!(taken.manifest.filters, 2);
        run_transfers(&engine, before + 1..=before + after).await;
        (all_accounts(&engine).await, taken.manifest.lsn)
    });
    // The kill: every task dropped where it stands; only what the log made durable remains.
    runtime.shutdown_background();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let loads = Arc::new(Mutex::new(Vec::new()));
        let baseline = Watched(DirBaseline(snapshot_dir.clone()), loads.clone());
        let (engine, wal, transfer_store) = start(&store, &config, Some(Arc::new(baseline))).await;
        assert_eq!(
            *loads.lock().unwrap(),
            vec![snapshot_lsn],
            "started from the snapshot"
        );
        assert_eq!(all_accounts(&engine).await, acknowledged);

        // The whole log alone rebuilds the same ledger as the snapshot and the tail (the one
        // holds every transfer, the other what the shards keep).
        let from_log = rebuild(
            None::<Arc<SnapshotDir>>,
            wal.as_ref(),
            Target::Latest,
            Base::LogOnly,
            Retention::Everything,
            |_, _| {},
        )
        .await
        .unwrap();
        let from_snapshot = rebuild(
            Some(snapshot_dir.clone()),
            wal.as_ref(),
            Target::Latest,
            Base::BestSnapshot,
            Retention::Window {
                shard_count: 2,
                window: WINDOW,
                stored_lsn: transfer_store.stored_lsn(),
            },
            |_, _| {},
        )
        .await
        .unwrap();
        assert_eq!(
            from_snapshot.base,
            Some(kizo_snapshots::dir::snapshot_name(snapshot_lsn))
        );
        assert_eq!(from_snapshot.replayed, wal.last_lsn() - snapshot_lsn);
        assert!(
            from_log.image.accounts == from_snapshot.image.accounts,
            "the two rebuilds differ"
        );
        assert_eq!(from_log.image.check(), Ok(()));
        assert_eq!(from_snapshot.image.check(), Ok(()));
        assert_eq!(from_log.image.accounts, acknowledged);

        // And it carries on: old ids are known (before and after the snapshot), new ones land.
        let retries = vec![transfer(5), transfer(before + 7)];
        let results = engine.create_transfers(retries).await.unwrap();
        assert_eq!(results, vec![CreateTransferResult::Exists; 2]);
        run_transfers(&engine, before + after + 1..=before + after + 100).await;
        let history = engine
            .get_account_transfers(kizo_engine::AccountFilter::all(wallet(3), 10))
            .await
            .unwrap();
        assert_eq!(
            history[0].id, 3,
            "a wallet's history starts with its funding"
        );
        engine.shutdown().await;
    });
}
