-- Deposits and withdrawals through the bank: each settlement's current state, every
-- transition it went through (written in the same transaction, before it is acted on), and
-- reconciliation reports. Ids are 32 hex digits; ledger account ids decimal u128s.
CREATE TABLE IF NOT EXISTS settlements (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    account_id TEXT NOT NULL,
    bank_account_id TEXT NOT NULL,
    ledger INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    phase TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    attempts_total INTEGER NOT NULL,
    due_ms INTEGER NOT NULL,
    reason TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS settlements_unfinished ON settlements (due_ms)
    WHERE phase NOT IN ('succeeded', 'failed', 'needs_review');
CREATE INDEX IF NOT EXISTS settlements_by_creation ON settlements (created_ms, id);

CREATE TABLE IF NOT EXISTS settlement_transitions (
    settlement_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    phase TEXT NOT NULL,
    attempts_total INTEGER NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS settlement_transitions_by_settlement
    ON settlement_transitions (settlement_id, at_ms);

CREATE TABLE IF NOT EXISTS reconciliation_reports (
    at_ms INTEGER NOT NULL,
    unexplained INTEGER NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reconciliation_reports_by_time ON reconciliation_reports (at_ms);
