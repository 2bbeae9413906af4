//! The write-ahead-log records: the effects of a decided round, applied by every shard to the part
//! of the state it owns. Applying a record never checks a rule: rules were checked when it was
//! decided, so replaying the log rebuilds exactly the state that was acknowledged.

use crate::results::CreateTransferResult;
use crate::types::{Account, Transfer};

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

/// One durable unit of the log: the records of one round, all or nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// Log sequence number: 1 for the first commit, then +1 each, never a gap.
    pub lsn: u64,
    /// The largest timestamp assigned in the round, so that a restart never reuses one.
    pub timestamp_max: u64,
    pub records: Vec<Record>,
}
