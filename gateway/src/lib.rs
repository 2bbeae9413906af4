//! Kizo's HTTP gateway (`axum`): how people and services use the ledger.
//!
//! - [`config`]: flags and environment, secrets.
//! - [`server`]: starts the store, the log, the engine and the projector; routes and middleware.
//! - [`ledger`]: the batch ledger API (API key).
//! - [`metrics`]: `GET /metrics` for Prometheus, and the request metrics middleware.
//! - [`openapi`]: `GET /openapi.json`, generated from the handlers (checked in as
//!   `docs/openapi.json`).
//! - [`wire`]: the JSON forms of accounts and transfers (big numbers as decimal strings).
//! - [`idempotency`]: `Idempotency-Key`: the first answer kept durably and replayed.
//! - [`error`], [`json`]: every error as `application/problem+json` with a stable code.
//!
//! The wallet API (users, sessions, idempotency keys) comes next (issue 5).

pub mod config;
pub mod error;
pub mod idempotency;
pub mod json;
pub mod ledger;
pub mod metrics;
pub mod openapi;
pub mod server;
pub mod wire;

pub use server::{Server, ServerConfig};
