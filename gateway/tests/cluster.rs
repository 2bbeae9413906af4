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
use kizo_gateway::cluster::{
    ClusterSettings, HostEvent, LegError, PartitionEngines, PartitionHost,
};
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
            router: false,
        },
        PartitionEngines::bare(kizo_testkit::engine_config()),
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

/// Routes legs to whichever of the test's nodes serves the partition.
struct Hosts<'a>(Vec<&'a PartitionHost>);

impl kizo_gateway::cluster::LegRouter for Hosts<'_> {
    fn create(
        &self,
        partition: u32,
        accounts: Vec<Account>,
        leg: Transfer,
    ) -> kizo_gateway::cluster::LegFuture<'_> {
        Box::pin(async move {
            let engine = self
                .0
                .iter()
                .find_map(|h| h.engine(partition))
                .ok_or(LegError::NotServed(partition))?;
            engine.create_accounts(accounts).await?;
            Ok(engine.create_transfers(vec![leg]).await?[0])
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_cross_partitions_once_and_resume_after_a_takeover() {
    use kizo_cluster::legs::{clearing_totals, CrossOutcome, CrossTransfer, Leg, Phase};
    use kizo_engine::AccountFlags;
    use kizo_gateway::cluster::{CrossPartition, LegRouter};

    let store = TestStore::postgres("cluster_cross");
    let partitions = PartitionCount::new(PARTITIONS).unwrap();
    let (a, b) = (host(&store, "a").await, host(&store, "b").await);
    settled(&[&a, &b], Duration::from_secs(10)).await;
    let table = LeaseStore::open(&store.config, partitions).await.unwrap();
    let cross = CrossPartition::new(table.cross_transfers(), partitions);

    // A sender in partition 0 (funded there), receivers elsewhere.
    let in_partition = |p: u32, skip: usize| {
        (1u128..)
            .filter(|&id| partition_of(id, partitions) == p)
            .nth(skip)
            .unwrap()
    };
    let (sender, funding) = (in_partition(0, 0), in_partition(0, 1));
    let receivers = [in_partition(1, 0), in_partition(2, 0), in_partition(3, 0)];
    let limited = Account {
        flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        ..Account::new(sender, 840, 1)
    };
    let engine0 = serving(&[&a, &b], sender);
    engine0
        .create_accounts(vec![limited, Account::new(funding, 840, 1)])
        .await
        .unwrap();
    engine0
        .create_transfers(vec![Transfer::new(1, funding, sender, 100, 840, 1)])
        .await
        .unwrap();
    for &receiver in &receivers {
        serving(&[&a, &b], receiver)
            .create_accounts(vec![Account::new(receiver, 840, 1)])
            .await
            .unwrap();
    }
    let router = Hosts(vec![&a, &b]);

    // Posted once, even when asked again.
    let pay = Transfer::new(1_000, sender, receivers[0], 30, 840, 1);
    let done = cross.transfer(&router, pay).await.unwrap().unwrap();
    assert_eq!(done.phase, Phase::Done(CrossOutcome::Posted));
    let again = cross.transfer(&router, pay).await.unwrap().unwrap();
    assert_eq!(again.phase, Phase::Done(CrossOutcome::Posted));
    assert_eq!(
        cross
            .transfer(&router, Transfer { amount: 31, ..pay })
            .await
            .unwrap(),
        Err(CreateTransferResult::ExistsWithDifferentAmount)
    );
    // Refused before anything is stored: a field no ledger takes.
    assert_eq!(
        cross
            .transfer(
                &router,
                Transfer {
                    amount: 0,
                    id: 1_003,
                    ..pay
                }
            )
            .await
            .unwrap(),
        Err(CreateTransferResult::AmountMustNotBeZero)
    );
    // Refused at the hold: more than the sender holds.
    let too_much = Transfer::new(1_001, sender, receivers[1], 500, 840, 1);
    let refused = cross.transfer(&router, too_much).await.unwrap().unwrap();
    assert_eq!(
        refused.phase,
        Phase::Done(CrossOutcome::Refused {
            leg: Leg::Hold,
            result: CreateTransferResult::ExceedsCredits
        })
    );

    // A node dies after the hold: the transfer's row says `credit`; the node that takes the
    // source partition over resumes it when it hears it acquired the partition.
    let interrupted = Transfer::new(1_002, sender, receivers[2], 20, 840, 1);
    let mut machine = CrossTransfer::new(interrupted, partitions).unwrap();
    let store_rows = table.cross_transfers();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    store_rows.create(&machine, now_ms).await.unwrap();
    let (partition, hold) = machine.next_leg().unwrap();
    let result = router
        .create(
            partition,
            vec![kizo_cluster::legs::clearing_account(840, partition)],
            hold,
        )
        .await
        .unwrap();
    let from = machine.phase;
    machine.on_result(result);
    store_rows.save(from, &machine, now_ms).await.unwrap();
    assert_eq!(machine.phase, Phase::Credit);
    let (source_owner, survivor) = if a.engine(0).is_some() {
        (a, b)
    } else {
        (b, a)
    };
    let mut events = survivor.events();
    source_owner.halt().await;
    let acquired = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match events.recv().await.unwrap() {
                HostEvent::Acquired {
                    partition: 0,
                    epoch,
                } => return epoch,
                _ => continue,
            }
        }
    })
    .await
    .expect("the survivor takes the source partition");
    assert!(acquired >= 2, "a takeover: a new epoch");
    settled(&[&survivor], Duration::from_secs(15)).await;
    let router = Hosts(vec![&survivor]);
    // A driver may still be at work on what was touched within the idle time: left alone.
    assert_eq!(
        cross
            .resume(&router, 0, Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(cross.resume(&router, 0, Duration::ZERO).await.unwrap(), 1);
    assert_eq!(
        cross.resume(&router, 0, Duration::ZERO).await.unwrap(),
        0,
        "nothing left"
    );
    let resumed = store_rows.load(interrupted.id).await.unwrap().unwrap();
    assert_eq!(resumed.phase, Phase::Done(CrossOutcome::Posted));

    // The books, as the survivor recovered them from every partition's log: the sender paid
    // 30 + 20 once; the receivers got them; clearing nets to 0.
    let sender_now = serving(&[&survivor], sender)
        .lookup_accounts(vec![sender])
        .await
        .unwrap();
    assert_eq!(
        (sender_now[0].debits_posted, sender_now[0].debits_pending),
        (50, 0)
    );
    for (receiver, expected) in receivers.iter().zip([30, 0, 20]) {
        let found = serving(&[&survivor], *receiver)
            .lookup_accounts(vec![*receiver])
            .await
            .unwrap();
        assert_eq!(found[0].credits_posted, expected, "receiver {receiver}");
    }
    let mut clearing = Vec::new();
    for p in 0..PARTITIONS {
        let id = kizo_cluster::legs::clearing_account_id(840, p);
        let engine = survivor.engine(p).unwrap();
        clearing.extend(engine.lookup_accounts(vec![id]).await.unwrap());
    }
    assert_eq!(clearing_totals(&clearing)[&840], (0, 0));
    table.close().await;
    survivor.halt().await;
    store.clean().await;
}
