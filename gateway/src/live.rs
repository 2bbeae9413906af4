//! Live events for the web app: `GET /v1/events` streams, as server-sent events, what happens
//! to the signed-in user's wallet (money in or out, held or released, the account created), so
//! that the dashboard updates without reloading.
//!
//! One follower task per server reads each new commit of the log once, maps it to events
//! ([`crate::events`]), and hands them to every stream through a broadcast channel; each stream
//! keeps its user's. An event's SSE id is its place in the log, so a client that reconnects
//! with `Last-Event-ID` gets what it missed, read back from the log (within
//! [`REPLAY_COMMITS_MAX`] commits; past that, or if it fell too far behind the channel, it is
//! sent `reset`: reload, then listen again).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kizo_engine::{Commit, Wal};
use kizo_persistence::read_models::ReadModels;

use crate::events::{events_of, Event};

/// Commits a reconnecting stream may be behind and still be caught up from the log.
pub const REPLAY_COMMITS_MAX: u64 = 10_000;
/// Commits kept in the channel for streams that are slow to read; past it a stream is reset.
const CHANNEL_COMMITS: usize = 1_024;
/// Streams open at once, per user and in all.
pub const STREAMS_PER_USER_MAX: usize = 4;
pub const STREAMS_MAX: usize = 10_000;
/// How often the follower looks for new commits.
const INTERVAL: Duration = Duration::from_millis(25);

/// One commit's events.
pub struct CommitEvents {
    pub lsn: u64,
    pub events: Vec<Event>,
}

/// The follower and its subscribers.
pub struct Live {
    /// The partition whose log this follows (0 on a single node): events' ids name it.
    partition: u32,
    wal: Arc<dyn Wal>,
    read_models: ReadModels,
    sender: tokio::sync::broadcast::Sender<Arc<CommitEvents>>,
    streams: AtomicUsize,
    per_user: Mutex<HashMap<String, usize>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set when the server stops: every stream ends, so that none holds the drain.
    closed: tokio::sync::watch::Sender<bool>,
}

/// Why a stream was not opened.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("{STREAMS_PER_USER_MAX} event streams are open for this user already")]
    UserStreams,
    #[error("the server has as many event streams open as it serves")]
    Streams,
}

/// A stream's place among the open ones: given back when the stream ends.
pub struct StreamPermit {
    live: Arc<Live>,
    user: String,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.live.streams.fetch_sub(1, Ordering::AcqRel);
        let mut per_user = self.live.per_user.lock().expect("not poisoned");
        if let Some(count) = per_user.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                per_user.remove(&self.user);
            }
        }
    }
}

impl Live {
    /// Follows `wal`, `partition`'s log, from its last commit now.
    pub fn start(wal: Arc<dyn Wal>, read_models: ReadModels, partition: u32) -> Arc<Live> {
        let (sender, _) = tokio::sync::broadcast::channel(CHANNEL_COMMITS);
        let live = Arc::new(Live {
            partition,
            wal,
            read_models,
            sender,
            streams: AtomicUsize::new(0),
            per_user: Mutex::default(),
            task: Mutex::new(None),
            closed: tokio::sync::watch::channel(false).0,
        });
        let task = tokio::spawn(follow(live.clone()));
        *live.task.lock().expect("not poisoned") = Some(task);
        live
    }

    pub fn stop(&self) {
        self.closed.send_replace(true);
        if let Some(task) = self.task.lock().expect("not poisoned").take() {
            task.abort();
        }
    }

    /// A place for one more stream of `user`'s.
    pub fn open(self: &Arc<Live>, user: &str) -> Result<StreamPermit, LiveError> {
        let mut per_user = self.per_user.lock().expect("not poisoned");
        let count = per_user.entry(user.to_string()).or_default();
        if *count >= STREAMS_PER_USER_MAX {
            return Err(LiveError::UserStreams);
        }
        if self.streams.fetch_add(1, Ordering::AcqRel) >= STREAMS_MAX {
            self.streams.fetch_sub(1, Ordering::AcqRel);
            return Err(LiveError::Streams);
        }
        *count += 1;
        Ok(StreamPermit {
            live: self.clone(),
            user: user.to_string(),
        })
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<CommitEvents>> {
        self.sender.subscribe()
    }

    /// The events after `after` up to the log's last commit now, read back from the log;
    /// `None` when `after` is more than [`REPLAY_COMMITS_MAX`] commits back (or ahead of the
    /// log: a place from another server's log).
    pub async fn since(&self, after: (u64, u32)) -> Option<Vec<Event>> {
        let last = self.wal.last_lsn();
        if after.0 > last || last - after.0 > REPLAY_COMMITS_MAX {
            return None;
        }
        let mut events = Vec::new();
        let mut from = after.0.max(1);
        while from <= last {
            let to = last.min(from + 63);
            let commits = self.wal.read(from, to).await.ok()?;
            for commits in mapped(&self.read_models, self.partition, &commits)
                .await
                .ok()?
            {
                events.extend(
                    commits
                        .events
                        .into_iter()
                        .filter(|e| (e.lsn.0, e.index) > after),
                );
            }
            from = to + 1;
        }
        Some(events)
    }
}

/// The events of `commits` (those it can map: an expiry waits until the read models hold its
/// pending transfer, and the commits after it wait with it).
pub(crate) async fn mapped(
    read_models: &ReadModels,
    partition: u32,
    commits: &[Arc<Commit>],
) -> Result<Vec<CommitEvents>, kizo_persistence::StoreError> {
    let ledgers = crate::cdc::expired_ledgers(read_models, commits).await?;
    let mut mapped = Vec::with_capacity(commits.len());
    for commit in commits {
        let Some(events) = events_of(partition, commit, |id| ledgers.get(&id).copied()) else {
            break;
        };
        mapped.push(CommitEvents {
            lsn: commit.lsn,
            events,
        });
    }
    Ok(mapped)
}

async fn follow(live: Arc<Live>) {
    let mut done = live.wal.last_lsn();
    let mut every = tokio::time::interval(INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let last = live.wal.last_lsn();
        if last <= done {
            continue;
        }
        // Nobody listening: nothing to map (a stream that opens later reads the log back).
        if live.sender.receiver_count() == 0 {
            done = last;
            continue;
        }
        let to = last.min(done + 64);
        let commits = match live.wal.read(done + 1, to).await {
            Ok(commits) => commits,
            Err(error) => {
                tracing::warn!(%error, "live events: the log could not be read; trying again");
                continue;
            }
        };
        // The commit's events, or none yet (see `mapped`); nobody listening is no error.
        match mapped(&live.read_models, live.partition, &commits).await {
            Ok(mapped) => {
                for commit in mapped {
                    done = commit.lsn;
                    let _ = live.sender.send(Arc::new(commit));
                }
            }
            Err(error) => tracing::warn!(%error, "live events: trying again"),
        }
    }
}

/// Whether `event` is about `wallet`: its account, or a side of its transfer or expiry.
pub fn concerns(event: &Event, wallet: u128) -> bool {
    event.account.as_ref().is_some_and(|a| a.id.0 == wallet)
        || event
            .transfer
            .as_ref()
            .is_some_and(|t| t.debit_account_id.0 == wallet || t.credit_account_id.0 == wallet)
        || event
            .expired
            .as_ref()
            .is_some_and(|e| e.debit_account_id.0 == wallet || e.credit_account_id.0 == wallet)
}

/// A `Last-Event-ID`: the place `<partition>.<lsn>.<index>` in `partition`'s log (the
/// wallet's; 0 on a single node).
pub fn parse_last_event_id(text: &str, partition: u32) -> Option<(u64, u32)> {
    match crate::events::parse_id(text)? {
        (of, lsn, index) if of == partition => Some((lsn, index)),
        _ => None,
    }
}

/// How long one stream lasts at most: an access token's life (the client opens another with a
/// fresh token and `Last-Event-ID`).
const STREAM_FOR: Duration = Duration::from_secs(crate::auth::ACCESS_TTL_SECONDS);
/// How often a quiet stream sends a comment (proxies close idle connections) and looks whether
/// its session was ended.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One event as the wallet's stream sends it (the SSE `data`), its `event` being the kind.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct LiveEvent {
    /// The event's place in the log, also the SSE `id` (send it back as `Last-Event-ID`).
    #[schema(example = "0.1042.7")]
    pub id: String,
    /// See docs/events.md: transfer.posted, transfer.pending, transfer.voided,
    /// transfer.expired, settlement.*, account.created.
    pub kind: String,
    /// RFC 3339, UTC.
    pub at: String,
    /// The transfer, when the event has one, as the wallet names it.
    pub transfer: Option<LiveTransfer>,
    /// The wallet's balances as they stand when the event is sent.
    pub balance: Option<crate::wallet::AccountBalance>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct LiveTransfer {
    /// The payment's id (for a leg between partitions, the payment it belongs to).
    pub id: uuid::Uuid,
    pub from_account_id: uuid::Uuid,
    pub to_account_id: uuid::Uuid,
    /// Minor units, a decimal string.
    pub amount: String,
    /// `in` or `out`, seen from the caller's wallet.
    pub direction: &'static str,
}

/// `GET /v1/events`: the caller's wallet, live.
#[utoipa::path(get, path = "/v1/events", tag = "wallet", security(("access_token" = [])),
    params(("Last-Event-ID" = Option<String>, Header, pattern = "^[0-9]{1,4}\\.[0-9]{1,20}\\.[0-9]{1,10}$",
        description = "The id of the last event received: the stream starts after it.")),
    responses(
        (status = 200, description = "Server-sent events: each `event:` a kind, `id:` its place, `data:` a LiveEvent; `event: reset` asks the client to reload and listen again", body = LiveEvent, content_type = "text/event-stream"),
        (status = 400, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn stream(
    axum::extract::State(state): axum::extract::State<crate::server::AppState>,
    caller: crate::auth::Authenticated,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, crate::error::ApiError> {
    use crate::error::ApiError;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    // On a cluster, the wallet's partition's follower; at another node, its stream through
    // this one.
    let live = match &state.books {
        crate::books::Books::One { .. } => state.live.clone(),
        crate::books::Books::Cluster(cluster) => {
            let partition = state.books.home_of(caller.wallet);
            match cluster.host.live(partition) {
                Some(live) => Some(live),
                None if headers.contains_key(FORWARDED) => None,
                None => return forward(cluster, partition, &headers).await,
            }
        }
    };
    let Some(live) = live else {
        return Err(ApiError::unavailable(
            "the wallet's partition is changing owners; listen again in a moment",
        )
        .retry_after(1));
    };
    let partition = live.partition;
    let after = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| parse_last_event_id(text, partition))
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_last_event_id",
                        "Last-Event-ID is the id of an event this server sent",
                    )
                })?,
        ),
    };
    let permit = live.open(&caller.user_id).map_err(|error| match error {
        LiveError::UserStreams => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            error.to_string(),
        ),
        LiveError::Streams => ApiError::unavailable(error.to_string()),
    })?;
    // Listening first, then reading back: nothing falls between the two (what both hold is
    // sent once, by its place).
    let receiver = live.subscribe();
    let (backlog, reset) = match after {
        None => (Vec::new(), false),
        Some(after) => match live.since(after).await {
            Some(events) => (events, false),
            None => (Vec::new(), true),
        },
    };
    let stream = Stream {
        state: state.clone(),
        wallet: caller.wallet,
        session: caller.session_id,
        backlog: backlog.into(),
        receiver,
        last: after.unwrap_or((live.wal.last_lsn(), u32::MAX)),
        ends_at: tokio::time::Instant::now() + STREAM_FOR,
        reset,
        done: false,
        closed: live.closed.subscribe(),
        _permit: permit,
    };
    let events = futures_util::stream::unfold(stream, next_event);
    Ok(axum::response::sse::Sse::new(events)
        .keep_alive(axum::response::sse::KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// Marks a stream forwarded by another node: the owner serves it or refuses, never forwards it
/// on (no loop while a partition changes owners).
const FORWARDED: &str = "x-kizo-forwarded";

/// The wallet's stream, from the node that serves its partition, passed through as it comes.
async fn forward(
    cluster: &crate::books::ClusterBooks,
    partition: u32,
    headers: &axum::http::HeaderMap,
) -> Result<axum::response::Response, crate::error::ApiError> {
    use axum::response::IntoResponse;
    let unavailable = || {
        crate::error::ApiError::unavailable(
            "the wallet's partition is changing owners; listen again in a moment",
        )
        .retry_after(1)
    };
    let address = cluster.owner_address(partition).ok_or_else(unavailable)?;
    let mut upstream = reqwest::header::HeaderMap::new();
    for name in [axum::http::header::AUTHORIZATION.as_str(), "last-event-id"] {
        if let Some(value) = headers.get(name) {
            upstream.insert(name, value.clone());
        }
    }
    upstream.insert(FORWARDED, axum::http::HeaderValue::from_static("1"));
    let response = cluster
        .peers
        .stream(&address, "/v1/events", upstream)
        .await
        .map_err(|_| unavailable())?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .cloned();
    let body = axum::body::Body::from_stream(response.bytes_stream());
    let mut answer = (status, body).into_response();
    if let Some(content_type) = content_type {
        answer
            .headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, content_type);
    }
    Ok(answer)
}

struct Stream {
    state: crate::server::AppState,
    wallet: u128,
    session: String,
    backlog: std::collections::VecDeque<Event>,
    receiver: tokio::sync::broadcast::Receiver<Arc<CommitEvents>>,
    /// The place of the last event sent (or the stream's start).
    last: (u64, u32),
    ends_at: tokio::time::Instant,
    reset: bool,
    done: bool,
    closed: tokio::sync::watch::Receiver<bool>,
    _permit: StreamPermit,
}

type SseItem = Result<axum::response::sse::Event, std::convert::Infallible>;

async fn next_event(mut s: Stream) -> Option<(SseItem, Stream)> {
    use axum::response::sse::Event as SseEvent;
    loop {
        if s.done || *s.closed.borrow() {
            return None;
        }
        if s.reset {
            s.done = true;
            let reset = SseEvent::default().event("reset").data("{}");
            return Some((Ok(reset), s));
        }
        if let Some(event) = s.backlog.pop_front() {
            let place = (event.lsn.0, event.index);
            if place <= s.last || !concerns(&event, s.wallet) {
                continue;
            }
            s.last = place;
            let data = live_event(&s.state, s.wallet, event).await;
            let sse = SseEvent::default()
                .id(data.id.clone())
                .event(data.kind.clone())
                .json_data(&data)
                .expect("a live event serializes");
            return Some((Ok(sse), s));
        }
        let wake = s.ends_at.min(tokio::time::Instant::now() + KEEP_ALIVE);
        tokio::select! {
            received = s.receiver.recv() => match received {
                Ok(commit) => s.backlog.extend(commit.events.iter().filter(|e| concerns(e, s.wallet)).cloned()),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => s.reset = true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => s.done = true,
            },
            _ = s.closed.changed() => s.done = true,
            _ = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() >= s.ends_at || s.state.revocations.contains(&s.session) {
                    s.done = true;
                }
            }
        }
    }
}

async fn live_event(state: &crate::server::AppState, wallet: u128, event: Event) -> LiveEvent {
    let balance = match state.books.lookup_accounts(vec![wallet]).await {
        Ok(accounts) => accounts
            .first()
            .map(|account| crate::wallet::balance_of(state, account)),
        Err(_) => None,
    };
    // A leg of a payment between partitions names the payment in its user_data_128.
    let crossing = event.kind.starts_with("cross.");
    let transfer = event.transfer.as_ref().map(|t| LiveTransfer {
        id: uuid::Uuid::from_u128(if crossing { t.user_data_128.0 } else { t.id.0 }),
        from_account_id: uuid::Uuid::from_u128(t.debit_account_id.0),
        to_account_id: uuid::Uuid::from_u128(t.credit_account_id.0),
        amount: t.amount.0.to_string(),
        direction: if t.credit_account_id.0 == wallet {
            "in"
        } else {
            "out"
        },
    });
    LiveEvent {
        id: event.id,
        kind: event.kind,
        at: event.at,
        transfer,
        balance,
    }
}
