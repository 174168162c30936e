//! The journaled writer behind [`AuditLog::start_journaled`](super::log::AuditLog):
//! callers append to the local journal under a mutex (one `write` each); one task drains
//! the journal into the database in large transactions.

use std::collections::VecDeque;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::journal::{JournalFile, JournalMark};
use super::log::{AuditError, Counters};
use super::{AuditEvent, AuditSealer, AuditStore, EncodedEvent};
use crate::clock::Clock;

/// How long the drain lets records gather before appending them: the longest a record
/// waits for the database, and the power-loss window (a drained record is as durable as
/// the database's commit; waiting ones are synced when the database refuses them).
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(50);
/// Records that may wait for the database (it is failing) before new ones are refused.
pub const MAX_BACKLOG: usize = 100_000;
/// Most records one drain transaction appends: a drain at full load (~2,000 records
/// per [`DRAIN_INTERVAL`]) is one transaction and one commit, not four.
pub const DRAIN_BATCH: usize = 4_096;
/// Pause before retrying an append the database refused.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// A fully drained journal larger than this is emptied (back to its header).
const TRUNCATE_AT: u64 = 4 << 20;

struct State {
    file: JournalFile,
    /// The next entry's number.
    next: u64,
    /// Entries written to the journal, not yet in the database, in order.
    pending: VecDeque<(u64, EncodedEvent)>,
    /// Entries taken by the drain, being appended now.
    in_flight: usize,
    /// A write failed part-way: the next line starts on a fresh line.
    torn: bool,
    closed: bool,
}

/// Where the drain has got to, for [`Journaled::flush`].
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// The last entry in the database.
    drained: u64,
    /// Failed appends so far.
    failures: u64,
}

pub(super) struct Journaled {
    state: Mutex<State>,
    /// The journal's file again, for `fdatasync` outside the mutex.
    sync_handle: Arc<File>,
    id: String,
    sealer: AuditSealer,
    store: Arc<dyn AuditStore>,
    clock: Arc<dyn Clock>,
    counters: Arc<Counters>,
    /// Records are waiting.
    wake: Notify,
    /// Someone waits for the drain ([`flush`](Self::flush)): no lingering.
    urgent: AtomicBool,
    hurry: Notify,
    progress: watch::Sender<Progress>,
}

impl Journaled {
    pub(super) fn start(
        store: Arc<dyn AuditStore>,
        sealer: AuditSealer,
        clock: Arc<dyn Clock>,
        dir: &Path,
        counters: Arc<Counters>,
    ) -> std::io::Result<Arc<Self>> {
        let file = JournalFile::create(dir, &sealer)?;
        let sync_handle = Arc::new(File::open(file.path())?);
        let this = Arc::new(Self {
            id: file.id().to_owned(),
            state: Mutex::new(State {
                file,
                next: 1,
                pending: VecDeque::new(),
                in_flight: 0,
                torn: false,
                closed: false,
            }),
            sync_handle,
            sealer,
            store,
            clock,
            counters,
            wake: Notify::new(),
            urgent: AtomicBool::new(false),
            hurry: Notify::new(),
            progress: watch::Sender::new(Progress::default()),
        });
        tokio::spawn(drain_loop(this.clone()));
        Ok(this)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent state (each step is one push
        // or one counter move), so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn backlog(&self) -> usize {
        let st = self.lock();
        st.pending.len() + st.in_flight
    }

    pub(super) fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        let encoded = EncodedEvent::new(event)
            .map_err(|e| AuditError::Unavailable(format!("cannot encode an audit event: {e}")))?;
        {
            let mut st = self.lock();
            if st.closed {
                return Err(AuditError::Stopped);
            }
            if st.pending.len() + st.in_flight >= MAX_BACKLOG {
                return Err(AuditError::Unavailable(format!(
                    "{MAX_BACKLOG} audit records are waiting for the database"
                )));
            }
            let n = st.next;
            let st = &mut *st;
            if std::mem::take(&mut st.torn) {
                // Ends the torn fragment so this entry reads back as a line of its own.
                if let Err(e) = st.file.append_raw(b"\n") {
                    st.torn = true;
                    return Err(self.journal_failed(e));
                }
            }
            if let Err(e) = st.file.append(&self.sealer, n, &encoded.body) {
                st.torn = true;
                return Err(self.journal_failed(e));
            }
            st.next += 1;
            st.pending.push_back((n, encoded));
        }
        self.counters.journaled.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
        Ok(())
    }

    fn journal_failed(&self, e: std::io::Error) -> AuditError {
        self.counters.failed(self.clock.now_millis());
        tracing::error!(error = %e, "cannot write the audit journal");
        AuditError::Unavailable(format!("cannot write the audit journal: {e}"))
    }

    pub(super) async fn flush(&self) -> Result<(), AuditError> {
        let target = self.lock().next - 1;
        let mut progress = self.progress.subscribe();
        let failures_before = progress.borrow().failures;
        self.urgent.store(true, Ordering::Release);
        self.hurry.notify_one();
        self.wake.notify_one();
        loop {
            let p = *progress.borrow_and_update();
            if p.drained >= target {
                return Ok(());
            }
            if p.failures > failures_before {
                return Err(AuditError::Unavailable(
                    "the audit database refused the records (they wait in the journal)".into(),
                ));
            }
            progress.changed().await.map_err(|_| AuditError::Stopped)?;
        }
    }

    pub(super) async fn close(&self) -> Result<(), AuditError> {
        self.lock().closed = true;
        self.flush().await?;
        {
            let st = self.lock();
            if !st.pending.is_empty() {
                return Err(AuditError::Unavailable(
                    "audit records still wait for the database; the journal stays for the next start".into(),
                ));
            }
            // Every record is in the chain: the file goes first, then its mark (a crash
            // in between leaves only a stale mark; the other order would replay the file).
            std::fs::remove_file(st.file.path()).map_err(|e| {
                AuditError::Unavailable(format!("cannot remove the drained audit journal: {e}"))
            })?;
        }
        self.store
            .audit_journal_forget(&self.id)
            .await
            .map_err(|e| AuditError::Unavailable(e.to_string()))?;
        self.wake.notify_one();
        Ok(())
    }

    /// Appends what is pending, [`DRAIN_BATCH`] per transaction, until a transaction
    /// takes less than a full batch or the database refuses. Whether it all got in.
    ///
    /// Records that arrive while a transaction runs wait for the next interval rather
    /// than starting the next transaction at once: going straight on would make every
    /// transaction as small as the records one commit's time gathers (~100 at full load
    /// instead of ~2,000), and each costs its commit. Only a full batch — a backlog —
    /// goes on without a pause.
    async fn drain(&self) -> bool {
        loop {
            let batch: Vec<(u64, EncodedEvent)> = {
                let mut st = self.lock();
                let n = st.pending.len().min(DRAIN_BATCH);
                st.in_flight = n;
                st.pending.drain(..n).collect()
            };
            let Some(&(through, _)) = batch.last() else {
                return true;
            };
            // The events move out for the append, their numbers stay to put them back.
            let (numbers, events): (Vec<u64>, Vec<EncodedEvent>) = batch.into_iter().unzip();
            let mark = JournalMark {
                journal: self.id.clone(),
                through,
            };
            // The database's commit makes the batch durable (its own fsync); the journal
            // itself is synced only when the database refuses, so the records that wait
            // are on disk while they wait. Either way power loss can only take what
            // arrived since the last drain.
            let outcome = match self
                .store
                .append_audit_from(&self.sealer, &events, &mark)
                .await
            {
                Ok(head) => Ok(head),
                Err(e) => {
                    let sync = self.sync_handle.clone();
                    match tokio::task::spawn_blocking(move || sync.sync_data()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(s)) => tracing::error!(error = %s, "cannot sync the audit journal"),
                        Err(s) => tracing::error!(error = %s, "the journal sync task failed"),
                    }
                    Err(e.to_string())
                }
            };
            let now = self.clock.now_millis();
            match outcome {
                Ok(head) => {
                    self.counters.committed(events.len() as u64, head.seq, now);
                    self.progress.send_modify(|p| p.drained = through);
                    let mut st = self.lock();
                    st.in_flight = 0;
                    if st.pending.is_empty() && st.file.len().is_ok_and(|l| l > TRUNCATE_AT) {
                        if let Err(e) = st.file.truncate() {
                            tracing::warn!(error = %e, "cannot empty the drained audit journal");
                        }
                    }
                    if events.len() < DRAIN_BATCH {
                        return true;
                    }
                }
                Err(e) => {
                    self.counters.failed(now);
                    tracing::error!(error = %e, records = events.len(), "audit append failed; the records wait in the journal");
                    // Back to the front, in order: nothing is lost or reordered.
                    let mut st = self.lock();
                    st.in_flight = 0;
                    for entry in numbers.into_iter().zip(events).rev() {
                        st.pending.push_front(entry);
                    }
                    drop(st);
                    self.progress.send_modify(|p| p.failures += 1);
                    return false;
                }
            }
        }
    }
}

async fn drain_loop(j: Arc<Journaled>) {
    loop {
        j.wake.notified().await;
        if !j.urgent.swap(false, Ordering::AcqRel) {
            // Lets records gather: one transaction for the interval's records.
            tokio::select! {
                () = tokio::time::sleep(DRAIN_INTERVAL) => {}
                () = j.hurry.notified() => {}
            }
            j.urgent.store(false, Ordering::Release);
        }
        while !j.drain().await {
            tokio::select! {
                () = tokio::time::sleep(RETRY_AFTER) => {}
                () = j.hurry.notified() => {}
            }
            j.urgent.store(false, Ordering::Release);
        }
        let st = j.lock();
        if st.closed && st.pending.is_empty() {
            return;
        }
    }
}
