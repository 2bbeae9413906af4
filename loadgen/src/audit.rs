//! The audit after every run: the ledger is read back through the target and checked against
//! what the run was told. A run whose audit fails exits non-zero, however fast it was.
//!
//! Checks: no money created or destroyed (posted debits equal posted credits over every
//! account of the run, and the system account paid out exactly what was deposited); every
//! acknowledged transfer exists, once, as it was asked for; no refused transfer exists; every
//! account's balance is exactly what the acknowledged transfers (and those whose outcome was
//! unknown and that exist) make it; no wallet is below zero.

use std::collections::{BTreeMap, BTreeSet};

use crate::target::{Move, Target, Unknown};

/// What a run was told, kept by its workers.
#[derive(Clone, Debug, Default)]
pub struct Book {
    pub acknowledged: Vec<Move>,
    pub refused: Vec<Move>,
    /// Sent, but the answer never came: each may or may not exist.
    pub unknown: Vec<Move>,
}

impl Book {
    pub fn merge(&mut self, other: Book) {
        self.acknowledged.extend(other.acknowledged);
        self.refused.extend(other.refused);
        self.unknown.extend(other.unknown);
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Audit {
    pub accounts: usize,
    pub acknowledged: usize,
    pub unknown_applied: usize,
    pub unknown_not_applied: usize,
    /// Every broken promise found; empty when the audit passes.
    pub failures: Vec<String>,
}

impl Audit {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Reads back `system` and `wallets` and the book's transfers, and checks them. `deposited` is
/// what the run paid into the wallets from `system` (part of the book's acknowledged moves).
pub async fn audit(
    target: &Target,
    system: u128,
    wallets: &[u128],
    book: &Book,
) -> Result<Audit, Unknown> {
    let mut failures = Vec::new();
    let mut ids: Vec<u128> = wallets.to_vec();
    ids.push(system);
    let balances = target.balances(&ids).await?;
    if balances.len() != ids.len() {
        failures.push(format!(
            "{} of {} accounts missing",
            ids.len() - balances.len(),
            ids.len()
        ));
    }
    // Transfers: acknowledged ones exist as asked; refused ones do not; unknown ones may.
    let asked: Vec<u128> = book
        .acknowledged
        .iter()
        .chain(&book.refused)
        .chain(&book.unknown)
        .map(|m| m.id)
        .collect();
    let found: BTreeMap<u128, Move> = target
        .find_transfers(&asked)
        .await?
        .into_iter()
        .map(|m| (m.id, m))
        .collect();
    let mut applied: Vec<Move> = Vec::with_capacity(book.acknowledged.len());
    let mut seen = BTreeSet::new();
    for m in &book.acknowledged {
        if !seen.insert(m.id) {
            failures.push(format!("transfer {} acknowledged twice", m.id));
            continue;
        }
        match found.get(&m.id) {
            Some(stored) if stored == m => applied.push(*m),
            Some(stored) => failures.push(format!("transfer {} is {stored:?}, not {m:?}", m.id)),
            None => failures.push(format!("acknowledged transfer {} is missing", m.id)),
        }
    }
    for m in &book.refused {
        if found.contains_key(&m.id) && !seen.contains(&m.id) {
            failures.push(format!("refused transfer {} exists", m.id));
        }
    }
    let (mut unknown_applied, mut unknown_not_applied) = (0, 0);
    for m in &book.unknown {
        if seen.contains(&m.id) {
            continue;
        }
        match found.get(&m.id) {
            Some(stored) if stored == m => {
                unknown_applied += 1;
                seen.insert(m.id);
                applied.push(*m);
            }
            Some(stored) => failures.push(format!("transfer {} is {stored:?}, not {m:?}", m.id)),
            None => unknown_not_applied += 1,
        }
    }
    // Balances: exactly what the applied transfers make them.
    let mut expected: BTreeMap<u128, (u128, u128)> = ids.iter().map(|&id| (id, (0, 0))).collect();
    for m in &applied {
        if let Some((debits, _)) = expected.get_mut(&m.from) {
            *debits += u128::from(m.amount);
        }
        if let Some((_, credits)) = expected.get_mut(&m.to) {
            *credits += u128::from(m.amount);
        }
    }
    let (mut all_debits, mut all_credits) = (0u128, 0u128);
    for b in &balances {
        all_debits += b.debits;
        all_credits += b.credits;
        let want = expected.get(&b.id).copied().unwrap_or_default();
        if (b.debits, b.credits) != want {
            failures.push(format!(
                "account {}: debits {} credits {}, but the acknowledged transfers make {} and {}",
                b.id, b.debits, b.credits, want.0, want.1
            ));
        }
        if b.id != system && b.debits > b.credits {
            failures.push(format!("wallet {} is below zero", b.id));
        }
    }
    if all_debits != all_credits {
        failures.push(format!(
            "money created or destroyed: debits {all_debits} != credits {all_credits}"
        ));
    }
    Ok(Audit {
        accounts: balances.len(),
        acknowledged: book.acknowledged.len(),
        unknown_applied,
        unknown_not_applied,
        failures,
    })
}
