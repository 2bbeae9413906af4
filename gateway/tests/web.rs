//! What the web app needs from the server, over HTTP: its pages and assets (security headers,
//! caching, compression), the refresh cookie with its CSRF header, the balance series, date
//! filters on the history, and the console's admin routes.

mod common;

use common::{fund, send, user, TestStore, ADMIN_KEY};
use reqwest::header::{HeaderMap, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A client that never decompresses, so that the encoding sent is the one seen.
fn raw() -> reqwest::Client {
    reqwest::Client::builder().no_gzip().build().unwrap()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

#[tokio::test]
async fn pages_and_assets_are_served_locked_down_and_cached() {
    let store = TestStore::embedded();
    let (server, base) = common::start(&store.config).await;
    let client = raw();
    let mut pages = vec!["/", "/welcome", "/console", "/docs"];
    pages.extend(kizo_gateway::ui::WALLET_PATHS);
    let detail = format!("/transactions/{}", uuid::Uuid::new_v4());
    pages.push(&detail);
    let mut assets = std::collections::BTreeSet::new();
    for page in pages {
        let response = client.get(format!("{base}{page}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{page}");
        let headers = response.headers().clone();
        assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
        let csp = header(&headers, "content-security-policy");
        let scripts = csp
            .split(';')
            .find(|d| d.trim().starts_with("script-src"))
            .unwrap();
        assert_eq!(scripts.trim(), "script-src 'self'", "{page}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert_eq!(header(&headers, "referrer-policy"), "no-referrer");
        assert_eq!(header(&headers, "x-frame-options"), "DENY");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        assert_eq!(header(&headers, "cache-control"), "no-cache");
        assert_eq!(header(&headers, "content-encoding"), "", "not asked for");
        let html = response.text().await.unwrap();
        assert!(!html.contains("<script>"), "no inline script on {page}");
        for (at, _) in html.match_indices("/assets/") {
            let url = &html[at..];
            assets.insert(url[..url.find('"').unwrap()].to_string());
        }
    }
    assert!(assets.len() >= 5, "{assets:?}");

    // `/`: the landing page, which runs no script, unless the browser says it holds a
    // session; then the wallet. Caches keep the two apart.
    let landing = client.get(format!("{base}/")).send().await.unwrap();
    assert!(
        landing
            .headers()
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().contains("Cookie")),
        "{:?}",
        landing.headers()
    );
    let landing = landing.text().await.unwrap();
    assert!(landing.contains("Money that always adds up"), "{landing}");
    assert!(
        !landing.contains("<script"),
        "the landing page runs no script"
    );
    let wallet = client
        .get(format!("{base}/"))
        .header("cookie", "theme=dark; kizo_signed_in=1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(wallet.contains("wallet.js"), "{wallet}");
    for not_signed_in in ["kizo_signed_in=0", "xkizo_signed_in=1", "kizo_signed_in=1x"] {
        let page = client
            .get(format!("{base}/"))
            .header("cookie", not_signed_in)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!page.contains("wallet.js"), "{not_signed_in}");
    }
    let version = kizo_gateway::ui::version();
    for asset in &assets {
        assert!(asset.starts_with(&format!("/assets/{version}/")), "{asset}");
        let plain = client.get(format!("{base}{asset}")).send().await.unwrap();
        assert_eq!(plain.status(), StatusCode::OK, "{asset}");
        assert_eq!(
            header(plain.headers(), CACHE_CONTROL.as_str()),
            "public, max-age=31536000, immutable"
        );
        let kind = header(plain.headers(), CONTENT_TYPE.as_str()).to_string();
        assert!(
            kind.starts_with("text/javascript")
                || kind.starts_with("text/css")
                || kind == "image/svg+xml",
            "{asset}: {kind}"
        );
        let plain = plain.bytes().await.unwrap();
        let gzipped = client
            .get(format!("{base}{asset}"))
            .header("accept-encoding", "br, gzip;q=0.8")
            .send()
            .await
            .unwrap();
        assert_eq!(header(gzipped.headers(), CONTENT_ENCODING.as_str()), "gzip");
        assert_eq!(header(gzipped.headers(), "vary"), "accept-encoding");
        let gzipped = gzipped.bytes().await.unwrap();
        assert!(gzipped.len() < plain.len(), "{asset} compresses");
        let mut unzipped = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&gzipped[..]),
            &mut unzipped,
        )
        .unwrap();
        assert_eq!(unzipped, plain, "{asset}");
    }
    // An old page's asset: today's bytes, never cached under the old URL.
    let old = client
        .get(format!("{base}/assets/000000000000/wallet.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), StatusCode::OK);
    assert_eq!(header(old.headers(), CACHE_CONTROL.as_str()), "no-store");
    // Nothing else is served: no file outside the list, no path walking out of it.
    for missing in [
        format!("/assets/{version}/nope.js"),
        format!("/assets/{version}/../Cargo.toml"),
        format!("/assets/{version}/%2e%2e/src/ui.rs"),
        "/nope".into(),
        "/console/x".into(),
    ] {
        let answer = client.get(format!("{base}{missing}")).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(
            header(answer.headers(), "content-type"),
            "application/problem+json"
        );
    }
    server.stop().await;
    store.clean().await;
}

/// Every `Set-Cookie` of an answer.
fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// Whether the answer deletes both session cookies.
fn clears_the_session(headers: &HeaderMap) -> bool {
    let set = set_cookies(headers);
    ["kizo_refresh=;", "kizo_signed_in=;"].iter().all(|name| {
        set.iter()
            .any(|c| c.starts_with(name) && c.contains("Max-Age=0"))
    })
}

fn cookie_of(headers: &HeaderMap) -> String {
    let set = header(headers, SET_COOKIE.as_str());
    set.split(';').next().unwrap().to_string()
}

#[tokio::test]
async fn the_refresh_cookie_needs_its_csrf_header_and_is_spent_on_use() {
    let store = TestStore::embedded();
    let (server, base) = common::start(&store.config).await;
    let (_, _) = user(&base, "cookie@example.com").await;
    let client = raw();
    let login = client
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": "cookie@example.com", "password": "long enough password", "refresh_cookie": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let set = header(login.headers(), SET_COOKIE.as_str()).to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/v1/auth", "Max-Age="] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP here: {set}");
    // Beside it, the cookie that tells `/` to show the wallet: no secret, no script reads it.
    let hint = set_cookies(login.headers())
        .into_iter()
        .find(|c| c.starts_with("kizo_signed_in=1;"))
        .expect("the signed-in cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/;", "Max-Age="] {
        assert!(hint.contains(attribute), "{hint}");
    }
    let cookie = cookie_of(login.headers());
    let body: Value = login.json().await.unwrap();
    assert!(body["access_token"].is_string());
    assert!(body.get("refresh_token").is_none(), "{body}");

    let refresh = |cookie: Option<&str>, csrf: bool| {
        let mut request = client
            .post(format!("{base}/v1/auth/refresh"))
            .json(&json!({}));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        if csrf {
            request = request.header("x-kizo-csrf", "1");
        }
        request.send()
    };
    // Another site's form or script cannot add the header: refused, and nothing is spent.
    let forged = refresh(Some(&cookie), false).await.unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let forged: Value = forged.json().await.unwrap();
    assert_eq!(forged["code"], "csrf_header_missing");
    // No cookie, no token.
    let none = refresh(None, true).await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);

    let renewed = refresh(Some(&cookie), true).await.unwrap();
    assert_eq!(renewed.status(), StatusCode::OK);
    let next = cookie_of(renewed.headers());
    assert_ne!(next, cookie);
    let pair: Value = renewed.json().await.unwrap();
    assert!(pair.get("refresh_token").is_none(), "{pair}");
    let access = pair["access_token"].as_str().unwrap().to_string();
    // The spent cookie again: the session ends, and the new one stops working too.
    let replayed = refresh(Some(&cookie), true).await.unwrap();
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
    assert!(
        clears_the_session(replayed.headers()),
        "an ended session's cookies are deleted"
    );
    let after = refresh(Some(&next), true).await.unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    let me = send("GET", format!("{base}/v1/me"), &access, None, None).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);

    // Logout deletes the cookie.
    let (token, _) = user(&base, "leaving@example.com").await;
    let logout = client
        .post(format!("{base}/v1/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert!(clears_the_session(logout.headers()));
    server.stop().await;
    store.clean().await;
}

#[tokio::test]
async fn balances_by_day_and_history_by_date() {
    let store = TestStore::embedded();
    let (server, base) = common::start(&store.config).await;
    let (token, wallet) = user(&base, "days@example.com").await;
    fund(&base, &wallet, 5_000, 1).await;
    fund(&base, &wallet, 2_500, 2).await;
    let series = send(
        "GET",
        format!("{base}/v1/accounts/{wallet}/balances?days=3"),
        &token,
        None,
        None,
    )
    .await;
    assert_eq!(series.status, StatusCode::OK, "{}", series.body);
    common::assert_js_safe(&series.body);
    let days = series.body["days"].as_array().unwrap();
    assert_eq!(days.len(), 3);
    let today = kizo_gateway::js_safe::date_of(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    assert_eq!(days[2]["date"], today.as_str());
    assert_eq!(days[2]["closing"], "7500");
    assert_eq!(days[1]["closing"], "0");
    assert_eq!(days[0]["closing"], "0");
    for bad in ["days=0", "days=91", "days=x"] {
        let answer = send(
            "GET",
            format!("{base}/v1/accounts/{wallet}/balances?{bad}"),
            &token,
            None,
            None,
        )
        .await;
        assert!(answer.status.is_client_error(), "{bad}: {}", answer.status);
    }
    let (other, _) = user(&base, "other@example.com").await;
    let theirs = send(
        "GET",
        format!("{base}/v1/accounts/{wallet}/balances"),
        &other,
        None,
        None,
    )
    .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);

    let history = |query: String| {
        let (base, wallet, token) = (base.clone(), wallet.clone(), token.clone());
        async move {
            send(
                "GET",
                format!("{base}/v1/accounts/{wallet}/transfers?{query}"),
                &token,
                None,
                None,
            )
            .await
        }
    };
    let found = history(format!("from={today}&to={today}")).await;
    assert_eq!(found.body["transfers"].as_array().unwrap().len(), 2);
    let found = history(format!("from={today}&limit=1")).await;
    let cursor = found.body["next_cursor"].as_str().unwrap().to_string();
    let older = history(format!("from={today}&limit=1&cursor={cursor}")).await;
    assert_eq!(older.body["transfers"][0]["amount"], 5_000);
    let found = history("to=2020-01-01".into()).await;
    assert_eq!(found.body["transfers"].as_array().unwrap().len(), 0);
    let inverted = history("from=2026-12-05&to=2026-12-04".into()).await;
    assert_eq!(inverted.status, StatusCode::OK);
    assert_eq!(inverted.body["transfers"], json!([]));
    let ancient = history("from=0001-01-01".into()).await;
    assert_eq!(ancient.body["transfers"].as_array().unwrap().len(), 2);
    for bad in ["from=2026-02-30", "from=yesterday", "to=2026-1-01"] {
        let answer = history(bad.into()).await;
        assert_eq!(
            (answer.status, answer.body["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_field")),
            "{bad}"
        );
    }
    let csv = reqwest::Client::new()
        .get(format!(
            "{base}/v1/accounts/{wallet}/transfers.csv?to=2020-01-01"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), 1, "the header only: {csv}");
    server.stop().await;
    store.clean().await;
}

#[tokio::test]
async fn the_console_reads_settlements_and_metrics_with_the_admin_key() {
    let store = TestStore::embedded();
    let (server, base) = common::start(&store.config).await;
    let (token, _) = user(&base, "console@example.com").await;
    for path in ["/v1/admin/settlements", "/v1/admin/metrics"] {
        let strangers = send("GET", format!("{base}{path}"), &token, None, None).await;
        assert_eq!(strangers.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let list = send(
        "GET",
        format!("{base}/v1/admin/settlements"),
        ADMIN_KEY,
        None,
        None,
    )
    .await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body, json!({"settlements": [], "truncated": false}));
    let metrics = reqwest::Client::new()
        .get(format!("{base}/v1/admin/metrics"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("kizo_http_requests_total"), "{metrics}");
    // Search answers each user's wallet, the account a payment names.
    let (_, wallet) = user(&base, "findme@example.com").await;
    common::verify(&server, &base, "findme@example.com").await;
    let found = send(
        "GET",
        format!("{base}/v1/users?q=findme@example.com"),
        &token,
        None,
        None,
    )
    .await;
    assert_eq!(found.body["users"][0]["account_id"], wallet.as_str());
    server.stop().await;
    store.clean().await;
}
