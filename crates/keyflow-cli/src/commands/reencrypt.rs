//! `keyflow reencrypt` and `keyflow migrate`: the re-encryption engine
//! (`keyflow-reencrypt`) over an application's table, with a progress bar and a census.
//!
//! The application's database is `--target-url` (alias `--db`, env `KEYFLOW_TARGET_URL`):
//! `--database-url` is already the global keystore flag, and clap cannot give one long
//! name two meanings. The environment variable keeps a PostgreSQL password out of `ps`.

use clap::Args;
use indicatif::ProgressBar;
use keyflow_kms::{EncryptionService, KeyStatus, VersionFilter};
use keyflow_reencrypt::{
    backend, engine, ContextSpec, EncryptPlaintext, Operation, Progress, Report, Rewrap,
    RunOptions, TableSpec, ValueTransform,
};
use serde_json::json;

use super::trail::Trail;
use super::{open_audited, parse_context, parse_purpose};
use crate::config::Config;
use crate::error::CliError;

/// Arguments shared by `reencrypt` and `migrate`.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The application's database (not the keystore): sqlite:PATH or postgres://…
    #[arg(
        long = "target-url",
        visible_alias = "db",
        env = "KEYFLOW_TARGET_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub target_url: String,
    /// The table ([A-Za-z_][A-Za-z0-9_]*, case-sensitive).
    #[arg(long)]
    pub table: String,
    /// The column holding the values.
    #[arg(long)]
    pub column: String,
    /// A unique key column used to page through the table and guard each update.
    #[arg(long, default_value = "id")]
    pub id_column: String,
    /// Rows per batch (one read and one transaction each).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// Decide everything and write nothing; print the census of what would happen.
    #[arg(long)]
    pub dry_run: bool,
    /// Discard a saved checkpoint and start again from the first row.
    #[arg(long)]
    pub restart: bool,
    /// Context pair bound into every value (repeatable), as given at encryption.
    #[arg(long = "context", value_name = "K=V")]
    pub context: Vec<String>,
    /// Also bind `KEY=<row id>` into each value's context.
    #[arg(long, value_name = "KEY")]
    pub context_id_key: Option<String>,
    /// Print the census as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `keyflow reencrypt`.
#[derive(Debug, Args)]
pub struct ReencryptArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Convert values of the legacy Node.js system (packages; with --fields, field
    /// documents) into KeyFlow ciphertexts; KeyFlow values are kept
    /// (docs/legacy-migration.md).
    #[arg(long)]
    pub from_legacy: bool,
    /// With --from-legacy: the column holds JSON documents with `_encrypted` metadata.
    #[arg(long, requires = "from_legacy")]
    pub fields: bool,
}

/// `keyflow migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Key ring to encrypt under.
    #[arg(long)]
    pub purpose: String,
    /// Deterministic encryption (equal plaintexts give equal ciphertexts).
    #[arg(long)]
    pub deterministic: bool,
}

/// An indicatif bar on stderr with rows/s; hidden when stderr is not a terminal.
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Self {
        Self(super::progress::row_bar("  eta {eta}"))
    }
}

impl Progress for Bar {
    fn start(&self, total: u64, done: u64) {
        self.0.set_length(total.max(done));
        self.0.set_position(done);
        self.0.reset_eta();
    }
    fn advance(&self, rows: u64) {
        self.0.inc(rows);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

fn context_spec(args: &TargetArgs) -> Result<ContextSpec, CliError> {
    Ok(ContextSpec {
        fixed: parse_context(&args.context)?,
        id_key: args.context_id_key.clone(),
    })
}

fn options(args: &TargetArgs, operation: Operation) -> RunOptions {
    RunOptions {
        operation,
        batch: args.batch as usize,
        dry_run: args.dry_run,
        restart: args.restart,
    }
}

/// Validates names and connects before the keystore is opened: a typo fails fast.
async fn connect(args: &TargetArgs) -> Result<Box<dyn keyflow_reencrypt::Backend>, CliError> {
    let spec = TableSpec::new(&args.table, &args.column, &args.id_column)?;
    Ok(backend::connect(&args.target_url, &spec).await?)
}

async fn execute(
    service: &EncryptionService,
    db: &dyn keyflow_reencrypt::Backend,
    transform: &mut dyn ValueTransform,
    args: &TargetArgs,
    operation: Operation,
) -> Result<Report, CliError> {
    let bar = Bar::new();
    let result = engine::run(db, transform, &options(args, operation), &bar).await;
    bar.finish();
    // Usage counts are persisted even when the run stopped on an error.
    let flushed = service.ring().flush_usage().await;
    let report = result?;
    flushed?;
    Ok(report)
}

/// Prints the census; fails (exit 1) when rows could not be processed.
async fn print_report(
    service: &EncryptionService,
    report: &Report,
    args: &TargetArgs,
    verb: &str,
) -> Result<(), CliError> {
    let active: Vec<String> = service
        .keys()
        .list(&VersionFilter {
            purpose: None,
            status: Some(KeyStatus::Active),
        })
        .await?
        .iter()
        .map(|r| keyflow_kms::keyflow_core::key_id(&r.purpose, r.version))
        .collect();
    let c = &report.census;
    let stale: u64 = c
        .by_key_version
        .iter()
        .filter(|(k, _)| !active.contains(k))
        .map(|(_, n)| n)
        .sum();
    if args.json {
        let out = json!({
            "table": args.table,
            "column": args.column,
            "dryRun": report.dry_run,
            "resumedAfter": report.resumed_after,
            "census": c,
            "rowsNotUnderActiveVersion": stale,
        });
        println!("{out}");
    } else {
        let mode = if report.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        };
        println!("{}.{}{mode}", args.table, args.column);
        if let Some(id) = &report.resumed_after {
            println!("  resumed after id {id}");
        }
        println!("  rows examined       {:>10}", c.rows);
        println!("  {verb:<19} {:>10}", c.rewritten);
        println!("  unchanged           {:>10}", c.unchanged);
        println!("  skipped             {:>10}", c.skipped_total());
        for (why, n) in &c.skipped {
            println!("    {n:>8}  {why}");
        }
        println!("  failed              {:>10}", c.failed_total());
        for (why, n) in &c.failed {
            println!("    {n:>8}  {why}");
        }
        // A few examples; `--json` lists up to 100.
        for f in c.failed_rows.iter().take(10) {
            println!("      id {}: {}", f.id, f.reason);
        }
        println!("  rows per key version:");
        for (key, n) in &c.by_key_version {
            let state = if active.contains(key) {
                "active"
            } else {
                "not active"
            };
            println!("    {key:<30} {n:>10}  ({state})");
        }
    }
    if stale > 0 && !report.dry_run {
        eprintln!(
            "keyflow: note: {stale} rows are under a key version that is not active \
             (a rotation happened during the run?): run the command again"
        );
    }
    match c.failed_total() {
        0 => Ok(()),
        n => Err(CliError::RowsFailed(n)),
    }
}

/// What a run does: its checkpoint operation, and how the summary names a value it
/// changed (or, in a dry run, would change).
struct Job {
    operation: Operation,
    did: &'static str,
    would: &'static str,
}

const REENCRYPT: Job = Job {
    operation: Operation::Reencrypt,
    did: "re-encrypted",
    would: "would re-encrypt",
};

const FROM_LEGACY: Job = Job {
    operation: Operation::FromLegacy,
    did: "converted",
    would: "would convert",
};

const MIGRATE: Job = Job {
    operation: Operation::Migrate,
    did: "encrypted",
    would: "would encrypt",
};

/// Runs, prints the census, and records the run with its census (never the target URL,
/// which may hold a password, nor any value of the table).
async fn run_audited(
    service: &EncryptionService,
    trail: &Trail,
    mut event: keyflow_kms::audit::AuditEvent,
    db: &dyn keyflow_reencrypt::Backend,
    transform: &mut dyn ValueTransform,
    args: &TargetArgs,
    job: &Job,
) -> Result<(), CliError> {
    let verb = if args.dry_run { job.would } else { job.did };
    let outcome = match execute(service, db, transform, args, job.operation).await {
        Ok(report) => {
            let c = &report.census;
            event.items = Some(c.rows);
            for key in c.by_key_version.keys() {
                let purpose = key.rsplit_once(":v").map_or(key.as_str(), |(p, _)| p);
                if !event.purposes.iter().any(|p| p == purpose) {
                    event.purposes.push(purpose.to_owned());
                }
            }
            // Row ids are the application's values (an id column may hold emails):
            // counts only, so the failed rows' ids and the resume point stay out.
            let mut census = json!(c);
            if let Some(m) = census.as_object_mut() {
                m.remove("failedRows");
            }
            event.detail = Some(json!({
                "table": args.table,
                "column": args.column,
                "dryRun": report.dry_run,
                "resumed": report.resumed_after.is_some(),
                "census": census,
            }));
            print_report(service, &report, args, verb).await
        }
        Err(e) => {
            event.detail = Some(json!({
                "table": args.table,
                "column": args.column,
                "dryRun": args.dry_run,
            }));
            Err(e)
        }
    };
    trail.conclude(event, outcome).await
}

/// `keyflow reencrypt`: rewrites every value not under its purpose's active version.
pub async fn reencrypt(config: &Config, args: &ReencryptArgs) -> Result<(), CliError> {
    let a = &args.target;
    let context = context_spec(a)?;
    let db = connect(a).await?;
    let (service, trail) = open_audited(config).await?;
    if args.from_legacy {
        return from_legacy(&service, &trail, &*db, context, args).await;
    }
    let mut transform = Rewrap::new(&service, context);
    let event = trail.event("reencrypt");
    run_audited(&service, &trail, event, &*db, &mut transform, a, &REENCRYPT).await
}

/// `keyflow reencrypt --from-legacy`: converts legacy packages or field documents.
async fn from_legacy(
    service: &EncryptionService,
    trail: &Trail,
    db: &dyn keyflow_reencrypt::Backend,
    context: ContextSpec,
    args: &ReencryptArgs,
) -> Result<(), CliError> {
    use keyflow_legacy::reencrypt::{Column, FromLegacy};
    let ring = keyflow_legacy::LegacyKeyring::load(service)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    if ring.is_empty() {
        return Err(CliError::Usage(
            "no legacy keys are imported: run `keyflow legacy import` first".into(),
        ));
    }
    let column = if args.fields {
        Column::Fields
    } else {
        Column::Packages
    };
    let mut transform = FromLegacy::new(service, &ring, column, context);
    let a = &args.target;
    let event = trail.event("reencrypt.from-legacy");
    run_audited(service, trail, event, db, &mut transform, a, &FROM_LEGACY).await
}

/// `keyflow migrate`: encrypts plaintext values in place; ciphertexts are kept.
pub async fn migrate(config: &Config, args: &MigrateArgs) -> Result<(), CliError> {
    let a = &args.target;
    let purpose = parse_purpose(&args.purpose)?;
    let context = context_spec(a)?;
    let db = connect(a).await?;
    let (service, trail) = open_audited(config).await?;
    let mut event = trail.event("migrate");
    event.purposes = vec![purpose.to_string()];
    let mut transform = EncryptPlaintext::new(&service, purpose, context, args.deterministic);
    run_audited(&service, &trail, event, &*db, &mut transform, a, &MIGRATE).await
}
