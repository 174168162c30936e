//! [`AuditLog`]: the writer every audited action goes through.
//!
//! Callers hand an event over and wait until it is durable. One task owns the writes:
//! it takes the first waiting event, then every other one already queued (up to
//! [`MAX_BATCH`]), appends them in one transaction and answers each caller. Concurrent
//! requests therefore share a commit (group commit) instead of paying one each, and no
//! caller is told "done" before its record is in the database.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{AuditEvent, AuditSealer, AuditStore};
use crate::clock::Clock;

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
    /// The chain head's sequence number after the last write.
    pub head_seq: u64,
    /// Events waiting for the writer.
    pub backlog: usize,
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    commits: AtomicU64,
    failures: AtomicU64,
    last_write: AtomicI64,
    last_failure: AtomicI64,
    head_seq: AtomicU64,
}

/// The audit writer. Cheap to clone; the writing task stops when every clone is gone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
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
        Self { tx, counters }
    }

    /// Records `event`; returns its sequence number once it is durable.
    pub async fn record(&self, event: AuditEvent) -> Result<u64, AuditError> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Pending { event, done })
            .await
            .map_err(|_| AuditError::Stopped)?;
        answer.await.map_err(|_| AuditError::Stopped)?
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
            head_seq: c.head_seq.load(Ordering::Relaxed),
            backlog: QUEUE.saturating_sub(self.tx.capacity()),
        }
    }

    /// Whether the last append failed (and none succeeded since): new operations should
    /// not start where the trail must be complete.
    pub fn failing(&self) -> bool {
        let c = &self.counters;
        c.last_failure.load(Ordering::Relaxed) > c.last_write.load(Ordering::Relaxed)
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
                counters.written.fetch_add(n, Ordering::Relaxed);
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters.head_seq.store(head.seq, Ordering::Relaxed);
                // `max(now, last_failure + 1)` keeps `failing()` right even when both
                // happen in the same millisecond.
                let last_failure = counters.last_failure.load(Ordering::Relaxed);
                counters
                    .last_write
                    .store(now.max(last_failure + 1), Ordering::Relaxed);
                let first_seq = head.seq + 1 - n;
                for (i, done) in batch.drain(..).enumerate() {
                    let _ = done.send(Ok(first_seq + i as u64));
                }
            }
            Err(e) => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                let last_write = counters.last_write.load(Ordering::Relaxed);
                counters
                    .last_failure
                    .store(now.max(last_write + 1), Ordering::Relaxed);
                tracing::error!(error = %e, records = batch.len(), "audit append failed");
                let err = AuditError::Unavailable(e.to_string());
                for done in batch.drain(..) {
                    let _ = done.send(Err(err.clone()));
                }
            }
        }
    }
}
