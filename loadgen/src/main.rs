//! `kizo-loadgen`: see `--help` and docs/benchmarks.md.

use std::process::ExitCode;

use clap::Parser;

// The generator shares the cores with the server it measures: what it spends on allocation
// is taken from the figure.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = kizo_loadgen::cli::Args::parse();
    match kizo_loadgen::cli::run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("kizo-loadgen: {error}");
            ExitCode::from(2)
        }
    }
}
