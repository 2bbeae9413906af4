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
