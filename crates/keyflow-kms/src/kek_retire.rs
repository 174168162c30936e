//! Retiring old KEK files for good (`keyflow kek retire`).
//!
//! `kek rotate` keeps the previous KEK as `<kek>.retired-<id>`, sealed under the same
//! password, and a crashed rotation leaves `<kek>.orphan-<id>-<rand>`: each still
//! unlocks with that password, so it still opens every keystore dump, replica or key
//! backup taken while it was current — "rotate the KEK after destroying keys" shreds
//! nothing until those files are gone. [`plan`] lists them with what still refers to
//! each; [`retire`] removes those nothing refers to:
//!
//! - no key version in the keystore is wrapped under it (after a committed rotation
//!   none is; a version restored or created under it would be), and
//! - no record of the audit trail (from its anchor on) was sealed under it — such a
//!   record could no longer be verified; prune the trail past it first
//!   (`keyflow audit prune`), or keep the file.
//!
//! The KEK the keystore records is never a candidate. Removal is an unlink and a
//! directory sync, under the KEK lease (no rotation or password change meanwhile). It
//! cannot reach copies elsewhere (file-system snapshots, backups of the data
//! directory): those are the operator's to destroy.

use std::fs;
use std::path::{Path, PathBuf};

use keyflow_core::rng::SecureRandom;

use crate::audit::{AuditStore, MAX_PAGE};
use crate::kek_provider::{read_kek_file, sync_dir, META_KEK_ID};
use crate::kek_rotation::KekLease;
use crate::keystore::Keystore;
use crate::model::VersionFilter;
use crate::{KmsError, Result};

/// Why a file is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum OldKekKind {
    /// `<kek>.retired-<id>`: the KEK before a committed rotation.
    Retired,
    /// `<kek>.orphan-<id>-<rand>`: a new KEK of a rotation that never committed.
    Orphan,
}

/// One old KEK file beside the KEK file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OldKekFile {
    /// Its path.
    pub path: PathBuf,
    /// The KEK id inside it (`None`: the file does not parse).
    pub kek_id: Option<String>,
    /// Retired or orphaned.
    pub kind: OldKekKind,
    /// What still needs it (empty: it may be removed).
    pub needed_by: Vec<String>,
}

/// The old KEK files beside `kek_path` (`<kek>.retired-*`, `<kek>.orphan-*`), by name;
/// `needed_by` is left empty (see [`plan`]). Reads no secret: the KEK id is in clear.
pub fn old_kek_files(kek_path: &Path) -> Result<Vec<OldKekFile>> {
    let (Some(dir), Some(name)) = (kek_path.parent(), kek_path.file_name()) else {
        return Ok(Vec::new());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let name = name.to_string_lossy();
    let (retired, orphan) = (format!("{name}.retired-"), format!("{name}.orphan-"));
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(KmsError::Io {
                action: "cannot list the KEK directory",
                path: dir.to_owned(),
                source: e,
            })
        }
    };
    let mut out = Vec::new();
    for entry in entries.filter_map(std::result::Result::ok) {
        let file = entry.file_name().to_string_lossy().into_owned();
        let kind = if file.starts_with(&retired) {
            OldKekKind::Retired
        } else if file.starts_with(&orphan) {
            OldKekKind::Orphan
        } else {
            continue;
        };
        let path = entry.path();
        let kek_id = read_kek_file(&path)
            .ok()
            .flatten()
            .map(|f| f.kek_id().to_owned());
        out.push(OldKekFile {
            path,
            kek_id,
            kind,
            needed_by: Vec::new(),
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The old KEK files with what still needs each: the keystore's current KEK, key
/// versions wrapped under it, audit records sealed under it.
pub async fn plan(
    kek_path: &Path,
    store: &dyn Keystore,
    audit: &dyn AuditStore,
) -> Result<Vec<OldKekFile>> {
    let mut files = old_kek_files(kek_path)?;
    if files.is_empty() {
        return Ok(files);
    }
    let current = store.get_meta(META_KEK_ID).await?;
    let versions = store.list_versions(&VersionFilter::default()).await?;
    // Audit records per sealing KEK, from the anchor on (one pass over the chain).
    let mut sealed: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut after = audit.audit_anchor().await?.map_or(0, |a| a.seq);
    loop {
        let page = audit.audit_scan(after, MAX_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            *sealed.entry(r.kek_id.clone()).or_default() += 1;
        }
    }
    for f in &mut files {
        let Some(id) = f.kek_id.clone() else {
            // Unparseable: it unlocks nothing, so nothing can need it.
            continue;
        };
        if current.as_deref() == Some(id.as_str()) {
            f.needed_by.push("it is the keystore's current KEK".into());
        }
        let wrapped = versions
            .iter()
            .filter(|v| v.kek_id == id && v.wrapped_key.is_some())
            .count();
        if wrapped > 0 {
            f.needed_by
                .push(format!("{wrapped} key version(s) are wrapped under it"));
        }
        if let Some(n) = sealed.get(&id) {
            f.needed_by.push(format!(
                "{n} audit record(s) were sealed under it (prune the audit trail past them first)"
            ));
        }
    }
    Ok(files)
}

/// What [`retire`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetireReport {
    /// Files removed.
    pub removed: Vec<PathBuf>,
    /// Files kept, with what needs them.
    pub kept: Vec<OldKekFile>,
}

/// `keyflow kek retire --yes`: removes every old KEK file nothing needs (see the
/// module docs), under the KEK lease.
pub async fn retire(
    kek_path: &Path,
    store: &dyn Keystore,
    audit: &dyn AuditStore,
    rng: &dyn SecureRandom,
) -> Result<RetireReport> {
    let lease = KekLease::acquire(store, rng).await?;
    let result = retire_locked(kek_path, store, audit).await;
    lease.release(store).await;
    result
}

async fn retire_locked(
    kek_path: &Path,
    store: &dyn Keystore,
    audit: &dyn AuditStore,
) -> Result<RetireReport> {
    let mut report = RetireReport::default();
    for f in plan(kek_path, store, audit).await? {
        if !f.needed_by.is_empty() {
            report.kept.push(f);
            continue;
        }
        match fs::remove_file(&f.path) {
            Ok(()) => {}
            // Another retire got there first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(KmsError::Io {
                    action: "cannot remove the old KEK file",
                    path: f.path,
                    source: e,
                })
            }
        }
        tracing::warn!(path = %f.path.display(), kek_id = ?f.kek_id, "old KEK file removed for good");
        report.removed.push(f.path);
    }
    if !report.removed.is_empty() {
        sync_dir(kek_path)?;
    }
    Ok(report)
}
