//! PostgreSQL failing under load: the connection cut (a proxy in between stops forwarding) or
//! the server killing our sessions. Requests fail fast with `unavailable` while it lasts; the
//! engine serves again as soon as the database is back; every acknowledged transfer is there
//! exactly once, and the ledger balances.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{accounts, transfer, Outcomes, TestStore};
use kizo_engine::{CreateTransferResult, Engine, EngineError, Transfer};
use kizo_persistence::{DurableWal, LogStore, StoreConfig, WalConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const WALLETS: u128 = 8;
const FUNDING: u128 = 1_000_000;

/// A TCP proxy to PostgreSQL that can cut every connection and refuse new ones.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (cut, connections) = (cut.clone(), connections.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is refused
                    }
                    let target = target.clone();
                    let forward = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    connections.lock().unwrap().push(forward);
                }
            }
        });
        Proxy {
            addr,
            cut,
            connections,
            accept,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// `url` with its host and port replaced by `addr`.
fn through(url: &str, addr: SocketAddr) -> String {
    let start = url
        .find('@')
        .map_or(url.find("://").unwrap() + 3, |at| at + 1);
    let end = url[start..]
        .find('/')
        .map_or(url.len(), |slash| start + slash);
    format!("{}{addr}{}", &url[..start], &url[end..])
}

fn target_of(url: &str) -> String {
    let start = url
        .find('@')
        .map_or(url.find("://").unwrap() + 3, |at| at + 1);
    let end = url[start..]
        .find('/')
        .map_or(url.len(), |slash| start + slash);
    let host = &url[start..end];
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    }
}

/// Clients send one transfer per call between the wallets until `stop`.
async fn clients(engine: &Engine, stop: Arc<AtomicBool>) -> Outcomes {
    let next_id = Arc::new(AtomicU64::new(1_000));
    let mut tasks = Vec::new();
    for client in 0..16u64 {
        let (engine, stop, next_id) = (engine.clone(), stop.clone(), next_id.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Outcomes::default();
            let mut seed = client * 7919 + 1;
            while !stop.load(Ordering::SeqCst) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let debit = 2 + u128::from(seed >> 33) % WALLETS;
                let credit = 2 + (debit - 2 + 1 + u128::from(seed >> 40) % (WALLETS - 1)) % WALLETS;
                let id = u128::from(next_id.fetch_add(1, Ordering::Relaxed));
                let t = transfer(id, debit, credit, 1 + u128::from(seed >> 50) % 5_000);
                let started = Instant::now();
                match engine.create_transfers(vec![t]).await {
                    Ok(results) if results[0] == CreateTransferResult::Created => {
                        outcomes.created.push(t)
                    }
                    Ok(_) => outcomes.refused.push(t),
                    Err(EngineError::Unavailable(_)) => {
                        outcomes.slowest_failure = outcomes.slowest_failure.max(started.elapsed());
                        outcomes.unavailable.push(t);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(other) => panic!("unexpected error: {other}"),
                }
            }
            outcomes
        }));
    }
    let mut all = Outcomes::default();
    for task in tasks {
        all.merge(task.await.unwrap());
    }
    all
}

/// Looks up what the clients attempted and every account, and checks them.
async fn check_ledger(engine: &Engine, outcomes: &Outcomes) {
    let attempted = outcomes.attempted_ids();
    let mut found = Vec::new();
    for chunk in attempted.chunks(8000) {
        found.extend(engine.lookup_transfers(chunk.to_vec()).await.unwrap());
    }
    let ledger = engine
        .lookup_accounts((1..=WALLETS + 1).collect())
        .await
        .unwrap();
    outcomes.check(&found, &ledger, FUNDING);
}

async fn start_engine(config: &StoreConfig) -> (Engine, Arc<DurableWal>) {
    let store = LogStore::open(config).await.unwrap();
    let wal = DurableWal::open(store, WalConfig::default()).await.unwrap();
    let engine = Engine::start(common::engine_config(), wal.clone())
        .await
        .unwrap();
    (engine, wal)
}

async fn fund(engine: &Engine) {
    engine.create_accounts(accounts(WALLETS)).await.unwrap();
    let funding: Vec<Transfer> = (2..=WALLETS + 1)
        .map(|wallet| transfer(100 + wallet, 1, wallet, FUNDING))
        .collect();
    let results = engine.create_transfers(funding).await.unwrap();
    assert!(results.iter().all(|r| *r == CreateTransferResult::Created));
}

/// Waits until a transfer goes through again after a fault.
async fn served_again(engine: &Engine, id: u128) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(results) = engine.create_transfers(vec![transfer(id, 1, 2, 1)]).await {
            assert_eq!(results[0], CreateTransferResult::Created);
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the engine did not recover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs clients for `before`, then `fault` (which ends when the database is back), then a
/// while longer; checks the ledger, restarts from the log and checks again.
async fn under_load<F: std::future::Future<Output = ()>>(
    store: &TestStore,
    engine: Engine,
    fault: F,
) -> Outcomes {
    fund(&engine).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (engine, stop) = (engine.clone(), stop.clone());
        async move { clients(&engine, stop).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    fault.await;
    let recovery = served_again(&engine, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut outcomes = load.await.unwrap();
    outcomes.created.push(transfer(1, 1, 2, 1));
    eprintln!(
        "created {}, refused {}, unavailable {}, slowest failure {:?}, served again after {:?}",
        outcomes.created.len(),
        outcomes.refused.len(),
        outcomes.unavailable.len(),
        outcomes.slowest_failure,
        recovery
    );
    check_ledger(&engine, &outcomes).await;
    let before = engine
        .lookup_accounts((1..=WALLETS + 1).collect())
        .await
        .unwrap();
    engine.shutdown().await;

    let (engine, _wal) = start_engine(&store.config).await;
    assert_eq!(
        engine
            .lookup_accounts((1..=WALLETS + 1).collect())
            .await
            .unwrap(),
        before
    );
    check_ledger(&engine, &outcomes).await;
    engine.shutdown().await;
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_fails_requests_fast_and_the_engine_serves_again() {
    let store = TestStore::postgres("outage");
    let StoreConfig::Postgres { url, .. } = &store.config else {
        unreachable!()
    };
    let proxy = Proxy::start(target_of(url)).await;
    let (engine, _wal) = start_engine(&store.with_url(through(url, proxy.addr))).await;
    let outcomes = under_load(&store, engine, async {
        proxy.cut();
        tokio::time::sleep(Duration::from_secs(2)).await;
        proxy.restore();
    })
    .await;
    assert!(!outcomes.unavailable.is_empty(), "the outage was felt");
    assert!(!outcomes.created.is_empty());
    assert!(
        outcomes.slowest_failure < Duration::from_secs(3),
        "requests fail fast during the outage: slowest {:?}",
        outcomes.slowest_failure
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_database_sessions_lose_nothing_and_double_nothing() {
    let store = TestStore::postgres("killed_sessions");
    let StoreConfig::Postgres { url, schema } = &store.config else {
        unreachable!()
    };
    let (engine, _wal) = start_engine(&store.config).await;
    let admin = sqlx::PgPool::connect(url).await.unwrap();
    let application = format!("kizo-{}", schema.as_deref().unwrap());
    let outcomes = under_load(&store, engine, async {
        for _ in 0..10 {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(&application)
            .execute(&admin)
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    })
    .await;
    assert!(!outcomes.created.is_empty());
    admin.close().await;
}
