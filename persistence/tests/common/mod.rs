//! Shared by the persistence tests: one store per test, on PostgreSQL (a schema of its own in
//! `DATABASE_URL`, default the local server) or embedded (a temporary folder).
#![allow(dead_code)]

/// Runs each named `async fn(TestStore)` as two tests: `postgres::NAME` and `embedded::NAME`
/// (the test files say `#[macro_use] mod common;`).
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::TestStore::postgres(stringify!($test))).await;
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::TestStore::embedded()).await;
                }
            )*
        }
    };
}

use std::collections::HashMap;
use std::time::Duration;

use kizo_engine::{Account, AccountFlags, Transfer};
#[allow(unused_imports)]
pub use kizo_testkit::{database_url, engine_config, TestStore};

pub const LEDGER: u32 = 840;

/// A funding account (no limits) with id 1, and wallets 2..=wallets+1 that cannot overdraw.
pub fn accounts(wallets: u128) -> Vec<Account> {
    let mut accounts = vec![Account::new(1, LEDGER, 1)];
    for id in 2..=wallets + 1 {
        accounts.push(Account {
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            ..Account::new(id, LEDGER, 2)
        });
    }
    accounts
}

pub fn transfer(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer::new(id, debit, credit, amount, LEDGER, 1)
}

/// Per ledger: posted debits equal posted credits, pending the same; no wallet overdrawn.
pub fn assert_balanced(accounts: &[Account]) {
    let sum = |f: fn(&Account) -> u128| accounts.iter().map(f).sum::<u128>();
    assert_eq!(sum(|a| a.debits_posted), sum(|a| a.credits_posted));
    assert_eq!(sum(|a| a.debits_pending), sum(|a| a.credits_pending));
    for a in accounts {
        if a.flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
        {
            assert!(
                a.debits_posted + a.debits_pending <= a.credits_posted,
                "{a:?}"
            );
        }
    }
}

/// What clients under faults were told.
#[derive(Default)]
pub struct Outcomes {
    /// Acknowledged as created.
    pub created: Vec<Transfer>,
    /// Acknowledged with a failure code.
    pub refused: Vec<Transfer>,
    /// No answer, or `unavailable`: may or may not be applied (never half).
    pub unavailable: Vec<Transfer>,
    /// The slowest `unavailable` answer.
    pub slowest_failure: Duration,
}

impl Outcomes {
    pub fn merge(&mut self, other: Outcomes) {
        self.created.extend(other.created);
        self.refused.extend(other.refused);
        self.unavailable.extend(other.unavailable);
        self.slowest_failure = self.slowest_failure.max(other.slowest_failure);
    }

    pub fn attempted_ids(&self) -> Vec<u128> {
        let all = self
            .created
            .iter()
            .chain(&self.refused)
            .chain(&self.unavailable);
        all.map(|t| t.id).collect()
    }

    /// `found`: the attempted transfers the ledger holds; `accounts`: the funding account 1
    /// and wallets that each got `funding` from it before the clients started. Checks that
    /// every acknowledged transfer is there with its fields, no refused one is, and each
    /// wallet's balances are exactly the sums of the transfers present: nothing lost, nothing
    /// doubled, nothing half-applied.
    pub fn check(&self, found: &[Transfer], accounts: &[Account], funding: u128) {
        let found: HashMap<u128, &Transfer> = found.iter().map(|t| (t.id, t)).collect();
        for sent in &self.created {
            let held = found
                .get(&sent.id)
                .unwrap_or_else(|| panic!("acknowledged transfer {} is missing", sent.id));
            assert_eq!(
                (held.debit_account_id, held.credit_account_id, held.amount),
                (sent.debit_account_id, sent.credit_account_id, sent.amount)
            );
        }
        for sent in &self.refused {
            assert!(
                !found.contains_key(&sent.id),
                "refused transfer {} applied",
                sent.id
            );
        }
        for sent in &self.unavailable {
            if let Some(held) = found.get(&sent.id) {
                assert_eq!(held.amount, sent.amount);
            }
        }
        let mut sums: HashMap<u128, (u128, u128)> = HashMap::new();
        for t in found.values() {
            sums.entry(t.debit_account_id).or_default().0 += t.amount;
            sums.entry(t.credit_account_id).or_default().1 += t.amount;
        }
        assert_balanced(accounts);
        for account in accounts.iter().filter(|a| a.id != 1) {
            let (debits, credits) = sums.get(&account.id).copied().unwrap_or_default();
            assert_eq!(account.debits_posted, debits, "account {}", account.id);
            assert_eq!(
                account.credits_posted,
                credits + funding,
                "account {}",
                account.id
            );
        }
    }
}
