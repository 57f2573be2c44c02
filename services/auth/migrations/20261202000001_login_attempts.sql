-- Attempts being verified are reserved on their throttling keys before the
-- password is checked ("pending"), so that parallel guesses cannot all pass
-- the lock check. A row may now exist before its first failure.
ALTER TABLE login_failures DROP CONSTRAINT login_failures_failures_check;
ALTER TABLE login_failures ADD CONSTRAINT login_failures_failures_check CHECK (failures >= 0);
ALTER TABLE login_failures
    ADD COLUMN pending INTEGER NOT NULL DEFAULT 0 CHECK (pending >= 0),
    ADD COLUMN pending_since TIMESTAMPTZ;
