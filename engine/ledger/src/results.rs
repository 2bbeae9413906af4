//! Result codes of `create_accounts` and `create_transfers`: one per event, stable names.
//!
//! The variants of each enum are listed in the order in which they are checked (their precedence):
//! when an event breaks several rules, it gets the earliest. The numeric values and the snake_case
//! names are part of the API and never change meaning.

macro_rules! result_codes {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $value:expr => $code:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum $name {
            $($variant = $value,)*
        }

        impl $name {
            /// Every result, in precedence order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The stable, greppable name of the result.
            pub const fn code(self) -> &'static str {
                match self {
                    $($name::$variant => $code,)*
                }
            }

            pub fn from_u32(value: u32) -> Option<Self> {
                match value {
                    $($value => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.code())
            }
        }
    };
}

result_codes! {
    /// The outcome of one `create_accounts` event.
    CreateAccountResult {
        Created = 0 => "created",
        LinkedEventFailed = 1 => "linked_event_failed",
        LinkedEventChainOpen = 2 => "linked_event_chain_open",
        TimestampMustBeZero = 3 => "timestamp_must_be_zero",
        ReservedFlag = 4 => "reserved_flag",
        IdMustNotBeZero = 5 => "id_must_not_be_zero",
        IdMustNotBeIntMax = 6 => "id_must_not_be_int_max",
        FlagsAreMutuallyExclusive = 7 => "flags_are_mutually_exclusive",
        DebitsPendingMustBeZero = 8 => "debits_pending_must_be_zero",
        DebitsPostedMustBeZero = 9 => "debits_posted_must_be_zero",
        CreditsPendingMustBeZero = 10 => "credits_pending_must_be_zero",
        CreditsPostedMustBeZero = 11 => "credits_posted_must_be_zero",
        LedgerMustNotBeZero = 12 => "ledger_must_not_be_zero",
        CodeMustNotBeZero = 13 => "code_must_not_be_zero",
        ExistsWithDifferentFlags = 14 => "exists_with_different_flags",
        ExistsWithDifferentUserData128 = 15 => "exists_with_different_user_data_128",
        ExistsWithDifferentUserData64 = 16 => "exists_with_different_user_data_64",
        ExistsWithDifferentUserData32 = 17 => "exists_with_different_user_data_32",
        ExistsWithDifferentLedger = 18 => "exists_with_different_ledger",
        ExistsWithDifferentCode = 19 => "exists_with_different_code",
        Exists = 20 => "exists",
    }
}

result_codes! {
    /// The outcome of one `create_transfers` event.
    CreateTransferResult {
        Created = 0 => "created",
        LinkedEventFailed = 1 => "linked_event_failed",
        LinkedEventChainOpen = 2 => "linked_event_chain_open",
        TimestampMustBeZero = 3 => "timestamp_must_be_zero",
        ReservedFlag = 4 => "reserved_flag",
        IdMustNotBeZero = 5 => "id_must_not_be_zero",
        IdMustNotBeIntMax = 6 => "id_must_not_be_int_max",
        FlagsAreMutuallyExclusive = 7 => "flags_are_mutually_exclusive",
        DebitAccountIdMustNotBeZero = 8 => "debit_account_id_must_not_be_zero",
        DebitAccountIdMustNotBeIntMax = 9 => "debit_account_id_must_not_be_int_max",
        CreditAccountIdMustNotBeZero = 10 => "credit_account_id_must_not_be_zero",
        CreditAccountIdMustNotBeIntMax = 11 => "credit_account_id_must_not_be_int_max",
        AccountsMustBeDifferent = 12 => "accounts_must_be_different",
        PendingIdMustBeZero = 13 => "pending_id_must_be_zero",
        PendingIdMustNotBeZero = 14 => "pending_id_must_not_be_zero",
        PendingIdMustNotBeIntMax = 15 => "pending_id_must_not_be_int_max",
        PendingIdMustBeDifferent = 16 => "pending_id_must_be_different",
        TimeoutReservedForPendingTransfer = 17 => "timeout_reserved_for_pending_transfer",
        AmountMustNotBeZero = 18 => "amount_must_not_be_zero",
        LedgerMustNotBeZero = 19 => "ledger_must_not_be_zero",
        CodeMustNotBeZero = 20 => "code_must_not_be_zero",
        ExistsWithDifferentFlags = 21 => "exists_with_different_flags",
        ExistsWithDifferentPendingId = 22 => "exists_with_different_pending_id",
        ExistsWithDifferentTimeout = 23 => "exists_with_different_timeout",
        ExistsWithDifferentDebitAccountId = 24 => "exists_with_different_debit_account_id",
        ExistsWithDifferentCreditAccountId = 25 => "exists_with_different_credit_account_id",
        ExistsWithDifferentAmount = 26 => "exists_with_different_amount",
        ExistsWithDifferentUserData128 = 27 => "exists_with_different_user_data_128",
        ExistsWithDifferentUserData64 = 28 => "exists_with_different_user_data_64",
        ExistsWithDifferentUserData32 = 29 => "exists_with_different_user_data_32",
        ExistsWithDifferentLedger = 30 => "exists_with_different_ledger",
        ExistsWithDifferentCode = 31 => "exists_with_different_code",
        Exists = 32 => "exists",
        IdAlreadyFailed = 33 => "id_already_failed",
        DebitAccountNotFound = 34 => "debit_account_not_found",
        CreditAccountNotFound = 35 => "credit_account_not_found",
        PendingTransferNotFound = 36 => "pending_transfer_not_found",
        PendingTransferNotPending = 37 => "pending_transfer_not_pending",
        PendingTransferHasDifferentDebitAccountId = 38 => "pending_transfer_has_different_debit_account_id",
        PendingTransferHasDifferentCreditAccountId = 39 => "pending_transfer_has_different_credit_account_id",
        PendingTransferHasDifferentLedger = 40 => "pending_transfer_has_different_ledger",
        PendingTransferHasDifferentCode = 41 => "pending_transfer_has_different_code",
        ExceedsPendingTransferAmount = 42 => "exceeds_pending_transfer_amount",
        PendingTransferHasDifferentAmount = 43 => "pending_transfer_has_different_amount",
        PendingTransferAlreadyPosted = 44 => "pending_transfer_already_posted",
        PendingTransferAlreadyVoided = 45 => "pending_transfer_already_voided",
        PendingTransferExpired = 46 => "pending_transfer_expired",
        AccountsMustHaveTheSameLedger = 47 => "accounts_must_have_the_same_ledger",
        TransferMustHaveTheSameLedgerAsAccounts = 48 => "transfer_must_have_the_same_ledger_as_accounts",
        DebitAccountAlreadyClosed = 49 => "debit_account_already_closed",
        CreditAccountAlreadyClosed = 50 => "credit_account_already_closed",
        OverflowsDebitsPending = 51 => "overflows_debits_pending",
        OverflowsCreditsPending = 52 => "overflows_credits_pending",
        OverflowsDebitsPosted = 53 => "overflows_debits_posted",
        OverflowsCreditsPosted = 54 => "overflows_credits_posted",
        OverflowsDebits = 55 => "overflows_debits",
        OverflowsCredits = 56 => "overflows_credits",
        OverflowsTimeout = 57 => "overflows_timeout",
        ExceedsCredits = 58 => "exceeds_credits",
        ExceedsDebits = 59 => "exceeds_debits",
    }
}

impl CreateTransferResult {
    /// A failure that depends on the ledger's state at the time (rather than on the event alone).
    /// The id of such a failure is remembered, so that a retry gets `id_already_failed` and an
    /// outcome never flips from failed to created.
    pub fn is_transient(self) -> bool {
        use CreateTransferResult::*;
        matches!(
            self,
            DebitAccountNotFound
                | CreditAccountNotFound
                | PendingTransferNotFound
                | PendingTransferExpired
                | DebitAccountAlreadyClosed
                | CreditAccountAlreadyClosed
                | OverflowsDebitsPending
                | OverflowsCreditsPending
                | OverflowsDebitsPosted
                | OverflowsCreditsPosted
                | OverflowsDebits
                | OverflowsCredits
                | ExceedsCredits
                | ExceedsDebits
        )
    }
}
