//! What the durable store answers, and the store as a value.
//!
//! The shards hold only what deciding needs (accounts, pending transfers, a window of recent
//! transfers and failed ids, and the [filter](crate::filter) of every id); everything else is
//! looked up in the store: PostgreSQL or SQLite read models in production, [`MemoryStore`] in
//! the simulator and in engines whose log is kept in memory. A store holds a commit once its
//! progress (`stored_lsn`) has reached the commit's LSN; a shard lets a transfer leave memory
//! only then.

use std::collections::BTreeMap;

use ahash::AHashMap;

use crate::record::{Commit, Record};
use crate::results::CreateTransferResult;
use crate::types::{AccountFilter, PendingStatus, Transfer, TransferFlags};

/// What the store holds for one id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// A transfer, with where it stands if it is pending (`None` for other transfers).
    Transfer(Transfer, Option<PendingStatus>),
    /// An id that failed for a transient reason.
    Failed(u128, CreateTransferResult),
}

impl Stored {
    pub fn id(&self) -> u128 {
        match self {
            Stored::Transfer(transfer, _) => transfer.id,
            Stored::Failed(id, _) => *id,
        }
    }
}

/// The history of transfers that touch one account, in timestamp order.
#[derive(Clone, Copy, Debug)]
struct HistoryEntry {
    timestamp: u64,
    transfer_id: u128,
    is_debit: bool,
}

/// The ids of `history` that match `filter`, in the filter's order: the one statement of what
/// an [`AccountFilter`] selects (the SQL read models say the same in SQL, and a test compares).
fn select<'h>(
    history: &'h [HistoryEntry],
    filter: &AccountFilter,
) -> impl Iterator<Item = u128> + 'h {
    let min = filter.timestamp_min;
    let max = if filter.timestamp_max == 0 {
        u64::MAX
    } else {
        filter.timestamp_max
    };
    let start = history.partition_point(|h| h.timestamp < min);
    let end = history.partition_point(|h| h.timestamp <= max).max(start);
    let (debits, credits, reversed) = (filter.debits, filter.credits, filter.reversed);
    let in_range = &history[start..end];
    let ordered: Box<dyn Iterator<Item = &HistoryEntry>> = if reversed {
        Box::new(in_range.iter().rev())
    } else {
        Box::new(in_range.iter())
    };
    ordered
        .filter(move |h| (h.is_debit && debits) || (!h.is_debit && credits))
        .take(filter.limit as usize)
        .map(|h| h.transfer_id)
}

/// Every transfer and failed id of the commits projected into it, by id, and every account's
/// history. It grows with history: it *is* the store, kept in memory (the simulator's, and
/// that of engines whose log is in memory).
#[derive(Debug, Default)]
pub struct MemoryStore {
    stored_lsn: u64,
    by_id: AHashMap<u128, Stored>,
    /// Ordered by account id so that nothing depends on a hash map's order.
    histories: BTreeMap<u128, Vec<HistoryEntry>>,
}

impl MemoryStore {
    /// The last commit projected.
    pub fn stored_lsn(&self) -> u64 {
        self.stored_lsn
    }

    /// Projects the next commit.
    pub fn project(&mut self, commit: &Commit) {
        assert_eq!(
            commit.lsn,
            self.stored_lsn + 1,
            "the store projects commits in order"
        );
        for record in &commit.records {
            match *record {
                Record::AccountCreated(_) => {}
                Record::TransferCreated(transfer) => {
                    let status = transfer
                        .flags
                        .contains(TransferFlags::PENDING)
                        .then_some(PendingStatus::Pending);
                    self.by_id
                        .insert(transfer.id, Stored::Transfer(transfer, status));
                }
                Record::PendingPosted { transfer, .. } => {
                    self.by_id
                        .insert(transfer.id, Stored::Transfer(transfer, None));
                    self.resolve(transfer.pending_id, PendingStatus::Posted);
                }
                Record::PendingVoided { transfer, .. } => {
                    self.by_id
                        .insert(transfer.id, Stored::Transfer(transfer, None));
                    self.resolve(transfer.pending_id, PendingStatus::Voided);
                }
                Record::PendingExpired { pending_id, .. } => {
                    self.resolve(pending_id, PendingStatus::Expired);
                }
                Record::TransferFailed { id, result } => {
                    self.by_id.insert(id, Stored::Failed(id, result));
                }
            }
            if let (Some(legs), Some(transfer)) = (record.legs(), record.transfer()) {
                for leg in legs {
                    self.histories
                        .entry(leg.account_id)
                        .or_default()
                        .push(HistoryEntry {
                            timestamp: transfer.timestamp,
                            transfer_id: transfer.id,
                            is_debit: leg.side == crate::record::Side::Debit,
                        });
                }
            }
        }
        self.stored_lsn = commit.lsn;
    }

    fn resolve(&mut self, pending_id: u128, status: PendingStatus) {
        match self.by_id.get_mut(&pending_id) {
            Some(Stored::Transfer(_, held @ Some(PendingStatus::Pending))) => *held = Some(status),
            other => panic!("the store resolves pending transfer {pending_id}, found {other:?}"),
        }
    }

    /// What the store holds for `ids`, in their order; ids it does not hold are left out.
    pub fn fetch(&self, ids: &[u128]) -> Vec<Stored> {
        ids.iter()
            .filter_map(|id| self.by_id.get(id).copied())
            .collect()
    }

    /// The transfers of an account that match the filter, in the filter's order.
    pub fn account_transfers(&self, filter: &AccountFilter) -> Vec<Transfer> {
        let Some(history) = self.histories.get(&filter.account_id) else {
            return Vec::new();
        };
        select(history, filter)
            .map(|id| match self.by_id.get(&id) {
                Some(Stored::Transfer(transfer, _)) => *transfer,
                other => panic!("a history names transfer {id}, found {other:?}"),
            })
            .collect()
    }
}
