//! One simulated run: the engine's pure parts (`LocalEngine`: the sequencer, rounds, the
//! decider, the shard state machines), the real log codec on a simulated store, clients, a
//! clock, and faults, all driven by one seed. After every round the reference model must agree
//! with the engine on every result; after every crash the recovered engine must equal the
//! model; at checkpoints the ledger's invariants must hold.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use kizo_ledger::local::{Decided, LocalEngine};
use kizo_ledger::round::{Operation, Outcome};
use kizo_ledger::{
    Account, AccountFlags, Commit, CreateAccountResult, CreateTransferResult, Transfer,
    TransferFlags, POST_WHOLE_PENDING_AMOUNT,
};

use kizo_ledger::LedgerImage;
use kizo_snapshot_format::dir::SnapshotDir;
use kizo_snapshot_format::Manifest;

use crate::disk::SimDisk;
use crate::log::SimLog;
use crate::model::Model;
use crate::rng::Rng;
use crate::settlements::{BankFaults, Settlements, BANK_ACCOUNT};

/// A deliberately broken build, to show that the checks catch one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// The log writer drops the last record of a commit, yet the commit is acknowledged.
    DropRecord,
    /// Acknowledge a round before its commit is durable (and lose it if a crash follows).
    AckBeforeDurable,
    /// A settlement takes a bank call that timed out for a decline, and releases the hold.
    ReleaseOnUnknown,
    /// A restart from a snapshot does not replay the log after it.
    SkipLogTail,
    /// The shards let transfers go as if the store held every durable commit, while it lags.
    EvictBeforeStored,
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Steps with faults; then faults stop and the run must drain.
    pub steps: u64,
    pub verbose: bool,
    pub mutation: Option<Mutation>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            steps: 5_000,
            verbose: false,
            mutation: None,
        }
    }
}

/// What a run did, and how it ended.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub steps: u64,
    pub rounds: u64,
    pub events: u64,
    /// A hash of the run's trace and final state: the same seed gives the same hash.
    pub hash: u64,
    pub faults: BTreeMap<&'static str, u64>,
    /// Results decided, by code (accounts and transfers together).
    pub results: BTreeMap<&'static str, u64>,
    /// Settlements by final status, bank calls, re-drives by reconciliation.
    pub settlements: BTreeMap<&'static str, u64>,
    pub failure: Option<Failure>,
    /// The deliberately broken build the run used, if any (its command-line name).
    pub mutation: Option<&'static str>,
}

/// An invariant the run broke, in words for the person who replays the seed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

impl From<String> for Violation {
    fn from(text: String) -> Self {
        Violation(text)
    }
}

impl From<&str> for Violation {
    fn from(text: &str) -> Self {
        Violation(text.to_string())
    }
}

#[derive(Clone, Debug)]
pub struct Failure {
    pub step: u64,
    pub invariant: String,
    /// The last steps before the failure.
    pub trace: Vec<String>,
}

const TRACE_KEPT: usize = 40;
const BANK: u128 = 1;
pub(crate) const LEDGER: u32 = 1;
pub(crate) const MS: u64 = 1_000_000;
/// Steps settlements may take to end once faults stop (backoffs included).
const SETTLE_STEPS_MAX: u64 = 40_000;
/// Steps the run may take to answer everything once faults stop.
const DRAIN_STEPS_MAX: u64 = 2_000;

struct Request {
    number: u64,
    operation: Operation,
}

struct Flight {
    decided: Decided,
    requests: Vec<Request>,
    /// The model before the round (its changes are in the model, to be kept or undone).
    model_mark: usize,
    due: u64,
    fails: bool,
}

/// Per mille, per step, drawn from the seed.
struct FaultRates {
    crash: u32,
    flush_fails: u32,
    slow_flush: u32,
    corruption: u32,
    clock_jump: u32,
    snapshot: u32,
    /// A bit of a stored snapshot file rots.
    snapshot_rot: u32,
    /// A snapshot's write is cut short by the process dying (per mille of snapshots).
    snapshot_crash: u32,
    /// The store catches up with the log (to a random point of what is durable).
    store_catches_up: u32,
    /// A round's fetch from the store fails.
    store_fails: u32,
    /// The projector stalls for a while (the store falls behind by many commits).
    store_stalls: u32,
}

/// Snapshots kept by the simulated snapshot actor.
const SNAPSHOTS_KEPT: usize = 2;

pub struct World {
    rng: Rng,
    options: Options,
    step: u64,
    clock: u64,
    shard_count: usize,
    /// The shards' window (transfers per shard), or `None` for shards that keep everything.
    window: Option<usize>,
    /// How often (per million new ids) the filters answer "maybe" besides their own mistakes.
    forced_maybes: u32,
    engine: LocalEngine,
    log: SimLog,
    disk: SimDisk,
    snapshots: SnapshotDir<SimDisk>,
    /// The durable state as the model sees it (plus the sequencer's last timestamp).
    model: Model,
    queue: VecDeque<Request>,
    flight: Option<Flight>,
    /// Requests that went unanswered or failed, for clients to retry.
    retries: Vec<Operation>,
    /// Transfers sent, for retries with the same or other fields.
    sent: Vec<Transfer>,
    pending_ids: Vec<u128>,
    accounts: Vec<u128>,
    next_account: u128,
    next_transfer: u128,
    next_request: u64,
    /// Ids acknowledged as failed for a transient reason: never created later.
    burned: BTreeSet<u128>,
    /// Accounts and transfers acknowledged as created: present after any crash.
    acked_accounts: BTreeSet<u128>,
    acked_transfers: BTreeSet<u128>,
    rates: FaultRates,
    /// The store does not move before this step (a stalled projector).
    store_stalled_until: u64,
    settlements: Settlements,
    bank_faults: BankFaults,
    faulty: bool,
    report: Report,
    trace: VecDeque<String>,
}

impl World {
    pub fn new(seed: u64, options: Options) -> World {
        let mutation = options.mutation.map(|m| match m {
            Mutation::DropRecord => "drop-record",
            Mutation::AckBeforeDurable => "ack-before-durable",
            Mutation::ReleaseOnUnknown => "release-on-unknown",
            Mutation::SkipLogTail => "skip-log-tail",
            Mutation::EvictBeforeStored => "evict-before-stored",
        });
        let mut rng = Rng::new(seed);
        let shard_count = rng.between(1, 4) as usize;
        // Most seeds run shards with a window of 1 to 100 transfers, so that nearly every old
        // id goes through the store; some keep everything (the engine without a store).
        let window = (options.mutation == Some(Mutation::EvictBeforeStored) || !rng.chance(200))
            .then(|| rng.between(1, 100) as usize);
        let forced_maybes = rng.between(100_000, 900_000) as u32;
        let rates = FaultRates {
            crash: rng.between(0, 8) as u32,
            flush_fails: rng.between(0, 60) as u32,
            slow_flush: rng.between(0, 200) as u32,
            corruption: rng.between(0, 2) as u32,
            clock_jump: rng.between(0, 15) as u32,
            snapshot: rng.between(0, 20) as u32,
            snapshot_rot: rng.between(0, 4) as u32,
            snapshot_crash: rng.between(0, 400) as u32,
            store_catches_up: rng.between(5, 150) as u32,
            store_fails: rng.between(0, 100) as u32,
            store_stalls: rng.between(0, 10) as u32,
        };
        let disk = SimDisk::default();
        let bank_faults = BankFaults {
            slow: rng.between(0, 100) as u32,
            error: rng.between(0, 100) as u32,
            lost_answer: rng.between(0, 100) as u32,
            decline: rng.between(0, 150) as u32,
            callback: rng.between(0, 300) as u32,
            outage: rng.between(0, 20) as u32,
        };
        World {
            rng,
            options,
            step: 0,
            clock: 1_000 * MS,
            shard_count,
            window,
            forced_maybes,
            engine: new_engine(shard_count, window, forced_maybes, None, &[], 0),
            log: SimLog::default(),
            snapshots: SnapshotDir::on("/data/snapshots", disk.clone()),
            disk,
            model: Model::default(),
            queue: VecDeque::new(),
            flight: None,
            retries: Vec::new(),
            sent: Vec::new(),
            pending_ids: Vec::new(),
            accounts: Vec::new(),
            next_account: 2,
            next_transfer: 1 << 40,
            next_request: 0,
            burned: BTreeSet::new(),
            acked_accounts: BTreeSet::new(),
            acked_transfers: BTreeSet::new(),
            rates,
            store_stalled_until: 0,
            settlements: Settlements::new(),
            bank_faults,
            faulty: true,
            report: Report {
                seed,
                mutation,
                ..Report::default()
            },
            trace: VecDeque::new(),
        }
    }

    /// Runs the seed to the end (or the first broken invariant).
    pub fn run(mut self) -> Report {
        // The engine asserts its invariants: a panic is a failure found, not a crash of ours.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_inner()))
            .unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(Violation(format!(
                    "a panic (an assertion of the engine, or of the simulator): {message}"
                )))
            });
        if let Err(Violation(invariant)) = result {
            self.report.failure = Some(Failure {
                step: self.step,
                invariant,
                trace: self.trace.iter().cloned().collect(),
            });
        }
        self.report.steps = self.step;
        self.report
    }

    fn run_inner(&mut self) -> Result<(), Violation> {
        self.bootstrap();
        while self.step < self.options.steps {
            self.step()?;
        }
        // Faults stop: every request must be answered within a bounded number of steps.
        self.faulty = false;
        let deadline = self.step + DRAIN_STEPS_MAX;
        while !self.queue.is_empty() || self.flight.is_some() {
            if self.step >= deadline {
                return Err(Violation(format!(
                    "liveness: {} requests still unanswered {DRAIN_STEPS_MAX} steps after faults stopped",
                    self.queue.len() + self.flight.as_ref().map_or(0, |f| f.requests.len())
                )));
            }
            self.step += 1;
            if self.flight.is_some() {
                self.complete_flight()?;
            } else {
                self.round()?;
            }
        }
        self.settle_all()?;
        self.check_state("at the end")?;
        self.hash_state();
        Ok(())
    }

    /// Faults have stopped: every settlement must end; then reconciliation (which re-drives
    /// the unknown outcomes) must find the ledger and the bank's statement in agreement, and
    /// nothing left for review.
    fn settle_all(&mut self) -> Result<(), Violation> {
        self.settlements.outage = false;
        for pass in 0..2 {
            let deadline = self.step + SETTLE_STEPS_MAX;
            while !self.settlements.all_final()
                || self.settlements.busy()
                || !self.queue.is_empty()
                || self.flight.is_some()
            {
                if self.step >= deadline {
                    return Err(Violation(format!(
                        "liveness: settlements still under way {SETTLE_STEPS_MAX} steps after faults stopped ({} pending, {} processing)",
                        self.settlements.count(kizo_settlement::Status::Pending),
                        self.settlements.count(kizo_settlement::Status::Processing)
                    )));
                }
                self.step += 1;
                self.clock += 5 * MS;
                if self.flight.is_some() {
                    self.complete_flight()?;
                } else if !self.queue.is_empty() {
                    self.round()?;
                } else {
                    self.settlements.tick(
                        &mut self.rng,
                        self.clock,
                        &self.bank_faults,
                        self.options.mutation == Some(Mutation::ReleaseOnUnknown),
                    );
                    self.start_settlement()?;
                }
            }
            self.engine.settle();
            let bank = self.engine.account(BANK_ACCOUNT).map(|a| {
                kizo_settlement::reconcile::BankAccountBalance {
                    debits_posted: a.debits_posted,
                    credits_posted: a.credits_posted,
                    credits_pending: a.credits_pending,
                }
            });
            let report = self.settlements.reconcile(bank, self.clock / MS);
            let (settlements, movements, redriven) =
                (report.settlements, report.movements, report.redriven);
            self.note(|| format!("reconciliation {pass}: {settlements} settlements, {movements} movements, {redriven} re-driven"));
            if report.unexplained() > 0 {
                return Err(Violation(format!(
                    "reconciliation: the ledger and the bank disagree: {report:?}"
                )));
            }
            *self.report.settlements.entry("redriven").or_default() += report.redriven;
            if report.redriven == 0 {
                for status in kizo_settlement::Status::ALL {
                    *self.report.settlements.entry(status.code()).or_default() +=
                        self.settlements.count(status) as u64;
                }
                *self.report.settlements.entry("bank_movements").or_default() += report.movements;
                if !report.needs_review.is_empty() {
                    let reasons: Vec<String> = report
                        .needs_review
                        .iter()
                        .map(|id| format!("{id:x}: {:?}", self.settlements.store[id].reason))
                        .collect();
                    return Err(Violation(format!("reconciliation: settlements need review with the bank reachable: {reasons:?}")));
                }
                return Ok(());
            }
        }
        Err("reconciliation re-drove settlements twice and they still did not end".into())
    }

    /// One step of deposits and withdrawals: a new one, a worker's action, the bank at work,
    /// an outage beginning or ending.
    fn settlement_step(&mut self) -> Result<(), Violation> {
        let now_ms = self.clock / MS;
        match self.rng.below(10) {
            // As in the gateway, the bank's account exists before any settlement.
            0..=1 if self.acked_accounts.contains(&BANK_ACCOUNT) => {
                if let Some(id) = self.settlements.create(&mut self.rng, now_ms) {
                    self.note(|| format!("settlement {id:x} asked for"));
                }
            }
            0..=1 => {}
            2..=5 => self.start_settlement()?,
            6..=8 => {
                let broken = self.options.mutation == Some(Mutation::ReleaseOnUnknown);
                self.settlements
                    .tick(&mut self.rng, self.clock, &self.bank_faults, broken);
            }
            _ => {
                if self.settlements.outage || self.rng.chance(self.bank_faults.outage * 10) {
                    self.settlements.outage = !self.settlements.outage;
                    self.fault("bank_outage_toggle");
                    let on = self.settlements.outage;
                    self.note(|| format!("the bank is {}", if on { "down" } else { "back" }));
                }
            }
        }
        Ok(())
    }

    fn start_settlement(&mut self) -> Result<(), Violation> {
        let faulty = self.faulty;
        let ledger =
            self.settlements
                .start_one(&mut self.rng, self.clock, &self.bank_faults, faulty)?;
        if let Some((id, transfer)) = ledger {
            let number = self.next_request;
            self.next_request += 1;
            self.queue.push_back(Request {
                number,
                operation: Operation::CreateTransfers(vec![transfer]),
            });
            self.settlements.waiting_on(id, number);
            self.note(|| format!("settlement {id:x} asks the ledger (request {number})"));
        }
        Ok(())
    }

    /// Requests of settlements are not retried by clients: a settlement whose request failed
    /// or was lost asks again itself. Returns the others.
    fn without_settlements(&mut self, requests: Vec<Request>, failed: bool) -> Vec<Operation> {
        let now_ms = self.clock / MS;
        let mut others = Vec::new();
        for request in requests {
            match self.settlements.of_request(request.number) {
                Some(id) if failed => self.settlements.on_ledger(id, None, &mut self.rng, now_ms),
                Some(_) => {}
                None => others.push(request.operation),
            }
        }
        others
    }

    fn note(&mut self, event: impl FnOnce() -> String) {
        let text = event();
        self.mix(text.len() as u64);
        for byte in text.bytes() {
            self.mix(u64::from(byte));
        }
        if self.options.verbose {
            println!("{:>7} {text}", self.step);
        }
        if self.trace.len() == TRACE_KEPT {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("step {}: {text}", self.step));
    }

    fn mix(&mut self, value: u64) {
        // FNV-1a over 64-bit words.
        self.report.hash = (self.report.hash ^ value).wrapping_mul(0x0000_0100_0000_01b3);
    }

    fn fault(&mut self, kind: &'static str) {
        *self.report.faults.entry(kind).or_default() += 1;
    }

    /// The bank (no limits), the settlements' bank account, and a first few wallets, funded.
    fn bootstrap(&mut self) {
        let mut accounts = vec![
            Account::new(BANK, LEDGER, 1),
            Account::new(BANK_ACCOUNT, LEDGER, 1),
        ];
        for _ in 0..self.rng.between(3, 12) {
            accounts.push(self.new_account(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS));
        }
        self.enqueue(Operation::CreateAccounts(accounts));
        let funding = self.accounts.clone();
        let transfers = funding
            .iter()
            .map(|&id| self.new_transfer(BANK, id, 10_000))
            .collect();
        self.enqueue(Operation::CreateTransfers(transfers));
        self.accounts.push(BANK);
    }

    fn new_account(&mut self, flags: AccountFlags) -> Account {
        let id = self.next_account;
        self.next_account += 1;
        self.accounts.push(id);
        Account {
            flags,
            ..Account::new(id, LEDGER, 1)
        }
    }

    fn new_transfer(&mut self, debit: u128, credit: u128, amount: u128) -> Transfer {
        let id = self.next_transfer;
        self.next_transfer += 1;
        Transfer::new(id, debit, credit, amount, LEDGER, 1)
    }

    fn enqueue(&mut self, operation: Operation) {
        let number = self.next_request;
        self.next_request += 1;
        if let Operation::CreateTransfers(events) = &operation {
            for event in events {
                if self.sent.len() < 2_000 {
                    self.sent.push(*event);
                } else {
                    let at = self.rng.below(self.sent.len() as u64) as usize;
                    self.sent[at] = *event;
                }
            }
        }
        self.queue.push_back(Request { number, operation });
    }

    /// One step, then, if the shards' state changed, the ledger's invariants on it.
    fn step(&mut self) -> Result<(), Violation> {
        self.step += 1;
        let commits = self.engine.commits().len();
        let rounds = self.report.rounds;
        // A round applies the commit the shards have not applied yet, if any.
        let behind = self.engine.has_unapplied();
        if self.options.mutation == Some(Mutation::EvictBeforeStored) {
            // The broken build: the shards take every durable commit for stored.
            self.engine.evict(self.log.last_lsn());
        }
        self.act()?;
        // Shards change only when a commit is made or applied (the next round's decide, a
        // restart, a checkpoint's settle): after a flush, a round or a restart.
        if self.engine.commits().len() != commits || (self.report.rounds != rounds && behind) {
            check_invariants(self.engine.applied_accounts())
                .map_err(|e| Violation(format!("after step {}: {e}", self.step)))?;
        }
        Ok(())
    }

    fn act(&mut self) -> Result<(), Violation> {
        if self.flight.as_ref().is_some_and(|f| f.due <= self.step) && self.rng.chance(800) {
            return self.complete_flight();
        }
        let rates = &self.rates;
        let (crash, corruption, jump) = (rates.crash, rates.corruption, rates.clock_jump);
        if self.rng.chance(crash) {
            return self.crash();
        }
        if self.rng.chance(corruption) && self.log.frame_count() > 0 {
            return self.corruption();
        }
        if self.window.is_some() && self.rng.chance(self.rates.store_stalls) {
            let steps = self.rng.between(50, 600);
            self.store_stalled_until = self.step + steps;
            self.fault("store_stall");
            self.note(|| format!("the projector stalls for {steps} steps"));
            return Ok(());
        }
        let store_moves = self.step >= self.store_stalled_until || !self.faulty;
        if self.window.is_some() && store_moves && self.rng.chance(self.rates.store_catches_up) {
            // The projector writes a run of commits: the store moves to a point of the log.
            let (stored, last) = (self.engine.stored_lsn(), self.log.last_lsn());
            if stored < last {
                let to = self.rng.between(stored + 1, last);
                self.engine.project_store(to);
                self.note(|| format!("the store holds LSN {to}"));
            }
            return Ok(());
        }
        let (snapshot, rot) = (self.rates.snapshot, self.rates.snapshot_rot);
        if self.rng.chance(snapshot) {
            return self.snapshot();
        }
        if self.rng.chance(rot) {
            if let Some(path) = self.disk.rot(&mut self.rng) {
                self.fault("snapshot_rot");
                self.note(|| format!("a bit of {} rots", path.display()));
            }
            return Ok(());
        }
        if self.rng.chance(jump) {
            let by = self.rng.between(2_000, 20_000) * MS;
            self.clock += by;
            self.fault("clock_jump");
            self.note(|| format!("clock jumps {} s", by / 1_000 / MS));
            return Ok(());
        }
        if self.rng.chance(250) {
            return self.settlement_step();
        }
        match self.rng.below(100) {
            0..=34 => self.submit(),
            35..=69 => {
                if self.flight.is_none() && !self.queue.is_empty() {
                    return self.round();
                }
            }
            70..=89 => self.clock += self.rng.between(1, 50) * MS,
            90..=93 => self.enqueue(Operation::Expire),
            94..=96 => return self.checkpoint(),
            _ => self.retry(),
        }
        Ok(())
    }

    fn submit(&mut self) {
        let operation = match self.rng.below(100) {
            0..=9 => Operation::CreateAccounts(self.account_batch()),
            _ => Operation::CreateTransfers(self.transfer_batch()),
        };
        self.enqueue(operation);
    }

    /// A client sends again a request that failed or went unanswered, or repeats a transfer
    /// (the same, or with a field changed).
    fn retry(&mut self) {
        if !self.retries.is_empty() && self.rng.chance(600) {
            let at = self.rng.below(self.retries.len() as u64) as usize;
            let operation = self.retries.swap_remove(at);
            self.enqueue(operation);
        } else if !self.sent.is_empty() {
            let mut transfer = *self.rng.pick(&self.sent);
            if self.rng.chance(300) {
                match self.rng.below(3) {
                    0 => transfer.amount = transfer.amount.wrapping_add(1),
                    1 => transfer.user_data_64 = transfer.user_data_64.wrapping_add(1),
                    _ => transfer.code = transfer.code.wrapping_add(1),
                }
            }
            transfer.flags = TransferFlags(transfer.flags.0 & !TransferFlags::LINKED.0);
            self.enqueue(Operation::CreateTransfers(vec![transfer]));
        }
    }

    fn account_batch(&mut self) -> Vec<Account> {
        let count = self.rng.between(1, 4);
        let mut batch = Vec::new();
        for _ in 0..count {
            let account = match self.rng.below(100) {
                0..=59 => self.new_account(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
                60..=74 => self.new_account(AccountFlags::empty()),
                75..=82 => self.new_account(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
                83..=86 => self.new_account(AccountFlags::CLOSED),
                87..=92 => {
                    // A repeat of an existing id, the same or with other flags.
                    let id = *self.rng.pick(&self.accounts);
                    let flags = if self.rng.chance(500) {
                        AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                    } else {
                        AccountFlags::empty()
                    };
                    Account {
                        flags,
                        ..Account::new(id, LEDGER, 1)
                    }
                }
                93..=95 => Account {
                    ledger: 2,
                    ..self.new_account(AccountFlags::empty())
                },
                _ => Account {
                    code: 0,
                    ..self.new_account(AccountFlags::empty())
                },
            };
            batch.push(account);
        }
        self.link(&mut batch, |a| &mut a.flags.0, AccountFlags::LINKED.0);
        batch
    }

    /// Marks a batch as one linked chain now and then (and leaves it open rarely).
    fn link<T>(&mut self, batch: &mut [T], flags: impl Fn(&mut T) -> &mut u16, linked: u16) {
        if batch.len() > 1 && self.rng.chance(200) {
            let open = self.rng.chance(100);
            let last = batch.len() - 1;
            for (i, event) in batch.iter_mut().enumerate() {
                if i < last || open {
                    *flags(event) |= linked;
                }
            }
        }
    }

    fn account(&mut self) -> u128 {
        // A few hot accounts take a third of the traffic.
        if self.rng.chance(330) {
            self.accounts[self.rng.below(self.accounts.len().min(3) as u64) as usize]
        } else {
            *self.rng.pick(&self.accounts)
        }
    }

    fn two_accounts(&mut self) -> (u128, u128) {
        let debit = self.account();
        let mut credit = self.account();
        if credit == debit {
            credit = if debit == BANK {
                self.accounts[0]
            } else {
                BANK
            };
        }
        (debit, credit)
    }

    fn transfer_batch(&mut self) -> Vec<Transfer> {
        let count = self.rng.between(1, 6);
        let mut batch = Vec::new();
        for _ in 0..count {
            let transfer = match self.rng.below(100) {
                0..=9 => {
                    let (_, wallet) = self.two_accounts();
                    let amount = u128::from(self.rng.between(100, 5_000));
                    self.new_transfer(BANK, wallet, amount)
                }
                10..=54 => {
                    let (debit, credit) = self.two_accounts();
                    let amount = u128::from(self.rng.between(1, 800));
                    self.new_transfer(debit, credit, amount)
                }
                55..=69 => {
                    let (debit, credit) = self.two_accounts();
                    let amount = u128::from(self.rng.between(1, 800));
                    let timeout = if self.rng.chance(500) {
                        0
                    } else {
                        self.rng.between(1, 4) as u32
                    };
                    let transfer = Transfer {
                        flags: TransferFlags::PENDING,
                        timeout,
                        ..self.new_transfer(debit, credit, amount)
                    };
                    self.pending_ids.push(transfer.id);
                    transfer
                }
                70..=82 if !self.pending_ids.is_empty() => {
                    let pending_id = *self.rng.pick(&self.pending_ids);
                    let post = self.rng.chance(600);
                    let amount = match self.rng.below(4) {
                        0 => 0,
                        1 => POST_WHOLE_PENDING_AMOUNT,
                        _ => u128::from(self.rng.between(1, 900)),
                    };
                    Transfer {
                        flags: if post {
                            TransferFlags::POST_PENDING_TRANSFER
                        } else {
                            TransferFlags::VOID_PENDING_TRANSFER
                        },
                        pending_id,
                        amount: if post { amount } else { 0 },
                        ..self.new_transfer(0, 0, 0)
                    }
                    .with_zero_ledger()
                }
                83..=86 => {
                    let (debit, credit) = self.two_accounts();
                    Transfer {
                        flags: TransferFlags::BALANCING_DEBIT,
                        ..self.new_transfer(debit, credit, 1_000_000)
                    }
                }
                _ => self.invalid_transfer(),
            };
            batch.push(transfer);
        }
        self.link(&mut batch, |t| &mut t.flags.0, TransferFlags::LINKED.0);
        batch
    }

    fn invalid_transfer(&mut self) -> Transfer {
        let (debit, credit) = self.two_accounts();
        let valid = self.new_transfer(debit, credit, 10);
        match self.rng.below(6) {
            0 => Transfer {
                credit_account_id: debit,
                ..valid
            },
            1 => Transfer { amount: 0, ..valid },
            2 => Transfer {
                credit_account_id: self.next_account + 1_000,
                ..valid
            },
            3 => Transfer { id: 0, ..valid },
            4 => Transfer { ledger: 2, ..valid },
            _ => Transfer {
                timeout: 5,
                ..valid
            },
        }
    }

    /// Takes a few queued requests into one round: the engine decides it, the model decides
    /// it apart, and every result must agree. Then the commit goes to the log.
    fn round(&mut self) -> Result<(), Violation> {
        let take = self.rng.between(1, self.queue.len().min(4) as u64) as usize;
        let requests: Vec<Request> = self.queue.drain(..take).collect();
        let operations: Vec<Operation> = requests.iter().map(|r| r.operation.clone()).collect();
        let events: usize = operations.iter().map(Operation::event_count).sum();
        self.report.rounds += 1;
        self.report.events += events as u64;
        let store_fails = self.faulty && self.rng.chance(self.rates.store_fails);
        self.engine.set_store_failing(store_fails);
        let decided = self.engine.try_decide(operations.clone(), self.clock);
        self.engine.set_store_failing(false);
        let Ok(decided) = decided else {
            // Nothing was decided; the sequencer moved on all the same, as the model does.
            self.fault("store_fetch_failed");
            self.note(|| "the store failed a round's fetch: its requests get unavailable".into());
            for operation in &operations {
                self.model.stamp(self.clock, operation.event_count());
            }
            self.model.keep();
            let others = self.without_settlements(requests, true);
            self.retries.extend(others);
            return Ok(());
        };

        self.model.keep();
        let model_mark = self.model.mark();
        let model = &mut self.model;
        let mut expected = Vec::with_capacity(operations.len());
        for operation in &operations {
            let first = model.stamp(self.clock, operation.event_count());
            model.expire(first);
            expected.push(match operation {
                Operation::CreateAccounts(events) => {
                    Outcome::Accounts(model.create_accounts(events, first))
                }
                Operation::CreateTransfers(events) => {
                    Outcome::Transfers(model.create_transfers(events, first))
                }
                Operation::Expire => Outcome::Expired,
            });
        }
        for outcome in &expected {
            let codes: Vec<&'static str> = match outcome {
                Outcome::Accounts(results) => results.iter().map(|r| r.code()).collect(),
                Outcome::Transfers(results) => results.iter().map(|r| r.code()).collect(),
                Outcome::Expired => Vec::new(),
            };
            for code in codes {
                *self.report.results.entry(code).or_default() += 1;
            }
        }
        let numbers: Vec<u64> = requests.iter().map(|r| r.number).collect();
        let records = decided.records.len();
        self.note(|| format!("round of requests {numbers:?}: {events} events, {records} records"));
        if decided.outcomes != expected {
            return Err(Violation(format!(
                "the engine and the reference model disagree on a result:\n  operations {operations:?}\n  engine {:?}\n  model  {expected:?}",
                decided.outcomes
            )));
        }
        if decided.timestamp_max != self.model.timestamp_last {
            return Err(Violation(format!(
                "timestamps: the engine's round ends at {}, the model's at {}",
                decided.timestamp_max, self.model.timestamp_last
            )));
        }
        if decided.records.is_empty() {
            self.engine.commit(decided, true);
            self.model.keep();
            self.answer(&requests, &expected);
            return Ok(());
        }
        let slow = self.faulty && self.rng.chance(self.rates.slow_flush);
        if slow {
            self.fault("slow_flush");
        }
        let fails = self.faulty && self.rng.chance(self.rates.flush_fails);
        let due = self.step
            + if slow {
                self.rng.between(5, 40)
            } else {
                self.rng.between(0, 2)
            };
        if self.options.mutation == Some(Mutation::AckBeforeDurable) {
            self.answer(&requests, &expected);
        }
        self.flight = Some(Flight {
            decided,
            requests,
            model_mark,
            due,
            fails,
        });
        Ok(())
    }

    fn commit_of(&self, decided: &Decided) -> Commit {
        let mut records = decided.records.clone();
        if self.options.mutation == Some(Mutation::DropRecord) && records.len() > 1 {
            records.pop();
        }
        Commit {
            lsn: self.log.last_lsn() + 1,
            timestamp_max: decided.timestamp_max,
            records,
        }
    }

    /// The log answers the flush in flight.
    fn complete_flight(&mut self) -> Result<(), Violation> {
        let flight = self.flight.take().expect("a flush in flight");
        if flight.fails {
            self.fault("flush_failed");
            self.note(|| "flush failed: the round's requests get unavailable".to_string());
            self.engine.abandon(flight.decided);
            // The round's changes are undone, but the sequencer moved on all the same.
            let timestamp_last = self.model.timestamp_last;
            self.model.back_to(flight.model_mark);
            self.model.timestamp_last = timestamp_last;
            self.model.keep();
            let others = self.without_settlements(flight.requests, true);
            self.retries.extend(others);
            return Ok(());
        }
        let commit = self.commit_of(&flight.decided);
        self.log.flush(&commit);
        let apply_now = self.rng.chance(500);
        let outcomes = flight.decided.outcomes.clone();
        self.engine.commit(flight.decided, apply_now);
        if self.engine.commits().len() as u64 != self.log.last_lsn() {
            return Err("the engine's commits and the log disagree on the last LSN".into());
        }
        self.model.keep();
        let lsn = commit.lsn;
        self.note(|| format!("flushed LSN {lsn}, answered"));
        if self.options.mutation != Some(Mutation::AckBeforeDurable) {
            self.answer(&flight.requests, &outcomes);
        }
        Ok(())
    }

    /// What a client keeps from an answer: what was created must stay; ids that failed for a
    /// transient reason are burned.
    fn answer(&mut self, requests: &[Request], outcomes: &[Outcome]) {
        let now_ms = self.clock / MS;
        for (request, outcome) in requests.iter().zip(outcomes) {
            if let (Some(id), Outcome::Transfers(results)) =
                (self.settlements.of_request(request.number), outcome)
            {
                self.settlements
                    .on_ledger(id, Some(results[0]), &mut self.rng, now_ms);
            }
            match (&request.operation, outcome) {
                (Operation::CreateTransfers(events), Outcome::Transfers(results)) => {
                    for (event, result) in events.iter().zip(results) {
                        if result.is_transient() {
                            self.burned.insert(event.id);
                        } else if *result == CreateTransferResult::Created {
                            self.acked_transfers.insert(event.id);
                        }
                    }
                }
                (Operation::CreateAccounts(events), Outcome::Accounts(results)) => {
                    for (event, result) in events.iter().zip(results) {
                        if *result == CreateAccountResult::Created {
                            self.acked_accounts.insert(event.id);
                            let wallet = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
                            if event.flags.0 & !AccountFlags::LINKED.0 == wallet.0
                                && event.ledger == LEDGER
                                && event.code != 0
                            {
                                self.settlements.wallets.push(event.id);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The process dies at any point, even between a flush and its answer; it restarts from
    /// the log through the real decoder, and must hold exactly what the model holds.
    fn crash(&mut self) -> Result<(), Violation> {
        self.fault("crash");
        if let Some(flight) = self.flight.take() {
            // The flush was under way: it may have committed or not.
            if !flight.fails && self.rng.chance(500) {
                self.fault("crash_after_flush");
                let commit = self.commit_of(&flight.decided);
                self.log.flush(&commit);
            } else {
                self.model.back_to(flight.model_mark);
            }
            self.model.keep();
            let others = self.without_settlements(flight.requests, false);
            self.retries.extend(others);
        }
        let queued: Vec<Request> = self.queue.drain(..).collect();
        let others = self.without_settlements(queued, false);
        self.retries.extend(others);
        self.settlements.crash();
        self.note(|| "crash and restart".to_string());
        self.restart()
    }

    /// The snapshot actor's work, as in production: the newest valid snapshot plus the durable
    /// log after it, applied by the shard state machine, written through the real snapshot
    /// code onto the simulated disk; then pruning. The process may die at any operation of
    /// the write; then the machine loses what was not durable, and restarts.
    fn snapshot(&mut self) -> Result<(), Violation> {
        let commits = self.durable_commits()?;
        let (base, _) = self
            .snapshots
            .newest_valid(|m| of_this_log(m, &commits))
            .map_err(|e| Violation(format!("snapshots could not be listed: {e}")))?;
        let base = base.map(|(_, image)| image);
        // As the snapshot actor rebuilds: with the server's shards and window, letting go of
        // what the store holds now.
        let stored_lsn = self.engine.stored_lsn();
        let image = new_engine(
            self.shard_count,
            self.window,
            0,
            base.as_ref(),
            &commits,
            stored_lsn,
        )
        .image();
        if self.flight.is_none() {
            self.engine.settle();
            if essence(&self.engine.image()) != essence(&image) {
                return Err(Violation(format!(
                    "the snapshot rebuilt at LSN {} differs from the engine's state",
                    image.lsn
                )));
            }
        }
        image
            .check()
            .map_err(|e| Violation(format!("a snapshot at LSN {}: {e}", image.lsn)))?;
        let dies = self.rng.chance(self.rates.snapshot_crash);
        if dies {
            let after = self.rng.below(16);
            self.disk.die_after(after);
        }
        let parts = self.rng.between(1, 4) as u32;
        self.fault("snapshot");
        self.note(|| format!("snapshot at LSN {} in {parts} parts", image.lsn));
        let written = self
            .snapshots
            .write(&image, parts, "simulated")
            .and_then(|_| self.snapshots.prune(SNAPSHOTS_KEPT));
        match written {
            Ok(_) if dies => {
                // The process dies later, after the snapshot is in place.
                self.disk.power_loss(&mut self.rng);
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(_) if self.disk.is_dead() => {
                self.fault("crash_during_snapshot");
                let lost = self.disk.power_loss(&mut self.rng);
                self.note(|| format!("the process dies writing it; {lost} folder entries lost"));
                self.crash()
            }
            Err(error) => Err(Violation(format!(
                "a snapshot could not be written: {error}"
            ))),
        }
    }

    fn durable_commits(&self) -> Result<Vec<Commit>, Violation> {
        self.log.read_all().map_err(|damage| {
            Violation(format!(
                "recovery refused an undamaged log at LSN {}: {}",
                damage.lsn, damage.detail
            ))
        })
    }

    /// The restart as in production: unfinished snapshots removed, the newest valid one that
    /// belongs to the log loaded, the log after it replayed, with a shard count that may differ
    /// from the last run's.
    fn restart(&mut self) -> Result<(), Violation> {
        let commits = self.durable_commits()?;
        self.snapshots
            .remove_unfinished()
            .map_err(|e| Violation(format!("unfinished snapshots could not be removed: {e}")))?;
        let (found, skipped) = self
            .snapshots
            .newest_valid(|m| of_this_log(m, &commits))
            .map_err(|e| Violation(format!("snapshots could not be listed: {e}")))?;
        for skipped in skipped {
            self.fault("snapshot_skipped");
            self.note(|| format!("{} passed over: {}", skipped.name, skipped.error));
        }
        let base: Option<LedgerImage> = found.map(|(_, image)| image);
        let base_lsn = base.as_ref().map_or(0, |image| image.lsn);
        self.shard_count = self.rng.between(1, 4) as usize;
        let shards = self.shard_count;
        self.note(|| {
            format!("restart with {shards} shards from LSN {base_lsn} and the log after it")
        });
        let replayed = if self.options.mutation == Some(Mutation::SkipLogTail) && base_lsn > 0 {
            &commits[..base_lsn as usize]
        } else {
            &commits[..]
        };
        // The store survives the crash: what it held, it holds.
        let stored_lsn = self.engine.stored_lsn().min(replayed.len() as u64);
        self.engine = new_engine(
            self.shard_count,
            self.window,
            self.forced_maybes,
            base.as_ref(),
            replayed,
            stored_lsn,
        );
        self.model.timestamp_last = commits.last().map_or(0, |c| c.timestamp_max);
        self.check_state("after a restart")
    }

    /// A stored frame rots; the restart must refuse it, naming its LSN, and start once it is
    /// restored from a backup.
    fn corruption(&mut self) -> Result<(), Violation> {
        self.fault("corruption");
        let index = self.rng.below(self.log.frame_count() as u64) as usize;
        let (byte, bit) = (self.rng.next_u64() as usize, self.rng.below(8) as u8);
        let (lsn, original) = self.log.corrupt(index, byte, bit);
        self.note(|| format!("frame at LSN {lsn} damaged; restart"));
        match self.log.read_all() {
            Ok(_) => {
                return Err(Violation(format!(
                    "recovery replayed a damaged frame (LSN {lsn})"
                )))
            }
            Err(damage) if damage.lsn != lsn => {
                return Err(Violation(format!(
                    "recovery named LSN {} for damage at LSN {lsn}",
                    damage.lsn
                )))
            }
            Err(_) => {}
        }
        self.log.restore(index, original);
        self.crash()
    }

    /// Settles the engine and compares its accounts with the model's (the whole state is
    /// compared after every restart and at the end).
    fn checkpoint(&mut self) -> Result<(), Violation> {
        if self.flight.is_some() {
            return Ok(());
        }
        self.engine.settle();
        self.check_accounts("at a checkpoint")?;
        // Whatever left the shards' memory, every acknowledged transfer is found.
        for id in &self.acked_transfers {
            if self.engine.transfer(*id).is_none() {
                return Err(Violation(format!(
                    "at a checkpoint: acknowledged transfer {id} is not found"
                )));
            }
        }
        Ok(())
    }

    fn check_accounts(&mut self, when: &str) -> Result<Vec<Account>, Violation> {
        let engine_accounts = self.engine.all_accounts();
        if !engine_accounts.iter().eq(self.model.accounts.values()) {
            let model_accounts: Vec<&Account> = self.model.accounts.values().collect();
            let first = engine_accounts
                .iter()
                .zip(&model_accounts)
                .find(|(a, b)| a != *b)
                .map(|(a, b)| format!("engine {a:?}\n  model  {b:?}"))
                .unwrap_or_else(|| {
                    format!(
                        "{} accounts against {}",
                        engine_accounts.len(),
                        model_accounts.len()
                    )
                });
            return Err(Violation(format!(
                "{when}: the engine's accounts differ from the model's:\n  {first}"
            )));
        }
        check_invariants(&engine_accounts).map_err(|e| Violation(format!("{when}: {e}")))?;
        Ok(engine_accounts)
    }

    /// The engine's state equals the model's, and the ledger's invariants hold.
    fn check_state(&mut self, when: &str) -> Result<(), Violation> {
        self.engine.settle();
        self.check_accounts(when)?;
        for (id, transfer) in &self.model.transfers {
            if self.engine.transfer(*id).as_ref() != Some(transfer) {
                return Err(Violation(format!(
                    "{when}: transfer {id} is {:?} in the engine, {transfer:?} in the model",
                    self.engine.transfer(*id)
                )));
            }
            if let Some(status) = self.model.pending.get(id) {
                if self.engine.pending_status(*id) != Some(*status) {
                    return Err(Violation(format!(
                        "{when}: pending transfer {id} has another status"
                    )));
                }
            }
        }
        for id in &self.acked_transfers {
            if self.engine.transfer(*id).is_none() {
                return Err(Violation(format!(
                    "{when}: acknowledged transfer {id} is lost"
                )));
            }
        }
        for id in &self.acked_accounts {
            if self.engine.account(*id).is_none() {
                return Err(Violation(format!(
                    "{when}: acknowledged account {id} is lost"
                )));
            }
        }
        for id in &self.burned {
            if self.engine.transfer(*id).is_some() {
                return Err(Violation(format!(
                    "{when}: transfer {id} failed for good, yet it exists"
                )));
            }
        }
        self.check_settlements(when)
    }

    /// Each settlement's ledger and bank agree with its persisted phase: held funds stay held
    /// while the bank's answer is not in, money moved at the bank is recorded when the
    /// settlement says so, and a failed settlement moved nothing.
    fn check_settlements(&self, when: &str) -> Result<(), Violation> {
        use kizo_ledger::PendingStatus;
        use kizo_settlement::{Kind, Phase, Status};
        for s in self.settlements.store.values() {
            let hold_status = (s.kind == Kind::Withdrawal)
                .then(|| self.engine.pending_status(s.hold_transfer().id))
                .flatten();
            let settled = self.engine.transfer(s.settle_transfer().id).is_some();
            let bank = self
                .settlements
                .books
                .status(s.kind, uuid::Uuid::from_u128(s.id));
            let moved = bank.is_some_and(|r| r.succeeded());
            let fail = |what: &str| {
                Err(Violation(format!(
                    "{when}: settlement {:x} ({:?}, {:?}): {what}",
                    s.id, s.kind, s.phase
                )))
            };
            if s.kind == Kind::Withdrawal {
                let allowed: &[PendingStatus] = match s.phase {
                    Phase::Send | Phase::Check | Phase::Done(Status::NeedsReview) => {
                        &[PendingStatus::Pending]
                    }
                    Phase::Settle => &[PendingStatus::Pending, PendingStatus::Posted],
                    Phase::Release => &[PendingStatus::Pending, PendingStatus::Voided],
                    Phase::Done(Status::Succeeded) => &[PendingStatus::Posted],
                    _ => &[],
                };
                if !allowed.is_empty() && !hold_status.is_some_and(|h| allowed.contains(&h)) {
                    return fail(&format!("its hold is {hold_status:?}"));
                }
                if s.phase == Phase::Done(Status::Failed)
                    && hold_status.is_some_and(|h| h != PendingStatus::Voided)
                {
                    return fail(&format!("failed, yet its hold is {hold_status:?}"));
                }
            }
            match s.phase {
                Phase::Done(Status::Succeeded) if !settled || !moved => {
                    return fail(&format!(
                        "succeeded, yet recorded {settled}, moved at the bank {moved}"
                    ))
                }
                Phase::Done(Status::Failed) if settled || moved => {
                    return fail(&format!(
                        "failed, yet recorded {settled}, moved at the bank {moved}"
                    ))
                }
                Phase::Settle if !moved => return fail("settling money the bank did not move"),
                _ => {}
            }
        }
        Ok(())
    }

    fn hash_state(&mut self) {
        let accounts = self.engine.all_accounts();
        for a in accounts {
            for value in [
                a.id,
                a.debits_pending,
                a.debits_posted,
                a.credits_pending,
                a.credits_posted,
            ] {
                self.mix(value as u64);
                self.mix((value >> 64) as u64);
            }
        }
        self.mix(self.log.last_lsn());
    }
}

/// An engine as a restart builds it: shards that keep `window` transfers each (with a store
/// that holds the log up to `stored_lsn` and then lags until told to move) or everything,
/// from `base` and the log after it.
fn new_engine(
    shard_count: usize,
    window: Option<usize>,
    forced_maybes: u32,
    base: Option<&LedgerImage>,
    commits: &[Commit],
    stored_lsn: u64,
) -> LocalEngine {
    let mut engine = match window {
        Some(window) => {
            LocalEngine::recover_with_window(shard_count, window, base, commits, stored_lsn)
        }
        None => LocalEngine::recover_from(shard_count, base, commits),
    };
    if window.is_some() {
        engine.hold_store();
        engine.force_filter_false_positives(forced_maybes);
    }
    engine
}

/// What two images of one ledger must agree on whatever each let go of: the LSN, the
/// accounts, and the pending transfers still pending.
fn essence(image: &LedgerImage) -> (u64, &[Account], Vec<u128>) {
    let pending = image
        .pending
        .iter()
        .filter(|(_, status)| *status == kizo_ledger::PendingStatus::Pending)
        .map(|(id, _)| *id)
        .collect();
    (image.lsn, &image.accounts, pending)
}

/// Whether a snapshot's manifest belongs to this log: its LSN is in it, and that commit's
/// timestamp is the snapshot's.
/// Whether a snapshot belongs to this log; the reason it does not, as the snapshot folder
/// reports a snapshot passed over.
fn of_this_log(manifest: &Manifest, commits: &[Commit]) -> Result<(), String> {
    match manifest
        .lsn
        .checked_sub(1)
        .and_then(|i| commits.get(i as usize))
    {
        Some(commit) if commit.timestamp_max == manifest.timestamp_max => Ok(()),
        _ => Err(format!("not of this log (LSN {})", manifest.lsn)),
    }
}

/// Per ledger, debits equal credits (posted, and pending); no account breaks its limit.
pub fn check_invariants<'a>(
    accounts: impl IntoIterator<Item = &'a Account>,
) -> Result<(), Violation> {
    // (ledger, [debits posted, credits posted, debits pending, credits pending]); few ledgers.
    let mut sums: Vec<(u32, [u128; 4])> = Vec::new();
    for a in accounts {
        let at = match sums.iter().position(|(ledger, _)| *ledger == a.ledger) {
            Some(at) => at,
            None => {
                sums.push((a.ledger, [0; 4]));
                sums.len() - 1
            }
        };
        let s = &mut sums[at].1;
        s[0] += a.debits_posted;
        s[1] += a.credits_posted;
        s[2] += a.debits_pending;
        s[3] += a.credits_pending;
        if a.flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && a.debits_posted + a.debits_pending > a.credits_posted
        {
            return Err(Violation(format!("account {} is overdrawn: {a:?}", a.id)));
        }
        if a.flags
            .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
            && a.credits_posted + a.credits_pending > a.debits_posted
        {
            return Err(Violation(format!(
                "account {} exceeds its debits: {a:?}",
                a.id
            )));
        }
    }
    for (ledger, [dp, cp, dq, cq]) in sums {
        if dp != cp || dq != cq {
            return Err(Violation(format!(
                "ledger {ledger} does not balance: posted {dp} / {cp}, pending {dq} / {cq}"
            )));
        }
    }
    Ok(())
}

trait ZeroLedger {
    fn with_zero_ledger(self) -> Self;
}

impl ZeroLedger for Transfer {
    /// A post or void names no ledger or code: it inherits the pending transfer's.
    fn with_zero_ledger(self) -> Self {
        Transfer {
            ledger: 0,
            code: 0,
            ..self
        }
    }
}
