//! [`KekBinding`] in memory: metadata, the row sealer, the KEK rewrap.

use super::*;
use keyflow_kms::keystore::{KekBinding, WriteOutcome};

impl State {
    fn init_meta(&mut self, key: &str, value: &str) -> String {
        self.meta
            .entry(key.to_owned())
            .or_insert_with(|| value.to_owned())
            .clone()
    }

    fn rewrap_all(
        &mut self,
        meta_key: &str,
        old_kek: &str,
        new_kek: &str,
        keys: &[RewrappedKey],
    ) -> WriteOutcome {
        if self.meta.get(meta_key).map(String::as_str) != Some(old_kek) {
            return WriteOutcome::Conflict;
        }
        // Rewrapped on a copy, kept only if every check passes. One key listed twice
        // conflicts, as in SQL: after its first update it is no longer under `old_kek`.
        let mut rings = self.rings.clone();
        for k in keys {
            let Some(r) = rings
                .get_mut(&k.purpose)
                .and_then(|ring| ring.get_mut(&k.version))
            else {
                return WriteOutcome::Conflict;
            };
            if r.kek_id != old_kek || r.wrapped_key.is_none() {
                return WriteOutcome::Conflict;
            }
            r.wrapped_key = Some(k.wrapped_key.clone());
            new_kek.clone_into(&mut r.kek_id);
        }
        let left_behind = rings
            .values()
            .flat_map(BTreeMap::values)
            .any(|r| r.wrapped_key.is_some() && r.kek_id != new_kek);
        if left_behind {
            return WriteOutcome::Conflict;
        }
        self.rings = rings;
        self.meta.insert(meta_key.to_owned(), new_kek.to_owned());
        self.bump();
        WriteOutcome::Applied
    }
}

#[async_trait]
impl KekBinding for MemoryKeystore {
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.with(|s| s.meta.get(key).cloned()))
    }

    async fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError> {
        Ok(self.with(|s| s.init_meta(key, value)))
    }

    fn install_row_sealer(&self, sealer: Arc<RowSealer>) {
        self.rows.install(sealer);
    }

    fn row_sealer(&self) -> Option<Arc<RowSealer>> {
        self.rows.current()
    }

    async fn seal_legacy_rows(&self) -> Result<u64, StoreError> {
        // Rows of a memory keystore never predate row MACs.
        self.sealed()?;
        Ok(0)
    }

    async fn rewrap_all(
        &self,
        meta_key: &str,
        old_kek: &str,
        new_kek: &str,
        keys: &[RewrappedKey],
        _new_rows: &RowSealer,
    ) -> Result<WriteOutcome, StoreError> {
        self.sealed()?;
        Ok(self.with(|s| s.rewrap_all(meta_key, old_kek, new_kek, keys)))
    }
}
