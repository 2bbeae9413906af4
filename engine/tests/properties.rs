//! Property tests of the ledger invariants over random batches: linked chains, two-phase
//! transfers, expiry, retries and invalid events, with accounts spread across shards.

use std::collections::BTreeMap;

use kizo_engine::local::LocalEngine;
use kizo_engine::round::{Operation, Outcome};
use kizo_engine::{
    Account, AccountFlags, CreateAccountResult, CreateTransferResult, Transfer, TransferFlags,
    POST_WHOLE_PENDING_AMOUNT,
};
use proptest::prelude::*;

const ACCOUNTS: u128 = 12;

/// Cases per property: 200 by default (CI), more with `KIZO_PROPTEST_CASES` for a long soak.
fn cases() -> u32 {
    std::env::var("KIZO_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}
const SECOND: u64 = 1_000_000_000;

fn accounts() -> Vec<Account> {
    (1..=ACCOUNTS)
        .map(|id| Account {
            id,
            ledger: if id <= 9 { 1 } else { 2 },
            code: 1,
            flags: match id % 4 {
                0 => AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                1 => AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
                _ => AccountFlags::empty(),
            },
            ..Account::default()
        })
        .collect()
}

fn flags() -> impl Strategy<Value = TransferFlags> {
    prop_oneof![
        6 => Just(TransferFlags::empty()),
        2 => Just(TransferFlags::LINKED),
        3 => Just(TransferFlags::PENDING),
        1 => Just(TransferFlags::PENDING | TransferFlags::LINKED),
        3 => Just(TransferFlags::POST_PENDING_TRANSFER),
        1 => Just(TransferFlags::POST_PENDING_TRANSFER | TransferFlags::LINKED),
        2 => Just(TransferFlags::VOID_PENDING_TRANSFER),
        1 => Just(TransferFlags::BALANCING_DEBIT),
        1 => Just(TransferFlags::BALANCING_CREDIT),
        1 => Just(TransferFlags::PENDING | TransferFlags::POST_PENDING_TRANSFER),
        1 => Just(TransferFlags(1 << 10)),
    ]
}

fn account_id() -> impl Strategy<Value = u128> {
    prop_oneof![18 => 1..=9u128, 3 => 10..=ACCOUNTS, 1 => Just(0u128), 1 => Just(ACCOUNTS + 1)]
}

/// A transfer whose `id` and `pending_id` are relative: `id` 0 asks for a fresh id and `n` for
/// the id used `n` events ago (a retry); `pending_id` is how many ids back the pending one is.
/// [`Ids::resolve`] turns them into real ids.
fn transfer() -> impl Strategy<Value = Transfer> {
    (
        prop_oneof![6 => Just(0u128), 1 => 1..20u128],
        account_id(),
        account_id(),
        prop_oneof![16 => 1..300u128, 1 => Just(0u128), 1 => Just(POST_WHOLE_PENDING_AMOUNT)],
        flags(),
        prop_oneof![8 => 1..6u128, 1 => Just(0u128)],
        prop_oneof![3 => Just(0u32), 1 => 1..4u32],
        prop_oneof![12 => Just(1u32), 1 => Just(2u32)],
    )
        .prop_map(
            |(id, debit, credit, amount, flags, pending_back, timeout, ledger)| {
                let resolves = flags.contains(TransferFlags::POST_PENDING_TRANSFER)
                    || flags.contains(TransferFlags::VOID_PENDING_TRANSFER);
                let ledger = if debit > 9 { ledger + 1 } else { ledger };
                Transfer {
                    id,
                    debit_account_id: if resolves { 0 } else { debit },
                    credit_account_id: if resolves { 0 } else { credit },
                    amount: if resolves && amount == 1 { 0 } else { amount },
                    pending_id: if resolves { pending_back } else { 0 },
                    timeout: if flags.contains(TransferFlags::PENDING) {
                        timeout
                    } else {
                        0
                    },
                    ledger: if resolves { 0 } else { ledger.min(2) },
                    code: if resolves { 0 } else { 1 },
                    flags,
                    ..Transfer::default()
                }
            },
        )
}

#[derive(Default)]
struct Ids(Vec<u128>);

impl Ids {
    fn resolve(&mut self, operations: &mut [Operation]) {
        for operation in operations {
            let Operation::CreateTransfers(events) = operation else {
                continue;
            };
            for e in events {
                let back = e.id as usize;
                e.id = if back == 0 || back > self.0.len() {
                    10_000 + self.0.len() as u128
                } else {
                    self.0[self.0.len() - back]
                };
                self.0.push(e.id);
                if e.pending_id != 0 {
                    let back = e.pending_id as usize;
                    e.pending_id = self.0[self.0.len().saturating_sub(back + 1)];
                }
            }
        }
    }
}

/// A round: one or more operations (callers' batches coalesced), after some time passed.
fn round() -> impl Strategy<Value = (u64, Vec<Operation>)> {
    let operation = prop_oneof![
        8 => prop::collection::vec(transfer(), 1..12).prop_map(Operation::CreateTransfers),
        1 => Just(Operation::Expire),
    ];
    (0..3 * SECOND, prop::collection::vec(operation, 1..4))
}

fn check_invariants(engine: &LocalEngine) {
    let mut sums: BTreeMap<u32, [u128; 4]> = BTreeMap::new();
    for a in engine.all_accounts() {
        // Sums wrap: single balances near u128::MAX are legal, their total need not fit.
        let sum = sums.entry(a.ledger).or_default();
        for (total, balance) in sum.iter_mut().zip([
            a.debits_pending,
            a.debits_posted,
            a.credits_pending,
            a.credits_posted,
        ]) {
            *total = total.wrapping_add(balance);
        }
        if a.flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
        {
            assert!(
                a.debits_pending + a.debits_posted <= a.credits_posted,
                "{a:?}"
            );
        }
        if a.flags
            .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
        {
            assert!(
                a.credits_pending + a.credits_posted <= a.debits_posted,
                "{a:?}"
            );
        }
    }
    for (ledger, [dp, dpo, cp, cpo]) in sums {
        assert_eq!(
            dp, cp,
            "ledger {ledger}: pending debits equal pending credits"
        );
        assert_eq!(
            dpo, cpo,
            "ledger {ledger}: posted debits equal posted credits"
        );
    }
}

fn transfer_results(outcome: &Outcome) -> Option<&[CreateTransferResult]> {
    match outcome {
        Outcome::Transfers(results) => Some(results),
        _ => None,
    }
}

fn setup(shards: usize, now: u64) -> LocalEngine {
    fund(LocalEngine::new(shards), now)
}

/// Funds every account from the unlimited account of its ledger (2 or 11).
fn funding() -> Vec<Transfer> {
    (1..=ACCOUNTS)
        .filter(|&id| id != 2 && id != 11)
        .map(|id| Transfer {
            id: 1_000 + id,
            debit_account_id: if id <= 9 { 2 } else { 11 },
            credit_account_id: id,
            amount: 500,
            ledger: if id <= 9 { 1 } else { 2 },
            code: 1,
            ..Transfer::default()
        })
        .collect()
}

fn fund(mut engine: LocalEngine, now: u64) -> LocalEngine {
    let results = engine.create_accounts(&accounts(), now);
    assert!(results.iter().all(|r| *r == CreateAccountResult::Created));
    engine.create_transfers(&funding(), now);
    engine.settle();
    engine
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn invariants_hold_and_retries_are_exists(rounds in prop::collection::vec(round(), 1..25)) {
        let mut now = 1_000 * SECOND;
        let mut engine = setup(3, now);
        let mut ids = Ids::default();
        check_invariants(&engine);
        for (elapsed, mut operations) in rounds {
            ids.resolve(&mut operations);
            now += elapsed;
            let outcomes = engine.execute(operations.clone(), now);
            check_invariants(&engine);
            // Replay every batch of the round: each event that was created is `exists`.
            let replay: Vec<Operation> = operations
                .iter()
                .filter(|op| matches!(op, Operation::CreateTransfers(_)))
                .cloned()
                .collect();
            if replay.is_empty() {
                continue;
            }
            let first: Vec<&[CreateTransferResult]> =
                outcomes.iter().filter_map(transfer_results).collect();
            let again = engine.execute(replay, now);
            check_invariants(&engine);
            for (before, after) in first.iter().zip(again.iter().filter_map(transfer_results)) {
                for (b, a) in before.iter().zip(after) {
                    if *b == CreateTransferResult::Created {
                        prop_assert_eq!(*a, CreateTransferResult::Exists);
                    }
                }
            }
        }
    }

    /// Sharding is invisible: one shard and five shards give the same results and balances,
    /// and a restart from the log (with any shard count) rebuilds the same state.
    #[test]
    fn shard_count_does_not_change_any_outcome(rounds in prop::collection::vec(round(), 1..20)) {
        let mut now = 1_000 * SECOND;
        let mut single = setup(1, now);
        let mut sharded = setup(5, now);
        let mut ids = Ids::default();
        for (elapsed, mut operations) in rounds {
            ids.resolve(&mut operations);
            now += elapsed;
            let a = single.execute(operations.clone(), now);
            let b = sharded.execute(operations, now);
            prop_assert_eq!(a, b);
        }
        prop_assert_eq!(single.all_accounts(), sharded.all_accounts());
        let recovered = LocalEngine::recover(2, sharded.commits());
        prop_assert_eq!(recovered.all_accounts(), sharded.all_accounts());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// An image taken at any commit passes its own check, and a restart from it plus the log
    /// after it (with another shard count) is the same ledger as the one that never stopped:
    /// same image, and the same outcomes for whatever comes next (retries of old ids, posts
    /// and voids of old pending transfers, expiries that fall due later).
    #[test]
    fn a_restart_from_an_image_continues_as_if_never_stopped(
        rounds in prop::collection::vec(round(), 2..20),
        later in prop::collection::vec(round(), 1..6),
        cut in any::<prop::sample::Index>(),
        shards_before in 1..5usize,
        shards_after in 1..5usize,
    ) {
        let mut now = 1_000 * SECOND;
        let mut engine = setup(shards_before, now);
        let mut ids = Ids::default();
        let cut = cut.index(rounds.len());
        let mut image = engine.image();
        for (i, (elapsed, mut operations)) in rounds.into_iter().enumerate() {
            ids.resolve(&mut operations);
            now += elapsed;
            engine.execute(operations, now);
            if i == cut {
                image = engine.image();
            }
        }
        prop_assert_eq!(image.check(), Ok(()));
        prop_assert_eq!(engine.image().check(), Ok(()));
        let mut restarted = LocalEngine::recover_from(shards_after, Some(&image), engine.commits());
        prop_assert_eq!(restarted.image(), engine.image());
        for (elapsed, mut operations) in later {
            ids.resolve(&mut operations);
            now += elapsed;
            let a = engine.execute(operations.clone(), now);
            let b = restarted.execute(operations, now);
            prop_assert_eq!(a, b);
        }
        prop_assert_eq!(restarted.image(), engine.image());
    }

    /// A balance that its transfers do not explain is caught by the image's check.
    #[test]
    fn a_tampered_image_fails_its_check(
        rounds in prop::collection::vec(round(), 1..12),
        victim in any::<prop::sample::Index>(),
        delta in 1..1_000u128,
    ) {
        let mut now = 1_000 * SECOND;
        let mut engine = setup(3, now);
        let mut ids = Ids::default();
        for (elapsed, mut operations) in rounds {
            ids.resolve(&mut operations);
            now += elapsed;
            engine.execute(operations, now);
        }
        let mut image = engine.image();
        let at = victim.index(image.accounts.len());
        image.accounts[at].credits_posted ^= delta;
        prop_assert!(image.check().is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Overlapped rounds (the next one decides before the shards apply the last commit, over
    /// the last round's view) decide exactly as rounds run one after the other.
    #[test]
    fn overlapping_rounds_decide_as_sequential_ones(rounds in prop::collection::vec(round(), 1..25)) {
        let mut now = 1_000 * SECOND;
        let mut sequential = setup(3, now);
        let mut overlapping = fund(LocalEngine::overlapping(3), now);
        let mut ids = Ids::default();
        for (elapsed, mut operations) in rounds {
            ids.resolve(&mut operations);
            now += elapsed;
            let a = sequential.execute(operations.clone(), now);
            let b = overlapping.execute(operations, now);
            prop_assert_eq!(a, b);
        }
        overlapping.settle();
        check_invariants(&overlapping);
        prop_assert_eq!(sequential.all_accounts(), overlapping.all_accounts());
    }
}

use kizo_testkit::ManualClock;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases() / 5))]

    /// The actors carry exactly the pure logic: the same operations, one at a time on the same
    /// clock, get the same results from the engine as from `LocalEngine`, and leave the same
    /// balances, whether the shards keep every transfer or a window of a few (the memory log
    /// is then the store the rest is fetched from).
    #[test]
    fn the_actors_decide_as_the_pure_engine(
        rounds in prop::collection::vec(round(), 1..12),
        window in prop::option::of(1..40usize),
    ) {
        use std::future::Future;
        use std::sync::atomic::Ordering;
        use std::sync::Arc;
        use kizo_engine::{Engine, EngineConfig, MemoryWal};

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut now = 1_000 * SECOND;
        let mut local = setup(3, now);
        let mut ids = Ids::default();
        runtime.block_on(async {
            let clock = Arc::new(ManualClock::default());
            clock.0.store(now, Ordering::SeqCst);
            let config = EngineConfig {
                shard_count: 3,
                // Only the operations expire pending transfers, as in `LocalEngine`.
                expiry_interval: std::time::Duration::from_secs(3_600),
                transfer_window: window,
                ..EngineConfig::default()
            };
            let engine = Engine::start_with_clock(config, MemoryWal::new(), clock.clone())
                .await
                .unwrap();
            engine.create_accounts(accounts()).await.unwrap();
            engine.create_transfers(funding()).await.unwrap();
            for (elapsed, mut operations) in rounds {
                ids.resolve(&mut operations);
                now += elapsed;
                clock.0.store(now, Ordering::SeqCst);
                // Submit every batch of the round before waiting for any, in order: the engine
                // groups them into rounds as they come, and rounds overlap (a round reads
                // before the last commit is applied), yet each batch is decided in order.
                let mut pending = Vec::new();
                for operation in operations {
                    let Operation::CreateTransfers(events) = operation else {
                        continue;
                    };
                    let expected = local.create_transfers(&events, now);
                    let engine = engine.clone();
                    let mut answer = Box::pin(async move { engine.create_transfers(events).await });
                    // One poll sends the request; the answer is awaited below (unless the
                    // request was answered at once).
                    let early = std::future::poll_fn(|cx| {
                        std::task::Poll::Ready(answer.as_mut().poll(cx))
                    })
                    .await;
                    pending.push((answer, early, expected));
                }
                for (answer, early, expected) in pending {
                    let got = match early {
                        std::task::Poll::Ready(got) => got,
                        std::task::Poll::Pending => answer.await,
                    };
                    prop_assert_eq!(got.unwrap(), expected);
                }
            }
            let ids: Vec<u128> = (1..=ACCOUNTS).collect();
            let balances = engine.lookup_accounts(ids.clone()).await.unwrap();
            prop_assert_eq!(balances, local.all_accounts());
            for id in ids {
                let filter = kizo_engine::AccountFilter::all(id, 8189);
                let history = engine.get_account_transfers(filter).await.unwrap();
                prop_assert_eq!(&history, &local.account_transfers(&filter));
                let found = engine
                    .lookup_transfers(history.iter().map(|t| t.id).collect())
                    .await
                    .unwrap();
                prop_assert_eq!(found, history);
            }
            engine.shutdown().await;
            Ok(())
        })?;
    }
}
