//! Kizo's engine: accounts split across shards, a double-entry ledger decided by a pure state
//! machine, and the `ractor` actors that carry it.
//!
//! Map of the crate (see `docs/architecture.md` for the whole story):
//! - [`types`], [`results`]: accounts, transfers and the result codes of the API.
//! - [`ledger`]: the decision logic ([`ledger::Decider`]) over a [`ledger::View`]. Pure.
//! - [`shard`]: one shard's state; answers reads, applies commits. Pure.
//! - [`image`]: the whole ledger as plain data at one LSN (what a snapshot holds). Pure.
//! - [`round`]: the cross-shard commit protocol (read, decide, log, apply). Pure.
//! - [`record`], [`wal`]: the write-ahead-log records and the log boundary.
//! - [`routing`]: the stable hash that assigns ids to shards.
//! - [`stats`]: counters of the engine's work (rounds, commits, time deciding and applying).
//! - [`local`]: the pure parts stepped synchronously, for tests and the simulator.
//! - [`settlement`], [`reconcile`]: deposits and withdrawals through a bank, and
//!   reconciliation with its statement. Pure.
//! - `actors`, [`engine`], [`settlement_actors`]: the actors, the [`Engine`] handle, and the
//!   settlement supervisor and reconciler. The only async code.
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
pub mod image;
pub mod ledger;
pub mod local;
pub mod reconcile;
pub mod record;
pub mod results;
pub mod round;
pub mod routing;
pub mod settlement;
pub mod settlement_actors;
pub mod shard;
pub mod stats;
pub mod types;
pub mod wal;

pub use engine::{Baseline, Clock, Engine, EngineConfig, EngineError, SystemClock};
pub use image::{ImageError, LedgerImage};
pub use record::{Commit, Record};
pub use results::{CreateAccountResult, CreateTransferResult};
pub use stats::StatsSnapshot;
pub use types::{
    Account, AccountFilter, AccountFlags, PendingStatus, Transfer, TransferFlags, AMOUNT_MAX,
    BATCH_EVENTS_MAX,
};
pub use wal::{MemoryWal, Wal, WalError};
