//! What a scenario drives: the same few ledger operations on Kizo over HTTP, on Kizo's engine in
//! this process (no HTTP: the engine's own cost), or on the row-locking PostgreSQL baseline.

use std::sync::Arc;

use kizo_engine::{Account, AccountFlags, CreateAccountResult, Engine, EngineConfig, Transfer};
use kizo_persistence::{DurableWal, LogStore, StoreConfig, WalConfig};

use crate::baseline::Rowlock;
use crate::http::Http;

/// The ledger (currency) and code of every account and transfer a run makes: USD, as the
/// gateway's default currency.
pub const LEDGER: u32 = 840;
pub const CODE: u16 = 1;

/// One transfer as a scenario asks for it and an audit finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    pub id: u128,
    pub from: u128,
    pub to: u128,
    pub amount: u64,
}

/// What became of one transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    Created,
    /// Created before (a retry).
    Exists,
    /// Refused, with the target's code (`exceeds_credits`, `insufficient_funds`, ...).
    Refused(String),
}

/// An account's posted totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Balance {
    pub id: u128,
    pub debits: u128,
    pub credits: u128,
}

/// A request whose outcome is unknown (a broken connection, a timeout, a 5xx): it may or may not
/// have been applied; the audit finds out.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Unknown {
    /// Stable, for the error table: `timeout`, `connect`, `http_503`, ...
    pub code: String,
    pub detail: String,
}

impl Unknown {
    pub fn new(code: impl Into<String>, detail: impl std::fmt::Display) -> Unknown {
        Unknown {
            code: code.into(),
            detail: detail.to_string(),
        }
    }
}

pub enum Target {
    Http(Http),
    Engine(Engine),
    Rowlock(Rowlock),
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Target::Http(_) => "kizo over HTTP",
            Target::Engine(_) => "kizo engine in process",
            Target::Rowlock(_) => "pg-rowlock baseline",
        }
    }

    /// The engine in this process, on `store`'s log (PostgreSQL or the embedded store): the
    /// engine and its log alone, with shards that keep every transfer and no read models (the
    /// gateway keeps a window and lets the read models hold the rest, at the projector's pace).
    pub async fn engine(store: &StoreConfig, shard_count: usize) -> Result<Target, Unknown> {
        let log = LogStore::open(store)
            .await
            .map_err(|e| Unknown::new("store", e))?;
        let wal: Arc<DurableWal> = DurableWal::open(log, WalConfig::default())
            .await
            .map_err(|e| Unknown::new("store", e))?;
        let engine = Engine::start(
            EngineConfig {
                shard_count,
                ..EngineConfig::default()
            },
            wal,
        )
        .await
        .map_err(|e| Unknown::new("engine", e))?;
        Ok(Target::Engine(engine))
    }

    /// Creates `system` (no limits: money enters through it) and `wallets` (never below zero).
    pub async fn create_accounts(&self, system: u128, wallets: &[u128]) -> Result<(), Unknown> {
        match self {
            Target::Http(http) => http.create_accounts(system, wallets).await,
            Target::Rowlock(rowlock) => rowlock.create_accounts(system, wallets).await,
            Target::Engine(engine) => {
                let mut accounts = vec![Account::new(system, LEDGER, CODE)];
                accounts.extend(wallets.iter().map(|&id| Account {
                    flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                    ..Account::new(id, LEDGER, CODE)
                }));
                for chunk in accounts.chunks(kizo_engine::BATCH_EVENTS_MAX) {
                    let results = engine
                        .create_accounts(chunk.to_vec())
                        .await
                        .map_err(|e| Unknown::new("engine", e))?;
                    if let Some(bad) = results.iter().find(|r| {
                        !matches!(
                            r,
                            CreateAccountResult::Created | CreateAccountResult::Exists
                        )
                    }) {
                        return Err(Unknown::new("setup", format!("an account: {bad}")));
                    }
                }
                Ok(())
            }
        }
    }

    /// Creates transfers (at most 8189); one outcome each, in order.
    pub async fn transfers(&self, moves: &[Move]) -> Result<Vec<RequestOutcome>, Unknown> {
        match self {
            Target::Http(http) => http.transfers(moves).await,
            Target::Rowlock(rowlock) => rowlock.transfers(moves).await,
            Target::Engine(engine) => {
                let events = moves
                    .iter()
                    .map(|m| Transfer::new(m.id, m.from, m.to, u128::from(m.amount), LEDGER, CODE))
                    .collect();
                let results = engine
                    .create_transfers(events)
                    .await
                    .map_err(|e| Unknown::new("engine", e))?;
                Ok(results
                    .into_iter()
                    .map(|r| match r {
                        kizo_engine::CreateTransferResult::Created => RequestOutcome::Created,
                        kizo_engine::CreateTransferResult::Exists => RequestOutcome::Exists,
                        other => RequestOutcome::Refused(other.code().to_string()),
                    })
                    .collect())
            }
        }
    }

    /// The posted totals of the accounts among `ids` that exist.
    pub async fn balances(&self, ids: &[u128]) -> Result<Vec<Balance>, Unknown> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(kizo_engine::BATCH_EVENTS_MAX) {
            found.extend(match self {
                Target::Http(http) => http.balances(chunk).await?,
                Target::Rowlock(rowlock) => rowlock.balances(chunk).await?,
                Target::Engine(engine) => engine
                    .lookup_accounts(chunk.to_vec())
                    .await
                    .map_err(|e| Unknown::new("engine", e))?
                    .into_iter()
                    .map(|a| Balance {
                        id: a.id,
                        debits: a.debits_posted,
                        credits: a.credits_posted,
                    })
                    .collect(),
            });
        }
        Ok(found)
    }

    /// The transfers among `ids` that exist.
    pub async fn find_transfers(&self, ids: &[u128]) -> Result<Vec<Move>, Unknown> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(kizo_engine::BATCH_EVENTS_MAX) {
            found.extend(match self {
                Target::Http(http) => http.find_transfers(chunk).await?,
                Target::Rowlock(rowlock) => rowlock.find_transfers(chunk).await?,
                Target::Engine(engine) => engine
                    .lookup_transfers(chunk.to_vec())
                    .await
                    .map_err(|e| Unknown::new("engine", e))?
                    .into_iter()
                    .map(|t| Move {
                        id: t.id,
                        from: t.debit_account_id,
                        to: t.credit_account_id,
                        amount: u64::try_from(t.amount).unwrap_or(u64::MAX),
                    })
                    .collect(),
            });
        }
        Ok(found)
    }

    pub async fn stop(&self) {
        match self {
            Target::Engine(engine) => engine.shutdown().await,
            Target::Rowlock(rowlock) => rowlock.close().await,
            Target::Http(_) => {}
        }
    }
}
