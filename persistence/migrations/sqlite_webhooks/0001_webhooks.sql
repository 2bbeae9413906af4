-- Webhooks (issue 29): endpoints registered by the ledger API's key holder or by users, one
-- delivery per event and endpoint (its attempts, retries and parking), and how far each
-- partition's log has been fanned out to them. A delivery and the progress past its commit are
-- written in one transaction, so no event is enqueued twice or skipped.
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id TEXT PRIMARY KEY,
    -- `ledger` (the ledger API's key) or `user:<id>`.
    owner TEXT NOT NULL,
    url TEXT NOT NULL,
    -- Comma-separated event kinds, or `*`.
    kinds TEXT NOT NULL,
    -- `whsec_...`: signs every delivery.
    secret TEXT NOT NULL,
    -- A user's endpoint hears only its wallet's events (decimal account id); NULL: every ledger.
    wallet TEXT,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_endpoints_by_owner ON webhook_endpoints (owner, created_ms);

-- Moved by every registration and removal, in its transaction: a follower that reads it before
-- a step knows whether its copy of the endpoints is current (one row, read by its key).
CREATE TABLE IF NOT EXISTS webhook_endpoints_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO webhook_endpoints_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    endpoint_id TEXT NOT NULL,
    -- The event's id, `<partition>.<lsn>.<index>`; `webhook-id` on every attempt.
    event_id TEXT NOT NULL,
    partition INTEGER NOT NULL,
    lsn INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    kind TEXT NOT NULL,
    -- The event's JSON, sent as the request's body (the same on every attempt and replay).
    body TEXT NOT NULL,
    -- pending, delivered, parked.
    state TEXT NOT NULL,
    due_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, event_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (due_ms)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_endpoint
    ON webhook_deliveries (endpoint_id, state, partition, lsn, idx);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_update ON webhook_deliveries (updated_ms)
    WHERE state = 'delivered';

CREATE TABLE IF NOT EXISTS webhook_progress (
    partition INTEGER PRIMARY KEY,
    lsn INTEGER NOT NULL
);
