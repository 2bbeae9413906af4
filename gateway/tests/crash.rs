//! SIGKILL under load: the real server process (`kizo-gateway`) serves many clients of the
//! batch ledger API on a durable store, is killed without warning, and is started again on the
//! same store. Every transfer it acknowledged must be there exactly once, the ledger must
//! balance, and the read models must catch up to the same balances (the projector was killed
//! too). Runs a few cycles per backend; `KIZO_CRASH_CYCLES=100` runs a hundred.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{GatewayProcess, TestStore, API_KEY};
use kizo_engine::{Account, AccountFlags, Transfer};
use kizo_gateway::wire::{AccountJson, TransferJson};
use kizo_persistence::read_models::ReadModels;
use kizo_persistence::StoreConfig;
use kizo_testkit::Outcomes;
use serde_json::{json, Value};

const LEDGER: u32 = 840;
const WALLETS: u128 = 8;
const FUNDING: u128 = 1_000_000;
const CLIENTS: u64 = 16;

/// The gateway as crash cycles run it: two shards, no snapshots.
async fn start_node(store: &TestStore) -> GatewayProcess {
    GatewayProcess::start(store, &["--shards", "2", "--no-snapshots"]).await
}

/// One client of the batch ledger API.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(base: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: base.to_string(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Result<Value> {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }

    /// The result code of each event.
    async fn create(&self, path: &str, body: Value) -> reqwest::Result<Vec<String>> {
        let answer = self.post(path, body).await?;
        Ok(answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["result"].as_str().unwrap().to_string())
            .collect())
    }

    async fn lookup_transfers(&self, ids: &[u128]) -> Vec<Transfer> {
        let mut found = Vec::new();
        for chunk in ids.chunks(1000) {
            let ids: Vec<String> = chunk.iter().map(u128::to_string).collect();
            let answer = self
                .post("/v1/ledger/transfers/lookup", json!({ "ids": ids }))
                .await
                .unwrap();
            let transfers: Vec<TransferJson> =
                serde_json::from_value(answer["transfers"].clone()).unwrap();
            found.extend(transfers.into_iter().map(Transfer::from));
        }
        found
    }

    async fn accounts(&self) -> Vec<Account> {
        let ids: Vec<String> = (1..=WALLETS + 1).map(|id| id.to_string()).collect();
        let answer = self
            .post("/v1/ledger/accounts/lookup", json!({ "ids": ids }))
            .await
            .unwrap();
        let accounts: Vec<AccountJson> =
            serde_json::from_value(answer["accounts"].clone()).unwrap();
        accounts.into_iter().map(Account::from).collect()
    }
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer::new(id, debit, credit, amount, LEDGER, 1)
}

fn json_of(transfers: &[Transfer]) -> Value {
    serde_json::to_value(
        transfers
            .iter()
            .map(|t| TransferJson::from(*t))
            .collect::<Vec<_>>(),
    )
    .unwrap()
}

async fn fund(client: &Client) {
    let accounts: Vec<AccountJson> = std::iter::once(Account::new(1, LEDGER, 1))
        .chain((2..=WALLETS + 1).map(|id| Account {
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            ..Account::new(id, LEDGER, 1)
        }))
        .map(AccountJson::from)
        .collect();
    let results = client
        .create(
            "/v1/ledger/accounts",
            serde_json::to_value(accounts).unwrap(),
        )
        .await
        .unwrap();
    assert!(results.iter().all(|r| r == "created"), "{results:?}");
    let funding: Vec<Transfer> = (2..=WALLETS + 1)
        .map(|wallet| transfer(100 + wallet, 1, wallet, FUNDING))
        .collect();
    let results = client
        .create("/v1/ledger/transfers", json_of(&funding))
        .await
        .unwrap();
    assert!(results.iter().all(|r| r == "created"), "{results:?}");
}

/// Clients send one transfer per request until the server stops answering (it was killed).
async fn load(client: Client, next_id: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> Outcomes {
    let mut tasks = Vec::new();
    for worker in 0..CLIENTS {
        let (client, next_id, stop) = (client.clone(), next_id.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Outcomes::default();
            let mut seed = next_id.load(Ordering::Relaxed) + worker * 7919;
            while !stop.load(Ordering::SeqCst) {
                let id = u128::from(next_id.fetch_add(1, Ordering::Relaxed));
                let t = kizo_testkit::next_load_transfer(&mut seed, id, WALLETS);
                match client.create("/v1/ledger/transfers", json_of(&[t])).await {
                    Ok(results) if results[0] == "created" => outcomes.created.push(t),
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

/// The accounts as the read models hold them, once they equal `expected` (the projector
/// catches up from where it stopped); fails if they never do.
async fn read_models_reach(store: &StoreConfig, expected: &[Account]) {
    let read_models = ReadModels::open(store).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..300 {
        held.clear();
        for account in expected {
            if let Some(found) = read_models.account(account.id).await.unwrap() {
                held.push(found);
            }
        }
        let same = held.len() == expected.len()
            && held.iter().zip(expected).all(|(a, b)| {
                (
                    a.debits_posted,
                    a.credits_posted,
                    a.debits_pending,
                    a.credits_pending,
                ) == (
                    b.debits_posted,
                    b.credits_posted,
                    b.debits_pending,
                    b.credits_pending,
                )
            });
        if same {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the read models never reached the ledger's balances: {held:?} against {expected:?}");
}

async fn killed_and_restarted(store: TestStore) {
    let cycles: u64 = std::env::var("KIZO_CRASH_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let mut node = start_node(&store).await;
    fund(&Client::new(&node.base)).await;
    let next_id = Arc::new(AtomicU64::new(1_000));
    let mut outcomes = Outcomes::default();
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = tokio::spawn(load(Client::new(&node.base), next_id.clone(), stop.clone()));
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
            "the gateway served before it was killed"
        );
        outcomes.merge(cycle_outcomes);

        node = start_node(&store).await;
        let client = Client::new(&node.base);
        let found = client.lookup_transfers(&outcomes.attempted_ids()).await;
        let accounts = client.accounts().await;
        outcomes.check(&found, &accounts, FUNDING);
        // The projector resumed where it stopped: nothing projected twice, nothing skipped.
        read_models_reach(&store.config, &accounts).await;
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
