-- Settlements needing review are counted for the metrics (every few seconds, off the scrape),
-- and a user's unfinished settlements at each new request (the per-user quota): both read
-- these partial indexes, whose size is the work under way, not the history.
CREATE INDEX IF NOT EXISTS settlements_needing_review ON settlements (updated_ms)
    WHERE phase = 'needs_review';
CREATE INDEX IF NOT EXISTS settlements_unfinished_by_user ON settlements (user_id)
    WHERE phase NOT IN ('succeeded', 'failed', 'needs_review');
