//! The write-ahead-log boundary. The engine appends each round's records as one commit and
//! answers callers only once the log says the commit is durable; a shard that missed commits
//! (it was restarted) catches up by reading them back. Storage backends implement [`Wal`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::record::{Commit, Record};
use crate::store::{MemoryStore, Stored};
use crate::transfer_store::{TransferStore, TransferStoreFuture};
use crate::types::{AccountFilter, Transfer};

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum WalError {
    #[error("the write-ahead log is unavailable: {0}")]
    Unavailable(String),
    #[error("the write-ahead log has no commits {from}..={to} (it ends at {last})")]
    Missing { from: u64, to: u64, last: u64 },
    /// An append asked for an LSN that is not the log's next one: it was decided on a state the
    /// log has moved past (an earlier append whose outcome was unknown landed after all).
    #[error("append of LSN {lsn} refused: the log's next LSN is {next}")]
    OutOfSequence { lsn: u64, next: u64 },
    /// The log's content fails its checks: a checksum mismatch, an undecodable record or a gap.
    #[error("the write-ahead log is damaged at LSN {lsn}: {detail}")]
    Corrupt { lsn: u64, detail: String },
}

pub type WalFuture<T> = Pin<Box<dyn Future<Output = Result<T, WalError>> + Send>>;

/// A write-ahead log of commits with gapless LSNs starting at 1.
pub trait Wal: Send + Sync + 'static {
    /// Queues `records` as commit `lsn` and returns at once; the receiver resolves when the
    /// commit is durable (or failed). `lsn` must be the log's next LSN, or the append fails with
    /// [`WalError::OutOfSequence`]: a commit is only ever written on top of the state it was
    /// decided on. Commits become durable in LSN order. A failed append leaves no trace in the
    /// log, except when its outcome is unknown (the storage went away while committing); then
    /// [`Wal::last_lsn`] tells, once known, whether it landed.
    fn append(
        &self,
        lsn: u64,
        timestamp_max: u64,
        records: Vec<Record>,
    ) -> oneshot::Receiver<Result<Arc<Commit>, WalError>>;

    /// The durable commits with LSNs in `from..=to`, in order.
    fn read(&self, from: u64, to: u64) -> WalFuture<Vec<Arc<Commit>>>;

    /// The LSN of the last durable commit (0 when empty).
    fn last_lsn(&self) -> u64;

    /// The log as its own transfer store, for a log that is one (the memory log); `None` for
    /// logs whose read models are kept apart.
    fn as_transfer_store(self: Arc<Self>) -> Option<Arc<dyn TransferStore>> {
        None
    }
}

/// A log kept in memory: durable for the life of the process only. For tests, benchmarks and
/// the simulator, and the engine's default until a storage backend is configured. It is its
/// own transfer store, projected when asked.
#[derive(Default)]
pub struct MemoryWal {
    commits: Mutex<Vec<Arc<Commit>>>,
    failing: AtomicBool,
    store: Mutex<MemoryStore>,
}

impl MemoryWal {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// While set, every append fails as if the storage were unreachable.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Every durable commit, in order.
    pub fn commits(&self) -> Vec<Arc<Commit>> {
        self.commits.lock().expect("wal lock").clone()
    }

    /// The store, with every durable commit projected.
    fn caught_up_store(&self) -> std::sync::MutexGuard<'_, MemoryStore> {
        let mut store = self.store.lock().expect("store lock");
        let commits = self.commits.lock().expect("wal lock");
        for commit in &commits[store.stored_lsn() as usize..] {
            store.project(commit);
        }
        store
    }
}

impl TransferStore for MemoryWal {
    fn stored_lsn(&self) -> u64 {
        self.caught_up_store().stored_lsn()
    }

    fn fetch(&self, ids: Vec<u128>) -> TransferStoreFuture<Vec<Stored>> {
        let stored = self.caught_up_store().fetch(&ids);
        Box::pin(std::future::ready(Ok(stored)))
    }

    fn account_transfers(
        &self,
        filter: AccountFilter,
        _as_of: u64,
    ) -> TransferStoreFuture<Vec<Transfer>> {
        let transfers = self.caught_up_store().account_transfers(&filter);
        Box::pin(std::future::ready(Ok(transfers)))
    }
}

impl Wal for MemoryWal {
    fn append(
        &self,
        lsn: u64,
        timestamp_max: u64,
        records: Vec<Record>,
    ) -> oneshot::Receiver<Result<Arc<Commit>, WalError>> {
        let (sender, receiver) = oneshot::channel();
        let mut commits = self.commits.lock().expect("wal lock");
        let next = commits.len() as u64 + 1;
        let result = if self.failing.load(Ordering::SeqCst) {
            Err(WalError::Unavailable(
                "memory log switched to failing".into(),
            ))
        } else if lsn != next {
            Err(WalError::OutOfSequence { lsn, next })
        } else {
            let commit = Arc::new(Commit {
                lsn,
                timestamp_max,
                records,
            });
            commits.push(commit.clone());
            Ok(commit)
        };
        drop(commits);
        // The caller may have given up waiting; the commit stands either way.
        let _ = sender.send(result);
        receiver
    }

    fn read(&self, from: u64, to: u64) -> WalFuture<Vec<Arc<Commit>>> {
        let commits = self.commits.lock().expect("wal lock");
        let last = commits.len() as u64;
        let result = if from == 0 || from > to.saturating_add(1) || to > last {
            Err(WalError::Missing { from, to, last })
        } else {
            Ok(commits[(from - 1) as usize..to as usize].to_vec())
        };
        Box::pin(std::future::ready(result))
    }

    fn as_transfer_store(self: Arc<Self>) -> Option<Arc<dyn TransferStore>> {
        Some(self)
    }

    fn last_lsn(&self) -> u64 {
        self.commits.lock().expect("wal lock").len() as u64
    }
}
