//! Kizo's cluster, as rules: how the account space splits into partitions, which live node
//! should own each, what a node does about its leases, and how a transfer between accounts
//! of two partitions moves through clearing accounts exactly once. The decisions are here;
//! the nodes that carry them out (leases in PostgreSQL, forwarding, the supervisor that
//! resumes cross-partition transfers) live in the impure crates.
//!
//! - [`partition`]: the partition of an account, fixed when the data is created.
//! - [`assignment`]: node ids, and the owner of each partition among the live nodes
//!   (rendezvous hashing: a node leaving moves only its own partitions).
//! - [`lease`]: what a node should acquire, renew, release or stop serving, given the lease
//!   table as the database shows it and the database's time.
//! - [`legs`]: a transfer across partitions as legs (hold at the source, credit at the
//!   destination, then post or void), with ids derived from the transfer's.
//!
//! This crate never contains: I/O, an async runtime, a clock (times come in as the database's
//! milliseconds), randomness or logging (checked by `sim/tests/pure_crates.rs`).

pub mod assignment;
pub mod lease;
pub mod legs;
pub mod partition;

pub use assignment::{owner_of, NodeId};
pub use partition::{partition_of, PartitionCount};

/// Why a cluster input was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("partitions: 1 to {}", partition::PARTITIONS_MAX)]
    PartitionCount,
    #[error(
        "node id: 1 to {} characters of a-z, 0-9, '-', '_' and '.'",
        assignment::NODE_ID_MAX
    )]
    NodeId,
}
