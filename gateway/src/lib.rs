//! Kizo's HTTP gateway (`axum`): how people and services use the ledger.
//!
//! - [`config`]: flags and environment, secrets.
//! - [`server`]: starts the store, the log, the engine and the projector; routes and middleware.
//! - [`serve`]: the connection loop: a connection cap, header and body deadlines, the drain
//!   on shutdown.
//! - [`ledger`]: the batch ledger API (API key).
//! - [`wallet`], [`auth`]: the wallet API for people: signup with a wallet, login, refresh,
//!   logout, me; Argon2id passwords on a bounded pool, JWT access tokens, refresh tokens.
//! - [`metrics`]: `GET /metrics` for Prometheus, and the request metrics middleware.
//! - [`openapi`]: `GET /openapi.json`, generated from the handlers (checked in as
//!   `docs/openapi.json`).
//! - [`wire`]: the JSON forms of accounts and transfers (big numbers as decimal strings).
//! - [`payments`]: transfers between users, and the caller's own accounts and transfers.
//! - [`limits`]: rate limits on signup, login and refresh, per address and per email.
//! - [`idempotency`]: `Idempotency-Key` on the ledger API: the first answer kept durably and
//!   replayed.
//! - [`transfer_keys`]: `Idempotency-Key` on wallet transfers: the ledger remembers created
//!   transfers; refusals and running requests are kept here.
//! - [`settlements`]: deposits and withdrawals through the bank, the bank's callbacks, and the
//!   admin API of reconciliation; [`money`]: starting a settlement, without HTTP.
//! - [`snapshots`]: the admin API of snapshots.
//! - [`books`]: where ledger operations run: the one engine, or each account's partition
//!   on a cluster (here or at its owner), with transfers between partitions through clearing
//!   accounts. Handlers call the books, never an engine.
//! - [`cluster`]: a cluster node's lease loop and its engines, one per partition it holds;
//!   transfers between partitions, leg by leg, and their resumption.
//! - [`peers`]: calls between nodes (one partition's operation at its owner), and
//!   `/v1/admin/cluster`.
//! - [`ui`]: the web app (wallet, operator console, API documentation), embedded and served
//!   as written.
//! - [`events`]: what each record of the log becomes as a change event; [`cdc`] publishes
//!   them to NATS JetStream, [`live`] streams a user's to the web app, [`webhooks`] sends them
//!   to registered endpoints ([`webhook_api`] registers them and replays parked deliveries).
//! - [`error`], [`json`]: every error as `application/problem+json` with a stable code.
//!
//! This crate never decides about money: the wallet's rules are `kizo-wallet`'s, the ledger's
//! `kizo-ledger`'s, settlements' `kizo-settlement`'s. Handlers parse, authenticate, call and map.

pub mod auth;
pub mod avatars;
pub mod books;
pub mod cdc;
pub mod cluster;
pub mod config;
pub mod email;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod js_safe;
pub mod json;
pub mod ledger;
pub mod limits;
pub mod live;
pub mod mail;
pub mod metrics;
pub mod money;
pub mod month_cache;
pub mod openapi;
pub mod payments;
pub mod peers;
pub mod serve;
pub mod server;
pub mod settlements;
pub mod snapshots;
pub mod transfer_keys;
pub mod ui;
pub mod wallet;
pub mod webhook_api;
pub mod webhooks;
/// The JSON forms of accounts and transfers (`kizo-json-wire`).
pub use kizo_json_wire as wire;

pub use server::{Server, ServerConfig};
