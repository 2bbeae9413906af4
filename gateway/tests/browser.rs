//! The web app in a real browser: `browser/journeys.mjs` drives headless Chromium (Debian's
//! `chromium`, through `playwright-core`) against real gateway processes, on the embedded
//! store and on PostgreSQL: sign up, verify, sign in, deposit, pay another user who sees it
//! arrive, history and CSV, a double click and a lost answer that pay once, a refusal shown
//! in words, password reset, sign out, and an operator resolving a settlement in the console.
//! Every page passes axe-core and is photographed into `target/screenshots/<store>/`.
//!
//! Needs Node.js and Chromium (`.ci/run` installs Debian's `chromium` when missing); the
//! test installs its npm packages (pinned by `browser/package-lock.json`) when they are
//! missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{GatewayProcess, TestStore, ADMIN_KEY};

const BANK_TOKEN: &str = "bank-token-for-browser-tests-0123456789";

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> String {
    let path = std::env::var("KIZO_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&path).exists(),
        "no Chromium at {path}: install Debian's `chromium` (bash .ci/run does), or set KIZO_CHROMIUM"
    );
    path
}

/// `npm ci` once, when the packages are missing or older than the lock file (once per
/// process: the tests of this file would otherwise install into one folder at once).
fn install_packages() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(install_packages_now);
}

fn install_packages_now() {
    let dir = tests_dir();
    let installed = dir.join("node_modules/.package-lock.json");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&installed) >= modified(&dir.join("package-lock.json")) && installed.exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .status()
        .expect("npm (Node.js) is installed");
    assert!(status.success(), "npm ci failed in {}", dir.display());
}

/// The Redoc served at `/docs` is the pinned npm package's file, byte for byte.
#[test]
fn the_vendored_redoc_is_the_pinned_package() {
    install_packages();
    let vendored = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/vendor/redoc.standalone.js");
    let packaged = tests_dir().join("node_modules/redoc/bundles/redoc.standalone.js");
    assert!(
        std::fs::read(vendored).unwrap() == std::fs::read(packaged).unwrap(),
        "gateway/ui/vendor/redoc.standalone.js differs from the redoc package in package.json"
    );
}

/// The web app's TypeScript types are generated from the checked-in OpenAPI document by the
/// pinned `openapi-typescript`; `KIZO_WRITE_OPENAPI=1` writes them again.
#[test]
fn the_web_apps_api_types_are_generated_from_the_openapi_document() {
    install_packages();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let checked_in = root.join("ui/api-types.d.ts");
    let generated = tempfile::tempdir().unwrap().keep().join("api-types.d.ts");
    let status = Command::new(tests_dir().join("node_modules/.bin/openapi-typescript"))
        .arg(root.join("../docs/openapi.json"))
        .arg("-o")
        .arg(&generated)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("openapi-typescript runs");
    assert!(status.success());
    let generated = std::fs::read_to_string(generated).unwrap();
    if std::env::var_os("KIZO_WRITE_OPENAPI").is_some() {
        std::fs::write(&checked_in, &generated).unwrap();
    }
    assert!(
        std::fs::read_to_string(&checked_in).unwrap() == generated,
        "gateway/ui/api-types.d.ts differs from docs/openapi.json: run \
         `KIZO_WRITE_OPENAPI=1 cargo test -p kizo-gateway --test browser api_types` and commit it"
    );
}

/// One browser run at a time: two at once on two cores would time each other out.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn journeys(store: TestStore, name: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    install_packages();
    let browser = chromium();
    let gateway = GatewayProcess::start(
        &store,
        &[
            "--admin-api-key",
            ADMIN_KEY,
            "--metrics-listen",
            "off",
            // Every test user signs in from one address, several times a minute.
            "--auth-rate-per-address",
            "10000",
            "--auth-rate-per-email",
            "1000",
        ],
    )
    .await;
    // A second gateway, on a store of its own, whose bank never answers: each deposit's
    // outcome stays unknown after its one attempt, and it needs review.
    let review_store = TestStore::embedded();
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let review = GatewayProcess::start(
        &review_store,
        &[
            "--admin-api-key",
            ADMIN_KEY,
            "--metrics-listen",
            "off",
            "--bank-url",
            &format!("http://127.0.0.1:{nowhere}"),
            "--bank-token",
            BANK_TOKEN,
            "--settlement-attempts",
            "1",
            "--settlement-timeout-ms",
            "200",
        ],
    )
    .await;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/screenshots")
        .join(name);
    let output = tokio::process::Command::new("node")
        .arg("journeys.mjs")
        .current_dir(tests_dir())
        .env("KIZO_URL", &gateway.base)
        .env("KIZO_REVIEW_URL", &review.base)
        .env("KIZO_MAIL_DIR", gateway.data_dir.join("mail"))
        .env("KIZO_ADMIN_KEY", ADMIN_KEY)
        .env("KIZO_SHOTS", &shots)
        .env("KIZO_CHROMIUM", browser)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the journeys failed on {name}:\n{stdout}\n{stderr}\nscreenshots so far: {}",
        shots.display()
    );
    assert!(stdout.contains(r#""journeys":"passed""#), "{stdout}");
    gateway.kill().await;
    review.kill().await;
    store.clean().await;
    review_store.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journeys_on_the_embedded_store() {
    journeys(TestStore::embedded(), "embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journeys_on_postgres() {
    journeys(TestStore::postgres("browser_journeys"), "postgres").await;
}
