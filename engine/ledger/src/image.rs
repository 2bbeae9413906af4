//! What the engine holds in memory at one LSN, as plain data: what a snapshot holds. A ledger
//! saved with one shard count loads with another (each shard takes the ids it owns, and the
//! filters of every old shard), and an image knows nothing of files or encodings (the
//! `snapshots` crate writes and reads them).
//!
//! An image of shards that keep every transfer (`filters` empty) is the whole ledger, and
//! canonical: the same ledger state always gives the same image, whatever the shard count or
//! the order in which the shards were asked. An image of shards with a window holds accounts,
//! pending transfers, the window and the filters: its size depends on accounts and work in
//! flight, not on history, and which transfers it holds depends on when they left memory.

use crate::filter::IdFilter;
use crate::record::Commit;
use crate::results::CreateTransferResult;
use crate::shard::ShardState;
use crate::types::{Account, PendingStatus, Transfer, TransferFlags};

/// The ledger after commit `lsn`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerImage {
    /// The last commit included (0: the empty ledger).
    pub lsn: u64,
    /// The largest timestamp assigned up to `lsn`; the sequencer resumes after it.
    pub timestamp_max: u64,
    /// Every account, ordered by id.
    pub accounts: Vec<Account>,
    /// The transfers held in memory (created, posts and voids), ordered by timestamp: every
    /// one when `filters` is empty; otherwise the pending ones and the window.
    pub transfers: Vec<Transfer>,
    /// Where each pending transfer in `transfers` stands, ordered by id: exactly the transfers
    /// with the `PENDING` flag.
    pub pending: Vec<(u128, PendingStatus)>,
    /// Ids that failed for a transient reason, with that reason, ordered by id: every one when
    /// `filters` is empty, otherwise the window's.
    pub failed: Vec<(u128, CreateTransferResult)>,
    /// Empty: the image holds every transfer and failed id. Otherwise one filter per shard of
    /// the engine that saved it, in shard order: every id that shard ever committed; the ids
    /// not in `transfers` or `failed` are in the store.
    pub filters: Vec<IdFilter>,
}

/// Whether a saved ledger state after commit `lsn`, whose last timestamp is `timestamp_max`,
/// belongs to a log whose commit `lsn` is `commit_at_lsn`: the same LSN and the same
/// timestamp (timestamps are unique across a log, so another log's state, or a state of a log
/// that was replaced, does not match).
pub fn of_this_log(lsn: u64, timestamp_max: u64, commit_at_lsn: Option<&Commit>) -> bool {
    commit_at_lsn.is_some_and(|c| c.lsn == lsn && c.timestamp_max == timestamp_max)
}

/// Why an image does not describe a ledger the engine could have produced.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the ledger image is inconsistent: {0}")]
pub struct ImageError(pub String);

impl LedgerImage {
    /// Puts the parts gathered from shards (in any order) into canonical order.
    pub fn canonicalize(&mut self) {
        self.accounts.sort_unstable_by_key(|a| a.id);
        self.transfers.sort_unstable_by_key(|t| t.timestamp);
        self.pending.sort_unstable_by_key(|p| p.0);
        self.failed.sort_unstable_by_key(|f| f.0);
    }

    /// Whether the image holds every transfer (it has no filters).
    pub fn is_complete(&self) -> bool {
        self.filters.is_empty()
    }

    /// Checks everything a decided ledger guarantees, without trusting any stored balance:
    /// the image's structure ([`LedgerImage::check_structure`]), then, by building the one
    /// shard that owns every id ([`ShardState::from_image`]), that every transfer names
    /// existing accounts, that each balance is exactly what its transfers make (the pending
    /// balances only, when old transfers are in the store), that no id is stored twice and
    /// that no account is over its limit.
    pub fn check(&self) -> Result<(), ImageError> {
        self.check_structure()?;
        let window = (!self.is_complete()).then_some(usize::MAX);
        ShardState::from_image(0, 1, window, self).map(drop)
    }

    /// The checks that need no shard, each one pass over a list: every list in its order
    /// without repeats, timestamps within the image's clock, one status per pending transfer,
    /// and, per ledger, debits equal to credits. Start-up runs these before the shards build
    /// themselves, and the shards check the rest as they build.
    pub fn check_structure(&self) -> Result<(), ImageError> {
        let fail = |detail: String| Err(ImageError(detail));
        if self.lsn == 0 && !(self.accounts.is_empty() && self.transfers.is_empty()) {
            return fail("an image at LSN 0 holds data".into());
        }
        let late = |timestamp: u64| timestamp == 0 || timestamp > self.timestamp_max;
        // One pass over the accounts (the largest list): order, timestamps, and per ledger
        // (few of them) debits pending, posted, credits pending, posted.
        let mut ledgers: Vec<(u32, [u128; 4])> = Vec::new();
        let mut at = 0;
        let mut previous = None;
        for account in &self.accounts {
            if previous.is_some_and(|id| id >= account.id) {
                return fail(format!("account {} out of order or repeated", account.id));
            }
            previous = Some(account.id);
            if late(account.timestamp) {
                return fail(format!(
                    "account {} has timestamp {}",
                    account.id, account.timestamp
                ));
            }
            if ledgers.get(at).is_none_or(|(l, _)| *l != account.ledger) {
                at = match ledgers.iter().position(|(l, _)| *l == account.ledger) {
                    Some(found) => found,
                    None => {
                        ledgers.push((account.ledger, [0; 4]));
                        ledgers.len() - 1
                    }
                };
            }
            let totals = &mut ledgers[at].1;
            totals[0] = totals[0].wrapping_add(account.debits_pending);
            totals[1] = totals[1].wrapping_add(account.debits_posted);
            totals[2] = totals[2].wrapping_add(account.credits_pending);
            totals[3] = totals[3].wrapping_add(account.credits_posted);
        }
        if let Some((ledger, _)) = ledgers
            .iter()
            .find(|(_, [dp, dpo, cp, cpo])| dp != cp || dpo != cpo)
        {
            return fail(format!("ledger {ledger}: debits and credits differ"));
        }
        // One pass over the transfers: order (so every timestamp is within the image's clock
        // when the last one is), and how many are pending.
        let mut pending = 0;
        let mut previous = 0;
        for transfer in &self.transfers {
            if transfer.timestamp <= previous {
                return fail(format!("transfer {} out of timestamp order", transfer.id));
            }
            previous = transfer.timestamp;
            pending += usize::from(transfer.flags.contains(TransferFlags::PENDING));
        }
        if late(previous) && !self.transfers.is_empty() {
            return fail(format!("a transfer has timestamp {previous}"));
        }
        if pending != self.pending.len() {
            return fail(format!(
                "{} pending statuses for {pending} pending transfers",
                self.pending.len()
            ));
        }
        if let Some(pair) = self.pending.windows(2).find(|w| w[0].0 >= w[1].0) {
            return fail(format!(
                "pending status {} out of order or repeated",
                pair[1].0
            ));
        }
        if let Some(pair) = self.failed.windows(2).find(|w| w[0].0 >= w[1].0) {
            return fail(format!("failed id {} out of order or repeated", pair[1].0));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalEngine;
    use crate::round::Operation;
    use crate::types::AccountFlags;

    /// Ten wallets funded by a bank, payments, and a pending transfer posted and one voided.
    fn image() -> LedgerImage {
        let mut engine = LocalEngine::new(2);
        let mut accounts = vec![Account::new(1, 1, 1)];
        accounts.extend((2..=11).map(|id| Account {
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            ..Account::new(id * 1_000, 1, 1)
        }));
        engine.execute(vec![Operation::CreateAccounts(accounts)], 1_000);
        let mut transfers: Vec<Transfer> = (2..=11)
            .map(|id| Transfer::new(id, 1, id * 1_000, 500, 1, 1))
            .collect();
        transfers.push(Transfer {
            flags: TransferFlags::PENDING,
            ..Transfer::new(20, 2_000, 3_000, 100, 1, 1)
        });
        transfers.push(Transfer {
            flags: TransferFlags::PENDING,
            ..Transfer::new(21, 4_000, 5_000, 100, 1, 1)
        });
        transfers.push(Transfer {
            pending_id: 20,
            amount: 60,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Transfer::new(22, 0, 0, 0, 0, 0)
        });
        transfers.push(Transfer {
            pending_id: 21,
            flags: TransferFlags::VOID_PENDING_TRANSFER,
            ..Transfer::new(23, 0, 0, 0, 0, 0)
        });
        let outcomes = engine.execute(vec![Operation::CreateTransfers(transfers)], 2_000);
        assert!(
            format!("{outcomes:?}").matches("Created").count() == 14,
            "{outcomes:?}"
        );
        engine.image()
    }

    #[test]
    fn an_engine_image_passes() {
        assert_eq!(image().check(), Ok(()));
    }

    #[test]
    fn every_kind_of_inconsistency_is_found() {
        type Tamper = fn(&mut LedgerImage);
        let cases: [(&str, Tamper); 8] = [
            ("unknown account inside the range", |i| {
                i.transfers[3].credit_account_id = 4_500
            }),
            ("unknown account past the end", |i| {
                i.transfers[3].credit_account_id = 99_999
            }),
            ("a void names an unknown account", |i| {
                let void = i.transfers.iter_mut().find(|t| t.id == 23).unwrap();
                void.debit_account_id = 4_001;
            }),
            ("a transfer stored twice", |i| {
                let copy = Transfer {
                    timestamp: i.timestamp_max,
                    ..i.transfers[0]
                };
                i.transfers.push(copy);
            }),
            ("a pending transfer without its status", |i| {
                i.pending.clear()
            }),
            ("a status flipped", |i| {
                i.pending[1].1 = PendingStatus::Pending
            }),
            ("an account out of order", |i| i.accounts.swap(2, 3)),
            ("a transfer and a failure", |i| {
                i.failed
                    .push((i.transfers[0].id, CreateTransferResult::ExceedsCredits))
            }),
        ];
        for (what, tamper) in cases {
            let mut tampered = image();
            tamper(&mut tampered);
            assert!(tampered.check().is_err(), "{what} went unnoticed");
        }
    }
}
