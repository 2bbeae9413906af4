//! Failover of a cluster under wallet load (`--cluster`, `loadgen/cluster.sh`): users on
//! every node, each funded through the ledger API; payments between them through whichever
//! node is up (a client sends the next attempt of a request elsewhere, with the same
//! Idempotency-Key, as a load balancer would); a node killed half way. Then every payment is
//! made final, read back, and each wallet's balance checked against the answers; the clearing
//! accounts must net to zero.
//!
//! The multi-process tests of the cluster (gateway/tests/cluster_nodes.rs) drive the same
//! code.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

/// A failover run that could not be carried out (not a failed audit: that is a result).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FailoverError(pub String);

fn failed(what: impl std::fmt::Display) -> FailoverError {
    FailoverError(what.to_string())
}

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a payment is retried on other nodes before it is left without an answer.
const PAY_PATIENCE: Duration = Duration::from_secs(30);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("a client without TLS settings builds")
}

/// The nodes requests go to (those not being stopped), as base URLs.
pub type Live = Arc<Mutex<Vec<String>>>;

/// The keys a run needs.
#[derive(Clone, Debug)]
pub struct Keys {
    pub api: String,
    pub admin: String,
}

/// `GET /v1/admin/cluster` at `base`, if it answers.
pub async fn report(base: &str, keys: &Keys) -> Option<Value> {
    let response = client()
        .get(format!("{base}/v1/admin/cluster"))
        .bearer_auth(&keys.admin)
        .send()
        .await
        .ok()?;
    (response.status() == StatusCode::OK).then_some(())?;
    response.json().await.ok()
}

/// Waits until, as `base` sees it, every partition is owned and each of `nodes` (ids) owns
/// some and nobody else any; how long that took.
pub async fn wait_owned(
    base: &str,
    keys: &Keys,
    nodes: &[&str],
    within: Duration,
) -> Result<Duration, FailoverError> {
    let start = Instant::now();
    loop {
        if let Some(report) = report(base, keys).await {
            let partitions = report["partitions"].as_u64().unwrap_or(0) as usize;
            let owners: Vec<&str> = report["leases"]
                .as_array()
                .map(|leases| {
                    leases
                        .iter()
                        .filter_map(|lease| lease["owner"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            let distinct: BTreeSet<&str> = owners.iter().copied().collect();
            if partitions > 0
                && owners.len() == partitions
                && distinct.len() == nodes.len()
                && owners.iter().all(|o| nodes.contains(o))
            {
                return Ok(start.elapsed());
            }
        }
        if start.elapsed() >= within {
            return Err(failed(format!(
                "the partitions were not owned by {nodes:?} within {within:?}: {:?}",
                report(base, keys).await
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct User {
    pub token: String,
    pub wallet: String,
}

/// Signs `count` users up (and in) across `nodes`, and funds each with `funding` through the
/// ledger API (from a funding account of the ledger API, created on first use).
pub async fn users(
    nodes: &[String],
    keys: &Keys,
    count: usize,
    funding: u64,
    run: &str,
) -> Result<Vec<User>, FailoverError> {
    let http = client();
    let funder = u128::from_le_bytes(*uuid::Uuid::new_v4().as_bytes()) >> 1;
    let mut users = Vec::with_capacity(count);
    for index in 0..count {
        let base = &nodes[index % nodes.len()];
        let email = format!("user{index}-{run}@failover.test");
        let password = "long enough password";
        let signup = json!({"email": email, "password": password, "first_name": "Fail", "last_name": "Over"});
        let answer = retried(|| http.post(format!("{base}/v1/auth/signup")).json(&signup)).await?;
        let wallet = answer["accounts"][0]["id"]
            .as_str()
            .ok_or_else(|| failed(format!("signup answered {answer}")))?
            .to_string();
        let login = json!({"email": email, "password": password});
        let tokens = retried(|| http.post(format!("{base}/v1/auth/login")).json(&login)).await?;
        let token = tokens["access_token"]
            .as_str()
            .ok_or_else(|| failed(format!("login answered {tokens}")))?
            .to_string();
        let account = json!([{"id": funder.to_string(), "ledger": 840, "code": 2}]);
        retried(|| {
            http.post(format!("{base}/v1/ledger/accounts"))
                .bearer_auth(&keys.api)
                .json(&account)
        })
        .await?;
        let wallet_id = uuid::Uuid::parse_str(&wallet)
            .map_err(failed)?
            .as_u128()
            .to_string();
        let fund = json!([{"id": (funder + 1 + index as u128).to_string(), "debit_account_id": funder.to_string(),
            "credit_account_id": wallet_id, "amount": funding.to_string(), "ledger": 840, "code": 2}]);
        let funded = retried(|| {
            http.post(format!("{base}/v1/ledger/transfers"))
                .bearer_auth(&keys.api)
                .json(&fund)
        })
        .await?;
        let result = &funded["results"][0]["result"];
        if result != "created" && result != "exists" {
            return Err(failed(format!("funding answered {funded}")));
        }
        users.push(User { token, wallet });
    }
    Ok(users)
}

/// Sends a request until it is answered other than 503 (a partition changing owners), for
/// at most [`PAY_PATIENCE`]; its JSON answer, which must be a success.
async fn retried(request: impl Fn() -> reqwest::RequestBuilder) -> Result<Value, FailoverError> {
    let deadline = Instant::now() + PAY_PATIENCE;
    loop {
        match request().send().await {
            Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {}
            Ok(response) => {
                let status = response.status();
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                if !status.is_success() {
                    return Err(failed(format!("answered {status}: {answer}")));
                }
                return Ok(answer);
            }
            Err(error) if Instant::now() >= deadline => return Err(failed(error)),
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(failed("503 until the patience ran out"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One payment and its fate so far.
#[derive(Clone, Debug)]
pub struct Payment {
    pub key: String,
    pub from: usize,
    pub to: usize,
    pub amount: u64,
    /// The id a 201 or 202 named.
    pub id: Option<String>,
    pub state: PaymentState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentState {
    /// No answer yet (every node tried was down, or answered 503).
    Unknown,
    /// 202: under way.
    Pending,
    /// 201, or read back posted.
    Posted,
    /// Voided after its hold, or refused (422 insufficient funds).
    Refused,
    /// Any other answer: a failure of the run.
    Failed,
}

/// What a load sent and how it was answered.
#[derive(Default)]
pub struct Load {
    pub payments: Mutex<Vec<Payment>>,
    /// Answers other than 201, 202, 422 insufficient_funds and a retryable 503.
    pub failures: Mutex<Vec<String>>,
    /// Answers of any kind, 503s included.
    pub answers: AtomicUsize,
    pub unavailable: AtomicUsize,
}

/// Sends `payment` to the live nodes in turn (starting at `turn`) until one answers other
/// than 503 or a failed connection, or [`PAY_PATIENCE`] passes.
async fn pay(
    http: &reqwest::Client,
    users: &[User],
    live: &Live,
    turn: usize,
    load: &Load,
    mut payment: Payment,
) {
    let body = json!({
        "from_account_id": users[payment.from].wallet,
        "to": {"account_id": users[payment.to].wallet},
        "amount": payment.amount,
    });
    let deadline = Instant::now() + PAY_PATIENCE;
    let mut attempt = turn;
    while Instant::now() < deadline {
        let base = {
            let live = live.lock().expect("not poisoned");
            live[attempt % live.len()].clone()
        };
        attempt += 1;
        let sent = http
            .post(format!("{base}/v1/transfers"))
            .bearer_auth(&users[payment.from].token)
            .header("Idempotency-Key", &payment.key)
            .json(&body)
            .send()
            .await;
        let Ok(response) = sent else {
            // The node is gone (killed, restarting): a load balancer sends elsewhere.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        load.answers.fetch_add(1, Ordering::Relaxed);
        payment.state = match status {
            StatusCode::CREATED | StatusCode::ACCEPTED => {
                payment.id = answer["id"].as_str().map(str::to_string);
                if status == StatusCode::CREATED {
                    PaymentState::Posted
                } else {
                    PaymentState::Pending
                }
            }
            StatusCode::UNPROCESSABLE_ENTITY if answer["code"] == "insufficient_funds" => {
                PaymentState::Refused
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                load.unavailable.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            other => {
                load.failures
                    .lock()
                    .expect("not poisoned")
                    .push(format!("{other}: {answer}"));
                PaymentState::Failed
            }
        };
        break;
    }
    load.payments.lock().expect("not poisoned").push(payment);
}

/// Payments between `users` from `clients` clients until `stop`.
pub async fn run_load(
    users: Arc<Vec<User>>,
    live: Live,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Arc<Load> {
    let load = Arc::new(Load::default());
    let count = users.len();
    assert!(count >= 2, "payments need two users");
    let mut tasks = Vec::new();
    for user in 0..clients {
        let (users, live, load, stop) = (users.clone(), live.clone(), load.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            // One client per virtual user: its connections are kept alive between payments.
            let http = client();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let from = (user * 7 + n) % count;
                let to = (from + 1 + (n * 5) % (count - 1)) % count;
                let payment = Payment {
                    key: format!("pay-{}", uuid::Uuid::new_v4()),
                    from,
                    to,
                    amount: 1 + (n as u64 * 37) % 500,
                    id: None,
                    state: PaymentState::Unknown,
                };
                pay(&http, &users, &live, user + n, &load, payment).await;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    load
}

/// Makes every payment final: those without an answer are sent again with their key, those
/// under way are read until they end.
pub async fn settle(
    users: &[User],
    live: &Live,
    load: &Load,
) -> Result<Vec<Payment>, FailoverError> {
    let payments: Vec<Payment> = std::mem::take(&mut *load.payments.lock().expect("not poisoned"));
    let http = client();
    let mut done = Vec::with_capacity(payments.len());
    for payment in payments {
        let payment = if payment.state == PaymentState::Unknown {
            pay(&http, users, live, 0, load, payment).await;
            load.payments
                .lock()
                .expect("not poisoned")
                .pop()
                .expect("pushed")
        } else {
            payment
        };
        if payment.state == PaymentState::Unknown {
            return Err(failed(format!("{payment:?} has no answer")));
        }
        done.push(payment);
    }
    let base = live.lock().expect("not poisoned")[0].clone();
    for payment in done.iter_mut().filter(|p| p.state == PaymentState::Pending) {
        let id = payment
            .id
            .clone()
            .ok_or_else(|| failed("a 202 without an id"))?;
        let deadline = Instant::now() + PAY_PATIENCE;
        loop {
            let answer = retried(|| {
                http.get(format!("{base}/v1/transfers/{id}"))
                    .bearer_auth(&users[payment.from].token)
            })
            .await?;
            match answer["status"].as_str() {
                Some("posted") => payment.state = PaymentState::Posted,
                Some("voided") => payment.state = PaymentState::Refused,
                _ if Instant::now() >= deadline => {
                    return Err(failed(format!("{payment:?} never ended")))
                }
                _ => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            break;
        }
    }
    Ok(done)
}

/// What an audit found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// Payments answered 201 or 202 and then posted.
    pub acked: usize,
    /// Acknowledged payments the ledger does not show posted.
    pub lost: usize,
    /// Wallets whose balance is not what the final answers say (a payment applied twice,
    /// or applied behind an answer that said otherwise).
    pub doubled: usize,
}

/// Reads every acknowledged payment back, and each wallet's balance (funding plus what it
/// received less what it sent, as the final answers say; nothing held).
pub async fn audit(
    users: &[User],
    base: &str,
    payments: &[Payment],
    funding: u64,
) -> Result<Audit, FailoverError> {
    let http = client();
    let mut expected: BTreeMap<usize, i128> =
        (0..users.len()).map(|u| (u, i128::from(funding))).collect();
    let mut audit = Audit::default();
    let mut ids = BTreeSet::new();
    for payment in payments.iter().filter(|p| p.state == PaymentState::Posted) {
        *expected.entry(payment.from).or_default() -= i128::from(payment.amount);
        *expected.entry(payment.to).or_default() += i128::from(payment.amount);
        let id = payment
            .id
            .clone()
            .ok_or_else(|| failed("a 201 without an id"))?;
        audit.acked += 1;
        if !ids.insert(id.clone()) {
            audit.doubled += 1;
            continue;
        }
        let read = retried(|| {
            http.get(format!("{base}/v1/transfers/{id}"))
                .bearer_auth(&users[payment.from].token)
        })
        .await;
        if !matches!(&read, Ok(answer) if answer["status"] == "posted") {
            audit.lost += 1;
        }
    }
    for (index, user) in users.iter().enumerate() {
        // The read models a balance is read from may lag the answer by a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let account = retried(|| {
                http.get(format!("{base}/v1/accounts/{}", user.wallet))
                    .bearer_auth(&user.token)
            })
            .await?;
            let amount = |field: &str| -> i128 {
                account[field]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(-1)
            };
            if amount("available") == expected[&index] && amount("held") == 0 {
                break;
            }
            if Instant::now() >= deadline {
                audit.doubled += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(audit)
}

/// The clearing accounts' net and pending amounts on ledger 840, once no transfer between
/// partitions is under way (waiting up to `within`).
pub async fn clearing(
    base: &str,
    keys: &Keys,
    within: Duration,
) -> Result<(i128, u128), FailoverError> {
    let deadline = Instant::now() + within;
    loop {
        let report = report(base, keys).await;
        let usd = report.as_ref().and_then(|r| {
            r["clearing"]
                .as_array()?
                .iter()
                .find(|c| c["ledger"] == 840)
                .cloned()
        });
        let settled = report.as_ref().is_some_and(|r| r["cross_unfinished"] == 0);
        if let (Some(usd), true) = (&usd, settled) {
            let net = usd["net"].as_str().and_then(|v| v.parse().ok());
            let pending = usd["pending"].as_str().and_then(|v| v.parse().ok());
            if let (Some(net), Some(pending)) = (net, pending) {
                return Ok((net, pending));
            }
        }
        if Instant::now() >= deadline {
            return Err(failed(format!(
                "transfers between partitions still under way after {within:?}: {report:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `--cluster` run: users, load for `duration`, `kill` (a node's pid and base URL)
/// sent SIGKILL half way, the time until its partitions are served again, settle, audit.
/// The summary line, and whether the run kept every promise.
pub async fn run(
    nodes: &[String],
    keys: &Keys,
    clients: usize,
    duration: Duration,
    kill: Option<(u32, String)>,
) -> Result<(String, bool), FailoverError> {
    const USERS: usize = 32;
    const FUNDING: u64 = 1_000_000;
    let first = report(&nodes[0], keys)
        .await
        .ok_or_else(|| failed(format!("{} is not a cluster node", nodes[0])))?;
    let partitions = first["partitions"].as_u64().unwrap_or(0);
    let ids: Vec<String> = first["nodes"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(|node| node["node_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let users = Arc::new(users(nodes, keys, USERS, FUNDING, &run_id[..8]).await?);
    let live: Live = Arc::new(Mutex::new(nodes.to_vec()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(run_load(users.clone(), live.clone(), clients, stop.clone()));
    tokio::time::sleep(duration / 2).await;
    let mut takeover = Duration::ZERO;
    if let Some((pid, base)) = &kill {
        let killed_id = report(base, keys)
            .await
            .and_then(|r| r["node_id"].as_str().map(str::to_string))
            .ok_or_else(|| failed(format!("{base} does not answer before the kill")))?;
        live.lock().expect("not poisoned").retain(|b| b != base);
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .map_err(failed)?;
        if !killed.success() {
            return Err(failed(format!("kill -KILL {pid} failed")));
        }
        let survivors: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| *id != killed_id)
            .collect();
        let observer = live.lock().expect("not poisoned")[0].clone();
        takeover = wait_owned(&observer, keys, &survivors, Duration::from_secs(60)).await?;
    }
    tokio::time::sleep(duration / 2).await;
    stop.store(true, Ordering::Relaxed);
    let load = load.await.map_err(failed)?;
    let answered = load.payments.lock().expect("not poisoned").len();
    let failures = load.failures.lock().expect("not poisoned").clone();
    let payments = settle(&users, &live, &load).await?;
    let observer = live.lock().expect("not poisoned")[0].clone();
    let audit = audit(&users, &observer, &payments, FUNDING).await?;
    let (net, pending) = clearing(&observer, keys, Duration::from_secs(60)).await?;
    let line = format!(
        "failover: nodes={} partitions={partitions} acked={} lost={} doubled={} takeover_s={:.2} clearing_net={net}",
        ids.len(),
        audit.acked,
        audit.lost,
        audit.doubled,
        takeover.as_secs_f64(),
    );
    let passed =
        failures.is_empty() && audit.lost == 0 && audit.doubled == 0 && net == 0 && pending == 0;
    if !failures.is_empty() {
        eprintln!("answers that were neither 201, 202, 422 nor 503: {failures:?}");
    }
    eprintln!(
        "answers {} (503: {}), payments {} ({:.0}/s under load)",
        load.answers.load(Ordering::Relaxed),
        load.unavailable.load(Ordering::Relaxed),
        payments.len(),
        answered as f64 / duration.as_secs_f64(),
    );
    Ok((line, passed))
}
