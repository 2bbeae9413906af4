//! Users, sessions and refresh tokens, on both stores.

#[macro_use]
mod common;

use common::TestStore;
use kizo_engine::{Clock, SystemClock};
use kizo_persistence::users::{EmailPurpose, Mail, Refresh, Reset, User, UserError, UserStore};

/// The time as the store stamps it (its clock is the system's unless told otherwise).
fn now_ms() -> i64 {
    SystemClock.now_ms() as i64
}

on_both_backends!(
    mail_tokens_work_once_before_they_expire_and_mail_waits_in_the_outbox,
    emails_are_unique,
    refresh_tokens_rotate_once_and_reuse_ends_the_session,
    notes_are_found_by_transfer_and_request,
    kept_answers_are_listed_by_scope,
    expired_tokens_and_dead_sessions_are_pruned,
    avatars_are_set_replaced_found_by_digest_and_removed
);

fn user(id: &str, email: &str) -> User {
    User {
        id: id.into(),
        email: email.into(),
        password_hash: "$argon2id$...".into(),
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        wallet_id: "12345".into(),
        created_at: now_ms(),
        email_verified_at: None,
        avatar: None,
    }
}

async fn emails_are_unique(store: TestStore) {
    let users = UserStore::open(&store.config).await.unwrap();
    users
        .create_user(&user("u1", "ada@example.com"))
        .await
        .unwrap();
    assert_eq!(
        users.create_user(&user("u2", "ada@example.com")).await,
        Err(UserError::EmailTaken)
    );
    let found = users
        .user_by_email("ada@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, "u1");
    users.update_names("u1", "Augusta", "King").await.unwrap();
    let found = users.user_by_id("u1").await.unwrap().unwrap();
    assert_eq!(
        (found.first_name.as_str(), found.last_name.as_str()),
        ("Augusta", "King")
    );
    assert!(users.user_by_id("nobody").await.unwrap().is_none());
}

async fn refresh_tokens_rotate_once_and_reuse_ends_the_session(store: TestStore) {
    let users = UserStore::open(&store.config).await.unwrap();
    users
        .create_user(&user("u1", "ada@example.com"))
        .await
        .unwrap();
    let later = now_ms() + 60_000;
    users
        .create_session("s1", "u1", b"first", later)
        .await
        .unwrap();
    assert!(users.session_active("s1").await.unwrap());

    let rotated = users
        .rotate_refresh(b"first", b"second", later)
        .await
        .unwrap();
    assert_eq!(
        rotated,
        Refresh::Rotated {
            session_id: "s1".into(),
            user_id: "u1".into()
        }
    );
    assert_eq!(
        users.rotate_refresh(b"unknown", b"x", later).await.unwrap(),
        Refresh::Invalid
    );

    // Concurrent refreshes with one token: exactly one wins.
    let (a, b) = tokio::join!(
        users.rotate_refresh(b"second", b"third-a", later),
        users.rotate_refresh(b"second", b"third-b", later)
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    let wins = outcomes
        .iter()
        .filter(|o| matches!(o, Refresh::Rotated { .. }))
        .count();
    assert_eq!(wins, 1, "{outcomes:?}");
    // The loser presented a spent token: the session is over, for everyone.
    assert!(
        outcomes.contains(&Refresh::Reused {
            session_id: "s1".into()
        }),
        "{outcomes:?}"
    );
    assert!(!users.session_active("s1").await.unwrap());
    for token in [&b"third-a"[..], &b"third-b"[..]] {
        assert_eq!(
            users.rotate_refresh(token, b"x", later).await.unwrap(),
            Refresh::Invalid
        );
    }

    // An expired token is refused; logout ends a session.
    users
        .create_session("s2", "u1", b"old", now_ms() - 1)
        .await
        .unwrap();
    assert_eq!(
        users.rotate_refresh(b"old", b"x", later).await.unwrap(),
        Refresh::Invalid
    );
    users.revoke_session("s2").await.unwrap();
    assert!(!users.session_active("s2").await.unwrap());
    let revoked: Vec<String> = users
        .revoked_since(now_ms() - 60_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(revoked.contains(&"s1".to_string()) && revoked.contains(&"s2".to_string()));
    assert!(users
        .revoked_since(now_ms() + 60_000)
        .await
        .unwrap()
        .is_empty());
}

async fn notes_are_found_by_transfer_and_request(store: TestStore) {
    let users = UserStore::open(&store.config).await.unwrap();
    let big = u128::MAX - 7;
    users.put_note(big, 1, "rent for May").await.unwrap();
    // Another request's note for the same transfer id stays apart; a second write of the
    // same pair keeps the first.
    users.put_note(big, 2, "not this one").await.unwrap();
    users.put_note(big, 1, "overwritten?").await.unwrap();
    users.put_note(5, 9, "lunch 🍜").await.unwrap();
    let found = users.notes(&[(big, 1), (5, 9), (6, 1)]).await.unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[&(big, 1)], "rent for May");
    assert_eq!(found[&(5, 9)], "lunch 🍜");
    assert!(users.notes(&[]).await.unwrap().is_empty());
    // A refused request's note is forgotten; the other request's stays.
    users.delete_note(big, 1).await.unwrap();
    let found = users.notes(&[(big, 1), (big, 2)]).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[&(big, 2)], "not this one");
}

async fn kept_answers_are_listed_by_scope(store: TestStore) {
    use kizo_persistence::keys::KeyStore;
    let keys = KeyStore::open(&store.config).await.unwrap();
    keys.keep("a", "k1", b"fp1", 422, b"{\"code\":\"x\"}")
        .await
        .unwrap();
    // The first answer stays.
    keys.keep("a", "k1", b"fp2", 201, b"{}").await.unwrap();
    keys.keep("b", "k2", b"fp", 422, b"{}").await.unwrap();
    let kept = keys.kept("a", 60_000, 10).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (
            kept[0].key.as_str(),
            kept[0].fingerprint.as_slice(),
            kept[0].status
        ),
        ("k1", &b"fp1"[..], 422)
    );
    assert_eq!(kept[0].body, b"{\"code\":\"x\"}");
    assert!(keys.kept("a", 60_000, 0).await.unwrap().is_empty());
}

async fn expired_tokens_and_dead_sessions_are_pruned(store: TestStore) {
    let users = UserStore::open(&store.config).await.unwrap();
    users
        .create_user(&user("u1", "ada@example.com"))
        .await
        .unwrap();
    let now = now_ms();
    // s1: its token expired; s2: revoked; s3: alive.
    users
        .create_session("s1", "u1", b"t1", now - 1)
        .await
        .unwrap();
    users
        .create_session("s2", "u1", b"t2", now + 60_000)
        .await
        .unwrap();
    users.revoke_session("s2").await.unwrap();
    users
        .create_session("s3", "u1", b"t3", now + 60_000)
        .await
        .unwrap();

    // Nothing is old enough yet.
    assert_eq!(users.prune(now - 60_000).await.unwrap(), 0);
    // Later: s1's token and then s1 (no token left), s2 and its token; s3 stays whole.
    assert_eq!(users.prune(now + 1_000).await.unwrap(), 4);
    assert!(!users.session_active("s1").await.unwrap());
    assert!(!users.session_active("s2").await.unwrap());
    assert!(users.session_active("s3").await.unwrap());
    assert_eq!(
        users
            .rotate_refresh(b"t2", b"t2b", now + 60_000)
            .await
            .unwrap(),
        Refresh::Invalid
    );
    assert!(matches!(
        users
            .rotate_refresh(b"t3", b"t4", now + 60_000)
            .await
            .unwrap(),
        Refresh::Rotated { .. }
    ));
}

async fn mail_tokens_work_once_before_they_expire_and_mail_waits_in_the_outbox(store: TestStore) {
    let clock = std::sync::Arc::new(kizo_testkit::ManualClock(1_000_000_000_000_000.into()));
    let users = UserStore::open(&store.config)
        .await
        .unwrap()
        .with_clock(clock.clone());
    users
        .create_user(&user("u1", "ada@example.com"))
        .await
        .unwrap();
    let mail = |subject: &str| Mail {
        recipient: "ada@example.com".into(),
        subject: subject.into(),
        body: "the code".into(),
    };
    let now = users.now_ms();
    users
        .issue_email_token(
            "u1",
            EmailPurpose::Verify,
            b"old",
            now + 1_000,
            &mail("first"),
        )
        .await
        .unwrap();
    users
        .issue_email_token(
            "u1",
            EmailPurpose::Verify,
            b"new",
            now + 1_000,
            &mail("second"),
        )
        .await
        .unwrap();
    // The outbox holds both mails, due now, oldest first.
    let due = users.due_mail(now, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|m| m.subject.as_str()).collect::<Vec<_>>(),
        ["first", "second"]
    );
    users.mail_attempted(due[0].id, Ok(())).await.unwrap();
    users
        .mail_attempted(due[1].id, Err(Some(now + 500)))
        .await
        .unwrap();
    assert!(users.due_mail(now, 10).await.unwrap().is_empty());
    let retried = users.due_mail(now + 500, 10).await.unwrap();
    assert_eq!((retried.len(), retried[0].attempts), (1, 1));
    users
        .mail_attempted(retried[0].id, Err(None))
        .await
        .unwrap();
    assert!(users.due_mail(now + 10_000, 10).await.unwrap().is_empty());

    // Only the newest token works, once; a reset token is not a verification token.
    assert_eq!(users.verify_email(b"old").await.unwrap(), None);
    assert_eq!(
        users.verify_email(b"new").await.unwrap().as_deref(),
        Some("u1")
    );
    assert_eq!(users.verify_email(b"new").await.unwrap(), None);
    assert!(users
        .user_by_id("u1")
        .await
        .unwrap()
        .unwrap()
        .email_verified_at
        .is_some());

    users
        .create_session("s1", "u1", b"r1", now + 60_000)
        .await
        .unwrap();
    users
        .create_session("s2", "u1", b"r2", now + 60_000)
        .await
        .unwrap();
    users
        .issue_email_token(
            "u1",
            EmailPurpose::ResetPassword,
            b"late",
            now + 1_000,
            &mail("reset"),
        )
        .await
        .unwrap();
    // Past its expiry it does nothing.
    clock.advance(1_001 * 1_000_000);
    assert_eq!(
        users.reset_password(b"late", "new hash").await.unwrap(),
        Reset::Invalid
    );
    assert_eq!(users.verify_email(b"late").await.unwrap(), None);
    let now = users.now_ms();
    users
        .issue_email_token(
            "u1",
            EmailPurpose::ResetPassword,
            b"reset",
            now + 1_000,
            &mail("reset"),
        )
        .await
        .unwrap();
    assert_eq!(users.verify_email(b"reset").await.unwrap(), None);
    match users.reset_password(b"reset", "new hash").await.unwrap() {
        Reset::Done {
            mut revoked_sessions,
        } => {
            revoked_sessions.sort();
            assert_eq!(revoked_sessions, ["s1", "s2"]);
        }
        Reset::Invalid => panic!("a good reset token was refused"),
    }
    assert_eq!(
        users.reset_password(b"reset", "newer hash").await.unwrap(),
        Reset::Invalid
    );
    assert_eq!(
        users.user_by_id("u1").await.unwrap().unwrap().password_hash,
        "new hash"
    );
    assert!(!users.session_active("s1").await.unwrap());
    assert!(!users.session_active("s2").await.unwrap());
}

async fn avatars_are_set_replaced_found_by_digest_and_removed(store: TestStore) {
    let users = UserStore::open(&store.config).await.unwrap();
    users
        .create_user(&user("a1", "ava@example.com"))
        .await
        .unwrap();
    users
        .create_user(&user("a2", "bea@example.com"))
        .await
        .unwrap();
    let digest = |n: u8| format!("{n:064x}");
    assert_eq!(users.user_by_id("a1").await.unwrap().unwrap().avatar, None);
    users.set_avatar("a1", &digest(1), b"first").await.unwrap();
    users.set_avatar("a1", &digest(2), b"second").await.unwrap();
    // The same picture for two users: one digest, found once.
    users.set_avatar("a2", &digest(2), b"second").await.unwrap();
    let ava = users
        .user_by_email("ava@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ava.avatar, Some(digest(2)));
    assert_eq!(users.avatar(&digest(1)).await.unwrap(), None, "replaced");
    assert_eq!(
        users.avatar(&digest(2)).await.unwrap().as_deref(),
        Some(&b"second"[..])
    );
    assert!(users.delete_avatar("a1").await.unwrap());
    assert!(
        !users.delete_avatar("a1").await.unwrap(),
        "nothing left to remove"
    );
    assert_eq!(users.user_by_id("a1").await.unwrap().unwrap().avatar, None);
    assert_eq!(
        users.user_by_id("a2").await.unwrap().unwrap().avatar,
        Some(digest(2))
    );
    assert!(
        users.avatar(&digest(2)).await.unwrap().is_some(),
        "still a2's"
    );
    assert!(users.delete_avatar("a2").await.unwrap());
    assert_eq!(users.avatar(&digest(2)).await.unwrap(), None);
    store.clean().await;
}
