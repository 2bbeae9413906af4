//! The whole ledger as plain data at one LSN: what a snapshot holds. An image knows nothing of
//! shards, so a ledger saved with one shard count loads with another (each shard takes the ids
//! it owns), and nothing of files or encodings (the `snapshots` crate writes and reads them).
//!
//! An image is canonical: the same ledger state always gives the same image, whatever the
//! shard count or the order in which the shards were asked, so two images compare with `==`.

use crate::results::CreateTransferResult;
use crate::types::{Account, AccountFlags, PendingStatus, Transfer, TransferFlags};

/// The ledger after commit `lsn`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerImage {
    /// The last commit included (0: the empty ledger).
    pub lsn: u64,
    /// The largest timestamp assigned up to `lsn`; the sequencer resumes after it.
    pub timestamp_max: u64,
    /// Every account, ordered by id.
    pub accounts: Vec<Account>,
    /// Every stored transfer (created, posts and voids), ordered by timestamp: the order in which
    /// they entered every account's history.
    pub transfers: Vec<Transfer>,
    /// Where each pending transfer stands, ordered by id: exactly the transfers with the
    /// `PENDING` flag.
    pub pending: Vec<(u128, PendingStatus)>,
    /// Ids that failed for a transient reason, with that reason, ordered by id.
    pub failed: Vec<(u128, CreateTransferResult)>,
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

    /// Checks everything a decided ledger guarantees, without trusting any stored balance:
    /// order and uniqueness, that every transfer names existing accounts, that each balance is
    /// exactly the sum of the transfers that made it, that debits equal credits per ledger and
    /// that no account is over its limit. One pass over the transfers per thread, each thread
    /// with a hash map of its share of the accounts.
    pub fn check(&self) -> Result<(), ImageError> {
        let fail = |detail: String| Err(ImageError(detail));
        if let Some(pair) = self.accounts.windows(2).find(|w| w[0].id >= w[1].id) {
            return fail(format!("account {} out of order or repeated", pair[1].id));
        }
        if let Some(pair) = self
            .transfers
            .windows(2)
            .find(|w| w[0].timestamp >= w[1].timestamp)
        {
            return fail(format!("transfer {} out of timestamp order", pair[1].id));
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
        if self.lsn == 0 && !(self.accounts.is_empty() && self.transfers.is_empty()) {
            return fail("an image at LSN 0 holds data".into());
        }
        if self.accounts.is_empty() && !self.transfers.is_empty() {
            return fail("transfers without accounts".into());
        }
        if let Some((id, _)) = self
            .failed
            .iter()
            .find(|(id, _)| self.pending.binary_search_by_key(id, |p| p.0).is_ok())
        {
            return fail(format!("id {id} is both pending and a failure"));
        }
        // The transfers are scanned once per thread; each thread derives the balances of one
        // slice of the accounts and checks the uniqueness of one slice of the transfer ids.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8)
            .min(self.accounts.len().max(1));
        let results: Vec<Result<usize, ImageError>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|k| scope.spawn(move || self.check_slice(k, threads)))
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().expect("checking never panics"))
                .collect()
        });
        let mut pending_seen = 0;
        for result in results {
            pending_seen += result?;
        }
        if pending_seen != self.pending.len() {
            return fail(format!(
                "{} pending statuses for {pending_seen} pending transfers",
                self.pending.len()
            ));
        }
        let mut per_ledger: std::collections::BTreeMap<u32, [u128; 4]> = Default::default();
        for account in &self.accounts {
            let totals = per_ledger.entry(account.ledger).or_default();
            let stored = [
                account.debits_pending,
                account.debits_posted,
                account.credits_pending,
                account.credits_posted,
            ];
            for (total, value) in totals.iter_mut().zip(stored) {
                *total = total.wrapping_add(value);
            }
        }
        for (ledger, [dp, dpo, cp, cpo]) in per_ledger {
            if dp != cp || dpo != cpo {
                return fail(format!("ledger {ledger}: debits and credits differ"));
            }
        }
        Ok(())
    }

    /// One thread's share of [`LedgerImage::check`]: the balances and limits of the `k`th of
    /// `threads` slices of the accounts, and the uniqueness, timestamps and pending statuses of
    /// the transfers whose id falls to it. Returns how many of its transfers are pending.
    fn check_slice(&self, k: usize, threads: usize) -> Result<usize, ImageError> {
        let fail = |detail: String| Err(ImageError(detail));
        let bound = |i: usize| self.accounts.len() * i / threads;
        let mine = &self.accounts[bound(k)..bound(k + 1)];
        let (Some(low), Some(high)) = (mine.first().map(|a| a.id), mine.last().map(|a| a.id))
        else {
            return Ok(0);
        };
        let mut derived: ahash::AHashMap<u128, [u128; 4]> =
            mine.iter().map(|a| (a.id, [0; 4])).collect();
        // (u128 division is a slow loop: fold to 64 bits first.)
        let owns_transfer =
            |id: u128| ((id as u64 ^ (id >> 64) as u64) % threads as u64) as usize == k;
        let mut transfer_ids = ahash::AHashSet::with_capacity(self.transfers.len() / threads);
        let mut pending_seen = 0usize;
        for transfer in &self.transfers {
            let is_pending = transfer.flags.contains(TransferFlags::PENDING);
            let status = if is_pending {
                match self.pending.binary_search_by_key(&transfer.id, |p| p.0) {
                    Ok(at) => Some(self.pending[at].1),
                    Err(_) => {
                        return fail(format!("pending transfer {} has no status", transfer.id))
                    }
                }
            } else {
                None
            };
            if owns_transfer(transfer.id) {
                if transfer.timestamp > self.timestamp_max || transfer.timestamp == 0 {
                    return fail(format!(
                        "transfer {} has timestamp {}",
                        transfer.id, transfer.timestamp
                    ));
                }
                if !transfer_ids.insert(transfer.id) {
                    return fail(format!("transfer {} stored twice", transfer.id));
                }
                if self
                    .failed
                    .binary_search_by_key(&transfer.id, |f| f.0)
                    .is_ok()
                {
                    return fail(format!(
                        "id {} is both a transfer and a failure",
                        transfer.id
                    ));
                }
                pending_seen += usize::from(is_pending);
            }
            // Which balance the transfer's amount stands in now: a void moves nothing, a
            // pending transfer counts only while it is still pending.
            let slot = match status {
                Some(PendingStatus::Pending) => 0,
                Some(_) => continue,
                None if transfer
                    .flags
                    .contains(TransferFlags::VOID_PENDING_TRANSFER) =>
                {
                    continue
                }
                None => 1,
            };
            for (account_id, side) in [
                (transfer.debit_account_id, 0),
                (transfer.credit_account_id, 2),
            ] {
                if account_id < low || account_id > high {
                    if self
                        .accounts
                        .binary_search_by_key(&account_id, |a| a.id)
                        .is_err()
                    {
                        return fail(format!(
                            "transfer {} names unknown account {account_id}",
                            transfer.id
                        ));
                    }
                    continue;
                }
                let Some(balances) = derived.get_mut(&account_id) else {
                    return fail(format!(
                        "transfer {} names unknown account {account_id}",
                        transfer.id
                    ));
                };
                let sum = &mut balances[side + slot];
                *sum = match sum.checked_add(transfer.amount) {
                    Some(total) => total,
                    None => return fail(format!("account {account_id} overflows")),
                };
            }
        }
        for account in mine {
            if account.timestamp > self.timestamp_max {
                return fail(format!(
                    "account {} has a timestamp after the image's",
                    account.id
                ));
            }
            let derived = derived[&account.id];
            let stored = [
                account.debits_pending,
                account.debits_posted,
                account.credits_pending,
                account.credits_posted,
            ];
            if stored != derived {
                return fail(format!(
                    "account {} holds {stored:?} (debits pending, posted, credits pending, \
                     posted); its transfers make {derived:?}",
                    account.id
                ));
            }
            let flags = account.flags;
            let debits = account.debits_pending.checked_add(account.debits_posted);
            let credits = account.credits_pending.checked_add(account.credits_posted);
            if flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
                && debits.is_none_or(|d| d > account.credits_posted)
                || flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
                    && credits.is_none_or(|c| c > account.debits_posted)
            {
                return fail(format!("account {} is over its limit", account.id));
            }
        }
        Ok(pending_seen)
    }
}
