-- Read models, fed from the log by the projector (never written on the request path).
-- SQLite has no 128-bit integer: ids are 32 lowercase hex digits, and amounts and balances are
-- exact decimal text (sum them in the application, not in SQL).
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    ledger INTEGER NOT NULL,
    code INTEGER NOT NULL,
    flags INTEGER NOT NULL,
    debits_pending TEXT NOT NULL,
    debits_posted TEXT NOT NULL,
    credits_pending TEXT NOT NULL,
    credits_posted TEXT NOT NULL,
    user_data_128 TEXT NOT NULL,
    user_data_64 TEXT NOT NULL,
    user_data_32 INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    lsn INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS transfers (
    id TEXT PRIMARY KEY,
    debit_account_id TEXT NOT NULL,
    credit_account_id TEXT NOT NULL,
    amount TEXT NOT NULL,
    pending_id TEXT,
    user_data_128 TEXT NOT NULL,
    user_data_64 TEXT NOT NULL,
    user_data_32 INTEGER NOT NULL,
    timeout INTEGER NOT NULL,
    ledger INTEGER NOT NULL,
    code INTEGER NOT NULL,
    flags INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    status TEXT NOT NULL,
    lsn INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS transfers_by_debit ON transfers (debit_account_id, timestamp DESC);
CREATE INDEX IF NOT EXISTS transfers_by_credit ON transfers (credit_account_id, timestamp DESC);

CREATE TABLE IF NOT EXISTS projector_progress (
    name TEXT PRIMARY KEY,
    lsn INTEGER NOT NULL
);
