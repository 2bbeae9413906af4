//! This month's sums per wallet, kept between dashboard reads: each read resumes the sums
//! from the last transfer it saw (`MonthTotals::resume`), so a dashboard costs the transfers
//! since the previous one, not the whole month. Bounded: past [`MONTH_CACHE_MAX`] wallets an
//! arbitrary one is forgotten (its next read starts over).

use std::collections::HashMap;
use std::sync::Mutex;

use kizo_wallet::month::{MonthTotals, Totals};

use crate::error::ApiError;

/// Wallets whose sums are kept (a few dozen bytes each).
pub const MONTH_CACHE_MAX: usize = 100_000;

#[derive(Default)]
pub struct MonthCache {
    totals: Mutex<HashMap<u128, MonthTotals>>,
}

impl MonthCache {
    /// The sums of `account`'s month at `now_ns`.
    pub async fn totals(
        &self,
        books: &crate::books::Books,
        account: u128,
        now_ns: u64,
    ) -> Result<Totals, ApiError> {
        let kept = self
            .totals
            .lock()
            .expect("not poisoned")
            .get(&account)
            .cloned();
        let mut month = match kept {
            Some(kept) => kept.resume(now_ns),
            None => MonthTotals::new(account, now_ns),
        };
        while let Some(filter) = month.next_filter() {
            let page = books.get_account_transfers(filter).await?;
            month.take_page(&page)?;
        }
        let totals = month.totals().expect("the month's pages are all read");
        let mut kept = self.totals.lock().expect("not poisoned");
        if kept.len() >= MONTH_CACHE_MAX && !kept.contains_key(&account) {
            if let Some(&forgotten) = kept.keys().next() {
                kept.remove(&forgotten);
            }
        }
        kept.insert(account, month);
        Ok(totals)
    }
}
