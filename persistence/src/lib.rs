//! Kizo's durability: the write-ahead log the engine writes every change to before it answers,
//! the recovery that rebuilds the shards from it, and the read models fed from it.
//!
//! - [`codec`]: the log's byte format (frames of commits, checksummed, versioned).
//! - [`store`]: where frames live: PostgreSQL, or the embedded SQLite default under `./data/`.
//! - [`wal`]: [`DurableWal`], the engine's log on a store: group commit, recovery reads.
//! - [`projection`], [`read_models`], [`projector`]: the `accounts`, `transfers` and
//!   `failed_transfers` tables fed from the log; `postings`: accounts' histories in
//!   PostgreSQL as posting lists.
//! - [`transfer_store`]: the read models as the engine's transfer store (what its shards let
//!   go of is found there by id).
//! - [`keys`]: the HTTP API's idempotency keys, durable.
//! - [`cross`]: a cluster's transfers between partitions, resumable (PostgreSQL only).
//! - [`leases`]: a cluster's nodes and partition leases (PostgreSQL only; issue 28).
//! - [`users`]: users of the wallet API, sessions, refresh tokens.
//! - [`settlements`]: deposits and withdrawals through the bank, with every transition, and
//!   reconciliation reports.
//! - [`webhooks`]: webhook endpoints, their deliveries, and how far the log was fanned out.
pub use kizo_log_codec as codec;
pub mod cross;
pub mod keys;
pub mod leases;
mod postings;
pub mod projection;
pub mod projector;
pub mod read_models;
pub mod settlements;
pub mod store;
pub mod transfer_store;
pub mod users;
pub mod wal;
pub mod webhooks;

pub use store::{LogStore, StoreConfig, StoreError};
pub use wal::{DurableWal, WalConfig, WalStats};
