//! Shared by the gateway's tests: a real server on a fresh store.
#![allow(dead_code)]

pub mod receiver;

use kizo_gateway::{Server, ServerConfig};
use kizo_persistence::StoreConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

pub const API_KEY: &str = "test-key-0123456789abcdef0123456789";

pub use kizo_testkit::TestStore;

pub const ADMIN_KEY: &str = "admin-key-for-tests-0123456789abcdef";

/// Starts a server on `store`; returns it and its base URL.
pub async fn start(store: &StoreConfig) -> (Server, String) {
    start_with(store, Default::default()).await
}

/// Starts a server on `store` that keeps snapshots as `snapshots` says.
pub async fn start_with(
    store: &StoreConfig,
    snapshots: kizo_gateway::server::SnapshotSettings,
) -> (Server, String) {
    start_configured(store, |config| config.snapshots = snapshots).await
}

/// Starts a server on `store` with the tests' configuration, changed by `change`.
pub async fn start_configured(
    store: &StoreConfig,
    change: impl FnOnce(&mut ServerConfig),
) -> (Server, String) {
    let mut config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: store.clone(),
        shard_count: 2,
        transfer_window: 4,
        api_key: API_KEY.into(),
        jwt_secret: "test-jwt-secret-0123456789abcdef0123".into(),
        password_pepper: "test-pepper-0123456789abcdef0123456".into(),
        currency: kizo_gateway::config::Currency::parse("USD").unwrap(),
        auth_rates: Default::default(),
        admin_api_key: ADMIN_KEY.into(),
        bank: Default::default(),
        snapshots: Default::default(),
        http: Default::default(),
        mail: kizo_gateway::mail::MailSettings {
            // Kept for the test process's life: tests read the mail the server sends.
            dir: Some(tempfile::tempdir().unwrap().keep()),
            ..Default::default()
        },
        metrics: Default::default(),
        cluster: None,
        cdc: None,
        webhooks: Default::default(),
    };
    change(&mut config);
    let server = Server::start(config).await.expect("the server starts");
    let base = format!("http://{}", server.addr);
    (server, base)
}

/// An answer as the tests look at it.
pub struct Answer {
    pub status: StatusCode,
    pub replayed: bool,
    pub body: Value,
}

/// Sends a request with a bearer token, an optional Idempotency-Key and an optional JSON body.
pub async fn send(
    method: &str,
    url: String,
    token: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let client = reqwest::Client::new();
    let mut request = if method == "GET" {
        client.get(url)
    } else {
        client.post(url)
    };
    request = request.bearer_auth(token);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    Answer {
        status: response.status(),
        replayed: response.headers().get("idempotent-replayed").is_some(),
        body: response.json().await.unwrap_or(Value::Null),
    }
}

/// Signs up and logs in; returns the access token and the wallet's id.
pub async fn user(base: &str, email: &str) -> (String, String) {
    let client = reqwest::Client::new();
    let signup = json!({"email": email, "password": "long enough password", "first_name": "A", "last_name": "B"});
    let response = client
        .post(format!("{base}/v1/auth/signup"))
        .json(&signup)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let wallet = body["accounts"][0]["id"].as_str().unwrap().to_string();
    let login = json!({"email": email, "password": "long enough password"});
    let response = client
        .post(format!("{base}/v1/auth/login"))
        .json(&login)
        .send()
        .await
        .unwrap();
    let tokens: Value = response.json().await.unwrap();
    (tokens["access_token"].as_str().unwrap().to_string(), wallet)
}

/// The newest mail to `email` the server kept (development mail), waiting for it a while.
pub async fn mail_to(server: &Server, email: &str) -> String {
    let dir = server.mail_dir.as_ref().expect("the server keeps its mail");
    for _ in 0..200 {
        let mut found: Vec<(std::path::PathBuf, String)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let text = std::fs::read_to_string(&path).ok()?;
                text.lines()
                    .any(|line| line.eq_ignore_ascii_case(&format!("To: {email}")))
                    .then_some((path, text))
            })
            .collect();
        found.sort();
        if let Some((_, text)) = found.pop() {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("no mail to {email}");
}

/// The one-use code a mail carries (the line after "enter this code:").
pub fn code_in(mail: &str) -> String {
    let mut lines = mail.lines().skip_while(|l| !l.contains("enter this code:"));
    lines
        .find(|l| !l.trim().is_empty() && !l.contains("enter this code:"))
        .expect("a code in the mail")
        .trim()
        .to_string()
}

/// Verifies `email`'s address with the code of the newest mail sent to it.
pub async fn verify(server: &Server, base: &str, email: &str) {
    let code = code_in(&mail_to(server, email).await);
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/auth/verify-email"))
        .json(&json!({ "token": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

/// Pays `amount` into `wallet` (a UUID) from a bank account of the ledger API (created on first
/// use), with ledger transfer id `id`.
pub async fn fund(base: &str, wallet: &str, amount: u64, id: u64) {
    let bank = json!([{"id": "1", "ledger": 840, "code": 2}]);
    let created = send(
        "POST",
        format!("{base}/v1/ledger/accounts"),
        API_KEY,
        None,
        Some(bank),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let ledger_id = uuid::Uuid::parse_str(wallet).unwrap().as_u128().to_string();
    let funding = json!([{"id": id.to_string(), "debit_account_id": "1", "credit_account_id": ledger_id,
        "amount": amount.to_string(), "ledger": 840, "code": 2}]);
    let answer = send(
        "POST",
        format!("{base}/v1/ledger/transfers"),
        API_KEY,
        None,
        Some(funding),
    )
    .await;
    assert_eq!(
        answer.body["results"][0]["result"], "created",
        "{}",
        answer.body
    );
}

/// The result code of each event of a batch ledger API answer.
pub fn results(body: &Value) -> Vec<&str> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect()
}

/// Fails unless JavaScript reads `value` exactly: no number above 2^53 (or fractional), and
/// every field named like a time (`*_at`) an RFC 3339 string in UTC.
pub fn assert_js_safe(value: &Value) {
    const SAFE: u64 = 1 << 53;
    match value {
        Value::Number(n) => assert!(
            n.as_u64().is_some_and(|n| n <= SAFE)
                || n.as_i64().is_some_and(|n| n.unsigned_abs() <= SAFE),
            "{n} is not an integer JavaScript reads exactly"
        ),
        Value::Array(items) => items.iter().for_each(assert_js_safe),
        Value::Object(fields) => {
            for (name, field) in fields {
                if name.ends_with("_at") {
                    let text = field
                        .as_str()
                        .unwrap_or_else(|| panic!("{name}: {field} is not a string"));
                    assert!(
                        text.len() >= 20 && text.as_bytes()[10] == b'T' && text.ends_with('Z'),
                        "{name}: {text} is not RFC 3339 in UTC"
                    );
                }
                assert_js_safe(field);
            }
        }
        _ => {}
    }
}

/// A `kizo-gateway` process on `store`, serving on a port of its choosing.
pub struct GatewayProcess {
    pub child: tokio::process::Child,
    pub base: String,
    /// Its data folder: the store's when embedded, its own otherwise (generated secrets,
    /// development mail).
    pub data_dir: std::path::PathBuf,
    _own_data: tempfile::TempDir,
}

impl GatewayProcess {
    /// Starts the binary with `args` besides its store, and waits until it serves.
    pub async fn start(store: &TestStore, args: &[&str]) -> GatewayProcess {
        GatewayProcess::start_on(store, "127.0.0.1:0", args).await
    }

    /// The same, listening on `listen`.
    pub async fn start_on(store: &TestStore, listen: &str, args: &[&str]) -> GatewayProcess {
        use tokio::io::AsyncBufReadExt;
        let own_data = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kizo-gateway"));
        command
            .args(["--listen", listen])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KIZO_API_KEY", API_KEY)
            .env("KIZO_METRICS_LISTEN", "127.0.0.1:0")
            .env("KIZO_LOG_JSON", "true")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            // A start that fails says why there (its log is on standard output).
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        let data_dir = match &store.config {
            StoreConfig::Postgres { url, schema } => {
                command.env("DATABASE_URL", url);
                command.env("KIZO_PG_SCHEMA", schema.as_deref().unwrap());
                own_data.path().to_path_buf()
            }
            StoreConfig::Embedded { dir } => dir.clone(),
        };
        command.env("KIZO_DATA_DIR", &data_dir);
        let mut child = command.spawn().expect("the gateway starts");
        // The log goes to standard output.
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            let mut seen = std::collections::VecDeque::new();
            while let Some(line) = lines.next_line().await.unwrap() {
                if seen.len() == 10 {
                    seen.pop_front();
                }
                seen.push_back(line.clone());
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if event["fields"]["message"] == "serving" {
                    return event["fields"]["addr"].as_str().unwrap().to_string();
                }
            }
            panic!("the gateway stopped before it served; its last lines: {seen:#?}");
        })
        .await
        .expect("the gateway serves within a minute");
        // Keep reading its log, so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        GatewayProcess {
            child,
            base: format!("http://{addr}"),
            data_dir,
            _own_data: own_data,
        }
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, SIGTERM, ...) to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id().expect("running") as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "signal sent");
    }

    /// SIGTERM (a graceful stop), and wait for the process to end.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.child.wait().await.unwrap()
    }

    /// SIGKILL, and wait for the process to end.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

/// A cluster node's configuration for the tests: node `id` of `partitions`, 1.5 s leases
/// renewed every 300 ms, payments between partitions waited for 2 s.
pub fn cluster_config(id: &str, partitions: u32) -> kizo_gateway::server::ClusterConfig {
    kizo_gateway::server::ClusterConfig {
        node_id: kizo_cluster::NodeId::new(id).unwrap(),
        advertise: None,
        partitions: kizo_cluster::PartitionCount::new(partitions).unwrap(),
        policy: kizo_cluster::lease::LeasePolicy {
            length_ms: 1_500,
            renew_every_ms: 300,
        },
        pay_bound: std::time::Duration::from_secs(2),
        partition_databases: Default::default(),
        router: false,
    }
}
