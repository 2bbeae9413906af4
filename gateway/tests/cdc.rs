//! Change data capture against a real `nats-server -js` process started by each test: every
//! committed transfer is on the stream once, in log order; the broker down for a while holds
//! no commit back and the publisher catches up; a gateway killed with SIGKILL in the middle of
//! publishing resumes with no gap and no duplicate for a consumer.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{send, GatewayProcess, TestStore, API_KEY};
use kizo_loadgen::cdc_audit::{audit, wait_caught_up};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A `nats-server` with JetStream, its store in a folder of its own.
struct Nats {
    child: std::process::Child,
    port: u16,
}

impl Nats {
    fn start(port: u16, dir: &std::path::Path) -> Nats {
        let child = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-sd", dir.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server is installed (.ci/run installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nats { child, port }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn ledger(base: &str, path: &str, body: Value) -> Value {
    let answer = send(
        "POST",
        format!("{base}/v1/ledger/{path}"),
        API_KEY,
        None,
        Some(body),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body
}

/// Accounts `ids` (the first a source without limits), in one batch.
async fn accounts(base: &str, ids: &[u128]) {
    let batch: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id.to_string(), "ledger": 840, "code": 1}))
        .collect();
    let body = ledger(base, "accounts", Value::Array(batch)).await;
    for result in body["results"].as_array().unwrap() {
        assert_eq!(result["result"], "created", "{body}");
    }
}

/// `count` transfers from `ids[0]` to the others, with ids from `first`; the ids created.
async fn transfers(base: &str, ids: &[u128], first: u128, count: usize) -> Vec<u128> {
    let batch: Vec<Value> = (0..count)
        .map(|n| {
            json!({"id": (first + n as u128).to_string(), "debit_account_id": ids[0].to_string(),
                   "credit_account_id": ids[1 + n % (ids.len() - 1)].to_string(),
                   "amount": "1", "ledger": 840, "code": 1})
        })
        .collect();
    let body = ledger(base, "transfers", Value::Array(batch)).await;
    let results = body["results"].as_array().unwrap();
    assert!(results.iter().all(|r| r["result"] == "created"), "{body}");
    (0..count).map(|n| first + n as u128).collect()
}

async fn readyz(base: &str) -> Value {
    reqwest::get(format!("{base}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_commit_is_published_once_in_order_and_the_broker_may_be_away() {
    let nats_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut nats = Nats::start(port, nats_dir.path());
    let store = TestStore::postgres("cdc_publish");
    let url = nats.url();
    let (server, base) = common::start_configured(&store.config, |config| {
        config.cdc = Some(kizo_gateway::cdc::CdcConfig::new(url));
    })
    .await;
    let ids: Vec<u128> = (1..=9).collect();
    accounts(&base, &ids).await;
    let mut acknowledged = transfers(&base, &ids, 1_000, 500).await;
    // Two-phase: one posted, one voided, one left to expire.
    let body = ledger(
        &base,
        "transfers",
        json!([
            {"id": "2001", "debit_account_id": "1", "credit_account_id": "2", "amount": "5", "ledger": 840, "code": 1, "flags": {"pending": true}},
            {"id": "2002", "debit_account_id": "1", "credit_account_id": "2", "amount": "5", "ledger": 840, "code": 1, "flags": {"pending": true}},
            {"id": "2003", "debit_account_id": "1", "credit_account_id": "2", "amount": "5", "ledger": 840, "code": 1, "timeout": 1, "flags": {"pending": true}},
            {"id": "2004", "pending_id": "2001", "amount": "5", "ledger": 840, "code": 1, "flags": {"post_pending_transfer": true}},
            {"id": "2005", "pending_id": "2002", "ledger": 840, "code": 1, "flags": {"void_pending_transfer": true}},
        ]),
    )
    .await;
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["result"] == "created"),
        "{body}"
    );
    acknowledged.extend(2001..=2005);
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    let accounts_set: BTreeSet<u128> = ids.iter().copied().collect();
    wait_caught_up(&base).await;
    let found = audit(&nats.url(), "KIZO", &accounts_set, &acknowledged)
        .await
        .unwrap();
    assert!(found.passed(), "{found:?}");
    assert_eq!(found.kinds["account.created"], 9, "{found:?}");
    assert_eq!(found.kinds["transfer.posted"], 501, "{found:?}");
    assert_eq!(found.kinds["transfer.pending"], 3, "{found:?}");
    assert_eq!(found.kinds["transfer.voided"], 1, "{found:?}");
    assert_eq!(found.kinds["transfer.expired"], 1, "{found:?}");
    assert_eq!(found.events, 9 + 505 + 1);

    // The broker goes away: commits go on, the lag shows, nothing is lost.
    nats.kill();
    acknowledged.extend(transfers(&base, &ids, 3_000, 300).await);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = readyz(&base).await;
        if ready["cdc"]["connected"] == false && ready["cdc"]["lag_commits"].as_u64() > Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "{ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    acknowledged.extend(transfers(&base, &ids, 4_000, 300).await);
    let _nats = Nats::start(port, nats_dir.path());
    wait_caught_up(&base).await;
    let found = audit(
        &format!("nats://127.0.0.1:{port}"),
        "KIZO",
        &accounts_set,
        &acknowledged,
    )
    .await
    .unwrap();
    assert!(found.passed(), "{found:?}");
    assert_eq!(found.kinds["transfer.posted"], 1_101, "{found:?}");
    server.stop().await;
    store.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_while_publishing_resumes_with_no_gap_and_no_duplicate() {
    let nats_dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), nats_dir.path());
    let store = TestStore::postgres("cdc_kill");
    let url = nats.url();
    // A duplicate window too short to help: what the restarted publisher finds at the
    // stream's end is all that keeps it from publishing a copy.
    let args = ["--nats-url", url.as_str(), "--nats-duplicate-window", "1s"];
    let gateway = GatewayProcess::start(&store, &args).await;
    let ids: Vec<u128> = (1..=33).collect();
    accounts(&gateway.base, &ids).await;
    // Enough that the publisher is still at work when the load ends.
    let mut acknowledged = Vec::new();
    for batch in 0..10 {
        acknowledged.extend(transfers(&gateway.base, &ids, 10_000 + batch * 5_000, 5_000).await);
    }
    let lag = readyz(&gateway.base).await["cdc"]["lag_commits"]
        .as_u64()
        .unwrap();
    gateway.kill().await;
    eprintln!("killed with {lag} commits to publish");
    // Down for longer than the duplicate window.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let gateway = GatewayProcess::start(&store, &args).await;
    wait_caught_up(&gateway.base).await;
    let accounts_set: BTreeSet<u128> = ids.iter().copied().collect();
    let found = audit(&url, "KIZO", &accounts_set, &acknowledged)
        .await
        .unwrap();
    println!("{}", found.line());
    assert!(found.passed(), "{found:?}");
    assert_eq!(found.kinds["transfer.posted"], acknowledged.len());
    assert!(
        lag > 0,
        "the kill came after the publisher had caught up: nothing was tested"
    );
    gateway.terminate().await;
    store.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_publishes_each_partition_in_its_order_with_the_legs_between_them() {
    let nats_dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), nats_dir.path());
    let store = TestStore::postgres("cdc_cluster");
    let node = |id: &'static str| {
        let (store, url) = (store.config.clone(), nats.url());
        async move {
            common::start_configured(&store, |config| {
                config.cdc = Some(kizo_gateway::cdc::CdcConfig::new(url));
                config.cluster = Some(common::cluster_config(id, 4));
                config.webhooks.allow_private = true;
            })
            .await
        }
    };
    let (a, base) = node("a").await;
    let (b, base_b) = node("b").await;
    // A webhook endpoint registered at one node hears every partition's events, whichever
    // node fans each out.
    let receiver = common::receiver::Receiver::start(common::receiver::Mode::Accept).await;
    let hook = send(
        "POST",
        format!("{base_b}/v1/ledger/webhooks"),
        API_KEY,
        None,
        Some(json!({"url": receiver.url, "kinds": ["*"]})),
    )
    .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{}", hook.body);
    // Accounts in every partition; transfers between them, most crossing partitions.
    let ids: Vec<u128> = (1..=12).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = send(
            "POST",
            format!("{base}/v1/ledger/accounts"),
            API_KEY,
            None,
            Some(Value::Array(
                ids.iter()
                    .map(|id| json!({"id": id.to_string(), "ledger": 840, "code": 1}))
                    .collect(),
            )),
        )
        .await;
        if answer.status == StatusCode::OK {
            break;
        }
        // The partitions are still being shared out.
        assert!(Instant::now() < deadline, "{}", answer.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acknowledged = transfers(&base, &ids, 100, 60).await;
    let accounts_set: BTreeSet<u128> = ids.iter().copied().collect();
    // Each node publishes the partitions it serves; one moving between them meanwhile is
    // published by its new owner once it has it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        for base in [&base, &base_b] {
            wait_caught_up(base).await;
        }
        let found = audit(&nats.url(), "KIZO", &accounts_set, &acknowledged)
            .await
            .unwrap();
        let legs = ["cross.held", "cross.credited", "cross.posted"].map(|k| found.kinds.get(k));
        let whole = found.passed() && legs[0] == legs[1] && legs[1] == legs[2];
        if whole || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(found.passed(), "{found:?}");
    assert_eq!(found.kinds["account.created"], 12, "{found:?}");
    assert!(
        found.kinds.get("cross.held").is_some_and(|&n| n > 0),
        "{found:?}"
    );
    assert_eq!(
        found.kinds.get("cross.held"),
        found.kinds.get("cross.posted"),
        "{found:?}"
    );
    assert_eq!(
        found.kinds.get("cross.held"),
        found.kinds.get("cross.credited"),
        "{found:?}"
    );
    // The same events as webhooks, each id once (a partition fanned out by its new owner after
    // a move goes on from where the old one stopped).
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivered = loop {
        let mut by_kind: std::collections::BTreeMap<String, usize> = Default::default();
        let mut seen = BTreeSet::new();
        for received in receiver.accepted() {
            common::receiver::verify(hook.body["secret"].as_str().unwrap(), &received);
            if seen.insert(received.id.clone()) {
                let event: Value = serde_json::from_str(&received.body).unwrap();
                *by_kind
                    .entry(event["kind"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
        let reached = found
            .kinds
            .iter()
            .all(|(kind, n)| by_kind.get(kind).is_some_and(|got| got >= n));
        if reached || Instant::now() > deadline {
            break by_kind;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The audit counts the run's own accounts; webhooks hear of the clearing accounts too
    // (one per partition and ledger, made with the first leg through it).
    let mut expected = found.kinds.clone();
    let clearing = delivered["account.created"] - expected["account.created"];
    assert!(clearing <= 4, "{delivered:?}");
    expected.insert(
        "account.created".into(),
        expected["account.created"] + clearing,
    );
    assert_eq!(delivered, expected);
    a.stop().await;
    b.stop().await;
    store.clean().await;
}
