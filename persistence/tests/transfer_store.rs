//! The read models as the transfer store answer exactly what the store of the pure crate
//! answers (`kizo_ledger::store::MemoryStore`, the one statement of what a lookup by id and an
//! account filter return), on both backends, over a random ledger's commits.

#[macro_use]
mod common;

use std::sync::Arc;

use common::TestStore;
use kizo_engine::local::LocalEngine;
use kizo_engine::round::Operation;
use kizo_engine::store::{MemoryStore, Stored};
use kizo_engine::{Account, AccountFilter, Transfer, TransferFlags};
use kizo_persistence::projection::Projection;
use kizo_persistence::read_models::{Direction, ReadModels};

on_both_backends!(the_read_models_answer_as_the_memory_store);

/// A step of a linear congruential generator.
fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *seed >> 33
}

async fn the_read_models_answer_as_the_memory_store(store: TestStore) {
    let mut engine = LocalEngine::new(2);
    let accounts: Vec<Account> = (1..=5).map(|id| Account::new(id, 840, 1)).collect();
    let t0 = 1_000_000_000_000;
    engine.create_accounts(&accounts, t0);
    let mut seed = 7;
    for round in 1..=40u64 {
        let events: Vec<Transfer> = (0..20)
            .map(|_| {
                let id = 1 + u128::from(next(&mut seed) % 600);
                let (debit, credit) = (
                    1 + u128::from(next(&mut seed) % 5),
                    1 + u128::from(next(&mut seed) % 5),
                );
                let amount = 1 + u128::from(next(&mut seed) % 100);
                let base = Transfer::new(id, debit, credit, amount, 840, 1);
                match next(&mut seed) % 6 {
                    0 => Transfer {
                        flags: TransferFlags::PENDING,
                        timeout: (next(&mut seed) % 3) as u32,
                        ..base
                    },
                    1 => Transfer {
                        pending_id: 1 + u128::from(next(&mut seed) % 600),
                        flags: TransferFlags::POST_PENDING_TRANSFER,
                        ..Transfer::new(id, 0, 0, 0, 0, 0)
                    },
                    2 => Transfer {
                        pending_id: 1 + u128::from(next(&mut seed) % 600),
                        flags: TransferFlags::VOID_PENDING_TRANSFER,
                        ..Transfer::new(id, 0, 0, 0, 0, 0)
                    },
                    3 => Transfer {
                        amount: 1 << 120,
                        ..base
                    },
                    _ => base,
                }
            })
            .collect();
        let now = t0 + round * 1_000_000_000;
        engine.execute(
            vec![Operation::CreateTransfers(events), Operation::Expire],
            now,
        );
    }
    let commits: Vec<Arc<kizo_engine::Commit>> =
        engine.commits().iter().cloned().map(Arc::new).collect();
    let mut memory = MemoryStore::default();
    for commit in &commits {
        memory.project(commit);
    }
    let read_models = ReadModels::open(&store.config).await.unwrap();
    // Small steps, then one large one: an account's history spans many posting rows, some
    // of them full.
    let (small, large) = commits.split_at(commits.len() / 2);
    for chunk in small.chunks(7).chain([large]) {
        read_models
            .apply("test", &Projection::of(chunk))
            .await
            .unwrap();
    }

    let ids: Vec<u128> = (1..=600).collect();
    let sorted = |mut stored: Vec<Stored>| {
        stored.sort_by_key(Stored::id);
        stored
    };
    let expected = sorted(memory.fetch(&ids));
    assert!(expected.iter().any(|s| matches!(s, Stored::Failed(..))));
    assert!(expected
        .iter()
        .any(|s| matches!(s, Stored::Transfer(_, Some(_)))));
    assert_eq!(sorted(read_models.stored(&ids).await.unwrap()), expected);

    let timestamps: Vec<u64> = engine.commits().iter().map(|c| c.timestamp_max).collect();
    assert_histories(&read_models, &memory, &timestamps).await;
    read_models.close().await;

    // A store from before posting lists gets its histories from `transfers` when it migrates.
    if let kizo_persistence::StoreConfig::Postgres { url, schema } = &store.config {
        let schema = schema.as_deref().unwrap();
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        for statement in [
            format!("DELETE FROM {schema}.account_postings"),
            format!("DELETE FROM {schema}._sqlx_migrations WHERE version = 10"),
        ] {
            sqlx::query(&statement).execute(&pool).await.unwrap();
        }
        pool.close().await;
        let read_models = ReadModels::open(&store.config).await.unwrap();
        assert_histories(&read_models, &memory, &timestamps).await;
        read_models.close().await;
    }
}

/// Every account's history, through account filters and the wallet's pages, is the memory
/// store's.
async fn assert_histories(read_models: &ReadModels, memory: &MemoryStore, timestamps: &[u64]) {
    for account_id in 1..=6u128 {
        for case in 0..16u64 {
            let pick = |at: u64| timestamps[(at as usize) % timestamps.len()];
            let filter = AccountFilter {
                account_id,
                timestamp_min: if case % 2 == 0 { 0 } else { pick(case * 3) },
                timestamp_max: if case % 3 == 0 {
                    0
                } else {
                    pick(case * 5 + 20)
                },
                limit: [1, 7, 100, 8189][(case % 4) as usize],
                debits: case % 5 != 1,
                credits: case % 5 != 2,
                reversed: case % 2 == 1,
            };
            assert_eq!(
                read_models.filtered_transfers(&filter).await.unwrap(),
                memory.account_transfers(&filter),
                "{filter:?}"
            );
        }
        // The wallet's pages, newest first, each before the last one's timestamp.
        for (direction, debits, credits) in [
            (Direction::All, true, true),
            (Direction::Sent, true, false),
            (Direction::Received, false, true),
        ] {
            let (mut before, mut pages) = (None, 0);
            loop {
                let page = read_models
                    .account_transfers(account_id, direction, before, 9)
                    .await
                    .unwrap();
                let filter = AccountFilter {
                    account_id,
                    timestamp_min: 0,
                    timestamp_max: before.map_or(0, |t| t - 1),
                    limit: 9,
                    debits,
                    credits,
                    reversed: true,
                };
                let page: Vec<Transfer> = page.into_iter().map(|row| row.transfer).collect();
                assert_eq!(page, memory.account_transfers(&filter), "{filter:?}");
                match page.last() {
                    Some(last) => before = Some(last.timestamp),
                    None => break,
                }
                pages += 1;
            }
            assert!(
                account_id == 6 || pages > 3,
                "account {account_id}: {pages} pages"
            );
        }
    }
}

/// A store written before the read models kept failed ids: its projector writes them from the
/// log before it says how far it got, so that no failed id is let go of unstored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_ids_of_an_older_store_are_written_from_the_log() {
    use kizo_engine::Wal;
    use kizo_persistence::projector::{Projector, ProjectorConfig};
    let store = TestStore::postgres("failed_ids_backfill");
    let (engine, wal, projector) = store.start_engine().await;
    engine.create_accounts(common::accounts(2)).await.unwrap();
    let results = engine
        .create_transfers(vec![
            common::transfer(10, 2, 3, 1_000_000), // more than wallet 2 holds
            common::transfer(11, 1, 2, 5),
            common::transfer(12, 3, 2, 1_000_000),
        ])
        .await
        .unwrap();
    assert_eq!(
        results[0],
        kizo_engine::CreateTransferResult::ExceedsCredits
    );
    assert!(
        projector
            .wait_for(wal.last_lsn(), std::time::Duration::from_secs(10))
            .await
    );
    engine.shutdown().await;
    projector.stop().await;
    // As the store was before: no failed ids, no marker.
    let kizo_persistence::StoreConfig::Postgres { url, schema } = &store.config else {
        unreachable!()
    };
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let schema = schema.as_deref().unwrap();
    for statement in [
        format!("DELETE FROM {schema}.failed_transfers"),
        format!("DELETE FROM {schema}.projector_progress WHERE name LIKE '%#failed'"),
    ] {
        sqlx::query(&statement).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let read_models = ReadModels::open(&store.config).await.unwrap();
    assert!(read_models.stored(&[10, 12]).await.unwrap().is_empty());
    let projector = Projector::start(wal.clone(), read_models.clone(), ProjectorConfig::default())
        .await
        .unwrap();
    let stored = read_models.stored(&[10, 11, 12]).await.unwrap();
    let failed: Vec<u128> = stored
        .iter()
        .filter_map(|s| match s {
            Stored::Failed(id, _) => Some(*id),
            Stored::Transfer(..) => None,
        })
        .collect();
    assert_eq!(failed.len(), 2, "{stored:?}");
    projector.stop().await;
    // Once written, not again.
    let projector = Projector::start(wal.clone(), read_models.clone(), ProjectorConfig::default())
        .await
        .unwrap();
    assert_eq!(read_models.stored(&[10, 12]).await.unwrap().len(), 2);
    projector.stop().await;
}
