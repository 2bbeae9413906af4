-- The epoch each partition's log accepts appends at (issue 28), kept beside the log: in the
-- database that holds the partition's log, which may not hold the leases. A node that
-- acquired a partition at epoch E writes E here (only ever upwards) before it reads the log;
-- an append commits only while this row holds its writer's epoch (`FOR SHARE`). So no append of
-- an earlier owner commits once the new owner has read the log.
CREATE TABLE IF NOT EXISTS partition_fences (
    partition INTEGER PRIMARY KEY,
    epoch BIGINT NOT NULL
);
