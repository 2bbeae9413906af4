//! `kizo-client` against the real server: the ledger API over both wires and HTTP/2, the
//! wallet API with its session and payments, refusals as typed errors; and batches retried
//! across a SIGKILL of the server process, the ledger audited after: nothing lost, nothing
//! doubled.

mod common;

use std::time::Duration;

use common::{GatewayProcess, TestStore, API_KEY};
use kizo_client::{
    Account, Client, CreateAccountResult, CreateTransferResult, Error, Payment, Recipient, Retry,
    Signup, Transfer, Wire,
};

fn client(base: &str, wire: Wire) -> Client {
    Client::builder(base)
        .api_key(API_KEY)
        .wire(wire)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_and_the_wallet_through_the_client() {
    let store = TestStore::embedded();
    let (server, base) = common::start(&store.config).await;
    for (n, wire) in [Wire::Binary, Wire::Json].into_iter().enumerate() {
        let ledger = 10 + n as u32;
        let client = client(&base, wire);
        let (a, b) = (100 + 10 * n as u128, 101 + 10 * n as u128);
        let created = client
            .create_accounts(&[Account::new(a, ledger, 1), Account::new(b, ledger, 1)])
            .await
            .unwrap();
        assert_eq!(created, [CreateAccountResult::Created; 2], "{wire:?}");
        let results = client
            .create_transfers(&[
                Transfer::new(a, a, b, 7, ledger, 1),
                Transfer::new(b, a, a, 7, ledger, 1),
            ])
            .await
            .unwrap();
        assert_eq!(
            results,
            [
                CreateTransferResult::Created,
                CreateTransferResult::AccountsMustBeDifferent
            ],
            "{wire:?}"
        );
        let accounts = client.lookup_accounts(&[b, 999, a]).await.unwrap();
        assert_eq!(
            accounts
                .iter()
                .map(|x| (x.id, x.credits_posted))
                .collect::<Vec<_>>(),
            [(b, 7), (a, 0)],
            "{wire:?}"
        );
        let found = client.lookup_transfers(&[a]).await.unwrap();
        assert_eq!((found[0].amount, found[0].ledger), (7, ledger));
        let history = client.account_transfers(b, 0, 0, 10, false).await.unwrap();
        assert_eq!(history, found);
    }
    // HTTP/2, and a refusal as a typed error with its stable code.
    let h2 = Client::builder(&base)
        .api_key(API_KEY)
        .http2(true)
        .build()
        .unwrap();
    assert_eq!(h2.lookup_accounts(&[100]).await.unwrap().len(), 1);
    let stranger = Client::builder(&base)
        .api_key("not-the-key")
        .build()
        .unwrap();
    let refused = stranger.lookup_accounts(&[100]).await.unwrap_err();
    assert_eq!(refused.code(), Some("unauthorized"));
    assert!(!refused.is_transient());
    assert!(matches!(
        client(&base, Wire::Binary).create_transfers(&[]).await,
        Err(Error::Invalid(_))
    ));

    // The wallet: sign up, sign in, get paid, pay.
    let client = client(&base, Wire::Binary);
    let signup = |email: &str| Signup {
        email: email.into(),
        password: "long enough password".into(),
        first_name: "A".into(),
        last_name: "B".into(),
    };
    let ana = client.signup(&signup("ana@client.test")).await.unwrap();
    let bo = client.signup(&signup("bo@client.test")).await.unwrap();
    let again = client.signup(&signup("ana@client.test")).await.unwrap_err();
    assert!(again.code().is_some(), "{again}");
    common::fund(&base, &ana.accounts[0].id, 1_000, 1).await;
    let session = client
        .login("ana@client.test", "long enough password")
        .await
        .unwrap();
    let me = session.me().await.unwrap();
    assert_eq!(
        (me.user.email.as_str(), me.accounts[0].available),
        ("ana@client.test", 1_000)
    );
    let paid = session
        .pay(&Payment {
            from_account_id: ana.accounts[0].id.clone(),
            to: Recipient::Email("bo@client.test".into()),
            amount: 250,
            note: Some("lunch".into()),
        })
        .await;
    // Bo has not proved his email: paying him by email is refused, with its code.
    let refusal = paid.unwrap_err();
    assert!(refusal.code().is_some(), "{refusal}");
    let paid = session
        .pay(&Payment {
            from_account_id: ana.accounts[0].id.clone(),
            to: Recipient::AccountId(bo.accounts[0].id.clone()),
            amount: 250,
            note: Some("lunch".into()),
        })
        .await
        .unwrap();
    assert_eq!((paid.amount, paid.status.as_str()), (250, "posted"));
    assert_eq!(session.transfer(&paid.id).await.unwrap().id, paid.id);
    let (page, _) = session
        .history(&ana.accounts[0].id, 10, None)
        .await
        .unwrap();
    assert!(page.iter().any(|t| t.id == paid.id));
    assert_eq!(session.me().await.unwrap().accounts[0].available, 750);
    let dashboard = session.dashboard().await.unwrap();
    assert_eq!(
        (dashboard.account.available, dashboard.sent_this_month),
        (750, 250)
    );
    assert_eq!(dashboard.latest[0].id, paid.id);
    session.logout().await.unwrap();
    server.stop().await;
    store.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_retried_across_a_sigkill_are_applied_once() {
    let store = TestStore::postgres("client_retries");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let args = ["--shards", "2", "--no-snapshots"];
    let gateway = GatewayProcess::start_on(&store, &listen, &args).await;
    let client = Client::builder(&gateway.base)
        .api_key(API_KEY)
        .timeout(Duration::from_secs(10))
        .retry(Retry {
            attempts: 100,
            delay: Duration::from_millis(50),
            delay_max: Duration::from_millis(500),
        })
        .build()
        .unwrap();
    client
        .create_accounts(&[Account::new(1, 5, 1), Account::new(2, 5, 1)])
        .await
        .unwrap();
    const BATCHES: u128 = 200;
    const PER_BATCH: u128 = 500;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sender = {
        let (client, done) = (client.clone(), done.clone());
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for batch in 0..BATCHES {
                let transfers: Vec<Transfer> = (0..PER_BATCH)
                    .map(|n| Transfer::new(1_000 + batch * PER_BATCH + n, 1, 2, 1, 5, 1))
                    .collect();
                outcomes.extend(client.create_transfers(&transfers).await.unwrap());
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            outcomes
        })
    };
    // Killed while batches are in flight (the sender goes straight on to the next), and
    // started again on the same port.
    while done.load(std::sync::atomic::Ordering::Relaxed) < 10 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    gateway.kill().await;
    let at_kill = done.load(std::sync::atomic::Ordering::Relaxed) as u128;
    assert!(
        at_kill < BATCHES,
        "killed while the batches were being sent"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gateway = GatewayProcess::start_on(&store, &listen, &args).await;
    let outcomes = sender.await.unwrap();
    assert_eq!(outcomes.len() as u128, BATCHES * PER_BATCH);
    // Created, or (a batch retried after its first attempt was applied) found to exist.
    assert!(outcomes.iter().all(|r| matches!(
        r,
        CreateTransferResult::Created | CreateTransferResult::Exists
    )));
    let ids: Vec<u128> = (1_000..1_000 + BATCHES * PER_BATCH).collect();
    let mut found = 0;
    for chunk in ids.chunks(8_000) {
        found += client.lookup_transfers(chunk).await.unwrap().len();
    }
    assert_eq!(found as u128, BATCHES * PER_BATCH, "every transfer, once");
    let accounts = client.lookup_accounts(&[1, 2]).await.unwrap();
    assert_eq!(
        accounts[0].debits_posted,
        BATCHES * PER_BATCH,
        "nothing doubled"
    );
    assert_eq!(accounts[1].credits_posted, BATCHES * PER_BATCH);
    gateway.terminate().await;
    store.clean().await;
}
