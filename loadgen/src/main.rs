//! `kizo-loadgen`: see `--help` and docs/benchmarks.md.

use std::process::ExitCode;

use clap::Parser;

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
