//! Every scenario, briefly, against a real gateway (and the engine and the baseline): the
//! audit passes; and it fails when the ledger is changed behind the run's back.

use std::sync::Arc;

use clap::Parser;
use kizo_gateway::{Server, ServerConfig};
use kizo_loadgen::audit::audit;
use kizo_loadgen::cli::{run_one, Args};
use kizo_loadgen::scenario::{run, Load, Plan, Scenario};
use kizo_loadgen::target::{Move, RequestOutcome, Target};
use kizo_persistence::StoreConfig;

const KEY: &str = "loadgen-test-key-0123456789abcdef0123";

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn gateway(dir: &std::path::Path) -> Server {
    Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: StoreConfig::Embedded {
            dir: dir.to_path_buf(),
        },
        shard_count: 2,
        transfer_window: 16,
        api_key: KEY.into(),
        jwt_secret: "loadgen-test-jwt-secret-0123456789abc".into(),
        password_pepper: "loadgen-test-pepper-0123456789abcdef".into(),
        currency: kizo_gateway::config::Currency::parse("USD").unwrap(),
        auth_rates: kizo_gateway::limits::AuthRates {
            per_address: std::num::NonZeroU32::new(100_000).unwrap(),
            per_email: std::num::NonZeroU32::new(100_000).unwrap(),
            trusted_proxies: Vec::new(),
            reads_per_user: std::num::NonZeroU32::new(100_000).unwrap(),
        },
        admin_api_key: "admin-key-for-tests-0123456789abcdef".into(),
        bank: Default::default(),
        snapshots: Default::default(),
        http: Default::default(),
        mail: Default::default(),
        metrics: Default::default(),
        cluster: None,
        cdc: None,
        webhooks: Default::default(),
    })
    .await
    .unwrap()
}

fn args(target: &str, scenario: &str, extra: &[&str]) -> Args {
    let mut argv = vec![
        "kizo-loadgen",
        "--target",
        target,
        "--scenario",
        scenario,
        "--vus",
        "4",
        "--duration",
        "700ms",
        "--accounts",
        "50",
        "--api-key",
        KEY,
    ];
    argv.extend_from_slice(extra);
    Args::parse_from(argv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_its_audit_against_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = gateway(dir.path()).await;
    let base = format!("http://{}", server.addr);
    for (scenario, extra) in [
        ("transfers", vec![]),
        ("transfers", vec!["--rate", "400", "--skew", "1.0"]),
        ("transfers", vec!["--hot", "3"]),
        ("ledger-batch", vec!["--batch", "200"]),
        ("ledger-batch", vec!["--batch", "200", "--wire", "binary"]),
        ("transfers", vec!["--wire", "binary"]),
        ("double-spend", vec!["--funded", "20"]),
        ("wallet", vec!["--think", "50ms"]),
        ("login-storm", vec!["--login-vus", "1"]),
    ] {
        let args = args(&base, scenario, &extra);
        let (result, outcomes) = run_one(&args, &args.target).await.unwrap();
        assert!(
            result.failures.is_empty() && result.audit.passed(),
            "{scenario} {extra:?}: {:?}",
            result.failures
        );
        let requests: u64 = result.requests.iter().map(|r| r.count).sum();
        assert!(requests > 0, "{scenario}: nothing was sent");
        assert!(
            result.audit.acknowledged > outcomes.wallets.len().min(1),
            "{scenario}: nothing acknowledged"
        );
        if scenario == "double-spend" {
            let spent = outcomes
                .book
                .acknowledged
                .iter()
                .filter(|m| m.from != outcomes.system)
                .count();
            assert_eq!(spent, 20, "exactly the funded spends");
            assert!(outcomes.book.refused.len() > 20, "the race was real");
        }
    }
    // A threshold nobody can meet fails the run.
    let strict = args(&base, "transfers", &["--max-p99", "0ms"]);
    let (result, _) = run_one(&strict, &strict.target).await.unwrap();
    assert!(result.failures.iter().any(|f| f.contains("--max-p99")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_and_the_baseline_pass_theirs() {
    let url = database_url();
    for target in ["engine", "pg-rowlock"] {
        for scenario in ["transfers", "double-spend"] {
            let args = args(
                target,
                scenario,
                &["--database-url", &url, "--funded", "10"],
            );
            let (result, _) = run_one(&args, target).await.unwrap();
            assert!(
                result.failures.is_empty(),
                "{target} {scenario}: {:?}",
                result.failures
            );
            assert!(result.transfers_per_second > 0.0);
        }
    }
}

fn plan() -> Plan {
    Plan {
        scenario: Scenario::Transfers,
        load: Load::Closed { vus: 4 },
        duration: std::time::Duration::from_millis(300),
        accounts: 20,
        skew: 0.0,
        hot: 0,
        batch: 1,
        funded: 1,
        think: std::time::Duration::ZERO,
        seed: 3,
        shards: 2,
        login_vus: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_fails_when_the_ledger_is_tampered_with() {
    // Kizo over HTTP: a transfer the run never made, between two of its accounts.
    let dir = tempfile::tempdir().unwrap();
    let server = gateway(dir.path()).await;
    let http = kizo_loadgen::http::Http::new(
        &format!("http://{}", server.addr),
        KEY,
        kizo_loadgen::http::Wire::Binary,
    )
    .unwrap();
    let target = Arc::new(Target::Http(http.clone()));
    let outcomes = run(target.clone(), Some(http), plan(), |_| {})
        .await
        .unwrap();
    let clean = audit(&target, outcomes.system, &outcomes.wallets, &outcomes.book)
        .await
        .unwrap();
    assert!(clean.passed(), "{:?}", clean.failures);
    let sneaky = Move {
        id: u128::MAX - 99,
        from: outcomes.wallets[0],
        to: outcomes.wallets[1],
        amount: 5,
    };
    assert_eq!(
        target.transfers(&[sneaky]).await.unwrap(),
        vec![RequestOutcome::Created]
    );
    let tampered = audit(&target, outcomes.system, &outcomes.wallets, &outcomes.book)
        .await
        .unwrap();
    assert!(!tampered.passed());
    assert!(
        tampered
            .failures
            .iter()
            .any(|f| f.contains(&outcomes.wallets[0].to_string())),
        "{:?}",
        tampered.failures
    );
    // A transfer the run was told about, that the ledger lost: the book says more than the
    // ledger holds.
    let mut book = outcomes.book.clone();
    book.acknowledged.push(Move {
        id: u128::MAX - 98,
        ..sneaky
    });
    let lost = audit(&target, outcomes.system, &outcomes.wallets, &book)
        .await
        .unwrap();
    assert!(
        lost.failures.iter().any(|f| f.contains("is missing")),
        "{:?}",
        lost.failures
    );
    server.stop().await;

    // The baseline: money credited without a journal row.
    let rowlock = kizo_loadgen::baseline::Rowlock::open(
        &database_url(),
        &format!("loadgen_tamper_{}", std::process::id()),
        4,
    )
    .await
    .unwrap();
    let target = Arc::new(Target::Rowlock(rowlock));
    let outcomes = run(target.clone(), None, plan(), |_| {}).await.unwrap();
    let clean = audit(&target, outcomes.system, &outcomes.wallets, &outcomes.book)
        .await
        .unwrap();
    assert!(clean.passed(), "{:?}", clean.failures);
    if let Target::Rowlock(rowlock) = target.as_ref() {
        rowlock.tamper(outcomes.wallets[2], 1_000).await.unwrap();
    }
    let tampered = audit(&target, outcomes.system, &outcomes.wallets, &outcomes.book)
        .await
        .unwrap();
    assert!(tampered
        .failures
        .iter()
        .any(|f| f.contains("money created or destroyed")));
    target.stop().await;
}
