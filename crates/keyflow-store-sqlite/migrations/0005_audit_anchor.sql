-- Where retention cut the audit chain (`keyflow audit prune`): the signed anchor, a
-- checkpoint (kms::audit::checkpoint) of the last record removed. No row: the chain
-- starts at record 1. Replaced, and the records up to it deleted, in one transaction;
-- verification starts after it once its tag verifies.
CREATE TABLE keyflow_audit_anchor (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    -- The checkpoint's fields, as `Checkpoint` names them.
    version INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    seq     INTEGER NOT NULL CHECK (seq >= 1),
    -- The anchored record's MAC and the anchor's tag: HMAC-SHA256, lowercase hex.
    mac     TEXT    NOT NULL CHECK (length(mac) = 64),
    time    INTEGER NOT NULL,
    kek_id  TEXT    NOT NULL,
    tag     TEXT    NOT NULL CHECK (length(tag) = 64)
);
