//! `keyflow scan --target-url …`: data discovery over an application's database
//! (`keyflow-discovery`), with a progress bar, a report, and an audit record.
//!
//! The record (operation `scan.database`, docs/discovery.md) is what `/compliance`
//! shows as the last discovery scan. It is sealed under the KEK like every CLI record,
//! so the scan opens the keystore as other audited commands do. Where no keystore is
//! configured (no KEK file), the scan still runs and says on stderr that it was not
//! recorded: discovery is useful before KeyFlow is set up, and an unsealed record
//! would be one anyone could forge.

use std::io::Write;

use indicatif::ProgressBar;
use keyflow_discovery::{Plan, Progress, ScanOptions, ScanReport, Target};
use serde_json::json;

use super::fields::{ScanArgs, ScanFormat};
use super::open_trail;
use super::trail::Trail;
use crate::config::Config;
use crate::error::CliError;

/// The audit operation of a database scan (read by `/compliance`).
pub const SCAN_DATABASE: &str = "scan.database";

/// An indicatif bar on stderr (rows done / total, rows/s); hidden unless stderr is a
/// terminal.
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Self {
        Self(super::progress::row_bar(""))
    }
}

impl Progress for Bar {
    fn start(&self, total_rows: u64) {
        self.0.set_length(total_rows);
        self.0.set_position(0);
    }
    fn advance(&self, rows: u64) {
        self.0.inc(rows);
    }
}

fn discovery_error(e: keyflow_discovery::Error) -> CliError {
    if e.is_usage() {
        CliError::Usage(e.to_string())
    } else {
        CliError::Failed(e.to_string())
    }
}

/// The trail to record in, or `None` (with the reason) when no keystore is set up.
async fn trail(config: &Config) -> Result<Result<Trail, String>, CliError> {
    if !config.kek_path.is_file() {
        return Ok(Err(format!(
            "no KeyFlow keystore is configured (no KEK file at {})",
            config.kek_path.display()
        )));
    }
    let (_, trail) = open_trail(config).await?;
    Ok(Ok(trail))
}

/// `keyflow scan --target-url URL [--table T …] [--page-size N] [--format text|json]`:
/// exit 0 when no clear sensitive value was found, 1 when some were (a CI gate, as
/// the stdin scan), 2 for bad arguments (URL, table names).
pub async fn run(config: &Config, args: &ScanArgs) -> Result<(), CliError> {
    let url = args.target_url.as_deref().unwrap_or_default();
    // The target and its catalog first: a typo fails fast and is not recorded.
    let target = Target::connect(url).await.map_err(discovery_error)?;
    let options = ScanOptions {
        tables: args.tables.clone(),
        page_size: args.page_size,
    };
    let plan = target.plan(&options).await.map_err(discovery_error)?;
    let trail = trail(config).await?;

    let bar = Bar::new();
    let scanned = target.scan(&plan, &bar).await;
    bar.0.finish_and_clear();
    // Printed before the record is written, as `reencrypt` does; a failure to print
    // is reported after the record, so a scan that ran is always recorded.
    let printed = scanned
        .as_ref()
        .ok()
        .map(|report| print(report, args.format, trail.is_ok()));
    let outcome = match &trail {
        Ok(trail) => {
            let mut event = trail.event(SCAN_DATABASE);
            let (rows, detail) = match &scanned {
                Ok(report) => (report.rows(), report.audit_details()),
                Err(e) => (
                    0,
                    json!({ "scope": scope(&target, &plan), "error": e.code() }),
                ),
            };
            event.items = Some(rows);
            event.detail = Some(detail);
            trail
                .conclude(event, scanned.map_err(discovery_error))
                .await
        }
        Err(_) => scanned.map_err(discovery_error),
    };
    let report = outcome?;
    printed.transpose()?;
    // One line on stderr: the note, or the error carrying it.
    let unrecorded = trail
        .as_ref()
        .err()
        .map(|why| format!("this scan was not recorded in the audit trail: {why}"));
    match (report.clear_values(), unrecorded) {
        (0, None) => Ok(()),
        (0, Some(note)) => {
            eprintln!("keyflow: note: {note}");
            Ok(())
        }
        (n, note) => Err(CliError::Failed(format!(
            "found {n} sensitive value(s) in clear in the target database{}",
            note.map(|n| format!(" ({n})")).unwrap_or_default()
        ))),
    }
}

fn scope(target: &Target, plan: &Plan) -> serde_json::Value {
    json!({
        "backend": target.backend(),
        "tables": plan.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
    })
}

fn print(report: &ScanReport, format: ScanFormat, recorded: bool) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match format {
        ScanFormat::Json => {
            let mut v = json!(report);
            v["rows"] = json!(report.rows());
            v["columns"] = json!(report.columns());
            v["clearValues"] = json!(report.clear_values());
            v["encryptedValues"] = json!(report.encrypted_values());
            v["findings"] = json!(report.findings());
            v["recorded"] = json!(recorded);
            writeln!(out, "{v}")?;
        }
        ScanFormat::Text => {
            writeln!(
                out,
                "{} ({}): {} tables, {} columns, {} rows",
                report.target,
                report.backend,
                report.tables.len(),
                report.columns(),
                report.rows()
            )?;
            let findings = report.findings();
            if findings.is_empty() {
                writeln!(out, "no clear sensitive values found")?;
            } else {
                let width = findings
                    .iter()
                    .map(|f| f.table.len() + f.column.len() + 1)
                    .max()
                    .unwrap_or(0)
                    .max("TABLE.COLUMN".len());
                writeln!(
                    out,
                    "{:<width$}  {:<8}  {:>10}",
                    "TABLE.COLUMN", "DETECTOR", "CLEAR"
                )?;
                for f in &findings {
                    let name = format!("{}.{}", f.table, f.column);
                    writeln!(out, "{name:<width$}  {:<8}  {:>10}", f.detector, f.count)?;
                }
                writeln!(out, "clear sensitive values: {}", report.clear_values())?;
            }
            writeln!(
                out,
                "KeyFlow ciphertexts (not counted): {}",
                report.encrypted_values()
            )?;
        }
    }
    Ok(out.flush()?)
}
