//! Start-up from a baseline image: the shards build from it and replay only the log after it;
//! an image that does not add up is refused and the log alone is replayed.

use std::sync::{Arc, Mutex};

use kizo_engine::local::LocalEngine;
use kizo_engine::{
    Account, AccountFlags, Baseline, CreateTransferResult, Engine, EngineConfig, LedgerImage,
    MemoryWal, SystemClock, Transfer, Wal,
};

/// Hands out one image, once per load.
struct Fixed(Mutex<Option<LedgerImage>>);

impl Baseline for Fixed {
    fn load(&self, _: u64) -> Result<Option<LedgerImage>, kizo_engine::engine::BaselineError> {
        Ok(self.0.lock().unwrap().clone())
    }
}

/// An engine with a bank and three wallets, paid in the log; returns its log and the image
/// after its first `cut` commits.
async fn ledger(cut: u64) -> (Arc<MemoryWal>, LedgerImage, Vec<Account>) {
    let wal = MemoryWal::new();
    let engine = Engine::start(EngineConfig::default(), wal.clone())
        .await
        .unwrap();
    let mut accounts = vec![Account::new(1, 1, 1)];
    accounts.extend((2..=4).map(|id| Account {
        flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        ..Account::new(id, 1, 1)
    }));
    engine.create_accounts(accounts).await.unwrap();
    for id in 2..=4u128 {
        let results = engine
            .create_transfers(vec![Transfer::new(id * 10, 1, id, 100 * id, 1, 1)])
            .await
            .unwrap();
        assert_eq!(results, vec![CreateTransferResult::Created]);
    }
    let state = engine.lookup_accounts(vec![1, 2, 3, 4]).await.unwrap();
    engine.shutdown().await;
    let commits: Vec<_> = wal.commits().iter().map(|c| (**c).clone()).collect();
    let image = LocalEngine::recover(1, &commits[..cut as usize]).image();
    (wal, image, state)
}

/// An engine on `wal` that starts from `image` (and what the log holds after it).
async fn start_from(wal: &Arc<MemoryWal>, image: LedgerImage) -> Engine {
    let baseline = Arc::new(Fixed(Mutex::new(Some(image))));
    Engine::start_from(
        EngineConfig::default(),
        wal.clone(),
        Arc::new(SystemClock),
        Some(baseline),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn the_engine_starts_from_the_image_and_the_log_after_it() {
    let (wal, image, state) = ledger(2).await;
    assert_eq!(image.lsn, 2);
    let engine = start_from(&wal, image).await;
    assert_eq!(
        engine.lookup_accounts(vec![1, 2, 3, 4]).await.unwrap(),
        state
    );
    let retry = engine
        .create_transfers(vec![Transfer::new(20, 1, 2, 200, 1, 1)])
        .await
        .unwrap();
    assert_eq!(retry, vec![CreateTransferResult::Exists]);
    engine.shutdown().await;
}

#[tokio::test]
async fn an_image_that_does_not_add_up_is_refused_for_the_log() {
    let (wal, mut image, state) = ledger(3).await;
    // Balances swapped between two wallets: the ledger's totals still agree, so only the
    // shards, deriving each balance from its transfers, can tell.
    let (a, b) = (
        image.accounts[1].credits_posted,
        image.accounts[2].credits_posted,
    );
    image.accounts[1].credits_posted = b;
    image.accounts[2].credits_posted = a;
    assert_eq!(image.check_structure(), Ok(()));
    assert!(image.check().is_err());
    let engine = start_from(&wal, image).await;
    assert_eq!(
        engine.lookup_accounts(vec![1, 2, 3, 4]).await.unwrap(),
        state
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn an_image_of_another_log_is_refused() {
    let (wal, _, state) = ledger(3).await;
    let (_, mut other, _) = ledger(3).await;
    other.timestamp_max += 1; // not this log's commit 3
    assert!(other.lsn <= wal.last_lsn());
    let engine = start_from(&wal, other).await;
    assert_eq!(
        engine.lookup_accounts(vec![1, 2, 3, 4]).await.unwrap(),
        state
    );
    engine.shutdown().await;
}
