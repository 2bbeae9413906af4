//! `GET /v1/events`: the signed-in user's wallet, live, as server-sent events: only their own
//! events, with their balance; a reconnection with `Last-Event-ID` gets what it missed and
//! nothing twice; bad ids and too many streams are refused.

mod common;

use std::time::Duration;

use common::{send, user, TestStore};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// An open event stream, read event by event.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

/// One server-sent event: (id, event, data).
type Sse = (String, String, Value);

impl Events {
    async fn open(base: &str, token: &str, last: Option<&str>) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .get(format!("{base}/v1/events"))
            .bearer_auth(token);
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last);
        }
        request.send().await.unwrap()
    }

    async fn start(base: &str, token: &str, last: Option<&str>) -> Events {
        let response = Events::open(base, token, last).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{:?}",
            response.headers()
        );
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped), within 10 s.
    async fn next(&mut self) -> Sse {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let (mut id, mut event, mut data) = (String::new(), String::new(), None);
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            id = v.trim().to_string();
                        } else if let Some(v) = line.strip_prefix("event:") {
                            event = v.trim().to_string();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data = Some(serde_json::from_str(v.trim()).unwrap());
                        }
                    }
                    if let Some(data) = data {
                        return (id, event, data);
                    }
                    continue;
                }
                let chunk = self
                    .response
                    .chunk()
                    .await
                    .unwrap()
                    .expect("the stream goes on");
                self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        })
        .await
        .expect("an event within 10 s")
    }
}

async fn pay(base: &str, token: &str, key: &str, from: &str, to: &str, amount: u64) {
    let paid = send(
        "POST",
        format!("{base}/v1/transfers"),
        token,
        Some(key),
        Some(json!({"from_account_id": from, "to": {"account_id": to}, "amount": amount})),
    )
    .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_wallet_is_streamed_live_and_resumed_where_it_stopped() {
    let store = TestStore::postgres("live_events");
    let (server, base) = common::start(&store.config).await;
    let (ana, ana_wallet) = user(&base, "ana@live.test").await;
    let (bo, bo_wallet) = user(&base, "bo@live.test").await;
    let (_cy, cy_wallet) = user(&base, "cy@live.test").await;
    common::fund(&base, &ana_wallet, 10_000, 1).await;

    let mut events = Events::start(&base, &bo, None).await;
    // Somebody else's payment is not Bo's event; Bo's is, with his balance.
    pay(&base, &ana, "k-1", &ana_wallet, &cy_wallet, 100).await;
    pay(&base, &ana, "k-2", &ana_wallet, &bo_wallet, 300).await;
    let (first_id, kind, data) = events.next().await;
    assert_eq!(kind, "transfer.posted");
    assert_eq!(data["id"], first_id.as_str());
    assert_eq!(data["transfer"]["direction"], "in");
    assert_eq!(data["transfer"]["amount"], "300");
    assert_eq!(data["transfer"]["to_account_id"], bo_wallet.as_str());
    assert_eq!(data["balance"]["available"], "300", "{data}");
    pay(&base, &ana, "k-3", &ana_wallet, &bo_wallet, 200).await;
    let (second_id, _, data) = events.next().await;
    assert_eq!(data["balance"]["available"], "500", "{data}");
    // Bo pays back: an event going out.
    pay(&base, &bo, "k-4", &bo_wallet, &ana_wallet, 50).await;
    let (third_id, _, data) = events.next().await;
    assert_eq!(data["transfer"]["direction"], "out");
    drop(events);

    // Reconnected after the first: the two after it, once each, in order.
    let mut again = Events::start(&base, &bo, Some(&first_id)).await;
    assert_eq!(again.next().await.0, second_id);
    assert_eq!(again.next().await.0, third_id);
    pay(&base, &ana, "k-5", &ana_wallet, &bo_wallet, 1).await;
    let (fourth_id, _, data) = again.next().await;
    assert!(fourth_id > third_id || fourth_id.len() > third_id.len());
    assert_eq!(data["balance"]["available"], "451", "{data}");

    // An id this server never sent, and too many streams at once.
    for bad in ["x", "1.2.3", "0.1", "0.-1.2"] {
        let refused = Events::open(&base, &bo, Some(bad)).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(Events::start(&base, &bo, None).await);
    }
    let refused = Events::open(&base, &bo, None).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "too_many_streams");
    drop(open);
    drop(again);
    // Closed streams give their places back, once the server sees them go.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while Events::open(&base, &bo, None).await.status() != StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "the places never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Without a token: refused.
    let anonymous = reqwest::get(format!("{base}/v1/events")).await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
    store.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_owner_streams_and_any_other_node_passes_it_through() {
    let store = TestStore::postgres("live_cluster");
    let node = |id: &'static str| {
        let store = store.config.clone();
        async move {
            common::start_configured(&store, |config| {
                config.cluster = Some(common::cluster_config(id, 2));
            })
            .await
        }
    };
    let (a, base_a) = node("a").await;
    let (b, base_b) = node("b").await;
    // Until each node serves one of the two partitions.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let report = send(
            "GET",
            format!("{base_a}/v1/admin/cluster"),
            common::ADMIN_KEY,
            None,
            None,
        )
        .await;
        let owners: std::collections::BTreeSet<String> = report.body["leases"]
            .as_array()
            .map(|leases| {
                leases
                    .iter()
                    .filter_map(|l| l["owner"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if owners.len() == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", report.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ana, ana_wallet) = user(&base_a, "ana@live-cluster.test").await;
    let (bo, bo_wallet) = user(&base_a, "bo@live-cluster.test").await;
    common::fund(&base_a, &ana_wallet, 10_000, 1).await;
    // Bo listens at both nodes: one serves his wallet's partition, the other passes it on.
    let mut at_a = Events::start(&base_a, &bo, None).await;
    let mut at_b = Events::start(&base_b, &bo, None).await;
    pay(&base_a, &ana, "k-1", &ana_wallet, &bo_wallet, 300).await;
    let (id_a, kind, data) = at_a.next().await;
    let (id_b, _, _) = at_b.next().await;
    assert_eq!(id_a, id_b, "one event, whichever node is asked");
    assert!(
        kind == "transfer.posted" || kind == "cross.credited",
        "{kind}"
    );
    assert_eq!(data["transfer"]["direction"], "in");
    assert_eq!(data["balance"]["available"], "300", "{data}");
    let history = send(
        "GET",
        format!("{base_b}/v1/accounts/{bo_wallet}/transfers"),
        &bo,
        None,
        None,
    )
    .await;
    assert_eq!(
        data["transfer"]["id"], history.body["transfers"][0]["id"],
        "the payment's id, as the history shows it: {}",
        history.body
    );
    // Resumed at the other node from that id: the next one only.
    drop(at_a);
    pay(&base_a, &ana, "k-2", &ana_wallet, &bo_wallet, 5).await;
    let mut again = Events::start(&base_b, &bo, Some(&id_a)).await;
    let (next, _, data) = again.next().await;
    assert_ne!(next, id_a);
    assert_eq!(data["balance"]["available"], "305", "{data}");
    drop((at_b, again));
    a.stop().await;
    b.stop().await;
    store.clean().await;
}
