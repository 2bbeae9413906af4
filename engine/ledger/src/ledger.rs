//! The decision logic: given a view of the accounts and transfers a round touches, decide every
//! event in order and emit the records that carry out the decisions.
//!
//! Pure and deterministic: no I/O, no clock (timestamps are given), no randomness, no iteration
//! over hash maps. The same code decides in production, in tests and in the simulator.

use ahash::AHashMap;

use crate::record::Record;
use crate::results::{CreateAccountResult, CreateTransferResult};
use crate::store::Stored;
use crate::types::{
    Account, AccountFlags, PendingStatus, Transfer, TransferFlags, NS_PER_SECOND,
    POST_WHOLE_PENDING_AMOUNT,
};

/// The part of the ledger a round reads, then changes as it decides.
#[derive(Debug, Default)]
pub struct View {
    pub(crate) accounts: AHashMap<u128, Account>,
    pub(crate) transfers: AHashMap<u128, Transfer>,
    pub(crate) pending: AHashMap<u128, PendingStatus>,
    pub(crate) failed: AHashMap<u128, CreateTransferResult>,
    /// Pending transfers whose timeout falls within the round, ordered by (expiry, timestamp).
    pub(crate) expiring: Vec<Transfer>,
    expiring_done: usize,
}

impl View {
    /// Empties the view and keeps its memory.
    pub fn clear(&mut self) {
        self.accounts.clear();
        self.transfers.clear();
        self.pending.clear();
        self.failed.clear();
        self.expiring.clear();
        self.expiring_done = 0;
    }

    /// Room for `accounts` more accounts and `transfers` more transfers without rehashing.
    pub fn reserve(&mut self, accounts: usize, transfers: usize) {
        self.accounts.reserve(accounts);
        self.transfers.reserve(transfers);
    }

    pub fn insert_account(&mut self, account: Account) {
        self.accounts.insert(account.id, account);
    }

    pub fn insert_transfer(&mut self, transfer: Transfer, pending: Option<PendingStatus>) {
        debug_assert_eq!(
            pending.is_some(),
            transfer.flags.contains(TransferFlags::PENDING)
        );
        if let Some(status) = pending {
            self.pending.insert(transfer.id, status);
        }
        self.transfers.insert(transfer.id, transfer);
    }

    pub fn insert_failed(&mut self, id: u128, result: CreateTransferResult) {
        debug_assert!(result.is_transient());
        self.failed.insert(id, result);
    }

    /// What the store held of an id the shards let go of. The view's own value, if it has one,
    /// is newer (an unapplied round's) and stays.
    pub fn insert_stored(&mut self, stored: Stored) {
        match stored {
            Stored::Transfer(transfer, status) => {
                if !self.transfers.contains_key(&transfer.id) {
                    self.insert_transfer(transfer, status);
                }
            }
            Stored::Failed(id, result) => {
                self.failed.entry(id).or_insert(result);
            }
        }
    }

    /// Pending transfers that may expire during the round; any order, duplicates allowed.
    pub fn set_expiring(&mut self, mut expiring: Vec<Transfer>) {
        expiring.sort_unstable_by_key(|t| (t.expires_at(), t.timestamp, t.id));
        expiring.dedup_by_key(|t| t.id);
        for transfer in &expiring {
            self.insert_transfer(*transfer, Some(PendingStatus::Pending));
        }
        self.expiring = expiring;
        self.expiring_done = 0;
    }

    pub fn account(&self, id: u128) -> Option<&Account> {
        self.accounts.get(&id)
    }

    /// Pending transfers this view holds as still pending that expire by `up_to`.
    pub(crate) fn pending_expiring_by(&self, up_to: u64) -> impl Iterator<Item = &Transfer> {
        self.transfers.values().filter(move |t| {
            self.pending.get(&t.id) == Some(&PendingStatus::Pending)
                && t.expires_at().is_some_and(|at| at <= up_to)
        })
    }

    /// Replaces what this view read for the given ids by `newer`'s values, where it has them:
    /// `newer` is the final view of a round whose commit the shards had not applied yet.
    pub(crate) fn overlay(
        &mut self,
        newer: &View,
        account_ids: impl Iterator<Item = u128>,
        transfer_ids: impl Iterator<Item = u128>,
    ) {
        for id in account_ids {
            if let Some(account) = newer.accounts.get(&id) {
                self.accounts.insert(id, *account);
            }
        }
        for id in transfer_ids {
            if let Some(transfer) = newer.transfers.get(&id) {
                self.transfers.insert(id, *transfer);
                if let Some(status) = newer.pending.get(&id) {
                    self.pending.insert(id, *status);
                }
            }
            if let Some(result) = newer.failed.get(&id) {
                self.failed.insert(id, *result);
            }
        }
    }
}

/// One step back, to roll a failed linked chain out of the view.
enum Undo {
    Account(u128, Option<Account>),
    Transfer(u128),
    Pending(u128, Option<PendingStatus>),
}

/// Decides events against a [`View`], collecting the records of what was decided.
pub struct Decider<'v> {
    view: &'v mut View,
    records: Vec<Record>,
    undo: Vec<Undo>,
    /// Whether the event being decided is in a linked chain (and so may have to be undone).
    in_chain: bool,
}

impl<'v> Decider<'v> {
    /// `events`: how many events will be decided, to size the records up front.
    pub fn new(view: &'v mut View, events: usize) -> Self {
        Self {
            view,
            records: Vec::with_capacity(events),
            undo: Vec::new(),
            in_chain: false,
        }
    }

    pub fn into_records(self) -> Vec<Record> {
        self.records
    }

    /// Releases every pending transfer of the view whose timeout is at or before `now`.
    pub fn expire(&mut self, now: u64) {
        debug_assert!(
            self.undo.is_empty(),
            "expiry never happens inside a linked chain"
        );
        while let Some(pending) = self.view.expiring.get(self.view.expiring_done).copied() {
            let expires_at = pending
                .expires_at()
                .expect("only transfers with a timeout expire");
            if expires_at > now {
                break;
            }
            self.view.expiring_done += 1;
            if self.view.pending.get(&pending.id) != Some(&PendingStatus::Pending) {
                continue; // posted or voided earlier in this round
            }
            self.view.pending.insert(pending.id, PendingStatus::Expired);
            self.push_record(Record::PendingExpired {
                pending_id: pending.id,
                debit_account_id: pending.debit_account_id,
                credit_account_id: pending.credit_account_id,
                amount: pending.amount,
            });
        }
    }

    /// Decides a batch of accounts; event `i` gets timestamp `timestamp_first + i`.
    pub fn create_accounts(
        &mut self,
        events: &[Account],
        timestamp_first: u64,
    ) -> Vec<CreateAccountResult> {
        use CreateAccountResult as R;
        let linked: Vec<bool> = events
            .iter()
            .map(|e| e.flags.contains(AccountFlags::LINKED))
            .collect();
        self.decide_chains(
            &linked,
            R::Created,
            R::LinkedEventFailed,
            R::LinkedEventChainOpen,
            |this, i| this.create_account(&events[i], timestamp_first + i as u64),
            |_, _, _| {},
        )
    }

    /// Decides a batch of transfers; event `i` gets timestamp `timestamp_first + i`.
    pub fn create_transfers(
        &mut self,
        events: &[Transfer],
        timestamp_first: u64,
    ) -> Vec<CreateTransferResult> {
        use CreateTransferResult as R;
        let linked: Vec<bool> = events
            .iter()
            .map(|e| e.flags.contains(TransferFlags::LINKED))
            .collect();
        self.decide_chains(
            &linked,
            R::Created,
            R::LinkedEventFailed,
            R::LinkedEventChainOpen,
            |this, i| this.create_transfer(&events[i], timestamp_first + i as u64),
            |this, i, result| {
                if result.is_transient() {
                    this.view.failed.insert(events[i].id, result);
                    this.records.push(Record::TransferFailed {
                        id: events[i].id,
                        result,
                    });
                }
            },
        )
    }

    /// The linked-chain rules shared by accounts and transfers: a chain succeeds or fails whole;
    /// its first failing event keeps its own result and the others get `linked_event_failed`;
    /// a chain still open at the end of the batch fails with `linked_event_chain_open`.
    /// `Exists` counts as success, so that retrying a whole batch returns `exists` throughout.
    fn decide_chains<R: Copy + PartialEq>(
        &mut self,
        linked: &[bool],
        created: R,
        linked_failed: R,
        chain_open: R,
        mut decide: impl FnMut(&mut Self, usize) -> Result<R, R>,
        mut on_failure: impl FnMut(&mut Self, usize, R),
    ) -> Vec<R> {
        let mut results = vec![created; linked.len()];
        let mut chain: Option<(usize, usize)> = None; // (first event, records mark)
        let mut chain_failed = false;
        for i in 0..linked.len() {
            if chain.is_none() && linked[i] {
                chain = Some((i, self.records.len()));
            }
            self.in_chain = chain.is_some();
            let outcome = if chain_failed {
                Err(linked_failed)
            } else if linked[i] && i + 1 == linked.len() {
                Err(chain_open)
            } else {
                decide(self, i)
            };
            match outcome {
                Ok(result) => results[i] = result,
                Err(result) => {
                    results[i] = result;
                    if let Some((first, records_mark)) = chain {
                        if !chain_failed {
                            chain_failed = true;
                            self.rollback(records_mark);
                            results[first..i].fill(linked_failed);
                        }
                    }
                    if result != linked_failed && result != chain_open {
                        on_failure(self, i, result);
                    }
                }
            }
            if !linked[i] || i + 1 == linked.len() {
                chain = None;
                chain_failed = false;
                self.undo.clear();
            }
        }
        debug_assert!(self.undo.is_empty());
        self.in_chain = false;
        results
    }

    fn rollback(&mut self, records_mark: usize) {
        self.records.truncate(records_mark);
        while let Some(step) = self.undo.pop() {
            match step {
                Undo::Account(id, Some(old)) => {
                    self.view.accounts.insert(id, old);
                }
                Undo::Account(id, None) => {
                    self.view.accounts.remove(&id);
                }
                Undo::Transfer(id) => {
                    self.view.transfers.remove(&id);
                }
                Undo::Pending(id, Some(old)) => {
                    self.view.pending.insert(id, old);
                }
                Undo::Pending(id, None) => {
                    self.view.pending.remove(&id);
                }
            }
        }
    }

    /// Keeps a step to undo if the event is in a linked chain (which may yet fail).
    fn remember(&mut self, step: Undo) {
        if self.in_chain {
            self.undo.push(step);
        }
    }

    /// Applies a decided record's balance effects to the view's accounts, then keeps it.
    fn push_record(&mut self, record: Record) {
        for leg in record.legs().into_iter().flatten() {
            let account = self
                .view
                .accounts
                .get_mut(&leg.account_id)
                .expect("a decided change touches only accounts in the view");
            // Inline rather than `remember`: `account` borrows the view; copy it only in a chain.
            if self.in_chain {
                self.undo
                    .push(Undo::Account(leg.account_id, Some(*account)));
            }
            leg.apply(account)
                .expect("a decided change keeps balances within u128");
        }
        self.records.push(record);
    }

    fn set_pending(&mut self, id: u128, status: PendingStatus) {
        let old = self.view.pending.insert(id, status);
        self.remember(Undo::Pending(id, old));
    }

    fn insert_transfer(&mut self, transfer: Transfer) {
        let old = self.view.transfers.insert(transfer.id, transfer);
        debug_assert!(old.is_none());
        self.remember(Undo::Transfer(transfer.id));
    }

    fn create_account(
        &mut self,
        e: &Account,
        timestamp: u64,
    ) -> Result<CreateAccountResult, CreateAccountResult> {
        use CreateAccountResult as R;
        check(e.timestamp == 0, R::TimestampMustBeZero)?;
        check(!e.flags.has_reserved_bits(), R::ReservedFlag)?;
        check(e.id != 0, R::IdMustNotBeZero)?;
        check(e.id != u128::MAX, R::IdMustNotBeIntMax)?;
        check(
            !(e.flags
                .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
                && e.flags
                    .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)),
            R::FlagsAreMutuallyExclusive,
        )?;
        check(e.debits_pending == 0, R::DebitsPendingMustBeZero)?;
        check(e.debits_posted == 0, R::DebitsPostedMustBeZero)?;
        check(e.credits_pending == 0, R::CreditsPendingMustBeZero)?;
        check(e.credits_posted == 0, R::CreditsPostedMustBeZero)?;
        check(e.ledger != 0, R::LedgerMustNotBeZero)?;
        check(e.code != 0, R::CodeMustNotBeZero)?;
        if let Some(existing) = self.view.accounts.get(&e.id) {
            check(e.flags == existing.flags, R::ExistsWithDifferentFlags)?;
            check(
                e.user_data_128 == existing.user_data_128,
                R::ExistsWithDifferentUserData128,
            )?;
            check(
                e.user_data_64 == existing.user_data_64,
                R::ExistsWithDifferentUserData64,
            )?;
            check(
                e.user_data_32 == existing.user_data_32,
                R::ExistsWithDifferentUserData32,
            )?;
            check(e.ledger == existing.ledger, R::ExistsWithDifferentLedger)?;
            check(e.code == existing.code, R::ExistsWithDifferentCode)?;
            return Ok(R::Exists);
        }
        let account = Account { timestamp, ..*e };
        self.view.accounts.insert(account.id, account);
        self.remember(Undo::Account(account.id, None));
        self.records.push(Record::AccountCreated(account));
        Ok(R::Created)
    }

    fn create_transfer(
        &mut self,
        e: &Transfer,
        timestamp: u64,
    ) -> Result<CreateTransferResult, CreateTransferResult> {
        use CreateTransferResult as R;
        validate_transfer(e)?;
        if let Some(existing) = self.view.transfers.get(&e.id) {
            return transfer_exists(e, existing).map(|()| R::Exists);
        }
        check(!self.view.failed.contains_key(&e.id), R::IdAlreadyFailed)?;
        if e.is_post_or_void() {
            self.resolve_pending(e, timestamp)
        } else {
            self.create_single_or_pending(e, timestamp)
        }
    }

    fn create_single_or_pending(
        &mut self,
        e: &Transfer,
        timestamp: u64,
    ) -> Result<CreateTransferResult, CreateTransferResult> {
        use CreateTransferResult as R;
        // One lookup for both accounts; validation made sure they differ.
        let [debit, credit] = self
            .view
            .accounts
            .get_disjoint_mut([&e.debit_account_id, &e.credit_account_id]);
        let debit = debit.ok_or(R::DebitAccountNotFound)?;
        let credit = credit.ok_or(R::CreditAccountNotFound)?;
        let (dr, cr) = (*debit, *credit);
        check(dr.ledger == cr.ledger, R::AccountsMustHaveTheSameLedger)?;
        check(
            e.ledger == dr.ledger,
            R::TransferMustHaveTheSameLedgerAsAccounts,
        )?;
        check(
            !dr.flags.contains(AccountFlags::CLOSED),
            R::DebitAccountAlreadyClosed,
        )?;
        check(
            !cr.flags.contains(AccountFlags::CLOSED),
            R::CreditAccountAlreadyClosed,
        )?;

        let mut amount = e.amount;
        if e.flags.contains(TransferFlags::BALANCING_DEBIT) {
            let held = dr.debits().unwrap_or(u128::MAX);
            amount = amount.min(dr.credits_posted.saturating_sub(held));
        }
        if e.flags.contains(TransferFlags::BALANCING_CREDIT) {
            let held = cr.credits().unwrap_or(u128::MAX);
            amount = amount.min(cr.debits_posted.saturating_sub(held));
        }

        let pending = e.flags.contains(TransferFlags::PENDING);
        if pending {
            check(
                dr.debits_pending.checked_add(amount).is_some(),
                R::OverflowsDebitsPending,
            )?;
            check(
                cr.credits_pending.checked_add(amount).is_some(),
                R::OverflowsCreditsPending,
            )?;
        } else {
            check(
                dr.debits_posted.checked_add(amount).is_some(),
                R::OverflowsDebitsPosted,
            )?;
            check(
                cr.credits_posted.checked_add(amount).is_some(),
                R::OverflowsCreditsPosted,
            )?;
        }
        let debits_after = dr
            .debits()
            .and_then(|d| d.checked_add(amount))
            .ok_or(R::OverflowsDebits)?;
        let credits_after = cr
            .credits()
            .and_then(|c| c.checked_add(amount))
            .ok_or(R::OverflowsCredits)?;
        if pending && e.timeout != 0 {
            check(
                timestamp
                    .checked_add(u64::from(e.timeout) * NS_PER_SECOND)
                    .is_some(),
                R::OverflowsTimeout,
            )?;
        }
        check(!dr.debits_exceed_limit(debits_after), R::ExceedsCredits)?;
        check(!cr.credits_exceed_limit(credits_after), R::ExceedsDebits)?;
        // A balancing transfer that can move nothing failed for want of funds.
        check(
            amount != 0 || !e.flags.contains(TransferFlags::BALANCING_DEBIT),
            R::ExceedsCredits,
        )?;
        check(amount != 0, R::ExceedsDebits)?;

        let transfer = Transfer {
            amount,
            timestamp,
            ..*e
        };
        if self.in_chain {
            self.undo.push(Undo::Account(dr.id, Some(dr)));
            self.undo.push(Undo::Account(cr.id, Some(cr)));
        }
        let record = Record::TransferCreated(transfer);
        let [debit_leg, credit_leg] = record.legs().expect("a transfer moves two balances");
        debit_leg
            .apply(debit)
            .expect("the overflow checks above passed");
        credit_leg
            .apply(credit)
            .expect("the overflow checks above passed");
        self.insert_transfer(transfer);
        if pending {
            self.set_pending(transfer.id, PendingStatus::Pending);
        }
        self.records.push(record);
        Ok(R::Created)
    }

    fn resolve_pending(
        &mut self,
        e: &Transfer,
        timestamp: u64,
    ) -> Result<CreateTransferResult, CreateTransferResult> {
        use CreateTransferResult as R;
        let p = *self
            .view
            .transfers
            .get(&e.pending_id)
            .ok_or(R::PendingTransferNotFound)?;
        check(
            p.flags.contains(TransferFlags::PENDING),
            R::PendingTransferNotPending,
        )?;
        check(
            e.debit_account_id == 0 || e.debit_account_id == p.debit_account_id,
            R::PendingTransferHasDifferentDebitAccountId,
        )?;
        check(
            e.credit_account_id == 0 || e.credit_account_id == p.credit_account_id,
            R::PendingTransferHasDifferentCreditAccountId,
        )?;
        check(
            e.ledger == 0 || e.ledger == p.ledger,
            R::PendingTransferHasDifferentLedger,
        )?;
        check(
            e.code == 0 || e.code == p.code,
            R::PendingTransferHasDifferentCode,
        )?;
        let post = e.flags.contains(TransferFlags::POST_PENDING_TRANSFER);
        let amount = if post {
            let amount = if e.amount == POST_WHOLE_PENDING_AMOUNT {
                p.amount
            } else {
                e.amount
            };
            check(amount <= p.amount, R::ExceedsPendingTransferAmount)?;
            amount
        } else {
            check(
                e.amount == 0 || e.amount == p.amount,
                R::PendingTransferHasDifferentAmount,
            )?;
            p.amount
        };
        let status = self.view.pending.get(&p.id).copied();
        debug_assert!(
            status.is_some(),
            "a pending transfer in the view has a status"
        );
        check(
            status != Some(PendingStatus::Posted),
            R::PendingTransferAlreadyPosted,
        )?;
        check(
            status != Some(PendingStatus::Voided),
            R::PendingTransferAlreadyVoided,
        )?;
        check(
            status != Some(PendingStatus::Expired),
            R::PendingTransferExpired,
        )?;
        check(
            p.expires_at().is_none_or(|at| at > timestamp),
            R::PendingTransferExpired,
        )?;

        let dr = *self
            .view
            .accounts
            .get(&p.debit_account_id)
            .expect("the accounts of a pending transfer are in the view");
        let cr = *self
            .view
            .accounts
            .get(&p.credit_account_id)
            .expect("the accounts of a pending transfer are in the view");
        if post {
            check(
                !dr.flags.contains(AccountFlags::CLOSED),
                R::DebitAccountAlreadyClosed,
            )?;
            check(
                !cr.flags.contains(AccountFlags::CLOSED),
                R::CreditAccountAlreadyClosed,
            )?;
            check(
                dr.debits_posted.checked_add(amount).is_some(),
                R::OverflowsDebitsPosted,
            )?;
            check(
                cr.credits_posted.checked_add(amount).is_some(),
                R::OverflowsCreditsPosted,
            )?;
        }

        let transfer = Transfer {
            id: e.id,
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            amount,
            pending_id: p.id,
            user_data_128: nonzero_or(e.user_data_128, p.user_data_128),
            user_data_64: nonzero_or(e.user_data_64, p.user_data_64),
            user_data_32: nonzero_or(e.user_data_32, p.user_data_32),
            timeout: 0,
            ledger: p.ledger,
            code: p.code,
            flags: e.flags,
            timestamp,
        };
        let pending_amount = p.amount;
        self.insert_transfer(transfer);
        if post {
            self.set_pending(p.id, PendingStatus::Posted);
            self.push_record(Record::PendingPosted {
                transfer,
                pending_amount,
            });
        } else {
            self.set_pending(p.id, PendingStatus::Voided);
            self.push_record(Record::PendingVoided {
                transfer,
                pending_amount,
            });
        }
        Ok(R::Created)
    }
}

fn check<R>(condition: bool, failure: R) -> Result<(), R> {
    if condition {
        Ok(())
    } else {
        Err(failure)
    }
}

fn nonzero_or<T: Default + PartialEq>(value: T, inherited: T) -> T {
    if value == T::default() {
        inherited
    } else {
        value
    }
}

/// The checks that need nothing but the event itself, in precedence order. Public for what
/// decides a transfer outside one ledger (a cluster's transfers between partitions), so that
/// it refuses what a ledger would, with the same codes.
pub fn validate_transfer(e: &Transfer) -> Result<(), CreateTransferResult> {
    use CreateTransferResult as R;
    check(e.timestamp == 0, R::TimestampMustBeZero)?;
    check(!e.flags.has_reserved_bits(), R::ReservedFlag)?;
    check(e.id != 0, R::IdMustNotBeZero)?;
    check(e.id != u128::MAX, R::IdMustNotBeIntMax)?;
    let pending = e.flags.contains(TransferFlags::PENDING);
    let post = e.flags.contains(TransferFlags::POST_PENDING_TRANSFER);
    let void = e.flags.contains(TransferFlags::VOID_PENDING_TRANSFER);
    let balancing = e.flags.contains(TransferFlags::BALANCING_DEBIT)
        || e.flags.contains(TransferFlags::BALANCING_CREDIT);
    check(
        u8::from(pending) + u8::from(post) + u8::from(void) <= 1 && !((post || void) && balancing),
        R::FlagsAreMutuallyExclusive,
    )?;
    if post || void {
        check(
            e.debit_account_id != u128::MAX,
            R::DebitAccountIdMustNotBeIntMax,
        )?;
        check(
            e.credit_account_id != u128::MAX,
            R::CreditAccountIdMustNotBeIntMax,
        )?;
        check(
            e.debit_account_id == 0 || e.debit_account_id != e.credit_account_id,
            R::AccountsMustBeDifferent,
        )?;
        check(e.pending_id != 0, R::PendingIdMustNotBeZero)?;
        check(e.pending_id != u128::MAX, R::PendingIdMustNotBeIntMax)?;
        check(e.pending_id != e.id, R::PendingIdMustBeDifferent)?;
        check(e.timeout == 0, R::TimeoutReservedForPendingTransfer)?;
    } else {
        check(e.debit_account_id != 0, R::DebitAccountIdMustNotBeZero)?;
        check(
            e.debit_account_id != u128::MAX,
            R::DebitAccountIdMustNotBeIntMax,
        )?;
        check(e.credit_account_id != 0, R::CreditAccountIdMustNotBeZero)?;
        check(
            e.credit_account_id != u128::MAX,
            R::CreditAccountIdMustNotBeIntMax,
        )?;
        check(
            e.debit_account_id != e.credit_account_id,
            R::AccountsMustBeDifferent,
        )?;
        check(e.pending_id == 0, R::PendingIdMustBeZero)?;
        check(
            e.timeout == 0 || pending,
            R::TimeoutReservedForPendingTransfer,
        )?;
        check(e.amount != 0, R::AmountMustNotBeZero)?;
        check(e.ledger != 0, R::LedgerMustNotBeZero)?;
        check(e.code != 0, R::CodeMustNotBeZero)?;
    }
    Ok(())
}

/// `Ok` when `e` is a retry of `existing`; otherwise the first field that differs. Zero fields of
/// a post or void inherit from the pending transfer, so they match whatever was stored.
pub fn transfer_exists(e: &Transfer, existing: &Transfer) -> Result<(), CreateTransferResult> {
    use CreateTransferResult as R;
    let inherits = e.is_post_or_void();
    let same = |new: u128, stored: u128| new == stored || (inherits && new == 0);
    check(e.flags == existing.flags, R::ExistsWithDifferentFlags)?;
    check(
        e.pending_id == existing.pending_id,
        R::ExistsWithDifferentPendingId,
    )?;
    check(e.timeout == existing.timeout, R::ExistsWithDifferentTimeout)?;
    check(
        same(e.debit_account_id, existing.debit_account_id),
        R::ExistsWithDifferentDebitAccountId,
    )?;
    check(
        same(e.credit_account_id, existing.credit_account_id),
        R::ExistsWithDifferentCreditAccountId,
    )?;
    let balancing = e.flags.contains(TransferFlags::BALANCING_DEBIT)
        || e.flags.contains(TransferFlags::BALANCING_CREDIT);
    let post = e.flags.contains(TransferFlags::POST_PENDING_TRANSFER);
    let same_amount = if balancing {
        existing.amount <= e.amount
    } else if post {
        e.amount == POST_WHOLE_PENDING_AMOUNT || e.amount == existing.amount
    } else {
        same(e.amount, existing.amount)
    };
    check(same_amount, R::ExistsWithDifferentAmount)?;
    check(
        same(e.user_data_128, existing.user_data_128),
        R::ExistsWithDifferentUserData128,
    )?;
    check(
        same(e.user_data_64.into(), existing.user_data_64.into()),
        R::ExistsWithDifferentUserData64,
    )?;
    check(
        same(e.user_data_32.into(), existing.user_data_32.into()),
        R::ExistsWithDifferentUserData32,
    )?;
    check(
        same(e.ledger.into(), existing.ledger.into()),
        R::ExistsWithDifferentLedger,
    )?;
    check(
        same(e.code.into(), existing.code.into()),
        R::ExistsWithDifferentCode,
    )?;
    Ok(())
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
