//! The key ring: the keystore, the KEK, the cache of unwrapped keys and the usage
//! reservations — everything that turns a purpose (and version) into a usable key.
//!
//! The data operations ([`crate::EncryptionService`]) and key administration
//! ([`crate::KeyAdmin`]) both go through it; callers reach it as
//! [`crate::EncryptionService::ring`] for the cache, usage and key access that other
//! formats (streaming files, field encryption) need.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keyflow_core::kek::Kek;
use keyflow_core::{DataKey, KeyVersion, Purpose, SecretKey, SecureRandom};

use crate::cache::{Allowance, CacheStats, CachedKey, KeyCache};
use crate::clock::Clock;
use crate::keystore::{CreateOutcome, Keystore, RotateOutcome};
use crate::model::{
    KeyStatus, KeyVersionRecord, VersionFilter, DEK_ALGORITHM, MAX_ENCRYPTIONS_PER_KEY,
};
use crate::service::{Rotation, ServiceConfig};
use crate::{KmsError, Result};

/// How many times a rotation is retried when concurrent rotations win the race.
pub(crate) const ROTATE_ATTEMPTS: usize = 16;

/// The key ring of an [`crate::EncryptionService`] (see the module documentation).
pub struct KeyRing {
    pub(crate) store: Arc<dyn Keystore>,
    pub(crate) kek: Kek,
    pub(crate) rng: Arc<dyn SecureRandom>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) cache: KeyCache,
    pub(crate) config: ServiceConfig,
    /// The keystore generation seen by the last `revalidate` (`i64::MIN`: none yet).
    seen_generation: AtomicI64,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("kek", &self.kek)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    pub(crate) fn new(
        store: Arc<dyn Keystore>,
        kek: Kek,
        rng: Arc<dyn SecureRandom>,
        clock: Arc<dyn Clock>,
        config: ServiceConfig,
    ) -> Self {
        Self {
            cache: KeyCache::new(config.cache_ttl, config.max_staleness, clock.clone()),
            store,
            kek,
            rng,
            clock,
            config,
            seen_generation: AtomicI64::new(i64::MIN),
        }
    }

    /// The clock this ring reads (for callers that schedule work around it).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The keystore itself, for what the service does not wrap: backends' own tools
    /// and tests that inspect or tamper with stored rows. Applications use the
    /// service's methods.
    pub fn keystore(&self) -> &Arc<dyn Keystore> {
        &self.store
    }

    /// Whether the keystore answers and records a KEK: the cheapest round trip that
    /// proves it is usable (health checks).
    pub async fn kek_recorded(&self) -> Result<bool> {
        Ok(self.store.get_meta("kek_id").await?.is_some())
    }

    /// The keystore's change notification, if it has one (servers revalidate on it).
    pub fn change_notifier(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.store.change_notifier()
    }

    /// Rows the keystore refused to read since start because their MAC did not verify.
    pub fn refused_rows(&self) -> u64 {
        self.store.row_sealer().map_or(0, |s| s.refused())
    }

    /// Gives this process's unused reservations back to the keystore, so its counts
    /// are exact (encryptions are counted when reserved, before they are made). Call
    /// before exit and before reading counts; servers call it periodically.
    pub async fn flush_usage(&self) -> Result<()> {
        let mut first_err = None;
        for (purpose, version, n) in self.cache.drain_allowances() {
            let back = i64::try_from(n).unwrap_or(i64::MAX);
            if let Err(e) = self.store.adjust_usage(&purpose, version, -back).await {
                self.cache.restore_allowance(&purpose, version, n);
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), |e| Err(e.into()))
    }

    /// Cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Checks the keystore's change generation and drops the whole key cache if
    /// another process changed a key since the last check; returns whether it did.
    /// Servers call this a few times per second (and on change notifications); a
    /// success also renews the cache's staleness bound.
    pub async fn revalidate(&self) -> Result<bool> {
        let generation = self.store.generation().await?;
        let before = self.seen_generation.swap(generation, Ordering::AcqRel);
        // The first check knows no earlier generation: anything cached before it may
        // predate a change, so it counts as a change too.
        let changed = before != generation;
        if changed {
            self.cache.invalidate_all();
        }
        self.cache.mark_validated();
        Ok(changed)
    }

    /// Time since the last successful [`Self::revalidate`] (or since start).
    pub fn cache_staleness(&self) -> Duration {
        self.cache.staleness()
    }

    /// The configured staleness bound.
    pub fn max_staleness(&self) -> Option<Duration> {
        self.config.max_staleness
    }

    /// Runs `f` with the purpose's active key and counts one use of it. For formats
    /// built on the DEK subkeys (streaming files, field encryption) that need the key
    /// for longer than one call: `f` derives what it needs and returns it.
    pub async fn with_active_key<R>(
        &self,
        purpose: &Purpose,
        f: impl FnOnce(&DataKey) -> R,
    ) -> Result<R> {
        let key = self.take_active(purpose, 1).await?;
        Ok(f(&key.key))
    }

    /// Runs `f` with version `version` of `purpose`, if that version may still decrypt
    /// (an unknown version is reported as [`KmsError::DecryptionFailed`]).
    pub async fn with_decrypt_key<R>(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
        f: impl FnOnce(&DataKey) -> R,
    ) -> Result<R> {
        let key = self.decrypt_key(purpose, version).await?;
        Ok(f(&key.key))
    }

    // ---- for the service and key administration ----------------------------------

    /// A fresh key version of `purpose`, wrapped under the KEK (not yet stored).
    pub(crate) fn new_version(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
    ) -> Result<(KeyVersionRecord, DataKey)> {
        let dek = SecretKey::generate(&*self.rng)?;
        let wrapped = self.kek.wrap_dek(purpose, version, &dek, &*self.rng)?;
        let key = DataKey::derive(purpose.clone(), version, &dek)?;
        let now = self.clock.now_millis();
        let record = KeyVersionRecord {
            purpose: purpose.clone(),
            version,
            status: KeyStatus::Active,
            algorithm: DEK_ALGORITHM.into(),
            wrapped_key: Some(wrapped),
            kek_id: self.kek.id().to_owned(),
            created_at: now,
            status_changed_at: now,
            encryptions: 0,
            revoked_reason: None,
        };
        Ok((record, key))
    }

    /// The data key of a stored version, unwrapped under this ring's KEK.
    pub(crate) fn unwrap_record(&self, record: &KeyVersionRecord) -> Result<DataKey> {
        let wrapped = record
            .wrapped_key
            .as_deref()
            .ok_or_else(|| KmsError::KeyNotUsable {
                purpose: record.purpose.clone(),
                version: record.version,
                status: record.status,
            })?;
        if record.kek_id != self.kek.id() {
            return Err(KmsError::KekMismatch {
                expected: record.kek_id.clone(),
                found: self.kek.id().to_owned(),
            });
        }
        // A wrapped key that fails to unwrap under the right KEK is a damaged keystore.
        let dek = self
            .kek
            .unwrap_dek(&record.purpose, record.version, wrapped)
            .map_err(|_| KmsError::Crypto)?;
        Ok(DataKey::derive(
            record.purpose.clone(),
            record.version,
            &dek,
        )?)
    }

    /// The purpose's active key (creating version 1 on first use unless strict).
    pub(crate) async fn active_key(&self, purpose: &Purpose) -> Result<Arc<CachedKey>> {
        if let Some(k) = self.cache.active(purpose.as_str()) {
            return Ok(k);
        }
        // Concurrent first uses share one keystore read and one unwrap.
        let _loading = self.cache.load_gate(purpose, None).await;
        if let Some(k) = self.cache.peek_active(purpose.as_str()) {
            return Ok(k);
        }
        let epoch = self.cache.epoch();
        let record = match self.store.active_version(purpose).await? {
            Some(r) => r,
            None if self.config.strict_mode => {
                return Err(KmsError::StrictModeNoKey(purpose.clone()))
            }
            None => {
                // First use of the purpose creates version 1; a concurrent creator may
                // win, in which case its version is read back.
                let (record, key) = self.new_version(purpose, KeyVersion::FIRST)?;
                if self.store.create_first(&record).await? == CreateOutcome::Created {
                    return Ok(self.cache.insert(key, KeyStatus::Active));
                }
                self.store
                    .active_version(purpose)
                    .await?
                    .ok_or_else(|| KmsError::UnknownPurpose(purpose.clone()))?
            }
        };
        let key = self.unwrap_record(&record)?;
        Ok(self
            .cache
            .insert_loaded(key, KeyStatus::Active, Some(epoch)))
    }

    /// Version `version` of `purpose`, if it may still decrypt.
    pub(crate) async fn decrypt_key(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
    ) -> Result<Arc<CachedKey>> {
        if let Some(k) = self.cache.version(purpose.as_str(), version) {
            return Ok(k);
        }
        // An unknown purpose or version is indistinguishable from a forged ciphertext.
        if self.cache.known_absent(purpose, version) {
            return Err(KmsError::DecryptionFailed);
        }
        let _loading = self.cache.load_gate(purpose, Some(version)).await;
        if let Some(k) = self.cache.peek_version(purpose.as_str(), version) {
            return Ok(k);
        }
        if self.cache.known_absent(purpose, version) {
            return Err(KmsError::DecryptionFailed);
        }
        let epoch = self.cache.epoch();
        let Some(record) = self.store.get_version(purpose, version).await? else {
            self.note_absent(purpose, version, epoch).await;
            return Err(KmsError::DecryptionFailed);
        };
        if !record.status.can_decrypt() {
            return Err(KmsError::KeyNotUsable {
                purpose: record.purpose,
                version: record.version,
                status: record.status,
            });
        }
        let key = self.unwrap_record(&record)?;
        Ok(self.cache.insert_loaded(key, record.status, Some(epoch)))
    }

    /// Remembers briefly that `version` of `purpose` does not exist, with the
    /// purpose's highest version, so that forged headers naming any version above it
    /// cost no further keystore reads ([`crate::absent`]).
    async fn note_absent(&self, purpose: &Purpose, version: KeyVersion, epoch: u64) {
        let filter = VersionFilter {
            purpose: Some(purpose.clone()),
            status: None,
        };
        // A failed read only loses the ceiling; the exact version is still remembered.
        let ceiling = self
            .store
            .list_versions(&filter)
            .await
            .ok()
            .map(|rows| rows.iter().map(|r| r.version.get()).max().unwrap_or(0));
        self.cache.note_absent(purpose, version, ceiling, epoch);
    }

    /// `n` uses of `purpose`'s active key, enforced where the key is chosen: taken from
    /// this process's reservation, else reserved in the keystore first (which counts
    /// them at once for every instance). A version whose budget — min(its policy's
    /// `max_encryptions`, 2^32, the AES-GCM random-nonce bound) — would be exceeded is
    /// rotated by compare-and-set (another writer's rotation serves as well) and the
    /// new version used: no key is ever used past its budget, whether a scheduler runs
    /// or not, in the server, the CLI or a library.
    pub(crate) async fn take_active(&self, purpose: &Purpose, n: u64) -> Result<Arc<CachedKey>> {
        for _ in 0..ROTATE_ATTEMPTS {
            let key = self.active_key(purpose).await?;
            if key.allowance.try_take(n) {
                self.refill_ahead(&key);
                return Ok(key);
            }
            let block = self.config.usage_flush_every.max(n).max(1);
            let (p, v) = (key.key.purpose(), key.key.version());
            let (granted, _) = reserve(&*self.store, p, v, &key.allowance, block, block).await?;
            if key.allowance.try_take(n) {
                return Ok(key);
            }
            if granted >= n {
                // Concurrent callers took this block first: reserve again.
                continue;
            }
            // More uses than a whole version may make never fit: rotating would only
            // burn versions (and the caller would be told to retry). Refuse instead.
            let budget = self
                .store
                .get_policy(purpose)
                .await?
                .unwrap_or_default()
                .max_encryptions
                .min(MAX_ENCRYPTIONS_PER_KEY);
            if n > budget {
                return Err(KmsError::Invalid(
                    "batch: more items than one key version may encrypt (the purpose's maxEncryptions)",
                ));
            }
            tracing::warn!(purpose = %p, version = %v, "key version reached its encryption budget; rotating");
            if self.rotate_if_active(purpose, v).await?.is_none() {
                // Another writer rotated first: read its version.
                self.cache.invalidate(purpose);
            }
        }
        Err(KmsError::RotationConflict(purpose.clone()))
    }

    /// Rotates `purpose` only if `expected` is still its active version. `None` when
    /// another writer rotated first — which, for the scheduler, means the work is done:
    /// racing passes yield exactly one new version.
    pub(crate) async fn rotate_if_active(
        &self,
        purpose: &Purpose,
        expected: KeyVersion,
    ) -> Result<Option<Rotation>> {
        let next = expected.next()?;
        let (record, key) = self.new_version(purpose, next)?;
        match self.store.rotate(&record, self.clock.now_millis()).await? {
            RotateOutcome::Rotated => {
                self.cache.invalidate(purpose);
                self.cache.insert(key, KeyStatus::Active);
                Ok(Some(Rotation {
                    purpose: purpose.clone(),
                    old_version: expected,
                    new_version: next,
                }))
            }
            RotateOutcome::Conflict => {
                self.cache.invalidate(purpose);
                Ok(None)
            }
        }
    }

    /// Servers: reserve the next block in the background once a quarter is left. The
    /// block grows while refills come fast ([`next_block`]), so a server encrypting a
    /// million items a second writes the keystore about once a second, not 250 times.
    fn refill_ahead(&self, key: &CachedKey) {
        let base = self.config.usage_flush_every.max(1);
        let allowance = &key.allowance;
        let current = allowance.block.load(Ordering::Acquire).max(base);
        if !self.config.background_usage_flush
            || allowance.remaining.load(Ordering::Acquire) > current / 4
            || allowance.refilling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            allowance.refilling.store(false, Ordering::Release);
            return;
        };
        let now = u64::try_from(self.clock.monotonic().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        let last = allowance.last_refill.swap(now, Ordering::AcqRel);
        let since = (last != 0).then(|| Duration::from_millis(now.saturating_sub(last)));
        let block = next_block(current, base, since);
        let store = self.store.clone();
        let allowance = allowance.clone();
        let (p, v) = (key.key.purpose().clone(), key.key.version());
        runtime.spawn(async move {
            // The block as reserved (capped by the budget) is the next one's start.
            match reserve(&*store, &p, v, &allowance, block, base).await {
                Ok((_, reserved)) => allowance.block.store(reserved, Ordering::Release),
                Err(e) => {
                    tracing::warn!(purpose = %p, version = %v, error = %e, "could not reserve encryptions ahead; the next request will");
                }
            }
            allowance.refilling.store(false, Ordering::Release);
        });
    }
}

/// The most a server reserves ahead at once, however fast it encrypts: between
/// flushes a version's stored count reads at most this much high per process, and a
/// crash spends at most this much of its budget unused.
pub const MAX_RESERVE_BLOCK: u64 = 1 << 20;
/// One reservation takes at most this share of a version's budget (never less than the
/// block asked for inline): one instance cannot hold the budget the others need, which
/// would make them rotate early.
const BUDGET_SHARE: u64 = 64;
/// Refills closer together than this double the block; further apart than
/// [`SLOW_REFILL`] halve it, down to the configured block.
const FAST_REFILL: Duration = Duration::from_secs(1);
const SLOW_REFILL: Duration = Duration::from_secs(10);

/// The block a background refill reserves after one of `current` (`base` at the
/// least), when the previous refill started `since` ago (`None`: the first).
fn next_block(current: u64, base: u64, since: Option<Duration>) -> u64 {
    let current = current.max(base);
    match since {
        Some(s) if s < FAST_REFILL => current.saturating_mul(2).min(MAX_RESERVE_BLOCK.max(base)),
        Some(s) if s > SLOW_REFILL => (current / 2).max(base),
        _ => current,
    }
}

/// Reserves `block` encryptions of `purpose`/`version` in the keystore — at most
/// 1/[`BUDGET_SHARE`] of the budget, but never less than `floor` — and adds to
/// `allowance` what its budget — min(policy, 2^32) — allows of them; the part over the
/// budget is given straight back. Returns the number granted (less than the block
/// only when the budget is reached) and the block reserved.
async fn reserve(
    store: &dyn Keystore,
    purpose: &Purpose,
    version: KeyVersion,
    allowance: &Allowance,
    block: u64,
    floor: u64,
) -> Result<(u64, u64)> {
    let budget = store
        .get_policy(purpose)
        .await?
        .unwrap_or_default()
        .max_encryptions
        .min(MAX_ENCRYPTIONS_PER_KEY);
    let block = block.min((budget / BUDGET_SHARE).max(floor));
    let delta = i64::try_from(block).map_err(|_| KmsError::Invalid("batch size"))?;
    let total =
        store
            .adjust_usage(purpose, version, delta)
            .await?
            .ok_or(KmsError::UnknownVersion {
                purpose: purpose.clone(),
                version,
            })?;
    let before = total.saturating_sub(block);
    let granted = budget.saturating_sub(before).min(block);
    if granted < block {
        let over = i64::try_from(block - granted).unwrap_or(i64::MAX);
        // Best effort: a count left too high only makes the key retire earlier.
        if let Err(e) = store.adjust_usage(purpose, version, -over).await {
            tracing::warn!(purpose = %purpose, version = %version, error = %e, "could not give back a reservation over the budget");
        }
    }
    allowance.give_back(granted);
    Ok((granted, block))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_block_doubles_while_refills_come_fast_and_halves_when_slow() {
        let fast = Some(Duration::from_millis(200));
        let slow = Some(Duration::from_secs(11));
        let between = Some(Duration::from_secs(5));
        assert_eq!(
            next_block(0, 4096, None),
            4096,
            "the first is the configured one"
        );
        assert_eq!(next_block(4096, 4096, fast), 8192);
        assert_eq!(next_block(8192, 4096, between), 8192);
        assert_eq!(next_block(8192, 4096, slow), 4096);
        assert_eq!(
            next_block(4096, 4096, slow),
            4096,
            "never below the configured"
        );
        assert_eq!(next_block(MAX_RESERVE_BLOCK, 4096, fast), MAX_RESERVE_BLOCK);
        // A configured block above the cap is kept as configured.
        assert_eq!(
            next_block(0, MAX_RESERVE_BLOCK * 2, fast),
            MAX_RESERVE_BLOCK * 2
        );
    }
}
