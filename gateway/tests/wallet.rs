//! The wallet API's accounts and sessions over real HTTP, on both stores: signup with a
//! wallet, login, me, refresh rotation with reuse detection, logout.

mod common;

use common::{start, TestStore};
use kizo_persistence::StoreConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn call(
    method: &str,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let client = reqwest::Client::new();
    let mut request = match method {
        "GET" => client.get(url),
        "PATCH" => client.patch(url),
        _ => client.post(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn sessions_work_end_to_end(store: StoreConfig) {
    let (server, base) = start(&store).await;
    let url = |path: &str| format!("{base}{path}");
    let ada = json!({"email": " Ada@Example.com ", "password": "correct horse battery", "first_name": "Ada", "last_name": "Lovelace"});

    let (status, body) = call("POST", url("/v1/auth/signup"), None, Some(ada.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["user"]["email"], "ada@example.com");
    let wallet = &body["accounts"][0];
    assert_eq!(
        (
            wallet["currency"].as_str(),
            wallet["available"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
        ),
        (Some("USD"), Some(0))
    );
    assert_eq!(wallet["id"].as_str().unwrap().len(), 36, "a UUID");

    let (status, body) = call("POST", url("/v1/auth/signup"), None, Some(ada)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("email_taken"))
    );
    // Racing signups with one email: one user, one wallet (the losers' wallet is the same
    // account, so none is left without an owner).
    let race = json!({"email": "race@example.com", "password": "correct horse battery", "first_name": "R", "last_name": "C"});
    let racing: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(call(
                "POST",
                url("/v1/auth/signup"),
                None,
                Some(race.clone()),
            ))
        })
        .collect();
    let mut statuses = Vec::new();
    for signup in racing {
        statuses.push(signup.await.unwrap().0);
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [
            StatusCode::CREATED,
            StatusCode::CONFLICT,
            StatusCode::CONFLICT,
            StatusCode::CONFLICT
        ]
    );
    let (status, body) = call(
        "POST",
        url("/v1/auth/signup"),
        None,
        Some(json!({"email": "bob@example.com", "password": "short", "first_name": "Bob", "last_name": "B"})),
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("password"))
    );
    // Bodies past a few KiB are not read on routes open to anybody.
    let (status, body) = call(
        "POST",
        url("/v1/auth/signup"),
        None,
        Some(json!({"email": "bob@example.com", "password": "x".repeat(20 << 10), "first_name": "Bob", "last_name": "B"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large")),
        "{body}"
    );
    // Names that read other than they are: a right-to-left override, a zero-width space, NUL.
    for (first, last, field) in [
        ("\u{202E}boB", "B", "first_name"),
        ("Bob", "B\u{200B}", "last_name"),
        ("Bob\u{0}", "B", "first_name"),
    ] {
        let (status, body) = call(
            "POST",
            url("/v1/auth/signup"),
            None,
            Some(json!({"email": "bob@example.com", "password": "correct horse battery", "first_name": first, "last_name": last})),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str(), body["field"].as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("invalid_field"),
                Some(field)
            ),
            "{body}"
        );
    }

    // Wrong password and unknown email: one answer.
    let (status, wrong) = call(
        "POST",
        url("/v1/auth/login"),
        None,
        Some(json!({"email": "ada@example.com", "password": "wrong password"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, unknown) = call(
        "POST",
        url("/v1/auth/login"),
        None,
        Some(json!({"email": "nobody@example.com", "password": "wrong password"})),
    )
    .await;
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["code"], "invalid_credentials");

    let login = json!({"email": "ada@example.com", "password": "correct horse battery"});
    let (status, tokens) = call("POST", url("/v1/auth/login"), None, Some(login.clone())).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();

    let (status, me) = call("GET", url("/v1/me"), Some(&access), None).await;
    assert_eq!(
        (status, me["user"]["first_name"].as_str()),
        (StatusCode::OK, Some("Ada"))
    );
    let (status, me) = call(
        "PATCH",
        url("/v1/me"),
        Some(&access),
        Some(json!({"first_name": "Augusta"})),
    )
    .await;
    assert_eq!(
        (status, me["user"]["first_name"].as_str()),
        (StatusCode::OK, Some("Augusta"))
    );
    assert_eq!(me["user"]["last_name"], "Lovelace");
    let (status, body) = call(
        "PATCH",
        url("/v1/me"),
        Some(&access),
        Some(json!({"last_name": "Love\u{2066}lace"})),
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("last_name")),
        "{body}"
    );
    for bad in ["", "not-a-token", &format!("{access}x")] {
        let (status, body) = call("GET", url("/v1/me"), Some(bad), None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized"))
        );
    }
    let (status, _) = call("GET", url("/v1/me"), None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Refresh rotates; presenting the spent token again ends the session for everyone.
    let (status, pair) = call(
        "POST",
        url("/v1/auth/refresh"),
        None,
        Some(json!({"refresh_token": refresh})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let rotated_access = pair["access_token"].as_str().unwrap().to_string();
    let (status, _) = call("GET", url("/v1/me"), Some(&rotated_access), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(
        "POST",
        url("/v1/auth/refresh"),
        None,
        Some(json!({"refresh_token": refresh})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_refresh_token"))
    );
    let (status, _) = call("GET", url("/v1/me"), Some(&rotated_access), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the session ended");
    let next = pair["refresh_token"].as_str().unwrap();
    let (status, _) = call(
        "POST",
        url("/v1/auth/refresh"),
        None,
        Some(json!({"refresh_token": next})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Logout ends the session at once.
    let (_, tokens) = call("POST", url("/v1/auth/login"), None, Some(login)).await;
    let access = tokens["access_token"].as_str().unwrap();
    let (status, _) = call("POST", url("/v1/auth/logout"), Some(access), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call("GET", url("/v1/me"), Some(access), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;

    // Users survive a restart.
    let (server, base) = start(&store).await;
    let (status, _) = call(
        "POST",
        format!("{base}/v1/auth/login"),
        None,
        Some(json!({"email": "ada@example.com", "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded() {
    let store = TestStore::embedded();
    sessions_work_end_to_end(store.config.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let store = TestStore::postgres("sessions_work_end_to");
    sessions_work_end_to_end(store.config.clone()).await;
    store.clean().await;
}

/// Logins for one email past its free failures are refused with 429 and `Retry-After`; other
/// emails go on (the address's own budget is larger).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_attempts_are_rate_limited() {
    let store = TestStore::embedded();
    let (server, base) = start(&store.config).await;
    let client = reqwest::Client::new();
    let attempt = |email: &'static str| {
        let client = client.clone();
        let url = format!("{base}/v1/auth/login");
        async move {
            client
                .post(url)
                .json(&json!({"email": email, "password": "guess guess"}))
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..kizo_gateway::limits::FREE_FAILURES_PER_EMAIL {
        assert_eq!(
            attempt("ada@example.com").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let refused = attempt("ada@example.com").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(
        attempt("bob@example.com").await.status(),
        StatusCode::UNAUTHORIZED
    );
    server.stop().await;
}
