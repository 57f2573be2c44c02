-- What the retention sweep looks for: finished refresh-token families and
-- forgotten failure counters.
CREATE INDEX refresh_families_expires_idx ON refresh_families (expires_at);
CREATE INDEX refresh_families_revoked_idx ON refresh_families (revoked_at)
    WHERE revoked_at IS NOT NULL;
CREATE INDEX login_failures_last_failure_idx ON login_failures (last_failure);
