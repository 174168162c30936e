//! The audit journal: a local, append-only file where a server's records become
//! durable before its answers go out, drained into the database's chain in the
//! background.
//!
//! Why: a database commit per small batch of records (WAL write, fsync, the hand-offs to
//! sqlx's SQLite worker) cost an audited request ~3.7× the CPU of an unaudited one
//! (`docs/benchmarks.md`). One `write(2)` of one line per record costs a few
//! microseconds; the drain then appends hundreds of records per transaction.
//!
//! Durability: a record is in the kernel (the file's page cache) before its request is
//! answered, so a SIGKILL loses nothing. Drained records are as durable as the
//! database's commit; records the database refuses are `fdatasync`ed in the journal
//! while they wait. Power loss loses at most what arrived since the last drain
//! ([`log::DRAIN_INTERVAL`](super::log::DRAIN_INTERVAL)).
//!
//! Format, UTF-8 lines:
//!
//! ```text
//! keyflow-audit-journal v1 <journal id> <kek id>
//! <n> <mac hex> <event JSON>
//! ```
//!
//! `n` counts from 1 without gaps; `mac = HMAC(K, "keyflow-audit-journal-v1" ‖
//! len(id) (u16 BE) ‖ id ‖ n (u64 BE) ‖ body)` under the audit key `K` of the KEK in the
//! header, so whoever can write the file but does not hold the KEK cannot add or change
//! an entry (a removed one shows as a gap). The store keeps, per journal, the last entry
//! appended to the chain, moved in the same transaction as the append
//! ([`AuditStore::append_audit_from`](super::AuditStore::append_audit_from)), so a
//! crash between the commit and anything else never appends an entry twice.
//!
//! Ownership: the writing process holds an exclusive lock (`flock`) on its journal for
//! its lifetime. A journal whose lock can be taken belongs to a process that is gone:
//! [`orphans`] finds them, and the next server start (or `keyflow audit` command) drains
//! them into the chain and deletes them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use keyflow_core::{from_hex, to_hex, OsRng, SecureRandom};

use super::{AuditEvent, AuditSealer};

/// The HMAC domain of journal entries (never a chain record's).
const DOMAIN: &[u8] = b"keyflow-audit-journal-v1";
/// The first word of a journal's header line.
const MAGIC: &str = "keyflow-audit-journal v1";
/// Longest entry line read back (an event is a few hundred bytes; a `detail` is bounded
/// by the server's request limits).
const MAX_LINE: usize = 1 << 20;

/// How far one journal has reached the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalMark {
    /// The journal's id (its header's, and its file name's).
    pub journal: String,
    /// Its last entry now in the chain.
    pub through: u64,
}

/// The file name of journal `id`.
fn file_name(id: &str) -> String {
    format!("journal-{id}.log")
}

/// What entry `n` of journal `id` is MAC'd over, with `id_len` and `n_be` as buffers.
fn entry_parts<'a>(
    id: &'a str,
    id_len: &'a [u8; 2],
    n_be: &'a [u8; 8],
    body: &'a str,
) -> [&'a [u8]; 5] {
    [DOMAIN, id_len, id.as_bytes(), n_be, body.as_bytes()]
}

fn id_len(id: &str) -> [u8; 2] {
    u16::try_from(id.len()).unwrap_or(u16::MAX).to_be_bytes()
}

/// The HMAC of entry `n` of journal `id`.
fn entry_tag(sealer: &AuditSealer, id: &str, n: u64, body: &str) -> [u8; 32] {
    sealer.tag(&entry_parts(id, &id_len(id), &n.to_be_bytes(), body))
}

/// Whether `tag` is entry `n`'s HMAC, in constant time.
fn entry_verifies(sealer: &AuditSealer, id: &str, n: u64, body: &str, tag: &[u8]) -> bool {
    sealer.tag_verifies(&entry_parts(id, &id_len(id), &n.to_be_bytes(), body), tag)
}

/// The journal a running process writes. Not thread-safe by itself: the
/// [`AuditLog`](super::log::AuditLog) holds it under a mutex.
pub struct JournalFile {
    file: File,
    path: PathBuf,
    id: String,
    header_len: u64,
    /// The line being written (reused: no allocation per record).
    line: Vec<u8>,
}

impl std::fmt::Debug for JournalFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The id and path only: not the last line written.
        f.debug_struct("JournalFile")
            .field("id", &self.id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl JournalFile {
    /// Creates a new journal in `dir` (made 0700 when missing) for records sealed under
    /// `sealer`'s KEK, locked for this process, its header durable.
    pub fn create(dir: &Path, sealer: &AuditSealer) -> io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut raw = [0u8; 16];
        OsRng
            .fill(&mut raw)
            .map_err(|_| io::Error::other("the OS random generator failed"))?;
        let id = to_hex(&raw);
        let path = dir.join(file_name(&id));
        let mut file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.try_lock().map_err(|e| match e {
            fs::TryLockError::Error(e) => e,
            fs::TryLockError::WouldBlock => io::Error::other("a new journal is already locked"),
        })?;
        let header = format!("{MAGIC} {id} {}\n", sealer.kek_id());
        file.write_all(header.as_bytes())?;
        file.sync_all()?;
        // The new name must survive power loss too.
        File::open(dir)?.sync_all()?;
        Ok(Self {
            file,
            path,
            id,
            header_len: header.len() as u64,
            line: Vec::with_capacity(1024),
        })
    }

    /// This journal's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends entry `n` (one `write` of one line): in the kernel when this returns.
    pub fn append(&mut self, sealer: &AuditSealer, n: u64, body: &str) -> io::Result<()> {
        let tag = entry_tag(sealer, &self.id, n, body);
        self.line.clear();
        writeln!(self.line, "{n} {} {body}", to_hex(&tag))?;
        self.file.write_all(&self.line)
    }

    /// Appends raw bytes (a newline ending a torn fragment).
    pub fn append_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    /// Makes every appended entry durable (`fdatasync`).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Empties the journal back to its header, once every entry is in the chain (entry
    /// numbers go on from where they were).
    pub fn truncate(&mut self) -> io::Result<()> {
        self.file.set_len(self.header_len)
    }

    /// Its size in bytes.
    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? <= self.header_len)
    }
}

/// A journal whose writer is gone, locked by this process while it is drained.
#[derive(Debug)]
pub struct Orphan {
    /// Its path.
    pub path: PathBuf,
    _lock: File,
}

/// The journals in `dir` whose writing process is gone (their lock could be taken); an
/// empty list when `dir` does not exist.
pub fn orphans(dir: &Path) -> io::Result<Vec<Orphan>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(name.starts_with("journal-") && name.ends_with(".log")) {
            continue;
        }
        let file = File::open(&path)?;
        match file.try_lock() {
            Ok(()) => found.push(Orphan { path, _lock: file }),
            Err(fs::TryLockError::WouldBlock) => {} // a live writer's
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// A journal's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The journal's id.
    pub id: String,
    /// The KEK whose audit key sealed its entries.
    pub kek_id: String,
}

/// What reading an orphaned journal found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Entries not yet in the chain, in order, with their numbers.
    pub entries: Vec<(u64, AuditEvent)>,
    /// Lines refused: bad MAC, malformed, or not the next number.
    pub rejected: u64,
    /// Entry numbers skipped over (entries removed from the file).
    pub missing: u64,
    /// The last line was cut short (the writer died mid-write; it was never answered).
    pub torn: bool,
}

impl Recovered {
    /// Whether anything was wrong with the file (a torn last line is not: it was never
    /// acknowledged).
    pub fn damaged(&self) -> bool {
        self.rejected > 0 || self.missing > 0
    }
}

/// Why an orphaned journal cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file could not be read.
    #[error("cannot read audit journal {path}: {source}")]
    Io {
        /// The journal.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The header is not a journal's.
    #[error("{0} is not an audit journal (bad header)")]
    NotAJournal(PathBuf),
    /// Its entries were sealed under a KEK whose audit key is not available here.
    #[error("audit journal {path} is sealed under KEK {kek_id}, whose key is not available (keep its retired KEK file and password available, then run `keyflow audit verify`)")]
    UnknownKek {
        /// The journal.
        path: PathBuf,
        /// The KEK it names.
        kek_id: String,
    },
}

/// Reads the header of the journal at `path`.
pub fn read_header(path: &Path) -> Result<Header, JournalError> {
    let io_err = |source| JournalError::Io {
        path: path.to_owned(),
        source,
    };
    let mut first = String::new();
    BufReader::new(File::open(path).map_err(io_err)?)
        .take_line(&mut first)
        .map_err(io_err)?;
    parse_header(&first).ok_or_else(|| JournalError::NotAJournal(path.to_owned()))
}

fn parse_header(line: &str) -> Option<Header> {
    let rest = line
        .strip_suffix('\n')?
        .strip_prefix(MAGIC)?
        .strip_prefix(' ')?;
    let (id, kek_id) = rest.split_once(' ')?;
    let plain =
        |s: &str| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    (plain(id) && plain(kek_id)).then(|| Header {
        id: id.to_owned(),
        kek_id: kek_id.to_owned(),
    })
}

/// Reads the entries of the journal at `path` after entry `drained`, checking each
/// against the audit key of the journal's KEK among `sealers`.
pub fn read_entries(
    path: &Path,
    header: &Header,
    sealers: &[&AuditSealer],
    drained: u64,
) -> Result<Recovered, JournalError> {
    let sealer = sealers
        .iter()
        .find(|s| s.kek_id() == header.kek_id)
        .ok_or_else(|| JournalError::UnknownKek {
            path: path.to_owned(),
            kek_id: header.kek_id.clone(),
        })?;
    let io_err = |source| JournalError::Io {
        path: path.to_owned(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
    let mut line = String::new();
    reader.take_line(&mut line).map_err(io_err)?; // the header, read already
    let mut out = Recovered::default();
    let mut expected = None::<u64>;
    loop {
        line.clear();
        let read = reader.take_line(&mut line).map_err(io_err)?;
        if read == 0 {
            break;
        }
        let Some(text) = line.strip_suffix('\n') else {
            out.torn = true;
            break;
        };
        let Some((n, event)) = parse_entry(sealer, &header.id, text) else {
            out.rejected += 1;
            continue;
        };
        // The first entry after a truncation may start anywhere; after it, no gaps.
        match expected {
            Some(want) if n < want => {
                out.rejected += 1;
                continue;
            }
            Some(want) => out.missing += n - want,
            None if n > drained + 1 && drained > 0 => out.missing += n - drained - 1,
            None => {}
        }
        expected = Some(n + 1);
        if n > drained {
            out.entries.push((n, event));
        }
    }
    Ok(out)
}

fn parse_entry(sealer: &AuditSealer, id: &str, text: &str) -> Option<(u64, AuditEvent)> {
    let (n, rest) = text.split_once(' ')?;
    let (tag, body) = rest.split_once(' ')?;
    let n: u64 = n.parse().ok().filter(|n| *n > 0)?;
    let tag = from_hex(tag).filter(|t| t.len() == 32)?;
    if !entry_verifies(sealer, id, n, body, &tag) {
        return None;
    }
    Some((n, serde_json::from_str(body).ok()?))
}

/// A line reader that refuses lines longer than [`MAX_LINE`].
trait TakeLine {
    fn take_line(&mut self, line: &mut String) -> io::Result<usize>;
}

impl<R: BufRead> TakeLine for R {
    fn take_line(&mut self, line: &mut String) -> io::Result<usize> {
        let n = io::Read::take(&mut *self, MAX_LINE as u64 + 1).read_line(line)?;
        if n > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "an audit journal line is longer than 1 MiB",
            ));
        }
        Ok(n)
    }
}

/// Deletes a drained journal.
pub fn remove(orphan: Orphan) -> io::Result<()> {
    fs::remove_file(&orphan.path)?;
    if let Some(dir) = orphan.path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Source;
    use keyflow_core::kek::Kek;

    fn sealer() -> AuditSealer {
        let kek = Kek::generate(&OsRng).unwrap();
        AuditSealer::new(&kek).unwrap()
    }

    fn event(i: u64) -> AuditEvent {
        AuditEvent::new(i as i64, Source::Http, "tok", format!("op{i}"))
    }

    fn write(dir: &Path, s: &AuditSealer, n: u64) -> (PathBuf, String) {
        let mut j = JournalFile::create(dir, s).unwrap();
        for i in 1..=n {
            j.append(s, i, &serde_json::to_string(&event(i)).unwrap())
                .unwrap();
        }
        (j.path().to_owned(), j.id().to_owned())
    }

    fn read(path: &Path, s: &AuditSealer, drained: u64) -> Recovered {
        let h = read_header(path).unwrap();
        read_entries(path, &h, &[s], drained).unwrap()
    }

    #[test]
    fn entries_read_back_after_the_drained_mark() {
        let dir = tempfile::tempdir().unwrap();
        let s = sealer();
        let (path, id) = write(dir.path(), &s, 5);
        assert_eq!(read_header(&path).unwrap().id, id);
        let r = read(&path, &s, 2);
        let ns: Vec<u64> = r.entries.iter().map(|(n, _)| *n).collect();
        assert_eq!(ns, vec![3, 4, 5]);
        assert_eq!(r.entries[0].1, event(3));
        assert!(!r.damaged() && !r.torn);
    }

    #[test]
    fn a_live_journal_is_no_orphan_and_a_dead_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let s = sealer();
        let live = JournalFile::create(dir.path(), &s).unwrap();
        assert!(orphans(dir.path()).unwrap().is_empty());
        drop(live);
        let found = orphans(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        // Taken by this process while it drains: not anyone else's orphan.
        assert!(orphans(dir.path()).unwrap().is_empty());
        remove(found.into_iter().next().unwrap()).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(orphans(&dir.path().join("missing")).unwrap().is_empty());
    }

    #[test]
    fn edited_inserted_and_removed_entries_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let s = sealer();
        let (path, _) = write(dir.path(), &s, 4);
        let text = fs::read_to_string(&path).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        // Entry 2's operation edited, entry 3 removed, a forged line added.
        lines[2] = lines[2].replace("op2", "opX");
        lines.remove(3);
        lines.push(format!("5 {} {}", "00".repeat(32), r#"{"time":1}"#));
        fs::write(&path, lines.join("\n") + "\n").unwrap();
        let r = read(&path, &s, 0);
        let ns: Vec<u64> = r.entries.iter().map(|(n, _)| *n).collect();
        assert_eq!(ns, vec![1, 4]);
        assert_eq!((r.rejected, r.missing), (2, 2));
        assert!(r.damaged());
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_another_keks_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = sealer();
        let (path, _) = write(dir.path(), &s, 2);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"3 abc").unwrap();
        let r = read(&path, &s, 0);
        assert_eq!(r.entries.len(), 2);
        assert!(r.torn && !r.damaged());

        let h = read_header(&path).unwrap();
        let other = sealer();
        assert!(matches!(
            read_entries(&path, &h, &[&other], 0),
            Err(JournalError::UnknownKek { .. })
        ));
        // Under another KEK's key, no entry verifies either.
        let forged = Header {
            kek_id: other.kek_id().to_owned(),
            ..h
        };
        let r = read_entries(&path, &forged, &[&other], 0).unwrap();
        assert_eq!((r.entries.len(), r.rejected), (0, 2));
    }

    #[test]
    fn truncation_keeps_the_header_and_numbering_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let s = sealer();
        let mut j = JournalFile::create(dir.path(), &s).unwrap();
        let body = |i| serde_json::to_string(&event(i)).unwrap();
        j.append(&s, 1, &body(1)).unwrap();
        assert!(!j.is_empty().unwrap());
        j.truncate().unwrap();
        assert!(j.is_empty().unwrap());
        j.append(&s, 2, &body(2)).unwrap();
        j.sync().unwrap();
        let r = read(j.path(), &s, 1);
        assert_eq!(r.entries.len(), 1);
        assert!(!r.damaged());
    }

    #[test]
    fn not_a_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal-x.log");
        for bad in ["", "keyflow-audit-journal v1 onlyid\n", "hello\n"] {
            fs::write(&path, bad).unwrap();
            assert!(matches!(
                read_header(&path),
                Err(JournalError::NotAJournal(_))
            ));
        }
    }
}
