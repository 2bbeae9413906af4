//! A cluster of real `kizo-gateway` processes on one PostgreSQL, serving wallet payments
//! between partitions (the load generator's failover run drives them):
//! - one node is killed with SIGKILL under load: its partitions are served again within
//!   10 s, and no acknowledged payment is lost or doubled;
//! - one node is stopped (SIGSTOP) past its lease, then let go on (SIGCONT): the others
//!   served its partitions meanwhile, and it rejoins and serves again;
//! - every node is restarted in turn (SIGTERM) under load: no request fails except with a
//!   retryable 503.
//!
//! After each, every payment is made final (sent again with its key, or waited for), read
//! back, each wallet's balance checked against the answers, and the clearing accounts net to
//! zero. Leases last 2 s here (5 s by default) to keep the test short.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{GatewayProcess, TestStore, ADMIN_KEY, API_KEY};
use kizo_loadgen::failover::{self, Audit, Keys, Live, User};

const PARTITIONS: u32 = 8;
const USERS: usize = 12;
const FUNDING: u64 = 100_000;

fn keys() -> Keys {
    Keys {
        api: API_KEY.into(),
        admin: ADMIN_KEY.into(),
    }
}

/// Node `id`, keeping its partitions' snapshots in `snapshots` (every node's: a takeover
/// starts from the old owner's newest).
async fn node(store: &TestStore, id: &str, snapshots: &std::path::Path) -> GatewayProcess {
    GatewayProcess::start(
        store,
        &[
            "--node-id",
            id,
            "--partitions",
            &PARTITIONS.to_string(),
            "--lease-length",
            "2s",
            "--lease-renew-every",
            "500ms",
            "--shards",
            "1",
            "--worker-threads",
            "2",
            "--snapshot-dir",
            snapshots.to_str().unwrap(),
            "--snapshot-every-records",
            "30",
            "--jwt-secret",
            "cluster-test-jwt-secret-0123456789abcdef",
            "--password-pepper",
            "cluster-test-pepper-0123456789abcdef0123",
            "--admin-api-key",
            ADMIN_KEY,
            "--auth-rate-per-address",
            "100000",
            "--drain-timeout",
            "5s",
        ],
    )
    .await
}

async fn wait_owned(base: &str, nodes: &[&str], within: Duration) -> Duration {
    failover::wait_owned(base, &keys(), nodes, within)
        .await
        .unwrap()
}

/// Three nodes sharing the partitions, and their users, each funded.
async fn cluster_with_users(
    store: &TestStore,
    snapshots: &std::path::Path,
) -> (Vec<GatewayProcess>, Arc<Vec<User>>) {
    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        nodes.push(node(store, id, snapshots).await);
    }
    wait_owned(&nodes[0].base, &["n1", "n2", "n3"], Duration::from_secs(30)).await;
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let users = failover::users(&bases, &keys(), USERS, FUNDING, "test")
        .await
        .unwrap();
    (nodes, Arc::new(users))
}

/// Load from `clients` clients on the live nodes while `during` runs; every payment made
/// final, checked, and the clearing accounts found at zero.
async fn under_load<F: std::future::Future<Output = ()>>(
    users: &Arc<Vec<User>>,
    live: &Live,
    clients: usize,
    during: F,
) -> Vec<failover::Payment> {
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(failover::run_load(
        users.clone(),
        live.clone(),
        clients,
        stop.clone(),
    ));
    during.await;
    stop.store(true, Ordering::Relaxed);
    let load = load.await.unwrap();
    let failures = load.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{failures:?}");
    failover::settle(users, live, &load).await.unwrap()
}

async fn check(users: &[User], base: &str, payments: &[failover::Payment]) -> Audit {
    let audit = failover::audit(users, base, payments, FUNDING)
        .await
        .unwrap();
    assert_eq!((audit.lost, audit.doubled), (0, 0), "{audit:?}");
    let (net, pending) = failover::clearing(base, &keys(), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!((net, pending), (0, 0), "the clearing accounts net to zero");
    audit
}

/// One cluster at a time: two of three nodes each, with their restarts, would ask the test
/// database for more connections than it serves (a node refused one fails to start).
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_and_a_paused_one_lose_and_double_nothing() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let store = TestStore::postgres("cluster_nodes_kill");
    let snapshots = tempfile::tempdir().unwrap();
    let (mut nodes, users) = cluster_with_users(&store, snapshots.path()).await;
    let live: Live = Arc::new(Mutex::new(nodes.iter().map(|n| n.base.clone()).collect()));

    // SIGKILL n2 under load.
    let killed = nodes.remove(1);
    let mut takeover = Duration::ZERO;
    let payments = under_load(&users, &live, 8, async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        live.lock().unwrap().retain(|base| base != &killed.base);
        killed.kill().await;
        takeover = wait_owned(&nodes[0].base, &["n1", "n3"], Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await;
    let audit = check(&users, &nodes[0].base, &payments).await;
    assert!(audit.acked > 50, "only {} payments posted", audit.acked);
    eprintln!("kill: {audit:?}, takeover {takeover:?}");
    // The partitions taken over started from the killed node's snapshots and their logs after.
    let mut from_snapshots = 0;
    for node in &nodes {
        let report = failover::report(&node.base, &keys()).await.unwrap();
        from_snapshots += report["served_here"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["snapshot_lsn"].as_u64().unwrap() > 0)
            .count();
    }
    assert!(from_snapshots > 0, "no partition started from a snapshot");

    // SIGSTOP n3 past its lease: n1 serves everything; SIGCONT: n3 rejoins and serves again.
    let mut all = payments;
    nodes[1].signal(libc::SIGSTOP);
    live.lock().unwrap().retain(|base| base != &nodes[1].base);
    wait_owned(&nodes[0].base, &["n1"], Duration::from_secs(10)).await;
    all.extend(
        under_load(&users, &live, 4, async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            nodes[1].signal(libc::SIGCONT);
            live.lock().unwrap().push(nodes[1].base.clone());
            wait_owned(&nodes[0].base, &["n1", "n3"], Duration::from_secs(15)).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        })
        .await,
    );
    let report = failover::report(&nodes[1].base, &keys()).await.unwrap();
    assert!(
        !report["served_here"].as_array().unwrap().is_empty(),
        "n3 serves partitions again: {report}"
    );
    check(&users, &nodes[1].base, &all).await;
    for node in nodes {
        node.kill().await;
    }
    store.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_fails_nothing_but_retryable_503s() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let store = TestStore::postgres("cluster_nodes_rolling");
    let snapshots = tempfile::tempdir().unwrap();
    let (nodes, users) = cluster_with_users(&store, snapshots.path()).await;
    let live: Live = Arc::new(Mutex::new(nodes.iter().map(|n| n.base.clone()).collect()));
    let nodes = Mutex::new(nodes);
    let payments = under_load(&users, &live, 6, async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (index, id) in ["n1", "n2", "n3"].into_iter().enumerate() {
            let stopping = nodes.lock().unwrap().remove(index);
            live.lock().unwrap().retain(|base| base != &stopping.base);
            let status = stopping.terminate().await;
            assert!(status.success(), "{id} stopped cleanly: {status}");
            let started = node(&store, id, snapshots.path()).await;
            live.lock().unwrap().push(started.base.clone());
            let observer = started.base.clone();
            nodes.lock().unwrap().insert(index, started);
            // A rejoined node's share comes back as the others hand it over (no bound in the
            // issue; the one under test is that no request fails but with a retryable 503).
            // 15 s was passed once with every test of a CI run on the same two cores.
            wait_owned(&observer, &["n1", "n2", "n3"], Duration::from_secs(30)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    })
    .await;
    let nodes = nodes.into_inner().unwrap();
    check(&users, &nodes[0].base, &payments).await;
    for node in nodes {
        node.kill().await;
    }
    store.clean().await;
}
