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
        crate::wallet::update_me,
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
        crate::settlements::admin_settlement,
        crate::settlements::resolve,
        crate::snapshots::take,
        crate::snapshots::list,
    ),
    modifiers(&ApiKey),
    tags(
        (name = "ledger", description = "The batch ledger API, for services: up to 8189 events per call, with an API key."),
        (name = "wallet", description = "The wallet API, for people: signup, login, sessions (access token: `Authorization: Bearer <access_token>`)."),
        (name = "money", description = "Money in and out through the bank: deposits and withdrawals, settled in the background (pending, processing, succeeded, failed, needs_review)."),
        (name = "admin", description = "Reconciliation with the bank, settlements needing review, and snapshots, with the admin API key."),
        (name = "operations", description = "Health and readiness."),
    )
)]
pub struct ApiDoc;

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
