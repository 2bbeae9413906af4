//! [`Engine`]: the one door to the ledger. A cloneable async handle that every caller (the
//! gateway, the load generator, tests) uses; it checks limits, bounds admission and forwards
//! to the coordinator actor.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ractor::{Actor, ActorRef};
use tokio::sync::{oneshot, Semaphore};

use crate::actors::{CoordinatorMsg, Reply, SupervisorActor, SupervisorArgs, SupervisorMsg};
use crate::image::LedgerImage;
use crate::results::{CreateAccountResult, CreateTransferResult};
use crate::round::{Operation, Outcome};
use crate::stats::{Stats, StatsSnapshot};
use crate::transfer_store::{TransferStore, TransferStoreError};
use crate::types::{Account, AccountFilter, Transfer, BATCH_EVENTS_MAX};
use crate::wal::Wal;

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("a batch holds {len} events; the limit is {max}")]
    BatchTooLarge { len: usize, max: usize },
    #[error("limit must be between 1 and {max}")]
    InvalidLimit { max: usize },
    #[error("the engine is unavailable: {0}")]
    Unavailable(String),
    #[error("the engine is shut down")]
    ShutDown,
    #[error("the engine failed to start: {0}")]
    Start(String),
    /// The store of transfers that left memory could not answer (a round that needed it
    /// decided nothing; a lookup found nothing to answer with).
    #[error(transparent)]
    Store(#[from] TransferStoreError),
}

/// The time source: wall-clock nanoseconds. The engine reads it once per round.
pub trait Clock: Send + Sync + 'static {
    fn now_ns(&self) -> u64;

    /// Milliseconds since 1970, as settlements, sessions and idempotency keys record time.
    fn now_ms(&self) -> u64 {
        self.now_ns() / 1_000_000
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970");
        u64::try_from(since_epoch.as_nanos()).expect("the clock is before 2554")
    }
}

/// Why no baseline could be looked for (the implementation's own error: a folder that cannot
/// be listed, say).
pub type BaselineError = Box<dyn std::error::Error + Send + Sync>;

/// Where shards are rebuilt from instead of LSN 1: the newest saved image of the ledger.
pub trait Baseline: Send + Sync + 'static {
    /// The newest usable image at or before `log_last_lsn` (the log's last durable commit), or
    /// none. Blocking: it reads files. An image that cannot be used is the implementation's to
    /// report and skip; an error here means that none could be looked for, and the log alone
    /// is used.
    fn load(&self, log_last_lsn: u64) -> Result<Option<LedgerImage>, BaselineError>;
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How many shards own the accounts. It may change between runs: neither the log nor a
    /// snapshot depends on it.
    pub shard_count: usize,
    /// Events (or looked-up ids) admitted at once, across all callers; further callers wait
    /// (backpressure instead of unbounded mailboxes). At least one full batch.
    pub max_in_flight_events: usize,
    /// Account-history reads (`get_account_transfers`, from the transfer store) served at
    /// once; more wait. Reads wait on this budget of their own, never on writes' (which wait
    /// on `max_in_flight_events`), and a flood of them takes at most this many store queries'
    /// worth of the machine from writes. At least 1.
    pub max_in_flight_reads: usize,
    /// At most this many events are decided together in one round (one log commit).
    pub round_events_max: usize,
    /// How often the engine looks for pending transfers whose timeout passed.
    pub expiry_interval: Duration,
    /// `None`: the shards keep every transfer in memory. `Some(n)`: they keep about `n`
    /// recent transfers and `n` failed ids in all (split evenly over the shards), besides
    /// pending transfers, and leave the rest to the transfer store once it holds them.
    pub transfer_window: Option<usize>,
    /// With a window: rounds wait while the store lacks more records than this. The shards
    /// hold what the store lacks, and history reads wait for it, so this bounds both the
    /// memory beyond the window and how stale the store may be (at the store's pace).
    pub store_lag_records_max: u64,
    /// How long a history read waits for the store to reach the caller's last commit.
    pub store_wait: Duration,
}

impl EngineConfig {
    pub const SHARD_COUNT_MAX: usize = 256;
    /// The window a server keeps unless told otherwise: about 45 MB of transfers.
    pub const TRANSFER_WINDOW_DEFAULT: usize = 262_144;
    /// The largest window: 2^30 transfers (about 150 GB), far past any machine.
    pub const TRANSFER_WINDOW_MAX: usize = 1 << 30;
    /// Bytes one transfer takes in the window (the transfer, its 8-byte index entry and the
    /// index's slack), to turn a window given in bytes into a count.
    pub const WINDOW_BYTES_PER_TRANSFER: usize = std::mem::size_of::<Transfer>() + 16;
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            shard_count: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_in_flight_events: 16 * BATCH_EVENTS_MAX,
            max_in_flight_reads: 2,
            round_events_max: 4 * BATCH_EVENTS_MAX,
            expiry_interval: Duration::from_millis(250),
            transfer_window: None,
            store_lag_records_max: 65_536,
            store_wait: Duration::from_secs(5),
        }
    }
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    coordinator: Arc<RwLock<Option<ActorRef<CoordinatorMsg>>>>,
    supervisor: ActorRef<SupervisorMsg>,
    /// Writes and lookups (served from memory).
    admission: Semaphore,
    /// Account histories (served from the transfer store).
    read_admission: Semaphore,
    shard_count: usize,
    stats: Arc<Stats>,
}

impl Engine {
    /// Starts the shards (each rebuilt from `wal`), the coordinator and their supervisor.
    pub async fn start(config: EngineConfig, wal: Arc<dyn Wal>) -> Result<Engine, EngineError> {
        Self::start_with_clock(config, wal, Arc::new(SystemClock)).await
    }

    pub async fn start_with_clock(
        config: EngineConfig,
        wal: Arc<dyn Wal>,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine, EngineError> {
        Self::start_from(config, wal, clock, None).await
    }

    /// Starts as [`Engine::start`] does, but each shard is rebuilt from the image `baseline`
    /// gives (a snapshot) and only the log after it, at start and whenever a shard restarts.
    pub async fn start_from(
        config: EngineConfig,
        wal: Arc<dyn Wal>,
        clock: Arc<dyn Clock>,
        baseline: Option<Arc<dyn Baseline>>,
    ) -> Result<Engine, EngineError> {
        let store = wal.clone().as_transfer_store();
        Self::start_with_store(config, wal, store, clock, baseline).await
    }

    /// Starts as [`Engine::start_from`] does, with `store` as the transfer store (the read
    /// models); without one, the log must be its own store for history reads.
    pub async fn start_with_store(
        config: EngineConfig,
        wal: Arc<dyn Wal>,
        store: Option<Arc<dyn TransferStore>>,
        clock: Arc<dyn Clock>,
        baseline: Option<Arc<dyn Baseline>>,
    ) -> Result<Engine, EngineError> {
        if let Some(window) = config.transfer_window {
            if !(1..=EngineConfig::TRANSFER_WINDOW_MAX).contains(&window) {
                return Err(EngineError::Start(format!(
                    "transfer_window must be between 1 and {}",
                    EngineConfig::TRANSFER_WINDOW_MAX
                )));
            }
            if store.is_none() {
                return Err(EngineError::Start(
                    "a transfer window needs a transfer store to leave old transfers to".into(),
                ));
            }
            if config.store_lag_records_max < config.round_events_max as u64 {
                return Err(EngineError::Start(
                    "store_lag_records_max must hold at least one round".into(),
                ));
            }
        }
        if !(1..=EngineConfig::SHARD_COUNT_MAX).contains(&config.shard_count) {
            return Err(EngineError::Start(format!(
                "shard_count must be between 1 and {}",
                EngineConfig::SHARD_COUNT_MAX
            )));
        }
        if config.max_in_flight_events < BATCH_EVENTS_MAX
            || config.max_in_flight_events > Semaphore::MAX_PERMITS
            || config.max_in_flight_reads == 0
            || config.max_in_flight_reads > Semaphore::MAX_PERMITS
            || config.round_events_max < BATCH_EVENTS_MAX
        {
            return Err(EngineError::Start(format!(
                "max_in_flight_events and round_events_max must be at least {BATCH_EVENTS_MAX}, max_in_flight_reads at least 1"
            )));
        }
        let coordinator = Arc::new(RwLock::new(None));
        let stats = Arc::new(Stats::new(config.shard_count));
        let args = SupervisorArgs {
            config: config.clone(),
            wal,
            store,
            clock,
            stats: stats.clone(),
            coordinator_slot: coordinator.clone(),
            baseline,
        };
        let (supervisor, _) = Actor::spawn(None, SupervisorActor, args)
            .await
            .map_err(|error| EngineError::Start(error.to_string()))?;
        Ok(Engine {
            inner: Arc::new(Inner {
                coordinator,
                supervisor,
                admission: Semaphore::new(config.max_in_flight_events),
                read_admission: Semaphore::new(config.max_in_flight_reads),
                shard_count: config.shard_count,
                stats,
            }),
        })
    }

    pub fn shard_count(&self) -> usize {
        self.inner.shard_count
    }

    /// Messages waiting in each shard's mailbox, by shard index.
    pub fn shard_mailbox_depths(&self) -> Vec<u64> {
        self.inner.stats.shard_mailbox_depths()
    }

    /// The engine's counters since it started.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Creates accounts; one result per event, in order.
    pub async fn create_accounts(
        &self,
        accounts: Vec<Account>,
    ) -> Result<Vec<CreateAccountResult>, EngineError> {
        check_batch(accounts.len())?;
        if accounts.is_empty() {
            return Ok(Vec::new());
        }
        match self.submit(Operation::CreateAccounts(accounts)).await?.0 {
            Outcome::Accounts(results) => Ok(results),
            other => unreachable!("accounts answered with {other:?}"),
        }
    }

    /// Creates transfers; one result per event, in order.
    pub async fn create_transfers(
        &self,
        transfers: Vec<Transfer>,
    ) -> Result<Vec<CreateTransferResult>, EngineError> {
        Ok(self.create_transfers_stamped(transfers).await?.0)
    }

    /// Creates transfers; one result per event, in order, and the timestamp of the first
    /// event: event `i`, if created, has timestamp `first + i` (so a caller can answer with a
    /// created transfer without looking it up).
    pub async fn create_transfers_stamped(
        &self,
        transfers: Vec<Transfer>,
    ) -> Result<(Vec<CreateTransferResult>, u64), EngineError> {
        check_batch(transfers.len())?;
        if transfers.is_empty() {
            return Ok((Vec::new(), 0));
        }
        match self.submit(Operation::CreateTransfers(transfers)).await? {
            (Outcome::Transfers(results), first) => Ok((results, first)),
            other => unreachable!("transfers answered with {other:?}"),
        }
    }

    /// The accounts found among `ids`, in the order of `ids`.
    pub async fn lookup_accounts(&self, ids: Vec<u128>) -> Result<Vec<Account>, EngineError> {
        check_batch(ids.len())?;
        self.ask(ids.len(), |reply| CoordinatorMsg::LookupAccounts {
            ids,
            reply,
        })
        .await
    }

    /// The transfers found among `ids`, in the order of `ids`.
    pub async fn lookup_transfers(&self, ids: Vec<u128>) -> Result<Vec<Transfer>, EngineError> {
        check_batch(ids.len())?;
        self.ask(ids.len(), |reply| CoordinatorMsg::LookupTransfers {
            ids,
            reply,
        })
        .await
    }

    /// The transfers of one account that match `filter`, ordered by timestamp.
    pub async fn get_account_transfers(
        &self,
        filter: AccountFilter,
    ) -> Result<Vec<Transfer>, EngineError> {
        if filter.limit == 0 || filter.limit as usize > BATCH_EVENTS_MAX {
            return Err(EngineError::InvalidLimit {
                max: BATCH_EVENTS_MAX,
            });
        }
        if filter.account_id == 0 || filter.account_id == u128::MAX {
            return Ok(Vec::new());
        }
        let _permit = self
            .inner
            .read_admission
            .acquire()
            .await
            .map_err(|_| EngineError::ShutDown)?;
        self.send(|reply| CoordinatorMsg::AccountTransfers { filter, reply })
            .await
    }

    /// Fault injection for tests and the simulator: shard `index` panics while handling its
    /// next message, as a bug would make it; the supervisor restarts it from the log.
    pub fn inject_shard_panic(&self, index: usize) {
        assert!(index < self.inner.shard_count);
        let _ = self
            .inner
            .supervisor
            .send_message(SupervisorMsg::PanicShard(index));
    }

    /// Fault injection: the coordinator panics while handling its next message; the
    /// supervisor restarts it, resuming the clock and the LSN from the log.
    pub fn inject_coordinator_panic(&self) {
        let _ = self
            .inner
            .supervisor
            .send_message(SupervisorMsg::PanicCoordinator);
    }

    /// Stops every actor. Requests after this fail with [`EngineError::ShutDown`].
    pub async fn shutdown(&self) {
        let (done, stopped) = oneshot::channel();
        if self
            .inner
            .supervisor
            .send_message(SupervisorMsg::Shutdown(done))
            .is_ok()
        {
            let _ = stopped.await;
        }
        self.inner.supervisor.stop(None);
    }

    async fn submit(&self, operation: Operation) -> Result<crate::actors::Answered, EngineError> {
        let weight = operation.event_count();
        self.ask(weight, |reply| CoordinatorMsg::Submit {
            operation,
            reply: Some(reply),
        })
        .await
    }

    /// Sends a request once `weight` events fit in the admission budget; waits for the answer.
    async fn ask<T>(
        &self,
        weight: usize,
        message: impl FnOnce(Reply<T>) -> CoordinatorMsg,
    ) -> Result<T, EngineError> {
        debug_assert!(weight <= BATCH_EVENTS_MAX);
        let _permit = self
            .inner
            .admission
            .acquire_many(weight.max(1) as u32)
            .await
            .map_err(|_| EngineError::ShutDown)?;
        self.send(message).await
    }

    /// Sends a request to the coordinator and waits for the answer (admission is the
    /// caller's).
    async fn send<T>(
        &self,
        message: impl FnOnce(Reply<T>) -> CoordinatorMsg,
    ) -> Result<T, EngineError> {
        let coordinator = self
            .inner
            .coordinator
            .read()
            .expect("coordinator slot")
            .clone()
            .ok_or(EngineError::ShutDown)?;
        let (reply, answer) = oneshot::channel();
        coordinator
            .send_message(message(reply))
            .map_err(|_| EngineError::Unavailable("the coordinator is restarting".into()))?;
        answer.await.map_err(|_| {
            EngineError::Unavailable("the request was lost in a failure; retry it".into())
        })?
    }
}

/// Refuses a batch of more than [`BATCH_EVENTS_MAX`] events (before it is split, in a cluster).
pub fn check_batch(len: usize) -> Result<(), EngineError> {
    if len > BATCH_EVENTS_MAX {
        return Err(EngineError::BatchTooLarge {
            len,
            max: BATCH_EVENTS_MAX,
        });
    }
    Ok(())
}
