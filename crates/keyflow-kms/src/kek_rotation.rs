//! KEK rotation: a new KEK, every DEK version rewrapped under it in one keystore
//! transaction, the KEK file replaced — crash-safe at every step.
//!
//! Protocol (`docs/ARCHITECTURE.md`, decision "KEK rotation"):
//!
//! 0. take the keystore lease `kek-maintenance` (one KEK operation at a time); unlock
//!    the current KEK (which finishes an earlier rotation that had committed); move an
//!    uncommitted `<kek>.next` left by a crash aside to `<kek>.orphan-<id>-<rand>`;
//! 1. **write-next**: write the new KEK to `<kek>.next` (never overwriting);
//! 2. **retire-old**: hard-link `<kek>` as `<kek>.retired-<old id>` (fsync the directory);
//! 3. **commit**: `KekBinding::rewrap_all` — every DEK version with material gets its new
//!    wrap and the keystore's recorded KEK id moves from old to new, in one transaction
//!    (a DEK created concurrently under the old KEK makes it a `Conflict`: retried);
//! 4. **promote**: rename `<kek>.next` over `<kek>` and fsync the directory.
//!
//! A crash before 3 leaves the keystore on the old KEK, which `<kek>` still holds. A
//! crash after 3 leaves the keystore on the new KEK, which `<kek>.next` holds, and the
//! next [`crate::kek_provider::unlock`] performs step 4. Either way one KEK works.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use keyflow_core::kek::{KdfParams, Kek, KekFile};
use keyflow_core::SecureRandom;

use crate::clock::{Clock, SystemClock};
use crate::kek_provider::{
    self, io, next_path, read_kek_file, retired_path, sibling, sync_dir, write_new_file_atomically,
    KekPassword, META_KEK_ID,
};
use crate::keystore::{Keystore, WriteOutcome};
use crate::model::{RewrappedKey, VersionFilter};
use crate::{KmsError, Result};

/// Name of the keystore lease held by KEK rotations and password changes.
pub const KEK_LEASE: &str = "kek-maintenance";
/// How long the lease lasts without renewal (a crashed holder blocks others this long).
pub const KEK_LEASE_SECS: u64 = 60;
/// Commit attempts when concurrent key creation keeps winning.
const REWRAP_ATTEMPTS: usize = 8;

/// The steps of a KEK rotation, in order. A [`RotationHook`] is called before each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationStep {
    /// Writing the new KEK file `<kek>.next`.
    WriteNext,
    /// Preserving the old KEK file as `<kek>.retired-<old id>`.
    RetireOld,
    /// The keystore transaction (called before every attempt).
    Commit,
    /// Renaming `<kek>.next` over `<kek>`.
    Promote,
}

impl RotationStep {
    /// Every step, in order.
    pub const ALL: [RotationStep; 4] = [
        RotationStep::WriteNext,
        RotationStep::RetireOld,
        RotationStep::Commit,
        RotationStep::Promote,
    ];
}

/// Called before each step; an error stops the rotation right there, exactly as a
/// crash at that point would (tests use it to check every intermediate state).
#[async_trait]
pub trait RotationHook: Send + Sync {
    /// `attempt` counts commit retries (0 for the other steps).
    async fn before(&self, step: RotationStep, attempt: usize) -> Result<()>;
}

/// The hook that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHook;

#[async_trait]
impl RotationHook for NoHook {
    async fn before(&self, _: RotationStep, _: usize) -> Result<()> {
        Ok(())
    }
}

/// The result of a KEK rotation.
#[derive(Debug)]
pub struct KekRotated {
    /// The KEK before.
    pub old_kek_id: String,
    /// The KEK now recorded by the keystore and held by the KEK file.
    pub new_kek_id: String,
    /// DEK versions rewrapped (destroyed ones have no material).
    pub rewrapped: usize,
    /// Where the old KEK file was preserved.
    pub retired: PathBuf,
    /// Where an orphaned `<kek>.next` from an interrupted earlier attempt was moved.
    pub orphan_moved: Option<PathBuf>,
    /// The new KEK, unlocked (to build a service without reading the file again).
    pub kek: Kek,
}

/// The keystore lease that serializes KEK operations across processes.
pub(crate) struct KekLease {
    holder: String,
}

impl KekLease {
    pub(crate) async fn acquire(store: &dyn Keystore, rng: &dyn SecureRandom) -> Result<Self> {
        let mut id = [0u8; 8];
        rng.fill(&mut id).map_err(|_| KmsError::Randomness)?;
        let lease = Self {
            holder: format!("kek-{}", keyflow_core::to_hex(&id)),
        };
        lease.renew(store).await?;
        Ok(lease)
    }

    pub(crate) async fn renew(&self, store: &dyn Keystore) -> Result<()> {
        let ttl = i64::try_from(KEK_LEASE_SECS * 1000).unwrap_or(i64::MAX);
        if store
            .try_lease(KEK_LEASE, &self.holder, SystemClock.now_millis(), ttl)
            .await?
        {
            Ok(())
        } else {
            Err(KmsError::KekBusy(KEK_LEASE_SECS))
        }
    }

    pub(crate) async fn release(self, store: &dyn Keystore) {
        if let Err(e) = store.release_lease(KEK_LEASE, &self.holder).await {
            tracing::warn!(error = %e, "could not release the KEK lease; it expires by itself");
        }
    }
}

/// `keyflow kek rotate`: see the module docs. `params` is the KDF cost of the new file;
/// the password stays the same.
pub async fn rotate_kek(
    path: &Path,
    password: &KekPassword,
    params: KdfParams,
    store: &dyn Keystore,
    rng: &dyn SecureRandom,
) -> Result<KekRotated> {
    rotate_kek_with_hook(path, password, params, store, rng, &NoHook).await
}

/// [`rotate_kek`] with a hook called before every step.
pub async fn rotate_kek_with_hook(
    path: &Path,
    password: &KekPassword,
    params: KdfParams,
    store: &dyn Keystore,
    rng: &dyn SecureRandom,
    hook: &dyn RotationHook,
) -> Result<KekRotated> {
    let lease = KekLease::acquire(store, rng).await?;
    let result = rotate_locked(path, password, params, store, rng, hook, &lease).await;
    lease.release(store).await;
    result
}

async fn rotate_locked(
    path: &Path,
    password: &KekPassword,
    params: KdfParams,
    store: &dyn Keystore,
    rng: &dyn SecureRandom,
    hook: &dyn RotationHook,
    lease: &KekLease,
) -> Result<KekRotated> {
    let old = kek_provider::unlock(path, password, store).await?;
    let next = next_path(path);
    // The keystore records `old` (unlock checked it), so a `.next` is an orphan of an
    // attempt that never committed.
    let orphan_moved = move_orphan_aside(&next, rng)?;
    let new = Kek::generate(rng)?;
    let file = KekFile::seal(&new, password.bytes(), params, rng)?;

    hook.before(RotationStep::WriteNext, 0).await?;
    write_new_file_atomically(&next, &file.to_bytes()?, rng)?;

    hook.before(RotationStep::RetireOld, 0).await?;
    let retired = retire(path, old.id(), rng)?;

    let new_rows = crate::row_mac::RowSealer::new(&new)?;
    let mut rewrapped = None;
    for attempt in 0..REWRAP_ATTEMPTS {
        let keys = rewrap_keys(store, &old, &new, rng).await?;
        lease.renew(store).await?;
        hook.before(RotationStep::Commit, attempt).await?;
        match store
            .rewrap_all(META_KEK_ID, old.id(), new.id(), &keys, &new_rows)
            .await?
        {
            WriteOutcome::Applied => {
                rewrapped = Some(keys.len());
                break;
            }
            WriteOutcome::Conflict => {
                let recorded = store.get_meta(META_KEK_ID).await?;
                if recorded.as_deref() != Some(old.id()) {
                    return Err(KmsError::KekMismatch {
                        expected: recorded.unwrap_or_default(),
                        found: old.id().to_owned(),
                    });
                }
                tracing::info!(
                    attempt,
                    "KEK rewrap conflicted with a concurrent key change; retrying"
                );
            }
        }
    }
    let rewrapped = rewrapped.ok_or(KmsError::KekRotationConflict)?;
    // The rows are now sealed under the new KEK's key; this process reads them so.
    store.install_row_sealer(std::sync::Arc::new(new_rows));
    tracing::info!(old = %old.id(), new = %new.id(), rewrapped, "KEK rotation committed");

    hook.before(RotationStep::Promote, 0).await?;
    promote(&next, path, new.id())?;
    Ok(KekRotated {
        old_kek_id: old.id().to_owned(),
        new_kek_id: new.id().to_owned(),
        rewrapped,
        retired,
        orphan_moved,
        kek: new,
    })
}

/// Every DEK version with material, unwrapped with `old` and wrapped under `new`. The
/// clear DEK exists only inside the loop body (a zeroized `SecretKey`).
async fn rewrap_keys(
    store: &dyn Keystore,
    old: &Kek,
    new: &Kek,
    rng: &dyn SecureRandom,
) -> Result<Vec<RewrappedKey>> {
    let mut out = Vec::new();
    for r in store.list_versions(&VersionFilter::default()).await? {
        let Some(wrapped) = &r.wrapped_key else {
            continue;
        };
        if r.kek_id != old.id() {
            return Err(KmsError::KekMismatch {
                expected: r.kek_id,
                found: old.id().to_owned(),
            });
        }
        let dek = old
            .unwrap_dek(&r.purpose, r.version, wrapped)
            .map_err(|_| KmsError::Crypto)?;
        out.push(RewrappedKey {
            wrapped_key: new.wrap_dek(&r.purpose, r.version, &dek, rng)?,
            purpose: r.purpose,
            version: r.version,
        });
    }
    Ok(out)
}

fn random_hex(rng: &dyn SecureRandom) -> Result<String> {
    let mut b = [0u8; 4];
    rng.fill(&mut b).map_err(|_| KmsError::Randomness)?;
    Ok(keyflow_core::to_hex(&b))
}

/// Renames an uncommitted `<kek>.next` to `<kek>.orphan-<id>-<rand>` (link + unlink, so
/// no existing name is ever replaced).
fn move_orphan_aside(next: &Path, rng: &dyn SecureRandom) -> Result<Option<PathBuf>> {
    if fs::symlink_metadata(next).is_err() {
        return Ok(None);
    }
    let id = read_kek_file(next)
        .ok()
        .flatten()
        .map_or_else(|| "unreadable".to_owned(), |f| f.kek_id().to_owned());
    let base = next.with_extension("");
    let target = sibling(&base, &format!("orphan-{id}-{}", random_hex(rng)?));
    fs::hard_link(next, &target).map_err(io("cannot move orphaned KEK file to", &target))?;
    fs::remove_file(next).map_err(io("cannot move orphaned KEK file", next))?;
    sync_dir(next)?;
    tracing::warn!(path = %target.display(), "moved aside a new KEK file from a KEK rotation that never committed");
    Ok(Some(target))
}

/// Preserves the current KEK file as `<kek>.retired-<id>` (a hard link: same bytes, no
/// copy window). Already there from an earlier attempt: kept if identical, otherwise
/// (re-sealed by a password change since) a suffixed name is used.
fn retire(path: &Path, old_id: &str, rng: &dyn SecureRandom) -> Result<PathBuf> {
    let mut target = retired_path(path, old_id);
    for _ in 0..2 {
        match fs::hard_link(path, &target) {
            Ok(()) => {
                sync_dir(path)?;
                return Ok(target);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let same = fs::read(path).ok().zip(fs::read(&target).ok());
                if same.is_some_and(|(a, b)| a == b) {
                    return Ok(target);
                }
                target = retired_path(path, &format!("{old_id}-{}", random_hex(rng)?));
            }
            Err(e) => return Err(io("cannot preserve the old KEK file as", &target)(e)),
        }
    }
    Err(KmsError::Io {
        action: "cannot preserve the old KEK file as",
        path: target,
        source: std::io::Error::from(ErrorKind::AlreadyExists),
    })
}

/// Renames `<kek>.next` over `<kek>`. If another process's unlock promoted it first,
/// `<kek>` already holds `new_id`.
fn promote(next: &Path, path: &Path, new_id: &str) -> Result<()> {
    match fs::rename(next, path) {
        Ok(()) => sync_dir(path),
        Err(e) if e.kind() == ErrorKind::NotFound => match read_kek_file(path)? {
            Some(f) if f.kek_id() == new_id => Ok(()),
            _ => Err(io("cannot promote new KEK file", next)(e)),
        },
        Err(e) => Err(io("cannot promote new KEK file", next)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_names() {
        let p = Path::new("/d/kek.json");
        assert_eq!(next_path(p), Path::new("/d/kek.json.next"));
        assert_eq!(retired_path(p, "ab"), Path::new("/d/kek.json.retired-ab"));
        assert_eq!(
            sibling(&next_path(p).with_extension(""), "orphan-x"),
            Path::new("/d/kek.json.orphan-x")
        );
        assert_eq!(next_path(Path::new("kek")), Path::new("kek.next"));
    }
}
