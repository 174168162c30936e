-- The audit trail (keyflow_kms::audit): one HMAC chain per database. Records are only
-- ever appended, in one transaction per batch that also moves the head.
CREATE TABLE keyflow_audit (
    -- Position in the chain, from 1, no gaps (the rowid).
    seq       INTEGER PRIMARY KEY CHECK (seq >= 1),
    -- The KEK whose derived key sealed the record.
    kek_id    TEXT    NOT NULL,
    -- Indexed copies of the body's fields, for filters; the verifier checks them
    -- against the body.
    time      INTEGER NOT NULL,
    actor     TEXT    NOT NULL,
    operation TEXT    NOT NULL,
    result    TEXT    NOT NULL,
    -- `,p1,p2,` (an empty list: ''), so "involves p" is a search for `,p,`. A `%`, `,`
    -- or NUL inside a name (never in a valid purpose; an event may name an invalid one)
    -- is written `%25`, `%2C`, `%00`.
    purposes  TEXT    NOT NULL,
    -- The event's canonical JSON: what the MAC covers.
    body      TEXT    NOT NULL,
    -- HMAC-SHA256, lowercase hex.
    mac       TEXT    NOT NULL CHECK (length(mac) = 64)
);

-- Filtered queries read newest first; each index ends in the rowid (seq), so
-- `WHERE actor = ? ORDER BY seq DESC` walks one index backwards.
CREATE INDEX keyflow_audit_time ON keyflow_audit (time);
CREATE INDEX keyflow_audit_actor ON keyflow_audit (actor);
CREATE INDEX keyflow_audit_operation ON keyflow_audit (operation);

-- The chain head: the last record's sequence number and MAC (0 and zeros: empty).
-- Appenders read and move it in their write transaction; the verifier compares it
-- with the last record, so a cut tail shows.
CREATE TABLE keyflow_audit_head (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL CHECK (seq >= 0),
    mac TEXT    NOT NULL CHECK (length(mac) = 64)
);
INSERT INTO keyflow_audit_head (id, seq, mac)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
