//! Kizo's ledger, as pure state machines: what the engine decides and how its state changes.
//!
//! Map of the crate (see `docs/architecture.md` for the whole story):
//! - [`types`], [`results`]: accounts, transfers, their limits and the result codes of the API.
//! - [`ledger`]: the decision logic ([`ledger::Decider`]) over a [`ledger::View`].
//! - [`shard`]: one shard's state; answers reads, applies commits, lets old transfers go.
//! - [`filter`]: the membership filter of every transfer id a shard committed.
//! - [`store`]: what the durable store answers, and [`store::MemoryStore`].
//! - [`image`]: the whole ledger as plain data at one LSN (what a snapshot holds).
//! - [`round`]: the cross-shard commit protocol (read, decide, log, apply).
//! - [`record`]: the write-ahead-log records one commit is made of.
//! - [`routing`]: the stable hash that assigns ids to shards.
//! - [`local`]: the pure parts stepped synchronously, for tests and the simulator.
//!
//! This crate never contains: I/O, an async runtime, actors, threads, locks, a clock, metrics or
//! logging, nor randomness that reaches a result (its hash maps are seeded per process against
//! hash flooding, and no decision depends on their order). Time comes in as numbers; the
//! engine's actors and the simulator carry the messages. Its manifest names no crate that does I/O, and `sim/tests/pure_crates.rs` fails if
//! one appears.

pub mod filter;
pub mod image;
pub mod ledger;
pub mod local;
pub mod record;
pub mod results;
pub mod round;
pub mod routing;
pub mod shard;
pub mod store;
pub mod types;

pub use image::{ImageError, LedgerImage};
pub use record::{Commit, Record};
pub use results::{CreateAccountResult, CreateTransferResult};
pub use types::{
    Account, AccountFilter, AccountFlags, PendingStatus, Transfer, TransferFlags, BATCH_EVENTS_MAX,
    POST_WHOLE_PENDING_AMOUNT,
};

#[cfg(test)]
mod window_tests;
