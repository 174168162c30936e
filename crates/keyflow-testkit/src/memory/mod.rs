//! [`MemoryKeystore`]: the [`Keystore`](keyflow_kms::Keystore) capabilities over plain
//! maps behind one mutex, for unit tests that want a fresh, empty keystore in
//! microseconds and no files. One file per capability (`versions.rs`, `access.rs`,
//! `kek.rs`, `coordination.rs`, `legacy.rs`, `audit.rs`).
//!
//! It follows the SQLite backend (`keyflow-store-sqlite`) decision for decision, so a
//! test that passes against it passes against SQLite too:
//!
//! - the same outcome for the same conflict, and the schema's constraints refused the
//!   same way: a `Conflict` where SQLite maps the constraint error to one
//!   (`insert_versions`), an error where it does not (`create_first`, `rotate`,
//!   `set_status`, `insert_token`, `set_policy`);
//! - the change generation kept in the metadata under `generation`, starting at `"0"`,
//!   bumped only by writes that commit;
//! - counts (usage counters, policy budgets) saturating at `i64::MAX`, the largest value
//!   the SQL backends' signed 64-bit columns hold;
//! - the audit chain ([`AuditStore`]) with the SQL backends' paging: a query's limit 0
//!   means [`MAX_PAGE`], larger limits are cut to it, a scan's limit is taken as given;
//!   prunes refused for the same reasons (`keyflow_kms::audit::check_prune`).
//!
//! One mutex around the whole state makes every method one transaction. Each write
//! checks everything first and changes the state last, so a refused call leaves no trace.
//!
//! Not for production: nothing persists, and erased material is dropped, not zeroized.
//!
//! ```
//! use keyflow_kms::{Coordination, KekBinding};
//! use keyflow_testkit::memory::MemoryKeystore;
//!
//! let store = MemoryKeystore::new();
//! let runtime = tokio::runtime::Builder::new_current_thread().build()?;
//! runtime.block_on(async {
//!     assert_eq!(store.init_meta("kek_id", "kek-1").await?, "kek-1");
//!     assert_eq!(store.generation().await?, 0);
//!     Ok::<_, keyflow_kms::StoreError>(())
//! })?;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use keyflow_kms::access::TokenRecord;
use keyflow_kms::audit::{
    AuditEvent, AuditFilter, AuditSealer, AuditStore, ChainHead, Checkpoint, EncodedEvent,
    JournalMark, StoredAudit,
};
use keyflow_kms::kek_provider::META_KEK_ID;
use keyflow_kms::keystore::StoreError;
use keyflow_kms::legacy::LegacyKeyRecord;
use keyflow_kms::model::{
    KeyStatus, KeyVersionRecord, Policy, RewrappedKey, StatusChange, StatusOutcome, VersionFilter,
};
use keyflow_kms::row_mac::{RowSealer, SealerSlot};
use keyflow_kms::{KeyVersion, Purpose};
use std::sync::Arc;

mod access;
mod audit;
mod coordination;
mod kek;
mod legacy;
mod versions;

/// The metadata key of the change generation, as in the SQL backends.
const GENERATION: &str = "generation";

/// The largest count the SQL backends store (a signed 64-bit column).
const MAX_COUNT: u64 = i64::MAX.unsigned_abs();

/// An in-memory [`Keystore`](keyflow_kms::Keystore) with the SQLite backend's semantics.
/// See the module docs.
pub struct MemoryKeystore {
    state: Mutex<State>,
    /// Row MACs: nothing outside this process can write the state, so rows are not
    /// MAC'd in memory, but as in the SQL backends nothing that needs a sealer is read
    /// or written before one is installed (same outcomes, call for call).
    rows: SealerSlot,
    /// Key-version reads served (`get_version`, `active_version`, `list_versions`):
    /// what a cache in front of the keystore is meant to save.
    version_reads: std::sync::atomic::AtomicU64,
    /// Token-table reads served (`list_tokens`).
    token_reads: std::sync::atomic::AtomicU64,
}

/// Everything the keystore holds; the mutex around it is the transaction.
struct State {
    /// Metadata, the change generation included.
    meta: BTreeMap<String, String>,
    /// Key rings, by purpose then version (the listing order). A purpose is present
    /// once it has a version; versions are never deleted.
    rings: BTreeMap<Purpose, BTreeMap<KeyVersion, KeyVersionRecord>>,
    /// API tokens by id.
    tokens: HashMap<String, TokenRecord>,
    /// Rotation policies, by purpose (the listing order).
    policies: BTreeMap<Purpose, Policy>,
    /// Leases by name.
    leases: HashMap<String, Lease>,
    /// The audit chain, in sequence order, without gaps, from record 1 or from the one
    /// after the anchor.
    audit: Vec<StoredAudit>,
    /// The audit chain's head.
    audit_head: ChainHead,
    /// Where retention cut the chain.
    audit_anchor: Option<Checkpoint>,
    /// Audit journals' marks: the last entry of each in the chain.
    journals: HashMap<String, u64>,
    /// Imported legacy key ids (issue 17), by id.
    legacy: BTreeMap<String, LegacyKeyRecord>,
    /// Request-integrity nonces and their expiry (Unix seconds).
    nonces: HashMap<String, i64>,
}

struct Lease {
    holder: String,
    expires_at: i64,
}

impl MemoryKeystore {
    /// An empty keystore (no metadata but the generation, `0`).
    pub fn new() -> Self {
        let state = State {
            meta: BTreeMap::from([(GENERATION.to_owned(), "0".to_owned())]),
            rings: BTreeMap::new(),
            tokens: HashMap::new(),
            policies: BTreeMap::new(),
            leases: HashMap::new(),
            audit: Vec::new(),
            audit_head: ChainHead::default(),
            audit_anchor: None,
            journals: HashMap::new(),
            legacy: BTreeMap::new(),
            nonces: HashMap::new(),
        };
        Self {
            state: Mutex::new(state),
            rows: SealerSlot::default(),
            version_reads: Default::default(),
            token_reads: Default::default(),
        }
    }

    /// Key-version reads served so far.
    pub fn version_reads(&self) -> u64 {
        self.version_reads
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Token-table reads served so far.
    pub fn token_reads(&self) -> u64 {
        self.token_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A key-version read: refused before a row sealer is installed (as
    /// [`MemoryKeystore::sealed`]), counted in [`MemoryKeystore::version_reads`].
    fn read_versions<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, StoreError> {
        self.sealed()?;
        self.version_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.with(f))
    }

    /// The SQL backends' refusal before a row sealer is installed.
    fn sealed(&self) -> Result<(), StoreError> {
        self.rows.get().map(|_| ())
    }

    /// Runs `f` on the state under the lock: one call, one transaction. `f` is not
    /// async, so the lock is never held across an `.await`.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic under the lock cannot have left a half-applied write (every write
        // checks first and changes the state last), so a poisoned state is sound.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }
}

impl Default for MemoryKeystore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryKeystore {
    // Counts only: the state holds wrapped keys and token hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with(|s| {
            f.debug_struct("MemoryKeystore")
                .field("purposes", &s.rings.len())
                .field(
                    "versions",
                    &s.rings.values().map(BTreeMap::len).sum::<usize>(),
                )
                .field("tokens", &s.tokens.len())
                .field("policies", &s.policies.len())
                .field("leases", &s.leases.len())
                .field("generation", &s.meta.get(GENERATION))
                .finish()
        })
    }
}

/// The schema's check that material is present exactly while a version is not destroyed.
fn material_matches_status(r: &KeyVersionRecord) -> bool {
    (r.status == KeyStatus::Destroyed) == r.wrapped_key.is_none()
}

fn material_mismatch() -> StoreError {
    StoreError::Conflict(
        "refused: a version has wrapped key material exactly when it is not destroyed".into(),
    )
}

/// A record as the SQL backends store it (the usage counter saturates).
fn stored(r: &KeyVersionRecord) -> KeyVersionRecord {
    KeyVersionRecord {
        encryptions: r.encryptions.min(MAX_COUNT),
        ..r.clone()
    }
}

impl State {
    fn version(&self, purpose: &Purpose, version: KeyVersion) -> Option<&KeyVersionRecord> {
        self.rings.get(purpose)?.get(&version)
    }

    fn has_active(&self, purpose: &Purpose) -> bool {
        self.rings
            .get(purpose)
            .is_some_and(|ring| ring.values().any(|r| r.status == KeyStatus::Active))
    }

    fn generation(&self) -> Result<i64, StoreError> {
        self.meta
            .get(GENERATION)
            .map_or(Ok(0), |g| g.parse())
            .map_err(|_| StoreError::Corrupt("corrupt generation counter".into()))
    }

    /// Bumps the change generation. Called last, once a write's checks passed: the SQL
    /// backends roll the bump back with a refused write.
    fn bump(&mut self) {
        if let Some(g) = self.meta.get_mut(GENERATION) {
            // As SQLite's `CAST(value AS INTEGER) + 1`: what is not a number counts as 0.
            let next = g.parse::<i64>().unwrap_or(0).saturating_add(1);
            *g = next.to_string();
        }
    }

    /// Refuses versions wrapped under another KEK than the one the keystore records: a
    /// process still running with a KEK that was rotated away must not add versions
    /// nobody can unwrap any more. An error, not a conflict, as in the SQL backends.
    fn check_kek(&self, records: &[KeyVersionRecord]) -> Result<(), StoreError> {
        match self.meta.get(META_KEK_ID) {
            Some(kek) if records.iter().any(|r| r.wrapped_key.is_some() && r.kek_id != *kek) => {
                Err(StoreError::Conflict(format!(
                    "refused: the keystore's KEK is now {kek}; this process holds an older KEK (restart it with the current KEK file)"
                )))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyflow_kms::keystore::{Coordination, KekBinding, KeyVersions, RotateOutcome};

    fn record(purpose: &str, version: u32) -> KeyVersionRecord {
        KeyVersionRecord {
            purpose: Purpose::new(purpose).unwrap(),
            version: KeyVersion::new(version).unwrap(),
            status: KeyStatus::Active,
            algorithm: "AES-256".into(),
            wrapped_key: Some(vec![0xAB; 60]),
            kek_id: "kek-1".into(),
            created_at: 1,
            status_changed_at: 1,
            encryptions: 0,
            revoked_reason: None,
        }
    }

    /// A store with a row sealer installed, as after an unlock.
    fn unlocked() -> MemoryKeystore {
        let store = MemoryKeystore::new();
        let kek = keyflow_kms::keyflow_core::kek::Kek::generate(&keyflow_kms::keyflow_core::OsRng)
            .unwrap();
        store.install_row_sealer(Arc::new(RowSealer::new(&kek).unwrap()));
        store
    }

    #[tokio::test]
    async fn debug_prints_counts_not_material() {
        let store = unlocked();
        store.create_first(&record("userData", 1)).await.unwrap();
        let shown = format!("{store:?}");
        assert_eq!(
            shown,
            r#"MemoryKeystore { purposes: 1, versions: 1, tokens: 0, policies: 0, leases: 0, generation: Some("1") }"#
        );
    }

    #[tokio::test]
    async fn a_panic_under_the_lock_does_not_break_the_store() {
        let store = unlocked();
        store.create_first(&record("userData", 1)).await.unwrap();
        let poisoned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.with(|_| panic!("a test failing under the lock"))
        }));
        assert!(poisoned.is_err() && store.state.is_poisoned());
        assert_eq!(
            store.rotate(&record("userData", 2), 5).await.unwrap(),
            RotateOutcome::Rotated
        );
        assert_eq!(store.generation().await.unwrap(), 2);
    }
}
