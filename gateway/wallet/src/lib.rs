//! The wallet, as rules: what a user's account is in the ledger, how the ids of the wallet API
//! are derived, what a user's balance shows, and the sums of a month. The gateway's handlers
//! parse and authenticate a request, call these, and map the answer; the rules live here once.
//!
//! - [`codes`]: ledger codes, flags and limits of the wallet's accounts and transfers.
//! - [`ids`]: every id the wallet derives (wallets, transfers, settlements, bank accounts,
//!   fingerprints). These derivations are stored ids: they must never change.
//! - [`view`]: the balance and the kind and status of a transfer, as a user sees them.
//! - [`daily`]: the balance at the end of each of the last days, for the dashboard's chart,
//!   as a sans-IO pager.
//! - [`month`]: this month's sums, paged over an account's history with a page cap and
//!   checked arithmetic, as a sans-IO pager.
//!
//! This crate never contains: I/O, an async runtime, a clock, randomness or logging. Time comes
//! in as nanoseconds; pages of transfers come in as slices (checked by
//! `sim/tests/pure_crates.rs`).

pub mod codes;
pub mod daily;
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
        "note: at most {} characters, none of them control, format (bidi, zero-width) or line separator characters",
        codes::NOTE_MAX_CHARS
    )]
    NoteInvalid,
    #[error("the month holds more than {} pages of transfers", month::PAGES_MAX)]
    MonthTooLong,
    #[error("a sum of the month leaves its range")]
    Overflow,
    #[error(
        "name: 1 to {} characters, none of them control, format (bidi, zero-width) or line separator characters",
        codes::NAME_MAX_CHARS
    )]
    NameInvalid,
}

/// Characters that no name or note may hold: control characters (Cc), format characters (Cf:
/// bidi controls, zero-width spaces and joiners, the soft hyphen) and line and paragraph
/// separators (Zl, Zp). They make text read other than it is, in search results, a payment's
/// party or a CSV, and NUL is refused by the database.
pub fn is_hidden_or_control(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// A user's first or last name as kept: trimmed, 1 to [`codes::NAME_MAX_CHARS`] characters,
/// none of them hidden or control characters.
pub fn checked_name(name: &str) -> Result<String, WalletError> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > codes::NAME_MAX_CHARS
        || name.chars().any(is_hidden_or_control)
    {
        return Err(WalletError::NameInvalid);
    }
    Ok(name.to_string())
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
    if note.chars().count() > codes::NOTE_MAX_CHARS || note.chars().any(is_hidden_or_control) {
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
    fn names_and_notes_refuse_what_makes_text_read_other_than_it_is() {
        assert_eq!(checked_name("  Ada "), Ok("Ada".into()));
        assert_eq!(
            checked_name("Zoë-Ångström O'Neil"),
            Ok("Zoë-Ångström O'Neil".into())
        );
        for hidden in [
            "Ada\u{0}",       // NUL
            "Ad\u{7}a",       // BEL (Cc)
            "\u{202E}adA",    // right-to-left override (Cf)
            "Ada\u{2066}x",   // left-to-right isolate (Cf)
            "A\u{200B}da",    // zero-width space (Cf)
            "A\u{200D}da",    // zero-width joiner (Cf)
            "A\u{AD}da",      // soft hyphen (Cf)
            "\u{FEFF}Ada",    // byte order mark (Cf)
            "Ada\u{2028}Eve", // line separator (Zl)
            "Ada\u{2029}Eve", // paragraph separator (Zp)
        ] {
            assert_eq!(
                checked_name(hidden),
                Err(WalletError::NameInvalid),
                "{hidden:?}"
            );
            assert_eq!(
                checked_note(Some(hidden)),
                Err(WalletError::NoteInvalid),
                "{hidden:?}"
            );
        }
        assert_eq!(checked_name(" "), Err(WalletError::NameInvalid));
        let longest = "é".repeat(codes::NAME_MAX_CHARS);
        assert_eq!(checked_name(&longest), Ok(longest.clone()));
        assert_eq!(
            checked_name(&format!("{longest}é")),
            Err(WalletError::NameInvalid)
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
