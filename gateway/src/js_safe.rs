//! The wallet API's JSON is read by JavaScript, whose numbers lose integers above 2^53: every
//! integer that may pass it (balances, sums) is a decimal string, and every time an RFC 3339
//! string (UTC, as precise as the value: nanoseconds for the ledger's timestamps). Amounts of
//! one transfer stay numbers: they are at most `kizo_wallet::AMOUNT_MAX` (10^12).

use std::time::{Duration, UNIX_EPOCH};

use serde::Serializer;

/// Serializes an integer as its decimal string.
pub fn decimal<S: Serializer>(value: &u128, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// A ledger timestamp (nanoseconds since 1970) as RFC 3339, to the nanosecond.
pub fn rfc3339_ns(nanos: u64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(nanos)).to_string()
}

/// Milliseconds since 1970 as RFC 3339, to the millisecond.
pub fn rfc3339_ms(millis: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(millis)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_in_utc_as_precise_as_their_value() {
        assert_eq!(rfc3339_ns(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_ns(1_796_476_265_337_000_001),
            "2026-12-05T13:11:05.337000001Z"
        );
        assert_eq!(rfc3339_ms(1_796_476_265_337), "2026-12-05T13:11:05.337Z");
    }

    #[test]
    fn big_integers_are_strings() {
        #[derive(serde::Serialize)]
        struct Balance {
            #[serde(serialize_with = "decimal")]
            value: u128,
        }
        let json = serde_json::to_string(&Balance { value: u128::MAX }).unwrap();
        assert_eq!(json, format!("{{\"value\":\"{}\"}}", u128::MAX));
    }
}

/// The first nanosecond (since 1970) of a UTC calendar day written `YYYY-MM-DD`, clamped to
/// what a u64 of nanoseconds holds (a day before 1970 is 0, one after 2262 the last
/// nanosecond); `None` for anything that is not a calendar date.
pub fn day_start_ns(date: &str) -> Option<u64> {
    let shaped = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !shaped {
        return None;
    }
    let year: u32 = date[..4].parse().ok()?;
    if year < 1970 {
        // humantime reads years from 1970 on; earlier days are checked on a leap-year twin
        // (400 years on: the same calendar) and all start before the ledger's first instant.
        let twin = format!("{}{}", year + 400 * (1 + (1969 - year) / 400), &date[4..]);
        return day_start_ns(&twin).map(|_| 0);
    }
    let at = humantime::parse_rfc3339(&format!("{date}T00:00:00Z")).ok()?;
    let nanos = at.duration_since(UNIX_EPOCH).ok()?.as_nanos();
    Some(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// A day's `YYYY-MM-DD` from any nanosecond in it.
pub fn date_of(nanos: u64) -> String {
    let mut text = rfc3339_ns(nanos);
    text.truncate(10);
    text
}

#[cfg(test)]
mod day_tests {
    use super::*;

    #[test]
    fn days_parse_only_as_calendar_dates() {
        assert_eq!(day_start_ns("1970-01-02"), Some(86_400_000_000_000));
        assert_eq!(day_start_ns("2024-02-29"), Some(1_709_164_800_000_000_000));
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-1-01",
            "20240101",
            "",
            "1900-02-29",
        ] {
            assert_eq!(day_start_ns(bad), None, "{bad}");
        }
        // Calendar dates out of the ledger's range are clamped, not refused.
        assert_eq!(day_start_ns("0001-01-01"), Some(0));
        assert_eq!(day_start_ns("1600-02-29"), Some(0));
        assert_eq!(day_start_ns("9999-12-31"), Some(u64::MAX));
        assert_eq!(date_of(1_709_164_800_000_000_001), "2024-02-29");
    }
}
