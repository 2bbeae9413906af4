//! The wallet, as rules: what a user's account is in the ledger, how the ids of the wallet API
//! are derived, what a user's balance shows, and the sums of a month. The gateway's handlers
//! parse and authenticate a request, call these, and map the answer; the rules live here once.
//!
//! - [`codes`]: ledger codes, flags and limits of the wallet's accounts and transfers.
//! - [`ids`]: every id the wallet derives (wallets, transfers, settlements, bank accounts,
//!   fingerprints). These derivations are stored ids: they must never change.
//! - [`view`]: the balance and the kind and status of a transfer, as a user sees them.
//! - [`month`]: this month's sums, paged over an account's history with a page cap and
//!   checked arithmetic, as a sans-IO pager.
//!
//! This crate never contains: I/O, an async runtime, a clock, randomness or logging. Time comes
//! in as nanoseconds; pages of transfers come in as slices (checked by
//! `sim/tests/pure_crates.rs`).

pub mod codes;
pub mod ids;
pub mod month;
pub mod view;

pub use codes::{wallet_account, AMOUNT_MAX};

/// Why a wallet request or computation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    #[error("amount: 1 to {AMOUNT_MAX} minor units")]
    AmountOutOfRange,
    #[error(
        "note: at most {} characters, none of them control characters",
        codes::NOTE_MAX_CHARS
    )]
    NoteInvalid,
    #[error("the month holds more than {} pages of transfers", month::PAGES_MAX)]
    MonthTooLong,
    #[error("a sum of the month leaves its range")]
    Overflow,
}

/// `amount` if a payment, deposit or withdrawal may move it.
pub fn checked_amount(amount: u64) -> Result<u64, WalletError> {
    if amount == 0 || amount > AMOUNT_MAX {
        return Err(WalletError::AmountOutOfRange);
    }
    Ok(amount)
}

/// A note as kept: trimmed; empty is none.
pub fn checked_note(note: Option<&str>) -> Result<Option<String>, WalletError> {
    let Some(note) = note else { return Ok(None) };
    let note = note.trim();
    if note.chars().count() > codes::NOTE_MAX_CHARS || note.chars().any(char::is_control) {
        return Err(WalletError::NoteInvalid);
    }
    Ok((!note.is_empty()).then(|| note.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_bounded_on_both_sides() {
        assert_eq!(checked_amount(0), Err(WalletError::AmountOutOfRange));
        assert_eq!(checked_amount(1), Ok(1));
        assert_eq!(checked_amount(AMOUNT_MAX), Ok(AMOUNT_MAX));
        assert_eq!(
            checked_amount(AMOUNT_MAX + 1),
            Err(WalletError::AmountOutOfRange)
        );
    }

    #[test]
    fn notes_are_trimmed_and_bounded() {
        assert_eq!(checked_note(None), Ok(None));
        assert_eq!(checked_note(Some("  ")), Ok(None));
        assert_eq!(checked_note(Some(" rent ")), Ok(Some("rent".into())));
        assert_eq!(checked_note(Some("a\nb")), Err(WalletError::NoteInvalid));
        let long = "é".repeat(codes::NOTE_MAX_CHARS + 1);
        assert_eq!(checked_note(Some(&long)), Err(WalletError::NoteInvalid));
        let longest = "é".repeat(codes::NOTE_MAX_CHARS);
        assert_eq!(checked_note(Some(&longest)), Ok(Some(longest.clone())));
    }
}
