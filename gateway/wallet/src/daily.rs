//! An account's posted balance at the end of each of its last days (UTC), as a sans-IO pager:
//! it starts from today's balance and walks the history back, newest first, undoing each
//! transfer that moved money. It names the next page to read ([`DailyBalances::next_filter`]),
//! takes the page the caller read ([`DailyBalances::take_page`]), and stops at the first day
//! asked for, at a short page, or at [`PAGES_MAX`] pages: the days it could not reach are
//! `None` (the chart shows a gap rather than a made-up figure).

use kizo_ledger::{AccountFilter, Transfer, BATCH_EVENTS_MAX};

use crate::view::moved_money;

/// The most days one series covers.
pub const DAYS_MAX: u32 = 366;
/// The most pages of history one series reads: 16 × 8,189 transfers.
pub const PAGES_MAX: u32 = 16;

const PAGE_LEN: u32 = BATCH_EVENTS_MAX as u32;
const DAY_NS: u64 = 86_400 * 1_000_000_000;

/// Walks an account's history back over its last `days` days.
#[derive(Clone, Debug)]
pub struct DailyBalances {
    account_id: u128,
    /// The first nanosecond of the first day of the series.
    first_day_ns: u64,
    /// The posted balance before every transfer undone so far.
    balance: i128,
    /// Closing balances, oldest day first; filled from the newest day back.
    closing: Vec<Option<i128>>,
    /// Days at and after this index are filled.
    filled_from: usize,
    /// The next page's newest timestamp (inclusive); `None` once done.
    before: Option<u64>,
    pages: u32,
}

impl DailyBalances {
    /// The series of the `days` days up to the one holding `now_ns` (1 to [`DAYS_MAX`]),
    /// for an account whose posted balance (credits less debits) is `posted_now`.
    pub fn new(account_id: u128, now_ns: u64, days: u32, posted_now: i128) -> Self {
        assert!((1..=DAYS_MAX).contains(&days), "days out of range");
        let today = now_ns / DAY_NS;
        let first_day_ns = today.saturating_sub(u64::from(days) - 1) * DAY_NS;
        Self {
            account_id,
            first_day_ns,
            balance: posted_now,
            closing: vec![None; days as usize],
            filled_from: days as usize,
            before: Some(u64::MAX),
            pages: 0,
        }
    }

    /// The first nanosecond of the series' first day.
    pub fn first_day_ns(&self) -> u64 {
        self.first_day_ns
    }

    /// The page to read next, newest first; `None` when the series is complete.
    pub fn next_filter(&self) -> Option<AccountFilter> {
        self.before.map(|before| AccountFilter {
            timestamp_min: self.first_day_ns.max(1),
            timestamp_max: before,
            reversed: true,
            ..AccountFilter::all(self.account_id, PAGE_LEN)
        })
    }

    /// Undoes the page read for [`Self::next_filter`].
    pub fn take_page(&mut self, page: &[Transfer]) {
        assert!(self.before.is_some(), "a page taken after the last one");
        self.pages += 1;
        for transfer in page {
            assert!(
                transfer.timestamp <= self.before.expect("checked above"),
                "pages come newest first"
            );
            let day = ((transfer.timestamp.saturating_sub(self.first_day_ns)) / DAY_NS) as usize;
            let day = day.min(self.closing.len() - 1);
            // The newest transfer of its day: every transfer of a later day is undone, and
            // none of this day's, so the balance now is this day's closing balance (and that
            // of the days without transfers after it).
            self.fill_down_to(day);
            if moved_money(transfer) {
                let amount = i128::try_from(transfer.amount).unwrap_or(i128::MAX);
                if transfer.credit_account_id == self.account_id {
                    self.balance = self.balance.saturating_sub(amount);
                }
                if transfer.debit_account_id == self.account_id {
                    self.balance = self.balance.saturating_add(amount);
                }
            }
            self.before = Some(transfer.timestamp.saturating_sub(1));
        }
        let more = page.len() == PAGE_LEN as usize;
        if !more {
            // The history reached the series' first day: the rest close at what is left.
            self.fill_down_to(0);
            self.before = None;
        } else if self.pages >= PAGES_MAX {
            // Too long to read: the days not reached stay unknown.
            self.before = None;
        }
    }

    /// Fills the days from `day` on that are not filled yet with the balance now.
    fn fill_down_to(&mut self, day: usize) {
        while self.filled_from > day {
            self.filled_from -= 1;
            self.closing[self.filled_from] = Some(self.balance);
        }
    }

    /// The closing balances, oldest day first, once [`Self::next_filter`] says there is
    /// nothing more to read.
    pub fn closing(&self) -> Option<&[Option<i128>]> {
        self.before.is_none().then_some(&self.closing[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kizo_ledger::TransferFlags;

    const NOW: u64 = 1_795_608_000 * 1_000_000_000; // 2026-11-25T12:00:00Z

    fn transfer(id: u128, from: u128, to: u128, amount: u128, timestamp: u64) -> Transfer {
        Transfer {
            timestamp,
            ..Transfer::new(id, from, to, amount, 840, 1)
        }
    }

    #[test]
    fn each_day_closes_at_the_balance_after_its_last_transfer() {
        let me = 7;
        let mut series = DailyBalances::new(me, NOW, 3, 150);
        let filter = series.next_filter().unwrap();
        assert_eq!(filter.timestamp_min, NOW / DAY_NS * DAY_NS - 2 * DAY_NS);
        // Newest first: today +100 received; yesterday -50 sent; nothing the day before.
        let page = [
            transfer(2, 9, me, 100, NOW - 1),
            transfer(1, me, 9, 50, NOW - DAY_NS),
        ];
        series.take_page(&page);
        assert_eq!(
            series.closing().unwrap(),
            &[Some(100), Some(50), Some(150)][..]
        );
    }

    #[test]
    fn holds_and_releases_leave_the_posted_balance_alone() {
        let me = 7;
        let mut series = DailyBalances::new(me, NOW, 2, 100);
        let hold = Transfer {
            flags: TransferFlags::PENDING,
            ..transfer(1, me, 9, 40, NOW - 2)
        };
        series.take_page(&[hold]);
        assert_eq!(series.closing().unwrap(), &[Some(100), Some(100)][..]);
    }

    #[test]
    fn a_history_past_the_page_cap_leaves_the_early_days_unknown() {
        let me = 7;
        let days = 3;
        let mut series = DailyBalances::new(me, NOW, days, 0);
        let mut timestamp = NOW;
        while let Some(_filter) = series.next_filter() {
            let page: Vec<Transfer> = (0..PAGE_LEN)
                .map(|i| {
                    timestamp -= 1;
                    transfer(u128::from(i) + 1, 9, me, 1, timestamp)
                })
                .collect();
            series.take_page(&page);
        }
        let closing = series.closing().unwrap();
        assert_eq!(closing[2], Some(0), "today closes at the balance now");
        assert_eq!(closing[0], None, "{closing:?}");
    }
}
