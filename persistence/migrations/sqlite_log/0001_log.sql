-- The write-ahead log: one row per flushed frame (see codec.rs for the frame's bytes).
CREATE TABLE IF NOT EXISTS wal_frames (
    first_lsn INTEGER PRIMARY KEY,
    last_lsn INTEGER NOT NULL CHECK (last_lsn >= first_lsn),
    frame BLOB NOT NULL
);
