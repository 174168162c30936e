//! Recording what CLI commands do in the keystore's audit chain.
//!
//! Every command that changes keys, tokens, the KEK or application data builds one
//! [`AuditEvent`] (source `cli`, actor `cli:<OS user>`) and hands it to
//! [`Trail::conclude`] once the action has run, with the action's outcome: the record
//! says `ok` or the error's stable code. Records are sealed under the unlocked KEK, so
//! only failures after the KEK was unlocked can be recorded; refusals before it (bad
//! arguments, a missing password) changed nothing and are not.
//!
//! **Failed KEK unlocks** have no KEK to seal with. Writing them into the chain unsealed
//! would let anyone who can write the database add records, which is what the chain
//! exists to prevent; a WARN log line would break the one-line error contract and is
//! gone with the terminal. So the failure is *noted* in `<KEK_PATH>.failed-unlocks`
//! (0600, one small JSON line per attempt) and the next command that unlocks the KEK
//! seals the notes into the chain ahead of its own record, as operation `kek.unlock`,
//! result `kek_unlock_failed`, the attempt's time and actor, and `detail.sealedLater`.
//! The cost: until then the note is only as trustworthy as the KEK's directory (whoever
//! can write it can add or remove notes, never other records), and notes are parsed
//! strictly (shape, lengths, characters) so nothing else can be smuggled in that way.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyflow_kms::audit::{AuditEvent, AuditSealer, AuditStore, Source};
use keyflow_kms::clock::{Clock, SystemClock};
use keyflow_kms::kek_provider::sibling;
use keyflow_kms::keyflow_core::kek::Kek;
use keyflow_kms::KmsError;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::Config;
use crate::error::CliError;

/// Operation name of a sealed failed-unlock note.
pub const KEK_UNLOCK: &str = "kek.unlock";
/// Result code of a failed KEK unlock.
pub const KEK_UNLOCK_FAILED: &str = "kek_unlock_failed";
/// Notes sealed one record each; any beyond are sealed as one summary record.
const MAX_NOTES_SEALED: usize = 200;
/// Largest notes file read (a note is ~100 bytes).
const MAX_NOTES_BYTES: u64 = 1 << 20;

/// `cli:<OS user>`: `$USER`, else `$LOGNAME`, else the numeric uid.
pub fn actor() -> String {
    let name = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .map(|v| v.trim().to_owned())
        .find(|v| !v.is_empty() && v.len() <= 64 && !v.chars().any(char::is_control));
    let user = name.unwrap_or_else(|| {
        // The owner of /proc/self is this process's real uid; no crate needed.
        fs::metadata("/proc/self").map_or_else(|_| "unknown".into(), |m| m.uid().to_string())
    });
    format!("cli:{user}")
}

/// The stable code recorded as an event's result (the server's codes where they
/// overlap). Never the message: codes are what filters and SIEM rules match.
pub fn result_code(e: &CliError) -> &'static str {
    match e {
        CliError::Config(_) | CliError::Usage(_) => "invalid_request",
        CliError::Failed(_) => "failed",
        CliError::Kms(e) => kms_code(e),
        CliError::Store(_) => "unavailable",
        CliError::Io(_) => "io_error",
        CliError::Stream(_) => "stream_error",
        CliError::Reencrypt(e) if e.is_usage() => "invalid_request",
        CliError::Reencrypt(_) => "reencrypt_failed",
        CliError::RowsFailed(_) => "rows_failed",
    }
}

fn kms_code(e: &KmsError) -> &'static str {
    match e {
        KmsError::DecryptionFailed => "decryption_failed",
        KmsError::InvalidCiphertext => "invalid_ciphertext",
        KmsError::Invalid(_) | KmsError::BackupPasswordTooShort(_) => "invalid_request",
        KmsError::UnknownPurpose(_) | KmsError::StrictModeNoKey(_) => "unknown_purpose",
        KmsError::PurposeExists(_) => "purpose_exists",
        KmsError::KeyNotUsable { .. } => "key_unavailable",
        KmsError::UnknownVersion { .. } => "unknown_key",
        KmsError::WrongKeyState { .. } => "invalid_key_state",
        KmsError::RotationConflict(_) | KmsError::KekRotationConflict => "conflict",
        KmsError::KekBusy(_) => "busy",
        KmsError::KekMissing(_) => "kek_missing",
        KmsError::KekUnlockFailed(_) => KEK_UNLOCK_FAILED,
        KmsError::KekFileInvalid { .. } => "kek_file_invalid",
        KmsError::KekMismatch { .. } => "kek_mismatch",
        KmsError::KekLost(_) => "kek_lost",
        KmsError::PasswordMissing | KmsError::WeakPassword(_) => "invalid_request",
        KmsError::BackupInvalid(_) | KmsError::BackupDecryptionFailed => "invalid_backup",
        KmsError::RestoreRefused(_) => "restore_conflict",
        KmsError::Store(_) => "unavailable",
        KmsError::Io { .. } => "io_error",
        _ => "internal_error",
    }
}

/// Where one command records what it did: the audit store and the sealer of the KEK it
/// unlocked.
pub struct Trail {
    store: Arc<dyn AuditStore>,
    sealer: AuditSealer,
    actor: String,
    notes: PathBuf,
}

impl std::fmt::Debug for Trail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trail")
            .field("sealer", &self.sealer)
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

impl Trail {
    /// A trail sealing under `kek` into `store`.
    pub fn new(config: &Config, store: Arc<dyn AuditStore>, kek: &Kek) -> Result<Self, CliError> {
        Ok(Self {
            store,
            sealer: AuditSealer::new(kek)?,
            actor: actor(),
            notes: notes_path(&config.kek_path),
        })
    }

    /// A `cli` event for `operation`, by this OS user, now; the caller adds purposes,
    /// versions and detail.
    pub fn event(&self, operation: &str) -> AuditEvent {
        AuditEvent::new(
            SystemClock.now_millis(),
            Source::Cli,
            self.actor.clone(),
            operation,
        )
    }

    /// Records `event` with `outcome`'s result and returns `outcome`. When the action
    /// succeeded but the record cannot be written, the command fails saying the action
    /// was done (its output, already printed, stands).
    pub async fn conclude<T>(
        &self,
        mut event: AuditEvent,
        outcome: Result<T, CliError>,
    ) -> Result<T, CliError> {
        event.result = match &outcome {
            Ok(_) => "ok".into(),
            Err(e) => result_code(e).into(),
        };
        let operation = event.operation.clone();
        match (self.append(vec![event]).await, outcome) {
            (Ok(()), outcome) => outcome,
            (Err(e), Ok(_)) => Err(CliError::Failed(format!(
                "{operation} was done, but its audit record could not be written: {e}"
            ))),
            (Err(e), Err(failed)) => {
                // The command's own error is the one line it reports; this is a second
                // fault, for the log.
                tracing::error!(operation = %operation, error = %e, "the audit record of a failed command could not be written");
                Err(failed)
            }
        }
    }

    /// Appends `events` in one transaction, after any failed-unlock notes.
    pub async fn append(&self, events: Vec<AuditEvent>) -> Result<(), String> {
        let claimed = claim_notes(&self.notes);
        let mut all = claimed
            .as_ref()
            .map(|c| c.events.clone())
            .unwrap_or_default();
        all.extend(events);
        if all.is_empty() {
            return Ok(());
        }
        let appended = self
            .store
            .append_audit(&self.sealer, &all)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        if let Some(c) = claimed {
            c.settle(&self.notes, appended.is_ok());
        }
        appended
    }
}

/// `<KEK_PATH>.failed-unlocks`.
pub fn notes_path(kek_path: &Path) -> PathBuf {
    sibling(kek_path, "failed-unlocks")
}

/// One failed unlock, as noted before any KEK was available.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Note {
    time: i64,
    actor: String,
    command: String,
}

impl Note {
    /// Only what [`note_failed_unlock`] writes: anything else in the file is not sealed.
    fn valid(&self) -> bool {
        let command_ok = !self.command.is_empty()
            && self.command.len() <= 48
            && self
                .command
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'-');
        self.time > 0
            && self.actor.starts_with("cli:")
            && self.actor.len() <= 70
            && !self.actor.chars().any(char::is_control)
            && command_ok
    }

    fn event(&self) -> AuditEvent {
        let mut e = AuditEvent::new(self.time, Source::Cli, self.actor.clone(), KEK_UNLOCK);
        e.result = KEK_UNLOCK_FAILED.into();
        e.detail = Some(json!({ "command": self.command, "sealedLater": true }));
        e
    }
}

/// Notes a failed KEK unlock by `command` (see the module docs). Never fails the
/// command: a note that cannot be written is logged.
pub fn note_failed_unlock(config: &Config, command: &str) {
    let note = Note {
        time: SystemClock.now_millis(),
        actor: actor(),
        command: command.to_owned(),
    };
    let path = notes_path(&config.kek_path);
    let written = serde_json::to_string(&note)
        .map_err(std::io::Error::other)
        .and_then(|line| {
            // One write of one short line with O_APPEND: concurrent notes never interleave.
            fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&path)?
                .write_all(format!("{line}\n").as_bytes())
        });
    match written {
        Ok(()) => {
            tracing::info!(path = %path.display(), "failed KEK unlock noted; the next command that unlocks the KEK seals it into the audit chain")
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "a failed KEK unlock could not be noted for the audit chain")
        }
    }
}

/// Notes taken over by this process (renamed aside, so two commands never seal the
/// same note twice).
struct Claimed {
    file: PathBuf,
    raw: Vec<u8>,
    events: Vec<AuditEvent>,
}

impl Claimed {
    /// After the append: the claimed file is removed; if the append failed, its notes
    /// go back for the next command.
    fn settle(self, notes: &Path, appended: bool) {
        if !appended {
            let back = fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(notes)
                .and_then(|mut f| f.write_all(&self.raw));
            if let Err(e) = back {
                tracing::warn!(path = %self.file.display(), error = %e, "failed-unlock notes could not be put back; they stay in this file");
                return;
            }
        }
        if let Err(e) = fs::remove_file(&self.file) {
            tracing::warn!(path = %self.file.display(), error = %e, "could not remove sealed failed-unlock notes");
        }
    }
}

fn claim_notes(notes: &Path) -> Option<Claimed> {
    let file = sibling(
        notes,
        &format!(
            "claimed-{}-{}",
            std::process::id(),
            SystemClock.now_millis()
        ),
    );
    match fs::rename(notes, &file) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %notes.display(), error = %e, "cannot take failed-unlock notes");
            return None;
        }
    }
    let mut raw = Vec::new();
    let read = fs::File::open(&file).and_then(|f| f.take(MAX_NOTES_BYTES).read_to_end(&mut raw));
    if let Err(e) = read {
        tracing::warn!(path = %file.display(), error = %e, "cannot read failed-unlock notes");
    }
    Some(Claimed {
        events: notes_to_events(&raw),
        file,
        raw,
    })
}

/// The notes as events: one each for the first [`MAX_NOTES_SEALED`] valid ones, then
/// one summary (`items` = how many more, and how many lines were not valid notes).
fn notes_to_events(raw: &[u8]) -> Vec<AuditEvent> {
    let mut events = Vec::new();
    let (mut more, mut invalid, mut last) = (0u64, 0u64, None);
    for line in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Note>(line) {
            Ok(n) if n.valid() => {
                if events.len() < MAX_NOTES_SEALED {
                    events.push(n.event());
                } else {
                    more += 1;
                    last = Some(n);
                }
            }
            _ => invalid += 1,
        }
    }
    if more > 0 || invalid > 0 {
        let now = SystemClock.now_millis();
        let (time, actor) = last.map_or((now, "cli:unknown".to_owned()), |n| (n.time, n.actor));
        let mut e = AuditEvent::new(time, Source::Cli, actor, KEK_UNLOCK);
        e.result = KEK_UNLOCK_FAILED.into();
        e.items = Some(more);
        e.detail = Some(json!({
            "sealedLater": true,
            "summary": "further failed unlocks noted beyond those recorded one by one",
            "invalidNotes": invalid,
        }));
        events.push(e);
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_parsed_strictly() {
        let good = r#"{"time":5,"actor":"cli:alice","command":"keys.rotate"}"#;
        let raw = format!(
            "{good}\n{}\n{}\n{}\nnot json\n",
            r#"{"time":5,"actor":"tok1","command":"x"}"#,
            r#"{"time":5,"actor":"cli:a","command":"x","detail":{"k":1}}"#,
            r#"{"time":5,"actor":"cli:a\nb","command":"x"}"#,
        );
        let events = notes_to_events(raw.as_bytes());
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].actor, "cli:alice");
        assert_eq!(events[0].time, 5);
        assert_eq!(events[0].operation, KEK_UNLOCK);
        assert_eq!(events[0].result, KEK_UNLOCK_FAILED);
        assert_eq!(events[1].items, Some(0));
        assert_eq!(events[1].detail.as_ref().unwrap()["invalidNotes"], 4);
        assert!(notes_to_events(b"").is_empty());
        let many = format!("{good}\n").repeat(MAX_NOTES_SEALED + 3);
        let events = notes_to_events(many.as_bytes());
        assert_eq!(events.len(), MAX_NOTES_SEALED + 1);
        assert_eq!(events[MAX_NOTES_SEALED].items, Some(3));
    }

    #[test]
    fn notes_sit_beside_the_kek_file() {
        assert_eq!(
            notes_path(Path::new("/d/kek.json")),
            PathBuf::from("/d/kek.json.failed-unlocks")
        );
    }

    #[test]
    fn result_codes() {
        assert_eq!(result_code(&CliError::Usage("x".into())), "invalid_request");
        assert_eq!(
            result_code(&CliError::Kms(KmsError::KekUnlockFailed("/k".into()))),
            KEK_UNLOCK_FAILED
        );
        assert_eq!(result_code(&CliError::RowsFailed(3)), "rows_failed");
    }
}
