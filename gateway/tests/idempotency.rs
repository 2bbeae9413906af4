//! `Idempotency-Key` on the batch ledger API, over real HTTP, on both stores.

mod common;

use common::{start, TestStore, API_KEY};
use kizo_persistence::StoreConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn post(base: &str, key: Option<&str>, body: &Value) -> (StatusCode, bool, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/v1/ledger/transfers"))
        .bearer_auth(API_KEY)
        .json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    (
        response.status(),
        replayed,
        response.json().await.unwrap_or(Value::Null),
    )
}

fn transfer(id: u32, amount: u32) -> Value {
    json!([{"id": id.to_string(), "debit_account_id": "1", "credit_account_id": "2", "amount": amount.to_string(), "ledger": 1, "code": 1}])
}

async fn keys_replay_refuse_and_survive_a_restart(store: StoreConfig) {
    let (server, base) = start(&store).await;
    let accounts =
        json!([{"id": "1", "ledger": 1, "code": 1}, {"id": "2", "ledger": 1, "code": 1}]);
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/ledger/accounts"))
        .bearer_auth(API_KEY)
        .json(&accounts)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let first = post(&base, Some("pay-7"), &transfer(7, 100)).await;
    assert_eq!((first.0, first.1), (StatusCode::OK, false));
    assert_eq!(first.2["results"][0]["result"], "created");
    let again = post(&base, Some("pay-7"), &transfer(7, 100)).await;
    assert_eq!((again.0, again.1), (StatusCode::OK, true), "replayed");
    assert_eq!(again.2, first.2, "the first answer, not `exists`");
    let other = post(&base, Some("pay-7"), &transfer(8, 100)).await;
    assert_eq!(other.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.2["code"], "idempotency_key_reused");
    let bad = post(&base, Some("bad key with spaces"), &transfer(9, 1)).await;
    assert_eq!(
        (bad.0, bad.2["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_idempotency_key"))
    );

    // Concurrent duplicates: one runs, the others wait (409) or replay its answer.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move { post(&base, Some("pay-10"), &transfer(10, 5)).await })
        })
        .collect();
    let mut ran = 0;
    for task in tasks {
        let (status, replayed, body) = task.await.unwrap();
        match status {
            StatusCode::OK if !replayed => ran += 1,
            StatusCode::OK => assert_eq!(body["results"][0]["result"], "created"),
            StatusCode::CONFLICT => assert_eq!(body["code"], "idempotency_key_in_use"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ran, 1, "exactly one request with the key ran");
    server.stop().await;

    // The keys are durable.
    let (server, base) = start(&store).await;
    let after = post(&base, Some("pay-7"), &transfer(7, 100)).await;
    assert_eq!((after.0, after.1), (StatusCode::OK, true));
    assert_eq!(after.2, first.2);
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/ledger/accounts/lookup"))
        .bearer_auth(API_KEY)
        .json(&json!({"ids": ["2"]}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["accounts"][0]["credits_posted"], "105",
        "each transfer once"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded() {
    let store = TestStore::embedded();
    keys_replay_refuse_and_survive_a_restart(store.config.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let store = TestStore::postgres("keys_replay_refuse_a");
    keys_replay_refuse_and_survive_a_restart(store.config.clone()).await;
    store.clean().await;
}
