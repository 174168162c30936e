//! The audit keys of retired KEK files, and journal recovery before reading.

use std::sync::Arc;

use keyflow_kms::audit::{journal, AuditSealer, AuditStore};
use keyflow_kms::kek_provider::{self, KekPassword};

use crate::commands::Stores;
use crate::config::Config;
use crate::error::CliError;

pub(super) use keyflow_server::launch::retired_audit_sealers;

/// Drains the audit journals of servers that stopped abruptly (SIGKILL, crash, power
/// loss) into the chain, saying on stderr what was recovered or left (and why): the
/// server's own recovery ([`keyflow_server::launch::recover_journals`]).
pub(super) async fn recover_journals(
    config: &Config,
    store: &Arc<dyn AuditStore>,
    sealer: &AuditSealer,
    retired: &[AuditSealer],
) -> Result<(), CliError> {
    keyflow_server::launch::recover_journals(&config.audit_journal_dir, store, sealer, retired)
        .await
        .map_err(CliError::from)
}

/// Before reading the trail: drains the journals of servers that stopped abruptly when
/// the KEK can be unlocked here; otherwise says they are pending (a reader needs no
/// KEK password, and is not refused for lacking one).
pub(super) async fn recover_before_reading(
    config: &Config,
    stores: &Stores,
) -> Result<(), CliError> {
    let pending = journal::orphans(&config.audit_journal_dir).map_err(CliError::Io)?;
    if pending.is_empty() {
        return Ok(());
    }
    drop(pending);
    let Ok(text) = config.kek_password_text() else {
        eprintln!(
            "warning: audit journals of stopped servers in {} are not in the trail yet (set KEK_PASSWORD, or start the server, to recover them)",
            config.audit_journal_dir.display()
        );
        return Ok(());
    };
    let password = KekPassword::new(text.to_string(), config.production)?;
    let kek = kek_provider::unlock(&config.kek_path, &password, &*stores.keys).await?;
    let retired = retired_audit_sealers(&config.kek_path, &text, kek.id());
    recover_journals(config, &stores.audit, &AuditSealer::new(&kek)?, &retired).await
}
