-- Users by their wallet: the names on a page of transfers, in one query.
CREATE INDEX IF NOT EXISTS users_by_wallet ON users (wallet_id);
