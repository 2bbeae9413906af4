//! Webhook endpoints and deliveries, on both stores: deliveries written with the progress past
//! them (once, whoever writes), claimed by one claimer at a time, recorded only while the claim
//! holds, parked and replayed.

#[macro_use]
mod common;

use common::TestStore;
use kizo_persistence::webhooks::{Endpoint, NewDelivery, StateFilter, WebhookStore};
use kizo_persistence::StoreError;
use kizo_webhooks::{Attempt, Delivery, DeliveryState, RetryPolicy};

on_both_backends!(
    deliveries_are_enqueued_once_with_the_progress_past_them,
    a_claim_is_one_claimers_and_an_outcome_needs_it,
    endpoints_are_capped_per_owner_and_removed_with_their_deliveries
);

fn endpoint(id: &str, owner: &str) -> Endpoint {
    Endpoint {
        id: id.into(),
        owner: owner.into(),
        url: "https://example.com/hook".into(),
        kinds: vec!["*".into()],
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        wallet: Some(u128::MAX - 7),
        created_ms: 1_000,
    }
}

fn delivery(endpoint: &str, lsn: u64, index: u32) -> NewDelivery {
    NewDelivery {
        endpoint_id: endpoint.into(),
        event_id: format!("0.{lsn}.{index}"),
        partition: 0,
        lsn,
        index,
        kind: "transfer.posted".into(),
        body: format!("{{\"id\":\"0.{lsn}.{index}\"}}"),
        parked: None,
    }
}

async fn deliveries_are_enqueued_once_with_the_progress_past_them(store: TestStore) {
    let webhooks = WebhookStore::open(&store.config).await.unwrap();
    assert_eq!(webhooks.progress(3).await.unwrap(), None);
    webhooks.enqueue(3, None, 10, &[], 5).await.unwrap();
    // A second writer that read no progress, or an older one, writes nothing.
    let refused = webhooks
        .enqueue(3, None, 12, &[delivery("a", 11, 0)], 5)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Superseded(_))),
        "{refused:?}"
    );
    let step = [
        delivery("a", 11, 0),
        delivery("a", 11, 1),
        delivery("b", 12, 0),
    ];
    webhooks.enqueue(3, Some(10), 12, &step, 5).await.unwrap();
    let stale = webhooks.enqueue(3, Some(10), 12, &step, 5).await;
    assert!(matches!(stale, Err(StoreError::Superseded(_))));
    assert_eq!(webhooks.progress(3).await.unwrap(), Some(12));
    let listed = webhooks.deliveries("a", None, None, 10).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(ids, ["0.11.1", "0.11.0"], "newest first, each once");
    assert_eq!(listed[0].delivery, Delivery::new(5));
    // A page after a cursor, and a state filter.
    let after = webhooks
        .deliveries("a", None, Some((0, 11, 1)), 10)
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].event_id, "0.11.0");
    let parked = webhooks
        .deliveries("a", Some(StateFilter::Parked), None, 10)
        .await
        .unwrap();
    assert!(parked.is_empty());
    // A full backlog writes a delivery parked.
    let full = NewDelivery {
        parked: Some("backlog full".into()),
        ..delivery("a", 13, 0)
    };
    webhooks.enqueue(3, Some(12), 13, &[full], 6).await.unwrap();
    let parked = webhooks
        .deliveries("a", Some(StateFilter::Parked), None, 10)
        .await
        .unwrap();
    assert_eq!(
        parked[0].delivery.last_error.as_deref(),
        Some("backlog full")
    );
    assert_eq!(
        webhooks
            .pending_counts()
            .await
            .unwrap()
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
        [("a".to_string(), 2), ("b".to_string(), 1)]
            .into_iter()
            .collect()
    );
    store.clean().await;
}

async fn a_claim_is_one_claimers_and_an_outcome_needs_it(store: TestStore) {
    let webhooks = WebhookStore::open(&store.config).await.unwrap();
    webhooks.enqueue(0, None, 1, &[], 0).await.unwrap();
    let step: Vec<NewDelivery> = (0..5).map(|i| delivery("a", 2, i)).collect();
    webhooks.enqueue(0, Some(1), 2, &step, 100).await.unwrap();
    assert_eq!(
        webhooks.due_endpoints(99, 10).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(webhooks.due_endpoints(100, 10).await.unwrap(), ["a"]);

    // Two claimers at once take different deliveries; a third finds none due.
    let (first, second) = tokio::join!(
        webhooks.claim("a", 100, 40_100, 3),
        webhooks.claim("a", 100, 40_100, 3)
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.len() + second.len(), 5);
    let mut ids: Vec<&str> = first
        .iter()
        .chain(&second)
        .map(|d| d.event_id.as_str())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "no delivery claimed twice");
    assert!(webhooks
        .claim("a", 200, 40_200, 16)
        .await
        .unwrap()
        .is_empty());

    // Outcomes: accepted, and failed (due again later).
    let policy = RetryPolicy {
        jitter_percent: 0,
        ..RetryPolicy::default()
    };
    let ok = first[0].delivery.after(&Attempt::Accepted, 300, 0, &policy);
    assert!(webhooks.record(&first[0], &ok, 300).await.unwrap());
    let failed = first[1]
        .delivery
        .after(&Attempt::Answered(503), 300, 0, &policy);
    assert_eq!(failed.state, DeliveryState::Pending { due_ms: 5_300 });
    assert!(webhooks.record(&first[1], &failed, 300).await.unwrap());
    // Recorded once: the claim it held is spent.
    assert!(!webhooks.record(&first[1], &failed, 300).await.unwrap());

    // Claims that ran out are taken over; the old claimer's outcome is then refused.
    let retaken = webhooks.claim("a", 40_100, 80_100, 16).await.unwrap();
    let retaken_ids: Vec<&str> = retaken.iter().map(|d| d.event_id.as_str()).collect();
    // The three whose claims ran out, and the failed one, due again since 5,300.
    assert_eq!(retaken.len(), 4, "{retaken_ids:?}");
    let stale = first
        .iter()
        .chain(&second)
        .find(|d| d.event_id == retaken[0].event_id)
        .unwrap();
    let late = stale.delivery.after(&Attempt::Accepted, 40_200, 0, &policy);
    assert!(!webhooks.record(stale, &late, 40_200).await.unwrap());

    // Parked (the endpoint is gone), then replayed: due at once, attempts afresh.
    let last = retaken[0]
        .delivery
        .after(&Attempt::Answered(410), 40_300, 0, &policy);
    assert!(matches!(last.state, DeliveryState::Parked { .. }));
    assert!(webhooks.record(&retaken[0], &last, 40_300).await.unwrap());
    let listed = webhooks
        .deliveries("a", Some(StateFilter::Parked), None, 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        webhooks
            .replay("a", Some(&["0.9.9".to_string()]), 50_000, 100)
            .await
            .unwrap(),
        0
    );
    assert_eq!(webhooks.replay("a", None, 50_000, 100).await.unwrap(), 1);
    assert_eq!(webhooks.replay("a", None, 50_000, 100).await.unwrap(), 0);
    let again = webhooks.claim("a", 50_000, 90_000, 16).await.unwrap();
    assert!(again
        .iter()
        .any(|d| d.event_id == retaken[0].event_id && d.delivery.attempts == 0));

    // Delivered ones are forgotten after a while.
    assert_eq!(webhooks.prune_delivered(301, 100).await.unwrap(), 1);
    assert_eq!(webhooks.prune_delivered(301, 100).await.unwrap(), 0);
    store.clean().await;
}

async fn endpoints_are_capped_per_owner_and_removed_with_their_deliveries(store: TestStore) {
    let webhooks = WebhookStore::open(&store.config).await.unwrap();
    for n in 0..3 {
        assert!(webhooks
            .register(&endpoint(&format!("e{n}"), "user:1"), 3)
            .await
            .unwrap());
    }
    assert!(!webhooks
        .register(&endpoint("e3", "user:1"), 3)
        .await
        .unwrap());
    assert!(webhooks
        .register(&endpoint("f0", "ledger"), 3)
        .await
        .unwrap());
    let mine = webhooks.endpoints_of("user:1").await.unwrap();
    assert_eq!(mine.len(), 3);
    assert_eq!(mine[0], endpoint("e0", "user:1"));
    assert_eq!(webhooks.all_endpoints(100).await.unwrap().len(), 4);
    webhooks
        .enqueue(0, None, 1, &[delivery("e0", 1, 0)], 0)
        .await
        .unwrap();
    assert!(
        !webhooks.remove("ledger", "e0").await.unwrap(),
        "not the owner's"
    );
    assert!(webhooks.remove("user:1", "e0").await.unwrap());
    assert!(!webhooks.remove("user:1", "e0").await.unwrap());
    assert!(webhooks
        .deliveries("e0", None, None, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(webhooks.endpoints_of("user:1").await.unwrap().len(), 2);
    store.clean().await;
}
