//! A transfer between accounts of two partitions, exactly once, through clearing accounts
//! (TigerBeetle's guidance for transfers across ledgers, applied across partitions):
//!
//! 1. **Hold** at the source: a pending transfer from the sender to the source partition's
//!    clearing account. Refused (insufficient funds, ...): the transfer is refused; nothing moved.
//! 2. **Credit** at the destination: a posted transfer from the destination partition's
//!    clearing account to the receiver.
//! 3. **Post** the hold at the source when the credit was made, or **Void** it when the
//!    destination refused the credit (the receiver's account is closed, or missing).
//!
//! Every leg's id derives from the transfer's ([`leg_id`]), so a retry, a restart or a
//! takeover re-submits the same leg, which the partition answers `exists`: no leg is ever
//! doubled. When every transfer is final, each ledger's clearing accounts net to zero; while
//! one is under way the sender sees the amount held and the receiver sees it once the credit
//! is made.

use kizo_ledger::{CreateTransferResult, Transfer, TransferFlags};
use sha2::{Digest, Sha256};

use crate::partition::{partition_of, PartitionCount};

/// The clearing account of `ledger` in `partition`: "kizoclr\0" in ASCII in the high 64 bits,
/// the partition and the ledger below; readable in a dump, never a hash of user input.
pub fn clearing_account_id(ledger: u32, partition: u32) -> u128 {
    (0x6b69_7a6f_636c_7200_u128 << 64) | (u128::from(partition) << 32) | u128::from(ledger)
}

/// The code of clearing accounts ("ce" for cross-entry).
pub const CLEARING_CODE: u16 = 0xCE;

/// The clearing account of `ledger` in `partition`, as it is created: no balance limit either
/// way (a source's clearing account gains, a destination's gives).
pub fn clearing_account(ledger: u32, partition: u32) -> kizo_ledger::Account {
    kizo_ledger::Account::new(
        clearing_account_id(ledger, partition),
        ledger,
        CLEARING_CODE,
    )
}

/// The clearing account's partition and ledger, if `account` is one.
pub fn clearing_account_of(account: u128) -> Option<(u32, u32)> {
    const PREFIX: u128 = 0x6b69_7a6f_636c_7200;
    (account >> 64 == PREFIX).then_some(((account >> 32) as u32, account as u32))
}

/// What the clearing accounts hold, per ledger, summed over every partition: posted credits
/// less posted debits, and pending amounts. When no cross-partition transfer is under way,
/// both are zero for every ledger; otherwise the pending amounts are the holds of transfers
/// in flight. Reconciliation reports a ledger whose net is not zero.
pub fn clearing_totals(
    accounts: &[kizo_ledger::Account],
) -> std::collections::BTreeMap<u32, (i128, u128)> {
    let mut totals = std::collections::BTreeMap::new();
    for account in accounts {
        if let Some((_, ledger)) = clearing_account_of(account.id) {
            let (net, pending): &mut (i128, u128) = totals.entry(ledger).or_default();
            *net += account.credits_posted as i128 - account.debits_posted as i128;
            *pending += account.credits_pending + account.debits_pending;
        }
    }
    totals
}

/// The legs of a cross-partition transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Leg {
    Hold,
    Credit,
    Post,
    Void,
}

impl Leg {
    fn tag(self) -> u8 {
        match self {
            Leg::Hold => b'h',
            Leg::Credit => b'c',
            Leg::Post => b'p',
            Leg::Void => b'v',
        }
    }
}

/// A leg's transfer id: SHA-256 of `"kizo cross-partition leg v1\0"`, the transfer's id (16
/// bytes LE) and the leg's tag (`h`, `c`, `p` or `v`), first 16 bytes little-endian, clamped
/// to `1..=u128::MAX-1`. Stored in the ledger: never change it.
pub fn leg_id(transfer_id: u128, leg: Leg) -> u128 {
    let digest = Sha256::new()
        .chain_update(b"kizo cross-partition leg v1\0")
        .chain_update(transfer_id.to_le_bytes())
        .chain_update([leg.tag()])
        .finalize();
    u128::from_le_bytes(digest[..16].try_into().expect("16 bytes")).clamp(1, u128::MAX - 1)
}

/// How a cross-partition transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrossOutcome {
    /// The receiver was credited and the sender's hold posted.
    Posted,
    /// Refused at `leg` with `result` (the hold, or the credit, whose hold was then voided):
    /// no money moved.
    Refused {
        leg: Leg,
        result: CreateTransferResult,
    },
    /// A post or void of this transfer's own hold was refused: impossible unless the books
    /// were changed behind the protocol's back. Reconciliation reports it; a person decides.
    NeedsReview {
        leg: Leg,
        result: CreateTransferResult,
    },
}

/// Where a cross-partition transfer stands: the leg to submit next, or its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Hold,
    Credit,
    Post,
    /// Void the hold, then report the credit's refusal.
    Void(CreateTransferResult),
    Done(CrossOutcome),
}

impl Leg {
    /// The leg's stored name.
    pub fn code(self) -> &'static str {
        match self {
            Leg::Hold => "hold",
            Leg::Credit => "credit",
            Leg::Post => "post",
            Leg::Void => "void",
        }
    }

    pub fn parse(code: &str) -> Option<Leg> {
        [Leg::Hold, Leg::Credit, Leg::Post, Leg::Void]
            .into_iter()
            .find(|leg| leg.code() == code)
    }
}

impl Phase {
    /// The phase as stored: `hold`, `credit`, `post`, `void:<result>`, `posted`,
    /// `refused:<leg>:<result>` or `review:<leg>:<result>` (results by their stable names).
    pub fn code(self) -> String {
        match self {
            Phase::Hold => "hold".into(),
            Phase::Credit => "credit".into(),
            Phase::Post => "post".into(),
            Phase::Void(result) => format!("void:{}", result.code()),
            Phase::Done(CrossOutcome::Posted) => "posted".into(),
            Phase::Done(CrossOutcome::Refused { leg, result }) => {
                format!("refused:{}:{}", leg.code(), result.code())
            }
            Phase::Done(CrossOutcome::NeedsReview { leg, result }) => {
                format!("review:{}:{}", leg.code(), result.code())
            }
        }
    }

    pub fn parse(code: &str) -> Option<Phase> {
        let result = |name: &str| {
            CreateTransferResult::ALL
                .iter()
                .copied()
                .find(|r| r.code() == name)
        };
        let mut parts = code.split(':');
        let phase = match (parts.next()?, parts.next(), parts.next()) {
            ("hold", None, None) => Phase::Hold,
            ("credit", None, None) => Phase::Credit,
            ("post", None, None) => Phase::Post,
            ("void", Some(r), None) => Phase::Void(result(r)?),
            ("posted", None, None) => Phase::Done(CrossOutcome::Posted),
            ("refused", Some(leg), Some(r)) => Phase::Done(CrossOutcome::Refused {
                leg: Leg::parse(leg)?,
                result: result(r)?,
            }),
            ("review", Some(leg), Some(r)) => Phase::Done(CrossOutcome::NeedsReview {
                leg: Leg::parse(leg)?,
                result: result(r)?,
            }),
            _ => return None,
        };
        parts.next().is_none().then_some(phase)
    }

    /// Whether the transfer has ended.
    pub fn is_done(self) -> bool {
        matches!(self, Phase::Done(_))
    }
}

/// One transfer between two partitions and how far it has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrossTransfer {
    /// The transfer as asked for (single-phase, no flags).
    pub transfer: Transfer,
    pub source: u32,
    pub destination: u32,
    pub phase: Phase,
}

/// A transfer that does not cross partitions, or cannot go through clearing accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotCrossing {
    #[error("both accounts are in one partition")]
    SamePartition,
    #[error("only single-phase transfers without flags cross partitions")]
    Flags,
}

impl CrossTransfer {
    /// The protocol for `transfer` among `partitions`.
    pub fn new(transfer: Transfer, partitions: PartitionCount) -> Result<Self, NotCrossing> {
        let source = partition_of(transfer.debit_account_id, partitions);
        let destination = partition_of(transfer.credit_account_id, partitions);
        if source == destination {
            return Err(NotCrossing::SamePartition);
        }
        if transfer.flags != TransferFlags::empty() || transfer.pending_id != 0 {
            return Err(NotCrossing::Flags);
        }
        Ok(CrossTransfer {
            transfer,
            source,
            destination,
            phase: Phase::Hold,
        })
    }

    /// The leg to submit next and the partition to submit it to; `None` once done.
    pub fn next_leg(&self) -> Option<(u32, Transfer)> {
        let t = &self.transfer;
        let hold_id = leg_id(t.id, Leg::Hold);
        let source_clearing = clearing_account_id(t.ledger, self.source);
        let leg = |leg: Leg, debit: u128, credit: u128, flags: TransferFlags, pending_id: u128| {
            Transfer {
                flags,
                pending_id,
                // The sender's transfer, for whoever reads a leg in a partition's log.
                user_data_128: t.id,
                user_data_64: t.user_data_64,
                user_data_32: t.user_data_32,
                ..Transfer::new(leg_id(t.id, leg), debit, credit, t.amount, t.ledger, t.code)
            }
        };
        let empty = TransferFlags::empty();
        match self.phase {
            Phase::Hold => Some((
                self.source,
                leg(
                    Leg::Hold,
                    t.debit_account_id,
                    source_clearing,
                    TransferFlags::PENDING,
                    0,
                ),
            )),
            Phase::Credit => Some((
                self.destination,
                leg(
                    Leg::Credit,
                    clearing_account_id(t.ledger, self.destination),
                    t.credit_account_id,
                    empty,
                    0,
                ),
            )),
            Phase::Post => Some((
                self.source,
                leg(
                    Leg::Post,
                    t.debit_account_id,
                    source_clearing,
                    TransferFlags::POST_PENDING_TRANSFER,
                    hold_id,
                ),
            )),
            Phase::Void(_) => Some((
                self.source,
                leg(
                    Leg::Void,
                    t.debit_account_id,
                    source_clearing,
                    TransferFlags::VOID_PENDING_TRANSFER,
                    hold_id,
                ),
            )),
            Phase::Done(_) => None,
        }
    }

    /// Moves on with the result the partition gave for [`Self::next_leg`]. A leg answered
    /// `exists` was made before (a retry): the same as `created`.
    pub fn on_result(&mut self, result: CreateTransferResult) {
        use CreateTransferResult::{Created, Exists};
        let made = matches!(result, Created | Exists);
        self.phase = match self.phase {
            Phase::Hold if made => Phase::Credit,
            Phase::Hold => Phase::Done(CrossOutcome::Refused {
                leg: Leg::Hold,
                result,
            }),
            Phase::Credit if made => Phase::Post,
            Phase::Credit => Phase::Void(result),
            Phase::Post if made => Phase::Done(CrossOutcome::Posted),
            Phase::Post => Phase::Done(CrossOutcome::NeedsReview {
                leg: Leg::Post,
                result,
            }),
            Phase::Void(refused) if made => Phase::Done(CrossOutcome::Refused {
                leg: Leg::Credit,
                result: refused,
            }),
            Phase::Void(_) => Phase::Done(CrossOutcome::NeedsReview {
                leg: Leg::Void,
                result,
            }),
            Phase::Done(_) => panic!("a result for a finished cross-partition transfer"),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kizo_ledger::local::LocalEngine;
    use kizo_ledger::{Account, AccountFlags};
    use proptest::prelude::*;

    const LEDGER: u32 = 840;

    #[test]
    fn phases_are_stored_by_name() {
        use CreateTransferResult::ExceedsCredits;
        for phase in [
            Phase::Hold,
            Phase::Credit,
            Phase::Post,
            Phase::Void(CreateTransferResult::CreditAccountAlreadyClosed),
            Phase::Done(CrossOutcome::Posted),
            Phase::Done(CrossOutcome::Refused {
                leg: Leg::Hold,
                result: ExceedsCredits,
            }),
            Phase::Done(CrossOutcome::NeedsReview {
                leg: Leg::Void,
                result: ExceedsCredits,
            }),
        ] {
            assert_eq!(Phase::parse(&phase.code()), Some(phase), "{}", phase.code());
        }
        assert_eq!(
            Phase::code(Phase::Void(ExceedsCredits)),
            "void:exceeds_credits"
        );
        for bad in [
            "",
            "hold:x",
            "void",
            "void:nope",
            "refused:hold",
            "posted:1",
            "x",
        ] {
            assert_eq!(Phase::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn clearing_accounts_are_told_apart() {
        assert_eq!(
            clearing_account_of(clearing_account_id(978, 7)),
            Some((7, 978))
        );
        assert_eq!(clearing_account_of(12345), None);
        assert_eq!(clearing_account_of(u128::MAX - 1), None);
    }

    #[test]
    fn derivations_are_pinned() {
        assert_eq!(
            clearing_account_id(840, 3),
            0x6b69_7a6f_636c_7200_0000_0003_0000_0348
        );
        // Stored ids: if this fails, legs of transfers under way would be made twice.
        assert_eq!(
            format!("{:032x}", leg_id(1, Leg::Hold)),
            "fc14ce7dd65e74c62069ba1d3a4dedde"
        );
        let legs = [Leg::Hold, Leg::Credit, Leg::Post, Leg::Void];
        let ids: std::collections::BTreeSet<u128> = legs.iter().map(|&l| leg_id(7, l)).collect();
        assert_eq!(ids.len(), 4);
    }

    /// Two partitions as two pure ledgers; the protocol run to the end with each leg
    /// submitted `repeats` times (retries and takeovers).
    fn run(
        amount: u128,
        funds: u128,
        receiver_closed: bool,
        repeats: usize,
    ) -> (CrossOutcome, Vec<LocalEngine>) {
        let partitions = PartitionCount::new(2).unwrap();
        // Accounts on either side.
        let sender = (1u128..)
            .find(|&id| partition_of(id, partitions) == 0)
            .unwrap();
        let receiver = (1u128..)
            .find(|&id| partition_of(id, partitions) == 1)
            .unwrap();
        let funding = (sender + 1..)
            .find(|&id| partition_of(id, partitions) == 0)
            .unwrap();
        let mut engines = vec![LocalEngine::new(1), LocalEngine::new(1)];
        let mut now = 1_000u64;
        for (p, engine) in engines.iter_mut().enumerate() {
            let mut accounts = vec![Account::new(
                clearing_account_id(LEDGER, p as u32),
                LEDGER,
                9,
            )];
            if p == 0 {
                accounts.push(Account {
                    flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                    ..Account::new(sender, LEDGER, 1)
                });
                accounts.push(Account::new(funding, LEDGER, 1));
            } else {
                accounts.push(Account {
                    flags: if receiver_closed {
                        AccountFlags::CLOSED
                    } else {
                        AccountFlags::empty()
                    },
                    ..Account::new(receiver, LEDGER, 1)
                });
            }
            now += 1;
            engine.create_accounts(&accounts, now);
        }
        if funds > 0 {
            now += 1;
            engines[0].create_transfers(
                &[Transfer::new(100, funding, sender, funds, LEDGER, 1)],
                now,
            );
        }
        let mut cross = CrossTransfer::new(
            Transfer::new(5, sender, receiver, amount, LEDGER, 1),
            partitions,
        )
        .unwrap();
        while let Some((partition, leg)) = cross.next_leg() {
            let mut result = None;
            for _ in 0..repeats {
                now += 1;
                let answer =
                    engines[partition as usize].create_transfers(std::slice::from_ref(&leg), now);
                result.get_or_insert(answer[0]);
            }
            cross.on_result(result.unwrap());
        }
        let Phase::Done(outcome) = cross.phase else {
            unreachable!()
        };
        (outcome, engines)
    }

    /// Clearing accounts of the ledger, summed over partitions: posted credits less debits,
    /// and what is still pending.
    fn clearing_net(engines: &[LocalEngine]) -> (i128, u128) {
        let accounts: Vec<Account> = engines
            .iter()
            .enumerate()
            .map(|(p, engine)| {
                engine
                    .account(clearing_account_id(LEDGER, p as u32))
                    .unwrap()
            })
            .collect();
        clearing_totals(&accounts)[&LEDGER]
    }

    #[test]
    fn a_payment_crosses_once_and_the_clearing_accounts_net_to_zero() {
        let (outcome, engines) = run(30, 100, false, 3);
        assert_eq!(outcome, CrossOutcome::Posted);
        assert_eq!(clearing_net(&engines), (0, 0));
    }

    #[test]
    fn a_refused_hold_moves_nothing() {
        let (outcome, engines) = run(300, 100, false, 2);
        assert_eq!(
            outcome,
            CrossOutcome::Refused {
                leg: Leg::Hold,
                result: CreateTransferResult::ExceedsCredits
            }
        );
        assert_eq!(clearing_net(&engines), (0, 0));
    }

    #[test]
    fn a_refused_credit_voids_the_hold() {
        let (outcome, engines) = run(30, 100, true, 2);
        assert!(
            matches!(
                outcome,
                CrossOutcome::Refused {
                    leg: Leg::Credit,
                    ..
                }
            ),
            "{outcome:?}"
        );
        assert_eq!(clearing_net(&engines), (0, 0));
    }

    proptest! {
        /// Whatever the amounts, funds and retries: exactly the posted amount moved, once, and
        /// the clearing accounts net to zero with nothing left pending.
        #[test]
        fn legs_are_never_doubled(amount in 1u128..500, funds in 0u128..500, closed in any::<bool>(), repeats in 1usize..4) {
            let (outcome, engines) = run(amount, funds, closed, repeats);
            prop_assert_eq!(clearing_net(&engines), (0, 0));
            let sender_id = (1u128..).find(|&id| partition_of(id, PartitionCount::new(2).unwrap()) == 0).unwrap();
            let sender = engines[0].account(sender_id).unwrap();
            let moved = if outcome == CrossOutcome::Posted { amount } else { 0 };
            prop_assert_eq!(sender.debits_posted, moved);
            prop_assert_eq!(sender.debits_pending, 0);
        }
    }
}
