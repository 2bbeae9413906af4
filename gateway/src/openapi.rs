//! The OpenAPI 3.1 document, generated from the handlers' annotations. `docs/openapi.json` is
//! this document, checked in; a test fails when they drift (`KIZO_WRITE_OPENAPI=1` rewrites it).

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kizo",
        description = "A wallet and payment engine: double-entry accounts, transfers, every change durable before it is acknowledged. Errors are application/problem+json with a stable `code`."
    ),
    paths(
        crate::server::healthz,
        crate::server::readyz,
        crate::ledger::create_accounts,
        crate::ledger::create_transfers,
        crate::ledger::lookup_accounts,
        crate::ledger::lookup_transfers,
        crate::ledger::account_transfers,
        crate::wallet::signup,
        crate::wallet::login,
        crate::wallet::refresh,
        crate::wallet::logout,
        crate::wallet::me,
        crate::live::stream,
        crate::wallet::update_me,
        crate::avatars::upload,
        crate::avatars::remove,
        crate::avatars::image,
        crate::email::verify_email,
        crate::email::resend_verification,
        crate::email::forgot_password,
        crate::email::reset_password,
        crate::payments::create,
        crate::payments::transfer,
        crate::payments::account,
        crate::payments::history,
        crate::payments::find_users,
        crate::payments::dashboard,
        crate::payments::history_csv,
        crate::settlements::create_deposit,
        crate::settlements::deposit,
        crate::settlements::create_withdrawal,
        crate::settlements::withdrawal,
        crate::settlements::callback,
        crate::settlements::reconcile,
        crate::settlements::latest_report,
        crate::settlements::settlements_needing_review,
        crate::settlements::admin_settlement,
        crate::settlements::resolve,
        crate::snapshots::take,
        crate::snapshots::list,
        crate::metrics::admin_render,
        crate::peers::cluster,
        crate::payments::balances,
        crate::webhook_api::ledger_register,
        crate::webhook_api::ledger_list,
        crate::webhook_api::ledger_remove,
        crate::webhook_api::ledger_deliveries,
        crate::webhook_api::ledger_replay,
        crate::webhook_api::user_register,
        crate::webhook_api::user_list,
        crate::webhook_api::user_remove,
        crate::webhook_api::user_deliveries,
        crate::webhook_api::user_replay,
    ),
    modifiers(&ApiKey),
    tags(
        (name = "ledger", description = "The batch ledger API, for services: up to 8189 events per call, with an API key."),
        (name = "wallet", description = "The wallet API, for people: signup, login, sessions (access token: `Authorization: Bearer <access_token>`)."),
        (name = "money", description = "Money in and out through the bank: deposits and withdrawals, settled in the background (pending, processing, succeeded, failed, needs_review)."),
        (name = "admin", description = "Reconciliation with the bank, settlements needing review, snapshots and the cluster, with the admin API key."),
        (name = "webhooks", description = "Endpoints that are sent change events (docs/events.md), signed per Standard Webhooks, retried, then parked for a replay: the ledger API key's (`/v1/ledger/webhooks`, every ledger) and a user's (`/v1/me/webhooks`, their wallet's)."),
        (name = "operations", description = "Health and readiness."),
    )
)]
pub struct ApiDoc;

/// A body of raw bytes (`format: binary`), as a schema with its description.
pub(crate) fn bytes_schema(
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
        .description(Some(description))
        .into()
}

struct ApiKey;

impl Modify for ApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "admin_api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "access_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document as served and as checked in: pretty JSON with a final newline.
pub fn document() -> String {
    let mut json = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the document serializes");
    json.push('\n');
    json
}

pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

#[cfg(test)]
mod tests {
    /// The characters a `[^...]` class of `\xHH` and `\uHHHH` escapes and ranges leaves out.
    fn excluded(class: &str) -> Vec<std::ops::RangeInclusive<u32>> {
        let mut points = Vec::new();
        let mut rest = class;
        while !rest.is_empty() {
            let (digits, after) = match rest.as_bytes() {
                [b'\\', b'x', ..] => (&rest[2..4], &rest[4..]),
                [b'\\', b'u', ..] => (&rest[2..6], &rest[6..]),
                _ => panic!("unexpected {rest:?}"),
            };
            points.push(u32::from_str_radix(digits, 16).unwrap());
            rest = after;
            if let Some(after) = rest.strip_prefix('-') {
                let (digits, after) = match after.as_bytes() {
                    [b'\\', b'x', ..] => (&after[2..4], &after[4..]),
                    _ => (&after[2..6], &after[6..]),
                };
                let end = u32::from_str_radix(digits, 16).unwrap();
                let start = points.pop().unwrap();
                points.push(start);
                rest = after;
                points.push(end | 1 << 31); // marks a range's end
            }
        }
        let mut ranges = Vec::new();
        let mut iter = points.into_iter().peekable();
        while let Some(start) = iter.next() {
            match iter.peek() {
                Some(end) if end & 1 << 31 != 0 => {
                    ranges.push(start..=(end & !(1 << 31)));
                    iter.next();
                }
                _ => ranges.push(start..=start),
            }
        }
        ranges
    }

    #[test]
    fn the_patterns_of_names_and_notes_leave_out_what_the_wallet_refuses() {
        let document: serde_json::Value = serde_json::from_str(&super::document()).unwrap();
        let mut patterns = Vec::new();
        fn walk(value: &serde_json::Value, found: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::String(p)) = map.get("pattern") {
                        if p.starts_with("^[^\\x00") {
                            found.push(p.clone());
                        }
                    }
                    map.values().for_each(|v| walk(v, found));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
                _ => {}
            }
        }
        walk(&document, &mut patterns);
        assert!(patterns.len() >= 5, "{patterns:?}"); // names at signup and update, the note
        for pattern in patterns {
            let class = &pattern[3..pattern.find(']').unwrap()];
            let ranges = excluded(class);
            // The basic plane, where the patterns' escapes reach (the rule goes beyond it).
            for code in (0..=0xFFFFu32).filter(|c| !(0xD800..=0xDFFF).contains(c)) {
                let c = char::from_u32(code).unwrap();
                assert_eq!(
                    ranges.iter().any(|r| r.contains(&code)),
                    kizo_wallet::is_hidden_or_control(c),
                    "U+{code:04X} in {pattern}"
                );
            }
        }
    }

    #[test]
    fn the_checked_in_document_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let generated = super::document();
        if std::env::var_os("KIZO_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/openapi.json differs from the code's document; run \
             `KIZO_WRITE_OPENAPI=1 cargo test -p kizo-gateway openapi` and commit it"
        );
    }
}
