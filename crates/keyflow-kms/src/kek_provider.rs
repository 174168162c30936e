//! The `password-file` KEK provider: the KEK lives in a file, wrapped under a key
//! derived from a password (format in `keyflow_core::kek`).
//!
//! Rules this module enforces:
//! - a KEK file is created only where none exists, and never overwritten: it is written
//!   to a temporary file (mode 0600), fsynced, then *linked* into place (which fails if
//!   the name exists), and the directory is fsynced;
//! - a KEK that fails to unlock is an error — never regenerated, never rewritten;
//! - the keystore records the id of its KEK; a different KEK is refused, and a keystore
//!   whose KEK file is missing refuses `init` instead of creating a new KEK.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use keyflow_core::kek::{KdfParams, Kek, KekFile};
use keyflow_core::rng::SecureRandom;
use zeroize::Zeroizing;

use crate::keystore::Keystore;
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

    fn bytes(&self) -> &[u8] {
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

fn io<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> KmsError + 'p {
    move |source| KmsError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Reads and parses a KEK file. `Ok(None)` when it does not exist.
fn read_kek_file(path: &Path) -> Result<Option<KekFile>> {
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

/// Writes `bytes` to `path` atomically and only if `path` does not exist.
fn write_new_file_atomically(path: &Path, bytes: &[u8], rng: &dyn SecureRandom) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io("cannot create directory", &dir))?;
    let mut suffix = [0u8; 8];
    rng.fill(&mut suffix).map_err(|_| KmsError::Randomness)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kek".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", keyflow_core::to_hex(&suffix)));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("cannot create temporary KEK file", &tmp))?;
        f.write_all(bytes)
            .map_err(io("cannot write temporary KEK file", &tmp))?;
        f.sync_all()
            .map_err(io("cannot sync temporary KEK file", &tmp))?;
        // hard_link fails if `path` exists: a concurrent init can never be overwritten.
        fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == ErrorKind::AlreadyExists {
                KmsError::Io {
                    action: "refusing to overwrite existing KEK file",
                    path: path.to_owned(),
                    source: e,
                }
            } else {
                io("cannot move KEK file into place", path)(e)
            }
        })?;
        if let Ok(d) = fs::File::open(&dir) {
            d.sync_all().map_err(io("cannot sync directory", &dir))?;
        }
        Ok(())
    })();
    // The temporary name is removed whatever happened; a crash may leave one behind,
    // which is harmless (it is never read).
    let _ = fs::remove_file(&tmp);
    result
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

/// `keyflow init`: creates the KEK file if there is none, or checks that the existing
/// one unlocks; then binds the keystore to the KEK. Creates no DEKs.
pub async fn init(
    path: &Path,
    password: &KekPassword,
    params: KdfParams,
    store: &dyn Keystore,
    rng: &dyn SecureRandom,
) -> Result<(InitOutcome, Kek)> {
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
    Ok((InitOutcome::Created, kek))
}

/// Unlocks the KEK file for every other command. Never creates or modifies the file.
pub async fn unlock(path: &Path, password: &KekPassword, store: &dyn Keystore) -> Result<Kek> {
    let file = read_kek_file(path)?.ok_or_else(|| KmsError::KekMissing(path.to_owned()))?;
    let kek = file
        .unlock(password.bytes())
        .map_err(|_| KmsError::KekUnlockFailed(path.to_owned()))?;
    bind_to_keystore(&kek, store).await?;
    Ok(kek)
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
