//! `kizo-node`: the engine on its durable store, behind a line protocol on TCP. Until the HTTP
//! gateway lands it is the server of the quick start, and it is the process the crash tests
//! kill with SIGKILL and start again: it runs exactly what a server runs (the store, the log
//! writer, recovery, the engine, the projector feeding the read models).
//!
//! Configuration (environment): `DATABASE_URL` (PostgreSQL) or `KIZO_DATA_DIR` (the embedded
//! store, default `./data`); `KIZO_PG_SCHEMA` puts every table in that schema; `KIZO_LISTEN`
//! (default `127.0.0.1:7070`). It prints `listening <address>` once it serves.
//!
//! Protocol, one request per line, one answer per line (ledger 840, code 1):
//! - `accounts <id>:<flags> ...` → the result code of each, space-separated (flags: 2 = the
//!   account cannot go below zero);
//! - `transfers <id>:<debit>:<credit>:<amount> ...` → the result code of each;
//! - `lookup-accounts <id> ...` →
//!   `<id>:<debits_posted>:<credits_posted>:<debits_pending>:<credits_pending>:<flags> ...`;
//! - `lookup-transfers <id> ...` → `<id>:<debit>:<credit>:<amount> ...` for those found;
//! - `read-accounts <id> ...` → as `lookup-accounts`, from the read models, once the projector
//!   has caught up with the log;
//! - anything else, or an engine error → `error <message>`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use kizo_engine::{Account, AccountFlags, Engine, EngineConfig, Transfer, Wal};
use kizo_persistence::projector::{Projector, ProjectorConfig};
use kizo_persistence::read_models::ReadModels;
use kizo_persistence::{DurableWal, LogStore, StoreConfig, WalConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const LEDGER: u32 = 840;
/// Longest request line accepted.
const LINE_MAX: usize = 1 << 20;

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("kizo-node: {error}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = StoreConfig::from_env();
    if let (StoreConfig::Postgres { schema, .. }, Ok(name)) =
        (&mut config, std::env::var("KIZO_PG_SCHEMA"))
    {
        *schema = Some(name);
    }
    let started = std::time::Instant::now();
    let store = LogStore::open(&config).await?;
    let wal = DurableWal::open(store, WalConfig::default()).await?;
    let last_lsn = wal.last_lsn();
    let engine = Engine::start(
        EngineConfig {
            shard_count: 2,
            ..EngineConfig::default()
        },
        wal.clone(),
    )
    .await?;
    // The read models follow the log in the background, as in every server.
    let read_models = ReadModels::open(&config).await?;
    let projector =
        Projector::start(wal.clone(), read_models.clone(), ProjectorConfig::default()).await?;
    let node = Arc::new(Node {
        engine,
        wal,
        read_models,
        projector,
    });
    let listen = std::env::var("KIZO_LISTEN").unwrap_or_else(|_| "127.0.0.1:7070".into());
    let listener = TcpListener::bind(&listen).await?;
    eprintln!(
        "kizo-node: {}, recovered {last_lsn} commits in {:.2?}",
        config.describe(),
        started.elapsed()
    );
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening {}", listener.local_addr()?)?;
    stdout.flush()?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve(node.clone(), stream));
    }
}

struct Node {
    engine: Engine,
    wal: Arc<DurableWal>,
    read_models: ReadModels,
    projector: Projector,
}

async fn serve(node: Arc<Node>, stream: TcpStream) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if line.len() > LINE_MAX => return,
            Ok(_) => {}
        }
        let answer = match answer(&node, line.trim()).await {
            Ok(answer) => answer,
            Err(error) => format!("error {error}"),
        };
        if writer
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn answer(node: &Node, line: &str) -> Result<String, Box<dyn std::error::Error>> {
    let engine = &node.engine;
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or_default();
    let args: Vec<Vec<u128>> = words
        .map(|word| {
            word.split(':')
                .map(str::parse)
                .collect::<Result<Vec<u128>, _>>()
        })
        .collect::<Result<_, _>>()?;
    let arity = |n: usize| -> Result<(), String> {
        match args.iter().all(|a| a.len() == n) {
            true => Ok(()),
            false => Err(format!("{command} takes {n} numbers per item")),
        }
    };
    Ok(match command {
        "accounts" => {
            arity(2)?;
            let accounts = args
                .iter()
                .map(|a| {
                    Ok(Account {
                        flags: AccountFlags(u16::try_from(a[1])?),
                        ..Account::new(a[0], LEDGER, 1)
                    })
                })
                .collect::<Result<Vec<_>, std::num::TryFromIntError>>()?;
            let results = engine.create_accounts(accounts).await?;
            join(results.iter().map(|r| r.code().to_string()))
        }
        "transfers" => {
            arity(4)?;
            let transfers = args
                .iter()
                .map(|t| Transfer::new(t[0], t[1], t[2], t[3], LEDGER, 1))
                .collect();
            let results = engine.create_transfers(transfers).await?;
            join(results.iter().map(|r| r.code().to_string()))
        }
        "lookup-accounts" => {
            arity(1)?;
            let accounts = engine
                .lookup_accounts(args.iter().map(|a| a[0]).collect())
                .await?;
            join(accounts.iter().map(account_line))
        }
        "read-accounts" => {
            arity(1)?;
            let lsn = node.wal.last_lsn();
            if !node.projector.wait_for(lsn, Duration::from_secs(10)).await {
                return Err(format!("the read models are still behind LSN {lsn}").into());
            }
            let mut accounts = Vec::with_capacity(args.len());
            for id in args.iter().map(|a| a[0]) {
                accounts.extend(node.read_models.account(id).await?);
            }
            join(accounts.iter().map(account_line))
        }
        "lookup-transfers" => {
            arity(1)?;
            let transfers = engine
                .lookup_transfers(args.iter().map(|a| a[0]).collect())
                .await?;
            join(transfers.iter().map(|t| {
                format!(
                    "{}:{}:{}:{}",
                    t.id, t.debit_account_id, t.credit_account_id, t.amount
                )
            }))
        }
        other => return Err(format!("unknown command {other:?}").into()),
    })
}

fn account_line(a: &Account) -> String {
    format!(
        "{}:{}:{}:{}:{}:{}",
        a.id, a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending, a.flags.0
    )
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(" ")
}
