-- Trust boundaries (issue 15). Row MACs: key versions, API tokens and policies carry an HMAC under a
-- KEK-derived key, checked on every read. Rows that exist now get theirs at the first
-- unlock after this migration (the 'pending' marker, set only when there are rows);
-- afterwards a row without a MAC is refused like one with a wrong MAC.
ALTER TABLE key_versions ADD COLUMN row_mac BYTEA CHECK (row_mac IS NULL OR length(row_mac) = 32);
ALTER TABLE api_tokens ADD COLUMN row_mac BYTEA CHECK (row_mac IS NULL OR length(row_mac) = 32);
ALTER TABLE key_policies ADD COLUMN row_mac BYTEA CHECK (row_mac IS NULL OR length(row_mac) = 32);
INSERT INTO keyflow_meta (key, value)
SELECT 'row_macs', 'pending'
WHERE EXISTS (SELECT 1 FROM key_versions)
   OR EXISTS (SELECT 1 FROM api_tokens)
   OR EXISTS (SELECT 1 FROM key_policies);

-- Request-integrity nonces seen by any instance (replay protection shared behind a
-- load balancer); rows expire with the signature window.
CREATE TABLE keyflow_nonces (
    nonce      TEXT   NOT NULL PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX keyflow_nonces_expiry ON keyflow_nonces (expires_at);
