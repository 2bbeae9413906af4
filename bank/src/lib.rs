//! Kizo's mock bank: where deposits come from and withdrawals go. It behaves like a real one
//! where it matters to us: payouts and collections are keyed by our reference and never move
//! money twice for one, their status can be asked, and a statement lists every movement. It
//! is also slow, wrong and late on demand ([`faults`]).
//!
//! - [`model`]: the books, pure: records by reference, movements in order.
//! - [`faults`]: latency, errors, late answers, declines, duplicate callbacks, outages.
//! - [`server`]: the bank as a service (`axum`), with an optional journal file.
//! - [`client`]: the bank as settlements see it: over HTTP, or in process.
//! - [`cli`]: `kizo-bank`'s flags.

pub mod cli;
pub mod client;
pub mod faults;
pub use kizo_bank_model as model;
pub mod server;

pub use client::{HttpBank, HttpBankError, InProcessBank};
pub use faults::Faults;
pub use server::{Bank, BankConfig};
