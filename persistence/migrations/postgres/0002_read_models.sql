-- Read models, fed from the log by the projector (never written on the request path).
-- Ids are the ledger's u128 as UUIDs; amounts are exact NUMERIC(39) (u128 fits).
CREATE TABLE IF NOT EXISTS accounts (
    id UUID PRIMARY KEY,
    ledger BIGINT NOT NULL,
    code INTEGER NOT NULL,
    flags INTEGER NOT NULL,
    debits_pending NUMERIC(39, 0) NOT NULL,
    debits_posted NUMERIC(39, 0) NOT NULL,
    credits_pending NUMERIC(39, 0) NOT NULL,
    credits_posted NUMERIC(39, 0) NOT NULL,
    user_data_128 NUMERIC(39, 0) NOT NULL,
    user_data_64 NUMERIC(20, 0) NOT NULL,
    user_data_32 BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    lsn BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS transfers (
    id UUID PRIMARY KEY,
    debit_account_id UUID NOT NULL,
    credit_account_id UUID NOT NULL,
    amount NUMERIC(39, 0) NOT NULL,
    pending_id UUID,
    user_data_128 NUMERIC(39, 0) NOT NULL,
    user_data_64 NUMERIC(20, 0) NOT NULL,
    user_data_32 BIGINT NOT NULL,
    timeout BIGINT NOT NULL,
    ledger BIGINT NOT NULL,
    code INTEGER NOT NULL,
    flags INTEGER NOT NULL,
    timestamp BIGINT NOT NULL,
    -- posted | pending | voided | expired (a pending transfer's status follows its resolution)
    status TEXT NOT NULL,
    lsn BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS transfers_by_debit ON transfers (debit_account_id, timestamp DESC);
CREATE INDEX IF NOT EXISTS transfers_by_credit ON transfers (credit_account_id, timestamp DESC);

-- How far each projector got; written in the same transaction as what it projected.
CREATE TABLE IF NOT EXISTS projector_progress (
    name TEXT PRIMARY KEY,
    lsn BIGINT NOT NULL
);
