//! The whole engine as one synchronous, deterministic value: the same [`Sequencer`],
//! [`Round`](crate::round::Round)s and [`ShardState`]s the actors drive, stepped by plain
//! function calls, with the log kept as a list of commits and the store as a [`MemoryStore`].
//! Unit tests, property tests and the simulator use it to exercise exactly the production
//! logic without a runtime.

use crate::image::LedgerImage;
use crate::ledger::View;
use crate::record::Commit;
use crate::results::{CreateAccountResult, CreateTransferResult};
use crate::round::{Operation, Outcome, Sequencer, Step};
use crate::routing::shard_of;
use crate::shard::Held;
use crate::shard::{ReadReply, ReadRequest, ShardState};
use crate::store::{MemoryStore, Stored};
use crate::types::{Account, AccountFilter, PendingStatus, Transfer};

/// A decided round waiting for its records to be durable.
pub struct Decided {
    pub records: Vec<crate::record::Record>,
    pub timestamp_max: u64,
    /// One per operation, in order.
    pub outcomes: Vec<Outcome>,
    view: View,
}

/// The store could not be read: the round decides nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the store is unavailable")]
pub struct StoreUnavailable;

pub struct LocalEngine {
    shards: Vec<ShardState>,
    store: MemoryStore,
    /// Whether the store projects each commit as soon as it is durable (otherwise the caller
    /// moves it with [`LocalEngine::project_store`]).
    store_follows: bool,
    store_failing: bool,
    sequencer: Sequencer,
    commits: Vec<Commit>,
    overlap: bool,
    /// With `overlap`: the view the last commit was decided on, while the shards have not
    /// applied that commit (the last in `commits`) yet.
    unapplied: Option<View>,
    spare_view: View,
}

impl LocalEngine {
    pub fn new(shard_count: usize) -> Self {
        Self {
            shards: (0..shard_count)
                .map(|i| ShardState::new(i, shard_count))
                .collect(),
            store: MemoryStore::default(),
            // Shards that keep everything never ask the store: it catches up when read.
            store_follows: false,
            store_failing: false,
            sequencer: Sequencer::default(),
            commits: Vec::new(),
            overlap: false,
            unapplied: None,
            spare_view: View::default(),
        }
    }

    /// Shards that keep `window` recent transfers each and leave the rest to the store.
    pub fn with_window(shard_count: usize, window: usize) -> Self {
        Self {
            shards: (0..shard_count)
                .map(|i| ShardState::with_window(i, shard_count, window))
                .collect(),
            store_follows: true,
            ..Self::new(shard_count)
        }
    }

    /// The store stops projecting commits as they become durable: [`LocalEngine::project_store`]
    /// moves it (the simulator's lagging store).
    pub fn hold_store(&mut self) {
        self.store_follows = false;
    }

    /// While set, every read of the store fails.
    pub fn set_store_failing(&mut self, failing: bool) {
        self.store_failing = failing;
    }

    /// The filters also say "maybe" for about `per_million` in a million new ids.
    pub fn force_filter_false_positives(&mut self, per_million: u32) {
        for shard in &mut self.shards {
            shard.force_filter_false_positives(per_million);
        }
    }

    pub fn stored_lsn(&self) -> u64 {
        self.store.stored_lsn()
    }

    /// Projects the durable commits up to `lsn` into the store, then lets the shards evict.
    pub fn project_store(&mut self, lsn: u64) {
        let up_to = lsn.min(self.commits.len() as u64);
        while self.store.stored_lsn() < up_to {
            let next = self.store.stored_lsn() as usize;
            self.store.project(&self.commits[next]);
        }
        self.evict(self.store.stored_lsn());
    }

    /// Lets the shards evict what the store holds as of `stored_lsn`. Production passes the
    /// store's progress; the simulator's mutation passes more, to show that it is caught.
    pub fn evict(&mut self, stored_lsn: u64) {
        for shard in &mut self.shards {
            shard.evict(stored_lsn);
        }
    }

    /// Transfers and failed ids the shards hold besides the pending ones.
    pub fn window_len(&self) -> usize {
        self.shards.iter().map(ShardState::window_len).sum()
    }

    /// Rounds overlap as in the actors: a round's commit is applied to the shards only after
    /// the next round's first reads, and that round lays the previous view over them.
    /// Call [`LocalEngine::settle`] before looking at the state.
    pub fn overlapping(shard_count: usize) -> Self {
        Self {
            overlap: true,
            ..Self::new(shard_count)
        }
    }

    /// Whether the last commit waits to be applied (after the next round's first reads).
    pub fn has_unapplied(&self) -> bool {
        self.unapplied.is_some()
    }

    /// Applies the commit still in flight, if any.
    pub fn settle(&mut self) {
        if self.unapplied.take().is_some() {
            self.apply_last();
        }
    }

    fn apply_last(&mut self) {
        let commit = self.commits.last().expect("a commit to apply");
        for shard in &mut self.shards {
            shard.apply(commit);
        }
        if self.store_follows {
            self.project_store(commit.lsn);
        }
    }

    /// Rebuilds an engine from a log, as a restart does.
    pub fn recover(shard_count: usize, commits: &[Commit]) -> Self {
        Self::recover_from(shard_count, None, commits)
    }

    /// Rebuilds an engine whose shards keep `window` transfers each, from a snapshot's image
    /// and the whole log, with a store that holds the log up to `stored_lsn`.
    pub fn recover_with_window(
        shard_count: usize,
        window: usize,
        base: Option<&LedgerImage>,
        commits: &[Commit],
        stored_lsn: u64,
    ) -> Self {
        let mut engine = Self::rebuild(shard_count, Some(window), base, commits);
        for commit in &commits[..stored_lsn as usize] {
            engine.store.project(commit);
        }
        engine.evict(engine.store.stored_lsn());
        engine
    }

    /// Rebuilds an engine from a snapshot's image and the whole log (LSN 1 onwards), as a
    /// restart does: only the commits after the image's LSN are applied.
    pub fn recover_from(
        shard_count: usize,
        base: Option<&LedgerImage>,
        commits: &[Commit],
    ) -> Self {
        Self::rebuild(shard_count, None, base, commits)
    }

    fn rebuild(
        shard_count: usize,
        window: Option<usize>,
        base: Option<&LedgerImage>,
        commits: &[Commit],
    ) -> Self {
        let mut engine = match window {
            Some(window) => Self::with_window(shard_count, window),
            None => Self::new(shard_count),
        };
        if let Some(image) = base {
            assert!(
                image.lsn <= commits.len() as u64,
                "a snapshot is never ahead of its log"
            );
            engine.shards = (0..shard_count)
                .map(|i| ShardState::from_image(i, shard_count, window, image))
                .collect::<Result<_, _>>()
                .expect("a snapshot's image describes a ledger");
        }
        let applied = base.map_or(0, |image| image.lsn as usize);
        for commit in &commits[applied..] {
            for shard in &mut engine.shards {
                shard.apply(commit);
            }
        }
        let timestamp_last = commits.last().map_or(0, |c| c.timestamp_max);
        engine.sequencer = Sequencer::resume_after(timestamp_last);
        engine.commits = commits.to_vec();
        engine
    }

    /// The whole ledger as of the last applied commit.
    pub fn image(&self) -> LedgerImage {
        assert!(
            self.unapplied.is_none(),
            "settle() before looking at the state"
        );
        ShardState::image_of(&self.shards)
    }

    pub fn commits(&self) -> &[Commit] {
        &self.commits
    }

    /// Runs one round over `operations` at time `now_ns`, its commit durable at once; one
    /// outcome per operation.
    pub fn execute(&mut self, operations: Vec<Operation>, now_ns: u64) -> Vec<Outcome> {
        let decided = self.decide(operations, now_ns);
        let outcomes = decided.outcomes.clone();
        let apply_now = !self.overlap;
        self.commit(decided, apply_now);
        outcomes
    }

    /// Reads and decides one round; nothing changes until [`LocalEngine::commit`] (its
    /// records are durable) or [`LocalEngine::abandon`] (they are not). A commit still
    /// unapplied from the round before is applied to the shards after this round's first reads,
    /// as the actors do, and its view laid over them.
    pub fn decide(&mut self, operations: Vec<Operation>, now_ns: u64) -> Decided {
        self.try_decide(operations, now_ns)
            .expect("the store is available")
    }

    /// As [`LocalEngine::decide`], but a store that fails its fetch fails the round (nothing
    /// changes; the sequencer has moved on, as it does in the actors).
    pub fn try_decide(
        &mut self,
        operations: Vec<Operation>,
        now_ns: u64,
    ) -> Result<Decided, StoreUnavailable> {
        let view = std::mem::take(&mut self.spare_view);
        let mut round = self
            .sequencer
            .begin(operations, now_ns, self.shards.len(), view);
        let requests = round.first_reads();
        let replies = self.read(&requests);
        let unapplied = self.unapplied.take().inspect(|_| self.apply_last());
        let mut step = round.on_reads(replies, unapplied.as_ref());
        if let Some(view) = unapplied {
            self.spare_view = view;
        }
        let decision = loop {
            match step {
                Step::Read(requests) => step = round.on_reads(self.read(&requests), None),
                Step::Fetch(ids) => match self.fetch(&ids) {
                    Ok(stored) => step = round.on_fetched(stored),
                    Err(unavailable) => {
                        self.spare_view = round.into_view();
                        return Err(unavailable);
                    }
                },
                Step::Decided(decision) => break decision,
            }
        };
        Ok(Decided {
            records: decision.records,
            timestamp_max: decision.timestamp_max,
            outcomes: decision.outcomes,
            view: round.into_view(),
        })
    }

    fn fetch(&self, ids: &[u128]) -> Result<Vec<Stored>, StoreUnavailable> {
        if self.store_failing {
            return Err(StoreUnavailable);
        }
        Ok(self.store.fetch(ids))
    }

    /// The decided round's records are durable as the next commit (if it has any). With
    /// `apply_now` the shards apply it at once; otherwise after the next round's first reads
    /// (or [`LocalEngine::settle`]).
    pub fn commit(&mut self, decided: Decided, apply_now: bool) {
        assert!(self.unapplied.is_none(), "one round in flight at a time");
        if decided.records.is_empty() {
            self.spare_view = decided.view;
            return;
        }
        self.commits.push(Commit {
            lsn: self.commits.len() as u64 + 1,
            timestamp_max: decided.timestamp_max,
            records: decided.records,
        });
        if apply_now {
            self.apply_last();
            self.spare_view = decided.view;
        } else {
            self.unapplied = Some(decided.view);
        }
    }

    /// The decided round's records did not become durable: nothing changes.
    pub fn abandon(&mut self, decided: Decided) {
        self.spare_view = decided.view;
    }

    fn read(&mut self, requests: &[ReadRequest]) -> Vec<ReadReply> {
        self.shards
            .iter_mut()
            .zip(requests)
            .map(|(shard, request)| shard.read(request))
            .collect()
    }

    pub fn create_accounts(&mut self, events: &[Account], now_ns: u64) -> Vec<CreateAccountResult> {
        match self
            .execute(vec![Operation::CreateAccounts(events.to_vec())], now_ns)
            .pop()
        {
            Some(Outcome::Accounts(results)) => results,
            other => unreachable!("{other:?}"),
        }
    }

    pub fn create_transfers(
        &mut self,
        events: &[Transfer],
        now_ns: u64,
    ) -> Vec<CreateTransferResult> {
        match self
            .execute(vec![Operation::CreateTransfers(events.to_vec())], now_ns)
            .pop()
        {
            Some(Outcome::Transfers(results)) => results,
            other => unreachable!("{other:?}"),
        }
    }

    /// Releases the pending transfers whose timeout passed by `now_ns`.
    pub fn expire(&mut self, now_ns: u64) {
        self.execute(vec![Operation::Expire], now_ns);
    }

    pub fn account(&self, id: u128) -> Option<Account> {
        self.shard(id).account(id).copied()
    }

    /// A transfer and, if it is pending, where it stands: from the shard that owns it, or from
    /// the store when the shard let it go (whether or not the store is failing: this is for
    /// looking at the state, not a read a round depends on).
    pub fn held_transfer(&self, id: u128) -> Option<(Transfer, Option<PendingStatus>)> {
        match self.shard(id).find_transfer(id) {
            Held::Transfer(transfer, status) => Some((*transfer, status)),
            Held::Unknown => match self.store.fetch(&[id]).pop() {
                Some(Stored::Transfer(transfer, status)) => Some((transfer, status)),
                _ => None,
            },
            Held::Failed(_) | Held::Absent => None,
        }
    }

    pub fn transfer(&self, id: u128) -> Option<Transfer> {
        self.held_transfer(id).map(|(transfer, _)| transfer)
    }

    pub fn pending_status(&self, id: u128) -> Option<PendingStatus> {
        self.held_transfer(id).and_then(|(_, status)| status)
    }

    /// An account's transfers, from the store (which must hold every commit: one that shards
    /// with a window use is moved by its owner; one that nobody else reads catches up here).
    pub fn account_transfers(&mut self, filter: &AccountFilter) -> Vec<Transfer> {
        if !self.shards.iter().any(ShardState::has_window) {
            self.project_store(self.commits.len() as u64);
        }
        assert_eq!(
            self.store.stored_lsn(),
            self.commits.len() as u64,
            "the store holds every commit"
        );
        self.store.account_transfers(filter)
    }

    /// Every account as the shards hold it at this moment, in no order: with a commit still
    /// unapplied, one commit behind. Shards apply whole commits, so the ledger's invariants hold
    /// here at every step.
    pub fn applied_accounts(&self) -> impl Iterator<Item = &Account> {
        self.shards.iter().flat_map(|s| s.accounts())
    }

    /// Every account, from every shard, ordered by id.
    pub fn all_accounts(&self) -> Vec<Account> {
        assert!(
            self.unapplied.is_none(),
            "settle() before looking at the state"
        );
        let mut accounts: Vec<Account> = self
            .shards
            .iter()
            .flat_map(|s| s.accounts().copied())
            .collect();
        accounts.sort_unstable_by_key(|a| a.id);
        accounts
    }

    fn shard(&self, id: u128) -> &ShardState {
        assert!(
            self.unapplied.is_none(),
            "settle() before looking at the state"
        );
        &self.shards[shard_of(id, self.shards.len())]
    }
}
