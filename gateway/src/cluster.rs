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
//! Not yet wired into the server: requests are not routed to partitions (nor forwarded to
//! other nodes), and partitions start from their log without a snapshot.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kizo_cluster::lease::{plan, LeaseAction, LeasePolicy};
use kizo_cluster::legs::{clearing_account, CrossTransfer, NotCrossing};
use kizo_cluster::{partition_of, NodeId, PartitionCount};
use kizo_engine::{Account, CreateTransferResult, Engine, EngineConfig, EngineError, Transfer};
use kizo_persistence::cross::{CrossCreated, CrossStore};
use kizo_persistence::leases::LeaseStore;
use kizo_persistence::{DurableWal, StoreError, WalConfig};

/// A node's place in its cluster.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub node_id: NodeId,
    /// Where the other nodes reach this one.
    pub address: String,
    pub policy: LeasePolicy,
    /// A node whose heartbeat is older than this is not live (a few renewals).
    pub node_timeout: Duration,
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

/// The engines of the partitions this node holds, by partition: (epoch, engine); and who
/// hears of changes.
struct Hosting {
    engines: RwLock<BTreeMap<u32, (u64, Engine)>>,
    events: tokio::sync::broadcast::Sender<HostEvent>,
}

type Hosted = Arc<Hosting>;

/// A running node: its lease loop and the engines of the partitions it holds.
pub struct PartitionHost {
    hosted: Hosted,
    partitions: PartitionCount,
    leases: LeaseStore,
    node_id: NodeId,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl PartitionHost {
    /// Joins the cluster and starts the lease loop.
    pub async fn start(
        leases: LeaseStore,
        settings: ClusterSettings,
        engine_config: EngineConfig,
    ) -> Result<PartitionHost, StoreError> {
        assert!(
            settings.policy.is_valid(),
            "lease timing checked by the caller"
        );
        leases.join(&settings.node_id, &settings.address).await?;
        let hosted: Hosted = Arc::new(Hosting {
            engines: RwLock::default(),
            events: tokio::sync::broadcast::channel(HOST_EVENTS_KEPT).0,
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(lease_loop(
            leases.clone(),
            settings.clone(),
            engine_config,
            hosted.clone(),
            stopped,
        ));
        Ok(PartitionHost {
            hosted,
            partitions: leases.partitions(),
            leases,
            node_id: settings.node_id,
            stop,
            task,
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
        hosted.get(&partition).map(|(_, engine)| engine.clone())
    }

    /// Hears of every partition acquired or dropped from now on.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<HostEvent> {
        self.hosted.events.subscribe()
    }

    /// The partitions served now, with the epoch each was acquired at.
    pub fn held(&self) -> BTreeMap<u32, u64> {
        let hosted = self.hosted.engines.read().expect("not poisoned");
        hosted.iter().map(|(&p, (epoch, _))| (p, *epoch)).collect()
    }

    /// A graceful leave: the node stops being live, hands every partition over (each is
    /// released once its engine stopped), and ends within `within`.
    pub async fn leave(self, within: Duration) {
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
    pub async fn halt(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let engines: Vec<Engine> = {
            let mut hosted = self.hosted.engines.write().expect("not poisoned");
            std::mem::take(&mut *hosted)
                .into_values()
                .map(|(_, engine)| engine)
                .collect()
        };
        for engine in engines {
            engine.shutdown().await;
        }
    }
}

async fn lease_loop(
    leases: LeaseStore,
    settings: ClusterSettings,
    engine_config: EngineConfig,
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
        if let Err(error) = round(&leases, &settings, &engine_config, &hosted).await {
            tracing::warn!(%error, "a lease round failed; the next one retries");
        }
    }
}

/// One round: heartbeat, view, plan, act.
async fn round(
    leases: &LeaseStore,
    settings: &ClusterSettings,
    engine_config: &EngineConfig,
    hosted: &Hosted,
) -> Result<(), StoreError> {
    let me = &settings.node_id;
    leases.heartbeat(me, &settings.address).await?;
    let view = leases
        .view(settings.node_timeout.as_millis() as u64)
        .await?;
    let held: BTreeMap<u32, u64> = {
        let hosted = hosted.engines.read().expect("not poisoned");
        hosted.iter().map(|(&p, (epoch, _))| (p, *epoch)).collect()
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
                match start_engine(leases, partition, epoch, engine_config).await {
                    Ok(engine) => {
                        tracing::info!(partition, epoch, "partition acquired; serving it");
                        hosted
                            .engines
                            .write()
                            .expect("not poisoned")
                            .insert(partition, (epoch, engine));
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
    #[error("its engine: {0}")]
    Engine(#[from] EngineError),
}

async fn start_engine(
    leases: &LeaseStore,
    partition: u32,
    epoch: u64,
    engine_config: &EngineConfig,
) -> Result<Engine, PartitionStartError> {
    let wal = DurableWal::open(leases.log_stream(partition, epoch), WalConfig::default()).await?;
    Ok(Engine::start(engine_config.clone(), wal).await?)
}

async fn drop_engine(hosted: &Hosted, partition: u32) {
    let engine = {
        let mut hosted = hosted.engines.write().expect("not poisoned");
        hosted.remove(&partition)
    };
    if let Some((_, engine)) = engine {
        engine.shutdown().await;
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
    #[error("a transfer with this id exists with other fields")]
    ExistsDifferently,
    #[error("a partition could not be reached: {0}")]
    Unreachable(#[from] LegError),
    #[error("the store: {0}")]
    Store(#[from] StoreError),
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
    ) -> Result<CrossTransfer, CrossError> {
        let cross = CrossTransfer::new(transfer, self.partitions)?;
        let cross = match self.store.create(&cross, now_ms()).await? {
            CrossCreated::Created => cross,
            CrossCreated::Exists(existing) if existing.transfer == transfer => *existing,
            CrossCreated::Exists(_) => return Err(CrossError::ExistsDifferently),
        };
        self.drive(router, cross).await
    }

    /// Submits the transfer's legs until it ends, saving each phase.
    pub async fn drive(
        &self,
        router: &dyn LegRouter,
        mut cross: CrossTransfer,
    ) -> Result<CrossTransfer, CrossError> {
        while let Some((partition, leg)) = cross.next_leg() {
            // The clearing account the leg touches exists before it does (creating it again
            // is answered `exists`): a leg refused for a missing account would be remembered
            // as failed.
            let clearing = clearing_account(cross.transfer.ledger, partition);
            let result = router.create(partition, vec![clearing], leg).await?;
            let from = cross.phase;
            cross.on_result(result);
            self.store.save(from, &cross, now_ms()).await?;
        }
        Ok(cross)
    }

    /// Drives every unfinished transfer whose source is `partition` (once a node holds it);
    /// how many it finished.
    pub async fn resume(
        &self,
        router: &dyn LegRouter,
        partition: u32,
    ) -> Result<usize, CrossError> {
        let unfinished = self.store.unfinished(partition).await?;
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
