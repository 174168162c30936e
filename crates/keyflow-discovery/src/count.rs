//! Counting the clear sensitive values of one cell (pure: no I/O).
//!
//! A cell that is a KeyFlow ciphertext is counted as encrypted, never scanned. A cell
//! holding a JSON object or array is parsed and walked: every string (and member name)
//! is scanned as free text, except strings that are KeyFlow ciphertexts (the output
//! of `keyflow fields encrypt`); integers are scanned as their digits. Anything else is
//! scanned as free text ([`keyflow_fields::text::find_in_text`]). A count is a number
//! of values found: a note holding two card numbers counts two.

use keyflow_fields::detect::Detector;
use keyflow_fields::document::is_ciphertext;
use keyflow_fields::text::find_in_text;
use serde_json::Value;

/// The detector codes of discovery reports and audit records, in report order.
pub const CODES: [&str; 5] = ["pan", "ssn", "iban", "email", "phone"];

/// Deepest JSON nesting walked; serde_json refuses deeper documents anyway (128).
const MAX_DEPTH: usize = 128;

/// Index of a detector in [`CODES`] (`None` for the name-based detectors, which free
/// text never reports).
pub fn code_index(d: Detector) -> Option<usize> {
    match d {
        Detector::CardNumber => Some(0),
        Detector::Ssn => Some(1),
        Detector::Iban => Some(2),
        Detector::Email => Some(3),
        Detector::Phone => Some(4),
        _ => None,
    }
}

/// What one column held: values read, KeyFlow ciphertexts among them, and clear
/// sensitive values per detector (indexed like [`CODES`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Non-null values read.
    pub values: u64,
    /// Values (or JSON strings) that are KeyFlow ciphertexts: not clear, not scanned.
    pub encrypted: u64,
    /// Clear sensitive values per detector.
    pub clear: [u64; 5],
}

impl Counts {
    /// Counts one non-null cell.
    pub fn add_cell(&mut self, cell: &str) {
        self.values += 1;
        let trimmed = cell.trim_start();
        if trimmed.starts_with(['{', '[']) {
            if let Ok(doc) = serde_json::from_str::<Value>(cell) {
                self.add_json(&doc, 0);
                return;
            }
        }
        self.add_string(cell);
    }

    /// Counts an integer cell (a card number stored as a number is still one).
    pub fn add_integer(&mut self, n: i64) {
        self.values += 1;
        self.add_text(&n.to_string());
    }

    /// The clear sensitive values of all detectors.
    pub fn clear_total(&self) -> u64 {
        self.clear.iter().sum()
    }

    fn add_string(&mut self, s: &str) {
        if is_ciphertext(s.trim()) {
            self.encrypted += 1;
        } else {
            self.add_text(s);
        }
    }

    fn add_text(&mut self, s: &str) {
        for f in find_in_text(s) {
            if let Some(i) = code_index(f.detector) {
                self.clear[i] += 1;
            }
        }
    }

    fn add_json(&mut self, v: &Value, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match v {
            Value::String(s) => self.add_string(s),
            Value::Number(n) if n.is_i64() || n.is_u64() => self.add_text(&n.to_string()),
            Value::Array(items) => items.iter().for_each(|i| self.add_json(i, depth + 1)),
            Value::Object(map) => {
                for (k, child) in map {
                    self.add_text(k);
                    self.add_json(child, depth + 1);
                }
            }
            Value::Number(_) | Value::Bool(_) | Value::Null => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ciphertext() -> String {
        keyflow_testkit::ciphertext(b"4532015112830366")
    }

    fn counts(cells: &[&str]) -> Counts {
        let mut c = Counts::default();
        cells.iter().for_each(|s| c.add_cell(s));
        c
    }

    #[test]
    fn free_text_cells() {
        let c = counts(&[
            "paid with 4532 0151 1283 0366 yesterday, ssn 123-45-6789",
            "two cards 4111111111111111 and 5555555555554444",
            "ada@example.com",
            "order #100234 shipped 2024-01-15",
        ]);
        assert_eq!(c.values, 4);
        assert_eq!(c.clear, [3, 1, 0, 1, 0]);
        assert_eq!(c.clear_total(), 5);
    }

    #[test]
    fn ciphertexts_are_not_clear() {
        let ct = ciphertext();
        let doc =
            format!(r#"{{"card": "{ct}", "note": "call +1 415 555 2671", "n": 4532015112830366}}"#);
        let c = counts(&[&ct, &format!("  {ct}\n"), &doc]);
        assert_eq!(c.encrypted, 3);
        assert_eq!(c.clear, [1, 0, 0, 0, 1]);
    }

    #[test]
    fn json_is_walked_and_broken_json_is_text() {
        let c = counts(&[
            r#"{"contacts": [{"ada@example.com": {"iban": "DE89 3704 0044 0532 0130 00"}}], "ok": true, "x": 1.5}"#,
            r#"[not json 123-45-6789"#,
        ]);
        assert_eq!(c.clear, [0, 1, 1, 1, 0]);
        assert_eq!(c.values, 2);
    }

    #[test]
    fn integers_are_scanned() {
        let mut c = Counts::default();
        c.add_integer(4532015112830366);
        c.add_integer(1700000000123);
        assert_eq!(c.clear, [1, 0, 0, 0, 0]);
        assert_eq!(c.values, 2);
    }
}
