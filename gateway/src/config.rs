//! Configuration, by flags or environment (`--help` lists every one), and the secrets it
//! resolves: given, or in development generated once and kept in the data folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use kizo_persistence::StoreConfig;

use crate::serve::HttpSettings;
use crate::server::ServerConfig;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "kizo-gateway",
    version,
    about = "Kizo's HTTP API: the engine on its store."
)]
pub struct Args {
    /// Address to serve HTTP on.
    #[arg(long, env = "KIZO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// PostgreSQL URL of the store (postgres://user@host:5432/db). Without it, the embedded
    /// store in --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// PostgreSQL schema that holds every table (created if missing; letters, digits and `_`).
    /// Default: the database's own search path.
    #[arg(long, env = "KIZO_PG_SCHEMA")]
    pub pg_schema: Option<String>,
    /// Folder of the embedded store, and of the secrets generated in development.
    #[arg(long, env = "KIZO_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Number of shards (1 to 256). Default: one per core. May change between restarts: the log
    /// and snapshots do not depend on it.
    #[arg(long, env = "KIZO_SHARDS")]
    pub shards: Option<usize>,
    /// Recent transfers the shards keep in memory, in all, besides pending ones: a count
    /// (262144) or a size (64MiB, 1GiB; about 144 bytes a transfer). Older transfers are
    /// looked up in the read models once the projector has written them; nothing else the
    /// engine holds grows with history.
    #[arg(long, env = "KIZO_TRANSFER_WINDOW", default_value = "262144", value_parser = parse_window)]
    pub transfer_window: usize,
    /// Threads that serve requests and run the engine's actors (1 to 1024). Default: one per
    /// core. On 2 cores shared with PostgreSQL and the client, one thread left a sixth of the
    /// machine idle on one host and served more on another (docs/benchmarks.md, the wallet
    /// API, changes 8 and 13): measure before lowering it.
    #[arg(long, env = "KIZO_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Key of the batch ledger API (at least 32 characters). In development, generated and
    /// kept in <data-dir>/api-key when not given.
    #[arg(long, env = "KIZO_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// A file that holds --api-key (so that it is not on the command line, where `ps` shows it).
    #[arg(long, env = "KIZO_API_KEY_FILE", conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,
    /// Secret that signs access tokens (at least 32 characters). In development, generated and
    /// kept in <data-dir>/jwt-secret when not given.
    #[arg(long, env = "KIZO_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// A file that holds --jwt-secret (so that it is not on the command line, where `ps` shows it).
    #[arg(long, env = "KIZO_JWT_SECRET_FILE", conflicts_with = "jwt_secret")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Pepper mixed into every password hash (at least 32 characters). In development,
    /// generated and kept in <data-dir>/password-pepper when not given. Never change it: every
    /// password would stop matching.
    #[arg(long, env = "KIZO_PASSWORD_PEPPER", hide_env_values = true)]
    pub password_pepper: Option<String>,
    /// A file that holds --password-pepper (so that it is not on the command line, where `ps` shows it).
    #[arg(
        long,
        env = "KIZO_PASSWORD_PEPPER_FILE",
        conflicts_with = "password_pepper"
    )]
    pub password_pepper_file: Option<PathBuf>,
    /// Currency of the wallets (ISO 4217: USD, EUR, GBP, JPY, CHF); its numeric code is the
    /// ledger. Fixed for the life of the data.
    #[arg(long, env = "KIZO_CURRENCY", default_value = "USD")]
    pub currency: String,
    /// Signup, login and refresh attempts allowed per minute from one client address.
    #[arg(long, env = "KIZO_AUTH_RATE_PER_ADDRESS", default_value_t = 60)]
    pub auth_rate_per_address: u32,
    /// History, dashboard, search and CSV reads allowed per minute to one user (a CSV export
    /// counts as 20); past it, 429 with Retry-After for that user only.
    #[arg(long, env = "KIZO_READS_PER_USER", default_value_t = 600)]
    pub reads_per_user: u32,
    /// Proxies (addresses or CIDR networks, comma-separated) whose `X-Forwarded-For` names
    /// the client for rate limits; from anybody else the header is ignored.
    #[arg(long, env = "KIZO_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_network)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Signup and login attempts allowed per minute for one email from one client address.
    #[arg(long, env = "KIZO_AUTH_RATE_PER_EMAIL", default_value_t = 10)]
    pub auth_rate_per_email: u32,
    /// Key of the admin API (reconciliation; at least 32 characters). In development,
    /// generated and kept in <data-dir>/admin-api-key when not given.
    #[arg(long, env = "KIZO_ADMIN_API_KEY", hide_env_values = true)]
    pub admin_api_key: Option<String>,
    /// A file that holds --admin-api-key (so that it is not on the command line, where `ps` shows it).
    #[arg(
        long,
        env = "KIZO_ADMIN_API_KEY_FILE",
        conflicts_with = "admin_api_key"
    )]
    pub admin_api_key_file: Option<PathBuf>,
    /// The bank's base URL (a `kizo-bank`). Without it, the same bank runs in this process,
    /// without faults, keeping what it did in <data-dir>/bank.jsonl.
    #[arg(long, env = "KIZO_BANK_URL")]
    pub bank_url: Option<String>,
    /// PEM certificates to trust for an `https://` bank on a private CA (besides the public
    /// roots).
    #[arg(long, env = "KIZO_BANK_CA_FILE")]
    pub bank_ca_file: Option<PathBuf>,
    /// Token sent to the bank, and expected on its callbacks.
    #[arg(long, env = "KIZO_BANK_TOKEN", hide_env_values = true)]
    pub bank_token: Option<String>,
    /// A file that holds --bank-token (so that it is not on the command line, where `ps` shows it).
    #[arg(long, env = "KIZO_BANK_TOKEN_FILE", conflicts_with = "bank_token")]
    pub bank_token_file: Option<PathBuf>,
    /// Settlements driven at once (bank calls in flight at most), 1 to 1024.
    #[arg(long, env = "KIZO_SETTLEMENT_WORKERS", default_value_t = 16)]
    pub settlement_workers: usize,
    /// Deposits and withdrawals one user may have under way at once (1 to 10000); past it,
    /// 429 too_many_settlements.
    #[arg(long, env = "KIZO_SETTLEMENTS_PER_USER", default_value_t = crate::money::SETTLEMENTS_UNFINISHED_PER_USER)]
    pub settlements_per_user: u32,
    /// Bank calls per settlement before an unknown outcome becomes needs_review (1 to 100).
    #[arg(long, env = "KIZO_SETTLEMENT_ATTEMPTS", default_value_t = 8)]
    pub settlement_attempts: u32,
    /// How long one bank call may take, in milliseconds, before its outcome counts as unknown.
    #[arg(long, env = "KIZO_SETTLEMENT_TIMEOUT_MS", default_value_t = 3_000)]
    pub settlement_timeout_ms: u64,
    /// The first retry's delay in milliseconds; it doubles with each retry, up to 60 s.
    #[arg(long, env = "KIZO_SETTLEMENT_BACKOFF_MS", default_value_t = 1_000)]
    pub settlement_backoff_ms: u64,
    /// Seconds between scheduled reconciliations.
    #[arg(long, env = "KIZO_RECONCILE_EVERY_SECS", default_value_t = 600)]
    pub reconcile_every_secs: u64,
    /// Seconds after which a settlement not final and not updated is stuck (re-driven).
    #[arg(long, env = "KIZO_SETTLEMENT_STUCK_SECS", default_value_t = 900)]
    pub settlement_stuck_secs: u64,
    /// The snapshots' folder (default: <data-dir>/snapshots). Start-up loads the newest valid
    /// snapshot there and replays only the log after it.
    #[arg(long, env = "KIZO_SNAPSHOT_DIR")]
    pub snapshot_dir: Option<PathBuf>,
    /// Take no snapshots, and start from the log alone.
    #[arg(long, env = "KIZO_NO_SNAPSHOTS")]
    pub no_snapshots: bool,
    /// A snapshot once this many records were committed since the last one...
    #[arg(long, env = "KIZO_SNAPSHOT_EVERY_RECORDS", default_value_t = 1_000_000)]
    pub snapshot_every_records: u64,
    /// ...or once this many seconds passed with at least one new commit.
    #[arg(long, env = "KIZO_SNAPSHOT_EVERY_SECS", default_value_t = 600)]
    pub snapshot_every_secs: u64,
    /// Snapshots kept (the oldest are removed).
    #[arg(long, env = "KIZO_SNAPSHOTS_KEPT", default_value_t = 3)]
    pub snapshots_kept: usize,
    /// A request's headers must arrive whole within this time of its connection opening or of
    /// the previous answer on it; an idle keep-alive connection is closed after it too.
    #[arg(long, env = "KIZO_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// A request's body must arrive whole within this time of its headers (408 otherwise).
    #[arg(long, env = "KIZO_BODY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,
    /// Connections served at once; those past it are closed as soon as they are accepted.
    #[arg(long, env = "KIZO_CONNECTIONS_MAX", default_value_t = 10_000)]
    pub connections_max: usize,
    /// On SIGTERM or SIGINT, how long requests in flight get to finish.
    #[arg(long, env = "KIZO_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Where Prometheus scrapes `/metrics`: a listener of its own, loopback by default, so
    /// that the public port does not show it; `off` for none.
    #[arg(long, env = "KIZO_METRICS_LISTEN", default_value = "127.0.0.1:9464", value_parser = parse_metrics_listen)]
    pub metrics_listen: MetricsListen,
    /// Also serve `/metrics` on the main listener, to whoever sends
    /// `Authorization: Bearer <this token>` (at least 32 characters).
    #[arg(long, env = "KIZO_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// A file that holds --metrics-token (so that it is not on the command line).
    #[arg(
        long,
        env = "KIZO_METRICS_TOKEN_FILE",
        conflicts_with = "metrics_token"
    )]
    pub metrics_token_file: Option<PathBuf>,
    /// The SMTP server that sends mail (verification, password reset): `smtp://host:port`
    /// (plain; `?tls=required` for STARTTLS) or `smtps://host:port`, with `user:password@` if
    /// it asks. Without it (development only), mail is kept as files in <data-dir>/mail.
    #[arg(long, env = "KIZO_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// A file that holds --smtp-url (it may hold a password).
    #[arg(long, env = "KIZO_SMTP_URL_FILE", conflicts_with = "smtp_url")]
    pub smtp_url_file: Option<PathBuf>,
    /// The sender of Kizo's mail.
    #[arg(
        long,
        env = "KIZO_MAIL_FROM",
        default_value = "Kizo <no-reply@kizo.localhost>"
    )]
    pub mail_from: String,
    /// Where people reach Kizo's web app; links in mail point there.
    #[arg(long, env = "KIZO_PUBLIC_URL", default_value = "http://127.0.0.1:8080")]
    pub public_url: String,
    /// Production mode: refuse to start without every secret given.
    #[arg(long, env = "KIZO_PRODUCTION")]
    pub production: bool,
    /// Write logs as JSON lines.
    #[arg(long, env = "KIZO_LOG_JSON")]
    pub json_logs: bool,
    /// Run as a node of a cluster, with this id (letters, digits, `-`, `_`, `.`; unique in
    /// the cluster). Needs PostgreSQL: nodes share its leases, logs and read models. Without
    /// it, one node serves every account.
    #[arg(long, env = "KIZO_NODE_ID")]
    pub node_id: Option<String>,
    /// Partitions of the account space (1 to 4096), fixed when the cluster's data is created:
    /// every node must give the same.
    #[arg(long, env = "KIZO_PARTITIONS", default_value_t = 1)]
    pub partitions: u32,
    /// Where the other nodes reach this one (`host:port`). Default: --listen, unless it is
    /// a wildcard address.
    #[arg(long, env = "KIZO_ADVERTISE")]
    pub advertise: Option<String>,
    /// How long a partition's lease lasts without renewal: how long a dead node's partitions
    /// wait before another takes them.
    #[arg(long, env = "KIZO_LEASE_LENGTH", default_value = "5s", value_parser = humantime::parse_duration)]
    pub lease_length: Duration,
    /// How often a node renews its leases (at most a third of --lease-length).
    #[arg(long, env = "KIZO_LEASE_RENEW_EVERY", default_value = "1s", value_parser = humantime::parse_duration)]
    pub lease_renew_every: Duration,
    /// How long a wallet payment between partitions is waited for before it is answered 202
    /// (it goes on; `GET /v1/transfers/{id}` says where it stands).
    #[arg(long, env = "KIZO_PAY_BOUND", default_value = "2s", value_parser = humantime::parse_duration)]
    pub pay_bound: Duration,
    /// Partitions whose log and read models live on another PostgreSQL database (storage
    /// that grows with the cluster): `FIRST-LAST=URL` or `N=URL`, repeated or comma-separated
    /// (`--pg-schema` applies to each). Fixed with the data, like --partitions: every node
    /// must give the same. The others stay on --database-url.
    #[arg(long, env = "KIZO_PARTITION_DATABASES", value_delimiter = ',', value_parser = parse_partition_database, hide_env_values = true)]
    pub partition_database: Vec<(u32, u32, String)>,
    /// Publish every committed change as an event to this NATS server's JetStream
    /// (`nats://host:port`); without it, no events are published.
    #[arg(long, env = "KIZO_NATS_URL")]
    pub nats_url: Option<String>,
    /// The JetStream stream events go to (created when missing).
    #[arg(long, env = "KIZO_NATS_STREAM", default_value = crate::cdc::CdcConfig::STREAM, value_parser = parse_nats_token)]
    pub nats_stream: String,
    /// The first token of every event's subject (`<prefix>.<ledger>.<kind>`).
    #[arg(long, env = "KIZO_NATS_SUBJECT_PREFIX", default_value = crate::cdc::CdcConfig::SUBJECT_PREFIX, value_parser = parse_nats_token)]
    pub nats_subject_prefix: String,
    /// How long the stream keeps an event.
    #[arg(long, env = "KIZO_NATS_MAX_AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub nats_max_age: Duration,
    /// How long JetStream remembers an event's id to drop a second copy: a publisher that
    /// resumes within it publishes nothing twice.
    #[arg(long, env = "KIZO_NATS_DUPLICATE_WINDOW", default_value = "2m", value_parser = humantime::parse_duration)]
    pub nats_duplicate_window: Duration,
    /// Webhook endpoints may be on this machine or a private network (a receiver beside the
    /// server, tests). Off: such addresses, and names that resolve to them, are refused.
    #[arg(long, env = "KIZO_WEBHOOKS_ALLOW_PRIVATE")]
    pub webhooks_allow_private: bool,
    /// The delays before a webhook delivery's attempts, comma-separated (the first is the first
    /// attempt's, usually 0); after the last fails, the delivery is parked for a replay. At
    /// most 16. The default is the Standard Webhooks schedule (about a day and a half).
    #[arg(long, env = "KIZO_WEBHOOK_RETRY_DELAYS", value_delimiter = ',', value_parser = humantime::parse_duration,
        default_value = "0s,5s,5m,30m,2h,5h,10h,10h")]
    pub webhook_retry_delays: Vec<Duration>,
    /// How long one webhook attempt waits for the endpoint's answer.
    #[arg(long, env = "KIZO_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub webhook_timeout: Duration,
    /// A cluster node's role: `node` holds partitions; `router` holds none, serves the API
    /// and forwards every ledger operation to the owner of its partition.
    #[arg(long, env = "KIZO_ROLE", value_enum, default_value = "node")]
    pub role: Role,
}

/// See [`Args::role`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Node,
    Router,
}

/// A stream name or subject token: 1 to 64 letters, digits, `-` or `_` (no dots, spaces or
/// wildcards, which NATS gives a meaning).
fn parse_nats_token(text: &str) -> Result<String, FlagError> {
    let valid = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(text.to_string())
    } else {
        Err(FlagError::NatsToken)
    }
}

/// Why a flag's value was refused (clap prints it after the flag's name).
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    #[error("1 to 64 letters, digits, '-' or '_'")]
    NatsToken,
    #[error("FIRST-LAST=URL or N=URL")]
    PartitionDatabase,
    #[error("`{0}`: a partition number")]
    PartitionNumber(String),
    #[error("`{0}`: the first partition is after the last")]
    PartitionRange(String),
}

/// `FIRST-LAST=URL` or `N=URL`.
fn parse_partition_database(text: &str) -> Result<(u32, u32, String), FlagError> {
    let (range, url) = text.split_once('=').ok_or(FlagError::PartitionDatabase)?;
    let number = |n: &str| {
        n.trim()
            .parse::<u32>()
            .map_err(|_| FlagError::PartitionNumber(n.to_string()))
    };
    let (first, last) = match range.split_once('-') {
        Some((first, last)) => (number(first)?, number(last)?),
        None => (number(range)?, number(range)?),
    };
    if first > last {
        return Err(FlagError::PartitionRange(range.to_string()));
    }
    Ok((first, last, url.trim().to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} must be at least {API_KEY_MIN} characters")]
    SecretTooShort(&'static str),
    #[error("production mode needs {0}")]
    MissingSecret(&'static str),
    #[error("production mode needs a real bank: --bank-url and --bank-token (the built-in bank approves every deposit)")]
    MockBankInProduction,
    #[error("production mode needs an SMTP server (--smtp-url): mail proves emails and resets passwords")]
    NoMailInProduction,
    #[error("{path} holds fewer than {API_KEY_MIN} characters; fix it or remove it (a secret on file is never replaced)")]
    SecretFileTooShort { path: PathBuf },
    #[error("unknown currency {0:?}; one of USD, EUR, GBP, JPY, CHF")]
    Currency(String),
    #[error("rate limits must be at least 1 per minute")]
    Rate,
    #[error("{path}: {source}")]
    Secret {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("settlement settings: {0}")]
    Settlement(&'static str),
    #[error("snapshot settings: {0}")]
    Snapshots(&'static str),
    #[error("HTTP settings: {0}")]
    Http(&'static str),
    #[error("--worker-threads must be between 1 and {WORKER_THREADS_MAX}")]
    WorkerThreads,
    #[error(
        "--shards must be between 1 and {}",
        kizo_engine::EngineConfig::SHARD_COUNT_MAX
    )]
    Shards,
    #[error("cluster settings: {0}")]
    Cluster(String),
    #[error("webhook settings: {0}")]
    Webhooks(String),
}

pub const API_KEY_MIN: usize = 32;

/// Why a `--transfer-window` is refused.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error("{0:?} is neither a count nor a size such as 64MiB")]
    NotANumber(String),
    #[error("unknown unit {0:?}; one of KiB, MiB, GiB")]
    Unit(String),
    #[error(
        "the window must hold 1 to {} transfers",
        kizo_engine::EngineConfig::TRANSFER_WINDOW_MAX
    )]
    OutOfRange,
}

/// `--transfer-window`: a count of transfers, or a size with a KiB, MiB or GiB suffix.
fn parse_window(text: &str) -> Result<usize, WindowError> {
    use kizo_engine::EngineConfig;
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: usize = number
        .parse()
        .map_err(|_| WindowError::NotANumber(text.to_string()))?;
    let count = match unit.trim() {
        "" => Some(number),
        unit => {
            let scale: usize = match unit {
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                _ => return Err(WindowError::Unit(unit.to_string())),
            };
            number
                .checked_mul(scale)
                .map(|bytes| bytes / EngineConfig::WINDOW_BYTES_PER_TRANSFER)
        }
    };
    match count {
        Some(count) if (1..=EngineConfig::TRANSFER_WINDOW_MAX).contains(&count) => Ok(count),
        _ => Err(WindowError::OutOfRange),
    }
}
pub const WORKER_THREADS_MAX: usize = 1024;

/// Why a `--trusted-proxies` entry is refused.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is neither an address nor a network such as 10.0.0.0/8")]
pub struct NetworkError(String);

/// `--trusted-proxies`: a network (`10.0.0.0/8`) or one address (`192.0.2.1`).
/// `--metrics-listen`: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsListen(pub Option<SocketAddr>);

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is neither an address (127.0.0.1:9464) nor `off`")]
pub struct MetricsListenError(String);

fn parse_metrics_listen(text: &str) -> Result<MetricsListen, MetricsListenError> {
    match text.trim() {
        "off" => Ok(MetricsListen(None)),
        addr => addr
            .parse()
            .map(|addr| MetricsListen(Some(addr)))
            .map_err(|_| MetricsListenError(text.to_string())),
    }
}

fn parse_network(text: &str) -> Result<ipnet::IpNet, NetworkError> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| NetworkError(text.to_string()))
}

/// The wallets' currency: its code and the ledger that holds it (ISO 4217 numeric).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Currency {
    pub code: String,
    pub ledger: u32,
}

impl Currency {
    pub fn parse(code: &str) -> Result<Currency, ConfigError> {
        let ledger = match code {
            "USD" => 840,
            "EUR" => 978,
            "GBP" => 826,
            "JPY" => 392,
            "CHF" => 756,
            other => return Err(ConfigError::Currency(other.to_string())),
        };
        Ok(Currency {
            code: code.to_string(),
            ledger,
        })
    }
}

impl Args {
    /// The runtime's worker threads: `--worker-threads`, or one per core.
    pub fn worker_threads(&self) -> Result<usize, ConfigError> {
        match self.worker_threads {
            Some(n) if (1..=WORKER_THREADS_MAX).contains(&n) => Ok(n),
            Some(_) => Err(ConfigError::WorkerThreads),
            None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
        }
    }

    pub fn server_config(&self) -> Result<ServerConfig, ConfigError> {
        let mut store =
            StoreConfig::from_settings(self.database_url.clone(), Some(self.data_dir.clone()));
        if let StoreConfig::Postgres { schema, .. } = &mut store {
            schema.clone_from(&self.pg_schema);
        }
        let shard_count = match self.shards {
            Some(n) if (1..=kizo_engine::EngineConfig::SHARD_COUNT_MAX).contains(&n) => n,
            Some(_) => return Err(ConfigError::Shards),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let currency = Currency::parse(&self.currency)?;
        Ok(ServerConfig {
            listen: self.listen,
            store,
            shard_count,
            transfer_window: self.transfer_window,
            api_key: self.secret(&self.api_key, &self.api_key_file, "KIZO_API_KEY", "api-key")?,
            jwt_secret: self.secret(
                &self.jwt_secret,
                &self.jwt_secret_file,
                "KIZO_JWT_SECRET",
                "jwt-secret",
            )?,
            password_pepper: self.secret(
                &self.password_pepper,
                &self.password_pepper_file,
                "KIZO_PASSWORD_PEPPER",
                "password-pepper",
            )?,
            currency,
            auth_rates: crate::limits::AuthRates {
                per_address: std::num::NonZeroU32::new(self.auth_rate_per_address)
                    .ok_or(ConfigError::Rate)?,
                per_email: std::num::NonZeroU32::new(self.auth_rate_per_email)
                    .ok_or(ConfigError::Rate)?,
                trusted_proxies: self.trusted_proxies.clone(),
                reads_per_user: std::num::NonZeroU32::new(self.reads_per_user)
                    .ok_or(ConfigError::Rate)?,
            },
            admin_api_key: self.secret(
                &self.admin_api_key,
                &self.admin_api_key_file,
                "KIZO_ADMIN_API_KEY",
                "admin-api-key",
            )?,
            bank: self.bank_settings()?,
            snapshots: self.snapshot_settings()?,
            http: self.http_settings()?,
            metrics: self.metrics_settings()?,
            mail: self.mail_settings()?,
            cluster: self.cluster_config()?,
            cdc: self.nats_url.clone().map(|url| crate::cdc::CdcConfig {
                url,
                stream: self.nats_stream.clone(),
                subject_prefix: self.nats_subject_prefix.clone(),
                max_age: self.nats_max_age,
                duplicate_window: self.nats_duplicate_window,
            }),
            webhooks: self.webhook_settings()?,
        })
    }

    fn webhook_settings(&self) -> Result<crate::webhooks::WebhookSettings, ConfigError> {
        let policy = kizo_webhooks::RetryPolicy {
            delays_ms: self
                .webhook_retry_delays
                .iter()
                .map(|delay| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
                .collect(),
            ..kizo_webhooks::RetryPolicy::default()
        };
        if !policy.is_valid() {
            return Err(ConfigError::Webhooks(format!(
                "--webhook-retry-delays: 1 to {} delays",
                kizo_webhooks::delivery::ATTEMPTS_MAX
            )));
        }
        if self.webhook_timeout.is_zero() || self.webhook_timeout > Duration::from_secs(60) {
            return Err(ConfigError::Webhooks(
                "--webhook-timeout: more than 0, at most 60s".into(),
            ));
        }
        Ok(crate::webhooks::WebhookSettings {
            allow_private: self.webhooks_allow_private,
            policy,
            timeout: self.webhook_timeout,
        })
    }

    fn cluster_config(&self) -> Result<Option<crate::server::ClusterConfig>, ConfigError> {
        let bad = |what: String| ConfigError::Cluster(what);
        let Some(node_id) = &self.node_id else {
            if self.role == Role::Router {
                return Err(bad(
                    "--role router needs --node-id (a cluster's member)".into()
                ));
            }
            if self.partitions != 1 {
                return Err(bad("--partitions needs --node-id (a cluster node)".into()));
            }
            return Ok(None);
        };
        if self.database_url.is_none() {
            return Err(bad(
                "a cluster needs PostgreSQL (--database-url): the embedded store serves one node"
                    .into(),
            ));
        }
        let node_id = kizo_cluster::NodeId::new(node_id).map_err(|e| bad(e.to_string()))?;
        let partitions =
            kizo_cluster::PartitionCount::new(self.partitions).map_err(|e| bad(e.to_string()))?;
        let policy = kizo_cluster::lease::LeasePolicy {
            length_ms: self.lease_length.as_millis() as u64,
            renew_every_ms: self.lease_renew_every.as_millis() as u64,
        };
        if !policy.is_valid() {
            return Err(bad(format!(
                "--lease-length must be at most {} s and --lease-renew-every at most a third of it",
                kizo_cluster::lease::LeasePolicy::LENGTH_MAX_MS / 1000
            )));
        }
        let advertise = match &self.advertise {
            Some(address) => Some(address.clone()),
            None if self.listen.ip().is_unspecified() => {
                return Err(bad(format!(
                    "--listen {} is a wildcard: say where the other nodes reach this one (--advertise host:port)",
                    self.listen
                )))
            }
            None => None,
        };
        if self.pay_bound.is_zero() || self.pay_bound > Duration::from_secs(60) {
            return Err(bad("--pay-bound must be between 1 ms and 60 s".into()));
        }
        let mut partition_databases = std::collections::BTreeMap::new();
        for (first, last, url) in &self.partition_database {
            if *last >= partitions.get() {
                return Err(bad(format!(
                    "--partition-database names partition {last}, past the {} there are",
                    partitions.get()
                )));
            }
            for partition in *first..=*last {
                let store = StoreConfig::Postgres {
                    url: url.clone(),
                    schema: self.pg_schema.clone(),
                };
                if partition_databases.insert(partition, store).is_some() {
                    return Err(bad(format!(
                        "--partition-database names partition {partition} twice"
                    )));
                }
            }
        }
        Ok(Some(crate::server::ClusterConfig {
            node_id,
            advertise,
            partitions,
            policy,
            pay_bound: self.pay_bound,
            partition_databases,
            router: self.role == Role::Router,
        }))
    }

    fn mail_settings(&self) -> Result<crate::mail::MailSettings, ConfigError> {
        let smtp_url = match (&self.smtp_url, &self.smtp_url_file) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(path)) => Some(read_secret(path)?),
            (None, None) => None,
        }
        .filter(|url| !url.trim().is_empty());
        if self.production && smtp_url.is_none() {
            // Without mail, nobody can prove an address or reset a password.
            return Err(ConfigError::NoMailInProduction);
        }
        Ok(crate::mail::MailSettings {
            smtp_url,
            from: self.mail_from.clone(),
            public_url: self.public_url.clone(),
            dir: Some(self.data_dir.join("mail")),
        })
    }

    fn metrics_settings(&self) -> Result<crate::server::MetricsSettings, ConfigError> {
        let token = match (&self.metrics_token, &self.metrics_token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => Some(read_secret(path)?),
            (None, None) => None,
        };
        if token.as_ref().is_some_and(|t| t.len() < API_KEY_MIN) {
            return Err(ConfigError::SecretTooShort("KIZO_METRICS_TOKEN"));
        }
        Ok(crate::server::MetricsSettings {
            listen: self.metrics_listen.0,
            token,
        })
    }

    fn http_settings(&self) -> Result<HttpSettings, ConfigError> {
        let timeouts = [self.header_timeout, self.body_timeout, self.drain_timeout];
        if timeouts
            .iter()
            .any(|t| t.is_zero() || *t > HttpSettings::TIMEOUT_MAX)
        {
            return Err(ConfigError::Http(
                "--header-timeout, --body-timeout and --drain-timeout must be above 0 and at most 1h",
            ));
        }
        if !(1..=HttpSettings::CONNECTIONS_MAX).contains(&self.connections_max) {
            return Err(ConfigError::Http(
                "--connections-max must be 1 to 1,048,576",
            ));
        }
        Ok(HttpSettings {
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            connections_max: self.connections_max,
            drain_timeout: self.drain_timeout,
        })
    }

    fn snapshot_settings(&self) -> Result<crate::server::SnapshotSettings, ConfigError> {
        if self.snapshot_every_records == 0 || self.snapshot_every_secs == 0 {
            return Err(ConfigError::Snapshots(
                "--snapshot-every-records and --snapshot-every-secs must be at least 1",
            ));
        }
        if !(1..=1000).contains(&self.snapshots_kept) {
            return Err(ConfigError::Snapshots("--snapshots-kept must be 1 to 1000"));
        }
        let dir = (!self.no_snapshots).then(|| {
            self.snapshot_dir
                .clone()
                .unwrap_or_else(|| self.data_dir.join("snapshots"))
        });
        Ok(crate::server::SnapshotSettings {
            dir,
            policy: kizo_snapshots::Policy {
                every_records: self.snapshot_every_records,
                every: std::time::Duration::from_secs(self.snapshot_every_secs),
                keep: self.snapshots_kept,
                ..kizo_snapshots::Policy::default()
            },
        })
    }

    fn bank_settings(&self) -> Result<crate::server::BankSettings, ConfigError> {
        use kizo_engine::settlement::Policy;
        use kizo_engine::settlement_actors::SettlementConfig;
        use std::time::Duration;
        if !(1..=1024).contains(&self.settlement_workers) {
            return Err(ConfigError::Settlement(
                "--settlement-workers must be 1 to 1024",
            ));
        }
        if !(1..=crate::money::SETTLEMENTS_UNFINISHED_PER_USER_MAX)
            .contains(&self.settlements_per_user)
        {
            return Err(ConfigError::Settlement(
                "--settlements-per-user must be 1 to 10000",
            ));
        }
        if !(1..=100).contains(&self.settlement_attempts) {
            return Err(ConfigError::Settlement(
                "--settlement-attempts must be 1 to 100",
            ));
        }
        if !(1..=600_000).contains(&self.settlement_timeout_ms)
            || !(1..=60_000).contains(&self.settlement_backoff_ms)
        {
            return Err(ConfigError::Settlement(
                "--settlement-timeout-ms must be 1 to 600000 and --settlement-backoff-ms 1 to 60000",
            ));
        }
        if self.reconcile_every_secs == 0 || self.settlement_stuck_secs == 0 {
            return Err(ConfigError::Settlement(
                "--reconcile-every-secs and --settlement-stuck-secs must be at least 1",
            ));
        }
        let url = self.bank_url.clone().filter(|url| !url.trim().is_empty());
        let token = match (&self.bank_token, &self.bank_token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => Some(read_secret(path)?),
            (None, None) => None,
        }
        .filter(|t| !t.is_empty());
        if self.production {
            // The built-in bank approves every deposit: in production it would mint money.
            match (&url, &token) {
                (Some(_), Some(token)) if token.len() >= API_KEY_MIN => {}
                (Some(_), Some(_)) => return Err(ConfigError::SecretTooShort("KIZO_BANK_TOKEN")),
                _ => return Err(ConfigError::MockBankInProduction),
            }
        }
        let ca = match &self.bank_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|source| ConfigError::Secret {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        Ok(crate::server::BankSettings {
            url,
            token,
            ca,
            journal: Some(self.data_dir.join("bank.jsonl")),
            unfinished_per_user: self.settlements_per_user,
            settlement: SettlementConfig {
                policy: Policy {
                    attempts_max: self.settlement_attempts,
                    backoff_base_ms: self.settlement_backoff_ms,
                    backoff_max_ms: 60_000,
                    attempt_timeout_ms: self.settlement_timeout_ms,
                },
                workers_max: self.settlement_workers,
                tick: Duration::from_millis(100),
                reconcile_every: Duration::from_secs(self.reconcile_every_secs),
                stuck_after: Duration::from_secs(self.settlement_stuck_secs),
            },
        })
    }

    /// A secret given, or in development generated once and kept in the data folder.
    /// A secret: given, read from its `--*-file`, or (in development only) kept in the data
    /// folder, made the first time.
    fn secret(
        &self,
        given: &Option<String>,
        from_file: &Option<PathBuf>,
        name: &'static str,
        file: &str,
    ) -> Result<String, ConfigError> {
        let given = match (given, from_file) {
            (Some(secret), _) => Some(secret.clone()),
            (None, Some(path)) => Some(read_secret(path)?),
            (None, None) => None,
        };
        match given {
            Some(secret) if secret.len() < API_KEY_MIN => Err(ConfigError::SecretTooShort(name)),
            Some(secret) => Ok(secret),
            None if self.production => Err(ConfigError::MissingSecret(name)),
            None => development_secret(&self.data_dir.join(file)),
        }
    }
}

/// A secret file's content, trimmed; a file that cannot be read is an error.
fn read_secret(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map(|secret| secret.trim().to_string())
        .map_err(|source| ConfigError::Secret {
            path: path.to_path_buf(),
            source,
        })
}

/// A secret kept in `path`, made (random, owner-readable only) the first time.
fn development_secret(path: &Path) -> Result<String, ConfigError> {
    let fail = |source| ConfigError::Secret {
        path: path.to_path_buf(),
        source,
    };
    // A secret on file is never replaced: a new pepper would stop every password matching, a
    // new signing secret would end every session. Only a missing file is made.
    match std::fs::read_to_string(path) {
        Ok(secret) if secret.trim().len() >= API_KEY_MIN => return Ok(secret.trim().to_string()),
        Ok(_) => {
            return Err(ConfigError::SecretFileTooShort {
                path: path.to_path_buf(),
            })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(fail(error)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(path, &secret).map_err(fail)?;
    tracing::warn!(path = %path.display(), "development mode: generated a secret and kept it there");
    Ok(secret)
}

#[cfg(unix)]
fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    std::fs::write(path, secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["kizo-gateway"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    /// The window is a count or a size; anything else, zero, or past the limit is refused.
    #[test]
    fn the_transfer_window_is_a_count_or_a_size() {
        use kizo_engine::EngineConfig;
        assert_eq!(
            args(&[]).transfer_window,
            EngineConfig::TRANSFER_WINDOW_DEFAULT
        );
        assert_eq!(args(&["--transfer-window", "1000"]).transfer_window, 1000);
        let per = EngineConfig::WINDOW_BYTES_PER_TRANSFER;
        assert_eq!(
            args(&["--transfer-window", "64MiB"]).transfer_window,
            (64 << 20) / per
        );
        assert_eq!(
            args(&["--transfer-window", "2 GiB"]).transfer_window,
            (2 << 30) / per
        );
        for bad in [
            "0",
            "64MB",
            "-5",
            "lots",
            "0KiB",
            "99999999999GiB",
            "2000000000",
        ] {
            let argv = ["kizo-gateway", "--transfer-window", bad];
            assert!(Args::try_parse_from(argv).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        let config = args(&["--trusted-proxies", "192.0.2.1, 10.0.0.0/8,::1"]);
        let parsed: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(parsed, ["192.0.2.1/32", "10.0.0.0/8", "::1/128"]);
        assert!(Args::try_parse_from(["kizo-gateway", "--trusted-proxies", "proxy"]).is_err());
    }

    #[test]
    fn development_generates_a_key_once_and_production_refuses_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let first = args(&["--data-dir", data]).server_config().unwrap();
        let second = args(&["--data-dir", data]).server_config().unwrap();
        assert_eq!(first.api_key, second.api_key, "kept in the data folder");
        assert!(first.api_key.len() >= API_KEY_MIN);
        assert_ne!(first.api_key, first.jwt_secret, "one secret each");
        assert_eq!(
            first.currency,
            Currency {
                code: "USD".into(),
                ledger: 840
            }
        );
        assert!(matches!(
            args(&["--data-dir", data, "--production"]).server_config(),
            Err(ConfigError::MissingSecret("KIZO_API_KEY"))
        ));
        assert!(matches!(
            args(&["--api-key", "short"]).server_config(),
            Err(ConfigError::SecretTooShort("KIZO_API_KEY"))
        ));
        // A secret on file that went bad is an error, never replaced by a new one.
        std::fs::write(dir.path().join("password-pepper"), "short").unwrap();
        assert!(matches!(
            args(&["--data-dir", data]).server_config(),
            Err(ConfigError::SecretFileTooShort { .. })
        ));
        std::fs::remove_file(dir.path().join("password-pepper")).unwrap();
        std::fs::create_dir(dir.path().join("password-pepper")).unwrap(); // unreadable as a file
        assert!(matches!(
            args(&["--data-dir", data]).server_config(),
            Err(ConfigError::Secret { .. })
        ));
        std::fs::remove_dir(dir.path().join("password-pepper")).unwrap();
        // Production: every secret, from files too, and a real bank with a token.
        let secrets = tempfile::tempdir().unwrap();
        let mut production = vec![
            "--data-dir".to_string(),
            data.to_string(),
            "--production".into(),
        ];
        for (flag, file) in [
            ("--api-key-file", "api"),
            ("--jwt-secret-file", "jwt"),
            ("--password-pepper-file", "pepper"),
            ("--admin-api-key-file", "admin"),
        ] {
            let path = secrets.path().join(file);
            std::fs::write(&path, format!("{file}-0123456789abcdef0123456789abcdef\n")).unwrap();
            production.extend([flag.to_string(), path.to_str().unwrap().to_string()]);
        }
        let production: Vec<&str> = production.iter().map(String::as_str).collect();
        assert!(matches!(
            args(&production).server_config(),
            Err(ConfigError::MockBankInProduction)
        ));
        let mut with_bank = production.clone();
        with_bank.extend(["--bank-url", "http://127.0.0.1:9", "--bank-token", "short"]);
        assert!(matches!(
            args(&with_bank).server_config(),
            Err(ConfigError::SecretTooShort("KIZO_BANK_TOKEN"))
        ));
        let token = "bank-token-0123456789abcdef0123456789";
        let mut with_bank = production.clone();
        with_bank.extend(["--bank-url", "http://127.0.0.1:9", "--bank-token", token]);
        assert!(matches!(
            args(&with_bank).server_config(),
            Err(ConfigError::NoMailInProduction)
        ));
        with_bank.extend(["--smtp-url", "smtp://127.0.0.1:25"]);
        let config = args(&with_bank).server_config().unwrap();
        assert_eq!(config.mail.smtp_url.as_deref(), Some("smtp://127.0.0.1:25"));
        assert_eq!(config.api_key, "api-0123456789abcdef0123456789abcdef");
        assert_eq!(config.bank.token.as_deref(), Some(token));
        assert!(matches!(
            args(&["--data-dir", data, "--currency", "XYZ"]).server_config(),
            Err(ConfigError::Currency(_))
        ));
        assert!(matches!(
            args(&["--shards", "0"]).server_config(),
            Err(ConfigError::Shards)
        ));
        assert!(matches!(
            args(&["--worker-threads", "0"]).worker_threads(),
            Err(ConfigError::WorkerThreads)
        ));
        assert!(matches!(
            args(&["--worker-threads", "1025"]).worker_threads(),
            Err(ConfigError::WorkerThreads)
        ));
        assert_eq!(
            args(&["--worker-threads", "3"]).worker_threads().unwrap(),
            3
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(args(&[]).worker_threads().unwrap(), cores);
    }
}
