//! # keyflow-reencrypt
//!
//! The resumable, idempotent engine that rewrites a column of an application's SQL table
//! (SQLite or PostgreSQL): **re-encryption** after a key rotation (every value under a
//! non-active key version is rewrapped under the active one) and **migration** of
//! plaintext values (encrypted in place; values that are already KeyFlow ciphertexts
//! are kept).
//!
//! - keyset pagination by a unique id column, batches of [`DEFAULT_BATCH`] rows;
//! - one transaction per batch, holding the batch's updates *and* its checkpoint (table
//!   `keyflow_reencrypt_checkpoint` in the target database), so a killed run resumes
//!   exactly where its last commit stopped;
//! - optimistic concurrency: `UPDATE … WHERE id = ? AND column = <value read>` — an
//!   application write between our read and our write wins, and is never lost;
//! - a [`Census`]: rows per key version, skipped and failed rows with a reason (never a
//!   value);
//! - identifiers validated ([`Ident`]) and always quoted; values always bound.
//!
//! The per-row logic is a [`ValueTransform`]: [`Rewrap`] and [`EncryptPlaintext`] today;
//! JSON columns with selected fields (field-level encryption) plug in as another one.
//! Pure parts ([`census`], [`ident`], the planning in [`engine`]) do no I/O; database
//! access lives in [`backend`].
//!
//! ```no_run
//! # async fn demo(service: &keyflow_kms::EncryptionService) -> keyflow_reencrypt::Result<()> {
//! use keyflow_reencrypt::{backend, engine, ContextSpec, NoProgress, Operation, Rewrap, RunOptions, TableSpec};
//!
//! let spec = TableSpec::new("customers", "ssn", "id")?;
//! let db = backend::connect("sqlite:app.db", &spec).await?;
//! let mut rewrap = Rewrap::new(service, ContextSpec::default());
//! let report = engine::run(&*db, &mut rewrap, &RunOptions::new(Operation::Reencrypt), &NoProgress).await?;
//! println!("{} rows rewritten", report.census.rewritten);
//! # Ok(()) }
//! ```

pub mod backend;
pub mod census;
pub mod engine;
mod error;
pub mod ident;
pub mod transform;

pub use backend::{Backend, Operation, RowId, TableSpec};
pub use census::Census;
pub use engine::{NoProgress, Progress, Report, RunOptions, DEFAULT_BATCH};
pub use error::{Error, Result};
pub use ident::Ident;
pub use transform::{ContextSpec, EncryptPlaintext, Outcome, Rewrap, ValueTransform};
