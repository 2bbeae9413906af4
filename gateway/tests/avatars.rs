//! Avatars over HTTP, on both stores: real pictures in, a clean fixed-size PNG out at a
//! content-addressed URL; malicious uploads refused with their codes; the per-user limit.

mod common;

use common::{user, verify, TestStore};
use kizo_avatar::fixtures::{bomb, photo_with_gps, picture, png_dimensions, ImageFormat};
use reqwest::StatusCode;
use serde_json::Value;

async fn put(base: &str, token: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .put(format!("{base}/v1/me/avatar"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    if !status.is_success() {
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{status}"
        );
    }
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn me(base: &str, token: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn avatars(store: TestStore) {
    let (server, base) = common::start(&store.config).await;
    let (token, _) = user(&base, "ava@example.com").await;
    assert_eq!(me(&base, &token).await["user"]["avatar_url"], Value::Null);

    // A camera's photo: served back as a 160x160 PNG without its GPS position.
    let (status, set) = put(&base, &token, "image/jpeg", photo_with_gps()).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let url = set["avatar_url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with("/v1/avatars/") && url.len() == "/v1/avatars/".len() + 64,
        "{url}"
    );
    assert_eq!(me(&base, &token).await["user"]["avatar_url"], url.as_str());
    let served = reqwest::get(format!("{base}{url}")).await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    let headers = served.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("sandbox"));
    let png = served.bytes().await.unwrap();
    assert!(!png.windows(3).any(|w| w == b"GPS"), "the position is gone");
    assert_eq!(png_dimensions(&png), (160, 160));

    // Another picture: a new URL; the old one names nothing any more.
    let (status, set) = put(
        &base,
        &token,
        "image/webp",
        picture(300, 500, ImageFormat::WebP),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_ne!(set["avatar_url"], url.as_str());
    let old = reqwest::get(format!("{base}{url}")).await.unwrap();
    assert_eq!(old.status(), StatusCode::NOT_FOUND);

    // The recipient search shows it.
    let (bo_token, _) = user(&base, "bo@example.com").await;
    verify(&server, &base, "ava@example.com").await;
    let found: Value = reqwest::Client::new()
        .get(format!("{base}/v1/users?q=ava@example.com"))
        .bearer_auth(&bo_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        found["users"][0]["avatar_url"], set["avatar_url"],
        "{found}"
    );

    // What is not really a picture, or too much of one, is refused with its code.
    let mut polyglot_html = b"<!doctype html><script>alert(document.cookie)</script>".to_vec();
    polyglot_html.extend_from_slice(&picture(8, 8, ImageFormat::Png));
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "image/png",
            polyglot_html,
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_an_image",
        ),
        (
            "image/jpeg",
            picture(20, 20, ImageFormat::Png),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_an_image",
        ),
        (
            "image/png",
            bomb(60_000, 60_000),
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_too_large",
        ),
        (
            "image/png",
            picture(4097, 3, ImageFormat::Png),
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_too_large",
        ),
        (
            "image/svg+xml",
            b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "image/png",
            vec![0; (2 << 20) + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (content_type, body, status, code) in cases {
        let (got, problem) = put(&base, &token, content_type, body).await;
        assert_eq!(
            (got, problem["code"].as_str().unwrap()),
            (status, code),
            "{problem}"
        );
    }
    let (status, _) = put(
        &base,
        "not-a-token",
        "image/png",
        picture(8, 8, ImageFormat::Png),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let malformed = reqwest::get(format!("{base}/v1/avatars/..%2F..%2Fusers.db"))
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::NOT_FOUND);

    // Removed: gone from the profile; removing again is no error.
    for _ in 0..2 {
        let removed = reqwest::Client::new()
            .delete(format!("{base}/v1/me/avatar"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(me(&base, &token).await["user"]["avatar_url"], Value::Null);

    // Each change decodes a picture: a user gets 30 an hour (the refusals above counted
    // too, the signed-out one not), then waits; others do not.
    let mut limited = None;
    for _ in 0..30 {
        let (status, problem) =
            put(&base, &token, "image/png", picture(8, 8, ImageFormat::Png)).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(problem);
            break;
        }
        assert_eq!(status, StatusCode::OK, "{problem}");
    }
    assert_eq!(
        limited.expect("limited within 30 more")["code"],
        "rate_limited"
    );
    let (status, _) = put(
        &base,
        &bo_token,
        "image/png",
        picture(8, 8, ImageFormat::Png),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
    store.clean().await;
}

#[tokio::test]
async fn avatars_on_the_embedded_store() {
    avatars(TestStore::embedded()).await;
}

#[tokio::test]
async fn avatars_on_postgres() {
    avatars(TestStore::postgres("avatars")).await;
}
