//! The audit of a run's change events (`--cdc-audit nats://...`): once the gateway says its
//! publishers have caught up (`/readyz`), the whole JetStream stream is read back and checked
//! against what the run was told: every acknowledged transfer is on it exactly once, no event
//! is there twice, and each partition's events are in its log's order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

/// What the audit found; it passes when nothing is missing, doubled or out of order.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CdcAudit {
    /// The events about the run's accounts.
    pub events: usize,
    /// Acknowledged transfers with no event.
    pub missing: usize,
    /// Events whose id was seen before, and transfers with two events of one kind.
    pub duplicates: usize,
    /// Events whose place in their partition's log is not after the one before.
    pub out_of_order: usize,
    /// The events about the run's accounts, by kind.
    pub kinds: BTreeMap<String, usize>,
}

impl CdcAudit {
    pub fn passed(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.out_of_order == 0
    }

    /// The one line a run prints.
    pub fn line(&self) -> String {
        format!(
            "cdc: events={} missing={} duplicates={} out_of_order={}",
            self.events, self.missing, self.duplicates, self.out_of_order
        )
    }
}

/// Why the stream could not be read or checked.
#[derive(Debug, thiserror::Error)]
pub enum CdcAuditError {
    /// The broker or the stream could not be reached or read.
    #[error("{what}: {detail}")]
    Broker { what: String, detail: String },
    /// An event that is not one of Kizo's (a JSON body without the field).
    #[error("event {sequence}: {detail}")]
    Event { sequence: u64, detail: String },
}

fn broker(what: impl Into<String>) -> impl FnOnce(&dyn std::fmt::Display) -> CdcAuditError {
    let what = what.into();
    move |error| CdcAuditError::Broker {
        what,
        detail: error.to_string(),
    }
}

/// How long the publishers get to catch up before the stream is read anyway.
pub const CATCH_UP_WITHIN: Duration = Duration::from_secs(120);

/// Waits until `base`'s `/readyz` reports no commit left to publish (or [`CATCH_UP_WITHIN`]
/// passes; the audit then finds what is missing).
pub async fn wait_caught_up(base: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + CATCH_UP_WITHIN;
    while Instant::now() < deadline {
        let lag = async {
            let body: serde_json::Value = client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            body["cdc"]["lag_commits"].as_u64()
        }
        .await;
        if lag == Some(0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads stream `stream` at `nats_url` whole and checks the events about `accounts` (every
/// event when it is empty) against `acknowledged`, the transfer ids the run was told exist.
pub async fn audit(
    nats_url: &str,
    stream: &str,
    accounts: &BTreeSet<u128>,
    acknowledged: &[u128],
) -> Result<CdcAudit, CdcAuditError> {
    let client = async_nats::connect(nats_url)
        .await
        .map_err(|e| broker(nats_url)(&e))?;
    let jetstream = async_nats::jetstream::new(client);
    let mut events_stream = jetstream
        .get_stream(stream)
        .await
        .map_err(|e| broker(format!("stream {stream}"))(&e))?;
    let last = events_stream
        .info()
        .await
        .map_err(|e| broker(format!("stream {stream}"))(&e))?
        .state
        .last_sequence;
    let mut found = CdcAudit::default();
    let mut ids: BTreeSet<String> = BTreeSet::new();
    let mut transfers: HashMap<(u128, String), usize> = HashMap::new();
    let mut places: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    if last > 0 {
        let consumer = events_stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
            .await
            .map_err(|e| broker(format!("a consumer of {stream}"))(&e))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| broker(format!("reading {stream}"))(&e))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| broker(format!("reading {stream}"))(&e))?;
            let sequence = message
                .info()
                .map_err(|e| broker(format!("a message of {stream}"))(&e))?
                .stream_sequence;
            let event: serde_json::Value =
                serde_json::from_slice(&message.payload).map_err(|e| CdcAuditError::Event {
                    sequence,
                    detail: e.to_string(),
                })?;
            check(
                &event,
                accounts,
                &mut found,
                &mut ids,
                &mut transfers,
                &mut places,
            )
            .map_err(|missing| CdcAuditError::Event {
                sequence,
                detail: format!("without {missing}"),
            })?;
            if sequence >= last {
                break;
            }
        }
    }
    let seen: BTreeSet<u128> = transfers.keys().map(|(id, _)| *id).collect();
    found.missing = acknowledged.iter().filter(|id| !seen.contains(id)).count();
    Ok(found)
}

fn check(
    event: &serde_json::Value,
    accounts: &BTreeSet<u128>,
    found: &mut CdcAudit,
    ids: &mut BTreeSet<String>,
    transfers: &mut HashMap<(u128, String), usize>,
    places: &mut BTreeMap<u64, (u64, u64)>,
) -> Result<(), &'static str> {
    let number = |value: &serde_json::Value| -> Option<u128> { value.as_str()?.parse().ok() };
    let account =
        |value: &serde_json::Value| number(value).is_some_and(|id| accounts.contains(&id));
    let transfer = &event["transfer"];
    let ours = accounts.is_empty()
        || account(&event["account"]["id"])
        || account(&transfer["debit_account_id"])
        || account(&transfer["credit_account_id"])
        || account(&event["expired"]["debit_account_id"])
        || account(&event["expired"]["credit_account_id"]);
    if !ours {
        return Ok(());
    }
    found.events += 1;
    let id = event["id"].as_str().ok_or("an id")?;
    if !ids.insert(id.to_string()) {
        found.duplicates += 1;
    }
    let kind = event["kind"].as_str().ok_or("a kind")?;
    *found.kinds.entry(kind.to_string()).or_default() += 1;
    // A leg of a transfer between partitions names the transfer in its user_data_128.
    let named = if kind.starts_with("cross.") {
        &transfer["user_data_128"]
    } else {
        &transfer["id"]
    };
    if let Some(transfer_id) = number(named) {
        let count = transfers
            .entry((transfer_id, kind.to_string()))
            .or_default();
        *count += 1;
        if *count > 1 {
            found.duplicates += 1;
        }
    }
    let partition = event["partition"].as_u64().ok_or("a partition")?;
    let place = (
        number(&event["lsn"]).ok_or("an LSN")? as u64,
        event["index"].as_u64().ok_or("an index")?,
    );
    match places.insert(partition, place) {
        Some(before) if before >= place => found.out_of_order += 1,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(id: &str, lsn: u64, index: u64, transfer: u128) -> serde_json::Value {
        json!({"id": id, "kind": "transfer.posted", "partition": 0, "lsn": lsn.to_string(), "index": index,
               "transfer": {"id": transfer.to_string(), "debit_account_id": "1", "credit_account_id": "2"}})
    }

    #[test]
    fn doubles_and_disorder_are_counted_and_others_accounts_ignored() {
        let accounts = BTreeSet::from([1u128, 2]);
        let mut found = CdcAudit::default();
        let (mut ids, mut transfers, mut places) = Default::default();
        for e in [
            event("0.1.0", 1, 0, 10),
            event("0.1.1", 1, 1, 11),
            event("0.1.1", 1, 1, 11),
            event("0.1.0", 1, 0, 10),
        ] {
            check(
                &e,
                &accounts,
                &mut found,
                &mut ids,
                &mut transfers,
                &mut places,
            )
            .unwrap();
        }
        let theirs = json!({"id": "0.2.0", "kind": "transfer.posted", "partition": 0, "lsn": "2", "index": 0,
            "transfer": {"id": "12", "debit_account_id": "7", "credit_account_id": "8"}});
        check(
            &theirs,
            &accounts,
            &mut found,
            &mut ids,
            &mut transfers,
            &mut places,
        )
        .unwrap();
        assert_eq!(found.events, 4);
        assert_eq!(found.duplicates, 4, "two ids again, two transfers again");
        assert_eq!(found.out_of_order, 2);
        assert!(!found.passed());
        assert_eq!(
            CdcAudit::default().line(),
            "cdc: events=0 missing=0 duplicates=0 out_of_order=0"
        );
    }
}
