//! `Keystore::import_legacy` and `legacy_keys` (issue 17): one transaction that adds
//! key versions and the legacy key ids mapped to them, all or nothing.

use std::sync::Arc;

use keyflow_kms::keystore::{Keystore, WriteOutcome};
use keyflow_kms::legacy::LegacyKeyRecord;
use keyflow_kms::model::{KeyStatus, VersionFilter};

use crate::{p, rec, v};

fn legacy(id: &str, purpose: &str, version: u32) -> LegacyKeyRecord {
    LegacyKeyRecord {
        legacy_key_id: id.into(),
        purpose: p(purpose),
        version: v(version),
        legacy_status: "active".into(),
        imported_at: 7,
    }
}

async fn count(store: &dyn Keystore) -> (usize, usize) {
    (
        store
            .list_versions(&VersionFilter::default())
            .await
            .unwrap()
            .len(),
        store.legacy_keys().await.unwrap().len(),
    )
}

/// Versions and ids are written together; any conflict writes nothing.
pub async fn import_legacy(store: Arc<dyn Keystore>) {
    let mut old = rec("a", 1, 10);
    old.status = KeyStatus::Rotating;
    let new = rec("a", 2, 11);
    let g0 = store.generation().await.unwrap();
    let keys = [legacy("a-1", "a", 1), legacy("a-1-alias", "a", 1)];
    assert_eq!(
        store
            .import_legacy(&[old.clone(), new.clone()], &keys)
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    assert!(
        store.generation().await.unwrap() > g0,
        "import_legacy bumps the generation"
    );
    assert_eq!(
        store.legacy_keys().await.unwrap(),
        keys.to_vec(),
        "ids round-trip, ordered"
    );
    assert_eq!(
        store.get_version(&p("a"), v(1)).await.unwrap(),
        Some(old.clone())
    );

    // Conflicts, each leaving everything as it was.
    let mut revoked = rec("a", 3, 12);
    revoked.status = KeyStatus::Revoked;
    revoked.revoked_reason = Some("legacy".into());
    let conflicts: Vec<(Vec<_>, Vec<_>, &str)> = vec![
        (
            vec![old.clone()],
            vec![legacy("a-1-other", "a", 1)],
            "an existing version",
        ),
        (
            vec![revoked.clone()],
            vec![legacy("a-1", "a", 3)],
            "an existing legacy id",
        ),
        (
            vec![revoked.clone(), rec("a", 4, 13)],
            vec![legacy("a-3", "a", 3)],
            "a second active version",
        ),
        (
            vec![],
            vec![legacy("b-1", "b", 1)],
            "an id naming no version",
        ),
        (
            vec![revoked.clone()],
            vec![legacy("x", "a", 3), legacy("x", "a", 3)],
            "one id twice",
        ),
    ];
    for (versions, ids, what) in conflicts {
        assert_eq!(
            store.import_legacy(&versions, &ids).await.unwrap(),
            WriteOutcome::Conflict,
            "import_legacy with {what}"
        );
        assert_eq!(count(&*store).await, (2, 2), "nothing written after {what}");
    }
    // An id added for a version that exists already (another name of the same key).
    assert_eq!(
        store
            .import_legacy(&[], &[legacy("a-1-third", "a", 1)])
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(count(&*store).await, (2, 3));
}
