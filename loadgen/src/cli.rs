//! The command line: what to run, against what, with which thresholds; and the run itself,
//! with the progress line, the summary, the audit and `--compare`.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kizo_persistence::StoreConfig;
use serde::Serialize;

use crate::audit::{audit, Audit};
use crate::baseline::Rowlock;
use crate::http::Http;
use crate::scenario::{double_spend_check, run as run_plan, Load, Outcomes, Plan, Scenario};
use crate::stats::{table, Summary};
use crate::target::{Target, Unknown};

/// A load generator for Kizo with honest latency and a ledger audit after every run.
#[derive(Parser, Debug, Clone)]
#[command(name = "kizo-loadgen", version)]
pub struct Args {
    /// `http://HOST:PORT` (a running gateway), `engine` (in this process, no HTTP), or
    /// `pg-rowlock` (the row-locking PostgreSQL baseline).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    #[arg(long, value_enum, default_value = "transfers")]
    pub scenario: Scenario,
    /// Virtual users (closed loop), or workers that take due requests (open loop).
    #[arg(long, default_value_t = 64)]
    pub vus: usize,
    /// How long to send, e.g. 10s, 500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Open loop: requests per second, due at fixed times; latency counts from then.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Accounts for `transfers`, `ledger-batch`, `login-storm` and `double-spend`'s sinks.
    #[arg(long, default_value_t = 10_000)]
    pub accounts: usize,
    /// Zipf exponent of the choice of accounts (0: uniform).
    #[arg(long, default_value_t = 0.0)]
    pub skew: f64,
    /// Send every credit to one of this many hot accounts (0: off).
    #[arg(long, default_value_t = 0)]
    pub hot: usize,
    /// Transfers per request of `ledger-batch` (at most 8189).
    #[arg(long, default_value_t = 8189)]
    pub batch: usize,
    /// How ledger transfers travel to an HTTP target: `json` or `binary` (docs/binary.md).
    #[arg(long, value_enum, default_value = "json")]
    pub wire: crate::http::Wire,
    /// `double-spend`: how many spends the source account's balance pays for.
    #[arg(long, default_value_t = 100)]
    pub funded: u64,
    /// `wallet`: pause between a user's iterations, e.g. 1s.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub think: Duration,
    /// `login-storm`: users that log in over and over (the rest send transfers).
    #[arg(long, default_value_t = 8)]
    pub login_vus: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The engine's shard count (for `engine`, and for the cross-shard share reported).
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// The gateway's API key (ledger API: accounts, funding, the audit).
    #[arg(long, env = "KIZO_API_KEY", default_value = "")]
    pub api_key: String,
    /// PostgreSQL for `pg-rowlock` and for `engine` (without it, `engine` uses an embedded
    /// store in a temporary folder).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Connections of the `pg-rowlock` pool.
    #[arg(long, default_value_t = 8)]
    pub pool: u32,
    /// Print the result as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Write a self-contained HTML report here.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
    /// Fail the run if any request kind's p99 is above this, e.g. 20ms.
    #[arg(long, value_parser = parse_duration)]
    pub max_p99: Option<Duration>,
    /// Fail the run if any request kind's success rate (percent) is below this, e.g. 100.
    #[arg(long, value_parser = parse_percent)]
    pub min_success: Option<f64>,
    /// Run the same scenario on this baseline after the target, and print the ratios.
    #[arg(long, value_parser = ["pg-rowlock"])]
    pub compare: Option<String>,
    /// The generator's threads (at most 1024). Default: 1 for an HTTP target, whose server
    /// shares the machine (one thread drives thousands of requests per second, and a second
    /// one mostly sleeps and wakes); one per core for `engine` and `pg-rowlock`.
    #[arg(long)]
    pub threads: Option<usize>,
    /// A failover run instead of a scenario: wallet payments across these cluster nodes
    /// (base URLs, comma-separated) for --duration with --vus clients, then an audit; prints
    /// one `failover:` line (see loadgen/cluster.sh).
    #[arg(long, value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// With --cluster: SIGKILL this process half way through (`PID@URL`: the node's process
    /// and the base URL it serves).
    #[arg(long, value_parser = parse_kill)]
    pub kill: Option<(u32, String)>,
    /// After an HTTP run: read the gateway's change events back from this NATS server
    /// (`nats://host:port`) and audit them against the run; prints one `cdc:` line.
    #[arg(long)]
    pub cdc_audit: Option<String>,
    /// The JetStream stream --cdc-audit reads (the gateway's --nats-stream).
    #[arg(long, default_value = "KIZO")]
    pub cdc_stream: String,
    /// The admin API key (`/v1/admin/cluster`), for --cluster.
    #[arg(long, env = "KIZO_ADMIN_API_KEY", default_value = "")]
    pub admin_key: String,
}

/// A flag's value that cannot be read.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum FlagError {
    #[error("`{0}`: PID@URL")]
    Kill(String),
    #[error("`{0}`: a process id")]
    Pid(String),
    #[error("`{0}`: {1}")]
    Duration(String, String),
    #[error("`{0}`: at most 24 hours")]
    DurationTooLong(String),
    #[error("`{0}`: a percentage, 0 to 100")]
    Percent(String),
}

fn parse_kill(text: &str) -> Result<(u32, String), FlagError> {
    let (pid, url) = text
        .split_once('@')
        .ok_or_else(|| FlagError::Kill(text.into()))?;
    let pid = pid.parse().map_err(|_| FlagError::Pid(pid.into()))?;
    Ok((pid, url.to_string()))
}

/// A duration as `humantime` reads it (`250ms`, `10s`, `2m`, `1m 30s`), at most 24 hours.
pub fn parse_duration(text: &str) -> Result<Duration, FlagError> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|error| FlagError::Duration(text.into(), error.to_string()))?;
    if duration > Duration::from_secs(86_400) {
        return Err(FlagError::DurationTooLong(text.into()));
    }
    Ok(duration)
}

fn parse_percent(text: &str) -> Result<f64, FlagError> {
    let value: f64 = text
        .trim_end_matches('%')
        .parse()
        .map_err(|_| FlagError::Percent(text.into()))?;
    if (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(FlagError::Percent(text.into()))
    }
}

/// One run's result, as `--json` prints it.
#[derive(Serialize)]
pub struct RunResult {
    pub target: String,
    pub scenario: String,
    pub seconds: f64,
    pub transfers_per_second: f64,
    pub cross_shard_share: f64,
    pub requests: Vec<Summary>,
    pub audit: Audit,
    /// The change events' audit, with --cdc-audit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cdc: Option<crate::cdc_audit::CdcAudit>,
    /// Thresholds missed and scenario checks failed; empty when the run passed.
    pub failures: Vec<String>,
}

#[derive(Serialize)]
struct Comparison {
    kizo: RunResult,
    baseline: RunResult,
    throughput_ratio: f64,
    p99_ratio: f64,
}

impl Args {
    /// The generator's threads: `--threads`, or the target's default.
    pub fn threads(&self) -> Result<usize, Unknown> {
        match self.threads {
            Some(threads @ 1..=1024) => Ok(threads),
            Some(_) => Err(Unknown::new("args", "--threads: 1 to 1024")),
            None if self.target.starts_with("http://") => Ok(1),
            None => Ok(std::thread::available_parallelism().map_or(1, usize::from)),
        }
    }

    fn plan(&self) -> Result<Plan, Unknown> {
        if self.vus == 0 || self.vus > 100_000 {
            return Err(Unknown::new("args", "--vus: 1 to 100000"));
        }
        if !(1..=kizo_engine::BATCH_EVENTS_MAX).contains(&self.batch) {
            return Err(Unknown::new("args", "--batch: 1 to 8189"));
        }
        if !(2..=10_000_000).contains(&self.accounts) {
            return Err(Unknown::new("args", "--accounts: 2 to 10,000,000"));
        }
        if !(1..=256).contains(&self.shards) {
            return Err(Unknown::new("args", "--shards: 1 to 256"));
        }
        if self.hot >= self.accounts {
            return Err(Unknown::new("args", "--hot: fewer than --accounts"));
        }
        if self.scenario == Scenario::LoginStorm && self.login_vus >= self.vus {
            return Err(Unknown::new("args", "--login-vus: fewer than --vus"));
        }
        let load = match self.rate {
            Some(rate) if rate > 0.0 && rate <= 10_000_000.0 => Load::Open {
                rate,
                vus: self.vus,
            },
            Some(_) => return Err(Unknown::new("args", "--rate: above 0, at most 10,000,000")),
            None => Load::Closed { vus: self.vus },
        };
        Ok(Plan {
            scenario: self.scenario,
            load,
            duration: self.duration,
            accounts: self.accounts,
            skew: self.skew,
            hot: self.hot,
            batch: self.batch,
            funded: self.funded,
            think: self.think,
            seed: self.seed,
            shards: self.shards,
            login_vus: self.login_vus,
        })
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// Where an in-process engine keeps its log for one run; removed after it.
enum Scratch {
    None,
    /// The embedded store's folder (removed when dropped).
    Dir(#[allow(dead_code)] tempfile::TempDir),
    /// A PostgreSQL schema of its own.
    Schema {
        url: String,
        name: String,
    },
}

impl Scratch {
    async fn remove(self) {
        if let Scratch::Schema { url, name } = self {
            if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .execute(&pool)
                    .await;
                pool.close().await;
            }
        }
    }
}

/// Opens `target` (`http://...`, `engine` or `pg-rowlock`), with the scratch store to remove
/// after the run.
async fn open(args: &Args, target: &str) -> Result<(Arc<Target>, Option<Http>, Scratch), Unknown> {
    match target {
        "engine" => {
            let (store, scratch) = match &args.database_url {
                Some(url) => {
                    let name = unique("loadgen_engine");
                    let store = StoreConfig::Postgres {
                        url: url.clone(),
                        schema: Some(name.clone()),
                    };
                    let scratch = Scratch::Schema {
                        url: url.clone(),
                        name,
                    };
                    (store, scratch)
                }
                None => {
                    let dir = tempfile::tempdir().map_err(|e| Unknown::new("store", e))?;
                    let store = StoreConfig::Embedded {
                        dir: dir.path().to_path_buf(),
                    };
                    (store, Scratch::Dir(dir))
                }
            };
            match Target::engine(&store, args.shards).await {
                Ok(engine) => Ok((Arc::new(engine), None, scratch)),
                Err(error) => {
                    scratch.remove().await;
                    Err(error)
                }
            }
        }
        "pg-rowlock" => {
            let url = args
                .database_url
                .as_deref()
                .ok_or_else(|| Unknown::new("args", "pg-rowlock needs --database-url"))?;
            let rowlock = Rowlock::open(url, &unique("loadgen_rowlock"), args.pool).await?;
            Ok((Arc::new(Target::Rowlock(rowlock)), None, Scratch::None))
        }
        // Plain HTTP only: the generator speaks no TLS (put it beside the gateway, not behind
        // a TLS proxy, whose cost it would measure).
        url if url.starts_with("http://") => {
            if args.api_key.is_empty() {
                return Err(Unknown::new(
                    "args",
                    "an HTTP target needs --api-key (or KIZO_API_KEY): the run creates and audits accounts through the ledger API",
                ));
            }
            let http = Http::new(url, &args.api_key, args.wire)?;
            Ok((
                Arc::new(Target::Http(http.clone())),
                Some(http),
                Scratch::None,
            ))
        }
        other => Err(Unknown::new(
            "args",
            format!("--target {other}: http://..., engine or pg-rowlock"),
        )),
    }
}

/// Runs `args` against `target_name`, printing progress and the table on stderr.
pub async fn run_one(args: &Args, target_name: &str) -> Result<(RunResult, Outcomes), Unknown> {
    let plan = args.plan()?;
    let (target, http, scratch) = open(args, target_name).await?;
    if http.is_none() && matches!(plan.scenario, Scenario::Wallet | Scenario::LoginStorm) {
        target.stop().await;
        scratch.remove().await;
        return Err(Unknown::new(
            "args",
            "the wallet and login-storm scenarios run over HTTP only",
        ));
    }
    let progress = Arc::new(std::sync::Mutex::new(None::<tokio::task::JoinHandle<()>>));
    let progress_slot = progress.clone();
    let outcome = run_plan(target.clone(), http, plan.clone(), move |live| {
        let handle = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.tick().await;
            loop {
                every.tick().await;
                let requests = live.requests.load(std::sync::atomic::Ordering::Relaxed);
                let errors = live.errors.load(std::sync::atomic::Ordering::Relaxed);
                let seconds = started.elapsed().as_secs_f64();
                eprint!(
                    "\r{seconds:>6.1} s  {:>9.0} requests/s  {errors} errors  p99 so far {:.2} ms   ",
                    requests as f64 / seconds,
                    live.p99_ms()
                );
                let _ = std::io::stderr().flush();
            }
        });
        *progress_slot.lock().expect("not poisoned") = Some(handle);
    })
    .await;
    if let Some(handle) = progress.lock().expect("not poisoned").take() {
        handle.abort();
    }
    eprintln!();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            target.stop().await;
            scratch.remove().await;
            return Err(error);
        }
    };
    let audited = audit(&target, outcome.system, &outcome.wallets, &outcome.book).await;
    let cdc = match (&args.cdc_audit, target_name.starts_with("http://")) {
        (Some(nats), true) => {
            crate::cdc_audit::wait_caught_up(target_name).await;
            let accounts = outcome
                .wallets
                .iter()
                .copied()
                .chain([outcome.system])
                .collect();
            let acknowledged: Vec<u128> = outcome.book.acknowledged.iter().map(|m| m.id).collect();
            Some(crate::cdc_audit::audit(nats, &args.cdc_stream, &accounts, &acknowledged).await)
        }
        (Some(_), false) => {
            return Err(Unknown::new("args", "--cdc-audit needs an HTTP target"));
        }
        (None, _) => None,
    };
    target.stop().await;
    scratch.remove().await;
    let audited = audited?;
    let requests = outcome.recorder.summaries(outcome.elapsed);
    let mut failures: Vec<String> = audited
        .failures
        .iter()
        .map(|f| format!("audit: {f}"))
        .collect();
    failures.extend(double_spend_check(&plan, &outcome));
    let cdc = match cdc {
        Some(Ok(cdc)) => {
            println!("{}", cdc.line());
            if !cdc.passed() {
                failures.push(cdc.line());
            }
            Some(cdc)
        }
        Some(Err(error)) => {
            failures.push(format!("cdc audit: {error}"));
            None
        }
        None => None,
    };
    for s in &requests {
        if let Some(max) = args.max_p99 {
            if s.p99_ms > max.as_secs_f64() * 1000.0 {
                failures.push(format!(
                    "{}: p99 {:.2} ms is over --max-p99 {:.2} ms",
                    s.kind,
                    s.p99_ms,
                    max.as_secs_f64() * 1000.0
                ));
            }
        }
        if let Some(min) = args.min_success {
            if s.success < min {
                failures.push(format!(
                    "{}: success {:.2}% is under --min-success {min}%",
                    s.kind, s.success
                ));
            }
        }
    }
    let result = RunResult {
        target: target.name().to_string(),
        scenario: format!("{:?}", plan.scenario),
        seconds: outcome.elapsed.as_secs_f64(),
        transfers_per_second: outcome.transfers_per_second,
        cross_shard_share: outcome.cross_shard,
        requests,
        audit: audited,
        cdc,
        failures,
    };
    eprintln!(
        "{} · {} · {:.1} s · {:.0} transfers/s · cross-shard {:.0}%",
        result.target,
        result.scenario,
        result.seconds,
        result.transfers_per_second,
        result.cross_shard_share * 100.0
    );
    eprint!("{}", table(&result.requests));
    eprintln!(
        "audit: {} accounts, {} acknowledged transfers, {} unanswered found applied, {} unanswered not applied: {}",
        result.audit.accounts,
        result.audit.acknowledged,
        result.audit.unknown_applied,
        result.audit.unknown_not_applied,
        if result.audit.passed() { "passed" } else { "FAILED" }
    );
    for failure in &result.failures {
        eprintln!("FAILED: {failure}");
    }
    Ok((result, outcome))
}

/// The whole invocation; `Ok(false)` when a run failed its audit, a check or a threshold.
pub async fn run(args: Args) -> Result<bool, Unknown> {
    if !args.cluster.is_empty() {
        let keys = crate::failover::Keys {
            api: args.api_key.clone(),
            admin: args.admin_key.clone(),
        };
        let (line, passed) = crate::failover::run(
            &args.cluster,
            &keys,
            args.vus,
            args.duration,
            args.kill.clone(),
        )
        .await
        .map_err(|e| Unknown::new("failover", e))?;
        println!("{line}");
        return Ok(passed);
    }
    let (kizo, outcome) = run_one(&args, &args.target).await?;
    let mut passed = kizo.failures.is_empty();
    if let Some(path) = &args.report {
        let notes = vec![
            format!(
                "{} · {} · {:.1} s · {:.0} transfers/s · cross-shard {:.0}%",
                kizo.target,
                kizo.scenario,
                kizo.seconds,
                kizo.transfers_per_second,
                kizo.cross_shard_share * 100.0
            ),
            format!(
                "audit: {}",
                if kizo.audit.passed() {
                    "passed".to_string()
                } else {
                    kizo.audit.failures.join("; ")
                }
            ),
        ];
        let page = crate::report::html(
            &format!("kizo-loadgen: {}", kizo.scenario),
            &kizo.requests,
            &outcome.recorder,
            &notes,
        );
        std::fs::write(path, page).map_err(|e| Unknown::new("report", e))?;
        eprintln!("report: {}", path.display());
    }
    let Some(baseline_name) = &args.compare else {
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&kizo).expect("serializes")
            );
        }
        return Ok(passed);
    };
    let (baseline, _) = run_one(&args, baseline_name).await?;
    passed &= baseline.failures.is_empty();
    let main_kind = |r: &RunResult| {
        r.requests
            .iter()
            .find(|s| matches!(s.kind.as_str(), "transfer" | "batch" | "spend"))
            .map_or(0.0, |s| s.p99_ms)
    };
    let comparison = Comparison {
        throughput_ratio: kizo.transfers_per_second / baseline.transfers_per_second.max(1e-9),
        p99_ratio: main_kind(&kizo) / main_kind(&baseline).max(1e-9),
        kizo,
        baseline,
    };
    eprintln!(
        "kizo vs {baseline_name}: {:.1}× the throughput ({:.0} vs {:.0} transfers/s), p99 {:.2} vs {:.2} ms ({:.2}×)",
        comparison.throughput_ratio,
        comparison.kizo.transfers_per_second,
        comparison.baseline.transfers_per_second,
        main_kind(&comparison.kizo),
        main_kind(&comparison.baseline),
        comparison.p99_ratio
    );
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&comparison).expect("serializes")
        );
    }
    Ok(passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_target_gets_one_thread_unless_told_otherwise() {
        let threads = |argv: &[&str]| {
            Args::try_parse_from([&["kizo-loadgen"], argv].concat())
                .unwrap()
                .threads()
        };
        assert_eq!(threads(&["--target", "http://127.0.0.1:8080"]).unwrap(), 1);
        assert_eq!(
            threads(&["--target", "http://127.0.0.1:8080", "--threads", "3"]).unwrap(),
            3
        );
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(threads(&["--target", "engine"]).unwrap(), cores);
        assert_eq!(threads(&["--target", "pg-rowlock"]).unwrap(), cores);
        for refused in ["0", "1025"] {
            assert_eq!(
                threads(&["--threads", refused]).unwrap_err().code,
                "args",
                "{refused}"
            );
        }
    }

    #[test]
    fn durations_and_percentages_parse_with_their_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("3").is_err() && parse_duration("abc").is_err());
        assert!(parse_duration("100000s").is_err());
        assert_eq!(parse_percent("100%"), Ok(100.0));
        assert_eq!(parse_percent("99.5"), Ok(99.5));
        assert!(parse_percent("101").is_err());
    }
}
