//! The APIs on a cluster: two nodes in this process on one PostgreSQL, four partitions. What a
//! batch means when its events fall in several partitions (docs/operations.md, the cluster):
//! independent events each in its partition, transfers between partitions through clearing
//! accounts, linked chains across partitions refused whole, an id kept by one partition only;
//! lookups and history through either node; the wallet's payments between partitions and what
//! each side sees; deposits and withdrawals, each settled in its wallet's partition, resumed by
//! its owner when nobody drives it, and reconciled over every partition; `/v1/admin/cluster`.

mod common;

use std::time::{Duration, Instant};

use common::{results, send, TestStore, ADMIN_KEY, API_KEY};
use kizo_cluster::{partition_of, PartitionCount};
use reqwest::StatusCode;
use serde_json::{json, Value};

const PARTITIONS: u32 = 4;

async fn node(store: &TestStore, id: &str) -> (kizo_gateway::Server, String) {
    node_with(store, id, Default::default(), None).await
}

/// A node whose partitions `elsewhere` names keep their logs and read models there, and
/// which settles with the bank at `bank_url` (without one, it serves no settlements).
async fn node_with(
    store: &TestStore,
    id: &str,
    elsewhere: std::collections::BTreeMap<u32, kizo_persistence::StoreConfig>,
    bank_url: Option<&str>,
) -> (kizo_gateway::Server, String) {
    common::start_configured(&store.config, |config| {
        config.bank.url = bank_url.map(str::to_string);
        config.cluster = Some(kizo_gateway::server::ClusterConfig {
            partition_databases: elsewhere,
            router: id.starts_with("router"),
            ..common::cluster_config(id, PARTITIONS)
        });
    })
    .await
}

/// Waits until each node serves some partitions and every partition is owned.
async fn settled(base: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = send(
            "GET",
            format!("{base}/v1/admin/cluster"),
            ADMIN_KEY,
            None,
            None,
        )
        .await;
        if report.status == StatusCode::OK {
            let owners: std::collections::BTreeSet<&str> = report.body["leases"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|l| l["owner"].as_str())
                .collect();
            let owned = report.body["leases"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["owner"].is_string());
            if owned && owners.len() == 2 {
                return report.body;
            }
        }
        assert!(Instant::now() < deadline, "never settled: {}", report.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Account ids in `partition`, from `from` up.
fn ids_in(partition: u32, from: u128, count: usize) -> Vec<u128> {
    let partitions = PartitionCount::new(PARTITIONS).unwrap();
    (from..)
        .filter(|&id| partition_of(id, partitions) == partition)
        .take(count)
        .collect()
}

async fn ledger(base: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let answer = send(
        "POST",
        format!("{base}/v1/ledger/{path}"),
        API_KEY,
        None,
        Some(body),
    )
    .await;
    (answer.status, answer.body)
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u64, flags: Value) -> Value {
    json!({"id": id.to_string(), "debit_account_id": debit.to_string(),
        "credit_account_id": credit.to_string(), "amount": amount.to_string(),
        "ledger": 840, "code": 1, "flags": flags})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_across_partitions_means_what_the_docs_say() {
    let store = TestStore::postgres("cluster_api_batches");
    let (a, base_a) = node(&store, "a").await;
    let (b, base_b) = node(&store, "b").await;
    settled(&base_a).await;

    // Two accounts in each partition; the first of partition 0 may go negative (a source).
    let accounts: Vec<Vec<u128>> = (0..PARTITIONS).map(|p| ids_in(p, 1_000, 2)).collect();
    let mut create = Vec::new();
    for (p, ids) in accounts.iter().enumerate() {
        for &id in ids {
            let flags = if p == 0 && id == ids[0] {
                json!({})
            } else {
                json!({"debits_must_not_exceed_credits": true})
            };
            create.push(json!({"id": id.to_string(), "ledger": 840, "code": 1, "flags": flags}));
        }
    }
    let (status, body) = ledger(&base_b, "accounts", json!(create)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(results(&body).iter().all(|r| *r == "created"), "{body}");

    let source = accounts[0][0];
    let (p1, p2, p3) = (accounts[1][0], accounts[2][0], accounts[3][0]);
    // Independent events: one in partition 0, two crossing, one refused at its hold.
    let (status, body) = ledger(
        &base_a,
        "transfers",
        json!([
            transfer(1, source, accounts[0][1], 10, json!({})),
            transfer(2, source, p1, 20, json!({})),
            transfer(3, source, p2, 30, json!({})),
            transfer(4, p3, source, 1, json!({})),
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        results(&body),
        ["created", "created", "created", "exceeds_credits"]
    );
    // Asked again: answered `exists`, nothing doubled.
    let (_, body) = ledger(
        &base_b,
        "transfers",
        json!([transfer(2, source, p1, 20, json!({}))]),
    )
    .await;
    assert_eq!(results(&body), ["exists"]);
    let (_, body) = ledger(
        &base_b,
        "transfers",
        json!([transfer(2, source, p1, 21, json!({}))]),
    )
    .await;
    assert_eq!(results(&body), ["exists_with_different_amount"]);

    // A linked chain across partitions is refused whole, before anything is applied.
    let (status, body) = ledger(
        &base_a,
        "transfers",
        json!([
            transfer(10, source, accounts[0][1], 5, json!({"linked": true})),
            transfer(11, p1, accounts[1][1], 5, json!({})),
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "linked_across_partitions");
    // One inside a partition is atomic as on one node.
    let (_, body) = ledger(
        &base_b,
        "transfers",
        json!([
            transfer(12, source, accounts[0][1], 5, json!({"linked": true})),
            transfer(13, accounts[0][1], source, 1_000, json!({})),
        ]),
    )
    .await;
    assert_eq!(results(&body), ["linked_event_failed", "exceeds_credits"]);

    // The clearing accounts are the cluster's own.
    let clearing = kizo_cluster::legs::clearing_account_id(840, 1);
    let (status, body) = ledger(
        &base_a,
        "transfers",
        json!([transfer(20, clearing, source, 1, json!({}))]),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "clearing_account_reserved");
    let (status, body) = ledger(
        &base_a,
        "accounts",
        json!([{"id": kizo_cluster::legs::clearing_account_id(978, 0).to_string(), "ledger": 978, "code": 1}]),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // An id one partition holds is refused elsewhere (the read models keep one per id).
    let (_, body) = ledger(
        &base_a,
        "transfers",
        json!([transfer(1, p1, accounts[1][1], 1, json!({}))]),
    )
    .await;
    assert_eq!(results(&body), ["exists_with_different_debit_account_id"]);

    // Lookups and history through any node, and through a router, which holds nothing.
    let (router, base_router) = node(&store, "router-1").await;
    let (_, found) = ledger(
        &base_router,
        "transfers/lookup",
        json!({"ids": ["1", "3", "99"]}),
    )
    .await;
    let found: Vec<&str> = found["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    // Transfer 3 crossed partitions: the ledger holds its legs, not it.
    assert_eq!(found, ["1"]);
    let (_, balances) = ledger(
        &base_b,
        "accounts/lookup",
        json!({"ids": [source.to_string(), p1.to_string(), p2.to_string()]}),
    )
    .await;
    let balances: Vec<(String, String)> = balances["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["debits_posted"].as_str().unwrap().to_string(),
                a["credits_posted"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        balances,
        [
            ("60".to_string(), "0".to_string()),
            ("0".to_string(), "20".to_string()),
            ("0".to_string(), "30".to_string())
        ]
    );
    let history = send(
        "GET",
        format!("{base_a}/v1/ledger/accounts/{p1}/transfers"),
        API_KEY,
        None,
        None,
    )
    .await;
    assert_eq!(history.body["transfers"].as_array().unwrap().len(), 1);

    // The report: nothing under way, the clearing accounts at zero.
    let report = settled(&base_b).await;
    assert_eq!(report["cross_unfinished"], 0, "{report}");
    assert_eq!(report["clearing"][0]["net"], "0", "{report}");
    assert_eq!(report["clearing"][0]["pending"], "0", "{report}");

    // Without a bank every node shares, a node serves no deposits and withdrawals.
    let (token, wallet) = common::user(&base_a, "cluster@api.test").await;
    let deposit = send(
        "POST",
        format!("{base_a}/v1/deposits"),
        &token,
        Some("d-1"),
        Some(json!({"account_id": wallet, "amount": 100})),
    )
    .await;
    assert_eq!(
        deposit.status,
        StatusCode::NOT_IMPLEMENTED,
        "{}",
        deposit.body
    );
    assert_eq!(deposit.body["code"], "settlements_need_a_bank");

    let routed = send(
        "GET",
        format!("{base_router}/v1/admin/cluster"),
        ADMIN_KEY,
        None,
        None,
    )
    .await;
    assert!(
        routed.body["served_here"].as_array().unwrap().is_empty(),
        "{}",
        routed.body
    );
    let owners: Vec<&str> = routed.body["leases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["owner"].as_str())
        .collect();
    assert!(
        !owners.contains(&"router-1"),
        "a router owns nothing: {owners:?}"
    );

    router.stop().await;
    a.stop().await;
    b.stop().await;
    store.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wallet_payment_between_partitions_shows_as_one_payment() {
    let store = TestStore::postgres("cluster_api_wallet");
    let (a, base_a) = node(&store, "a").await;
    let (b, base_b) = node(&store, "b").await;
    settled(&base_a).await;
    let partitions = PartitionCount::new(PARTITIONS).unwrap();
    // Users until two wallets fall in different partitions.
    let (alice_token, alice) = common::user(&base_a, "alice@cluster.test").await;
    let alice_partition =
        partition_of(uuid::Uuid::parse_str(&alice).unwrap().as_u128(), partitions);
    let mut bob = None;
    for n in 0..40 {
        let (token, wallet) = common::user(&base_b, &format!("bob{n}@cluster.test")).await;
        if partition_of(
            uuid::Uuid::parse_str(&wallet).unwrap().as_u128(),
            partitions,
        ) != alice_partition
        {
            bob = Some((token, wallet));
            break;
        }
    }
    let (bob_token, bob) = bob.expect("a wallet in another partition");
    common::fund(&base_b, &alice, 1_000, 77).await;

    let pay = |key: &'static str, amount: u64| {
        let (base, token, bob) = (base_b.clone(), alice_token.clone(), bob.clone());
        let alice = alice.clone();
        async move {
            send(
                "POST",
                format!("{base}/v1/transfers"),
                &token,
                Some(key),
                Some(json!({"from_account_id": alice, "to": {"account_id": bob}, "amount": amount, "note": "lunch"})),
            )
            .await
        }
    };
    let paid = pay("k-1", 300).await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.body);
    let id = paid.body["id"].as_str().unwrap().to_string();
    assert_eq!(paid.body["status"], "posted");
    // A retry answers the first answer; more than the balance is refused at the hold.
    let again = pay("k-1", 300).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert!(again.replayed);
    assert_eq!(again.body["id"], id.as_str());
    let refused = pay("k-2", 5_000).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        refused.body["code"], "insufficient_funds",
        "{}",
        refused.body
    );
    // Sent again to the other node once the money is there: the first answer, replayed.
    common::fund(&base_b, &alice, 10_000, 78).await;
    let again = send(
        "POST",
        format!("{base_a}/v1/transfers"),
        &alice_token,
        Some("k-2"),
        Some(json!({"from_account_id": alice, "to": {"account_id": bob}, "amount": 5_000, "note": "lunch"})),
    )
    .await;
    assert_eq!(
        again.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        again.body
    );
    assert!(again.replayed, "the refusal kept by the other node");

    // Both see it as the payment between them, by its id, with its note.
    for (base, token) in [(&base_a, &alice_token), (&base_b, &bob_token)] {
        let read = send(
            "GET",
            format!("{base}/v1/transfers/{id}"),
            token,
            None,
            None,
        )
        .await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.body);
        assert_eq!(read.body["status"], "posted");
        assert_eq!(read.body["from_account_id"], alice.as_str());
        assert_eq!(read.body["to_account_id"], bob.as_str());
    }
    let history = send(
        "GET",
        format!("{base_a}/v1/accounts/{bob}/transfers"),
        &bob_token,
        None,
        None,
    )
    .await;
    let items = history.body["transfers"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", history.body);
    assert_eq!(items[0]["id"], id.as_str());
    assert_eq!(items[0]["from_account_id"], alice.as_str());
    assert_eq!(items[0]["note"], "lunch");
    let balance = send(
        "GET",
        format!("{base_a}/v1/accounts/{bob}"),
        &bob_token,
        None,
        None,
    )
    .await;
    assert_eq!(balance.body["available"], "300");
    let balance = send(
        "GET",
        format!("{base_a}/v1/accounts/{alice}"),
        &alice_token,
        None,
        None,
    )
    .await;
    assert_eq!(balance.body["available"], "10700");
    assert_eq!(balance.body["held"], "0");

    // A router, which holds no partition, drives a payment between two it does not own.
    let (router, base_router) = node(&store, "router-1").await;
    let routed = send(
        "POST",
        format!("{base_router}/v1/transfers"),
        &alice_token,
        Some("k-3"),
        Some(json!({"from_account_id": alice, "to": {"account_id": bob}, "amount": 200, "note": "via a router"})),
    )
    .await;
    assert_eq!(routed.status, StatusCode::CREATED, "{}", routed.body);
    assert_eq!(routed.body["status"], "posted");
    let balance = send(
        "GET",
        format!("{base_router}/v1/accounts/{bob}"),
        &bob_token,
        None,
        None,
    )
    .await;
    assert_eq!(balance.body["available"], "500", "{}", balance.body);
    router.stop().await;

    // A session ended at one node ends at the other within a poll.
    let me = |base: &str| {
        let (base, token) = (base.to_string(), bob_token.clone());
        async move { send("GET", format!("{base}/v1/me"), &token, None, None).await }
    };
    assert_eq!(me(&base_b).await.status, StatusCode::OK);
    let out = send(
        "POST",
        format!("{base_a}/v1/auth/logout"),
        &bob_token,
        None,
        None,
    )
    .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.body);
    let deadline = Instant::now() + Duration::from_secs(5);
    while me(&base_b).await.status != StatusCode::UNAUTHORIZED {
        assert!(
            Instant::now() < deadline,
            "the other node still takes the token"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    a.stop().await;
    b.stop().await;
    store.clean().await;
}

/// The partitions in `schema`'s log.
async fn partitions_logged_in(store: &TestStore) -> Vec<i32> {
    let kizo_persistence::StoreConfig::Postgres { url, schema } = &store.config else {
        unreachable!("a PostgreSQL store")
    };
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let rows: Vec<(i32,)> = sqlx::query_as(&format!(
        "SELECT DISTINCT partition FROM \"{}\".partition_frames ORDER BY partition",
        schema.as_deref().unwrap()
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.into_iter().map(|(p,)| p).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_on_another_database_keep_their_log_and_read_models_there() {
    let store = TestStore::postgres("cluster_api_storage");
    let other = TestStore::postgres("cluster_api_storage_other");
    let elsewhere: std::collections::BTreeMap<u32, kizo_persistence::StoreConfig> = [2, 3]
        .into_iter()
        .map(|p| (p, other.config.clone()))
        .collect();
    let (a, base_a) = node_with(&store, "a", elsewhere.clone(), None).await;
    let (b, base_b) = node_with(&store, "b", elsewhere, None).await;
    settled(&base_a).await;

    let accounts: Vec<Vec<u128>> = (0..PARTITIONS).map(|p| ids_in(p, 5_000, 2)).collect();
    let create: Vec<Value> = accounts
        .iter()
        .flatten()
        .map(|id| json!({"id": id.to_string(), "ledger": 840, "code": 1}))
        .collect();
    let (status, body) = ledger(&base_a, "accounts", json!(create)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // In each partition, and across: 0 -> 2, 3 -> 1.
    let mut transfers = Vec::new();
    for (p, ids) in accounts.iter().enumerate() {
        transfers.push(transfer(100 + p as u128, ids[0], ids[1], 7, json!({})));
    }
    transfers.push(transfer(200, accounts[0][0], accounts[2][1], 5, json!({})));
    transfers.push(transfer(201, accounts[3][0], accounts[1][1], 3, json!({})));
    let (status, body) = ledger(&base_b, "transfers", json!(transfers)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(results(&body).iter().all(|r| *r == "created"), "{body}");

    assert_eq!(partitions_logged_in(&store).await, [0, 1]);
    assert_eq!(partitions_logged_in(&other).await, [2, 3]);
    // Read through either node, wherever each partition's books are.
    let ids: Vec<String> = accounts.iter().flatten().map(u128::to_string).collect();
    let (_, found) = ledger(&base_a, "accounts/lookup", json!({ "ids": ids })).await;
    assert_eq!(found["accounts"].as_array().unwrap().len(), 8, "{found}");
    let history = send(
        "GET",
        format!("{base_b}/v1/ledger/accounts/{}/transfers", accounts[2][1]),
        API_KEY,
        None,
        None,
    )
    .await;
    assert_eq!(
        history.body["transfers"].as_array().unwrap().len(),
        2,
        "{}",
        history.body
    );
    let report = settled(&base_a).await;
    assert_eq!(report["clearing"][0]["net"], "0", "{report}");

    a.stop().await;
    b.stop().await;
    store.clean().await;
    other.clean().await;
}

/// The state of a settlement, polled until it is final.
async fn settled_as(base: &str, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = send(
            "GET",
            format!("{base}/v1/admin/settlements/{id}"),
            ADMIN_KEY,
            None,
            None,
        )
        .await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        let status = got.body["settlement"]["status"]
            .as_str()
            .unwrap()
            .to_string();
        if ["succeeded", "failed", "needs_review"].contains(&status.as_str()) {
            return status;
        }
        assert!(Instant::now() < deadline, "{id} not settled: {}", got.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposits_and_withdrawals_settle_in_each_wallets_partition() {
    let store = TestStore::postgres("cluster_api_settlements");
    // One bank for both nodes, over HTTP, as a cluster needs.
    let bank = kizo_bank::Bank::open(kizo_bank::BankConfig {
        faults: kizo_bank::Faults::none(),
        ..kizo_bank::BankConfig::default()
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bank_url = format!("http://{}", listener.local_addr().unwrap());
    let banking = tokio::spawn(async move {
        axum::serve(listener, kizo_bank::server::router(bank))
            .await
            .unwrap()
    });
    let (a, base_a) = node_with(&store, "a", Default::default(), Some(&bank_url)).await;
    let (b, base_b) = node_with(&store, "b", Default::default(), Some(&bank_url)).await;
    settled(&base_a).await;
    let partitions = PartitionCount::new(PARTITIONS).unwrap();
    let bases = [base_a.clone(), base_b.clone()];
    // Wallets until two partitions have some.
    let mut users = Vec::new();
    for n in 0..40 {
        let (token, wallet) = common::user(&bases[n % 2], &format!("saver{n}@cluster.test")).await;
        let partition = partition_of(
            uuid::Uuid::parse_str(&wallet).unwrap().as_u128(),
            partitions,
        );
        users.push((token, wallet, partition));
        let homes: std::collections::BTreeSet<u32> = users.iter().map(|u| u.2).collect();
        if users.len() >= 3 && homes.len() >= 2 {
            break;
        }
    }

    // Each is asked at one node and read at the other: whichever node started it, it ends.
    for (n, (token, wallet, _)) in users.iter().enumerate() {
        let (asked, other) = (&bases[n % 2], &bases[(n + 1) % 2]);
        let deposit = send(
            "POST",
            format!("{asked}/v1/deposits"),
            token,
            Some("d-1"),
            Some(json!({"account_id": wallet, "amount": 1_000})),
        )
        .await;
        assert_eq!(deposit.status, StatusCode::ACCEPTED, "{}", deposit.body);
        let id = deposit.body["id"].as_str().unwrap();
        assert_eq!(settled_as(other, id).await, "succeeded");
        let withdrawal = send(
            "POST",
            format!("{other}/v1/withdrawals"),
            token,
            Some("w-1"),
            Some(json!({"account_id": wallet, "amount": 300})),
        )
        .await;
        assert_eq!(
            withdrawal.status,
            StatusCode::ACCEPTED,
            "{}",
            withdrawal.body
        );
        let id = withdrawal.body["id"].as_str().unwrap();
        assert_eq!(settled_as(asked, id).await, "succeeded");
        let too_much = send(
            "POST",
            format!("{asked}/v1/withdrawals"),
            token,
            Some("w-2"),
            Some(json!({"account_id": wallet, "amount": 701})),
        )
        .await;
        assert_eq!(
            too_much.body["code"], "insufficient_funds",
            "{}",
            too_much.body
        );
        let balance = send(
            "GET",
            format!("{asked}/v1/accounts/{wallet}"),
            token,
            None,
            None,
        )
        .await;
        assert_eq!(balance.body["available"], "700", "{}", balance.body);
        assert_eq!(balance.body["held"], "0", "{}", balance.body);
    }

    // A deposit nobody drives (its node died before it handed it to its supervisor): the
    // owner of its wallet's partition takes it up once it has been idle a while.
    let (token, wallet, partition) = &users[0];
    let me = send("GET", format!("{base_a}/v1/me"), token, None, None).await;
    let user_id = me.body["user"]["id"].as_str().unwrap().to_string();
    let settlements = kizo_persistence::settlements::SettlementStore::open(&store.config)
        .await
        .unwrap();
    let ten_seconds_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 10_000;
    let orphan = kizo_engine::settlement::Settlement::new(
        uuid::Uuid::new_v4().as_u128(),
        kizo_engine::settlement::Kind::Deposit,
        uuid::Uuid::parse_str(wallet).unwrap().as_u128(),
        kizo_wallet::ids::bank_account_id_in(840, *partition),
        840,
        50,
        ten_seconds_ago,
    );
    settlements.create(&user_id, &orphan, 100).await.unwrap();
    let orphan_id = uuid::Uuid::from_u128(orphan.id).to_string();
    assert_eq!(settled_as(&base_b, &orphan_id).await, "succeeded");
    let balance = send(
        "GET",
        format!("{base_b}/v1/accounts/{wallet}"),
        token,
        None,
        None,
    )
    .await;
    assert_eq!(balance.body["available"], "750", "{}", balance.body);

    // Reconciliation at either node: every settlement matched with the bank, the bank's side
    // summed over the partitions' bank accounts, the books balanced.
    let report = send(
        "POST",
        format!("{base_b}/v1/admin/reconciliation"),
        ADMIN_KEY,
        None,
        None,
    )
    .await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    assert_eq!(report.body["unexplained"], 0, "{}", report.body);
    assert_eq!(
        report.body["matched"].as_u64(),
        Some(2 * users.len() as u64 + 1),
        "{}",
        report.body
    );
    assert_eq!(
        report.body["ledger"][0]["ledger_net"],
        (700 * users.len() + 50).to_string(),
        "{}",
        report.body
    );
    assert_eq!(
        report.body["ledger_totals"][0]["holds"], true,
        "{}",
        report.body
    );

    a.stop().await;
    b.stop().await;
    banking.abort();
    store.clean().await;
}
