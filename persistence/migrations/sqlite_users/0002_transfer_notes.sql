-- Notes of wallet transfers, by transfer id and the fingerprint of the request that carried
-- the note (the transfer's user_data_128). Both are decimal u128s.
CREATE TABLE IF NOT EXISTS transfer_notes (
    transfer_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    note TEXT NOT NULL,
    PRIMARY KEY (transfer_id, fingerprint)
);
