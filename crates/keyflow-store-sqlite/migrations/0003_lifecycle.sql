-- Key lifecycle: revocation reasons, rotation policies, leases, change generation.
ALTER TABLE key_versions ADD COLUMN revoked_reason TEXT;

CREATE TABLE key_policies (
    purpose         TEXT    PRIMARY KEY NOT NULL,
    rotation_days   INTEGER NOT NULL CHECK (rotation_days >= 1),
    grace_days      INTEGER NOT NULL CHECK (grace_days >= 0),
    warn_days       INTEGER NOT NULL CHECK (warn_days >= 0),
    max_encryptions INTEGER NOT NULL CHECK (max_encryptions >= 1)
);

-- Time-bounded mutual exclusion between processes (the scheduler pass).
CREATE TABLE keyflow_leases (
    name       TEXT    PRIMARY KEY NOT NULL,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);

-- Bumped in the same transaction as every key-version change; caches poll it.
INSERT INTO keyflow_meta (key, value) VALUES ('generation', '0') ON CONFLICT (key) DO NOTHING;
