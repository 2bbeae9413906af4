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

use kizo_engine::{Account, AccountFlags, Transfer};
#[allow(unused_imports)]
pub use kizo_testkit::{assert_balanced, database_url, engine_config, Outcomes, TestStore};

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
