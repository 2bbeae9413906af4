//! Engine throughput, in memory: `cargo bench -p kizo-engine --bench throughput [-- --transfers N --shards N --clients N --pure 1]`.
//!
//! 10,000 funded wallets; transfers drawn uniformly or Zipf-skewed (s = 1.0, so a few accounts
//! are hot), 90% of them between accounts on different shards. Two ways of submitting: batches
//! of 8189 from 8 clients (`--clients N`), and one transfer per call from 64 concurrent tasks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use kizo_engine::routing::shard_of;
use kizo_engine::{
    Account, AccountFlags, CreateTransferResult, Engine, EngineConfig, MemoryWal, Transfer,
    BATCH_EVENTS_MAX,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ACCOUNTS: u128 = 10_000;
const BANK: u128 = ACCOUNTS + 1;
const CROSS_SHARD_SHARE: u64 = 90;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: fast and good enough to pick accounts.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, Debug)]
enum Mix {
    Uniform,
    Zipf,
}

/// Picks account ids 1..=ACCOUNTS, uniformly or by Zipf's law over a shuffled rank order.
struct Picker {
    cdf: Vec<f64>,
}

impl Picker {
    fn new(mix: Mix) -> Self {
        let weights: Vec<f64> = (1..=ACCOUNTS)
            .map(|rank| match mix {
                Mix::Uniform => 1.0,
                Mix::Zipf => 1.0 / rank as f64,
            })
            .collect();
        let total: f64 = weights.iter().sum();
        let mut sum = 0.0;
        let cdf = weights
            .iter()
            .map(|w| {
                sum += w / total;
                sum
            })
            .collect();
        Self { cdf }
    }

    fn pick(&self, rng: &mut Rng) -> u128 {
        let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        let rank = self
            .cdf
            .partition_point(|&c| c < u)
            .min(ACCOUNTS as usize - 1);
        // Spread hot ranks over the id space (and so over shards).
        ((rank as u128 * 7_919) % ACCOUNTS) + 1
    }
}

fn workload(mix: Mix, count: usize, shards: usize, seed: u64, first_id: u128) -> Vec<Transfer> {
    let picker = Picker::new(mix);
    let mut rng = Rng(seed | 1);
    (0..count)
        .map(|i| {
            let debit = picker.pick(&mut rng);
            let want_cross = rng.below(100) < CROSS_SHARD_SHARE && shards > 1;
            let credit = loop {
                let credit = picker.pick(&mut rng);
                let cross = shard_of(credit, shards) != shard_of(debit, shards);
                if credit != debit && (cross == want_cross || rng.below(50) == 0) {
                    break credit;
                }
            };
            Transfer {
                id: first_id + i as u128,
                debit_account_id: debit,
                credit_account_id: credit,
                amount: 1 + rng.below(1_000) as u128,
                ledger: 1,
                code: 1,
                ..Transfer::default()
            }
        })
        .collect()
}

async fn setup(shards: usize) -> Engine {
    let config = EngineConfig {
        shard_count: shards,
        round_events_max: arg("--round-events", EngineConfig::default().round_events_max),
        ..EngineConfig::default()
    };
    let engine = Engine::start(config, MemoryWal::new())
        .await
        .expect("start");
    let mut accounts: Vec<Account> = (1..=ACCOUNTS)
        .map(|id| Account {
            id,
            ledger: 1,
            code: 1,
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            ..Account::default()
        })
        .collect();
    accounts.push(Account {
        id: BANK,
        ledger: 1,
        code: 2,
        ..Account::default()
    });
    for chunk in accounts.chunks(BATCH_EVENTS_MAX) {
        engine
            .create_accounts(chunk.to_vec())
            .await
            .expect("accounts");
    }
    let funding: Vec<Transfer> = (1..=ACCOUNTS)
        .map(|id| Transfer {
            id: u128::MAX - 1 - id,
            debit_account_id: BANK,
            credit_account_id: id,
            amount: 1 << 60,
            ledger: 1,
            code: 1,
            ..Transfer::default()
        })
        .collect();
    for chunk in funding.chunks(BATCH_EVENTS_MAX) {
        engine
            .create_transfers(chunk.to_vec())
            .await
            .expect("funding");
    }
    engine
}

struct Figures {
    transfers: usize,
    created: usize,
    seconds: f64,
    cross_shard: f64,
}

fn cross_share(transfers: &[Transfer], shards: usize) -> f64 {
    let cross = transfers
        .iter()
        .filter(|t| shard_of(t.debit_account_id, shards) != shard_of(t.credit_account_id, shards))
        .count();
    cross as f64 / transfers.len() as f64
}

/// `clients` tasks take `batch` transfers at a time from a shared cursor and submit them, each
/// waiting for its answer before the next (a closed loop).
async fn drive(engine: &Engine, transfers: Vec<Transfer>, clients: usize, batch: usize) -> Figures {
    let cross_shard = cross_share(&transfers, engine.shard_count());
    let total = transfers.len();
    let transfers = Arc::new(transfers);
    let cursor = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (engine, transfers, cursor) = (engine.clone(), transfers.clone(), cursor.clone());
        tasks.push(tokio::spawn(async move {
            let mut created = 0;
            loop {
                let from = cursor.fetch_add(batch, Ordering::Relaxed);
                if from >= transfers.len() {
                    break created;
                }
                let to = (from + batch).min(transfers.len());
                let results = engine
                    .create_transfers(transfers[from..to].to_vec())
                    .await
                    .expect("submit");
                created += results
                    .iter()
                    .filter(|r| **r == CreateTransferResult::Created)
                    .count();
            }
        }));
    }
    let mut created = 0;
    for task in tasks {
        created += task.await.unwrap();
    }
    Figures {
        transfers: total,
        created,
        seconds: start.elapsed().as_secs_f64(),
        cross_shard,
    }
}

fn report(name: &str, mix: Mix, figures: &Figures) {
    println!(
        "{name:<30} {:<8} {:>10} transfers {:>6.1}% cross-shard {:>7.2} s {:>12.0} transfers/s (created {})",
        format!("{mix:?}"),
        figures.transfers,
        figures.cross_shard * 100.0,
        figures.seconds,
        figures.transfers as f64 / figures.seconds,
        figures.created,
    );
}

/// The same rounds without actors or runtime: one thread reads, decides and applies.
fn pure(mix: Mix, count: usize, shards: usize) -> Figures {
    use kizo_engine::local::LocalEngine;
    use kizo_engine::round::Operation;
    let mut engine = LocalEngine::new(shards);
    let now = 1_000_000_000_000;
    let accounts: Vec<Account> = (1..=ACCOUNTS)
        .map(|id| Account {
            id,
            ledger: 1,
            code: 1,
            ..Account::default()
        })
        .collect();
    for chunk in accounts.chunks(BATCH_EVENTS_MAX) {
        engine.create_accounts(chunk, now);
    }
    let transfers = workload(mix, count, shards, 42, 1);
    let cross_shard = cross_share(&transfers, shards);
    let start = Instant::now();
    let mut created = 0;
    for round in transfers.chunks(2 * BATCH_EVENTS_MAX) {
        let operations = round
            .chunks(BATCH_EVENTS_MAX)
            .map(|batch| Operation::CreateTransfers(batch.to_vec()))
            .collect();
        for outcome in engine.execute(operations, now) {
            if let kizo_engine::round::Outcome::Transfers(results) = outcome {
                created += results
                    .iter()
                    .filter(|r| **r == CreateTransferResult::Created)
                    .count();
            }
        }
    }
    Figures {
        transfers: count,
        created,
        seconds: start.elapsed().as_secs_f64(),
        cross_shard,
    }
}

/// Where the time of a run went, from the engine's counters.
fn report_time(before: &kizo_engine::StatsSnapshot, after: &kizo_engine::StatsSnapshot) {
    let ms = |a: u64, b: u64| (b - a) / 1_000_000;
    println!(
        "{:<30} {} rounds, coordinator {} ms deciding / {} ms waiting, shards {} ms reading / {} ms applying",
        "",
        after.rounds - before.rounds,
        ms(before.coordinator_decide_ns, after.coordinator_decide_ns),
        ms(before.coordinator_wait_ns, after.coordinator_wait_ns),
        ms(before.shard_read_ns, after.shard_read_ns),
        ms(before.shard_apply_ns, after.shard_apply_ns),
    );
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let shards = arg("--shards", threads);
    let batched_count = arg("--transfers", 2_000_000);
    let single_count = arg("--single-transfers", 400_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    println!("kizo-engine throughput: {shards} shards, {threads} worker threads, {ACCOUNTS} accounts, in-memory log");
    if arg("--pure", 0) > 0 {
        for mix in [Mix::Uniform, Mix::Zipf] {
            report(
                "pure rounds, one thread",
                mix,
                &pure(mix, batched_count, shards),
            );
        }
    }
    if arg("--actors", 1) == 0 {
        return;
    }
    runtime.block_on(async {
        let mut next_id = 1u128;
        for mix in [Mix::Uniform, Mix::Zipf] {
            let engine = setup(shards).await;
            let transfers = workload(mix, batched_count, shards, 42, next_id);
            next_id += batched_count as u128;
            let before = engine.stats();
            let clients = arg("--clients", 8);
            let figures = drive(&engine, transfers, clients, BATCH_EVENTS_MAX).await;
            report(
                &format!("batches of 8189, {clients} clients"),
                mix,
                &figures,
            );
            report_time(&before, &engine.stats());

            let transfers = workload(mix, single_count, shards, 7, next_id);
            next_id += single_count as u128;
            let figures = drive(&engine, transfers, 64, 1).await;
            report("one per call, 64 tasks", mix, &figures);
            engine.shutdown().await;
        }
    });
}
