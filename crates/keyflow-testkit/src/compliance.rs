//! Readers of a compliance report's JSON (`GET /compliance`, `keyflow compliance`).

use serde_json::Value;

/// The control `id` of `standard` (`pciDss`, `gdpr`, `nist`, `iso27001`); panics,
/// showing the report, when it is missing.
pub fn control<'a>(report: &'a Value, standard: &str, id: &str) -> &'a Value {
    report["standards"][standard]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {standard}/{id}: {report}"))
}

/// A control's evidence lines, joined by newlines (for `contains` checks).
pub fn evidence(c: &Value) -> String {
    c["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}
