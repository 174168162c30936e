//! The keystore: where wrapped key versions and their metadata persist, as the few
//! capabilities it is —
//!
//! - [`KeyVersions`]: the key rings (create, rotate, lifecycle, restore, usage);
//! - [`Tokens`]: API tokens;
//! - [`Policies`]: rotation policies;
//! - [`KekBinding`]: what ties the keystore to its KEK (the recorded KEK id and other
//!   metadata, the row sealer, the first sealing of old rows, the KEK rewrap);
//! - [`Coordination`]: what several instances share (leases, the change generation
//!   and its notifier, replay nonces);
//! - [`LegacyKeys`]: key ids imported from the legacy system;
//!
//! and [`Keystore`], every one of them together: what the service holds (as
//! `Arc<dyn Keystore>`) and what a backend implements by implementing each. The audit
//! chain's store is [`crate::audit::AuditStore`], beside these.
//!
//! Every method that changes more than one row is one transaction in the backend;
//! concurrent writers (other threads, processes or server instances) are expected, and
//! conflicts are reported as outcomes, never half-applied.

use async_trait::async_trait;
use keyflow_core::{KeyVersion, Purpose};

use crate::access::TokenRecord;
use crate::legacy::LegacyKeyRecord;
use crate::model::{
    KeyVersionRecord, Policy, RewrappedKey, StatusChange, StatusOutcome, VersionFilter,
};
use crate::row_mac::RowSealer;

/// A keystore failure, by what the caller can do about it (the server answers 503,
/// 409 or 500 by variant). The message says what failed and never contains key
/// material: wrapped keys are bound as parameters and never formatted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be reached or did not answer in time (connection refused,
    /// pool closed or exhausted, I/O, a lock held too long): retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// A write's precondition did not hold (a row exists, a constraint, another
    /// writer or a newer KEK changed the state first); nothing was written.
    #[error("{0}")]
    Conflict(String),
    /// A stored row is damaged or failed its integrity check, and was refused.
    #[error("{0}")]
    Corrupt(String),
    /// Any other failure of the backend.
    #[error("{0}")]
    Backend(String),
}

impl StoreError {
    /// Wraps any other backend error ([`StoreError::Backend`]).
    pub fn backend(e: impl std::fmt::Display) -> Self {
        Self::Backend(e.to_string())
    }

    /// The message, whatever the variant.
    pub fn message(&self) -> &str {
        match self {
            Self::Unavailable(m) | Self::Conflict(m) | Self::Corrupt(m) | Self::Backend(m) => m,
        }
    }
}

/// Result of creating a purpose's first version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Version 1 was inserted as active.
    Created,
    /// The purpose already had versions; nothing was written.
    AlreadyExists,
}

/// Result of a rotation attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The previous version is now `rotating` and the new one `active`.
    Rotated,
    /// The expected previous active version was no longer active, or the new version
    /// number was taken: another writer rotated first. Nothing was written.
    Conflict,
}

/// Result of an all-or-nothing write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Everything was written.
    Applied,
    /// A precondition did not hold (a row existed, a constraint would break, another
    /// writer changed the state first). Nothing was written.
    Conflict,
}

/// The key rings: key versions, their lifecycle and their usage counters.
#[async_trait]
pub trait KeyVersions: Send + Sync + 'static {
    /// Versions matching `filter`, ordered by purpose then version.
    async fn list_versions(
        &self,
        filter: &VersionFilter,
    ) -> Result<Vec<KeyVersionRecord>, StoreError>;

    /// One version.
    async fn get_version(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
    ) -> Result<Option<KeyVersionRecord>, StoreError>;

    /// The purpose's active version, if the purpose exists.
    async fn active_version(
        &self,
        purpose: &Purpose,
    ) -> Result<Option<KeyVersionRecord>, StoreError>;

    /// Inserts `first` (version 1, `active`) unless the purpose already has versions.
    async fn create_first(&self, first: &KeyVersionRecord) -> Result<CreateOutcome, StoreError>;

    /// In one transaction: version `next.version - 1` goes from `active` to `rotating`
    /// and `next` is inserted as `active`. Cost independent of the number of versions.
    async fn rotate(&self, next: &KeyVersionRecord, now: i64) -> Result<RotateOutcome, StoreError>;

    /// Changes one version's state if it is in one of `change.from` (compare-and-set).
    /// Moving to `destroyed` erases the wrapped key in the same statement; moving to
    /// `revoked` stores the reason. `to == active` is refused with an error.
    async fn set_status(&self, change: &StatusChange) -> Result<StatusOutcome, StoreError>;

    /// Inserts versions as they are (restore), in one transaction: if any of them
    /// exists already or the result would break an invariant (two active versions of
    /// a purpose), nothing is written and the outcome is `Conflict`.
    async fn insert_versions(
        &self,
        records: &[KeyVersionRecord],
    ) -> Result<WriteOutcome, StoreError>;

    /// Adds `count` to a version's encryption counter.
    async fn add_usage(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
        count: u64,
    ) -> Result<(), StoreError>;

    /// Adds `delta` to a version's encryption counter in one statement and returns the
    /// new count (`None`: no such version). A negative `delta` gives back reservations
    /// that were not used; the count never goes below zero. The service reserves
    /// encryptions this way *before* making them, so the count every instance reads
    /// already includes what others may still use (the GCM budget is never exceeded).
    async fn adjust_usage(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
        delta: i64,
    ) -> Result<Option<u64>, StoreError>;
}

/// API tokens (only their hashes are stored).
#[async_trait]
pub trait Tokens: Send + Sync + 'static {
    /// Stores a new API token (its id is unique).
    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError>;

    /// Every API token, revoked ones included, ordered by creation time.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Marks a token revoked at `now`; `false` if no unrevoked token has that id.
    async fn revoke_token(&self, id: &str, now: i64) -> Result<bool, StoreError>;
}

/// Rotation policies, one per purpose.
#[async_trait]
pub trait Policies: Send + Sync + 'static {
    /// The purpose's rotation policy, if one was set.
    async fn get_policy(&self, purpose: &Purpose) -> Result<Option<Policy>, StoreError>;

    /// Sets (inserts or replaces) the purpose's rotation policy.
    async fn set_policy(&self, purpose: &Purpose, policy: &Policy) -> Result<(), StoreError>;

    /// Every policy that was set, ordered by purpose.
    async fn list_policies(&self) -> Result<Vec<(Purpose, Policy)>, StoreError>;
}

/// What ties the keystore to its KEK: metadata (the recorded KEK id), the row sealer
/// derived from the KEK, the first sealing of rows written before row MACs, and the
/// KEK rotation's rewrap of every key.
#[async_trait]
pub trait KekBinding: Send + Sync + 'static {
    /// Reads a metadata value (e.g. the KEK id the keystore belongs to).
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Sets a metadata value if it is absent, atomically; returns the value now stored
    /// (the existing one if another writer set it first).
    async fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError>;

    /// Installs the sealer that authenticates `key_versions`, `api_tokens` and
    /// `key_policies` rows (docs: [`crate::row_mac`]); replaces an earlier one. Until a
    /// sealer is installed those rows can be neither read nor written.
    fn install_row_sealer(&self, sealer: std::sync::Arc<RowSealer>);

    /// The installed row sealer.
    fn row_sealer(&self) -> Option<std::sync::Arc<RowSealer>>;

    /// Seals the rows written before row MACs existed, once: only while the metadata
    /// [`crate::row_mac::META_ROW_MACS`] says `pending` (set by migration 0007 when
    /// it found rows), and only if no row carries a MAC yet (otherwise the marker was
    /// put back by someone without the KEK: refused with an error). Sets the marker to
    /// `sealed` in the same transaction. Returns the number of rows sealed.
    async fn seal_legacy_rows(&self) -> Result<u64, StoreError>;

    /// KEK rotation, in one transaction: the metadata value `meta_key` goes from
    /// `old_kek` to `new_kek`, and every listed version gets its new wrapped key and
    /// `kek_id = new_kek`. `Conflict` (nothing written) if the metadata did not hold
    /// `old_kek`, a listed version no longer had `old_kek`, or any version with
    /// material would be left under another KEK than `new_kek`. Every row MAC
    /// (versions, tokens, policies) is checked under the installed sealer and
    /// re-sealed under `new_rows` in the same transaction; a row that fails its check
    /// makes the whole rotation an error. The caller installs `new_rows` afterwards.
    async fn rewrap_all(
        &self,
        meta_key: &str,
        old_kek: &str,
        new_kek: &str,
        keys: &[RewrappedKey],
        new_rows: &RowSealer,
    ) -> Result<WriteOutcome, StoreError>;
}

/// What several processes on one keystore share: leases, the change generation (and
/// its push signal where the backend has one), and request-integrity nonces.
#[async_trait]
pub trait Coordination: Send + Sync + 'static {
    /// Takes or renews the lease `name` for `holder` until `now + ttl_ms`; `true` when
    /// `holder` now holds it (it was free, expired, or already `holder`'s). Several
    /// processes calling at once: exactly one wins.
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Gives the lease up if `holder` holds it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// A counter that changes (in the same transaction) with every change of a key
    /// version's existence, state or material: caches poll it to notice changes made
    /// by other processes.
    async fn generation(&self) -> Result<i64, StoreError>;

    /// Request-integrity replay protection shared by every instance: records `nonce`
    /// until `expires_at` (Unix seconds) and returns `true`, or returns `false` when it
    /// is already recorded and not expired at `now`. Expired nonces are dropped on the
    /// way. Several instances calling at once with one nonce: exactly one gets `true`.
    async fn remember_nonce(
        &self,
        nonce: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// A signal raised whenever another process may have changed a key (PostgreSQL
    /// LISTEN/NOTIFY), so caches revalidate at once instead of at their next poll.
    /// `None` for backends without push notifications; polling [`Self::generation`]
    /// covers them.
    fn change_notifier(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }
}

/// Key ids imported from the legacy system (issue 17).
#[async_trait]
pub trait LegacyKeys: Send + Sync + 'static {
    /// The legacy key ids imported so far (issue 17), ordered by purpose, version, id.
    async fn legacy_keys(&self) -> Result<Vec<LegacyKeyRecord>, StoreError>;

    /// A legacy import, in one transaction: `versions` are inserted as they are (as
    /// [`KeyVersions::insert_versions`]; at most one `active`, only for a purpose that has
    /// none) and `keys` are added. If a version or a legacy key id exists already, or
    /// a key names a version that does not exist after the insert, nothing is written
    /// and the outcome is `Conflict`.
    async fn import_legacy(
        &self,
        versions: &[KeyVersionRecord],
        keys: &[LegacyKeyRecord],
    ) -> Result<WriteOutcome, StoreError>;
}

/// Every capability of a keystore together: what the service and the tools hold
/// (`Arc<dyn Keystore>`). Implemented for every type that implements each capability;
/// `keyflow-keystore-contract` is the test suite every implementation must pass.
pub trait Keystore:
    KeyVersions + Tokens + Policies + KekBinding + Coordination + LegacyKeys
{
}

impl<T> Keystore for T where
    T: KeyVersions + Tokens + Policies + KekBinding + Coordination + LegacyKeys + ?Sized
{
}
