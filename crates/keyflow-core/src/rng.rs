//! Randomness, passed in as a value so tests can swap it.

use crate::{Error, Result};

/// A source of cryptographically secure random bytes.
pub trait SecureRandom: Send + Sync {
    /// Fills `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]) -> Result<()>;
}

/// The operating system's CSPRNG (`getrandom(2)` on Linux) — the only source KeyFlow
/// uses outside tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsRng;

impl SecureRandom for OsRng {
    fn fill(&self, dest: &mut [u8]) -> Result<()> {
        getrandom::fill(dest).map_err(|_| Error::Randomness)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_rng_fills() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        OsRng.fill(&mut a).unwrap();
        OsRng.fill(&mut b).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }
}
