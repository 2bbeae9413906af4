//! The cross-shard commit protocol, sans-IO.
//!
//! A round takes the operations that queued up while the previous round ran and carries them
//! through four steps: **read** (each shard returns the accounts and transfers it owns that the
//! round touches; transfer ids that left the shards' memory and that their filters cannot rule
//! out are then **fetched** from the store, in one batch), **decide** (the [`Decider`] runs every event in order over that view),
//! **log** (the round's records become one commit in the write-ahead log) and **apply** (every
//! shard applies the commit to the part of the state it owns). Rounds are decided one at a
//! time, so a round's view cannot be invalidated by another round, and every shard sees commits
//! in LSN order. A round may read before the previous commit is applied; it then lays the
//! previous round's view over its reads ([`Round::on_reads`]). The actor that drives a round
//! only carries these values between shards and the log.

use crate::ledger::{Decider, View};
use crate::record::Record;
use crate::results::{CreateAccountResult, CreateTransferResult};
use crate::routing::shard_of;
use crate::shard::{ReadReply, ReadRequest};
use crate::store::Stored;
use crate::types::{Account, Transfer, TransferFlags};

/// One caller's request, decided as a unit (linked chains never span two operations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    CreateAccounts(Vec<Account>),
    CreateTransfers(Vec<Transfer>),
    /// Release pending transfers whose timeout passed; sent by the clock, not by callers.
    Expire,
}

impl Operation {
    /// How many timestamps the operation consumes.
    pub fn event_count(&self) -> usize {
        match self {
            Operation::CreateAccounts(events) => events.len(),
            Operation::CreateTransfers(events) => events.len(),
            Operation::Expire => 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accounts(Vec<CreateAccountResult>),
    Transfers(Vec<CreateTransferResult>),
    Expired,
}

/// Assigns timestamps: unique and strictly increasing across the engine, never behind the
/// clock, never reused after a restart (it resumes from the largest timestamp in the log).
#[derive(Clone, Debug, Default)]
pub struct Sequencer {
    timestamp_last: u64,
}

impl Sequencer {
    pub fn resume_after(timestamp_last: u64) -> Self {
        Self { timestamp_last }
    }

    pub fn timestamp_last(&self) -> u64 {
        self.timestamp_last
    }

    /// Starts a round over `operations` at clock time `now_ns`. `view` is recycled from an
    /// earlier round (or `View::default()`): reusing its memory spares the allocator and the
    /// kernel megabytes of fresh pages per round.
    pub fn begin(
        &mut self,
        operations: Vec<Operation>,
        now_ns: u64,
        shard_count: usize,
        mut view: View,
    ) -> Round {
        view.clear();
        let mut timestamps_first = Vec::with_capacity(operations.len());
        let event_count = operations.iter().map(Operation::event_count).sum();
        for operation in &operations {
            let first = now_ns.max(self.timestamp_last + 1);
            timestamps_first.push(first);
            self.timestamp_last = first
                .checked_add(operation.event_count() as u64 - 1)
                .expect("timestamps run out in the year 2554");
        }
        Round {
            operations,
            timestamps_first,
            timestamp_max: self.timestamp_last,
            event_count,
            shard_count,
            view,
            read_transfers: Vec::new(),
            unknown: Vec::new(),
            followed_up: false,
        }
    }
}

/// What the driver of a round must do next.
#[derive(Debug)]
pub enum Step {
    /// Send `requests[i]` to shard `i` and hand every reply to [`Round::on_reads`].
    Read(Vec<ReadRequest>),
    /// Fetch these transfer ids from the store (off the shards) and hand what it holds to
    /// [`Round::on_fetched`]. Nothing is decided until then: whether an id is new must not
    /// depend on whether it happened to be in memory.
    Fetch(Vec<u128>),
    /// Log `records` as one commit (unless empty), then apply it on every shard, then answer.
    Decided(Decision),
}

#[derive(Debug)]
pub struct Decision {
    pub records: Vec<Record>,
    pub timestamp_max: u64,
    /// One per operation, in order.
    pub outcomes: Vec<Outcome>,
    /// The timestamp of each operation's first event (event `i` has `first + i`), in order.
    pub timestamps_first: Vec<u64>,
}

#[derive(Debug)]
pub struct Round {
    operations: Vec<Operation>,
    timestamps_first: Vec<u64>,
    timestamp_max: u64,
    event_count: usize,
    shard_count: usize,
    view: View,
    /// Every transfer id the first reads asked for, to lay an unapplied round's view over the
    /// replies (for accounts, the replies name every id asked for, found or missing).
    read_transfers: Vec<u128>,
    /// Transfer ids the shards may have let go of: to fetch from the store.
    unknown: Vec<u128>,
    followed_up: bool,
}

impl Round {
    /// Events (and expiry passes) in the round.
    pub fn event_count(&self) -> usize {
        self.event_count
    }

    /// The first reads: every id the operations name, and the pending transfers that expire by
    /// the round's last operation. Every shard is asked, since any may hold expiring transfers.
    pub fn first_reads(&mut self) -> Vec<ReadRequest> {
        let mut keys = KeysByShard::new(self.shard_count, self.event_count);
        for operation in &self.operations {
            match operation {
                Operation::CreateAccounts(events) => {
                    for e in events {
                        keys.account(e.id);
                    }
                }
                Operation::CreateTransfers(events) => {
                    for e in events {
                        keys.transfer(e.id);
                        keys.account(e.debit_account_id);
                        keys.account(e.credit_account_id);
                        if e.is_post_or_void() {
                            keys.transfer(e.pending_id);
                        }
                    }
                }
                Operation::Expire => {}
            }
        }
        let requests = keys.into_requests(self.expiring_up_to());
        self.read_transfers = requests
            .iter()
            .flat_map(|r| r.transfers.iter().copied())
            .collect();
        requests
    }

    fn expiring_up_to(&self) -> u64 {
        *self
            .timestamps_first
            .last()
            .expect("a round is never empty")
    }

    /// The view the round decided on, once decided: the overlay for the next round.
    pub fn into_view(self) -> View {
        self.view
    }

    /// Merges the replies of a read step; returns the next step.
    ///
    /// `unapplied` is the final view of the previous round when the shards answered the first
    /// reads before applying its commit (rounds overlap: one decides while the shards apply
    /// the other). Its values replace the stale ones, so the result is exactly as if the
    /// commit had been applied first.
    pub fn on_reads(&mut self, replies: Vec<ReadReply>, unapplied: Option<&View>) -> Step {
        assert_eq!(replies.len(), self.shard_count);
        let mut expiring = Vec::new();
        let accounts: usize = replies.iter().map(|r| r.accounts.len()).sum();
        let transfers: usize = replies.iter().map(|r| r.transfers.len()).sum();
        self.view.reserve(accounts, transfers + self.event_count);
        let mut account_ids = Vec::new();
        for reply in replies {
            if unapplied.is_some() && !self.followed_up {
                account_ids.extend(reply.accounts.iter().map(|a| a.id));
                account_ids.extend(&reply.missing_accounts);
            }
            for account in reply.accounts {
                self.view.insert_account(account);
            }
            for (transfer, status) in reply.transfers {
                self.view.insert_transfer(transfer, status);
            }
            for (id, result) in reply.failed {
                self.view.insert_failed(id, result);
            }
            expiring.extend(reply.expiring);
            self.unknown.extend(reply.unknown);
        }
        if !self.followed_up {
            self.followed_up = true;
            if let Some(newer) = unapplied {
                self.view.overlay(
                    newer,
                    account_ids.into_iter(),
                    self.read_transfers.iter().copied(),
                );
                expiring.extend(newer.pending_expiring_by(self.expiring_up_to()).copied());
            }
            self.view.set_expiring(expiring);
            if let Some(newer) = unapplied {
                let expiring_ids = self.view.expiring.iter().map(|t| t.id).collect::<Vec<_>>();
                self.view
                    .overlay(newer, std::iter::empty(), expiring_ids.into_iter());
            }
            // What the unapplied round wrote is newer than anything stored.
            let view = &self.view;
            self.unknown
                .retain(|id| !view.transfers.contains_key(id) && !view.failed.contains_key(id));
            if !self.unknown.is_empty() {
                return Step::Fetch(std::mem::take(&mut self.unknown));
            }
            return self.read_pending_accounts();
        }
        Step::Decided(self.decide())
    }

    /// Takes what the store holds of the ids of [`Step::Fetch`] (ids it does not hold are new);
    /// returns the next step.
    pub fn on_fetched(&mut self, stored: Vec<Stored>) -> Step {
        for stored in stored {
            self.view.insert_stored(stored);
        }
        self.read_pending_accounts()
    }

    /// A post or void may leave its accounts zero (inherit), and an expiring transfer names
    /// accounts no event named: reads the accounts of every pending transfer found.
    fn read_pending_accounts(&mut self) -> Step {
        let mut keys = KeysByShard::new(self.shard_count, 0);
        let pending_found = self
            .view
            .transfers
            .values()
            .filter(|t| t.flags.contains(TransferFlags::PENDING));
        for pending in pending_found {
            for id in [pending.debit_account_id, pending.credit_account_id] {
                if self.view.account(id).is_none() {
                    keys.account(id);
                }
            }
        }
        if !keys.is_empty() {
            return Step::Read(keys.into_requests(0));
        }
        Step::Decided(self.decide())
    }

    fn decide(&mut self) -> Decision {
        let mut decider = Decider::new(&mut self.view, self.event_count);
        let mut outcomes = Vec::with_capacity(self.operations.len());
        for (operation, &first) in self.operations.iter().zip(&self.timestamps_first) {
            decider.expire(first);
            outcomes.push(match operation {
                Operation::CreateAccounts(events) => {
                    Outcome::Accounts(decider.create_accounts(events, first))
                }
                Operation::CreateTransfers(events) => {
                    Outcome::Transfers(decider.create_transfers(events, first))
                }
                Operation::Expire => Outcome::Expired,
            });
        }
        Decision {
            records: decider.into_records(),
            timestamp_max: self.timestamp_max,
            outcomes,
            timestamps_first: self.timestamps_first.clone(),
        }
    }
}

/// Ids to read, split by owning shard (the shards deduplicate).
/// Transfer ids are not deduplicated: they rarely repeat, and a repeat costs one more lookup.
struct KeysByShard {
    requests: Vec<ReadRequest>,
}

impl KeysByShard {
    /// Room for `events` events spread over the shards, with some slack for skew.
    fn new(shard_count: usize, events: usize) -> Self {
        let per_shard = events / shard_count + events / 8 + 1;
        let requests = (0..shard_count)
            .map(|_| ReadRequest {
                accounts: Vec::with_capacity(2 * per_shard),
                transfers: Vec::with_capacity(per_shard),
                expiring_up_to: 0,
            })
            .collect();
        Self { requests }
    }

    fn account(&mut self, id: u128) {
        if id != 0 && id != u128::MAX {
            let shard = shard_of(id, self.requests.len());
            self.requests[shard].accounts.push(id);
        }
    }

    fn transfer(&mut self, id: u128) {
        if id != 0 && id != u128::MAX {
            let shard = shard_of(id, self.requests.len());
            self.requests[shard].transfers.push(id);
        }
    }

    fn is_empty(&self) -> bool {
        self.requests
            .iter()
            .all(|r| r.accounts.is_empty() && r.transfers.is_empty())
    }

    fn into_requests(mut self, expiring_up_to: u64) -> Vec<ReadRequest> {
        for request in &mut self.requests {
            request.expiring_up_to = expiring_up_to;
        }
        self.requests
    }
}
