//! The read models as the engine's transfer store: what the projector has written is what the
//! store holds, so its progress is the store's LSN.

use std::sync::Arc;
use std::time::Duration;

use kizo_engine::store::Stored;
use kizo_engine::transfer_store::{
    wait_for_lsn, TransferStore, TransferStoreError, TransferStoreFuture,
};
use kizo_engine::{AccountFilter, Transfer};

use kizo_engine::{Baseline, Clock, Engine, EngineConfig, EngineError};

use crate::projector::{Projector, ProjectorConfig, ProjectorProgress};
use crate::read_models::ReadModels;
use crate::store::StoreError;
use crate::wal::DurableWal;

/// An engine as a server runs it: the read models, fed by their projector, are its store.
pub struct ServedEngine {
    pub engine: Engine,
    pub projector: Projector,
    pub store: Arc<dyn TransferStore>,
}

/// Why [`ServedEngine::start`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the projector could not start: {0}")]
    Projector(#[from] StoreError),
    #[error("the engine could not start: {0}")]
    Engine(#[from] EngineError),
}

impl ServedEngine {
    /// The projector first: its progress is the store's LSN, which the shards consult before
    /// they let a transfer go. Then the engine, on `wal` from `baseline` (a snapshot) if any.
    pub async fn start(
        wal: Arc<DurableWal>,
        read_models: ReadModels,
        projector: ProjectorConfig,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        baseline: Option<Arc<dyn Baseline>>,
    ) -> Result<ServedEngine, StartError> {
        let projector = Projector::start(wal.clone(), read_models.clone(), projector).await?;
        let store: Arc<dyn TransferStore> =
            ReadModelStore::new(read_models, projector.progress_handle(), config.store_wait);
        let engine =
            Engine::start_with_store(config, wal, Some(store.clone()), clock, baseline).await?;
        Ok(ServedEngine {
            engine,
            projector,
            store,
        })
    }
}

/// The read models, and how far the projector has written them.
#[derive(Clone)]
pub struct ReadModelStore {
    read_models: ReadModels,
    progress: ProjectorProgress,
    /// How long a history read waits for the projector to reach the caller's commit.
    wait: Duration,
}

impl ReadModelStore {
    pub fn new(read_models: ReadModels, progress: ProjectorProgress, wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            read_models,
            progress,
            wait,
        })
    }
}

impl From<StoreError> for TransferStoreError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Corrupt(detail) => TransferStoreError::Corrupt(detail),
            other => TransferStoreError::Unavailable(other.to_string()),
        }
    }
}

impl TransferStore for ReadModelStore {
    fn stored_lsn(&self) -> u64 {
        self.progress.lsn()
    }

    fn fetch(&self, ids: Vec<u128>) -> TransferStoreFuture<Vec<Stored>> {
        let read_models = self.read_models.clone();
        Box::pin(async move { Ok(read_models.stored(&ids).await?) })
    }

    fn account_transfers(
        &self,
        filter: AccountFilter,
        as_of: u64,
    ) -> TransferStoreFuture<Vec<Transfer>> {
        let this = self.clone();
        Box::pin(async move {
            this.progress.nudge();
            wait_for_lsn(&this, as_of, this.wait).await?;
            Ok(this.read_models.filtered_transfers(&filter).await?)
        })
    }

    fn nudge(&self) {
        self.progress.nudge();
    }
}
