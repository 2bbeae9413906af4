//! Money in and out through a bank: one settlement (a deposit or a withdrawal) as a pure state
//! machine. It decides what to do next and what each answer means; the driver (the settlement
//! actors in production, the simulator in tests) persists, calls the bank and the ledger, and
//! feeds the outcomes back. No I/O, no clock, no randomness: time and jitter come in as numbers.
//!
//! This crate never contains: I/O, an async runtime, actors, threads, a clock, randomness or
//! logging; its manifest depends on the pure ledger crate alone (checked by
//! `sim/tests/pure_crates.rs`).
//!
//! The rules that keep the money safe:
//! - **Logged before acted on.** [`Settlement::start`] returns the state to persist *before*
//!   the action is performed: a bank call is recorded as an attempt in doubt first, so a crash
//!   during the call leaves a settlement that asks the bank before it sends anything again.
//! - **At most one payout.** After an attempt whose outcome is unknown (a timeout, a lost
//!   connection, a 5xx), the next action is always a status query, never a new request; a new
//!   request goes out only when the bank says it has no movement with our reference. The bank
//!   also refuses to move money twice for one reference.
//! - **Held funds are never spendable.** A withdrawal holds its amount (a pending transfer) before
//!   the bank is asked; the hold is posted when the bank paid, voided only when the bank
//!   definitely did not.
//! - **Every settlement ends.** Retries are bounded; when they run out with the outcome unknown,
//!   the settlement is `needs_review` (a withdrawal keeps its hold) until reconciliation
//!   re-drives it.

use kizo_ledger::types::{Transfer, TransferFlags};

pub mod reconcile;

/// Ledger codes of the transfers settlements make.
pub const DEPOSIT_CODE: u16 = 2;
pub const WITHDRAWAL_CODE: u16 = 3;

/// The largest amount one payment between users, one deposit or one withdrawal moves, in minor
/// units. The one definition: the wallet, the settlements and the mock bank all refuse more.
pub const AMOUNT_MAX: u64 = 1_000_000_000_000;

/// The longest reason kept (a bank's decline text is cut to this many bytes, on a char boundary).
pub const REASON_BYTES_MAX: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Money from the user's bank into their wallet (a collection at the bank).
    Deposit,
    /// Money from the wallet to the user's bank (a payout at the bank).
    Withdrawal,
}

impl Kind {
    pub const fn code(self) -> &'static str {
        match self {
            Kind::Deposit => "deposit",
            Kind::Withdrawal => "withdrawal",
        }
    }

    pub fn parse(code: &str) -> Option<Kind> {
        match code {
            "deposit" => Some(Kind::Deposit),
            "withdrawal" => Some(Kind::Withdrawal),
            _ => None,
        }
    }
}

/// What a user sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Pending,
    Processing,
    Succeeded,
    Failed,
    NeedsReview,
}

impl Status {
    pub const fn code(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::NeedsReview => "needs_review",
        }
    }

    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Processing,
        Status::Succeeded,
        Status::Failed,
        Status::NeedsReview,
    ];
}

/// Where a settlement stands: what it does next. Persisted as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// A withdrawal whose funds are not held yet.
    Hold,
    /// Ask the bank to move the money (when due). The bank has no movement for it.
    Send,
    /// An attempt's outcome is unknown: ask the bank what happened (when due).
    Check,
    /// The bank moved the money: record it in the ledger (credit the deposit, post the hold).
    Settle,
    /// The bank definitely did not move it: release the withdrawal's hold.
    Release,
    /// Final (until reconciliation re-drives a `needs_review`).
    Done(Status),
}

impl Phase {
    pub const fn code(self) -> &'static str {
        match self {
            Phase::Hold => "hold",
            Phase::Send => "send",
            Phase::Check => "check",
            Phase::Settle => "settle",
            Phase::Release => "release",
            Phase::Done(Status::Succeeded) => "succeeded",
            Phase::Done(Status::Failed) => "failed",
            Phase::Done(_) => "needs_review",
        }
    }

    pub fn parse(code: &str) -> Option<Phase> {
        Some(match code {
            "hold" => Phase::Hold,
            "send" => Phase::Send,
            "check" => Phase::Check,
            "settle" => Phase::Settle,
            "release" => Phase::Release,
            "succeeded" => Phase::Done(Status::Succeeded),
            "failed" => Phase::Done(Status::Failed),
            "needs_review" => Phase::Done(Status::NeedsReview),
            _ => return None,
        })
    }
}

/// Retries and their timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Bank calls (requests and status queries) before an unknown outcome becomes
    /// `needs_review`.
    pub attempts_max: u32,
    /// The first retry's delay; each further one doubles, up to `backoff_max_ms`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// How long one bank call may take before its outcome counts as unknown.
    pub attempt_timeout_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            attempts_max: 8,
            backoff_base_ms: 1_000,
            backoff_max_ms: 60_000,
            attempt_timeout_ms: 3_000,
        }
    }
}

impl Policy {
    /// The delay before the retry that follows `attempts` calls: exponential, with "equal
    /// jitter" (half fixed, half drawn from `jitter`), so that retries of many settlements
    /// after one outage do not arrive together.
    pub fn backoff_ms(&self, attempts: u32, jitter: u64) -> u64 {
        let exponent = attempts.saturating_sub(1).min(32);
        let ceiling = self
            .backoff_base_ms
            .saturating_mul(1u64 << exponent)
            .min(self.backoff_max_ms)
            .max(1);
        let half = ceiling / 2;
        half + jitter % (ceiling - half + 1)
    }
}

/// One deposit or withdrawal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// Also the reference the bank knows it by.
    pub id: u128,
    pub kind: Kind,
    /// The wallet credited or debited.
    pub account_id: u128,
    /// The system account that stands for money at the bank, in the wallet's ledger.
    pub bank_account_id: u128,
    pub ledger: u32,
    pub amount: u64,
    pub phase: Phase,
    /// Bank calls made in this round of retries (reset when reconciliation re-drives it).
    pub attempts: u32,
    /// Bank calls made in all.
    pub attempts_total: u32,
    /// Not to be acted on before this time (ms since 1970).
    pub due_ms: u64,
    /// Why it failed or needs review, as a stable code or the bank's words.
    pub reason: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// What the driver does next, after persisting the settlement that [`Settlement::start`]
/// returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create this pending transfer (the withdrawal's hold).
    Hold(Transfer),
    /// Ask the bank to move the money (a collection or a payout with our reference).
    Send,
    /// Ask the bank what it did with our reference.
    Check,
    /// Create this transfer (the deposit's credit, or the post of the withdrawal's hold).
    Settle(Transfer),
    /// Create this transfer (the void of the withdrawal's hold).
    Release(Transfer),
    /// Nothing before this time.
    Wait(u64),
    /// Final.
    Done,
}

/// What the bank said, as far as the driver could tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BankOutcome {
    /// The money moved (now, or before: a repeated reference answers what it did).
    Moved { amount: u64 },
    /// The bank refused, definitely, with its reason.
    Declined(String),
    /// A status query: the bank has no movement with this reference.
    NotFound,
    /// A timeout, a lost connection, a 5xx: it may or may not have moved the money.
    Unknown(String),
}

/// What the ledger said to a transfer the settlement asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerOutcome {
    /// Created, or created before (`exists`).
    Done,
    /// Refused for good, with the engine's result code.
    Refused(&'static str),
    /// The engine could not be asked (unavailable, overloaded): try again later.
    Unavailable,
}

/// What came back from the last action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionOutcome {
    Bank(BankOutcome),
    Ledger(LedgerOutcome),
}

/// How long to wait before asking an unavailable ledger again.
pub const LEDGER_RETRY_MS: u64 = 500;

/// The ids of a settlement's ledger transfers, derived from its id so that a retry after a
/// crash creates nothing twice (the engine answers `exists`).
pub fn transfer_id(settlement_id: u128, leg: u8) -> u128 {
    // splitmix-style mixing of (id, leg): stable, never 0 or u128::MAX for the ids we make.
    let mut x =
        settlement_id ^ (u128::from(leg) << 120) ^ 0x6b69_7a6f_5f73_6574_746c_656d_656e_7400;
    x ^= x >> 67;
    x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    x ^= x >> 61;
    x.clamp(1, u128::MAX - 1)
}

const LEG_CREDIT_OR_HOLD: u8 = 1;
const LEG_POST: u8 = 2;
const LEG_VOID: u8 = 3;

impl Settlement {
    /// A new settlement, not yet persisted: a withdrawal starts by holding its funds, a deposit
    /// by asking the bank.
    pub fn new(
        id: u128,
        kind: Kind,
        account_id: u128,
        bank_account_id: u128,
        ledger: u32,
        amount: u64,
        now_ms: u64,
    ) -> Settlement {
        assert!(amount > 0 && amount <= AMOUNT_MAX);
        Settlement {
            id,
            kind,
            account_id,
            bank_account_id,
            ledger,
            amount,
            phase: match kind {
                Kind::Deposit => Phase::Send,
                Kind::Withdrawal => Phase::Hold,
            },
            attempts: 0,
            attempts_total: 0,
            due_ms: now_ms,
            reason: None,
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }

    pub fn status(&self) -> Status {
        match self.phase {
            Phase::Done(status) => status,
            Phase::Hold => Status::Pending,
            Phase::Send if self.attempts_total == 0 => Status::Pending,
            _ => Status::Processing,
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(self.phase, Phase::Done(Status::Succeeded | Status::Failed))
    }

    /// Whether the withdrawal's amount is held in the ledger now (the hold created, not yet
    /// posted or voided). Reconciliation compares this with the bank account's pending credits.
    pub fn holds_funds(&self) -> bool {
        self.kind == Kind::Withdrawal
            && matches!(
                self.phase,
                Phase::Send
                    | Phase::Check
                    | Phase::Settle
                    | Phase::Release
                    | Phase::Done(Status::NeedsReview)
            )
    }

    /// The withdrawal's hold: a pending transfer from the wallet to the bank account, without
    /// a timeout (it ends only by post or void).
    pub fn hold_transfer(&self) -> Transfer {
        debug_assert_eq!(self.kind, Kind::Withdrawal);
        Transfer {
            flags: TransferFlags::PENDING,
            user_data_128: self.id,
            ..Transfer::new(
                transfer_id(self.id, LEG_CREDIT_OR_HOLD),
                self.account_id,
                self.bank_account_id,
                u128::from(self.amount),
                self.ledger,
                WITHDRAWAL_CODE,
            )
        }
    }

    /// The transfer that records the bank's movement in the ledger.
    pub fn settle_transfer(&self) -> Transfer {
        match self.kind {
            Kind::Deposit => Transfer {
                user_data_128: self.id,
                ..Transfer::new(
                    transfer_id(self.id, LEG_CREDIT_OR_HOLD),
                    self.bank_account_id,
                    self.account_id,
                    u128::from(self.amount),
                    self.ledger,
                    DEPOSIT_CODE,
                )
            },
            Kind::Withdrawal => Transfer {
                flags: TransferFlags::POST_PENDING_TRANSFER,
                pending_id: transfer_id(self.id, LEG_CREDIT_OR_HOLD),
                user_data_128: self.id,
                ..Transfer::new(
                    transfer_id(self.id, LEG_POST),
                    self.account_id,
                    self.bank_account_id,
                    u128::from(self.amount),
                    self.ledger,
                    WITHDRAWAL_CODE,
                )
            },
        }
    }

    /// The void of the withdrawal's hold.
    pub fn release_transfer(&self) -> Transfer {
        debug_assert_eq!(self.kind, Kind::Withdrawal);
        Transfer {
            flags: TransferFlags::VOID_PENDING_TRANSFER,
            pending_id: transfer_id(self.id, LEG_CREDIT_OR_HOLD),
            user_data_128: self.id,
            ..Transfer::new(
                transfer_id(self.id, LEG_VOID),
                self.account_id,
                self.bank_account_id,
                u128::from(self.amount),
                self.ledger,
                WITHDRAWAL_CODE,
            )
        }
    }

    /// The next action, and the settlement to persist before performing it (the same one,
    /// except before a bank call, which is recorded as an attempt in doubt first).
    pub fn start(&self, now_ms: u64) -> (Settlement, Action) {
        let mut next = self.clone();
        if let Phase::Done(_) = self.phase {
            return (next, Action::Done);
        }
        if self.due_ms > now_ms {
            return (next, Action::Wait(self.due_ms));
        }
        let action = match self.phase {
            Phase::Hold => Action::Hold(self.hold_transfer()),
            Phase::Send | Phase::Check => {
                let action = if self.phase == Phase::Send {
                    Action::Send
                } else {
                    Action::Check
                };
                // Whatever happens next, until the bank answers, the outcome is unknown.
                next.phase = Phase::Check;
                next.attempts += 1;
                next.attempts_total += 1;
                next.updated_ms = now_ms;
                action
            }
            Phase::Settle => Action::Settle(self.settle_transfer()),
            Phase::Release => Action::Release(self.release_transfer()),
            Phase::Done(_) => unreachable!("handled above"),
        };
        (next, action)
    }

    /// The settlement after `outcome` of the action [`Settlement::start`] returned, given the
    /// persisted state `self` (the one `start` returned). `jitter` is any random number.
    pub fn on_outcome(
        &self,
        outcome: ActionOutcome,
        now_ms: u64,
        policy: &Policy,
        jitter: u64,
    ) -> Settlement {
        let mut next = self.clone();
        next.updated_ms = now_ms;
        next.due_ms = now_ms;
        match (self.phase, outcome) {
            (Phase::Hold, ActionOutcome::Ledger(LedgerOutcome::Done)) => next.phase = Phase::Send,
            (Phase::Hold, ActionOutcome::Ledger(LedgerOutcome::Refused(code))) => {
                next.phase = Phase::Done(Status::Failed);
                next.reason = Some(refusal_reason(code).to_string());
            }
            (Phase::Check, ActionOutcome::Bank(BankOutcome::Moved { amount })) => {
                if amount == self.amount {
                    next.phase = Phase::Settle;
                } else {
                    // The bank moved another amount for our reference: never guess which is
                    // right.
                    next.phase = Phase::Done(Status::NeedsReview);
                    next.reason = Some(format!("bank_amount_mismatch: bank moved {amount}"));
                }
            }
            (Phase::Check, ActionOutcome::Bank(BankOutcome::Declined(reason))) => {
                next.reason = Some(bounded_reason(&format!("declined: {reason}")));
                next.phase = match self.kind {
                    Kind::Deposit => Phase::Done(Status::Failed),
                    Kind::Withdrawal => Phase::Release,
                };
            }
            (Phase::Check, ActionOutcome::Bank(BankOutcome::NotFound)) => {
                // Definitely not done: another request may go out.
                if self.attempts >= policy.attempts_max {
                    next.phase = Phase::Done(Status::NeedsReview);
                    next.reason = Some(REASON_ATTEMPTS_EXHAUSTED.to_string());
                } else {
                    next.phase = Phase::Send;
                    next.due_ms = now_ms + policy.backoff_ms(self.attempts, jitter);
                }
            }
            (Phase::Check, ActionOutcome::Bank(BankOutcome::Unknown(why))) => {
                if self.attempts >= policy.attempts_max {
                    next.phase = Phase::Done(Status::NeedsReview);
                    next.reason = Some(bounded_reason(&format!(
                        "{REASON_ATTEMPTS_EXHAUSTED}: {why}"
                    )));
                } else {
                    next.due_ms = now_ms + policy.backoff_ms(self.attempts, jitter);
                }
            }
            (Phase::Settle, ActionOutcome::Ledger(LedgerOutcome::Done)) => {
                next.phase = Phase::Done(Status::Succeeded);
            }
            (Phase::Settle, ActionOutcome::Ledger(LedgerOutcome::Refused(code))) => {
                // The bank moved the money and the ledger will not record it: a person decides.
                next.phase = Phase::Done(Status::NeedsReview);
                next.reason = Some(format!("ledger_refused: {code}"));
            }
            (Phase::Release, ActionOutcome::Ledger(LedgerOutcome::Done)) => {
                next.phase = Phase::Done(Status::Failed);
            }
            (Phase::Release, ActionOutcome::Ledger(LedgerOutcome::Refused(code))) => {
                next.phase = Phase::Done(Status::NeedsReview);
                next.reason = Some(format!("ledger_refused: {code}"));
            }
            (
                Phase::Hold | Phase::Settle | Phase::Release,
                ActionOutcome::Ledger(LedgerOutcome::Unavailable),
            ) => {
                next.due_ms = now_ms + LEDGER_RETRY_MS;
            }
            (phase, outcome) => {
                panic!(
                    "settlement {:x}: outcome {outcome:?} does not follow phase {phase:?}",
                    self.id
                )
            }
        }
        debug_assert!(next.attempts <= policy.attempts_max.max(self.attempts));
        next
    }

    /// Reconciliation gives a `needs_review` settlement whose outcome is unknown another round
    /// of attempts, starting with a status query. Other settlements are left as they are.
    pub fn redrive(&self, now_ms: u64) -> Option<Settlement> {
        let unknown = self.phase == Phase::Done(Status::NeedsReview)
            && self
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with(REASON_ATTEMPTS_EXHAUSTED));
        unknown.then(|| Settlement {
            phase: Phase::Check,
            attempts: 0,
            due_ms: now_ms,
            updated_ms: now_ms,
            reason: None,
            ..self.clone()
        })
    }

    /// A person settles a `needs_review` settlement after looking at the bank: `bank_moved`
    /// records the movement in the ledger (credit, or post the hold); otherwise the settlement
    /// fails (a withdrawal's hold is released). Other settlements are left as they are.
    pub fn resolve(&self, bank_moved: bool, now_ms: u64) -> Option<Settlement> {
        (self.phase == Phase::Done(Status::NeedsReview)).then(|| Settlement {
            phase: match (bank_moved, self.kind) {
                (true, _) => Phase::Settle,
                (false, Kind::Withdrawal) => Phase::Release,
                (false, Kind::Deposit) => Phase::Done(Status::Failed),
            },
            reason: Some(if bank_moved {
                "resolved: the bank moved it".to_string()
            } else {
                "resolved: the bank did not move it".to_string()
            }),
            due_ms: now_ms,
            updated_ms: now_ms,
            ..self.clone()
        })
    }
}

pub const REASON_ATTEMPTS_EXHAUSTED: &str = "attempts_exhausted";

/// The user-facing reason for a hold the ledger refused.
pub fn refusal_reason(code: &'static str) -> &'static str {
    match code {
        "exceeds_credits" => "insufficient_funds",
        "credit_account_not_found" | "debit_account_not_found" => "account_not_found",
        "debit_account_closed" | "credit_account_closed" => "account_closed",
        other => other,
    }
}

fn bounded_reason(reason: &str) -> String {
    let mut end = reason.len().min(REASON_BYTES_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        attempts_max: 3,
        backoff_base_ms: 100,
        backoff_max_ms: 1_000,
        attempt_timeout_ms: 50,
    };

    fn deposit() -> Settlement {
        Settlement::new(7, Kind::Deposit, 10, 1, 840, 500, 1_000)
    }

    fn withdrawal() -> Settlement {
        Settlement::new(8, Kind::Withdrawal, 10, 1, 840, 500, 1_000)
    }

    /// Runs `start` then `on_outcome`, as a driver would (persisting in between).
    fn step(s: &Settlement, outcome: ActionOutcome, now: u64) -> (Action, Settlement) {
        let (persisted, action) = s.start(now);
        (action, persisted.on_outcome(outcome, now, &POLICY, 0))
    }

    #[test]
    fn a_deposit_is_sent_then_credited() {
        let s = deposit();
        assert_eq!(s.status(), Status::Pending);
        let (action, s) = step(
            &s,
            ActionOutcome::Bank(BankOutcome::Moved { amount: 500 }),
            1_000,
        );
        assert_eq!(action, Action::Send);
        assert_eq!((s.phase, s.attempts), (Phase::Settle, 1));
        let (action, s) = step(&s, ActionOutcome::Ledger(LedgerOutcome::Done), 1_001);
        let Action::Settle(credit) = action else {
            panic!("{action:?}")
        };
        assert_eq!(
            (
                credit.debit_account_id,
                credit.credit_account_id,
                credit.amount
            ),
            (1, 10, 500)
        );
        assert_eq!(s.status(), Status::Succeeded);
        assert_eq!(s.start(2_000).1, Action::Done);
    }

    #[test]
    fn a_bank_call_is_recorded_in_doubt_before_it_is_made() {
        let (persisted, action) = deposit().start(1_000);
        assert_eq!(action, Action::Send);
        assert_eq!(persisted.phase, Phase::Check);
        assert_eq!(persisted.status(), Status::Processing);
        // A crash now: the restarted driver asks, it does not send again.
        assert_eq!(persisted.start(5_000).1, Action::Check);
    }

    #[test]
    fn an_unknown_outcome_is_followed_by_status_queries_never_by_a_new_request() {
        let mut s = withdrawal();
        let (_, next) = step(&s, ActionOutcome::Ledger(LedgerOutcome::Done), 1_000);
        s = next;
        let mut now = 1_000;
        let mut sends = 0;
        for _ in 0..POLICY.attempts_max {
            let (persisted, action) = s.start(now);
            if action == Action::Send {
                sends += 1;
            }
            s = persisted.on_outcome(
                ActionOutcome::Bank(BankOutcome::Unknown("timeout".into())),
                now,
                &POLICY,
                7,
            );
            now = s.due_ms;
        }
        assert_eq!(sends, 1);
        assert_eq!(s.phase, Phase::Done(Status::NeedsReview));
        assert!(s.holds_funds(), "the hold stays while nobody knows");
        // Reconciliation re-drives it: a status query first.
        let again = s.redrive(now).expect("unknown outcomes are re-driven");
        assert_eq!(again.start(now).1, Action::Check);
    }

    #[test]
    fn not_found_allows_another_request_after_a_backoff() {
        let s = deposit();
        let (_, s) = step(
            &s,
            ActionOutcome::Bank(BankOutcome::Unknown("reset".into())),
            1_000,
        );
        assert!(s.due_ms > 1_000);
        assert_eq!(s.start(1_000).1, Action::Wait(s.due_ms));
        let (action, s) = step(&s, ActionOutcome::Bank(BankOutcome::NotFound), s.due_ms);
        assert_eq!(action, Action::Check);
        assert_eq!(s.phase, Phase::Send);
        assert_eq!(s.start(s.due_ms).1, Action::Send);
    }

    #[test]
    fn a_declined_withdrawal_releases_its_hold_and_fails() {
        let (action, s) = step(
            &withdrawal(),
            ActionOutcome::Ledger(LedgerOutcome::Done),
            1_000,
        );
        assert!(
            matches!(action, Action::Hold(t) if t.flags.contains(TransferFlags::PENDING) && t.timeout == 0)
        );
        let (_, s) = step(
            &s,
            ActionOutcome::Bank(BankOutcome::Declined("account frozen".into())),
            1_000,
        );
        assert_eq!(s.phase, Phase::Release);
        let (action, s) = step(&s, ActionOutcome::Ledger(LedgerOutcome::Done), 1_000);
        let Action::Release(void) = action else {
            panic!()
        };
        assert!(void.flags.contains(TransferFlags::VOID_PENDING_TRANSFER));
        assert_eq!(void.pending_id, withdrawal().hold_transfer().id);
        assert_eq!(s.status(), Status::Failed);
        assert_eq!(s.reason.as_deref(), Some("declined: account frozen"));
        assert!(!s.holds_funds());
    }

    #[test]
    fn a_withdrawal_without_funds_fails_before_the_bank_is_asked() {
        let (_, s) = step(
            &withdrawal(),
            ActionOutcome::Ledger(LedgerOutcome::Refused("exceeds_credits")),
            1_000,
        );
        assert_eq!(s.status(), Status::Failed);
        assert_eq!(s.reason.as_deref(), Some("insufficient_funds"));
        assert_eq!(s.attempts_total, 0);
    }

    #[test]
    fn a_paid_withdrawal_posts_its_hold() {
        let (_, s) = step(
            &withdrawal(),
            ActionOutcome::Ledger(LedgerOutcome::Done),
            1_000,
        );
        let (_, s) = step(
            &s,
            ActionOutcome::Bank(BankOutcome::Moved { amount: 500 }),
            1_000,
        );
        let (action, s) = step(&s, ActionOutcome::Ledger(LedgerOutcome::Done), 1_000);
        let Action::Settle(post) = action else {
            panic!()
        };
        assert!(post.flags.contains(TransferFlags::POST_PENDING_TRANSFER));
        assert_eq!(s.status(), Status::Succeeded);
        assert!(!s.holds_funds());
    }

    #[test]
    fn another_amount_at_the_bank_needs_review() {
        let (_, s) = step(
            &deposit(),
            ActionOutcome::Bank(BankOutcome::Moved { amount: 499 }),
            1_000,
        );
        assert_eq!(s.status(), Status::NeedsReview);
        assert!(
            s.redrive(2_000).is_none(),
            "a known mismatch is a person's decision"
        );
    }

    #[test]
    fn an_unavailable_ledger_is_asked_again_later() {
        let (_, s) = step(
            &withdrawal(),
            ActionOutcome::Ledger(LedgerOutcome::Unavailable),
            1_000,
        );
        assert_eq!((s.phase, s.due_ms), (Phase::Hold, 1_000 + LEDGER_RETRY_MS));
    }

    #[test]
    fn a_person_resolves_what_needs_review() {
        let (_, s) = step(
            &withdrawal(),
            ActionOutcome::Ledger(LedgerOutcome::Done),
            1_000,
        );
        let (_, s) = step(
            &s,
            ActionOutcome::Bank(BankOutcome::Moved { amount: 7 }),
            1_000,
        );
        assert_eq!(s.status(), Status::NeedsReview);
        assert!(
            deposit().resolve(true, 2_000).is_none(),
            "only what needs review"
        );
        let paid = s.resolve(true, 2_000).unwrap();
        let (action, paid) = step(&paid, ActionOutcome::Ledger(LedgerOutcome::Done), 2_000);
        assert!(
            matches!(action, Action::Settle(t) if t.flags.contains(TransferFlags::POST_PENDING_TRANSFER))
        );
        assert_eq!(paid.status(), Status::Succeeded);
        assert_eq!(paid.reason.as_deref(), Some("resolved: the bank moved it"));
        let unpaid = s.resolve(false, 2_000).unwrap();
        let (action, unpaid) = step(&unpaid, ActionOutcome::Ledger(LedgerOutcome::Done), 2_000);
        assert!(matches!(action, Action::Release(_)));
        assert_eq!(unpaid.status(), Status::Failed);
        assert_eq!(
            unpaid.reason.as_deref(),
            Some("resolved: the bank did not move it")
        );
    }

    #[test]
    fn phases_round_trip_through_their_codes() {
        for phase in [
            Phase::Hold,
            Phase::Send,
            Phase::Check,
            Phase::Settle,
            Phase::Release,
            Phase::Done(Status::Succeeded),
            Phase::Done(Status::Failed),
            Phase::Done(Status::NeedsReview),
        ] {
            assert_eq!(Phase::parse(phase.code()), Some(phase));
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = POLICY;
        assert!((50..=100).contains(&p.backoff_ms(1, 12345)));
        assert!((100..=200).contains(&p.backoff_ms(2, 999)));
        assert!((500..=1_000).contains(&p.backoff_ms(30, u64::MAX)));
        assert_ne!(p.backoff_ms(3, 1), p.backoff_ms(3, 2));
    }

    #[test]
    fn transfer_ids_differ_by_leg_and_settlement() {
        let ids = [
            transfer_id(1, 1),
            transfer_id(1, 2),
            transfer_id(1, 3),
            transfer_id(2, 1),
        ];
        for (i, a) in ids.iter().enumerate() {
            assert!(*a != 0 && *a != u128::MAX);
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(transfer_id(1, 1), transfer_id(1, 1));
    }
}
