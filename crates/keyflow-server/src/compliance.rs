//! Gathers the facts of a compliance report ([`keyflow_compliance::Snapshot`]) from live
//! state: the keystore (versions, policies, tokens), the audit store (the latest record
//! of each operation of interest, through its operation index, `limit: 1` — never a scan
//! of the chain), the KEK file's metadata, and what this process serves. The evaluation
//! itself is pure (`keyflow-compliance`); this module only reads.
//!
//! Used by `GET /compliance` ([`crate::routes::compliance`]) and by `keyflow compliance`.

use std::path::{Path, PathBuf};

use keyflow_compliance::{
    AuditFacts, CardPurpose, EventFact, Events, FieldFacts, KekFacts, KeyFact, PolicyFact,
    ScanFact, Snapshot, TlsFacts, TokenFact, Verification,
};
use keyflow_fields::names;
use keyflow_kms::audit::{AuditFilter, AuditStore};
use keyflow_kms::{EncryptionService, KmsError, VersionFilter};

/// The rustls server configuration [`tls_facts`] reads (named here so callers need not
/// depend on rustls).
pub type TlsServerConfig = rustls::ServerConfig;

/// What this process serves and how it is deployed: set once by `keyflow serve`
/// ([`crate::AppState::set_deployment`]) or built by `keyflow compliance` from its
/// environment. The default knows nothing (every control needing it says so).
#[derive(Debug, Clone, Default)]
pub struct Deployment {
    /// Production mode.
    pub production: bool,
    /// TLS as served (or as configured).
    pub tls: TlsFacts,
    /// The audit trail writes through a local journal.
    pub audit_journaled: bool,
    /// The SQLite keystore file, when the keystore is SQLite.
    pub keystore_file: Option<PathBuf>,
    /// `sqlite` or `postgres`.
    pub backend: String,
}

/// The TLS facts of a rustls server configuration: the protocol versions it offers and
/// its cipher suites in order. `None`: plain HTTP.
pub fn tls_facts(
    config: Option<&rustls::ServerConfig>,
    trusted_proxies: usize,
    https_enforced: bool,
    source: &str,
) -> TlsFacts {
    let (versions, suites) = match config {
        None => (Vec::new(), Vec::new()),
        Some(c) => {
            // The server offers exactly the versions of its suites (see
            // `crate::tls::server_config_with`).
            let suites = &c.crypto_provider().cipher_suites;
            let versions = [
                (rustls::ProtocolVersion::TLSv1_3, "TLSv1.3"),
                (rustls::ProtocolVersion::TLSv1_2, "TLSv1.2"),
            ]
            .into_iter()
            .filter(|(v, _)| suites.iter().any(|s| s.version().version == *v))
            .map(|(_, n)| n.to_owned())
            .collect();
            let suites = suites
                .iter()
                .map(|s| s.suite().as_str().unwrap_or("unknown").to_owned())
                .collect();
            (versions, suites)
        }
    };
    TlsFacts {
        source: source.to_owned(),
        served: config.is_some(),
        versions,
        suites,
        trusted_proxies,
        https_enforced,
    }
}

/// What the field layer does with card data and sensitive authentication data.
pub fn field_facts(purposes_in_use: &[String]) -> FieldFacts {
    let sad_options = ["strip", "reject", "keep", "store"]
        .into_iter()
        .filter(|p| p.parse::<keyflow_fields::SadPolicy>().is_ok())
        .map(str::to_owned)
        .collect();
    let default = match keyflow_fields::SadPolicy::default() {
        keyflow_fields::SadPolicy::Strip => "strip",
        keyflow_fields::SadPolicy::Reject => "reject",
    };
    let card_purposes = names::KNOWN_PURPOSES
        .iter()
        .filter(|p| **p == "financialData" || purposes_in_use.iter().any(|u| u == *p))
        .filter_map(|p| {
            let lists = names::lists_for_purpose(p)?;
            let fields: Vec<String> = lists
                .iter()
                .flat_map(|l| l.iter())
                .filter(|f| **f == "cardNumber")
                .map(|f| (*f).to_owned())
                .collect();
            (!fields.is_empty()).then(|| CardPurpose {
                purpose: (*p).to_owned(),
                fields,
            })
        })
        .collect();
    FieldFacts {
        sad_names: names::SENSITIVE_AUTHENTICATION_DATA
            .iter()
            .map(|n| (*n).to_owned())
            .collect(),
        sad_default: default.to_owned(),
        sad_options,
        card_purposes,
    }
}

/// The KEK file's permissions, KDF cost and id (no password needed), and whether the
/// SQLite keystore sits in the same directory.
pub fn kek_facts(path: Option<&Path>, keystore_file: Option<&Path>, backend: &str) -> KekFacts {
    let Some(path) = path else {
        return KekFacts::default();
    };
    #[cfg(unix)]
    let mode = std::fs::metadata(path).ok().map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode()
    });
    #[cfg(not(unix))]
    let mode = None;
    let file = std::fs::read(path)
        .ok()
        .and_then(|b| keyflow_kms::keyflow_core::kek::KekFile::parse(&b).ok());
    let dir = |p: &Path| {
        std::fs::canonicalize(p)
            .ok()
            .and_then(|c| c.parent().map(Path::to_path_buf))
    };
    let same_dir = match (backend, keystore_file) {
        ("sqlite", Some(db)) => match (dir(path), dir(db)) {
            (Some(a), Some(b)) => Some(a == b),
            _ => None,
        },
        ("sqlite", None) => None,
        // Another system (PostgreSQL) holds the keystore.
        _ => Some(false),
    };
    KekFacts {
        path: Some(path.display().to_string()),
        kek_id: file.as_ref().map(|f| f.kek_id().to_owned()),
        mode,
        kdf_iterations: file.as_ref().map(|f| f.iterations()),
        same_dir_as_keystore: same_dir,
    }
}

/// The latest record of `operation` (with `result`, when given): one indexed query.
pub async fn latest(
    store: &dyn AuditStore,
    operation: &str,
    result: Option<&str>,
) -> Result<Option<EventFact>, KmsError> {
    let filter = AuditFilter {
        operation: Some(operation.to_owned()),
        result: result.map(str::to_owned),
        limit: 1,
        ..AuditFilter::default()
    };
    let rows = store.audit_query(&filter).await.map_err(KmsError::from)?;
    Ok(rows.into_iter().next().map(|r| {
        let detail = serde_json::from_str::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|b| b.get("detail").cloned());
        EventFact {
            at: r.time,
            result: r.result,
            seq: r.seq,
            actor: r.actor,
            detail,
        }
    }))
}

/// The later of two events (by chain position).
fn newer(a: Option<EventFact>, b: Option<EventFact>) -> Option<EventFact> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.seq > a.seq { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The latest records of interest ([`Events`]) and the latest recorded chain
/// verification (`audit.verify`, by `keyflow audit verify`).
pub async fn events(store: &dyn AuditStore) -> Result<(Events, Option<Verification>), KmsError> {
    let scan = latest(store, "scan.database", None).await?;
    let failed_rotation = newer(
        latest(store, "keys.rotate", Some("failed")).await?,
        latest(store, "scheduler.failed", None).await?,
    );
    let events = Events {
        last_backup: latest(store, "keys.backup", Some("ok")).await?,
        last_backup_verify: latest(store, "backup.verify", None).await?,
        last_backup_verified: latest(store, "backup.verify", Some("ok")).await?,
        last_restore: latest(store, "keys.restore", Some("ok")).await?,
        last_rotation: latest(store, "keys.rotate", Some("ok")).await?,
        last_rotation_failure: failed_rotation,
        last_scan: scan.map(|e| ScanFact::from_event(e.at, &e.result, e.detail.as_ref())),
    };
    let verify = latest(store, "audit.verify", None).await?.map(|e| {
        let d = e.detail.unwrap_or_default();
        Verification {
            at: e.at,
            through_seq: d["verifiedThrough"].as_u64().unwrap_or(0),
            broken: (e.result != "ok")
                .then(|| d["error"].as_str().unwrap_or(e.result.as_str()).to_owned()),
            by: e.actor,
        }
    });
    Ok((events, verify))
}

/// The later of the server's own verification and a recorded one.
pub fn later_verification(
    a: Option<Verification>,
    b: Option<Verification>,
) -> Option<Verification> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.at > a.at { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// How many API routes are audited, of those that are not probes (`/health`,
/// `/openapi.json`).
pub fn audited_routes() -> (usize, usize) {
    crate::route_coverage()
}

/// Everything but the audit trail's own state: key versions, policies, tokens (with
/// their last use, when an audit store is given), the KEK file and the deployment.
pub async fn gather(
    service: &EncryptionService,
    audit_store: Option<&dyn AuditStore>,
    mut audit: AuditFacts,
    deployment: &Deployment,
    kek_path: Option<&Path>,
    (generated_at, at): (i64, i64),
) -> Result<Snapshot, KmsError> {
    let legacy: Vec<(String, u32)> = service
        .keys()
        .legacy_keys()
        .await?
        .into_iter()
        .map(|l| (l.purpose.to_string(), l.version.get()))
        .collect();
    let keys: Vec<KeyFact> = service
        .keys()
        .list(&VersionFilter::default())
        .await?
        .into_iter()
        .map(|r| {
            let purpose = r.purpose.to_string();
            let version = r.version.get();
            KeyFact {
                legacy: legacy.iter().any(|(p, v)| *p == purpose && *v == version),
                purpose,
                version,
                algorithm: r.algorithm,
                status: r.status.as_str().to_owned(),
                created_at: r.created_at,
                status_changed_at: r.status_changed_at,
                encryptions: r.encryptions,
                kek_id: r.kek_id,
                has_material: r.wrapped_key.is_some(),
            }
        })
        .collect();
    let mut purposes: Vec<String> = keys.iter().map(|k| k.purpose.clone()).collect();
    purposes.sort_unstable();
    purposes.dedup();
    let explicit = service.keys().policies().await?;
    let policies = purposes
        .iter()
        .map(|p| match explicit.iter().find(|(q, _)| q.as_str() == p) {
            Some((_, x)) => PolicyFact {
                purpose: p.clone(),
                rotation_days: x.rotation_days,
                grace_days: x.grace_days,
                warn_days: x.warn_days,
                max_encryptions: x.max_encryptions,
                explicit: true,
            },
            None => {
                let d = keyflow_kms::Policy::default();
                PolicyFact {
                    purpose: p.clone(),
                    rotation_days: d.rotation_days,
                    grace_days: d.grace_days,
                    warn_days: d.warn_days,
                    max_encryptions: d.max_encryptions,
                    explicit: false,
                }
            }
        })
        .collect();
    // Tokens are the server's, not the service's: read from the keystore directly.
    let tokens = match service.ring().keystore().list_tokens().await {
        Ok(list) => {
            let mut out = Vec::with_capacity(list.len());
            for t in list {
                let last_used = match audit_store {
                    Some(a) => last_use(a, &t.id).await?,
                    None => None,
                };
                out.push(TokenFact {
                    id: t.id,
                    role: t.role.as_str().to_owned(),
                    name: t.name,
                    purposes: t.purposes.len(),
                    created_at: t.created_at,
                    expires_at: t.expires_at,
                    revoked_at: t.revoked_at,
                    last_used,
                });
            }
            Some(out)
        }
        Err(e) => {
            tracing::warn!(error = %e, "compliance: the token list could not be read");
            None
        }
    };
    let (events, recorded) = match audit_store {
        Some(a) => events(a).await?,
        None => (Events::default(), None),
    };
    audit.verification = later_verification(audit.verification.take(), recorded);
    Ok(Snapshot {
        generated_at,
        at,
        production: deployment.production,
        backend: deployment.backend.clone(),
        fields: field_facts(&purposes),
        keys,
        policies,
        tokens,
        audit,
        tls: deployment.tls.clone(),
        kek: kek_facts(
            kek_path,
            deployment.keystore_file.as_deref(),
            &deployment.backend,
        ),
        strict_mode: service.strict_mode(),
        events,
    })
}

/// A token's latest recorded request (the actor index, newest first, one row).
async fn last_use(store: &dyn AuditStore, id: &str) -> Result<Option<i64>, KmsError> {
    let filter = AuditFilter {
        actor: Some(id.to_owned()),
        limit: 1,
        ..AuditFilter::default()
    };
    let rows = store.audit_query(&filter).await.map_err(KmsError::from)?;
    Ok(rows.first().map(|r| r.time))
}
