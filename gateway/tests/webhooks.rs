//! Webhooks against real local HTTP receivers: every event an endpoint asked for arrives,
//! signed as Standard Webhooks says (checked here with the specification's algorithm, written
//! out: HMAC-SHA256 over `id.timestamp.body` with the secret's bytes); a receiver that fails
//! then recovers gets every event; one that never answers delays nobody else; one that always
//! fails has its deliveries parked, listed, and replayed; a user's endpoint hears only their
//! wallet, and a restart neither loses nor repeats an event.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::receiver::{verify, Mode, Receiver};
use common::{send, user, TestStore, API_KEY};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Fast retries: four attempts 300 ms apart, then parked; a 5 s timeout.
async fn start(store: &TestStore) -> (kizo_gateway::Server, String) {
    common::start_configured(&store.config, |config| {
        config.webhooks = kizo_gateway::webhooks::WebhookSettings {
            allow_private: true,
            policy: kizo_webhooks::RetryPolicy {
                delays_ms: vec![0, 300, 300, 300],
                jitter_percent: 0,
            },
            timeout: Duration::from_secs(5),
        };
    })
    .await
}

async fn register(base: &str, token: &str, path: &str, url: &str, kinds: &[&str]) -> Value {
    let answer = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&json!({"url": url, "kinds": kinds}))
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body: Value = answer.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["secret"].as_str().unwrap().starts_with("whsec_"));
    body
}

async fn delete(url: String, token: &str) -> StatusCode {
    reqwest::Client::new()
        .delete(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// Waits until `endpoint`'s deliveries in `state` are `n`; returns them.
async fn deliveries_in(base: &str, path: &str, token: &str, state: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = send(
            "GET",
            format!("{base}{path}/deliveries?state={state}&limit=100"),
            token,
            None,
            None,
        )
        .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let found = page.body["deliveries"].as_array().unwrap().clone();
        if found.len() == n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{} {state} deliveries, not {n}: {}",
            found.len(),
            page.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_get_every_event_signed_through_failures_a_stalled_peer_and_a_replay() {
    let store = TestStore::postgres("webhooks");
    let (server, base) = start(&store).await;
    let every = Receiver::start(Mode::Accept).await;
    let flaky = Receiver::start(Mode::FailFirst(2)).await;
    let stalled = Receiver::start(Mode::Hang).await;
    let failing = Receiver::start(Mode::Fail).await;
    let hooks = "/v1/ledger/webhooks";
    let every_hook = register(&base, API_KEY, hooks, &every.url, &["*"]).await;
    let flaky_hook = register(&base, API_KEY, hooks, &flaky.url, &["transfer.posted"]).await;
    let stalled_hook = register(&base, API_KEY, hooks, &stalled.url, &["*"]).await;
    let failing_hook = register(&base, API_KEY, hooks, &failing.url, &["account.created"]).await;

    // Two accounts and twenty transfers: 22 events.
    let accounts = json!([
        {"id": "101", "ledger": 7, "code": 1},
        {"id": "102", "ledger": 7, "code": 1},
    ]);
    let created = send(
        "POST",
        format!("{base}/v1/ledger/accounts"),
        API_KEY,
        None,
        Some(accounts),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let transfers: Vec<Value> = (1..=20)
        .map(|id| json!({"id": id.to_string(), "debit_account_id": "101", "credit_account_id": "102", "amount": "5", "ledger": 7, "code": 1}))
        .collect();
    let posted = send(
        "POST",
        format!("{base}/v1/ledger/transfers"),
        API_KEY,
        None,
        Some(json!(transfers)),
    )
    .await;
    assert_eq!(posted.status, StatusCode::OK, "{}", posted.body);
    let committed = Instant::now();

    // The stalled endpoint holds its own attempts for 5 s each; the others are not behind it.
    let received = every.wait_for(22, Duration::from_secs(20)).await;
    assert!(
        committed.elapsed() < Duration::from_secs(4),
        "the stalled endpoint delayed another's deliveries: {:?}",
        committed.elapsed()
    );
    let secret = every_hook["secret"].as_str().unwrap();
    let mut ids: Vec<&str> = received.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 22, "each event once");
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for r in &received {
        verify(secret, r);
        let event: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(event["id"], r.id.as_str());
        assert_eq!(event["schema"], "kizo.event.v1");
        *kinds
            .entry(event["kind"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(kinds["account.created"], 2);
    assert_eq!(kinds["transfer.posted"], 20);

    // Failed twice, then accepted: every transfer, each on its third attempt.
    let got = flaky.wait_for(20, Duration::from_secs(20)).await;
    for r in &got {
        verify(flaky_hook["secret"].as_str().unwrap(), r);
        assert_eq!(flaky.attempts(&r.id), 3, "{}", r.id);
    }
    let flaky_path = format!("{hooks}/{}", flaky_hook["id"].as_str().unwrap());
    let delivered = deliveries_in(&base, &flaky_path, API_KEY, "delivered", 20).await;
    assert!(delivered
        .iter()
        .all(|d| d["attempts"] == 3 && d["kind"] == "transfer.posted"));

    // Always failing: parked after four attempts, with the reason; replayed once it recovers.
    let failing_path = format!("{hooks}/{}", failing_hook["id"].as_str().unwrap());
    let parked = deliveries_in(&base, &failing_path, API_KEY, "parked", 2).await;
    for d in &parked {
        assert_eq!(d["attempts"], 4, "{d}");
        assert_eq!(d["last_error"], "answered 500");
        assert_eq!(failing.attempts(d["event_id"].as_str().unwrap()), 4);
    }
    *failing.mode.lock().unwrap() = Mode::Accept;
    let first = parked[0]["event_id"].as_str().unwrap();
    let replay = |body: Value| {
        send(
            "POST",
            format!("{base}{failing_path}/replay"),
            API_KEY,
            None,
            Some(body),
        )
    };
    let one = replay(json!({"event_ids": [first]})).await;
    assert_eq!(
        (one.status, one.body["replayed"].clone()),
        (StatusCode::OK, json!(1))
    );
    failing.wait_for(1, Duration::from_secs(10)).await;
    let rest = replay(json!({})).await;
    assert_eq!(rest.body["replayed"], 1, "{}", rest.body);
    let replayed = failing.wait_for(2, Duration::from_secs(10)).await;
    for r in &replayed {
        verify(failing_hook["secret"].as_str().unwrap(), r);
    }
    deliveries_in(&base, &failing_path, API_KEY, "delivered", 2).await;
    assert_eq!(
        replay(json!({})).await.body["replayed"],
        0,
        "nothing parked is left"
    );

    // Bad requests, and what is not there.
    let bad = replay(json!({"event_ids": ["x"]})).await;
    assert_eq!(
        (bad.status, bad.body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("event_ids"))
    );
    let unknown = send(
        "POST",
        format!("{base}{hooks}/wh_nope/replay"),
        API_KEY,
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.body["code"].clone()),
        (StatusCode::NOT_FOUND, json!("webhook_not_found"))
    );
    for (body, code) in [
        (
            json!({"url": "ftp://example.com/", "kinds": ["*"]}),
            "bad_webhook_url",
        ),
        (
            json!({"url": "https://example.com/", "kinds": ["transfer.nope"]}),
            "bad_webhook_kinds",
        ),
        (
            json!({"url": "https://example.com/", "kinds": []}),
            "bad_webhook_kinds",
        ),
    ] {
        let refused = send("POST", format!("{base}{hooks}"), API_KEY, None, Some(body)).await;
        assert_eq!(
            (refused.status, refused.body["code"].clone()),
            (StatusCode::UNPROCESSABLE_ENTITY, json!(code))
        );
    }
    let wrong_key = send("GET", format!("{base}{hooks}"), "not-the-key", None, None).await;
    assert_eq!(wrong_key.status, StatusCode::UNAUTHORIZED);

    // Listed without secrets; removed once; at most 16.
    let listed = send("GET", format!("{base}{hooks}"), API_KEY, None, None).await;
    let endpoints = listed.body["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 4);
    assert!(endpoints.iter().all(|e| e.get("secret").is_none()));
    let stalled_path = format!("{base}{hooks}/{}", stalled_hook["id"].as_str().unwrap());
    assert_eq!(
        delete(stalled_path.clone(), API_KEY).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(delete(stalled_path, API_KEY).await, StatusCode::NOT_FOUND);
    for _ in 0..13 {
        register(&base, API_KEY, hooks, "https://example.com/hook", &["*"]).await;
    }
    let over = send(
        "POST",
        format!("{base}{hooks}"),
        API_KEY,
        None,
        Some(json!({"url": "https://example.com/", "kinds": ["*"]})),
    )
    .await;
    assert_eq!(
        (over.status, over.body["code"].clone()),
        (StatusCode::CONFLICT, json!("too_many_webhooks"))
    );

    server.stop().await;
    store.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_endpoint_hears_their_wallet_only_and_a_restart_repeats_nothing() {
    let store = TestStore::embedded();
    let (server, base) = start(&store).await;
    let (ana, ana_wallet) = user(&base, "ana@hooks.test").await;
    let (bo, bo_wallet) = user(&base, "bo@hooks.test").await;
    let (_cy, cy_wallet) = user(&base, "cy@hooks.test").await;
    common::fund(&base, &ana_wallet, 10_000, 1).await;
    let bo_receiver = Receiver::start(Mode::Accept).await;
    let hook = register(&base, &bo, "/v1/me/webhooks", &bo_receiver.url, &["*"]).await;
    let hook_path = format!("/v1/me/webhooks/{}", hook["id"].as_str().unwrap());

    let pay = |token: String, key: &'static str, from: String, to: String, amount: u64| {
        let base = base.clone();
        async move {
            let paid = send(
                "POST",
                format!("{base}/v1/transfers"),
                &token,
                Some(key),
                Some(json!({"from_account_id": from, "to": {"account_id": to}, "amount": amount})),
            )
            .await;
            assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.body);
        }
    };
    pay(
        ana.clone(),
        "k-1",
        ana_wallet.clone(),
        cy_wallet.clone(),
        100,
    )
    .await;
    pay(
        ana.clone(),
        "k-2",
        ana_wallet.clone(),
        bo_wallet.clone(),
        300,
    )
    .await;
    let bo_ledger_id = uuid::Uuid::parse_str(&bo_wallet)
        .unwrap()
        .as_u128()
        .to_string();
    let got = bo_receiver.wait_for(1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(bo_receiver.accepted().len(), 1, "only Bo's payment");
    verify(hook["secret"].as_str().unwrap(), &got[0]);
    let event: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(event["kind"], "transfer.posted");
    assert_eq!(
        event["transfer"]["credit_account_id"],
        bo_ledger_id.as_str()
    );
    assert_eq!(event["transfer"]["amount"], "300");

    // Bo's endpoint is not Ana's to see, nor the ledger key holder's.
    let theirs = send(
        "GET",
        format!("{base}{hook_path}/deliveries"),
        &ana,
        None,
        None,
    )
    .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    let listed = send(
        "GET",
        format!("{base}/v1/ledger/webhooks"),
        API_KEY,
        None,
        None,
    )
    .await;
    assert_eq!(listed.body["endpoints"], json!([]));
    let mine = send("GET", format!("{base}/v1/me/webhooks"), &bo, None, None).await;
    assert_eq!(mine.body["endpoints"][0]["id"], hook["id"]);

    // A restart: the next payment arrives, the first is not sent again.
    server.stop().await;
    let (server, base) = start(&store).await;
    let ana = login(&base, "ana@hooks.test").await;
    let pay_again = send(
        "POST",
        format!("{base}/v1/transfers"),
        &ana,
        Some("k-3"),
        Some(json!({"from_account_id": ana_wallet, "to": {"account_id": bo_wallet}, "amount": 5})),
    )
    .await;
    assert_eq!(pay_again.status, StatusCode::CREATED, "{}", pay_again.body);
    let got = bo_receiver.wait_for(2, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(bo_receiver.accepted().len(), 2);
    assert_ne!(got[0].id, got[1].id);
    let bo = login(&base, "bo@hooks.test").await;
    deliveries_in(&base, &hook_path, &bo, "delivered", 2).await;
    server.stop().await;
    store.clean().await;
}

/// Logs in again (after a restart); returns the access token.
async fn login(base: &str, email: &str) -> String {
    let tokens: Value = reqwest::Client::new()
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": email, "password": "long enough password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokens["access_token"].as_str().unwrap().to_string()
}
