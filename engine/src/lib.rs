//! Kizo's engine: accounts split across shards, a double-entry ledger decided by a pure state
//! machine, and the `ractor` actors that carry it.
//!
//! The decisions are not here: they live in two pure crates that this one re-exports,
//! `kizo-ledger` (types, results, routing, ledger, shard, image, round, record, local) and
//! `kizo-settlement` (settlement, reconcile). This crate carries them:
//! - [`wal`]: the log boundary (a commit is handed to the log, the answer comes when durable).
//! - [`transfer_store`]: the store port (transfers and histories that left the shards' memory).
//! - [`stats`]: counters of the engine's work (rounds, commits, time deciding and applying).
//! - `actors`, [`engine`]: the shard and coordinator actors and the [`Engine`] handle.
//! - [`settlement_actors`]: the settlement supervisor and the reconciler.
//!
//! This crate never decides: every rule it applies is a call into the pure crates.
//!
//! ```
//! use kizo_engine::{
//!     Account, AccountFlags, CreateAccountResult, CreateTransferResult, Engine, EngineConfig,
//!     MemoryWal, Transfer,
//! };
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let engine = Engine::start(EngineConfig::default(), MemoryWal::new()).await?;
//! let bank = Account::new(1, 840, 1); // ledger 840: US dollars, in cents
//! let wallet = Account {
//!     flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS, // never below zero
//!     ..Account::new(2, 840, 2)
//! };
//! let created = engine.create_accounts(vec![bank, wallet]).await?;
//! assert_eq!(created, vec![CreateAccountResult::Created; 2]);
//!
//! let deposit = Transfer::new(10, 1, 2, 2_500, 840, 1);
//! let overdraft = Transfer::new(11, 2, 1, 9_999, 840, 1);
//! let results = engine.create_transfers(vec![deposit, overdraft]).await?;
//! assert_eq!(
//!     results,
//!     vec![CreateTransferResult::Created, CreateTransferResult::ExceedsCredits]
//! );
//! assert_eq!(engine.lookup_accounts(vec![2]).await?[0].credits_posted, 2_500);
//! engine.shutdown().await;
//! # Ok::<(), kizo_engine::EngineError>(())
//! # }).unwrap();
//! ```

mod actors;
pub mod engine;
pub mod settlement_actors;
pub mod stats;
pub mod transfer_store;
pub mod wal;

pub use kizo_ledger::{
    filter, image, ledger, local, record, results, round, routing, shard, store, types,
};
pub use kizo_settlement as settlement;
pub use kizo_settlement::reconcile;

pub use engine::{
    check_batch, Baseline, BaselineError, Clock, Engine, EngineConfig, EngineError, SystemClock,
};
pub use image::{ImageError, LedgerImage};
pub use record::{Commit, Record};
pub use results::{CreateAccountResult, CreateTransferResult};
pub use stats::StatsSnapshot;
pub use transfer_store::{TransferStore, TransferStoreError};
pub use types::{
    Account, AccountFilter, AccountFlags, PendingStatus, Transfer, TransferFlags, BATCH_EVENTS_MAX,
    POST_WHOLE_PENDING_AMOUNT,
};
pub use wal::{MemoryWal, Wal, WalError};
