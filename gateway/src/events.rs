//! Change events: what each record of the log becomes for the systems around the ledger
//! (JetStream through [`crate::cdc`], and later webhooks and the web app). Pure: no I/O here;
//! the publisher reads the log and hands each commit to [`events_of`].
//!
//! One record, one event, in the log's order; a failed id (a transient refusal) is no event.
//! An event's id is `<partition>.<lsn>.<index>` (the record's place in its partition's log),
//! the same however often it is published, so that a broker's deduplication (JetStream's
//! `Nats-Msg-Id`) and a consumer can drop a second copy. The schema is versioned
//! ([`SCHEMA`]); docs/events.md and docs/events.schema.json describe it.

use kizo_cluster::legs::clearing_account_of;
use kizo_engine::settlement::{DEPOSIT_CODE, WITHDRAWAL_CODE};
use kizo_engine::{Commit, Record};
use kizo_engine::{Transfer, TransferFlags};
use serde::{Deserialize, Serialize};

use crate::wire::{AccountJson, TransferJson, U128, U64};

/// The schema of every event this version publishes; a change that is not an addition gets
/// a new one.
pub const SCHEMA: &str = "kizo.event.v1";

/// What happened: the event's `kind`, and the last tokens of its subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    AccountCreated,
    /// A single-phase transfer, or the post of a pending one.
    TransferPosted,
    TransferPending,
    TransferVoided,
    /// A pending transfer's timeout passed: its amount is released.
    TransferExpired,
    /// A deposit's credit from the bank's account.
    DepositCredited,
    /// A withdrawal's hold on the wallet, before the bank is asked.
    WithdrawalHeld,
    /// The bank paid: the hold is posted.
    WithdrawalPaid,
    /// The bank did not pay: the hold is voided.
    WithdrawalReleased,
    /// A payment between partitions: the sender's hold, at the source.
    CrossHeld,
    /// ...the receiver's credit, at the destination.
    CrossCredited,
    /// ...the hold posted, at the source.
    CrossPosted,
    /// ...the hold voided (the destination refused), at the source.
    CrossVoided,
}

impl EventKind {
    pub const ALL: [EventKind; 13] = [
        EventKind::AccountCreated,
        EventKind::TransferPosted,
        EventKind::TransferPending,
        EventKind::TransferVoided,
        EventKind::TransferExpired,
        EventKind::DepositCredited,
        EventKind::WithdrawalHeld,
        EventKind::WithdrawalPaid,
        EventKind::WithdrawalReleased,
        EventKind::CrossHeld,
        EventKind::CrossCredited,
        EventKind::CrossPosted,
        EventKind::CrossVoided,
    ];

    pub const fn code(self) -> &'static str {
        match self {
            EventKind::AccountCreated => "account.created",
            EventKind::TransferPosted => "transfer.posted",
            EventKind::TransferPending => "transfer.pending",
            EventKind::TransferVoided => "transfer.voided",
            EventKind::TransferExpired => "transfer.expired",
            EventKind::DepositCredited => "settlement.deposit_credited",
            EventKind::WithdrawalHeld => "settlement.withdrawal_held",
            EventKind::WithdrawalPaid => "settlement.withdrawal_paid",
            EventKind::WithdrawalReleased => "settlement.withdrawal_released",
            EventKind::CrossHeld => "cross.held",
            EventKind::CrossCredited => "cross.credited",
            EventKind::CrossPosted => "cross.posted",
            EventKind::CrossVoided => "cross.voided",
        }
    }

    pub fn parse(code: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|kind| kind.code() == code)
    }
}

/// A pending transfer whose timeout passed (the log keeps its accounts and amount, not the
/// whole transfer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExpiredJson {
    pub pending_id: U128,
    pub debit_account_id: U128,
    pub credit_account_id: U128,
    pub amount: U128,
}

/// One change, as published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// `kizo.event.v1`.
    #[schema(example = "kizo.event.v1")]
    pub schema: String,
    /// `<partition>.<lsn>.<index>`: the record's place in its partition's log; the same on
    /// every publication of the event.
    #[schema(example = "0.1042.7")]
    pub id: String,
    /// account.created, transfer.posted, transfer.pending, transfer.voided, transfer.expired,
    /// settlement.deposit_credited, settlement.withdrawal_held, settlement.withdrawal_paid,
    /// settlement.withdrawal_released, cross.held, cross.credited, cross.posted, cross.voided.
    #[schema(example = "transfer.posted")]
    pub kind: String,
    /// The partition whose log holds it (0 on a single node). Events of one partition are
    /// published in its log's order.
    pub partition: u32,
    /// The commit's log sequence number in its partition.
    pub lsn: U64,
    /// The record's place in its commit.
    pub index: u32,
    pub ledger: u32,
    /// When the ledger applied it: the record's timestamp (RFC 3339, UTC, to the nanosecond).
    #[schema(example = "2026-12-05T13:11:05.337000123Z")]
    pub at: String,
    /// With account.created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountJson>,
    /// With every transfer and settlement kind: the transfer as the ledger stored it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferJson>,
    /// With transfer.expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired: Option<ExpiredJson>,
}

/// An event id's parts, `<partition>.<lsn>.<index>`, as [`events_of`] writes them.
pub fn parse_id(id: &str) -> Option<(u32, u64, u32)> {
    let mut parts = id.split('.');
    let place = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    parts.next().is_none().then_some(place)
}

impl Event {
    /// The subject it is published on: `<prefix>.<ledger>.<kind>`.
    pub fn subject(&self, prefix: &str) -> String {
        format!("{prefix}.{}.{}", self.ledger, self.kind)
    }
}

/// The event's JSON Schema (2020-12), as docs/events.schema.json holds it: the schemas the
/// OpenAPI document uses for accounts and transfers, under `$defs`.
pub fn json_schema() -> String {
    use utoipa::{PartialSchema, ToSchema};
    let mut defs = Vec::new();
    <Event as ToSchema>::schemas(&mut defs);
    let mut document = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA,
        "title": "A Kizo change event",
    });
    let root = serde_json::to_value(<Event as PartialSchema>::schema()).expect("a schema");
    for (key, value) in root.as_object().expect("an object schema") {
        document[key] = value.clone();
    }
    let mut named = serde_json::Map::new();
    for (name, schema) in defs {
        named.insert(name, serde_json::to_value(schema).expect("a schema"));
    }
    document["$defs"] = serde_json::Value::Object(named);
    let text = serde_json::to_string_pretty(&document).expect("a document");
    text.replace("#/components/schemas/", "#/$defs/") + "\n"
}

/// The pending transfers whose expiry a commit records: their ledger is not in the log's
/// record, so the publisher looks each up before it maps the commit.
pub fn expired_pending_ids(commit: &Commit) -> impl Iterator<Item = u128> + '_ {
    commit.records.iter().filter_map(|record| match record {
        Record::PendingExpired { pending_id, .. } => Some(*pending_id),
        _ => None,
    })
}

/// The events of one commit of `partition`'s log, in order. `ledger_of_pending` answers the
/// ledger of a pending transfer that expired (see [`expired_pending_ids`]); `None` when it
/// is not known, and then no event is made for the commit: the caller asks again later.
pub fn events_of(
    partition: u32,
    commit: &Commit,
    ledger_of_pending: impl Fn(u128) -> Option<u32>,
) -> Option<Vec<Event>> {
    let mut events = Vec::with_capacity(commit.records.len());
    for (index, record) in commit.records.iter().enumerate() {
        let event = |kind: EventKind, ledger: u32, at: u64| Event {
            schema: SCHEMA.to_string(),
            id: format!("{partition}.{}.{index}", commit.lsn),
            kind: kind.code().to_string(),
            partition,
            lsn: U64(commit.lsn),
            index: index as u32,
            ledger,
            at: crate::js_safe::rfc3339_ns(at),
            account: None,
            transfer: None,
            expired: None,
        };
        match *record {
            Record::AccountCreated(account) => events.push(Event {
                account: Some(account.into()),
                ..event(EventKind::AccountCreated, account.ledger, account.timestamp)
            }),
            Record::TransferCreated(transfer)
            | Record::PendingPosted { transfer, .. }
            | Record::PendingVoided { transfer, .. } => events.push(Event {
                transfer: Some(transfer.into()),
                ..event(
                    transfer_kind(record, &transfer),
                    transfer.ledger,
                    transfer.timestamp,
                )
            }),
            Record::PendingExpired {
                pending_id,
                debit_account_id,
                credit_account_id,
                amount,
            } => events.push(Event {
                expired: Some(ExpiredJson {
                    pending_id: U128(pending_id),
                    debit_account_id: U128(debit_account_id),
                    credit_account_id: U128(credit_account_id),
                    amount: U128(amount),
                }),
                ..event(
                    EventKind::TransferExpired,
                    ledger_of_pending(pending_id)?,
                    commit.timestamp_max,
                )
            }),
            Record::TransferFailed { .. } => {}
        }
    }
    Some(events)
}

/// The kind of a record that stores a transfer: a settlement's and a cluster leg's by their
/// code and accounts, any other by what it did.
fn transfer_kind(record: &Record, transfer: &Transfer) -> EventKind {
    let posted = matches!(record, Record::PendingPosted { .. });
    let voided = matches!(record, Record::PendingVoided { .. });
    let pending = !posted && !voided && transfer.flags.contains(TransferFlags::PENDING);
    let crossing = clearing_account_of(transfer.debit_account_id).is_some()
        || clearing_account_of(transfer.credit_account_id).is_some();
    match (transfer.code, crossing) {
        (_, true) if posted => EventKind::CrossPosted,
        (_, true) if voided => EventKind::CrossVoided,
        (_, true) if pending => EventKind::CrossHeld,
        (_, true) => EventKind::CrossCredited,
        (DEPOSIT_CODE, false) if !posted && !voided && !pending => EventKind::DepositCredited,
        (WITHDRAWAL_CODE, false) if pending => EventKind::WithdrawalHeld,
        (WITHDRAWAL_CODE, false) if posted => EventKind::WithdrawalPaid,
        (WITHDRAWAL_CODE, false) if voided => EventKind::WithdrawalReleased,
        _ if posted => EventKind::TransferPosted,
        _ if voided => EventKind::TransferVoided,
        _ if pending => EventKind::TransferPending,
        _ => EventKind::TransferPosted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kizo_engine::{Account, AccountFlags};

    fn commit(lsn: u64, records: Vec<Record>) -> Commit {
        Commit {
            lsn,
            timestamp_max: 1_000_000_123,
            records,
        }
    }

    fn transfer(id: u128, code: u16, flags: TransferFlags) -> Transfer {
        Transfer {
            flags,
            timestamp: 2_000_000_000,
            ..Transfer::new(id, 10, 20, 500, 840, code)
        }
    }

    #[test]
    fn each_record_is_one_event_with_its_place_in_the_log_as_id() {
        let mut account = Account::new(10, 840, 1);
        account.flags = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
        account.timestamp = 1_500_000_000;
        let records = vec![
            Record::AccountCreated(account),
            Record::TransferFailed {
                id: 9,
                result: kizo_engine::CreateTransferResult::DebitAccountNotFound,
            },
            Record::TransferCreated(transfer(1, 1, TransferFlags::empty())),
            Record::TransferCreated(transfer(2, 1, TransferFlags::PENDING)),
            Record::PendingPosted {
                transfer: transfer(3, 1, TransferFlags::POST_PENDING_TRANSFER),
                pending_amount: 500,
            },
            Record::PendingVoided {
                transfer: transfer(4, 1, TransferFlags::VOID_PENDING_TRANSFER),
                pending_amount: 500,
            },
            Record::PendingExpired {
                pending_id: 2,
                debit_account_id: 10,
                credit_account_id: 20,
                amount: 500,
            },
        ];
        let events = events_of(3, &commit(42, records), |id| (id == 2).then_some(978)).unwrap();
        let kinds: Vec<(&str, &str, u32)> = events
            .iter()
            .map(|e| (e.id.as_str(), e.kind.as_str(), e.ledger))
            .collect();
        assert_eq!(
            kinds,
            [
                ("3.42.0", "account.created", 840),
                ("3.42.2", "transfer.posted", 840),
                ("3.42.3", "transfer.pending", 840),
                ("3.42.4", "transfer.posted", 840),
                ("3.42.5", "transfer.voided", 840),
                ("3.42.6", "transfer.expired", 978),
            ]
        );
        assert_eq!(events[1].subject("kizo"), "kizo.840.transfer.posted");
        assert_eq!(parse_id(&events[1].id), Some((3, 42, 2)));
        for bad in ["", "3.42", "3.42.7.1", "a.1.2", "3.-1.2"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
        assert_eq!(events[0].at, "1970-01-01T00:00:01.500000000Z");
        assert_eq!(events[5].at, "1970-01-01T00:00:01.000000123Z");
        // Ids and amounts as strings; absent parts left out.
        let json = serde_json::to_value(&events[1]).unwrap();
        assert_eq!(json["transfer"]["amount"], "500");
        assert_eq!(json["lsn"], "42");
        assert_eq!(json["schema"], SCHEMA);
        assert!(json.get("account").is_none() && json.get("expired").is_none());
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, events[1]);
    }

    #[test]
    fn the_checked_in_schema_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.schema.json");
        let generated = json_schema();
        if std::env::var_os("KIZO_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/events.schema.json differs from the code's; run \
             `KIZO_WRITE_OPENAPI=1 cargo test -p kizo-gateway schema` and commit it"
        );
        let document: serde_json::Value = serde_json::from_str(&generated).unwrap();
        for name in ["TransferJson", "AccountJson", "ExpiredJson"] {
            assert!(document["$defs"][name].is_object(), "{name} is defined");
        }
        assert!(
            !generated.contains("#/components/"),
            "every reference is local"
        );
    }

    #[test]
    fn an_expiry_whose_ledger_is_unknown_makes_the_commit_wait() {
        let records = vec![Record::PendingExpired {
            pending_id: 2,
            debit_account_id: 10,
            credit_account_id: 20,
            amount: 500,
        }];
        let commit = commit(1, records);
        assert_eq!(expired_pending_ids(&commit).collect::<Vec<_>>(), [2]);
        assert!(events_of(0, &commit, |_| None).is_none());
    }

    #[test]
    fn settlements_and_legs_between_partitions_have_kinds_of_their_own() {
        let clearing = kizo_cluster::legs::clearing_account_id(840, 1);
        let leg = |flags, debit, credit| Transfer {
            flags,
            ..Transfer::new(7, debit, credit, 5, 840, 1)
        };
        let cases = [
            (
                Record::TransferCreated(transfer(1, DEPOSIT_CODE, TransferFlags::empty())),
                EventKind::DepositCredited,
            ),
            (
                Record::TransferCreated(transfer(1, WITHDRAWAL_CODE, TransferFlags::PENDING)),
                EventKind::WithdrawalHeld,
            ),
            (
                Record::PendingPosted {
                    transfer: transfer(1, WITHDRAWAL_CODE, TransferFlags::POST_PENDING_TRANSFER),
                    pending_amount: 500,
                },
                EventKind::WithdrawalPaid,
            ),
            (
                Record::PendingVoided {
                    transfer: transfer(1, WITHDRAWAL_CODE, TransferFlags::VOID_PENDING_TRANSFER),
                    pending_amount: 500,
                },
                EventKind::WithdrawalReleased,
            ),
            (
                Record::TransferCreated(leg(TransferFlags::PENDING, 10, clearing)),
                EventKind::CrossHeld,
            ),
            (
                Record::TransferCreated(leg(TransferFlags::empty(), clearing, 20)),
                EventKind::CrossCredited,
            ),
            (
                Record::PendingPosted {
                    transfer: leg(TransferFlags::POST_PENDING_TRANSFER, 10, clearing),
                    pending_amount: 5,
                },
                EventKind::CrossPosted,
            ),
            (
                Record::PendingVoided {
                    transfer: leg(TransferFlags::VOID_PENDING_TRANSFER, 10, clearing),
                    pending_amount: 5,
                },
                EventKind::CrossVoided,
            ),
        ];
        for (record, kind) in cases {
            let events = events_of(0, &commit(1, vec![record]), |_| None).unwrap();
            assert_eq!(events[0].kind, kind.code(), "{record:?}");
        }
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.code()), Some(kind));
        }
    }
}
