//! The read models as the engine's transfer store: what the projector has written is what the
//! store holds, so its progress is the store's LSN.

use std::sync::Arc;
use std::time::Duration;

use kizo_engine::store::Stored;
use kizo_engine::transfer_store::{
    wait_for_lsn, TransferStore, TransferStoreError, TransferStoreFuture,
};
use kizo_engine::{AccountFilter, Transfer};

use crate::projector::ProjectorProgress;
use crate::read_models::ReadModels;
use crate::store::StoreError;

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
