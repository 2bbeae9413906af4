-- Idempotency keys of the HTTP API: the first response to a (scope, key), replayed to retries.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    -- SHA-256 of the request (method, path, body): the same key with another request is refused.
    fingerprint BYTEA NOT NULL,
    -- NULL while the first request runs.
    status INTEGER,
    body BYTEA,
    -- Unix milliseconds: when the first request started (for leases and expiry).
    started_at BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (started_at);
