//! The snapshot actor and the engine's baseline.
//!
//! The actor never touches the shards: it rebuilds the ledger from the newest snapshot and the
//! durable log after it ([`crate::rebuild`]) on blocking threads, writes the result, and prunes
//! old snapshots. Traffic is never stopped; the price is the CPU of re-applying the log since
//! the last snapshot, and one more copy of the ledger in memory while it works. It takes a
//! snapshot when [`Policy::due`] says so (every N records or T seconds) and on demand.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kizo_engine::wal::Wal;
use kizo_engine::{Baseline, Engine, LedgerImage};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::dir::{snapshot_name, RealDisk, SnapshotDir};
use crate::format::Manifest;
use crate::rebuild::{rebuild, Base, Retention, Target};

/// When snapshots are taken and how many are kept.
#[derive(Clone, Debug)]
pub struct Policy {
    /// A snapshot once this many records were committed since the last one...
    pub every_records: u64,
    /// ...or once this much time passed with at least one new commit.
    pub every: Duration,
    /// Snapshots kept (at least 1).
    pub keep: usize,
    /// Parts per snapshot (written and read in parallel).
    pub parts: u32,
    /// How often the actor looks at the policy.
    pub tick: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            every_records: 1_000_000,
            every: Duration::from_secs(600),
            keep: 3,
            parts: std::thread::available_parallelism().map_or(1, |n| n.get()) as u32,
            tick: Duration::from_secs(1),
        }
    }
}

impl Policy {
    /// Whether a snapshot is due, `elapsed` after the last one, with `records` committed and
    /// the log at `log_lsn` while the newest snapshot is at `snapshot_lsn`.
    pub fn due(&self, records: u64, elapsed: Duration, log_lsn: u64, snapshot_lsn: u64) -> bool {
        log_lsn > snapshot_lsn && (records >= self.every_records || elapsed >= self.every)
    }
}

/// A snapshot taken (or found already there, when the log had not moved).
#[derive(Clone, Debug)]
pub struct Taken {
    pub name: String,
    pub manifest: Manifest,
    /// Whether it was written now (false: the newest snapshot was already at the log's end).
    pub written: bool,
    /// Commits applied on top of the previous snapshot.
    pub replayed: u64,
    pub duration: Duration,
}

pub enum SnapshotMsg {
    Tick,
    TakeNow(RpcReplyPort<Result<Taken, TakeError>>),
}

pub struct SnapshotActor;

/// Why a snapshot was not taken, or the snapshot actor not started.
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    #[error("the ledger could not be rebuilt: {0}")]
    Rebuild(#[from] crate::RebuildError),
    #[error(transparent)]
    Snapshot(#[from] crate::dir::SnapshotError),
    /// The actor could not be started, did not answer in time, or its writer task died.
    #[error("the snapshot actor: {0}")]
    Actor(String),
}

/// What the server's snapshots keep of history: what its shards keep.
#[derive(Clone)]
pub enum SnapshotRetention {
    Everything,
    /// The engine's shard count and window; the store says what may be let go.
    Window {
        shard_count: usize,
        window: usize,
        store: Arc<dyn kizo_engine::TransferStore>,
    },
}

impl SnapshotRetention {
    /// As of now: the store's progress only grows, so what it holds now it holds at any
    /// later start.
    fn now(&self) -> Retention {
        match self {
            SnapshotRetention::Everything => Retention::Everything,
            SnapshotRetention::Window {
                shard_count,
                window,
                store,
            } => Retention::Window {
                shard_count: *shard_count,
                window: *window,
                stored_lsn: store.stored_lsn(),
            },
        }
    }
}

pub struct SnapshotArgs {
    pub dir: Arc<SnapshotDir>,
    pub retention: SnapshotRetention,
    /// What manifests are dated with (the server's one clock).
    pub clock: Arc<dyn kizo_engine::Clock>,
    pub wal: Arc<dyn Wal>,
    pub engine: Engine,
    pub policy: Policy,
}

pub struct SnapshotState {
    args: SnapshotArgs,
    snapshot_lsn: u64,
    taken_at: Instant,
    records_at: u64,
}

impl SnapshotState {
    async fn take(&mut self) -> Result<Taken, TakeError> {
        let started = Instant::now();
        let records = self.args.engine.stats().records;
        let rebuilt = rebuild(
            Some(self.args.dir.clone()),
            self.args.wal.as_ref(),
            Target::Latest,
            Base::BestSnapshot,
            self.args.retention.now(),
            |_, _| {},
        )
        .await?;
        for skipped in &rebuilt.skipped {
            tracing::error!(snapshot = %skipped.name, error = %skipped.error, "snapshot passed over");
        }
        let lsn = rebuilt.image.lsn;
        let name = snapshot_name(lsn);
        let written = rebuilt.base.as_deref() != Some(name.as_str());
        let manifest = if written {
            let dir = self.args.dir.clone();
            let (parts, keep) = (self.args.policy.parts, self.args.policy.keep);
            let image = rebuilt.image;
            let created_at = crate::rfc3339(self.args.clock.as_ref());
            tokio::task::spawn_blocking(move || {
                let manifest = dir.write(&image, parts, &created_at)?;
                for pruned in dir.prune(keep)? {
                    tracing::info!(snapshot = %pruned, "old snapshot removed");
                }
                Ok::<_, crate::dir::SnapshotError>(manifest)
            })
            .await
            .map_err(|error| TakeError::Actor(error.to_string()))??
        } else {
            self.args.dir.manifest(&name)?
        };
        self.snapshot_lsn = lsn;
        self.taken_at = Instant::now();
        self.records_at = records;
        let taken = Taken {
            name,
            manifest,
            written,
            replayed: rebuilt.replayed,
            duration: started.elapsed(),
        };
        if written {
            metrics::histogram!("kizo_snapshot_seconds").record(taken.duration.as_secs_f64());
            metrics::gauge!("kizo_snapshot_lsn").set(lsn as f64);
            metrics::gauge!("kizo_snapshot_bytes").set(taken.manifest.bytes as f64);
            tracing::info!(
                lsn,
                accounts = taken.manifest.accounts,
                transfers = taken.manifest.transfers,
                bytes = taken.manifest.bytes,
                replayed = taken.replayed,
                ms = taken.duration.as_millis() as u64,
                "snapshot written"
            );
        }
        Ok(taken)
    }
}

impl Actor for SnapshotActor {
    type Msg = SnapshotMsg;
    type State = SnapshotState;
    type Arguments = SnapshotArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SnapshotMsg>,
        args: SnapshotArgs,
    ) -> Result<SnapshotState, ActorProcessingErr> {
        assert!(args.policy.keep >= 1 && args.policy.parts >= 1);
        let dir = args.dir.clone();
        let newest = tokio::task::spawn_blocking(move || {
            for removed in dir.remove_unfinished()? {
                tracing::warn!(folder = %removed, "unfinished snapshot removed");
            }
            let listed = dir.list()?;
            Ok::<_, crate::dir::SnapshotError>(
                listed
                    .iter()
                    .rev()
                    .find_map(|l| l.manifest.as_ref().ok().map(|m| m.lsn))
                    .unwrap_or(0),
            )
        })
        .await??;
        myself.send_interval(args.policy.tick, || SnapshotMsg::Tick);
        Ok(SnapshotState {
            records_at: args.engine.stats().records,
            args,
            snapshot_lsn: newest,
            taken_at: Instant::now(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SnapshotMsg>,
        message: SnapshotMsg,
        state: &mut SnapshotState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SnapshotMsg::Tick => {
                let records = state.args.engine.stats().records - state.records_at;
                let due = state.args.policy.due(
                    records,
                    state.taken_at.elapsed(),
                    state.args.wal.last_lsn(),
                    state.snapshot_lsn,
                );
                if due {
                    if let Err(error) = state.take().await {
                        metrics::counter!("kizo_snapshots_total", "result" => "failed")
                            .increment(1);
                        tracing::error!(%error, "snapshot failed; the log alone still recovers everything");
                        // Not again at every tick: wait for the next period.
                        state.taken_at = Instant::now();
                        state.records_at = state.args.engine.stats().records;
                    } else {
                        metrics::counter!("kizo_snapshots_total", "result" => "ok").increment(1);
                    }
                }
            }
            SnapshotMsg::TakeNow(reply) => {
                let taken = state.take().await;
                let result = if taken.is_ok() { "ok" } else { "failed" };
                metrics::counter!("kizo_snapshots_total", "result" => result).increment(1);
                let _ = reply.send(taken);
            }
        }
        Ok(())
    }
}

/// The handle to a running snapshot actor.
#[derive(Clone)]
pub struct Snapshots {
    actor: ActorRef<SnapshotMsg>,
    dir: Arc<SnapshotDir>,
}

impl Snapshots {
    pub async fn start(args: SnapshotArgs) -> Result<Snapshots, TakeError> {
        let dir = args.dir.clone();
        let (actor, _) = Actor::spawn(None, SnapshotActor, args)
            .await
            .map_err(|error| TakeError::Actor(error.to_string()))?;
        Ok(Snapshots { actor, dir })
    }

    pub fn dir(&self) -> &Arc<SnapshotDir> {
        &self.dir
    }

    /// Takes a snapshot now (after any under way), waiting at most `timeout`.
    pub async fn take_now(&self, timeout: Duration) -> Result<Taken, TakeError> {
        match ractor::call_t!(self.actor, SnapshotMsg::TakeNow, timeout.as_millis() as u64) {
            Ok(result) => result,
            Err(error) => Err(TakeError::Actor(error.to_string())),
        }
    }

    pub fn stop(&self) {
        self.actor.stop(None);
    }
}

/// The engine's baseline: the newest snapshot of a folder that loads and is not ahead of the
/// log; the ones passed over are logged and counted.
pub struct DirBaseline(pub Arc<SnapshotDir<RealDisk>>);

impl Baseline for DirBaseline {
    fn load(
        &self,
        log_last_lsn: u64,
    ) -> Result<Option<LedgerImage>, kizo_engine::engine::BaselineError> {
        let started = Instant::now();
        let (found, skipped) = self.0.newest_valid(|manifest| {
            if manifest.lsn <= log_last_lsn {
                Ok(())
            } else {
                Err(format!(
                    "ahead of the log, which ends at LSN {log_last_lsn}"
                ))
            }
        })?;
        for skipped in &skipped {
            metrics::counter!("kizo_snapshots_skipped_total").increment(1);
            tracing::error!(snapshot = %skipped.name, error = %skipped.error, "snapshot passed over at start-up");
        }
        Ok(found.map(|(manifest, image)| {
            tracing::info!(
                lsn = manifest.lsn,
                accounts = manifest.accounts,
                transfers = manifest.transfers,
                bytes = manifest.bytes,
                ms = started.elapsed().as_millis() as u64,
                "snapshot loaded"
            );
            image
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_due_after_enough_records_or_time_and_only_with_new_commits() {
        let policy = Policy {
            every_records: 100,
            every: Duration::from_secs(60),
            ..Policy::default()
        };
        let minute = Duration::from_secs(60);
        assert!(!policy.due(99, minute / 2, 10, 5));
        assert!(policy.due(100, Duration::ZERO, 10, 5));
        assert!(policy.due(0, minute, 10, 5));
        assert!(!policy.due(1_000, 10 * minute, 5, 5), "nothing new to save");
    }
}
