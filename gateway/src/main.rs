//! `kizo-gateway`: serves Kizo over HTTP. `--help` lists the configuration.

use std::process::ExitCode;

use clap::Parser;
use kizo_gateway::config::Args;
use kizo_gateway::Server;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if args.json_logs {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let config = match args.server_config() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "configuration");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(config).await {
        Ok(server) => server,
        Err(error) => {
            tracing::error!(%error, "the server could not start");
            return ExitCode::FAILURE;
        }
    };
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("stopping");
    server.stop().await;
    ExitCode::SUCCESS
}
