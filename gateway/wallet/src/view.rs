//! What a user sees of their account and their transfers.

use kizo_ledger::{Account, Transfer, TransferFlags};

use crate::codes::{DEPOSIT_CODE, WITHDRAWAL_CODE};

/// A wallet's balances as a user sees them, in minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Balance {
    /// What can be spent: posted credits less posted and held debits.
    pub available: u128,
    /// Pending debits (withdrawals under way).
    pub held: u128,
    /// Pending credits.
    pub incoming: u128,
    /// Posted credits less posted debits.
    pub posted: u128,
}

impl Balance {
    pub fn of(account: &Account) -> Self {
        // A wallet's debits never exceed its credits (the ledger's limit rule), so the sums
        // fit; a system account shown here shows zero rather than wrapping.
        let available = account
            .debits()
            .map_or(0, |debits| account.credits_posted.saturating_sub(debits));
        Self {
            available,
            held: account.debits_pending,
            incoming: account.credits_pending,
            posted: account.credits_posted.saturating_sub(account.debits_posted),
        }
    }
}

/// What a transfer was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferKind {
    Payment,
    Deposit,
    Withdrawal,
}

impl TransferKind {
    pub fn of(transfer: &Transfer) -> Self {
        match transfer.code {
            DEPOSIT_CODE => TransferKind::Deposit,
            WITHDRAWAL_CODE => TransferKind::Withdrawal,
            _ => TransferKind::Payment,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Payment => "payment",
            TransferKind::Deposit => "deposit",
            TransferKind::Withdrawal => "withdrawal",
        }
    }
}

/// Where a transfer stands, as its own record says (a hold that was later posted still reads
/// `Pending`: its post is another transfer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferState {
    Pending,
    Voided,
    Posted,
}

impl TransferState {
    pub fn of(transfer: &Transfer) -> Self {
        if transfer.flags.contains(TransferFlags::PENDING) {
            TransferState::Pending
        } else if transfer
            .flags
            .contains(TransferFlags::VOID_PENDING_TRANSFER)
        {
            TransferState::Voided
        } else {
            TransferState::Posted
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TransferState::Pending => "pending",
            TransferState::Voided => "voided",
            TransferState::Posted => "posted",
        }
    }
}

/// Whether a transfer moved money for good: a hold is not yet, its release never; its post is
/// the movement.
pub fn moved_money(transfer: &Transfer) -> bool {
    TransferState::of(transfer) == TransferState::Posted
}

#[cfg(test)]
mod tests {
    use super::*;
    use kizo_ledger::AccountFlags;

    #[test]
    fn a_balance_never_wraps() {
        let account = Account {
            credits_posted: 100,
            debits_posted: 30,
            debits_pending: 20,
            credits_pending: 5,
            ..Account::new(1, 840, 1)
        };
        let balance = Balance::of(&account);
        assert_eq!(
            balance,
            Balance {
                available: 50,
                held: 20,
                incoming: 5,
                posted: 70
            }
        );
        let overflowing = Account {
            debits_posted: u128::MAX,
            debits_pending: 1,
            flags: AccountFlags::empty(),
            ..Account::new(2, 840, 10)
        };
        assert_eq!(Balance::of(&overflowing).available, 0);
    }

    #[test]
    fn kinds_and_states_follow_codes_and_flags() {
        let mut transfer = Transfer::new(1, 2, 3, 4, 840, DEPOSIT_CODE);
        assert_eq!(TransferKind::of(&transfer), TransferKind::Deposit);
        assert!(moved_money(&transfer));
        transfer.flags = TransferFlags::PENDING;
        assert_eq!(TransferState::of(&transfer).as_str(), "pending");
        assert!(!moved_money(&transfer));
        transfer.flags = TransferFlags::VOID_PENDING_TRANSFER;
        assert_eq!(TransferState::of(&transfer), TransferState::Voided);
        transfer.code = 1;
        assert_eq!(TransferKind::of(&transfer).as_str(), "payment");
    }
}
