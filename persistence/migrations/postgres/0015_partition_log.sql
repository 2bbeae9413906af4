-- Each partition's own log stream (issue 28): frames as in wal_frames, each stamped with
-- the epoch of the lease it was appended under. An append commits only while its epoch is
-- the partition's (see leases.rs): a former owner can never append again.
CREATE TABLE IF NOT EXISTS partition_frames (
    partition INTEGER NOT NULL,
    first_lsn BIGINT NOT NULL,
    last_lsn BIGINT NOT NULL CHECK (last_lsn >= first_lsn),
    epoch BIGINT NOT NULL,
    frame BYTEA NOT NULL,
    PRIMARY KEY (partition, first_lsn)
);
ALTER TABLE partition_frames ALTER COLUMN frame SET STORAGE EXTERNAL;
