//! The projector: a `ractor` actor that follows the log and writes each run of commits into
//! the [read models](crate::read_models), off the request path. It remembers how far it got in
//! the same transaction as what it wrote, so after a restart it resumes at the next commit,
//! with no gap and no duplicate. How far it trails the log is the metric
//! `kizo_projector_lag_commits`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kizo_engine::Wal;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::projection::Projection;
use crate::read_models::ReadModels;
use crate::store::StoreError;

#[derive(Clone, Debug)]
pub struct ProjectorConfig {
    /// Names the projector's progress row: two projectors with one name would share it.
    pub name: String,
    /// How often the projector looks for new commits when it has caught up.
    pub interval: Duration,
    /// Commits written per transaction.
    pub commits_per_step: u64,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            name: "read_models".into(),
            interval: Duration::from_millis(100),
            commits_per_step: 64,
        }
    }
}

pub struct Projector {
    actor: ActorRef<Step>,
    progress: Arc<AtomicU64>,
}

/// How far a projector has written, shared: the transfer store's LSN.
#[derive(Clone)]
pub struct ProjectorProgress {
    actor: ActorRef<Step>,
    progress: Arc<AtomicU64>,
}

impl ProjectorProgress {
    /// The last LSN written to the read models.
    pub fn lsn(&self) -> u64 {
        self.progress.load(Ordering::Acquire)
    }

    /// Asks the projector to look at the log now rather than at its next interval.
    pub fn nudge(&self) {
        let _ = self.actor.send_message(Step);
    }
}

/// The projector's one message: look at the log and project what is new.
pub struct Step;

struct ProjectorActor;

struct ProjectorArgs {
    wal: Arc<dyn Wal>,
    read_models: ReadModels,
    config: ProjectorConfig,
    progress: Arc<AtomicU64>,
}

impl Projector {
    /// Starts projecting from where projector `config.name` stopped last.
    pub async fn start(
        wal: Arc<dyn Wal>,
        read_models: ReadModels,
        config: ProjectorConfig,
    ) -> Result<Projector, StoreError> {
        if config.commits_per_step == 0 || config.commits_per_step > 4096 {
            return Err(StoreError::Open(
                "commits_per_step must be in 1..=4096".into(),
            ));
        }
        let start = read_models.progress(&config.name).await?;
        backfill_failed_ids(wal.as_ref(), &read_models, &config, start).await?;
        let progress = Arc::new(AtomicU64::new(start));
        let args = ProjectorArgs {
            wal,
            read_models,
            config,
            progress: progress.clone(),
        };
        let (actor, _) = Actor::spawn(None, ProjectorActor, args)
            .await
            .map_err(|e| StoreError::Open(e.to_string()))?;
        Ok(Projector { actor, progress })
    }

    /// The last LSN written to the read models.
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Acquire)
    }

    /// A handle on the progress, for the transfer store.
    pub fn progress_handle(&self) -> ProjectorProgress {
        ProjectorProgress {
            actor: self.actor.clone(),
            progress: self.progress.clone(),
        }
    }

    /// Waits until the read models hold commit `lsn`; false if `timeout` passes first.
    pub async fn wait_for(&self, lsn: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.progress() < lsn {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            let _ = self.actor.send_message(Step);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    pub async fn stop(&self) {
        let _ = self
            .actor
            .stop_and_wait(None, Some(Duration::from_secs(5)))
            .await;
    }
}

/// Read models written before they kept failed ids hold none of the commits up to their
/// progress: those are written from the log once, before the progress is published (the
/// engine lets failed ids go on the strength of it). The marker is a progress row of its own,
/// `<name>#failed`, written with the last of them; a fresh store only writes the marker.
async fn backfill_failed_ids(
    wal: &dyn Wal,
    read_models: &ReadModels,
    config: &ProjectorConfig,
    progress: u64,
) -> Result<(), StoreError> {
    let marker = format!("{}#failed", config.name);
    if read_models.has_progress(&marker).await? {
        return Ok(());
    }
    if progress > 0 {
        tracing::info!(
            projector = %config.name,
            lsn = progress,
            "writing the failed ids of commits projected before the read models kept them"
        );
    }
    let mut failed = Vec::new();
    let mut from = 1;
    while from <= progress {
        let to = progress.min(from + config.commits_per_step - 1);
        let commits = wal
            .read(from, to)
            .await
            .map_err(|error| StoreError::Unavailable(error.to_string()))?;
        failed.extend(Projection::of(&commits).failed);
        from = to + 1;
    }
    read_models
        .replace_failed_up_to(&marker, progress, &failed)
        .await
}

impl Actor for ProjectorActor {
    type Msg = Step;
    type State = ProjectorArgs;
    type Arguments = ProjectorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Step>,
        args: ProjectorArgs,
    ) -> Result<ProjectorArgs, ActorProcessingErr> {
        myself.send_interval(args.config.interval, || Step);
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<Step>,
        _: Step,
        state: &mut ProjectorArgs,
    ) -> Result<(), ActorProcessingErr> {
        let done = state.progress.load(Ordering::Acquire);
        let last = state.wal.last_lsn();
        metrics::gauge!("kizo_projector_lag_commits", "projector" => state.config.name.clone())
            .set(last.saturating_sub(done) as f64);
        if done >= last {
            return Ok(());
        }
        let to = last.min(done + state.config.commits_per_step);
        // Failures are retried on the next step; the progress row says where to resume.
        let commits = match state.wal.read(done + 1, to).await {
            Ok(commits) => commits,
            Err(error) => {
                tracing::warn!(%error, from = done + 1, "projector could not read the log");
                return Ok(());
            }
        };
        let projection = Projection::of(&commits);
        match state
            .read_models
            .apply(&state.config.name, &projection)
            .await
        {
            Ok(()) => {
                state.progress.store(to, Ordering::Release);
                if to < last {
                    // More to do: continue behind whatever else is queued.
                    let _ = myself.send_message(Step);
                }
            }
            Err(StoreError::Conflict(_)) => {
                // Someone else moved this projector's progress: resume from theirs.
                let theirs = state.read_models.progress(&state.config.name).await?;
                tracing::warn!(ours = done, theirs, "projector progress moved elsewhere");
                state.progress.store(theirs, Ordering::Release);
            }
            Err(error) => {
                tracing::warn!(%error, from = done + 1, to, "projector could not write");
            }
        }
        Ok(())
    }
}
