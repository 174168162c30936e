-- How far each local audit journal (kms::audit::journal) has reached the chain: the
-- last entry appended, moved in the same transaction as the append, so a writer that
-- dies after a commit never has those entries appended twice. A row is removed once its
-- journal file is gone.
CREATE TABLE keyflow_audit_journal (
    journal TEXT   PRIMARY KEY,
    drained INTEGER NOT NULL CHECK (drained >= 0)
);
