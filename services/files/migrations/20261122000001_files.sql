-- Case files owned by the files service.
CREATE SEQUENCE file_code_seq;

CREATE TABLE files (
    id              UUID PRIMARY KEY,
    code            TEXT NOT NULL,
    initial_option  TEXT NOT NULL,
    description     TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'active', 'finished', 'failed')),
    created_at      TIMESTAMPTZ NOT NULL,
    created_by_id   TEXT,
    created_by_name TEXT,
    updated_at      TIMESTAMPTZ NOT NULL,
    updated_by_id   TEXT,
    updated_by_name TEXT,
    version         BIGINT NOT NULL CHECK (version > 0),
    CONSTRAINT files_code_key UNIQUE (code)
);
