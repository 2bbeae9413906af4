//! What the read models learn from a run of commits: new accounts, new transfers, the pending
//! transfers resolved, and each account's balance changes. Pure: the projector computes it,
//! then [`crate::read_models::ReadModels`] writes it in one transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use kizo_engine::{Account, Commit, Record, Transfer, TransferFlags};

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
        match *record {
            Record::AccountCreated(account) => self.accounts.push((account, lsn)),
            Record::TransferCreated(transfer) => {
                let pending = transfer.flags.contains(TransferFlags::PENDING);
                let status = if pending {
                    TransferStatus::Pending
                } else {
                    TransferStatus::Posted
                };
                self.transfers.push(TransferRow {
                    transfer,
                    status,
                    lsn,
                });
                if pending {
                    self.debit(&transfer).debits_pending.add(transfer.amount);
                    self.credit(&transfer).credits_pending.add(transfer.amount);
                } else {
                    self.debit(&transfer).debits_posted.add(transfer.amount);
                    self.credit(&transfer).credits_posted.add(transfer.amount);
                }
            }
            Record::PendingPosted {
                transfer,
                pending_amount,
            } => {
                self.transfers.push(TransferRow {
                    transfer,
                    status: TransferStatus::Posted,
                    lsn,
                });
                self.resolved
                    .push((transfer.pending_id, TransferStatus::Posted));
                let debit = self.debit(&transfer);
                debit.debits_pending.sub(pending_amount);
                debit.debits_posted.add(transfer.amount);
                let credit = self.credit(&transfer);
                credit.credits_pending.sub(pending_amount);
                credit.credits_posted.add(transfer.amount);
            }
            Record::PendingVoided {
                transfer,
                pending_amount,
            } => {
                self.transfers.push(TransferRow {
                    transfer,
                    status: TransferStatus::Voided,
                    lsn,
                });
                self.resolved
                    .push((transfer.pending_id, TransferStatus::Voided));
                self.debit(&transfer).debits_pending.sub(pending_amount);
                self.credit(&transfer).credits_pending.sub(pending_amount);
            }
            Record::PendingExpired {
                pending_id,
                debit_account_id,
                credit_account_id,
                amount,
            } => {
                self.resolved.push((pending_id, TransferStatus::Expired));
                self.balance(debit_account_id).debits_pending.sub(amount);
                self.balance(credit_account_id).credits_pending.sub(amount);
            }
            // A failed id is not a transfer; the engine alone remembers it.
            Record::TransferFailed { .. } => {}
        }
    }

    fn balance(&mut self, id: u128) -> &mut BalanceChange {
        self.balances.entry(id).or_default()
    }

    fn debit(&mut self, transfer: &Transfer) -> &mut BalanceChange {
        self.balance(transfer.debit_account_id)
    }

    fn credit(&mut self, transfer: &Transfer) -> &mut BalanceChange {
        self.balance(transfer.credit_account_id)
    }
}
