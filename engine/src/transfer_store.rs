//! The store port: where the engine finds the transfers and failed ids its shards let go of,
//! and every account's history. The PostgreSQL and SQLite read models implement it in
//! `kizo-persistence`; [`MemoryWal`](crate::MemoryWal) is its own store.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::store::Stored;
use crate::types::{AccountFilter, Transfer};

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransferStoreError {
    #[error("the transfer store is unavailable: {0}")]
    Unavailable(String),
    /// It did not reach the commit a read must see within the bound.
    #[error("the transfer store is {behind} commits behind after {waited:?}; retry")]
    Behind { behind: u64, waited: Duration },
    #[error("the transfer store holds data that does not decode: {0}")]
    Corrupt(String),
}

pub type TransferStoreFuture<T> =
    Pin<Box<dyn Future<Output = Result<T, TransferStoreError>> + Send>>;

/// Transfers and failed ids by id, and account histories, for every commit up to
/// [`TransferStore::stored_lsn`].
pub trait TransferStore: Send + Sync + 'static {
    /// The last commit the store holds in the form lookups need. Never goes back.
    fn stored_lsn(&self) -> u64;

    /// What the store holds for `ids` (those it does not hold are left out), as of at least
    /// [`TransferStore::stored_lsn`] at the call.
    fn fetch(&self, ids: Vec<u128>) -> TransferStoreFuture<Vec<Stored>>;

    /// The transfers of an account that match `filter`, in the filter's order, as of commit
    /// `as_of` or later: the store first catches up to `as_of`, within a bound
    /// ([`TransferStoreError::Behind`] past it), so that a caller sees every commit it was
    /// answered for (read-your-writes).
    fn account_transfers(
        &self,
        filter: AccountFilter,
        as_of: u64,
    ) -> TransferStoreFuture<Vec<Transfer>>;

    /// Asks the store to take in what the log has now rather than at its own pace (the engine
    /// waits for it).
    fn nudge(&self) {}
}

/// Waits until `store` holds commit `lsn`, polling every few milliseconds, for at most
/// `bound`: what a store fed by a projector does before a history read.
pub async fn wait_for_lsn(
    store: &(impl TransferStore + ?Sized),
    lsn: u64,
    bound: Duration,
) -> Result<(), TransferStoreError> {
    let started = tokio::time::Instant::now();
    loop {
        let stored = store.stored_lsn();
        if stored >= lsn {
            return Ok(());
        }
        if started.elapsed() >= bound {
            return Err(TransferStoreError::Behind {
                behind: lsn - stored,
                waited: bound,
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
