//! [`DurableWal`]: the engine's [`Wal`] on a [`LogStore`], with group commit.
//!
//! One writer task owns every flush. It takes the commits queued since its last flush (up to
//! [`WalConfig::flush_records_max`] records, waiting at most [`WalConfig::flush_wait_max`]
//! for more), encodes them as one frame, writes the frame in one transaction, and only when
//! the store says it committed does it mark them durable and wake their waiters. The engine's
//! coordinator already gathers every request that arrived during the previous flush into its
//! next round, so under load one frame carries thousands of transfers.
//!
//! When the store fails, appends fail fast while the writer probes it with backoff; when it
//! is back, the writer serves again. A write whose outcome is unknown (the connection broke
//! during the commit) is settled by asking the store whether its frame is there, before any
//! later commit is written: an acknowledged commit is never lost, and a commit is never
//! written on top of a state that is not the log's.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kizo_engine::wal::WalFuture;
use kizo_engine::{Commit, Record, Wal, WalError};
use tokio::sync::{mpsc, oneshot};

use crate::codec::{decode_frame, FrameEncoder};
use crate::store::{Appender, LogStore, StoreError};

#[derive(Clone, Debug)]
pub struct WalConfig {
    /// A flush takes commits until it holds this many records (a single larger commit is
    /// flushed whole).
    pub flush_records_max: usize,
    /// How long the writer waits for more commits after the first before it flushes. Zero
    /// flushes at once: the engine's rounds already gather what arrived during a flush.
    pub flush_wait_max: Duration,
    /// Recent commits kept in memory, in records, for shards that catch up after a restart.
    pub cache_records_max: usize,
    /// Frames fetched per query when reading the log back.
    pub read_frames_per_query: u32,
    /// The longest pause between probes of a store that failed.
    pub retry_backoff_max: Duration,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            flush_records_max: 128 * 1024,
            flush_wait_max: Duration::ZERO,
            cache_records_max: 1 << 20,
            read_frames_per_query: 64,
            retry_backoff_max: Duration::from_secs(2),
        }
    }
}

impl WalConfig {
    fn validate(&self) -> Result<(), WalError> {
        let fail = |detail: &str| {
            Err(WalError::Unavailable(format!(
                "invalid log config: {detail}"
            )))
        };
        if self.flush_records_max == 0 || self.flush_records_max > 1 << 24 {
            return fail("flush_records_max must be in 1..=16M");
        }
        if self.flush_wait_max > Duration::from_secs(1) {
            return fail("flush_wait_max must be at most 1 s");
        }
        if self.read_frames_per_query == 0 || self.read_frames_per_query > 4096 {
            return fail("read_frames_per_query must be in 1..=4096");
        }
        Ok(())
    }
}

struct Append {
    lsn: u64,
    timestamp_max: u64,
    records: Vec<Record>,
    reply: oneshot::Sender<Result<Arc<Commit>, WalError>>,
}

struct Shared {
    store: LogStore,
    config: WalConfig,
    durable_lsn: AtomicU64,
    recent: Mutex<Recent>,
    flushes: AtomicU64,
    flushed_commits: AtomicU64,
    flushed_bytes: AtomicU64,
    flush_ns: AtomicU64,
}

/// What the writer did since the log was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Frames written (one transaction each).
    pub flushes: u64,
    pub flushed_commits: u64,
    pub flushed_bytes: u64,
    /// Time spent encoding and writing frames.
    pub flush_ns: u64,
}

#[derive(Default)]
struct Recent {
    commits: VecDeque<Arc<Commit>>,
    records: usize,
}

/// The write-ahead log on a store. Cheap to share: clone the `Arc`.
pub struct DurableWal {
    shared: Arc<Shared>,
    appends: mpsc::UnboundedSender<Append>,
}

impl DurableWal {
    /// Opens the log on `store` and starts its writer (on the current tokio runtime).
    pub async fn open(store: LogStore, config: WalConfig) -> Result<Arc<DurableWal>, WalError> {
        config.validate()?;
        let last = store.last_lsn().await.map_err(store_error)?;
        let shared = Arc::new(Shared {
            store,
            config,
            durable_lsn: AtomicU64::new(last),
            recent: Mutex::new(Recent::default()),
            flushes: AtomicU64::new(0),
            flushed_commits: AtomicU64::new(0),
            flushed_bytes: AtomicU64::new(0),
            flush_ns: AtomicU64::new(0),
        });
        let (appends, receiver) = mpsc::unbounded_channel();
        tokio::spawn(Writer::new(shared.clone()).run(receiver));
        tracing::info!(last_lsn = last, "write-ahead log opened");
        Ok(Arc::new(DurableWal { shared, appends }))
    }

    pub fn store(&self) -> &LogStore {
        &self.shared.store
    }

    pub fn stats(&self) -> WalStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WalStats {
            flushes: get(&self.shared.flushes),
            flushed_commits: get(&self.shared.flushed_commits),
            flushed_bytes: get(&self.shared.flushed_bytes),
            flush_ns: get(&self.shared.flush_ns),
        }
    }
}

impl Wal for DurableWal {
    fn append(
        &self,
        lsn: u64,
        timestamp_max: u64,
        records: Vec<Record>,
    ) -> oneshot::Receiver<Result<Arc<Commit>, WalError>> {
        let (reply, receiver) = oneshot::channel();
        let append = Append {
            lsn,
            timestamp_max,
            records,
            reply,
        };
        if let Err(mpsc::error::SendError(append)) = self.appends.send(append) {
            let _ = append
                .reply
                .send(Err(WalError::Unavailable("the log writer stopped".into())));
        }
        receiver
    }

    fn read(&self, from: u64, to: u64) -> WalFuture<Vec<Arc<Commit>>> {
        let shared = self.shared.clone();
        Box::pin(async move { shared.read(from, to).await })
    }

    fn last_lsn(&self) -> u64 {
        self.shared.durable_lsn.load(Ordering::Acquire)
    }
}

impl Shared {
    async fn read(&self, from: u64, to: u64) -> Result<Vec<Arc<Commit>>, WalError> {
        let last = self.durable_lsn.load(Ordering::Acquire);
        if from == 0 || from > to.saturating_add(1) || to > last {
            return Err(WalError::Missing { from, to, last });
        }
        if from > to {
            return Ok(Vec::new());
        }
        if let Some(commits) = self.read_recent(from, to) {
            return Ok(commits);
        }
        let mut commits = Vec::with_capacity((to - from + 1).min(1 << 16) as usize);
        let mut next = from;
        while next <= to {
            let frames = self
                .store
                .read_frames(next, to, self.config.read_frames_per_query)
                .await
                .map_err(store_error)?;
            if frames.is_empty() {
                return Err(corrupt(
                    next,
                    "no frame holds this LSN (a gap in the log)".into(),
                ));
            }
            for frame in frames {
                let decoded = decode_frame(&frame.bytes, frame.first_lsn)
                    .map_err(|error| corrupt(error.lsn, error.detail))?;
                let (first, last) = (decoded[0].lsn, decoded[decoded.len() - 1].lsn);
                if first != frame.first_lsn || last != frame.last_lsn {
                    return Err(corrupt(
                        frame.first_lsn,
                        format!(
                            "the frame holds LSNs {first}..={last}, its row says {}..={}",
                            frame.first_lsn, frame.last_lsn
                        ),
                    ));
                }
                if first > next {
                    return Err(corrupt(
                        next,
                        "no frame holds this LSN (a gap in the log)".into(),
                    ));
                }
                for commit in decoded {
                    if commit.lsn == next && next <= to {
                        commits.push(Arc::new(commit));
                        next += 1;
                    }
                }
            }
        }
        Ok(commits)
    }

    fn read_recent(&self, from: u64, to: u64) -> Option<Vec<Arc<Commit>>> {
        let recent = self.recent.lock().expect("recent commits lock");
        let first = recent.commits.front()?.lsn;
        let last = recent.commits.back()?.lsn;
        if from < first || to > last {
            return None;
        }
        let start = (from - first) as usize;
        let end = (to - first) as usize;
        Some(recent.commits.range(start..=end).cloned().collect())
    }

    /// Marks commits durable: the LSN moves, and they join the recent ones.
    fn made_durable(&self, commits: &[Arc<Commit>]) {
        let mut recent = self.recent.lock().expect("recent commits lock");
        for commit in commits {
            if recent
                .commits
                .back()
                .is_some_and(|last| last.lsn + 1 != commit.lsn)
            {
                // Commits written by another process sit between: restart the cache here.
                recent.commits.clear();
                recent.records = 0;
            }
            recent.records += commit.records.len();
            recent.commits.push_back(commit.clone());
        }
        while recent.records > self.config.cache_records_max && recent.commits.len() > 1 {
            let evicted = recent.commits.pop_front().expect("not empty");
            recent.records -= evicted.records.len();
        }
        drop(recent);
        let last = commits.last().expect("at least one commit").lsn;
        self.durable_lsn.store(last, Ordering::Release);
        metrics::gauge!("kizo_wal_durable_lsn").set(last as f64);
    }
}

fn store_error(error: StoreError) -> WalError {
    WalError::Unavailable(error.to_string())
}

fn corrupt(lsn: u64, detail: String) -> WalError {
    WalError::Corrupt {
        lsn,
        detail: format!(
            "{detail}. Nothing after this LSN can be trusted or replayed; restore the log from a \
             backup (see docs/operations.md, \"A damaged log\")"
        ),
    }
}

/// The writer task's state: whether the store works, and a flush whose outcome is unknown.
struct Writer {
    shared: Arc<Shared>,
    appender: Appender,
    /// Set while the store is failing: appends fail at once until the next probe succeeds.
    down: Option<Backoff>,
    /// Commits whose flush may or may not have committed.
    unsettled: Option<Vec<Arc<Commit>>>,
}

struct Backoff {
    retry_at: Instant,
    delay: Duration,
    reason: String,
}

const BACKOFF_MIN: Duration = Duration::from_millis(50);

impl Writer {
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            appender: shared.store.appender(),
            shared,
            down: None,
            unsettled: None,
        }
    }

    async fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Append>) {
        loop {
            let first = match &self.down {
                None => receiver.recv().await,
                Some(backoff) => {
                    let retry_at = tokio::time::Instant::from_std(backoff.retry_at);
                    tokio::select! {
                        append = receiver.recv() => append,
                        () = tokio::time::sleep_until(retry_at) => {
                            self.probe().await;
                            continue;
                        }
                    }
                }
            };
            let Some(first) = first else {
                return; // The log was dropped.
            };
            let appends = self.gather(first, &mut receiver).await;
            if let Some(backoff) = &self.down {
                let error = WalError::Unavailable(format!(
                    "the log store is down ({}); retrying",
                    backoff.reason
                ));
                fail(appends, &error);
                continue;
            }
            self.flush(appends).await;
        }
    }

    /// The first append and whatever else is queued, within the flush limits.
    async fn gather(
        &self,
        first: Append,
        receiver: &mut mpsc::UnboundedReceiver<Append>,
    ) -> Vec<Append> {
        let config = &self.shared.config;
        let mut records = first.records.len();
        let mut appends = vec![first];
        let deadline = tokio::time::Instant::now() + config.flush_wait_max;
        while records < config.flush_records_max {
            let next = match receiver.try_recv() {
                Ok(append) => append,
                Err(_) if config.flush_wait_max.is_zero() => break,
                Err(_) => match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(Some(append)) => append,
                    _ => break,
                },
            };
            records += next.records.len();
            appends.push(next);
        }
        appends
    }

    async fn flush(&mut self, appends: Vec<Append>) {
        let durable = self.shared.durable_lsn.load(Ordering::Acquire);
        let mut next = durable + 1;
        let mut accepted = Vec::with_capacity(appends.len());
        for append in appends {
            if append.lsn == next {
                next += 1;
                accepted.push(append);
            } else {
                let error = WalError::OutOfSequence {
                    lsn: append.lsn,
                    next,
                };
                let _ = append.reply.send(Err(error));
            }
        }
        if accepted.is_empty() {
            return;
        }
        let mut replies = Vec::with_capacity(accepted.len());
        let mut commits = Vec::with_capacity(accepted.len());
        for append in accepted {
            replies.push(append.reply);
            commits.push(Arc::new(Commit {
                lsn: append.lsn,
                timestamp_max: append.timestamp_max,
                records: append.records,
            }));
        }
        let started = Instant::now();
        let mut encoder = FrameEncoder::new(commits[0].lsn);
        for commit in &commits {
            encoder.push(commit);
        }
        let frame = encoder.finish();
        let (first_lsn, last_lsn) = (commits[0].lsn, commits[commits.len() - 1].lsn);
        let result = self.appender.append(first_lsn, last_lsn, &frame).await;
        let outcome = match result {
            Ok(()) => Ok(()),
            Err(StoreError::Unknown(reason)) => {
                tracing::warn!(first_lsn, %reason, "log flush outcome unknown; settling it");
                self.unsettled = Some(commits.clone());
                self.settle_now().await;
                match self.shared.durable_lsn.load(Ordering::Acquire) >= last_lsn {
                    true => Ok(()),
                    false => Err(reason),
                }
            }
            Err(StoreError::Conflict(lsn)) => {
                // Only another writer can have put a frame there: refuse, and learn its LSN.
                tracing::error!(lsn, "the log holds a frame this writer did not write");
                if let Ok(last) = self.shared.store.last_lsn().await {
                    self.shared.durable_lsn.store(last, Ordering::Release);
                }
                Err(format!("another writer stored LSN {lsn}"))
            }
            Err(error) => Err(error.to_string()),
        };
        match outcome {
            Ok(()) => {
                if self.shared.durable_lsn.load(Ordering::Acquire) < last_lsn {
                    self.shared.made_durable(&commits);
                }
                let took = started.elapsed();
                let shared = &self.shared;
                shared.flushes.fetch_add(1, Ordering::Relaxed);
                shared
                    .flushed_commits
                    .fetch_add(commits.len() as u64, Ordering::Relaxed);
                shared
                    .flushed_bytes
                    .fetch_add(frame.len() as u64, Ordering::Relaxed);
                shared
                    .flush_ns
                    .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
                metrics::counter!("kizo_wal_flushes_total").increment(1);
                metrics::counter!("kizo_wal_flushed_bytes_total").increment(frame.len() as u64);
                metrics::histogram!("kizo_wal_flush_seconds").record(took.as_secs_f64());
                for (reply, commit) in replies.into_iter().zip(commits) {
                    let _ = reply.send(Ok(commit));
                }
            }
            Err(reason) => {
                metrics::counter!("kizo_wal_flush_failures_total").increment(1);
                tracing::error!(first_lsn, %reason, "log flush failed; its commits are answered as unavailable");
                if self.down.is_none() {
                    self.down = Some(Backoff {
                        retry_at: Instant::now() + BACKOFF_MIN,
                        delay: BACKOFF_MIN,
                        reason: reason.clone(),
                    });
                }
                let error = WalError::Unavailable(reason);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// A few quick tries to learn whether an unknown flush committed, before its waiters are
    /// answered; if the store stays silent, the probe settles it later.
    async fn settle_now(&mut self) {
        for attempt in 0..4u32 {
            if self.settle().await.is_ok() {
                return;
            }
            tokio::time::sleep(BACKOFF_MIN * (1 << attempt)).await;
        }
    }

    /// Asks the store where the log ends; settles an unknown flush with the answer.
    async fn settle(&mut self) -> Result<(), StoreError> {
        let last = self.shared.store.last_lsn().await?;
        let durable = self.shared.durable_lsn.load(Ordering::Acquire);
        if let Some(commits) = self.unsettled.take() {
            let (first, end) = (commits[0].lsn, commits[commits.len() - 1].lsn);
            if last >= end && self.shared.store.has_frame(first).await? {
                tracing::warn!(first, end, "the unknown flush had committed");
                self.shared.made_durable(&commits);
            } else {
                tracing::warn!(first, end, "the unknown flush had not committed");
            }
        }
        let durable_now = self.shared.durable_lsn.load(Ordering::Acquire);
        if last > durable_now {
            tracing::error!(
                durable,
                last,
                "the log grew without this writer; following it"
            );
            self.shared.durable_lsn.store(last, Ordering::Release);
        }
        Ok(())
    }

    async fn probe(&mut self) {
        match self.settle().await {
            Ok(()) => {
                tracing::info!("the log store is reachable again");
                self.down = None;
            }
            Err(error) => {
                let backoff = self.down.as_mut().expect("probing only while down");
                backoff.delay = (backoff.delay * 2).min(self.shared.config.retry_backoff_max);
                backoff.retry_at = Instant::now() + backoff.delay;
                backoff.reason = error.to_string();
                tracing::warn!(%error, retry_in = ?backoff.delay, "the log store is still down");
            }
        }
    }
}

fn fail(appends: Vec<Append>, error: &WalError) {
    for append in appends {
        let _ = append.reply.send(Err(error.clone()));
    }
}
