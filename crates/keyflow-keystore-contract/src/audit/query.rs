//! The audit store's queries: filters against a reference implementation, pages and
//! cursors.

use std::sync::Arc;

use keyflow_kms::audit::{
    AuditEvent, AuditFilter, AuditSealer, AuditStore, ChainHead, StoredAudit, MAX_PAGE,
};

use super::{awkward_events, event, scan_all, seal_after, verify};

/// What a query must return: the newest records meeting [`AuditFilter::matches`], one
/// page of [`AuditFilter::page_size`].
fn expect(records: &[StoredAudit], f: &AuditFilter) -> Vec<StoredAudit> {
    records
        .iter()
        .rev()
        .filter(|r| f.matches(r))
        .take(usize::try_from(f.page_size()).unwrap())
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
            .filter(|r| filter.matches(r))
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
