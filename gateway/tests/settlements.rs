//! Deposits and withdrawals through the bank.
//!
//! - In process (both stores): the flows, their answers, idempotency, ownership, the admin API.
//! - Against a real `kizo-bank` process with its faults on (slow, 5xx, late answers, declines,
//!   duplicate callbacks) and a real gateway process on PostgreSQL that is killed with SIGKILL
//!   while settlements are under way and started again: thousands of deposits and withdrawals,
//!   then every one is final, reconciliation finds no unexplained difference, and every
//!   wallet holds exactly what the bank's statement says moved.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use common::{send, start, user, TestStore, ADMIN_KEY};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn settle(base: &str, token: &str, kind: &str, id: &str) -> Value {
    for _ in 0..400 {
        let got = send("GET", format!("{base}/v1/{kind}s/{id}"), token, None, None).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        if ["succeeded", "failed", "needs_review"].contains(&got.body["status"].as_str().unwrap()) {
            return got.body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{kind} {id} did not settle");
}

async fn flows(store: TestStore) {
    let (server, base) = start(&store.config).await;
    let (token, wallet) = user(&base, "saver@example.com").await;
    let (stranger, _) = user(&base, "stranger@example.com").await;
    let deposit = json!({"account_id": wallet, "amount": 1_000});

    // A deposit is pending at once, then credited.
    let first = send(
        "POST",
        format!("{base}/v1/deposits"),
        &token,
        Some("d-1"),
        Some(deposit.clone()),
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    assert_eq!(first.body["status"], "pending");
    let id = first.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        settle(&base, &token, "deposit", &id).await["status"],
        "succeeded"
    );
    // Its retry is the same deposit; another request with the key is refused.
    let again = send(
        "POST",
        format!("{base}/v1/deposits"),
        &token,
        Some("d-1"),
        Some(deposit),
    )
    .await;
    assert!(again.replayed);
    assert_eq!(
        (again.status, again.body["id"].as_str()),
        (StatusCode::ACCEPTED, Some(&*id))
    );
    let other = json!({"account_id": wallet, "amount": 999});
    let reused = send(
        "POST",
        format!("{base}/v1/deposits"),
        &token,
        Some("d-1"),
        Some(other),
    )
    .await;
    assert_eq!(
        (reused.status, reused.body["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("idempotency_key_reused")
        )
    );

    // A withdrawal holds its funds before it is answered; more than the balance is refused.
    let too_much = json!({"account_id": wallet, "amount": 1_001});
    let refused = send(
        "POST",
        format!("{base}/v1/withdrawals"),
        &token,
        Some("w-0"),
        Some(too_much.clone()),
    )
    .await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("insufficient_funds"))
    );
    let replayed = send(
        "POST",
        format!("{base}/v1/withdrawals"),
        &token,
        Some("w-0"),
        Some(too_much),
    )
    .await;
    assert!(replayed.replayed && replayed.status == StatusCode::UNPROCESSABLE_ENTITY);
    let out = send(
        "POST",
        format!("{base}/v1/withdrawals"),
        &token,
        Some("w-1"),
        Some(json!({"account_id": wallet, "amount": 400})),
    )
    .await;
    assert_eq!(out.status, StatusCode::ACCEPTED, "{}", out.body);
    let out_id = out.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        settle(&base, &token, "withdrawal", &out_id).await["status"],
        "succeeded"
    );
    let account = send(
        "GET",
        format!("{base}/v1/accounts/{wallet}"),
        &token,
        None,
        None,
    )
    .await;
    assert_eq!(
        (
            account.body["available"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok()),
            account.body["held"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
        ),
        (Some(600), Some(0)),
        "{}",
        account.body
    );

    // The history shows the deposit, the hold and its payout; the month's sums count money
    // that moved, once.
    let history = send(
        "GET",
        format!("{base}/v1/accounts/{wallet}/transfers"),
        &token,
        None,
        None,
    )
    .await;
    let lines: Vec<(&str, &str, u64)> = history.body["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["kind"].as_str().unwrap(),
                t["status"].as_str().unwrap(),
                t["amount"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("withdrawal", "posted", 400),
            ("withdrawal", "pending", 400),
            ("deposit", "posted", 1_000)
        ]
    );
    let dashboard = send("GET", format!("{base}/v1/dashboard"), &token, None, None).await;
    assert_eq!(
        (
            dashboard.body["sent_this_month"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok()),
            dashboard.body["received_this_month"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
        ),
        (Some(400), Some(1_000))
    );
    assert_eq!(dashboard.body["transfers_this_month"], 2);

    // Only the owner sees them, each under its own kind; the stranger's wallet is not theirs
    // to fill.
    for (path, who) in [
        (format!("deposits/{id}"), &stranger),
        (format!("withdrawals/{out_id}"), &stranger),
        (format!("withdrawals/{id}"), &token),
    ] {
        let hidden = send("GET", format!("{base}/v1/{path}"), who, None, None).await;
        assert_eq!(hidden.status, StatusCode::NOT_FOUND, "{path}");
    }
    let not_theirs = send(
        "POST",
        format!("{base}/v1/deposits"),
        &stranger,
        Some("x"),
        Some(json!({"account_id": wallet, "amount": 5})),
    )
    .await;
    assert_eq!(not_theirs.status, StatusCode::NOT_FOUND);
    for (amount, key) in [(0u64, "z"), (1_000_000_000_001, "big")] {
        let bad = send(
            "POST",
            format!("{base}/v1/deposits"),
            &token,
            Some(key),
            Some(json!({"account_id": wallet, "amount": amount})),
        )
        .await;
        assert_eq!(
            (bad.status, bad.body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("amount"))
        );
    }
    let no_key = send(
        "POST",
        format!("{base}/v1/deposits"),
        &token,
        None,
        Some(json!({"account_id": wallet, "amount": 5})),
    )
    .await;
    assert_eq!(no_key.status, StatusCode::BAD_REQUEST);

    // Reconciliation: the admin key only; the books agree.
    let denied = send(
        "POST",
        format!("{base}/v1/admin/reconciliation"),
        common::API_KEY,
        None,
        None,
    )
    .await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    let report = send(
        "POST",
        format!("{base}/v1/admin/reconciliation"),
        ADMIN_KEY,
        None,
        None,
    )
    .await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    assert_eq!(report.body["unexplained"], 0, "{}", report.body);
    assert_eq!(report.body["matched"], 2);
    assert_eq!(report.body["ledger"][0]["ledger_net"], "600");
    assert_eq!(
        report.body["ledger_totals"][0]["holds"], true,
        "{}",
        report.body
    );
    let latest = send(
        "GET",
        format!("{base}/v1/admin/reconciliation/latest"),
        ADMIN_KEY,
        None,
        None,
    )
    .await;
    assert_eq!(latest.body["at_ms"], report.body["at_ms"]);
    let history = send(
        "GET",
        format!("{base}/v1/admin/settlements/{out_id}"),
        ADMIN_KEY,
        None,
        None,
    )
    .await;
    let phases: Vec<&str> = history.body["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["hold", "send", "check", "settle", "succeeded"]);
    let settled = send(
        "POST",
        format!("{base}/v1/admin/settlements/{out_id}/resolve"),
        ADMIN_KEY,
        None,
        Some(json!({"bank_moved": false})),
    )
    .await;
    assert_eq!(
        (settled.status, settled.body["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_under_review"))
    );
    server.stop().await;
    store.clean().await;
}

/// Two people resolving the same settlement at once: exactly one resolution is kept (the
/// store compares and sets), the other is told the settlement changed, and the kept one is
/// what the supervisor carries out.
#[tokio::test]
async fn concurrent_resolutions_of_one_settlement_keep_exactly_one() {
    let store = TestStore::postgres("settlements_resolve");
    // A bank that is never there: every deposit's outcome stays unknown, so it needs review
    // after its one attempt.
    let nowhere = free_port();
    let (server, base) = common::start_configured(&store.config, |config| {
        config.bank.url = Some(format!("http://127.0.0.1:{nowhere}"));
        config.bank.token = Some(BANK_TOKEN.into());
        config.bank.settlement.policy.attempts_max = 1;
        config.bank.settlement.policy.attempt_timeout_ms = 200;
    })
    .await;
    let (token, wallet) = user(&base, "reviewed@example.com").await;
    for round in 0..8 {
        let started = send(
            "POST",
            format!("{base}/v1/deposits"),
            &token,
            Some(&format!("deposit-{round}")),
            Some(json!({"account_id": wallet, "amount": 100})),
        )
        .await;
        assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
        let id = started.body["id"].as_str().unwrap().to_string();
        let settled = settle(&base, &token, "deposit", &id).await;
        assert_eq!(settled["status"], "needs_review", "{settled}");
        common::assert_js_safe(&settled);
        assert!(settled["created_at"].is_string(), "{settled}");
        let resolutions = futures_util::future::join_all((0..6).map(|n| {
            send(
                "POST",
                format!("{base}/v1/admin/settlements/{id}/resolve"),
                ADMIN_KEY,
                None,
                Some(json!({"bank_moved": n % 2 == 0})),
            )
        }))
        .await;
        let answers: Vec<(StatusCode, &Value)> =
            resolutions.iter().map(|r| (r.status, &r.body)).collect();
        let kept: Vec<&Value> = answers
            .iter()
            .filter(|(status, _)| *status == StatusCode::ACCEPTED)
            .map(|(_, body)| *body)
            .collect();
        assert_eq!(kept.len(), 1, "round {round}: {answers:?}");
        for (status, body) in answers.iter().filter(|(s, _)| *s != StatusCode::ACCEPTED) {
            assert_eq!(
                (*status, body["code"].as_str()),
                (StatusCode::CONFLICT, Some("not_under_review"))
            );
        }
        let moved = kept[0]["reason"] == "resolved: the bank moved it";
        let last = settle(&base, &token, "deposit", &id).await;
        assert_eq!(
            last["status"],
            if moved { "succeeded" } else { "failed" },
            "round {round}: {last}"
        );
        let history = send(
            "GET",
            format!("{base}/v1/admin/settlements/{id}"),
            ADMIN_KEY,
            None,
            None,
        )
        .await;
        let resolved = history.body["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["phase"] == "settle" || t["phase"] == "release")
            .count();
        assert!(resolved <= 1, "round {round}: {}", history.body);
    }
    server.stop().await;
    store.clean().await;
}

/// One user's deposits and withdrawals under way are capped, with a clear 429; another user
/// is not held back, and a retry of one under way is still answered.
#[tokio::test]
async fn a_users_settlements_under_way_are_capped() {
    let store = TestStore::embedded();
    // A bank that is never there: deposits stay under way (retrying) for the whole test.
    let nowhere = free_port();
    let (server, base) = common::start_configured(&store.config, |config| {
        config.bank.url = Some(format!("http://127.0.0.1:{nowhere}"));
        config.bank.token = Some(BANK_TOKEN.into());
        config.bank.settlement.policy.backoff_base_ms = 60_000;
    })
    .await;
    let (token, wallet) = user(&base, "eager@example.com").await;
    let deposit = |token: String, wallet: String, key: String| {
        let base = base.clone();
        async move {
            send(
                "POST",
                format!("{base}/v1/deposits"),
                &token,
                Some(&key),
                Some(json!({"account_id": wallet, "amount": 100})),
            )
            .await
        }
    };
    let quota = kizo_gateway::money::SETTLEMENTS_UNFINISHED_PER_USER;
    for n in 0..quota {
        let answer = deposit(token.clone(), wallet.clone(), format!("d-{n}")).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    }
    let refused = deposit(token.clone(), wallet.clone(), "one-more".into()).await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("too_many_settlements")),
        "{}",
        refused.body
    );
    let retried = deposit(token.clone(), wallet.clone(), "d-0".into()).await;
    assert_eq!(retried.status, StatusCode::ACCEPTED, "{}", retried.body);
    assert!(retried.replayed);
    let (other, other_wallet) = user(&base, "patient@example.com").await;
    let answer = deposit(other, other_wallet, "first".into()).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    server.stop().await;
}

#[tokio::test]
async fn deposits_and_withdrawals_settle_on_the_embedded_store() {
    flows(TestStore::embedded()).await;
}

#[tokio::test]
async fn deposits_and_withdrawals_settle_on_postgres() {
    flows(TestStore::postgres("settlements")).await;
}

/// The quick start's setup: the bank in process, keeping its books in the data folder. A
/// restart of the gateway is a restart of the bank too: both must remember.
#[tokio::test]
async fn the_in_process_bank_remembers_across_a_restart() {
    let store = TestStore::embedded();
    let journal = tempfile::tempdir().unwrap();
    let config = || kizo_gateway::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: store.config.clone(),
        shard_count: 2,
        transfer_window: 4,
        api_key: common::API_KEY.into(),
        jwt_secret: "test-jwt-secret-0123456789abcdef0123".into(),
        password_pepper: "test-pepper-0123456789abcdef0123456".into(),
        currency: kizo_gateway::config::Currency::parse("USD").unwrap(),
        auth_rates: Default::default(),
        admin_api_key: ADMIN_KEY.into(),
        bank: kizo_gateway::server::BankSettings {
            journal: Some(journal.path().join("bank.jsonl")),
            ..Default::default()
        },
        snapshots: Default::default(),
        http: Default::default(),
        mail: Default::default(),
        metrics: Default::default(),
        cluster: None,
        cdc: None,
        webhooks: Default::default(),
    };
    let server = kizo_gateway::Server::start(config()).await.unwrap();
    let base = format!("http://{}", server.addr);
    let (token, wallet) = user(&base, "quick@example.com").await;
    let deposit = send(
        "POST",
        format!("{base}/v1/deposits"),
        &token,
        Some("q-1"),
        Some(json!({"account_id": wallet, "amount": 2_500})),
    )
    .await;
    let id = deposit.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        settle(&base, &token, "deposit", &id).await["status"],
        "succeeded"
    );
    server.stop().await;

    let server = kizo_gateway::Server::start(config()).await.unwrap();
    let base = format!("http://{}", server.addr);
    let report = send(
        "POST",
        format!("{base}/v1/admin/reconciliation"),
        ADMIN_KEY,
        None,
        None,
    )
    .await;
    assert_eq!(report.body["unexplained"], 0, "{}", report.body);
    assert_eq!(
        (
            report.body["matched"].as_u64(),
            report.body["movements"].as_u64()
        ),
        (Some(1), Some(1))
    );
    server.stop().await;
}

/// A free port on the loopback (the tests' processes are told their port up front).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const BANK_TOKEN: &str = "bank-token-for-tests-0123456789";

struct Gateway {
    child: tokio::process::Child,
}

impl Gateway {
    async fn start(
        port: u16,
        metrics_port: u16,
        bank_port: u16,
        database_url: &str,
        data: &std::path::Path,
    ) -> Gateway {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kizo-gateway"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--database-url", database_url])
            .args(["--data-dir", data.to_str().unwrap()])
            .args(["--admin-api-key", ADMIN_KEY])
            .args(["--bank-url", &format!("http://127.0.0.1:{bank_port}")])
            .args(["--bank-token", BANK_TOKEN])
            .args(["--settlement-workers", "32", "--settlement-attempts", "12"])
            // Each test user stands for many: their requests come 32 at a time.
            .args(["--settlements-per-user", "1000"])
            .args([
                "--settlement-timeout-ms",
                "300",
                "--settlement-backoff-ms",
                "20",
            ])
            .args([
                "--auth-rate-per-address",
                "100000",
                "--auth-rate-per-email",
                "1000",
            ])
            .args(["--shards", "2"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let ready = format!("http://127.0.0.1:{port}/readyz");
        for _ in 0..300 {
            if reqwest::get(&ready)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Gateway { child };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway did not start");
    }

    async fn kill(mut self) {
        self.child.start_kill().unwrap(); // SIGKILL
        self.child.wait().await.unwrap();
    }
}

/// Settlements not final, read from `/metrics` on the metrics listener.
async fn under_way(metrics: &str) -> u64 {
    let text = reqwest::get(format!("{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            // The supervisor's own counts, live (the store's counts by status are refreshed
            // every few seconds).
            l.starts_with("kizo_settlements_waiting ") || l.starts_with("kizo_settlements_running ")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// One request of the test's load: (user, kind, key, amount).
type Request = (usize, &'static str, String, u64);

/// Sends `requests`, 32 at a time; returns the settlement id of each one answered 202, by key.
/// A request whose connection breaks (the gateway was killed) is left out.
async fn submit(
    base: &str,
    users: &[(String, String)],
    requests: &[Request],
) -> BTreeMap<String, (usize, &'static str, String)> {
    let client = reqwest::Client::new();
    futures_util::stream::iter(requests.iter().cloned())
        .map(|(u, kind, key, amount)| {
            let client = client.clone();
            let (token, wallet) = users[u].clone();
            async move {
                let response = client
                    .post(format!("{base}/v1/{kind}s"))
                    .bearer_auth(&token)
                    .header("idempotency-key", &key)
                    .json(&json!({"account_id": wallet, "amount": amount}))
                    .send()
                    .await
                    .ok()?;
                let status = response.status();
                let body: Value = response.json().await.ok()?;
                match status {
                    StatusCode::ACCEPTED => {
                        Some((key, (u, kind, body["id"].as_str()?.to_string())))
                    }
                    StatusCode::UNPROCESSABLE_ENTITY => {
                        assert_eq!(body["code"], "insufficient_funds", "{body}");
                        None
                    }
                    other => panic!("{kind} {key}: {other} {body}"),
                }
            }
        })
        .buffer_unordered(32)
        .filter_map(|answer| async move { answer })
        .collect()
        .await
}

#[tokio::test]
async fn thousands_of_settlements_survive_a_faulty_bank_and_a_killed_gateway() {
    // A database of its own: the gateway process takes a plain URL.
    let admin_url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let database = format!("kizo_settlements_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {database}"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&admin)
        .await
        .unwrap();
    let database_url = format!("{}/{database}", admin_url.rsplit_once('/').unwrap().0);
    let data = tempfile::tempdir().unwrap();

    let (port, metrics_port, bank_port) = (free_port(), free_port(), free_port());
    let metrics = format!("http://127.0.0.1:{metrics_port}");
    let base = format!("http://127.0.0.1:{port}");
    let bank_base = format!("http://127.0.0.1:{bank_port}");
    let mut bank = tokio::process::Command::new(env!("CARGO_BIN_EXE_kizo-bank"))
        .args(["--listen", &format!("127.0.0.1:{bank_port}")])
        .args(["--token", BANK_TOKEN])
        .args(["--callback-url", &format!("{base}/v1/bank/callbacks")])
        .args([
            "--seed",
            "7",
            "--latency-ms",
            "5",
            "--slow-rate",
            "0.02",
            "--slow-ms",
            "1000",
        ])
        .args([
            "--error-rate",
            "0.05",
            "--timeout-rate",
            "0.05",
            "--timeout-ms",
            "1000",
        ])
        .args(["--decline-rate", "0.07", "--duplicate-callback-rate", "0.2"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let gateway = Gateway::start(port, metrics_port, bank_port, &database_url, data.path()).await;

    let mut users = Vec::new();
    for i in 0..20 {
        users.push(user(&base, &format!("user{i}@example.com")).await);
    }
    // Per user: deposits first, then withdrawals mixed with more deposits.
    let mut requests: Vec<Request> = Vec::new();
    for round in 0..120 {
        for u in 0..users.len() {
            let n = (round * users.len() + u) as u64;
            let (kind, amount) = if round < 20 || round % 3 != 0 {
                ("deposit", 1_000 + n % 9_000)
            } else {
                ("withdrawal", 500 + n % 4_000)
            };
            requests.push((u, kind, format!("{kind}-{u}-{round}"), amount));
        }
    }
    let (first, second) = requests.split_at(requests.len() / 2);
    let mut accepted = submit(&base, &users, first).await;
    let busy = under_way(&metrics).await;
    assert!(
        busy > 0,
        "the kill should come while settlements are under way"
    );
    gateway.kill().await;

    let gateway = Gateway::start(port, metrics_port, bank_port, &database_url, data.path()).await;
    // Retries of requests from before the kill are the same settlements.
    let retried = submit(&base, &users, &first[..200]).await;
    for (key, (_, _, id)) in &retried {
        if let Some((_, _, before)) = accepted.get(key) {
            assert_eq!(id, before, "{key}");
        }
    }
    accepted.extend(retried);
    accepted.extend(submit(&base, &users, second).await);
    assert!(accepted.len() > 2_000, "{} accepted", accepted.len());

    for _ in 0..600 {
        if under_way(&metrics).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(under_way(&metrics).await, 0, "every settlement ends");

    // Each settlement is final; sum what succeeded per wallet.
    let mut expected: BTreeMap<String, i128> = BTreeMap::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut succeeded = BTreeSet::new();
    for (u, kind, id) in accepted.values() {
        let (token, wallet) = &users[*u];
        let got = send("GET", format!("{base}/v1/{kind}s/{id}"), token, None, None).await;
        let status = got.body["status"].as_str().unwrap().to_string();
        *statuses.entry(status.clone()).or_default() += 1;
        if status == "succeeded" {
            let amount = i128::from(got.body["amount"].as_u64().unwrap());
            *expected.entry(wallet.clone()).or_default() +=
                if *kind == "deposit" { amount } else { -amount };
            succeeded.insert(id.clone());
        }
    }
    eprintln!(
        "{} settlements, {busy} under way at the kill: {statuses:?}",
        accepted.len()
    );
    assert_eq!(statuses.get("needs_review"), None, "{statuses:?}");
    assert!(
        statuses.get("failed").is_some_and(|f| *f > 0),
        "the bank declines some: {statuses:?}"
    );

    let report = send(
        "POST",
        format!("{base}/v1/admin/reconciliation"),
        ADMIN_KEY,
        None,
        None,
    )
    .await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    assert_eq!(report.body["unexplained"], 0, "{}", report.body);
    eprintln!("reconciliation: {}", report.body);
    assert_eq!(report.body["ledger_checked"], true);
    assert_eq!(report.body["ledger_totals"][0]["holds"], true);
    assert_eq!(
        report.body["matched"].as_u64(),
        Some(succeeded.len() as u64)
    );

    // The bank's own statement: one movement per succeeded settlement, none for the others,
    // and every wallet holds exactly what moved.
    let client = reqwest::Client::new();
    let mut moved: BTreeMap<String, i128> = BTreeMap::new();
    let mut references = BTreeSet::new();
    let mut after = 0u64;
    loop {
        let page: Value = client
            .get(format!("{bank_base}/statement?after={after}"))
            .bearer_auth(BANK_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for m in page["movements"].as_array().unwrap() {
            assert!(
                references.insert(m["reference"].as_str().unwrap().to_string()),
                "a reference moved twice"
            );
            let amount = i128::from(m["amount"].as_u64().unwrap());
            *moved
                .entry(m["account"].as_str().unwrap().to_string())
                .or_default() += if m["kind"] == "collection" {
                amount
            } else {
                -amount
            };
        }
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(
        references, succeeded,
        "the bank moved exactly the settlements that succeeded"
    );
    assert_eq!(moved, expected);
    for (token, wallet) in &users {
        let account = send(
            "GET",
            format!("{base}/v1/accounts/{wallet}"),
            token,
            None,
            None,
        )
        .await;
        let posted = i128::from(
            account.body["posted"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap(),
        );
        assert_eq!(
            posted,
            expected.get(wallet).copied().unwrap_or(0),
            "{wallet}"
        );
        assert_eq!(account.body["held"], "0", "no hold is left behind");
    }

    gateway.kill().await;
    bank.start_kill().unwrap();
    let _ = bank.wait().await;
    admin.close().await;
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
}
