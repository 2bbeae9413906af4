//! Reconciliation: our settlements against the bank's statement and against the ledger, line
//! by line. Pure: the reconciliation actor fetches the three and acts on the report.
//!
//! A difference is *explained* when a settlement still in progress accounts for it (the bank
//! moved money for a settlement we have not finished recording); everything else is
//! unexplained and counted: money the bank moved that we failed or never asked for, money we
//! recorded that the bank never moved, amounts that differ, one reference moved twice, and a
//! bank account in the ledger that does not hold what the settlements say.

use std::collections::BTreeMap;

use crate::{Kind, Phase, Settlement, Status};

/// One line of the bank's statement: money it moved, with our reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Movement {
    pub reference: u128,
    pub kind: Kind,
    pub amount: u64,
    pub at_ms: u64,
}

/// The system account that stands for money at the bank, as the ledger holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BankAccountBalance {
    pub debits_posted: u128,
    pub credits_posted: u128,
    pub credits_pending: u128,
}

/// One difference, by reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub reference: u128,
    pub kind: Kind,
    /// What we recorded (0 when we have nothing).
    pub ours: u64,
    /// What the bank moved (0 when it moved nothing).
    pub bank: u64,
    pub detail: &'static str,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerCheck {
    /// Deposits minus withdrawals that succeeded, by our settlements.
    pub expected_net: i128,
    /// `debits_posted - credits_posted` of the bank account.
    pub ledger_net: i128,
    /// Withdrawals whose funds are held, by our settlements.
    pub expected_held: u128,
    /// `credits_pending` of the bank account.
    pub ledger_held: u128,
}

impl LedgerCheck {
    pub fn holds(&self) -> bool {
        self.expected_net == self.ledger_net && self.expected_held == self.ledger_held
    }
}

/// One ledger's sums over every account (from the read models): double entry means the debits
/// equal the credits, posted and pending; no account may break its limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerTotals {
    pub ledger: u32,
    pub accounts: u64,
    pub debits_posted: u128,
    pub credits_posted: u128,
    pub debits_pending: u128,
    pub credits_pending: u128,
    /// Accounts whose balances break their `*_must_not_exceed_*` flag.
    pub over_limit: u64,
}

impl LedgerTotals {
    pub fn holds(&self) -> bool {
        self.debits_posted == self.credits_posted
            && self.debits_pending == self.credits_pending
            && self.over_limit == 0
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub at_ms: u64,
    pub settlements: u64,
    pub movements: u64,
    /// Settlements that succeeded and whose movement matches.
    pub matched: u64,
    /// Settlements not final whose movement is on the statement: explained, to be finished.
    pub unsettled_with_movement: u64,
    /// Money the bank moved that no succeeded settlement records.
    pub missing_in_ledger: Vec<Difference>,
    /// Succeeded settlements the bank has no movement for.
    pub missing_at_bank: Vec<Difference>,
    pub amount_mismatches: Vec<Difference>,
    /// References on the statement more than once.
    pub duplicates: Vec<Difference>,
    /// Not final and not touched for longer than the deadline.
    pub stuck: Vec<u128>,
    /// Waiting for a person (a known conflict) or for a re-drive (an unknown outcome).
    pub needs_review: Vec<u128>,
    /// Per ledger; empty when the ledger could not be read still (settlements kept moving).
    pub ledger: BTreeMap<u32, LedgerCheck>,
    pub ledger_checked: bool,
    /// The ledger's invariants over every account, per ledger (empty when not read).
    pub ledger_totals: Vec<LedgerTotals>,
    /// Settlements reconciliation gave another round of attempts.
    pub redriven: u64,
}

impl Report {
    /// Differences that nothing in progress explains.
    pub fn unexplained(&self) -> u64 {
        (self.missing_in_ledger.len()
            + self.missing_at_bank.len()
            + self.amount_mismatches.len()
            + self.duplicates.len()
            + self.ledger.values().filter(|c| !c.holds()).count()
            + self.ledger_totals.iter().filter(|t| !t.holds()).count()) as u64
    }
}

/// Compares `settlements` (all of ours), the bank's `statement` (all of its movements), and
/// the bank account's balance per ledger (`balances`, by ledger; a ledger missing from it
/// counts as zero; `None` leaves the ledger check out). Settlements not updated since
/// `stuck_before_ms` and not final are stuck.
pub fn reconcile(
    settlements: &[Settlement],
    statement: &[Movement],
    balances: Option<&BTreeMap<u32, BankAccountBalance>>,
    now_ms: u64,
    stuck_before_ms: u64,
) -> Report {
    let mut report = Report {
        at_ms: now_ms,
        settlements: settlements.len() as u64,
        movements: statement.len() as u64,
        ..Report::default()
    };
    let mut moved: BTreeMap<u128, &Movement> = BTreeMap::new();
    for movement in statement {
        if moved.insert(movement.reference, movement).is_some() {
            report.duplicates.push(Difference {
                reference: movement.reference,
                kind: movement.kind,
                ours: 0,
                bank: movement.amount,
                detail: "the bank moved money twice for one reference",
            });
        }
    }
    let mut ours: BTreeMap<u128, &Settlement> = BTreeMap::new();
    for s in settlements {
        ours.insert(s.id, s);
        let check = report.ledger.entry(s.ledger).or_default();
        let signed = i128::from(s.amount);
        if s.phase == Phase::Done(Status::Succeeded) {
            check.expected_net += match s.kind {
                Kind::Deposit => signed,
                Kind::Withdrawal => -signed,
            };
        }
        if s.holds_funds() {
            check.expected_held += u128::from(s.amount);
        }
        match s.phase {
            Phase::Done(Status::NeedsReview) => report.needs_review.push(s.id),
            Phase::Done(_) => {}
            _ if s.updated_ms < stuck_before_ms => report.stuck.push(s.id),
            _ => {}
        }
        let movement = moved.get(&s.id);
        let difference = |bank: u64, detail| Difference {
            reference: s.id,
            kind: s.kind,
            ours: s.amount,
            bank,
            detail,
        };
        match (s.phase, movement) {
            (_, Some(m)) if m.kind != s.kind || m.amount != s.amount => {
                report.amount_mismatches.push(difference(
                    m.amount,
                    "the bank moved another amount or direction",
                ))
            }
            (Phase::Done(Status::Succeeded), Some(_)) => report.matched += 1,
            (Phase::Done(Status::Succeeded), None) => report
                .missing_at_bank
                .push(difference(0, "succeeded here, never moved at the bank")),
            (Phase::Done(Status::Failed), Some(m)) => report
                .missing_in_ledger
                .push(difference(m.amount, "failed here, moved at the bank")),
            (_, Some(_)) => report.unsettled_with_movement += 1,
            (_, None) => {}
        }
    }
    for (reference, m) in &moved {
        if !ours.contains_key(reference) {
            report.missing_in_ledger.push(Difference {
                reference: *reference,
                kind: m.kind,
                ours: 0,
                bank: m.amount,
                detail: "moved at the bank, unknown here",
            });
        }
    }
    match balances {
        Some(balances) => {
            report.ledger_checked = true;
            for (ledger, balance) in balances {
                let check = report.ledger.entry(*ledger).or_default();
                check.ledger_net = balance.debits_posted as i128 - balance.credits_posted as i128;
                check.ledger_held = balance.credits_pending;
            }
        }
        None => report.ledger.clear(),
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Kind, Phase, Settlement, Status};

    fn settled(id: u128, kind: Kind, amount: u64, phase: Phase) -> Settlement {
        Settlement {
            phase,
            updated_ms: 1_000,
            ..Settlement::new(id, kind, 10, 1, 840, amount, 1_000)
        }
    }

    fn moved(reference: u128, kind: Kind, amount: u64) -> Movement {
        Movement {
            reference,
            kind,
            amount,
            at_ms: 1_000,
        }
    }

    fn balance(debits: u128, credits: u128, held: u128) -> BTreeMap<u32, BankAccountBalance> {
        BTreeMap::from([(
            840,
            BankAccountBalance {
                debits_posted: debits,
                credits_posted: credits,
                credits_pending: held,
            },
        )])
    }

    #[test]
    fn matching_books_have_no_differences() {
        let ours = [
            settled(1, Kind::Deposit, 500, Phase::Done(Status::Succeeded)),
            settled(2, Kind::Withdrawal, 200, Phase::Done(Status::Succeeded)),
            settled(3, Kind::Withdrawal, 50, Phase::Check),
            settled(4, Kind::Deposit, 70, Phase::Done(Status::Failed)),
        ];
        let bank = [
            moved(1, Kind::Deposit, 500),
            moved(2, Kind::Withdrawal, 200),
            moved(3, Kind::Withdrawal, 50),
        ];
        let report = reconcile(&ours, &bank, Some(&balance(500, 200, 50)), 2_000, 0);
        assert_eq!(report.unexplained(), 0, "{report:?}");
        assert_eq!((report.matched, report.unsettled_with_movement), (2, 1));
    }

    #[test]
    fn every_kind_of_difference_is_found() {
        let ours = [
            settled(1, Kind::Deposit, 500, Phase::Done(Status::Succeeded)), // not at the bank
            settled(2, Kind::Withdrawal, 200, Phase::Done(Status::Failed)), // paid anyway
            settled(3, Kind::Deposit, 70, Phase::Done(Status::Succeeded)),  // another amount
            settled(4, Kind::Deposit, 10, Phase::Send),                     // stuck
        ];
        let bank = [
            moved(2, Kind::Withdrawal, 200),
            moved(3, Kind::Deposit, 71),
            moved(9, Kind::Withdrawal, 5), // unknown here
            moved(9, Kind::Withdrawal, 5), // and twice
        ];
        let report = reconcile(&ours, &bank, Some(&balance(570, 0, 0)), 2_000, 1_500);
        assert_eq!(report.missing_at_bank.len(), 1);
        assert_eq!(
            report
                .missing_in_ledger
                .iter()
                .map(|d| d.reference)
                .collect::<Vec<_>>(),
            vec![2, 9]
        );
        assert_eq!(report.amount_mismatches[0].reference, 3);
        assert_eq!(report.duplicates[0].reference, 9);
        assert_eq!(report.stuck, vec![4]);
        assert_eq!(report.unexplained(), 5);
    }

    #[test]
    fn a_ledger_that_disagrees_with_the_settlements_is_a_difference() {
        let ours = [settled(
            1,
            Kind::Deposit,
            500,
            Phase::Done(Status::Succeeded),
        )];
        let bank = [moved(1, Kind::Deposit, 500)];
        let report = reconcile(&ours, &bank, Some(&balance(400, 0, 0)), 2_000, 0);
        assert_eq!(report.unexplained(), 1);
        assert_eq!(report.ledger[&840].expected_net, 500);
        assert_eq!(report.ledger[&840].ledger_net, 400);
    }

    #[test]
    fn a_ledger_whose_sums_do_not_balance_is_a_difference() {
        let mut report = reconcile(&[], &[], None, 0, 0);
        let balanced = LedgerTotals {
            ledger: 840,
            accounts: 2,
            debits_posted: 5,
            credits_posted: 5,
            ..LedgerTotals::default()
        };
        report.ledger_totals = vec![balanced];
        assert_eq!(report.unexplained(), 0);
        report.ledger_totals = vec![LedgerTotals {
            credits_posted: 4,
            ..balanced
        }];
        assert_eq!(report.unexplained(), 1);
        report.ledger_totals = vec![LedgerTotals {
            over_limit: 1,
            ..balanced
        }];
        assert_eq!(report.unexplained(), 1);
    }
}
