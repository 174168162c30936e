//! What a scan found, per table and column: counts only, never a value.

use serde::Serialize;
use serde_json::{json, Value};

use crate::count::{Counts, CODES};

/// One column scanned.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnReport {
    /// The column's name.
    pub column: String,
    /// `text` or `json` (as declared; text cells holding JSON are walked either way).
    pub kind: &'static str,
    /// Non-null values read.
    pub values: u64,
    /// Values that are KeyFlow ciphertexts (not clear; not scanned).
    pub encrypted: u64,
    /// Clear sensitive values per detector code (`pan`, `ssn`, `iban`, `email`, `phone`);
    /// detectors that found nothing are left out.
    pub clear: serde_json::Map<String, Value>,
}

impl ColumnReport {
    /// The report of a column from its counts.
    pub fn new(column: String, json: bool, counts: &Counts) -> Self {
        let clear = CODES
            .iter()
            .zip(counts.clear)
            .filter(|(_, n)| *n > 0)
            .map(|(code, n)| ((*code).to_owned(), Value::from(n)))
            .collect();
        Self {
            column,
            kind: if json { "json" } else { "text" },
            values: counts.values,
            encrypted: counts.encrypted,
            clear,
        }
    }

    /// The clear sensitive values of every detector.
    pub fn clear_total(&self) -> u64 {
        self.clear.values().filter_map(Value::as_u64).sum()
    }
}

/// One table scanned.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableReport {
    /// The table's name.
    pub table: String,
    /// Rows read.
    pub rows: u64,
    /// Its text and JSON columns.
    pub columns: Vec<ColumnReport>,
}

/// A whole scan.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanReport {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The target URL, password redacted.
    pub target: String,
    /// Every table scanned, in name order.
    pub tables: Vec<TableReport>,
}

/// One line of the findings: a detector's count on a column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FindingCount {
    /// The table.
    pub table: String,
    /// The column.
    pub column: String,
    /// `pan`, `ssn`, `iban`, `email` or `phone`.
    pub detector: String,
    /// Clear values found.
    pub count: u64,
}

impl ScanReport {
    /// Rows read in every table.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// Columns scanned in every table.
    pub fn columns(&self) -> u64 {
        self.tables.iter().map(|t| t.columns.len() as u64).sum()
    }

    /// Clear sensitive values found in every column.
    pub fn clear_values(&self) -> u64 {
        self.tables
            .iter()
            .flat_map(|t| &t.columns)
            .map(ColumnReport::clear_total)
            .sum()
    }

    /// Values that are KeyFlow ciphertexts, in every column.
    pub fn encrypted_values(&self) -> u64 {
        self.tables
            .iter()
            .flat_map(|t| &t.columns)
            .map(|c| c.encrypted)
            .sum()
    }

    /// Each non-zero count, by table, column and detector (in [`CODES`] order).
    pub fn findings(&self) -> Vec<FindingCount> {
        let mut out = Vec::new();
        for t in &self.tables {
            for c in &t.columns {
                for code in CODES {
                    if let Some(n) = c.clear.get(code).and_then(Value::as_u64) {
                        out.push(FindingCount {
                            table: t.table.clone(),
                            column: c.column.clone(),
                            detector: code.to_owned(),
                            count: n,
                        });
                    }
                }
            }
        }
        out
    }

    /// The `details` of the `scan.database` audit record (docs/discovery.md): scope,
    /// rows, columns, findings and the total of clear values. No URL, no value.
    pub fn audit_details(&self) -> Value {
        json!({
            "scope": {
                "backend": self.backend,
                "tables": self.tables.iter().map(|t| t.table.as_str()).collect::<Vec<_>>(),
            },
            "rows": self.rows(),
            "columns": self.columns(),
            "findings": self.findings(),
            "clearValues": self.clear_values(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn audit_details_follow_the_contract() {
        let mut counts = Counts::default();
        counts.add_cell("4111111111111111 and ada@example.com");
        counts.add_cell("4532015112830366");
        let report = ScanReport {
            backend: "sqlite",
            target: "sqlite:/x".into(),
            tables: vec![
                TableReport {
                    table: "orders".into(),
                    rows: 2,
                    columns: vec![ColumnReport::new("note".into(), false, &counts)],
                },
                TableReport {
                    table: "empty".into(),
                    rows: 0,
                    columns: vec![],
                },
            ],
        };
        assert_eq!(
            report.audit_details(),
            json!({
                "scope": {"backend": "sqlite", "tables": ["orders", "empty"]},
                "rows": 2,
                "columns": 1,
                "findings": [
                    {"table": "orders", "column": "note", "detector": "pan", "count": 2},
                    {"table": "orders", "column": "note", "detector": "email", "count": 1},
                ],
                "clearValues": 3,
            })
        );
    }
}
