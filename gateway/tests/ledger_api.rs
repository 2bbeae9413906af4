//! The batch ledger API over real HTTP, against a real server, on both stores.

mod common;

use common::results;

use kizo_gateway::{Server, ServerConfig};
use kizo_persistence::StoreConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

const KEY: &str = "test-key-0123456789abcdef0123456789";

const METRICS_TOKEN: &str = "metrics-token-for-tests-0123456789ab";

struct Running {
    server: Option<Server>,
    base: String,
    /// The metrics listener's base URL.
    metrics: String,
    client: reqwest::Client,
    _dir: Option<tempfile::TempDir>,
    schema: Option<(String, String)>,
}

impl Running {
    async fn start(postgres: bool) -> Running {
        let (store, dir, schema) = if postgres {
            let url = std::env::var("DATABASE_URL")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let schema = format!("t_gateway_{}_{nanos}", std::process::id());
            let store = StoreConfig::Postgres {
                url: url.clone(),
                schema: Some(schema.clone()),
            };
            (store, None, Some((url, schema)))
        } else {
            let dir = tempfile::tempdir().unwrap();
            let store = StoreConfig::Embedded {
                dir: dir.path().to_path_buf(),
            };
            (store, Some(dir), None)
        };
        let server = Server::start(ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            store,
            shard_count: 2,
            transfer_window: 4,
            api_key: KEY.into(),
            jwt_secret: "test-jwt-secret-0123456789abcdef0123".into(),
            password_pepper: "test-pepper-0123456789abcdef0123456".into(),
            currency: kizo_gateway::config::Currency::parse("USD").unwrap(),
            auth_rates: Default::default(),
            admin_api_key: "admin-key-for-tests-0123456789abcdef".into(),
            bank: Default::default(),
            snapshots: Default::default(),
            http: Default::default(),
            mail: Default::default(),
            metrics: kizo_gateway::server::MetricsSettings {
                listen: Some("127.0.0.1:0".parse().unwrap()),
                token: Some(METRICS_TOKEN.into()),
            },
            cluster: None,
            cdc: None,
            webhooks: Default::default(),
        })
        .await
        .expect("the server starts");
        Running {
            base: format!("http://{}", server.addr),
            metrics: format!("http://{}", server.metrics_addr.unwrap()),
            server: Some(server),
            client: reqwest::Client::new(),
            _dir: dir,
            schema,
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .json(body)
            .send()
            .await
            .unwrap();
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn stop(mut self) {
        self.server.take().unwrap().stop().await;
        if let Some((url, schema)) = self.schema.take() {
            if let Ok(pool) = sqlx_pool(&url).await {
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&pool)
                    .await;
            }
        }
    }
}

async fn sqlx_pool(url: &str) -> Result<sqlx::PgPool, sqlx::Error> {
    sqlx::PgPool::connect(url).await
}

async fn ledger_round_trip(postgres: bool) {
    let server = Running::start(postgres).await;
    let (status, body) = server
        .post(
            "/v1/ledger/accounts",
            &json!([
                {"id": "1", "ledger": 840, "code": 1},
                {"id": "2", "ledger": 840, "code": 1, "flags": {"debits_must_not_exceed_credits": true}},
                {"id": "0", "ledger": 840, "code": 1}
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        results(&body),
        ["created", "created", "id_must_not_be_zero"]
    );

    let (status, body) = server
        .post(
            "/v1/ledger/transfers",
            &json!([
                {"id": "10", "debit_account_id": "1", "credit_account_id": "2", "amount": "2500", "ledger": 840, "code": 1},
                {"id": "11", "debit_account_id": "2", "credit_account_id": "1", "amount": "9999", "ledger": 840, "code": 1},
                {"id": "12", "debit_account_id": "2", "credit_account_id": "1", "amount": "340282366920938463463374607431768211455", "ledger": 840, "code": 1, "flags": {"balancing_debit": true}}
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(results(&body), ["created", "exceeds_credits", "created"]);

    let (status, body) = server
        .post("/v1/ledger/accounts/lookup", &json!({"ids": ["2", "404"]}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let accounts = body["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["credits_posted"], "2500");
    assert_eq!(
        accounts[0]["debits_posted"], "2500",
        "the balancing transfer took it all"
    );
    assert_eq!(accounts[0]["flags"]["debits_must_not_exceed_credits"], true);

    let (status, body) = server
        .post("/v1/ledger/transfers/lookup", &json!({"ids": ["12"]}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["transfers"][0]["amount"], "2500");

    let (status, body) = server
        .get("/v1/ledger/accounts/2/transfers?reversed=true&limit=10")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<&str> = body["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["12", "10"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_round_trip_embedded() {
    ledger_round_trip(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_round_trip_postgres() {
    ledger_round_trip(true).await;
}

/// Every way a request can be wrong gets a problem with a stable code, never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_problems_with_stable_codes() {
    let server = Running::start(false).await;
    let url = |path: &str| format!("{}{path}", server.base);
    let client = &server.client;

    let problem = |response: reqwest::Response| async move {
        let status = response.status();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(content_type, "application/problem+json", "{status}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], status.as_u16());
        (status, body["code"].as_str().unwrap().to_string(), body)
    };

    // No key, or a wrong one.
    let response = client
        .post(url("/v1/ledger/accounts"))
        .json(&json!([]))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(response).await.1, "unauthorized");
    let response = client
        .post(url("/v1/ledger/accounts"))
        .bearer_auth("not-the-key-0123456789abcdef012345")
        .json(&json!([]))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(response).await.0, StatusCode::UNAUTHORIZED);

    let cases: Vec<(&str, String, StatusCode, &str, Option<&str>)> = vec![
        (
            "/v1/ledger/accounts",
            r#"[{"id": "1",]"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            None,
        ),
        (
            "/v1/ledger/accounts",
            "[]".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            None,
        ),
        (
            "/v1/ledger/accounts",
            r#"[{"id": "1", "ledger": 840, "code": 1, "colour": "red"}]"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            None,
        ),
        (
            "/v1/ledger/transfers",
            r#"[{"id": "1", "amount": -5}]"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("[0].amount"),
        ),
        (
            "/v1/ledger/transfers",
            r#"[{"id": "x1"}]"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("[0].id"),
        ),
        (
            "/v1/ledger/accounts",
            r#"[{"id": "1", "ledger": 99999999999, "code": 1}]"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("[0].ledger"),
        ),
        (
            "/v1/ledger/accounts/lookup",
            r#"{"ids": []}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("ids"),
        ),
    ];
    for (path, body, status, code, field) in cases {
        let response = client
            .post(url(path))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let (got_status, got_code, problem_body) = problem(response).await;
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "{path} {body}: {problem_body}"
        );
        if let Some(field) = field {
            assert_eq!(problem_body["field"], field, "{body}: {problem_body}");
        }
    }

    // Too many events, too large a body, no JSON content type.
    let batch: Vec<Value> = (1..=8190)
        .map(|i| json!({"id": i.to_string(), "ledger": 1, "code": 1}))
        .collect();
    let (status, body) = server.post("/v1/ledger/accounts", &json!(batch)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("batch_too_large"))
    );
    assert_eq!(oversized_body(&server.base).await, "body_too_large");
    let response = client
        .post(url("/v1/ledger/accounts"))
        .bearer_auth(KEY)
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(response).await.1, "unsupported_media_type");

    // Query and path.
    for path in [
        "/v1/ledger/accounts/abc/transfers",
        "/v1/ledger/accounts/1/transfers?limit=0",
        "/v1/ledger/accounts/1/transfers?limit=ten",
        "/v1/ledger/accounts/1/transfers?sort=up",
    ] {
        let response = client.get(url(path)).bearer_auth(KEY).send().await.unwrap();
        let (status, code, _) = problem(response).await;
        assert!(status.is_client_error(), "{path}: {status} {code}");
    }

    // Unknown routes and methods.
    let response = client.get(url("/v1/nowhere")).send().await.unwrap();
    assert_eq!(problem(response).await.1, "not_found");
    let response = client
        .get(url("/v1/ledger/transfers"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(response).await.1, "method_not_allowed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_request_ids() {
    let server = Running::start(false).await;
    let response = server
        .client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (prefix, counter) = generated.split_once('-').unwrap();
    assert!(
        prefix.len() == 12 && u64::from_str_radix(counter, 16).is_ok(),
        "a process prefix and a counter: {generated}"
    );
    let again = server
        .client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_ne!(again.headers()["x-request-id"].to_str().unwrap(), generated);
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ready");
    let response = server
        .client
        .get(format!("{}/healthz", server.base))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-request-id"],
        "abc-123",
        "an id given is kept"
    );
    server.stop().await;
}

/// Sends a body over the limit by hand (the server may answer and close before it has all of
/// it, which a client library reports as a broken pipe) and returns the problem's code.
async fn oversized_body(base: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let size = kizo_gateway::server::BODY_LIMIT_BYTES + 1_000_000;
    let head = format!(
        "POST /v1/ledger/accounts HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 << 10];
    let mut sent = 0;
    while sent < size {
        if stream
            .write_all(&chunk[..chunk.len().min(size - sent)])
            .await
            .is_err()
        {
            break; // answered and closed early
        }
        sent += chunk.len();
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let body: Value = serde_json::from_str(body.trim()).unwrap_or_else(|_| {
        // A chunked body: the JSON sits between the chunk sizes.
        let start = body.find('{').unwrap();
        let end = body.rfind('}').unwrap();
        serde_json::from_str(&body[start..=end]).unwrap()
    });
    body["code"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_transfers_and_flushes() {
    let server = Running::start(false).await;
    server
        .post(
            "/v1/ledger/accounts",
            &json!([{"id": "1", "ledger": 1, "code": 1}, {"id": "2", "ledger": 1, "code": 1}]),
        )
        .await;
    server
        .post(
            "/v1/ledger/transfers",
            &json!([{"id": "9", "debit_account_id": "1", "credit_account_id": "2", "amount": "5", "ledger": 1, "code": 1}]),
        )
        .await;
    // The public listener shows them only to the token's bearers.
    for (token, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some(KEY), StatusCode::UNAUTHORIZED),
        (Some(METRICS_TOKEN), StatusCode::OK),
    ] {
        let mut request = server.client.get(format!("{}/metrics", server.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        assert_eq!(request.send().await.unwrap().status(), status, "{token:?}");
    }
    // The metrics listener serves them, and nothing else.
    let other = server
        .client
        .get(format!("{}/v1/ledger/accounts/1", server.metrics))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let response = server
        .client
        .get(format!("{}/metrics", server.metrics))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    for expected in [
        "kizo_http_requests_total{route=\"/v1/ledger/transfers\",method=\"POST\",status=\"200\"}",
        "kizo_http_request_duration_seconds_bucket{route=\"/v1/ledger/transfers\"",
        "kizo_transfers_total{result=\"created\"}",
        "kizo_engine_commits_total",
        "kizo_wal_flushes_total",
        "kizo_engine_shard_mailbox_depth{shard=\"1\"}",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    server.stop().await;
}
