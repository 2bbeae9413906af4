//! `kizo-bank`: the mock bank as a process.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::faults::Faults;
use crate::server::{router, Bank, BankConfig};

/// Kizo's mock bank: payouts, collections, status, statement, faults.
#[derive(Debug, Parser)]
#[command(name = "kizo-bank", version)]
pub struct Args {
    /// Address to serve on.
    #[arg(long, env = "KIZO_BANK_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// A file where the bank keeps what it did (JSON lines, fsync'd); in memory if absent.
    #[arg(long, env = "KIZO_BANK_JOURNAL")]
    pub journal: Option<PathBuf>,
    /// Callers must send `Authorization: Bearer <token>`; callbacks carry it too.
    #[arg(long, env = "KIZO_BANK_TOKEN")]
    pub token: Option<String>,
    /// Where to post `{reference, kind, status}` after each payout or collection.
    #[arg(long, env = "KIZO_BANK_CALLBACK_URL")]
    pub callback_url: Option<String>,
    /// Seed of the fault draws (default: the clock).
    #[arg(long, env = "KIZO_BANK_SEED")]
    pub seed: Option<u64>,
    /// No faults at all (overrides every fault setting).
    #[arg(long)]
    pub no_faults: bool,
    #[command(flatten)]
    pub faults: Faults,
}

/// Runs the bank until Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> Result<(), RunError> {
    let faults = if args.no_faults {
        Faults::none()
    } else {
        args.faults
    };
    faults.check()?;
    let seed = args.seed.unwrap_or_else(|| {
        kizo_engine::Clock::now_ms(&kizo_engine::SystemClock) ^ u64::from(std::process::id())
    });
    let bank = Bank::open(BankConfig {
        faults: faults.clone(),
        seed,
        journal: args.journal,
        token: args.token,
        callback_url: args.callback_url,
    })?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(RunError::Serve)?;
    tracing::info!(%addr, ?faults, seed, "the bank is open");
    // Printed for whoever started us with port 0.
    println!("listening on {addr}");
    axum::serve(listener, router(bank))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(RunError::Serve)
}

/// Why the bank stopped or did not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Faults(#[from] crate::faults::FaultsError),
    #[error(transparent)]
    Open(#[from] crate::server::OpenError),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}
