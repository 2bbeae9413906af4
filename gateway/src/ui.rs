//! The web app, served by the gateway itself: at `/`, the wallet to a signed-in visitor (the
//! `kizo_signed_in` cookie) and the landing page to anyone else (also at `/welcome`); the
//! wallet's pages at their paths, the operator console at `/console`, the API's documentation
//! at `/docs`. The landing page runs no script.
//!
//! The files under `gateway/ui/` are served as written: plain ES modules and CSS, no build
//! step, embedded in the binary. They are served under `/assets/<version>/`, where the
//! version is a hash of every embedded file, so that an asset's URL names its content: assets
//! are cached for a year (`immutable`), pages never (`no-cache`), and a new binary's pages
//! name new URLs. Each asset is gzipped once, on its first request, and sent gzipped to
//! clients that accept it.
//!
//! Every page is sent with a Content-Security-Policy that allows scripts from this origin
//! only (no inline script), `frame-ancestors 'none'`, `Referrer-Policy: no-referrer` and
//! `nosniff`. This module serves bytes; it never reads the store or the engine.

use std::io::Write;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("../ui/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the pages load. A file not listed here is not served.
static ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("api.js", JS),
    asset!("money.js", JS),
    asset!("dom.js", JS),
    asset!("wallet.js", JS),
    asset!("console.js", JS),
    asset!("docs.js", JS),
    asset!("icon.svg", "image/svg+xml"),
    asset!("vendor/redoc.standalone.js", JS),
];

const WALLET_PAGE: &str = include_str!("../ui/index.html");
const LANDING_PAGE: &str = include_str!("../ui/landing.html");
const CONSOLE_PAGE: &str = include_str!("../ui/console.html");
const DOCS_PAGE: &str = include_str!("../ui/docs.html");

/// The wallet's page paths (besides `/`): each serves the wallet's page, which shows the
/// view the path names. Mail links point at two of them.
pub const WALLET_PATHS: &[&str] = &[
    "/signin",
    "/signup",
    "/verify-email",
    "/forgot-password",
    "/reset-password",
    "/send",
    "/transactions",
    "/deposit",
    "/withdraw",
    "/profile",
];

/// The pages' policy: scripts, styles, images and requests from this origin only.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// `/docs`' policy: Redoc sets styles from its script (inline `style` elements) and runs its
/// search in a worker made from a blob. No inline script either.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self'; worker-src blob:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The most JavaScript and CSS (gzipped) the wallet's first load may take.
pub const FIRST_LOAD_MAX_BYTES: usize = 200 << 10;

/// A hash of every embedded file: the assets' URL prefix. Pages refer to their assets
/// through it, so a change to any file changes every asset URL.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut hash = Sha256::new();
        for asset in ASSETS {
            hash.update(asset.name.as_bytes());
            hash.update((asset.bytes.len() as u64).to_le_bytes());
            hash.update(asset.bytes);
        }
        for page in [WALLET_PAGE, LANDING_PAGE, CONSOLE_PAGE, DOCS_PAGE] {
            hash.update(page.as_bytes());
        }
        let digest = hash.finalize();
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    })
}

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new()
        .route("/", get(home))
        .route("/welcome", get(landing_page))
        .route("/transactions/{id}", get(wallet_page))
        .route("/console", get(console_page))
        .route("/docs", get(docs_page))
        .route("/assets/{version}/{*name}", get(asset));
    for path in WALLET_PATHS {
        router = router.route(path, get(wallet_page));
    }
    router
}

/// A page's HTML with its assets' version filled in, plain and gzipped (made once).
struct Page {
    html: String,
    gzipped: Vec<u8>,
}

fn page(template: &'static str, cell: &'static OnceLock<Page>) -> &'static Page {
    cell.get_or_init(|| {
        let html = template.replace("{{version}}", version());
        let gzipped = gzip(html.as_bytes());
        Page { html, gzipped }
    })
}

async fn wallet_page(headers: HeaderMap) -> Response {
    static PAGE: OnceLock<Page> = OnceLock::new();
    html(page(WALLET_PAGE, &PAGE), PAGE_CSP, &headers)
}

/// `/`: the wallet (its dashboard) to a visitor whose browser holds a session, the landing
/// page to anyone else. The answer depends on the cookie, so caches must tell them apart.
async fn home(headers: HeaderMap) -> Response {
    let mut response = if crate::auth::says_signed_in(&headers) {
        wallet_page(headers).await
    } else {
        landing_page(headers).await
    };
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("Cookie"));
    response
}

async fn landing_page(headers: HeaderMap) -> Response {
    static PAGE: OnceLock<Page> = OnceLock::new();
    html(page(LANDING_PAGE, &PAGE), PAGE_CSP, &headers)
}

async fn console_page(headers: HeaderMap) -> Response {
    static PAGE: OnceLock<Page> = OnceLock::new();
    html(page(CONSOLE_PAGE, &PAGE), PAGE_CSP, &headers)
}

async fn docs_page(headers: HeaderMap) -> Response {
    static PAGE: OnceLock<Page> = OnceLock::new();
    html(page(DOCS_PAGE, &PAGE), DOCS_CSP, &headers)
}

fn html(page: &'static Page, csp: &'static str, headers: &HeaderMap) -> Response {
    let mut response = compressed(
        page.html.as_bytes(),
        &page.gzipped,
        "text/html; charset=utf-8",
        headers,
    );
    let set = response.headers_mut();
    set.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    set.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    set.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn asset(
    Path((asked_version, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return Err(ApiError::not_found("no such asset"));
    };
    if asked_version != version() {
        // An old page asking for its old assets after an upgrade: the current file, not
        // cached, so that the old URL never holds new bytes for a year.
        let mut response = plain(&ASSETS[index]);
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(response);
    }
    let asset = &ASSETS[index];
    let mut response = compressed(
        asset.bytes,
        gzipped_asset(index),
        asset.content_type,
        &headers,
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    Ok(response)
}

fn gzipped_asset(index: usize) -> &'static [u8] {
    static GZIPPED: OnceLock<Vec<OnceLock<Vec<u8>>>> = OnceLock::new();
    let cells = GZIPPED.get_or_init(|| ASSETS.iter().map(|_| OnceLock::new()).collect());
    cells[index].get_or_init(|| gzip(ASSETS[index].bytes))
}

fn plain(asset: &Asset) -> Response {
    let mut response = asset.bytes.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `bytes`, or `gzipped` to a client whose `Accept-Encoding` takes gzip.
fn compressed(
    bytes: &'static [u8],
    gzipped: &'static [u8],
    content_type: &'static str,
    headers: &HeaderMap,
) -> Response {
    let takes_gzip = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| accepts(coding, "gzip"));
    let body = if takes_gzip { gzipped } else { bytes };
    let mut response = (StatusCode::OK, body).into_response();
    let set = response.headers_mut();
    set.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    set.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    set.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    set.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if takes_gzip {
        set.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// Whether one `Accept-Encoding` entry (`gzip`, `gzip;q=0.5`, `gzip;q=0`) takes `coding`.
fn accepts(entry: &str, coding: &str) -> bool {
    let mut parts = entry.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|name| name.eq_ignore_ascii_case(coding))
    {
        return false;
    }
    parts
        .filter_map(|p| p.strip_prefix("q="))
        .all(|q| q.parse::<f32>().is_ok_and(|q| q > 0.0))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_names_only_embedded_assets_of_this_version() {
        for page in [WALLET_PAGE, LANDING_PAGE, CONSOLE_PAGE, DOCS_PAGE] {
            let html = page.replace("{{version}}", version());
            let mut rest = html.as_str();
            let mut found = 0;
            while let Some(at) = rest.find("/assets/") {
                let url = &rest[at..];
                let end = url.find('"').expect("a quoted URL");
                let name = url[..end]
                    .strip_prefix(&format!("/assets/{}/", version()))
                    .expect("this version's prefix");
                assert!(ASSETS.iter().any(|a| a.name == name), "{name} not embedded");
                found += 1;
                rest = &url[end..];
            }
            assert!(found > 0, "a page with no asset");
            assert!(!html.contains("<script>"), "an inline script");
            assert!(!html.contains(" style="), "an inline style");
        }
    }

    #[test]
    fn modules_import_only_embedded_siblings() {
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            if asset.name.starts_with("vendor/") {
                continue;
            }
            let text = std::str::from_utf8(asset.bytes).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let from = line.rsplit("from ").next().unwrap();
                let name = from.trim_matches(|c| c == '"' || c == '\'' || c == ';' || c == ' ');
                let name = name.strip_prefix("./").expect("a relative import");
                assert!(ASSETS.iter().any(|a| a.name == name), "{name} not embedded");
            }
        }
    }

    /// The wallet's views (its `"/path": view` keys) and the paths the server answers with
    /// the wallet's page are the same list, written twice: this keeps them so.
    #[test]
    fn the_server_serves_every_view_of_the_wallet() {
        let asset = ASSETS.iter().find(|a| a.name == "wallet.js").unwrap();
        let wallet = std::str::from_utf8(asset.bytes).unwrap();
        let views: Vec<&str> = wallet
            .lines()
            .filter_map(|line| line.trim().strip_prefix('"'))
            .filter_map(|rest| rest.split_once("\":").map(|(path, _)| path))
            .filter(|path| path.starts_with('/'))
            .collect();
        for path in WALLET_PATHS {
            assert!(
                views.contains(path),
                "{path} is served but the wallet has no view"
            );
        }
        for path in views {
            assert!(
                path == "/" || WALLET_PATHS.contains(&path),
                "{path} is a view the server does not serve"
            );
        }
    }

    #[test]
    fn gzip_is_taken_only_when_accepted() {
        assert!(accepts("gzip", "gzip"));
        assert!(accepts(" GZIP ; q=0.5", "gzip"));
        assert!(!accepts("gzip;q=0", "gzip"));
        assert!(!accepts("br", "gzip"));
    }

    #[test]
    fn the_first_load_stays_under_its_budget() {
        // The wallet's first load: its page's CSS and the modules it imports, gzipped.
        let first_load: usize = ASSETS
            .iter()
            .enumerate()
            .filter(|(_, a)| !a.name.starts_with("vendor/") && a.name != "console.js")
            .filter(|(_, a)| a.name != "docs.js")
            .map(|(i, _)| gzipped_asset(i).len())
            .sum();
        assert!(first_load <= FIRST_LOAD_MAX_BYTES, "{first_load} bytes");
    }
}
