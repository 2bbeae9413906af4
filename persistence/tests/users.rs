//! Users, sessions and refresh tokens, on both stores.

mod common;

use common::TestStore;
use kizo_persistence::users::{now_ms, Refresh, User, UserError, UserStore};

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::TestStore::postgres(stringify!($test))).await;
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::TestStore::embedded()).await;
                }
            )*
        }
    };
}

on_both_backends!(
    emails_are_unique,
    refresh_tokens_rotate_once_and_reuse_ends_the_session
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
    assert!(outcomes.contains(&Refresh::Reused), "{outcomes:?}");
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
}
