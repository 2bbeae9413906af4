//! Kizo's snapshot format and the snapshot folder's logic, pure: a
//! [`LedgerImage`](kizo_ledger::LedgerImage) as `rkyv` parts and a JSON manifest with
//! checksums ([`format`]), and the order of writes and the checks on read that make a snapshot
//! appear whole or not at all ([`dir`]), over a file system behind the [`dir::Disk`] trait.
//!
//! This crate never contains: a file system call, an async runtime, a clock or logging. The
//! machine's disk is `kizo-snapshots`' `RealDisk`; the simulator's disk crashes mid-write and
//! runs exactly this code over what is left (checked by `sim/tests/pure_crates.rs`).

pub mod dir;
pub mod format;

pub use dir::{Disk, SnapshotDir, SnapshotError};
pub use format::Manifest;
