//! The `password-file` KEK provider: the KEK lives in a file, wrapped under a key
//! derived from a password (format in `keyflow_core::kek`).
//!
//! Rules this module enforces:
//! - a KEK file is created only where none exists, and never overwritten: it is written
//!   to a temporary file (mode 0600), fsynced, then *linked* into place (which fails if
//!   the name exists), and the directory is fsynced;
//! - a KEK that fails to unlock is an error — never regenerated, never rewritten;
//! - the keystore records the id of its KEK; a different KEK is refused, and a keystore
//!   whose KEK file is missing refuses `init` instead of creating a new KEK;
//! - the only change `unlock` ever makes is finishing a KEK rotation that committed in
//!   the keystore but crashed before `<kek>.next` was renamed over `<kek>` (protocol in
//!   [`crate::kek_rotation`]); a password change replaces the file atomically.

use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use keyflow_core::kek::{KdfParams, Kek, KekFile};
use keyflow_core::rng::SecureRandom;
use zeroize::Zeroizing;

use crate::atomic_file;
use crate::keystore::Keystore;
use crate::row_mac::RowSealer;
use crate::{KmsError, Result};

/// Metadata key under which the keystore records its KEK's id.
pub const META_KEK_ID: &str = "kek_id";
/// Shortest KEK password accepted in production.
pub const MIN_PRODUCTION_PASSWORD_CHARS: usize = 32;
/// Largest KEK file read (a real one is ~400 bytes).
const MAX_KEK_FILE_LEN: u64 = 64 * 1024;

/// The KEK password, zeroized on drop.
pub struct KekPassword(Zeroizing<String>);

impl KekPassword {
    /// Wraps a password, checking its strength: in production fewer than 32
    /// characters is refused; an empty password is always refused.
    pub fn new(password: String, production: bool) -> Result<Self> {
        let password = Zeroizing::new(password);
        if password.is_empty() {
            return Err(KmsError::PasswordMissing);
        }
        if production && password.chars().count() < MIN_PRODUCTION_PASSWORD_CHARS {
            return Err(KmsError::WeakPassword(MIN_PRODUCTION_PASSWORD_CHARS));
        }
        Ok(Self(password))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for KekPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KekPassword(<redacted>)")
    }
}

/// What `init` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitOutcome {
    /// A new KEK file was created.
    Created,
    /// A KEK file already existed and unlocked; nothing was created.
    AlreadyInitialized,
}

pub(crate) fn io<'p>(
    action: &'static str,
    path: &'p Path,
) -> impl FnOnce(std::io::Error) -> KmsError + 'p {
    move |source| KmsError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Reads and parses a KEK file. `Ok(None)` when it does not exist.
pub(crate) fn read_kek_file(path: &Path) -> Result<Option<KekFile>> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("cannot open KEK file", path)(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_KEK_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(io("cannot read KEK file", path))?;
    if bytes.len() as u64 > MAX_KEK_FILE_LEN {
        return Err(KmsError::KekFileInvalid {
            path: path.to_owned(),
            reason: "file too large".into(),
        });
    }
    KekFile::parse(&bytes)
        .map(Some)
        .map_err(|e| KmsError::KekFileInvalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// `<kek>.next`: a new KEK during a rotation, before it is promoted.
pub fn next_path(path: &Path) -> PathBuf {
    sibling(path, "next")
}

/// `<kek>.retired-<id>`: a KEK file preserved by a rotation (never deleted implicitly).
pub fn retired_path(path: &Path, kek_id: &str) -> PathBuf {
    sibling(path, &format!("retired-{kek_id}"))
}

/// `<path>.<suffix>`: a file beside `path`, named after it (`kek` when `path` has no
/// file name).
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "kek".into());
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// fsyncs the directory holding `path`, so a rename or link in it survives power loss.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    atomic_file::sync_dir(path).map_err(io("cannot sync directory of", path))
}

/// Replaces `path` with `bytes` atomically. Only for a password change, which must not
/// leave a copy that the old password unlocks.
fn replace_file_atomically(path: &Path, bytes: &[u8], rng: &dyn SecureRandom) -> Result<()> {
    atomic_file::replace(path, bytes, rng).map_err(io("cannot replace KEK file", path))
}

/// Writes `bytes` to `path` atomically and only if `path` does not exist: a
/// concurrent init can never be overwritten.
pub(crate) fn write_new_file_atomically(
    path: &Path,
    bytes: &[u8],
    rng: &dyn SecureRandom,
) -> Result<()> {
    atomic_file::write_new(path, bytes, rng).map_err(|e| {
        if e.kind() == ErrorKind::AlreadyExists {
            KmsError::Io {
                action: "refusing to overwrite existing KEK file",
                path: path.to_owned(),
                source: e,
            }
        } else {
            io("cannot write KEK file", path)(e)
        }
    })
}

/// Checks the KEK against the id the keystore recorded, recording it if absent.
async fn bind_to_keystore(kek: &Kek, store: &dyn Keystore) -> Result<()> {
    let recorded = store.init_meta(META_KEK_ID, kek.id()).await?;
    if recorded != kek.id() {
        return Err(KmsError::KekMismatch {
            expected: recorded,
            found: kek.id().to_owned(),
        });
    }
    Ok(())
}

/// Installs the row sealer of `kek` in `store` (unless one of the same KEK is there)
/// and seals the rows written before row MACs existed, once (see
/// [`crate::KekBinding::seal_legacy_rows`]). Every unlock goes through here, so every process
/// that holds the KEK checks the rows it reads.
pub async fn open_rows(kek: &Kek, store: &dyn Keystore) -> Result<std::sync::Arc<RowSealer>> {
    let sealer = match store.row_sealer() {
        Some(s) if s.kek_id() == kek.id() => s,
        _ => {
            let s = std::sync::Arc::new(RowSealer::new(kek)?);
            store.install_row_sealer(s.clone());
            s
        }
    };
    let sealed = store.seal_legacy_rows().await?;
    if sealed > 0 {
        tracing::warn!(
            rows = sealed,
            "sealed keystore rows written before row MACs existed (first unlock after the upgrade; trusted as found)"
        );
    }
    Ok(sealer)
}

/// Finishes a KEK rotation that committed in the keystore (which now records the id of
/// `<kek>.next`) but stopped before `<kek>.next` was renamed over `<kek>`. The old file
/// was preserved as `<kek>.retired-<id>` before the commit. Any other state is left as
/// it is (an uncommitted `<kek>.next` is an orphan that `kek rotate` moves aside).
pub(crate) async fn finish_promotion(
    path: &Path,
    password: &KekPassword,
    store: &dyn Keystore,
) -> Result<()> {
    let Some(recorded) = store.get_meta(META_KEK_ID).await? else {
        return Ok(());
    };
    let next = next_path(path);
    // A concurrent process may promote first: its rename makes ours fail with NotFound,
    // and the state is then re-read.
    for _ in 0..3 {
        let current = read_kek_file(path)?;
        if current.as_ref().is_some_and(|f| f.kek_id() == recorded) {
            return Ok(());
        }
        let Some(candidate) = read_kek_file(&next)? else {
            return Ok(());
        };
        if candidate.kek_id() != recorded {
            return Ok(());
        }
        // Only a file that unlocks with this password is promoted.
        candidate
            .unlock(password.bytes())
            .map_err(|_| KmsError::KekUnlockFailed(next.clone()))?;
        if let Some(old) = &current {
            let retired = retired_path(path, old.kek_id());
            if !retired.exists() {
                // Normally made before the commit; kept defensively (never deleted).
                match fs::hard_link(path, &retired) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io("cannot preserve old KEK file as", &retired)(e)),
                }
            }
        }
        match fs::rename(&next, path) {
            Ok(()) => {
                sync_dir(path)?;
                tracing::warn!(kek_id = %recorded, path = %path.display(), "finished an interrupted KEK rotation: promoted the new KEK file");
                return Ok(());
            }
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io("cannot promote new KEK file", &next)(e)),
        }
    }
    Ok(())
}

/// `keyflow init`: creates the KEK file if there is none, or checks that the existing
/// one unlocks; then binds the keystore to the KEK. Creates no DEKs.
pub async fn init(
    path: &Path,
    password: &KekPassword,
    params: KdfParams,
    store: &dyn Keystore,
    rng: &dyn SecureRandom,
) -> Result<(InitOutcome, Kek)> {
    finish_promotion(path, password, store).await?;
    if read_kek_file(path)?.is_some() {
        let kek = unlock(path, password, store).await?;
        return Ok((InitOutcome::AlreadyInitialized, kek));
    }
    if let Some(existing) = store.get_meta(META_KEK_ID).await? {
        return Err(KmsError::KekLost(existing));
    }
    let (file, kek) = KekFile::create(password.bytes(), params, rng)?;
    write_new_file_atomically(path, &file.to_bytes()?, rng)?;
    // A crash here leaves a KEK file the keystore does not name yet: the next `init`
    // or `unlock` finds the file, unlocks it and records it.
    bind_to_keystore(&kek, store).await?;
    open_rows(&kek, store).await?;
    Ok((InitOutcome::Created, kek))
}

/// Unlocks the KEK file for every other command. Never creates the file; modifies it
/// only to finish an interrupted KEK rotation that already committed.
pub async fn unlock(path: &Path, password: &KekPassword, store: &dyn Keystore) -> Result<Kek> {
    finish_promotion(path, password, store).await?;
    let file = read_kek_file(path)?.ok_or_else(|| KmsError::KekMissing(path.to_owned()))?;
    let kek = file
        .unlock(password.bytes())
        .map_err(|_| KmsError::KekUnlockFailed(path.to_owned()))?;
    bind_to_keystore(&kek, store).await?;
    open_rows(&kek, store).await?;
    Ok(kek)
}

/// `keyflow kek change-password`: re-seals the KEK file under `new_password` (fresh
/// salt and nonce, `params` cost) and replaces the file atomically. The KEK and every
/// DEK stay as they are; the old password no longer unlocks this file — retired KEK
/// files (`<kek>.retired-*`) keep the password they were retired under until
/// `kek retire` removes them. Holds the KEK lease, so it never interleaves with a KEK
/// rotation.
pub async fn change_password(
    path: &Path,
    old_password: &KekPassword,
    new_password: &KekPassword,
    params: KdfParams,
    store: &dyn Keystore,
    rng: &dyn SecureRandom,
) -> Result<Kek> {
    let lease = crate::kek_rotation::KekLease::acquire(store, rng).await?;
    let result = async {
        let kek = unlock(path, old_password, store).await?;
        let bytes = KekFile::seal(&kek, new_password.bytes(), params, rng)?.to_bytes()?;
        // Check the new file before it replaces the only copy of the KEK.
        let check = KekFile::parse(&bytes)?.unlock(new_password.bytes())?;
        if !check.same_material(&kek) || check.id() != kek.id() {
            return Err(KmsError::Crypto);
        }
        lease.renew(store).await?;
        replace_file_atomically(path, &bytes, rng)?;
        tracing::info!(kek_id = %kek.id(), "KEK password changed");
        Ok(kek)
    }
    .await;
    lease.release(store).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_rules() {
        assert!(matches!(
            KekPassword::new(String::new(), false),
            Err(KmsError::PasswordMissing)
        ));
        assert!(KekPassword::new("short".into(), false).is_ok());
        assert!(matches!(
            KekPassword::new("x".repeat(31), true),
            Err(KmsError::WeakPassword(32))
        ));
        assert!(KekPassword::new("x".repeat(32), true).is_ok());
        let p = KekPassword::new("hunter2-hunter2".into(), false).unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
