//! Deposits and withdrawals in the simulation: the settlement state machine that runs in
//! production (`kizo_ledger::settlement`), driven here as the settlement actors drive it (persist,
//! act, persist the outcome), against a simulated bank (`kizo_bank_model::Books`, the mock
//! bank's own books) with every fault the mock bank has: latency, 5xx before the work, answers
//! lost after the work, declines, duplicate callbacks, outages. Their ledger transfers go
//! through the world's engine like every other request, so they meet the log's faults and
//! crashes; a crash loses every settlement's volatile state, and the settlements resume from
//! what was persisted.

use std::collections::{BTreeMap, BTreeSet};

use kizo_bank_model::{Books, Decision};
use kizo_ledger::{CreateTransferResult, Transfer};
use kizo_settlement::reconcile::{reconcile, BankAccountBalance, Report};
use kizo_settlement::{
    Action, ActionOutcome, BankOutcome, Kind, LedgerOutcome, Phase, Policy, Settlement, Status,
};

use crate::rng::Rng;
use crate::world::Violation;

/// The system account that stands for money at the bank (never picked by the workload).
pub const BANK_ACCOUNT: u128 = u128::MAX - 7;

pub const POLICY: Policy = Policy {
    attempts_max: 6,
    backoff_base_ms: 20,
    backoff_max_ms: 500,
    attempt_timeout_ms: 100,
};

/// Settlements made at most in one run.
const SETTLEMENTS_MAX: usize = 400;

/// Per mille, drawn from the seed.
#[derive(Clone, Debug)]
pub struct BankFaults {
    pub slow: u32,
    pub error: u32,
    pub lost_answer: u32,
    pub decline: u32,
    pub callback: u32,
    pub outage: u32,
}

/// A call on its way to the bank, or its answer on its way back.
#[derive(Clone, Debug)]
struct Call {
    settlement: u128,
    send: bool,
    kind: Kind,
    amount: u64,
    /// When it reaches the bank (ns).
    arrives: u64,
    /// When its answer would reach the caller (ns), if it is not lost.
    answers: u64,
    error: bool,
    lost: bool,
    decline: bool,
    /// What the bank said, once it arrived.
    outcome: Option<BankOutcome>,
}

/// What a running settlement waits for.
#[derive(Clone, Debug)]
enum Waiting {
    Ledger { request: u64 },
    Bank { call: u64, timeout_at: u64 },
}

#[derive(Debug, Default)]
pub struct Settlements {
    /// Durable: survives crashes.
    pub store: BTreeMap<u128, Settlement>,
    pub books: Books,
    /// Volatile: lost in a crash.
    running: BTreeMap<u128, (Settlement, Waiting)>,
    /// In the network: survive crashes (a request sent still arrives).
    calls: BTreeMap<u64, Call>,
    next_call: u64,
    next_id: u128,
    pub outage: bool,
    /// Bank calls made with an unknown outcome pending, per settlement: the next call must be a
    /// status query (checked: a payout is never sent blindly).
    in_doubt: BTreeSet<u128>,
    /// Wallets settlements may use (created, debits limited by credits).
    pub wallets: Vec<u128>,
}

impl Settlements {
    pub fn new() -> Settlements {
        Settlements {
            next_id: 1 << 100,
            ..Settlements::default()
        }
    }

    pub fn all_final(&self) -> bool {
        self.store
            .values()
            .all(|s| matches!(s.phase, Phase::Done(_)))
    }

    pub fn count(&self, status: Status) -> usize {
        self.store.values().filter(|s| s.status() == status).count()
    }

    /// A user asks for a deposit or a withdrawal.
    pub fn create(&mut self, rng: &mut Rng, now_ms: u64) -> Option<u128> {
        if self.wallets.is_empty() || self.store.len() >= SETTLEMENTS_MAX {
            return None;
        }
        let wallet = *rng.pick(&self.wallets);
        let kind = if rng.chance(550) {
            Kind::Deposit
        } else {
            Kind::Withdrawal
        };
        let amount = rng.between(1, 3_000);
        let id = self.next_id;
        self.next_id += 1;
        let settlement = Settlement::new(
            id,
            kind,
            wallet,
            BANK_ACCOUNT,
            crate::world::LEDGER,
            amount,
            now_ms,
        );
        self.store.insert(id, settlement);
        Some(id)
    }

    /// Starts the next action of a settlement that is due and not running, as a worker would.
    /// Returns the ledger transfer the world must enqueue for that settlement, if any (then
    /// tell [`Settlements::waiting_on`] the request's number).
    pub fn start_one(
        &mut self,
        rng: &mut Rng,
        now_ns: u64,
        faults: &BankFaults,
        faulty: bool,
    ) -> Result<Option<(u128, Transfer)>, Violation> {
        let now_ms = now_ns / crate::world::MS;
        let due: Vec<u128> = self
            .store
            .values()
            .filter(|s| {
                !matches!(s.phase, Phase::Done(_))
                    && s.due_ms <= now_ms
                    && !self.running.contains_key(&s.id)
            })
            .map(|s| s.id)
            .collect();
        if due.is_empty() {
            return Ok(None);
        }
        let id = *rng.pick(&due);
        let (persisted, action) = self.store[&id].start(now_ms);
        // Persisted before it is acted on.
        self.store.insert(id, persisted.clone());
        match action {
            Action::Done | Action::Wait(_) => Ok(None),
            Action::Hold(t) | Action::Settle(t) | Action::Release(t) => {
                self.running
                    .insert(id, (persisted, Waiting::Ledger { request: u64::MAX }));
                Ok(Some((id, t)))
            }
            Action::Send | Action::Check => {
                let send = action == Action::Send;
                if send && self.in_doubt.contains(&id) {
                    return Err(Violation(format!("settlement {id:x}: a request sent again while an earlier one's outcome is unknown")));
                }
                let slow = faulty && rng.chance(faults.slow);
                let latency = |rng: &mut Rng| rng.between(1, 30) * crate::world::MS;
                let arrives = now_ns
                    + latency(rng)
                    + if slow {
                        rng.between(100, 300) * crate::world::MS
                    } else {
                        0
                    };
                let answers = arrives + latency(rng);
                let call = Call {
                    settlement: id,
                    send,
                    kind: persisted.kind,
                    amount: persisted.amount,
                    arrives,
                    answers,
                    error: faulty && rng.chance(faults.error),
                    lost: faulty && rng.chance(faults.lost_answer),
                    decline: rng.chance(faults.decline),
                    outcome: None,
                };
                let number = self.next_call;
                self.next_call += 1;
                self.calls.insert(number, call);
                self.in_doubt.insert(id);
                let timeout_at = now_ns + POLICY.attempt_timeout_ms * crate::world::MS;
                self.running.insert(
                    id,
                    (
                        persisted,
                        Waiting::Bank {
                            call: number,
                            timeout_at,
                        },
                    ),
                );
                Ok(None)
            }
        }
    }

    /// The world enqueued the ledger transfer of `id` as request `request`.
    pub fn waiting_on(&mut self, id: u128, request: u64) {
        if let Some((_, waiting)) = self.running.get_mut(&id) {
            *waiting = Waiting::Ledger { request };
        }
    }

    /// The settlement (if any) waiting on request `request`.
    pub fn of_request(&self, request: u64) -> Option<u128> {
        self.running
            .iter()
            .find(|(_, (_, w))| matches!(w, Waiting::Ledger { request: r } if *r == request))
            .map(|(id, _)| *id)
    }

    /// A ledger answer (or `None`: the request failed, the engine was unavailable).
    pub fn on_ledger(
        &mut self,
        id: u128,
        result: Option<CreateTransferResult>,
        rng: &mut Rng,
        now_ms: u64,
    ) {
        let Some((persisted, _)) = self.running.remove(&id) else {
            return;
        };
        let outcome = match result {
            Some(CreateTransferResult::Created | CreateTransferResult::Exists) => {
                LedgerOutcome::Done
            }
            Some(other) => LedgerOutcome::Refused(other.code()),
            None => LedgerOutcome::Unavailable,
        };
        let next = persisted.on_outcome(
            ActionOutcome::Ledger(outcome),
            now_ms,
            &POLICY,
            rng.next_u64(),
        );
        self.store.insert(id, next);
    }

    /// The bank works on calls that reached it, answers come back or time out, callbacks
    /// wake settlements. Returns whether anything happened.
    pub fn tick(
        &mut self,
        rng: &mut Rng,
        now_ns: u64,
        faults: &BankFaults,
        mutation_release_on_unknown: bool,
    ) -> bool {
        let now_ms = now_ns / crate::world::MS;
        let mut changed = false;
        let arrived: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| c.outcome.is_none() && c.arrives <= now_ns)
            .map(|(n, _)| *n)
            .collect();
        for number in arrived {
            let call = self.calls.get_mut(&number).expect("listed");
            let reference = uuid::Uuid::from_u128(call.settlement);
            call.outcome = Some(if self.outage {
                BankOutcome::Unknown("outage".into())
            } else if call.error {
                BankOutcome::Unknown("500".into())
            } else if call.send {
                let decision = if call.decline {
                    Decision::Decline("declined".into())
                } else {
                    Decision::Move
                };
                match self.books.request(
                    call.kind,
                    reference,
                    call.amount,
                    "wallet",
                    decision,
                    now_ms,
                ) {
                    Ok((record, _)) => {
                        if record.succeeded() {
                            BankOutcome::Moved {
                                amount: record.amount,
                            }
                        } else {
                            BankOutcome::Declined(record.reason.unwrap_or_default())
                        }
                    }
                    Err(_) => BankOutcome::Unknown("409".into()),
                }
            } else {
                match self.books.status(call.kind, reference) {
                    Some(record) if record.succeeded() => BankOutcome::Moved {
                        amount: record.amount,
                    },
                    Some(record) => {
                        BankOutcome::Declined(record.reason.clone().unwrap_or_default())
                    }
                    None => BankOutcome::NotFound,
                }
            });
            changed = true;
            // A callback (or two): wakes the settlement, which asks for itself.
            if !self.outage && !call.error && rng.chance(faults.callback) {
                let id = call.settlement;
                if let Some(s) = self.store.get_mut(&id) {
                    if !self.running.contains_key(&id) && !matches!(s.phase, Phase::Done(_)) {
                        s.due_ms = s.due_ms.min(now_ms);
                    }
                }
            }
        }
        // Answers reach their callers, or the callers give up waiting.
        let waiting: Vec<(u128, u64, u64)> = self
            .running
            .iter()
            .filter_map(|(id, (_, w))| match w {
                Waiting::Bank { call, timeout_at } => Some((*id, *call, *timeout_at)),
                Waiting::Ledger { .. } => None,
            })
            .collect();
        for (id, number, timeout_at) in waiting {
            let call = &self.calls[&number];
            let answered = call.outcome.is_some()
                && !call.lost
                && call.answers <= now_ns
                && call.answers <= timeout_at;
            let outcome = if answered {
                call.outcome.clone().expect("answered")
            } else if now_ns >= timeout_at {
                if mutation_release_on_unknown {
                    BankOutcome::Declined("timed out (a broken build releases on doubt)".into())
                } else {
                    BankOutcome::Unknown("timeout".into())
                }
            } else {
                continue;
            };
            if !matches!(outcome, BankOutcome::Unknown(_)) {
                self.in_doubt.remove(&id);
            }
            let (persisted, _) = self.running.remove(&id).expect("listed");
            let next = persisted.on_outcome(
                ActionOutcome::Bank(outcome),
                now_ms,
                &POLICY,
                rng.next_u64(),
            );
            self.store.insert(id, next);
            changed = true;
        }
        // Calls done and answered (or abandoned) are forgotten.
        let running_calls: BTreeSet<u64> = self
            .running
            .values()
            .filter_map(|(_, w)| match w {
                Waiting::Bank { call, .. } => Some(*call),
                Waiting::Ledger { .. } => None,
            })
            .collect();
        self.calls
            .retain(|n, c| c.outcome.is_none() || running_calls.contains(n));
        changed
    }

    /// The gateway dies: running settlements lose their volatile state (the persisted state
    /// is what a restart resumes from); requests already sent still reach the bank.
    pub fn crash(&mut self) {
        self.running.clear();
    }

    /// Reconciliation: the report, and the settlements it re-drives.
    pub fn reconcile(&mut self, bank_account: Option<BankAccountBalance>, now_ms: u64) -> Report {
        let settlements: Vec<Settlement> = self.store.values().cloned().collect();
        let balances = BTreeMap::from([(crate::world::LEDGER, bank_account.unwrap_or_default())]);
        let mut report = reconcile(
            &settlements,
            &self.books.movements(),
            Some(&balances),
            now_ms,
            0,
        );
        for s in &settlements {
            if let Some(again) = s.redrive(now_ms) {
                self.store.insert(s.id, again);
                report.redriven += 1;
            }
        }
        report
    }

    /// Anything still waiting on the ledger or the bank.
    pub fn busy(&self) -> bool {
        !self.running.is_empty()
    }
}
