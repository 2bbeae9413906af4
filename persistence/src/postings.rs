//! Accounts' histories in PostgreSQL as posting lists (`account_postings`): per account, rows
//! of the timestamps of the transfers that debit it and that credit it. The projector writes a
//! row per account per step instead of two index entries per transfer; a history page walks an
//! account's rows in time order and then reads the transfers by their primary key.
//!
//! The invariant the walk relies on: an account's rows never overlap in time, because the
//! projector writes them in log order and the ledger's timestamps grow with the log. No row is
//! ever changed after it is written.

use std::collections::HashMap;

use kizo_engine::Transfer;
use sqlx::PgPool;

use crate::store::{read_error, StoreError};

/// The most entries (debits and credits together) one row lists: a page of history reads a
/// few rows, and a row is small enough to be read whole for a page of one.
pub(crate) const POSTING_ENTRIES_MAX: usize = 128;

/// Rows read at most per query while walking an account's history.
const ROWS_PER_READ_MAX: i64 = 1024;

/// One row of `account_postings`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Posting {
    pub account_id: u128,
    pub first_timestamp: u64,
    pub last_timestamp: u64,
    /// Ascending.
    pub debits: Vec<u64>,
    /// Ascending.
    pub credits: Vec<u64>,
}

impl Posting {
    fn new(account_id: u128) -> Self {
        Posting {
            account_id,
            first_timestamp: 0,
            last_timestamp: 0,
            debits: Vec::new(),
            credits: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.debits.len() + self.credits.len()
    }

    fn add(&mut self, timestamp: u64, debit: bool) {
        if self.len() == 0 {
            self.first_timestamp = timestamp;
        } else {
            // The walk's invariant: entries come in time order.
            assert!(
                timestamp >= self.last_timestamp,
                "transfers out of timestamp order: {timestamp} after {}",
                self.last_timestamp
            );
        }
        self.last_timestamp = timestamp;
        if debit {
            self.debits.push(timestamp)
        } else {
            self.credits.push(timestamp)
        }
    }
}

/// The rows of `transfers`, given in log order, for `account_postings`: per account, runs of
/// at most [`POSTING_ENTRIES_MAX`] entries.
pub(crate) fn postings_of<'a>(transfers: impl IntoIterator<Item = &'a Transfer>) -> Vec<Posting> {
    let mut open: HashMap<u128, Posting> = HashMap::new();
    let mut full = Vec::new();
    for transfer in transfers {
        for (account_id, debit) in [
            (transfer.debit_account_id, true),
            (transfer.credit_account_id, false),
        ] {
            let posting = open
                .entry(account_id)
                .or_insert_with(|| Posting::new(account_id));
            if posting.len() == POSTING_ENTRIES_MAX {
                full.push(std::mem::replace(posting, Posting::new(account_id)));
            }
            posting.add(transfer.timestamp, debit);
        }
    }
    full.extend(open.into_values());
    full
}

/// Which of an account's transfers a history page holds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HistoryQuery {
    pub account_id: u128,
    pub debits: bool,
    pub credits: bool,
    /// Inclusive.
    pub timestamp_min: u64,
    /// Inclusive.
    pub timestamp_max: u64,
    /// Newest first.
    pub reversed: bool,
    pub limit: usize,
}

impl HistoryQuery {
    /// Adds the row's entries this page selects, in the page's order; false once it is full.
    fn take(&self, posting: &Posting, page: &mut Vec<u64>) -> bool {
        let side = |selected: bool, entries: &[u64]| -> Vec<u64> {
            if !selected {
                return Vec::new();
            }
            let in_range = |t: &&u64| (self.timestamp_min..=self.timestamp_max).contains(*t);
            entries.iter().filter(in_range).copied().collect()
        };
        let mut entries = side(self.debits, &posting.debits);
        entries.extend(side(self.credits, &posting.credits));
        entries.sort_unstable();
        entries.dedup();
        if self.reversed {
            entries.reverse();
        }
        for timestamp in entries {
            if page.len() == self.limit {
                return false;
            }
            page.push(timestamp);
        }
        page.len() < self.limit
    }
}

/// The timestamps of the transfers a history page holds, in its order, read from an account's
/// rows in time order (growing reads: most pages need one or two rows).
pub(crate) async fn page_timestamps(
    pool: &PgPool,
    query: &HistoryQuery,
) -> Result<Vec<u64>, StoreError> {
    let as_i64 = |t: u64| i64::try_from(t).unwrap_or(i64::MAX);
    let account = uuid::Uuid::from_u128(query.account_id);
    let (min, max) = (as_i64(query.timestamp_min), as_i64(query.timestamp_max));
    let mut page = Vec::with_capacity(query.limit.min(1024));
    if query.limit == 0 || (!query.debits && !query.credits) || min > max {
        return Ok(page);
    }
    // Newest first: from the row that holds `max` (the first ending at or after it) down.
    // Oldest first: from the first row ending at or after `min` up, until rows begin past `max`.
    let sql = if query.reversed {
        "SELECT first_timestamp, last_timestamp, debits, credits FROM account_postings
         WHERE account_id = $1 AND last_timestamp >= $2
           AND last_timestamp <= LEAST($3, COALESCE(
               (SELECT min(last_timestamp) FROM account_postings
                WHERE account_id = $1 AND last_timestamp >= $4), 9223372036854775807))
         ORDER BY last_timestamp DESC LIMIT $5"
    } else {
        "SELECT first_timestamp, last_timestamp, debits, credits FROM account_postings
         WHERE account_id = $1 AND last_timestamp >= GREATEST($2, $3) AND first_timestamp <= $4
         ORDER BY last_timestamp ASC LIMIT $5"
    };
    // The walk's cursor: an inclusive bound on `last_timestamp`, upper when newest first.
    let mut cursor = if query.reversed { i64::MAX } else { min };
    let mut rows_per_read = 8;
    loop {
        let rows: Vec<(i64, i64, Vec<i64>, Vec<i64>)> = sqlx::query_as(sql)
            .bind(account)
            .bind(min)
            .bind(cursor)
            .bind(max)
            .bind(rows_per_read)
            .fetch_all(pool)
            .await
            .map_err(read_error)?;
        let exhausted = (rows.len() as i64) < rows_per_read;
        for (first, last, debits, credits) in rows {
            let as_u64 = |entries: Vec<i64>| -> Result<Vec<u64>, StoreError> {
                entries
                    .into_iter()
                    .map(|t| {
                        u64::try_from(t).map_err(|_| {
                            StoreError::Corrupt(format!("a posting lists timestamp {t}"))
                        })
                    })
                    .collect()
            };
            let posting = Posting {
                account_id: query.account_id,
                first_timestamp: u64::try_from(first).unwrap_or(0),
                last_timestamp: u64::try_from(last).unwrap_or(0),
                debits: as_u64(debits)?,
                credits: as_u64(credits)?,
            };
            if !query.take(&posting, &mut page) {
                return Ok(page);
            }
            cursor = if query.reversed { last - 1 } else { last + 1 };
        }
        if exhausted {
            return Ok(page);
        }
        rows_per_read = (rows_per_read * 2).min(ROWS_PER_READ_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(timestamp: u64, debit: u128, credit: u128) -> Transfer {
        Transfer {
            timestamp,
            ..Transfer::new(u128::from(timestamp), debit, credit, 1, 840, 1)
        }
    }

    #[test]
    fn an_account_gets_rows_of_at_most_the_limit_in_time_order() {
        let transfers: Vec<Transfer> = (1..=300)
            .map(|t| transfer(t, 1, 2 + t as u128 % 2))
            .collect();
        let mut postings = postings_of(&transfers);
        postings.sort_by_key(|p| (p.account_id, p.last_timestamp));
        let of = |account: u128| -> Vec<&Posting> {
            postings
                .iter()
                .filter(|p| p.account_id == account)
                .collect()
        };
        // Account 1 is debited by all 300: three rows, 128 + 128 + 44.
        let ones = of(1);
        assert_eq!(
            ones.iter().map(|p| p.debits.len()).collect::<Vec<_>>(),
            [128, 128, 44]
        );
        assert!(ones.iter().all(|p| p.credits.is_empty()));
        assert_eq!((ones[0].first_timestamp, ones[0].last_timestamp), (1, 128));
        assert_eq!(
            (ones[2].first_timestamp, ones[2].last_timestamp),
            (257, 300)
        );
        // Accounts 2 and 3 are credited by every other one.
        assert_eq!(of(2).iter().map(|p| p.len()).sum::<usize>(), 150);
        assert_eq!(of(3)[0].credits[..3], [1, 3, 5]);
        for pair in ones.windows(2) {
            assert!(pair[0].last_timestamp < pair[1].first_timestamp);
        }
    }

    #[test]
    fn a_page_takes_the_selected_sides_in_range_and_stops_when_full() {
        let posting = Posting {
            account_id: 1,
            first_timestamp: 10,
            last_timestamp: 60,
            debits: vec![10, 30, 50],
            credits: vec![20, 40, 60],
        };
        let query = HistoryQuery {
            account_id: 1,
            debits: true,
            credits: true,
            timestamp_min: 20,
            timestamp_max: 50,
            reversed: true,
            limit: 3,
        };
        let mut page = Vec::new();
        assert!(!query.take(&posting, &mut page));
        assert_eq!(page, [50, 40, 30]);
        let credits_only = HistoryQuery {
            debits: false,
            reversed: false,
            limit: 10,
            ..query
        };
        let mut page = Vec::new();
        assert!(credits_only.take(&posting, &mut page));
        assert_eq!(page, [20, 40]);
    }

    #[test]
    #[should_panic(expected = "out of timestamp order")]
    fn transfers_out_of_order_are_refused() {
        postings_of(&[transfer(5, 1, 2), transfer(4, 1, 2)]);
    }
}
