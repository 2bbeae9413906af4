//! Kizo's gateway over HTTP: the batch ledger API (an API key) and the wallet API (users,
//! tokens, Idempotency-Keys).

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use crate::lane::{Endpoint, Lane};
use crate::target::{Balance, Move, RequestOutcome, Unknown, CODE, LEDGER};

/// How long one request may take before it counts as `timeout` (its outcome unknown).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How the ledger API's transfers travel (`--wire`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Wire {
    /// JSON, written by hand.
    #[default]
    Json,
    /// The binary format's 128-byte records (docs/binary.md).
    Binary,
}

#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    /// The ledger API's setup and audit calls (accounts, lookups), with the client library's
    /// retries, on the same wire: the measured requests go through the lanes.
    ledger: kizo_client::Client,
    wire: Wire,
    base: String,
    hot: std::sync::Arc<Hot>,
}

/// What the requests sent all through a run need, made once.
struct Hot {
    /// The wallet API's transfer URL, parsed once: parsing a URL per request was a tenth of
    /// the generator's time, which the server on the same cores then lacks.
    wallet_transfers: reqwest::Url,
    /// Ledger transfers go through the workers' own connections (one lane per worker).
    endpoint: Endpoint,
    lanes: Box<[tokio::sync::Mutex<Lane>]>,
}

/// The ledger API's transfers: the requests of the `transfers`, `ledger-batch`,
/// `double-spend` and `login-storm` scenarios.
const LEDGER_TRANSFERS: &str = "/v1/ledger/transfers";

/// One result of a ledger batch; the rest of the answer is not read.
#[derive(serde::Deserialize)]
struct LedgerResults<'a> {
    #[serde(borrow)]
    results: Vec<LedgerResult<'a>>,
}

#[derive(serde::Deserialize)]
struct LedgerResult<'a> {
    result: &'a str,
}

/// A 5xx: the request's outcome is unknown (the audit finds out).
fn unknown_if_server_error(status: reqwest::StatusCode, body: &[u8]) -> Result<(), Unknown> {
    if status.is_server_error() {
        return Err(Unknown::new(
            format!("http_{}", status.as_u16()),
            String::from_utf8_lossy(body),
        ));
    }
    Ok(())
}

/// A client library's failure as an unknown outcome, named by the problem's code or the kind
/// of failure.
fn client_error(error: kizo_client::Error) -> Unknown {
    let code = match &error {
        kizo_client::Error::Problem { status, .. } => format!("http_{status}"),
        kizo_client::Error::Timeout(_) => "timeout".into(),
        kizo_client::Error::Transport(_) => "transport".into(),
        kizo_client::Error::Decode(_) => "protocol".into(),
        kizo_client::Error::Invalid(_) => "args".into(),
    };
    Unknown::new(code, error.code().unwrap_or(&error.to_string()))
}

/// A ledger API answer other than a 2xx, named by its problem's `code`.
fn refusal(status: reqwest::StatusCode, problem: &Value) -> Unknown {
    Unknown::new(
        format!("http_{}", status.as_u16()),
        problem["code"].as_str().unwrap_or_default(),
    )
}

/// A logged-in wallet user.
#[derive(Clone, Debug)]
pub struct WalletUser {
    pub email: String,
    pub token: String,
    /// The wallet's id as the API shows it (a UUID).
    pub wallet: String,
}

pub const PASSWORD: &str = "load generator password";

pub fn ledger_id(wallet: &str) -> u128 {
    uuid::Uuid::parse_str(wallet).map_or(0, |u| u.as_u128())
}

impl Http {
    /// A client of the gateway at `base` (`http://HOST:PORT`), with a lane for each of
    /// `connections` workers; refused when `base` is not such a URL or the API key cannot be
    /// sent as a header.
    pub fn new(base: &str, api_key: &str, connections: usize, wire: Wire) -> Result<Http, Unknown> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(connections.max(1))
            .timeout(REQUEST_TIMEOUT)
            // A proxy in the environment would be measured along with the server.
            .no_proxy()
            // The API never redirects: a redirect is an answer to report, not to follow.
            // (`reqwest` still parses each answer's URL again, whatever the policy: the
            // requests sent all through a run go through the lanes instead.)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Unknown::new("args", e))?;
        let base = base.trim_end_matches('/').to_string();
        let url = |path: &str| {
            reqwest::Url::parse(&format!("{base}{path}"))
                .map_err(|e| Unknown::new("args", format!("--target {base}: {e}")))
        };
        let mut api_auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {api_key}"))
            .map_err(|_| Unknown::new("args", "the API key holds characters a header cannot"))?;
        api_auth.set_sensitive(true);
        Ok(Http {
            hot: std::sync::Arc::new(Hot {
                wallet_transfers: url("/v1/transfers")?,
                endpoint: Endpoint::new(&base, api_auth)?,
                lanes: (0..connections.max(1))
                    .map(|_| tokio::sync::Mutex::new(Lane::default()))
                    .collect(),
            }),
            client,
            ledger: kizo_client::Client::builder(&base)
                .api_key(api_key)
                .wire(match wire {
                    Wire::Json => kizo_client::Wire::Json,
                    Wire::Binary => kizo_client::Wire::Binary,
                })
                .timeout(REQUEST_TIMEOUT)
                .build()
                .map_err(|e| Unknown::new("args", e))?,
            wire,
            base,
        })
    }

    /// Sends a request; a transport failure, a timeout or a 5xx is an unknown outcome, any
    /// other status is the server's answer.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, Value), Unknown> {
        let response = request.send().await.map_err(|e| {
            let code = if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connect"
            } else {
                "transport"
            };
            Unknown::new(code, e)
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| Unknown::new("transport", e))?;
        unknown_if_server_error(status, &body)?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    pub async fn create_accounts(&self, system: u128, wallets: &[u128]) -> Result<(), Unknown> {
        let mut accounts = vec![kizo_engine::Account::new(system, LEDGER, CODE)];
        accounts.extend(wallets.iter().map(|id| kizo_engine::Account {
            flags: kizo_engine::AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            ..kizo_engine::Account::new(*id, LEDGER, CODE)
        }));
        for chunk in accounts.chunks(kizo_engine::BATCH_EVENTS_MAX) {
            let results = self
                .ledger
                .create_accounts(chunk)
                .await
                .map_err(client_error)?;
            if let Some(bad) = results.iter().find(|r| {
                !matches!(
                    r,
                    kizo_engine::CreateAccountResult::Created
                        | kizo_engine::CreateAccountResult::Exists
                )
            }) {
                return Err(Unknown::new("setup", format!("an account: {bad}")));
            }
        }
        Ok(())
    }

    /// Creates transfers on `lane`'s connection (a worker's own; any lane will do outside a
    /// run).
    pub async fn transfers(
        &self,
        lane: usize,
        moves: &[Move],
    ) -> Result<Vec<RequestOutcome>, Unknown> {
        if self.wire == Wire::Binary {
            return self.binary_transfers(lane, moves).await;
        }
        // Written by hand: a batch of 8189 through `serde_json::Value` costs the generator
        // more than the server.
        let mut events = String::with_capacity(moves.len() * 160 + 2);
        events.push('[');
        for (i, m) in moves.iter().enumerate() {
            if i > 0 {
                events.push(',');
            }
            let _ = write!(
                events,
                r#"{{"id":"{}","debit_account_id":"{}","credit_account_id":"{}","amount":"{}","ledger":{LEDGER},"code":{CODE}}}"#,
                m.id, m.from, m.to, m.amount
            );
        }
        events.push(']');
        let hot = &self.hot;
        let (status, body) = hot.lanes[lane % hot.lanes.len()]
            .lock()
            .await
            .post(
                &hot.endpoint,
                LEDGER_TRANSFERS,
                events,
                "application/json",
                REQUEST_TIMEOUT,
            )
            .await?;
        unknown_if_server_error(status, &body)?;
        if !status.is_success() {
            let problem = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return Err(refusal(status, &problem));
        }
        let results = serde_json::from_slice::<LedgerResults>(&body)
            .map_err(|e| Unknown::new("protocol", e))?
            .results;
        if results.len() != moves.len() {
            return Err(Unknown::new("protocol", "one result per event expected"));
        }
        Ok(results
            .iter()
            .map(|r| match r.result {
                "created" => RequestOutcome::Created,
                "exists" => RequestOutcome::Exists,
                other => RequestOutcome::Refused(other.to_string()),
            })
            .collect())
    }

    /// The same over the binary format: records out, the events not created back.
    async fn binary_transfers(
        &self,
        lane: usize,
        moves: &[Move],
    ) -> Result<Vec<RequestOutcome>, Unknown> {
        let transfers: Vec<kizo_engine::Transfer> = moves
            .iter()
            .map(|m| {
                kizo_engine::Transfer::new(m.id, m.from, m.to, u128::from(m.amount), LEDGER, CODE)
            })
            .collect();
        let hot = &self.hot;
        let (status, body) = hot.lanes[lane % hot.lanes.len()]
            .lock()
            .await
            .post(
                &hot.endpoint,
                LEDGER_TRANSFERS,
                kizo_binary::encode_transfers(&transfers),
                kizo_binary::MEDIA_TYPE,
                REQUEST_TIMEOUT,
            )
            .await?;
        unknown_if_server_error(status, &body)?;
        if !status.is_success() {
            let problem = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return Err(refusal(status, &problem));
        }
        let results =
            kizo_binary::decode_results::<kizo_engine::CreateTransferResult>(&body, moves.len())
                .map_err(|e| Unknown::new("protocol", e))?;
        Ok(results
            .iter()
            .map(|r| match r {
                kizo_engine::CreateTransferResult::Created => RequestOutcome::Created,
                kizo_engine::CreateTransferResult::Exists => RequestOutcome::Exists,
                other => RequestOutcome::Refused(other.code().to_string()),
            })
            .collect())
    }

    pub async fn balances(&self, ids: &[u128]) -> Result<Vec<Balance>, Unknown> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(kizo_engine::BATCH_EVENTS_MAX) {
            let accounts = self
                .ledger
                .lookup_accounts(chunk)
                .await
                .map_err(client_error)?;
            found.extend(accounts.iter().map(|a| Balance {
                id: a.id,
                debits: a.debits_posted,
                credits: a.credits_posted,
            }));
        }
        Ok(found)
    }

    pub async fn find_transfers(&self, ids: &[u128]) -> Result<Vec<Move>, Unknown> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(kizo_engine::BATCH_EVENTS_MAX) {
            let transfers = self
                .ledger
                .lookup_transfers(chunk)
                .await
                .map_err(client_error)?;
            found.extend(transfers.iter().map(|t| Move {
                id: t.id,
                from: t.debit_account_id,
                to: t.credit_account_id,
                amount: u64::try_from(t.amount).unwrap_or(u64::MAX),
            }));
        }
        Ok(found)
    }

    /// Signs up (or, if the email is taken, logs in) and returns the user.
    pub async fn sign_up_or_in(&self, email: &str) -> Result<WalletUser, Unknown> {
        let signup = json!({"email": email, "password": PASSWORD, "first_name": "Load", "last_name": "Generator"});
        let request = self
            .client
            .post(format!("{}/v1/auth/signup", self.base))
            .json(&signup);
        let (status, _) = self.send(request).await?;
        if !(status.is_success() || status == reqwest::StatusCode::CONFLICT) {
            return Err(Unknown::new(format!("signup_{}", status.as_u16()), email));
        }
        self.login(email).await
    }

    pub async fn login(&self, email: &str) -> Result<WalletUser, Unknown> {
        let request = self
            .client
            .post(format!("{}/v1/auth/login", self.base))
            .json(&json!({"email": email, "password": PASSWORD}));
        let (status, body) = self.send(request).await?;
        let token = body["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !status.is_success() || token.is_empty() {
            return Err(Unknown::new(format!("login_{}", status.as_u16()), email));
        }
        let request = self
            .client
            .get(format!("{}/v1/me", self.base))
            .bearer_auth(&token);
        let (_, me) = self.send(request).await?;
        let wallet = me["accounts"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(WalletUser {
            email: email.to_string(),
            token,
            wallet,
        })
    }

    /// A wallet GET (`/v1/dashboard`, a history page); the status if not 200.
    pub async fn wallet_get(&self, user: &WalletUser, path: &str) -> Result<(), Unknown> {
        let request = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&user.token);
        match self.send(request).await? {
            (status, _) if status.is_success() => Ok(()),
            (status, body) => Err(Unknown::new(
                body["code"]
                    .as_str()
                    .map_or_else(|| format!("http_{}", status.as_u16()), str::to_string),
                path,
            )),
        }
    }

    /// `POST /v1/transfers` with `key`; the ledger id of the transfer when created.
    pub async fn wallet_transfer(
        &self,
        user: &WalletUser,
        key: &str,
        to_wallet: &str,
        amount: u64,
    ) -> Result<(RequestOutcome, u128), Unknown> {
        let body = json!({"from_account_id": user.wallet, "to": {"account_id": to_wallet}, "amount": amount});
        let request = self
            .client
            .post(self.hot.wallet_transfers.clone())
            .bearer_auth(&user.token)
            .header("idempotency-key", key)
            .json(&body);
        let (status, body) = self.send(request).await?;
        let id = body["id"].as_str().map_or(0, ledger_id);
        Ok(match status.as_u16() {
            201 => (RequestOutcome::Created, id),
            409 => return Err(Unknown::new("idempotency_key_in_use", key)),
            _ => (
                RequestOutcome::Refused(body["code"].as_str().unwrap_or("refused").to_string()),
                0,
            ),
        })
    }
}
