//! The audit trail: what happened, who did it, from where, with what result — never
//! plaintext, ciphertext, tokens or key material.
//!
//! - [`AuditEvent`] is one action as its author describes it (an HTTP request's outcome,
//!   a CLI command, a scheduler step);
//! - [`chain`] seals events into an append-only hash chain: each record carries an
//!   HMAC-SHA256, under a key derived from the KEK, over the previous record's MAC, its
//!   sequence number and its canonical body, so whoever can write the database but does
//!   not hold the KEK cannot edit, delete, insert or reorder records without
//!   [`chain::ChainVerifier`] naming the first bad one;
//! - [`AuditStore`] is where sealed records persist (the keystore's database; SQLite and
//!   PostgreSQL implement it): one shared chain per database, appended in one
//!   transaction per batch;
//! - [`log::AuditLog`] batches concurrent records into one transaction (group commit)
//!   and answers each caller once its record is durable — in the database itself, or
//!   first in a local [`journal`] that a background task drains into the database in
//!   large batches (what `keyflow serve` uses: far fewer commits per request);
//! - [`checkpoint`] signs (sequence number, MAC) statements: operator checkpoints kept
//!   outside the database prove a cut tail, and the retention anchor marks where
//!   [`AuditStore::audit_prune`] cut the chain's start;
//! - [`verify`] walks the stored chain from that anchor up to a head (whole, or on from
//!   a head verified earlier) and prunes it ([`verify::prune_before`]).

pub mod chain;
pub mod checkpoint;
pub mod journal;
mod journaled;
pub mod log;
pub mod prune;
pub mod recover;
pub mod verify;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::keystore::StoreError;

pub use chain::{
    AuditSealer, ChainBreak, ChainFull, ChainHead, ChainVerifier, EncodedEvent, StoredAudit,
};
pub use checkpoint::{Checkpoint, CheckpointError, CheckpointKind};
pub use journal::JournalMark;
pub use prune::{check_prune, mac_from_hex};
pub use verify::{PruneOutcome, Verified, VerifyError};

/// Who or what produced an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// An HTTP API request.
    Http,
    /// A `keyflow` CLI command.
    Cli,
    /// The key scheduler (rotations, deprecations).
    Scheduler,
    /// The server itself (start, stop).
    System,
}

/// One audited action. Field names are the stable export format (`docs/audit.md`).
///
/// Only metadata goes in: field *names* are fine, values never are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// When, in Unix milliseconds.
    pub time: i64,
    /// Who or what produced it.
    pub source: Source,
    /// The actor: a token id, `anonymous`, `cli:<OS user>`, `scheduler:<instance>`,
    /// `system:<instance>`.
    pub actor: String,
    /// The actor's display name (a token's name), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_name: Option<String>,
    /// What was done, e.g. `encrypt`, `keys.revoke`, `tokens.create`.
    pub operation: String,
    /// The HTTP method and route, e.g. `POST /api/encryption/encrypt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The client address (the real one behind trusted proxies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The request id (also the `x-request-id` response header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Purposes involved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purposes: Vec<String>,
    /// Key versions involved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<u32>,
    /// Items processed (batch entries, fields, bytes of a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<u64>,
    /// `ok`, or the stable error code (`unauthorized`, `forbidden`, …).
    pub result: String,
    /// The HTTP status answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// How long it took, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// Further non-sensitive facts (a census, field names, a reason given by an admin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl AuditEvent {
    /// An event with the required parts; the rest empty.
    pub fn new(
        time: i64,
        source: Source,
        actor: impl Into<String>,
        operation: impl Into<String>,
    ) -> Self {
        Self {
            time,
            source,
            actor: actor.into(),
            actor_name: None,
            operation: operation.into(),
            route: None,
            client: None,
            request_id: None,
            purposes: Vec::new(),
            versions: Vec::new(),
            items: None,
            result: "ok".into(),
            status: None,
            latency_us: None,
            detail: None,
        }
    }
}

/// What to read back ([`AuditStore::audit_query`]): every set condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Records at or after this time (Unix ms).
    pub since: Option<i64>,
    /// Records before this time (Unix ms).
    pub until: Option<i64>,
    /// This actor exactly.
    pub actor: Option<String>,
    /// Records involving this purpose.
    pub purpose: Option<String>,
    /// This operation exactly.
    pub operation: Option<String>,
    /// This result exactly (`ok` or an error code).
    pub result: Option<String>,
    /// Cursor: only records with a sequence number below this one.
    pub before: Option<u64>,
    /// At most this many records (the store caps it at [`MAX_PAGE`]).
    pub limit: u32,
}

/// The most records one query returns.
pub const MAX_PAGE: u32 = 1000;

impl AuditFilter {
    /// Whether `r` meets every condition set (the limit aside): the semantics every
    /// store implements, exact matches only (no wildcard, prefix or case folding).
    pub fn matches(&self, r: &StoredAudit) -> bool {
        self.since.is_none_or(|t| r.time >= t)
            && self.until.is_none_or(|t| r.time < t)
            && self.actor.as_ref().is_none_or(|a| *a == r.actor)
            && self.purpose.as_ref().is_none_or(|p| r.purposes.contains(p))
            && self.operation.as_ref().is_none_or(|o| *o == r.operation)
            && self.result.as_ref().is_none_or(|x| *x == r.result)
            && self.before.is_none_or(|b| r.seq < b)
    }

    /// How many records a page holds: `limit`, 0 meaning [`MAX_PAGE`], at most
    /// [`MAX_PAGE`].
    pub fn page_size(&self) -> u32 {
        if self.limit == 0 {
            MAX_PAGE
        } else {
            self.limit.min(MAX_PAGE)
        }
    }
}

/// Persistence of the audit chain. One chain per database, shared by every process that
/// writes to it; appends are serialized by the store (a row lock on the chain head).
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// In one transaction: reads the chain head (locking it against other appenders),
    /// seals each event after the previous record with `sealer`, inserts the records and
    /// moves the head. All or nothing. Returns the new head.
    async fn append_audit(
        &self,
        sealer: &AuditSealer,
        events: &[AuditEvent],
    ) -> Result<ChainHead, StoreError>;

    /// [`append_audit`](Self::append_audit) of events the journal already encoded (their
    /// text is sealed as it is), and in the same transaction records that journal
    /// `mark.journal` has reached the chain through its entry `mark.through` (see
    /// [`journal`]): a crash after the commit never appends those entries twice.
    async fn append_audit_from(
        &self,
        sealer: &AuditSealer,
        events: &[EncodedEvent],
        mark: &JournalMark,
    ) -> Result<ChainHead, StoreError>;

    /// The last entry of journal `journal` appended to the chain, if any.
    async fn audit_journal_mark(&self, journal: &str) -> Result<Option<u64>, StoreError>;

    /// Forgets journal `journal`'s mark (its file is gone for good).
    async fn audit_journal_forget(&self, journal: &str) -> Result<(), StoreError>;

    /// The chain head: the last record's sequence number and MAC (0 and zeros when
    /// empty).
    async fn audit_head(&self) -> Result<ChainHead, StoreError>;

    /// Records with a sequence number above `after`, ascending, at most `limit` (for
    /// verification and export).
    async fn audit_scan(&self, after: u64, limit: u32) -> Result<Vec<StoredAudit>, StoreError>;

    /// Records matching `filter`, newest first.
    async fn audit_query(&self, filter: &AuditFilter) -> Result<Vec<StoredAudit>, StoreError>;

    /// Where retention cut the chain: the anchor stored by the last
    /// [`audit_prune`](Self::audit_prune), exactly as given (tag unchecked: verifying it
    /// is the reader's job); `None` while the chain starts at record 1.
    async fn audit_anchor(&self) -> Result<Option<Checkpoint>, StoreError>;

    /// Retention, in one transaction: deletes every record with a sequence number up to
    /// `anchor.seq` and stores `anchor` as the chain's anchor (replacing the previous
    /// one). Returns how many records were deleted.
    ///
    /// The caller verifies the chain and signs `anchor` first
    /// ([`Checkpoint::sign_anchor`]); the store only refuses, writing nothing, an anchor
    /// that cannot be where the chain starts: a malformed one, one above the head, one
    /// not above the current anchor (sequence number 0 included), or one whose MAC is not
    /// the stored record's at its position (the chain changed since it was verified).
    async fn audit_prune(&self, anchor: &Checkpoint) -> Result<u64, StoreError>;
}
