//! The write-ahead-log records: the effects of a decided round, applied by every shard to the part
//! of the state it owns. Applying a record never checks a rule: rules were checked when it was
//! decided, so replaying the log rebuilds exactly the state that was acknowledged.

use crate::results::CreateTransferResult;
use crate::types::{Account, Transfer, TransferFlags};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// A new account, with zero balances and its assigned timestamp.
    AccountCreated(Account),
    /// A new single-phase or pending transfer, with its assigned timestamp.
    TransferCreated(Transfer),
    /// A post of a pending transfer: `transfer.amount` becomes posted, the whole `pending_amount`
    /// leaves the pending balances. `transfer` has the accounts, ledger and code filled in.
    PendingPosted {
        transfer: Transfer,
        pending_amount: u128,
    },
    /// A void of a pending transfer: the whole `pending_amount` leaves the pending balances.
    PendingVoided {
        transfer: Transfer,
        pending_amount: u128,
    },
    /// A pending transfer's timeout passed: its amount leaves the pending balances.
    PendingExpired {
        pending_id: u128,
        debit_account_id: u128,
        credit_account_id: u128,
        amount: u128,
    },
    /// An id failed for a transient reason; a retry gets `id_already_failed`.
    TransferFailed {
        id: u128,
        result: CreateTransferResult,
    },
}

/// Which side of a transfer an account is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Debit,
    Credit,
}

/// One account's part of a record's effect on balances: what is added to and taken from the
/// pending balance of its side, and what is added to the posted one. Posted balances only grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leg {
    pub account_id: u128,
    pub side: Side,
    pub pending_plus: u128,
    pub pending_minus: u128,
    pub posted_plus: u128,
}

impl Leg {
    /// Applies the leg to the account's balances, in place. Refused, with the account
    /// unchanged, when a balance would leave u128 or more would be released than is pending
    /// (which a decided commit never does).
    #[inline]
    pub fn apply(&self, account: &mut Account) -> Result<(), LegOverflow> {
        let (pending, posted) = match self.side {
            Side::Debit => (&mut account.debits_pending, &mut account.debits_posted),
            Side::Credit => (&mut account.credits_pending, &mut account.credits_posted),
        };
        let pending_after = pending
            .checked_add(self.pending_plus)
            .and_then(|p| p.checked_sub(self.pending_minus))
            .ok_or(LegOverflow)?;
        let posted_after = posted.checked_add(self.posted_plus).ok_or(LegOverflow)?;
        *pending = pending_after;
        *posted = posted_after;
        Ok(())
    }
}

/// A leg that would take a balance outside u128 or release more than is pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a balance would leave u128, or more would be released than is pending")]
pub struct LegOverflow;

impl Record {
    /// How the record moves balances: a debit leg and a credit leg, or nothing (a new account,
    /// a failed id). The one place a record's balance effects are written; the shards' apply
    /// and the read models' projection both read them from here.
    #[inline(always)]
    pub fn legs(&self) -> Option<[Leg; 2]> {
        // (debit account, credit account, pending plus, pending minus, posted plus); matched by
        // reference: a record is 150 bytes, and the shards ask every record of every commit.
        let (debit_account_id, credit_account_id, pending_plus, pending_minus, posted_plus) =
            match self {
                Record::AccountCreated(_) | Record::TransferFailed { .. } => return None,
                Record::TransferCreated(t) if t.flags.contains(TransferFlags::PENDING) => {
                    (t.debit_account_id, t.credit_account_id, t.amount, 0, 0)
                }
                Record::TransferCreated(t) => {
                    (t.debit_account_id, t.credit_account_id, 0, 0, t.amount)
                }
                Record::PendingPosted {
                    transfer: t,
                    pending_amount,
                } => (
                    t.debit_account_id,
                    t.credit_account_id,
                    0,
                    *pending_amount,
                    t.amount,
                ),
                Record::PendingVoided {
                    transfer: t,
                    pending_amount,
                } => (
                    t.debit_account_id,
                    t.credit_account_id,
                    0,
                    *pending_amount,
                    0,
                ),
                Record::PendingExpired {
                    debit_account_id,
                    credit_account_id,
                    amount,
                    ..
                } => (*debit_account_id, *credit_account_id, 0, *amount, 0),
            };
        let leg = |account_id, side| Leg {
            account_id,
            side,
            pending_plus,
            pending_minus,
            posted_plus,
        };
        Some([
            leg(debit_account_id, Side::Debit),
            leg(credit_account_id, Side::Credit),
        ])
    }

    /// The transfer the record stores in its accounts' history, if it stores one (an expiry
    /// changes balances but is not a transfer).
    pub fn transfer(&self) -> Option<&Transfer> {
        match self {
            Record::TransferCreated(transfer)
            | Record::PendingPosted { transfer, .. }
            | Record::PendingVoided { transfer, .. } => Some(transfer),
            Record::AccountCreated(_)
            | Record::PendingExpired { .. }
            | Record::TransferFailed { .. } => None,
        }
    }
}

/// One durable unit of the log: the records of one round, all or nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// Log sequence number: 1 for the first commit, then +1 each, never a gap.
    pub lsn: u64,
    /// The largest timestamp assigned in the round, so that a restart never reuses one.
    pub timestamp_max: u64,
    pub records: Vec<Record>,
}
