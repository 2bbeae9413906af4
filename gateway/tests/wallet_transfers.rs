//! Wallet transfers over real HTTP, on both stores: Idempotency-Key semantics without a key
//! row per transfer (created transfers are remembered by the ledger, refusals are kept), across
//! a restart and under concurrent duplicates; notes; revocations that survive a restart; and
//! every route that takes an id answering 404 to anyone but its owner.

mod common;

use common::{fund, send, start, user, TestStore};
use kizo_persistence::StoreConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn keys_notes_and_restarts(store: StoreConfig) {
    let (server, base) = start(&store).await;
    let url = |path: &str| format!("{base}{path}");
    let (ada, ada_wallet) = user(&base, "ada@example.com").await;
    let (_bob, bob_wallet) = user(&base, "bob@example.com").await;
    fund(&base, &ada_wallet, 1_000, 1).await;
    let pay = |amount: u64, note: Option<&str>| json!({"from_account_id": ada_wallet, "to": {"account_id": bob_wallet}, "amount": amount, "note": note});
    let post = |key: &'static str, body: Value| {
        let (url, ada) = (url("/v1/transfers"), ada.clone());
        async move { send("POST", url, &ada, Some(key), Some(body)).await }
    };

    // A note travels with the transfer, to both parties, in every view.
    let note = "rent, May \"2026\"";
    let first = post("n1", pay(100, Some(note))).await;
    assert_eq!(
        (first.status, first.replayed),
        (StatusCode::CREATED, false),
        "{}",
        first.body
    );
    assert_eq!(first.body["note"], note);
    let id = first.body["id"].as_str().unwrap().to_string();
    let got = send("GET", url(&format!("/v1/transfers/{id}")), &ada, None, None).await;
    // Reads add the parties' names; the rest is the creation's answer.
    let mut named = got.body.clone();
    assert_eq!(named["from_name"], "A B");
    assert_eq!(named["to_name"], "A B");
    named.as_object_mut().unwrap().remove("from_name");
    named.as_object_mut().unwrap().remove("to_name");
    assert_eq!(named, first.body);
    let page = send(
        "GET",
        url(&format!("/v1/accounts/{ada_wallet}/transfers")),
        &ada,
        None,
        None,
    )
    .await;
    assert_eq!(page.body["transfers"][0], got.body);
    let csv = reqwest::Client::new()
        .get(url(&format!("/v1/accounts/{ada_wallet}/transfers.csv")))
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        csv.contains(",posted,\"rent, May \"\"2026\"\"\"\n"),
        "{csv}"
    );
    let long = "x".repeat(281);
    for (key, bad) in [
        ("n2", long.as_str()),
        ("n3", "pay \u{202E}gnp.exe"),
        ("n4", "a\u{2028}b"),
    ] {
        let refused = post(key, pay(1, Some(bad))).await;
        assert_eq!(
            (refused.status, refused.body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("note")),
            "{bad:?}"
        );
    }
    // The same key with another note is another request.
    let other = post("n1", pay(100, Some("another note"))).await;
    assert_eq!(
        other.body["code"], "idempotency_key_reused",
        "{}",
        other.body
    );

    // A refusal is kept: replayed to the same request, and the key stays taken.
    let poor = post("r1", pay(5_000, None)).await;
    assert_eq!(
        (poor.body["code"].as_str(), poor.replayed),
        (Some("insufficient_funds"), false)
    );
    let again = post("r1", pay(5_000, None)).await;
    assert_eq!(
        (again.status, again.replayed),
        (StatusCode::UNPROCESSABLE_ENTITY, true)
    );
    assert_eq!(again.body, poor.body);
    let changed = post("r1", pay(1, None)).await;
    assert_eq!(
        changed.body["code"], "idempotency_key_reused",
        "{}",
        changed.body
    );
    let same =
        json!({"from_account_id": ada_wallet, "to": {"account_id": ada_wallet}, "amount": 1});
    assert_eq!(post("r2", same.clone()).await.body["code"], "same_account");
    assert!(post("r2", same).await.replayed);

    // Concurrent duplicates: one runs, the others wait their turn (409) or get its answer.
    let racing: Vec<_> = (0..8)
        .map(|_| tokio::spawn(post("c1", pay(7, None))))
        .collect();
    let mut fresh = 0;
    for answer in racing {
        let answer = answer.await.unwrap();
        match (answer.status, answer.replayed) {
            (StatusCode::CREATED, false) => fresh += 1,
            (StatusCode::CREATED, true) => {}
            (StatusCode::CONFLICT, _) => {
                assert_eq!(answer.body["code"], "idempotency_key_in_use")
            }
            other => panic!("{other:?} {}", answer.body),
        }
    }
    assert_eq!(fresh, 1, "exactly one of the duplicates ran");
    let balance = |token: String, wallet: String| {
        let url = url(&format!("/v1/accounts/{wallet}"));
        async move {
            send("GET", url, &token, None, None).await.body["available"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
        }
    };
    assert_eq!(
        balance(ada.clone(), ada_wallet.clone()).await,
        Some(1_000 - 100 - 7)
    );

    // A session ended before a restart stays ended after it.
    let login = json!({"email": "bob@example.com", "password": "long enough password"});
    let tokens = reqwest::Client::new()
        .post(url("/v1/auth/login"))
        .json(&login)
        .send()
        .await
        .unwrap();
    let bob_again = tokens.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let out = send("POST", url("/v1/auth/logout"), &bob_again, None, None).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);

    server.stop().await;
    let (server, base) = start(&store).await;
    let url = |path: &str| format!("{base}{path}");
    let post = |key: &'static str, body: Value| {
        let (url, ada) = (url("/v1/transfers"), ada.clone());
        async move { send("POST", url, &ada, Some(key), Some(body)).await }
    };
    let replay = post("n1", pay(100, Some(note))).await;
    assert_eq!(
        (replay.status, replay.replayed),
        (StatusCode::CREATED, true)
    );
    assert_eq!(replay.body, first.body, "the first answer, note and all");
    let replay = post("r1", pay(5_000, None)).await;
    assert_eq!((replay.replayed, replay.body), (true, poor.body.clone()));
    assert_eq!(
        post("r1", pay(1, None)).await.body["code"],
        "idempotency_key_reused"
    );
    let refused = send("GET", url("/v1/me"), &bob_again, None, None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let balance = send(
        "GET",
        url(&format!("/v1/accounts/{ada_wallet}")),
        &ada,
        None,
        None,
    )
    .await;
    assert_eq!(
        balance.body["available"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok()),
        Some(893),
        "nothing moved twice"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded() {
    let store = TestStore::embedded();
    keys_notes_and_restarts(store.config.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let store = TestStore::postgres("wallet_transfers");
    keys_notes_and_restarts(store.config.clone()).await;
    store.clean().await;
}

/// Every wallet route that names an account or a transfer, called with a stranger's token:
/// 404, as if it did not exist (never 403, which would confirm it does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_ids_are_not_found() {
    let store = TestStore::embedded();
    let (server, base) = start(&store.config).await;
    let url = |path: &str| format!("{base}{path}");
    let (ada, ada_wallet) = user(&base, "ada@example.com").await;
    let (bob, bob_wallet) = user(&base, "bob@example.com").await;
    let (eve, eve_wallet) = user(&base, "eve@example.com").await;
    fund(&base, &bob_wallet, 500, 1).await;
    let pay = json!({"from_account_id": bob_wallet, "to": {"account_id": ada_wallet}, "amount": 5});
    let bobs = send("POST", url("/v1/transfers"), &bob, Some("b1"), Some(pay)).await;
    assert_eq!(bobs.status, StatusCode::CREATED);
    let transfer = bobs.body["id"].as_str().unwrap();
    let reads = [
        format!("/v1/accounts/{bob_wallet}"),
        format!("/v1/accounts/{bob_wallet}/transfers"),
        format!("/v1/accounts/{bob_wallet}/transfers.csv"),
        format!("/v1/transfers/{transfer}"),
    ];
    for path in &reads {
        let owner = send("GET", url(path), &bob, None, None).await;
        assert_eq!(owner.status, StatusCode::OK, "{path}");
        let stranger = send("GET", url(path), &eve, None, None).await;
        assert_eq!(stranger.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(stranger.body["code"], "not_found", "{path}");
    }
    // The other party of a transfer may read it; nobody else.
    let party = send(
        "GET",
        url(&format!("/v1/transfers/{transfer}")),
        &ada,
        None,
        None,
    )
    .await;
    assert_eq!(party.status, StatusCode::OK);
    // Debiting another's account.
    let steal =
        json!({"from_account_id": bob_wallet, "to": {"account_id": eve_wallet}, "amount": 1});
    let answer = send("POST", url("/v1/transfers"), &eve, Some("e1"), Some(steal)).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    // What has no id shows only the caller's own.
    let me = send("GET", url("/v1/me"), &eve, None, None).await;
    assert_eq!(me.body["accounts"][0]["id"], eve_wallet);
    let dashboard = send("GET", url("/v1/dashboard"), &eve, None, None).await;
    assert_eq!(dashboard.body["account"]["id"], eve_wallet);
    assert_eq!(dashboard.body["latest"], json!([]));
    let bob_balance = send(
        "GET",
        url(&format!("/v1/accounts/{bob_wallet}")),
        &bob,
        None,
        None,
    )
    .await;
    assert_eq!(
        bob_balance.body["available"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok()),
        Some(495)
    );
    server.stop().await;
}
