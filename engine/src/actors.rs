//! The actors: thin shells that carry messages, time and I/O to the pure state machines.
//!
//! - [`ShardActor`] owns one [`ShardState`]; it serves reads and applies commits in LSN order,
//!   catching up from the log when it missed one (after a restart).
//! - [`CoordinatorActor`] queues operations and drives one [`Round`](crate::round::Round) at
//!   a time: reads from every shard, decides, appends the commit to the log, waits for
//!   durability, applies, answers. The next round reads while the last one is applied.
//! - [`SupervisorActor`] owns both; a shard or coordinator that panics is logged and restarted,
//!   and the request in flight gets an error instead of an answer.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

use crate::engine::{Baseline, Clock, EngineConfig, EngineError};
use crate::image::{of_this_log, LedgerImage};
use crate::ledger::View;
use crate::record::Commit;
use crate::round::{Operation, Outcome, Sequencer, Step};
use crate::routing::shard_of;
use crate::shard::{ReadReply, ReadRequest, ShardState};
use crate::stats::Stats;
use crate::transfer_store::TransferStore;
use crate::types::{Account, AccountFilter, Transfer};
use crate::wal::{Wal, WalError};

pub(crate) type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

pub(crate) enum ShardMsg {
    /// `as_of`: the LSN the coordinator has committed; the shard catches up to it first.
    Read {
        as_of: u64,
        request: ReadRequest,
        reply: oneshot::Sender<ReadReply>,
    },
    Apply(Arc<Commit>),
    LookupAccounts {
        as_of: u64,
        ids: Vec<u128>,
        reply: oneshot::Sender<Vec<Account>>,
    },
    /// Answers the transfers held in memory, and the ids the store may hold.
    LookupTransfers {
        as_of: u64,
        ids: Vec<u128>,
        reply: oneshot::Sender<(Vec<Transfer>, Vec<u128>)>,
    },
    /// Let go of what the store now holds beyond the window.
    Evict,
    /// Fault injection: the handler panics.
    Panic,
}

pub(crate) struct ShardActor;

pub(crate) struct ShardArgs {
    pub index: usize,
    pub shard_count: usize,
    /// The image to start from instead of LSN 1.
    pub base: Option<Arc<LedgerImage>>,
    /// This shard's share of the transfer window (`None`: keep every transfer).
    pub window: Option<usize>,
    pub wal: Arc<dyn Wal>,
    pub store: Option<Arc<dyn TransferStore>>,
    pub stats: Arc<Stats>,
}

pub(crate) struct ShardActorState {
    shard: ShardState,
    wal: Arc<dyn Wal>,
    store: Option<Arc<dyn TransferStore>>,
    stats: Arc<Stats>,
}

impl ShardActorState {
    /// Applies the commits after the last applied one, up to `lsn`, from the log, a bounded
    /// number at a time (recovery reads the whole log this way). The next read is under way
    /// while the shard applies the last one.
    async fn catch_up(&mut self, lsn: u64) -> Result<(), WalError> {
        const COMMITS_PER_READ: u64 = 64;
        let read = |from: u64| {
            let to = lsn.min(from + COMMITS_PER_READ - 1);
            (to, tokio::spawn(self.wal.read(from, to)))
        };
        let mut from = self.shard.applied_lsn() + 1;
        let applies = from <= lsn;
        let mut next = applies.then(|| read(from));
        while let Some((to, reading)) = next.take() {
            let commits = reading
                .await
                .map_err(|error| WalError::Unavailable(error.to_string()))??;
            if commits.len() as u64 != to - from + 1 {
                return Err(WalError::Corrupt {
                    lsn: from,
                    detail: format!(
                        "asked for {} commits, read {}",
                        to - from + 1,
                        commits.len()
                    ),
                });
            }
            from = to + 1;
            next = (from <= lsn).then(|| read(from));
            for commit in commits {
                self.shard.apply(&commit);
            }
        }
        if applies {
            self.evict();
        }
        Ok(())
    }

    /// Lets go of what the store holds beyond the window (nothing without a window).
    fn evict(&mut self) {
        if let (Some(store), true) = (&self.store, self.shard.has_window()) {
            self.shard.evict(store.stored_lsn());
            self.stats.shard_held(
                self.shard.index(),
                self.shard.window_len(),
                self.shard.filter_bytes(),
            );
        }
    }
}

impl Actor for ShardActor {
    type Msg = ShardMsg;
    type State = ShardActorState;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ShardMsg>,
        args: ShardArgs,
    ) -> Result<ShardActorState, ActorProcessingErr> {
        let shard = match (&args.base, args.window) {
            (Some(image), window) => {
                ShardState::from_image(args.index, args.shard_count, window, image)?
            }
            (None, Some(window)) => ShardState::with_window(args.index, args.shard_count, window),
            (None, None) => ShardState::new(args.index, args.shard_count),
        };
        let base_lsn = shard.applied_lsn();
        drop(args.base);
        let mut state = ShardActorState {
            shard,
            wal: args.wal,
            store: args.store,
            stats: args.stats,
        };
        let last = state.wal.last_lsn();
        state.catch_up(last).await?;
        tracing::debug!(
            shard = args.index,
            base_lsn,
            lsn = last,
            "shard recovered from its base image and the log after it"
        );
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<ShardMsg>,
        message: ShardMsg,
        state: &mut ShardActorState,
    ) -> Result<(), ActorProcessingErr> {
        state.stats.shard_dequeued(state.shard.index());
        // A dropped reply means the caller gave up; the shard carries on.
        match message {
            ShardMsg::Read {
                as_of,
                request,
                reply,
            } => {
                state.catch_up(as_of).await?;
                let started = Instant::now();
                let _ = reply.send(state.shard.read(&request));
                state.stats.shard_read(started);
                // The reply woke the coordinator into this worker's LIFO slot, which no other
                // worker may steal: yield before the next (long) apply, so that the coordinator
                // decides while this shard applies, instead of waiting behind it.
                tokio::task::yield_now().await;
            }
            ShardMsg::Apply(commit) => {
                if commit.lsn > state.shard.applied_lsn() {
                    state.catch_up(commit.lsn - 1).await?;
                    // A round's commit takes milliseconds to apply: apply it in parts and let
                    // the worker run other tasks in between (the coordinator deciding the next
                    // round), instead of holding it until the end. Only this handler touches
                    // the shard meanwhile, so nobody sees half a commit.
                    const RECORDS_PER_PART: usize = 2048;
                    let records = commit.records.len();
                    let mut start = 0;
                    loop {
                        let end = records.min(start + RECORDS_PER_PART);
                        let started = Instant::now();
                        state.shard.apply_part(&commit, start..end);
                        state.stats.shard_apply(started);
                        if end == records {
                            break;
                        }
                        start = end;
                        tokio::task::yield_now().await;
                    }
                    state.evict();
                }
            }
            ShardMsg::LookupAccounts { as_of, ids, reply } => {
                state.catch_up(as_of).await?;
                let _ = reply.send(state.shard.lookup_accounts(&ids));
            }
            ShardMsg::LookupTransfers { as_of, ids, reply } => {
                state.catch_up(as_of).await?;
                let _ = reply.send(state.shard.lookup_transfers(&ids));
            }
            ShardMsg::Evict => state.evict(),
            ShardMsg::Panic => panic!("shard {}: injected panic", state.shard.index()),
        }
        Ok(())
    }
}

pub(crate) enum CoordinatorMsg {
    Submit {
        operation: Operation,
        reply: Option<Reply<Answered>>,
    },
    RunRound,
    /// The commit in flight has an outcome: the next round can start, with every operation
    /// that arrived while it was being written.
    Durable,
    LookupAccounts {
        ids: Vec<u128>,
        reply: Reply<Vec<Account>>,
    },
    LookupTransfers {
        ids: Vec<u128>,
        reply: Reply<Vec<Transfer>>,
    },
    AccountTransfers {
        filter: AccountFilter,
        reply: Reply<Vec<Transfer>>,
    },
    ShardRestarted {
        index: usize,
        shard: ActorRef<ShardMsg>,
    },
    Tick,
    /// Fault injection: forwarded to one shard.
    PanicShard(usize),
    /// Fault injection: the coordinator's handler panics.
    Panic,
}

pub(crate) struct CoordinatorActor;

pub(crate) struct CoordinatorArgs {
    pub shards: Vec<ActorRef<ShardMsg>>,
    pub wal: Arc<dyn Wal>,
    pub store: Option<Arc<dyn TransferStore>>,
    pub clock: Arc<dyn Clock>,
    pub config: EngineConfig,
    pub stats: Arc<Stats>,
}

pub(crate) struct CoordinatorState {
    shards: Vec<ActorRef<ShardMsg>>,
    wal: Arc<dyn Wal>,
    store: Option<Arc<dyn TransferStore>>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    stats: Arc<Stats>,
    sequencer: Sequencer,
    committed_lsn: u64,
    queue: VecDeque<(Operation, Option<Reply<Answered>>)>,
    round_scheduled: bool,
    in_flight: Option<InFlight>,
    /// A view from an earlier round, kept for its memory.
    spare_view: View,
    /// With a window: the commits the store may not hold yet (LSN, records), oldest first,
    /// and their records summed.
    unstored: VecDeque<(u64, u64)>,
    unstored_records: u64,
}

impl Actor for CoordinatorActor {
    type Msg = CoordinatorMsg;
    type State = CoordinatorState;
    type Arguments = CoordinatorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        args: CoordinatorArgs,
    ) -> Result<CoordinatorState, ActorProcessingErr> {
        let committed_lsn = args.wal.last_lsn();
        let timestamp_last = if committed_lsn == 0 {
            0
        } else {
            let last = args.wal.read(committed_lsn, committed_lsn).await?;
            last[0].timestamp_max
        };
        myself.send_interval(args.config.expiry_interval, || CoordinatorMsg::Tick);
        Ok(CoordinatorState {
            shards: args.shards,
            wal: args.wal,
            store: args.store,
            clock: args.clock,
            config: args.config,
            stats: args.stats,
            sequencer: Sequencer::resume_after(timestamp_last),
            committed_lsn,
            queue: VecDeque::new(),
            round_scheduled: false,
            in_flight: None,
            spare_view: View::default(),
            unstored: VecDeque::new(),
            unstored_records: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        message: CoordinatorMsg,
        state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CoordinatorMsg::Submit { operation, reply } => {
                state.queue.push_back((operation, reply));
                schedule_round(&myself, state);
            }
            CoordinatorMsg::Tick => {
                let expiry_queued = state
                    .queue
                    .iter()
                    .any(|(operation, _)| *operation == Operation::Expire);
                if !expiry_queued {
                    state.queue.push_back((Operation::Expire, None));
                    schedule_round(&myself, state);
                }
            }
            CoordinatorMsg::RunRound => {
                state.round_scheduled = false;
                if state.in_flight.is_none() {
                    next_round(&myself, state).await;
                }
            }
            CoordinatorMsg::Durable => next_round(&myself, state).await,
            CoordinatorMsg::LookupAccounts { ids, reply } => {
                let pending = scatter(
                    &state.shards,
                    &state.stats,
                    state.committed_lsn,
                    &ids,
                    |as_of, ids, reply| ShardMsg::LookupAccounts { as_of, ids, reply },
                );
                tokio::spawn(async move {
                    let _ = reply.send(gather(pending, &ids, |a: &Account| a.id).await);
                });
            }
            CoordinatorMsg::LookupTransfers { ids, reply } => {
                let pending = scatter(
                    &state.shards,
                    &state.stats,
                    state.committed_lsn,
                    &ids,
                    |as_of, ids, reply| ShardMsg::LookupTransfers { as_of, ids, reply },
                );
                let (store, stats) = (state.store.clone(), state.stats.clone());
                tokio::spawn(async move {
                    let found = lookup_transfers(pending, store, &stats, &ids).await;
                    let _ = reply.send(found);
                });
            }
            CoordinatorMsg::AccountTransfers { filter, reply } => {
                let as_of = state.committed_lsn;
                let store = state.store.clone();
                tokio::spawn(async move {
                    let result = match store {
                        Some(store) => store
                            .account_transfers(filter, as_of)
                            .await
                            .map_err(EngineError::from),
                        None => Err(EngineError::Unavailable(
                            "no transfer store holds account histories".into(),
                        )),
                    };
                    let _ = reply.send(result);
                });
            }
            CoordinatorMsg::ShardRestarted { index, shard } => {
                state.shards[index] = shard;
            }
            CoordinatorMsg::PanicShard(index) => {
                let _ = tell(&state.shards, &state.stats, index, ShardMsg::Panic);
            }
            CoordinatorMsg::Panic => panic!("coordinator: injected panic"),
        }
        Ok(())
    }
}

/// Finishes the round in flight, if any, and runs the next one with what is queued. While a
/// commit is being written, operations only queue: the next round starts when it is durable
/// (`Durable`), so that it takes everything that arrived during the write instead of waiting
/// for it with the few that arrived before.
async fn next_round(myself: &ActorRef<CoordinatorMsg>, state: &mut CoordinatorState) {
    if store_lags(state) {
        // The store is too far behind: the shards cannot let go of what it lacks, and history
        // reads wait for it. Answer what is durable, ask the store to hurry and the shards to
        // let go of what it holds, and look again shortly.
        finish_in_flight(state).await;
        if let Some(store) = &state.store {
            store.nudge();
        }
        for index in 0..state.shards.len() {
            let _ = tell(&state.shards, &state.stats, index, ShardMsg::Evict);
        }
        if !state.round_scheduled {
            state.round_scheduled = true;
            myself.send_after(Duration::from_millis(2), || CoordinatorMsg::RunRound);
        }
        return;
    }
    let operations = take_round(&mut state.queue, state.config.round_events_max);
    run_round(myself, state, operations).await;
    if state.in_flight.is_none() && !state.queue.is_empty() {
        schedule_round(myself, state);
    }
}

/// Whether the store lacks more records than `store_lag_records_max` (with a window): another
/// round would only add to what the shards must hold for it and history reads wait for.
fn store_lags(state: &mut CoordinatorState) -> bool {
    let (Some(store), Some(_)) = (&state.store, state.config.transfer_window) else {
        return false;
    };
    let stored = store.stored_lsn();
    while let Some(&(lsn, records)) = state.unstored.front() {
        if lsn > stored {
            break;
        }
        state.unstored.pop_front();
        state.unstored_records -= records;
    }
    state.unstored_records > state.config.store_lag_records_max
}

fn schedule_round(myself: &ActorRef<CoordinatorMsg>, state: &mut CoordinatorState) {
    // A round in flight schedules the next one itself when its commit is durable.
    if !state.round_scheduled && state.in_flight.is_none() {
        // Behind every message already queued: they join this round.
        state.round_scheduled = myself.send_message(CoordinatorMsg::RunRound).is_ok();
    }
}

/// Takes whole operations from the queue while the round stays within `events_max` events
/// (always at least one operation).
fn take_round(
    queue: &mut VecDeque<(Operation, Option<Reply<Answered>>)>,
    events_max: usize,
) -> Vec<(Operation, Option<Reply<Answered>>)> {
    let mut taken = Vec::new();
    let mut events = 0;
    while let Some((operation, _)) = queue.front() {
        let count = operation.event_count();
        if !taken.is_empty() && events + count > events_max {
            break;
        }
        events += count;
        taken.push(queue.pop_front().expect("front exists"));
    }
    taken
}

/// An operation's outcome, and the timestamp of its first event (event `i` has `first + i`).
pub(crate) type Answered = (Outcome, u64);

/// A round that is decided and logged but not yet answered: its commit may still be on its way
/// to durability, and its view stands in for the commit until the shards have applied it.
struct InFlight {
    durable: oneshot::Receiver<Result<Arc<Commit>, WalError>>,
    view: View,
    replies: Vec<Option<Reply<Answered>>>,
    outcomes: Vec<Outcome>,
    timestamps_first: Vec<u64>,
}

/// Runs one round, overlapped with the previous one: the first reads go out before the
/// previous commit is applied, so the shards apply it while this round decides.
async fn run_round(
    myself: &ActorRef<CoordinatorMsg>,
    state: &mut CoordinatorState,
    operations: Vec<(Operation, Option<Reply<Answered>>)>,
) {
    if operations.is_empty() {
        finish_in_flight(state).await;
        return;
    }
    let (operations, replies): (Vec<_>, Vec<_>) = operations.into_iter().unzip();
    let mut round = state.sequencer.begin(
        operations,
        state.clock.now_ns(),
        state.shards.len(),
        std::mem::take(&mut state.spare_view),
    );
    let first_reads = send_reads(
        &state.shards,
        &state.stats,
        state.committed_lsn,
        round.first_reads(),
    );
    let (unapplied, stale) = match finish_in_flight(state).await {
        Finished::Committed(view) => (Some(*view), false),
        Finished::Nothing => (None, false),
        Finished::Failed { log_advanced } => (None, log_advanced),
    };
    if stale {
        // The failed commit is in the log after all, and the first reads were answered
        // without it: deciding on them could contradict it.
        let error = EngineError::Unavailable("the log's outcome was unknown; retry".into());
        return fail_all(replies, &error);
    }
    let wait_started = Instant::now();
    let replies_read = match receive_all(first_reads).await {
        Ok(replies_read) => replies_read,
        Err(error) => return fail_all(replies, &error),
    };
    let decide_started = Instant::now();
    let mut step = round.on_reads(replies_read, unapplied.as_ref());
    if let Some(view) = unapplied {
        state.spare_view = view;
    }
    let decision = loop {
        match step {
            Step::Read(requests) => {
                let sent = send_reads(&state.shards, &state.stats, state.committed_lsn, requests);
                match receive_all(sent).await {
                    Ok(replies_read) => step = round.on_reads(replies_read, None),
                    Err(error) => return fail_all(replies, &error),
                }
            }
            Step::Fetch(ids) => {
                // Shards only report ids as unknown when they have a window, and a window
                // needs a store (checked at start).
                let store = state.store.as_ref().expect("a window has a store");
                let asked = ids.len();
                match store.fetch(ids).await {
                    Ok(stored) => {
                        state.stats.store_fetch(asked, stored.len());
                        step = round.on_fetched(stored);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "a round could not fetch from the transfer store");
                        state.spare_view = round.into_view();
                        return fail_all(replies, &EngineError::from(error));
                    }
                }
            }
            Step::Decided(decision) => break decision,
        }
    };
    state
        .stats
        .round(round.event_count(), wait_started, decide_started);
    if decision.records.is_empty() {
        state.spare_view = round.into_view();
        return answer(replies, decision.outcomes, decision.timestamps_first);
    }
    let written = state.wal.append(
        state.committed_lsn + 1,
        decision.timestamp_max,
        decision.records,
    );
    let (outcome, durable) = oneshot::channel();
    let coordinator = myself.clone();
    tokio::spawn(async move {
        // A log that stopped drops `outcome` unsent, which the receiver reads as such.
        if let Ok(result) = written.await {
            let _ = outcome.send(result);
        }
        let _ = coordinator.send_message(CoordinatorMsg::Durable);
    });
    state.in_flight = Some(InFlight {
        durable,
        view: round.into_view(),
        replies,
        outcomes: decision.outcomes,
        timestamps_first: decision.timestamps_first,
    });
}

enum Finished {
    Nothing,
    /// The commit stands; its view (the shards may not have applied the commit yet).
    Committed(Box<View>),
    /// The commit failed; `log_advanced` if the log holds it all the same (unknown outcome).
    Failed {
        log_advanced: bool,
    },
}

/// Waits for the round in flight to be durable, hands its commit to the shards and answers its
/// callers.
async fn finish_in_flight(state: &mut CoordinatorState) -> Finished {
    let Some(in_flight) = state.in_flight.take() else {
        return Finished::Nothing;
    };
    match in_flight.durable.await {
        Ok(Ok(commit)) => {
            assert_eq!(
                commit.lsn,
                state.committed_lsn + 1,
                "the log skipped an LSN"
            );
            state.committed_lsn = commit.lsn;
            state.stats.commit(commit.records.len());
            if state.config.transfer_window.is_some() {
                let records = commit.records.len() as u64;
                state.unstored.push_back((commit.lsn, records));
                state.unstored_records += records;
            }
            for index in 0..state.shards.len() {
                // A shard that is down catches up from the log when it is back.
                let _ = tell(
                    &state.shards,
                    &state.stats,
                    index,
                    ShardMsg::Apply(commit.clone()),
                );
            }
            answer(
                in_flight.replies,
                in_flight.outcomes,
                in_flight.timestamps_first,
            );
            Finished::Committed(Box::new(in_flight.view))
        }
        failed => {
            let error = match failed {
                Ok(Err(error)) => error.to_string(),
                _ => "the log stopped before answering".to_string(),
            };
            tracing::error!(%error, "commit failed; its round is answered as unavailable");
            state.stats.commit_failure();
            // Whether or not it became durable, the shards catch up to what the log holds.
            let last_lsn = state.wal.last_lsn();
            let log_advanced = last_lsn > state.committed_lsn;
            state.committed_lsn = last_lsn;
            fail_all(in_flight.replies, &EngineError::Unavailable(error));
            Finished::Failed { log_advanced }
        }
    }
}

fn answer(replies: Vec<Option<Reply<Answered>>>, outcomes: Vec<Outcome>, firsts: Vec<u64>) {
    debug_assert_eq!(outcomes.len(), firsts.len());
    for ((reply, outcome), first) in replies.into_iter().zip(outcomes).zip(firsts) {
        if let Some(reply) = reply {
            let _ = reply.send(Ok((outcome, first)));
        }
    }
}

fn fail_all(replies: Vec<Option<Reply<Answered>>>, error: &EngineError) {
    for reply in replies.into_iter().flatten() {
        let _ = reply.send(Err(error.clone()));
    }
}

fn shard_unavailable(index: usize) -> EngineError {
    EngineError::Unavailable(format!("shard {index} is restarting"))
}

/// Requests sent to shards, each to be answered on its own channel: (shard, receiver).
type Sent<R> = Vec<(usize, Result<oneshot::Receiver<R>, EngineError>)>;

/// Sends shard `index` the message `message` builds around a fresh reply channel.
fn send<R>(
    shards: &[ActorRef<ShardMsg>],
    stats: &Stats,
    index: usize,
    message: impl FnOnce(oneshot::Sender<R>) -> ShardMsg,
) -> (usize, Result<oneshot::Receiver<R>, EngineError>) {
    let (reply, receiver) = oneshot::channel();
    let sent = tell(shards, stats, index, message(reply))
        .map(|()| receiver)
        .map_err(|_| shard_unavailable(index));
    (index, sent)
}

/// Sends shard `index` a message, counted in its mailbox depth until the shard takes it.
fn tell(
    shards: &[ActorRef<ShardMsg>],
    stats: &Stats,
    index: usize,
    message: ShardMsg,
) -> Result<(), ()> {
    stats.shard_enqueued(index);
    shards[index].send_message(message).map_err(|_| {
        stats.shard_dequeued(index);
    })
}

/// Waits for every answer, in the order the requests were sent.
async fn receive_all<R>(sent: Sent<R>) -> Result<Vec<R>, EngineError> {
    let mut answers = Vec::with_capacity(sent.len());
    for (index, receiver) in sent {
        answers.push(receiver?.await.map_err(|_| shard_unavailable(index))?);
    }
    Ok(answers)
}

fn send_reads(
    shards: &[ActorRef<ShardMsg>],
    stats: &Stats,
    as_of: u64,
    requests: Vec<ReadRequest>,
) -> Sent<ReadReply> {
    requests
        .into_iter()
        .enumerate()
        .map(|(index, request)| {
            send(shards, stats, index, |reply| ShardMsg::Read {
                as_of,
                request,
                reply,
            })
        })
        .collect()
}

/// Sends each shard the ids it owns, now, so that every shard answers as of the same commit.
fn scatter<R>(
    shards: &[ActorRef<ShardMsg>],
    stats: &Stats,
    as_of: u64,
    ids: &[u128],
    message: impl Fn(u64, Vec<u128>, oneshot::Sender<R>) -> ShardMsg,
) -> Sent<R> {
    let mut by_shard = vec![Vec::new(); shards.len()];
    for &id in ids {
        by_shard[shard_of(id, shards.len())].push(id);
    }
    by_shard
        .into_iter()
        .enumerate()
        .filter(|(_, ids)| !ids.is_empty())
        .map(|(index, ids)| send(shards, stats, index, |reply| message(as_of, ids, reply)))
        .collect()
}

/// Collects scattered answers into the order of `ids` (ids not found are left out).
async fn gather<T: Copy>(
    sent: Sent<Vec<T>>,
    ids: &[u128],
    id_of: impl Fn(&T) -> u128,
) -> Result<Vec<T>, EngineError> {
    let mut found = ahash::AHashMap::new();
    for items in receive_all(sent).await? {
        for item in items {
            found.insert(id_of(&item), item);
        }
    }
    Ok(ids.iter().filter_map(|id| found.get(id).copied()).collect())
}

/// Collects the shards' answers to a transfer lookup, then fetches from the store the ids they
/// let go of (that their filters could not rule out); in the order of `ids`.
async fn lookup_transfers(
    sent: Sent<(Vec<Transfer>, Vec<u128>)>,
    store: Option<Arc<dyn TransferStore>>,
    stats: &Stats,
    ids: &[u128],
) -> Result<Vec<Transfer>, EngineError> {
    let mut found = ahash::AHashMap::new();
    let mut unknown = Vec::new();
    for (transfers, maybe) in receive_all(sent).await? {
        found.extend(transfers.into_iter().map(|t| (t.id, t)));
        unknown.extend(maybe);
    }
    if !unknown.is_empty() {
        let store = store.expect("a window has a store");
        let asked = unknown.len();
        let stored = store.fetch(unknown).await?;
        stats.store_fetch(asked, stored.len());
        for stored in stored {
            if let crate::store::Stored::Transfer(transfer, _) = stored {
                found.insert(transfer.id, transfer);
            }
        }
    }
    Ok(ids.iter().filter_map(|id| found.get(id).copied()).collect())
}

pub(crate) enum SupervisorMsg {
    /// Fault injection: make shard `index` panic.
    PanicShard(usize),
    /// Fault injection: make the coordinator panic.
    PanicCoordinator,
    Shutdown(oneshot::Sender<()>),
}

pub(crate) struct SupervisorActor;

pub(crate) struct SupervisorArgs {
    pub config: EngineConfig,
    pub wal: Arc<dyn Wal>,
    pub store: Option<Arc<dyn TransferStore>>,
    pub clock: Arc<dyn Clock>,
    pub stats: Arc<Stats>,
    /// Where the engine handle finds the coordinator; replaced when it restarts.
    pub coordinator_slot: Arc<RwLock<Option<ActorRef<CoordinatorMsg>>>>,
    pub baseline: Option<Arc<dyn Baseline>>,
}

pub(crate) struct SupervisorState {
    args: SupervisorArgs,
    shards: Vec<ActorRef<ShardMsg>>,
    coordinator: ActorRef<CoordinatorMsg>,
    stopping: bool,
}

impl SupervisorActor {
    /// Tries to restart a failed shard this many more times (50 ms, 100 ms, ... apart).
    const RESTART_ATTEMPTS: u32 = 6;

    async fn spawn_shard(
        myself: &ActorRef<SupervisorMsg>,
        args: &SupervisorArgs,
        index: usize,
    ) -> Result<ActorRef<ShardMsg>, ActorProcessingErr> {
        let base = Self::load_base(args).await;
        let with_base = base.is_some();
        let spawn = |base| {
            Actor::spawn_linked(
                None,
                ShardActor,
                Self::shard_args(args, index, base),
                myself.get_cell(),
            )
        };
        match spawn(base).await {
            Ok((shard, _)) => Ok(shard),
            Err(error) if with_base => {
                tracing::error!(shard = index, %error, "the shard refused the snapshot; recovering it from the log alone");
                Ok(spawn(None).await?.0)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The baseline's image, if it has one that belongs to this log: its LSN is durable and
    /// its last commit's timestamp is the log's. Anything else is reported, and the shards
    /// start from the log alone, which is always enough.
    async fn load_base(args: &SupervisorArgs) -> Option<Arc<LedgerImage>> {
        let baseline = args.baseline.clone()?;
        let last = args.wal.last_lsn();
        let loaded = tokio::task::spawn_blocking(move || baseline.load(last))
            .await
            .map_err(|error| error.into())
            .and_then(|loaded| loaded);
        let image = match loaded {
            Ok(Some(image)) if image.lsn > 0 => image,
            Ok(_) => return None,
            Err(error) => {
                tracing::error!(%error, "no snapshot could be loaded; recovering from the log alone");
                return None;
            }
        };
        let commit = args.wal.read(image.lsn, image.lsn).await.ok();
        let commit = commit.as_ref().and_then(|commits| commits.first());
        let belongs = of_this_log(image.lsn, image.timestamp_max, commit.map(|c| &**c));
        if !belongs {
            tracing::error!(
                lsn = image.lsn,
                log_last_lsn = last,
                "the snapshot does not match this log (another database, or a log that was \
                 replaced); recovering from the log alone"
            );
            return None;
        }
        Some(Arc::new(image))
    }

    fn shard_args(
        args: &SupervisorArgs,
        index: usize,
        base: Option<Arc<LedgerImage>>,
    ) -> ShardArgs {
        let shard_count = args.config.shard_count;
        ShardArgs {
            index,
            base,
            shard_count,
            window: args
                .config
                .transfer_window
                .map(|window| (window / shard_count).max(1)),
            wal: args.wal.clone(),
            store: args.store.clone(),
            stats: args.stats.clone(),
        }
    }

    async fn spawn_coordinator(
        myself: &ActorRef<SupervisorMsg>,
        args: &SupervisorArgs,
        shards: Vec<ActorRef<ShardMsg>>,
    ) -> Result<ActorRef<CoordinatorMsg>, ActorProcessingErr> {
        let coordinator_args = CoordinatorArgs {
            shards,
            wal: args.wal.clone(),
            store: args.store.clone(),
            clock: args.clock.clone(),
            config: args.config.clone(),
            stats: args.stats.clone(),
        };
        let (coordinator, _) =
            Actor::spawn_linked(None, CoordinatorActor, coordinator_args, myself.get_cell())
                .await?;
        *args.coordinator_slot.write().expect("coordinator slot") = Some(coordinator.clone());
        Ok(coordinator)
    }
}

impl SupervisorActor {
    /// Starts every shard at once from `base` (or the log alone); on failure, stops those
    /// that started and says whether a base was used.
    async fn spawn_all(
        myself: &ActorRef<SupervisorMsg>,
        args: &SupervisorArgs,
        base: Option<Arc<LedgerImage>>,
    ) -> Result<Vec<ActorRef<ShardMsg>>, (ActorProcessingErr, bool)> {
        let with_base = base.is_some();
        let mut starting = tokio::task::JoinSet::new();
        for index in 0..args.config.shard_count {
            let shard_args = Self::shard_args(args, index, base.clone());
            let supervisor = myself.get_cell();
            starting.spawn(async move {
                let spawned = Actor::spawn_linked(None, ShardActor, shard_args, supervisor).await;
                (index, spawned.map(|(shard, _)| shard))
            });
        }
        drop(base);
        let mut started = vec![None; args.config.shard_count];
        let mut failure = None;
        while let Some(joined) = starting.join_next().await {
            match joined {
                Ok((index, Ok(shard))) => started[index] = Some(shard),
                Ok((_, Err(error))) => failure = Some(ActorProcessingErr::from(error.to_string())),
                Err(error) => failure = Some(ActorProcessingErr::from(error.to_string())),
            }
        }
        if let Some(error) = failure {
            for shard in started.into_iter().flatten() {
                shard.stop(None);
            }
            return Err((error, with_base));
        }
        Ok(started
            .into_iter()
            .map(|shard| shard.expect("every shard started"))
            .collect())
    }
}

impl Actor for SupervisorActor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        // Every shard rebuilds at once: recovery takes as long as the slowest shard. A shard
        // that refuses the snapshot (it does not add up) sends them all back to the log.
        let mut base = Self::load_base(&args).await;
        let shards = loop {
            match Self::spawn_all(&myself, &args, base.take()).await {
                Ok(shards) => break shards,
                Err((error, true)) => tracing::error!(
                    %error,
                    "a shard refused the snapshot; recovering every shard from the log alone"
                ),
                Err((error, false)) => return Err(error),
            }
        };
        let coordinator = Self::spawn_coordinator(&myself, &args, shards.clone()).await?;
        Ok(SupervisorState {
            args,
            shards,
            coordinator,
            stopping: false,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::PanicShard(index) => {
                let _ = state
                    .coordinator
                    .send_message(CoordinatorMsg::PanicShard(index));
            }
            SupervisorMsg::PanicCoordinator => {
                let _ = state.coordinator.send_message(CoordinatorMsg::Panic);
            }
            SupervisorMsg::Shutdown(done) => {
                state.stopping = true;
                *state
                    .args
                    .coordinator_slot
                    .write()
                    .expect("coordinator slot") = None;
                let timeout = Some(Duration::from_secs(5));
                let _ = state.coordinator.stop_and_wait(None, timeout).await;
                for shard in &state.shards {
                    let _ = shard.stop_and_wait(None, timeout).await;
                }
                let _ = done.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        if state.stopping {
            return Ok(());
        }
        let id = cell.get_id();
        if let Some(index) = state.shards.iter().position(|s| s.get_id() == id) {
            tracing::error!(shard = index, %reason, "shard failed; restarting it from the log");
            state.args.stats.shard_restart(index);
            let mut attempt = 0;
            let shard = loop {
                match Self::spawn_shard(&myself, &state.args, index).await {
                    Ok(shard) => break shard,
                    // Recovery reads the log, which may be briefly unreachable: back off, and
                    // give up (stopping the engine) only when it stays so.
                    Err(error) if attempt < Self::RESTART_ATTEMPTS => {
                        attempt += 1;
                        tracing::warn!(shard = index, attempt, %error, "shard restart failed");
                        tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                    }
                    Err(error) => return Err(error),
                }
            };
            state.shards[index] = shard.clone();
            let _ = state
                .coordinator
                .send_message(CoordinatorMsg::ShardRestarted { index, shard });
        } else if state.coordinator.get_id() == id {
            tracing::error!(%reason, "coordinator failed; restarting it");
            state.coordinator =
                Self::spawn_coordinator(&myself, &state.args, state.shards.clone()).await?;
        }
        Ok(())
    }
}
