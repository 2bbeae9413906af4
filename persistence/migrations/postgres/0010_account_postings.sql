-- An account's history as posting lists instead of two indexes over every transfer. Each row
-- lists, for one account, the timestamps of transfers that debit and that credit it, in
-- ascending order, within [first_timestamp, last_timestamp]; an account's rows never overlap in
-- time (the projector writes them in log order, and timestamps grow with the log). The
-- projector writes one row per account it touches per step (split past 128 entries), so a step
-- of half a million transfers costs tens of thousands of index entries, not a million: the two
-- per-account indexes on `transfers` were two thirds of the cost of writing it. A history page
-- reads the rows that hold its timestamps, then the transfers by their primary key.
CREATE TABLE IF NOT EXISTS account_postings (
    account_id UUID NOT NULL,
    last_timestamp BIGINT NOT NULL,
    first_timestamp BIGINT NOT NULL,
    debits BIGINT[] NOT NULL,
    credits BIGINT[] NOT NULL,
    PRIMARY KEY (account_id, last_timestamp)
);

-- The history so far, in rows of at most 128 entries.
INSERT INTO account_postings (account_id, last_timestamp, first_timestamp, debits, credits)
SELECT account_id, max(timestamp), min(timestamp),
       coalesce(array_agg(timestamp ORDER BY timestamp) FILTER (WHERE debit), '{}'),
       coalesce(array_agg(timestamp ORDER BY timestamp) FILTER (WHERE NOT debit), '{}')
FROM (
    SELECT account_id, timestamp, debit,
           (row_number() OVER (PARTITION BY account_id ORDER BY timestamp) - 1) / 128 AS part
    FROM (
        SELECT debit_account_id AS account_id, timestamp, true AS debit FROM transfers
        UNION ALL
        SELECT credit_account_id, timestamp, false FROM transfers
    ) AS entries
) AS numbered
GROUP BY account_id, part;

DROP INDEX IF EXISTS transfers_by_debit;
DROP INDEX IF EXISTS transfers_by_credit;
