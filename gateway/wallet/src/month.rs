//! This month's sums for an account, as a sans-IO pager: it names the next page of history to
//! read ([`MonthTotals::next_filter`]), takes the page the caller read
//! ([`MonthTotals::take_page`]), and stops at a short page or refuses past [`PAGES_MAX`].
//! Finished totals resume ([`MonthTotals::resume`]): a later call reads only what came since.

use kizo_ledger::{AccountFilter, Transfer, BATCH_EVENTS_MAX};

use crate::view::moved_money;
use crate::WalletError;

/// The most pages of history one month's sums read: 64 × 8,189 transfers, half a million.
pub const PAGES_MAX: u32 = 64;

const PAGE_LEN: u32 = BATCH_EVENTS_MAX as u32;

/// Nanoseconds since 1970 at the start of the UTC month holding `now_ns`.
pub fn month_start_ns(now_ns: u64) -> u64 {
    const DAY_NS: u64 = 86_400 * 1_000_000_000;
    let days = (now_ns / DAY_NS) as i64;
    // Civil from days (H. Hinnant): year, month and day of `days` since 1970-01-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day_of_month = doy - (153 * mp + 2) / 5; // 0-based
    (days - day_of_month) as u64 * DAY_NS
}

/// The sums of the money an account moved since the start of the month.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub sent: u128,
    pub received: u128,
    /// Transfers that moved money, sent and received.
    pub count: u64,
}

/// Reads an account's history from the start of the month, a full page at a time.
#[derive(Clone, Debug)]
pub struct MonthTotals {
    account_id: u128,
    /// The month's first nanosecond.
    month_start: u64,
    /// The next page starts here; `None` once a short page ended the month.
    from: Option<u64>,
    /// Where the next increment starts: past the last transfer read.
    resume_from: u64,
    pages: u32,
    totals: Totals,
}

impl MonthTotals {
    pub fn new(account_id: u128, now_ns: u64) -> Self {
        let month_start = month_start_ns(now_ns).max(1);
        Self {
            account_id,
            month_start,
            from: Some(month_start),
            resume_from: month_start,
            pages: 0,
            totals: Totals::default(),
        }
    }

    /// Finished totals carried on to `now_ns`: the same sums, with only the transfers after
    /// the last one read still to read (at most [`PAGES_MAX`] pages of them). Unfinished
    /// totals, or a new month, start over. Sound because the ledger's timestamps only grow:
    /// a transfer read later never has a timestamp below one read before.
    pub fn resume(self, now_ns: u64) -> Self {
        if self.from.is_some() || month_start_ns(now_ns).max(1) != self.month_start {
            return Self::new(self.account_id, now_ns);
        }
        Self {
            from: Some(self.resume_from),
            pages: 0,
            ..self
        }
    }

    pub fn account_id(&self) -> u128 {
        self.account_id
    }

    /// The page to read next, oldest first; `None` when the sums are complete.
    pub fn next_filter(&self) -> Option<AccountFilter> {
        self.from.map(|from| AccountFilter {
            timestamp_min: from,
            ..AccountFilter::all(self.account_id, PAGE_LEN)
        })
    }

    /// Adds the page read for [`Self::next_filter`].
    pub fn take_page(&mut self, page: &[Transfer]) -> Result<(), WalletError> {
        assert!(self.from.is_some(), "a page taken after the last one");
        self.pages += 1;
        for transfer in page.iter().filter(|t| moved_money(t)) {
            let sum = if transfer.debit_account_id == self.account_id {
                &mut self.totals.sent
            } else {
                &mut self.totals.received
            };
            *sum = sum
                .checked_add(transfer.amount)
                .ok_or(WalletError::Overflow)?;
            self.totals.count = self
                .totals
                .count
                .checked_add(1)
                .ok_or(WalletError::Overflow)?;
        }
        if let Some(last) = page.last() {
            self.resume_from = last.timestamp.checked_add(1).ok_or(WalletError::Overflow)?;
        }
        self.from = match page.last() {
            Some(last) if page.len() == PAGE_LEN as usize => {
                if self.pages >= PAGES_MAX {
                    return Err(WalletError::MonthTooLong);
                }
                Some(last.timestamp.checked_add(1).ok_or(WalletError::Overflow)?)
            }
            _ => None,
        };
        Ok(())
    }

    /// The sums, once [`Self::next_filter`] says there is nothing more to read.
    pub fn totals(&self) -> Option<Totals> {
        self.from.is_none().then_some(self.totals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn months_start_where_the_calendar_says() {
        // 2026-11-25T12:00:00Z → 2026-11-01T00:00:00Z
        assert_eq!(month_start_ns(1_795_608_000 * S), 1_793_491_200 * S);
        // 2024-02-29T23:59:59Z (leap day) → 2024-02-01
        assert_eq!(month_start_ns(1_709_251_199 * S), 1_706_745_600 * S);
        // The first instant of a month is its own start.
        assert_eq!(month_start_ns(1_706_745_600 * S), 1_706_745_600 * S);
        assert_eq!(month_start_ns(0), 0);
    }

    fn page(len: usize, first_timestamp: u64, account: u128) -> Vec<Transfer> {
        (0..len)
            .map(|i| Transfer {
                timestamp: first_timestamp + i as u64,
                ..Transfer::new(i as u128 + 1, account, 99, 2, 840, 1)
            })
            .collect()
    }

    #[test]
    fn pages_until_a_short_one() {
        let mut totals = MonthTotals::new(7, 1_795_608_000 * S);
        let first = totals.next_filter().expect("a first page");
        assert_eq!(first.timestamp_min, 1_793_491_200 * S);
        totals
            .take_page(&page(PAGE_LEN as usize, first.timestamp_min, 7))
            .unwrap();
        assert_eq!(totals.totals(), None);
        let second = totals.next_filter().expect("a second page");
        assert_eq!(
            second.timestamp_min,
            first.timestamp_min + u64::from(PAGE_LEN)
        );
        totals.take_page(&page(3, second.timestamp_min, 7)).unwrap();
        assert_eq!(totals.next_filter(), None);
        let sums = totals.totals().unwrap();
        assert_eq!(sums.count, u64::from(PAGE_LEN) + 3);
        assert_eq!(sums.sent, 2 * (u128::from(PAGE_LEN) + 3));
        assert_eq!(sums.received, 0);
    }

    #[test]
    fn finished_totals_resume_with_only_what_came_since() {
        let now = 1_795_608_000 * S;
        let mut totals = MonthTotals::new(7, now);
        let first = totals.next_filter().unwrap();
        totals.take_page(&page(3, first.timestamp_min, 7)).unwrap();
        let before = totals.totals().unwrap();
        // Later the same month: only transfers after the last one read are asked for.
        let mut later = totals.clone().resume(now + S);
        let next = later.next_filter().unwrap();
        assert_eq!(next.timestamp_min, first.timestamp_min + 3);
        later.take_page(&page(2, next.timestamp_min, 7)).unwrap();
        let after = later.totals().unwrap();
        assert_eq!(after.count, before.count + 2);
        assert_eq!(after.sent, before.sent + 4);
        // Nothing new: the same sums, one short read.
        let mut again = later.clone().resume(now + 2 * S);
        again.take_page(&[]).unwrap();
        assert_eq!(again.totals(), Some(after));
        // A new month starts over from its first nanosecond.
        let next_month = later.resume(now + 40 * 86_400 * S);
        assert_eq!(next_month.totals(), None);
        assert!(next_month.next_filter().unwrap().timestamp_min > first.timestamp_min);
        // Unfinished totals start over too.
        let mut unfinished = MonthTotals::new(7, now);
        let filter = unfinished.next_filter().unwrap();
        unfinished
            .take_page(&page(PAGE_LEN as usize, filter.timestamp_min, 7))
            .unwrap();
        let restarted = unfinished.resume(now);
        assert_eq!(
            restarted.next_filter().unwrap().timestamp_min,
            filter.timestamp_min
        );
    }

    #[test]
    fn a_month_too_long_is_refused_not_read_forever() {
        let mut totals = MonthTotals::new(7, 0);
        let mut refused = None;
        for _ in 0..=PAGES_MAX {
            let filter = totals.next_filter().expect("pages go on");
            if let Err(error) = totals.take_page(&page(PAGE_LEN as usize, filter.timestamp_min, 7))
            {
                refused = Some(error);
                break;
            }
        }
        assert_eq!(refused, Some(WalletError::MonthTooLong));
    }

    #[test]
    fn sums_that_overflow_are_refused() {
        let mut totals = MonthTotals::new(7, 0);
        let mut transfers = page(2, 1, 8);
        transfers[0].amount = u128::MAX;
        transfers[0].credit_account_id = 7;
        transfers[1].credit_account_id = 7;
        assert_eq!(totals.take_page(&transfers), Err(WalletError::Overflow));
    }
}
