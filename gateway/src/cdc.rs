//! Change data capture: a publisher actor per log (a single node's, or each partition this
//! node serves) follows the log like the projector and publishes every record as an event
//! ([`crate::events`]) to NATS JetStream, on `<prefix>.<ledger>.<kind>`.
//!
//! - **Never in the way of commits.** It reads what the log already made durable; when the
//!   broker is slow or down it falls behind, and its lag is the metric
//!   `kizo_cdc_lag_commits{partition}` and a detail of `/readyz`.
//! - **Exactly once for consumers.** Its progress (the last LSN whose every event the broker
//!   acknowledged) is a row beside the projector's (`cdc` or `cdc-partition-<n>`), moved by
//!   compare-and-set after the acknowledgements. After a crash or a failed publication it
//!   publishes from there again; each event carries `Nats-Msg-Id` = its id
//!   (`<partition>.<lsn>.<index>`), so JetStream drops the copies it already holds within its
//!   duplicate window (`--nats-duplicate-window`). Before it publishes again, it reads the
//!   stream's end for its newest event and skips what is there, so a copy is not published
//!   even past the window (a broker away for long).
//! - **In the log's order per partition:** one publisher per partition, publishing in order
//!   on one connection, and a failed step is published again from its first event.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use kizo_engine::Wal;
use kizo_persistence::read_models::ReadModels;
use kizo_persistence::StoreError;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::events::{events_of, expired_pending_ids};

/// Where and how events are published (`--nats-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CdcConfig {
    /// The broker, `nats://host:port`.
    pub url: String,
    /// The JetStream stream, created when missing, over `<subject_prefix>.>`.
    pub stream: String,
    /// The first token of every subject.
    pub subject_prefix: String,
    /// How long the stream keeps an event (retention by age).
    pub max_age: Duration,
    /// How long JetStream remembers an event's id to drop a second copy.
    pub duplicate_window: Duration,
}

impl CdcConfig {
    pub const STREAM: &str = "KIZO";
    pub const SUBJECT_PREFIX: &str = "kizo";
    pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
    pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

    pub fn new(url: String) -> CdcConfig {
        CdcConfig {
            url,
            stream: CdcConfig::STREAM.into(),
            subject_prefix: CdcConfig::SUBJECT_PREFIX.into(),
            max_age: CdcConfig::MAX_AGE,
            duplicate_window: CdcConfig::DUPLICATE_WINDOW,
        }
    }
}

/// Commits read from the log per step, at most.
const COMMITS_PER_STEP: u64 = 4;
/// Events published per step, at most (a step that reaches it stops at a commit's end).
const EVENTS_PER_STEP: usize = 32_768;
/// Publications awaiting their acknowledgement, at most; more wait.
const ACKS_IN_FLIGHT_MAX: usize = 16_384;
/// How long an acknowledgement is waited for before the step is published again.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages at the stream's end looked at for a publisher's newest (see [`Broker::newest_of`]).
const TAIL_SCAN: u64 = 512;
/// How often a publisher looks at the log when it has caught up (or the broker is away).
const INTERVAL: Duration = Duration::from_millis(50);

/// A publisher's progress and the log it follows.
type Followed = (Arc<AtomicU64>, Arc<dyn Wal>);

/// The connection to the broker, shared by this node's publishers.
pub struct Broker {
    config: CdcConfig,
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    stream_ready: AtomicBool,
    /// Per partition: how far its publisher got, and its log (whose last LSN is read live:
    /// a commit made a moment ago counts at once).
    positions: Mutex<BTreeMap<u32, Followed>>,
}

/// `/readyz`'s view of the publishers.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CdcHealth {
    /// Whether the broker is connected now.
    pub connected: bool,
    /// Commits written to the log and not yet published, summed over the partitions here.
    pub lag_commits: u64,
}

impl Broker {
    /// Connects in the background: a broker that is down at start is reached when it comes
    /// up, and commits go on meanwhile.
    pub async fn connect(config: CdcConfig) -> Result<Arc<Broker>, async_nats::ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .name("kizo-cdc")
            .retry_on_initial_connect()
            .connect(&config.url)
            .await?;
        let jetstream = async_nats::jetstream::ContextBuilder::new()
            .ack_timeout(ACK_TIMEOUT)
            .max_ack_inflight(ACKS_IN_FLIGHT_MAX)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(Arc::new(Broker {
            config,
            client,
            jetstream,
            stream_ready: AtomicBool::new(false),
            positions: Mutex::default(),
        }))
    }

    pub fn health(&self) -> CdcHealth {
        let positions = self.positions.lock().expect("not poisoned");
        CdcHealth {
            connected: self.connected(),
            lag_commits: positions
                .values()
                .map(|(published, wal)| {
                    wal.last_lsn()
                        .saturating_sub(published.load(Ordering::Acquire))
                })
                .sum(),
        }
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Connected, with the stream in place (created once when missing).
    async fn ready(&self) -> bool {
        if !self.connected() {
            return false;
        }
        if self.stream_ready.load(Ordering::Acquire) {
            return true;
        }
        let stream = StreamConfig {
            name: self.config.stream.clone(),
            subjects: vec![format!("{}.>", self.config.subject_prefix)],
            max_age: self.config.max_age,
            duplicate_window: self.config.duplicate_window,
            storage: StorageType::File,
            ..StreamConfig::default()
        };
        match self.jetstream.get_or_create_stream(stream).await {
            Ok(_) => {
                self.stream_ready.store(true, Ordering::Release);
                true
            }
            Err(error) => {
                tracing::warn!(%error, stream = %self.config.stream, "the event stream is not there yet");
                false
            }
        }
    }

    /// The place (`lsn`, `index`) of the newest event of `partition` the stream holds, looked
    /// for among its last [`TAIL_SCAN`] messages: a publisher that stopped between publishing
    /// and saving its progress (a crash, a broker that went away for longer than the duplicate
    /// window) skips what is there rather than count on the window to drop it.
    async fn newest_of(&self, partition: u32) -> Result<Option<(u64, u32)>, StepError> {
        let broker = |error: &dyn std::fmt::Display| StepError::Broker(error.to_string());
        let mut stream = self
            .jetstream
            .get_stream(&self.config.stream)
            .await
            .map_err(|e| broker(&e))?;
        let state = stream.info().await.map_err(|e| broker(&e))?.state.clone();
        if state.messages == 0 {
            return Ok(None);
        }
        let oldest = state
            .first_sequence
            .max(state.last_sequence.saturating_sub(TAIL_SCAN - 1));
        for sequence in (oldest..=state.last_sequence).rev() {
            // A message deleted from the stream's middle is not found: look further.
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue;
            };
            let place = message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .and_then(|id| crate::events::parse_id(id.as_str()));
            if let Some((of, lsn, index)) = place {
                if of == partition {
                    return Ok(Some((lsn, index)));
                }
            }
        }
        Ok(None)
    }

    fn follow(&self, partition: u32, published: Arc<AtomicU64>, wal: Arc<dyn Wal>) {
        self.positions
            .lock()
            .expect("not poisoned")
            .insert(partition, (published, wal));
    }

    fn record(&self, partition: u32, published: u64, last: u64) {
        metrics::gauge!("kizo_cdc_lag_commits", "partition" => partition.to_string())
            .set(last.saturating_sub(published) as f64);
    }

    fn forget(&self, partition: u32) {
        self.positions
            .lock()
            .expect("not poisoned")
            .remove(&partition);
    }
}

/// The progress row of the publisher of `partition` (`None`: a single node's one log).
pub fn progress_name(partition: Option<u32>) -> String {
    match partition {
        None => "cdc".into(),
        Some(partition) => format!("cdc-partition-{partition}"),
    }
}

/// A running publisher.
pub struct Publisher {
    actor: ActorRef<Step>,
    progress: Arc<AtomicU64>,
    broker: Arc<Broker>,
    partition: u32,
}

/// The publisher's one message: publish what the log holds past the progress.
pub struct Step;

struct PublisherState {
    broker: Arc<Broker>,
    wal: Arc<dyn Wal>,
    read_models: ReadModels,
    name: String,
    partition: u32,
    progress: Arc<AtomicU64>,
    /// Whether the stream's end must be read before the next publication (at start, and
    /// after a step failed: what it published may be there).
    look_at_tail: bool,
    /// Events up to this place are in the stream already: not published again.
    published_through: Option<(u64, u32)>,
}

struct PublisherActor;

impl Publisher {
    /// Starts publishing `wal`'s records from where the publisher named for `partition`
    /// stopped (its row in `read_models`). `partition` is `None` on a single node (its events
    /// say partition 0).
    pub async fn start(
        broker: Arc<Broker>,
        partition: Option<u32>,
        wal: Arc<dyn Wal>,
        read_models: ReadModels,
    ) -> Result<Publisher, StoreError> {
        let name = progress_name(partition);
        let start = read_models.progress(&name).await?;
        let progress = Arc::new(AtomicU64::new(start));
        let partition = partition.unwrap_or(0);
        broker.follow(partition, progress.clone(), wal.clone());
        broker.record(partition, start, wal.last_lsn());
        let state = PublisherState {
            broker: broker.clone(),
            wal,
            read_models,
            name,
            partition,
            progress: progress.clone(),
            look_at_tail: true,
            published_through: None,
        };
        let (actor, _) = Actor::spawn(None, PublisherActor, state)
            .await
            .map_err(|error| StoreError::Open(error.to_string()))?;
        Ok(Publisher {
            actor,
            progress,
            broker,
            partition,
        })
    }

    /// The last LSN whose events the broker acknowledged.
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Acquire)
    }

    pub async fn stop(&self) {
        let _ = self
            .actor
            .stop_and_wait(None, Some(Duration::from_secs(10)))
            .await;
        self.broker.forget(self.partition);
    }
}

impl Actor for PublisherActor {
    type Msg = Step;
    type State = PublisherState;
    type Arguments = PublisherState;

    async fn pre_start(
        &self,
        myself: ActorRef<Step>,
        state: PublisherState,
    ) -> Result<PublisherState, ActorProcessingErr> {
        myself.send_interval(INTERVAL, || Step);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Step>,
        _: Step,
        state: &mut PublisherState,
    ) -> Result<(), ActorProcessingErr> {
        match publish_step(state).await {
            Ok(true) => {
                // More to publish: go on behind whatever else is queued.
                let _ = myself.send_message(Step);
            }
            Ok(false) => {}
            Err(error) => {
                state.look_at_tail = true;
                metrics::counter!("kizo_cdc_publish_failures_total").increment(1);
                tracing::warn!(%error, partition = state.partition, "events not published; trying again");
            }
        }
        Ok(())
    }
}

/// Why a step published nothing durable; the next step starts again from the progress.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("the log could not be read: {0}")]
    Log(String),
    #[error("the store: {0}")]
    Store(#[from] StoreError),
    #[error("the broker: {0}")]
    Broker(String),
}

/// The ledgers of the pending transfers whose expiry `commits` record: the records do not say
/// it. They are older than the expiry, so once the projector has passed it they are in the
/// read models; one not there yet is left out (its commit waits).
pub async fn expired_ledgers(
    read_models: &ReadModels,
    commits: &[Arc<kizo_engine::Commit>],
) -> Result<HashMap<u128, u32>, StoreError> {
    let mut ledgers = HashMap::new();
    for pending_id in commits.iter().flat_map(|c| expired_pending_ids(c)) {
        if let Some(row) = read_models.transfer(pending_id).await? {
            ledgers.insert(pending_id, row.transfer.ledger);
        }
    }
    Ok(ledgers)
}

/// Waits for a publication's acknowledgement; whether the broker had it already.
async fn acknowledged(
    acked: async_nats::jetstream::context::PublishAckFuture,
) -> Result<bool, StepError> {
    Ok(acked
        .await
        .map_err(|error| StepError::Broker(error.to_string()))?
        .duplicate)
}

/// Publishes the next commits past the progress; whether more wait.
async fn publish_step(state: &mut PublisherState) -> Result<bool, StepError> {
    let done = state.progress.load(Ordering::Acquire);
    let last = state.wal.last_lsn();
    state.broker.record(state.partition, done, last);
    if done >= last || !state.broker.ready().await {
        return Ok(false);
    }
    if state.look_at_tail {
        state.published_through = state.broker.newest_of(state.partition).await?;
        tracing::debug!(partition = state.partition, through = ?state.published_through, progress = done, "the event stream's end read");
        state.look_at_tail = false;
    }
    let to = last.min(done + COMMITS_PER_STEP);
    let commits = state
        .wal
        .read(done + 1, to)
        .await
        .map_err(|error| StepError::Log(error.to_string()))?;
    let ledgers = expired_ledgers(&state.read_models, &commits).await?;
    // Acknowledgements are awaited as the window fills: the client's permits for them are
    // given back only as they are awaited.
    let mut publications = std::collections::VecDeque::new();
    let (mut count, mut duplicates) = (0usize, 0u64);
    let mut published_to = done;
    for commit in &commits {
        let Some(events) = events_of(state.partition, commit, |id| ledgers.get(&id).copied())
        else {
            // An expiry whose pending transfer the read models do not hold yet.
            break;
        };
        if count > 0 && count + events.len() > EVENTS_PER_STEP {
            break;
        }
        let through = state.published_through;
        for event in events {
            if through.is_some_and(|through| (commit.lsn, event.index) <= through) {
                continue;
            }
            if publications.len() >= ACKS_IN_FLIGHT_MAX / 2 {
                let acked = publications.pop_front().expect("not empty");
                duplicates += u64::from(acknowledged(acked).await?);
            }
            let payload = serde_json::to_vec(&event).expect("an event serializes");
            let subject = event.subject(&state.broker.config.subject_prefix);
            let publish = state.broker.jetstream.send_publish(
                subject,
                PublishMessage::build()
                    .message_id(&event.id)
                    .payload(payload.into()),
            );
            let acked = tokio::time::timeout(ACK_TIMEOUT, publish)
                .await
                .map_err(|_| StepError::Broker(format!("no room to publish in {ACK_TIMEOUT:?}")))?
                .map_err(|error| StepError::Broker(error.to_string()))?;
            publications.push_back(acked);
            count += 1;
        }
        published_to = commit.lsn;
    }
    if published_to == done {
        return Ok(false);
    }
    for acked in publications {
        duplicates += u64::from(acknowledged(acked).await?);
    }
    match state
        .read_models
        .advance_progress(&state.name, done, published_to)
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            // Another publisher of this partition moved it (an old owner still at work):
            // resume from theirs; what both published, the broker kept once.
            let theirs = state.read_models.progress(&state.name).await?;
            tracing::warn!(
                ours = published_to,
                theirs,
                "event progress moved elsewhere"
            );
            state.progress.store(theirs, Ordering::Release);
            return Ok(true);
        }
        Err(error) => return Err(error.into()),
    }
    state.progress.store(published_to, Ordering::Release);
    state.broker.record(state.partition, published_to, last);
    metrics::counter!("kizo_cdc_events_published_total").increment(count as u64);
    metrics::counter!("kizo_cdc_duplicates_total").increment(duplicates);
    Ok(published_to < last)
}
