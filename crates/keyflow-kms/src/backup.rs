//! Encrypted backup and restore of every key version (PRODUCT.md §1, issue 4).
//!
//! A backup holds every version's metadata and, unless destroyed, its DEK — encrypted
//! under a key derived from the backup password, never under the KEK, so it restores
//! into a keystore with another KEK. Destroyed versions travel as metadata only, so
//! their numbers are never reused after a restore. The file format is
//! [`format`] (spec: `docs/backup-format.md`).
//!
//! Restore merges: a version absent from the keystore is wrapped under the current KEK
//! and inserted; one present with the same material (compared in constant time after
//! unwrapping the keystore's copy) is skipped; different material, material for a
//! version the keystore destroyed, or a version that would break the ring (two active
//! versions, a version above the active one) is refused — and then nothing at all is
//! written. The inserts are one [`crate::KeyVersions::insert_versions`] call.

pub mod format;

use std::collections::{BTreeMap, BTreeSet};

use keyflow_core::{key_id, KeyVersion, Purpose, SecretKey};
use serde::Serialize;

use crate::admin::KeyAdmin;
use crate::keystore::WriteOutcome;
use crate::model::{KeyStatus, KeyVersionRecord, VersionFilter, MAX_ENCRYPTIONS_PER_KEY};
use crate::{KmsError, Result};

pub use format::{BackupContents, BackupPassword, BackupVersion};

/// What a restore does (or, in a dry run, would do) with one backed-up version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreAction {
    /// Absent from the keystore: inserted.
    Insert,
    /// Already in the keystore with the same material (or destroyed there too): kept.
    Skip,
    /// Conflicts with the keystore: the restore as a whole is refused.
    Refuse,
}

/// One line of a [`RestoreReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreItem {
    /// `purpose:vN`.
    pub key_id: String,
    /// State in the backup (`active`, `rotating`, …).
    pub status: &'static str,
    /// What happens to it.
    pub action: RestoreAction,
    /// Why (for skips and refusals).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// The outcome of a restore or of its dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    /// True when nothing was written.
    pub dry_run: bool,
    /// Versions in the backup.
    pub total: usize,
    /// Versions inserted (would be, in a dry run).
    pub inserted: usize,
    /// Versions already present.
    pub skipped: usize,
    /// Versions in conflict (a real restore with any of these writes nothing).
    pub refused: usize,
    /// One entry per backed-up version, ordered by purpose then version.
    pub versions: Vec<RestoreItem>,
}

/// Runs a CPU-heavy closure (PBKDF2) off the async workers when inside tokio.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h.spawn_blocking(f).await.map_err(|_| KmsError::Crypto),
        Err(_) => Ok(f()),
    }
}

impl KeyAdmin<'_> {
    /// A backup of every key version, encrypted under `password` with the default KDF
    /// cost (PBKDF2-HMAC-SHA256, 600,000 iterations). Returns the file's bytes.
    pub async fn backup(self, password: &BackupPassword) -> Result<Vec<u8>> {
        self.backup_with_iterations(password, format::DEFAULT_ITERATIONS)
            .await
    }

    /// [`Self::backup`] with a chosen PBKDF2 cost (at least
    /// [`format::MIN_ITERATIONS`]; tests and slow machines).
    pub async fn backup_with_iterations(
        self,
        password: &BackupPassword,
        iterations: u32,
    ) -> Result<Vec<u8>> {
        // Counts still in memory belong in the backup.
        self.ring.flush_usage().await?;
        // Listings leave out rows that fail their MAC; a backup must not silently
        // lack a version, so any refusal during the listing refuses the backup.
        let refused = || self.ring.store.row_sealer().map(|s| s.refused());
        let before = refused();
        let records = self
            .ring
            .store
            .list_versions(&VersionFilter::default())
            .await?;
        if refused() != before {
            return Err(KmsError::Store(crate::StoreError::Corrupt(
                "backup refused: key version rows failed their integrity check (see the log); nothing was written".into(),
            )));
        }
        let mut versions = Vec::with_capacity(records.len());
        for r in records {
            let material = match &r.wrapped_key {
                Some(wrapped) => Some(self.unwrap_material(&r, wrapped)?),
                None => None,
            };
            versions.push(BackupVersion {
                purpose: r.purpose,
                version: r.version,
                status: r.status,
                algorithm: r.algorithm,
                created_at: r.created_at,
                status_changed_at: r.status_changed_at,
                encryptions: r.encryptions,
                revoked_reason: r.revoked_reason,
                material,
            });
        }
        let contents = BackupContents {
            created_at: self.ring.clock.now_millis(),
            source_kek_id: self.ring.kek.id().to_owned(),
            versions,
        };
        let password = password.duplicate();
        let rng = self.ring.rng.clone();
        let bytes =
            blocking(move || format::seal(&contents, &password, iterations, &*rng)).await??;
        tracing::info!(bytes = bytes.len(), "key backup written");
        Ok(bytes)
    }

    /// Restores a backup made by [`Self::backup`] into this keystore (empty or not; see
    /// the module docs for the merge rules). With `dry_run`, reports what would happen
    /// and writes nothing. A real restore with any refused version returns
    /// [`KmsError::RestoreRefused`] and writes nothing.
    pub async fn restore(
        self,
        bytes: &[u8],
        password: &BackupPassword,
        dry_run: bool,
    ) -> Result<RestoreReport> {
        format::read_header(bytes)?;
        let owned = bytes.to_vec();
        let password = password.duplicate();
        let contents = blocking(move || format::open(&owned, &password)).await??;

        let existing: BTreeMap<(Purpose, KeyVersion), KeyVersionRecord> = self
            .ring
            .store
            .list_versions(&VersionFilter::default())
            .await?
            .into_iter()
            .map(|r| ((r.purpose.clone(), r.version), r))
            .collect();

        let mut items = Vec::with_capacity(contents.versions.len());
        let mut inserts: Vec<&BackupVersion> = Vec::new();
        for v in &contents.versions {
            let (action, reason) = match existing.get(&(v.purpose.clone(), v.version)) {
                None => (RestoreAction::Insert, None),
                Some(ex) => self.compare(v, ex)?,
            };
            if action == RestoreAction::Insert {
                inserts.push(v);
            }
            items.push(RestoreItem {
                key_id: key_id(&v.purpose, v.version),
                status: v.status.as_str(),
                action,
                reason,
            });
        }
        // The ring must stay rotatable: one active per purpose, and it is the highest.
        for (key, reason) in ring_conflicts(&existing, &inserts) {
            if let Some(item) = items.iter_mut().find(|i| i.key_id == key) {
                item.action = RestoreAction::Refuse;
                item.reason = Some(reason);
            }
        }
        let count = |a: RestoreAction| items.iter().filter(|i| i.action == a).count();
        let mut report = RestoreReport {
            dry_run,
            total: items.len(),
            inserted: count(RestoreAction::Insert),
            skipped: count(RestoreAction::Skip),
            refused: count(RestoreAction::Refuse),
            versions: items,
        };
        if dry_run {
            return Ok(report);
        }
        if report.refused > 0 {
            let first: Vec<String> = report
                .versions
                .iter()
                .filter(|i| i.action == RestoreAction::Refuse)
                .take(3)
                .map(|i| format!("{} ({})", i.key_id, i.reason.unwrap_or("conflict")))
                .collect();
            return Err(KmsError::RestoreRefused(format!(
                "{} version(s) conflict with the keystore: {}{}",
                report.refused,
                first.join("; "),
                if report.refused > 3 { "; …" } else { "" }
            )));
        }
        let mut records = Vec::with_capacity(report.inserted);
        for v in &inserts {
            records.push(self.rewrap_for_insert(v)?);
        }
        if !records.is_empty() {
            match self.ring.store.insert_versions(&records).await? {
                WriteOutcome::Applied => {}
                WriteOutcome::Conflict => {
                    return Err(KmsError::RestoreRefused(
                        "the keystore changed while restoring (another writer added versions); run the restore again".into(),
                    ))
                }
            }
        }
        let purposes: BTreeSet<&Purpose> = contents.versions.iter().map(|v| &v.purpose).collect();
        for p in purposes {
            self.ring.cache.invalidate(p);
        }
        report.dry_run = false;
        tracing::info!(
            inserted = report.inserted,
            skipped = report.skipped,
            "key backup restored"
        );
        Ok(report)
    }

    /// Unwraps a stored version's DEK with the current KEK.
    fn unwrap_material(self, r: &KeyVersionRecord, wrapped: &[u8]) -> Result<SecretKey> {
        if r.kek_id != self.ring.kek.id() {
            return Err(KmsError::KekMismatch {
                expected: r.kek_id.clone(),
                found: self.ring.kek.id().to_owned(),
            });
        }
        self.ring
            .kek
            .unwrap_dek(&r.purpose, r.version, wrapped)
            .map_err(|_| KmsError::Crypto)
    }

    /// A backed-up version against the keystore's copy of the same version.
    fn compare(
        self,
        v: &BackupVersion,
        ex: &KeyVersionRecord,
    ) -> Result<(RestoreAction, Option<&'static str>)> {
        Ok(match (&v.material, &ex.wrapped_key) {
            (None, None) => (RestoreAction::Skip, Some("destroyed in both")),
            (None, Some(_)) => (
                RestoreAction::Skip,
                Some("destroyed in the backup, kept as it is in the keystore"),
            ),
            (Some(_), None) => (
                RestoreAction::Refuse,
                Some("destroyed in the keystore: crypto-shredding is never undone"),
            ),
            (Some(mine), Some(wrapped)) => {
                if ex.kek_id != self.ring.kek.id() {
                    (
                        RestoreAction::Refuse,
                        Some("the keystore's copy is wrapped under another KEK"),
                    )
                } else {
                    let theirs = self.unwrap_material(ex, wrapped)?;
                    if theirs.ct_eq(mine) {
                        (RestoreAction::Skip, Some("identical material"))
                    } else {
                        (
                            RestoreAction::Refuse,
                            Some("different key material in the keystore"),
                        )
                    }
                }
            }
        })
    }

    fn rewrap_for_insert(self, v: &BackupVersion) -> Result<KeyVersionRecord> {
        let wrapped = v
            .material
            .as_ref()
            .map(|k| {
                self.ring
                    .kek
                    .wrap_dek(&v.purpose, v.version, k, &*self.ring.rng)
            })
            .transpose()?;
        Ok(KeyVersionRecord {
            purpose: v.purpose.clone(),
            version: v.version,
            status: v.status,
            algorithm: v.algorithm.clone(),
            wrapped_key: wrapped,
            kek_id: self.ring.kek.id().to_owned(),
            created_at: v.created_at,
            status_changed_at: v.status_changed_at,
            // A backup's count is as old as the backup: the version may have encrypted
            // more since. A version restored as active is therefore marked spent, so
            // it is rotated (compare-and-set) before its next encryption instead of
            // starting its GCM budget over (decisions in docs/ARCHITECTURE.md).
            encryptions: if v.status == KeyStatus::Active {
                v.encryptions.max(MAX_ENCRYPTIONS_PER_KEY)
            } else {
                v.encryptions
            },
            revoked_reason: v.revoked_reason.clone(),
        })
    }
}

/// Inserted versions that would leave a ring with two active versions or with a
/// version numbered above its active one (rotation computes `active + 1`).
fn ring_conflicts(
    existing: &BTreeMap<(Purpose, KeyVersion), KeyVersionRecord>,
    inserts: &[&BackupVersion],
) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    let mut by_purpose: BTreeMap<&Purpose, Vec<&BackupVersion>> = BTreeMap::new();
    for v in inserts {
        by_purpose.entry(&v.purpose).or_default().push(v);
    }
    for (purpose, new) in by_purpose {
        let current: Vec<&KeyVersionRecord> = existing
            .range((purpose.clone(), KeyVersion::FIRST)..)
            .take_while(|((p, _), _)| p == purpose)
            .map(|(_, r)| r)
            .collect();
        let existing_active = current.iter().find(|r| r.status == KeyStatus::Active);
        let new_active = new.iter().find(|v| v.status == KeyStatus::Active);
        let highest_existing = current.iter().map(|r| r.version).max();
        match (existing_active, new_active) {
            (Some(_), Some(a)) => out.push((
                key_id(purpose, a.version),
                "the keystore already has another active version of this purpose",
            )),
            (None, Some(a)) if highest_existing.is_some_and(|h| h > a.version) => out.push((
                key_id(purpose, a.version),
                "the keystore has versions above this active one",
            )),
            _ => {}
        }
        let active = existing_active
            .map(|r| r.version)
            .or(new_active.map(|v| v.version));
        if let Some(active) = active {
            for v in new.iter().filter(|v| v.version > active) {
                out.push((
                    key_id(purpose, v.version),
                    "numbered above the keystore's active version: the rings have diverged",
                ));
            }
        }
    }
    out
}
