//! Durable, atomic writes of small secret files (KEK files, backups): a temporary file
//! (mode 0600, fsynced) beside the target, then linked into place — which fails if the
//! name exists, so nothing is ever overwritten by accident — or renamed over it when
//! replacing is the point; then the directory is fsynced. A crash leaves the old file
//! or the new one, never a mix; at worst a stray temporary name, which is never read.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use keyflow_core::rng::SecureRandom;

/// The directory holding `path` (`.` for a bare name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// fsyncs the directory holding `path`, so a rename or link in it survives power loss.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    fs::File::open(parent_dir(path))?.sync_all()
}

/// Writes `bytes` to a new temporary file (0600, fsynced) beside `path` and returns its
/// name. The directory is created (0700) if missing.
fn write_temp(path: &Path, bytes: &[u8], rng: &dyn SecureRandom) -> io::Result<PathBuf> {
    let dir = parent_dir(path);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let mut suffix = [0u8; 8];
    rng.fill(&mut suffix)
        .map_err(|_| io::Error::other("the OS random generator failed"))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", keyflow_core::to_hex(&suffix)));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes `bytes` to `path` atomically, only if `path` does not exist (an existing file
/// gives [`io::ErrorKind::AlreadyExists`] and is left untouched).
pub fn write_new(path: &Path, bytes: &[u8], rng: &dyn SecureRandom) -> io::Result<()> {
    let tmp = write_temp(path, bytes, rng)?;
    let linked = fs::hard_link(&tmp, path).and_then(|()| sync_dir(path));
    // The temporary name goes whatever happened; the linked file keeps the data.
    let _ = fs::remove_file(&tmp);
    linked
}

/// Replaces `path` (or creates it) with `bytes` atomically: readers see the old file or
/// the new one, and no copy of the old content is left beside it.
pub fn replace(path: &Path, bytes: &[u8], rng: &dyn SecureRandom) -> io::Result<()> {
    let tmp = write_temp(path, bytes, rng)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyflow_core::OsRng;

    #[test]
    fn new_never_overwrites_and_replace_does() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("f.json");
        write_new(&p, b"one", &OsRng).unwrap();
        let e = write_new(&p, b"two", &OsRng).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"one");
        replace(&p, b"three", &OsRng).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }
}
