//! Users of the wallet API, their sessions, and their refresh tokens (stored hashed, each
//! usable once). In PostgreSQL beside the log; in the embedded store in `users.db`.

use std::sync::Arc;

use kizo_engine::{Clock, SystemClock};

use crate::store::read_error;
use crate::store::{dialect, on_pool, open_pools, Pools, StoreConfig, StoreError};

/// Its pools, and the clock it stamps rows with (the server's one clock).
#[derive(Clone)]
pub struct UserStore {
    pools: Pools,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for UserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStore")
            .field("pools", &self.pools)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub first_name: String,
    pub last_name: String,
    /// The wallet's ledger account, a decimal u128.
    pub wallet_id: String,
    pub created_at: i64,
    /// When the user proved they read mail sent to `email`; `None` until then.
    pub email_verified_at: Option<i64>,
    /// Their avatar's digest (its name in its URL), if they have one. Read, never written,
    /// with the user: [`UserStore::set_avatar`] sets it.
    #[sqlx(default)]
    pub avatar: Option<String>,
}

/// A user's columns and their avatar's digest, for `SELECT {USER_ROW} WHERE ...`.
macro_rules! user_row {
    ($where:literal) => {
        concat!(
            "SELECT users.*, avatars.digest AS avatar FROM users
             LEFT JOIN avatars ON avatars.user_id = users.id ",
            $where
        )
    };
}

/// What a token sent by email is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmailPurpose {
    /// Proves the address is the user's.
    Verify,
    /// Lets the user choose a new password.
    ResetPassword,
}

impl EmailPurpose {
    pub fn code(self) -> &'static str {
        match self {
            EmailPurpose::Verify => "verify",
            EmailPurpose::ResetPassword => "reset_password",
        }
    }
}

/// A mail to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    pub recipient: String,
    pub subject: String,
    pub body: String,
}

/// A mail of the outbox, due to be sent.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxMail {
    pub id: i64,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub attempts: i32,
}

/// What [`UserStore::reset_password`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reset {
    /// The password is changed, the email counts as verified, and these sessions (every one
    /// the user had) are revoked.
    Done { revoked_sessions: Vec<String> },
    /// Unknown, used or expired token: nothing changed.
    Invalid,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("a user with this email exists")]
    EmailTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What presenting a refresh token did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// The token was good and is now spent: issue a new pair for this session and user.
    Rotated { session_id: String, user_id: String },
    /// Unknown, expired, or its session is revoked.
    Invalid,
    /// Spent before: the whole session is revoked now.
    Reused { session_id: String },
}

const INSERT_REFRESH: &str =
    "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)";

impl UserStore {
    pub async fn open(config: &StoreConfig) -> Result<UserStore, StoreError> {
        let migrations = sqlx::migrate!("./migrations/sqlite_users");
        Ok(UserStore {
            pools: open_pools(config, 4, "users.db", &migrations).await?,
            clock: Arc::new(SystemClock),
        })
    }

    /// The same store, stamping rows with `clock`.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    /// Milliseconds since 1970 on the store's clock, as its rows hold time.
    pub fn now_ms(&self) -> i64 {
        crate::store::row_ms(self.clock.as_ref())
    }

    fn sql(&self, sql: &'static str) -> std::borrow::Cow<'static, str> {
        dialect(sql, matches!(self.pools, Pools::Postgres(_)))
    }

    pub async fn create_user(&self, user: &User) -> Result<(), UserError> {
        let sql = self.sql(
            "INSERT INTO users (id, email, password_hash, first_name, last_name, wallet_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        );
        let result = on_pool!(Pools, &self.pools, pool => sqlx::query(&sql)
            .bind(&user.id)
            .bind(&user.email)
            .bind(&user.password_hash)
            .bind(&user.first_name)
            .bind(&user.last_name)
            .bind(&user.wallet_id)
            .bind(user.created_at)
            .execute(pool)
            .await
            .map(|_| ()));
        result.map_err(|error| match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => UserError::EmailTaken,
            _ => UserError::Store(read_error(error)),
        })
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let sql = self.sql(user_row!("WHERE users.email = $1"));
        on_pool!(Pools, &self.pools, pool => sqlx::query_as::<_, User>(&sql).bind(email).fetch_optional(pool).await)
            .map_err(read_error)
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        let sql = self.sql(user_row!("WHERE users.id = $1"));
        on_pool!(Pools, &self.pools, pool => sqlx::query_as::<_, User>(&sql).bind(id).fetch_optional(pool).await)
            .map_err(read_error)
    }

    /// Users with a verified email whose first or last name starts with `prefix`
    /// (case-insensitive), or whose email is exactly `prefix` (lowercased), at most `limit`, by
    /// last then first name.
    pub async fn search(&self, prefix: &str, limit: u32) -> Result<Vec<User>, StoreError> {
        let escaped: String = prefix
            .to_lowercase()
            .chars()
            .flat_map(|c| match c {
                '%' | '_' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        let pattern = format!("{escaped}%");
        let sql = self.sql(user_row!(
            "WHERE users.email_verified_at IS NOT NULL
               AND (lower(users.first_name) LIKE $1 ESCAPE '\\'
                    OR lower(users.last_name) LIKE $1 ESCAPE '\\' OR users.email = $3)
             ORDER BY users.last_name, users.first_name, users.id LIMIT $2"
        ));
        on_pool!(Pools, &self.pools, pool => sqlx::query_as::<_, User>(&sql)
            .bind(&pattern)
            .bind(i64::from(limit))
            .bind(prefix.to_lowercase())
            .fetch_all(pool)
            .await)
        .map_err(read_error)
    }

    /// Sets the user's avatar (made by `kizo-avatar`), replacing any other.
    pub async fn set_avatar(
        &self,
        user_id: &str,
        digest: &str,
        png: &[u8],
    ) -> Result<(), StoreError> {
        let sql = self.sql(
            "INSERT INTO avatars (user_id, digest, image, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE
             SET digest = excluded.digest, image = excluded.image, updated_at = excluded.updated_at",
        );
        let now = self.now_ms();
        on_pool!(Pools, &self.pools, pool => sqlx::query(&sql)
            .bind(user_id)
            .bind(digest)
            .bind(png)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(read_error)
    }

    /// Removes the user's avatar; whether they had one.
    pub async fn delete_avatar(&self, user_id: &str) -> Result<bool, StoreError> {
        let sql = self.sql("DELETE FROM avatars WHERE user_id = $1");
        on_pool!(Pools, &self.pools, pool => sqlx::query(&sql)
            .bind(user_id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected() > 0))
        .map_err(read_error)
    }

    /// The avatar named `digest` (a PNG), if a user has it.
    pub async fn avatar(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let sql = self.sql("SELECT image FROM avatars WHERE digest = $1 LIMIT 1");
        on_pool!(Pools, &self.pools, pool => sqlx::query_scalar::<_, Vec<u8>>(&sql)
            .bind(digest)
            .fetch_optional(pool)
            .await)
        .map_err(read_error)
    }

    /// Keeps a token (hashed) sent by email for `purpose`, and the mail that carries it, in one
    /// transaction: the mail goes out only if the token is kept. Earlier unused tokens of the
    /// user for the same purpose stop working: only the latest mail's link does.
    pub async fn issue_email_token(
        &self,
        user_id: &str,
        purpose: EmailPurpose,
        token_hash: &[u8],
        expires_at: i64,
        mail: &Mail,
    ) -> Result<(), StoreError> {
        let retire = self.sql(
            "UPDATE email_tokens SET used_at = $3 WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
        );
        let insert = self.sql(
            "INSERT INTO email_tokens (token_hash, user_id, purpose, expires_at) VALUES ($1, $2, $3, $4)",
        );
        let enqueue = self.sql(
            "INSERT INTO outbox (recipient, subject, body, created_at, next_at) VALUES ($1, $2, $3, $4, $4)",
        );
        let now = self.now_ms();
        on_pool!(Pools, &self.pools, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(&retire).bind(user_id).bind(purpose.code()).bind(now).execute(&mut *tx).await?;
            sqlx::query(&insert)
                .bind(token_hash)
                .bind(user_id)
                .bind(purpose.code())
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&enqueue)
                .bind(&mail.recipient)
                .bind(&mail.subject)
                .bind(&mail.body)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }.await)
        .map_err(read_error)
    }

    /// Spends a verification token: the user it was sent to now has a verified email.
    /// `None` for a token unknown, used, expired or of another purpose.
    pub async fn verify_email(&self, token_hash: &[u8]) -> Result<Option<String>, StoreError> {
        let spend = self.sql(
            "UPDATE email_tokens SET used_at = $3
             WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3
             RETURNING user_id",
        );
        let verify = self.sql(
            "UPDATE users SET email_verified_at = $2 WHERE id = $1 AND email_verified_at IS NULL",
        );
        let now = self.now_ms();
        on_pool!(Pools, &self.pools, pool => async {
            let mut tx = pool.begin().await?;
            let user: Option<(String,)> = sqlx::query_as(&spend)
                .bind(token_hash)
                .bind(EmailPurpose::Verify.code())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some((user_id,)) = &user {
                sqlx::query(&verify).bind(user_id).bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(user.map(|(id,)| id))
        }.await)
        .map_err(read_error)
    }

    /// Spends a password-reset token: sets the new password (given hashed), counts the email
    /// as verified (the mail was read), and revokes every session of the user, in one
    /// transaction.
    pub async fn reset_password(
        &self,
        token_hash: &[u8],
        password_hash: &str,
    ) -> Result<Reset, StoreError> {
        let spend = self.sql(
            "UPDATE email_tokens SET used_at = $3
             WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3
             RETURNING user_id",
        );
        let update = self.sql(
            "UPDATE users SET password_hash = $2, email_verified_at = COALESCE(email_verified_at, $3) WHERE id = $1",
        );
        let revoke = self.sql(
            "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL RETURNING id",
        );
        let now = self.now_ms();
        on_pool!(Pools, &self.pools, pool => async {
            let mut tx = pool.begin().await?;
            let user: Option<(String,)> = sqlx::query_as(&spend)
                .bind(token_hash)
                .bind(EmailPurpose::ResetPassword.code())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((user_id,)) = user else {
                return Ok(Reset::Invalid);
            };
            sqlx::query(&update).bind(&user_id).bind(password_hash).bind(now).execute(&mut *tx).await?;
            let revoked: Vec<(String,)> = sqlx::query_as(&revoke).bind(&user_id).bind(now).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Reset::Done {
                revoked_sessions: revoked.into_iter().map(|(id,)| id).collect(),
            })
        }.await)
        .map_err(read_error)
    }

    /// Mail due to be sent by `now_ms`, oldest first, at most `limit`.
    pub async fn due_mail(&self, now_ms: i64, limit: u32) -> Result<Vec<OutboxMail>, StoreError> {
        let sql = self.sql(
            "SELECT id, recipient, subject, body, attempts FROM outbox
             WHERE sent_at IS NULL AND failed_at IS NULL AND next_at <= $1
             ORDER BY next_at, id LIMIT $2",
        );
        on_pool!(Pools, &self.pools, pool => sqlx::query_as::<_, OutboxMail>(&sql)
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)
        .map_err(read_error)
    }

    /// Records a delivery: `Ok` sent; otherwise retried at `retry_at`, or, with `None`, given
    /// up on.
    pub async fn mail_attempted(
        &self,
        id: i64,
        outcome: Result<(), Option<i64>>,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        let (sql, at) = match outcome {
            Ok(()) => (
                "UPDATE outbox SET sent_at = $2, attempts = attempts + 1 WHERE id = $1",
                now,
            ),
            Err(Some(retry_at)) => (
                "UPDATE outbox SET next_at = $2, attempts = attempts + 1 WHERE id = $1",
                retry_at,
            ),
            Err(None) => (
                "UPDATE outbox SET failed_at = $2, attempts = attempts + 1 WHERE id = $1",
                now,
            ),
        };
        let sql = self.sql(sql);
        on_pool!(Pools, &self.pools, pool => sqlx::query(&sql).bind(id).bind(at).execute(pool).await.map(|_| ()))
            .map_err(read_error)
    }

    pub async fn update_names(
        &self,
        id: &str,
        first_name: &str,
        last_name: &str,
    ) -> Result<(), StoreError> {
        let sql = self.sql("UPDATE users SET first_name = $2, last_name = $3 WHERE id = $1");
        on_pool!(Pools, &self.pools, pool => sqlx::query(&sql)
            .bind(id)
            .bind(first_name)
            .bind(last_name)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(read_error)
    }

    /// A new session for `user_id`, with its first refresh token (given hashed).
    pub async fn create_session(
        &self,
        session_id: &str,
        user_id: &str,
        refresh_hash: &[u8],
        refresh_expires_at: i64,
    ) -> Result<(), StoreError> {
        let session =
            self.sql("INSERT INTO sessions (id, user_id, created_at) VALUES ($1, $2, $3)");
        let refresh = self.sql(INSERT_REFRESH);
        on_pool!(Pools, &self.pools, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(&session)
                .bind(session_id)
                .bind(user_id)
                .bind(self.now_ms())
                .execute(&mut *tx)
                .await?;
            sqlx::query(&refresh)
                .bind(refresh_hash)
                .bind(session_id)
                .bind(refresh_expires_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }.await)
        .map_err(read_error)
    }

    /// Spends `presented` (hashed) and, if it was good, records `next` (hashed) for the same
    /// session, in one transaction: of two concurrent refreshes with one token, one wins.
    pub async fn rotate_refresh(
        &self,
        presented: &[u8],
        next: &[u8],
        next_expires_at: i64,
    ) -> Result<Refresh, StoreError> {
        let now = self.now_ms();
        let spend = self.sql(
            "UPDATE refresh_tokens SET used_at = $2
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2
             RETURNING session_id",
        );
        let find = self.sql(
            "SELECT r.session_id, r.used_at, s.user_id, s.revoked_at FROM refresh_tokens r
             JOIN sessions s ON s.id = r.session_id WHERE r.token_hash = $1",
        );
        let revoke =
            self.sql("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL");
        let insert = self.sql(INSERT_REFRESH);
        on_pool!(Pools, &self.pools, pool => async {
            let mut tx = pool.begin().await?;
            let spent: Option<String> = sqlx::query_scalar(&spend)
                .bind(presented)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            let row: Option<(String, Option<i64>, String, Option<i64>)> = sqlx::query_as(&find)
                .bind(presented)
                .fetch_optional(&mut *tx)
                .await?;
            let outcome = match (spent, row) {
                (Some(_), Some((session_id, _, user_id, None))) => {
                    sqlx::query(&insert)
                        .bind(next)
                        .bind(&session_id)
                        .bind(next_expires_at)
                        .execute(&mut *tx)
                        .await?;
                    Refresh::Rotated { session_id, user_id }
                }
                (None, Some((session_id, Some(_), _, None))) => {
                    // A spent token presented again: someone holds a copy. End the session.
                    sqlx::query(&revoke).bind(&session_id).bind(now).execute(&mut *tx).await?;
                    Refresh::Reused { session_id }
                }
                _ => Refresh::Invalid,
            };
            tx.commit().await?;
            Ok::<_, sqlx::Error>(outcome)
        }.await)
        .map_err(read_error)
    }

    /// Forgets what can no longer matter: refresh tokens that expired before `before_ms`, and
    /// sessions revoked before it or left without a refresh token (so never to be refreshed
    /// again) and begun before it. Returns how many rows went. Pass a time well past the
    /// longest access token's life: a session's revocation must outlive its access tokens.
    pub async fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        let tokens = self.sql(
            "DELETE FROM refresh_tokens WHERE expires_at < $1
                 OR session_id IN (SELECT id FROM sessions WHERE revoked_at < $1)",
        );
        let sessions = self.sql(
            "DELETE FROM sessions WHERE revoked_at < $1
                 OR (created_at < $1 AND NOT EXISTS
                     (SELECT 1 FROM refresh_tokens r WHERE r.session_id = sessions.id))",
        );
        // Mail tokens past their expiry, and mail sent or given up on, go too.
        let email_tokens = self.sql("DELETE FROM email_tokens WHERE expires_at < $1");
        let outbox = self.sql("DELETE FROM outbox WHERE sent_at < $1 OR failed_at < $1");
        on_pool!(Pools, &self.pools, pool => async {
            let mut tx = pool.begin().await?;
            let tokens = sqlx::query(&tokens).bind(before_ms).execute(&mut *tx).await?;
            let sessions = sqlx::query(&sessions).bind(before_ms).execute(&mut *tx).await?;
            let email_tokens = sqlx::query(&email_tokens).bind(before_ms).execute(&mut *tx).await?;
            let outbox = sqlx::query(&outbox).bind(before_ms).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(
                tokens.rows_affected()
                    + sessions.rows_affected()
                    + email_tokens.rows_affected()
                    + outbox.rows_affected(),
            )
        }.await)
        .map_err(read_error)
    }

    pub async fn revoke_session(&self, session_id: &str) -> Result<(), StoreError> {
        let sql =
            self.sql("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL");
        on_pool!(Pools, &self.pools, pool => sqlx::query(&sql)
            .bind(session_id)
            .bind(self.now_ms())
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(read_error)
    }

    /// Sessions revoked at or after `since_ms`, with when: the access tokens of these may
    /// still be within their lifetime.
    pub async fn revoked_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = self.sql("SELECT id, revoked_at FROM sessions WHERE revoked_at >= $1");
        on_pool!(Pools, &self.pools, pool => sqlx::query_as(&sql).bind(since_ms).fetch_all(pool).await)
            .map_err(read_error)
    }

    /// Keeps the note of the transfer `transfer_id` whose request had `fingerprint`; written
    /// before the transfer is submitted, so that an acknowledged transfer never lacks its note.
    /// On PostgreSQL, the commit does not wait for its own flush: the transfer's log commit,
    /// later on the same server, flushes the server's log past it (its log is one sequence). A
    /// note whose transfer never happened is never shown.
    /// Forgets the note a refused request carried: no transfer will ever show it.
    pub async fn delete_note(
        &self,
        transfer_id: u128,
        fingerprint: u128,
    ) -> Result<(), StoreError> {
        let sql =
            self.sql("DELETE FROM transfer_notes WHERE transfer_id = $1 AND fingerprint = $2");
        on_pool!(Pools, &self.pools, pool => sqlx::query(&sql)
            .bind(transfer_id.to_string())
            .bind(fingerprint.to_string())
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(read_error)
    }

    pub async fn put_note(
        &self,
        transfer_id: u128,
        fingerprint: u128,
        note: &str,
    ) -> Result<(), StoreError> {
        let sql = self.sql(
            "INSERT INTO transfer_notes (transfer_id, fingerprint, note) VALUES ($1, $2, $3)
             ON CONFLICT (transfer_id, fingerprint) DO NOTHING",
        );
        let (id, fingerprint) = (transfer_id.to_string(), fingerprint.to_string());
        match &self.pools {
            Pools::Postgres(pool) => {
                async {
                    let mut tx = pool.begin().await?;
                    sqlx::query("SET LOCAL synchronous_commit TO off")
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(&sql)
                        .bind(&id)
                        .bind(&fingerprint)
                        .bind(note)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await
                }
                .await
            }
            Pools::Embedded(pool) => sqlx::query(&sql)
                .bind(&id)
                .bind(&fingerprint)
                .bind(note)
                .execute(pool)
                .await
                .map(|_| ()),
        }
        .map_err(read_error)
    }

    /// The notes of these (transfer id, fingerprint) pairs, where there are any.
    pub async fn notes(
        &self,
        of: &[(u128, u128)],
    ) -> Result<std::collections::HashMap<(u128, u128), String>, StoreError> {
        let mut found = std::collections::HashMap::new();
        if of.is_empty() {
            return Ok(found);
        }
        // A page of history is at most a thousand transfers: one query.
        let sql = self.sql_in(
            "SELECT transfer_id, fingerprint, note FROM transfer_notes WHERE transfer_id IN",
            of.len(),
        );
        let rows: Vec<(String, String, String)> = on_pool!(Pools, &self.pools, pool => {
            let mut query = sqlx::query_as(&sql);
            for (id, _) in of {
                query = query.bind(id.to_string());
            }
            query.fetch_all(pool).await
        })
        .map_err(read_error)?;
        for (id, fingerprint, note) in rows {
            if let (Ok(id), Ok(fingerprint)) = (id.parse(), fingerprint.parse()) {
                if of.contains(&(id, fingerprint)) {
                    found.insert((id, fingerprint), note);
                }
            }
        }
        Ok(found)
    }

    /// The names ("first last") of the users whose wallets these are, where there are any.
    pub async fn names_of_wallets(
        &self,
        wallets: &[u128],
    ) -> Result<std::collections::HashMap<u128, String>, StoreError> {
        let mut found = std::collections::HashMap::new();
        if wallets.is_empty() {
            return Ok(found);
        }
        let sql = self.sql_in(
            "SELECT wallet_id, first_name, last_name FROM users WHERE wallet_id IN",
            wallets.len(),
        );
        let rows: Vec<(String, String, String)> = on_pool!(Pools, &self.pools, pool => {
            let mut query = sqlx::query_as(&sql);
            for wallet in wallets {
                query = query.bind(wallet.to_string());
            }
            query.fetch_all(pool).await
        })
        .map_err(read_error)?;
        for (wallet, first, last) in rows {
            if let Ok(wallet) = wallet.parse() {
                found.insert(wallet, format!("{first} {last}"));
            }
        }
        Ok(found)
    }

    /// `head` followed by a list of `count` placeholders in this store's dialect:
    /// `... IN ($1, $2)` or `... IN (?, ?)`.
    fn sql_in(&self, head: &str, count: usize) -> String {
        let marks: Vec<String> = match &self.pools {
            Pools::Postgres(_) => (1..=count).map(|i| format!("${i}")).collect(),
            Pools::Embedded(_) => vec!["?".to_string(); count],
        };
        format!("{head} ({})", marks.join(", "))
    }

    /// Whether the session exists and is not revoked.
    pub async fn session_active(&self, session_id: &str) -> Result<bool, StoreError> {
        let sql = self.sql("SELECT count(*) FROM sessions WHERE id = $1 AND revoked_at IS NULL");
        let count: i64 =
            on_pool!(Pools, &self.pools, pool => sqlx::query_scalar(&sql).bind(session_id).fetch_one(pool).await)
                .map_err(read_error)?;
        Ok(count > 0)
    }
}
