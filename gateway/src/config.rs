//! Configuration, by flags or environment (`--help` lists every one), and the secrets it
//! resolves: given, or in development generated once and kept in the data folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use kizo_persistence::StoreConfig;

use crate::server::ServerConfig;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "kizo-gateway",
    version,
    about = "Kizo's HTTP API: the engine on its store."
)]
pub struct Args {
    /// Address to serve HTTP on.
    #[arg(long, env = "KIZO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// PostgreSQL URL of the store (postgres://user@host:5432/db). Without it, the embedded
    /// store in --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Folder of the embedded store, and of the secrets generated in development.
    #[arg(long, env = "KIZO_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Number of shards (1 to 256). Default: one per core. Fixed for the life of the data.
    #[arg(long, env = "KIZO_SHARDS")]
    pub shards: Option<usize>,
    /// Key of the batch ledger API (at least 32 characters). In development, generated and
    /// kept in <data-dir>/api-key when not given.
    #[arg(long, env = "KIZO_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Production mode: refuse to start without every secret given.
    #[arg(long, env = "KIZO_PRODUCTION")]
    pub production: bool,
    /// Write logs as JSON lines.
    #[arg(long, env = "KIZO_LOG_JSON")]
    pub json_logs: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("KIZO_API_KEY must be at least {API_KEY_MIN} characters")]
    ApiKeyTooShort,
    #[error("production mode needs KIZO_API_KEY")]
    MissingSecret,
    #[error("{path}: {source}")]
    Secret {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "--shards must be between 1 and {}",
        kizo_engine::EngineConfig::SHARD_COUNT_MAX
    )]
    Shards,
}

pub const API_KEY_MIN: usize = 32;

impl Args {
    pub fn server_config(&self) -> Result<ServerConfig, ConfigError> {
        let store =
            StoreConfig::from_settings(self.database_url.clone(), Some(self.data_dir.clone()));
        let shard_count = match self.shards {
            Some(n) if (1..=kizo_engine::EngineConfig::SHARD_COUNT_MAX).contains(&n) => n,
            Some(_) => return Err(ConfigError::Shards),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let api_key = match &self.api_key {
            Some(key) if key.len() < API_KEY_MIN => return Err(ConfigError::ApiKeyTooShort),
            Some(key) => key.clone(),
            None if self.production => return Err(ConfigError::MissingSecret),
            None => development_secret(&self.data_dir.join("api-key"))?,
        };
        Ok(ServerConfig {
            listen: self.listen,
            store,
            shard_count,
            api_key,
        })
    }
}

/// A secret kept in `path`, made (random, owner-readable only) the first time.
fn development_secret(path: &Path) -> Result<String, ConfigError> {
    let fail = |source| ConfigError::Secret {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(secret) = std::fs::read_to_string(path) {
        let secret = secret.trim().to_string();
        if secret.len() >= API_KEY_MIN {
            return Ok(secret);
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(path, &secret).map_err(fail)?;
    tracing::warn!(path = %path.display(), "development mode: generated the ledger API key and kept it there");
    Ok(secret)
}

#[cfg(unix)]
fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    std::fs::write(path, secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["kizo-gateway"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn development_generates_a_key_once_and_production_refuses_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let first = args(&["--data-dir", data]).server_config().unwrap();
        let second = args(&["--data-dir", data]).server_config().unwrap();
        assert_eq!(first.api_key, second.api_key, "kept in the data folder");
        assert!(first.api_key.len() >= API_KEY_MIN);
        assert!(matches!(
            args(&["--data-dir", data, "--production"]).server_config(),
            Err(ConfigError::MissingSecret)
        ));
        assert!(matches!(
            args(&["--api-key", "short"]).server_config(),
            Err(ConfigError::ApiKeyTooShort)
        ));
        assert!(matches!(
            args(&["--shards", "0"]).server_config(),
            Err(ConfigError::Shards)
        ));
    }
}
