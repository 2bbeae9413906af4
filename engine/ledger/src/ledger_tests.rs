//! One test per result code and per precedence rule, over a fixture spread across shards.

use std::collections::BTreeSet;

use crate::local::LocalEngine;
use crate::results::{CreateAccountResult as A, CreateTransferResult as R};
use crate::types::{
    Account, AccountFlags, PendingStatus, Transfer, TransferFlags as F, NS_PER_SECOND,
    POST_WHOLE_PENDING_AMOUNT,
};

const T0: u64 = 1_000 * NS_PER_SECOND;
const LATER: u64 = T0 + 100 * NS_PER_SECOND;
const BIG: u128 = u128::MAX - 10;

fn account(id: u128, ledger: u32, flags: AccountFlags) -> Account {
    Account {
        flags,
        ..Account::new(id, ledger, 1)
    }
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer::new(id, debit, credit, amount, 1, 1)
}

fn pending(id: u128, debit: u128, credit: u128, amount: u128, timeout: u32) -> Transfer {
    Transfer {
        flags: F::PENDING,
        timeout,
        ..transfer(id, debit, credit, amount)
    }
}

fn resolve(id: u128, pending_id: u128, flags: F, amount: u128) -> Transfer {
    Transfer {
        id,
        pending_id,
        amount,
        flags,
        ..Transfer::default()
    }
}

/// Accounts 1, 2, 7..=12 plain on ledger 1; 3 a wallet; 4 credits-limited; 5 on ledger 2;
/// 6 closed. Transfers: 100 pending (no timeout), 101 pending (1 s timeout), 102 pending and
/// posted by 103, 104 pending and voided by 105, 106 plain, 107 a huge pending, 108 a huge
/// posted transfer, 109 failed (exceeds_credits). Three shards, so most pairs cross shards.
fn fixture() -> LocalEngine {
    let mut engine = LocalEngine::new(3);
    let mut accounts = vec![
        account(1, 1, AccountFlags::empty()),
        account(2, 1, AccountFlags::empty()),
        account(3, 1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        account(4, 1, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
        account(5, 2, AccountFlags::empty()),
        account(6, 1, AccountFlags::CLOSED),
    ];
    accounts.extend((7..=12).map(|id| account(id, 1, AccountFlags::empty())));
    let results = engine.create_accounts(&accounts, T0);
    assert!(results.iter().all(|r| *r == A::Created), "{results:?}");
    let transfers = [
        transfer(99, 1, 3, 100),
        pending(100, 1, 2, 50, 0),
        pending(101, 1, 2, 50, 1),
        pending(102, 1, 2, 50, 0),
        resolve(
            103,
            102,
            F::POST_PENDING_TRANSFER,
            POST_WHOLE_PENDING_AMOUNT,
        ),
        pending(104, 1, 2, 50, 0),
        resolve(105, 104, F::VOID_PENDING_TRANSFER, 0),
        Transfer {
            user_data_128: 7,
            user_data_64: 8,
            user_data_32: 9,
            ..transfer(106, 1, 2, 10)
        },
        pending(107, 8, 9, BIG, 0),
        transfer(108, 10, 11, BIG),
        transfer(109, 3, 1, 1_000),
    ];
    let results = engine.create_transfers(&transfers, T0 + NS_PER_SECOND);
    let expected = [vec![R::Created; 10], vec![R::ExceedsCredits]].concat();
    assert_eq!(results, expected);
    engine
}

fn one(events: &[Transfer]) -> R {
    let results = fixture().create_transfers(events, LATER);
    *results.last().expect("one result per event")
}

/// Every result of `create_transfers`, each with the batch that produces it (last event).
fn cases() -> Vec<(R, Vec<Transfer>)> {
    let t = |amount| transfer(200, 1, 2, amount);
    let with = |f: &dyn Fn(&mut Transfer)| {
        let mut e = t(5);
        f(&mut e);
        vec![e]
    };
    let post = |pending_id, amount| resolve(200, pending_id, F::POST_PENDING_TRANSFER, amount);
    let void = |pending_id, amount| resolve(200, pending_id, F::VOID_PENDING_TRANSFER, amount);
    let retry = |f: &dyn Fn(&mut Transfer)| {
        let mut e = Transfer {
            user_data_128: 7,
            user_data_64: 8,
            user_data_32: 9,
            ..transfer(106, 1, 2, 10)
        };
        f(&mut e);
        vec![e]
    };
    vec![
        (R::Created, vec![t(5)]),
        (
            R::LinkedEventFailed,
            vec![
                Transfer {
                    flags: F::LINKED,
                    ..transfer(200, 3, 1, 1_000)
                },
                t(5),
            ],
        ),
        (
            R::LinkedEventChainOpen,
            vec![Transfer {
                flags: F::LINKED,
                ..t(5)
            }],
        ),
        (R::TimestampMustBeZero, with(&|e| e.timestamp = 1)),
        (R::ReservedFlag, with(&|e| e.flags = F(1 << 9))),
        (R::IdMustNotBeZero, with(&|e| e.id = 0)),
        (R::IdMustNotBeIntMax, with(&|e| e.id = u128::MAX)),
        (
            R::FlagsAreMutuallyExclusive,
            with(&|e| e.flags = F::PENDING | F::POST_PENDING_TRANSFER),
        ),
        (
            R::DebitAccountIdMustNotBeZero,
            with(&|e| e.debit_account_id = 0),
        ),
        (
            R::DebitAccountIdMustNotBeIntMax,
            with(&|e| e.debit_account_id = u128::MAX),
        ),
        (
            R::CreditAccountIdMustNotBeZero,
            with(&|e| e.credit_account_id = 0),
        ),
        (
            R::CreditAccountIdMustNotBeIntMax,
            with(&|e| e.credit_account_id = u128::MAX),
        ),
        (
            R::AccountsMustBeDifferent,
            with(&|e| e.credit_account_id = 1),
        ),
        (R::PendingIdMustBeZero, with(&|e| e.pending_id = 100)),
        (R::PendingIdMustNotBeZero, vec![post(0, 1)]),
        (R::PendingIdMustNotBeIntMax, vec![post(u128::MAX, 1)]),
        (R::PendingIdMustBeDifferent, vec![post(200, 1)]),
        (
            R::TimeoutReservedForPendingTransfer,
            with(&|e| e.timeout = 1),
        ),
        (R::AmountMustNotBeZero, with(&|e| e.amount = 0)),
        (R::LedgerMustNotBeZero, with(&|e| e.ledger = 0)),
        (R::CodeMustNotBeZero, with(&|e| e.code = 0)),
        (
            R::ExistsWithDifferentFlags,
            retry(&|e| e.flags = F::PENDING),
        ),
        (
            R::ExistsWithDifferentPendingId,
            vec![Transfer {
                id: 103,
                ..post(100, POST_WHOLE_PENDING_AMOUNT)
            }],
        ),
        (
            R::ExistsWithDifferentTimeout,
            vec![Transfer {
                timeout: 5,
                ..pending(100, 1, 2, 50, 0)
            }],
        ),
        (
            R::ExistsWithDifferentDebitAccountId,
            retry(&|e| e.debit_account_id = 7),
        ),
        (
            R::ExistsWithDifferentCreditAccountId,
            retry(&|e| e.credit_account_id = 7),
        ),
        (R::ExistsWithDifferentAmount, retry(&|e| e.amount = 11)),
        (
            R::ExistsWithDifferentUserData128,
            retry(&|e| e.user_data_128 = 1),
        ),
        (
            R::ExistsWithDifferentUserData64,
            retry(&|e| e.user_data_64 = 1),
        ),
        (
            R::ExistsWithDifferentUserData32,
            retry(&|e| e.user_data_32 = 1),
        ),
        (R::ExistsWithDifferentLedger, retry(&|e| e.ledger = 2)),
        (R::ExistsWithDifferentCode, retry(&|e| e.code = 2)),
        (R::Exists, retry(&|_| {})),
        (R::IdAlreadyFailed, vec![transfer(109, 3, 1, 1_000)]),
        (R::DebitAccountNotFound, with(&|e| e.debit_account_id = 404)),
        (
            R::CreditAccountNotFound,
            with(&|e| e.credit_account_id = 404),
        ),
        (R::PendingTransferNotFound, vec![post(404, 1)]),
        (R::PendingTransferNotPending, vec![post(106, 1)]),
        (
            R::PendingTransferHasDifferentDebitAccountId,
            vec![Transfer {
                debit_account_id: 7,
                ..post(100, 1)
            }],
        ),
        (
            R::PendingTransferHasDifferentCreditAccountId,
            vec![Transfer {
                credit_account_id: 7,
                ..post(100, 1)
            }],
        ),
        (
            R::PendingTransferHasDifferentLedger,
            vec![Transfer {
                ledger: 2,
                ..post(100, 1)
            }],
        ),
        (
            R::PendingTransferHasDifferentCode,
            vec![Transfer {
                code: 2,
                ..post(100, 1)
            }],
        ),
        (R::ExceedsPendingTransferAmount, vec![post(100, 51)]),
        (R::PendingTransferHasDifferentAmount, vec![void(100, 49)]),
        (R::PendingTransferAlreadyPosted, vec![void(102, 0)]),
        (R::PendingTransferAlreadyVoided, vec![post(104, 1)]),
        (R::PendingTransferExpired, vec![post(101, 1)]),
        (
            R::AccountsMustHaveTheSameLedger,
            with(&|e| e.credit_account_id = 5),
        ),
        (
            R::TransferMustHaveTheSameLedgerAsAccounts,
            with(&|e| e.ledger = 2),
        ),
        (
            R::DebitAccountAlreadyClosed,
            with(&|e| e.debit_account_id = 6),
        ),
        (
            R::CreditAccountAlreadyClosed,
            with(&|e| e.credit_account_id = 6),
        ),
        (R::OverflowsDebitsPending, vec![pending(200, 8, 12, 20, 0)]),
        (R::OverflowsCreditsPending, vec![pending(200, 12, 9, 20, 0)]),
        (R::OverflowsDebitsPosted, vec![transfer(200, 10, 12, 20)]),
        (R::OverflowsCreditsPosted, vec![transfer(200, 12, 11, 20)]),
        (R::OverflowsDebits, vec![transfer(200, 8, 12, 20)]),
        (R::OverflowsCredits, vec![transfer(200, 12, 9, 20)]),
        // OverflowsTimeout needs a clock near u64::MAX: see `timeout_overflow`.
        (R::ExceedsCredits, vec![transfer(200, 3, 2, 1_000)]),
        (R::ExceedsDebits, with(&|e| e.credit_account_id = 4)),
    ]
}

#[test]
fn every_transfer_result_has_a_case_that_produces_it() {
    let mut seen = BTreeSet::new();
    for (expected, events) in cases() {
        assert_eq!(one(&events), expected, "{events:?}");
        seen.insert(expected);
    }
    seen.insert(R::OverflowsTimeout);
    let all: BTreeSet<R> = R::ALL.iter().copied().collect();
    let missing: Vec<_> = all.difference(&seen).collect();
    assert!(missing.is_empty(), "no case for {missing:?}");
}

#[test]
fn timeout_overflow() {
    let mut engine = fixture();
    let now = u64::MAX - NS_PER_SECOND;
    let results = engine.create_transfers(&[pending(200, 1, 2, 1, 2)], now);
    assert_eq!(results, vec![R::OverflowsTimeout]);
}

#[test]
fn validation_precedes_everything_in_declared_order() {
    // Several faults at once: the earliest in the declared order wins.
    let mut e = transfer(0, 0, 0, 0);
    e.timestamp = 1;
    e.flags = F(1 << 12);
    assert_eq!(one(&[e]), R::TimestampMustBeZero);
    e.timestamp = 0;
    assert_eq!(one(&[e]), R::ReservedFlag);
    e.flags = F::empty();
    assert_eq!(one(&[e]), R::IdMustNotBeZero);
    e.id = 200;
    assert_eq!(one(&[e]), R::DebitAccountIdMustNotBeZero);
}

#[test]
fn exists_precedes_state_checks_and_not_found_goes_debit_first() {
    // A retry of a created transfer is `exists` even if it would now fail for funds.
    assert_eq!(one(&[transfer(99, 1, 3, 100)]), R::Exists);
    assert_eq!(one(&[transfer(200, 404, 405, 1)]), R::DebitAccountNotFound);
    // Ledger mismatch precedes closed, closed precedes exceeds.
    assert_eq!(
        one(&[transfer(200, 6, 5, 1)]),
        R::AccountsMustHaveTheSameLedger
    );
    assert_eq!(
        one(&[transfer(200, 3, 6, 1_000)]),
        R::CreditAccountAlreadyClosed
    );
    // exceeds_credits (debit side) precedes exceeds_debits (credit side).
    assert_eq!(one(&[transfer(200, 3, 4, 1_000)]), R::ExceedsCredits);
}

#[test]
fn a_failed_id_never_succeeds_later() {
    let mut engine = fixture();
    // Fund the wallet so that 109 would now pass; it still fails.
    assert_eq!(
        engine.create_transfers(&[transfer(300, 1, 3, 5_000)], LATER),
        vec![R::Created]
    );
    assert_eq!(
        engine.create_transfers(&[transfer(109, 3, 1, 1_000)], LATER),
        vec![R::IdAlreadyFailed]
    );
    // Failures that are not transient are not remembered: the id can still be used.
    assert_eq!(
        engine.create_transfers(&[transfer(301, 1, 1, 1)], LATER),
        vec![R::AccountsMustBeDifferent]
    );
    assert_eq!(
        engine.create_transfers(&[transfer(301, 1, 2, 1)], LATER),
        vec![R::Created]
    );
}

#[test]
fn a_linked_chain_is_all_or_nothing_across_shards() {
    let mut engine = fixture();
    let before = engine.all_accounts();
    let chain = [
        Transfer {
            flags: F::LINKED,
            ..transfer(300, 1, 3, 40)
        },
        Transfer {
            flags: F::LINKED,
            ..transfer(301, 3, 2, 140)
        },
        transfer(302, 3, 7, 1), // 100 + 40 - 140 = 0 left: fails
        transfer(303, 1, 2, 1),
    ];
    let results = engine.create_transfers(&chain, LATER);
    assert_eq!(
        results,
        vec![
            R::LinkedEventFailed,
            R::LinkedEventFailed,
            R::ExceedsCredits,
            R::Created
        ]
    );
    let after = engine.all_accounts();
    let changed: Vec<u128> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(b, _)| b.id)
        .collect();
    assert_eq!(
        changed,
        vec![1, 2],
        "only the unlinked transfer 303 applied"
    );
    assert!(engine.transfer(300).is_none() && engine.transfer(301).is_none());
    // The chain's failure was transient: 302 is remembered, 300 and 301 are free to reuse.
    assert_eq!(
        engine.create_transfers(&[transfer(302, 3, 7, 1)], LATER),
        vec![R::IdAlreadyFailed]
    );
    assert_eq!(
        engine.create_transfers(&[transfer(300, 1, 3, 1)], LATER),
        vec![R::Created]
    );
}

#[test]
fn a_chain_open_at_the_end_fails_whole() {
    let mut engine = fixture();
    let results = engine.create_transfers(
        &[
            transfer(300, 1, 2, 1),
            Transfer {
                flags: F::LINKED,
                ..transfer(301, 1, 2, 1)
            },
            Transfer {
                flags: F::LINKED,
                ..transfer(302, 1, 2, 1)
            },
        ],
        LATER,
    );
    assert_eq!(
        results,
        vec![R::Created, R::LinkedEventFailed, R::LinkedEventChainOpen]
    );
    assert!(engine.transfer(301).is_none());
}

#[test]
fn two_phase_post_partial_releases_the_rest() {
    let mut engine = fixture();
    engine.expire(LATER);
    let before = engine.account(1).unwrap();
    let results =
        engine.create_transfers(&[resolve(300, 100, F::POST_PENDING_TRANSFER, 20)], LATER);
    assert_eq!(results, vec![R::Created]);
    let after = engine.account(1).unwrap();
    assert_eq!(after.debits_pending, before.debits_pending - 50);
    assert_eq!(after.debits_posted, before.debits_posted + 20);
    let post = engine.transfer(300).unwrap();
    assert_eq!(
        (
            post.debit_account_id,
            post.credit_account_id,
            post.amount,
            post.ledger
        ),
        (1, 2, 20, 1)
    );
    // A retry with inherited (zero) fields is `exists`; a second resolution is refused.
    assert_eq!(
        engine.create_transfers(&[resolve(300, 100, F::POST_PENDING_TRANSFER, 20)], LATER),
        vec![R::Exists]
    );
    assert_eq!(
        engine.create_transfers(&[resolve(301, 100, F::VOID_PENDING_TRANSFER, 0)], LATER),
        vec![R::PendingTransferAlreadyPosted]
    );
}

#[test]
fn a_pending_transfer_and_its_post_in_one_batch() {
    let mut engine = fixture();
    let results = engine.create_transfers(
        &[
            pending(300, 1, 3, 30, 0),
            resolve(
                301,
                300,
                F::POST_PENDING_TRANSFER,
                POST_WHOLE_PENDING_AMOUNT,
            ),
        ],
        LATER,
    );
    assert_eq!(results, vec![R::Created, R::Created]);
    assert_eq!(engine.account(3).unwrap().credits_posted, 130);
}

#[test]
fn expiry_releases_funds_at_the_timeout() {
    let mut engine = fixture();
    let ts = engine.transfer(101).unwrap().timestamp;
    let held = engine.account(1).unwrap().debits_pending;
    engine.expire(ts + NS_PER_SECOND - 1);
    assert_eq!(engine.account(1).unwrap().debits_pending, held);
    engine.expire(ts + NS_PER_SECOND);
    assert_eq!(engine.account(1).unwrap().debits_pending, held - 50);
    assert_eq!(engine.account(2).unwrap().credits_pending, 100 - 50);
    assert_eq!(engine.pending_status(101), Some(PendingStatus::Expired));
    assert_eq!(engine.pending_status(100), Some(PendingStatus::Pending));
    assert_eq!(engine.pending_status(106), None);
}

#[test]
fn balancing_debit_moves_at_most_the_balance() {
    let mut engine = fixture();
    let results = engine.create_transfers(
        &[
            Transfer {
                flags: F::BALANCING_DEBIT,
                ..transfer(300, 3, 1, 1_000)
            },
            Transfer {
                flags: F::BALANCING_DEBIT,
                ..transfer(301, 3, 1, 1_000)
            },
        ],
        LATER,
    );
    assert_eq!(results, vec![R::Created, R::ExceedsCredits]);
    assert_eq!(engine.transfer(300).unwrap().amount, 100);
    // The retry of a balancing transfer with the same upper bound is `exists`.
    assert_eq!(
        engine.create_transfers(
            &[Transfer {
                flags: F::BALANCING_DEBIT,
                ..transfer(300, 3, 1, 1_000)
            }],
            LATER
        ),
        vec![R::Exists]
    );
}

#[test]
fn timestamps_are_unique_and_increasing_even_when_the_clock_stalls() {
    let mut engine = fixture();
    engine.create_transfers(&[transfer(300, 1, 2, 1), transfer(301, 1, 2, 1)], T0);
    engine.create_transfers(&[transfer(302, 1, 2, 1)], T0);
    let ts: Vec<u64> = (300..=302)
        .map(|id| engine.transfer(id).unwrap().timestamp)
        .collect();
    assert!(ts[0] < ts[1] && ts[1] < ts[2], "{ts:?}");
    assert!(ts[0] > engine.transfer(109 - 1).unwrap().timestamp);
}

#[test]
fn every_account_result_has_a_case_that_produces_it() {
    let base = account(50, 1, AccountFlags::empty());
    let with = |f: &dyn Fn(&mut Account)| {
        let mut e = base;
        f(&mut e);
        vec![e]
    };
    let retry = |f: &dyn Fn(&mut Account)| {
        let mut e = account(1, 1, AccountFlags::empty());
        f(&mut e);
        vec![e]
    };
    let cases: Vec<(A, Vec<Account>)> = vec![
        (A::Created, vec![base]),
        (
            A::LinkedEventFailed,
            vec![
                Account {
                    flags: AccountFlags::LINKED,
                    ..account(51, 0, AccountFlags::empty())
                },
                base,
            ],
        ),
        (
            A::LinkedEventChainOpen,
            with(&|e| e.flags = AccountFlags::LINKED),
        ),
        (A::TimestampMustBeZero, with(&|e| e.timestamp = 1)),
        (A::ReservedFlag, with(&|e| e.flags = AccountFlags(1 << 9))),
        (A::IdMustNotBeZero, with(&|e| e.id = 0)),
        (A::IdMustNotBeIntMax, with(&|e| e.id = u128::MAX)),
        (
            A::FlagsAreMutuallyExclusive,
            with(&|e| {
                e.flags = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                    | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS
            }),
        ),
        (A::DebitsPendingMustBeZero, with(&|e| e.debits_pending = 1)),
        (A::DebitsPostedMustBeZero, with(&|e| e.debits_posted = 1)),
        (
            A::CreditsPendingMustBeZero,
            with(&|e| e.credits_pending = 1),
        ),
        (A::CreditsPostedMustBeZero, with(&|e| e.credits_posted = 1)),
        (A::LedgerMustNotBeZero, with(&|e| e.ledger = 0)),
        (A::CodeMustNotBeZero, with(&|e| e.code = 0)),
        (
            A::ExistsWithDifferentFlags,
            retry(&|e| e.flags = AccountFlags::CLOSED),
        ),
        (
            A::ExistsWithDifferentUserData128,
            retry(&|e| e.user_data_128 = 1),
        ),
        (
            A::ExistsWithDifferentUserData64,
            retry(&|e| e.user_data_64 = 1),
        ),
        (
            A::ExistsWithDifferentUserData32,
            retry(&|e| e.user_data_32 = 1),
        ),
        (A::ExistsWithDifferentLedger, retry(&|e| e.ledger = 2)),
        (A::ExistsWithDifferentCode, retry(&|e| e.code = 2)),
        (A::Exists, retry(&|_| {})),
    ];
    let mut seen = BTreeSet::new();
    for (expected, events) in cases {
        let results = fixture().create_accounts(&events, LATER);
        assert_eq!(*results.last().unwrap(), expected, "{events:?}");
        seen.insert(expected);
    }
    assert_eq!(seen.len(), A::ALL.len());
}

#[test]
fn a_failed_account_chain_creates_nothing() {
    let mut engine = fixture();
    let results = engine.create_accounts(
        &[
            Account {
                flags: AccountFlags::LINKED,
                ..account(60, 1, AccountFlags::empty())
            },
            account(61, 0, AccountFlags::empty()),
        ],
        LATER,
    );
    assert_eq!(results, vec![A::LinkedEventFailed, A::LedgerMustNotBeZero]);
    assert!(engine.account(60).is_none());
}

#[test]
fn history_filters_sides_ranges_and_order() {
    use crate::types::AccountFilter;
    let mut engine = fixture();
    let all = engine.account_transfers(&AccountFilter::all(1, 100));
    let ids: Vec<u128> = all.iter().map(|t| t.id).collect();
    // 109 failed; 107/108 are on other accounts. Posts and voids touch account 1 too.
    assert_eq!(ids, vec![99, 100, 101, 102, 103, 104, 105, 106]);
    let newest_two = engine.account_transfers(&AccountFilter {
        reversed: true,
        limit: 2,
        ..AccountFilter::all(1, 2)
    });
    assert_eq!(
        newest_two.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![106, 105]
    );
    let credits = engine.account_transfers(&AccountFilter {
        debits: false,
        ..AccountFilter::all(3, 100)
    });
    assert_eq!(credits.iter().map(|t| t.id).collect::<Vec<_>>(), vec![99]);
    let ranged = engine.account_transfers(&AccountFilter {
        timestamp_min: all[2].timestamp,
        timestamp_max: all[3].timestamp,
        ..AccountFilter::all(1, 100)
    });
    assert_eq!(
        ranged.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![101, 102]
    );
}

#[test]
fn recovery_from_the_log_rebuilds_the_same_state() {
    let engine = fixture();
    for shards in [1, 3, 5] {
        let recovered = LocalEngine::recover(shards, engine.commits());
        assert_eq!(recovered.all_accounts(), engine.all_accounts(), "{shards}");
    }
}
