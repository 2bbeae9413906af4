//! `kizo-client`: Kizo's HTTP API from Rust, typed.
//!
//! - The **batch ledger API** ([`Client::create_accounts`], [`Client::create_transfers`],
//!   [`Client::lookup_accounts`], [`Client::lookup_transfers`], [`Client::account_transfers`]),
//!   with the API key, over the binary format (the default: 128-byte records, see
//!   docs/binary.md) or JSON ([`Wire`]).
//! - The **wallet API**: [`Client::signup`], [`Client::login`] to a [`Session`] whose access
//!   token is refreshed before it expires; [`Session::pay`] with an `Idempotency-Key` made
//!   once per payment and kept across its retries.
//!
//! Requests have a timeout and share pooled keep-alive connections (HTTP/1.1, or HTTP/2 with
//! [`ClientBuilder::http2`]; `https://` checked against the web's root certificates), made
//! straight to the server: no proxy is read from the environment, and redirects are answers,
//! not followed. A request is retried, with exponential backoff, only when a
//! retry cannot apply it twice: ledger creates (the ledger never applies an id twice: a retried
//! batch answers `exists` for the events an earlier attempt created), lookups and reads, and
//! payments (their kept key). Logins, signups and logouts are retried only when they were never
//! sent. Errors are an [`Error`]; a refusal carries the problem's stable `code`.
//!
//! ```no_run
//! use kizo_client::{Account, Client, CreateTransferResult, Transfer};
//!
//! # async fn run() -> Result<(), kizo_client::Error> {
//! let client = Client::builder("http://127.0.0.1:8080").api_key("my-api-key").build()?;
//! client
//!     .create_accounts(&[Account::new(1, 840, 1), Account::new(2, 840, 1)])
//!     .await?;
//! let results = client
//!     .create_transfers(&[Transfer::new(10, 1, 2, 500, 840, 1)])
//!     .await?;
//! assert_eq!(results, [CreateTransferResult::Created]);
//! let accounts = client.lookup_accounts(&[1, 2]).await?;
//! assert_eq!(accounts[1].credits_posted, 500);
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use kizo_json_wire::{AccountJson, NewAccountJson, NewTransferJson, TransferJson, U128};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use kizo_ledger::{
    Account, AccountFlags, CreateAccountResult, CreateTransferResult, Transfer, TransferFlags,
    BATCH_EVENTS_MAX,
};

mod transport;
mod wallet;
pub use wallet::{
    Balance, Dashboard, Me, Payment, Recipient, Session, Signup, User, WalletTransfer,
};

/// How the ledger API's batches travel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wire {
    /// Fixed-size records (docs/binary.md): nothing printed or parsed.
    #[default]
    Binary,
    /// JSON, decimal strings for big numbers.
    Json,
}

/// When a retryable request is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included (1: never retried).
    pub attempts: u32,
    /// The wait before the second attempt; doubled each time, up to `delay_max` (a server's
    /// `Retry-After` is waited instead when it says longer).
    pub delay: Duration,
    pub delay_max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 5,
            delay: Duration::from_millis(100),
            delay_max: Duration::from_secs(5),
        }
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused the request: its problem document.
    #[error("{status} {code}: {detail}")]
    Problem {
        status: u16,
        /// The stable code (`invalid_field`, `batch_too_large`, `unauthorized`, ...).
        code: String,
        detail: String,
        /// The field at fault, when one is.
        field: Option<String>,
    },
    /// No answer within the timeout (the request may or may not have been applied).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed or broke.
    #[error("transport: {0}")]
    Transport(String),
    /// An answer that is not what the API sends.
    #[error("the answer could not be read: {0}")]
    Decode(String),
    /// A request the client refuses to send (a batch over the limit, a bad base URL).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The problem's stable code, for a refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Problem { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether a retry may succeed where this failed (a passing failure).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Problem { status, code, .. } => {
                *status == 503
                    || *status == 502
                    || *status == 504
                    || *status == 429
                    || code == "idempotency_key_in_use"
            }
            Error::Timeout(_) | Error::Transport(_) => true,
            Error::Decode(_) | Error::Invalid(_) => false,
        }
    }
}

#[derive(Deserialize)]
struct Problem {
    code: String,
    #[serde(default)]
    detail: String,
    field: Option<String>,
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    base: String,
    api_key: Option<String>,
    wire: Wire,
    timeout: Duration,
    retry: Retry,
    http2: bool,
}

impl ClientBuilder {
    /// The ledger API's key (`Authorization: Bearer`).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }
    pub fn wire(mut self, wire: Wire) -> Self {
        self.wire = wire;
        self
    }
    /// How long one attempt waits for its answer (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }
    /// HTTP/2 without negotiation (h2c): one connection carries many requests at once.
    pub fn http2(mut self, on: bool) -> Self {
        self.http2 = on;
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let base = self.base.trim_end_matches('/').to_string();
        let base_uri = base
            .parse::<Uri>()
            .ok()
            .filter(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.host().is_some()
                    && uri.path_and_query().is_none_or(|p| p.as_str() == "/")
            })
            .ok_or_else(|| Error::Invalid(format!("{base}: an http:// or https:// URL")))?;
        let api_key = match self.api_key {
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| Error::Invalid("the API key cannot be sent as a header".into()))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        if self.retry.attempts == 0 {
            return Err(Error::Invalid(
                "retry attempts count the first: at least 1".into(),
            ));
        }
        let transport = transport::Transport::new(&base_uri, self.http2)?;
        // The direct transport sends the path alone; the pool, the whole URL.
        let prefix = if transport.origin_form() {
            String::new()
        } else {
            base.clone()
        };
        let fixed_urls = FIXED_PATHS
            .iter()
            .map(|path| parse_url(&prefix, path))
            .collect::<Result<_, _>>()?;
        Ok(Client {
            inner: Arc::new(Inner {
                transport,
                prefix,
                fixed_urls,
                api_key,
                wire: self.wire,
                timeout: self.timeout,
                retry: self.retry,
            }),
        })
    }
}

/// A client of one Kizo server (or of the load balancer in front of a cluster). Cheap to
/// clone: clones share connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    transport: transport::Transport,
    /// What a path is put after to make a request's URI: nothing, or the base URL.
    prefix: String,
    /// [`FIXED_PATHS`]' URLs, parsed once: a URL parsed per request is a measurable part of a
    /// small request's cost.
    fixed_urls: Vec<Uri>,
    api_key: Option<HeaderValue>,
    wire: Wire,
    timeout: Duration,
    retry: Retry,
}

/// Whether a request may be sent again after a failure whose outcome is unknown.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retries {
    /// Applying it twice is no different from once.
    Safe,
    /// Only when it was never sent (the connection could not be made).
    Unsent,
}

/// A request ready to send (and to send again).
pub(crate) struct Call {
    pub method: Method,
    /// A path of [`FIXED_PATHS`] is not parsed again.
    pub path: Cow<'static, str>,
    pub auth: Option<HeaderValue>,
    /// Shared, not copied, by each attempt.
    pub body: Option<(Bytes, &'static str)>,
    pub accept: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub retries: Retries,
}

/// An answer's `Content-Type` and body.
pub(crate) struct Answer {
    pub content_type: String,
    pub body: Bytes,
}

/// About the size of one new account or transfer in JSON.
const JSON_EVENT_BYTES: usize = 160;

/// The largest answer read: a full page of 8189 transfers in JSON is about 4 MiB.
const ANSWER_BYTES_MAX: usize = 16 << 20;

impl Client {
    /// A client of the server at `base_url` (`http://host:port`).
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base: base_url.into(),
            api_key: None,
            wire: Wire::default(),
            timeout: Duration::from_secs(30),
            retry: Retry::default(),
            http2: false,
        }
    }

    /// Sends `call`, again on a transient failure when its kind allows, after a growing wait.
    pub(crate) async fn send(&self, call: &Call) -> Result<Answer, Error> {
        let retry = self.inner.retry;
        let mut delay = retry.delay;
        let mut attempt = 1;
        loop {
            let (result, retry_after) = self.attempt(call).await;
            let error = match result {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            let may_retry = match call.retries {
                Retries::Safe => error.is_transient(),
                Retries::Unsent => {
                    matches!(&error, Error::Transport(why) if why.starts_with("connect:"))
                }
            };
            if !may_retry || attempt >= retry.attempts {
                return Err(error);
            }
            tokio::time::sleep(retry_after.unwrap_or(delay).max(delay)).await;
            delay = (delay * 2).min(retry.delay_max);
            attempt += 1;
        }
    }

    async fn attempt(&self, call: &Call) -> (Result<Answer, Error>, Option<Duration>) {
        let inner = &self.inner;
        let uri = match &call.path {
            Cow::Borrowed(path) => FIXED_PATHS
                .iter()
                .position(|fixed| fixed == path)
                .map(|at| Ok(inner.fixed_urls[at].clone())),
            Cow::Owned(_) => None,
        }
        .unwrap_or_else(|| parse_url(&inner.prefix, &call.path));
        let uri = match uri {
            Ok(uri) => uri,
            Err(error) => return (Err(error), None),
        };
        let mut request = http::Request::builder()
            .method(call.method.clone())
            .uri(uri)
            .header(ACCEPT, call.accept)
            .header(
                USER_AGENT,
                concat!("kizo-client/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(auth) = &call.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        for (name, value) in &call.headers {
            request = request.header(*name, value);
        }
        let body = match &call.body {
            Some((body, content_type)) => {
                request = request.header(CONTENT_TYPE, *content_type);
                Full::new(body.clone())
            }
            None => Full::new(Bytes::new()),
        };
        let request = match request.body(body) {
            Ok(request) => request,
            Err(error) => return (Err(Error::Invalid(error.to_string())), None),
        };
        let exchange = async {
            let (response, lent) = inner.transport.send(request).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, ANSWER_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| Error::Transport(chain(&*e)))?
                .to_bytes();
            inner.transport.give_back(lent);
            Ok((parts, body))
        };
        let (parts, body) = match tokio::time::timeout(inner.timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => return (Err(error), None),
            Err(_) => return (Err(Error::Timeout(inner.timeout)), None),
        };
        let header = |name| {
            parts
                .headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let retry_after = header(RETRY_AFTER)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|seconds| Duration::from_secs(seconds.min(60)));
        let content_type = header(CONTENT_TYPE).unwrap_or_default().to_string();
        if parts.status.is_success() {
            return (Ok(Answer { content_type, body }), retry_after);
        }
        (Err(problem(parts.status, &body)), retry_after)
    }

    fn ledger_call(&self, path: &'static str, body: Vec<u8>, content_type: &'static str) -> Call {
        Call {
            method: Method::POST,
            path: path.into(),
            auth: self.inner.api_key.clone(),
            body: Some((body.into(), content_type)),
            accept: content_type,
            headers: Vec::new(),
            retries: Retries::Safe,
        }
    }

    /// Creates accounts: one result per account, in order (at most [`BATCH_EVENTS_MAX`]).
    pub async fn create_accounts(
        &self,
        accounts: &[Account],
    ) -> Result<Vec<CreateAccountResult>, Error> {
        self.create(
            "/v1/ledger/accounts",
            accounts,
            kizo_binary::encode_accounts,
            |account| NewAccountJson(AccountJson::from(*account)),
            CreateAccountResult::ALL,
        )
        .await
    }

    /// Creates transfers: one result per transfer, in order (at most [`BATCH_EVENTS_MAX`];
    /// linked chains all or nothing). A batch retried after an unknown outcome answers
    /// `exists` for the transfers an earlier attempt created.
    pub async fn create_transfers(
        &self,
        transfers: &[Transfer],
    ) -> Result<Vec<CreateTransferResult>, Error> {
        self.create(
            "/v1/ledger/transfers",
            transfers,
            kizo_binary::encode_transfers,
            |transfer| NewTransferJson(TransferJson::from(*transfer)),
            CreateTransferResult::ALL,
        )
        .await
    }

    /// A create of `events` on `path`, in the client's wire: one result per event.
    async fn create<E, J: Serialize, R: kizo_binary::ResultCode>(
        &self,
        path: &'static str,
        events: &[E],
        binary: fn(&[E]) -> Vec<u8>,
        json: impl Fn(&E) -> J,
        all: &[R],
    ) -> Result<Vec<R>, Error> {
        check_batch(events.len())?;
        match self.inner.wire {
            Wire::Binary => {
                let call = self.ledger_call(path, binary(events), kizo_binary::MEDIA_TYPE);
                let answer = self.send(&call).await?;
                binary_answer(&answer)?;
                kizo_binary::decode_results(&answer.body, events.len()).map_err(decode)
            }
            Wire::Json => {
                let body: Vec<J> = events.iter().map(json).collect();
                let answer = self
                    .send(&self.ledger_call(
                        path,
                        to_json_sized(&body, JSON_EVENT_BYTES * body.len())?,
                        JSON,
                    ))
                    .await?;
                json_results(&answer, events.len(), all)
            }
        }
    }

    /// The accounts with these ids that exist, in the order asked.
    pub async fn lookup_accounts(&self, ids: &[u128]) -> Result<Vec<Account>, Error> {
        #[derive(Deserialize)]
        struct Found {
            accounts: Vec<AccountJson>,
        }
        self.lookup(
            "/v1/ledger/accounts/lookup",
            ids,
            kizo_binary::decode_account_records,
            |body| {
                Ok(from_json::<Found>(body)?
                    .accounts
                    .into_iter()
                    .map(Into::into)
                    .collect())
            },
        )
        .await
    }

    /// The transfers with these ids that exist, in the order asked.
    pub async fn lookup_transfers(&self, ids: &[u128]) -> Result<Vec<Transfer>, Error> {
        self.lookup(
            "/v1/ledger/transfers/lookup",
            ids,
            kizo_binary::decode_transfer_records,
            transfers_json,
        )
        .await
    }

    /// A lookup of `ids` on `path`, in the client's wire.
    async fn lookup<T>(
        &self,
        path: &'static str,
        ids: &[u128],
        binary: fn(&[u8]) -> Result<Vec<T>, kizo_binary::DecodeError>,
        json: fn(&[u8]) -> Result<Vec<T>, Error>,
    ) -> Result<Vec<T>, Error> {
        check_batch(ids.len())?;
        match self.inner.wire {
            Wire::Binary => {
                let call =
                    self.ledger_call(path, kizo_binary::encode_ids(ids), kizo_binary::MEDIA_TYPE);
                let answer = self.send(&call).await?;
                binary_answer(&answer)?;
                binary(&answer.body).map_err(decode)
            }
            Wire::Json => {
                let answer = self
                    .send(&self.ledger_call(path, ids_json(ids)?, JSON))
                    .await?;
                json(&answer.body)
            }
        }
    }

    /// An account's transfers, oldest first (newest first when `reversed`), at most `limit`
    /// (1 to 8189) from `timestamp_min` on (0: the start). Page by passing the last one's
    /// timestamp + 1 as the next `timestamp_min` (or - 1 as `timestamp_max` when reversed).
    pub async fn account_transfers(
        &self,
        account_id: u128,
        timestamp_min: u64,
        timestamp_max: u64,
        limit: u32,
        reversed: bool,
    ) -> Result<Vec<Transfer>, Error> {
        if !(1..=BATCH_EVENTS_MAX as u32).contains(&limit) {
            return Err(Error::Invalid(format!("limit: 1 to {BATCH_EVENTS_MAX}")));
        }
        let call = Call {
            method: Method::GET,
            path: format!(
                "/v1/ledger/accounts/{account_id}/transfers?limit={limit}&timestamp_min={timestamp_min}&timestamp_max={timestamp_max}&reversed={reversed}"
            )
            .into(),
            auth: self.inner.api_key.clone(),
            body: None,
            accept: JSON,
            headers: Vec::new(),
            retries: Retries::Safe,
        };
        let answer = self.send(&call).await?;
        transfers_json(&answer.body)
    }
}

pub(crate) const JSON: &str = "application/json";

/// The paths whose URLs a client parses once, when it is built.
const FIXED_PATHS: &[&str] = &[
    "/v1/ledger/accounts",
    "/v1/ledger/transfers",
    "/v1/ledger/accounts/lookup",
    "/v1/ledger/transfers/lookup",
    "/v1/transfers",
    "/v1/me",
    "/v1/dashboard",
];

fn parse_url(base: &str, path: &str) -> Result<Uri, Error> {
    format!("{base}{path}")
        .parse()
        .map_err(|e| Error::Invalid(format!("{base}{path}: {e}")))
}

fn check_batch(len: usize) -> Result<(), Error> {
    if len == 0 || len > BATCH_EVENTS_MAX {
        return Err(Error::Invalid(format!(
            "{len} events: a batch holds 1 to {BATCH_EVENTS_MAX}"
        )));
    }
    Ok(())
}

/// An error and its causes, on one line.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(crate) fn problem(status: StatusCode, body: &[u8]) -> Error {
    match serde_json::from_slice::<Problem>(body) {
        Ok(problem) => Error::Problem {
            status: status.as_u16(),
            code: problem.code,
            detail: problem.detail,
            field: problem.field,
        },
        Err(_) => Error::Problem {
            status: status.as_u16(),
            code: format!("http_{}", status.as_u16()),
            detail: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            field: None,
        },
    }
}

fn decode(error: impl std::fmt::Display) -> Error {
    Error::Decode(error.to_string())
}

pub(crate) fn to_json(value: &impl Serialize) -> Result<Vec<u8>, Error> {
    to_json_sized(value, 256)
}

/// As [`to_json`], into a buffer of `capacity` bytes to start with (a batch's size is known
/// roughly: growing the buffer step by step costs more than writing it).
fn to_json_sized(value: &impl Serialize, capacity: usize) -> Result<Vec<u8>, Error> {
    let mut body = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut body, value).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(body)
}

pub(crate) fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(decode)
}

fn binary_answer(answer: &Answer) -> Result<(), Error> {
    if answer.content_type.starts_with(kizo_binary::MEDIA_TYPE) {
        Ok(())
    } else {
        Err(Error::Decode(format!(
            "asked for {}, answered {}",
            kizo_binary::MEDIA_TYPE,
            answer.content_type
        )))
    }
}

fn ids_json(ids: &[u128]) -> Result<Vec<u8>, Error> {
    #[derive(Serialize)]
    struct Ids {
        ids: Vec<U128>,
    }
    to_json(&Ids {
        ids: ids.iter().map(|id| U128(*id)).collect(),
    })
}

fn transfers_json(body: &[u8]) -> Result<Vec<Transfer>, Error> {
    #[derive(Deserialize)]
    struct Found {
        transfers: Vec<TransferJson>,
    }
    let found: Found = from_json(body)?;
    Ok(found.transfers.into_iter().map(Into::into).collect())
}

/// A create's JSON answer: one named result per event, mapped back to its code.
fn json_results<R: kizo_binary::ResultCode>(
    answer: &Answer,
    events: usize,
    all: &[R],
) -> Result<Vec<R>, Error> {
    #[derive(Deserialize)]
    struct Results<'a> {
        #[serde(borrow)]
        results: Vec<Named<'a>>,
    }
    #[derive(Deserialize)]
    struct Named<'a> {
        result: &'a str,
    }
    let results: Results = serde_json::from_slice(&answer.body).map_err(decode)?;
    if results.results.len() != events {
        return Err(Error::Decode(format!(
            "{} results for {events} events",
            results.results.len()
        )));
    }
    results
        .results
        .iter()
        .map(|named| {
            all.iter()
                .copied()
                .find(|code| code.name() == named.result)
                .ok_or_else(|| Error::Decode(format!("unknown result {}", named.result)))
        })
        .collect()
}

/// When a session's access token is due for renewal: a little before it expires.
pub(crate) fn renew_at(expires_in: u64) -> Instant {
    Instant::now() + Duration::from_secs(expires_in.saturating_sub(30).max(1))
}
