//! Shards with a window of 1 to 100 transfers decide exactly as shards that keep everything:
//! whatever left memory, whatever the filter mistook, however far the store trails.

use proptest::prelude::*;

use crate::local::LocalEngine;
use crate::round::Operation;
use crate::types::{Account, AccountFilter, Transfer, TransferFlags as F, NS_PER_SECOND};

/// One event: a plain, pending, post or void transfer over a few accounts, with ids drawn
/// from a small space so that retries of old ids are common.
fn event() -> impl Strategy<Value = Transfer> {
    (
        1u128..150,
        1u128..=6,
        1u128..=6,
        1u128..50,
        0u8..6,
        1u128..150,
        0u32..3,
    )
        .prop_map(|(id, debit, credit, amount, kind, pending_id, timeout)| {
            let base = Transfer::new(id, debit, credit, amount, 1, 1);
            match kind {
                0 | 1 => base,
                2 => Transfer {
                    flags: F::PENDING,
                    timeout,
                    ..base
                },
                3 => Transfer {
                    pending_id,
                    flags: F::POST_PENDING_TRANSFER,
                    ..Transfer::new(id, 0, 0, 0, 0, 0)
                },
                4 => Transfer {
                    pending_id,
                    flags: F::VOID_PENDING_TRANSFER,
                    ..Transfer::new(id, 0, 0, 0, 0, 0)
                },
                _ => Transfer {
                    amount: 1 << 100,
                    ..base
                },
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_window_never_changes_a_decision(
        window in 1usize..=100,
        shards in 1usize..=3,
        rounds in proptest::collection::vec((proptest::collection::vec(event(), 1..12), 0u8..8), 1..60),
        false_positives in prop_oneof![Just(0u32), Just(500_000u32)],
    ) {
        let mut everything = LocalEngine::new(shards);
        let mut windowed = LocalEngine::with_window(shards, window);
        windowed.hold_store();
        windowed.force_filter_false_positives(false_positives);
        let accounts: Vec<Account> = (1..=6).map(|id| Account::new(id, 1, 1)).collect();
        let t0 = 1_000 * NS_PER_SECOND;
        everything.create_accounts(&accounts, t0);
        windowed.create_accounts(&accounts, t0);
        for (at, (events, lag)) in rounds.into_iter().enumerate() {
            let now = t0 + (at as u64 + 1) * NS_PER_SECOND;
            let operations = vec![Operation::CreateTransfers(events), Operation::Expire];
            let expected = everything.execute(operations.clone(), now);
            let got = windowed.execute(operations, now);
            prop_assert_eq!(&got, &expected);
            // The store trails the log by up to seven commits.
            let last = windowed.commits().len() as u64;
            windowed.project_store(last.saturating_sub(u64::from(lag)));
        }
        let last = windowed.commits().len() as u64;
        windowed.project_store(last);
        prop_assert!(windowed.window_len() <= shards * (window + window / 4 + 1) * 2 + 16);
        prop_assert_eq!(windowed.all_accounts(), everything.all_accounts());
        for id in 1..150u128 {
            prop_assert_eq!(windowed.held_transfer(id), everything.held_transfer(id));
        }
        for account in 1..=6u128 {
            let filter = AccountFilter { reversed: true, ..AccountFilter::all(account, 100) };
            prop_assert_eq!(windowed.account_transfers(&filter), everything.account_transfers(&filter));
        }
    }
}
