//! The ledger's records: accounts and transfers, in the spirit of TigerBeetle's 128-byte records.

/// Most events in one `create_accounts` / `create_transfers` batch, and most ids in one lookup.
pub const BATCH_EVENTS_MAX: usize = 8189;

/// `amount` of a post that posts the whole pending amount (a sentinel, not a limit).
pub const POST_WHOLE_PENDING_AMOUNT: u128 = u128::MAX;

/// Nanoseconds in one second: `timeout` is in seconds, timestamps in nanoseconds.
pub const NS_PER_SECOND: u64 = 1_000_000_000;

macro_rules! flag_set {
    ($(#[$meta:meta])* $name:ident: $repr:ty { $($(#[$fmeta:meta])* $flag:ident = $bit:expr,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name(pub $repr);

        impl $name {
            $($(#[$fmeta])* pub const $flag: $name = $name(1 << $bit);)*
            /// Every bit that has a meaning; the others are reserved.
            pub const KNOWN: $name = $name(0 $(| (1 << $bit))*);

            pub const fn empty() -> Self {
                Self(0)
            }
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }
            pub const fn union(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }
            pub const fn has_reserved_bits(self) -> bool {
                self.0 & !Self::KNOWN.0 != 0
            }
        }

        impl std::ops::BitOr for $name {
            type Output = Self;
            fn bitor(self, other: Self) -> Self {
                self.union(other)
            }
        }
    };
}

flag_set! {
    /// Flags of an account.
    AccountFlags: u16 {
        /// The event is linked to the next one: they succeed or fail together.
        LINKED = 0,
        /// A customer wallet: `debits_pending + debits_posted` never exceeds `credits_posted`.
        DEBITS_MUST_NOT_EXCEED_CREDITS = 1,
        /// `credits_pending + credits_posted` never exceeds `debits_posted`.
        CREDITS_MUST_NOT_EXCEED_DEBITS = 2,
        /// No new transfer may touch the account (a void of an earlier pending transfer still may).
        CLOSED = 3,
    }
}

flag_set! {
    /// Flags of a transfer.
    TransferFlags: u16 {
        /// The event is linked to the next one: they succeed or fail together.
        LINKED = 0,
        /// Two-phase: hold the amount until it is posted, voided or expires.
        PENDING = 1,
        /// Post (part of) the pending transfer named by `pending_id`.
        POST_PENDING_TRANSFER = 2,
        /// Void the pending transfer named by `pending_id`.
        VOID_PENDING_TRANSFER = 3,
        /// Move at most what the debit account holds (`amount` is an upper bound).
        BALANCING_DEBIT = 4,
        /// Move at most what keeps the credit account within its debits (`amount` is an upper bound).
        BALANCING_CREDIT = 5,
    }
}

/// An account. Only the four balances ever change after creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Account {
    pub id: u128,
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: AccountFlags,
    /// Assigned by the engine; must be zero in a request.
    pub timestamp: u64,
}

/// A transfer. Immutable once created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Transfer {
    pub id: u128,
    pub debit_account_id: u128,
    pub credit_account_id: u128,
    pub amount: u128,
    pub pending_id: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    /// Seconds after `timestamp` at which a pending transfer expires; 0 means never.
    pub timeout: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: TransferFlags,
    /// Assigned by the engine; must be zero in a request.
    pub timestamp: u64,
}

impl Account {
    /// A new account request: zero balances, no flags, no user data, no timestamp.
    pub fn new(id: u128, ledger: u32, code: u16) -> Self {
        Self {
            id,
            ledger,
            code,
            ..Self::default()
        }
    }

    /// Pending plus posted debits; `None` when the sum leaves u128.
    #[inline]
    pub fn debits(&self) -> Option<u128> {
        self.debits_pending.checked_add(self.debits_posted)
    }

    /// Pending plus posted credits; `None` when the sum leaves u128.
    #[inline]
    pub fn credits(&self) -> Option<u128> {
        self.credits_pending.checked_add(self.credits_posted)
    }

    /// Whether `debits` (pending plus posted) would break the account's debit limit:
    /// with `DEBITS_MUST_NOT_EXCEED_CREDITS`, they may not exceed the posted credits.
    /// The one place this rule is written; the decider, the shards, the read models and the
    /// snapshot check all ask here.
    #[inline]
    pub fn debits_exceed_limit(&self, debits: u128) -> bool {
        self.flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && debits > self.credits_posted
    }

    /// Whether `credits` (pending plus posted) would break the account's credit limit:
    /// with `CREDITS_MUST_NOT_EXCEED_DEBITS`, they may not exceed the posted debits.
    #[inline]
    pub fn credits_exceed_limit(&self, credits: u128) -> bool {
        self.flags
            .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
            && credits > self.debits_posted
    }

    /// Whether the balances as they stand keep the account's limits. A pending-plus-posted sum
    /// that leaves u128 breaks the limit of its side; an account without limits keeps them
    /// whatever its balances.
    #[inline]
    pub fn within_limits(&self) -> bool {
        let debits_break = self
            .flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && self
                .debits()
                .is_none_or(|debits| self.debits_exceed_limit(debits));
        let credits_break = self
            .flags
            .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
            && self
                .credits()
                .is_none_or(|credits| self.credits_exceed_limit(credits));
        !debits_break && !credits_break
    }
}

impl Transfer {
    /// A single-phase transfer request: no flags, no user data, no timestamp.
    pub fn new(
        id: u128,
        debit_account_id: u128,
        credit_account_id: u128,
        amount: u128,
        ledger: u32,
        code: u16,
    ) -> Self {
        Self {
            id,
            debit_account_id,
            credit_account_id,
            amount,
            ledger,
            code,
            ..Self::default()
        }
    }

    pub fn is_post_or_void(&self) -> bool {
        self.flags.contains(TransferFlags::POST_PENDING_TRANSFER)
            || self.flags.contains(TransferFlags::VOID_PENDING_TRANSFER)
    }

    /// When a pending transfer with a timeout expires (ns), if it does.
    pub fn expires_at(&self) -> Option<u64> {
        if self.flags.contains(TransferFlags::PENDING) && self.timeout != 0 {
            self.timestamp
                .checked_add(u64::from(self.timeout) * NS_PER_SECOND)
        } else {
            None
        }
    }
}

/// Where a pending transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PendingStatus {
    Pending,
    Posted,
    Voided,
    Expired,
}

/// A filter for [`crate::Engine::get_account_transfers`].
///
/// Timestamps are unique, so they page without gaps or repeats: for the next page oldest-first,
/// set `timestamp_min` to the last transfer's timestamp + 1; newest-first (`reversed`), set
/// `timestamp_max` to the last transfer's timestamp − 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountFilter {
    pub account_id: u128,
    /// Inclusive lower bound on the transfer timestamp; 0 means none.
    pub timestamp_min: u64,
    /// Inclusive upper bound on the transfer timestamp; 0 means none.
    pub timestamp_max: u64,
    /// At most this many transfers (1..=8189).
    pub limit: u32,
    /// Include transfers that debit the account.
    pub debits: bool,
    /// Include transfers that credit the account.
    pub credits: bool,
    /// Newest first.
    pub reversed: bool,
}

impl AccountFilter {
    /// Every transfer of `account_id`, oldest first, up to `limit`.
    pub fn all(account_id: u128, limit: u32) -> Self {
        Self {
            account_id,
            timestamp_min: 0,
            timestamp_max: 0,
            limit,
            debits: true,
            credits: true,
            reversed: false,
        }
    }
}
