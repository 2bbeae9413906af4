//! `kizo-bank`: the mock bank as a process (`kizo_bank`). It is built with the gateway so that
//! the gateway's tests can run it as a real process beside a real gateway.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let args = kizo_bank::cli::Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    match kizo_bank::cli::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "the bank stopped");
            ExitCode::FAILURE
        }
    }
}
