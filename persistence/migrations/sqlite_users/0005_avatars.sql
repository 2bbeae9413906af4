-- See the PostgreSQL migration of the same name.
CREATE TABLE IF NOT EXISTS avatars (
    user_id TEXT PRIMARY KEY REFERENCES users (id),
    digest TEXT NOT NULL,
    image BLOB NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS avatars_by_digest ON avatars (digest);
