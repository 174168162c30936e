//! Edges of each control: a snapshot that passes everything, then one fact changed at a
//! time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use super::*;
use serde_json::json;

mod controls;
mod render;

const DAY: i64 = DAY_MS;
/// 2026-12-04T00:00:00Z.
const NOW: i64 = 1_796_342_400_000;

fn key(purpose: &str, version: u32, status: &str, age_days: i64) -> KeyFact {
    KeyFact {
        purpose: purpose.into(),
        version,
        algorithm: "AES-256".into(),
        status: status.into(),
        created_at: NOW - age_days * DAY,
        status_changed_at: NOW - age_days * DAY,
        encryptions: 10,
        kek_id: "kek-1".into(),
        has_material: status != "destroyed",
        legacy: false,
    }
}

fn event(at: i64, seq: u64, detail: Option<serde_json::Value>) -> EventFact {
    EventFact {
        at,
        result: "ok".into(),
        seq,
        actor: "cli:alice".into(),
        detail,
    }
}

fn token(id: &str, role: &str, created_days: i64, last_used_days: Option<i64>) -> TokenFact {
    TokenFact {
        id: id.into(),
        role: role.into(),
        name: String::new(),
        purposes: usize::from(role == "service"),
        created_at: NOW - created_days * DAY,
        expires_at: Some(NOW + 30 * DAY),
        revoked_at: None,
        last_used: last_used_days.map(|d| NOW - d * DAY),
    }
}

/// Everything in order: every control passes.
fn good() -> Snapshot {
    Snapshot {
        generated_at: NOW,
        at: NOW,
        production: true,
        backend: "postgres".into(),
        keys: vec![
            key("financialData", 1, "deprecated", 100),
            key("financialData", 2, "active", 12),
            key("userData", 1, "active", 30),
        ],
        policies: vec![default_policy("financialData"), default_policy("userData")],
        fields: FieldFacts {
            sad_names: [
                "cvv",
                "cardSecurityCode",
                "pin",
                "pinBlock",
                "trackData",
                "magneticStripe",
            ]
            .map(String::from)
            .to_vec(),
            sad_default: "strip".into(),
            sad_options: vec!["strip".into(), "reject".into()],
            card_purposes: vec![CardPurpose {
                purpose: "financialData".into(),
                fields: vec!["cardNumber".into()],
            }],
        },
        tokens: Some(vec![
            token("a1", "admin", 10, Some(1)),
            token("s1", "service", 200, Some(3)),
            token("u1", "auditor", 5, None),
        ]),
        audit: AuditFacts {
            enabled: true,
            journaled: true,
            fail_closed: true,
            failing: false,
            head_seq: 18_300,
            routes_audited: 27,
            routes_total: 27,
            verification: Some(Verification {
                at: NOW - DAY,
                through_seq: 18_224,
                broken: None,
                by: "server".into(),
            }),
        },
        tls: TlsFacts {
            source: "server".into(),
            served: true,
            versions: vec!["TLSv1.3".into(), "TLSv1.2".into()],
            suites: vec![
                "TLS13_AES_128_GCM_SHA256".into(),
                "TLS13_CHACHA20_POLY1305_SHA256".into(),
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into(),
            ],
            trusted_proxies: 0,
            https_enforced: true,
        },
        kek: KekFacts {
            path: Some("/etc/keyflow/kek.json".into()),
            kek_id: Some("kek-1".into()),
            mode: Some(0o100600),
            kdf_iterations: Some(600_000),
            same_dir_as_keystore: Some(false),
        },
        strict_mode: true,
        events: Events {
            last_backup: Some(event(
                NOW - 2 * DAY,
                10,
                Some(json!({"iterations": 600000})),
            )),
            last_backup_verify: Some(event(NOW - DAY, 11, None)),
            last_backup_verified: Some(event(
                NOW - DAY,
                11,
                Some(json!({"backupCreatedAt": NOW - 2 * DAY, "versions": 3})),
            )),
            last_restore: None,
            last_rotation: Some(event(NOW - 12 * DAY, 5, None)),
            last_rotation_failure: None,
            last_scan: Some(ScanFact {
                at: NOW - 10 * DAY,
                result: "ok".into(),
                backend: "postgres".into(),
                tables: vec!["expenses".into()],
                rows: 50_000,
                columns: 4,
                clear_values: 0,
                findings: vec![],
            }),
        },
    }
}

fn find<'a>(r: &'a Report, id: &str) -> &'a Control {
    r.standards
        .all()
        .map(|(_, c)| c)
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no control {id}"))
}

fn status(s: &Snapshot, id: &str) -> Status {
    find(&evaluate(s), id).status
}
