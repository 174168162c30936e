//! [`LegacyKeys`] in memory.

use super::*;
use keyflow_kms::keystore::{LegacyKeys, WriteOutcome};

#[async_trait]
impl LegacyKeys for MemoryKeystore {
    async fn legacy_keys(&self) -> Result<Vec<LegacyKeyRecord>, StoreError> {
        let mut out: Vec<_> = self.with(|s| s.legacy.values().cloned().collect());
        out.sort_by(|a, b| {
            (&a.purpose, a.version, &a.legacy_key_id).cmp(&(
                &b.purpose,
                b.version,
                &b.legacy_key_id,
            ))
        });
        Ok(out)
    }

    async fn import_legacy(
        &self,
        versions: &[KeyVersionRecord],
        keys: &[LegacyKeyRecord],
    ) -> Result<WriteOutcome, StoreError> {
        self.with(|s| {
            // Checked before anything is written: new ids, each naming a version that
            // exists or is in `versions`, as the SQL backends' keys and foreign key.
            let mut ids = HashSet::new();
            for k in keys {
                let known = s.version(&k.purpose, k.version).is_some()
                    || versions
                        .iter()
                        .any(|r| r.purpose == k.purpose && r.version == k.version);
                if s.legacy.contains_key(&k.legacy_key_id)
                    || !ids.insert(&k.legacy_key_id)
                    || !known
                {
                    return Ok(WriteOutcome::Conflict);
                }
            }
            if s.insert_versions(versions)? == WriteOutcome::Conflict {
                return Ok(WriteOutcome::Conflict);
            }
            for k in keys {
                s.legacy.insert(k.legacy_key_id.clone(), k.clone());
            }
            Ok(WriteOutcome::Applied)
        })
    }
}
