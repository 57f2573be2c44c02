-- Procedure definitions, processes, their phase history and the holiday
-- calendar, owned by the bpm service.

CREATE TABLE definitions (
    key               TEXT NOT NULL,
    version           INT NOT NULL CHECK (version > 0),
    name_es           TEXT NOT NULL,
    name_en           TEXT NOT NULL,
    -- Phases and transitions, as data (see adapters/postgres.rs StoredBody).
    body              JSONB NOT NULL,
    published_at      TIMESTAMPTZ NOT NULL,
    published_by_id   TEXT,
    published_by_name TEXT,
    PRIMARY KEY (key, version)
);

CREATE TABLE holidays (
    day             DATE PRIMARY KEY,
    name            TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    created_by_id   TEXT NOT NULL,
    created_by_name TEXT
);

CREATE TABLE processes (
    file_id            UUID PRIMARY KEY,
    definition_key     TEXT NOT NULL,
    definition_version INT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('running', 'finished')),
    started_at         TIMESTAMPTZ NOT NULL,
    started_by_id      TEXT NOT NULL,
    started_by_name    TEXT,
    finished_at        TIMESTAMPTZ,
    finished_by_id     TEXT,
    finished_by_name   TEXT,
    version            BIGINT NOT NULL CHECK (version > 0),
    FOREIGN KEY (definition_key, definition_version) REFERENCES definitions (key, version)
);

-- One row per phase visit.
CREATE TABLE phase_visits (
    file_id            UUID NOT NULL REFERENCES processes (file_id),
    seq                INT NOT NULL CHECK (seq > 0),
    definition_version INT NOT NULL,
    phase_key          TEXT NOT NULL,
    name_es            TEXT NOT NULL,
    name_en            TEXT NOT NULL,
    entry              TEXT NOT NULL CHECK (entry IN ('start', 'transition', 'migration')),
    entered_at         TIMESTAMPTZ NOT NULL,
    entered_by_id      TEXT NOT NULL,
    entered_by_name    TEXT,
    comment            TEXT,
    left_at            TIMESTAMPTZ,
    left_by_id         TEXT,
    left_by_name       TEXT,
    due_date           DATE,
    extension          JSONB,
    -- Written by the deadline sweeper only.
    due_soon_sent_at   TIMESTAMPTZ,
    overdue_sent_at    TIMESTAMPTZ,
    PRIMARY KEY (file_id, seq)
);

-- The sweeper's search: open visits with a deadline not yet reported overdue.
CREATE INDEX phase_visits_open_deadlines ON phase_visits (due_date)
    WHERE left_at IS NULL AND due_date IS NOT NULL AND overdue_sent_at IS NULL;

-- Stops of a visit's clock; `n` counts them per process.
CREATE TABLE suspensions (
    file_id           UUID NOT NULL REFERENCES processes (file_id),
    n                 INT NOT NULL CHECK (n > 0),
    visit_seq         INT NOT NULL,
    suspended_at      TIMESTAMPTZ NOT NULL,
    suspended_on      DATE NOT NULL,
    suspended_by_id   TEXT NOT NULL,
    suspended_by_name TEXT,
    reason            TEXT NOT NULL,
    resumed_at        TIMESTAMPTZ,
    resumed_on        DATE,
    resumed_by_id     TEXT,
    resumed_by_name   TEXT,
    resume_comment    TEXT,
    PRIMARY KEY (file_id, n)
);

CREATE INDEX suspensions_open ON suspensions (file_id, visit_seq) WHERE resumed_at IS NULL;
