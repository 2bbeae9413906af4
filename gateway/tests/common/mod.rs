//! Shared by the gateway's tests: a real server on a fresh store.
#![allow(dead_code)]

use std::path::PathBuf;

use kizo_gateway::{Server, ServerConfig};
use kizo_persistence::StoreConfig;

pub const API_KEY: &str = "test-key-0123456789abcdef0123456789";

/// A store for one test: a temporary folder, or a schema of its own in `DATABASE_URL` (default
/// the local server), dropped by [`TestStore::clean`].
pub struct TestStore {
    pub config: StoreConfig,
    _dir: Option<tempfile::TempDir>,
}

impl TestStore {
    pub fn embedded() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        TestStore {
            config: StoreConfig::Embedded {
                dir: PathBuf::from(dir.path()),
            },
            _dir: Some(dir),
        }
    }

    pub fn postgres(name: &str) -> TestStore {
        let url = std::env::var("DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        TestStore {
            config: StoreConfig::Postgres {
                url,
                schema: Some(format!("t_{name}_{}_{nanos}", std::process::id())),
            },
            _dir: None,
        }
    }

    pub async fn clean(self) {
        if let StoreConfig::Postgres {
            url,
            schema: Some(schema),
        } = &self.config
        {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&pool)
                .await
                .unwrap();
        }
    }
}

/// Starts a server on `store`; returns it and its base URL.
pub async fn start(store: &StoreConfig) -> (Server, String) {
    let server = Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: store.clone(),
        shard_count: 2,
        api_key: API_KEY.into(),
        jwt_secret: "test-jwt-secret-0123456789abcdef0123".into(),
        password_pepper: "test-pepper-0123456789abcdef0123456".into(),
        currency: kizo_gateway::config::Currency::parse("USD").unwrap(),
        auth_rates: Default::default(),
    })
    .await
    .expect("the server starts");
    let base = format!("http://{}", server.addr);
    (server, base)
}
