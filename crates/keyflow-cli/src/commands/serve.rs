//! `keyflow serve [--dev]`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use keyflow_kms::access::{self, Role};
use keyflow_kms::audit::{AuditEvent, AuditSealer, Source};
use keyflow_kms::clock::{Clock, SystemClock};
use keyflow_kms::kek_provider::{self, KekPassword};
use keyflow_kms::keyflow_core::kek::KdfParams;
use keyflow_kms::keyflow_core::{OsRng, SecureRandom};
use keyflow_kms::EncryptionService;
use keyflow_server::auth::TokenCache;
use keyflow_server::{AppState, AuditPolicy, AuditTrail, HttpSettings, Limits};
use keyflow_transport::TransportConfig;
use serde_json::json;
use zeroize::Zeroizing;

use super::audit::{retired_audit_sealers, RETENTION_DAYS_ENV};
use super::open_stores;
use crate::config::Config;
use crate::error::CliError;

/// Options of `keyflow serve`.
pub struct ServeArgs<'a> {
    pub dev: bool,
    pub listen: &'a str,
    pub tls_cert: Option<&'a Path>,
    pub tls_key: Option<&'a Path>,
    pub tls_cipher_suites: &'a [String],
    pub max_body_bytes: usize,
    pub max_file_bytes: u64,
    pub max_file_streams: usize,
    pub file_idle: Duration,
    pub max_concurrency: usize,
    pub request_timeout: Duration,
    /// Connection limits and timeouts (its `grace` is replaced by the server's 20 s).
    pub connections: keyflow_server::serve::ServeOptions,
    pub scheduler_every: Option<Duration>,
    pub max_staleness: Duration,
    pub revalidate_every: Duration,
    /// Transition reads of legacy data (`--legacy-reads`).
    pub legacy_reads: bool,
}

/// In dev mode the KEK password, unless KEK_PASSWORD is set, is generated once and kept
/// (0600) in the data directory — convenient, and refused in production.
fn dev_password(config: &Config, data_dir: &Path) -> Result<KekPassword, CliError> {
    if let Ok(p) = config.kek_password() {
        return Ok(p);
    }
    let path = data_dir.join("dev-kek-password");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(KekPassword::new(existing.trim_end().to_owned(), false)?);
    }
    let mut raw = Zeroizing::new([0u8; 32]);
    OsRng
        .fill(&mut raw[..])
        .map_err(|_| CliError::Config("the OS random generator failed".into()))?;
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

/// This instance's name in the scheduler lease: host, listen address and pid.
fn instance_id(addr: &std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}/{addr}/{}", std::process::id())
}

/// The audit policy from `KEYFLOW_AUDIT` (`on`, the default, or `off`, refused in
/// production) and `KEYFLOW_AUDIT_FAILURE` (`closed` or `open`; by default `closed` in
/// production, `open` otherwise).
pub(crate) fn audit_policy(
    production: bool,
    audit: Option<&str>,
    failure: Option<&str>,
) -> Result<AuditPolicy, CliError> {
    let value = |v: Option<&str>| v.map(|s| s.trim().to_ascii_lowercase()).unwrap_or_default();
    let enabled = match value(audit).as_str() {
        "" | "on" => true,
        "off" if production => {
            return Err(CliError::Config(
                "KEYFLOW_AUDIT=off is refused in production: every operation must be recorded"
                    .into(),
            ))
        }
        "off" => false,
        _ => return Err(CliError::Config("KEYFLOW_AUDIT must be on or off".into())),
    };
    let fail_closed = match value(failure).as_str() {
        "" => production,
        "closed" => true,
        "open" => false,
        _ => {
            return Err(CliError::Config(
                "KEYFLOW_AUDIT_FAILURE must be closed or open".into(),
            ))
        }
    };
    Ok(AuditPolicy {
        enabled,
        fail_closed: enabled && fail_closed,
    })
}

/// Environment variable: seconds between the server's audit chain verification passes.
pub const VERIFY_SECS_ENV: &str = "KEYFLOW_AUDIT_VERIFY_SECS";

/// The audit upkeep's settings from `KEYFLOW_AUDIT_VERIFY_SECS` (1 or more; default
/// 3600) and `KEYFLOW_AUDIT_RETENTION_DAYS` (1 or more; unset or empty: no retention).
fn audit_upkeep_settings(
    verify_secs: Option<&str>,
    retention_days: Option<&str>,
) -> Result<(Duration, Option<u32>), CliError> {
    fn set(v: Option<&str>) -> Option<&str> {
        v.map(str::trim).filter(|v| !v.is_empty())
    }
    let whole = |v: &str| v.parse::<u32>().ok().filter(|n| *n >= 1);
    let verify = match set(verify_secs) {
        None => 3600,
        Some(v) => whole(v).ok_or_else(|| {
            CliError::Config(format!(
                "{VERIFY_SECS_ENV}: expected a whole number of seconds, 1 or more"
            ))
        })?,
    };
    let retention = set(retention_days)
        .map(|v| {
            whole(v).ok_or_else(|| {
                CliError::Config(format!(
                    "{RETENTION_DAYS_ENV}: expected a whole number of days, 1 or more"
                ))
            })
        })
        .transpose()?;
    Ok((Duration::from_secs(u64::from(verify)), retention))
}

/// An event of the server itself (source `system`, actor `system:<instance>`).
fn system_event(trail: &AuditTrail, instance: &str, operation: &str) -> AuditEvent {
    AuditEvent::new(
        trail.now_millis(),
        Source::System,
        format!("system:{instance}"),
        operation,
    )
}

/// Every keystore row refused for a bad MAC (a token or key state written without the
/// KEK) also becomes an audit record, `integrity.row_refused`, beside the log line and
/// the `/status` alert the sealer already raises.
fn record_row_refusals(rows: &keyflow_kms::row_mac::RowSealer, trail: AuditTrail) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rows.on_refusal(move |refusal| {
        let mut event = AuditEvent::new(
            trail.now_millis(),
            Source::System,
            "system:integrity".to_owned(),
            "integrity.row_refused",
        );
        event.detail = Some(json!({
            "table": refusal.table,
            "row": refusal.row,
            "reason": refusal.reason,
        }));
        let trail = trail.clone();
        runtime.spawn(async move {
            if let Err(e) = trail.record(event).await {
                tracing::error!(error = %e, "the integrity.row_refused audit record was not written");
            }
        });
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

pub async fn run(config: &Config, data_dir: &Path, args: ServeArgs<'_>) -> Result<(), CliError> {
    if args.dev && config.production {
        return Err(CliError::Config("--dev is refused in production".into()));
    }
    // Every refusal of bad configuration comes before any work or log line.
    let audit_policy = audit_policy(
        config.production,
        std::env::var("KEYFLOW_AUDIT").ok().as_deref(),
        std::env::var("KEYFLOW_AUDIT_FAILURE").ok().as_deref(),
    )?;
    let (audit_verify_every, retention_days) = audit_upkeep_settings(
        std::env::var(VERIFY_SECS_ENV).ok().as_deref(),
        std::env::var(RETENTION_DAYS_ENV).ok().as_deref(),
    )?;
    // KEYFLOW_ALERT_* (thresholds, windows, webhook URL): refused here when unusable.
    let alert_config = keyflow_server::alerts::AlertConfig::from_env()
        .map_err(|e| CliError::Config(e.to_string()))?;
    let password = if args.dev {
        dev_password(config, data_dir)?
    } else {
        config.kek_password()?
    };
    let mut transport = TransportConfig::from_env().map_err(|e| CliError::Config(e.to_string()))?;
    if config.production {
        // Key management must be signed in production.
        transport.integrity_required_prefixes = vec!["/api/encryption/keys".into()];
    }
    let tls_files = match (args.tls_cert, args.tls_key) {
        (Some(c), Some(k)) => Some((c.to_owned(), k.to_owned())),
        (None, None) if args.dev => Some(
            keyflow_server::tls::dev_certificate(&data_dir.join("tls"))
                .map_err(|e| CliError::Config(e.to_string()))?,
        ),
        (None, None) => None,
        _ => {
            return Err(CliError::Config(
                "set both KEYFLOW_TLS_CERT and KEYFLOW_TLS_KEY".into(),
            ))
        }
    };
    if tls_files.is_none() {
        if config.production && transport.trusted_proxies.is_empty() {
            return Err(CliError::Config(
                "production needs KEYFLOW_TLS_CERT and KEYFLOW_TLS_KEY (or KEYFLOW_TRUSTED_PROXIES when TLS ends at a proxy)".into(),
            ));
        }
        tracing::warn!("serving plain HTTP: no TLS certificate configured");
    }
    let tls = tls_files
        .as_ref()
        .map(|(c, k)| {
            let options = keyflow_server::tls::TlsOptions {
                request_client_certs: !transport.pinned_client_certs.is_empty(),
                cipher_suites: args.tls_cipher_suites.to_vec(),
            };
            keyflow_server::tls::server_config_with(c, k, &options)
        })
        .transpose()
        .map_err(|e| CliError::Config(e.to_string()))?;

    // One database holds the keys and the audit chain.
    let stores = open_stores(config).await?;
    let store = stores.keys.clone();
    let kek = if args.dev {
        kek_provider::init(
            &config.kek_path,
            &password,
            KdfParams::default(),
            &*store,
            &OsRng,
        )
        .await?
        .1
    } else {
        kek_provider::unlock(&config.kek_path, &password, &*store).await?
    };
    if args.max_staleness <= args.revalidate_every {
        return Err(CliError::Config(
            "KEYFLOW_CACHE_MAX_STALENESS_SECS must exceed the revalidation interval".into(),
        ));
    }
    let service_config = keyflow_kms::ServiceConfig {
        background_usage_flush: true,
        max_staleness: Some(args.max_staleness),
        ..config.service_config()
    };
    let sealer = AuditSealer::new(&kek)?;
    // The background verification checks records sealed before a KEK rotation with the
    // retired KEK files, as `keyflow audit verify` does.
    let retired = config
        .kek_password_text()
        .map(|p| retired_audit_sealers(&config.kek_path, &p, kek.id()))
        .unwrap_or_default();
    let audit_keys = Arc::new(keyflow_server::upkeep::AuditKeys::new(
        AuditSealer::new(&kek)?,
        retired,
    ));
    let service = Arc::new(EncryptionService::new(store.clone(), kek, service_config));
    let trail = if audit_policy.enabled {
        // Records of servers that stopped abruptly go into the chain before new ones.
        super::audit::recover_journals(config, &stores.audit, &sealer, audit_keys.retired())
            .await?;
        AuditTrail::start_journaled(
            stores.audit,
            sealer,
            service.clock().clone(),
            audit_policy,
            &config.audit_journal_dir,
        )
        .map_err(|e| {
            CliError::Config(format!(
                "cannot create the audit journal in {}: {e}",
                config.audit_journal_dir.display()
            ))
        })?
    } else {
        None
    };
    match &trail {
        None => tracing::warn!("KEYFLOW_AUDIT=off: requests are NOT recorded in the audit trail"),
        Some(t) if !t.fail_closed() && config.production => tracing::warn!(
            "KEYFLOW_AUDIT_FAILURE=open in production: if the audit trail cannot be written, requests are still answered"
        ),
        Some(_) => {}
    }
    if let (Some(rows), Some(trail)) = (store.row_sealer(), &trail) {
        record_row_refusals(&rows, trail.clone());
    }
    let tokens = TokenCache::new(store.clone(), Arc::new(SystemClock));
    tokens.refresh().await?;
    let mut dev_token = None;
    if args.dev && tokens.is_empty() {
        let new = access::generate(
            Role::Admin,
            vec![],
            "dev admin".into(),
            SystemClock.now_millis(),
            None,
            &OsRng,
        )?;
        store.insert_token(&new.record).await?;
        tokens.refresh().await?;
        println!("admin token (shown once; keep it): {}", new.token.as_str());
        dev_token = Some(new.record.id.clone());
    }
    let limits = Limits {
        json_body_bytes: args.max_body_bytes,
        file_body_bytes: args.max_file_bytes,
        file_streams: args.max_file_streams,
        file_idle: args.file_idle,
        ..Limits::default()
    };
    let state = AppState::with_audit(service.clone(), tokens, limits, trail.clone());
    state.set_kek_path(config.kek_path.clone());
    state.set_deployment(super::compliance::deployment(
        config,
        tls.as_deref(),
        &transport,
        trail.is_some(),
        "server",
    ));
    // Before the upkeep and the app read the thresholds.
    let _ = state.alerts.configure(alert_config);
    if args.legacy_reads {
        state.enable_legacy_reads();
    }
    // Seen nonces live in the keystore, shared by every instance on it: a signed
    // request accepted by one instance is a replay on all of them.
    transport.nonce_store = Some(Arc::new(keyflow_server::nonces::KeystoreNonces::new(
        store.clone(),
    )));
    let settings = HttpSettings {
        max_concurrency: args.max_concurrency,
        request_timeout: args.request_timeout,
        transport,
    };
    let app = keyflow_server::app(state.clone(), &settings);

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::Config(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr()?;
    let instance = instance_id(&addr);
    if let Some(trail) = &trail {
        let mut start = system_event(trail, &instance, "server.start");
        start.detail = Some(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "listen": addr.to_string(),
            "tls": tls.is_some(),
            "production": config.production,
            "auditFailure": if trail.fail_closed() { "closed" } else { "open" },
        }));
        let mut events = vec![start];
        if let Some(id) = &dev_token {
            let mut created = system_event(trail, &instance, "tokens.create");
            created.detail = Some(json!({ "tokenId": id, "role": "admin", "name": "dev admin" }));
            events.push(created);
        }
        for event in events {
            match trail.record(event).await {
                Ok(_) => {}
                Err(e) if trail.fail_closed() => {
                    return Err(CliError::Failed(format!(
                        "{e}; not starting, since KEYFLOW_AUDIT_FAILURE=closed"
                    )))
                }
                Err(e) => {
                    tracing::error!(error = %e, "the server.start audit record was not written")
                }
            }
        }
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("KeyFlow listening on {scheme}://{addr}/api/encryption");
    let _ = std::io::stdout().flush();

    // Background upkeep: key-cache revalidation, token refresh, usage flushes and
    // the scheduler (see keyflow_server::upkeep).
    let mut upkeep = keyflow_server::upkeep::spawn(
        state.clone(),
        keyflow_server::upkeep::UpkeepConfig {
            revalidate_every: args.revalidate_every,
            scheduler_every: args.scheduler_every,
            holder: instance.clone(),
        },
    );
    // Retention prunes under the scheduler lease, so only where the scheduler runs: an
    // instance that never runs it must not take its lease.
    if retention_days.is_some() && args.scheduler_every.is_none() {
        tracing::warn!("{RETENTION_DAYS_ENV} is set but this instance does not run the scheduler (KEYFLOW_SCHEDULER_INTERVAL_SECS=0): the instance that runs it prunes");
    }
    upkeep.spawn_audit(
        state.clone(),
        keyflow_server::upkeep::AuditUpkeepConfig {
            keys: audit_keys,
            verify_every: audit_verify_every,
            retention_days: retention_days.filter(|_| args.scheduler_every.is_some()),
            holder: instance.clone(),
            lease_ms: keyflow_server::upkeep::scheduler_lease_ms(
                args.scheduler_every.unwrap_or(Duration::from_secs(3600)),
            ),
        },
    );
    let serve_options = keyflow_server::serve::ServeOptions {
        grace: Duration::from_secs(20),
        ..args.connections
    };
    keyflow_server::serve::serve_with(listener, app, tls, shutdown_signal(), &serve_options)
        .await?;
    upkeep.stop();
    if let Some(trail) = &trail {
        let mut stop = system_event(trail, &instance, "server.stop");
        stop.detail = Some(json!({ "uptimeSeconds": state.uptime().as_secs() }));
        if let Err(e) = trail.record(stop).await {
            tracing::error!(error = %e, "the server.stop audit record was not written");
        }
        // Drains the journal into the database and removes it.
        if let Err(e) = trail.log().close().await {
            tracing::error!(error = %e, journal = %config.audit_journal_dir.display(),
                "the audit journal could not be drained; the next start recovers it");
        }
    }
    service.flush_usage().await?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
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
            assert!(matches!(s(v, r), Err(CliError::Config(_))), "{v:?} {r:?}");
        }
    }
}
