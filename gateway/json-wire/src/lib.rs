//! The JSON forms of the ledger's types, as the gateway reads and writes them and
//! `kizo-client` sends and reads them. Every 128- and 64-bit number is a decimal string (JSON
//! numbers lose precision past 2^53 in most clients); flags are objects of booleans. Unknown
//! fields are refused. Pure: no I/O. With the `openapi` feature, each form also describes
//! itself for the OpenAPI document.

use kizo_ledger::{Account, AccountFlags, Transfer, TransferFlags};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! decimal {
    ($name:ident, $int:ty) => {
        /// An unsigned integer written as a decimal string.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name(pub $int);

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(&self.0)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some(at_most(&<$int>::MAX.to_string())))
                    .description(Some(concat!(
                        "An unsigned ",
                        stringify!($int),
                        " as a decimal string"
                    )))
                    .examples(["2500"])
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                if text.is_empty() || text.len() > 39 || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(D::Error::custom(format!(
                        "expected a decimal string of at most {} digits",
                        <$int>::MAX.to_string().len()
                    )));
                }
                text.parse()
                    .map($name)
                    .map_err(|_| D::Error::custom(concat!("out of range for ", stringify!($int))))
            }
        }
    };
}

#[cfg(feature = "openapi")]
/// A regular expression for the decimal strings of `0..=max` (leading zeros allowed, at most
/// as many digits as `max`): what the parser accepts, so the document says exactly that.
fn at_most(max: &str) -> String {
    let digits: Vec<u32> = max.bytes().map(|b| u32::from(b - b'0')).collect();
    let n = digits.len();
    let mut choices = vec![format!("[0-9]{{1,{}}}", n - 1)];
    for i in 0..n {
        if digits[i] > 0 {
            let rest = n - i - 1;
            let below = if digits[i] == 1 {
                "0".to_string()
            } else {
                format!("[0-{}]", digits[i] - 1)
            };
            choices.push(format!("{}{below}[0-9]{{{rest}}}", &max[..i]));
        }
    }
    choices.push(max.to_string());
    format!("^({})$", choices.join("|"))
}

decimal!(U128, u128);
decimal!(U64, u64);

/// A small integer field: a JSON integer, or a number with no fractional part (`1428.0`, which
/// JSON Schema counts as an integer too).
fn whole<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let number = serde_json::Number::deserialize(deserializer)?;
    let value = match number.as_u64() {
        Some(value) => Some(value),
        None => number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
            .map(|f| f as u64),
    };
    value
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| D::Error::custom(format!("{number} is not a whole number in range")))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct AccountFlagsJson {
    pub linked: bool,
    pub debits_must_not_exceed_credits: bool,
    pub credits_must_not_exceed_debits: bool,
    pub closed: bool,
}

impl From<AccountFlagsJson> for AccountFlags {
    fn from(f: AccountFlagsJson) -> Self {
        let mut flags = AccountFlags::empty();
        for (set, flag) in [
            (f.linked, AccountFlags::LINKED),
            (
                f.debits_must_not_exceed_credits,
                AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            ),
            (
                f.credits_must_not_exceed_debits,
                AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
            ),
            (f.closed, AccountFlags::CLOSED),
        ] {
            if set {
                flags = flags | flag;
            }
        }
        flags
    }
}

impl From<AccountFlags> for AccountFlagsJson {
    fn from(f: AccountFlags) -> Self {
        Self {
            linked: f.contains(AccountFlags::LINKED),
            debits_must_not_exceed_credits: f
                .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
            credits_must_not_exceed_debits: f
                .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
            closed: f.contains(AccountFlags::CLOSED),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct TransferFlagsJson {
    pub linked: bool,
    pub pending: bool,
    pub post_pending_transfer: bool,
    pub void_pending_transfer: bool,
    pub balancing_debit: bool,
    pub balancing_credit: bool,
}

impl From<TransferFlagsJson> for TransferFlags {
    fn from(f: TransferFlagsJson) -> Self {
        let mut flags = TransferFlags::empty();
        for (set, flag) in [
            (f.linked, TransferFlags::LINKED),
            (f.pending, TransferFlags::PENDING),
            (
                f.post_pending_transfer,
                TransferFlags::POST_PENDING_TRANSFER,
            ),
            (
                f.void_pending_transfer,
                TransferFlags::VOID_PENDING_TRANSFER,
            ),
            (f.balancing_debit, TransferFlags::BALANCING_DEBIT),
            (f.balancing_credit, TransferFlags::BALANCING_CREDIT),
        ] {
            if set {
                flags = flags | flag;
            }
        }
        flags
    }
}

impl From<TransferFlags> for TransferFlagsJson {
    fn from(f: TransferFlags) -> Self {
        Self {
            linked: f.contains(TransferFlags::LINKED),
            pending: f.contains(TransferFlags::PENDING),
            post_pending_transfer: f.contains(TransferFlags::POST_PENDING_TRANSFER),
            void_pending_transfer: f.contains(TransferFlags::VOID_PENDING_TRANSFER),
            balancing_debit: f.contains(TransferFlags::BALANCING_DEBIT),
            balancing_credit: f.contains(TransferFlags::BALANCING_CREDIT),
        }
    }
}

/// An account, as created (balances and timestamp must be absent or zero) and as returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AccountJson {
    pub id: U128,
    #[serde(default)]
    pub debits_pending: U128,
    #[serde(default)]
    pub debits_posted: U128,
    #[serde(default)]
    pub credits_pending: U128,
    #[serde(default)]
    pub credits_posted: U128,
    #[serde(default)]
    pub user_data_128: U128,
    #[serde(default)]
    pub user_data_64: U64,
    #[serde(default, deserialize_with = "whole")]
    #[cfg_attr(feature = "openapi", schema(value_type = u64, maximum = 4294967295_u64))]
    pub user_data_32: u32,
    #[serde(deserialize_with = "whole")]
    #[cfg_attr(feature = "openapi", schema(value_type = u64, maximum = 4294967295_u64))]
    pub ledger: u32,
    #[serde(deserialize_with = "whole")]
    #[cfg_attr(feature = "openapi", schema(value_type = u64, maximum = 65535))]
    pub code: u16,
    #[serde(default)]
    pub flags: AccountFlagsJson,
    #[serde(default)]
    pub timestamp: U64,
}

impl From<AccountJson> for Account {
    fn from(a: AccountJson) -> Self {
        Account {
            id: a.id.0,
            debits_pending: a.debits_pending.0,
            debits_posted: a.debits_posted.0,
            credits_pending: a.credits_pending.0,
            credits_posted: a.credits_posted.0,
            user_data_128: a.user_data_128.0,
            user_data_64: a.user_data_64.0,
            user_data_32: a.user_data_32,
            ledger: a.ledger,
            code: a.code,
            flags: a.flags.into(),
            timestamp: a.timestamp.0,
        }
    }
}

impl From<Account> for AccountJson {
    fn from(a: Account) -> Self {
        AccountJson {
            id: U128(a.id),
            debits_pending: U128(a.debits_pending),
            debits_posted: U128(a.debits_posted),
            credits_pending: U128(a.credits_pending),
            credits_posted: U128(a.credits_posted),
            user_data_128: U128(a.user_data_128),
            user_data_64: U64(a.user_data_64),
            user_data_32: a.user_data_32,
            ledger: a.ledger,
            code: a.code,
            flags: a.flags.into(),
            timestamp: U64(a.timestamp),
        }
    }
}

/// A transfer, as created (post and void may leave accounts, ledger and code zero) and as
/// returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TransferJson {
    pub id: U128,
    #[serde(default)]
    pub debit_account_id: U128,
    #[serde(default)]
    pub credit_account_id: U128,
    #[serde(default)]
    pub amount: U128,
    #[serde(default)]
    pub pending_id: U128,
    #[serde(default)]
    pub user_data_128: U128,
    #[serde(default)]
    pub user_data_64: U64,
    #[serde(default, deserialize_with = "whole")]
    #[cfg_attr(feature = "openapi", schema(value_type = u64, maximum = 4294967295_u64))]
    pub user_data_32: u32,
    #[serde(default, deserialize_with = "whole")]
    #[cfg_attr(feature = "openapi", schema(value_type = u64, maximum = 4294967295_u64))]
    pub timeout: u32,
    #[serde(default, deserialize_with = "whole")]
    #[cfg_attr(feature = "openapi", schema(value_type = u64, maximum = 4294967295_u64))]
    pub ledger: u32,
    #[serde(default, deserialize_with = "whole")]
    #[cfg_attr(feature = "openapi", schema(value_type = u64, maximum = 65535))]
    pub code: u16,
    #[serde(default)]
    pub flags: TransferFlagsJson,
    #[serde(default)]
    pub timestamp: U64,
}

impl From<TransferJson> for Transfer {
    fn from(t: TransferJson) -> Self {
        Transfer {
            id: t.id.0,
            debit_account_id: t.debit_account_id.0,
            credit_account_id: t.credit_account_id.0,
            amount: t.amount.0,
            pending_id: t.pending_id.0,
            user_data_128: t.user_data_128.0,
            user_data_64: t.user_data_64.0,
            user_data_32: t.user_data_32,
            timeout: t.timeout,
            ledger: t.ledger,
            code: t.code,
            flags: t.flags.into(),
            timestamp: t.timestamp.0,
        }
    }
}

impl From<Transfer> for TransferJson {
    fn from(t: Transfer) -> Self {
        TransferJson {
            id: U128(t.id),
            debit_account_id: U128(t.debit_account_id),
            credit_account_id: U128(t.credit_account_id),
            amount: U128(t.amount),
            pending_id: U128(t.pending_id),
            user_data_128: U128(t.user_data_128),
            user_data_64: U64(t.user_data_64),
            user_data_32: t.user_data_32,
            timeout: t.timeout,
            ledger: t.ledger,
            code: t.code,
            flags: t.flags.into(),
            timestamp: U64(t.timestamp),
        }
    }
}

/// Writes `field` unless it holds its default, which the reader fills in for a missing field.
fn entry_unless_default<M: serde::ser::SerializeMap, T: Serialize + Default + PartialEq>(
    map: &mut M,
    name: &'static str,
    field: &T,
) -> Result<(), M::Error> {
    if *field != T::default() {
        map.serialize_entry(name, field)?;
    }
    Ok(())
}

/// A transfer as sent to be created: the same form as [`TransferJson`], without the fields
/// that hold their defaults (most of them, in most batches: fewer bytes to write and to read).
pub struct NewTransferJson(pub TransferJson);

impl Serialize for NewTransferJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let t = &self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &t.id)?;
        entry_unless_default(&mut map, "debit_account_id", &t.debit_account_id)?;
        entry_unless_default(&mut map, "credit_account_id", &t.credit_account_id)?;
        entry_unless_default(&mut map, "amount", &t.amount)?;
        entry_unless_default(&mut map, "pending_id", &t.pending_id)?;
        entry_unless_default(&mut map, "user_data_128", &t.user_data_128)?;
        entry_unless_default(&mut map, "user_data_64", &t.user_data_64)?;
        entry_unless_default(&mut map, "user_data_32", &t.user_data_32)?;
        entry_unless_default(&mut map, "timeout", &t.timeout)?;
        entry_unless_default(&mut map, "ledger", &t.ledger)?;
        entry_unless_default(&mut map, "code", &t.code)?;
        entry_unless_default(&mut map, "flags", &t.flags)?;
        entry_unless_default(&mut map, "timestamp", &t.timestamp)?;
        map.end()
    }
}

/// An account as sent to be created, as [`NewTransferJson`] is for a transfer (`ledger` and
/// `code`, required, are always written).
pub struct NewAccountJson(pub AccountJson);

impl Serialize for NewAccountJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let a = &self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &a.id)?;
        entry_unless_default(&mut map, "debits_pending", &a.debits_pending)?;
        entry_unless_default(&mut map, "debits_posted", &a.debits_posted)?;
        entry_unless_default(&mut map, "credits_pending", &a.credits_pending)?;
        entry_unless_default(&mut map, "credits_posted", &a.credits_posted)?;
        entry_unless_default(&mut map, "user_data_128", &a.user_data_128)?;
        entry_unless_default(&mut map, "user_data_64", &a.user_data_64)?;
        entry_unless_default(&mut map, "user_data_32", &a.user_data_32)?;
        map.serialize_entry("ledger", &a.ledger)?;
        map.serialize_entry("code", &a.code)?;
        entry_unless_default(&mut map, "flags", &a.flags)?;
        entry_unless_default(&mut map, "timestamp", &a.timestamp)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_numbers_are_decimal_strings_both_ways() {
        let json = serde_json::to_string(&U128(u128::MAX)).unwrap();
        assert_eq!(json, format!("\"{}\"", u128::MAX));
        assert_eq!(
            serde_json::from_str::<U128>(&json).unwrap(),
            U128(u128::MAX)
        );
        for bad in [
            "12",
            "\"\"",
            "\"-1\"",
            "\"1e3\"",
            "\" 1\"",
            "\"340282366920938463463374607431768211456\"",
        ] {
            assert!(serde_json::from_str::<U128>(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<U64>("\"18446744073709551616\"").is_err());
    }

    #[test]
    #[cfg(feature = "openapi")]
    fn the_documented_pattern_accepts_exactly_what_the_parser_accepts() {
        let pattern = at_most("255");
        assert_eq!(
            pattern,
            "^([0-9]{1,2}|[0-1][0-9]{2}|2[0-4][0-9]{1}|25[0-4][0-9]{0}|255)$"
        );
        let max = u128::MAX.to_string();
        let regex = at_most(&max);
        // Spot checks of the alternatives against the parser, around the boundary.
        for text in [
            max.clone(),
            "340282366920938463463374607431768211454".into(),
            "0".into(),
            "09".into(),
        ] {
            assert!(
                serde_json::from_str::<U128>(&format!("\"{text}\"")).is_ok(),
                "{text}"
            );
        }
        assert!(
            serde_json::from_str::<U128>("\"340282366920938463463374607431768211456\"").is_err()
        );
        assert!(regex.contains("|340282366920938463463374607431768211455)"));
    }

    #[test]
    fn transfers_round_trip_and_unknown_fields_are_refused() {
        let transfer = Transfer {
            flags: TransferFlags::PENDING | TransferFlags::LINKED,
            timeout: 30,
            user_data_64: u64::MAX,
            ..Transfer::new(u128::MAX - 1, 2, 3, 4, 840, 1)
        };
        let json = serde_json::to_value(TransferJson::from(transfer)).unwrap();
        let back: TransferJson = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(Transfer::from(back), transfer);
        let mut whole = json.clone();
        whole["ledger"] = serde_json::json!(840.0);
        assert_eq!(
            Transfer::from(serde_json::from_value::<TransferJson>(whole).unwrap()),
            transfer
        );
        let mut fraction = json.clone();
        fraction["ledger"] = serde_json::json!(840.5);
        assert!(serde_json::from_value::<TransferJson>(fraction).is_err());
        let mut extra = json;
        extra["amunt"] = serde_json::json!("5");
        assert!(serde_json::from_value::<TransferJson>(extra).is_err());
    }

    #[test]
    fn new_events_leave_out_their_defaults_and_read_back_the_same() {
        let plain = Transfer::new(7, 1, 2, 500, 840, 1);
        let text = serde_json::to_string(&NewTransferJson(plain.into())).unwrap();
        assert_eq!(
            text,
            r#"{"id":"7","debit_account_id":"1","credit_account_id":"2","amount":"500","ledger":840,"code":1}"#
        );
        let full = Transfer {
            pending_id: 3,
            user_data_128: u128::MAX,
            user_data_64: 9,
            user_data_32: 10,
            timeout: 11,
            flags: TransferFlags::PENDING,
            ..plain
        };
        for transfer in [plain, full] {
            let text = serde_json::to_string(&NewTransferJson(transfer.into())).unwrap();
            let back: TransferJson = serde_json::from_str(&text).unwrap();
            assert_eq!(Transfer::from(back), transfer);
        }
        let account = Account {
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            user_data_64: 4,
            ..Account::new(5, 840, 1)
        };
        for account in [Account::new(5, 840, 1), account] {
            let text = serde_json::to_string(&NewAccountJson(account.into())).unwrap();
            let back: AccountJson = serde_json::from_str(&text).unwrap();
            assert_eq!(Account::from(back), account);
        }
    }
}
