//! What a node does about its leases, decided from the lease table as the database shows it
//! and the database's time. Each partition has one row: its owner, its epoch and when the
//! owner's lease expires. The store applies every action as a compare-and-set on the epoch
//! (an acquisition bumps it), and refuses a log append whose epoch is not the row's: a
//! paused or cut-off former owner can never append again. This module only plans; it reads
//! no clock and holds no state between rounds.

use std::collections::BTreeMap;

use crate::assignment::{owner_of, NodeId};

/// Lease timing: `--lease-length`, `--lease-renew-every`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeasePolicy {
    /// How long a lease lasts from its acquisition or last renewal.
    pub length_ms: u64,
    /// How often an owner renews; at most a third of the length, so that two renewals can
    /// fail (a slow database, a pause) before the lease lapses.
    pub renew_every_ms: u64,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        Self {
            length_ms: 5_000,
            renew_every_ms: 1_000,
        }
    }
}

impl LeasePolicy {
    pub const LENGTH_MAX_MS: u64 = 600_000;

    /// Whether the timing can work: a renewal every third of the length or more often.
    pub fn is_valid(&self) -> bool {
        (1..=Self::LENGTH_MAX_MS).contains(&self.length_ms)
            && self.renew_every_ms >= 1
            && self.renew_every_ms.saturating_mul(3) <= self.length_ms
    }
}

/// One partition's lease, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    pub partition: u32,
    /// `None` after a release, and before the first acquisition.
    pub owner: Option<NodeId>,
    /// Bumped by every acquisition; appends carry it.
    pub epoch: u64,
    /// The database's milliseconds at which the owner's lease ends.
    pub expires_ms: u64,
}

/// What the node should do; the store applies each as a compare-and-set on `epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// Take the partition if its epoch is still `epoch` (the store makes it `epoch + 1`), then
    /// load its newest snapshot and the log after it, and serve.
    Acquire { partition: u32, epoch: u64 },
    /// Extend this node's lease, if the stored epoch is still `epoch`.
    Renew { partition: u32, epoch: u64 },
    /// Hand over: stop taking requests for it, finish those in flight, then clear the owner
    /// (if the epoch is still `epoch`), so that the node it belongs to takes it at once.
    Release { partition: u32, epoch: u64 },
    /// Stop serving it now: another node took it, or this node's lease lapsed. Its appends
    /// would be refused anyway; this stops the requests that would make them.
    Stop { partition: u32 },
}

/// The actions of `me` this round. `live` are the nodes whose heartbeats are current (`me`
/// among them unless its own heartbeat lapsed); `held` the partitions `me` serves, with the
/// epoch it acquired each at; `now_ms` the database's time.
pub fn plan(
    me: &NodeId,
    live: &[NodeId],
    rows: &[LeaseRow],
    held: &BTreeMap<u32, u64>,
    now_ms: u64,
    policy: LeasePolicy,
) -> Vec<LeaseAction> {
    debug_assert!(policy.is_valid());
    let mut actions = Vec::new();
    for (&partition, _) in held.iter() {
        if !rows.iter().any(|row| row.partition == partition) {
            actions.push(LeaseAction::Stop { partition });
        }
    }
    for row in rows {
        let partition = row.partition;
        let wanted = owner_of(partition, live) == Some(me);
        let lapsed = row.expires_ms <= now_ms;
        match held.get(&partition) {
            Some(&epoch) => {
                let still_mine = row.owner.as_ref() == Some(me) && row.epoch == epoch && !lapsed;
                if !still_mine {
                    actions.push(LeaseAction::Stop { partition });
                } else if !wanted {
                    actions.push(LeaseAction::Release { partition, epoch });
                } else if row.expires_ms - now_ms <= policy.length_ms - policy.renew_every_ms {
                    actions.push(LeaseAction::Renew { partition, epoch });
                }
            }
            None => {
                // Free, lapsed, or a lease of this node from before it restarted.
                let takeable = row.owner.is_none() || lapsed || row.owner.as_ref() == Some(me);
                if wanted && takeable {
                    actions.push(LeaseAction::Acquire {
                        partition,
                        epoch: row.epoch,
                    });
                }
            }
        }
    }
    actions
}

/// What a node holds after the store answered `action` (`applied`: the epoch it took or kept,
/// `None` when the compare-and-set found the lease changed). An acquisition adds the
/// partition; a refused renewal, a release and a stop remove it.
pub fn held_after(held: &mut BTreeMap<u32, u64>, action: &LeaseAction, applied: Option<u64>) {
    match (*action, applied) {
        (LeaseAction::Acquire { partition, .. }, Some(epoch)) => {
            held.insert(partition, epoch);
        }
        (LeaseAction::Acquire { .. }, None) | (LeaseAction::Renew { .. }, Some(_)) => {}
        (
            LeaseAction::Renew { partition, .. }
            | LeaseAction::Release { partition, .. }
            | LeaseAction::Stop { partition },
            _,
        ) => {
            held.remove(&partition);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    /// The lease table with the store's compare-and-set rules, and nodes that plan and act in
    /// turns: the model the real store (PostgreSQL) is tested against.
    struct Cluster {
        rows: Vec<LeaseRow>,
        held: BTreeMap<NodeId, BTreeMap<u32, u64>>,
        policy: LeasePolicy,
    }

    impl Cluster {
        fn new(partitions: u32, nodes: &[NodeId]) -> Cluster {
            Cluster {
                rows: (0..partitions)
                    .map(|partition| LeaseRow {
                        partition,
                        owner: None,
                        epoch: 0,
                        expires_ms: 0,
                    })
                    .collect(),
                held: nodes.iter().map(|n| (n.clone(), BTreeMap::new())).collect(),
                policy: LeasePolicy::default(),
            }
        }

        /// One round of `me` at `now_ms`.
        fn round(&mut self, me: &NodeId, live: &[NodeId], now_ms: u64) {
            let held = self.held[me].clone();
            for action in plan(me, live, &self.rows, &held, now_ms, self.policy) {
                let mine = self.held.get_mut(me).unwrap();
                match action {
                    LeaseAction::Acquire { partition, epoch } => {
                        let row = &mut self.rows[partition as usize];
                        let takeable = row.owner.is_none()
                            || row.owner.as_ref() == Some(me)
                            || row.expires_ms <= now_ms;
                        if row.epoch == epoch && takeable {
                            row.epoch += 1;
                            row.owner = Some(me.clone());
                            row.expires_ms = now_ms + self.policy.length_ms;
                            mine.insert(partition, row.epoch);
                        }
                    }
                    LeaseAction::Renew { partition, epoch } => {
                        let row = &mut self.rows[partition as usize];
                        if row.epoch == epoch && row.owner.as_ref() == Some(me) {
                            row.expires_ms = now_ms + self.policy.length_ms;
                        } else {
                            mine.remove(&partition);
                        }
                    }
                    LeaseAction::Release { partition, epoch } => {
                        mine.remove(&partition);
                        let row = &mut self.rows[partition as usize];
                        if row.epoch == epoch {
                            row.owner = None;
                            row.expires_ms = now_ms;
                        }
                    }
                    LeaseAction::Stop { partition } => {
                        mine.remove(&partition);
                    }
                }
            }
        }

        /// The node allowed to append to each partition: the one whose held epoch is the
        /// stored one (the store's fencing rule).
        fn appenders(&self, partition: u32) -> Vec<&NodeId> {
            let row = &self.rows[partition as usize];
            self.held
                .iter()
                .filter(|(_, held)| held.get(&partition) == Some(&row.epoch))
                .map(|(node, _)| node)
                .collect()
        }

        fn owners(&self) -> Vec<Option<NodeId>> {
            self.rows.iter().map(|r| r.owner.clone()).collect()
        }
    }

    #[test]
    fn policies_are_checked() {
        assert!(LeasePolicy::default().is_valid());
        assert!(!LeasePolicy {
            length_ms: 3_000,
            renew_every_ms: 1_001
        }
        .is_valid());
        assert!(!LeasePolicy {
            length_ms: 0,
            renew_every_ms: 0
        }
        .is_valid());
    }

    #[test]
    fn nodes_share_the_partitions_and_keep_them() {
        let nodes = [node("a"), node("b"), node("c")];
        let mut cluster = Cluster::new(12, &nodes);
        for now in (0..20_000).step_by(250) {
            for me in &nodes {
                cluster.round(me, &nodes, now);
            }
        }
        for p in 0..12 {
            assert_eq!(
                cluster.rows[p as usize].owner.as_ref(),
                owner_of(p, &nodes),
                "partition {p}"
            );
            // Renewed, never re-acquired: one acquisition each.
            assert_eq!(cluster.rows[p as usize].epoch, 1);
            assert_eq!(cluster.appenders(p).len(), 1);
        }
    }

    #[test]
    fn a_dead_nodes_partitions_are_taken_after_its_lease_expires() {
        let nodes = [node("a"), node("b"), node("c")];
        let mut cluster = Cluster::new(12, &nodes);
        for now in (0..2_000).step_by(250) {
            for me in &nodes {
                cluster.round(me, &nodes, now);
            }
        }
        let dead = &nodes[0];
        let theirs: Vec<u32> = (0..12)
            .filter(|&p| owner_of(p, &nodes) == Some(dead))
            .collect();
        assert!(!theirs.is_empty());
        // The dead node stops acting and leaves the live list; the others see it at once,
        // but its leases still run until they expire.
        let died_at = 2_000;
        let live = &nodes[1..];
        let mut taken_at = None;
        for now in (died_at..20_000).step_by(250) {
            for me in live {
                cluster.round(me, live, now);
            }
            if taken_at.is_none()
                && theirs
                    .iter()
                    .all(|&p| cluster.rows[p as usize].owner.as_ref() != Some(dead))
            {
                taken_at = Some(now);
            }
        }
        let taken_at = taken_at.expect("its partitions were taken");
        assert!(
            taken_at - died_at <= LeasePolicy::default().length_ms + 250,
            "{taken_at}"
        );
        assert!(
            taken_at - died_at >= LeasePolicy::default().length_ms - 1_000,
            "not before expiry"
        );
        for &p in &theirs {
            assert_eq!(cluster.rows[p as usize].owner.as_ref(), owner_of(p, live));
            assert_eq!(cluster.rows[p as usize].epoch, 2);
        }
    }

    #[test]
    fn a_paused_owner_cannot_append_after_a_takeover_and_stops_when_it_wakes() {
        let nodes = [node("a"), node("b")];
        let mut cluster = Cluster::new(4, &nodes);
        for now in (0..2_000).step_by(250) {
            for me in &nodes {
                cluster.round(me, &nodes, now);
            }
        }
        let paused = &nodes[0];
        let theirs: Vec<u32> = (0..4)
            .filter(|&p| owner_of(p, &nodes) == Some(paused))
            .collect();
        // Paused (SIGSTOP): it still believes it holds its partitions.
        for now in (2_000..10_000).step_by(250) {
            cluster.round(&nodes[1], &nodes[1..], now);
        }
        for &p in &theirs {
            assert_eq!(
                cluster.appenders(p),
                vec![&nodes[1]],
                "fenced: the old epoch is stale"
            );
        }
        // It wakes: it sees the rows and stops, then rejoins and gets its partitions back
        // through handover, never two appenders at once.
        for now in (10_000..30_000).step_by(250) {
            for me in &nodes {
                cluster.round(me, &nodes, now);
                for p in 0..4 {
                    assert!(cluster.appenders(p).len() <= 1, "partition {p} at {now}");
                }
            }
        }
        for p in 0..4 {
            assert_eq!(cluster.rows[p as usize].owner.as_ref(), owner_of(p, &nodes));
        }
    }

    #[test]
    fn a_graceful_leave_hands_over_without_waiting_for_expiry() {
        let nodes = [node("a"), node("b"), node("c")];
        let mut cluster = Cluster::new(9, &nodes);
        for now in (0..2_000).step_by(250) {
            for me in &nodes {
                cluster.round(me, &nodes, now);
            }
        }
        // "a" announces its leave (its heartbeat row goes): it releases, the others acquire
        // in the next rounds, long before a lease would have expired.
        let live = &nodes[1..];
        for now in [2_000, 2_250, 2_500] {
            cluster.round(&nodes[0], live, now);
            for me in live {
                cluster.round(me, live, now);
            }
        }
        let expected: Vec<Option<NodeId>> = (0..9).map(|p| owner_of(p, live).cloned()).collect();
        assert_eq!(cluster.owners(), expected);
        assert!(cluster.held[&nodes[0]].is_empty());
    }
}
