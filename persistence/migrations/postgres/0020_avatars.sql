-- Each user's avatar: a PNG the server made (kizo-avatar), named in its URL by its SHA-256.
CREATE TABLE IF NOT EXISTS avatars (
    user_id TEXT PRIMARY KEY REFERENCES users (id),
    digest TEXT NOT NULL,
    image BYTEA NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS avatars_by_digest ON avatars (digest);
