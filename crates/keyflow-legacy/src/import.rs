//! `legacy import`: the legacy DEKs become read-only key versions of their purposes,
//! wrapped under KeyFlow's KEK (ARCHITECTURE decision 41).
//!
//! Per key, with a census (decision 42): each key is imported, found already present,
//! or refused with its reason; the accepted keys are written in **one** keystore
//! transaction, so a run writes all of them or nothing. Whole-input failures (wrong
//! password, backup checksum mismatch) fail the run before anything is read.
//!
//! Placement: legacy version `v` of purpose `P` becomes KeyFlow version `v` of `P`
//! (so both systems name a key the same way). It is accepted when that slot is free
//! and below the purpose's active KeyFlow version, or when the purpose has no active
//! version — then a fresh active version (new random DEK) is created above every
//! legacy version, in the same transaction, so the purpose can encrypt. A slot that
//! holds a KeyFlow key, or a legacy version above the active one, is refused.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use keyflow_kms::keyflow_core::SecretKey;
use keyflow_kms::legacy::LegacyKeyRecord;
use keyflow_kms::{
    EncryptionService, KeyStatus, KeyVersion, KeyVersionRecord, Purpose, VersionFilter,
    WriteOutcome,
};
use serde::Serialize;

use crate::error::{LegacyError, Result};
use crate::kek::LegacyKek;
use crate::keys::{Entries, KeyEntry, LegacyStatus};

/// What happened to one legacy key id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Written now (or, in a dry run, would be).
    Imported,
    /// The keystore already holds it (a previous run).
    AlreadyPresent,
    /// Not imported; see the reason.
    Unreadable,
}

/// One line of the census. Never carries key material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyReport {
    /// The legacy key id (or, when even that could not be read, the source).
    pub key_id: String,
    /// The purpose, when known.
    pub purpose: Option<String>,
    /// The version, when known.
    pub version: Option<u32>,
    /// Where it was read (several sources joined by `, `).
    pub source: String,
    /// The outcome.
    pub outcome: Outcome,
    /// Why (refusals) or a note (e.g. `revoked in the legacy system`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A fresh active version created for a purpose that had none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewActive {
    /// The purpose.
    pub purpose: String,
    /// Its new active version.
    pub version: u32,
}

/// The census of one import run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Census {
    /// Distinct legacy key ids found (plus entries whose id could not be read).
    pub found: usize,
    /// Imported now.
    pub imported: usize,
    /// Already in the keystore.
    pub already_present: usize,
    /// Refused, each with its reason.
    pub unreadable: usize,
    /// Nothing was written.
    pub dry_run: bool,
    /// Active versions created so imported purposes can encrypt.
    pub new_active: Vec<NewActive>,
    /// Per key.
    pub keys: Vec<KeyReport>,
}

/// One legacy key id after unwrapping, before placement.
struct Candidate {
    ids: Vec<String>,
    purpose: Purpose,
    version: KeyVersion,
    status: Option<LegacyStatus>,
    created_at: Option<i64>,
    dek: SecretKey,
    source: String,
}

fn unwrap_reason(e: &LegacyError) -> String {
    match e {
        LegacyError::DecryptionFailed => "does not unwrap with this KEK file (wrong KEK: the legacy system replaced its KEK file on load errors, so this file may not be the one this key was wrapped under)".into(),
        other => other.to_string(),
    }
}

fn report(
    key_id: &str,
    purpose: Option<&str>,
    version: Option<u32>,
    source: &str,
    outcome: Outcome,
    reason: Option<String>,
) -> KeyReport {
    KeyReport {
        key_id: key_id.to_owned(),
        purpose: purpose.map(str::to_owned),
        version,
        source: source.to_owned(),
        outcome,
        reason,
    }
}

fn refuse(c: &Candidate, reason: String) -> Vec<KeyReport> {
    c.ids
        .iter()
        .map(|id| {
            report(
                id,
                Some(c.purpose.as_str()),
                Some(c.version.get()),
                &c.source,
                Outcome::Unreadable,
                Some(reason.clone()),
            )
        })
        .collect()
}

/// Unwraps every entry and merges entries naming the same key; refuses what does not
/// hold together (unwrap failures, invalid purposes, one id with two materials, two
/// ids of one (purpose, version) with different material).
fn candidates(kek: &LegacyKek, entries: Vec<KeyEntry>, out: &mut Vec<KeyReport>) -> Vec<Candidate> {
    // By key id first: the same document may come from the key export and a backup.
    let mut by_id: BTreeMap<String, Vec<(KeyEntry, SecretKey, Purpose)>> = BTreeMap::new();
    for e in entries {
        let purpose = match Purpose::new(&e.purpose) {
            Ok(p) => p,
            Err(_) => {
                out.push(report(
                    &e.key_id,
                    Some(&e.purpose),
                    Some(e.version),
                    &e.source,
                    Outcome::Unreadable,
                    Some("purpose name is not valid in KeyFlow".into()),
                ));
                continue;
            }
        };
        match kek.unwrap_dek(&e.encrypted_key) {
            Ok(dek) => by_id
                .entry(e.key_id.clone())
                .or_default()
                .push((e, dek, purpose)),
            Err(err) => out.push(report(
                &e.key_id,
                Some(&e.purpose),
                Some(e.version),
                &e.source,
                Outcome::Unreadable,
                Some(unwrap_reason(&err)),
            )),
        }
    }
    let mut by_slot: BTreeMap<(Purpose, KeyVersion), Vec<Candidate>> = BTreeMap::new();
    for (id, copies) in by_id {
        let sources = copies
            .iter()
            .map(|(e, ..)| e.source.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let (first, dek, purpose) = &copies[0];
        let agree = copies
            .iter()
            .all(|(e, d, p)| p == purpose && e.version == first.version && d.ct_eq(dek));
        let Ok(version) = KeyVersion::new(first.version) else {
            // The parser accepts versions from 1 only; a refusal all the same, never a skip.
            let reason = "version 0 is not a version".to_owned();
            out.push(report(
                &id,
                Some(purpose.as_str()),
                Some(first.version),
                &sources,
                Outcome::Unreadable,
                Some(reason),
            ));
            continue;
        };
        if !agree {
            out.push(report(&id, Some(purpose.as_str()), Some(first.version), &sources, Outcome::Unreadable,
                Some("the key id is listed more than once with different purpose, version or material".into())));
            continue;
        }
        // The most informative copy: a key document's status over a 1.0 backup's none.
        let status = copies.iter().find_map(|(e, ..)| e.status);
        let created_at = copies.iter().find_map(|(e, ..)| e.created_at);
        let mut copies = copies;
        let (_, dek, purpose) = copies.swap_remove(0);
        by_slot
            .entry((purpose.clone(), version))
            .or_default()
            .push(Candidate {
                ids: vec![id],
                purpose,
                version,
                status,
                created_at,
                dek,
                source: sources,
            });
    }
    let mut merged = Vec::new();
    for (_, mut group) in by_slot {
        let first = group.remove(0);
        if group.iter().any(|c| !c.dek.ct_eq(&first.dek)) {
            let ids = std::iter::once(&first)
                .chain(&group)
                .flat_map(|c| c.ids.clone())
                .collect::<Vec<_>>()
                .join(", ");
            let reason = format!("duplicate ({}, version {}) with other key material (key ids {ids}); none of them is imported", first.purpose, first.version);
            for c in std::iter::once(&first).chain(&group) {
                out.extend(refuse(c, reason.clone()));
            }
            continue;
        }
        let mut c = first;
        for other in group {
            c.ids.extend(other.ids);
            c.source = format!("{}, {}", c.source, other.source);
            c.status = c.status.or(other.status);
        }
        merged.push(c);
    }
    merged
}

/// How a legacy state becomes a KeyFlow one: never `active` (KeyFlow chooses its own
/// key for new data); a revoked key stays revoked (an admin may reinstate it).
fn keyflow_status(s: Option<LegacyStatus>) -> (KeyStatus, Option<String>) {
    match s {
        None | Some(LegacyStatus::Active | LegacyStatus::Rotating) => (KeyStatus::Rotating, None),
        Some(LegacyStatus::Deprecated) => (KeyStatus::Deprecated, None),
        Some(LegacyStatus::Revoked) => (
            KeyStatus::Revoked,
            Some("revoked in the legacy system".into()),
        ),
    }
}

/// Imports `sources` (key documents and/or backups, already parsed) whose DEKs are
/// wrapped under `kek`. With `dry_run`, everything is checked and nothing written.
pub async fn import(
    service: &EncryptionService,
    kek: &LegacyKek,
    sources: Vec<Entries>,
    dry_run: bool,
) -> Result<Census> {
    let mut reports = Vec::new();
    let mut entries = Vec::new();
    for s in sources {
        for r in s.rejected {
            let id = r.key_id.clone().unwrap_or_else(|| r.source.clone());
            reports.push(report(
                &id,
                None,
                None,
                &r.source,
                Outcome::Unreadable,
                Some(r.reason),
            ));
        }
        entries.extend(s.keys);
    }
    // Highest legacy version per purpose, refused entries included, so that the new
    // active version leaves room for a refused key fixed and imported later.
    let mut top: BTreeMap<String, u32> = BTreeMap::new();
    for e in &entries {
        let t = top.entry(e.purpose.clone()).or_default();
        *t = (*t).max(e.version);
    }
    let candidates = candidates(kek, entries, &mut reports);

    let existing = service.keys().list(&VersionFilter::default()).await?;
    let legacy = service.keys().legacy_keys().await?;
    let mut rings: HashMap<&Purpose, BTreeMap<KeyVersion, &KeyVersionRecord>> = HashMap::new();
    for r in &existing {
        rings.entry(&r.purpose).or_default().insert(r.version, r);
    }
    // Versions that hold an imported legacy key (not a KeyFlow one).
    let legacy_slots: HashSet<(&Purpose, KeyVersion)> =
        legacy.iter().map(|k| (&k.purpose, k.version)).collect();
    let legacy_ids: HashMap<&str, &LegacyKeyRecord> = legacy
        .iter()
        .map(|k| (k.legacy_key_id.as_str(), k))
        .collect();

    let now = service.ring().clock().now_millis();
    let mut versions = Vec::new();
    let mut keys = Vec::new();
    // Purposes without an active version that receive legacy versions.
    let mut importing: BTreeSet<Purpose> = BTreeSet::new();

    for c in &candidates {
        let record = |id: &str| LegacyKeyRecord {
            legacy_key_id: id.to_owned(),
            purpose: c.purpose.clone(),
            version: c.version,
            legacy_status: c.status.map_or("unknown", LegacyStatus::as_str).to_owned(),
            imported_at: now,
        };
        // An id imported before under another version is a contradiction.
        if let Some(prev) = c.ids.iter().find_map(|id| {
            legacy_ids
                .get(id.as_str())
                .filter(|k| k.purpose != c.purpose || k.version != c.version)
        }) {
            reports.extend(refuse(
                c,
                format!(
                    "this key id was imported before as {} version {}",
                    prev.purpose, prev.version
                ),
            ));
            continue;
        }
        let ring = rings.get(&c.purpose);
        match ring.and_then(|r| r.get(&c.version)) {
            Some(stored) if legacy_slots.contains(&(&c.purpose, c.version)) => {
                if stored.status == KeyStatus::Destroyed {
                    for id in &c.ids {
                        reports.push(report(id, Some(c.purpose.as_str()), Some(c.version.get()), &c.source, Outcome::AlreadyPresent,
                            Some("destroyed in KeyFlow; never imported again".into())));
                    }
                    continue;
                }
                if !service.keys().holds_material(stored, &c.dek)? {
                    reports.extend(refuse(c, format!("version {} of {} already holds other key material", c.version, c.purpose)));
                    continue;
                }
                for id in &c.ids {
                    if legacy_ids.contains_key(id.as_str()) {
                        reports.push(report(id, Some(c.purpose.as_str()), Some(c.version.get()), &c.source, Outcome::AlreadyPresent, None));
                    } else {
                        keys.push(record(id));
                        reports.push(report(id, Some(c.purpose.as_str()), Some(c.version.get()), &c.source, Outcome::Imported,
                            Some("another key id for a version already imported".into())));
                    }
                }
            }
            Some(_) => reports.extend(refuse(c, format!(
                "version {} of {} is a KeyFlow key: import legacy keys before KeyFlow uses the purpose", c.version, c.purpose))),
            None => {
                let active = ring.and_then(|r| r.values().find(|v| v.status == KeyStatus::Active));
                if let Some(a) = active.filter(|a| a.version < c.version) {
                    reports.extend(refuse(c, format!(
                        "legacy version {} is above KeyFlow's active version {} of {}", c.version, a.version, c.purpose)));
                    continue;
                }
                let (status, reason) = keyflow_status(c.status);
                versions.push(service.keys().legacy_version_record(&c.purpose, c.version, &c.dek, status, c.created_at.unwrap_or(now), reason.clone())?);
                for id in &c.ids {
                    keys.push(record(id));
                    reports.push(report(id, Some(c.purpose.as_str()), Some(c.version.get()), &c.source, Outcome::Imported, reason.clone()));
                }
                if active.is_none() {
                    importing.insert(c.purpose.clone());
                }
            }
        }
    }

    let mut new_active = Vec::new();
    for purpose in &importing {
        let highest = rings
            .get(purpose)
            .and_then(|r| r.keys().next_back())
            .map_or(0, |v| v.get());
        let next = KeyVersion::new(
            highest
                .max(top.get(purpose.as_str()).copied().unwrap_or(0))
                .saturating_add(1),
        )
        .map_err(keyflow_kms::KmsError::from)?;
        versions.push(service.keys().fresh_active_record(purpose, next)?);
        new_active.push(NewActive {
            purpose: purpose.to_string(),
            version: next.get(),
        });
    }

    if !dry_run && !keys.is_empty() {
        match service.keys().import_legacy(&versions, &keys).await? {
            WriteOutcome::Applied => {}
            WriteOutcome::Conflict => return Err(LegacyError::Conflict),
        }
    }
    reports.sort_by(|a, b| {
        (&a.purpose, a.version, &a.key_id).cmp(&(&b.purpose, b.version, &b.key_id))
    });
    let count = |o: Outcome| reports.iter().filter(|r| r.outcome == o).count();
    Ok(Census {
        found: reports.len(),
        imported: count(Outcome::Imported),
        already_present: count(Outcome::AlreadyPresent),
        unreadable: count(Outcome::Unreadable),
        dry_run,
        new_active,
        keys: reports,
    })
}
