//! The server process as an operator runs it (`kizo-gateway`, over real TCP): deadlines on
//! headers, idle connections and bodies, the connection cap, and SIGTERM under load (every
//! acknowledged transfer survives, the process exits 0).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const API_KEY: &str = "serving-test-api-key-0123456789abcdef";

/// A `kizo-gateway` process on the embedded store in `data`, and the address it serves.
struct Gateway {
    child: Child,
    addr: String,
    /// Where `/metrics` is served.
    metrics_addr: String,
}

impl Gateway {
    fn start(data: &Path, flags: &[&str]) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kizo-gateway"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--api-key",
                API_KEY,
                "--no-snapshots",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data)
            .args(flags)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the gateway starts");
        let stdout = child.stdout.take().unwrap();
        let (found, addr) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut metrics_addr = None;
            let mut sent = false;
            let addr_of = |line: &str| {
                line.split_whitespace()
                    .find_map(|word| word.strip_prefix("addr="))
                    .map(str::to_string)
            };
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(" serving metrics addr=") {
                    metrics_addr = addr_of(&line);
                }
                if !sent && line.contains(" serving addr=") {
                    let _ = found.send(addr_of(&line).zip(metrics_addr.clone()));
                    sent = true;
                }
                // Keeps reading, so that the process never blocks on a full pipe.
            }
        });
        let (addr, metrics_addr) = addr
            .recv_timeout(Duration::from_secs(60))
            .expect("the gateway says where it serves")
            .expect("the lines name both addresses");
        Gateway {
            child,
            addr,
            metrics_addr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its status.
    fn wait(mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < limit, "the gateway did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads until the peer closes; how long that took, and what came.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (Duration, String) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => panic!("still open after {limit:?}"),
        }
    }
    (
        started.elapsed(),
        String::from_utf8_lossy(&received).into_owned(),
    )
}

#[tokio::test]
async fn slow_headers_idle_connections_and_slow_bodies_are_cut_off() {
    let data = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        data.path(),
        &["--header-timeout", "1s", "--body-timeout", "1s"],
    );

    // Headers that never end.
    let mut stream = TcpStream::connect(&gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: kizo\r\n")
        .await
        .unwrap();
    let (waited, _) = until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(waited >= Duration::from_millis(900), "{waited:?}");

    // A keep-alive connection that goes quiet after its answer.
    let mut stream = TcpStream::connect(&gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: kizo\r\n\r\n")
        .await
        .unwrap();
    let (waited, answer) = until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(waited >= Duration::from_millis(900), "{waited:?}");

    // A body that stops half way: 408 with a problem, then the connection closes.
    let mut stream = TcpStream::connect(&gateway.addr).await.unwrap();
    let head = format!(
        "POST /v1/ledger/accounts HTTP/1.1\r\nHost: kizo\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n[{{\"id\""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (_, answer) = until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");

    // A request that keeps to the deadlines is served as ever.
    let health = reqwest::get(gateway.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_until_one_frees() {
    let data = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        data.path(),
        &["--connections-max", "2", "--header-timeout", "30s"],
    );
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&gateway.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: kizo\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 1024];
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    // The third is accepted by the kernel, then closed unanswered.
    let mut third = TcpStream::connect(&gateway.addr).await.unwrap();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: kizo\r\n\r\n")
        .await;
    let (_, answer) = until_closed(&mut third, Duration::from_secs(10)).await;
    assert!(answer.is_empty(), "{answer}");

    drop(held.pop());
    // The freed place is taken again (the server notices the close at once).
    let started = Instant::now();
    loop {
        let client = reqwest::Client::new();
        if let Ok(answer) = client.get(gateway.url("/healthz")).send().await {
            assert_eq!(answer.status(), 200);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ledger(client: &reqwest::Client, url: String, body: Value) -> Option<(u16, Value)> {
    let answer = client
        .post(url)
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .ok()?;
    let status = answer.status().as_u16();
    Some((status, answer.json().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_exits_zero_and_loses_no_acknowledged_transfer() {
    let data = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(data.path(), &[]);
    let client = reqwest::Client::new();
    let accounts: Vec<Value> = (1..=4)
        .map(|id| json!({"id": id.to_string(), "ledger": 840, "code": 1}))
        .collect();
    let (status, _) = ledger(&client, gateway.url("/v1/ledger/accounts"), json!(accounts))
        .await
        .unwrap();
    assert_eq!(status, 200);

    // Eight clients in closed loops, one transfer a request, until the server goes away.
    let mut clients = Vec::new();
    for task in 0..8u64 {
        let url = gateway.url("/v1/ledger/transfers");
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut acknowledged, mut refused) = (Vec::new(), 0u32);
            for n in 0.. {
                let id = (task << 32 | n) + 1;
                let transfer = json!([{"id": id.to_string(), "debit_account_id": "1",
                    "credit_account_id": (2 + n % 3).to_string(), "amount": "1",
                    "ledger": 840, "code": 1}]);
                match ledger(&client, url.clone(), transfer).await {
                    Some((200, body)) => {
                        assert_eq!(body["results"][0]["result"], "created", "{body}");
                        acknowledged.push(id);
                    }
                    Some((status, body)) => {
                        assert!(status == 503, "{status} {body}");
                        refused += 1;
                    }
                    None => break, // the server stopped taking connections
                }
            }
            (acknowledged, refused)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gateway.terminate();
    let status = tokio::task::spawn_blocking(move || gateway.wait(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let mut acknowledged = Vec::new();
    for client in clients {
        acknowledged.extend(client.await.unwrap().0);
    }
    assert!(
        acknowledged.len() > 100,
        "{} acknowledged",
        acknowledged.len()
    );

    // Every acknowledged transfer is there after a restart.
    let gateway = Gateway::start(data.path(), &[]);
    for chunk in acknowledged.chunks(1000) {
        let ids: Vec<String> = chunk.iter().map(u64::to_string).collect();
        let (status, found) = ledger(
            &client,
            gateway.url("/v1/ledger/transfers/lookup"),
            json!({ "ids": ids }),
        )
        .await
        .unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            found["transfers"].as_array().map(Vec::len),
            Some(chunk.len()),
            "{found}"
        );
    }
}

#[test]
fn production_refuses_the_built_in_bank_and_every_file_made_is_private() {
    let data = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_kizo-gateway"));
    command
        .args(["--listen", "127.0.0.1:0", "--production"])
        .args(["--metrics-listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env_remove("DATABASE_URL");
    for (flag, file) in [
        ("--api-key-file", "api"),
        ("--jwt-secret-file", "jwt"),
        ("--password-pepper-file", "pepper"),
        ("--admin-api-key-file", "admin"),
    ] {
        let path = secrets.path().join(file);
        std::fs::write(&path, format!("{file}-0123456789abcdef0123456789abcdef")).unwrap();
        command.arg(flag).arg(path);
    }
    let output = command.output().unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("needs a real bank"), "{said}");
    // With a bank, still no start without an SMTP server: nobody could prove an email or
    // reset a password.
    let output = command
        .args(["--bank-url", "https://bank.example.com"])
        .args(["--bank-token", "bank-token-0123456789abcdef0123456789"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("needs an SMTP server"), "{said}");

    // In development: the store, the generated secrets and the bank's journal are 0600, and
    // their folders 0700.
    let gateway = Gateway::start(data.path(), &[]);
    drop(gateway);
    use std::os::unix::fs::PermissionsExt;
    let mut seen = 0;
    let mut folders = vec![data.path().to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
            if path.is_dir() {
                folders.push(path);
            }
            seen += 1;
        }
    }
    assert!(seen >= 4, "{seen} files");
}

#[tokio::test]
async fn without_a_bank_token_no_callback_is_taken() {
    let data = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(data.path(), &[]);
    let answer = reqwest::Client::new()
        .post(gateway.url("/v1/bank/callbacks"))
        .json(&json!({"reference": uuid::Uuid::new_v4(), "kind": "deposit", "status": "paid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let problem: Value = answer.json().await.unwrap();
    assert_eq!(problem["code"], "unauthorized", "{problem}");
}

/// `/metrics` is on its own listener (loopback by default), not on the public one; scrapes
/// read no store (the counts behind the settlement gauges are refreshed beside them).
#[tokio::test]
async fn metrics_are_on_their_own_listener_only() {
    let data = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(data.path(), &[]);
    assert!(
        gateway.metrics_addr.starts_with("127.0.0.1:"),
        "{}",
        gateway.metrics_addr
    );
    let client = reqwest::Client::new();
    let public = client.get(gateway.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404);
    let scraped = client
        .get(format!("http://{}/metrics", gateway.metrics_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    let text = scraped.text().await.unwrap();
    for expected in ["kizo_engine_commits_total", "kizo_settlements_waiting"] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    let other = client
        .get(format!("http://{}/v1/me", gateway.metrics_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

/// Behind a trusted proxy, each client has its own sign-in budget; from anybody else,
/// `X-Forwarded-For` changes nothing.
#[tokio::test]
async fn sign_in_budgets_follow_the_client_behind_a_trusted_proxy_only() {
    async fn login(gateway: &Gateway, forwarded_for: &str) -> u16 {
        reqwest::Client::new()
            .post(gateway.url("/v1/auth/login"))
            .header("x-forwarded-for", forwarded_for)
            .json(&json!({"email": "nobody@example.com", "password": "wrong password"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
    let data = tempfile::tempdir().unwrap();
    let behind = Gateway::start(
        data.path(),
        &[
            "--trusted-proxies",
            "127.0.0.1",
            "--auth-rate-per-address",
            "2",
        ],
    );
    assert_eq!(login(&behind, "203.0.113.1").await, 401);
    assert_eq!(login(&behind, "203.0.113.1").await, 401);
    assert_eq!(login(&behind, "203.0.113.1").await, 429);
    assert_eq!(login(&behind, "203.0.113.2").await, 401, "another client");
    drop(behind);

    let data = tempfile::tempdir().unwrap();
    let direct = Gateway::start(data.path(), &["--auth-rate-per-address", "2"]);
    assert_eq!(login(&direct, "203.0.113.1").await, 401);
    assert_eq!(login(&direct, "203.0.113.2").await, 401);
    assert_eq!(
        login(&direct, "203.0.113.3").await,
        429,
        "one client, forging"
    );
}

/// Failed sign-ins for one email from one address make the next attempt from there wait,
/// longer each time; the owner signing in from another address is never kept out.
#[tokio::test]
async fn failed_sign_ins_slow_their_address_down_but_never_lock_the_owner_out() {
    async fn login(gateway: &Gateway, from: &str, password: &str) -> (u16, Option<u64>) {
        let response = reqwest::Client::new()
            .post(gateway.url("/v1/auth/login"))
            .header("x-forwarded-for", from)
            .json(&json!({"email": "ada@example.com", "password": password}))
            .send()
            .await
            .unwrap();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        (response.status().as_u16(), retry_after)
    }
    let data = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(data.path(), &["--trusted-proxies", "127.0.0.1"]);
    let signup = reqwest::Client::new()
        .post(gateway.url("/v1/auth/signup"))
        .json(&json!({"email": "ada@example.com", "password": "the right password", "first_name": "Ada", "last_name": "L"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201);
    let attacker = "203.0.113.66";
    for _ in 0..3 {
        assert_eq!(login(&gateway, attacker, "a guess").await.0, 401);
    }
    // Now every attempt from there waits, even with the right password.
    let (status, wait) = login(&gateway, attacker, "the right password").await;
    assert_eq!((status, wait), (429, Some(1)));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(login(&gateway, attacker, "a guess").await.0, 401);
    let (status, wait) = login(&gateway, attacker, "a guess").await;
    assert_eq!((status, wait), (429, Some(2)), "the wait doubles");
    // The owner, elsewhere, signs in at once.
    assert_eq!(
        login(&gateway, "198.51.100.7", "the right password")
            .await
            .0,
        200
    );
}
