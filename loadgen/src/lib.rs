//! `kizo-loadgen`: Kizo's own load generator, and the proof of its numbers.
//!
//! A run drives a scenario ([`scenario`]) against a target ([`target`]): Kizo's gateway over
//! HTTP ([`http`], each worker on its own connection: [`lane`]), Kizo's engine in this process, or the row-locking PostgreSQL design Kizo
//! replaces ([`baseline`]). Load is a closed loop of virtual users or an open loop at a fixed
//! rate, timed from each request's intended send time ([`schedule`]). Latencies go into
//! histograms ([`stats`]); the end is a table, `--json`, or an HTML page ([`report`]). Every run
//! ends with an audit of the ledger through the target ([`audit`]): a run that broke a promise
//! fails, however fast it was. [`failover`] kills a node of a cluster under wallet load and
//! audits what the cluster acknowledged (`--cluster`).

pub mod audit;
pub mod baseline;
pub mod cdc_audit;
pub mod cli;
pub mod failover;
pub mod http;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod stats;
pub mod target;
