-- See the PostgreSQL migration of the same name.
CREATE INDEX IF NOT EXISTS settlements_needing_review ON settlements (updated_ms)
    WHERE phase = 'needs_review';
CREATE INDEX IF NOT EXISTS settlements_unfinished_by_user ON settlements (user_id)
    WHERE phase NOT IN ('succeeded', 'failed', 'needs_review');
