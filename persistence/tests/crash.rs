//! SIGKILL under load: a real server process (`kizo-node`) serves many clients on a
//! durable store, is killed without warning, and is started again on the same store. Every
//! transfer it acknowledged must be there exactly once, the ledger must balance, and the read
//! models must catch up to the same balances (the projector was killed too). Runs a
//! few cycles per backend; `KIZO_CRASH_CYCLES=100` runs a hundred.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{transfer, Outcomes, TestStore};
use kizo_engine::{Account, AccountFlags, Transfer};
use kizo_persistence::StoreConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const WALLETS: u128 = 8;
const FUNDING: u128 = 1_000_000;
const CLIENTS: u64 = 16;

struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    async fn start(store: &TestStore) -> Node {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kizo-node"));
        command
            .env_remove("DATABASE_URL")
            .env_remove("KIZO_DATA_DIR")
            .env("KIZO_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        match &store.config {
            StoreConfig::Postgres { url, schema } => {
                command.env("DATABASE_URL", url);
                command.env("KIZO_PG_SCHEMA", schema.as_deref().unwrap());
            }
            StoreConfig::Embedded { dir } => {
                command.env("KIZO_DATA_DIR", dir);
            }
        }
        let mut child = command.spawn().expect("the node starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        let mut stdout = BufReader::new(stdout);
        tokio::time::timeout(Duration::from_secs(60), stdout.read_line(&mut line))
            .await
            .expect("the node recovers within a minute")
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Node { child, addr }
    }

    async fn kill(mut self) {
        self.child.start_kill().unwrap(); // SIGKILL
        self.child.wait().await.unwrap();
    }
}

struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let (reader, writer) = TcpStream::connect(addr).await?.into_split();
        Ok(Client {
            reader: BufReader::new(reader),
            writer,
        })
    }

    async fn request(&mut self, line: &str) -> std::io::Result<String> {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(answer.trim().to_string())
    }

    async fn lookup_transfers(&mut self, ids: &[u128]) -> Vec<Transfer> {
        let mut found = Vec::new();
        for chunk in ids.chunks(1000) {
            let line: Vec<String> = chunk.iter().map(u128::to_string).collect();
            let answer = self
                .request(&format!("lookup-transfers {}", line.join(" ")))
                .await
                .unwrap();
            for item in answer.split_whitespace() {
                let n: Vec<u128> = item.split(':').map(|x| x.parse().unwrap()).collect();
                found.push(transfer(n[0], n[1], n[2], n[3]));
            }
        }
        found
    }

    /// Every account, from the engine (`lookup-accounts`) or the read models (`read-accounts`).
    async fn accounts(&mut self, command: &str) -> Vec<Account> {
        let ids: Vec<String> = (1..=WALLETS + 1).map(|id| id.to_string()).collect();
        let answer = self
            .request(&format!("{command} {}", ids.join(" ")))
            .await
            .unwrap();
        assert!(!answer.starts_with("error"), "{answer}");
        answer
            .split_whitespace()
            .map(|item| {
                let n: Vec<u128> = item.split(':').map(|x| x.parse().unwrap()).collect();
                Account {
                    debits_posted: n[1],
                    credits_posted: n[2],
                    debits_pending: n[3],
                    credits_pending: n[4],
                    flags: AccountFlags(n[5] as u16),
                    ..Account::new(n[0], common::LEDGER, 1)
                }
            })
            .collect()
    }
}

async fn fund(addr: SocketAddr) {
    let mut client = Client::connect(addr).await.unwrap();
    let wallet_flags = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS.0;
    let accounts: Vec<String> = std::iter::once("1:0".to_string())
        .chain((2..=WALLETS + 1).map(|id| format!("{id}:{wallet_flags}")))
        .collect();
    let answer = client
        .request(&format!("accounts {}", accounts.join(" ")))
        .await
        .unwrap();
    assert!(answer.split(' ').all(|code| code == "created"), "{answer}");
    let funding: Vec<String> = (2..=WALLETS + 1)
        .map(|wallet| format!("{}:1:{wallet}:{FUNDING}", 100 + wallet))
        .collect();
    let answer = client
        .request(&format!("transfers {}", funding.join(" ")))
        .await
        .unwrap();
    assert!(answer.split(' ').all(|code| code == "created"), "{answer}");
}

/// Clients send transfers until the connection breaks (the node was killed).
async fn load(addr: SocketAddr, next_id: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> Outcomes {
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (next_id, stop) = (next_id.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Outcomes::default();
            let Ok(mut connection) = Client::connect(addr).await else {
                return outcomes;
            };
            let mut seed = next_id.load(Ordering::Relaxed) + client * 7919;
            while !stop.load(Ordering::SeqCst) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let debit = 2 + u128::from(seed >> 33) % WALLETS;
                let credit = 2 + (debit - 2 + 1 + u128::from(seed >> 40) % (WALLETS - 1)) % WALLETS;
                let id = u128::from(next_id.fetch_add(1, Ordering::Relaxed));
                let t = transfer(id, debit, credit, 1 + u128::from(seed >> 50) % 5_000);
                let line = format!("transfers {id}:{debit}:{credit}:{}", t.amount);
                match connection.request(&line).await {
                    Ok(answer) if answer == "created" => outcomes.created.push(t),
                    Ok(answer) if answer.starts_with("error") => outcomes.unavailable.push(t),
                    Ok(_) => outcomes.refused.push(t),
                    Err(_) => {
                        outcomes.unavailable.push(t);
                        break;
                    }
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

async fn killed_and_restarted(store: TestStore) {
    let cycles: u64 = std::env::var("KIZO_CRASH_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let mut node = Node::start(&store).await;
    fund(node.addr).await;
    let next_id = Arc::new(AtomicU64::new(1_000));
    let mut outcomes = Outcomes::default();
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = tokio::spawn(load(node.addr, next_id.clone(), stop.clone()));
        // Kill at a different moment each cycle.
        tokio::time::sleep(Duration::from_millis(300 + (cycle * 137) % 600)).await;
        node.kill().await;
        stop.store(true, Ordering::SeqCst);
        let cycle_outcomes = clients.await.unwrap();
        eprintln!(
            "cycle {cycle}: {} created, {} refused, {} unanswered before the kill",
            cycle_outcomes.created.len(),
            cycle_outcomes.refused.len(),
            cycle_outcomes.unavailable.len()
        );
        assert!(
            !cycle_outcomes.created.is_empty(),
            "the node served before it was killed"
        );
        outcomes.merge(cycle_outcomes);

        node = Node::start(&store).await;
        let mut client = Client::connect(node.addr).await.unwrap();
        let found = client.lookup_transfers(&outcomes.attempted_ids()).await;
        let accounts = client.accounts("lookup-accounts").await;
        outcomes.check(&found, &accounts, FUNDING);
        // The projector resumed where it stopped: nothing projected twice, nothing skipped.
        assert_eq!(client.accounts("read-accounts").await, accounts);
    }
    node.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_killed_server_loses_no_acknowledged_transfer() {
    killed_and_restarted(TestStore::postgres("crash")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_killed_server_loses_no_acknowledged_transfer() {
    killed_and_restarted(TestStore::embedded()).await;
}
