-- The write-ahead log: one row per flushed frame (see codec.rs for the frame's bytes).
CREATE TABLE IF NOT EXISTS wal_frames (
    first_lsn BIGINT PRIMARY KEY,
    last_lsn BIGINT NOT NULL CHECK (last_lsn >= first_lsn),
    frame BYTEA NOT NULL
);
-- Frames are checksummed, mostly incompressible bytes: keep them out of line, uncompressed.
ALTER TABLE wal_frames ALTER COLUMN frame SET STORAGE EXTERNAL;
