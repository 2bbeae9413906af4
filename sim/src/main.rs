//! `kizo-sim`: runs seeds of the deterministic simulation and reports the first that breaks an
//! invariant, with what to run to replay it.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use kizo_sim::{Mutation, Options, Report};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Deterministic simulation of the Kizo engine: seeds, faults, a reference model."
)]
struct Args {
    /// Run this one seed (replays a failure exactly).
    #[arg(long, conflicts_with_all = ["seeds", "run_for"])]
    seed: Option<u64>,
    /// Run this many seeds, from `--first-seed` on.
    #[arg(long)]
    seeds: Option<u64>,
    /// Run seeds until this much time has passed, e.g. `90s`, `10m`, `2h`.
    #[arg(long = "for", value_parser = parse_duration)]
    run_for: Option<Duration>,
    /// The first seed of `--seeds` and `--for` runs.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Steps with faults per seed (then faults stop and every request must complete).
    #[arg(long, default_value_t = 5_000)]
    steps: u64,
    /// Print every step of the run (with `--seed`).
    #[arg(long)]
    verbose: bool,
    /// Run a deliberately broken build, to see the checks catch it.
    #[arg(long, value_enum)]
    mutation: Option<MutationArg>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MutationArg {
    /// The log drops the last record of a commit that is acknowledged all the same.
    DropRecord,
    /// Rounds are acknowledged before their commit is durable.
    AckBeforeDurable,
    /// A bank call that timed out counts as declined: the withdrawal's hold is released.
    ReleaseOnUnknown,
    /// A restart from a snapshot skips the log after it.
    SkipLogTail,
    /// The shards let transfers go before the store holds them.
    EvictBeforeStored,
}

/// A duration as `humantime` reads it: `90s`, `10m`, `2h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| format!("{text:?}: {error}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = Options {
        steps: args.steps,
        verbose: args.verbose && args.seed.is_some(),
        mutation: args.mutation.map(|m| match m {
            MutationArg::DropRecord => Mutation::DropRecord,
            MutationArg::AckBeforeDurable => Mutation::AckBeforeDurable,
            MutationArg::ReleaseOnUnknown => Mutation::ReleaseOnUnknown,
            MutationArg::SkipLogTail => Mutation::SkipLogTail,
            MutationArg::EvictBeforeStored => Mutation::EvictBeforeStored,
        }),
    };
    if let Some(seed) = args.seed {
        let report = kizo_sim::run(seed, options.clone());
        println!(
            "seed {seed}: {} steps, {} rounds, {} events, hash {:016x}",
            report.steps, report.rounds, report.events, report.hash
        );
        return finish(&report, options.steps);
    }
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut seed = args.first_seed;
    let mut last_progress = Instant::now();
    loop {
        let done = match (args.seeds, args.run_for) {
            (Some(count), _) => seed >= args.first_seed + count,
            (None, Some(budget)) => started.elapsed() >= budget,
            (None, None) => seed >= args.first_seed + 100,
        };
        if done {
            break;
        }
        let report = kizo_sim::run(seed, options.clone());
        totals.add(&report);
        if report.failure.is_some() {
            eprintln!();
            return finish(&report, options.steps);
        }
        if last_progress.elapsed() >= Duration::from_millis(500) {
            last_progress = Instant::now();
            let done = match (args.seeds, args.run_for) {
                (Some(count), _) => (seed + 1 - args.first_seed) as f64 / count as f64,
                (None, Some(budget)) => started.elapsed().as_secs_f64() / budget.as_secs_f64(),
                (None, None) => (seed + 1 - args.first_seed) as f64 / 100.0,
            };
            eprint!("\r{} {}", bar(done), totals.line(started.elapsed()));
            let _ = std::io::stderr().flush();
        }
        seed += 1;
    }
    eprintln!("\r{} {}", bar(1.0), totals.line(started.elapsed()));
    println!("faults injected: {:?}", totals.faults);
    println!("settlements: {:?}", totals.settlements);
    let mut results: Vec<_> = totals.results.iter().collect();
    results.sort_by(|a, b| b.1.cmp(a.1));
    println!("results decided ({} codes): {results:?}", results.len());
    ExitCode::SUCCESS
}

/// `[#########...........]  45%`
fn bar(done: f64) -> String {
    let done = done.clamp(0.0, 1.0);
    let filled = (done * 20.0).round() as usize;
    format!(
        "[{}{}] {:>3.0}%",
        "#".repeat(filled),
        ".".repeat(20 - filled),
        done * 100.0
    )
}

#[derive(Default)]
struct Totals {
    seeds: u64,
    steps: u64,
    rounds: u64,
    events: u64,
    faults: BTreeMap<&'static str, u64>,
    results: BTreeMap<&'static str, u64>,
    settlements: BTreeMap<&'static str, u64>,
}

impl Totals {
    fn add(&mut self, report: &Report) {
        self.seeds += 1;
        self.steps += report.steps;
        self.rounds += report.rounds;
        self.events += report.events;
        for (kind, count) in &report.faults {
            *self.faults.entry(kind).or_default() += count;
        }
        for (code, count) in &report.results {
            *self.results.entry(code).or_default() += count;
        }
        for (what, count) in &report.settlements {
            *self.settlements.entry(what).or_default() += count;
        }
    }

    fn line(&self, elapsed: Duration) -> String {
        format!(
            "{} seeds, {} steps, {} rounds, {} events in {:.1} s ({:.0} steps/s), no failure",
            self.seeds,
            self.steps,
            self.rounds,
            self.events,
            elapsed.as_secs_f64(),
            self.steps as f64 / elapsed.as_secs_f64().max(1e-9)
        )
    }
}

fn finish(report: &Report, steps: u64) -> ExitCode {
    let Some(failure) = &report.failure else {
        return ExitCode::SUCCESS;
    };
    println!("FAILED: seed {} at step {}", report.seed, failure.step);
    println!("invariant: {}", failure.invariant);
    println!("last steps:");
    for line in &failure.trace {
        println!("  {line}");
    }
    let mutation = report
        .mutation
        .map_or(String::new(), |m| format!(" --mutation {m}"));
    println!(
        "replay: kizo-sim --seed {} --steps {steps}{mutation} --verbose",
        report.seed
    );
    ExitCode::FAILURE
}
