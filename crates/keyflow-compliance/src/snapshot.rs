//! The facts a report is computed from, gathered by the caller (the server or the CLI)
//! from live state. Every time is Unix milliseconds. `None` means "not known here"
//! (the control that needs it says so), never "fine".

use serde::{Deserialize, Serialize};

/// Everything [`crate::evaluate`] looks at.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// When the report is made (the real clock).
    pub generated_at: i64,
    /// The instant the time-dependent controls are evaluated at (`--at`, default now).
    pub at: i64,
    /// Production mode (`KEYFLOW_ENV` / `NODE_ENV` = production).
    pub production: bool,
    /// `sqlite`, `postgres` or another backend name.
    pub backend: String,
    /// Every key version (metadata only).
    pub keys: Vec<KeyFact>,
    /// The rotation policy of every purpose that has key versions (explicit or default).
    pub policies: Vec<PolicyFact>,
    /// What the field layer does with card data and sensitive authentication data.
    pub fields: FieldFacts,
    /// API tokens; `None` when they could not be read.
    pub tokens: Option<Vec<TokenFact>>,
    /// The audit trail.
    pub audit: AuditFacts,
    /// Transport security as served.
    pub tls: TlsFacts,
    /// The KEK file.
    pub kek: KekFacts,
    /// Strict mode (`ENCRYPTION_STRICT_MODE`): no implicit key creation, fail closed.
    pub strict_mode: bool,
    /// The latest recorded operations of interest (from the audit trail).
    pub events: Events,
}

/// One key version.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyFact {
    /// Key ring.
    pub purpose: String,
    /// Version number.
    pub version: u32,
    /// Algorithm name (`AES-256`).
    pub algorithm: String,
    /// `active`, `rotating`, `deprecated`, `revoked` or `destroyed`.
    pub status: String,
    /// Creation time.
    pub created_at: i64,
    /// Last state change.
    pub status_changed_at: i64,
    /// Encryptions made with it.
    pub encryptions: u64,
    /// The KEK that wraps it.
    pub kek_id: String,
    /// Wrapped material present (false once destroyed).
    pub has_material: bool,
    /// Imported from the legacy system (generated outside KeyFlow).
    pub legacy: bool,
}

impl KeyFact {
    /// May this version still decrypt?
    pub fn can_decrypt(&self) -> bool {
        matches!(self.status.as_str(), "active" | "rotating" | "deprecated")
    }
}

/// The rotation policy of one purpose.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyFact {
    /// Key ring.
    pub purpose: String,
    /// Cryptoperiod of an active version, days.
    pub rotation_days: u32,
    /// Decrypt-only days after a rotation before deprecation.
    pub grace_days: u32,
    /// Rotation happens this many days before the cryptoperiod ends.
    pub warn_days: u32,
    /// Encryptions per version before rotation is due.
    pub max_encryptions: u64,
    /// Set by an admin (false: the default policy applies).
    pub explicit: bool,
}

/// What the field layer does with card data (PCI DSS 3.3.1, 3.4.1).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldFacts {
    /// Field names treated as sensitive authentication data (never stored).
    pub sad_names: Vec<String>,
    /// The default policy for them (`strip` or `reject`).
    pub sad_default: String,
    /// Every policy a caller may choose (a `keep` here would defeat 3.3.1).
    pub sad_options: Vec<String>,
    /// Purposes whose auto-detection encrypts card numbers, with those field names.
    pub card_purposes: Vec<CardPurpose>,
}

/// A purpose that encrypts card numbers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CardPurpose {
    /// The purpose.
    pub purpose: String,
    /// The card-data field names it encrypts.
    pub fields: Vec<String>,
}

/// One API token (never its secret).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenFact {
    /// Public id.
    pub id: String,
    /// `admin`, `service` or `auditor`.
    pub role: String,
    /// Label.
    pub name: String,
    /// Purposes a service token may use.
    pub purposes: usize,
    /// Creation time.
    pub created_at: i64,
    /// Expiry.
    pub expires_at: Option<i64>,
    /// Revocation time.
    pub revoked_at: Option<i64>,
    /// Last recorded use (from the audit trail); `None`: never seen or unknown.
    pub last_used: Option<i64>,
}

/// The audit trail's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditFacts {
    /// Recording is on.
    pub enabled: bool,
    /// Records go to a local journal before the database.
    pub journaled: bool,
    /// An unwritable trail refuses operations.
    pub fail_closed: bool,
    /// The trail cannot be written right now.
    pub failing: bool,
    /// The chain head's sequence number.
    pub head_seq: u64,
    /// Audited API routes, and all API routes but the unaudited probes.
    pub routes_audited: usize,
    /// All API routes that are not probes (`/health`, `/openapi.json`).
    pub routes_total: usize,
    /// The latest verification of the chain.
    pub verification: Option<Verification>,
}

/// One verification of the audit chain.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// When it ran.
    pub at: i64,
    /// The last record it verified.
    pub through_seq: u64,
    /// The break it found, if any.
    pub broken: Option<String>,
    /// Who ran it (`server` background pass, `cli`).
    pub by: String,
}

/// Transport security as served.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsFacts {
    /// Where these facts come from: `server` (the running rustls configuration) or
    /// `configuration` (what `keyflow serve` would build from this environment).
    pub source: String,
    /// KeyFlow terminates TLS itself.
    pub served: bool,
    /// Protocol versions offered (`TLSv1.2`, `TLSv1.3`).
    pub versions: Vec<String>,
    /// Cipher suites offered, in order (rustls names).
    pub suites: Vec<String>,
    /// Proxies trusted to terminate TLS in front of KeyFlow.
    pub trusted_proxies: usize,
    /// Plain HTTP is redirected or refused (production).
    pub https_enforced: bool,
}

/// The KEK file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KekFacts {
    /// Its path, when known.
    pub path: Option<String>,
    /// The current KEK's id.
    pub kek_id: Option<String>,
    /// Unix permission bits of the file (`None`: unknown).
    pub mode: Option<u32>,
    /// PBKDF2 iterations of its password wrapping.
    pub kdf_iterations: Option<u32>,
    /// The keystore database is a file in the same directory (SQLite next to the KEK).
    pub same_dir_as_keystore: Option<bool>,
}

/// The latest record of each operation of interest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Events {
    /// Latest successful `keys.backup`.
    pub last_backup: Option<EventFact>,
    /// Latest `backup.verify` (any result).
    pub last_backup_verify: Option<EventFact>,
    /// Latest successful `backup.verify`.
    pub last_backup_verified: Option<EventFact>,
    /// Latest successful `keys.restore`.
    pub last_restore: Option<EventFact>,
    /// Latest successful `keys.rotate`.
    pub last_rotation: Option<EventFact>,
    /// Latest failed `keys.rotate` or `scheduler.failed`.
    pub last_rotation_failure: Option<EventFact>,
    /// Latest `scan.database` (discovery scan).
    pub last_scan: Option<ScanFact>,
}

/// One audit record, reduced to what a control shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventFact {
    /// When.
    pub at: i64,
    /// `ok` or an error code.
    pub result: String,
    /// Its sequence number in the chain.
    pub seq: u64,
    /// Who (token id, `cli:<user>`, `scheduler:<instance>`).
    pub actor: String,
    /// The record's `detail`, as stored.
    pub detail: Option<serde_json::Value>,
}

/// The latest database discovery scan (`keyflow scan --target-url`, operation
/// `scan.database`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanFact {
    /// When.
    pub at: i64,
    /// `ok` or an error code.
    pub result: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Tables scanned.
    pub tables: Vec<String>,
    /// Rows scanned.
    pub rows: u64,
    /// Columns scanned.
    pub columns: u64,
    /// Clear sensitive values found, in total.
    pub clear_values: u64,
    /// Per table.column and detector.
    pub findings: Vec<Finding>,
}

/// Clear values of one kind found in one column.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Table.
    pub table: String,
    /// Column.
    pub column: String,
    /// `pan`, `ssn`, `iban`, `email` or `phone`.
    pub detector: String,
    /// How many.
    pub count: u64,
}

impl ScanFact {
    /// Reads a `scan.database` record's `detail` (the contract of `keyflow scan
    /// --target-url`); missing parts stay empty.
    pub fn from_event(at: i64, result: &str, detail: Option<&serde_json::Value>) -> Self {
        let d = detail.cloned().unwrap_or_default();
        let scope = &d["scope"];
        let findings = d["findings"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| Finding {
                        table: f["table"].as_str().unwrap_or_default().to_owned(),
                        column: f["column"].as_str().unwrap_or_default().to_owned(),
                        detector: f["detector"].as_str().unwrap_or_default().to_owned(),
                        count: f["count"].as_u64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            at,
            result: result.to_owned(),
            backend: scope["backend"].as_str().unwrap_or_default().to_owned(),
            tables: scope["tables"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            rows: d["rows"].as_u64().unwrap_or(0),
            columns: d["columns"].as_u64().unwrap_or(0),
            clear_values: d["clearValues"].as_u64().unwrap_or(0),
            findings,
        }
    }
}
