//! The server assembled from its [`Settings`]: what `keyflow serve` runs, and what tests
//! start to get the same server.
//!
//! [`start`] binds the listener, unlocks (or, in dev mode, creates) the KEK, recovers
//! the audit journals of servers that stopped abruptly, starts the trail, loads the API
//! tokens (dev mode: creates an admin token when there is none), builds the app and
//! records `server.start`. [`Server::run`] then starts the background upkeep, serves
//! until the shutdown signal, drains, records `server.stop` and flushes the journal and
//! the usage counters. The keystore is passed in ([`Stores`]): opening a database is the
//! caller's, like every other provider.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keyflow_kms::access::{self, Role};
use keyflow_kms::audit::recover::{self, Outcome, JOURNAL_DAMAGED};
use keyflow_kms::audit::{AuditEvent, AuditSealer, AuditStore, Source};
use keyflow_kms::clock::{Clock, SystemClock};
use keyflow_kms::kek_provider;
use keyflow_kms::keyflow_core::kek::{KdfParams, KekFile};
use keyflow_kms::keyflow_core::OsRng;
use keyflow_kms::{EncryptionService, Keystore};
use serde_json::json;
use tokio::net::TcpListener;
use zeroize::Zeroizing;

use crate::auth::TokenCache;
use crate::compliance::{self as gather, Deployment};
use crate::settings::{Backend, ServeError, Settings, RETENTION_DAYS_ENV};
use crate::upkeep::{self, AuditKeys, AuditUpkeepConfig, UpkeepConfig};
use crate::{AppState, AuditTrail, HttpSettings};

/// Environment variable holding the password of retired KEK files whose password was
/// changed since (`kek change-password` re-seals only the current file).
pub const OLD_PASSWORD_ENV: &str = "KEYFLOW_OLD_KEK_PASSWORD";
/// Largest KEK file read when looking for retired KEKs (a real one is ~400 bytes).
const MAX_KEK_FILE_LEN: usize = 64 * 1024;

/// The database the server runs on, as the keystore and as the audit chain it holds.
#[derive(Clone)]
pub struct Stores {
    /// Key versions, tokens, policies.
    pub keys: Arc<dyn Keystore>,
    /// The audit chain.
    pub audit: Arc<dyn AuditStore>,
}

/// A started server, not serving yet ([`Server::run`]).
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    app: axum::Router,
    state: AppState,
    settings: Settings,
    audit_keys: Arc<AuditKeys>,
    instance: String,
    dev_token: Option<Zeroizing<String>>,
}

/// Starts the server described by `settings` on `stores` (see the module docs); it
/// serves once [`Server::run`] is called.
pub async fn start(settings: Settings, stores: Stores) -> Result<Server, ServeError> {
    // First, so that an address in use stops the start before anything is created.
    let listener = TcpListener::bind(&settings.listen)
        .await
        .map_err(|e| ServeError::Config(format!("cannot listen on {}: {e}", settings.listen)))?;
    let addr = listener.local_addr()?;
    let instance = instance_id(&addr);
    let site = &settings.site;
    let store = stores.keys;
    let kek = if settings.dev {
        let (_, kek) = kek_provider::init(
            &site.kek_path,
            &settings.password,
            KdfParams::default(),
            &*store,
            &OsRng,
        )
        .await?;
        kek
    } else {
        kek_provider::unlock(&site.kek_path, &settings.password, &*store).await?
    };
    let service_config = keyflow_kms::ServiceConfig {
        background_usage_flush: true,
        max_staleness: Some(settings.max_staleness),
        ..site.service.clone()
    };
    let sealer = AuditSealer::new(&kek)?;
    // The background verification checks records sealed before a KEK rotation with the
    // retired KEK files, as `keyflow audit verify` does.
    let retired = settings
        .retired_password
        .as_ref()
        .map(|p| retired_audit_sealers(&site.kek_path, p.expose(), kek.id()))
        .unwrap_or_default();
    let audit_keys = Arc::new(AuditKeys::new(AuditSealer::new(&kek)?, retired));
    let service = Arc::new(EncryptionService::new(store.clone(), kek, service_config));
    let trail = if settings.audit.enabled {
        // Records of servers that stopped abruptly go into the chain before new ones.
        recover_journals(
            &site.audit_journal_dir,
            &stores.audit,
            &sealer,
            audit_keys.retired(),
        )
        .await?;
        AuditTrail::start_journaled(
            stores.audit,
            sealer,
            service.ring().clock().clone(),
            settings.audit,
            &site.audit_journal_dir,
        )
        .map_err(|e| {
            ServeError::Config(format!(
                "cannot create the audit journal in {}: {e}",
                site.audit_journal_dir.display()
            ))
        })?
    } else {
        None
    };
    match &trail {
        None => tracing::warn!("KEYFLOW_AUDIT=off: requests are NOT recorded in the audit trail"),
        Some(t) if !t.fail_closed() && site.production => tracing::warn!(
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
    if settings.dev && tokens.is_empty() {
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
        dev_token = Some((new.token, new.record.id.clone()));
    }
    let state = AppState::with_audit(service, tokens, settings.limits.clone(), trail.clone());
    state.set_kek_path(site.kek_path.clone());
    state.set_deployment(deployment(
        site.production,
        &site.backend,
        settings.tls.as_deref(),
        &settings.transport,
        trail.is_some(),
        "server",
    ));
    // Before the upkeep and the app read the thresholds.
    let _ = state.alerts.configure(settings.alerts.clone());
    if settings.legacy_reads {
        state.enable_legacy_reads();
    }
    let mut transport = settings.transport.clone();
    // Seen nonces live in the keystore, shared by every instance on it: a signed
    // request accepted by one instance is a replay on all of them.
    transport.nonce_store = Some(Arc::new(crate::nonces::KeystoreNonces::new(store)));
    let app = crate::app(
        state.clone(),
        &HttpSettings {
            max_concurrency: settings.max_concurrency,
            request_timeout: settings.request_timeout,
            transport,
        },
    );
    if let Some(trail) = &trail {
        let mut start = system_event(trail, &instance, "server.start");
        start.detail = Some(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "listen": addr.to_string(),
            "tls": settings.tls.is_some(),
            "production": site.production,
            "auditFailure": if trail.fail_closed() { "closed" } else { "open" },
        }));
        let mut events = vec![start];
        if let Some((_, id)) = &dev_token {
            let mut created = system_event(trail, &instance, "tokens.create");
            created.detail = Some(json!({ "tokenId": id, "role": "admin", "name": "dev admin" }));
            events.push(created);
        }
        for event in events {
            match trail.record(event).await {
                Ok(_) => {}
                Err(e) if trail.fail_closed() => {
                    return Err(ServeError::Failed(format!(
                        "{e}; not starting, since KEYFLOW_AUDIT_FAILURE=closed"
                    )))
                }
                Err(e) => {
                    tracing::error!(error = %e, "the server.start audit record was not written")
                }
            }
        }
    }
    Ok(Server {
        listener,
        addr,
        app,
        state,
        settings,
        audit_keys,
        instance,
        dev_token: dev_token.map(|(token, _)| token),
    })
}

impl Server {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API's base URL (`https://…/api/encryption`, `http://` without TLS).
    pub fn url(&self) -> String {
        let scheme = if self.settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}/api/encryption", self.addr)
    }

    /// The admin token dev mode created at this start, if it did (to be shown once).
    pub fn dev_admin_token(&self) -> Option<&str> {
        self.dev_token.as_ref().map(|t| t.as_str())
    }

    /// The state the handlers share.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Starts the background upkeep and serves until `shutdown` resolves; then drains
    /// (20 s grace), records `server.stop`, drains the audit journal and flushes the
    /// usage counters.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let Server {
            listener,
            app,
            state,
            settings,
            audit_keys,
            instance,
            ..
        } = self;
        // Key-cache revalidation, token refresh, usage flushes, alerts and the
        // scheduler (see crate::upkeep).
        let mut upkeep = upkeep::spawn(
            state.clone(),
            UpkeepConfig {
                revalidate_every: settings.revalidate_every,
                scheduler_every: settings.scheduler_every,
                holder: instance.clone(),
            },
        );
        // Retention prunes under the scheduler lease, so only where the scheduler runs:
        // an instance that never runs it must not take its lease.
        if settings.retention_days.is_some() && settings.scheduler_every.is_none() {
            tracing::warn!("{RETENTION_DAYS_ENV} is set but this instance does not run the scheduler (KEYFLOW_SCHEDULER_INTERVAL_SECS=0): the instance that runs it prunes");
        }
        upkeep.spawn_audit(
            state.clone(),
            AuditUpkeepConfig {
                keys: audit_keys,
                verify_every: settings.audit_verify_every,
                retention_days: settings
                    .retention_days
                    .filter(|_| settings.scheduler_every.is_some()),
                holder: instance.clone(),
                lease_ms: upkeep::scheduler_lease_ms(
                    settings
                        .scheduler_every
                        .unwrap_or(Duration::from_secs(3600)),
                ),
            },
        );
        crate::serve::serve_with(
            listener,
            app,
            settings.tls.clone(),
            shutdown,
            &settings.connections,
        )
        .await?;
        upkeep.stop();
        if let Some(trail) = &state.audit {
            let mut stop = system_event(trail, &instance, "server.stop");
            stop.detail = Some(json!({ "uptimeSeconds": state.uptime().as_secs() }));
            if let Err(e) = trail.record(stop).await {
                tracing::error!(error = %e, "the server.stop audit record was not written");
            }
            // Drains the journal into the database and removes it.
            if let Err(e) = trail.log().close().await {
                tracing::error!(error = %e, journal = %settings.site.audit_journal_dir.display(),
                    "the audit journal could not be drained; the next start recovers it");
            }
        }
        state.service.ring().flush_usage().await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: `keyflow serve`'s shutdown signal.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
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

/// What a server with this configuration deploys, for `/compliance`: production mode,
/// the TLS it serves (`tls` built from the configured files and suites), HTTPS
/// enforcement, the audit journal and the keystore. `source` says where the TLS facts
/// come from (`server`: as served; `configuration`: as `keyflow compliance` reads it).
pub fn deployment(
    production: bool,
    backend: &Backend,
    tls: Option<&gather::TlsServerConfig>,
    transport: &keyflow_transport::TransportConfig,
    journaled: bool,
    source: &str,
) -> Deployment {
    let (name, keystore_file) = match backend {
        Backend::Sqlite(path) => ("sqlite", Some(path.clone())),
        Backend::Postgres => ("postgres", None),
    };
    Deployment {
        production,
        tls: gather::tls_facts(
            tls,
            transport.trusted_proxies.len(),
            transport.production,
            source,
        ),
        audit_journaled: journaled,
        keystore_file,
        backend: name.to_owned(),
    }
}

/// This instance's name in the scheduler lease: host, listen address and pid.
fn instance_id(addr: &SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}/{addr}/{}", std::process::id())
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

/// The audit keys of the retired KEK files beside `kek_path` that unlock with
/// `password` (the current KEK's) or [`OLD_PASSWORD_ENV`]: what verifying commands and
/// the server's background verification check records sealed before a KEK rotation with.
pub fn retired_audit_sealers(kek_path: &Path, password: &str, current: &str) -> Vec<AuditSealer> {
    let old = std::env::var(OLD_PASSWORD_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .map(Zeroizing::new);
    let mut passwords: Vec<&[u8]> = vec![password.as_bytes()];
    passwords.extend(old.as_ref().map(|p| p.as_bytes()));
    retired_sealers(kek_path, &passwords, current)
}

/// Sealers of the retired KEK files beside `kek_path` (`<kek>.retired-<id>`, kept by
/// `kek rotate`) that unlock with one of `passwords`: records sealed before a KEK
/// rotation name the KEK of their time. A retired file keeps the password it had when
/// it was retired, so after a later `kek change-password` it needs
/// [`OLD_PASSWORD_ENV`]. A file that unlocks with none is skipped; a record needing it
/// is then reported as unverifiable.
fn retired_sealers(kek_path: &Path, passwords: &[&[u8]], current: &str) -> Vec<AuditSealer> {
    let (Some(dir), Some(name)) = (kek_path.parent(), kek_path.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.retired-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| {
            let bytes = std::fs::read(e.path()).ok()?;
            if bytes.len() > MAX_KEK_FILE_LEN {
                return None;
            }
            let file = KekFile::parse(&bytes).ok()?;
            if file.kek_id() == current {
                return None;
            }
            let kek = passwords.iter().find_map(|p| file.unlock(p).ok());
            if kek.is_none() {
                tracing::info!(path = %e.path().display(), "a retired KEK file does not unlock with the passwords given; records it sealed cannot be verified");
            }
            AuditSealer::new(&kek?).ok()
        })
        .collect()
}

/// Drains the audit journals in `dir` of servers that stopped abruptly (SIGKILL, crash,
/// power loss) into the chain, saying on stderr what was recovered or left (and why):
/// the operator starting the server or running a command is the one to tell.
pub async fn recover_journals(
    dir: &Path,
    store: &Arc<dyn AuditStore>,
    sealer: &AuditSealer,
    retired: &[AuditSealer],
) -> Result<(), ServeError> {
    let outcomes = recover::recover(dir, store, sealer, retired, &SystemClock)
        .await
        .map_err(|e| ServeError::Failed(e.to_string()))?;
    for o in outcomes {
        match o {
            Outcome::Drained {
                path,
                appended,
                rejected,
                missing,
            } if rejected + missing > 0 => eprintln!(
                "warning: recovered {appended} audit records from {}; {rejected} lines were refused (altered or malformed) and {missing} entries are missing — recorded in the trail as {JOURNAL_DAMAGED}",
                path.display()
            ),
            Outcome::Drained { path, appended, .. } => eprintln!(
                "recovered {appended} audit records from the journal of a server that stopped abruptly ({})",
                path.display()
            ),
            Outcome::Left(e) => eprintln!("warning: {e}"),
        }
    }
    Ok(())
}
