-- Accounts, sessions, login throttling and signing keys of the auth service.

CREATE TABLE users (
    id             UUID PRIMARY KEY,
    username       TEXT NOT NULL CHECK (username = lower(username)),
    display_name   TEXT NOT NULL,
    email          TEXT NOT NULL,
    roles          TEXT[] NOT NULL CHECK (cardinality(roles) > 0),
    enabled        BOOLEAN NOT NULL,
    password_hash  TEXT NOT NULL,
    version        BIGINT NOT NULL CHECK (version > 0),
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));

CREATE TABLE api_clients (
    client_id    TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    roles        TEXT[] NOT NULL CHECK (cardinality(roles) > 0),
    enabled      BOOLEAN NOT NULL,
    version      BIGINT NOT NULL CHECK (version > 0),
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

-- One family per login; every refresh token of a login belongs to it.
CREATE TABLE refresh_families (
    id          UUID PRIMARY KEY,
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX refresh_families_user_idx ON refresh_families (user_id) WHERE revoked_at IS NULL;

-- Only the SHA-256 of each refresh token is kept.
CREATE TABLE refresh_tokens (
    token_hash  BYTEA PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    family_id   UUID NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    issued_at   TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);

-- Consecutive failed logins per key ("user:<name>" or "addr:<ip>").
CREATE TABLE login_failures (
    key           TEXT PRIMARY KEY,
    failures      INTEGER NOT NULL CHECK (failures > 0),
    locked_until  TIMESTAMPTZ,
    last_failure  TIMESTAMPTZ NOT NULL
);

CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    private_pkcs8  BYTEA NOT NULL,
    public_x       TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    retired_at     TIMESTAMPTZ
);
