//! A node of a cluster (issue 28, in progress): it keeps its partition leases and runs one
//! engine per partition it holds, on that partition's fenced log stream. Every
//! `renew_every` it heartbeats, reads the lease table, asks [`kizo_cluster::lease::plan`]
//! what to do, and does it: an acquired partition gets an engine recovered from its log; a
//! partition to hand over stops taking requests, then its lease is released; a lost one is
//! dropped at once (its appends would be refused anyway). The decisions are the pure
//! crate's; this task carries time and I/O.
//!
//! [`CrossPartition`] drives transfers between partitions through their legs, persisted after
//! each answer so that a node taking a partition over resumes them.
//!
//! The server routes requests to these engines, here or on the owning node, through
//! [`crate::books`]. A partition starts from its newest snapshot (when the node keeps them)
//! and its log after it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kizo_cluster::lease::{plan, LeaseAction, LeasePolicy};
use kizo_cluster::legs::{clearing_account, CrossTransfer, NotCrossing, Phase};
use kizo_cluster::{partition_of, NodeId, PartitionCount};
use kizo_engine::{
    Account, Clock, CreateTransferResult, Engine, EngineConfig, EngineError, Transfer,
};
use kizo_persistence::cross::{CrossCreated, CrossStore};
use kizo_persistence::leases::{ClusterView, LeaseStore};
use kizo_persistence::projector::{Projector, ProjectorConfig};
use kizo_persistence::read_models::ReadModels;
use kizo_persistence::transfer_store::ServedEngine;
use kizo_persistence::{DurableWal, StoreError, WalConfig};

/// How a held partition's engine is started.
#[derive(Clone)]
pub struct PartitionEngines {
    pub engine: EngineConfig,
    /// The read models shared by every partition, each fed by the partition's own projector
    /// (its progress row is `partition-<n>`); `None` for an engine on its log alone.
    pub read_models: Option<ReadModels>,
    /// The read models of partitions kept on other databases (with their logs), by partition.
    pub read_models_elsewhere: BTreeMap<u32, ReadModels>,
    pub clock: Arc<dyn Clock>,
    /// Each partition's snapshots, in `<dir>/partition-<n>` (with read models only). A
    /// partition starts from its newest snapshot and the log after it; a folder every node
    /// reads (a shared file system) lets a takeover start from the old owner's snapshot.
    pub snapshots: Option<PartitionSnapshots>,
    /// Where each partition's events are published (`--nats-url`), with read models only.
    pub cdc: Option<Arc<crate::cdc::Broker>>,
    /// Where each partition's events are fanned out to webhook endpoints, with read models only.
    pub webhooks: Option<Arc<crate::webhooks::Webhooks>>,
}

/// Where and when a node's partitions are snapshotted.
#[derive(Clone, Debug)]
pub struct PartitionSnapshots {
    pub dir: std::path::PathBuf,
    pub policy: kizo_snapshots::Policy,
    /// The engine's shard count and transfer window, which a snapshot's retention follows.
    pub shard_count: usize,
    pub window: usize,
}

impl PartitionEngines {
    /// Engines on their logs alone, without read models.
    pub fn bare(engine: EngineConfig) -> PartitionEngines {
        PartitionEngines {
            engine,
            read_models: None,
            read_models_elsewhere: BTreeMap::new(),
            clock: Arc::new(kizo_engine::SystemClock),
            snapshots: None,
            cdc: None,
            webhooks: None,
        }
    }
}

/// A node's place in its cluster.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub node_id: NodeId,
    /// Where the other nodes reach this one.
    pub address: String,
    pub policy: LeasePolicy,
    /// A node whose heartbeat is older than this is not live (a few renewals).
    pub node_timeout: Duration,
    /// A router (`--role router`) holds no partition: it never joins, never leases, and only
    /// reads who owns what, to forward every operation.
    pub router: bool,
}

/// Where a served partition stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionProgress {
    pub partition: u32,
    pub epoch: u64,
    /// The last commit of its log, and the last the read models hold.
    pub last_lsn: u64,
    pub projected_lsn: u64,
    /// The snapshot it started from (0: its whole log).
    pub snapshot_lsn: u64,
}

/// What happened to a partition on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostEvent {
    /// Acquired at `epoch`; its engine serves it (the moment to resume its cross-partition
    /// transfers).
    Acquired { partition: u32, epoch: u64 },
    /// No longer served here: lost, released or stopped.
    Dropped { partition: u32 },
}

/// Events kept for a receiver that falls behind; past it, it misses the oldest.
pub const HOST_EVENTS_KEPT: usize = 1024;

/// A held partition's engine and the projector that feeds its read models.
struct Served {
    epoch: u64,
    wal: Arc<DurableWal>,
    engine: Engine,
    projector: Option<Projector>,
    publisher: Option<crate::cdc::Publisher>,
    /// Its events' webhook deliveries (with read models only).
    fanout: Option<crate::webhooks::Fanout>,
    /// The follower behind its wallets' `GET /v1/events` (with read models only).
    live: Option<Arc<crate::live::Live>>,
    snapshots: Option<kizo_snapshots::Snapshots>,
    /// The LSN of the snapshot the partition started from (0: none, the whole log).
    started_from: Arc<StartedFrom>,
}

/// A partition's baseline: its newest snapshot, and the LSN it was at (for the report).
struct StartedFrom {
    dir: Option<kizo_snapshots::DirBaseline>,
    lsn: std::sync::atomic::AtomicU64,
}

impl kizo_engine::Baseline for StartedFrom {
    fn load(
        &self,
        log_last_lsn: u64,
    ) -> Result<Option<kizo_engine::LedgerImage>, kizo_engine::BaselineError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let image = dir.load(log_last_lsn)?;
        let lsn = image.as_ref().map_or(0, |image| image.lsn);
        self.lsn.store(lsn, std::sync::atomic::Ordering::Relaxed);
        Ok(image)
    }
}

impl Served {
    async fn stop(self) {
        if let Some(snapshots) = &self.snapshots {
            snapshots.stop();
        }
        if let Some(live) = &self.live {
            live.stop();
        }
        if let Some(fanout) = &self.fanout {
            fanout.stop();
        }
        if let Some(publisher) = &self.publisher {
            publisher.stop().await;
        }
        if let Some(projector) = &self.projector {
            projector.stop().await;
        }
        self.engine.shutdown().await;
    }
}

/// The engines of the partitions this node holds, by partition; the last view of the
/// cluster; and who hears of changes.
struct Hosting {
    engines: RwLock<BTreeMap<u32, Served>>,
    view: RwLock<Option<Arc<ClusterView>>>,
    events: tokio::sync::broadcast::Sender<HostEvent>,
}

type Hosted = Arc<Hosting>;

/// A running node: its lease loop and the engines of the partitions it holds.
pub struct PartitionHost {
    hosted: Hosted,
    partitions: PartitionCount,
    leases: LeaseStore,
    node_id: NodeId,
    router: bool,
    stop: tokio::sync::watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl PartitionHost {
    /// Joins the cluster and starts the lease loop.
    pub async fn start(
        leases: LeaseStore,
        settings: ClusterSettings,
        engines: PartitionEngines,
    ) -> Result<PartitionHost, StoreError> {
        assert!(
            settings.policy.is_valid(),
            "lease timing checked by the caller"
        );
        if !settings.router {
            leases.join(&settings.node_id, &settings.address).await?;
        }
        let hosted: Hosted = Arc::new(Hosting {
            engines: RwLock::default(),
            view: RwLock::default(),
            events: tokio::sync::broadcast::channel(HOST_EVENTS_KEPT).0,
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(lease_loop(
            leases.clone(),
            settings.clone(),
            engines,
            hosted.clone(),
            stopped,
        ));
        Ok(PartitionHost {
            hosted,
            partitions: leases.partitions(),
            leases,
            node_id: settings.node_id,
            router: settings.router,
            stop,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// The engine of `account`'s partition, if this node serves it now.
    pub fn engine_of(&self, account: u128) -> Option<Engine> {
        self.engine(partition_of(account, self.partitions))
    }

    /// The engine of `partition`, if this node serves it now.
    pub fn engine(&self, partition: u32) -> Option<Engine> {
        let hosted = self.hosted.engines.read().expect("not poisoned");
        hosted.get(&partition).map(|served| served.engine.clone())
    }

    /// The follower of `partition`'s log for its wallets' live events, if served here.
    pub fn live(&self, partition: u32) -> Option<Arc<crate::live::Live>> {
        let hosted = self.hosted.engines.read().expect("not poisoned");
        hosted
            .get(&partition)
            .and_then(|served| served.live.clone())
    }

    /// Every engine this node serves now, by partition.
    pub fn engines(&self) -> Vec<(u32, Engine)> {
        let hosted = self.hosted.engines.read().expect("not poisoned");
        hosted
            .iter()
            .map(|(&p, served)| (p, served.engine.clone()))
            .collect()
    }

    /// Where each served partition stands.
    pub fn progress(&self) -> Vec<PartitionProgress> {
        let hosted = self.hosted.engines.read().expect("not poisoned");
        hosted
            .iter()
            .map(|(&partition, served)| PartitionProgress {
                partition,
                epoch: served.epoch,
                projected_lsn: served.projector.as_ref().map_or(0, Projector::progress),
                last_lsn: kizo_engine::Wal::last_lsn(served.wal.as_ref()),
                snapshot_lsn: served
                    .started_from
                    .lsn
                    .load(std::sync::atomic::Ordering::Relaxed),
            })
            .collect()
    }

    pub fn partitions(&self) -> PartitionCount {
        self.partitions
    }

    pub fn leases(&self) -> &LeaseStore {
        &self.leases
    }

    /// The cluster as the last lease round saw it (who owns what, where nodes are).
    pub fn view(&self) -> Option<Arc<ClusterView>> {
        self.hosted.view.read().expect("not poisoned").clone()
    }

    /// Reads the cluster now (after an owner said it no longer owns a partition).
    pub async fn refresh_view(
        &self,
        node_timeout: Duration,
    ) -> Result<Arc<ClusterView>, StoreError> {
        let view = Arc::new(self.leases.view(node_timeout.as_millis() as u64).await?);
        *self.hosted.view.write().expect("not poisoned") = Some(view.clone());
        Ok(view)
    }

    /// Hears of every partition acquired or dropped from now on.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<HostEvent> {
        self.hosted.events.subscribe()
    }

    /// The partitions served now, with the epoch each was acquired at.
    pub fn held(&self) -> BTreeMap<u32, u64> {
        let hosted = self.hosted.engines.read().expect("not poisoned");
        hosted
            .iter()
            .map(|(&p, served)| (p, served.epoch))
            .collect()
    }

    /// A graceful leave: the node stops being live, hands every partition over (each is
    /// released once its engine stopped), and ends within `within`.
    pub async fn leave(&self, within: Duration) {
        if self.router {
            return self.halt().await;
        }
        if let Err(error) = self.leases.leave(&self.node_id).await {
            tracing::warn!(%error, "the leave was not recorded; the leases will expire instead");
        }
        let deadline = tokio::time::Instant::now() + within;
        while !self.held().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.halt().await;
    }

    /// Stops at once, releasing nothing (as a crash would leave the leases, to expire).
    pub async fn halt(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().expect("not poisoned").take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let served: Vec<Served> = {
            let mut hosted = self.hosted.engines.write().expect("not poisoned");
            std::mem::take(&mut *hosted).into_values().collect()
        };
        for served in served {
            served.stop().await;
        }
    }
}

async fn lease_loop(
    leases: LeaseStore,
    settings: ClusterSettings,
    engines: PartitionEngines,
    hosted: Hosted,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(Duration::from_millis(settings.policy.renew_every_ms));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopped.changed() => return,
        }
        if let Err(error) = round(&leases, &settings, &engines, &hosted).await {
            tracing::warn!(%error, "a lease round failed; the next one retries");
        }
    }
}

/// One round: heartbeat, view, plan, act.
async fn round(
    leases: &LeaseStore,
    settings: &ClusterSettings,
    engines: &PartitionEngines,
    hosted: &Hosted,
) -> Result<(), StoreError> {
    let me = &settings.node_id;
    if !settings.router {
        leases.heartbeat(me, &settings.address).await?;
    }
    let view = Arc::new(
        leases
            .view(settings.node_timeout.as_millis() as u64)
            .await?,
    );
    *hosted.view.write().expect("not poisoned") = Some(view.clone());
    if settings.router {
        return Ok(());
    }
    let held: BTreeMap<u32, u64> = {
        let hosted = hosted.engines.read().expect("not poisoned");
        hosted
            .iter()
            .map(|(&p, served)| (p, served.epoch))
            .collect()
    };
    let actions = plan(
        me,
        &view.live,
        &view.leases,
        &held,
        view.now_ms,
        settings.policy,
    );
    for action in actions {
        match action {
            LeaseAction::Acquire { partition, .. } => {
                let Some(epoch) = leases.apply(me, &action, settings.policy).await? else {
                    continue;
                };
                match start_engine(leases, partition, epoch, engines).await {
                    Ok(served) => {
                        tracing::info!(partition, epoch, "partition acquired; serving it");
                        hosted
                            .engines
                            .write()
                            .expect("not poisoned")
                            .insert(partition, served);
                        // Nobody listening is fine.
                        let _ = hosted.events.send(HostEvent::Acquired { partition, epoch });
                    }
                    // Held but not served: the lease is renewed by nobody and lapses, and
                    // the next round (here or elsewhere) tries again at a new epoch.
                    Err(error) => {
                        tracing::error!(partition, %error, "a partition's engine did not start")
                    }
                }
            }
            LeaseAction::Renew { partition, .. } => {
                if leases.apply(me, &action, settings.policy).await?.is_none() {
                    tracing::warn!(partition, "a renewal was refused: the partition is lost");
                    drop_engine(hosted, partition).await;
                }
            }
            LeaseAction::Release { partition, .. } => {
                // Stop taking its requests and let those in flight finish, then hand it over.
                drop_engine(hosted, partition).await;
                leases.apply(me, &action, settings.policy).await?;
                tracing::info!(partition, "partition handed over");
            }
            LeaseAction::Stop { partition } => {
                tracing::warn!(partition, "partition lost: no longer serving it");
                drop_engine(hosted, partition).await;
            }
        }
    }
    Ok(())
}

/// Why a held partition's engine did not start.
#[derive(Debug, thiserror::Error)]
pub enum PartitionStartError {
    #[error("its log: {0}")]
    Log(#[from] kizo_engine::WalError),
    #[error("its log's store: {0}")]
    Store(#[from] StoreError),
    #[error("its engine: {0}")]
    Engine(#[from] EngineError),
    #[error("its engine or projector: {0}")]
    Served(#[from] kizo_persistence::transfer_store::StartError),
    #[error("its snapshots: {0}")]
    Snapshots(#[from] kizo_snapshots::actor::TakeError),
}

/// The projector's progress row of `partition`.
pub fn projector_name(partition: u32) -> String {
    format!("partition-{partition}")
}

async fn start_engine(
    leases: &LeaseStore,
    partition: u32,
    epoch: u64,
    engines: &PartitionEngines,
) -> Result<Served, PartitionStartError> {
    let wal = DurableWal::open(
        leases.open_stream(partition, epoch).await?,
        WalConfig::default(),
    )
    .await?;
    let read_models = engines
        .read_models_elsewhere
        .get(&partition)
        .or(engines.read_models.as_ref());
    let Some(read_models) = read_models else {
        let engine =
            Engine::start_with_clock(engines.engine.clone(), wal.clone(), engines.clock.clone())
                .await?;
        return Ok(Served {
            epoch,
            wal,
            engine,
            projector: None,
            publisher: None,
            fanout: None,
            live: None,
            snapshots: None,
            started_from: Arc::new(StartedFrom {
                dir: None,
                lsn: Default::default(),
            }),
        });
    };
    let dir = engines.snapshots.as_ref().map(|snapshots| {
        Arc::new(kizo_snapshots::dir::open(
            snapshots.dir.join(format!("partition-{partition}")),
        ))
    });
    let started_from = Arc::new(StartedFrom {
        dir: dir.clone().map(kizo_snapshots::DirBaseline),
        lsn: Default::default(),
    });
    let ServedEngine {
        engine,
        projector,
        store,
    } = ServedEngine::start(
        wal.clone(),
        read_models.clone(),
        ProjectorConfig {
            name: projector_name(partition),
            ..ProjectorConfig::default()
        },
        engines.engine.clone(),
        engines.clock.clone(),
        Some(started_from.clone() as Arc<dyn kizo_engine::Baseline>),
    )
    .await?;
    let snapshots = match (dir, &engines.snapshots) {
        (Some(dir), Some(settings)) => Some(
            kizo_snapshots::Snapshots::start(kizo_snapshots::actor::SnapshotArgs {
                dir,
                retention: kizo_snapshots::SnapshotRetention::Window {
                    shard_count: settings.shard_count,
                    window: settings.window,
                    store,
                },
                clock: engines.clock.clone(),
                wal: wal.clone(),
                engine: engine.clone(),
                policy: settings.policy.clone(),
            })
            .await?,
        ),
        _ => None,
    };
    let publisher = match &engines.cdc {
        Some(broker) => Some(
            crate::cdc::Publisher::start(
                broker.clone(),
                Some(partition),
                wal.clone(),
                read_models.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let fanout = engines.webhooks.clone().map(|webhooks| {
        crate::webhooks::Fanout::start(webhooks, partition, wal.clone(), read_models.clone())
    });
    let live = crate::live::Live::start(wal.clone(), read_models.clone(), partition);
    Ok(Served {
        epoch,
        wal,
        engine,
        projector: Some(projector),
        publisher,
        fanout,
        live: Some(live),
        snapshots,
        started_from,
    })
}

async fn drop_engine(hosted: &Hosted, partition: u32) {
    let served = {
        let mut hosted = hosted.engines.write().expect("not poisoned");
        hosted.remove(&partition)
    };
    if let Some(served) = served {
        served.stop().await;
        let _ = hosted.events.send(HostEvent::Dropped { partition });
    }
}

/// Why a leg got no answer. It may or may not have been made: it is retried, and its id
/// makes that harmless.
#[derive(Debug, thiserror::Error)]
pub enum LegError {
    #[error("partition {0} is not served where the leg was sent")]
    NotServed(u32),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Books(Box<crate::books::BooksError>),
}

/// A leg's answer, from wherever its partition is served.
pub type LegFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<CreateTransferResult, LegError>> + Send + 'a>,
>;

/// Where legs go: the engine serving a partition, here or on another node.
pub trait LegRouter: Send + Sync {
    /// Creates `accounts` (clearing accounts) then `leg` in `partition`; an error when the
    /// partition could not be reached (the leg may or may not have been made: it is retried,
    /// and its id makes that harmless).
    fn create(&self, partition: u32, accounts: Vec<Account>, leg: Transfer) -> LegFuture<'_>;
}

#[derive(Debug, thiserror::Error)]
pub enum CrossError {
    #[error(transparent)]
    NotCrossing(#[from] NotCrossing),
    #[error("a partition could not be reached: {0}")]
    Unreachable(#[from] LegError),
    #[error("the store: {0}")]
    Store(#[from] StoreError),
}

/// What [`CrossPartition::begin`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begun {
    /// Nothing stored: the ledger's code for a transfer it would refuse, or for a retry with
    /// other fields.
    Refused(CreateTransferResult),
    /// Stored (or found stored: `retry`), at the phase it stands.
    Started { cross: CrossTransfer, retry: bool },
}

/// Transfers between partitions: each is stored, then driven leg by leg, its phase saved
/// after every answer.
pub struct CrossPartition {
    store: CrossStore,
    partitions: PartitionCount,
}

impl CrossPartition {
    pub fn new(store: CrossStore, partitions: PartitionCount) -> CrossPartition {
        CrossPartition { store, partitions }
    }

    /// Starts `transfer` (or finds it, for a retry) and drives it to its end.
    pub async fn transfer(
        &self,
        router: &dyn LegRouter,
        transfer: Transfer,
    ) -> Result<Result<CrossTransfer, CreateTransferResult>, CrossError> {
        match self.begin(transfer).await? {
            Begun::Refused(result) => Ok(Err(result)),
            Begun::Started { cross, .. } => Ok(Ok(self.drive(router, cross).await?)),
        }
    }

    /// Stores `transfer` at its first leg, or finds it stored by an earlier attempt. Refused
    /// with the ledger's own code when a ledger would refuse its fields, or when it repeats
    /// an id with other fields.
    pub async fn begin(&self, transfer: Transfer) -> Result<Begun, CrossError> {
        if let Err(result) = kizo_ledger::ledger::validate_transfer(&transfer) {
            return Ok(Begun::Refused(result));
        }
        let cross = CrossTransfer::new(transfer, self.partitions)?;
        Ok(match self.store.create(&cross, now_ms()).await? {
            CrossCreated::Created => Begun::Started {
                cross,
                retry: false,
            },
            CrossCreated::Exists(existing) => {
                match kizo_ledger::ledger::transfer_exists(&transfer, &existing.transfer) {
                    Ok(()) => Begun::Started {
                        cross: *existing,
                        retry: true,
                    },
                    Err(result) => Begun::Refused(result),
                }
            }
        })
    }

    pub fn store(&self) -> &CrossStore {
        &self.store
    }

    /// A transfer between partitions as stored, if it is one.
    pub async fn load(&self, id: u128) -> Result<Option<CrossTransfer>, CrossError> {
        Ok(self.store.load(id).await?)
    }

    /// Submits the transfer's legs until it ends, saving each phase.
    pub async fn drive(
        &self,
        router: &dyn LegRouter,
        mut cross: CrossTransfer,
    ) -> Result<CrossTransfer, CrossError> {
        // The store keeps where a transfer stands only where it must not start over: once a
        // leg was refused (the void that follows must never become a credit on a retry) and
        // at its end. In between, whoever resumes from the stored phase repeats legs that were
        // made, and each is answered `exists`. Two statements per transfer instead of four.
        let mut stored = cross.phase;
        while let Some((partition, leg)) = cross.next_leg() {
            // The clearing account the leg touches exists before it does (creating it again
            // is answered `exists`): a leg refused for a missing account would be remembered
            // as failed.
            let clearing = clearing_account(cross.transfer.ledger, partition);
            let result = router.create(partition, vec![clearing], leg).await?;
            cross.on_result(result);
            if !matches!(cross.phase, Phase::Void(_) | Phase::Done(_)) {
                continue;
            }
            match self.store.save(stored, &cross, now_ms()).await {
                Ok(()) => stored = cross.phase,
                // Another driver (a sweep, the node that took the partition over) got there
                // first: go on from what it stored.
                Err(StoreError::Superseded(_)) => {
                    cross =
                        self.store.load(cross.transfer.id).await?.ok_or_else(|| {
                            StoreError::Corrupt("a cross transfer vanished".into())
                        })?;
                    stored = cross.phase;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(cross)
    }

    /// Drives every unfinished transfer whose source is `partition` and that nobody touched
    /// for `idle` (a driver may still be at work on a younger one: it would only repeat its
    /// legs); how many it finished.
    pub async fn resume(
        &self,
        router: &dyn LegRouter,
        partition: u32,
        idle: Duration,
    ) -> Result<usize, CrossError> {
        let before = now_ms().saturating_sub(idle.as_millis() as u64);
        let unfinished = self.store.unfinished(partition, before).await?;
        let count = unfinished.len();
        for cross in unfinished {
            self.drive(router, cross).await?;
        }
        Ok(count)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
