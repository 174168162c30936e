//! `keyflow compliance`: the compliance report from the configured keystore and audit
//! trail, as `GET /compliance` computes it, without a running server. What only a
//! running server knows is taken from this environment's configuration instead: the
//! TLS it would serve (`KEYFLOW_TLS_CERT`, `KEYFLOW_TLS_KEY`,
//! `KEYFLOW_TLS_CIPHER_SUITES`), production mode, the audit policy; the audit chain's
//! last verification is the last `audit.verify` record.

use std::path::PathBuf;

use clap::Args;
use keyflow_compliance::AuditFacts;
use keyflow_kms::clock::{parse_rfc3339, Clock, SystemClock};
use keyflow_kms::{kek_provider, EncryptionService};
use keyflow_server::compliance::{self as gather, Deployment};
use keyflow_transport::TransportConfig;

use super::open_stores;
use crate::config::Config;
use crate::error::CliError;

/// `keyflow compliance`.
#[derive(Debug, Args)]
pub struct ComplianceArgs {
    /// json, markdown or html (one self-contained page).
    #[arg(long, default_value = "json", value_parser = ["json", "markdown", "html"])]
    pub format: String,
    /// Evaluate the time-dependent controls at this RFC 3339 instant (default now), e.g.
    /// to see what fails in 90 days.
    #[arg(long)]
    pub at: Option<String>,
    /// Write the report to this file instead of stdout.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
}

/// What `keyflow serve` would deploy with this environment: production mode, the TLS it
/// would serve (`tls` built from the same files and suites), HTTPS enforcement.
pub fn deployment(
    config: &Config,
    tls: Option<&gather::TlsServerConfig>,
    transport: &TransportConfig,
    journaled: bool,
    source: &str,
) -> Deployment {
    keyflow_server::launch::deployment(
        config.production,
        &super::serve::backend(&config.store),
        tls,
        transport,
        journaled,
        source,
    )
}

/// The TLS configuration `keyflow serve` would build from the environment, if any.
fn configured_tls() -> Result<Option<std::sync::Arc<gather::TlsServerConfig>>, CliError> {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
    match (var("KEYFLOW_TLS_CERT"), var("KEYFLOW_TLS_KEY")) {
        (Some(cert), Some(key)) => {
            let options = keyflow_server::tls::TlsOptions {
                request_client_certs: false,
                cipher_suites: var("KEYFLOW_TLS_CIPHER_SUITES")
                    .map(|s| s.split(',').map(str::to_owned).collect())
                    .unwrap_or_default(),
            };
            keyflow_server::tls::server_config_with(cert.as_ref(), key.as_ref(), &options)
                .map(Some)
                .map_err(|e| CliError::Config(e.to_string()))
        }
        (None, None) => Ok(None),
        _ => Err(CliError::Config(
            "set both KEYFLOW_TLS_CERT and KEYFLOW_TLS_KEY".into(),
        )),
    }
}

/// Builds, renders and writes the report.
pub async fn run(config: &Config, args: &ComplianceArgs) -> Result<(), CliError> {
    let now = SystemClock.now_millis();
    let at = match &args.at {
        None => now,
        Some(s) => parse_rfc3339(s.trim())
            .ok_or_else(|| CliError::Usage("--at: expected an RFC 3339 instant".into()))?,
    };
    let policy = keyflow_server::settings::audit_policy(
        config.production,
        std::env::var("KEYFLOW_AUDIT").ok().as_deref(),
        std::env::var("KEYFLOW_AUDIT_FAILURE").ok().as_deref(),
    )?;
    let transport = TransportConfig::from_env().map_err(|e| CliError::Config(e.to_string()))?;
    let tls = configured_tls()?;
    let deployment = deployment(
        config,
        tls.as_deref(),
        &transport,
        policy.enabled,
        "configuration",
    );

    let password = config.kek_password()?;
    let stores = open_stores(config).await?;
    let kek = kek_provider::unlock(&config.kek_path, &password, &*stores.keys).await?;
    let service = EncryptionService::new(stores.keys.clone(), kek, config.service_config());
    let head = stores.audit.audit_head().await?;
    let (routes_audited, routes_total) = gather::audited_routes();
    let audit = AuditFacts {
        enabled: policy.enabled,
        journaled: policy.enabled,
        fail_closed: policy.fail_closed,
        failing: false,
        head_seq: head.seq,
        routes_audited,
        routes_total,
        // The last `audit.verify` record (gather reads it).
        verification: None,
    };
    let snapshot = gather::gather(
        &service,
        Some(&*stores.audit),
        audit,
        &deployment,
        Some(&config.kek_path),
        (now, at),
    )
    .await?;
    let report = keyflow_compliance::evaluate(&snapshot);
    let text = match args.format.as_str() {
        "markdown" => keyflow_compliance::markdown::render(&report),
        "html" => keyflow_compliance::html::render(&report),
        _ => {
            let mut json = serde_json::to_string_pretty(&report)
                .map_err(|e| CliError::Config(format!("report encoding: {e}")))?;
            json.push('\n');
            json
        }
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, text.as_bytes()).map_err(|e| {
                CliError::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot write {}: {e}", path.display()),
                ))
            })?;
            eprintln!(
                "compliance report written: {} (overall {}: {} pass, {} warn, {} fail, {} not applicable)",
                path.display(),
                report.overall.as_str(),
                report.summary.pass,
                report.summary.warn,
                report.summary.fail,
                report.summary.not_applicable
            );
        }
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(())
}
