//! Command-line arguments (clap). Parsed here, resolved into a [`crate::config::Config`]
//! in `config.rs`, executed by the modules under `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// KeyFlow: encryption and key management for sensitive data.
#[derive(Debug, Parser)]
#[command(name = "keyflow", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands. Values also come from the environment and from
/// a `.env` file in the working directory (flags win over the environment, which wins
/// over `.env`). The KEK password is never a flag: `KEK_PASSWORD` or
/// `KEYFLOW_KEK_PASSWORD_FILE` only.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Data directory: the SQLite keystore and (unless KEK_PATH is set) the KEK file.
    #[arg(
        long,
        global = true,
        env = "KEYFLOW_DATA_DIR",
        default_value = "./keyflow-data"
    )]
    pub data_dir: PathBuf,
    /// KEK file (default: DATA_DIR/kek.json).
    #[arg(long, global = true, env = "KEK_PATH")]
    pub kek_path: Option<PathBuf>,
    /// Keystore URL: sqlite:PATH or postgres://… (default: sqlite:DATA_DIR/keyflow.db).
    #[arg(long, global = true, env = "KEYFLOW_DATABASE_URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the KEK file and the keystore (creates no data keys). Safe to re-run.
    Init {
        /// PBKDF2-HMAC-SHA256 iterations for the new KEK file (default 600000;
        /// at least 100000, and not below the default in production).
        #[arg(long)]
        kdf_iterations: Option<u32>,
    },
    /// Encrypt the bytes on stdin; print the text ciphertext.
    Encrypt {
        /// Key ring to use (created on first use unless ENCRYPTION_STRICT_MODE=true).
        #[arg(long)]
        purpose: String,
        /// Deterministic encryption: equal plaintexts give equal ciphertexts.
        #[arg(long)]
        deterministic: bool,
        /// Context pair bound into the ciphertext (repeatable).
        #[arg(long = "context", value_name = "K=V")]
        context: Vec<String>,
    },
    /// Decrypt the ciphertext on stdin; write the plaintext bytes to stdout.
    Decrypt {
        /// The context pairs given at encryption (repeatable).
        #[arg(long = "context", value_name = "K=V")]
        context: Vec<String>,
    },
    /// Describe the ciphertext on stdin (JSON) without decrypting it.
    Inspect,
    /// Mask a value for display.
    Mask {
        /// card, bankAccount, ssn, phone, email, iban or default.
        #[arg(long = "type", value_name = "TYPE")]
        kind: String,
        /// The value to mask.
        value: String,
    },
    /// Manage key rings and versions; back them up and restore them.
    #[command(subcommand)]
    Keys(KeysGroup),
    /// Check backup files (`keyflow backup verify FILE`).
    #[command(subcommand)]
    Backup(crate::commands::backup::BackupCommand),
    /// The compliance report (PCI DSS v4.0.1, GDPR, NIST SP 800-57, ISO/IEC 27001:2022)
    /// computed from the keystore, the audit trail and this environment
    /// (docs/compliance.md).
    Compliance(crate::commands::compliance::ComplianceArgs),
    /// Rotate the KEK or change its password.
    #[command(subcommand)]
    Kek(crate::commands::kek::KekCommand),
    /// Manage API tokens for the server.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Read, verify, export, checkpoint and prune the audit trail (docs/audit.md).
    #[command(subcommand)]
    Audit(crate::commands::audit::AuditCommand),
    /// Encrypt, decrypt or inspect files of any size (streaming; docs/file-format.md).
    #[command(subcommand)]
    File(crate::commands::file::FileCommand),
    /// Re-encrypt a column of the application's table under the active key versions
    /// (resumable; see docs/reencryption.md). The keystore is configured as for every
    /// command; the application's database is --target-url.
    Reencrypt(crate::commands::reencrypt::ReencryptArgs),
    /// Encrypt the plaintext values of a column in place (ciphertexts are kept).
    Migrate(crate::commands::reencrypt::MigrateArgs),
    /// Encrypt or decrypt fields of JSON documents (stdin → stdout; docs/field-encryption.md).
    #[command(subcommand)]
    Fields(crate::commands::fields::FieldsCommand),
    /// Import keys and convert data from the legacy Node.js system
    /// (docs/legacy-migration.md).
    #[command(subcommand)]
    Legacy(crate::commands::legacy::LegacyCommand),
    /// Report sensitive values in clear in JSON on stdin, or with --target-url in an
    /// application's database (exit 1 when any; a CI gate; docs/discovery.md).
    Scan(crate::commands::fields::ScanArgs),
    /// Ask a running server for its key health and alerts (docs/alerts.md); needs an
    /// admin or auditor token (KEYFLOW_TOKEN).
    Status(crate::commands::status::StatusArgs),
    /// Run the HTTPS API server.
    // Boxed: its options are most of this enum's size.
    Serve(Box<keyflow_server::settings::ServeArgs>),
}

impl Command {
    /// The command's name as audit records give it (`keys.rotate`, `tokens.create`…).
    pub fn name(&self) -> &'static str {
        use crate::commands::{audit::AuditCommand, kek::KekCommand};
        match self {
            Command::Init { .. } => "init",
            Command::Encrypt { .. } => "encrypt",
            Command::Decrypt { .. } => "decrypt",
            Command::Inspect => "inspect",
            Command::Mask { .. } => "mask",
            Command::Backup(crate::commands::backup::BackupCommand::Verify(_)) => "backup.verify",
            Command::Compliance(_) => "compliance",
            Command::Keys(KeysGroup::Backup(_)) => "keys.backup",
            Command::Keys(KeysGroup::Restore(_)) => "keys.restore",
            Command::Keys(KeysGroup::Ring(k)) => match k {
                KeysCommand::List { .. } => "keys.list",
                KeysCommand::Generate { .. } => "keys.generate",
                KeysCommand::Rotate { .. } => "keys.rotate",
                KeysCommand::Policy { .. } => "keys.policy",
                KeysCommand::RotateDue { .. } => "keys.rotate-due",
                KeysCommand::Revoke { .. } => "keys.revoke",
                KeysCommand::Reinstate { .. } => "keys.reinstate",
                KeysCommand::Destroy { .. } => "keys.destroy",
                KeysCommand::Purge => "keys.purge",
            },
            Command::Kek(KekCommand::Rotate { .. }) => "kek.rotate",
            Command::Kek(KekCommand::ChangePassword { .. }) => "kek.change-password",
            Command::Kek(KekCommand::Retire { .. }) => "kek.retire",
            Command::Tokens(TokensCommand::Create { .. }) => "tokens.create",
            Command::Tokens(TokensCommand::List { .. }) => "tokens.list",
            Command::Tokens(TokensCommand::Revoke { .. }) => "tokens.revoke",
            Command::Audit(AuditCommand::List(_)) => "audit.list",
            Command::Audit(AuditCommand::Verify(_)) => "audit.verify",
            Command::Audit(AuditCommand::Export { .. }) => "audit.export",
            Command::Audit(AuditCommand::Checkpoint(_)) => "audit.checkpoint",
            Command::Audit(AuditCommand::Prune(_)) => "audit.prune",
            Command::File(_) => "file",
            Command::Fields(_) => "fields",
            Command::Legacy(crate::commands::legacy::LegacyCommand::Import(_)) => "legacy.import",
            Command::Legacy(crate::commands::legacy::LegacyCommand::Convert(_)) => "legacy.convert",
            Command::Reencrypt(_) => "reencrypt",
            Command::Migrate(_) => "migrate",
            Command::Scan(_) => "scan",
            Command::Status(_) => "status",
            Command::Serve(_) => "serve",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token; prints it alone on stdout (the only time it is shown).
    Create {
        /// admin, service or auditor.
        #[arg(long)]
        role: String,
        /// Purposes a service token may use (comma-separated).
        #[arg(long, value_delimiter = ',')]
        purposes: Vec<String>,
        /// A label.
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime, e.g. 90d, 12h, 30m, 3600s (default: no expiry).
        #[arg(long)]
        expires: Option<String>,
    },
    /// List tokens (never their secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke {
        /// The token id (the 16 hex characters after `kft_`).
        id: String,
    },
}

/// `keyflow keys …`: the key-ring commands, plus backup and restore (kept in their own
/// module, `commands/backup.rs`).
#[derive(Debug, Subcommand)]
pub enum KeysGroup {
    #[command(flatten)]
    Ring(KeysCommand),
    /// Write an encrypted backup of every key version (password: KEYFLOW_BACKUP_PASSWORD
    /// or a prompt; at least 16 characters).
    Backup(crate::commands::backup::BackupArgs),
    /// Restore a backup into this keystore: empty, or merged (identical versions
    /// skipped; any conflict refuses the whole restore). --dry-run writes nothing.
    Restore(crate::commands::backup::RestoreArgs),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List key versions (metadata only, never key material).
    List {
        /// Only this purpose.
        #[arg(long)]
        purpose: Option<String>,
        /// Only this state (active, rotating, deprecated, revoked, destroyed).
        #[arg(long)]
        status: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create version 1 of a new purpose.
    Generate {
        /// The purpose to create.
        #[arg(long)]
        purpose: String,
    },
    /// Rotate a purpose: a new active version; the old one keeps decrypting.
    Rotate {
        /// The purpose to rotate.
        #[arg(long)]
        purpose: String,
    },
    /// Show or set a purpose's rotation policy (omitted values are kept).
    Policy {
        /// The purpose.
        #[arg(long)]
        purpose: String,
        /// Rotation period, days (default 90).
        #[arg(long)]
        rotation_days: Option<u32>,
        /// Grace period after a rotation before the old version is deprecated, days (default 30).
        #[arg(long)]
        grace_days: Option<u32>,
        /// Rotate this many days before the rotation date (default 7).
        #[arg(long)]
        warn_days: Option<u32>,
        /// Encryptions per version before rotation is due (default 2^30).
        #[arg(long)]
        max_encryptions: Option<u64>,
    },
    /// Run one scheduler pass now: rotate what is due, deprecate what passed its grace period.
    RotateDue {
        /// Evaluate the policies as of this RFC 3339 instant (default now).
        #[arg(long)]
        at: Option<String>,
        /// Only report what would be done.
        #[arg(long)]
        dry_run: bool,
    },
    /// Revoke a version: it no longer decrypts (reversible with `keys reinstate`).
    Revoke {
        /// The purpose.
        #[arg(long)]
        purpose: String,
        /// The version (not the active one: rotate first).
        #[arg(long)]
        version: u32,
        /// Why (kept with the version).
        #[arg(long)]
        reason: String,
    },
    /// Reinstate a revoked version (as deprecated: decrypt-only).
    Reinstate {
        /// The purpose.
        #[arg(long)]
        purpose: String,
        /// The version.
        #[arg(long)]
        version: u32,
    },
    /// Destroy a revoked version's material (crypto-shredding; irreversible).
    Destroy {
        /// The purpose.
        #[arg(long)]
        purpose: String,
        /// The version.
        #[arg(long)]
        version: u32,
        /// Confirm: the data encrypted under this version becomes unrecoverable.
        #[arg(long)]
        yes: bool,
    },
    /// Erase what a destroy may leave in the database files: on SQLite, checkpoint and
    /// truncate the WAL (checked; fails while a reader holds old pages); on PostgreSQL,
    /// `VACUUM FULL key_versions` (rewrites the table without the dead row versions that
    /// still hold destroyed wrapped keys; needs the table's owner).
    Purge,
}
