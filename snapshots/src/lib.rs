//! Snapshots of the ledger: restarts that replay only the log after the newest snapshot,
//! backups, and the state as of any point of the log.
//!
//! - [`format`] (re-exported from the pure `kizo-snapshot-format`): a
//!   [`LedgerImage`](kizo_engine::LedgerImage) as `rkyv` parts and a JSON manifest with checksums.
//! - [`dir`]: snapshots in a folder, written atomically, read with every check, pruned (the
//!   pure logic is `kizo-snapshot-format`'s, over its `Disk` trait); here, the machine's disk.
//! - [`rebuild`]: the ledger as of an LSN or a time: the best snapshot plus the log after it.
//! - [`actor`]: the snapshot actor (periodic and on-demand snapshots, retention) and the
//!   [`Baseline`](kizo_engine::Baseline) the engine starts from.
//! - `kizo-snapshot` (`src/bin`, [`cli`]): list, verify, inspect, create, restore, export.
//!
//! Nothing here decides anything about money: images are produced and applied by the engine's
//! own shard state machine.

pub mod actor;
pub mod cli;
pub mod dir;
pub use kizo_snapshot_format::format;
pub mod rebuild;

pub use actor::{
    DirBaseline, Policy, SnapshotActor, SnapshotMsg, SnapshotRetention, Snapshots, Taken,
};
pub use dir::{RealDisk, SnapshotDir, SnapshotError};
pub use format::Manifest;
pub use rebuild::{rebuild, Base, RebuildError, Rebuilt, Retention, Target};

/// The time on `clock` as RFC 3339 with milliseconds, as manifests record it.
pub fn rfc3339(clock: &dyn kizo_engine::Clock) -> String {
    let since_epoch = std::time::Duration::from_nanos(clock.now_ns());
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + since_epoch).to_string()
}
