//! The batch ledger API over HTTP: `cargo bench -p kizo-gateway --bench http [-- --store
//! postgres|embedded --transfers N --clients N]`.
//!
//! A real server on 127.0.0.1 (in this process, on the same two cores as the clients), 10,000
//! funded wallets, batches of 8189 transfers between random wallets posted by `--clients`
//! connections in a closed loop. Bodies are serialized before the clock starts, so the figure is
//! the server's: parsing, the engine, the durable log, the answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use kizo_gateway::{Server, ServerConfig};
use kizo_persistence::StoreConfig;
use serde_json::{json, Value};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY: &str = "bench-key-0123456789abcdef0123456789";
const WALLETS: u64 = 10_000;
const BATCH: usize = 8189;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Value {
    let response = client
        .post(url)
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the server answers");
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.expect("JSON")
}

fn main() {
    let store_kind = arg("--store", "postgres");
    let transfers: usize = arg("--transfers", "1000000").parse().expect("a number");
    let clients: usize = arg("--clients", "8").parse().expect("a number");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let schema = format!("bench_http_{}", std::process::id());
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let store = match store_kind.as_str() {
            "postgres" => StoreConfig::Postgres { url: url.clone(), schema: Some(schema.clone()) },
            _ => StoreConfig::Embedded { dir: dir.path().to_path_buf() },
        };
        let server = Server::start(ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            store: store.clone(),
            shard_count: 2,
            transfer_window: kizo_engine::EngineConfig::TRANSFER_WINDOW_DEFAULT,
            api_key: KEY.into(),
            jwt_secret: "test-jwt-secret-0123456789abcdef0123".into(),
            password_pepper: "test-pepper-0123456789abcdef0123456".into(),
            currency: kizo_gateway::config::Currency::parse("USD").unwrap(),
        auth_rates: Default::default(),
        admin_api_key: "admin-key-for-tests-0123456789abcdef".into(),
        bank: Default::default(),
        snapshots: Default::default(),
        http: Default::default(),
        mail: Default::default(),
        metrics: Default::default(),
        cluster: None,
        cdc: None,
        webhooks: Default::default(),
        })
        .await
        .unwrap();
        let base = format!("http://{}", server.addr);
        let client = reqwest::Client::new();
        let mut accounts: Vec<Value> = (1..=WALLETS)
            .map(|id| json!({"id": id.to_string(), "ledger": 1, "code": 1, "flags": {"debits_must_not_exceed_credits": true}}))
            .collect();
        accounts.push(json!({"id": "1000000", "ledger": 1, "code": 1}));
        for chunk in accounts.chunks(BATCH) {
            post(&client, &format!("{base}/v1/ledger/accounts"), serde_json::to_vec(chunk).unwrap()).await;
        }
        let funding: Vec<Value> = (1..=WALLETS)
            .map(|id| json!({"id": (u128::MAX - u128::from(id)).to_string(), "debit_account_id": "1000000", "credit_account_id": id.to_string(), "amount": "1000000000", "ledger": 1, "code": 1}))
            .collect();
        for chunk in funding.chunks(BATCH) {
            post(&client, &format!("{base}/v1/ledger/transfers"), serde_json::to_vec(chunk).unwrap()).await;
        }
        // Bodies first: random 128-bit ids, random wallets.
        let mut seed = 42u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed
        };
        let bodies: Vec<Vec<u8>> = (0..transfers.div_ceil(BATCH))
            .map(|b| {
                let n = BATCH.min(transfers - b * BATCH);
                let batch: Vec<Value> = (0..n)
                    .map(|_| {
                        let id = (u128::from(next()) << 64) | u128::from(next());
                        let r = next();
                        let debit = 1 + (r >> 33) % WALLETS;
                        let credit = 1 + (debit + (r >> 45) % (WALLETS - 1)) % WALLETS;
                        json!({"id": id.to_string(), "debit_account_id": debit.to_string(), "credit_account_id": credit.to_string(), "amount": (1 + (r >> 58)).to_string(), "ledger": 1, "code": 1})
                    })
                    .collect();
                serde_json::to_vec(&batch).unwrap()
            })
            .collect();
        let bodies = Arc::new(bodies);
        let cursor = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (bodies, cursor, client) = (bodies.clone(), cursor.clone(), client.clone());
            let url = format!("{base}/v1/ledger/transfers");
            tasks.push(tokio::spawn(async move {
                loop {
                    let at = cursor.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(at) else { break };
                    let answer = post(&client, &url, body.clone()).await;
                    let results = answer["results"].as_array().unwrap();
                    assert!(results.iter().all(|r| r["result"] == "created"));
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "batch ledger API over HTTP, {store_kind}, {clients} clients, batches of {BATCH}: {transfers} transfers in {seconds:.2} s: {:.0} transfers/s",
            transfers as f64 / seconds
        );
        server.stop().await;
        if store_kind == "postgres" {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&pool).await.unwrap();
        }
    });
}
