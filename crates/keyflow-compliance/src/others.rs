//! GDPR, NIST SP 800-57 Part 1 and ISO/IEC 27001:2022 controls. Some reuse the
//! outcome of a PCI DSS control (`pci`) instead of measuring the same facts twice.

use crate::lifecycle::GCM_LIMIT;
use crate::report::{Control, ControlBuilder, Status};
use crate::snapshot::Snapshot;
use crate::util::{age_days, days_ago, policy_for, thousands, when, DAY_MS};

/// A verified backup older than this many days is stale (GDPR Art. 32(1)(c)).
pub const BACKUP_MAX_AGE_DAYS: i64 = 30;
/// Tokens unused this many days should be revoked (ISO/IEC 27001 A.8.5, PCI DSS 8.2.6).
pub const TOKEN_IDLE_DAYS: i64 = 90;
/// NIST SP 800-57 Part 1 Table 1: originator-usage period of a symmetric data-encryption
/// key, at most 2 years.
pub const NIST_OUP_DAYS: i64 = 730;
/// … and its recipient-usage period, at most OUP + 3 years.
pub const NIST_RUP_DAYS: i64 = NIST_OUP_DAYS + 3 * 365;

fn status_of<'a>(pci: &'a [Control], id: &str) -> Option<&'a Control> {
    pci.iter().find(|c| c.id == id)
}

/// Carries another control's outcome into `c`, naming it.
fn inherit(c: &mut ControlBuilder, from: Option<&Control>, what: &str) {
    let Some(from) = from else { return };
    let line = format!("{what}: PCI DSS {} is {}", from.id, from.status.as_str());
    match from.status {
        Status::Fail => {
            c.fail(line, format!("See PCI DSS {}.", from.id));
        }
        Status::Warn => {
            c.warn(line, format!("See PCI DSS {}.", from.id));
        }
        Status::Pass => {
            c.fact(line);
            c.pass();
        }
        Status::NotApplicable => {
            c.fact(line);
        }
    }
}

/// GDPR controls.
pub fn gdpr(s: &Snapshot, pci: &[Control]) -> Vec<Control> {
    let active = s.keys.iter().filter(|k| k.status == "active").count();
    let mut f = ControlBuilder::new(
        "Art. 5(1)(f)",
        "Integrity and confidentiality of personal data",
    );
    if active == 0 {
        f.warn(
            "no active key: nothing shows personal data is encrypted here",
            "Encrypt personal data under a purpose (userData, healthData…).",
        );
    } else {
        f.fact(format!(
            "at rest: {active} purposes encrypt with AES-256-GCM"
        ));
    }
    inherit(&mut f, status_of(pci, "4.2.1"), "in transit");
    inherit(
        &mut f,
        status_of(pci, "10.2"),
        "accountability (audit trail)",
    );

    let mut d = ControlBuilder::new("Art. 25", "Data protection by design and by default");
    let personal: Vec<&str> = ["userData", "healthData", "financialData", "documents"]
        .into_iter()
        .filter(|p| {
            s.keys
                .iter()
                .any(|k| k.purpose == *p && k.status == "active")
        })
        .collect();
    d.measure("personalDataPurposes", personal.len());
    d.fact(format!(
        "field-level encryption by purpose with auto-detection of personal-data fields; pseudonymisation by deterministic encryption and blind indexes; sensitive authentication data {} by default",
        if s.fields.sad_default == "reject" { "refused" } else { "stripped" }
    ));
    if personal.is_empty() {
        d.warn(
            "no personal-data purpose (userData, healthData, financialData, documents) has an active key",
            "Encrypt personal data under its purpose.",
        );
    } else {
        d.fact(format!(
            "personal-data purposes in use: {}",
            personal.join(", ")
        ));
        d.pass();
    }
    if s.production && !s.strict_mode {
        d.warn(
            "strict mode is off in production: plaintext is accepted where a ciphertext is expected, and keys are created on first use",
            "Set ENCRYPTION_STRICT_MODE=true.",
        );
    }

    let mut a = ControlBuilder::new(
        "Art. 32(1)(a)",
        "Pseudonymisation and encryption of personal data",
    );
    inherit(&mut a, status_of(pci, "3.5.1"), "strong cryptography");
    inherit(&mut a, status_of(pci, "3.7.4"), "key cryptoperiods");
    if s.keys.is_empty() {
        a.not_applicable("no key versions yet");
    }

    vec![f.build(), d.build(), a.build(), restore(s), testing(s)]
}

fn restore(s: &Snapshot) -> Control {
    let mut c = ControlBuilder::new(
        "Art. 32(1)(c)",
        "Ability to restore availability and access: age of the last verified backup",
    );
    let ev = &s.events;
    match &ev.last_backup {
        None => {
            c.fail(
                "no key backup recorded: losing the keystore loses every key",
                "Make a backup (`keyflow keys backup -o FILE`) and keep it apart from the keystore.",
            );
        }
        Some(b) => {
            let age = age_days(s.at, b.at);
            c.measure("lastBackupAgeDays", age);
            c.fact(format!("last backup {} ({})", when(b.at), days_ago(age)));
        }
    }
    if let Some(v) = &ev.last_backup_verify {
        if v.result != "ok" {
            c.fail(
                format!(
                    "the last backup verification failed {}: {}",
                    when(v.at),
                    v.result
                ),
                "Make a new backup and verify it (`keyflow backup verify FILE`).",
            );
        }
    }
    match &ev.last_backup_verified {
        None => {
            c.warn(
                "no backup has been verified",
                "Verify a backup: `keyflow backup verify FILE` opens and checks it without restoring.",
            );
        }
        Some(v) => {
            let detail = v.detail.clone().unwrap_or_default();
            let made = detail["backupCreatedAt"].as_i64();
            let versions = detail["versions"].as_u64();
            let age_ms = made.unwrap_or(v.at);
            let age = age_days(s.at, age_ms);
            c.measure("verifiedBackupAgeDays", age);
            c.fact(format!(
                "last verified backup made {} ({}), {} versions, verified {}",
                when(age_ms),
                days_ago(age),
                versions.map_or("?".to_owned(), thousands),
                when(v.at)
            ));
            let newer = s
                .keys
                .iter()
                .filter(|k| k.has_material && k.created_at > age_ms)
                .count();
            if newer > 0 {
                c.warn(
                    format!("{newer} key versions were created after the last verified backup and are not in it"),
                    "Back up after every rotation (or daily) and verify the backup.",
                );
            }
            if age > BACKUP_MAX_AGE_DAYS {
                c.warn(
                    format!("the last verified backup is older than {BACKUP_MAX_AGE_DAYS} days"),
                    "Back up and verify at least monthly.",
                );
            }
            c.pass();
        }
    }
    if let Some(r) = &ev.last_restore {
        c.fact(format!("last restore {}", when(r.at)));
    }
    c.build()
}

fn testing(s: &Snapshot) -> Control {
    let mut c = ControlBuilder::new(
        "Art. 32(1)(d)",
        "Regular testing of the measures: when verification last ran",
    );
    match &s.events.last_backup_verify {
        None => {
            c.warn(
                "backup verification has never run",
                "Run `keyflow backup verify FILE` regularly (e.g. from cron).",
            );
        }
        Some(v) => {
            let age = age_days(s.at, v.at);
            c.measure("backupVerifyAgeDays", age);
            c.fact(format!(
                "backup verification last ran {} ({}), result {}",
                when(v.at),
                days_ago(age),
                v.result
            ));
            if age > BACKUP_MAX_AGE_DAYS {
                c.warn(
                    format!(
                        "backup verification has not run for more than {BACKUP_MAX_AGE_DAYS} days"
                    ),
                    "Verify backups at least monthly.",
                );
            }
        }
    }
    match &s.audit.verification {
        None => {
            c.warn(
                "the audit chain has never been verified",
                "Run `keyflow audit verify`, or keep a server running (it verifies hourly).",
            );
        }
        Some(v) => {
            let age = age_days(s.at, v.at);
            c.measure("auditVerifyAgeDays", age);
            c.fact(format!(
                "audit chain verification last ran {} ({}, {})",
                when(v.at),
                days_ago(age),
                if v.broken.is_some() { "broken" } else { "ok" }
            ));
            if age > crate::lifecycle::VERIFY_MAX_AGE_DAYS {
                c.warn(
                    "audit chain verification has not run for more than 7 days",
                    "Verify the chain at least weekly.",
                );
            }
        }
    }
    c.pass();
    c.build()
}

/// NIST SP 800-57 Part 1 (and SP 800-38D) controls.
pub fn nist(s: &Snapshot, pci: &[Control]) -> Vec<Control> {
    let mut p = ControlBuilder::new(
        "SP 800-57 Pt1 §5.3",
        "Cryptoperiods of data keys within the policy and the recommended originator-usage period",
    );
    let mut purposes: Vec<&str> = s.keys.iter().map(|k| k.purpose.as_str()).collect();
    purposes.sort_unstable();
    purposes.dedup();
    if purposes.is_empty() {
        p.not_applicable("no key versions yet");
    } else {
        let longest = purposes
            .iter()
            .map(|x| (policy_for(s, x).rotation_days, *x))
            .max()
            .unwrap_or_default();
        p.measure("longestPolicyDays", longest.0);
        p.fact(format!(
            "longest policy {} d ({}); recommended originator-usage period for a symmetric data-encryption key ≤ {NIST_OUP_DAYS} d",
            longest.0, longest.1
        ));
        if i64::from(longest.0) > NIST_OUP_DAYS {
            p.fail(
                format!("purpose {} rotates after {} d, beyond the 2-year originator-usage period", longest.1, longest.0),
                "Lower the rotation period to at most 730 days (`keyflow keys policy --rotation-days`).",
            );
        }
        let old_decrypt = s
            .keys
            .iter()
            .filter(|k| {
                k.can_decrypt() && s.at.saturating_sub(k.created_at) > NIST_RUP_DAYS * DAY_MS
            })
            .count();
        p.measure("beyondRecipientUsage", old_decrypt);
        if old_decrypt > 0 {
            p.warn(
                format!("{old_decrypt} versions older than the recipient-usage period (OUP + 3 years) still decrypt"),
                "Re-encrypt the data under current versions, then revoke the old ones.",
            );
        }
        inherit(&mut p, status_of(pci, "3.7.4"), "actual cryptoperiods");
    }

    let mut sep = ControlBuilder::new(
        "SP 800-57 Pt1 §5.2",
        "Key separation: the KEK only wraps keys, each data key serves one purpose and mode",
    );
    match &s.kek.kek_id {
        Some(id) => {
            let under = s
                .keys
                .iter()
                .filter(|k| k.has_material && k.kek_id == *id)
                .count();
            let with = s.keys.iter().filter(|k| k.has_material).count();
            sep.measure("wrappedUnderCurrentKek", under);
            sep.fact(format!(
                "KEK {id} wraps {under} of {with} data keys and encrypts no data; each purpose has its own key ring; per-mode subkeys (randomized, deterministic, blind index, file) come from HKDF with distinct labels"
            ));
            if under < with {
                sep.warn(
                    format!("{} data keys are wrapped under another KEK", with - under),
                    "Finish the KEK rotation (`keyflow kek rotate`).",
                );
            }
            if s.kek.same_dir_as_keystore == Some(true) {
                sep.warn(
                    "the KEK file and the keystore database share a directory",
                    "Keep the KEK file on another volume (KEK_PATH).",
                );
            }
            sep.pass();
        }
        None => {
            sep.warn(
                "the current KEK is unknown here",
                "Evaluate with the KEK file available.",
            );
        }
    }

    let mut gcm = ControlBuilder::new(
        "SP 800-38D §8.3",
        "AES-GCM invocations per key stay below 2^32 (random nonces)",
    );
    let top = s.keys.iter().max_by_key(|k| k.encryptions);
    match top {
        None => {
            gcm.not_applicable("no key versions yet");
        }
        Some(k) => {
            gcm.measure("maxEncryptions", k.encryptions);
            gcm.fact(format!(
                "most-used version {}:v{}: {} encryptions of {} allowed",
                k.purpose,
                k.version,
                thousands(k.encryptions),
                thousands(GCM_LIMIT)
            ));
            if k.encryptions >= GCM_LIMIT {
                gcm.fail(
                    "a version reached the 2^32 invocation limit",
                    "Rotate it and stop encrypting under it.",
                );
            } else {
                gcm.pass();
            }
        }
    }
    vec![p.build(), sep.build(), gcm.build()]
}

/// ISO/IEC 27001:2022 controls.
pub fn iso(s: &Snapshot, pci: &[Control]) -> Vec<Control> {
    let mut crypto = ControlBuilder::new("A.8.24", "Use of cryptography");
    let mut purposes: Vec<&str> = s.keys.iter().map(|k| k.purpose.as_str()).collect();
    purposes.sort_unstable();
    purposes.dedup();
    let explicit = purposes
        .iter()
        .filter(|p| s.policies.iter().any(|x| x.purpose == **p && x.explicit))
        .count();
    crypto
        .measure("purposes", purposes.len())
        .measure("explicitPolicies", explicit);
    crypto.fact(format!(
        "{} purposes; {explicit} with an explicit rotation policy, the others on the default (90 d rotation, 30 d grace)",
        purposes.len()
    ));
    inherit(&mut crypto, status_of(pci, "3.5.1"), "algorithms");
    inherit(&mut crypto, status_of(pci, "3.7.4"), "key management");
    inherit(&mut crypto, status_of(pci, "3.6.1"), "key protection");
    vec![crypto.build(), access(s), authentication(s)]
}

fn live(t: &crate::snapshot::TokenFact, at: i64) -> bool {
    t.revoked_at.is_none() && t.expires_at.is_none_or(|e| e > at)
}

fn access(s: &Snapshot) -> Control {
    let mut c = ControlBuilder::new("A.5.15", "Access control: tokens and roles");
    let Some(tokens) = &s.tokens else {
        c.warn(
            "the token list could not be read",
            "Evaluate where the keystore is readable.",
        );
        return c.build();
    };
    let live: Vec<_> = tokens.iter().filter(|t| live(t, s.at)).collect();
    let role = |r: &str| live.iter().filter(|t| t.role == r).count();
    let (admins, services, auditors) = (role("admin"), role("service"), role("auditor"));
    c.measure("admin", admins)
        .measure("service", services)
        .measure("auditor", auditors)
        .measure("live", live.len());
    if live.is_empty() {
        c.not_applicable("no live API token: nobody can use the API");
        return c.build();
    }
    c.fact(format!(
        "{} live tokens: {admins} admin, {services} service (each limited to its purposes), {auditors} auditor; key management is admin-only",
        live.len()
    ));
    let forever: Vec<&str> = live
        .iter()
        .filter(|t| t.role == "admin" && t.expires_at.is_none())
        .map(|t| t.id.as_str())
        .collect();
    if !forever.is_empty() {
        c.warn(
            format!("{} admin tokens never expire: {}", forever.len(), forever.join(", ")),
            "Give admin tokens an expiry (`keyflow tokens create --expires 90d`) and revoke the unbounded ones.",
        );
    }
    c.pass();
    c.build()
}

fn authentication(s: &Snapshot) -> Control {
    let mut c = ControlBuilder::new(
        "A.8.5",
        "Secure authentication: hashed tokens, expiry, no idle tokens",
    );
    let Some(tokens) = &s.tokens else {
        c.warn(
            "the token list could not be read",
            "Evaluate where the keystore is readable.",
        );
        return c.build();
    };
    let expired = tokens
        .iter()
        .filter(|t| t.revoked_at.is_none() && t.expires_at.is_some_and(|e| e <= s.at))
        .count();
    let revoked = tokens.iter().filter(|t| t.revoked_at.is_some()).count();
    let live: Vec<_> = tokens.iter().filter(|t| live(t, s.at)).collect();
    c.measure("expired", expired).measure("revoked", revoked);
    if live.is_empty() {
        c.not_applicable("no live API token");
        return c.build();
    }
    c.fact(format!(
        "tokens are stored as SHA-256 hashes only; {expired} expired (refused), {revoked} revoked"
    ));
    if !s.audit.enabled {
        c.warn(
            "when tokens were last used is unknown: the audit trail is off",
            "Turn the audit trail on.",
        );
    }
    let idle: Vec<String> = live
        .iter()
        .filter(|t| {
            let seen = t.last_used.unwrap_or(t.created_at);
            s.audit.enabled && age_days(s.at, seen) >= TOKEN_IDLE_DAYS
        })
        .map(|t| {
            format!(
                "{} ({}, {})",
                t.id,
                t.role,
                t.last_used.map_or("never used".to_owned(), |u| format!(
                    "last used {}",
                    when(u)
                ))
            )
        })
        .collect();
    c.measure("idle90Days", idle.len());
    if !idle.is_empty() {
        c.warn(
            format!(
                "{} live tokens unused for {TOKEN_IDLE_DAYS} days or more: {}",
                idle.len(),
                idle.join(", ")
            ),
            "Revoke tokens nobody uses (`keyflow tokens revoke ID`).",
        );
    }
    c.pass();
    c.build()
}
