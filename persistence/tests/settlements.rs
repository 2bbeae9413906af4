//! Settlements and reconciliation reports, on both stores.

#[macro_use]
mod common;

use common::TestStore;
use kizo_engine::settlement::{Kind, Phase, Settlement, Status};
use kizo_persistence::settlements::{Created, SettlementStore, REPORTS_KEPT};
use kizo_persistence::StoreError;

on_both_backends!(
    a_users_settlements_under_way_are_capped_and_open_ones_counted,
    a_settlement_is_created_once_and_every_transition_is_kept,
    the_latest_of_many_reports_is_served
);

fn withdrawal(id: u128, amount: u64) -> Settlement {
    Settlement::new(
        id,
        Kind::Withdrawal,
        u128::MAX - 1,
        1 << 64,
        840,
        amount,
        1_000,
    )
}

async fn a_settlement_is_created_once_and_every_transition_is_kept(store: TestStore) {
    let settlements = SettlementStore::open(&store.config).await.unwrap();
    let first = withdrawal(u128::MAX - 2, 500);
    assert_eq!(
        settlements.create("user-1", &first, 16).await.unwrap(),
        Created::Created
    );
    // The same id again: the first one is answered, untouched.
    let again = withdrawal(u128::MAX - 2, 999);
    match settlements.create("user-2", &again, 16).await.unwrap() {
        Created::Exists(existing) => {
            assert_eq!(existing.user_id, "user-1");
            assert_eq!(existing.settlement, first);
        }
        other => panic!("{other:?}"),
    }
    let mut moved = first.clone();
    for (phase, at) in [
        (Phase::Send, 1_001),
        (Phase::Check, 1_002),
        (Phase::Settle, 1_003),
    ] {
        let from = moved.clone();
        moved = Settlement {
            phase,
            attempts: u32::from(phase == Phase::Check) + moved.attempts,
            attempts_total: u32::from(phase == Phase::Check) + moved.attempts_total,
            updated_ms: at,
            reason: Some("a reason, kept".into()),
            ..moved
        };
        settlements.save(&from, &moved).await.unwrap();
    }
    let loaded = settlements.load(first.id).await.unwrap().unwrap();
    assert_eq!(loaded.settlement, moved);
    assert_eq!(settlements.unfinished().await.unwrap().len(), 1);
    let done = Settlement {
        phase: Phase::Done(Status::Succeeded),
        updated_ms: 1_004,
        ..moved.clone()
    };
    // A writer that read the settlement before it settled (a worker beside a person
    // resolving) is refused, and what it would have written is not kept.
    let stale_from = Settlement {
        phase: Phase::Check,
        updated_ms: 1_002,
        ..moved.clone()
    };
    let stale = Settlement {
        phase: Phase::Done(Status::Failed),
        updated_ms: 1_004,
        ..moved.clone()
    };
    assert!(matches!(
        settlements.save(&stale_from, &stale).await,
        Err(StoreError::Superseded(_))
    ));
    assert_eq!(
        settlements
            .load(first.id)
            .await
            .unwrap()
            .unwrap()
            .settlement,
        moved
    );
    settlements.save(&moved, &done).await.unwrap();
    // The same step twice: the second finds the first's state and is refused.
    assert!(matches!(
        settlements.save(&moved, &done).await,
        Err(StoreError::Superseded(_))
    ));
    assert!(settlements.unfinished().await.unwrap().is_empty());
    let phases: Vec<String> = settlements
        .transitions(first.id)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, phase, _, _)| phase)
        .collect();
    assert_eq!(phases, ["hold", "send", "check", "settle", "succeeded"]);
    let counts = settlements.count_open().await.unwrap();
    assert_eq!(
        counts,
        [
            (Status::Pending, 0),
            (Status::Processing, 0),
            (Status::NeedsReview, 0)
        ]
    );
    // Saving a settlement that was never created is refused, not silently ignored.
    assert!(matches!(
        settlements.save(&withdrawal(5, 5), &withdrawal(5, 5)).await,
        Err(StoreError::Unavailable(_))
    ));
    assert_eq!(settlements.all(10).await.unwrap().len(), 1);
}

async fn the_latest_of_many_reports_is_served(store: TestStore) {
    let settlements = SettlementStore::open(&store.config).await.unwrap();
    assert_eq!(settlements.latest_report().await.unwrap(), None);
    for at in 0..(REPORTS_KEPT as u64 + 5) {
        settlements
            .keep_report(at, 0, &format!("{{\"at_ms\":{at}}}"))
            .await
            .unwrap();
    }
    let latest = settlements.latest_report().await.unwrap().unwrap();
    assert_eq!(latest, format!("{{\"at_ms\":{}}}", REPORTS_KEPT + 4));
}

async fn a_users_settlements_under_way_are_capped_and_open_ones_counted(store: TestStore) {
    let settlements = SettlementStore::open(&store.config).await.unwrap();
    for id in [1, 2] {
        assert_eq!(
            settlements
                .create("busy", &withdrawal(id, 10), 2)
                .await
                .unwrap(),
            Created::Created
        );
    }
    // A third is over the quota; a retry of one under way is still answered; another user
    // is not held back.
    assert_eq!(
        settlements
            .create("busy", &withdrawal(3, 10), 2)
            .await
            .unwrap(),
        Created::OverQuota
    );
    assert!(matches!(
        settlements
            .create("busy", &withdrawal(2, 10), 2)
            .await
            .unwrap(),
        Created::Exists(_)
    ));
    assert_eq!(
        settlements
            .create("other", &withdrawal(4, 10), 2)
            .await
            .unwrap(),
        Created::Created
    );
    // One finishes (needing review): room for one more.
    let first = withdrawal(1, 10);
    let reviewed = Settlement {
        phase: Phase::Done(Status::NeedsReview),
        updated_ms: 2_000,
        ..first.clone()
    };
    settlements.save(&first, &reviewed).await.unwrap();
    assert_eq!(
        settlements
            .create("busy", &withdrawal(3, 10), 2)
            .await
            .unwrap(),
        Created::Created
    );
    assert_eq!(
        settlements.count_open().await.unwrap(),
        [
            (Status::Pending, 3),
            (Status::Processing, 0),
            (Status::NeedsReview, 1)
        ]
    );
    assert!(settlements.all(10).await.unwrap().len() == 4);
}
