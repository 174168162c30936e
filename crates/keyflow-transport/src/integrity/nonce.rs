//! Where seen nonces are remembered: [`NonceStore`], with the bounded in-process table
//! [`MemoryNonceStore`] as the default. Pure: the caller passes `now`.
//!
//! A table per process lets a signed request replay once on every other instance
//! behind a load balancer; an application with several instances passes a shared
//! store (the KeyFlow server keeps them in its keystore database).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

/// The future a [`NonceStore`] returns.
pub type NonceFuture<'a> = Pin<Box<dyn Future<Output = Result<NonceOutcome, String>> + Send + 'a>>;

/// Remembers nonces of verified requests until they expire, for every instance that
/// shares it. An `Err` (the store is unreachable) refuses the request with
/// `503 integrity_unavailable`: a replay is never let through because the store failed.
pub trait NonceStore: Send + Sync + std::fmt::Debug + 'static {
    /// Records `nonce` until `expires_at` (Unix seconds) unless it is already
    /// remembered and not expired at `now`.
    fn check_and_insert<'a>(&'a self, nonce: &'a str, expires_at: u64, now: u64)
        -> NonceFuture<'a>;
}

/// The in-process table (one per layer unless shared): bounded, so a flood of valid
/// signatures cannot exhaust memory ([`NonceOutcome::Full`] past `max` live nonces).
#[derive(Debug)]
pub struct MemoryNonceStore(Mutex<NonceCache>);

impl MemoryNonceStore {
    /// A table of at most `max` live nonces.
    pub fn new(max: usize) -> Self {
        Self(Mutex::new(NonceCache::new(max)))
    }
}

impl NonceStore for MemoryNonceStore {
    fn check_and_insert<'a>(
        &'a self,
        nonce: &'a str,
        expires_at: u64,
        now: u64,
    ) -> NonceFuture<'a> {
        let outcome = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check_and_insert(nonce, expires_at, now);
        Box::pin(std::future::ready(Ok(outcome)))
    }
}

/// What happened to a nonce offered to the table.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum NonceOutcome {
    /// First use; now remembered.
    Fresh,
    /// Already used and still remembered.
    Replayed,
    /// Not seen, but the table is full of live nonces; not remembered.
    Full,
}

/// Nonces with the time (Unix seconds) after which they are forgotten.
///
/// A nonce must be remembered for as long as its signed timestamp is accepted, that
/// is until `timestamp + window`; after that a replay is refused as stale anyway.
/// Eviction pops a min-heap of expiries, so each check costs `O(log n)` and memory is
/// capped at `max` entries.
#[derive(Debug)]
pub(crate) struct NonceCache {
    expires: HashMap<Arc<str>, u64>,
    by_expiry: BinaryHeap<Reverse<(u64, Arc<str>)>>,
    max: usize,
}

impl NonceCache {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            expires: HashMap::new(),
            by_expiry: BinaryHeap::new(),
            max,
        }
    }

    /// Records `nonce` until `expires_at` unless it is already remembered.
    pub(crate) fn check_and_insert(
        &mut self,
        nonce: &str,
        expires_at: u64,
        now: u64,
    ) -> NonceOutcome {
        self.evict(now);
        if self.expires.contains_key(nonce) {
            return NonceOutcome::Replayed;
        }
        if self.expires.len() >= self.max {
            return NonceOutcome::Full;
        }
        let nonce: Arc<str> = Arc::from(nonce);
        self.expires.insert(nonce.clone(), expires_at);
        self.by_expiry.push(Reverse((expires_at, nonce)));
        NonceOutcome::Fresh
    }

    fn evict(&mut self, now: u64) {
        while let Some(Reverse((expires_at, _))) = self.by_expiry.peek() {
            if *expires_at >= now {
                break;
            }
            if let Some(Reverse((expires_at, nonce))) = self.by_expiry.pop() {
                if self.expires.get(&nonce) == Some(&expires_at) {
                    self.expires.remove(&nonce);
                }
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.expires.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_is_refused_until_expiry() {
        let mut c = NonceCache::new(10);
        assert_eq!(c.check_and_insert("a", 100, 0), NonceOutcome::Fresh);
        assert_eq!(c.check_and_insert("a", 200, 50), NonceOutcome::Replayed);
        assert_eq!(
            c.check_and_insert("a", 200, 100),
            NonceOutcome::Replayed,
            "inclusive"
        );
        assert_eq!(c.check_and_insert("a", 200, 101), NonceOutcome::Fresh);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn memory_is_bounded_and_expired_entries_make_room() {
        let mut c = NonceCache::new(3);
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            assert_eq!(c.check_and_insert(n, 10 + i as u64, 0), NonceOutcome::Fresh);
        }
        assert_eq!(c.check_and_insert("d", 50, 5), NonceOutcome::Full);
        assert_eq!(
            c.check_and_insert("a", 50, 5),
            NonceOutcome::Replayed,
            "replay wins over full"
        );
        assert_eq!(c.len(), 3);
        // "a" (expiry 10) is gone at 11; "b" (11) and "c" (12) are still live.
        assert_eq!(c.check_and_insert("d", 50, 11), NonceOutcome::Fresh);
        assert_eq!(c.len(), 3);
        assert_eq!(c.check_and_insert("e", 50, 100), NonceOutcome::Fresh);
        assert_eq!(c.len(), 1, "every older entry evicted");
    }

    #[test]
    fn expired_nonce_is_remembered_again_with_its_new_expiry() {
        let mut c = NonceCache::new(10);
        assert_eq!(c.check_and_insert("a", 10, 0), NonceOutcome::Fresh);
        assert_eq!(c.check_and_insert("a", 30, 11), NonceOutcome::Fresh);
        assert_eq!(c.check_and_insert("b", 40, 20), NonceOutcome::Fresh);
        assert_eq!(c.check_and_insert("a", 40, 25), NonceOutcome::Replayed);
    }
}
