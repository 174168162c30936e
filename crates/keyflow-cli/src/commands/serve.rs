//! `keyflow serve [--dev]`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use keyflow_kms::access::{self, Role};
use keyflow_kms::clock::{Clock, SystemClock};
use keyflow_kms::kek_provider::{self, KekPassword};
use keyflow_kms::keyflow_core::kek::KdfParams;
use keyflow_kms::keyflow_core::{OsRng, SecureRandom};
use keyflow_kms::EncryptionService;
use keyflow_server::auth::TokenCache;
use keyflow_server::{AppState, HttpSettings, Limits};
use keyflow_transport::TransportConfig;
use zeroize::Zeroizing;

use super::open_store;
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
    pub max_concurrency: usize,
    pub request_timeout: Duration,
    pub scheduler_every: Option<Duration>,
    pub max_staleness: Duration,
    pub revalidate_every: Duration,
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

    let store = open_store(config).await?;
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
    let service = Arc::new(EncryptionService::new(store.clone(), kek, service_config));
    let tokens = TokenCache::new(store.clone(), Arc::new(SystemClock));
    tokens.refresh().await?;
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
    }
    let limits = Limits {
        json_body_bytes: args.max_body_bytes,
        file_body_bytes: args.max_file_bytes,
        ..Limits::default()
    };
    let state = AppState::new(service.clone(), tokens, limits);
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
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("KeyFlow listening on {scheme}://{addr}/api/encryption");
    let _ = std::io::stdout().flush();

    // Background upkeep: key-cache revalidation, token refresh, usage flushes and
    // the scheduler (see keyflow_server::upkeep).
    let upkeep = keyflow_server::upkeep::spawn(
        state.clone(),
        keyflow_server::upkeep::UpkeepConfig {
            revalidate_every: args.revalidate_every,
            scheduler_every: args.scheduler_every,
            holder: instance_id(&addr),
        },
    );
    keyflow_server::serve::serve(
        listener,
        app,
        tls,
        shutdown_signal(),
        Duration::from_secs(20),
    )
    .await?;
    upkeep.stop();
    service.flush_usage().await?;
    tracing::info!("stopped");
    Ok(())
}
