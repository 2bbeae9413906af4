//! `kizo-loadgen`: see `--help` and docs/benchmarks.md.

use std::process::ExitCode;

use clap::Parser;

// The generator shares the cores with the server it measures: what it spends on allocation
// is taken from the figure.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = kizo_loadgen::cli::Args::parse();
    let runtime = args.threads().and_then(|threads| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .map_err(|e| kizo_loadgen::target::Unknown::new("runtime", e))
    });
    let result = runtime.and_then(|runtime| runtime.block_on(kizo_loadgen::cli::run(args)));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("kizo-loadgen: {error}");
            ExitCode::from(2)
        }
    }
}
