//! Partition leases on real PostgreSQL, driven by `kizo_cluster::lease::plan` as nodes will
//! drive them: the nodes share the partitions, a dead node's partitions are taken once its
//! leases expire (never before), a paused owner's stale epoch is refused, and a node that
//! leaves hands over at once. Times are the database's.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kizo_cluster::lease::{held_after, plan, LeaseAction, LeasePolicy};
use kizo_cluster::{owner_of, NodeId, PartitionCount};
use kizo_persistence::leases::{LeaseStore, LeaseStoreError};
use kizo_testkit::TestStore;

const POLICY: LeasePolicy = LeasePolicy {
    length_ms: 1_200,
    renew_every_ms: 300,
};
/// A node whose heartbeat is older than this is not live.
const NODE_TIMEOUT_MS: u64 = 1_000;
const PARTITIONS: u32 = 6;

struct Node {
    id: NodeId,
    held: BTreeMap<u32, u64>,
    joined: bool,
}

impl Node {
    fn new(name: &str) -> Node {
        Node {
            id: NodeId::new(name).unwrap(),
            held: BTreeMap::new(),
            joined: false,
        }
    }

    /// One round: a heartbeat, the view, the plan, and each action applied.
    async fn round(&mut self, store: &LeaseStore) {
        if self.joined {
            store.heartbeat(&self.id, "127.0.0.1:1").await.unwrap();
        } else {
            store.join(&self.id, "127.0.0.1:1").await.unwrap();
            self.joined = true;
        }
        let view = store.view(NODE_TIMEOUT_MS).await.unwrap();
        let actions = plan(
            &self.id,
            &view.live,
            &view.leases,
            &self.held,
            view.now_ms,
            POLICY,
        );
        for action in actions {
            let applied = store.apply(&self.id, &action, POLICY).await.unwrap();
            held_after(&mut self.held, &action, applied);
        }
    }
}

/// Every partition's stored owner and epoch.
async fn owners(store: &LeaseStore) -> Vec<(Option<NodeId>, u64)> {
    let view = store.view(NODE_TIMEOUT_MS).await.unwrap();
    view.leases
        .into_iter()
        .map(|l| (l.owner, l.epoch))
        .collect()
}

/// Rounds of `nodes` every 100 ms until `done` holds (true) or `limit` passes (false).
async fn rounds_until(
    store: &LeaseStore,
    nodes: &mut [&mut Node],
    limit: Duration,
    done: impl Fn(&[(Option<NodeId>, u64)]) -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        for node in nodes.iter_mut() {
            node.round(store).await;
        }
        if done(&owners(store).await) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test]
async fn leases_move_only_as_the_rules_say() {
    let store = TestStore::postgres("leases");
    let partitions = PartitionCount::new(PARTITIONS).unwrap();
    let leases = LeaseStore::open(&store.config, partitions).await.unwrap();
    // The count is fixed by the first node; the embedded store has no cluster.
    assert!(matches!(
        LeaseStore::open(&store.config, PartitionCount::new(7).unwrap()).await,
        Err(LeaseStoreError::PartitionCountChanged {
            stored: 6,
            asked: 7
        })
    ));
    assert!(matches!(
        LeaseStore::open(&TestStore::embedded().config, partitions).await,
        Err(LeaseStoreError::NotPostgres)
    ));

    let (mut a, mut b, mut c) = (Node::new("a"), Node::new("b"), Node::new("c"));
    let all = [a.id.clone(), b.id.clone(), c.id.clone()];
    let shared = |owners: &[(Option<NodeId>, u64)], live: &[NodeId]| {
        owners
            .iter()
            .enumerate()
            .all(|(p, (owner, _))| owner.as_ref() == owner_of(p as u32, live))
    };
    let took = rounds_until(
        &leases,
        &mut [&mut a, &mut b, &mut c],
        Duration::from_secs(10),
        |o| shared(o, &all),
    )
    .await;
    assert!(took.is_some(), "the nodes share the partitions");
    // Kept by renewals, never re-acquired: the epochs stay.
    let settled = owners(&leases).await;
    rounds_until(
        &leases,
        &mut [&mut a, &mut b, &mut c],
        Duration::from_millis(2_000),
        |_| false,
    )
    .await;
    assert_eq!(owners(&leases).await, settled);

    // "a" dies (no more rounds, no heartbeat). Its partitions wait for its leases to expire.
    let theirs: Vec<u32> = (0..PARTITIONS)
        .filter(|&p| owner_of(p, &all) == Some(&a.id))
        .collect();
    assert!(!theirs.is_empty());
    let rest = [b.id.clone(), c.id.clone()];
    let taken = rounds_until(
        &leases,
        &mut [&mut b, &mut c],
        Duration::from_secs(10),
        |o| shared(o, &rest),
    )
    .await
    .expect("its partitions are taken");
    assert!(
        taken >= Duration::from_millis(POLICY.length_ms - POLICY.renew_every_ms - 200),
        "not before the lease could have expired: {taken:?}"
    );
    let now = owners(&leases).await;
    for &p in &theirs {
        assert_eq!(now[p as usize].1, settled[p as usize].1 + 1, "a new epoch");
    }
    // "a" wakes up (it was paused): its epoch is stale, so it can renew nothing, and its
    // first round stops what it believed it held.
    let (p, stale) = a
        .held
        .iter()
        .next()
        .map(|(p, e)| (*p, *e))
        .expect("it believes it holds some");
    let renewed = leases
        .apply(
            &a.id,
            &LeaseAction::Renew {
                partition: p,
                epoch: stale,
            },
            POLICY,
        )
        .await
        .unwrap();
    assert_eq!(renewed, None, "fenced");
    // The paused node comes back and gets its share again (through "b" and "c" releasing).
    let back = rounds_until(
        &leases,
        &mut [&mut a, &mut b, &mut c],
        Duration::from_secs(10),
        |o| shared(o, &all),
    )
    .await;
    assert!(back.is_some(), "{:?}", owners(&leases).await);
    // "b" leaves gracefully: it releases its partitions and the others take them well before
    // a lease would have expired.
    leases.leave(&b.id).await.unwrap();
    let remaining = [a.id.clone(), c.id.clone()];
    let handed = rounds_until(
        &leases,
        &mut [&mut a, &mut b, &mut c],
        Duration::from_secs(10),
        |o| shared(o, &remaining),
    )
    .await
    .expect("handed over");
    assert!(
        handed < Duration::from_millis(POLICY.length_ms),
        "without waiting for expiry: {handed:?}"
    );
    assert!(b.held.is_empty());
    leases.close().await;
    store.clean().await;
}

/// A partition's log takes appends only under its current epoch: once another node acquired
/// it, a former owner still appending (paused, cut off) writes nothing, and every append that
/// was acknowledged before is in the log the new owner reads.
#[tokio::test]
async fn appends_are_fenced_by_the_epoch() {
    use kizo_persistence::StoreError;

    let store = TestStore::postgres("fenced_appends");
    let leases = LeaseStore::open(&store.config, PartitionCount::new(2).unwrap())
        .await
        .unwrap();
    let (a, b) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
    let first = leases
        .apply(
            &a,
            &LeaseAction::Acquire {
                partition: 0,
                epoch: 0,
            },
            POLICY,
        )
        .await
        .unwrap();
    assert_eq!(first, Some(1));
    let mut at_one = leases.open_stream(0, 1).await.unwrap().appender();
    at_one.append(1, 1, b"one").await.unwrap();
    assert_eq!(
        at_one.append(1, 1, b"again").await,
        Err(StoreError::Conflict(1))
    );
    // No stream opens at an epoch the lease is not at.
    assert!(matches!(
        leases.open_stream(0, 2).await,
        Err(StoreError::Superseded(_))
    ));
    // A partition never acquired is at epoch 0; its stream is its own.
    let other = leases.open_stream(1, 0).await.unwrap();
    other.appender().append(1, 1, b"other").await.unwrap();
    assert_eq!(other.last_lsn().await.unwrap(), 1);

    // "a" keeps appending at epoch 1 while "b" takes the partition over.
    let appended = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let appender = {
        let (stream, appended) = (leases.open_stream(0, 1).await.unwrap(), appended.clone());
        tokio::spawn(async move {
            let mut appender = stream.appender();
            let mut durable = Vec::new();
            for lsn in 2..400u64 {
                match appender.append(lsn, lsn, b"a").await {
                    Ok(()) => {
                        durable.push(lsn);
                        appended.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(StoreError::Superseded(_)) => {}
                    Err(other) => panic!("{other}"),
                }
            }
            durable
        })
    };
    while appended.load(std::sync::atomic::Ordering::Relaxed) < 5 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let released = leases
        .apply(
            &a,
            &LeaseAction::Release {
                partition: 0,
                epoch: 1,
            },
            POLICY,
        )
        .await
        .unwrap();
    assert_eq!(released, Some(1));
    let taken = leases
        .apply(
            &b,
            &LeaseAction::Acquire {
                partition: 0,
                epoch: 1,
            },
            POLICY,
        )
        .await
        .unwrap();
    assert_eq!(taken, Some(2));
    // The new owner raises the partition's fence as it opens its stream, then reads.
    let theirs = leases.open_stream(0, 2).await.unwrap();
    assert!(
        matches!(
            leases.open_stream(0, 1).await,
            Err(StoreError::Superseded(_))
        ),
        "the old epoch opens no stream"
    );
    let frames = |stream: kizo_persistence::LogStore| async move {
        stream
            .read_frames(0, u64::MAX >> 1, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.first_lsn)
            .collect::<Vec<u64>>()
    };
    let at_takeover = frames(theirs.clone()).await;
    let durable = appender.await.unwrap();
    assert!(
        !durable.is_empty() && durable.len() < 398,
        "the takeover came in the middle: {} appended",
        durable.len()
    );
    let after = frames(theirs.clone()).await;
    assert_eq!(
        at_takeover, after,
        "no append of the old epoch after the takeover"
    );
    let mut expected = vec![1];
    expected.extend(&durable);
    assert_eq!(after, expected, "every acknowledged append, and only those");
    // The new owner appends at its epoch, after what it read.
    let next = theirs.last_lsn().await.unwrap() + 1;
    theirs.appender().append(next, next, b"b").await.unwrap();
    leases.close().await;
    store.clean().await;
}

/// A partition moves between nodes as its log: an engine on node "a" writes the partition's
/// stream under epoch 1; "a" pauses past its lease; "b" acquires the partition (epoch 2),
/// starts an engine on the same stream and recovers every acknowledged transfer; and "a",
/// when it wakes, can no longer commit anything.
#[tokio::test]
async fn a_partition_moves_to_another_node_through_its_fenced_log() {
    use kizo_engine::{Account, Engine, EngineError, Transfer};
    use kizo_persistence::{DurableWal, WalConfig};

    let store = TestStore::postgres("partition_moves");
    let leases = LeaseStore::open(&store.config, PartitionCount::new(2).unwrap())
        .await
        .unwrap();
    let (a, b) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
    let acquire = |node: NodeId, epoch: u64| {
        let leases = leases.clone();
        async move {
            leases
                .apply(
                    &node,
                    &LeaseAction::Acquire {
                        partition: 0,
                        epoch,
                    },
                    POLICY,
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(acquire(a.clone(), 0).await, Some(1));
    let wal_a = DurableWal::open(
        leases.open_stream(0, 1).await.unwrap(),
        WalConfig::default(),
    )
    .await
    .unwrap();
    let engine_a = Engine::start(kizo_testkit::engine_config(), wal_a)
        .await
        .unwrap();
    engine_a
        .create_accounts(vec![Account::new(1, 840, 1), Account::new(2, 840, 1)])
        .await
        .unwrap();
    for id in 1..=20u128 {
        engine_a
            .create_transfers(vec![Transfer::new(id, 1, 2, 5, 840, 1)])
            .await
            .unwrap();
    }
    // "a" pauses; its lease runs out; "b" takes the partition.
    assert_eq!(
        acquire(b.clone(), 1).await,
        None,
        "not while a's lease runs"
    );
    tokio::time::sleep(Duration::from_millis(POLICY.length_ms + 100)).await;
    assert_eq!(acquire(b.clone(), 1).await, Some(2));
    let wal_b = DurableWal::open(
        leases.open_stream(0, 2).await.unwrap(),
        WalConfig::default(),
    )
    .await
    .unwrap();
    let engine_b = Engine::start(kizo_testkit::engine_config(), wal_b)
        .await
        .unwrap();
    let accounts = engine_b.lookup_accounts(vec![1, 2]).await.unwrap();
    assert_eq!(
        accounts[0].debits_posted, 100,
        "every acknowledged transfer"
    );
    assert_eq!(accounts[1].credits_posted, 100);
    // "a" wakes and tries to go on: fenced, nothing commits.
    match engine_a
        .create_transfers(vec![Transfer::new(21, 1, 2, 5, 840, 1)])
        .await
    {
        Err(EngineError::Unavailable(_)) => {}
        other => panic!("the former owner committed: {other:?}"),
    }
    // "b" serves on.
    let results = engine_b
        .create_transfers(vec![Transfer::new(21, 1, 2, 7, 840, 1)])
        .await
        .unwrap();
    assert_eq!(results[0], kizo_engine::CreateTransferResult::Created);
    let accounts = engine_b.lookup_accounts(vec![2]).await.unwrap();
    assert_eq!(accounts[0].credits_posted, 107);
    engine_a.shutdown().await;
    engine_b.shutdown().await;
    leases.close().await;
    store.clean().await;
}
