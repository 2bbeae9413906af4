//! The bank over HTTP, through the client settlements use: idempotency by reference, status,
//! the statement, the token, faults changed at run time, and what the client makes of each
//! answer.

use kizo_bank::server::router;
use kizo_bank::{Bank, BankConfig, Faults, HttpBank};
use kizo_engine::settlement::{BankOutcome, Kind, Settlement};
use kizo_engine::settlement_actors::BankPort;

const TOKEN: &str = "bank-token-0123456789";

async fn serve(faults: Faults, journal: Option<std::path::PathBuf>) -> String {
    let bank = Bank::open(BankConfig {
        faults,
        journal,
        token: Some(TOKEN.into()),
        ..BankConfig::default()
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(bank)).await });
    format!("http://{addr}")
}

fn settlement(id: u128, kind: Kind, amount: u64) -> Settlement {
    Settlement::new(id, kind, 42, 1, 840, amount, 0)
}

#[tokio::test]
async fn a_reference_moves_money_once_and_its_status_can_be_asked() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("bank.jsonl");
    let base = serve(Faults::none(), Some(journal.clone())).await;
    let bank = HttpBank::new(&base, Some(TOKEN.into()), "USD");
    let payout = settlement(7, Kind::Withdrawal, 500);
    assert_eq!(bank.check(&payout).await, BankOutcome::NotFound);
    assert_eq!(bank.send(&payout).await, BankOutcome::Moved { amount: 500 });
    assert_eq!(bank.send(&payout).await, BankOutcome::Moved { amount: 500 });
    assert_eq!(
        bank.check(&payout).await,
        BankOutcome::Moved { amount: 500 }
    );
    // The same reference as another amount: nobody can say what happened to *this* request.
    let other = settlement(7, Kind::Withdrawal, 501);
    assert!(matches!(bank.send(&other).await, BankOutcome::Unknown(_)));
    // A collection under the payout's reference is not the payout.
    assert_eq!(
        bank.check(&settlement(7, Kind::Deposit, 500)).await,
        BankOutcome::NotFound
    );
    bank.send(&settlement(8, Kind::Deposit, 70)).await;
    let statement = bank.statement().await.unwrap();
    assert_eq!(statement.len(), 2);
    assert_eq!((statement[0].reference, statement[0].amount), (7, 500));
    assert_eq!(
        (statement[1].kind, statement[1].amount),
        (Kind::Deposit, 70)
    );

    // A bank started again on its journal remembers.
    let again = serve(Faults::none(), Some(journal)).await;
    let bank = HttpBank::new(&again, Some(TOKEN.into()), "USD");
    assert_eq!(
        bank.check(&payout).await,
        BankOutcome::Moved { amount: 500 }
    );
    assert_eq!(bank.statement().await.unwrap().len(), 2);
}

#[tokio::test]
async fn faults_and_the_token_are_enforced() {
    let base = serve(Faults::none(), None).await;
    let stranger = HttpBank::new(&base, None, "USD");
    assert!(matches!(
        stranger.send(&settlement(1, Kind::Deposit, 5)).await,
        BankOutcome::Unknown(_)
    ));
    let client = reqwest::Client::new();
    let declining = Faults {
        decline_rate: 1.0,
        ..Faults::none()
    };
    let set = client
        .put(format!("{base}/admin/faults"))
        .bearer_auth(TOKEN)
        .json(&declining)
        .send()
        .await
        .unwrap();
    assert!(set.status().is_success());
    let bank = HttpBank::new(&base, Some(TOKEN.into()), "USD");
    let declined = settlement(2, Kind::Deposit, 5);
    assert!(matches!(
        bank.send(&declined).await,
        BankOutcome::Declined(_)
    ));
    assert!(matches!(
        bank.check(&declined).await,
        BankOutcome::Declined(_)
    ));
    let down = Faults {
        outage: true,
        ..Faults::none()
    };
    client
        .put(format!("{base}/admin/faults"))
        .bearer_auth(TOKEN)
        .json(&down)
        .send()
        .await
        .unwrap();
    assert!(matches!(
        bank.send(&settlement(3, Kind::Deposit, 5)).await,
        BankOutcome::Unknown(_)
    ));
    assert!(bank.statement().await.is_err());
    let bad = serde_json::json!({"error_rate": 2.0});
    let refused = client
        .put(format!("{base}/admin/faults"))
        .bearer_auth(TOKEN)
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let zero = serde_json::json!({"reference": uuid::Uuid::from_u128(9), "amount": 0, "currency": "USD", "account": "a"});
    let refused = client
        .post(format!("{base}/payouts"))
        .bearer_auth(TOKEN)
        .json(&zero)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
}

/// A bank whose status queries fail in every way but the bank's own "no such movement": none
/// of them may read as "not paid" (which would refund a withdrawal the bank may have paid).
#[tokio::test]
async fn a_status_query_that_fails_is_never_taken_for_not_paid() {
    use axum::http::StatusCode;
    use axum::routing::get;
    let answers = [
        (StatusCode::BAD_REQUEST, r#"{"code":"bad_request"}"#),
        (StatusCode::UNPROCESSABLE_ENTITY, r#"{"code":"invalid"}"#),
        (StatusCode::NOT_FOUND, "<html>no route</html>"),
        (StatusCode::NOT_FOUND, r#"{"code":"no_route"}"#),
        (StatusCode::FORBIDDEN, r#"{"code":"forbidden"}"#),
        (StatusCode::GONE, ""),
    ];
    for (status, body) in answers {
        let app = axum::Router::new().route(
            "/payouts/{reference}",
            get(move || async move { (status, body) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let bank = HttpBank::new(&format!("http://{addr}"), None, "USD");
        let outcome = bank.check(&settlement(9, Kind::Withdrawal, 100)).await;
        assert!(
            matches!(outcome, BankOutcome::Unknown(_)),
            "{status} {body}: {outcome:?}"
        );
    }
    // The bank's own answer for a reference it never saw is a definite "not found".
    let base = serve(Faults::none(), None).await;
    let bank = HttpBank::new(&base, Some(TOKEN.into()), "USD");
    assert_eq!(
        bank.check(&settlement(10, Kind::Withdrawal, 100)).await,
        BankOutcome::NotFound
    );
}

/// A bank over TLS on a private CA: reached once its certificate is trusted, refused before.
#[tokio::test]
async fn the_bank_over_tls() {
    // The test's TLS server runs on ring, as the client does (rustls' preferred aws-lc-rs
    // would add a C and CMake build for a test).
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (issued.cert.pem(), issued.key_pair.serialize_pem());
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert.clone().into(), key.into())
        .await
        .unwrap();
    let bank = Bank::open(BankConfig {
        faults: Faults::none(),
        token: Some(TOKEN.into()),
        ..BankConfig::default()
    })
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(listener, tls)
            .serve(router(bank).into_make_service())
            .await
    });
    let base = format!("https://localhost:{port}");
    let withdrawal = settlement(11, Kind::Withdrawal, 250);

    let untrusted = HttpBank::new(&base, Some(TOKEN.into()), "USD");
    assert!(matches!(
        untrusted.send(&withdrawal).await,
        BankOutcome::Unknown(_)
    ));
    let trusted =
        HttpBank::with_ca(&base, Some(TOKEN.into()), "USD", Some(cert.as_bytes())).unwrap();
    assert_eq!(
        trusted.send(&withdrawal).await,
        BankOutcome::Moved { amount: 250 }
    );
    assert_eq!(
        trusted.check(&withdrawal).await,
        BankOutcome::Moved { amount: 250 }
    );
    assert!(HttpBank::with_ca(&base, None, "USD", Some(b"not a certificate")).is_err());
}
