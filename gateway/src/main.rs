//! `kizo-gateway`: serves Kizo over HTTP. `--help` lists the configuration.

use std::process::ExitCode;

use clap::Parser;
use kizo_gateway::config::Args;
use kizo_gateway::Server;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Every file this process creates (the embedded store, secrets, snapshots, the bank's
    // journal) is its owner's alone: 0600, folders 0700.
    // SAFETY: umask only sets this process's file mode mask; no memory is involved.
    unsafe {
        libc::umask(0o077);
    }
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if args.json_logs {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        // Colours only for a person at a terminal: escape codes in a log file are noise, and
        // formatting them is a measurable part of each request's span.
        tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(filter)
            .init();
    }
    let runtime = args.worker_threads().map(|threads| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    });
    match runtime {
        Ok(Ok(runtime)) => runtime.block_on(serve(args)),
        Ok(Err(error)) => {
            tracing::error!(%error, "the runtime could not start");
            ExitCode::FAILURE
        }
        Err(error) => {
            tracing::error!(%error, "configuration");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> ExitCode {
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
    let signal = match stop_signal().await {
        Ok(signal) => signal,
        Err(error) => {
            tracing::error!(%error, "cannot wait for SIGTERM or SIGINT; stopping");
            "none"
        }
    };
    tracing::info!(
        signal,
        "stopping: no new connections, draining those in flight"
    );
    server.stop().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Waits for SIGTERM (`docker stop`, systemd, Kubernetes) or SIGINT (Ctrl-C).
async fn stop_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}
