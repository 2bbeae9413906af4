//! Kizo's deterministic simulator. One `u64` seed drives a whole run: the workload, how
//! requests group into rounds, whether a round's commit is applied before or after the next
//! round reads, flush latencies, crashes (also between a flush and its answer), flush
//! failures, rotting log frames, clock jumps, snapshots (taken at random points, cut short by
//! crashes, rotting on disk) and restarts from them with another shard count. It runs the engine's own pure parts
//! (`LocalEngine`: sequencer, rounds, decider, shard state machines) and the real log codec and
//! recovery, and checks them against a reference model written apart (`model`).
//!
//! - [`rng`]: the seeded generator, the only randomness.
//! - [`log`]: the simulated log store, holding real frames.
//! - [`disk`]: the simulated disk under snapshots, which can die mid-write and lose what was
//!   not made durable.
//! - [`model`]: the reference ledger.
//! - [`settlements`]: deposits and withdrawals: the settlement state machine against a
//!   simulated bank with the mock bank's faults, and reconciliation.
//! - [`world`]: one run: workload, faults, checks, the trace hash.
//! - [`cluster`]: nodes owning partitions through leases, with pauses, crashes, leaves, stale
//!   views and lost answers, and cross-partition transfers through their legs.

pub mod cluster;
pub mod disk;
pub mod log;
pub mod model;
pub mod rng;
pub mod settlements;
pub mod world;

pub use world::{Failure, Mutation, Options, Report, Violation, World};

/// Runs one seed.
pub fn run(seed: u64, options: Options) -> Report {
    World::new(seed, options).run()
}
