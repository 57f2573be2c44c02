-- The read model: one JSONB document per case file, with the columns the
-- list filters, sorts and searches on.
CREATE TABLE index_files (
    id             UUID PRIMARY KEY,
    version        BIGINT NOT NULL,
    code           TEXT NOT NULL,
    initial_option TEXT NOT NULL,
    status         TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    document       JSONB NOT NULL,
    search         TSVECTOR GENERATED ALWAYS AS (
        to_tsvector('spanish', coalesce(document->>'code', '') || ' ' || coalesce(document->>'description', ''))
    ) STORED
);

CREATE INDEX index_files_newest ON index_files (created_at DESC, id DESC);
CREATE INDEX index_files_option_newest ON index_files (initial_option, created_at DESC, id DESC);
CREATE INDEX index_files_status_newest ON index_files (status, created_at DESC, id DESC);
CREATE INDEX index_files_search ON index_files USING GIN (search);
CREATE INDEX index_files_code_prefix ON index_files (lower(code) text_pattern_ops);
