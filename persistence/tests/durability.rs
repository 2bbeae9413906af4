//! The write-ahead log on each backend: the same tests run on PostgreSQL and on the embedded
//! store.

#[macro_use]
mod common;

use std::time::Duration;

use common::{accounts, assert_balanced, transfer, TestStore, LEDGER};
use kizo_engine::{
    AccountFilter, CreateAccountResult, CreateTransferResult, Engine, EngineError, Record,
    Transfer, TransferFlags, Wal, WalError,
};
use kizo_persistence::projection::TransferStatus;
use kizo_persistence::projector::{Projector, ProjectorConfig};
use kizo_persistence::read_models::{Direction, ReadModels};
use kizo_persistence::WalConfig;

on_both_backends!(
    acknowledged_changes_survive_a_restart,
    queued_commits_are_flushed_as_one_frame,
    an_append_on_a_stale_state_is_refused,
    a_damaged_frame_stops_the_start_naming_its_lsn,
    a_gap_in_the_log_stops_the_start,
    the_projector_feeds_the_read_models_and_resumes_after_a_restart,
    the_read_models_keep_every_value_exactly,
);

async fn acknowledged_changes_survive_a_restart(store: TestStore) {
    let (engine, _wal, projector) = store.start_engine().await;
    let created = engine.create_accounts(accounts(4)).await.unwrap();
    assert!(created.iter().all(|r| *r == CreateAccountResult::Created));
    let pending = Transfer {
        flags: TransferFlags::PENDING,
        timeout: 3600,
        ..transfer(13, 1, 3, 700)
    };
    let post = Transfer {
        flags: TransferFlags::POST_PENDING_TRANSFER,
        pending_id: 13,
        amount: 500,
        ..transfer(14, 0, 0, 0)
    };
    let results = engine
        .create_transfers(vec![
            transfer(10, 1, 2, 1_000),
            transfer(11, 2, 3, 400),
            transfer(12, 3, 2, 9_999), // more than wallet 3 holds
            pending,
            post,
        ])
        .await
        .unwrap();
    use CreateTransferResult::*;
    assert_eq!(
        results,
        vec![Created, Created, ExceedsCredits, Created, Created]
    );
    let ids: Vec<u128> = (1..=5).collect();
    let before = engine.lookup_accounts(ids.clone()).await.unwrap();
    let history = engine
        .get_account_transfers(AccountFilter::all(2, 10))
        .await
        .unwrap();
    let last_timestamp = engine.lookup_transfers(vec![14]).await.unwrap()[0].timestamp;
    engine.shutdown().await;
    projector.stop().await;

    let (engine, _wal, projector) = store.start_engine().await;
    assert_eq!(engine.lookup_accounts(ids).await.unwrap(), before);
    assert_balanced(&before);
    let again = engine
        .get_account_transfers(AccountFilter::all(2, 10))
        .await
        .unwrap();
    assert_eq!(again, history);
    // Retries answer as the first time: created ones exist, the failed one stays failed.
    let retried = engine
        .create_transfers(vec![transfer(10, 1, 2, 1_000), transfer(12, 3, 2, 9_999)])
        .await
        .unwrap();
    assert_eq!(retried, vec![Exists, IdAlreadyFailed]);
    engine
        .create_transfers(vec![transfer(15, 1, 4, 5)])
        .await
        .unwrap();
    let next = engine.lookup_transfers(vec![15]).await.unwrap()[0];
    assert!(
        next.timestamp > last_timestamp,
        "the clock resumes after the log"
    );
    engine.shutdown().await;
    projector.stop().await;
}

fn commit_records(id: u128) -> Vec<Record> {
    vec![Record::TransferCreated(transfer(id, 1, 2, 1))]
}

async fn queued_commits_are_flushed_as_one_frame(store: TestStore) {
    let wal = store
        .open_wal_with(WalConfig {
            flush_wait_max: Duration::from_millis(200),
            ..WalConfig::default()
        })
        .await;
    let waits: Vec<_> = (1..=3)
        .map(|lsn| wal.append(lsn, lsn, commit_records(lsn.into())))
        .collect();
    for (lsn, wait) in (1..=3).zip(waits) {
        assert_eq!(wait.await.unwrap().unwrap().lsn, lsn);
    }
    assert_eq!(wal.last_lsn(), 3);
    let frames = wal.store().read_frames(1, 3, 10).await.unwrap();
    assert_eq!(frames.len(), 1, "one flush, one frame");
    assert_eq!((frames[0].first_lsn, frames[0].last_lsn), (1, 3));

    // Read back from the store by a fresh log (nothing in memory).
    drop(wal);
    let wal = store.open_wal().await;
    let commits = wal.read(2, 3).await.unwrap();
    assert_eq!(
        commits.iter().map(|c| c.lsn).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(commits[1].records, commit_records(3));
    assert!(matches!(
        wal.read(2, 4).await,
        Err(WalError::Missing { .. })
    ));
}

async fn an_append_on_a_stale_state_is_refused(store: TestStore) {
    let wal = store.open_wal().await;
    wal.append(1, 1, commit_records(1)).await.unwrap().unwrap();
    let refused = wal.append(1, 2, commit_records(2)).await.unwrap();
    assert_eq!(refused, Err(WalError::OutOfSequence { lsn: 1, next: 2 }));
    let refused = wal.append(3, 2, commit_records(3)).await.unwrap();
    assert_eq!(refused, Err(WalError::OutOfSequence { lsn: 3, next: 2 }));
    assert_eq!(wal.last_lsn(), 1);
    assert_eq!(
        wal.append(2, 2, commit_records(2))
            .await
            .unwrap()
            .unwrap()
            .lsn,
        2
    );
}

/// Three commits, each in a frame of its own.
async fn three_frames(store: &TestStore) {
    let (engine, _wal, projector) = store.start_engine().await;
    engine.create_accounts(accounts(2)).await.unwrap();
    engine
        .create_transfers(vec![transfer(10, 1, 2, 5)])
        .await
        .unwrap();
    engine
        .create_transfers(vec![transfer(11, 1, 3, 5)])
        .await
        .unwrap();
    engine.shutdown().await;
    projector.stop().await;
}

async fn start_error(store: &TestStore) -> String {
    let wal = store.open_wal().await;
    match Engine::start(common::engine_config(), wal).await {
        Ok(_) => panic!("the engine started on a damaged log"),
        Err(EngineError::Start(message)) => message,
        Err(other) => panic!("unexpected error {other}"),
    }
}

async fn a_damaged_frame_stops_the_start_naming_its_lsn(store: TestStore) {
    three_frames(&store).await;
    let frames = store
        .open_wal()
        .await
        .store()
        .read_frames(2, 2, 1)
        .await
        .unwrap();
    let mut bytes = frames[0].bytes.clone();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    store
        .execute(
            "UPDATE wal_frames SET frame = $1 WHERE first_lsn = 2",
            Some(bytes),
        )
        .await;
    let message = start_error(&store).await;
    assert!(message.contains("LSN 2"), "{message}");
    assert!(message.contains("checksum"), "{message}");
}

async fn a_gap_in_the_log_stops_the_start(store: TestStore) {
    three_frames(&store).await;
    store
        .execute("DELETE FROM wal_frames WHERE first_lsn = 2", None)
        .await;
    let message = start_error(&store).await;
    assert!(message.contains("LSN 2"), "{message}");
    assert!(message.contains("gap"), "{message}");
}

async fn the_projector_feeds_the_read_models_and_resumes_after_a_restart(store: TestStore) {
    let (engine, wal, projector) = store.start_engine().await;
    // This test drives projectors of its own over the same tables: the engine's stops before
    // anything is committed (the engine then keeps every transfer: its store never moves).
    projector.stop().await;
    engine.create_accounts(accounts(3)).await.unwrap();
    let pending = |id, timeout| Transfer {
        flags: TransferFlags::PENDING,
        timeout,
        ..transfer(id, 2, 3, 300)
    };
    let results = engine
        .create_transfers(vec![
            transfer(10, 1, 2, 1_000),
            pending(11, 0),
            pending(12, 0),
            Transfer {
                flags: TransferFlags::POST_PENDING_TRANSFER,
                pending_id: 11,
                amount: 200,
                ..transfer(13, 0, 0, 0)
            },
            Transfer {
                flags: TransferFlags::VOID_PENDING_TRANSFER,
                pending_id: 12,
                ..transfer(14, 0, 0, 0)
            },
            transfer(15, 2, 4, 9_999), // fails: not projected
        ])
        .await
        .unwrap();
    assert_eq!(results[5], CreateTransferResult::ExceedsCredits);

    let config = ProjectorConfig {
        name: "test".into(),
        interval: Duration::from_millis(20),
        commits_per_step: 1,
    };
    let read_models = ReadModels::open(&store.config).await.unwrap();
    let projector = Projector::start(wal.clone(), read_models.clone(), config.clone())
        .await
        .unwrap();
    assert!(
        projector
            .wait_for(wal.last_lsn(), Duration::from_secs(10))
            .await
    );
    projector.stop().await;
    assert_read_models_match(&engine, &read_models).await;

    let status = |id| {
        let read_models = read_models.clone();
        async move { read_models.transfer(id).await.unwrap().unwrap().status }
    };
    assert_eq!(status(10).await, TransferStatus::Posted);
    assert_eq!(status(11).await, TransferStatus::Posted);
    assert_eq!(status(12).await, TransferStatus::Voided);
    assert_eq!(status(13).await, TransferStatus::Posted);
    assert!(read_models.transfer(15).await.unwrap().is_none());

    // More commits while the projector is stopped; a new one resumes where it stopped.
    let more: Vec<Transfer> = (20..40).map(|id| transfer(id, 1, 2 + id % 3, 7)).collect();
    engine.create_transfers(more).await.unwrap();
    engine
        .create_transfers(vec![transfer(40, 2, 3, 1)])
        .await
        .unwrap();
    // A pending transfer resolved by a later commit: found by id in a later projection.
    engine.create_transfers(vec![pending(41, 0)]).await.unwrap();
    let voided = engine
        .create_transfers(vec![Transfer {
            flags: TransferFlags::VOID_PENDING_TRANSFER,
            pending_id: 41,
            ..transfer(42, 0, 0, 0)
        }])
        .await
        .unwrap();
    assert_eq!(voided, [CreateTransferResult::Created]);
    let projector = Projector::start(wal.clone(), read_models.clone(), config)
        .await
        .unwrap();
    assert!(
        projector
            .wait_for(wal.last_lsn(), Duration::from_secs(10))
            .await
    );
    projector.stop().await;
    assert_eq!(read_models.progress("test").await.unwrap(), wal.last_lsn());
    assert_read_models_match(&engine, &read_models).await;
    assert_eq!(status(41).await, TransferStatus::Voided);
    assert_eq!(status(42).await, TransferStatus::Voided);

    // History, newest first, paged by timestamp.
    let page = read_models
        .account_transfers(2, Direction::All, None, 5)
        .await
        .unwrap();
    assert_eq!(page[0].transfer.id, 42);
    assert!(page
        .windows(2)
        .all(|w| w[0].transfer.timestamp > w[1].transfer.timestamp));
    let next = read_models
        .account_transfers(2, Direction::All, Some(page[4].transfer.timestamp), 100)
        .await
        .unwrap();
    let engine_history = read_models
        .filtered_transfers(&AccountFilter {
            reversed: true,
            ..AccountFilter::all(2, 100)
        })
        .await
        .unwrap();
    let ids: Vec<u128> = page
        .iter()
        .chain(&next)
        .map(|row| row.transfer.id)
        .collect();
    let expected: Vec<u128> = engine_history.iter().map(|t| t.id).collect();
    assert_eq!(ids, expected);
    let sent = read_models
        .account_transfers(2, Direction::Sent, None, 100)
        .await
        .unwrap();
    assert!(sent.iter().all(|row| row.transfer.debit_account_id == 2));
    assert!(!sent.is_empty());
    engine.shutdown().await;
    projector.stop().await;
}

/// Every account's balances and every transfer of its history in the read models equal the
/// engine's.
async fn assert_read_models_match(engine: &Engine, read_models: &ReadModels) {
    let ids: Vec<u128> = (1..=4).collect();
    let accounts = engine.lookup_accounts(ids).await.unwrap();
    assert_balanced(&accounts);
    for account in &accounts {
        assert_eq!(
            read_models.account(account.id).await.unwrap().as_ref(),
            Some(account)
        );
        let history = read_models
            .filtered_transfers(&AccountFilter::all(account.id, 1000))
            .await
            .unwrap();
        let ids: Vec<u128> = history.iter().map(|t| t.id).collect();
        assert_eq!(engine.lookup_transfers(ids).await.unwrap(), history);
        for transfer in history {
            let row = read_models.transfer(transfer.id).await.unwrap().unwrap();
            assert_eq!(row.transfer, transfer);
            assert_eq!(row.transfer.ledger, LEDGER);
        }
    }
}

/// Every column's extremes survive the read models' bulk insert (PostgreSQL's binary `COPY`:
/// base-10000 NUMERIC digits with zeros inside and at the end, the largest u128 and u64, a
/// null pending id beside a set one), and so do balance changes up and down (binary NUMERIC
/// parameters with a sign).
async fn the_read_models_keep_every_value_exactly(store: TestStore) {
    use kizo_engine::{Account, AccountFlags};
    use kizo_persistence::projection::{BalanceChange, Change, Projection, TransferRow};
    let read_models = ReadModels::open(&store.config).await.unwrap();
    let amounts = [
        u128::MAX,
        1,
        10_000,
        100_000_000_000,
        100_000_000_000_000_000_001,
        10u128.pow(38),
    ];
    let accounts: Vec<(Account, u64)> = amounts
        .iter()
        .enumerate()
        .map(|(i, &amount)| {
            let account = Account {
                id: u128::MAX - i as u128,
                debits_pending: amount,
                debits_posted: amount / 3,
                credits_pending: 0,
                credits_posted: amount / 7,
                user_data_128: amount,
                user_data_64: u64::MAX - i as u64,
                user_data_32: u32::MAX,
                ledger: u32::MAX,
                code: u16::MAX,
                flags: AccountFlags::CLOSED | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
                timestamp: i64::MAX as u64 - i as u64,
            };
            (account, 7 + i as u64)
        })
        .collect();
    let transfers: Vec<TransferRow> = amounts
        .iter()
        .enumerate()
        .map(|(i, &amount)| TransferRow {
            transfer: Transfer {
                id: 1 + i as u128,
                debit_account_id: u128::MAX,
                credit_account_id: u128::MAX - 1,
                amount,
                pending_id: if i % 2 == 0 { 0 } else { u128::MAX - 5 },
                user_data_128: amount,
                user_data_64: u64::MAX,
                user_data_32: u32::MAX,
                timeout: u32::MAX,
                ledger: u32::MAX,
                code: u16::MAX,
                flags: TransferFlags::PENDING,
                // Growing, as the log's are (the histories rely on it).
                timestamp: i64::MAX as u64 - 100 + i as u64,
            },
            status: [
                TransferStatus::Posted,
                TransferStatus::Pending,
                TransferStatus::Voided,
                TransferStatus::Expired,
            ][i % 4],
            lsn: 7,
        })
        .collect();
    let projection = Projection {
        first_lsn: 1,
        last_lsn: 7,
        accounts: accounts.clone(),
        transfers: transfers.clone(),
        ..Projection::default()
    };
    read_models.apply("values", &projection).await.unwrap();
    for (account, _) in &accounts {
        assert_eq!(
            read_models.account(account.id).await.unwrap(),
            Some(*account)
        );
    }
    for row in &transfers {
        assert_eq!(
            read_models.transfer(row.transfer.id).await.unwrap(),
            Some(*row)
        );
    }
    // Balances moved both ways, by amounts up to u128::MAX, and not at all.
    let mut balances = std::collections::BTreeMap::new();
    let mut expected = Vec::new();
    for (account, _) in &accounts {
        let a = account;
        let change = BalanceChange {
            debits_pending: Change {
                plus: 0,
                minus: a.debits_pending - 1,
            },
            debits_posted: Change {
                plus: a.debits_pending - a.debits_posted,
                minus: 0,
            },
            credits_pending: Change::default(),
            credits_posted: Change {
                plus: 10_000,
                minus: 10_000 + a.credits_posted,
            },
        };
        balances.insert(a.id, change);
        expected.push(Account {
            debits_pending: change.debits_pending.apply(a.debits_pending),
            debits_posted: change.debits_posted.apply(a.debits_posted),
            credits_pending: change.credits_pending.apply(a.credits_pending),
            credits_posted: change.credits_posted.apply(a.credits_posted),
            ..*a
        });
    }
    let moved = Projection {
        first_lsn: 8,
        last_lsn: 8,
        balances,
        ..Projection::default()
    };
    read_models.apply("values", &moved).await.unwrap();
    for account in &expected {
        assert_eq!(
            read_models.account(account.id).await.unwrap(),
            Some(*account)
        );
    }
}
