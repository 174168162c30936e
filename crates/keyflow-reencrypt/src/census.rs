//! The census: what a run found and did, row by row, aggregated. Pure bookkeeping —
//! no I/O — so it is unit-tested apart from any database and stored as JSON in the
//! checkpoint (a resumed run reports on the whole table, not only on its own part).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backend::RowId;

/// How many failed rows are listed by id (all are counted).
pub const MAX_LISTED_FAILURES: usize = 100;

/// Why a row was skipped (left as it is, not an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The value is NULL.
    Null,
    /// The application changed the row between our read and our write; its write wins
    /// and the next run looks at the row again.
    ChangedConcurrently,
}

impl SkipReason {
    /// A stable label for reports.
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::Null => "null",
            SkipReason::ChangedConcurrently => "changed concurrently (application write kept)",
        }
    }
}

/// A failed row: its id and why. Never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRow {
    /// The row's id (as text).
    pub id: String,
    /// A fixed description (e.g. "decryption failed", "key userData:v1 is revoked…").
    pub reason: String,
}

/// What one row's transform decided, before any write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Already in the wanted state, under this key id (`purpose:vN`).
    Unchanged {
        /// `purpose:vN` of the value as it is.
        key_id: String,
    },
    /// To be written; after the write the value is under `key_id`.
    Rewrite {
        /// `purpose:vN` of the new value.
        key_id: String,
    },
    /// Left as it is.
    Skipped(SkipReason),
    /// Could not be processed; left untouched.
    Failed(String),
}

/// Aggregated results of a run (or of a dry run: then "rewritten" means "would be").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Census {
    /// Rows examined.
    pub rows: u64,
    /// Rows written with a new value.
    pub rewritten: u64,
    /// Rows already in the wanted state (under the active version; already encrypted).
    pub unchanged: u64,
    /// Rows per key id (`purpose:vN`) after the run: rewritten and unchanged rows.
    pub by_key_version: BTreeMap<String, u64>,
    /// Skipped rows per reason.
    pub skipped: BTreeMap<String, u64>,
    /// Failed rows per reason.
    pub failed: BTreeMap<String, u64>,
    /// The first [`MAX_LISTED_FAILURES`] failed rows.
    pub failed_rows: Vec<FailedRow>,
}

impl Census {
    /// Records one row's final outcome.
    pub fn record(&mut self, id: &RowId, decision: &Decision) {
        self.rows += 1;
        match decision {
            Decision::Unchanged { key_id } => {
                self.unchanged += 1;
                *self.by_key_version.entry(key_id.clone()).or_default() += 1;
            }
            Decision::Rewrite { key_id } => {
                self.rewritten += 1;
                *self.by_key_version.entry(key_id.clone()).or_default() += 1;
            }
            Decision::Skipped(r) => *self.skipped.entry(r.label().to_owned()).or_default() += 1,
            Decision::Failed(reason) => {
                *self.failed.entry(reason.clone()).or_default() += 1;
                if self.failed_rows.len() < MAX_LISTED_FAILURES {
                    self.failed_rows.push(FailedRow {
                        id: id.to_string(),
                        reason: reason.clone(),
                    });
                }
            }
        }
    }

    /// Total skipped rows.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    /// Total failed rows.
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// The final decision for a row once the batch's writes are known: a planned rewrite
/// that the database did not apply lost a race with the application.
pub fn settle(planned: &Decision, written: bool) -> Decision {
    match planned {
        Decision::Rewrite { .. } if !written => Decision::Skipped(SkipReason::ChangedConcurrently),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn counts_every_outcome() {
        let mut c = Census::default();
        let v2 = || "userData:v2".to_owned();
        c.record(&RowId::Int(1), &Decision::Rewrite { key_id: v2() });
        c.record(&RowId::Int(2), &Decision::Unchanged { key_id: v2() });
        c.record(&RowId::Int(3), &Decision::Skipped(SkipReason::Null));
        c.record(
            &RowId::Text("x".into()),
            &Decision::Failed("decryption failed".into()),
        );
        assert_eq!((c.rows, c.rewritten, c.unchanged), (4, 1, 1));
        assert_eq!(c.by_key_version["userData:v2"], 2);
        assert_eq!(c.skipped_total(), 1);
        assert_eq!(c.failed_total(), 1);
        assert_eq!(c.failed_rows[0].id, "x");
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Census>(&json).unwrap(), c);
    }

    #[test]
    fn lost_race_is_a_skip() {
        let planned = Decision::Rewrite {
            key_id: "p:v2".into(),
        };
        assert_eq!(settle(&planned, true), planned);
        assert_eq!(
            settle(&planned, false),
            Decision::Skipped(SkipReason::ChangedConcurrently)
        );
        let failed = Decision::Failed("x".into());
        assert_eq!(settle(&failed, false), failed);
    }

    #[test]
    fn failures_listed_up_to_a_cap() {
        let mut c = Census::default();
        for i in 0..(MAX_LISTED_FAILURES as i64 + 5) {
            c.record(
                &RowId::Int(i),
                &Decision::Failed("decryption failed".into()),
            );
        }
        assert_eq!(c.failed_rows.len(), MAX_LISTED_FAILURES);
        assert_eq!(c.failed_total(), MAX_LISTED_FAILURES as u64 + 5);
    }
}
