//! Email ownership and password reset over real HTTP, with mail through a real SMTP server
//! process (Python's `aiosmtpd`, keeping each message in a maildir) that the test starts.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{code_in, send, TestStore};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// An SMTP server process that keeps what it receives in `maildir/new`.
struct SmtpServer {
    child: tokio::process::Child,
    port: u16,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmtpServer {
    async fn start() -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("maildir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Debian's python3-aiosmtpd is for the system's interpreter.
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let child = tokio::process::Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 with aiosmtpd (Debian: python3-aiosmtpd)");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return SmtpServer {
                    child,
                    port,
                    maildir,
                    _dir: dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the SMTP server did not start");
    }

    /// Every message received for `email`, oldest first, waiting until there are `count`.
    async fn mail_to(&self, email: &str, count: usize) -> Vec<String> {
        for _ in 0..400 {
            let mut found: Vec<(std::time::SystemTime, String)> =
                std::fs::read_dir(self.maildir.join("new"))
                    .into_iter()
                    .flatten()
                    .filter_map(|entry| {
                        let entry = entry.ok()?;
                        let text = std::fs::read_to_string(entry.path()).ok()?;
                        let to_them = text
                            .lines()
                            .any(|l| l.eq_ignore_ascii_case(&format!("To: {email}")));
                        to_them.then_some((entry.metadata().ok()?.modified().ok()?, text))
                    })
                    .collect();
            if found.len() >= count {
                found.sort();
                return found.into_iter().map(|(_, text)| text).collect();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("fewer than {count} mails to {email}");
    }
}

async fn post(base: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn login(base: &str, email: &str, password: &str) -> (StatusCode, Value) {
    post(
        base,
        "/v1/auth/login",
        json!({"email": email, "password": password}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_mails_a_verification_and_a_reset_ends_every_session() {
    let smtp = SmtpServer::start().await;
    let store = TestStore::postgres("email");
    let (server, base) = common::start_configured(&store.config, |config| {
        config.mail.smtp_url = Some(format!("smtp://127.0.0.1:{}", smtp.port));
        config.mail.public_url = "https://wallet.example.com".into();
    })
    .await;
    let email = "grace@example.com";
    let (status, me) = post(
        &base,
        "/v1/auth/signup",
        json!({"email": email, "password": "first password", "first_name": "Grace", "last_name": "Hopper"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{me}");
    assert_eq!(me["user"]["email_verified"], false);

    // The verification mail, through the SMTP server, with a link to the web app.
    let mail = smtp.mail_to(email, 1).await.remove(0);
    assert!(
        mail.contains("Subject: Confirm your email for Kizo"),
        "{mail}"
    );
    assert!(
        mail.contains("https://wallet.example.com/verify-email?token="),
        "{mail}"
    );
    let code = code_in(&mail);
    let (status, problem) = post(
        &base,
        "/v1/auth/verify-email",
        json!({"token": "0".repeat(64)}),
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    let (status, _) = post(&base, "/v1/auth/verify-email", json!({"token": code})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Once only.
    let (status, problem) = post(&base, "/v1/auth/verify-email", json!({"token": code})).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    let (status, tokens) = login(&base, email, "first password").await;
    assert_eq!(status, StatusCode::OK);
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let me = send("GET", format!("{base}/v1/me"), &access, None, None).await;
    assert_eq!(me.body["user"]["email_verified"], true, "{}", me.body);
    let again = send(
        "POST",
        format!("{base}/v1/auth/verify-email/resend"),
        &access,
        None,
        None,
    )
    .await;
    assert_eq!(
        (again.status, again.body["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_verified"))
    );

    // Forgot password: the same answer for an unknown email; mail only for the known one.
    let (known_status, known) = post(
        &base,
        "/v1/auth/forgot-password",
        json!({"email": "Grace@Example.com"}),
    )
    .await;
    let (unknown_status, unknown) = post(
        &base,
        "/v1/auth/forgot-password",
        json!({"email": "nobody@example.com"}),
    )
    .await;
    assert_eq!((known_status, &known), (unknown_status, &unknown));
    assert_eq!(known_status, StatusCode::ACCEPTED);
    let reset_mail = smtp.mail_to(email, 2).await.remove(1);
    assert!(
        reset_mail.contains("Subject: Reset your Kizo password"),
        "{reset_mail}"
    );
    let reset_code = code_in(&reset_mail);
    // A verification code does not reset a password, nor a reset code verify.
    let (status, _) = post(
        &base,
        "/v1/auth/reset-password",
        json!({"token": code, "password": "second password"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, problem) = post(
        &base,
        "/v1/auth/reset-password",
        json!({"token": reset_code, "password": "short"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, _) = post(
        &base,
        "/v1/auth/reset-password",
        json!({"token": reset_code, "password": "second password"}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = post(
        &base,
        "/v1/auth/reset-password",
        json!({"token": reset_code, "password": "third password"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a reset code works once");

    // Every session ended: the access token and the refresh token stop working at once.
    let me = send("GET", format!("{base}/v1/me"), &access, None, None).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(
        &base,
        "/v1/auth/refresh",
        json!({"refresh_token": tokens["refresh_token"]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        login(&base, email, "first password").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&base, email, "second password").await.0,
        StatusCode::OK
    );
    assert!(
        smtp.mail_to("nobody@example.com", 0).await.is_empty(),
        "no mail to an unknown address"
    );
    server.stop().await;
    drop(smtp.child);
    store.clean().await;
}

/// A new verification mail replaces the old one: only the newest link works.
#[tokio::test]
async fn only_the_newest_verification_link_works() {
    let store = TestStore::embedded();
    let (server, base) = common::start(&store.config).await;
    let (access, _) = common::user(&base, "linus@example.com").await;
    let first = code_in(&common::mail_to(&server, "linus@example.com").await);
    let resent = send(
        "POST",
        format!("{base}/v1/auth/verify-email/resend"),
        &access,
        None,
        None,
    )
    .await;
    assert_eq!(resent.status, StatusCode::ACCEPTED, "{}", resent.body);
    let mut second = first.clone();
    for _ in 0..200 {
        second = code_in(&common::mail_to(&server, "linus@example.com").await);
        if second != first {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_ne!(first, second);
    let (status, _) = post(&base, "/v1/auth/verify-email", json!({"token": first})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(&base, "/v1/auth/verify-email", json!({"token": second})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    server.stop().await;
}
