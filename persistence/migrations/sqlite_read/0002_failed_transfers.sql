-- Ids that failed for a transient reason, kept like transfers so that the engine can let them
-- leave memory (see the PostgreSQL migration 0009). `result` is the result's code.
CREATE TABLE IF NOT EXISTS failed_transfers (
    id TEXT PRIMARY KEY,
    result INTEGER NOT NULL,
    lsn INTEGER NOT NULL
);
