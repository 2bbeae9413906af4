//! The wallet's part of the ledger: which codes and flags its accounts and transfers carry.
//! Stored in every account and transfer: never renumber.

use kizo_ledger::{Account, AccountFlags};

pub use kizo_settlement::{AMOUNT_MAX, DEPOSIT_CODE, WITHDRAWAL_CODE};

/// The ledger code of a user's wallet account.
pub const WALLET_CODE: u16 = 1;
/// The ledger code of a payment between users.
pub const PAYMENT_CODE: u16 = 1;
/// The ledger code of the system account that stands for money at the bank.
pub const BANK_ACCOUNT_CODE: u16 = 10;

/// The longest note on a payment, in characters.
pub const NOTE_MAX_CHARS: usize = 280;
/// The longest first or last name of a user, in characters.
pub const NAME_MAX_CHARS: usize = 100;
/// `user_data_32` of a payment that has a note (the note is kept apart, by id and fingerprint).
pub const HAS_NOTE: u32 = 1;

/// A user's wallet as a new account: it can never go below zero.
pub fn wallet_account(id: u128, ledger: u32) -> Account {
    Account {
        flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        ..Account::new(id, ledger, WALLET_CODE)
    }
}

/// Whether `account` is a user's wallet: the only kind of account a payment may go to.
/// System accounts (the bank's, and any other the ledger keeps for itself) never receive a
/// payment from a user, or reconciliation against the bank would no longer add up.
pub fn is_wallet(account: &Account) -> bool {
    account.code == WALLET_CODE
        && account
            .flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
}

/// The system account that stands for money at the bank, in `ledger`: no limits, since the
/// bank's side may be owed either way.
pub fn bank_account(ledger: u32) -> Account {
    bank_account_in(ledger, 0)
}

/// A cluster's bank account of `ledger` in `partition` ([`crate::ids::bank_account_id_in`]).
pub fn bank_account_in(ledger: u32, partition: u32) -> Account {
    Account::new(
        crate::ids::bank_account_id_in(ledger, partition),
        ledger,
        BANK_ACCOUNT_CODE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wallets_are_wallets() {
        assert!(is_wallet(&wallet_account(7, 840)));
        assert!(!is_wallet(&bank_account(840)));
        // A wallet's code without a wallet's limit is not one either.
        assert!(!is_wallet(&Account::new(7, 840, WALLET_CODE)));
    }
}
