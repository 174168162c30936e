//! The cache of unwrapped DEK versions.
//!
//! Reads are lock-free: the whole cache is an immutable snapshot behind an `ArcSwap`,
//! replaced (copy-on-write) only when a key is loaded, rotated or invalidated — rare
//! events. The encrypt/decrypt hot path therefore takes no lock and touches no
//! database once a key is cached.
//!
//! Entries expire after the TTL (default one hour) and are then re-read from the
//! keystore, which is how a state change made elsewhere (e.g. a revocation by another
//! process) is picked up at the latest. Servers do better: they poll the keystore's
//! change generation (and listen for notifications where the backend has them) and
//! drop the whole cache when it moves ([`crate::KeyRing::revalidate`]); with
//! a staleness bound set, entries also stop counting as fresh once the last successful
//! validation is older than the bound, so an instance cut off from its database stops
//! using keys it can no longer confirm.
//!
//! Loads race with invalidations: a key read from the keystore just before a
//! revocation must not be cached just after it. Every invalidation bumps an epoch, a
//! load records the epoch before reading, and its result is cached only if the epoch
//! is unchanged (it is still returned to the one caller that loaded it).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use keyflow_core::{DataKey, KeyVersion, Purpose};

use crate::absent::{Absent, Flight, Flights};
use crate::clock::Clock;
use crate::model::KeyStatus;

/// One unwrapped key version, with its subkeys ready.
#[derive(Debug)]
pub(crate) struct CachedKey {
    pub key: DataKey,
    pub status: KeyStatus,
    /// Encryptions reserved in the keystore for this process and not used yet; shared
    /// with the cache's allowance table so that a reload of the entry keeps them.
    pub allowance: Arc<Allowance>,
    /// When it was loaded, on the cache clock's monotonic reading.
    loaded_at: Duration,
}

/// Encryptions of one version this process may still make: reserved in the keystore
/// (which counts them at once, so every instance sees them) before they are used.
#[derive(Debug, Default)]
pub(crate) struct Allowance {
    /// Reserved and not used yet.
    pub remaining: AtomicU64,
    /// A refill is running (servers refill ahead, from a spawned task).
    pub refilling: std::sync::atomic::AtomicBool,
    /// The block the last background refill reserved (0: none yet, the configured
    /// block): it grows while refills come fast ([`crate::ring`]).
    pub block: AtomicU64,
    /// When the last background refill started, in ms on the monotonic clock, plus one
    /// (0: never).
    pub last_refill: AtomicU64,
}

impl Allowance {
    /// Takes `n` uses if that many remain; never goes below zero.
    pub fn try_take(&self, n: u64) -> bool {
        self.remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(n))
            .is_ok()
    }

    /// Gives back `n` uses taken but not made (a failed encryption).
    pub fn give_back(&self, n: u64) {
        self.remaining.fetch_add(n, Ordering::AcqRel);
    }
}

#[derive(Hash, PartialEq, Eq, Clone)]
struct PurposeKey(Purpose);
impl Borrow<str> for PurposeKey {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

#[derive(Default, Clone)]
struct Snapshot {
    active: HashMap<PurposeKey, Arc<CachedKey>>,
    // Inner maps behind `Arc`: a copy-on-write update clones one pointer per purpose,
    // not every cached version.
    versions: HashMap<PurposeKey, Arc<HashMap<KeyVersion, Arc<CachedKey>>>>,
}

/// Cache counters, for `/status` and metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheStats {
    /// Key versions held.
    pub entries: usize,
    /// Lookups served from the cache.
    pub hits: u64,
    /// Lookups that went to the keystore.
    pub misses: u64,
}

impl CacheStats {
    /// hits / (hits + misses), or 1.0 before any lookup.
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            1.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

pub(crate) struct KeyCache {
    snap: ArcSwap<Snapshot>,
    ttl: Duration,
    max_staleness: Option<Duration>,
    /// Entry age and staleness are measured on this clock's monotonic reading, so tests
    /// move time instead of sleeping.
    clock: Arc<dyn Clock>,
    /// The clock's monotonic reading, in milliseconds, at the last successful
    /// validation (at creation before the first).
    validated_ms: AtomicU64,
    epoch: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    allowances: Mutex<HashMap<(Purpose, KeyVersion), Arc<Allowance>>>,
    /// Versions the keystore recently said do not exist.
    absent: Absent,
    /// One keystore load per key at a time (`None`: the active version).
    flights: Flights<(Purpose, Option<KeyVersion>)>,
}

impl KeyCache {
    pub fn new(ttl: Duration, max_staleness: Option<Duration>, clock: Arc<dyn Clock>) -> Self {
        let validated_ms = AtomicU64::new(millis(clock.monotonic()));
        Self {
            snap: ArcSwap::from_pointee(Snapshot::default()),
            ttl,
            max_staleness,
            clock,
            validated_ms,
            epoch: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            allowances: Mutex::new(HashMap::new()),
            absent: Absent::default(),
            flights: Flights::default(),
        }
    }

    /// Waits until no other task loads this key (`None`: the active version), then
    /// holds it; look in the cache again once inside.
    pub async fn load_gate(
        &self,
        purpose: &Purpose,
        version: Option<KeyVersion>,
    ) -> Flight<'_, (Purpose, Option<KeyVersion>)> {
        self.flights.enter((purpose.clone(), version)).await
    }

    /// Whether the keystore said, within the negative TTL, that this version does not
    /// exist.
    pub fn known_absent(&self, purpose: &Purpose, version: KeyVersion) -> bool {
        self.absent
            .contains(purpose, version, self.clock.monotonic())
    }

    /// Records a missing version (and the purpose's highest version then, if read),
    /// unless an invalidation happened since `epoch`.
    pub fn note_absent(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
        ceiling: Option<u32>,
        epoch: u64,
    ) {
        if epoch == self.epoch() {
            self.absent
                .record(purpose, version, ceiling, self.clock.monotonic());
        }
    }

    fn fresh(&self, k: &Arc<CachedKey>) -> bool {
        let now = self.clock.monotonic();
        now.saturating_sub(k.loaded_at) < self.ttl
            && self
                .max_staleness
                .is_none_or(|bound| self.since_validated(now) < bound)
    }

    fn since_validated(&self, now: Duration) -> Duration {
        let at = Duration::from_millis(self.validated_ms.load(Ordering::Acquire));
        now.saturating_sub(at)
    }

    /// Time since the last successful validation.
    pub fn staleness(&self) -> Duration {
        self.since_validated(self.clock.monotonic())
    }

    /// Records a successful validation now.
    pub fn mark_validated(&self) {
        self.validated_ms
            .store(millis(self.clock.monotonic()), Ordering::Release);
    }

    /// The current epoch; take it before reading a key from the keystore and pass it
    /// to [`Self::insert_loaded`].
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Drops every entry (another process changed some key).
    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.snap.store(Arc::new(Snapshot::default()));
        self.absent.clear();
    }

    fn count(&self, found: Option<Arc<CachedKey>>) -> Option<Arc<CachedKey>> {
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The active version of `purpose`, if cached and fresh.
    pub fn active(&self, purpose: &str) -> Option<Arc<CachedKey>> {
        self.count(self.peek_active(purpose))
    }

    /// A given version of `purpose`, if cached and fresh.
    pub fn version(&self, purpose: &str, version: KeyVersion) -> Option<Arc<CachedKey>> {
        self.count(self.peek_version(purpose, version))
    }

    /// [`Self::version`] without counting a hit or miss (a second look after waiting
    /// for another task's load).
    pub fn peek_version(&self, purpose: &str, version: KeyVersion) -> Option<Arc<CachedKey>> {
        self.snap
            .load()
            .versions
            .get(purpose)
            .and_then(|m| m.get(&version))
            .filter(|k| self.fresh(k))
            .cloned()
    }

    /// [`Self::active`] without counting a hit or miss.
    pub fn peek_active(&self, purpose: &str) -> Option<Arc<CachedKey>> {
        self.snap
            .load()
            .active
            .get(purpose)
            .filter(|k| self.fresh(k))
            .cloned()
    }

    /// Builds an entry (sharing the version's allowance) and caches it. For state
    /// this process itself just wrote (generate, rotate).
    pub fn insert(&self, key: DataKey, status: KeyStatus) -> Arc<CachedKey> {
        // A version written here exists now, whatever a recent miss said.
        self.absent.forget(key.purpose());
        self.insert_loaded(key, status, None)
    }

    /// Builds an entry and caches it unless an invalidation happened since `epoch`
    /// (then the entry is only returned).
    pub fn insert_loaded(
        &self,
        key: DataKey,
        status: KeyStatus,
        epoch: Option<u64>,
    ) -> Arc<CachedKey> {
        let allowance = {
            let mut table = self.allowances.lock().unwrap_or_else(|p| p.into_inner());
            table
                .entry((key.purpose().clone(), key.version()))
                .or_default()
                .clone()
        };
        let entry = Arc::new(CachedKey {
            key,
            status,
            allowance,
            loaded_at: self.clock.monotonic(),
        });
        self.snap.rcu(|old| {
            if epoch.is_some_and(|e| e != self.epoch.load(Ordering::Acquire)) {
                return Arc::clone(old);
            }
            let mut s = Snapshot::clone(old);
            let p = PurposeKey(entry.key.purpose().clone());
            if entry.status == KeyStatus::Active {
                s.active.insert(p.clone(), entry.clone());
            } else if s
                .active
                .get(&p)
                .is_some_and(|a| a.key.version() == entry.key.version())
            {
                s.active.remove(&p);
            }
            Arc::make_mut(s.versions.entry(p).or_default())
                .insert(entry.key.version(), entry.clone());
            Arc::new(s)
        });
        entry
    }

    /// Drops every cached version of `purpose` (after a rotation or a state change).
    pub fn invalidate(&self, purpose: &Purpose) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.absent.forget(purpose);
        self.snap.rcu(|old| {
            let mut s = Snapshot::clone(old);
            s.active.remove(purpose.as_str());
            s.versions.remove(purpose.as_str());
            s
        });
    }

    /// Takes every unused reservation (resetting them to zero), to be handed back to
    /// the keystore.
    pub fn drain_allowances(&self) -> Vec<(Purpose, KeyVersion, u64)> {
        let table = self.allowances.lock().unwrap_or_else(|p| p.into_inner());
        table
            .iter()
            .filter_map(|((p, v), a)| {
                let n = a.remaining.swap(0, Ordering::AcqRel);
                (n > 0).then(|| (p.clone(), *v, n))
            })
            .collect()
    }

    /// Puts reservations back after a failed hand-back.
    pub fn restore_allowance(&self, purpose: &Purpose, version: KeyVersion, n: u64) {
        let table = self.allowances.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = table.get(&(purpose.clone(), version)) {
            a.give_back(n);
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.snap.load().versions.values().map(|m| m.len()).sum(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, SystemClock};
    use keyflow_core::SecretKey;

    fn cache(ttl: Duration) -> KeyCache {
        KeyCache::new(ttl, None, Arc::new(SystemClock))
    }

    fn dk(p: &str, v: u32) -> DataKey {
        DataKey::derive(
            Purpose::new(p).unwrap(),
            KeyVersion::new(v).unwrap(),
            &SecretKey::from_slice(&[1; 32]).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn hit_miss_ttl_and_invalidate() {
        let c = cache(Duration::from_secs(3600));
        assert!(c.active("userData").is_none());
        c.insert(dk("userData", 1), KeyStatus::Active);
        assert!(c.active("userData").is_some());
        assert!(c.version("userData", KeyVersion::FIRST).is_some());
        let s = c.stats();
        assert_eq!((s.entries, s.hits, s.misses), (1, 2, 1));
        c.invalidate(&Purpose::new("userData").unwrap());
        assert!(c.active("userData").is_none());

        let expired = cache(Duration::ZERO);
        expired.insert(dk("userData", 1), KeyStatus::Active);
        assert!(expired.active("userData").is_none());
    }

    #[test]
    fn allowances_survive_reload_and_drain_once() {
        let c = cache(Duration::from_secs(3600));
        let a = c.insert(dk("userData", 1), KeyStatus::Active);
        a.allowance.give_back(5);
        let b = c.insert(dk("userData", 1), KeyStatus::Active);
        b.allowance.give_back(2);
        assert!(b.allowance.try_take(3));
        assert!(!a.allowance.try_take(5), "never below zero");
        let drained = c.drain_allowances();
        assert_eq!(drained.len(), 1);
        assert_eq!(drained[0].2, 4);
        assert!(c.drain_allowances().is_empty());
        assert!(!a.allowance.try_take(1));
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_cached() {
        let c = cache(Duration::from_secs(3600));
        let epoch = c.epoch();
        c.invalidate(&Purpose::new("userData").unwrap()); // e.g. a revocation
        let got = c.insert_loaded(dk("userData", 1), KeyStatus::Active, Some(epoch));
        assert_eq!(
            got.key.version(),
            KeyVersion::FIRST,
            "still handed to the loader"
        );
        assert!(c.active("userData").is_none(), "but not cached");
        c.insert_loaded(dk("userData", 1), KeyStatus::Active, Some(c.epoch()));
        assert!(c.active("userData").is_some());
        c.invalidate_all();
        assert!(c.active("userData").is_none());
    }

    #[test]
    fn staleness_bound_stops_serving_unconfirmed_keys() {
        let clock = Arc::new(ManualClock::new(0));
        let c = KeyCache::new(
            Duration::from_secs(3600),
            Some(Duration::from_millis(30)),
            clock.clone(),
        );
        c.insert(dk("userData", 1), KeyStatus::Active);
        assert!(c.active("userData").is_some());
        clock.advance(Duration::from_millis(29));
        assert!(c.active("userData").is_some(), "still inside the bound");
        clock.advance(Duration::from_millis(1));
        assert!(
            c.active("userData").is_none(),
            "unconfirmed beyond the bound"
        );
        assert_eq!(c.staleness(), Duration::from_millis(30));
        c.mark_validated();
        assert!(c.active("userData").is_some(), "confirmed again");
        assert_eq!(c.staleness(), Duration::ZERO);
    }

    #[test]
    fn entries_expire_after_the_ttl_on_the_monotonic_clock() {
        let clock = Arc::new(ManualClock::new(0));
        let c = KeyCache::new(Duration::from_secs(60), None, clock.clone());
        c.insert(dk("userData", 1), KeyStatus::Active);
        // A wall-clock step does not age or rejuvenate entries.
        clock.set_wall(i64::MAX / 2);
        assert!(c.active("userData").is_some());
        clock.advance(Duration::from_secs(59));
        assert!(c.active("userData").is_some());
        clock.advance(Duration::from_secs(1));
        assert!(c.active("userData").is_none(), "expired at the TTL");
        assert!(c.version("userData", KeyVersion::FIRST).is_none());
    }

    #[test]
    fn non_active_insert_clears_stale_active() {
        let c = cache(Duration::from_secs(3600));
        c.insert(dk("userData", 1), KeyStatus::Active);
        c.insert(dk("userData", 1), KeyStatus::Rotating);
        assert!(c.active("userData").is_none());
        assert_eq!(
            c.version("userData", KeyVersion::FIRST).map(|k| k.status),
            Some(KeyStatus::Rotating)
        );
    }
}
