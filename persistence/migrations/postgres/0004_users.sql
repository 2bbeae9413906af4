-- Users of the wallet API, their sessions and refresh tokens.
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    -- Lowercased; unique.
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    -- The ledger account of the user's wallet (a decimal u128).
    wallet_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- Refresh tokens, stored hashed; each works once.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash BYTEA PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id),
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
