-- The read model's transfers are keyed by their ledger timestamp, which the engine makes unique
-- and increasing: each insert lands on the right edge of the key's B-tree. Keyed by their
-- random ids, every insert touched a random page of an index as large as the whole history,
-- which costs more (and more WAL) as the history outgrows the buffer cache.
-- A transfer is looked up by id only to resolve it while it is pending, so only pending
-- transfers are indexed by id.
ALTER TABLE transfers DROP CONSTRAINT IF EXISTS transfers_pkey;
ALTER TABLE transfers ADD CONSTRAINT transfers_pkey PRIMARY KEY (timestamp);
CREATE INDEX IF NOT EXISTS transfers_pending_by_id ON transfers (id) WHERE status = 'pending';
