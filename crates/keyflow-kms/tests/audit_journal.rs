//! The journaled audit writer: records durable in the local journal before the caller
//! is answered, drained into the chain in batches, nothing lost or doubled when the
//! writer dies, the database fails, or the journal is tampered with.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use keyflow_core::kek::Kek;
use keyflow_core::OsRng;
use keyflow_kms::audit::log::{AuditError, AuditLog};
use keyflow_kms::audit::recover::{self, Outcome, JOURNAL_DAMAGED, JOURNAL_RECOVERED};
use keyflow_kms::audit::verify::verify_chain;
use keyflow_kms::audit::{journal, AuditEvent, AuditSealer, AuditStore, Source};
use keyflow_kms::clock::{Clock, SystemClock};
use keyflow_testkit::{FlakyAudit, MemoryKeystore};

fn event(i: usize) -> AuditEvent {
    let mut e = AuditEvent::new(i as i64, Source::Http, "tok1", "encrypt");
    e.request_id = Some(format!("req-{i}"));
    e
}

/// A journaled writer in `dir`, sealing under `kek`.
fn journaled(store: Arc<dyn AuditStore>, kek: &Kek, dir: &Path) -> AuditLog {
    let sealer = AuditSealer::new(kek).unwrap();
    AuditLog::start_journaled(store, sealer, Arc::new(SystemClock) as Arc<dyn Clock>, dir).unwrap()
}

/// The request ids in the chain, in order.
async fn ids(store: &dyn AuditStore) -> Vec<String> {
    store
        .audit_scan(0, 1000)
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.event().unwrap().request_id)
        .collect()
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("req-{i}")).collect()
}

fn journal_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

async fn verifies(store: &dyn AuditStore, kek: &Kek) -> u64 {
    let s = AuditSealer::new(kek).unwrap();
    let head = store.audit_head().await.unwrap();
    verify_chain(store, &[&s], &head, |_| {})
        .await
        .unwrap()
        .end
        .seq
}

#[tokio::test]
async fn records_are_journaled_first_and_drained_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let kek = Kek::generate(&OsRng).unwrap();
    let store = Arc::new(MemoryKeystore::new());
    let log = journaled(store.clone(), &kek, dir.path());
    for i in 0..100 {
        log.record(event(i)).await.unwrap();
    }
    // Answered: each record is a line of the journal, none is in the database yet (the
    // drain task has not run on this single-threaded runtime).
    let files = journal_files(dir.path());
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert_eq!(text.lines().count(), 101, "header + one line per record");
    assert!(text.contains("req-99"));
    assert!(ids(&*store).await.is_empty());
    assert_eq!(log.health().backlog, 100);

    log.flush().await.unwrap();
    assert_eq!(ids(&*store).await, expected(0..100));
    let h = log.health();
    assert_eq!(
        (h.written, h.journaled, h.commits, h.backlog),
        (100, 100, 1, 0)
    );
    assert_eq!(verifies(&*store, &kek).await, 100);

    // Closing drains and removes the journal; nothing is recorded after it.
    log.record(event(100)).await.unwrap();
    log.close().await.unwrap();
    assert_eq!(ids(&*store).await, expected(0..101));
    assert!(journal_files(dir.path()).is_empty());
    assert_eq!(log.record(event(101)).await, Err(AuditError::Stopped));
}

/// A writer that dies (its runtime dropped: tasks gone, journal unlocked, as after a
/// SIGKILL) half-drained: recovery appends exactly what the chain lacks, once.
#[test]
fn a_dead_writers_journal_is_recovered_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let kek = Kek::generate(&OsRng).unwrap();
    let store: Arc<dyn AuditStore> = Arc::new(MemoryKeystore::new());
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let log = journaled(store.clone(), &kek, dir.path());
            for i in 0..30 {
                log.record(event(i)).await.unwrap();
            }
            log.flush().await.unwrap();
            for i in 30..50 {
                log.record(event(i)).await.unwrap();
            }
            // While it lives, its journal is nobody's orphan.
            assert!(journal::orphans(dir.path()).unwrap().is_empty());
        });
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        assert_eq!(ids(&*store).await, expected(0..30));
        let sealer = AuditSealer::new(&kek).unwrap();
        let outcomes = recover::recover(dir.path(), &store, &sealer, &[], &SystemClock)
            .await
            .unwrap();
        assert!(
            matches!(
                outcomes.as_slice(),
                [Outcome::Drained {
                    appended: 20,
                    rejected: 0,
                    missing: 0,
                    ..
                }]
            ),
            "{outcomes:?}"
        );
        assert_eq!(ids(&*store).await, expected(0..50));
        let last = store.audit_scan(50, 10).await.unwrap();
        let note = last[0].event().unwrap();
        assert_eq!(
            (note.operation.as_str(), note.result.as_str()),
            (JOURNAL_RECOVERED, "ok")
        );
        assert_eq!(verifies(&*store, &kek).await, 51);
        assert!(journal_files(dir.path()).is_empty());
        // A second pass finds nothing.
        let again = recover::recover(dir.path(), &store, &sealer, &[], &SystemClock)
            .await
            .unwrap();
        assert!(again.is_empty());
    });
}

/// At load, records that arrive while a drain transaction commits wait for the next
/// interval: one transaction per interval, not one per commit time (which would make each
/// transaction only as large as one commit's time gathers).
#[tokio::test(start_paused = true)]
async fn records_arriving_during_a_commit_wait_for_the_next_interval() {
    let dir = tempfile::tempdir().unwrap();
    let kek = Kek::generate(&OsRng).unwrap();
    let memory = Arc::new(MemoryKeystore::new());
    // Each transaction takes 20 ms; a record arrives every 2 ms for 500 ms.
    let store = Arc::new(FlakyAudit::slow(memory.clone(), Duration::from_millis(20)));
    let log = journaled(store.clone(), &kek, dir.path());
    for i in 0..250 {
        log.record(event(i)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    log.flush().await.unwrap();
    assert_eq!(
        ids(&*memory).await,
        expected(0..250),
        "every record, in order"
    );
    // 50 ms of gathering + 20 ms of commit per transaction: ~8 in 500 ms, plus the
    // flush's. Starting the next transaction as soon as one commits would take ~23.
    let transactions = store.journaled_appends.load(Ordering::SeqCst);
    assert!(
        (2..=10).contains(&transactions),
        "{transactions} transactions for 500 ms of records"
    );
    log.close().await.unwrap();
}

#[tokio::test]
async fn a_failing_database_keeps_records_waiting_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let kek = Kek::generate(&OsRng).unwrap();
    let inner = Arc::new(MemoryKeystore::new());
    let flaky = Arc::new(FlakyAudit::new(inner.clone()));
    flaky.failing.store(true, Ordering::SeqCst);
    let log = journaled(flaky.clone(), &kek, dir.path());
    for i in 0..3 {
        log.record(event(i)).await.unwrap();
    }
    assert!(matches!(log.flush().await, Err(AuditError::Unavailable(_))));
    assert!(log.failing());
    assert_eq!(log.health().backlog, 3);
    // Still journaled while failing (the caller decides whether to answer).
    log.record(event(3)).await.unwrap();
    assert!(ids(&*inner).await.is_empty());

    flaky.failing.store(false, Ordering::SeqCst);
    log.flush().await.unwrap();
    assert!(!log.failing());
    assert_eq!(ids(&*inner).await, expected(0..4));
    assert_eq!(verifies(&*inner, &kek).await, 4);
}

fn dead_writer(dir: &Path, kek: &Kek, store: Arc<dyn AuditStore>, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let log = journaled(store, kek, dir);
        for i in 0..n {
            log.record(event(i)).await.unwrap();
        }
    });
}

#[test]
fn a_tampered_journal_is_recovered_as_far_as_it_verifies_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let kek = Kek::generate(&OsRng).unwrap();
    let store: Arc<dyn AuditStore> = Arc::new(MemoryKeystore::new());
    dead_writer(dir.path(), &kek, store.clone(), 4);
    block_on(async {
        let path = journal_files(dir.path()).remove(0);
        // Someone with write access to the directory changes who did entry 2.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("req-1\"", "req-X\"", 1)).unwrap();

        let sealer = AuditSealer::new(&kek).unwrap();
        let outcomes = recover::recover(dir.path(), &store, &sealer, &[], &SystemClock)
            .await
            .unwrap();
        assert!(
            matches!(
                outcomes.as_slice(),
                [Outcome::Drained {
                    appended: 3,
                    rejected: 1,
                    ..
                }]
            ),
            "{outcomes:?}"
        );
        assert_eq!(ids(&*store).await, vec!["req-0", "req-2", "req-3"]);
        let note = store.audit_scan(3, 1).await.unwrap()[0].event().unwrap();
        assert_eq!(note.result, JOURNAL_DAMAGED);
        assert_eq!(note.detail.unwrap()["rejected"], 1);
    });
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

#[test]
fn another_keks_journal_is_left_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let old = Kek::generate(&OsRng).unwrap();
    let store: Arc<dyn AuditStore> = Arc::new(MemoryKeystore::new());
    dead_writer(dir.path(), &old, store.clone(), 2);
    block_on(async {
        let new = AuditSealer::new(&Kek::generate(&OsRng).unwrap()).unwrap();
        let outcomes = recover::recover(dir.path(), &store, &new, &[], &SystemClock)
            .await
            .unwrap();
        assert!(
            matches!(outcomes.as_slice(), [Outcome::Left(_)]),
            "{outcomes:?}"
        );
        assert_eq!(
            journal_files(dir.path()).len(),
            1,
            "kept for a later recovery"
        );
        assert!(ids(&*store).await.is_empty());
        // With the retired KEK's audit key available, it is recovered.
        let retired = [AuditSealer::new(&old).unwrap()];
        let outcomes = recover::recover(dir.path(), &store, &new, &retired, &SystemClock)
            .await
            .unwrap();
        assert!(matches!(
            outcomes.as_slice(),
            [Outcome::Drained { appended: 2, .. }]
        ));
        assert_eq!(ids(&*store).await, expected(0..2));
    });
}
