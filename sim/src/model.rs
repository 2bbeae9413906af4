//! The reference model: a plain single-threaded ledger, written apart from the engine from the
//! documented rules (`docs/architecture.md`, the result codes' precedence), with nothing shared
//! but the types. No shards, no views, no undo log: a linked chain runs on a copy of the state
//! that is kept or thrown away whole. The simulator asks it for the result of every event and
//! compares with the engine's.

use std::collections::{BTreeMap, BTreeSet};

use kizo_ledger::types::NS_PER_SECOND;
use kizo_ledger::{
    Account, AccountFlags, CreateAccountResult as A, CreateTransferResult as T, PendingStatus,
    Transfer, TransferFlags, POST_WHOLE_PENDING_AMOUNT,
};

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub accounts: BTreeMap<u128, Account>,
    pub transfers: BTreeMap<u128, Transfer>,
    pub pending: BTreeMap<u128, PendingStatus>,
    pub failed: BTreeMap<u128, T>,
    /// The last timestamp handed out.
    pub timestamp_last: u64,
    /// Every change since the last [`Model::keep`], to go back to a [`Model::mark`].
    journal: Vec<Undo>,
    /// Pending transfers with a timeout, by (deadline, timestamp, id): follows `pending`.
    deadlines: BTreeSet<(u64, u64, u128)>,
}

#[derive(Clone, Debug)]
enum Undo {
    Account(u128, Option<Account>),
    Transfer(u128),
    Pending(u128, Option<PendingStatus>),
    Failed(u128),
    TimestampLast(u64),
}

impl Model {
    /// A point to come back to with [`Model::back_to`].
    pub fn mark(&self) -> usize {
        self.journal.len()
    }

    /// Undoes every change made since `mark`.
    pub fn back_to(&mut self, mark: usize) {
        while self.journal.len() > mark {
            match self.journal.pop().expect("longer than the mark") {
                Undo::Account(id, Some(old)) => {
                    self.accounts.insert(id, old);
                }
                Undo::Account(id, None) => {
                    self.accounts.remove(&id);
                }
                Undo::Transfer(id) => {
                    self.transfers.remove(&id);
                }
                Undo::Pending(id, Some(old)) => {
                    self.pending.insert(id, old);
                    self.follow_deadline(id);
                }
                Undo::Pending(id, None) => {
                    self.pending.remove(&id);
                    self.follow_deadline(id);
                }
                Undo::Failed(id) => {
                    self.failed.remove(&id);
                }
                Undo::TimestampLast(old) => self.timestamp_last = old,
            }
        }
    }

    /// Keeps every change made so far for good.
    pub fn keep(&mut self) {
        self.journal.clear();
    }

    fn change_account(&mut self, id: u128, change: impl FnOnce(&mut Account)) {
        let account = self.accounts.get_mut(&id).expect("a known account");
        self.journal.push(Undo::Account(id, Some(*account)));
        change(account);
    }

    fn add_account(&mut self, account: Account) {
        self.journal.push(Undo::Account(account.id, None));
        self.accounts.insert(account.id, account);
    }

    fn add_transfer(&mut self, transfer: Transfer) {
        self.journal.push(Undo::Transfer(transfer.id));
        self.transfers.insert(transfer.id, transfer);
    }

    fn set_pending(&mut self, id: u128, status: PendingStatus) {
        let old = self.pending.insert(id, status);
        self.journal.push(Undo::Pending(id, old));
        self.follow_deadline(id);
    }

    /// Keeps `deadlines` in step with transfer `id`'s pending status.
    fn follow_deadline(&mut self, id: u128) {
        let Some(t) = self.transfers.get(&id) else {
            return;
        };
        let Some(at) = expires_at(t) else {
            return;
        };
        let key = (at, t.timestamp, id);
        if self.pending.get(&id) == Some(&PendingStatus::Pending) {
            self.deadlines.insert(key);
        } else {
            self.deadlines.remove(&key);
        }
    }

    fn add_failed(&mut self, id: u128, result: T) {
        self.journal.push(Undo::Failed(id));
        self.failed.insert(id, result);
    }

    /// The first timestamp of an operation of `events` events at clock time `now` (events get
    /// consecutive timestamps; a round's operations follow each other).
    pub fn stamp(&mut self, now: u64, events: usize) -> u64 {
        let first = now.max(self.timestamp_last + 1);
        self.journal.push(Undo::TimestampLast(self.timestamp_last));
        self.timestamp_last = first + events as u64 - 1;
        first
    }

    /// Releases the pending transfers whose timeout is at or before `now`, oldest deadline
    /// first.
    pub fn expire(&mut self, now: u64) {
        let due: Vec<(u64, u64, u128)> = self
            .deadlines
            .iter()
            .take_while(|(at, _, _)| *at <= now)
            .copied()
            .collect();
        for (_, _, id) in due {
            let t = self.transfers[&id];
            self.set_pending(id, PendingStatus::Expired);
            self.change_account(t.debit_account_id, |a| a.debits_pending -= t.amount);
            self.change_account(t.credit_account_id, |a| a.credits_pending -= t.amount);
        }
    }

    pub fn create_accounts(&mut self, events: &[Account], first: u64) -> Vec<A> {
        let linked: Vec<bool> = events
            .iter()
            .map(|e| e.flags.contains(AccountFlags::LINKED))
            .collect();
        chains(
            self,
            &linked,
            A::Created,
            A::LinkedEventFailed,
            A::LinkedEventChainOpen,
            |m, i| m.create_account(&events[i], first + i as u64),
            |_, _, _| {},
        )
    }

    pub fn create_transfers(&mut self, events: &[Transfer], first: u64) -> Vec<T> {
        let linked: Vec<bool> = events
            .iter()
            .map(|e| e.flags.contains(TransferFlags::LINKED))
            .collect();
        chains(
            self,
            &linked,
            T::Created,
            T::LinkedEventFailed,
            T::LinkedEventChainOpen,
            |m, i| m.create_transfer(&events[i], first + i as u64),
            |m, i, result| {
                if result.is_transient() {
                    m.add_failed(events[i].id, result);
                }
            },
        )
    }

    fn create_account(&mut self, e: &Account, timestamp: u64) -> Result<A, A> {
        let f = e.flags;
        let rules = [
            (e.timestamp != 0, A::TimestampMustBeZero),
            (f.has_reserved_bits(), A::ReservedFlag),
            (e.id == 0, A::IdMustNotBeZero),
            (e.id == u128::MAX, A::IdMustNotBeIntMax),
            (
                f.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
                    && f.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
                A::FlagsAreMutuallyExclusive,
            ),
            (e.debits_pending != 0, A::DebitsPendingMustBeZero),
            (e.debits_posted != 0, A::DebitsPostedMustBeZero),
            (e.credits_pending != 0, A::CreditsPendingMustBeZero),
            (e.credits_posted != 0, A::CreditsPostedMustBeZero),
            (e.ledger == 0, A::LedgerMustNotBeZero),
            (e.code == 0, A::CodeMustNotBeZero),
        ];
        first_broken(&rules)?;
        if let Some(x) = self.accounts.get(&e.id) {
            first_broken(&[
                (e.flags != x.flags, A::ExistsWithDifferentFlags),
                (
                    e.user_data_128 != x.user_data_128,
                    A::ExistsWithDifferentUserData128,
                ),
                (
                    e.user_data_64 != x.user_data_64,
                    A::ExistsWithDifferentUserData64,
                ),
                (
                    e.user_data_32 != x.user_data_32,
                    A::ExistsWithDifferentUserData32,
                ),
                (e.ledger != x.ledger, A::ExistsWithDifferentLedger),
                (e.code != x.code, A::ExistsWithDifferentCode),
            ])?;
            return Ok(A::Exists);
        }
        self.add_account(Account { timestamp, ..*e });
        Ok(A::Created)
    }

    fn create_transfer(&mut self, e: &Transfer, timestamp: u64) -> Result<T, T> {
        let f = e.flags;
        let pending = f.contains(TransferFlags::PENDING);
        let post = f.contains(TransferFlags::POST_PENDING_TRANSFER);
        let void = f.contains(TransferFlags::VOID_PENDING_TRANSFER);
        let balancing = f.contains(TransferFlags::BALANCING_DEBIT)
            || f.contains(TransferFlags::BALANCING_CREDIT);
        let (dr, cr) = (e.debit_account_id, e.credit_account_id);
        first_broken(&[
            (e.timestamp != 0, T::TimestampMustBeZero),
            (f.has_reserved_bits(), T::ReservedFlag),
            (e.id == 0, T::IdMustNotBeZero),
            (e.id == u128::MAX, T::IdMustNotBeIntMax),
            (
                (pending as u8 + post as u8 + void as u8) > 1 || ((post || void) && balancing),
                T::FlagsAreMutuallyExclusive,
            ),
        ])?;
        if post || void {
            first_broken(&[
                (dr == u128::MAX, T::DebitAccountIdMustNotBeIntMax),
                (cr == u128::MAX, T::CreditAccountIdMustNotBeIntMax),
                (dr != 0 && dr == cr, T::AccountsMustBeDifferent),
                (e.pending_id == 0, T::PendingIdMustNotBeZero),
                (e.pending_id == u128::MAX, T::PendingIdMustNotBeIntMax),
                (e.pending_id == e.id, T::PendingIdMustBeDifferent),
                (e.timeout != 0, T::TimeoutReservedForPendingTransfer),
            ])?;
        } else {
            first_broken(&[
                (dr == 0, T::DebitAccountIdMustNotBeZero),
                (dr == u128::MAX, T::DebitAccountIdMustNotBeIntMax),
                (cr == 0, T::CreditAccountIdMustNotBeZero),
                (cr == u128::MAX, T::CreditAccountIdMustNotBeIntMax),
                (dr == cr, T::AccountsMustBeDifferent),
                (e.pending_id != 0, T::PendingIdMustBeZero),
                (
                    e.timeout != 0 && !pending,
                    T::TimeoutReservedForPendingTransfer,
                ),
                (e.amount == 0, T::AmountMustNotBeZero),
                (e.ledger == 0, T::LedgerMustNotBeZero),
                (e.code == 0, T::CodeMustNotBeZero),
            ])?;
        }
        if let Some(x) = self.transfers.get(&e.id) {
            return retry_of(e, x).map(|()| T::Exists);
        }
        if self.failed.contains_key(&e.id) {
            return Err(T::IdAlreadyFailed);
        }
        if post || void {
            self.resolve(e, timestamp, post)
        } else {
            self.single_or_pending(e, timestamp, pending)
        }
    }

    fn single_or_pending(&mut self, e: &Transfer, timestamp: u64, pending: bool) -> Result<T, T> {
        let d = *self
            .accounts
            .get(&e.debit_account_id)
            .ok_or(T::DebitAccountNotFound)?;
        let c = *self
            .accounts
            .get(&e.credit_account_id)
            .ok_or(T::CreditAccountNotFound)?;
        first_broken(&[
            (d.ledger != c.ledger, T::AccountsMustHaveTheSameLedger),
            (
                e.ledger != d.ledger,
                T::TransferMustHaveTheSameLedgerAsAccounts,
            ),
            (
                d.flags.contains(AccountFlags::CLOSED),
                T::DebitAccountAlreadyClosed,
            ),
            (
                c.flags.contains(AccountFlags::CLOSED),
                T::CreditAccountAlreadyClosed,
            ),
        ])?;
        let mut amount = e.amount;
        if e.flags.contains(TransferFlags::BALANCING_DEBIT) {
            let room = d
                .credits_posted
                .saturating_sub(d.debits_posted.saturating_add(d.debits_pending));
            amount = amount.min(room);
        }
        if e.flags.contains(TransferFlags::BALANCING_CREDIT) {
            let room = c
                .debits_posted
                .saturating_sub(c.credits_posted.saturating_add(c.credits_pending));
            amount = amount.min(room);
        }
        let fits = |a: u128, b: u128| a.checked_add(b).is_some();
        if pending {
            first_broken(&[
                (!fits(d.debits_pending, amount), T::OverflowsDebitsPending),
                (!fits(c.credits_pending, amount), T::OverflowsCreditsPending),
            ])?;
        } else {
            first_broken(&[
                (!fits(d.debits_posted, amount), T::OverflowsDebitsPosted),
                (!fits(c.credits_posted, amount), T::OverflowsCreditsPosted),
            ])?;
        }
        let debits = d
            .debits_pending
            .checked_add(d.debits_posted)
            .and_then(|x| x.checked_add(amount));
        let credits = c
            .credits_pending
            .checked_add(c.credits_posted)
            .and_then(|x| x.checked_add(amount));
        let debits = debits.ok_or(T::OverflowsDebits)?;
        let credits = credits.ok_or(T::OverflowsCredits)?;
        if pending
            && e.timeout != 0
            && timestamp
                .checked_add(u64::from(e.timeout) * NS_PER_SECOND)
                .is_none()
        {
            return Err(T::OverflowsTimeout);
        }
        first_broken(&[
            (
                d.flags
                    .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
                    && debits > d.credits_posted,
                T::ExceedsCredits,
            ),
            (
                c.flags
                    .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
                    && credits > c.debits_posted,
                T::ExceedsDebits,
            ),
            (
                amount == 0 && e.flags.contains(TransferFlags::BALANCING_DEBIT),
                T::ExceedsCredits,
            ),
            (amount == 0, T::ExceedsDebits),
        ])?;
        self.change_account(e.debit_account_id, |d| {
            if pending {
                d.debits_pending += amount
            } else {
                d.debits_posted += amount
            }
        });
        self.change_account(e.credit_account_id, |c| {
            if pending {
                c.credits_pending += amount
            } else {
                c.credits_posted += amount
            }
        });
        self.add_transfer(Transfer {
            amount,
            timestamp,
            ..*e
        });
        if pending {
            self.set_pending(e.id, PendingStatus::Pending);
        }
        Ok(T::Created)
    }

    fn resolve(&mut self, e: &Transfer, timestamp: u64, post: bool) -> Result<T, T> {
        let p = *self
            .transfers
            .get(&e.pending_id)
            .ok_or(T::PendingTransferNotFound)?;
        first_broken(&[
            (
                !p.flags.contains(TransferFlags::PENDING),
                T::PendingTransferNotPending,
            ),
            (
                e.debit_account_id != 0 && e.debit_account_id != p.debit_account_id,
                T::PendingTransferHasDifferentDebitAccountId,
            ),
            (
                e.credit_account_id != 0 && e.credit_account_id != p.credit_account_id,
                T::PendingTransferHasDifferentCreditAccountId,
            ),
            (
                e.ledger != 0 && e.ledger != p.ledger,
                T::PendingTransferHasDifferentLedger,
            ),
            (
                e.code != 0 && e.code != p.code,
                T::PendingTransferHasDifferentCode,
            ),
        ])?;
        let amount = if post {
            let amount = if e.amount == POST_WHOLE_PENDING_AMOUNT {
                p.amount
            } else {
                e.amount
            };
            first_broken(&[(amount > p.amount, T::ExceedsPendingTransferAmount)])?;
            amount
        } else {
            first_broken(&[(
                e.amount != 0 && e.amount != p.amount,
                T::PendingTransferHasDifferentAmount,
            )])?;
            p.amount
        };
        let status = self.pending[&p.id];
        first_broken(&[
            (
                status == PendingStatus::Posted,
                T::PendingTransferAlreadyPosted,
            ),
            (
                status == PendingStatus::Voided,
                T::PendingTransferAlreadyVoided,
            ),
            (status == PendingStatus::Expired, T::PendingTransferExpired),
            (
                expires_at(&p).is_some_and(|at| at <= timestamp),
                T::PendingTransferExpired,
            ),
        ])?;
        let (d, c) = (
            self.accounts[&p.debit_account_id],
            self.accounts[&p.credit_account_id],
        );
        if post {
            first_broken(&[
                (
                    d.flags.contains(AccountFlags::CLOSED),
                    T::DebitAccountAlreadyClosed,
                ),
                (
                    c.flags.contains(AccountFlags::CLOSED),
                    T::CreditAccountAlreadyClosed,
                ),
                (
                    d.debits_posted.checked_add(amount).is_none(),
                    T::OverflowsDebitsPosted,
                ),
                (
                    c.credits_posted.checked_add(amount).is_none(),
                    T::OverflowsCreditsPosted,
                ),
            ])?;
        }
        let or = |new: u128, old: u128| if new == 0 { old } else { new };
        let transfer = Transfer {
            id: e.id,
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            amount,
            pending_id: p.id,
            user_data_128: or(e.user_data_128, p.user_data_128),
            user_data_64: or(e.user_data_64.into(), p.user_data_64.into()) as u64,
            user_data_32: or(e.user_data_32.into(), p.user_data_32.into()) as u32,
            timeout: 0,
            ledger: p.ledger,
            code: p.code,
            flags: e.flags,
            timestamp,
        };
        self.change_account(p.debit_account_id, |d| {
            d.debits_pending -= p.amount;
            if post {
                d.debits_posted += amount
            }
        });
        self.change_account(p.credit_account_id, |c| {
            c.credits_pending -= p.amount;
            if post {
                c.credits_posted += amount
            }
        });
        self.add_transfer(transfer);
        let status = if post {
            PendingStatus::Posted
        } else {
            PendingStatus::Voided
        };
        self.set_pending(p.id, status);
        Ok(T::Created)
    }
}

pub fn expires_at(t: &Transfer) -> Option<u64> {
    if t.flags.contains(TransferFlags::PENDING) && t.timeout != 0 {
        t.timestamp
            .checked_add(u64::from(t.timeout) * NS_PER_SECOND)
    } else {
        None
    }
}

/// The first rule broken, in the order given.
fn first_broken<R: Copy>(rules: &[(bool, R)]) -> Result<(), R> {
    match rules.iter().find(|(broken, _)| *broken) {
        Some((_, result)) => Err(*result),
        None => Ok(()),
    }
}

/// `Ok` when `e` repeats `x`; zero fields of a post or void stand for the pending transfer's.
fn retry_of(e: &Transfer, x: &Transfer) -> Result<(), T> {
    let inherits = e.flags.contains(TransferFlags::POST_PENDING_TRANSFER)
        || e.flags.contains(TransferFlags::VOID_PENDING_TRANSFER);
    let same = |new: u128, old: u128| new == old || (inherits && new == 0);
    let balancing = e.flags.contains(TransferFlags::BALANCING_DEBIT)
        || e.flags.contains(TransferFlags::BALANCING_CREDIT);
    let amount_same = if balancing {
        x.amount <= e.amount
    } else if e.flags.contains(TransferFlags::POST_PENDING_TRANSFER) {
        e.amount == POST_WHOLE_PENDING_AMOUNT || e.amount == x.amount
    } else {
        same(e.amount, x.amount)
    };
    first_broken(&[
        (e.flags != x.flags, T::ExistsWithDifferentFlags),
        (
            e.pending_id != x.pending_id,
            T::ExistsWithDifferentPendingId,
        ),
        (e.timeout != x.timeout, T::ExistsWithDifferentTimeout),
        (
            !same(e.debit_account_id, x.debit_account_id),
            T::ExistsWithDifferentDebitAccountId,
        ),
        (
            !same(e.credit_account_id, x.credit_account_id),
            T::ExistsWithDifferentCreditAccountId,
        ),
        (!amount_same, T::ExistsWithDifferentAmount),
        (
            !same(e.user_data_128, x.user_data_128),
            T::ExistsWithDifferentUserData128,
        ),
        (
            !same(e.user_data_64.into(), x.user_data_64.into()),
            T::ExistsWithDifferentUserData64,
        ),
        (
            !same(e.user_data_32.into(), x.user_data_32.into()),
            T::ExistsWithDifferentUserData32,
        ),
        (
            !same(e.ledger.into(), x.ledger.into()),
            T::ExistsWithDifferentLedger,
        ),
        (
            !same(e.code.into(), x.code.into()),
            T::ExistsWithDifferentCode,
        ),
    ])
}

/// Linked chains, all or nothing: a chain's changes are undone unless every event succeeds.
/// Its first failure keeps its result, the rest get `linked_failed`; a chain still open at the
/// end fails with `chain_open`. `on_failure` records a failure on the model as it stands after
/// the chain is undone (so a transient failure is remembered).
fn chains<R: Copy + PartialEq>(
    model: &mut Model,
    linked: &[bool],
    created: R,
    linked_failed: R,
    chain_open: R,
    mut decide: impl FnMut(&mut Model, usize) -> Result<R, R>,
    mut on_failure: impl FnMut(&mut Model, usize, R),
) -> Vec<R> {
    let mut results = vec![created; linked.len()];
    let mut i = 0;
    while i < linked.len() {
        // The chain is i..=end: linked events up to the first unlinked one (or the batch end).
        let mut end = i;
        while linked[end] && end + 1 < linked.len() {
            end += 1;
        }
        let open = linked[end];
        if i == end && !open {
            // A lone event changes nothing unless it succeeds: no copy needed.
            match decide(model, i) {
                Ok(result) => results[i] = result,
                Err(result) => {
                    results[i] = result;
                    on_failure(model, i, result);
                }
            }
            i += 1;
            continue;
        }
        let mark = model.mark();
        let mut failure = None;
        for (j, slot) in results.iter_mut().enumerate().take(end + 1).skip(i) {
            let outcome = if open && j == end {
                Err(chain_open)
            } else {
                decide(model, j)
            };
            match outcome {
                Ok(result) => *slot = result,
                Err(result) => {
                    failure = Some((j, result));
                    break;
                }
            }
        }
        match failure {
            None => {}
            Some((j, result)) => {
                model.back_to(mark);
                results[i..=end].fill(linked_failed);
                results[j] = result;
                if result != chain_open {
                    on_failure(model, j, result);
                }
            }
        }
        i = end + 1;
    }
    results
}
