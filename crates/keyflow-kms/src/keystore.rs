//! The `Keystore` trait: where wrapped key versions and their metadata persist.
//!
//! Small on purpose. Every method that changes more than one row is one transaction
//! in the backend; concurrent writers (other threads, processes or server instances)
//! are expected, and conflicts are reported as outcomes, never half-applied.

use async_trait::async_trait;
use keyflow_core::{KeyVersion, Purpose};

use crate::access::TokenRecord;
use crate::model::{
    KeyVersionRecord, Policy, RewrappedKey, StatusChange, StatusOutcome, VersionFilter,
};

/// A keystore backend failure (connection, I/O, constraint the backend could not map).
/// The message never contains key material: wrapped keys are bound as parameters and
/// never formatted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(e: impl std::fmt::Display) -> Self {
        Self(e.to_string())
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

/// Persistence of key versions. See the module docs for the transactional contract;
/// `keyflow-keystore-contract` is the test suite every implementation must pass.
#[async_trait]
pub trait Keystore: Send + Sync + 'static {
    /// Reads a metadata value (e.g. the KEK id the keystore belongs to).
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Sets a metadata value if it is absent, atomically; returns the value now stored
    /// (the existing one if another writer set it first).
    async fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError>;

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

    /// Adds `count` to a version's encryption counter.
    async fn add_usage(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
        count: u64,
    ) -> Result<(), StoreError>;

    /// Stores a new API token (its id is unique).
    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError>;

    /// Every API token, revoked ones included, ordered by creation time.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Marks a token revoked at `now`; `false` if no unrevoked token has that id.
    async fn revoke_token(&self, id: &str, now: i64) -> Result<bool, StoreError>;

    /// The purpose's rotation policy, if one was set.
    async fn get_policy(&self, purpose: &Purpose) -> Result<Option<Policy>, StoreError>;

    /// Sets (inserts or replaces) the purpose's rotation policy.
    async fn set_policy(&self, purpose: &Purpose, policy: &Policy) -> Result<(), StoreError>;

    /// Every policy that was set, ordered by purpose.
    async fn list_policies(&self) -> Result<Vec<(Purpose, Policy)>, StoreError>;

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

    /// KEK rotation, in one transaction: the metadata value `meta_key` goes from
    /// `old_kek` to `new_kek`, and every listed version gets its new wrapped key and
    /// `kek_id = new_kek`. `Conflict` (nothing written) if the metadata did not hold
    /// `old_kek`, a listed version no longer had `old_kek`, or any version with
    /// material would be left under another KEK than `new_kek`.
    async fn rewrap_all(
        &self,
        meta_key: &str,
        old_kek: &str,
        new_kek: &str,
        keys: &[RewrappedKey],
    ) -> Result<WriteOutcome, StoreError>;

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

    /// A signal raised whenever another process may have changed a key (PostgreSQL
    /// LISTEN/NOTIFY), so caches revalidate at once instead of at their next poll.
    /// `None` for backends without push notifications; polling [`Self::generation`]
    /// covers them.
    fn change_notifier(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }
}
