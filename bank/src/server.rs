//! The bank as a service: its books, an optional journal (so that it remembers across
//! restarts), its faults, and the HTTP API (`axum`).
//!
//! - `POST /payouts`, `POST /collections` {reference, amount, currency, account}: 200 with what
//!   was done (`succeeded` or `declined`); the same reference again answers the same, and moves
//!   nothing; another amount or direction with a used reference is 409.
//! - `GET /payouts/{reference}`, `GET /collections/{reference}`: 200, or 404 when the bank has
//!   nothing for that reference.
//! - `GET /statement?from=&to=&after=&limit=`: movements in order (ms since 1970; `after` a
//!   sequence, for paging).
//! - `GET /admin/faults`, `PUT /admin/faults`: the fault settings, changeable while running.
//! - `GET /healthz`.
//!
//! With a token configured, every call but `/healthz` needs `Authorization: Bearer <token>`,
//! and callbacks carry it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::faults::{Faults, Plan, Rng};
use crate::model::{kind_of, BankRecord, Books, Decision, Direction, STATEMENT_PAGE_MAX};

// The largest amount the bank moves at once: the one ceiling of payments and settlements.
pub use kizo_engine::settlement::AMOUNT_MAX;

struct Ledger {
    books: Books,
    journal: Option<std::fs::File>,
}

/// The bank: its books and faults. Cheap to clone.
#[derive(Clone)]
pub struct Bank {
    ledger: Arc<tokio::sync::Mutex<Ledger>>,
    faults: Arc<std::sync::RwLock<Faults>>,
    rng: Arc<std::sync::Mutex<Rng>>,
    token: Option<Arc<str>>,
    callback: Option<Arc<str>>,
    client: reqwest::Client,
    /// What the books stamp movements with.
    clock: Arc<dyn kizo_engine::Clock>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the journal {path}: {source}")]
    Journal {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the journal {path}, line {line}: {error}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        error: String,
    },
}

#[derive(Clone, Debug, Default)]
pub struct BankConfig {
    pub faults: Faults,
    pub seed: u64,
    /// Where the bank keeps what it did (one JSON line per reference, fsync'd); in memory only
    /// when `None`.
    pub journal: Option<PathBuf>,
    pub token: Option<String>,
    /// Where the bank posts `{reference, kind, status}` when it has done something.
    pub callback_url: Option<String>,
}

/// What a call to the bank can come to, before it is an HTTP answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Done(BankRecord),
    NotFound,
    Conflict,
    Unavailable,
    Error,
}

impl Bank {
    pub fn open(config: BankConfig) -> Result<Bank, OpenError> {
        let (books, journal) = match &config.journal {
            Some(path) => {
                if let Some(folder) = path.parent().filter(|f| !f.as_os_str().is_empty()) {
                    std::fs::create_dir_all(folder).map_err(|source| OpenError::Journal {
                        path: path.clone(),
                        source,
                    })?;
                }
                let records = read_journal(path)?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| OpenError::Journal {
                        path: path.clone(),
                        source,
                    })?;
                (Books::from_records(records), Some(file))
            }
            None => (Books::default(), None),
        };
        Ok(Bank {
            ledger: Arc::new(tokio::sync::Mutex::new(Ledger { books, journal })),
            faults: Arc::new(std::sync::RwLock::new(config.faults)),
            rng: Arc::new(std::sync::Mutex::new(Rng::new(config.seed))),
            token: config.token.map(Into::into),
            callback: config.callback_url.map(Into::into),
            client: reqwest::Client::new(),
            clock: Arc::new(kizo_engine::SystemClock),
        })
    }

    /// The same bank, stamping movements with `clock`.
    pub fn with_clock(self, clock: Arc<dyn kizo_engine::Clock>) -> Self {
        Self { clock, ..self }
    }

    pub fn faults(&self) -> Faults {
        self.faults.read().expect("faults lock").clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.faults.write().expect("faults lock") = faults;
    }

    fn plan(&self) -> Plan {
        let faults = self.faults();
        let mut rng = self.rng.lock().expect("rng lock");
        faults.plan(|| rng.uniform())
    }

    /// A payout or collection: the work itself, without the timing faults (the in-process bank
    /// calls this directly). Journaled before it is answered.
    pub async fn request(
        &self,
        direction: Direction,
        reference: uuid::Uuid,
        amount: u64,
        account: &str,
        decline: bool,
    ) -> Answer {
        let decision = if decline {
            Decision::Decline("declined by the customer's bank".into())
        } else {
            Decision::Move
        };
        let mut ledger = self.ledger.lock().await;
        let (record, new) = match ledger.books.request(
            direction,
            reference,
            amount,
            account,
            decision,
            self.clock.now_ms(),
        ) {
            Ok(done) => done,
            Err(_) => return Answer::Conflict,
        };
        if new {
            if let Some(file) = ledger.journal.as_mut() {
                let line = serde_json::to_string(&record).expect("records serialize");
                let written = writeln!(file, "{line}").and_then(|()| file.sync_data());
                if let Err(error) = written {
                    // The books changed in memory only: stop the process rather than answer
                    // for a movement it would forget at its next start.
                    tracing::error!(%error, "the bank's journal failed; stopping");
                    std::process::exit(70);
                }
            }
        }
        Answer::Done(record)
    }

    pub async fn status(&self, direction: Direction, reference: uuid::Uuid) -> Answer {
        match self.ledger.lock().await.books.status(direction, reference) {
            Some(record) => Answer::Done(record.clone()),
            None => Answer::NotFound,
        }
    }

    pub async fn statement(
        &self,
        after: u64,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Vec<BankRecord> {
        let ledger = self.ledger.lock().await;
        ledger
            .books
            .statement(after, from_ms, to_ms, limit)
            .into_iter()
            .cloned()
            .collect()
    }

    pub async fn movements(&self) -> Vec<kizo_engine::reconcile::Movement> {
        self.ledger.lock().await.books.movements()
    }

    /// A call over HTTP: the plan's faults around the work.
    async fn call(
        &self,
        work: impl std::future::Future<Output = Answer>,
        moves: bool,
    ) -> (Answer, Plan) {
        let plan = self.plan();
        if plan.outage {
            return (Answer::Unavailable, plan);
        }
        tokio::time::sleep(Duration::from_millis(plan.delay_ms)).await;
        if plan.error {
            return (Answer::Error, plan);
        }
        let answer = work.await;
        if moves {
            if let Answer::Done(record) = &answer {
                self.notify(record, plan.duplicate_callback);
            }
        }
        if plan.late_ms > 0 {
            tokio::time::sleep(Duration::from_millis(plan.late_ms)).await;
        }
        (answer, plan)
    }

    /// Tells the callback address what was done, once or (a fault) twice; never waits for it.
    fn notify(&self, record: &BankRecord, twice: bool) {
        let Some(url) = self.callback.clone() else {
            return;
        };
        let body = Callback {
            reference: record.reference,
            kind: record.kind.clone(),
            status: record.status.clone(),
        };
        let (client, token) = (self.client.clone(), self.token.clone());
        tokio::spawn(async move {
            for _ in 0..if twice { 2 } else { 1 } {
                let mut request = client
                    .post(&*url)
                    .json(&body)
                    .timeout(Duration::from_secs(5));
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                if let Err(error) = request.send().await {
                    tracing::debug!(%error, "a callback was not delivered");
                }
            }
        });
    }
}

fn read_journal(path: &Path) -> Result<Vec<BankRecord>, OpenError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => {
            return Err(OpenError::Journal {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut records = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<BankRecord>(line) {
            Ok(record) => records.push(record),
            // A crash while appending leaves at most a torn last line, never answered.
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(error) => {
                return Err(OpenError::Corrupt {
                    path: path.to_path_buf(),
                    line: i + 1,
                    error: error.to_string(),
                })
            }
        }
    }
    records.sort_by_key(|r| r.sequence.unwrap_or(0));
    Ok(records)
}

/// What the bank posts to the callback address.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Callback {
    pub reference: uuid::Uuid,
    pub kind: String,
    pub status: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    pub reference: uuid::Uuid,
    pub amount: u64,
    pub currency: String,
    pub account: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementQuery {
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub after: Option<u64>,
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Statement {
    pub movements: Vec<BankRecord>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_after: Option<u64>,
}

pub fn router(bank: Bank) -> Router {
    Router::new()
        .route("/payouts", post(payout))
        .route("/collections", post(collection))
        .route("/payouts/{reference}", get(payout_status))
        .route("/collections/{reference}", get(collection_status))
        .route("/statement", get(statement))
        .route("/admin/faults", get(get_faults).put(put_faults))
        .route_layer(axum::middleware::from_fn_with_state(
            bank.clone(),
            authorize,
        ))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(bank)
}

async fn authorize(
    State(bank): State<Bank>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = &bank.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(&**token) {
            return problem(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required",
            );
        }
    }
    next.run(request).await
}

fn problem(status: StatusCode, code: &str, detail: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        serde_json::json!({ "type": "about:blank", "title": code, "status": status.as_u16(), "code": code, "detail": detail })
            .to_string(),
    )
        .into_response()
}

fn answer(answer: Answer) -> Response {
    match answer {
        Answer::Done(record) => Json(record).into_response(),
        Answer::NotFound => problem(
            StatusCode::NOT_FOUND,
            crate::client::NO_SUCH_MOVEMENT,
            "no movement with this reference",
        ),
        Answer::Conflict => problem(
            StatusCode::CONFLICT,
            "reference_reused",
            "this reference was used for another amount or direction",
        ),
        Answer::Unavailable => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "outage",
            "the bank is down",
        ),
        Answer::Error => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "bank_error",
            "something went wrong at the bank",
        ),
    }
}

/// A JSON body, or the 400 that refuses it.
fn body_of<T>(body: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> Result<T, String> {
    body.map(|Json(value)| value)
        .map_err(|rejection| rejection.body_text())
}

fn invalid_request(detail: &str) -> Response {
    problem(StatusCode::BAD_REQUEST, "invalid_request", detail)
}

async fn move_money(
    bank: Bank,
    direction: Direction,
    body: Result<Json<MoveRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match body_of(body) {
        Ok(request) => request,
        Err(detail) => return invalid_request(&detail),
    };
    if request.amount == 0 || request.amount > AMOUNT_MAX {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
            "amount must be 1 to 10^12",
        );
    }
    if request.account.is_empty() || request.account.len() > 64 || request.currency.len() != 3 {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "account: 1 to 64 bytes; currency: 3 letters",
        );
    }
    let decline = bank.plan().decline;
    let work = bank.request(
        direction,
        request.reference,
        request.amount,
        &request.account,
        decline,
    );
    let (done, _) = bank.call(work, true).await;
    answer(done)
}

async fn payout(
    State(bank): State<Bank>,
    body: Result<Json<MoveRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    move_money(bank, kizo_engine::settlement::Kind::Withdrawal, body).await
}

async fn collection(
    State(bank): State<Bank>,
    body: Result<Json<MoveRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    move_money(bank, kizo_engine::settlement::Kind::Deposit, body).await
}

async fn status_of(bank: Bank, kind: &str, reference: &str) -> Response {
    let Ok(reference) = reference.parse::<uuid::Uuid>() else {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid_reference",
            "a reference is a UUID",
        );
    };
    let direction = kind_of(kind).expect("known kind");
    let (found, _) = bank.call(bank.status(direction, reference), false).await;
    answer(found)
}

async fn payout_status(State(bank): State<Bank>, UrlPath(reference): UrlPath<String>) -> Response {
    status_of(bank, "payout", &reference).await
}

async fn collection_status(
    State(bank): State<Bank>,
    UrlPath(reference): UrlPath<String>,
) -> Response {
    status_of(bank, "collection", &reference).await
}

async fn statement(
    State(bank): State<Bank>,
    query: Result<Query<StatementQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "from, to (ms), after, limit",
        );
    };
    let limit = query
        .limit
        .unwrap_or(STATEMENT_PAGE_MAX)
        .clamp(1, STATEMENT_PAGE_MAX);
    let (from, to, after) = (
        query.from.unwrap_or(0),
        query.to.unwrap_or(u64::MAX),
        query.after.unwrap_or(0),
    );
    if bank.faults().outage {
        return answer(Answer::Unavailable);
    }
    let movements = bank.statement(after, from, to, limit).await;
    let next_after = (movements.len() == limit)
        .then(|| movements.last().and_then(|r| r.sequence))
        .flatten();
    Json(Statement {
        movements,
        next_after,
    })
    .into_response()
}

async fn get_faults(State(bank): State<Bank>) -> Json<Faults> {
    Json(bank.faults())
}

async fn put_faults(
    State(bank): State<Bank>,
    body: Result<Json<Faults>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let faults = match body_of(body) {
        Ok(faults) => faults,
        Err(detail) => return invalid_request(&detail),
    };
    if let Err(detail) = faults.check() {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_faults",
            &detail.to_string(),
        );
    }
    tracing::info!(?faults, "faults changed");
    bank.set_faults(faults.clone());
    Json(faults).into_response()
}
