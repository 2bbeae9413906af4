-- Transfers leave the engine's memory once the read models hold them: from then on the engine
-- finds an old transfer here by id (to answer `exists` for a retry of any age, to look it up).
-- A hash index: lookups are by equality only, and an entry is a 4-byte hash code and a row
-- pointer, half a B-tree's on a UUID. It replaces the index of pending transfers by id.
CREATE INDEX IF NOT EXISTS transfers_by_id ON transfers USING hash (id);
DROP INDEX IF EXISTS transfers_pending_by_id;

-- Ids that failed for a transient reason: a retry with the same id fails the same way, forever
-- (`id_already_failed`), so they are kept like transfers. `result` is the result's code.
CREATE TABLE IF NOT EXISTS failed_transfers (
    id UUID NOT NULL,
    result INTEGER NOT NULL,
    lsn BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS failed_transfers_by_id ON failed_transfers USING hash (id);
