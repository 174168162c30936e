//! What the keystore recently said does *not* exist, and one keystore read per key at
//! a time.
//!
//! A ciphertext naming a purpose or version the keystore does not hold is a forgery (or
//! a mistake); without this module each one costs a keystore query, so one
//! `/batch/decrypt` of 1,000 forged headers made 1,000 sequential queries. A miss now
//! also records the purpose's *ceiling* (its highest version then, 0 for an unknown
//! purpose): for [`NEGATIVE_TTL`] any version above it, and any exact version found
//! missing below it, is answered "absent" without a query.
//!
//! Versions are created above the ceiling (rotation, first use), possibly by another
//! instance. Negative knowledge is therefore short-lived, dropped with every
//! invalidation (a local write, or the keystore generation moving — which is how a
//! server learns of another instance's rotation), and never recorded by a read that
//! raced with an invalidation. What remains: a ciphertext under a version created by
//! *another* instance less than [`NEGATIVE_TTL`] ago, arriving here before this
//! instance noticed the change, fails if that very version was looked up (and missed)
//! just before its creation — which a client can only do by guessing the next version
//! number. ARCHITECTURE decision 72.
//!
//! [`Flights`] collapses concurrent loads of the same key into one: the first loader
//! reads the keystore, the others wait and then find the key cached (or absent).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyflow_core::{KeyVersion, Purpose};

/// How long "does not exist" is believed.
pub(crate) const NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// Most purposes (and exact versions) remembered; past it the table starts over, so a
/// flood of random purposes cannot grow memory.
const MAX_ENTRIES: usize = 4096;

/// Negative knowledge, timed on the owning cache's monotonic clock.
#[derive(Default)]
pub(crate) struct Absent {
    inner: Mutex<Tables>,
}

#[derive(Default)]
struct Tables {
    /// Per purpose: its highest version when read (0: no version at all), and when.
    ceilings: HashMap<Purpose, (u32, Duration)>,
    /// Exact versions below their purpose's ceiling found missing, and when.
    versions: HashMap<(Purpose, KeyVersion), Duration>,
}

impl Absent {
    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `purpose`/`version` is known not to exist at `now`.
    pub fn contains(&self, purpose: &Purpose, version: KeyVersion, now: Duration) -> bool {
        let fresh = |at: Duration| now.saturating_sub(at) < NEGATIVE_TTL;
        let t = self.tables();
        if let Some(&(ceiling, at)) = t.ceilings.get(purpose) {
            if fresh(at) && version.get() > ceiling {
                return true;
            }
        }
        t.versions
            .get(&(purpose.clone(), version))
            .is_some_and(|&at| fresh(at))
    }

    /// Records that `version` of `purpose` was missing at `now`, and the purpose's
    /// highest version then (`None`: not read).
    pub fn record(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
        ceiling: Option<u32>,
        now: Duration,
    ) {
        let mut t = self.tables();
        if t.ceilings.len() >= MAX_ENTRIES || t.versions.len() >= MAX_ENTRIES {
            *t = Tables::default();
        }
        match ceiling {
            Some(c) if version.get() > c => {
                t.ceilings.insert(purpose.clone(), (c, now));
            }
            Some(c) => {
                t.ceilings.insert(purpose.clone(), (c, now));
                t.versions.insert((purpose.clone(), version), now);
            }
            None => {
                t.versions.insert((purpose.clone(), version), now);
            }
        }
    }

    /// Forgets everything about `purpose` (it changed here).
    pub fn forget(&self, purpose: &Purpose) {
        let mut t = self.tables();
        t.ceilings.remove(purpose);
        t.versions.retain(|(p, _), _| p != purpose);
    }

    /// Forgets everything (the keystore changed elsewhere).
    pub fn clear(&self) {
        *self.tables() = Tables::default();
    }
}

/// Per-key gates: at most one keystore load of a key at a time.
pub(crate) struct Flights<K> {
    gates: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for Flights<K> {
    fn default() -> Self {
        Self {
            gates: Mutex::new(HashMap::new()),
        }
    }
}

/// Held while loading one key; dropping it lets the next waiter in (and removes the
/// gate when nobody else waits).
pub(crate) struct Flight<'a, K: Hash + Eq> {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    gate: Arc<tokio::sync::Mutex<()>>,
    key: Option<K>,
    flights: &'a Flights<K>,
}

impl<K: Hash + Eq + Clone> Flights<K> {
    fn gates(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<tokio::sync::Mutex<()>>>> {
        self.gates.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no one else loads `key`, then holds it.
    pub async fn enter(&self, key: K) -> Flight<'_, K> {
        let gate = self.gates().entry(key.clone()).or_default().clone();
        let guard = gate.clone().lock_owned().await;
        Flight {
            guard: Some(guard),
            gate,
            key: Some(key),
            flights: self,
        }
    }

    /// Gates currently held or waited for (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.gates().len()
    }
}

impl<K: Hash + Eq> Drop for Flight<'_, K> {
    fn drop(&mut self) {
        self.guard.take();
        let mut gates = self.flights.gates.lock().unwrap_or_else(|p| p.into_inner());
        // Two references: the table's and ours. More: someone waits and will remove it.
        if Arc::strong_count(&self.gate) == 2 {
            if let Some(k) = self.key.take() {
                gates.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Purpose {
        Purpose::new(s).unwrap()
    }
    fn v(n: u32) -> KeyVersion {
        KeyVersion::new(n).unwrap()
    }
    const T0: Duration = Duration::from_secs(100);

    #[test]
    fn a_ceiling_covers_every_version_above_it_until_it_expires() {
        let a = Absent::default();
        a.record(&p("userData"), v(9), Some(3), T0);
        for n in [4, 9, 1000] {
            assert!(a.contains(&p("userData"), v(n), T0), "{n}");
        }
        assert!(
            !a.contains(&p("userData"), v(3), T0),
            "the ceiling itself exists"
        );
        assert!(!a.contains(&p("other"), v(9), T0), "per purpose");
        assert!(
            !a.contains(&p("userData"), v(9), T0 + NEGATIVE_TTL),
            "expired"
        );
    }

    #[test]
    fn an_unknown_purpose_has_ceiling_zero() {
        let a = Absent::default();
        a.record(&p("forged"), v(1), Some(0), T0);
        assert!(a.contains(&p("forged"), v(1), T0));
        assert!(a.contains(&p("forged"), v(77), T0));
    }

    #[test]
    fn a_gap_below_the_ceiling_is_remembered_exactly() {
        let a = Absent::default();
        a.record(&p("userData"), v(2), Some(5), T0);
        assert!(a.contains(&p("userData"), v(2), T0));
        assert!(!a.contains(&p("userData"), v(4), T0));
        assert!(a.contains(&p("userData"), v(6), T0));
    }

    #[test]
    fn forget_and_clear_drop_the_knowledge() {
        let a = Absent::default();
        a.record(&p("a"), v(2), Some(1), T0);
        a.record(&p("b"), v(2), None, T0);
        a.forget(&p("a"));
        assert!(!a.contains(&p("a"), v(2), T0));
        assert!(a.contains(&p("b"), v(2), T0));
        a.clear();
        assert!(!a.contains(&p("b"), v(2), T0));
    }

    #[test]
    fn the_tables_are_bounded() {
        let a = Absent::default();
        for i in 0..(MAX_ENTRIES * 2) {
            a.record(&p(&format!("p{i}")), v(1), Some(0), T0);
        }
        assert!(a.tables().ceilings.len() <= MAX_ENTRIES);
    }

    #[tokio::test]
    async fn flights_serialize_one_key_and_clean_up() {
        let f: Arc<Flights<u32>> = Arc::default();
        let first = f.enter(1).await;
        // Another key is not held up.
        drop(f.enter(2).await);
        let f2 = f.clone();
        let waiter = tokio::spawn(async move {
            let _g = f2.enter(1).await;
        });
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "the second loader waits for the first"
        );
        drop(first);
        waiter.await.unwrap();
        assert_eq!(f.len(), 0, "no gate left behind");
    }
}
