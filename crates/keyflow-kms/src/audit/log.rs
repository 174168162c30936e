//! [`AuditLog`]: the writer every audited action goes through.
//!
//! Callers hand an event over and wait until it is durable. Two ways, one contract:
//!
//! - **direct** ([`AuditLog::start`]): one task owns the writes: it takes the first
//!   waiting event, then every other one already queued (up to [`MAX_BATCH`]), appends
//!   them in one transaction and answers each caller. Concurrent requests share a commit
//!   (group commit), and no caller is told "done" before its record is in the database.
//! - **journaled** ([`AuditLog::start_journaled`], what `keyflow serve` uses): the
//!   caller writes its record as one line to a local [`journal`](super::journal) and is
//!   answered once the line is in the kernel (a SIGKILL loses nothing); a background
//!   task drains the journal into the database every [`DRAIN_INTERVAL`], hundreds of
//!   records per transaction. Power loss can lose at most what one interval had not
//!   synced. When the database cannot be written the records wait in the journal (and
//!   in memory, up to [`MAX_BACKLOG`]) while [`AuditLog::failing`] says so.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::journaled::Journaled;
use super::{AuditEvent, AuditSealer, AuditStore};
use crate::clock::Clock;

pub use super::journaled::{DRAIN_INTERVAL, MAX_BACKLOG};

/// Most events appended in one transaction.
pub const MAX_BATCH: usize = 512;
/// Events that may wait for the writer before callers are made to wait for room.
pub const QUEUE: usize = 16_384;

/// Why an event could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The audit store refused or could not be reached.
    #[error("the audit store cannot be written: {0}")]
    Unavailable(String),
    /// The writer has stopped (the runtime is shutting down).
    #[error("the audit writer has stopped")]
    Stopped,
}

struct Pending {
    event: AuditEvent,
    done: oneshot::Sender<Result<u64, AuditError>>,
}

/// Counters of the writer, for `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditHealth {
    /// Records written since start.
    pub written: u64,
    /// Transactions committed since start.
    pub commits: u64,
    /// Failed appends since start.
    pub failures: u64,
    /// Time of the last successful write (Unix ms), 0 before the first.
    pub last_write: i64,
    /// Time of the last failed write (Unix ms), 0 if none.
    pub last_failure: i64,
    /// Records written to the local journal since start (journaled writer; 0 direct).
    pub journaled: u64,
    /// The chain head's sequence number after the last write.
    pub head_seq: u64,
    /// Events waiting for the writer.
    pub backlog: usize,
}

/// The writer's counters, shared by the callers and the writing task.
#[derive(Default)]
pub(super) struct Counters {
    written: AtomicU64,
    commits: AtomicU64,
    failures: AtomicU64,
    last_write: AtomicI64,
    last_failure: AtomicI64,
    head_seq: AtomicU64,
    pub(super) journaled: AtomicU64,
}

impl Counters {
    /// `n` records committed at `now`; the chain's head is now `head_seq`.
    pub(super) fn committed(&self, n: u64, head_seq: u64, now: i64) {
        self.written.fetch_add(n, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.head_seq.store(head_seq, Ordering::Relaxed);
        // `max(now, last_failure + 1)` keeps `failing()` right even when both happen
        // in the same millisecond.
        let last_failure = self.last_failure.load(Ordering::Relaxed);
        self.last_write
            .store(now.max(last_failure + 1), Ordering::Relaxed);
    }

    /// A write failed at `now`.
    pub(super) fn failed(&self, now: i64) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let last_write = self.last_write.load(Ordering::Relaxed);
        self.last_failure
            .store(now.max(last_write + 1), Ordering::Relaxed);
    }

    pub(super) fn failing(&self) -> bool {
        self.last_failure.load(Ordering::Relaxed) > self.last_write.load(Ordering::Relaxed)
    }
}

/// Where records go.
#[derive(Clone)]
enum Sink {
    Direct(mpsc::Sender<Pending>),
    Journal(Arc<Journaled>),
}

/// The audit writer. Cheap to clone; the direct writing task stops when every clone is
/// gone (the journaled one with [`AuditLog::close`], or with the runtime).
#[derive(Clone)]
pub struct AuditLog {
    sink: Sink,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("health", &self.health())
            .finish()
    }
}

impl AuditLog {
    /// Starts the writing task on the current tokio runtime.
    pub fn start(store: Arc<dyn AuditStore>, sealer: AuditSealer, clock: Arc<dyn Clock>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        tokio::spawn(write_loop(store, sealer, clock, rx, counters.clone()));
        Self {
            sink: Sink::Direct(tx),
            counters,
        }
    }

    /// Starts a journaled writer: its journal is a new file in `dir` (see
    /// [`journal`](super::journal)), drained into `store` by a task on the current tokio
    /// runtime. Recover the journals of processes that died first
    /// ([`recover`](super::recover::recover)).
    pub fn start_journaled(
        store: Arc<dyn AuditStore>,
        sealer: AuditSealer,
        clock: Arc<dyn Clock>,
        dir: &std::path::Path,
    ) -> std::io::Result<Self> {
        let counters = Arc::new(Counters::default());
        let journaled = Journaled::start(store, sealer, clock, dir, counters.clone())?;
        Ok(Self {
            sink: Sink::Journal(journaled),
            counters,
        })
    }

    /// Records `event`; returns once it is durable (see the module's two ways).
    pub async fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        match &self.sink {
            Sink::Direct(tx) => {
                let (done, answer) = oneshot::channel();
                tx.send(Pending { event, done })
                    .await
                    .map_err(|_| AuditError::Stopped)?;
                answer.await.map_err(|_| AuditError::Stopped)?.map(|_| ())
            }
            Sink::Journal(j) => j.record(event),
        }
    }

    /// Waits until every record written so far is in the database (at once for the
    /// direct writer; the journaled one drains now instead of at its next interval).
    /// Fails when the database refuses the records.
    pub async fn flush(&self) -> Result<(), AuditError> {
        match &self.sink {
            Sink::Direct(_) => Ok(()),
            Sink::Journal(j) => j.flush().await,
        }
    }

    /// Stops a journaled writer: drains it, then deletes its journal once every record
    /// is in the database (otherwise the journal stays, for the next start to recover).
    /// Later records fail with [`AuditError::Stopped`]. Nothing to do for the direct
    /// writer.
    pub async fn close(&self) -> Result<(), AuditError> {
        match &self.sink {
            Sink::Direct(_) => Ok(()),
            Sink::Journal(j) => j.close().await,
        }
    }

    /// The writer's counters.
    pub fn health(&self) -> AuditHealth {
        let c = &self.counters;
        AuditHealth {
            written: c.written.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            last_write: c.last_write.load(Ordering::Relaxed),
            last_failure: c.last_failure.load(Ordering::Relaxed),
            journaled: c.journaled.load(Ordering::Relaxed),
            head_seq: c.head_seq.load(Ordering::Relaxed),
            backlog: match &self.sink {
                Sink::Direct(tx) => QUEUE.saturating_sub(tx.capacity()),
                Sink::Journal(j) => j.backlog(),
            },
        }
    }

    /// Whether the last append to the database failed (and none succeeded since): new
    /// operations should not start where the trail must be complete.
    pub fn failing(&self) -> bool {
        self.counters.failing()
    }
}

async fn write_loop(
    store: Arc<dyn AuditStore>,
    sealer: AuditSealer,
    clock: Arc<dyn Clock>,
    mut rx: mpsc::Receiver<Pending>,
    counters: Arc<Counters>,
) {
    // The events move into `events` (no copy); `batch` keeps who to answer, in order.
    let mut batch: Vec<oneshot::Sender<Result<u64, AuditError>>> = Vec::with_capacity(MAX_BATCH);
    let mut events: Vec<AuditEvent> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        events.clear();
        let mut next = Some(first);
        while let Some(p) = next.take() {
            events.push(p.event);
            batch.push(p.done);
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let outcome = store.append_audit(&sealer, &events).await;
        let now = clock.now_millis();
        match outcome {
            Ok(head) => {
                let n = batch.len() as u64;
                counters.committed(n, head.seq, now);
                let first_seq = head.seq + 1 - n;
                for (i, done) in batch.drain(..).enumerate() {
                    let _ = done.send(Ok(first_seq + i as u64));
                }
            }
            Err(e) => {
                counters.failed(now);
                tracing::error!(error = %e, records = batch.len(), "audit append failed");
                let err = AuditError::Unavailable(e.to_string());
                for done in batch.drain(..) {
                    let _ = done.send(Err(err.clone()));
                }
            }
        }
    }
}
