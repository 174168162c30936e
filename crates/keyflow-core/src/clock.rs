//! Time, passed in as a value (like the RNG) so tests move it instead of sleeping.
//!
//! Two readings, for two jobs:
//! - [`Clock::now_millis`], wall-clock Unix time: timestamps that are stored or
//!   compared with other machines (key creation, expiry, signed request times);
//! - [`Clock::monotonic`], time since a fixed origin that never goes backwards: the
//!   intervals a process measures for itself (cache TTL, staleness bound, refresh
//!   gaps, uptime), which a wall-clock step must not stretch or shrink.
//!
//! [`SystemClock`] reads the operating system; [`ManualClock`] stands still until a
//! test advances it.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time.
pub trait Clock: Send + Sync {
    /// Wall-clock now, in Unix milliseconds.
    fn now_millis(&self) -> i64;

    /// Monotonic time since this clock's origin. Only differences between two readings
    /// of the same clock mean anything.
    fn monotonic(&self) -> Duration;
}

/// The operating system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// The origin of [`SystemClock::monotonic`]: the first reading in this process.
fn process_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    fn monotonic(&self) -> Duration {
        process_origin().elapsed()
    }
}

/// A clock that moves only when told to: [`ManualClock::advance`] moves both readings
/// together; [`ManualClock::set_wall`] steps the wall clock alone (as an NTP correction
/// would), leaving the monotonic reading where it is.
#[derive(Debug)]
pub struct ManualClock {
    wall_ms: AtomicI64,
    mono_ns: AtomicU64,
}

impl ManualClock {
    /// A clock showing `wall_millis` (Unix milliseconds), monotonic reading zero.
    pub fn new(wall_millis: i64) -> Self {
        Self {
            wall_ms: AtomicI64::new(wall_millis),
            mono_ns: AtomicU64::new(0),
        }
    }

    /// A clock starting at the system's current wall time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now_millis())
    }

    /// Moves both readings forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.mono_ns.fetch_add(ns, Ordering::AcqRel);
        self.wall_ms.fetch_add(ms, Ordering::AcqRel);
    }

    /// Sets the wall clock to `wall_millis`, forwards or backwards; the monotonic
    /// reading does not move.
    pub fn set_wall(&self, wall_millis: i64) {
        self.wall_ms.store(wall_millis, Ordering::Release);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        self.wall_ms.load(Ordering::Acquire)
    }

    fn monotonic(&self) -> Duration {
        Duration::from_nanos(self.mono_ns.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_reads_the_os() {
        assert!(SystemClock.now_millis() > 1_700_000_000_000);
        let a = SystemClock.monotonic();
        let b = SystemClock.monotonic();
        assert!(b >= a, "monotonic never goes backwards");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_000);
        assert_eq!((c.now_millis(), c.monotonic()), (1_000, Duration::ZERO));
        c.advance(Duration::from_millis(1_500));
        assert_eq!(c.now_millis(), 2_500);
        assert_eq!(c.monotonic(), Duration::from_millis(1_500));
        // A wall-clock step backwards leaves measured intervals alone.
        c.set_wall(0);
        assert_eq!(c.now_millis(), 0);
        assert_eq!(c.monotonic(), Duration::from_millis(1_500));
    }
}
