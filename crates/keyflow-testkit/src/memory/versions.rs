//! [`KeyVersions`] in memory.

use super::*;
use keyflow_kms::keystore::{CreateOutcome, KeyVersions, RotateOutcome, WriteOutcome};

impl State {
    fn list_versions(&self, filter: &VersionFilter) -> Vec<KeyVersionRecord> {
        self.rings
            .iter()
            .filter(|(purpose, _)| filter.purpose.as_ref().is_none_or(|p| p == *purpose))
            .flat_map(|(_, ring)| ring.values())
            .filter(|r| filter.status.is_none_or(|s| s == r.status))
            .cloned()
            .collect()
    }

    fn active_version(&self, purpose: &Purpose) -> Option<KeyVersionRecord> {
        self.rings
            .get(purpose)?
            .values()
            .find(|r| r.status == KeyStatus::Active)
            .cloned()
    }

    fn create_first(&mut self, first: &KeyVersionRecord) -> Result<CreateOutcome, StoreError> {
        if first.version != KeyVersion::FIRST || first.status != KeyStatus::Active {
            return Err(StoreError::Backend(
                "create_first takes version 1, active".into(),
            ));
        }
        // Checked before the purpose's existence, as SQLite does.
        self.check_kek(std::slice::from_ref(first))?;
        if self.rings.contains_key(&first.purpose) {
            return Ok(CreateOutcome::AlreadyExists);
        }
        if !material_matches_status(first) {
            return Err(material_mismatch());
        }
        let ring = BTreeMap::from([(first.version, stored(first))]);
        self.rings.insert(first.purpose.clone(), ring);
        self.bump();
        Ok(CreateOutcome::Created)
    }

    fn rotate(&mut self, next: &KeyVersionRecord, now: i64) -> Result<RotateOutcome, StoreError> {
        let Some(prev) = next
            .version
            .get()
            .checked_sub(1)
            .and_then(|v| KeyVersion::new(v).ok())
        else {
            return Ok(RotateOutcome::Conflict);
        };
        // SQLite's order: the compare-and-set demotion, then the KEK check, then the
        // insert (its check constraint before its primary key).
        if self
            .version(&next.purpose, prev)
            .is_none_or(|r| r.status != KeyStatus::Active)
        {
            return Ok(RotateOutcome::Conflict);
        }
        self.check_kek(std::slice::from_ref(next))?;
        if !material_matches_status(next) {
            return Err(material_mismatch());
        }
        // `prev` was the ring's one active version, so `next` may be active.
        let Some(ring) = self.rings.get_mut(&next.purpose) else {
            return Ok(RotateOutcome::Conflict);
        };
        if ring.contains_key(&next.version) {
            return Ok(RotateOutcome::Conflict);
        }
        if let Some(demoted) = ring.get_mut(&prev) {
            demoted.status = KeyStatus::Rotating;
            demoted.status_changed_at = now;
        }
        ring.insert(next.version, stored(next));
        self.bump();
        Ok(RotateOutcome::Rotated)
    }

    fn add_usage(&mut self, purpose: &Purpose, version: KeyVersion, count: u64) {
        // A usage counter is not a key change: no generation bump.
        if let Some(r) = self
            .rings
            .get_mut(purpose)
            .and_then(|ring| ring.get_mut(&version))
        {
            r.encryptions = r.encryptions.saturating_add(count).min(MAX_COUNT);
        }
    }

    fn set_status(&mut self, change: &StatusChange) -> Result<StatusOutcome, StoreError> {
        if change.to == KeyStatus::Active {
            return Err(StoreError::Backend(
                "a version becomes active only by rotation".into(),
            ));
        }
        let Some(r) = self
            .rings
            .get_mut(&change.purpose)
            .and_then(|ring| ring.get_mut(&change.version))
        else {
            return Ok(StatusOutcome::NotFound);
        };
        if !change.from.contains(&r.status) {
            return Ok(StatusOutcome::WrongState(r.status));
        }
        let destroy = change.to == KeyStatus::Destroyed;
        // Erased material cannot come back: SQLite's check constraint refuses the update.
        if r.wrapped_key.is_none() && !destroy {
            return Err(material_mismatch());
        }
        r.status = change.to;
        r.status_changed_at = change.now;
        if destroy {
            // The reason is kept through destruction (it explains the shredding).
            r.wrapped_key = None;
        } else if change.to == KeyStatus::Revoked {
            r.revoked_reason.clone_from(&change.reason);
        } else {
            r.revoked_reason = None;
        }
        self.bump();
        Ok(StatusOutcome::Changed)
    }

    pub(super) fn insert_versions(
        &mut self,
        records: &[KeyVersionRecord],
    ) -> Result<WriteOutcome, StoreError> {
        self.check_kek(records)?;
        // Each record against the state and the records before it, as SQLite's inserts
        // one by one in a transaction: the primary key, the one-active-version index,
        // the material check.
        let mut batch: HashSet<(&Purpose, KeyVersion)> = HashSet::new();
        let mut batch_active: HashSet<&Purpose> = HashSet::new();
        for r in records {
            let new_row = self.version(&r.purpose, r.version).is_none()
                && batch.insert((&r.purpose, r.version));
            let only_active = r.status != KeyStatus::Active
                || (!self.has_active(&r.purpose) && batch_active.insert(&r.purpose));
            if !(new_row && only_active && material_matches_status(r)) {
                return Ok(WriteOutcome::Conflict);
            }
        }
        for r in records {
            self.rings
                .entry(r.purpose.clone())
                .or_default()
                .insert(r.version, stored(r));
        }
        // Bumped even for an empty batch, as in SQLite.
        self.bump();
        Ok(WriteOutcome::Applied)
    }
}

#[async_trait]
impl KeyVersions for MemoryKeystore {
    async fn list_versions(
        &self,
        filter: &VersionFilter,
    ) -> Result<Vec<KeyVersionRecord>, StoreError> {
        self.read_versions(|s| s.list_versions(filter))
    }

    async fn get_version(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
    ) -> Result<Option<KeyVersionRecord>, StoreError> {
        self.read_versions(|s| s.version(purpose, version).cloned())
    }

    async fn active_version(
        &self,
        purpose: &Purpose,
    ) -> Result<Option<KeyVersionRecord>, StoreError> {
        self.read_versions(|s| s.active_version(purpose))
    }

    async fn create_first(&self, first: &KeyVersionRecord) -> Result<CreateOutcome, StoreError> {
        self.sealed()?;
        self.with(|s| s.create_first(first))
    }

    async fn rotate(&self, next: &KeyVersionRecord, now: i64) -> Result<RotateOutcome, StoreError> {
        self.sealed()?;
        self.with(|s| s.rotate(next, now))
    }

    async fn set_status(&self, change: &StatusChange) -> Result<StatusOutcome, StoreError> {
        self.sealed()?;
        self.with(|s| s.set_status(change))
    }

    async fn insert_versions(
        &self,
        records: &[KeyVersionRecord],
    ) -> Result<WriteOutcome, StoreError> {
        self.sealed()?;
        self.with(|s| s.insert_versions(records))
    }

    async fn add_usage(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
        count: u64,
    ) -> Result<(), StoreError> {
        self.with(|s| s.add_usage(purpose, version, count));
        Ok(())
    }

    async fn adjust_usage(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
        delta: i64,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self.with(|s| {
            let r = s
                .rings
                .get_mut(purpose)
                .and_then(|ring| ring.get_mut(&version))?;
            r.encryptions = if delta >= 0 {
                r.encryptions
                    .saturating_add(delta.unsigned_abs())
                    .min(MAX_COUNT)
            } else {
                r.encryptions.saturating_sub(delta.unsigned_abs())
            };
            Some(r.encryptions)
        }))
    }
}
