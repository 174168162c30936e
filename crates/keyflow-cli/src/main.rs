//! `keyflow`: the command-line tool. Thin: parses arguments into a resolved config and
//! calls the libraries. Every error ends with exit code ≠ 0 and one line on stderr.

mod cli;
mod commands;
mod config;
mod error;

use clap::Parser;
use keyflow_kms::KmsError;

use crate::cli::{Cli, Command, KeysGroup};
use crate::config::Config;
use crate::error::CliError;

/// mimalloc instead of glibc malloc: the server's hot paths allocate many small, short
/// lived buffers per request (see docs/ARCHITECTURE.md, decision on the allocator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // A panic is a bug; its payload could hold data, so it is never printed.
    std::panic::set_hook(Box::new(|_| {
        eprintln!("keyflow: internal error (a bug; no details are printed for safety)");
    }));
    // `.env` in the working directory; variables already set take precedence.
    let _ = dotenvy::dotenv();
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    // Structured JSON logs in production, readable lines otherwise. An unresolvable
    // environment (an unknown value, KEYFLOW_ENV and NODE_ENV disagreeing) stops here,
    // before anything runs.
    match config::is_production() {
        Ok(true) => logs.json().init(),
        Ok(false) => logs.init(),
        Err(e) => {
            eprintln!("keyflow: error: {e}");
            std::process::exit(e.exit_code());
        }
    }

    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        eprintln!("keyflow: error: {e}");
        std::process::exit(e.exit_code());
    }
}

fn run(cli: &Cli) -> Result<(), CliError> {
    let config = Config::resolve(&cli.global)?;
    let result = dispatch(cli, &config);
    if let Err(CliError::Kms(KmsError::KekUnlockFailed(_))) = &result {
        // No KEK, no sealer: noted now, sealed by the next command that unlocks it.
        commands::trail::note_failed_unlock(&config, cli.command.name());
    }
    result
}

fn dispatch(cli: &Cli, config: &Config) -> Result<(), CliError> {
    // Commands that need no keystore run without a runtime.
    match &cli.command {
        Command::Inspect => return commands::data::inspect(),
        Command::Mask { kind, value } => return commands::data::mask(kind, value),
        Command::Scan(args) if args.target_url.is_none() => return commands::fields::scan(args),
        _ => {}
    }
    // The server gets a multi-threaded runtime when it may use several cores; on one
    // core a current-thread runtime serves ~10–30 % more requests (docs/benchmarks.md).
    // One-shot commands get the light one.
    let one_core = std::thread::available_parallelism().map_or(true, |n| n.get() == 1);
    let rt = if matches!(cli.command, Command::Serve(_)) && !one_core {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    rt.block_on(async {
        match &cli.command {
            Command::Init { kdf_iterations } => commands::init::run(config, *kdf_iterations).await,
            Command::Encrypt {
                purpose,
                deterministic,
                context,
            } => commands::data::encrypt(config, purpose, *deterministic, context).await,
            Command::Decrypt { context } => commands::data::decrypt(config, context).await,
            Command::Keys(KeysGroup::Ring(cmd)) => commands::keys::run(config, cmd).await,
            Command::Keys(KeysGroup::Backup(args)) => commands::backup::backup(config, args).await,
            Command::Keys(KeysGroup::Restore(args)) => {
                commands::backup::restore(config, args).await
            }
            Command::Backup(commands::backup::BackupCommand::Verify(args)) => {
                commands::backup::verify(config, args).await
            }
            Command::Compliance(args) => commands::compliance::run(config, args).await,
            Command::Kek(cmd) => commands::kek::run(config, cmd).await,
            Command::Audit(cmd) => commands::audit::run(config, cmd).await,
            Command::Tokens(cmd) => commands::tokens::run(config, cmd).await,
            Command::Fields(cmd) => commands::fields::run(config, cmd).await,
            Command::Legacy(cmd) => commands::legacy::run(config, cmd).await,
            Command::File(cmd) => commands::file::run(config, cmd).await,
            Command::Reencrypt(args) => commands::reencrypt::reencrypt(config, args).await,
            Command::Migrate(args) => commands::reencrypt::migrate(config, args).await,
            Command::Status(args) => commands::status::run(args).await,
            Command::Serve(args) => commands::serve::run(config, &cli.global.data_dir, args).await,
            Command::Scan(args) => commands::discover::run(config, args).await,
            Command::Inspect | Command::Mask { .. } => Ok(()),
        }
    })
}
