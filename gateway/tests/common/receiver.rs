//! A webhook receiver on a loopback port, for the tests: records what it accepts, answers as
//! told, and checks signatures with the Standard Webhooks algorithm written out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use base64::Engine as _;
use hmac::Mac;

/// How a receiver answers.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Accept,
    /// 503 to the first `n` attempts of each event, then 200.
    FailFirst(u32),
    /// 500, always.
    Fail,
    /// Never answers.
    Hang,
}

/// One accepted delivery, as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
}

#[derive(Default)]
struct Seen {
    accepted: Vec<Received>,
    attempts: HashMap<String, u32>,
}

/// A webhook receiver on a loopback port.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Seen>>,
}

impl Receiver {
    pub async fn start(mode: Mode) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let receiver = Receiver {
            url: format!("http://{addr}/hook"),
            mode: Arc::new(Mutex::new(mode)),
            seen: Arc::default(),
        };
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let state = state.clone();
                async move { state.answer(headers, body).await }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    async fn answer(&self, headers: HeaderMap, body: String) -> AxumStatus {
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        let id = header("webhook-id");
        let mode = *self.mode.lock().unwrap();
        let attempt = {
            let mut seen = self.seen.lock().unwrap();
            let attempts = seen.attempts.entry(id.clone()).or_default();
            *attempts += 1;
            *attempts
        };
        let accept = match mode {
            Mode::Accept => true,
            Mode::FailFirst(n) => attempt > n,
            Mode::Fail => false,
            Mode::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                false
            }
        };
        if !accept {
            return if matches!(mode, Mode::Fail) {
                AxumStatus::INTERNAL_SERVER_ERROR
            } else {
                AxumStatus::SERVICE_UNAVAILABLE
            };
        }
        self.seen.lock().unwrap().accepted.push(Received {
            id,
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            body,
        });
        AxumStatus::OK
    }

    pub fn accepted(&self) -> Vec<Received> {
        self.seen.lock().unwrap().accepted.clone()
    }

    pub fn attempts(&self, id: &str) -> u32 {
        self.seen
            .lock()
            .unwrap()
            .attempts
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    /// Waits (at most `within`) until `n` deliveries were accepted; returns them.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let accepted = self.accepted();
            if accepted.len() >= n {
                return accepted;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} deliveries at {} within {within:?}",
                accepted.len(),
                self.url
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The Standard Webhooks check, written out: the secret's bytes (base64 after `whsec_`) key
/// HMAC-SHA256 over `id.timestamp.body`; the header holds `v1,<base64 of it>`.
pub fn verify(secret: &str, received: &Received) {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", received.id, received.timestamp, received.body).as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    assert!(
        received.signature.split(' ').any(|s| s == expected),
        "signature {} for {}",
        received.signature,
        received.id
    );
    let sent: u64 = received.timestamp.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(sent) < 300, "a fresh timestamp");
}
