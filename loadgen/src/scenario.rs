//! The scenarios and the two load models.
//!
//! - Closed loop (`--vus`, `--duration`): each virtual user sends, waits for the answer (and its
//!   think time), and sends again.
//! - Open loop (`--rate`): requests are due at a fixed rate from the start; `--vus` workers take
//!   them in turn. A request's latency counts from when it was due, not from when a worker got
//!   to it, so a stall shows in every request it delayed (no coordinated omission).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::audit::Book;
use crate::http::{Http, WalletUser};
use crate::schedule::{intended_at, Chooser, Rng};
use crate::stats::Recorder;
use crate::target::{Move, RequestOutcome, Target, Unknown};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// The seed's k6 journey: each user logs in, then loads the dashboard and the history and
    /// sends a transfer to another user and one to a hot account, with think time.
    Wallet,
    /// Transfers only, one per request, over existing accounts (uniform, Zipf, or hot).
    Transfers,
    /// The batch ledger API: batches of `--batch` transfers.
    LedgerBatch,
    /// Logins alongside transfers: password hashing must not slow transfers.
    LoginStorm,
    /// Many clients race to spend one balance: exactly the funded number may succeed.
    DoubleSpend,
}

#[derive(Clone, Copy, Debug)]
pub enum Load {
    Closed { vus: usize },
    Open { rate: f64, vus: usize },
}

impl Load {
    pub fn vus(&self) -> usize {
        match *self {
            Load::Closed { vus } | Load::Open { vus, .. } => vus,
        }
    }
}

/// Everything that shapes a run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub scenario: Scenario,
    pub load: Load,
    pub duration: Duration,
    /// Accounts of `transfers`, `ledger-batch` and `login-storm`.
    pub accounts: usize,
    /// Zipf exponent of the choice of accounts; 0 is uniform.
    pub skew: f64,
    /// When set, every credit goes to one of this many hot accounts.
    pub hot: usize,
    pub batch: usize,
    /// `double-spend`: how many transfers the balance pays for.
    pub funded: u64,
    /// `wallet`: the mean pause between a user's iterations (each is 0.5× to 1.5× of it).
    pub think: Duration,
    pub seed: u64,
    /// The engine's shard count, to report the share of cross-shard transfers.
    pub shards: usize,
    /// `login-storm`: how many of the users log in over and over (the rest transfer).
    pub login_vus: usize,
}

/// What a run leaves: the measurements, the book for the audit, and the accounts to audit.
pub struct Outcomes {
    pub recorder: Recorder,
    pub book: Book,
    pub elapsed: Duration,
    pub system: u128,
    pub wallets: Vec<u128>,
    /// Of the transfers sent, the share whose accounts live on different shards.
    pub cross_shard: f64,
    /// Transfers moved per second (a batch counts its events).
    pub transfers_per_second: f64,
}

/// A live view of the run for the progress line.
pub struct Live {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// Latencies so far, a shard per thread (while there are more shards than threads): one
    /// shared histogram behind one lock made the runtime's threads queue for it on every
    /// request.
    latency: Vec<Mutex<hdrhistogram::Histogram<u64>>>,
}

/// Shards of [`Live`]'s latencies: more than the runtime's threads on a few cores.
const LIVE_SHARDS: usize = 16;

thread_local! {
    /// This thread's shard of [`Live`]'s latencies.
    static LIVE_SHARD: usize = {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) as usize % LIVE_SHARDS
    };
}

impl Default for Live {
    fn default() -> Self {
        Live {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: (0..LIVE_SHARDS)
                .map(|_| Mutex::new(crate::stats::coarse_histogram()))
                .collect(),
        }
    }
}

impl Live {
    fn note(&self, latency: Duration, failed: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let shard = LIVE_SHARD.with(|shard| *shard);
        let mut histogram = self.latency[shard].lock().expect("not poisoned");
        histogram
            .record(crate::stats::micros(latency))
            .expect("clamped into range");
    }

    /// p99 so far, in milliseconds.
    pub fn p99_ms(&self) -> f64 {
        let mut all = crate::stats::coarse_histogram();
        for shard in &self.latency {
            all.add(&*shard.lock().expect("not poisoned"))
                .expect("same bounds");
        }
        all.value_at_quantile(0.99) as f64 / 1000.0
    }
}

/// The run's ids: unique per run, so that runs can share a server.
fn run_base(seed: u64) -> u128 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (nanos ^ u128::from(seed) << 64) << 32 | 1 << 127
}

/// What every worker shares.
struct Shared {
    target: Arc<Target>,
    http: Option<Http>,
    plan: Plan,
    system: u128,
    wallets: Vec<u128>,
    users: Vec<WalletUser>,
    chooser: Chooser,
    next_id: AtomicU64,
    base: u128,
    started: Instant,
    live: Arc<Live>,
    /// `double-spend`: the account everyone spends from.
    source: u128,
}

impl Shared {
    fn id(&self) -> u128 {
        self.base + u128::from(self.next_id.fetch_add(1, Ordering::Relaxed)) + 1_000_000
    }

    fn record(
        &self,
        recorder: &mut Recorder,
        kind: &'static str,
        due: Instant,
        error: Option<&str>,
    ) {
        let latency = due.elapsed();
        recorder.record(kind, due - self.started, latency, error);
        self.live.note(latency, error.is_some());
    }
}

/// Sends `moves` and books the answers.
async fn send_moves(
    shared: &Shared,
    recorder: &mut Recorder,
    book: &mut Book,
    kind: &'static str,
    due: Instant,
    moves: Vec<Move>,
) {
    match shared.target.transfers(&moves).await {
        Ok(outcomes) => {
            let mut error = None;
            for (m, outcome) in moves.into_iter().zip(outcomes) {
                match outcome {
                    RequestOutcome::Created | RequestOutcome::Exists => book.acknowledged.push(m),
                    RequestOutcome::Refused(code) => {
                        book.refused.push(m);
                        error.get_or_insert(code);
                    }
                }
            }
            // A double spend's refusals are the expected answer, not a failure of the server.
            let error = error.filter(|_| shared.plan.scenario != Scenario::DoubleSpend);
            shared.record(recorder, kind, due, error.as_deref());
        }
        Err(unknown) => {
            book.unknown.extend(moves);
            shared.record(recorder, kind, due, Some(&unknown.code));
        }
    }
}

/// One step of a worker: one request (or, for `wallet`, one iteration of the journey).
async fn step(
    shared: &Shared,
    worker: usize,
    rng: &mut Rng,
    recorder: &mut Recorder,
    book: &mut Book,
    due: Instant,
) {
    let plan = &shared.plan;
    let pick_move = |rng: &mut Rng| {
        let (from, to) = if plan.hot > 0 {
            let to = rng.below(plan.hot.min(shared.wallets.len()));
            let mut from = shared.chooser.pick(rng);
            while from == to {
                from = shared.chooser.pick(rng);
            }
            (from, to)
        } else {
            shared.chooser.pair(rng)
        };
        Move {
            id: shared.id(),
            from: shared.wallets[from],
            to: shared.wallets[to],
            amount: 1 + rng.below(10) as u64,
        }
    };
    match plan.scenario {
        Scenario::Transfers => {
            let m = pick_move(rng);
            send_moves(shared, recorder, book, "transfer", due, vec![m]).await;
        }
        Scenario::LedgerBatch => {
            let moves = (0..plan.batch).map(|_| pick_move(rng)).collect();
            send_moves(shared, recorder, book, "batch", due, moves).await;
        }
        Scenario::DoubleSpend => {
            let to = shared.wallets[1 + rng.below(shared.wallets.len() - 1)];
            let m = Move {
                id: shared.id(),
                from: shared.source,
                to,
                amount: DOUBLE_SPEND_AMOUNT,
            };
            send_moves(shared, recorder, book, "spend", due, vec![m]).await;
        }
        Scenario::LoginStorm => {
            let http = shared.http.as_ref().expect("login-storm runs over HTTP");
            if worker < plan.login_vus {
                let email = &shared.users[worker % shared.users.len()].email;
                let error = http.login(email).await.err();
                shared.record(
                    recorder,
                    "login",
                    due,
                    error.as_ref().map(|e| e.code.as_str()),
                );
            } else {
                let m = pick_move(rng);
                send_moves(shared, recorder, book, "transfer", due, vec![m]).await;
            }
        }
        Scenario::Wallet => {
            let http = shared.http.as_ref().expect("wallet runs over HTTP");
            let user = &shared.users[worker % shared.users.len()];
            let error = http.dashboard(user).await.err();
            shared.record(
                recorder,
                "dashboard",
                due,
                error.as_ref().map(|e| e.code.as_str()),
            );
            let due = Instant::now();
            let error = http.history(user).await.err();
            shared.record(
                recorder,
                "history",
                due,
                error.as_ref().map(|e| e.code.as_str()),
            );
            // One transfer to another user, one to the hot account (the last user).
            let hot = shared.users.len() - 1;
            let mut other = rng.below(shared.users.len());
            while other == worker % shared.users.len() {
                other = rng.below(shared.users.len());
            }
            for to in [other, hot] {
                if to == worker % shared.users.len() {
                    continue;
                }
                let due = Instant::now();
                let to_wallet = &shared.users[to].wallet;
                let amount = 1 + rng.below(10) as u64;
                let m = |id| Move {
                    id,
                    from: crate::http::ledger_id(&user.wallet),
                    to: crate::http::ledger_id(to_wallet),
                    amount,
                };
                match http.wallet_transfer(user, to_wallet, amount).await {
                    Ok((RequestOutcome::Created, id)) => {
                        book.acknowledged.push(m(id));
                        shared.record(recorder, "transfer", due, None);
                    }
                    Ok((RequestOutcome::Refused(code), _)) => {
                        shared.record(recorder, "transfer", due, Some(&code))
                    }
                    Ok((RequestOutcome::Exists, _)) => {
                        shared.record(recorder, "transfer", due, Some("exists"))
                    }
                    Err(unknown) => {
                        // The wallet API names the transfer by its Idempotency-Key: its id is
                        // not known here, so the audit cannot look it up. Counted, and left out.
                        shared.record(recorder, "transfer", due, Some(&unknown.code));
                    }
                }
            }
        }
    }
}

const DOUBLE_SPEND_AMOUNT: u64 = 7;
/// Funds of every account of `transfers`-like scenarios: never run out.
const FUNDS: u64 = 1_000_000_000;

/// Creates the accounts, funds them, and (for the wallet scenarios) signs users up.
async fn prepare(
    target: &Arc<Target>,
    http: Option<&Http>,
    plan: &Plan,
) -> Result<Shared, Unknown> {
    let base = run_base(plan.seed);
    let system = base;
    let mut users = Vec::new();
    let wallets: Vec<u128> = match plan.scenario {
        Scenario::Wallet | Scenario::LoginStorm => {
            let http =
                http.ok_or_else(|| Unknown::new("target", "this scenario runs over HTTP"))?;
            let count = match plan.scenario {
                Scenario::Wallet => plan.load.vus() + 1,
                _ => plan.login_vus.max(1),
            };
            for i in 0..count {
                users.push(
                    http.sign_up_or_in(&format!("loadgen-{base:x}-{i}@example.com"))
                        .await?,
                );
            }
            if plan.scenario == Scenario::Wallet {
                users
                    .iter()
                    .map(|u| crate::http::ledger_id(&u.wallet))
                    .collect()
            } else {
                (1..=plan.accounts as u128).map(|i| base + i).collect()
            }
        }
        _ => (1..=plan.accounts.max(2) as u128)
            .map(|i| base + i)
            .collect(),
    };
    target.create_accounts(system, &wallets).await?;
    Ok(Shared {
        target: target.clone(),
        http: http.cloned(),
        plan: plan.clone(),
        system,
        chooser: Chooser::new(wallets.len(), plan.skew),
        source: wallets[0],
        wallets,
        users,
        next_id: AtomicU64::new(0),
        base,
        started: Instant::now(),
        live: Arc::new(Live::default()),
    })
}

/// Pays every wallet from the system account (for `double-spend`, only the source, with
/// exactly `funded` spends' worth). Booked as acknowledged.
async fn fund(shared: &Shared, book: &mut Book) -> Result<(), Unknown> {
    let moves: Vec<Move> = if shared.plan.scenario == Scenario::DoubleSpend {
        vec![Move {
            id: shared.id(),
            from: shared.system,
            to: shared.source,
            amount: shared.plan.funded * DOUBLE_SPEND_AMOUNT,
        }]
    } else {
        shared
            .wallets
            .iter()
            .map(|&to| Move {
                id: shared.id(),
                from: shared.system,
                to,
                amount: FUNDS,
            })
            .collect()
    };
    for chunk in moves.chunks(kizo_engine::BATCH_EVENTS_MAX) {
        let outcomes = shared.target.transfers(chunk).await?;
        for (m, outcome) in chunk.iter().zip(outcomes) {
            match outcome {
                RequestOutcome::Created | RequestOutcome::Exists => book.acknowledged.push(*m),
                RequestOutcome::Refused(code) => {
                    return Err(Unknown::new("setup", format!("funding: {code}")))
                }
            }
        }
    }
    Ok(())
}

/// Runs `plan` against `target`; `live` is filled as it goes (for the progress line).
pub async fn run(
    target: Arc<Target>,
    http: Option<Http>,
    plan: Plan,
    on_start: impl FnOnce(Arc<Live>),
) -> Result<Outcomes, Unknown> {
    let mut shared = prepare(&target, http.as_ref(), &plan).await?;
    let mut book = Book::default();
    fund(&shared, &mut book).await?;
    shared.started = Instant::now();
    let shared = Arc::new(shared);
    on_start(shared.live.clone());
    let deadline = shared.started + plan.duration;
    let open_next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..plan.load.vus() {
        let (shared, open_next) = (shared.clone(), open_next.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = Rng::new(shared.plan.seed ^ (worker as u64 + 1) << 20);
            let (mut recorder, mut book) = (Recorder::default(), Book::default());
            let think = |rng: &mut Rng| shared.plan.think.mul_f64(0.5 + rng.unit());
            if shared.plan.scenario == Scenario::Wallet {
                // Users arrive spread over one think time, not in one burst.
                tokio::time::sleep(shared.plan.think.mul_f64(rng.unit())).await;
            }
            loop {
                let due = match shared.plan.load {
                    Load::Closed { .. } => Instant::now(),
                    Load::Open { rate, .. } => {
                        let index = open_next.fetch_add(1, Ordering::Relaxed);
                        shared.started + intended_at(index, rate)
                    }
                };
                if due >= deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                step(&shared, worker, &mut rng, &mut recorder, &mut book, due).await;
                if shared.plan.scenario == Scenario::Wallet && !shared.plan.think.is_zero() {
                    // Half to one and a half think times, so that users drift apart.
                    tokio::time::sleep(think(&mut rng)).await;
                }
            }
            (recorder, book)
        }));
    }
    let mut recorder = Recorder::default();
    for worker in workers {
        let (theirs, their_book) = worker.await.map_err(|e| Unknown::new("worker", e))?;
        recorder.merge(&theirs);
        book.merge(their_book);
    }
    let elapsed = shared.started.elapsed();
    let funding = match plan.scenario {
        Scenario::DoubleSpend => 1,
        _ => shared.wallets.len(),
    };
    let sent: Vec<&Move> = book
        .acknowledged
        .iter()
        .skip(funding)
        .chain(&book.refused)
        .chain(&book.unknown)
        .collect();
    let cross = sent
        .iter()
        .filter(|m| {
            kizo_engine::routing::shard_of(m.from, plan.shards)
                != kizo_engine::routing::shard_of(m.to, plan.shards)
        })
        .count();
    let cross_shard = if sent.is_empty() {
        0.0
    } else {
        cross as f64 / sent.len() as f64
    };
    let moved = book.acknowledged.len().saturating_sub(funding);
    Ok(Outcomes {
        recorder,
        transfers_per_second: moved as f64 / elapsed.as_secs_f64().max(1e-9),
        book,
        elapsed,
        system: shared.system,
        wallets: shared.wallets.clone(),
        cross_shard,
    })
}

/// `double-spend`'s own check: exactly the funded number of spends succeeded.
pub fn double_spend_check(plan: &Plan, outcomes: &Outcomes) -> Option<String> {
    if plan.scenario != Scenario::DoubleSpend {
        return None;
    }
    let spent = outcomes
        .book
        .acknowledged
        .iter()
        .filter(|m| m.from != outcomes.system)
        .count() as u64;
    // Spends whose answer was lost may have succeeded too: then fewer were acknowledged.
    let exact = outcomes.book.unknown.is_empty();
    (spent > plan.funded || (exact && spent != plan.funded)).then(|| {
        format!(
            "double spend: {spent} spends succeeded, but the balance paid for {}",
            plan.funded
        )
    })
}
