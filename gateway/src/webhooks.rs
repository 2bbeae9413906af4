//! Webhooks: every committed change an endpoint asked for, sent to it as an HTTP POST signed
//! per the Standard Webhooks specification, retried, then parked for a replay. The rules (the
//! signature, what an endpoint may be, a delivery's retries) are the pure crate
//! `kizo-webhooks`; this module carries them: it follows the log, writes deliveries, and sends.
//!
//! - A **fan-out** task per partition served follows its log like the projector, with its own
//!   durable progress: each commit's events ([`crate::events`]) become one delivery per
//!   endpoint that wants them, written with the progress past the commit in one transaction
//!   (none twice, none skipped). It never blocks commits: it lags. With no endpoint registered
//!   it maps nothing and only moves its progress.
//! - A **dispatcher** per server claims due deliveries and gives each endpoint its own task,
//!   at most [`ENDPOINTS_IN_FLIGHT_MAX`] at once, each sending at most [`CLAIM_MAX`] of its
//!   endpoint's deliveries at a time: an endpoint that is slow or never answers holds only its
//!   own task, never another endpoint's deliveries.
//! - Requests go out with no redirects followed, a timeout, and (unless the operator allows
//!   it) never to a loopback or private address, the host's name resolved and checked here.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kizo_engine::{Clock, Wal};
use kizo_persistence::read_models::ReadModels;
use kizo_persistence::webhooks::{Endpoint, NewDelivery, StoredDelivery, WebhookStore};
use kizo_persistence::StoreError;
use kizo_webhooks::{Attempt, RetryPolicy, Secret};

use crate::events::Event;

/// Endpoints with a delivery in flight at once, per server.
pub const ENDPOINTS_IN_FLIGHT_MAX: usize = 64;
/// Deliveries of one endpoint claimed and sent at once.
pub const CLAIM_MAX: usize = 16;
/// Deliveries an endpoint may have waiting; past it, new events for it are written parked
/// (replayable) rather than queued without end.
pub const BACKLOG_MAX: u64 = 100_000;
/// Endpoints served, in all (the fan-out keeps them in memory).
pub const ENDPOINTS_MAX: usize = 100_000;
/// The longest body sent (an event is far smaller).
const BODY_MAX: usize = 64 << 10;
/// Commits fanned out per step.
const STEP_COMMITS: u64 = 64;
/// How often the fan-out looks for new commits; how often it reads the backlogs again.
const FOLLOW_EVERY: Duration = Duration::from_millis(50);
const RELOAD_EVERY: Duration = Duration::from_secs(5);
/// How often the dispatcher looks for due deliveries when nothing wakes it.
const DISPATCH_EVERY: Duration = Duration::from_millis(250);
/// A claim outlasts its attempt by this much (then another claimer may take the delivery).
const CLAIM_MARGIN: Duration = Duration::from_secs(30);
/// Delivered deliveries are kept this long (to be listed), then forgotten.
pub const DELIVERED_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// How webhooks are sent (`--webhook-*` flags).
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Endpoints may be on this machine or a private network (tests, a receiver beside the
    /// server). Off by default.
    pub allow_private: bool,
    pub policy: RetryPolicy,
    /// How long one attempt waits for an answer.
    pub timeout: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            allow_private: false,
            policy: RetryPolicy::default(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// The endpoints the fan-out matches events against, and their backlogs.
#[derive(Default)]
struct Registered {
    /// The endpoints' version (`WebhookStore::endpoints_version`) they were read at.
    version: Option<u64>,
    endpoints: Arc<Vec<Endpoint>>,
    backlog: HashMap<String, u64>,
    backlog_at: Option<std::time::Instant>,
}

/// Webhooks' shared state: the store, the settings, the sending client.
pub struct Webhooks {
    pub store: WebhookStore,
    pub settings: WebhookSettings,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    registered: Mutex<Registered>,
    /// Wakes the dispatcher (deliveries were written or replayed).
    due: tokio::sync::Notify,
    /// Endpoints whose task runs on this server.
    busy: Mutex<HashSet<String>>,
    jitter: AtomicU64,
}

impl Webhooks {
    pub fn new(
        store: WebhookStore,
        settings: WebhookSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Webhooks>, reqwest::Error> {
        assert!(settings.policy.is_valid(), "a valid retry policy");
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .pool_max_idle_per_host(CLAIM_MAX)
            .user_agent(concat!("kizo-webhooks/", env!("CARGO_PKG_VERSION")));
        if !settings.allow_private {
            client = client.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Arc::new(Webhooks {
            store,
            settings,
            clock,
            client: client.build()?,
            registered: Mutex::default(),
            due: tokio::sync::Notify::new(),
            busy: Mutex::default(),
            jitter: AtomicU64::new(jitter_seed()),
        }))
    }

    /// Deliveries were made due (a replay): the dispatcher looks now.
    pub fn wake(&self) {
        self.due.notify_one();
    }

    /// The endpoints as registered now (on any node: read again whenever their version moved);
    /// their backlogs, kept beside them, are read again every [`RELOAD_EVERY`].
    async fn registered(&self) -> Result<Arc<Vec<Endpoint>>, StoreError> {
        let version = self.store.endpoints_version().await?;
        let (current, fresh) = {
            let registered = self.registered.lock().expect("not poisoned");
            let current =
                (registered.version == Some(version)).then(|| registered.endpoints.clone());
            let fresh = registered
                .backlog_at
                .is_some_and(|at| at.elapsed() < RELOAD_EVERY);
            (current, fresh)
        };
        if let (Some(endpoints), true) = (&current, fresh) {
            return Ok(endpoints.clone());
        }
        let endpoints = match current {
            Some(endpoints) => endpoints,
            None => Arc::new(self.store.all_endpoints(ENDPOINTS_MAX).await?),
        };
        let backlog: HashMap<String, u64> = if endpoints.is_empty() {
            HashMap::new()
        } else {
            self.store.pending_counts().await?.into_iter().collect()
        };
        metrics::gauge!("kizo_webhook_endpoints").set(endpoints.len() as f64);
        metrics::gauge!("kizo_webhook_backlog").set(backlog.values().sum::<u64>() as f64);
        let mut registered = self.registered.lock().expect("not poisoned");
        *registered = Registered {
            version: Some(version),
            endpoints: endpoints.clone(),
            backlog,
            backlog_at: Some(std::time::Instant::now()),
        };
        Ok(endpoints)
    }

    fn next_jitter(&self) -> u64 {
        // A splitmix step: spreads retries; nothing secret depends on it.
        let mut z = self
            .jitter
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn jitter_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x7765_6268_6f6f_6b73);
    hasher.finish()
}

/// Whether `endpoint` is sent `event`: a kind it asked for, and for a user's endpoint, an event
/// about its wallet.
pub fn wants(endpoint: &Endpoint, event: &Event) -> bool {
    kizo_webhooks::endpoint::kinds_include(&endpoint.kinds, &event.kind)
        && endpoint
            .wallet
            .is_none_or(|wallet| crate::live::concerns(event, wallet))
}

/// The deliveries of `events` to `endpoints`, parked for an endpoint whose backlog is full.
fn deliveries_of(
    events: &[Event],
    endpoints: &[Endpoint],
    backlog: &mut HashMap<String, u64>,
) -> Vec<NewDelivery> {
    let mut deliveries = Vec::new();
    for event in events {
        let mut body = None;
        for endpoint in endpoints.iter().filter(|e| wants(e, event)) {
            let waiting = backlog.entry(endpoint.id.clone()).or_default();
            let parked = (*waiting >= BACKLOG_MAX).then(|| {
                format!("not attempted: {BACKLOG_MAX} deliveries were waiting for this endpoint")
            });
            if parked.is_none() {
                *waiting += 1;
            }
            let body = body
                .get_or_insert_with(|| serde_json::to_string(event).expect("an event serializes"))
                .clone();
            deliveries.push(NewDelivery {
                endpoint_id: endpoint.id.clone(),
                event_id: event.id.clone(),
                partition: event.partition,
                lsn: event.lsn.0,
                index: event.index,
                kind: event.kind.clone(),
                body,
                parked,
            });
        }
    }
    deliveries
}

/// The fan-out of one partition's log.
pub struct Fanout {
    task: tokio::task::JoinHandle<()>,
}

impl Fanout {
    /// Follows `wal`, `partition`'s log, from the saved progress (the log's end now, the first
    /// time: endpoints hear of what happens after they exist).
    pub fn start(
        webhooks: Arc<Webhooks>,
        partition: u32,
        wal: Arc<dyn Wal>,
        read_models: ReadModels,
    ) -> Fanout {
        Fanout {
            task: tokio::spawn(fan_out(webhooks, partition, wal, read_models)),
        }
    }

    /// Stops between steps (each step is one transaction: nothing is half written).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fan_out(
    webhooks: Arc<Webhooks>,
    partition: u32,
    wal: Arc<dyn Wal>,
    read_models: ReadModels,
) {
    let mut every = tokio::time::interval(FOLLOW_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut done: Option<u64> = None;
    loop {
        every.tick().await;
        let from = match done {
            Some(lsn) => lsn,
            None => match webhooks.store.progress(partition).await {
                Ok(Some(lsn)) => {
                    done = Some(lsn);
                    lsn
                }
                Ok(None) => {
                    let start = wal.last_lsn();
                    match webhooks
                        .store
                        .enqueue(partition, None, start, &[], now_ms(&webhooks))
                        .await
                    {
                        Ok(()) => done = Some(start),
                        Err(error) => {
                            tracing::warn!(%error, partition, "webhooks: progress not saved; trying again")
                        }
                    }
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, partition, "webhooks: progress not read; trying again");
                    continue;
                }
            },
        };
        match step(&webhooks, partition, &wal, &read_models, from).await {
            Ok(Some(to)) => {
                done = Some(to);
                metrics::gauge!("kizo_webhook_fanout_lag_commits", "partition" => partition.to_string())
                    .set(wal.last_lsn().saturating_sub(to) as f64);
            }
            Ok(None) => {}
            Err(StoreError::Superseded(_)) => {
                // Another node fans this partition out now (a takeover): read where it is.
                done = None;
            }
            Err(error) => {
                tracing::warn!(%error, partition, "webhooks: fan-out step failed; trying again");
                done = None;
            }
        }
    }
}

/// One step after `from`: the next commits' deliveries and progress written. `None`: nothing
/// new (or nothing mappable yet).
async fn step(
    webhooks: &Webhooks,
    partition: u32,
    wal: &Arc<dyn Wal>,
    read_models: &ReadModels,
    from: u64,
) -> Result<Option<u64>, StoreError> {
    let last = wal.last_lsn();
    if last <= from {
        return Ok(None);
    }
    let endpoints = webhooks.registered().await?;
    let now = now_ms(webhooks);
    if endpoints.is_empty() {
        webhooks
            .store
            .enqueue(partition, Some(from), last, &[], now)
            .await?;
        return Ok(Some(last));
    }
    let to = last.min(from + STEP_COMMITS);
    let commits = wal
        .read(from + 1, to)
        .await
        .map_err(|error| StoreError::Unavailable(error.to_string()))?;
    let mapped = crate::live::mapped(read_models, partition, &commits).await?;
    let Some(last_mapped) = mapped.last().map(|commit| commit.lsn) else {
        return Ok(None);
    };
    let events: Vec<Event> = mapped
        .into_iter()
        .flat_map(|commit| commit.events)
        .collect();
    // Counted as written: the store's counts replace these every few seconds.
    let deliveries = deliveries_of(
        &events,
        &endpoints,
        &mut webhooks.registered.lock().expect("not poisoned").backlog,
    );
    webhooks
        .store
        .enqueue(partition, Some(from), last_mapped, &deliveries, now)
        .await?;
    if !deliveries.is_empty() {
        metrics::counter!("kizo_webhook_enqueued_total").increment(deliveries.len() as u64);
        webhooks.wake();
    }
    Ok(Some(last_mapped))
}

fn now_ms(webhooks: &Webhooks) -> u64 {
    webhooks.clock.now_ms()
}

/// The dispatcher: one per server.
pub struct Dispatcher {
    task: tokio::task::JoinHandle<()>,
}

impl Dispatcher {
    pub fn start(webhooks: Arc<Webhooks>) -> Dispatcher {
        Dispatcher {
            task: tokio::spawn(dispatch(webhooks)),
        }
    }

    /// Stops claiming. Attempts in flight end with the process or run out; their claims
    /// expire and another dispatcher (or the next start) attempts them again.
    pub fn stop(&self) {
        self.task.abort();
    }
}

async fn dispatch(webhooks: Arc<Webhooks>) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = webhooks.due.notified() => {}
            _ = tokio::time::sleep(DISPATCH_EVERY) => {}
        }
        while tasks.try_join_next().is_some() {}
        let room = ENDPOINTS_IN_FLIGHT_MAX.saturating_sub(tasks.len());
        if room == 0 {
            continue;
        }
        let due = match webhooks
            .store
            .due_endpoints(now_ms(&webhooks), ENDPOINTS_IN_FLIGHT_MAX * 4)
            .await
        {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "webhooks: due deliveries not read; trying again");
                continue;
            }
        };
        for endpoint_id in due {
            if tasks.len() >= ENDPOINTS_IN_FLIGHT_MAX {
                break;
            }
            if !webhooks
                .busy
                .lock()
                .expect("not poisoned")
                .insert(endpoint_id.clone())
            {
                continue;
            }
            tasks.spawn(serve_endpoint(webhooks.clone(), endpoint_id));
        }
    }
}

/// Clears an endpoint's place among the busy ones however its task ends.
struct BusyGuard<'a> {
    webhooks: &'a Webhooks,
    endpoint_id: &'a str,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.webhooks
            .busy
            .lock()
            .expect("not poisoned")
            .remove(self.endpoint_id);
    }
}

/// Sends `endpoint_id`'s due deliveries, [`CLAIM_MAX`] at a time, until none is due.
async fn serve_endpoint(webhooks: Arc<Webhooks>, endpoint_id: String) {
    let _busy = BusyGuard {
        webhooks: &webhooks,
        endpoint_id: &endpoint_id,
    };
    let endpoint = match webhooks.registered().await {
        Ok(endpoints) => endpoints.iter().find(|e| e.id == endpoint_id).cloned(),
        Err(error) => {
            tracing::warn!(%error, "webhooks: endpoints not read");
            return;
        }
    };
    // Removed since: its deliveries went with it.
    let Some(endpoint) = endpoint else {
        return;
    };
    let Ok(secret) = Secret::parse(&endpoint.secret) else {
        tracing::error!(endpoint = %endpoint.id, "webhooks: the endpoint's stored secret is not one");
        return;
    };
    let claim_for = webhooks.settings.timeout + CLAIM_MARGIN;
    loop {
        let now = now_ms(&webhooks);
        let claimed = match webhooks
            .store
            .claim(
                &endpoint.id,
                now,
                now + claim_for.as_millis() as u64,
                CLAIM_MAX,
            )
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "webhooks: deliveries not claimed");
                return;
            }
        };
        if claimed.is_empty() {
            return;
        }
        let attempts = claimed
            .iter()
            .map(|delivery| attempt(&webhooks, &endpoint, &secret, delivery));
        let outcomes = futures_util::future::join_all(attempts).await;
        for (delivery, outcome) in claimed.iter().zip(outcomes) {
            let label = match &outcome {
                Attempt::Accepted => "accepted",
                Attempt::Answered(_) => "refused",
                Attempt::Unreachable(_) => "unreachable",
            };
            metrics::counter!("kizo_webhook_attempts_total", "outcome" => label).increment(1);
            let now = now_ms(&webhooks);
            let next = delivery.delivery.after(
                &outcome,
                now,
                webhooks.next_jitter(),
                &webhooks.settings.policy,
            );
            if matches!(next.state, kizo_webhooks::DeliveryState::Parked { .. }) {
                tracing::warn!(endpoint = %endpoint.id, event = %delivery.event_id, reason = ?next.last_error, "webhooks: delivery parked");
                metrics::counter!("kizo_webhook_parked_total").increment(1);
            }
            match webhooks.store.record(delivery, &next, now).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(event = %delivery.event_id, "webhooks: a claim ran out before its attempt was recorded; it is attempted again")
                }
                Err(error) => {
                    tracing::warn!(%error, "webhooks: an attempt's outcome not recorded; it is attempted again when its claim runs out")
                }
            }
        }
    }
}

/// One POST of `delivery` to `endpoint`, signed.
async fn attempt(
    webhooks: &Webhooks,
    endpoint: &Endpoint,
    secret: &Secret,
    delivery: &StoredDelivery,
) -> Attempt {
    if delivery.body.len() > BODY_MAX {
        return Attempt::Unreachable(format!("the event is over {BODY_MAX} bytes"));
    }
    let timestamp = now_ms(webhooks) / 1_000;
    let signature = secret.sign(&delivery.event_id, timestamp, delivery.body.as_bytes());
    let sent = webhooks
        .client
        .post(&endpoint.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &delivery.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(delivery.body.clone())
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => Attempt::Accepted,
        Ok(response) => Attempt::Answered(response.status().as_u16()),
        Err(error) => Attempt::Unreachable(error_chain(&error)),
    }
}

/// An error and its causes, on one line (reqwest's own says little: "error sending request").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Resolves names as the system does, then keeps only public addresses: a webhook's name
/// that points at this machine or a private network is refused like such an address.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|address| !kizo_webhooks::endpoint::is_private_address(address.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Forgets deliveries delivered longer ago than [`DELIVERED_KEPT`], a bounded number per call.
pub async fn prune(webhooks: &Webhooks) -> Result<u64, StoreError> {
    let before = now_ms(webhooks).saturating_sub(DELIVERED_KEPT.as_millis() as u64);
    webhooks.store.prune_delivered(before, 10_000).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{TransferJson, U128, U64};

    fn endpoint(id: &str, kinds: &[&str], wallet: Option<u128>) -> Endpoint {
        Endpoint {
            id: id.into(),
            owner: "ledger".into(),
            url: "https://example.com/".into(),
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            secret: String::new(),
            wallet,
            created_ms: 0,
        }
    }

    fn posted(id: &str, debit: u128, credit: u128) -> Event {
        let mut transfer: TransferJson =
            kizo_engine::Transfer::new(1, debit, credit, 5, 1, 1).into();
        transfer.id = U128(7);
        Event {
            schema: crate::events::SCHEMA.into(),
            id: id.into(),
            kind: "transfer.posted".into(),
            partition: 0,
            lsn: U64(3),
            index: 0,
            ledger: 1,
            at: "2026-12-05T00:00:00Z".into(),
            account: None,
            transfer: Some(transfer),
            expired: None,
        }
    }

    #[test]
    fn endpoints_hear_their_kinds_and_users_their_wallet() {
        let event = posted("0.3.0", 10, 20);
        assert!(wants(&endpoint("a", &["*"], None), &event));
        assert!(wants(&endpoint("a", &["transfer.posted"], None), &event));
        assert!(!wants(&endpoint("a", &["account.created"], None), &event));
        assert!(wants(&endpoint("a", &["*"], Some(20)), &event));
        assert!(!wants(&endpoint("a", &["*"], Some(30)), &event));
    }

    #[test]
    fn a_full_backlog_parks_new_deliveries() {
        let events = [posted("0.3.0", 10, 20), posted("0.3.1", 10, 20)];
        let endpoints = [endpoint("a", &["*"], None), endpoint("b", &["*"], None)];
        let mut backlog = HashMap::from([("a".to_string(), BACKLOG_MAX - 1)]);
        let deliveries = deliveries_of(&events, &endpoints, &mut backlog);
        let seen: Vec<(&str, &str, bool)> = deliveries
            .iter()
            .map(|d| {
                (
                    d.endpoint_id.as_str(),
                    d.event_id.as_str(),
                    d.parked.is_some(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("a", "0.3.0", false),
                ("b", "0.3.0", false),
                ("a", "0.3.1", true),
                ("b", "0.3.1", false)
            ]
        );
        assert_eq!(backlog["a"], BACKLOG_MAX);
        assert_eq!(backlog["b"], 2);
        let event: Event = serde_json::from_str(&deliveries[0].body).unwrap();
        assert_eq!(event, events[0]);
    }
}
