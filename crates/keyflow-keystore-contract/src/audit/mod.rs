//! The behaviour every [`AuditStore`] must show. A backend's test calls [`run_audit`]
//! with a function that makes a fresh, empty store:
//!
//! ```ignore
//! keyflow_keystore_contract::audit::run_audit(|| async {
//!     Arc::new(open_fresh().await) as Arc<dyn AuditStore>
//! })
//! .await;
//! ```
//!
//! What every backend agrees on, beyond the trait's docs:
//! - a record reads back exactly as [`AuditSealer::seal`] made it (body and MAC byte
//!   for byte, indexed copies included), so whatever the store keeps verifies;
//! - the records of one append have consecutive sequence numbers, the head returned
//!   being the batch's last (the group-commit writer answers each caller from it);
//! - `audit_scan` returns up to `limit` records exactly as asked (0: none; no cap);
//! - `audit_query` reads newest first; its `limit` 0 means [`MAX_PAGE`] (so
//!   `AuditFilter::default()` is a full page) and larger limits are cut to it;
//!   `since` is inclusive, `until` and `before` exclusive; actor, operation, result
//!   and purpose match exactly (case-sensitive, no wildcards, a purpose only as a whole
//!   element of the record's list);
//! - `audit_prune` deletes exactly the records up to the anchor and stores the anchor
//!   as given (`audit_anchor` reads it back equal), so the rest verifies from it; the
//!   head and the sequence carry on; a refused prune writes nothing.
//!
//! [`verify`], [`verify_from_anchor`] and [`seal_after`] are shared with the backends'
//! tamper tests.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use keyflow_kms::audit::{
    AuditEvent, AuditFilter, AuditSealer, AuditStore, ChainBreak, ChainHead, ChainVerifier,
    EncodedEvent, JournalMark, Source, StoredAudit,
};
use keyflow_kms::keyflow_core::kek::Kek;
use keyflow_kms::keyflow_core::OsRng;

mod prune;
mod query;

pub use prune::{
    prune_amid_appends, prune_keeps_the_rest_verifiable, prune_refusals_write_nothing,
};
pub use query::{pages_and_cursor, query_filters};

/// Runs every audit check, each on a fresh store from `make`.
pub async fn run_audit<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn AuditStore>>,
{
    let sealer = Arc::new(sealer());
    empty_chain(make().await, &sealer).await;
    appends_chain(make().await, &sealer).await;
    journal_marks(make().await, &sealer).await;
    concurrent_appends(make().await, sealer.clone()).await;
    query_filters(make().await, &sealer).await;
    pages_and_cursor(make().await, &sealer).await;
    prune_refusals_write_nothing(make().await, &sealer).await;
    prune_keeps_the_rest_verifiable(make().await, &sealer).await;
    prune_amid_appends(make().await, sealer.clone()).await;
}

/// A sealer under a fresh KEK.
pub fn sealer() -> AuditSealer {
    AuditSealer::new(&Kek::generate(&OsRng).unwrap()).unwrap()
}

/// Verifies the whole stored chain as an auditor would: `audit_scan` pages of `page`
/// records through a [`ChainVerifier`], then the stored head. Store errors panic.
pub async fn verify(
    store: &dyn AuditStore,
    sealer: &AuditSealer,
    page: u32,
) -> Result<ChainHead, ChainBreak> {
    walk(store, ChainVerifier::new(vec![sealer]), page).await
}

/// Pushes every stored record after `verifier`'s position through it, `page` at a time,
/// then checks the stored head.
pub(super) async fn walk(
    store: &dyn AuditStore,
    mut verifier: ChainVerifier<'_>,
    page: u32,
) -> Result<ChainHead, ChainBreak> {
    assert!(page > 0, "verify: a page of 0 records reads nothing");
    loop {
        let rows = store
            .audit_scan(verifier.verified().seq, page)
            .await
            .unwrap();
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            verifier.push(r)?;
        }
    }
    verifier.finish(&store.audit_head().await.unwrap())
}

/// [`verify`] from where retention cut the chain: the stored anchor's tag is checked
/// (a bad one panics), then the records after it through a [`ChainVerifier::after`] it,
/// then the stored head.
pub async fn verify_from_anchor(
    store: &dyn AuditStore,
    sealer: &AuditSealer,
    page: u32,
) -> Result<ChainHead, ChainBreak> {
    let start = match store.audit_anchor().await.unwrap() {
        Some(anchor) => anchor.verify(sealer).unwrap(),
        None => ChainHead::default(),
    };
    walk(store, ChainVerifier::after(vec![sealer], start), page).await
}

/// `events` sealed after `head`, as a store must seal them: what it must read back.
pub fn seal_after(
    sealer: &AuditSealer,
    head: ChainHead,
    events: &[AuditEvent],
) -> Vec<StoredAudit> {
    sealer.seal_after(head, &encoded(events)).unwrap().0
}

pub(super) fn head_of(records: &[StoredAudit]) -> ChainHead {
    records
        .last()
        .map_or_else(ChainHead::default, |r| ChainHead {
            seq: r.seq,
            mac: r.mac,
        })
}

/// An ordinary event, varied by `i`: three actors, three operations, every fourth
/// one refused, a few purposes.
pub fn event(i: u64) -> AuditEvent {
    const OPERATIONS: [&str; 3] = ["encrypt", "decrypt", "keys.rotate"];
    let i_signed = i64::try_from(i).unwrap();
    let mut e = AuditEvent::new(
        1_700_000_000_000 + i_signed * 10,
        Source::Http,
        format!("tok-{}", i % 3),
        OPERATIONS[usize::try_from(i % 3).unwrap()],
    );
    e.purposes = match i % 4 {
        0 => vec![],
        1 => vec!["userData".into()],
        2 => vec!["userData".into(), "financialData".into()],
        _ => vec!["financialData".into()],
    };
    if i % 4 == 3 {
        e.result = "forbidden".into();
        e.status = Some(403);
    } else {
        e.status = Some(200);
    }
    e.route = Some("POST /api/encryption/encrypt".into());
    e.request_id = Some(format!("req-{i}"));
    e.items = Some(i);
    e
}

/// Events whose text a store could mangle: escapes, non-ASCII, separators, extremes.
pub(super) fn awkward_events() -> Vec<AuditEvent> {
    let mut a = AuditEvent::new(i64::MIN, Source::Cli, "cli:zoë", "keys.revoke");
    a.actor_name = Some("Zoë \"ops\" \\ ✓ 🙂 \u{7f}".into());
    a.client = Some("[2001:db8::1]:443".into());
    a.purposes = vec!["a,b".into(), "50%".into(), "%2C".into(), "n\0l".into()];
    a.versions = vec![1, u32::MAX];
    a.items = Some(u64::MAX);
    a.latency_us = Some(0);
    let fields: BTreeMap<&str, Vec<&str>> =
        BTreeMap::from([("fields", vec!["ssn", "card.number"]), ("empty", vec![])]);
    a.detail = Some(fields.into_iter().collect());
    a.result = "invalid_request".into();
    let mut b = AuditEvent::new(i64::MAX, Source::Scheduler, "scheduler:node-1", "rotate");
    b.purposes = vec![String::new(), "user_data".into()];
    b.detail = Some("reason: line1\nline2\t'quoted' -- ; DROP TABLE keyflow_audit".into());
    let c = AuditEvent::new(0, Source::System, "", "");
    vec![a, b, c]
}

/// What a store's scan returns from `after`, `limit` at a time: everything.
pub(super) async fn scan_all(store: &dyn AuditStore, page: u32) -> Vec<StoredAudit> {
    let mut all: Vec<StoredAudit> = Vec::new();
    loop {
        let after = all.last().map_or(0, |r| r.seq);
        let rows = store.audit_scan(after, page).await.unwrap();
        if rows.is_empty() {
            return all;
        }
        all.extend(rows);
    }
}

/// An empty store: zero head, nothing to read, an empty append writes nothing.
pub async fn empty_chain(store: Arc<dyn AuditStore>, sealer: &AuditSealer) {
    let zero = ChainHead::default();
    assert_eq!(store.audit_head().await.unwrap(), zero, "audit: empty head");
    assert!(store.audit_scan(0, 10).await.unwrap().is_empty());
    assert!(store
        .audit_query(&AuditFilter::default())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        verify(&*store, sealer, 10).await,
        Ok(zero),
        "audit: an empty chain verifies"
    );
    assert_eq!(
        store.append_audit(sealer, &[]).await.unwrap(),
        zero,
        "audit: an empty append returns the head"
    );
    assert_eq!(store.audit_head().await.unwrap(), zero);
    assert!(store.audit_scan(0, 10).await.unwrap().is_empty());
}

/// Appends of one event and of a batch continue one chain from 1; records read back
/// byte for byte as sealed; the scan pages as asked; the chain verifies.
pub async fn appends_chain(store: Arc<dyn AuditStore>, sealer: &AuditSealer) {
    let mut events = vec![event(1)];
    let head = store.append_audit(sealer, &events).await.unwrap();
    let expected = seal_after(sealer, ChainHead::default(), &events);
    assert_eq!(head, head_of(&expected), "audit: the first record is 1");
    assert_eq!(store.audit_head().await.unwrap(), head);

    let mut batch: Vec<AuditEvent> = (2..=5).map(event).collect();
    batch.extend(awkward_events());
    let after_batch = store.append_audit(sealer, &batch).await.unwrap();
    events.extend(batch);
    let expected = seal_after(sealer, ChainHead::default(), &events);
    assert_eq!(after_batch.seq, 8, "audit: a batch continues the chain");
    assert_eq!(after_batch, head_of(&expected), "audit: head = last record");
    assert_eq!(store.audit_head().await.unwrap(), after_batch);

    assert_eq!(
        store.append_audit(sealer, &[]).await.unwrap(),
        after_batch,
        "audit: an empty append returns the head unchanged"
    );
    assert_eq!(store.audit_head().await.unwrap(), after_batch);

    let stored = store.audit_scan(0, 100).await.unwrap();
    assert_eq!(
        stored.len(),
        expected.len(),
        "audit: an empty append wrote nothing"
    );
    for (got, want) in stored.iter().zip(&expected) {
        assert_eq!(got, want, "audit: record {} reads back as sealed", want.seq);
    }
    for (r, e) in stored.iter().zip(&events) {
        assert_eq!(&r.event().unwrap(), e, "audit: body parses to the event");
    }
    for page in [1, 3, 100] {
        assert_eq!(
            verify(&*store, sealer, page).await,
            Ok(after_batch),
            "audit: the chain verifies (scan pages of {page})"
        );
        assert_eq!(scan_all(&*store, page).await, expected);
    }

    let seqs = |rows: Vec<StoredAudit>| rows.iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.audit_scan(2, 3).await.unwrap()), [3, 4, 5]);
    assert_eq!(seqs(store.audit_scan(6, 10).await.unwrap()), [7, 8]);
    assert!(store.audit_scan(8, 10).await.unwrap().is_empty());
    assert!(store.audit_scan(u64::MAX, 10).await.unwrap().is_empty());
    assert!(
        store.audit_scan(0, 0).await.unwrap().is_empty(),
        "audit: a scan's limit is taken as given"
    );
}

/// `events`, encoded as the journal encodes them.
fn encoded(events: &[AuditEvent]) -> Vec<EncodedEvent> {
    EncodedEvent::all(events).unwrap()
}

/// A journaled append moves its journal's mark in the same transaction; marks are per
/// journal, move on with each append (an empty one moves nothing), and are forgotten on
/// request.
pub async fn journal_marks(store: Arc<dyn AuditStore>, sealer: &AuditSealer) {
    let mark = |journal: &str, through| JournalMark {
        journal: journal.into(),
        through,
    };
    assert_eq!(store.audit_journal_mark("a").await.unwrap(), None);
    let head = store
        .append_audit_from(sealer, &encoded(&[event(1), event(2)]), &mark("a", 2))
        .await
        .unwrap();
    assert_eq!(head.seq, 2, "audit: a journaled append extends the chain");
    assert_eq!(store.audit_journal_mark("a").await.unwrap(), Some(2));
    store
        .append_audit_from(sealer, &encoded(&[event(3)]), &mark("b", 7))
        .await
        .unwrap();
    store
        .append_audit_from(sealer, &encoded(&[event(4)]), &mark("a", 3))
        .await
        .unwrap();
    assert_eq!(
        (
            store.audit_journal_mark("a").await.unwrap(),
            store.audit_journal_mark("b").await.unwrap()
        ),
        (Some(3), Some(7)),
        "audit: one mark per journal, moved by each of its appends"
    );
    assert_eq!(
        verify(&*store, sealer, 100).await.map(|h| h.seq),
        Ok(4),
        "audit: journaled and plain appends make one chain"
    );
    // A drain-sized batch (more rows than any one INSERT statement takes).
    let big: Vec<AuditEvent> = (5..=1004).map(event).collect();
    let head = store
        .append_audit_from(sealer, &encoded(&big), &mark("a", 303))
        .await
        .unwrap();
    assert_eq!(head.seq, 1004, "audit: a large batch is appended whole");
    assert_eq!(
        verify(&*store, sealer, 100).await.map(|h| h.seq),
        Ok(1004),
        "audit: a large batch continues the chain in order"
    );
    assert_eq!(store.audit_journal_mark("a").await.unwrap(), Some(303));

    // An empty append moves nothing.
    store
        .append_audit_from(sealer, &[], &mark("a", 999))
        .await
        .unwrap();
    assert_eq!(store.audit_journal_mark("a").await.unwrap(), Some(303));

    store.audit_journal_forget("a").await.unwrap();
    store.audit_journal_forget("never-seen").await.unwrap();
    assert_eq!(store.audit_journal_mark("a").await.unwrap(), None);
    assert_eq!(store.audit_journal_mark("b").await.unwrap(), Some(7));
}

/// Eight tasks appending at once (single events and batches) make one chain without
/// gaps or forks; each batch is contiguous and ends at the head its append returned.
pub async fn concurrent_appends(store: Arc<dyn AuditStore>, sealer: Arc<AuditSealer>) {
    const TASKS: u64 = 8;
    const EACH: u64 = 20;
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        let sealer = sealer.clone();
        handles.push(tokio::spawn(async move {
            let batch = usize::try_from(task % 4 + 1).unwrap();
            let events: Vec<AuditEvent> = (0..EACH)
                .map(|i| {
                    let mut e = event(i);
                    e.actor = format!("task-{task}");
                    e
                })
                .collect();
            let mut heads = Vec::new();
            for chunk in events.chunks(batch) {
                let head = store.append_audit(&sealer, chunk).await.unwrap();
                heads.push((head, chunk.to_vec()));
            }
            heads
        }));
    }
    let mut appends = Vec::new();
    for h in handles {
        appends.extend(h.await.unwrap());
    }
    let total = TASKS * EACH;
    let head = store.audit_head().await.unwrap();
    assert_eq!(head.seq, total, "audit: every concurrent record is in");
    let all = scan_all(&*store, 37).await;
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>(),
        "audit: concurrent appends leave no gap"
    );
    assert_eq!(
        verify(&*store, &sealer, 50).await,
        Ok(head),
        "audit: concurrent appends make one chain"
    );
    for (returned, chunk) in appends {
        let n = u64::try_from(chunk.len()).unwrap();
        let first = usize::try_from(returned.seq - n).unwrap();
        let written = &all[first..first + chunk.len()];
        assert_eq!(
            written.last().map(|r| r.mac),
            Some(returned.mac),
            "audit: an append returns its own last record as the head"
        );
        for (r, e) in written.iter().zip(&chunk) {
            assert_eq!(
                &r.event().unwrap(),
                e,
                "audit: a batch's records are contiguous"
            );
        }
    }
}
