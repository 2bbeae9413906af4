//! Counters of the engine's work, for metrics and for finding where time goes. Monotonic; the
//! actors add to them once per round or message, never per event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[derive(Debug, Default)]
pub struct Stats {
    /// Per shard: messages sent and not yet taken (the mailbox depth; mailboxes are unbounded).
    shard_queued: Box<[AtomicU64]>,
    rounds: AtomicU64,
    events: AtomicU64,
    commits: AtomicU64,
    records: AtomicU64,
    commit_failures: AtomicU64,
    shard_restarts: AtomicU64,
    coordinator_decide_ns: AtomicU64,
    coordinator_wait_ns: AtomicU64,
    shard_read_ns: AtomicU64,
    shard_apply_ns: AtomicU64,
    /// Per shard: transfers and failed ids held besides the pending ones, and filter bytes.
    shard_window: Box<[AtomicU64]>,
    shard_filter_bytes: Box<[AtomicU64]>,
    store_fetches: AtomicU64,
    store_fetched_ids: AtomicU64,
    store_fetch_found: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Rounds decided.
    pub rounds: u64,
    /// Events (and expiry passes) decided.
    pub events: u64,
    /// Commits made durable and applied.
    pub commits: u64,
    /// Records in those commits.
    pub records: u64,
    /// Commits the log refused.
    pub commit_failures: u64,
    /// Shards restarted after a failure.
    pub shard_restarts: u64,
    /// Time the coordinator spent deciding (merging reads and running the decider).
    pub coordinator_decide_ns: u64,
    /// Time the coordinator spent waiting for shards' reads.
    pub coordinator_wait_ns: u64,
    /// Time shards spent answering reads, summed over shards.
    pub shard_read_ns: u64,
    /// Time shards spent applying commits, summed over shards.
    pub shard_apply_ns: u64,
    /// Transfers and failed ids the shards hold besides the pending ones (the window).
    pub window_transfers: u64,
    /// Bytes of the shards' id filters.
    pub filter_bytes: u64,
    /// Fetches of ids from the store by rounds and lookups, the ids asked, and those found
    /// (the rest were the filter's false positives, or new).
    pub store_fetches: u64,
    pub store_fetched_ids: u64,
    pub store_fetch_found: u64,
}

fn add(counter: &AtomicU64, value: u64) {
    counter.fetch_add(value, Ordering::Relaxed);
}

fn since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl Stats {
    pub(crate) fn new(shard_count: usize) -> Self {
        Stats {
            shard_queued: (0..shard_count).map(|_| AtomicU64::new(0)).collect(),
            shard_window: (0..shard_count).map(|_| AtomicU64::new(0)).collect(),
            shard_filter_bytes: (0..shard_count).map(|_| AtomicU64::new(0)).collect(),
            ..Stats::default()
        }
    }

    pub(crate) fn shard_enqueued(&self, index: usize) {
        add(&self.shard_queued[index], 1);
    }

    pub(crate) fn shard_dequeued(&self, index: usize) {
        // Saturating: a message sent before a restart's reset may be taken after it.
        let _ = self.shard_queued[index].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(1))
        });
    }

    /// Messages waiting in each shard's mailbox.
    pub fn shard_mailbox_depths(&self) -> Vec<u64> {
        self.shard_queued
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    pub(crate) fn round(&self, events: usize, wait_started: Instant, decide_started: Instant) {
        add(&self.rounds, 1);
        add(&self.events, events as u64);
        let wait = decide_started.saturating_duration_since(wait_started);
        add(
            &self.coordinator_wait_ns,
            u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX),
        );
        add(&self.coordinator_decide_ns, since(decide_started));
    }

    pub(crate) fn commit(&self, records: usize) {
        add(&self.commits, 1);
        add(&self.records, records as u64);
    }

    pub(crate) fn commit_failure(&self) {
        add(&self.commit_failures, 1);
    }

    /// A shard failed: its mailbox went with it.
    pub(crate) fn shard_restart(&self, index: usize) {
        add(&self.shard_restarts, 1);
        self.shard_queued[index].store(0, Ordering::Relaxed);
    }

    pub(crate) fn shard_read(&self, started: Instant) {
        add(&self.shard_read_ns, since(started));
    }

    pub(crate) fn shard_apply(&self, started: Instant) {
        add(&self.shard_apply_ns, since(started));
    }

    /// What shard `index` holds after applying or evicting.
    pub(crate) fn shard_held(&self, index: usize, window: usize, filter_bytes: u64) {
        self.shard_window[index].store(window as u64, Ordering::Relaxed);
        self.shard_filter_bytes[index].store(filter_bytes, Ordering::Relaxed);
    }

    pub(crate) fn store_fetch(&self, ids: usize, found: usize) {
        add(&self.store_fetches, 1);
        add(&self.store_fetched_ids, ids as u64);
        add(&self.store_fetch_found, found as u64);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let sum = |counters: &[AtomicU64]| -> u64 {
            counters.iter().map(|c| c.load(Ordering::Relaxed)).sum()
        };
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            rounds: get(&self.rounds),
            events: get(&self.events),
            commits: get(&self.commits),
            records: get(&self.records),
            commit_failures: get(&self.commit_failures),
            shard_restarts: get(&self.shard_restarts),
            coordinator_decide_ns: get(&self.coordinator_decide_ns),
            coordinator_wait_ns: get(&self.coordinator_wait_ns),
            shard_read_ns: get(&self.shard_read_ns),
            shard_apply_ns: get(&self.shard_apply_ns),
            window_transfers: sum(&self.shard_window),
            filter_bytes: sum(&self.shard_filter_bytes),
            store_fetches: get(&self.store_fetches),
            store_fetched_ids: get(&self.store_fetched_ids),
            store_fetch_found: get(&self.store_fetch_found),
        }
    }
}
