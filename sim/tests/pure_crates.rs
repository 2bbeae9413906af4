//! The pure crates stay pure: none of them, and not the simulator that drives them, may depend
//! (directly or through another crate, in normal builds) on a crate that does I/O, runs an async
//! runtime or actors, or talks to a database or the network. `cargo tree` is asked, so a
//! forbidden crate that arrives through a new dependency's dependencies is caught too.

use std::process::Command;

/// The crates that decide, and the simulator that must run them without the machine's I/O.
const PURE: &[&str] = &[
    "kizo-ledger",
    "kizo-settlement",
    "kizo-cluster",
    "kizo-log-codec",
    "kizo-snapshot-format",
    "kizo-bank-model",
    "kizo-wallet",
    "kizo-webhooks",
    "kizo-binary",
    "kizo-avatar",
    "kizo-json-wire",
    "kizo-sim",
];

/// Crates that do I/O or carry it (runtimes, actors, databases, HTTP, metrics exporters, logging
/// subscribers, memory maps).
const FORBIDDEN: &[&str] = &[
    "tokio",
    "ractor",
    "sqlx",
    "axum",
    "hyper",
    "reqwest",
    "metrics",
    "tracing-subscriber",
    "memmap2",
    "mio",
    "kizo-engine",
    "kizo-persistence",
    "kizo-snapshots",
    "kizo-bank",
    "kizo-gateway",
];

/// The names of every crate `package` depends on in a normal build, itself included.
fn normal_dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let output = Command::new(cargo)
        .args(["tree", "--locked", "--edges", "normal", "--prefix", "none"])
        .args([
            "--format",
            "{p}",
            "--manifest-path",
            manifest,
            "--package",
            package,
        ])
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("cargo tree prints UTF-8")
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn pure_crates_depend_on_nothing_that_does_io() {
    let mut found = Vec::new();
    for package in PURE {
        let dependencies = normal_dependencies(package);
        assert!(
            dependencies.iter().any(|name| name == package),
            "cargo tree did not list {package} itself: {dependencies:?}"
        );
        for name in dependencies {
            if FORBIDDEN.contains(&name.as_str()) {
                found.push(format!("{package} depends on {name}"));
            }
        }
    }
    found.sort();
    found.dedup();
    assert!(
        found.is_empty(),
        "forbidden dependencies of pure crates (`cargo tree -p <crate> -e normal -i <dependency>` shows the path):\n{}",
        found.join("\n")
    );
}
