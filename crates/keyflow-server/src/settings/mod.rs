//! What `keyflow serve` runs with: its flags and variables ([`ServeArgs`], a clap `Args`
//! struct the CLI flattens into its `serve` subcommand), what the rest of the process
//! already resolved ([`Site`]), and the one value both resolve into ([`Settings`]),
//! which [`crate::launch::start`] assembles the server from.
//!
//! Every refusal of a bad value happens in [`Settings::resolve`], before the keystore is
//! opened or a log line about serving is written; the messages name the variable.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use keyflow_kms::kek_provider::KekPassword;
use keyflow_kms::keyflow_core::{OsRng, SecureRandom};
use keyflow_kms::{KmsError, ServiceConfig, StoreError};
use keyflow_transport::TransportConfig;
use zeroize::Zeroizing;

use crate::alerts::AlertConfig;
use crate::audit::AuditPolicy;
use crate::min_rate::MinRate;
use crate::serve::ServeOptions;
use crate::state::Limits;

/// Environment variable: seconds between the server's audit chain verification passes.
pub const VERIFY_SECS_ENV: &str = "KEYFLOW_AUDIT_VERIFY_SECS";
/// Environment variable: days of audit records kept (the server's daily prune; also
/// `keyflow audit prune`'s default `--older-than-days`).
pub const RETENTION_DAYS_ENV: &str = "KEYFLOW_AUDIT_RETENTION_DAYS";

mod args;

pub use args::{ServeArgs, TransportArgs};

/// Why the server did not start (or stopped with an error). The CLI maps each variant
/// to its exit code: [`ServeError::Config`] is a usage error (2), the others failures (1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A flag, variable or file of the configuration cannot be used.
    #[error("{0}")]
    Config(String),
    /// Something the server needs failed (the message says what).
    #[error("{0}")]
    Failed(String),
    /// The key hierarchy refused (KEK unlock, password strength…).
    #[error("{0}")]
    Kms(#[from] KmsError),
    /// The keystore failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// An I/O error (listening socket, data directory).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<keyflow_kms::keyflow_core::Error> for ServeError {
    fn from(e: keyflow_kms::keyflow_core::Error) -> Self {
        ServeError::Kms(e.into())
    }
}

fn config_error(e: impl std::fmt::Display) -> ServeError {
    ServeError::Config(e.to_string())
}

/// The KEK password's text as the caller found it (`KEK_PASSWORD`,
/// `KEYFLOW_KEK_PASSWORD_FILE`, or a dev server's generated file). Zeroized on drop;
/// `Debug` prints no part of it.
pub struct PasswordText(Zeroizing<String>);

impl PasswordText {
    /// Wraps the text.
    pub fn new(text: Zeroizing<String>) -> Self {
        Self(text)
    }

    /// The text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PasswordText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordText(<redacted>)")
    }
}

/// Which database the keystore is (for `/compliance`; the caller opens it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres,
}

/// What the process resolved before `serve` (the CLI's global options and environment):
/// shared with every other command, so not part of [`ServeArgs`].
#[derive(Debug)]
pub struct Site {
    /// Everything but the password (kept in [`Settings::site`]).
    pub facts: SiteFacts,
    /// The KEK password, or why it could not be read (a configuration error unless
    /// dev mode generates one).
    pub kek_password: Result<PasswordText, String>,
}

/// Everything the server is started with, resolved once ([`Settings::resolve`]).
#[derive(Debug)]
pub struct Settings {
    /// What the process resolved before `serve`.
    pub site: SiteFacts,
    /// Development mode (`--dev`): creates the KEK and an admin token when missing.
    pub dev: bool,
    /// The address to listen on.
    pub listen: String,
    /// The KEK password.
    pub password: KekPassword,
    /// The password's text, for retired KEK files' audit keys (`None`: not configured,
    /// dev mode generated it).
    pub retired_password: Option<PasswordText>,
    /// The TLS configuration (`None`: plain HTTP behind a trusted proxy, or development).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The transport layers' configuration (its nonce store is set at start).
    pub transport: TransportConfig,
    /// Request limits.
    pub limits: Limits,
    /// Requests in progress beyond which the server answers 503.
    pub max_concurrency: usize,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// The accept loop's limits (grace period: 20 s).
    pub connections: ServeOptions,
    /// Scheduler pass interval (`None`: this instance never runs the scheduler).
    pub scheduler_every: Option<Duration>,
    /// How often the key cache is revalidated.
    pub revalidate_every: Duration,
    /// Cached keys are used only while revalidated within this.
    pub max_staleness: Duration,
    /// The audit policy.
    pub audit: AuditPolicy,
    /// Interval of the audit chain verification.
    pub audit_verify_every: Duration,
    /// Audit retention, days (`None`: kept).
    pub retention_days: Option<u32>,
    /// Alert thresholds and webhook.
    pub alerts: AlertConfig,
    /// Transition reads of legacy data.
    pub legacy_reads: bool,
}

/// What the process resolved before `serve`, but the password (which becomes
/// [`Settings::password`]).
#[derive(Debug, Clone)]
pub struct SiteFacts {
    /// Production (`KEYFLOW_ENV`/`NODE_ENV`, [`keyflow_transport::Environment`]).
    pub production: bool,
    /// The data directory (dev mode keeps its password and certificate there).
    pub data_dir: PathBuf,
    /// The KEK file.
    pub kek_path: PathBuf,
    /// Where the server keeps its audit journal.
    pub audit_journal_dir: PathBuf,
    /// The service's settings (strict mode, cache TTL); the server adds its own.
    pub service: ServiceConfig,
    /// The keystore's kind.
    pub backend: Backend,
}

impl Settings {
    /// Resolves `args` against `site`, refusing anything unusable (in the order the
    /// checks always ran, so the first problem named is the same). In dev mode this
    /// also creates the generated KEK password and the self-signed certificate when
    /// missing.
    pub fn resolve(args: &ServeArgs, site: Site) -> Result<Self, ServeError> {
        let Site {
            facts,
            kek_password,
        } = site;
        let production = facts.production;
        if args.dev && production {
            return Err(ServeError::Config("--dev is refused in production".into()));
        }
        let audit = audit_policy(
            production,
            args.audit.as_deref(),
            args.audit_failure.as_deref(),
        )?;
        let (audit_verify_every, retention_days) = audit_upkeep_settings(
            args.audit_verify_secs.as_deref(),
            args.audit_retention_days.as_deref(),
        )?;
        // KEYFLOW_ALERT_* (thresholds, windows, webhook URL): refused here when unusable.
        let alerts = AlertConfig::from_env().map_err(config_error)?;
        let configured =
            |text: &PasswordText| KekPassword::new(text.expose().to_owned(), production);
        let password = if args.dev {
            match kek_password.as_ref().ok().map(configured) {
                Some(Ok(p)) => p,
                _ => dev_password(&facts.data_dir)?,
            }
        } else {
            let text = kek_password
                .as_ref()
                .map_err(|e| ServeError::Config(e.clone()))?;
            configured(text)?
        };
        let mut transport = args.transport.resolve().map_err(config_error)?;
        if production {
            // Key management must be signed in production.
            transport.integrity_required_prefixes = vec!["/api/encryption/keys".into()];
        }
        let tls = tls_config(args, &facts.data_dir, &transport, production)?;
        let max_staleness = Duration::from_secs(args.cache_max_staleness_secs);
        let revalidate_every = Duration::from_millis(args.revalidate_ms);
        if max_staleness <= revalidate_every {
            return Err(ServeError::Config(
                "KEYFLOW_CACHE_MAX_STALENESS_SECS must exceed the revalidation interval".into(),
            ));
        }
        Ok(Self {
            site: facts,
            dev: args.dev,
            listen: args.listen.clone(),
            password,
            retired_password: kek_password.ok(),
            tls,
            transport,
            limits: Limits {
                json_body_bytes: args.max_body_bytes,
                file_body_bytes: args.max_file_bytes,
                // Bounded by the argument parser (at most 2^20).
                file_streams: usize::try_from(args.max_file_streams).unwrap_or(usize::MAX),
                file_idle: Duration::from_secs(args.file_idle_secs),
                ..Limits::default()
            },
            max_concurrency: args.max_concurrency,
            request_timeout: Duration::from_secs(args.request_timeout_secs),
            connections: ServeOptions {
                // Bounded by the argument parser (at most 2^24 and 2^20).
                max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
                max_handshakes: usize::try_from(args.max_tls_handshakes).unwrap_or(usize::MAX),
                idle_timeout: Duration::from_secs(args.idle_timeout_secs),
                min_body_rate: MinRate {
                    bytes: args.body_min_bytes,
                    window: Duration::from_secs(args.body_window_secs),
                },
                grace: Duration::from_secs(20),
                ..ServeOptions::default()
            },
            scheduler_every: (args.scheduler_interval_secs > 0)
                .then(|| Duration::from_secs(args.scheduler_interval_secs)),
            revalidate_every,
            max_staleness,
            audit,
            audit_verify_every,
            retention_days,
            alerts,
            legacy_reads: args.legacy_reads,
        })
    }
}

/// The TLS choice: the configured pair, the dev certificate in dev mode, or plain HTTP
/// (refused in production unless TLS ends at a trusted proxy).
fn tls_config(
    args: &ServeArgs,
    data_dir: &Path,
    transport: &TransportConfig,
    production: bool,
) -> Result<Option<Arc<rustls::ServerConfig>>, ServeError> {
    let files = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) if args.dev => {
            Some(crate::tls::dev_certificate(&data_dir.join("tls")).map_err(config_error)?)
        }
        (None, None) => None,
        _ => {
            return Err(ServeError::Config(
                "set both KEYFLOW_TLS_CERT and KEYFLOW_TLS_KEY".into(),
            ))
        }
    };
    let Some((cert, key)) = files else {
        if production && transport.trusted_proxies.is_empty() {
            return Err(ServeError::Config(
                "production needs KEYFLOW_TLS_CERT and KEYFLOW_TLS_KEY (or KEYFLOW_TRUSTED_PROXIES when TLS ends at a proxy)".into(),
            ));
        }
        tracing::warn!("serving plain HTTP: no TLS certificate configured");
        return Ok(None);
    };
    let options = crate::tls::TlsOptions {
        request_client_certs: !transport.pinned_client_certs.is_empty(),
        cipher_suites: args.tls_cipher_suites.clone(),
    };
    crate::tls::server_config_with(&cert, &key, &options)
        .map(Some)
        .map_err(config_error)
}

/// In dev mode the KEK password, unless one is configured, is generated once and kept
/// (0600) in the data directory — convenient, and refused in production.
fn dev_password(data_dir: &Path) -> Result<KekPassword, ServeError> {
    let path = data_dir.join("dev-kek-password");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(KekPassword::new(existing.trim_end().to_owned(), false)?);
    }
    let mut raw = Zeroizing::new([0u8; 32]);
    OsRng
        .fill(&mut raw[..])
        .map_err(|_| ServeError::Config("the OS random generator failed".into()))?;
    let password =
        Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw[..]));
    std::fs::create_dir_all(data_dir)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(password.as_bytes())?;
    f.sync_all()?;
    Ok(KekPassword::new(password.to_string(), false)?)
}

/// The audit policy from `KEYFLOW_AUDIT` (`on`, the default, or `off`, refused in
/// production) and `KEYFLOW_AUDIT_FAILURE` (`closed` or `open`; by default `closed` in
/// production, `open` otherwise).
pub fn audit_policy(
    production: bool,
    audit: Option<&str>,
    failure: Option<&str>,
) -> Result<AuditPolicy, ServeError> {
    let value = |v: Option<&str>| v.map(|s| s.trim().to_ascii_lowercase()).unwrap_or_default();
    let enabled = match value(audit).as_str() {
        "" | "on" => true,
        "off" if production => {
            return Err(ServeError::Config(
                "KEYFLOW_AUDIT=off is refused in production: every operation must be recorded"
                    .into(),
            ))
        }
        "off" => false,
        _ => return Err(ServeError::Config("KEYFLOW_AUDIT must be on or off".into())),
    };
    let fail_closed = match value(failure).as_str() {
        "" => production,
        "closed" => true,
        "open" => false,
        _ => {
            return Err(ServeError::Config(
                "KEYFLOW_AUDIT_FAILURE must be closed or open".into(),
            ))
        }
    };
    Ok(AuditPolicy {
        enabled,
        fail_closed: enabled && fail_closed,
    })
}

/// The audit upkeep's settings from `KEYFLOW_AUDIT_VERIFY_SECS` (1 or more; default
/// 3600) and `KEYFLOW_AUDIT_RETENTION_DAYS` (1 or more; unset or empty: no retention).
fn audit_upkeep_settings(
    verify_secs: Option<&str>,
    retention_days: Option<&str>,
) -> Result<(Duration, Option<u32>), ServeError> {
    fn set(v: Option<&str>) -> Option<&str> {
        v.map(str::trim).filter(|v| !v.is_empty())
    }
    let whole = |v: &str| v.parse::<u32>().ok().filter(|n| *n >= 1);
    let verify = match set(verify_secs) {
        None => 3600,
        Some(v) => whole(v).ok_or_else(|| {
            ServeError::Config(format!(
                "{VERIFY_SECS_ENV}: expected a whole number of seconds, 1 or more"
            ))
        })?,
    };
    let retention = set(retention_days)
        .map(|v| {
            whole(v).ok_or_else(|| {
                ServeError::Config(format!(
                    "{RETENTION_DAYS_ENV}: expected a whole number of days, 1 or more"
                ))
            })
        })
        .transpose()?;
    Ok((Duration::from_secs(u64::from(verify)), retention))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests fail by panicking
    use super::*;

    #[test]
    fn audit_policy_defaults_and_refusals() {
        let p = |prod, a, f| audit_policy(prod, a, f);
        assert_eq!(p(true, None, None).unwrap(), AuditPolicy::PRODUCTION);
        assert_eq!(p(false, None, None).unwrap(), AuditPolicy::DEVELOPMENT);
        assert_eq!(
            p(false, Some("ON"), Some("closed")).unwrap(),
            AuditPolicy::PRODUCTION
        );
        assert_eq!(
            p(true, Some("on"), Some(" open ")).unwrap(),
            AuditPolicy::DEVELOPMENT
        );
        assert_eq!(p(false, Some("off"), None).unwrap(), AuditPolicy::OFF);
        let refused = p(true, Some("off"), None).unwrap_err().to_string();
        assert!(refused.contains("refused in production"), "{refused}");
        assert!(p(false, Some("maybe"), None).is_err());
        assert!(p(false, None, Some("ajar")).is_err());
    }

    #[test]
    fn audit_upkeep_defaults_and_refusals() {
        let s = |v, r| audit_upkeep_settings(v, r);
        assert_eq!(s(None, None).unwrap(), (Duration::from_secs(3600), None));
        assert_eq!(
            s(Some(" "), Some("")).unwrap(),
            (Duration::from_secs(3600), None)
        );
        assert_eq!(
            s(Some("60"), Some(" 90 ")).unwrap(),
            (Duration::from_secs(60), Some(90))
        );
        for (v, r) in [
            (Some("0"), None),
            (Some("1h"), None),
            (None, Some("0")),
            (None, Some("-3")),
        ] {
            assert!(matches!(s(v, r), Err(ServeError::Config(_))), "{v:?} {r:?}");
        }
    }

    #[test]
    fn the_password_text_never_prints() {
        let text = PasswordText::new(Zeroizing::new("hunter2-hunter2".into()));
        assert_eq!(format!("{text:?}"), "PasswordText(<redacted>)");
    }
}
