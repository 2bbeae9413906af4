//! What the read models learn from a run of commits: new accounts, new transfers, the pending
//! transfers resolved, and each account's balance changes. Pure: the projector computes it,
//! then [`crate::read_models::ReadModels`] writes it in one transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use kizo_engine::record::Side;
use kizo_engine::{Account, Commit, CreateTransferResult, Record, Transfer, TransferFlags};

/// Where a transfer stands, as the read models show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferStatus {
    /// Single-phase, or the post of a pending transfer, or a pending transfer that was posted.
    Posted,
    Pending,
    Voided,
    Expired,
}

impl TransferStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferStatus::Posted => "posted",
            TransferStatus::Pending => "pending",
            TransferStatus::Voided => "voided",
            TransferStatus::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "posted" => TransferStatus::Posted,
            "pending" => TransferStatus::Pending,
            "voided" => TransferStatus::Voided,
            "expired" => TransferStatus::Expired,
            _ => return None,
        })
    }
}

/// A transfer as the read models hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferRow {
    pub transfer: Transfer,
    pub status: TransferStatus,
    pub lsn: u64,
}

impl TransferRow {
    /// Where a pending transfer stands (`None` for other transfers), as the engine says it.
    pub fn pending_status(&self) -> Option<kizo_engine::PendingStatus> {
        use kizo_engine::PendingStatus;
        self.transfer
            .flags
            .contains(TransferFlags::PENDING)
            .then_some(match self.status {
                TransferStatus::Pending => PendingStatus::Pending,
                TransferStatus::Posted => PendingStatus::Posted,
                TransferStatus::Voided => PendingStatus::Voided,
                TransferStatus::Expired => PendingStatus::Expired,
            })
    }
}

/// Increases and decreases of one balance (kept apart: both fit u128, their difference might
/// not fit i128).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub plus: u128,
    pub minus: u128,
}

impl Change {
    fn add(&mut self, amount: u128) {
        self.plus = self.plus.checked_add(amount).expect("balances fit u128");
    }

    fn sub(&mut self, amount: u128) {
        self.minus = self.minus.checked_add(amount).expect("balances fit u128");
    }

    /// `balance` after the change; the engine never lets a balance leave u128.
    pub fn apply(self, balance: u128) -> u128 {
        balance
            .checked_add(self.plus)
            .and_then(|b| b.checked_sub(self.minus))
            .expect("a projected balance stays within u128")
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalanceChange {
    pub debits_pending: Change,
    pub debits_posted: Change,
    pub credits_pending: Change,
    pub credits_posted: Change,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Projection {
    pub first_lsn: u64,
    pub last_lsn: u64,
    pub accounts: Vec<(Account, u64)>,
    pub transfers: Vec<TransferRow>,
    /// Pending transfers resolved, with their new status (possibly ones in `transfers`).
    pub resolved: Vec<(u128, TransferStatus)>,
    /// Per account, in id order (so concurrent writers would lock rows in one order).
    pub balances: BTreeMap<u128, BalanceChange>,
    /// Ids that failed for a transient reason, with the result and the LSN.
    pub failed: Vec<(u128, CreateTransferResult, u64)>,
}

impl Projection {
    /// The projection of consecutive commits.
    pub fn of(commits: &[Arc<Commit>]) -> Projection {
        assert!(
            !commits.is_empty(),
            "a projection covers at least one commit"
        );
        // Nearly every record is a transfer: sized once rather than grown by doubling.
        let records = commits.iter().map(|commit| commit.records.len()).sum();
        let mut projection = Projection {
            first_lsn: commits[0].lsn,
            last_lsn: commits[commits.len() - 1].lsn,
            transfers: Vec::with_capacity(records),
            ..Projection::default()
        };
        for (index, commit) in commits.iter().enumerate() {
            assert_eq!(
                commit.lsn,
                projection.first_lsn + index as u64,
                "consecutive commits"
            );
            for record in &commit.records {
                projection.add(record, commit.lsn);
            }
        }
        projection
    }

    fn add(&mut self, record: &Record, lsn: u64) {
        let row = |transfer, status| TransferRow {
            transfer,
            status,
            lsn,
        };
        match *record {
            Record::AccountCreated(account) => self.accounts.push((account, lsn)),
            Record::TransferCreated(transfer) => {
                let status = if transfer.flags.contains(TransferFlags::PENDING) {
                    TransferStatus::Pending
                } else {
                    TransferStatus::Posted
                };
                self.transfers.push(row(transfer, status));
            }
            Record::PendingPosted { transfer, .. } => {
                self.transfers.push(row(transfer, TransferStatus::Posted));
                self.resolved
                    .push((transfer.pending_id, TransferStatus::Posted));
            }
            Record::PendingVoided { transfer, .. } => {
                self.transfers.push(row(transfer, TransferStatus::Voided));
                self.resolved
                    .push((transfer.pending_id, TransferStatus::Voided));
            }
            Record::PendingExpired { pending_id, .. } => {
                self.resolved.push((pending_id, TransferStatus::Expired));
            }
            Record::TransferFailed { id, result } => self.failed.push((id, result, lsn)),
        }
        for leg in record.legs().into_iter().flatten() {
            let change = self.balance(leg.account_id);
            let (pending, posted) = match leg.side {
                Side::Debit => (&mut change.debits_pending, &mut change.debits_posted),
                Side::Credit => (&mut change.credits_pending, &mut change.credits_posted),
            };
            pending.add(leg.pending_plus);
            pending.sub(leg.pending_minus);
            posted.add(leg.posted_plus);
        }
    }

    fn balance(&mut self, id: u128) -> &mut BalanceChange {
        self.balances.entry(id).or_default()
    }
}
