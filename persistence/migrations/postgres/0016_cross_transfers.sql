-- Transfers between accounts of two partitions (issue 28), each written before its first leg
-- and after every leg's answer, so that a node that takes over the source partition resumes
-- it where it stood (the legs' own ids make a repeated leg harmless).
CREATE TABLE IF NOT EXISTS cross_transfers (
    -- The transfer's id, 32 hex digits.
    id TEXT PRIMARY KEY,
    source INTEGER NOT NULL,
    destination INTEGER NOT NULL,
    -- The transfer as asked for: ids and the amount as decimal u128s.
    debit_account_id TEXT NOT NULL,
    credit_account_id TEXT NOT NULL,
    amount TEXT NOT NULL,
    ledger BIGINT NOT NULL,
    code INTEGER NOT NULL,
    user_data_128 TEXT NOT NULL,
    user_data_64 TEXT NOT NULL,
    user_data_32 BIGINT NOT NULL,
    -- kizo_cluster::legs::Phase::code.
    phase TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
-- The unfinished ones of a partition, read when a node takes the partition over.
CREATE INDEX IF NOT EXISTS cross_transfers_open ON cross_transfers (source)
    WHERE phase IN ('hold', 'credit', 'post') OR phase LIKE 'void:%';
