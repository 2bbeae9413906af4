//! The engine through its actors: the same API every caller uses.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kizo_engine::{
    Account, AccountFilter, AccountFlags, CreateAccountResult as A, CreateTransferResult as R,
    Engine, EngineConfig, EngineError, MemoryWal, Transfer, TransferFlags, BATCH_EVENTS_MAX,
};

fn account(id: u128, flags: AccountFlags) -> Account {
    Account {
        flags,
        ..Account::new(id, 1, 1)
    }
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer::new(id, debit, credit, amount, 1, 1)
}

fn config(shard_count: usize) -> EngineConfig {
    EngineConfig {
        shard_count,
        ..EngineConfig::default()
    }
}

use kizo_testkit::ManualClock;

const BANK: u128 = 1;

/// A bank account (no limits) and `wallets` customer wallets with ids 100.., each funded.
async fn funded(engine: &Engine, wallets: u128, funds: u128) {
    let mut accounts = vec![account(BANK, AccountFlags::empty())];
    accounts.extend(
        (0..wallets).map(|i| account(100 + i, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)),
    );
    let results = engine.create_accounts(accounts).await.unwrap();
    assert!(results.iter().all(|r| *r == A::Created));
    let deposits = (0..wallets)
        .map(|i| transfer(1_000_000 + i, BANK, 100 + i, funds))
        .collect();
    let results = engine.create_transfers(deposits).await.unwrap();
    assert!(results.iter().all(|r| *r == R::Created));
}

fn conserved(accounts: &[Account]) {
    let debits: u128 = accounts.iter().map(|a| a.debits_posted).sum();
    let credits: u128 = accounts.iter().map(|a| a.credits_posted).sum();
    assert_eq!(debits, credits, "posted debits equal posted credits");
    let debits: u128 = accounts.iter().map(|a| a.debits_pending).sum();
    let credits: u128 = accounts.iter().map(|a| a.credits_pending).sum();
    assert_eq!(debits, credits, "pending debits equal pending credits");
    for a in accounts {
        if a.flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
        {
            assert!(
                a.debits_pending + a.debits_posted <= a.credits_posted,
                "{a:?}"
            );
        }
    }
}

#[tokio::test]
async fn transfers_lookups_and_history_across_shards() {
    let wal = MemoryWal::new();
    let engine = Engine::start(config(4), wal.clone()).await.unwrap();
    funded(&engine, 8, 1_000).await;
    let results = engine
        .create_transfers(vec![
            transfer(1, 100, 101, 300),
            transfer(2, 101, 102, 1_300),
            transfer(3, 100, 100, 1),
            transfer(1, 100, 101, 300),
        ])
        .await
        .unwrap();
    assert_eq!(
        results,
        vec![
            R::Created,
            R::Created,
            R::AccountsMustBeDifferent,
            R::Exists
        ]
    );
    let accounts = engine.lookup_accounts(vec![102, 100, 999]).await.unwrap();
    assert_eq!(
        accounts.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![102, 100]
    );
    assert_eq!(accounts[0].credits_posted, 2_300);
    assert_eq!(accounts[1].debits_posted, 300);
    let transfers = engine.lookup_transfers(vec![2, 3, 1]).await.unwrap();
    assert_eq!(
        transfers.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![2, 1]
    );
    assert!(transfers[1].timestamp < transfers[0].timestamp);
    // A stamped batch says each created event's timestamp: the first's, plus the index.
    let (results, first) = engine
        .create_transfers_stamped(vec![transfer(4, 100, 101, 1), transfer(5, 101, 100, 1)])
        .await
        .unwrap();
    assert_eq!(results, vec![R::Created, R::Created]);
    let stamped = engine.lookup_transfers(vec![4, 5]).await.unwrap();
    assert_eq!(
        stamped.iter().map(|t| t.timestamp).collect::<Vec<_>>(),
        vec![first, first + 1]
    );
    assert!(first > transfers[0].timestamp);
    let history = engine
        .get_account_transfers(AccountFilter {
            reversed: true,
            ..AccountFilter::all(101, 10)
        })
        .await
        .unwrap();
    assert_eq!(
        history.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![5, 4, 2, 1, 1_000_001]
    );
    // Every message sent to a shard is taken, in time: the mailboxes empty.
    let mut depths = engine.shard_mailbox_depths();
    for _ in 0..100 {
        if depths.iter().all(|&d| d == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        depths = engine.shard_mailbox_depths();
    }
    assert_eq!(depths, vec![0; 4]);
    engine.shutdown().await;
    assert_eq!(
        engine
            .create_transfers(vec![transfer(9, 100, 101, 1)])
            .await,
        Err(EngineError::ShutDown)
    );
}

#[tokio::test]
async fn limits_are_refused_before_any_work() {
    let engine = Engine::start(config(2), MemoryWal::new()).await.unwrap();
    let too_many = vec![transfer(1, 2, 3, 1); BATCH_EVENTS_MAX + 1];
    assert_eq!(
        engine.create_transfers(too_many).await,
        Err(EngineError::BatchTooLarge {
            len: BATCH_EVENTS_MAX + 1,
            max: BATCH_EVENTS_MAX
        })
    );
    assert!(matches!(
        engine.get_account_transfers(AccountFilter::all(1, 0)).await,
        Err(EngineError::InvalidLimit { .. })
    ));
    assert_eq!(engine.create_transfers(Vec::new()).await, Ok(Vec::new()));
    assert!(Engine::start(config(0), MemoryWal::new()).await.is_err());
    engine.shutdown().await;
}

#[tokio::test]
async fn a_restart_rebuilds_every_shard_from_the_log() {
    let wal = MemoryWal::new();
    let engine = Engine::start(config(3), wal.clone()).await.unwrap();
    funded(&engine, 10, 500).await;
    let batch = (0..200)
        .map(|i| transfer(i + 1, 100 + i % 10, 100 + (i + 3) % 10, 7))
        .collect();
    engine.create_transfers(batch).await.unwrap();
    let ids: Vec<u128> = std::iter::once(BANK).chain(100..110).collect();
    let before = engine.lookup_accounts(ids.clone()).await.unwrap();
    let last_ts = engine.lookup_transfers(vec![200]).await.unwrap()[0].timestamp;
    engine.shutdown().await;

    let restarted = Engine::start(config(3), wal.clone()).await.unwrap();
    assert_eq!(restarted.lookup_accounts(ids).await.unwrap(), before);
    // The clock resumes after the log: a new transfer is stamped after every old one.
    restarted
        .create_transfers(vec![transfer(5_000, 100, 101, 1)])
        .await
        .unwrap();
    let new_ts = restarted.lookup_transfers(vec![5_000]).await.unwrap()[0].timestamp;
    assert!(new_ts > last_ts);
    // A retry after the restart is still recognised.
    assert_eq!(
        restarted
            .create_transfers(vec![transfer(1, 100, 103, 7)])
            .await
            .unwrap(),
        vec![R::Exists]
    );
    restarted.shutdown().await;
}

#[tokio::test]
async fn a_failing_log_changes_nothing_and_the_engine_serves_again() {
    let wal = MemoryWal::new();
    let engine = Engine::start(config(2), wal.clone()).await.unwrap();
    funded(&engine, 2, 100).await;
    let before = engine.lookup_accounts(vec![100, 101]).await.unwrap();
    wal.set_failing(true);
    let failed = engine
        .create_transfers(vec![transfer(7, 100, 101, 60)])
        .await;
    assert!(
        matches!(failed, Err(EngineError::Unavailable(_))),
        "{failed:?}"
    );
    assert_eq!(
        engine.lookup_accounts(vec![100, 101]).await.unwrap(),
        before
    );
    assert!(engine.lookup_transfers(vec![7]).await.unwrap().is_empty());
    wal.set_failing(false);
    assert_eq!(
        engine
            .create_transfers(vec![transfer(7, 100, 101, 60)])
            .await
            .unwrap(),
        vec![R::Created]
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_shard_is_restarted_from_the_log() {
    let wal = MemoryWal::new();
    let engine = Engine::start(config(2), wal.clone()).await.unwrap();
    funded(&engine, 4, 100).await;
    let before = engine
        .lookup_accounts(vec![100, 101, 102, 103])
        .await
        .unwrap();
    for shard in 0..2 {
        engine.inject_shard_panic(shard);
        for _ in 0..400 {
            if engine.stats().shard_restarts == shard as u64 + 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(engine.stats().shard_restarts, shard as u64 + 1);
        // Requests in flight during the restart may fail with `unavailable`; none is half
        // applied, and the engine answers again once the shard is back.
        let accounts = until_available(|| engine.lookup_accounts(vec![100, 101, 102, 103])).await;
        assert_eq!(accounts, before);
    }
    let results =
        until_available(|| engine.create_transfers(vec![transfer(5, 100, 101, 10)])).await;
    assert!(matches!(results[0], R::Created | R::Exists));
    engine.shutdown().await;
}

/// Retries `request` while the engine answers `unavailable` (a restart in progress).
async fn until_available<T, F>(request: impl Fn() -> F) -> T
where
    F: std::future::Future<Output = Result<T, EngineError>>,
{
    for _ in 0..400 {
        match request().await {
            Ok(answer) => return answer,
            Err(EngineError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(other) => panic!("{other}"),
        }
    }
    panic!("the engine did not come back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_coordinator_is_restarted_and_resumes_the_clock() {
    let wal = MemoryWal::new();
    let engine = Engine::start(config(2), wal.clone()).await.unwrap();
    funded(&engine, 2, 100).await;
    engine
        .create_transfers(vec![transfer(1, 100, 101, 10)])
        .await
        .unwrap();
    let first = engine.lookup_transfers(vec![1]).await.unwrap()[0];
    engine.inject_coordinator_panic();
    // Requests during the restart may fail with `unavailable`; none is half applied.
    let results =
        until_available(|| engine.create_transfers(vec![transfer(2, 100, 101, 10)])).await;
    assert!(matches!(results[0], R::Created | R::Exists));
    let second = until_available(|| engine.lookup_transfers(vec![2])).await[0];
    assert!(second.timestamp > first.timestamp);
    // The injected panic may land on any message, this one too.
    let wallet = until_available(|| engine.lookup_accounts(vec![100])).await[0];
    assert_eq!(wallet.debits_posted, 20);
    engine.shutdown().await;
}

#[tokio::test]
async fn pending_transfers_expire_on_the_engine_clock() {
    let clock = Arc::new(ManualClock::default());
    clock.0.store(1_000_000_000_000, Ordering::SeqCst);
    let config = EngineConfig {
        expiry_interval: Duration::from_millis(10),
        ..config(2)
    };
    let engine = Engine::start_with_clock(config, MemoryWal::new(), clock.clone())
        .await
        .unwrap();
    funded(&engine, 2, 100).await;
    let hold = Transfer {
        flags: TransferFlags::PENDING,
        timeout: 30,
        ..transfer(1, 100, 101, 80)
    };
    assert_eq!(
        engine.create_transfers(vec![hold]).await.unwrap(),
        vec![R::Created]
    );
    // Held funds cannot be spent twice.
    assert_eq!(
        engine
            .create_transfers(vec![transfer(2, 100, 101, 30)])
            .await
            .unwrap(),
        vec![R::ExceedsCredits]
    );
    clock.0.fetch_add(31_000_000_000, Ordering::SeqCst);
    let mut released = false;
    for _ in 0..500 {
        let wallet = engine.lookup_accounts(vec![100]).await.unwrap()[0];
        if wallet.debits_pending == 0 {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(released, "the hold expired");
    let post = Transfer {
        id: 3,
        pending_id: 1,
        amount: 80,
        flags: TransferFlags::POST_PENDING_TRANSFER,
        ..Transfer::default()
    };
    assert_eq!(
        engine
            .create_transfers(vec![post, transfer(2, 100, 101, 30)])
            .await
            .unwrap(),
        vec![R::PendingTransferExpired, R::IdAlreadyFailed]
    );
    assert_eq!(
        engine
            .create_transfers(vec![transfer(4, 100, 101, 30)])
            .await
            .unwrap(),
        vec![R::Created]
    );
    engine.shutdown().await;
}

/// Many tasks race transfers, linked pairs and two-phase transfers between a few hot wallets
/// on different shards. Nothing is created or destroyed, no wallet is overdrawn, and every
/// balance equals the sum of the transfers that were acknowledged as created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_transfers_between_hot_accounts_conserve_money() {
    const WALLETS: u128 = 6;
    const TASKS: u128 = 64;
    const PER_TASK: u128 = 150;
    let engine = Engine::start(config(4), MemoryWal::new()).await.unwrap();
    funded(&engine, WALLETS, 1_000).await;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let mut created = Vec::new();
            let mut seed = task as u64 * 7919 + 1;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u128
            };
            for n in 0..PER_TASK {
                let id = 10_000_000 + task * 1_000 + n * 2;
                let from = 100 + next() % WALLETS;
                let to = 100 + (from - 100 + 1 + next() % (WALLETS - 1)) % WALLETS;
                let amount = 1 + next() % 400;
                let batch = match n % 3 {
                    0 => vec![transfer(id, from, to, amount)],
                    1 => vec![
                        Transfer {
                            flags: TransferFlags::LINKED,
                            ..transfer(id, from, to, amount)
                        },
                        transfer(id + 1, to, from, amount / 2 + 1),
                    ],
                    _ => vec![
                        Transfer {
                            flags: TransferFlags::PENDING,
                            ..transfer(id, from, to, amount)
                        },
                        Transfer {
                            id: id + 1,
                            pending_id: id,
                            amount: amount / 2,
                            flags: TransferFlags::POST_PENDING_TRANSFER,
                            ..Transfer::default()
                        },
                    ],
                };
                let results = engine.create_transfers(batch.clone()).await.unwrap();
                for (event, result) in batch.iter().zip(results) {
                    if result == R::Created {
                        created.push(event.id);
                    }
                }
            }
            created
        }));
    }
    let mut created = Vec::new();
    for task in tasks {
        created.extend(task.await.unwrap());
    }
    let ids: Vec<u128> = std::iter::once(BANK).chain(100..100 + WALLETS).collect();
    let accounts = engine.lookup_accounts(ids).await.unwrap();
    conserved(&accounts);
    let bank = &accounts[0];
    assert_eq!(bank.debits_posted, 1_000 * WALLETS);
    // Recompute every balance from the acknowledged transfers alone.
    let mut expected: std::collections::BTreeMap<u128, (u128, u128, u128, u128)> =
        Default::default();
    let mut transfers = Vec::new();
    for chunk in created.chunks(BATCH_EVENTS_MAX) {
        transfers.extend(engine.lookup_transfers(chunk.to_vec()).await.unwrap());
    }
    assert_eq!(
        transfers.len(),
        created.len(),
        "every acknowledged transfer exists"
    );
    let by_id: std::collections::HashMap<u128, Transfer> =
        transfers.iter().map(|t| (t.id, *t)).collect();
    for t in &transfers {
        let (dr, cr) = (t.debit_account_id, t.credit_account_id);
        if t.flags.contains(TransferFlags::PENDING) {
            expected.entry(dr).or_default().0 += t.amount;
            expected.entry(cr).or_default().2 += t.amount;
        } else if t.flags.contains(TransferFlags::POST_PENDING_TRANSFER) {
            let held = by_id[&t.pending_id].amount;
            expected.entry(dr).or_default().0 -= held;
            expected.entry(cr).or_default().2 -= held;
            expected.entry(dr).or_default().1 += t.amount;
            expected.entry(cr).or_default().3 += t.amount;
        } else {
            expected.entry(dr).or_default().1 += t.amount;
            expected.entry(cr).or_default().3 += t.amount;
        }
    }
    for wallet in &accounts[1..] {
        let (dp, dpo, cp, cpo) = expected[&wallet.id];
        assert_eq!(
            (
                wallet.debits_pending,
                wallet.debits_posted,
                wallet.credits_pending,
                wallet.credits_posted - 1_000
            ),
            (dp, dpo, cp, cpo),
            "wallet {}",
            wallet.id
        );
    }
    engine.shutdown().await;
}

/// The log fails on and off while many callers submit: every transfer acknowledged as created
/// exists, every one answered with an error does not (this log keeps nothing of a failed
/// append), and money is conserved, across overlapping rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_log_never_half_applies_or_loses_an_acknowledged_transfer() {
    const WALLETS: u128 = 8;
    let wal = MemoryWal::new();
    let engine = Engine::start(config(3), wal.clone()).await.unwrap();
    funded(&engine, WALLETS, 10_000).await;
    let flapper = {
        let wal = wal.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                wal.set_failing(i % 3 == 0);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            wal.set_failing(false);
        })
    };
    let mut tasks = Vec::new();
    for task in 0..32u128 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let (mut created, mut refused) = (Vec::new(), Vec::new());
            for n in 0..60u128 {
                let id = 50_000_000 + task * 1_000 + n;
                let from = 100 + (task + n) % WALLETS;
                let to = 100 + (task + n + 1) % WALLETS;
                match engine
                    .create_transfers(vec![transfer(id, from, to, 1 + n)])
                    .await
                {
                    Ok(results) if results[0] == R::Created => created.push(id),
                    Ok(_) => {}
                    Err(EngineError::Unavailable(_)) => refused.push(id),
                    Err(other) => panic!("{other}"),
                }
            }
            (created, refused)
        }));
    }
    let (mut created, mut refused) = (Vec::new(), Vec::new());
    for task in tasks {
        let (c, r) = task.await.unwrap();
        created.extend(c);
        refused.extend(r);
    }
    flapper.await.unwrap();
    assert!(
        !created.is_empty() && !refused.is_empty(),
        "the log did flap"
    );
    let found = engine.lookup_transfers(created.clone()).await.unwrap();
    assert_eq!(
        found.len(),
        created.len(),
        "every acknowledged transfer exists"
    );
    let found = engine.lookup_transfers(refused.clone()).await.unwrap();
    assert!(
        found.is_empty(),
        "no refused transfer was applied: {found:?}"
    );
    let ids: Vec<u128> = std::iter::once(BANK).chain(100..100 + WALLETS).collect();
    conserved(&engine.lookup_accounts(ids).await.unwrap());
    engine.shutdown().await;
}
