-- See the PostgreSQL migration of the same name.
CREATE INDEX IF NOT EXISTS users_by_wallet ON users (wallet_id);
