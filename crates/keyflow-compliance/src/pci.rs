//! PCI DSS v4.0.1 controls.

use crate::report::{Control, ControlBuilder};
use crate::snapshot::Snapshot;
use crate::util::{age_days, count, days_ago, thousands, when};

/// A discovery scan older than this many days no longer vouches for the data.
pub const SCAN_MAX_AGE_DAYS: i64 = 90;

/// Cipher-suite name parts that are AEAD (PCI DSS "strong cryptography" for 4.2.1).
const AEAD: [&str; 3] = ["_GCM_", "CHACHA20_POLY1305", "_CCM"];

/// Algorithms accepted as strong for data keys.
const STRONG_ALGORITHMS: [&str; 3] = ["AES-256", "aes-256-gcm", "AES-256-GCM"];

/// PBKDF2 iterations below which the KEK file's password wrapping is weak (OWASP).
pub const MIN_KEK_ITERATIONS: u32 = 600_000;

/// Every PCI DSS control, in requirement order.
pub fn controls(s: &Snapshot) -> Vec<Control> {
    vec![
        c_3_3_1(s),
        c_3_4_1(s),
        c_3_5_1(s),
        c_3_6_1(s),
        c_3_6_1_1(s),
        c_3_7_1(s),
        c_3_7_2(s),
        c_3_7_3(s),
        c_3_7_4(s),
        c_3_7_5(s),
        c_4_2_1(s),
        c_10_2(s),
        c_12_5_2(s),
    ]
}

fn c_3_3_1(s: &Snapshot) -> Control {
    let mut c = ControlBuilder::new(
        "3.3.1",
        "Sensitive authentication data is not retained after authorization",
    );
    let f = &s.fields;
    let names = |words: &[&str]| {
        f.sad_names
            .iter()
            .filter(|n| words.iter().any(|w| n.to_ascii_lowercase().contains(w)))
            .count()
    };
    let (codes, pins, track) = (
        names(&["cvv", "cvc", "cid", "cav2", "securitycode", "verification"]),
        names(&["pin"]),
        names(&["track", "magnetic", "magstripe"]),
    );
    c.measure("sadNames", f.sad_names.len())
        .measure("default", f.sad_default.clone());
    c.fact(format!(
        "the field layer treats {} names as sensitive authentication data: {codes} card-verification-code names, {pins} PIN names, {track} track-data names",
        f.sad_names.len()
    ));
    c.fact(format!(
        "default policy '{}'; a caller may choose: {}",
        f.sad_default,
        f.sad_options.join(", ")
    ));
    if f.sad_names.is_empty() {
        c.warn(
            "no sensitive-authentication-data names are known to the field layer here",
            "Evaluate on a build whose field layer lists CVV, PIN and track-data names.",
        );
    } else if codes == 0 || pins == 0 || track == 0 {
        c.fail(
            "a category of sensitive authentication data (card codes, PINs, track data) has no field name",
            "Add the missing names to the sensitive-authentication-data list.",
        );
    }
    let keeps = |p: &str| !matches!(p, "strip" | "reject");
    if keeps(&f.sad_default) || f.sad_options.iter().any(|o| keeps(o)) {
        c.fail(
            "a policy other than strip/reject lets sensitive authentication data be stored",
            "Only allow the strip and reject policies.",
        );
    } else if !f.sad_names.is_empty() {
        c.fact("values given to /encrypt as opaque data are not inspected: only named fields are stripped or refused");
        c.pass();
    }
    c.build()
}

fn scan_checks(c: &mut ControlBuilder, s: &Snapshot) {
    match &s.events.last_scan {
        None => {
            c.warn(
                "no discovery scan recorded",
                "Run `keyflow scan --target-url …` over the application's database.",
            );
        }
        Some(scan) => {
            let age = age_days(s.at, scan.at);
            c.measure("lastScanAgeDays", age)
                .measure("lastScanClearValues", scan.clear_values)
                .measure("lastScanRows", scan.rows);
            let scope = if scan.tables.is_empty() {
                "all text and JSON columns".to_owned()
            } else {
                format!("tables {}", scan.tables.join(", "))
            };
            c.fact(format!(
                "last discovery scan {} ({}): {} backend, {scope}, {} rows, {} columns",
                when(scan.at),
                days_ago(age),
                if scan.backend.is_empty() {
                    "unknown"
                } else {
                    &scan.backend
                },
                thousands(scan.rows),
                thousands(scan.columns)
            ));
            if scan.result != "ok" {
                c.warn(
                    format!("the last discovery scan did not complete: {}", scan.result),
                    "Re-run the discovery scan until it completes.",
                );
            } else if scan.clear_values > 0 {
                let cols: Vec<String> = scan
                    .findings
                    .iter()
                    .filter(|f| f.count > 0)
                    .map(|f| format!("{}.{} ({} {})", f.table, f.column, f.count, f.detector))
                    .collect();
                c.fail(
                    format!(
                        "the last discovery scan found {} clear sensitive values: {}",
                        thousands(scan.clear_values),
                        cols.join(", ")
                    ),
                    "Encrypt those columns (`keyflow migrate`), then scan again.",
                );
            } else if age > SCAN_MAX_AGE_DAYS {
                c.warn(
                    format!("the last discovery scan is older than {SCAN_MAX_AGE_DAYS} days"),
                    "Scan the application's database at least every 90 days.",
                );
            } else {
                c.fact("it found no clear sensitive values");
                c.pass();
            }
        }
    }
}

fn c_3_4_1(s: &Snapshot) -> Control {
    let mut c = ControlBuilder::new("3.4.1", "PAN is rendered unreadable anywhere it is stored");
    let active: Vec<&str> = s
        .fields
        .card_purposes
        .iter()
        .filter(|p| {
            s.keys
                .iter()
                .any(|k| k.purpose == p.purpose && k.status == "active")
        })
        .map(|p| p.purpose.as_str())
        .collect();
    for p in &s.fields.card_purposes {
        c.fact(format!(
            "purpose {} encrypts card fields {} with AES-256-GCM{}",
            p.purpose,
            p.fields.join(", "),
            if active.contains(&p.purpose.as_str()) {
                ""
            } else {
                " (no active key yet)"
            }
        ));
    }
    c.measure("cardPurposesWithKeys", active.len());
    if active.is_empty() {
        c.warn(
            "no purpose that holds card data has an active key: nothing shows card data is encrypted here",
            "Encrypt card data under a card-data purpose (e.g. financialData).",
        );
    } else {
        c.pass();
    }
    scan_checks(&mut c, s);
    c.build()
}

fn c_3_5_1(s: &Snapshot) -> Control {
    let mut c = ControlBuilder::new("3.5.1", "Strong cryptography protects stored account data");
    let usable: Vec<_> = s.keys.iter().filter(|k| k.has_material).collect();
    let weak: Vec<String> = usable
        .iter()
        .filter(|k| !STRONG_ALGORITHMS.contains(&k.algorithm.as_str()))
        .map(|k| format!("{}:v{} ({})", k.purpose, k.version, k.algorithm))
        .collect();
    c.measure("versions", usable.len())
        .measure("weak", weak.len());
    if usable.is_empty() {
        c.not_applicable("no key version holds material: nothing is encrypted here yet");
    } else if weak.is_empty() {
        c.fact(format!(
            "{} of {} key versions with material are AES-256 (AES-256-GCM for data, AES-256-GCM-SIV deterministic, HMAC-SHA256 blind indexes, per-mode HKDF subkeys)",
            usable.len(),
            usable.len()
        ));
        c.pass();
    } else {
        c.fail(
            format!("versions with another algorithm: {}", weak.join(", ")),
            "Re-encrypt the data under an AES-256 purpose and revoke these versions.",
        );
    }
    c.build()
}

fn kek_checks(c: &mut ControlBuilder, s: &Snapshot) {
    let k = &s.kek;
    match k.mode {
        Some(mode) => {
            c.measure("kekFileMode", format!("{:o}", mode & 0o777));
            if mode & 0o077 != 0 {
                c.fail(
                    format!(
                        "the KEK file is readable by others than its owner (mode {:o})",
                        mode & 0o777
                    ),
                    "chmod 600 the KEK file.",
                );
            } else {
                c.fact(format!("KEK file mode {:o} (owner only)", mode & 0o777));
            }
        }
        None => {
            c.warn(
                "the KEK file's permissions are unknown here",
                "Evaluate where the KEK file is readable (the server or the CLI host).",
            );
        }
    }
    c.fact("the KEK is never stored in the keystore; every DEK is stored wrapped under it (AES-256-GCM, bound to purpose and version)");
    match k.same_dir_as_keystore {
        Some(true) => {
            c.warn(
                "the KEK file sits in the same directory as the SQLite keystore: one copy of the directory holds both (the KEK still needs its password)",
                "Set KEK_PATH outside the data directory (another volume or a secrets mount).",
            );
        }
        Some(false) => {
            c.fact("the KEK file is stored apart from the keystore database");
        }
        None => {
            c.warn(
                "where the KEK file lives relative to the keystore is unknown here",
                "Evaluate on the host that holds the KEK file.",
            );
        }
    }
}

fn c_3_6_1(s: &Snapshot) -> Control {
    let mut c = ControlBuilder::new(
        "3.6.1",
        "Keys are protected: KEK apart from data keys, least access",
    );
    kek_checks(&mut c, s);
    let mut other_kek: Vec<String> = s
        .keys
        .iter()
        .filter(|k| k.has_material && s.kek.kek_id.as_deref().is_some_and(|id| id != k.kek_id))
        .map(|k| format!("{}:v{}", k.purpose, k.version))
        .collect();
    other_kek.truncate(5);
    if !other_kek.is_empty() {
        c.warn(
            format!(
                "versions wrapped under another KEK than the current one: {}",
                other_kek.join(", ")
            ),
            "Finish the KEK rotation (`keyflow kek rotate`).",
        );
    }
    c.pass();
    c.build()
}

fn c_3_6_1_1(s: &Snapshot) -> Control {
    let mut c = ControlBuilder::new(
        "3.6.1.1",
        "A documented description of the cryptographic architecture and key inventory",
    );
    let purposes = {
        let mut p: Vec<&str> = s.keys.iter().map(|k| k.purpose.as_str()).collect();
        p.sort_unstable();
        p.dedup();
        p.len()
    };
    c.measure("versions", s.keys.len())
        .measure("purposes", purposes);
    if s.keys.is_empty() {
        c.not_applicable("the keystore holds no key versions: the inventory is empty");
    } else {
        c.fact(format!(
            "inventory of {} key versions in {purposes} purposes (below): algorithm, state, creation, cryptoperiod, usage, wrapping KEK",
            thousands(s.keys.len() as u64)
        ));
        c.pass();
    }
    c.build()
}

fn c_3_7_1(s: &Snapshot) -> Control {
    let mut c = ControlBuilder::new("3.7.1", "Generation of strong cryptographic keys");
    let native = count(&s.keys, |k| !k.legacy);
    let legacy: Vec<_> = s
        .keys
        .iter()
        .filter(|k| k.legacy && k.can_decrypt())
        .collect();
    c.measure("generated", native)
        .measure("legacyDecrypting", legacy.len());
    if s.keys.is_empty() {
        c.not_applicable("no key versions yet");
        return c.build();
    }
    c.fact(format!(
        "{native} versions generated inside KeyFlow: 256 bits from the operating system's CSPRNG (getrandom)"
    ));
    if legacy.is_empty() {
        c.pass();
    } else {
        c.warn(
            format!(
                "{} versions imported from the legacy system (generated outside KeyFlow) still decrypt",
                legacy.len()
            ),
            "Re-encrypt legacy data (`keyflow reencrypt --from-legacy`), then revoke the imported versions.",
        );
    }
    c.build()
}

fn c_3_7_2(s: &Snapshot) -> Control {
    let mut c = ControlBuilder::new("3.7.2", "Secure distribution of keys");
    c.fact("data keys leave the keystore only wrapped under the KEK or inside password-encrypted backups; the API never returns key material");
    match &s.events.last_backup {
        Some(b) => {
            let iterations = b.detail.as_ref().and_then(|d| d["iterations"].as_u64());
            c.fact(format!(
                "last backup {}{}",
                when(b.at),
                iterations.map_or(String::new(), |i| format!(
                    ", PBKDF2 {} iterations",
                    thousands(i)
                ))
            ));
            if iterations.is_some_and(|i| i < u64::from(MIN_KEK_ITERATIONS)) {
                c.warn(
                    "the last backup's password wrapping is below 600,000 PBKDF2 iterations",
                    "Make backups with the default KDF cost.",
                );
            }
        }
        None => {
            c.fact("no backup recorded: no copy of the keys left the keystore through KeyFlow");
        }
    }
    c.pass();
    c.build()
}

fn c_3_7_3(s: &Snapshot) -> Control {
    let mut c = ControlBuilder::new("3.7.3", "Secure storage of keys");
    let wrapped = count(&s.keys, |k| k.has_material);
    let destroyed = count(&s.keys, |k| k.status == "destroyed");
    c.measure("wrapped", wrapped)
        .measure("destroyed", destroyed);
    c.fact(format!(
        "{wrapped} versions stored wrapped (AES-256-GCM under the KEK); {destroyed} destroyed hold no material"
    ));
    let leaked = count(&s.keys, |k| k.status == "destroyed" && k.has_material);
    if leaked > 0 {
        c.fail(
            format!("{leaked} destroyed versions still hold wrapped material"),
            "Destroy them again and run `keyflow keys purge`.",
        );
    }
    match s.kek.kdf_iterations {
        Some(i) if i < MIN_KEK_ITERATIONS => {
            c.warn(
                format!(
                    "the KEK file's password wrapping uses {} PBKDF2 iterations (below 600,000)",
                    thousands(u64::from(i))
                ),
                "Raise the cost with `keyflow kek change-password`.",
            );
        }
        Some(i) => {
            c.fact(format!(
                "KEK file: PBKDF2-HMAC-SHA256, {} iterations",
                thousands(u64::from(i))
            ));
            c.pass();
        }
        None => {
            c.warn(
                "the KEK file's KDF cost is unknown here",
                "Evaluate where the KEK file is readable.",
            );
        }
    }
    c.build()
}

fn c_3_7_4(s: &Snapshot) -> Control {
    crate::lifecycle::cryptoperiods(
        ControlBuilder::new(
            "3.7.4",
            "Keys are changed at the end of their cryptoperiod, as configured and as it happened",
        ),
        s,
    )
}

fn c_3_7_5(s: &Snapshot) -> Control {
    crate::lifecycle::retirement(
        ControlBuilder::new("3.7.5", "Retirement, replacement or destruction of keys"),
        s,
    )
}

fn c_4_2_1(s: &Snapshot) -> Control {
    crate::transport::tls(
        ControlBuilder::new(
            "4.2.1",
            "Strong cryptography protects PAN during transmission",
        ),
        s,
    )
}

fn c_10_2(s: &Snapshot) -> Control {
    crate::lifecycle::audit(
        ControlBuilder::new(
            "10.2",
            "Audit logs record every operation and are protected against tampering",
        ),
        s,
    )
}

fn c_12_5_2(s: &Snapshot) -> Control {
    let mut c = ControlBuilder::new(
        "12.5.2",
        "The scope of account data is confirmed by data discovery",
    );
    scan_checks(&mut c, s);
    c.build()
}

/// Whether a cipher-suite name is AEAD.
pub(crate) fn is_aead(suite: &str) -> bool {
    AEAD.iter().any(|a| suite.contains(a))
}
