//! The run loop: keyset pagination, per-row transform, one transaction per batch with
//! its checkpoint, progress, census. Database details are behind [`Backend`], value
//! details behind [`ValueTransform`].

use crate::backend::{Backend, Cell, Checkpoint, Operation, Row, RowId, Update};
use crate::census::{settle, Census, Decision, SkipReason};
use crate::error::Result;
use crate::transform::{Outcome, ValueTransform};

/// Default rows per batch (one read, one transaction).
pub const DEFAULT_BATCH: usize = 1000;

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Which checkpoint the run uses.
    pub operation: Operation,
    /// Rows per batch (at least 1).
    pub batch: usize,
    /// Read and decide everything, write nothing (not even a checkpoint). A dry run
    /// ignores any saved checkpoint and reports on the whole table.
    pub dry_run: bool,
    /// Discard a saved checkpoint and start from the first row.
    pub restart: bool,
}

impl RunOptions {
    /// Defaults for `operation`: batches of [`DEFAULT_BATCH`], real run, resume.
    pub fn new(operation: Operation) -> Self {
        Self {
            operation,
            batch: DEFAULT_BATCH,
            dry_run: false,
            restart: false,
        }
    }
}

/// Receives progress; the CLI draws a bar, libraries may ignore it.
pub trait Progress: Send + Sync {
    /// The run starts: `total` rows in the table, `done` already covered by a checkpoint.
    fn start(&self, total: u64, done: u64);
    /// `rows` more rows were processed.
    fn advance(&self, rows: u64);
    /// The run ended.
    fn finish(&self);
}

/// A [`Progress`] that shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: u64, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Whole-table census (including the part done before a resume).
    pub census: Census,
    /// Nothing was written.
    pub dry_run: bool,
    /// The run continued from this checkpoint.
    pub resumed_after: Option<RowId>,
    /// Batches committed by this run.
    pub batches_written: u64,
}

/// Runs `transform` over every row of the backend's table.
///
/// Each batch: read `batch` rows after the last id (keyset pagination, so cost per batch
/// is constant), decide each row, then — in one transaction — write the changed values
/// with `WHERE id = ? AND column = <value read>` (a concurrent application write makes
/// the row's update a no-op, reported as skipped) and save the checkpoint. Batches with
/// nothing to write write nothing, so a second run is read-only. A finished run deletes
/// its checkpoint.
pub async fn run(
    backend: &dyn Backend,
    transform: &mut dyn ValueTransform,
    options: &RunOptions,
    progress: &dyn Progress,
) -> Result<Report> {
    let op = options.operation;
    let batch = options.batch.max(1);
    if options.restart && !options.dry_run {
        backend.clear_checkpoint(op).await?;
    }
    let saved = if options.dry_run || options.restart {
        None
    } else {
        backend.load_checkpoint(op).await?
    };
    let resumed_after = saved.as_ref().map(|c| c.last_id.clone());
    let mut census = saved.map(|c| c.census).unwrap_or_default();
    let mut after = resumed_after.clone();
    let mut wrote_checkpoint = resumed_after.is_some();
    let mut batches_written = 0;

    progress.start(backend.count_rows().await?, census.rows);
    loop {
        let rows = backend.fetch(after.as_ref(), batch).await?;
        let Some(last) = rows.last().map(|r| r.id.clone()) else {
            break;
        };
        let (planned, updates) = plan_batch(&rows, transform, options.dry_run).await?;
        if updates.is_empty() || options.dry_run {
            for (row, decision) in rows.iter().zip(&planned) {
                census.record(&row.id, decision);
            }
        } else {
            let base = &census;
            let plan = |written: &[bool]| -> Result<Checkpoint> {
                let mut next = base.clone();
                record_settled(&mut next, &rows, &planned, written);
                Ok(Checkpoint {
                    last_id: last.clone(),
                    census: next,
                })
            };
            let saved = backend.apply(op, &updates, &plan).await?;
            census = saved.census;
            wrote_checkpoint = true;
            batches_written += 1;
        }
        progress.advance(rows.len() as u64);
        after = Some(last);
        if rows.len() < batch {
            break;
        }
    }
    if wrote_checkpoint && !options.dry_run {
        backend.clear_checkpoint(op).await?;
    }
    progress.finish();
    Ok(Report {
        census,
        dry_run: options.dry_run,
        resumed_after,
        batches_written,
    })
}

/// Decides every row of a batch; returns the decisions (in row order) and the writes.
async fn plan_batch(
    rows: &[Row],
    transform: &mut dyn ValueTransform,
    dry_run: bool,
) -> Result<(Vec<Decision>, Vec<Update>)> {
    let mut planned = Vec::with_capacity(rows.len());
    let mut updates = Vec::new();
    for row in rows {
        let decision = match &row.value {
            Cell::Null => Decision::Skipped(SkipReason::Null),
            Cell::NotText => Decision::Failed("value is not text".into()),
            Cell::Text(v) => match transform.transform(&row.id, v, dry_run).await? {
                Outcome::Keep { key_id } => Decision::Unchanged { key_id },
                Outcome::Fail { reason } => Decision::Failed(reason),
                Outcome::Write { value, key_id } => {
                    if !dry_run {
                        updates.push(Update {
                            id: row.id.clone(),
                            old: v.clone(),
                            new: value,
                        });
                    }
                    Decision::Rewrite { key_id }
                }
            },
        };
        planned.push(decision);
    }
    Ok((planned, updates))
}

/// Records a batch whose updates were applied as `written` says (one flag per planned
/// rewrite, in row order).
fn record_settled(census: &mut Census, rows: &[Row], planned: &[Decision], written: &[bool]) {
    let mut flags = written.iter();
    for (row, decision) in rows.iter().zip(planned) {
        let final_decision = match decision {
            Decision::Rewrite { .. } => settle(decision, flags.next().copied().unwrap_or(false)),
            other => other.clone(),
        };
        census.record(&row.id, &final_decision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_batch() {
        let rows: Vec<Row> = (1..=4)
            .map(|i| Row {
                id: RowId::Int(i),
                value: Cell::Text(String::new()),
            })
            .collect();
        let rw = || Decision::Rewrite {
            key_id: "p:v2".into(),
        };
        let planned = vec![
            rw(),
            Decision::Unchanged {
                key_id: "p:v2".into(),
            },
            rw(),
            Decision::Failed("decryption failed".into()),
        ];
        let mut c = Census::default();
        record_settled(&mut c, &rows, &planned, &[true, false]);
        assert_eq!((c.rows, c.rewritten, c.unchanged), (4, 1, 1));
        assert_eq!(c.by_key_version["p:v2"], 2);
        assert_eq!(c.skipped_total(), 1);
        assert_eq!(c.failed_total(), 1);
    }
}
