-- KeyFlow keystore schema v1.
CREATE TABLE keyflow_meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE key_versions (
    purpose           TEXT    NOT NULL,
    version           INTEGER NOT NULL CHECK (version >= 1),
    status            TEXT    NOT NULL
                      CHECK (status IN ('active', 'rotating', 'deprecated', 'revoked', 'destroyed')),
    algorithm         TEXT    NOT NULL,
    -- nonce || AES-256-GCM(KEK, DEK) || tag; NULL once destroyed (crypto-shredding).
    wrapped_key       BLOB,
    kek_id            TEXT    NOT NULL,
    created_at        INTEGER NOT NULL,
    status_changed_at INTEGER NOT NULL,
    encryptions       INTEGER NOT NULL DEFAULT 0 CHECK (encryptions >= 0),
    PRIMARY KEY (purpose, version),
    CHECK ((status = 'destroyed') = (wrapped_key IS NULL))
);

-- The database itself guarantees at most one active version per purpose.
CREATE UNIQUE INDEX key_versions_one_active ON key_versions (purpose) WHERE status = 'active';
