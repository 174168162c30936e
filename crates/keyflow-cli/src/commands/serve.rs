//! `keyflow serve [--dev]`: resolves the settings, opens the keystore and runs the
//! server `keyflow_server::launch` assembles (tests start the same one).

use std::io::Write;
use std::path::Path;

use keyflow_server::launch;
use keyflow_server::settings::{Backend, PasswordText, ServeArgs, Settings, Site, SiteFacts};

use super::open_stores;
use crate::config::{Config, StoreLocation};
use crate::error::CliError;

/// What the global options and the environment resolved, as the server takes it.
fn site(config: &Config, data_dir: &Path) -> Site {
    Site {
        facts: SiteFacts {
            production: config.production,
            data_dir: data_dir.to_owned(),
            kek_path: config.kek_path.clone(),
            audit_journal_dir: config.audit_journal_dir.clone(),
            service: config.service_config(),
            backend: backend(&config.store),
        },
        kek_password: config
            .kek_password_text()
            .map(PasswordText::new)
            .map_err(|e| e.to_string()),
    }
}

/// The keystore's kind, for `/compliance`.
pub fn backend(store: &StoreLocation) -> Backend {
    match store {
        StoreLocation::Sqlite(path) => Backend::Sqlite(path.clone()),
        StoreLocation::Postgres(_) => Backend::Postgres,
    }
}

pub async fn run(config: &Config, data_dir: &Path, args: &ServeArgs) -> Result<(), CliError> {
    // Every refusal of bad configuration comes before any work or log line.
    let settings = Settings::resolve(args, site(config, data_dir))?;
    // One database holds the keys and the audit chain.
    let stores = open_stores(config).await?;
    let server = launch::start(settings, stores).await?;
    if let Some(token) = server.dev_admin_token() {
        println!("admin token (shown once; keep it): {token}");
    }
    println!("KeyFlow listening on {}", server.url());
    let _ = std::io::stdout().flush();
    server.run(launch::shutdown_signal()).await?;
    Ok(())
}
