-- The whole case in one read (issue 8): the document of a file now gathers
-- files, bpm and docs events; its timeline lives in its own table; users and
-- procedure names come from auth.events and bpm.events.

-- A document may exist before its file event arrives (a placeholder
-- gathering bpm/docs events): version NULL marks it, and the file's columns
-- are NULL until then. Every list query and list index takes
-- `version IS NOT NULL`.
ALTER TABLE index_files
    ALTER COLUMN version DROP NOT NULL,
    ALTER COLUMN code DROP NOT NULL,
    ALTER COLUMN initial_option DROP NOT NULL,
    ALTER COLUMN status DROP NOT NULL,
    ALTER COLUMN created_at DROP NOT NULL,
    ADD COLUMN created_by        TEXT,
    ADD COLUMN procedure_key     TEXT,
    ADD COLUMN procedure_version INTEGER,
    ADD COLUMN phase_key         TEXT,
    ADD COLUMN process_status    TEXT,
    ADD COLUMN due_date          DATE,
    ADD COLUMN suspended         BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE index_files
    -- The due date that counts for "overdue" (a running process whose clock
    -- runs): overdue means open_due_date < today, decided when read.
    ADD COLUMN open_due_date     DATE GENERATED ALWAYS AS (
        CASE WHEN process_status = 'running' AND NOT suspended THEN due_date END
    ) STORED;

-- Documents written by the previous version ({code, ..., created_by, ...})
-- take the new shape ({id, file: {code, ..., created_by, ...}, process,
-- documents}); bpm, docs and auth events are consumed from the start of
-- their topics by the same consumer group, which fills the rest.
UPDATE index_files SET
    created_by = document->'created_by'->>'id',
    document = jsonb_build_object(
        'id', id,
        'file', jsonb_build_object(
            'code', document->'code',
            'initial_option', document->'initial_option',
            'description', document->'description',
            'status', document->'status',
            'created_at', document->'created_at',
            'created_by', document->'created_by',
            'updated_at', document->'updated_at',
            'updated_by', document->'updated_by',
            'version', document->'version',
            'saga', NULL
        ),
        'process', NULL,
        'documents', '[]'::jsonb
    )
WHERE document ? 'code';

ALTER TABLE index_files DROP COLUMN search;
ALTER TABLE index_files ADD COLUMN search TSVECTOR GENERATED ALWAYS AS (
    to_tsvector('spanish', coalesce(code, '') || ' ' || coalesce(document #>> '{file,description}', ''))
) STORED;

-- List indexes: newest first within each filter, only known files.
DROP INDEX index_files_newest;
DROP INDEX index_files_option_newest;
DROP INDEX index_files_status_newest;
DROP INDEX index_files_code_prefix;
CREATE INDEX index_files_newest ON index_files (created_at DESC, id DESC)
    WHERE version IS NOT NULL;
CREATE INDEX index_files_option_newest ON index_files (initial_option, created_at DESC, id DESC)
    WHERE version IS NOT NULL;
CREATE INDEX index_files_status_newest ON index_files (status, created_at DESC, id DESC)
    WHERE version IS NOT NULL;
CREATE INDEX index_files_phase_newest ON index_files (phase_key, created_at DESC, id DESC)
    WHERE version IS NOT NULL AND phase_key IS NOT NULL;
CREATE INDEX index_files_procedure_newest ON index_files (procedure_key, created_at DESC, id DESC)
    WHERE version IS NOT NULL AND procedure_key IS NOT NULL;
CREATE INDEX index_files_creator_newest ON index_files (created_by, created_at DESC, id DESC)
    WHERE version IS NOT NULL AND created_by IS NOT NULL;
-- Overdue files are found by their due date (few among many), then sorted.
CREATE INDEX index_files_overdue ON index_files (open_due_date)
    WHERE version IS NOT NULL AND open_due_date IS NOT NULL;
-- Code prefixes: a C-collation btree serves `LIKE 'prefix%'` as a range,
-- and, not being partial, gives the planner statistics on lower(code); with
-- the default estimate a prefix that matches nothing made it walk the whole
-- newest-first index (measured: 0.4 s at 300k files, against 5 ms).
CREATE INDEX index_files_code_prefix ON index_files ((lower(code) COLLATE "C"));
CREATE INDEX index_files_search ON index_files USING GIN (search);
-- Filters that depend on each other (a failed file has no phase; phases
-- belong to procedures): without these the planner multiplies their
-- frequencies and, for a combination that matches nothing, walks the whole
-- newest-first index looking for a page.
CREATE STATISTICS index_files_status_phase (mcv, dependencies)
    ON status, phase_key FROM index_files;
CREATE STATISTICS index_files_procedure_phase (mcv, dependencies)
    ON procedure_key, phase_key FROM index_files;

-- The timeline: every event applied to a file, in the events' own order
-- (time, then message id), which a rebuild reproduces whatever the
-- interleaving of the topics. Display names are joined from index_users when
-- read, so a renamed user shows the new name at once.
CREATE TABLE index_timeline (
    file_id      UUID NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL,
    message_id   UUID NOT NULL,
    message_type TEXT NOT NULL,
    actor_id     TEXT,
    actor_name   TEXT, -- the name the event carried: shown until auth names the user
    summary      TEXT NOT NULL,
    PRIMARY KEY (file_id, occurred_at, message_id)
);

-- Display names from auth.events; the highest user version wins.
CREATE TABLE index_users (
    id           TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    version      BIGINT NOT NULL
);

-- Names of procedure versions from bpm.DefinitionPublished.v1.
CREATE TABLE index_procedures (
    key     TEXT NOT NULL,
    version INTEGER NOT NULL,
    name_es TEXT NOT NULL,
    name_en TEXT NOT NULL,
    PRIMARY KEY (key, version)
);
