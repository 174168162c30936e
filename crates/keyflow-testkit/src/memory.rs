//! [`MemoryKeystore`]: the [`Keystore`] trait over plain maps behind one mutex, for unit
//! tests that want a fresh, empty keystore in microseconds and no files.
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
//!   prunes refused for the same reasons (`keyflow_kms::rows::audit::check_prune`).
//!
//! One mutex around the whole state makes every method one transaction. Each write
//! checks everything first and changes the state last, so a refused call leaves no trace.
//!
//! Not for production: nothing persists, and erased material is dropped, not zeroized.
//!
//! ```
//! use keyflow_kms::Keystore;
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
    AuditEvent, AuditFilter, AuditSealer, AuditStore, ChainHead, Checkpoint, JournalMark,
    StoredAudit, MAX_PAGE,
};
use keyflow_kms::kek_provider::META_KEK_ID;
use keyflow_kms::keystore::{CreateOutcome, Keystore, RotateOutcome, StoreError, WriteOutcome};
use keyflow_kms::legacy::LegacyKeyRecord;
use keyflow_kms::model::{
    KeyStatus, KeyVersionRecord, Policy, RewrappedKey, StatusChange, StatusOutcome, VersionFilter,
};
use keyflow_kms::row_mac::{RowSealer, SealerSlot};
use keyflow_kms::{KeyVersion, Purpose};
use std::sync::Arc;

/// The metadata key of the change generation, as in the SQL backends.
const GENERATION: &str = "generation";

/// The largest count the SQL backends store (a signed 64-bit column).
const MAX_COUNT: u64 = i64::MAX.unsigned_abs();

/// An in-memory [`Keystore`] with the SQLite backend's semantics. See the module docs.
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

    fn count_version_read(&self) {
        self.version_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs `f` on the state under the lock: one call, one transaction. `f` is not
    /// async, so the lock is never held across an `.await`.
    /// The SQL backends' refusal before a row sealer is installed.
    fn sealed(&self) -> Result<(), StoreError> {
        self.rows.get().map(|_| ())
    }

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
    StoreError(
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
            .map_err(|_| StoreError("corrupt generation counter".into()))
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
                Err(StoreError(format!(
                    "refused: the keystore's KEK is now {kek}; this process holds an older KEK (restart it with the current KEK file)"
                )))
            }
            _ => Ok(()),
        }
    }

    fn init_meta(&mut self, key: &str, value: &str) -> String {
        self.meta
            .entry(key.to_owned())
            .or_insert_with(|| value.to_owned())
            .clone()
    }

    fn list_versions(&self, filter: &VersionFilter) -> Vec<KeyVersionRecord> {
        self.rings
            .iter()
            .filter(|(purpose, _)| filter.purpose.as_ref().is_none_or(|p| p == *purpose))
            .flat_map(|(_, ring)| ring.values())
            .filter(|r| filter.status.is_none_or(|s| s == r.status))
            .cloned()
            .collect()
    }

    fn active_version(&self, purpose: &Purpose) -> Option<KeyVersionRecord> {
        self.rings
            .get(purpose)?
            .values()
            .find(|r| r.status == KeyStatus::Active)
            .cloned()
    }

    fn create_first(&mut self, first: &KeyVersionRecord) -> Result<CreateOutcome, StoreError> {
        if first.version != KeyVersion::FIRST || first.status != KeyStatus::Active {
            return Err(StoreError("create_first takes version 1, active".into()));
        }
        // Checked before the purpose's existence, as SQLite does.
        self.check_kek(std::slice::from_ref(first))?;
        if self.rings.contains_key(&first.purpose) {
            return Ok(CreateOutcome::AlreadyExists);
        }
        if !material_matches_status(first) {
            return Err(material_mismatch());
        }
        let ring = BTreeMap::from([(first.version, stored(first))]);
        self.rings.insert(first.purpose.clone(), ring);
        self.bump();
        Ok(CreateOutcome::Created)
    }

    fn rotate(&mut self, next: &KeyVersionRecord, now: i64) -> Result<RotateOutcome, StoreError> {
        let Some(prev) = next
            .version
            .get()
            .checked_sub(1)
            .and_then(|v| KeyVersion::new(v).ok())
        else {
            return Ok(RotateOutcome::Conflict);
        };
        // SQLite's order: the compare-and-set demotion, then the KEK check, then the
        // insert (its check constraint before its primary key).
        if self
            .version(&next.purpose, prev)
            .is_none_or(|r| r.status != KeyStatus::Active)
        {
            return Ok(RotateOutcome::Conflict);
        }
        self.check_kek(std::slice::from_ref(next))?;
        if !material_matches_status(next) {
            return Err(material_mismatch());
        }
        // `prev` was the ring's one active version, so `next` may be active.
        let Some(ring) = self.rings.get_mut(&next.purpose) else {
            return Ok(RotateOutcome::Conflict);
        };
        if ring.contains_key(&next.version) {
            return Ok(RotateOutcome::Conflict);
        }
        if let Some(demoted) = ring.get_mut(&prev) {
            demoted.status = KeyStatus::Rotating;
            demoted.status_changed_at = now;
        }
        ring.insert(next.version, stored(next));
        self.bump();
        Ok(RotateOutcome::Rotated)
    }

    fn add_usage(&mut self, purpose: &Purpose, version: KeyVersion, count: u64) {
        // A usage counter is not a key change: no generation bump.
        if let Some(r) = self
            .rings
            .get_mut(purpose)
            .and_then(|ring| ring.get_mut(&version))
        {
            r.encryptions = r.encryptions.saturating_add(count).min(MAX_COUNT);
        }
    }

    fn insert_token(&mut self, token: &TokenRecord) -> Result<(), StoreError> {
        if self.tokens.contains_key(&token.id) {
            return Err(StoreError(format!(
                "refused: a token with id {} exists",
                token.id
            )));
        }
        self.tokens.insert(token.id.clone(), token.clone());
        Ok(())
    }

    fn list_tokens(&self) -> Vec<TokenRecord> {
        let mut tokens: Vec<TokenRecord> = self.tokens.values().cloned().collect();
        tokens.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        tokens
    }

    fn revoke_token(&mut self, id: &str, now: i64) -> bool {
        match self.tokens.get_mut(id) {
            Some(t) if t.revoked_at.is_none() => {
                t.revoked_at = Some(now);
                true
            }
            _ => false,
        }
    }

    fn set_policy(&mut self, purpose: &Purpose, policy: &Policy) -> Result<(), StoreError> {
        // The SQL schema's checks (`Policy::validate` is the caller's, and stricter).
        if policy.rotation_days == 0 || policy.max_encryptions == 0 {
            return Err(StoreError(
                "refused: a policy needs rotation_days and max_encryptions of 1 or more".into(),
            ));
        }
        let policy = Policy {
            max_encryptions: policy.max_encryptions.min(MAX_COUNT),
            ..*policy
        };
        self.policies.insert(purpose.clone(), policy);
        Ok(())
    }

    fn set_status(&mut self, change: &StatusChange) -> Result<StatusOutcome, StoreError> {
        if change.to == KeyStatus::Active {
            return Err(StoreError(
                "a version becomes active only by rotation".into(),
            ));
        }
        let Some(r) = self
            .rings
            .get_mut(&change.purpose)
            .and_then(|ring| ring.get_mut(&change.version))
        else {
            return Ok(StatusOutcome::NotFound);
        };
        if !change.from.contains(&r.status) {
            return Ok(StatusOutcome::WrongState(r.status));
        }
        let destroy = change.to == KeyStatus::Destroyed;
        // Erased material cannot come back: SQLite's check constraint refuses the update.
        if r.wrapped_key.is_none() && !destroy {
            return Err(material_mismatch());
        }
        r.status = change.to;
        r.status_changed_at = change.now;
        if destroy {
            // The reason is kept through destruction (it explains the shredding).
            r.wrapped_key = None;
        } else if change.to == KeyStatus::Revoked {
            r.revoked_reason.clone_from(&change.reason);
        } else {
            r.revoked_reason = None;
        }
        self.bump();
        Ok(StatusOutcome::Changed)
    }

    fn insert_versions(
        &mut self,
        records: &[KeyVersionRecord],
    ) -> Result<WriteOutcome, StoreError> {
        self.check_kek(records)?;
        // Each record against the state and the records before it, as SQLite's inserts
        // one by one in a transaction: the primary key, the one-active-version index,
        // the material check.
        let mut batch: HashSet<(&Purpose, KeyVersion)> = HashSet::new();
        let mut batch_active: HashSet<&Purpose> = HashSet::new();
        for r in records {
            let new_row = self.version(&r.purpose, r.version).is_none()
                && batch.insert((&r.purpose, r.version));
            let only_active = r.status != KeyStatus::Active
                || (!self.has_active(&r.purpose) && batch_active.insert(&r.purpose));
            if !(new_row && only_active && material_matches_status(r)) {
                return Ok(WriteOutcome::Conflict);
            }
        }
        for r in records {
            self.rings
                .entry(r.purpose.clone())
                .or_default()
                .insert(r.version, stored(r));
        }
        // Bumped even for an empty batch, as in SQLite.
        self.bump();
        Ok(WriteOutcome::Applied)
    }

    fn rewrap_all(
        &mut self,
        meta_key: &str,
        old_kek: &str,
        new_kek: &str,
        keys: &[RewrappedKey],
    ) -> WriteOutcome {
        if self.meta.get(meta_key).map(String::as_str) != Some(old_kek) {
            return WriteOutcome::Conflict;
        }
        // Rewrapped on a copy, kept only if every check passes. One key listed twice
        // conflicts, as in SQL: after its first update it is no longer under `old_kek`.
        let mut rings = self.rings.clone();
        for k in keys {
            let Some(r) = rings
                .get_mut(&k.purpose)
                .and_then(|ring| ring.get_mut(&k.version))
            else {
                return WriteOutcome::Conflict;
            };
            if r.kek_id != old_kek || r.wrapped_key.is_none() {
                return WriteOutcome::Conflict;
            }
            r.wrapped_key = Some(k.wrapped_key.clone());
            new_kek.clone_into(&mut r.kek_id);
        }
        let left_behind = rings
            .values()
            .flat_map(BTreeMap::values)
            .any(|r| r.wrapped_key.is_some() && r.kek_id != new_kek);
        if left_behind {
            return WriteOutcome::Conflict;
        }
        self.rings = rings;
        self.meta.insert(meta_key.to_owned(), new_kek.to_owned());
        self.bump();
        WriteOutcome::Applied
    }

    fn try_lease(&mut self, name: &str, holder: &str, now: i64, ttl_ms: i64) -> bool {
        let taken = Lease {
            holder: holder.to_owned(),
            expires_at: now.saturating_add(ttl_ms),
        };
        match self.leases.get_mut(name) {
            None => {
                self.leases.insert(name.to_owned(), taken);
                true
            }
            Some(lease) if lease.holder == holder || lease.expires_at <= now => {
                *lease = taken;
                true
            }
            Some(_) => false,
        }
    }

    fn release_lease(&mut self, name: &str, holder: &str) {
        if self.leases.get(name).is_some_and(|l| l.holder == holder) {
            self.leases.remove(name);
        }
    }

    /// Seals every event first and keeps them only if all sealed: all or nothing.
    fn append_audit(
        &mut self,
        sealer: &AuditSealer,
        events: &[AuditEvent],
    ) -> Result<ChainHead, StoreError> {
        let mut head = self.audit_head;
        let mut sealed = Vec::with_capacity(events.len());
        for event in events {
            // The SQL backends' sequence column is a signed 64-bit integer.
            let seq = head
                .seq
                .checked_add(1)
                .filter(|s| i64::try_from(*s).is_ok())
                .ok_or_else(|| StoreError("the audit chain is full".into()))?;
            let record = sealer
                .seal(&head.mac, seq, event)
                .map_err(|e| StoreError(format!("cannot seal an audit event: {e}")))?;
            head = ChainHead {
                seq,
                mac: record.mac,
            };
            sealed.push(record);
        }
        self.audit.extend(sealed);
        self.audit_head = head;
        Ok(head)
    }

    /// Checks first, then deletes and stores the anchor: all or nothing.
    fn audit_prune(&mut self, anchor: &Checkpoint) -> Result<u64, StoreError> {
        let stored = self
            .audit
            .iter()
            .find(|r| r.seq == anchor.seq)
            .map(|r| r.mac);
        keyflow_kms::rows::audit::check_prune(
            anchor,
            &self.audit_head,
            self.audit_anchor.as_ref().map(|a| a.seq),
            stored.as_ref(),
        )?;
        let before = self.audit.len();
        self.audit.retain(|r| r.seq > anchor.seq);
        self.audit_anchor = Some(anchor.clone());
        Ok(u64::try_from(before - self.audit.len()).unwrap_or(u64::MAX))
    }

    fn audit_scan(&self, after: u64, limit: u32) -> Vec<StoredAudit> {
        self.audit
            .iter()
            .filter(|r| r.seq > after)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    fn audit_query(&self, f: &AuditFilter) -> Vec<StoredAudit> {
        let limit = if f.limit == 0 { MAX_PAGE } else { f.limit };
        let matches = |r: &&StoredAudit| {
            f.since.is_none_or(|t| r.time >= t)
                && f.until.is_none_or(|t| r.time < t)
                && f.actor.as_ref().is_none_or(|a| *a == r.actor)
                && f.purpose.as_ref().is_none_or(|p| r.purposes.contains(p))
                && f.operation.as_ref().is_none_or(|o| *o == r.operation)
                && f.result.as_ref().is_none_or(|x| *x == r.result)
                && f.before.is_none_or(|b| r.seq < b)
        };
        self.audit
            .iter()
            .rev()
            .filter(matches)
            .take(usize::try_from(limit.min(MAX_PAGE)).unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }
}

#[async_trait]
impl Keystore for MemoryKeystore {
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.with(|s| s.meta.get(key).cloned()))
    }

    async fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError> {
        Ok(self.with(|s| s.init_meta(key, value)))
    }

    async fn list_versions(
        &self,
        filter: &VersionFilter,
    ) -> Result<Vec<KeyVersionRecord>, StoreError> {
        self.sealed()?;
        self.count_version_read();
        Ok(self.with(|s| s.list_versions(filter)))
    }

    async fn get_version(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
    ) -> Result<Option<KeyVersionRecord>, StoreError> {
        self.sealed()?;
        self.count_version_read();
        Ok(self.with(|s| s.version(purpose, version).cloned()))
    }

    async fn active_version(
        &self,
        purpose: &Purpose,
    ) -> Result<Option<KeyVersionRecord>, StoreError> {
        self.sealed()?;
        self.count_version_read();
        Ok(self.with(|s| s.active_version(purpose)))
    }

    async fn create_first(&self, first: &KeyVersionRecord) -> Result<CreateOutcome, StoreError> {
        self.sealed()?;
        self.with(|s| s.create_first(first))
    }

    async fn rotate(&self, next: &KeyVersionRecord, now: i64) -> Result<RotateOutcome, StoreError> {
        self.sealed()?;
        self.with(|s| s.rotate(next, now))
    }

    async fn add_usage(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
        count: u64,
    ) -> Result<(), StoreError> {
        self.with(|s| s.add_usage(purpose, version, count));
        Ok(())
    }

    async fn adjust_usage(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
        delta: i64,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self.with(|s| {
            let r = s
                .rings
                .get_mut(purpose)
                .and_then(|ring| ring.get_mut(&version))?;
            r.encryptions = if delta >= 0 {
                r.encryptions
                    .saturating_add(delta.unsigned_abs())
                    .min(MAX_COUNT)
            } else {
                r.encryptions.saturating_sub(delta.unsigned_abs())
            };
            Some(r.encryptions)
        }))
    }

    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.sealed()?;
        self.with(|s| s.insert_token(token))
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.sealed()?;
        self.token_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.with(|s| s.list_tokens()))
    }

    async fn revoke_token(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        self.sealed()?;
        Ok(self.with(|s| s.revoke_token(id, now)))
    }

    async fn get_policy(&self, purpose: &Purpose) -> Result<Option<Policy>, StoreError> {
        self.sealed()?;
        Ok(self.with(|s| s.policies.get(purpose).copied()))
    }

    async fn set_policy(&self, purpose: &Purpose, policy: &Policy) -> Result<(), StoreError> {
        self.sealed()?;
        self.with(|s| s.set_policy(purpose, policy))
    }

    async fn list_policies(&self) -> Result<Vec<(Purpose, Policy)>, StoreError> {
        self.sealed()?;
        Ok(self.with(|s| {
            s.policies
                .iter()
                .map(|(purpose, policy)| (purpose.clone(), *policy))
                .collect()
        }))
    }

    async fn set_status(&self, change: &StatusChange) -> Result<StatusOutcome, StoreError> {
        self.sealed()?;
        self.with(|s| s.set_status(change))
    }

    async fn insert_versions(
        &self,
        records: &[KeyVersionRecord],
    ) -> Result<WriteOutcome, StoreError> {
        self.sealed()?;
        self.with(|s| s.insert_versions(records))
    }

    async fn rewrap_all(
        &self,
        meta_key: &str,
        old_kek: &str,
        new_kek: &str,
        keys: &[RewrappedKey],
        _new_rows: &RowSealer,
    ) -> Result<WriteOutcome, StoreError> {
        self.sealed()?;
        Ok(self.with(|s| s.rewrap_all(meta_key, old_kek, new_kek, keys)))
    }

    async fn remember_nonce(
        &self,
        nonce: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        Ok(self.with(|s| {
            s.nonces.retain(|_, exp| *exp >= now);
            if s.nonces.contains_key(nonce) {
                return false;
            }
            s.nonces.insert(nonce.to_owned(), expires_at);
            true
        }))
    }

    fn install_row_sealer(&self, sealer: Arc<RowSealer>) {
        self.rows.install(sealer);
    }

    fn row_sealer(&self) -> Option<Arc<RowSealer>> {
        self.rows.current()
    }

    async fn seal_legacy_rows(&self) -> Result<u64, StoreError> {
        // Rows of a memory keystore never predate row MACs.
        self.sealed()?;
        Ok(0)
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        Ok(self.with(|s| s.try_lease(name, holder, now, ttl_ms)))
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.with(|s| s.release_lease(name, holder));
        Ok(())
    }

    async fn generation(&self) -> Result<i64, StoreError> {
        self.with(|s| s.generation())
    }

    async fn legacy_keys(&self) -> Result<Vec<LegacyKeyRecord>, StoreError> {
        let mut out: Vec<_> = self.with(|s| s.legacy.values().cloned().collect());
        out.sort_by(|a, b| {
            (&a.purpose, a.version, &a.legacy_key_id).cmp(&(
                &b.purpose,
                b.version,
                &b.legacy_key_id,
            ))
        });
        Ok(out)
    }

    async fn import_legacy(
        &self,
        versions: &[KeyVersionRecord],
        keys: &[LegacyKeyRecord],
    ) -> Result<WriteOutcome, StoreError> {
        self.with(|s| {
            // Checked before anything is written: new ids, each naming a version that
            // exists or is in `versions`, as the SQL backends' keys and foreign key.
            let mut ids = HashSet::new();
            for k in keys {
                let known = s.version(&k.purpose, k.version).is_some()
                    || versions
                        .iter()
                        .any(|r| r.purpose == k.purpose && r.version == k.version);
                if s.legacy.contains_key(&k.legacy_key_id)
                    || !ids.insert(&k.legacy_key_id)
                    || !known
                {
                    return Ok(WriteOutcome::Conflict);
                }
            }
            if s.insert_versions(versions)? == WriteOutcome::Conflict {
                return Ok(WriteOutcome::Conflict);
            }
            for k in keys {
                s.legacy.insert(k.legacy_key_id.clone(), k.clone());
            }
            Ok(WriteOutcome::Applied)
        })
    }
}

#[async_trait]
impl AuditStore for MemoryKeystore {
    async fn append_audit(
        &self,
        sealer: &AuditSealer,
        events: &[AuditEvent],
    ) -> Result<ChainHead, StoreError> {
        self.with(|s| s.append_audit(sealer, events))
    }

    async fn append_audit_from(
        &self,
        sealer: &AuditSealer,
        events: &[AuditEvent],
        mark: &JournalMark,
    ) -> Result<ChainHead, StoreError> {
        self.with(|s| {
            let head = s.append_audit(sealer, events)?;
            if !events.is_empty() {
                s.journals.insert(mark.journal.clone(), mark.through);
            }
            Ok(head)
        })
    }

    async fn audit_journal_mark(&self, journal: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.with(|s| s.journals.get(journal).copied()))
    }

    async fn audit_journal_forget(&self, journal: &str) -> Result<(), StoreError> {
        self.with(|s| s.journals.remove(journal));
        Ok(())
    }

    async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        Ok(self.with(|s| s.audit_head))
    }

    async fn audit_scan(&self, after: u64, limit: u32) -> Result<Vec<StoredAudit>, StoreError> {
        Ok(self.with(|s| s.audit_scan(after, limit)))
    }

    async fn audit_query(&self, filter: &AuditFilter) -> Result<Vec<StoredAudit>, StoreError> {
        Ok(self.with(|s| s.audit_query(filter)))
    }

    async fn audit_anchor(&self) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self.with(|s| s.audit_anchor.clone()))
    }

    async fn audit_prune(&self, anchor: &Checkpoint) -> Result<u64, StoreError> {
        self.with(|s| s.audit_prune(anchor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
