-- A cluster of nodes sharing this database (issue 28): its fixed partition count, the nodes
-- and their heartbeats, and one lease per partition. Times are the database's milliseconds,
-- so that no node's clock decides who owns what.
CREATE TABLE IF NOT EXISTS cluster_config (
    -- One row.
    id BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    partitions INTEGER NOT NULL CHECK (partitions BETWEEN 1 AND 4096)
);

CREATE TABLE IF NOT EXISTS cluster_nodes (
    node_id TEXT PRIMARY KEY,
    -- Where the other nodes forward this node's requests.
    address TEXT NOT NULL,
    heartbeat_ms BIGINT NOT NULL,
    -- Set by a graceful shutdown: the node hands its partitions over and is no longer live.
    leaving BOOLEAN NOT NULL DEFAULT false
);

CREATE TABLE IF NOT EXISTS partition_leases (
    partition INTEGER PRIMARY KEY,
    owner TEXT,
    -- Bumped by every acquisition; every log append of the partition carries it.
    epoch BIGINT NOT NULL DEFAULT 0,
    expires_ms BIGINT NOT NULL DEFAULT 0
);
