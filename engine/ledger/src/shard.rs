//! One shard's state: the accounts it owns, its pending transfers until they are resolved, a
//! bounded window of its recent transfers and failed ids, and the filter of every transfer id
//! it ever committed. It answers reads and applies commits; it decides nothing, and knows
//! nothing about actors, tokio or storage.
//!
//! Nothing here grows with history when a window is set ([`ShardState::with_window`]): a
//! transfer or failed id leaves the window only once the store holds it
//! ([`ShardState::evict`]), and from then on a read that asks for it is told the id is
//! `unknown` (the filter cannot rule it out) so that the round fetches it from the store.
//! Without a window ([`ShardState::new`]) the shard keeps every transfer and needs no store.

use std::collections::{BTreeSet, VecDeque};

use ahash::AHashMap;

use crate::filter::IdFilter;
use crate::image::{ImageError, LedgerImage};
use crate::record::{Commit, Leg, Record};
use crate::results::CreateTransferResult;
use crate::routing::shard_of;
use crate::types::{Account, PendingStatus, Transfer, TransferFlags};

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
    /// Transfer ids asked for that memory does not hold and the filter cannot rule out: the
    /// store may hold them.
    pub unknown: Vec<u128>,
}

/// What a shard holds of a transfer id it owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held<'a> {
    Transfer(&'a Transfer, Option<PendingStatus>),
    Failed(CreateTransferResult),
    /// Not in memory, and the filter cannot rule it out: ask the store.
    Unknown,
    /// Never committed.
    Absent,
}

/// An account, and the last read that returned it (to return it once per read).
#[derive(Debug)]
struct LocalAccount {
    account: Account,
    read_mark: u64,
}

#[derive(Debug)]
pub struct ShardState {
    index: usize,
    shard_count: usize,
    accounts: AccountTable,
    /// Pending transfers this shard owns that are still pending.
    pending: AHashMap<u128, Transfer>,
    /// Pending transfers with a timeout that are still pending: (expires_at, timestamp, id).
    expiry: BTreeSet<(u64, u64, u128)>,
    /// Resolved and single-phase transfers and failed ids, the most recent ones.
    recent: RecentTransfers,
    /// With a window: every transfer id this shard committed, created or failed.
    filter: Option<IdFilter>,
    applied_lsn: u64,
    /// The largest timestamp of the commits applied.
    timestamp_max: u64,
    /// Reads served so far.
    reads: u64,
}

impl ShardState {
    /// A shard that keeps every transfer in memory and needs no store.
    pub fn new(index: usize, shard_count: usize) -> Self {
        assert!(index < shard_count);
        Self {
            index,
            shard_count,
            accounts: AccountTable::default(),
            pending: AHashMap::new(),
            expiry: BTreeSet::new(),
            recent: RecentTransfers::new(usize::MAX),
            filter: None,
            applied_lsn: 0,
            timestamp_max: 0,
            reads: 0,
        }
    }

    /// A shard that keeps about `window` recent transfers (and as many failed ids) besides its
    /// pending ones, and leaves older ones to the store once it holds them.
    pub fn with_window(index: usize, shard_count: usize, window: usize) -> Self {
        Self {
            recent: RecentTransfers::new(window.max(1)),
            filter: Some(IdFilter::default()),
            ..Self::new(index, shard_count)
        }
    }

    /// The shard `index` of `shard_count` as of `image`, keeping everything (`window` `None`)
    /// or a window: the accounts, pending transfers, transfers and failures whose ids it owns,
    /// and the filter of its ids.
    ///
    /// Nothing in the image is trusted. An image that holds every transfer (`filters` empty)
    /// has its accounts' balances derived from the transfers and compared; one that left old
    /// transfers to the store has its pending balances derived from its pending transfers. The
    /// limits are checked. An image that does not describe a ledger the engine could have made
    /// is refused; the shards never panic on it. The image's order is
    /// [`LedgerImage::check_structure`]'s to check.
    pub fn from_image(
        index: usize,
        shard_count: usize,
        window: Option<usize>,
        image: &LedgerImage,
    ) -> Result<Self, ImageError> {
        let shard = match window {
            Some(window) => Self::with_window(index, shard_count, window),
            None => Self::new(index, shard_count),
        };
        shard.build_from(image)
    }

    /// Fills a new, empty shard from `image`.
    fn build_from(mut self, image: &LedgerImage) -> Result<Self, ImageError> {
        let fail = |detail: String| Err(ImageError(detail));
        let shard = &mut self;
        let (index, shard_count) = (shard.index, shard.shard_count);
        let owns = |id: u128| shard_of(id, shard_count) == index;
        let complete = image.filters.is_empty();
        if !complete && shard.filter.is_none() {
            return fail(
                "the image left old transfers to a store, and this shard keeps every transfer"
                    .into(),
            );
        }
        // An even share, and a little more: ids spread evenly over the shards.
        let share = image.accounts.len() / shard_count;
        shard.accounts.reserve(share + share / 64 + 16);
        // Each account starts with its stored balances and its place in the image (in
        // `read_mark`, unused until the shard serves reads). Each transfer's effect is taken
        // off its accounts' balances; at the end the balances derived must be exactly zero
        // (all four for a complete image, the pending ones otherwise), and the stored ones are
        // put back where transfers touched them. So the comparison is one pass over the
        // shard's own map, with no lookup per account.
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
                read_mark: at as u64,
            };
            if !shard.accounts.insert(local) {
                return fail(format!("account {} stored twice", account.id));
            }
        }
        let unexplained =
            |id: u128| format!("account {id}: its balances are not what its transfers make");
        for transfer in &image.transfers {
            // Where the amount stands now: pending while the transfer is, posted for a
            // single-phase transfer or a post; a void, or a resolved pending transfer, moves
            // nothing (its post or void is a transfer of its own).
            let pending = transfer.flags.contains(TransferFlags::PENDING);
            let status = if pending {
                match image.pending.binary_search_by_key(&transfer.id, |p| p.0) {
                    Ok(at) => Some(image.pending[at].1),
                    Err(_) => {
                        return fail(format!("pending transfer {} has no status", transfer.id))
                    }
                }
            } else {
                None
            };
            if owns(transfer.id) {
                let stored = match status {
                    Some(PendingStatus::Pending) => {
                        shard.pending.insert(transfer.id, *transfer).is_none()
                            && shard.recent.find(transfer.id).is_none()
                    }
                    _ => {
                        shard.pending.get(&transfer.id).is_none()
                            && shard.recent.insert(*transfer, status, image.lsn)
                    }
                };
                if !stored {
                    return fail(format!("transfer {} stored twice", transfer.id));
                }
                if let Some(filter) = &mut shard.filter {
                    if complete {
                        filter.insert(transfer.id);
                    }
                }
                if let (Some(PendingStatus::Pending), Some(expires_at)) =
                    (status, transfer.expires_at())
                {
                    shard
                        .expiry
                        .insert((expires_at, transfer.timestamp, transfer.id));
                }
            }
            let counts = match status {
                Some(status) => status == PendingStatus::Pending,
                None => {
                    complete
                        && !transfer
                            .flags
                            .contains(TransferFlags::VOID_PENDING_TRANSFER)
                }
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
                if !counts {
                    continue;
                }
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
        for local in shard.accounts.iter_mut() {
            let a = &mut local.account;
            let pending = a.debits_pending | a.credits_pending;
            let posted = a.debits_posted | a.credits_posted;
            if pending != 0 || (complete && posted != 0) {
                return fail(unexplained(a.id));
            }
            if local.read_mark & TOUCHED != 0 {
                *a = image.accounts[(local.read_mark & !TOUCHED) as usize];
            }
            local.read_mark = 0;
        }
        let statuses = image.pending.iter().filter(|p| owns(p.0));
        let statuses_held = shard.pending.len() + shard.recent.statuses.len();
        if statuses.count() != statuses_held {
            return fail(
                "a pending status for a transfer that is not stored or not pending".into(),
            );
        }
        for &(id, result) in image.failed.iter().filter(|f| owns(f.0)) {
            if shard.pending.contains_key(&id) || shard.recent.find(id).is_some() {
                return fail(format!("id {id} is both a transfer and a failure"));
            }
            shard.recent.fail(id, result, image.lsn);
            if let (true, Some(filter)) = (complete, &mut shard.filter) {
                filter.insert(id);
            }
        }
        if !complete {
            let filter = shard
                .filter
                .as_mut()
                .expect("a shard with a window has a filter");
            if image.filters.len() == shard_count {
                *filter = image.filters[index].clone();
            } else {
                // Saved with another shard count: every old shard's filter may hold an id
                // this shard now owns.
                for old in &image.filters {
                    filter.merge(old);
                }
            }
            if filter.generations().iter().any(|g| !g.is_well_formed()) {
                return fail("a filter generation's size does not match its capacity".into());
            }
        }
        shard.applied_lsn = image.lsn;
        shard.timestamp_max = image.timestamp_max;
        Ok(self)
    }

    /// Adds what this shard owns to `image` (in no particular order: see
    /// [`LedgerImage::canonicalize`]).
    fn export_into(&self, image: &mut LedgerImage) {
        image.lsn = self.applied_lsn;
        image.timestamp_max = image.timestamp_max.max(self.timestamp_max);
        image
            .accounts
            .extend(self.accounts.iter().map(|local| local.account));
        image.transfers.extend(self.pending.values().copied());
        image.transfers.extend(
            self.recent
                .chunks
                .iter()
                .flat_map(|c| c.transfers.iter().copied()),
        );
        image.pending.extend(
            self.pending
                .keys()
                .map(|id| (*id, PendingStatus::Pending))
                .chain(self.recent.statuses.iter().map(|(id, s)| (*id, *s))),
        );
        image
            .failed
            .extend(self.recent.failed.iter().map(|(id, result)| (*id, *result)));
    }

    /// The whole ledger held by `shards` (every shard of one engine, in index order), all at
    /// one LSN, in canonical order.
    pub fn image_of(shards: &[ShardState]) -> LedgerImage {
        let mut image = LedgerImage::default();
        assert!(
            shards
                .windows(2)
                .all(|w| w[0].applied_lsn == w[1].applied_lsn),
            "the shards of one image are at one LSN"
        );
        for (index, shard) in shards.iter().enumerate() {
            assert_eq!(shard.index, index, "shards in index order");
            shard.export_into(&mut image);
        }
        // Shards with a window have filters, one each; shards without hold every transfer.
        image.filters = shards
            .iter()
            .filter_map(|shard| shard.filter.clone())
            .collect();
        assert!(image.filters.is_empty() || image.filters.len() == shards.len());
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

    /// What this shard holds of transfer `id` (which it owns).
    #[inline]
    pub fn find_transfer(&self, id: u128) -> Held<'_> {
        debug_assert!(self.owns(id));
        if let Some(transfer) = self.pending.get(&id) {
            return Held::Transfer(transfer, Some(PendingStatus::Pending));
        }
        match self.recent.find(id) {
            Some(found) => found,
            None => match &self.filter {
                Some(filter) if filter.may_contain(id) => Held::Unknown,
                _ => Held::Absent,
            },
        }
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
            match self.find_transfer(id) {
                Held::Transfer(transfer, status) => reply.transfers.push((*transfer, status)),
                Held::Failed(result) => reply.failed.push((id, result)),
                Held::Unknown => reply.unknown.push(id),
                Held::Absent => {}
            }
        }
        if request.expiring_up_to != 0 {
            for &(expires_at, _, id) in &self.expiry {
                if expires_at > request.expiring_up_to {
                    break;
                }
                reply.expiring.push(
                    *self
                        .pending
                        .get(&id)
                        .expect("an expiring transfer is pending"),
                );
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
            self.apply_record(record, commit.lsn);
        }
        if part.end == commit.records.len() {
            self.applied_lsn = commit.lsn;
            self.timestamp_max = commit.timestamp_max;
        }
    }

    fn apply_record(&mut self, record: &Record, lsn: u64) {
        match *record {
            Record::AccountCreated(account) => {
                if self.owns(account.id) {
                    let local = LocalAccount {
                        account,
                        read_mark: 0,
                    };
                    let added = self.accounts.insert(local);
                    assert!(added, "account {} created twice", account.id);
                }
            }
            Record::TransferCreated(transfer) => {
                if self.owns(transfer.id) {
                    self.remember(transfer.id);
                    if transfer.flags.contains(TransferFlags::PENDING) {
                        let old = self.pending.insert(transfer.id, transfer);
                        assert!(old.is_none(), "transfer {} created twice", transfer.id);
                        if let Some(expires_at) = transfer.expires_at() {
                            self.expiry
                                .insert((expires_at, transfer.timestamp, transfer.id));
                        }
                    } else {
                        self.recent.add(transfer, None, lsn);
                    }
                }
            }
            Record::PendingPosted { transfer, .. } => {
                self.store_transfer(&transfer, lsn);
                self.resolve_pending(transfer.pending_id, PendingStatus::Posted, lsn);
            }
            Record::PendingVoided { transfer, .. } => {
                self.store_transfer(&transfer, lsn);
                self.resolve_pending(transfer.pending_id, PendingStatus::Voided, lsn);
            }
            Record::PendingExpired { pending_id, .. } => {
                self.resolve_pending(pending_id, PendingStatus::Expired, lsn);
            }
            Record::TransferFailed { id, result } => {
                if self.owns(id) {
                    self.remember(id);
                    assert!(
                        !self.pending.contains_key(&id),
                        "transfer {id} created or failed twice"
                    );
                    self.recent.fail(id, result, lsn);
                }
            }
        }
        if let Some(legs) = record.legs() {
            self.apply_legs(legs);
        }
    }

    #[inline]
    fn remember(&mut self, id: u128) {
        if let Some(filter) = &mut self.filter {
            filter.insert(id);
        }
    }

    fn store_transfer(&mut self, transfer: &Transfer, lsn: u64) {
        if self.owns(transfer.id) {
            self.remember(transfer.id);
            self.recent.add(*transfer, None, lsn);
        }
    }

    fn resolve_pending(&mut self, pending_id: u128, status: PendingStatus, lsn: u64) {
        if !self.owns(pending_id) {
            return;
        }
        let Some(pending) = self.pending.remove(&pending_id) else {
            panic!("pending transfer {pending_id} resolved twice, or unknown");
        };
        if let Some(expires_at) = pending.expires_at() {
            let removed = self
                .expiry
                .remove(&(expires_at, pending.timestamp, pending_id));
            assert!(removed);
        }
        // Resolved, it never changes again: it joins the window at the LSN that resolved it,
        // and leaves once the store holds that LSN (and so its final status).
        self.recent.add(pending, Some(status), lsn);
    }

    /// Lets the oldest transfers and failed ids beyond the window leave memory, those whose
    /// commits the store holds: `stored_lsn` is the store's progress (it may be ahead of this
    /// shard). Returns how many left.
    pub fn evict(&mut self, stored_lsn: u64) -> usize {
        if self.filter.is_none() {
            return 0;
        }
        self.recent.evict(stored_lsn)
    }

    /// Whether this shard keeps a window (and leaves older transfers to the store).
    pub fn has_window(&self) -> bool {
        self.filter.is_some()
    }

    /// Transfers and failed ids held besides the pending ones.
    pub fn window_len(&self) -> usize {
        self.recent.len()
    }

    /// Pending transfers held (still pending).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Bytes the filter takes (0 without a window).
    pub fn filter_bytes(&self) -> u64 {
        self.filter.as_ref().map_or(0, IdFilter::bytes)
    }

    /// The simulator's fault: the filter also says "maybe" for about `per_million` in a
    /// million new ids.
    pub fn force_filter_false_positives(&mut self, per_million: u32) {
        if let Some(filter) = &mut self.filter {
            filter.force_false_positives(per_million);
        }
    }

    /// Changes the balances of the record's local accounts.
    #[inline]
    fn apply_legs(&mut self, [debit, credit]: [Leg; 2]) {
        self.apply_leg(&debit);
        self.apply_leg(&credit);
    }

    #[inline(always)]
    fn apply_leg(&mut self, leg: &Leg) {
        let Some(local) = self.local_account(leg.account_id) else {
            return;
        };
        // Paired with the decider's checks: applying a commit that leaves u128 or breaks a limit
        // would make the books wrong, so these stay on in release builds.
        if leg.apply(&mut local.account).is_err() || !local.account.within_limits() {
            corrupt_leg(leg, &local.account);
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

    pub fn account(&self, id: u128) -> Option<&Account> {
        self.accounts.get(id).map(|local| &local.account)
    }

    pub fn lookup_accounts(&self, ids: &[u128]) -> Vec<Account> {
        ids.iter()
            .filter_map(|&id| self.account(id).copied())
            .collect()
    }

    /// The transfers among `ids` held in memory, and the ids the store may hold.
    pub fn lookup_transfers(&self, ids: &[u128]) -> (Vec<Transfer>, Vec<u128>) {
        let mut found = Vec::with_capacity(ids.len());
        let mut unknown = Vec::new();
        for &id in ids.iter().filter(|&&id| self.owns(id)) {
            match self.find_transfer(id) {
                Held::Transfer(transfer, _) => found.push(*transfer),
                Held::Unknown => unknown.push(id),
                Held::Failed(_) | Held::Absent => {}
            }
        }
        (found, unknown)
    }
}

/// Transfers in the order they joined the window, in chunks (growing never copies a
/// transfer, and the oldest leave a chunk at a time), found through an index of their
/// positions (8 bytes an entry; hashbrown's control bytes rule most new ids out without
/// touching the chunks). Failed ids are kept apart, in a map and the order they failed in.
#[derive(Debug)]
struct RecentTransfers {
    /// Transfers (and failed ids) kept beyond the pending ones: at least this many, once the
    /// store has caught up, and at most a chunk more.
    window: usize,
    chunk_len: usize,
    chunks: VecDeque<Chunk>,
    /// The position of the first transfer of the first chunk; positions only grow.
    first: u64,
    held: usize,
    index: hashbrown::HashTable<u64>,
    hasher: ahash::RandomState,
    /// Where each resolved pending transfer in the chunks stands.
    statuses: AHashMap<u128, PendingStatus>,
    failed: AHashMap<u128, CreateTransferResult>,
    failed_order: VecDeque<(u64, u128)>,
}

#[derive(Debug)]
struct Chunk {
    transfers: Vec<Transfer>,
    /// The LSN of the last commit that added to the chunk.
    lsn_last: u64,
}

impl RecentTransfers {
    const CHUNK_LEN_MAX: usize = 1 << 16;

    fn new(window: usize) -> Self {
        Self {
            window,
            // Small windows (tests use 1 to 100) evict a transfer or a few at a time.
            chunk_len: (window / 4).clamp(1, Self::CHUNK_LEN_MAX),
            chunks: VecDeque::new(),
            first: 0,
            held: 0,
            index: hashbrown::HashTable::new(),
            hasher: ahash::RandomState::new(),
            statuses: AHashMap::new(),
            failed: AHashMap::new(),
            failed_order: VecDeque::new(),
        }
    }

    fn len(&self) -> usize {
        self.held + self.failed.len()
    }

    #[inline]
    fn at(chunks: &VecDeque<Chunk>, first: u64, chunk_len: usize, position: u64) -> &Transfer {
        let offset = (position - first) as usize;
        &chunks[offset / chunk_len].transfers[offset % chunk_len]
    }

    #[inline]
    fn position(&self, id: u128) -> Option<u64> {
        let (chunks, first, chunk_len) = (&self.chunks, self.first, self.chunk_len);
        self.index
            .find(self.hasher.hash_one(id), |&p| {
                Self::at(chunks, first, chunk_len, p).id == id
            })
            .copied()
    }

    #[inline]
    fn find(&self, id: u128) -> Option<Held<'_>> {
        if let Some(position) = self.position(id) {
            let transfer = Self::at(&self.chunks, self.first, self.chunk_len, position);
            let status = transfer
                .flags
                .contains(TransferFlags::PENDING)
                .then(|| self.statuses[&id]);
            return Some(Held::Transfer(transfer, status));
        }
        self.failed.get(&id).map(|result| Held::Failed(*result))
    }

    /// Adds a transfer that is new to the shard.
    fn add(&mut self, transfer: Transfer, status: Option<PendingStatus>, lsn: u64) {
        let id = transfer.id;
        assert!(
            self.insert(transfer, status, lsn),
            "transfer {id} created or failed twice"
        );
    }

    /// Adds `transfer` unless its id is here already (then false).
    fn insert(&mut self, transfer: Transfer, status: Option<PendingStatus>, lsn: u64) -> bool {
        let id = transfer.id;
        if self.failed.contains_key(&id) {
            return false;
        }
        let position = self.first + self.held as u64;
        let Self {
            chunks,
            first,
            chunk_len,
            index,
            hasher,
            ..
        } = self;
        let entry = index.entry(
            hasher.hash_one(id),
            |&p| Self::at(chunks, *first, *chunk_len, p).id == id,
            |&p| hasher.hash_one(Self::at(chunks, *first, *chunk_len, p).id),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(_) => return false,
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert(position);
            }
        }
        if self.held.is_multiple_of(self.chunk_len) {
            self.chunks.push_back(Chunk {
                transfers: Vec::with_capacity(self.chunk_len),
                lsn_last: lsn,
            });
        }
        let chunk = self.chunks.back_mut().expect("a chunk with room");
        chunk.transfers.push(transfer);
        chunk.lsn_last = lsn;
        self.held += 1;
        if let Some(status) = status {
            debug_assert!(transfer.flags.contains(TransferFlags::PENDING));
            self.statuses.insert(id, status);
        }
        true
    }

    fn fail(&mut self, id: u128, result: CreateTransferResult, lsn: u64) {
        assert!(
            self.position(id).is_none() && self.failed.insert(id, result).is_none(),
            "transfer {id} created or failed twice"
        );
        self.failed_order.push_back((lsn, id));
    }

    /// Drops the oldest chunks and failed ids beyond the window whose LSNs the store holds.
    fn evict(&mut self, stored_lsn: u64) -> usize {
        let mut evicted = 0;
        while let Some(front) = self.chunks.front() {
            let over = self.held - front.transfers.len() >= self.window;
            if !over || front.lsn_last > stored_lsn {
                break;
            }
            evicted += self.drop_front_chunk(stored_lsn);
        }
        while self.failed_order.len() > self.window {
            let (lsn, id) = self.failed_order[0];
            if lsn > stored_lsn {
                break;
            }
            self.failed_order.pop_front();
            self.failed.remove(&id);
            evicted += 1;
        }
        evicted
    }

    fn drop_front_chunk(&mut self, stored_lsn: u64) -> usize {
        let chunk = self.chunks.pop_front().expect("a chunk to drop");
        // The invariant that makes eviction safe: a transfer leaves memory only once the store
        // holds the commit that made it final (lookups and the round's fetch then find it).
        assert!(
            chunk.lsn_last <= stored_lsn,
            "a transfer leaves memory only after the store holds it"
        );
        for (offset, transfer) in chunk.transfers.iter().enumerate() {
            let position = self.first + offset as u64;
            match self
                .index
                .find_entry(self.hasher.hash_one(transfer.id), |&p| p == position)
            {
                Ok(entry) => {
                    entry.remove();
                }
                Err(_) => panic!("transfer {} is in a chunk but not indexed", transfer.id),
            }
            if transfer.flags.contains(TransferFlags::PENDING) {
                self.statuses.remove(&transfer.id);
            }
        }
        let len = chunk.transfers.len();
        self.first += len as u64;
        self.held -= len;
        len
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

    /// A window of 10 in chunks of 2: transfers leave oldest first, a chunk at a time, only
    /// once the store holds them; the rest are still found, with their statuses.
    #[test]
    fn the_window_evicts_the_oldest_once_stored() {
        let mut recent = RecentTransfers::new(10);
        assert_eq!(recent.chunk_len, 2);
        for id in 1..=30u128 {
            let transfer = Transfer::new(id, 1, 2, id, 1, 1);
            if id % 5 == 0 {
                recent.fail(id, CreateTransferResult::ExceedsCredits, id as u64);
            } else {
                recent.add(transfer, None, id as u64);
            }
        }
        assert_eq!(recent.evict(0), 0, "nothing is stored yet");
        let evicted = recent.evict(12);
        assert!(evicted > 0);
        assert!(recent.find(1).is_none() && recent.find(12).is_none());
        assert!(recent.find(5).is_some() && recent.find(13).is_some());
        assert!(recent.find(29).is_some() && recent.find(30).is_some());
        recent.evict(30);
        assert_eq!(recent.held, 10);
        assert_eq!(recent.failed.len(), 6);
        for id in 1..=30u128 {
            let held = recent.find(id).is_some();
            let kept = id % 5 == 0 || id >= 18;
            assert_eq!(held, kept, "{id}");
        }
        assert_eq!(recent.index.len(), recent.held);
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
            assert_eq!(parts.window_len(), whole.window_len());
        }
    }

    #[test]
    #[should_panic(expected = "created or failed twice")]
    fn a_transfer_id_is_stored_once() {
        let mut recent = RecentTransfers::new(100);
        for id in [7u128, 8, 9, 8] {
            recent.add(Transfer::new(id, 1, 2, 1, 1, 1), None, 1);
        }
    }
}
