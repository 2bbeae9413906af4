//! One shard's state: the accounts it owns, the transfers whose ids it owns (with the status of
//! pending ones and the ids that failed), and each local account's history. It answers reads
//! and applies commits; it decides nothing, and knows nothing about actors, tokio or storage.

use std::collections::BTreeSet;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use ahash::AHashMap;

use crate::image::{ImageError, LedgerImage};
use crate::record::{Commit, Leg, Record, Side};
use crate::results::CreateTransferResult;
use crate::routing::shard_of;
use crate::types::{Account, AccountFilter, PendingStatus, Transfer, TransferFlags};

/// What a round needs from one shard: only ids this shard owns.
#[derive(Clone, Debug, Default)]
pub struct ReadRequest {
    pub accounts: Vec<u128>,
    /// Transfer ids: events' own ids (to find retries) and the pending transfers they name.
    pub transfers: Vec<u128>,
    /// Also return the pending transfers that expire at or before this time (ns); 0 for none.
    pub expiring_up_to: u64,
}

#[derive(Clone, Debug, Default)]
pub struct ReadReply {
    /// The accounts found, each once (requests may repeat an id).
    pub accounts: Vec<Account>,
    /// The ids asked for and not found.
    pub missing_accounts: Vec<u128>,
    pub transfers: Vec<(Transfer, Option<PendingStatus>)>,
    pub failed: Vec<(u128, CreateTransferResult)>,
    pub expiring: Vec<Transfer>,
}

#[derive(Clone, Copy, Debug)]
struct HistoryEntry {
    timestamp: u64,
    transfer_id: u128,
    is_debit: bool,
}

/// An account with its transfers in timestamp order, so one lookup serves both.
#[derive(Debug)]
struct LocalAccount {
    account: Account,
    history: Vec<HistoryEntry>,
    /// The last read that returned this account (to return it once per read).
    read_mark: u64,
}

#[derive(Debug)]
pub struct ShardState {
    index: usize,
    shard_count: usize,
    accounts: AccountTable,
    transfers: TransferStore,
    pending: AHashMap<u128, PendingStatus>,
    /// Pending transfers with a timeout that are still pending: (expires_at, timestamp, id).
    expiry: BTreeSet<(u64, u64, u128)>,
    applied_lsn: u64,
    /// The largest timestamp of the commits applied.
    timestamp_max: u64,
    /// Reads served so far.
    reads: u64,
}

impl ShardState {
    pub fn new(index: usize, shard_count: usize) -> Self {
        assert!(index < shard_count);
        Self {
            index,
            shard_count,
            accounts: AccountTable::default(),
            transfers: TransferStore::default(),
            pending: AHashMap::new(),
            expiry: BTreeSet::new(),
            applied_lsn: 0,
            timestamp_max: 0,
            reads: 0,
        }
    }

    /// The shard `index` of `shard_count` as of `image`: the accounts, transfers, statuses and
    /// failures whose ids it owns, and the history of each of its accounts (every transfer
    /// that touches it, from whichever shard owns the transfer).
    ///
    /// Nothing in the image is trusted: its accounts' balances are not copied but derived
    /// from the transfers (in the same pass that builds the histories, at the cost of a few
    /// additions), then compared with the image's, and the limits checked. An image that does
    /// not describe a ledger the engine could have made is refused; the shards never panic on
    /// it. The image's order is [`LedgerImage::check_structure`]'s to check.
    pub fn from_image(
        index: usize,
        shard_count: usize,
        image: &LedgerImage,
    ) -> Result<Self, ImageError> {
        let fail = |detail: String| Err(ImageError(detail));
        let mut shard = Self::new(index, shard_count);
        let owns = |id: u128| shard_of(id, shard_count) == index;
        // An even share, and a little more: ids spread evenly over the shards.
        let share = image.accounts.len() / shard_count;
        shard.accounts.reserve(share + share / 64 + 16);
        // Each account starts with its stored balances and its place in the image (in
        // `read_mark`, unused until the shard serves reads). Each transfer's effect is taken
        // off its accounts' balances; at the end every balance must be exactly zero, and the
        // stored ones are put back where transfers touched them. So the comparison is one
        // pass over the shard's own map, with no lookup per account.
        const TOUCHED: u64 = 1 << 63;
        for (at, account) in image.accounts.iter().enumerate() {
            if !owns(account.id) {
                continue;
            }
            if !account.within_limits() {
                return fail(format!("account {} is over its limit", account.id));
            }
            let local = LocalAccount {
                account: *account,
                history: Vec::new(),
                read_mark: at as u64,
            };
            if !shard.accounts.insert(local) {
                return fail(format!("account {} stored twice", account.id));
            }
        }
        let unexplained =
            |id: u128| format!("account {id}: its balances are not what its transfers make");
        for transfer in &image.transfers {
            if owns(transfer.id) && !shard.transfers.try_insert(*transfer) {
                return fail(format!("transfer {} stored twice", transfer.id));
            }
            // Where the amount stands now: pending while the transfer is, posted for a
            // single-phase transfer or a post; a void, or a resolved pending transfer, moves
            // nothing (its post or void is a transfer of its own).
            let pending = transfer.flags.contains(TransferFlags::PENDING);
            let counts = if pending {
                match image.pending.binary_search_by_key(&transfer.id, |p| p.0) {
                    Ok(at) => image.pending[at].1 == PendingStatus::Pending,
                    Err(_) => {
                        return fail(format!("pending transfer {} has no status", transfer.id))
                    }
                }
            } else {
                !transfer
                    .flags
                    .contains(TransferFlags::VOID_PENDING_TRANSFER)
            };
            for (account_id, is_debit) in [
                (transfer.debit_account_id, true),
                (transfer.credit_account_id, false),
            ] {
                if !owns(account_id) {
                    continue;
                }
                let Some(local) = shard.accounts.get_mut(account_id) else {
                    return fail(format!(
                        "transfer {} names unknown account {account_id}",
                        transfer.id
                    ));
                };
                if local
                    .history
                    .last()
                    .is_some_and(|h| h.timestamp >= transfer.timestamp)
                {
                    return fail(format!("transfer {} out of timestamp order", transfer.id));
                }
                local.record(transfer, is_debit);
                if counts {
                    local.read_mark |= TOUCHED;
                    let a = &mut local.account;
                    let balance = match (is_debit, pending) {
                        (true, true) => &mut a.debits_pending,
                        (true, false) => &mut a.debits_posted,
                        (false, true) => &mut a.credits_pending,
                        (false, false) => &mut a.credits_posted,
                    };
                    *balance = match balance.checked_sub(transfer.amount) {
                        Some(rest) => rest,
                        None => return fail(unexplained(account_id)),
                    };
                }
            }
        }
        for local in shard.accounts.iter_mut() {
            let a = &mut local.account;
            if (a.debits_pending | a.debits_posted | a.credits_pending | a.credits_posted) != 0 {
                return fail(unexplained(a.id));
            }
            if local.read_mark & TOUCHED != 0 {
                *a = image.accounts[(local.read_mark & !TOUCHED) as usize];
            }
            local.read_mark = 0;
        }
        for &(id, status) in image.pending.iter().filter(|p| owns(p.0)) {
            let Some(transfer) = shard.transfers.get(id).copied() else {
                return fail(format!(
                    "a pending status for transfer {id}, which is not stored"
                ));
            };
            if !transfer.flags.contains(TransferFlags::PENDING) {
                return fail(format!(
                    "a pending status for transfer {id}, which is not pending"
                ));
            }
            shard.pending.insert(id, status);
            if let (PendingStatus::Pending, Some(expires_at)) = (status, transfer.expires_at()) {
                shard.expiry.insert((expires_at, transfer.timestamp, id));
            }
        }
        for &(id, result) in image.failed.iter().filter(|f| owns(f.0)) {
            if shard.transfers.find(id).is_some() {
                return fail(format!("id {id} is both a transfer and a failure"));
            }
            shard.transfers.fail(id, result);
        }
        shard.applied_lsn = image.lsn;
        shard.timestamp_max = image.timestamp_max;
        Ok(shard)
    }

    /// Adds what this shard owns to `image` (in no particular order: see
    /// [`LedgerImage::canonicalize`]).
    fn export_into(&self, image: &mut LedgerImage) {
        image.lsn = self.applied_lsn;
        image.timestamp_max = image.timestamp_max.max(self.timestamp_max);
        image
            .accounts
            .extend(self.accounts.iter().map(|local| local.account));
        image
            .transfers
            .extend(self.transfers.chunks.iter().flatten().copied());
        image
            .pending
            .extend(self.pending.iter().map(|(id, status)| (*id, *status)));
        image.failed.extend(
            self.transfers
                .by_id
                .iter()
                .filter_map(|(id, slot)| match slot {
                    Slot::Failed(result) => Some((*id, *result)),
                    Slot::Transfer(_) => None,
                }),
        );
    }

    /// The whole ledger held by `shards`, all at one LSN, in canonical order.
    pub fn image_of(shards: &[ShardState]) -> LedgerImage {
        let mut image = LedgerImage::default();
        assert!(
            shards
                .windows(2)
                .all(|w| w[0].applied_lsn == w[1].applied_lsn),
            "the shards of one image are at one LSN"
        );
        for shard in shards {
            shard.export_into(&mut image);
        }
        image.canonicalize();
        image
    }

    pub fn index(&self) -> usize {
        self.index
    }

    /// The last commit applied; commits apply in LSN order without gaps.
    pub fn applied_lsn(&self) -> u64 {
        self.applied_lsn
    }

    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.iter().map(|local| &local.account)
    }

    #[inline]
    fn owns(&self, id: u128) -> bool {
        shard_of(id, self.shard_count) == self.index
    }

    pub fn read(&mut self, request: &ReadRequest) -> ReadReply {
        let mut reply = ReadReply {
            accounts: Vec::with_capacity(request.accounts.len()),
            transfers: Vec::with_capacity(request.transfers.len().min(1024)),
            ..ReadReply::default()
        };
        // Hot accounts recur across a batch: each is returned once, marked with this read.
        self.reads += 1;
        for &id in &request.accounts {
            debug_assert!(self.owns(id));
            match self.accounts.get_mut(id) {
                Some(local) if local.read_mark == self.reads => {}
                Some(local) => {
                    local.read_mark = self.reads;
                    reply.accounts.push(local.account);
                }
                None => reply.missing_accounts.push(id),
            }
        }
        for &id in &request.transfers {
            debug_assert!(self.owns(id));
            match self.transfers.find(id) {
                Some(Found::Transfer(transfer)) => reply
                    .transfers
                    .push((*transfer, self.pending.get(&id).copied())),
                Some(Found::Failed(result)) => reply.failed.push((id, result)),
                None => {}
            }
        }
        if request.expiring_up_to != 0 {
            for &(expires_at, _, id) in &self.expiry {
                if expires_at > request.expiring_up_to {
                    break;
                }
                reply
                    .expiring
                    .push(*self.transfers.get(id).expect("an expiring transfer exists"));
            }
        }
        reply
    }

    /// Applies the parts of a commit this shard owns.
    pub fn apply(&mut self, commit: &Commit) {
        self.apply_part(commit, 0..commit.records.len());
    }

    /// Applies `commit.records[part]`; the part that ends the records completes the commit.
    /// Parts must come in order and cover the records; in between, the state is half a commit
    /// and must not be read (the actor applies a large commit in parts only to let other tasks
    /// run between them, and serves nothing until the last).
    pub fn apply_part(&mut self, commit: &Commit, part: std::ops::Range<usize>) {
        assert_eq!(
            commit.lsn,
            self.applied_lsn + 1,
            "shard {}: commits apply in order without gaps",
            self.index
        );
        for record in &commit.records[part.clone()] {
            self.apply_record(record);
        }
        if part.end == commit.records.len() {
            self.applied_lsn = commit.lsn;
            self.timestamp_max = commit.timestamp_max;
        }
    }

    fn apply_record(&mut self, record: &Record) {
        match *record {
            Record::AccountCreated(account) => {
                if self.owns(account.id) {
                    let local = LocalAccount {
                        account,
                        history: Vec::new(),
                        read_mark: 0,
                    };
                    let added = self.accounts.insert(local);
                    assert!(added, "account {} created twice", account.id);
                }
            }
            Record::TransferCreated(transfer) => {
                self.store_transfer(&transfer);
                if self.owns(transfer.id) && transfer.flags.contains(TransferFlags::PENDING) {
                    self.pending.insert(transfer.id, PendingStatus::Pending);
                    if let Some(expires_at) = transfer.expires_at() {
                        self.expiry
                            .insert((expires_at, transfer.timestamp, transfer.id));
                    }
                }
            }
            Record::PendingPosted { transfer, .. } => {
                self.store_transfer(&transfer);
                self.resolve_pending(transfer.pending_id, PendingStatus::Posted);
            }
            Record::PendingVoided { transfer, .. } => {
                self.store_transfer(&transfer);
                self.resolve_pending(transfer.pending_id, PendingStatus::Voided);
            }
            Record::PendingExpired { pending_id, .. } => {
                self.resolve_pending(pending_id, PendingStatus::Expired);
            }
            Record::TransferFailed { id, result } => {
                if self.owns(id) {
                    self.transfers.fail(id, result);
                }
            }
        }
        if let Some(legs) = record.legs() {
            self.apply_legs(legs, record.transfer());
        }
    }

    fn store_transfer(&mut self, transfer: &Transfer) {
        if self.owns(transfer.id) {
            self.transfers.insert(*transfer);
        }
    }

    fn resolve_pending(&mut self, pending_id: u128, status: PendingStatus) {
        if !self.owns(pending_id) {
            return;
        }
        let old = self.pending.insert(pending_id, status);
        assert_eq!(
            old,
            Some(PendingStatus::Pending),
            "pending transfer {pending_id} resolved twice"
        );
        let pending = *self
            .transfers
            .get(pending_id)
            .expect("a pending transfer exists");
        if let Some(expires_at) = pending.expires_at() {
            let removed = self
                .expiry
                .remove(&(expires_at, pending.timestamp, pending_id));
            assert!(removed);
        }
    }

    /// Changes the balances of the record's local accounts and adds its transfer, if it has
    /// one, to their history.
    #[inline]
    fn apply_legs(&mut self, [debit, credit]: [Leg; 2], transfer: Option<&Transfer>) {
        self.apply_leg(&debit, transfer);
        self.apply_leg(&credit, transfer);
    }

    #[inline(always)]
    fn apply_leg(&mut self, leg: &Leg, transfer: Option<&Transfer>) {
        let Some(local) = self.local_account(leg.account_id) else {
            return;
        };
        // Paired with the decider's checks: applying a commit that leaves u128 or breaks a limit
        // would make the books wrong, so these stay on in release builds.
        if leg.apply(&mut local.account).is_err() || !local.account.within_limits() {
            corrupt_leg(leg, &local.account);
        }
        if let Some(transfer) = transfer {
            local.record(transfer, leg.side == Side::Debit);
        }
    }

    #[inline]
    fn local_account(&mut self, id: u128) -> Option<&mut LocalAccount> {
        if !self.owns(id) {
            return None;
        }
        let local = self.accounts.get_mut(id);
        assert!(local.is_some(), "a commit touches unknown account {id}");
        local
    }

    /// Where a pending transfer this shard owns stands (`None` for other transfers).
    pub fn pending_status(&self, id: u128) -> Option<PendingStatus> {
        self.pending.get(&id).copied()
    }

    pub fn account(&self, id: u128) -> Option<&Account> {
        self.accounts.get(id).map(|local| &local.account)
    }

    pub fn transfer(&self, id: u128) -> Option<&Transfer> {
        self.transfers.get(id)
    }

    pub fn lookup_accounts(&self, ids: &[u128]) -> Vec<Account> {
        ids.iter()
            .filter_map(|&id| self.account(id).copied())
            .collect()
    }

    pub fn lookup_transfers(&self, ids: &[u128]) -> Vec<Transfer> {
        ids.iter()
            .filter_map(|&id| self.transfer(id).copied())
            .collect()
    }

    /// Ids of the transfers of a local account that match the filter, in the filter's order.
    pub fn account_transfer_ids(&self, filter: &AccountFilter) -> Vec<u128> {
        debug_assert!(self.owns(filter.account_id));
        let Some(LocalAccount { history, .. }) = self.accounts.get(filter.account_id) else {
            return Vec::new();
        };
        let min = filter.timestamp_min;
        let max = if filter.timestamp_max == 0 {
            u64::MAX
        } else {
            filter.timestamp_max
        };
        let start = history.partition_point(|h| h.timestamp < min);
        let end = history.partition_point(|h| h.timestamp <= max);
        let in_range = &history[start..end.max(start)];
        let wanted =
            |h: &&HistoryEntry| (h.is_debit && filter.debits) || (!h.is_debit && filter.credits);
        let take = |entries: &mut dyn Iterator<Item = &HistoryEntry>| {
            entries
                .filter(wanted)
                .take(filter.limit as usize)
                .map(|h| h.transfer_id)
                .collect()
        };
        if filter.reversed {
            take(&mut in_range.iter().rev())
        } else {
            take(&mut in_range.iter())
        }
    }
}

impl LocalAccount {
    fn record(&mut self, transfer: &Transfer, is_debit: bool) {
        debug_assert!(self
            .history
            .last()
            .is_none_or(|h| h.timestamp < transfer.timestamp));
        self.history.push(HistoryEntry {
            timestamp: transfer.timestamp,
            transfer_id: transfer.id,
            is_debit,
        });
    }
}

/// The accounts a shard owns: a list in the order they were added, found through a hash
/// index of positions in it (4 bytes an entry). Lookups touch the index at random, so it is
/// kept small: 40 MB for 5,000,000 accounts, where a map holding the accounts themselves
/// takes 1.4 GB. A shard built from a snapshot writes its list in order instead of
/// scattering 176-byte entries over fresh memory.
#[derive(Debug, Default)]
struct AccountTable {
    list: Vec<LocalAccount>,
    index: hashbrown::HashTable<u32>,
    hasher: ahash::RandomState,
}

impl AccountTable {
    /// Most accounts one shard holds: positions are 32-bit.
    const LEN_MAX: usize = u32::MAX as usize;

    fn reserve(&mut self, additional: usize) {
        let Self {
            list,
            index,
            hasher,
        } = self;
        list.reserve_exact(additional);
        index.reserve(additional, |&at| {
            hasher.hash_one(list[at as usize].account.id)
        });
    }

    #[inline]
    fn position(&self, id: u128) -> Option<usize> {
        let list = &self.list;
        self.index
            .find(self.hasher.hash_one(id), |&at| {
                list[at as usize].account.id == id
            })
            .map(|&at| at as usize)
    }

    #[inline]
    fn get(&self, id: u128) -> Option<&LocalAccount> {
        self.position(id).map(|at| &self.list[at])
    }

    #[inline]
    fn get_mut(&mut self, id: u128) -> Option<&mut LocalAccount> {
        self.position(id).map(|at| &mut self.list[at])
    }

    /// Adds `local`, unless an account with its id is there already (then false).
    fn insert(&mut self, local: LocalAccount) -> bool {
        let Self {
            list,
            index,
            hasher,
        } = self;
        let id = local.account.id;
        let entry = index.entry(
            hasher.hash_one(id),
            |&at| list[at as usize].account.id == id,
            |&at| hasher.hash_one(list[at as usize].account.id),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                assert!(
                    list.len() < Self::LEN_MAX,
                    "a shard holds at most 2^32 - 1 accounts"
                );
                vacant.insert(list.len() as u32);
                list.push(local);
                true
            }
        }
    }

    fn iter(&self) -> std::slice::Iter<'_, LocalAccount> {
        self.list.iter()
    }

    fn iter_mut(&mut self) -> std::slice::IterMut<'_, LocalAccount> {
        self.list.iter_mut()
    }
}

/// What a shard knows of a transfer id.
enum Found<'a> {
    Transfer(&'a Transfer),
    Failed(CreateTransferResult),
}

#[derive(Clone, Copy, Debug)]
enum Slot {
    /// Position in the chunks.
    Transfer(u64),
    Failed(CreateTransferResult),
}

/// In the fingerprint index: the id is in `by_id`, not in the chunks.
const ELSEWHERE: u64 = u64::MAX;

/// Transfers in the order they were created, in fixed-size chunks (growing never copies a
/// transfer), found through an index of 16-byte entries keyed by a 64-bit fingerprint of the
/// id (a keyed hash, so clients cannot aim at collisions). The index is the shard's largest
/// random-access structure, and most lookups are of new ids: half-size entries halve the
/// memory those lookups and inserts touch. The rare id whose fingerprint another id took, and
/// every failed id, live in `by_id`.
#[derive(Debug)]
struct TransferStore {
    chunks: Vec<Vec<Transfer>>,
    index: HashMap<u64, u64, BuildHasherDefault<Prehashed>>,
    by_id: AHashMap<u128, Slot>,
    fingerprints: ahash::RandomState,
    /// All ones, except in tests that force collisions.
    fingerprint_mask: u64,
    len: usize,
}

impl Default for TransferStore {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            index: HashMap::default(),
            by_id: AHashMap::new(),
            fingerprints: ahash::RandomState::new(),
            fingerprint_mask: u64::MAX,
            len: 0,
        }
    }
}

impl TransferStore {
    const CHUNK: usize = 1 << 16;

    fn fingerprint(&self, id: u128) -> u64 {
        self.fingerprints.hash_one(id) & self.fingerprint_mask
    }

    fn at(&self, position: u64) -> &Transfer {
        let position = position as usize;
        &self.chunks[position / Self::CHUNK][position % Self::CHUNK]
    }

    fn find(&self, id: u128) -> Option<Found<'_>> {
        let position = *self.index.get(&self.fingerprint(id))?;
        if position != ELSEWHERE && self.at(position).id == id {
            return Some(Found::Transfer(self.at(position)));
        }
        self.by_id.get(&id).map(|slot| match *slot {
            Slot::Transfer(position) => Found::Transfer(self.at(position)),
            Slot::Failed(result) => Found::Failed(result),
        })
    }

    fn get(&self, id: u128) -> Option<&Transfer> {
        match self.find(id) {
            Some(Found::Transfer(transfer)) => Some(transfer),
            _ => None,
        }
    }

    fn insert(&mut self, transfer: Transfer) {
        let id = transfer.id;
        assert!(
            self.try_insert(transfer),
            "transfer {id} created or failed twice"
        );
    }

    /// Stores `transfer` unless its id is already stored or failed (then `false`).
    fn try_insert(&mut self, transfer: Transfer) -> bool {
        let position = self.len as u64;
        let fingerprint = self.fingerprint(transfer.id);
        // A vacant fingerprint proves the id new; only a taken one needs the full check.
        if let Entry::Vacant(entry) = self.index.entry(fingerprint) {
            entry.insert(position);
        } else {
            if self.find(transfer.id).is_some() {
                return false;
            }
            self.by_id.insert(transfer.id, Slot::Transfer(position));
        }
        if self.len.is_multiple_of(Self::CHUNK) {
            self.chunks.push(Vec::with_capacity(Self::CHUNK));
        }
        self.chunks
            .last_mut()
            .expect("a chunk with room")
            .push(transfer);
        self.len += 1;
        true
    }

    fn fail(&mut self, id: u128, result: CreateTransferResult) {
        assert!(
            self.find(id).is_none(),
            "transfer {id} created or failed twice"
        );
        let fingerprint = self.fingerprint(id);
        self.index.entry(fingerprint).or_insert(ELSEWHERE);
        self.by_id.insert(id, Slot::Failed(result));
    }
}

/// The hasher of keys that are already uniform 64-bit hashes.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; fold anything else rather than lose it.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// A decided commit that would take an account outside u128 or past its limits: the decider
/// and the shards disagree, and applying it would corrupt the books.
#[cold]
#[inline(never)]
fn corrupt_leg(leg: &Leg, account: &Account) -> ! {
    panic!(
        "a decided commit takes account {} outside u128 or past its limits: {leg:?} on {account:?}",
        leg.account_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grown from empty past several resizes, then reserved for more: every account is found
    /// at its own place, a second one with an id is refused, and the list keeps the order.
    #[test]
    fn the_account_table_finds_every_account_through_its_resizes() {
        let local = |id: u128| LocalAccount {
            account: Account::new(id, 840, 1),
            history: Vec::new(),
            read_mark: 0,
        };
        let mut table = AccountTable::default();
        for id in 1..=3_000u128 {
            assert!(table.insert(local(id * 7919)));
        }
        table.reserve(10_000);
        for id in 3_001..=5_000u128 {
            assert!(table.insert(local(id * 7919)));
        }
        assert!(!table.insert(local(7919)), "an id is added once");
        for id in 1..=5_000u128 {
            assert_eq!(table.get(id * 7919).map(|l| l.account.id), Some(id * 7919));
        }
        assert!(table.get(7918).is_none() && table.get_mut(0).is_none());
        table.get_mut(7919 * 2).unwrap().account.credits_posted = 5;
        assert_eq!(table.get(7919 * 2).unwrap().account.credits_posted, 5);
        let ids: Vec<u128> = table.iter().map(|l| l.account.id).collect();
        assert_eq!(ids, (1..=5_000u128).map(|id| id * 7919).collect::<Vec<_>>());
    }

    /// With 3-bit fingerprints nearly every id collides: every path of the index is taken.
    #[test]
    fn the_transfer_index_survives_fingerprint_collisions() {
        let mut store = TransferStore {
            fingerprint_mask: 0b111,
            ..TransferStore::default()
        };
        for id in 1..=500u128 {
            if id % 5 == 0 {
                store.fail(id, CreateTransferResult::ExceedsCredits);
            } else {
                store.insert(Transfer::new(id, 1, 2, id, 1, 1));
            }
        }
        for id in 1..=500u128 {
            match store.find(id) {
                Some(Found::Failed(result)) => {
                    assert_eq!(id % 5, 0);
                    assert_eq!(result, CreateTransferResult::ExceedsCredits);
                }
                Some(Found::Transfer(transfer)) => {
                    assert_ne!(id % 5, 0);
                    assert_eq!((transfer.id, transfer.amount), (id, id));
                }
                None => panic!("{id} lost"),
            }
        }
        assert!(store.find(501).is_none() && store.find(0).is_none());
        assert!(!store.by_id.is_empty(), "collisions took the slow path");
    }

    #[test]
    fn a_commit_applied_in_parts_equals_it_applied_whole() {
        let accounts: Vec<Record> = (1..=4u128)
            .map(|id| Record::AccountCreated(Account::new(id, 1, 1)))
            .collect();
        let transfers: Vec<Record> = (10..40u128)
            .map(|id| {
                Record::TransferCreated(Transfer {
                    timestamp: id as u64,
                    ..Transfer::new(id, 1 + id % 4, 1 + (id + 1) % 4, id, 1, 1)
                })
            })
            .collect();
        let first = Commit {
            lsn: 1,
            timestamp_max: 1,
            records: accounts,
        };
        let second = Commit {
            lsn: 2,
            timestamp_max: 2,
            records: transfers,
        };
        for index in 0..2 {
            let mut whole = ShardState::new(index, 2);
            let mut parts = ShardState::new(index, 2);
            whole.apply(&first);
            whole.apply(&second);
            parts.apply(&first);
            for start in (0..30).step_by(7) {
                parts.apply_part(&second, start..(start + 7).min(30));
                let done = start + 7 >= 30;
                assert_eq!(parts.applied_lsn(), if done { 2 } else { 1 });
            }
            let ids: Vec<u128> = (1..=40).collect();
            assert_eq!(parts.lookup_accounts(&ids), whole.lookup_accounts(&ids));
            assert_eq!(parts.lookup_transfers(&ids), whole.lookup_transfers(&ids));
        }
    }

    #[test]
    #[should_panic(expected = "created or failed twice")]
    fn a_transfer_id_is_stored_once() {
        let mut store = TransferStore {
            fingerprint_mask: 0b1,
            ..TransferStore::default()
        };
        for id in [7u128, 8, 9, 8] {
            store.insert(Transfer::new(id, 1, 2, 1, 1, 1));
        }
    }
}
