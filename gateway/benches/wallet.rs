//! The wallet API over HTTP: `cargo bench -p kizo-gateway --bench wallet [-- --store
//! postgres|embedded --transfers N --connections N]`.
//!
//! A real server in this process; 100 users, each funded through the ledger API and logged in;
//! `--connections` clients (default 100) each send `POST /v1/transfers` with a bearer token and a
//! fresh Idempotency-Key to a random other user, in a closed loop. Reports throughput and
//! latency percentiles (sorted samples).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kizo_gateway::{Server, ServerConfig};
use kizo_persistence::StoreConfig;
use serde_json::{json, Value};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY: &str = "bench-key-0123456789abcdef0123456789";
const USERS: usize = 100;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let store_kind = arg("--store", "postgres");
    let transfers: usize = arg("--transfers", "50000").parse().expect("a number");
    let connections: usize = arg("--connections", "100").parse().expect("a number");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let schema = format!("bench_wallet_{}", std::process::id());
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let store = match store_kind.as_str() {
            "postgres" => StoreConfig::Postgres { url: url.clone(), schema: Some(schema.clone()) },
            _ => StoreConfig::Embedded { dir: dir.path().to_path_buf() },
        };
        let server = Server::start(ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            store,
            shard_count: 2,
            transfer_window: kizo_engine::EngineConfig::TRANSFER_WINDOW_DEFAULT,
            api_key: KEY.into(),
            jwt_secret: "bench-jwt-secret-0123456789abcdef0123".into(),
            password_pepper: "bench-pepper-0123456789abcdef0123456".into(),
            currency: kizo_gateway::config::Currency::parse("USD").unwrap(),
            auth_rates: kizo_gateway::limits::AuthRates {
                per_address: std::num::NonZeroU32::new(1_000_000).unwrap(),
                per_email: std::num::NonZeroU32::new(1_000_000).unwrap(),
                trusted_proxies: Vec::new(),
                reads_per_user: std::num::NonZeroU32::new(1_000_000).unwrap(),
            },
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
        client
            .post(format!("{base}/v1/ledger/accounts"))
            .bearer_auth(KEY)
            .json(&json!([{"id": "1", "ledger": 840, "code": 2}]))
            .send()
            .await
            .unwrap();
        let mut users = Vec::new();
        for i in 0..USERS {
            let email = format!("user{i}@example.com");
            let signup = json!({"email": email, "password": "bench password", "first_name": "U", "last_name": "B"});
            let body: Value = client.post(format!("{base}/v1/auth/signup")).json(&signup).send().await.unwrap().json().await.unwrap();
            let wallet = body["accounts"][0]["id"].as_str().unwrap().to_string();
            let ledger_id = uuid::Uuid::parse_str(&wallet).unwrap().as_u128().to_string();
            let funding = json!([{"id": (1000 + i).to_string(), "debit_account_id": "1", "credit_account_id": ledger_id, "amount": "1000000000", "ledger": 840, "code": 2}]);
            client.post(format!("{base}/v1/ledger/transfers")).bearer_auth(KEY).json(&funding).send().await.unwrap();
            let login = json!({"email": email, "password": "bench password"});
            let tokens: Value = client.post(format!("{base}/v1/auth/login")).json(&login).send().await.unwrap().json().await.unwrap();
            users.push((tokens["access_token"].as_str().unwrap().to_string(), wallet));
        }
        let users = Arc::new(users);
        let sent = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..connections {
            let (users, sent, base) = (users.clone(), sent.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut latencies = Vec::new();
                let mut seed = c as u64 * 7919 + 1;
                while sent.fetch_add(1, Ordering::Relaxed) < transfers {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let from = (seed >> 33) as usize % USERS;
                    let to = (from + 1 + (seed >> 45) as usize % (USERS - 1)) % USERS;
                    let (token, wallet) = &users[from];
                    let body = json!({"from_account_id": wallet, "to": {"account_id": users[to].1}, "amount": 1});
                    let t0 = Instant::now();
                    let response = client
                        .post(format!("{base}/v1/transfers"))
                        .bearer_auth(token)
                        .header("idempotency-key", format!("c{c}-{seed}"))
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
                    let _ = response.bytes().await;
                    latencies.push(t0.elapsed());
                }
                latencies
            }));
        }
        let mut latencies: Vec<Duration> = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        let seconds = started.elapsed().as_secs_f64();
        latencies.sort();
        let at = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1e3;
        println!(
            "wallet API over HTTP, {store_kind}, {connections} connections: {} transfers in {seconds:.2} s: {:.0} transfers/s, latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
            latencies.len(),
            latencies.len() as f64 / seconds,
            at(0.5),
            at(0.99),
            at(1.0)
        );
        server.stop().await;
        if store_kind == "postgres" {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&pool).await.unwrap();
        }
    });
}
