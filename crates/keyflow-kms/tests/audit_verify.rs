//! The chain walk over a stored chain (`kms::audit::verify`) on the in-memory keystore:
//! paged verification up to a head read first, its incremental continuation, a broken
//! record, pruned chains, and anchors that are not (an operator checkpoint, another
//! keystore's, an edited one).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use async_trait::async_trait;
use keyflow_core::kek::Kek;
use keyflow_core::OsRng;
use keyflow_kms::audit::verify::{
    anchor_start, prune_before, verify_chain, verify_since, CheckpointProblem, VerifyError,
};
use keyflow_kms::audit::{
    AuditEvent, AuditFilter, AuditSealer, AuditStore, ChainBreak, ChainHead, Checkpoint,
    CheckpointError, EncodedEvent, JournalMark, Source, StoredAudit,
};
use keyflow_kms::StoreError;
use keyflow_testkit::MemoryKeystore;

fn sealer() -> AuditSealer {
    AuditSealer::new(&Kek::generate(&OsRng).unwrap()).unwrap()
}

/// Appends one event per time, in one batch each.
async fn append(store: &dyn AuditStore, s: &AuditSealer, times: &[i64]) -> ChainHead {
    let mut head = store.audit_head().await.unwrap();
    for t in times {
        let mut e = AuditEvent::new(*t, Source::Http, "tok1", "encrypt");
        e.purposes = vec!["userData".into()];
        head = store.append_audit(s, &[e]).await.unwrap();
    }
    head
}

/// A store that shows record `seq` with `edit` applied: tampering as a reader sees it.
struct Tampered {
    inner: MemoryKeystore,
    seq: u64,
    edit: fn(&mut StoredAudit),
}

#[async_trait]
impl AuditStore for Tampered {
    async fn append_audit(
        &self,
        sealer: &AuditSealer,
        events: &[AuditEvent],
    ) -> Result<ChainHead, StoreError> {
        self.inner.append_audit(sealer, events).await
    }
    async fn append_audit_from(
        &self,
        sealer: &AuditSealer,
        events: &[EncodedEvent],
        mark: &JournalMark,
    ) -> Result<ChainHead, StoreError> {
        self.inner.append_audit_from(sealer, events, mark).await
    }
    async fn audit_journal_mark(&self, journal: &str) -> Result<Option<u64>, StoreError> {
        self.inner.audit_journal_mark(journal).await
    }
    async fn audit_journal_forget(&self, journal: &str) -> Result<(), StoreError> {
        self.inner.audit_journal_forget(journal).await
    }
    async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        self.inner.audit_head().await
    }
    async fn audit_scan(&self, after: u64, limit: u32) -> Result<Vec<StoredAudit>, StoreError> {
        let mut page = self.inner.audit_scan(after, limit).await?;
        page.iter_mut()
            .filter(|r| r.seq == self.seq)
            .for_each(self.edit);
        Ok(page)
    }
    async fn audit_query(&self, filter: &AuditFilter) -> Result<Vec<StoredAudit>, StoreError> {
        self.inner.audit_query(filter).await
    }
    async fn audit_anchor(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.inner.audit_anchor().await
    }
    async fn audit_prune(&self, anchor: &Checkpoint) -> Result<u64, StoreError> {
        self.inner.audit_prune(anchor).await
    }
}

#[tokio::test]
async fn a_whole_chain_verifies_and_each_record_is_seen_once() {
    let store = MemoryKeystore::new();
    let s = sealer();
    let empty = verify_chain(&store, &[&s], &ChainHead::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(empty.end.seq, 0);
    // More than a page, so the walk pages.
    let times: Vec<i64> = (0..1205).collect();
    let head = append(&store, &s, &times).await;
    let mut seen = Vec::new();
    let v = verify_chain(&store, &[&s], &head, |r| seen.push(r.seq))
        .await
        .unwrap();
    assert_eq!((v.start.seq, v.end), (0, head));
    assert_eq!(seen, (1..=1205).collect::<Vec<_>>());

    // Records appended after the head was read are left for the next pass.
    let later = append(&store, &s, &[5000, 5001]).await;
    let v = verify_chain(&store, &[&s], &head, |_| {}).await.unwrap();
    assert_eq!(v.end, head);
    let mut seen = Vec::new();
    let v = verify_since(&store, &[&s], &head, &later, |r| seen.push(r.seq))
        .await
        .unwrap();
    assert_eq!((v.start, v.end, seen), (head, later, vec![1206, 1207]));
    // Nothing new: verifies as is.
    let v = verify_since(&store, &[&s], &later, &later, |_| {})
        .await
        .unwrap();
    assert_eq!(v.end, later);
}

#[tokio::test]
async fn a_broken_record_is_named_and_keys_not_given_are_named() {
    let inner = MemoryKeystore::new();
    let s = sealer();
    let head = append(&inner, &s, &[1, 2, 3, 4, 5]).await;
    let store = Tampered {
        inner,
        seq: 4,
        edit: |r| r.body = r.body.replace("tok1", "tok2"),
    };
    let err = verify_chain(&store, &[&s], &head, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::Break(ChainBreak::Mac { seq: 4 })),
        "{err}"
    );
    let through3 = ChainHead {
        seq: 3,
        mac: store.inner.audit_scan(2, 1).await.unwrap()[0].mac,
    };
    // Incrementally too, from before the bad record.
    let err = verify_since(&store, &[&s], &through3, &head, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::Break(ChainBreak::Mac { seq: 4 })),
        "{err}"
    );
    // A head verified earlier whose record is not the one there now.
    let forged = ChainHead {
        seq: 3,
        mac: [9; 32],
    };
    let err = verify_since(&store, &[&s], &forged, &head, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::Break(ChainBreak::Mac { seq: 3 })),
        "{err}"
    );
    // A head gone below what was verified: the tail was cut.
    let err = verify_since(&store, &[&s], &head, &through3, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Break(ChainBreak::Head {
                head_seq: 3,
                last_seq: 5
            })
        ),
        "{err}"
    );
    let other = sealer();
    let err = verify_chain(&store.inner, &[&other], &head, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Break(ChainBreak::UnknownKek { seq: 1, .. })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn pruning_keeps_the_leading_run_and_the_chain_verifies_after_the_anchor() {
    let store = MemoryKeystore::new();
    let (old, current) = (sealer(), sealer());
    // Record 4 is old but comes after a newer one: it is kept.
    append(&store, &old, &[10, 20]).await;
    let head = append(&store, &current, &[30, 500, 40, 600]).await;
    let both = [&current, &old];

    let cut = 100;
    let dry = prune_before(&store, &current, &both, cut, 1_000, true)
        .await
        .unwrap();
    assert_eq!(
        (dry.start, dry.anchor.map(|a| a.seq), dry.removed),
        (0, Some(3), 3)
    );
    assert_eq!(store.audit_anchor().await.unwrap(), None);
    // Without the retired KEK's key nothing is pruned.
    let err = prune_before(&store, &current, &[&current], cut, 1_000, false)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Break(ChainBreak::UnknownKek { seq: 1, .. })
        ),
        "{err}"
    );

    let done = prune_before(&store, &current, &both, cut, 1_000, false)
        .await
        .unwrap();
    assert_eq!((done.anchor.map(|a| a.seq), done.removed), (Some(3), 3));
    let v = verify_chain(&store, &[&current], &head, |_| {})
        .await
        .unwrap();
    assert_eq!((v.start.seq, v.end), (3, head));
    // A pass that had verified through record 2 continues from the anchor.
    let v = verify_since(
        &store,
        &[&current],
        &ChainHead {
            seq: 2,
            mac: [0; 32],
        },
        &head,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((v.start.seq, v.end), (3, head));
    // Nothing left older than the cut: nothing to do.
    let again = prune_before(&store, &current, &both, cut, 2_000, false)
        .await
        .unwrap();
    assert_eq!((again.start, again.anchor, again.removed), (3, None, 0));
}

#[tokio::test]
async fn an_anchor_that_is_not_one_is_refused() {
    let s = sealer();
    // An operator checkpoint stored as the anchor (by hand, with its record deleted).
    let store = MemoryKeystore::new();
    let head = append(&store, &s, &[1, 2, 3]).await;
    let at2 = ChainHead {
        seq: 2,
        mac: store.audit_scan(1, 1).await.unwrap()[0].mac,
    };
    store
        .audit_prune(&Checkpoint::sign(&s, &at2, 5))
        .await
        .unwrap();
    let err = verify_chain(&store, &[&s], &head, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Anchor {
                seq: 2,
                problem: CheckpointProblem::NotAnAnchor
            }
        ),
        "{err}"
    );
    let err = verify_since(&store, &[&s], &head, &head, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, VerifyError::Anchor { seq: 2, .. }), "{err}");
    let err = prune_before(&store, &s, &[&s], 100, 100, true)
        .await
        .unwrap_err();
    assert!(matches!(err, VerifyError::Anchor { seq: 2, .. }), "{err}");

    // Another keystore's anchor, and an edited one.
    let store = MemoryKeystore::new();
    let head = append(&store, &s, &[1, 2, 3]).await;
    let foreign = sealer();
    // Same sealer, same events: the same record 2.
    assert_eq!(store.audit_scan(1, 1).await.unwrap()[0].mac, at2.mac);
    store
        .audit_prune(&Checkpoint::sign_anchor(&foreign, &at2, 5))
        .await
        .unwrap();
    let err = verify_chain(&store, &[&s], &head, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            VerifyError::Anchor {
                seq: 2,
                problem: CheckpointProblem::UnknownKek(id)
            } if id == foreign.kek_id()
        ),
        "{err}"
    );
    let mut edited = Checkpoint::sign_anchor(&s, &at2, 5);
    edited.time += 1;
    assert!(matches!(
        anchor_start(Some(&edited), &[&s]),
        Err(VerifyError::Anchor {
            problem: CheckpointProblem::BadTag(CheckpointError::BadTag(_)),
            ..
        })
    ));
    let good = Checkpoint::sign_anchor(&s, &at2, 5);
    assert_eq!(anchor_start(Some(&good), &[&s]).unwrap(), at2);
    assert_eq!(anchor_start(None, &[&s]).unwrap(), ChainHead::default());
}
