//! Randomness, passed in as a value so tests can swap it.
//!
//! Every random byte KeyFlow uses comes from the operating system's CSPRNG
//! (`getrandom(2)`). Keys, salts and ids are requested directly. Nonces — public values
//! needed on every encryption — are served from a small per-thread pool of `getrandom`
//! output ([`POOL_NONCES`] nonces per refill), because one `getrandom` call costs
//! ~0.3–0.4 µs here (glibc 2.36: a real syscall; no vDSO `getrandom`), more than the
//! whole AES-GCM seal of a small field (docs/benchmarks.md, "nonce pool").
//!
//! A pool is state a copy of the process also copies. Against that:
//! - the pool is refilled whenever the process id changes (a forked child);
//! - it holds only [`POOL_NONCES`] nonces, so a copy the pid check cannot see (a VM
//!   snapshot restored twice, a checkpoint/restore, a clone into a new PID namespace
//!   that gets the same pid) starts with at most that many buffered nonces;
//! - each pooled nonce is XORed with the wall clock in nanoseconds at the moment it is
//!   handed out. The result is as uniformly random as the pool bytes (XOR with an
//!   independent value), and two copies drawing the same buffered bytes get different
//!   nonces unless they read the very same nanosecond.
//!
//! Linux's VM-generation reseeding (vmgenid) protects the kernel's CSPRNG after a
//! snapshot restore, not bytes already copied out of it, which is why the pool is
//! kept small and diversified rather than trusted (docs/ARCHITECTURE.md).

use std::cell::RefCell;

use crate::{Error, Result};

/// Length of an AEAD nonce.
pub const NONCE_BYTES: usize = 12;

/// A source of cryptographically secure random bytes.
pub trait SecureRandom: Send + Sync {
    /// Fills `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]) -> Result<()>;

    /// A fresh random 96-bit nonce (may be served from a pool of OS randomness).
    fn nonce(&self) -> Result<[u8; NONCE_BYTES]> {
        let mut n = [0u8; NONCE_BYTES];
        self.fill(&mut n)?;
        Ok(n)
    }
}

/// The operating system's CSPRNG (`getrandom(2)` on Linux) — the only source KeyFlow
/// uses outside tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsRng;

/// Nonces per pool refill: the most a copy of the process could start with.
pub const POOL_NONCES: usize = 16;
const POOL_LEN: usize = POOL_NONCES * NONCE_BYTES;

#[derive(Clone)]
struct NoncePool {
    bytes: [u8; POOL_LEN],
    pos: usize,
    pid: u32,
}

thread_local! {
    static POOL: RefCell<NoncePool> = const {
        RefCell::new(NoncePool { bytes: [0; POOL_LEN], pos: POOL_LEN, pid: 0 })
    };
}

impl SecureRandom for OsRng {
    fn fill(&self, dest: &mut [u8]) -> Result<()> {
        getrandom::fill(dest).map_err(|_| Error::Randomness)
    }

    fn nonce(&self) -> Result<[u8; NONCE_BYTES]> {
        let pid = std::process::id();
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        POOL.with_borrow_mut(|p| pooled_nonce(p, pid, now_ns))
    }
}

/// The next nonce of `p` (refilled first if empty or made by another process), mixed
/// with the time it is handed out at.
fn pooled_nonce(p: &mut NoncePool, pid: u32, now_ns: u128) -> Result<[u8; NONCE_BYTES]> {
    if p.pid != pid || p.pos + NONCE_BYTES > POOL_LEN {
        getrandom::fill(&mut p.bytes).map_err(|_| Error::Randomness)?;
        p.pos = 0;
        p.pid = pid;
    }
    let mut n = [0u8; NONCE_BYTES];
    let used = p
        .bytes
        .get_mut(p.pos..p.pos + NONCE_BYTES)
        .ok_or(Error::Randomness)?;
    n.copy_from_slice(used);
    // Handed out once: wipe so the same bytes can never be served again.
    used.fill(0);
    p.pos += NONCE_BYTES;
    for (b, t) in n.iter_mut().zip(now_ns.to_le_bytes()) {
        *b ^= t;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn os_rng_fills() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        OsRng.fill(&mut a).unwrap();
        OsRng.fill(&mut b).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }

    #[test]
    fn pooled_nonces_never_repeat_across_refills_and_threads() {
        let mut seen = HashSet::new();
        // Several pool refills on this thread…
        for _ in 0..2000 {
            assert!(seen.insert(OsRng.nonce().unwrap()));
        }
        // …and on other threads, each with its own pool.
        let others: Vec<[u8; 12]> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..500).map(|_| OsRng.nonce().unwrap()).collect::<Vec<_>>()))
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        for n in others {
            assert!(seen.insert(n), "nonce repeated");
        }
        assert!(!seen.contains(&[0u8; 12]));
    }

    /// The attack: a copy of the process (VM snapshot restored twice, checkpoint and
    /// restore, a clone whose pid happens to match) starts from the same pool. The pid
    /// check cannot see it; the clock mixing makes the copies' nonces differ, and the
    /// pool size bounds what even a copy reading the same nanosecond could repeat.
    #[test]
    fn a_copied_pool_does_not_repeat_nonces_at_another_instant() {
        let pid = 42;
        let mut original = NoncePool {
            bytes: [0; POOL_LEN],
            pos: POOL_LEN,
            pid: 0,
        };
        // Fill it, take one nonce, then "snapshot" the process.
        pooled_nonce(&mut original, pid, 1_000).unwrap();
        let mut copy = original.clone();
        let t = 1_800_000_000_000_000_000u128;
        let first: Vec<_> = (0..POOL_NONCES - 1)
            .map(|i| pooled_nonce(&mut original, pid, t + i as u128).unwrap())
            .collect();
        // The copy runs at other instants (even one nanosecond apart): no repeat.
        let mut other_run = copy.clone();
        let second: Vec<_> = (0..POOL_NONCES - 1)
            .map(|i| pooled_nonce(&mut other_run, pid, t + i as u128 + 1).unwrap())
            .collect();
        assert!(first.iter().all(|n| !second.contains(n)));
        // The bound: at the very same instants a copy repeats what is buffered, and
        // never more than one pool's worth: the next nonce comes from a refill.
        let same: Vec<_> = (0..POOL_NONCES - 1)
            .map(|i| pooled_nonce(&mut copy, pid, t + i as u128).unwrap())
            .collect();
        assert_eq!(same, first);
        let after_refill = pooled_nonce(&mut copy, pid, t).unwrap();
        let original_next = pooled_nonce(&mut original, pid, t).unwrap();
        assert_ne!(
            after_refill, original_next,
            "fresh OS randomness after the pool"
        );
        // And another process id always refills first.
        let mut forked = original.clone();
        let a = pooled_nonce(&mut original, pid, t).unwrap();
        let b = pooled_nonce(&mut forked, pid + 1, t).unwrap();
        assert_ne!(a, b);
    }
}
