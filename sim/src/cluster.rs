//! The cluster in the simulation (issue 28): nodes that own partitions through leases, as
//! `kizo_cluster::lease::plan` decides, against a lease table with the store's
//! compare-and-set rules (those of `kizo_persistence::leases`, restated here), and
//! cross-partition transfers driven through their legs (`kizo_cluster::legs`) on one pure
//! ledger per partition. One seed draws the faults: nodes that pause past their leases, crash
//! and restart, leave gracefully; clocks that run slow or fast (a node's rounds come late or
//! early: leases are timed by the store's clock, never a node's); views that are stale when
//! acted on; answers lost after the store applied the change; legs lost between nodes, before
//! or after the partition applied them; supervisors that lose their place and start a
//! transfer over.
//!
//! Fencing as the store does it: a node that acquired a partition at epoch E raises the
//! partition's fence (beside its log) to E before it reads the log, and an append is accepted
//! only at the fence's epoch. Checked: no append of an epoch is accepted after one of a later
//! epoch (fencing); after the faults stop, every partition is owned by the node the rules
//! choose among the live ones; every cross-partition transfer ends, moved its amount at most
//! once (exactly once when posted), and every ledger's clearing accounts net to zero.

use std::collections::BTreeMap;

use kizo_cluster::lease::{held_after, plan, LeaseAction, LeasePolicy, LeaseRow};
use kizo_cluster::legs::{
    clearing_account_id, clearing_totals, CrossOutcome, CrossTransfer, Phase,
};
use kizo_cluster::{owner_of, partition_of, NodeId, PartitionCount};
use kizo_ledger::local::LocalEngine;
use kizo_ledger::{Account, AccountFlags, Transfer};

use crate::rng::Rng;

const LEDGER: u32 = 840;
const TICK_MS: u64 = 50;
const POLICY: LeasePolicy = LeasePolicy {
    length_ms: 1_000,
    renew_every_ms: 250,
};
/// A node whose last heartbeat is older than this is not live.
const NODE_TIMEOUT_MS: u64 = 600;

/// What one seed's cluster run found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterReport {
    pub partitions: u32,
    pub nodes: usize,
    /// Appends accepted, and refused because their epoch was stale.
    pub appends: u64,
    pub fenced_appends: u64,
    pub takeovers: u64,
    pub cross_posted: u64,
    pub cross_refused: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Broken invariants; empty when the run passed.
    pub violations: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeState {
    Running,
    /// Does nothing until this tick (SIGSTOP), then carries on with what it believed.
    Paused(u64),
    /// Gone; restarts (with nothing held) at this tick.
    Down(u64),
    /// Gracefully leaving: it releases, and stops once it holds nothing.
    Leaving,
    Gone,
}

struct Node {
    id: NodeId,
    state: NodeState,
    held: BTreeMap<u32, u64>,
    heartbeat_ms: Option<u64>,
    leaving: bool,
    /// The view it will act on next (read earlier: possibly stale).
    view: Option<(u64, Vec<NodeId>, Vec<LeaseRow>)>,
    /// Its clock's skew: it runs a round every `round_ticks` ticks of true time (1 for an
    /// exact clock; up to the renewal a third of the lease allows, so a slow clock renews
    /// late but in time).
    round_ticks: u64,
}

/// One cross-partition transfer and the supervisor's volatile place in it.
struct Cross {
    asked: Transfer,
    machine: CrossTransfer,
}

/// Runs one seed of the cluster.
pub fn run_cluster(seed: u64) -> ClusterReport {
    let mut rng = Rng::new(seed ^ 0x636c_7573_7465_7221);
    let partitions = PartitionCount::new(rng.between(2, 8) as u32).expect("2 to 8");
    let node_count = rng.between(2, 5) as usize;
    let mut report = ClusterReport {
        partitions: partitions.get(),
        nodes: node_count,
        ..ClusterReport::default()
    };
    let mut nodes: Vec<Node> = (0..node_count)
        .map(|i| Node {
            id: NodeId::new(&format!("node-{i}")).expect("a valid id"),
            state: NodeState::Running,
            held: BTreeMap::new(),
            heartbeat_ms: None,
            leaving: false,
            view: None,
            round_ticks: 1,
        })
        .collect();
    for node in nodes.iter_mut() {
        if rng.chance(300) {
            // Rounds every 2 to 5 ticks (100 to 250 ms) instead of every tick.
            node.round_ticks = rng.between(2, 5);
            *report.faults.entry("clock_skew").or_default() += 1;
        }
    }
    let mut leases: Vec<LeaseRow> = partitions
        .all()
        .map(|partition| LeaseRow {
            partition,
            owner: None,
            epoch: 0,
            expires_ms: 0,
        })
        .collect();
    // Each partition's fence: the epoch its log accepts appends at.
    let mut fences: Vec<u64> = vec![0; partitions.get() as usize];
    // The last accepted append per partition: (node, epoch).
    let mut last_append: Vec<Option<(usize, u64)>> = vec![None; partitions.get() as usize];
    let (mut engines, wallets) = ledgers(partitions);
    let mut crosses = workload(&mut rng, partitions, &wallets);
    let mut now_ns = 1_000u64;

    let fault_ticks = rng.between(100, 300);
    let quiet_ticks = 200;
    let fault = |report: &mut ClusterReport, kind: &'static str| {
        *report.faults.entry(kind).or_default() += 1;
    };
    for tick in 0..fault_ticks + quiet_ticks {
        let now_ms = tick * TICK_MS;
        let faulty = tick < fault_ticks;
        for n in 0..nodes.len() {
            // Faults first: pauses, crashes, graceful leaves (at most one node gone for good).
            if faulty && nodes[n].state == NodeState::Running {
                if rng.chance(4) {
                    nodes[n].state = NodeState::Paused(tick + rng.between(1, 60));
                    fault(&mut report, "pause");
                } else if rng.chance(3) {
                    nodes[n].state = NodeState::Down(tick + rng.between(5, 60));
                    nodes[n].held.clear();
                    nodes[n].view = None;
                    fault(&mut report, "crash");
                } else if rng.chance(1) && !nodes.iter().any(|x| x.leaving) {
                    nodes[n].state = NodeState::Leaving;
                    nodes[n].leaving = true;
                    fault(&mut report, "leave");
                }
            }
            match nodes[n].state {
                NodeState::Paused(until) if tick >= until => nodes[n].state = NodeState::Running,
                NodeState::Down(until) if tick >= until => {
                    nodes[n].state = NodeState::Running;
                    nodes[n].leaving = false;
                }
                NodeState::Leaving
                    if nodes[n].held.is_empty() && nodes[n].heartbeat_ms.is_some() =>
                {
                    nodes[n].state = NodeState::Gone;
                }
                _ => {}
            }
            if !matches!(nodes[n].state, NodeState::Running | NodeState::Leaving)
                || tick % nodes[n].round_ticks != 0
            {
                continue;
            }
            // A round: heartbeat, act on the view read before (stale by a tick or more when
            // the seed says so), read the next view.
            nodes[n].heartbeat_ms = Some(now_ms);
            let live: Vec<NodeId> = nodes
                .iter()
                .filter(|x| {
                    !x.leaving && x.heartbeat_ms.is_some_and(|h| h + NODE_TIMEOUT_MS > now_ms)
                })
                .map(|x| x.id.clone())
                .collect();
            let fresh = (now_ms, live, leases.clone());
            let (view_ms, view_live, view_rows) = match nodes[n].view.take() {
                Some(old) if faulty && rng.chance(200) => {
                    fault(&mut report, "stale_view");
                    old
                }
                _ => fresh.clone(),
            };
            nodes[n].view = Some(fresh);
            let actions = plan(
                &nodes[n].id,
                &view_live,
                &view_rows,
                &nodes[n].held,
                view_ms,
                POLICY,
            );
            for action in actions {
                let applied = apply(&mut leases, &nodes[n].id, &action, now_ms);
                let lost = faulty && applied.is_some() && rng.chance(20);
                if lost {
                    fault(&mut report, "lost_answer");
                }
                let node = &mut nodes[n];
                // A lost answer is no answer: the node acts as if nothing was applied.
                let answered = if lost { None } else { applied };
                if let (LeaseAction::Acquire { partition, .. }, Some(epoch)) = (action, answered) {
                    if epoch > 1 {
                        report.takeovers += 1;
                    }
                    // Opening its stream: only at the lease's epoch, raising the fence.
                    if leases[partition as usize].epoch == epoch {
                        let fence = &mut fences[partition as usize];
                        *fence = (*fence).max(epoch);
                    }
                }
                held_after(&mut node.held, &action, answered);
            }
            // Appends to what it believes it holds; the store fences by epoch.
            for (&partition, &epoch) in &nodes[n].held {
                if fences[partition as usize] != epoch {
                    report.fenced_appends += 1;
                    continue;
                }
                if leases[partition as usize].epoch < epoch {
                    report.violations.push(format!(
                        "partition {partition}: an append at epoch {epoch}, past the lease's"
                    ));
                }
                if let Some((other, other_epoch)) = last_append[partition as usize] {
                    if other_epoch > epoch || (other_epoch == epoch && other != n) {
                        report.violations.push(format!(
                            "partition {partition}: node {n} appended at epoch {epoch} after node {other} at {other_epoch}"
                        ));
                    }
                }
                last_append[partition as usize] = Some((n, epoch));
                report.appends += 1;
            }
        }
        // Cross-partition transfers: each step is taken by the owner of the partition its
        // next leg goes to, if there is one; answers may be lost, supervisors may start over.
        for cross in crosses.iter_mut() {
            let Some((partition, leg)) = cross.machine.next_leg() else {
                continue;
            };
            let served = nodes.iter().any(|x| {
                matches!(x.state, NodeState::Running | NodeState::Leaving)
                    && x.held.contains_key(&partition)
            });
            if !served {
                continue;
            }
            if faulty && rng.chance(50) {
                // Lost on its way: the partition never saw it; the supervisor sends it again.
                fault(&mut report, "lost_leg_request");
                continue;
            }
            now_ns += 1;
            let result =
                engines[partition as usize].create_transfers(std::slice::from_ref(&leg), now_ns)[0];
            if faulty && rng.chance(50) {
                fault(&mut report, "lost_leg_answer");
                continue;
            }
            if faulty && rng.chance(20) {
                // A takeover: the new owner's supervisor resumes from the first leg.
                fault(&mut report, "supervisor_restart");
                cross.machine = CrossTransfer::new(cross.asked, partitions).expect("crossing");
                continue;
            }
            cross.machine.on_result(result);
        }
    }

    // Liveness: the faults stopped long enough ago for every lease to settle.
    let live: Vec<NodeId> = nodes
        .iter()
        .filter(|x| matches!(x.state, NodeState::Running) && !x.leaving)
        .map(|x| x.id.clone())
        .collect();
    for row in &leases {
        if row.owner.as_ref() != owner_of(row.partition, &live) {
            report.violations.push(format!(
                "partition {} is owned by {:?}, not by {:?}, after the faults stopped",
                row.partition,
                row.owner,
                owner_of(row.partition, &live)
            ));
        }
    }
    // Every cross-partition transfer ended, moved once or not at all, and clearing nets to 0.
    let mut sent: BTreeMap<u128, u128> = BTreeMap::new();
    for cross in &crosses {
        match cross.machine.phase {
            Phase::Done(CrossOutcome::Posted) => {
                report.cross_posted += 1;
                *sent.entry(cross.asked.debit_account_id).or_default() += cross.asked.amount;
            }
            Phase::Done(CrossOutcome::Refused { .. }) => report.cross_refused += 1,
            other => report
                .violations
                .push(format!("transfer {} ended at {other:?}", cross.asked.id)),
        }
    }
    let clearing: Vec<Account> = engines
        .iter()
        .enumerate()
        .map(|(p, engine)| {
            engine
                .account(clearing_account_id(LEDGER, p as u32))
                .expect("a clearing account")
        })
        .collect();
    for (ledger, (net, pending)) in clearing_totals(&clearing) {
        if net != 0 || pending != 0 {
            report.violations.push(format!(
                "ledger {ledger}: clearing accounts net to {net} with {pending} pending, not 0"
            ));
        }
    }
    for &wallet in &wallets {
        let p = partition_of(wallet, partitions) as usize;
        let account = engines[p].account(wallet).expect("a wallet");
        let expected = sent.get(&wallet).copied().unwrap_or(0);
        // Each wallet was funded once (a posted debit of the funding account, not its own).
        if account.debits_posted != expected || account.debits_pending != 0 {
            report.violations.push(format!(
                "wallet {wallet}: debited {} (pending {}), its posted transfers sent {expected}",
                account.debits_posted, account.debits_pending
            ));
        }
    }
    report
}

/// The lease table's compare-and-set rules (as `kizo_persistence::leases` writes them).
fn apply(leases: &mut [LeaseRow], me: &NodeId, action: &LeaseAction, now_ms: u64) -> Option<u64> {
    match *action {
        LeaseAction::Acquire { partition, epoch } => {
            let row = &mut leases[partition as usize];
            let takeable =
                row.owner.is_none() || row.owner.as_ref() == Some(me) || row.expires_ms <= now_ms;
            (row.epoch == epoch && takeable).then(|| {
                row.epoch += 1;
                row.owner = Some(me.clone());
                row.expires_ms = now_ms + POLICY.length_ms;
                row.epoch
            })
        }
        LeaseAction::Renew { partition, epoch } => {
            let row = &mut leases[partition as usize];
            (row.epoch == epoch && row.owner.as_ref() == Some(me) && row.expires_ms > now_ms).then(
                || {
                    row.expires_ms = now_ms + POLICY.length_ms;
                    row.epoch
                },
            )
        }
        LeaseAction::Release { partition, epoch } => {
            let row = &mut leases[partition as usize];
            (row.epoch == epoch && row.owner.as_ref() == Some(me)).then(|| {
                row.owner = None;
                row.expires_ms = now_ms;
                row.epoch
            })
        }
        LeaseAction::Stop { .. } => None,
    }
}

/// One ledger per partition, with its clearing account, a funding account and funded wallets.
fn ledgers(partitions: PartitionCount) -> (Vec<LocalEngine>, Vec<u128>) {
    let mut engines: Vec<LocalEngine> = partitions.all().map(|_| LocalEngine::new(2)).collect();
    let wallets: Vec<u128> = (1..=24u128).map(|i| i * 1_000_003).collect();
    let mut now_ns = 1u64;
    for (p, engine) in engines.iter_mut().enumerate() {
        let funding = 900_000_000 + p as u128;
        let mut accounts = vec![
            Account::new(clearing_account_id(LEDGER, p as u32), LEDGER, 9),
            Account::new(funding, LEDGER, 9),
        ];
        let mine: Vec<u128> = wallets
            .iter()
            .copied()
            .filter(|&w| partition_of(w, partitions) as usize == p)
            .collect();
        accounts.extend(mine.iter().map(|&w| Account {
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            ..Account::new(w, LEDGER, 1)
        }));
        now_ns += 1;
        engine.create_accounts(&accounts, now_ns);
        let funded: Vec<Transfer> = mine
            .iter()
            .map(|&w| Transfer::new(w + 1, funding, w, 1_000, LEDGER, 9))
            .collect();
        now_ns += 1;
        engine.create_transfers(&funded, now_ns);
    }
    (engines, wallets)
}

/// Transfers between wallets of different partitions, some for more than a wallet holds.
fn workload(rng: &mut Rng, partitions: PartitionCount, wallets: &[u128]) -> Vec<Cross> {
    let mut crosses = Vec::new();
    for id in 1..=rng.between(10, 40) as u128 {
        let from = *rng.pick(wallets);
        let to = *rng.pick(wallets);
        if partition_of(from, partitions) == partition_of(to, partitions) {
            continue;
        }
        let asked = Transfer::new(
            1_000_000_000 + id,
            from,
            to,
            u128::from(rng.between(1, 700)),
            LEDGER,
            1,
        );
        let machine = CrossTransfer::new(asked, partitions).expect("crossing");
        crosses.push(Cross { asked, machine });
    }
    crosses
}
