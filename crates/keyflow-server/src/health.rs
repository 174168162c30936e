//! `/health`'s keystore check, cached: the route is unauthenticated, so it must not cost
//! a keystore query per request. The last result is served while it is younger than
//! [`FRESH`]; an older one is still served, and one background probe (never more)
//! replaces it. Only the very first request of a process waits for a probe.
//!
//! An answer is therefore at most about [`FRESH`] plus [`PROBE_TIMEOUT`] old: a keystore
//! that stops answering turns `/health` unready within ~3 s, and the keystore sees at
//! most one health query per [`FRESH`] whatever the request rate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::state::AppState;

/// How long a keystore check is served without starting a new one.
pub const FRESH: Duration = Duration::from_secs(1);
/// How long a keystore check may take before it counts as unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The last keystore check and whether one is running.
#[derive(Debug, Default)]
pub struct HealthCache {
    last: Mutex<Option<Check>>,
    probing: AtomicBool,
}

/// One keystore check: when it finished and what it found.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// When the check finished.
    pub at: Instant,
    /// Whether the keystore answered.
    pub ok: bool,
}

impl HealthCache {
    fn last(&self) -> Option<Check> {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, ok: bool) -> Check {
        let check = Check {
            at: Instant::now(),
            ok,
        };
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(check);
        check
    }
}

/// Asks the keystore for the KEK id, within [`PROBE_TIMEOUT`].
async fn probe(state: &AppState) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, state.service.ring().kek_recorded()).await,
        Ok(Ok(true))
    )
}

/// Clears the probing flag when the background probe ends, however it ends.
struct Probing<'a>(&'a AtomicBool);

impl Drop for Probing<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The keystore check `/health` reports (see the module documentation).
pub async fn keystore_check(state: &AppState) -> Check {
    let cache = state.health();
    let Some(last) = cache.last() else {
        let ok = probe(state).await;
        return cache.set(ok);
    };
    if last.at.elapsed() >= FRESH && !cache.probing.swap(true, Ordering::AcqRel) {
        let state = state.clone();
        tokio::spawn(async move {
            let cache = state.health();
            let _probing = Probing(&cache.probing);
            let ok = probe(&state).await;
            cache.set(ok);
        });
    }
    last
}
