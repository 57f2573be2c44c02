-- The create-file saga: one row per file created with a first document.
-- Files created before the saga existed have none.
CREATE TABLE file_sagas (
    id              UUID PRIMARY KEY,
    file_id         UUID NOT NULL UNIQUE REFERENCES files (id),
    upload_id       UUID NOT NULL,
    procedure       TEXT NOT NULL,
    actor_id        TEXT,
    actor_name      TEXT,
    step            TEXT NOT NULL CHECK (step IN ('attach_document', 'start_process', 'remove_document')),
    status          TEXT NOT NULL CHECK (status IN ('running', 'completed', 'compensating', 'failed')),
    attempts        INT NOT NULL CHECK (attempts > 0),
    step_started_at TIMESTAMPTZ NOT NULL,
    -- Set exactly while a reply is awaited.
    deadline        TIMESTAMPTZ,
    last_error      TEXT,
    document_id     UUID,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    CONSTRAINT file_sagas_deadline_while_waiting
        CHECK ((status IN ('running', 'compensating')) = (deadline IS NOT NULL))
);

-- The sweeper's search: sagas waiting for a reply, by deadline.
CREATE INDEX file_sagas_waiting ON file_sagas (deadline)
    WHERE status IN ('running', 'compensating');

-- The operators' list: by status, oldest step first.
CREATE INDEX file_sagas_by_status ON file_sagas (status, step_started_at, id);
