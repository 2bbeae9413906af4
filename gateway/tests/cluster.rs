//! Cluster nodes on one PostgreSQL database (issue 28, in progress): nodes share the
//! partitions through leases and serve each from its fenced log; a node that dies has its
//! partitions served again by the others once its leases expire, with every acknowledged
//! transfer; a node that leaves hands its partitions over without waiting for expiry.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::TestStore;
use kizo_cluster::lease::LeasePolicy;
use kizo_cluster::{owner_of, partition_of, NodeId, PartitionCount};
use kizo_engine::{Account, CreateTransferResult, Transfer};
use kizo_gateway::cluster::{ClusterSettings, PartitionHost};
use kizo_persistence::leases::LeaseStore;

const POLICY: LeasePolicy = LeasePolicy {
    length_ms: 3_000,
    renew_every_ms: 250,
};
const PARTITIONS: u32 = 4;

async fn host(store: &TestStore, name: &str) -> PartitionHost {
    let leases = LeaseStore::open(&store.config, PartitionCount::new(PARTITIONS).unwrap())
        .await
        .unwrap();
    PartitionHost::start(
        leases,
        ClusterSettings {
            node_id: NodeId::new(name).unwrap(),
            address: format!("{name}.invalid:1"),
            policy: POLICY,
            node_timeout: Duration::from_millis(1_000),
        },
        kizo_testkit::engine_config(),
    )
    .await
    .unwrap()
}

/// Waits until each partition is served by the one of `hosts` the rules choose among them;
/// how long it took.
async fn settled(hosts: &[&PartitionHost], limit: Duration) -> Duration {
    let started = Instant::now();
    let live: Vec<NodeId> = hosts.iter().map(|h| h.node_id().clone()).collect();
    loop {
        let mut servers: BTreeMap<u32, Vec<NodeId>> = BTreeMap::new();
        for host in hosts {
            for partition in host.held().into_keys() {
                servers
                    .entry(partition)
                    .or_default()
                    .push(host.node_id().clone());
            }
        }
        let as_chosen = (0..PARTITIONS).all(|p| {
            servers.get(&p).map(Vec::as_slice) == owner_of(p, &live).map(std::slice::from_ref)
        });
        if as_chosen {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not settled: {servers:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn serving(hosts: &[&PartitionHost], account: u128) -> kizo_engine::Engine {
    hosts
        .iter()
        .find_map(|h| h.engine_of(account))
        .expect("a node serves the account's partition")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_shared_moved_on_a_death_and_handed_over_on_a_leave() {
    let store = TestStore::postgres("cluster_hosts");
    let partitions = PartitionCount::new(PARTITIONS).unwrap();
    let (a, b) = (host(&store, "a").await, host(&store, "b").await);
    settled(&[&a, &b], Duration::from_secs(10)).await;
    assert!(!a.held().is_empty() && !b.held().is_empty(), "both serve");

    // Accounts in every partition; transfers inside each partition (the cross-partition
    // protocol is not wired yet).
    let accounts: Vec<u128> = (1..=40).collect();
    for &id in &accounts {
        let created = serving(&[&a, &b], id)
            .create_accounts(vec![Account::new(id, 840, 1)])
            .await
            .unwrap();
        assert_eq!(created[0], kizo_engine::CreateAccountResult::Created);
    }
    let mut credited: BTreeMap<u128, u128> = BTreeMap::new();
    let mut next_id = 1u128;
    for &from in &accounts {
        let Some(&to) = accounts.iter().find(|&&to| {
            to != from && partition_of(to, partitions) == partition_of(from, partitions)
        }) else {
            continue;
        };
        let result = serving(&[&a, &b], from)
            .create_transfers(vec![Transfer::new(next_id, from, to, 3, 840, 1)])
            .await
            .unwrap();
        assert_eq!(result[0], CreateTransferResult::Created);
        *credited.entry(to).or_default() += 3;
        next_id += 1;
    }

    // "a" dies: "b" serves everything once a's leases expire, with every transfer.
    let a_held = a.held();
    a.halt().await;
    let took = settled(&[&b], Duration::from_secs(15)).await;
    assert!(
        took >= Duration::from_millis(POLICY.length_ms / 2),
        "not before a's leases could expire: {took:?}"
    );
    for (&partition, &epoch) in &a_held {
        assert!(
            b.held()[&partition] > epoch,
            "a new epoch for partition {partition}"
        );
    }
    for (&account, &amount) in &credited {
        let found = serving(&[&b], account)
            .lookup_accounts(vec![account])
            .await
            .unwrap();
        assert_eq!(found[0].credits_posted, amount, "account {account}");
    }

    // "c" joins and takes a share; then "b" leaves and hands everything to "c" at once.
    let c = host(&store, "c").await;
    settled(&[&b, &c], Duration::from_secs(10)).await;
    assert!(!c.held().is_empty());
    let table = LeaseStore::open(&store.config, partitions).await.unwrap();
    let before = table.view(1_000).await.unwrap();
    let b_expires: BTreeMap<u32, u64> = before
        .leases
        .iter()
        .filter(|l| l.owner.as_ref() == Some(b.node_id()))
        .map(|l| (l.partition, l.expires_ms))
        .collect();
    assert!(!b_expires.is_empty());
    b.leave(Duration::from_secs(10)).await;
    settled(&[&c], Duration::from_secs(10)).await;
    // "c" serves each of b's partitions before b's lease on it would have run out: b
    // released them.
    let after = table.view(1_000).await.unwrap();
    for (partition, expires) in b_expires {
        assert_eq!(
            after.leases[partition as usize].owner.as_ref(),
            Some(c.node_id())
        );
        assert!(
            after.now_ms < expires,
            "partition {partition}: handed over at {}, b's lease ran to {expires}",
            after.now_ms
        );
    }
    table.close().await;
    let found = serving(&[&c], accounts[0])
        .lookup_accounts(vec![accounts[0]])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    c.halt().await;
    store.clean().await;
}
