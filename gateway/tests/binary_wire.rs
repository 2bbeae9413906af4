//! The batch ledger API's binary format over real HTTP: records in and out, each form answered
//! as asked, malformed bodies refused naming their offset and applying nothing (random bodies
//! included), idempotent replays in the form first asked; and HTTP/2 (h2c) beside HTTP/1.1.

mod common;

use common::{TestStore, API_KEY};
use kizo_binary::{
    decode_account_records, decode_results, decode_transfer_records, encode_accounts, encode_ids,
    encode_transfers, MEDIA_TYPE, RECORD_SIZE,
};
use kizo_ledger::{Account, CreateAccountResult, CreateTransferResult, Transfer, BATCH_EVENTS_MAX};
use reqwest::StatusCode;
use serde_json::Value;

struct Answer {
    status: StatusCode,
    content_type: String,
    replayed: bool,
    bytes: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

async fn post(
    client: &reqwest::Client,
    url: String,
    body: Vec<u8>,
    content_type: &str,
    accept: Option<&str>,
    key: Option<&str>,
) -> Answer {
    let mut request = client
        .post(url)
        .bearer_auth(API_KEY)
        .header("content-type", content_type)
        .body(body);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    Answer {
        status: response.status(),
        content_type: response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default(),
        replayed: response.headers().contains_key("idempotent-replayed"),
        bytes: response.bytes().await.unwrap().to_vec(),
    }
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer::new(id, debit, credit, amount, 7, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_batches_round_trip_and_malformed_ones_apply_nothing() {
    let store = TestStore::postgres("binary_wire");
    let (server, base) = common::start(&store.config).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{base}/v1/ledger/{path}");
    let binary = |path: &'static str, body: Vec<u8>| {
        let (client, url) = (client.clone(), url(path));
        async move { post(&client, url, body, MEDIA_TYPE, None, None).await }
    };

    // Accounts: all created is an empty answer; again, each listed as `exists`.
    let accounts = [Account::new(1, 7, 1), Account::new(2, 7, 1)];
    let created = binary("accounts", encode_accounts(&accounts)).await;
    assert_eq!(
        (created.status, created.content_type.as_str()),
        (StatusCode::OK, MEDIA_TYPE)
    );
    assert!(created.bytes.is_empty());
    let again = binary("accounts", encode_accounts(&accounts)).await;
    assert_eq!(
        decode_results::<CreateAccountResult>(&again.bytes, 2).unwrap(),
        [CreateAccountResult::Exists; 2]
    );

    // Transfers: the created one is not listed, the others are, by index.
    let transfers = [
        transfer(1, 1, 2, 10),
        transfer(0, 1, 2, 10),
        transfer(3, 1, 99, 10),
    ];
    let answer = binary("transfers", encode_transfers(&transfers)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let results = decode_results::<CreateTransferResult>(&answer.bytes, 3).unwrap();
    assert_eq!(results[0], CreateTransferResult::Created);
    assert_eq!(results[1], CreateTransferResult::IdMustNotBeZero);
    assert_ne!(results[2], CreateTransferResult::Created);

    // Lookups: the records found, in the order asked.
    let found = binary("transfers/lookup", encode_ids(&[404, 1])).await;
    let found = decode_transfer_records(&found.bytes).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].id, found[0].amount, found[0].ledger), (1, 10, 7));
    assert!(found[0].timestamp > 0);
    let balances = binary("accounts/lookup", encode_ids(&[2, 1])).await;
    let balances = decode_account_records(&balances.bytes).unwrap();
    assert_eq!(
        balances
            .iter()
            .map(|a| (a.id, a.credits_posted, a.debits_posted))
            .collect::<Vec<_>>(),
        [(2, 10, 0), (1, 0, 10)]
    );

    // Each form answered as asked.
    let as_json = post(
        &client,
        url("transfers/lookup"),
        encode_ids(&[1]),
        MEDIA_TYPE,
        Some("application/json"),
        None,
    )
    .await;
    assert_eq!(as_json.content_type, "application/json");
    assert_eq!(as_json.json()["transfers"][0]["amount"], "10");
    let from_json = post(
        &client,
        url("transfers/lookup"),
        br#"{"ids": ["1"]}"#.to_vec(),
        "application/json",
        Some(MEDIA_TYPE),
        None,
    )
    .await;
    assert_eq!(from_json.content_type, MEDIA_TYPE);
    assert_eq!(decode_transfer_records(&from_json.bytes).unwrap(), found);

    // Malformed: refused whole, naming the byte; nothing of it applied.
    let mut cut = encode_transfers(&[
        transfer(10, 1, 2, 1),
        transfer(11, 1, 2, 1),
        transfer(12, 1, 2, 1),
    ]);
    cut.extend_from_slice(&[0; 5]);
    let refused = binary("transfers", cut).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.content_type, "application/problem+json");
    assert_eq!(refused.json()["code"], "malformed_binary");
    assert!(
        refused.json()["detail"]
            .as_str()
            .unwrap()
            .starts_with("at byte 384:"),
        "{}",
        refused.json()
    );
    let none = binary("transfers/lookup", encode_ids(&[10, 11, 12])).await;
    assert!(
        none.bytes.is_empty(),
        "nothing of a malformed batch is applied"
    );
    let mut reserved = encode_accounts(&[Account::new(30, 7, 1), Account::new(31, 7, 1)]);
    reserved[RECORD_SIZE + 108] = 1;
    let refused = binary("accounts", reserved).await;
    assert_eq!(
        refused.json()["detail"].as_str().unwrap(),
        "at byte 236: reserved bytes must be zero"
    );
    assert!(binary("accounts/lookup", encode_ids(&[30, 31]))
        .await
        .bytes
        .is_empty());
    let empty = binary("transfers", Vec::new()).await;
    assert_eq!(
        (empty.status, empty.json()["code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field".into())
    );
    let over = binary("transfers", vec![0; (BATCH_EVENTS_MAX + 1) * RECORD_SIZE]).await;
    assert_eq!(over.json()["code"], "batch_too_large");

    // Random bodies of any length: a problem or an answer, never a server error.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..60 {
        let len = match round % 3 {
            0 => (next() % 700) as usize,
            _ => (next() % 6) as usize * RECORD_SIZE,
        };
        let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        for path in [
            "accounts",
            "transfers",
            "accounts/lookup",
            "transfers/lookup",
        ] {
            let answer = binary(path, body.clone()).await;
            assert!(
                !answer.status.is_server_error(),
                "{path} {len}: {}",
                answer.status
            );
        }
    }
    // The books still balance: every posted debit has its credit.
    let all = binary("accounts/lookup", encode_ids(&[1, 2])).await;
    let all = decode_account_records(&all.bytes).unwrap();
    let debits: u128 = all.iter().map(|a| a.debits_posted).sum();
    let credits: u128 = all.iter().map(|a| a.credits_posted).sum();
    assert_eq!(debits, credits);

    // An idempotent retry gets the first answer in its form; the other form is another request.
    let body = encode_transfers(&[transfer(40, 1, 2, 1)]);
    let first = post(
        &client,
        url("transfers"),
        body.clone(),
        MEDIA_TYPE,
        None,
        Some("k-1"),
    )
    .await;
    let retry = post(
        &client,
        url("transfers"),
        body.clone(),
        MEDIA_TYPE,
        None,
        Some("k-1"),
    )
    .await;
    assert!(retry.replayed && !first.replayed);
    assert_eq!(
        (retry.content_type.as_str(), retry.bytes.clone()),
        (MEDIA_TYPE, first.bytes)
    );
    let other = post(
        &client,
        url("transfers"),
        body,
        MEDIA_TYPE,
        Some("application/json"),
        Some("k-1"),
    )
    .await;
    assert_eq!(other.json()["code"], "idempotency_key_reused");

    server.stop().await;
    store.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_carries_many_batches_on_one_connection_beside_http1() {
    let store = TestStore::embedded();
    let (server, base) = common::start(&store.config).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let accounts = post(
        &h2,
        format!("{base}/v1/ledger/accounts"),
        encode_accounts(&[Account::new(1, 7, 1), Account::new(2, 7, 1)]),
        MEDIA_TYPE,
        None,
        None,
    )
    .await;
    assert_eq!(accounts.status, StatusCode::OK);
    let health = h2.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.version(), reqwest::Version::HTTP_2);
    // 32 batches at once on the one connection.
    let batches = (0..32u128).map(|batch| {
        let transfers: Vec<Transfer> = (0..100u128)
            .map(|n| transfer(1_000 + batch * 100 + n, 1, 2, 1))
            .collect();
        post(
            &h2,
            format!("{base}/v1/ledger/transfers"),
            encode_transfers(&transfers),
            MEDIA_TYPE,
            None,
            None,
        )
    });
    for answer in futures_util::future::join_all(batches).await {
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.bytes.is_empty(), "every transfer created");
    }
    // HTTP/1.1 on the same port.
    let h1 = reqwest::Client::builder().http1_only().build().unwrap();
    let found = post(
        &h1,
        format!("{base}/v1/ledger/accounts/lookup"),
        encode_ids(&[2]),
        MEDIA_TYPE,
        None,
        None,
    )
    .await;
    assert_eq!(
        decode_account_records(&found.bytes).unwrap()[0].credits_posted,
        3_200
    );
    let health = h1.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.version(), reqwest::Version::HTTP_11);
    server.stop().await;
    store.clean().await;
}
