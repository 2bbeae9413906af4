//! Transfers between users over real HTTP, on both stores: required idempotency keys, refusals
//! with their codes, and nobody reading or debiting what is not theirs.

mod common;

use common::{fund, send, start, user, verify, TestStore};
use kizo_persistence::StoreConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn payments_move_money_once_between_owners(store: StoreConfig) {
    let (server, base) = start(&store).await;
    let url = |path: &str| format!("{base}{path}");
    let (ada, ada_wallet) = user(&base, "ada@example.com").await;
    let (bob, bob_wallet) = user(&base, "bob@example.com").await;
    let (eve, _) = user(&base, "eve@example.com").await;

    // Fund Ada through the ledger API: a bank account pays her wallet.
    fund(&base, &ada_wallet, 10_000, 1).await;

    let pay =
        |to: Value, amount: u64| json!({"from_account_id": ada_wallet, "to": to, "amount": amount});
    let to_bob = || json!({"email": "bob@example.com"});
    // Until Bob proves the address is his, nobody can pay it: it may be anybody's.
    let unverified = send(
        "POST",
        url("/v1/transfers"),
        &ada,
        Some("to-unverified"),
        Some(pay(to_bob(), 1)),
    )
    .await;
    assert_eq!(
        (unverified.status, unverified.body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_recipient")),
        "{}",
        unverified.body
    );
    verify(&server, &base, "bob@example.com").await;
    let answer = send(
        "POST",
        url("/v1/transfers"),
        &ada,
        None,
        Some(pay(to_bob(), 2500)),
    )
    .await;
    assert_eq!(
        (answer.status, answer.body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("missing_idempotency_key"))
    );

    let first = send(
        "POST",
        url("/v1/transfers"),
        &ada,
        Some("k1"),
        Some(pay(to_bob(), 2500)),
    )
    .await;
    assert_eq!(
        (first.status, first.replayed),
        (StatusCode::CREATED, false),
        "{}",
        first.body
    );
    assert_eq!(first.body["to_account_id"], bob_wallet);
    let again = send(
        "POST",
        url("/v1/transfers"),
        &ada,
        Some("k1"),
        Some(pay(to_bob(), 2500)),
    )
    .await;
    assert_eq!((again.status, again.replayed), (StatusCode::CREATED, true));
    assert_eq!(again.body, first.body);
    let other = send(
        "POST",
        url("/v1/transfers"),
        &ada,
        Some("k1"),
        Some(pay(to_bob(), 2600)),
    )
    .await;
    assert_eq!(
        (other.status, other.body["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("idempotency_key_reused")
        )
    );
    // Keys are per user: Bob's "k1" is his own.
    let bobs =
        json!({"from_account_id": bob_wallet, "to": {"account_id": ada_wallet}, "amount": 100});
    let answer = send("POST", url("/v1/transfers"), &bob, Some("k1"), Some(bobs)).await;
    assert_eq!(
        (answer.status, answer.replayed),
        (StatusCode::CREATED, false),
        "{}",
        answer.body
    );

    for (key, to, amount, code) in [
        (
            "k2",
            json!({"account_id": bob_wallet}),
            999_999,
            "insufficient_funds",
        ),
        ("k3", json!({"account_id": ada_wallet}), 1, "same_account"),
        (
            "k4",
            json!({"email": "nobody@example.com"}),
            1,
            "unknown_recipient",
        ),
        (
            "k5",
            json!({"account_id": uuid::Uuid::new_v4()}),
            1,
            "unknown_recipient",
        ),
        // The bank's system account exists, but is nobody's wallet.
        (
            "k6",
            json!({"account_id": uuid::Uuid::from_u128(kizo_wallet::ids::bank_account_id(840))}),
            1,
            "unknown_recipient",
        ),
    ] {
        let answer = send(
            "POST",
            url("/v1/transfers"),
            &ada,
            Some(key),
            Some(pay(to, amount)),
        )
        .await;
        assert_eq!(
            (answer.status, answer.body["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(code)),
            "{}",
            answer.body
        );
    }
    let answer = send(
        "POST",
        url("/v1/transfers"),
        &ada,
        Some("k7"),
        Some(pay(to_bob(), 0)),
    )
    .await;
    assert_eq!(
        (answer.status, answer.body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("amount"))
    );
    // Debiting someone else's account: as if it did not exist.
    let steal =
        json!({"from_account_id": bob_wallet, "to": {"account_id": ada_wallet}, "amount": 1});
    let answer = send("POST", url("/v1/transfers"), &ada, Some("k6"), Some(steal)).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);

    let answer = send(
        "GET",
        url(&format!("/v1/accounts/{ada_wallet}")),
        &ada,
        None,
        None,
    )
    .await;
    assert_eq!(
        (
            answer.status,
            answer.body["available"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
        ),
        (StatusCode::OK, Some(7600))
    );
    let answer = send(
        "GET",
        url(&format!("/v1/accounts/{bob_wallet}")),
        &ada,
        None,
        None,
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::NOT_FOUND,
        "only the owner reads an account"
    );
    let answer = send(
        "GET",
        url(&format!("/v1/accounts/{bob_wallet}")),
        &bob,
        None,
        None,
    )
    .await;
    assert_eq!(
        answer.body["available"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok()),
        Some(2400),
        "moved once each way"
    );

    let id = first.body["id"].as_str().unwrap();
    for (token, status) in [
        (&ada, StatusCode::OK),
        (&bob, StatusCode::OK),
        (&eve, StatusCode::NOT_FOUND),
    ] {
        let answer = send(
            "GET",
            url(&format!("/v1/transfers/{id}")),
            token,
            None,
            None,
        )
        .await;
        assert_eq!(answer.status, status);
    }
    let answer = send("GET", url("/v1/transfers/not-a-uuid"), &ada, None, None).await;
    assert_eq!(
        (answer.status, answer.body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_id"))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded() {
    let store = TestStore::embedded();
    payments_move_money_once_between_owners(store.config.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let store = TestStore::postgres("payments_move_money_");
    payments_move_money_once_between_owners(store.config.clone()).await;
    store.clean().await;
}

/// History pages and user search, on the embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_and_user_search() {
    let store = TestStore::embedded();
    let (server, base) = start(&store.config).await;
    let url = |path: &str| format!("{base}{path}");
    let (ada, ada_wallet) = user(&base, "ada@example.com").await;
    let (bob, bob_wallet) = user(&base, "bob@example.com").await;
    fund(&base, &ada_wallet, 1_000, 1).await;
    for i in 0..5 {
        let pay = json!({"from_account_id": ada_wallet, "to": {"account_id": bob_wallet}, "amount": 10 + i});
        let answer = send(
            "POST",
            url("/v1/transfers"),
            &ada,
            Some(&format!("h{i}")),
            Some(pay),
        )
        .await;
        assert_eq!(answer.status, StatusCode::CREATED);
    }
    // Newest first, two at a time.
    let mut amounts = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => {
                format!("/v1/accounts/{ada_wallet}/transfers?direction=sent&limit=2&cursor={c}")
            }
            None => format!("/v1/accounts/{ada_wallet}/transfers?direction=sent&limit=2"),
        };
        let page = send("GET", url(&path), &ada, None, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for t in page.body["transfers"].as_array().unwrap() {
            amounts.push(t["amount"].as_u64().unwrap());
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(amounts, [14, 13, 12, 11, 10]);
    let received = send(
        "GET",
        url(&format!(
            "/v1/accounts/{ada_wallet}/transfers?direction=received"
        )),
        &ada,
        None,
        None,
    )
    .await;
    assert_eq!(
        received.body["transfers"].as_array().unwrap().len(),
        1,
        "the funding"
    );
    let theirs = send(
        "GET",
        url(&format!("/v1/accounts/{bob_wallet}/transfers")),
        &ada,
        None,
        None,
    )
    .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    let bad = send(
        "GET",
        url(&format!("/v1/accounts/{ada_wallet}/transfers?limit=201")),
        &ada,
        None,
        None,
    )
    .await;
    assert_eq!(
        (bad.status, bad.body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("limit"))
    );

    let dashboard = send("GET", url("/v1/dashboard"), &ada, None, None).await;
    assert_eq!(dashboard.status, StatusCode::OK, "{}", dashboard.body);
    // Balances and sums as strings, times as RFC 3339: JavaScript reads all of it exactly.
    common::assert_js_safe(&dashboard.body);
    assert!(dashboard.body["latest"][0]["created_at"].is_string());
    let me = send("GET", url("/v1/me"), &ada, None, None).await;
    common::assert_js_safe(&me.body);
    assert_eq!(
        dashboard.body["sent_this_month"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok()),
        Some(60)
    );
    assert_eq!(
        dashboard.body["received_this_month"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok()),
        Some(1000)
    );
    assert_eq!(dashboard.body["transfers_this_month"].as_u64(), Some(6));
    assert_eq!(
        dashboard.body["account"]["available"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok()),
        Some(940)
    );
    let latest: Vec<u64> = dashboard.body["latest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["amount"].as_u64().unwrap())
        .collect();
    assert_eq!(latest, [14, 13, 12, 11, 10]);

    // The CSV: a header and one line per transfer, newest first.
    let csv = |path: String, token: String| async move {
        let response = reqwest::Client::new()
            .get(path)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    };
    let (status, text) = csv(
        url(&format!("/v1/accounts/{ada_wallet}/transfers.csv")),
        ada.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "id,created_at,direction,counterparty_account_id,amount,currency,status,note"
    );
    assert_eq!(lines.len(), 7, "{text}");
    assert!(
        lines[1].contains(&format!(",sent,{bob_wallet},14,USD,posted")),
        "{}",
        lines[1]
    );
    assert!(lines[6].contains(",received,"), "{}", lines[6]);
    let (_, sent) = csv(
        url(&format!(
            "/v1/accounts/{ada_wallet}/transfers.csv?direction=sent"
        )),
        ada.clone(),
    )
    .await;
    assert_eq!(sent.lines().count(), 6);
    let (status, _) = csv(
        url(&format!("/v1/accounts/{bob_wallet}/transfers.csv")),
        ada.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Search: verified users only; names by prefix, an email only on an exact match.
    let found = send("GET", url("/v1/users?q=bob@example.com"), &ada, None, None).await;
    assert_eq!(
        found.body["users"].as_array().unwrap().len(),
        0,
        "unverified"
    );
    verify(&server, &base, "bob@example.com").await;
    let found = send("GET", url("/v1/users?q=bob@example.com"), &ada, None, None).await;
    assert_eq!(found.body["users"][0]["email"], "bob@example.com");
    let found = send("GET", url("/v1/users?q=bob@"), &ada, None, None).await;
    assert_eq!(
        found.body["users"].as_array().unwrap().len(),
        0,
        "no email prefixes"
    );
    let found = send("GET", url("/v1/users?q=%41%20"), &bob, None, None).await;
    assert_eq!(
        found.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "too short once trimmed"
    );
    let found = send("GET", url("/v1/users?q=a%25_"), &bob, None, None).await;
    assert_eq!(
        found.body["users"].as_array().unwrap().len(),
        0,
        "wildcards are literal"
    );
    server.stop().await;
}

/// One user flooding history, dashboard, search and CSV reads is slowed down alone (429 with
/// Retry-After), on a read budget of their own; another user's payments and reads go on, and
/// the dashboard's month sums, resumed from read to read, stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_flood_slows_its_reader_alone() {
    let store = TestStore::embedded();
    let (server, base) = common::start_configured(&store.config, |config| {
        config.auth_rates.reads_per_user = std::num::NonZeroU32::new(40).unwrap();
    })
    .await;
    let (flooder, flooder_wallet) = user(&base, "flood@example.com").await;
    let (payer, payer_wallet) = user(&base, "payer@example.com").await;
    let (_, payee_wallet) = user(&base, "payee@example.com").await;
    fund(&base, &payer_wallet, 100_000, 1).await;

    let reads = ["/v1/dashboard", "/v1/users?q=payee", "HISTORY", "CSV"];
    let flood = futures_util::future::join_all((0..200).map(|n| {
        let path = match reads[n % reads.len()] {
            "HISTORY" => format!("/v1/accounts/{flooder_wallet}/transfers"),
            "CSV" => format!("/v1/accounts/{flooder_wallet}/transfers.csv"),
            other => other.to_string(),
        };
        let (base, flooder) = (base.clone(), flooder.clone());
        async move {
            let response = reqwest::Client::new()
                .get(format!("{base}{path}"))
                .bearer_auth(flooder)
                .send()
                .await
                .unwrap();
            (
                response.status(),
                response.headers().get("retry-after").is_some(),
            )
        }
    }));
    let payments = async {
        let mut statuses = Vec::new();
        for n in 0..20u64 {
            let pay = json!({"from_account_id": payer_wallet, "to": {"account_id": payee_wallet}, "amount": 100 + n});
            let answer = send(
                "POST",
                format!("{base}/v1/transfers"),
                &payer,
                Some(&format!("pay-{n}")),
                Some(pay),
            )
            .await;
            statuses.push(answer.status);
            // The payer's dashboard, resumed each time, counts every payment so far.
            let dashboard = send("GET", format!("{base}/v1/dashboard"), &payer, None, None).await;
            assert_eq!(dashboard.status, StatusCode::OK, "{}", dashboard.body);
            let sent: u64 = (0..=n).map(|k| 100 + k).sum();
            assert_eq!(dashboard.body["sent_this_month"], sent.to_string());
            assert_eq!(
                dashboard.body["transfers_this_month"],
                n + 2,
                "with the funding"
            );
        }
        statuses
    };
    let (flooded, statuses) = tokio::join!(flood, payments);
    assert!(
        statuses.iter().all(|s| *s == StatusCode::CREATED),
        "{statuses:?}"
    );
    let limited = flooded
        .iter()
        .filter(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(limited > 100, "{limited} of 200 flooding reads limited");
    assert!(flooded
        .iter()
        .all(|(status, retry)| *status == StatusCode::OK
            || (*status == StatusCode::TOO_MANY_REQUESTS && *retry)));
    server.stop().await;
}

/// One user's refused payments fill only their own share of the memory of refusals: past
/// it, their payments are answered 429 (retries of kept refusals still replay), and another
/// user pays as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_remembered_up_to_a_quota_per_user() {
    use futures_util::StreamExt;
    let store = TestStore::embedded();
    let (server, base) = start(&store.config).await;
    let (broke, broke_wallet) = user(&base, "broke@example.com").await;
    let (other, other_wallet) = user(&base, "other@example.com").await;
    fund(&base, &other_wallet, 1_000, 1).await;
    let quota = kizo_gateway::transfer_keys::REFUSALS_PER_USER as usize;
    let pay = |token: String, from: String, to: String, key: String| {
        let base = base.clone();
        async move {
            send(
                "POST",
                format!("{base}/v1/transfers"),
                &token,
                Some(&key),
                Some(json!({"from_account_id": from, "to": {"account_id": to}, "amount": 5, "note": "cannot pay"})),
            )
            .await
        }
    };
    let codes: Vec<String> = futures_util::stream::iter(0..quota)
        .map(|n| {
            pay(
                broke.clone(),
                broke_wallet.clone(),
                other_wallet.clone(),
                format!("k{n}"),
            )
        })
        .buffer_unordered(16)
        .map(|answer| answer.body["code"].as_str().unwrap_or_default().to_string())
        .collect()
        .await;
    assert!(
        codes.iter().all(|c| c == "insufficient_funds"),
        "{:?}",
        &codes[..5]
    );
    let over = pay(
        broke.clone(),
        broke_wallet.clone(),
        other_wallet.clone(),
        "one-more".into(),
    )
    .await;
    assert_eq!(
        (over.status, over.body["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("too_many_refusals")),
        "{}",
        over.body
    );
    let replayed = pay(
        broke.clone(),
        broke_wallet.clone(),
        other_wallet.clone(),
        "k0".into(),
    )
    .await;
    assert_eq!(replayed.body["code"], "insufficient_funds");
    assert!(replayed.replayed);
    let paid = pay(other, other_wallet, broke_wallet, "fine".into()).await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.body);
    server.stop().await;
}
