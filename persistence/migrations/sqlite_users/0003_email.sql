-- See the PostgreSQL migration of the same name.
ALTER TABLE users ADD COLUMN email_verified_at INTEGER;

CREATE TABLE IF NOT EXISTS email_tokens (
    token_hash BLOB PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    purpose TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE INDEX IF NOT EXISTS email_tokens_by_user ON email_tokens (user_id, purpose);

CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER NOT NULL,
    sent_at INTEGER,
    failed_at INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_at)
    WHERE sent_at IS NULL AND failed_at IS NULL;

-- A password reset revokes every session of its user.
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id);
