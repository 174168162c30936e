//! # keyflow-compliance
//!
//! KeyFlow's compliance report, computed from live state: the caller gathers a
//! [`Snapshot`] of facts (key versions, policies, tokens, the audit trail, TLS as served,
//! the KEK file, the latest backups, rotations and discovery scans) and [`evaluate`]
//! turns it into a [`Report`] of controls — PCI DSS v4.0.1, GDPR, NIST SP 800-57 Part 1,
//! ISO/IEC 27001:2022 — each with a status, the evidence it measured, and a remediation
//! when it does not pass. A control that cannot be evaluated says so (`warn` or
//! `not_applicable`); none passes by default.
//!
//! Pure: no I/O, no clock (the snapshot carries the evaluation instant, so `--at`
//! shifts every time-dependent control). Renderers: JSON (serde), [`markdown`], and
//! [`html`] (one self-contained offline page with an SVG chart of key ages).
//!
//! ```
//! use keyflow_compliance::{evaluate, Snapshot, Status};
//! let report = evaluate(&Snapshot::default());
//! // An empty snapshot proves nothing: it never passes.
//! assert_ne!(report.overall, Status::Pass);
//! let page = keyflow_compliance::html::render(&report);
//! assert!(page.starts_with("<!DOCTYPE html>"));
//! ```

mod chart;
pub mod html;
mod lifecycle;
pub mod markdown;
mod others;
mod pci;
pub mod report;
pub mod snapshot;
mod transport;
mod util;

pub use report::{Control, InventoryItem, LegacyLabel, Report, Standards, Status, Summary};
pub use snapshot::{
    AuditFacts, CardPurpose, EventFact, Events, FieldFacts, Finding, KekFacts, KeyFact, PolicyFact,
    ScanFact, Snapshot, TlsFacts, TokenFact, Verification,
};
pub use util::{default_policy, DAY_MS};

use serde_json::json;

/// Evaluates every control against `s`.
pub fn evaluate(s: &Snapshot) -> Report {
    let pci = pci::controls(s);
    let standards = Standards {
        gdpr: others::gdpr(s, &pci),
        nist: others::nist(s, &pci),
        iso27001: others::iso(s, &pci),
        pci_dss: pci,
    };
    let mut summary = Summary::default();
    for (_, c) in standards.all() {
        summary.total += 1;
        match c.status {
            Status::Pass => summary.pass += 1,
            Status::Warn => summary.warn += 1,
            Status::Fail => summary.fail += 1,
            Status::NotApplicable => summary.not_applicable += 1,
        }
    }
    let overall = if summary.fail > 0 {
        Status::Fail
    } else if summary.warn > 0 || summary.pass == 0 {
        Status::Warn
    } else {
        Status::Pass
    };
    let legacy_mapping = legacy_mapping(&standards);
    Report {
        generated_at: util::when(s.generated_at),
        evaluated_at: util::when(s.at),
        overall,
        summary,
        implementation: implementation(s),
        inventory: inventory(s),
        legacy_mapping,
        standards,
    }
}

/// Every key version, with its policy's cryptoperiod (PCI DSS 3.6.1.1).
fn inventory(s: &Snapshot) -> Vec<InventoryItem> {
    let mut items: Vec<InventoryItem> = s
        .keys
        .iter()
        .map(|k| {
            let p = util::policy_for(s, &k.purpose);
            InventoryItem {
                key_id: format!("{}:v{}", k.purpose, k.version),
                purpose: k.purpose.clone(),
                version: k.version,
                algorithm: k.algorithm.clone(),
                status: k.status.clone(),
                created: util::when(k.created_at),
                age_days: util::age_days(s.at, k.created_at),
                cryptoperiod_days: p.rotation_days,
                warn_days: p.warn_days,
                encryptions: k.encryptions,
                budget: p.max_encryptions,
                kek_id: k.kek_id.clone(),
                legacy: k.legacy,
            }
        })
        .collect();
    items.sort_by(|a, b| a.purpose.cmp(&b.purpose).then(a.version.cmp(&b.version)));
    items
}

/// The old report's labels (PCI DSS 3.2.1; ISO/IEC 27001:2013) and the controls that
/// now answer each.
const LEGACY: [(&str, &str, &str, &[&str]); 6] = [
    (
        "PCI DSS 3.2.1",
        "3.4",
        "Render PAN unreadable anywhere it is stored",
        &["pciDss/3.4.1", "pciDss/3.5.1"],
    ),
    (
        "PCI DSS 3.2.1",
        "3.5",
        "Protect keys used to secure stored cardholder data",
        &["pciDss/3.6.1", "pciDss/3.6.1.1", "pciDss/3.7.3"],
    ),
    (
        "PCI DSS 3.2.1",
        "3.6",
        "Key-management processes and procedures",
        &[
            "pciDss/3.7.1",
            "pciDss/3.7.2",
            "pciDss/3.7.4",
            "pciDss/3.7.5",
        ],
    ),
    (
        "PCI DSS 3.2.1",
        "4.1",
        "Strong cryptography during transmission over open networks",
        &["pciDss/4.2.1"],
    ),
    (
        "ISO/IEC 27001:2013",
        "A.10.1",
        "Cryptographic controls",
        &[
            "iso27001/A.8.24",
            "nist/SP 800-57 Pt1 §5.3",
            "nist/SP 800-57 Pt1 §5.2",
        ],
    ),
    (
        "ISO/IEC 27001:2013",
        "A.9.4",
        "System and application access control",
        &["iso27001/A.5.15", "iso27001/A.8.5"],
    ),
];

fn legacy_mapping(standards: &Standards) -> Vec<LegacyLabel> {
    LEGACY
        .iter()
        .map(|(standard, requirement, title, controls)| {
            let status = standards
                .all()
                .filter(|(k, c)| controls.contains(&format!("{k}/{}", c.id).as_str()))
                .map(|(_, c)| c.status)
                .max()
                .unwrap_or(Status::NotApplicable);
            LegacyLabel {
                standard,
                requirement,
                title,
                controls: controls.to_vec(),
                status,
            }
        })
        .collect()
}

/// How this deployment implements the cryptography (the old report's `implementation`).
fn implementation(s: &Snapshot) -> serde_json::Value {
    let mut algorithms: Vec<&str> = s.keys.iter().map(|k| k.algorithm.as_str()).collect();
    algorithms.sort_unstable();
    algorithms.dedup();
    json!({
        "encryption": "AES-256-GCM (96-bit random nonces, 128-bit tags, AAD = header ‖ context)",
        "deterministic": "AES-256-GCM-SIV",
        "blindIndex": "HMAC-SHA256",
        "keyHierarchy": "KEK (password-file) → per-purpose DEK rings → HKDF-SHA256 subkeys per mode",
        "keyAlgorithms": algorithms,
        "kek": {
            "provider": "password-file",
            "id": s.kek.kek_id,
            "kdf": "PBKDF2-HMAC-SHA256",
            "iterations": s.kek.kdf_iterations,
        },
        "keystore": s.backend,
        "keyVersions": s.keys.len(),
        "auditTrail": {
            "enabled": s.audit.enabled,
            "chain": "HMAC-SHA256 ratchet",
            "journaled": s.audit.journaled,
            "headSeq": s.audit.head_seq,
        },
        "transport": {
            "tls": s.tls.served,
            "versions": s.tls.versions,
            "suites": s.tls.suites,
            "httpsEnforced": s.tls.https_enforced,
        },
        "production": s.production,
        "strictMode": s.strict_mode,
    })
}

#[cfg(test)]
mod tests;
