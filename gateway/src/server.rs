//! The server: the engine on its store, the log writer, the projector, and the HTTP routes with
//! their middleware (request ids, tracing, body limits, API-key auth).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use kizo_engine::settlement_actors::{
    start_reconciler, BankPort, Ports, ReconcilerArgs, ReconcilerMsg, SettlementConfig, Settlements,
};
use kizo_engine::{CreateAccountResult, Engine, EngineConfig, Wal};
use kizo_persistence::keys::KeyStore;
use kizo_persistence::projector::{Projector, ProjectorConfig};
use kizo_persistence::read_models::ReadModels;
use kizo_persistence::settlements::SettlementStore;
use kizo_persistence::transfer_store::ServedEngine;
use kizo_persistence::users::UserStore;
use kizo_persistence::{DurableWal, LogStore, StoreConfig, WalConfig};
use tokio::net::TcpListener;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::json::Json;

/// The largest request body: a full batch of 8189 transfers with every field set, and room.
pub const BODY_LIMIT_BYTES: usize = 8 << 20;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the server needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub store: StoreConfig,
    pub shard_count: usize,
    /// Recent transfers the shards keep, in all (see `--transfer-window`).
    pub transfer_window: usize,
    /// The key that opens the batch ledger API.
    pub api_key: String,
    /// Signs the wallet API's access tokens.
    pub jwt_secret: String,
    /// Mixed into every password hash.
    pub password_pepper: String,
    pub currency: crate::config::Currency,
    pub auth_rates: crate::limits::AuthRates,
    /// The key that opens the admin API (reconciliation, settlements, snapshots).
    pub admin_api_key: String,
    pub bank: BankSettings,
    pub snapshots: SnapshotSettings,
    pub http: crate::serve::HttpSettings,
    pub metrics: MetricsSettings,
    pub mail: crate::mail::MailSettings,
    /// A node of a cluster (`--node-id`); `None` serves every account from one engine.
    pub cluster: Option<ClusterConfig>,
    /// Where change events are published (`--nats-url`); `None`: nowhere.
    pub cdc: Option<crate::cdc::CdcConfig>,
    /// How webhooks are sent (`--webhook-*`).
    pub webhooks: crate::webhooks::WebhookSettings,
}

/// A cluster node's settings (`--node-id`, `--partitions`, `--advertise`, `--lease-length`,
/// `--lease-renew-every`).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub node_id: kizo_cluster::NodeId,
    /// Where the other nodes reach this one (`host:port`); `None`: the listener's own
    /// address once bound (a port chosen by the system included).
    pub advertise: Option<String>,
    /// Fixed when the data is created; every node must say the same.
    pub partitions: kizo_cluster::PartitionCount,
    pub policy: kizo_cluster::lease::LeasePolicy,
    /// How long a wallet payment between partitions is waited for before a 202.
    pub pay_bound: Duration,
    /// Partitions whose log and read models live on another database than the store's
    /// (`--partition-database`); the others stay on the store's.
    pub partition_databases: std::collections::BTreeMap<u32, StoreConfig>,
    /// A router (`--role router`): serves the API and forwards every ledger operation to the
    /// partitions' owners; holds no partition.
    pub router: bool,
}

/// Where `/metrics` is served. By default (`None`, `None`) nowhere: the binary's flags put it
/// on a loopback listener of its own.
#[derive(Clone, Debug, Default)]
pub struct MetricsSettings {
    /// A listener that serves `/metrics` alone, to anybody who can reach it.
    pub listen: Option<SocketAddr>,
    /// With a token, the main listener serves `/metrics` too, to bearers of the token.
    pub token: Option<String>,
}

/// Where snapshots are kept and when they are taken.
#[derive(Clone, Debug, Default)]
pub struct SnapshotSettings {
    /// The snapshots' folder; without one, the server starts from the log alone and takes
    /// no snapshots.
    pub dir: Option<std::path::PathBuf>,
    pub policy: kizo_snapshots::Policy,
}

/// The bank, and how settlements with it are driven.
#[derive(Clone, Debug)]
pub struct BankSettings {
    /// The bank's base URL (`KIZO_BANK_URL`); without it, a bank in this process, without
    /// faults.
    pub url: Option<String>,
    /// Sent to the bank, and expected on its callbacks.
    pub token: Option<String>,
    /// PEM certificates trusted for the bank's TLS, besides the public roots.
    pub ca: Option<Vec<u8>>,
    /// Where the in-process bank keeps what it did; in memory when `None`.
    pub journal: Option<std::path::PathBuf>,
    pub settlement: SettlementConfig,
    /// Deposits and withdrawals one user may have under way at once (`--settlements-per-user`).
    pub unfinished_per_user: u32,
}

impl Default for BankSettings {
    fn default() -> Self {
        BankSettings {
            url: None,
            token: None,
            ca: None,
            journal: None,
            settlement: SettlementConfig::default(),
            unfinished_per_user: crate::money::SETTLEMENTS_UNFINISHED_PER_USER,
        }
    }
}

/// Deposits and withdrawals: their store, the supervisor that drives them, reconciliation.
pub struct Money {
    pub store: SettlementStore,
    pub ports: Ports,
    pub policy: kizo_engine::settlement::Policy,
    pub settlements: Settlements,
    pub reconciler: ractor::ActorRef<ReconcilerMsg>,
    pub bank_token: Option<String>,
    pub unfinished_per_user: u32,
}

/// What every handler shares; cloned per request, hence one `Arc`.
pub type AppState = Arc<App>;

pub struct App {
    /// Where ledger operations run: the one engine, or the cluster's partitions.
    pub books: crate::books::Books,
    pub keys: KeyStore,
    pub transfer_keys: crate::transfer_keys::TransferKeys,
    pub users: UserStore,
    pub tokens: crate::auth::Tokens,
    pub revocations: crate::auth::Revocations,
    pub passwords: crate::auth::Passwords,
    pub currency: crate::config::Currency,
    pub limits: crate::limits::Limits,
    /// Deposits and withdrawals; `None` on a cluster node started without `--bank-url`.
    pub money: Option<Money>,
    /// The snapshot actor, when the server keeps snapshots.
    pub snapshots: Option<kizo_snapshots::Snapshots>,
    /// The one clock the handlers read (the engine's own is handed to it at start).
    pub clock: Arc<dyn kizo_engine::Clock>,
    api_key: Arc<str>,
    admin_api_key: Arc<str>,
    /// Keys the hash that names a new user's wallet (see [`App::wallet_id_of`]).
    wallet_key: [u8; 32],
    /// Wakes the mail sender (a handler just wrote to the outbox).
    pub mail_written: Arc<tokio::sync::Notify>,
    /// Where people reach the web app: links in mail point there.
    pub public_url: Arc<str>,
    /// This month's sums per wallet, resumed by each dashboard read.
    pub month_totals: crate::month_cache::MonthCache,
    /// The publishers' broker (`--nats-url`), for `/readyz`.
    pub cdc: Option<Arc<crate::cdc::Broker>>,
    /// The wallet's live events (`GET /v1/events`); `None` on a cluster node.
    pub live: Option<Arc<crate::live::Live>>,
    /// Webhook endpoints and their deliveries.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
}

impl App {
    /// Deposits and withdrawals, or why they are not served here.
    pub fn money(&self) -> Result<&Money, ApiError> {
        self.money.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "settlements_need_a_bank",
                "this cluster node serves no deposits and withdrawals: a cluster's nodes settle with one bank, given to each by --bank-url",
            )
        })
    }

    /// The wallet account of the user who signs up with `email` ([`kizo_wallet::ids::wallet_id`]
    /// keyed with this server's secret).
    pub fn wallet_id_of(&self, email: &str) -> u128 {
        kizo_wallet::ids::wallet_id(&self.wallet_key, email)
    }
}

/// What serves the books, to stop.
enum Running {
    One {
        engine: Engine,
        projector: Projector,
        publisher: Option<crate::cdc::Publisher>,
        fanout: crate::webhooks::Fanout,
    },
    Cluster {
        books: Arc<crate::books::ClusterBooks>,
        resuming: tokio::task::JoinHandle<()>,
    },
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    /// The metrics listener's address, when it has one.
    pub metrics_addr: Option<SocketAddr>,
    /// Where development mail is kept (no SMTP server), when it is kept.
    pub mail_dir: Option<std::path::PathBuf>,
    money: Option<(Settlements, ractor::ActorRef<ReconcilerMsg>)>,
    snapshots: Option<kizo_snapshots::Snapshots>,
    pruning: tokio::task::JoinHandle<()>,
    /// The follower behind `GET /v1/events` (one node).
    live: Option<Arc<crate::live::Live>>,
    /// Sends webhook deliveries.
    dispatcher: crate::webhooks::Dispatcher,
    /// On a cluster node: reads the sessions other nodes ended, and resumes the settlements of
    /// the partitions it holds.
    following: Vec<tokio::task::JoinHandle<()>>,
    mailing: tokio::task::JoinHandle<()>,
    running: Running,
    shutdown: tokio::sync::watch::Sender<bool>,
    serving: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] kizo_persistence::StoreError),
    #[error("log: {0}")]
    Log(#[from] kizo_engine::WalError),
    #[error("engine: {0}")]
    Engine(#[from] kizo_engine::EngineError),
    /// The projector or the engine over the read models.
    #[error("{0}")]
    Ledger(#[from] kizo_persistence::transfer_store::StartError),
    #[error("settlements: {0}")]
    Settlements(#[from] kizo_engine::settlement_actors::SettlementError),
    #[error("the event broker (--nats-url): {0}")]
    Cdc(String),
    #[error("webhooks' HTTP client: {0}")]
    WebhookClient(#[from] reqwest::Error),
    #[error("the bank's system account could not be created: {0}")]
    BankAccount(CreateAccountResult),
    #[error("the in-process bank: {0}")]
    Bank(kizo_bank::server::OpenError),
    #[error("the bank's client: {0}")]
    BankClient(kizo_bank::HttpBankError),
    #[error("snapshots: {0}")]
    Snapshots(#[from] kizo_snapshots::actor::TakeError),
    #[error("mail: {0}")]
    Mail(#[from] crate::mail::MailError),
    #[error("cluster: {0}")]
    Cluster(#[from] kizo_persistence::leases::LeaseStoreError),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Server {
    /// Opens the store, recovers the engine from the log, starts the projector, and serves.
    pub async fn start(config: ServerConfig) -> Result<Server, StartError> {
        crate::metrics::handle();
        // The one clock: the engine, the stores, the settlements and the handlers read it.
        let clock: Arc<dyn kizo_engine::Clock> = Arc::new(kizo_engine::SystemClock);
        let engine_config = EngineConfig {
            shard_count: config.shard_count,
            transfer_window: Some(config.transfer_window),
            ..EngineConfig::default()
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
        let cdc = match &config.cdc {
            Some(cdc) => Some(
                crate::cdc::Broker::connect(cdc.clone())
                    .await
                    .map_err(|error| StartError::Cdc(error.to_string()))?,
            ),
            None => None,
        };
        let webhooks = crate::webhooks::Webhooks::new(
            kizo_persistence::webhooks::WebhookStore::open(&config.store).await?,
            config.webhooks.clone(),
            clock.clone(),
        )?;
        let (books, running, snapshots, recovered, live) = match &config.cluster {
            None => {
                start_one(
                    &config,
                    engine_config,
                    clock.clone(),
                    cdc.clone(),
                    webhooks.clone(),
                )
                .await?
            }
            Some(cluster) => {
                let advertise = cluster
                    .advertise
                    .clone()
                    .unwrap_or_else(|| addr.to_string());
                let books = start_node(
                    &config,
                    cluster,
                    advertise,
                    engine_config,
                    clock.clone(),
                    cdc.clone(),
                    webhooks.clone(),
                )
                .await?;
                let resuming = tokio::spawn(resume_cross(books.clone()));
                let running = Running::Cluster {
                    books: books.clone(),
                    resuming,
                };
                (crate::books::Books::Cluster(books), running, None, 0, None)
            }
        };
        let keys = KeyStore::open(&config.store)
            .await?
            .with_clock(clock.clone());
        let users = UserStore::open(&config.store)
            .await?
            .with_clock(clock.clone());
        // Every node of a cluster settles with the same bank: an in-process one each would be
        // as many banks, each ignorant of the others' movements.
        let money = match (&books, &config.bank.url) {
            (crate::books::Books::Cluster(_), None) => {
                tracing::warn!(
                    "a cluster node without --bank-url serves no deposits and withdrawals"
                );
                None
            }
            _ => Some(start_money(&config, &books, clock.clone()).await?),
        };
        let mailer = Arc::new(crate::mail::Mailer::new(&config.mail)?);
        let mail_dir = config
            .mail
            .smtp_url
            .is_none()
            .then(|| config.mail.dir.clone())
            .flatten();
        let mail_written = Arc::new(tokio::sync::Notify::new());
        let transfer_keys = crate::transfer_keys::TransferKeys::load(keys.clone()).await?;
        let transfer_keys = match &books {
            crate::books::Books::Cluster(_) => transfer_keys.shared(),
            crate::books::Books::One { .. } => transfer_keys,
        };
        let state = Arc::new(App {
            books,
            transfer_keys,
            keys,
            revocations: crate::auth::Revocations::load(&users).await?,
            users,
            tokens: crate::auth::Tokens::new(&config.jwt_secret, clock.clone()),
            passwords: crate::auth::Passwords::new(&config.password_pepper),
            currency: config.currency.clone(),
            limits: crate::limits::Limits::new(config.auth_rates.clone()),
            money,
            snapshots: snapshots.clone(),
            clock: clock.clone(),
            api_key: config.api_key.into(),
            admin_api_key: config.admin_api_key.into(),
            wallet_key: {
                use sha2::{Digest, Sha256};
                Sha256::new()
                    .chain_update(b"kizo wallet ids\0")
                    .chain_update(config.password_pepper.as_bytes())
                    .finalize()
                    .into()
            },
            mail_written: mail_written.clone(),
            public_url: config.mail.public_url.trim_end_matches('/').into(),
            month_totals: Default::default(),
            cdc,
            live: live.clone(),
            webhooks: webhooks.clone(),
        });
        let dispatcher = crate::webhooks::Dispatcher::start(webhooks);
        let mailing = tokio::spawn(crate::mail::run_outbox(
            state.users.clone(),
            mailer,
            mail_written,
        ));
        let pruning = tokio::spawn(housekeeping(state.clone()));
        let following = match &state.books {
            crate::books::Books::Cluster(books) => {
                let mut following = vec![tokio::spawn(follow_revocations(state.clone()))];
                if state.money.is_some() {
                    following.push(tokio::spawn(resume_settlements(
                        books.clone(),
                        state.clone(),
                    )));
                }
                following
            }
            crate::books::Books::One { .. } => Vec::new(),
        };
        let money = state
            .money
            .as_ref()
            .map(|money| (money.settlements.clone(), money.reconciler.clone()));
        let (shutdown, stopped) = tokio::sync::watch::channel(false);
        let stopping = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }
        };
        let http = config.http;
        let mut serving = Vec::with_capacity(2);
        let metrics_addr = match config.metrics.listen {
            Some(metrics_listen) => {
                let listener = TcpListener::bind(metrics_listen).await.map_err(|source| {
                    StartError::Listen {
                        addr: metrics_listen,
                        source,
                    }
                })?;
                let metrics_addr = listener.local_addr().map_err(|source| StartError::Listen {
                    addr: metrics_listen,
                    source,
                })?;
                serving.push(tokio::spawn(crate::serve::serve(
                    listener,
                    metrics_router(state.clone()),
                    http,
                    stopping(),
                )));
                tracing::info!(addr = %metrics_addr, "serving metrics");
                Some(metrics_addr)
            }
            None => None,
        };
        let app = router(state, config.metrics.token.as_deref());
        serving.push(tokio::spawn(crate::serve::serve(
            listener,
            app,
            http,
            stopping(),
        )));
        tracing::info!(%addr, store = %config.store.describe(), recovered_commits = recovered, "serving");
        Ok(Server {
            addr,
            metrics_addr,
            mail_dir,
            money,
            snapshots,
            pruning,
            following,
            live,
            dispatcher,
            mailing,
            running,
            shutdown,
            serving,
        })
    }

    /// Stops taking requests, lets those in flight finish (for at most the drain timeout), then
    /// stops settlements, snapshots, the projector and the engine, which flushes the log. A
    /// cluster node hands its partitions over first, so that the others serve them at once.
    pub async fn stop(self) {
        if let Running::Cluster { books, resuming } = &self.running {
            resuming.abort();
            // The others take the partitions over while this node drains what it still has.
            books.host.leave(HANDOVER_WITHIN).await;
        }
        let _ = self.shutdown.send(true);
        // Event streams never end on their own: they end now, within the drain.
        if let Some(live) = &self.live {
            live.stop();
        }
        self.pruning.abort();
        self.dispatcher.stop();
        for following in &self.following {
            following.abort();
        }

        // Mail not yet sent stays in the outbox for the next start.
        self.mailing.abort();
        for serving in self.serving {
            if let Err(error) = serving.await {
                tracing::error!(%error, "the HTTP server's task failed");
            }
        }
        // Settlements stop between steps: each step's state is persisted before it acts, so
        // whatever is under way resumes at the next start.
        if let Some((settlements, reconciler)) = &self.money {
            settlements.stop();
            reconciler.stop(None);
        }
        if let Some(snapshots) = &self.snapshots {
            snapshots.stop();
        }
        match self.running {
            Running::One {
                engine,
                projector,
                publisher,
                fanout,
            } => {
                fanout.stop();
                if let Some(publisher) = publisher {
                    publisher.stop().await;
                }
                projector.stop().await;
                engine.shutdown().await;
            }
            Running::Cluster { books, .. } => books.host.halt().await,
        }
    }
}

/// How long a leaving node waits for the others to take its partitions over.
const HANDOVER_WITHIN: Duration = Duration::from_secs(10);

/// What serves the books, to stop; snapshots; the commits recovered; the follower of the
/// wallets' live events (one node: a cluster's are its partitions').
type Started = (
    crate::books::Books,
    Running,
    Option<kizo_snapshots::Snapshots>,
    u64,
    Option<Arc<crate::live::Live>>,
);

/// One node: the log, the engine on it (from the newest snapshot), the projector, snapshots.
async fn start_one(
    config: &ServerConfig,
    engine_config: EngineConfig,
    clock: Arc<dyn kizo_engine::Clock>,
    cdc: Option<Arc<crate::cdc::Broker>>,
    webhooks: Arc<crate::webhooks::Webhooks>,
) -> Result<Started, StartError> {
    let store = LogStore::open(&config.store).await?;
    let wal = DurableWal::open(store, WalConfig::default()).await?;
    let recovered = wal.last_lsn();
    let snapshot_dir = config
        .snapshots
        .dir
        .as_ref()
        .map(|dir| Arc::new(kizo_snapshots::dir::open(dir)));
    let read_models = ReadModels::open(&config.store).await?;
    let baseline = snapshot_dir
        .clone()
        .map(|dir| Arc::new(kizo_snapshots::DirBaseline(dir)) as Arc<dyn kizo_engine::Baseline>);
    let ServedEngine {
        engine,
        projector,
        store: transfer_store,
    } = ServedEngine::start(
        wal.clone(),
        read_models.clone(),
        ProjectorConfig::default(),
        engine_config,
        clock.clone(),
        baseline,
    )
    .await?;
    let publisher = match cdc {
        Some(broker) => Some(
            crate::cdc::Publisher::start(broker, None, wal.clone(), read_models.clone()).await?,
        ),
        None => None,
    };
    let snapshots = match snapshot_dir {
        Some(dir) => Some(
            kizo_snapshots::Snapshots::start(kizo_snapshots::actor::SnapshotArgs {
                clock,
                retention: kizo_snapshots::SnapshotRetention::Window {
                    shard_count: config.shard_count,
                    window: config.transfer_window,
                    store: transfer_store,
                },
                dir,
                wal: wal.clone(),
                engine: engine.clone(),
                policy: config.snapshots.policy.clone(),
            })
            .await
            .map_err(StartError::from)?,
        ),
        None => None,
    };
    let fanout = crate::webhooks::Fanout::start(webhooks, 0, wal.clone(), read_models.clone());
    let live = crate::live::Live::start(wal.clone(), read_models, 0);
    Ok((
        crate::books::Books::One {
            engine: engine.clone(),
            wal,
        },
        Running::One {
            engine,
            projector,
            publisher,
            fanout,
        },
        snapshots,
        recovered,
        Some(live),
    ))
}

/// A cluster node: joins, and serves the partitions its leases give it.
async fn start_node(
    config: &ServerConfig,
    cluster: &ClusterConfig,
    advertise: String,
    engine_config: EngineConfig,
    clock: Arc<dyn kizo_engine::Clock>,
    cdc: Option<Arc<crate::cdc::Broker>>,
    webhooks: Arc<crate::webhooks::Webhooks>,
) -> Result<Arc<crate::books::ClusterBooks>, StartError> {
    let leases = kizo_persistence::leases::LeaseStore::open(&config.store, cluster.partitions)
        .await?
        .with_partition_databases(&cluster.partition_databases)
        .await?;
    let mut read_models_elsewhere = std::collections::BTreeMap::new();
    let mut opened: Vec<(StoreConfig, ReadModels)> = Vec::new();
    for (&partition, store) in &cluster.partition_databases {
        let read_models = match opened.iter().find(|(known, _)| known == store) {
            Some((_, read_models)) => read_models.clone(),
            None => {
                let read_models = ReadModels::open(store).await?;
                opened.push((store.clone(), read_models.clone()));
                read_models
            }
        };
        read_models_elsewhere.insert(partition, read_models);
    }
    let node_timeout = Duration::from_millis(cluster.policy.length_ms);
    let cross = crate::cluster::CrossPartition::new(leases.cross_transfers(), cluster.partitions);
    let host =
        crate::cluster::PartitionHost::start(
            leases,
            crate::cluster::ClusterSettings {
                node_id: cluster.node_id.clone(),
                address: advertise.clone(),
                policy: cluster.policy,
                node_timeout,
                router: cluster.router,
            },
            crate::cluster::PartitionEngines {
                cdc,
                webhooks: Some(webhooks),
                engine: engine_config,
                read_models: Some(ReadModels::open(&config.store).await?),
                read_models_elsewhere,
                clock,
                snapshots: config.snapshots.dir.clone().map(|dir| {
                    crate::cluster::PartitionSnapshots {
                        dir,
                        policy: config.snapshots.policy.clone(),
                        shard_count: config.shard_count,
                        window: config.transfer_window,
                    }
                }),
            },
        )
        .await?;
    tracing::info!(node = %cluster.node_id.as_str(), partitions = cluster.partitions.get(), %advertise, "joined the cluster");
    Ok(Arc::new(crate::books::ClusterBooks {
        host,
        cross,
        peers: crate::peers::Peers::new(&config.api_key, node_timeout),
        node_timeout,
        pay_bound: cluster.pay_bound,
        own_accounts_made: Default::default(),
    }))
}

/// How often a node looks for unfinished transfers between partitions whose source it
/// serves (besides when it acquires a partition).
const RESUME_EVERY: Duration = Duration::from_secs(10);
/// A transfer between partitions untouched for this long has no driver left (one that is
/// driving it finishes within a few round trips).
const RESUME_IDLE: Duration = Duration::from_secs(5);

/// The supervisor of transfers between partitions: when this node acquires a partition, and
/// every [`RESUME_EVERY`], it drives the unfinished ones whose source it serves (a node that
/// died between legs, a destination that was out of reach).
async fn resume_cross(books: Arc<crate::books::ClusterBooks>) {
    let mut events = books.host.events();
    let mut every = tokio::time::interval(RESUME_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let partitions: Vec<u32> = tokio::select! {
            event = events.recv() => match event {
                Ok(crate::cluster::HostEvent::Acquired { partition, .. }) => vec![partition],
                Ok(crate::cluster::HostEvent::Dropped { .. }) => continue,
                // Missed some: look at every partition held.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => books.host.held().into_keys().collect(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = every.tick() => books.host.held().into_keys().collect(),
        };
        for partition in partitions {
            match books
                .cross
                .resume(books.as_ref(), partition, RESUME_IDLE)
                .await
            {
                Ok(0) => {}
                Ok(resumed) => {
                    tracing::info!(partition, resumed, "transfers between partitions resumed")
                }
                Err(error) => {
                    tracing::warn!(partition, %error, "transfers between partitions not resumed; retrying later")
                }
            }
        }
    }
}

/// Deposits and withdrawals. On one node, against its engine and its bank account. On a
/// cluster, every node drives the settlements it starts, and the owner of a wallet's
/// partition those left idle (a node that died, one started elsewhere): a settlement moves
/// money between a wallet and its partition's bank account, so it never crosses partitions,
/// and every step is a compare-and-set on the shared store, so two drivers never both act.
/// On a cluster node: when it acquires a partition, and every [`RESUME_EVERY`], it hands its
/// supervisor the unfinished settlements of the partitions it holds that nobody moved for
/// [`RESUME_IDLE`] (their driver died, or left them to a backoff the supervisor here should
/// keep). A settlement another node still drives is safe to hand over too: every step is a
/// compare-and-set, so only one driver acts on each.
async fn resume_settlements(books: Arc<crate::books::ClusterBooks>, state: AppState) {
    let Some(money) = &state.money else { return };
    let mut events = books.host.events();
    let mut every = tokio::time::interval(RESUME_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(crate::cluster::HostEvent::Acquired { .. })
                | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Ok(crate::cluster::HostEvent::Dropped { .. }) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = every.tick() => {}
        }
        let idle_before = state
            .clock
            .now_ms()
            .saturating_sub(RESUME_IDLE.as_millis() as u64);
        // The port reads only the partitions held here.
        match money.ports.store.unfinished().await {
            Ok(unfinished) => {
                let idle: Vec<_> = unfinished
                    .into_iter()
                    .filter(|s| s.updated_ms <= idle_before)
                    .collect();
                if !idle.is_empty() {
                    tracing::info!(count = idle.len(), "settlements resumed");
                }
                for settlement in idle {
                    money.settlements.submit(settlement);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "settlements not resumed; retrying later")
            }
        }
    }
}

async fn start_money(
    config: &ServerConfig,
    books: &crate::books::Books,
    clock: Arc<dyn kizo_engine::Clock>,
) -> Result<Money, StartError> {
    let (ledger, read_models, held): (Arc<dyn kizo_engine::settlement_actors::LedgerPort>, _, _) =
        match books {
            crate::books::Books::One { engine, .. } => {
                let bank_account = kizo_wallet::codes::bank_account(config.currency.ledger);
                let created = engine.create_accounts(vec![bank_account]).await?;
                if !matches!(
                    created[0],
                    CreateAccountResult::Created | CreateAccountResult::Exists
                ) {
                    return Err(StartError::BankAccount(created[0]));
                }
                let read_models =
                    vec![kizo_persistence::read_models::ReadModels::open(&config.store).await?];
                (Arc::new(engine.clone()), read_models, None)
            }
            crate::books::Books::Cluster(cluster) => {
                // Reconciliation adds up every database's read models, each once.
                let mut stores = vec![&config.store];
                for store in config
                    .cluster
                    .iter()
                    .flat_map(|c| c.partition_databases.values())
                {
                    if !stores.contains(&store) {
                        stores.push(store);
                    }
                }
                let mut read_models = Vec::with_capacity(stores.len());
                for store in stores {
                    read_models.push(kizo_persistence::read_models::ReadModels::open(store).await?);
                }
                (
                    Arc::new(crate::books::SettlementLedger(cluster.clone())),
                    read_models,
                    Some(cluster.clone()),
                )
            }
        };
    let bank: Arc<dyn BankPort> = match &config.bank.url {
        Some(url) => Arc::new(
            kizo_bank::HttpBank::with_ca(
                url,
                config.bank.token.clone(),
                &config.currency.code,
                config.bank.ca.as_deref(),
            )
            .map_err(StartError::BankClient)?,
        ),
        None => {
            let bank = kizo_bank::Bank::open(kizo_bank::BankConfig {
                faults: kizo_bank::Faults::none(),
                journal: config.bank.journal.clone(),
                ..kizo_bank::BankConfig::default()
            })
            .map_err(StartError::Bank)?
            .with_clock(clock.clone());
            Arc::new(kizo_bank::InProcessBank { bank })
        }
    };
    let store = SettlementStore::open(&config.store).await?;
    let ports = Ports {
        ledger,
        bank,
        store: Arc::new(crate::settlements::StoreAdapter {
            store: store.clone(),
            held,
        }),
        clock,
    };
    let settlements = Settlements::start(ports.clone(), config.bank.settlement.clone())
        .await
        .map_err(StartError::from)?;
    let reconciler = start_reconciler(ReconcilerArgs {
        ports: ports.clone(),
        totals: Some(Arc::new(crate::settlements::Totals(read_models))),
        settlements: settlements.clone(),
        config: config.bank.settlement.clone(),
    })
    .await
    .map_err(StartError::from)?;
    Ok(Money {
        store,
        ports,
        policy: config.bank.settlement.policy,
        settlements,
        reconciler,
        bank_token: config.bank.token.clone(),
        unfinished_per_user: config.bank.unfinished_per_user,
    })
}

/// How often a cluster node reads the sessions ended at other nodes.
const REVOCATIONS_EVERY: Duration = Duration::from_secs(1);
/// How far back each read looks: wider than any pause between reads and any skew between
/// the nodes' clocks (a revocation is stamped by the clock of the node that made it).
const REVOCATIONS_LOOK_BACK_MS: i64 = 60_000;

/// On a cluster node: an access token whose session was ended at another node (logout, a
/// password reset) is refused here within [`REVOCATIONS_EVERY`], not at its expiry.
async fn follow_revocations(state: AppState) {
    let mut every = tokio::time::interval(REVOCATIONS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let since = state.users.now_ms() - REVOCATIONS_LOOK_BACK_MS;
        if let Err(error) = state.revocations.refresh(&state.users, since).await {
            tracing::warn!(%error, "sessions ended elsewhere not read; retrying");
        }
    }
}

/// How often the store's counts behind gauges are refreshed (off the scrape).
const GAUGES_EVERY: Duration = Duration::from_secs(10);
/// How often what has expired is forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(300);

/// Every few seconds: the gauges that read the store. Every few minutes: forgets idempotency
/// keys, revocations, expired refresh tokens and dead sessions past their time, and
/// rate-limit keys at rest.
async fn housekeeping(state: AppState) {
    let mut every = tokio::time::interval(GAUGES_EVERY);
    let mut pruned_at: Option<tokio::time::Instant> = None;
    loop {
        every.tick().await;
        crate::settlements::count_open(&state).await;
        if pruned_at.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
            continue;
        }
        pruned_at = Some(tokio::time::Instant::now());
        prune(&state).await;
    }
}

async fn prune(state: &AppState) {
    state.limits.shrink(state.clock.now_ms());
    metrics::gauge!("kizo_auth_limiter_entries").set(state.limits.entries() as f64);
    state.revocations.prune(state.users.now_ms());
    state.transfer_keys.prune();
    // A day past expiry or revocation: far beyond any access token's 15 minutes.
    match state.users.prune(state.users.now_ms() - 86_400_000).await {
        Ok(pruned) => {
            tracing::debug!(pruned, "expired refresh tokens and dead sessions pruned")
        }
        Err(error) => tracing::warn!(%error, "sessions not pruned"),
    }
    match state.keys.prune(crate::idempotency::KEPT_MS).await {
        Ok(pruned) => tracing::debug!(pruned, "idempotency keys pruned"),
        Err(error) => tracing::warn!(%error, "idempotency keys not pruned"),
    }
    match crate::webhooks::prune(&state.webhooks).await {
        Ok(pruned) => tracing::debug!(pruned, "delivered webhooks pruned"),
        Err(error) => tracing::warn!(%error, "delivered webhooks not pruned"),
    }
}

/// The metrics listener's only route.
fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(crate::metrics::render))
        .fallback(not_found)
        .with_state(state)
}

/// The API. `/metrics` is on it only with a token (`metrics_token`), for its bearers.
pub fn router(state: AppState, metrics_token: Option<&str>) -> Router {
    let metrics = match metrics_token {
        Some(token) => {
            let token: Arc<str> = token.into();
            Router::new()
                .route("/metrics", get(crate::metrics::render))
                .route_layer(middleware::from_fn(move |request: Request, next: Next| {
                    let token = token.clone();
                    async move { require_key(&token, "/metrics", request, next).await }
                }))
        }
        None => Router::new(),
    };
    // The API key is checked first (the outer layer), so that strangers claim no keys.
    let ledger = crate::ledger::routes()
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::idempotency::ledger,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    // Calls between the nodes of a cluster: the ledger API's key, without its idempotency
    // layer (every operation is by id).
    let node = crate::peers::node_routes().route_layer(middleware::from_fn_with_state(
        state.clone(),
        require_api_key,
    ));
    let webhooks = crate::webhook_api::ledger_routes().route_layer(middleware::from_fn_with_state(
        state.clone(),
        require_api_key,
    ));
    let admin = crate::settlements::admin_routes()
        .merge(crate::snapshots::admin_routes())
        .merge(crate::peers::admin_routes())
        .route("/v1/admin/metrics", get(crate::metrics::admin_render))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_admin_key,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(metrics)
        .route("/openapi.json", get(crate::openapi::serve))
        .merge(ledger)
        .merge(node)
        .merge(webhooks)
        .merge(crate::wallet::routes())
        .merge(crate::payments::routes())
        .merge(crate::avatars::routes())
        .merge(crate::webhook_api::user_routes())
        .route("/v1/events", get(crate::live::stream))
        .merge(crate::settlements::routes())
        .merge(admin)
        .merge(crate::ui::routes())
        .route_layer(middleware::from_fn(crate::metrics::track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        // Enforced by the body extractors, so that the refusal is a problem like any other.
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), RequestIds::new()))
}

/// Request ids for requests that bring none: a random prefix per process and a counter, unique
/// without a random draw (a system call) per request.
#[derive(Clone)]
struct RequestIds {
    prefix: Arc<str>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        let random = uuid::Uuid::new_v4().simple().to_string();
        RequestIds {
            prefix: random[..12].into(),
            next: Arc::default(),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}-{n:x}", self.prefix);
        axum::http::HeaderValue::from_str(&id)
            .ok()
            .map(RequestId::new)
    }
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Status {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_lsn: Option<u64>,
    /// The change events' publishers, when `--nats-url` is given: they never hold the server
    /// back, so a lag or a broker away is reported here without making it unready.
    #[serde(skip_serializing_if = "Option::is_none")]
    cdc: Option<crate::cdc::CdcHealth>,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Status)))]
pub async fn healthz() -> Json<Status> {
    Json(Status {
        status: "ok",
        last_lsn: None,
        cdc: None,
    })
}

/// Ready: recovery is done (the server serves only after it) and the store answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, body = Status),
    (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    match state.books.ready().await {
        Ok(lsn) => Ok(Json(Status {
            status: "ready",
            last_lsn: Some(lsn),
            cdc: state.cdc.as_ref().map(|broker| broker.health()),
        })),
        Err(error) => Err(ApiError::unavailable(error.to_string())),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

async fn require_api_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    require_key(&state.api_key, "the ledger API", request, next).await
}

async fn require_admin_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    require_key(&state.admin_api_key, "the admin API", request, next).await
}

async fn require_key(key: &str, api: &str, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), key.as_bytes()) => {
            next.run(request).await
        }
        _ => {
            let mut response =
                ApiError::unauthorized(format!("{api} needs `Authorization: Bearer <its key>`"))
                    .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

/// Compares without leaking, through timing, how much of a secret matched or how long it is:
/// the digests compared are always 32 bytes, and compared in constant time.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let (a, b) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    a.as_slice().ct_eq(b.as_slice()).into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_eq_compares() {
        assert!(super::constant_time_eq(b"secret", b"secret"));
        assert!(!super::constant_time_eq(b"secret", b"secreT"));
        assert!(!super::constant_time_eq(b"secret", b"secret!"));
    }
}
