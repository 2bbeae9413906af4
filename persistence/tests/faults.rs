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
use kizo_engine::{CreateTransferResult, Engine, EngineError, Transfer, Wal};
use kizo_persistence::{DurableWal, LogStore, StoreConfig, WalConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const WALLETS: u128 = 8;
const FUNDING: u128 = 1_000_000;

/// A TCP proxy to PostgreSQL that can cut every connection and refuse new ones, or swallow
/// the server's answers.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    swallow: Arc<AtomicBool>,
    /// Bytes of answers swallowed so far.
    swallowed: Arc<AtomicU64>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let swallow = Arc::new(AtomicBool::new(false));
        let swallowed = Arc::new(AtomicU64::new(0));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (cut, connections) = (cut.clone(), connections.clone());
            let (swallow, swallowed) = (swallow.clone(), swallowed.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is refused
                    }
                    let (target, swallow, swallowed) =
                        (target.clone(), swallow.clone(), swallowed.clone());
                    let forward = tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(target).await {
                            forward(client, server, swallow, swallowed).await;
                        }
                    });
                    connections.lock().unwrap().push(forward);
                }
            }
        });
        Proxy {
            addr,
            cut,
            swallow,
            swallowed,
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
        self.swallow.store(false, Ordering::SeqCst);
    }

    /// The server's answers on every connection are dropped from now on.
    fn swallow_answers(&self) {
        self.swallow.store(true, Ordering::SeqCst);
    }
}

/// Client to server as is; server to client unless `swallow` is set.
async fn forward(
    client: TcpStream,
    server: TcpStream,
    swallow: Arc<AtomicBool>,
    swallowed: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::io::copy(&mut client_read, &mut server_write);
    let downstream = async {
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            let n = server_read.read(&mut buffer).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            if swallow.load(Ordering::SeqCst) {
                swallowed.fetch_add(n as u64, Ordering::SeqCst);
            } else {
                client_write.write_all(&buffer[..n]).await?;
            }
        }
    };
    let _ = tokio::join!(upstream, downstream);
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
                let id = u128::from(next_id.fetch_add(1, Ordering::Relaxed));
                let t = kizo_testkit::next_load_transfer(&mut seed, id, WALLETS);
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

/// The database commits a frame but its answer never arrives: the writer must find out that
/// the frame is there. Whether the caller hears `created` (settled at once) or `unavailable`
/// (settled later), the transfer is in the ledger once, a retry answers `exists`, and the next
/// transfers go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_was_lost_is_found_not_lost_or_doubled() {
    let store = TestStore::postgres("lost_answer");
    let StoreConfig::Postgres { url, .. } = &store.config else {
        unreachable!()
    };
    let proxy = Proxy::start(target_of(url)).await;
    let (engine, wal) = start_engine(&store.with_url(through(url, proxy.addr))).await;
    fund(&engine).await;
    let lsn_before = wal.last_lsn();

    proxy.swallow_answers();
    let pending = tokio::spawn({
        let engine = engine.clone();
        async move { engine.create_transfers(vec![transfer(7, 2, 3, 123)]).await }
    });
    // The INSERT reaches the server and commits; its answer (sent after the commit) is dropped.
    let started = Instant::now();
    while proxy.swallowed.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the server never answered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!pending.is_finished(), "the answer was swallowed");
    proxy.cut(); // the connection breaks: the outcome is unknown
    proxy.restore();
    let first_answer = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("the writer settles or fails the unknown flush")
        .unwrap();
    match &first_answer {
        Ok(results) => assert_eq!(results[0], CreateTransferResult::Created),
        Err(error) => assert!(matches!(error, EngineError::Unavailable(_)), "{error}"),
    }
    served_again(&engine, 8).await;
    let retry = engine
        .create_transfers(vec![transfer(7, 2, 3, 123)])
        .await
        .unwrap();
    assert_eq!(
        retry[0],
        CreateTransferResult::Exists,
        "the commit had landed"
    );
    assert!(wal.last_lsn() > lsn_before + 1);
    let wallets = engine.lookup_accounts(vec![2, 3]).await.unwrap();
    assert_eq!(wallets[0].debits_posted, 123, "debited once");
    assert_eq!(wallets[1].credits_posted, FUNDING + 123, "credited once");
    engine.shutdown().await;
    eprintln!("first answer: {first_answer:?} (created: settled at once; unavailable: later)");
}
