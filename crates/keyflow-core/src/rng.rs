//! Randomness, passed in as a value so tests can swap it.
//!
//! Every random byte KeyFlow uses comes from the operating system's CSPRNG
//! (`getrandom(2)`). Keys, salts and ids are requested directly. Nonces — public values
//! needed on every encryption — are served from a per-thread pool of 4 KiB of
//! `getrandom` output, because one `getrandom` call costs ~360 ns here, more than the
//! whole AES-GCM seal of a small field. The pool is refilled when empty and whenever the
//! process id changes, so a forked child never reuses its parent's nonces.

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

const POOL_LEN: usize = 4096;

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
        POOL.with_borrow_mut(|p| {
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
            Ok(n)
        })
    }
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
}
