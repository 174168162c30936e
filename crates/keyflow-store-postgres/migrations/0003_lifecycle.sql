-- Key lifecycle: revocation reasons, rotation policies, leases, change generation.
ALTER TABLE key_versions ADD COLUMN revoked_reason TEXT;

CREATE TABLE key_policies (
    purpose         TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    rotation_days   BIGINT NOT NULL CHECK (rotation_days >= 1),
    grace_days      BIGINT NOT NULL CHECK (grace_days >= 0),
    warn_days       BIGINT NOT NULL CHECK (warn_days >= 0),
    max_encryptions BIGINT NOT NULL CHECK (max_encryptions >= 1)
);

-- Time-bounded mutual exclusion between processes (the scheduler pass).
CREATE TABLE keyflow_leases (
    name       TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    holder     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Bumped (and announced with NOTIFY keyflow_keys) in the same transaction as every
-- key-version change; caches poll it. Kept in keyflow_meta, as in SQLite.
INSERT INTO keyflow_meta (key, value) VALUES ('generation', '0') ON CONFLICT (key) DO NOTHING;
