//! `kizo-snapshot`: see [`kizo_snapshots::cli`].

use clap::Parser;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = kizo_snapshots::cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut out = std::io::stdout().lock();
    if let Err(error) = runtime.block_on(kizo_snapshots::cli::run(cli, &mut out)) {
        eprintln!("kizo-snapshot: {error}");
        std::process::exit(error.exit_code());
    }
}
