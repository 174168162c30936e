//! Pruning: refusals write nothing, the rest stays verifiable, appends during a prune.

use std::sync::Arc;

use keyflow_kms::audit::{
    AuditEvent, AuditFilter, AuditSealer, AuditStore, ChainBreak, ChainHead, Checkpoint,
    StoredAudit,
};
use keyflow_kms::keyflow_core::to_hex;

use super::{event, head_of, scan_all, seal_after, verify, verify_from_anchor};

/// The anchor of record `r`, signed by `sealer`.
fn anchor_at(sealer: &AuditSealer, r: &StoredAudit) -> Checkpoint {
    Checkpoint::sign_anchor(
        sealer,
        &ChainHead {
            seq: r.seq,
            mac: r.mac,
        },
        1_800_000_000_000,
    )
}

/// What a store holds of the chain: the anchor, the head and every record.
async fn snapshot(store: &dyn AuditStore) -> (Option<Checkpoint>, ChainHead, Vec<StoredAudit>) {
    (
        store.audit_anchor().await.unwrap(),
        store.audit_head().await.unwrap(),
        scan_all(store, 100).await,
    )
}

/// Every anchor a store must refuse, on an empty chain and on one of ten records, each
/// refusal leaving the anchor, the head and the records as they were.
pub async fn prune_refusals_write_nothing(store: Arc<dyn AuditStore>, sealer: &AuditSealer) {
    assert_eq!(
        store.audit_anchor().await.unwrap(),
        None,
        "audit: a fresh chain has no anchor"
    );
    let phantom = StoredAudit {
        mac: [1; 32],
        ..seal_after(sealer, ChainHead::default(), &[event(1)]).remove(0)
    };
    assert!(
        store
            .audit_prune(&anchor_at(sealer, &phantom))
            .await
            .is_err(),
        "audit prune: nothing to prune in an empty chain"
    );
    assert_eq!(
        snapshot(&*store).await,
        (None, ChainHead::default(), vec![])
    );

    let events: Vec<AuditEvent> = (1..=10).map(event).collect();
    let head = store.append_audit(sealer, &events).await.unwrap();
    let records = seal_after(sealer, ChainHead::default(), &events);
    let before = snapshot(&*store).await;
    assert_eq!(before, (None, head, records.clone()));

    let mut beyond = records[9].clone();
    beyond.seq = 11;
    let mut zero = records[0].clone();
    zero.seq = 0;
    let mut other_mac = records[3].clone();
    other_mac.mac = records[4].mac;
    let mut bad_hex = anchor_at(sealer, &records[3]);
    bad_hex.mac = "not hex".into();
    let mut bad_tag = anchor_at(sealer, &records[3]);
    bad_tag.tag = to_hex(&[0; 31]);
    let refused = [
        ("above the head", anchor_at(sealer, &beyond)),
        ("at record 0", anchor_at(sealer, &zero)),
        ("with another record's MAC", anchor_at(sealer, &other_mac)),
        ("with a malformed MAC", bad_hex),
        ("with a malformed tag", bad_tag),
    ];
    for (what, anchor) in &refused {
        assert!(
            store.audit_prune(anchor).await.is_err(),
            "audit prune: refused {what}"
        );
        assert_eq!(
            snapshot(&*store).await,
            before,
            "audit prune: a refusal {what} writes nothing"
        );
    }

    let anchor = anchor_at(sealer, &records[5]);
    assert_eq!(store.audit_prune(&anchor).await.unwrap(), 6);
    let after = snapshot(&*store).await;
    for (what, stale) in [
        ("at the anchor", anchor_at(sealer, &records[5])),
        ("below the anchor", anchor_at(sealer, &records[2])),
    ] {
        assert!(
            store.audit_prune(&stale).await.is_err(),
            "audit prune: refused {what}"
        );
        assert_eq!(
            snapshot(&*store).await,
            after,
            "audit prune: a refusal {what} writes nothing"
        );
    }
}

/// Two prunes and appends between them: each deletes exactly the records up to its
/// anchor, the anchor reads back as given (the second replacing the first), the rest
/// verifies from it while a walk from record 1 no longer can, queries see only what is
/// left, the head stays, and appends continue the sequence. A prune up to the head
/// leaves an empty chain that still verifies and continues.
pub async fn prune_keeps_the_rest_verifiable(store: Arc<dyn AuditStore>, sealer: &AuditSealer) {
    let events: Vec<AuditEvent> = (1..=10).map(event).collect();
    let head = store.append_audit(sealer, &events).await.unwrap();
    let records = seal_after(sealer, ChainHead::default(), &events);

    let first = anchor_at(sealer, &records[3]);
    assert_eq!(
        store.audit_prune(&first).await.unwrap(),
        4,
        "audit prune: the count deleted"
    );
    assert_eq!(store.audit_anchor().await.unwrap(), Some(first.clone()));
    assert_eq!(
        store.audit_head().await.unwrap(),
        head,
        "audit prune: the head stays"
    );
    assert_eq!(
        scan_all(&*store, 3).await,
        records[4..],
        "audit prune: exactly the records up to the anchor are gone"
    );
    for page in [1, 4, 100] {
        assert_eq!(
            verify_from_anchor(&*store, sealer, page).await,
            Ok(head),
            "audit prune: the rest verifies from the anchor (pages of {page})"
        );
    }
    assert_eq!(
        verify(&*store, sealer, 100).await,
        Err(ChainBreak::Sequence {
            expected: 1,
            found: 5
        }),
        "audit prune: without its anchor the rest does not verify"
    );
    let newest = store.audit_query(&AuditFilter::default()).await.unwrap();
    assert_eq!(
        newest.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (5..=10).rev().collect::<Vec<_>>(),
        "audit prune: queries see what is left"
    );
    assert!(store.audit_scan(0, 1).await.unwrap()[0].seq == 5);

    let more: Vec<AuditEvent> = (11..=13).map(event).collect();
    let head = store.append_audit(sealer, &more).await.unwrap();
    assert_eq!(head.seq, 13, "audit prune: appends continue the sequence");
    let continued = seal_after(sealer, head_of(&records), &more);
    assert_eq!(store.audit_scan(10, 10).await.unwrap(), continued);
    assert_eq!(verify_from_anchor(&*store, sealer, 2).await, Ok(head));

    let second = anchor_at(sealer, &records[9]);
    assert_eq!(store.audit_prune(&second).await.unwrap(), 6);
    assert_eq!(
        store.audit_anchor().await.unwrap(),
        Some(second.clone()),
        "audit prune: a second prune replaces the anchor"
    );
    assert_eq!(scan_all(&*store, 100).await, continued);
    assert_eq!(verify_from_anchor(&*store, sealer, 100).await, Ok(head));

    let to_head = anchor_at(sealer, &continued[2]);
    assert_eq!(store.audit_prune(&to_head).await.unwrap(), 3);
    assert!(scan_all(&*store, 100).await.is_empty());
    assert_eq!(store.audit_head().await.unwrap(), head);
    assert_eq!(
        verify_from_anchor(&*store, sealer, 100).await,
        Ok(head),
        "audit prune: a chain pruned up to its head verifies"
    );
    let last = store.append_audit(sealer, &[event(14)]).await.unwrap();
    assert_eq!(last.seq, 14);
    assert_eq!(verify_from_anchor(&*store, sealer, 100).await, Ok(last));
}

/// Prunes up to the head while four tasks append: prunes and appends never interleave,
/// so the chain left verifies from the last anchor and holds every record after it.
pub async fn prune_amid_appends(store: Arc<dyn AuditStore>, sealer: Arc<AuditSealer>) {
    const TASKS: u64 = 4;
    const EACH: u64 = 30;
    store.append_audit(&sealer, &[event(0)]).await.unwrap();
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        let sealer = sealer.clone();
        handles.push(tokio::spawn(async move {
            let events: Vec<AuditEvent> = (0..EACH).map(|i| event(task * 100 + i)).collect();
            for chunk in events.chunks(3) {
                store.append_audit(&sealer, chunk).await.unwrap();
            }
        }));
    }
    let mut pruned = 0;
    let mut last_anchor = 0;
    for _ in 0..10 {
        let head = store.audit_head().await.unwrap();
        if head.seq > last_anchor {
            let anchor = Checkpoint::sign_anchor(&sealer, &head, 1);
            pruned += store.audit_prune(&anchor).await.unwrap();
            last_anchor = head.seq;
        }
        tokio::task::yield_now().await;
    }
    for h in handles {
        h.await.unwrap();
    }
    let head = store.audit_head().await.unwrap();
    assert_eq!(head.seq, 1 + TASKS * EACH, "audit: every record appended");
    let left = u64::try_from(scan_all(&*store, 50).await.len()).unwrap();
    assert_eq!(
        pruned + left,
        head.seq,
        "audit prune: each record deleted once or kept"
    );
    assert_eq!(
        verify_from_anchor(&*store, &sealer, 50).await,
        Ok(head),
        "audit prune: prunes amid appends leave one verifiable chain"
    );
}
