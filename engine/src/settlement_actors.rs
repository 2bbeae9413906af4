//! The actors that carry settlements and reconciliation: they move messages, time and I/O; every
//! decision is [`crate::settlement`]'s or [`crate::reconcile`]'s.
//!
//! - [`SettlementSupervisor`]: keeps every unfinished settlement with its due time, starts a
//!   worker for each one due (at most `workers_max` at once), resumes every unfinished
//!   settlement at start, and restarts the settlement of a worker that crashed (from its last
//!   persisted state).
//! - A worker drives one settlement until it must wait (a backoff) or ends, persisting each
//!   state before acting on it ([`advance`]), then reports back and stops.
//! - [`Reconciler`]: on a schedule and on demand, compares settlements, the bank's statement and
//!   the ledger; re-drives stuck settlements and unknown outcomes; keeps its report.
//!
//! The bank and the settlement store are traits ([`BankPort`], [`SettlementStore`]): the gateway
//! plugs in the HTTP bank or the in-process one, and PostgreSQL or the embedded store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::reconcile::{reconcile, BankAccountBalance, Movement, Report};
use crate::settlement::{Action, ActionOutcome, BankOutcome, LedgerOutcome, Policy, Settlement};
use crate::{Clock, CreateTransferResult, Engine, EngineError, Transfer};

/// A boxed future: the ports are used as trait objects.
pub type PortFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The bank, as settlements need it.
pub trait BankPort: Send + Sync + 'static {
    /// Asks the bank to move the money: a collection for a deposit, a payout for a withdrawal,
    /// with the settlement's id as the reference.
    fn send<'a>(&'a self, settlement: &'a Settlement) -> PortFuture<'a, BankOutcome>;
    /// What the bank did with the settlement's reference.
    fn check<'a>(&'a self, settlement: &'a Settlement) -> PortFuture<'a, BankOutcome>;
    /// Every movement the bank made.
    fn statement(&self) -> PortFuture<'_, Result<Vec<Movement>, PortError>>;
}

/// Where settlements are kept, durably.
pub trait SettlementStorePort: Send + Sync + 'static {
    /// Writes the settlement's next state `to` durably before it returns, if what is stored
    /// is still `from` (compare-and-set); [`PortError::Superseded`] when another writer (a
    /// person resolving, the reconciler) moved it first, and then nothing is written.
    fn save<'a>(
        &'a self,
        from: &'a Settlement,
        to: &'a Settlement,
    ) -> PortFuture<'a, Result<(), PortError>>;
    fn load(&self, id: u128) -> PortFuture<'_, Result<Option<Settlement>, PortError>>;
    /// Every settlement that is not final (`needs_review` counts as final here).
    fn unfinished(&self) -> PortFuture<'_, Result<Vec<Settlement>, PortError>>;
    /// Every settlement, oldest first, at most `limit`.
    fn all(&self, limit: usize) -> PortFuture<'_, Result<Vec<Settlement>, PortError>>;
    /// Keeps a reconciliation report (the latest is served).
    fn keep_report<'a>(&'a self, report: &'a Report) -> PortFuture<'a, Result<(), PortError>>;
}

/// The ledger, as settlements need it: one engine, or a cluster's partitions (where each
/// transfer goes to the owner of its accounts' partition).
pub trait LedgerPort: Send + Sync + 'static {
    fn create_transfers(
        &self,
        transfers: Vec<Transfer>,
    ) -> PortFuture<'_, Result<Vec<CreateTransferResult>, EngineError>>;
    fn lookup_accounts(
        &self,
        ids: Vec<u128>,
    ) -> PortFuture<'_, Result<Vec<crate::Account>, EngineError>>;
}

impl LedgerPort for Engine {
    fn create_transfers(
        &self,
        transfers: Vec<Transfer>,
    ) -> PortFuture<'_, Result<Vec<CreateTransferResult>, EngineError>> {
        Box::pin(Engine::create_transfers(self, transfers))
    }

    fn lookup_accounts(
        &self,
        ids: Vec<u128>,
    ) -> PortFuture<'_, Result<Vec<crate::Account>, EngineError>> {
        Box::pin(Engine::lookup_accounts(self, ids))
    }
}

/// The ledger's totals over every account, per ledger (the read models in production).
pub trait LedgerTotalsPort: Send + Sync + 'static {
    fn totals(&self) -> PortFuture<'_, Result<Vec<crate::reconcile::LedgerTotals>, PortError>>;
}

/// Settlements known to the supervisor and not final; more are refused (the gateway answers
/// 503) rather than queued without bound.
pub const BACKLOG_MAX: usize = 1_000_000;
/// Settlements reconciliation reads at most.
pub const RECONCILE_SETTLEMENTS_MAX: usize = 1_000_000;

#[derive(Clone, Debug)]
pub struct SettlementConfig {
    pub policy: Policy,
    /// Settlements driven at once (bank calls in flight at most).
    pub workers_max: usize,
    /// How often the supervisor looks for due settlements.
    pub tick: Duration,
    /// Reconciliation's schedule.
    pub reconcile_every: Duration,
    /// A settlement not final and not updated for this long is stuck.
    pub stuck_after: Duration,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            policy: Policy::default(),
            workers_max: 16,
            tick: Duration::from_millis(100),
            reconcile_every: Duration::from_secs(600),
            stuck_after: Duration::from_secs(900),
        }
    }
}

/// What a worker needs: the ledger, the bank, the store.
#[derive(Clone)]
pub struct Ports {
    pub ledger: Arc<dyn LedgerPort>,
    pub bank: Arc<dyn BankPort>,
    pub store: Arc<dyn SettlementStorePort>,
    /// The one clock settlements read: due times, attempts, reconciliation.
    pub clock: Arc<dyn Clock>,
}

/// A jitter for backoffs: spreads the retries of settlements that failed together. Not a secret
/// and not a decision, so a mix of the id, the attempt and the time is enough.
fn jitter(clock: &dyn Clock, settlement: &Settlement) -> u64 {
    let nanos = clock.now_ns() % 1_000_000_000;
    crate::routing::mix64(
        (settlement.id as u64) ^ (u64::from(settlement.attempts_total) << 40) ^ nanos,
    )
}

/// Why [`advance`] stopped early.
#[derive(Debug, thiserror::Error)]
pub enum AdvanceError {
    #[error("the settlement store: {0}")]
    Store(PortError),
}

/// Why a port (the bank's statement, the settlement store, the ledger's totals) did not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// A passing failure: the port could not be reached; retrying may help.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The port answered with data that cannot be decoded; retrying does not help.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// A compare-and-set lost: the stored state moved since it was read. Not a failure of
    /// the port; the caller reloads instead of retrying its write.
    #[error("superseded: {0}")]
    Superseded(String),
}

/// Why the supervisor or the reconciler could not start or run.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SettlementError {
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("the ledger: {0}")]
    Engine(#[from] EngineError),
    /// An actor could not be started or did not answer in time.
    #[error("the settlement actors: {0}")]
    Actor(String),
}

/// One step: persists what [`Settlement::start`] says, performs the action, persists the
/// outcome. Returns the new state and whether the settlement must wait (or is done).
pub async fn advance(
    ports: &Ports,
    policy: &Policy,
    settlement: &Settlement,
) -> Result<(Settlement, bool), AdvanceError> {
    let now = ports.clock.now_ms();
    let (persisted, action) = settlement.start(now);
    if persisted != *settlement {
        ports
            .store
            .save(settlement, &persisted)
            .await
            .map_err(AdvanceError::Store)?;
    }
    let outcome = match action {
        Action::Done | Action::Wait(_) => return Ok((persisted, true)),
        Action::Hold(t) | Action::Settle(t) | Action::Release(t) => {
            ActionOutcome::Ledger(ledger(ports.ledger.as_ref(), t).await)
        }
        Action::Send | Action::Check => {
            let started = Instant::now();
            let call = if action == Action::Send {
                ports.bank.send(&persisted)
            } else {
                ports.bank.check(&persisted)
            };
            let timeout = Duration::from_millis(policy.attempt_timeout_ms);
            let outcome = match tokio::time::timeout(timeout, call).await {
                Ok(outcome) => outcome,
                Err(_) => BankOutcome::Unknown(format!("no answer in {timeout:?}")),
            };
            let (call, label) = (
                if action == Action::Send {
                    "send"
                } else {
                    "check"
                },
                match &outcome {
                    BankOutcome::Moved { .. } => "moved",
                    BankOutcome::Declined(_) => "declined",
                    BankOutcome::NotFound => "not_found",
                    BankOutcome::Unknown(_) => "unknown",
                },
            );
            metrics::histogram!("kizo_bank_call_seconds", "call" => call, "outcome" => label)
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("kizo_settlement_attempts_total", "kind" => persisted.kind.code(), "call" => call)
                .increment(1);
            ActionOutcome::Bank(outcome)
        }
    };
    let next = persisted.on_outcome(
        outcome,
        ports.clock.now_ms(),
        policy,
        jitter(ports.clock.as_ref(), &persisted),
    );
    ports
        .store
        .save(&persisted, &next)
        .await
        .map_err(AdvanceError::Store)?;
    if let (crate::settlement::Phase::Done(status), false) = (
        next.phase,
        matches!(persisted.phase, crate::settlement::Phase::Done(_)),
    ) {
        // Counted as they finish, so that nothing reads the whole table to count them.
        metrics::counter!("kizo_settlements_finished_total", "kind" => next.kind.code(), "status" => status.code())
            .increment(1);
    }
    if next.phase != persisted.phase {
        tracing::debug!(
            settlement = %format_args!("{:032x}", next.id),
            from = persisted.phase.code(),
            to = next.phase.code(),
            "settlement moved"
        );
    }
    Ok((next, false))
}

async fn ledger(ledger: &dyn LedgerPort, transfer: Transfer) -> LedgerOutcome {
    match ledger.create_transfers(vec![transfer]).await {
        Ok(results) => match results[0] {
            CreateTransferResult::Created | CreateTransferResult::Exists => LedgerOutcome::Done,
            other => LedgerOutcome::Refused(other.code()),
        },
        Err(error) => {
            tracing::warn!(%error, "a settlement's ledger transfer could not be made; retrying");
            LedgerOutcome::Unavailable
        }
    }
}

/// Drives a settlement until it waits or ends.
pub async fn drive(
    ports: &Ports,
    policy: &Policy,
    mut settlement: Settlement,
) -> Result<Settlement, AdvanceError> {
    loop {
        let (next, stop) = advance(ports, policy, &settlement).await?;
        settlement = next;
        if stop {
            return Ok(settlement);
        }
    }
}

pub enum SupervisorMsg {
    /// A new settlement (persisted by the caller), or one reconciliation re-drove.
    Submit(Settlement),
    /// Act on this settlement now (a bank callback, reconciliation).
    Wake(u128),
    /// A worker stopped: the state it left, or `None` when it could not persist.
    Finished(u128, Option<Settlement>),
    Tick,
    Counts(RpcReplyPort<SupervisorCounts>),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SupervisorCounts {
    pub waiting: usize,
    pub running: usize,
    pub worker_restarts: u64,
}

pub struct SettlementSupervisor;

pub struct SupervisorState {
    ports: Ports,
    config: SettlementConfig,
    /// Unfinished settlements by id, and by (due, id).
    waiting: HashMap<u128, Settlement>,
    due: BTreeSet<(u64, u128)>,
    running: HashMap<ActorId, u128>,
    running_ids: HashMap<u128, bool>,
    /// The latest settlement submitted while its worker ran (a resolution, a re-drive),
    /// weighed against what the worker leaves when it finishes.
    submitted_while_running: HashMap<u128, Settlement>,
    /// Settlements to reload from the store (their worker crashed, could not persist, or was
    /// asked to act again while it ran): when, and whether to act on it at once.
    reload: BTreeMap<u128, (u64, bool)>,
    backlog: Arc<AtomicUsize>,
    worker_restarts: u64,
}

impl SupervisorState {
    fn schedule(&mut self, settlement: Settlement) {
        if let Some(old) = self.waiting.remove(&settlement.id) {
            self.due.remove(&(old.due_ms, old.id));
        }
        if matches!(settlement.phase, crate::settlement::Phase::Done(_)) {
            return;
        }
        self.due.insert((settlement.due_ms, settlement.id));
        self.waiting.insert(settlement.id, settlement);
    }

    fn known(&self) -> usize {
        self.waiting.len() + self.running_ids.len() + self.reload.len()
    }
}

pub struct SupervisorArgs {
    pub ports: Ports,
    pub config: SettlementConfig,
    pub backlog: Arc<AtomicUsize>,
}

impl Actor for SettlementSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let unfinished = args.ports.store.unfinished().await?;
        if !unfinished.is_empty() {
            tracing::info!(count = unfinished.len(), "resuming unfinished settlements");
        }
        let mut state = SupervisorState {
            ports: args.ports,
            config: args.config,
            waiting: HashMap::new(),
            due: BTreeSet::new(),
            running: HashMap::new(),
            running_ids: HashMap::new(),
            reload: BTreeMap::new(),
            submitted_while_running: HashMap::new(),
            backlog: args.backlog,
            worker_restarts: 0,
        };
        for settlement in unfinished {
            state.schedule(settlement);
        }
        state.backlog.store(state.known(), Ordering::Relaxed);
        myself.send_interval(state.config.tick, || SupervisorMsg::Tick);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Submit(settlement) => {
                if let Some(again) = state.running_ids.get_mut(&settlement.id) {
                    *again = true;
                    state
                        .submitted_while_running
                        .insert(settlement.id, settlement);
                } else {
                    state.schedule(settlement);
                }
                start_due(&myself, state).await;
            }
            SupervisorMsg::Wake(id) => {
                if let Some(again) = state.running_ids.get_mut(&id) {
                    *again = true;
                } else if let Some(mut settlement) = state.waiting.get(&id).cloned() {
                    settlement.due_ms = settlement.due_ms.min(state.ports.clock.now_ms());
                    state.schedule(settlement);
                    start_due(&myself, state).await;
                }
            }
            SupervisorMsg::Finished(id, left) => {
                let again = state.running_ids.remove(&id).unwrap_or(false);
                let now = state.ports.clock.now_ms();
                let submitted = state.submitted_while_running.remove(&id);
                match left {
                    // It ended, and meanwhile a person resolved it (or reconciliation re-drove
                    // it): that state was saved by compare-and-set over the worker's last
                    // one, so it is the newer.
                    Some(settlement)
                        if matches!(settlement.phase, crate::settlement::Phase::Done(_))
                            && submitted.as_ref().is_some_and(|s| {
                                !matches!(s.phase, crate::settlement::Phase::Done(_))
                            }) =>
                    {
                        let mut resubmitted = submitted.expect("checked above");
                        resubmitted.due_ms = resubmitted.due_ms.min(now);
                        state.schedule(resubmitted);
                    }
                    // Otherwise nobody but its worker moved it, so its copy is what is stored.
                    Some(mut settlement) => {
                        if again {
                            settlement.due_ms = settlement.due_ms.min(now);
                        }
                        state.schedule(settlement);
                    }
                    None => {
                        state.reload.insert(id, (now + 1_000, again));
                    }
                }
                start_due(&myself, state).await;
            }
            SupervisorMsg::Tick => {
                reload_due(state).await;
                start_due(&myself, state).await;
            }
            SupervisorMsg::Counts(reply) => {
                let _ = reply.send(SupervisorCounts {
                    waiting: state.waiting.len() + state.reload.len(),
                    running: state.running_ids.len(),
                    worker_restarts: state.worker_restarts,
                });
            }
        }
        state.backlog.store(state.known(), Ordering::Relaxed);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // A worker that stops normally has reported `Finished` first; one that fails has not:
        // its settlement is reloaded from its last persisted state and driven again.
        let (cell, failure) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, Some(error.to_string())),
            SupervisionEvent::ActorTerminated(cell, ..) => (cell, None),
            _ => return Ok(()),
        };
        if let Some(id) = state.running.remove(&cell.get_id()) {
            if let Some(error) = failure {
                if state.running_ids.remove(&id).is_some() {
                    // Reloaded from the store, which holds anything submitted meanwhile.
                    state.submitted_while_running.remove(&id);
                    state.worker_restarts += 1;
                    metrics::counter!("kizo_settlement_worker_restarts_total").increment(1);
                    tracing::error!(settlement = %format_args!("{id:032x}"), %error, "a settlement worker failed; resuming its settlement");
                    state
                        .reload
                        .insert(id, (state.ports.clock.now_ms() + 200, false));
                }
            }
        }
        start_due(&myself, state).await;
        state.backlog.store(state.known(), Ordering::Relaxed);
        Ok(())
    }
}

async fn reload_due(state: &mut SupervisorState) {
    let now = state.ports.clock.now_ms();
    let due: Vec<(u128, bool)> = state
        .reload
        .iter()
        .filter(|(_, (at, _))| *at <= now)
        .map(|(id, (_, act_now))| (*id, *act_now))
        .collect();
    for (id, act_now) in due {
        match state.ports.store.load(id).await {
            Ok(Some(mut settlement)) => {
                state.reload.remove(&id);
                if act_now {
                    settlement.due_ms = settlement.due_ms.min(now);
                }
                state.schedule(settlement);
            }
            Ok(None) => {
                state.reload.remove(&id);
                tracing::error!(settlement = %format_args!("{id:032x}"), "a settlement to resume is not in the store");
            }
            Err(error) => {
                tracing::warn!(%error, "the settlement store is unavailable; retrying");
                state.reload.insert(id, (now + 1_000, act_now));
                return;
            }
        }
    }
}

async fn start_due(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState) {
    let now = state.ports.clock.now_ms();
    while state.running_ids.len() < state.config.workers_max {
        let Some(&(due, id)) = state.due.first() else {
            return;
        };
        if due > now {
            return;
        }
        state.due.pop_first();
        let settlement = state.waiting.remove(&id).expect("due and waiting agree");
        let args = WorkerArgs {
            ports: state.ports.clone(),
            policy: state.config.policy,
            settlement,
            supervisor: myself.clone(),
        };
        match Actor::spawn_linked(None, SettlementWorker, args, myself.get_cell()).await {
            Ok((worker, _)) => {
                state.running.insert(worker.get_id(), id);
                state.running_ids.insert(id, false);
            }
            Err(error) => {
                tracing::error!(%error, "a settlement worker could not start");
                state.reload.insert(id, (now + 1_000, false));
                return;
            }
        }
    }
}

struct SettlementWorker;

struct WorkerArgs {
    ports: Ports,
    policy: Policy,
    settlement: Settlement,
    supervisor: ActorRef<SupervisorMsg>,
}

impl Actor for SettlementWorker {
    type Msg = ();
    type State = Option<WorkerArgs>;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        args: WorkerArgs,
    ) -> Result<Option<WorkerArgs>, ActorProcessingErr> {
        myself.send_message(())?;
        Ok(Some(args))
    }

    async fn handle(
        &self,
        myself: ActorRef<()>,
        _: (),
        state: &mut Option<WorkerArgs>,
    ) -> Result<(), ActorProcessingErr> {
        let Some(args) = state.take() else {
            return Ok(());
        };
        let id = args.settlement.id;
        let left = match drive(&args.ports, &args.policy, args.settlement).await {
            Ok(settlement) => Some(settlement),
            Err(error) => {
                tracing::warn!(settlement = %format_args!("{id:032x}"), %error, "a settlement paused");
                None
            }
        };
        let _ = args
            .supervisor
            .send_message(SupervisorMsg::Finished(id, left));
        myself.stop(None);
        Ok(())
    }
}

/// The running supervisor, as the gateway holds it.
#[derive(Clone)]
pub struct Settlements {
    pub supervisor: ActorRef<SupervisorMsg>,
    backlog: Arc<AtomicUsize>,
}

impl Settlements {
    pub async fn start(
        ports: Ports,
        config: SettlementConfig,
    ) -> Result<Settlements, SettlementError> {
        let backlog = Arc::new(AtomicUsize::new(0));
        let (supervisor, _) = Actor::spawn(
            None,
            SettlementSupervisor,
            SupervisorArgs {
                ports,
                config,
                backlog: backlog.clone(),
            },
        )
        .await
        .map_err(|error| SettlementError::Actor(error.to_string()))?;
        Ok(Settlements {
            supervisor,
            backlog,
        })
    }

    /// Unfinished settlements the supervisor holds; new ones are refused at [`BACKLOG_MAX`].
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    pub fn submit(&self, settlement: Settlement) {
        let _ = self
            .supervisor
            .send_message(SupervisorMsg::Submit(settlement));
    }

    pub fn wake(&self, id: u128) {
        let _ = self.supervisor.send_message(SupervisorMsg::Wake(id));
    }

    pub async fn counts(&self) -> Option<SupervisorCounts> {
        ractor::call_t!(self.supervisor, SupervisorMsg::Counts, 5_000).ok()
    }

    pub fn stop(&self) {
        self.supervisor.stop(None);
    }
}

pub enum ReconcilerMsg {
    /// Reconcile now; answer with the report (or why there is none).
    Run(Option<RpcReplyPort<Result<Report, SettlementError>>>),
}

pub struct Reconciler;

pub struct ReconcilerArgs {
    pub ports: Ports,
    /// Checks the ledger's invariants over every account when given.
    pub totals: Option<Arc<dyn LedgerTotalsPort>>,
    pub settlements: Settlements,
    pub config: SettlementConfig,
}

impl Actor for Reconciler {
    type Msg = ReconcilerMsg;
    type State = ReconcilerArgs;
    type Arguments = ReconcilerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ReconcilerMsg>,
        args: ReconcilerArgs,
    ) -> Result<ReconcilerArgs, ActorProcessingErr> {
        myself.send_interval(args.config.reconcile_every, || ReconcilerMsg::Run(None));
        Ok(args)
    }

    async fn handle(
        &self,
        _: ActorRef<ReconcilerMsg>,
        message: ReconcilerMsg,
        state: &mut ReconcilerArgs,
    ) -> Result<(), ActorProcessingErr> {
        let ReconcilerMsg::Run(reply) = message;
        let result = run_reconciliation(state).await;
        match &result {
            Ok(report) => {
                metrics::counter!("kizo_reconciliation_runs_total", "result" => "done")
                    .increment(1);
                metrics::gauge!("kizo_reconciliation_unexplained").set(report.unexplained() as f64);
                metrics::gauge!("kizo_reconciliation_needs_review")
                    .set(report.needs_review.len() as f64);
                metrics::gauge!("kizo_reconciliation_stuck").set(report.stuck.len() as f64);
                if report.unexplained() > 0 {
                    tracing::error!(
                        unexplained = report.unexplained(),
                        "reconciliation found differences"
                    );
                } else {
                    tracing::info!(
                        settlements = report.settlements,
                        movements = report.movements,
                        "reconciliation: the books agree"
                    );
                }
            }
            Err(error) => {
                metrics::counter!("kizo_reconciliation_runs_total", "result" => "failed")
                    .increment(1);
                tracing::warn!(%error, "reconciliation could not run");
            }
        }
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
        Ok(())
    }
}

/// Reads settlements, the ledger and the statement; re-drives what is stuck; keeps the report.
async fn run_reconciliation(state: &ReconcilerArgs) -> Result<Report, SettlementError> {
    let ports = &state.ports;
    // Settlements first: one that succeeded by now has its movement on the statement read next.
    let mut settlements = ports.store.all(RECONCILE_SETTLEMENTS_MAX).await?;
    let statement = ports.bank.statement().await?;
    // The ledger's bank accounts are compared with settlements read on both sides of it; if
    // any moved meanwhile, read again (a few times), else leave the ledger check out.
    let mut balances = None;
    for _ in 0..5 {
        let read = bank_balances(ports.ledger.as_ref(), &settlements).await?;
        let again = ports.store.all(RECONCILE_SETTLEMENTS_MAX).await?;
        let moved = again.len() != settlements.len()
            || again
                .iter()
                .zip(&settlements)
                .any(|(a, b)| a.phase != b.phase);
        settlements = again;
        if !moved {
            balances = Some(read);
            break;
        }
    }
    let now = ports.clock.now_ms();
    let stuck_before = now.saturating_sub(state.config.stuck_after.as_millis() as u64);
    let mut report = reconcile(
        &settlements,
        &statement,
        balances.as_ref(),
        now,
        stuck_before,
    );
    // Re-drive: what is stuck (handed to the supervisor again, in case it never had it), and
    // what ran out of attempts without knowing.
    for s in settlements.iter().filter(|s| report.stuck.contains(&s.id)) {
        state.settlements.submit(s.clone());
    }
    let mut redriven = 0;
    for s in &settlements {
        if let Some(again) = s.redrive(now) {
            match ports.store.save(s, &again).await {
                Ok(()) => {
                    state.settlements.submit(again);
                    redriven += 1;
                }
                // Moved since the statement was compared (resolved by hand, or its worker
                // went on): whoever moved it drives it.
                Err(PortError::Superseded(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    report.redriven = redriven;
    if let Some(totals) = &state.totals {
        report.ledger_totals = totals.totals().await?;
    }
    ports.store.keep_report(&report).await?;
    Ok(report)
}

/// The bank's side per ledger: the sum over the bank accounts settlements name (one per
/// ledger on a single node, one per ledger and partition on a cluster).
async fn bank_balances(
    ledger: &dyn LedgerPort,
    settlements: &[Settlement],
) -> Result<BTreeMap<u32, BankAccountBalance>, EngineError> {
    let accounts: BTreeSet<u128> = settlements.iter().map(|s| s.bank_account_id).collect();
    let found = ledger
        .lookup_accounts(accounts.into_iter().collect())
        .await?;
    let mut balances: BTreeMap<u32, BankAccountBalance> = BTreeMap::new();
    for a in &found {
        let balance = balances.entry(a.ledger).or_insert(BankAccountBalance {
            debits_posted: 0,
            credits_posted: 0,
            credits_pending: 0,
        });
        balance.debits_posted = balance.debits_posted.saturating_add(a.debits_posted);
        balance.credits_posted = balance.credits_posted.saturating_add(a.credits_posted);
        balance.credits_pending = balance.credits_pending.saturating_add(a.credits_pending);
    }
    Ok(balances)
}

/// Starts the reconciler; `run` asks it for a report now.
pub async fn start_reconciler(
    args: ReconcilerArgs,
) -> Result<ActorRef<ReconcilerMsg>, SettlementError> {
    Actor::spawn(None, Reconciler, args)
        .await
        .map(|(actor, _)| actor)
        .map_err(|error| SettlementError::Actor(error.to_string()))
}

/// Runs reconciliation now and waits for its report (at most `timeout`).
pub async fn reconcile_now(
    reconciler: &ActorRef<ReconcilerMsg>,
    timeout: Duration,
) -> Result<Report, SettlementError> {
    match ractor::call_t!(
        reconciler,
        |port| ReconcilerMsg::Run(Some(port)),
        timeout.as_millis() as u64
    ) {
        Ok(result) => result,
        Err(error) => Err(SettlementError::Actor(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicU32};
    use std::sync::Mutex;

    use super::*;
    use crate::settlement::{Kind, Phase, Status};
    use crate::SystemClock;
    use crate::{Account, AccountFlags, EngineConfig, MemoryWal};

    /// A bank in memory that can crash its caller once, after doing the work.
    #[derive(Default)]
    struct TestBank {
        moved: Mutex<BTreeMap<u128, u64>>,
        panic_once_after_work: AtomicBool,
        sends: AtomicU32,
    }

    impl BankPort for TestBank {
        fn send<'a>(&'a self, s: &'a Settlement) -> PortFuture<'a, BankOutcome> {
            Box::pin(async move {
                self.sends.fetch_add(1, Ordering::SeqCst);
                let amount = *self.moved.lock().unwrap().entry(s.id).or_insert(s.amount);
                if self.panic_once_after_work.swap(false, Ordering::SeqCst) {
                    panic!("the worker dies after the bank moved the money");
                }
                BankOutcome::Moved { amount }
            })
        }

        fn check<'a>(&'a self, s: &'a Settlement) -> PortFuture<'a, BankOutcome> {
            Box::pin(async move {
                match self.moved.lock().unwrap().get(&s.id) {
                    Some(amount) => BankOutcome::Moved { amount: *amount },
                    None => BankOutcome::NotFound,
                }
            })
        }

        fn statement(&self) -> PortFuture<'_, Result<Vec<Movement>, PortError>> {
            Box::pin(async move { Ok(vec![]) })
        }
    }

    #[derive(Default)]
    struct TestStore(Mutex<BTreeMap<u128, Settlement>>);

    impl SettlementStorePort for TestStore {
        fn save<'a>(
            &'a self,
            from: &'a Settlement,
            to: &'a Settlement,
        ) -> PortFuture<'a, Result<(), PortError>> {
            Box::pin(async move {
                let mut stored = self.0.lock().unwrap();
                let same = |s: &Settlement| {
                    (s.phase, s.attempts_total, s.updated_ms)
                        == (from.phase, from.attempts_total, from.updated_ms)
                };
                if stored.get(&from.id).is_some_and(|s| !same(s)) {
                    return Err(PortError::Superseded(format!("{:x}", from.id)));
                }
                stored.insert(to.id, to.clone());
                Ok(())
            })
        }
        fn load(&self, id: u128) -> PortFuture<'_, Result<Option<Settlement>, PortError>> {
            Box::pin(async move { Ok(self.0.lock().unwrap().get(&id).cloned()) })
        }
        fn unfinished(&self) -> PortFuture<'_, Result<Vec<Settlement>, PortError>> {
            Box::pin(async move {
                Ok(self
                    .0
                    .lock()
                    .unwrap()
                    .values()
                    .filter(|s| !matches!(s.phase, Phase::Done(_)))
                    .cloned()
                    .collect())
            })
        }
        fn all(&self, _: usize) -> PortFuture<'_, Result<Vec<Settlement>, PortError>> {
            Box::pin(async move { Ok(self.0.lock().unwrap().values().cloned().collect()) })
        }
        fn keep_report<'a>(&'a self, _: &'a Report) -> PortFuture<'a, Result<(), PortError>> {
            Box::pin(async move { Ok(()) })
        }
    }

    const BANK_ACCOUNT: u128 = 1;
    const WALLET: u128 = 2;

    async fn ledger() -> Engine {
        let engine = Engine::start(EngineConfig::default(), MemoryWal::new())
            .await
            .unwrap();
        let wallet = Account {
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            ..Account::new(WALLET, 840, 1)
        };
        engine
            .create_accounts(vec![Account::new(BANK_ACCOUNT, 840, 10), wallet])
            .await
            .unwrap();
        engine
            .create_transfers(vec![Transfer::new(99, BANK_ACCOUNT, WALLET, 1_000, 840, 1)])
            .await
            .unwrap();
        engine
    }

    fn config() -> SettlementConfig {
        SettlementConfig {
            policy: Policy {
                attempts_max: 5,
                backoff_base_ms: 10,
                backoff_max_ms: 50,
                attempt_timeout_ms: 1_000,
            },
            tick: Duration::from_millis(10),
            ..SettlementConfig::default()
        }
    }

    async fn until_final(store: &TestStore, ids: &[u128]) -> Vec<Settlement> {
        for _ in 0..500 {
            let all: Vec<Settlement> = ids
                .iter()
                .map(|id| store.0.lock().unwrap()[id].clone())
                .collect();
            if all.iter().all(|s| matches!(s.phase, Phase::Done(_))) {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the settlements did not end: {:?}", store.0.lock().unwrap());
    }

    #[tokio::test]
    async fn a_crashed_workers_settlement_is_resumed_and_not_sent_again() {
        let engine = ledger().await;
        let bank = Arc::new(TestBank {
            panic_once_after_work: AtomicBool::new(true),
            ..TestBank::default()
        });
        let store = Arc::new(TestStore::default());
        let ports = Ports {
            ledger: Arc::new(engine.clone()),
            bank: bank.clone(),
            store: store.clone(),
            clock: Arc::new(SystemClock),
        };
        let settlements = Settlements::start(ports, config()).await.unwrap();
        let deposit = Settlement::new(
            7,
            Kind::Deposit,
            WALLET,
            BANK_ACCOUNT,
            840,
            250,
            SystemClock.now_ms(),
        );
        store.save(&deposit, &deposit).await.unwrap();
        settlements.submit(deposit);
        let done = until_final(&store, &[7]).await;
        assert_eq!(done[0].phase, Phase::Done(Status::Succeeded));
        assert_eq!(
            bank.sends.load(Ordering::SeqCst),
            1,
            "asked, not sent again"
        );
        assert_eq!(settlements.counts().await.unwrap().worker_restarts, 1);
        let wallet = engine.lookup_accounts(vec![WALLET]).await.unwrap()[0];
        assert_eq!(wallet.credits_posted, 1_250);
        settlements.stop();
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn unfinished_settlements_resume_at_start() {
        let engine = ledger().await;
        let bank = Arc::new(TestBank::default());
        let store = Arc::new(TestStore::default());
        let now = SystemClock.now_ms();
        // Stopped in each phase: a deposit before its first call, one whose call's outcome is
        // unknown (the bank did it), a withdrawal before its hold, one to settle.
        let send = Settlement::new(1, Kind::Deposit, WALLET, BANK_ACCOUNT, 840, 10, now);
        let check = Settlement {
            phase: Phase::Check,
            attempts: 1,
            attempts_total: 1,
            ..Settlement::new(2, Kind::Deposit, WALLET, BANK_ACCOUNT, 840, 20, now)
        };
        bank.moved.lock().unwrap().insert(2, 20);
        let hold = Settlement::new(3, Kind::Withdrawal, WALLET, BANK_ACCOUNT, 840, 30, now);
        let too_much = Settlement::new(4, Kind::Withdrawal, WALLET, BANK_ACCOUNT, 840, 5_000, now);
        for s in [&send, &check, &hold, &too_much] {
            store.save(s, s).await.unwrap();
        }
        let ports = Ports {
            ledger: Arc::new(engine.clone()),
            bank: bank.clone(),
            store: store.clone(),
            clock: Arc::new(SystemClock),
        };
        let settlements = Settlements::start(ports, config()).await.unwrap();
        let done = until_final(&store, &[1, 2, 3, 4]).await;
        let phases: Vec<Phase> = done.iter().map(|s| s.phase).collect();
        assert_eq!(
            phases,
            [
                Phase::Done(Status::Succeeded),
                Phase::Done(Status::Succeeded),
                Phase::Done(Status::Succeeded),
                Phase::Done(Status::Failed)
            ]
        );
        assert_eq!(done[3].reason.as_deref(), Some("insufficient_funds"));
        assert_eq!(
            bank.sends.load(Ordering::SeqCst),
            2,
            "the one in doubt was only asked"
        );
        let wallet = engine.lookup_accounts(vec![WALLET]).await.unwrap()[0];
        assert_eq!(
            wallet.credits_posted - wallet.debits_posted,
            1_000 + 10 + 20 - 30
        );
        assert_eq!(wallet.debits_pending, 0);
        settlements.stop();
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn reconciliation_hands_a_stuck_settlement_back_to_the_supervisor() {
        let engine = ledger().await;
        let bank = Arc::new(TestBank::default());
        let store = Arc::new(TestStore::default());
        let ports = Ports {
            ledger: Arc::new(engine.clone()),
            bank: bank.clone(),
            store: store.clone(),
            clock: Arc::new(SystemClock),
        };
        let config = SettlementConfig {
            stuck_after: Duration::from_secs(1),
            ..config()
        };
        let settlements = Settlements::start(ports.clone(), config.clone())
            .await
            .unwrap();
        // Written, but never handed to the supervisor (its request was cut short).
        let lost = Settlement {
            updated_ms: SystemClock.now_ms() - 10_000,
            ..Settlement::new(
                5,
                Kind::Deposit,
                WALLET,
                BANK_ACCOUNT,
                840,
                40,
                SystemClock.now_ms() - 10_000,
            )
        };
        store.save(&lost, &lost).await.unwrap();
        let reconciler = start_reconciler(ReconcilerArgs {
            ports,
            totals: None,
            settlements: settlements.clone(),
            config,
        })
        .await
        .unwrap();
        let report = reconcile_now(&reconciler, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(report.stuck, vec![5]);
        let done = until_final(&store, &[5]).await;
        assert_eq!(done[0].phase, Phase::Done(Status::Succeeded));
        reconciler.stop(None);
        settlements.stop();
        engine.shutdown().await;
    }
}
