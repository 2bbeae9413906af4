//! The bank's books, pure: what it did for each reference, and the movements it made in order.
//! A reference is done once: asking again answers what was done (no second movement), and
//! asking again with another amount or direction is refused.
//!
//! This crate never contains: I/O, an async runtime, a clock or logging. The mock bank's HTTP
//! server (`kizo-bank`) and the simulator both keep these books (checked by
//! `sim/tests/pure_crates.rs`).

use std::collections::HashMap;

use kizo_settlement::reconcile::Movement;
use kizo_settlement::Kind;

/// The bank's side of a request: collections bring money in, payouts send it out.
pub type Direction = Kind;

/// What the bank did with one reference.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BankRecord {
    pub reference: uuid::Uuid,
    /// `collection` or `payout`.
    pub kind: String,
    pub amount: u64,
    pub account: String,
    /// `succeeded` or `declined`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    pub at_ms: u64,
    /// The movement's place on the statement (succeeded ones only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sequence: Option<u64>,
}

impl BankRecord {
    pub fn succeeded(&self) -> bool {
        self.status == "succeeded"
    }

    pub fn direction(&self) -> Option<Direction> {
        kind_of(&self.kind)
    }
}

pub fn kind_code(direction: Direction) -> &'static str {
    match direction {
        Kind::Deposit => "collection",
        Kind::Withdrawal => "payout",
    }
}

pub fn kind_of(code: &str) -> Option<Direction> {
    match code {
        "collection" => Some(Kind::Deposit),
        "payout" => Some(Kind::Withdrawal),
        _ => None,
    }
}

/// What the bank decides for a new reference (the fault plan's choice, or the simulator's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Move,
    Decline(String),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BankError {
    #[error("reference {0} was used for another amount or direction")]
    ReferenceReused(uuid::Uuid),
}

/// The most records one statement page holds.
pub const STATEMENT_PAGE_MAX: usize = 10_000;

#[derive(Default, Debug)]
pub struct Books {
    records: HashMap<uuid::Uuid, BankRecord>,
    /// Movements in order; `sequence` is the index + 1.
    movements: Vec<uuid::Uuid>,
}

impl Books {
    /// Rebuilds the books from records as journaled (in the order they were made).
    pub fn from_records(records: impl IntoIterator<Item = BankRecord>) -> Books {
        let mut books = Books::default();
        for record in records {
            if record.succeeded() {
                books.movements.push(record.reference);
                assert_eq!(
                    record.sequence,
                    Some(books.movements.len() as u64),
                    "journal out of order"
                );
            }
            books.records.insert(record.reference, record);
        }
        books
    }

    /// Does what `decision` says for a new reference, or answers what was done before. Returns
    /// the record and whether it is new (to be journaled).
    pub fn request(
        &mut self,
        direction: Direction,
        reference: uuid::Uuid,
        amount: u64,
        account: &str,
        decision: Decision,
        now_ms: u64,
    ) -> Result<(BankRecord, bool), BankError> {
        if let Some(done) = self.records.get(&reference) {
            if done.kind != kind_code(direction) || done.amount != amount {
                return Err(BankError::ReferenceReused(reference));
            }
            return Ok((done.clone(), false));
        }
        let record = match decision {
            Decision::Move => {
                self.movements.push(reference);
                BankRecord {
                    reference,
                    kind: kind_code(direction).to_string(),
                    amount,
                    account: account.to_string(),
                    status: "succeeded".into(),
                    reason: None,
                    at_ms: now_ms,
                    sequence: Some(self.movements.len() as u64),
                }
            }
            Decision::Decline(reason) => BankRecord {
                reference,
                kind: kind_code(direction).to_string(),
                amount,
                account: account.to_string(),
                status: "declined".into(),
                reason: Some(reason),
                at_ms: now_ms,
                sequence: None,
            },
        };
        self.records.insert(reference, record.clone());
        Ok((record, true))
    }

    pub fn status(&self, direction: Direction, reference: uuid::Uuid) -> Option<&BankRecord> {
        self.records
            .get(&reference)
            .filter(|r| r.kind == kind_code(direction))
    }

    /// Movements with a sequence above `after`, made in `[from_ms, to_ms]`, at most `limit`.
    pub fn statement(
        &self,
        after: u64,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Vec<&BankRecord> {
        self.movements
            .iter()
            .skip(after.min(usize::MAX as u64) as usize)
            .map(|reference| &self.records[reference])
            .filter(|r| (from_ms..=to_ms).contains(&r.at_ms))
            .take(limit.min(STATEMENT_PAGE_MAX))
            .collect()
    }

    pub fn movement_count(&self) -> u64 {
        self.movements.len() as u64
    }

    /// Every movement, as reconciliation reads it.
    pub fn movements(&self) -> Vec<Movement> {
        self.movements
            .iter()
            .map(|reference| movement_of(&self.records[reference]))
            .collect()
    }
}

pub fn movement_of(record: &BankRecord) -> Movement {
    Movement {
        reference: record.reference.as_u128(),
        kind: record.direction().expect("records hold known kinds"),
        amount: record.amount,
        at_ms: record.at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_moves_money_once() {
        let mut books = Books::default();
        let r = uuid::Uuid::from_u128(7);
        let (first, new) = books
            .request(Kind::Withdrawal, r, 500, "a", Decision::Move, 1)
            .unwrap();
        assert!(new && first.succeeded());
        let (again, new) = books
            .request(Kind::Withdrawal, r, 500, "a", Decision::Move, 2)
            .unwrap();
        assert!(!new);
        assert_eq!(again, first);
        assert_eq!(books.movement_count(), 1);
        assert_eq!(
            books.request(Kind::Withdrawal, r, 501, "a", Decision::Move, 3),
            Err(BankError::ReferenceReused(r))
        );
        assert_eq!(
            books.request(Kind::Deposit, r, 500, "a", Decision::Move, 3),
            Err(BankError::ReferenceReused(r))
        );
    }

    #[test]
    fn a_decline_is_remembered_and_moves_nothing() {
        let mut books = Books::default();
        let r = uuid::Uuid::from_u128(8);
        let (declined, _) = books
            .request(Kind::Deposit, r, 5, "a", Decision::Decline("no".into()), 1)
            .unwrap();
        assert!(!declined.succeeded());
        let (again, _) = books
            .request(Kind::Deposit, r, 5, "a", Decision::Move, 2)
            .unwrap();
        assert!(!again.succeeded(), "the first answer stands");
        assert_eq!(books.movement_count(), 0);
        assert_eq!(books.status(Kind::Deposit, r), Some(&declined));
        assert_eq!(books.status(Kind::Withdrawal, r), None);
    }

    #[test]
    fn the_statement_pages_and_rebuilds_from_the_journal() {
        let mut books = Books::default();
        let mut journal = vec![];
        for i in 1..=5u128 {
            let (record, _) = books
                .request(
                    Kind::Deposit,
                    uuid::Uuid::from_u128(i),
                    10,
                    "a",
                    Decision::Move,
                    i as u64 * 10,
                )
                .unwrap();
            journal.push(record);
        }
        assert_eq!(books.statement(0, 0, u64::MAX, 2).len(), 2);
        assert_eq!(books.statement(2, 0, u64::MAX, 10)[0].sequence, Some(3));
        assert_eq!(books.statement(0, 20, 30, 10).len(), 2);
        let rebuilt = Books::from_records(journal);
        assert_eq!(rebuilt.movements(), books.movements());
    }
}
