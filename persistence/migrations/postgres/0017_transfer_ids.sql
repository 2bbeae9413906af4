-- A cluster's transfer ids (issue 28): each id belongs to the partition that first took it.
-- A partition's engine knows only its own ids, and the read models keep one row per id: an id
-- taken in two partitions would be two transfers the read models cannot both hold. The batch
-- ledger API claims its ids here before a partition sees them. Wallet payments and the legs of
-- transfers between partitions have ids derived by hash, which no other partition takes.
CREATE TABLE IF NOT EXISTS transfer_ids (
    id UUID PRIMARY KEY,
    partition INTEGER NOT NULL
);
