-- API tokens: only SHA-256 of the secret part is stored.
CREATE TABLE api_tokens (
    id          TEXT    PRIMARY KEY NOT NULL,
    secret_hash BLOB    NOT NULL CHECK (length(secret_hash) = 32),
    role        TEXT    NOT NULL CHECK (role IN ('admin', 'service', 'auditor')),
    -- Comma-separated purpose names (purpose names cannot contain commas).
    purposes    TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);
