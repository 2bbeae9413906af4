//! Snapshots through the server, on both stores: taken on demand through the admin API,
//! listed, and used at the next start, which then equals the server that never stopped.

mod common;

use common::{TestStore, ADMIN_KEY, API_KEY};
use kizo_gateway::server::SnapshotSettings;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn call(method: &str, url: String, key: &str, body: Option<Value>) -> (StatusCode, Value) {
    let client = reqwest::Client::new();
    let mut request = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    }
    .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// A snapshot now, through the admin API.
async fn snapshot_now(base: &str) -> (StatusCode, Value) {
    call(
        "POST",
        format!("{base}/v1/admin/snapshots"),
        ADMIN_KEY,
        None,
    )
    .await
}

/// A POST to the batch ledger API.
async fn ledger(base: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    call("POST", format!("{base}{path}"), API_KEY, body).await
}

/// `count` transfers of 1..=count cents from account 1 to accounts 2..=9, ids from `first`.
async fn transfers(base: &str, first: u64, count: u64) {
    let batch: Vec<Value> = (first..first + count)
        .map(|id| {
            json!({"id": id.to_string(), "debit_account_id": "1",
                   "credit_account_id": (2 + id % 8).to_string(), "amount": (id % 97 + 1).to_string(),
                   "ledger": 840, "code": 1})
        })
        .collect();
    let (status, body) = ledger(base, "/v1/ledger/transfers", Some(json!(batch))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["result"] == "created"),
        "{body}"
    );
}

/// Every account and a page of one account's history, as the API shows them.
async fn state(base: &str) -> (Value, Value) {
    let ids: Vec<String> = (1..=9).map(|i| i.to_string()).collect();
    let (status, accounts) = ledger(
        base,
        "/v1/ledger/accounts/lookup",
        Some(json!({ "ids": ids })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, history) = call(
        "GET",
        format!("{base}/v1/ledger/accounts/3/transfers?reversed=true&limit=50"),
        API_KEY,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    (accounts, history)
}

/// Returns once the store holds every commit so far: a history read waits for that.
async fn caught_up(base: &str) {
    let (status, body) = call(
        "GET",
        format!("{base}/v1/ledger/accounts/1/transfers?limit=1"),
        API_KEY,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A snapshot taken once the store holds everything keeps the shards' windows (4 transfers
/// in all here, and at most a chunk more per shard), not the history.
fn assert_window_only(taken: &Value) {
    let held = taken["snapshot"]["transfers"].as_u64().unwrap();
    assert!(held <= 16, "{held} transfers in the snapshot: {taken}");
}

async fn snapshots_flow(store: TestStore) {
    let folder = tempfile::tempdir().unwrap();
    let settings = SnapshotSettings {
        dir: Some(folder.path().to_path_buf()),
        policy: kizo_snapshots::Policy {
            every_records: u64::MAX,
            every: std::time::Duration::from_secs(3600),
            ..Default::default()
        },
    };
    let (server, base) = common::start_with(&store.config, settings.clone()).await;
    let accounts: Vec<Value> = (1..=9)
        .map(|i| json!({"id": i.to_string(), "ledger": 840, "code": 1}))
        .collect();
    let (status, _) = ledger(&base, "/v1/ledger/accounts", Some(json!(accounts))).await;
    assert_eq!(status, StatusCode::OK);
    transfers(&base, 100, 500).await;
    caught_up(&base).await;

    // Only the admin key opens it.
    let (status, body) = call("POST", format!("{base}/v1/admin/snapshots"), API_KEY, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, taken) = snapshot_now(&base).await;
    assert_eq!(status, StatusCode::CREATED, "{taken}");
    assert_eq!(taken["written"], true);
    assert_eq!(
        taken["snapshot"]["accounts"], 10,
        "nine and the bank's system account"
    );
    assert_window_only(&taken);
    let first_lsn = taken["snapshot"]["lsn"].as_u64().unwrap();
    // Nothing new: the same snapshot, not written again.
    let (status, again) = snapshot_now(&base).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        (again["written"].clone(), again["snapshot"]["lsn"].as_u64()),
        (json!(false), Some(first_lsn))
    );

    transfers(&base, 1_000, 300).await;
    caught_up(&base).await;
    let (status, taken) = snapshot_now(&base).await;
    assert_eq!(status, StatusCode::CREATED, "{taken}");
    assert!(taken["replayed"].as_u64().unwrap() > 0);
    assert_window_only(&taken);
    transfers(&base, 2_000, 200).await; // the log's tail, after the last snapshot
    let (status, listed) = call("GET", format!("{base}/v1/admin/snapshots"), ADMIN_KEY, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["snapshots"].as_array().unwrap().len(), 2, "{listed}");
    let before = state(&base).await;
    server.stop().await;

    // The restart starts from the newest snapshot and the tail, and equals what was served.
    let (server, base) = common::start_with(&store.config, settings.clone()).await;
    assert_eq!(state(&base).await, before);
    // Retries of ids from before, in the snapshot and in the tail, are still known.
    let (_, body) = ledger(&base, "/v1/ledger/transfers", Some(json!([
            {"id": "100", "debit_account_id": "1", "credit_account_id": "2", "amount": "1", "ledger": 840, "code": 1},
            {"id": "2000", "debit_account_id": "1", "credit_account_id": "2", "amount": "61", "ledger": 840, "code": 1},
        ])),
    )
    .await;
    let results: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(results[0], "exists_with_different_credit_account_id");
    assert_eq!(results[1], "exists", "{body}");
    server.stop().await;

    // With every snapshot damaged, the log alone still brings back the same state.
    for entry in std::fs::read_dir(folder.path()).unwrap() {
        let part = entry.unwrap().path().join("part-000.rkyv");
        let mut bytes = std::fs::read(&part).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&part, bytes).unwrap();
    }
    let (server, base) = common::start_with(&store.config, settings).await;
    assert_eq!(state(&base).await, before);
    server.stop().await;

    // A server without snapshots says so.
    let (server, base) = common::start(&store.config).await;
    let (status, body) = snapshot_now(&base).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("snapshots_disabled"))
    );
    server.stop().await;
    store.clean().await;
}

#[tokio::test]
async fn snapshots_on_the_embedded_store() {
    snapshots_flow(TestStore::embedded()).await;
}

#[tokio::test]
async fn snapshots_on_postgres() {
    snapshots_flow(TestStore::postgres("snapshots")).await;
}
