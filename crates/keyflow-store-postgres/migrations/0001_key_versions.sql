-- KeyFlow keystore schema v1 (PostgreSQL; same shape as the SQLite schema).
-- Purpose names compare and sort bytewise (COLLATE "C"), as in SQLite, whatever the
-- database's default collation.
CREATE TABLE keyflow_meta (
    key   TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE key_versions (
    purpose           TEXT COLLATE "C" NOT NULL,
    version           BIGINT  NOT NULL CHECK (version >= 1),
    status            TEXT    NOT NULL
                      CHECK (status IN ('active', 'rotating', 'deprecated', 'revoked', 'destroyed')),
    algorithm         TEXT    NOT NULL,
    -- nonce || AES-256-GCM(KEK, DEK) || tag; NULL once destroyed (crypto-shredding).
    wrapped_key       BYTEA,
    kek_id            TEXT    NOT NULL,
    created_at        BIGINT  NOT NULL,
    status_changed_at BIGINT  NOT NULL,
    encryptions       BIGINT  NOT NULL DEFAULT 0 CHECK (encryptions >= 0),
    PRIMARY KEY (purpose, version),
    CHECK ((status = 'destroyed') = (wrapped_key IS NULL))
);

-- The database itself guarantees at most one active version per purpose.
CREATE UNIQUE INDEX key_versions_one_active ON key_versions (purpose) WHERE status = 'active';
