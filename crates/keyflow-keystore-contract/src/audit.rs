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
    Checkpoint, JournalMark, Source, StoredAudit, MAX_PAGE,
};
use keyflow_kms::keyflow_core::kek::Kek;
use keyflow_kms::keyflow_core::to_hex;
use keyflow_kms::keyflow_core::OsRng;

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
async fn walk(
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
    let mut head = head;
    events
        .iter()
        .map(|e| {
            let r = sealer.seal(&head.mac, head.seq + 1, e).unwrap();
            head = ChainHead {
                seq: r.seq,
                mac: r.mac,
            };
            r
        })
        .collect()
}

fn head_of(records: &[StoredAudit]) -> ChainHead {
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
fn awkward_events() -> Vec<AuditEvent> {
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
async fn scan_all(store: &dyn AuditStore, page: u32) -> Vec<StoredAudit> {
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
        .append_audit_from(sealer, &[event(1), event(2)], &mark("a", 2))
        .await
        .unwrap();
    assert_eq!(head.seq, 2, "audit: a journaled append extends the chain");
    assert_eq!(store.audit_journal_mark("a").await.unwrap(), Some(2));
    store
        .append_audit_from(sealer, &[event(3)], &mark("b", 7))
        .await
        .unwrap();
    store
        .append_audit_from(sealer, &[event(4)], &mark("a", 3))
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
    let big: Vec<AuditEvent> = (5..=304).map(event).collect();
    let head = store
        .append_audit_from(sealer, &big, &mark("a", 303))
        .await
        .unwrap();
    assert_eq!(head.seq, 304, "audit: a large batch is appended whole");
    assert_eq!(
        verify(&*store, sealer, 100).await.map(|h| h.seq),
        Ok(304),
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

/// The reference semantics of [`AuditFilter`] (without the limit).
fn matches(f: &AuditFilter, r: &StoredAudit) -> bool {
    f.since.is_none_or(|t| r.time >= t)
        && f.until.is_none_or(|t| r.time < t)
        && f.actor.as_ref().is_none_or(|a| *a == r.actor)
        && f.purpose.as_ref().is_none_or(|p| r.purposes.contains(p))
        && f.operation.as_ref().is_none_or(|o| *o == r.operation)
        && f.result.as_ref().is_none_or(|x| *x == r.result)
        && f.before.is_none_or(|b| r.seq < b)
}

fn expect(records: &[StoredAudit], f: &AuditFilter) -> Vec<StoredAudit> {
    let limit = if f.limit == 0 { MAX_PAGE } else { f.limit };
    records
        .iter()
        .rev()
        .filter(|r| matches(f, r))
        .take(usize::try_from(limit.min(MAX_PAGE)).unwrap())
        .cloned()
        .collect()
}

/// Every filter condition alone and combined, against the reference semantics; exact
/// matches only (no wildcard, prefix or case folding); full records come back.
pub async fn query_filters(store: Arc<dyn AuditStore>, sealer: &AuditSealer) {
    let mut events: Vec<AuditEvent> = (0..16).map(event).collect();
    events.extend(awkward_events());
    // Neighbours of `user_data` that must not match it (`_` is a LIKE wildcard).
    for (i, purposes) in [
        vec!["userXdata"],
        vec!["USER_DATA"],
        vec!["user_data_2", "xuser_data"],
        vec!["user%"],
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = event(100 + u64::try_from(i).unwrap());
        e.purposes = purposes.into_iter().map(String::from).collect();
        events.push(e);
    }
    store.append_audit(sealer, &events[..10]).await.unwrap();
    store.append_audit(sealer, &events[10..]).await.unwrap();
    let records = seal_after(sealer, ChainHead::default(), &events);
    assert_eq!(scan_all(&*store, 100).await, records);

    let t = |i: i64| 1_700_000_000_000 + i * 10;
    let s = |v: &str| Some(v.to_owned());
    let q = |edit: &dyn Fn(&mut AuditFilter)| {
        let mut f = AuditFilter::default();
        edit(&mut f);
        f
    };
    // (what, filter, whether it must find something)
    let cases: Vec<(&str, AuditFilter, bool)> = vec![
        ("everything", AuditFilter::default(), true),
        ("since (inclusive)", q(&|f| f.since = Some(t(5))), true),
        ("until (exclusive)", q(&|f| f.until = Some(t(5))), true),
        (
            "since and until",
            q(&|f| (f.since, f.until) = (Some(t(3)), Some(t(9)))),
            true,
        ),
        (
            "empty time range",
            q(&|f| (f.since, f.until) = (Some(t(9)), Some(t(9)))),
            false,
        ),
        ("actor", q(&|f| f.actor = s("tok-1")), true),
        ("actor with non-ASCII", q(&|f| f.actor = s("cli:zoë")), true),
        ("empty actor", q(&|f| f.actor = s("")), true),
        ("actor, other case", q(&|f| f.actor = s("TOK-1")), false),
        ("actor prefix", q(&|f| f.actor = s("tok-")), false),
        ("actor wildcard", q(&|f| f.actor = s("tok-%")), false),
        ("purpose", q(&|f| f.purpose = s("financialData")), true),
        ("purpose with _", q(&|f| f.purpose = s("user_data")), true),
        (
            "purpose, other case",
            q(&|f| f.purpose = s("userdata")),
            false,
        ),
        ("purpose prefix", q(&|f| f.purpose = s("user")), false),
        (
            "purpose named like a wildcard",
            q(&|f| f.purpose = s("user%")),
            true,
        ),
        ("purpose wildcard only", q(&|f| f.purpose = s("%")), false),
        (
            "purpose holding a comma",
            q(&|f| f.purpose = s("a,b")),
            true,
        ),
        ("half of a comma purpose", q(&|f| f.purpose = s("b")), false),
        ("purpose holding %", q(&|f| f.purpose = s("50%")), true),
        ("purpose like an escape", q(&|f| f.purpose = s("%2C")), true),
        ("purpose holding NUL", q(&|f| f.purpose = s("n\0l")), true),
        ("empty purpose name", q(&|f| f.purpose = s("")), true),
        ("operation", q(&|f| f.operation = s("decrypt")), true),
        ("operation prefix", q(&|f| f.operation = s("keys")), false),
        ("result", q(&|f| f.result = s("forbidden")), true),
        ("result ok", q(&|f| f.result = s("ok")), true),
        ("cursor", q(&|f| f.before = Some(10)), true),
        ("cursor at the start", q(&|f| f.before = Some(1)), false),
        (
            "cursor past the end",
            q(&|f| f.before = Some(u64::MAX)),
            true,
        ),
        (
            "cursor and actor",
            q(&|f| (f.before, f.actor) = (Some(12), s("tok-2"))),
            true,
        ),
        ("limit", q(&|f| f.limit = 3), true),
        (
            "limit with a filter",
            q(&|f| (f.limit, f.result) = (2, s("ok"))),
            true,
        ),
        (
            "every condition",
            AuditFilter {
                since: Some(t(1)),
                until: Some(t(15)),
                actor: s("tok-0"),
                purpose: s("financialData"),
                operation: s("encrypt"),
                result: s("forbidden"),
                before: Some(16),
                limit: 0,
            },
            true,
        ),
    ];
    for (what, filter, finds) in cases {
        let want = expect(&records, &filter);
        assert_eq!(
            !want.is_empty(),
            finds,
            "audit query {what}: the case itself"
        );
        let got = store.audit_query(&filter).await.unwrap();
        assert_eq!(
            got.iter().map(|r| r.seq).collect::<Vec<_>>(),
            want.iter().map(|r| r.seq).collect::<Vec<_>>(),
            "audit query {what}: records, newest first"
        );
        assert_eq!(got, want, "audit query {what}: records read back as sealed");
    }
}

/// More than a page: the cap, limit 0, and the `before` cursor walking every record
/// once; the scan is not capped.
pub async fn pages_and_cursor(store: Arc<dyn AuditStore>, sealer: &AuditSealer) {
    let n = u64::from(MAX_PAGE) + 5;
    let events: Vec<AuditEvent> = (0..n).map(event).collect();
    let head = store.append_audit(sealer, &events).await.unwrap();
    assert_eq!(head.seq, n);
    let records = seal_after(sealer, ChainHead::default(), &events);
    let newest: Vec<StoredAudit> = records.iter().rev().cloned().collect();
    let page = usize::try_from(MAX_PAGE).unwrap();

    for limit in [0, MAX_PAGE, MAX_PAGE + 1, u32::MAX] {
        let got = store
            .audit_query(&AuditFilter {
                limit,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            got.len(),
            page,
            "audit query: limit {limit} gives a full page"
        );
        assert_eq!(got, newest[..page], "audit query: the newest page");
    }
    let seven = AuditFilter {
        limit: 7,
        ..AuditFilter::default()
    };
    assert_eq!(store.audit_query(&seven).await.unwrap(), newest[..7]);

    // Walking back with the cursor: every record once, newest first.
    for filter in [
        AuditFilter {
            limit: 400,
            ..AuditFilter::default()
        },
        AuditFilter {
            limit: 50,
            actor: Some("tok-2".into()),
            ..AuditFilter::default()
        },
    ] {
        let mut walked: Vec<StoredAudit> = Vec::new();
        let mut cursor = filter.clone();
        loop {
            let rows = store.audit_query(&cursor).await.unwrap();
            let Some(last) = rows.last() else { break };
            assert!(rows.len() <= usize::try_from(cursor.limit).unwrap());
            cursor.before = Some(last.seq);
            walked.extend(rows);
        }
        let want: Vec<StoredAudit> = newest
            .iter()
            .filter(|r| matches(&filter, r))
            .cloned()
            .collect();
        assert_eq!(walked.len(), want.len(), "audit cursor: every record once");
        assert!(walked == want, "audit cursor: records in order, as sealed");
    }

    assert_eq!(
        store.audit_scan(0, MAX_PAGE * 2).await.unwrap().len(),
        records.len(),
        "audit scan: not capped at a query page"
    );
    assert_eq!(verify(&*store, sealer, MAX_PAGE).await, Ok(head));
}

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
