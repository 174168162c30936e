//! `keyflow legacy import | convert`: bringing the legacy Node.js system's keys and
//! data into KeyFlow (docs/legacy-migration.md).
//!
//! Passwords come from `LEGACY_KEK_PASSWORD` (or a prompt) and `LEGACY_BACKUP_PASSWORD`
//! (or a prompt), never from flags. Output never contains key material.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use keyflow_fields::Binding;
use keyflow_kms::{Context, EncryptionService};
use keyflow_legacy::import::{Census, Outcome};
use keyflow_legacy::{backup, convert, envelope, keys, LegacyError, LegacyKek, LegacyKeyring};
use serde_json::{json, Value};

use super::backup::password_from_env_or_prompt;
use super::{open_audited, open_service, parse_context};
use crate::config::Config;
use crate::error::CliError;

/// The legacy KEK password.
pub const KEK_PASSWORD_ENV: &str = "LEGACY_KEK_PASSWORD";
/// The legacy backup password.
pub const BACKUP_PASSWORD_ENV: &str = "LEGACY_BACKUP_PASSWORD";
/// Largest PBKDF2 count accepted with --iterations (the legacy builds used 100,000 and
/// 210,000; a typo of a few zeros must not keep the command busy for hours).
const MAX_ITERATIONS: u32 = 10_000_000;
/// Largest input file read (key export, backup, KEK file) and largest stdin document.
const MAX_INPUT_BYTES: u64 = 64 << 20;

/// `keyflow legacy …`
#[derive(Debug, Subcommand)]
pub enum LegacyCommand {
    /// Import the legacy DEKs as read-only key versions, wrapped under KeyFlow's KEK.
    Import(ImportArgs),
    /// Convert legacy packages (or, with --fields, field documents) on stdin into KeyFlow
    /// ciphertexts under each purpose's active key.
    Convert(ConvertArgs),
}

/// `keyflow legacy import`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The legacy KEK file (`master.kek`, the old KEK_PATH).
    #[arg(long, value_name = "FILE")]
    pub kek_file: PathBuf,
    /// The `encryptionkeys` collection as `mongoexport` JSON lines.
    #[arg(long, value_name = "FILE")]
    pub keys: Option<PathBuf>,
    /// A legacy key backup (formats 1.0 and 2.0; password from LEGACY_BACKUP_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub backup: Option<PathBuf>,
    /// PBKDF2 iterations of the legacy files (default: try 100000, then 210000).
    #[arg(long)]
    pub iterations: Option<u32>,
    /// Check everything, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the census as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `keyflow legacy convert`
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// One item per line (otherwise stdin is one item).
    #[arg(long)]
    pub lines: bool,
    /// Print a JSON report with per-item results instead of one output per item.
    #[arg(long)]
    pub json: bool,
    /// Items are documents with `_encrypted` metadata (field-level), not packages.
    #[arg(long)]
    pub fields: bool,
    /// With --fields: bind each document to the id in this top-level member (as
    /// `keyflow fields decrypt --id-field` expects).
    #[arg(long, value_name = "NAME", requires = "fields")]
    pub id_field: Option<String>,
    /// Context pair bound into every ciphertext (repeatable).
    #[arg(long = "context", value_name = "K=V")]
    pub context: Vec<String>,
}

/// Dispatches a legacy command.
pub async fn run(config: &Config, cmd: &LegacyCommand) -> Result<(), CliError> {
    match cmd {
        LegacyCommand::Import(args) => import(config, args).await,
        LegacyCommand::Convert(args) => convert_items(config, args).await,
    }
}

/// A legacy error as the CLI reports it.
fn failed(e: LegacyError) -> CliError {
    match e {
        LegacyError::Kms(k) => CliError::Kms(k),
        other => CliError::Failed(other.to_string()),
    }
}

fn read_file(path: &PathBuf) -> Result<String, CliError> {
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?
        .take(MAX_INPUT_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    if text.len() as u64 > MAX_INPUT_BYTES {
        return Err(CliError::Usage(format!(
            "{}: larger than 64 MiB",
            path.display()
        )));
    }
    Ok(text)
}

async fn import(config: &Config, args: &ImportArgs) -> Result<(), CliError> {
    if args.keys.is_none() && args.backup.is_none() {
        return Err(CliError::Usage(
            "give --keys FILE and/or --backup FILE".into(),
        ));
    }
    if args
        .iterations
        .is_some_and(|n| !(1..=MAX_ITERATIONS).contains(&n))
    {
        return Err(CliError::Usage(format!(
            "--iterations must be 1..={MAX_ITERATIONS}"
        )));
    }
    // Every input is read and opened before the keystore is touched: a wrong password
    // or a damaged backup fails here, having changed nothing.
    let kek_text = read_file(&args.kek_file)?;
    let password = password_from_env_or_prompt(KEK_PASSWORD_ENV, "legacy KEK password", false)?;
    let (kek, kek_iterations) = LegacyKek::open(
        &kek_text,
        password.as_bytes(),
        &envelope::counts(args.iterations),
    )
    .map_err(failed)?;
    drop(password);
    let mut sources = Vec::new();
    if let Some(path) = &args.keys {
        let name = path.display().to_string();
        sources.push(keys::parse_key_documents(&read_file(path)?, &name));
    }
    let mut backup_info = None;
    if let Some(path) = &args.backup {
        let text = read_file(path)?;
        let pw = password_from_env_or_prompt(BACKUP_PASSWORD_ENV, "legacy backup password", false)?;
        let b = backup::open(
            &text,
            pw.as_bytes(),
            &envelope::counts_after(args.iterations, kek_iterations),
        )
        .map_err(failed)?;
        backup_info = Some((b.format, b.iterations));
        sources.push(b.entries);
    }
    let census = if args.dry_run {
        // A dry run writes nothing: not recorded.
        let service = open_service(config).await?;
        keyflow_legacy::import::import(&service, &kek, sources, true)
            .await
            .map_err(failed)?
    } else {
        let (service, trail) = open_audited(config).await?;
        let mut event = trail.event("legacy.import");
        let outcome = keyflow_legacy::import::import(&service, &kek, sources, false)
            .await
            .map_err(failed);
        if let Ok(c) = &outcome {
            event.items = Some(c.imported as u64);
            let mut purposes: Vec<String> = c
                .keys
                .iter()
                .filter(|k| k.outcome == Outcome::Imported)
                .filter_map(|k| k.purpose.clone())
                .collect();
            purposes.sort();
            purposes.dedup();
            event.purposes = purposes;
            event.detail = Some(json!({
                "imported": c.imported, "alreadyPresent": c.already_present,
                "unreadable": c.unreadable, "newActive": c.new_active,
            }));
        }
        trail.conclude(event, outcome).await?
    };
    print_census(&census, kek_iterations, backup_info, args.json)?;
    if census.unreadable > 0 {
        return Err(CliError::Failed(format!(
            "{} of {} legacy keys were not imported (reasons above); the others were{}",
            census.unreadable,
            census.found,
            if census.dry_run {
                " checked (dry run: nothing written)"
            } else {
                " imported"
            }
        )));
    }
    Ok(())
}

fn print_census(
    c: &Census,
    kek_iterations: u32,
    backup: Option<(backup::BackupFormat, u32)>,
    as_json: bool,
) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    if as_json {
        let mut v = serde_json::to_value(c).map_err(|e| CliError::Failed(e.to_string()))?;
        v["kekIterations"] = json!(kek_iterations);
        if let Some((format, n)) = backup {
            v["backup"] = json!({"format": format.as_str(), "iterations": n});
        }
        writeln!(out, "{v}")?;
        return Ok(out.flush()?);
    }
    writeln!(
        out,
        "legacy KEK file opened with PBKDF2 {kek_iterations} iterations"
    )?;
    if let Some((format, n)) = backup {
        writeln!(
            out,
            "backup format {} opened with PBKDF2 {n} iterations, checksum verified",
            format.as_str()
        )?;
    }
    for k in &c.keys {
        let at = match (&k.purpose, k.version) {
            (Some(p), Some(v)) => format!(" ({p} v{v})"),
            _ => String::new(),
        };
        let what = match k.outcome {
            Outcome::Imported if c.dry_run => "would import",
            Outcome::Imported => "imported",
            Outcome::AlreadyPresent => "already present",
            Outcome::Unreadable => "NOT IMPORTED",
        };
        let reason = k
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        writeln!(out, "  {}{at}: {what}{reason}", k.key_id)?;
    }
    for a in &c.new_active {
        let verb = if c.dry_run { "would create" } else { "created" };
        writeln!(
            out,
            "  {}: {verb} active version {} for new data (legacy versions decrypt only)",
            a.purpose, a.version
        )?;
    }
    writeln!(
        out,
        "{}keys found: {}, imported: {}, already present: {}, not imported: {}",
        if c.dry_run {
            "dry run (nothing written): "
        } else {
            ""
        },
        c.found,
        c.imported,
        c.already_present,
        c.unreadable
    )?;
    Ok(out.flush()?)
}

/// The document id of `doc` from its top-level member `field` (`{"$oid": …}` too).
fn document_id(doc: &Value, field: &str) -> Result<String, String> {
    match doc.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Object(o)) if o.get("$oid").is_some_and(Value::is_string) => {
            Ok(o["$oid"].as_str().unwrap_or_default().to_owned())
        }
        _ => Err(format!(
            "--id-field {field}: the document has no string or number id there"
        )),
    }
}

async fn convert_one(
    service: &EncryptionService,
    ring: &LegacyKeyring,
    args: &ConvertArgs,
    context: &Context,
    item: &str,
) -> Result<Value, String> {
    if !args.fields {
        return convert::convert_package(service, ring, item, context)
            .await
            .map(Value::String)
            .map_err(|e| e.to_string());
    }
    // serde's message gives a position, never the input's content.
    let doc: Value = serde_json::from_str(item).map_err(|e| format!("not JSON ({e})"))?;
    let binding = Binding {
        doc_id: args
            .id_field
            .as_deref()
            .map(|f| document_id(&doc, f))
            .transpose()?,
        context: context.clone(),
    };
    convert::convert_document(service, ring, doc, &binding)
        .await
        .map(|(d, _)| d)
        .map_err(|e| e.to_string())
}

async fn convert_items(config: &Config, args: &ConvertArgs) -> Result<(), CliError> {
    let context = parse_context(&args.context)?;
    let mut items = Vec::new();
    if args.lines {
        for (i, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line?;
            if !line.trim().is_empty() {
                items.push((i + 1, line));
            }
        }
    } else {
        let mut all = String::new();
        std::io::stdin()
            .lock()
            .take(MAX_INPUT_BYTES + 1)
            .read_to_string(&mut all)?;
        if all.len() as u64 > MAX_INPUT_BYTES {
            return Err(CliError::Usage("input is larger than 64 MiB".into()));
        }
        items.push((1, all));
    }
    let service = open_service(config).await?;
    let ring = LegacyKeyring::load(&service).await.map_err(failed)?;
    if ring.is_empty() {
        return Err(CliError::Usage(
            "no legacy keys are imported: run `keyflow legacy import` first".into(),
        ));
    }
    let mut out = std::io::stdout().lock();
    let (mut results, mut failed_items) = (Vec::new(), 0usize);
    for (line, item) in &items {
        let r = convert_one(&service, &ring, args, &context, item).await;
        if args.json {
            results.push(match &r {
                Ok(v) => json!({"line": line, "success": true, "data": v}),
                Err(m) => json!({"line": line, "success": false, "error": m}),
            });
        } else {
            match &r {
                // Strings print bare (a ciphertext), documents as one JSON line.
                Ok(Value::String(s)) => writeln!(out, "{s}")?,
                Ok(v) => writeln!(out, "{v}")?,
                // An empty line keeps output lines aligned with input lines.
                Err(m) => {
                    writeln!(out)?;
                    eprintln!("line {line}: {m}");
                }
            }
        }
        failed_items += usize::from(r.is_err());
    }
    service.ring().flush_usage().await?;
    if args.json {
        let report = json!({
            "total": items.len(), "converted": items.len() - failed_items,
            "failed": failed_items, "results": results,
        });
        writeln!(out, "{report}")?;
    }
    out.flush()?;
    if failed_items > 0 {
        return Err(CliError::Failed(format!(
            "{failed_items} of {} items could not be converted (reported by line)",
            items.len()
        )));
    }
    Ok(())
}
