//! The simulator in CI: a fixed set of seeds, one seed taken from the commit (`KIZO_SIM_SEED`,
//! set by `.ci/run`), replay determinism, and proof that the checks catch broken builds.

use kizo_sim::{run, Mutation, Options, Report};

/// Seeds run on every CI run (`KIZO_SIM_SEEDS` changes the count).
const SEEDS: u64 = 600;

fn options() -> Options {
    Options {
        steps: 3_000,
        ..Options::default()
    }
}

fn assert_passes(report: &Report) {
    if let Some(failure) = &report.failure {
        panic!(
            "seed {} failed at step {}: {}\n{}\nreplay: cargo run --release -p kizo-sim -- --seed {} --steps {} --verbose",
            report.seed,
            failure.step,
            failure.invariant,
            failure.trace.join("\n"),
            report.seed,
            options().steps
        );
    }
}

#[test]
fn fixed_seeds_pass() {
    let count = std::env::var("KIZO_SIM_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(SEEDS);
    let mut faults = 0;
    for seed in 1..=count {
        let report = run(seed, options());
        assert_passes(&report);
        faults += report.faults.values().sum::<u64>();
    }
    assert!(faults > 0, "the seeds injected faults");
}

#[test]
fn the_seed_of_this_commit_passes() {
    let seed = std::env::var("KIZO_SIM_SEED")
        .ok()
        .and_then(|text| u64::from_str_radix(text.trim(), 16).ok())
        .unwrap_or(0x5eed);
    eprintln!("commit seed: {seed}");
    assert_passes(&run(seed, options()));
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 77, 1_000_003] {
        let first = run(seed, options());
        let second = run(seed, options());
        assert_eq!(first.hash, second.hash, "seed {seed}");
        assert_eq!(
            (first.steps, first.rounds, first.events),
            (second.steps, second.rounds, second.events)
        );
        assert_eq!(first.faults, second.faults);
    }
    assert_ne!(run(3, options()).hash, run(4, options()).hash);
}

/// A broken build is caught within a few seeds: the checks can fail.
#[test]
fn broken_builds_are_caught() {
    for mutation in [
        Mutation::DropRecord,
        Mutation::AckBeforeDurable,
        Mutation::ReleaseOnUnknown,
        Mutation::SkipLogTail,
        Mutation::EvictBeforeStored,
    ] {
        let caught = (1..=20).find(|&seed| {
            let options = Options {
                mutation: Some(mutation),
                ..options()
            };
            run(seed, options).failure.is_some()
        });
        assert!(caught.is_some(), "{mutation:?} went unnoticed for 20 seeds");
    }
}

/// The cluster: leases under pauses, crashes, leaves, stale views and lost answers, and
/// cross-partition transfers, over fixed seeds and this commit's.
#[test]
fn cluster_seeds_pass() {
    // A third of the world's seeds: a cluster seed costs about as much as a world seed.
    let count = std::env::var("KIZO_SIM_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(SEEDS / 3);
    let commit = std::env::var("KIZO_SIM_SEED")
        .ok()
        .and_then(|text| u64::from_str_radix(text.trim(), 16).ok())
        .unwrap_or(0x5eed);
    let (mut takeovers, mut fenced, mut posted, mut refused) = (0, 0, 0, 0);
    for seed in (1..=count).chain([commit]) {
        let report = kizo_sim::cluster::run_cluster(seed);
        assert!(
            report.violations.is_empty(),
            "cluster seed {seed}: {:?}\n{report:?}",
            report.violations
        );
        takeovers += report.takeovers;
        fenced += report.fenced_appends;
        posted += report.cross_posted;
        refused += report.cross_refused;
    }
    // The seeds reach the paths that matter.
    assert!(
        takeovers > 0 && fenced > 0,
        "takeovers {takeovers}, fenced {fenced}"
    );
    assert!(
        posted > 0 && refused > 0,
        "posted {posted}, refused {refused}"
    );
}
