//! [`Coordination`] in memory: leases, the generation, nonces.

use super::*;
use keyflow_kms::keystore::Coordination;

impl State {
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
}

#[async_trait]
impl Coordination for MemoryKeystore {
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
}
