-- API tokens: only SHA-256 of the secret part is stored.
CREATE TABLE api_tokens (
    id          TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    secret_hash BYTEA   NOT NULL CHECK (length(secret_hash) = 32),
    role        TEXT    NOT NULL CHECK (role IN ('admin', 'service', 'auditor')),
    -- Comma-separated purpose names (purpose names cannot contain commas).
    purposes    TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);
