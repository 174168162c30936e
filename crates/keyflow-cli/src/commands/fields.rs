//! `keyflow fields encrypt | decrypt` (JSON on stdin, JSON on stdout) and `keyflow scan`
//! (sensitive values in clear; a CI gate).

use std::io::{BufRead, Read, Write};

use clap::{Args, Subcommand};
use keyflow_fields::detect::{self, Finding};
use keyflow_fields::{
    decrypt_fields_with, encrypt_fields, Binding, DecryptOptions, EncryptOptions, FieldsError,
    SadPolicy, Selection, Selector,
};
use keyflow_kms::{EncryptionService, Purpose};
use serde_json::Value;

use super::{open_service, parse_context, parse_purpose};
use crate::config::Config;
use crate::error::CliError;

/// Largest single JSON document read from stdin (or line with `--lines`).
const MAX_DOCUMENT_BYTES: usize = 64 << 20;

/// `keyflow fields …`
#[derive(Debug, Subcommand)]
pub enum FieldsCommand {
    /// Encrypt fields of the JSON document on stdin; print the document.
    ///
    /// Selectors: `a.b`, `list[*].c`, `list[0]`, `obj.*`, `["odd.name"]`; names match in
    /// any naming style. Append `:deterministic` or `:blind_index[/BITS]` for a mode
    /// (default randomized). Sensitive authentication data (cvv, pin, track data) is
    /// always removed (or, with --sad reject, refused).
    Encrypt(EncryptArgs),
    /// Decrypt the KeyFlow ciphertexts of the JSON document on stdin; print the document.
    Decrypt(DecryptArgs),
}

/// Options shared by encrypt and decrypt.
#[derive(Debug, Args)]
pub struct Common {
    /// Fields, comma-separated selectors (repeatable). Decrypt: default every ciphertext.
    #[arg(long, value_name = "SELECTORS")]
    fields: Vec<String>,
    /// Document id bound into every value (a ciphertext moved to another document fails).
    #[arg(long, value_name = "DOCID", conflicts_with = "id_field")]
    id: Option<String>,
    /// Take each document's id from this member (with --lines, one id per line).
    #[arg(long, value_name = "PATH")]
    id_field: Option<String>,
    /// JSON lines: one document per line.
    #[arg(long)]
    lines: bool,
    /// Context pair bound into every value (repeatable).
    #[arg(long = "context", value_name = "K=V")]
    context: Vec<String>,
    /// Also bind each value to its array indexes (elements of one array cannot be
    /// swapped unnoticed); give it again to decrypt.
    #[arg(long)]
    bind_array_index: bool,
}

/// `keyflow fields encrypt`
#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// Key ring to use.
    #[arg(long)]
    purpose: String,
    /// Also encrypt every member whose name is on the purpose's lists.
    #[arg(long)]
    auto_detect: bool,
    /// Sensitive authentication data: strip (default) or reject.
    #[arg(long, value_name = "strip|reject", default_value = "strip")]
    sad: String,
    #[command(flatten)]
    common: Common,
}

/// `keyflow fields decrypt`
#[derive(Debug, Args)]
pub struct DecryptArgs {
    #[command(flatten)]
    common: Common,
}

/// `keyflow scan`
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// JSON lines: one document per line (findings say which line).
    #[arg(long, conflicts_with = "target_url")]
    lines: bool,
    /// Print findings as JSON (one object per finding, per line).
    #[arg(long, conflicts_with = "target_url")]
    json: bool,
    /// Scan an application's database instead of stdin: sqlite:PATH or postgres://…
    /// (its text and JSON columns; counts per column and detector, never values;
    /// recorded in the audit trail as `scan.database`; docs/discovery.md).
    #[arg(long = "target-url", value_name = "URL")]
    pub target_url: Option<String>,
    /// With --target-url: scan only this table (repeatable; default every table).
    #[arg(long = "table", value_name = "T", requires = "target_url")]
    pub tables: Vec<String>,
    /// With --target-url: rows read per page.
    #[arg(long, default_value_t = keyflow_discovery::DEFAULT_PAGE_SIZE, requires = "target_url",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub page_size: u32,
    /// With --target-url: the report as a table (text) or one JSON object (json).
    #[arg(long, value_enum, default_value_t = ScanFormat::Text, requires = "target_url")]
    pub format: ScanFormat,
}

/// How `keyflow scan --target-url` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScanFormat {
    /// A table.
    Text,
    /// One JSON object.
    Json,
}

fn usage(e: FieldsError) -> CliError {
    match e {
        FieldsError::InvalidSelector { .. }
        | FieldsError::InvalidOption(_)
        | FieldsError::NoDetectionList(_) => CliError::Usage(e.to_string()),
        FieldsError::Kms(k) => CliError::Kms(k),
        other => CliError::Failed(other.to_string()),
    }
}

fn selection(lists: &[String]) -> Result<Selection, CliError> {
    let mut sel = Selection::default();
    for list in lists {
        sel.fields
            .extend(Selection::parse_list(list).map_err(usage)?.fields);
    }
    Ok(sel)
}

/// The one JSON document on standard input (at most `MAX_DOCUMENT_BYTES`).
fn stdin_document() -> Result<Value, CliError> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut buf)?;
    parse_json(&buf, None)
}

/// Feeds each input document to `f` and prints what it returns; `f` gets the 1-based
/// line number with --lines. Errors are prefixed with the line.
async fn each_document<F, Fut>(lines: bool, mut f: F) -> Result<(), CliError>
where
    F: FnMut(Value) -> Fut,
    Fut: std::future::Future<Output = Result<Value, CliError>>,
{
    let mut out = std::io::stdout().lock();
    if !lines {
        let doc = stdin_document()?;
        let v = f(doc).await?;
        writeln!(out, "{v}")?;
        return Ok(out.flush()?);
    }
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let n = i + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let doc = parse_json(line.as_bytes(), Some(n))?;
        let v = f(doc).await.map_err(|e| at_line(e, n))?;
        writeln!(out, "{v}")?;
    }
    Ok(out.flush()?)
}

fn at_line(e: CliError, n: usize) -> CliError {
    match e {
        CliError::Usage(m) => CliError::Usage(format!("line {n}: {m}")),
        other => CliError::Failed(format!("line {n}: {other}")),
    }
}

fn parse_json(bytes: &[u8], line: Option<usize>) -> Result<Value, CliError> {
    let at = line.map(|n| format!("line {n}: ")).unwrap_or_default();
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(CliError::Usage(format!(
            "{at}input is larger than {} MiB",
            MAX_DOCUMENT_BYTES >> 20
        )));
    }
    // serde's message gives a position, never the input's content.
    serde_json::from_slice(bytes)
        .map_err(|e| CliError::Usage(format!("{at}input is not JSON ({e})")))
}

/// The binding of one document: `--id`, or the member named by `--id-field`.
fn binding_for(doc: &Value, common: &Common, base: &Binding) -> Result<Binding, CliError> {
    let Some(field) = &common.id_field else {
        return Ok(base.clone());
    };
    let sel: Selector = field.parse().map_err(usage)?;
    let hits = sel.matches(doc);
    let [path] = hits.as_slice() else {
        return Err(CliError::Usage(format!(
            "--id-field {field}: the document has {} such members (need exactly one)",
            hits.len()
        )));
    };
    let id = match path.get(doc) {
        Some(Value::String(s)) if keyflow_fields::document::is_ciphertext(s) => {
            return Err(CliError::Usage(format!(
                "--id-field {field}: the id is encrypted; keep the id field in clear"
            )))
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(CliError::Usage(format!(
                "--id-field {field}: the id must be a string or a number"
            )))
        }
    };
    Ok(Binding {
        doc_id: Some(id),
        context: base.context.clone(),
    })
}

fn base_binding(common: &Common) -> Result<Binding, CliError> {
    let b = Binding {
        doc_id: common.id.clone(),
        context: parse_context(&common.context)?,
    };
    b.validate().map_err(usage)?;
    Ok(b)
}

/// `keyflow fields …`
pub async fn run(config: &Config, cmd: &FieldsCommand) -> Result<(), CliError> {
    match cmd {
        FieldsCommand::Encrypt(args) => encrypt(config, args).await,
        FieldsCommand::Decrypt(args) => decrypt(config, args).await,
    }
}

async fn encrypt(config: &Config, args: &EncryptArgs) -> Result<(), CliError> {
    let purpose: Purpose = parse_purpose(&args.purpose)?;
    let mut sel = selection(&args.common.fields)?;
    sel.auto_detect = args.auto_detect;
    if sel.fields.is_empty() && !sel.auto_detect {
        return Err(CliError::Usage(
            "nothing to encrypt: give --fields and/or --auto-detect".into(),
        ));
    }
    if sel.auto_detect && keyflow_fields::names::lists_for_purpose(purpose.as_str()).is_none() {
        return Err(usage(FieldsError::NoDetectionList(purpose)));
    }
    let sad: SadPolicy = args.sad.parse().map_err(usage)?;
    let base = base_binding(&args.common)?;
    let service = open_service(config).await?;
    let result = each_document(args.common.lines, |doc| {
        let (service, sel, purpose, base) = (&service, &sel, &purpose, &base);
        async move {
            let options = EncryptOptions {
                binding: binding_for(&doc, &args.common, base)?,
                sad_policy: sad,
                bind_array_index: args.common.bind_array_index,
            };
            let (doc, report) = encrypt_fields(service, doc, sel, purpose, &options)
                .await
                .map_err(usage)?;
            if !report.stripped.is_empty() {
                // Paths only, never values.
                eprintln!(
                    "keyflow: warning: removed sensitive authentication data (PCI DSS 3.3.1): {}",
                    report.stripped.join(", ")
                );
            }
            Ok(doc)
        }
    })
    .await;
    service.ring().flush_usage().await?;
    result
}

async fn decrypt(config: &Config, args: &DecryptArgs) -> Result<(), CliError> {
    let sel = selection(&args.common.fields)?;
    let selectors = (!sel.fields.is_empty()).then(|| sel.selectors());
    let base = base_binding(&args.common)?;
    let service: EncryptionService = open_service(config).await?;
    each_document(args.common.lines, |doc| {
        let (service, selectors, base) = (&service, &selectors, &base);
        async move {
            let binding = binding_for(&doc, &args.common, base)?;
            let options = DecryptOptions {
                bind_array_index: args.common.bind_array_index,
                require_ciphertext: service.strict_mode(),
            };
            let (doc, _) =
                decrypt_fields_with(service, doc, selectors.as_deref(), &binding, &options)
                    .await
                    .map_err(usage)?;
            Ok(doc)
        }
    })
    .await
}

/// `keyflow scan`: prints `PATH<TAB>DETECTOR` (with `--lines`, `LINE:PATH<TAB>…`) for
/// each sensitive value in clear; exits 1 when it found any, 0 when clean, 2 on bad
/// input. Never prints a value.
pub fn scan(args: &ScanArgs) -> Result<(), CliError> {
    let mut findings: Vec<(Option<usize>, Finding)> = Vec::new();
    if args.lines {
        for (i, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let doc = parse_json(line.as_bytes(), Some(i + 1))?;
            findings.extend(detect::scan(&doc).into_iter().map(|f| (Some(i + 1), f)));
        }
    } else {
        let doc = stdin_document()?;
        findings.extend(detect::scan(&doc).into_iter().map(|f| (None, f)));
    }
    let mut out = std::io::stdout().lock();
    for (line, f) in &findings {
        if args.json {
            let mut v = serde_json::to_value(f).map_err(|e| CliError::Failed(e.to_string()))?;
            if let Some(n) = line {
                v["line"] = Value::from(*n);
            }
            writeln!(out, "{v}")?;
        } else {
            let list = f.list.map(|l| format!(" ({l})")).unwrap_or_default();
            match line {
                Some(n) => writeln!(out, "{n}:{}\t{}{list}", f.path, f.detector)?,
                None => writeln!(out, "{}\t{}{list}", f.path, f.detector)?,
            }
        }
    }
    out.flush()?;
    if findings.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "found {} sensitive value(s) in clear",
            findings.len()
        )))
    }
}
