-- Email ownership: when a user proved they read their mail (NULL: not yet; such a user can
-- sign in but can neither be paid by email nor be found in search).
ALTER TABLE users ADD COLUMN IF NOT EXISTS email_verified_at BIGINT;

-- Tokens sent by email (verification, password reset): stored hashed, used once, short-lived.
CREATE TABLE IF NOT EXISTS email_tokens (
    token_hash BYTEA PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    purpose TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX IF NOT EXISTS email_tokens_by_user ON email_tokens (user_id, purpose);

-- Mail to send, written in the transaction of what it tells; a sender task delivers it.
CREATE TABLE IF NOT EXISTS outbox (
    id BIGSERIAL PRIMARY KEY,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    sent_at BIGINT,
    -- Given up on after its attempts (the reason is logged).
    failed_at BIGINT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_at)
    WHERE sent_at IS NULL AND failed_at IS NULL;

-- A password reset revokes every session of its user.
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id);
