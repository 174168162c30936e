-- Legacy key ids imported from the Node.js system (issue 17, ARCHITECTURE decision 41).
-- Each maps a legacy key id (what legacy packages and field metadata name) to the key
-- version that holds its DEK; the DEK itself is an ordinary row of key_versions,
-- wrapped under KeyFlow's KEK, so revoke and destroy apply to it as to any version.
CREATE TABLE legacy_keys (
    legacy_key_id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    purpose       TEXT COLLATE "C" NOT NULL,
    version       BIGINT  NOT NULL CHECK (version >= 1),
    legacy_status TEXT    NOT NULL
                  CHECK (legacy_status IN ('active', 'rotating', 'deprecated', 'revoked', 'unknown')),
    imported_at   BIGINT  NOT NULL,
    FOREIGN KEY (purpose, version) REFERENCES key_versions (purpose, version)
);
CREATE INDEX legacy_keys_version ON legacy_keys (purpose, version);
